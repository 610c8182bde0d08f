"""``flux-pam config [--config-path PATH]``: validate and print the settings.

Prints the effective ``[pam]`` and ``[exec]`` settings, defaults included, as
JSON and exits 0.  On bad input prints one line per problem to stderr, each
naming the file and the dotted key, and exits 1.
"""

import argparse
import json
import sys

from .. import config


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    p = sub.add_parser("config", help="validate the configuration and print it")
    p.add_argument(
        "--config-path",
        default=config.DEFAULT_PATH,
        metavar="PATH",
        help="TOML file or conf.d directory (default %(default)s)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the effective settings, or the problems."""
    try:
        cfg = config.load(args.config_path)
    except config.ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0

"""``flux-pam config [--config-path PATH]``: validate and print the settings.

Prints the effective ``[pam]`` and ``[exec]`` settings, defaults included, as
JSON and exits 0.  On bad input prints one line per problem to stderr, each
naming the file and the dotted key, and exits 1.

Without ``--config-path`` it reads the files of the running broker's
``config.path`` (what ``flux config reload`` or a restart would load), or,
when no broker answers, flux-core's own config directory
(flux_pam_service.cli.instance); a first line on stderr names the directory
and says why, and the problems name each file with its directory.
"""

import argparse
import json
import sys

from flux_pam_service.cli import instance, options
from flux_pam_service.core import config


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    p = sub.add_parser("config", help="validate the configuration and print it")
    options.config_path(p, "TOML file or conf.d directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the effective settings, or the problems."""
    path, full = args.config_path, False
    if path is None:
        where = instance.locate()
        path, full = where.config_path, True
        print(f"flux-pam config: reading {path} ({where.source})", file=sys.stderr)
    try:
        cfg = config.load(path, full_names=full)
    except config.ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0

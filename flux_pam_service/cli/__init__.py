"""The ``flux-pam`` command (also run as ``flux pam``).

Each subcommand is a module of this package with ``add_parser(subparsers)``
that registers it and sets ``func(args) -> int`` as its handler; SUBCOMMANDS
maps the subcommand to its module.
"""

import argparse
import importlib
import sys
from typing import List, Optional

SUBCOMMANDS = {
    "config": "config",
    "check": "check",
    "status": "status",
    "slice": "slice_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand (parsing runs nothing)."""
    parser = argparse.ArgumentParser(
        prog="flux-pam",
        description="Inspect and operate flux-pam-service on a Flux node.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in SUBCOMMANDS.values():
        importlib.import_module(f"{__name__}.{module}").add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Parse *argv* and run the subcommand; return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""Options that several subcommands of ``flux pam`` take."""

import argparse

from flux_pam_service.core import lockdir


def config_path(p: argparse.ArgumentParser, what: str) -> None:
    """``--config-path PATH``; without it, the running broker's config.path."""
    p.add_argument(
        "--config-path",
        metavar="PATH",
        help=f"{what} (default: the broker's config.path)",
    )


def lock_dir(p: argparse.ArgumentParser, what: str) -> None:
    """``--lock-dir DIR``, default /run/flux-pam."""
    p.add_argument(
        "--lock-dir",
        default=lockdir.DEFAULT,
        metavar="DIR",
        help=f"{what} (default %(default)s)",
    )

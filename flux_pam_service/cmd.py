"""Entry point of the ``flux-pam`` console script."""

from flux_pam_service.cli import main

__all__ = ["main"]

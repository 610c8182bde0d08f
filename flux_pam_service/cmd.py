"""Entry point of the ``flux-pam`` console script."""

from .cli import main

__all__ = ["main"]

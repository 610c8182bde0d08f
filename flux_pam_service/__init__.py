"""flux-pam-service: login admission and user-slice management for Flux nodes.

``core`` (formats and per-user state, standard library only), ``broker`` (the
``pam`` broker module), ``systemd`` (the D-Bus side), ``perilog`` (the
prolog.d and housekeeping.d drop-ins) and ``cli`` (``flux pam``);
doc/design.rst has the architecture.
"""

__version__ = "0.1.0"

"""flux-pam-service: login admission and user-slice management for Flux nodes.

The package is split into a core that imports neither Flux nor systemd
(:mod:`.fsd`, :mod:`.idset`, :mod:`.rv1`, :mod:`.jobid`, :mod:`.config`,
:mod:`.state`) and thin adapters around it (D-Bus, broker module, PAM,
command line).
"""

__version__ = "0.1.0"

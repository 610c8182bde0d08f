"""pam: the flux-pam-service broker module, as flux loads it.

Installed as FLUXMODDIR/pam.py and loaded by name through flux modprobe
(etc/flux/modprobe); the module is flux_pam_service.broker.module.PamModule.
"""

from flux_pam_service.broker.module import PamModule

__all__ = ["PamModule"]

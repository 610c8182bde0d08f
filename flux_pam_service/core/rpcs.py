"""The requests flux-pam-service sends to Flux's own services.

Each function returns (topic, payload, nodeid) for ``handle.rpc``; the broker
module and the drop-ins send them, each in its own way (a continuation, a
bounded wait).
"""

from typing import Optional, Tuple

from flux_pam_service.core import rv1

Request = Tuple[str, dict, int]


def drain(rank: int, reason: str) -> Request:
    """Drain *rank* with *reason*; "update" keeps a reason already there."""
    payload = {"targets": str(rank), "reason": reason, "mode": "update"}
    return "resource.drain", payload, 0


def mapper_lookup(
    rank: int, res: rv1.Resources, hostname: Optional[str] = None
) -> Request:
    """The sdexec-mapper's unit properties for *res* on *rank*, asked there."""
    return "sdexec-mapper.lookup", {"R": rv1.make_R(rank, res, hostname)}, rank

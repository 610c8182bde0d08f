"""RFC 20 resource set (R version 1): what one rank holds of a job.

Only the parts this project needs are read: ``version`` and
``execution.R_lite``, a list of ``{"rank": IDSET, "children": {TYPE: IDSET}}``
entries.  ``core`` and ``gpu`` children are kept; other child types are
ignored.  ``nodelist``, ``starttime``, ``expiration`` and ``properties`` are
not interpreted.

Malformed R raises RError (a ValueError) that says what is wrong and where.
"""

import json
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional

from flux_pam_service.core import idset


class RError(ValueError):
    """R is malformed."""


@dataclass(frozen=True)
class Resources:
    """The cores and GPUs of one rank, as logical ids."""

    cores: frozenset = frozenset()
    gpus: frozenset = frozenset()

    def __or__(self, other: "Resources") -> "Resources":
        return Resources(self.cores | other.cores, self.gpus | other.gpus)

    def __bool__(self) -> bool:
        return bool(self.cores or self.gpus)

    def to_dict(self) -> dict:
        """Return ``{"core": IDSET, "gpu": IDSET}``."""
        return {"core": idset.encode(self.cores), "gpu": idset.encode(self.gpus)}

    @classmethod
    def from_dict(cls, obj: dict) -> "Resources":
        """Inverse of to_dict()."""
        return cls(idset.decode(obj.get("core", "")), idset.decode(obj.get("gpu", "")))


EMPTY = Resources()


def parse(R: Any) -> dict:
    """Validate *R* and return it as a dict."""
    if isinstance(R, (str, bytes)):
        try:
            R = json.loads(R)
        except ValueError as exc:
            raise RError(f"R is not valid JSON: {exc}") from None
    if not isinstance(R, dict):
        raise RError("R is not a JSON object")
    version = R.get("version")
    if type(version) is not int or version != 1:
        raise RError(f"R version {version!r} is not supported (need 1)")
    execution = R.get("execution")
    if not isinstance(execution, dict):
        raise RError("R has no execution object")
    rlite = execution.get("R_lite")
    if not isinstance(rlite, list):
        raise RError("R execution.R_lite is missing or not an array")
    for i, entry in enumerate(rlite):
        where = f"R execution.R_lite[{i}]"
        if not isinstance(entry, dict):
            raise RError(f"{where} is not an object")
        if not isinstance(entry.get("rank"), str):
            raise RError(f"{where}.rank is missing or not an idset string")
        children = entry.get("children")
        if not isinstance(children, dict):
            raise RError(f"{where}.children is missing or not an object")
        try:
            if not idset.decode(entry["rank"]):
                raise RError(f"{where}.rank is empty")
            for name, ids in children.items():
                if not isinstance(ids, str):
                    raise RError(f"{where}.children.{name} is not an idset string")
                idset.decode(ids)
        except RError:
            raise
        except ValueError as exc:
            raise RError(f"{where}: {exc}") from None
    return R


def _entries(R: dict) -> Iterable:
    for entry in R["execution"]["R_lite"]:
        yield idset.decode(entry["rank"]), entry["children"]


def ranks(R: Any) -> frozenset:
    """Return every rank that holds resources in *R*."""
    return frozenset(by_rank(R))


def local(R: Any, rank: int) -> Resources:
    """Return the cores and GPUs that *R* places on *rank* (may be empty)."""
    res = EMPTY
    for rankset, children in _entries(parse(R)):
        if rank in rankset:
            res = res | Resources(
                idset.decode(children.get("core", "")),
                idset.decode(children.get("gpu", "")),
            )
    return res


def by_rank(R: Any) -> Dict[int, Resources]:
    """Return every rank's share of *R*, parsing *R* once.

    Ranks of one R_lite entry share one Resources object, so a large job with
    uniform nodes costs one small object per entry plus a dict slot per rank.
    """
    out: Dict[int, Resources] = {}
    for rankset, children in _entries(parse(R)):
        res = Resources(
            idset.decode(children.get("core", "")),
            idset.decode(children.get("gpu", "")),
        )
        for rank in rankset:
            prev = out.get(rank)
            out[rank] = res if prev is None else prev | res
    return out


def union(items: Iterable) -> Resources:
    """Return the union of several Resources."""
    res = EMPTY
    for item in items:
        res = res | item
    return res


def make_R(rank: int, res: Resources, hostname: Optional[str] = None) -> dict:
    """Return a minimal Rv1 that holds *res* on *rank*.

    Used to ask ``sdexec-mapper.lookup`` for the properties of a union.
    """
    children = {"core": idset.encode(res.cores)}
    if res.gpus:
        children["gpu"] = idset.encode(res.gpus)
    execution: dict = {"R_lite": [{"rank": str(rank), "children": children}]}
    if hostname is not None:
        execution["nodelist"] = [hostname]
    return {"version": 1, "execution": execution}

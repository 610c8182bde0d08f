"""The RPCs the drop-ins send to their local broker, each with a bound.

The pam module is asked first (``pam.prolog`` / ``pam.housekeeping``, at
most MODULE_TIMEOUT seconds); an answer that is an error other than "not
loaded" or "no answer" is its verdict on the job and stands (module_verdict).
The rest serves working alone: the config, the user's jobs on this rank
(job-list, job-info), the sdexec-mapper's properties, and the drain and
exception that a failure raises.
"""

import errno
import json
from typing import Any, List, Optional

from flux_pam_service.core import config, rpcs
from flux_pam_service.core import jobid as jobid_mod
from flux_pam_service.core.errors import errtext
from flux_pam_service.core.rv1 import Resources
from flux_pam_service.perilog.env import Log, PerilogError

#: seconds to wait for the pam module's answer before working alone
MODULE_TIMEOUT = 30.0
#: seconds to wait for one RPC to the local broker (job-list, job-info,
#: sdexec-mapper, resource.drain)
RPC_TIMEOUT = 30.0
#: the RUN and CLEANUP job states (RFC 21), as job-list's constraint takes them
RUNNING_STATES = 16 | 32

# What to do after the module answered with an error
ALONE = "alone"
FAIL = "fail"
# The module is not there, or did not answer within the bound
_ALONE_ERRNOS = {errno.ENOSYS, errno.ETIMEDOUT, errno.EHOSTUNREACH}


def module_verdict(exc: OSError) -> str:
    """Return ALONE if an error from the module means "work alone", else FAIL.

    ENOSYS (module not loaded), ETIMEDOUT (no answer within the bound, on
    either side) and EHOSTUNREACH mean the module cannot vouch for this job;
    any other error is the module's verdict on the job and stands.
    """
    return ALONE if exc.errno in _ALONE_ERRNOS else FAIL


class Job:
    """A job on this rank as far as the scripts need it."""

    def __init__(self, jobid: int, userid: int, R: Optional[dict]) -> None:
        self.id = jobid
        self.userid = userid
        self.R = R


class FluxCalls:
    """The RPCs a drop-in sends to its local broker."""

    def __init__(self, handle: Any, log: Log) -> None:
        self.h = handle
        self.log = log
        self.rank = handle.get_rank()

    def _get(self, future: Any, what: str) -> Any:
        try:
            return future.wait_for(RPC_TIMEOUT).get()
        except OSError as exc:
            if exc.errno == errno.EPERM:
                raise PerilogError(
                    f"{what}: {errtext(exc)} (the scripts must reach the"
                    " broker as its owner: access.allow-root-owner = true)"
                ) from None
            raise PerilogError(f"{what}: {errtext(exc)}") from None

    def config(self) -> "config.PamConfig":
        """The broker's config; ConfigError names the file and the key."""
        obj = self._get(self.h.rpc("config.get"), "config.get")
        return config.from_instance(obj, self.h)

    def owner(self) -> int:
        """The instance owner's uid."""
        return int(self.h.attr_get("security.owner"))

    def lookup(self, jobids: List[int], keys: List[str]) -> List[dict]:
        """job-info.lookup *keys* of every job, decoded, in the given order."""
        futures = [
            self.h.rpc("job-info.lookup", {"id": j, "keys": keys, "flags": 0})
            for j in jobids
        ]
        out = []
        for j, f in zip(jobids, futures):
            try:
                rsp = f.wait_for(RPC_TIMEOUT).get()
            except FileNotFoundError:
                rsp = None  # job purged meanwhile: no longer active
            except OSError as exc:
                raise PerilogError(
                    f"job-info.lookup {jobid_mod.f58(j)}: {errtext(exc)}"
                ) from None
            if rsp is None:
                out.append({})
                continue
            decoded = {}
            for key in keys:
                value = rsp.get(key)
                decoded[key] = json.loads(value) if isinstance(value, str) else value
            out.append(decoded)
        return out

    def active_jobs(self, userid: int) -> List[int]:
        """IDs of *userid*'s RUN and CLEANUP jobs with resources on this rank."""
        payload = {
            "max_entries": 0,
            "attrs": ["userid"],
            "since": 0.0,
            "constraint": {
                "and": [
                    {"userid": [userid]},
                    {"states": [RUNNING_STATES]},
                    {"ranks": [str(self.rank)]},
                ]
            },
        }
        rsp = self._get(self.h.rpc("job-list.list", payload), "job-list.list")
        return [job["id"] for job in rsp.get("jobs", [])]

    def mapper_properties(self, res: Resources) -> dict:
        """The sdexec-mapper's unit properties for *res* here."""
        topic, payload, rank = rpcs.mapper_lookup(self.rank, res)
        props = self._get(self.h.rpc(topic, payload, nodeid=rank), topic)
        if not isinstance(props, dict):
            raise PerilogError("sdexec-mapper.lookup: response is not an object")
        return props

    def ask_module(self, prog: str, jobid: int) -> Optional[dict]:
        """Return the pam module's answer, or None to work alone."""
        topic = f"pam.{prog}"
        try:
            f = self.h.rpc(topic, {"id": jobid})
            return f.wait_for(MODULE_TIMEOUT).get() or {}
        except OSError as exc:
            if module_verdict(exc) == ALONE:
                self.log.debug(f"{topic}: {errtext(exc)}: working alone")
                return None
            raise PerilogError(f"pam module: {errtext(exc)}") from None

    def module_jobs(self, uid: int) -> List[int]:
        """The running jobs of *uid* the pam module holds on this rank."""
        f = self.h.rpc("pam.check", {"uid": uid})
        return list(self._get(f, "pam.check").get("jobs", []))

    def report_removed(self, uid: int, removed: dict) -> None:
        """Tell the pam module what was removed (pam.leftovers-removed), for
        its log and counters; best effort."""
        payload = {"uid": uid, "removed": removed}
        try:
            f = self.h.rpc("pam.leftovers-removed", payload)
            f.wait_for(RPC_TIMEOUT).get()
        except OSError as exc:
            self.log.debug(f"pam.leftovers-removed: {errtext(exc)}")

    def drain(self, reason: str) -> None:
        """Drain this rank with *reason* (a failure is logged, not raised)."""
        topic, payload, rank0 = rpcs.drain(self.rank, reason)
        try:
            self.h.rpc(topic, payload, nodeid=rank0).wait_for(RPC_TIMEOUT).get()
        except OSError as exc:
            self.log.error(f"cannot drain rank {self.rank}: {errtext(exc)}")

    def raise_exception(self, jobid: int, note: str) -> None:
        """Raise a fatal ``prolog`` exception on *jobid* with *note*."""
        payload = {"id": jobid, "severity": 0, "type": "prolog", "note": note}
        try:
            self.h.rpc("job-manager.raise", payload).wait_for(RPC_TIMEOUT).get()
        except OSError as exc:
            self.log.error(f"cannot raise an exception on the job: {errtext(exc)}")

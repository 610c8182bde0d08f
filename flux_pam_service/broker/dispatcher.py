"""Rank 0: job-manager journal events in, pam.job-* messages to a job's ranks out.

A Dispatcher keeps the few facts it needs per active job and returns the
messages each event implies; only the ranks in a job's R hear about it, each
with its own share of R, so the cost is O(sum of job sizes).  Which event
sends what: doc/design.rst, "From the journal to a D-Bus call".
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from flux_pam_service.core import idset, rv1
from flux_pam_service.core.jobid import f58

JOB_START = "pam.job-start"
JOB_CLEANUP = "pam.job-cleanup"
JOB_END = "pam.job-end"

_MAX_ERRORS = 100


@dataclass(frozen=True)
class Message:
    """A request for the pam module on *rank*."""

    rank: int
    topic: str
    payload: dict


@dataclass
class TrackedJob:
    """One active job as rank 0 sees it."""

    id: int
    userid: Optional[int] = None
    local: Dict[int, rv1.Resources] = field(default_factory=dict)
    """Each rank's share of R, for the ranks that have not been ended yet."""
    allocated: bool = False
    running: bool = False

    @property
    def ranks(self) -> frozenset:
        """Ranks that hold the job and have not been ended yet."""
        return frozenset(self.local)


class Dispatcher:
    """Turns journal events into pam.job-* messages."""

    def __init__(self) -> None:
        self.jobs: Dict[int, TrackedJob] = {}
        self.errors: List[str] = []

    def _error(self, text: str) -> None:
        self.errors.append(text)
        del self.errors[:-_MAX_ERRORS]

    @staticmethod
    def _local_R(job: TrackedJob, rank: int) -> dict:
        return rv1.make_R(rank, job.local[rank])

    def _to(self, ranks: Any, topic: str, job: TrackedJob) -> List[Message]:
        out = []
        for rank in sorted(ranks):
            payload: dict = {"id": job.id}
            if topic == JOB_START:
                payload["userid"] = job.userid
                payload["R"] = self._local_R(job, rank)
            out.append(Message(rank, topic, payload))
        return out

    def event(
        self,
        jobid: int,
        name: str,
        context: Optional[dict] = None,
        R: Optional[Any] = None,
    ) -> List[Message]:
        """Account for one event of *jobid*; return the messages it implies."""
        context = context or {}
        job = self.jobs.get(jobid)
        if name == "submit":
            if job is None:
                job = self.jobs[jobid] = TrackedJob(jobid)
            userid = context.get("userid")
            if isinstance(userid, int):
                job.userid = userid
            return []
        if job is None:
            return []
        if name == "alloc":
            if job.allocated or job.userid is None:
                return []
            try:
                job.local = rv1.by_rank(R)
            except rv1.RError as exc:
                self._error(f"job {f58(jobid)}: alloc: {exc}")
                return []
            job.allocated = job.running = True
            return self._to(job.ranks, JOB_START, job)
        if name == "finish" or (name == "exception" and context.get("severity") == 0):
            if not job.running:
                return []
            job.running = False
            return self._to(job.ranks, JOB_CLEANUP, job)
        if name == "release":
            spec = context.get("ranks", "all")
            if spec == "all":
                ended = job.ranks
            else:
                try:
                    ended = job.ranks & idset.decode(spec)
                except ValueError as exc:
                    self._error(f"job {f58(jobid)}: release: {exc}")
                    ended = frozenset()
            messages = self._to(ended, JOB_END, job)
            for rank in ended:
                del job.local[rank]
            return messages
        if name in ("free", "clean"):
            messages = self._to(job.local, JOB_END, job)
            job.local = {}
            job.running = False
            if name == "clean":
                del self.jobs[jobid]
            return messages
        return []

    def _entry(self, job: TrackedJob, rank: int) -> dict:
        """*job* as an entry of pam.sync for *rank*."""
        return {
            "id": job.id,
            "userid": job.userid,
            "R": self._local_R(job, rank),
            "running": job.running,
        }

    def jobs_on(self, rank: int) -> List[dict]:
        """Every job that currently holds *rank*, as pam.sync entries."""
        return [
            self._entry(job, rank)
            for job in self.jobs.values()
            if job.allocated and rank in job.local
        ]

    def jobs_by_rank(self) -> Dict[int, List[dict]]:
        """jobs_on() for every rank that holds a job, in one pass."""
        out: Dict[int, List[dict]] = {}
        for job in self.jobs.values():
            if job.allocated:
                for rank in job.local:
                    out.setdefault(rank, []).append(self._entry(job, rank))
        return out

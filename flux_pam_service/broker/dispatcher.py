"""Rank-0 dispatch: job-manager journal events -> messages to the ranks of a job.

The ``pam`` module on rank 0 follows ``job-manager.events-journal`` and feeds
every event to a Dispatcher, which keeps the few facts it needs per active
job and returns the messages to send.  Only the ranks in a job's R hear
about it, so the cost is O(sum of job sizes), not O(ranks x jobs).

Events used (RFC 21):

    submit      context.userid
    alloc       R: pam.job-start {id, userid, R} to every rank in R
    finish      pam.job-cleanup {id} to the job's remaining ranks
    exception   severity 0 after alloc: as finish (the job left RUN)
    release     context.ranks ("all" or an idset): pam.job-end {id} to those
                ranks; they are no longer the job's
    free, clean pam.job-end {id} to every remaining rank; the job is forgotten
                at clean

A job cancelled before alloc produces no message at all.  A job whose prolog
fails got job-start at alloc, then its exception sends job-cleanup and its
free sends job-end.

The R sent in job-start is the job's R restricted to the receiving rank (an
Rv1 object with one R_lite entry, built by rv1.make_R), so a message's size
does not grow with the job's size.

Interface:
    Message(rank, topic, payload)
    TrackedJob                          what is known of one active job
    Dispatcher()
        event(jobid, name, context, R=None) -> [Message]
        jobs_on(rank) -> [dict]         {"id", "userid", "R", "running"} of
                                        every job that holds *rank*: the
                                        payload of pam.sync
        jobs_by_rank() -> {rank: [dict]}  the same for every rank, in one pass
        jobs -> {jobid: TrackedJob}
        errors -> [str]                 problems seen (bad R),
                                        most recent last, at most 100
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

    def jobs_on(self, rank: int) -> List[dict]:
        """Every job that currently holds *rank*, as pam.sync entries."""
        out = []
        for job in self.jobs.values():
            if job.allocated and rank in job.local:
                out.append(
                    {
                        "id": job.id,
                        "userid": job.userid,
                        "R": self._local_R(job, rank),
                        "running": job.running,
                    }
                )
        return out

    def jobs_by_rank(self) -> Dict[int, List[dict]]:
        """jobs_on() for every rank that holds a job, in one pass."""
        out: Dict[int, List[dict]] = {}
        for job in self.jobs.values():
            if not job.allocated:
                continue
            for rank in job.local:
                out.setdefault(rank, []).append(
                    {
                        "id": job.id,
                        "userid": job.userid,
                        "R": self._local_R(job, rank),
                        "running": job.running,
                    }
                )
        return out

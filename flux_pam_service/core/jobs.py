"""Each user's active jobs on this rank, and the union of what they hold here.

start() and end() say whether the user's slice must change: a user's first
job (prepare), a union that grew or shrank (apply), the last job's end
(teardown).  A job is *running* from its start until cleanup() (it left the
RUN state); only running jobs admit logins, while a job in CLEANUP still
counts for the union until end(), its processes and housekeeping may still
be there.  Running jobs are indexed per user, so admitted(), nrunning() and
running(uid, limit) cost the same at any number of jobs (they answer every
login).  The instance owner's jobs are ignored.
"""

from dataclasses import dataclass
from itertools import islice
from typing import Dict, List, Optional

from flux_pam_service.core.rv1 import EMPTY, Resources, union


@dataclass
class Job:
    """One active job of a user on this rank."""

    uid: int
    resources: Resources
    running: bool = True


class UserTable:
    """Active jobs per user on one rank."""

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self._jobs: Dict[int, Job] = {}
        self._users: Dict[int, Dict[int, Job]] = {}
        self._union: Dict[int, Resources] = {}
        self._running: Dict[int, Dict[int, None]] = {}  # uid -> running jobids

    def start(self, jobid: int, uid: int, resources: Resources) -> bool:
        """Record that *jobid* of *uid* holds *resources* here; whether the
        user's slice must change (a first job, or a union that grew).

        A second start of the same job is a no-op.
        """
        if uid == self.owner or jobid in self._jobs:
            return False
        job = Job(uid, resources)
        self._jobs[jobid] = job
        user = self._users.setdefault(uid, {})
        first = not user
        user[jobid] = job
        self._running.setdefault(uid, {})[jobid] = None
        before = self._union.get(uid, EMPTY)
        self._union[uid] = before | resources
        return first or self._union[uid] != before

    def cleanup(self, jobid: int) -> None:
        """Record that *jobid* left the RUN state; it no longer admits logins."""
        job = self._jobs.get(jobid)
        if job is not None:
            job.running = False
            self._not_running(job.uid, jobid)

    def _not_running(self, uid: int, jobid: int) -> None:
        running = self._running.get(uid)
        if running is not None:
            running.pop(jobid, None)
            if not running:
                del self._running[uid]

    def end(self, jobid: int) -> bool:
        """Forget *jobid*; whether its user's slice must change (the last
        job ended, or the union shrank).  Ending an unknown job is a no-op."""
        job = self._jobs.pop(jobid, None)
        if job is None:
            return False
        user = self._users[job.uid]
        del user[jobid]
        self._not_running(job.uid, jobid)
        if not user:
            del self._users[job.uid]
            del self._union[job.uid]
            return True
        before = self._union[job.uid]
        self._union[job.uid] = union(j.resources for j in user.values())
        return self._union[job.uid] != before

    def admitted(self, uid: int) -> bool:
        """True if *uid* has a running job on this rank."""
        return uid in self._running

    def running(self, uid: int, limit: Optional[int] = None) -> List[int]:
        """The user's running jobs here in start order (the first *limit*)."""
        jobs = self._running.get(uid, {})
        if limit is None or limit >= len(jobs):
            return list(jobs)
        return list(islice(jobs, limit))

    def nrunning(self, uid: int) -> int:
        """How many running jobs the user has here."""
        return len(self._running.get(uid, ()))

    def union(self, uid: int) -> Resources:
        """The union of the resources of the user's active jobs here."""
        return self._union.get(uid, EMPTY)

    def jobs(self, uid: int) -> Dict[int, Job]:
        """The user's active jobs here (a copy)."""
        return dict(self._users.get(uid, {}))

    def users(self) -> List[int]:
        """Users with at least one active job here."""
        return list(self._users)

    def uid_of(self, jobid: int) -> Optional[int]:
        """The owner of an active job, or None."""
        job = self._jobs.get(jobid)
        return job.uid if job else None

    def __len__(self) -> int:
        return len(self._jobs)

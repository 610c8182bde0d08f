"""Per-rank, per-user job state and the actions its transitions imply.

A rank tracks each user's active jobs there with the resources each job holds
on that rank.  Transitions return the slice actions they imply and do nothing
else; the caller (broker module or prolog/housekeeping) carries them out.

    first job of a user          -> PREPARE  (start user@UID, apply the union)
    a job changes the union      -> APPLY    (set the union on user-UID.slice)
    last job of the user ends    -> TEARDOWN (kill if configured, stop, revert)

A job is *running* from its start until cleanup() (the job left the RUN
state: finish or fatal exception).  Only running jobs admit logins; a job in
CLEANUP still counts for the union until end(), because its processes and
housekeeping may still be there.  Running jobs are indexed per user, so
admitted(), nrunning() and running(uid, limit) cost the same whatever the
number of jobs (they answer every login).

The instance owner is never managed: its jobs are ignored.

Interface:
    Action(kind, uid, resources)
    UserTable(owner)
        start(jobid, uid, resources) -> [Action]
        cleanup(jobid) -> [Action]        (always empty; flips admission)
        end(jobid) -> [Action]
        admitted(uid) -> bool             a running job is here
        running(uid, limit=None) -> [jobid]
                                          running jobs, in start order; the
                                          first *limit* only if given
        nrunning(uid) -> int
        union(uid) -> Resources
        jobs(uid) -> {jobid: Job}
        users() -> [uid]
        uid_of(jobid) -> uid or None
"""

from dataclasses import dataclass
from itertools import islice
from typing import Dict, List, Optional

from flux_pam_service.core.rv1 import EMPTY, Resources, union

PREPARE = "prepare"
APPLY = "apply"
TEARDOWN = "teardown"


@dataclass(frozen=True)
class Action:
    """A slice operation for one user; *resources* is the union to apply."""

    kind: str
    uid: int
    resources: Resources = EMPTY


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

    def start(self, jobid: int, uid: int, resources: Resources) -> List[Action]:
        """Record that *jobid* of *uid* holds *resources* here.

        A second start of the same job is a no-op.
        """
        if uid == self.owner or jobid in self._jobs:
            return []
        job = Job(uid, resources)
        self._jobs[jobid] = job
        user = self._users.setdefault(uid, {})
        first = not user
        user[jobid] = job
        self._running.setdefault(uid, {})[jobid] = None
        before = self._union.get(uid, EMPTY)
        after = before | resources
        self._union[uid] = after
        if first:
            return [Action(PREPARE, uid, after)]
        if after != before:
            return [Action(APPLY, uid, after)]
        return []

    def cleanup(self, jobid: int) -> List[Action]:
        """Record that *jobid* left the RUN state; it no longer admits logins."""
        job = self._jobs.get(jobid)
        if job is not None:
            job.running = False
            self._not_running(job.uid, jobid)
        return []

    def _not_running(self, uid: int, jobid: int) -> None:
        running = self._running.get(uid)
        if running is not None:
            running.pop(jobid, None)
            if not running:
                del self._running[uid]

    def end(self, jobid: int) -> List[Action]:
        """Forget *jobid*.  Ending an unknown job is a no-op."""
        job = self._jobs.pop(jobid, None)
        if job is None:
            return []
        user = self._users[job.uid]
        del user[jobid]
        self._not_running(job.uid, jobid)
        if not user:
            del self._users[job.uid]
            del self._union[job.uid]
            return [Action(TEARDOWN, job.uid)]
        before = self._union[job.uid]
        after = union(j.resources for j in user.values())
        self._union[job.uid] = after
        if after != before:
            return [Action(APPLY, job.uid, after)]
        return []

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

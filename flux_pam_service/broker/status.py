"""What pam.status and pam.stats-get report (doc/design.rst, "RPC protocol").

The answers come from the scheduler's memory; the users' unit states, login
scopes and process counts are read from systemd when asked (LiveRead), on a
thread of their own and for at most LIVE_TIMEOUT seconds, so that pam.status
answers while systemd is slow.  No Flux handle.
"""

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional

from flux_pam_service.broker import admission
from flux_pam_service.broker.user import Operation, User
from flux_pam_service.core.errors import errtext
from flux_pam_service.core.jobid import f58
from flux_pam_service.systemd import operations

if TYPE_CHECKING:
    from flux_pam_service.broker.scheduler import Scheduler

#: pam.status waits at most this long for the live read of the slices
LIVE_TIMEOUT = 0.3


def user_status(s: "Scheduler", uid: int) -> dict:
    """One user's entry of pam.status (the live fields still null)."""
    user = s.users.get(uid) or User(uid)
    jobs = s.table.jobs(uid)
    return {
        "uid": uid,
        "active": bool(jobs) and user.busy not in ("teardown", "release"),
        "admitted": admission.decide(s, uid)[0],
        "jobs": [
            {
                "id": j,
                "f58": f58(j),
                "running": job.running,
                **job.resources.to_dict(),
            }
            for j, job in sorted(jobs.items())
        ],
        "union": s.table.union(uid).to_dict(),
        "slice": None,  # filled in by the live read
        "enforcement": admission.enforcement_state(s, user.verdict),
        "last_action": user.last_action,
        "errors": list(user.errors),
        "pending": user.pending,
        "scopes": None,  # filled in by the live read
        "logins": None,  # the same
    }


def known_uids(s: "Scheduler") -> List[int]:
    """Every user this rank holds: with jobs, or with a slice in hand."""
    return sorted(set(s.table.users()) | set(s.users))


def status(s: "Scheduler", uids: Iterable[int], shared_node: bool) -> dict:
    """pam.status for *uids*, before the live read."""
    return {
        "rank": s.rank,
        "owner": s.owner,
        "config": s.cfg.to_dict(),
        "closed": s.closed,
        "users": [user_status(s, uid) for uid in sorted(uids)],
        "pending": s.npending(),
        "systemd": s.systemd_status,
        "enforcement": admission.node_enforcement(s),
        "leftovers_removed": dict(s.stats["leftovers-removed"]),
        "synced": s.synced,
        "shared_node": shared_node,
        "live": "ok",
    }


def stats(s: "Scheduler", workers_busy: int, dispatcher_jobs: Optional[int]) -> dict:
    """pam.stats-get: counters and timings."""
    out = dict(s.stats)
    ops = sum(out["operations"].values()) or 1
    out["op-time-mean"] = out["op-time-total"] / ops
    out.update(
        {
            "users": len(s.users),
            "jobs": len(s.table),
            "pending": s.npending(),
            # user managers kept running by pam.user-stop-delay
            "users-kept": sum(1 for u in s.users.values() if u.stop_at is not None),
            "workers-busy": workers_busy,
            "synced": s.synced,
        }
    )
    if dispatcher_jobs is not None:
        out["dispatcher-jobs"] = dispatcher_jobs
    return out


class LiveRead:
    """Answer pam.status once its users' slices are read as they are now.

    The read (operations.live, of every user this rank knows) runs on the
    status thread; after LIVE_TIMEOUT the answer goes without it, ``live``
    saying why, and the live fields (states, scopes, process counts) are
    null.  One read runs at a time: requests that arrive while it runs are
    served by the next, started when it ends, so the cost does not grow with
    how often pam.status is asked, and a systemd that does not answer piles
    nothing up.
    """

    def __init__(self, sched: "Scheduler", submit: Callable[..., None]) -> None:
        self.sched = sched  # its users, timer, cancel, reply and guard
        self.submit = submit  # to the status thread
        self.busy = False  # a live read of the slices runs
        self.next: List[Callable] = []  # status answers for the next one

    def answer(self, msg: Any, answer: dict) -> None:
        """Answer *msg* with *answer* once the live read fills it in."""
        done = {"answered": False}

        def finish(value: Optional[Dict[int, dict]], why: Optional[str]) -> None:
            if done["answered"]:
                return
            done["answered"] = True
            self.sched.cancel(timer)
            for u in answer["users"]:
                read = (value or {}).get(u["uid"])
                sl = {}
                for key in ("slice_state", "service_state", "processes", "orphans"):
                    sl[key] = read[key] if read else None
                sl["scopes"] = u["scopes"] = read["scopes"] if read else None
                u["logins"] = read["logins"] if read else None
                u["slice"] = sl
            if why is not None:
                answer["live"] = why
            self.sched.reply(msg, answer)

        if not answer["users"]:
            self.sched.reply(msg, answer)
            return
        timer = self.sched.timer(
            LIVE_TIMEOUT, finish, None, f"not read within {LIVE_TIMEOUT:g}s"
        )
        self.next.append(finish)
        if not self.busy:
            self._read()

    def _read(self) -> None:
        waiting, self.next = self.next, []
        uids = known_uids(self.sched)
        root = self.sched.cgroup_root
        self.busy = True

        def done(out: Optional[operations.Outcome], exc: Any) -> None:
            self.busy = False
            for finish in waiting:
                if exc is not None:
                    finish(None, f"cannot read the slices: {errtext(exc)}")
                else:
                    assert out is not None
                    finish(out.value, None)
            if self.next:
                self._read()

        self.submit(
            Operation("live", -1, lambda state: operations.live(state, uids, root)),
            lambda o, e: self.sched.guard("status", done, o, e),
        )

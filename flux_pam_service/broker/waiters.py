"""Requests that wait for a user's slice operation.

``pam.prolog`` and ``pam.housekeeping`` are answered once the operation that
covers the job's change has completed (its result, or its error);
``pam.attach`` once no operation on the user's slice is queued or running.
Each gives up after WAIT_TIMEOUT seconds.  The scheduler
(flux_pam_service.broker.scheduler) tells the waiters when a job was
processed and when an operation ended; its *reply* and *error* answer the
request messages, which are opaque here.
"""

import errno
import syslog
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from flux_pam_service.broker import admission
from flux_pam_service.core.jobid import f58

if TYPE_CHECKING:
    from flux_pam_service.broker.scheduler import Scheduler
    from flux_pam_service.broker.user import User

#: pam.prolog / pam.housekeeping / pam.attach give up after this (the
#: executables wait 30s)
WAIT_TIMEOUT = 25.0

SKIPPED = ("skipped", 0, "")


@dataclass
class Waiter:
    """A deferred request: pam.prolog, pam.housekeeping or pam.attach."""

    msg: Any
    kind: str
    jobid: int = -1
    uid: int = -1
    need: int = 0  # the user's seq that must be done
    timer: Any = None
    scope: str = ""


class Waiters:
    """The deferred requests of one rank."""

    def __init__(self, sched: "Scheduler") -> None:
        self.sched = sched  # its timer, cancel, reply and error serve here
        # requests for jobs whose job-start (job-end) has not arrived yet
        self.by_job: Dict[int, List[Waiter]] = {}

    # ------------------------------------------------------------ perilog

    def perilog(self, msg: Any, jobid: int, kind: str) -> None:
        """pam.prolog (*kind* "prolog") or pam.housekeeping for *jobid*."""
        s = self.sched
        if s.closed is not None:
            # nothing is done while closed, so nothing is waited for: the
            # job is not failed for a configuration mistake
            uid = s.table.uid_of(jobid)
            if uid is None:
                uid = s.ended.get(jobid, (-1, None))[0]
            self.sched.reply(msg, {"id": jobid, "uid": uid, "result": "skipped"})
            return
        w = Waiter(msg, kind, jobid)
        uid = s.table.uid_of(jobid)
        if uid is None and jobid in s.ended:
            uid, seq = s.ended[jobid]
            if seq is None or kind == "prolog":
                self.sched.reply(msg, {"id": jobid, "uid": uid, "result": "skipped"})
                return
            user = s.users.get(uid)
            if user is None or user.done_seq >= seq and not user.busy:
                w.uid = uid
                if user is not None:
                    outcome = user.last_result
                else:
                    outcome = s.forgotten.get(uid, SKIPPED)
                self.answer(w, outcome)
                return
            w.uid, w.need = uid, seq
            user.waiters.append(w)
            self._wait(w, "the teardown")
            return
        if uid is None:
            if kind == "housekeeping" and s.synced:
                self.sched.reply(msg, {"id": jobid, "uid": -1, "result": "skipped"})
                return
            self.by_job.setdefault(jobid, []).append(w)
            self._wait(w, "job-start" if kind == "prolog" else "job-end")
            return
        w.uid = uid
        if kind == "housekeeping":
            self.by_job.setdefault(jobid, []).append(w)
            self._wait(w, "job-end")
            return
        user = s.user(uid)
        if not s.managing() and user.prepared is False:
            self.sched.reply(msg, {"id": jobid, "uid": uid, "result": "skipped"})
            return
        w.need = user.seq
        if user.settled:
            self.answer(w, user.last_result)
            return
        user.waiters.append(w)
        self._wait(w, "the slice operation")

    def _wait(self, w: Waiter, what: str) -> None:
        def expire() -> None:
            w.timer = None
            for lst in [self.by_job.get(w.jobid, [])] + [
                u.waiters for u in self.sched.users.values()
            ]:
                if w in lst:
                    lst.remove(w)
            self.sched.error(
                w.msg,
                errno.ETIMEDOUT,
                f"job {f58(w.jobid)}: {what} did not complete"
                f" within {WAIT_TIMEOUT:.0f}s",
            )

        w.timer = self.sched.timer(WAIT_TIMEOUT, expire)

    def wake_job(self, jobid: int, uid: int, user: "Optional[User]") -> None:
        """job-start or job-end of *jobid* was processed: re-file its waiters."""
        s = self.sched
        waiting = self.by_job.pop(jobid, [])
        keep = []
        for w in waiting:
            w.uid = uid
            if user is None or not s.managing() and user.prepared is False:
                self.sched.cancel(w.timer)
                self.answer(w, SKIPPED)
                continue
            if w.kind == "housekeeping" and s.table.uid_of(jobid) is not None:
                keep.append(w)  # still tracked: wait for job-end
                continue
            w.need = user.seq
            user.waiters.append(w)
        if keep:
            self.by_job[jobid] = keep
        if user is not None and user.waiters and user.done_seq >= user.seq:
            if not user.busy and user.retry_timer is None:
                self.resolve(user, user.seq, user.last_result)

    def answer(self, w: Waiter, outcome: tuple) -> None:
        """Answer pam.prolog / pam.housekeeping with an outcome tuple."""
        result, errnum, text = outcome
        if result is None:
            self.sched.error(w.msg, errnum, text)
            return
        if w.kind == "prolog" and result == "torn-down":
            result = "skipped"
        answer = {"id": w.jobid, "uid": w.uid, "result": result}
        if w.kind == "prolog" and result == "applied":
            message = admission.refusal(self.sched, self.sched.users.get(w.uid))
            if message is not None:
                answer["message"] = message
        self.sched.reply(w.msg, answer)

    def resolve(self, user: "User", snap: int, outcome: tuple) -> None:
        """Answer the waiters that the operation for *snap* satisfies."""
        keep = []
        for w in user.waiters:
            if w.need > snap:
                keep.append(w)
                continue
            self.sched.cancel(w.timer)
            self.answer(w, outcome)
        user.waiters = keep
        if user.busy is None:
            attach, user.attach_waiters = user.attach_waiters, []
            for w in attach:
                self.sched.cancel(w.timer)
                self.attach(w.msg, user.uid, w.scope)

    # ------------------------------------------------------------ attach

    def attach(self, msg: Any, uid: int, scope: str) -> None:
        """Confirm *scope* for *uid*, refuse it, or wait for the slice.

        The user must be admitted here.  While the module manages slices, a
        login is confirmed only once the user's slice is in place: while an
        operation on it is queued or running the answer waits for it (a
        teardown then ends in a refusal); a slice whose preparation failed
        refuses with EAGAIN and the error.
        """
        s = self.sched
        if not s.table.admitted(uid):
            self.sched.error(
                msg, errno.EPERM, f"user {uid} has no active job on rank {s.rank}"
            )
            return
        if s.closed is not None:
            # closed: nothing will be done to the slice, so nothing to wait for
            s.log(syslog.LOG_DEBUG, f"uid {uid}: {scope} not attached: closed")
            message = admission.refusal(s, None)
            self.sched.reply(msg, {"attached": False, "message": message})
            return
        user = s.user(uid)
        if s.managing() and user.pending:
            if user.retry_timer is not None:
                err = user.errors[-1] if user.errors else "not ready"
                self.sched.error(msg, errno.EAGAIN, f"user-{uid}.slice: {err}")
                return
            w = Waiter(msg, "attach", uid=uid, scope=scope)
            user.attach_waiters.append(w)

            def expire() -> None:
                if w in user.attach_waiters:
                    user.attach_waiters.remove(w)
                    self.sched.error(
                        msg,
                        errno.ETIMEDOUT,
                        f"user-{uid}.slice not ready within {WAIT_TIMEOUT:.0f}s",
                    )

            w.timer = self.sched.timer(WAIT_TIMEOUT, expire)
            return
        if s.managing() and user.prepared is not True:
            err = user.errors[-1] if user.errors else "not prepared"
            self.sched.error(msg, errno.EAGAIN, f"user-{uid}.slice: {err}")
            return
        message = admission.refusal(s, user)
        if message is not None:
            s.log(syslog.LOG_DEBUG, f"uid {uid}: {scope} refused: {message}")
            self.sched.reply(msg, {"attached": False, "message": message})
            return
        s.log(syslog.LOG_DEBUG, f"uid {uid}: attached {scope}")
        self.sched.reply(msg, {"attached": True})

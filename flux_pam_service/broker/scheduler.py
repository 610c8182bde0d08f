"""The per-user operation scheduler of the pam broker module.

Every change of a user's jobs on this rank that calls for a systemd
operation bumps the user's ``seq``.  A user has at most one operation in
flight; one that starts works from the user's state at that moment, so the
changes that arrive meanwhile coalesce into the next one.  Different users
proceed in parallel.  A failed operation is retried with backoff until it
succeeds (doc/design.rst, "The per-user scheduler").

No Flux handle here: the module gives the scheduler how to run an operation
on a worker thread (*submit*), timers, the sdexec-mapper lookup, the drain
request and the log; the requests that wait for operations are
flux_pam_service.broker.waiters'.
"""

import errno
import json
import math
import syslog
import time
import traceback
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Dict, List, Optional

from flux_pam_service.broker import admission, repair
from flux_pam_service.broker.stop_delay import StopDelay
from flux_pam_service.broker.user import Operation, User
from flux_pam_service.broker.waiters import Waiters
from flux_pam_service.core import config, limits, lockdir, rv1
from flux_pam_service.core.errors import errtext
from flux_pam_service.core.jobid import f58
from flux_pam_service.core.jobs import UserTable
from flux_pam_service.systemd import operations
from flux_pam_service.systemd.client import unreachable
from flux_pam_service.systemd.operations import Outcome
from flux_pam_service.systemd.user_slice import LingerError, SurvivorsError

RETRY_MIN = 1.0
RETRY_MAX = 30.0
#: ended jobs (and forgotten users) remembered for late pam.prolog and
#: pam.housekeeping requests
ENDED_MEMORY = 8192
#: errors kept per user for pam.status
MAX_ERRORS = 10

Done = Callable[[Any, Optional[BaseException]], None]


class Scheduler:
    """This rank's users, their jobs and the operations on their slices."""

    def __init__(
        self,
        rank: int,
        owner: int,
        cfg: "config.PamConfig",
        *,
        submit: Callable[[Operation, Done], None],
        timer: Callable[..., Any],
        cancel: Callable[[Any], None],
        lookup: Callable[[rv1.Resources, Done], None],
        drain: Callable[[str], None],
        reply: Callable[..., None],
        error: Callable[[Any, int, str], None],
        log: Callable[[int, str], None],
        closed: Optional[str] = None,
        lock_dir: str = lockdir.DEFAULT,
        cgroup_root: Optional[str] = None,
        shared_node: bool = False,
    ) -> None:
        self.rank = rank
        self.owner = owner
        self.cfg = cfg
        # the error that keeps the module closed, or None
        self.closed = closed
        self.reopened = False  # bring_to_config() reconciles (see reopen)
        # what the sdexec-mapper's answers depend on: [sdexec] and
        # exec.sdexec-properties (a change invalidates props_cache)
        self.mapper_inputs: Any = None
        self.remap = False
        # the config the slices were last brought to (see bring_to_config)
        self.applied_cfg = cfg
        self.lock_dir = lock_dir
        self.cgroup_root = cgroup_root
        # several brokers of the instance share this node's systemd
        self.shared_node = shared_node
        self.submit = submit
        self.timer = timer
        self.cancel = cancel
        self.lookup = lookup
        self.drain_rank = drain
        self.log = log
        self.table = UserTable(owner)
        self.users: Dict[int, User] = {}
        self.ended: OrderedDict[int, tuple] = OrderedDict()  # jobid -> (uid, seq)
        # last outcome of users no longer tracked, for late pam.housekeeping
        self.forgotten: OrderedDict[int, tuple] = OrderedDict()
        self.props_cache: Dict[Any, dict] = {}
        self.systemd_status = "ok"
        self.synced = False
        # the latest read-back of any user: (uid, time, Verdict)
        self.node_verdict: Optional[tuple] = None
        self.stats: Dict[str, Any] = {
            "jobs-started": 0,
            "jobs-ended": 0,
            "operations": {},
            "failures": 0,
            "repairs": 0,
            "drains": 0,
            "journal-events": 0,
            "messages-sent": 0,
            "message-errors": 0,
            "mapper-lookups": 0,
            "op-time-max": 0.0,
            "op-time-total": 0.0,
            # what housekeeping removed after users' last jobs, by kind
            "leftovers-removed": {},
        }
        self.reply = reply
        self.error = error
        self.waiters = Waiters(self)
        self.stop_delay = StopDelay(self)

    # ------------------------------------------------------------ helpers

    def guard(self, what: str, fn: Callable, *args: Any) -> None:
        """Run a callback; log (never raise) what it throws."""
        try:
            fn(*args)
        except Exception as exc:
            self.log(syslog.LOG_ERR, f"{what}: {exc}")
            self.log(syslog.LOG_DEBUG, traceback.format_exc())

    def managing(self) -> bool:
        """pam.manage-user-slice."""
        return self.cfg.manage_user_slice

    def user(self, uid: int) -> User:
        """The user's record, made on first use."""
        user = self.users.get(uid)
        if user is None:
            self.forgotten.pop(uid, None)
            # before the first sync every user is verified against systemd
            user = self.users[uid] = User(uid, prepared=False if self.synced else None)
        return user

    def npending(self) -> int:
        """How many users have an operation in flight or due."""
        return sum(1 for u in self.users.values() if u.pending)

    # ------------------------------------------------------------ jobs

    def job_start(self, jobid: int, uid: int, R: Any, running: bool = True) -> None:
        """*jobid* of *uid* holds R here (job-start, or a sync)."""
        if self.table.uid_of(jobid) is not None or jobid in self.ended:
            return
        res = rv1.local(R, self.rank)
        changed = self.table.start(jobid, uid, res)
        if self.table.uid_of(jobid) is None:  # the owner's job: not managed
            self._remember_ended(jobid, uid, None)
            self.waiters.wake_job(jobid, uid, None)
            return
        self.stats["jobs-started"] += 1
        if not running:
            self.table.cleanup(jobid)
        self.log(
            syslog.LOG_DEBUG,
            f"job {f58(jobid)}: start uid {uid} core {res.to_dict()['core'] or '-'}"
            f" gpu {res.to_dict()['gpu'] or '-'}",
        )
        user = self.user(uid)
        if changed:
            user.seq += 1
        self.waiters.wake_job(jobid, uid, user)
        self.kick(user)

    def job_cleanup(self, jobid: int) -> None:
        """*jobid* left the RUN state: it no longer admits logins."""
        if self.table.uid_of(jobid) is None:
            return
        self.table.cleanup(jobid)
        self.log(syslog.LOG_DEBUG, f"job {f58(jobid)}: cleanup (no longer admits)")

    def job_end(self, jobid: int) -> None:
        """*jobid* no longer holds this rank."""
        uid = self.table.uid_of(jobid)
        if uid is None:
            return
        changed = self.table.end(jobid)
        self.stats["jobs-ended"] += 1
        user = self.user(uid)
        if changed:
            user.seq += 1
        self._remember_ended(jobid, uid, user.seq)
        self.log(syslog.LOG_DEBUG, f"job {f58(jobid)}: end uid {uid}")
        self.waiters.wake_job(jobid, uid, user)
        self.kick(user)

    def leftovers_removed(self, uid: int, removed: Dict[str, int]) -> None:
        """Housekeeping removed what *uid* left behind (its counts by kind)."""
        counts = self.stats["leftovers-removed"]
        for kind, n in removed.items():
            if n > 0:
                counts[kind] = counts.get(kind, 0) + n
        shown = ", ".join(f"{n} {k}" for k, n in removed.items() if n) or "nothing"
        self.log(syslog.LOG_DEBUG, f"uid {uid}: housekeeping removed {shown}")

    def _remember_ended(self, jobid: int, uid: int, seq: Optional[int]) -> None:
        self.ended[jobid] = (uid, seq)
        while len(self.ended) > ENDED_MEMORY:
            self.ended.popitem(last=False)

    def sync(self, jobs: List[dict]) -> None:
        """Reconcile the table with the jobs rank 0 says hold this rank."""
        listed = {job["id"]: job for job in jobs}
        known = {j for uid in self.table.users() for j in self.table.jobs(uid)}
        for jobid in known - set(listed):
            self.job_end(jobid)
        for jobid, job in listed.items():
            if jobid not in known:
                self.ended.pop(jobid, None)
                self.job_start(jobid, job["userid"], job["R"], job.get("running", True))
            elif not job.get("running", True):
                self.job_cleanup(jobid)
        first = not self.synced
        self.synced = True
        self.log(
            syslog.LOG_DEBUG,
            f"sync: {len(listed)} jobs here"
            f" ({len(set(listed) - known)} new, {len(known - set(listed))} gone)",
        )
        if first:
            self.scan()

    # ------------------------------------------------------------ operations

    def kick(self, user: User) -> None:
        """Start the user's next operation if one is due and none runs."""
        if self.closed is not None:
            return  # no systemd change while closed; reopen() reconciles
        if user.busy or user.retry_timer is not None or user.done_seq >= user.seq:
            self._maybe_forget(user)
            return
        snap = user.seq
        uid = user.uid
        jobs = self.table.jobs(uid)
        if jobs:
            self.stop_delay.keep(user)
            if not self.managing():
                self._finished(user, snap, "skipped")
                return
            union = self.table.union(uid)
            if self.cfg.constrain_resources and union:
                props = self.props_cache.get(union)
                if props is None:
                    self._lookup(user, snap, union)
                    return
                self._activate(user, snap, props)
            else:
                self._activate(user, snap, None)
        else:
            if user.prepared is False or (
                user.prepared is None and not self.managing()
            ):
                # never managed here (or unknown while not managing): keep off
                self._finished(user, snap, "skipped")
                return
            self.stop_delay.release_or_teardown(user, snap)

    def _activate(self, user: User, snap: int, props: Optional[dict]) -> None:
        uid = user.uid
        try:
            props = limits.login_properties(props, self.cfg)
        except OSError as exc:
            self._failed(user, snap, "login limits", exc, 0.0)
            return
        first = user.prepared is False
        verify = user.prepared is None
        if props is None and not first and not verify:
            if user.applied:
                run = partial(operations.unconstrain, uid=uid)
                self._submit(user, snap, Operation("unconstrain", uid, run))
            else:
                self._finished(user, snap, "applied")
            return
        if not first and not verify and props == user.applied:
            self._finished(user, snap, "applied")
            return
        desc = operations.description(uid, self.rank)
        root = self.cgroup_root
        since, last = user.applied, user.reading

        def run(state: dict) -> Outcome:
            return operations.activate(
                state, uid, props, first, verify, desc, root, since, last
            )

        action = "prepare" if first or verify else "apply"
        self._submit(user, snap, Operation(action, uid, run, props, verify))

    def _lookup(self, user: User, snap: int, union: rv1.Resources) -> None:
        user.busy = "lookup"
        self.stats["mapper-lookups"] += 1

        def done(props: Any, exc: Optional[BaseException]) -> None:
            if exc is None and not isinstance(props, dict):
                exc = OSError(errno.EPROTO, "response is not an object")
            if exc is not None:
                user.busy = None
                err = OSError(
                    getattr(exc, "errno", None) or errno.EIO,
                    f"sdexec-mapper.lookup: {errtext(exc)}",
                )
                self.guard("lookup", self._failed, user, snap, "lookup", err, 0.0)
                return
            self.props_cache[union] = props
            user.busy = None
            if user.seq != snap:
                self.guard("kick", self.kick, user)
            else:
                self.guard("activate", self._activate, user, snap, props)

        self.lookup(union, done)

    def _submit(self, user: User, snap: int, op: Operation) -> None:
        action = op.action
        user.busy = action
        t0 = time.monotonic()
        uid = user.uid

        def done(
            out: Optional[operations.Outcome], exc: Optional[BaseException]
        ) -> None:
            elapsed = time.monotonic() - t0
            self.stats["op-time-total"] += elapsed
            self.stats["op-time-max"] = max(self.stats["op-time-max"], elapsed)
            ops = self.stats["operations"]
            ops[action] = ops.get(action, 0) + 1
            user.busy = None
            # a failure that repeats the previous one is logged at debug only
            repeated = exc is not None and bool(user.errors)
            repeated = repeated and user.errors[-1].endswith(errtext(exc))
            # the summary line of a failure is the error; the details are debug
            for level, line in getattr(exc if exc else out, "logs", []) or []:
                if repeated or exc is not None or level > syslog.LOG_WARNING:
                    level = syslog.LOG_DEBUG
                self.log(level, line)
            if exc is not None:
                self._failed(user, snap, action, exc, elapsed)
                return
            assert out is not None
            for text in out.repairs:
                self.stats["repairs"] += 1
                self.log(syslog.LOG_WARNING, f"repair: {text}")
            stopped = action == "teardown" or out.value == "teardown"
            if stopped:  # a release that had to kill stopped user@ too
                user.prepared = False
                user.applied = None
                user.verdict = None
                user.reading = None
                user.stop_at = None
                self._clear_marker(uid)
            elif action == "release":
                # user@ runs on and the slice holds op.props, read back: a
                # next job with the same properties needs no operation
                user.applied = op.props
                user.reading = out.reading
                admission.record_verdict(self, user, out.verdict)
                self.stop_delay.released(user)
            elif action == "unconstrain":
                user.applied = None
                user.verdict = None
                user.reading = None
            else:
                user.prepared = True
                user.applied = op.props
                user.reading = out.reading
                admission.record_verdict(self, user, out.verdict)
            self.systemd_status = "ok"
            user.errors = []
            user.retry_delay = 0.0
            self.log(
                syslog.LOG_DEBUG,
                f"uid {uid}: {action} user-{uid}.slice"
                + (
                    f" {self.table.union(uid).to_dict()}"
                    if action not in ("teardown", "release")
                    else ""
                )
                + f" ({elapsed * 1000:.0f} ms)",
            )
            result = "applied" if action not in ("teardown", "release") else "torn-down"
            self._finished(user, snap, result, action)

        self.submit(op, lambda o, e: self.guard(action, done, o, e))

    def _failed(
        self, user: User, snap: int, action: str, exc: BaseException, elapsed: float
    ) -> None:
        self.stats["failures"] += 1
        text = errtext(exc)
        message = f"uid {user.uid}: {action}: {text}"
        repeated = bool(user.errors) and user.errors[-1] == message
        user.errors.append(message)
        del user.errors[:-MAX_ERRORS]
        user.last_action = {"action": action, "time": time.time(), "result": text}
        if unreachable(exc):
            self.systemd_status = text
        self.log(syslog.LOG_DEBUG if repeated else syslog.LOG_ERR, message)
        errnum = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
        final = isinstance(exc, (LingerError, SurvivorsError)) or errnum == errno.EINVAL
        if isinstance(exc, SurvivorsError):
            self.stats["drains"] += 1
            self.drain_rank(f"flux-pam: user {user.uid}: {text}")
            if action == "release":
                # no delay for a node being drained: the teardown follows
                user.stop_at = -math.inf
                user.seq += 1
            else:
                user.prepared = False
                user.applied = None
        # answer the requests this operation was to satisfy
        failure = (None, errnum, f"user {user.uid}: {text}")
        self.waiters.resolve(user, snap, failure)
        if final:
            user.done_seq = max(user.done_seq, snap)
            user.last_result = failure
            if isinstance(exc, LingerError):
                user.prepared = False
            self.kick(user)
            return
        user.retry_delay = min(max(RETRY_MIN, user.retry_delay * 2), RETRY_MAX)
        user.retry_timer = self.timer(user.retry_delay, self._retry, user)

    def _retry(self, user: User) -> None:
        user.retry_timer = None
        self.kick(user)

    def _finished(
        self, user: User, snap: int, result: str, action: Optional[str] = None
    ) -> None:
        user.done_seq = max(user.done_seq, snap)
        user.last_result = (result, 0, "")
        if action is not None:
            user.last_action = {"action": action, "time": time.time(), "result": "ok"}
        self.waiters.resolve(user, snap, user.last_result)
        self.kick(user)

    def _maybe_forget(self, user: User) -> None:
        if (
            user.settled
            and user.prepared is False
            and not user.waiters
            and not user.attach_waiters
            and not self.table.jobs(user.uid)
            and not user.errors
        ):
            self.users.pop(user.uid, None)
            self.forgotten[user.uid] = user.last_result
            self.forgotten.move_to_end(user.uid)
            while len(self.forgotten) > ENDED_MEMORY:
                self.forgotten.popitem(last=False)

    def _clear_marker(self, uid: int) -> None:
        try:
            if lockdir.has_marker(uid, self.lock_dir):
                lockdir.clear_marker(uid, self.lock_dir)
        except OSError:
            pass  # not root: the executables own the markers

    def scan(self) -> None:
        """Tear down the slices of users without a job here (after a load)."""
        repair.scan(self)

    # ------------------------------------------------------------ config

    def configure(self, cfg: "config.PamConfig", mapper_inputs: Any = None) -> None:
        """A valid configuration is in force (config-reload).

        *mapper_inputs* are the tables the sdexec-mapper's answers depend on;
        when they changed, every slice is mapped and applied again.
        """
        self.cfg = cfg
        if mapper_inputs != self.mapper_inputs:
            self.mapper_inputs = mapper_inputs
            self.remap = True
        if self.closed is not None:
            self.reopen()

    def reopen(self) -> None:
        """Leave the closed state (a valid config arrived): reconcile.

        Nothing was done while closed, so nothing is known of the slices:
        every user is verified against systemd (as after a restart), and,
        once synced, slices of users without a job here are looked for;
        bring_to_config() starts that.
        """
        self.log(
            syslog.LOG_WARNING,
            f"configuration valid again: logins reopen on rank {self.rank};"
            f" reconciling {len(self.table.users())} user(s) with jobs",
        )
        self.closed = None
        self.reopened = True
        for uid in self.table.users():
            self.user(uid)
        for user in list(self.users.values()):
            if user.prepared is False:
                user.prepared = None

    def bring_to_config(self) -> None:
        """Bring the slices to the config in force, if it changed or reopened.

        The module calls this once the update has reached every module of
        the broker (doc/design.rst, "Configuration").
        """
        old, cfg = self.applied_cfg, self.cfg
        self.applied_cfg = cfg
        reopened, self.reopened = self.reopened, False
        remap, self.remap = self.remap, False
        if cfg == old and not reopened and not remap:
            return
        self.props_cache.clear()
        self.log(syslog.LOG_DEBUG, f"config: {json.dumps(cfg.to_dict())}")
        for user in list(self.users.values()):
            user.seq += 1
            self.kick(user)
        if reopened or cfg.manage_user_slice and not old.manage_user_slice:
            for uid in self.table.users():
                user = self.user(uid)
                user.seq += 1
                self.kick(user)
        if reopened and self.synced:
            self.scan()

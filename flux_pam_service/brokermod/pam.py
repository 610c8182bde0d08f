"""pam: keep user slices right for the jobs of a Flux instance.

A Python broker module (flux.brokermod), loaded by name on every rank through
modprobe (etc/flux/modprobe/modprobe.d/pam.toml, rc1.d/pam.py; this file is
found as ``pam`` on FLUX_MODULE_PATH).  It needs a ``[pam]`` table in the
config to be loaded at all.

Rank 0 follows ``job-manager.events-journal`` (active-job backlog, then live
events) and sends ``pam.job-start`` / ``pam.job-cleanup`` / ``pam.job-end``
only to the ranks of each job (flux_pam_service.dispatch).  Every rank keeps
its users' jobs in a flux_pam_service.state.UserTable and turns each change
into a systemd operation on the user's slice (flux_pam_service.sliceops):
prepare on the first job, apply on a union change, teardown after the last.

Threads.  The reactor thread owns the Flux handle and all state.  systemd
calls run on a few worker threads (flux_pam_service.workers, one D-Bus
connection per thread); their results come back through a pipe watched by
an fd watcher.  Operations are serialised per user: a user has at most one
operation in flight, and requests that arrive meanwhile are coalesced into
the next one, which works from the user's state at the time it starts (a
FIFO whose pending entries collapse into "bring the slice to the current
state").  Different users proceed in parallel, up to the pool size.  A failed
operation is retried with backoff (1 s doubling to 30 s) until it succeeds,
so nothing is lost while systemd is unreachable; pam.status keeps answering
from memory.

Admission.  A user is admitted while a job of theirs is RUNNING here (from
job-start to job-cleanup) and the kernel enforces their union, as far as it
has been read back (below).  The state changes on the reactor thread the
moment job-cleanup/job-end arrives, before any teardown is queued, so
pam.check and pam.attach refuse at once.  While slices are managed, pam.attach
confirms a login only once the user's slice is in place: while an operation
on it is queued or running the answer waits for it (after a teardown it is a
refusal); a slice whose preparation failed refuses with EAGAIN.

Enforcement.  While slices are managed and constrained, every operation that
sets constraints reads the slice back on its worker thread (cgroup files and
two pipelined Gets: flux_pam_service.enforcement) and keeps the verdict with the
user.  A user whose union the kernel does not enforce is refused:
pam.check answers admitted false with a message naming what is not enforced,
pam.attach {attached: false, message}, and pam.prolog adds the message (the
prolog writes it into the marker for fallback mode); unless
``pam.allow-unconfined-logins``, which admits them and marks them
"unconfined" in pam.status.  A user not read back yet (operation pending or
failed) is not refused by pam.check; pam.attach waits for the operation.
The node's state is that of the latest read-back; a change of what it lacks
is logged once (error when logins are refused, warning otherwise), never per
login.  FLUX_PAM_CGROUP_ROOT names the cgroup2 mount in a test instance
only (a test bed's container seen from the host).

Restart.  A module (re)loaded on rank N asks rank 0 (``pam.sync-request``)
for the jobs that hold rank N; rank 0 answers once it has read the journal
backlog, and pushes the same (``pam.sync``) to every rank whenever it has
(re)read the journal.  A rank reconciles its table with that list (unknown
jobs start, vanished jobs end), then re-verifies every user it holds
(differences are logged as repairs) and scans systemd for user slices this
module marked (Description "flux-pam: ..."), user slices holding login scopes
(flux-pam-*.scope) and marker files (flux_pam_service.lockdir, readable as
root only) of users without a job here, which it tears down, logging each
repair.  Users with jobs are never torn down by a reload.  In a test
instance, where all brokers share one systemd, the scan only considers
slices marked with this rank (and markers only in an explicit
FLUX_PAM_LOCK_DIR).

Configuration (flux_pam_service.config), read at load and on config-reload:
    [pam] manage-user-slice  off: no new systemd operations; slices that are
                             managed are torn down when their jobs end
    [pam] kill-user-slice, kill-slice-grace-time   teardown kill sequence
    [pam] debug              log one line per action (LOG_DEBUG); otherwise
                             only warnings (repairs) and errors are logged
    [pam] allow-unconfined-logins   admit job users whose union the kernel
                             does not enforce (see Enforcement)
    [exec] sdexec-constrain-resources   constrain slices with the properties
                             sdexec-mapper.lookup gives for the union (the
                             sdexec-mapper module must be loaded on every
                             rank: rc1.d/pam.py loads it when this is on)
An invalid config is refused at load, and vetoed on config-reload with an
error naming the key.  A valid one is in force at once; the slice
operations it calls for start when flux-core's config module says the update
has reached every module (a streaming config.get): started from the
config-reload handler, their sdexec-mapper.lookup could reach sdexec-mapper
after its own reload reset it, and its lazy re-initialisation asks the
config module for config.get, which answers nobody until every module has
answered its config-reload: `flux config reload` then hung.

Module arguments: ``nthreads=N`` (worker threads, default 4).

Requests (payloads are JSON objects; bad payloads get EPROTO naming the
field):
    pam.job-start {id, userid, R}, pam.job-cleanup {id}, pam.job-end {id}
                                   from rank 0's module (owner only)
    pam.sync {jobs: [{id, userid, R, running}]}   from rank 0 (owner only)
    pam.sync-request {rank} -> {jobs: [...]}      rank 0 only (owner only)
    pam.check {uid, max_jobs?} -> {uid, admitted, jobs, njobs,
                                   manage_user_slice, reason, message?}
                                   root/owner; jobs lists the running job IDs
                                   in start order, the first max_jobs only if
                                   given; njobs counts them all.  pam_flux
                                   asks for a few: the answer costs the same
                                   at any number of jobs
    pam.attach {uid, scope} -> {attached: true} | {attached: false, message}
                                   | EPERM    root/owner
    pam.prolog {id} -> {id, uid, result: applied|skipped, message?}
                                   root/owner
    pam.housekeeping {id} -> {id, uid, result: applied|torn-down|skipped}
    pam.status {uid?} -> {rank, owner, config, users: [{uid, active, admitted,
                          jobs, union, slice, enforcement, last_action,
                          errors, ...}], pending, systemd, enforcement};
                          guests see only their own uid
    pam.stats-get -> counters and timings
    pam.config-reload (the whole config) -> {} or EINVAL naming the key
"""

import errno
import json
import os
import syslog
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from flux.brokermod import BrokerModule, request_handler
from flux.constants import (
    FLUX_NODEID_ANY,
    FLUX_POLLIN,
    FLUX_ROLE_OWNER,
    FLUX_RPC_NORESPONSE,
    FLUX_RPC_STREAMING,
)

from flux_pam_service import (
    config,
    dispatch,
    enforcement,
    lockdir,
    perilog,
    rv1,
    sliceops,
    testmode,
    workers,
)
from flux_pam_service import state as statemod
from flux_pam_service.slice import LingerError, SurvivorsError, UserSlice

DEFAULT_NTHREADS = 4
#: pam.prolog / pam.housekeeping give up after this (the executables wait 30s)
WAIT_TIMEOUT = 25.0
RETRY_MIN = 1.0
RETRY_MAX = 30.0
JOURNAL_RETRY = 1.0
#: ended jobs remembered for late pam.prolog / pam.housekeeping requests
ENDED_MEMORY = 8192
MAX_ERRORS = 10
JOURNAL_EVENTS = ("submit", "alloc", "finish", "exception", "release", "free", "clean")


class ProtocolError(Exception):
    """A malformed request payload (answered with EPROTO)."""


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


@dataclass
class User:
    """Runtime state of one user's slice on this rank."""

    uid: int
    seq: int = 0  # bumped at every change that needs a systemd operation
    done_seq: int = 0  # seq covered by the last successful operation
    busy: Optional[str] = None  # the operation in flight
    prepared: Optional[bool] = False  # None: unknown (verify after restart)
    applied: Optional[dict] = None  # properties last applied
    last_action: Optional[dict] = None
    # what the last operation gave: (result, 0, "") or (None, errno, text)
    last_result: tuple = ("skipped", 0, "")
    errors: List[str] = field(default_factory=list)
    waiters: List[Waiter] = field(default_factory=list)
    attach_waiters: List[Waiter] = field(default_factory=list)
    retry_delay: float = 0.0
    retry_timer: Any = None
    slice_state: Optional[dict] = None
    slice_epoch: int = 0  # bumped by every operation; stale read-backs are dropped
    scopes: List[str] = field(default_factory=list)
    # what the kernel enforces for the applied union (None: not read back)
    verdict: Optional[enforcement.Verdict] = None


def _now() -> float:
    return time.time()


def _errtext(exc: BaseException) -> str:
    """The message of *exc* without Python's "[Errno N]" decoration."""
    if isinstance(exc, OSError) and type(exc).__str__ is OSError.__str__:
        return exc.strerror or str(exc)
    return str(exc)


class PamModule(BrokerModule):
    """Per-user slice management and login admission for the jobs here."""

    def __init__(self, h: Any, *args: str) -> None:
        super().__init__(h, *args)
        self.rank = h.get_rank()
        self.size = int(h.attr_get("size"))
        self.owner = int(h.attr_get("security.owner"))
        self.hostname = h.attr_get("hostname")
        self.test_instance = testmode.is_test_instance(h)
        nthreads = DEFAULT_NTHREADS
        for arg in args:
            key, _, value = arg.partition("=")
            if key == "nthreads" and value.isdigit() and int(value) > 0:
                nthreads = int(value)
            else:
                raise ValueError(f"pam: unknown or bad module argument: {arg}")
        try:
            self.cfg = config.from_dict(h.conf_get() or {}, origin="config")
        except config.ConfigError as exc:
            raise ValueError("pam: " + "; ".join(exc.problems)) from None
        self._set_log_level()
        # the config the slices were last brought to (see _config_watch)
        self.applied_cfg = self.cfg
        self.config_watch: Any = None
        self.lockdir = perilog.lock_dir(os.environ, self.test_instance)
        self.cgroup_root = enforcement.find_root(os.environ, self.test_instance)
        # the latest read-back of any user: (uid, time, Verdict)
        self.node_verdict: Optional[tuple] = None
        self.table = statemod.UserTable(self.owner)
        self.users: Dict[int, User] = {}
        self.ended: OrderedDict[int, tuple] = OrderedDict()  # jobid -> (uid, seq)
        self.job_waiters: Dict[int, List[Waiter]] = {}
        # last outcome of users no longer tracked, for late pam.housekeeping
        self.forgotten: OrderedDict[int, tuple] = OrderedDict()
        self.props_cache: Dict[Any, dict] = {}
        self.systemd_status = "ok"
        self.synced = False
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
        }
        self.pool = workers.Pool(nthreads, name="pam")
        self.pool_watcher = h.fd_watcher_create(
            self.pool.fileno(), self._pool_ready, events=FLUX_POLLIN
        )
        self.pool_watcher.start()
        self.timers: List[Any] = []
        # rank 0: the dispatcher
        self.dispatcher: Optional[dispatch.Dispatcher] = None
        self.journal: Any = None
        self.journal_ready = False
        self.sync_requests: List[Any] = []
        self._config_watch()
        if self.rank == 0:
            self._journal_start()
        else:
            self._request_sync()
        self.log.debug(
            f"loaded on rank {self.rank}: owner {self.owner}, {nthreads} threads"
            + (", test instance" if self.test_instance else "")
        )

    # ------------------------------------------------------------ helpers

    def _set_log_level(self) -> None:
        self.log.level = syslog.LOG_DEBUG if self.cfg.debug else syslog.LOG_WARNING

    def _guard(self, what: str, fn: Callable, *args: Any) -> None:
        """Run a callback; log (never raise) what it throws."""
        try:
            fn(*args)
        except Exception as exc:
            self.log.error(f"{what}: {exc}")
            self.log.debug(traceback.format_exc())

    def _timer(self, after: float, fn: Callable, *args: Any) -> Any:
        def cb(handle: Any, watcher: Any, revents: int, _args: Any) -> None:
            watcher.stop()
            if watcher in self.timers:
                self.timers.remove(watcher)
            self._guard("timer", fn, *args)

        w = self.handle.timer_watcher_create(after, cb)
        w.start()
        self.timers.append(w)
        return w

    def _cancel_timer(self, w: Any) -> None:
        if w is not None:
            w.stop()
            if w in self.timers:
                self.timers.remove(w)

    @staticmethod
    def _payload(msg: Any) -> dict:
        try:
            text = msg.payload_str
            obj = json.loads(text) if text else {}
        except (ValueError, TypeError):
            raise ProtocolError("payload is not JSON") from None
        if not isinstance(obj, dict):
            raise ProtocolError("payload is not a JSON object")
        return obj

    @staticmethod
    def _int(obj: dict, key: str, minimum: int = 0) -> int:
        value = obj.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ProtocolError(f"{key} is missing or not an integer >= {minimum}")
        return value

    def _privileged(self, msg: Any) -> bool:
        return msg.userid == 0 or bool(msg.rolemask & FLUX_ROLE_OWNER)

    def _respond(self, msg: Any, obj: Optional[dict] = None) -> None:
        try:
            self.handle.respond(msg, obj)
        except OSError as exc:
            self.log.error(f"respond to {msg.topic}: {exc}")

    def _error(self, msg: Any, errnum: int, text: str) -> None:
        try:
            self.handle.respond_error(msg, errnum, text)
        except OSError as exc:
            self.log.error(f"respond to {msg.topic}: {exc}")

    def _handle(self, msg: Any, fn: Callable[[Any, dict], None], admin: bool) -> None:
        """Common request path: payload, privilege, errors."""
        try:
            if admin and not self._privileged(msg):
                raise OSError(errno.EPERM, "only root and the instance owner may")
            fn(msg, self._payload(msg))
        except ProtocolError as exc:
            self._error(msg, errno.EPROTO, f"{msg.topic}: {exc}")
        except OSError as exc:
            self._error(msg, exc.errno or errno.EIO, exc.strerror or str(exc))
        except Exception as exc:
            self.log.error(f"{msg.topic}: {exc}")
            self.log.debug(traceback.format_exc())
            self._error(msg, errno.EIO, f"{msg.topic}: internal error: {exc}")

    def _user(self, uid: int) -> User:
        user = self.users.get(uid)
        if user is None:
            self.forgotten.pop(uid, None)
            # before the first sync every user is verified against systemd
            user = self.users[uid] = User(uid, prepared=False if self.synced else None)
        return user

    # ------------------------------------------------------------ rank 0: journal

    def _journal_start(self) -> None:
        self.dispatcher = dispatch.Dispatcher(self.test_instance)
        self.journal_ready = False
        payload = {"full": False, "allow": {name: 1 for name in JOURNAL_EVENTS}}
        self.journal = self.handle.rpc(
            "job-manager.events-journal", payload, 0, FLUX_RPC_STREAMING
        )
        self.journal.then(self._journal_cb)

    def _journal_cb(self, f: Any) -> None:
        try:
            resp = f.get()
        except OSError as exc:
            self.journal = None
            if exc.errno in (errno.ENOSYS, errno.ENODATA):
                self.log.debug(f"job-manager journal: {exc.strerror}: retrying")
            else:
                self.log.error(f"job-manager.events-journal: {exc.strerror or exc}")
            self._timer(JOURNAL_RETRY, self._journal_start)
            return
        finally:
            if self.journal is not None:
                f.reset()
        self._guard("journal", self._journal_response, resp)

    def _journal_response(self, resp: dict) -> None:
        assert self.dispatcher is not None
        jobid = resp.get("id")
        events = resp.get("events", [])
        if jobid == -1 and not events:
            self._journal_caught_up()
            return
        for entry in events:
            self.stats["journal-events"] += 1
            msgs = self.dispatcher.event(
                jobid,
                entry.get("name"),
                entry.get("context"),
                jobspec=resp.get("jobspec"),
                R=resp.get("R"),
            )
            if self.journal_ready:
                for m in msgs:
                    self._send(m.rank, m.topic, m.payload)
        while self.dispatcher.errors:
            self.log.error(f"journal: {self.dispatcher.errors.pop(0)}")

    def _journal_caught_up(self) -> None:
        assert self.dispatcher is not None
        self.journal_ready = True
        by_rank = self.dispatcher.jobs_by_rank()
        self.log.debug(
            f"journal backlog read: {len(self.dispatcher.jobs)} active jobs;"
            f" syncing {self.size} ranks"
        )
        for rank in range(self.size):
            self._send(rank, "pam.sync", {"jobs": by_rank.get(rank, [])})
        for msg, rank in self.sync_requests:
            self._respond(msg, {"jobs": by_rank.get(rank, [])})
        self.sync_requests = []

    def _send(self, rank: int, topic: str, payload: dict) -> None:
        self.stats["messages-sent"] += 1
        if rank == self.rank:
            self._guard(topic, self._deliver, topic, payload)
            return

        def done(f: Any) -> None:
            try:
                f.get()
            except OSError as exc:
                self.stats["message-errors"] += 1
                level = (
                    syslog.LOG_DEBUG if exc.errno == errno.ENOSYS else syslog.LOG_ERR
                )
                self.log(level, f"{topic} to rank {rank}: {exc.strerror or exc}")

        self.handle.rpc(topic, payload, nodeid=rank).then(done)

    def _deliver(self, topic: str, payload: dict) -> None:
        if topic == dispatch.JOB_START:
            self._job_start(payload["id"], payload["userid"], payload["R"])
        elif topic == dispatch.JOB_CLEANUP:
            self._job_cleanup(payload["id"])
        elif topic == dispatch.JOB_END:
            self._job_end(payload["id"])
        elif topic == "pam.sync":
            self._sync(payload["jobs"])

    @request_handler("sync-request")
    def sync_request(self, msg: Any) -> None:
        def fn(msg: Any, p: dict) -> None:
            rank = self._int(p, "rank")
            if self.rank != 0:
                raise OSError(errno.EINVAL, "pam.sync-request is served by rank 0")
            if not self.journal_ready:
                self.sync_requests.append((msg, rank))
                return
            assert self.dispatcher is not None
            self._respond(msg, {"jobs": self.dispatcher.jobs_on(rank)})

        self._handle(msg, fn, admin=False)

    def _request_sync(self) -> None:
        def done(f: Any) -> None:
            try:
                resp = f.get()
            except OSError as exc:
                level = (
                    syslog.LOG_DEBUG if exc.errno == errno.ENOSYS else syslog.LOG_ERR
                )
                self.log(level, f"pam.sync-request to rank 0: {exc.strerror or exc}")
                return  # rank 0 pushes pam.sync when its module loads
            self._guard("pam.sync", self._sync, resp.get("jobs", []))

        self.handle.rpc("pam.sync-request", {"rank": self.rank}, nodeid=0).then(done)

    # ------------------------------------------------------------ every rank: jobs

    def _validate_job(self, p: dict) -> tuple:
        jobid = self._int(p, "id")
        userid = self._int(p, "userid")
        try:
            rv1.parse(p.get("R"))
        except rv1.RError as exc:
            raise ProtocolError(str(exc)) from None
        return jobid, userid, p["R"]

    @request_handler("job-start")
    def job_start(self, msg: Any) -> None:
        def fn(msg: Any, p: dict) -> None:
            self._job_start(*self._validate_job(p))
            self._respond(msg)

        self._handle(msg, fn, admin=False)

    @request_handler("job-cleanup")
    def job_cleanup(self, msg: Any) -> None:
        def fn(msg: Any, p: dict) -> None:
            self._job_cleanup(self._int(p, "id"))
            self._respond(msg)

        self._handle(msg, fn, admin=False)

    @request_handler("job-end")
    def job_end(self, msg: Any) -> None:
        def fn(msg: Any, p: dict) -> None:
            self._job_end(self._int(p, "id"))
            self._respond(msg)

        self._handle(msg, fn, admin=False)

    @request_handler("sync")
    def sync(self, msg: Any) -> None:
        def fn(msg: Any, p: dict) -> None:
            jobs = p.get("jobs")
            if not isinstance(jobs, list):
                raise ProtocolError("jobs is missing or not an array")
            for i, job in enumerate(jobs):
                if not isinstance(job, dict):
                    raise ProtocolError(f"jobs[{i}] is not an object")
                self._validate_job(job)
            self._sync(jobs)
            self._respond(msg)

        self._handle(msg, fn, admin=False)

    def _job_start(self, jobid: int, uid: int, R: Any, running: bool = True) -> None:
        if self.table.uid_of(jobid) is not None or jobid in self.ended:
            return
        res = rv1.local(R, self.rank)
        actions = self.table.start(jobid, uid, res)
        if self.table.uid_of(jobid) is None:  # the owner's job: not managed
            self._remember_ended(jobid, uid, None)
            self._wake_job(jobid, uid, None)
            return
        self.stats["jobs-started"] += 1
        if not running:
            self.table.cleanup(jobid)
        self.log.debug(
            f"job {jobid}: start uid {uid} core {res.to_dict()['core'] or '-'}"
            f" gpu {res.to_dict()['gpu'] or '-'}"
        )
        user = self._user(uid)
        if actions:
            user.seq += 1
        self._wake_job(jobid, uid, user)
        self._kick(user)

    def _job_cleanup(self, jobid: int) -> None:
        if self.table.uid_of(jobid) is None:
            return
        self.table.cleanup(jobid)
        self.log.debug(f"job {jobid}: cleanup (no longer admits)")

    def _job_end(self, jobid: int) -> None:
        uid = self.table.uid_of(jobid)
        if uid is None:
            return
        actions = self.table.end(jobid)
        self.stats["jobs-ended"] += 1
        user = self._user(uid)
        if actions:
            user.seq += 1
        self._remember_ended(jobid, uid, user.seq)
        self.log.debug(f"job {jobid}: end uid {uid}")
        self._wake_job(jobid, uid, user)
        self._kick(user)

    def _remember_ended(self, jobid: int, uid: int, seq: Optional[int]) -> None:
        self.ended[jobid] = (uid, seq)
        while len(self.ended) > ENDED_MEMORY:
            self.ended.popitem(last=False)

    def _sync(self, jobs: List[dict]) -> None:
        listed = {job["id"]: job for job in jobs}
        known = {j for uid in self.table.users() for j in self.table.jobs(uid)}
        for jobid in known - set(listed):
            self._job_end(jobid)
        for jobid, job in listed.items():
            if jobid not in known:
                self.ended.pop(jobid, None)
                self._job_start(
                    jobid, job["userid"], job["R"], job.get("running", True)
                )
            elif not job.get("running", True):
                self._job_cleanup(jobid)
        first = not self.synced
        self.synced = True
        self.log.debug(
            f"sync: {len(listed)} jobs here"
            f" ({len(set(listed) - known)} new, {len(known - set(listed))} gone)"
        )
        if first:
            self._scan()

    # ------------------------------------------------------------ slice operations

    def _managing(self) -> bool:
        return self.cfg.manage_user_slice

    def _kick(self, user: User) -> None:
        """Start the user's next operation if one is due and none runs."""
        if user.busy or user.retry_timer is not None or user.done_seq >= user.seq:
            self._maybe_forget(user)
            return
        snap = user.seq
        uid = user.uid
        jobs = self.table.jobs(uid)
        if jobs:
            if not self._managing():
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
                user.prepared is None and not self._managing()
            ):
                # never managed here (or unknown while not managing): keep off
                self._finished(user, snap, "skipped")
                return
            kill, grace = self.cfg.kill_user_slice, self.cfg.kill_slice_grace_time
            self._submit(
                user,
                snap,
                "teardown",
                lambda state: sliceops.deactivate(state, uid, kill, grace),
            )

    def _activate(self, user: User, snap: int, props: Optional[dict]) -> None:
        uid = user.uid
        first = user.prepared is False
        verify = user.prepared is None
        if props is None and not first and not verify:
            if user.applied:
                self._submit(
                    user, snap, "unconstrain", lambda s: sliceops.unconstrain(s, uid)
                )
            else:
                self._finished(user, snap, "applied")
            return
        if not first and not verify and props == user.applied:
            self._finished(user, snap, "applied")
            return
        desc = sliceops.description(uid, self.rank)
        self._submit(
            user,
            snap,
            "prepare" if first or verify else "apply",
            lambda s: sliceops.activate(
                s, uid, props, first, verify, desc, self.cgroup_root
            ),
            props,
        )

    def _lookup(self, user: User, snap: int, union: rv1.Resources) -> None:
        user.busy = "lookup"
        self.stats["mapper-lookups"] += 1
        R = rv1.make_R(self.rank, union, self.hostname)

        def done(f: Any) -> None:
            try:
                props = f.get()
                if not isinstance(props, dict):
                    raise OSError(errno.EPROTO, "response is not an object")
            except OSError as exc:
                user.busy = None
                err = OSError(
                    exc.errno or errno.EIO,
                    f"sdexec-mapper.lookup: {exc.strerror or exc}",
                )
                self._guard("lookup", self._failed, user, snap, "lookup", err, 0.0)
                return
            self.props_cache[union] = props
            user.busy = None
            if user.seq != snap:
                self._guard("kick", self._kick, user)
            else:
                self._guard("activate", self._activate, user, snap, props)

        self.handle.rpc("sdexec-mapper.lookup", {"R": R}, nodeid=self.rank).then(done)

    def _submit(
        self,
        user: User,
        snap: int,
        action: str,
        fn: Callable[[dict], sliceops.Outcome],
        props: Optional[dict] = None,
    ) -> None:
        user.busy = action
        t0 = time.monotonic()
        uid = user.uid

        def job(state: dict) -> sliceops.Outcome:
            return fn(state)

        def done(out: Optional[sliceops.Outcome], exc: Optional[BaseException]) -> None:
            elapsed = time.monotonic() - t0
            self.stats["op-time-total"] += elapsed
            self.stats["op-time-max"] = max(self.stats["op-time-max"], elapsed)
            ops = self.stats["operations"]
            ops[action] = ops.get(action, 0) + 1
            user.busy = None
            # a failure that repeats the previous one is logged at debug only
            repeated = exc is not None and bool(user.errors)
            repeated = repeated and user.errors[-1].endswith(_errtext(exc))
            # the summary line of a failure is the error; the details are debug
            for level, line in getattr(exc if exc else out, "logs", []) or []:
                if repeated or exc is not None or level > syslog.LOG_WARNING:
                    level = syslog.LOG_DEBUG
                self.log(level, line)
            if exc is not None:
                self._failed(user, snap, action, exc, elapsed)
                return
            assert out is not None
            for repair in out.repairs:
                self.stats["repairs"] += 1
                self.log.warning(f"repair: {repair}")
            user.slice_epoch += 1
            if action == "teardown":
                user.prepared = False
                user.applied = None
                user.slice_state = None
                user.scopes = []
                user.verdict = None
                self._clear_marker(uid)
            elif action == "unconstrain":
                user.applied = None
                user.verdict = None
            else:
                user.prepared = True
                user.applied = props
                self._record_verdict(user, out.verdict)
            self.systemd_status = "ok"
            user.errors = []
            user.retry_delay = 0.0
            self.log.debug(
                f"uid {uid}: {action} user-{uid}.slice"
                + (
                    f" {self.table.union(uid).to_dict()}"
                    if action != "teardown"
                    else ""
                )
                + f" ({elapsed * 1000:.0f} ms)"
            )
            result = "torn-down" if action == "teardown" else "applied"
            self._finished(user, snap, result, action)
            if action != "teardown":
                self._read_back(user)

        self.pool.submit(job, lambda o, e: self._guard(action, done, o, e))

    def _read_back(self, user: User) -> None:
        """Read the slice for pam.status after the waiters were answered.

        Off the operation's path (a job's prolog does not wait for it); a
        read that an operation finished after has overtaken is dropped.
        """
        uid, epoch = user.uid, user.slice_epoch

        def job(state: dict) -> dict:
            return UserSlice(sliceops.connection(state), uid).state()

        def done(value: Optional[dict], exc: Optional[BaseException]) -> None:
            if user.slice_epoch == epoch:
                user.slice_state = value if exc is None else None

        self.pool.submit(job, lambda v, e: self._guard("read-back", done, v, e))

    def _failed(
        self, user: User, snap: int, action: str, exc: BaseException, elapsed: float
    ) -> None:
        self.stats["failures"] += 1
        text = _errtext(exc)
        message = f"uid {user.uid}: {action}: {text}"
        repeated = bool(user.errors) and user.errors[-1] == message
        user.errors.append(message)
        del user.errors[:-MAX_ERRORS]
        user.last_action = {"action": action, "time": _now(), "result": text}
        transport = getattr(exc, "name", "") is None or (
            isinstance(exc, OSError)
            and exc.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT)
        )
        if transport:
            self.systemd_status = text
        self.log(syslog.LOG_DEBUG if repeated else syslog.LOG_ERR, message)
        errnum = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
        final = isinstance(exc, (LingerError, SurvivorsError)) or errnum == errno.EINVAL
        if isinstance(exc, SurvivorsError):
            self._drain(f"flux-pam: user {user.uid}: {text}")
            user.prepared = False
            user.applied = None
        # answer the requests this operation was to satisfy
        failure = (None, errnum, f"user {user.uid}: {text}")
        self._resolve(user, snap, failure)
        if final:
            user.done_seq = max(user.done_seq, snap)
            user.last_result = failure
            if isinstance(exc, LingerError):
                user.prepared = False
            self._kick(user)
            return
        user.retry_delay = min(max(RETRY_MIN, user.retry_delay * 2), RETRY_MAX)
        user.retry_timer = self._timer(user.retry_delay, self._retry, user)

    def _retry(self, user: User) -> None:
        user.retry_timer = None
        self._kick(user)

    def _finished(
        self, user: User, snap: int, result: str, action: Optional[str] = None
    ) -> None:
        user.done_seq = max(user.done_seq, snap)
        user.last_result = (result, 0, "")
        if action is not None:
            user.last_action = {"action": action, "time": _now(), "result": "ok"}
        self._resolve(user, snap, user.last_result)
        self._kick(user)

    def _resolve(self, user: User, snap: int, outcome: tuple) -> None:
        """Answer the waiters that the operation for *snap* satisfies."""
        keep = []
        for w in user.waiters:
            if w.need > snap:
                keep.append(w)
                continue
            self._cancel_timer(w.timer)
            self._answer(w, outcome)
        user.waiters = keep
        if user.busy is None:
            attach, user.attach_waiters = user.attach_waiters, []
            for w in attach:
                self._cancel_timer(w.timer)
                self._attach_answer(w.msg, user.uid, w.scope)

    def _answer(self, w: Waiter, outcome: tuple) -> None:
        """Answer pam.prolog / pam.housekeeping with an outcome tuple."""
        result, errnum, text = outcome
        if result is None:
            self._error(w.msg, errnum, text)
            return
        if w.kind == "prolog" and result == "torn-down":
            result = "skipped"
        answer = {"id": w.jobid, "uid": w.uid, "result": result}
        if w.kind == "prolog" and result == "applied":
            message = self._refusal(self.users.get(w.uid))
            if message is not None:
                answer["message"] = message
        self._respond(w.msg, answer)

    def _maybe_forget(self, user: User) -> None:
        if (
            not user.busy
            and user.retry_timer is None
            and user.done_seq >= user.seq
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

    def _drain(self, reason: str) -> None:
        self.stats["drains"] += 1
        payload = {"targets": str(self.rank), "reason": reason, "mode": "update"}

        def done(f: Any) -> None:
            try:
                f.get()
            except OSError as exc:
                self.log.error(f"cannot drain rank {self.rank}: {exc.strerror or exc}")

        self.log.error(f"draining rank {self.rank}: {reason}")
        self.handle.rpc("resource.drain", payload, nodeid=0).then(done)

    def _clear_marker(self, uid: int) -> None:
        try:
            if lockdir.has_marker(uid, self.lockdir):
                lockdir.clear_marker(uid, self.lockdir)
        except OSError:
            pass  # not root: the executables own the markers

    def _markers(self) -> List[int]:
        """Users with a marker file (readable only when running as root).

        In a test instance markers count only in an explicit
        FLUX_PAM_LOCK_DIR, never in the host's /run/flux-pam."""
        if self.test_instance and not os.environ.get("FLUX_PAM_LOCK_DIR"):
            return []
        try:
            names = os.listdir(self.lockdir)
        except OSError:
            return []
        uids = []
        for name in names:
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "uid" and parts[2] == "active":
                if parts[1].isdigit():
                    uids.append(int(parts[1]))
        return uids

    def _scan(self) -> None:
        """After a (re)load: tear down marked slices of users without a job."""
        if not self._managing():
            return
        prefix = sliceops.DESCRIPTION_PREFIX

        def done(out: Optional[sliceops.Outcome], exc: Optional[BaseException]) -> None:
            if exc is not None:
                self.log.error(f"scan of user slices: {exc}")
                self.systemd_status = str(exc)
                return
            assert out is not None
            found = dict(out.value)
            for uid in self._markers():
                found.setdefault(uid, {"description": "marker", "scopes": []})
            for uid, info in sorted(found.items()):
                if uid in (0, self.owner) or self.table.jobs(uid):
                    continue
                desc = info["description"]
                if self.test_instance:
                    # all test brokers share one systemd: only this rank's
                    # own marks count, never scopes nobody can attribute
                    ours = desc in (sliceops.description(uid, self.rank), "marker")
                else:
                    ours = (
                        desc.startswith(sliceops.DESCRIPTION_PREFIX)
                        or desc == "marker"
                        or bool(info.get("scopes"))
                    )
                if not ours:
                    continue
                user = self._user(uid)
                if user.busy or user.prepared is not False:
                    continue
                self.stats["repairs"] += 1
                why = info["description"] or "logins: " + ", ".join(info["scopes"])
                self.log.warning(
                    f"repair: uid {uid} has no job on rank {self.rank} but"
                    f" user-{uid}.slice is in use ({why}): tearing it down"
                )
                user.prepared = None
                user.seq += 1
                self._kick(user)
            for user in list(self.users.values()):
                self._kick(user)

        self.pool.submit(
            lambda state: sliceops.scan(state, prefix),
            lambda o, e: self._guard("scan", done, o, e),
        )

    def _pool_ready(
        self, handle: Any, watcher: Any, fd: int, revents: int, _a: Any
    ) -> None:
        self._guard("pool", self.pool.drain)

    # ------------------------------------------------------------ waiters

    def _wake_job(self, jobid: int, uid: int, user: Optional[User]) -> None:
        """job-start or job-end of *jobid* was processed: re-file its waiters."""
        waiting = self.job_waiters.pop(jobid, [])
        keep = []
        for w in waiting:
            w.uid = uid
            if user is None or not self._managing() and user.prepared is False:
                self._cancel_timer(w.timer)
                self._answer(w, ("skipped", 0, ""))
                continue
            if w.kind == "housekeeping" and self.table.uid_of(jobid) is not None:
                keep.append(w)  # still tracked: wait for job-end
                continue
            w.need = user.seq
            user.waiters.append(w)
        if keep:
            self.job_waiters[jobid] = keep
        if user is not None and user.waiters and user.done_seq >= user.seq:
            if not user.busy and user.retry_timer is None:
                self._resolve(user, user.seq, user.last_result)

    def _wait(self, w: Waiter, what: str) -> None:
        def expire() -> None:
            w.timer = None
            for lst in [self.job_waiters.get(w.jobid, [])] + [
                u.waiters for u in self.users.values()
            ]:
                if w in lst:
                    lst.remove(w)
            self._error(
                w.msg,
                errno.ETIMEDOUT,
                f"job {w.jobid}: {what} did not complete within {WAIT_TIMEOUT:.0f}s",
            )

        w.timer = self._timer(WAIT_TIMEOUT, expire)

    def _perilog(self, msg: Any, p: dict, kind: str) -> None:
        jobid = self._int(p, "id")
        w = Waiter(msg, kind, jobid)
        uid = self.table.uid_of(jobid)
        if uid is None and jobid in self.ended:
            uid, seq = self.ended[jobid]
            if seq is None or kind == "prolog":
                self._respond(msg, {"id": jobid, "uid": uid, "result": "skipped"})
                return
            user = self.users.get(uid)
            if user is None or user.done_seq >= seq and not user.busy:
                w.uid = uid
                if user is not None:
                    outcome = user.last_result
                else:
                    outcome = self.forgotten.get(uid, ("skipped", 0, ""))
                self._answer(w, outcome)
                return
            w.uid, w.need = uid, seq
            user.waiters.append(w)
            self._wait(w, "the teardown")
            return
        if uid is None:
            if kind == "housekeeping" and self.synced:
                self._respond(msg, {"id": jobid, "uid": -1, "result": "skipped"})
                return
            self.job_waiters.setdefault(jobid, []).append(w)
            self._wait(w, "job-start" if kind == "prolog" else "job-end")
            return
        w.uid = uid
        if kind == "housekeeping":
            self.job_waiters.setdefault(jobid, []).append(w)
            self._wait(w, "job-end")
            return
        user = self._user(uid)
        if not self._managing() and user.prepared is False:
            self._respond(msg, {"id": jobid, "uid": uid, "result": "skipped"})
            return
        w.need = user.seq
        if user.done_seq >= user.seq and not user.busy and user.retry_timer is None:
            self._answer(w, user.last_result)
            return
        user.waiters.append(w)
        self._wait(w, "the slice operation")

    @request_handler("prolog", allow_guest=True)
    def prolog(self, msg: Any) -> None:
        self._handle(msg, lambda m, p: self._perilog(m, p, "prolog"), admin=True)

    @request_handler("housekeeping", allow_guest=True)
    def housekeeping(self, msg: Any) -> None:
        self._handle(msg, lambda m, p: self._perilog(m, p, "housekeeping"), admin=True)

    # ------------------------------------------------------------ admission

    def _enforcement(self, verdict: Optional[enforcement.Verdict]) -> dict:
        """What the kernel enforces, as pam.status shows it (per user, node).

        state: ``off`` (slices not managed or not constrained), ``unknown``
        (not read back yet), ``enforced``, ``not-enforced`` (logins refused)
        or ``unconfined`` (not enforced, admitted by
        pam.allow-unconfined-logins); with the verdict's fields.
        """
        if not (self._managing() and self.cfg.constrain_resources):
            return {"state": "off"}
        if verdict is None:
            return {"state": "unknown"}
        if verdict.enforced:
            state = "enforced"
        elif self.cfg.allow_unconfined_logins:
            state = "unconfined"
        else:
            state = "not-enforced"
        return {"state": state, **verdict.to_dict()}

    def _refusal(self, user: Optional[User]) -> Optional[str]:
        """The message refusing *user*'s logins for want of enforcement."""
        verdict = user.verdict if user is not None else None
        if self._enforcement(verdict)["state"] != "not-enforced":
            return None
        assert verdict is not None
        return verdict.message()

    def _admission(self, uid: int) -> tuple:
        """(admitted, reason, message): may *uid* log in on this rank?

        The one place the module decides; message is set only when a user
        with running jobs is refused because the node cannot confine them.
        """
        user = self.users.get(uid)
        if uid == self.owner:
            return False, f"uid {uid} is the instance owner (not managed)", None
        if not self.table.admitted(uid):
            return False, f"user {uid} has no running job on rank {self.rank}", None
        if user is not None and user.busy == "teardown":
            return False, f"user {uid}: teardown in progress on rank {self.rank}", None
        message = self._refusal(user)
        if message is not None:
            assert user is not None and user.verdict is not None
            why = "; ".join(user.verdict.reasons)
            return False, f"user {uid} on rank {self.rank}: {why}", message
        reason = f"{self.table.nrunning(uid)} running job(s) on rank {self.rank}"
        if (
            user is not None
            and self._enforcement(user.verdict)["state"] == "unconfined"
        ):
            reason += " (unconfined: pam.allow-unconfined-logins)"
        return True, reason, None

    def _record_verdict(
        self, user: User, verdict: Optional[enforcement.Verdict]
    ) -> None:
        """Keep *user*'s read-back; log a change of what the node lacks, once."""
        user.verdict = verdict
        if verdict is None:
            return
        old = self.node_verdict[2].missing if self.node_verdict else ()
        self.node_verdict = (user.uid, _now(), verdict)
        if verdict.missing == old:
            return
        if verdict.enforced:
            self.log.warning(f"confinement is enforced on rank {self.rank} again")
            return
        if self.cfg.allow_unconfined_logins:
            level = syslog.LOG_WARNING
            then = "logins of job users are admitted unconfined"
            then += " (pam.allow-unconfined-logins)"
        else:
            level, then = syslog.LOG_ERR, "logins of job users are refused"
        self.log(
            level,
            f"{enforcement.describe(verdict.missing)} on rank {self.rank}"
            f" (user-{user.uid}.slice: {'; '.join(verdict.reasons)}): {then}",
        )

    def _node_enforcement(self) -> dict:
        """The node's enforcement for pam.status: the latest read-back."""
        if self.node_verdict is None:
            return self._enforcement(None)
        uid, when, verdict = self.node_verdict
        return {**self._enforcement(verdict), "uid": uid, "time": when}

    @request_handler("check", allow_guest=True)
    def check(self, msg: Any) -> None:
        def fn(msg: Any, p: dict) -> None:
            uid = self._int(p, "uid")
            limit = self._int(p, "max_jobs") if "max_jobs" in p else None
            admitted, reason, message = self._admission(uid)
            answer = {
                "uid": uid,
                "admitted": admitted,
                "jobs": self.table.running(uid, limit) if admitted else [],
                "njobs": self.table.nrunning(uid) if admitted else 0,
                "manage_user_slice": self._managing(),
                "reason": reason,
            }
            if message is not None:
                answer["message"] = message
            self._respond(msg, answer)

        self._handle(msg, fn, admin=True)

    def _attach_answer(self, msg: Any, uid: int, scope: str) -> None:
        """Confirm *scope* for *uid*, refuse it, or wait for the slice.

        The user must be admitted here.  While the module manages slices, a
        login is confirmed only once the user's slice is in place: while an
        operation on it is queued or running the answer waits for it (a
        teardown then ends in a refusal); a slice whose preparation failed
        refuses with EAGAIN and the error.
        """
        if not self.table.admitted(uid):
            self._error(
                msg, errno.EPERM, f"user {uid} has no active job on rank {self.rank}"
            )
            return
        user = self._user(uid)
        if self._managing() and (user.busy or user.seq > user.done_seq):
            if user.retry_timer is not None:
                err = user.errors[-1] if user.errors else "not ready"
                self._error(msg, errno.EAGAIN, f"user-{uid}.slice: {err}")
                return
            w = Waiter(msg, "attach", uid=uid, scope=scope)
            user.attach_waiters.append(w)

            def expire() -> None:
                if w in user.attach_waiters:
                    user.attach_waiters.remove(w)
                    self._error(
                        msg,
                        errno.ETIMEDOUT,
                        f"user-{uid}.slice not ready within {WAIT_TIMEOUT:.0f}s",
                    )

            w.timer = self._timer(WAIT_TIMEOUT, expire)
            return
        if self._managing() and user.prepared is not True:
            err = user.errors[-1] if user.errors else "not prepared"
            self._error(msg, errno.EAGAIN, f"user-{uid}.slice: {err}")
            return
        message = self._refusal(user)
        if message is not None:
            self.log.debug(f"uid {uid}: {scope} refused: {message}")
            self._respond(msg, {"attached": False, "message": message})
            return
        if scope not in user.scopes:
            user.scopes = (user.scopes + [scope])[-32:]
        self.log.debug(f"uid {uid}: attached {scope}")
        self._respond(msg, {"attached": True})

    @request_handler("attach", allow_guest=True)
    def attach(self, msg: Any) -> None:
        def fn(msg: Any, p: dict) -> None:
            uid = self._int(p, "uid")
            scope = p.get("scope")
            if (
                not isinstance(scope, str)
                or not scope.endswith(".scope")
                or "/" in scope
            ):
                raise ProtocolError("scope is missing or not a unit name NAME.scope")
            self._attach_answer(msg, uid, scope)

        self._handle(msg, fn, admin=True)

    # ------------------------------------------------------------ status, stats

    def _user_status(self, uid: int) -> dict:
        user = self.users.get(uid) or User(uid)
        jobs = self.table.jobs(uid)
        return {
            "uid": uid,
            "active": bool(jobs) and user.busy != "teardown",
            "admitted": self._admission(uid)[0],
            "jobs": [
                {"id": j, "running": job.running, **job.resources.to_dict()}
                for j, job in sorted(jobs.items())
            ],
            "union": self.table.union(uid).to_dict(),
            "slice": user.slice_state,
            "enforcement": self._enforcement(user.verdict),
            "last_action": user.last_action,
            "errors": list(user.errors),
            "pending": bool(user.busy or user.seq > user.done_seq),
            "scopes": list(user.scopes),
        }

    @request_handler("status", allow_guest=True)
    def status(self, msg: Any) -> None:
        def fn(msg: Any, p: dict) -> None:
            wanted = p.get("uid")
            if wanted is not None:
                wanted = self._int(p, "uid")
            uids = set(self.table.users()) | set(self.users)
            if not self._privileged(msg):
                uids &= {msg.userid}
            if wanted is not None:
                uids &= {wanted}
            self._respond(
                msg,
                {
                    "rank": self.rank,
                    "owner": self.owner,
                    "config": self.cfg.to_dict(),
                    "users": [self._user_status(uid) for uid in sorted(uids)],
                    "pending": sum(
                        1 for u in self.users.values() if u.busy or u.seq > u.done_seq
                    ),
                    "systemd": self.systemd_status,
                    "enforcement": self._node_enforcement(),
                    "synced": self.synced,
                    "test_instance": self.test_instance,
                },
            )

        self._handle(msg, fn, admin=False)

    @request_handler("stats-get")
    def stats_get(self, msg: Any) -> None:
        stats = dict(self.stats)
        ops = sum(stats["operations"].values()) or 1
        stats["op-time-mean"] = stats["op-time-total"] / ops
        stats.update(
            {
                "users": len(self.users),
                "jobs": len(self.table),
                "pending": sum(
                    1 for u in self.users.values() if u.busy or u.seq > u.done_seq
                ),
                "workers-busy": self.pool.busy,
                "synced": self.synced,
            }
        )
        if self.dispatcher is not None:
            stats["dispatcher-jobs"] = len(self.dispatcher.jobs)
        self._respond(msg, stats)

    # ------------------------------------------------------------ config

    @request_handler("config-reload")
    def config_reload(self, msg: Any) -> None:
        def fn(msg: Any, p: dict) -> None:
            try:
                cfg = config.from_dict(p, origin="config")
            except config.ConfigError as exc:
                raise OSError(errno.EINVAL, "; ".join(exc.problems)) from None
            self.cfg = cfg
            self._set_log_level()
            if self.config_watch is None:
                self._apply_config()
            self._respond(msg)

        self._handle(msg, fn, admin=False)

    def _config_watch(self) -> None:
        """Follow config updates (see the module docstring, Configuration)."""

        def cb(f: Any) -> None:
            try:
                f.get()
            except OSError as exc:
                self.config_watch = None
                self.log.error(
                    f"config.get (streaming): {exc.strerror or exc}:"
                    " config changes apply at once"
                )
                self._guard("config", self._apply_config)
                return
            f.reset()
            self._guard("config", self._apply_config)

        self.config_watch = self.handle.rpc(
            "config.get", None, FLUX_NODEID_ANY, FLUX_RPC_STREAMING
        )
        self.config_watch.then(cb)

    def _apply_config(self) -> None:
        """Bring the slices to the config in force, if it changed."""
        old, cfg = self.applied_cfg, self.cfg
        self.applied_cfg = cfg
        if cfg == old:
            return
        self.props_cache.clear()
        self.log.debug(f"config: {json.dumps(cfg.to_dict())}")
        for user in list(self.users.values()):
            user.seq += 1
            self._kick(user)
        if cfg.manage_user_slice and not old.manage_user_slice:
            for uid in self.table.users():
                user = self._user(uid)
                user.seq += 1
                self._kick(user)

    # ------------------------------------------------------------ run

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.journal is not None:
                try:
                    self.handle.rpc(
                        "job-manager.events-journal-cancel",
                        {"matchtag": self.journal.pimpl.get_matchtag()},
                        0,
                        FLUX_RPC_NORESPONSE,
                    )
                except OSError:
                    pass
            self.pool.close(timeout=2.0)

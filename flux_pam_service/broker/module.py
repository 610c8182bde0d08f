"""The pam broker module: request handlers and the Flux handle's wiring.

Loaded by name (``pam``) on every rank through flux modprobe, when the
config has a ``[pam]`` table.  This class owns the Flux handle: it parses
requests, answers them, and gives the Flux-free scheduler
(flux_pam_service.broker.scheduler) its worker threads, timers, RPCs and
log.  Rank 0 also follows the job-manager journal
(flux_pam_service.broker.journal).  The architecture and the RPC protocol
are in doc/design.rst.

Module arguments: ``nthreads=N`` (worker threads, default 4);
``profile=PATH`` (write a CPU profile of every thread to PATH at unload:
flux_pam_service.broker.profiling).
"""

import errno
import json
import syslog
import traceback
from typing import Any, Callable, Optional

from flux.brokermod import BrokerModule, request_handler
from flux.constants import (
    FLUX_NODEID_ANY,
    FLUX_POLLIN,
    FLUX_ROLE_OWNER,
    FLUX_RPC_STREAMING,
)
from flux.hostlist import Hostlist

from flux_pam_service.broker import (
    admission,
    dispatcher,
    profiling,
    status,
    workers,
)
from flux_pam_service.broker.journal import JournalFollower, log_level
from flux_pam_service.broker.scheduler import Scheduler
from flux_pam_service.broker.sender import Sender
from flux_pam_service.broker.user import Operation
from flux_pam_service.core import config, rpcs, rv1
from flux_pam_service.core.errors import errtext
from flux_pam_service.systemd import enforcement

DEFAULT_NTHREADS = 4


def shares_node(h: Any) -> bool:
    """Whether other brokers of the instance run on this node (hostname).

    They then share its systemd, as the brokers of a test instance do: a
    restarted module claims only the slices marked with its own rank.
    """
    hostname = h.attr_get("hostname")
    return list(Hostlist(h.attr_get("hostlist"))).count(hostname) > 1


def mapper_inputs(conf: dict) -> tuple:
    """What the sdexec-mapper's answers depend on in the config *conf*:
    ``[sdexec]`` and ``exec.sdexec-properties``."""
    ex = conf.get("exec")
    props = ex.get("sdexec-properties") if isinstance(ex, dict) else None
    return (
        json.dumps(conf.get("sdexec"), sort_keys=True),
        json.dumps(props, sort_keys=True),
    )


class ProtocolError(Exception):
    """A malformed request payload (answered with EPROTO)."""


class PamModule(BrokerModule):
    """Per-user slice management and login admission for the jobs here."""

    def __init__(self, h: Any, *args: str) -> None:
        super().__init__(h, *args)
        self.rank = h.get_rank()
        self.size = int(h.attr_get("size"))
        self.owner = int(h.attr_get("security.owner"))
        self.hostname = h.attr_get("hostname")
        self.shared_node = shares_node(h)
        nthreads = DEFAULT_NTHREADS
        self.profiler: Optional[profiling.Profiler] = None
        for arg in args:
            key, _, value = arg.partition("=")
            if key == "nthreads" and value.isdigit() and int(value) > 0:
                nthreads = int(value)
            elif key == "profile" and value:
                self.profiler = profiling.Profiler(value)
            else:
                raise ValueError(f"pam: unknown or bad module argument: {arg}")
        closed = None
        try:
            cfg = config.from_instance(h.conf_get() or {}, h)
        except config.ConfigError as exc:
            cfg = config.PamConfig()
            closed = "; ".join(exc.problems)
        self.timers: list = []
        around = self.profiler.run if self.profiler else None
        self.pool = workers.Pool(nthreads, name="pam", around=around)
        self.pool_watcher = self._watch(self.pool, "pool")
        # pam.status reads slices on a thread of its own, never queued
        # behind a slow slice operation
        self.status_pool = workers.Pool(1, name="pam-status", around=around)
        self.status_watcher = self._watch(self.status_pool, "status pool")
        self.sched = Scheduler(
            self.rank,
            self.owner,
            cfg,
            submit=self._submit(self.pool),
            timer=self._timer,
            cancel=self._cancel_timer,
            lookup=self._lookup,
            drain=self._drain,
            reply=self._respond,
            error=self._error,
            log=self.log,
            closed=closed,
            cgroup_root=enforcement.find_root(),
            shared_node=self.shared_node,
        )
        self.sched.mapper_inputs = mapper_inputs(h.conf_get() or {})
        self._set_log_level()
        self.live = status.LiveRead(self.sched, self._submit(self.status_pool))
        self.config_watch: Any = None
        self.journal: Optional[JournalFollower] = None
        self._config_watch()
        self.sender = Sender(h, self._send_failed)
        if self.rank == 0:
            self.journal = JournalFollower(h, self.size, self._send, self.sched)
            self.journal.start()
        else:
            self._request_sync()
        self.log.debug(
            f"loaded on rank {self.rank}: owner {self.owner}, {nthreads} threads"
            + (", other brokers on this node" if self.shared_node else "")
        )
        if closed is not None:
            self.log.error(
                f"invalid configuration: {closed}: logins of job users are"
                " refused and user slices are left as they are until"
                " `flux config reload` brings a valid configuration"
            )

    # ------------------------------------------------------------ plumbing

    def _set_log_level(self) -> None:
        debug = self.sched.cfg.debug
        self.log.level = syslog.LOG_DEBUG if debug else syslog.LOG_WARNING

    def _watch(self, pool: workers.Pool, what: str) -> Any:
        """Run *pool*'s completions on the reactor when it signals them."""

        def ready(handle: Any, watcher: Any, fd: int, revents: int, _a: Any) -> None:
            self.sched.guard(what, pool.drain)

        w = self.handle.fd_watcher_create(pool.fileno(), ready, events=FLUX_POLLIN)
        w.start()
        return w

    @staticmethod
    def _submit(pool: workers.Pool) -> Callable[[Operation, Callable], None]:
        return lambda op, done: pool.submit(op.run, done)

    def _timer(self, after: float, fn: Callable, *args: Any) -> Any:
        def cb(handle: Any, watcher: Any, revents: int, _args: Any) -> None:
            watcher.stop()
            if watcher in self.timers:
                self.timers.remove(watcher)
            self.sched.guard("timer", fn, *args)

        w = self.handle.timer_watcher_create(after, cb)
        w.start()
        self.timers.append(w)
        return w

    def _cancel_timer(self, w: Any) -> None:
        if w is not None:
            w.stop()
            if w in self.timers:
                self.timers.remove(w)

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

    def _handle(self, msg: Any, fn: Callable[[Any, dict], None], admin: bool) -> None:
        """Common request path: payload, privilege, errors."""
        try:
            if admin and not self._privileged(msg):
                raise OSError(errno.EPERM, "only root and the instance owner may")
            fn(msg, self._payload(msg))
        except ProtocolError as exc:
            self._error(msg, errno.EPROTO, f"{msg.topic}: {exc}")
        except OSError as exc:
            self._error(msg, exc.errno or errno.EIO, errtext(exc))
        except Exception as exc:
            self.log.error(f"{msg.topic}: {exc}")
            self.log.debug(traceback.format_exc())
            self._error(msg, errno.EIO, f"{msg.topic}: internal error: {exc}")

    def _lookup(self, union: rv1.Resources, done: Callable) -> None:
        """sdexec-mapper.lookup on this rank: the properties of a union."""

        def cb(f: Any) -> None:
            try:
                props, exc = f.get(), None
            except OSError as e:
                props, exc = None, e
            self.sched.guard("lookup", done, props, exc)

        topic, payload, rank = rpcs.mapper_lookup(self.rank, union, self.hostname)
        self.handle.rpc(topic, payload, nodeid=rank).then(cb)

    def _drain(self, reason: str) -> None:
        topic, payload, rank0 = rpcs.drain(self.rank, reason)

        def done(f: Any) -> None:
            try:
                f.get()
            except OSError as exc:
                self.log.error(f"cannot drain rank {self.rank}: {errtext(exc)}")

        self.log.error(f"draining rank {self.rank}: {reason}")
        self.handle.rpc(topic, payload, nodeid=rank0).then(done)

    # ------------------------------------------------------------ jobs

    def _send(self, rank: int, topic: str, payload: dict) -> None:
        self.sched.stats["messages-sent"] += 1
        if rank == self.rank:
            self.sched.guard(topic, self._deliver, topic, payload)
            return
        try:
            self.sender.send(rank, topic, payload)
        except OSError as exc:
            self._send_failed(rank, topic, exc)

    def _send_failed(self, rank: int, topic: str, exc: OSError) -> None:
        self.sched.stats["message-errors"] += 1
        self.log(log_level(exc), f"{topic} to rank {rank}: {errtext(exc)}")

    def _deliver(self, topic: str, payload: dict) -> None:
        if topic == dispatcher.JOB_START:
            self.sched.job_start(payload["id"], payload["userid"], payload["R"])
        elif topic == dispatcher.JOB_CLEANUP:
            self.sched.job_cleanup(payload["id"])
        elif topic == dispatcher.JOB_END:
            self.sched.job_end(payload["id"])
        elif topic == "pam.sync":
            self.sched.sync(payload["jobs"])

    def _request_sync(self) -> None:
        def done(f: Any) -> None:
            try:
                resp = f.get()
            except OSError as exc:
                text = f"pam.sync-request to rank 0: {errtext(exc)}"
                self.log(log_level(exc), text)
                return  # rank 0 pushes pam.sync when its module loads
            self.sched.guard("pam.sync", self.sched.sync, resp.get("jobs", []))

        self.handle.rpc("pam.sync-request", {"rank": self.rank}, nodeid=0).then(done)

    @request_handler("sync-request")
    def sync_request(self, msg: Any) -> None:
        """pam.sync-request {rank} (rank 0): the jobs that hold *rank*."""

        def fn(msg: Any, p: dict) -> None:
            rank = self._int(p, "rank")
            if self.journal is None:
                raise OSError(errno.EINVAL, "pam.sync-request is served by rank 0")
            self.journal.sync_request(msg, rank)

        self._handle(msg, fn, admin=False)

    def _validate_job(self, p: dict) -> tuple:
        jobid = self._int(p, "id")
        userid = self._int(p, "userid")
        try:
            rv1.parse(p.get("R"))
        except rv1.RError as exc:
            raise ProtocolError(str(exc)) from None
        return jobid, userid, p["R"]

    def _from_rank0(self, msg: Any, apply: Callable[[dict], None]) -> None:
        """A message of rank 0's module about jobs: apply it, answer empty."""

        def fn(msg: Any, p: dict) -> None:
            apply(p)
            self._respond(msg)

        self._handle(msg, fn, admin=False)

    @request_handler("job-start")
    def job_start(self, msg: Any) -> None:
        """pam.job-start {id, userid, R} from rank 0."""
        self._from_rank0(msg, lambda p: self.sched.job_start(*self._validate_job(p)))

    @request_handler("job-cleanup")
    def job_cleanup(self, msg: Any) -> None:
        """pam.job-cleanup {id}: the job left RUN; it admits no login."""
        self._from_rank0(msg, lambda p: self.sched.job_cleanup(self._int(p, "id")))

    @request_handler("job-end")
    def job_end(self, msg: Any) -> None:
        """pam.job-end {id}: the job no longer holds this rank."""
        self._from_rank0(msg, lambda p: self.sched.job_end(self._int(p, "id")))

    @request_handler("sync")
    def sync(self, msg: Any) -> None:
        """pam.sync {jobs}: every job that holds this rank, from rank 0."""

        def apply(p: dict) -> None:
            jobs = p.get("jobs")
            if not isinstance(jobs, list):
                raise ProtocolError("jobs is missing or not an array")
            for i, job in enumerate(jobs):
                if not isinstance(job, dict):
                    raise ProtocolError(f"jobs[{i}] is not an object")
                self._validate_job(job)
            self.sched.sync(jobs)

        self._from_rank0(msg, apply)

    # ------------------------------------------------------------ requests

    @request_handler("prolog", allow_guest=True)
    def prolog(self, msg: Any) -> None:
        """pam.prolog {id}: answered once the job's slice operation is done."""

        def fn(msg: Any, p: dict) -> None:
            self.sched.waiters.perilog(msg, self._int(p, "id"), "prolog")

        self._handle(msg, fn, admin=True)

    @request_handler("housekeeping", allow_guest=True)
    def housekeeping(self, msg: Any) -> None:
        """pam.housekeeping {id}: answered after the job's end."""

        def fn(msg: Any, p: dict) -> None:
            self.sched.waiters.perilog(msg, self._int(p, "id"), "housekeeping")

        self._handle(msg, fn, admin=True)

    @request_handler("check", allow_guest=True)
    def check(self, msg: Any) -> None:
        """pam.check {uid, max_jobs?}: may the user log in here?"""

        def fn(msg: Any, p: dict) -> None:
            uid = self._int(p, "uid")
            limit = self._int(p, "max_jobs") if "max_jobs" in p else None
            self._respond(msg, admission.check(self.sched, uid, limit))

        self._handle(msg, fn, admin=True)

    @request_handler("attach", allow_guest=True)
    def attach(self, msg: Any) -> None:
        """pam.attach {uid, scope}: confirm a login scope."""

        def fn(msg: Any, p: dict) -> None:
            uid = self._int(p, "uid")
            scope = p.get("scope")
            if (
                not isinstance(scope, str)
                or not scope.endswith(".scope")
                or "/" in scope
            ):
                raise ProtocolError("scope is missing or not a unit name NAME.scope")
            self.sched.waiters.attach(msg, uid, scope)

        self._handle(msg, fn, admin=True)

    @request_handler("leftovers-removed", allow_guest=True)
    def leftovers_removed(self, msg: Any) -> None:
        """pam.leftovers-removed {uid, removed}: what housekeeping removed."""

        def fn(msg: Any, p: dict) -> None:
            uid = self._int(p, "uid")
            removed = p.get("removed")
            if not isinstance(removed, dict) or not all(
                isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool)
                for k, n in removed.items()
            ):
                raise ProtocolError("removed is missing or not an object of counts")
            self.sched.leftovers_removed(uid, removed)
            self._respond(msg)

        self._handle(msg, fn, admin=True)

    @request_handler("status", allow_guest=True)
    def status(self, msg: Any) -> None:
        """pam.status {uid?}: what this rank holds, with the slices read live."""

        def fn(msg: Any, p: dict) -> None:
            wanted = p.get("uid")
            if wanted is not None:
                wanted = self._int(p, "uid")
            uids = set(status.known_uids(self.sched))
            if not self._privileged(msg):
                uids &= {msg.userid}
            if wanted is not None:
                uids &= {wanted}
            answer = status.status(self.sched, uids, self.shared_node)
            self.live.answer(msg, answer)

        self._handle(msg, fn, admin=False)

    @request_handler("stats-get")
    def stats_get(self, msg: Any) -> None:
        """pam.stats-get (flux module stats): counters and timings."""
        njobs = self.journal.njobs if self.journal is not None else None
        self._respond(msg, status.stats(self.sched, self.pool.busy, njobs))

    # ------------------------------------------------------------ config

    @request_handler("config-reload")
    def config_reload(self, msg: Any) -> None:
        """pam.config-reload: a new config, vetoed if invalid."""

        def fn(msg: Any, p: dict) -> None:
            try:
                cfg = config.from_instance(p, self.handle)
            except config.ConfigError as exc:
                raise OSError(errno.EINVAL, "; ".join(exc.problems)) from None
            self.sched.configure(cfg, mapper_inputs(p))
            self._set_log_level()
            if self.config_watch is None:
                self.sched.bring_to_config()
            self._respond(msg)

        self._handle(msg, fn, admin=False)

    def _config_watch(self) -> None:
        """Follow config updates: the slice operations a new config calls for
        start once it has reached every module (doc/design.rst,
        "Configuration")."""

        def cb(f: Any) -> None:
            try:
                f.get()
            except OSError as exc:
                self.config_watch = None
                self.log.error(
                    f"config.get (streaming): {errtext(exc)}:"
                    " config changes apply at once"
                )
                self.sched.guard("config", self.sched.bring_to_config)
                return
            f.reset()
            self.sched.guard("config", self.sched.bring_to_config)

        self.config_watch = self.handle.rpc(
            "config.get", None, FLUX_NODEID_ANY, FLUX_RPC_STREAMING
        )
        self.config_watch.then(cb)

    # ------------------------------------------------------------ run

    def run(self) -> None:
        """Run the reactor; at the end, stop the journal and the workers."""
        try:
            if self.profiler is not None:
                self.profiler.run(super().run)
            else:
                super().run()
        finally:
            if self.journal is not None:
                self.journal.cancel()
            self.pool.close(timeout=2.0)
            self.status_pool.close(timeout=1.0)
            if self.profiler is not None:
                self.profiler.dump()

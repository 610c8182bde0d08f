"""The work of ``flux-pam-prolog`` and ``flux-pam-housekeeping``.

Both executables are drop-ins that ``flux-run-prolog`` and
``flux-run-housekeeping`` run as root (through ``flux-imp run``) on every rank
of a job.  They call run(PROLOG) or run(HOUSEKEEPING) and exit with its value.

Environment (set by Flux's perilog.so plugin and housekeeping):
    ``FLUX_JOB_ID``       the job: F58 from the prolog, decimal from
                          housekeeping; both are accepted
    ``FLUX_JOB_USERID``   the job's user
    ``FLUX_URI``          the local broker (rank-local)
    ``FLUX_PAM_SCRIPTS_DEBUG``  non-empty and not ``0``: trace every action
                          (same as ``pam.debug = true``)
    ``FLUX_PAM_LOCK_DIR`` lock and marker directory instead of
                          ``/run/flux-pam``; honoured only in a test instance
                          (see below)

Configuration is that of the instance the broker at ``FLUX_URI`` runs
(``config.get``): the IMP resets the environment and the broker's config is
the one in force, including runtime ``flux config load``.  Keys:
``pam.manage-user-slice``, ``pam.kill-user-slice``,
``pam.kill-slice-grace-time``, ``pam.debug``,
``exec.sdexec-constrain-resources`` (flux_pam_service.core.config).

A config that does not validate (the node is *closed*, as the broker module
is with it) is logged naming the file of the broker's ``config.path`` and the
key, and the job is not failed for it (exit 0): nothing is done to the slice,
which cannot be justified without a valid config, and under the per-user
lock the prolog writes the marker with the first line ``deny: TEXT``
(config.CLOSED_MESSAGE), so that pam_flux refuses the user's logins in
fallback mode; housekeeping removes the marker when the user has no other
job here.  The module is not asked (it is closed by the same config).

The scripts must reach the broker as its owner: on a system instance set
``access.allow-root-owner = true``; as a guest, root cannot list or read
other users' jobs and the scripts fail saying so.

Order of work (both scripts):
    1. Parse the environment, connect, load the config.
    2. ``pam.manage-user-slice`` false: exit 0 (debug: "skipping").
    3. The instance owner's jobs are skipped (exit 0).
    4. Ask the ``pam`` broker module (``pam.prolog`` / ``pam.housekeeping``
       ``{"id": ID}``) and wait at most MODULE_TIMEOUT seconds.
    5. If the module is not loaded (ENOSYS) or does not answer in time
       (ETIMEDOUT), do the work alone, under the per-user lock.

Working alone, prolog:
    linger enabled for the user -> fail; count the user's other RUN and
    CLEANUP jobs on this rank (job-list, constraint on ranks); with
    ``exec.sdexec-constrain-resources``: the union of their R on this rank
    plus this job's, mapped by ``sdexec-mapper.lookup`` on this rank and set
    on ``user-UID.slice`` (a failure here fails the prolog and writes no
    marker: no login may be admitted unconstrained); start
    ``user@UID.service``, best effort; with the constraints, read back what
    the kernel enforces (flux_pam_service.systemd.enforcement); write the marker
    ``uid.UID.active``: empty, or ``deny: MESSAGE`` when the kernel does not
    enforce the union and ``pam.allow-unconfined-logins`` is off (pam_flux
    then refuses the user's logins with MESSAGE; the job runs, the reason is
    logged).
Working alone, housekeeping:
    count the user's remaining jobs on this rank (this job excluded); some
    remain: re-apply their union, read it back and rewrite the marker as the
    prolog does; none: remove the marker, stop
    ``user@UID.service``, with ``pam.kill-user-slice`` run the kill sequence
    (SIGTERM, grace, SIGKILL, grace), and revert the slice.  Survivors of the
    kill sequence: drain this rank with a reason that names them, and fail.

Which outcome wins when both the module and a script act:
    The module is authoritative whenever it answers.  Its success ends the
    script (exit 0, nothing done twice); its error ends the script with that
    error (exit 1, the rank drains) and the script does NOT retry alone, so
    a failed constraint can never be papered over by a second attempt.  Only
    when the module is absent or silent does the script act, under the
    per-user lock.  A module that was merely slow may act afterwards as well;
    every operation is idempotent and both compute the union from the same
    set of jobs, so the later writer leaves the same slice, and the module's
    state (which it rebuilds from the journal) is the one that persists.
    The marker is the executables' in both cases (the module, running as the
    instance owner, cannot write /run/flux-pam): after the module's
    "applied" the prolog writes it (with the module's refusal ``message``,
    if any, as its deny line); after its "torn-down" housekeeping
    removes it unless ``pam.check`` shows a new running job of the user.

Messages go to stderr as ``flux-pam-prolog[<F58 jobid>]: text`` (or
``flux-pam-housekeeping[...]``).  When perilog.so runs the drop-in itself,
it copies stderr into the broker's log.  When flux-run-prolog runs it in the
systemd unit ``flux-prolog@JOBID``, stderr is that unit's journal
(``JOURNAL_STREAM`` names it), and the lines also go, once connected, to the
broker's log (``flux dmesg``) as ``flux-pam-prolog``: ``<F58>: text``.

A failure (exit 1) first drains this rank with the message as the reason
(mode "update", so perilog.so keeps it), and in the prolog raises a fatal
``prolog`` exception on the job with the message as its note, which is what
``flux jobs`` shows; perilog.so then cancels the prolog (its own exception,
"prolog exited with code=1", is not raised).

Test-only user mapping (flux_pam_service.testmode): in a test instance every job belongs
to the instance owner, so a job submitted with
``--setattr=system.flux-pam.test-userid=UID`` is treated as UID's job.  This
and ``FLUX_PAM_LOCK_DIR`` are honoured only when
flux_pam_service.testmode detects a test instance; no configuration can
enable them on a system instance (there the IMP forwards ``FLUX_*`` from the
instance owner, who must not choose where root writes).

Interface:
    PROLOG, HOUSEKEEPING              the two programs
    JobEnv, parse_env(environ)        raises PerilogError naming the variable
    debug_enabled(environ, cfg)       bool
    lock_dir(environ, test_instance)  str
    Log(prog, jobid, debug, stream)   error()/info()/debug() with the prefix;
                                      .sink(level, text) (set once connected:
                                      the broker's log) gets each line too
    message(prog, jobid, text)        the one-line format
    module_verdict(exc)               ALONE or FAIL for an error from the module
    stderr_is_journal(environ)        bool: stderr is systemd's journal stream
    local_union(Rs, rank)             Resources of several R on one rank
    run(prog, environ=os.environ) -> int   exit code
"""

import errno
import json
import os
import sys
import syslog
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Mapping, Optional, TextIO

from flux_pam_service.core import config, rv1
from flux_pam_service.core import jobid as jobid_mod
from flux_pam_service.core.errors import errtext
from flux_pam_service.core.rv1 import Resources

PROLOG = "prolog"
HOUSEKEEPING = "housekeeping"
PROGRAMS = {PROLOG: "flux-pam-prolog", HOUSEKEEPING: "flux-pam-housekeeping"}

DEFAULT_LOCK_DIR = "/run/flux-pam"
#: seconds to wait for the pam module's answer before working alone
MODULE_TIMEOUT = 30.0
#: seconds to wait for the per-user lock
LOCK_TIMEOUT = 60.0
#: seconds to wait for one RPC to the local broker (job-list, job-info,
#: sdexec-mapper, resource.drain)
RPC_TIMEOUT = 30.0

# What to do after the module answered with an error
ALONE = "alone"
FAIL = "fail"
# The module is not there, or did not answer within the bound
_ALONE_ERRNOS = {errno.ENOSYS, errno.ETIMEDOUT, errno.EHOSTUNREACH}

_TEST_USERID_ATTR = "system.flux-pam.test-userid"


class PerilogError(Exception):
    """A failure to report on stderr; the script exits 1."""


@dataclass(frozen=True)
class JobEnv:
    """What Flux tells the script about the job."""

    jobid: int
    userid: int
    uri: Optional[str] = None


def parse_env(environ: Mapping[str, str]) -> JobEnv:
    """Return the job from *environ*; the error names the variable."""
    text = environ.get("FLUX_JOB_ID")
    if text is None:
        raise PerilogError("FLUX_JOB_ID is not set")
    try:
        jobid = jobid_mod.parse(text)
    except ValueError as exc:
        raise PerilogError(f"FLUX_JOB_ID: {exc}") from None
    text = environ.get("FLUX_JOB_USERID")
    if text is None:
        raise PerilogError("FLUX_JOB_USERID is not set")
    s = text.strip()
    if not (s.isascii() and s.isdigit()) or int(s) > 2**32 - 2:
        raise PerilogError(f'FLUX_JOB_USERID: "{text}" is not a user ID')
    return JobEnv(jobid=jobid, userid=int(s), uri=environ.get("FLUX_URI"))


def _env_flag(value: Optional[str]) -> bool:
    return value is not None and value.strip() not in ("", "0")


def debug_enabled(environ: Mapping[str, str], cfg: Optional[Any] = None) -> bool:
    """Return whether the action trace is on (env or ``pam.debug``)."""
    if _env_flag(environ.get("FLUX_PAM_SCRIPTS_DEBUG")):
        return True
    return bool(cfg is not None and cfg.debug)


def lock_dir(environ: Mapping[str, str], test_instance: bool) -> str:
    """Return the lock/marker directory.

    ``FLUX_PAM_LOCK_DIR`` is honoured only in a test instance and must be an
    absolute path.
    """
    path = environ.get("FLUX_PAM_LOCK_DIR")
    if not test_instance or not path:
        return DEFAULT_LOCK_DIR
    if not os.path.isabs(path):
        raise PerilogError(f'FLUX_PAM_LOCK_DIR: "{path}" is not an absolute path')
    return path


def message(prog: str, jobid: int, text: str) -> str:
    """Return one log line: ``flux-pam-prolog[ƒXXX]: text``."""
    return f"{PROGRAMS.get(prog, prog)}[{jobid_mod.f58(jobid)}]: {text}"


class Log:
    """stderr logger with the program and job prefix, and an optional sink."""

    def __init__(
        self, prog: str, jobid: int, debug: bool = False, stream: TextIO = None
    ) -> None:
        self.prog = prog
        self.jobid = jobid
        self.debug_on = debug
        self.stream = stream
        self.sink: Optional[Callable[[int, str], None]] = None

    def _write(self, level: int, text: str) -> None:
        stream = self.stream or sys.stderr
        lines = str(text).splitlines() or [""]
        for line in lines:
            stream.write(message(self.prog, self.jobid, line) + "\n")
        stream.flush()
        if self.sink is not None:
            for line in lines:
                try:
                    self.sink(level, f"{jobid_mod.f58(self.jobid)}: {line}")
                except OSError:
                    self.sink = None  # the broker is gone: stderr only

    def error(self, text: str) -> None:
        self._write(syslog.LOG_ERR, text)

    def info(self, text: str) -> None:
        self._write(syslog.LOG_INFO, text)

    def debug(self, text: str) -> None:
        if self.debug_on:
            self._write(syslog.LOG_DEBUG, text)


def module_verdict(exc: OSError) -> str:
    """Return ALONE if an error from the module means "work alone", else FAIL.

    ENOSYS (module not loaded), ETIMEDOUT (no answer within the bound, on
    either side) and EHOSTUNREACH mean the module cannot vouch for this job;
    any other error is the module's verdict on the job and stands.
    """
    return ALONE if exc.errno in _ALONE_ERRNOS else FAIL


def local_union(Rs: Iterable[Any], rank: int) -> Resources:
    """Return the union of what each R in *Rs* holds on *rank*."""
    return rv1.union(rv1.local(R, rank) for R in Rs)


# ---------------------------------------------------------------------------
# The broker side: everything below needs a Flux handle.


class Job:
    """A job on this rank as far as the scripts need it."""

    def __init__(self, jobid: int, userid: int, R: Optional[dict]) -> None:
        self.id = jobid
        self.userid = userid
        self.R = R


class Broker:
    """The calls the scripts make to the local broker."""

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
        import flux.constants

        states = flux.constants.FLUX_JOB_STATE_RUNNING  # RUN | CLEANUP
        payload = {
            "max_entries": 0,
            "attrs": ["userid"],
            "since": 0.0,
            "constraint": {
                "and": [
                    {"userid": [userid]},
                    {"states": [states]},
                    {"ranks": [str(self.rank)]},
                ]
            },
        }
        rsp = self._get(self.h.rpc("job-list.list", payload), "job-list.list")
        return [job["id"] for job in rsp.get("jobs", [])]

    def mapper_properties(self, res: Resources) -> dict:
        R = rv1.make_R(self.rank, res)
        f = self.h.rpc("sdexec-mapper.lookup", {"R": R}, nodeid=self.rank)
        props = self._get(f, "sdexec-mapper.lookup")
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

    def drain(self, reason: str) -> None:
        payload = {"targets": str(self.rank), "reason": reason, "mode": "update"}
        try:
            self.h.rpc("resource.drain", payload, nodeid=0).wait_for(RPC_TIMEOUT).get()
        except OSError as exc:
            self.log.error(f"cannot drain rank {self.rank}: {errtext(exc)}")

    def raise_exception(self, jobid: int, note: str) -> None:
        """Raise a fatal ``prolog`` exception on *jobid* with *note*."""
        payload = {"id": jobid, "severity": 0, "type": "prolog", "note": note}
        try:
            self.h.rpc("job-manager.raise", payload).wait_for(RPC_TIMEOUT).get()
        except OSError as exc:
            self.log.error(f"cannot raise an exception on the job: {errtext(exc)}")


class Perilog:
    """One run of the prolog or housekeeping for one job on one rank."""

    def __init__(
        self,
        prog: str,
        env: JobEnv,
        broker: Broker,
        cfg: "config.PamConfig",
        log: Log,
        test_instance: bool,
        lockdir_path: str,
    ) -> None:
        self.prog = prog
        self.env = env
        self.broker = broker
        self.cfg = cfg
        self.log = log
        self.test_instance = test_instance
        self.lockdir_path = lockdir_path
        self.uid = env.userid

    # -- the user and the jobs -------------------------------------------

    def _job_userid(self, jobspec: Optional[dict], userid: int) -> int:
        from flux_pam_service import testmode

        try:
            return testmode.job_userid(jobspec or {}, userid, self.test_instance)
        except ValueError as exc:
            raise PerilogError(str(exc)) from None

    def resolve_user(self) -> int:
        """Return the user the job is managed as (test mapping applied)."""
        if self.test_instance:
            (info,) = self.broker.lookup([self.env.jobid], ["jobspec"])
            self.uid = self._job_userid(info.get("jobspec"), self.env.userid)
            if self.uid != self.env.userid:
                self.log.debug(
                    f"test instance: treating job as uid {self.uid}"
                    f" ({_TEST_USERID_ATTR})"
                )
        return self.uid

    def other_jobs(self) -> List[Job]:
        """The user's other active jobs on this rank, with their R."""
        # In a test instance every job has the owner's userid; the mapped uid
        # is in each jobspec.
        listed = [j for j in self.broker.active_jobs(self.env.userid)]
        listed = [j for j in listed if j != self.env.jobid]
        keys = ["R", "jobspec"] if self.test_instance else ["R"]
        infos = self.broker.lookup(listed, keys) if listed else []
        jobs = []
        for j, info in zip(listed, infos):
            if not info:
                continue
            uid = self.env.userid
            if self.test_instance:
                uid = self._job_userid(info.get("jobspec"), self.env.userid)
            if uid == self.uid:
                jobs.append(Job(j, uid, info.get("R")))
        return jobs

    def union(self, jobs: List[Job], include_self: bool) -> Resources:
        Rs = [job.R for job in jobs if job.R]
        if include_self:
            (info,) = self.broker.lookup([self.env.jobid], ["R"])
            if not info.get("R"):
                raise PerilogError("job-info.lookup: this job has no R")
            Rs.append(info["R"])
        try:
            return local_union(Rs, self.broker.rank)
        except rv1.RError as exc:
            raise PerilogError(str(exc)) from None

    def properties(self, res: Resources) -> dict:
        props = self.broker.mapper_properties(res)
        self.log.debug(f"sdexec-mapper: {res.to_dict()} -> {json.dumps(props)}")
        return props

    # -- systemd -----------------------------------------------------------

    def user_slice(self) -> Any:
        from flux_pam_service.systemd.client import Systemd
        from flux_pam_service.systemd.user_slice import UserSlice

        def log(level: int, text: str) -> None:
            if level <= syslog.LOG_WARNING:
                self.log.error(text)
            else:
                self.log.debug(text)

        return UserSlice(Systemd(), self.uid, log=log)

    # -- the two programs --------------------------------------------------

    def check_linger(self, us: Any) -> None:
        """Fail if linger is on for the user: every prolog, in both modes."""
        try:
            us.check_linger()
        except OSError as exc:
            raise PerilogError(
                f"{errtext(exc)} (linger must be off for job users on Flux"
                " compute nodes: loginctl disable-linger)"
            ) from None
        self.log.debug(f"uid {self.uid}: linger is off")

    def apply_union(self, us: Any, others: List[Job], include_self: bool) -> dict:
        """Constrain the slice to the union of *others* (and this job).

        Returns the properties applied."""
        res = self.union(others, include_self=include_self)
        props = self.properties(res)
        try:
            us.apply(props)
        except (OSError, ValueError) as exc:
            raise PerilogError(
                f"cannot constrain user-{self.uid}.slice: {errtext(exc)}"
            ) from None
        self.log.debug(f"user-{self.uid}.slice: applied {res.to_dict()}")
        return props

    def marker_content(self, us: Any, props: Optional[dict]) -> str:
        """Read back what the kernel enforces of *props*; the marker's text.

        Not enforced: the reason is logged and, unless
        pam.allow-unconfined-logins, the marker denies the user's logins.
        The job itself is not failed for it.
        """
        if props is None:
            return ""
        from flux_pam_service.core import lockdir
        from flux_pam_service.systemd import enforcement

        root = enforcement.find_root(os.environ, self.test_instance)
        try:
            verdict = enforcement.compare(props, us.read_back(root, props))
        except OSError as exc:
            raise PerilogError(
                f"cannot read back user-{self.uid}.slice: {errtext(exc)}"
            ) from None
        if verdict.enforced:
            self.log.debug(f"user-{self.uid}.slice: enforced {verdict.effective}")
            return ""
        why = f"user-{self.uid}.slice: {'; '.join(verdict.reasons)}"
        if self.cfg.allow_unconfined_logins:
            self.log.error(
                f"{enforcement.describe(verdict.missing)} ({why}): logins are"
                " admitted unconfined (pam.allow-unconfined-logins)"
            )
            return ""
        self.log.error(
            f"{enforcement.describe(verdict.missing)} ({why}): the user's"
            " logins are refused"
        )
        return lockdir.deny_content(verdict.message())

    def prolog_alone(self, us: Any) -> None:
        from flux_pam_service.core import lockdir

        self.check_linger(us)
        others = self.other_jobs()
        self.log.debug(
            f"uid {self.uid}: {len(others)} other active job(s) on rank"
            f" {self.broker.rank}: {', '.join(jobid_mod.f58(j.id) for j in others)}"
        )
        props = None
        if self.cfg.constrain_resources:
            props = self.apply_union(us, others, include_self=True)
        # Start user@UID.service: best effort (prepare() logs a failure to
        # start).  It checks linger again, which holds: we hold the lock.
        us.prepare(None)
        self.log.debug(f"user@{self.uid}.service: started")
        lockdir.set_marker(self.uid, self.lockdir_path, self.marker_content(us, props))
        self.log.debug(f"uid {self.uid}: marker set")

    def housekeeping_alone(self, us: Any) -> None:
        from flux_pam_service.core import lockdir

        others = self.other_jobs()
        self.log.debug(
            f"uid {self.uid}: {len(others)} remaining job(s) on rank {self.broker.rank}"
        )
        if others:
            if self.cfg.constrain_resources:
                props = self.apply_union(us, others, include_self=False)
                content = self.marker_content(us, props)
                if lockdir.has_marker(self.uid, self.lockdir_path):
                    lockdir.set_marker(self.uid, self.lockdir_path, content)
            return
        lockdir.clear_marker(self.uid, self.lockdir_path)
        self.log.debug(f"uid {self.uid}: marker removed")
        try:
            us.teardown(
                kill=self.cfg.kill_user_slice,
                grace=self.cfg.kill_slice_grace_time,
            )
        except OSError as exc:
            from flux_pam_service.systemd.user_slice import SurvivorsError

            if isinstance(exc, SurvivorsError):
                self.broker.drain(f"flux-pam: {errtext(exc)}")
            raise PerilogError(
                f"teardown of user-{self.uid}.slice: {errtext(exc)}"
            ) from None
        self.log.debug(f"user-{self.uid}.slice: torn down")

    def work_alone(self) -> None:
        from flux_pam_service.core import lockdir

        us = self.user_slice()
        try:
            with lockdir.user_lock(self.uid, self.lockdir_path, LOCK_TIMEOUT):
                self.log.debug(f"uid {self.uid}: locked")
                if self.prog == PROLOG:
                    self.prolog_alone(us)
                else:
                    self.housekeeping_alone(us)
        except OSError as exc:
            # lock directory refused, lock timeout, systemd unreachable
            raise PerilogError(errtext(exc)) from None

    def run(self) -> None:
        owner = self.broker.owner()
        self.resolve_user()
        if self.uid == owner:
            self.log.debug(f"uid {self.uid} is the instance owner: skipping")
            return
        if self.prog == PROLOG:
            # The module checks linger only when it prepares a user's first
            # job; linger turned on later must still fail this job.
            self.check_linger(self.user_slice())
        answer = self.broker.ask_module(self.prog, self.env.jobid)
        if answer is not None:
            self.log.debug(f"pam module: {json.dumps(answer)}")
            message = answer.get("message")
            if isinstance(message, str) and message:
                self.log.error(f"pam module: the user's logins are refused: {message}")
            self.sync_marker(answer.get("result"), message)
            return
        self.work_alone()

    def run_closed(self, problems: str) -> None:
        """The configuration is invalid: no slice change, logins refused.

        See "A config that does not validate" in the module docstring.
        """
        from flux_pam_service.core import lockdir

        owner = self.broker.owner()
        self.resolve_user()
        if self.uid == owner:
            return
        try:
            with lockdir.user_lock(self.uid, self.lockdir_path, LOCK_TIMEOUT):
                if self.prog == PROLOG:
                    deny = lockdir.deny_content(config.CLOSED_MESSAGE)
                    lockdir.set_marker(self.uid, self.lockdir_path, deny)
                    self.log.debug(f"uid {self.uid}: marker set, denying logins")
                elif not self.other_jobs():
                    lockdir.clear_marker(self.uid, self.lockdir_path)
                    self.log.debug(f"uid {self.uid}: marker removed")
        except OSError as exc:
            raise PerilogError(errtext(exc)) from None

    def sync_marker(self, result: Optional[str], message: Any = None) -> None:
        """Keep the marker in step with what the module did.

        The module runs as the instance owner and cannot write the root-only
        lock directory, so the executables keep ``uid.UID.active`` there
        (for pam_flux when the module is gone): set after an applied prolog,
        removed after a teardown, unless the module (asked again under the
        lock) holds a running job of the user here by then.
        """
        from flux_pam_service.core import lockdir

        try:
            with lockdir.user_lock(self.uid, self.lockdir_path, LOCK_TIMEOUT):
                if self.prog == PROLOG and result == "applied":
                    content = ""
                    if isinstance(message, str) and message:
                        content = lockdir.deny_content(message)
                    lockdir.set_marker(self.uid, self.lockdir_path, content)
                    self.log.debug(f"uid {self.uid}: marker set")
                elif self.prog == HOUSEKEEPING and result == "torn-down":
                    if self.broker.module_jobs(self.uid):
                        self.log.debug(f"uid {self.uid}: a new job: marker kept")
                    else:
                        lockdir.clear_marker(self.uid, self.lockdir_path)
                        self.log.debug(f"uid {self.uid}: marker removed")
        except OSError as exc:
            raise PerilogError(errtext(exc)) from None


def _connect(env: JobEnv) -> Any:
    try:
        import flux
    except ImportError as exc:
        raise PerilogError(
            f"cannot import flux-core's Python bindings ({exc}): install them"
            f" for {sys.executable} or put them on PYTHONPATH"
        ) from None
    try:
        return flux.Flux(env.uri) if env.uri else flux.Flux()
    except OSError as exc:
        raise PerilogError(
            f"cannot connect to the broker at {env.uri or 'FLUX_URI'}: {errtext(exc)}"
        ) from None


def run(prog: str, environ: Optional[Mapping[str, str]] = None) -> int:
    """Run *prog* (PROLOG or HOUSEKEEPING) for the job in *environ*.

    Returns the exit code: 0 done or skipped, 1 failed (message on stderr).
    """
    if environ is None:
        environ = os.environ
    try:
        env = parse_env(environ)
    except PerilogError as exc:
        sys.stderr.write(f"{PROGRAMS[prog]}: {exc}\n")
        return 1
    log = Log(prog, env.jobid, debug_enabled(environ))
    broker = None
    try:
        handle = _connect(env)
        if stderr_is_journal(environ):
            _log_to_broker(log, handle, prog)
        broker = Broker(handle, log)
        try:
            cfg, closed = broker.config(), None
        except config.ConfigError as exc:
            cfg, closed = config.PamConfig(), "; ".join(exc.problems)
        log.debug_on = debug_enabled(environ, cfg)
        log.debug(
            f"rank {broker.rank}: FLUX_JOB_ID={environ.get('FLUX_JOB_ID')}"
            f" FLUX_JOB_USERID={env.userid}"
        )
        if closed is not None:
            log.error(
                f"invalid configuration: {closed}: nothing is done to the"
                " user's slice, and the user's logins are refused on this node"
                " until the configuration is fixed (the job goes on)"
            )
        elif not cfg.manage_user_slice:
            log.debug("pam.manage-user-slice is false: skipping")
            return 0
        from flux_pam_service import testmode

        test_instance = bool(testmode.is_test_instance(handle))
        path = lock_dir(environ, test_instance)
        work = Perilog(prog, env, broker, cfg, log, test_instance, path)
        if closed is not None:
            work.run_closed(closed)
        else:
            work.run()
    except PerilogError as exc:
        log.error(str(exc))
        if broker is not None:
            broker.drain(f"{PROGRAMS[prog]}: {exc}")
            if prog == PROLOG:
                broker.raise_exception(env.jobid, f"{PROGRAMS[prog]}: {exc}")
        return 1
    return 0


def stderr_is_journal(environ: Mapping[str, str]) -> bool:
    """True when stderr is the journal stream systemd connected it to.

    systemd sets ``JOURNAL_STREAM=DEVICE:INODE`` for a service whose output
    goes to the journal; it holds only while stderr is still that stream.
    """
    dev, _, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _log_to_broker(log: Log, handle: Any, prog: str) -> None:
    """Send *log*'s lines to the broker's log too, as *prog* (``flux dmesg``)."""
    try:
        handle.flux_log_set_appname(PROGRAMS[prog].encode())
    except (AttributeError, OSError):
        pass
    log.sink = handle.log

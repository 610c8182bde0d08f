"""One run of a drop-in: confirm the module's work, or do it alone.

With the pam module loaded its answer is authoritative: success ends the
run, an error fails the job (the run never retries alone over it), and the
marker in the lock directory is kept in step for pam_flux's fallback.  Only
when the module is absent or silent does the run act itself, under the
per-user lock.  A configuration that does not validate closes the node: no
slice change, the marker denies the user's logins, the job goes on
(doc/design.rst, "The drop-ins").
"""

import json
import syslog
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional

from flux_pam_service.core import config, limits, lockdir, rv1
from flux_pam_service.core import jobid as jobid_mod
from flux_pam_service.core.errors import errtext
from flux_pam_service.core.rv1 import Resources
from flux_pam_service.perilog import leftovers
from flux_pam_service.perilog.calls import FluxCalls, Job
from flux_pam_service.perilog.env import (
    HOUSEKEEPING,
    PROLOG,
    JobEnv,
    Log,
    PerilogError,
)
from flux_pam_service.systemd import enforcement
from flux_pam_service.systemd.client import Systemd
from flux_pam_service.systemd.user_slice import SurvivorsError, UserSlice

#: seconds to wait for the per-user lock
LOCK_TIMEOUT = 60.0


def local_union(Rs: Iterable[Any], rank: int) -> Resources:
    """Return the union of what each R in *Rs* holds on *rank*."""
    return rv1.union(rv1.local(R, rank) for R in Rs)


@dataclass
class Perilog:
    """One run of the prolog or housekeeping for one job on one rank."""

    prog: str
    env: JobEnv
    broker: FluxCalls
    cfg: config.PamConfig
    log: Log
    lockdir_path: str = lockdir.DEFAULT

    @property
    def uid(self) -> int:
        """The job's user."""
        return self.env.userid

    def other_jobs(self) -> List[Job]:
        """The user's other active jobs on this rank, with their R."""
        listed = [j for j in self.broker.active_jobs(self.uid) if j != self.env.jobid]
        infos = self.broker.lookup(listed, ["R"]) if listed else []
        return [
            Job(j, self.uid, info.get("R")) for j, info in zip(listed, infos) if info
        ]

    def union(self, jobs: List[Job], include_self: bool) -> Resources:
        """The union of *jobs* here (and of this job, with *include_self*)."""
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
        """The sdexec-mapper's unit properties for *res*."""
        props = self.broker.mapper_properties(res)
        self.log.debug(f"sdexec-mapper: {res.to_dict()} -> {json.dumps(props)}")
        return props

    # -- systemd -----------------------------------------------------------

    def user_slice(self) -> Any:
        """The user's slice; its warnings and errors go to the log as errors."""

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

    def apply_union(
        self, us: Any, others: List[Job], include_self: bool
    ) -> Optional[dict]:
        """Constrain the slice to the union of *others* (and this job), with
        the login limits (core.limits).

        Returns the properties applied (None: nothing to apply)."""
        props, shown = None, "login limits"
        if self.cfg.constrain_resources:
            res = self.union(others, include_self=include_self)
            props, shown = self.properties(res), str(res.to_dict())
        try:
            props = limits.login_properties(props, self.cfg)
        except OSError as exc:
            raise PerilogError(f"login limits: {errtext(exc)}") from None
        if props is None:
            return None
        try:
            us.apply(props)
        except (OSError, ValueError) as exc:
            raise PerilogError(
                f"cannot constrain user-{self.uid}.slice: {errtext(exc)}"
            ) from None
        self.log.debug(f"user-{self.uid}.slice: applied {shown}")
        return props

    def marker_content(self, us: Any, props: Optional[dict]) -> str:
        """Read back what the kernel enforces of *props*; the marker's text.

        Not enforced: the reason is logged and, unless
        pam.allow-unconfined-logins, the marker denies the user's logins.
        The job itself is not failed for it.
        """
        if props is None:
            return ""
        root = enforcement.find_root()
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
        """The prolog without the module (doc/design.rst, "The drop-ins")."""
        self.check_linger(us)
        others = self.other_jobs()
        self.log.debug(
            f"uid {self.uid}: {len(others)} other active job(s) on rank"
            f" {self.broker.rank}: {', '.join(jobid_mod.f58(j.id) for j in others)}"
        )
        props = self.apply_union(us, others, include_self=True)
        # Start user@UID.service: best effort (prepare() logs a failure to
        # start).  It checks linger again, which holds: we hold the lock.
        us.prepare(None)
        self.log.debug(f"user@{self.uid}.service: started")
        lockdir.set_marker(self.uid, self.lockdir_path, self.marker_content(us, props))
        self.log.debug(f"uid {self.uid}: marker set")

    def housekeeping_alone(self, us: Any) -> None:
        """Housekeeping without the module (doc/design.rst, "The drop-ins")."""
        others = self.other_jobs()
        self.log.debug(
            f"uid {self.uid}: {len(others)} remaining job(s) on rank {self.broker.rank}"
        )
        if others:
            props = self.apply_union(us, others, include_self=False)
            if props is not None:
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
            if isinstance(exc, SurvivorsError):
                self.broker.drain(f"flux-pam: {errtext(exc)}")
            raise PerilogError(
                f"teardown of user-{self.uid}.slice: {errtext(exc)}"
            ) from None
        self.log.debug(f"user-{self.uid}.slice: torn down")
        self.remove_leftovers(report=False)

    def remove_leftovers(self, report: bool) -> None:
        """After the user's last job here, with pam.remove-ipc: remove the
        user's IPC objects and runtime files (perilog.leftovers), unless a
        job or a process of the user is left; with *report*, tell the
        module.  Under the per-user lock; a failure is logged, the job is
        not failed for it."""
        if not self.cfg.remove_ipc:
            return
        if self.other_jobs():
            self.log.debug(f"uid {self.uid}: another job here: nothing removed")
            return
        protected = (0, self.broker.owner())
        counts = leftovers.remove(self.uid, protected, log=self.log.error)
        self.log.debug(f"uid {self.uid}: removed {leftovers.describe(counts)}")
        if report:
            self.broker.report_removed(self.uid, counts)

    def work_alone(self) -> None:
        """Do the run's work under the per-user lock."""
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
        """The run with a valid config: ask the module, or work alone."""
        owner = self.broker.owner()
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

        The prolog writes the marker's deny line; housekeeping removes the
        marker with the user's last job here (doc/design.rst, "The drop-ins").
        """
        owner = self.broker.owner()
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
                        self.remove_leftovers(report=True)
        except OSError as exc:
            raise PerilogError(errtext(exc)) from None

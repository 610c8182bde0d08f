"""The prolog.d and housekeeping.d drop-ins of flux-pam-service.

``flux-pam-prolog`` and ``flux-pam-housekeeping`` run as root through the
IMP on every rank of a job and call run(PROLOG) or run(HOUSEKEEPING): they
confirm the pam module's work on the user's slice, or do it all under the
per-user lock in /run/flux-pam when the module is not loaded
(doc/design.rst, "The drop-ins"; flux-config-pam(5)).

    env.py    the job's environment and the drop-ins' log
    calls.py  the RPCs to the local broker
    work.py   one run: ask the module, or work alone
"""

import os
import sys
from typing import Any, Mapping, Optional

from flux_pam_service.core import config
from flux_pam_service.core.errors import errtext
from flux_pam_service.perilog.calls import FluxCalls
from flux_pam_service.perilog.env import (
    HOUSEKEEPING,
    PROGRAMS,
    PROLOG,
    JobEnv,
    Log,
    PerilogError,
    debug_enabled,
    log_to_broker,
    parse_env,
    stderr_is_journal,
)
from flux_pam_service.perilog.work import Perilog

__all__ = ["HOUSEKEEPING", "PROLOG", "run"]


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
            log_to_broker(log, handle, prog)
        broker = FluxCalls(handle, log)
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
        work = Perilog(prog, env, broker, cfg, log)
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

"""The drop-ins' environment and log: what Flux tells them, how they speak.

Flux's perilog.so and housekeeping run the drop-ins with ``FLUX_JOB_ID``
(F58 from the prolog, decimal from housekeeping), ``FLUX_JOB_USERID`` and a
rank-local ``FLUX_URI``; ``FLUX_PAM_SCRIPTS_DEBUG`` turns the action trace on
(as ``pam.debug`` does).  Their lines go to stderr as
``flux-pam-prolog[F58]: text`` and, when stderr is systemd's journal, to the
broker's log as well.
"""

import os
import sys
import syslog
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, TextIO

from flux_pam_service.core import jobid as jobid_mod

PROLOG = "prolog"
HOUSEKEEPING = "housekeeping"
PROGRAMS = {PROLOG: "flux-pam-prolog", HOUSEKEEPING: "flux-pam-housekeeping"}


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
        """A line at error level."""
        self._write(syslog.LOG_ERR, text)

    def info(self, text: str) -> None:
        """A line at info level."""
        self._write(syslog.LOG_INFO, text)

    def debug(self, text: str) -> None:
        """A line of the action trace, if it is on."""
        if self.debug_on:
            self._write(syslog.LOG_DEBUG, text)


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


def log_to_broker(log: Log, handle: Any, prog: str) -> None:
    """Send *log*'s lines to the broker's log too, as *prog* (``flux dmesg``)."""
    try:
        handle.flux_log_set_appname(PROGRAMS[prog].encode())
    except (AttributeError, OSError):
        pass
    log.sink = handle.log

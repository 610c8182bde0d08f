"""Rank 0: follow the job-manager journal and tell the ranks of each job.

``job-manager.events-journal`` streams the active jobs (the backlog), then
``{id: -1}``, then one response per event.  Each event goes through the
Dispatcher (flux_pam_service.broker.dispatcher), whose messages are sent once the
backlog has been read; then every rank gets ``pam.sync`` with the jobs that
hold it, and the ``pam.sync-request`` that arrived meanwhile are answered
(doc/design.rst, "Restart").  A journal that fails is asked again after
JOURNAL_RETRY seconds.
"""

import errno
import syslog
from typing import Any, Callable, List, Optional

from flux.constants import FLUX_RPC_NORESPONSE, FLUX_RPC_STREAMING

from flux_pam_service.broker import responses
from flux_pam_service.broker.dispatcher import Dispatcher
from flux_pam_service.core.errors import errtext

JOURNAL_RETRY = 1.0
JOURNAL_EVENTS = ("submit", "alloc", "finish", "exception", "release", "free", "clean")


class JournalFollower:
    """The rank-0 half of the module: journal in, pam.job-* messages out."""

    def __init__(
        self, handle: Any, size: int, send: Callable[[int, str, dict], None], sched: Any
    ) -> None:
        self.handle = handle
        self.size = size
        self.send = send
        self.sched = sched  # its reply, timer, log, guard and stats
        self.dispatcher: Optional[Dispatcher] = None
        self.future: Any = None
        self.ready = False  # the backlog has been read
        self.sync_requests: List[Any] = []

    def start(self) -> None:
        """Ask the job-manager for its journal (again, after a failure)."""
        self.dispatcher = Dispatcher()
        self.ready = False
        payload = {"full": False, "allow": {name: 1 for name in JOURNAL_EVENTS}}
        self.future = self.handle.rpc(
            "job-manager.events-journal", payload, 0, FLUX_RPC_STREAMING
        )
        self.future.then(self._cb)

    def cancel(self) -> None:
        """Stop the journal stream (at unload)."""
        if self.future is None:
            return
        try:
            self.handle.rpc(
                "job-manager.events-journal-cancel",
                {"matchtag": self.future.pimpl.get_matchtag()},
                0,
                FLUX_RPC_NORESPONSE,
            )
        except OSError:
            pass

    def _cb(self, f: Any) -> None:
        try:
            resp = responses.payload(f)
        except OSError as exc:
            self.future = None
            if exc.errno in (errno.ENOSYS, errno.ENODATA):
                self.sched.log(
                    syslog.LOG_DEBUG, f"job-manager journal: {exc.strerror}: retrying"
                )
            else:
                self.sched.log(
                    syslog.LOG_ERR, f"job-manager.events-journal: {errtext(exc)}"
                )
            self.sched.timer(JOURNAL_RETRY, self.start)
            return
        finally:
            if self.future is not None:
                f.reset()
        self.sched.guard("journal", self._response, resp)

    def _response(self, resp: dict) -> None:
        assert self.dispatcher is not None
        jobid = resp.get("id")
        events = resp.get("events", [])
        if jobid == -1 and not events:
            self._caught_up()
            return
        for entry in events:
            self.sched.stats["journal-events"] += 1
            msgs = self.dispatcher.event(
                jobid,
                entry.get("name"),
                entry.get("context"),
                R=resp.get("R"),
            )
            if self.ready:
                for m in msgs:
                    self.send(m.rank, m.topic, m.payload)
        while self.dispatcher.errors:
            self.sched.log(syslog.LOG_ERR, f"journal: {self.dispatcher.errors.pop(0)}")

    def _caught_up(self) -> None:
        assert self.dispatcher is not None
        self.ready = True
        by_rank = self.dispatcher.jobs_by_rank()
        self.sched.log(
            syslog.LOG_DEBUG,
            f"journal backlog read: {len(self.dispatcher.jobs)} active jobs;"
            f" syncing {self.size} ranks",
        )
        for rank in range(self.size):
            self.send(rank, "pam.sync", {"jobs": by_rank.get(rank, [])})
        for msg, rank in self.sync_requests:
            self.sched.reply(msg, {"jobs": by_rank.get(rank, [])})
        self.sync_requests = []

    def sync_request(self, msg: Any, rank: int) -> None:
        """pam.sync-request {rank}: the jobs that hold *rank* (once known)."""
        if not self.ready:
            self.sync_requests.append((msg, rank))
            return
        assert self.dispatcher is not None
        self.sched.reply(msg, {"jobs": self.dispatcher.jobs_on(rank)})

    @property
    def njobs(self) -> Optional[int]:
        """Active jobs the dispatcher tracks, or None before the first."""
        return len(self.dispatcher.jobs) if self.dispatcher is not None else None


def log_level(exc: OSError) -> int:
    """A message to a module that is not loaded is not an error."""
    return syslog.LOG_DEBUG if exc.errno == errno.ENOSYS else syslog.LOG_ERR

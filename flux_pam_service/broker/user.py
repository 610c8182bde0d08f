"""One user's record on this rank, and the operation run on their slice.

The per-user scheduler (flux_pam_service.broker.scheduler) keeps a User per
user with jobs (or a slice) here and runs Operations on worker threads.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

from flux_pam_service.systemd import enforcement


@dataclass
class Operation:
    """A systemd operation on one user's slice, run on a worker thread.

    *run* is called with the worker thread's state (its systemd connection)
    and returns a flux_pam_service.systemd.operations.Outcome.
    """

    action: str  # prepare, apply, unconstrain, release, teardown, live, scan
    uid: int
    run: Callable[[dict], Any]
    props: Optional[dict] = None
    verify: bool = False


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
    waiters: List[Any] = field(default_factory=list)
    attach_waiters: List[Any] = field(default_factory=list)
    retry_delay: float = 0.0
    retry_timer: Any = None
    # pam.user-stop-delay: released (user@ kept, the slice idle) until this
    # time.monotonic() value, when user@ is stopped unless a job reuses it
    stop_at: Optional[float] = None
    stop_timer: Any = None
    # what the kernel enforces for the applied union (None: not read back)
    verdict: Optional[enforcement.Verdict] = None
    reading: Optional[enforcement.Reading] = None  # the verdict's read-back

    @property
    def pending(self) -> bool:
        """An operation is in flight or due."""
        return bool(self.busy or self.seq > self.done_seq)

    @property
    def settled(self) -> bool:
        """Nothing in flight, due or waiting for a retry."""
        return not self.busy and self.retry_timer is None and self.done_seq >= self.seq

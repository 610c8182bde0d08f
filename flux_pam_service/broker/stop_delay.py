"""The user manager's stop delay (``pam.user-stop-delay``).

When a user's last job here ends, the slice is released at once (logins
refused, constraints shrunk, what is outside ``user@`` killed) and only the
stop of ``user@UID.service`` waits; a job within the delay reuses it
(doc/design.rst, "The user manager's stop delay").  Without a delay the
user's slice is torn down at once.
"""

import math
import time
from functools import partial
from typing import TYPE_CHECKING

from flux_pam_service.broker.user import Operation, User
from flux_pam_service.systemd import operations, properties

if TYPE_CHECKING:
    from flux_pam_service.broker.scheduler import Scheduler


class StopDelay:
    """Release or tear down the slices of the scheduler's users."""

    def __init__(self, sched: "Scheduler") -> None:
        self.sched = sched

    def release_or_teardown(self, user: User, snap: int) -> None:
        """The user has no job here: tear down, or with a delay, release at
        once and stop the user manager once the delay has passed with no
        new job."""
        sched = self.sched
        uid = user.uid
        kill, grace = sched.cfg.kill_user_slice, sched.cfg.kill_slice_grace_time
        delay = sched.cfg.user_stop_delay
        if delay > 0 and user.prepared and user.stop_at is None:
            idle = properties.idle(user.applied)
            run = partial(
                operations.release,
                uid=uid,
                kill=kill,
                grace=grace,
                idle=idle,
                cgroup_root=sched.cgroup_root,
                since=user.applied,
                last=user.reading,
            )
            sched._submit(user, snap, Operation("release", uid, run, idle))
            return
        if user.stop_at is not None and delay > 0:
            left = user.stop_at - time.monotonic()
            if left > 0:  # released: nothing to do until then
                if user.stop_timer is None:
                    user.stop_timer = sched.timer(left, self._due, user)
                sched._finished(user, snap, "torn-down")
                return
        sched._submit(
            user,
            snap,
            Operation(
                "teardown",
                uid,
                lambda state: operations.deactivate(state, uid, kill, grace),
            ),
        )

    def released(self, user: User) -> None:
        """The release is done: start the delay, unless a job came meanwhile."""
        sched = self.sched
        if sched.table.jobs(user.uid):
            return
        delay = sched.cfg.user_stop_delay
        user.stop_at = time.monotonic() + delay
        sched.cancel(user.stop_timer)
        user.stop_timer = sched.timer(delay, self._due, user)

    def keep(self, user: User) -> None:
        """A job arrived: a user manager kept by the delay is reused."""
        user.stop_at = None
        self.sched.cancel(user.stop_timer)
        user.stop_timer = None

    def _due(self, user: User) -> None:
        """The delay has passed: stop the user manager unless reused."""
        user.stop_timer = None
        if user.stop_at is not None and not self.sched.table.jobs(user.uid):
            user.stop_at = -math.inf
            user.seq += 1
            self.sched.kick(user)

"""One user's slice and user manager (user-UID.slice, user@UID.service).

Every operation is idempotent.  systemd reports PIDs of its own PID
namespace, which need not be ours (a container driven from the host), so
signals are sent with KillUnit only, never os.kill().
"""

import errno
import os
import pwd
import signal
import syslog
import time
from typing import Callable, Optional

from flux_pam_service.core import idset
from flux_pam_service.systemd import enforcement, properties
from flux_pam_service.systemd.client import NO_SUCH_UNIT, DBusError, Systemd

SLICE = "org.freedesktop.systemd1.Slice"
UNIT = "org.freedesktop.systemd1.Unit"
LOGIN1 = "org.freedesktop.login1"

Log = Callable[[int, str], None]


class LingerError(OSError):
    """Linger is on for the user: refuse to manage the slice."""


class SurvivorsError(OSError):
    """Processes survived SIGKILL; .survivors = [(pid, cmdline), ...]."""

    def __init__(self, unit: str, survivors: list) -> None:
        shown = ", ".join(f"{pid} ({cmd})" for pid, cmd in survivors[:10])
        more = f" and {len(survivors) - 10} more" if len(survivors) > 10 else ""
        super().__init__(
            errno.EBUSY,
            f"{unit}: {len(survivors)} process(es) survived SIGKILL: {shown}{more}",
        )
        self.survivors = survivors


def _discard(_level: int, _message: str) -> None:
    pass


class UserSlice:
    """One user's slice and user manager, driven through systemd.

    *systemd* is this thread's client; *user* the login name (looked up if
    None); *log* is called with (syslog level, message), as the broker's
    logger is; *job_timeout* bounds the start and stop jobs of user@UID.
    """

    def __init__(
        self,
        systemd: Systemd,
        uid: int,
        user: Optional[str] = None,
        log: Optional[Log] = None,
        linger_dir: str = "/var/lib/systemd/linger",
        job_timeout: float = 30.0,
    ) -> None:
        if isinstance(uid, bool) or not isinstance(uid, int) or uid < 0:
            raise ValueError(f"uid {uid!r} is not a non-negative integer")
        self.systemd = systemd
        self.uid = uid
        self._user = user
        self.log = log or _discard
        self.linger_dir = linger_dir
        self.job_timeout = job_timeout
        self.slice = f"user-{uid}.slice"
        self.service = f"user@{uid}.service"

    @property
    def user(self) -> Optional[str]:
        """The user name (for the linger file), or None if unknown."""
        if self._user is None:
            try:
                self._user = pwd.getpwuid(self.uid).pw_name
            except KeyError:
                return None
        return self._user

    # ------------------------------------------------------------ linger

    def check_linger(self) -> None:
        """Raise LingerError if linger is on for this user."""
        user = self.user
        if user is not None:
            path = os.path.join(self.linger_dir, user)
            if os.path.lexists(path):
                raise LingerError(
                    errno.EBUSY,
                    f"user {user} ({self.uid}) has linger enabled ({path}): "
                    f"refusing to manage {self.slice}",
                )
        if self._logind_linger():
            raise LingerError(
                errno.EBUSY,
                f"user {user or self.uid} ({self.uid}) has linger enabled "
                f"(logind): refusing to manage {self.slice}",
            )

    def _logind_linger(self) -> bool:
        """Ask logind, if it is running (never activate it)."""
        try:
            if not self.systemd.name_has_owner(LOGIN1):
                return False
            path = self.systemd.call(
                LOGIN1,
                "/org/freedesktop/login1",
                "org.freedesktop.login1.Manager",
                "GetUser",
                "u",
                (self.uid,),
            )[0]
            body = self.systemd.call(
                LOGIN1,
                path,
                "org.freedesktop.DBus.Properties",
                "Get",
                "ss",
                ("org.freedesktop.login1.User", "Linger"),
            )
            return bool(body[0][1])
        except DBusError as exc:
            if exc.name != "org.freedesktop.login1.NoSuchUser":
                self.log(syslog.LOG_DEBUG, f"{self.slice}: logind linger query: {exc}")
            return False

    # ------------------------------------------------------------ prepare / apply

    def prepare(self, props: Optional[dict] = None) -> None:
        """Check linger, apply *props*, start user@UID.service (best effort).

        Constraints are applied before the user manager starts, so nothing
        of the user's runs unconfined in between; a failure to start it is
        logged, not raised.
        """
        self.check_linger()
        if props:
            self.apply(props)
        try:
            job = self.systemd.start_unit(self.service, "replace")
            result = self.systemd.wait_job(job, self.job_timeout)
            if result != "done":
                self.log(syslog.LOG_WARNING, f"start {self.service}: job {result}")
        except DBusError as exc:
            self.log(syslog.LOG_WARNING, f"start {self.service}: {exc}")

    def apply(self, props: dict, since: Optional[dict] = None) -> bool:
        """Set *props* (sdexec-mapper form) on the slice, at runtime.

        DevicePolicy=closed when they confine the slice and name no policy,
        an empty DeviceAllow when they name no device (systemd would keep the
        old entries).  Every property of REVERT that *props* do not set is
        reverted, so the slice holds exactly *props* (login limits alone
        leave it unconfined).  With *since*, the properties the slice was
        last given (the same names), only those that changed are sent: a
        union change of cores alone costs systemd a SetUnitProperties of
        AllowedCPUs, without re-applying the device list.  Returns whether
        the device properties were sent.  ValueError for bad *props*, before
        any change.
        """
        delta = properties.changed(since, props)
        if delta is not None:
            dbus_props = properties.to_dbus(delta)
            if dbus_props:
                self.systemd.set_unit_properties(self.slice, dbus_props, runtime=True)
            return bool(properties.DEVICE_PROPERTIES & set(delta))
        dbus_props = properties.to_dbus(props)
        if properties.confines(props):
            if "DevicePolicy" not in props:
                dbus_props.append(("DevicePolicy", ("s", "closed")))
            if "DeviceAllow" not in props:
                dbus_props.append(("DeviceAllow", ("a(ss)", [])))
        dbus_props = properties.unset_reverted(dbus_props) + dbus_props
        self.systemd.set_unit_properties(self.slice, dbus_props, runtime=True)
        return True

    # ------------------------------------------------------------ teardown

    def processes(self) -> list:
        """[(cgroup, pid, cmdline)] of every process in the slice."""
        return self.systemd.unit_processes(self.slice)

    def orphans(self) -> list:
        """Processes in the slice but outside user@UID.service."""
        inside = f"/{self.service}/"
        return [p for p in self.processes() if inside not in p[0] + "/"]

    def _wait_empty(self, timeout: float) -> list:
        """Poll (with backoff) until the slice is empty; return what is left."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            left = self.processes()
            now = time.monotonic()
            if not left or now >= deadline:
                return left
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.5)

    def _kill(self, grace: float) -> list:
        """SIGTERM, wait, SIGKILL, wait; return the survivors."""
        self.log(syslog.LOG_INFO, f"{self.slice}: sending SIGTERM")
        self.systemd.kill_unit(self.slice, "all", signal.SIGTERM)
        left = self._wait_empty(grace)
        if not left:
            return []
        self.log(
            syslog.LOG_WARNING,
            f"{self.slice}: {len(left)} process(es) left after SIGTERM "
            f"and {grace}s; sending SIGKILL",
        )
        self.systemd.kill_unit(self.slice, "all", signal.SIGKILL)
        return self._wait_empty(grace)

    def teardown(self, kill: bool = False, grace: float = 30.0) -> None:
        """Kill (optionally), stop user@, reset it, revert the slice.

        With *kill*, processes outside user@UID.service get SIGTERM, *grace*
        seconds, SIGKILL, *grace* seconds.  If some survive, user@ is still
        stopped but the slice keeps its constraints and SurvivorsError is
        raised (the caller drains the node).  A D-Bus failure in a step is
        logged, the other steps still run, and the first one is raised.
        """
        errors: list = []
        survivors: list = []
        if kill:
            try:
                if self.orphans():
                    survivors = self._kill(grace)
            except DBusError as exc:
                # A slice collected between the listing and the kill has
                # nothing left in it to kill.
                if exc.name != NO_SUCH_UNIT:
                    self.log(syslog.LOG_ERR, f"{self.slice}: kill: {exc}")
                    errors.append(exc)
        try:
            job = self.systemd.stop_unit(self.service, "replace")
            result = self.systemd.wait_job(job, self.job_timeout)
            if result not in ("done", "unknown"):
                self.log(syslog.LOG_WARNING, f"stop {self.service}: job {result}")
        except DBusError as exc:
            self.log(syslog.LOG_ERR, f"stop {self.service}: {exc}")
            errors.append(exc)
        try:
            self.systemd.reset_failed_unit(self.service)
        except DBusError as exc:
            if exc.name != NO_SUCH_UNIT:
                self.log(syslog.LOG_ERR, f"reset-failed {self.service}: {exc}")
                errors.append(exc)
        if survivors:
            err = SurvivorsError(self.slice, [(pid, cmd) for _, pid, cmd in survivors])
            self.log(syslog.LOG_ERR, str(err))
            raise err
        try:
            self.systemd.set_unit_properties(self.slice, properties.REVERT)
        except DBusError as exc:
            # A slice that systemd has already collected has nothing to revert.
            if exc.name != NO_SUCH_UNIT:
                self.log(syslog.LOG_ERR, f"revert {self.slice}: {exc}")
                errors.append(exc)
        if errors:
            raise errors[0]

    def release(self, kill: bool = False, grace: float = 30.0) -> bool:
        """The teardown's first half, for a user manager whose stop is delayed.

        Nothing to do but return True, unless *kill* finds processes outside
        user@UID.service: then this is teardown(kill, grace), which returns
        False, since systemd signals the whole slice (the units a login
        leaves behind are not the module's to signal), manager included.
        The caller shrinks the slice (properties.idle) and keeps the manager.
        """
        if kill and self.orphans():
            self.teardown(kill=True, grace=grace)
            return False
        return True

    # ------------------------------------------------------------ read-back

    def read_back(
        self,
        cgroup_root: str,
        props: Optional[dict],
        devices: Optional["enforcement.Reading"] = None,
    ) -> "enforcement.Reading":
        """What the kernel enforces for the slice: its cgroup files below the
        cgroup2 mount *cgroup_root*, and the device policy systemd reports
        (DevicePolicy and DeviceAllow, two Gets sent together), or that of
        *devices*, an earlier reading, when the device properties have not
        been sent since it was made."""
        path = enforcement.slice_cgroup(cgroup_root, self.uid)
        files = enforcement.read_cgroup(path, enforcement.wants_memory(props))
        if devices is not None:
            policy, allow = devices.device_policy, devices.device_allow
        else:
            reported = self.systemd.unit_property_values(
                self.slice, ("DevicePolicy", "DeviceAllow"), SLICE
            )
            policy = reported.get("DevicePolicy")
            allow = tuple(tuple(e) for e in reported.get("DeviceAllow", ()))
        return enforcement.Reading(device_policy=policy, device_allow=allow, **files)

    # ------------------------------------------------------------ state

    def state(self) -> dict:
        """The slice as systemd sees it, for `flux pam status`."""
        sd = self.systemd
        procs = self.processes()
        inside = f"/{self.service}/"
        scopes = sorted(
            {
                part
                for cgroup, _, _ in procs
                for part in cgroup.split("/")
                if part.endswith(".scope") and inside not in cgroup + "/"
            }
        )
        props = sd.unit_properties(self.slice, SLICE)
        return {
            "uid": self.uid,
            "user": self.user,
            "slice": self.slice,
            "slice_state": sd.unit_property(self.slice, "ActiveState"),
            "service": self.service,
            "service_state": sd.unit_property(self.service, "ActiveState"),
            "scopes": scopes,
            "processes": len(procs),
            "orphans": sum(1 for p in procs if inside not in p[0] + "/"),
            "AllowedCPUs": idset.encode(properties.bitmap_to_ids(props["AllowedCPUs"])),
            "AllowedMemoryNodes": idset.encode(
                properties.bitmap_to_ids(props["AllowedMemoryNodes"])
            ),
            "DevicePolicy": props["DevicePolicy"],
            "DeviceAllow": sorted([list(e) for e in props["DeviceAllow"]]),
            "MemoryHigh": props["MemoryHigh"],
            "MemoryMax": props["MemoryMax"],
        }

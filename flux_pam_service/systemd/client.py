"""A blocking client of systemd's manager over D-Bus, a timeout on every call.

Every failure is a DBusError, an OSError: ``.name`` is the D-Bus error name,
or None when the bus could not be reached or did not answer (unreachable());
errno follows the name (ENOENT for a unit or job that does not exist, EPERM
for a refusal, ETIMEDOUT for no answer in time, ...).  A Systemd object
holds one connection, made on first use and again after it is lost, and is
not thread-safe: one per thread.  Why jeepney: doc/design.rst, "D-Bus
client".
"""

import errno
import os
import time
from collections import deque
from typing import Any, Iterable, Optional

from jeepney import DBusAddress, HeaderFields, MatchRule, MessageType, new_method_call

from flux_pam_service.core.errors import errtext
from flux_pam_service.systemd.bus import Bus, socket_path

DEFAULT_ADDRESS = "unix:path=/run/dbus/system_bus_socket"
SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
PROPERTIES = "org.freedesktop.DBus.Properties"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"

_ERRNO = {
    "org.freedesktop.systemd1.NoSuchUnit": errno.ENOENT,
    "org.freedesktop.systemd1.NoSuchJob": errno.ENOENT,
    "org.freedesktop.systemd1.LoadFailed": errno.ENOENT,
    "org.freedesktop.systemd1.UnitExists": errno.EEXIST,
    "org.freedesktop.systemd1.NoSuchProcess": errno.ESRCH,
    "org.freedesktop.DBus.Error.ServiceUnknown": errno.ENOENT,
    "org.freedesktop.DBus.Error.NameHasNoOwner": errno.ENOENT,
    "org.freedesktop.DBus.Error.UnknownObject": errno.ENOENT,
    "org.freedesktop.DBus.Error.AccessDenied": errno.EPERM,
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired": errno.EPERM,
    "org.freedesktop.DBus.Error.InvalidArgs": errno.EINVAL,
    "org.freedesktop.DBus.Error.UnknownProperty": errno.EINVAL,
    "org.freedesktop.DBus.Error.PropertyReadOnly": errno.EINVAL,
    "org.freedesktop.DBus.Error.NoReply": errno.ETIMEDOUT,
    "org.freedesktop.DBus.Error.Timeout": errno.ETIMEDOUT,
    "org.freedesktop.DBus.Error.TimedOut": errno.ETIMEDOUT,
}


class DBusError(OSError):
    """A failed D-Bus call; .name is the D-Bus error name (None if local)."""

    def __init__(self, err: int, name: Optional[str], message: str) -> None:
        text = f"{name}: {message}" if name else message
        super().__init__(err, text)
        self.name = name
        self.message = message

    def __str__(self) -> str:
        return self.strerror or ""

    @classmethod
    def from_name(cls, name: str, message: str) -> "DBusError":
        """The error for a D-Bus error reply *name*."""
        return cls(_ERRNO.get(name, errno.EIO), name, message)


def unreachable(exc: BaseException) -> bool:
    """True if *exc* says systemd could not be reached or did not answer in
    time (no connection, a dropped one, no reply), not an answer of systemd."""
    return isinstance(exc, OSError) and (
        getattr(exc, "name", "") is None
        or exc.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT)
    )


def _escape(name: str) -> str:
    """systemd's bus_label_escape(): unit name -> object path element."""
    if not name:
        return "_"
    return "".join(
        c if (c.isascii() and c.isalnum()) else f"_{ord(c):02x}" for c in name
    )


def unit_path(name: str) -> str:
    """The object path of unit *name* (systemd loads it on first access)."""
    return f"{MANAGER_PATH}/unit/{_escape(name)}"


class Systemd:
    """Blocking client of systemd's manager; one per thread.

    *address* is a D-Bus address (default $DBUS_SYSTEM_BUS_ADDRESS, else
    the system bus); *timeout* bounds every call, connecting included.
    """

    def __init__(self, address: Optional[str] = None, timeout: float = 5.0) -> None:
        self.address = (
            address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_ADDRESS
        )
        self.timeout = timeout
        self._conn: Optional[Bus] = None
        self._jobs: Optional[deque] = None  # JobRemoved signals, once watched
        self._job_rule: Optional[MatchRule] = None
        self._job_results: dict = {}

    # ------------------------------------------------------------ connection

    def __enter__(self) -> "Systemd":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        self._job_rule = None
        self._jobs = None
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def connect(self) -> None:
        """Connect now (calls connect on first use anyway)."""
        self._connection()

    def _connection(self) -> Bus:
        if self._conn is not None:
            return self._conn
        try:
            path = socket_path(self.address)
        except ValueError as exc:
            raise DBusError(
                errno.EINVAL, None, f"bad D-Bus address {self.address!r}: {exc}"
            ) from None
        try:
            self._conn = Bus(path, self.timeout)
        except TimeoutError:
            raise DBusError(
                errno.ETIMEDOUT,
                None,
                f"D-Bus at {self.address} did not answer in {self.timeout}s",
            ) from None
        except OSError as exc:
            raise DBusError(
                exc.errno or errno.ECONNREFUSED,
                None,
                f"cannot connect to D-Bus at {self.address}: {errtext(exc)}",
            ) from None
        return self._conn

    def _watch_jobs(self) -> None:
        """Add the JobRemoved match before the first call that makes a job."""
        if self._jobs is not None:
            return
        fields = dict(
            type="signal", interface=MANAGER, member="JobRemoved", path=MANAGER_PATH
        )
        rule = MatchRule(sender=SYSTEMD, **fields)
        # jeepney compares the sender field literally, and signals carry
        # systemd's unique name: match locally without it
        self._job_rule, self._jobs = MatchRule(**fields), deque()
        try:
            self.call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "AddMatch",
                "s",
                (rule.serialise(),),
            )
        except BaseException:
            self._job_rule = self._jobs = None
            raise

    # ------------------------------------------------------------ calls

    def call(
        self,
        destination: str,
        path: str,
        interface: str,
        method: str,
        signature: str = "",
        args: Iterable = (),
        timeout: Optional[float] = None,
    ) -> tuple:
        """Call a method; return the reply body or raise DBusError."""
        call = (destination, path, interface, method, signature, args)
        return self.call_many([call], timeout)[0]

    def call_many(self, calls: list, timeout: Optional[float] = None) -> list:
        """Send every call, then collect their reply bodies, in order.

        The bus keeps the calls' order, so they cost one wait; the first
        error among the replies is raised.
        """
        timeout = self.timeout if timeout is None else timeout
        conn = self._connection()
        pending: dict = {}  # serial -> (index, method)
        what = ""
        for i, (destination, path, interface, method, signature, args) in enumerate(
            calls
        ):
            msg = new_method_call(
                DBusAddress(path, bus_name=destination, interface=interface),
                method,
                signature or None,
                tuple(args),
            )
            what = what or f"{interface}.{method}"
            serial = conn.next_serial()
            try:
                conn.send(msg, serial)
            except OSError as exc:
                # a partly sent message leaves the stream unusable: drop it
                self.close()
                err = errno.ETIMEDOUT if isinstance(exc, TimeoutError) else exc.errno
                raise DBusError(
                    err or errno.ECONNRESET, None, f"{what}: cannot send: {exc}"
                ) from None
            pending[serial] = (i, method)
        replies: list = [None] * len(calls)
        deadline = time.monotonic() + timeout
        while pending:
            try:
                reply = conn.receive(deadline)
            except TimeoutError:
                # the connection stays usable: a late reply is skipped below
                raise DBusError(
                    errno.ETIMEDOUT, None, f"{what}: no reply within {timeout}s"
                ) from None
            except OSError as exc:
                raise self._lost(what, exc) from None
            serial = reply.header.fields.get(HeaderFields.reply_serial)
            if serial in pending:
                i, method = pending.pop(serial)
                replies[i] = (reply, method)
                continue
            # not ours: JobRemoved, or a late reply to a call that timed out
            self._keep_job_signal(reply)
        bodies = []
        for reply, method in replies:
            if reply.header.message_type == MessageType.error:
                name = reply.header.fields.get(HeaderFields.error_name, "unknown")
                text = reply.body[0] if reply.body else ""
                raise DBusError.from_name(name, f"{method}: {text}")
            bodies.append(reply.body)
        return bodies

    def _manager(self, method: str, signature: str = "", *args: Any) -> tuple:
        return self.call(SYSTEMD, MANAGER_PATH, MANAGER, method, signature, args)

    def start_unit(self, name: str, mode: str = "replace") -> str:
        """StartUnit; the job's object path (see wait_job)."""
        self._watch_jobs()
        return self._manager("StartUnit", "ss", name, mode)[0]

    def stop_unit(self, name: str, mode: str = "replace") -> str:
        """StopUnit; the job's object path (see wait_job)."""
        self._watch_jobs()
        return self._manager("StopUnit", "ss", name, mode)[0]

    def kill_unit(self, name: str, whom: str = "all", signal: int = 15) -> None:
        """KillUnit: send *signal* to the unit's processes."""
        self._manager("KillUnit", "ssi", name, whom, signal)

    def reset_failed_unit(self, name: str) -> None:
        """ResetFailedUnit."""
        self._manager("ResetFailedUnit", "s", name)

    def set_unit_properties(
        self, name: str, props: Iterable, runtime: bool = True
    ) -> None:
        """SetUnitProperties; *props* as properties.to_dbus() makes them."""
        self._manager("SetUnitProperties", "sba(sv)", name, runtime, list(props))

    def start_transient_scope(
        self,
        name: str,
        slice: str,
        pids: Iterable[int],
        properties: Iterable = (),
        mode: str = "fail",
    ) -> str:
        """StartTransientUnit of a scope holding *pids* in *slice*; the job."""
        props = [("Slice", ("s", slice)), ("PIDs", ("au", list(pids)))]
        props += list(properties)
        self._watch_jobs()
        return self._manager(
            "StartTransientUnit", "ssa(sv)a(sa(sv))", name, mode, props, []
        )[0]

    def get_unit(self, name: str) -> Optional[str]:
        """GetUnit: the unit's object path, or None if it is not loaded."""
        try:
            return self._manager("GetUnit", "s", name)[0]
        except DBusError as exc:
            if exc.name == NO_SUCH_UNIT:
                return None
            raise

    def unit_property(self, name: str, prop: str, interface: str = UNIT) -> Any:
        """One property, read through the unit's path (which loads the unit)."""
        body = self.call(
            SYSTEMD, unit_path(name), PROPERTIES, "Get", "ss", (interface, prop)
        )
        return body[0][1]

    def unit_property_values(
        self, name: str, props: Iterable[str], interface: str = UNIT
    ) -> dict:
        """A few properties, their Gets sent together: one wait."""
        path = unit_path(name)
        names = list(props)
        bodies = self.call_many(
            [(SYSTEMD, path, PROPERTIES, "Get", "ss", (interface, p)) for p in names]
        )
        return {p: body[0][1] for p, body in zip(names, bodies)}

    def unit_properties(self, name: str, interface: str = UNIT) -> dict:
        """Every property of *interface* (GetAll)."""
        body = self.call(
            SYSTEMD, unit_path(name), PROPERTIES, "GetAll", "s", (interface,)
        )
        return {k: v[1] for k, v in body[0].items()}

    def manager_property(self, prop: str) -> Any:
        """A property of the manager itself."""
        body = self.call(
            SYSTEMD, MANAGER_PATH, PROPERTIES, "Get", "ss", (MANAGER, prop)
        )
        return body[0][1]

    def list_units(self, patterns: Iterable[str]) -> list:
        """ListUnitsByPatterns: the loaded units matching *patterns*."""
        body = self._manager("ListUnitsByPatterns", "asas", [], list(patterns))
        return list(body[0])

    def unit_processes(self, name: str) -> list:
        """[(cgroup, pid, cmdline)] of the unit (systemd's PIDs); [] if not loaded."""
        try:
            return [tuple(p) for p in self._manager("GetUnitProcesses", "s", name)[0]]
        except DBusError as exc:
            if exc.name == NO_SUCH_UNIT:
                return []
            raise

    def name_has_owner(self, name: str) -> bool:
        """Whether a bus name is owned (is the service running?)."""
        body = self.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            "s",
            (name,),
        )
        return bool(body[0])

    # ------------------------------------------------------------ jobs

    def _keep_job_signal(self, msg: Any) -> None:
        """Queue *msg* if it is a JobRemoved signal (see _watch_jobs)."""
        if self._jobs is not None and self._job_rule is not None:
            if self._job_rule.matches(msg):
                self._jobs.append(msg)

    def _drain_jobs(self) -> None:
        while self._jobs:
            msg = self._jobs.popleft()
            # JobRemoved(u id, o job, s unit, s result)
            _id, path, _unit, result = msg.body
            self._job_results[path] = result
        while len(self._job_results) > 1024:
            self._job_results.pop(next(iter(self._job_results)))

    def wait_job(self, job_path: str, timeout: float) -> str:
        """Wait up to *timeout* s for job *job_path*; its result.

        "done", "canceled", "timeout", "failed", "dependency", "skipped",
        or "unknown" when the job vanished without a JobRemoved reaching
        this connection (a job another client made).  systemd sends
        JobRemoved to the client that made the job, and the match is added
        before the first call that makes one, so it cannot be missed.
        """
        self._watch_jobs()
        conn = self._connection()
        deadline = time.monotonic() + timeout
        # also look at the job object now and then, with backoff, in case its
        # JobRemoved was not addressed to us
        check_at = time.monotonic()
        interval = 0.05
        while True:
            self._drain_jobs()
            if job_path in self._job_results:
                return self._job_results.pop(job_path)
            now = time.monotonic()
            if now >= check_at:
                if not self._job_exists(job_path):
                    self._drain_jobs()
                    return self._job_results.pop(job_path, "unknown")
                interval = min(interval * 2, 1.0)
                check_at = now + interval
            left = min(deadline, check_at) - now
            if now >= deadline:
                raise DBusError(
                    errno.ETIMEDOUT, None, f"job {job_path}: not done in {timeout}s"
                )
            try:
                self._keep_job_signal(conn.receive(now + max(left, 0.001)))
            except TimeoutError:
                continue
            except OSError as exc:
                raise self._lost(f"waiting for job {job_path}", exc) from None

    def _lost(self, what: str, exc: OSError) -> DBusError:
        """Close the connection that failed; the error that says so."""
        self.close()
        return DBusError(
            exc.errno or errno.ECONNRESET, None, f"{what}: D-Bus connection lost: {exc}"
        )

    def _job_exists(self, job_path: str) -> bool:
        try:
            self.call(
                SYSTEMD,
                job_path,
                PROPERTIES,
                "Get",
                "ss",
                ("org.freedesktop.systemd1.Job", "State"),
            )
        except DBusError as exc:
            if exc.errno == errno.ENOENT or exc.name in (
                "org.freedesktop.DBus.Error.UnknownMethod",
                "org.freedesktop.DBus.Error.UnknownInterface",
            ):
                return False
            raise
        return True

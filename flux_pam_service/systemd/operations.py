"""The systemd operations of the broker module, run on its worker threads.

Each takes the worker thread's ``state`` dict (flux_pam_service.broker.workers),
which keeps that thread's systemd connection, and returns an Outcome.
Nothing here touches the Flux handle: log lines are collected in the Outcome
(or in the ``logs`` attribute of a raised OSError) and written by the module
on its reactor thread.  A connection found dead is replaced once, since
every operation is idempotent.
"""

import errno
import os
from dataclasses import dataclass, field
from syslog import LOG_DEBUG
from typing import Any, Callable, List, Optional, Tuple

from flux_pam_service.core import idset
from flux_pam_service.systemd import enforcement, properties
from flux_pam_service.systemd.client import Systemd, unreachable
from flux_pam_service.systemd.user_slice import SLICE, UserSlice

SCOPE = "org.freedesktop.systemd1.Scope"
DESCRIPTION_PREFIX = "flux-pam:"
#: seconds allowed for each D-Bus call
CALL_TIMEOUT = 10.0
#: seconds to wait for user@UID.service to start or stop
JOB_TIMEOUT = 30.0

LogLine = Tuple[int, str]


@dataclass
class Outcome:
    """What an operation did: a value, log lines, repairs made."""

    value: Any = None
    logs: List[LogLine] = field(default_factory=list)
    repairs: List[str] = field(default_factory=list)
    verdict: Optional[enforcement.Verdict] = None
    # the read-back the verdict came from (its device part is reused while
    # the device properties are not sent again)
    reading: Optional[enforcement.Reading] = None


def description(uid: int, rank: int) -> str:
    """The Description of a managed user slice."""
    return f"{DESCRIPTION_PREFIX} user-{uid}.slice managed by rank {rank}"


def default_description(uid: int) -> str:
    """systemd's own Description of user-UID.slice (user-.slice.d)."""
    return f"User Slice of UID {uid}"


def connection(state: dict, timeout: float = CALL_TIMEOUT) -> Systemd:
    """This thread's systemd connection (made on first use)."""
    sd = state.get("systemd")
    if sd is None:
        sd = state["systemd"] = Systemd(timeout=timeout)
    return sd


def _user_slice(state: dict, uid: int, out: Outcome) -> UserSlice:
    return UserSlice(
        connection(state),
        uid,
        log=lambda level, msg: out.logs.append((level, msg)),
        job_timeout=JOB_TIMEOUT,
    )


def _fail(exc: OSError, out: Outcome) -> OSError:
    """Attach the collected log lines to *exc* and return it."""
    exc.logs = out.logs  # type: ignore[attr-defined]
    return exc


def _drop_connection(state: dict, exc: BaseException) -> None:
    """Forget the connection after a transport error; the next op reconnects."""
    if unreachable(exc):
        sd = state.pop("systemd", None)
        if sd is not None:
            sd.close()


def _run(
    state: dict, uid: int, out: Outcome, body: Callable[[UserSlice], None]
) -> None:
    """Run *body* on the user's slice; once more on a fresh connection if the
    thread's connection turns out to be dead (operations are idempotent)."""
    for attempt in (1, 2):
        reused = "systemd" in state  # a connection made by an earlier op
        try:
            body(_user_slice(state, uid, out))
            return
        except ValueError as exc:
            raise _fail(OSError(errno.EINVAL, str(exc)), out) from None
        except OSError as exc:
            _drop_connection(state, exc)
            if attempt == 1 and unreachable(exc) and reused:
                out.logs.append((LOG_DEBUG, f"reconnecting to systemd: {exc}"))
                continue
            raise _fail(exc, out) from None


def _set_description(us: UserSlice, text: str) -> None:
    us.systemd.set_unit_properties(us.slice, [("Description", ("s", text))])


def _compare(us: UserSlice, props: Optional[dict], out: Outcome) -> bool:
    """Report how the slice differs from what *props* asks (after a restart).

    Returns True if its CPU or memory-node constraints differ."""
    differs = False
    current = us.systemd.unit_properties(us.slice, SLICE)
    want = dict(properties.to_dbus(props)) if props else {}
    for name in ("AllowedCPUs", "AllowedMemoryNodes"):
        have = idset.encode(properties.bitmap_to_ids(current.get(name, b"")))
        wanted = (
            idset.encode(properties.bitmap_to_ids(want[name][1]))
            if name in want
            else ""
        )
        if have != wanted:
            differs = True
            out.repairs.append(f"{us.slice}: {name} '{have}' -> '{wanted}'")
    state = us.systemd.unit_property(us.service, "ActiveState")
    if state != "active":
        out.repairs.append(f"{us.service}: {state} -> started")
    return differs


def _read_back(
    us: UserSlice,
    cgroup_root: Optional[str],
    props: dict,
    devices: Optional[enforcement.Reading],
    out: Outcome,
) -> None:
    """Read the slice back after it was given *props* (UserSlice.read_back)
    and say what the kernel enforces of them; nothing without a cgroup2
    mount to read."""
    if cgroup_root is not None:
        out.reading = us.read_back(cgroup_root, props, devices)
        out.verdict = enforcement.compare(props, out.reading)


def activate(
    state: dict,
    uid: int,
    props: Optional[dict],
    first: bool,
    verify: bool,
    desc: str,
    cgroup_root: Optional[str] = None,
    since: Optional[dict] = None,
    last: Optional[enforcement.Reading] = None,
) -> Outcome:
    """The user has jobs here: bring the slice to *props*.

    *props* are the sdexec-mapper properties of the union (None: not
    constrained).  A first activation, or one that must *verify* after a
    restart, checks linger (LingerError is final), applies *props* and
    starts user@UID.service (UserSlice.prepare); *verify* first reports
    every difference from *props* as a repair.  Otherwise only *props* are
    applied.  The Description *desc* marks the slice as this module's (the
    restart scan looks for it).  With *props* and *cgroup_root* the slice is
    read back and Outcome.verdict is what the kernel enforces.  An apply
    given *since* (the properties last applied) sends only what changed
    (UserSlice.apply); when that leaves the device properties alone, the
    device part of *last* (the reading of that apply) stands.
    """
    out = Outcome()

    def body(us: UserSlice) -> None:
        out.repairs.clear()
        if verify and _compare(us, props, out) and props is None:
            # constraints are off but the slice still has some: revert
            us.systemd.set_unit_properties(us.slice, properties.REVERT)
        devices = None
        if first or verify:
            us.prepare(props)
            _set_description(us, desc)
            out.value = "prepare"
        else:
            if props is not None and not us.apply(props, since):
                devices = last
            out.value = "apply"
        if props is not None:
            _read_back(us, cgroup_root, props, devices, out)

    _run(state, uid, out, body)
    return out


def deactivate(state: dict, uid: int, kill: bool, grace: float) -> Outcome:
    """The user's last job here ended: UserSlice.teardown(kill, grace), then
    systemd's own Description again (SurvivorsError names survivors)."""
    out = Outcome(value="teardown")

    def body(us: UserSlice) -> None:
        us.teardown(kill=kill, grace=grace)
        _set_description(us, default_description(uid))

    _run(state, uid, out, body)
    return out


def release(
    state: dict,
    uid: int,
    kill: bool,
    grace: float,
    idle: Optional[dict],
    cgroup_root: Optional[str] = None,
    since: Optional[dict] = None,
    last: Optional[enforcement.Reading] = None,
) -> Outcome:
    """The user's last job here ended and the user manager's stop is
    delayed: UserSlice.release(kill, grace), then the slice shrinks to
    *idle* (properties.idle; only what changed since *since* is sent) and is
    read back as an apply is.  .value is "release" (user@UID keeps running)
    or "teardown" (it had to be stopped with what was killed; systemd's
    Description is then restored as by deactivate)."""
    out = Outcome(value="release")

    def body(us: UserSlice) -> None:
        if not us.release(kill=kill, grace=grace):
            _set_description(us, default_description(uid))
            out.value = "teardown"
            return
        if idle:
            devices = None if us.apply(idle, since) else last
            _read_back(us, cgroup_root, idle, devices, out)

    _run(state, uid, out, body)
    return out


def unconstrain(state: dict, uid: int) -> Outcome:
    """Revert the slice's constraints, leaving user@UID.service alone."""
    out = Outcome(value="unconstrain")
    _run(
        state,
        uid,
        out,
        lambda us: us.systemd.set_unit_properties(us.slice, properties.REVERT),
    )
    return out


def scan(state: dict, prefix: str) -> Outcome:
    """Find user slices that this module manages or that hold login scopes.

    .value maps uid to {"description", "state", "constrained", "scopes"}
    for every loaded user-UID.slice whose Description starts with *prefix*,
    and for every user-UID.slice that holds a ``flux-pam-*.scope`` (a login
    that pam_flux placed there; "scopes" lists them).
    """
    out = Outcome(value={})
    sd = connection(state)
    try:
        units = sd.list_units(["user-*.slice", "flux-pam-*.scope"])
        scopes: dict = {}
        for unit in units:
            name, desc, active = unit[0], unit[1], unit[3]
            if name.endswith(".scope"):
                parent = sd.unit_property(name, "Slice", SCOPE)
                scopes.setdefault(parent, []).append(name)
                continue
            uid_text = name[len("user-") : -len(".slice")]
            if not uid_text.isdigit() or not desc.startswith(prefix):
                continue
            props = sd.unit_properties(name, SLICE)
            constrained = (
                bool(properties.bitmap_to_ids(props.get("AllowedCPUs", b"")))
                or props.get("DevicePolicy", "auto") != "auto"
            )
            out.value[int(uid_text)] = {
                "description": desc,
                "state": active,
                "constrained": constrained,
                "scopes": [],
            }
        for parent, names in scopes.items():
            uid_text = parent[len("user-") : -len(".slice")]
            if not (parent.startswith("user-") and uid_text.isdigit()):
                continue
            entry = out.value.setdefault(
                int(uid_text),
                {"description": "", "state": "active", "constrained": False},
            )
            entry["scopes"] = sorted(names)
    except OSError as exc:
        _drop_connection(state, exc)
        raise _fail(exc, out) from None
    return out


def _slice_uid(part: str) -> Optional[int]:
    """uid of a ``user-UID.slice`` cgroup component, else None."""
    if part.startswith("user-") and part.endswith(".slice"):
        text = part[len("user-") : -len(".slice")]
        if text.isdigit():
            return int(text)
    return None


def _in_user_slice(cgroup: str) -> Tuple[Optional[int], List[str]]:
    """(uid, the components below user-UID.slice) of a cgroup path."""
    parts = cgroup.strip("/").split("/")
    for i, part in enumerate(parts):
        uid = _slice_uid(part)
        if uid is not None:
            return uid, parts[i + 1 :]
    return None, []


def login_cgroup(root: str, uid: int, scope: str) -> dict:
    """Where the kernel holds a login scope of user-UID.slice: the text of
    its ``cpuset.cpus.effective``, ``cpuset.mems.effective`` and
    ``memory.max`` below the cgroup2 mount *root* (None: absent)."""
    path = os.path.join(enforcement.slice_cgroup(root, uid), scope)
    out: dict = {"scope": scope, "slice": f"user-{uid}.slice"}
    for key, name in LOGIN_FILES:
        try:
            with open(os.path.join(path, name)) as f:
                out[key] = f.read().strip()
        except OSError:
            out[key] = None
    return out


#: what pam.status shows of each login, from its scope's cgroup
LOGIN_FILES = (
    ("cpus", "cpuset.cpus.effective"),
    ("mems", "cpuset.mems.effective"),
    ("memory_max", "memory.max"),
)


def live(state: dict, uids: List[int], cgroup_root: Optional[str] = None) -> Outcome:
    """The slices of *uids* as they are now, for pam.status.

    .value maps each uid to {"slice_state", "service_state", "scopes",
    "processes", "orphans", "logins"}, in two D-Bus calls whatever the
    number of users; with *cgroup_root*, "logins" has login_cgroup() of
    each scope (else it is empty).

    ListUnitsByPatterns gives the state of every loaded user slice and user
    manager; GetUnitProcesses on ``user.slice`` (on the one user's slice when
    there is one uid) gives every process with its cgroup, from which the
    login scopes (scopes outside user@UID.service) and the counts follow.  A
    slice that is not loaded reads as inactive and empty.
    """
    wanted = set(uids)
    out = Outcome(
        value={
            uid: {
                "slice_state": "inactive",
                "service_state": "inactive",
                "scopes": [],
                "processes": 0,
                "orphans": 0,
                "logins": [],
            }
            for uid in wanted
        }
    )
    sd = connection(state)
    try:
        units = sd.list_units(["user-*.slice", "user@*.service"])
        root = f"user-{uids[0]}.slice" if len(wanted) == 1 else "user.slice"
        procs = sd.unit_processes(root)
    except OSError as exc:
        _drop_connection(state, exc)
        raise _fail(exc, out) from None
    for unit in units:
        name, active = unit[0], unit[3]
        if name.startswith("user@") and name.endswith(".service"):
            text = name[len("user@") : -len(".service")]
            uid, key = (int(text) if text.isdigit() else None), "service_state"
        else:
            uid, key = _slice_uid(name), "slice_state"
        if uid in wanted:
            out.value[uid][key] = active
    scopes: dict = {uid: set() for uid in wanted}
    for cgroup, _pid, _cmd in procs:
        uid, rest = _in_user_slice(cgroup)
        if uid not in wanted:
            continue
        entry = out.value[uid]
        entry["processes"] += 1
        if rest[:1] == [f"user@{uid}.service"]:
            continue
        entry["orphans"] += 1
        if rest and rest[0].endswith(".scope"):
            scopes[uid].add(rest[0])
    for uid, names in scopes.items():
        out.value[uid]["scopes"] = sorted(names)
        if cgroup_root is not None:
            out.value[uid]["logins"] = [
                login_cgroup(cgroup_root, uid, name) for name in sorted(names)
            ]
    return out

"""The D-Bus client (flux_pam_service.systemd.client) against the test bed's systemd."""

import errno
import os
import signal
import socket
import subprocess
import time

import pytest
from bed import ALICE, container_path

from flux_pam_service.systemd.client import DBusError, Systemd, unit_path
from flux_pam_service.systemd.user_slice import UserSlice

SLOW_UNIT = "flux-pam-test-slow.service"
FAIL_UNIT = "flux-pam-test-fail.service"


@pytest.fixture(scope="module")
def test_units(testbed):
    """Unit files in the container's /run (a tmpfs overlay; gone at down)."""
    units = {
        SLOW_UNIT: "[Service]\nType=oneshot\nExecStart=/bin/sleep 2\n",
        FAIL_UNIT: "[Service]\nType=oneshot\nExecStart=/bin/false\n",
    }
    for name, text in units.items():
        with open(container_path(testbed, f"/run/systemd/system/{name}"), "w") as f:
            f.write(text)
    subprocess.run(["systemctl", "-M", testbed.name, "daemon-reload"], check=True)
    yield units
    for name in units:
        os.unlink(container_path(testbed, f"/run/systemd/system/{name}"))
    subprocess.run(["systemctl", "-M", testbed.name, "daemon-reload"], check=True)


def test_no_such_unit_error_keeps_systemd_name(sd):
    with pytest.raises(DBusError) as exc:
        sd.kill_unit("flux-pam-no-such.service")
    assert exc.value.name == "org.freedesktop.systemd1.NoSuchUnit"
    assert exc.value.errno == errno.ENOENT
    assert "org.freedesktop.systemd1.NoSuchUnit" in str(exc.value)
    assert "flux-pam-no-such.service" in str(exc.value)


def test_invalid_args_error_keeps_dbus_name(sd):
    with pytest.raises(DBusError) as exc:
        sd.start_unit("user@1000.service", mode="bogus")
    assert exc.value.name == "org.freedesktop.DBus.Error.InvalidArgs"
    assert exc.value.errno == errno.EINVAL


def test_bad_device_permissions_refused_by_systemd_with_invalid_args(sd):
    with pytest.raises(DBusError) as exc:
        sd.set_unit_properties(
            "user-1000.slice", [("DeviceAllow", ("a(ss)", [("/dev/null", "x")]))]
        )
    assert exc.value.name == "org.freedesktop.DBus.Error.InvalidArgs"


def test_get_unit_is_none_for_unit_not_loaded(sd):
    assert sd.get_unit("flux-pam-no-such.service") is None
    assert sd.get_unit("init.scope") == unit_path("init.scope")


def test_unit_property_loads_unit_that_is_not_loaded(sd):
    assert sd.get_unit("user-4444.slice") is None
    assert sd.unit_property("user-4444.slice", "LoadState") == "loaded"
    assert sd.unit_property("user-4444.slice", "ActiveState") == "inactive"
    assert sd.unit_property("flux-pam-no-such.service", "LoadState") == "not-found"


def test_pipelined_calls_answer_in_order_and_errors_after_every_reply(sd):
    got = sd.unit_property_values("init.scope", ("Id", "ActiveState", "Description"))
    assert got["Id"] == "init.scope" and got["ActiveState"] == "active"
    assert list(got) == ["Id", "ActiveState", "Description"]
    get = "org.freedesktop.DBus.Properties"
    calls = [
        (
            "org.freedesktop.systemd1",
            unit_path("init.scope"),
            get,
            "Get",
            "ss",
            ("org.freedesktop.systemd1.Unit", "Id"),
        ),
        (
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "KillUnit",
            "ssi",
            ("flux-pam-no-such.service", "all", 15),
        ),
        (
            "org.freedesktop.systemd1",
            unit_path("init.scope"),
            get,
            "Get",
            "ss",
            ("org.freedesktop.systemd1.Unit", "ActiveState"),
        ),
    ]
    with pytest.raises(DBusError) as exc:
        sd.call_many(calls)
    assert exc.value.name == "org.freedesktop.systemd1.NoSuchUnit"
    # every reply was read: the connection answers the next call in step
    assert sd.unit_property("init.scope", "Id") == "init.scope"


def test_unit_processes_is_empty_for_unit_not_loaded(sd):
    assert sd.unit_processes("flux-pam-no-such.service") == []


def test_unit_processes_lists_cgroup_pid_and_command(sd):
    procs = sd.unit_processes("init.scope")
    assert procs == [("/init.scope", 1, procs[0][2])]
    assert "systemd" in procs[0][2]


def test_wait_job_returns_done_and_failed(sd, test_units):
    assert sd.wait_job(sd.start_unit(SLOW_UNIT), 10) == "done"
    assert sd.wait_job(sd.start_unit(FAIL_UNIT), 10) == "failed"
    sd.reset_failed_unit(FAIL_UNIT)


def test_wait_job_times_out_then_the_job_can_still_be_waited_for(sd, test_units):
    job = sd.start_unit(SLOW_UNIT)
    t0 = time.monotonic()
    with pytest.raises(DBusError) as exc:
        sd.wait_job(job, 0.3)
    assert exc.value.errno == errno.ETIMEDOUT
    assert 0.3 <= time.monotonic() - t0 < 1.0
    assert sd.wait_job(job, 10) == "done"


def test_wait_job_for_a_job_made_by_another_client_ends(testbed, sd, test_units):
    other = Systemd(testbed.address)
    job = other.start_unit(SLOW_UNIT)
    assert sd.wait_job(job, 10) in ("done", "unknown")
    other.close()


def test_missing_bus_socket_fails_at_once_with_enoent(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(DBusError) as exc:
        Systemd(f"unix:path={tmp_path}/nothing", timeout=2).get_unit("init.scope")
    assert exc.value.errno == errno.ENOENT
    assert exc.value.name is None
    assert time.monotonic() - t0 < 0.5


def test_socket_without_listener_fails_with_econnrefused(tmp_path):
    path = str(tmp_path / "sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)  # bound, never listening
    try:
        with pytest.raises(DBusError) as exc:
            Systemd(f"unix:path={path}", timeout=2).get_unit("init.scope")
        assert exc.value.errno == errno.ECONNREFUSED
    finally:
        s.close()


def test_bus_that_never_answers_times_out_within_timeout(tmp_path):
    path = str(tmp_path / "sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(1)  # accepts into the backlog, never speaks
    try:
        t0 = time.monotonic()
        with pytest.raises(DBusError) as exc:
            Systemd(f"unix:path={path}", timeout=0.5).get_unit("init.scope")
        assert exc.value.errno == errno.ETIMEDOUT
        assert time.monotonic() - t0 < 1.5
    finally:
        s.close()


def _container_pid_of(testbed, comm):
    """Host PID of the container's process named *comm*."""
    want = os.readlink(f"/proc/{testbed.leader}/ns/pid")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != want:
                continue
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == comm:
                    return int(entry)
        except OSError:
            continue
    raise AssertionError(f"{comm} not found in the container")


def test_stuck_bus_call_returns_within_timeout_and_connection_recovers(testbed):
    sd = Systemd(testbed.address, timeout=0.5)
    sd.get_unit("init.scope")
    bus = _container_pid_of(testbed, "dbus-daemon")
    os.kill(bus, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(DBusError) as exc:
            sd.get_unit("init.scope")
        elapsed = time.monotonic() - t0
        assert exc.value.errno == errno.ETIMEDOUT
        assert 0.5 <= elapsed < 1.5
        t0 = time.monotonic()
        with pytest.raises(DBusError) as exc:
            Systemd(testbed.address, timeout=0.5).get_unit("init.scope")
        assert exc.value.errno == errno.ETIMEDOUT
        assert time.monotonic() - t0 < 1.5
    finally:
        os.kill(bus, signal.SIGCONT)
    # the late reply to the timed-out call is skipped, not taken for this one
    assert sd.get_unit("flux-pam-no-such.service") is None
    assert sd.get_unit("init.scope") == unit_path("init.scope")
    sd.close()


SCOPE_SCRIPT = """
import subprocess, sys
from flux_pam_service.systemd.client import Systemd
child = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
name = f"flux-pam-{child.pid}.scope"
with Systemd(timeout=5) as sd:
    result = sd.wait_job(sd.start_transient_scope(name, "user-1000.slice",
                                                  [child.pid]), 10)
    procs = sd.unit_processes(name)
print(name, result, child.pid, procs[0][0], procs[0][1], sep="\\n")
"""


def test_transient_scope_moves_container_pid_into_user_slice(testbed, sd, alice):
    p = testbed.run(["python3", "-c", SCOPE_SCRIPT], env={"PYTHONPATH": testbed.repo})
    assert p.returncode == 0, p.stderr
    name, result, pid, cgroup, scope_pid = p.stdout.split("\n")[:5]
    assert result == "done"
    assert cgroup == f"/user.slice/user-1000.slice/{name}"
    assert scope_pid == pid
    # the scope outlives the process that made it; the slice state shows it
    us = UserSlice(sd, ALICE, "alice", linger_dir="/nonexistent")
    assert name in us.state()["scopes"]
    assert sd.unit_property(name, "Slice", "org.freedesktop.systemd1.Scope") == (
        "user-1000.slice"
    )
    us.teardown(kill=True, grace=5)
    assert sd.get_unit(name) is None  # an empty scope is garbage-collected

"""UserSlice against the real systemd 252 of the test bed."""

import os
import subprocess
import time

import pytest
from bed import ALICE, container_path

from flux_pam_service.systemd import properties
from flux_pam_service.systemd.user_slice import LingerError, SurvivorsError, UserSlice

SLICE = "org.freedesktop.systemd1.Slice"
PROPS = {
    "AllowedCPUs": "0-1,9",
    "AllowedMemoryNodes": "0",
    "DeviceAllow": "/dev/null rw,/dev/zero r",
    "MemoryMax": "1073741824",
}
IGNORE_TERM = [
    "python3",
    "-c",
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "time.sleep(600)",
]


@pytest.fixture
def us(testbed, sd, alice):
    logged = []
    s = UserSlice(
        sd,
        ALICE,
        "alice",
        log=lambda level, msg: logged.append((level, msg)),
        linger_dir=container_path(testbed, "/var/lib/systemd/linger"),
        job_timeout=20,
    )
    s.logged = logged
    return s


def slice_props(sd):
    p = sd.unit_properties(f"user-{ALICE}.slice", SLICE)
    return {
        "AllowedCPUs": properties.bitmap_to_ids(p["AllowedCPUs"]),
        "AllowedMemoryNodes": properties.bitmap_to_ids(p["AllowedMemoryNodes"]),
        "DevicePolicy": p["DevicePolicy"],
        "DeviceAllow": set(p["DeviceAllow"]),
        "MemoryMax": p["MemoryMax"],
    }


def assert_reverted(sd):
    assert slice_props(sd) == {
        "AllowedCPUs": set(),
        "AllowedMemoryNodes": set(),
        "DevicePolicy": "auto",
        "DeviceAllow": set(),
        "MemoryMax": properties.UINT64_MAX,
    }


def settled_processes(us, timeout=3.0):
    """The slice's processes once systemd's own stop helpers are done.

    Stopping user@UID.service makes systemd stop user-runtime-dir@UID.service
    (StopWhenUnneeded) a moment later; its ExecStop runs in the slice.
    """
    deadline = time.monotonic() + timeout
    while True:
        procs = us.processes()
        helpers = [p for p in procs if "/user-runtime-dir@" in p[0]]
        if not helpers or time.monotonic() > deadline:
            return procs
        time.sleep(0.05)


def active(sd, unit):
    return sd.unit_property(unit, "ActiveState")


def test_apply_sets_properties_that_read_back(us, sd):
    us.apply(PROPS)
    assert slice_props(sd) == {
        "AllowedCPUs": {0, 1, 9},
        "AllowedMemoryNodes": {0},
        "DevicePolicy": "closed",
        "DeviceAllow": {("/dev/null", "rw"), ("/dev/zero", "r")},
        "MemoryMax": 1073741824,
    }


def test_apply_twice_is_idempotent_and_replaces_devices(us, sd):
    us.apply(PROPS)
    us.apply(PROPS)
    assert slice_props(sd)["DeviceAllow"] == {("/dev/null", "rw"), ("/dev/zero", "r")}
    us.apply(dict(PROPS, DeviceAllow="/dev/full rw", AllowedCPUs="1"))
    got = slice_props(sd)
    assert got["DeviceAllow"] == {("/dev/full", "rw")}
    assert got["AllowedCPUs"] == {1}


def test_apply_of_a_union_without_devices_drops_the_old_ones(us, sd):
    # the mapper names no DeviceAllow once the union has no GPU left
    us.apply(PROPS)
    no_gpu = {k: v for k, v in PROPS.items() if k != "DeviceAllow"}
    us.apply(no_gpu)
    got = slice_props(sd)
    assert got["DeviceAllow"] == set()
    assert got["DevicePolicy"] == "closed"


def test_apply_since_sends_only_what_changed(us, sd):
    us.prepare(PROPS)
    fewer = dict(PROPS, AllowedCPUs="1")
    assert us.apply(fewer, since=PROPS) is False  # no device property sent
    got = slice_props(sd)
    assert got["AllowedCPUs"] == {1}
    assert got["DeviceAllow"] == {("/dev/null", "rw"), ("/dev/zero", "r")}
    assert got["DevicePolicy"] == "closed" and got["MemoryMax"] == 1073741824
    other = dict(fewer, DeviceAllow="/dev/zero r")
    assert us.apply(other, since=fewer) is True
    assert slice_props(sd)["DeviceAllow"] == {("/dev/zero", "r")}


def test_apply_keeps_mapper_device_policy(us, sd):
    us.apply(dict(PROPS, DevicePolicy="strict"))
    assert slice_props(sd)["DevicePolicy"] == "strict"


def test_apply_refuses_bad_props_and_changes_nothing(us, sd):
    us.apply(PROPS)
    with pytest.raises(ValueError, match="CPUWeight"):
        us.apply({"AllowedCPUs": "0", "CPUWeight": "10"})
    assert slice_props(sd)["AllowedCPUs"] == {0, 1, 9}


def test_a_memory_limit_alone_leaves_the_slice_unconfined(us, sd):
    us.apply(PROPS)
    us.apply({"MemoryMax": "536870912"})
    got = slice_props(sd)
    assert got["AllowedCPUs"] == set() and got["AllowedMemoryNodes"] == set()
    assert got["DeviceAllow"] == set() and got["DevicePolicy"] == "auto"
    assert got["MemoryMax"] == 536870912


def test_a_limit_the_properties_no_longer_set_is_reverted(us, sd):
    us.apply(dict(PROPS, MemoryHigh="1073741824"))
    us.apply({k: v for k, v in PROPS.items() if k != "MemoryMax"})
    assert slice_props(sd)["MemoryMax"] == properties.UINT64_MAX
    high = sd.unit_property(f"user-{ALICE}.slice", "MemoryHigh", SLICE)
    assert high == properties.UINT64_MAX


def test_percent_memory_limit_reads_back_as_bytes(us, sd):
    us.apply({"MemoryHigh": "50%"})
    high = sd.unit_property(f"user-{ALICE}.slice", "MemoryHigh", SLICE)
    assert 0 < high < properties.UINT64_MAX


def test_prepare_applies_then_starts_user_manager(us, sd):
    us.prepare(PROPS)
    assert active(sd, us.service) == "active"
    assert active(sd, us.slice) == "active"
    assert slice_props(sd)["AllowedCPUs"] == {0, 1, 9}
    # the user manager runs inside the constrained slice
    cgroups = {cg for cg, _, _ in sd.unit_processes(us.slice)}
    assert any(f"/{us.slice}/{us.service}/" in cg for cg in cgroups)


def test_prepare_twice_is_idempotent(us, sd):
    us.prepare(PROPS)
    pid = sd.unit_property(us.service, "MainPID", "org.freedesktop.systemd1.Service")
    us.prepare(PROPS)
    assert active(sd, us.service) == "active"
    assert (
        sd.unit_property(us.service, "MainPID", "org.freedesktop.systemd1.Service")
        == pid
    )


def test_prepare_without_props_leaves_slice_unconstrained(us, sd):
    us.prepare(None)
    assert active(sd, us.service) == "active"
    assert_reverted(sd)


def test_prepare_refuses_lingering_user_by_file(testbed, us, sd):
    testbed.run(["loginctl", "enable-linger", "alice"])
    try:
        with pytest.raises(LingerError, match="alice.*linger"):
            us.prepare(PROPS)
        # nothing was applied
        assert_reverted(sd)
    finally:
        testbed.run(["loginctl", "disable-linger", "alice"])


def test_check_linger_asks_logind_when_file_is_not_visible(testbed, sd, alice):
    testbed.run(["loginctl", "enable-linger", "alice"])
    try:
        # a linger_dir that does not hold alice's file: logind must still say so
        us = UserSlice(sd, ALICE, "alice", linger_dir="/nonexistent")
        with pytest.raises(LingerError, match="logind"):
            us.check_linger()
    finally:
        testbed.run(["loginctl", "disable-linger", "alice"])
    UserSlice(sd, ALICE, "alice", linger_dir="/nonexistent").check_linger()


def test_prepare_logs_but_survives_user_manager_failure(testbed, us, sd):
    # a user without a passwd entry: user@.service fails to start
    nouser = UserSlice(sd, 4242, "nouser", log=us.log, linger_dir="/nonexistent")
    try:
        nouser.prepare({"AllowedCPUs": "0"})
        assert any("user@4242.service" in m for _, m in us.logged)
    finally:
        nouser.teardown()
        sd.reset_failed_unit("user-runtime-dir@4242.service")


def test_teardown_without_kill_stops_user_manager_and_reverts(us, sd, spawn):
    us.prepare(PROPS)
    spawn(us.slice, ["sleep", "600"])
    us.teardown(kill=False)
    assert sd.unit_property(us.service, "ActiveState") == "inactive"
    assert_reverted(sd)
    # the orphan was left alone
    cmds = [cmd for _, _, cmd in settled_processes(us)]
    assert "sleep 600" in cmds


def test_teardown_with_kill_empties_slice_with_sigterm(us, sd, spawn):
    us.prepare(PROPS)
    spawn(us.slice, ["sleep", "600"])
    t0 = time.monotonic()
    us.teardown(kill=True, grace=10)
    assert time.monotonic() - t0 < 5
    assert settled_processes(us) == []
    assert sd.unit_property(us.service, "ActiveState") == "inactive"
    assert sd.unit_property(us.service, "ActiveState") != "failed"
    assert_reverted(sd)
    assert not any("SIGKILL" in m for _, m in us.logged)


def test_teardown_kills_sigterm_ignorer_with_sigkill(us, sd, spawn):
    us.prepare(PROPS)
    spawn(us.slice, IGNORE_TERM)
    time.sleep(0.3)  # let python install its handler
    t0 = time.monotonic()
    us.teardown(kill=True, grace=1.0)
    elapsed = time.monotonic() - t0
    assert settled_processes(us) == []
    assert 1.0 <= elapsed < 5
    assert any("SIGKILL" in m for _, m in us.logged)
    assert_reverted(sd)


def test_release_shrinks_the_slice_and_keeps_the_user_manager(us, sd):
    us.prepare(PROPS)
    invocation = sd.unit_property(us.service, "InvocationID")
    assert us.release(kill=True, grace=10) is True
    assert us.apply(properties.idle(PROPS), since=PROPS) is True  # DeviceAllow
    assert active(sd, us.service) == "active"
    assert slice_props(sd) == {
        "AllowedCPUs": {0},
        "AllowedMemoryNodes": {0},
        "DevicePolicy": "closed",
        "DeviceAllow": set(),
        "MemoryMax": 1073741824,
    }
    # a job within the delay reuses it; after the delay, the teardown stops it
    us.apply(PROPS)
    assert sd.unit_property(us.service, "InvocationID") == invocation
    us.teardown(kill=True, grace=10)
    assert active(sd, us.service) == "inactive"
    assert_reverted(sd)


def test_release_with_processes_to_kill_is_the_teardown(us, sd, spawn):
    us.prepare(PROPS)
    spawn(us.slice, ["sleep", "600"])
    assert us.release(kill=True, grace=10) is False
    assert settled_processes(us) == []
    assert active(sd, us.service) == "inactive"
    assert_reverted(sd)


def test_release_without_kill_leaves_what_the_user_left(us, sd, spawn):
    us.prepare(PROPS)
    spawn(us.slice, ["sleep", "600"])
    assert us.release(kill=False) is True
    assert active(sd, us.service) == "active"
    assert "sleep 600" in [cmd for _, _, cmd in us.orphans()]


def test_teardown_with_kill_but_no_orphans_sends_no_signal(us, sd):
    us.prepare(PROPS)
    us.teardown(kill=True, grace=1.0)
    assert not any("SIGTERM" in m for _, m in us.logged)
    assert settled_processes(us) == []
    assert_reverted(sd)


def test_teardown_twice_is_idempotent(us, sd, spawn):
    us.prepare(PROPS)
    spawn(us.slice, ["sleep", "600"])
    us.teardown(kill=True, grace=5)
    us.teardown(kill=True, grace=5)
    assert settled_processes(us) == []
    assert_reverted(sd)


def test_teardown_of_never_prepared_user_is_harmless(sd, testbed):
    us = UserSlice(sd, 4343, "ghost", linger_dir="/nonexistent")
    us.teardown(kill=True, grace=1)
    us.teardown(kill=True, grace=1)


def _freezer():
    path = "/sys/fs/cgroup/freezer"
    if not os.path.exists(os.path.join(path, "cgroup.procs")):
        pytest.skip("no cgroup v1 freezer on the host to make an unkillable process")
    return path


def _host_pid(testbed, unit):
    """The host PID of a transient service's main process."""
    out = subprocess.run(
        ["systemctl", "-M", testbed.name, "show", "-P", "MainPID", unit],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    cpid = int(out)
    # find the host process whose innermost NSpid is cpid, under the leader
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                ns = next(ln for ln in f if ln.startswith("NSpid:")).split()[1:]
            same_ns = os.readlink(f"/proc/{entry}/ns/pid") == os.readlink(
                f"/proc/{testbed.leader}/ns/pid"
            )
        except (OSError, StopIteration):
            continue
        if same_ns and ns[-1] == str(cpid):
            return int(entry), cpid
    raise AssertionError(f"no host pid for {unit} ({cpid})")


def test_teardown_reports_process_that_survives_sigkill(testbed, us, sd, spawn):
    # A task frozen by the (host's) cgroup v1 freezer cannot act on SIGKILL
    # until thawed: a real survivor, as a process stuck in D state would be.
    freezer = _freezer()
    us.prepare(PROPS)
    unit = spawn(us.slice, ["sleep", "600"])
    host_pid, cpid = _host_pid(testbed, unit)
    cg = os.path.join(freezer, f"flux-pam-test-{os.getpid()}")
    os.makedirs(cg, exist_ok=True)
    try:
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write(str(host_pid))
        with open(os.path.join(cg, "freezer.state"), "w") as f:
            f.write("FROZEN")
        with pytest.raises(SurvivorsError) as exc:
            us.teardown(kill=True, grace=0.5)
        assert exc.value.survivors == [(cpid, "sleep 600")]
        assert f"{cpid} (sleep 600)" in str(exc.value)
        # survivors stay confined; user@ is stopped anyway
        assert slice_props(sd)["AllowedCPUs"] == {0, 1, 9}
        assert sd.unit_property(us.service, "ActiveState") == "inactive"
    finally:
        with open(os.path.join(cg, "freezer.state"), "w") as f:
            f.write("THAWED")
        for _ in range(100):
            try:
                os.kill(host_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        os.rmdir(cg)  # empty once the thawed process has died of its SIGKILL
    # once it is gone, teardown completes
    us.teardown(kill=True, grace=2)
    assert_reverted(sd)


def test_state_reports_units_processes_and_constraints(us, sd, spawn):
    us.prepare(PROPS)
    spawn(us.slice, ["sleep", "600"])
    st = us.state()
    assert st["slice_state"] == "active"
    assert st["service_state"] == "active"
    assert st["orphans"] == 1
    assert st["processes"] >= 2
    assert st["AllowedCPUs"] == "0-1,9"
    assert st["AllowedMemoryNodes"] == "0"
    assert st["DevicePolicy"] == "closed"
    assert st["DeviceAllow"] == [["/dev/null", "rw"], ["/dev/zero", "r"]]
    us.teardown(kill=True, grace=5)
    settled_processes(us)
    st = us.state()
    assert (st["processes"], st["service_state"], st["AllowedCPUs"]) == (
        0,
        "inactive",
        "",
    )

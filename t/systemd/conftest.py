"""Fixtures for the systemd tier: a real systemd 252 in a systemd-nspawn test bed.

``testbed`` (session): reuses the test bed named by $FLUX_PAM_TESTBED (as
t/runtests.py sets it after `t/testbed.py up`), or boots a private one and
takes it down at the end.  The whole tier is skipped, with the reason, when
`t/testbed.py can-run` says a test bed cannot run here.
"""

import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import testbed as tb  # noqa: E402


@pytest.fixture(scope="session")
def testbed():
    name = os.environ.get("FLUX_PAM_TESTBED")
    if name:
        bed = tb.attach(name)
        if bed is None:
            pytest.fail(f"FLUX_PAM_TESTBED={name} is set but that test bed is not up")
        yield bed
        return
    ok, why = tb.can_run()
    if not ok:
        pytest.skip(f"systemd tier: {why}")
    bed = tb.up(f"flux-pam-pytest-{os.getpid()}")
    try:
        yield bed
    finally:
        tb.down(bed.name)


# ------------------------------------------------------------------ helpers

ALICE = 1000
BOB = 1001


@pytest.fixture
def sd(testbed):
    """A D-Bus client of the container's systemd (from the host, as root)."""
    from flux_pam_service.systemd import Systemd

    client = Systemd(testbed.address, timeout=5.0)
    yield client
    client.close()


def container_path(testbed, path):
    """*path* inside the container, as the host sees it."""
    return testbed.root + path


def reset_user(testbed, uid, user):
    """Put a user's slice back to nothing: no processes, no units, no linger."""
    from flux_pam_service import properties
    from flux_pam_service.systemd import DBusError, Systemd

    testbed.run(["rm", "-f", f"/var/lib/systemd/linger/{user}"])
    with Systemd(testbed.address, timeout=10.0) as sd:
        if sd.get_unit(f"user-{uid}.slice"):
            sd.kill_unit(f"user-{uid}.slice", "all", 9)
        for _ in range(100):
            if not sd.unit_processes(f"user-{uid}.slice"):
                break
            time.sleep(0.05)
        try:
            sd.wait_job(sd.stop_unit(f"user@{uid}.service"), 10)
            sd.reset_failed_unit(f"user@{uid}.service")
        except DBusError:
            pass
        sd.set_unit_properties(f"user-{uid}.slice", properties.REVERT)


@pytest.fixture
def alice(testbed):
    """alice's slice reset before and after the test; yields (uid, name)."""
    reset_user(testbed, ALICE, "alice")
    yield ALICE, "alice"
    reset_user(testbed, ALICE, "alice")


class Spawner:
    """Start long-running processes in a slice as transient services."""

    def __init__(self, testbed):
        self.testbed = testbed
        self.units = []

    def __call__(self, slice_, argv, uid="alice"):
        unit = f"flux-pam-test-{os.getpid()}-{len(self.units)}.service"
        p = subprocess.run(
            [
                "systemd-run",
                "-M",
                self.testbed.name,
                "--quiet",
                "--collect",
                f"--unit={unit}",
                f"--slice={slice_}",
                f"--uid={uid}",
                "--service-type=exec",
                "--",
                *argv,
            ],
            capture_output=True,
            text=True,
        )
        assert p.returncode == 0, p.stderr
        self.units.append(unit)
        return unit

    def cleanup(self):
        for unit in self.units:
            subprocess.run(
                ["systemctl", "-M", self.testbed.name, "kill", "-s", "KILL", unit],
                capture_output=True,
            )


@pytest.fixture
def spawn(testbed):
    s = Spawner(testbed)
    yield s
    s.cleanup()

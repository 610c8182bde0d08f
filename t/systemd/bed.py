"""Helpers for the systemd tier (importable: `from bed import ...`).

conftest.py re-exports these names for tests that import them from conftest.
"""

import os
import subprocess
import time

ALICE = 1000
BOB = 1001


def container_path(testbed, path):
    """*path* inside the container, as the host sees it."""
    return testbed.root + path


def reset_user(testbed, uid, user):
    """Put a user's slice back to nothing: no processes, no units, no linger."""
    from flux_pam_service.systemd import properties
    from flux_pam_service.systemd.client import NO_SUCH_UNIT, DBusError, Systemd

    testbed.run(["rm", "-f", f"/var/lib/systemd/linger/{user}"])
    with Systemd(testbed.address, timeout=10.0) as sd:
        try:
            if sd.get_unit(f"user-{uid}.slice"):
                sd.kill_unit(f"user-{uid}.slice", "all", 9)
        except DBusError as exc:
            # systemd may collect the emptied slice between the two calls
            if exc.name != NO_SUCH_UNIT:
                raise
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

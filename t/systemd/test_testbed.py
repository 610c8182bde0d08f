"""The test bed itself: a booted systemd reachable from the host and inside."""

import subprocess


def test_testbed_manager_is_running(testbed):
    out = subprocess.run(
        [
            "busctl",
            f"--address={testbed.address}",
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "SystemState",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # booted: "running", or "degraded" if an earlier test left a failed unit
    assert out.strip() in ('s "running"', 's "degraded"')


def test_testbed_run_passes_exit_code_and_output(testbed):
    p = testbed.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert p.returncode == 7
    assert p.stdout == "out\n"
    assert "err" in p.stderr


def test_testbed_has_users_flux_alice_bob(testbed):
    p = testbed.run(["sh", "-c", "id -u alice; id -u bob; id -u flux"])
    alice, bob, flux = p.stdout.split()
    assert (alice, bob) == ("1000", "1001")
    assert 0 < int(flux) < 1000


def test_testbed_mounts_repo_read_only(testbed):
    p = testbed.run(["touch", f"{testbed.repo}/t/.write-probe"])
    assert p.returncode != 0
    p = testbed.run(
        ["test", "-f", f"{testbed.repo}/flux_pam_service/systemd/properties.py"]
    )
    assert p.returncode == 0


def test_testbed_systemctl_machine_option_reaches_container(testbed):
    out = subprocess.run(
        ["systemctl", "-M", testbed.name, "show", "-P", "Id", "user@1000.service"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "user@1000.service"


def test_testbed_repo_is_readable_by_every_uid_at_shared_repo(testbed):
    # the checkout may be below a directory only root may enter
    path = f"{testbed.shared_repo}/flux_pam_service/systemd/properties.py"
    p = testbed.run(["test", "-r", path], uid="alice")
    assert p.returncode == 0, f"alice cannot read {path}"
    p = testbed.run(["touch", f"{testbed.shared_repo}/t/.write-probe"])
    assert p.returncode != 0

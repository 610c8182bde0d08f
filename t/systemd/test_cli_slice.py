"""`flux pam slice show|reset` against the real systemd of the test bed.

The command runs in this process as root, talking to the container's systemd
through DBUS_SYSTEM_BUS_ADDRESS; no broker is reachable, so it works as it
does on a node without the pam module.
"""

import json
import os

import pytest
from bed import ALICE, container_path
from test_slice import PROPS, assert_reverted, settled_processes

from flux_pam_service.cli import main
from flux_pam_service.systemd.user_slice import UserSlice

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="flux pam slice is root only")


@pytest.fixture
def us(testbed, sd, alice):
    """alice's slice, to set up and inspect what the command does."""
    return UserSlice(
        sd,
        ALICE,
        "alice",
        linger_dir=container_path(testbed, "/var/lib/systemd/linger"),
        job_timeout=20,
    )


@pytest.fixture
def env(testbed, monkeypatch, tmp_path):
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", testbed.address)
    monkeypatch.setenv("FLUX_URI", f"local://{tmp_path}/nobroker")
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    return str(locks)


def test_slice_show_reports_states_and_constraints(env, us, capsys):
    us.prepare(PROPS)
    capsys.readouterr()
    assert main(["slice", "show", "--json", "--lock-dir", env, str(ALICE)]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["systemd"]["service_state"] == "active"
    assert view["systemd"]["AllowedCPUs"] == "0-1,9"
    assert view["systemd"]["DevicePolicy"] == "closed"
    assert view["marker"] is False
    assert view["module"]["loaded"] is False


def test_slice_reset_stops_user_manager_and_reverts_but_kills_nothing(
    env, us, sd, spawn, capsys
):
    us.prepare(PROPS)
    spawn(us.slice, ["sleep", "600"])
    assert main(["slice", "reset", "--lock-dir", env, str(ALICE)]) == 0
    assert "reset" in capsys.readouterr().out
    assert sd.unit_property(us.service, "ActiveState") == "inactive"
    assert_reverted(sd)
    assert "sleep 600" in [cmd for _, _, cmd in settled_processes(us)]


def test_slice_reset_refuses_marked_user_then_force_clears_marker(env, us, sd, capsys):
    us.prepare(PROPS)
    marker = os.path.join(env, f"uid.{ALICE}.active")
    with open(marker, "w"):
        pass
    assert main(["slice", "reset", "--lock-dir", env, str(ALICE)]) == 1
    assert "has an active job here" in capsys.readouterr().err
    assert sd.unit_property(us.service, "ActiveState") == "active"  # untouched
    assert main(["slice", "reset", "--force", "--lock-dir", env, str(ALICE)]) == 0
    assert not os.path.exists(marker)
    assert sd.unit_property(us.service, "ActiveState") == "inactive"
    assert_reverted(sd)


def test_slice_reset_kill_empties_slice(env, us, sd, spawn):
    us.prepare(PROPS)
    spawn(us.slice, ["sleep", "600"])
    rc = main(
        ["slice", "reset", "--kill", "--grace", "5s", "--lock-dir", env, str(ALICE)]
    )
    assert rc == 0
    assert settled_processes(us) == []
    assert_reverted(sd)

"""etc/polkit-1/rules.d/60-flux-pam.rules against real polkitd and systemd.

The rule is installed in the test bed (its / is a throwaway overlay) and the
calls are made inside the container as users flux and bob, through
polkit_probe.py.
"""

import json
import os
import shutil
import subprocess

import pytest
from bed import container_path

RULE = "etc/polkit-1/rules.d/60-flux-pam.rules"
DENIED = (
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
    "org.freedesktop.DBus.Error.AccessDenied",
)

# what the broker module does for alice (uid 1000): each must be allowed
LIFECYCLE = [
    ["set_unit_properties", "user-1000.slice", [["AllowedCPUs", "ay", [1]]]],
    ["start_unit", "user@1000.service"],
    ["kill_unit", "user@1000.service", "all", 18],  # SIGCONT: harmless
    ["kill_unit", "user-1000.slice", "all", 18],
    ["reset_failed_unit", "user@1000.service"],  # while loaded: else NoSuchUnit
    ["stop_unit", "user@1000.service"],
    ["set_unit_properties", "user-1000.slice", [["AllowedCPUs", "ay", []]]],
]

# each must be refused; all are harmless if they were not
REFUSED = {
    "start another service": ["start_unit", "systemd-journald.service"],
    "kill another service": ["kill_unit", "dbus.service", "all", 18],
    "stop another user's runtime dir": ["stop_unit", "user-runtime-dir@1001.service"],
    "set-property on system.slice": [
        "set_unit_properties",
        "system.slice",
        [["AllowedCPUs", "ay", []]],
    ],
    "set-property on user@": [
        "set_unit_properties",
        "user@1000.service",
        [["AllowedCPUs", "ay", []]],
    ],
    "start a user slice": ["start_unit", "user-1000.slice"],
    "stop a user slice": ["stop_unit", "user-1000.slice"],
    "reset-failed a user slice": ["reset_failed_unit", "user-1000.slice"],
    "root's user manager": ["start_unit", "user@0.service"],
    "root's slice": [
        "set_unit_properties",
        "user-0.slice",
        [["AllowedCPUs", "ay", []]],
    ],
    "leading zero uid": ["start_unit", "user@01000.service"],
    "StartTransientUnit": [
        "start_transient_scope",
        "flux-pam-probe.scope",
        "user-1000.slice",
        [1],
    ],
    "restart verb": [
        "call_manager",
        "RestartUnit",
        "ss",
        "user@1000.service",
        "replace",
    ],
    "unit files: revert": [
        "call_manager",
        "RevertUnitFiles",
        "as",
        ["user-1000.slice"],
    ],
    "daemon-reload": ["call_manager", "Reload", ""],
}


@pytest.fixture(scope="module")
def rule(testbed):
    dest = container_path(testbed, "/etc/polkit-1/rules.d/60-flux-pam.rules")
    shutil.copy(os.path.join(testbed.repo, RULE), dest)
    subprocess.run(
        ["systemctl", "-M", testbed.name, "restart", "polkit.service"], check=True
    )
    yield
    os.unlink(dest)
    subprocess.run(
        ["systemctl", "-M", testbed.name, "restart", "polkit.service"], check=True
    )


@pytest.fixture
def alice_active(sd, alice):
    """alice's user manager running (started by root), so her units are loaded
    and a refusal comes from polkit, not from NoSuchUnit."""
    assert sd.wait_job(sd.start_unit("user@1000.service"), 20) == "done"
    yield


def probe(testbed, user, ops):
    # run as *user*: from the copy of the repo every uid can reach
    p = testbed.run(
        ["python3", f"{testbed.shared_repo}/t/systemd/polkit_probe.py"],
        uid=user,
        env={"PYTHONPATH": testbed.shared_repo},
        input=json.dumps(ops),
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_without_the_rule_flux_is_refused(testbed, alice):
    # the rule is what grants the access (runs first: the rule
    # fixture is set up by the first test that asks for it)
    (result,) = probe(testbed, "flux", LIFECYCLE[:1])
    assert result in DENIED


def test_flux_may_run_alice_slice_lifecycle(testbed, rule, alice):
    assert probe(testbed, "flux", LIFECYCLE) == ["ok"] * len(LIFECYCLE)


def test_flux_may_prepare_and_teardown_through_user_slice(testbed, sd, rule, alice):
    props = {"AllowedCPUs": "0", "DeviceAllow": "/dev/null rw"}
    ops = [
        ["UserSlice.prepare", 1000, props],
        ["UserSlice.prepare", 1000, props],
        ["UserSlice.teardown", 1000],
        ["UserSlice.teardown", 1000],
    ]
    out = probe(testbed, "flux", ops[:2])
    assert out == ["ok", "ok"]
    assert sd.unit_property("user@1000.service", "ActiveState") == "active"
    assert (
        sd.unit_property(
            "user-1000.slice", "DevicePolicy", "org.freedesktop.systemd1.Slice"
        )
        == "closed"
    )
    assert probe(testbed, "flux", ops[2:]) == ["ok", "ok"]
    assert sd.unit_property("user@1000.service", "ActiveState") == "inactive"
    assert (
        sd.unit_property(
            "user-1000.slice", "DevicePolicy", "org.freedesktop.systemd1.Slice"
        )
        == "auto"
    )


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_flux_is_refused(testbed, rule, alice_active, case):
    (result,) = probe(testbed, "flux", [REFUSED[case]])
    assert result in DENIED


def test_another_user_is_refused_every_lifecycle_operation(testbed, rule, alice_active):
    out = probe(testbed, "bob", LIFECYCLE)
    assert all(r in DENIED for r in out), out

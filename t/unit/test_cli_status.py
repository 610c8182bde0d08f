"""`flux pam status`: table rendering and the view without the module.

The path through a live broker is covered in the broker tier; here the
rendering of pam.status responses (the documented RPC shape) and the
fallback when no broker can be reached.
"""

import json

import pytest

from flux_pam_service.cli import main, status

NOW = 1_700_000_000.0

RESPONSE = {
    "rank": 3,
    "owner": 999,
    "config": {},
    "users": [
        {
            "uid": 0,
            "active": True,
            "admitted": True,
            "jobs": [
                {"id": 1, "running": True, "core": "0-1", "gpu": ""},
                {"id": 2, "running": False, "core": "2", "gpu": "0"},
            ],
            "union": {"core": "0-2", "gpu": "0"},
            "slice": {  # UserSlice.state()
                "uid": 0,
                "user": "root",
                "slice": "user-0.slice",
                "slice_state": "active",
                "service": "user@0.service",
                "service_state": "inactive",
                "scopes": ["flux-pam-41.scope", "flux-pam-77.scope"],
                "processes": 3,
                "orphans": 2,
                "AllowedCPUs": "0-2",
                "AllowedMemoryNodes": "0",
                "DevicePolicy": "closed",
                "DeviceAllow": [["/dev/nvidia0", "rw"]],
                "MemoryHigh": 2**64 - 1,
                "MemoryMax": 2**64 - 1,
            },
            "enforcement": {
                "state": "enforced",
                "enforced": True,
                "missing": [],
                "reasons": [],
                "effective": {"cpus": "0-2", "mems": "0", "device_policy": "closed"},
            },
            "logins": [
                {
                    "scope": "flux-pam-41.scope",
                    "slice": "user-0.slice",
                    "cpus": "0-2",
                    "mems": "0",
                    "memory_max": "max",
                },
                {"scope": "flux-pam-77.scope", "slice": "user-0.slice"},
            ],
            "last_action": {"action": "apply", "time": NOW - 125, "result": "ok"},
            "errors": [],
        },
        {
            "uid": 4242424,
            "active": False,
            "admitted": False,
            "jobs": [],
            "union": {"core": "", "gpu": ""},
            "slice": None,
            "last_action": {
                "action": "teardown",
                "time": NOW - 3,
                "result": "EBUSY",
            },
            "errors": ["pids 12 (sleep) survive SIGKILL"],
        },
    ],
    "pending": 0,
    "systemd": "ok",
}


def test_rows_show_jobs_union_units_scopes_and_last_action_age():
    r = status.rows(RESPONSE, now=NOW)
    assert r[0] == [
        "3",
        "root",
        "1/2",
        "0-2",
        "0",
        "yes",
        "active",
        "inactive",
        "2",
        "apply 2m ago",
    ]
    assert r[1:4] == [
        ["  kernel: CPUs 0-2, memory nodes 0"],
        [
            "  login flux-pam-41.scope in user-0.slice: CPUs 0-2, memory nodes 0,"
            " memory.max max"
        ],
        ["  login flux-pam-77.scope in user-0.slice: no cpuset or memory files"],
    ]
    assert r[4] == [
        "3",
        "4242424",
        "0/0",
        "-",
        "-",
        "-",
        "-",
        "-",
        "-",
        "teardown (EBUSY) 3s ago",
    ]
    assert r[5] == ["  error: pids 12 (sleep) survive SIGKILL"]


NOT_ENFORCED = {
    "state": "not-enforced",
    "enforced": False,
    "missing": ["CPU", "memory node"],
    "reasons": [
        "CPU: the cpuset controller is not enabled for the slice"
        " (cgroup.controllers: pids)",
        "memory node: the cpuset controller is not enabled for the slice"
        " (cgroup.controllers: pids)",
    ],
    "effective": {"device_policy": "closed"},
}


def one_user(enforcement, node=None):
    user = dict(RESPONSE["users"][0], enforcement=enforcement)
    return dict(RESPONSE, users=[user], enforcement=node or enforcement)


def test_a_user_whose_union_is_not_enforced_is_marked_and_explained():
    r = status.rows(one_user(NOT_ENFORCED), now=NOW)
    assert r[0][status.HEADER.index("ENFORCED")] == "no"
    assert r[1] == [
        "  not enforced: CPU, memory node (CPU: the cpuset controller is not"
        " enabled for the slice (cgroup.controllers: pids); memory node: the"
        " cpuset controller is not enabled for the slice (cgroup.controllers:"
        " pids)): logins refused"
    ]
    # the kernel's and the logins' lines follow; the rank's line would say
    # the same again
    assert not any(row[0].startswith("rank ") for row in r)


def test_an_unconfined_user_is_marked_as_such():
    unconfined = dict(NOT_ENFORCED, state="unconfined")
    r = status.rows(one_user(unconfined), now=NOW)
    assert r[0][status.HEADER.index("ENFORCED")] == "unconfined"
    assert r[1][0].endswith("logins admitted unconfined (pam.allow-unconfined-logins)")


def test_the_ranks_latest_read_back_is_shown_when_no_user_says_it():
    response = dict(RESPONSE, users=[], enforcement=dict(NOT_ENFORCED, uid=1000))
    r = status.rows(response, now=NOW)
    assert len(r) == 1 and r[0][0].startswith("rank 3: not enforced: CPU, memory")
    unknown = {"state": "unknown"}
    assert status.rows(dict(RESPONSE, users=[], enforcement=unknown)) == []
    r = status.rows(one_user({"state": "unknown"}), now=NOW)
    assert r[0][status.HEADER.index("ENFORCED")] == "?"


def test_table_aligns_columns_under_header():
    text = status.format_table(status.rows(RESPONSE, now=NOW))
    lines = text.splitlines()
    assert lines[0].split() == status.HEADER
    col = lines[0].index("SLICE")
    assert lines[1][col:].startswith("active")
    assert lines[6] == "  error: pids 12 (sleep) survive SIGKILL"


@pytest.mark.parametrize(
    "secs,text", [(0, "0s"), (59, "59s"), (60, "1m"), (7200, "2h"), (90000, "1d")]
)
def test_age_uses_largest_unit(secs, text):
    assert status.age(NOW - secs, now=NOW) == text


def test_resolve_user_accepts_name_and_number():
    assert status.resolve_user("root") == 0
    assert status.resolve_user("1234") == 1234
    with pytest.raises(ValueError, match="no-such-user-x"):
        status.resolve_user("no-such-user-x")


def test_markers_lists_uids_with_active_marker(tmp_path):
    for name in ("uid.1000.active", "uid.1000.lock", "uid.1001.lock", "uid.7.active"):
        (tmp_path / name).write_text("")
    assert status.markers(str(tmp_path)) == {
        "path": str(tmp_path),
        "uids": [7, 1000],
        "denied": {},
    }


def test_markers_show_the_deny_line(tmp_path, capsys):
    (tmp_path / "uid.0.active").write_text("deny: Access denied: CPU confinement\n")
    m = status.markers(str(tmp_path))
    assert m["denied"] == {"0": "Access denied: CPU confinement"}
    status.print_local_view({"markers": m, "systemd": {"units": []}})
    assert "  root: logins refused: Access denied: CPU confinement" in (
        capsys.readouterr().out
    )


def test_markers_reports_unreadable_dir(tmp_path):
    m = status.markers(str(tmp_path / "absent"))
    assert "No such file or directory" in m["error"]


@pytest.fixture
def no_broker(monkeypatch, tmp_path):
    """No broker and no system bus reachable."""
    monkeypatch.setenv("FLUX_URI", f"local://{tmp_path}/nobroker")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/nobus")
    lock = tmp_path / "locks"
    lock.mkdir()
    (lock / "uid.0.active").write_text("")
    return str(lock)


def test_status_without_broker_says_so_and_shows_markers(no_broker, capsys):
    assert main(["status", "--lock-dir", no_broker]) == 1
    out = capsys.readouterr()
    assert "flux-pam status: cannot reach the broker" in out.err
    assert "markers in" in out.out and "root" in out.out
    assert "systemd:" in out.out  # the bus error is reported, not raised


def test_status_json_without_broker_is_the_local_view(no_broker, capsys):
    assert main(["status", "--json", "--lock-dir", no_broker, "root"]) == 1
    view = json.loads(capsys.readouterr().out)
    assert view["markers"]["uids"] == [0]
    assert "error" in view["systemd"]


def test_status_refuses_unknown_user(capsys):
    assert main(["status", "no-such-user-x"]) == 1
    assert "unknown user 'no-such-user-x'" in capsys.readouterr().err


def test_status_rank_and_all_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        main(["status", "-r", "1", "--all"])


def test_status_help_works_without_flux(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["status", "--help"])
    assert exc.value.code == 0
    assert "--all" in capsys.readouterr().out

"""pam_flux through real PAM stacks (pam_wrapper + pam_python + pypamtest)."""

import errno
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

PAM_FLUX = Path(__file__).resolve().parents[2] / "pam" / "pam_flux.py"

USER = "nobody"
UID = pwd.getpwnam(USER).pw_uid
DENIED = f"Access denied: user {USER} has no active jobs on this node"
SETUP_FAILED = f"Access denied: cannot set up a session for user {USER} on this node"

ADMITTED = {"pam.check": {"response": {"admitted": True, "jobs": [1234]}}}
NOT_ADMITTED = {"pam.check": {"response": {"admitted": False, "jobs": []}}}
OWNER = 999
SUB_URI = "ssh://node0/tmp/flux-sub/local-0"
SUB_LOCAL = "local:///tmp/flux-sub/local-0"


def owner_job(ranks="0-1", state=16, uri=SUB_URI, jobid=77):
    return {
        "id": jobid,
        "userid": OWNER,
        "ranks": ranks,
        "state": state,
        "annotations": {"user": {"uri": uri}},
    }


def guest_answers(rig, ranks="0-1", rank="0", allow=True):
    rig.answers(
        rpc={
            **NOT_ADMITTED,
            "job-list.list": {"response": {"jobs": [owner_job(ranks)]}},
        },
        attrs={"rank": rank, "security.owner": str(OWNER)},
        instances={
            SUB_LOCAL: {
                "rpc": {
                    "config.get": {"response": {"access": {"allow-guest-user": allow}}}
                }
            }
        },
    )


# --- account ---------------------------------------------------------------


def test_account_admits_user_with_running_job(rig):
    rig.answers(rpc=ADMITTED)
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_SUCCESS")])
    assert res.errors == []
    assert rig.rpcs() == [("pam.check", {"uid": UID, "max_jobs": 8})]


def test_account_denies_user_without_jobs_with_message_and_log(rig):
    rig.answers(rpc=NOT_ADMITTED)
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert res.errors == [DENIED]
    assert (
        f"access denied for user {USER} (uid={UID}): no active jobs on this node"
        in rig.logs()
    )


def test_account_no_jobs_with_action_ignore_falls_through(rig):
    rig.answers(rpc=NOT_ADMITTED)
    rig.stack(["action_no_jobs=ignore"])
    res = rig.expect(USER, [("account", "IGNORED")])
    assert res.errors == []


def test_account_admits_root_without_asking_the_broker(rig):
    rig.answers(connect={"errno": errno.ECONNREFUSED})
    rig.stack()
    rig.expect("root", [("account", "PAM_SUCCESS")])
    assert rig.rpcs() == []


def test_account_unknown_user(rig):
    rig.answers(rpc=ADMITTED)
    rig.stack()
    rig.expect("no-such-user-here", [("account", "PAM_USER_UNKNOWN")])
    assert rig.rpcs() == []
    assert "user no-such-user-here does not exist" in rig.logs()


def test_account_falls_back_to_job_list_when_module_not_loaded(rig):
    job = {"id": 5, "userid": UID, "ranks": "2-3", "state": 16}
    rig.answers(
        rpc={"job-list.list": {"response": {"jobs": [job]}}}, attrs={"rank": "3"}
    )
    rig.stack()
    rig.expect(USER, [("account", "PAM_SUCCESS")])
    topics = rig.rpcs()
    assert topics[0] == ("pam.check", {"uid": UID, "max_jobs": 8})
    topic, payload = topics[1]
    assert topic == "job-list.list"
    assert payload["constraint"] == {
        "and": [{"userid": [UID]}, {"ranks": ["3"]}, {"states": ["run"]}]
    }


def test_account_job_list_fallback_denies_without_jobs(rig):
    rig.answers(rpc={"job-list.list": {"response": {"jobs": []}}})
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert res.errors == [DENIED]


def test_account_job_in_cleanup_does_not_admit(rig):
    job = {"id": 5, "userid": UID, "ranks": "0", "state": 32}
    rig.answers(rpc={"job-list.list": {"response": {"jobs": [job]}}})
    rig.stack()
    rig.expect(USER, [("account", "PAM_PERM_DENIED")])


@pytest.mark.parametrize(
    "answers",
    [
        {"connect": {"errno": errno.ECONNREFUSED}},
        {"connect": {"errno": errno.ENOENT}},
        {"rpc": {"pam.check": {"errno": errno.EPERM, "error": "guests denied"}}},
        {"rpc": {"pam.check": {"errno": errno.ETIMEDOUT}}},
        {"rpc": {"pam.check": {"response": "garbage"}}},
        {"rpc": {"pam.check": {"response": {"jobs": [1]}}}},
        {"rpc": {"job-list.list": {"errno": errno.EPROTO}}},
        {"rpc": {"job-list.list": {"response": {"jobs": "nope"}}}},
    ],
    ids=[
        "refused",
        "no-socket",
        "eperm",
        "timeout",
        "not-an-object",
        "no-admitted",
        "joblist-error",
        "joblist-garbage",
    ],
)
def test_account_fails_closed_on_broker_failure(rig, answers):
    rig.answers(**answers)
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert res.errors == [DENIED]
    assert any(line.startswith("cannot check jobs of user") for line in rig.logs())


def test_account_generic_failure_ignore_falls_through(rig):
    rig.answers(connect={"errno": errno.ECONNREFUSED})
    rig.stack(["action_generic_failure=ignore"])
    res = rig.expect(USER, [("account", "IGNORED")])
    assert res.errors == []


def test_account_generic_failure_allow_admits_without_slice(rig, tmp_path):
    rig.answers(connect={"errno": errno.ECONNREFUSED})
    rig.config(manage_user_slice=True)
    rig.stack(["action_generic_failure=allow"])
    rig.expect(USER, [("account", "PAM_SUCCESS"), ("open_session", "IGNORED")])


def test_account_denies_when_real_broker_is_unreachable(rig, tmp_path):
    """No stand-in: FLUX_URI names no broker (or flux cannot be imported)."""
    rig.stack(["pythonpath=/opt/flux/lib/python3.11/site-packages"], answers=False)
    res = rig.expect(
        USER,
        [("account", "PAM_PERM_DENIED")],
        env={"FLUX_URI": f"local://{tmp_path}/no-broker"},
    )
    assert res.errors == [DENIED]


def test_account_ignores_other_services_by_default(rig):
    rig.answers(rpc=NOT_ADMITTED)
    rig.stack(service="login")
    rig.expect(USER, [("account", "IGNORED")], service="login")
    assert rig.rpcs() == []


def test_account_service_star_acts_for_any_service(rig):
    rig.answers(rpc=NOT_ADMITTED)
    rig.stack(["service=*"], service="login")
    rig.expect(USER, [("account", "PAM_PERM_DENIED")], service="login")


def test_account_named_service_acts_only_for_it(rig):
    rig.answers(rpc=NOT_ADMITTED)
    rig.stack(["service=login"], service="login")
    rig.expect(USER, [("account", "PAM_PERM_DENIED")], service="login")
    rig.stack(["service=login"], service="sshd")
    rig.expect(USER, [("account", "IGNORED")], service="sshd")


# --- allow-guest-user --------------------------------------------------------


def test_guest_of_multiuser_subinstance_is_admitted_without_slice(rig):
    guest_answers(rig)
    rig.config(manage_user_slice=True)
    rig.stack(["allow-guest-user"])
    rig.expect(USER, [("account", "PAM_SUCCESS"), ("open_session", "IGNORED")])
    topics = [t for t, _ in rig.rpcs()]
    assert topics == ["pam.check", "job-list.list", "config.get"]
    payload = rig.rpcs()[1][1]
    assert payload["constraint"]["and"][0] == {"userid": [OWNER]}


def test_guest_denied_without_allow_guest_user_option(rig):
    guest_answers(rig)
    rig.stack()
    rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert [t for t, _ in rig.rpcs()] == ["pam.check"]


def test_guest_denied_on_rank_other_than_jobs_first(rig):
    guest_answers(rig, ranks="0-1", rank="1")
    rig.stack(["allow-guest-user"])
    rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert "config.get" not in [t for t, _ in rig.rpcs()]


def test_guest_denied_when_subinstance_does_not_allow_guests(rig):
    guest_answers(rig, allow=False)
    rig.stack(["allow-guest-user"])
    rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert "job ƒ2L: access.allow-guest-user not enabled" in rig.logs()  # F58 of 77


def test_guest_denied_when_subinstance_unreachable(rig):
    rig.answers(
        rpc={**NOT_ADMITTED, "job-list.list": {"response": {"jobs": [owner_job()]}}},
        attrs={"rank": "0", "security.owner": str(OWNER)},
    )
    rig.stack(["allow-guest-user"])
    rig.expect(USER, [("account", "PAM_PERM_DENIED")])


# --- options ---------------------------------------------------------------


@pytest.mark.parametrize(
    "option", ["bogus", "action_no_jobs=maybe", "debug=yes", "lock-dir=relative"]
)
def test_bad_option_fails_every_phase(rig, option):
    rig.answers(rpc=ADMITTED)
    rig.stack([option])
    rig.expect(USER, [("account", "PAM_SERVICE_ERR")])
    rig.expect(USER, [("open_session", "PAM_SESSION_ERR")])
    rig.expect(USER, [("authenticate", "PAM_SERVICE_ERR")])
    assert rig.rpcs() == []


def test_auth_and_setcred_are_ignored(rig):
    rig.answers(rpc=ADMITTED)
    rig.stack()
    rig.expect(USER, [("authenticate", "IGNORED"), ("setcred", "IGNORED")])


def test_missing_package_fails_closed(rig, tmp_path):
    """pamtester: pam_python starts its own Python, ignoring the environment."""
    if shutil.which("pamtester") is None:
        pytest.skip("pamtester not installed")
    probe = subprocess.run(["/usr/bin/python3", "-I", "-c", "import flux_pam_service"])
    if probe.returncode == 0:
        pytest.skip("flux_pam_service is installed system-wide")
    empty = tmp_path / "empty"
    empty.mkdir()
    (rig.svcdir / "sshd").write_text(
        f"account required pam_python.so {PAM_FLUX} pythonpath={empty}\n"
    )
    proc = rig.pamtester(USER, "acct_mgmt")
    assert proc.returncode != 0
    assert "Error in service module" in proc.stderr


def test_pamtester_imports_package_through_pythonpath_option(rig):
    rig.answers(rpc=NOT_ADMITTED)
    rig.stack()
    if shutil.which("pamtester") is None:
        pytest.skip("pamtester not installed")
    proc = rig.pamtester(USER, "acct_mgmt")
    assert proc.returncode != 0
    assert DENIED in proc.stderr
    rig.answers(rpc=ADMITTED)
    proc = rig.pamtester(USER, "acct_mgmt")
    assert proc.returncode == 0, proc.stderr
    assert rig.rpcs()[-1] == ("pam.check", {"uid": UID, "max_jobs": 8})


# --- session ---------------------------------------------------------------


def test_session_ignored_without_account_admission(rig):
    rig.answers(rpc=ADMITTED)
    rig.config(manage_user_slice=True)
    rig.stack()
    rig.expect(USER, [("open_session", "IGNORED")])


def test_session_ignored_after_account_denial(rig):
    rig.answers(rpc=NOT_ADMITTED)
    rig.config(manage_user_slice=True)
    rig.stack(["action_no_jobs=ignore"])
    rig.expect(USER, [("account", "IGNORED"), ("open_session", "IGNORED")])


def test_session_ignored_for_root(rig):
    rig.answers(rpc=ADMITTED)
    rig.config(manage_user_slice=True)
    rig.stack()
    rig.expect("root", [("account", "PAM_SUCCESS"), ("open_session", "IGNORED")])


def test_session_without_slice_management_succeeds_without_scope(rig):
    rig.answers(rpc=ADMITTED)
    rig.config(manage_user_slice=False)
    rig.stack()
    res = rig.expect(
        USER,
        [
            ("account", "PAM_SUCCESS"),
            ("open_session", "PAM_SUCCESS"),
            ("getenvlist", "PAM_SUCCESS"),
            ("close_session", "PAM_SUCCESS"),
        ],
    )
    assert "XDG_RUNTIME_DIR" not in res.env
    assert [t for t, _ in rig.rpcs()] == ["pam.check"]


def test_session_skips_systemd_user_service(rig):
    rig.answers(rpc=ADMITTED)
    rig.config(manage_user_slice=True)
    rig.stack(["service=*"], service="systemd-user")
    rig.expect(
        USER,
        [("account", "PAM_SUCCESS"), ("open_session", "IGNORED")],
        service="systemd-user",
    )


@pytest.mark.parametrize(
    "text",
    ["[pam]\nmanage-user-slice = 1\n", "[pam]\nbogus = true\n", "[pam\n"],
    ids=["not-bool", "unknown-key", "syntax"],
)
def test_session_refused_when_config_is_bad(rig, text):
    rig.answers(rpc=ADMITTED)
    rig.config(text=text)
    rig.stack()
    res = rig.expect(
        USER, [("account", "PAM_SUCCESS"), ("open_session", "PAM_SESSION_ERR")]
    )
    assert res.errors == [SETUP_FAILED]
    assert any("cannot read the configuration" in line for line in rig.logs())


def expect_no_bus_failure(rig, tmp_path):
    """The session reaches the scope step and fails there: no system bus."""
    rig.stack()
    res = rig.expect(
        USER,
        [("account", "PAM_SUCCESS"), ("open_session", "PAM_SESSION_ERR")],
        env={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus"},
    )
    assert res.errors == [SETUP_FAILED]
    assert any("cannot create flux-pam-" in line for line in rig.logs())


def module_says(manage):
    answer = {"admitted": True, "jobs": [1234], "manage_user_slice": manage}
    return {"pam.check": {"response": answer}}


def test_session_takes_manage_user_slice_from_the_module_not_the_config(rig):
    """pam.check's manage_user_slice wins; the config is not even read."""
    rig.answers(rpc=module_says(False))
    rig.config(text="[pam\n")  # unreadable: would refuse if it were read
    rig.stack()
    res = rig.expect(
        USER,
        [("account", "PAM_SUCCESS"), ("open_session", "PAM_SUCCESS")],
    )
    assert "XDG_RUNTIME_DIR" not in res.env
    assert not any("configuration" in line for line in rig.logs())


def test_session_with_module_managing_goes_on_to_the_scope(rig, tmp_path):
    rig.answers(rpc=module_says(True))
    rig.config(manage_user_slice=False)  # the module's answer wins
    expect_no_bus_failure(rig, tmp_path)


def test_session_refused_when_config_is_missing(rig, tmp_path):
    rig.answers(rpc=ADMITTED)
    rig.stack([f"config={tmp_path}/nowhere"])
    rig.expect(USER, [("account", "PAM_SUCCESS"), ("open_session", "PAM_SESSION_ERR")])


def test_session_fails_closed_when_system_bus_unreachable(rig, tmp_path):
    rig.answers(rpc=ADMITTED)
    rig.config(manage_user_slice=True)
    expect_no_bus_failure(rig, tmp_path)
    assert "pam.attach" not in [t for t, _ in rig.rpcs()]


def test_close_session_succeeds(rig):
    rig.answers(rpc=ADMITTED)
    rig.stack()
    rig.expect(USER, [("close_session", "PAM_SUCCESS")])


def test_group_writable_answers_file_is_refused_and_denies(rig):
    """The test-only answers file cannot be planted by a non-root user."""
    rig.answers(rpc=ADMITTED)
    rig.answers_file.chmod(0o666)
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert res.errors == [DENIED]
    assert not rig.logfile.exists()  # nor is its "log" path written

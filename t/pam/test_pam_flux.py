"""pam_flux.so through real PAM stacks (pam_wrapper + pypamtest), against a
stand-in broker: every option, decision, message and log line."""

import errno
import pwd
import shutil
import time

import pytest

from flux_pam_service.core.jobid import f58

USER = "nobody"
UID = pwd.getpwnam(USER).pw_uid
WHO = f"user {USER} (uid={UID})"
DENIED = f"Access denied: user {USER} has no active jobs on this node"
UNCHECKED = (
    f"Access denied: the jobs of user {USER} on this node cannot be checked"
    " right now; try again later"
)
SETUP_FAILED = f"Access denied: cannot set up a session for user {USER} on this node"
NOT_ENFORCED = (
    "Access denied: CPU confinement is not enforced on this node;"
    " ask your administrator"
)
LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG = 3, 4, 6, 7

ADMITTED = {"pam.check": {"response": {"admitted": True, "jobs": [1234]}}}
NOT_ADMITTED = {"pam.check": {"response": {"admitted": False, "jobs": []}}}
CHECK = ("pam.check", {"uid": UID, "max_jobs": 16})
OWNER = 999
SUB_PATH = "sub"


def module_says(manage, **extra):
    answer = {"admitted": True, "jobs": [1234], "manage_user_slice": manage}
    return {"pam.check": {"response": {**answer, **extra}}}


def run_job(jobid=5, userid=UID, ranks="0", state=16, **extra):
    return {"id": jobid, "userid": userid, "ranks": ranks, "state": state, **extra}


def joblist(*jobs):
    return {"job-list.list": {"response": {"jobs": list(jobs)}}}


# --- account ---------------------------------------------------------------


def test_account_admits_user_with_running_job(rig):
    peer = rig.peer(ADMITTED)
    rig.stack(["debug"])
    res = rig.expect(USER, [("account", "PAM_SUCCESS")])
    assert res.errors == []
    assert peer.requests == [CHECK]
    assert (LOG_DEBUG, f"access granted for {WHO}: jobs fNH (pam.check)") in res.logs


def test_account_denies_user_without_jobs_with_message_and_log(rig):
    rig.peer(NOT_ADMITTED)
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert res.errors == [DENIED]
    assert (
        LOG_INFO,
        f"access denied for {WHO}: no active jobs on this node",
    ) in res.logs


def test_account_no_jobs_with_action_ignore_falls_through(rig):
    rig.peer(NOT_ADMITTED)
    rig.stack(["action_no_jobs=ignore"])
    res = rig.expect(USER, [("account", "IGNORED")])
    assert res.errors == []
    assert (LOG_INFO, f"{WHO} has no active jobs on this node") in res.logs


def test_account_admits_root_without_asking_the_broker(rig):
    peer = rig.peer(NOT_ADMITTED)
    rig.stack(["debug"])
    res = rig.expect("root", [("account", "PAM_SUCCESS")])
    assert peer.connections == 0
    assert (LOG_DEBUG, "access granted for user root (uid=0): root") in res.logs


def test_account_unknown_user(rig):
    peer = rig.peer(ADMITTED)
    rig.stack()
    res = rig.expect("no-such-user-here", [("account", "PAM_USER_UNKNOWN")])
    assert peer.connections == 0
    assert (LOG_ERR, "user no-such-user-here does not exist") in res.logs


def test_account_refusal_message_from_the_module_denies_whatever_no_jobs_says(rig):
    answer = {
        "admitted": False,
        "jobs": [],
        "reason": "user 65534: cpuset not enforced on rank 0",
        "message": NOT_ENFORCED,
    }
    rig.peer({"pam.check": {"response": answer}})
    rig.stack(["action_no_jobs=ignore", "allow-guest-user"])
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert res.errors == [NOT_ENFORCED]
    assert (LOG_INFO, f"access denied for {WHO}: {NOT_ENFORCED}") in res.logs


def test_account_refusal_message_has_its_control_characters_replaced(rig):
    answer = {"admitted": False, "message": "Access\x1b[2J denied\n\there"}
    rig.peer({"pam.check": {"response": answer}})
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert res.errors == ["Access?[2J denied??here"]


def test_account_falls_back_to_job_list_when_module_not_loaded(rig):
    peer = rig.peer(joblist(run_job(ranks="2-3")), attrs={"rank": "3"})
    rig.stack(["debug"])
    res = rig.expect(USER, [("account", "PAM_SUCCESS")])
    assert peer.requests[0] == CHECK
    assert peer.requests[1] == ("attr.get", {"name": "rank"})
    topic, payload = peer.requests[2]
    assert topic == "job-list.list"
    assert payload == {
        "max_entries": 17,
        "attrs": ["userid", "ranks", "state", "annotations"],
        "constraint": {
            "and": [{"userid": [UID]}, {"ranks": ["3"]}, {"states": ["run"]}]
        },
    }
    assert (LOG_DEBUG, "pam module not loaded: asking job-list") in res.logs
    assert (LOG_DEBUG, f"access granted for {WHO}: jobs f6 (job-list)") in res.logs


def test_account_job_list_fallback_denies_without_jobs(rig):
    rig.peer(joblist())
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert res.errors == [DENIED]


@pytest.mark.parametrize(
    "job",
    [run_job(state=32), run_job(ranks="1-2"), run_job(userid=OWNER)],
    ids=["cleanup", "other-rank", "other-user"],
)
def test_account_job_list_entry_that_does_not_admit(rig, job):
    rig.peer(joblist(job))
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert res.errors == [DENIED]


def marker(rig, content):
    rig.lockdir.mkdir(mode=0o700, exist_ok=True)
    (rig.lockdir / f"uid.{UID}.active").write_text(content)


def test_account_fallback_refuses_with_the_markers_deny_line(rig):
    rig.peer(joblist(run_job()))
    marker(rig, "deny: " + NOT_ENFORCED + "\nmore\n")
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert res.errors == [NOT_ENFORCED]
    assert (LOG_INFO, f"access denied for {WHO}: {NOT_ENFORCED}") in res.logs


@pytest.mark.parametrize("content", ["", "\n", "denial: x\n", " deny: x\n"])
def test_account_fallback_admits_with_a_marker_without_deny_line(rig, content):
    rig.peer(joblist(run_job()))
    marker(rig, content)
    rig.stack()
    rig.expect(USER, [("account", "PAM_SUCCESS")])


def test_account_fallback_admits_without_lock_directory(rig):
    rig.peer(joblist(run_job()))
    rig.stack()
    rig.expect(USER, [("account", "PAM_SUCCESS")])
    assert not rig.lockdir.exists()


def test_account_module_answer_is_not_second_guessed_by_the_marker(rig):
    rig.peer(module_says(True))
    marker(rig, "deny: stale\n")
    rig.stack()
    rig.expect(USER, [("account", "PAM_SUCCESS")])


FAILURES = {
    "refused": ({"handshake": bytes((errno.ECONNREFUSED,))}, "refused the connection"),
    "no-socket": (None, "No such file or directory (ENOENT)"),
    "eperm": (
        {"answers": {"pam.check": {"errno": errno.EPERM, "error": "guests denied"}}},
        "pam.check: guests denied (EPERM)",
    ),
    "timeout-error": (
        {"answers": {"pam.check": {"errno": errno.ETIMEDOUT}}},
        "(ETIMEDOUT)",
    ),
    "not-an-object": (
        {"answers": {"pam.check": {"response": "garbage"}}},
        "(EPROTO)",
    ),
    "no-admitted": (
        {"answers": {"pam.check": {"response": {"jobs": [1]}}}},
        "admitted is missing or not a boolean",
    ),
    "admitted-not-bool": (
        {"answers": {"pam.check": {"response": {"admitted": 1}}}},
        "admitted is missing or not a boolean",
    ),
    "jobs-not-ids": (
        {"answers": {"pam.check": {"response": {"admitted": True, "jobs": [-1]}}}},
        "jobs is not an array of job IDs",
    ),
    "njobs-not-count": (
        {"answers": {"pam.check": {"response": {"admitted": True, "njobs": "2"}}}},
        "njobs is not a count",
    ),
    "message-not-text": (
        {"answers": {"pam.check": {"response": {"admitted": False, "message": 5}}}},
        "message is not a string",
    ),
    "joblist-error": (
        {"answers": {"job-list.list": {"errno": errno.EPROTO}}},
        "job-list.list",
    ),
    "joblist-garbage": (
        {"answers": {"job-list.list": {"response": {"jobs": "nope"}}}},
        "job-list.list response has no jobs array",
    ),
    "joblist-bad-ranks": (
        {"answers": joblist(run_job(ranks="0-x"))},
        "job 5 has no ranks",
    ),
    "joblist-no-userid": (
        {"answers": joblist({"id": 5, "ranks": "0"})},
        "a job lacks id or userid",
    ),
    "rank-not-a-number": (
        {"answers": joblist(run_job()), "attrs": {"rank": "zero"}},
        'broker attribute rank="zero" is not an integer',
    ),
    "no-rank": (
        {"answers": joblist(run_job()), "attrs": {}},
        "attr.get: no attribute rank (ENOENT)",
    ),
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_account_fails_closed_on_broker_failure_telling_why(rig, name):
    spec, detail = FAILURES[name]
    if spec is None:
        rig.no_broker()
    else:
        rig.peer(**spec)
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert res.errors == [UNCHECKED]
    errors = [t for p, t in res.logs if p == LOG_ERR]
    assert len(errors) == 1 and errors[0].startswith(f"cannot check jobs of {WHO}: ")
    assert detail in errors[0]
    assert (LOG_INFO, f"access denied for {WHO}") in res.logs


def test_account_fails_closed_on_unsafe_lock_directory_in_fallback(rig):
    rig.peer(joblist(run_job()))
    marker(rig, "")
    rig.lockdir.chmod(0o770)
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert res.errors == [UNCHECKED]
    assert any("group- or other-writable (mode 0770)" in t for t in res.texts)


def test_account_generic_failure_ignore_falls_through(rig):
    rig.no_broker()
    rig.stack(["action_generic_failure=ignore"])
    res = rig.expect(USER, [("account", "IGNORED")])
    assert res.errors == []


def test_account_generic_failure_allow_admits_without_slice(rig):
    rig.no_broker()
    rig.stack(["action_generic_failure=allow"])
    res = rig.expect(USER, [("account", "PAM_SUCCESS"), ("open_session", "IGNORED")])
    assert (LOG_WARNING, f"access granted for {WHO} without a job check") in res.logs


@pytest.mark.parametrize(
    "uri", ["ssh://host/run/flux/local", "/run/flux/local", "local://"]
)
def test_account_refuses_a_broker_uri_that_is_not_local(rig, uri):
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")], env={"FLUX_URI": uri})
    assert res.errors == [UNCHECKED]
    assert any("is not a local:// URI" in t for t in res.texts)


def test_account_without_flux_uri_asks_the_system_instance(rig):
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")], env={"FLUX_URI": ""})
    assert any("local:///run/flux/local" in t for t in res.texts)


def test_account_ignores_other_services_by_default(rig):
    peer = rig.peer(NOT_ADMITTED)
    rig.stack(["debug"], service="login")
    res = rig.expect(USER, [("account", "IGNORED")], service="login")
    assert peer.connections == 0
    assert (LOG_DEBUG, "service login is not sshd") in res.logs


def test_account_service_star_acts_for_any_service(rig):
    rig.peer(NOT_ADMITTED)
    rig.stack(["service=*"], service="login")
    rig.expect(USER, [("account", "PAM_PERM_DENIED")], service="login")


def test_account_named_service_acts_only_for_it(rig):
    rig.peer(NOT_ADMITTED)
    rig.stack(["service=login"], service="login")
    rig.expect(USER, [("account", "PAM_PERM_DENIED")], service="login")
    rig.stack(["service=login"], service="sshd")
    rig.expect(USER, [("account", "IGNORED")], service="sshd")


def test_account_waits_for_a_slow_broker_within_the_timeout(rig):
    rig.peer({"pam.check": {"delay": 0.5, **ADMITTED["pam.check"]}})
    rig.stack(["timeout=5s"])
    rig.expect(USER, [("account", "PAM_SUCCESS")])


def test_account_gives_up_on_a_silent_broker_after_the_timeout(rig):
    rig.peer({"pam.check": {"hang": True}})
    rig.stack(["timeout=300ms"])
    t0 = time.monotonic()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert time.monotonic() - t0 < 10
    assert any("pam.check: no answer within 0.3s (ETIMEDOUT)" in t for t in res.texts)


# --- allow-guest-user --------------------------------------------------------


def guest_peers(rig, ranks="0-1", rank="0", allow=True, uri=None):
    sub = rig.peer(
        {"config.get": {"response": {"access": {"allow-guest-user": allow}}}},
        name=SUB_PATH,
    )
    job = run_job(
        jobid=77,
        userid=OWNER,
        ranks=ranks,
        annotations={"user": {"uri": uri or f"ssh://node0{sub.path}"}},
    )
    main = rig.peer(
        {**NOT_ADMITTED, **joblist(job)},
        attrs={"rank": rank, "security.owner": str(OWNER)},
    )
    rig.env["FLUX_URI"] = main.uri
    return main, sub


def test_guest_of_multiuser_subinstance_is_admitted_without_slice(rig):
    main, sub = guest_peers(rig)
    rig.stack(["allow-guest-user"])
    res = rig.expect(USER, [("account", "PAM_SUCCESS"), ("open_session", "IGNORED")])
    assert main.topics() == ["pam.check", "attr.get", "attr.get", "job-list.list"]
    payload = main.requests[3][1]
    assert payload["constraint"]["and"][0] == {"userid": [OWNER]}
    assert payload["max_entries"] == 0
    assert sub.topics() == ["config.get"]
    assert (LOG_INFO, f"access granted for {WHO} as guest of job ƒ2L") in res.logs


def test_guest_denied_without_allow_guest_user_option(rig):
    main, sub = guest_peers(rig)
    rig.stack()
    rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert main.topics() == ["pam.check"]


def test_guest_denied_on_rank_other_than_jobs_first(rig):
    main, sub = guest_peers(rig, ranks="0-1", rank="1")
    rig.stack(["allow-guest-user", "debug"])
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert sub.connections == 0
    assert (LOG_DEBUG, "job ƒ2L: this rank is not its first") in res.logs


def test_guest_denied_when_subinstance_does_not_allow_guests(rig):
    guest_peers(rig, allow=False)
    rig.stack(["allow-guest-user"])
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert (LOG_INFO, "job ƒ2L: access.allow-guest-user not enabled") in res.logs  # 77


@pytest.mark.parametrize("uri", ["ssh://node0/nowhere/local", "tcp://x:1", "ssh://h"])
def test_guest_denied_when_subinstance_unreachable(rig, uri):
    guest_peers(rig, uri=uri)
    rig.stack(["allow-guest-user"])
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert any(t.startswith("job ƒ2L: c") for p, t in res.logs if p == LOG_ERR)


def test_job_user_is_admitted_with_allow_guest_user_without_job_list(rig):
    peer = rig.peer(ADMITTED)
    rig.stack(["allow-guest-user"])
    rig.expect(USER, [("account", "PAM_SUCCESS")])
    assert peer.topics() == ["pam.check"]


# --- options ---------------------------------------------------------------

BAD_OPTIONS = {
    "bogus": "unrecognized option: bogus",
    "action_no_jobs=maybe": "option action_no_jobs=maybe: value must be one of"
    " deny|ignore",
    "action_generic_failure=open": "value must be one of deny|ignore|allow",
    "action_no_jobs": "option action_no_jobs: action_no_jobs needs"
    " action_no_jobs=VALUE",
    "service=": "service needs service=VALUE",
    "debug=yes": "option debug=yes: debug takes no value",
    "allow-guest-user=1": "allow-guest-user takes no value",
    "lock-dir=relative": "option lock-dir=relative: not an absolute path",
    "config=relative": "option config=relative: not an absolute path",
    "log_level=loud": "option log_level=loud: value must be one of quiet|",
    "service=ss/hd": "option service=ss/hd: not a PAM service name or *",
    "scope-prefix=a/b": "not usable in a systemd unit name",
    "timeout=0": "option timeout=0: must be greater than zero",
    "timeout=-1s": 'option timeout=-1s: "-1s" is negative',
    "timeout=inf": "is infinite, which is not allowed here",
    "timeout=10x": '"10x" is not a Flux Standard Duration',
    "timeout=1e999": "is out of range",
    "test-answers=/tmp/x": "unrecognized option: test-answers=/tmp/x",
    "pythonpath=/opt": "unrecognized option: pythonpath=/opt",
}


@pytest.mark.parametrize("option", list(BAD_OPTIONS))
def test_bad_option_fails_every_phase_naming_it(rig, option):
    peer = rig.peer(ADMITTED)
    rig.stack([option])
    res = rig.expect(USER, [("account", "PAM_SERVICE_ERR")])
    assert [(p, t) for p, t in res.logs if BAD_OPTIONS[option] in t]
    assert all(p == LOG_ERR for p, t in res.logs if "option" in t)
    rig.expect(USER, [("open_session", "PAM_SESSION_ERR")])
    rig.expect(USER, [("authenticate", "PAM_SERVICE_ERR")])
    rig.expect(USER, [("setcred", "PAM_SERVICE_ERR")])
    rig.expect(USER, [("close_session", "PAM_SUCCESS")])
    rig.expect("root", [("account", "PAM_SERVICE_ERR")])
    assert peer.connections == 0


def test_every_option_at_once_is_accepted(rig):
    rig.peer(ADMITTED)
    rig.stack(
        [
            "action_no_jobs=ignore",
            "action_generic_failure=deny",
            "service=sshd",
            "log_level=notice",
            "debug",
            "allow-guest-user",
            "scope-prefix=site-login",
            "timeout=1.5m",
        ]
    )
    rig.expect(USER, [("account", "PAM_SUCCESS")])


@pytest.mark.parametrize(
    "value",
    ["10", "10s", "500ms", "0.5", ".5s", "1.", "2m", "1h", "1d", "1e1s", "1e300"],
)
def test_timeout_accepts_flux_standard_durations(rig, value):
    rig.peer(ADMITTED)
    rig.stack([f"timeout={value}"])
    rig.expect(USER, [("account", "PAM_SUCCESS")])


def test_a_later_option_overrides_an_earlier_one(rig):
    rig.peer(NOT_ADMITTED)
    rig.stack(["action_no_jobs=deny", "action_no_jobs=ignore"])
    rig.expect(USER, [("account", "IGNORED")])


def test_config_option_is_accepted_and_logged_as_ignored(rig):
    rig.peer(ADMITTED)
    rig.stack(["config=/etc/flux/system/conf.d"])
    res = rig.expect(USER, [("account", "PAM_SUCCESS")])
    warnings = [t for p, t in res.logs if p == LOG_WARNING]
    assert warnings and warnings[0].startswith(
        "option config=/etc/flux/system/conf.d is ignored"
    )


@pytest.mark.parametrize(
    "level,priorities",
    [
        ("quiet", set()),
        ("error", {LOG_ERR}),
        ("warning", {LOG_ERR, LOG_WARNING}),
        ("info", {LOG_ERR, LOG_WARNING, LOG_INFO}),
        ("debug", {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG}),
    ],
)
def test_log_level_drops_lines_above_it(rig, level, priorities):
    """A broker failure logs LOG_ERR and LOG_INFO; config= a LOG_WARNING;
    the fallback a LOG_DEBUG line."""
    rig.peer({"job-list.list": {"errno": errno.EIO}})
    rig.stack([f"log_level={level}", "config=/x"])
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert {p for p, t in res.logs} == priorities


def test_auth_setcred_and_password_are_not_acted_on(rig):
    peer = rig.peer(ADMITTED)
    rig.stack()
    rig.expect(USER, [("authenticate", "IGNORED"), ("setcred", "IGNORED")])
    assert peer.connections == 0


def test_pamtester_is_refused_with_the_message_on_stderr(rig):
    if shutil.which("pamtester") is None:
        pytest.skip("pamtester not installed")
    peer = rig.peer(NOT_ADMITTED)
    rig.stack()
    proc = rig.pamtester(USER, "acct_mgmt")
    assert proc.returncode != 0
    assert DENIED in proc.stderr
    peer.answers.update(ADMITTED)
    proc = rig.pamtester(USER, "acct_mgmt")
    assert proc.returncode == 0, proc.stderr
    assert peer.requests[-1] == CHECK


# --- session ---------------------------------------------------------------


def test_session_ignored_without_account_admission(rig):
    rig.peer(module_says(True))
    rig.stack(["debug"])
    res = rig.expect(USER, [("open_session", "IGNORED")])
    assert (
        LOG_DEBUG,
        "no session setup: not admitted by pam_flux as job owner",
    ) in res.logs


def test_session_ignored_after_account_denial(rig):
    rig.peer(NOT_ADMITTED)
    rig.stack(["action_no_jobs=ignore"])
    rig.expect(USER, [("account", "IGNORED"), ("open_session", "IGNORED")])


def test_session_ignored_for_root(rig):
    rig.peer(module_says(True))
    rig.stack()
    rig.expect("root", [("account", "PAM_SUCCESS"), ("open_session", "IGNORED")])


def test_session_account_verdict_is_per_handle(rig):
    """An admission on one handle does not open the session of the next."""
    rig.peer(module_says(True))
    rig.stack()
    first, second = rig.runs(
        [
            (USER, [("account", "PAM_SUCCESS")], "sshd"),
            (USER, [("open_session", "IGNORED")], "sshd"),
        ]
    )
    assert first.ok and second.ok, second.error


def test_session_without_slice_management_succeeds_without_scope(rig):
    peer = rig.peer(module_says(False))
    rig.stack(["debug"])
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
    assert peer.topics() == ["pam.check"]
    assert (LOG_DEBUG, "pam.manage-user-slice is false: no scope") in res.logs


# --- the session's environment ---------------------------------------------

SESSION_ENV = [
    ("account", "PAM_SUCCESS"),
    ("open_session", "PAM_SUCCESS"),
    ("getenvlist", "PAM_SUCCESS"),
]


def flux_env(env):
    return {k: v for k, v in env.items() if k.startswith("FLUX_")}


def test_one_job_sets_flux_job_id_and_flux_uri(rig):
    rig.peer(module_says(False, njobs=1))
    rig.stack()
    res = rig.expect(USER, SESSION_ENV)
    assert flux_env(res.env) == {"FLUX_URI": rig.env["FLUX_URI"], "FLUX_JOB_ID": "fNH"}


def test_several_jobs_set_flux_job_ids_and_no_flux_job_id(rig):
    rig.peer(module_says(False, jobs=[1234, 5678, 9], njobs=3))
    rig.stack()
    res = rig.expect(USER, SESSION_ENV)
    assert flux_env(res.env) == {
        "FLUX_URI": rig.env["FLUX_URI"],
        "FLUX_JOB_IDS": ",".join("f" + f58(j)[1:] for j in (1234, 5678, 9)),
    }


def test_more_jobs_than_listed_set_no_job_ids_rather_than_a_partial_list(rig):
    listed = list(range(1, 17))
    rig.peer(module_says(False, jobs=listed, njobs=40))
    rig.stack(["debug"])
    res = rig.expect(USER, SESSION_ENV)
    assert flux_env(res.env) == {"FLUX_URI": rig.env["FLUX_URI"]}
    text = f"the jobs of {WHO} here are not all listed (16 of 40): no FLUX_JOB_ID(S)"
    assert (LOG_DEBUG, text) in res.logs


def test_the_job_ids_of_the_fallback_come_from_job_list(rig):
    peer = rig.peer(
        {
            **joblist(run_job(5), run_job(7)),
            "config.get": {"response": {"pam": {"manage-user-slice": False}}},
        }
    )
    rig.stack()
    res = rig.expect(USER, SESSION_ENV)
    assert flux_env(res.env) == {
        "FLUX_URI": rig.env["FLUX_URI"],
        "FLUX_JOB_IDS": "f6,f8",
    }
    assert peer.topics()[-1] == "config.get"


def test_a_refused_session_sets_no_flux_variables(rig):
    rig.peer(module_says(True))
    rig.stack()
    res = rig.expect(
        USER,
        [
            ("account", "PAM_SUCCESS"),
            ("open_session", "PAM_SESSION_ERR"),
            ("getenvlist", "PAM_SUCCESS"),
        ],
    )
    assert flux_env(res.env) == {}


def test_session_skips_systemd_user_service(rig):
    rig.peer(module_says(True))
    rig.stack(["service=*"], service="systemd-user")
    rig.expect(
        USER,
        [("account", "PAM_SUCCESS"), ("open_session", "IGNORED")],
        service="systemd-user",
    )


def expect_no_bus_failure(rig):
    """The session reaches the scope step and fails there: no system bus."""
    rig.stack()
    res = rig.expect(
        USER, [("account", "PAM_SUCCESS"), ("open_session", "PAM_SESSION_ERR")]
    )
    assert res.errors == [SETUP_FAILED]
    assert any(
        t.startswith(f"session refused for {WHO}: cannot create flux-pam-")
        for p, t in res.logs
        if p == LOG_ERR
    )
    return res


def test_session_with_module_managing_goes_on_to_the_scope(rig):
    peer = rig.peer(module_says(True))
    expect_no_bus_failure(rig)
    assert "pam.attach" not in peer.topics()


@pytest.mark.parametrize(
    "config,manage",
    [
        ({"pam": {"manage-user-slice": False}}, False),
        ({"pam": {}}, False),
        ({}, False),
        ({"pam": {"manage-user-slice": True}}, True),
    ],
    ids=["off", "no-key", "no-table", "on"],
)
def test_session_in_fallback_takes_manage_user_slice_from_config_get(
    rig, config, manage
):
    peer = rig.peer({**joblist(run_job()), "config.get": {"response": config}})
    if manage:
        expect_no_bus_failure(rig)
    else:
        rig.stack()
        rig.expect(USER, [("account", "PAM_SUCCESS"), ("open_session", "PAM_SUCCESS")])
    assert peer.topics()[-1] == "config.get"


def test_session_when_the_module_did_not_say_asks_config_get(rig):
    peer = rig.peer(
        {**ADMITTED, "config.get": {"response": {"pam": {"manage-user-slice": False}}}}
    )
    rig.stack()
    rig.expect(USER, [("account", "PAM_SUCCESS"), ("open_session", "PAM_SUCCESS")])
    assert peer.topics() == ["pam.check", "config.get"]


@pytest.mark.parametrize(
    "answer,detail",
    [
        ({"errno": errno.EPERM, "error": "no"}, "config.get: no (EPERM)"),
        ({"response": {"pam": {"manage-user-slice": 1}}}, "is not a boolean"),
        ({"response": {"pam": "on"}}, "pam is not a table"),
        ({"hang": True}, "no answer within"),
    ],
    ids=["error", "not-bool", "not-table", "silent"],
)
def test_session_refused_when_the_configuration_cannot_be_read(rig, answer, detail):
    rig.peer({**joblist(run_job()), "config.get": answer})
    rig.stack(["timeout=0.3"])
    res = rig.expect(
        USER, [("account", "PAM_SUCCESS"), ("open_session", "PAM_SESSION_ERR")]
    )
    assert res.errors == [SETUP_FAILED]
    line = [t for p, t in res.logs if p == LOG_ERR][-1]
    assert line.startswith(f"session refused for {WHO}: cannot read the configuration")
    assert detail in line


@pytest.mark.parametrize("mode", [0o770, 0o702], ids=["group", "other"])
def test_session_refused_when_lock_dir_is_writable_by_others(rig, mode):
    peer = rig.peer(module_says(True))
    rig.lockdir.mkdir()
    rig.lockdir.chmod(mode)
    rig.stack()
    res = rig.expect(
        USER, [("account", "PAM_SUCCESS"), ("open_session", "PAM_SESSION_ERR")]
    )
    assert res.errors == [SETUP_FAILED]
    assert any(
        "unsafe lock directory" in t and "group- or other-writable" in t
        for t in res.texts
    )
    assert oct(rig.lockdir.stat().st_mode & 0o777) == oct(mode)  # left as found
    assert "pam.attach" not in peer.topics()


def test_session_refused_when_lock_dir_is_a_symlink(rig, tmp_path):
    rig.peer(module_says(True))
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    rig.lockdir.symlink_to(real)
    rig.stack()
    res = rig.expect(
        USER, [("account", "PAM_SUCCESS"), ("open_session", "PAM_SESSION_ERR")]
    )
    assert any(f"lock directory {rig.lockdir} is a symlink" in t for t in res.texts)


def test_session_creates_a_missing_lock_dir_0700(rig):
    rig.peer(module_says(True))
    expect_no_bus_failure(rig)
    assert rig.lockdir.stat().st_mode & 0o777 == 0o700


def test_close_session_succeeds(rig):
    rig.stack()
    rig.expect(USER, [("close_session", "PAM_SUCCESS")])


def test_account_step_does_not_load_libsystemd(rig, tmp_path):
    """sd-bus is loaded by the session step only (a cost of every login)."""
    probe = tmp_path / "maps.sh"
    probe.write_text(
        "#!/bin/sh\n"
        'if grep -q libsystemd "/proc/$PPID/maps"; then echo loaded;'
        " else echo not-loaded; fi\n"
    )
    probe.chmod(0o755)
    rig.peer(module_says(True))
    (rig.svcdir / "sshd").write_text(
        f"account required {rig.build.path} {' '.join(rig.options())}\n"
        f"account required pam_exec.so stdout {probe}\n"
    )
    res = rig.expect(USER, [("account", "PAM_SUCCESS")])
    assert res.infos == ["not-loaded"]

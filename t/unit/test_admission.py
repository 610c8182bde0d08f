"""pam_flux's decisions and option parsing (flux_pam_service.admission).

The broker conversation itself (check_account) is exercised through real PAM
stacks in t/pam, with the broker's answers injected there.
"""

import errno

import pytest

from flux_pam_service import admission
from flux_pam_service.admission import (
    GUEST,
    LOG_DEBUG,
    LOG_ERR,
    LOG_INFO,
    LOG_WARNING,
    NONE,
    OWNER,
    OptionError,
    Options,
    Verdict,
    decide_account,
    decide_session,
    decide_session_start,
    parse_options,
)

DENIED = "Access denied: user alice has no active jobs on this node"


def test_defaults_fail_closed_and_act_for_sshd_only():
    opts = parse_options([])
    assert opts.action_no_jobs == "deny"
    assert opts.action_generic_failure == "deny"
    assert opts.service == "sshd"
    assert opts.log_level == LOG_INFO
    assert opts.lock_dir == "/run/flux-pam"
    assert opts.scope_prefix == "flux-pam"
    assert opts.config is None  # ask the broker (config.get)
    assert opts.allow_guest_user is False
    assert opts.test_answers is None


def test_every_option_is_parsed():
    opts = parse_options(
        [
            "action_no_jobs=ignore",
            "action_generic_failure=allow",
            "service=*",
            "log_level=error",
            "allow-guest-user",
            "lock-dir=/run/x",
            "scope-prefix=login",
            "config=/etc/x.toml",
            "timeout=500ms",
            "pythonpath=/opt/a:/opt/b",
            "test-answers=/tmp/a.json",
        ]
    )
    assert opts == Options(
        action_no_jobs="ignore",
        action_generic_failure="allow",
        service="*",
        log_level=LOG_ERR,
        allow_guest_user=True,
        lock_dir="/run/x",
        scope_prefix="login",
        config="/etc/x.toml",
        timeout=0.5,
        pythonpath=("/opt/a", "/opt/b"),
        test_answers="/tmp/a.json",
    )


def test_debug_flag_sets_debug_log_level_and_later_option_wins():
    assert parse_options(["debug"]).log_level == LOG_DEBUG
    assert parse_options(["debug", "log_level=quiet"]).log_level < 0
    assert parse_options(["service=login", "service=sshd"]).service == "sshd"


@pytest.mark.parametrize(
    "arg,named",
    [
        ("bogus", "bogus"),
        ("action_unknown=newest", "action_unknown"),
        ("action_no_jobs=allow", "action_no_jobs=allow"),
        ("action_no_jobs", "action_no_jobs"),
        ("action_no_jobs=", "action_no_jobs"),
        ("action_generic_failure=maybe", "action_generic_failure"),
        ("debug=1", "debug"),
        ("allow-guest-user=yes", "allow-guest-user"),
        ("log_level=loud", "log_level"),
        ("lock-dir=run/flux-pam", "lock-dir"),
        ("scope-prefix=a/b", "scope-prefix"),
        ("scope-prefix=a b", "scope-prefix"),
        ("service=ss hd", "service"),
        ("timeout=soon", "timeout"),
        ("timeout=0", "timeout"),
        ("timeout=inf", "timeout"),
        ("config=relative.toml", "config"),
        ("pythonpath=/ok:relative", "pythonpath"),
        ("pythonpath=/ok:", "pythonpath"),
        ("test-answers=answers.json", "test-answers"),
    ],
)
def test_bad_option_is_an_error_naming_it(arg, named):
    with pytest.raises(OptionError, match=named):
        parse_options(["debug", arg])


def test_check_response_is_validated():
    ok = admission.parse_check_response({"admitted": True, "jobs": [1, 2]})
    assert ok == (True, (1, 2))
    assert admission.parse_check_response({"admitted": False}) == (False, ())
    many = {"admitted": True, "jobs": [1, 2], "njobs": 1000}
    assert admission.parse_check_response(many) == (True, (1, 2))
    for bad in (
        [],
        {},
        {"admitted": 1, "jobs": []},
        {"admitted": True, "jobs": "1"},
        {"admitted": True, "jobs": [-1]},
        {"admitted": True, "jobs": [True]},
        {"admitted": True, "jobs": [1], "njobs": -1},
        {"admitted": True, "jobs": [1], "njobs": "3"},
    ):
        with pytest.raises(ValueError, match="pam.check"):
            admission.parse_check_response(bad)


def test_attach_response_must_say_attached_true_or_false_with_a_message():
    assert admission.parse_attach_response({"attached": True}) is None
    refused = {"attached": False, "message": "Access denied: CPU ..."}
    assert admission.parse_attach_response(refused) == "Access denied: CPU ..."
    for bad in (
        {},
        {"attached": 1},
        {"attached": False},
        {"attached": False, "message": ""},
        {"attached": False, "message": 3},
        None,
    ):
        with pytest.raises(ValueError, match="pam.attach"):
            admission.parse_attach_response(bad)


def test_joblist_request_asks_for_run_state_only_on_this_rank():
    req = admission.joblist_request([1000, 999], 3)
    assert req["constraint"] == {
        "and": [{"userid": [1000, 999]}, {"ranks": ["3"]}, {"states": ["run"]}]
    }
    assert req["max_entries"] == 0
    assert set(req["attrs"]) >= {"userid", "ranks", "annotations"}


def test_joblist_response_drops_jobs_not_in_run_state():
    entries = admission.parse_joblist_response(
        {
            "jobs": [
                {"id": 1, "userid": 1000, "ranks": "0-2", "state": 16},
                {"id": 2, "userid": 1000, "ranks": "0", "state": 32},  # CLEANUP
                {
                    "id": 3,
                    "userid": 999,
                    "ranks": "4,6",
                    "state": 16,
                    "annotations": {"user": {"uri": "ssh://n4/tmp/flux-x/local-0"}},
                },
            ]
        }
    )
    assert [e.id for e in entries] == [1, 3]
    assert entries[0].ranks == frozenset({0, 1, 2})
    assert entries[1].uri == "ssh://n4/tmp/flux-x/local-0"
    assert entries[0].uri is None


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {},
        {"jobs": {}},
        {"jobs": [1]},
        {"jobs": [{"id": 1, "ranks": "0"}]},
        {"jobs": [{"id": 1, "userid": 5}]},
        {"jobs": [{"id": 1, "userid": 5, "ranks": "x"}]},
    ],
)
def test_bad_joblist_response_is_an_error(bad):
    with pytest.raises(ValueError):
        admission.parse_joblist_response(bad)


def test_uri_to_local():
    assert (
        admission.uri_to_local("ssh://node4/tmp/flux-abc/local-0")
        == "local:///tmp/flux-abc/local-0"
    )
    assert admission.uri_to_local("local:///tmp/x") is None
    assert admission.uri_to_local("ssh://node4") is None
    assert admission.uri_to_local("ssh://node4/") is None


def test_broker_uri_prefers_flux_uri():
    assert admission.broker_uri({}) == "local:///run/flux/local"
    assert admission.broker_uri({"FLUX_URI": "local:///x"}) == "local:///x"


OPTS = Options()


def acct(outcome, user="alice", uid=1000, service="sshd", opts=OPTS):
    return decide_account(user, uid, service, outcome, opts)


def test_account_other_service_is_ignored():
    d = acct(None, service="login")
    assert d.result == "PAM_IGNORE"
    assert acct(None, service="login", opts=Options(service="*")) is None


def test_account_unknown_user():
    d = acct(None, user="nobody-here", uid=None)
    assert d.result == "PAM_USER_UNKNOWN"
    assert d.logs == ((LOG_ERR, "user nobody-here does not exist"),)
    assert acct(None, user=None, uid=None).result == "PAM_USER_UNKNOWN"


def test_account_root_is_admitted_without_asking_and_without_slice():
    d = acct(None, user="root", uid=0)
    assert d.result == "PAM_SUCCESS"
    assert d.sentinel is False


def test_account_needs_broker_for_ordinary_user():
    assert acct(None) is None


def test_account_job_owner_is_admitted_with_sentinel():
    d = acct(Verdict(OWNER, (42,), "pam.check"))
    assert d.result == "PAM_SUCCESS"
    assert d.sentinel is True
    assert d.message is None
    assert "jobs ƒj" in d.logs[-1][1]  # F58, as every flux command prints it


def test_account_guest_is_admitted_without_sentinel():
    d = acct(Verdict(GUEST, (7,), "job-list"))
    assert d.result == "PAM_SUCCESS"
    assert d.sentinel is False
    assert "guest of job ƒ8" in d.logs[-1][1]


def test_account_no_jobs_denies_with_message():
    d = acct(Verdict(NONE, (), "pam.check"))
    assert d.result == "PAM_PERM_DENIED"
    assert d.message == DENIED
    assert d.sentinel is False
    assert d.logs[-1] == (
        LOG_INFO,
        "access denied for user alice (uid=1000): no active jobs on this node",
    )


def test_account_no_jobs_ignored_when_configured():
    d = acct(Verdict(NONE), opts=Options(action_no_jobs="ignore"))
    assert d.result == "PAM_IGNORE"
    assert d.message is None


def test_account_notes_are_logged():
    note = (LOG_ERR, "job 5: config.get on local:///x: boom")
    d = acct(Verdict(NONE, (), "job-list", (note,)))
    assert note in d.logs


@pytest.mark.parametrize(
    "action,result,message,sentinel",
    [
        ("deny", "PAM_PERM_DENIED", DENIED, False),
        ("ignore", "PAM_IGNORE", None, False),
        ("allow", "PAM_SUCCESS", None, False),
    ],
)
def test_account_generic_failure_follows_action(action, result, message, sentinel):
    err = OSError(errno.ECONNREFUSED, "Connection refused")
    d = acct(err, opts=Options(action_generic_failure=action))
    assert (d.result, d.message, d.sentinel) == (result, message, sentinel)
    assert d.logs[0] == (
        LOG_ERR,
        "cannot check jobs of user alice (uid=1000): Connection refused (ECONNREFUSED)",
    )
    if action == "allow":
        assert d.logs[-1][0] == LOG_WARNING


def test_session_skips_systemd_user_service_even_with_sentinel():
    d = decide_session_start(
        "alice", 1000, "systemd-user", ("alice", 1000), Options(service="*")
    )
    assert d.result == "PAM_IGNORE"


def test_session_without_sentinel_is_ignored():
    assert decide_session_start("alice", 1000, "sshd", None, OPTS).result == (
        "PAM_IGNORE"
    )


def test_session_other_service_is_ignored():
    d = decide_session_start("alice", 1000, "login", ("alice", 1000), OPTS)
    assert d.result == "PAM_IGNORE"


def test_session_with_sentinel_goes_on():
    assert decide_session_start("alice", 1000, "sshd", ("alice", 1000), OPTS) is None


def test_session_refuses_user_changed_since_account():
    d = decide_session_start("bob", 1001, "sshd", ("alice", 1000), OPTS)
    assert d.result == "PAM_SESSION_ERR"
    assert "alice" in d.logs[0][1]


def test_session_manage_off_succeeds_without_env():
    d = decide_session("alice", 1000, admission.MANAGE_OFF)
    assert d.result == "PAM_SUCCESS"
    assert d.env == ()


def test_session_attached_sets_runtime_dir_and_bus():
    d = decide_session(
        "alice", 1000, admission.ATTACHED, scope="flux-pam-9.scope", how="pam.attach"
    )
    assert d.result == "PAM_SUCCESS"
    assert dict(d.env) == {
        "XDG_RUNTIME_DIR": "/run/user/1000",
        "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus",
    }


def test_session_refused_tells_user_no_active_jobs():
    err = OSError(errno.ESRCH, "user 1000 is not active")
    d = decide_session("alice", 1000, admission.REFUSED, err, "s.scope", "pam.attach")
    assert d.result == "PAM_SESSION_ERR"
    assert d.message == DENIED
    assert "ESRCH" in d.logs[0][1]
    d = decide_session("alice", 1000, admission.REFUSED, None, "s.scope", "marker")
    assert "no marker" in d.logs[0][1]


@pytest.mark.parametrize(
    "stage,text",
    [
        (admission.CONFIG, "cannot read the configuration"),
        (admission.SCOPE, "cannot create s.scope"),
        (admission.CONFIRM, "cannot confirm s.scope"),
    ],
)
def test_session_setup_failures_are_session_errors(stage, text):
    d = decide_session("alice", 1000, stage, OSError(errno.EIO, "I/O"), "s.scope")
    assert d.result == "PAM_SESSION_ERR"
    assert d.message == (
        "Access denied: cannot set up a session for user alice on this node"
    )
    assert text in d.logs[0][1]
    assert d.env == ()


def test_names_of_units():
    assert admission.scope_name("flux-pam", 4242) == "flux-pam-4242.scope"
    assert admission.slice_name(1000) == "user-1000.slice"


def test_log_level_filters_by_priority():
    assert admission.loggable(Options(), LOG_INFO)
    assert not admission.loggable(Options(), LOG_DEBUG)
    assert admission.loggable(Options(log_level=LOG_DEBUG), LOG_DEBUG)
    quiet = parse_options(["log_level=quiet"])
    assert not admission.loggable(quiet, LOG_ERR)


class _RecordingBroker(admission.Broker):
    """Answers as a broker without the pam module; records job-list requests."""

    def __init__(self) -> None:
        self.requests: list = []

    def rpc(self, topic, payload):
        if topic == "pam.check":
            raise OSError(errno.ENOSYS, "no service matching pam.check")
        self.requests.append(payload)
        return {"jobs": []}

    def attr_get(self, name):
        return {"rank": "0", "security.owner": "999"}[name]


def test_joblist_fallback_asks_for_one_job_when_guests_are_not_allowed():
    broker = _RecordingBroker()
    admission.check_account(broker, 1000, admission.parse_options([]))
    assert [r["max_entries"] for r in broker.requests] == [1]


def test_joblist_fallback_asks_for_every_job_when_guests_are_allowed():
    broker = _RecordingBroker()
    opts = admission.parse_options(["allow-guest-user"])
    admission.check_account(broker, 1000, opts)
    assert [r["max_entries"] for r in broker.requests] == [0]
    assert broker.requests[0]["constraint"]["and"][0] == {"userid": [1000, 999]}


class _CheckBroker(admission.Broker):
    def __init__(self, response):
        self.response = response
        self.requests: list = []

    def rpc(self, topic, payload):
        self.requests.append((topic, payload))
        return self.response


@pytest.mark.parametrize(
    "answer, manage",
    [(True, True), (False, False), ("yes", None), (None, None)],
)
def test_check_account_keeps_the_modules_manage_user_slice(answer, manage):
    response = {"admitted": True, "jobs": [5], "njobs": 1}
    if answer is not None:
        response["manage_user_slice"] = answer
    broker = _CheckBroker(response)
    verdict = admission.check_account(broker, 1000, admission.parse_options([]))
    assert verdict.kind == admission.OWNER and verdict.manage is manage
    assert broker.requests == [
        ("pam.check", {"uid": 1000, "max_jobs": admission.CHECK_MAX_JOBS})
    ]


def test_session_start_accepts_the_sentinel_with_the_modules_answer():
    opts = admission.parse_options([])
    assert admission.decide_session_start("u", 5, "sshd", ("u", 5, True), opts) is None
    d = admission.decide_session_start("v", 6, "sshd", ("u", 5, None), opts)
    assert d.result == "PAM_SESSION_ERR"


UNENFORCED = (
    "Access denied: CPU confinement is not enforced on this node;"
    " ask your administrator"
)


@pytest.mark.parametrize("no_jobs", ["deny", "ignore"])
def test_a_refusal_message_from_pam_check_denies_whatever_action_no_jobs(no_jobs):
    response = {"admitted": False, "jobs": [], "message": UNENFORCED}
    broker = _CheckBroker(response)
    opts = admission.parse_options([f"action_no_jobs={no_jobs}"])
    verdict = admission.check_account(broker, 1000, opts)
    assert verdict.kind == admission.NONE and verdict.message == UNENFORCED
    d = admission.decide_account("alice", 1000, "sshd", verdict, opts)
    assert d.result == "PAM_PERM_DENIED"
    assert d.message == UNENFORCED
    assert not d.sentinel
    assert any(UNENFORCED in text for _, text in d.logs)


def test_a_refusal_message_is_not_asked_of_job_list_for_guests():
    response = {"admitted": False, "jobs": [], "message": UNENFORCED}
    broker = _CheckBroker(response)
    opts = admission.parse_options(["allow-guest-user"])
    verdict = admission.check_account(broker, 1000, opts)
    assert verdict.message == UNENFORCED
    assert [topic for topic, _ in broker.requests] == ["pam.check"]


def test_a_denied_session_shows_the_message():
    d = admission.decide_session(
        "alice", 1000, admission.DENIED, OSError(1, UNENFORCED), "s.scope", "marker"
    )
    assert d.result == "PAM_SESSION_ERR"
    assert d.message == UNENFORCED
    assert d.env == ()

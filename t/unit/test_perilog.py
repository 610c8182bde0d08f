"""The pure parts of flux_pam_service.perilog (prolog/housekeeping)."""

import errno
import io
import os

import pytest

from flux_pam_service import perilog
from flux_pam_service.core import jobid
from flux_pam_service.core.config import ConfigError, PamConfig
from flux_pam_service.core.rv1 import Resources
from flux_pam_service.perilog import calls, env, work

F58 = "ƒ2Mxq3uHK"
DEC = str(jobid.parse(F58))


def environ(**kw):
    base = {"FLUX_JOB_ID": F58, "FLUX_JOB_USERID": "1000"}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def test_parse_env_accepts_f58_from_prolog():
    assert env.parse_env(environ()).jobid == jobid.parse(F58)


def test_parse_env_accepts_ascii_f58():
    assert env.parse_env(environ(FLUX_JOB_ID="f2Mxq3uHK")).jobid == int(DEC)


def test_parse_env_accepts_decimal_from_housekeeping():
    e = env.parse_env(environ(FLUX_JOB_ID=DEC))
    assert e.jobid == jobid.parse(F58)
    assert e.userid == 1000


def test_parse_env_keeps_flux_uri():
    e = env.parse_env(environ(FLUX_URI="local:///tmp/x/local-1"))
    assert e.uri == "local:///tmp/x/local-1"


@pytest.mark.parametrize("var", ["FLUX_JOB_ID", "FLUX_JOB_USERID"])
def test_parse_env_names_missing_variable(var):
    with pytest.raises(env.PerilogError, match=f"{var} is not set"):
        env.parse_env(environ(**{var: None}))


@pytest.mark.parametrize("bad", ["", "ƒ0OIl", "12abc", "-5"])
def test_parse_env_refuses_bad_jobid_naming_variable(bad):
    with pytest.raises(env.PerilogError, match="FLUX_JOB_ID"):
        env.parse_env(environ(FLUX_JOB_ID=bad))


@pytest.mark.parametrize("bad", ["", "alice", "-1", "1.5", "4294967295"])
def test_parse_env_refuses_bad_userid_naming_variable(bad):
    with pytest.raises(env.PerilogError, match="FLUX_JOB_USERID"):
        env.parse_env(environ(FLUX_JOB_USERID=bad))


def test_message_prefix_is_program_and_f58_jobid():
    line = env.message(perilog.PROLOG, int(DEC), "lock directory is writable")
    assert line == f"flux-pam-prolog[{F58}]: lock directory is writable"
    line = env.message(perilog.HOUSEKEEPING, int(DEC), "x")
    assert line.startswith(f"flux-pam-housekeeping[{F58}]: ")


def test_log_debug_lines_only_when_enabled():
    out = io.StringIO()
    log = env.Log(perilog.PROLOG, int(DEC), debug=False, stream=out)
    log.debug("trace")
    log.error("failure")
    assert out.getvalue() == f"flux-pam-prolog[{F58}]: failure\n"
    log.debug_on = True
    log.debug("trace")
    assert out.getvalue().endswith(f"flux-pam-prolog[{F58}]: trace\n")


def test_log_prefixes_every_line_of_a_multiline_message():
    out = io.StringIO()
    env.Log(perilog.HOUSEKEEPING, 1, stream=out).error("a\nb")
    lines = out.getvalue().splitlines()
    assert lines == ["flux-pam-housekeeping[ƒ2]: a", "flux-pam-housekeeping[ƒ2]: b"]


@pytest.mark.parametrize(
    "value, cfg_debug, expected",
    [
        (None, False, False),
        ("1", False, True),
        ("yes", False, True),
        ("0", False, False),
        ("", False, False),
        (None, True, True),
        ("0", True, True),
    ],
)
def test_debug_from_env_or_pam_debug(value, cfg_debug, expected):
    environ = {} if value is None else {"FLUX_PAM_SCRIPTS_DEBUG": value}
    assert env.debug_enabled(environ, PamConfig(debug=cfg_debug)) is expected


@pytest.mark.parametrize(
    "code, verdict",
    [
        (errno.ENOSYS, calls.ALONE),
        (errno.ETIMEDOUT, calls.ALONE),
        (errno.EHOSTUNREACH, calls.ALONE),
        (errno.EIO, calls.FAIL),
        (errno.EBUSY, calls.FAIL),
        (errno.EPERM, calls.FAIL),
        (errno.EPROTO, calls.FAIL),
    ],
)
def test_module_error_decides_alone_or_fail(code, verdict):
    assert calls.module_verdict(OSError(code, "x")) == verdict


def R(rlite):
    return {"version": 1, "execution": {"R_lite": rlite}}


def test_local_union_takes_only_this_rank_of_each_job():
    a = R([{"rank": "0-1", "children": {"core": "0"}}])
    b = R([{"rank": "0", "children": {"core": "1", "gpu": "0"}}])
    c = R([{"rank": "1", "children": {"core": "1"}}])
    assert work.local_union([a, b, c], 0) == Resources(
        frozenset({0, 1}), frozenset({0})
    )
    assert work.local_union([a, b, c], 1) == Resources(frozenset({0, 1}))
    assert not work.local_union([], 0)


class FakeFuture:
    def __init__(self, result=None, error=None):
        self.result, self.error = result, error

    def wait_for(self, timeout):
        return self

    def get(self):
        if self.error:
            raise self.error
        return self.result


class FakeHandle:
    """A Flux handle answering pam.* from a table (the broker is not here)."""

    def __init__(self, answers):
        self.answers = answers
        self.sent = []

    def get_rank(self):
        return 0

    def rpc(self, topic, payload=None, nodeid=None, flags=0):
        self.sent.append((topic, payload))
        return self.answers[topic]


def broker(answer):
    out = io.StringIO()
    log = env.Log(perilog.PROLOG, 7, debug=True, stream=out)
    return calls.FluxCalls(FakeHandle({"pam.prolog": answer}), log), out


def test_ask_module_returns_answer_when_module_applied():
    b, _ = broker(FakeFuture({"id": 7, "uid": 1000, "result": "applied"}))
    assert b.ask_module(perilog.PROLOG, 7)["result"] == "applied"
    assert b.h.sent == [("pam.prolog", {"id": 7})]


def test_ask_module_absent_means_alone():
    b, out = broker(FakeFuture(error=OSError(errno.ENOSYS, "Function not implemented")))
    assert b.ask_module(perilog.PROLOG, 7) is None
    assert "working alone" in out.getvalue()


def test_ask_module_error_is_final_and_names_cause():
    b, _ = broker(FakeFuture(error=OSError(errno.EIO, "AllowedCPUs: refused")))
    with pytest.raises(env.PerilogError, match="pam module: AllowedCPUs: refused"):
        b.ask_module(perilog.PROLOG, 7)


def test_run_with_bad_env_exits_1_naming_variable(capsys):
    assert perilog.run(perilog.PROLOG, {"FLUX_JOB_USERID": "1"}) == 1
    assert "flux-pam-prolog: FLUX_JOB_ID is not set" in capsys.readouterr().err


def test_log_lines_also_go_to_the_sink_with_the_f58_job():
    out, sunk = io.StringIO(), []
    log = env.Log(perilog.PROLOG, int(DEC), debug=False, stream=out)
    log.sink = lambda level, text: sunk.append((level, text))
    log.error("linger is on\nsecond line")
    log.debug("not shown")
    assert sunk == [(3, f"{F58}: linger is on"), (3, f"{F58}: second line")]
    assert out.getvalue().count("flux-pam-prolog[") == 2


def test_a_broken_sink_leaves_stderr_alone():
    out = io.StringIO()
    log = env.Log(perilog.PROLOG, 1, stream=out)

    def gone(level, text):
        raise OSError(errno.ECONNRESET, "gone")

    log.sink = gone
    log.error("a")
    log.error("b")
    assert log.sink is None and out.getvalue().count("\n") == 2


class ConfigHandle(FakeHandle):
    def __init__(self, conf, path):
        super().__init__({"config.get": FakeFuture(conf)})
        self.path = path

    def attr_get(self, name):
        assert name == "config.path"
        if self.path is None:
            raise OSError(errno.ENOENT, "no such attribute")
        return self.path


def test_a_bad_instance_config_names_the_file_of_config_path_and_the_key(tmp_path):
    (tmp_path / "pam.toml").write_text('[pam]\nkill-slice-grace-time = "abc"\n')
    conf = {"pam": {"kill-slice-grace-time": "abc"}}
    log = env.Log(perilog.PROLOG, 7, stream=io.StringIO())
    b = calls.FluxCalls(ConfigHandle(conf, str(tmp_path)), log)
    with pytest.raises(ConfigError) as info:
        b.config()
    (problem,) = info.value.problems
    assert problem.startswith(f"{tmp_path}/pam.toml: pam.kill-slice-grace-time: ")


def test_a_failed_job_gets_a_fatal_prolog_exception_with_the_reason():
    h = FakeHandle({"job-manager.raise": FakeFuture({})})
    b = calls.FluxCalls(h, env.Log(perilog.PROLOG, 7, stream=io.StringIO()))
    b.raise_exception(7, "flux-pam-prolog: linger is on")
    assert h.sent == [
        (
            "job-manager.raise",
            {
                "id": 7,
                "severity": 0,
                "type": "prolog",
                "note": "flux-pam-prolog: linger is on",
            },
        )
    ]


def test_stderr_is_the_journal_only_when_journal_stream_names_it():
    st = os.fstat(2)
    assert env.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert not env.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:1"})
    assert not env.stderr_is_journal({"JOURNAL_STREAM": "x:y"})
    assert not env.stderr_is_journal({})

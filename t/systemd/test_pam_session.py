"""pam_flux.so sessions against the real systemd in the test bed.

pamtester runs inside the container as the PAM application, so the process
pam_flux moves is pamtester itself, never the test runner.  pam_flux.so is
built in the repository on the host (the container sees the repository and
flux-core's libraries at the same paths).  The broker is a stand-in
(t/fluxpeer.py) run by the test on the host, its socket in the test bed's
share directory, which the container sees as testbed.SHARE_DIR.

Two broker modes: *fallback* (no pam module: pam.check and pam.attach get
ENOSYS, job-list.list admits alice, config.get turns manage-user-slice on,
and the session is confirmed with the marker LOCKDIR/uid.1000.active under
the per-user lock) and *module* (pam.check admits alice with
manage_user_slice true; pam.attach answers as the test says).  A pam_exec
line after pam_flux records the cgroup the session ended up in.  pam_flux's
syslog lines are read from the container's journal.
"""

import json
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pambuild  # noqa: E402
import testbed as tb  # noqa: E402
from fluxpeer import Peer  # noqa: E402

SERVICE = "flux-pam-test"
ETC = "/etc/flux-pam-test"
OUT = "/run/flux-pam-test-out"
LOCKDIR = "/run/flux-pam-session-test"  # own lock dir: other tests use /run/flux-pam
DENIED = "Access denied: user alice has no active jobs on this node"
SETUP_FAILED = "Access denied: cannot set up a session for user alice on this node"
NOT_ENFORCED = (
    "Access denied: CPU confinement is not enforced on this node;"
    " ask your administrator"
)
ALICE_JOB = {"id": 1, "userid": 1000, "ranks": "0", "state": 16}
FALLBACK = {
    "job-list.list": {"response": {"jobs": [ALICE_JOB]}},
    "config.get": {"response": {"pam": {"manage-user-slice": True}}},
}
MODULE = {
    "pam.check": {
        "response": {"admitted": True, "jobs": [1], "manage_user_slice": True}
    },
}
ATTACHED = {"pam.attach": {"response": {"attached": True}}}


def put(testbed, path, text, mode="0644"):
    p = testbed.run(
        [
            "sh",
            "-c",
            f'mkdir -p "$(dirname {path})" && cat > {path} && chmod {mode} {path}',
        ],
        input=text,
    )
    assert p.returncode == 0, p.stderr


def sh(testbed, script):
    p = testbed.run(["sh", "-c", script])
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def builds(testbed):
    try:
        return pambuild.builds(testbed.repo)
    except pambuild.Unbuildable as exc:
        pytest.skip(str(exc))


def loadable(testbed, build):
    """*build*, if it is one and loads in the container; else skip saying why."""
    if isinstance(build, str):
        pytest.skip(build)
    ldd = testbed.run(["ldd", build.path])
    if ldd.returncode != 0 or "not found" in ldd.stdout:
        pytest.skip(f"pam_flux.so does not load in the test bed:\n{ldd.stdout}")
    return build


@pytest.fixture(params=["plain", "asan"])
def module(request, testbed, builds):
    """Each build of pam_flux.so (built on the host), loadable in the bed."""
    return loadable(testbed, builds[request.param])


class Session:
    """The PAM service, the stand-in broker and the journal of one test."""

    def __init__(self, testbed, module):
        self.testbed = testbed
        self.build = module
        self.peer = Peer(os.path.join(testbed.share, "flux-local"), FALLBACK)
        self.uri = f"local://{tb.SHARE_DIR}/flux-local"
        line = f"{module.path} service={SERVICE} lock-dir={LOCKDIR} timeout=3s"
        put(
            testbed,
            f"/etc/pam.d/{SERVICE}",
            f"account  required  {line}\n"
            f"session  requisite {line}\n"
            f"session  required  pam_exec.so {ETC}/record.sh\n",
        )
        self.record()
        sh(testbed, f"rm -rf {OUT}; mkdir -p -m 0700 {LOCKDIR}")
        out = sh(testbed, "journalctl -q -n 0 --show-cursor")
        self.cursor = out.strip().rsplit("cursor: ", 1)[-1]

    def record(self, extra=""):
        put(
            self.testbed,
            f"{ETC}/record.sh",
            "#!/bin/sh\n"
            '[ "$PAM_TYPE" = open_session ] || exit 0\n'
            f"mkdir -p {OUT}\n"
            f"echo $PPID > {OUT}/pid\n"
            f"cat /proc/self/cgroup > {OUT}/cgroup\n" + extra,
            mode="0755",
        )

    def answers(self, answers):
        self.peer.answers = dict(answers)

    def marker(self, present, content=""):
        py = (
            "from flux_pam_service.core import lockdir\n"
            f"with lockdir.user_lock(1000, {LOCKDIR!r}):\n"
            + (
                f"    lockdir.set_marker(1000, {LOCKDIR!r}, {content!r})\n"
                if present
                else f"    lockdir.clear_marker(1000, {LOCKDIR!r})\n"
            )
        )
        p = self.testbed.run(
            ["python3", "-c", py], env={"PYTHONPATH": self.testbed.repo}
        )
        assert p.returncode == 0, p.stderr

    def pamtester(self, **env):
        p = self.testbed.run(
            ["pamtester", "-v", SERVICE, "alice", "acct_mgmt", "open_session"],
            env={"FLUX_URI": self.uri, **self.build.env(), **env},
        )
        problems = self.build.problems(p.stderr)
        assert not problems, "sanitizer:\n" + "\n\n".join(problems)
        return p

    def logged(self, text, timeout=10.0):
        """Whether pam_flux logged a line containing *text* (the journal
        takes syslog lines in asynchronously: wait for it)."""
        deadline = time.monotonic() + timeout
        while True:
            out = sh(
                self.testbed,
                # (journalctl 252 finds nothing after a cursor with a match)
                f"journalctl -q -o cat --after-cursor='{self.cursor}'",
            )
            lines = [x for x in out.splitlines() if "pam_flux(" in x]
            if any(text in line for line in lines):
                return True
            if time.monotonic() > deadline:
                print("\n".join(lines))
                return False
            time.sleep(0.2)

    def attach_scope(self):
        attaches = [p for t, p in self.peer.requests if t == "pam.attach"]
        assert len(attaches) == 1, self.peer.requests
        assert attaches[0]["uid"] == 1000
        return attaches[0]["scope"]

    def recorded(self):
        p = self.testbed.run(["sh", "-c", f"cat {OUT}/pid {OUT}/cgroup"])
        if p.returncode != 0:
            return None, None
        pid, *lines = p.stdout.splitlines()
        unified = [line[3:] for line in lines if line.startswith("0::")]
        return int(pid), unified[0]

    def close(self):
        self.peer.close()
        assert not self.peer.errors, self.peer.errors


def open_session(testbed, module):
    s = Session(testbed, module)
    yield s
    s.close()
    sh(testbed, f"chmod 0700 {LOCKDIR}")
    s.marker(False)


@pytest.fixture
def session(testbed, alice, module):
    yield from open_session(testbed, module)


@pytest.fixture
def plain_session(testbed, alice, builds):
    """A session with the plain build: the race is a test of timing."""
    yield from open_session(testbed, loadable(testbed, builds["plain"]))


def wait_gone(sd, unit, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sd.get_unit(unit) is None:
            return True
        time.sleep(0.05)
    return False


def expect_in_scope(session):
    pid, cgroup = session.recorded()
    assert cgroup == f"/user.slice/user-1000.slice/flux-pam-{pid}.scope"
    assert session.attach_scope() == f"flux-pam-{pid}.scope"


def test_session_puts_login_in_scope_under_user_slice(session):
    session.marker(True)
    p = session.pamtester()
    assert p.returncode == 0, p.stderr
    expect_in_scope(session)
    assert [t for t, _ in session.peer.requests] == [
        "pam.check",
        "attr.get",
        "job-list.list",
        "config.get",
        "pam.attach",
    ]


def test_session_over_the_system_bus(session):
    """With DBUS_SYSTEM_BUS_ADDRESS set, pam_flux goes through the bus daemon
    (otherwise, as root, it talks to systemd's own socket)."""
    session.marker(True)
    p = session.pamtester(
        DBUS_SYSTEM_BUS_ADDRESS="unix:path=/run/dbus/system_bus_socket"
    )
    assert p.returncode == 0, p.stderr
    expect_in_scope(session)


def test_session_sets_runtime_dir_and_session_bus(session, testbed):
    session.marker(True)
    session.record(f'echo "$XDG_RUNTIME_DIR $DBUS_SESSION_BUS_ADDRESS" > {OUT}/env\n')
    p = session.pamtester()
    assert p.returncode == 0, p.stderr
    env = sh(testbed, f"cat {OUT}/env").split()
    assert env == ["/run/user/1000", "unix:path=/run/user/1000/bus"]


def test_session_refused_without_marker_removes_scope(session, sd):
    session.marker(False)
    p = session.pamtester()
    assert p.returncode == 1, (p.returncode, p.stderr)  # refused, not killed
    assert DENIED in p.stderr
    assert session.recorded() == (None, None)  # the stack stopped at pam_flux
    scope = session.attach_scope()
    assert wait_gone(sd, scope), f"{scope} is still loaded"
    assert session.logged(
        "session refused for user alice (uid=1000): no longer active"
        " (marker: no marker)"
    )


def test_session_refused_with_the_markers_deny_line(session, sd):
    """The module answered the account step, then is gone (ENOSYS): the
    marker decides, and its deny line is what the user is told."""
    session.answers(MODULE)
    session.marker(True, f"deny: {NOT_ENFORCED}\n")
    p = session.pamtester()
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert NOT_ENFORCED in p.stderr
    assert wait_gone(sd, session.attach_scope())


def test_session_refused_when_module_refuses_attach(session, sd):
    session.marker(True)  # the module is authoritative when it answers
    session.answers(
        {**MODULE, "pam.attach": {"errno": 1, "error": "user 1000 has no job"}}
    )
    p = session.pamtester()
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert DENIED in p.stderr
    assert wait_gone(sd, session.attach_scope())


def test_session_refused_with_the_modules_message(session, sd):
    refusal = {"response": {"attached": False, "message": NOT_ENFORCED}}
    session.answers({**MODULE, "pam.attach": refusal})
    p = session.pamtester()
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert NOT_ENFORCED in p.stderr and DENIED not in p.stderr
    assert session.recorded() == (None, None)
    assert wait_gone(sd, session.attach_scope())


@pytest.mark.parametrize(
    "answer",
    [
        {"errno": 11, "error": "user-1000.slice: not prepared"},
        {"response": {"attached": "yes"}},
        {"hang": True},
    ],
    ids=["eagain", "garbage", "silent"],
)
def test_session_fails_closed_when_attach_cannot_confirm(session, sd, answer):
    session.answers({**MODULE, "pam.attach": answer})
    p = session.pamtester()
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert SETUP_FAILED in p.stderr
    assert wait_gone(sd, session.attach_scope(), timeout=15)
    assert session.logged("cannot confirm flux-pam-")


def test_session_confirmed_by_module_attach_without_marker(session):
    session.marker(False)
    session.answers({**MODULE, **ATTACHED})
    p = session.pamtester()
    assert p.returncode == 0, p.stderr
    expect_in_scope(session)


@pytest.mark.parametrize(
    "mode,message",
    [
        # the fallback's account step reads the marker there: it cannot
        ("fallback", "the jobs of user alice on this node cannot be checked"),
        ("module", SETUP_FAILED),
    ],
)
def test_login_refused_when_lock_dir_is_group_writable(session, testbed, mode, message):
    session.marker(True)
    if mode == "module":
        session.answers({**MODULE, **ATTACHED})
    sh(testbed, f"chmod 0770 {LOCKDIR}")
    p = session.pamtester()
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert message in p.stderr
    assert session.recorded() == (None, None)  # no session, no scope
    assert "pam.attach" not in [t for t, _ in session.peer.requests]
    assert session.logged("is group- or other-writable (mode 0770)")
    assert sh(testbed, f"stat -c %a {LOCKDIR}").strip() == "770"  # left as found


RACE = r"""
import json, os, subprocess, sys, threading, time
from flux_pam_service.core import lockdir

SERVICE, LOCKDIR, SLICE_DIR = sys.argv[1], sys.argv[2], sys.argv[3]
with lockdir.user_lock(1000, LOCKDIR):
    lockdir.set_marker(1000, LOCKDIR)
results = []
stop = time.monotonic() + 8.0

def logins():
    while time.monotonic() < stop:
        t0 = time.monotonic()
        p = subprocess.run(
            ["pamtester", SERVICE, "alice", "acct_mgmt", "open_session"],
            capture_output=True,
        )
        results.append((t0, p.returncode))

threads = [threading.Thread(target=logins) for _ in range(4)]
for t in threads:
    t.start()
time.sleep(4.0)
# the fallback teardown: mark the user inactive, then kill the slice
with lockdir.user_lock(1000, LOCKDIR):
    teardown = time.monotonic()
    lockdir.clear_marker(1000, LOCKDIR)
    subprocess.run(["systemctl", "kill", "-s", "KILL", "user-1000.slice"])
for t in threads:
    t.join()
time.sleep(1.0)
left = []
for root, dirs, files in os.walk(SLICE_DIR):
    if "cgroup.procs" in files:
        with open(os.path.join(root, "cgroup.procs")) as f:
            left += [(root, int(pid)) for pid in f.read().split()]
print(json.dumps({"results": results, "teardown": teardown, "left": left}))
"""


def test_logins_racing_last_job_teardown_never_survive_it(plain_session, testbed):
    """doc/design.rst with the marker fallback: after the teardown has
    marked the user inactive and killed the slice, no login remains in it and
    none started after it was admitted."""
    session = plain_session
    session.record("sleep 300 </dev/null >/dev/null 2>&1 &\n")  # the "shell"
    p = testbed.run(
        [
            "python3",
            "-c",
            RACE,
            SERVICE,
            LOCKDIR,
            "/sys/fs/cgroup/user.slice/user-1000.slice",
        ],
        env={"PYTHONPATH": testbed.repo, "FLUX_URI": session.uri},
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.splitlines()[-1])
    before = [rc for t0, rc in out["results"] if t0 < out["teardown"]]
    after = [rc for t0, rc in out["results"] if t0 > out["teardown"]]
    assert 0 in before, "no login got in before the teardown: race not exercised"
    assert after and all(rc != 0 for rc in after), out["results"]
    assert out["left"] == [], f"processes left in user-1000.slice: {out['left']}"

"""pam_flux sessions against the real systemd in the test bed.

pamtester runs inside the container as the PAM application, so the process
pam_flux moves is pamtester itself, never the test runner.  No broker runs in
the test bed: the account phase takes its answer from pam_flux's test-only
``test-answers=`` file, and ``pam.attach`` is absent from it (ENOSYS, "module
not loaded") unless a test says otherwise, so the session is confirmed with
the marker LOCKDIR/uid.1000.active under the per-user lock, as on a
node without the broker module.  A pam_exec line after pam_flux records the
cgroup the session ended up in.
"""

import json
import time

import pytest

SERVICE = "flux-pam-test"
ETC = "/etc/flux-pam-test"
OUT = "/run/flux-pam-test-out"
LOCKDIR = "/run/flux-pam-session-test"  # own lock dir: other tests use /run/flux-pam
DENIED = "Access denied: user alice has no active jobs on this node"
SETUP_FAILED = "Access denied: cannot set up a session for user alice on this node"


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


class Session:
    """The PAM service, answers and config of one test, inside the container."""

    def __init__(self, testbed):
        self.testbed = testbed
        repo = testbed.repo
        args = (
            f"pythonpath={repo} service={SERVICE} config={ETC}/conf.d"
            f" lock-dir={LOCKDIR} test-answers={ETC}/answers.json"
        )
        module = f"pam_python.so {repo}/pam/pam_flux.py {args}"
        put(
            testbed,
            f"/etc/pam.d/{SERVICE}",
            f"account  required  {module}\n"
            f"session  requisite {module}\n"
            f"session  required  pam_exec.so {ETC}/record.sh\n",
        )
        put(
            testbed,
            f"{ETC}/record.sh",
            "#!/bin/sh\n"
            f'[ "$PAM_TYPE" = open_session ] || exit 0\n'
            f"mkdir -p {OUT}\n"
            f"echo $PPID > {OUT}/pid\n"
            f"cat /proc/self/cgroup > {OUT}/cgroup\n",
            mode="0755",
        )
        put(testbed, f"{ETC}/conf.d/pam.toml", "[pam]\nmanage-user-slice = true\n")
        sh(testbed, f"rm -rf {OUT} {ETC}/log; mkdir -p -m 0700 {LOCKDIR}")
        self.answers()

    def answers(self, **rpc):
        rpc.setdefault("pam.check", {"response": {"admitted": True, "jobs": [1]}})
        obj = {"attrs": {"rank": "0"}, "rpc": rpc, "log": f"{ETC}/log"}
        put(self.testbed, f"{ETC}/answers.json", json.dumps(obj))

    def marker(self, present):
        py = (
            "from flux_pam_service import lockdir\n"
            f"with lockdir.user_lock(1000, {LOCKDIR!r}):\n"
            f"    lockdir.{'set_marker' if present else 'clear_marker'}"
            f"(1000, {LOCKDIR!r})\n"
        )
        p = self.testbed.run(
            ["python3", "-c", py], env={"PYTHONPATH": self.testbed.repo}
        )
        assert p.returncode == 0, p.stderr

    def pamtester(self):
        return self.testbed.run(
            ["pamtester", "-v", SERVICE, "alice", "acct_mgmt", "open_session"]
        )

    def records(self):
        p = self.testbed.run(["cat", f"{ETC}/log"])
        return [json.loads(line) for line in p.stdout.splitlines()]

    def attach_scope(self):
        attaches = [
            r["payload"] for r in self.records() if r.get("rpc") == "pam.attach"
        ]
        assert len(attaches) == 1, self.records()
        assert attaches[0]["uid"] == 1000
        return attaches[0]["scope"]

    def recorded(self):
        p = self.testbed.run(["sh", "-c", f"cat {OUT}/pid {OUT}/cgroup"])
        if p.returncode != 0:
            return None, None
        pid, *lines = p.stdout.splitlines()
        unified = [line[3:] for line in lines if line.startswith("0::")]
        return int(pid), unified[0]


@pytest.fixture
def session(testbed, alice):
    s = Session(testbed)
    yield s
    sh(testbed, f"chmod 0700 {LOCKDIR}")
    s.marker(False)


def wait_gone(sd, unit, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sd.get_unit(unit) is None:
            return True
        time.sleep(0.05)
    return False


def test_session_puts_login_in_scope_under_user_slice(session):
    session.marker(True)
    p = session.pamtester()
    assert p.returncode == 0, p.stderr
    pid, cgroup = session.recorded()
    assert cgroup == f"/user.slice/user-1000.slice/flux-pam-{pid}.scope"
    assert session.attach_scope() == f"flux-pam-{pid}.scope"


def test_session_sets_runtime_dir_and_session_bus(session, testbed):
    session.marker(True)
    put(
        testbed,
        f"{ETC}/record.sh",
        "#!/bin/sh\n"
        '[ "$PAM_TYPE" = open_session ] || exit 0\n'
        f"mkdir -p {OUT}\n"
        f"echo $PPID > {OUT}/pid\n"
        f"cat /proc/self/cgroup > {OUT}/cgroup\n"
        f'echo "$XDG_RUNTIME_DIR $DBUS_SESSION_BUS_ADDRESS" > {OUT}/env\n',
        mode="0755",
    )
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


def test_session_refused_when_module_refuses_attach(session, sd):
    session.marker(True)  # the module is authoritative when it answers
    session.answers(**{"pam.attach": {"errno": 1, "error": "user 1000 has no job"}})
    p = session.pamtester()
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert DENIED in p.stderr
    assert wait_gone(sd, session.attach_scope())


def test_session_confirmed_by_module_attach_without_marker(session):
    session.marker(False)
    session.answers(**{"pam.attach": {"response": {"attached": True}}})
    p = session.pamtester()
    assert p.returncode == 0, p.stderr
    pid, cgroup = session.recorded()
    assert cgroup == f"/user.slice/user-1000.slice/flux-pam-{pid}.scope"


def assert_refused_before_any_scope(session):
    """The session stopped at pam_flux, named the lock directory, made no scope."""
    assert session.recorded() == (None, None)
    records = session.records()
    assert not [r for r in records if r.get("rpc") == "pam.attach"], records
    assert any("group- or other-writable" in r.get("text", "") for r in records)


def test_session_refused_when_lock_dir_is_group_writable(session, testbed, sd):
    session.marker(True)
    sh(testbed, f"chmod 0770 {LOCKDIR}")
    p = session.pamtester()
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert SETUP_FAILED in p.stderr
    assert_refused_before_any_scope(session)
    assert sh(testbed, f"stat -c %a {LOCKDIR}").strip() == "770"  # left as found


def test_session_refused_when_lock_dir_is_group_writable_even_if_module_attaches(
    session, testbed, sd
):
    session.answers(**{"pam.attach": {"response": {"attached": True}}})
    sh(testbed, f"chmod 0770 {LOCKDIR}")
    p = session.pamtester()
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert SETUP_FAILED in p.stderr
    assert_refused_before_any_scope(session)


RACE = r"""
import json, os, subprocess, sys, threading, time
from flux_pam_service import lockdir

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


def test_logins_racing_last_job_teardown_never_survive_it(session, testbed):
    """DESIGN.md section 4 with the marker fallback: after the teardown has
    marked the user inactive and killed the slice, no login remains in it and
    none started after it was admitted."""
    put(
        testbed,
        f"{ETC}/record.sh",
        "#!/bin/sh\n"
        '[ "$PAM_TYPE" = open_session ] || exit 0\n'
        "sleep 300 </dev/null >/dev/null 2>&1 &\n",  # the login's "shell"
        mode="0755",
    )
    p = testbed.run(
        [
            "python3",
            "-c",
            RACE,
            SERVICE,
            LOCKDIR,
            "/sys/fs/cgroup/user.slice/user-1000.slice",
        ],
        env={"PYTHONPATH": testbed.repo},
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.splitlines()[-1])
    before = [rc for t0, rc in out["results"] if t0 < out["teardown"]]
    after = [rc for t0, rc in out["results"] if t0 > out["teardown"]]
    assert 0 in before, "no login got in before the teardown: race not exercised"
    assert after and all(rc != 0 for rc in after), out["results"]
    assert out["left"] == [], f"processes left in user-1000.slice: {out['left']}"

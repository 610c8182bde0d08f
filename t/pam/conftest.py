"""The pam tier: real PAM stacks running the compiled pam_flux.so.

The module is built from pam/pam_flux.c twice (t/pambuild.py): as installed,
and with AddressSanitizer and UndefinedBehaviorSanitizer.  Every test runs
with both builds (the ``build`` fixture); after every run of the sanitizer
build the test fails on any sanitizer error and on any leak that has
pam_flux.so on its stack (the PAM application, Python, leaks a few blocks of
its own at exit; those never involve pam_flux.so).

Each PAM transaction runs in a fresh process (pamrun.py, or pamtester) with
libpam_wrapper preloaded, so the stack is read from a test directory instead
of /etc/pam.d, and pam_syslog()'s lines go to stderr as ``SYSLOG(PRIORITY):
TEXT`` (pam_wrapper's debug log), where the tests read them.  The broker is
a stand-in speaking the local connector protocol (t/fluxpeer.py) on a socket
named by FLUX_URI in the application's environment.

Stacks put pam_debug after pam_flux::

    TYPE [success=done ignore=ignore default=die] pam_flux.so ...
    TYPE requisite pam_debug.so acct=try_again ...

so the transaction returns pam_flux's own code, or PAM_TRY_AGAIN when
pam_flux returned PAM_IGNORE.

Needs pam_flux.so to build (flux-core, libpam0g-dev, libjansson-dev,
libsystemd-dev), libpam-wrapper and python3-pypamtest; the whole tier is
skipped, saying what is missing, without them.
"""

import ctypes.util
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PAMRUN = HERE / "pamrun.py"
sys.path.insert(0, str(HERE.parent))  # t/: fluxpeer

import pambuild  # noqa: E402
from fluxpeer import Peer  # noqa: E402

# Linux-PAM return codes (security/_pam_types.h)
PAM = {
    "PAM_SUCCESS": 0,
    "PAM_SERVICE_ERR": 3,
    "PAM_SYSTEM_ERR": 4,
    "PAM_BUF_ERR": 5,
    "PAM_PERM_DENIED": 6,
    "PAM_USER_UNKNOWN": 10,
    "PAM_SESSION_ERR": 14,
    "IGNORED": 24,  # PAM_TRY_AGAIN from pam_debug: pam_flux said PAM_IGNORE
}
CODE_NAMES = {v: k for k, v in PAM.items()}
FALLTHROUGH = (
    "pam_debug.so auth=try_again cred=try_again acct=try_again"
    " open_session=try_again close_session=try_again"
)
NO_BUS = "unix:path=/nonexistent/flux-pam-test-bus"
TYPES = ("auth", "account", "password", "session")
SYSLOG = re.compile(r"SYSLOG\((\d+)\): (.*)$")


def missing_requirements():
    """Return why the pam tier cannot run here, or None."""
    missing = []
    if not ctypes.util.find_library("pam_wrapper"):
        missing.append("libpam_wrapper.so (libpam-wrapper)")
    if importlib.util.find_spec("pypamtest") is None:
        missing.append("pypamtest (python3-pypamtest)")
    if shutil.which("make") is None:
        missing.append("make")
    return ", ".join(missing) or None


@pytest.fixture(scope="session")
def builds():
    """{"plain": Build, "asan": Build or the reason it is missing}."""
    reason = missing_requirements()
    if reason:
        pytest.skip(f"pam tier needs {reason}")
    try:
        return pambuild.builds(REPO)
    except pambuild.Unbuildable as exc:
        pytest.skip(f"pam tier: {exc}")


@pytest.fixture(params=["plain", "asan"])
def build(request, builds):
    b = builds[request.param]
    if isinstance(b, str):
        pytest.skip(b)
    return b


def wrapper_env(svcdir, build, extra=None):
    env = dict(os.environ)
    for name in ("FLUX_URI", "PYTHONPATH"):
        env.pop(name, None)
    env.update(
        PAM_WRAPPER="1",
        PAM_WRAPPER_SERVICE_DIR=str(svcdir),
        PAM_WRAPPER_DEBUGLEVEL="2",
        DBUS_SYSTEM_BUS_ADDRESS=NO_BUS,
    )
    env.update(build.env("libpam_wrapper.so"))
    env.update(extra or {})
    return env


class Result:
    """One transaction: ok, error, errors (messages), env, logs."""

    def __init__(self, out, stderr):
        self.ok = out["ok"]
        self.error = out["error"]
        self.errors = out["errors"]
        self.infos = out["infos"]
        self.env = out["env"]
        self.stderr = stderr
        self.logs = [
            (int(m.group(1)), m.group(2))
            for m in map(SYSLOG.search, stderr.splitlines())
            if m
        ]
        self.texts = [text for _, text in self.logs]

    def returned(self, expected):
        """The code of the operation that was expected to return the code
        named *expected*: that one, or the one pypamtest says it got."""
        if self.ok:
            return PAM[expected]
        m = re.search(r"returned \[(\d+)\]", self.error or "")
        return int(m.group(1)) if m else None


class PamRig:
    """A PAM service directory, pam_flux options, stand-in brokers and logs."""

    def __init__(self, tmp_path, build):
        self.tmp = tmp_path
        self.build = build
        self.svcdir = tmp_path / "pam.d"
        self.svcdir.mkdir()
        (self.svcdir / "other").write_text(
            "".join(f"{t} required pam_deny.so\n" for t in TYPES)
        )
        self.lockdir = tmp_path / "locks"
        # AF_UNIX paths are limited to 108 bytes: tmp_path can be longer.
        self.sockdir = tempfile.mkdtemp(prefix="pf.", dir="/tmp")
        self.env = {}
        self.peers = []
        self.last = None

    def peer(self, answers=None, attrs=None, name="local", **kw):
        """Start a stand-in broker; the first one is FLUX_URI."""
        p = Peer(os.path.join(self.sockdir, name), answers, attrs, **kw)
        self.peers.append(p)
        self.env.setdefault("FLUX_URI", p.uri)
        return p

    def no_broker(self):
        """FLUX_URI names a socket that does not exist."""
        self.env["FLUX_URI"] = f"local://{self.sockdir}/absent"

    def options(self, options=()):
        return [f"lock-dir={self.lockdir}"] + list(options)

    def stack(self, options=(), service="sshd", raw_options=None, module=None):
        args = raw_options if raw_options is not None else self.options(options)
        lines = []
        for kind in ("auth", "account", "session"):
            lines.append(
                f"{kind} [success=done ignore=ignore default=die]"
                f" {module or self.build.path} {' '.join(args)}"
            )
            lines.append(f"{kind} requisite {FALLTHROUGH}")
        (self.svcdir / service).write_text("\n".join(lines) + "\n")

    def _check(self, proc):
        problems = self.build.problems(proc.stderr)
        assert not problems, "sanitizer:\n" + "\n\n".join(problems)

    def runs(self, transactions, env=None):
        """Run transactions [(user, [(op, code name)], service)] in one process."""
        req = [
            {"user": u, "service": s, "ops": [[op, PAM[code]] for op, code in ops]}
            for u, ops, s in transactions
        ]
        proc = subprocess.run(
            [sys.executable, str(PAMRUN), json.dumps(req)],
            env=wrapper_env(self.svcdir, self.build, {**self.env, **(env or {})}),
            capture_output=True,
            text=True,
            timeout=300,
        )
        self._check(proc)
        lines = proc.stdout.strip().splitlines()
        assert proc.returncode == 0 and len(lines) == len(req), proc.stderr[-3000:]
        parts = re.split(r"^--- pamrun \d+$", proc.stderr, flags=re.M)[1:]
        return [Result(json.loads(line), err) for line, err in zip(lines, parts)]

    def run(self, user, ops, service="sshd", env=None):
        """Run *ops* [(op, expected code name)] on one handle."""
        self.last = self.runs([(user, ops, service)], env)[0]
        return self.last

    def expect(self, user, ops, service="sshd", env=None):
        res = self.run(user, ops, service, env)
        assert res.ok, f"{res.error}\n{res.stderr[-3000:]}"
        return res

    def pamtester(self, user, *ops, service="sshd", env=None):
        proc = subprocess.run(
            ["pamtester", "-v", service, user, *ops],
            env=wrapper_env(self.svcdir, self.build, {**self.env, **(env or {})}),
            capture_output=True,
            text=True,
            timeout=120,
        )
        self._check(proc)
        return proc

    def logs(self):
        return self.last.texts if self.last else []

    def close(self):
        for p in self.peers:
            p.close()
        for p in self.peers:
            assert not p.errors, p.errors
        shutil.rmtree(self.sockdir, ignore_errors=True)


@pytest.fixture
def rig(tmp_path, build):
    r = PamRig(tmp_path, build)
    yield r
    r.close()

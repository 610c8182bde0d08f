"""The pam tier: real PAM stacks running pam/pam_flux.py through pam_python.so.

Each PAM transaction runs in a fresh process (pamrun.py, or pamtester) with
libpam_wrapper preloaded, so the stack is read from a test directory instead
of /etc/pam.d.  The broker's answers come from a JSON file given to pam_flux
with its test-only ``test-answers=`` option; that file also names a log to
which pam_flux appends every request it sends and every line it logs.

Stacks put a fallthrough module after pam_flux::

    TYPE [success=done ignore=ignore default=die] pam_python.so pam_flux.py ...
    TYPE requisite pam_python.so fallthrough.py

so the transaction returns pam_flux's own code, or PAM_TRY_AGAIN when pam_flux
returned PAM_IGNORE.

Needs libpam-python, libpam-wrapper and python3-pypamtest; the whole tier is
skipped, saying which is missing, without them.
"""

import ctypes.util
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PAM_FLUX = REPO / "pam" / "pam_flux.py"
FALLTHROUGH = HERE / "fallthrough.py"
PAMRUN = HERE / "pamrun.py"

# Linux-PAM return codes (security/_pam_types.h)
PAM = {
    "PAM_SUCCESS": 0,
    "PAM_SERVICE_ERR": 3,
    "PAM_SYSTEM_ERR": 4,
    "PAM_PERM_DENIED": 6,
    "PAM_USER_UNKNOWN": 10,
    "PAM_SESSION_ERR": 14,
    "IGNORED": 24,  # PAM_TRY_AGAIN from fallthrough.py: pam_flux said PAM_IGNORE
}

PAM_PYTHON_PATHS = (
    "/lib/security/pam_python.so",
    "/usr/lib/security/pam_python.so",
    "/lib/x86_64-linux-gnu/security/pam_python.so",
    "/usr/lib/x86_64-linux-gnu/security/pam_python.so",
)


def missing_requirements():
    """Return why the pam tier cannot run here, or None."""
    missing = []
    if not any(os.path.exists(p) for p in PAM_PYTHON_PATHS):
        missing.append("pam_python.so (libpam-python)")
    if not ctypes.util.find_library("pam_wrapper"):
        missing.append("libpam_wrapper.so (libpam-wrapper)")
    if importlib.util.find_spec("pypamtest") is None:
        missing.append("pypamtest (python3-pypamtest)")
    return ", ".join(missing) or None


@pytest.fixture(autouse=True)
def _pam_tier_requirements():
    reason = missing_requirements()
    if reason:
        pytest.skip(f"pam tier needs {reason}")


def wrapper_env(svcdir, extra=None):
    env = dict(os.environ)
    env.pop("FLUX_URI", None)
    env.update(
        LD_PRELOAD="libpam_wrapper.so",
        PAM_WRAPPER="1",
        PAM_WRAPPER_SERVICE_DIR=str(svcdir),
    )
    env.update(extra or {})
    return env


class Result:
    def __init__(self, out, proc):
        self.ok = out["ok"]
        self.error = out["error"]
        self.errors = out["errors"]
        self.infos = out["infos"]
        self.env = out["env"]
        self.stderr = proc.stderr


class PamRig:
    """A PAM service directory, pam_flux options, answers, config and logs."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.svcdir = tmp_path / "pam.d"
        self.svcdir.mkdir()
        self.conf = tmp_path / "conf.d"
        self.conf.mkdir()
        self.lockdir = tmp_path / "locks"
        self.answers_file = tmp_path / "answers.json"
        self.logfile = tmp_path / "pam_flux.log"
        self.config(manage_user_slice=False)

    def answers(self, **obj):
        """Write the broker's answers (see pam_flux.py, test-answers)."""
        obj.setdefault("attrs", {"rank": "0"})
        obj["log"] = str(self.logfile)
        self.answers_file.write_text(json.dumps(obj))
        os.chmod(self.answers_file, 0o644)

    def config(self, manage_user_slice=False, text=None):
        if text is None:
            value = "true" if manage_user_slice else "false"
            text = f"[pam]\nmanage-user-slice = {value}\n"
        (self.conf / "pam.toml").write_text(text)

    def options(self, options=(), answers=True):
        args = [f"pythonpath={REPO}", f"config={self.conf}", f"lock-dir={self.lockdir}"]
        if answers:
            args.append(f"test-answers={self.answers_file}")
        return args + list(options)

    def stack(self, options=(), service="sshd", answers=True, raw_options=None):
        args = (
            raw_options if raw_options is not None else self.options(options, answers)
        )
        lines = []
        for kind in ("auth", "account", "session"):
            lines.append(
                f"{kind} [success=done ignore=ignore default=die] pam_python.so"
                f" {PAM_FLUX} {' '.join(args)}"
            )
            lines.append(f"{kind} requisite pam_python.so {FALLTHROUGH}")
        (self.svcdir / service).write_text("\n".join(lines) + "\n")

    def run(self, user, ops, service="sshd", env=None):
        """Run *ops* [(op, expected code name)] on one handle."""
        req = {
            "user": user,
            "service": service,
            "ops": [[op, PAM[code]] for op, code in ops],
        }
        proc = subprocess.run(
            [sys.executable, str(PAMRUN), json.dumps(req)],
            env=wrapper_env(self.svcdir, env),
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = proc.stdout.strip().splitlines()
        assert proc.returncode == 0 and lines, proc.stderr
        return Result(json.loads(lines[-1]), proc)

    def expect(self, user, ops, service="sshd", env=None):
        res = self.run(user, ops, service, env)
        assert res.ok, f"{res.error}\n{res.stderr}"
        return res

    def pamtester(self, user, *ops, service="sshd", env=None):
        return subprocess.run(
            ["pamtester", "-v", service, user, *ops],
            env=wrapper_env(self.svcdir, env),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def records(self):
        if not self.logfile.exists():
            return []
        return [json.loads(line) for line in self.logfile.read_text().splitlines()]

    def rpcs(self):
        return [(r["rpc"], r["payload"]) for r in self.records() if "rpc" in r]

    def logs(self):
        return [r["text"] for r in self.records() if "log" in r]


@pytest.fixture
def rig(tmp_path):
    return PamRig(tmp_path)

#!/usr/bin/env python3
"""Run every test tier and print ``N passed, N failed, N skipped`` last.

Tiers, in order:

    unit     pytest t/unit                    always
    pam      pytest t/pam                     always (tests skip themselves)
    systemd  pytest t/systemd                 needs the test bed (t/testbed.py)
    broker   sharness/t[01]*.t                needs flux-core
    node     sharness/t2*.t                   needs flux-core and the test bed

flux-core is ``flux`` on PATH or /opt/flux/bin/flux.  The systemd-nspawn test
bed is brought up once (``t/testbed.py up``, whose ``export VAR=value`` lines
go into the environment of the systemd, broker and node tiers) and always
brought down at the end.  A tier that cannot run prints why and counts as
skipped (a pytest tier by its collected tests, a sharness tier one per
script, at least one either way); a test bed that can run but fails to come
up counts as failed.

pytest counts come from its JUnit XML (t/results/TIER.xml); sharness counts
from TAP: ``ok``, ``not ok``, ``# skip``, ``# TODO`` (a known breakage counts
as skipped), and ``1..0 # SKIP reason`` (the whole script is one skip).  A
script that exits non-zero, or whose plan does not match its results, adds a
failure.

Exit status is 0 only if nothing failed and at least one test passed.
"""

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, List, Optional

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(TOP, "t", "results")
TESTBED = os.path.join(TOP, "t", "testbed.py")
SHARNESS_DIR = os.path.join(TOP, "sharness")
FLUX_FALLBACK = "/opt/flux/bin/flux"

PYTEST_TIERS = {"unit": "t/unit", "pam": "t/pam", "systemd": "t/systemd"}
SHARNESS_TIERS = {"broker": r"t[01].*\.t$", "node": r"t2.*\.t$"}
TIERS = ["unit", "pam", "systemd", "broker", "node"]
NEEDS_TESTBED = {"systemd", "node"}
USES_TESTBED = NEEDS_TESTBED | {"broker"}
NEEDS_FLUX = {"broker", "node"}

TESTBED_TIMEOUT = 900
SCRIPT_TIMEOUT = 900  # seconds per sharness script
STRAY_GRACE = 10  # seconds a script's leftovers may hold its stdout


@dataclass
class Result:
    """Counts of one tier."""

    tier: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    notes: List[str] = field(default_factory=list)


def say(text: str) -> None:
    """Print a runner message, flushed so it interleaves with child output."""
    print(f"runtests: {text}", flush=True)


def banner(text: str) -> None:
    print(f"\n===== {text} =====", flush=True)


# -- flux-core ------------------------------------------------------------


def find_flux() -> "tuple[Optional[str], str]":
    """Return (path to flux, "") or (None, reason it is unusable)."""
    path = shutil.which("flux")
    if path is None and os.access(FLUX_FALLBACK, os.X_OK):
        path = FLUX_FALLBACK
    if path is None:
        return None, "flux-core not found (PATH, /opt/flux)"
    try:
        proc = subprocess.run(
            [path, "version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{path} version: {exc}"
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        return None, f"{path} version failed: {err[-1] if err else proc.returncode}"
    return os.path.realpath(path), ""


# -- the systemd-nspawn test bed -----------------------------------------


class Testbed:
    """t/testbed.py: can-run, up (exports), down."""

    def __init__(self) -> None:
        self.env: Dict[str, str] = {}
        self.is_up = False
        self.error = ""
        # A name of our own, so that a run never downs someone else's bed.
        self.name = f"flux-pam-run-{os.getpid()}"

    def _cmd(self, verb: str) -> List[str]:
        if verb in ("up", "down"):
            return [sys.executable, TESTBED, verb, "--name", self.name]
        return [sys.executable, TESTBED, verb]

    def can_run(self) -> "tuple[bool, str]":
        """Return (True, "") or (False, reason)."""
        if not os.path.exists(TESTBED):
            return False, "t/testbed.py missing"
        try:
            proc = subprocess.run(
                self._cmd("can-run"),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
                cwd=TOP,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"t/testbed.py can-run: {exc}"
        if proc.returncode == 0:
            return True, ""
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        reason = lines[-1] if lines else f"exit {proc.returncode}"
        return False, f"test bed cannot run: {reason}"

    def up(self) -> bool:
        """Bring the test bed up and collect its exports."""
        banner("test bed: up")
        self.is_up = True  # from here on, always try to bring it down
        try:
            proc = subprocess.run(
                self._cmd("up"),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
                timeout=TESTBED_TIMEOUT,
                cwd=TOP,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.error = f"t/testbed.py up: {exc}"
            say(self.error)
            return False
        env = {}
        for line in proc.stdout.splitlines():
            print(line, flush=True)
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                name, _, value = words[1].partition("=")
                env[name] = value
        if proc.returncode != 0:
            self.error = f"t/testbed.py up failed (exit {proc.returncode})"
            say(self.error)
            return False
        self.env = env
        say("test bed up: " + " ".join(f"{k}={v}" for k, v in env.items()))
        return True

    def down(self) -> None:
        """Bring the test bed down if up was tried."""
        if not self.is_up:
            return
        banner("test bed: down")
        self.is_up = False
        try:
            proc = subprocess.run(
                self._cmd("down"),
                stdin=subprocess.DEVNULL,
                timeout=TESTBED_TIMEOUT,
                cwd=TOP,
            )
            if proc.returncode != 0:
                say(f"t/testbed.py down failed (exit {proc.returncode})")
        except (OSError, subprocess.TimeoutExpired) as exc:
            say(f"t/testbed.py down: {exc}")


# -- pytest tiers ---------------------------------------------------------


def junit_counts(path: str) -> "tuple[int, int, int]":
    """Return (passed, failed, skipped) from a pytest JUnit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    passed = failed = skipped = 0
    for suite in suites:
        tests = int(suite.get("tests", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skip = int(suite.get("skipped", 0))
        failed += bad
        skipped += skip
        passed += tests - bad - skip
    return passed, failed, skipped


def pytest_collect_count(path: str, args: argparse.Namespace) -> int:
    """Return how many tests pytest would run in *path* (for a skipped tier)."""
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", path]
    if args.k:
        cmd += ["-k", args.k]
    proc = subprocess.run(
        cmd, cwd=TOP, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    return sum(1 for line in proc.stdout.splitlines() if "::" in line)


def run_pytest(tier: str, args: argparse.Namespace, env: Dict[str, str]) -> Result:
    """Run one pytest tier; counts come from its JUnit XML."""
    res = Result(tier)
    path = PYTEST_TIERS[tier]
    if not os.path.isdir(os.path.join(TOP, path)):
        res.notes.append(f"no tests ({path} missing)")
        say(f"{tier} tier: {res.notes[-1]}")
        return res
    os.makedirs(RESULTS, exist_ok=True)
    xml = os.path.join(RESULTS, f"{tier}.xml")
    if os.path.exists(xml):
        os.unlink(xml)
    cmd = [sys.executable, "-m", "pytest", path, "-rs", f"--junitxml={xml}"]
    cmd += ["-v"] if args.verbose else []
    cmd += ["-k", args.k] if args.k else []
    say(" ".join(shlex.quote(c) for c in cmd))
    rc = subprocess.call(cmd, cwd=TOP, env=env, stdin=subprocess.DEVNULL)
    if rc in (130, -2):
        raise KeyboardInterrupt
    if os.path.exists(xml):
        res.passed, res.failed, res.skipped = junit_counts(xml)
    if rc == 5:
        res.notes.append("no tests collected")
    elif rc != 0 and res.failed == 0:
        res.failed += 1
        res.notes.append(f"pytest exited {rc} without a failed test")
    return res


def _pytest_not_run(
    tier: str, reason: str, args: argparse.Namespace, failed: bool
) -> Result:
    """Count a pytest tier that did not run: one skip (or failure) per test."""
    res = Result(tier, notes=[reason])
    say(f"{tier} tier {'failed' if failed else 'skipped'}: {reason}")
    path = PYTEST_TIERS[tier]
    if os.path.isdir(os.path.join(TOP, path)):
        count = max(1, pytest_collect_count(path, args))
        if failed:
            res.failed = count
        else:
            res.skipped = count
    return res


def skip_pytest(tier: str, reason: str, args: argparse.Namespace) -> Result:
    """A pytest tier that cannot run here: its tests count as skipped."""
    return _pytest_not_run(tier, reason, args, failed=False)


def fail_pytest(tier: str, reason: str, args: argparse.Namespace) -> Result:
    """A pytest tier whose prerequisite broke: its tests count as failed."""
    return _pytest_not_run(tier, reason, args, failed=True)


# -- sharness tiers -------------------------------------------------------

_TAP_RESULT = re.compile(r"^(ok|not ok) (\d+)\b(.*)$")
_TAP_PLAN = re.compile(r"^1\.\.(\d+)(?:\s*#\s*SKIP\b\s*(.*))?$", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\x1b\([A-Za-z]")


@dataclass
class TapCounts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    results: int = 0
    plan: Optional[int] = None
    skip_all: Optional[str] = None


def tap_line(line: str, counts: TapCounts) -> None:
    """Account for one line of TAP output."""
    line = _ANSI.sub("", line).rstrip()
    m = _TAP_PLAN.match(line)
    if m:
        counts.plan = int(m.group(1))
        if counts.plan == 0:
            counts.skip_all = (m.group(2) or "no tests").strip()
        return
    m = _TAP_RESULT.match(line)
    if not m:
        return
    counts.results += 1
    ok = m.group(1) == "ok"
    directive = m.group(3)
    if re.search(r"#\s*skip\b", directive, re.IGNORECASE):
        counts.skipped += 1
    elif re.search(r"#\s*TODO\b", directive, re.IGNORECASE):
        # test_expect_failure: a known breakage is not a pass; a vanished
        # one is.
        if ok:
            counts.passed += 1
        else:
            counts.skipped += 1
    elif ok:
        counts.passed += 1
    else:
        counts.failed += 1


def _killpg(proc: "subprocess.Popen[str]") -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _watch(
    proc: "subprocess.Popen[str]", eof: threading.Event, state: Dict[str, str]
) -> None:
    """Kill the script's session on timeout, and strays holding its stdout."""
    try:
        proc.wait(timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        state["killed"] = f"timed out after {SCRIPT_TIMEOUT}s"
        _killpg(proc)
        return
    if not eof.wait(STRAY_GRACE):
        state["killed"] = "left processes behind holding its output; killed them"
        _killpg(proc)


def run_script(script: str, args: argparse.Namespace, env: Dict[str, str]) -> TapCounts:
    """Run one sharness script, echoing and parsing its TAP.

    The script runs in its own session, so a timeout or Ctrl-C kills
    everything it started.
    """
    name = os.path.basename(script)
    cmd = ["bash", name, "--no-color"] + (["--verbose"] if args.verbose else [])
    counts = TapCounts()
    print(f"--- {name}", flush=True)
    proc = subprocess.Popen(
        cmd,
        cwd=SHARNESS_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    assert proc.stdout is not None
    eof = threading.Event()
    state: Dict[str, str] = {}
    watcher = threading.Thread(target=_watch, args=(proc, eof, state), daemon=True)
    watcher.start()
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            tap_line(line, counts)
        eof.set()
        rc = proc.wait()
    except KeyboardInterrupt:
        _killpg(proc)
        proc.wait()
        raise
    watcher.join()
    if "killed" in state:
        counts.failed += 1
        say(f"{name}: {state['killed']}")
        return counts
    if counts.skip_all is not None and counts.results == 0:
        counts.skipped += 1
        say(f"{name}: skipped: {counts.skip_all}")
    if rc != 0 and counts.failed == 0:
        counts.failed += 1
        say(f"{name}: exited {rc} without a failed test")
    elif rc == 0 and counts.plan is None:
        counts.failed += 1
        say(f"{name}: no TAP plan (did it call test_done?)")
    elif counts.plan is not None and counts.plan != counts.results:
        counts.failed += 1
        say(f"{name}: plan 1..{counts.plan} but {counts.results} results")
    return counts


def sharness_scripts(tier: str) -> List[str]:
    if not os.path.isdir(SHARNESS_DIR):
        return []
    pattern = re.compile(SHARNESS_TIERS[tier])
    return [
        os.path.join(SHARNESS_DIR, f)
        for f in sorted(os.listdir(SHARNESS_DIR))
        if pattern.match(f)
    ]


def run_sharness(tier: str, args: argparse.Namespace, env: Dict[str, str]) -> Result:
    res = Result(tier)
    scripts = sharness_scripts(tier)
    if not scripts:
        res.notes.append("no scripts")
        say(f"{tier} tier: no sharness scripts")
    for script in scripts:
        counts = run_script(script, args, env)
        res.passed += counts.passed
        res.failed += counts.failed
        res.skipped += counts.skipped
    return res


def skip_sharness(tier: str, reason: str, failed: bool = False) -> Result:
    """Count a sharness tier that cannot run: one per script."""
    n = len(sharness_scripts(tier))
    res = Result(tier, notes=[reason])
    if failed:
        res.failed = max(1, n)
        say(f"{tier} tier failed: {reason}")
    else:
        res.skipped = max(1, n)
        say(f"{tier} tier skipped: {reason}")
    return res


# -- driver ---------------------------------------------------------------


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--tier",
        action="append",
        choices=TIERS,
        help="run only this tier (repeatable; default: all)",
    )
    p.add_argument("-k", metavar="EXPR", help="pytest -k expression")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def summary(results: List[Result]) -> "tuple[int, int, int]":
    print("\n===== summary =====")
    print(f"{'tier':<9}{'passed':>8}{'failed':>8}{'skipped':>9}  notes")
    total = [0, 0, 0]
    for r in results:
        print(
            f"{r.tier:<9}{r.passed:>8}{r.failed:>8}{r.skipped:>9}  "
            + "; ".join(r.notes)
        )
        total[0] += r.passed
        total[1] += r.failed
        total[2] += r.skipped
    return total[0], total[1], total[2]


def run(args: argparse.Namespace, results: List[Result], testbed: Testbed) -> None:
    selected = [t for t in TIERS if not args.tier or t in args.tier]
    base = dict(os.environ)

    flux, flux_reason = (None, "")
    if NEEDS_FLUX & set(selected):
        flux, flux_reason = find_flux()
        if flux:
            base["FLUX"] = flux
            bindir = os.path.dirname(flux)
            base["PATH"] = bindir + os.pathsep + base.get("PATH", "")
            say(f"flux-core: {flux}")
    base["FLUX_PAM_SRCDIR"] = TOP
    base["PYTHON"] = sys.executable

    # Decide whether the test bed is wanted before bringing it up.
    bed_wanted = [
        t for t in selected if t in USES_TESTBED and not (t in NEEDS_FLUX and not flux)
    ]
    bed_ok, bed_reason = (False, "")
    if bed_wanted:
        bed_ok, bed_reason = testbed.can_run()
        if not bed_ok:
            say(bed_reason)

    for tier in selected:
        if tier in USES_TESTBED and bed_ok and not testbed.is_up:
            testbed.up()
        env = dict(base)
        if tier in USES_TESTBED and testbed.is_up and not testbed.error:
            env.update(testbed.env)
        banner(f"{tier} tier")
        if tier in NEEDS_FLUX and not flux:
            res = skip_sharness(tier, flux_reason)
        elif tier in NEEDS_TESTBED and not bed_ok:
            if tier in PYTEST_TIERS:
                res = skip_pytest(tier, bed_reason, args)
            else:
                res = skip_sharness(tier, bed_reason)
        elif tier in NEEDS_TESTBED and testbed.error:
            if tier in PYTEST_TIERS:
                res = fail_pytest(tier, testbed.error, args)
            else:
                res = skip_sharness(tier, testbed.error, failed=True)
        elif tier in PYTEST_TIERS:
            res = run_pytest(tier, args, env)
        else:
            res = run_sharness(tier, args, env)
        results.append(res)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    results: List[Result] = []
    testbed = Testbed()
    interrupted = False
    try:
        run(args, results, testbed)
    except KeyboardInterrupt:
        interrupted = True
        print("\nruntests: interrupted", flush=True)
    finally:
        testbed.down()
    passed, failed, skipped = summary(results)
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    if interrupted:
        return 130
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())

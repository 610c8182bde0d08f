"""The test runner t/runtests.py: exact counts, skips with reasons, test bed.

Each test builds a small fake project (pytest tiers, sharness scripts, a fake
t/testbed.py and a fake flux) in a temporary directory and points the runner
at it.
"""

import importlib.util
import os
import re
import textwrap
import time

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARNESS_SH = "/usr/share/sharness/sharness.sh"

spec = importlib.util.spec_from_file_location(
    "runtests", os.path.join(TOP, "t", "runtests.py")
)
runtests = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runtests)

needs_sharness = pytest.mark.skipif(
    not os.path.exists(SHARNESS_SH), reason=f"{SHARNESS_SH} missing (sharness)"
)

FAKE_TESTBED = """\
import os, sys
verb = sys.argv[1]
with open(os.environ["FAKE_BED_LOG"], "a") as f:
    f.write(verb + "\\n")
mode = os.environ.get("FAKE_BED_MODE", "ok")
if verb == "can-run" and mode == "cannot":
    print("not root, cannot boot a container")
    sys.exit(1)
if verb == "up" and mode == "upfail":
    print("mmdebstrap failed", file=sys.stderr)
    sys.exit(2)
if verb == "up":
    print("testbed: booting")
    print("export FLUX_PAM_TESTBED=fake-bed")
    print("export DBUS_SYSTEM_BUS_ADDRESS='unix:path=/run/a b/bus'")
"""

SYSTEMD_TESTS = """\
import os
import re

def test_sees_the_test_bed():
    assert os.environ["FLUX_PAM_TESTBED"] == "fake-bed"

def test_sees_the_quoted_bus_address():
    assert os.environ["DBUS_SYSTEM_BUS_ADDRESS"] == "unix:path=/run/a b/bus"
"""


def sharness_script(body):
    return (
        "test_description='fake'\n"
        f". {SHARNESS_SH}\n" + textwrap.dedent(body) + "test_done\n"
    )


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A fake project tree; the runner is pointed at it."""
    for sub in ("t/unit", "t/pam", "t/systemd", "sharness"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "t/unit/test_unit.py").write_text(
        "import os\n\ndef test_ok():\n    assert 'FLUX_PAM_TESTBED' not in os.environ\n"
    )
    (tmp_path / "t/systemd/test_bed.py").write_text(SYSTEMD_TESTS)
    (tmp_path / "t/testbed.py").write_text(FAKE_TESTBED)
    log = tmp_path / "bed.log"
    monkeypatch.setenv("FAKE_BED_LOG", str(log))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("FLUX_PAM_TESTBED", raising=False)
    # quicker inner pytest runs: no Hypothesis plugin, no cache
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:cacheprovider")
    monkeypatch.setattr(runtests, "TOP", str(tmp_path))
    monkeypatch.setattr(runtests, "RESULTS", str(tmp_path / "t/results"))
    monkeypatch.setattr(runtests, "TESTBED", str(tmp_path / "t/testbed.py"))
    monkeypatch.setattr(runtests, "SHARNESS_DIR", str(tmp_path / "sharness"))
    monkeypatch.setattr(runtests, "FLUX_FALLBACK", str(tmp_path / "no/flux"))
    return tmp_path


def bed_calls(project):
    log = project / "bed.log"
    return log.read_text().split() if log.exists() else []


def fake_flux(project, monkeypatch):
    flux = project / "bin/flux"
    flux.parent.mkdir()
    flux.write_text("#!/bin/sh\necho 'commands: 0.88.0'\n")
    flux.chmod(0o755)
    monkeypatch.setattr(runtests, "FLUX_FALLBACK", str(flux))
    return flux


def run(capfd, *argv):
    rc = runtests.main(list(argv))
    out = capfd.readouterr().out
    return rc, out, out.rstrip("\n").splitlines()


def tier_row(out, tier):
    for line in out.splitlines():
        words = line.split()
        if words and words[0] == tier and len(words) >= 4 and words[1].isdigit():
            return tuple(int(w) for w in words[1:4])
    raise AssertionError(f"no summary row for {tier}")


def test_final_line_sums_the_tiers_and_success_needs_a_pass(project, capfd):
    rc, out, lines = run(capfd, "--tier", "unit", "--tier", "pam")
    assert lines[-1] == "1 passed, 0 failed, 0 skipped"
    assert tier_row(out, "unit") == (1, 0, 0)
    assert tier_row(out, "pam") == (0, 0, 0)  # nothing collected is no error
    assert rc == 0


def test_pytest_counts_come_exactly_from_junit(project, capfd):
    (project / "t/unit/test_mixed.py").write_text(
        textwrap.dedent(
            """\
            import pytest

            @pytest.fixture
            def broken():
                raise RuntimeError("setup fails")

            def test_fails():
                assert False

            def test_errors(broken):
                pass

            def test_skips():
                pytest.skip("no widget here")

            @pytest.mark.xfail(reason="known")
            def test_xfails():
                assert False
            """
        )
    )
    rc, out, lines = run(capfd, "--tier", "unit")
    assert tier_row(out, "unit") == (1, 2, 2)
    assert lines[-1] == "1 passed, 2 failed, 2 skipped"
    assert "no widget here" in out  # -rs prints skip reasons
    assert rc == 1


def test_k_is_passed_to_pytest(project, capfd):
    (project / "t/unit/test_more.py").write_text("def test_other():\n    pass\n")
    rc, out, lines = run(capfd, "--tier", "unit", "-k", "other")
    assert lines[-1] == "1 passed, 0 failed, 0 skipped"
    assert "test_other" in open(project / "t/results/unit.xml").read()
    assert "test_ok" not in open(project / "t/results/unit.xml").read()


def test_nothing_but_skips_is_a_failure_of_the_run(project, capfd):
    (project / "t/unit/test_unit.py").write_text(
        "import pytest\n\ndef test_s():\n    pytest.skip('x')\n"
    )
    rc, _, lines = run(capfd, "--tier", "unit")
    assert lines[-1] == "0 passed, 0 failed, 1 skipped"
    assert rc == 1


def test_missing_test_bed_skips_the_systemd_tier_with_reason(project, capfd):
    os.unlink(project / "t/testbed.py")
    rc, out, lines = run(capfd, "--tier", "systemd")
    assert "systemd tier skipped: t/testbed.py missing" in out
    assert tier_row(out, "systemd") == (0, 0, 2)  # one per collected test
    assert lines[-1] == "0 passed, 0 failed, 2 skipped"
    assert rc == 1


def test_test_bed_that_cannot_run_skips_without_up_or_down(project, capfd, monkeypatch):
    monkeypatch.setenv("FAKE_BED_MODE", "cannot")
    rc, out, lines = run(capfd, "--tier", "systemd")
    assert "systemd tier skipped: test bed cannot run: not root" in out
    assert lines[-1] == "0 passed, 0 failed, 2 skipped"
    assert bed_calls(project) == ["can-run"]


def test_test_bed_exports_reach_its_tiers_and_it_comes_down(project, capfd):
    rc, out, lines = run(capfd)
    assert tier_row(out, "unit") == (1, 0, 0)  # before the bed: no exports
    assert tier_row(out, "systemd") == (2, 0, 0)
    assert bed_calls(project) == ["can-run", "up", "down"]
    assert lines[-1] == "3 passed, 0 failed, 2 skipped"  # broker, node: no flux
    assert rc == 0


@needs_sharness
def test_test_bed_that_fails_to_come_up_fails_its_tiers(project, capfd, monkeypatch):
    monkeypatch.setenv("FAKE_BED_MODE", "upfail")
    fake_flux(project, monkeypatch)
    for name in ("t2001-a.t", "t2002-b.t"):
        (project / "sharness" / name).write_text(sharness_script(""))
    rc, out, lines = run(capfd, "--tier", "systemd", "--tier", "node")
    assert "t/testbed.py up failed (exit 2)" in out
    assert tier_row(out, "systemd") == (0, 2, 0)
    assert tier_row(out, "node") == (0, 2, 0)
    assert bed_calls(project) == ["can-run", "up", "down"]
    assert lines[-1] == "0 passed, 4 failed, 0 skipped"
    assert rc == 1


def test_interrupt_still_brings_the_test_bed_down(project, capfd, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runtests, "run_pytest", interrupted)
    rc, out, lines = run(capfd, "--tier", "systemd")
    assert bed_calls(project) == ["can-run", "up", "down"]
    assert "interrupted" in out
    assert lines[-1] == "0 passed, 0 failed, 0 skipped"
    assert rc == 130


@needs_sharness
def test_broker_and_node_tiers_skip_per_script_without_flux(project, capfd):
    for name in ("t0001-a.t", "t1001-b.t", "t2001-c.t"):
        (project / "sharness" / name).write_text(sharness_script(""))
    rc, out, lines = run(capfd, "--tier", "broker", "--tier", "node")
    assert "broker tier skipped: flux-core not found (PATH, /opt/flux)" in out
    assert "node tier skipped: flux-core not found (PATH, /opt/flux)" in out
    assert tier_row(out, "broker") == (0, 0, 2)
    assert tier_row(out, "node") == (0, 0, 1)
    assert bed_calls(project) == []  # no flux: no reason to boot the bed
    assert rc == 1


@needs_sharness
def test_sharness_tap_is_counted_exactly(project, capfd, monkeypatch):
    flux = fake_flux(project, monkeypatch)
    sh = project / "sharness"
    (sh / "t0001-mixed.t").write_text(
        sharness_script(
            """\
            test_expect_success 'FLUX is the flux binary' '
                test "$FLUX" = "@FLUX@" && command -v flux
            '
            test_expect_success 'fails' 'false'
            test_expect_success NOSUCHPREREQ 'skipped by prereq' 'true'
            test_expect_failure 'known breakage' 'false'
            test_expect_success 'passes' 'true'
            """.replace("@FLUX@", str(flux))
        )
    )
    (sh / "t0002-skip-all.t").write_text(
        f"test_description='x'\n. {SHARNESS_SH}\nskip_all='no widget here'\ntest_done\n"
    )
    (sh / "t1001-dies.t").write_text(
        sharness_script("test_expect_success 'ok' 'true'\nexit 3\n")
    )
    (sh / "t2001-node.t").write_text(sharness_script("test_expect_success x true\n"))
    rc, out, lines = run(capfd, "--tier", "broker")
    # t0001: 2 ok, 1 not ok, 1 skip, 1 known breakage (skip);
    # t0002: a whole-script skip; t1001: 1 ok then dies without a plan.
    assert tier_row(out, "broker") == (3, 2, 3)
    assert "t0002-skip-all.t: skipped: no widget here" in out
    assert re.search(r"t1001-dies.t: exited [1-9][0-9]* without a failed test", out)
    assert "t2001" not in out  # node scripts are not broker scripts
    assert lines[-1] == "3 passed, 2 failed, 3 skipped"
    assert rc == 1


@pytest.mark.parametrize(
    "line, counts",
    [
        ("ok 1 - fine", (1, 0, 0)),
        ("not ok 2 - broken", (0, 1, 0)),
        ("ok 3 # skip no prereq (missing X)", (0, 0, 1)),
        ("ok 3 # SKIP no prereq", (0, 0, 1)),
        ("not ok 4 - old bug # TODO known breakage", (0, 0, 1)),
        ("ok 5 - old bug # TODO known breakage vanished", (1, 0, 0)),
        ("\x1b[31mnot ok 6 - colored\x1b(B\x1b[m", (0, 1, 0)),
        ("# passed all 3 test(s)", (0, 0, 0)),
        ("okay 7", (0, 0, 0)),
    ],
)
def test_tap_lines(line, counts):
    c = runtests.TapCounts()
    runtests.tap_line(line, c)
    assert (c.passed, c.failed, c.skipped) == counts


def test_tap_plan_with_skip_reason():
    c = runtests.TapCounts()
    runtests.tap_line("1..0 # SKIP flux-core too old", c)
    assert c.plan == 0
    assert c.skip_all == "flux-core too old"


@needs_sharness
def test_script_that_hangs_is_killed_and_fails(project, capfd, monkeypatch):
    fake_flux(project, monkeypatch)
    monkeypatch.setattr(runtests, "SCRIPT_TIMEOUT", 3)
    (project / "sharness/t0001-hang.t").write_text(
        sharness_script("test_expect_success ok true\nsleep 60\n")
    )
    rc, out, lines = run(capfd, "--tier", "broker")
    assert "t0001-hang.t: timed out after 3s" in out
    assert tier_row(out, "broker") == (1, 1, 0)
    assert rc == 1


@needs_sharness
def test_processes_a_script_leaves_behind_are_killed(project, capfd, monkeypatch):
    fake_flux(project, monkeypatch)
    monkeypatch.setattr(runtests, "STRAY_GRACE", 1)
    pidfile = project / "stray.pid"
    (project / "sharness/t0001-stray.t").write_text(
        sharness_script(
            f"test_expect_success ok true\nsleep 300 &\necho $! >{pidfile}\n"
        )
    )
    rc, out, lines = run(capfd, "--tier", "broker")
    assert "t0001-stray.t: left processes behind" in out
    assert tier_row(out, "broker") == (1, 1, 0)
    assert not alive(int(pidfile.read_text()))


def alive(pid):
    """True if *pid* runs (a zombie waiting for its reaper does not)."""
    for _ in range(50):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z":
            return False
        time.sleep(0.1)
    return True

"""Fixtures for the systemd tier: a real systemd 252 in a systemd-nspawn test bed.

``testbed`` (session): reuses the test bed named by $FLUX_PAM_TESTBED (as
t/runtests.py sets it after `t/testbed.py up`), or boots a private one and
takes it down at the end.  The whole tier is skipped, with the reason, when
`t/testbed.py can-run` says a test bed cannot run here.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # t/: testbed
sys.path.insert(0, HERE)  # t/systemd: bed

import testbed as tb  # noqa: E402


@pytest.fixture(scope="session")
def testbed():
    name = os.environ.get("FLUX_PAM_TESTBED")
    if name:
        bed = tb.attach(name)
        if bed is None:
            pytest.fail(f"FLUX_PAM_TESTBED={name} is set but that test bed is not up")
        yield bed
        return
    ok, why = tb.can_run()
    if not ok:
        pytest.skip(f"systemd tier: {why}")
    bed = tb.up(f"flux-pam-pytest-{os.getpid()}")
    try:
        yield bed
    finally:
        tb.down(bed.name)


# ------------------------------------------------------------------ helpers

from bed import ALICE, BOB, Spawner, container_path, reset_user  # noqa: E402, F401


@pytest.fixture
def sd(testbed):
    """A D-Bus client of the container's systemd (from the host, as root)."""
    from flux_pam_service.systemd.client import Systemd

    client = Systemd(testbed.address, timeout=5.0)
    yield client
    client.close()


@pytest.fixture
def alice(testbed):
    """alice's slice reset before and after the test; yields (uid, name)."""
    reset_user(testbed, ALICE, "alice")
    yield ALICE, "alice"
    reset_user(testbed, ALICE, "alice")


@pytest.fixture
def spawn(testbed):
    s = Spawner(testbed)
    yield s
    s.cleanup()

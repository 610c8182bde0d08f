"""t/testbed.py's cpuset hand-over, against a simulated host.

What the kernel does is stood in for by FakeHost: whether the v1 cpuset
hierarchy is mounted (then cgroup2 has no cpuset), and each cgroup's
subtree_control.  What is tested is the bookkeeping between test beds that
run at the same time: only the first one unmounts, only the last one puts
the host back, a crashed holder does not keep the host changed, and a host
that must not be touched is not.  The real hand-over runs in the broker and
node tiers when FLUX_PAM_TESTBED_CPUSET=1 and the host allows it.
"""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import testbed  # noqa: E402

MNT = "/fake/cgroup2"


class FakeHost:
    def __init__(self):
        self.v1_mounted = True
        self.busy = ""  # what _v1_cpuset_busy() says
        self.umount_fails = ""
        self.stays_v1 = False  # umount succeeds, the hierarchy lives on
        self.subtree = {}  # path -> set of controllers enabled below it
        self.calls = []

    def controllers(self, path, name="cgroup.controllers"):
        if name == "cgroup.subtree_control":
            return sorted(self.subtree.get(path, set()))
        return [] if self.v1_mounted else ["cpuset"]

    def change(self, path, change):
        self.calls.append((path, change))
        enabled = self.subtree.setdefault(path, set())
        if change == "+cpuset":
            if self.v1_mounted:
                raise OSError(2, "No such file or directory")
            enabled.add("cpuset")
        else:
            enabled.discard("cpuset")

    def run(self, argv, **kw):
        self.calls.append(tuple(argv[:1]))
        if argv[0] == "umount":
            if self.umount_fails:
                return subprocess.CompletedProcess(argv, 32, "", self.umount_fails)
            self.v1_mounted = self.stays_v1
        elif argv[0] == "mount":
            if any("cpuset" in s for s in self.subtree.values()):
                return subprocess.CompletedProcess(argv, 32, "", "busy")
            self.v1_mounted = True
        return subprocess.CompletedProcess(argv, 0, "", "")


@pytest.fixture
def host(monkeypatch, tmp_path):
    fake = FakeHost()
    monkeypatch.setattr(testbed, "RUN_DIR", str(tmp_path))
    monkeypatch.setattr(testbed, "CPUSET_STATE", str(tmp_path / "cpuset.json"))
    monkeypatch.setattr(testbed, "CPUSET_LOCK", str(tmp_path / "cpuset.lock"))
    monkeypatch.setattr(testbed, "_cgroup2_mount", lambda: MNT)
    monkeypatch.setattr(testbed, "_controllers", fake.controllers)
    monkeypatch.setattr(testbed, "_subtree", fake.change)
    monkeypatch.setattr(testbed, "_v1_cpuset_busy", lambda: fake.busy)
    monkeypatch.setattr(testbed, "_wait_cpuset", lambda mnt: not fake.v1_mounted)
    monkeypatch.setattr(testbed.subprocess, "run", fake.run)
    return fake


def cgdir(name):
    return f"{MNT}/flux-pam-test/{name}"


def quiet(_msg):
    pass


def test_the_first_bed_unmounts_and_enables_cpuset_down_to_its_cgroup(host):
    assert testbed.cpuset_acquire("a", os.getpid(), quiet) == "on"
    assert not host.v1_mounted
    for path in (MNT, f"{MNT}/flux-pam-test", cgdir("a")):
        assert host.subtree[path] == {"cpuset"}


def test_only_the_last_bed_down_puts_the_host_back(host):
    assert testbed.cpuset_acquire("a", os.getpid(), quiet) == "on"
    assert testbed.cpuset_acquire("b", os.getpid(), quiet) == "on"
    assert host.calls.count(("umount",)) == 1
    host.subtree.pop(cgdir("a"))  # the bed's cgroup is gone at its down
    testbed.cpuset_release("a", quiet)
    assert not host.v1_mounted
    assert host.subtree[MNT] == {"cpuset"}
    host.subtree.pop(cgdir("b"))
    testbed.cpuset_release("b", quiet)
    assert host.v1_mounted
    assert host.subtree[MNT] == set()
    assert host.subtree[f"{MNT}/flux-pam-test"] == set()
    assert host.calls.count(("mount",)) == 1


def test_a_holder_whose_process_is_gone_holds_nothing(host):
    child = subprocess.Popen(["true"])
    child.wait()
    assert testbed.cpuset_acquire("crashed", child.pid, quiet) == "on"
    assert testbed.cpuset_acquire("b", os.getpid(), quiet) == "on"
    host.subtree.pop(cgdir("crashed"))
    host.subtree.pop(cgdir("b"))
    testbed.cpuset_release("b", quiet)
    assert host.v1_mounted


def test_a_down_after_a_crash_puts_the_host_back_even_without_holders(host):
    assert testbed.cpuset_acquire("a", os.getpid(), quiet) == "on"
    host.subtree.pop(cgdir("a"))
    testbed.cpuset_release("other", quiet)  # "a" is still held: nothing
    assert not host.v1_mounted
    testbed.cpuset_release("a", quiet)
    assert host.v1_mounted


def test_a_hierarchy_in_use_is_left_alone(host):
    host.busy = "the v1 cpuset hierarchy has cgroups of its own: x"
    got = testbed.cpuset_acquire("a", os.getpid(), quiet)
    assert got == "off: the v1 cpuset hierarchy has cgroups of its own: x"
    assert host.calls == [] and host.v1_mounted


def test_a_busy_mount_point_is_left_alone(host):
    host.umount_fails = "umount: /sys/fs/cgroup/cpuset: target is busy."
    got = testbed.cpuset_acquire("a", os.getpid(), quiet)
    assert got == "off: the v1 cpuset hierarchy is in use (umount: target is busy.)"
    assert host.v1_mounted and host.subtree == {}
    testbed.cpuset_release("a", quiet)
    assert ("mount",) not in host.calls


def test_a_hierarchy_held_elsewhere_is_mounted_back_at_once(host):
    host.stays_v1 = True
    got = testbed.cpuset_acquire("a", os.getpid(), quiet)
    assert got.startswith("off: cpuset stayed bound to cgroup v1")
    assert host.calls == [("umount",), ("mount",)]
    assert host.v1_mounted and host.subtree == {}


def test_without_the_switch_nothing_is_asked(host, monkeypatch):
    monkeypatch.delenv(testbed.CPUSET_SWITCH, raising=False)
    assert not testbed.cpuset_wanted()
    assert not testbed.cpuset_wanted({testbed.CPUSET_SWITCH: "0"})
    assert testbed.cpuset_wanted({testbed.CPUSET_SWITCH: "1"})

"""The read-back comparison: cgroup files and systemd's device policy vs the union."""

import os

import pytest

from flux_pam_service.systemd import enforcement as en
from flux_pam_service.systemd.enforcement import Reading

PROPS = {"AllowedCPUs": "0-1", "AllowedMemoryNodes": "0", "DevicePolicy": "closed"}
GPU_PROPS = dict(PROPS, DeviceAllow="/dev/nvidia0 rw,/dev/nvidiactl rw")


def confined(**kw):
    """A reading of a slice the kernel confines to PROPS."""
    base = dict(
        controllers="cpuset cpu io memory pids\n",
        cpus="0-1\n",
        mems="0\n",
        device_policy="closed",
    )
    base.update(kw)
    return Reading(**base)


def test_a_slice_confined_to_the_union_is_enforced():
    v = en.compare(PROPS, confined())
    assert v.enforced
    assert v.missing == () and v.reasons == ()
    assert v.effective == {"cpus": "0-1", "mems": "0", "device_policy": "closed"}


def test_an_effective_subset_of_the_union_is_enforced():
    # a CPU of the union offline: the login gets less, never more
    assert en.compare(PROPS, confined(cpus="1\n")).enforced


def test_without_the_cpuset_controller_cpus_and_memory_nodes_are_not_enforced():
    v = en.compare(PROPS, confined(controllers="cpu io memory pids\n"))
    assert v.missing == (en.CPU, en.MEMORY_NODE)
    assert "cpuset controller is not enabled" in v.reasons[0]
    assert "cgroup.controllers: cpu io memory pids" in v.reasons[0]
    assert v.message() == (
        "Access denied: CPU and memory node confinement is not enforced on"
        " this node; ask your administrator"
    )


def test_an_empty_controllers_file_is_named_as_none():
    v = en.compare(PROPS, confined(controllers=""))
    assert "(cgroup.controllers: none)" in v.reasons[0]


def test_effective_cpus_beyond_the_union_are_not_enforced():
    v = en.compare(dict(PROPS, AllowedCPUs="0"), confined(cpus="0-1\n"))
    assert v.missing == (en.CPU,)
    assert v.reasons == ("CPU: cpuset.cpus.effective is 0-1, AllowedCPUs is 0",)
    assert v.message().startswith("Access denied: CPU confinement is not enforced")


def test_effective_mems_beyond_the_union_are_not_enforced():
    v = en.compare(PROPS, confined(mems="0-1\n"))
    assert v.missing == (en.MEMORY_NODE,)
    assert "cpuset.mems.effective is 0-1, AllowedMemoryNodes is 0" in v.reasons[0]


@pytest.mark.parametrize("text", ["", "\n", "garbage", None])
def test_an_empty_or_unreadable_effective_set_is_not_enforced(text):
    v = en.compare(PROPS, confined(cpus=text))
    assert en.CPU in v.missing


def test_a_slice_without_a_cgroup_enforces_nothing_it_was_asked():
    v = en.compare(GPU_PROPS, Reading(exists=False, path="/sys/fs/cgroup/x"))
    assert v.missing == (en.CPU, en.MEMORY_NODE, en.DEVICE)
    assert all("the slice has no cgroup (/sys/fs/cgroup/x)" in r for r in v.reasons)


def test_no_constraints_asked_is_enforced_whatever_was_read():
    assert en.compare(None, Reading(exists=False)).enforced
    assert en.compare({}, Reading(exists=False)).enforced
    assert en.compare({"AllowedCPUs": ""}, Reading(exists=False)).enforced


def test_only_what_the_union_asks_for_is_compared():
    # cores only: the memory node set is not looked at
    props = {"AllowedCPUs": "0"}
    assert en.compare(props, confined(cpus="0", mems="0-7")).enforced


def test_device_policy_is_closed_unless_the_properties_name_one():
    v = en.compare({"AllowedCPUs": "0"}, confined(cpus="0", device_policy="auto"))
    assert v.missing == (en.DEVICE,)
    assert v.reasons == ("device: systemd reports DevicePolicy=auto, not closed",)
    strict = {"AllowedCPUs": "0", "DevicePolicy": "strict"}
    assert not en.compare(strict, confined(cpus="0")).enforced
    assert en.compare(strict, confined(cpus="0", device_policy="strict")).enforced


def test_device_allow_as_reported_must_stay_within_the_union():
    ok = (("/dev/nvidia0", "rw"), ("/dev/nvidiactl", "r"))
    assert en.compare(GPU_PROPS, confined(device_allow=ok)).enforced
    extra = ok + (("/dev/nvidia1", "rw"),)
    v = en.compare(GPU_PROPS, confined(device_allow=extra))
    assert v.missing == (en.DEVICE,)
    assert "beyond the union: /dev/nvidia1 rw" in v.reasons[0]
    wider = (("/dev/nvidia0", "rwm"),)
    assert not en.compare(GPU_PROPS, confined(device_allow=wider)).enforced


def test_every_device_is_refused_when_the_union_has_none():
    v = en.compare(PROPS, confined(device_allow=(("/dev/nvidia0", "rw"),)))
    assert v.missing == (en.DEVICE,)


def test_a_memory_limit_needs_the_memory_controller():
    props = dict(PROPS, MemoryMax="1G")
    v = en.compare(props, confined(controllers="cpuset pids", memory_max=None))
    assert v.missing == (en.MEMORY_LIMIT,)
    assert "memory controller is not enabled" in v.reasons[0]


def test_memory_max_must_not_exceed_the_limit():
    props = dict(PROPS, MemoryMax="1G")
    assert en.compare(props, confined(memory_max="1073741824\n")).enforced
    # the kernel rounds down to a page
    assert en.compare(props, confined(memory_max="1073737728\n")).enforced
    v = en.compare(props, confined(memory_max="max\n"))
    assert v.missing == (en.MEMORY_LIMIT,)
    assert v.reasons == ("memory limit: memory.max is max, MemoryMax is 1073741824",)


def test_a_percentage_memory_limit_needs_memory_max_set():
    props = dict(PROPS, MemoryMax="50%")
    assert en.compare(props, confined(memory_max="4000000000\n")).enforced
    assert not en.compare(props, confined(memory_max="max\n")).enforced


def test_infinite_memory_limits_ask_for_nothing():
    assert not en.wants_memory({"MemoryMax": "infinity"})
    assert not en.wants_memory({"MemoryHigh": ""})
    assert en.wants_memory({"MemoryHigh": "2G"})
    props = dict(PROPS, MemoryMax="infinity")
    assert en.compare(props, confined(controllers="cpuset")).enforced


def test_all_four_are_named_in_order():
    props = dict(GPU_PROPS, MemoryMax="1G")
    v = en.compare(props, confined(controllers="", device_policy="auto"))
    assert v.missing == (en.CPU, en.MEMORY_NODE, en.MEMORY_LIMIT, en.DEVICE)
    assert v.message() == (
        "Access denied: CPU, memory node, memory limit and device confinement"
        " is not enforced on this node; ask your administrator"
    )


def test_a_verdict_round_trips_through_json_form():
    v = en.compare(PROPS, confined(controllers="pids"))
    d = v.to_dict()
    assert d["enforced"] is False
    assert d["missing"] == ["CPU", "memory node"]
    assert en.Verdict.from_dict(d) == v


MOUNTINFO_UNIFIED = """\
24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
26 24 0:24 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
"""
MOUNTINFO_HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_the_cgroup2_mount_is_found_in_mountinfo():
    assert en.cgroup_root(MOUNTINFO_UNIFIED) == "/sys/fs/cgroup"
    assert en.cgroup_root(MOUNTINFO_HYBRID) == "/sys/fs/cgroup/unified"
    other = "1 2 0:3 / /mnt/cg rw - cgroup2 cgroup2 rw\n"
    assert en.cgroup_root(other) == "/mnt/cg"
    assert en.cgroup_root("") is None


def test_a_slice_cgroup_follows_from_its_name():
    assert en.slice_cgroup("/sys/fs/cgroup", 1000) == (
        "/sys/fs/cgroup/user.slice/user-1000.slice"
    )


def write_cgroup(path, files):
    os.makedirs(path)
    for name, text in files.items():
        with open(os.path.join(path, name), "w") as f:
            f.write(text)


def test_read_cgroup_reads_the_cpuset_files_when_the_controller_is_there(tmp_path):
    path = str(tmp_path / "user-1000.slice")
    write_cgroup(
        path,
        {
            "cgroup.controllers": "cpuset memory pids\n",
            "cpuset.cpus.effective": "1\n",
            "cpuset.mems.effective": "0\n",
            "memory.max": "max\n",
        },
    )
    got = en.read_cgroup(path)
    assert got == {
        "exists": True,
        "path": path,
        "controllers": "cpuset memory pids\n",
        "cpus": "1\n",
        "mems": "0\n",
    }
    assert en.read_cgroup(path, memory=True)["memory_max"] == "max\n"
    reading = Reading(**got, device_policy="closed")
    assert en.compare({"AllowedCPUs": "1"}, reading).enforced
    assert not en.compare({"AllowedCPUs": "0"}, reading).enforced


def test_read_cgroup_of_a_slice_without_cpuset_or_cgroup(tmp_path):
    path = str(tmp_path / "user-1000.slice")
    write_cgroup(path, {"cgroup.controllers": "pids\n"})
    assert en.read_cgroup(path) == {
        "exists": True,
        "path": path,
        "controllers": "pids\n",
    }
    gone = str(tmp_path / "user-1001.slice")
    assert en.read_cgroup(gone) == {"exists": False, "path": gone}


def test_a_cgroup_that_cannot_be_read_enforces_nothing(tmp_path):
    path = str(tmp_path / "user-1000.slice")
    os.makedirs(path)
    os.mkdir(os.path.join(path, "cgroup.controllers"))  # read() fails: EISDIR
    got = en.read_cgroup(path)
    assert got["exists"] is False
    assert got["error"].endswith("cgroup.controllers: Is a directory")
    v = en.compare(PROPS, Reading(**got, device_policy="closed"))
    assert v.missing == (en.CPU, en.MEMORY_NODE, en.DEVICE)
    assert "cannot read the slice's cgroup" in v.reasons[0]


class Bus:
    """A systemd client that records the property reads (no D-Bus)."""

    def __init__(self):
        self.reads = []

    def unit_property_values(self, unit, names, iface):
        self.reads.append((unit, tuple(names)))
        return {"DevicePolicy": "closed", "DeviceAllow": [["/dev/null", "rw"]]}


def test_the_device_read_back_is_reused_while_no_device_property_is_sent(tmp_path):
    from flux_pam_service.systemd.user_slice import UserSlice

    bus = Bus()
    us = UserSlice(bus, 1000, "alice")
    props = {"AllowedCPUs": "0", "DeviceAllow": "/dev/null rw"}
    first = us.read_back(str(tmp_path), props)
    assert len(bus.reads) == 1
    again = us.read_back(str(tmp_path), props, devices=first)
    assert len(bus.reads) == 1  # the slice's cgroup files only
    assert (again.device_policy, again.device_allow) == (
        "closed",
        (("/dev/null", "rw"),),
    )


LIMITED = dict(PROPS, MemoryMax="1073741824")


def test_a_memory_max_read_back_at_most_the_limit_is_enforced():
    v = en.compare(LIMITED, confined(memory_max="1073741824\n"))
    assert v.enforced
    assert v.effective["memory_max"] == "1073741824"


def test_without_the_memory_controller_the_memory_limit_is_not_enforced():
    v = en.compare(LIMITED, confined(controllers="cpuset cpu io pids\n"))
    assert v.missing == (en.MEMORY_LIMIT,)
    assert v.message() == (
        "Access denied: memory limit confinement is not enforced on this node;"
        " ask your administrator"
    )


def test_a_memory_limit_alone_asks_nothing_of_cpus_or_devices():
    only = {"MemoryMax": "1073741824"}
    reading = Reading(controllers="memory pids\n", memory_max="1073741824\n")
    assert en.compare(only, reading).enforced
    v = en.compare(only, Reading(controllers="pids\n"))
    assert v.missing == (en.MEMORY_LIMIT,)

"""The read-back: what the kernel enforces for a user slice, against what was
asked.

systemd stores AllowedCPUs whether or not the kernel can enforce it, so
every slice operation that sets constraints reads the slice back and
compare() judges the reading (doc/design.rst, "Enforcement: the read-back",
says what is checked and why).  compare() does no I/O; read_cgroup() and
find_root() read cgroupfs.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from flux_pam_service.core import idset
from flux_pam_service.systemd import properties

CPU = "CPU"
MEMORY_NODE = "memory node"
MEMORY_LIMIT = "memory limit"
DEVICE = "device"
#: the order in which what is missing is named
ORDER = (CPU, MEMORY_NODE, MEMORY_LIMIT, DEVICE)
DEFAULT_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class Reading:
    """What was read back for one user slice.

    *controllers*, *cpus*, *mems*, *memory_max*: the text of
    ``cgroup.controllers``, ``cpuset.cpus.effective``,
    ``cpuset.mems.effective`` and ``memory.max`` (None: the file was absent
    or not read).  *device_policy*, *device_allow*: systemd's DevicePolicy
    and DeviceAllow (a list of (path, perms)) for the slice.
    """

    exists: bool = True
    controllers: Optional[str] = None
    cpus: Optional[str] = None
    mems: Optional[str] = None
    memory_max: Optional[str] = None
    device_policy: Optional[str] = None
    device_allow: Tuple[Tuple[str, str], ...] = ()
    path: str = ""
    error: str = ""  # why the cgroup files could not be read


@dataclass(frozen=True)
class Verdict:
    """The comparison: what is not enforced, and why (one reason each)."""

    missing: Tuple[str, ...] = ()
    reasons: Tuple[str, ...] = ()
    effective: Dict[str, str] = field(default_factory=dict)

    @property
    def enforced(self) -> bool:
        """Nothing asked for is missing."""
        return not self.missing

    def message(self) -> str:
        """The text a refused user sees."""
        return denial_message(self.missing)

    def to_dict(self) -> dict:
        """JSON form, as pam.status shows it."""
        return {
            "enforced": self.enforced,
            "missing": list(self.missing),
            "reasons": list(self.reasons),
            "effective": dict(self.effective),
        }

    @classmethod
    def from_dict(cls, obj: dict) -> "Verdict":
        """Inverse of to_dict()."""
        return cls(
            tuple(obj.get("missing", ())),
            tuple(obj.get("reasons", ())),
            dict(obj.get("effective", {})),
        )


def _join(names: List[str]) -> str:
    if len(names) <= 2:
        return " and ".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def describe(missing: Tuple[str, ...]) -> str:
    """``CPU and memory node confinement is not enforced``."""
    names = [m for m in ORDER if m in missing]
    return f"{_join(names)} confinement is not enforced"


def denial_message(missing: Tuple[str, ...]) -> str:
    """``Access denied: CPU confinement is not enforced on this node; ...``."""
    return f"Access denied: {describe(missing)} on this node; ask your administrator"


def wants_memory(props: Optional[dict]) -> bool:
    """True if *props* set a finite memory limit (memory.max is then read)."""
    for name in properties.MEMORY_PROPERTIES:
        value = (props or {}).get(name)
        if value in (None, ""):
            continue
        if isinstance(value, str) and value.strip().lower() == "infinity":
            continue
        return True
    return False


def _ids(text: Optional[str]) -> Optional[frozenset]:
    if text is None:
        return None
    try:
        return idset.decode(text.strip())
    except ValueError:
        return None


def _controllers(reading: Reading) -> frozenset:
    return frozenset((reading.controllers or "").split())


def _cpuset(
    what: str, prop: str, wanted: str, text: Optional[str], reading: Reading
) -> Optional[str]:
    """Why *what* is not enforced, or None."""
    if "cpuset" not in _controllers(reading):
        shown = (reading.controllers or "").strip() or "none"
        return (
            f"the cpuset controller is not enabled for the slice"
            f" (cgroup.controllers: {shown})"
        )
    want = idset.decode(wanted)
    have = _ids(text)
    file = "cpuset.cpus.effective" if what == CPU else "cpuset.mems.effective"
    if not have:
        return f"{file} is {text!r}"
    if not have <= want:
        return f"{file} is {idset.encode(have)}, {prop} is {idset.encode(want)}"
    return None


def _memory(props: dict, reading: Reading) -> Optional[str]:
    if "memory" not in _controllers(reading):
        shown = (reading.controllers or "").strip() or "none"
        return (
            "the memory controller is not enabled for the slice"
            f" (cgroup.controllers: {shown})"
        )
    if "MemoryMax" not in props:
        return None
    name, (_sig, limit) = properties.memory("MemoryMax", props["MemoryMax"])
    text = (reading.memory_max or "").strip()
    if name != "MemoryMax" or limit == properties.UINT64_MAX:
        return None if text != "max" else "memory.max is max"
    if not text.isdigit() or int(text) > limit:
        return f"memory.max is {text or 'unreadable'}, MemoryMax is {limit}"
    return None


def _devices(props: dict, reading: Reading) -> Optional[str]:
    policy = props.get("DevicePolicy") or "closed"
    if reading.device_policy != policy:
        return f"systemd reports DevicePolicy={reading.device_policy}, not {policy}"
    if policy == "auto":
        return None
    allowed = dict(properties.device_allow(props.get("DeviceAllow") or ""))
    extra = []
    for path, perms in reading.device_allow:
        if path not in allowed or any(c not in allowed[path] for c in perms):
            extra.append(f"{path} {perms}")
    if extra:
        return "systemd reports DeviceAllow beyond the union: " + ", ".join(extra)
    return None


def _asked(props: dict) -> List[str]:
    """What *props* ask the kernel to enforce, in ORDER."""
    asked = []
    if props.get("AllowedCPUs"):
        asked.append(CPU)
    if props.get("AllowedMemoryNodes"):
        asked.append(MEMORY_NODE)
    if wants_memory(props):
        asked.append(MEMORY_LIMIT)
    if properties.confines(props):
        asked.append(DEVICE)
    return asked


def _why(what: str, props: dict, reading: Reading) -> Optional[str]:
    """Why *what* is not enforced, or None."""
    if reading.error:
        return f"cannot read the slice's cgroup: {reading.error}"
    if not reading.exists:
        return f"the slice has no cgroup ({reading.path})"
    if what == CPU:
        return _cpuset(CPU, "AllowedCPUs", props["AllowedCPUs"], reading.cpus, reading)
    if what == MEMORY_NODE:
        return _cpuset(
            MEMORY_NODE,
            "AllowedMemoryNodes",
            props["AllowedMemoryNodes"],
            reading.mems,
            reading,
        )
    if what == MEMORY_LIMIT:
        return _memory(props, reading)
    return _devices(props, reading)


def compare(props: Optional[dict], reading: Reading) -> Verdict:
    """Compare the read-back of a slice with the properties it was given.

    *props* are the sdexec-mapper properties of the union (as applied);
    None or empty asks for nothing, which is always enforced.
    """
    props = props or {}
    if not properties.has_constraints(props):
        return Verdict()
    effective = {}
    if reading.cpus is not None:
        effective["cpus"] = reading.cpus.strip()
    if reading.mems is not None:
        effective["mems"] = reading.mems.strip()
    if reading.memory_max is not None:
        effective["memory_max"] = reading.memory_max.strip()
    if reading.device_policy is not None:
        effective["device_policy"] = reading.device_policy
    missing: List[str] = []
    reasons: List[str] = []
    for what in _asked(props):
        why = _why(what, props, reading)
        if why is not None:
            missing.append(what)
            reasons.append(f"{what}: {why}")
    return Verdict(tuple(missing), tuple(reasons), effective)


# ---------------------------------------------------------------------------
# cgroupfs (file reads only)


def cgroup_root(mountinfo: str) -> Optional[str]:
    """The cgroup2 mount point in a /proc/self/mountinfo text.

    /sys/fs/cgroup on a unified boot, /sys/fs/cgroup/unified on a hybrid one
    (where systemd keeps only its process tracking on cgroup2, so nothing
    there is enforced); otherwise the first cgroup2 mount.
    """
    mounts = []
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep or not post.split() or post.split()[0] != "cgroup2":
            continue
        fields = pre.split()
        if len(fields) >= 5:
            mounts.append(fields[4])
    for preferred in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if preferred in mounts:
            return preferred
    return mounts[0] if mounts else None


def slice_cgroup(root: str, uid: int) -> str:
    """The cgroup directory of user-UID.slice below the cgroup2 mount *root*.

    A slice's cgroup follows from its name (systemd.slice(5): each dash is a
    level), so no ControlGroup property needs to be asked over D-Bus.
    """
    return os.path.join(root, "user.slice", f"user-{uid}.slice")


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_cgroup(path: str, memory: bool = False) -> dict:
    """Read the files compare() needs from the cgroup directory *path*.

    Returns Reading's keyword arguments (exists, controllers, cpus, mems,
    memory_max, path, error).  A file that is absent reads as None; any
    other failure is kept in error (compare() then finds nothing enforced).
    """
    out: dict = {"exists": False, "path": path}
    try:
        controllers = _read(os.path.join(path, "cgroup.controllers"))
        if controllers is None:
            return out
        out.update(exists=True, controllers=controllers)
        names = controllers.split()
        if "cpuset" in names:
            out["cpus"] = _read(os.path.join(path, "cpuset.cpus.effective"))
            out["mems"] = _read(os.path.join(path, "cpuset.mems.effective"))
        if memory and "memory" in names:
            out["memory_max"] = _read(os.path.join(path, "memory.max"))
    except OSError as exc:
        out["error"] = f"{exc.filename or path}: {exc.strerror or exc}"
    return out


def find_root() -> str:
    """The cgroup2 mount that user slices are read from: cgroup_root() of
    this process's mountinfo, else /sys/fs/cgroup."""
    text = _read("/proc/self/mountinfo") or ""
    return cgroup_root(text) or DEFAULT_ROOT

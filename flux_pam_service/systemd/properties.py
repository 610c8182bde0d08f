"""sdexec-mapper properties in the typed form systemd's D-Bus API wants.

The sdexec-mapper (``sdexec-mapper.lookup {"R": R}``) returns unit
properties as strings, e.g. ``{"AllowedCPUs": "0-3", "DeviceAllow":
"/dev/nvidia0 rw,/dev/nvidiactl rw", "MemoryMax": "1073741824"}``;
SetUnitProperties takes an ``a(sv)`` list.  No I/O, no D-Bus.
"""

from typing import Iterable, Optional, Union

from flux_pam_service.core import idset, limits

UINT64_MAX = 2**64 - 1
UINT32_MAX = 2**32 - 1
# systemd's cpu_set_add() refuses CPUs at or beyond this (CPU_SIZE_MAX * 8)
MAX_CPU = 8192 * 8 - 1

DEVICE_POLICIES = ("auto", "closed", "strict")
MEMORY_PROPERTIES = ("MemoryHigh", "MemoryMax", "MemorySwapMax")
BITMAP_PROPERTIES = ("AllowedCPUs", "AllowedMemoryNodes")
#: what a user slice is confined to (the rest are memory limits)
CONFINING = BITMAP_PROPERTIES + ("DevicePolicy", "DeviceAllow")
PROPERTY_NAMES = frozenset(CONFINING + MEMORY_PROPERTIES)

DBusProperty = tuple  # (name, (signature, value))

#: the properties of a user slice without a job: no CPU or memory node
#: restriction, DevicePolicy=auto, no DeviceAllow, no memory limit.  Reverting
#: with set-property keeps the polkit rule narrow (RevertUnitFiles would need
#: manage-unit-files).
REVERT: list = [
    ("AllowedCPUs", ("ay", b"")),
    ("AllowedMemoryNodes", ("ay", b"")),
    ("DevicePolicy", ("s", "auto")),
    ("DeviceAllow", ("a(ss)", [])),
    ("MemoryHigh", ("t", UINT64_MAX)),
    ("MemoryMax", ("t", UINT64_MAX)),
    ("MemorySwapMax", ("t", UINT64_MAX)),
]


def bitmap(ids: Union[str, Iterable[int]], name: str = "AllowedCPUs") -> bytes:
    """Return the systemd ``ay`` CPU-set bitmap for an idset string or ints.

    Bit i%8 of byte i//8 is set for id i, as systemd's cpu_set_to_dbus()
    writes it; the empty set gives b"", which resets the property.
    """
    if isinstance(ids, str):
        try:
            ids = idset.decode(ids)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    ids = list(ids)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise ValueError(f"{name}: {i!r} is not a non-negative integer")
        if i > MAX_CPU:
            raise ValueError(f"{name}: {i} is larger than systemd accepts ({MAX_CPU})")
    if not ids:
        return b""
    out = bytearray(max(ids) // 8 + 1)
    for i in ids:
        out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def bitmap_to_ids(data: bytes) -> frozenset:
    """The inverse of bitmap(): the set of ids whose bits are set."""
    return frozenset(
        byte_index * 8 + bit
        for byte_index, byte in enumerate(bytes(data))
        for bit in range(8)
        if byte & (1 << bit)
    )


def _valid_device_path(path: str) -> bool:
    # systemd 252 valid_device_allow_pattern(): /dev/... or char-/block- + name
    if path.startswith("/dev/"):
        return len(path) > 5 and "/../" not in path + "/" and "//" not in path
    for prefix in ("char-", "block-"):
        if path.startswith(prefix):
            return len(path) > len(prefix)
    return False


def device_allow(value: Union[str, Iterable]) -> list:
    """Split a DeviceAllow value into [(path, perms), ...], one per device.

    The mapper gives ONE comma-joined string; a list of "PATH [PERMS]" or of
    (path, perms) pairs is taken too.  Duplicates merge; PERMS defaults to
    "rwm", as in a unit file.
    """
    if isinstance(value, str):
        items: list = [s for s in (e.strip() for e in value.split(",")) if s]
    else:
        try:
            items = list(value)
        except TypeError:
            raise ValueError(
                f"DeviceAllow: {value!r} is not a string or list"
            ) from None
    merged: dict = {}
    for item in items:
        if isinstance(item, str):
            words = item.split()
            if not words:
                continue
            if len(words) > 2:
                raise ValueError(f'DeviceAllow: "{item}" is not "PATH [PERMS]"')
            path, perms = words[0], (words[1] if len(words) == 2 else "rwm")
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            path, perms = item
            if not isinstance(path, str) or not isinstance(perms, str):
                raise ValueError(f"DeviceAllow: {item!r} is not (path, perms)")
        else:
            raise ValueError(f"DeviceAllow: {item!r} is not a device entry")
        if not _valid_device_path(path) or any(c.isspace() for c in path):
            raise ValueError(
                f'DeviceAllow: "{path}" is not /dev/PATH, char-NAME or block-NAME'
            )
        if not perms or any(c not in "rwm" for c in perms):
            raise ValueError(
                f'DeviceAllow: "{path}": permissions "{perms}" are not a '
                "combination of r, w and m"
            )
        old = merged.get(path, "")
        merged[path] = "".join(c for c in "rwm" if c in old or c in perms)
    return list(merged.items())


def memory(name: str, value: Union[str, int]) -> DBusProperty:
    """Convert one memory limit to (name, ("t", bytes)) or a Scale property.

    Bytes as an int or a decimal string with an optional K/M/G/T/P/E suffix
    (powers of 1024), or "infinity" (2**64-1); "N%" gives <Name>Scale, the
    fraction of physical memory scaled to 2**32-1 as systemd does.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name}: {value!r} is not a size")
    if isinstance(value, int):
        if not 0 <= value <= UINT64_MAX:
            raise ValueError(f"{name}: {value} is out of range")
        return (name, ("t", value))
    if not isinstance(value, str):
        raise ValueError(f"{name}: {value!r} is not a size")
    try:
        nbytes, pct = limits.parse_size(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if pct is not None:
        if not 0 <= pct <= 100:
            raise ValueError(f'{name}: "{value}" is not between 0% and 100%')
        # systemd: UINT32_SCALE_FROM_PERMYRIAD(permyriad)
        permyriad = round(pct * 100)
        return (name + "Scale", ("u", permyriad * UINT32_MAX // 10000))
    if nbytes is None:
        return (name, ("t", UINT64_MAX))
    if nbytes > UINT64_MAX:
        raise ValueError(f'{name}: "{value}" is out of range')
    return (name, ("t", nbytes))


def to_dbus(props: dict) -> list:
    """Return *props* (sdexec-mapper form) as a SetUnitProperties a(sv) list.

    ValueError names an unknown property, or the property and a bad value;
    the whole dict is checked before anything is returned.  systemd *adds*
    DeviceAllow entries to those a unit has, so an empty DeviceAllow (which
    clears the list) comes first: a device dropped from the union is dropped
    from the slice.
    """
    if not isinstance(props, dict):
        raise ValueError(f"unit properties: {props!r} is not a dict")
    unknown = sorted(str(k) for k in props if k not in PROPERTY_NAMES)
    if unknown:
        raise ValueError(f"unsupported unit property: {', '.join(unknown)}")
    out: list = []
    for name in sorted(props):
        value = props[name]
        if name in BITMAP_PROPERTIES:
            out.append((name, ("ay", bitmap(value, name))))
        elif name == "DevicePolicy":
            if value not in DEVICE_POLICIES:
                choices = ", ".join(DEVICE_POLICIES)
                raise ValueError(f'DevicePolicy: "{value}" is not one of {choices}')
            out.append((name, ("s", value)))
        elif name == "DeviceAllow":
            entries = device_allow(value)
            out.append((name, ("a(ss)", [])))
            if entries:
                out.append((name, ("a(ss)", entries)))
        else:
            out.append(memory(name, value))
    return out


DEVICE_PROPERTIES = frozenset(("DevicePolicy", "DeviceAllow"))


def changed(since: Optional[dict], props: dict) -> Optional[dict]:
    """The properties of *props* whose value differs from *since*, or None
    when only a full apply will do: no *since*, other property names (what
    *props* no longer set must be reverted), either of them constraining
    nothing, or one confining the slice and the other not (the device
    defaults come and go with the confinement)."""
    if (
        not since
        or set(since) != set(props)
        or not has_constraints(since)
        or not has_constraints(props)
        or confines(since) != confines(props)
    ):
        return None
    return {k: v for k, v in props.items() if since[k] != v}


def has_constraints(props: dict) -> bool:
    """True if *props* restricts anything (some property has a value)."""
    return any(v not in ("", None, [], ()) for v in (props or {}).values())


def idle(props: Optional[dict]) -> Optional[dict]:
    """The slice's properties while its user manager's stop is delayed.

    The user has no job left, so the slice shrinks from *props* (what it
    had, sdexec-mapper form) to the least systemd can express: the lowest
    of its CPUs (an empty AllowedCPUs would lift the limit), its memory
    nodes and memory limits, and no device (an empty DeviceAllow; the
    policy stays closed).  The names are those of *props*, so that
    changed() sends only what shrank.  None if *props* constrained nothing.
    """
    if not props or not has_constraints(props):
        return None
    out = dict(props)
    cpus = props.get("AllowedCPUs")
    if cpus:
        ids = idset.decode(cpus) if isinstance(cpus, str) else set(cpus)
        out["AllowedCPUs"] = str(min(ids))
    if "DeviceAllow" in out:
        out["DeviceAllow"] = ""
    if out.get("DevicePolicy", "closed") == "auto" or not has_constraints(out):
        out["DevicePolicy"] = "closed"
    return out


def unset_reverted(dbus_props: list) -> list:
    """The entries of REVERT for the properties *dbus_props* do not set
    (``MemoryMaxScale`` sets MemoryMax)."""
    names = {name.removesuffix("Scale") for name, _ in dbus_props}
    return [p for p in REVERT if p[0].removesuffix("Scale") not in names]


def confines(props: dict) -> bool:
    """True if *props* confine the slice to CPUs, memory nodes or devices
    (not only limits its memory): its devices are then closed."""
    return any((props or {}).get(name) not in ("", None, [], ()) for name in CONFINING)

"""The login memory limit of ``[pam]``.

``pam.login-memory-max`` caps the memory that all of one user's logins on a
node may use together (flux-config-pam(5)): a fixed cap per user, whatever
the number of the user's jobs there.  It is set on
``user-UID.slice`` with the sdexec-mapper's properties of the union; where
the mapper sets a memory limit too (``exec.sdexec-properties``), the slice
gets the smaller.  No I/O except reading the node's memory size.
"""

import re
from typing import Any, Optional, Tuple, Union

UNLIMITED = "infinity"
_SIZE = re.compile(r"^([0-9]+)([KMGTPE]?)$")
_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_SUFFIXES["E"] = 2**60


def parse_size(text: str) -> Tuple[Optional[int], Optional[float]]:
    """A size string: ``(bytes, None)``, ``(None, percent)`` or ``(None, None)``
    for infinity.

    Bytes are digits with an optional K, M, G, T, P or E suffix (powers of
    1024, either case), a percentage is ``"N%"``.  ValueError (quoting
    *text*) says why not; the ranges are the caller's to check.
    """
    s = text.strip()
    if s.lower() == UNLIMITED:
        return None, None
    if s.endswith("%"):
        try:
            return None, float(s[:-1])
        except ValueError:
            raise ValueError(f'"{text}" is not a percentage') from None
    match = _SIZE.match(s.upper())
    if match is None:
        raise ValueError(
            f'"{text}" is not a size (bytes with an optional K, M, G, T, P or E'
            ' suffix, a percentage "N%" or "infinity")'
        )
    return int(match.group(1)) * _SUFFIXES[match.group(2)], None


def parse_memory(value: Union[str, int]) -> Tuple[Optional[int], Optional[float]]:
    """``pam.login-memory-max``: parse_size() of a positive number of bytes
    (an integer too) or a percentage of the node's memory, 0 < N <= 100."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("is not a size")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("is not a positive number of bytes")
        return value, None
    nbytes, pct = parse_size(value)
    if pct is not None and not 0 < pct <= 100:
        raise ValueError(f'"{value}" is not a percentage above 0 and up to 100')
    if nbytes == 0:
        raise ValueError(f'"{value}" is not a positive number of bytes')
    return nbytes, pct


def memtotal(path: str = "/proc/meminfo") -> int:
    """The node's memory in bytes (MemTotal), which percentages refer to."""
    with open(path) as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{path}: no MemTotal")


def memory_bytes(value: Union[str, int], total: int) -> Optional[int]:
    """*value* (parse_memory()) in bytes on a node of *total* bytes."""
    nbytes, pct = parse_memory(value)
    if pct is not None:
        return int(total * pct / 100)
    return nbytes


def login_properties(props: Optional[dict], cfg: Any) -> Optional[dict]:
    """*props* (the mapper's; None: not constrained) with *cfg*'s login limits.

    ``MemoryMax`` becomes the smaller of the mapper's and
    ``cfg.login_memory_max``; without it *props* are returned as they are.
    A percentage refers to the node's memory (memtotal(), read only then).
    """
    nbytes, pct = parse_memory(cfg.login_memory_max)
    if nbytes is None and pct is None:
        return props
    out = dict(props or {})
    mapped = out.get("MemoryMax")
    total = memtotal() if pct is not None or "%" in str(mapped) else 0
    cap = memory_bytes(cfg.login_memory_max, total) or 0
    try:
        have = memory_bytes(mapped, total) if mapped not in (None, "") else None
    except ValueError:
        have = None  # properties.to_dbus() names the mapper's bad value
    if have is not None:
        cap = min(cap, have)
    out["MemoryMax"] = str(cap)
    return out

"""RFC 22 idsets: sets of non-negative integers written as ranges.

``"0-3,8"`` is {0, 1, 2, 3, 8}.  Surrounding brackets (``"[0-3,8]"``) are
accepted on input.  The empty string is the empty set.
"""

# No typing import at run time: the drop-ins decode idsets at every job.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable

# Flux's IDSET_INVALID_ID is UINT_MAX; refuse ids that could not be represented.
MAX_ID = 2**32 - 2


def _decode_id(s: str, text: str) -> int:
    if not s.isdigit() or not s.isascii():
        raise ValueError(f'idset "{text}": "{s}" is not a non-negative integer')
    value = int(s)
    if value > MAX_ID:
        raise ValueError(f'idset "{text}": {value} is too large')
    return value


def decode(text: str) -> frozenset:
    """Return the set of ids that *text* denotes."""
    if not isinstance(text, str):
        raise ValueError(f"idset {text!r} is not a string")
    s = text.strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    if s == "":
        return frozenset()
    ids: set = set()
    for elem in s.split(","):
        lo, sep, hi = elem.partition("-")
        first = _decode_id(lo, text)
        last = _decode_id(hi, text) if sep else first
        if last < first:
            raise ValueError(f'idset "{text}": range "{elem}" is descending')
        ids.update(range(first, last + 1))
    return frozenset(ids)


def encode(ids: "Iterable") -> str:
    """Return the canonical idset string for *ids*."""
    out = []
    start = prev = None
    for i in sorted(set(ids)):
        if i < 0:
            raise ValueError(f"idset: {i} is negative")
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    if start is not None:
        out.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(out)

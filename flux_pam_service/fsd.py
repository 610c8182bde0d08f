"""RFC 23 Flux Standard Duration.

A duration is a non-negative floating point number followed by an optional
unit suffix: ``ms`` (milliseconds), ``s`` (seconds, the default), ``m``
(minutes), ``h`` (hours) or ``d`` (days).  ``inf`` and ``infinity`` stand for
an unbounded duration, without a suffix, and only where the caller allows it.

Interface:
    parse(text, allow_infinity=False) -> float seconds, raises ValueError
    encode(seconds) -> shortest exact string, e.g. ``"30s"``, ``"1.5m"``
"""

import math
import re

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# strtod()-like number: digits with optional fraction and exponent.
_FSD_RE = re.compile(
    r"^(?P<num>[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?)"
    r"(?P<unit>ms|s|m|h|d)?$"
)
_INFINITY = ("inf", "infinity")


def parse(text: str, allow_infinity: bool = False) -> float:
    """Return the duration *text* in seconds.

    Raises ValueError with a message saying what is wrong: not a string, not
    a duration, negative, NaN, or infinite where infinity is not allowed.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a Flux Standard Duration string")
    s = text.strip()
    if s.lower() in _INFINITY:
        if not allow_infinity:
            raise ValueError(f'"{text}" is infinite, which is not allowed here')
        return math.inf
    if s.startswith("-"):
        raise ValueError(f'"{text}" is negative')
    m = _FSD_RE.match(s)
    if m is None:
        raise ValueError(f'"{text}" is not a Flux Standard Duration')
    value = float(m.group("num")) * _UNITS[m.group("unit") or "s"]
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f'"{text}" is out of range')
    return value


def encode(seconds: float) -> str:
    """Return *seconds* as a Flux Standard Duration string.

    Uses the largest unit in which the value is a whole number, falling back
    to fractional seconds (as flux-core's fsd_format_duration does loosely).
    parse(encode(x)) == x for every finite non-negative x.
    """
    if math.isinf(seconds) and seconds > 0:
        return "infinity"
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{seconds!r} is not a valid duration")
    for unit in ("d", "h", "m", "s", "ms"):
        n = seconds / _UNITS[unit]
        if 1 <= n < 2**53 and n == int(n):
            text = f"{int(n)}{unit}"
            if parse(text) == seconds:
                return text
    return f"{seconds!r}s"

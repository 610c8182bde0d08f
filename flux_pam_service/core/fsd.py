"""RFC 23 Flux Standard Duration.

A duration is a non-negative floating point number followed by an optional
unit suffix: ``ms`` (milliseconds), ``s`` (seconds, the default), ``m``
(minutes), ``h`` (hours) or ``d`` (days).  ``inf`` and ``infinity`` stand for
an unbounded duration, without a suffix, and only where the caller allows it.
"""

import math

# Does not import re: the drop-ins parse durations at every job (re costs
# about 6 ms in a fresh interpreter).
_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DIGITS = frozenset("0123456789")
_INFINITY = ("inf", "infinity")


def _digits(s: str) -> bool:
    return bool(s) and all(c in _DIGITS for c in s)


def _is_number(s: str) -> bool:
    """strtod()-like: digits with optional fraction and exponent, or a
    fraction with optional exponent (``12``, ``1.``, ``1.5e3``, ``.5``)."""
    mant, exp = s, None
    for e in "eE":
        if e in s:
            mant, _, exp = s.partition(e)
            break
    if exp is not None:
        if exp[:1] in ("+", "-"):
            exp = exp[1:]
        if not _digits(exp):
            return False
    whole, dot, frac = mant.partition(".")
    if not dot:
        return _digits(whole)
    if whole:
        return _digits(whole) and (not frac or _digits(frac))
    return _digits(frac)


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
    num, unit = s, "s"
    for suffix in ("ms", "s", "m", "h", "d"):
        if s.endswith(suffix):
            num, unit = s[: -len(suffix)], suffix
            break
    if not _is_number(num):
        raise ValueError(f'"{text}" is not a Flux Standard Duration')
    value = float(num) * _UNITS[unit]
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
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m", "s", "ms"):
        n = seconds / _UNITS[unit]
        if 1 <= n < 2**53 and n == int(n):
            text = f"{int(n)}{unit}"
            if parse(text) == seconds:
                return text
    return f"{seconds!r}s"

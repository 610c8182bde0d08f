"""Flux job IDs: decimal and RFC 19 F58 forms.

The prolog sees ``FLUX_JOB_ID`` in F58 (``ƒ2Mxq3uHK`` or ASCII ``f2Mxq3uHK``)
and housekeeping sees it in decimal.  Both map to the same 64-bit integer.
"""

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")
_PREFIXES = ("ƒ", "f")
MAX_JOBID = 2**64 - 1


def parse(text: str) -> int:
    """Return the job ID that *text* denotes (decimal, F58, or hex ``0x..``)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"job ID {text!r} is empty or not a string")
    s = text.strip()
    if s.isascii() and s.isdigit():
        value = int(s)
    elif s.startswith("0x"):
        digits = s[2:]
        if not digits or any(c not in _HEXDIGITS for c in digits):
            raise ValueError(f'"{text}" is not a valid job ID')
        value = int(digits, 16)
    elif s[0] in _PREFIXES and len(s) > 1:
        value = 0
        for c in s[1:]:
            if c not in _INDEX:
                raise ValueError(f'"{text}" is not a valid job ID')
            value = value * 58 + _INDEX[c]
    else:
        raise ValueError(f'"{text}" is not a valid job ID')
    if value > MAX_JOBID:
        raise ValueError(f'"{text}" is not a valid job ID: out of range')
    return value


def f58(jobid: int) -> str:
    """Return *jobid* in F58 form."""
    if jobid < 0 or jobid > MAX_JOBID:
        raise ValueError(f"{jobid} is not a valid job ID")
    digits = ""
    while True:
        jobid, r = divmod(jobid, 58)
        digits = _ALPHABET[r] + digits
        if jobid == 0:
            break
    return "ƒ" + digits

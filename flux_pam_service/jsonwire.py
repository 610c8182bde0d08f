"""JSON for message payloads, without importing the ``json`` package.

dumps(obj) -> str      compact JSON of dict (str keys), list, tuple, str,
                       int, bool, None; anything else raises TypeError
loads(text) -> object  one JSON value; ValueError if *text* is not exactly
                       that (NaN and Infinity are refused, as jansson does)

Why.  ``import json`` brings ``re`` and ``enum`` and costs about 8 ms in a
fresh interpreter on a 2-core node, which pam_flux would pay on every login.
Both functions here use CPython's own C accelerator, ``_json`` (the module
behind json.decoder and json.encoder), which imports in 0.3 ms; on an
interpreter without it they fall back to ``json``.
"""

# On the login path: no typing import (see flux_pam_service.admission).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None


class _Context:
    """The attributes _json.make_scanner reads (as json.JSONDecoder's)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> "Any":
        raise ValueError(f"{name} is not valid JSON")


_scan = _json.make_scanner(_Context()) if _json is not None else None
_quote = _json.encode_basestring_ascii if _json is not None else None

_WHITESPACE = " \t\n\r"


def loads(text: str) -> "Any":
    """Decode one JSON value that is all of *text* but for white space."""
    if _scan is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"invalid JSON at offset {exc.value}") from None
    except SystemError:
        # Most syntax errors: _json raises json.decoder.JSONDecodeError (a
        # ValueError), a class it looks up in sys.modules only; before
        # json.decoder is imported it fails with SystemError instead.  On
        # this error path only, import it and scan again for that error.
        import json.decoder  # noqa: F401

        value, end = _scan(text, start)
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"extra data after JSON at offset {end}")
    return value


def dumps(obj: "Any") -> str:
    """Encode *obj* compactly (``separators=(",", ":")``, ASCII only)."""
    if _quote is None:
        import json

        return json.dumps(obj, separators=(",", ":"))
    parts: list = []
    _encode(obj, parts)
    return "".join(parts)


def _encode(obj: "Any", out: list) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(_quote(obj))
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, dict):
        out.append("{")
        for i, (key, value) in enumerate(obj.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object key {key!r} is not a string")
            if i:
                out.append(",")
            out.append(_quote(key))
            out.append(":")
            _encode(value, out)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(",")
            _encode(value, out)
        out.append("]")
    else:
        raise TypeError(f"{type(obj).__name__} is not encoded to JSON here")

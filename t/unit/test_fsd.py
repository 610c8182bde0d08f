"""RFC 23 Flux Standard Duration (flux_pam_service.core.fsd)."""

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_pam_service.core import fsd


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0", 0.0),
        ("30", 30.0),
        ("30s", 30.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("0.5d", 43200.0),
        (".25s", 0.25),
        ("1.", 1.0),
        ("1e3ms", 1.0),
        ("1.5e1s", 15.0),
    ],
)
def test_parse_accepts_every_unit_and_fractions(text, seconds):
    assert fsd.parse(text) == pytest.approx(seconds)


def test_parse_defaults_to_seconds():
    assert fsd.parse("42") == fsd.parse("42s")


@pytest.mark.parametrize("text", ["inf", "infinity", "INF", "Infinity"])
def test_parse_accepts_infinity_only_when_allowed(text):
    assert fsd.parse(text, allow_infinity=True) == math.inf
    with pytest.raises(ValueError, match="infinite, which is not allowed here"):
        fsd.parse(text)


@pytest.mark.parametrize("text", ["infs", "infinityh", "1e400", "1e400ms"])
def test_parse_refuses_infinity_with_a_unit_or_by_overflow(text):
    with pytest.raises(ValueError):
        fsd.parse(text, allow_infinity=True)


@pytest.mark.parametrize("text", ["-1", "-1s", "-0.5m", "-inf"])
def test_parse_refuses_negative_durations(text):
    with pytest.raises(ValueError, match="is negative"):
        fsd.parse(text, allow_infinity=True)


@pytest.mark.parametrize("text", ["nan", "NaN", "nans", "-nan"])
def test_parse_refuses_nan(text):
    with pytest.raises(ValueError):
        fsd.parse(text, allow_infinity=True)


@pytest.mark.parametrize(
    "text",
    ["", "s", "ms", "1.5x", "1 s", "1ss", "1S", "1w", "0x10", "1,5s", "1.2.3", "s1"],
)
def test_parse_refuses_garbage_naming_it(text):
    with pytest.raises(ValueError, match="is not a Flux Standard Duration"):
        fsd.parse(text)


@pytest.mark.parametrize("value", [30, 1.5, None, True, ["30s"]])
def test_parse_refuses_non_strings(value):
    with pytest.raises(ValueError, match="not a Flux Standard Duration string"):
        fsd.parse(value)


@pytest.mark.parametrize(
    "seconds, text",
    [(30.0, "30s"), (90.0, "90s"), (120.0, "2m"), (86400.0, "1d"), (0.25, "250ms")],
)
def test_encode_uses_the_largest_whole_unit(seconds, text):
    assert fsd.encode(seconds) == text


def test_encode_infinity():
    assert fsd.encode(math.inf) == "infinity"
    assert fsd.parse(fsd.encode(math.inf), allow_infinity=True) == math.inf


@pytest.mark.parametrize("seconds", [-1.0, math.nan, -math.inf])
def test_encode_refuses_negative_and_nan(seconds):
    with pytest.raises(ValueError):
        fsd.encode(seconds)


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_encode_then_parse_is_exact(seconds):
    assert fsd.parse(fsd.encode(seconds)) == seconds


@given(
    st.integers(min_value=0, max_value=10**9),
    st.sampled_from(["", "ms", "s", "m", "h", "d"]),
)
def test_parse_then_encode_then_parse_is_stable(n, unit):
    seconds = fsd.parse(f"{n}{unit}")
    assert fsd.parse(fsd.encode(seconds)) == seconds


# RFC 23's grammar as a regular expression: the specification parse() is
# checked against (fsd itself avoids importing re: it runs at every login).
FSD_GRAMMAR = re.compile(
    r"^(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?)"
    r"(?:ms|s|m|h|d)?$"
)


@given(st.text(alphabet="0123456789.eE+-smhd", max_size=8))
def test_parse_accepts_exactly_the_rfc23_grammar(text):
    try:
        fsd.parse(text)
        accepted = True
    except ValueError:
        accepted = False
    grammatical = FSD_GRAMMAR.match(text) is not None
    if grammatical and not accepted:
        # only an out-of-range value may be refused, e.g. 1e999
        with pytest.raises(ValueError, match="out of range"):
            fsd.parse(text)
    else:
        assert accepted == grammatical, text

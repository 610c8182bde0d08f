"""RFC 22 idsets (flux_pam_service.core.idset)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_pam_service.core import idset

ids = st.frozensets(st.integers(min_value=0, max_value=300), max_size=60)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", set()),
        ("0", {0}),
        ("0-3,8", {0, 1, 2, 3, 8}),
        ("[0-3,8]", {0, 1, 2, 3, 8}),
        ("[]", set()),
        ("5-5", {5}),
        ("3,1,2", {1, 2, 3}),
        ("0-2,1-4", {0, 1, 2, 3, 4}),
        (" 7 ", {7}),
    ],
)
def test_decode(text, expected):
    assert idset.decode(text) == frozenset(expected)


@pytest.mark.parametrize(
    "ids, text",
    [
        (set(), ""),
        ({0}, "0"),
        ({0, 1, 2, 3, 8}, "0-3,8"),
        ({8, 3, 2, 1, 0}, "0-3,8"),
        ({1, 3, 5}, "1,3,5"),
        ({4, 5}, "4-5"),
    ],
)
def test_encode_is_sorted_with_ranges_merged(ids, text):
    assert idset.encode(ids) == text


def test_decode_refuses_descending_range_naming_it():
    with pytest.raises(ValueError, match='range "3-1" is descending'):
        idset.decode("0,3-1")


@pytest.mark.parametrize(
    "text",
    ["a", "1,,2", ",1", "1,", "-1", "1-", "1-2-3", "1 ,2", "0x1", "1.5", "[1-2", "١"],
)
def test_decode_refuses_garbage_naming_the_idset(text):
    with pytest.raises(ValueError, match="idset"):
        idset.decode(text)


def test_decode_refuses_ids_too_large_for_flux():
    with pytest.raises(ValueError, match="too large"):
        idset.decode(str(idset.MAX_ID + 1))
    assert idset.decode(str(idset.MAX_ID)) == {idset.MAX_ID}


@pytest.mark.parametrize("value", [None, 3, ["0-3"]])
def test_decode_refuses_non_strings(value):
    with pytest.raises(ValueError, match="not a string"):
        idset.decode(value)


def test_encode_refuses_negative_ids():
    with pytest.raises(ValueError, match="negative"):
        idset.encode({-1, 2})


@given(ids)
def test_decode_of_encode_is_identity(s):
    assert idset.decode(idset.encode(s)) == s


@given(ids)
def test_encode_is_canonical(s):
    text = idset.encode(s)
    assert idset.encode(idset.decode(text)) == text
    assert idset.encode(idset.decode(f"[{text}]")) == text


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 20)), max_size=10))
def test_decode_of_any_ascending_ranges_is_their_union(ranges):
    text = ",".join(f"{lo}-{lo + n}" for lo, n in ranges)
    expected = set()
    for lo, n in ranges:
        expected.update(range(lo, lo + n + 1))
    assert idset.decode(text) == expected

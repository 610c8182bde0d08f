"""Flux job IDs in decimal and F58 (flux_pam_service.core.jobid)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_pam_service.core import jobid

jobids = st.integers(min_value=0, max_value=jobid.MAX_JOBID)


@pytest.mark.parametrize(
    "jid, f58",
    [
        # the table in flux-core src/common/libutil/test/fluid.c
        (0, "ƒ1"),
        (1, "ƒ2"),
        (57, "ƒz"),
        (1234, "ƒNH"),
        (3364, "ƒ211"),
        (65535, "ƒLUv"),
        (4294967295, "ƒ7YXq9G"),
        (2**64 - 1, "ƒjpXCZedGfVQ"),
    ],
)
def test_f58_matches_flux_encoding(jid, f58):
    assert jobid.f58(jid) == f58
    assert jobid.parse(f58) == jid


def test_parse_accepts_ascii_f_prefix():
    assert jobid.parse("f2Mxq3uHK") == jobid.parse("ƒ2Mxq3uHK")


def test_parse_accepts_hex():
    assert jobid.parse("0x2a") == 42


@given(jobids)
def test_f58_and_decimal_name_the_same_job(jid):
    assert jobid.parse(jobid.f58(jid)) == jid
    assert jobid.parse(str(jid)) == jid
    assert jobid.parse("f" + jobid.f58(jid)[1:]) == jid
    assert jobid.parse(hex(jid)) == jid


@given(st.integers(min_value=0, max_value=2**63), st.integers(min_value=0))
def test_f58_preserves_order(a, b):
    b = a + b % 2**63
    assert len(jobid.f58(a)) <= len(jobid.f58(b))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "ƒ",
        "f",
        "ƒ0",  # 0 is not in the F58 alphabet
        "ƒIl",  # nor are I and l
        "x123",
        "-1",
        "1.5",
        "0x",
        "0x-1",
        "0x1_0",
        "0xg",
        "12ab",
        str(2**64),
        "0x1" + "0" * 16,
        "ƒjpXCZedGfVR",  # 2**64
    ],
)
def test_parse_refuses_bad_ids_naming_them(text):
    with pytest.raises(ValueError, match="job ID"):
        jobid.parse(text)


@pytest.mark.parametrize("value", [None, 42, b"123"])
def test_parse_refuses_non_strings(value):
    with pytest.raises(ValueError, match="not a string"):
        jobid.parse(value)


@pytest.mark.parametrize("value", [-1, 2**64])
def test_f58_refuses_out_of_range(value):
    with pytest.raises(ValueError, match="not a valid job ID"):
        jobid.f58(value)

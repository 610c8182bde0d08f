"""RFC 20 R version 1: one rank's share of a job (flux_pam_service.core.rv1)."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_pam_service.core import rv1
from flux_pam_service.core.rv1 import Resources


def R(*entries, **extra):
    """An Rv1 with R_lite *entries* given as (rank, children) pairs."""
    obj = {
        "version": 1,
        "execution": {
            "R_lite": [{"rank": r, "children": c} for r, c in entries],
            "starttime": 0,
            "expiration": 0,
            "nodelist": ["node[0-3]"],
        },
    }
    obj.update(extra)
    return obj


def res(cores="", gpus=""):
    return Resources(rv1.idset.decode(cores), rv1.idset.decode(gpus))


TWO_ENTRIES = R(
    ("0-1", {"core": "0-3", "gpu": "0"}),
    ("2", {"core": "4-7"}),
    ("1,3", {"core": "8", "gpu": "1", "memory": "0"}),
)


def test_local_extracts_the_cores_and_gpus_of_one_rank():
    assert rv1.local(TWO_ENTRIES, 0) == res("0-3", "0")
    assert rv1.local(TWO_ENTRIES, 2) == res("4-7")


def test_local_merges_every_entry_that_names_the_rank():
    assert rv1.local(TWO_ENTRIES, 1) == res("0-3,8", "0-1")
    assert rv1.local(TWO_ENTRIES, 3) == res("8", "1")


def test_local_of_a_rank_outside_R_is_empty():
    assert rv1.local(TWO_ENTRIES, 4) == rv1.EMPTY
    assert not rv1.local(TWO_ENTRIES, 4)


def test_local_ignores_other_child_types():
    r = R(("0", {"core": "0", "memory": "0-1", "nic": "2"}))
    assert rv1.local(r, 0) == res("0")


def test_local_accepts_a_json_string():
    assert rv1.local(json.dumps(TWO_ENTRIES), 2) == res("4-7")
    assert rv1.local(json.dumps(TWO_ENTRIES).encode(), 2) == res("4-7")


def test_ranks_lists_every_rank_of_every_entry():
    assert rv1.ranks(TWO_ENTRIES) == {0, 1, 2, 3}
    assert rv1.ranks(R()) == frozenset()


def test_parse_does_not_interpret_scheduling_or_properties():
    r = R(("0", {"core": "0"}), scheduling={"anything": [1, 2]})
    r["execution"]["properties"] = {"gpu": "0"}
    assert rv1.local(r, 0) == res("0")


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "R is not valid JSON"),
        (b"\xff", "R is not valid JSON"),
        ("[]", "R is not a JSON object"),
        (42, "R is not a JSON object"),
        ({"execution": {"R_lite": []}}, "R version None is not supported"),
        ({"version": 2, "execution": {"R_lite": []}}, "R version 2 is not supported"),
        ({"version": "1", "execution": {"R_lite": []}}, "R version '1' is not"),
        ({"version": True, "execution": {"R_lite": []}}, "R version True is not"),
        ({"version": 1}, "R has no execution object"),
        ({"version": 1, "execution": []}, "R has no execution object"),
        ({"version": 1, "execution": {}}, "R_lite is missing or not an array"),
        (
            {"version": 1, "execution": {"R_lite": {"rank": "0"}}},
            "R_lite is missing or not an array",
        ),
        (
            {"version": 1, "execution": {"R_lite": ["0"]}},
            r"R_lite\[0\] is not an object",
        ),
        (R(("0", {"core": "0"}), ("x", {"core": "0"})), r"R_lite\[1\]: idset \"x\""),
        (R(("3-1", {"core": "0"})), r"R_lite\[0\]: idset \"3-1\": range"),
        (R(("", {"core": "0"})), r"R_lite\[0\]\.rank is empty"),
        (R((0, {"core": "0"})), r"R_lite\[0\]\.rank is missing or not an idset"),
        (R(("0", ["core"])), r"R_lite\[0\]\.children is missing or not an object"),
        (R(("0", {"core": 0})), r"R_lite\[0\]\.children\.core is not an idset string"),
        (R(("0", {"gpu": "a"})), r"R_lite\[0\]: idset \"a\""),
    ],
)
def test_malformed_R_is_refused_saying_what_is_wrong(bad, message):
    for fn in (rv1.parse, rv1.ranks, lambda r: rv1.local(r, 0)):
        with pytest.raises(rv1.RError, match=message):
            fn(bad)


def test_RError_is_a_ValueError():
    assert issubclass(rv1.RError, ValueError)


def test_missing_children_key_is_refused():
    r = {"version": 1, "execution": {"R_lite": [{"rank": "0"}]}}
    with pytest.raises(rv1.RError, match="children is missing"):
        rv1.parse(r)


small_ids = st.frozensets(st.integers(0, 64), max_size=16)
resources = st.builds(Resources, small_ids, small_ids)


@given(st.integers(0, 10_000), resources)
def test_make_R_round_trips_through_local(rank, r):
    made = rv1.make_R(rank, r)
    assert rv1.local(made, rank) == r
    assert rv1.ranks(made) == {rank}
    assert rv1.local(json.dumps(made), rank + 1) == rv1.EMPTY


def test_make_R_names_the_host_when_given():
    made = rv1.make_R(3, res("0-1"), hostname="node3")
    assert made["execution"]["nodelist"] == ["node3"]
    assert "gpu" not in made["execution"]["R_lite"][0]["children"]


@given(resources, resources)
def test_union_of_resources_is_commutative(a, b):
    assert a | b == b | a
    assert rv1.union([a, b]) == a | b


@given(resources)
def test_union_of_resources_is_idempotent(a):
    assert a | a == a
    assert rv1.union([a, a, a]) == a
    assert a | rv1.EMPTY == a


@given(st.lists(resources, max_size=6), st.randoms())
def test_union_ignores_order(items, random):
    shuffled = list(items)
    random.shuffle(shuffled)
    assert rv1.union(items) == rv1.union(shuffled)


@given(resources)
def test_resources_dict_round_trip(r):
    assert Resources.from_dict(r.to_dict()) == r

"""Each user's jobs on a rank and when the slice must change (core.jobs)."""

from dataclasses import dataclass, field
from typing import Dict, List

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from flux_pam_service.core import idset, rv1
from flux_pam_service.core.jobs import UserTable
from flux_pam_service.core.rv1 import EMPTY, Resources

OWNER = 999


def res(cores="", gpus=""):
    return Resources(idset.decode(cores), idset.decode(gpus))


# -- a model of what the actions do to systemd ---------------------------


PREPARE, APPLY, TEARDOWN = "prepare", "apply", "teardown"


@dataclass(frozen=True)
class Action:
    """A slice operation a transition implied, as the model sees it."""

    kind: str
    uid: int
    resources: Resources = EMPTY


def implied(table: UserTable, uid: int, changed: bool, before: set) -> List[Action]:
    """The slice operation that *changed* (a transition's answer) implies for
    *uid*, whose slice was active before iff *uid* is in *before*."""
    if not changed:
        return []
    if uid not in before:
        return [Action(PREPARE, uid, table.union(uid))]
    if uid not in table.users():
        return [Action(TEARDOWN, uid)]
    return [Action(APPLY, uid, table.union(uid))]


def start(table: UserTable, jobid: int, uid: int, r: Resources) -> List[Action]:
    """table.start(), with what it implies as an Action list."""
    before = set(table.users())
    return implied(table, uid, table.start(jobid, uid, r), before)


def end(table: UserTable, jobid: int) -> List[Action]:
    """table.end(), with what it implies as an Action list."""
    before = set(table.users())
    uid = table.uid_of(jobid)
    changed = table.end(jobid)
    if uid is None:
        assert changed is False
        return []
    return implied(table, uid, changed, before)


@dataclass
class Slices:
    """What carrying out the actions would leave in systemd, checked strictly.

    PREPARE only for an inactive user, APPLY and TEARDOWN only for an active
    one, APPLY only with a union that differs from the one in force.
    """

    active: Dict[int, Resources] = field(default_factory=dict)
    prepares: Dict[int, int] = field(default_factory=dict)

    def carry_out(self, actions: List[Action]) -> None:
        assert len(actions) <= 1, actions
        for a in actions:
            assert a.uid != OWNER, "the owner is never managed"
            if a.kind == PREPARE:
                assert a.uid not in self.active, "PREPARE of an active user"
                self.active[a.uid] = a.resources
                self.prepares[a.uid] = self.prepares.get(a.uid, 0) + 1
            elif a.kind == APPLY:
                assert a.uid in self.active, "APPLY to an inactive user"
                assert a.resources != self.active[a.uid], "APPLY without a change"
                self.active[a.uid] = a.resources
            elif a.kind == TEARDOWN:
                assert a.uid in self.active, "TEARDOWN of an inactive user"
                assert a.resources == EMPTY
                del self.active[a.uid]
            else:
                raise AssertionError(f"unknown action {a}")

    def agrees_with(self, table: UserTable) -> None:
        assert set(self.active) == set(table.users())
        for uid, union in self.active.items():
            assert table.union(uid) == union


def state_of(table: UserTable) -> dict:
    """Everything observable about *table*, for comparing two tables."""
    return {
        uid: (
            table.union(uid),
            {
                j: (job.uid, job.resources, job.running)
                for j, job in table.jobs(uid).items()
            },
            table.admitted(uid),
        )
        for uid in table.users()
    }


# -- examples ------------------------------------------------------------


def test_first_job_prepares_the_user_with_its_resources():
    t = UserTable(OWNER)
    assert start(t, 1, 1000, res("0-1")) == [Action(PREPARE, 1000, res("0-1"))]
    assert t.users() == [1000]
    assert t.admitted(1000)
    assert t.uid_of(1) == 1000
    assert len(t) == 1


def test_second_job_with_new_resources_applies_the_union():
    t = UserTable(OWNER)
    t.start(1, 1000, res("0-1"))
    assert start(t, 2, 1000, res("2", "0")) == [Action(APPLY, 1000, res("0-2", "0"))]
    assert t.union(1000) == res("0-2", "0")


def test_second_job_within_the_union_implies_nothing():
    t = UserTable(OWNER)
    t.start(1, 1000, res("0-3", "0-1"))
    assert start(t, 2, 1000, res("1", "1")) == []


def test_ending_a_job_shrinks_the_union():
    t = UserTable(OWNER)
    t.start(1, 1000, res("0-1"))
    t.start(2, 1000, res("2-3"))
    assert end(t, 1) == [Action(APPLY, 1000, res("2-3"))]
    assert list(t.jobs(1000)) == [2]


def test_ending_a_job_whose_resources_others_cover_implies_nothing():
    t = UserTable(OWNER)
    t.start(1, 1000, res("0-1"))
    t.start(2, 1000, res("0-1"))
    assert end(t, 2) == []
    assert t.union(1000) == res("0-1")


def test_last_job_tears_the_user_down():
    t = UserTable(OWNER)
    t.start(1, 1000, res("0"))
    t.start(2, 1000, res("1"))
    t.end(1)
    assert end(t, 2) == [Action(TEARDOWN, 1000)]
    assert t.users() == []
    assert t.union(1000) == EMPTY
    assert not t.admitted(1000)
    assert len(t) == 0


def test_users_are_independent():
    t = UserTable(OWNER)
    assert start(t, 1, 1000, res("0")) == [Action(PREPARE, 1000, res("0"))]
    assert start(t, 2, 1001, res("0")) == [Action(PREPARE, 1001, res("0"))]
    assert end(t, 1) == [Action(TEARDOWN, 1000)]
    assert t.users() == [1001]
    assert t.union(1001) == res("0")


def test_a_job_with_no_local_resources_still_prepares_the_user():
    t = UserTable(OWNER)
    assert start(t, 1, 1000, EMPTY) == [Action(PREPARE, 1000, EMPTY)]
    assert t.admitted(1000)


def test_owner_jobs_are_never_managed():
    t = UserTable(OWNER)
    assert start(t, 1, OWNER, res("0-3")) == []
    assert t.users() == []
    assert not t.admitted(OWNER)
    assert t.uid_of(1) is None
    assert t.cleanup(1) is None
    assert end(t, 1) == []


def test_duplicate_start_is_ignored_even_with_other_resources():
    t = UserTable(OWNER)
    t.start(1, 1000, res("0"))
    assert start(t, 1, 1000, res("0-7")) == []
    assert start(t, 1, 1001, res("0")) == []
    assert t.union(1000) == res("0")
    assert t.users() == [1000]


def test_ending_an_unknown_job_is_ignored():
    t = UserTable(OWNER)
    assert end(t, 42) == []
    t.start(1, 1000, res("0"))
    assert end(t, 42) == []
    assert end(t, 1) == [Action(TEARDOWN, 1000)]
    assert end(t, 1) == []


def test_cleanup_stops_admission_but_keeps_the_union():
    t = UserTable(OWNER)
    t.start(1, 1000, res("0-1", "0"))
    assert t.cleanup(1) is None
    assert not t.admitted(1000)
    assert t.users() == [1000]
    assert t.union(1000) == res("0-1", "0")
    assert end(t, 1) == [Action(TEARDOWN, 1000)]


def test_one_running_job_keeps_the_user_admitted():
    t = UserTable(OWNER)
    t.start(1, 1000, res("0"))
    t.start(2, 1000, res("1"))
    t.cleanup(1)
    assert t.admitted(1000)
    t.cleanup(2)
    assert not t.admitted(1000)


def test_cleanup_of_an_unknown_job_is_ignored():
    t = UserTable(OWNER)
    assert t.cleanup(7) is None
    assert len(t) == 0


def test_jobs_returns_a_copy():
    t = UserTable(OWNER)
    t.start(1, 1000, res("0"))
    t.jobs(1000).clear()
    assert list(t.jobs(1000)) == [1]


# -- properties ----------------------------------------------------------

small_ids = st.frozensets(st.integers(0, 15), max_size=6)
resources = st.builds(Resources, small_ids, st.frozensets(st.integers(0, 3)))
uids = st.sampled_from([1000, 1001, 1002, OWNER])


@given(resources, resources, resources)
def test_union_is_commutative_and_idempotent(a, b, c):
    assert a | b == b | a
    assert (a | b) | c == a | (b | c)
    assert a | a == a
    assert rv1.union([a, b, a, c, b]) == rv1.union([c, b, a])


@given(st.lists(resources, max_size=5), st.randoms())
def test_table_union_does_not_depend_on_start_order(items, random):
    t1, t2 = UserTable(OWNER), UserTable(OWNER)
    for jobid, r in enumerate(items):
        t1.start(jobid, 1000, r)
    order = list(enumerate(items))
    random.shuffle(order)
    for jobid, r in order:
        t2.start(jobid, 1000, r)
    assert t1.union(1000) == t2.union(1000) == rv1.union(items)
    assert state_of(t1) == state_of(t2)


@given(st.lists(st.tuples(uids, resources), max_size=8), st.randoms())
def test_add_then_remove_returns_to_the_empty_state(jobs, random):
    t = UserTable(OWNER)
    slices = Slices()
    for jobid, (uid, r) in enumerate(jobs):
        slices.carry_out(start(t, jobid, uid, r))
    order = list(range(len(jobs)))
    random.shuffle(order)
    for jobid in order:
        slices.carry_out(end(t, jobid))
        slices.agrees_with(t)
    assert len(t) == 0
    assert t.users() == []
    assert state_of(t) == {}
    assert slices.active == {}
    for uid, _ in jobs:
        assert t.union(uid) == EMPTY
        assert not t.admitted(uid)


@st.composite
def interleavings(draw):
    """Jobs, which of them end, and one order of all their events.

    Every job starts; a drawn subset ends, each end after its own start.
    """
    jobs = draw(st.lists(st.tuples(uids, resources), min_size=1, max_size=7))
    ends = draw(st.sets(st.integers(0, len(jobs) - 1)))
    events = [("start", j) for j in range(len(jobs))] + [("end", j) for j in ends]
    events = draw(st.permutations(events))
    pos = {ev: i for i, ev in enumerate(events)}
    for j in ends:  # put each job's start before its end
        s, e = pos[("start", j)], pos[("end", j)]
        if e < s:
            events[s], events[e] = events[e], events[s]
            pos[("start", j)], pos[("end", j)] = e, s
    return jobs, ends, events


@given(interleavings())
def test_any_interleaving_ends_in_the_same_state(case):
    jobs, ends, events = case
    t = UserTable(OWNER)
    slices = Slices()
    for kind, j in events:
        uid, r = jobs[j]
        actions = start(t, j, uid, r) if kind == "start" else end(t, j)
        slices.carry_out(actions)
        slices.agrees_with(t)

    reference = UserTable(OWNER)
    for j, (uid, r) in enumerate(jobs):
        if j not in ends:
            reference.start(j, uid, r)
    assert state_of(t) == state_of(reference)
    for uid in {u for u, _ in jobs} - {OWNER}:
        expected = rv1.union(
            r for j, (u, r) in enumerate(jobs) if u == uid and j not in ends
        )
        assert t.union(uid) == expected


@given(interleavings())
def test_each_user_episode_has_one_prepare_and_one_teardown(case):
    jobs, _, events = case
    t = UserTable(OWNER)
    active = {}
    episodes = {}
    for kind, j in events:
        uid, r = jobs[j]
        before = set(t.users())
        actions = start(t, j, uid, r) if kind == "start" else end(t, j)
        after = set(t.users())
        kinds = [a.kind for a in actions]
        if uid == OWNER:
            assert actions == []
            continue
        if uid not in before and uid in after:
            assert kinds == [PREPARE]
            episodes[uid] = episodes.get(uid, 0) + 1
            active[uid] = True
        elif uid in before and uid not in after:
            assert kinds == [TEARDOWN]
            active[uid] = False
        else:
            assert PREPARE not in kinds and TEARDOWN not in kinds
    for uid, is_active in active.items():
        assert is_active == (uid in t.users())


# -- stateful: any sequence of events, including repeats and unknown jobs -


class UserTableMachine(RuleBasedStateMachine):
    """Random start/cleanup/end sequences keep the actions consistent."""

    jobids = Bundle("jobids")

    def __init__(self):
        super().__init__()
        self.table = UserTable(OWNER)
        self.slices = Slices()
        self.model: Dict[int, tuple] = {}  # jobid -> (uid, resources, running)
        self.uid: Dict[int, int] = {}  # every started job, the owner's too
        self.next_id = 0

    @rule(target=jobids, uid=uids, r=resources)
    def start(self, uid, r):
        jobid = self.next_id
        self.next_id += 1
        self.uid[jobid] = uid
        self.slices.carry_out(start(self.table, jobid, uid, r))
        if uid != OWNER:
            self.model[jobid] = (uid, r, True)
        return jobid

    @rule(jobid=jobids, r=resources)
    def start_again(self, jobid, r):
        """A repeated start (e.g. a replayed journal) implies nothing."""
        assert self.table.start(jobid, self.uid[jobid], r) is False

    @rule(jobid=jobids)
    def cleanup(self, jobid):
        assert self.table.cleanup(jobid) is None
        if jobid in self.model:
            uid, r, _ = self.model[jobid]
            self.model[jobid] = (uid, r, False)

    @rule(jobid=consumes(jobids))
    def end(self, jobid):
        self.slices.carry_out(end(self.table, jobid))
        self.model.pop(jobid, None)

    @rule(jobid=st.integers(10_000, 10_010))
    def end_unknown(self, jobid):
        assert self.table.end(jobid) is False

    @invariant()
    def actions_match_the_table(self):
        self.slices.agrees_with(self.table)

    @invariant()
    def table_matches_the_model(self):
        users = {uid for uid, _, _ in self.model.values()}
        assert set(self.table.users()) == users
        assert len(self.table) == len(self.model)
        for uid in users | {OWNER}:
            mine = [(r, running) for u, r, running in self.model.values() if u == uid]
            assert self.table.union(uid) == rv1.union(r for r, _ in mine)
            assert self.table.admitted(uid) == any(running for _, running in mine)
            ids = [j for j, (u, _, run) in self.model.items() if u == uid and run]
            assert self.table.running(uid) == ids  # start order
            assert self.table.nrunning(uid) == len(ids)
            assert self.table.running(uid, 2) == ids[:2]
        for jobid, (uid, _, _) in self.model.items():
            assert self.table.uid_of(jobid) == uid


TestUserTableMachine = UserTableMachine.TestCase


@pytest.mark.parametrize("kind", [PREPARE, APPLY, TEARDOWN])
def test_model_refuses_inconsistent_actions(kind):
    """The checker above can fail: feed it each impossible action."""
    slices = Slices()
    bad = {
        PREPARE: [Action(PREPARE, 1, res("0")), Action(PREPARE, 1, res("0"))],
        APPLY: [Action(APPLY, 1, res("0"))],
        TEARDOWN: [Action(TEARDOWN, 1)],
    }[kind]
    with pytest.raises(AssertionError):
        for a in bad:
            slices.carry_out([a])

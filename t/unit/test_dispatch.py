"""Rank-0 dispatch of journal events (flux_pam_service.broker.dispatcher)."""

from flux_pam_service.broker import dispatcher
from flux_pam_service.broker.dispatcher import JOB_CLEANUP, JOB_END, JOB_START, Message


def R(*entries):
    return {
        "version": 1,
        "execution": {
            "R_lite": [
                {"rank": rank, "children": {"core": cores}} for rank, cores in entries
            ]
        },
    }


def local(rank, cores):
    return {
        "version": 1,
        "execution": {"R_lite": [{"rank": str(rank), "children": {"core": cores}}]},
    }


def submit(d, jobid, userid=1000):
    return d.event(jobid, "submit", {"userid": userid})


def test_alloc_sends_job_start_only_to_ranks_in_R_with_local_R():
    d = dispatcher.Dispatcher()
    assert submit(d, 1) == []
    msgs = d.event(1, "alloc", {}, R=R(("0", "0-1"), ("2-3", "1")))
    assert msgs == [
        Message(0, JOB_START, {"id": 1, "userid": 1000, "R": local(0, "0-1")}),
        Message(2, JOB_START, {"id": 1, "userid": 1000, "R": local(2, "1")}),
        Message(3, JOB_START, {"id": 1, "userid": 1000, "R": local(3, "1")}),
    ]


def test_full_lifecycle_cleanup_then_end_at_release():
    d = dispatcher.Dispatcher()
    submit(d, 7)
    d.event(7, "alloc", {}, R=R(("0-1", "0")))
    assert [m.topic for m in d.event(7, "start")] == []
    assert d.event(7, "finish", {"status": 0}) == [
        Message(0, JOB_CLEANUP, {"id": 7}),
        Message(1, JOB_CLEANUP, {"id": 7}),
    ]
    assert d.event(7, "release", {"ranks": "all", "final": True}) == [
        Message(0, JOB_END, {"id": 7}),
        Message(1, JOB_END, {"id": 7}),
    ]
    assert d.event(7, "free") == []
    assert d.event(7, "clean") == []
    assert d.jobs == {}


def test_partial_release_ends_only_those_ranks_then_free_ends_the_rest():
    d = dispatcher.Dispatcher()
    submit(d, 8)
    d.event(8, "alloc", {}, R=R(("0-3", "0")))
    d.event(8, "finish", {"status": 0})
    assert d.event(8, "release", {"ranks": "1,3", "final": False}) == [
        Message(1, JOB_END, {"id": 8}),
        Message(3, JOB_END, {"id": 8}),
    ]
    assert [j["id"] for j in d.jobs_on(1)] == []
    assert [j["id"] for j in d.jobs_on(2)] == [8]
    assert [m.rank for m in d.event(8, "free")] == [0, 2]
    assert d.event(8, "clean") == []


def test_job_cancelled_before_alloc_sends_nothing():
    d = dispatcher.Dispatcher()
    submit(d, 9)
    out = d.event(9, "exception", {"severity": 0, "type": "cancel"})
    out += d.event(9, "clean")
    assert out == []
    assert d.jobs == {}


def test_prolog_failure_cleans_up_and_ends_at_free():
    d = dispatcher.Dispatcher()
    submit(d, 10)
    d.event(10, "alloc", {}, R=R(("1", "0")))
    assert d.event(10, "exception", {"severity": 0, "type": "prolog"}) == [
        Message(1, JOB_CLEANUP, {"id": 10})
    ]
    assert d.event(10, "free") == [Message(1, JOB_END, {"id": 10})]


def test_non_fatal_exception_is_not_cleanup():
    d = dispatcher.Dispatcher()
    submit(d, 11)
    d.event(11, "alloc", {}, R=R(("0", "0")))
    assert d.event(11, "exception", {"severity": 1, "type": "timeout"}) == []
    assert d.jobs[11].running


def test_malformed_R_is_an_error_and_sends_nothing():
    d = dispatcher.Dispatcher()
    submit(d, 14)
    assert d.event(14, "alloc", {}, R={"version": 2}) == []
    assert "version" in d.errors[-1]


def test_events_of_unknown_jobs_are_ignored():
    d = dispatcher.Dispatcher()
    assert d.event(99, "alloc", {}, R=R(("0", "0"))) == []
    assert d.event(99, "release", {"ranks": "all"}) == []


def test_jobs_on_and_by_rank_describe_what_each_rank_holds():
    d = dispatcher.Dispatcher()
    submit(d, 1)
    d.event(1, "alloc", {}, R=R(("0-1", "0")))
    submit(d, 2, userid=1001)
    d.event(2, "alloc", {}, R=R(("1", "1")))
    d.event(2, "finish", {"status": 0})
    submit(d, 3)  # pending: holds nothing
    assert d.jobs_on(0) == [
        {"id": 1, "userid": 1000, "R": local(0, "0"), "running": True}
    ]
    by_rank = d.jobs_by_rank()
    assert sorted(by_rank) == [0, 1]
    assert by_rank[1] == d.jobs_on(1)
    assert [(j["id"], j["running"]) for j in by_rank[1]] == [(1, True), (2, False)]

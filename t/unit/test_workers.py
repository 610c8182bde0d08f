"""The worker pool: completions on the owner's thread (broker.workers)."""

import select
import threading
import time

import pytest

from flux_pam_service.broker import workers


def wait_drain(pool, n, timeout=5.0):
    ran = 0
    deadline = time.monotonic() + timeout
    while ran < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {ran} of {n} completions"
        r, _, _ = select.select([pool.fileno()], [], [], left)
        if r:
            ran += pool.drain()
    return ran


def test_results_and_errors_are_delivered_on_the_draining_thread():
    pool = workers.Pool(2)
    seen = []
    main = threading.get_ident()

    def done(result, exc):
        seen.append((result, type(exc).__name__ if exc else None))
        assert threading.get_ident() == main

    pool.submit(lambda state: threading.get_ident(), done)
    pool.submit(lambda state: 1 / 0, done)
    assert pool.busy == 2
    wait_drain(pool, 2)
    assert pool.busy == 0
    kinds = sorted(k for _, k in seen if k) + [r != main for r, k in seen if not k]
    assert kinds == ["ZeroDivisionError", True]
    pool.close()


def test_jobs_run_in_parallel_up_to_the_thread_count():
    pool = workers.Pool(3)
    barrier = threading.Barrier(3, timeout=5)
    pool_results = []
    for _ in range(3):
        pool.submit(lambda state: barrier.wait(), lambda r, e: pool_results.append(e))
    wait_drain(pool, 3)
    assert pool_results == [None, None, None]
    pool.close()


def test_state_is_private_to_each_thread_and_kept_between_jobs():
    pool = workers.Pool(1)
    out = []

    def job(state):
        state["n"] = state.get("n", 0) + 1
        return state["n"]

    for _ in range(3):
        pool.submit(job, lambda r, e: out.append(r))
    wait_drain(pool, 3)
    assert out == [1, 2, 3]
    pool.close()


def test_thread_state_objects_are_closed_at_shutdown():
    pool = workers.Pool(1)
    closed = []

    class Conn:
        def close(self):
            closed.append(True)

    pool.submit(lambda state: state.setdefault("conn", Conn()), lambda r, e: None)
    wait_drain(pool, 1)
    pool.close()
    assert closed == [True]


def test_submit_after_close_is_refused():
    pool = workers.Pool(1)
    pool.close()
    with pytest.raises(RuntimeError):
        pool.submit(lambda s: None, lambda r, e: None)


def test_a_pool_needs_a_thread():
    with pytest.raises(ValueError):
        workers.Pool(0)

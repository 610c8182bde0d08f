"""Where the pam module's CPU goes: its own profile (``profile=PATH``), by part.

    modprofile.breakdown(path) -> {part: seconds, ..., "total": seconds}

The module, loaded with ``profile=PATH``, runs every thread under cProfile
timed by time.thread_time and writes the merged pstats at unload
(flux_pam_service.broker.profiling): a function's time is CPU time, waiting
for systemd or the broker costs nothing.  The parts are the candidates of
issue 17, each the CPU time of what it names, with what it calls
(inclusive), so some parts contain others: "systemd operations" contains
"jeepney" and "read-back (verdict)"; "journal" contains "dispatcher".
The profiler's own overhead inflates every figure (about 2x here); the
shares are what to read.
"""

import pstats
from typing import Callable, Dict, List, Tuple

Key = Tuple[str, int, str]  # (file, line, function), as pstats keys them
Stats = Dict[Key, tuple]  # key -> (cc, nc, tottime, cumtime, callers)


def _is(file: str, func: str) -> Callable[[Key], bool]:
    return lambda k: k[0].endswith(file) and k[2] == func


def _in(*files: str) -> Callable[[Key], bool]:
    return lambda k: any(f in k[0] for f in files)


def _cum(st: Stats, match: Callable[[Key], bool]) -> float:
    """Inclusive time of the functions *match* selects (not recursive here)."""
    return sum(v[3] for k, v in st.items() if match(k))


def _own(st: Stats, match: Callable[[Key], bool]) -> float:
    """Exclusive time of the functions *match* selects."""
    return sum(v[2] for k, v in st.items() if match(k))


def _cums(*matches: Callable[[Key], bool]) -> Callable[[Stats], float]:
    """The inclusive time of each of *matches*, summed."""
    return lambda st: sum(_cum(st, m) for m in matches)


def _edge(st: Stats, callee: Callable[[Key], bool], caller: Callable[[Key], bool]):
    """Inclusive time of *callee* when called from *caller*."""
    total = 0.0
    for k, v in st.items():
        if callee(k):
            for ck, edge in v[4].items():
                if caller(ck):
                    total += edge[3]
    return total


def _decoding(st: Stats) -> float:
    """The journal callback's read of each response."""
    get = _edge(st, _is("flux/rpc.py", "get"), _is("journal.py", "_cb"))
    fast = _edge(st, _is("responses.py", "payload"), _is("journal.py", "_cb"))
    return get + fast


#: (part, what it is, how it is computed from the stats)
PARTS: List[Tuple[str, str, Callable[[Stats], float]]] = [
    (
        "journal",
        "rank 0: each journal response, decoded and dispatched (inclusive)",
        lambda st: _cum(st, _is("journal.py", "_response")) + _decoding(st),
    ),
    (
        "  JSON decoding of events",
        "the journal response read (f.get() or responses.payload: JSON to dict)",
        _decoding,
    ),
    (
        "  dispatcher",
        "Dispatcher.event: per-rank R, messages",
        _cums(_is("dispatcher.py", "event")),
    ),
    (
        "rank-0 RPC",
        "pam.job-* sent by rank 0 (to other ranks) and handled on the job's rank",
        lambda st: (
            _cum(st, _is("module.py", "_send"))
            - _edge(st, _is("scheduler.py", "guard"), _is("module.py", "_send"))
            + _cum(st, _is("module.py", "_from_rank0"))
        ),
    ),
    (
        "mapper",
        "the properties of a union: sdexec-mapper.lookup round trip"
        " (request, answer) or the in-process mapping",
        lambda st: (
            _cum(st, _is("scheduler.py", "_lookup"))
            + _edge(st, _is("flux/rpc.py", "get"), _is("module.py", "cb"))
            + _cum(st, _is("scheduler.py", "_properties"))
        ),
    ),
    (
        "systemd operations",
        "prepare/apply/release/teardown on the worker threads (inclusive)",
        _cums(
            *(
                _is("operations.py", name)
                for name in ("activate", "deactivate", "unconstrain", "release")
            )
        ),
    ),
    (
        "  jeepney",
        "building, sending and parsing D-Bus messages (all threads)",
        lambda st: _own(st, _in("jeepney/")),
    ),
    (
        "  read-back (verdict)",
        "UserSlice.read_back after a constraining operation",
        _cums(_is("user_slice.py", "read_back")),
    ),
    (
        "read-back for pam.status",
        "UserSlice.state after every operation (off the job's path)",
        _cums(_is("user_slice.py", "state")),
    ),
    (
        "worker hand-off",
        "Pool.submit, the pipe wake-up, Pool.drain, the queue",
        lambda st: (
            _cum(st, _is("workers.py", "submit"))
            + _own(st, _is("workers.py", "drain"))
            + _edge(st, lambda k: "os.read" in k[2], _is("workers.py", "drain"))
            + _cum(st, _is("workers.py", "_wake"))
            + _own(st, _is("workers.py", "_run"))
            + _edge(st, _is("queue.py", "get"), _is("workers.py", "_run"))
        ),
    ),
    (
        "scheduler + waiters",
        "per-user state, unions, pam.prolog answers (exclusive)",
        lambda st: _own(
            st,
            _in(
                "broker/scheduler.py",
                "broker/waiters.py",
                "core/jobs.py",
                "core/rv1.py",
                "core/idset.py",
                "broker/admission.py",
            ),
        ),
    ),
    (
        "pam.prolog requests",
        "the benchmark's probe (one per job), handled (inclusive)",
        _cums(_is("module.py", "prolog")),
    ),
]


def load(path: str) -> Stats:
    """The merged pstats of a profile file."""
    return pstats.Stats(path).stats  # type: ignore[attr-defined]


def breakdown(path: str) -> Dict[str, float]:
    """CPU seconds per part, and "total" (all the module's threads)."""
    st = load(path)
    out = {part: fn(st) for part, _, fn in PARTS}
    out["total"] = sum(v[2] for v in st.values())
    return out


def per_job_ms(seconds: Dict[str, float], njobs: int) -> Dict[str, float]:
    """CPU seconds per part as ms per job."""
    return {k: v * 1000.0 / njobs for k, v in seconds.items()}

"""The module's CPU profile, behind the module argument ``profile=PATH``.

Every thread of the module (the reactor's and each worker's) runs under a
cProfile.Profile timed by time.thread_time, so a function's time is CPU
time, not time spent waiting for systemd or the broker.  At unload the
profiles are merged and written to PATH (pstats format; bench/job_overhead.py
reads it).  A debugging aid: it slows the module down.
"""

import cProfile
import pstats
import threading
import time
from typing import Callable, List


class Profiler:
    """One cProfile.Profile per thread, merged into one file at the end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._profiles: List[cProfile.Profile] = []

    def _new(self) -> cProfile.Profile:
        prof = cProfile.Profile(time.thread_time)
        with self._lock:
            self._profiles.append(prof)
        return prof

    def run(self, fn: Callable[[], None]) -> None:
        """Call *fn* on this thread under a profile of its own."""
        prof = self._new()
        prof.enable()
        try:
            fn()
        finally:
            prof.disable()

    def dump(self) -> None:
        """Write the merged profiles to the path (threads still running are
        included as far as they got)."""
        with self._lock:
            profiles = list(self._profiles)
        stats = None
        for prof in profiles:
            prof.create_stats()
            if stats is None:
                stats = pstats.Stats(prof)
            else:
                stats.add(prof)
        if stats is not None:
            stats.dump_stats(self.path)

"""A small thread pool whose results come back on the owner's thread.

The module must never block its reactor on systemd, and its Flux handle may
only be used from the reactor thread: blocking work runs on a few worker
threads, and each finished job is announced by one byte on a pipe whose read
end the module watches; drain() then runs the completion callbacks on the
reactor thread.  Each worker thread passes a private ``state`` dict to every
job it runs (the module keeps one systemd connection per thread there).  The
pool does not order jobs: the scheduler submits a user's next operation from
the completion of the previous one.
"""

import collections
import os
import queue
import threading
from typing import Any, Callable, Deque, List, Optional, Tuple

Job = Callable[[dict], Any]
Done = Callable[[Any, Optional[BaseException]], None]

_STOP = object()


class Pool:
    """Worker threads with completions delivered through a pipe."""

    def __init__(
        self,
        nthreads: int,
        name: str = "worker",
        around: Optional[Callable[[Callable[[], None]], None]] = None,
    ) -> None:
        if nthreads < 1:
            raise ValueError("a pool needs at least one thread")
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._done: Deque[Tuple[Done, Any, Optional[BaseException]]] = (
            collections.deque()
        )
        self._lock = threading.Lock()
        self._busy = 0
        self._closed = False
        self._threads: List[threading.Thread] = []
        # *around* runs each thread's loop (the module's profiler)
        target = (lambda: around(self._run)) if around else self._run
        for i in range(nthreads):
            t = threading.Thread(target=target, name=f"{name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def fileno(self) -> int:
        """The fd to watch for readability."""
        return self._rfd

    @property
    def busy(self) -> int:
        """Jobs submitted whose completion callback has not run yet."""
        return self._busy

    def submit(self, fn: Job, done: Done) -> None:
        """Run fn(state) on a worker; call done(result, exc) from drain()."""
        if self._closed:
            raise RuntimeError("pool is closed")
        self._busy += 1
        self._jobs.put((fn, done))

    def _wake(self) -> None:
        try:
            os.write(self._wfd, b"x")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is pending anyway
        except OSError:
            pass  # closed during shutdown

    def _run(self) -> None:
        state: dict = {}
        while True:
            item = self._jobs.get()
            if item is _STOP:
                break
            fn, done = item
            try:
                result, exc = fn(state), None
            except BaseException as e:  # delivered to the callback
                result, exc = None, e
            with self._lock:
                self._done.append((done, result, exc))
            self._wake()
        for value in state.values():
            close = getattr(value, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    pass

    def drain(self) -> int:
        """Run the callbacks of finished jobs on the calling thread."""
        try:
            while os.read(self._rfd, 4096):
                pass
        except BlockingIOError:
            pass
        n = 0
        while True:
            with self._lock:
                if not self._done:
                    break
                done, result, exc = self._done.popleft()
            self._busy -= 1
            n += 1
            done(result, exc)
        return n

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker threads and close the pipe.

        Jobs not started are dropped; running ones are waited for up to
        *timeout* seconds.
        """
        if self._closed:
            return
        self._closed = True
        try:
            while True:
                self._jobs.get_nowait()
        except queue.Empty:
            pass
        for _ in self._threads:
            self._jobs.put(_STOP)
        for t in self._threads:
            t.join(timeout)
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass

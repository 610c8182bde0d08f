"""A small thread pool whose results come back on the owner's thread.

The broker module must never block its reactor on systemd, and its Flux
handle may only be used from the reactor thread.  Blocking work is therefore
handed to a few worker threads; each finished job is queued with its result
and announced by one byte on a pipe.  The module watches the read end of the
pipe with a Flux fd watcher and calls drain(), which runs the completion
callbacks on the reactor thread.

Each worker thread has a private ``state`` dict that is passed to every job
it runs: a job keeps its per-thread resources there (the module keeps one
systemd D-Bus connection per thread this way) and may drop them after an
error so that the next job reconnects.

The pool does not order jobs: callers that need ordering (one operation at a
time per user) submit the next job from the completion callback of the
previous one.

Interface:
    Pool(nthreads, name="worker")
        fileno() -> int          read end of the wake-up pipe (non-blocking)
        submit(fn, done)         fn(state) runs on a worker thread;
                                 done(result, exc) runs in drain(); exactly
                                 one of result/exc is meaningful (exc is None
                                 on success)
        drain() -> int           run the callbacks of finished jobs; returns
                                 how many ran
        busy -> int              jobs submitted whose callback has not run
        close(timeout=5.0)       stop the threads; pending jobs are dropped,
                                 running ones are waited for up to *timeout*
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

    def __init__(self, nthreads: int, name: str = "worker") -> None:
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
        for i in range(nthreads):
            t = threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
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
        """Stop the worker threads and close the pipe."""
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

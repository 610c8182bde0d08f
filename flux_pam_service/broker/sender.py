"""Rank 0's pam.job-* requests to the ranks of a job, on libflux-core directly.

A job of N nodes costs rank 0 one request per node.  Through the bindings
(``handle.rpc().then()``) each made a Future object with its wrappers, a
Python handle for the callback and a Flux handle object to read the answer:
about 0.27 ms of rank 0's CPU per node of a job.  Here a request is one
flux_rpc() and one flux_future_then() with a callback made once; the answer
(empty, or an error) is read with flux_rpc_get() and the future destroyed.
"""

import json
import os
from typing import Any, Callable, Dict, Tuple

from _flux._core import ffi, lib

#: failed(rank, topic, OSError): a request was not delivered or failed there
Failed = Callable[[int, str, OSError], None]


class Sender:
    """Send requests without waiting; report the ones that fail."""

    def __init__(self, handle: Any, failed: Failed) -> None:
        self._h = handle.handle  # the flux_t * of the module's handle
        self._failed = failed
        self._pending: Dict[int, Tuple[int, str]] = {}
        self._next = 0
        # one C callback for every request (a cffi callback per request
        # would cost what this saves)
        self._cb = ffi.callback("void(flux_future_t *, void *)", self._done)

    def __len__(self) -> int:
        return len(self._pending)

    def send(self, rank: int, topic: str, payload: dict) -> None:
        """Send *topic* with *payload* to the module on *rank*."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        f = lib.flux_rpc(self._h, topic.encode(), body, rank, 0)
        if f == ffi.NULL:
            raise OSError(ffi.errno, f"{topic}: {os.strerror(ffi.errno)}")
        self._next += 1
        key = self._next
        if lib.flux_future_then(f, -1.0, self._cb, ffi.cast("void *", key)) < 0:
            errnum = ffi.errno
            lib.flux_future_destroy(f)
            raise OSError(errnum, f"{topic}: {os.strerror(errnum)}")
        self._pending[key] = (rank, topic)

    def _done(self, f: Any, arg: Any) -> None:
        rank, topic = self._pending.pop(int(ffi.cast("intptr_t", arg)), (-1, "?"))
        try:
            if lib.flux_rpc_get(f, ffi.NULL) < 0:
                errnum = ffi.errno
                text = lib.flux_future_error_string(f)
                why = ffi.string(text).decode() if text else os.strerror(errnum)
                self._failed(rank, topic, OSError(errnum, why))
        finally:
            lib.flux_future_destroy(f)

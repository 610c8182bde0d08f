"""RPC responses read on the module's hot path.

``Future.get()`` of flux-core's bindings makes a Flux handle object for every
call (its ``@interruptible`` wrapper) and goes through the generic wrapper
class; for the journal's six responses per job that cost more than the rest
of their handling.  payload()
asks libflux-core directly, and falls back to ``get()`` for an error
response, so that errors read as the bindings make them.
"""

import json
from typing import Any, Optional

from _flux._core import ffi, lib


def payload(f: Any) -> Optional[dict]:
    """The decoded payload of RPC future *f*, as f.get() returns it."""
    buf = ffi.new("char *[1]")
    if lib.flux_rpc_get(f.pimpl.handle, buf) < 0:
        return f.get()  # raises the OSError
    if buf[0] == ffi.NULL:
        return None
    return json.loads(ffi.string(buf[0]))

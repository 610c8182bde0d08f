#!/usr/bin/python3
"""Run systemd D-Bus calls as the calling user; print each outcome as JSON.

Input (stdin): a JSON list of [method, args...] where method is a
flux_pam_service.systemd.client.Systemd method name, or "UserSlice.prepare" /
"UserSlice.teardown" with a uid.  Output: one JSON list of "ok" or the D-Bus
error name (or "errno:N" for an error without a name), in order.  Used by
test_polkit.py inside the test bed, as users flux and bob.
"""

import json
import sys

from flux_pam_service.systemd.client import (
    MANAGER,
    MANAGER_PATH,
    SYSTEMD,
    DBusError,
    Systemd,
)
from flux_pam_service.systemd.user_slice import UserSlice


def main() -> int:
    ops = json.load(sys.stdin)
    out = []
    with Systemd(timeout=10) as sd:
        for method, *args in ops:
            try:
                if method == "UserSlice.prepare":
                    UserSlice(sd, args[0], job_timeout=20).prepare(args[1])
                elif method == "UserSlice.teardown":
                    UserSlice(sd, args[0], job_timeout=20).teardown(kill=True, grace=5)
                elif method == "start_transient_scope":
                    name, slice_, pids = args
                    sd.start_transient_scope(name, slice_, pids)
                elif method == "set_unit_properties":
                    name, props = args
                    sd.set_unit_properties(name, [(k, (sig, v)) for k, sig, v in props])
                elif method == "call_manager":
                    name, signature, *margs = args
                    sd.call(SYSTEMD, MANAGER_PATH, MANAGER, name, signature, margs)
                else:
                    getattr(sd, method)(*args)
                out.append("ok")
            except DBusError as exc:
                out.append(exc.name or f"errno:{exc.errno}")
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

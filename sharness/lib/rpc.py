"""Send one RPC and print the response payload as JSON (test helper).

Usage: flux python rpc.py [--rank N] [--time FILE] TOPIC [PAYLOAD_JSON]

Prints the response (``{}`` for an empty payload) and exits 0; an error
response prints ``ERRNO_NAME: text`` on stderr and exits 1.  --time writes
the round trip of the RPC alone, in milliseconds, to FILE.
The guest view is tested with FLUX_HANDLE_USERID / FLUX_HANDLE_ROLEMASK in the
environment (honoured for the instance owner's connection).
"""

import argparse
import errno
import json
import sys
import time

import flux
from flux.constants import FLUX_NODEID_ANY


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rank", type=int, default=FLUX_NODEID_ANY)
    p.add_argument("--time", metavar="FILE")
    p.add_argument("topic")
    p.add_argument("payload", nargs="?", default=None)
    args = p.parse_args()
    payload = json.loads(args.payload) if args.payload is not None else None
    h = flux.Flux()
    t0 = time.monotonic()
    try:
        resp = h.rpc(args.topic, payload, nodeid=args.rank).get()
    except OSError as exc:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        print(f"{name}: {exc.strerror}", file=sys.stderr)
        return 1
    if args.time:
        with open(args.time, "w") as f:
            f.write(f"{(time.monotonic() - t0) * 1000:.0f}\n")
    print(json.dumps(resp if resp is not None else {}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

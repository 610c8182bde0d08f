"""Send one RPC and print the response payload as JSON (test helper).

Usage: flux python rpc.py [--rank N] [--stream] TOPIC [PAYLOAD_JSON]

Without --stream, prints the one response (``{}`` for an empty payload) and
exits 0; an error response prints ``ERRNO_NAME: text`` on stderr and exits 1.
The guest view is tested with FLUX_HANDLE_USERID / FLUX_HANDLE_ROLEMASK in the
environment (honoured for the instance owner's connection).
"""

import argparse
import errno
import json
import sys

import flux
from flux.constants import FLUX_NODEID_ANY


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rank", type=int, default=FLUX_NODEID_ANY)
    p.add_argument("topic")
    p.add_argument("payload", nargs="?", default=None)
    args = p.parse_args()
    payload = json.loads(args.payload) if args.payload is not None else None
    h = flux.Flux()
    try:
        resp = h.rpc(args.topic, payload, nodeid=args.rank).get()
    except OSError as exc:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        print(f"{name}: {exc.strerror}", file=sys.stderr)
        return 1
    print(json.dumps(resp if resp is not None else {}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

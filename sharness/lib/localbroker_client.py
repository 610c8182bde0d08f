"""Ask a broker one thing through one client, for comparing clients (test helper).

Usage: localbroker_client.py [--uri URI] [--timeout S] [--drop KEY]...
                             CLIENT attr NAME
                             CLIENT rpc TOPIC PAYLOAD_JSON|@FILE

CLIENT is ``local`` (flux_pam_service.localbroker.connect) or ``libflux``
(flux_pam_service.brokerclient.FluxBroker).  URI defaults to FLUX_URI.
Prints the result as JSON (keys sorted; --drop removes top-level keys of an
object result, e.g. a ping's connection-specific "route") and exits 0; a
failure prints ``errno NAME`` on stdout, the error text on stderr, and
exits 1.
"""

import argparse
import errno
import json
import os
import sys

from flux_pam_service import brokerclient, localbroker


def open_broker(client: str, uri: str, timeout: float) -> object:
    if client == "libflux":
        return brokerclient.FluxBroker(uri, timeout)
    broker = localbroker.connect(uri, timeout)
    if broker is None:
        sys.exit(f"{uri}: not a local:// URI")
    return broker


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--uri", default=os.environ.get("FLUX_URI"))
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--drop", action="append", default=[])
    p.add_argument("client", choices=["local", "libflux"])
    p.add_argument("op", choices=["attr", "rpc"])
    p.add_argument("args", nargs="+")
    args = p.parse_args()
    try:
        broker = open_broker(args.client, args.uri, args.timeout)
        try:
            if args.op == "attr":
                result = broker.attr_get(args.args[0])
            else:
                topic, text = args.args
                if text.startswith("@"):
                    with open(text[1:]) as f:
                        text = f.read()
                result = broker.rpc(topic, json.loads(text))
        finally:
            broker.close()
    except OSError as exc:
        print("errno", errno.errorcode.get(exc.errno, str(exc.errno)))
        print(exc, file=sys.stderr)
        return 1
    if isinstance(result, dict):
        for key in args.drop:
            result.pop(key, None)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

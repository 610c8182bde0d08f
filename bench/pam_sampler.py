#!/usr/bin/python3
"""Time ``pamtester SERVICE USER acct_mgmt`` for several PAM services.

    pam_sampler.py [--ops OP,OP...] USER SAMPLES SERVICE...
        (pamtester operations, default acct_mgmt; environment passed to
        pamtester: PATH, and FLUX_URI if set)

Runs where the logins are timed: on the host, or inside the test bed (a
clean Debian userland, the way a compute node's sshd sees Python), so it uses
only the standard library.  Each round runs every service once, in a random
order; one warm-up round is not counted.  Prints one JSON object:
``{"ms": {SERVICE: [ms, ...]}, "failures": {SERVICE: [stderr, ...]}}``.
"""

import json
import os
import random
import subprocess
import sys
import time


def main(argv: list) -> int:
    ops = ["acct_mgmt"]
    if argv[:1] == ["--ops"]:
        ops, argv = argv[1].split(","), argv[2:]
    user, samples, services = argv[0], int(argv[1]), argv[2:]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if os.environ.get("FLUX_URI"):
        env["FLUX_URI"] = os.environ["FLUX_URI"]
    ms: dict = {s: [] for s in services}
    failures: dict = {s: [] for s in services}
    for rnd in range(samples + 1):
        order = list(services)
        random.shuffle(order)
        for s in order:
            t0 = time.perf_counter()
            r = subprocess.run(
                ["pamtester", s, user] + ops,
                env=env,
                capture_output=True,
                text=True,
            )
            elapsed = (time.perf_counter() - t0) * 1000
            if rnd == 0:
                continue
            if r.returncode == 0:
                ms[s].append(elapsed)
            else:
                failures[s].append(r.stderr.strip())
    print(json.dumps({"ms": ms, "failures": failures}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/python3
"""Where pam_flux's account path spends a login's time.

    pam_stages.py PYTHONPATH URI UID SAMPLES

Each sample is a fresh /usr/bin/python3 (as pam_python gives every login)
that makes pam_flux's calls in order and times them: importing
flux_pam_service.pamflux (with admission), importing localbroker, connecting
to the broker at URI, and admission.check_account() for UID.  "python
start-up" is the rest of the sample's wall time: starting the interpreter and
its site imports.  Samples the broker did not admit as owner are dropped (not
the path being timed).  Standard library only, so it runs inside the test bed
too.  Prints ``{"STAGE": [ms, ...], ...}`` as JSON.
"""

import json
import subprocess
import sys
import time

STAGES = (
    "python start-up",
    "import pamflux, admission",
    "import localbroker",
    "connect",
    "check_account",
)

SCRIPT = r"""
import sys, time
t = [time.perf_counter()]
sys.path[:0] = [p for p in sys.argv[1].split(":") if p]
from flux_pam_service import admission, pamflux
t.append(time.perf_counter())
from flux_pam_service import localbroker
t.append(time.perf_counter())
b = localbroker.connect(sys.argv[2], 10.0)
t.append(time.perf_counter())
v = admission.check_account(b, int(sys.argv[3]), admission.parse_options([]))
t.append(time.perf_counter())
b.close()
print(v.kind, *[y - x for x, y in zip(t, t[1:])])
"""


def main(argv: list) -> int:
    pythonpath, uri, uid, samples = argv[0], argv[1], argv[2], int(argv[3])
    out: dict = {name: [] for name in STAGES}
    for _ in range(samples):
        t0 = time.perf_counter()
        r = subprocess.run(
            ["/usr/bin/python3", "-c", SCRIPT, pythonpath, uri, uid],
            capture_output=True,
            text=True,
        )
        total = (time.perf_counter() - t0) * 1000
        fields = r.stdout.split()
        if r.returncode != 0 or not fields or fields[0] != "owner":
            continue
        steps = [float(x) * 1000 for x in fields[1:]]
        out[STAGES[0]].append(total - sum(steps))
        for name, ms in zip(STAGES[1:], steps):
            out[name].append(ms)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Submit jobs as another user, the way flux-core's tests do.

flux-core's t/scripts/sign-as.py signs a jobspec for a user with the
"none" mechanism, and the instance owner submits it with
FLUX_HANDLE_USERID set to that user (t2404-job-exec-multiuser.t,
t2800-jobs-cmd-multiuser.t): the job then belongs to the user in every
event, job list and environment, as on a system instance.  Nothing in the
product knows it is a test.  Such a guest job runs under job-exec's test
execution, which starts no process: the instance needs ``[exec.testexec]
allow-guests = true``, and the jobspec's
``attributes.system.exec.test.run_duration`` says how long it runs ("0s":
until it is cancelled).

    flux run --dry-run ... | flux python t/guestjobs.py [--count N] UID

prints the F58 IDs of N copies of the jobspec, submitted as UID.  The
benchmarks import submit().
"""

import argparse
import os
import sys
from typing import Any, List


def sign_as(uid: int, jobspec: str) -> str:
    """*jobspec* signed as *uid* with the "none" mechanism (sign-as.py)."""
    from flux.security import SecurityContext

    return SecurityContext().sign_wrap_as(uid, jobspec, mech_type="none").decode()


def handle_as(uid: int) -> Any:
    """A handle of the instance owner acting as *uid* (FLUX_HANDLE_USERID)."""
    import flux

    saved = os.environ.get("FLUX_HANDLE_USERID")
    os.environ["FLUX_HANDLE_USERID"] = str(uid)
    try:
        return flux.Flux()
    finally:
        if saved is None:
            del os.environ["FLUX_HANDLE_USERID"]
        else:
            os.environ["FLUX_HANDLE_USERID"] = saved


def submit(uid: int, jobspec: str, count: int = 1, handle: Any = None) -> List[int]:
    """Submit *count* copies of *jobspec* (JSON text) as *uid*; their IDs.

    The copies are sent before the first answer is awaited, as
    ``flux submit --cc`` does.
    """
    import flux.job

    h = handle if handle is not None else handle_as(uid)
    signed = sign_as(uid, jobspec)
    futures = [flux.job.submit_async(h, signed, pre_signed=True) for _ in range(count)]
    return [f.get_id() for f in futures]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1, help="copies (default 1)")
    ap.add_argument("uid", type=int)
    args = ap.parse_args()
    import flux.job

    for jobid in submit(args.uid, sys.stdin.read(), args.count):
        print(flux.job.JobID(jobid).f58)
    return 0


if __name__ == "__main__":
    sys.exit(main())

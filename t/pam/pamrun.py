"""Run PAM transactions with pypamtest and print each outcome as JSON.

Started by conftest.py in a fresh process, because pam_wrapper must be
preloaded (LD_PRELOAD=libpam_wrapper.so PAM_WRAPPER=1
PAM_WRAPPER_SERVICE_DIR=DIR) before the process starts.

    pamrun.py '[{"user": U, "service": S, "ops": [[OP, EXPECTED_RV], ...]}, ...]'

Each transaction is one PAM handle (pam_start ... pam_end).  OP is account,
authenticate, setcred, open_session, close_session or getenvlist; they run
on the handle in order.  Output, one line per transaction: {"ok": bool,
"error": pypamtest's message on a mismatch (it names the code returned),
"infos": [...], "errors": [...] (conversation messages), "env": {...}}.
Before each transaction a line ``--- pamrun N`` goes to stderr, so the log
lines pam_wrapper writes there can be told apart.
"""

import json
import sys

import pypamtest

OPS = {
    "account": pypamtest.PAMTEST_ACCOUNT,
    "authenticate": pypamtest.PAMTEST_AUTHENTICATE,
    "setcred": pypamtest.PAMTEST_SETCRED,
    "open_session": pypamtest.PAMTEST_OPEN_SESSION,
    "close_session": pypamtest.PAMTEST_CLOSE_SESSION,
    "getenvlist": pypamtest.PAMTEST_GETENVLIST,
}


def transaction(req: dict) -> dict:
    cases = [pypamtest.TestCase(OPS[op], rv) for op, rv in req["ops"]]
    out = {"ok": True, "error": None, "infos": [], "errors": [], "env": {}}
    try:
        res = pypamtest.run_pamtest(req["user"], req["service"], cases)
        out["infos"], out["errors"] = list(res.info), list(res.errors)
    except pypamtest.PamTestError as exc:
        out["ok"], out["error"] = False, str(exc)
    for op, case in zip(req["ops"], cases):
        if op[0] == "getenvlist" and case.pam_env:
            out["env"] = dict(case.pam_env)
    return out


def main() -> None:
    for n, req in enumerate(json.loads(sys.argv[1])):
        print(f"--- pamrun {n}", file=sys.stderr, flush=True)
        print(json.dumps(transaction(req)), flush=True)


if __name__ == "__main__":
    main()

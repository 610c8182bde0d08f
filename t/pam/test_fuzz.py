"""Fuzzing pam_flux.so: module options and broker answers, a bounded number
of seeded random cases, many PAM transactions per process.  With the
sanitizer build a crash, a sanitizer error or a leak fails the test (see
conftest.py).  The expected outcome of each case is known by construction.
"""

import json
import pwd
import random
import string

import pytest
from conftest import PAM

USER = "nobody"
UID = pwd.getpwnam(USER).pw_uid
OPTION_CASES = 150
ANSWER_CASES = 200

VALID = [
    "debug",
    "allow-guest-user",
    "action_no_jobs=deny",
    "action_no_jobs=ignore",
    "action_generic_failure=deny",
    "action_generic_failure=ignore",
    "action_generic_failure=allow",
    "log_level=quiet",
    "log_level=debug3",
    "log_level=notice",
    "lock-dir=/run/flux-pam",
    "config=/etc/flux/system/conf.d",
    "timeout=1",
    "timeout=0.5s",
    "timeout=250ms",
    "timeout=1.5e1",
    "timeout=2h",
]
INVALID = [
    "",
    "=",
    "debug=",
    "debug=1",
    "action_no_jobs=",
    "action_no_jobs=allow",
    "log_level=7",
    "lock-dir=run",
    "timeout=0",
    "timeout=0ms",
    "timeout=-5",
    "timeout=infinity",
    "timeout=nan",
    "timeout=1e400",
    "timeout=1.2.3",
    "timeout=s",
    "timeout=0x10",
    "scope-prefix=a@b",
    "service=a/b",
    "test-answers=/x",
    "pythonpath=/x",
]
# characters that survive a PAM configuration line as one argument
SAFE = "".join(c for c in string.printable if not c.isspace() and c not in "#[]\\")
UNIT_CHARS = string.ascii_letters + string.digits + ":_.-\\"


def random_option(rnd):
    """(option, valid?)"""
    kind = rnd.randrange(8)
    if kind == 0:
        return rnd.choice(VALID), True
    if kind == 1:
        return rnd.choice(INVALID), False
    if kind == 2:  # garbage: never an option name
        return "x" + "".join(rnd.choice(SAFE) for _ in range(rnd.randrange(40))), False
    if kind == 3:
        n = rnd.randrange(1, 260)
        value = "".join(rnd.choice(UNIT_CHARS.replace("\\", "")) for _ in range(n))
        return f"scope-prefix={value}", n <= 200
    if kind == 4:
        value = "".join(rnd.choice(string.ascii_letters + "_.+-") for _ in range(8))
        return f"service={value}", True
    if kind == 5:
        number = f"{rnd.uniform(0.001, 1000):.3f}"
        unit = rnd.choice(["", "ms", "s", "m", "h", "d"])
        return f"timeout={number}{unit}", True
    if kind == 6:  # a value option cut short or given garbage
        name = rnd.choice(["timeout", "log_level", "action_no_jobs", "lock-dir"])
        value = "q" + "".join(rnd.choice(SAFE) for _ in range(rnd.randrange(12)))
        return f"{name}={value}", False
    return f"lock-dir=/{''.join(rnd.choice(SAFE) for _ in range(20))}", True


def test_random_options_either_parse_or_fail_closed(rig):
    rnd = random.Random(20261203)
    transactions = []
    for i in range(OPTION_CASES):
        opts = [random_option(rnd) for _ in range(rnd.randrange(6))]
        args = [o for o, _ in opts]
        valid = all(v for _, v in opts)
        service = f"fuzz{i}"
        if valid and rnd.random() < 0.5:
            args.append("service=*")
        rig.stack(raw_options=args, service=service)
        services = [a for a in args if a.startswith("service=")]
        acting = bool(services) and services[-1] == "service=*"
        if not valid:
            want = "PAM_SERVICE_ERR"
        elif acting:
            want = "PAM_SUCCESS"  # root
        else:
            want = "IGNORED"
        transactions.append(("root", [("account", want)], service))
    wanted = [ops[0][1] for _, ops, _ in transactions]
    assert {"PAM_SERVICE_ERR", "PAM_SUCCESS", "IGNORED"} <= set(wanted)
    results = rig.runs(transactions)
    bad = [(t[2], r.error) for t, r in zip(transactions, results) if not r.ok]
    assert not bad, bad


def random_json(rnd, depth=0):
    kind = rnd.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rnd.choice([True, False])
    if kind == 2:
        return rnd.choice([0, -1, 1, 2**31, 2**53, 2**63 - 1, -(2**63), 1234])
    if kind == 3:
        return rnd.uniform(-1e300, 1e300)
    if kind == 4:
        return "".join(chr(rnd.randrange(1, 0x2FF)) for _ in range(rnd.randrange(30)))
    if kind == 5:
        return "x" * rnd.choice([0, 1, 255, 4096, 70000])
    if kind == 6:
        return [random_json(rnd, depth + 1) for _ in range(rnd.randrange(5))]
    keys = [
        "admitted",
        "jobs",
        "njobs",
        "message",
        "reason",
        "manage_user_slice",
        "uid",
        "x",
    ]
    return {
        rnd.choice(keys): random_json(rnd, depth + 1) for _ in range(rnd.randrange(6))
    }


def random_check_answer(rnd):
    """(peer answer spec, whether it may admit)."""
    kind = rnd.randrange(7)
    if kind == 6:  # well formed, with keys the module does not know
        obj = {
            "admitted": True,
            "jobs": [rnd.randrange(2**60) for _ in range(rnd.randrange(20))],
            "reason": random_json(rnd, 3),
            "extra": random_json(rnd, 1),
        }
        return {"response": obj}, True
    if kind == 0:
        obj = random_json(rnd)
        may = isinstance(obj, dict) and obj.get("admitted") is True
        return {"response": obj}, may
    if kind == 1:  # a good answer with one field broken
        obj = {"admitted": rnd.choice([True, False]), "jobs": [1, 2], "njobs": 2}
        field = rnd.choice(list(obj) + ["message", "manage_user_slice"])
        obj[field] = random_json(rnd, 2)
        return {"response": obj}, obj.get("admitted") is True
    if kind == 2:
        raw = bytes(rnd.randrange(256) for _ in range(rnd.randrange(64)))
        return {"payload": raw}, raw[:1] == b"{"
    if kind == 3:
        text = json.dumps({"admitted": True, "jobs": [7]}).encode() + b"\0"
        return {"payload": text[: rnd.randrange(len(text))]}, False
    if kind == 4:
        good = {"response": {"admitted": True, "jobs": [9]}}
        return {**good, "cut": rnd.randrange(80)}, False
    return {"errno": rnd.randrange(1, 140), "error": random_json(rnd, 3) and "e"}, False


def test_random_pam_check_answers_never_admit_unless_admitted(rig):
    rnd = random.Random(31415)
    cases = [random_check_answer(rnd) for _ in range(ANSWER_CASES)]
    answers = iter(c for c, _ in cases)
    peer = rig.peer({"pam.check": lambda payload: next(answers)})
    rig.stack(["timeout=1s"])
    results = rig.runs([(USER, [("account", "PAM_SUCCESS")], "sshd")] * len(cases))
    codes = [res.returned("PAM_SUCCESS") for res in results]
    for (spec, may_admit), res, code in zip(cases, results, codes):
        assert code in (PAM["PAM_SUCCESS"], PAM["PAM_PERM_DENIED"]), (spec, res.error)
        if code == PAM["PAM_SUCCESS"]:
            assert may_admit, spec
    assert len(peer.requests) == len(cases)
    assert codes.count(PAM["PAM_SUCCESS"]) >= 5
    assert codes.count(PAM["PAM_PERM_DENIED"]) >= 100


def random_joblist_answer(rnd):
    jobs = []
    for _ in range(rnd.randrange(4)):
        job = {
            "id": rnd.choice([5, -1, "5", 2**62]),
            "userid": rnd.choice([UID, UID, 0, -3, None]),
            "ranks": rnd.choice(["0", "0-3", "[0]", "1,0", "", "0-", "a", "3-1", 0]),
            "state": rnd.choice([16, 16, 32, 8, "run"]),
        }
        for key in list(job):
            if rnd.random() < 0.1:
                del job[key]
        jobs.append(job)
    if rnd.random() < 0.15:
        return {"response": random_json(rnd)}
    return {"response": {"jobs": jobs}}


def test_random_job_list_answers_never_crash(rig):
    rnd = random.Random(2718)
    cases = [random_joblist_answer(rnd) for _ in range(ANSWER_CASES)]
    answers = iter(cases)
    rig.peer({"job-list.list": lambda payload: next(answers)})
    rig.stack(["timeout=1s"])
    results = rig.runs([(USER, [("account", "PAM_SUCCESS")], "sshd")] * len(cases))
    codes = [res.returned("PAM_SUCCESS") for res in results]
    for spec, res, code in zip(cases, results, codes):
        assert code in (PAM["PAM_SUCCESS"], PAM["PAM_PERM_DENIED"]), (spec, res.error)
        if code == PAM["PAM_SUCCESS"]:
            jobs = spec["response"]["jobs"]
            assert any(j.get("userid") == UID for j in jobs), spec
    assert codes.count(PAM["PAM_SUCCESS"]) >= 5
    assert codes.count(PAM["PAM_PERM_DENIED"]) >= 50


@pytest.mark.parametrize("seed", [1, 2])
def test_random_guest_answers_never_crash(rig, seed):
    """allow-guest-user: attr.get, job-list and the sub-instance's config.get."""
    rnd = random.Random(seed)
    n = ANSWER_CASES // 4
    owner = {
        "id": 77,
        "userid": 999,
        "ranks": "0",
        "state": 16,
        "annotations": {"user": {"uri": None}},
    }
    sub = rig.peer(
        {"config.get": lambda payload: {"response": random_json(rnd)}}, name="sub"
    )
    owner["annotations"]["user"]["uri"] = f"ssh://h{sub.path}"
    main = rig.peer(
        {
            "pam.check": {"response": {"admitted": False}},
            "job-list.list": lambda payload: rnd.choice(
                [{"response": {"jobs": [owner]}}, random_joblist_answer(rnd)]
            ),
        },
        attrs={"rank": "0", "security.owner": "999"},
    )
    rig.env["FLUX_URI"] = main.uri
    rig.stack(["allow-guest-user", "timeout=1s"])
    results = rig.runs([(USER, [("account", "PAM_PERM_DENIED")], "sshd")] * n)
    for res in results:
        assert res.returned("PAM_PERM_DENIED") in (
            PAM["PAM_SUCCESS"],
            PAM["PAM_PERM_DENIED"],
        ), res.error

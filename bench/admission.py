#!/usr/bin/python3
"""Login admission latency: pamtester acct_mgmt with 1, 100, 1,000 jobs.

    bench/admission.py [--quick] [--jobs 1,100,1000] [--samples 40]

Run as root on the host (pamtester is the PAM application; PAM service files
/etc/pam.d/flux-pam-bench-* are written for the run and removed after).
The login user is the host user with uid 1000 (BENCH_ADMISSION_USER
overrides).  Two single-broker test instances, one after the other, each
holding K RUNNING jobs of that user on rank 0 for K = 1, 100, 1,000 (test
execution, ``system.exec.test.run_duration``: no processes; a fake R of 1,024
cores, ``[resource] noverify``):

    service    owned by root; the pam module loaded (manage-user-slice off:
               admission does not touch systemd); the jobs are mapped to the
               user by the test-only user mapping.  pam_flux asks pam.check.
    fallback   owned by the user itself (runuser), access.allow-root-owner
               so that root is the owner; the module is not loaded.
               pam_flux gets ENOSYS from pam.check and asks job-list.list
               for the user's RUN jobs on this rank.

For each K, the PAM stacks below are timed in turn (round robin, one
pamtester process per sample, FLUX_URI pointing at the instance):
    permit     account required pam_permit.so        (the baseline)
    pam_python account required pam_python.so bench/pam_noop.py
               (pam_python's own interpreter start; a reference only)
    pam_flux   account required pam_python.so pam/pam_flux.py
               service=flux-pam-bench-flux pythonpath=REPO:FLUX_BINDINGS
Also measured inside the instance: the broker round trip alone (pam.check,
or the job-list.list request pam_flux sends), from a Python client; and at
the largest K, where a login's time goes: python3 start-up, importing
flux_pam_service.admission and .brokerclient, FluxBroker (Flux's bindings
and the connection), check_account's broker requests (each sample a fresh
/usr/bin/python3, as pam_python gives every login).

Output: a table (p50/p95 in ms, pam_flux p95 minus permit p95),
bench/results/admission-TIME.json and .png.
"""

import argparse
import json
import os
import pwd
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

KIND = "admission"
MODES = ("service", "fallback")
STACKS = ("permit", "pam_python", "pam_flux")
PAM_PREFIX = "flux-pam-bench-"


# ------------------------------------------------------------------ inner side


def _wait_count(h, state: str, count: int, timeout: float = 300) -> None:
    """Wait until job-list shows *count* jobs in *state* (run, active)."""
    deadline = time.monotonic() + timeout
    payload = {"max_entries": 0, "attrs": [], "constraint": {"states": [state]}}
    while True:
        n = len(h.rpc("job-list.list", payload).get()["jobs"])
        if n == count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} jobs in state {state}, expected {count}")
        time.sleep(0.1)


def inner_serve(args: dict) -> dict:
    """Hold K jobs for each K in turn; time the broker request alone."""
    import flux
    import flux.job

    from flux_pam_service import admission

    h = flux.Flux()
    uri = h.attr_get("local-uri")
    uid = args["uid"]
    js = flux.job.JobspecV1.from_command(["true"])
    js.setattr("system.exec.test.run_duration", "3h")
    js.cwd = "/tmp"
    if args["mode"] == "service":
        js.setattr("system.flux-pam.test-userid", uid)
    spec = js.dumps()
    active: list = []
    steps = []
    for k in args["counts"]:
        futures = [flux.job.submit_async(h, spec) for _ in range(k - len(active))]
        active += [f.get_id() for f in futures]
        _wait_count(h, "run", len(active))
        samples, answers = [], None
        if args["mode"] == "service":
            topic, payload = "pam.check", {"uid": uid}
        else:
            topic, payload = "job-list.list", admission.joblist_request([uid], 0)
        for _ in range(args["rpc_samples"]):
            t0 = time.perf_counter()
            resp = h.rpc(topic, payload, 0).get()
            samples.append((time.perf_counter() - t0) * 1000)
        if args["mode"] == "service":
            answers = len(resp.get("jobs", [])) if resp.get("admitted") else 0
        else:
            answers = len(resp.get("jobs", []))
        step = {
            "k": k,
            "rpc_ms": bl.summary(samples),
            "rpc": topic,
            "jobs_seen": answers,
        }
        steps.append(step)
        status = os.path.join(args["status_dir"], f"ready-{k}.json")
        with open(status + ".tmp", "w") as f:
            json.dump({"uri": uri, **step}, f)
        os.rename(status + ".tmp", status)
        go = os.path.join(args["status_dir"], f"go-{k}")
        deadline = time.monotonic() + 1800
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.05)
    for f in [flux.job.cancel_async(h, j) for j in active]:
        f.get()
    _wait_count(h, "active", 0)
    return {"mode": args["mode"], "uri": uri, "steps": steps}


# ------------------------------------------------------------------ outer side


def flux_bindings() -> str:
    flux = bl.find_flux()
    out = subprocess.run(
        [flux, "env", "sh", "-c", 'printf %s "$PYTHONPATH"'],
        capture_output=True,
        text=True,
    ).stdout
    return ":".join(p for p in out.split(":") if p.startswith("/"))


def pam_files(bindings: str) -> dict:
    pam_flux = os.path.join(bl.TOP, "pam", "pam_flux.py")
    noop = os.path.join(bl.TOP, "bench", "pam_noop.py")
    pythonpath = ":".join([bl.TOP] + ([bindings] if bindings else []))
    return {
        "permit": "account required pam_permit.so\n",
        "pam_python": f"account required pam_python.so {noop}\n",
        "pam_flux": (
            f"account required pam_python.so {pam_flux}"
            f" service={PAM_PREFIX}pam_flux pythonpath={pythonpath}\n"
        ),
    }


def resource_toml(d: str) -> dict:
    flux = bl.find_flux()
    R = subprocess.run(
        [flux, "R", "encode", "-r", "0", "-c", "0-1023", "-H", os.uname().nodename],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = os.path.join(d, "R.json")
    with open(path, "w") as f:
        f.write(R)
    os.chmod(path, 0o644)
    return {"resource.toml": f'[resource]\npath = "{path}"\nnoverify = true\n'}


def pamtester(stack: str, user: str, uri: str) -> tuple:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "FLUX_URI": uri}
    t0 = time.perf_counter()
    r = subprocess.run(
        ["pamtester", PAM_PREFIX + stack, user, "acct_mgmt"],
        env=env,
        capture_output=True,
        text=True,
    )
    return (time.perf_counter() - t0) * 1000, r.returncode, r.stderr.strip()


STAGES_SCRIPT = r"""
import json, sys, time
t = [time.perf_counter()]
sys.path[:0] = sys.argv[1].split(":")
from flux_pam_service import admission, brokerclient
t.append(time.perf_counter())
b = brokerclient.FluxBroker(sys.argv[2], 10.0)
t.append(time.perf_counter())
v = admission.check_account(b, int(sys.argv[3]), admission.parse_options([]))
t.append(time.perf_counter())
b.close()
print(json.dumps({"steps": [y - x for x, y in zip(t, t[1:])], "kind": v.kind}))
"""
STAGE_NAMES = (
    "import admission, brokerclient",
    "FluxBroker(uri): bindings + connect",
    "check_account: broker requests",
)


def stages(uri: str, uid: int, pythonpath: str, samples: int) -> dict:
    """Where a login's time goes: pam_flux's account path (the same calls:
    admission.check_account through brokerclient.FluxBroker), timed in a
    fresh /usr/bin/python3 per sample, plus that interpreter's start-up."""
    parts = {name: [] for name in ("python start-up",) + STAGE_NAMES}
    for _ in range(samples):
        t0 = time.perf_counter()
        r = subprocess.run(
            ["/usr/bin/python3", "-c", STAGES_SCRIPT, pythonpath, uri, str(uid)],
            capture_output=True,
            text=True,
        )
        total = (time.perf_counter() - t0) * 1000
        if r.returncode != 0:
            continue
        out = json.loads(r.stdout)
        if out["kind"] != "owner":
            continue  # not admitted: not the path being timed
        steps = [x * 1000 for x in out["steps"]]
        parts["python start-up"].append(total - sum(steps))
        for name, ms in zip(STAGE_NAMES, steps):
            parts[name].append(ms)
    return {name: bl.summary(v) for name, v in parts.items()}


def measure_mode(mode: str, user: str, uid: int, counts: list, samples: int) -> dict:
    work = tempfile.mkdtemp(prefix="flux-pam-bench-adm.")
    os.chmod(work, 0o777)
    tomls = resource_toml(work)
    if mode == "service":
        tomls["pam.toml"] = "[pam]\nmanage-user-slice = false\n"
        owner = None
    else:
        tomls["access.toml"] = "[access]\nallow-root-owner = true\n"
        owner = user
    args = {
        "mode": mode,
        "uid": uid,
        "counts": counts,
        "status_dir": work,
        "rpc_samples": max(20, samples),
    }
    inner = bl.Inner(
        os.path.abspath(__file__),
        "serve",
        args,
        1,
        tomls,
        user=owner,
        tag=f"admission-{mode}",
    )
    steps = []
    try:
        for k in counts:
            ready = os.path.join(work, f"ready-{k}.json")
            deadline = time.monotonic() + 600
            while not os.path.exists(ready):
                if inner.proc.poll() is not None or time.monotonic() > deadline:
                    inner.wait(1)
                    raise RuntimeError(f"admission {mode}: instance gave up at K={k}")
                time.sleep(0.1)
            with open(ready) as f:
                step = json.load(f)
            times = {s: [] for s in STACKS}
            failures = {s: [] for s in STACKS}
            for s in STACKS:  # warm the page cache
                pamtester(s, user, step["uri"])
            for _ in range(samples):
                order = list(STACKS)
                random.shuffle(order)
                for s in order:
                    ms, rc, err = pamtester(s, user, step["uri"])
                    if rc == 0:
                        times[s].append(ms)
                    else:
                        failures[s].append(err)
            step["pamtester_ms"] = {s: bl.summary(v) for s, v in times.items()}
            if k == max(counts):
                pp = ":".join([bl.TOP] + [p for p in [flux_bindings()] if p])
                step["stages_ms"] = stages(step["uri"], uid, pp, max(10, samples // 2))
            step["failures"] = {s: len(v) for s, v in failures.items()}
            step["failure_sample"] = {s: v[0] for s, v in failures.items() if v}
            steps.append(step)
            print(
                f"admission: {mode} K={k}: "
                + ", ".join(
                    f"{s} p50 {step['pamtester_ms'][s].get('median', 0):.1f}"
                    for s in STACKS
                ),
                file=sys.stderr,
                flush=True,
            )
            open(os.path.join(work, f"go-{k}"), "w").close()
        data = inner.wait(900)
    finally:
        if inner.proc.poll() is None:
            for k in counts:
                open(os.path.join(work, f"go-{k}"), "w").close()
            inner.proc.wait(300)
        subprocess.run(["rm", "-rf", work])
    return {"mode": mode, "steps": steps, "flux_start_rc": data.get("flux_start_rc")}


def measure(counts: list, samples: int, modes: list) -> dict:
    name = os.environ.get("BENCH_ADMISSION_USER")
    pw = pwd.getpwnam(name) if name else pwd.getpwuid(1000)
    files = pam_files(flux_bindings())
    written = []
    try:
        for stack, text in files.items():
            path = f"/etc/pam.d/{PAM_PREFIX}{stack}"
            with open(path, "w") as f:
                f.write(text)
            written.append(path)
        out = {"user": pw.pw_name, "uid": pw.pw_uid, "pam": files, "modes": {}}
        for mode in modes:
            out["modes"][mode] = measure_mode(
                mode, pw.pw_name, pw.pw_uid, counts, samples
            )
    finally:
        for path in written:
            os.unlink(path)
    return out


# ------------------------------------------------------------------ report


def rows(data: dict) -> list:
    out = []
    for mode, res in data["modes"].items():
        for step in res["steps"]:
            pt = step["pamtester_ms"]
            permit, flux = pt.get("permit", {}), pt.get("pam_flux", {})
            pyth = pt.get("pam_python", {})
            above = None
            if permit.get("n") and flux.get("n"):
                above = flux["p95"] - permit["p95"]
            above_py = None
            if pyth.get("n") and flux.get("n"):
                above_py = flux["p95"] - pyth["p95"]
            out.append(
                {
                    "mode": mode,
                    "k": step["k"],
                    "permit_p50": permit.get("median"),
                    "permit_p95": permit.get("p95"),
                    "pam_python_p50": pyth.get("median"),
                    "pam_python_p95": pyth.get("p95"),
                    "pam_flux_p50": flux.get("median"),
                    "pam_flux_p95": flux.get("p95"),
                    "p95_above_permit": above,
                    "p95_above_pam_python": above_py,
                    "rpc": step["rpc"],
                    "rpc_p50": step["rpc_ms"].get("median"),
                    "rpc_p95": step["rpc_ms"].get("p95"),
                    "jobs_seen": step["jobs_seen"],
                    "failures": sum(step.get("failures", {}).values()),
                }
            )
    return out


HEADERS = [
    "mode",
    "jobs",
    "permit p50",
    "p95",
    "pam_python p50",
    "p95",
    "pam_flux p50",
    "p95",
    "p95 - permit",
    "p95 - pam_python",
    "broker rpc",
    "rpc p50",
    "p95",
    "jobs seen",
    "failed",
]


def table_rows(data: dict) -> list:
    return [
        [
            r["mode"],
            r["k"],
            r["permit_p50"],
            r["permit_p95"],
            r["pam_python_p50"],
            r["pam_python_p95"],
            r["pam_flux_p50"],
            r["pam_flux_p95"],
            r["p95_above_permit"],
            r["p95_above_pam_python"],
            r["rpc"],
            r["rpc_p50"],
            r["rpc_p95"],
            r["jobs_seen"],
            r["failures"],
        ]
        for r in rows(data)
    ]


def report(data: dict) -> str:
    out = bl.format_table(
        f"login admission: pamtester acct_mgmt as {data.get('user')} (ms)",
        HEADERS,
        table_rows(data),
    )
    for mode, res in data["modes"].items():
        for step in res["steps"]:
            if not step.get("stages_ms"):
                continue
            out += "\n\n" + bl.format_table(
                f"where pam_flux's time goes ({mode}, {step['k']} jobs; fresh"
                " python3 per sample, ms)",
                ["step", "n", "median", "p95"],
                [
                    [name, st.get("n"), st.get("median"), st.get("p95")]
                    for name, st in step["stages_ms"].items()
                ],
            )
    return out


def plot(data: dict, when: str = None) -> str:
    plt = bl.pyplot()
    rs = rows(data)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in data["modes"]:
        mine = [r for r in rs if r["mode"] == mode]
        ks = [r["k"] for r in mine]
        ax1.plot(
            ks, [r["pam_flux_p95"] for r in mine], "o-", label=f"pam_flux {mode} p95"
        )
        ax1.plot(
            ks, [r["pam_flux_p50"] for r in mine], "o--", label=f"pam_flux {mode} p50"
        )
        ax1.plot(
            ks,
            [r["permit_p95"] for r in mine],
            "x:",
            label=f"pam_permit p95 ({mode} run)",
        )
        ax1.plot(
            ks,
            [r["pam_python_p95"] for r in mine],
            "s:",
            label=f"pam_python no-op p95 ({mode} run)",
        )
        ax2.plot(
            ks,
            [r["rpc_p50"] for r in mine],
            "o-",
            label=f"{mine[0]['rpc'] if mine else mode} p50",
        )
        ax2.plot(
            ks,
            [r["rpc_p95"] for r in mine],
            "o--",
            label=f"{mine[0]['rpc'] if mine else mode} p95",
        )
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("running jobs of the user on the node")
        ax.set_ylabel("ms")
        ax.legend(fontsize=7)
    ax1.set_title("pamtester acct_mgmt (one process per login)")
    ax2.set_title("broker request alone (Python client)")
    return bl.save_plot(fig, KIND, when)


# ------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="jobs 1,100; 10 samples")
    ap.add_argument("--jobs", default="1,100,1000")
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args(argv)
    counts = [1, 100] if args.quick else [int(x) for x in args.jobs.split(",")]
    samples = 10 if args.quick else args.samples
    if bl.find_flux() is None:
        print("admission: skipped: flux-core not found")
        return 0
    if os.geteuid() != 0:
        print("admission: skipped: needs root (pamtester, /etc/pam.d)")
        return 0
    for need in ("pamtester", "runuser"):
        if subprocess.run(["which", need], capture_output=True).returncode:
            print(f"admission: skipped: {need} not installed")
            return 0
    if not os.path.exists("/lib/security/pam_python.so") and not os.path.exists(
        "/usr/lib/x86_64-linux-gnu/security/pam_python.so"
    ):
        print("admission: skipped: pam_python.so not installed (libpam-python)")
        return 0
    t0 = time.monotonic()
    data = measure(counts, samples, [m for m in args.modes.split(",") if m])
    data["wall_s"] = time.monotonic() - t0
    return bl.publish(KIND, data, report, plot)


if __name__ == "__main__":
    rc = bl.inner_main({"serve": inner_serve})
    sys.exit(main() if rc is None else rc)

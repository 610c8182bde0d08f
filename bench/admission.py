#!/usr/bin/python3
"""Login admission latency: pamtester acct_mgmt with 1, 100, 1,000 jobs.

    bench/admission.py [--quick] [--jobs 1,100,1000] [--samples 100]
                       [--python-checkout DIR]

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
               pam_flux gets ENOSYS from pam.check and asks attr.get rank
               and job-list.list for the user's RUN jobs on this rank.

For each K, the PAM stacks below are timed in turn (round robin, one
pamtester process per sample, FLUX_URI pointing at the instance;
bench/pam_sampler.py):
    permit     account required pam_permit.so        (the baseline)
    pam_flux   account required REPO/build/pam_flux.so
               service=flux-pam-bench-pam_flux       (make -C pam)
With --python-checkout DIR, a checkout of a commit that still has the
Python module (pam/pam_flux.py, bench/pam_noop.py), and pam_python.so
installed, the host also times, in the same rounds:
    pam_python account required pam_python.so DIR/bench/pam_noop.py
               (pam_python's own interpreter start)
    pam_flux.py
               account required pam_python.so DIR/pam/pam_flux.py
               service=flux-pam-bench-pam_flux.py pythonpath=DIR
The logins are timed in two places:
    node       inside the test bed (t/testbed.py): a clean Debian 12
               userland like a compute node's; the brokers' socket directory
               is bind-mounted into it, the repository (the module) and
               flux-core (its libraries) are mounted read-only
    host       on this machine
"node" is skipped, with the reason printed, where the test bed cannot run.
Also measured inside the instance: the broker round trip alone (pam.check,
or the job-list.list request pam_flux sends), from a Python client; and on
the host at the largest K, the user-space instructions per pamtester run of
each stack (perf stat), a figure that does not move with the machine's load.

Output: a table (p50/p95 in ms; pam_flux's p50 and p95 minus pam_permit's),
bench/results/admission-latest.json and .png.
"""

import argparse
import json
import os
import pwd
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

KIND = "admission"
MODES = ("service", "fallback")
STACKS = ("permit", "pam_flux")
PY_STACKS = ("pam_python", "pam_flux.py")  # with --python-checkout, host only
MODULE = os.path.join(bl.TOP, "build", "pam_flux.so")
CHECK_MAX_JOBS = 16  # what pam_flux asks pam.check for
PAM_PREFIX = "flux-pam-bench-"
# per run: benchmarks of other checkouts may run at the same time
SOCKDIR = f"/run/flux-pam-bench-admission-{os.getpid()}"  # brokers; bound in the bed
BED_NAME = f"flux-pam-bench-adm-{os.getpid()}"


# ------------------------------------------------------------------ inner side


def joblist_request(uid: int, rank: int) -> dict:
    """The job-list.list request pam_flux sends in fallback mode."""
    return {
        "max_entries": 1,
        "attrs": ["userid", "ranks", "state", "annotations"],
        "constraint": {
            "and": [{"userid": [uid]}, {"ranks": [str(rank)]}, {"states": ["run"]}]
        },
    }


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
    import guestjobs

    h = flux.Flux()
    uri = h.attr_get("local-uri")
    uid = args["uid"]
    js = flux.job.JobspecV1.from_command(["true"])
    js.setattr("system.exec.test.run_duration", "3h")
    js.cwd = "/tmp"
    spec = js.dumps()
    if args["mode"] == "service":
        # the user's own jobs in root's instance (t/guestjobs.py)
        as_user = guestjobs.handle_as(uid)

        def submit(n: int) -> list:
            return guestjobs.submit(uid, spec, n, handle=as_user)

    else:

        def submit(n: int) -> list:
            futures = [flux.job.submit_async(h, spec) for _ in range(n)]
            return [f.get_id() for f in futures]

    active: list = []
    steps = []
    for k in args["counts"]:
        active += submit(k - len(active))
        _wait_count(h, "run", len(active))
        samples, answers = [], None
        if args["mode"] == "service":
            topic = "pam.check"
            payload = {"uid": uid, "max_jobs": CHECK_MAX_JOBS}
        else:
            topic, payload = "job-list.list", joblist_request(uid, 0)
        for _ in range(args["rpc_samples"]):
            t0 = time.perf_counter()
            resp = h.rpc(topic, payload, 0).get()
            samples.append((time.perf_counter() - t0) * 1000)
        if args["mode"] == "service":
            answers = resp.get("njobs", 0) if resp.get("admitted") else 0
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


def pam_files(python_checkout: str = None) -> dict:
    """{stack: PAM service file text}; the Python stacks with a checkout."""
    files = {
        "permit": "account required pam_permit.so\n",
        "pam_flux": f"account required {MODULE} service={PAM_PREFIX}pam_flux\n",
    }
    if python_checkout:
        noop = os.path.join(python_checkout, "bench", "pam_noop.py")
        module = os.path.join(python_checkout, "pam", "pam_flux.py")
        files["pam_python"] = f"account required pam_python.so {noop}\n"
        files["pam_flux.py"] = (
            f"account required pam_python.so {module}"
            f" service={PAM_PREFIX}pam_flux.py pythonpath={python_checkout}\n"
        )
    return files


class Place:
    """Where logins are timed: "host", or "node" (the test bed, *bed*)."""

    def __init__(self, name: str, bed: object = None, stacks=STACKS) -> None:
        self.name = name
        self.bed = bed
        self.stacks = tuple(stacks)
        self.written: list = []

    def run(self, argv: list, env: dict = None, timeout: float = 900) -> tuple:
        """Run *argv* there; return (exit code, stdout, stderr)."""
        if self.bed is not None:
            r = self.bed.run(argv, env=env, timeout=timeout)
        else:
            r = subprocess.run(
                argv,
                env={**os.environ, **(env or {})},
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        return r.returncode, r.stdout, r.stderr

    def write(self, path: str, text: str) -> None:
        if self.bed is not None:
            r = self.bed.run(["tee", path], input=text)
            if r.returncode:
                raise RuntimeError(f"{self.name}: cannot write {path}: {r.stderr}")
        else:
            with open(path, "w") as f:
                f.write(text)
        self.written.append(path)

    def user(self, uid: int) -> str:
        """The login name of *uid* there."""
        rc, out, err = self.run(["getent", "passwd", str(uid)])
        if rc:
            raise RuntimeError(f"{self.name}: no user with uid {uid}: {err}")
        return out.split(":")[0]

    def close(self) -> None:
        for path in self.written:
            if self.bed is not None:
                self.bed.run(["rm", "-f", path])
            else:
                os.unlink(path)
        self.written = []


def sample(place: Place, user: str, uri: str, samples: int) -> dict:
    """pam_sampler.py's answer for every stack, *samples* rounds."""
    script = os.path.join(bl.TOP, "bench", "pam_sampler.py")
    argv = ["/usr/bin/python3", script, user, str(samples)]
    rc, out, err = place.run(
        argv + [PAM_PREFIX + s for s in place.stacks], env={"FLUX_URI": uri}
    )
    if rc:
        raise RuntimeError(f"pam_sampler in {place.name}: exit {rc}: {err}")
    data = json.loads(out)
    return {
        "ms": {s: data["ms"][PAM_PREFIX + s] for s in place.stacks},
        "failures": {s: data["failures"][PAM_PREFIX + s] for s in place.stacks},
    }


def instructions(user: str, uri: str, stacks: tuple, runs: int = 20) -> dict:
    """User-space instructions per pamtester run for each stack (host only).

    ``perf stat -e instructions:u`` counts the same for the same work
    whatever else the machine does, unlike time; {} where perf cannot count.
    """
    out = {}
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "FLUX_URI": uri}
    for stack in stacks:
        try:
            r = subprocess.run(
                ["perf", "stat", "-x,", "-r", str(runs), "-e", "instructions:u"]
                + ["pamtester", PAM_PREFIX + stack, user, "acct_mgmt"],
                env=env,
                capture_output=True,
                text=True,
            )
        except OSError:
            return {}
        for line in r.stderr.splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[2].startswith("instructions"):
                try:
                    out[stack] = int(fields[0])
                except ValueError:
                    return {}  # <not supported>
    return out if len(out) == len(stacks) else {}


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


def measure_mode(mode: str, uid: int, places: list, counts: list, samples: int) -> dict:
    work = tempfile.mkdtemp(prefix="flux-pam-bench-adm.")
    os.chmod(work, 0o777)
    tomls = resource_toml(work)
    if mode == "service":
        tomls["pam.toml"] = "[pam]\nmanage-user-slice = false\n"
        tomls["testexec.toml"] = bl.GUESTS_TOML
        owner = None
    else:
        tomls["access.toml"] = "[access]\nallow-root-owner = true\n"
        owner = pwd.getpwuid(uid).pw_name
    rundir = os.path.join(SOCKDIR, mode)
    os.makedirs(rundir, exist_ok=True)
    if owner:
        os.chown(rundir, uid, -1)
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
        rundir=rundir,
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
                base = json.load(f)
            for place, user in places:
                step = dict(base, place=place.name, user=user)
                got = sample(place, user, base["uri"], samples)
                step["pamtester_ms"] = {s: bl.summary(v) for s, v in got["ms"].items()}
                step["failures"] = {s: len(v) for s, v in got["failures"].items()}
                step["failure_sample"] = {
                    s: v[0] for s, v in got["failures"].items() if v
                }
                if k == max(counts) and mode == "service" and place.bed is None:
                    step["instructions"] = instructions(user, base["uri"], place.stacks)
                steps.append(step)
                print(
                    f"admission: {mode} K={k} {place.name}: "
                    + ", ".join(
                        f"{s} p50 {step['pamtester_ms'][s].get('median', 0):.1f}"
                        for s in place.stacks
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


def open_places(uid: int, want_node: bool, python_checkout: str) -> tuple:
    """[(Place, login name of *uid* there)], and why "node" is missing."""
    host_stacks = STACKS + (PY_STACKS if python_checkout else ())
    places = [Place("host", stacks=host_stacks)]
    why = None
    if want_node:
        sys.path.insert(0, os.path.join(bl.TOP, "t"))
        import testbed

        ok, why = testbed.can_run()
        if ok:
            why = None
            bed = testbed.up(BED_NAME, extra_args=[f"--bind={SOCKDIR}"])
            places.insert(0, Place("node", bed))
    out = []
    files = pam_files(python_checkout)
    for place in places:
        out.append((place, place.user(uid)))
        for stack in place.stacks:
            place.write(f"/etc/pam.d/{PAM_PREFIX}{stack}", files[stack])
    return out, why


def measure(
    counts: list, samples: int, modes: list, want_node: bool, python_checkout: str
) -> dict:
    name = os.environ.get("BENCH_ADMISSION_USER")
    uid = pwd.getpwnam(name).pw_uid if name else 1000
    os.makedirs(SOCKDIR, exist_ok=True)
    os.chmod(SOCKDIR, 0o1777)
    places, why = [], None
    try:
        places, why = open_places(uid, want_node, python_checkout)
        if why:
            print(f"admission: node place skipped: {why}", file=sys.stderr)
        out = {
            "uid": uid,
            "places": [p.name for p, _ in places],
            "node_skipped": why,
            "pam": pam_files(python_checkout),
            "python_checkout": python_checkout and _describe(python_checkout),
            "modes": {},
        }
        for mode in modes:
            out["modes"][mode] = measure_mode(mode, uid, places, counts, samples)
    finally:
        for place, _ in places:
            place.close()
            if place.bed is not None:
                import testbed

                testbed.down(BED_NAME)
        subprocess.run(["rm", "-rf", SOCKDIR])
    return out


def _describe(checkout: str) -> str:
    """The commit of a checkout, for the record."""
    r = subprocess.run(
        ["git", "-C", checkout, "log", "-1", "--format=%h %cs %s"],
        capture_output=True,
        text=True,
    )
    return r.stdout.strip() or checkout


# ------------------------------------------------------------------ report


def _above(a: dict, b: dict, stat: str):
    if a.get("n") and b.get("n"):
        return a[stat] - b[stat]
    return None


def rows(data: dict) -> list:
    out = []
    for mode, res in data["modes"].items():
        for step in res["steps"]:
            pt = step["pamtester_ms"]
            permit = pt.get("permit", {})
            row = {
                "mode": mode,
                "place": step.get("place", "host"),
                "k": step["k"],
                "permit_p50": permit.get("median"),
                "permit_p95": permit.get("p95"),
            }
            for stack, key in (("pam_flux", "flux"), ("pam_flux.py", "py")):
                st = pt.get(stack, {})
                row[f"{key}_p50"] = st.get("median")
                row[f"{key}_p95"] = st.get("p95")
                row[f"{key}_p50_above"] = _above(st, permit, "median")
                row[f"{key}_p95_above"] = _above(st, permit, "p95")
            row.update(
                rpc=step["rpc"],
                rpc_p50=step["rpc_ms"].get("median"),
                rpc_p95=step["rpc_ms"].get("p95"),
                jobs_seen=step["jobs_seen"],
                failures=sum(step.get("failures", {}).values()),
            )
            out.append(row)
    return out


HEADERS = [
    "mode",
    "where",
    "jobs",
    "permit p50",
    "p95",
    "pam_flux.so p50",
    "p95",
    "+p50",
    "+p95",
    "pam_flux.py p50",
    "p95",
    "+p50",
    "+p95",
    "broker rpc",
    "rpc p50",
    "p95",
    "jobs seen",
    "failed",
]
COLUMNS = [
    "mode",
    "place",
    "k",
    "permit_p50",
    "permit_p95",
    "flux_p50",
    "flux_p95",
    "flux_p50_above",
    "flux_p95_above",
    "py_p50",
    "py_p95",
    "py_p50_above",
    "py_p95_above",
    "rpc",
    "rpc_p50",
    "rpc_p95",
    "jobs_seen",
    "failures",
]


def table_rows(data: dict) -> list:
    return [[r[c] for c in COLUMNS] for r in rows(data)]


def report(data: dict) -> str:
    out = bl.format_table(
        f"login admission: pamtester acct_mgmt, uid {data.get('uid')} (ms;"
        " +p50/+p95: above pam_permit)",
        HEADERS,
        table_rows(data),
    )
    if data.get("python_checkout"):
        out += f"\n(pam_flux.py: the Python module of {data['python_checkout']})"
    if data.get("node_skipped"):
        out += f"\n(node: skipped: {data['node_skipped']})"
    for mode, res in data["modes"].items():
        for step in res["steps"]:
            ins = step.get("instructions")
            if not ins:
                continue
            base = ins["permit"]
            out += "\n\n" + bl.format_table(
                f"user-space instructions per pamtester run ({mode},"
                f" {step.get('place', 'host')}, {step['k']} jobs; perf stat)",
                ["stack", "instructions", "above pam_permit"],
                [[s, n, n - base] for s, n in ins.items()],
            )
    return out


def _nan(x):
    return float("nan") if x is None else x


def plot(data: dict, when: str = None) -> str:
    plt = bl.pyplot()
    rs = rows(data)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode, place in sorted({(r["mode"], r["place"]) for r in rs}):
        mine = [r for r in rs if r["mode"] == mode and r["place"] == place]
        ks = [r["k"] for r in mine]
        ax1.plot(
            ks,
            [_nan(r["flux_p50_above"]) for r in mine],
            "o-",
            label=f"{mode}, {place}: p50 above pam_permit",
        )
        ax1.plot(
            ks,
            [_nan(r["flux_p95_above"]) for r in mine],
            "x:",
            label=f"{mode}, {place}: p95 above pam_permit",
        )
        if place != rs[0]["place"]:
            continue
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
    ax1.set_title("pam_flux.so's cost per login (pamtester acct_mgmt)")
    ax2.set_title("broker request alone (Python client)")
    return bl.save_plot(fig, KIND, when)


# ------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="jobs 1,100; 10 samples")
    ap.add_argument("--jobs", default="1,100,1000")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument(
        "--no-node", action="store_true", help="time logins on the host only"
    )
    ap.add_argument(
        "--python-checkout",
        metavar="DIR",
        help="also time the Python module of this checkout (host, pam_python)",
    )
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
    make = ["make", "--no-print-directory", "-s", "-C", os.path.join(bl.TOP, "pam")]
    status = subprocess.run([*make, "status"], capture_output=True, text=True)
    if not status.stdout.startswith("buildable"):
        print(f"admission: skipped: pam_flux.so {status.stdout.strip()}")
        return 0
    subprocess.run(make, check=True)
    checkout = args.python_checkout and os.path.abspath(args.python_checkout)
    if checkout and not os.path.exists(os.path.join(checkout, "pam", "pam_flux.py")):
        print(f"admission: {checkout} has no pam/pam_flux.py", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    modes = [m for m in args.modes.split(",") if m]
    data = measure(counts, samples, modes, not args.no_node, checkout)
    data["wall_s"] = time.monotonic() - t0
    return bl.publish(KIND, data, report, plot)


if __name__ == "__main__":
    rc = bl.inner_main({"serve": inner_serve})
    sys.exit(main() if rc is None else rc)

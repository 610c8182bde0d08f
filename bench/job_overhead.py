#!/usr/bin/python3
"""Per-job overhead of slice management: service mode against the script path.

    bench/job_overhead.py [--quick] [--n 100,1000] [--users 1,8]
                          [--modes off,service,fallback] [--fallback-max-n 100]

Three single-broker test instances run side by side in one invocation,
against the same systemd test bed (t/testbed.py; the exported one, else one
of our own).  Each (N, users) batch runs in every mode in turn, one instance
busy at a time, so that the modes are compared within seconds of each other
on a machine whose load drifts:

    off       no [pam] table: the module is not loaded, no perilog
    service   the pam module (modprobe), manage-user-slice and
              sdexec-constrain-resources on; no prolog, no housekeeping
    fallback  perilog.so with the repo's flux-pam-prolog (per rank) and
              flux-pam-housekeeping; the module is not loaded

In each, for every N and user count U: N jobs (1 core) are submitted at
once, as ``flux submit --cc=1-N`` does (bulk asynchronous submission from
the measuring process), job i belonging to uid 1000 + i mod U: the users'
own jobs, submitted as them (t/guestjobs.py).  They run under job-exec's
test execution for RUN_DURATION and start no process, so a job's cost is
that of the instance and of slice management, without a job shell.

Measured, per job, from the job-manager journal (event timestamps):
    alloc -> start           what the user waits for
    alloc -> slice ready     when the user's slice carries the job's
                             constraints (and, for a user's first job on the
                             node, user@UID has been started: both modes do
                             that in the same step, so this is an upper
                             bound of "constrained"): service mode, the
                             moment the module answers ``pam.prolog {id}``,
                             which it defers until the slice operation
                             covering the job has completed (the benchmark
                             sends it when it sees alloc; an answer
                             "skipped" means the job had already ended and
                             is not counted); fallback, the prolog-finish
                             event (the drop-in has applied the union and
                             started user@ by then); off: not applicable
    jobs/s                   N / (last clean - first submit)
"ended first" counts the service-mode jobs that ended before the module got
to their slice (pam.prolog answered "skipped": the coalesced operation was
already the user's teardown), so they have no alloc -> slice ready figure;
and per run: process forks in the instance's process tree (proc connector:
all of them, and those of the pam module's own process), the module's
slice operations (pam.stats-get) and its CPU time.

Fallback mode runs a Python prolog and housekeeping per job and manages
about one job per second on a 2-core machine, so by default it runs only the
N <= 100 cases (--fallback-max-n 1000 adds about 35 minutes).

Output: a table, bench/results/job_overhead-latest.json and .png.
"""

import argparse
import errno
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

KIND = "job_overhead"
MODES = ("off", "service", "fallback")
JOURNAL_EVENTS = (
    "submit",
    "alloc",
    "prolog-start",
    "prolog-finish",
    "start",
    "finish",
    "release",
    "free",
    "clean",
)
BASE_UID = 1000
#: how long a job runs under the test execution (it starts no process)
RUN_DURATION = "0.01s"


# ------------------------------------------------------------------ configs


def jobmanager_toml() -> str:
    prolog = os.path.join(bl.TOP, "libexec", "prolog.d", "flux-pam-prolog")
    hk = os.path.join(bl.TOP, "libexec", "housekeeping.d", "flux-pam-housekeeping")
    return (
        '[job-manager]\nplugins = [ { load = "perilog.so" } ]\n\n'
        f'[job-manager.prolog]\nper-rank = true\ncommand = [ "{prolog}" ]\n\n'
        f'[job-manager.housekeeping]\ncommand = [ "{hk}" ]\n'
    )


PAM_TOML = (
    "[pam]\nmanage-user-slice = true\n\n[exec]\nsdexec-constrain-resources = true\n"
)


def boot_config(mode: str) -> dict:
    return {**_boot_config(mode), "testexec.toml": bl.GUESTS_TOML}


def _boot_config(mode: str) -> dict:
    if mode == "service":
        return {"pam.toml": PAM_TOML}
    if mode == "fallback":
        return {"job-manager.toml": jobmanager_toml()}
    return {"empty.toml": ""}


# ------------------------------------------------------------------ inner side


class Sync:
    """Files in a shared directory: the outer side lets one instance run a
    batch at a time (go-I), the instance says when it is ready and done."""

    def __init__(self, directory: str, mode: str) -> None:
        self.dir, self.mode = directory, mode

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, f"{self.mode}.{name}")

    def post(self, name: str) -> None:
        open(self._path(name), "w").close()

    def posted(self, name: str) -> bool:
        return os.path.exists(self._path(name))

    def wait(self, name: str, timeout: float = 3600, proc=None) -> None:
        deadline = time.monotonic() + timeout
        while not self.posted(name):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{self.mode}: instance exited before {name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.mode}: no {name} in {timeout}s")
            time.sleep(0.05)


def _flux_cmd(*args: str) -> None:
    subprocess.run(
        [os.environ.get("FLUX_BENCH_FLUX", "flux")] + list(args),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _wait_quiet(h, mode: str, timeout: float = 120.0) -> None:
    """Wait until housekeeping and the module's queue are idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        st = h.rpc("job-manager.stats-get", {}).get()
        if st.get("housekeeping", {}).get("running"):
            busy = True
        if mode == "service" and h.rpc("pam.stats-get", {}).get().get("pending"):
            busy = True
        if not busy:
            return
        time.sleep(0.1)
    raise TimeoutError("instance did not become idle")


def _batch(h, n: int, users: int, probe: bool) -> dict:
    """Submit n jobs, follow them to clean; return raw per-job records."""
    import flux.job
    import guestjobs
    from flux.constants import FLUX_RPC_NORESPONSE, FLUX_RPC_STREAMING

    js = flux.job.JobspecV1.from_command(["true"])
    js.setattr("system.exec.test.run_duration", RUN_DURATION)
    js.cwd = "/tmp"
    spec = js.dumps()
    # each user's own jobs, submitted as them (t/guestjobs.py)
    signed = [guestjobs.sign_as(BASE_UID + u, spec) for u in range(users)]
    handles = [guestjobs.handle_as(BASE_UID + u) for u in range(users)]
    events: dict = {}
    submitted: dict = {}
    probes: dict = {}
    state = {"clean": 0, "probes_out": 0, "done": False, "error": None}

    def maybe_done() -> None:
        if state["done"]:
            return
        mine = [j for j in submitted if "clean" in events.get(j, {})]
        if len(submitted) == n and len(mine) == n and state["probes_out"] == 0:
            state["done"] = True
            h.reactor_stop()

    def probe_cb(f, jobid: int) -> None:
        t = time.time()
        try:
            r = f.get()
            probes[jobid] = {"t": t, "result": r.get("result")}
        except OSError as exc:
            probes[jobid] = {"t": t, "error": exc.strerror or str(exc)}
        state["probes_out"] -= 1
        maybe_done()

    def journal_cb(f) -> None:
        try:
            resp = f.get()
        except OSError as exc:
            if not state["done"] and exc.errno != errno.ENODATA:
                state["error"] = f"journal: {exc}"
                h.reactor_stop()
            return
        f.reset()
        jobid = resp.get("id")
        for ev in resp.get("events", []):
            rec = events.setdefault(jobid, {})
            rec.setdefault(ev["name"], ev["timestamp"])
            if ev["name"] == "alloc" and probe:
                state["probes_out"] += 1
                h.rpc("pam.prolog", {"id": jobid}, 0).then(probe_cb, jobid)
            if ev["name"] == "clean":
                maybe_done()

    journal = h.rpc(
        "job-manager.events-journal",
        {"full": False, "allow": {e: 1 for e in JOURNAL_EVENTS}},
        0,
        FLUX_RPC_STREAMING,
    )
    journal.then(journal_cb)

    t0 = time.time()
    futures = [
        flux.job.submit_async(handles[i % users], signed[i % users], pre_signed=True)
        for i in range(n)
    ]
    # the users' handles have reactors of their own: their answers are
    # awaited here, while the journal's wait in this handle's queue
    for i, f in enumerate(futures):
        submitted[f.get_id()] = BASE_UID + i % users
    h.reactor_run()
    t1 = time.time()
    h.rpc(
        "job-manager.events-journal-cancel",
        {"matchtag": journal.pimpl.get_matchtag()},
        0,
        FLUX_RPC_NORESPONSE,
    )
    if state["error"]:
        raise RuntimeError(state["error"])
    return {
        "t_submit_call": t0,
        "t_done": t1,
        "jobs": {
            str(j): {"uid": uid, "events": events.get(j, {}), "probe": probes.get(j)}
            for j, uid in submitted.items()
        },
    }


def _per_job(raw: dict, mode: str) -> dict:
    """Latencies (ms) and throughput from the raw records."""
    start, constrained, prolog, skipped = [], [], [], 0
    submits, cleans = [], []
    for job in raw["jobs"].values():
        ev = job["events"]
        submits.append(ev["submit"])
        cleans.append(ev["clean"])
        if "alloc" not in ev:
            continue
        if "start" in ev:
            start.append((ev["start"] - ev["alloc"]) * 1000)
        if "prolog-finish" in ev and "prolog-start" in ev:
            prolog.append((ev["prolog-finish"] - ev["prolog-start"]) * 1000)
        if mode == "fallback" and "prolog-finish" in ev:
            constrained.append((ev["prolog-finish"] - ev["alloc"]) * 1000)
        probe = job.get("probe")
        if mode == "service" and probe:
            if probe.get("result") == "applied":
                constrained.append((probe["t"] - ev["alloc"]) * 1000)
            else:
                skipped += 1
    n = len(raw["jobs"])
    span = max(cleans) - min(submits)
    return {
        "n": n,
        "span_s": span,
        "jobs_per_s": n / span if span > 0 else None,
        "alloc_to_start_ms": bl.summary(start),
        "alloc_to_constrained_ms": bl.summary(constrained),
        "prolog_ms": bl.summary(prolog),
        "unmeasured": skipped,
    }


def _module_delta(a: dict, b: dict) -> dict:
    ops = {
        k: b["operations"].get(k, 0) - a["operations"].get(k, 0)
        for k in b["operations"]
    }
    return {
        "operations": ops,
        "op_time_s": b["op-time-total"] - a["op-time-total"],
        "jobs_started": b["jobs-started"] - a["jobs-started"],
        "mapper_lookups": b["mapper-lookups"] - a["mapper-lookups"],
        "failures": b["failures"] - a["failures"],
        "messages_sent": b["messages-sent"] - a["messages-sent"],
    }


def inner_jobs(args: dict) -> dict:
    import flux

    mode = args["mode"]
    h = flux.Flux()
    broker = int(h.attr_get("broker.pid"))
    if mode == "fallback":
        confdir = args["fallback_conf"]
        _flux_cmd("config", "load", confdir)
        _flux_cmd("module", "load", "sdexec-mapper")
    modpid = bl.module_pid(broker) if mode == "service" else None
    if mode == "service" and modpid is None:
        raise RuntimeError("the pam module's process was not found")
    probe = mode == "service"
    _batch(h, args.get("warmup", 4), 1, probe)  # warm up: imports, user@
    _wait_quiet(h, mode)
    sync = Sync(args["sync_dir"], mode)
    sync.post("ready")
    runs = []
    for i, (n, users) in enumerate(args["runs"]):
        sync.wait(f"go-{i}")
        stats0 = h.rpc("pam.stats-get", {}).get() if mode == "service" else None
        cpu0 = bl.cpu_seconds(modpid) if modpid else None
        forks = bl.ForkCounter([broker]).start()
        try:
            raw = _batch(h, n, users, probe)
            _wait_quiet(h, mode)
        finally:
            forks.stop()
        res = _per_job(raw, mode)
        res.update(
            {"users": users, "forks": forks.snapshot(), "forks_lost": forks.lost}
        )
        res["forks_per_job"] = forks.total / n
        if modpid:
            stats1 = h.rpc("pam.stats-get", {}).get()
            res["module"] = _module_delta(stats0, stats1)
            res["module"]["cpu_s"] = bl.cpu_seconds(modpid) - cpu0
            res["module"]["forks"] = forks.by_parent.get(modpid, 0)
        runs.append(res)
        sync.post(f"done-{i}")
    if mode == "fallback":
        _flux_cmd("module", "remove", "sdexec-mapper")
    return {"mode": mode, "broker_pid": broker, "module_pid": modpid, "runs": runs}


# ------------------------------------------------------------------ outer side


def flux_pythonpath() -> str:
    flux = bl.find_flux()
    out = subprocess.run(
        [flux, "env", "sh", "-c", 'printf %s "$PYTHONPATH"'],
        capture_output=True,
        text=True,
    )
    return out.stdout


def reset_users(bed) -> None:
    units = [f"user@{BASE_UID + u}.service" for u in range(8)]
    subprocess.run(
        ["systemctl", "-M", bed.name, "stop"] + units,
        capture_output=True,
    )
    subprocess.run(
        ["systemctl", "-M", bed.name, "reset-failed"] + units,
        capture_output=True,
    )


def measure(
    bed, ns: list, users: list, modes: list, warmup: int, fallback_max_n: int
) -> dict:
    """Start one instance per mode, then run each (N, users) batch in every
    mode in turn (off, service, fallback), one instance busy at a time, so
    that the modes of a batch are measured within seconds of each other."""
    import tempfile

    allruns = [(n, u) for n in ns for u in users]
    out = {"modes": {}, "runs": allruns, "fallback_max_n": fallback_max_n}
    sync_dir = tempfile.mkdtemp(prefix="flux-pam-bench-sync.")
    fbpath = flux_pythonpath()
    inners, tmpdirs, syncs, runs_of = {}, [sync_dir], {}, {}
    reset_users(bed)
    try:
        for mode in modes:
            runs = [r for r in allruns if mode != "fallback" or r[0] <= fallback_max_n]
            if not runs:
                continue
            env = dict(bed.env())
            env["FLUX_PAM_SCRIPTS_DEBUG"] = "0"
            env["FLUX_BENCH_FLUX"] = bl.find_flux()
            env["PYTHONPATH"] = ":".join(
                [bl.TOP, os.path.join(bl.TOP, "bench"), os.path.join(bl.TOP, "t")]
                + ([fbpath] if fbpath else [])
            )
            fallback_conf = None
            if mode == "fallback":
                fallback_conf = bl.write_conf(
                    {"job-manager.toml": jobmanager_toml(), "pam.toml": PAM_TOML}
                )
                tmpdirs.append(fallback_conf)
            print(f"job_overhead: {mode}: starting", file=sys.stderr, flush=True)
            inners[mode] = bl.Inner(
                os.path.abspath(__file__),
                "jobs",
                {
                    "mode": mode,
                    "runs": runs,
                    "warmup": warmup,
                    "fallback_conf": fallback_conf,
                    "sync_dir": sync_dir,
                },
                1,
                boot_config(mode),
                env=env,
                tag=f"job_overhead-{mode}",
            )
            syncs[mode] = Sync(sync_dir, mode)
            syncs[mode].wait("ready", 600, inners[mode].proc)
            runs_of[mode] = runs
        for n, u in allruns:
            for mode in inners:
                if (n, u) not in runs_of[mode]:
                    continue
                i = runs_of[mode].index((n, u))
                print(
                    f"job_overhead: {mode}: N={n} users={u}",
                    file=sys.stderr,
                    flush=True,
                )
                t0 = time.monotonic()
                syncs[mode].post(f"go-{i}")
                syncs[mode].wait(f"done-{i}", 3600, inners[mode].proc)
                out.setdefault("batch_wall_s", {})[f"{mode} {n} {u}"] = (
                    time.monotonic() - t0
                )
        for mode, inner in inners.items():
            out["modes"][mode] = inner.wait(300)
    finally:
        for inner in inners.values():
            if inner.proc.poll() is None:
                inner.proc.terminate()
                inner.proc.wait()
        for d in tmpdirs:
            subprocess.run(["rm", "-rf", d])
        reset_users(bed)
    return out


# ------------------------------------------------------------------ report


def ordered(data: dict) -> list:
    """The modes in data, in MODES order (the JSON keeps them sorted)."""
    return [m for m in MODES if m in data["modes"]]


def rows(data: dict) -> list:
    """One row per (mode, N, users): the figures of the table."""
    base = {}
    off = data["modes"].get("off")
    if off:
        for r in off["runs"]:
            base[(r["n"], r["users"])] = r
    out = []
    for mode in ordered(data):
        for r in data["modes"][mode]["runs"]:
            b = base.get((r["n"], r["users"]))
            a2s, a2c = r["alloc_to_start_ms"], r["alloc_to_constrained_ms"]
            added = None
            if b and a2s.get("n") and b["alloc_to_start_ms"].get("n"):
                added = a2s["median"] - b["alloc_to_start_ms"]["median"]
            mod = r.get("module") or {}
            ops = sum(mod.get("operations", {}).values()) if mod else None
            out.append(
                {
                    "mode": mode,
                    "n": r["n"],
                    "users": r["users"],
                    "jobs_per_s": r["jobs_per_s"],
                    "vs_off": bl.ratio(r["jobs_per_s"], b["jobs_per_s"]) if b else None,
                    "start_med": a2s.get("median"),
                    "start_p95": a2s.get("p95"),
                    "start_added_med": added,
                    "constrained_med": a2c.get("median"),
                    "constrained_p95": a2c.get("p95"),
                    "constrained_n": a2c.get("n", 0),
                    "ended_first": r.get("unmeasured", 0)
                    if mode == "service"
                    else None,
                    "forks_per_job": r["forks_per_job"],
                    "module_forks": mod.get("forks") if mod else None,
                    "slice_ops_per_job": ops / r["n"] if ops is not None else None,
                    "module_cpu_ms_per_job": (
                        mod["cpu_s"] * 1000 / r["n"] if mod else None
                    ),
                }
            )
    return out


HEADERS = [
    "mode",
    "N",
    "users",
    "jobs/s",
    "vs off",
    "alloc>start med",
    "p95",
    "added med",
    "alloc>slice ready med",
    "p95",
    "ended first",
    "forks/job",
    "module forks",
    "slice ops/job",
    "module cpu ms/job",
]


def table_rows(data: dict) -> list:
    return [
        [
            r["mode"],
            r["n"],
            r["users"],
            r["jobs_per_s"],
            r["vs_off"],
            r["start_med"],
            r["start_p95"],
            r["start_added_med"],
            r["constrained_med"],
            r["constrained_p95"],
            r["ended_first"],
            r["forks_per_job"],
            r["module_forks"],
            r["slice_ops_per_job"],
            r["module_cpu_ms_per_job"],
        ]
        for r in rows(data)
    ]


def report(data: dict) -> str:
    return bl.format_table(
        "per-job overhead (times in ms; 'added' = alloc>start median minus"
        " management off's)",
        HEADERS,
        table_rows(data),
    )


def plot(data: dict, when: str = None) -> str:
    plt = bl.pyplot()
    rs = rows(data)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = sorted({(r["n"], r["users"]) for r in rs})
    modes = ordered(data)
    width = 0.8 / max(1, len(modes))
    for i, mode in enumerate(modes):
        xs, tput, med, p95 = [], [], [], []
        for j, key in enumerate(labels):
            r = next(
                (x for x in rs if x["mode"] == mode and (x["n"], x["users"]) == key),
                None,
            )
            if r is None:
                continue
            xs.append(j + i * width)
            tput.append(r["jobs_per_s"] or 0)
            med.append(r["constrained_med"] or 0)
            p95.append(r["constrained_p95"] or 0)
        ax1.bar(xs, tput, width, label=mode)
        if mode != "off":
            ax2.bar(xs, med, width, label=f"{mode} median")
            ax2.scatter(xs, p95, marker="_", s=200, color="k")
    ticks = [j + width * (len(modes) - 1) / 2 for j in range(len(labels))]
    names = [f"N={n}\n{u} user{'s' if u > 1 else ''}" for n, u in labels]
    for ax in (ax1, ax2):
        ax.set_xticks(ticks)
        ax.set_xticklabels(names)
        ax.legend(fontsize=8)
    ax1.set_ylabel("jobs/s")
    ax1.set_title("throughput (N x true, 1 broker, 2 cores)")
    ax2.set_ylabel("ms")
    ax2.set_title("alloc -> slice ready (bar median, tick p95)")
    return bl.save_plot(fig, KIND, when)


# ------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="N=20, users 1 and 8")
    ap.add_argument("--n", default="100,1000", help="job counts (comma list)")
    ap.add_argument("--users", default="1,8", help="user counts (comma list)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument(
        "--fallback-max-n",
        type=int,
        default=100,
        help="largest N run in fallback mode (about 1 job/s on 2 cores)",
    )
    args = ap.parse_args(argv)
    ns = [20] if args.quick else [int(x) for x in args.n.split(",")]
    users = [int(x) for x in args.users.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m}")
    if bl.find_flux() is None:
        print("job_overhead: skipped: flux-core not found")
        return 0
    with bl.testbed() as bed:
        if bed is None:
            print("job_overhead: skipped: no systemd test bed")
            return 0
        t0 = time.monotonic()
        data = measure(
            bed, ns, users, modes, 2 if args.quick else 4, args.fallback_max_n
        )
        data["wall_s"] = time.monotonic() - t0
    return bl.publish(KIND, data, report, plot)


if __name__ == "__main__":
    rc = bl.inner_main({"jobs": inner_jobs})
    sys.exit(main() if rc is None else rc)

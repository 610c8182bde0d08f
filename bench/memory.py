#!/usr/bin/python3
"""Memory per tracked job: the pam module's RSS with up to 10,000 jobs.

    bench/memory.py [--quick] [--jobs 10000] [--users 100]

Two measurements, reported separately:

module   a single-broker test instance with the pam module loaded
         (manage-user-slice off, so no systemd work is queued: this measures
         the per-rank state, not D-Bus traffic).  The benchmark drives the
         module's own pam.job-start RPC directly with J jobs (J/U per user,
         one core of a 1,024-core R each, as rank 0's dispatcher would send
         them) and reads the module process's VmRSS (/proc) every J/10
         jobs; then it ends every job with pam.job-end and reads it again.
         The slope of a least-squares line through (jobs, RSS) is the cost
         per job; the residuals show whether growth is linear.
core     in this process, with tracemalloc: flux_pam_service.core.jobs.UserTable
         (the per-rank state) and flux_pam_service.broker.dispatcher.Dispatcher
         (rank 0's per-job record, fed submit + alloc events) with the same
         J jobs; bytes per job from the traced allocations.

Output: a table, bench/results/memory-latest.json and .png.
"""

import argparse
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchlib as bl  # noqa: E402

KIND = "memory"
BASE_UID = 2000
NCORES = 1024


def fit(xs: list, ys: list) -> dict:
    """Least-squares line; slope, intercept, max relative residual."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    icept = my - slope * mx
    span = (max(ys) - min(ys)) or 1
    resid = max(abs(y - (icept + slope * x)) for x, y in zip(xs, ys))
    return {"slope": slope, "intercept": icept, "max_residual_frac": resid / span}


def _R(rank: int, core: int, host: str) -> dict:
    from flux_pam_service.core import rv1

    return rv1.make_R(rank, rv1.Resources(cores=frozenset([core])), host)


# ------------------------------------------------------------------ inner side


def inner_module(args: dict) -> dict:
    import flux

    h = flux.Flux()
    broker = int(h.attr_get("broker.pid"))
    pid = bl.module_pid(broker)
    if pid is None:
        raise RuntimeError("the pam module's process was not found")
    host = h.attr_get("hostname")
    jobs, users = args["jobs"], args["users"]
    step = max(1, jobs // 10)
    base = 10**12
    xs, ys = [0], [bl.rss_bytes(pid)]
    batch = []
    for i in range(jobs):
        payload = {
            "id": base + i,
            "userid": BASE_UID + i % users,
            "R": _R(0, i % NCORES, host),
        }
        batch.append(h.rpc("pam.job-start", payload, 0))
        if len(batch) == 256 or i == jobs - 1:
            for f in batch:
                f.get()
            batch = []
        if (i + 1) % step == 0:
            xs.append(i + 1)
            ys.append(bl.rss_bytes(pid))
    st = h.rpc("pam.stats-get", {}).get()
    for i in range(jobs):
        batch.append(h.rpc("pam.job-end", {"id": base + i}, 0))
        if len(batch) == 256 or i == jobs - 1:
            for f in batch:
                f.get()
            batch = []
    time.sleep(0.5)
    after = bl.rss_bytes(pid)
    st2 = h.rpc("pam.stats-get", {}).get()
    return {
        "jobs": xs,
        "rss": ys,
        "rss_after_end": after,
        "tracked": st["jobs"],
        "tracked_after_end": st2["jobs"],
        "users": st["users"],
    }


# ------------------------------------------------------------------ core


def core(jobs: int, users: int) -> dict:
    from flux_pam_service.broker import dispatcher
    from flux_pam_service.core import rv1
    from flux_pam_service.core.jobs import UserTable

    step = max(1, jobs // 10)
    out = {}
    tracemalloc.start()
    # UserTable
    base = tracemalloc.get_traced_memory()[0]
    table = UserTable(0)
    xs, ys = [0], [0]
    for i in range(jobs):
        res = rv1.local(_R(0, i % NCORES, "node0"), 0)
        table.start(10**12 + i, BASE_UID + i % users, res)
        if (i + 1) % step == 0:
            xs.append(i + 1)
            ys.append(tracemalloc.get_traced_memory()[0] - base)
    out["UserTable"] = {"jobs": xs, "bytes": ys}
    del table
    # Dispatcher (rank 0)
    base = tracemalloc.get_traced_memory()[0]
    d = dispatcher.Dispatcher()
    xs, ys = [0], [0]
    for i in range(jobs):
        jobid = 10**12 + i
        d.event(jobid, "submit", {"userid": BASE_UID + i % users}, jobspec={})
        d.event(jobid, "alloc", {}, R=_R(0, i % NCORES, "node0"))
        if (i + 1) % step == 0:
            xs.append(i + 1)
            ys.append(tracemalloc.get_traced_memory()[0] - base)
    out["Dispatcher"] = {"jobs": xs, "bytes": ys}
    tracemalloc.stop()
    return out


# ------------------------------------------------------------------ outer


def measure(jobs: int, users: int) -> dict:
    data = {"jobs": jobs, "users": users, "core": core(jobs, users)}
    if bl.find_flux() is None:
        data["module"] = {"skipped": "flux-core not found"}
        return data
    flux_R = os.path.join(bl.LOGDIR, "memory-R.json")
    os.makedirs(bl.LOGDIR, exist_ok=True)
    import subprocess

    with open(flux_R, "w") as f:
        subprocess.run(
            [bl.find_flux(), "R", "encode", "-r", "0", "-c", f"0-{NCORES - 1}"],
            stdout=f,
            check=True,
        )
    tomls = {
        "pam.toml": "[pam]\nmanage-user-slice = false\n",
        "resource.toml": f'[resource]\npath = "{flux_R}"\nnoverify = true\n',
    }
    data["module"] = bl.run_inner(
        os.path.abspath(__file__),
        "module",
        {"jobs": jobs, "users": users},
        1,
        tomls,
        tag="memory-module",
    )
    os.unlink(flux_R)
    return data


# ------------------------------------------------------------------ report


def results(data: dict) -> dict:
    out = {}
    mod = data.get("module", {})
    if "rss" in mod:
        f = fit(mod["jobs"], mod["rss"])
        out["module RSS"] = {
            "bytes_per_job": f["slope"],
            "max_residual_frac": f["max_residual_frac"],
            "at_0": mod["rss"][0],
            "at_max": mod["rss"][-1],
            "after_end": mod["rss_after_end"],
            "jobs": mod["jobs"][-1],
        }
    for name in ("UserTable", "Dispatcher"):
        c = data["core"][name]
        f = fit(c["jobs"], c["bytes"])
        out[f"{name} (tracemalloc)"] = {
            "bytes_per_job": f["slope"],
            "max_residual_frac": f["max_residual_frac"],
            "at_0": 0,
            "at_max": c["bytes"][-1],
            "after_end": None,
            "jobs": c["jobs"][-1],
        }
    return out


def report(data: dict) -> str:
    rows = []
    for name, r in results(data).items():
        rows.append(
            [
                name,
                r["jobs"],
                r["bytes_per_job"] / 1024,
                r["max_residual_frac"],
                r["at_0"] / 2**20,
                r["at_max"] / 2**20,
                r["after_end"] / 2**20 if r["after_end"] is not None else None,
            ]
        )
    return bl.format_table(
        f"memory per tracked job ({data['users']} users)",
        [
            "what",
            "jobs",
            "KiB/job (slope)",
            "max residual / range",
            "MiB at 0",
            "MiB at max",
            "MiB after all ended",
        ],
        rows,
    )


def plot(data: dict, when: str = None) -> str:
    plt = bl.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    mod = data.get("module", {})
    if "rss" in mod:
        ax.plot(
            mod["jobs"],
            [(y - mod["rss"][0]) / 2**20 for y in mod["rss"]],
            "o-",
            label="module RSS growth (pam.job-start)",
        )
    for name in ("UserTable", "Dispatcher"):
        c = data["core"][name]
        ax.plot(c["jobs"], [y / 2**20 for y in c["bytes"]], "s--", label=name)
    xs = [0, data["jobs"]]
    ax.plot(xs, [0, data["jobs"] * 2048 / 2**20], "k:", label="2 KiB/job (target)")
    ax.set_xlabel("tracked jobs")
    ax.set_ylabel("MiB above empty")
    ax.legend(fontsize=8)
    ax.set_title("memory per tracked job")
    return bl.save_plot(fig, KIND, when)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2,000 jobs")
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--users", type=int, default=100)
    args = ap.parse_args(argv)
    jobs = 2000 if args.quick else args.jobs
    t0 = time.monotonic()
    data = measure(jobs, args.users)
    data["wall_s"] = time.monotonic() - t0
    data["results"] = results(data)
    return bl.publish(KIND, data, report, plot)


if __name__ == "__main__":
    rc = bl.inner_main({"module": inner_module})
    sys.exit(main() if rc is None else rc)

#!/usr/bin/python3
"""The D-Bus floor, and the pam module's per-operation cost above it.

    bench/floor.py [--quick] [-n 300] [--slice-n 20] [--module-n 100]

Part 1 is bench/dbus_floor.py's measurement (imported, not repeated here):
raw GetUnit, GetUnitProcesses, SetUnitProperties and StartTransientUnit round
trips to systemd 252 in the test bed, UserSlice.apply / prepare / teardown,
and a slice update with and without the read-back of what the kernel
enforces (cgroup files and two pipelined Gets, as the module does after every
update), all from the host.

Part 2 drives the pam module (service mode: manage-user-slice and
sdexec-constrain-resources on, single-broker test instance) with its own
rank-local RPCs, no real jobs, and times each operation from the client:
    module apply     pam.job-start of a second job of uid 1000 (core 1 next
                     to the first job's core 0) until pam.prolog for it is
                     answered, and pam.job-end of it until pam.housekeeping
                     is answered: one slice update each (the union changes)
    module prepare   the user's first job: user@1000 started, slice applied
    module teardown  the user's last job ends: user@ stopped, slice reverted
The module's own time per operation (pam.stats-get op-time-total, worker
side) is reported next to it.  Each module operation includes the
enforcement read-back (on its worker thread, before the prolog is
answered); the read for pam.status (UserSlice.state()) follows the answer.

Output: a table, bench/results/floor-latest.json and .png.
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

KIND = "floor"
UID = 1000
PAM_TOML = (
    "[pam]\nmanage-user-slice = true\n\n[exec]\nsdexec-constrain-resources = true\n"
)


# ------------------------------------------------------------------ inner side


def inner_module(args: dict) -> dict:
    import flux

    from flux_pam_service.core import rv1

    h = flux.Flux()
    host = h.attr_get("hostname")
    counter = iter(range(10**12, 10**13))

    def R(core: int) -> dict:
        return rv1.make_R(0, rv1.Resources(cores=frozenset([core])), host)

    def start(core: int) -> tuple:
        jobid = next(counter)
        t0 = time.perf_counter()
        h.rpc("pam.job-start", {"id": jobid, "userid": UID, "R": R(core)}, 0).get()
        r = h.rpc("pam.prolog", {"id": jobid}, 0).get()
        dt = time.perf_counter() - t0
        if r.get("result") != "applied":
            raise RuntimeError(f"pam.prolog: {r}")
        return jobid, dt * 1000

    def end(jobid: int) -> float:
        t0 = time.perf_counter()
        h.rpc("pam.job-end", {"id": jobid}, 0).get()
        r = h.rpc("pam.housekeeping", {"id": jobid}, 0).get()
        dt = time.perf_counter() - t0
        if r.get("result") not in ("applied", "torn-down"):
            raise RuntimeError(f"pam.housekeeping: {r}")
        return dt * 1000

    def opstats() -> tuple:
        s = h.rpc("pam.stats-get", {}).get()
        return sum(s["operations"].values()), s["op-time-total"]

    prepare, teardown = [], []
    ops0, t0 = opstats()
    for _ in range(args["cycles"]):
        jobid, ms = start(0)
        prepare.append(ms)
        teardown.append(end(jobid))
    ops1, t1 = opstats()
    cycle_op_ms = (t1 - t0) * 1000 / max(1, ops1 - ops0)
    anchor, _ = start(0)
    apply = []
    for _ in range(args["n"]):
        jobid, ms = start(1)
        apply.append(ms)
        apply.append(end(jobid))
    ops2, t2 = opstats()
    apply_op_ms = (t2 - t1) * 1000 / max(1, ops2 - ops1 - 1)
    end(anchor)
    return {
        "module apply": bl.summary(apply),
        "module prepare": bl.summary(prepare),
        "module teardown": bl.summary(teardown),
        "worker_ms_per_op": {"apply": apply_op_ms, "prepare+teardown": cycle_op_ms},
    }


# ------------------------------------------------------------------ outer side


def to_ms(row: dict) -> dict:
    """dbus_floor's rows (median_ms, p95_ms) in benchlib.summary's keys."""
    if "skipped" in row:
        return row
    out = {
        "n": row["n"],
        "median": row["median_ms"],
        "p95": row["p95_ms"],
        "min": row["min_ms"],
        "client_cpu_us": row.get("client_cpu_us"),
    }
    if "verdict" in row:  # what the read-back found in the test bed
        out["verdict"] = row["verdict"]
    return out


def measure(bed, n: int, slice_n: int, module_n: int, cycles: int) -> dict:

    import dbus_floor

    # dbus_floor kills user-1000.slice after its StartTransientUnit series;
    # when the slice has already emptied and been collected, KillUnit fails
    # with NoSuchUnit.  A process of our own keeps the slice loaded until
    # that KillUnit (which kills it).
    subprocess.run(
        ["systemd-run", "-M", bed.name, "--quiet", "--collect"]
        + ["--slice=user-1000.slice", "--unit=flux-pam-bench-anchor.service"]
        + ["--", "sleep", "3600"],
        capture_output=True,
    )
    try:
        raw = dbus_floor.bench_floor(bed, n, slice_n)
    finally:
        subprocess.run(
            ["systemctl", "-M", bed.name, "stop", "flux-pam-bench-anchor.service"],
            capture_output=True,
        )
    env = dict(bed.env())
    mod = bl.run_inner(
        os.path.abspath(__file__),
        "module",
        {"n": module_n, "cycles": cycles},
        1,
        {"pam.toml": PAM_TOML},
        env=env,
        tag="floor-module",
    )
    rows = {k: to_ms(v) for k, v in raw.items()}
    worker = mod.pop("worker_ms_per_op")
    mod.pop("flux_start_rc", None)
    rows.update(mod)
    return {"rows": rows, "worker_ms_per_op": worker}


# ------------------------------------------------------------------ report


def ratios(data: dict) -> dict:
    rows = data["rows"]
    sup = rows.get("SetUnitProperties", {}).get("median")
    apply = rows.get("UserSlice.apply", {}).get("median")
    mod = rows.get("module apply", {}).get("median")
    without = rows.get("slice update without read-back", {}).get("median")
    with_ = rows.get("slice update with read-back", {}).get("median")
    return {
        "module_apply_over_SetUnitProperties": bl.ratio(mod, sup),
        "module_apply_over_UserSlice_apply": bl.ratio(mod, apply),
        "UserSlice_apply_over_SetUnitProperties": bl.ratio(apply, sup),
        "update_with_over_without_read_back": bl.ratio(with_, without),
        "read_back_ms": (with_ - without) if with_ and without else None,
    }


def report(data: dict) -> str:
    rows = []
    for name, r in data["rows"].items():
        if "skipped" in r:
            rows.append([name, "-", "skipped", "", ""])
        else:
            rows.append([name, r["n"], r["median"], r["p95"], r.get("min")])
    out = bl.format_table(
        "D-Bus floor and module per-operation cost (ms, from the client)",
        ["operation", "n", "median", "p95", "min"],
        rows,
    )
    rat = ratios(data)
    w = data.get("worker_ms_per_op", {})
    out += "\n" + "\n".join(
        [
            "module apply / SetUnitProperties (medians): "
            + bl.fmt(rat["module_apply_over_SetUnitProperties"]),
            "module apply / UserSlice.apply (medians):   "
            + bl.fmt(rat["module_apply_over_UserSlice_apply"]),
            "module worker time per apply op (mean, ms):  " + bl.fmt(w.get("apply")),
            "slice update with / without read-back:       "
            + bl.fmt(rat["update_with_over_without_read_back"])
            + " (+"
            + bl.fmt(rat["read_back_ms"])
            + " ms, medians)",
        ]
    )
    return out


def plot(data: dict, when: str = None) -> str:
    plt = bl.pyplot()
    names = [k for k, r in data["rows"].items() if "median" in r]
    med = [data["rows"][k]["median"] for k in names]
    p95 = [data["rows"][k]["p95"] for k in names]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ys = range(len(names))
    ax.barh(list(ys), med, label="median")
    ax.scatter(p95, list(ys), marker="|", s=200, color="k", label="p95")
    ax.set_yticks(list(ys))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("ms per operation (log)")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.set_title("raw D-Bus round trips vs UserSlice vs the pam module")
    return bl.save_plot(fig, KIND, when)


# ------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("-n", type=int, default=300, help="calls per raw operation")
    ap.add_argument("--slice-n", type=int, default=20)
    ap.add_argument("--module-n", type=int, default=100, help="module apply pairs")
    ap.add_argument("--cycles", type=int, default=10, help="prepare/teardown")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.slice_n, args.module_n, args.cycles = 50, 5, 20, 3
    if os.geteuid() != 0:
        print("floor: skipped: needs root (test bed)")
        return 0
    if bl.find_flux() is None:
        print("floor: skipped: flux-core not found")
        return 0
    with bl.testbed() as bed:
        if bed is None:
            print("floor: skipped: no systemd test bed")
            return 0
        t0 = time.monotonic()
        data = measure(bed, args.n, args.slice_n, args.module_n, args.cycles)
        data["wall_s"] = time.monotonic() - t0
    data["ratios"] = ratios(data)
    return bl.publish(KIND, data, report, plot)


if __name__ == "__main__":
    rc = bl.inner_main({"module": inner_module})
    sys.exit(main() if rc is None else rc)

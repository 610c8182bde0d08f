#!/usr/bin/python3
"""Run every benchmark in bench/ and check the targets of the design.

    make bench                     (= .venv/bin/python bench/run.py)
    bench/run.py [--quick]
                 [--only floor,memory,scale,admission,session,job_overhead]

Run as root on a machine with flux-core (/opt/flux or FLUX) and what
scripts/install-deps installs.  One systemd test bed (t/testbed.py) is
brought up for the run, or the exported one (FLUX_PAM_TESTBED and
DBUS_SYSTEM_BUS_ADDRESS) is used.  Each benchmark runs as its own process
(its table goes to stdout as it finishes; a benchmark that fails is reported
and the others still run), then the targets are checked against the JSON
they wrote (bench/results/KIND-latest.json) and the summary is written to
bench/results/summary-latest.json and summary-latest.md.

--quick runs every benchmark small (a smoke run of a few minutes);
--report-only runs nothing and rewrites the summary from the latest JSON.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
STACK_NAMES = ("pam_flux", "permit")
ORDER = ("floor", "memory", "scale", "admission", "session", "job_overhead")
NEEDS_TESTBED = ("floor", "job_overhead")
TIMEOUT = {
    "floor": 600,
    "memory": 600,
    "scale": 900,
    "admission": 900,
    "session": 900,
    "job_overhead": 1800,
}


def latest(kind: str) -> dict:
    path = os.path.join(bl.RESULTS, f"{kind}-latest.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------ targets


def _target(name: str, met, figure: str, how: str) -> dict:
    return {"target": name, "met": met, "figure": figure, "how": how}


def targets(res: dict) -> list:
    """Check the four targets of issue 9 against the results *res*
    ({kind: JSON}); met is True/False, or None when not measured."""
    out = []
    floor = res.get("floor") or {}
    jobs = res.get("job_overhead") or {}
    adm = res.get("admission") or {}
    mem = res.get("memory") or {}
    rows_ = floor.get("rows", {})
    # the raw SetUnitProperties of dbus_floor sets AllowedCPUs and
    # AllowedMemoryNodes only; UserSlice.apply is one SetUnitProperties call
    # with the properties a job's slice gets (cores, memory node, devices),
    # the floor of the module's apply.
    cpu_only = rows_.get("SetUnitProperties", {}).get("median")
    sup = rows_.get("UserSlice.apply", {}).get("median") or cpu_only
    mod = rows_.get("module apply", {}).get("median")
    # 1a: per operation
    if sup and mod:
        r = mod / sup
        out.append(
            _target(
                "service mode: slice update <= 2x raw SetUnitProperties (median)",
                r <= 2.0,
                f"module apply {mod:.2f} ms = {r:.2f}x SetUnitProperties with the"
                f" job's properties ({sup:.2f} ms)"
                + (
                    f"; {mod / cpu_only:.1f}x the AllowedCPUs-only call"
                    f" ({cpu_only:.2f} ms)"
                    if cpu_only
                    else ""
                ),
                "floor: pam.job-start -> pam.prolog answered, vs raw D-Bus call",
            )
        )
    else:
        out.append(_target("service mode: slice update <= 2x", None, "-", "floor"))
    # 1b: per job end to end, and forks
    service = (jobs.get("modes") or {}).get("service")
    if service:
        worst = None
        forks = 0
        for r in service["runs"]:
            med = r["alloc_to_constrained_ms"].get("median")
            if med is not None and (worst is None or med > worst[0]):
                worst = (med, r["n"], r["users"])
            forks += (r.get("module") or {}).get("forks", 0)
        if worst and sup:
            out.append(
                _target(
                    "service mode: alloc -> slice ready <= 2x SetUnitProperties",
                    worst[0] <= 2 * sup,
                    f"worst median {worst[0]:.1f} ms (N={worst[1]}, {worst[2]} users)"
                    f" vs 2x {sup:.2f} ms",
                    "job_overhead: pam.prolog answer time minus alloc event time",
                )
            )
        out.append(
            _target(
                "service mode forks no process per job",
                forks == 0,
                f"{forks} forks by the module process over all service runs",
                "job_overhead: proc connector fork events, parent = module process",
            )
        )
    # 2: throughput
    rows = []
    if service and (jobs.get("modes") or {}).get("off"):
        off = {
            (r["n"], r["users"]): r["jobs_per_s"] for r in jobs["modes"]["off"]["runs"]
        }
        for r in service["runs"]:
            base = off.get((r["n"], r["users"]))
            if base:
                rows.append((r["jobs_per_s"] / base, r["n"], r["users"]))
    if rows:
        worst = min(rows)
        out.append(
            _target(
                "service-mode throughput >= 90% of management off",
                worst[0] >= 0.9,
                "; ".join(
                    f"N={n} U={u}: {x:.0%}"
                    for x, n, u in sorted(rows, key=lambda t: t[1:])
                ),
                "job_overhead: N / (last clean - first submit), same run",
            )
        )
    else:
        out.append(_target("throughput >= 90% of off", None, "-", "job_overhead"))
    # 3: admission (issue 15: pam_flux.so, module loaded, 1/100/1,000 jobs)
    steps = []
    for mode, m in (adm.get("modes") or {}).items():
        for s in m["steps"]:
            pt = s["pamtester_ms"]
            if all(pt.get(k, {}).get("n") for k in STACK_NAMES):
                steps.append(
                    (
                        s["k"],
                        mode,
                        s.get("place", "host"),
                        pt["pam_flux"]["median"] - pt["permit"]["median"],
                        pt["pam_flux"]["p95"] - pt["permit"]["p95"],
                    )
                )
    place = "node" if any(st[2] == "node" for st in steps) else "host"
    at = [st for st in steps if st[1] == "service" and st[2] == place]
    if at:
        p50s = [st[3] for st in at]
        out.append(
            _target(
                "admission, module loaded: pam_flux.so adds <= 1 ms p50 and"
                " <= 2 ms p95 to a pamtester run over pam_permit, flat in the"
                " number of jobs",
                all(st[3] <= 1 and st[4] <= 2 for st in at),
                "; ".join(f"{k} jobs: +{a:.2f}/+{b:.2f} ms" for k, _, _, a, b in at)
                + f" (p50/p95, {place}; p50 spread {max(p50s) - min(p50s):.2f} ms)",
                "admission: pam_flux.so minus pam_permit, pamtester acct_mgmt",
            )
        )
    else:
        out.append(_target("admission <= 1 ms p50 over permit", None, "-", "admission"))
    ses = res.get("session") or {}
    if ses.get("runs"):
        import session

        med = session.share(ses, "median")
        out.append(
            _target(
                "session step: pam_flux.so adds <= 10 ms median to a login",
                med <= 10,
                f"{med:.1f} ms median, {session.share(ses, 'p95'):.1f} ms p95",
                "session: difference of differences on a node replica",
            )
        )
    else:
        out.append(_target("session step <= 10 ms", None, "-", "session"))
    # 4: memory
    r = (mem.get("results") or {}).get("module RSS")
    if r:
        kib = r["bytes_per_job"] / 1024
        out.append(
            _target(
                "memory linear, < 2 KiB per tracked job",
                kib < 2 and r["max_residual_frac"] < 0.15,
                f"{kib:.2f} KiB/job over {r['jobs']} jobs (max residual"
                f" {r['max_residual_frac']:.0%} of the range)",
                "memory: module process VmRSS, least-squares slope",
            )
        )
    else:
        out.append(_target("memory < 2 KiB/job", None, "-", "memory"))
    return out


def format_targets(ts: list) -> str:
    return bl.format_table(
        "targets",
        ["target", "met", "figure"],
        [
            [t["target"], "not measured" if t["met"] is None else t["met"], t["figure"]]
            for t in ts
        ],
    )


def markdown_targets(ts: list) -> str:
    return bl.markdown_table(
        ["target", "met", "figure", "how"],
        [
            [
                t["target"],
                "not measured"
                if t["met"] is None
                else ("yes" if t["met"] else "**no**"),
                t["figure"],
                t["how"],
            ]
            for t in ts
        ],
    )


def summary_markdown(ts: list, res: dict) -> str:
    """The targets, then each benchmark's table, for bench/README.md."""
    import importlib

    out = [markdown_targets(ts), ""]
    for kind in ORDER:
        if not res.get(kind):
            continue
        mod = importlib.import_module(kind)
        out += [f"### {kind}", "", "```", mod.report(res[kind]), "```", ""]
        out += [f"![{kind}](results/{kind}-latest.png)", ""]
    return "\n".join(out)


# ------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small smoke run")
    ap.add_argument("--only", default=",".join(ORDER))
    ap.add_argument("--keep-testbed", action="store_true")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: targets and summary from the latest results",
    )
    args = ap.parse_args(argv)
    only = [k for k in args.only.split(",") if k]
    for k in only:
        if k not in ORDER:
            ap.error(f"unknown benchmark {k}")
    if args.report_only:
        res = {k: latest(k) for k in only}
        ts = targets(res)
        print(format_targets(ts))
        with open(os.path.join(bl.RESULTS, "summary-latest.md"), "w") as f:
            f.write(summary_markdown(ts, res))
        return 0
    if bl.find_flux() is None:
        print("bench: flux-core not found (/opt/flux/bin/flux or FLUX): nothing run")
        return 0
    t_all = time.monotonic()
    status = {}
    need_bed = any(k in NEEDS_TESTBED for k in only)
    bed_cm = (
        bl.testbed(keep=args.keep_testbed) if need_bed else contextlib.nullcontext()
    )
    with bed_cm as bed:
        env = dict(os.environ)
        if bed is not None:
            env.update(bed.env())
        for kind in [k for k in ORDER if k in only]:
            argv_k = [sys.executable, os.path.join(BENCH, f"{kind}.py")]
            if args.quick:
                argv_k.append("--quick")
            print(f"\n=== {kind}: {' '.join(argv_k[1:])}", flush=True)
            t0 = time.monotonic()
            load0 = os.getloadavg()[0]
            try:
                rc = subprocess.run(argv_k, env=env, timeout=TIMEOUT[kind]).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            status[kind] = {
                "rc": rc,
                "wall_s": round(time.monotonic() - t0, 1),
                # 1-minute load average before and after: others' work counts
                "load": [round(load0, 1), round(os.getloadavg()[0], 1)],
            }
            print(f"=== {kind}: exit {rc} in {status[kind]['wall_s']} s", flush=True)
    # only what ran to completion now: never a stale result
    res = {k: latest(k) for k, v in status.items() if v["rc"] == 0}
    ts = targets(res)
    summary = {
        "quick": args.quick,
        "status": status,
        "targets": ts,
        "wall_s": round(time.monotonic() - t_all, 1),
        "machine": bl.machine(),
    }
    print()
    print(format_targets(ts))
    print(
        f"\ntotal {summary['wall_s']} s; "
        + ", ".join(
            f"{k} {v['wall_s']} s (exit {v['rc']}, load {v['load'][0]}->{v['load'][1]})"
            for k, v in status.items()
        )
    )
    print(bl.write_json("summary", summary))
    with open(os.path.join(bl.RESULTS, "summary-latest.md"), "w") as f:
        f.write(summary_markdown(ts, res))
    failed = [k for k, v in status.items() if v["rc"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

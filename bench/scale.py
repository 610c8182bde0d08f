#!/usr/bin/python3
"""Scale: the rank-0 dispatcher's messages and time per job vs job size.

    bench/scale.py [--quick] [--jobs 40] [--sizes 4,16]

Test instances of 4 and 16 brokers (``flux start --test-size``) with the pam
module on every rank (manage-user-slice off: all brokers of a test instance
share one host, and this measures the dispatch, not systemd).  In each, M
jobs of 1, 4 and 16 nodes (up to the instance size) run one size after the
other under test execution (``system.exec.test.run_duration``, no
processes), and the benchmark reads from pam.stats-get on rank 0 the
messages its dispatcher sent (pam.job-start / job-cleanup / job-end) and the
journal events it read, and from /proc the rank-0 module process's CPU time
(user+system, 10 ms ticks); per job = delta / M.  pam.stats-get on every
rank gives the jobs each rank was told about.

The same job size in the 4- and the 16-broker instance shows whether the
per-job cost depends on the instance size.  A least-squares line per job
(cost = a + b x nodes) over the 16-broker figures gives the estimate for a
4,000-node system instance at 100 jobs/s.  Also timed in this process:
flux_pam_service.broker.dispatcher.Dispatcher alone (the journal events of one job
of N nodes, N up to 4,000), i.e. the CPU the dispatch logic costs without
any messaging.

Output: a table, bench/results/scale-latest.json and .png.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchlib as bl  # noqa: E402

KIND = "scale"
NODES = (1, 4, 16)
ESTIMATE_NODES = 4000
ESTIMATE_RATE = 100.0
ESTIMATE_SIZES = (1, 16, 128)
CORE_SIZES = [1, 4, 16, 128, 1000, 4000]
#: the jobs' user: their own jobs, submitted as them (t/guestjobs.py)
UID = 1000


def fit(xs: list, ys: list) -> tuple:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


# ------------------------------------------------------------------ inner side


def inner_jobs(args: dict) -> dict:
    import flux
    import flux.job
    import guestjobs

    h = flux.Flux()
    as_user = guestjobs.handle_as(UID)
    size = int(h.attr_get("size"))
    pid = bl.module_pid(int(h.attr_get("broker.pid")))
    if pid is None:
        raise RuntimeError("the pam module's process was not found on rank 0")

    def all_started() -> int:
        return sum(
            h.rpc("pam.stats-get", {}, r).get()["jobs-started"] for r in range(size)
        )

    def wait_inactive() -> None:
        payload = {"max_entries": 0, "attrs": [], "constraint": {"states": ["active"]}}
        deadline = time.monotonic() + 600
        while h.rpc("job-list.list", payload).get()["jobs"]:
            if time.monotonic() > deadline:
                raise TimeoutError("jobs did not finish")
            time.sleep(0.2)

    def pending() -> int:
        return sum(h.rpc("pam.stats-get", {}, r).get()["pending"] for r in range(size))

    out = []
    for nodes in [n for n in NODES if n <= size]:
        js = flux.job.JobspecV1.from_command(["true"], num_tasks=nodes, num_nodes=nodes)
        js.setattr("system.exec.test.run_duration", "0.01s")
        js.cwd = "/tmp"
        spec = js.dumps()
        # one unmeasured job of this size first
        guestjobs.submit(UID, spec, handle=as_user)
        wait_inactive()
        time.sleep(0.5)
        s0 = h.rpc("pam.stats-get", {}).get()
        started0, cpu0 = all_started(), bl.cpu_seconds(pid)
        t0 = time.monotonic()
        guestjobs.submit(UID, spec, args["jobs"], handle=as_user)
        wait_inactive()
        time.sleep(0.5)  # let the last job-end messages be answered
        wall = time.monotonic() - t0
        s1 = h.rpc("pam.stats-get", {}).get()
        m = args["jobs"]
        out.append(
            {
                "instance": size,
                "nodes": nodes,
                "jobs": m,
                "messages_per_job": (s1["messages-sent"] - s0["messages-sent"]) / m,
                "message_errors": s1["message-errors"] - s0["message-errors"],
                "journal_events_per_job": (s1["journal-events"] - s0["journal-events"])
                / m,
                "rank0_cpu_ms_per_job": (bl.cpu_seconds(pid) - cpu0) * 1000 / m,
                "ranks_told_per_job": (all_started() - started0) / m,
                "wall_s": wall,
            }
        )
    return {"size": size, "runs": out, "pending_after": pending()}


# ------------------------------------------------------------------ core


def dispatcher_cost(sizes: list, reps: int) -> list:
    """CPU time (us) of Dispatcher.event for one job's events, per size."""
    from flux_pam_service.broker import dispatcher
    from flux_pam_service.core import idset

    out = []
    for nodes in sizes:
        R = {
            "version": 1,
            "execution": {
                "R_lite": [
                    {"rank": idset.encode(range(nodes)), "children": {"core": "0"}}
                ],
                "nodelist": [f"node[0-{nodes - 1}]"],
            },
        }
        d = dispatcher.Dispatcher()
        msgs = 0
        n = max(2, min(reps, 4000 // nodes))
        t0 = time.process_time()
        for i in range(n):
            jobid = 10**12 + i
            for name, ctx, kw in (
                ("submit", {"userid": 1000}, {"jobspec": {}}),
                ("alloc", {}, {"R": R}),
                ("finish", {"status": 0}, {}),
                ("release", {"ranks": "all", "final": True}, {}),
                ("free", {}, {}),
                ("clean", {}, {}),
            ):
                msgs += len(d.event(jobid, name, ctx, **kw))
        cpu = time.process_time() - t0
        out.append(
            {
                "nodes": nodes,
                "jobs": n,
                "us_per_job": cpu * 1e6 / n,
                "messages": msgs / n,
            }
        )
    return out


# ------------------------------------------------------------------ outer


def measure(sizes: list, jobs: int, core_sizes: list, reps: int) -> dict:
    data = {"core": dispatcher_cost(core_sizes, reps), "instances": []}
    if bl.find_flux() is None:
        data["skipped"] = "flux-core not found"
        return data
    for size in sizes:
        print(f"scale: {size}-broker instance", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        res = bl.run_inner(
            os.path.abspath(__file__),
            "jobs",
            {"jobs": jobs},
            size,
            {
                "pam.toml": "[pam]\nmanage-user-slice = false\n",
                "testexec.toml": bl.GUESTS_TOML,
            },
            tag=f"scale-{size}",
        )
        res["wall_s"] = time.monotonic() - t0
        data["instances"].append(res)
    data["estimate"] = estimate(data)
    return data


def estimate(data: dict) -> dict:
    """Rank-0 load of a 4,000-node instance at 100 jobs/s, from the figures
    of the largest instance measured (cost = a + b x nodes per job)."""
    if not data["instances"]:
        return {}
    runs = max(data["instances"], key=lambda r: r["size"])["runs"]
    xs = [r["nodes"] for r in runs]
    if len(xs) < 2:
        return {}
    ma, mb = fit(xs, [r["messages_per_job"] for r in runs])
    ca, cb = fit(xs, [r["rank0_cpu_ms_per_job"] for r in runs])
    out = {
        "from_instance": max(r["size"] for r in data["instances"]),
        "messages_per_job": {"a": ma, "b_per_node": mb},
        "cpu_ms_per_job": {"a": ca, "b_per_node": cb},
        "nodes": ESTIMATE_NODES,
        "jobs_per_s": ESTIMATE_RATE,
        "by_job_size": [],
    }
    alone = {c["nodes"]: c["us_per_job"] for c in data.get("core", [])}
    for s in ESTIMATE_SIZES + (ESTIMATE_NODES,):
        msgs = ma + mb * s
        cpu = ca + cb * s
        out["by_job_size"].append(
            {
                "nodes_per_job": s,
                "messages_per_s": ESTIMATE_RATE * msgs,
                "rank0_cpu_fraction": ESTIMATE_RATE * cpu / 1000,
                "dispatcher_alone_fraction": (
                    ESTIMATE_RATE * alone[s] / 1e6 if s in alone else None
                ),
            }
        )
    return out


# ------------------------------------------------------------------ report


def report(data: dict) -> str:
    rows = []
    for inst in data["instances"]:
        for r in inst["runs"]:
            rows.append(
                [
                    r["instance"],
                    r["nodes"],
                    r["jobs"],
                    r["messages_per_job"],
                    r["ranks_told_per_job"],
                    r["journal_events_per_job"],
                    r["rank0_cpu_ms_per_job"],
                    r["message_errors"],
                ]
            )
    out = [
        bl.format_table(
            "dispatch cost per job (rank 0)",
            [
                "brokers",
                "nodes/job",
                "jobs",
                "msgs/job",
                "ranks told/job",
                "journal ev/job",
                "rank-0 cpu ms/job",
                "msg errors",
            ],
            rows,
        ),
        bl.format_table(
            "Dispatcher.event alone (in process, one job's 6 events)",
            ["nodes/job", "jobs timed", "us/job", "messages/job"],
            [
                [c["nodes"], c.get("jobs"), c["us_per_job"], c["messages"]]
                for c in data["core"]
            ],
        ),
    ]
    est = data.get("estimate") or {}
    if est:
        m, c = est["messages_per_job"], est["cpu_ms_per_job"]
        out.append(
            bl.format_table(
                f"estimate: {est['nodes']} nodes at {est['jobs_per_s']:.0f} jobs/s"
                f" (fit over the {est['from_instance']}-broker figures: msgs/job ="
                f" {m['a']:.2f} + {m['b_per_node']:.2f} x nodes; rank-0 cpu ms/job ="
                f" {c['a']:.3f} + {c['b_per_node']:.3f} x nodes)",
                [
                    "nodes/job",
                    "messages/s from rank 0",
                    "rank-0 CPU, linear fit (cores)",
                    "Dispatcher.event alone, measured (cores)",
                ],
                [
                    [
                        e["nodes_per_job"],
                        e["messages_per_s"],
                        e["rank0_cpu_fraction"],
                        e.get("dispatcher_alone_fraction"),
                    ]
                    for e in est["by_job_size"]
                ],
            )
        )
    return "\n\n".join(out)


def plot(data: dict, when: str = None) -> str:
    plt = bl.pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for inst in data["instances"]:
        xs = [r["nodes"] for r in inst["runs"]]
        ax1.plot(
            xs,
            [r["messages_per_job"] for r in inst["runs"]],
            "o-",
            label=f"{inst['size']} brokers",
        )
        ax2.plot(
            xs,
            [r["rank0_cpu_ms_per_job"] for r in inst["runs"]],
            "o-",
            label=f"{inst['size']} brokers",
        )
    for ax, title in (
        (ax1, "messages sent by rank 0 per job"),
        (ax2, "rank-0 module CPU ms per job"),
    ):
        ax.set_xlabel("nodes per job")
        ax.set_title(title)
        ax.legend(fontsize=8)
    return bl.save_plot(fig, KIND, when)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="16 brokers, 10 jobs")
    ap.add_argument("--jobs", type=int, default=40, help="jobs per size")
    ap.add_argument("--sizes", default="4,16", help="instance sizes")
    args = ap.parse_args(argv)
    sizes = [16] if args.quick else [int(x) for x in args.sizes.split(",")]
    jobs = 10 if args.quick else args.jobs
    t0 = time.monotonic()
    data = measure(sizes, jobs, CORE_SIZES, 20 if args.quick else 200)
    data["wall_s"] = time.monotonic() - t0
    return bl.publish(KIND, data, report, plot)


if __name__ == "__main__":
    rc = bl.inner_main({"jobs": inner_jobs})
    sys.exit(main() if rc is None else rc)

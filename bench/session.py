#!/usr/bin/python3
"""What pam_flux's session step adds to a login, on a node replica.

    bench/session.py [--quick] [--samples 60]

Run as root where the node replica can run (sharness/node/node.py: a Flux
system instance with the pam module, manage-user-slice on, polkit, sshd's
PAM stack from the installed example).  A job of alice holds the node, so
her slice is in place.  Inside the replica, pamtester runs as the PAM
application (bench/pam_sampler.py, round robin, one warm-up round) with:

    sshd           the installed stack: pam_flux in account and session
    no-session     the same file without pam_flux's session line (its
                   account line acting for this service too)

each as ``acct_mgmt`` alone and as ``acct_mgmt open_session
close_session``.  pam_flux's session share is (sshd: session run minus
account run) minus (no-session: the same difference): the other session
modules (pam_limits, pam_env, pam_motd, ...) cancel out.  What the session
step does: the module's pam.check answer says manage-user-slice is on, so
it checks the lock directory, loads sd-bus (libsystemd.so.0), starts
flux-pam-PID.scope in user-1000.slice, waits for the job, and confirms with
pam.attach.

Output: a table, bench/results/session-latest.json and .png.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

sys.path.insert(0, os.path.join(bl.TOP, "sharness", "node"))

KIND = "session"
NAME = f"flux-pam-bench-session-{os.getpid()}"  # per run
STACKS = ("sshd", "flux-pam-bench-nosession")
RUNS = {"account": "acct_mgmt", "session": "acct_mgmt,open_session,close_session"}


def no_session_stack(text: str) -> str:
    """sshd's stack without pam_flux's session line; account for any service."""
    out = []
    for line in text.splitlines():
        words = line.split()
        flux = any(w.endswith("pam_flux.so") for w in words)
        if words[:1] == ["session"] and flux:
            continue
        if words[:1] == ["account"] and flux:
            line += " service=*"
        out.append(line)
    return "\n".join(out) + "\n"


def measure(samples: int) -> dict:
    import node as nodemod

    node = nodemod.up(NAME, lambda s: print(s, file=sys.stderr))
    try:

        def run(argv: list, **kw) -> str:
            r = node.testbed.run(argv, **kw)
            if r.returncode:
                raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr}")
            return r.stdout

        sshd = run(["cat", "/etc/pam.d/sshd"])
        run(["tee", f"/etc/pam.d/{STACKS[1]}"], input=no_session_stack(sshd))
        run(
            [
                "runuser",
                "-u",
                "alice",
                "--",
                "flux",
                "submit",
                "--wait-event=start",
                "sleep",
                "3600",
            ]
        )
        deadline = time.monotonic() + 60
        while "active" not in run(["flux", "pam", "status"]):
            if time.monotonic() > deadline:
                raise RuntimeError("alice's slice did not come up")
            time.sleep(0.5)
        sampler = os.path.join(bl.TOP, "bench", "pam_sampler.py")
        data = {"stacks": list(STACKS), "runs": {}}
        for run_name, ops in RUNS.items():
            out = run(
                ["python3", sampler, "--ops", ops, "alice", str(samples)]
                + list(STACKS),
                timeout=1800,
            )
            got = json.loads(out)
            if any(got["failures"].values()):
                raise RuntimeError(f"{run_name}: failures {got['failures']}")
            data["runs"][run_name] = {s: bl.summary(v) for s, v in got["ms"].items()}
        return data
    finally:
        nodemod.down(NAME, lambda s: print(s, file=sys.stderr))


def share(data: dict, stat: str) -> float:
    r = data["runs"]
    with_flux = r["session"][STACKS[0]][stat] - r["account"][STACKS[0]][stat]
    without = r["session"][STACKS[1]][stat] - r["account"][STACKS[1]][stat]
    return with_flux - without


def report(data: dict) -> str:
    rows = []
    for run_name in RUNS:
        for stack in STACKS:
            st = data["runs"][run_name][stack]
            rows.append([stack, run_name, st.get("n"), st.get("median"), st.get("p95")])
    out = bl.format_table(
        "pamtester as alice on a node replica, sshd's PAM stack (ms)",
        ["stack", "operations", "n", "median", "p95"],
        rows,
    )
    out += (
        f"\n\npam_flux session step: {share(data, 'median'):.1f} ms median,"
        f" {share(data, 'p95'):.1f} ms at p95 (difference of differences)"
    )
    return out


def plot(data: dict, when: str = None) -> str:
    plt = bl.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    labels, med, p95 = [], [], []
    for run_name in RUNS:
        for stack in STACKS:
            st = data["runs"][run_name][stack]
            labels.append(f"{stack}\n{run_name}")
            med.append(st["median"])
            p95.append(st["p95"])
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], med, 0.4, label="median")
    ax.bar([x + 0.2 for x in xs], p95, 0.4, label="p95")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("ms")
    ax.set_title("pamtester on a node replica: with and without pam_flux's session")
    ax.legend(fontsize=7)
    return bl.save_plot(fig, KIND, when)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 samples")
    ap.add_argument("--samples", type=int, default=60)
    args = ap.parse_args(argv)
    import node as nodemod

    ok, why = nodemod.can_run()
    if not ok:
        print(f"session: skipped: {why}")
        return 0
    t0 = time.monotonic()
    data = measure(10 if args.quick else args.samples)
    data["wall_s"] = time.monotonic() - t0
    return bl.publish(KIND, data, report, plot)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Per-call latency of systemd D-Bus calls and UserSlice operations.

Against systemd 252 in the test bed (t/testbed.py): reuses the one named by
$FLUX_PAM_TESTBED, else boots one and takes it down afterwards.  Run as root.

    bench/dbus_floor.py [-n N] [--slice-n M]     the raw D-Bus floor (jeepney,
        through flux_pam_service.systemd.client) next to UserSlice.apply / prepare /
        teardown; table on stdout, JSON in bench/results/dbus_floor-latest.json
    bench/dbus_floor.py --libs [-n N]            GetUnit and SetUnitProperties
        with each D-Bus library that imports (jeepney, dbus-python, dbus-fast,
        sdbus); JSON in bench/results/dbus-libs-latest.json.  Run it with a
        Python that has the extra libraries (a venv made with
        --system-site-packages) to include them.

Calls (all from the host over the container's system bus socket):
    GetUnit             Manager.GetUnit("init.scope")
    GetUnitProcesses    Manager.GetUnitProcesses("init.scope")
    SetUnitProperties   user-1000.slice, AllowedCPUs + AllowedMemoryNodes (ay)
    StartTransientUnit  a scope in user-1000.slice taking a container process
                        (moved from the previous scope; reply only, not the job)
    UserSlice.apply     alice's union (cores, memory node, 2 devices)
    UserSlice.prepare   apply + start user@1000.service, waiting for the job
    UserSlice.teardown  kill (nothing left) + stop user@1000 (job) + reset + revert
    slice update, with user@1000 running (the slice's cgroup exists), round
    robin so that the three see the same load:
        without read-back   UserSlice.apply
        with read-back      UserSlice.apply, then what the module does after
                            it: UserSlice.read_back (cgroup files below the
                            container's cgroup root, FLUX_PAM_TESTBED_CGROUP, and
                            two pipelined Gets) and enforcement.compare
        read-back alone     read_back + compare
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)
sys.path.insert(0, os.path.join(TOP, "t"))

import testbed as tb  # noqa: E402

from flux_pam_service.systemd import enforcement, properties  # noqa: E402
from flux_pam_service.systemd.client import (  # noqa: E402
    MANAGER,
    MANAGER_PATH,
    SYSTEMD,
    Systemd,
)
from flux_pam_service.systemd.user_slice import UserSlice  # noqa: E402

RESULTS = os.path.join(TOP, "bench", "results")
SLICE = "user-1000.slice"
CPU_PROPS = {"AllowedCPUs": "0-1", "AllowedMemoryNodes": "0"}
UNION = {
    "AllowedCPUs": "0-1",
    "AllowedMemoryNodes": "0",
    "DeviceAllow": "/dev/null rw,/dev/zero rw",
    "DevicePolicy": "closed",
}


def stats(samples: list, cpu: float = 0.0) -> dict:
    s = sorted(samples)
    p95 = s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]
    return {
        "n": len(s),
        "median_ms": round(statistics.median(s) * 1000, 3),
        "p95_ms": round(p95 * 1000, 3),
        "min_ms": round(s[0] * 1000, 3),
        # CPU time of this process per call: the client library's own cost
        "client_cpu_us": round(cpu * 1e6, 1),
    }


def timeit(fn, n: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    c0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return stats(samples, (time.process_time() - c0) / n)


def timeit_round_robin(fns: dict, n: int, warmup: int = 5) -> dict:
    """Time each of *fns* (name -> callable) n times, taking turns."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict = {name: [] for name in fns}
    cpu: dict = {name: 0.0 for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
            cpu[name] += time.process_time() - c0
    return {name: stats(samples[name], cpu[name] / n) for name in fns}


def table(rows: dict, title: str) -> str:
    out = [
        title,
        f"{'operation':<34} {'n':>5} {'median ms':>10} {'p95 ms':>9}"
        f" {'client cpu us':>14}",
    ]
    for name, r in rows.items():
        if "skipped" in r:
            out.append(f"{name:<34} {'-':>5} {'skipped: ' + r['skipped']}")
        else:
            out.append(
                f"{name:<34} {r['n']:>5} {r['median_ms']:>10} {r['p95_ms']:>9}"
                f" {r['client_cpu_us']:>14}"
            )
    return "\n".join(out)


def write(kind: str, data: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}.json")
    for name in (path, os.path.join(RESULTS, f"{kind}-latest.json")):
        with open(name, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
    return path


def container_sleeper(bed: tb.Testbed) -> tuple:
    """A long sleep in the container; return (unit, container pid)."""
    unit = f"flux-pam-bench-{os.getpid()}.service"
    subprocess.run(
        ["systemd-run", "-M", bed.name, "--quiet", "--collect", f"--unit={unit}"]
        + ["--service-type=exec", "--", "sleep", "3600"],
        check=True,
    )
    out = subprocess.run(
        ["systemctl", "-M", bed.name, "show", "-P", "MainPID", unit],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return unit, int(out)


# ------------------------------------------------------------------ floor


def bench_floor(bed: tb.Testbed, n: int, slice_n: int) -> dict:
    rows: dict = {}
    sd = Systemd(bed.address, timeout=10)
    cpu = properties.to_dbus(CPU_PROPS)
    rows["GetUnit"] = timeit(lambda: sd.get_unit("init.scope"), n)
    rows["GetUnitProcesses"] = timeit(lambda: sd.unit_processes("init.scope"), n)
    rows["SetUnitProperties"] = timeit(lambda: sd.set_unit_properties(SLICE, cpu), n)

    unit, pid = container_sleeper(bed)
    counter = iter(range(10**9))

    def transient() -> None:
        sd.start_transient_scope(
            f"flux-pam-bench-{os.getpid()}-{next(counter)}.scope", SLICE, [pid]
        )

    try:
        rows["StartTransientUnit"] = timeit(transient, n)
    finally:
        subprocess.run(["systemctl", "-M", bed.name, "kill", "-s", "KILL", unit])
        sd.kill_unit(SLICE, "all", 9)

    us = UserSlice(sd, 1000, "alice", linger_dir=bed.root + "/var/lib/systemd/linger")
    us.teardown(kill=True, grace=5)
    rows["UserSlice.apply"] = timeit(lambda: us.apply(UNION), n)

    root = bed.env()["FLUX_PAM_TESTBED_CGROUP"]

    def read_back() -> None:
        enforcement.compare(UNION, us.read_back(root, UNION))

    def apply_read_back() -> None:
        us.apply(UNION)
        read_back()

    us.prepare(UNION)  # user@1000 runs: the slice's cgroup exists
    verdict = enforcement.compare(UNION, us.read_back(root, UNION))
    rows.update(
        timeit_round_robin(
            {
                "slice update without read-back": lambda: us.apply(UNION),
                "slice update with read-back": apply_read_back,
                "read-back alone": read_back,
            },
            n,
        )
    )
    rows["read-back alone"]["verdict"] = verdict.to_dict()
    us.teardown(kill=True, grace=5)
    prep, tear = [], []
    c0 = time.process_time()
    for _ in range(slice_n):
        t0 = time.perf_counter()
        us.prepare(UNION)
        t1 = time.perf_counter()
        us.teardown(kill=True, grace=5)
        t2 = time.perf_counter()
        prep.append(t1 - t0)
        tear.append(t2 - t1)
    cpu = (time.process_time() - c0) / slice_n
    rows["UserSlice.prepare (+user@ start)"] = stats(prep)
    rows["UserSlice.teardown (+user@ stop)"] = stats(tear)
    rows["UserSlice.prepare + teardown"] = stats(
        [a + b for a, b in zip(prep, tear)], cpu
    )
    sd.close()
    return rows


# ------------------------------------------------------------------ libraries


def lib_jeepney(address: str, n: int) -> dict:
    import jeepney

    sd = Systemd(address, timeout=10)
    cpu = properties.to_dbus(CPU_PROPS)
    return {
        "version": getattr(jeepney, "__version__", "?"),
        "GetUnit": timeit(lambda: sd.get_unit("init.scope"), n),
        "SetUnitProperties": timeit(lambda: sd.set_unit_properties(SLICE, cpu), n),
    }


def lib_dbus_python(address: str, n: int) -> dict:
    import dbus

    bus = dbus.bus.BusConnection(address)
    mgr = dbus.Interface(bus.get_object(SYSTEMD, MANAGER_PATH), MANAGER)
    cpu = dbus.Array(
        [
            ("AllowedCPUs", dbus.Array([dbus.Byte(3)], signature="y")),
            ("AllowedMemoryNodes", dbus.Array([dbus.Byte(1)], signature="y")),
        ],
        signature="(sv)",
    )
    return {
        "version": dbus.__version__,
        "GetUnit": timeit(lambda: mgr.GetUnit("init.scope", timeout=10), n),
        "SetUnitProperties": timeit(
            lambda: mgr.SetUnitProperties(SLICE, True, cpu, timeout=10), n
        ),
    }


def lib_dbus_fast(address: str, n: int) -> dict:
    import dbus_fast
    from dbus_fast import Message, Variant
    from dbus_fast.aio import MessageBus

    async def run() -> dict:
        bus = await MessageBus(bus_address=address).connect()

        async def get_unit() -> None:
            await bus.call(
                Message(
                    destination=SYSTEMD,
                    path=MANAGER_PATH,
                    interface=MANAGER,
                    member="GetUnit",
                    signature="s",
                    body=["init.scope"],
                )
            )

        props = [
            ["AllowedCPUs", Variant("ay", b"\x03")],
            ["AllowedMemoryNodes", Variant("ay", b"\x01")],
        ]

        async def set_props() -> None:
            await bus.call(
                Message(
                    destination=SYSTEMD,
                    path=MANAGER_PATH,
                    interface=MANAGER,
                    member="SetUnitProperties",
                    signature="sba(sv)",
                    body=[SLICE, True, props],
                )
            )

        async def atimeit(fn) -> dict:
            for _ in range(5):
                await fn()
            samples = []
            c0 = time.process_time()
            for _ in range(n):
                t0 = time.perf_counter()
                await fn()
                samples.append(time.perf_counter() - t0)
            return stats(samples, (time.process_time() - c0) / n)

        out = {"GetUnit": await atimeit(get_unit)}
        out["SetUnitProperties"] = await atimeit(set_props)
        bus.disconnect()
        return out

    res = asyncio.run(run())
    from importlib.metadata import version

    res["version"] = version("dbus-fast")
    res["note"] = "asyncio only (no blocking API); " + dbus_fast.__name__
    return res


def lib_sdbus(address: str, n: int) -> dict:
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
    from importlib.metadata import version

    import sdbus

    bus = sdbus.sd_bus_open_system()

    def get_unit() -> None:
        msg = bus.new_method_call_message(SYSTEMD, MANAGER_PATH, MANAGER, "GetUnit")
        msg.append_data("s", "init.scope")
        bus.call(msg).get_contents()

    def set_props() -> None:
        msg = bus.new_method_call_message(
            SYSTEMD, MANAGER_PATH, MANAGER, "SetUnitProperties"
        )
        msg.append_data(
            "sba(sv)",
            SLICE,
            True,
            [("AllowedCPUs", ("ay", b"\x03")), ("AllowedMemoryNodes", ("ay", b"\x01"))],
        )
        bus.call(msg).get_contents()

    return {
        "version": version("sdbus"),
        "GetUnit": timeit(get_unit, n),
        "SetUnitProperties": timeit(set_props, n),
    }


LIBS = {
    "jeepney": lib_jeepney,
    "dbus-python": lib_dbus_python,
    "dbus-fast": lib_dbus_fast,
    "sdbus": lib_sdbus,
}


def bench_libs(bed: tb.Testbed, n: int) -> dict:
    out = {}
    for name, fn in LIBS.items():
        try:
            out[name] = fn(bed.address, n)
        except ImportError as exc:
            out[name] = {"skipped": f"not importable ({exc.name})"}
        except Exception as exc:  # a library that fails is a result too
            out[name] = {"skipped": f"{type(exc).__name__}: {exc}"}
    return out


# ------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=300, help="calls per D-Bus operation")
    ap.add_argument("--slice-n", type=int, default=20, help="prepare/teardown cycles")
    ap.add_argument("--libs", action="store_true", help="compare D-Bus libraries")
    args = ap.parse_args()
    ok, why = tb.can_run()
    name = os.environ.get("FLUX_PAM_TESTBED")
    bed = tb.attach(name) if name else None
    own = bed is None
    if own:
        if not ok:
            print(f"dbus_floor: skipped: {why}")
            return 0
        bed = tb.up(f"flux-pam-bench-{os.getpid()}")
    meta = {
        "python": sys.version.split()[0],
        "testbed": bed.name,
        "systemd": subprocess.run(
            ["busctl", f"--address={bed.address}", "get-property", SYSTEMD]
            + [MANAGER_PATH, MANAGER, "Version"],
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .removeprefix("s ")
        .strip('"'),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }
    try:
        if args.libs:
            res = bench_libs(bed, args.n)
            lines = []
            for lib, r in res.items():
                if "skipped" in r:
                    lines.append(f"{lib:<14} skipped: {r['skipped']}")
                    continue
                g, s = r["GetUnit"], r["SetUnitProperties"]
                lines.append(
                    f"{lib + ' ' + r['version']:<20} GetUnit {g['median_ms']:>6} / "
                    f"{g['p95_ms']:>6} ms, {g['client_cpu_us']:>5} us cpu   "
                    f"SetUnitProperties {s['median_ms']:>6} / {s['p95_ms']:>6} ms, "
                    f"{s['client_cpu_us']:>5} us cpu"
                )
            lines.insert(0, f"median / p95 per call, client CPU per call, n={args.n}")
            print("\n".join(lines))
            print(write("dbus-libs", {"meta": meta, "results": res}))
        else:
            rows = bench_floor(bed, args.n, args.slice_n)
            load = ", ".join(f"{x:.1f}" for x in meta["loadavg"])
            title = f"systemd {meta['systemd']} in {bed.name}, from host; load {load}"
            print(table(rows, title))
            print(write("dbus_floor", {"meta": meta, "results": rows}))
    finally:
        if own:
            tb.down(bed.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared helpers of the benchmarks in bench/.

Every benchmark script prints a table, writes its figures as JSON and draws
a PNG (matplotlib, Agg backend) into bench/results/ (BENCH_RESULTS
overrides).  The report code (table and plot) of each script is a plain
function of the JSON it writes, so t/unit/test_bench_report.py runs it on
synthetic numbers.

Test instances are started the way sharness/sharness.d/flux-pam.sh does:
``flux start --test-size=N -c CONFDIR`` with this tree's module directory on
FLUX_MODULE_PATH_PREPEND and its modprobe files on FLUX_MODPROBE_PATH_APPEND,
so the ``pam`` module is loaded by modprobe whenever the config has a
``[pam]`` table; an instance of root runs in t/node-view (its own
/run/flux-pam, the test bed's cgroup2 tree).  Jobs of other users are their
own, submitted as them (t/guestjobs.py; GUESTS_TOML lets them run).  The
measuring code runs inside the instance as the initial program (``flux
python SCRIPT --inner ...``) and hands its figures back in a JSON file.

Interface:
    TOP, RESULTS, LOGDIR
    summary(samples) -> {"n", "median", "p95", "min", "max", "mean"}
    percentile(sorted_samples, q) -> float
    ratio(a, b) -> float | None
    format_table(title, headers, rows) -> str
    write_json(kind, data) -> path;  results_path(kind, ext) -> path
    plot_path(kind) -> path; have_matplotlib() -> bool
    machine() -> dict (nproc, cpu model, kernel, load, flux version)
    find_flux() -> path | None
    instance_env(extra) -> dict
    flux_start(size, conf, argv, ...) -> CompletedProcess
    run_inner(script, name, args, size, tomls, ...) -> dict  (inner's JSON)
    Inner(script, name, args, size, tomls, ...)  the same in the background;
                                    .wait() -> dict
    inner_main(table) -> int        the inner side's argument parsing
    ForkCounter(roots)              process forks in a process tree (proc
                                    connector, root only)
    module_pid(broker_pid, name) -> pid | None
    cpu_seconds(pid) -> float; rss_bytes(pid) -> int
    testbed(keep) -> context manager giving the test bed env (or None)
    GUESTS_TOML                     config letting guests' jobs run (testexec)
"""

import contextlib
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.environ.get("BENCH_RESULTS", os.path.join(TOP, "bench", "results"))
LOGDIR = os.path.join(RESULTS, "tmp")
FLUX_CANDIDATES = ("/opt/flux/bin/flux", "/usr/src/flux-core/src/cmd/flux")
NODE_VIEW = os.path.join(TOP, "t", "node-view")
#: guests' jobs run under the test execution (t/guestjobs.py)
GUESTS_TOML = "[exec.testexec]\nallow-guests = true\n"

# ------------------------------------------------------------------ numbers


def percentile(s: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of sorted *s*, nearest rank."""
    if not s:
        raise ValueError("no samples")
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summary(samples: Sequence[float]) -> Dict[str, Any]:
    """n, median, p95, min, max, mean of *samples* (same unit as given)."""
    s = sorted(samples)
    if not s:
        return {"n": 0}
    return {
        "n": len(s),
        "median": statistics.median(s),
        "p95": percentile(s, 0.95),
        "min": s[0],
        "max": s[-1],
        "mean": statistics.fmean(s),
    }


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: numbers rounded, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]
) -> str:
    """A plain-text table, columns right-aligned except the first."""
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: List[str]) -> str:
        out = [r[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([title, line(cells[0]), sep] + [line(r) for r in cells[1:]])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ------------------------------------------------------------------ files


def stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S")


def results_path(kind: str, ext: str, when: Optional[str] = None) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    return os.path.join(RESULTS, f"{kind}-{when or stamp()}.{ext}")


def write_json(kind: str, data: dict, when: Optional[str] = None) -> str:
    path = results_path(kind, "json", when)
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    latest = os.path.join(RESULTS, f"{kind}-latest.json")
    with open(latest, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def have_matplotlib() -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        return True
    except ImportError:
        return False


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_plot(fig: Any, kind: str, when: Optional[str] = None) -> str:
    """Save *fig* as RESULTS/KIND-WHEN.png and KIND-latest.png."""
    path = results_path(kind, "png", when)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    fig.savefig(os.path.join(RESULTS, f"{kind}-latest.png"), dpi=90)
    pyplot().close(fig)
    return path


# ------------------------------------------------------------------ machine


def find_flux() -> Optional[str]:
    for f in (os.environ.get("FLUX"),) + FLUX_CANDIDATES:
        if f and os.access(f, os.X_OK):
            return f
    return None


def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flux = find_flux()
    version = None
    if flux:
        out = subprocess.run([flux, "version"], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            if line.startswith("commands:"):
                version = line.split()[-1]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "flux": flux,
        "flux_version": version,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# ------------------------------------------------------------------ instances


def instance_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of a test instance with this tree's module."""
    env = dict(os.environ)
    env["FLUX_MODULE_PATH_PREPEND"] = os.path.join(TOP, "modules")
    env["FLUX_MODPROBE_PATH_APPEND"] = os.path.join(TOP, "etc", "flux", "modprobe")
    py = [TOP, os.path.join(TOP, "bench"), os.path.join(TOP, "t")]
    if env.get("PYTHONPATH"):
        py.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = ":".join(py)
    env.update(extra or {})
    return env


def write_conf(tomls: Dict[str, str], owner: Optional[str] = None) -> str:
    """A config directory holding *tomls* ({filename: text})."""
    d = tempfile.mkdtemp(prefix="flux-pam-bench-conf.")
    for name, text in tomls.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    if owner:
        subprocess.run(["chown", "-R", owner, d], check=True)
    os.chmod(d, 0o755)
    return d


def flux_start_argv(
    size: int, confdir: str, argv: Sequence[str], log: str, rundir: str = None
) -> List[str]:
    flux = find_flux()
    if flux is None:
        raise RuntimeError("flux-core not found (FLUX, /opt/flux/bin/flux)")
    start = [
        flux,
        "start",
        f"--test-size={size}",
        "-c",
        confdir,
        f"-Slog-filename={log}",
        "-Slog-level=6",
    ]
    if rundir:
        start += [f"--test-rundir={rundir}", "--test-rundir-cleanup"]
    return start + list(argv)


class Inner:
    """``SCRIPT --inner NAME`` running inside a test instance (background).

    The inner side gets *args* as JSON and writes its result to a file
    (inner_main); wait() returns that JSON.  *user*: start the instance as
    that user (runuser).  *rundir*: the brokers' run directory (it must
    exist; flux start removes what is in it at the end).  The broker log is
    LOGDIR/TAG.broker.log.
    """

    def __init__(
        self,
        script: str,
        name: str,
        args: dict,
        size: int,
        tomls: Dict[str, str],
        env: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        tag: Optional[str] = None,
        rundir: Optional[str] = None,
    ) -> None:
        os.makedirs(LOGDIR, exist_ok=True)
        tag = tag or name
        self.label = f"{os.path.basename(script)} {tag}"
        self.out = os.path.join(LOGDIR, f"{tag}-{os.getpid()}.json")
        self.log = os.path.join(LOGDIR, f"{tag}.broker.log")
        for p in (self.out, self.log):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        self.conf = write_conf(tomls, owner=user)
        flux = find_flux()
        inner = [flux, "python", script, "--inner", name, "--args", json.dumps(args)]
        inner += ["--out", self.out]
        argv = flux_start_argv(size, self.conf, inner, self.log, rundir)
        if user:
            os.chmod(LOGDIR, 0o777)
            argv = ["runuser", "-u", user, "--"] + argv
        elif os.geteuid() == 0:
            argv = [NODE_VIEW] + argv
        self.proc = subprocess.Popen(
            argv, env=instance_env(env), stdin=subprocess.DEVNULL
        )

    def wait(self, timeout: float = 1800) -> dict:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            rc = self.proc.wait()
        finally:
            subprocess.run(["rm", "-rf", self.conf])
        if not os.path.exists(self.out):
            raise RuntimeError(
                f"{self.label}: no result (flux start exit {rc}; broker log {self.log})"
            )
        with open(self.out) as f:
            data = json.load(f)
        os.unlink(self.out)
        if "error" in data:
            raise RuntimeError(f"{self.label}: {data['error']}")
        data["flux_start_rc"] = rc
        return data


def run_inner(
    script: str,
    name: str,
    args: dict,
    size: int,
    tomls: Dict[str, str],
    env: Optional[Dict[str, str]] = None,
    user: Optional[str] = None,
    tag: Optional[str] = None,
    timeout: float = 1800,
) -> dict:
    """Run ``SCRIPT --inner NAME`` inside a test instance; return its JSON."""
    return Inner(script, name, args, size, tomls, env, user, tag).wait(timeout)


def inner_main(table: Dict[str, Callable[[dict], dict]]) -> Optional[int]:
    """If argv asks for an inner run, do it and return the exit code."""
    if "--inner" not in sys.argv:
        return None
    import argparse
    import traceback

    ap = argparse.ArgumentParser()
    ap.add_argument("--inner", required=True, choices=sorted(table))
    ap.add_argument("--args", default="{}")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    try:
        data = table[a.inner](json.loads(a.args))
    except Exception as exc:
        traceback.print_exc()
        data = {"error": f"{type(exc).__name__}: {exc}"}
    with open(a.out, "w") as f:
        json.dump(data, f)
    return 0


# ------------------------------------------------------------------ processes


def _proc_stat(pid: int) -> List[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """CPU time of *pid*, all its live threads (schedstat, nanoseconds);
    without schedstat, user + system time from /proc/PID/stat (ticks)."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        fields = _proc_stat(pid)
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for {pid}")


def children(pid: int) -> List[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(_proc_stat(int(d))[1]) == pid:
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def module_pid(broker_pid: int, name: str = "pam") -> Optional[int]:
    """The process of Python broker module *name* (flux-module-exec child)."""
    for pid in children(broker_pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        words = [os.path.basename(a.decode(errors="replace")) for a in argv]
        if any("module" in w and "exec" in w for w in words) and (
            name in words or f"{name}.py" in words
        ):
            return pid
    return None


class ForkCounter:
    """Count process forks below *roots* with the kernel's proc connector.

    Every fork whose parent belongs to the tree (the roots and their
    descendants seen since start()) is counted, by parent; thread creation
    is not a fork and is ignored.  Needs CAP_NET_ADMIN (root).  ``lost`` is
    set if the socket overflowed (counts are then a lower bound).
    """

    NETLINK_CONNECTOR = 11
    CN_IDX_PROC = 1
    PROC_CN_MCAST_LISTEN = 1
    PROC_CN_MCAST_IGNORE = 2
    PROC_EVENT_FORK = 1

    def __init__(self, roots: Sequence[int]) -> None:
        self.tree = set(roots)
        self.by_parent: Dict[int, int] = {}
        self.total = 0
        self.lost = False
        self.sock: Optional[socket.socket] = None
        self.thread: Optional[threading.Thread] = None
        self.running = False

    def _control(self, op: int) -> None:
        assert self.sock is not None
        cn = struct.pack("=IIIIHH", self.CN_IDX_PROC, 1, 0, 0, 4, 0)
        payload = cn + struct.pack("=I", op)
        hdr = struct.pack("=IHHII", 16 + len(payload), 3, 0, 0, os.getpid())
        self.sock.send(hdr + payload)

    def start(self) -> "ForkCounter":
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, self.NETLINK_CONNECTOR)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind((0, self.CN_IDX_PROC))
        s.settimeout(0.2)
        self.sock = s
        self._control(self.PROC_CN_MCAST_LISTEN)
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self) -> None:
        assert self.sock is not None
        while self.running:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self.lost = True
                continue
            off = 0
            while off + 16 <= len(data):
                nl_len = struct.unpack_from("=I", data, off)[0]
                if nl_len < 16:
                    break
                self._event(data, off + 16)
                off += (nl_len + 3) & ~3

    def _event(self, data: bytes, off: int) -> None:
        off += 20  # struct cn_msg
        if off + 32 > len(data):
            return
        what = struct.unpack_from("=I", data, off)[0]
        if what != self.PROC_EVENT_FORK:
            return
        _ppid, ptgid, cpid, ctgid = struct.unpack_from("=IIII", data, off + 16)
        if cpid != ctgid or ptgid not in self.tree:
            return
        self.tree.add(ctgid)
        self.total += 1
        self.by_parent[ptgid] = self.by_parent.get(ptgid, 0) + 1

    def snapshot(self) -> Dict[str, Any]:
        return {"total": self.total, "by_parent": dict(self.by_parent)}

    def stop(self) -> None:
        self.running = False
        if self.thread:
            self.thread.join(2)
        if self.sock:
            with contextlib.suppress(OSError):
                self._control(self.PROC_CN_MCAST_IGNORE)
            self.sock.close()


# ------------------------------------------------------------------ test bed


BENCH_USERS = range(1002, 1008)  # bench0..5, next to alice (1000), bob (1001)


def add_users(bed: Any) -> None:
    """Users 1002-1007 in the container (its root is a volatile overlay)."""
    for uid in BENCH_USERS:
        r = bed.run(["getent", "passwd", str(uid)])
        if r.returncode != 0:
            bed.run(["useradd", "--uid", str(uid), "--user-group", f"bench{uid}"])


@contextlib.contextmanager
def testbed(keep: bool = False) -> Iterator[Optional[Any]]:
    """The systemd test bed: the one exported (FLUX_PAM_TESTBED and
    DBUS_SYSTEM_BUS_ADDRESS), else one of our own, brought down afterwards
    unless *keep*.  Yields None (with the reason on stderr) if none can run.
    """
    sys.path.insert(0, os.path.join(TOP, "t"))
    import testbed as tb

    name = os.environ.get("FLUX_PAM_TESTBED")
    bed = (
        tb.attach(name) if name and os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") else None
    )
    own = bed is None
    if own:
        ok, why = tb.can_run()
        if not ok:
            print(f"bench: no systemd test bed: {why}", file=sys.stderr)
            yield None
            return
        bed = tb.up("flux-pam-bench")
    try:
        add_users(bed)
        yield bed
    finally:
        if own and not keep:
            tb.down(bed.name)


def publish(
    kind: str,
    data: dict,
    report: Callable[[dict], str],
    plot: Callable[[dict, str], str],
) -> int:
    """Stamp *data* with the machine, print its table, write its JSON and plot.

    Returns 0, the exit code of a benchmark that got this far.
    """
    data["machine"] = machine()
    when = stamp()
    print(report(data))
    print(write_json(kind, data, when))
    if have_matplotlib():
        print(plot(data, when))
    return 0

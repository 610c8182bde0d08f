#!/usr/bin/python3
"""The systemd test bed: a Debian bookworm tree booted with systemd-nspawn.

systemd 252 runs as PID 1 in a container; tests talk to it over its system
bus, whose socket directory is bind-mounted to the host.  Never a mock.

CLI (run as root):
    t/testbed.py can-run                  exit 0 if a test bed can run here, else
                                          print the reason and exit 1
    t/testbed.py build                    build (or reuse) the cached tree
    t/testbed.py up [--name N] [--repo D] boot a container, print `export ...` lines
    t/testbed.py down [--name N]          stop it and remove what `up` left
    t/testbed.py run [--name N] [--uid U] [--setenv K=V]... [--chdir D] -- CMD...
                                          run CMD inside; its exit code is passed on
    t/testbed.py status [--name N]        print the state of a test bed

Module interface (other tiers import it):
    can_run() -> (bool, reason)
    build(log=print) -> str                          path of the cached tree
    up(name=DEFAULT_NAME, repo=REPO, cpuset=None) -> Testbed
                                                     boot, or reuse a running one;
                                                     cpuset None: as the switch says
    attach(name=DEFAULT_NAME) -> Testbed | None      a running test bed, or None
    down(name=DEFAULT_NAME) -> None
    Testbed: .name .address .root .leader .pid .tree .repo .rundir .share
             .shared_repo (the repo inside, for any uid: SHARED_REPO)
             .cpuset ("on", or "off: " and why)
             .env() -> dict of the variables `up` prints
             .run(argv, uid=None, env=None, cwd=None, input=None, timeout=120)
                 -> subprocess.CompletedProcess (stdout/stderr as text)

Tree: mmdebstrap --variant=minbase of bookworm with PACKAGES and the Debian
packages of the libraries libflux-core needs (``ldd``, when flux-core is in
FLUX_PREFIX), users flux (system), alice (1000), bob (1001).  It is cached
under CACHE_DIR in a directory named after a hash of the recipe (packages,
SETUP_HOOKS, suite), so
a changed recipe rebuilds; it is built into a temporary directory and renamed
into place.  The apt sources are read at run time from the host's apt
configuration (/etc/apt/sources.list and sources.list.d/*.list|*.sources,
entries for the bookworm suites only), so no mirror is named here.

Boot: SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -D TREE -M NAME -b
--register=no --keep-unit --private-network --console=passive
--system-call-filter=bpf --bind=RUNDIR/dbus:/run/dbus
--bind=RUNDIR/share:SHARE_DIR --bind-ro=REPO --bind-ro=REPO:SHARED_REPO
--bind-ro=FLUX_PREFIX --volatile=overlay (FLUX_PREFIX only for the test
bed's own tree, when flux-core is there: pam_flux.so, built in the repo,
links libflux-core).  The repo is bound at its own path (root's commands
name host paths) and at SHARED_REPO, which every uid can reach: a checkout
below a directory only root may enter (/root is 0700 on Debian) is
unreachable to other uids at its own path, in the container as on the
host, so code run as another uid is run from SHARED_REPO.
--volatile=overlay puts a tmpfs overlay over the read-only tree, so a test
never dirties the cache and boot costs no copy.
nspawn runs in its own cgroup2 directory (CGROUP_ROOT/NAME) so two test beds
do not share a cgroup and `down` can kill whatever is left.

`up` then waits for the manager's SystemState to be running (or degraded:
failed units are printed) and writes /run/systemd/machines/NAME with the
container's leader PID, so `systemctl -M NAME` and `systemd-run -M NAME` work.

Measured on the 2-core VM: a cold build takes about 63 s (mmdebstrap,
packages fetched from the host's mirror); `up` from the cached tree boots to
SystemState=running in 0.65-0.8 s; `up` of a test bed already up takes 0.1 s;
`run` costs about 0.15 s per command; `down` 0.4 s.

cpuset (the switch FLUX_PAM_TESTBED_CPUSET=1, which .ci/run sets).  On
machines of this kind the kernel's cpuset controller is bound to a cgroup v1
hierarchy (/sys/fs/cgroup/cpuset) that holds only its root cgroup, so the
cgroup2 hierarchy, and with it systemd in the container, has no cpuset and
AllowedCPUs is stored but not enforced.  With the switch, `up` hands cpuset
to cgroup2 before the container boots: it unmounts the v1 hierarchy (which
frees the controller), then writes +cpuset to cgroup.subtree_control of the
cgroup2 root, of CGROUP_ROOT and of CGROUP_ROOT/NAME, so that NAME/payload,
where systemd-nspawn runs the container, has cpuset from its first process
on.  It does so only when the v1 hierarchy is mounted once, at
/sys/fs/cgroup/cpuset, has no cgroup of its own, and nothing else uses it:
an unmount that fails (a process holds a file there) leaves it alone, and a
hierarchy that outlives its unmounting (held through another mount or a
file of a detached one) is mounted back at once.  Otherwise the test bed
boots without cpuset and Testbed.cpuset says why.  Test beds share the
hand-over: RUN_DIR/cpuset.json, under the flock RUN_DIR/cpuset.lock, lists
the beds holding it (name and the PID that keeps it, pruned when that PID is
gone) and what was changed; the
`down` of the last holder removes +cpuset from the subtree_control files the
hand-over changed and mounts the v1 hierarchy again.  Without the switch
nothing on the host changes (a bed booted then has no cpuset, even while
another bed holds the hand-over).

Environment: FLUX_PAM_TESTBED_CACHE overrides CACHE_DIR; FLUX_PAM_TESTBED is the
default --name (else DEFAULT_NAME); FLUX_PAM_TESTBED_REPO the default --repo;
FLUX_PAM_TESTBED_CPUSET=1 the cpuset switch (above).  `up` also exports
FLUX_PAM_TESTBED_CGROUP, the container's cgroup2 root seen from the host
(t/node-view shows it to a test instance of Flux in place of the host's
cgroup2 tree).
"""

import argparse
import contextlib
import dataclasses
import errno
import fcntl
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, List, Optional, Sequence

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "polkitd",
    "pamtester",
    "libasan8",  # the sanitizer build of pam_flux.so (gcc 12's runtimes)
    "libubsan1",
    "python3",
    "python3-jeepney",
    "python3-pytest",
    "procps",
]
# customize hooks run on the host with the tree as "$1"
SETUP_HOOKS = [
    'chroot "$1" useradd --system --user-group --home-dir /var/lib/flux'
    " --create-home --shell /usr/sbin/nologin flux",
    'chroot "$1" useradd --create-home --uid 1000 --user-group --shell /bin/bash alice',
    'chroot "$1" useradd --create-home --uid 1001 --user-group --shell /bin/bash bob',
    # no login prompt on the passive console; nothing else to fail at boot
    'chroot "$1" systemctl mask console-getty.service getty@.service'
    " systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer"
    " e2scrub_all.timer fstrim.timer",
    'chroot "$1" systemctl set-default multi-user.target',
    'rm -f "$1"/etc/machine-id && touch "$1"/etc/machine-id',
]
RECIPE_VERSION = 1

DEFAULT_NAME = "flux-pam-test"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_REPO = "/srv/flux-pam-service"
CACHE_DIR = os.environ.get("FLUX_PAM_TESTBED_CACHE", "/var/cache/flux-pam-test")
RUN_DIR = "/run/flux-pam-test"
# flux-core: bind-mounted read-only into the default test bed, where
# pam_flux.so (built against it) finds libflux-core
FLUX_PREFIX = os.environ.get("FLUX_PAM_NODE_FLUX", "/opt/flux")
# RUNDIR/share on the host is SHARE_DIR inside: sockets of stand-in brokers
SHARE_DIR = "/run/flux-pam-share"
MACHINES_DIR = "/run/systemd/machines"
CGROUP_ROOT = "/sys/fs/cgroup/unified/flux-pam-test"
CGROUP2_CANDIDATES = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
CPUSET_SWITCH = "FLUX_PAM_TESTBED_CPUSET"
V1_CPUSET = "/sys/fs/cgroup/cpuset"
CPUSET_STATE = os.path.join(RUN_DIR, "cpuset.json")
CPUSET_LOCK = os.path.join(RUN_DIR, "cpuset.lock")
BOOT_TIMEOUT = 60.0
MANAGER_ARGS = [
    "org.freedesktop.systemd1",
    "/org/freedesktop/systemd1",
    "org.freedesktop.systemd1.Manager",
]

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _dpkg_owner_paths(path: str) -> List[str]:
    """Spellings under which dpkg may have recorded *path* (usrmerge)."""
    real = os.path.realpath(path)
    cands = [path, real]
    for p in (path, real):
        if p.startswith("/usr/"):
            cands.append(p[4:])
        else:
            cands.append("/usr" + p)
    return list(dict.fromkeys(cands))


def runtime_packages(
    files: Sequence[str], prefix: str, log: Log = _stderr
) -> List[str]:
    """Debian packages holding the libraries ldd lists for ELF *files*,
    except those under *prefix* (which is bind-mounted); cached by the
    files' sizes and mtimes."""
    key = hashlib.sha256(
        json.dumps(
            [(f, os.stat(f).st_size, int(os.stat(f).st_mtime)) for f in files]
        ).encode()
    ).hexdigest()[:16]
    cache = os.path.join(CACHE_DIR, f".ldd-{key}.json")
    try:
        with open(cache) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    libs = set()
    missing = set()
    for path in files:
        p = subprocess.run(["ldd", path], capture_output=True, text=True)
        for line in p.stdout.splitlines():
            if "=>" not in line:
                continue
            name, _, rest = line.partition("=>")
            target = rest.strip().split(" (")[0].strip()
            if target == "not found":
                missing.add(name.strip())
            elif target.startswith("/") and not target.startswith(prefix + "/"):
                libs.add(target)
    if missing:
        log(f"testbed: ldd finds no {', '.join(sorted(missing))} (ignored)")
    spellings = {lib: _dpkg_owner_paths(lib) for lib in libs}
    p = subprocess.run(
        ["dpkg", "-S", *sorted({c for cands in spellings.values() for c in cands})],
        capture_output=True,
        text=True,
    )
    owner = {}
    for line in p.stdout.splitlines():
        pkgs_, _, path = line.partition(": ")
        owner[path.strip()] = [x.split(":")[0].strip() for x in pkgs_.split(",")]
    pkgs = set()
    for lib in sorted(libs):
        found = [owner[c] for c in spellings[lib] if c in owner]
        if not found:
            raise OSError(errno.ENOENT, f"testbed: no Debian package owns {lib}")
        pkgs.update(found[0])
    out = sorted(pkgs)
    os.makedirs(CACHE_DIR, exist_ok=True)
    with open(cache + ".tmp", "w") as f:
        json.dump(out, f)
    os.rename(cache + ".tmp", cache)
    return out


def flux_libraries() -> List[str]:
    """libflux-core in FLUX_PREFIX, which pam_flux.so links (none: [])."""
    found = glob.glob(os.path.join(FLUX_PREFIX, "lib", "libflux-core.so*"))
    return sorted(p for p in found if not os.path.islink(p) and is_elf(p))


def packages() -> List[str]:
    """PACKAGES and the run-time libraries of libflux-core (pam_flux.so
    loads it from the bind-mounted FLUX_PREFIX)."""
    libs = flux_libraries()
    extra = runtime_packages(libs, FLUX_PREFIX) if libs else []
    return sorted(set(PACKAGES) | set(extra))


def tree_name() -> str:
    """Name of the cached tree for the current recipe."""
    recipe = json.dumps(
        [RECIPE_VERSION, SUITE, VARIANT, packages(), SETUP_HOOKS]
    ).encode()
    return f"{SUITE}-{hashlib.sha256(recipe).hexdigest()[:12]}"


def tree_path() -> str:
    return os.path.join(CACHE_DIR, tree_name())


def _cgroup2_mount() -> Optional[str]:
    for path in CGROUP2_CANDIDATES:
        if os.path.exists(os.path.join(path, "cgroup.subtree_control")):
            return path
    return None


def can_run() -> tuple:
    """Return (True, "") when a test bed can run here, else (False, reason)."""
    if os.geteuid() != 0:
        return False, "the systemd test bed needs root"
    for tool, pkg in (
        ("systemd-nspawn", "systemd-container"),
        ("mmdebstrap", "mmdebstrap"),
        ("systemd-run", "systemd"),
        ("busctl", "systemd"),
    ):
        if shutil.which(tool) is None:
            return False, f"{tool} not found (Debian package {pkg})"
    if _cgroup2_mount() is None:
        return False, "no cgroup2 hierarchy mounted on the host"
    if not os.path.isdir(tree_path()) and not _apt_sources():
        return False, "no bookworm apt sources in the host's apt configuration"
    return True, ""


# ---------------------------------------------------------------- build


def _apt_sources() -> str:
    """The host's apt entries for the bookworm suites, as deb822 text."""
    files = []
    if os.path.exists("/etc/apt/sources.list"):
        files.append("/etc/apt/sources.list")
    files += sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    files += sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    out = []
    for path in files:
        with open(path) as f:
            text = f.read()
        if path.endswith(".sources"):
            out += _deb822_entries(text)
        else:
            out += _one_line_entries(text)
    return "\n".join(out)


def _wanted_suite(suite: str) -> bool:
    return suite == SUITE or suite.startswith(SUITE + "-")


def _deb822_entries(text: str) -> list:
    entries = []
    for stanza in text.split("\n\n"):
        fields: dict = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        suites = [s for s in fields.get("suites", "").split() if _wanted_suite(s)]
        if not suites or not fields.get("uris"):
            continue
        lines = [
            "Types: deb",
            f"URIs: {fields['uris']}",
            f"Suites: {' '.join(suites)}",
            f"Components: {fields.get('components', 'main')}",
        ]
        if "signed-by" in fields:
            lines.append(f"Signed-By: {fields['signed-by']}")
        entries.append("\n".join(lines) + "\n")
    return entries


def _one_line_entries(text: str) -> list:
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        opts = ""
        if words and words[0].startswith("["):
            end = next(i for i, w in enumerate(words) if w.endswith("]"))
            opts = " ".join(words[: end + 1]).strip("[]")
            words = words[end + 1 :]
        if len(words) < 2 or not _wanted_suite(words[1]):
            continue
        lines = [
            "Types: deb",
            f"URIs: {words[0]}",
            f"Suites: {words[1]}",
            f"Components: {' '.join(words[2:]) or 'main'}",
        ]
        for opt in opts.split():
            k, _, v = opt.partition("=")
            if k == "signed-by":
                lines.append(f"Signed-By: {v}")
        entries.append("\n".join(lines) + "\n")
    return entries


def build(log: Log = _stderr) -> str:
    """Build the tree for the current recipe unless it is cached; return its path."""
    final = tree_path()
    if os.path.isdir(final):
        return final
    os.makedirs(CACHE_DIR, exist_ok=True)
    with open(os.path.join(CACHE_DIR, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(final):
            return final
        sources = _apt_sources()
        if not sources:
            raise OSError(errno.ENOENT, "no bookworm apt sources on the host")
        tmp = tempfile.mkdtemp(prefix=".build-", dir=CACHE_DIR)
        srcfile = os.path.join(tmp, "sources")
        with open(srcfile, "w") as f:
            f.write(sources)
        target = os.path.join(tmp, "tree")
        cmd = [
            "mmdebstrap",
            f"--variant={VARIANT}",
            "--include=" + ",".join(packages()),
            "--quiet",
        ]
        cmd += [f"--customize-hook={hook}" for hook in SETUP_HOOKS]
        cmd += [SUITE, target, srcfile]
        log(f"testbed: building {final} (mmdebstrap, about a minute)")
        t0 = time.monotonic()
        try:
            subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
            os.rename(target, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"testbed: built {final} in {time.monotonic() - t0:.1f}s")
    return final


# ---------------------------------------------------------------- up / down


@dataclasses.dataclass
class Testbed:
    name: str
    pid: int  # systemd-nspawn on the host
    leader: int  # the container's PID 1, as the host sees it
    tree: str
    repo: str
    rundir: str
    boot_seconds: float = 0.0
    cpuset: str = "off: FLUX_PAM_TESTBED_CPUSET is not set"  # "on", or why not

    @property
    def address(self) -> str:
        return f"unix:path={self.rundir}/dbus/system_bus_socket"

    @property
    def share(self) -> str:
        """The host directory that is SHARE_DIR inside."""
        return os.path.join(self.rundir, "share")

    @property
    def root(self) -> str:
        """The container's root directory, seen from the host."""
        return f"/proc/{self.leader}/root"

    @property
    def shared_repo(self) -> str:
        """The repo inside the container, where every uid can read it."""
        return SHARED_REPO

    def env(self) -> dict:
        return {
            "DBUS_SYSTEM_BUS_ADDRESS": self.address,
            "FLUX_PAM_TESTBED": self.name,
            "FLUX_PAM_TESTBED_ROOT": self.root,
            "FLUX_PAM_TESTBED_REPO": self.repo,
            "FLUX_PAM_TESTBED_CGROUP": os.path.join(
                _cgroup_dir(self.name) or "", "payload"
            ),
        }

    def run(
        self,
        argv: Sequence[str],
        uid: Optional[str] = None,
        env: Optional[dict] = None,
        cwd: Optional[str] = None,
        input: Optional[str] = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess:
        """Run *argv* inside the container; stdout and stderr are captured."""
        return subprocess.run(
            _run_argv(self.name, argv, uid, env, cwd),
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _run_argv(
    name: str,
    argv: Sequence[str],
    uid: Optional[str] = None,
    env: Optional[dict] = None,
    cwd: Optional[str] = None,
) -> list:
    cmd = ["systemd-run", "-M", name, "--wait", "--pipe", "--quiet", "--collect"]
    cmd.append("--service-type=exec")
    if uid is not None:
        cmd.append(f"--uid={uid}")
    for k, v in (env or {}).items():
        cmd.append(f"--setenv={k}={v}")
    if cwd is not None:
        cmd.append(f"--working-directory={cwd}")
    return cmd + ["--", *argv]


def _state_file(name: str) -> str:
    return os.path.join(RUN_DIR, name, "state.json")


def _cmdline(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _is_our_nspawn(pid: int, name: str) -> bool:
    argv = _cmdline(pid)
    return bool(argv) and argv[0].endswith("systemd-nspawn") and name in argv


def _bus_call(address: str, *args: str, timeout: float = 2.0) -> Optional[str]:
    try:
        p = subprocess.run(
            ["busctl", f"--address={address}", "--timeout=1", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def _system_state(address: str) -> Optional[str]:
    out = _bus_call(address, "get-property", *MANAGER_ARGS, "SystemState")
    # busctl prints: s "running"
    if out and out.startswith("s "):
        return out[2:].strip('"')
    return None


def _find_leader(nspawn_pid: int) -> Optional[int]:
    """The descendant of *nspawn_pid* that is PID 1 in its PID namespace."""
    todo = [nspawn_pid]
    while todo:
        pid = todo.pop()
        for task in glob.glob(f"/proc/{pid}/task/*/children"):
            try:
                with open(task) as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            for kid in kids:
                try:
                    with open(f"/proc/{kid}/status") as f:
                        for line in f:
                            if line.startswith("NSpid:"):
                                ns = line.split()[1:]
                                if len(ns) > 1 and ns[-1] == "1":
                                    return kid
                except OSError:
                    continue
                todo.append(kid)
    return None


def attach(name: str = DEFAULT_NAME) -> Optional[Testbed]:
    """Return the running test bed *name*, or None."""
    try:
        with open(_state_file(name)) as f:
            tb = Testbed(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None
    if not _is_our_nspawn(tb.pid, name):
        return None
    if _system_state(tb.address) not in ("running", "degraded"):
        return None
    return tb


def _cgroup_dir(name: str) -> Optional[str]:
    mnt = _cgroup2_mount()
    if mnt is None:
        return None
    return os.path.join(mnt, "flux-pam-test", name)


# ---------------------------------------------------------------- cpuset


def cpuset_wanted(environ: Optional[dict] = None) -> bool:
    """Is the cpuset switch on (FLUX_PAM_TESTBED_CPUSET not empty, not 0)?"""
    value = (os.environ if environ is None else environ).get(CPUSET_SWITCH, "")
    return value.strip() not in ("", "0")


def _controllers(cgdir: str, name: str = "cgroup.controllers") -> list:
    try:
        with open(os.path.join(cgdir, name)) as f:
            return f.read().split()
    except OSError:
        return []


def _v1_cpuset_mounts() -> list:
    """Mount points of cgroup v1 hierarchies that hold cpuset (this namespace)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields = post.split()
            if len(fields) >= 3 and fields[0] == "cgroup":
                if "cpuset" in fields[2].split(","):
                    out.append(pre.split()[4])
    return out


def _v1_cpuset_busy() -> str:
    """Why the v1 cpuset hierarchy must not be unmounted, or ""."""
    mounts = _v1_cpuset_mounts()
    if not mounts:
        return "no cgroup v1 cpuset hierarchy to hand over, and cgroup2 has no cpuset"
    if mounts != [V1_CPUSET]:
        return f"the v1 cpuset hierarchy is mounted at {', '.join(mounts)}"
    own = sorted(
        e.name for e in os.scandir(V1_CPUSET) if e.is_dir(follow_symlinks=False)
    )
    if own:
        return f"the v1 cpuset hierarchy has cgroups of its own: {', '.join(own)}"
    return ""


def _mount_v1_cpuset() -> str:
    """Mount the v1 cpuset hierarchy back; "" or the error."""
    p = subprocess.run(
        ["mount", "-t", "cgroup", "-o", "cpuset", "cgroup", V1_CPUSET],
        capture_output=True,
        text=True,
    )
    return "" if p.returncode == 0 else (p.stderr or p.stdout).strip()


@contextlib.contextmanager
def _cpuset_state():
    """The hand-over state, read and written under RUN_DIR/cpuset.lock."""
    os.makedirs(RUN_DIR, exist_ok=True)
    with open(CPUSET_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(CPUSET_STATE) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = {}
        state.setdefault("holders", {})
        state.setdefault("unmounted", False)
        state.setdefault("enabled", [])
        # a holder whose process is gone (a crashed run) holds nothing
        state["holders"] = {
            n: h
            for n, h in state["holders"].items()
            if isinstance(h, list)
            and len(h) == 2
            and h[1] is not None
            and _proc_start(h[0]) == h[1]
        }
        try:
            yield state
        finally:
            with open(CPUSET_STATE + ".tmp", "w") as f:
                json.dump(state, f)
            os.rename(CPUSET_STATE + ".tmp", CPUSET_STATE)


def _proc_start(pid: int) -> Optional[int]:
    """Start time of a live process (a PID reused later has another one)."""
    if not _alive(pid):
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _wait_cpuset(mnt: str, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while "cpuset" not in _controllers(mnt):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _subtree(path: str, change: str) -> None:
    """Write *change* ("+cpuset", "-cpuset") to *path*'s subtree_control."""
    with open(os.path.join(path, "cgroup.subtree_control"), "w") as f:
        f.write(change)


def cpuset_acquire(name: str, pid: int, log: Log = _stderr) -> str:
    """Give test bed *name* (kept by *pid*) the cpuset controller.

    Returns "on", or "off: " and why it cannot be.  See the module docstring.
    """
    mnt = _cgroup2_mount()
    cgdir = _cgroup_dir(name)
    if mnt is None or cgdir is None:
        return "off: no cgroup2 hierarchy on the host"
    with _cpuset_state() as state:
        if "cpuset" not in _controllers(mnt):
            why = _v1_cpuset_busy()
            if why:
                return f"off: {why}"
            p = subprocess.run(["umount", V1_CPUSET], capture_output=True, text=True)
            if p.returncode != 0:
                err = (p.stderr or p.stdout).strip().rsplit(": ", 1)[-1]
                return f"off: the v1 cpuset hierarchy is in use (umount: {err})"
            state["unmounted"] = True
            log(f"testbed: unmounted {V1_CPUSET}: cpuset goes to cgroup2")
            if not _wait_cpuset(mnt):
                err = _mount_v1_cpuset()
                state["unmounted"] = bool(err)
                return (
                    "off: cpuset stayed bound to cgroup v1 after unmounting"
                    f" {V1_CPUSET} (something else still holds that hierarchy)"
                    + (f"; mounting it back failed: {err}" if err else "")
                )
        try:
            for path in (mnt, os.path.dirname(cgdir), cgdir):
                if "cpuset" not in _controllers(path, "cgroup.subtree_control"):
                    _subtree(path, "+cpuset")
                    if path != cgdir and path not in state["enabled"]:
                        state["enabled"].append(path)
        except OSError as exc:
            return f"off: cannot enable cpuset in {path}: {exc.strerror}"
        state["holders"][name] = [pid, _proc_start(pid)]
    return "on"


def cpuset_hold(name: str, pid: int) -> None:
    """The process that keeps *name*'s hold is now *pid* (systemd-nspawn)."""
    with _cpuset_state() as state:
        if name in state["holders"]:
            state["holders"][name] = [pid, _proc_start(pid)]


def cpuset_release(name: str, log: Log = _stderr) -> None:
    """Drop *name*'s hold; the last holder puts the host back."""
    with _cpuset_state() as state:
        state["holders"].pop(name, None)
        if state["holders"]:
            return
        left = []
        for path in reversed(state["enabled"]):
            try:
                _subtree(path, "-cpuset")
            except FileNotFoundError:
                pass
            except OSError as exc:
                log(f"testbed: cannot disable cpuset in {path}: {exc.strerror}")
                left.insert(0, path)
        state["enabled"] = left
        if state["unmounted"]:
            err = _mount_v1_cpuset() if not left else "cpuset still enabled"
            if err:
                log(f"testbed: cannot mount {V1_CPUSET} back: {err}")
            else:
                state["unmounted"] = False
                log(f"testbed: mounted {V1_CPUSET} back")


def up(
    name: str = DEFAULT_NAME,
    repo: str = REPO,
    log: Log = _stderr,
    tree: Optional[str] = None,
    volatile: bool = True,
    extra_args: Sequence[str] = (),
    cpuset: Optional[bool] = None,
) -> Testbed:
    """Boot test bed *name* (or return it if it is already up).

    Other flavours (sharness/node/node.py) pass their own *tree* (not built
    here), volatile=False when the tree is already a throw-away overlay, and
    *extra_args* for systemd-nspawn.  *cpuset*: hand the cpuset controller
    to the container (module docstring); None follows FLUX_PAM_TESTBED_CPUSET,
    False boots without it whatever the switch says.
    """
    tb = attach(name)
    if tb is not None:
        return tb
    down(name, log=lambda _msg: None)
    own_tree = tree is None
    if tree is None:
        tree = build(log=log)
    rundir = os.path.join(RUN_DIR, name)
    os.makedirs(os.path.join(rundir, "dbus"), mode=0o755)
    os.makedirs(os.path.join(rundir, "share"), mode=0o755)
    cgdir = _cgroup_dir(name)
    if cgdir is not None:
        os.makedirs(cgdir, exist_ok=True)
    if cpuset is None:
        cpuset = cpuset_wanted()
    held = "off: FLUX_PAM_TESTBED_CPUSET is not set"
    if not cpuset and cpuset_wanted():
        held = "off: booted without cpuset on purpose"
    elif cpuset:
        held = cpuset_acquire(name, os.getpid(), log)
        if held != "on":
            log(f"testbed: {name} boots without cpuset: {held[5:]}")
    cmd = [
        "systemd-nspawn",
        "-D",
        tree,
        "-M",
        name,
        "-b",
        "--register=no",
        "--keep-unit",
        "--private-network",
        "--console=passive",
        "--system-call-filter=bpf",
        *(["--volatile=overlay"] if volatile else []),
        f"--bind={rundir}/dbus:/run/dbus",
        f"--bind={rundir}/share:{SHARE_DIR}",
        f"--bind-ro={repo}",
        f"--bind-ro={repo}:{SHARED_REPO}",
        # a flavour with its own tree (the node replica) mounts flux itself
        *([f"--bind-ro={FLUX_PREFIX}"] if own_tree and flux_libraries() else []),
        *extra_args,
    ]
    env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")

    def enter_cgroup() -> None:
        if cgdir is not None:
            with open(os.path.join(cgdir, "cgroup.procs"), "w") as f:
                f.write("0")

    t0 = time.monotonic()
    logf = open(os.path.join(rundir, "nspawn.log"), "w")
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=logf,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=enter_cgroup,
    )
    logf.close()
    tb = Testbed(name, proc.pid, 0, tree, repo, rundir, cpuset=held)
    if held == "on":
        cpuset_hold(name, proc.pid)
    _write_state(tb)
    deadline = t0 + BOOT_TIMEOUT
    state = None
    delay = 0.02
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if os.path.exists(os.path.join(rundir, "dbus", "system_bus_socket")):
            state = _system_state(tb.address)
            if state in ("running", "degraded"):
                break
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
    if state not in ("running", "degraded"):
        with open(os.path.join(rundir, "nspawn.log"), errors="replace") as f:
            tail = f.read()[-2000:]
        down(name, log=lambda _msg: None)
        why = "exited" if proc.poll() is not None else f"state {state!r}"
        raise OSError(errno.EIO, f"test bed {name} did not boot ({why}):\n{tail}")
    tb.leader = _find_leader(proc.pid) or 0
    if not tb.leader:
        down(name, log=lambda _msg: None)
        raise OSError(errno.ESRCH, f"test bed {name}: no container leader found")
    tb.boot_seconds = round(time.monotonic() - t0, 3)
    os.makedirs(MACHINES_DIR, exist_ok=True)
    with open(os.path.join(MACHINES_DIR, name), "w") as f:
        f.write(f"NAME={name}\nLEADER={tb.leader}\nCLASS=container\nROOT={tree}\n")
    _write_state(tb)
    if state == "degraded":
        failed = _bus_call(tb.address, "call", *MANAGER_ARGS, "ListUnitsFiltered")
        log(f"testbed: {name} is degraded (failed units: {failed})")
    log(
        f"testbed: {name} up in {tb.boot_seconds:.2f}s (leader {tb.leader},"
        f" cpuset {tb.cpuset})"
    )
    return tb


def _write_state(tb: Testbed) -> None:
    path = _state_file(tb.name)
    with open(path + ".tmp", "w") as f:
        json.dump(dataclasses.asdict(tb), f)
    os.rename(path + ".tmp", path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not _alive(pid):
            return True
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
    return not _alive(pid)


def down(name: str = DEFAULT_NAME, log: Log = _stderr) -> None:
    """Stop test bed *name* and remove what `up` left, even after a crash."""
    state: dict = {}
    try:
        with open(_state_file(name)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        pass
    pid = state.get("pid", 0)
    if pid and _is_our_nspawn(pid, name):
        leader = state.get("leader") or _find_leader(pid)
        if leader:
            # SIGRTMIN+4 asks systemd (PID 1 of the container) to power off
            try:
                os.kill(leader, signal.SIGRTMIN + 4)
            except ProcessLookupError:
                pass
        if not _wait_gone(pid, 10.0):
            log(f"testbed: {name} did not power off in 10s; killing it")
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
    cgdir = _cgroup_dir(name)
    if cgdir and os.path.isdir(cgdir):
        _kill_cgroup(cgdir)
    if os.path.exists(CPUSET_STATE):
        cpuset_release(name, log)
    try:
        os.unlink(os.path.join(MACHINES_DIR, name))
    except FileNotFoundError:
        pass
    rundir = os.path.join(RUN_DIR, name)
    if os.path.isdir(rundir):
        shutil.rmtree(rundir, ignore_errors=True)
    if state:
        log(f"testbed: {name} down")


def _kill_cgroup(cgdir: str) -> None:
    """Kill whatever is left in *cgdir* and remove it, depth first."""
    for _ in range(50):
        try:
            with open(os.path.join(cgdir, "cgroup.kill"), "w") as f:
                f.write("1")
        except OSError:
            for procs in glob.glob(
                os.path.join(cgdir, "**", "cgroup.procs"), recursive=True
            ):
                try:
                    with open(procs) as f:
                        for pid in f.read().split():
                            os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        dirs = sorted((d for d, _, _ in os.walk(cgdir)), key=lambda d: -d.count(os.sep))
        for d in dirs:
            try:
                os.rmdir(d)
            except OSError:
                pass
        if not os.path.isdir(cgdir):
            return
        time.sleep(0.1)


# ---------------------------------------------------------------- CLI


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="testbed.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    default_name = os.environ.get("FLUX_PAM_TESTBED") or DEFAULT_NAME
    sub.add_parser("can-run")
    sub.add_parser("build")
    p_up = sub.add_parser("up")
    p_up.add_argument("--name", default=default_name)
    p_up.add_argument("--repo", default=os.environ.get("FLUX_PAM_TESTBED_REPO", REPO))
    for cmd in ("down", "status"):
        sub.add_parser(cmd).add_argument("--name", default=default_name)
    p_run = sub.add_parser("run")
    p_run.add_argument("--name", default=default_name)
    p_run.add_argument("--uid")
    p_run.add_argument("--setenv", action="append", default=[], metavar="K=V")
    p_run.add_argument("--chdir")
    p_run.add_argument("argv", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)

    if args.cmd == "can-run":
        ok, why = can_run()
        if not ok:
            print(why)
        return 0 if ok else 1
    if args.cmd == "build":
        t0 = time.monotonic()
        path = build()
        print(f"{path} ({time.monotonic() - t0:.1f}s)")
        return 0
    if args.cmd == "up":
        tb = up(args.name, repo=os.path.abspath(args.repo))
        for k, v in tb.env().items():
            print(f"export {k}={v}")
        return 0
    if args.cmd == "down":
        down(args.name)
        return 0
    if args.cmd == "status":
        tb = attach(args.name)
        if tb is None:
            print(f"{args.name}: not running")
            return 1
        print(json.dumps(dataclasses.asdict(tb), indent=2))
        return 0
    if args.cmd == "run":
        cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not cmd:
            ap.error("run: no command given")
        env = dict(kv.split("=", 1) for kv in args.setenv)
        argv_ = _run_argv(args.name, cmd, args.uid, env, args.chdir)
        return subprocess.run(argv_).returncode
    return 2


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""The node replica: a Flux compute node in one systemd-nspawn container.

It proves the product the way a site runs it: flux-core's own flux.service
runs a 1-broker system instance as user ``flux``, jobs run as their users
through the setuid IMP, perilog runs the prolog/housekeeping drop-ins through
flux-prolog@/flux-housekeeping@ units, polkit guards systemd, and sshd has
pam_flux in its stack.  flux-core and flux-security are in /opt/flux, and the
project is set up by the admin guide's own commands, word for word: the
``node-setup`` blocks of doc/guide/admin.rst, run in order; nothing of it is
copied or configured by hand.

CLI (run as root):
    node.py can-run              exit 0 if a replica can run here, else print why
    node.py build                build (or reuse) the cached tree
    node.py up [--name N] [--restartable] [--fake-gpus N] [--no-cpuset]
                                 stage and boot a fresh replica, wait for the
                                 broker; prints ``export FLUX_PAM_NODE=N``;
                                 --restartable: see RESTART_CONF;
                                 --fake-gpus: see GPU_CONF; --no-cpuset:
                                 without the cpuset controller even when
                                 FLUX_PAM_TESTBED_CPUSET asks for it
    node.py down [--name N]      stop it and remove everything up made
    node.py run [--name N] [--uid U] [--setenv K=V]... -- CMD...
                                 run CMD inside (a transient service), exit code
                                 passed on
    node.py ssh [--name N] USER CMD...
                                 ``ssh USER@127.0.0.1 CMD`` from inside (the
                                 container has a private network)
    node.py status [--name N]    print the replica's state as JSON

Module interface:
    can_run() -> (bool, reason)
    build(log) -> str                    the cached tree
    up(name, log, restartable=False, fake_gpus=0, cpuset=None) -> Node
                                         stage, boot, wait for the broker
    down(name, log)
    Node: .name .testbed (t/testbed.py Testbed: .cpuset says whether the
          replica has the cpuset controller, or why not) .root (staged root)
          .run(argv, uid=None, env=None, timeout=120) -> CompletedProcess
          .timings (dict of seconds)

Tree (cached under testbed.CACHE_DIR as ``node-<suite>-<hash>``, the hash
taken over the recipe): mmdebstrap of the test bed's packages plus NODE_PACKAGES
and the Debian packages that hold the shared libraries ``ldd`` lists for the
ELF files under the flux prefix (computed with ``dpkg -S`` at build time, so
the list follows the flux-core build; the ldd scan is cached by the files'
sizes and mtimes).  Users flux (system), alice (1000), bob (1001) come from the
test bed's hooks; _hooks() adds: a munge key, an ssh client key in
/root/.ssh authorized for alice, bob and root, sshd on 127.0.0.1 only,
/usr/bin/flux -> FLUX/bin/flux (the IMP resets PATH), and a .pth that puts
flux's Python bindings on /usr/bin/python3's path (a flux-core installed in
/usr has them there; the drop-ins run that Python with a reset
environment).

Staging (every ``up``, in RUN_DIR/NAME; nothing in the cache or in the flux
prefix is ever written):
    root      overlayfs: lower = the cached tree, upper on tmpfs
    root/FLUX overlayfs: lower = the flux prefix (read-only), upper on tmpfs:
              the prefix's etc/ (and the directories the project installs
              into) become a writable copy, like a site's own install
    then the working multi-user system instance the guide starts from:
      - FLUX/libexec/flux/flux-imp made root:root 4755 (in the overlay), and
        its config FLUX/etc/flux/imp/conf.d/node.toml ([exec] allowed-users,
        allowed-shells)
      - FLUX/etc/flux/system/conf.d/node.toml: access.allow-guest-user,
        exec.imp
      - flux-core's units (FLUX/lib/systemd/system/flux*.service) linked
        into /etc/systemd/system; flux.service enabled
    then the guide: the source tree is copied to SRC_IN_NODE (as an admin
    unpacks it) and the guide's commands run there as root, chrooted into
    the staged root, with PATH=/usr/sbin:/usr/bin:/sbin:/bin (flux is found
    as /usr/bin/flux: make install asks it for its directories); what ran
    and its output are in RUN_DIR/NAME/guide-setup.log, the commands in
    guide-setup.sh.
    The overlays are mounted on the host, so the whole replica is ready
    before systemd boots: flux.service starts at boot with our module.

Boot: t/testbed.py's up() with tree=ROOT, volatile=False (the root is
already a throw-away overlay); with FLUX_PAM_TESTBED_CPUSET=1 (and not
--no-cpuset) the replica gets the cpuset controller where the host allows it
(t/testbed.py).  Then wait until the broker reports its run
state (``flux uptime`` as root on the local connector): flux.service is
"active" before rc1 has finished.

Environment: FLUX_PAM_NODE (default name), FLUX_PAM_NODE_FLUX (the flux
prefix, default /opt/flux), FLUX_PAM_TESTBED_CACHE (cache dir, via testbed).
"""

import argparse
import errno
import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "t"))

import testbed  # noqa: E402

Log = Callable[[str], None]

DEFAULT_NAME = "flux-pam-node"
FLUX = os.environ.get("FLUX_PAM_NODE_FLUX", "/opt/flux")
RUN_DIR = "/run/flux-pam-node"
IMP_PATH = f"{FLUX}/libexec/flux/flux-imp"
GUIDE = os.path.join(REPO, "doc", "guide", "admin.rst")
SRC_IN_NODE = "/usr/src/flux-pam-service"
BOOT_FLUX_TIMEOUT = 60.0
RECIPE_VERSION = 2

NODE_PACKAGES = [
    "openssh-server",
    "openssh-client",
    "munge",
    "sudo",
    "python3-jeepney",
    # what the admin guide's install step needs, pam_flux.so's build
    # dependencies included (scripts/install-deps installs the same)
    "make",
    "python3-docutils",
    "gcc",
    "libc6-dev",
    "pkg-config",
    "libpam0g-dev",
    "libjansson-dev",
    "libsystemd-dev",
    "procps",
    "jq",
    # flux-core's Python and Lua runtime (not visible to ldd): flux-cron is
    # a Lua script; sdexec and user@UID want a user bus
    "lua5.1",
    "dbus-user-session",
    "python3-cffi-backend",
    "python3-yaml",
    "python3-ply",
    "lua-posix",
]

SSH_CONFIG = """\
Host *
    IdentityFile /root/.ssh/id_ed25519
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    BatchMode yes
    LogLevel ERROR
    ConnectTimeout 10
"""

SSHD_CONFIG = """\
# node replica: sshd on the loopback only, public keys only
ListenAddress 127.0.0.1
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
PermitRootLogin prohibit-password
MaxStartups 50:30:100
"""


def _hooks(pyver: str) -> List[str]:
    sitedir = f"{FLUX}/lib/python{pyver}/site-packages"
    return testbed.SETUP_HOOKS + [
        'test -s "$1"/etc/munge/munge.key || chroot "$1" mungekey --create --force',
        'chroot "$1" chown munge:munge /etc/munge/munge.key',
        'chroot "$1" chmod 0400 /etc/munge/munge.key',
        'mkdir -p "$1"/root/.ssh && chmod 700 "$1"/root/.ssh',
        "chroot \"$1\" ssh-keygen -q -t ed25519 -N '' -C node-replica"
        " -f /root/.ssh/id_ed25519",
        f"printf '%s' '{SSH_CONFIG}' > \"$1\"/root/.ssh/config",
        'for u in root alice bob; do h=$(chroot "$1" getent passwd $u | cut -d: -f6);'
        ' mkdir -p "$1$h/.ssh";'
        ' cp "$1"/root/.ssh/id_ed25519.pub "$1$h/.ssh/authorized_keys";'
        ' chroot "$1" chown -R $u: "$h/.ssh"; chmod 700 "$1$h/.ssh"; done',
        f"printf '%s' '{SSHD_CONFIG}' > \"$1\"/etc/ssh/sshd_config.d/node.conf",
        f'mkdir -p "$1"{FLUX} "$1"/usr/libexec/flux',
        f'ln -sf {FLUX}/bin/flux "$1"/usr/bin/flux',
        f'echo {sitedir} > "$1"/usr/lib/python3/dist-packages/flux-core.pth',
    ]


# ---------------------------------------------------------------- flux prefix


def _flux_python_version() -> Optional[str]:
    found = sorted(glob.glob(f"{FLUX}/lib/python3.*/site-packages/flux"))
    if not found:
        return None
    return found[-1].split("/lib/python", 1)[1].split("/", 1)[0]


def _elf_files() -> List[str]:
    out = []
    for sub in ("bin", "sbin", "lib", "libexec"):
        for dirpath, _dirs, files in os.walk(os.path.join(FLUX, sub)):
            for name in files:
                path = os.path.join(dirpath, name)
                if not os.path.islink(path) and testbed.is_elf(path):
                    out.append(path)
    return sorted(out)


def runtime_packages(log: Log = testbed._stderr) -> List[str]:
    """Debian packages holding the libraries ldd lists for FLUX's ELF files."""
    return testbed.runtime_packages(_elf_files(), FLUX, log)


# ---------------------------------------------------------------- tree


def recipe() -> dict:
    pyver = _flux_python_version() or "none"
    packages = sorted(set(testbed.PACKAGES) | set(NODE_PACKAGES))
    packages = sorted(set(packages) | set(runtime_packages()))
    return {
        "version": [testbed.RECIPE_VERSION, RECIPE_VERSION],
        "suite": testbed.SUITE,
        "variant": testbed.VARIANT,
        "packages": packages,
        "hooks": _hooks(pyver),
    }


def tree_path(rec: Optional[dict] = None) -> str:
    rec = rec or recipe()
    digest = hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()
    return os.path.join(testbed.CACHE_DIR, f"node-{rec['suite']}-{digest[:12]}")


def can_run() -> tuple:
    ok, why = testbed.can_run()
    if not ok:
        return ok, why
    if not os.access(f"{FLUX}/bin/flux", os.X_OK):
        return False, f"flux-core not installed in {FLUX} ({FLUX}/bin/flux)"
    if not os.path.exists(f"{FLUX}/libexec/flux/flux-imp"):
        return False, f"flux-security's IMP not in {FLUX}/libexec/flux/flux-imp"
    if not os.path.exists(f"{FLUX}/lib/systemd/system/flux.service"):
        return False, f"{FLUX}/lib/systemd/system/flux.service missing"
    pyver = _flux_python_version()
    if pyver is None:
        return False, f"no flux Python bindings under {FLUX}/lib/python3.*"
    host = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if sys.executable.startswith("/usr/bin/") and pyver != host:
        return False, f"flux bindings are for python{pyver}, /usr/bin/python3 is {host}"
    for tool in ("make", "rst2man", "ldd", "dpkg"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found (needed to build or install the replica)"
    return True, ""


def build(log: Log = testbed._stderr) -> str:
    """Build the node tree for the current recipe unless cached."""
    rec = recipe()
    final = tree_path(rec)
    if os.path.isdir(final):
        return final
    os.makedirs(testbed.CACHE_DIR, exist_ok=True)
    with open(os.path.join(testbed.CACHE_DIR, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(final):
            return final
        sources = testbed._apt_sources()
        if not sources:
            raise OSError(errno.ENOENT, "no bookworm apt sources on the host")
        tmp = tempfile.mkdtemp(prefix=".build-node-", dir=testbed.CACHE_DIR)
        srcfile = os.path.join(tmp, "sources")
        with open(srcfile, "w") as f:
            f.write(sources)
        target = os.path.join(tmp, "tree")
        cmd = [
            "mmdebstrap",
            f"--variant={rec['variant']}",
            "--include=" + ",".join(rec["packages"]),
            "--quiet",
        ]
        cmd += [f"--customize-hook={hook}" for hook in rec["hooks"]]
        cmd += [rec["suite"], target, srcfile]
        log(f"node: building {final} ({len(rec['packages'])} packages)")
        t0 = time.monotonic()
        try:
            subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
            with open(
                os.path.join(target, "etc", "flux-pam-node-recipe.json"), "w"
            ) as f:
                json.dump(rec, f, indent=1)
            os.rename(target, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log(f"node: built {final} in {time.monotonic() - t0:.1f}s")
    return final


# ---------------------------------------------------------------- staging

IMP_CONF = """\
# node replica: flux-security IMP (flux-config-security-imp(5)), as a
# multi-user instance has it before flux-pam-service
[exec]
allowed-users = [ "flux" ]
allowed-shells = [ "{flux}/libexec/flux/flux-shell" ]
"""

SYSTEM_CONF = """\
# node replica: a 1-broker multi-user system instance, before
# flux-pam-service
[access]
allow-guest-user = true

[exec]
imp = "{imp}"
"""


def _stage_dir(name: str) -> str:
    return os.path.join(RUN_DIR, name)


def _root(name: str) -> str:
    return os.path.join(_stage_dir(name), "root")


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def _overlay(lower: str, stage: str, tag: str, target: str) -> None:
    upper = os.path.join(stage, "upper", tag)
    work = os.path.join(stage, "work", tag)
    os.makedirs(upper, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    os.makedirs(target, exist_ok=True)
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            f"node-{tag}",
            "-o",
            f"lowerdir={lower},upperdir={upper},workdir={work}",
            target,
        ],
        check=True,
    )


def _write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def guide_setup() -> str:
    """The admin guide's setup commands: its ``node-setup`` blocks, in order."""
    sys.path.insert(0, os.path.join(REPO, "t", "unit"))
    import docexamples

    blocks = [
        text
        for _doc, _line, kind, text in docexamples.examples(GUIDE)
        if kind == "node-setup"
    ]
    if not blocks:
        raise OSError(errno.ENOENT, f"{GUIDE} has no node-setup block")
    return "".join(blocks)


def _source_files() -> List[str]:
    """The source tree's files (tracked and new, not ignored), relative."""
    p = subprocess.run(
        ["git", "-C", REPO, "ls-files", "-z", "--cached", "--others"]
        + ["--exclude-standard"],
        capture_output=True,
    )
    if p.returncode == 0:
        names = [n for n in p.stdout.decode().split("\0") if n]
        return [n for n in names if os.path.isfile(os.path.join(REPO, n))]
    skip = {".git", ".venv", "build", "results", "__pycache__"}
    out = []
    for dirpath, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in skip and not d.startswith("trash")]
        out += [os.path.relpath(os.path.join(dirpath, f), REPO) for f in files]
    return out


def _run_guide(root: str, sdir: str) -> None:
    """Copy the source tree into *root* and run the guide's commands there."""
    src = root + SRC_IN_NODE
    for rel in _source_files():
        dst = os.path.join(src, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(REPO, rel), dst)
    commands = guide_setup()
    with open(os.path.join(sdir, "guide-setup.sh"), "w") as f:
        f.write(commands)
    script = f"set -ex\ncd {SRC_IN_NODE}\n{commands}"
    env = [
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "LANG=C.UTF-8",
        "DEBIAN_FRONTEND=noninteractive",
    ]
    # chrooted, with /proc and /dev (flux finds its directories through
    # /proc/self/exe; systemd-tmpfiles wants /proc) in a mount namespace of
    # its own, so nothing is left mounted
    inside = (
        'r=$1; shift; mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev"'
        ' && exec chroot "$r" /usr/bin/env -i "$@"'
    )
    p = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", inside]
        + ["sh", root]
        + [*env, "/bin/sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    with open(os.path.join(sdir, "guide-setup.log"), "w") as f:
        f.write(p.stdout)
    if p.returncode != 0:
        raise OSError(
            errno.EIO, "node: the admin guide's commands failed:\n" + p.stdout[-3000:]
        )


# `up --restartable`: flux-core 0.88 reattaches to running jobs after a broker
# restart only for its test execution service (jobs with
# attributes.system.exec.test run no processes); a job under bulkexec or
# sdexec gets an exception when the broker stops.  Let guests run such jobs.
RESTART_CONF = """\
# node replica: jobs that survive a restart of flux.service (testexec)
[exec.testexec]
allow-guests = true
"""

# flux-core's rc1 pushes a cleanup that cancels every running job when the
# broker stops; a site that restarts flux.service under running jobs turns
# it off.
RESTART_DROPIN = """\
[Service]
Environment=FLUX_DISABLE_JOB_CLEANUP=1
"""


# `up --fake-gpus N`: a node with N GPUs that do not exist.  R comes from the
# config (noverify: hwloc finds no GPU) and sharness/lib/gpu_mapper.py maps
# GPU i to /dev/flux-pam-gpu<i>, a device node the tests create.
GPU_CONF = """\
# node replica: {gpus} fake GPUs (sharness/lib/gpu_mapper.py)
[resource]
noverify = true

[[resource.config]]
hosts = "{host}"
cores = "0-{lastcore}"
gpus = "0-{lastgpu}"

[sdexec]
mapper = "gpu_mapper.FakeGpuMapper"
mapper-searchpath = "{libdir}"
"""
GPU_MAPPER_DIR = "/usr/local/lib/flux-pam-test"


def stage(
    name: str, tree: str, log: Log, restartable: bool = False, fake_gpus: int = 0
) -> Dict[str, float]:
    """Mount the overlays and configure the replica like a site would."""
    timings: Dict[str, float] = {}
    t0 = time.monotonic()
    sdir = _stage_dir(name)
    root = _root(name)
    os.makedirs(sdir, exist_ok=True)
    _overlay(tree, sdir, "root", root)
    _overlay(FLUX, sdir, "flux", root + FLUX)

    # IMP: setuid root where flux-security installed it (the overlay copies
    # it up), and its config
    os.chown(root + IMP_PATH, 0, 0)
    os.chmod(root + IMP_PATH, 0o4755)
    _write(f"{root}{FLUX}/etc/flux/imp/conf.d/node.toml", IMP_CONF.format(flux=FLUX))
    _write(
        f"{root}{FLUX}/etc/flux/system/conf.d/node.toml",
        SYSTEM_CONF.format(imp=IMP_PATH),
    )
    if restartable:
        _write(f"{root}{FLUX}/etc/flux/system/conf.d/restart.toml", RESTART_CONF)
        _write(f"{root}/etc/systemd/system/flux.service.d/node.conf", RESTART_DROPIN)
    if fake_gpus:
        conf = GPU_CONF.format(
            gpus=fake_gpus,
            host=name,  # systemd-nspawn -M NAME sets the hostname
            lastcore=(os.cpu_count() or 1) - 1,
            lastgpu=fake_gpus - 1,
            libdir=GPU_MAPPER_DIR,
        )
        _write(f"{root}{FLUX}/etc/flux/system/conf.d/gpus.toml", conf)
        os.makedirs(root + GPU_MAPPER_DIR, exist_ok=True)
        shutil.copy(
            os.path.join(REPO, "sharness", "lib", "gpu_mapper.py"),
            root + GPU_MAPPER_DIR,
        )

    # flux-core's own units
    unitdir = f"{root}/etc/systemd/system"
    for unit in sorted(glob.glob(f"{FLUX}/lib/systemd/system/flux*.service")):
        dst = os.path.join(unitdir, os.path.basename(unit))
        if not os.path.lexists(dst):
            os.symlink(unit, dst)
    wants = os.path.join(unitdir, "multi-user.target.wants")
    os.makedirs(wants, exist_ok=True)
    os.symlink("/etc/systemd/system/flux.service", os.path.join(wants, "flux.service"))
    timings["stage"] = time.monotonic() - t0

    # the project, set up by the admin guide's own commands
    t1 = time.monotonic()
    _run_guide(root, sdir)
    timings["guide"] = time.monotonic() - t1
    with open(os.path.join(sdir, "guide-setup.log")) as f:
        if "pam_flux.so was NOT built" in f.read():
            # every job user's login would be refused: say why at once
            raise OSError(
                errno.ENOENT,
                "node: the guide's make install did not build pam_flux.so"
                f" (see {sdir}/guide-setup.log)",
            )
    return timings


# ---------------------------------------------------------------- up / down


class Node:
    def __init__(self, name: str, tb: "testbed.Testbed", timings: Dict[str, float]):
        self.name = name
        self.testbed = tb
        self.root = _root(name)
        self.timings = timings

    def run(
        self,
        argv: Sequence[str],
        uid: Optional[str] = None,
        env: Optional[dict] = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess:
        return self.testbed.run(argv, uid=uid, env=env, timeout=timeout)


def _state_file(name: str) -> str:
    return os.path.join(_stage_dir(name), "node.json")


def _wait_flux(tb: "testbed.Testbed", log: Log) -> None:
    deadline = time.monotonic() + BOOT_FLUX_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        # the unit is active before rc1 ends: wait for the broker's run state
        p = tb.run(["flux", "uptime"], timeout=30)
        if p.returncode == 0 and " run " in p.stdout:
            return
        last = (p.stdout + p.stderr).strip()
        time.sleep(0.2)
    st = tb.run(["systemctl", "status", "--no-pager", "-l", "flux"])
    j = tb.run(["journalctl", "--no-pager", "-b", "-u", "flux", "-n", "60"])
    raise OSError(
        errno.ETIMEDOUT,
        f"node: flux did not come up: {last}\n{st.stdout}\n{j.stdout}",
    )


def up(
    name: str = DEFAULT_NAME,
    log: Log = testbed._stderr,
    restartable: bool = False,
    fake_gpus: int = 0,
    cpuset: Optional[bool] = None,
) -> Node:
    """Stage and boot a fresh replica; wait for the system instance.

    *cpuset* None follows FLUX_PAM_TESTBED_CPUSET, False boots without."""
    down(name, log=lambda _m: None)
    timings: Dict[str, float] = {}
    t0 = time.monotonic()
    tree = build(log=log)
    timings["tree"] = time.monotonic() - t0
    try:
        timings.update(stage(name, tree, log, restartable, fake_gpus))
        t1 = time.monotonic()
        tb = testbed.up(
            name, repo=REPO, log=log, tree=_root(name), volatile=False, cpuset=cpuset
        )
        timings["boot"] = time.monotonic() - t1
        t2 = time.monotonic()
        _wait_flux(tb, log)
        timings["flux"] = time.monotonic() - t2
    except BaseException:
        down(name, log=lambda _m: None)
        raise
    timings["total"] = time.monotonic() - t0
    timings = {k: round(v, 2) for k, v in timings.items()}
    with open(_state_file(name), "w") as f:
        json.dump({"name": name, "timings": timings}, f)
    log(
        f"node: {name} up in {timings['total']:.1f}s ("
        + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items() if k != "total")
        + ")"
    )
    return Node(name, tb, timings)


def attach(name: str = DEFAULT_NAME) -> Optional[Node]:
    tb = testbed.attach(name)
    if tb is None:
        return None
    try:
        with open(_state_file(name)) as f:
            timings = json.load(f)["timings"]
    except (OSError, ValueError, KeyError):
        timings = {}
    return Node(name, tb, timings)


def down(name: str = DEFAULT_NAME, log: Log = testbed._stderr) -> None:
    """Stop the container, unmount the overlays, remove the staging dir."""
    testbed.down(name, log=log)
    sdir = _stage_dir(name)
    root = _root(name)
    for target in (root + FLUX, root):
        for _ in range(50):
            if not _mounted(target):
                break
            p = subprocess.run(["umount", target], capture_output=True, text=True)
            if p.returncode != 0:
                time.sleep(0.1)
        if _mounted(target):
            subprocess.run(["umount", "--lazy", target])
    if os.path.isdir(sdir):
        if _mounted(root) or _mounted(root + FLUX):
            raise OSError(
                errno.EBUSY, f"node: {root} still mounted; not removing {sdir}"
            )
        shutil.rmtree(sdir, ignore_errors=True)


# ---------------------------------------------------------------- CLI


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="node.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    default = os.environ.get("FLUX_PAM_NODE") or DEFAULT_NAME
    sub.add_parser("can-run")
    sub.add_parser("build")
    p_up = sub.add_parser("up")
    p_up.add_argument("--name", default=default)
    p_up.add_argument(
        "--restartable",
        action="store_true",
        help="test-execution jobs of guests survive a restart of flux.service",
    )
    p_up.add_argument(
        "--fake-gpus", type=int, default=0, metavar="N", help="N GPUs in R"
    )
    p_up.add_argument(
        "--no-cpuset",
        action="store_true",
        help="no cpuset controller, whatever FLUX_PAM_TESTBED_CPUSET says",
    )
    for cmd in ("down", "status"):
        sub.add_parser(cmd).add_argument("--name", default=default)
    p_run = sub.add_parser("run")
    p_run.add_argument("--name", default=default)
    p_run.add_argument("--uid")
    p_run.add_argument("--setenv", action="append", default=[], metavar="K=V")
    p_run.add_argument("argv", nargs=argparse.REMAINDER)
    p_ssh = sub.add_parser("ssh")
    p_ssh.add_argument("--name", default=default)
    p_ssh.add_argument("user")
    p_ssh.add_argument("argv", nargs=argparse.REMAINDER)
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
        node = up(
            args.name,
            restartable=args.restartable,
            fake_gpus=args.fake_gpus,
            cpuset=False if args.no_cpuset else None,
        )
        print(f"export FLUX_PAM_NODE={node.name}")
        return 0
    if args.cmd == "down":
        down(args.name)
        return 0
    if args.cmd == "status":
        node = attach(args.name)
        if node is None:
            print(f"{args.name}: not running")
            return 1
        print(
            json.dumps(
                {
                    "name": node.name,
                    "root": node.root,
                    "timings": node.timings,
                    "cpuset": node.testbed.cpuset,
                }
            )
        )
        return 0

    # systemd expands $NAME and $$ in a unit's command line: double every $
    def literal(argv: Sequence[str]) -> List[str]:
        return [a.replace("$", "$$") for a in argv]

    if args.cmd == "run":
        cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not cmd:
            ap.error("run: no command given")
        env = dict(kv.split("=", 1) for kv in args.setenv)
        return subprocess.run(
            testbed._run_argv(args.name, literal(cmd), args.uid, env)
        ).returncode
    if args.cmd == "ssh":
        cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        ssh = ["ssh", f"{args.user}@127.0.0.1", "--", *cmd]
        return subprocess.run(testbed._run_argv(args.name, literal(ssh))).returncode
    return 2


if __name__ == "__main__":
    sys.exit(main())

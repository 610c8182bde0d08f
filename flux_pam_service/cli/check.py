"""``flux-pam check``: a preflight doctor for one node.

    flux pam check [--root DIR] [--pam-stack FILE] [--config-path PATH]
                   [--imp-config PATH] [--libexecdir DIR] [--owner USER]

Prints one line per check, ``PASS``, ``WARN`` or ``FAIL``, then the check's
name and what it found; every line that is not a PASS is followed by the fix.
Exits 1 if any check FAILs, else 0.

``--root DIR`` checks a tree that is not the live system: every path below is
looked up under DIR, and the checks that need the running system (systemd
version, the loaded module) WARN that they were skipped.  Under ``--root``
the files that must belong to root are expected to belong to the owner of
DIR instead (root on a real image; the test user for a test tree).

Paths (all below ROOT):
    --config-path   instance config (TOML)
    --imp-config    IMP config (TOML)
    --pam-stack     /etc/pam.d/sshd              the sshd PAM service file
    --libexecdir    flux's libexecdir, e.g. /usr/libexec/flux
    /run/flux-pam, /usr/lib/tmpfiles.d/flux-pam.conf, /var/lib/systemd/linger,
    /etc/passwd, /etc/login.defs, /sys/fs/cgroup, /etc/polkit-1/rules.d and
    /usr/share/polkit-1/rules.d.
On the live system the paths not given come from the running broker and
flux-core (flux_pam_service.cli.instance): the first lines of the output
(``using ...``) name each and say where it came from, or why no broker
answered.  Under ``--root`` they are those of a flux-core in /usr
(/etc/flux/system/conf.d, /etc/flux/imp/conf.d, /usr/libexec/flux).

Each check is a function ``check_NAME(ctx) -> Result`` listed in CHECKS; a
check never raises for what it finds on disk.
"""

import argparse
import fnmatch
import glob
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from flux_pam_service import pamstack
from flux_pam_service.cli import instance
from flux_pam_service.core import config
from flux_pam_service.core.errors import errtext

PASS = "PASS"
WARN = "WARN"
FAIL = "FAIL"

PAM_FLUX = "pam_flux.so"
# where libpam looks for a module named without a directory
PAM_MODULE_DIRS = (
    "/lib/{multiarch}/security",
    "/usr/lib/{multiarch}/security",
    "/lib64/security",
    "/usr/lib64/security",
    "/lib/security",
    "/usr/lib/security",
)
LOCK_DIR = "/run/flux-pam"
TMPFILES = ("/etc/tmpfiles.d", "/run/tmpfiles.d", "/usr/lib/tmpfiles.d")
POLKIT_RULE = "60-flux-pam.rules"
POLKIT_DIRS = ("/etc/polkit-1/rules.d", "/usr/share/polkit-1/rules.d")
DROP_INS = {"prolog": "flux-pam-prolog", "housekeeping": "flux-pam-housekeeping"}
SYSTEMD_MIN = 239
# The environment the IMP must pass to our drop-ins (DESIGN.md §7).
IMP_ENV = ("FLUX_JOB_ID", "FLUX_JOB_USERID", "FLUX_JOB_RANKS", "FLUX_URI")
# Keys that flux-core 0.88 accepts in [job-manager.housekeeping].
HOUSEKEEPING_KEYS = {
    "command",
    "release-after",
    "use-systemd-unit",
    "exit-on-first-error",
}


@dataclass(frozen=True)
class Result:
    """What one check found; *fix* is empty for a PASS."""

    status: str
    detail: str
    fix: str = ""


@dataclass
class Context:
    """Where a run of the checks looks.  Paths are absolute on the target."""

    root: str = "/"
    config_path: str = config.DEFAULT_PATH
    imp_config: str = "/etc/flux/imp/conf.d"
    pam_stack: Optional[str] = None  # a host path; default ROOT/etc/pam.d/sshd
    libexecdir: str = "/usr/libexec/flux"
    confdir: str = "/etc/flux"  # flux-core's confdir (system/*.d drop-ins)
    owner: str = "flux"
    systemctl: str = "systemctl"
    _cache: Dict[str, object] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """True when checking the running system."""
        return os.path.realpath(self.root) == "/"

    def path(self, target: str) -> str:
        """Host path of the target path *target*."""
        return os.path.join(self.root, target.lstrip("/"))

    @property
    def stack_path(self) -> str:
        """Host path of the sshd PAM service file."""
        return self.pam_stack or self.path("/etc/pam.d/sshd")

    @property
    def trusted_uid(self) -> int:
        """uid that must own security-relevant files (see module doc)."""
        if self.live:
            return 0
        return os.stat(self.root).st_uid

    def instance_config(self) -> Tuple[Optional[dict], List[str]]:
        """The merged instance config, or the problems reading it."""
        if "instance" not in self._cache:
            try:
                obj, _ = config.read(self.path(self.config_path))
                self._cache["instance"] = (obj, [])
            except config.ConfigError as exc:
                self._cache["instance"] = (None, exc.problems)
        return self._cache["instance"]  # type: ignore[return-value]

    def pam_rules(self) -> Tuple[List[pamstack.Rule], List[str]]:
        """The expanded sshd stack and the problems reading it."""
        if "pam" not in self._cache:
            self._cache["pam"] = pamstack.read(self.stack_path, self.root)
        return self._cache["pam"]  # type: ignore[return-value]


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


# --- configuration ---------------------------------------------------------


def check_config(ctx: Context) -> Result:
    """The [pam] and [exec] settings are valid."""
    path = ctx.path(ctx.config_path)
    try:
        cfg = config.load(path)
    except config.ConfigError as exc:
        if not os.path.exists(path):
            fix = (
                f"install the example: make install (writes {ctx.config_path}/pam.toml)"
            )
        else:
            fix = (
                f"correct what is named above in {ctx.config_path}"
                " (see flux-config-pam(5)); `flux pam config` shows the result"
            )
        return Result(FAIL, "; ".join(exc.problems), fix)
    if not cfg.manage_user_slice:
        return Result(
            WARN,
            "pam.manage-user-slice is false: user slices are not managed",
            f"set manage-user-slice = true in the [pam] table of {ctx.config_path}",
        )
    return Result(
        PASS,
        f"manage-user-slice=true kill-user-slice={str(cfg.kill_user_slice).lower()}"
        f" sdexec-constrain-resources={str(cfg.constrain_resources).lower()}",
    )


def _perilog_loaded(jm: dict) -> bool:
    plugins = jm.get("plugins", [])
    if not isinstance(plugins, list):
        return False
    return any(
        isinstance(p, dict)
        and isinstance(p.get("load"), str)
        and os.path.basename(p["load"]) == "perilog.so"
        for p in plugins
    )


def check_perilog(ctx: Context) -> Result:
    """perilog.so with a per-rank prolog; housekeeping without per-rank."""
    obj, problems = ctx.instance_config()
    if obj is None:
        return Result(FAIL, "; ".join(problems), f"fix the TOML in {ctx.config_path}")
    jm = obj.get("job-manager", {})
    jm = jm if isinstance(jm, dict) else {}
    found: List[str] = []
    fixes: List[str] = []
    if not _perilog_loaded(jm):
        found.append("perilog.so is not in job-manager.plugins")
        fixes.append('add plugins = [ { load = "perilog.so" } ] to [job-manager]')
    prolog = jm.get("prolog")
    if not isinstance(prolog, dict):
        found.append("no [job-manager.prolog] table")
        fixes.append("add [job-manager.prolog] with per-rank = true")
    elif prolog.get("per-rank") is not True:
        found.append("job-manager.prolog.per-rank is not true")
        fixes.append("set per-rank = true in [job-manager.prolog]")
    hk = jm.get("housekeeping")
    if not isinstance(hk, dict):
        found.append("no [job-manager.housekeeping] table: housekeeping never runs")
        fixes.append("add an empty [job-manager.housekeeping] table")
    else:
        bad = sorted(set(hk) - HOUSEKEEPING_KEYS)
        if "per-rank" in bad:
            found.append(
                "job-manager.housekeeping.per-rank is set: flux-core 0.88 refuses"
                " the key (left unpacked: per-rank) and the job manager fails"
            )
            fixes.append(
                "delete per-rank from [job-manager.housekeeping]; housekeeping"
                " already runs on every rank of the job"
            )
            bad.remove("per-rank")
        if bad:
            found.append(f"job-manager.housekeeping has unknown keys: {', '.join(bad)}")
            fixes.append(f"delete {', '.join(bad)} from [job-manager.housekeeping]")
    imp = obj.get("exec", {}).get("imp") if isinstance(obj.get("exec"), dict) else None
    needs_imp = (isinstance(prolog, dict) and "command" not in prolog) or (
        isinstance(hk, dict) and "command" not in hk
    )
    if needs_imp and not imp:
        found.append("exec.imp is not set, so there is no `flux-imp run` command")
        fixes.append(
            "set imp in [exec] to the path of flux-imp"
            " (flux-security's $libexecdir/flux/flux-imp)"
        )
    if found:
        return Result(FAIL, "; ".join(found), "; ".join(fixes))
    return Result(PASS, "perilog.so loaded, prolog per-rank, housekeeping configured")


def check_access(ctx: Context) -> Result:
    """access.allow-root-owner: root (drop-ins, pam_flux) acts as the owner."""
    obj, problems = ctx.instance_config()
    if obj is None:
        return Result(FAIL, "; ".join(problems), f"fix the TOML in {ctx.config_path}")
    access = obj.get("access", {})
    if isinstance(access, dict) and access.get("allow-root-owner") is True:
        return Result(PASS, "access.allow-root-owner = true")
    return Result(
        FAIL,
        "access.allow-root-owner is not true: as a guest, root cannot read other"
        " users' jobs, so the drop-ins fail and pam_flux cannot fall back to job-list",
        "set allow-root-owner = true in the [access] table of the instance config",
    )


def _imp_tables(ctx: Context) -> Tuple[Optional[dict], str]:
    try:
        obj, _ = config.read(ctx.path(ctx.imp_config))
    except config.ConfigError as exc:
        return None, "; ".join(exc.problems)
    return obj, ""


def check_imp_run(ctx: Context) -> Result:
    """[run.prolog] and [run.housekeeping] let the owner pass FLUX_*."""
    obj, err = _imp_tables(ctx)
    if obj is None:
        return Result(
            FAIL,
            err,
            f"create {ctx.imp_config}/pam.toml from the shipped IMP example"
            " (make install-config does, if nothing there sets [run.*])",
        )
    run = obj.get("run", {})
    run = run if isinstance(run, dict) else {}
    found: List[str] = []
    for name in ("prolog", "housekeeping"):
        table = run.get(name)
        if not isinstance(table, dict):
            found.append(f"no [run.{name}]")
            continue
        users = table.get("allowed-users", [])
        if not isinstance(users, list) or ctx.owner not in users:
            found.append(f"run.{name}.allowed-users lacks {ctx.owner!r}")
        env = table.get("allowed-environment", [])
        env = env if isinstance(env, list) else []
        missing = [
            var
            for var in IMP_ENV
            if not any(isinstance(p, str) and fnmatch.fnmatchcase(var, p) for p in env)
        ]
        if missing:
            found.append(
                f"run.{name}.allowed-environment does not pass {', '.join(missing)}"
            )
        path = table.get("path")
        if not isinstance(path, str) or not path:
            found.append(f"run.{name}.path is not set")
        elif not os.access(ctx.path(path), os.X_OK):
            found.append(f"run.{name}.path {path} is not an executable file")
    if found:
        return Result(
            FAIL,
            "; ".join(found),
            f"in {ctx.imp_config}: [run.prolog] and [run.housekeeping] need"
            f' allowed-users = [ "{ctx.owner}" ], allowed-environment = [ "FLUX_*" ]'
            " and path = the flux-run-prolog / flux-run-housekeeping command",
        )
    return Result(PASS, f"run.prolog and run.housekeeping allow {ctx.owner} and FLUX_*")


def check_imp_perms(ctx: Context) -> Result:
    """The IMP config files and their directory are root's, not world-writable."""
    top = ctx.path(ctx.imp_config)
    paths = [top] + (
        sorted(glob.glob(os.path.join(top, "*.toml"))) if os.path.isdir(top) else []
    )
    uid = ctx.trusted_uid
    found: List[str] = []
    warn: List[str] = []
    for p in paths:
        try:
            st = os.lstat(p)
        except OSError as exc:
            found.append(f"{p}: {exc.strerror}")
            continue
        if st.st_uid != uid:
            found.append(f"{p} is owned by uid {st.st_uid}")
        if st.st_mode & stat.S_IWOTH and not (
            stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        ):
            found.append(f"{p} is world-writable ({_mode(st)})")
        elif st.st_mode & stat.S_IWGRP:
            warn.append(f"{p} is group-writable ({_mode(st)})")
    fix = f"chown root:root and chmod go-w {ctx.imp_config} and its *.toml"
    if found:
        return Result(FAIL, "; ".join(found + warn), fix)
    if warn:
        return Result(WARN, "; ".join(warn), fix)
    return Result(PASS, f"{ctx.imp_config} and {len(paths) - 1} file(s) root-owned")


# --- node state -----------------------------------------------------------


def _tmpfiles_entry(ctx: Context) -> Optional[str]:
    """The tmpfiles.d line that creates the lock dir, or None."""
    for d in TMPFILES:
        p = ctx.path(os.path.join(d, "flux-pam.conf"))
        try:
            with open(p, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 5 and fields[0] in ("d", "D") and fields[1] == LOCK_DIR:
                return f"{os.path.join(d, 'flux-pam.conf')}: {line.strip()}"
    return None


def check_lock_dir(ctx: Context) -> Result:
    """/run/flux-pam is a root 0700 directory (or tmpfiles will make it)."""
    p = ctx.path(LOCK_DIR)
    fix = f"chown root:root {LOCK_DIR} && chmod 0700 {LOCK_DIR}"
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        entry = _tmpfiles_entry(ctx)
        if entry is None:
            return Result(
                FAIL,
                f"{LOCK_DIR} is absent and no tmpfiles.d entry creates it",
                "install /usr/lib/tmpfiles.d/flux-pam.conf"
                f" (d {LOCK_DIR} 0700 root root -), then systemd-tmpfiles --create",
            )
        fields = entry.split(": ", 1)[1].split()
        if fields[2] != "0700" or fields[3] != "root" or fields[4] != "root":
            return Result(
                FAIL,
                f"{LOCK_DIR} is absent and {entry} does not say 0700 root root",
                f"make the line read: d {LOCK_DIR} 0700 root root -",
            )
        return Result(
            WARN,
            f"{LOCK_DIR} is absent; created at boot by {entry.split(':')[0]}",
            "systemd-tmpfiles --create flux-pam.conf (or reboot)",
        )
    except OSError as exc:
        return Result(FAIL, f"{LOCK_DIR}: {exc.strerror}", fix)
    if not stat.S_ISDIR(st.st_mode):
        return Result(FAIL, f"{LOCK_DIR} is not a directory", f"remove it; {fix}")
    found = []
    if st.st_uid != ctx.trusted_uid:
        found.append(f"owned by uid {st.st_uid}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        found.append(
            f"group- or other-writable ({_mode(st)}): prologs and pam_flux refuse it"
        )
    if found:
        return Result(FAIL, f"{LOCK_DIR} is " + ", ".join(found), fix)
    if stat.S_IMODE(st.st_mode) != 0o700:
        return Result(WARN, f"{LOCK_DIR} mode is {_mode(st)}, not 0700", fix)
    return Result(PASS, f"{LOCK_DIR} is 0700 root")


def parse_systemd_version(text: str) -> int:
    """The version number from ``systemctl --version`` output."""
    m = re.match(r"systemd (\d+)", text.strip())
    if not m:
        raise ValueError(f"unexpected systemctl --version output: {text[:60]!r}")
    return int(m.group(1))


def check_systemd(ctx: Context) -> Result:
    """systemd is at least 239."""
    if not ctx.live:
        return Result(WARN, "skipped under --root", "run flux pam check on the node")
    try:
        out = subprocess.run(
            [ctx.systemctl, "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        version = parse_systemd_version(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return Result(
            FAIL, f"cannot tell the systemd version: {exc}", "install systemd"
        )
    if version < SYSTEMD_MIN:
        return Result(
            FAIL,
            f"systemd {version} is older than {SYSTEMD_MIN}",
            f"upgrade systemd to {SYSTEMD_MIN} or later",
        )
    return Result(PASS, f"systemd {version}")


def check_cgroup2(ctx: Context) -> Result:
    """The cgroup v2 unified hierarchy is mounted at /sys/fs/cgroup."""
    base = ctx.path("/sys/fs/cgroup")
    fix = (
        "boot with systemd.unified_cgroup_hierarchy=1"
        " (and without cgroup_no_v1 overrides that force v1)"
    )
    if os.path.exists(os.path.join(base, "cgroup.controllers")):
        return Result(PASS, "/sys/fs/cgroup is cgroup2 (unified)")
    if os.path.exists(os.path.join(base, "unified", "cgroup.controllers")):
        return Result(
            FAIL,
            "hybrid hierarchy: controllers are on cgroup v1,"
            " slice limits are not enforced",
            fix,
        )
    return Result(FAIL, "/sys/fs/cgroup is not cgroup2", fix)


# Memory limits of exec.sdexec-properties that the mapper carries to slices.
MEMORY_LIMITS = ("MemoryMax", "MemoryHigh", "MemorySwapMax")


def _needed_controllers(obj: dict) -> List[str]:
    """cgroup2 controllers the configured constraints need."""
    ex = obj.get("exec", {})
    ex = ex if isinstance(ex, dict) else {}
    if ex.get("sdexec-constrain-resources") is not True:
        return []
    needed = ["cpuset"]
    props = ex.get("sdexec-properties", {})
    props = props if isinstance(props, dict) else {}
    limits = [
        k
        for k in MEMORY_LIMITS
        if isinstance(props.get(k), str) and props[k].strip().lower() != "infinity"
    ]
    if limits:
        needed.append("memory")
    return needed


def check_cgroup_controllers(ctx: Context) -> Result:
    """cgroup2 offers user.slice the controllers the constraints need.

    cpuset with exec.sdexec-constrain-resources (AllowedCPUs,
    AllowedMemoryNodes), memory too when exec.sdexec-properties sets a
    memory limit.  systemd enables a controller for user.slice on demand,
    so what counts is the cgroup2 root's cgroup.controllers as the node
    sees it; where one is missing the module finds the union not enforced
    and refuses job users' logins.
    """
    obj, problems = ctx.instance_config()
    if obj is None:
        return Result(FAIL, "; ".join(problems), f"fix the TOML in {ctx.config_path}")
    needed = _needed_controllers(obj)
    if not needed:
        return Result(
            PASS, "exec.sdexec-constrain-resources is off: no controller needed"
        )
    path = ctx.path("/sys/fs/cgroup/cgroup.controllers")
    try:
        with open(path, encoding="utf-8") as f:
            have = f.read().split()
    except OSError:
        have = []
    missing = [c for c in needed if c not in have]
    if not missing:
        return Result(PASS, f"cgroup2 offers {', '.join(needed)} to user.slice")
    pam = obj.get("pam", {})
    opted = isinstance(pam, dict) and pam.get("allow-unconfined-logins") is True
    what = {"cpuset": "CPUs and memory nodes", "memory": "memory limits"}
    detail = (
        f"the cgroup2 hierarchy does not offer {' and '.join(missing)} to"
        " user.slice (/sys/fs/cgroup/cgroup.controllers:"
        f" {' '.join(have) or 'none'}): "
        + " and ".join(what[c] for c in missing)
        + " of user slices are not enforced, so logins of job users are "
        + ("admitted unconfined (pam.allow-unconfined-logins)" if opted else "refused")
    )
    fixes = []
    if "cpuset" in missing:
        fixes.append(
            "give cpuset to cgroup v2: boot with"
            " systemd.unified_cgroup_hierarchy=1 and mount no cgroup v1 cpuset"
            " hierarchy (one that exists keeps the controller from cgroup2);"
            " in a container, enable +cpuset in cgroup.subtree_control of every"
            " cgroup above it"
        )
    if "memory" in missing:
        fixes.append(
            "give memory to cgroup v2 the same way, or remove the memory"
            " limits from [exec] sdexec-properties"
        )
    return Result(FAIL, detail, "; ".join(fixes))


# --- PAM ------------------------------------------------------------------


def check_pam_systemd(ctx: Context) -> Result:
    """pam_systemd.so never runs for a job user in the sshd stack.

    It may run for root and the site's admins: a ``pam_succeed_if.so`` guard
    before it that skips it for every user with a uid of at least UID_MIN
    who is in none of the groups it names (pamstack.job_user_outcome) is
    followed through the controls of the whole session stack, includes
    included.
    """
    rules, problems = ctx.pam_rules()
    if not os.path.exists(ctx.stack_path):
        return Result(FAIL, f"{ctx.stack_path} is absent", "install the sshd PAM stack")
    session = [r for r in rules if r.type == "session"]
    uid_min = _uid_min(ctx)
    runs = pamstack.reachable(session, lambda r: pamstack.job_user_outcome(r, uid_min))
    found = [i for i, r in enumerate(session) if r.name == "pam_systemd.so"]
    hits = [session[i] for i in found if i in runs]
    if hits:
        return Result(
            FAIL,
            "pam_systemd.so runs for job users at "
            + ", ".join(r.where for r in hits)
            + ": logind would move their logins out of the job's slice",
            "remove it (Debian: pam-auth-update --disable systemd), or run it"
            " only for root and your admin group with pam_succeed_if.so, as"
            " the shipped examples/pam.d-sshd does",
        )
    if problems:
        return Result(WARN, "; ".join(problems), "fix the PAM files named above")
    if found:
        where = ", ".join(session[i].where for i in found)
        return Result(
            PASS, f"pam_systemd.so at {where} is skipped for job users (guarded)"
        )
    return Result(PASS, f"no pam_systemd.so in {len(rules)} rules")


def _is_pam_flux(rule: pamstack.Rule) -> bool:
    return rule.name == PAM_FLUX


def _is_python_pam_flux(rule: pamstack.Rule) -> bool:
    """The Python pam_flux of earlier releases, run by pam_python.so."""
    return (
        rule.name == "pam_python.so"
        and len(rule.args) > 0
        and os.path.basename(rule.args[0]) == "pam_flux.py"
    )


def _module_exists(ctx: Context, module: str) -> bool:
    """Whether libpam finds *module* (a path, or a name in its directory)."""
    if module.startswith("/"):
        return os.path.exists(ctx.path(module))
    import sysconfig

    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = {d.format(multiarch=multiarch) for d in PAM_MODULE_DIRS}
    return any(os.path.exists(ctx.path(os.path.join(d, module))) for d in dirs)


_WHO = {"account": "users without jobs", "session": "unconfined sessions"}


def check_pam_flux(ctx: Context) -> Result:
    """pam_flux is in the account and session stacks, in the documented order.

    Account: after the pam_unix account rule (so expiry and locks are
    checked first), ``required`` or ``requisite``; or ``sufficient`` when a
    later ``required``/``requisite`` rule (pam_access) decides for everyone
    else.  Session: ``required`` or ``requisite``, after pam_unix.
    """
    if not os.path.exists(ctx.stack_path):
        return Result(FAIL, f"{ctx.stack_path} is absent", "install the sshd PAM stack")
    rules, _ = ctx.pam_rules()
    fix = (
        f"in the sshd stack, after @include common-account: account required"
        f" {PAM_FLUX}; after @include common-session: session requisite"
        f" {PAM_FLUX} (see pam_flux(8))"
    )
    found: List[str] = [
        f"{r.where}: the Python pam_flux (pam_python.so pam_flux.py) is no longer"
        f" shipped; use {PAM_FLUX}"
        for r in rules
        if _is_python_pam_flux(r)
    ]
    warn: List[str] = []
    account = [r for r in rules if r.type == "account"]
    session = [r for r in rules if r.type == "session"]
    for kind, stack in (("account", account), ("session", session)):
        mine = [i for i, r in enumerate(stack) if _is_pam_flux(r)]
        if not mine:
            found.append(f"no {kind} rule runs {PAM_FLUX}")
            continue
        i = mine[0]
        rule = stack[i]
        if not _module_exists(ctx, rule.module):
            found.append(
                f"{rule.where}: {rule.module} is not installed"
                " (make install builds it where flux-core's development files are)"
            )
        later_unix = [r for r in stack[i + 1 :] if r.name == "pam_unix.so"]
        ctl = rule.control
        if kind == "account" and ctl == "sufficient":
            if later_unix:
                found.append(
                    f"{rule.where}: sufficient before pam_unix ({later_unix[0].where})"
                    " skips the account checks of pam_unix"
                )
            deciders = [
                r for r in stack[i + 1 :] if r.control in ("required", "requisite")
            ]
            if not deciders:
                found.append(
                    f"{rule.where}: sufficient with no later required rule: a"
                    " denial is ignored and users without jobs get in"
                )
        elif ctl in ("required", "requisite"):
            if later_unix:
                warn.append(
                    f"{rule.where}: {kind} pam_flux before pam_unix"
                    f" ({later_unix[0].where})"
                )
        elif ctl.startswith("["):
            warn.append(f"{rule.where}: cannot verify the control {ctl}")
        else:
            found.append(f"{rule.where}: control {ctl!r} lets {_WHO[kind]} through")
    if found:
        return Result(FAIL, "; ".join(found + warn), fix)
    if warn:
        return Result(WARN, "; ".join(warn), fix)
    return Result(PASS, "pam_flux in account and session, in order")


# --- users, polkit, module, drop-ins --------------------------------------


def _passwd(ctx: Context) -> Dict[str, int]:
    users: Dict[str, int] = {}
    try:
        with open(ctx.path("/etc/passwd"), encoding="utf-8") as f:
            for line in f:
                fields = line.strip().split(":")
                if len(fields) >= 3 and fields[2].isdigit():
                    users[fields[0]] = int(fields[2])
    except OSError:
        pass
    return users


def _uid_min(ctx: Context) -> int:
    try:
        with open(ctx.path("/etc/login.defs"), encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "UID_MIN" and fields[1].isdigit():
                    return int(fields[1])
    except OSError:
        pass
    return 1000


def check_linger(ctx: Context) -> Result:
    """No job user has systemd linger on.

    Job users are the regular users (uid >= UID_MIN of login.defs, and any
    name not in /etc/passwd); the owner and system users are exempt.
    """
    d = ctx.path("/var/lib/systemd/linger")
    try:
        names = sorted(os.listdir(d))
    except FileNotFoundError:
        return Result(PASS, "no linger directory")
    except OSError as exc:
        return Result(FAIL, f"{d}: {exc.strerror}", "make it readable by root")
    users = _passwd(ctx)
    uid_min = _uid_min(ctx)
    bad = [
        n for n in names if n != ctx.owner and (n not in users or users[n] >= uid_min)
    ]
    if bad:
        return Result(
            FAIL,
            f"linger is on for {', '.join(bad)}: their prologs will fail",
            "loginctl disable-linger " + " ".join(bad),
        )
    return Result(PASS, f"no job user lingers ({len(names)} system user(s) do)")


def check_polkit(ctx: Context) -> Result:
    """The polkit rule that lets the owner manage user slices is installed."""
    for d in POLKIT_DIRS:
        p = ctx.path(os.path.join(d, POLKIT_RULE))
        try:
            with open(p, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        if f'"{ctx.owner}"' not in text:
            return Result(
                FAIL,
                f"{d}/{POLKIT_RULE} does not name the owner {ctx.owner!r}",
                f'edit the user name in the rule to "{ctx.owner}"',
            )
        return Result(PASS, f"{d}/{POLKIT_RULE}")
    return Result(
        FAIL,
        f"{POLKIT_RULE} is in neither {' nor '.join(POLKIT_DIRS)}:"
        " the module's systemd calls will be refused",
        f"make install (installs {POLKIT_DIRS[1]}/{POLKIT_RULE})",
    )


def check_module(ctx: Context) -> Result:
    """The pam broker module is loaded on this rank."""
    if not ctx.live:
        return Result(WARN, "skipped under --root", "run flux pam check on the node")
    try:
        import flux  # noqa: PLC0415 - imported lazily, only on a live node

        h = flux.Flux()
        mods = h.rpc("module.list").get().get("mods", [])
        rank = h.get_rank()
    except ImportError:
        return Result(
            WARN, "the flux Python bindings do not import", "run as `flux pam check`"
        )
    except OSError as exc:
        return Result(
            WARN,
            f"cannot ask the broker: {errtext(exc)}",
            "start flux (systemctl start flux) or set FLUX_URI",
        )
    if any(m.get("name") == "pam" for m in mods):
        try:
            closed = h.rpc("pam.status", {"uid": 0}).get().get("closed")
        except OSError as exc:
            closed = f"pam.status: {errtext(exc)}"
        if closed:
            return Result(
                FAIL,
                f"pam module on rank {rank} is closed (job users cannot log in;"
                f" jobs run, slices are not managed): {closed}",
                "correct the key in the file named, then `flux config reload`"
                " (no restart needed)",
            )
        return Result(PASS, f"pam module loaded on rank {rank}")
    return Result(
        WARN,
        f"pam module not loaded on rank {rank}: the drop-ins work alone (fallback)",
        "flux module load pam (installed through modprobe: see flux-config-pam(5))",
    )


def check_drop_ins(ctx: Context) -> Result:
    """flux-pam-prolog and flux-pam-housekeeping are installed, root's, executable."""
    found: List[str] = []
    where: List[str] = []
    uid = ctx.trusted_uid
    for kind, name in DROP_INS.items():
        candidates = [
            os.path.join(ctx.libexecdir, f"{kind}.d", name),
            os.path.join(ctx.confdir, "system", f"{kind}.d", name),
        ]
        present = [c for c in candidates if os.path.lexists(ctx.path(c))]
        if not present:
            found.append(f"{candidates[0]} is absent")
            continue
        c = present[0]
        st = os.stat(ctx.path(c))
        if not stat.S_ISREG(st.st_mode):
            found.append(f"{c} is not a regular file")
        elif not st.st_mode & stat.S_IXUSR:
            found.append(f"{c} is not executable ({_mode(st)})")
        if st.st_uid != uid:
            found.append(f"{c} is owned by uid {st.st_uid}")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            found.append(f"{c} is group- or other-writable ({_mode(st)})")
        where.append(c)
    if found:
        return Result(
            FAIL,
            "; ".join(found),
            "make install (it asks flux-core for its libexecdir: see the admin"
            " guide); the drop-ins must be root-owned, mode 0755",
        )
    return Result(PASS, ", ".join(where))


CHECKS: List[Tuple[str, Callable[[Context], Result]]] = [
    ("config", check_config),
    ("perilog", check_perilog),
    ("access", check_access),
    ("imp-run", check_imp_run),
    ("imp-permissions", check_imp_perms),
    ("lock-dir", check_lock_dir),
    ("systemd", check_systemd),
    ("cgroup2", check_cgroup2),
    ("cgroup-controllers", check_cgroup_controllers),
    ("pam-systemd", check_pam_systemd),
    ("pam-flux", check_pam_flux),
    ("linger", check_linger),
    ("polkit", check_polkit),
    ("module", check_module),
    ("drop-ins", check_drop_ins),
]


def run_checks(ctx: Context) -> List[Tuple[str, Result]]:
    """Run every check; a check that raises is reported as a FAIL."""
    out = []
    for name, fn in CHECKS:
        try:
            res = fn(ctx)
        except Exception as exc:  # noqa: BLE001 - report, do not abort the run
            res = Result(
                FAIL, f"check crashed: {type(exc).__name__}: {exc}", "report a bug"
            )
        out.append((name, res))
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "check",
        help="check this node's configuration",
        description="Check the node's configuration for flux-pam-service.",
    )
    p.add_argument("--root", default="/", metavar="DIR", help="check the tree at DIR")
    p.add_argument(
        "--pam-stack",
        metavar="FILE",
        help="sshd PAM file (default ROOT/etc/pam.d/sshd)",
    )
    p.add_argument(
        "--config-path",
        metavar="PATH",
        help="instance config below ROOT (default: the broker's config.path)",
    )
    p.add_argument(
        "--imp-config",
        metavar="PATH",
        help="IMP config below ROOT (default: flux-security's, for exec.imp)",
    )
    p.add_argument(
        "--libexecdir", metavar="DIR", help="flux's libexecdir, e.g. /usr/libexec/flux"
    )
    p.add_argument(
        "--owner", default="flux", help="instance owner (default %(default)s)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per check; 1 if any FAILs."""
    if not os.path.isdir(args.root):
        print(f"flux-pam check: --root {args.root}: not a directory", file=sys.stderr)
        return 2
    ctx = Context(root=args.root, pam_stack=args.pam_stack, owner=args.owner)
    if ctx.live:
        where = instance.locate()
        ctx.config_path, ctx.imp_config = where.config_path, where.imp_config
        ctx.confdir, ctx.libexecdir = where.confdir, where.libexecdir
        if args.config_path is None:
            print(f"using instance config {where.config_path} ({where.source})")
        if args.imp_config is None:
            print(f"using IMP config {where.imp_config} ({where.imp_source})")
    ctx.config_path = args.config_path or ctx.config_path
    ctx.imp_config = args.imp_config or ctx.imp_config
    ctx.libexecdir = args.libexecdir or ctx.libexecdir
    failed = False
    for name, res in run_checks(ctx):
        print(f"{res.status}  {name}: {res.detail}")
        if res.status != PASS:
            print(f"      fix: {res.fix}")
        failed = failed or res.status == FAIL
    sys.stdout.flush()
    return 1 if failed else 0

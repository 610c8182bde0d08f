"""Checks of the node: lock directory, systemd, cgroups, linger, polkit."""

import os
import re
import stat
import subprocess
from typing import List, Optional

from flux_pam_service.cli.check.context import (
    FAIL,
    PASS,
    POLKIT_DIRS,
    POLKIT_RULE,
    SYSTEMD_MIN,
    TMPFILES,
    WARN,
    Context,
    Result,
    mode_text,
    passwd,
    uid_min,
)
from flux_pam_service.core.lockdir import DEFAULT as LOCK_DIR


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
            f"group- or other-writable ({mode_text(st)}):"
            " prologs and pam_flux refuse it"
        )
    if found:
        return Result(FAIL, f"{LOCK_DIR} is " + ", ".join(found), fix)
    if stat.S_IMODE(st.st_mode) != 0o700:
        return Result(WARN, f"{LOCK_DIR} mode is {mode_text(st)}, not 0700", fix)
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


def _login_memory_max(obj: dict) -> bool:
    """pam.login-memory-max sets a limit."""
    pam = obj.get("pam", {})
    value = pam.get("login-memory-max") if isinstance(pam, dict) else None
    return value is not None and str(value).strip().lower() != "infinity"


def _needed_controllers(obj: dict) -> List[str]:
    """cgroup2 controllers the configured constraints need."""
    ex = obj.get("exec", {})
    ex = ex if isinstance(ex, dict) else {}
    needed = []
    limits = []
    if ex.get("sdexec-constrain-resources") is True:
        needed.append("cpuset")
        props = ex.get("sdexec-properties", {})
        props = props if isinstance(props, dict) else {}
        limits = [
            k
            for k in MEMORY_LIMITS
            if isinstance(props.get(k), str) and props[k].strip().lower() != "infinity"
        ]
    if limits or _login_memory_max(obj):
        needed.append("memory")
    return needed


def check_cgroup_controllers(ctx: Context) -> Result:
    """cgroup2 offers user.slice the controllers the constraints need.

    cpuset with exec.sdexec-constrain-resources (AllowedCPUs,
    AllowedMemoryNodes), memory when exec.sdexec-properties sets a memory
    limit or pam.login-memory-max is set.  systemd enables a controller for
    user.slice on demand, so what counts is the cgroup2 root's
    cgroup.controllers as the node sees it; where one is missing the module
    finds the union not enforced and refuses job users' logins.
    """
    obj, problems = ctx.instance_config()
    if obj is None:
        return Result(FAIL, "; ".join(problems), f"fix the TOML in {ctx.config_path}")
    needed = _needed_controllers(obj)
    if not needed:
        return Result(
            PASS,
            "exec.sdexec-constrain-resources is off and pam.login-memory-max"
            " is not set: no controller needed",
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
            " limits from [exec] sdexec-properties and pam.login-memory-max"
        )
    return Result(FAIL, detail, "; ".join(fixes))


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
    users = passwd(ctx)
    minimum = uid_min(ctx)
    bad = [
        n for n in names if n != ctx.owner and (n not in users or users[n] >= minimum)
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

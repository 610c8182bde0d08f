"""What every check of ``flux pam check`` shares: where it looks, what it says.

A check is a function ``check_NAME(ctx) -> Result``; Context says where the
node's files are (ROOT and the instance's paths) and caches what several
checks read.
"""

import os
import stat
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from flux_pam_service.cli.check import pamd
from flux_pam_service.core import config

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
TMPFILES = ("/etc/tmpfiles.d", "/run/tmpfiles.d", "/usr/lib/tmpfiles.d")
POLKIT_RULE = "60-flux-pam.rules"
POLKIT_DIRS = ("/etc/polkit-1/rules.d", "/usr/share/polkit-1/rules.d")
DROP_INS = {"prolog": "flux-pam-prolog", "housekeeping": "flux-pam-housekeeping"}
SYSTEMD_MIN = 239
# The environment the IMP must pass to our drop-ins (doc/design.rst, "The drop-ins").
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
        """uid that must own security-relevant files: root on the live system,
        the owner of ROOT under --root (root for a real image, the test user
        for a test tree)."""
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

    def pam_rules(self) -> Tuple[List[pamd.Rule], List[str]]:
        """The expanded sshd stack and the problems reading it."""
        if "pam" not in self._cache:
            self._cache["pam"] = pamd.read(self.stack_path, self.root)
        return self._cache["pam"]  # type: ignore[return-value]


def mode_text(st: os.stat_result) -> str:
    """A file's mode as four octal digits."""
    return f"{stat.S_IMODE(st.st_mode):04o}"


def passwd(ctx: Context) -> Dict[str, int]:
    """User names and uids of the target's /etc/passwd."""
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


def uid_min(ctx: Context) -> int:
    """UID_MIN of the target's /etc/login.defs (1000 if unset)."""
    try:
        with open(ctx.path("/etc/login.defs"), encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "UID_MIN" and fields[1].isdigit():
                    return int(fields[1])
    except OSError:
        pass
    return 1000

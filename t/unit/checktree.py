"""A node tree that `flux pam check --root` passes, built from the repo's files.

The configuration files are the shipped examples (etc/), so the check tests
also prove that the examples are right.  Only what flux-core and Debian
provide on a real node (the flux-run-* commands, the common-* PAM files,
passwd) and the site's multi-user instance config (exec.imp) is written
here.
"""

import os
import shutil
import sysconfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Debian's pam-auth-update output, with the systemd profile disabled.
COMMON = {
    "common-auth": """\
auth	[success=1 default=ignore]	pam_unix.so nullok
auth	requisite			pam_deny.so
auth	required			pam_permit.so
""",
    "common-account": """\
account	[success=1 new_authtok_reqd=done default=ignore]	pam_unix.so
account	requisite			pam_deny.so
account	required			pam_permit.so
""",
    "common-session": """\
session	[default=1]			pam_permit.so
session	requisite			pam_deny.so
session	required			pam_permit.so
session	required	pam_unix.so
""",
    "common-password": """\
password	[success=1 default=ignore]	pam_unix.so obscure yescrypt
password	requisite			pam_deny.so
password	required			pam_permit.so
""",
}

SYSTEM = """\
[exec]
imp = "/usr/libexec/flux/flux-imp"
"""

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
flux:x:999:999::/var/lib/flux:/usr/sbin/nologin
alice:x:1000:1000::/home/alice:/bin/bash
bob:x:1001:1001::/home/bob:/bin/bash
"""

# Files of the repo and where they go on a node (same as mk/install.mk with
# the defaults).
FROM_REPO = {
    "etc/flux/system/conf.d/pam.toml": "etc/flux/system/conf.d/pam.toml",
    "etc/flux/system/perilog.toml": "etc/flux/system/conf.d/perilog.toml",
    "etc/flux/imp/conf.d/pam.toml": "etc/flux/imp/conf.d/pam.toml",
    "etc/pam.d/sshd": "etc/pam.d/sshd",
    "etc/tmpfiles.d/flux-pam.conf": "usr/lib/tmpfiles.d/flux-pam.conf",
    "etc/polkit-1/rules.d/60-flux-pam.rules": (
        "usr/share/polkit-1/rules.d/60-flux-pam.rules"
    ),
    "libexec/prolog.d/flux-pam-prolog": "usr/libexec/flux/prolog.d/flux-pam-prolog",
    "libexec/housekeeping.d/flux-pam-housekeeping": (
        "usr/libexec/flux/housekeeping.d/flux-pam-housekeeping"
    ),
}
# pam_flux.so where libpam looks for it (a stand-in: the unit tier does not
# build the module)
PAM_MODULE = f"lib/{sysconfig.get_config_var('MULTIARCH') or ''}/security/pam_flux.so"
EXECUTABLE = {
    "usr/libexec/flux/prolog.d/flux-pam-prolog",
    "usr/libexec/flux/housekeeping.d/flux-pam-housekeeping",
}


def write(root, rel, text, mode=0o644):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def build(root):
    """Populate *root* (a str) as a correctly configured node; return it."""
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    for src, dst in FROM_REPO.items():
        path = os.path.join(REPO, src)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"repo file {src} is missing: the good tree needs it"
            )
        out = os.path.join(root, dst)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        shutil.copyfile(path, out)
        os.chmod(out, 0o755 if dst in EXECUTABLE else 0o644)
    for name, text in COMMON.items():
        write(root, f"etc/pam.d/{name}", text)
    write(root, PAM_MODULE, "stands for pam_flux.so\n")
    for cmd in ("flux-run-prolog", "flux-run-housekeeping"):
        write(root, f"usr/libexec/flux/cmd/{cmd}", "#!/bin/sh\nexit 0\n", 0o755)
    # the site's multi-user instance sets the IMP that runs jobs
    write(root, "etc/flux/system/conf.d/system.toml", SYSTEM)
    write(root, "etc/passwd", PASSWD)
    write(root, "etc/login.defs", "UID_MIN\t\t\t 1000\nUID_MAX\t\t\t60000\n")
    write(root, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
    os.makedirs(os.path.join(root, "run/flux-pam"))
    os.chmod(os.path.join(root, "run/flux-pam"), 0o700)
    os.makedirs(os.path.join(root, "var/lib/systemd/linger"))
    return root

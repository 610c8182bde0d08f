"""``flux pam check``: a preflight doctor for one node (flux-pam(1)).

Prints one line per check, ``PASS``, ``WARN`` or ``FAIL``, with what it
found and, for anything but a PASS, the fix; exits 1 if any check FAILs.
``--root DIR`` checks a tree that is not the live system.  Each check is a
function ``check_NAME(ctx) -> Result`` listed in CHECKS (by idea: the
configuration files, the node, the login stack, what is installed); a check
never raises for what it finds on disk.
"""

import argparse
import os
import sys
from typing import Callable, List, Tuple

from flux_pam_service.cli import instance, options
from flux_pam_service.cli.check.context import FAIL, PASS, WARN, Context, Result
from flux_pam_service.cli.check.flux_config import (
    check_access,
    check_config,
    check_imp_perms,
    check_imp_run,
    check_perilog,
)
from flux_pam_service.cli.check.installed import check_drop_ins, check_module
from flux_pam_service.cli.check.login import check_pam_flux, check_pam_systemd
from flux_pam_service.cli.check.node import (
    check_cgroup2,
    check_cgroup_controllers,
    check_linger,
    check_lock_dir,
    check_polkit,
    check_systemd,
)

__all__ = ["CHECKS", "FAIL", "PASS", "WARN", "Context", "Result", "run_checks"]


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
    options.config_path(p, "instance config below ROOT")
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

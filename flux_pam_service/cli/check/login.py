"""Checks of the sshd PAM stack: pam_systemd kept away from job users,
pam_flux in the account and session stacks."""

import os
import sysconfig
from typing import List

from flux_pam_service.cli.check import pamd
from flux_pam_service.cli.check.context import (
    FAIL,
    PAM_FLUX,
    PAM_MODULE_DIRS,
    PASS,
    WARN,
    Context,
    Result,
    uid_min,
)


def check_pam_systemd(ctx: Context) -> Result:
    """pam_systemd.so never runs for a job user in the sshd stack.

    It may run for root and the site's admins: a ``pam_succeed_if.so`` guard
    before it that skips it for every user with a uid of at least UID_MIN
    who is in none of the groups it names (pamd.job_user_outcome) is
    followed through the controls of the whole session stack, includes
    included.
    """
    rules, problems = ctx.pam_rules()
    if not os.path.exists(ctx.stack_path):
        return Result(FAIL, f"{ctx.stack_path} is absent", "install the sshd PAM stack")
    session = [r for r in rules if r.type == "session"]
    minimum = uid_min(ctx)
    runs = pamd.reachable(session, lambda r: pamd.job_user_outcome(r, minimum))
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


def _is_pam_flux(rule: pamd.Rule) -> bool:
    return rule.name == PAM_FLUX


def _is_python_pam_flux(rule: pamd.Rule) -> bool:
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

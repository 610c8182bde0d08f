"""Checks of the instance's and the IMP's configuration files."""

import fnmatch
import glob
import os
import stat
from typing import List, Optional, Tuple

from flux_pam_service.cli.check.context import (
    FAIL,
    HOUSEKEEPING_KEYS,
    IMP_ENV,
    PASS,
    WARN,
    Context,
    Result,
    mode_text,
)
from flux_pam_service.core import config


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
            found.append(f"{p} is world-writable ({mode_text(st)})")
        elif st.st_mode & stat.S_IWGRP:
            warn.append(f"{p} is group-writable ({mode_text(st)})")
    fix = f"chown root:root and chmod go-w {ctx.imp_config} and its *.toml"
    if found:
        return Result(FAIL, "; ".join(found + warn), fix)
    if warn:
        return Result(WARN, "; ".join(warn), fix)
    return Result(PASS, f"{ctx.imp_config} and {len(paths) - 1} file(s) root-owned")

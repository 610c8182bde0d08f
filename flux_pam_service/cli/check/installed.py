"""Checks of what runs on the node: the broker module, the drop-ins."""

import os
import stat
from typing import List

from flux_pam_service.cli.check.context import (
    DROP_INS,
    FAIL,
    PASS,
    WARN,
    Context,
    Result,
    mode_text,
)
from flux_pam_service.core.errors import errtext


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
            found.append(f"{c} is not executable ({mode_text(st)})")
        if st.st_uid != uid:
            found.append(f"{c} is owned by uid {st.st_uid}")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            found.append(f"{c} is group- or other-writable ({mode_text(st)})")
        where.append(c)
    if found:
        return Result(
            FAIL,
            "; ".join(found),
            "make install (it asks flux-core for its libexecdir: see the admin"
            " guide); the drop-ins must be root-owned, mode 0755",
        )
    return Result(PASS, ", ".join(where))

"""``flux pam slice show|reset USER``: one user's slice by hand (root only).

``show`` prints what systemd has for the user's slice and user manager, the
marker, linger and the module's view; ``reset`` returns the slice to the
state it has with no job on the node, as housekeeping leaves it (flux-pam(1)
says when it refuses, and what ``--kill`` does).  The module file is named
after the subcommand without shadowing the builtin ``slice``.
"""

import argparse
import errno
import json
import os
import sys
from typing import Any, Dict, Optional

from flux_pam_service.cli import instance, options
from flux_pam_service.cli.status import resolve_user, user_name
from flux_pam_service.core import config, fsd, lockdir
from flux_pam_service.core.errors import errtext
from flux_pam_service.core.jobid import f58

LOCK_TIMEOUT = 10.0


class SliceCommandError(OSError):
    """A refusal or failure of `flux pam slice`; the message names the cause."""


def require_root() -> None:
    """Refuse anyone but root."""
    if os.geteuid() != 0:
        raise SliceCommandError(errno.EPERM, "flux pam slice is for root only")


def module_view(uid: int) -> Dict[str, Any]:
    """The pam module's entry for *uid* on this rank.

    ``{"loaded": True, "user": {...} or None, "owner": N}``, or
    ``{"loaded": False, "reason": TEXT}`` when it cannot be asked.
    """
    try:
        import flux  # noqa: PLC0415 - lazy

        resp = flux.Flux().rpc("pam.status", {"uid": uid}).get()
    except ImportError:
        return {"loaded": False, "reason": "flux Python bindings not importable"}
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return {"loaded": False, "reason": "pam module not loaded"}
        return {"loaded": False, "reason": f"broker: {errtext(exc)}"}
    users = [u for u in resp.get("users", []) if u.get("uid") == uid]
    return {
        "loaded": True,
        "user": users[0] if users else None,
        "owner": resp.get("owner"),
    }


def _user_slice(uid: int) -> Any:
    from flux_pam_service.systemd.client import Systemd  # noqa: PLC0415
    from flux_pam_service.systemd.user_slice import UserSlice  # noqa: PLC0415 - lazy: jeepney

    return UserSlice(Systemd(), uid)


def _linger(us: Any) -> str:
    from flux_pam_service.systemd.user_slice import LingerError  # noqa: PLC0415

    try:
        us.check_linger()
    except LingerError:
        return "on"
    except OSError as exc:
        return f"unknown ({exc})"
    return "off"


def show(args: argparse.Namespace, uid: int) -> int:
    """Print the slice, the marker, linger and the module's view."""
    us = _user_slice(uid)
    try:
        state: Optional[dict] = us.state()
        sd_error = None
    except OSError as exc:
        state, sd_error = None, str(exc)
    view = {
        "uid": uid,
        "user": user_name(uid),
        "systemd": state if state is not None else {"error": sd_error},
        "marker": lockdir.has_marker(uid, args.lock_dir),
        "linger": _linger(us),
        "module": module_view(uid),
    }
    if args.json:
        print(json.dumps(view, indent=2))
        return 0 if state is not None else 1
    print(f"user:    {view['user']} (uid {uid})")
    if state is None:
        print(f"systemd: {sd_error}")
    else:
        for key, value in state.items():
            if key in ("uid", "user"):
                continue
            if isinstance(value, list):
                value = (
                    ", ".join(
                        str(v) if not isinstance(v, list) else " ".join(v)
                        for v in value
                    )
                    or "-"
                )
            print(f"  {key + ':':<20} {value if value != '' else '-'}")
    where = lockdir.marker_path(uid, args.lock_dir)
    print(f"marker:  {'present' if view['marker'] else 'absent'} ({where})")
    print(f"linger:  {view['linger']}")
    mod = view["module"]
    if not mod["loaded"]:
        print(f"module:  {mod['reason']}")
    elif mod["user"] is None:
        print("module:  no job of this user on this rank")
    else:
        u = mod["user"]
        jobs = ", ".join(f58(j["id"]) for j in u.get("jobs", [])) or "none"
        print(f"module:  active={u.get('active')} admitted={u.get('admitted')}")
        print(f"         jobs: {jobs}")
    return 0 if state is not None else 1


def reset(args: argparse.Namespace, uid: int) -> int:
    """Tear the slice down as housekeeping would after the last job."""
    mod = module_view(uid)
    if uid == 0 or (mod["loaded"] and mod.get("owner") == uid):
        raise SliceCommandError(
            errno.EINVAL,
            f"uid {uid} is root or the instance owner: its slice is not managed",
        )
    if not args.force:
        if mod["loaded"] and mod["user"] and mod["user"].get("jobs"):
            jobs = ", ".join(f58(j["id"]) for j in mod["user"]["jobs"])
            raise SliceCommandError(
                errno.EBUSY,
                f"user {user_name(uid)} still has job(s) on this rank: {jobs}"
                " (--force resets anyway)",
            )
        if not mod["loaded"] and lockdir.has_marker(uid, args.lock_dir):
            raise SliceCommandError(
                errno.EBUSY,
                f"{lockdir.marker_path(uid, args.lock_dir)} says user {user_name(uid)}"
                f" has an active job here ({mod['reason']}; --force resets anyway)",
            )
    grace = args.grace
    if grace is None:
        path = args.config_path or instance.locate().config_path
        try:
            grace = config.load(path, strict=False).kill_slice_grace_time
        except config.ConfigError:
            grace = 30.0
    us = _user_slice(uid)
    with lockdir.user_lock(uid, args.lock_dir, LOCK_TIMEOUT):
        lockdir.clear_marker(uid, args.lock_dir)
        us.teardown(kill=args.kill, grace=grace)
    print(
        f"user-{uid}.slice reset: marker removed, user@{uid}.service stopped,"
        f" properties reverted{' after killing its processes' if args.kill else ''}"
    )
    return 0


def _grace(text: str) -> float:
    try:
        value = fsd.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value == float("inf"):
        raise argparse.ArgumentTypeError("infinity is not a grace time")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "slice",
        help="show or reset one user's slice (root only)",
        description="Show or reset one user's systemd slice on this node.",
    )
    verbs = p.add_subparsers(dest="verb", metavar="show|reset")
    verbs.required = True
    for verb, text in (("show", "show the slice"), ("reset", "reset the slice")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("user", metavar="USER", help="login name or uid")
        options.lock_dir(v, "lock and marker directory")
        if verb == "show":
            v.add_argument("--json", action="store_true", help="print JSON")
        else:
            v.add_argument("--force", action="store_true", help="reset even with jobs")
            v.add_argument(
                "--kill", action="store_true", help="kill what runs in the slice"
            )
            v.add_argument(
                "--grace", type=_grace, metavar="FSD", help="wait after each signal"
            )
            options.config_path(v, "for the default grace time")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch show/reset; print the error and return 1 on failure."""
    try:
        require_root()
        uid = resolve_user(args.user)
        return show(args, uid) if args.verb == "show" else reset(args, uid)
    except (OSError, ValueError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"flux-pam slice {args.verb}: {text}", file=sys.stderr)
        return 1

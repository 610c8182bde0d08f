"""``flux pam status``: what the pam broker module knows, per user and rank.

Sends ``pam.status`` to one rank or, with ``--all``, to every rank at once,
and prints a row per user; without the module it shows what the node has
(the markers in the lock directory, the units in systemd).  The columns and
the exit code are flux-pam(1)'s.  The flux and systemd modules are imported
lazily: ``flux-pam --help`` works without either.
"""

import argparse
import errno
import json
import pwd
import sys
import time
from typing import Any, Dict, List, Optional

from flux_pam_service.cli import options
from flux_pam_service.core import lockdir

UNIT_PATTERNS = ["user-*.slice", "user@*.service", "flux-pam-*.scope"]


def resolve_user(text: str) -> int:
    """uid of a user name or number; ValueError naming *text* if unknown."""
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise ValueError(f"unknown user {text!r}") from None


def user_name(uid: int) -> str:
    """Login name of *uid*, or the number when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def age(then: float, now: Optional[float] = None) -> str:
    """Short age of the epoch time *then*: ``5s``, ``3m``, ``2h``, ``4d``."""
    secs = max(0.0, (time.time() if now is None else now) - then)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{int(secs // size)}{unit}"
    return f"{int(secs)}s"


def _unit_state(slice_state: Optional[dict], key: str) -> str:
    """``slice_state`` or ``service_state`` of the live read, or "-"."""
    if not isinstance(slice_state, dict):
        return "-"
    return str(slice_state.get(key) or "-")


def _scopes(slice_state: Optional[dict]) -> str:
    if not isinstance(slice_state, dict):
        return "-"
    scopes = slice_state.get("scopes")
    if isinstance(scopes, list):
        return str(len(scopes))
    return "-"


ENFORCED = {
    "enforced": "yes",
    "not-enforced": "no",
    "unconfined": "unconfined",
    "unknown": "?",
    "off": "-",
}


def _enforcement(obj: dict) -> dict:
    value = obj.get("enforcement")
    return value if isinstance(value, dict) else {}


def enforcement_line(enf: dict) -> Optional[str]:
    """What is not enforced and why, and what happens to logins; or None."""
    state = enf.get("state")
    if state not in ("not-enforced", "unconfined"):
        return None
    missing = ", ".join(enf.get("missing", [])) or "?"
    reasons = "; ".join(enf.get("reasons", []))
    then = (
        "logins refused"
        if state == "not-enforced"
        else "logins admitted unconfined (pam.allow-unconfined-logins)"
    )
    return f"not enforced: {missing} ({reasons}): {then}"


def _held(values: dict) -> str:
    """``CPUs 0-1, memory nodes 0, memory.max 1073741824`` of what was read."""
    parts = []
    for key, label in (
        ("cpus", "CPUs"),
        ("mems", "memory nodes"),
        ("memory_max", "memory.max"),
    ):
        if values.get(key) not in (None, ""):
            parts.append(f"{label} {values[key]}")
    return ", ".join(parts)


def held_lines(user: dict) -> List[str]:
    """What the kernel gives the user's slice (its latest read-back) and
    each live login (its scope's cgroup), one line each."""
    lines = []
    read = _held(_enforcement(user).get("effective") or {})
    if read:
        lines.append(f"kernel: {read}")
    for login in user.get("logins") or []:
        if not isinstance(login, dict):
            continue
        where = f"login {login.get('scope')} in {login.get('slice')}"
        lines.append(f"{where}: {_held(login) or 'no cpuset or memory files'}")
    return lines


def rows(response: dict, now: Optional[float] = None) -> List[List[str]]:
    """Table rows (and error lines) for one pam.status response."""
    out: List[List[str]] = []
    rank = str(response.get("rank", "?"))
    shown = False
    for user in response.get("users", []):
        jobs = user.get("jobs", [])
        running = sum(1 for j in jobs if j.get("running"))
        union = user.get("union") or {}
        last = user.get("last_action")
        if isinstance(last, dict):
            result = last.get("result", "")
            mark = "" if result == "ok" else f" ({result})"
            last_text = (
                f"{last.get('action', '?')}{mark} {age(last.get('time', 0), now)} ago"
            )
        else:
            last_text = "-"
        sl = user.get("slice")
        out.append(
            [
                rank,
                user_name(user.get("uid", -1)),
                f"{running}/{len(jobs)}",
                union.get("core") or "-",
                union.get("gpu") or "-",
                ENFORCED.get(_enforcement(user).get("state", ""), "-"),
                _unit_state(sl, "slice_state"),
                _unit_state(sl, "service_state"),
                _scopes(sl),
                last_text,
            ]
        )
        line = enforcement_line(_enforcement(user))
        if line is not None:
            out.append([f"  {line}"])
            shown = True
        out.extend([f"  {text}"] for text in held_lines(user))
        for err in user.get("errors", []):
            out.append([f"  error: {err}"])
    # the rank's latest read-back, unless a user's line already says it
    line = enforcement_line(_enforcement(response))
    if line is not None and not shown:
        out.append([f"rank {rank}: {line}"])
    return out


HEADER = [
    "RANK",
    "USER",
    "JOBS",
    "CORES",
    "GPUS",
    "ENFORCED",
    "SLICE",
    "USER@",
    "SCOPES",
    "LAST",
]


def format_table(table: List[List[str]]) -> str:
    """Columns padded to the widest cell; one-cell rows printed as is."""
    full = [r for r in table if len(r) == len(HEADER)]
    widths = [max(len(r[i]) for r in [HEADER] + full) for i in range(len(HEADER))]
    lines = []
    for r in [HEADER] + table:
        if len(r) != len(HEADER):
            lines.append(r[0])
        else:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


# --- talking to the broker -------------------------------------------------


def query(h: Any, ranks: Optional[List[int]], uid: Optional[int]) -> List[dict]:
    """pam.status on each rank (None: the local broker).

    Returns one dict per rank: the response, or ``{"rank": R, "error":
    {"errno": E, "text": T}}``.  The requests are all sent before the first
    answer is awaited.
    """
    from flux.constants import FLUX_NODEID_ANY  # noqa: PLC0415 - lazy

    payload = {} if uid is None else {"uid": uid}
    targets = ranks if ranks is not None else [FLUX_NODEID_ANY]
    futures = [(r, h.rpc("pam.status", payload, nodeid=r)) for r in targets]
    out = []
    for r, f in futures:
        try:
            out.append(f.get())
        except OSError as exc:
            rank = r if r != FLUX_NODEID_ANY else h.get_rank()
            out.append(
                {"rank": rank, "error": {"errno": exc.errno, "text": exc.strerror}}
            )
    return out


# --- without the module -----------------------------------------------------


def markers(path: str = lockdir.DEFAULT) -> Dict[str, Any]:
    """uids with a marker in the lock directory, or the error reading it;
    "denied" maps those whose marker refuses their logins to its text."""
    try:
        uids = lockdir.marker_uids(path)
    except OSError as exc:
        return {"path": path, "error": f"{path}: {exc.strerror}"}
    denied = {}
    for uid in uids:
        try:
            text = lockdir.marker_deny(uid, path)
        except OSError as exc:
            text = str(exc)
        if text is not None:
            denied[str(uid)] = text
    return {"path": path, "uids": uids, "denied": denied}


def units() -> Dict[str, Any]:
    """Loaded user slices, user managers and login scopes, from systemd."""
    from flux_pam_service.systemd import client  # noqa: PLC0415 - lazy: jeepney

    try:
        with client.Systemd() as sd:
            listing = sd.list_units(UNIT_PATTERNS)
    except OSError as exc:
        return {"error": f"systemd: {exc}"}
    return {
        "units": sorted(
            ({"unit": u[0], "active_state": u[3], "sub_state": u[4]} for u in listing),
            key=lambda u: u["unit"],
        )
    }


def local_view(lock_path: str = lockdir.DEFAULT) -> Dict[str, Any]:
    """What can be read on this node without the module."""
    return {"markers": markers(lock_path), "systemd": units()}


def print_local_view(view: Dict[str, Any]) -> None:
    """Human-readable form of local_view()."""
    m = view["markers"]
    if "error" in m:
        print(f"markers: {m['error']}")
    else:
        users = ", ".join(user_name(u) for u in m["uids"]) or "none"
        print(f"markers in {m['path']} (users with an active job): {users}")
        for uid, text in sorted(m.get("denied", {}).items()):
            print(f"  {user_name(int(uid))}: logins refused: {text}")
    sd = view["systemd"]
    if "error" in sd:
        print(sd["error"])
        return
    print("systemd units:" if sd["units"] else "systemd units: none")
    for u in sd["units"]:
        print(f"  {u['unit']:<32} {u['active_state']}/{u['sub_state']}")


# --- the command ------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "status",
        help="show the pam module's view of users and slices",
        description="Show the pam broker module's per-user state.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("-r", "--rank", type=int, metavar="RANK", help="ask RANK")
    where.add_argument("-a", "--all", action="store_true", help="ask every rank")
    p.add_argument("--json", action="store_true", help="print JSON")
    options.lock_dir(p, "where the markers are, without the module")
    p.add_argument(
        "user", nargs="?", metavar="USER", help="only this user (name or uid)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Query, print; fall back to the local view without the module."""
    uid = None
    if args.user is not None:
        try:
            uid = resolve_user(args.user)
        except ValueError as exc:
            print(f"flux-pam status: {exc}", file=sys.stderr)
            return 1
    try:
        import flux  # noqa: PLC0415 - lazy

        h = flux.Flux()
        if args.all:
            ranks: Optional[List[int]] = list(range(int(h.attr_get("size"))))
        else:
            ranks = None if args.rank is None else [args.rank]
        responses = query(h, ranks, uid)
    except (ImportError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        print(f"flux-pam status: cannot reach the broker: {reason}", file=sys.stderr)
        return _fallback(args, uid)
    nosys = [r for r in responses if r.get("error", {}).get("errno") == errno.ENOSYS]
    if nosys and len(nosys) == len(responses) and not args.all and args.rank is None:
        print(
            f"flux-pam status: the pam module is not loaded on rank {nosys[0]['rank']}",
            file=sys.stderr,
        )
        return _fallback(args, uid)
    if args.json:
        print(json.dumps(responses, indent=2))
    else:
        table: List[List[str]] = []
        for resp in responses:
            if "error" in resp:
                err = resp["error"]
                why = (
                    "module not loaded" if err["errno"] == errno.ENOSYS else err["text"]
                )
                table.append([f"rank {resp['rank']}: {why}"])
            else:
                if resp.get("closed"):
                    table.append(
                        [
                            f"rank {resp['rank']}: closed, job users cannot log in"
                            f" (invalid configuration: {resp['closed']})"
                        ]
                    )
                table.extend(rows(resp))
                if resp.get("live", "ok") != "ok":
                    table.append([f"rank {resp['rank']}: slices: {resp['live']}"])
                if resp.get("systemd", "ok") != "ok":
                    table.append([f"rank {resp['rank']}: systemd: {resp['systemd']}"])
        print(format_table(table))
    return 1 if any("error" in r for r in responses) else 0


def _fallback(args: argparse.Namespace, uid: Optional[int]) -> int:
    view = local_view(args.lock_dir)
    if uid is not None:
        if "uids" in view["markers"]:
            view["markers"]["uids"] = [u for u in view["markers"]["uids"] if u == uid]
        if "units" in view["systemd"]:
            view["systemd"]["units"] = [
                u
                for u in view["systemd"]["units"]
                if f"-{uid}." in u["unit"]
                or f"@{uid}." in u["unit"]
                or u["unit"].startswith("flux-pam-")
            ]
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        print("without the module, this node shows:")
        print_local_view(view)
    return 1

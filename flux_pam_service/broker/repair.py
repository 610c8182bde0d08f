"""After a (re)load: tear down the slices of users without a job here.

A module that was not running while a user's last job ended left that
user's slice as it was.  Once synced, the scheduler scans systemd for user
slices this module marked (Description ``flux-pam: ...``), user slices
holding login scopes (``flux-pam-*.scope``) and marker files of users
without a job here, and tears each down, logging the repair.  Users with
jobs are never torn down by a reload (doc/design.rst, "Restart").
"""

import syslog
from typing import TYPE_CHECKING, List, Optional

from flux_pam_service.core import lockdir
from flux_pam_service.systemd import operations

if TYPE_CHECKING:
    from flux_pam_service.broker.scheduler import Scheduler


def markers(s: "Scheduler") -> List[int]:
    """Users with a marker file (readable only when running as root)."""
    try:
        return lockdir.marker_uids(s.lock_dir)
    except OSError:
        return []


def scan(s: "Scheduler") -> None:
    """Look for slices to repair; tear down those of users without a job."""
    from flux_pam_service.broker.user import Operation

    if not s.managing():
        return
    prefix = operations.DESCRIPTION_PREFIX

    def done(out: Optional[operations.Outcome], exc: Optional[BaseException]) -> None:
        if exc is not None:
            s.log(syslog.LOG_ERR, f"scan of user slices: {exc}")
            s.systemd_status = str(exc)
            return
        assert out is not None
        found = dict(out.value)
        for uid in markers(s):
            found.setdefault(uid, {"description": "marker", "scopes": []})
        for uid, info in sorted(found.items()):
            if uid in (0, s.owner) or s.table.jobs(uid):
                continue
            desc = info["description"]
            if s.shared_node:
                # all brokers here share one systemd: only this rank's own
                # marks count, never scopes nobody can attribute
                ours = desc in (operations.description(uid, s.rank), "marker")
            else:
                ours = (
                    desc.startswith(operations.DESCRIPTION_PREFIX)
                    or desc == "marker"
                    or bool(info.get("scopes"))
                )
            if not ours:
                continue
            user = s.user(uid)
            if user.busy or user.prepared is not False:
                continue
            s.stats["repairs"] += 1
            why = info["description"] or "logins: " + ", ".join(info["scopes"])
            s.log(
                syslog.LOG_WARNING,
                f"repair: uid {uid} has no job on rank {s.rank} but"
                f" user-{uid}.slice is in use ({why}): tearing it down",
            )
            user.prepared = None
            user.seq += 1
            s.kick(user)
        for user in list(s.users.values()):
            s.kick(user)

    s.submit(
        Operation("scan", -1, lambda state: operations.scan(state, prefix)),
        lambda o, e: s.guard("scan", done, o, e),
    )

"""Who may log in on this rank: the module's answers to pam.check and the
refusals of pam.attach and pam.prolog (doc/design.rst, "RPC protocol").

A user is admitted while a job of theirs is RUNNING here and the kernel
enforces their union as far as it has been read back; a node that is closed
(an invalid configuration) or cannot confine the user refuses with a message.
Functions of the scheduler's state (flux_pam_service.broker.scheduler); no
Flux handle.
"""

import syslog
import time
from typing import TYPE_CHECKING, Optional

from flux_pam_service.core import config
from flux_pam_service.systemd import enforcement

if TYPE_CHECKING:
    from flux_pam_service.broker.scheduler import Scheduler
    from flux_pam_service.broker.user import User


def enforcement_state(s: "Scheduler", verdict: Optional[enforcement.Verdict]) -> dict:
    """What the kernel enforces, as pam.status shows it (per user, node).

    state: ``off`` (slices not managed or not constrained), ``unknown``
    (not read back yet), ``enforced``, ``not-enforced`` (logins refused)
    or ``unconfined`` (not enforced, admitted by
    pam.allow-unconfined-logins); with the verdict's fields.
    """
    if not (s.managing() and s.cfg.constrain_resources):
        return {"state": "off"}
    if verdict is None:
        return {"state": "unknown"}
    if verdict.enforced:
        state = "enforced"
    elif s.cfg.allow_unconfined_logins:
        state = "unconfined"
    else:
        state = "not-enforced"
    return {"state": state, **verdict.to_dict()}


def node_enforcement(s: "Scheduler") -> dict:
    """The node's enforcement for pam.status: the latest read-back."""
    if s.node_verdict is None:
        return enforcement_state(s, None)
    uid, when, verdict = s.node_verdict
    return {**enforcement_state(s, verdict), "uid": uid, "time": when}


def refusal(s: "Scheduler", user: "Optional[User]") -> Optional[str]:
    """The message refusing *user*'s logins: the node is closed, or the
    kernel does not enforce the user's union."""
    if s.closed is not None:
        return config.CLOSED_MESSAGE
    verdict = user.verdict if user is not None else None
    if enforcement_state(s, verdict)["state"] != "not-enforced":
        return None
    assert verdict is not None
    return verdict.message()


def decide(s: "Scheduler", uid: int) -> tuple:
    """(admitted, reason, message): may *uid* log in on this rank?

    The one place the module decides; message is set only when a user
    with running jobs is refused because the node cannot take the login:
    it is closed (an invalid configuration) or cannot confine them.
    """
    user = s.users.get(uid)
    if uid == s.owner:
        return False, f"uid {uid} is the instance owner (not managed)", None
    if not s.table.admitted(uid):
        return False, f"user {uid} has no running job on rank {s.rank}", None
    if user is not None and user.busy in ("teardown", "release"):
        return False, f"user {uid}: teardown in progress on rank {s.rank}", None
    message = refusal(s, user)
    if message is not None and s.closed is not None:
        why = f"logins of job users are refused: invalid configuration: {s.closed}"
        return False, why, message
    if message is not None:
        assert user is not None and user.verdict is not None
        why = "; ".join(user.verdict.reasons)
        return False, f"user {uid} on rank {s.rank}: {why}", message
    reason = f"{s.table.nrunning(uid)} running job(s) on rank {s.rank}"
    if user is not None and enforcement_state(s, user.verdict)["state"] == "unconfined":
        reason += " (unconfined: pam.allow-unconfined-logins)"
    return True, reason, None


def check(s: "Scheduler", uid: int, limit: Optional[int]) -> dict:
    """The answer to pam.check {uid, max_jobs}."""
    admitted, reason, message = decide(s, uid)
    answer = {
        "uid": uid,
        "admitted": admitted,
        "jobs": s.table.running(uid, limit) if admitted else [],
        "njobs": s.table.nrunning(uid) if admitted else 0,
        "manage_user_slice": s.managing(),
        "reason": reason,
    }
    if message is not None:
        answer["message"] = message
    return answer


def record_verdict(
    s: "Scheduler", user: "User", verdict: Optional[enforcement.Verdict]
) -> None:
    """Keep *user*'s read-back; log a change of what the node lacks, once."""
    user.verdict = verdict
    if verdict is None:
        return
    old = s.node_verdict[2].missing if s.node_verdict else ()
    s.node_verdict = (user.uid, time.time(), verdict)
    if verdict.missing == old:
        return
    if verdict.enforced:
        s.log(syslog.LOG_WARNING, f"confinement is enforced on rank {s.rank} again")
        return
    if s.cfg.allow_unconfined_logins:
        level = syslog.LOG_WARNING
        then = "logins of job users are admitted unconfined"
        then += " (pam.allow-unconfined-logins)"
    else:
        level, then = syslog.LOG_ERR, "logins of job users are refused"
    s.log(
        level,
        f"{enforcement.describe(verdict.missing)} on rank {s.rank}"
        f" (user-{user.uid}.slice: {'; '.join(verdict.reasons)}): {then}",
    )

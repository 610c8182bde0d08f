"""The per-user operation scheduler of the broker module, without a broker.

The scheduler (flux_pam_service.broker.scheduler) and its waiters run here
with every Flux and systemd call replaced by a World that records what they
ask for: operations submitted to workers, timers, sdexec-mapper lookups,
request answers.  The tests complete operations and fire timers by hand, in
the orders the module may see them.
"""

import errno
import syslog

import pytest

from flux_pam_service.broker.scheduler import RETRY_MAX, RETRY_MIN, Scheduler
from flux_pam_service.core import idset, rv1
from flux_pam_service.core.config import PamConfig
from flux_pam_service.core.rv1 import Resources
from flux_pam_service.systemd.client import DBusError
from flux_pam_service.systemd.enforcement import Verdict
from flux_pam_service.systemd.operations import Outcome, description
from flux_pam_service.systemd.user_slice import LingerError, SurvivorsError

OWNER = 999
ALICE = 1000
BOB = 1001
MANAGED = PamConfig(manage_user_slice=True, constrain_resources=True)


def R(cores: str, rank: int = 0) -> dict:
    return rv1.make_R(rank, Resources(idset.decode(cores), frozenset()))


def props_of(R: dict) -> dict:
    """What the sdexec-mapper would say for R: its cores, one memory node."""
    return props_of_union(rv1.local(R, 0))


def props_of_union(union: Resources) -> dict:
    return {"AllowedCPUs": idset.encode(union.cores), "AllowedMemoryNodes": "0"}


def unreachable_error() -> DBusError:
    return DBusError(errno.ECONNREFUSED, None, "cannot connect to D-Bus")


class Timer:
    def __init__(self, after, fn, args):
        self.after, self.fn, self.args = after, fn, args
        self.cancelled = False
        self.fired = False


class World:
    """What the broker module gives the scheduler, recorded and driven by hand."""

    def __init__(self):
        self.ops = []  # [operation, done] submitted, not completed
        self.timers = []
        self.lookups = []  # [union, done] not answered
        self.replies = []  # (msg, obj)
        self.errors = []  # (msg, errnum, text)
        self.drains = []
        self.logs = []

    # -- what the scheduler calls
    def submit(self, op, done):
        self.ops.append([op, done])

    def timer(self, after, fn, *args):
        t = Timer(after, fn, args)
        self.timers.append(t)
        return t

    def cancel(self, t):
        if t is not None:
            t.cancelled = True

    def lookup(self, union, done):
        self.lookups.append([union, done])

    def reply(self, msg, obj=None):
        self.replies.append((msg, obj))

    def error(self, msg, errnum, text):
        self.errors.append((msg, errnum, text))

    def drain(self, reason):
        self.drains.append(reason)

    def log(self, level, text):
        self.logs.append((level, text))

    # -- the test's hands
    def scheduler(self, cfg=MANAGED, synced=True, **kw):
        """A scheduler, synced with rank 0 (no job here yet) unless not *synced*."""
        s = Scheduler(
            0,
            OWNER,
            cfg,
            submit=self.submit,
            timer=self.timer,
            cancel=self.cancel,
            lookup=self.lookup,
            drain=self.drain,
            reply=self.reply,
            error=self.error,
            log=self.log,
            lock_dir="/nonexistent/flux-pam",
            **kw,
        )
        if synced:
            s.sync([])
            if s.managing() and s.closed is None:
                self.complete("scan", uid=-1, value={})
        return s

    def slice_ops(self):
        """The operations in flight on user slices (not scans)."""
        return [op for op, _ in self.ops if op.action != "scan"]

    def answer_lookups(self):
        """Answer every pending sdexec-mapper lookup, as the mapper would."""
        while self.lookups:
            union, done = self.lookups.pop(0)
            done(props_of_union(union), None)

    def complete(self, action, uid=ALICE, exc=None, **outcome):
        """Complete the first operation *action* on *uid*'s slice."""
        for i, (op, done) in enumerate(self.ops):
            if op.action == action and op.uid == uid:
                del self.ops[i]
                outcome.setdefault("value", action)
                done(None if exc else Outcome(**outcome), exc)
                return op
        raise AssertionError(f"no {action} of {uid} in flight: {self.ops}")

    def fire(self, after=None):
        """Fire the pending timers (those of *after* seconds only, if given)."""
        due = [
            t
            for t in self.timers
            if not t.cancelled and not t.fired and (after is None or t.after == after)
        ]
        assert due, "no timer to fire"
        for t in due:
            t.fired = True
            t.fn(*t.args)

    def pending_timers(self):
        return [t.after for t in self.timers if not t.cancelled and not t.fired]

    def answered(self, msg):
        """The answer to request *msg*: ("reply", obj) or ("error", errnum, text)."""
        out = [("reply", obj) for m, obj in self.replies if m == msg]
        out += [("error", n, t) for m, n, t in self.errors if m == msg]
        assert len(out) <= 1, out
        return out[0] if out else None


@pytest.fixture
def world():
    return World()


def prepared(world, sched, jobid=1, uid=ALICE, cores="0"):
    """A user whose first job is here and whose slice is prepared."""
    sched.job_start(jobid, uid, R(cores))
    world.answer_lookups()
    world.complete("prepare", uid)
    return sched.users[uid]


# -- one operation at a time per user; changes coalesce ---------------------


def test_a_first_job_prepares_the_slice_with_its_union(world):
    s = world.scheduler()
    s.job_start(1, ALICE, R("0-1"))
    assert [u for u, _ in world.lookups] == [rv1.local(R("0-1"), 0)]
    world.answer_lookups()
    (op,) = world.slice_ops()
    assert (op.action, op.uid, op.props) == ("prepare", ALICE, props_of(R("0-1")))
    assert not op.verify
    world.complete("prepare")
    assert s.users[ALICE].prepared is True
    assert s.users[ALICE].applied == props_of(R("0-1"))


def test_changes_during_an_operation_coalesce_into_one_next_operation(world):
    s = world.scheduler()
    s.job_start(1, ALICE, R("0"))
    world.answer_lookups()
    s.job_start(2, ALICE, R("1"))
    s.job_start(3, ALICE, R("2"))
    s.job_end(2)
    assert [op.action for op in world.slice_ops()] == ["prepare"]
    assert world.lookups == []
    world.complete("prepare")
    world.answer_lookups()
    (op,) = world.slice_ops()
    assert (op.action, op.props) == ("apply", props_of(R("0,2")))
    world.complete("apply")
    # nothing more: no read of the slice follows an operation
    assert world.ops == [] and world.lookups == []
    assert s.stats["operations"] == {"prepare": 1, "apply": 1}
    assert not s.users[ALICE].pending


def test_a_prolog_is_answered_by_the_operation_that_covers_its_job(world):
    s = world.scheduler()
    s.job_start(1, ALICE, R("0"))
    world.answer_lookups()
    s.waiters.perilog("prolog-1", 1, "prolog")
    s.job_start(2, ALICE, R("1"))
    s.waiters.perilog("prolog-2", 2, "prolog")
    world.complete("prepare")
    assert world.answered("prolog-1") == (
        "reply",
        {"id": 1, "uid": ALICE, "result": "applied"},
    )
    assert world.answered("prolog-2") is None  # job 2 came after the prepare
    world.answer_lookups()
    world.complete("apply")
    assert world.answered("prolog-2") == (
        "reply",
        {"id": 2, "uid": ALICE, "result": "applied"},
    )


def test_a_change_that_leaves_the_union_alone_runs_no_operation(world):
    s = world.scheduler()
    prepared(world, s, cores="0-1")
    s.job_start(2, ALICE, R("1"))
    s.waiters.perilog("prolog-2", 2, "prolog")
    assert world.slice_ops() == [] and world.lookups == []
    assert world.answered("prolog-2")[1]["result"] == "applied"


# -- users in parallel, each in order ---------------------------------------


def test_users_proceed_in_parallel_each_in_order(world):
    s = world.scheduler()
    s.job_start(1, ALICE, R("0"))
    s.job_start(2, BOB, R("1"))
    world.answer_lookups()
    assert sorted((op.action, op.uid) for op in world.slice_ops()) == [
        ("prepare", ALICE),
        ("prepare", BOB),
    ]
    s.job_start(3, ALICE, R("2"))
    world.answer_lookups()
    assert len(world.slice_ops()) == 2  # alice's change waits for her prepare
    world.complete("prepare", BOB)
    assert [(op.action, op.uid) for op in world.slice_ops()] == [("prepare", ALICE)]
    world.complete("prepare", ALICE)
    world.answer_lookups()
    (op,) = world.slice_ops()
    assert (op.action, op.uid, op.props) == ("apply", ALICE, props_of(R("0,2")))


def test_the_last_job_ends_in_a_teardown_after_the_running_operation(world):
    s = world.scheduler()
    s.job_start(1, ALICE, R("0"))
    world.answer_lookups()
    s.job_end(1)
    assert [op.action for op in world.slice_ops()] == ["prepare"]
    world.complete("prepare")
    assert [op.action for op in world.slice_ops()] == ["teardown"]
    world.complete("teardown")
    assert ALICE not in s.users  # forgotten once settled
    assert s.forgotten[ALICE] == ("torn-down", 0, "")


def test_the_instance_owners_jobs_are_never_managed(world):
    s = world.scheduler()
    s.job_start(1, OWNER, R("0"))
    s.waiters.perilog("prolog", 1, "prolog")
    assert world.slice_ops() == [] and world.lookups == []
    assert world.answered("prolog")[1] == {"id": 1, "uid": OWNER, "result": "skipped"}


# -- retry with backoff -------------------------------------------------------


def test_a_failed_operation_is_retried_with_backoff_until_it_succeeds(world):
    s = world.scheduler()
    s.job_start(1, ALICE, R("0"))
    world.answer_lookups()
    s.waiters.perilog("prolog", 1, "prolog")
    delays = []
    for _ in range(7):
        world.complete("prepare", exc=unreachable_error())
        (delay,) = world.pending_timers()
        delays.append(delay)
        assert world.slice_ops() == []
        world.fire()
    assert delays == [RETRY_MIN, 2.0, 4.0, 8.0, 16.0, RETRY_MAX, RETRY_MAX]
    # the prolog got the first failure; systemd is reported unreachable
    assert world.answered("prolog")[:2] == ("error", errno.ECONNREFUSED)
    assert "cannot connect to D-Bus" in s.systemd_status
    world.complete("prepare")
    user = s.users[ALICE]
    assert (user.prepared, user.errors, user.retry_delay) == (True, [], 0.0)
    assert s.systemd_status == "ok"
    s.waiters.perilog("prolog-again", 1, "prolog")
    assert world.answered("prolog-again")[1]["result"] == "applied"


def test_a_login_is_refused_with_eagain_while_the_slice_waits_for_a_retry(world):
    s = world.scheduler()
    s.job_start(1, ALICE, R("0"))
    world.answer_lookups()
    world.complete("prepare", exc=unreachable_error())
    s.waiters.attach("attach", ALICE, "flux-pam-7.scope")
    kind, errnum, text = world.answered("attach")
    assert (kind, errnum) == ("error", errno.EAGAIN)
    assert text.startswith(f"user-{ALICE}.slice: uid {ALICE}: prepare:")


def test_linger_is_final_not_retried(world):
    s = world.scheduler()
    s.job_start(1, ALICE, R("0"))
    world.answer_lookups()
    s.waiters.perilog("prolog", 1, "prolog")
    world.complete("prepare", exc=LingerError(errno.EBUSY, "alice has linger"))
    assert world.pending_timers() == [] and world.slice_ops() == []
    text = f"user {ALICE}: alice has linger"
    assert world.answered("prolog") == ("error", errno.EBUSY, text)


def test_the_retry_works_from_the_state_at_its_time(world):
    s = world.scheduler()
    s.job_start(1, ALICE, R("0"))
    world.answer_lookups()
    world.complete("prepare", exc=unreachable_error())
    s.job_end(1)  # the job ended while systemd was away
    world.fire()
    # never prepared: nothing to tear down, nothing submitted
    assert world.slice_ops() == []
    assert ALICE not in s.table.users()


# -- a teardown racing an attach ----------------------------------------------


def test_job_cleanup_refuses_logins_at_once(world):
    s = world.scheduler()
    prepared(world, s)
    s.job_cleanup(1)
    s.waiters.attach("attach", ALICE, "flux-pam-7.scope")
    assert world.answered("attach")[:2] == ("error", errno.EPERM)
    assert world.slice_ops() == []  # no teardown yet: the job has not ended


def test_an_attach_waiting_on_a_prepare_is_refused_if_the_job_ended_meanwhile(world):
    s = world.scheduler()
    s.job_start(1, ALICE, R("0"))
    world.answer_lookups()
    s.waiters.attach("attach", ALICE, "flux-pam-7.scope")
    assert world.answered("attach") is None  # waits for the slice
    s.job_end(1)
    world.complete("prepare")
    kind, errnum, text = world.answered("attach")
    assert (kind, errnum) == ("error", errno.EPERM)
    assert text == f"user {ALICE} has no active job on rank 0"
    assert [op.action for op in world.slice_ops()] == ["teardown"]


def test_a_login_during_the_teardown_is_refused_and_the_check_says_why(world):
    s = world.scheduler()
    prepared(world, s)
    s.job_start(2, ALICE, R("0"))
    s.job_end(1)
    s.job_cleanup(2)
    s.job_end(2)
    assert [op.action for op in world.slice_ops()] == ["teardown"]
    s.waiters.attach("attach", ALICE, "flux-pam-7.scope")
    assert world.answered("attach")[:2] == ("error", errno.EPERM)


def test_a_new_job_during_the_teardown_is_confirmed_only_once_prepared_again(world):
    s = world.scheduler()
    prepared(world, s)
    s.job_end(1)
    assert [op.action for op in world.slice_ops()] == ["teardown"]
    s.job_start(2, ALICE, R("1"))
    s.waiters.attach("attach", ALICE, "flux-pam-7.scope")
    world.complete("teardown")
    assert world.answered("attach") is None  # waits on the prepare that follows
    world.answer_lookups()
    op = world.complete("prepare")
    assert op.props == props_of(R("1")) and not op.verify
    assert world.answered("attach") == ("reply", {"attached": True})


def test_an_attach_that_waits_too_long_times_out(world):
    s = world.scheduler()
    s.job_start(1, ALICE, R("0"))
    world.answer_lookups()
    s.waiters.attach("attach", ALICE, "flux-pam-7.scope")
    world.fire()
    assert world.answered("attach")[:2] == ("error", errno.ETIMEDOUT)
    world.complete("prepare")
    assert len([m for m, *_ in world.errors if m == "attach"]) == 1


# -- a restart in the middle of an operation ----------------------------------


def test_a_restart_mid_operation_verifies_the_slice_and_answers_the_prolog(world):
    first = world.scheduler()
    first.job_start(1, ALICE, R("0"))
    world.answer_lookups()
    assert [op.action for op in world.slice_ops()] == ["prepare"]
    # the module is reloaded: the operation in flight never reports back
    world.ops.clear()
    s = world.scheduler(synced=False)
    s.waiters.perilog("prolog", 1, "prolog")
    assert world.answered("prolog") is None  # the job is not known yet
    s.sync([{"id": 1, "userid": ALICE, "R": R("0"), "running": True}])
    world.answer_lookups()
    (op,) = world.slice_ops()
    assert (op.action, op.verify) == ("prepare", True)
    world.complete("scan", uid=-1, value={})
    world.complete("prepare", repairs=["user-1000.slice: AllowedCPUs '' -> '0'"])
    assert s.stats["repairs"] == 1
    assert world.answered("prolog")[1] == {"id": 1, "uid": ALICE, "result": "applied"}


def test_after_a_restart_a_slice_marked_by_this_rank_without_a_job_is_torn_down(
    world,
):
    s = world.scheduler(synced=False)
    s.sync([{"id": 2, "userid": BOB, "R": R("1"), "running": True}])
    found = {
        ALICE: {"description": description(ALICE, 0), "scopes": []},
        1002: {"description": "User Slice of UID 1002", "scopes": []},
    }
    world.complete("scan", uid=-1, value=found)
    world.answer_lookups()
    actions = sorted((op.action, op.uid) for op in world.slice_ops())
    assert actions == [("prepare", BOB), ("teardown", ALICE)]
    assert any("repair: uid 1000 has no job on rank 0" in t for _, t in world.logs)


def test_a_job_that_ended_while_the_module_was_away_ends_at_sync(world):
    s = world.scheduler(synced=False)
    s.sync([{"id": 1, "userid": ALICE, "R": R("0"), "running": True}])
    world.answer_lookups()
    world.complete("scan", uid=-1, value={})
    world.complete("prepare")
    s.sync([])  # rank 0 re-read the journal: the job is gone
    assert [op.action for op in world.slice_ops()] == ["teardown"]
    s.waiters.perilog("hk", 1, "housekeeping")
    world.complete("teardown")
    assert world.answered("hk")[1] == {"id": 1, "uid": ALICE, "result": "torn-down"}


# -- closed --------------------------------------------------------------------


def test_closed_changes_nothing_and_a_valid_config_reconciles(world):
    s = world.scheduler(synced=False, closed="pam.toml: pam.debug: not a boolean")
    s.sync([{"id": 1, "userid": ALICE, "R": R("0"), "running": True}])
    s.waiters.perilog("prolog", 1, "prolog")
    assert world.answered("prolog")[1]["result"] == "skipped"
    # the scan of the first sync reads systemd; its repairs wait for a config
    world.complete("scan", uid=-1, value={})
    assert world.slice_ops() == [] and world.lookups == []
    s.configure(MANAGED)
    s.bring_to_config()
    world.answer_lookups()
    assert sorted(op.action for op, _ in world.ops) == ["prepare", "scan"]
    assert [op.verify for op in world.slice_ops()] == [True]


# -- the user manager's stop delay (pam.user-stop-delay) ----------------------

DELAYED = PamConfig(
    manage_user_slice=True,
    constrain_resources=True,
    kill_user_slice=True,
    user_stop_delay=10.0,
)


def released(world, sched):
    """Alice's only job (cores 0-1) ended; her release is done."""
    prepared(world, sched, cores="0-1")
    sched.job_cleanup(1)
    sched.job_end(1)
    return world.complete("release")


def test_the_last_job_ends_in_a_teardown_at_once_by_default(world):
    s = world.scheduler()
    prepared(world, s)
    s.job_end(1)
    assert [op.action for op in world.slice_ops()] == ["teardown"]
    assert world.pending_timers() == []


def test_with_a_stop_delay_the_slice_is_released_at_once_and_logins_refused(world):
    s = world.scheduler(DELAYED)
    prepared(world, s, cores="0-1")
    s.job_cleanup(1)
    assert s.table.admitted(ALICE) is False  # refused from the first moment
    s.job_end(1)
    (op,) = world.slice_ops()
    # the slice shrinks at once: one CPU of the union, no device
    assert op.action == "release"
    assert op.props == {"AllowedCPUs": "0", "AllowedMemoryNodes": "0"}
    s.waiters.perilog("hk", 1, "housekeeping")
    world.complete("release")
    assert world.answered("hk")[1]["result"] == "torn-down"
    assert world.slice_ops() == []  # user@ is not stopped yet
    assert world.pending_timers() == [10.0]
    assert s.users[ALICE].applied == op.props


def test_the_user_manager_stops_when_the_delay_passes_without_a_job(world):
    s = world.scheduler(DELAYED)
    released(world, s)
    world.fire(10.0)
    assert [op.action for op in world.slice_ops()] == ["teardown"]
    world.complete("teardown")
    assert s.users.get(ALICE) is None or s.users[ALICE].prepared is False


def test_a_job_within_the_delay_reuses_the_user_manager_and_is_read_back(world):
    s = world.scheduler(DELAYED)
    released(world, s)
    s.job_start(2, ALICE, R("1"))
    assert world.pending_timers() == []  # the stop is called off
    s.waiters.attach("attach", ALICE, "flux-pam-7.scope")
    world.answer_lookups()
    (op,) = world.slice_ops()
    # an apply (user@ runs): not a prepare, and never skipped as unchanged
    assert (op.action, op.props) == ("apply", props_of(R("1")))
    assert world.answered("attach") is None  # waits for the apply
    world.complete("apply")
    assert world.answered("attach") == ("reply", {"attached": True})
    s.job_end(2)
    assert [op.action for op in world.slice_ops()] == ["release"]


def test_a_job_during_the_release_reuses_the_user_manager(world):
    s = world.scheduler(DELAYED)
    prepared(world, s, cores="0-1")
    s.job_end(1)
    s.job_start(2, ALICE, R("1"))
    world.complete("release")
    world.answer_lookups()
    assert [op.action for op in world.slice_ops()] == ["apply"]
    assert world.pending_timers() == []


def test_a_stop_delay_set_to_zero_stops_a_kept_user_manager_at_once(world):
    s = world.scheduler(DELAYED)
    released(world, s)
    s.configure(MANAGED)
    s.bring_to_config()
    assert [op.action for op in world.slice_ops()] == ["teardown"]


def ended(world):
    """A scheduler with a stop delay where Alice's only job (0-1) ended."""
    s = world.scheduler(DELAYED)
    prepared(world, s, cores="0-1")
    s.job_end(1)
    return s


def test_survivors_of_the_release_drain_the_node_and_stop_the_manager(world):
    ended(world)
    world.complete("release", exc=SurvivorsError("user-1000.slice", [(5, "x")]))
    assert len(world.drains) == 1
    assert [op.action for op in world.slice_ops()] == ["teardown"]


def test_a_release_that_must_kill_stops_the_user_manager_at_once(world):
    s = ended(world)
    # processes were left outside user@: they and user@ went (operations.release)
    world.complete("release", value="teardown")
    assert s.users.get(ALICE) is None or s.users[ALICE].prepared is False
    assert world.pending_timers() == [] and world.slice_ops() == []
    s.job_start(2, ALICE, R("1"))
    world.answer_lookups()
    assert [op.action for op in world.slice_ops()] == ["prepare"]


def test_a_job_with_the_idle_slices_properties_needs_no_operation(world):
    s = ended(world)
    world.complete("release", verdict=Verdict())  # the idle slice, read back
    s.job_start(2, ALICE, R("0"))  # its union is the idle slice's: core 0
    world.answer_lookups()
    assert world.slice_ops() == []
    s.waiters.attach("attach", ALICE, "flux-pam-7.scope")
    assert world.answered("attach") == ("reply", {"attached": True})
    assert s.users[ALICE].verdict == Verdict()


def test_login_limits_join_the_mappers_properties(world):
    cfg = PamConfig(
        manage_user_slice=True,
        constrain_resources=True,
        login_memory_max="1G",
    )
    s = world.scheduler(cfg)
    s.job_start(1, ALICE, R("0-1"))
    world.answer_lookups()
    (op,) = world.slice_ops()
    want = dict(props_of(R("0-1")), MemoryMax=str(2**30))
    assert (op.action, op.props) == ("prepare", want)


def test_login_limits_apply_without_constrained_resources(world):
    cfg = PamConfig(manage_user_slice=True, login_memory_max="1G")
    s = world.scheduler(cfg)
    s.job_start(1, ALICE, R("0"))
    assert world.lookups == []
    (op,) = world.slice_ops()
    assert (op.action, op.props) == ("prepare", {"MemoryMax": str(2**30)})


def test_a_change_of_what_the_mapper_reads_maps_every_slice_again(world):
    s = world.scheduler()
    s.configure(MANAGED, ("null", '{"MemoryMax": "1G"}'))
    s.bring_to_config()
    prepared(world, s)
    s.configure(MANAGED, ("null", '{"MemoryMax": "1G"}'))
    s.bring_to_config()
    assert world.lookups == []  # the same inputs: the cache stands
    s.configure(MANAGED, ("null", '{"MemoryMax": "2G"}'))
    s.bring_to_config()
    ((union, done),) = world.lookups
    assert union == rv1.local(R("0"), 0)
    done(dict(props_of_union(union), MemoryMax="1073741824"), None)
    (op,) = world.slice_ops()
    assert (op.action, op.props["MemoryMax"]) == ("apply", "1073741824")


def test_what_housekeeping_removed_is_logged_and_counted(world):
    from flux_pam_service.broker import status

    s = world.scheduler()
    s.leftovers_removed(ALICE, {"shm": 2, "sem": 0, "posix-shm": 1})
    s.leftovers_removed(BOB, {"shm": 1})
    assert s.stats["leftovers-removed"] == {"shm": 3, "posix-shm": 1}
    assert (
        syslog.LOG_DEBUG,
        f"uid {ALICE}: housekeeping removed 2 shm, 1 posix-shm",
    ) in (world.logs)
    answer = status.status(s, [], shared_node=False)
    assert answer["leftovers_removed"] == {"shm": 3, "posix-shm": 1}

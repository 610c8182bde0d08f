"""What a user leaves behind, removed after the last job (perilog.leftovers)."""

import os

import pytest

from flux_pam_service.perilog import leftovers
from flux_pam_service.perilog.leftovers import Paths

ALICE, BOB, OWNER = 1000, 1001, 999
SHM = (
    "       key      shmid perms                  size  cpid  lpid nattch   uid"
    "   gid  cuid  cgid      atime      dtime      ctime                   rss"
    "                  swap\n"
)
SEM = (
    "       key      semid perms      nsems   uid   gid  cuid  cgid      otime"
    "      ctime\n"
)
MSG = (
    "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid"
    "  cuid  cgid      stime      rtime      ctime\n"
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def shm_row(shmid, uid):
    return f"0 {shmid} 600 4096 1 1 0 {uid} {uid} {uid} {uid} 0 0 0 4096 0\n"


def sem_row(semid, uid):
    return f"0 {semid} 600 1 {uid} {uid} {uid} {uid} 0 0\n"


def msg_row(msqid, uid):
    return f"0 {msqid} 600 0 0 0 0 {uid} {uid} {uid} {uid} 0 0 0\n"


@pytest.fixture
def node(tmp_path):
    """A node's /proc, /dev/shm, /dev/mqueue and /run/user in *tmp_path*."""
    paths = Paths(
        proc=str(tmp_path / "proc"),
        dev_shm=str(tmp_path / "shm"),
        dev_mqueue=str(tmp_path / "mqueue"),
        run_user=str(tmp_path / "user"),
    )
    for d in (paths.dev_shm, paths.dev_mqueue, paths.run_user):
        os.makedirs(d)
    os.makedirs(os.path.join(paths.proc, "sysvipc"))
    sysv = {
        "shm": SHM + shm_row(10, ALICE) + shm_row(11, BOB) + shm_row(12, 0),
        "sem": SEM + sem_row(20, ALICE) + sem_row(21, OWNER),
        "msg": MSG + msg_row(30, ALICE),
    }
    for kind, text in sysv.items():
        with open(os.path.join(paths.proc, "sysvipc", kind), "w") as f:
            f.write(text)
    return paths


def process(paths, pid, uids):
    os.makedirs(os.path.join(paths.proc, str(pid)))
    with open(os.path.join(paths.proc, str(pid), "status"), "w") as f:
        f.write(f"Name:\tsleep\nUid:\t{uids}\nGid:\t0\t0\t0\t0\n")


def owned(path, uid, directory=False):
    if directory:
        os.makedirs(path)
    else:
        with open(path, "w") as f:
            f.write("x")
    os.chown(path, uid, uid)


class Removed:
    def __init__(self):
        self.calls = []

    def __call__(self, kind, ident):
        self.calls.append((kind, ident))


def test_system_v_objects_of_the_user_are_found_by_owner(node):
    assert leftovers.sysv_ids("shm", ALICE, node.proc) == [10]
    assert leftovers.sysv_ids("sem", ALICE, node.proc) == [20]
    assert leftovers.sysv_ids("msg", ALICE, node.proc) == [30]
    assert leftovers.sysv_ids("sem", BOB, node.proc) == []


def test_a_process_with_any_of_the_users_uids_is_found(node):
    process(node, 42, "0\t1000\t0\t0")  # a setuid program run by root
    assert leftovers.has_processes(ALICE, node.proc)
    assert not leftovers.has_processes(BOB, node.proc)


@needs_root
def test_everything_the_user_left_is_removed_and_nothing_else(node):
    owned(os.path.join(node.dev_shm, "alice-seg"), ALICE)
    owned(os.path.join(node.dev_shm, "alice-dir"), ALICE, directory=True)
    owned(os.path.join(node.dev_shm, "alice-dir", "inner"), BOB)
    owned(os.path.join(node.dev_shm, "bob-seg"), BOB)
    owned(os.path.join(node.dev_mqueue, "alice-q"), ALICE)
    runtime = os.path.join(node.run_user, str(ALICE))
    owned(runtime, ALICE, directory=True)
    owned(os.path.join(runtime, "bus"), ALICE)
    owned(os.path.join(runtime, "systemd"), ALICE, directory=True)
    rm = Removed()
    counts = leftovers.remove(ALICE, (0, OWNER), node, rmid=rm)
    assert sorted(rm.calls) == [("msg", 30), ("sem", 20), ("shm", 10)]
    assert sorted(os.listdir(node.dev_shm)) == ["bob-seg"]
    assert os.listdir(node.dev_mqueue) == []
    assert os.listdir(runtime) == []  # the directory itself is kept
    assert counts == {
        "shm": 1,
        "sem": 1,
        "msg": 1,
        "posix-shm": 2,
        "mqueue": 1,
        "runtime": 2,
    }
    assert leftovers.describe(counts).startswith("1 shm, 1 sem, 1 msg, 2 posix-shm")


@needs_root
def test_nothing_is_removed_while_a_process_of_the_user_runs(node):
    owned(os.path.join(node.dev_shm, "alice-seg"), ALICE)
    process(node, 42, "1000\t1000\t1000\t1000")
    logged = []
    rm = Removed()
    counts = leftovers.remove(ALICE, (0, OWNER), node, rmid=rm, log=logged.append)
    assert rm.calls == [] and not any(counts.values())
    assert os.listdir(node.dev_shm) == ["alice-seg"]
    assert logged == [f"uid {ALICE}: processes left: nothing removed"]


def test_root_and_the_instance_owner_are_never_cleaned(node):
    for uid in (0, OWNER):
        rm = Removed()
        assert not any(leftovers.remove(uid, (0, OWNER), node, rmid=rm).values())
        assert rm.calls == []


@needs_root
def test_a_runtime_directory_that_is_not_the_users_is_left_alone(node):
    runtime = os.path.join(node.run_user, str(ALICE))
    os.symlink(node.dev_shm, runtime)
    owned(os.path.join(node.dev_shm, "bob-seg"), BOB)
    counts = leftovers.remove(ALICE, (0, OWNER), node, rmid=Removed())
    assert counts["runtime"] == 0
    assert os.listdir(node.dev_shm) == ["bob-seg"]


def test_an_object_gone_meanwhile_is_not_an_error(node):
    def gone(kind, ident):
        raise OSError(22, "Invalid argument")

    logged = []
    counts = leftovers.remove(ALICE, (0, OWNER), node, rmid=gone, log=logged.append)
    assert counts["shm"] == 0 and logged == []


def test_the_real_ipc_rmid_removes_a_segment_of_this_process():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    shmid = libc.shmget(0, 4096, 0o600 | 0o1000)  # IPC_PRIVATE, IPC_CREAT
    if shmid < 0:
        pytest.skip(f"shmget: {os.strerror(ctypes.get_errno())}")
    assert shmid in leftovers.sysv_ids("shm", os.geteuid())
    leftovers._ipc_rmid("shm", shmid)
    assert shmid not in leftovers.sysv_ids("shm", os.geteuid())

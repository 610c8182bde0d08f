"""What a user leaves behind on a node: IPC objects and the runtime directory.

After a user's last job on the node, when no process of the user is left,
housekeeping removes, as logind's RemoveIPC does (flux-config-pam(5),
``pam.remove-ipc``): the System V shared memory segments, semaphore sets
and message queues the user owns, the user's files in ``/dev/shm`` and
``/dev/mqueue`` (POSIX shared memory and message queues), and the contents
of ``/run/user/UID``.  Root only; every removal is by file descriptor or
IPC id, never through a path a user can redirect.
"""

import ctypes
import errno
import os
import shutil
import stat
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional

IPC_RMID = 0
#: /proc/sysvipc file: its id column and the ctl function that removes one
SYSV = {
    "shm": ("shmid", "shmctl"),
    "sem": ("semid", "semctl"),
    "msg": ("msqid", "msgctl"),
}
KINDS = ("shm", "sem", "msg", "posix-shm", "mqueue", "runtime")


@dataclass
class Paths:
    """Where the node keeps what is removed (tests point them elsewhere)."""

    proc: str = "/proc"
    dev_shm: str = "/dev/shm"
    dev_mqueue: str = "/dev/mqueue"
    run_user: str = "/run/user"


def has_processes(uid: int, proc: str = "/proc") -> bool:
    """Whether a process runs with *uid* as its real, effective, saved or
    filesystem uid (``Uid:`` of /proc/PID/status)."""
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(os.path.join(proc, name, "status")) as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if str(uid) in line.split()[1:]:
                            return True
                        break
        except OSError:
            continue  # the process ended meanwhile
    return False


def sysv_ids(kind: str, uid: int, proc: str = "/proc") -> List[int]:
    """Ids of the System V objects of *kind* (shm, sem, msg) owned by *uid*
    (/proc/sysvipc/KIND: the owner's ``uid`` column)."""
    try:
        with open(os.path.join(proc, "sysvipc", kind)) as f:
            header = f.readline().split()
            rows = [line.split() for line in f]
    except FileNotFoundError:
        return []
    id_col = header.index(SYSV[kind][0])
    uid_col = header.index("uid")
    return [int(r[id_col]) for r in rows if len(r) > uid_col and int(r[uid_col]) == uid]


def _ipc_rmid(kind: str, ident: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, SYSV[kind][1])
    args = (ident, IPC_RMID, None) if kind != "sem" else (ident, 0, IPC_RMID, None)
    if fn(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{kind} {ident}: {os.strerror(err)}")


def _remove_entries(directory: str, owned_by: Optional[int]) -> int:
    """Remove the entries of *directory* (those owned by *owned_by*, or all
    with None), a directory with all it holds; how many went.  The
    directory is opened without following a symlink and every entry is
    reached through its descriptor."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return 0
    removed = 0
    try:
        for name in os.listdir(fd):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if owned_by is not None and st.st_uid != owned_by:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(name, dir_fd=fd)
                else:
                    os.unlink(name, dir_fd=fd)
                removed += 1
            except FileNotFoundError:
                continue  # gone meanwhile
    finally:
        os.close(fd)
    return removed


def _clear_runtime_dir(path: str, uid: int) -> int:
    """Remove what /run/user/UID holds, if it is the user's directory."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        return 0
    return _remove_entries(path, None)


def remove(
    uid: int,
    protected: Iterable[int],
    paths: Optional[Paths] = None,
    rmid: Callable[[str, int], None] = _ipc_rmid,
    log: Callable[[str], None] = lambda _text: None,
) -> Dict[str, int]:
    """Remove what *uid* left behind; how many of each KIND went.

    Nothing is removed for a uid in *protected* (root, the instance owner)
    or while a process of *uid* runs.  A failure to remove one object is
    logged and the others are still removed.
    """
    paths = paths or Paths()
    counts = {kind: 0 for kind in KINDS}
    if uid in set(protected):
        return counts
    if has_processes(uid, paths.proc):
        log(f"uid {uid}: processes left: nothing removed")
        return counts
    for kind in SYSV:
        for ident in sysv_ids(kind, uid, paths.proc):
            try:
                rmid(kind, ident)
                counts[kind] += 1
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EIDRM):  # gone already
                    log(f"uid {uid}: cannot remove System V {kind} {ident}: {exc}")
    for kind, func, path in (
        ("posix-shm", _remove_entries, paths.dev_shm),
        ("mqueue", _remove_entries, paths.dev_mqueue),
        ("runtime", _clear_runtime_dir, os.path.join(paths.run_user, str(uid))),
    ):
        try:
            counts[kind] += func(path, uid)
        except OSError as exc:
            log(f"uid {uid}: cannot clean {path}: {exc}")
    return counts


def describe(counts: Dict[str, int]) -> str:
    """``2 shm, 1 sem, 1 posix-shm`` (what was removed), or ``nothing``."""
    return ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "nothing"

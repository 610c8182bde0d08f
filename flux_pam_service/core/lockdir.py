"""The root-owned lock directory shared by pam_flux and the drop-ins.

Whatever changes a user's slice outside the broker module (pam_flux in sshd,
the prolog.d and housekeeping.d drop-ins) serialises on one flock per user,
and records "this user has an active job here" as a marker; both live in one
directory that only root may write:

    DEFAULT/                root, mode 0700, never group- or other-writable
    DEFAULT/uid.UID.lock    mode 0600, opened O_NOFOLLOW, never deleted
    DEFAULT/uid.UID.active  the marker, written atomically: empty, or a first
                            line ``deny: TEXT`` when the node cannot take the
                            user's logins (pam_flux refuses them with TEXT)

*owner* is the uid the directory and lock files must belong to: root in
production, the test's own uid in unprivileged tests.  A refusal
(LockDirError, naming the path) changes nothing on disk.
"""

import contextlib
import errno
import fcntl
import os
import stat
import time

# No typing import at run time: the drop-ins take the lock at every job.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterator, List

DEFAULT = "/run/flux-pam"

_BACKOFF_FIRST = 0.001
_BACKOFF_MAX = 0.05


class LockDirError(OSError):
    """The lock directory, or a file in it, is not safe to use."""


def _check_uid(uid: int) -> None:
    if isinstance(uid, bool) or not isinstance(uid, int) or uid < 0:
        raise ValueError(f"uid must be a non-negative integer, not {uid!r}")


def _verify(path: str, st: os.stat_result, owner: int) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise LockDirError(errno.ELOOP, f"lock directory {path} is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise LockDirError(errno.ENOTDIR, f"lock directory {path} is not a directory")
    if st.st_uid != owner:
        raise LockDirError(
            errno.EPERM,
            f"lock directory {path} is owned by uid {st.st_uid}, not {owner}",
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise LockDirError(
            errno.EPERM,
            f"lock directory {path} is group- or other-writable"
            f" (mode {stat.S_IMODE(st.st_mode):04o})",
        )


def check_dir(path: str = DEFAULT, create: bool = True, owner: int = 0) -> None:
    """Verify that *path* is a directory only *owner* can write.

    With *create*, a missing directory is made with mode 0700 first; if the
    new directory then fails the check it is removed again.
    """
    created = False
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise LockDirError(
                errno.ENOENT, f"lock directory {path} does not exist"
            ) from None
        try:
            os.mkdir(path, 0o700)
            created = True
        except FileExistsError:
            pass  # someone else made it meanwhile: verify theirs
        except OSError as exc:
            raise LockDirError(
                exc.errno, f"cannot create lock directory {path}: {exc.strerror}"
            ) from None
        st = os.lstat(path)
    try:
        _verify(path, st, owner)
    except LockDirError:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise


def _lock_path(uid: int, path: str) -> str:
    _check_uid(uid)
    return os.path.join(path, f"uid.{uid}.lock")


@contextlib.contextmanager
def user_lock(
    uid: int, path: str = DEFAULT, timeout: float = 30.0, owner: int = 0
) -> "Iterator[int]":
    """Hold the exclusive per-user lock; yields the lock file descriptor.

    The wait is bounded: LOCK_EX|LOCK_NB is retried with a growing pause
    until *timeout* seconds have passed, then OSError(ETIMEDOUT) is raised.
    """
    lockfile = _lock_path(uid, path)
    check_dir(path, create=True, owner=owner)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(lockfile, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LockDirError(
                errno.ELOOP, f"lock file {lockfile} is a symlink"
            ) from None
        raise LockDirError(
            exc.errno, f"cannot open lock file {lockfile}: {exc.strerror}"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LockDirError(
                errno.EPERM, f"lock file {lockfile} is not a regular file"
            )
        if st.st_uid != owner:
            raise LockDirError(
                errno.EPERM,
                f"lock file {lockfile} is owned by uid {st.st_uid}, not {owner}",
            )
        deadline = time.monotonic() + timeout
        pause = _BACKOFF_FIRST
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise OSError(
                        errno.ETIMEDOUT,
                        f"timed out after {timeout:g}s waiting for lock {lockfile}",
                    ) from None
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, _BACKOFF_MAX)
        yield fd
    finally:
        os.close(fd)


def marker_path(uid: int, path: str = DEFAULT) -> str:
    """Return the path of *uid*'s active marker."""
    _check_uid(uid)
    return os.path.join(path, f"uid.{uid}.active")


def set_marker(uid: int, path: str = DEFAULT, content: str = "") -> None:
    """Create or replace *uid*'s marker atomically, mode 0600."""
    target = marker_path(uid, path)
    tmp = os.path.join(path, f".uid.{uid}.active.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise LockDirError(
            exc.errno, f"cannot write marker {tmp}: {exc.strerror}"
        ) from None
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, content.encode())
        finally:
            os.close(fd)
        os.rename(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise LockDirError(
            exc.errno, f"cannot write marker {target}: {exc.strerror}"
        ) from None


def clear_marker(uid: int, path: str = DEFAULT) -> None:
    """Remove *uid*'s marker; a missing marker is not an error."""
    target = marker_path(uid, path)
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise LockDirError(
            exc.errno, f"cannot remove marker {target}: {exc.strerror}"
        ) from None


def marker_uids(path: str = DEFAULT) -> "List[int]":
    """The uids that have a marker in *path*, sorted; OSError if unreadable."""
    uids = []
    for name in os.listdir(path):
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "uid" and parts[2] == "active":
            if parts[1].isascii() and parts[1].isdigit():
                uids.append(int(parts[1]))
    return sorted(uids)


def has_marker(uid: int, path: str = DEFAULT) -> bool:
    """Return True if *uid*'s marker exists.

    Anything other than a regular file at the marker path (a symlink, a
    directory) raises LockDirError, so callers fail closed.
    """
    target = marker_path(uid, path)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise LockDirError(
            exc.errno, f"cannot check marker {target}: {exc.strerror}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise LockDirError(errno.EPERM, f"marker {target} is not a regular file")
    return True


DENY = "deny: "


def deny_content(text: str) -> str:
    """The content of a marker that refuses the user's logins with *text*."""
    return DENY + " ".join(text.split()) + "\n"


def marker_deny(uid: int, path: str = DEFAULT) -> "str | None":
    """Return the deny TEXT of *uid*'s marker, or None (absent, or no deny).

    Anything other than a regular file at the marker path raises
    LockDirError, like has_marker().
    """
    target = marker_path(uid, path)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LockDirError(
            exc.errno, f"cannot read marker {target}: {exc.strerror}"
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LockDirError(errno.EPERM, f"marker {target} is not a regular file")
        first = os.read(fd, 4096).decode(errors="replace").split("\n", 1)[0]
    finally:
        os.close(fd)
    if first.startswith(DENY):
        return first[len(DENY) :].strip() or "Access denied"
    return None

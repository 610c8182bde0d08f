"""The root-owned lock directory (flux_pam_service.core.lockdir).

Every test passes owner=os.getuid(), so the suite runs as root (CI) and as an
ordinary user alike; the "foreign owner" cases use a uid that is not ours.
"""

import errno
import multiprocessing
import os
import stat
import time

import pytest

from flux_pam_service.core import lockdir

ME = os.getuid()
NOT_ME = ME + 1


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_check_dir_creates_missing_dir_0700(tmp_path):
    path = str(tmp_path / "locks")
    lockdir.check_dir(path, owner=ME)
    assert stat.S_ISDIR(os.lstat(path).st_mode)
    assert mode(path) == 0o700


def test_check_dir_without_create_refuses_missing_dir(tmp_path):
    path = str(tmp_path / "locks")
    with pytest.raises(lockdir.LockDirError, match=path) as exc:
        lockdir.check_dir(path, create=False, owner=ME)
    assert exc.value.errno == errno.ENOENT
    assert not os.path.exists(path)


@pytest.mark.parametrize("bits", [0o770, 0o707, 0o777, 0o720, 0o702])
def test_check_dir_refuses_group_or_other_writable(tmp_path, bits):
    path = tmp_path / "locks"
    path.mkdir()
    os.chmod(path, bits)
    with pytest.raises(lockdir.LockDirError, match="writable") as exc:
        lockdir.check_dir(str(path), owner=ME)
    assert str(path) in str(exc.value)
    assert mode(path) == bits  # nothing changed


def test_check_dir_accepts_group_readable_dir(tmp_path):
    path = tmp_path / "locks"
    path.mkdir()
    os.chmod(path, 0o755)
    lockdir.check_dir(str(path), owner=ME)


def test_check_dir_refuses_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "locks"
    link.symlink_to(real)
    with pytest.raises(lockdir.LockDirError, match="symlink") as exc:
        lockdir.check_dir(str(link), owner=ME)
    assert str(link) in str(exc.value)
    assert link.is_symlink()


def test_check_dir_refuses_regular_file(tmp_path):
    path = tmp_path / "locks"
    path.write_text("")
    with pytest.raises(lockdir.LockDirError, match="not a directory"):
        lockdir.check_dir(str(path), owner=ME)
    assert path.is_file()


def test_check_dir_refuses_dir_of_another_owner(tmp_path):
    path = tmp_path / "locks"
    path.mkdir(mode=0o700)
    with pytest.raises(lockdir.LockDirError, match=f"owned by uid {ME}"):
        lockdir.check_dir(str(path), owner=NOT_ME)


def test_check_dir_removes_dir_it_created_when_refusing(tmp_path):
    path = tmp_path / "locks"
    with pytest.raises(lockdir.LockDirError, match="owned by"):
        lockdir.check_dir(str(path), owner=NOT_ME)
    assert not path.exists()


def test_owner_defaults_to_root(tmp_path):
    path = tmp_path / "locks"
    path.mkdir(mode=0o700)
    if ME == 0:
        lockdir.check_dir(str(path))
    else:
        with pytest.raises(lockdir.LockDirError, match="not 0"):
            lockdir.check_dir(str(path))


def test_user_lock_creates_lock_file_0600_and_keeps_it(tmp_path):
    path = str(tmp_path / "locks")
    with lockdir.user_lock(1000, path, owner=ME) as fd:
        assert fd >= 0
        lockfile = os.path.join(path, "uid.1000.lock")
        assert mode(lockfile) == 0o600
        assert stat.S_ISREG(os.lstat(lockfile).st_mode)
    assert os.path.exists(lockfile)
    assert mode(path) == 0o700


def test_user_lock_refuses_symlinked_lock_file(tmp_path):
    path = tmp_path / "locks"
    path.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    (path / "uid.1000.lock").symlink_to(target)
    with pytest.raises(lockdir.LockDirError, match="symlink") as exc:
        with lockdir.user_lock(1000, str(path), owner=ME):
            pass
    assert "uid.1000.lock" in str(exc.value)
    assert target.read_text() == "precious"


def test_user_lock_refuses_lock_file_that_is_a_directory(tmp_path):
    path = tmp_path / "locks"
    path.mkdir(mode=0o700)
    (path / "uid.1000.lock").mkdir()
    with pytest.raises(OSError, match="uid.1000.lock"):
        with lockdir.user_lock(1000, str(path), owner=ME):
            pass


def test_user_lock_refuses_group_writable_dir(tmp_path):
    path = tmp_path / "locks"
    path.mkdir()
    os.chmod(path, 0o770)
    with pytest.raises(lockdir.LockDirError, match="writable"):
        with lockdir.user_lock(1000, str(path), owner=ME):
            pass
    assert not (path / "uid.1000.lock").exists()


@pytest.mark.parametrize("bad", [-1, "1000", 1.0, True, None])
def test_user_lock_refuses_non_uid(tmp_path, bad):
    with pytest.raises(ValueError, match="uid"):
        with lockdir.user_lock(bad, str(tmp_path), owner=ME):
            pass


def _hold_lock(path, ready, release):
    with lockdir.user_lock(1000, path, owner=os.getuid()):
        ready.set()
        release.wait(30)


def test_user_lock_times_out_naming_lock_file(tmp_path):
    path = str(tmp_path / "locks")
    ready = multiprocessing.Event()
    release = multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock, args=(path, ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        t0 = time.monotonic()
        with pytest.raises(OSError) as exc:
            with lockdir.user_lock(1000, path, timeout=0.3, owner=ME):
                pass
        elapsed = time.monotonic() - t0
        assert exc.value.errno == errno.ETIMEDOUT
        assert "uid.1000.lock" in str(exc.value)
        assert 0.3 <= elapsed < 5
        # another user's lock is independent
        with lockdir.user_lock(1001, path, timeout=0.3, owner=ME):
            pass
    finally:
        release.set()
        holder.join(10)
    with lockdir.user_lock(1000, path, timeout=5, owner=ME):
        pass


def _contend(path, log, rounds):
    for _ in range(rounds):
        with lockdir.user_lock(1000, path, timeout=30, owner=os.getuid()):
            with open(log, "a") as f:
                f.write(f"enter {os.getpid()}\n")
                f.flush()
                time.sleep(0.002)
                f.write(f"leave {os.getpid()}\n")


def test_user_lock_serializes_contending_processes(tmp_path):
    path = str(tmp_path / "locks")
    log = str(tmp_path / "log")
    procs = [
        multiprocessing.Process(target=_contend, args=(path, log, 10)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = open(log).read().split("\n")[:-1]
    assert len(lines) == 4 * 10 * 2
    for enter, leave in zip(lines[::2], lines[1::2]):
        assert enter.startswith("enter ")
        assert leave == "leave " + enter.split()[1]


def test_marker_set_has_clear(tmp_path):
    path = str(tmp_path)
    assert not lockdir.has_marker(1000, path)
    lockdir.set_marker(1000, path, content="f1234\n")
    marker = lockdir.marker_path(1000, path)
    assert marker == os.path.join(path, "uid.1000.active")
    assert lockdir.has_marker(1000, path)
    assert not lockdir.has_marker(1001, path)
    assert mode(marker) == 0o600
    assert open(marker).read() == "f1234\n"
    lockdir.set_marker(1000, path, content="replaced")
    assert open(marker).read() == "replaced"
    lockdir.clear_marker(1000, path)
    assert not lockdir.has_marker(1000, path)
    lockdir.clear_marker(1000, path)  # clearing twice is fine
    assert sorted(os.listdir(path)) == []  # no temp files left behind


def test_set_marker_replaces_symlink_without_following_it(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    marker = tmp_path / "uid.1000.active"
    marker.symlink_to(target)
    lockdir.set_marker(1000, str(tmp_path), content="x")
    assert not marker.is_symlink()
    assert target.read_text() == "precious"


def test_has_marker_refuses_symlink(tmp_path):
    (tmp_path / "uid.1000.active").symlink_to(tmp_path / "nowhere")
    with pytest.raises(lockdir.LockDirError, match="uid.1000.active"):
        lockdir.has_marker(1000, str(tmp_path))


def test_set_marker_in_missing_dir_names_path(tmp_path):
    path = str(tmp_path / "missing")
    with pytest.raises(lockdir.LockDirError, match="missing"):
        lockdir.set_marker(1000, path)


def test_a_deny_line_in_the_marker_is_read_back(tmp_path):
    path = str(tmp_path)
    assert lockdir.marker_deny(1000, path) is None  # no marker
    lockdir.set_marker(1000, path)
    assert lockdir.marker_deny(1000, path) is None  # empty marker: no deny
    text = "Access denied: CPU confinement is not enforced on this node"
    lockdir.set_marker(1000, path, lockdir.deny_content(text + "\n  on two lines"))
    assert open(lockdir.marker_path(1000, path)).read() == (
        f"deny: {text} on two lines\n"
    )
    assert lockdir.marker_deny(1000, path) == f"{text} on two lines"
    lockdir.set_marker(1000, path, "f1234\ndeny: not on the first line\n")
    assert lockdir.marker_deny(1000, path) is None


def test_marker_deny_refuses_symlink(tmp_path):
    (tmp_path / "elsewhere").write_text("deny: x\n")
    (tmp_path / "uid.1000.active").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(lockdir.LockDirError, match="uid.1000.active"):
        lockdir.marker_deny(1000, str(tmp_path))

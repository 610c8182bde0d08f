"""`make install` into a DESTDIR tree, and `make uninstall` back out of it.

One install (module-scoped) is inspected by several tests; the tests that
change the tree make their own.
"""

import importlib.util
import os
import shutil
import stat
import subprocess
import sys

import checktree
import docexamples
import pytest

from flux_pam_service.cli import check

REPO = docexamples.REPO
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None, reason="make is not installed"
)


def make(*args, **kw):
    proc = subprocess.run(
        ["make", "--no-print-directory", "-C", REPO, f"PYTHON={PYTHON}", *args],
        capture_output=True,
        text=True,
        **kw,
    )
    assert proc.returncode == 0, f"make {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def pythondir(prefix="/usr"):
    return subprocess.run(
        [PYTHON, os.path.join(REPO, "mk/pythondir.py"), prefix],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def files_under(top):
    return sorted(
        os.path.relpath(os.path.join(d, f), top)
        for d, _, names in os.walk(top)
        for f in names
    )


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(scope="module")
def dest(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("install") / "dest")
    make("install", f"DESTDIR={d}")
    return d


def test_install_puts_every_documented_path_in_place(dest):
    layout = [t for _, _, k, t in docexamples.examples() if k == "layout"]
    assert layout, "the admin guide has no layout example"
    for line in layout[0].splitlines():
        path = line.split()[0]
        assert os.path.exists(dest + path), f"{path} not installed"


EXPECTED = {
    "usr/libexec/flux/cmd/flux-pam.py": 0o755,
    "usr/libexec/flux/prolog.d/flux-pam-prolog": 0o755,
    "usr/libexec/flux/housekeeping.d/flux-pam-housekeeping": 0o755,
    "usr/lib/flux/modules/pam.py": 0o644,
    "usr/lib/tmpfiles.d/flux-pam.conf": 0o644,
    "usr/share/polkit-1/rules.d/60-flux-pam.rules": 0o644,
    "etc/flux/system/conf.d/pam.toml": 0o644,
    "usr/share/doc/flux-pam-service/examples/imp-pam.toml": 0o644,
    "usr/share/doc/flux-pam-service/examples/pam.d-sshd": 0o644,
    "usr/share/doc/flux-pam-service/examples/perilog.toml": 0o644,
    "usr/share/doc/flux-pam-service/examples/access-flux.conf": 0o644,
    "usr/share/man/man1/flux-pam.1": 0o644,
    "usr/share/man/man5/flux-config-pam.5": 0o644,
    "usr/share/man/man8/pam_flux.8": 0o644,
}


@pytest.mark.parametrize("rel,want", sorted(EXPECTED.items()))
def test_installed_file_has_its_mode(dest, rel, want):
    assert mode(os.path.join(dest, rel)) == want


def pam_status():
    """(PAM module directory, None) or (None, why pam_flux.so is not built)."""
    out = make("-C", "pam", "status").strip().splitlines()[-1]
    if out.startswith("buildable "):
        return out.split(" ", 1)[1], None
    return None, out


def test_pam_module_goes_to_the_directory_of_pam_unix(dest):
    pamdir, why = pam_status()
    if pamdir is None:
        pytest.skip(f"pam_flux.so {why}")
    assert os.path.exists(os.path.join(pamdir, "pam_unix.so"))
    path = dest + pamdir + "/pam_flux.so"
    assert mode(path) == 0o644
    with open(path, "rb") as f:
        assert f.read(4) == b"\x7fELF"


def test_install_without_flux_core_installs_the_rest_and_says_why(tmp_path):
    d = str(tmp_path / "dest")
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            REPO,
            f"PYTHON={PYTHON}",
            "install",
            f"DESTDIR={d}",
            "FLUX_CORE_PC=",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pam_flux.so was NOT built or installed: flux-core not found" in proc.stderr
    installed = files_under(d)
    assert not [f for f in installed if f.endswith("pam_flux.so")]
    assert "usr/share/man/man8/pam_flux.8" in installed
    assert "usr/lib/flux/modules/pam.py" in installed


def test_python_package_is_complete_in_pythons_own_directory(dest):
    pkg = os.path.join(dest + pythondir(), "flux_pam_service")
    src = sorted(
        os.path.relpath(os.path.join(d, f), os.path.join(REPO, "flux_pam_service"))
        for d, _, names in os.walk(os.path.join(REPO, "flux_pam_service"))
        for f in names
        if f.endswith(".py")
    )
    assert [f for f in files_under(pkg) if "__pycache__" not in f] == src
    assert all(mode(os.path.join(pkg, f)) == 0o644 for f in src)


def test_python_package_is_byte_compiled(dest):
    """Bytecode for the drop-ins, valid for the sources."""
    pkg = os.path.join(dest + pythondir(), "flux_pam_service")
    for rel in files_under(pkg):
        if not rel.endswith(".py"):
            continue
        src = os.path.join(pkg, rel)
        pyc = importlib.util.cache_from_source(src)
        with open(pyc, "rb") as f:
            header = f.read(16)
        with open(src, "rb") as f:
            source = f.read()
        assert header[:4] == importlib.util.MAGIC_NUMBER, rel
        flags = int.from_bytes(header[4:8], "little")
        assert flags == 0b11, f"{rel}: not checked-hash bytecode"
        assert header[8:16] == importlib.util.source_hash(source), rel


def test_modprobe_files_land_in_flux_search_path(dest):
    toml = os.listdir(os.path.join(dest, "usr/share/flux/modprobe/modprobe.d"))
    rc1 = os.listdir(os.path.join(dest, "usr/libexec/flux/modprobe/rc1.d"))
    assert toml and all(f.endswith(".toml") for f in toml)
    assert rc1 and all(f.endswith(".py") for f in rc1)


def test_man_pages_are_troff(dest):
    for rel in ("man1/flux-pam.1", "man5/flux-config-pam.5", "man8/pam_flux.8"):
        with open(os.path.join(dest, "usr/share/man", rel)) as f:
            assert "\n.TH " in f.read()


def test_flux_pam_py_runs_from_install_with_its_pythondir(dest, tmp_path):
    cmd = os.path.join(dest, "usr/libexec/flux/cmd/flux-pam.py")
    with open(cmd) as f:
        assert f'PYTHONDIR = "{pythondir()}"' in f.read()
    env = dict(os.environ, PYTHONPATH=dest + pythondir())
    proc = subprocess.run(
        [
            PYTHON,
            "-s",
            cmd,
            "config",
            "--config-path",
            os.path.join(dest, "etc/flux/system/conf.d"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert '"manage-user-slice": true' in proc.stdout


def test_installed_tree_with_shipped_examples_passes_check(dest, tmp_path):
    root = str(tmp_path / "node")
    shutil.copytree(dest, root, symlinks=True)
    ex = os.path.join(root, "usr/share/doc/flux-pam-service/examples")
    for src, dst in (
        ("imp-pam.toml", "etc/flux/imp/conf.d/pam.toml"),
        ("perilog.toml", "etc/flux/system/conf.d/perilog.toml"),
        ("pam.d-sshd", "etc/pam.d/sshd"),
    ):
        os.makedirs(os.path.dirname(os.path.join(root, dst)), exist_ok=True)
        shutil.copy(os.path.join(ex, src), os.path.join(root, dst))
    # what flux-core and Debian provide on a node
    for name, text in checktree.COMMON.items():
        checktree.write(root, f"etc/pam.d/{name}", text)
    for c in ("flux-run-prolog", "flux-run-housekeeping"):
        checktree.write(root, f"usr/libexec/flux/cmd/{c}", "#!/bin/sh\n", 0o755)
    checktree.write(root, "etc/passwd", checktree.PASSWD)
    checktree.write(root, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu memory\n")
    for d in ("etc/flux/imp/conf.d", "etc/flux/imp", "etc/flux", "etc"):
        os.chmod(os.path.join(root, d), 0o755)
    os.chmod(root, 0o755)
    results = dict(check.run_checks(check.Context(root=root)))
    for name, res in results.items():
        want = check.WARN if name in ("systemd", "module", "lock-dir") else check.PASS
        assert res.status == want, f"{name}: {res.detail}"
    assert "created at boot" in results["lock-dir"].detail


def test_install_keeps_existing_config_and_uninstall_keeps_changed_one(tmp_path):
    d = str(tmp_path / "dest")
    conf = os.path.join(d, "etc/flux/system/conf.d/pam.toml")
    checktree.write(d, "etc/flux/system/conf.d/pam.toml", "[pam]\ndebug = true\n")
    out = make("install", f"DESTDIR={d}")
    assert "KEEP    /etc/flux/system/conf.d/pam.toml" in out
    with open(conf) as f:
        assert f.read() == "[pam]\ndebug = true\n"
    out = make("uninstall", f"DESTDIR={d}")
    assert "changed locally" in out
    assert files_under(d) == ["etc/flux/system/conf.d/pam.toml"]


def test_uninstall_removes_every_installed_file_and_nothing_else(tmp_path):
    d = str(tmp_path / "dest")
    foreign = checktree.write(d, "usr/libexec/flux/prolog.d/site-prolog", "#!/bin/sh\n")
    make("install", f"DESTDIR={d}")
    assert len(files_under(d)) > 20
    # runtime leftovers inside our package directory go too
    pkg = os.path.join(d + pythondir(), "flux_pam_service")
    checktree.write(pkg, "__pycache__/config.cpython-311.pyc", "")
    make("uninstall", f"DESTDIR={d}")
    assert files_under(d) == [os.path.relpath(foreign, d)]


def test_install_honours_prefix_and_libexecdir(tmp_path):
    d = str(tmp_path / "dest")
    make(
        "install",
        f"DESTDIR={d}",
        "PREFIX=/usr/local",
        "LIBEXECDIR=/opt/flux/libexec",
        "FLUXDATADIR=/opt/flux/share/flux",
        "FLUXMODDIR=/opt/flux/lib/flux/modules",
    )
    for rel in (
        "opt/flux/lib/flux/modules/pam.py",
        "opt/flux/libexec/flux/cmd/flux-pam.py",
        "opt/flux/libexec/flux/prolog.d/flux-pam-prolog",
        "usr/local/share/man/man8/pam_flux.8",
        pythondir("/usr/local").lstrip("/") + "/flux_pam_service/config.py",
    ):
        assert os.path.exists(os.path.join(d, rel)), rel
    assert os.listdir(os.path.join(d, "opt/flux/share/flux/modprobe/modprobe.d"))
    pamdir, _ = pam_status()
    if pamdir:  # the system's PAM directory, whatever PREFIX is
        assert os.path.exists(d + pamdir + "/pam_flux.so")
    make(
        "uninstall",
        f"DESTDIR={d}",
        "PREFIX=/usr/local",
        "LIBEXECDIR=/opt/flux/libexec",
        "FLUXDATADIR=/opt/flux/share/flux",
        "FLUXMODDIR=/opt/flux/lib/flux/modules",
    )
    assert files_under(d) == []


def test_install_refuses_when_a_source_is_missing(tmp_path):
    proc = subprocess.run(
        [
            "make",
            "-C",
            REPO,
            "install",
            f"DESTDIR={tmp_path}/d",
            "INSTALL_TABLE=no/such/file,/x,0644",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "missing source files: no/such/file" in proc.stderr
    assert not os.path.exists(f"{tmp_path}/d/x")

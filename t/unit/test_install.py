"""`make install` into a DESTDIR tree, and `make uninstall` back out of it.

One install (module-scoped) is inspected by several tests; the tests that
change the tree make their own.  make() tells make that no flux command is
known and leaves pkg-config its default search path (FLUX=false, no
PKG_CONFIG_PATH), so the directories are those of a flux-core in /usr; the
tests of the discovery give it a fake flux-core.  pam_flux.so is built where
pam/Makefile finds a flux-core to build it against.
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


# No flux command, and pkg-config's default search path only: the directory
# defaults.  pam/Makefile still finds a flux-core for pam_flux.so where one
# is installed (next to a flux on PATH, or in /opt/flux).
NO_FLUX = ("FLUX=false", "PKG_CONFIG_PATH=")


def make(*args, flux=NO_FLUX, **kw):
    kw.setdefault("env", dict(os.environ, PKG_CONFIG_PATH=""))
    proc = subprocess.run(
        ["make", "--no-print-directory", "-C", REPO, f"PYTHON={PYTHON}", *flux, *args],
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
    pamdir, why = pam_status()
    for line in layout[0].splitlines():
        path = line.split()[0]
        if path.endswith("/pam_flux.so") and pamdir is None:
            continue  # not built here (why); the tests below say so
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
            *NO_FLUX,
            "install",
            f"DESTDIR={d}",
            "FLUX_CORE_PC=",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PKG_CONFIG_PATH=""),
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
    checktree.write(root, "etc/flux/system/conf.d/system.toml", checktree.SYSTEM)
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
        pythondir("/usr/local").lstrip("/") + "/flux_pam_service/core/config.py",
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


# --- flux-core's own directories ----------------------------------------------

PC = """\
prefix=/opt/xflux
exec_prefix=${prefix}
libdir=${exec_prefix}/lib
fluxconfdir=/opt/xflux/etc/flux
fluxlibexecdir=/opt/xflux/libexec/flux
fluxdatadir=/opt/xflux/share/flux
fluxmoddir=/opt/xflux/lib/flux/modules

Name: flux-core
Description: test
Version: 0.88.0
Libs: -L${libdir} -lflux-core
"""

FAKE_FLUX = """\
#!/bin/sh
test "$1 $2" = "config builtin" || exit 1
case $3 in
libexecdir) echo /opt/yflux/libexec/flux;;
datadir) echo /opt/yflux/share/flux;;
module_path) echo /opt/yflux/lib/flux/modules:/elsewhere;;
confdir) echo /opt/yflux/etc/flux;;
*) exit 1;;
esac
"""


def test_install_takes_flux_cores_directories_from_pkg_config(tmp_path):
    if shutil.which("pkg-config") is None:
        pytest.skip("pkg-config is not installed")
    pcdir = tmp_path / "pc"
    pcdir.mkdir()
    (pcdir / "flux-core.pc").write_text(PC)
    (pcdir / "flux-security.pc").write_text(
        "prefix=/opt/xsec\n\nName: flux-security\nDescription: t\nVersion: 0.15.0\n"
    )
    d = str(tmp_path / "dest")
    out = make(
        "install",
        f"DESTDIR={d}",
        flux=("FLUX=false", "PKG_CONFIG=pkg-config", f"PKG_CONFIG_PATH={pcdir}"),
    )
    assert f"from pkg-config ({pcdir}/flux-core.pc)" in out
    for rel in (
        "opt/xflux/libexec/flux/cmd/flux-pam.py",
        "opt/xflux/libexec/flux/prolog.d/flux-pam-prolog",
        "opt/xflux/lib/flux/modules/pam.py",
        "opt/xflux/share/flux/modprobe/modprobe.d/pam.toml",
        "opt/xflux/etc/flux/system/conf.d/pam.toml",
    ):
        assert os.path.exists(os.path.join(d, rel)), rel
    assert not os.path.exists(os.path.join(d, "etc/flux"))
    # the examples name this flux-core's paths, the IMP's flux-security's
    ex = os.path.join(d, "usr/share/doc/flux-pam-service/examples")
    with open(os.path.join(ex, "imp-pam.toml")) as f:
        imp = f.read()
    assert 'path = "/opt/xflux/libexec/flux/cmd/flux-run-prolog"' in imp
    assert "/opt/xsec/etc/flux/imp/conf.d/pam.toml" in imp
    assert "/usr/libexec" not in imp


def fake_flux(tmp_path):
    flux = tmp_path / "bin" / "flux"
    flux.parent.mkdir()
    flux.write_text(FAKE_FLUX)
    flux.chmod(0o755)
    return str(flux)


def test_install_asks_the_installed_flux_without_pkg_config(tmp_path):
    flux = fake_flux(tmp_path)
    d = str(tmp_path / "dest")
    out = make("install", f"DESTDIR={d}", flux=(f"FLUX={flux}", "PKG_CONFIG=false"))
    assert f"from {flux} config builtin" in out
    for rel in (
        "opt/yflux/libexec/flux/cmd/flux-pam.py",
        "opt/yflux/lib/flux/modules/pam.py",
        "opt/yflux/share/flux/modprobe/modprobe.d/pam.toml",
        "opt/yflux/etc/flux/system/conf.d/pam.toml",
    ):
        assert os.path.exists(os.path.join(d, rel)), rel
    # a variable on the command line wins over what flux says
    d2 = str(tmp_path / "dest2")
    make(
        "install",
        f"DESTDIR={d2}",
        "FLUXMODDIR=/srv/mods",
        flux=(f"FLUX={flux}", "PKG_CONFIG=false"),
    )
    assert os.path.exists(os.path.join(d2, "srv/mods/pam.py"))


def test_install_config_puts_the_examples_where_flux_reads_them(tmp_path):
    flux = (f"FLUX={fake_flux(tmp_path)}", "PKG_CONFIG=false")
    d = str(tmp_path / "dest")
    make("install", f"DESTDIR={d}", flux=flux)
    out = make("install-config", f"DESTDIR={d}", flux=flux)
    perilog = os.path.join(d, "opt/yflux/etc/flux/system/conf.d/perilog.toml")
    imp = os.path.join(d, "opt/yflux/etc/flux/imp/conf.d/pam.toml")
    assert mode(perilog) == 0o644 and mode(imp) == 0o644
    with open(imp) as f:
        assert "/opt/yflux/libexec/flux/cmd/flux-run-housekeeping" in f.read()
    assert "INSTALL /opt/yflux/etc/flux/imp/conf.d/pam.toml" in out
    # again: both are there
    assert make("install-config", f"DESTDIR={d}", flux=flux).count("KEEP") == 2
    # uninstall-config removes unchanged files only
    with open(perilog, "a") as f:
        f.write("# site edit\n")
    out = make("uninstall-config", f"DESTDIR={d}", flux=flux)
    assert "RM      /opt/yflux/etc/flux/imp/conf.d/pam.toml" in out
    assert "changed locally" in out
    assert os.path.exists(perilog) and not os.path.exists(imp)


def test_install_config_leaves_a_site_with_its_own_run_tables_alone(tmp_path):
    flux = (f"FLUX={fake_flux(tmp_path)}", "PKG_CONFIG=false")
    d = str(tmp_path / "dest")
    make("install", f"DESTDIR={d}", flux=flux)
    site = checktree.write(
        d, "opt/yflux/etc/flux/imp/conf.d/site.toml", '[run.housekeeping]\npath="/x"\n'
    )
    out = make("install-config", f"DESTDIR={d}", flux=flux)
    assert "SKIP    /opt/yflux/etc/flux/imp/conf.d/pam.toml" in out
    assert "/opt/yflux/etc/flux/imp/conf.d/site.toml has [run.prolog]" in out
    assert os.listdir(os.path.dirname(site)) == ["site.toml"]

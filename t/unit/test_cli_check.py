"""`flux pam check`: each misconfiguration planted in a node tree is found.

The good tree (checktree.build) is assembled from the repo's shipped
examples; each test breaks one thing and asserts the check that must notice.
"""

import os
import shutil

import checktree
import pytest

from flux_pam_service.cli import check, main
from flux_pam_service.cli.check import node


@pytest.fixture
def root(tmp_path):
    return checktree.build(str(tmp_path / "node"))


def ctx_for(root, **kw):
    return check.Context(root=root, **kw)


def run(name, root, **kw):
    fn = dict(check.CHECKS)[name]
    return fn(ctx_for(root, **kw))


def edit(root, rel, old, new):
    path = os.path.join(root, rel)
    with open(path) as f:
        text = f.read()
    assert old in text, f"{old!r} not in {rel}"
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def edit_pam_toml(root, old, new):
    edit(root, "etc/flux/system/conf.d/pam.toml", old, new)


def append(root, rel, text):
    with open(os.path.join(root, rel), "a") as f:
        f.write(text)


# --- the good tree --------------------------------------------------------


def test_good_tree_passes_every_check_that_runs_offline(root):
    results = dict(check.run_checks(ctx_for(root)))
    assert set(results) == {name for name, _ in check.CHECKS}
    skipped = {"systemd", "module"}  # need the live system
    for name, res in results.items():
        if name in skipped:
            assert res.status == check.WARN and "skipped under --root" in res.detail
        else:
            assert res.status == check.PASS, f"{name}: {res.detail}"


def test_cli_prints_one_line_per_check_and_exits_zero_on_good_tree(root, capsys):
    assert main(["check", "--root", root]) == 0
    out = capsys.readouterr().out.splitlines()
    verdicts = [line for line in out if not line.startswith("      fix: ")]
    assert len(verdicts) == len(check.CHECKS)
    for line, (name, _) in zip(verdicts, check.CHECKS):
        status, rest = line.split("  ", 1)
        assert status in ("PASS", "WARN")
        assert rest.startswith(f"{name}: ")
    # every WARN is followed by its fix
    for i, line in enumerate(out):
        if line.startswith("WARN"):
            assert out[i + 1].startswith("      fix: ")


def test_cli_exits_nonzero_and_prints_fix_on_any_fail(root, capsys):
    os.chmod(os.path.join(root, "run/flux-pam"), 0o777)
    assert main(["check", "--root", root]) == 1
    out = capsys.readouterr().out.splitlines()
    i = next(i for i, line in enumerate(out) if line.startswith("FAIL  lock-dir:"))
    assert out[i + 1].startswith("      fix: chown root:root /run/flux-pam")


def test_cli_refuses_missing_root(tmp_path, capsys):
    assert main(["check", "--root", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_pam_stack_option_reads_another_file(root, tmp_path, capsys):
    other = tmp_path / "sshd-test"
    shutil.copy(os.path.join(root, "etc/pam.d/sshd"), other)
    with open(other, "a") as f:
        f.write("session optional pam_systemd.so\n")
    assert main(["check", "--root", root, "--pam-stack", str(other)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  pam-systemd: pam_systemd.so runs for job users at {other}:" in out


# --- config ---------------------------------------------------------------


def test_config_check_fails_on_unknown_pam_key(root):
    edit(root, "etc/flux/system/conf.d/pam.toml", "debug = false", "debgu = false")
    res = run("config", root)
    assert res.status == check.FAIL
    assert "pam.toml: pam.debgu: unknown key" in res.detail


def test_config_check_warns_when_slices_are_not_managed(root):
    edit(
        root,
        "etc/flux/system/conf.d/pam.toml",
        "manage-user-slice = true",
        "manage-user-slice = false",
    )
    res = run("config", root)
    assert res.status == check.WARN
    assert "manage-user-slice is false" in res.detail


def test_config_check_reads_config_path_option(root):
    os.makedirs(os.path.join(root, "opt/conf"))
    checktree.write(root, "opt/conf/pam.toml", '[pam]\nkill-slice-grace-time = "inf"\n')
    res = run("config", root, config_path="/opt/conf")
    assert res.status == check.FAIL
    assert "pam.kill-slice-grace-time" in res.detail


# --- perilog --------------------------------------------------------------

PERILOG = "etc/flux/system/conf.d/perilog.toml"


def test_perilog_check_fails_on_per_rank_housekeeping_refused_by_088(root):
    append(root, PERILOG, "per-rank = true\n")  # lands in [job-manager.housekeeping]
    res = run("perilog", root)
    assert res.status == check.FAIL
    assert "housekeeping.per-rank" in res.detail and "0.88" in res.detail
    assert "delete per-rank from [job-manager.housekeeping]" in res.fix


def test_perilog_check_fails_without_perilog_plugin(root):
    edit(root, PERILOG, 'plugins = [ { load = "perilog.so" } ]', "")
    res = run("perilog", root)
    assert res.status == check.FAIL
    assert "perilog.so is not in job-manager.plugins" in res.detail


def test_perilog_check_fails_without_per_rank_prolog(root):
    edit(root, PERILOG, "per-rank = true", 'timeout = "5m"')
    res = run("perilog", root)
    assert res.status == check.FAIL
    assert "prolog.per-rank is not true" in res.detail


def test_perilog_check_fails_without_housekeeping_table(root):
    edit(root, PERILOG, "[job-manager.housekeeping]", "")
    res = run("perilog", root)
    assert res.status == check.FAIL
    assert "housekeeping never runs" in res.detail


def test_perilog_check_fails_without_imp_for_default_commands(root):
    os.unlink(os.path.join(root, "etc/flux/system/conf.d/system.toml"))
    res = run("perilog", root)
    assert res.status == check.FAIL
    assert "exec.imp is not set" in res.detail


def test_access_check_fails_without_allow_root_owner(root):
    edit(root, PERILOG, "allow-root-owner = true", "allow-root-owner = false")
    res = run("access", root)
    assert res.status == check.FAIL
    assert "root cannot read other users' jobs" in res.detail


# --- IMP ------------------------------------------------------------------

IMP = "etc/flux/imp/conf.d/pam.toml"


def test_imp_check_fails_when_owner_not_allowed_to_run_housekeeping(root):
    edit(
        root,
        IMP,
        '[run.housekeeping]\nallowed-users = [ "flux" ]',
        '[run.housekeeping]\nallowed-users = [ "root" ]',
    )
    res = run("imp-run", root)
    assert res.status == check.FAIL
    assert "run.housekeeping.allowed-users lacks 'flux'" in res.detail
    assert "run.prolog" not in res.detail


def test_imp_check_uses_owner_option(root):
    res = run("imp-run", root, owner="fluxadm")
    assert res.status == check.FAIL
    assert "run.prolog.allowed-users lacks 'fluxadm'" in res.detail


def test_imp_check_fails_when_environment_drops_flux_uri(root):
    edit(
        root,
        IMP,
        '[run.prolog]\nallowed-users = [ "flux" ]\nallowed-environment = [ "FLUX_*" ]',
        '[run.prolog]\nallowed-users = [ "flux" ]\n'
        'allowed-environment = [ "FLUX_JOB_*" ]',
    )
    res = run("imp-run", root)
    assert res.status == check.FAIL
    assert "run.prolog.allowed-environment does not pass FLUX_URI" in res.detail


def test_imp_check_fails_when_run_path_is_not_executable(root):
    os.unlink(os.path.join(root, "usr/libexec/flux/cmd/flux-run-prolog"))
    res = run("imp-run", root)
    assert res.status == check.FAIL
    assert "flux-run-prolog is not an executable file" in res.detail


def test_imp_permissions_check_fails_on_world_writable_file(root):
    os.chmod(os.path.join(root, IMP), 0o646)
    res = run("imp-permissions", root)
    assert res.status == check.FAIL
    assert "world-writable (0646)" in res.detail


def test_imp_permissions_check_warns_on_group_writable_dir(root):
    os.chmod(os.path.join(root, "etc/flux/imp/conf.d"), 0o775)
    res = run("imp-permissions", root)
    assert res.status == check.WARN
    assert "group-writable (0775)" in res.detail


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_imp_permissions_check_fails_on_foreign_owner(root):
    os.chown(os.path.join(root, IMP), 65534, -1)
    res = run("imp-permissions", root)
    assert res.status == check.FAIL
    assert "owned by uid 65534" in res.detail


# --- lock dir -------------------------------------------------------------


@pytest.mark.parametrize("bits", [0o770, 0o702, 0o777])
def test_lock_dir_check_fails_on_writable_mode(root, bits):
    os.chmod(os.path.join(root, "run/flux-pam"), bits)
    res = run("lock-dir", root)
    assert res.status == check.FAIL
    assert "group- or other-writable" in res.detail


def test_lock_dir_check_fails_on_symlink(root, tmp_path):
    lock = os.path.join(root, "run/flux-pam")
    os.rmdir(lock)
    os.symlink(str(tmp_path), lock)
    res = run("lock-dir", root)
    assert res.status == check.FAIL
    assert "not a directory" in res.detail


def test_lock_dir_check_warns_when_absent_with_tmpfiles_entry(root):
    os.rmdir(os.path.join(root, "run/flux-pam"))
    res = run("lock-dir", root)
    assert res.status == check.WARN
    assert "/usr/lib/tmpfiles.d/flux-pam.conf" in res.detail


def test_lock_dir_check_fails_when_absent_without_tmpfiles_entry(root):
    os.rmdir(os.path.join(root, "run/flux-pam"))
    os.unlink(os.path.join(root, "usr/lib/tmpfiles.d/flux-pam.conf"))
    res = run("lock-dir", root)
    assert res.status == check.FAIL
    assert "no tmpfiles.d entry" in res.detail


def test_lock_dir_check_fails_on_tmpfiles_entry_with_loose_mode(root):
    os.rmdir(os.path.join(root, "run/flux-pam"))
    edit(root, "usr/lib/tmpfiles.d/flux-pam.conf", "0700", "0755")
    res = run("lock-dir", root)
    assert res.status == check.FAIL
    assert "does not say 0700 root root" in res.detail


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_lock_dir_check_fails_on_foreign_owner(root):
    os.chown(os.path.join(root, "run/flux-pam"), 65534, -1)
    res = run("lock-dir", root)
    assert res.status == check.FAIL
    assert "owned by uid 65534" in res.detail


# --- systemd and cgroup ---------------------------------------------------


def test_systemd_check_is_skipped_with_warning_under_root(root):
    res = run("systemd", root)
    assert res.status == check.WARN and "skipped" in res.detail


def test_systemd_version_parsing():
    assert node.parse_systemd_version("systemd 252 (252.39-1~deb12u2)\n+PAM") == 252
    with pytest.raises(ValueError):
        node.parse_systemd_version("upstart 1.0")


def test_systemd_check_fails_live_on_old_systemd(tmp_path):
    fake = checktree.write(
        str(tmp_path), "systemctl", "#!/bin/sh\necho 'systemd 237 (237)'\n", 0o755
    )
    res = check.check_systemd(check.Context(root="/", systemctl=fake))
    assert res.status == check.FAIL
    assert "systemd 237 is older than 239" in res.detail


def test_systemd_check_fails_live_without_systemctl(tmp_path):
    res = check.check_systemd(check.Context(root="/", systemctl=str(tmp_path / "none")))
    assert res.status == check.FAIL


def test_cgroup_check_fails_on_hybrid_hierarchy(root):
    cg = os.path.join(root, "sys/fs/cgroup")
    os.unlink(os.path.join(cg, "cgroup.controllers"))
    checktree.write(root, "sys/fs/cgroup/unified/cgroup.controllers", "")
    res = run("cgroup2", root)
    assert res.status == check.FAIL and "hybrid" in res.detail


def test_cgroup_check_fails_on_v1(root):
    os.unlink(os.path.join(root, "sys/fs/cgroup/cgroup.controllers"))
    os.makedirs(os.path.join(root, "sys/fs/cgroup/cpuset"))
    res = run("cgroup2", root)
    assert res.status == check.FAIL and "not cgroup2" in res.detail


def controllers_check(root, controllers, *edits):
    """The cgroup-controllers check with this cgroup.controllers text and
    pam.toml edited by each (old, new) of *edits*."""
    checktree.write(root, "sys/fs/cgroup/cgroup.controllers", controllers)
    for old, new in edits:
        edit_pam_toml(root, old, new)
    return run("cgroup-controllers", root)


def test_controllers_check_passes_when_cgroup2_offers_cpuset(root):
    res = run("cgroup-controllers", root)
    assert res.status == check.PASS and "offers cpuset" in res.detail


def test_controllers_check_fails_without_cpuset_naming_it_and_the_fix(root):
    res = controllers_check(root, "cpu io memory pids\n")
    assert res.status == check.FAIL
    assert "does not offer cpuset to user.slice" in res.detail
    assert "cgroup.controllers: cpu io memory pids" in res.detail
    assert res.detail.endswith("logins of job users are refused")
    assert "mount no cgroup v1 cpuset hierarchy" in res.fix
    assert "+cpuset in cgroup.subtree_control" in res.fix


def test_controllers_check_names_an_empty_hierarchy(root):
    res = controllers_check(root, "")
    assert res.status == check.FAIL and "cgroup.controllers: none" in res.detail


def test_controllers_check_wants_memory_only_with_a_memory_limit(root):
    assert controllers_check(root, "cpuset pids\n").status == check.PASS
    limit = '\n[exec.sdexec-properties]\nMemoryMax = "90%"\n'
    append(root, "etc/flux/system/conf.d/pam.toml", limit)
    res = run("cgroup-controllers", root)
    assert res.status == check.FAIL
    assert "does not offer memory to user.slice" in res.detail
    assert "memory limits of user slices are not enforced" in res.detail
    assert "remove the memory limits" in res.fix


def test_controllers_check_wants_memory_for_a_login_memory_limit(root):
    edit = ('login-memory-max = "infinity"', 'login-memory-max = "4G"')
    res = controllers_check(root, "cpuset pids\n", edit)
    assert res.status == check.FAIL
    assert "does not offer memory to user.slice" in res.detail
    assert "pam.login-memory-max" in res.fix


def test_controllers_check_says_when_logins_are_admitted_unconfined(root):
    opt_in = ("allow-unconfined-logins = false", "allow-unconfined-logins = true")
    res = controllers_check(root, "pids\n", opt_in)
    assert res.status == check.FAIL
    assert "admitted unconfined (pam.allow-unconfined-logins)" in res.detail


def test_controllers_check_needs_nothing_without_constraints(root):
    off = ("sdexec-constrain-resources = true", "sdexec-constrain-resources = false")
    res = controllers_check(root, "", off)
    assert res.status == check.PASS and "no controller needed" in res.detail


# --- pam_systemd ----------------------------------------------------------


def test_pam_systemd_check_finds_it_in_included_common_session(root):
    append(root, "etc/pam.d/common-session", "session\toptional\tpam_systemd.so\n")
    res = run("pam-systemd", root)
    assert res.status == check.FAIL
    assert "etc/pam.d/common-session:5" in res.detail


def test_pam_systemd_check_finds_it_through_include_control(root):
    checktree.write(
        root, "etc/pam.d/extra", "-session optional /lib/security/pam_systemd.so\n"
    )
    append(root, "etc/pam.d/sshd", "session include extra\n")
    res = run("pam-systemd", root)
    assert res.status == check.FAIL
    assert "etc/pam.d/extra:1" in res.detail


def test_pam_systemd_check_finds_it_through_substack(root):
    checktree.write(root, "etc/pam.d/sub", "session required pam_systemd.so\n")
    append(root, "etc/pam.d/sshd", "session substack sub\n")
    assert run("pam-systemd", root).status == check.FAIL


def test_pam_systemd_check_ignores_commented_line(root):
    append(root, "etc/pam.d/common-session", "#session optional pam_systemd.so\n")
    assert run("pam-systemd", root).status == check.PASS


def test_pam_systemd_check_warns_on_missing_include(root):
    append(root, "etc/pam.d/sshd", "@include common-nothere\n")
    res = run("pam-systemd", root)
    assert res.status == check.WARN and "common-nothere" in res.detail


# --- pam_flux -------------------------------------------------------------

ACCOUNT = "account    required     pam_flux.so"
SESSION = "session    requisite    pam_flux.so"


def test_pam_flux_check_fails_without_session_rule(root):
    edit(root, "etc/pam.d/sshd", SESSION, "")
    res = run("pam-flux", root)
    assert res.status == check.FAIL
    assert "no session rule runs pam_flux.so" in res.detail


def test_pam_flux_check_fails_without_account_rule(root):
    edit(root, "etc/pam.d/sshd", ACCOUNT, "")
    res = run("pam-flux", root)
    assert res.status == check.FAIL
    assert "no account rule runs pam_flux.so" in res.detail


def test_pam_flux_check_fails_on_lone_sufficient_account(root):
    edit(root, "etc/pam.d/sshd", ACCOUNT, ACCOUNT.replace("required ", "sufficient"))
    res = run("pam-flux", root)
    assert res.status == check.FAIL
    assert "a denial is ignored" in res.detail


def test_pam_flux_check_fails_on_sufficient_before_common_account(root):
    edit(root, "etc/pam.d/sshd", ACCOUNT, "")
    edit(
        root,
        "etc/pam.d/sshd",
        "@include common-account",
        ACCOUNT.replace("required ", "sufficient")
        + "\n@include common-account\naccount required pam_access.so",
    )
    res = run("pam-flux", root)
    assert res.status == check.FAIL
    assert "skips the account checks of pam_unix" in res.detail


def test_pam_flux_check_accepts_sufficient_followed_by_pam_access(root):
    edit(
        root,
        "etc/pam.d/sshd",
        ACCOUNT,
        ACCOUNT.replace("required ", "sufficient") + "\naccount required pam_access.so",
    )
    assert run("pam-flux", root).status == check.PASS


@pytest.mark.parametrize("control", ["optional", "sufficient"])
def test_pam_flux_check_fails_on_session_that_can_be_skipped(root, control):
    edit(root, "etc/pam.d/sshd", SESSION, SESSION.replace("requisite", control))
    res = run("pam-flux", root)
    assert res.status == check.FAIL
    assert "unconfined sessions" in res.detail


def test_pam_flux_check_warns_when_session_precedes_pam_unix(root):
    edit(root, "etc/pam.d/sshd", SESSION, "")
    edit(
        root,
        "etc/pam.d/sshd",
        "@include common-session",
        SESSION + "\n@include common-session",
    )
    res = run("pam-flux", root)
    assert res.status == check.WARN
    assert "before pam_unix" in res.detail


def test_pam_flux_check_fails_when_module_file_is_missing(root):
    os.unlink(os.path.join(root, checktree.PAM_MODULE))
    res = run("pam-flux", root)
    assert res.status == check.FAIL
    assert "pam_flux.so is not installed" in res.detail


def test_pam_flux_check_finds_a_module_named_by_its_path(root):
    path = "/usr/local/lib/security/pam_flux.so"
    checktree.write(root, path.lstrip("/"), "a module")
    edit(root, "etc/pam.d/sshd", ACCOUNT, ACCOUNT.replace("pam_flux.so", path))
    assert run("pam-flux", root).status == check.PASS
    os.unlink(os.path.join(root, path.lstrip("/")))
    res = run("pam-flux", root)
    assert res.status == check.FAIL and f"{path} is not installed" in res.detail


def test_pam_flux_check_fails_on_the_python_module_of_earlier_releases(root):
    old = "account required pam_python.so /usr/lib/flux-pam/pam_flux.py"
    edit(root, "etc/pam.d/sshd", ACCOUNT, ACCOUNT + "\n" + old)
    res = run("pam-flux", root)
    assert res.status == check.FAIL
    assert "the Python pam_flux (pam_python.so pam_flux.py) is no longer" in res.detail


# --- linger ---------------------------------------------------------------


def linger(root, name):
    checktree.write(root, f"var/lib/systemd/linger/{name}", "")


def test_linger_check_fails_for_job_user(root):
    linger(root, "alice")
    res = run("linger", root)
    assert res.status == check.FAIL
    assert "linger is on for alice" in res.detail
    assert res.fix == "loginctl disable-linger alice"


def test_linger_check_fails_for_user_missing_from_passwd(root):
    linger(root, "carol")
    assert run("linger", root).status == check.FAIL


def test_linger_check_exempts_owner_and_system_users(root):
    linger(root, "flux")
    linger(root, "daemon")
    res = run("linger", root)
    assert res.status == check.PASS, res.detail


def test_linger_check_honours_uid_min(root):
    checktree.write(root, "etc/login.defs", "UID_MIN 1001\n")
    linger(root, "alice")
    linger(root, "bob")
    res = run("linger", root)
    assert res.status == check.FAIL
    assert "linger is on for bob:" in res.detail


# --- polkit ---------------------------------------------------------------

RULE = "usr/share/polkit-1/rules.d/60-flux-pam.rules"


def test_polkit_check_fails_without_rule(root):
    os.unlink(os.path.join(root, RULE))
    res = run("polkit", root)
    assert res.status == check.FAIL
    assert "60-flux-pam.rules is in neither" in res.detail


def test_polkit_check_accepts_rule_in_etc(root):
    os.makedirs(os.path.join(root, "etc/polkit-1/rules.d"))
    os.rename(
        os.path.join(root, RULE),
        os.path.join(root, "etc/polkit-1/rules.d/60-flux-pam.rules"),
    )
    res = run("polkit", root)
    assert res.status == check.PASS and "/etc/polkit-1/rules.d" in res.detail


def test_polkit_check_fails_when_rule_names_another_owner(root):
    res = run("polkit", root, owner="fluxadm")
    assert res.status == check.FAIL
    assert "does not name the owner 'fluxadm'" in res.detail


# --- module ---------------------------------------------------------------


def test_module_check_is_skipped_with_warning_under_root(root):
    res = run("module", root)
    assert res.status == check.WARN and "skipped" in res.detail


# --- drop-ins -------------------------------------------------------------

PROLOG = "usr/libexec/flux/prolog.d/flux-pam-prolog"


def test_drop_ins_check_fails_when_housekeeping_is_absent(root):
    os.unlink(
        os.path.join(root, "usr/libexec/flux/housekeeping.d/flux-pam-housekeeping")
    )
    res = run("drop-ins", root)
    assert res.status == check.FAIL
    assert "housekeeping.d/flux-pam-housekeeping is absent" in res.detail


def test_drop_ins_check_fails_when_not_executable(root):
    os.chmod(os.path.join(root, PROLOG), 0o644)
    res = run("drop-ins", root)
    assert res.status == check.FAIL
    assert "not executable (0644)" in res.detail


def test_drop_ins_check_fails_when_group_writable(root):
    os.chmod(os.path.join(root, PROLOG), 0o775)
    res = run("drop-ins", root)
    assert res.status == check.FAIL
    assert "group- or other-writable (0775)" in res.detail


def test_drop_ins_check_accepts_etc_flux_system_location(root):
    src = os.path.join(root, PROLOG)
    dst = os.path.join(root, "etc/flux/system/prolog.d/flux-pam-prolog")
    os.makedirs(os.path.dirname(dst))
    os.rename(src, dst)
    res = run("drop-ins", root)
    assert res.status == check.PASS
    assert "/etc/flux/system/prolog.d/flux-pam-prolog" in res.detail


def test_drop_ins_check_uses_libexecdir_option(root):
    res = run("drop-ins", root, libexecdir="/opt/flux/libexec/flux")
    assert res.status == check.FAIL
    assert "/opt/flux/libexec/flux/prolog.d/flux-pam-prolog is absent" in res.detail


# --- pam_systemd for admins ---------------------------------------------------

GUARD = """\
session [success=1 default=ignore] pam_succeed_if.so quiet uid eq 0
session [success=ignore default=1] pam_succeed_if.so quiet user ingroup admin
session optional pam_systemd.so
"""


def test_the_shipped_stack_runs_pam_systemd_for_admins_only(root):
    with open(os.path.join(checktree.REPO, "etc/pam.d/sshd")) as f:
        assert GUARD.split("\n")[0].split()[-1] in f.read()
    res = run("pam-systemd", root)
    assert res.status == check.PASS and "skipped for job users" in res.detail


@pytest.mark.parametrize(
    "guard",
    [
        GUARD,
        "session [default=1 success=ignore] pam_succeed_if.so uid < 1000\n"
        "session optional pam_systemd.so\n",
        "session [success=ignore default=1] pam_succeed_if.so user = root\n"
        "session optional pam_systemd.so\n",
        "session [success=ignore default=1] pam_succeed_if.so quiet uid eq 0"
        " user ingroup admin\nsession optional pam_systemd.so\n",
    ],
)
def test_a_pam_systemd_that_job_users_skip_passes(root, guard):
    append(root, "etc/pam.d/common-session", guard)
    assert run("pam-systemd", root).status == check.PASS


@pytest.mark.parametrize(
    "stack",
    [
        # the jump goes the wrong way: job users run it
        "session [success=ignore default=1] pam_succeed_if.so uid ne 0\n"
        "session optional pam_systemd.so\n",
        # use_uid tests sshd's uid (root), not the user's
        "session [success=ignore default=1] pam_succeed_if.so use_uid uid eq 0\n"
        "session optional pam_systemd.so\n",
        # a guard with a condition it cannot decide for a job user
        "session [success=ignore default=1] pam_succeed_if.so shell = /bin/sh\n"
        "session optional pam_systemd.so\n",
        # a guard that jumps one line too few
        "session [success=ignore default=1] pam_succeed_if.so uid eq 0\n"
        "session optional pam_motd.so\n"
        "session optional pam_systemd.so\n",
        # the guard is fine, but another pam_systemd follows unguarded
        GUARD + "session optional pam_systemd.so\n",
    ],
)
def test_a_pam_systemd_a_job_user_may_reach_fails(root, stack):
    append(root, "etc/pam.d/common-session", stack)
    res = run("pam-systemd", root)
    assert res.status == check.FAIL and "runs for job users" in res.detail


def test_a_sufficient_rule_before_pam_systemd_may_end_the_stack(root):
    # reachable only through an unknown outcome: still reachable
    append(
        root,
        "etc/pam.d/common-session",
        "session sufficient pam_permit.so\nsession optional pam_systemd.so\n",
    )
    assert run("pam-systemd", root).status == check.FAIL

"""Every example in doc/ is run through the code that consumes it.

Configuration examples go through flux_pam_service.core.config and through the
`flux pam check` checks in a node tree built from the shipped files; PAM
stacks through the stack checks (and, in the pam tier, t/pam/test_doc_stacks.py,
their pam_flux options through pam_flux.so itself); command lines through the
flux-pam argument parser or `make -n`.  The install layout
example is checked against a real install in test_install.py.
"""

import os
import re
import shlex
import subprocess

import checktree
import docexamples
import pytest

from flux_pam_service.cli import build_parser, check
from flux_pam_service.core import config

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

EXAMPLES = docexamples.examples()
IDS = [f"{doc}:{line}:{kind}" for doc, line, kind, _ in EXAMPLES]
KINDS = {
    "pam-config",
    "flux-config",
    "imp-config",
    "pam-stack",
    "access-conf",
    "tmpfiles",
    "cli",
    "make",
    "layout",
    "node-setup",
}


def test_every_admin_doc_has_examples_of_known_kinds():
    """Man pages and the guide show what to type; the design document need not."""
    docs = {doc for doc, _, _, _ in EXAMPLES}
    for path in docexamples.DOCS:
        rel = os.path.relpath(path, docexamples.REPO)
        if rel.startswith(("doc/man", "doc/guide/")):
            assert rel in docs
    for doc, line, kind, _ in EXAMPLES:
        assert kind in KINDS, f"{doc}:{line}: unknown example kind {kind!r}"


def test_every_toml_block_in_docs_is_a_marked_example():
    for path in docexamples.DOCS:
        with open(path) as f:
            lines = f.read().splitlines()
        for i, line in enumerate(lines):
            if line.startswith(".. code-block::"):
                before = [x for x in lines[:i] if x.strip()][-1]
                assert before.startswith(".. example: "), f"{path}:{i + 1}"


def by_kind(kind):
    return [
        pytest.param(text, id=f"{doc}:{line}")
        for doc, line, k, text in EXAMPLES
        if k == kind
    ]


@pytest.fixture
def root(tmp_path):
    return checktree.build(str(tmp_path / "node"))


@pytest.mark.parametrize("text", by_kind("pam-config"))
def test_pam_config_example_validates(text):
    obj = tomllib.loads(text)
    cfg = config.from_dict(obj, origin="doc")
    assert cfg.manage_user_slice is obj["pam"].get("manage-user-slice", False)


@pytest.mark.parametrize("text", by_kind("flux-config"))
def test_flux_config_example_passes_perilog_and_access_checks(root, text):
    checktree.write(root, "etc/flux/system/conf.d/perilog.toml", text)
    ctx = check.Context(root=root)
    for fn in (check.check_perilog, check.check_access, check.check_config):
        res = fn(ctx)
        assert res.status == check.PASS, f"{fn.__name__}: {res.detail}"


@pytest.mark.parametrize("text", by_kind("imp-config"))
def test_imp_config_example_passes_imp_check(root, text):
    checktree.write(root, "etc/flux/imp/conf.d/pam.toml", text)
    res = check.check_imp_run(check.Context(root=root))
    assert res.status == check.PASS, res.detail


@pytest.mark.parametrize("text", by_kind("pam-stack"))
def test_pam_stack_example_passes_pam_checks(root, text):
    stack = (
        "@include common-auth\naccount required pam_nologin.so\n"
        + text
        + "@include common-password\n"
    )
    checktree.write(root, "etc/pam.d/sshd", stack)
    ctx = check.Context(root=root)
    for fn in (check.check_pam_systemd, check.check_pam_flux):
        res = fn(ctx)
        assert res.status == check.PASS, f"{fn.__name__}: {res.detail}"
    assert [line for line in text.splitlines() if "pam_flux.so" in line.split()]


@pytest.mark.parametrize("text", by_kind("access-conf"))
def test_access_conf_example_is_a_closed_access_table(text):
    lines = [x for x in text.splitlines() if x.strip() and not x.startswith("#")]
    for line in lines:
        assert re.fullmatch(r"[+-]:[^:]+:[^:]+", line), line
    assert lines[-1] == "-:ALL:ALL"
    shipped = os.path.join(docexamples.REPO, "etc/security/access-flux.conf")
    with open(shipped) as f:
        assert [
            x for x in f.read().splitlines() if x and not x.startswith("#")
        ] == lines


@pytest.mark.parametrize("text", by_kind("tmpfiles"))
def test_tmpfiles_example_is_the_shipped_entry_and_satisfies_lock_check(root, text):
    shipped = os.path.join(docexamples.REPO, "etc/tmpfiles.d/flux-pam.conf")
    with open(shipped) as f:
        assert text.strip() in f.read().splitlines()
    os.rmdir(os.path.join(root, "run/flux-pam"))
    checktree.write(root, "usr/lib/tmpfiles.d/flux-pam.conf", text)
    res = check.check_lock_dir(check.Context(root=root))
    assert res.status == check.WARN and "created at boot" in res.detail


@pytest.mark.parametrize("text", by_kind("cli"))
def test_cli_example_parses(text):
    parser = build_parser()
    for line in text.splitlines():
        argv = shlex.split(line)
        assert argv[:2] == ["flux", "pam"], line
        args = parser.parse_args(argv[2:])
        assert callable(args.func)


# What the guide's setup commands may run: the node replica runs them as root
# (sharness/node/node.py), so nothing else may sneak in.
NODE_SETUP_COMMANDS = {"make", "systemd-tmpfiles", "pam-auth-update", "cp"}


def test_the_guide_has_setup_commands_for_every_step():
    text = "".join(t for t in by_kind_text("node-setup"))
    assert text.splitlines()[0] == "make install"
    assert "make install-config" in text and "pam.d-sshd /etc/pam.d/sshd" in text


def by_kind_text(kind):
    return [text for _, _, k, text in EXAMPLES if k == kind]


@pytest.mark.parametrize("text", by_kind("node-setup"))
def test_setup_commands_are_plain_shell_of_known_commands(text):
    assert subprocess.run(["sh", "-n", "-c", text]).returncode == 0
    for line in text.splitlines():
        assert shlex.split(line)[0] in NODE_SETUP_COMMANDS, line


@pytest.mark.parametrize("text", by_kind("node-setup"))
def test_setup_make_commands_run_as_dry_run(tmp_path, text):
    for line in text.splitlines():
        argv = shlex.split(line)
        if argv[0] != "make":
            continue
        proc = subprocess.run(
            [*argv, "-n", f"DESTDIR={tmp_path}/dest", "FLUX=false", "PKG_CONFIG=false"],
            cwd=docexamples.REPO,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("text", by_kind("make"))
def test_make_example_runs_as_dry_run(tmp_path, text):
    for line in text.splitlines():
        argv = shlex.split(line)
        assert argv[0] == "make"
        proc = subprocess.run(
            [*argv, "-n", f"DESTDIR={tmp_path}/dest"],
            cwd=docexamples.REPO,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        variables = dict(a.split("=", 1) for a in argv[2:])
        if "LIBEXECDIR" in variables:
            assert f"{variables['LIBEXECDIR']}/flux/cmd/flux-pam.py" in proc.stdout

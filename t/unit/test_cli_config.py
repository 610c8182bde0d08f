"""``flux-pam config``: validate the configuration and print it as JSON.

Runs the command as a user would, ``python3 -m flux_pam_service config``, in
a subprocess, and checks its exit code, stdout and stderr.
"""

import json
import os
import subprocess
import sys

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE_DIR = os.path.join(TOP, "etc", "flux", "system", "conf.d")
EXAMPLE = os.path.join(EXAMPLE_DIR, "pam.toml")
KEY = "pam.kill-slice-grace-time"

DEFAULTS = {
    "pam": {
        "manage-user-slice": False,
        "kill-user-slice": False,
        "kill-slice-grace-time": "30s",
        "user-stop-delay": "0s",
        "debug": False,
        "allow-unconfined-logins": False,
        "login-memory-max": "infinity",
        "remove-ipc": True,
    },
    "exec": {"sdexec-constrain-resources": False},
}


def flux_pam_config(path):
    env = dict(os.environ, PYTHONPATH=TOP)
    return subprocess.run(
        [sys.executable, "-m", "flux_pam_service", "config", "--config-path", path],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def refused(path):
    """Run the command on bad input; return its stderr lines."""
    proc = flux_pam_config(str(path))
    assert proc.returncode == 1, proc
    assert proc.stdout == ""
    assert proc.stderr.endswith("\n")
    return proc.stderr.splitlines()


def test_accepts_the_example_config_and_prints_it_as_json():
    proc = flux_pam_config(EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    settings = json.loads(proc.stdout)
    assert settings == {
        "pam": {
            "manage-user-slice": True,
            "kill-user-slice": False,
            "kill-slice-grace-time": "30s",
            "user-stop-delay": "0s",
            "debug": False,
            "allow-unconfined-logins": False,
            "login-memory-max": "infinity",
            "remove-ipc": True,
        },
        "exec": {"sdexec-constrain-resources": True},
    }


def test_accepts_the_example_conf_d_directory():
    proc = flux_pam_config(EXAMPLE_DIR)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pam"]["manage-user-slice"] is True


def test_prints_defaults_for_keys_not_set(tmp_path):
    (tmp_path / "pam.toml").write_text('[pam]\nkill-slice-grace-time = "90"\n')
    proc = flux_pam_config(str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    expected = json.loads(json.dumps(DEFAULTS))
    expected["pam"]["kill-slice-grace-time"] = "90s"
    assert json.loads(proc.stdout) == expected


@pytest.mark.parametrize(
    "text, line",
    [
        (
            '[pam]\nkill-slice-grace-time = "1.5x"\n',
            f'pam.toml: {KEY}: "1.5x" is not a Flux Standard Duration',
        ),
        ("[pam]\nkill-users = true\n", "pam.toml: pam.kill-users: unknown key"),
        ('[pam]\ndebug = "yes"\n', 'pam.toml: pam.debug: "yes" is not a boolean'),
        (
            '[exec]\nsdexec-constrain-resources = "true"\n',
            'pam.toml: exec.sdexec-constrain-resources: "true" is not a boolean',
        ),
        (
            '[pam]\nkill-slice-grace-time = "-5s"\n',
            f'pam.toml: {KEY}: "-5s" is negative',
        ),
        (
            '[pam]\nkill-slice-grace-time = "nan"\n',
            f'pam.toml: {KEY}: "nan" is not a Flux Standard Duration',
        ),
        (
            "[pam]\nkill-slice-grace-time = nan\n",
            f"pam.toml: {KEY}: nan is not a Flux Standard Duration string",
        ),
        (
            '[pam]\nkill-slice-grace-time = "infinity"\n',
            f'pam.toml: {KEY}: "infinity" is infinite, which is not allowed here',
        ),
        (
            "[pam]\nkill-slice-grace-time = inf\n",
            f"pam.toml: {KEY}: inf is not a Flux Standard Duration string",
        ),
    ],
)
def test_refuses_bad_input_with_one_line_naming_file_and_key(tmp_path, text, line):
    path = tmp_path / "pam.toml"
    path.write_text(text)
    assert refused(path) == [line]


def test_refuses_toml_syntax_error_with_its_line(tmp_path):
    path = tmp_path / "pam.toml"
    path.write_text("# comment\n[pam]\ndebug = tru\n")
    (line,) = refused(path)
    assert line.startswith("pam.toml: TOML syntax error: ")
    assert "line 3" in line


def test_refuses_a_key_set_in_two_files_naming_both(tmp_path):
    (tmp_path / "a.toml").write_text("[pam]\nmanage-user-slice = true\n")
    (tmp_path / "b.toml").write_text("[pam]\nmanage-user-slice = true\n")
    assert refused(tmp_path) == ["b.toml: pam.manage-user-slice: already set in a.toml"]


def test_refuses_a_missing_path(tmp_path):
    path = tmp_path / "nowhere"
    assert refused(path) == [f"{path}: cannot read: No such file or directory"]


def test_refuses_an_unreadable_file_in_conf_d(tmp_path):
    (tmp_path / "pam.toml").mkdir()
    (tmp_path / "other.toml").symlink_to(tmp_path / "gone")
    assert refused(tmp_path) == [
        f"{tmp_path / 'other.toml'}: cannot read: No such file or directory",
        f"{tmp_path / 'pam.toml'}: cannot read: Is a directory",
    ]


def test_refuses_a_file_without_read_permission(tmp_path):
    path = tmp_path / "pam.toml"
    path.write_text("[pam]\n")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("this user reads files regardless of mode (root)")
        assert refused(path) == [f"{path}: cannot read: Permission denied"]
    finally:
        path.chmod(0o644)


def test_prints_one_line_per_problem_across_files(tmp_path):
    (tmp_path / "10-a.toml").write_text('[pam]\ndebug = 1\nbogus = "x"\n')
    (tmp_path / "20-b.toml").write_text('[pam]\nkill-slice-grace-time = "-1"\n')
    assert refused(tmp_path) == [
        "10-a.toml: pam.bogus: unknown key",
        "10-a.toml: pam.debug: 1 is not a boolean",
        f'20-b.toml: {KEY}: "-1" is negative',
    ]

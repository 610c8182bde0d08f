"""The [pam] and [exec] configuration (flux_pam_service.core.config)."""

import math
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_pam_service.core import config
from flux_pam_service.core.config import ConfigError, PamConfig

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(TOP, "etc", "flux", "system", "conf.d", "pam.toml")

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


def write(directory, name, text):
    path = directory / name
    path.write_text(text)
    return str(path)


def problems(path):
    with pytest.raises(ConfigError) as info:
        config.load(str(path))
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def test_defaults_when_nothing_is_set(tmp_path):
    cfg = config.load(write(tmp_path, "empty.toml", ""))
    assert cfg == PamConfig()
    assert cfg.to_dict() == DEFAULTS
    assert cfg.kill_slice_grace_time == 30.0


def test_empty_conf_d_gives_defaults(tmp_path):
    assert config.load(str(tmp_path)) == PamConfig()


def test_example_config_is_valid():
    cfg = config.load(EXAMPLE)
    assert cfg.manage_user_slice is True
    assert cfg.constrain_resources is True
    assert cfg.kill_slice_grace_time == 30.0


def test_every_key_is_read(tmp_path):
    path = write(
        tmp_path,
        "pam.toml",
        "[pam]\nmanage-user-slice = true\nkill-user-slice = true\n"
        'kill-slice-grace-time = "1.5m"\ndebug = true\n'
        'user-stop-delay = "10s"\n'
        "[exec]\nsdexec-constrain-resources = true\n",
    )
    assert config.load(path) == PamConfig(
        True, True, 90.0, True, True, user_stop_delay=10.0
    )


def test_to_dict_shows_the_toml_tables():
    cfg = PamConfig(manage_user_slice=True, kill_slice_grace_time=0.5)
    d = cfg.to_dict()
    assert d["pam"]["manage-user-slice"] is True
    assert d["pam"]["kill-slice-grace-time"] == "500ms"
    assert config.from_dict(d) == cfg


def test_other_tables_and_other_exec_keys_are_not_looked_at(tmp_path):
    path = write(
        tmp_path,
        "system.toml",
        '[exec]\nservice = "sdexec"\nsdexec-constrain-resources = true\n'
        "[resource]\nnoverify = true\n[access]\nallow-guest-user = true\n",
    )
    assert config.load(path).constrain_resources is True


def test_conf_d_files_are_merged(tmp_path):
    write(tmp_path, "a.toml", "[pam]\nmanage-user-slice = true\n")
    write(tmp_path, "b.toml", "[pam]\ndebug = true\n")
    write(tmp_path, "c.toml", "[exec]\nsdexec-constrain-resources = true\n")
    write(tmp_path, "ignored.conf", "[pam]\nnot toml at all = = =\n")
    cfg = config.load(str(tmp_path))
    assert cfg == PamConfig(
        manage_user_slice=True, debug=True, constrain_resources=True
    )


def test_read_reports_which_file_set_each_key(tmp_path):
    write(tmp_path, "a.toml", "[pam]\nmanage-user-slice = true\n")
    write(tmp_path, "b.toml", "[pam]\ndebug = true\n")
    obj, origins = config.read(str(tmp_path))
    assert obj == {"pam": {"manage-user-slice": True, "debug": True}}
    assert origins["pam.manage-user-slice"] == "a.toml"
    assert origins["pam.debug"] == "b.toml"


def test_key_set_twice_is_an_error_naming_both_files(tmp_path):
    write(tmp_path, "10-site.toml", "[pam]\ndebug = true\n")
    write(tmp_path, "20-pam.toml", "[pam]\ndebug = false\n")
    assert problems(tmp_path) == ["20-pam.toml: pam.debug: already set in 10-site.toml"]


def test_not_strict_the_later_file_wins_as_in_the_broker(tmp_path):
    write(tmp_path, "10-site.toml", "[pam]\ndebug = true\nmanage-user-slice = true\n")
    write(tmp_path, "20-pam.toml", "[pam]\ndebug = false\n")
    cfg = config.load(str(tmp_path), strict=False)
    assert (cfg.debug, cfg.manage_user_slice) == (False, True)


def test_table_set_twice_as_value_and_table_is_an_error(tmp_path):
    write(tmp_path, "a.toml", "[pam]\ndebug = true\n")
    write(tmp_path, "b.toml", "pam = 1\n")
    assert problems(tmp_path) == ["b.toml: pam: already set in a.toml"]


def test_problems_name_the_file_that_set_the_key(tmp_path):
    write(tmp_path, "a.toml", "[pam]\nmanage-user-slice = true\n")
    write(tmp_path, "b.toml", '[pam]\ndebug = "yes"\n')
    assert problems(tmp_path) == ['b.toml: pam.debug: "yes" is not a boolean']


def test_unknown_pam_key_is_an_error(tmp_path):
    path = write(tmp_path, "pam.toml", "[pam]\nmanage-user-slices = true\n")
    assert problems(path) == ["pam.toml: pam.manage-user-slices: unknown key"]


@pytest.mark.parametrize(
    "key, value, shown",
    [
        ("pam.manage-user-slice", '"true"', '"true"'),
        ("pam.kill-user-slice", "1", "1"),
        ("pam.debug", "[true]", "an array"),
        ("pam.debug", "{x = 1}", "a table"),
        ("exec.sdexec-constrain-resources", '"yes"', '"yes"'),
    ],
)
def test_wrong_type_for_a_boolean_is_an_error(tmp_path, key, value, shown):
    table, name = key.split(".")
    path = write(tmp_path, "pam.toml", f"[{table}]\n{name} = {value}\n")
    assert problems(path) == [f"pam.toml: {key}: {shown} is not a boolean"]


def test_pam_not_a_table_is_an_error(tmp_path):
    path = write(tmp_path, "pam.toml", "pam = true\n")
    assert problems(path) == ["pam.toml: pam: true is not a table"]


KEY = "pam.kill-slice-grace-time"
DURATIONS = {
    "kill-slice-grace-time": "kill_slice_grace_time",
    "user-stop-delay": "user_stop_delay",
}


@pytest.mark.parametrize("name", sorted(DURATIONS))
@pytest.mark.parametrize(
    "value, message",
    [
        ('"1.5x"', '"1.5x" is not a Flux Standard Duration'),
        ('"-1s"', '"-1s" is negative'),
        ('"-0.5"', '"-0.5" is negative'),
        ('"nan"', '"nan" is not a Flux Standard Duration'),
        ('"inf"', '"inf" is infinite, which is not allowed here'),
        ('"infinity"', '"infinity" is infinite, which is not allowed here'),
        ('"1e999"', '"1e999" is out of range'),
        ("30", "30 is not a Flux Standard Duration string"),
        ("nan", "nan is not a Flux Standard Duration string"),
        ("inf", "inf is not a Flux Standard Duration string"),
        ("-1.0", "-1.0 is not a Flux Standard Duration string"),
        ("true", "true is not a Flux Standard Duration string"),
    ],
)
def test_a_bad_duration_is_an_error_naming_the_key(tmp_path, name, value, message):
    path = write(tmp_path, "pam.toml", f"[pam]\n{name} = {value}\n")
    assert problems(path) == [f"pam.toml: pam.{name}: {message}"]


@pytest.mark.parametrize("name", sorted(DURATIONS))
@given(seconds=st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_any_finite_duration_is_kept_exactly(name, seconds):
    text = config.fsd.encode(seconds)
    cfg = config.from_dict({"pam": {name: text}})
    assert getattr(cfg, DURATIONS[name]) == seconds
    assert cfg.to_dict()["pam"][name] == text


def test_the_user_manager_is_stopped_at_once_by_default():
    assert PamConfig().user_stop_delay == 0
    assert config.from_dict({"pam": {}}).to_dict()["pam"]["user-stop-delay"] == "0s"
    cfg = config.from_dict({"pam": {"user-stop-delay": "10s"}})
    assert cfg.user_stop_delay == 10.0


def test_every_problem_is_reported_one_line_each(tmp_path):
    path = write(
        tmp_path,
        "pam.toml",
        '[pam]\nbogus = 1\ndebug = "no"\nkill-slice-grace-time = "-3s"\n',
    )
    assert problems(path) == [
        "pam.toml: pam.bogus: unknown key",
        'pam.toml: pam.debug: "no" is not a boolean',
        f'pam.toml: {KEY}: "-3s" is negative',
    ]


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "pam.toml", "[pam]\ndebug = true\nkill-user-slice =\n")
    (line,) = problems(path)
    assert line.startswith("pam.toml: TOML syntax error: ")
    assert "line 3" in line


def test_syntax_error_in_one_conf_d_file_is_reported_with_others(tmp_path):
    write(tmp_path, "a.toml", "[pam\n")
    write(tmp_path, "b.toml", "[pam]\ndebug = 1\n")
    lines = problems(tmp_path)
    assert len(lines) == 1  # b.toml is only validated once everything parses
    assert lines[0].startswith("a.toml: TOML syntax error: ")
    assert "line 1" in lines[0]


def test_missing_path_is_an_error(tmp_path):
    path = tmp_path / "nonexistent.toml"
    assert problems(path) == [f"{path}: cannot read: No such file or directory"]


def test_directory_in_place_of_a_file_is_unreadable(tmp_path):
    (tmp_path / "pam.toml").mkdir()
    assert problems(tmp_path) == [
        f"{tmp_path / 'pam.toml'}: cannot read: Is a directory"
    ]


def test_dangling_symlink_in_conf_d_is_unreadable(tmp_path):
    (tmp_path / "pam.toml").symlink_to(tmp_path / "gone")
    assert problems(tmp_path) == [
        f"{tmp_path / 'pam.toml'}: cannot read: No such file or directory"
    ]


def test_file_without_read_permission_is_unreadable(tmp_path):
    path = write(tmp_path, "pam.toml", "[pam]\n")
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("this user reads files regardless of mode (root)")
        assert problems(path) == [f"{path}: cannot read: Permission denied"]
    finally:
        os.chmod(path, 0o644)


def test_from_dict_attributes_keys_to_origin_by_default():
    with pytest.raises(ConfigError) as info:
        config.from_dict({"pam": {"debug": 0}}, origin="inline")
    assert info.value.problems == ["inline: pam.debug: 0 is not a boolean"]


def test_config_is_frozen():
    cfg = PamConfig()
    with pytest.raises(AttributeError):
        cfg.debug = True  # type: ignore[misc]


def test_grace_time_is_never_infinite_or_nan_once_loaded(tmp_path):
    for text in ("0", "0ms", "1d", "1e300"):
        cfg = config.from_dict({"pam": {"kill-slice-grace-time": text}})
        assert math.isfinite(cfg.kill_slice_grace_time)


class Attrs:
    def __init__(self, path):
        self.path = path

    def attr_get(self, name):
        if self.path is None:
            raise OSError(2, "no such attribute")
        return self.path


def test_instance_config_problems_name_the_file_under_config_path(tmp_path):
    write(tmp_path, "10-site.toml", "[pam]\nmanage-user-slice = true\n")
    write(tmp_path, "pam.toml", '[pam]\nkill-slice-grace-time = "abc"\n')
    obj = {"pam": {"manage-user-slice": True, "kill-slice-grace-time": "abc"}}
    with pytest.raises(ConfigError) as info:
        config.from_instance(obj, Attrs(str(tmp_path)))
    (problem,) = info.value.problems
    assert problem.startswith(f"{tmp_path}/pam.toml: pam.kill-slice-grace-time: ")


def test_instance_config_key_in_no_file_is_the_instance_configs(tmp_path):
    write(tmp_path, "pam.toml", "[pam]\n")
    for path in (str(tmp_path), None, str(tmp_path / "missing")):
        with pytest.raises(ConfigError) as info:
            config.from_instance({"pam": {"debug": 1}}, Attrs(path))
        assert info.value.problems == ["instance config: pam.debug: 1 is not a boolean"]


def test_instance_config_that_is_valid_is_returned(tmp_path):
    cfg = config.from_instance({"pam": {"manage-user-slice": True}}, Attrs(None))
    assert cfg.manage_user_slice is True


def test_login_limits_are_read(tmp_path):
    path = write(
        tmp_path,
        "pam.toml",
        '[pam]\nlogin-memory-max = "25%"\n',
    )
    cfg = config.load(path)
    assert cfg.login_memory_max == "25%"
    assert cfg.to_dict()["pam"]["login-memory-max"] == "25%"
    assert config.from_dict(cfg.to_dict()) == cfg
    path = write(tmp_path, "pam.toml", "[pam]\nlogin-memory-max = 1073741824\n")
    assert config.load(path).login_memory_max == "1073741824"


@pytest.mark.parametrize(
    "line, problem",
    [
        (
            'login-memory-max = "4GB"',
            'pam.toml: pam.login-memory-max: "4GB" is not a size',
        ),
        (
            'login-memory-max = "150%"',
            'pam.toml: pam.login-memory-max: "150%" is not a percentage above 0',
        ),
        (
            "login-memory-max = 0",
            "pam.toml: pam.login-memory-max: 0 is not a positive number of bytes",
        ),
        (
            "login-memory-max = true",
            "pam.toml: pam.login-memory-max: true is not a size",
        ),
    ],
)
def test_bad_login_limits_name_the_file_and_the_key(tmp_path, line, problem):
    (found,) = problems(write(tmp_path, "pam.toml", f"[pam]\n{line}\n"))
    assert found.startswith(problem)

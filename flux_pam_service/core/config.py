"""The ``[pam]`` and ``[exec]`` configuration, validated (flux-config-pam(5)).

Unknown ``[pam]`` keys are errors; the other ``[exec]`` keys are Flux's.
Every problem is one line of ConfigError.problems naming the file and the
dotted key: ``pam.toml: pam.debug: "yes" is not a boolean``.  A key set by
two files of a conf.d directory is an error when *strict* (what ``flux pam
config`` and ``flux pam check`` report); the broker merges such files, the
later file winning, so code that must agree with the running instance reads
with ``strict=False``, which does the same.
"""

import glob
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from flux_pam_service.core import fsd, limits

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

DEFAULT_PATH = "/etc/flux/system/conf.d"

#: What a job user is told while the configuration is invalid (the node is
#: "closed": the module and the drop-ins keep jobs running but admit no login
#: of a job user).  It does not blame the user.
CLOSED_MESSAGE = (
    "Access denied: logins to this node are suspended by a configuration"
    " error; ask your administrator"
)


class ConfigError(ValueError):
    """One or more problems with the configuration, one line each."""

    def __init__(self, problems: List[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class PamConfig:
    """Effective settings.  Field names are the keys with dashes as underscores."""

    manage_user_slice: bool = False
    kill_user_slice: bool = False
    kill_slice_grace_time: float = 30.0
    debug: bool = False
    constrain_resources: bool = False
    allow_unconfined_logins: bool = False
    user_stop_delay: float = 0.0
    login_memory_max: str = limits.UNLIMITED
    remove_ipc: bool = True

    def to_dict(self) -> dict:
        """Return the settings as the TOML tables they come from."""
        return {
            "pam": {
                "manage-user-slice": self.manage_user_slice,
                "kill-user-slice": self.kill_user_slice,
                "kill-slice-grace-time": fsd.encode(self.kill_slice_grace_time),
                "user-stop-delay": fsd.encode(self.user_stop_delay),
                "debug": self.debug,
                "allow-unconfined-logins": self.allow_unconfined_logins,
                "login-memory-max": self.login_memory_max,
                "remove-ipc": self.remove_ipc,
            },
            "exec": {"sdexec-constrain-resources": self.constrain_resources},
        }


_BOOL_KEYS = {
    ("pam", "manage-user-slice"): "manage_user_slice",
    ("pam", "kill-user-slice"): "kill_user_slice",
    ("pam", "debug"): "debug",
    ("pam", "allow-unconfined-logins"): "allow_unconfined_logins",
    ("pam", "remove-ipc"): "remove_ipc",
    ("exec", "sdexec-constrain-resources"): "constrain_resources",
}
#: [pam] keys holding a Flux Standard Duration (finite)
_DURATION_KEYS = {
    "kill-slice-grace-time": "kill_slice_grace_time",
    "user-stop-delay": "user_stop_delay",
}
_PAM_KEYS = (
    {key for table, key in _BOOL_KEYS if table == "pam"}
    | set(_DURATION_KEYS)
    | {"login-memory-max"}
)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def from_dict(
    obj: dict, origin: str = "config", origins: Optional[Dict[str, str]] = None
) -> PamConfig:
    """Validate the whole Flux config *obj* and return the pam settings.

    *origins* maps dotted keys to the file that set them (from read());
    keys missing from it are attributed to *origin*.
    """
    origins = origins or {}
    problems: List[str] = []

    def where(key: str) -> str:
        return f"{origins.get(key, origin)}: {key}"

    values: Dict[str, Any] = {}
    for table in ("pam", "exec"):
        section = obj.get(table, {})
        if not isinstance(section, dict):
            problems.append(f"{where(table)}: {_show(section)} is not a table")
            continue
        if table == "pam":
            for key in sorted(set(section) - _PAM_KEYS):
                problems.append(f"{where('pam.' + key)}: unknown key")
        for (t, key), field in _BOOL_KEYS.items():
            if t != table or key not in section:
                continue
            value = section[key]
            if not isinstance(value, bool):
                problems.append(
                    f"{where(f'{t}.{key}')}: {_show(value)} is not a boolean"
                )
            else:
                values[field] = value
        for key, field in _DURATION_KEYS.items():
            if table != "pam" or key not in section:
                continue
            value = section[key]
            try:
                seconds = fsd.parse(value)
                if math.isinf(seconds):
                    raise ValueError(f"{_show(value)} is infinite")
                values[field] = seconds
            except ValueError as exc:
                if isinstance(value, str):
                    problems.append(f"{where('pam.' + key)}: {exc}")
                else:
                    problems.append(
                        f"{where('pam.' + key)}: {_show(value)} is not a Flux"
                        " Standard Duration string"
                    )
        if table == "pam":
            _login_limits(section, values, problems, where)
    if problems:
        raise ConfigError(problems)
    return PamConfig(**values)


def _login_limits(
    section: dict, values: dict, problems: List[str], where: Callable[[str], str]
) -> None:
    """pam.login-memory-max (core.limits)."""
    if "login-memory-max" in section:
        value = section["login-memory-max"]
        try:
            limits.parse_memory(value)
            text = str(value).strip() if isinstance(value, str) else str(value)
            values["login_memory_max"] = text
        except ValueError as exc:
            shown = exc.args[0] if isinstance(value, str) else f"{_show(value)} {exc}"
            problems.append(f"{where('pam.login-memory-max')}: {shown}")


def _merge(
    dst: dict,
    src: dict,
    path: str,
    name: str,
    origins: dict,
    problems: Optional[list],
) -> None:
    """Merge *src* into *dst*; a key set twice is a problem, or (problems None)
    the later value wins, as the broker's own merge does."""
    for key, value in src.items():
        dotted = f"{path}{key}"
        if key in dst and isinstance(dst[key], dict) and isinstance(value, dict):
            _merge(dst[key], value, f"{dotted}.", name, origins, problems)
        elif key in dst and problems is not None:
            problems.append(f"{name}: {dotted}: already set in {origins[dotted]}")
        else:
            dst[key] = value
            _record(value, dotted, name, origins)


def _record(value: Any, dotted: str, name: str, origins: dict) -> None:
    origins[dotted] = name
    if isinstance(value, dict):
        for key, sub in value.items():
            _record(sub, f"{dotted}.{key}", name, origins)


def _read_file(path: str, problems: list) -> Optional[dict]:
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror}")
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{name}: TOML syntax error: {exc}")
    return None


def read(
    path: str = DEFAULT_PATH, strict: bool = True, full_names: bool = False
) -> Tuple[dict, Dict[str, str]]:
    """Read a TOML file, or every ``*.toml`` of a directory, merged.

    Returns the merged table and a map of dotted key to the file name that set
    it (its path with *full_names*).  An unreadable file, a syntax error and
    (when *strict*) a key set by two files are each a problem; all problems
    are raised together as ConfigError.  Not *strict*, the later file wins,
    as in the broker.
    """
    problems: List[str] = []
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.toml")))
    elif os.path.exists(path):
        files = [path]
    else:
        raise ConfigError([f"{path}: cannot read: No such file or directory"])
    merged: dict = {}
    origins: Dict[str, str] = {}
    for file in files:
        table = _read_file(file, problems)
        if table is not None:
            name = file if full_names else os.path.basename(file)
            _merge(merged, table, "", name, origins, problems if strict else None)
    if problems:
        raise ConfigError(problems)
    return merged, origins


def load(
    path: str = DEFAULT_PATH, strict: bool = True, full_names: bool = False
) -> PamConfig:
    """Read and validate the configuration at *path* (see read())."""
    obj, origins = read(path, strict, full_names)
    origin = path if full_names else os.path.basename(path)
    return from_dict(obj, origin=origin, origins=origins)


def instance_path(handle: Any) -> Optional[str]:
    """The broker's ``config.path`` attribute, or None when it has none.

    *handle* is anything with attr_get() (a Flux handle).
    """
    try:
        path = handle.attr_get("config.path")
    except (OSError, KeyError):
        return None
    return path or None


def from_instance(obj: Any, handle: Any) -> PamConfig:
    """Validate the running broker's config *obj* (``config.get``).

    The broker's config carries no file names, so each problem names the
    file of the broker's ``config.path`` that sets the key, found by reading
    those files the way the broker merges them (the later file wins); a key
    no file sets (``flux config load``, a file changed since) is attributed
    to the instance config.
    """
    if not isinstance(obj, dict):
        raise ConfigError(["instance config: not a table"])
    origins: Dict[str, str] = {}
    path = instance_path(handle)
    if path is not None:
        try:
            _, origins = read(path, strict=False, full_names=True)
        except ConfigError:
            origins = {}
    return from_dict(obj, origin="instance config", origins=origins)

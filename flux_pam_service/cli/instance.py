"""Where this node's Flux configuration is, as flux-core and the broker say.

flux-core and flux-security are installed under a prefix of the site's
choosing (``/usr``, ``/opt/flux``, ...), and their configuration directories
with them.  ``flux pam check``, ``config`` and ``slice`` take them from the
running broker, and from flux-core's built-in paths when no broker answers:

instance config
    the broker's ``config.path`` attribute; without a broker (or without
    that attribute), flux-core's built-in ``confdir`` + ``/system/conf.d``,
    where flux-core's own ``flux.service`` points the broker
IMP config
    flux-security's ``$sysconfdir/flux/imp/conf.d`` for the IMP the broker
    runs (``exec.imp`` of its config, ``PREFIX/libexec/flux/flux-imp``):
    ``/etc`` for an IMP under ``/usr``, else ``PREFIX/etc``; without
    ``exec.imp``, flux-core's ``confdir`` + ``/imp/conf.d`` (the two built
    with one prefix)
confdir, libexecdir
    flux-core's built-in ``confdir`` and ``libexecdir``, from its Python
    bindings, else from ``flux config builtin`` (the flux on PATH, as
    ``make install`` asks it), else those of a flux-core in /usr

The flux bindings are imported lazily: ``flux-pam --help`` works without them.
"""

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Optional

from flux_pam_service.core import config
from flux_pam_service.core.errors import errtext

DEFAULT_CONFDIR = "/etc/flux"
DEFAULT_LIBEXECDIR = "/usr/libexec/flux"
IMP_SUFFIX = "/libexec/flux/flux-imp"


@dataclass
class Where:
    """The node's configuration paths and where they were learnt."""

    config_path: str
    imp_config: str
    confdir: str
    libexecdir: str
    source: str
    imp_source: str
    broker_config: Optional[dict] = None


def _builtin(name: str, default: str) -> "tuple[str, bool]":
    """flux-core's built-in path *name*, and whether flux-core said it."""
    try:
        from flux.conf_builtin import conf_builtin_get  # noqa: PLC0415 - lazy

        return str(conf_builtin_get(name)), True
    except (ImportError, OSError, ValueError, KeyError):
        pass
    flux = shutil.which("flux")
    if flux is not None:
        try:
            out = subprocess.run(
                [flux, "config", "builtin", name],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip(), True
        except (OSError, subprocess.SubprocessError):
            pass
    return default, False


def imp_confdir(imp: str) -> Optional[str]:
    """flux-security's IMP config directory for the IMP at *imp*, or None."""
    if not isinstance(imp, str) or not imp.endswith(IMP_SUFFIX):
        return None
    prefix = imp[: -len(IMP_SUFFIX)] or "/"
    sysconfdir = "/etc" if prefix in ("/", "/usr") else f"{prefix}/etc"
    return f"{sysconfdir}/flux/imp/conf.d"


def _ask_broker() -> "tuple[Optional[str], Optional[dict], str]":
    """(config.path, config.get, "") from the running broker, or the reason."""
    try:
        import flux  # noqa: PLC0415 - lazy

        h = flux.Flux()
        conf: Any = h.rpc("config.get").get()
        path = config.instance_path(h)
    except ImportError as exc:
        return None, None, f"flux-core's Python bindings do not import ({exc})"
    except OSError as exc:
        uri = os.environ.get("FLUX_URI", "the system instance")
        return None, None, f"no broker answered at {uri} ({errtext(exc)})"
    return path, conf if isinstance(conf, dict) else {}, ""


def locate() -> Where:
    """The node's paths (see the module docstring)."""
    confdir, known = _builtin("confdir", DEFAULT_CONFDIR)
    libexecdir, _ = _builtin("libexecdir", DEFAULT_LIBEXECDIR)
    origin = "flux-core's built-in confdir" if known else "a /usr flux-core's confdir"
    path, conf, why = _ask_broker()
    if path is not None:
        config_path, source = path, "config.path of the running broker"
    else:
        config_path = f"{confdir}/system/conf.d"
        if not why:
            why = "the running broker has no config.path"
        source = f"{origin} + /system/conf.d; {why}"
    imp = (conf or {}).get("exec", {}) if isinstance(conf, dict) else {}
    imp = imp.get("imp") if isinstance(imp, dict) else None
    imp_config = imp_confdir(imp) if imp else None
    if imp_config is not None:
        imp_source = f"flux-security's sysconfdir for exec.imp {imp}"
    else:
        imp_config = f"{confdir}/imp/conf.d"
        imp_source = f"{origin} + /imp/conf.d; " + (
            f"exec.imp {imp} is not PREFIX{IMP_SUFFIX}" if imp else "exec.imp not known"
        )
    return Where(config_path, imp_config, confdir, libexecdir, source, imp_source, conf)

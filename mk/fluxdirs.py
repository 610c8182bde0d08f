"""Print the directories of flux-core and flux-security for `make install`.

Usage: python3 mk/fluxdirs.py PKG_CONFIG FLUX [--explain]

flux-core is asked first through pkg-config (flux-core.pc: fluxlibexecdir,
fluxdatadir, fluxmoddir, fluxconfdir; PKG_CONFIG_PATH is honoured), then
through the installed flux command (``flux config builtin libexecdir``,
``datadir``, ``module_path``, ``confdir``).  flux-security's IMP reads
``$sysconfdir/flux/imp/conf.d``: pkg-config flux-security's sysconfdir, or
its prefix (``/etc`` for ``/usr``, else ``PREFIX/etc``); without
flux-security.pc, flux-core's confdir is taken (one prefix for both).

Prints ``NAME=VALUE`` words for make (FLUXLIBEXECDIR FLUXDATADIR FLUXMODDIR
FLUXCONFDIR IMPCONFDIR), only for what was found; with --explain, one line
saying where each came from instead.  Never fails: what is not found is left
to make's defaults under PREFIX.
"""

import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

PKG_VARS = {
    "FLUXLIBEXECDIR": "fluxlibexecdir",
    "FLUXDATADIR": "fluxdatadir",
    "FLUXMODDIR": "fluxmoddir",
    "FLUXCONFDIR": "fluxconfdir",
}
BUILTINS = {
    "FLUXLIBEXECDIR": "libexecdir",
    "FLUXDATADIR": "datadir",
    "FLUXMODDIR": "module_path",
    "FLUXCONFDIR": "confdir",
}


def _run(argv: List[str]) -> Optional[str]:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and out else None


def _pkg(pkg_config: str, package: str, var: str) -> Optional[str]:
    return _run([pkg_config, f"--variable={var}", package])


def flux_core(pkg_config: str, flux: str) -> Tuple[Dict[str, str], str]:
    """flux-core's directories and where they came from."""
    found = {name: _pkg(pkg_config, "flux-core", var) for name, var in PKG_VARS.items()}
    if all(found.values()):
        pc = _pkg(pkg_config, "flux-core", "pcfiledir") or "?"
        return {k: v for k, v in found.items() if v}, f"pkg-config ({pc}/flux-core.pc)"
    cmd = shutil.which(flux)
    if cmd is not None:
        found = {
            name: _run([cmd, "config", "builtin", var])
            for name, var in BUILTINS.items()
        }
        if all(found.values()):
            dirs = {k: v for k, v in found.items() if v}
            dirs["FLUXMODDIR"] = dirs["FLUXMODDIR"].split(":")[0]
            return dirs, f"{cmd} config builtin"
    return {}, f"not found by {pkg_config} nor by {flux}: the defaults under PREFIX"


def flux_security(
    pkg_config: str, confdir: Optional[str]
) -> Tuple[Dict[str, str], str]:
    """The IMP's config directory and where it came from."""
    sysconfdir = _pkg(pkg_config, "flux-security", "sysconfdir")
    prefix = _pkg(pkg_config, "flux-security", "prefix")
    if sysconfdir is None and prefix is not None:
        prefix = prefix.rstrip("/") or "/"
        sysconfdir = "/etc" if prefix in ("/", "/usr") else f"{prefix}/etc"
    if sysconfdir is not None:
        return (
            {"IMPCONFDIR": f"{sysconfdir}/flux/imp/conf.d"},
            "pkg-config (flux-security.pc)",
        )
    if confdir is not None:
        return {"IMPCONFDIR": f"{confdir}/imp/conf.d"}, "flux-core's confdir"
    return {}, "the default under SYSCONFDIR"


def main(argv: List[str]) -> int:
    pkg_config, flux = argv[1], argv[2]
    core, core_from = flux_core(pkg_config, flux)
    imp, imp_from = flux_security(pkg_config, core.get("FLUXCONFDIR"))
    if "--explain" in argv[3:]:
        print(f"flux-core directories from {core_from}; IMP config from {imp_from}")
    else:
        print(" ".join(f"{k}={v}" for k, v in {**core, **imp}.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

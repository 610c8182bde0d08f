"""The two builds of pam_flux.so the tests run, and their sanitizer reports.

``make -C pam all asan`` builds the module as installed and with
AddressSanitizer and UndefinedBehaviorSanitizer.  An application (Python
with pypamtest, pamtester) runs the sanitizer build with libasan and the
module itself preloaded: libpam unloads the module at pam_end, and a leak in
an unloaded module could not be told from the application's own.

    builds(repo) -> {"plain": Build, "asan": Build, or why it is missing}
                    (or raises Unbuildable with why there is no module)
    Build.path                  the module
    Build.env()                 what the application's environment needs
    Build.problems(stderr)      sanitizer errors, and leaks with pam_flux on
                                their stack (the application's own leaks at
                                exit never involve it)
"""

import os
import re
import subprocess

ASAN_OPTIONS = (
    "detect_leaks=1:fast_unwind_on_malloc=0:malloc_context_size=40:exitcode=0"
)
UBSAN_OPTIONS = "print_stacktrace=1:halt_on_error=1"


class Unbuildable(Exception):
    """pam_flux.so cannot be built here; the message says why."""


class Build:
    """One build of pam_flux.so and what running it needs."""

    def __init__(self, name, path, preload=()):
        self.name = name
        self.path = str(path)
        self.preload = list(preload)

    def env(self, *more_preload):
        env = {"LD_PRELOAD": " ".join(self.preload + list(more_preload))}
        if self.preload:
            env["ASAN_OPTIONS"] = ASAN_OPTIONS
            env["UBSAN_OPTIONS"] = UBSAN_OPTIONS
        return env

    def problems(self, stderr):
        """Sanitizer reports in *stderr* that concern pam_flux.so."""
        if not self.preload:
            return []
        found = []
        for block in re.split(r"\n\s*\n", stderr):
            if "ERROR: AddressSanitizer" in block or "runtime error:" in block:
                found.append(block)
            elif re.match(r"\s*(Direct|Indirect) leak", block) and (
                "pam_flux" in block
            ):
                found.append(block)
        return found


def make(repo, *args):
    return subprocess.run(
        ["make", "--no-print-directory", "-C", os.path.join(str(repo), "pam"), *args],
        capture_output=True,
        text=True,
    )


def _needed(path, prefix):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        m = re.search(r"\(NEEDED\)\s+Shared library: \[(.*)\]", line)
        if m and m.group(1).startswith(prefix):
            return m.group(1)
    return None


def builds(repo):
    """Build both; {"plain": Build, "asan": Build or why it is missing}."""
    status = make(repo, "status").stdout.strip()
    if not status.startswith("buildable"):
        raise Unbuildable(f"pam_flux.so {status}")
    proc = make(repo, "all")
    if proc.returncode != 0:
        raise AssertionError(f"make -C pam:\n{proc.stdout}\n{proc.stderr}")
    out = {"plain": Build("plain", os.path.join(str(repo), "build", "pam_flux.so"))}
    asan = os.path.join(str(repo), "build", "asan", "pam_flux.so")
    proc = make(repo, "asan")
    libasan = _needed(asan, "libasan") if proc.returncode == 0 else None
    if libasan is None:
        out["asan"] = f"the sanitizer build failed: {proc.stderr.strip()[-300:]}"
    else:
        out["asan"] = Build("asan", asan, [libasan, asan])
    return out

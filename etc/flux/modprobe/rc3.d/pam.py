"""rc3.d entry of flux-pam-service: let rc3 remove sdexec-mapper.

rc1.d/pam.py force-enables sdexec-mapper when
``exec.sdexec-constrain-resources`` is on, although flux-core's modprobe.toml
gates it on ``systemd.enable``.  rc3 removes every loaded module, but skips
one whose needs-config is not met, and the broker would then kill it at
shutdown ("module runtime failure", flux start exits 1).  Enabling it here
too lets rc3 remove it in order, after pam.
"""


def setup(context: "object") -> None:
    if context.conf_get("pam") is None:
        return
    if context.conf_get("exec.sdexec-constrain-resources", False) is True:
        context.enable("sdexec-mapper")

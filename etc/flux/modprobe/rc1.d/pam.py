"""rc1.d entry of flux-pam-service: load the pam broker module.

flux modprobe runs setup(context) on every rank during rc1.  The module is
loaded when the config has a [pam] table (modprobe.d/pam.toml needs-config).

With ``exec.sdexec-constrain-resources`` on, the module maps each user's
union of cores and GPUs to systemd properties with ``sdexec-mapper.lookup``
on its own rank.  flux-core loads sdexec-mapper only with ``systemd.enable``;
it is enabled here so that constraining user slices does not depend on
running jobs under sdexec (and a later ``manage-user-slice = true`` by config
reload finds it loaded).
"""


def setup(context: "object") -> None:
    if context.conf_get("pam") is None:
        return
    if context.conf_get("exec.sdexec-constrain-resources", False) is True:
        context.enable("sdexec-mapper")
        context.load_modules(["sdexec-mapper"])
    context.load_modules(["pam"])

"""Test-only job user mapping.

Every job of a test instance (``flux start --test-size=N``) belongs to the
instance owner, so tests could never exercise more than one job user.  In a
test instance, and only there, a job submitted with::

    flux submit --setattr=system.flux-pam.test-userid=UID ...

is treated as UID's job by the broker module and by the prolog/housekeeping
executables alike.  There is no configuration key for this: it depends only
on how the instance was booted, which a production system instance cannot
imitate.

A test instance is recognised from two broker attributes:

``broker.boot-method`` is ``simple``
    the brokers were bootstrapped over the PMI_FD channel that
    ``flux start --test-size`` (or a Flux job shell) provides; a system
    instance boots from its ``[bootstrap]`` config (``config``) or alone
    (``single``/``singleton``).
``instance-level`` is ``0``
    not a job of another instance: a batch job or allocation of a system
    instance also boots with ``simple`` but at level 1 or more.

Interface:
    ATTR_PATH                         ("system", "flux-pam", "test-userid")
    job_userid(jobspec, userid, test_instance) -> int
    is_test_attrs(boot_method, instance_level) -> bool
    is_test_instance(handle) -> bool  reads the two attributes through a
                                      Flux handle (anything with attr_get())
"""

from typing import Any, Optional

ATTR_PATH = ("system", "flux-pam", "test-userid")
TEST_BOOT_METHODS = ("simple",)


def _lookup(jobspec: Any) -> Optional[Any]:
    node = jobspec.get("attributes") if isinstance(jobspec, dict) else None
    for key in ATTR_PATH:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def job_userid(jobspec: Any, userid: int, test_instance: bool) -> int:
    """Return the uid whose job this is.

    *userid* is the submitting user (the ``submit`` event, or
    ``FLUX_JOB_USERID``).  In a test instance a non-negative integer (or
    decimal string) at ``attributes.system.flux-pam.test-userid`` replaces
    it; anything else there raises ValueError naming the attribute.  Outside
    a test instance the attribute is ignored.
    """
    if not test_instance:
        return userid
    value = _lookup(jobspec)
    if value is None:
        return userid
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"attributes.{'.'.join(ATTR_PATH)}: {value!r} is not a uid")
    return value


def is_test_attrs(boot_method: Optional[str], instance_level: Optional[str]) -> bool:
    """True if these broker attribute values describe a test instance."""
    return boot_method in TEST_BOOT_METHODS and str(instance_level) == "0"


def is_test_instance(handle: Any) -> bool:
    """True if the instance *handle* is connected to is a test instance.

    An attribute that cannot be read counts as "not a test instance".
    """
    try:
        boot_method = handle.attr_get("broker.boot-method")
        level = handle.attr_get("instance-level")
    except OSError:
        return False
    return is_test_attrs(boot_method, level)

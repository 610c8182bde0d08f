"""pam_flux: admit SSH logins of users with a Flux job here, confine them.

A Python PAM module for Debian's ``pam_python.so`` (package libpam-python),
installed as /usr/lib/flux-pam/pam_flux.py and used in /etc/pam.d/sshd::

    account  sufficient  pam_python.so /usr/lib/flux-pam/pam_flux.py [OPTIONS]
    session  requisite   pam_python.so /usr/lib/flux-pam/pam_flux.py [OPTIONS]

Give both lines the same module path: the account phase leaves the session
phase a sentinel in this file's namespace, which pam_python keeps per PAM
handle and module path.  See pam_flux(8) for the options.

pam_python compiles this file from source for every PAM handle, so it holds
no more than the loader: it puts the absolute directories of a
``pythonpath=DIR[:DIR...]`` option in front of sys.path, imports
flux_pam_service.pamflux (from bytecode) and hands each call to it.  If that
import fails, every phase fails closed: PAM_SERVICE_ERR (PAM_SESSION_ERR for
a session), logged to syslog (LOG_AUTHPRIV).
"""

import sys

_SENTINELS: dict = {}


def _impl(pamh: object, argv: list, phase: str) -> object:
    """flux_pam_service.pamflux, or None (logged) if it cannot be imported."""
    for arg in argv[1:]:
        if arg.startswith("pythonpath="):
            for d in reversed(arg[len("pythonpath=") :].split(":")):
                if d.startswith("/") and d not in sys.path:
                    sys.path.insert(0, d)
    try:
        from flux_pam_service import pamflux

        return pamflux
    except ImportError as exc:
        import syslog

        try:
            service = pamh.service
        except pamh.exception:
            service = None
        syslog.syslog(
            syslog.LOG_AUTHPRIV | syslog.LOG_ERR,
            f"pam_flux({service}:{phase}): cannot import flux_pam_service: {exc}",
        )
        return None


def pam_sm_acct_mgmt(pamh: object, flags: int, argv: list) -> int:
    """Admit root and users with a running job on this node."""
    impl = _impl(pamh, argv, "account")
    if impl is None:
        return pamh.PAM_SERVICE_ERR
    return impl.acct_mgmt(pamh, argv, _SENTINELS)


def pam_sm_open_session(pamh: object, flags: int, argv: list) -> int:
    """Put an admitted job owner's login into a scope in the user's slice."""
    impl = _impl(pamh, argv, "session")
    if impl is None:
        return pamh.PAM_SESSION_ERR
    return impl.open_session(pamh, argv, _SENTINELS)


def pam_sm_close_session(pamh: object, flags: int, argv: list) -> int:
    """Nothing to do: systemd collects the empty scope."""
    return pamh.PAM_SUCCESS


def _not_auth(pamh: object, argv: list, phase: str) -> int:
    impl = _impl(pamh, argv, phase)
    if impl is None:
        return pamh.PAM_SERVICE_ERR
    return impl.not_an_auth_module(pamh, argv, phase)


def pam_sm_authenticate(pamh: object, flags: int, argv: list) -> int:
    """pam_flux does not authenticate."""
    return _not_auth(pamh, argv, "auth")


def pam_sm_setcred(pamh: object, flags: int, argv: list) -> int:
    """pam_flux has no credentials to set."""
    return _not_auth(pamh, argv, "setcred")


def pam_sm_chauthtok(pamh: object, flags: int, argv: list) -> int:
    """pam_flux has no password."""
    return _not_auth(pamh, argv, "password")


def pam_sm_end(pamh: object) -> None:
    """pam_end(): forget this handle's sentinel (see pamflux.end)."""
    impl = sys.modules.get("flux_pam_service.pamflux")
    if impl is not None:
        impl.end(pamh, _SENTINELS)
    else:
        _SENTINELS.pop(pamh.pamh, None)

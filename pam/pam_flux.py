"""pam_flux: admit SSH logins of users with a Flux job here, confine them.

A Python PAM module for Debian's ``pam_python.so`` (package libpam-python),
installed as /usr/lib/flux-pam/pam_flux.py and used in /etc/pam.d/sshd::

    account  sufficient  pam_python.so /usr/lib/flux-pam/pam_flux.py [OPTIONS]
    session  requisite   pam_python.so /usr/lib/flux-pam/pam_flux.py [OPTIONS]

Give both lines the same module path: the account phase leaves the session
phase a sentinel in this file's namespace, which pam_python keeps per PAM
handle and module path.  See pam_flux(8) for the options.

pam_python compiles this file from source at every login, which in a fresh
interpreter costs about as much as importing the rest of the account path
from bytecode; so it is only a loader, kept small and without annotations.
It puts the absolute directories of a ``pythonpath=DIR[:DIR...]`` option in
front of sys.path and hands each call to flux_pam_service.pamflux.dispatch().
If that import fails, every phase fails closed: PAM_SERVICE_ERR
(PAM_SESSION_ERR for a session), logged to syslog (LOG_AUTHPRIV).
"""

import sys

_SENTINELS = {}


def _call(phase, pamh, argv):
    for arg in argv[1:]:
        if arg.startswith("pythonpath="):
            sys.path[:0] = [
                d for d in arg[11:].split(":") if d[:1] == "/" and d not in sys.path
            ]
    try:
        from flux_pam_service.pamflux import dispatch
    except ImportError as exc:
        import syslog

        syslog.syslog(
            syslog.LOG_AUTHPRIV | syslog.LOG_ERR,
            f"pam_flux({phase}): cannot import flux_pam_service: {exc}",
        )
        return pamh.PAM_SESSION_ERR if phase == "session" else pamh.PAM_SERVICE_ERR
    return dispatch(phase, pamh, argv, _SENTINELS)


def pam_sm_acct_mgmt(pamh, flags, argv):
    return _call("account", pamh, argv)


def pam_sm_open_session(pamh, flags, argv):
    return _call("session", pamh, argv)


def pam_sm_close_session(pamh, flags, argv):
    return pamh.PAM_SUCCESS


def pam_sm_authenticate(pamh, flags, argv):
    return _call("auth", pamh, argv)


def pam_sm_setcred(pamh, flags, argv):
    return _call("setcred", pamh, argv)


def pam_sm_chauthtok(pamh, flags, argv):
    return _call("password", pamh, argv)


def pam_sm_end(pamh):
    pamflux = sys.modules.get("flux_pam_service.pamflux")
    if pamflux is not None:
        pamflux.end(pamh, _SENTINELS)

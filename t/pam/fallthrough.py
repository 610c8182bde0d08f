"""A pam_python module placed after pam_flux in test stacks.

pam_flux returning PAM_IGNORE lets the stack reach this module, which
returns PAM_TRY_AGAIN: a code pam_flux never returns, so a test can tell
"pam_flux ignored the request" from every pam_flux result.
"""


def _fallthrough(pamh, flags, argv):
    return pamh.PAM_TRY_AGAIN


pam_sm_acct_mgmt = _fallthrough
pam_sm_authenticate = _fallthrough
pam_sm_setcred = _fallthrough
pam_sm_open_session = _fallthrough
pam_sm_close_session = _fallthrough

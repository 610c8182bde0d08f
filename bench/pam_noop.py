"""A pam_python module that admits everyone (benchmark baseline).

``account required pam_python.so bench/pam_noop.py`` costs what pam_python
itself costs (starting the interpreter, reading this file), so
bench/admission.py can tell pam_flux's own cost from pam_python's.
"""


def pam_sm_acct_mgmt(pamh: object, flags: int, argv: list) -> int:
    return pamh.PAM_SUCCESS

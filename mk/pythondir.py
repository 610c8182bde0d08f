"""Print the directory where `make install` puts the flux_pam_service package.

Usage: python3 mk/pythondir.py PREFIX

The package must be importable by the Python that runs the prolog and
housekeeping drop-ins (Debian's /usr/bin/python3, run by the IMP with a reset
environment) and `flux pam`, so it goes where that Python looks without
PYTHONPATH:

    PREFIX=/usr        Debian's deb_system scheme:
                       /usr/lib/python3/dist-packages
    PREFIX=/usr/local  Debian's posix_local scheme:
                       /usr/local/lib/python3.X/dist-packages
    other PREFIX       posix_prefix under PREFIX: PREFIX/lib/python3.X/site-packages
                       (not on that Python's path: set PYTHONDIR, or add the
                       directory to it, e.g. with a .pth file)
On a Python without Debian's schemes, posix_prefix is used for every PREFIX.
"""

import sys
import sysconfig

prefix = sys.argv[1].rstrip("/") or "/"
schemes = sysconfig.get_scheme_names()
if prefix == "/usr" and "deb_system" in schemes:
    print(sysconfig.get_path("purelib", "deb_system"))
elif prefix == "/usr/local" and "posix_local" in schemes:
    print(sysconfig.get_path("purelib", "posix_local"))
else:
    print(
        sysconfig.get_path(
            "purelib", "posix_prefix", vars={"base": prefix, "platbase": prefix}
        )
    )

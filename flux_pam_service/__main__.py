"""``python3 -m flux_pam_service`` runs the flux-pam command."""

import sys

from flux_pam_service.cli import main

sys.exit(main())

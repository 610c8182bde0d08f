#!/bin/bash

test_description='50 jobs of one user started and ended together, pam module loaded

Same end states as t0402 when the broker module does the work and the
executables confirm with pam.prolog / pam.housekeeping.'

. "$(dirname "$0")"/lib/init.sh
# bob: the stress may run next to t0400, which uses alice
PERILOG_UID=1001
. "$SHARNESS_TEST_DIRECTORY"/lib/perilog.sh
. "$SHARNESS_TEST_DIRECTORY"/lib/perilog-stress.sh

flux_pam_require_flux
if ! test -f "$FLUX_PAM_SRCDIR/modules/pam.py"; then
	skip_all="pam module not present"
	test_done
fi
perilog_require_testbed
perilog_stress_config <<-EOF
[pam]
manage-user-slice = true
[exec]
sdexec-constrain-resources = true
EOF
test_under_flux_pam 2

test_expect_success 'the pam module is loaded on every rank' '
	flux exec -r all flux module stats pam >/dev/null
'
test_expect_success 'sdexec-mapper is loaded (by modprobe, for the module)' '
	flux exec -r all flux module stats sdexec-mapper >/dev/null
'
test_expect_success 'reset the user in the test bed; it starts clean' '
	perilog_reset_user &&
	perilog_torn_down
'
perilog_stress_tests module
test_expect_success 'the executables confirmed with the module' '
	flux dmesg -H | grep "pam module: .*applied" &&
	! flux dmesg -H | grep "working alone"
'
test_done

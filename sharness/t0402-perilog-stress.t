#!/bin/bash

test_description='50 jobs of one user started and ended together, executables alone

The prologs and housekeepings of one user race for the per-user lock; at the
end the user slice must be unit-free and unconstrained and the marker gone.'

. "$(dirname "$0")"/lib/init.sh
# bob: the stress may run next to t0400, which uses alice
PERILOG_UID=1001
. "$SHARNESS_TEST_DIRECTORY"/lib/perilog.sh
. "$SHARNESS_TEST_DIRECTORY"/lib/perilog-stress.sh

flux_pam_require_flux
perilog_require_testbed
perilog_stress_config </dev/null
test_under_flux_pam 2

test_expect_success 'the pam module is not loaded' '
	test_must_fail flux module stats pam
'
test_expect_success 'load the pam config on every rank and sdexec-mapper' '
	perilog_config_load <<-EOF &&
	[pam]
	manage-user-slice = true
	[exec]
	sdexec-constrain-resources = true
	EOF
	perilog_load_mapper
'
test_expect_success 'reset the user in the test bed; it starts clean' '
	perilog_reset_user &&
	perilog_torn_down
'
perilog_stress_tests alone
test_expect_success 'the executables worked alone' '
	flux dmesg -H | grep "pam.prolog: .*working alone"
'
test_expect_success 'remove sdexec-mapper' '
	perilog_remove_mapper
'
test_done

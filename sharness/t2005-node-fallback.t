#!/bin/bash

test_description='node replica: the drop-ins alone (scenario 6)

The pam module is removed; the prolog and housekeeping drop-ins do the work
under the per-user lock and pam_flux confirms logins with the marker file.
Scenarios 1-4 must pass the same way, the kernel checks included (with the
cpuset controller), and the GPU device filter of two fake GPUs.'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

test_expect_success 'the replica boots; the pam module is removed' '
	node_up --fake-gpus 2 &&
	node_flux module remove pam &&
	node_flux module list >modules &&
	! grep "^pam " modules &&
	test_must_fail node_pam_status 2>status.err &&
	grep ENOSYS status.err
'
scenario_admission
scenario_confinement
scenario_union
scenario_teardown
scenario_gpus
scenario_memory drop-ins
scenario_leftovers drop-ins
test_expect_success 'the module stayed unloaded throughout' '
	node_flux module list >modules &&
	! grep "^pam " modules
'
test_done

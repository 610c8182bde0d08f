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
test_expect_success 'drop-ins: a login knows its job (job-list): FLUX_JOB_ID and FLUX_URI' '
	id=$(node_submit alice -n1 sleep inf) &&
	node_job_started $id &&
	node_ssh alice "echo \$FLUX_JOB_ID; flux jobs -no {id.f58plain}" >fb.env &&
	cat fb.env &&
	test "$(sed -n 1p fb.env)" = "$(echo $id | sed "s/^ƒ/f/")" &&
	test "$(sed -n 2p fb.env)" = "$(sed -n 1p fb.env)" &&
	node_flux cancel $id &&
	node_job_gone $id
'
test_expect_success 'the module stayed unloaded throughout' '
	node_flux module list >modules &&
	! grep "^pam " modules
'
test_done

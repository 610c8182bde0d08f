#!/bin/bash

test_description='node replica: who may log in (scenario 1)

sshd on the replica has pam_flux in its account and session stacks.  With
no job on the node, alice and bob are refused and pam_flux says why in the
auth log; root is admitted without a job.  While alice has a job, bob is
still refused.'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

test_expect_success 'the replica boots with the pam module loaded by modprobe' '
	node_up &&
	node_flux module list >modules &&
	grep "^pam " modules
'
scenario_admission
test_done

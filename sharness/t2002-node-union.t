#!/bin/bash

test_description='node replica: the slice follows the union of the jobs (scenario 3)

A second job of alice widens user-1000.slice to the cores of both jobs; ending the
first narrows it to those of the second; her login survives both changes.
Her memory limit (exec.sdexec-properties, scaled by the mapper; then
pam.login-memory-max) follows the same way, is read back, and refuses her
logins where the kernel does not enforce it.'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

test_expect_success 'the replica boots with the pam module loaded by modprobe' '
	node_up &&
	node_flux module list >modules &&
	grep "^pam " modules
'
scenario_union
scenario_memory module
test_done

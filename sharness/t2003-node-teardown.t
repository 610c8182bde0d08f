#!/bin/bash

test_description='node replica: the last job ends (scenario 4)

With kill-user-slice = false the login survives, user@1000 stops and new
logins are refused.  With true the login is killed within the grace time,
including a process that ignores SIGTERM, and the node is not drained.
After the last job of a user, the IPC objects the user left are removed, and
not those of anyone else.'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

test_expect_success 'the replica boots with the pam module loaded by modprobe' '
	node_up &&
	node_flux module list >modules &&
	grep "^pam " modules
'
scenario_teardown
scenario_leftovers module
test_done

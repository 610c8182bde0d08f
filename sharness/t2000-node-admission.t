#!/bin/bash

test_description='node replica: who may log in (scenario 1)

sshd on the replica has pam_flux in its account and session stacks.  With
no job on the node, alice and bob are refused and pam_flux says why in the
auth log; root is admitted without a job.  While alice has a job, bob is
still refused.  The ssh client shows pam_flux'"'"'s message; with the broker
stopped alice is told her jobs cannot be checked, and root still gets in.'

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

# node_ssh_says USER FILE: a login of USER that is refused; the ssh client
# (with LogLevel INFO, so that it shows sshd's banner) says what PAM said
node_ssh_says() {
	test_must_fail node_run ssh -o LogLevel=INFO "$1@127.0.0.1" -- true \
		</dev/null >"$2" 2>&1 &&
	cat "$2"
}

test_expect_success 'the ssh client shows pam_flux'\''s message to alice' '
	node_ssh_says alice msg.nojob &&
	grep -F "Access denied: user alice has no active jobs on this node" msg.nojob
'
test_expect_success 'the broker is stopped (systemctl stop flux)' '
	node_sh "systemctl stop flux" &&
	test "$(node_unit_state flux.service)" = inactive
'
test_expect_success 'alice is told her jobs cannot be checked right now' '
	node_ssh_says alice msg.nobroker &&
	grep -F "Access denied: the jobs of user alice on this node cannot be checked right now; try again later" msg.nobroker &&
	! grep -F "has no active jobs" msg.nobroker
'
test_expect_success 'the auth log keeps the cause' '
	node_wait 10 "node_auth_log | grep -F \"pam_flux(sshd:account): cannot check jobs of user alice (uid=1000): cannot connect to local:///run/flux/local\""
'
test_expect_success 'root still gets in while the broker is down' '
	node_ssh root id -u >root.nobroker &&
	test "$(cat root.nobroker)" = 0
'
test_expect_success 'the broker is started again; alice is refused as before' '
	node_sh "systemctl start flux" &&
	node_wait 60 "node_flux uptime 2>/dev/null | grep -q \" run \"" &&
	node_ssh_says alice msg.again &&
	grep -F "has no active jobs on this node" msg.again
'
test_done

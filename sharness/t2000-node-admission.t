#!/bin/bash

test_description='node replica: who may log in (scenario 1), on a node that cannot confine

sshd on the replica has pam_flux in its account and session stacks.  With
no job on the node, alice and bob are refused and pam_flux says why in the
auth log; root is admitted without a job.  While alice has a job, bob is
still refused.  The ssh client shows pam_flux'"'"'s message; with the broker
stopped alice is told her jobs cannot be checked, and root still gets in.

This replica boots without the cpuset controller (node.py up --no-cpuset),
whatever FLUX_PAM_TESTBED_CPUSET says, so the kernel enforces no CPU or
memory node set for user slices: scenario 1 runs with
allow-unconfined-logins (lib/node.sh).  Without it, job users are refused
with a message that says why, on the ssh client and in the auth log, root
still gets in, flux pam status says what is not enforced and flux pam check
FAILs naming the missing controller; with it, they are admitted unconfined
and marked so.  Both with the pam module and with the drop-ins alone.'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

test_expect_success 'the replica boots without cpuset, the pam module loaded by modprobe' '
	node_up --no-cpuset &&
	node_flux module list >modules &&
	grep "^pam " modules &&
	! node_sh "grep -qw cpuset /sys/fs/cgroup/cgroup.controllers"
'
scenario_admission
test_expect_success 'the ssh client shows pam_flux'\''s message to alice' '
	node_refused_says alice "Access denied: user alice has no active jobs on this node" msg.nojob
'
test_expect_success 'the broker is stopped (systemctl stop flux)' '
	node_sh "systemctl stop flux" &&
	test "$(node_unit_state flux.service)" = inactive
'
test_expect_success 'alice is told her jobs cannot be checked right now' '
	node_refused_says alice "Access denied: the jobs of user alice on this node cannot be checked right now; try again later" msg.nobroker &&
	! grep -F "has no active jobs" msg.nobroker
'
test_expect_success 'the auth log keeps the cause' '
	node_wait 10 "node_auth_log | grep -F \"pam_flux(sshd:account): cannot check jobs of user alice (uid=1000): cannot connect to local:///run/flux/local\""
'
test_expect_success 'root still gets in while the broker is down' '
	node_root_gets_in root.nobroker
'
test_expect_success 'the broker is started again; alice is refused as before' '
	node_sh "systemctl start flux" &&
	node_wait 60 "node_flux uptime 2>/dev/null | grep -q \" run \"" &&
	node_refused_says alice "has no active jobs on this node" msg.again
'
scenario_unenforced module
test_expect_success 'flux pam check FAILs, naming the missing cpuset and the fix' '
	test_must_fail node_flux pam check --config-path $NODE_FLUX_CONF >check.out &&
	grep -A1 "^FAIL  cgroup-controllers:" check.out >check.fail &&
	cat check.fail &&
	grep "the cgroup2 hierarchy does not offer cpuset to user.slice" check.fail &&
	grep "fix: give cpuset to cgroup v2" check.fail
'
test_expect_success 'the pam module is removed' '
	node_flux module remove pam
'
scenario_unenforced drop-ins
test_expect_success 'drop-ins: the prolog said why in its unit'\''s journal' '
	unit=flux-prolog@$(node_flux job id --to=f58plain $(cat ue.job1)).service &&
	node_run journalctl -b --no-pager -o cat -u $unit </dev/null >ue.prolog &&
	cat ue.prolog &&
	grep "the cpuset controller is not enabled for the slice" ue.prolog &&
	grep "the user.s logins are refused" ue.prolog
'
test_done

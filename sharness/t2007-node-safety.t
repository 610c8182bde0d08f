#!/bin/bash

test_description='node replica: unsafe node state fails closed (scenario 8)

A group-writable /run/flux-pam makes the prolog fail, which drains the node,
and pam_flux refuses sessions.  Linger enabled for alice makes the prolog
fail, also when she already has a running job.  Both with the pam module loaded and with the drop-ins alone.
Each time the job'"'"'s exception note, the drain reason and flux dmesg give
the prolog'"'"'s reason (issue 14, item 3).'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

# node_prolog_status JOBID: the status of the job's prolog-finish event
node_prolog_status() {
	node_flux job wait-event -t 60 -f json "$1" prolog-finish |
		jq -r .context.status
}

# node_says_why JOBID PATTERN: the job's exception note, the drain reason and
# flux dmesg (flux-pam-prolog) say PATTERN (issue 14, item 3)
node_says_why() {
	local f58
	f58=$(node_flux job id --to=f58plain $1) &&
	node_flux jobs -a --user=all -no "{exception.type} {exception.note}" $1 >why.note &&
	cat why.note &&
	grep "^prolog flux-pam-prolog: .*$2" why.note &&
	node_flux resource drain -no "{reason}" >why.drain &&
	cat why.drain &&
	grep "^flux-pam-prolog: .*$2" why.drain &&
	node_flux dmesg >why.dmesg &&
	grep "flux-pam-prolog.err\[0\]: ƒ${f58#f}: .*$2" why.dmesg
}

# safety_checks TAG: lock dir and linger, module loaded or not
safety_checks() {
	test_expect_success "$1: alice has a job while the lock dir is safe" '
		test "$(node_sh "stat -c %a:%U /run/flux-pam")" = 700:root &&
		test -z "$(node_flux jobs -no {id} --user=alice)" &&
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >sf.job1 &&
		node_job_started $id
	'
	test_expect_success "$1: /run/flux-pam made group-writable" '
		node_sh "chmod 0770 /run/flux-pam"
	'
	test_expect_success "$1: pam_flux refuses alice a session despite her job" '
		test_must_fail node_ssh alice true
	'
	test_expect_success "$1: a new job of alice fails in its prolog" '
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >sf.job2 &&
		status=$(node_prolog_status $id) &&
		echo "prolog status $status" &&
		test "$status" != 0 &&
		node_flux job wait-event -t 30 $id clean &&
		! node_flux job eventlog $id | grep -E "^[0-9.]+ start( |$)"
	'
	test_expect_success "$1: the node is drained" '
		node_wait 30 "test -n \"\$(node_drained)\"" &&
		node_flux resource drain -no "{ranks} {reason}"
	'
	test_expect_success "$1: the prolog said why (journal of its unit)" '
		unit=flux-prolog@$(node_flux job id --to=f58plain $(cat sf.job2)).service &&
		node_run journalctl -b --no-pager -o cat -u $unit </dev/null >sf.job2.log &&
		cat sf.job2.log &&
		grep "/run/flux-pam" sf.job2.log
	'
	test_expect_success "$1: the exception note, drain reason and dmesg say why" '
		node_says_why $(cat sf.job2) "lock directory /run/flux-pam is group- or other-writable"
	'
	test_expect_success "$1: restore the lock dir, end the jobs, undrain" '
		node_sh "chmod 0700 /run/flux-pam" &&
		node_flux cancel --all --user=alice &&
		node_job_gone $(cat sf.job1) &&
		node_job_gone $(cat sf.job2) &&
		{ test -z "$(node_drained)" || node_flux resource undrain 0; } &&
		test -z "$(node_drained)"
	'
	test_expect_success "$1: alice has a running job before linger is turned on" '
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >sf.job4 &&
		node_job_started $id
	'
	test_expect_success "$1: linger enabled for alice" '
		node_run loginctl enable-linger alice </dev/null &&
		node_sh "test -e /var/lib/systemd/linger/alice"
	'
	test_expect_success "$1: her next job fails in its prolog" '
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >sf.job3 &&
		status=$(node_prolog_status $id) &&
		echo "prolog status $status" &&
		test "$status" != 0 &&
		node_flux job wait-event -t 30 $id clean &&
		! node_flux job eventlog $id | grep -E "^[0-9.]+ start( |$)"
	'
	test_expect_success "$1: the prolog said why (journal of its unit)" '
		unit=flux-prolog@$(node_flux job id --to=f58plain $(cat sf.job3)).service &&
		node_run journalctl -b --no-pager -o cat -u $unit </dev/null >sf.job3.log &&
		cat sf.job3.log &&
		grep -i linger sf.job3.log
	'
	test_expect_success "$1: the exception note, drain reason and dmesg say linger" '
		node_says_why $(cat sf.job3) "user alice (1000) has linger enabled"
	'
	test_expect_success "$1: linger off again, the node undrained" '
		node_run loginctl disable-linger alice </dev/null &&
		node_flux cancel --all --user=alice &&
		node_job_gone $(cat sf.job3) &&
		node_job_gone $(cat sf.job4) &&
		{ test -z "$(node_drained)" || node_flux resource undrain 0; } &&
		test -z "$(node_drained)"
	'
}

test_expect_success 'the replica boots with the pam module' '
	node_up
'
safety_checks module
test_expect_success 'the pam module is removed' '
	node_flux module remove pam
'
safety_checks drop-ins
test_done

#!/bin/bash

test_description='node replica: unsafe node state fails closed (scenario 8)

A group-writable /run/flux-pam makes the prolog fail, which drains the node,
and pam_flux refuses sessions.  Linger enabled for alice makes the prolog
fail.'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

test_expect_success 'the replica boots with the pam module' '
	node_up &&
	test "$(node_sh "stat -c %a:%U /run/flux-pam")" = 700:root
'
test_expect_success 'alice has a job (the lock dir is still safe)' '
	id=$(node_submit alice -n1 sleep inf) &&
	echo $id >sf.job1 &&
	node_job_started $id
'
test_expect_success '/run/flux-pam made group-writable' '
	node_sh "chmod 0770 /run/flux-pam"
'
test_expect_success 'pam_flux refuses alice a session despite her job' '
	test_must_fail node_ssh alice true &&
	node_wait 10 "node_auth_log | grep -F \"/run/flux-pam\""
'
test_expect_success 'a new job of alice fails in its prolog' '
	id=$(node_submit alice -n1 sleep inf) &&
	echo $id >sf.job2 &&
	node_flux job wait-event -t 60 $id exception >sf.exc &&
	cat sf.exc &&
	grep -i prolog sf.exc &&
	test_must_fail node_flux job wait-event -t 1 $id start
'
test_expect_success 'the node is drained, naming the prolog' '
	node_wait 30 "test -n \"\$(node_drained)\"" &&
	node_flux resource drain -no "{ranks} {reason}" >sf.drain &&
	cat sf.drain
'
test_expect_success 'restore: lock dir 0700, the node undrained, jobs ended' '
	node_sh "chmod 0700 /run/flux-pam" &&
	node_flux cancel $(cat sf.job1) &&
	node_job_gone $(cat sf.job1) &&
	node_flux resource undrain 0 &&
	test -z "$(node_drained)"
'
test_expect_success 'linger enabled for alice' '
	node_run loginctl enable-linger alice </dev/null &&
	node_sh "test -e /var/lib/systemd/linger/alice"
'
test_expect_success 'a job of alice fails in its prolog' '
	id=$(node_submit alice -n1 sleep inf) &&
	echo $id >sf.job3 &&
	node_flux job wait-event -t 60 $id exception >sf.exc3 &&
	cat sf.exc3 &&
	grep -i prolog sf.exc3 &&
	node_flux job eventlog $(cat sf.job3) >sf.ev3 &&
	! grep -w start sf.ev3
'
test_expect_success 'the prolog log names linger' '
	node_run journalctl -b --no-pager -o cat >sf.journal </dev/null &&
	grep -i linger sf.journal | grep -v "enable-linger" | tail -5 &&
	grep -i "linger" sf.journal | grep -qv "enable-linger"
'
test_done

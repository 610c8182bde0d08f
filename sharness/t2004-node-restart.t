#!/bin/bash

test_description='node replica: systemctl restart flux (scenario 5)

While alice has a job and a login, flux.service is restarted.  Job shells run
under sdexec, so the job survives; the pam module rebuilds its state from the
journal backlog and systemd, the login stays, user@1000 is not restarted, the
slice keeps its constraint, and a new login is admitted.  Afterwards the
teardown still works.'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

test_expect_success 'the replica boots (sdexec) with the pam module loaded' '
	node_up --sdexec &&
	node_flux module list >modules &&
	grep "^pam " modules
'
test_expect_success 'alice has a job and a login' '
	id=$(node_submit alice -n1 sleep inf) &&
	echo $id >rs.job &&
	node_job_started $id &&
	node_job_cores $id >rs.cores &&
	node_session_start rs &&
	test "$(node_prop user-1000.slice AllowedCPUs)" = "$(cat rs.cores)" &&
	node_prop user@1000.service InvocationID >rs.inv &&
	test -s rs.inv
'
test_expect_success 'systemctl restart flux' '
	node_run systemctl restart flux </dev/null &&
	node_wait 60 "node_flux uptime >/dev/null 2>&1"
'
test_expect_success 'the job is still running' '
	node_flux job wait-event -t 30 $(cat rs.job) start &&
	test "$(node_flux jobs -no {state} $(cat rs.job))" = RUN
'
test_expect_success 'the pam module was reloaded and rebuilt alice with her job' '
	node_wait 30 "node_pam_status >rs.status 2>/dev/null && jq -e \".users[] | select(.uid == 1000) | .active and (.jobs | length == 1)\" rs.status >/dev/null" &&
	jq -e ".users[] | select(.uid == 1000) | .jobs[0].id" rs.status >rs.statusjob &&
	test "$(cat rs.statusjob)" = "$(node_flux job id $(cat rs.job))"
'
test_expect_success 'the login stayed, user@1000 was not restarted' '
	node_session_alive rs &&
	test "$(node_unit_state user@1000.service)" = active &&
	test "$(node_prop user@1000.service InvocationID)" = "$(cat rs.inv)"
'
test_expect_success 'the slice kept its constraint' '
	test "$(node_prop user-1000.slice AllowedCPUs)" = "$(cat rs.cores)" &&
	test "$(node_prop user-1000.slice DevicePolicy)" = closed
'
test_expect_success 'a new login is admitted and confined' '
	node_login_cgroup alice >rs.cg &&
	grep -E "^/user.slice/user-1000.slice/flux-pam-[0-9]+.scope$" rs.cg
'
test_expect_success 'the node is not drained' '
	test -z "$(node_drained)"
'
test_expect_success 'after the restart, the end of the job still tears down' '
	node_flux cancel $(cat rs.job) &&
	node_job_gone $(cat rs.job) &&
	node_wait 10 "test \"\$(node_unit_state user@1000.service)\" = inactive" &&
	test_must_fail node_ssh alice true
'
test_done

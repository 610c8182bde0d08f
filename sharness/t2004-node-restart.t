#!/bin/bash

test_description='node replica: restarts under a running job and a login (scenario 5)

Part 1: the pam module is reloaded (flux module reload pam) while alice has
a job and a login; it rebuilds her state from the journal backlog and from
systemd, the login stays, user@1000 is not restarted, the slice keeps its
constraint, a new login is admitted.

Part 2: systemctl restart flux.  flux-core 0.88 reattaches to a running job
after a broker restart only for its test execution service (testexec: a job
with attributes.system.exec.test runs no processes, but is allocated, runs
the prolog and stays in RUN); bulkexec and sdexec jobs get an exception when
the broker stops, and the stock cleanup cancels every running job.  So part
2 uses a testexec job of alice with the cleanup off (node.py up
--restartable).  Same checks; afterwards the teardown still works.'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

# node_restart_checks TAG: the checks shared by both parts
node_restart_checks() {
	test_expect_success "$1: the job is still running" '
		test "$(node_flux jobs -no {state} $(cat rs.job))" = RUN
	'
	test_expect_success "$1: the pam module rebuilt alice with her job" '
		node_wait 30 "node_pam_status >rs.status 2>/dev/null && jq -e \".users[] | select(.uid == 1000) | .active and (.jobs | length == 1)\" rs.status >/dev/null" &&
		jq -r ".users[] | select(.uid == 1000) | .jobs[0].id" rs.status >rs.statusjob &&
		test "$(cat rs.statusjob)" = "$(node_flux job id --to=dec $(cat rs.job))"
	'
	test_expect_success "$1: the login stayed, user@1000 was not restarted" '
		node_session_alive rs &&
		test "$(node_unit_state ssh-rs.service)" = active &&
		test "$(node_unit_state user@1000.service)" = active &&
		test "$(node_prop user@1000.service InvocationID)" = "$(cat rs.inv)"
	'
	test_expect_success "$1: the slice kept its properties" '
		test "$(node_prop user-1000.slice AllowedCPUs)" = "$(cat rs.cpus)" &&
		test "$(node_prop user-1000.slice DevicePolicy)" = "$(cat rs.devpol)"
	'
	test_expect_success "$1: a new login is admitted into the slice" '
		node_login_cgroup alice >rs.cg &&
		grep -E "^/user.slice/user-1000.slice/flux-pam-[0-9]+.scope$" rs.cg
	'
	test_expect_success "$1: the node is not drained" '
		test -z "$(node_drained)"
	'
	test_expect_success "$1: the end of the job still tears down" '
		node_flux cancel $(cat rs.job) &&
		node_job_gone $(cat rs.job) &&
		node_wait 10 "test \"\$(node_unit_state user@1000.service)\" = inactive" &&
		test_must_fail node_ssh alice true &&
		node_kill_sessions
	'
}

# node_restart_setup TAG [flux submit options]
node_restart_setup() {
	local tag=$1
	shift
	RS_SUBMIT="$*"
	test_expect_success "$tag: alice has a job and a login" '
		id=$(node_submit alice $RS_SUBMIT -n1 sleep inf) &&
		echo $id >rs.job &&
		node_job_started $id &&
		node_session_start rs &&
		node_prop user-1000.slice AllowedCPUs >rs.cpus &&
		node_prop user-1000.slice DevicePolicy >rs.devpol &&
		node_prop user@1000.service InvocationID >rs.inv &&
		test -s rs.inv
	'
}

test_expect_success 'part 1: the replica boots with the pam module' '
	node_up
'
node_restart_setup 'part 1'
test_expect_success 'part 1: the slice is constrained to the job' '
	test "$(cat rs.cpus)" = "$(node_job_cores $(cat rs.job))" &&
	test "$(cat rs.devpol)" = closed
'
test_expect_success 'part 1: flux module reload pam' '
	node_flux module reload pam &&
	node_flux module list | grep "^pam "
'
node_restart_checks 'part 1'

test_expect_success 'part 2: a replica that keeps running jobs boots' '
	node_down &&
	node_up --restartable &&
	node_flux module list | grep "^pam "
'
node_restart_setup 'part 2' --setattr=system.exec.test.run_duration=1h
test_expect_success 'part 2: the slice is constrained to the job' '
	test "$(cat rs.cpus)" = "$(node_job_cores $(cat rs.job))" &&
	test "$(cat rs.devpol)" = closed
'
test_expect_success 'part 2: systemctl restart flux' '
	node_prop flux.service MainPID >rs.pid1 &&
	node_run systemctl restart flux </dev/null &&
	node_wait 60 "node_flux uptime 2>/dev/null | grep -q \" run \"" &&
	test "$(node_prop flux.service MainPID)" != "$(cat rs.pid1)"
'
test_expect_success 'part 2: the job was reattached' '
	node_flux job eventlog -p exec $(cat rs.job) >rs.exec &&
	grep -w reattach rs.exec
'
node_restart_checks 'part 2'
test_done

#!/bin/bash

test_description='pam_flux account decisions against a real Flux instance

The behaviour of Flux'"'"'s peer suite (flux-pam t/t0001-pam_flux.t), for
pam_flux.so (built from pam/pam_flux.c) inside pamtester as root, against
`flux start --test-size=2` owned by an unprivileged uid (see lib/pamflux.sh).
Every case runs twice: with the pam broker module loaded, when pam_flux asks
pam.check, and without it, when pam_flux falls back to job-list.

The job user differs between the two: the module ignores the instance
owner'"'"'s jobs, so with the module the job user is bob (alice submits his
jobs as him, as flux-core'"'"'s tests do: pam_submit), and without it the job
user is alice, the instance owner, whose jobs are what job-list reports.
The guest is nobody; the sub-instances that admit guests are alice'"'"'s.'

. "$(dirname "$0")"/lib/init.sh

flux_pam_require_flux
. "$FLUX_PAM_LIB/pamflux.sh"
pamflux_require

trap 'pamflux_stop >/dev/null 2>&1; pamflux_cleanup; die' EXIT

# `flux alloc --bg` and `flux job info` resolve a job's ssh:// URI locally
export FLUX_URI_RESOLVE_LOCAL=t

pamflux_users

# job_submit [flux submit options] COMMAND...: a job of $JOBUSER
job_submit() {
	if test "$MODE" = module; then
		PAM_SUBMIT_VIA=as_owner pam_submit "$PAMFLUX_BOB_UID" "$@"
	else
		as_owner flux submit "$@"
	fi
}

# start_job [flux submit options] COMMAND...: a job of $JOBUSER, started
start_job() {
	local jobid
	jobid=$(job_submit "$@") &&
	flux job wait-event -t 30 "$jobid" start >/dev/null &&
	echo "$jobid"
}

# owner_job [flux submit options] COMMAND...: a job of alice, started
owner_job() {
	local jobid
	jobid=$(as_owner flux submit "$@") &&
	flux job wait-event -t 30 "$jobid" start >/dev/null &&
	echo "$jobid"
}

# owner_alloc [flux alloc options]: a sub-instance of alice, ready
owner_alloc() {
	as_owner timeout 120 flux alloc --bg "$@"
}

# With the module: wait until it holds job ID on RANK in STATE (running,
# cleanup, absent), so that pamtester is asked after the module has seen the
# event (the journal reaches the ranks asynchronously).  Without: nothing.
module_sync() {
	test "$MODE" = module || return 0
	pamflux_wait_module_job "$@"
}

# denied USER FILE: pamtester refuses USER with pam_flux's message
denied() {
	test_must_fail pamtest "$1" >"$2" 2>&1 &&
	test_debug "cat $2" &&
	grep "Access denied: user $1 has no active jobs on this node" "$2"
}

# unchecked USER FILE: pamtester refuses USER: the broker cannot be asked
unchecked() {
	test_must_fail pamtest "$1" >"$2" 2>&1 &&
	test_debug "cat $2" &&
	grep "Access denied: the jobs of user $1 on this node cannot be checked right now; try again later" "$2"
}

# admitted USER FILE: pamtester admits USER
admitted() {
	pamtest "$1" >"$2" 2>&1 &&
	test_debug "cat $2" &&
	grep "pamtester: account management done" "$2" &&
	! grep "Access denied" "$2"
}

# Cancel every job of every user; wait until none is left (a failed test
# must not leave a job that holds the next one's resources).
cancel_all() {
	flux cancel --user=all --all --quiet
	flux queue idle --timeout=60s >/dev/null
}

run_cases() {
	MODE=$1
	if test "$MODE" = module; then
		JOBUSER=bob JOBUID=$PAMFLUX_BOB_UID
	else
		JOBUSER=alice JOBUID=$PAMFLUX_OWNER_UID
	fi
	local m=$MODE

	test_expect_success "$m: start an instance of size 2 owned by alice" '
		pamflux_start $MODE 2 $MODE &&
		test "$(flux getattr security.owner)" = "$PAMFLUX_OWNER_UID" &&
		flux exec -r all flux module list >modules.$MODE &&
		if test "$MODE" = module; then
			test $(grep -c "^pam " modules.$MODE) -eq 2
		else
			! grep "^pam " modules.$MODE
		fi
	'
	test_expect_success "$m: create the pam_flux account stack" '
		pamflux_stack &&
		grep "^account required .*/pam_flux.so" pam.d/sshd
	'
	test_expect_success "$m: $JOBUSER without a job is denied" '
		denied $JOBUSER nojob.$MODE.err
	'
	test_expect_success "$m: $JOBUSER with a running job is admitted" '
		jobid=$(start_job -n1 --requires=rank:0 sleep inf) &&
		id=$(flux job id $jobid) &&
		module_sync 0 $id running &&
		admitted $JOBUSER allow.$MODE.out
	'
	test "$MODE" = module || test_expect_success "$m: the marker's deny line refuses $JOBUSER with its text" '
		locks=$(mktemp -d /tmp/t0500-locks.XXXXXX) &&
		test_when_finished "rm -rf $locks; pamflux_stack" &&
		echo "deny: Access denied: t0500 says no" >$locks/uid.$JOBUID.active &&
		pamflux_stack lock-dir=$locks &&
		test_must_fail pamtest $JOBUSER >marker.out 2>&1 &&
		grep "Access denied: t0500 says no" marker.out &&
		: >$locks/uid.$JOBUID.active &&
		admitted $JOBUSER marker-empty.out
	'
	test_expect_success "$m: root is admitted without asking the broker" '
		FLUX_URI=local:///nonexistent/local-0 admitted root root.$MODE.out
	'
	test_expect_success "$m: nobody, who has no job, is not let in" '
		denied nobody nobody.$MODE.err
	'
	test_expect_success "$m: the job user is denied on a rank without the job" '
		uri1=$(flux exec -r 1 flux getattr local-uri) &&
		FLUX_URI=$uri1 denied $JOBUSER rank1.$MODE.out
	'
	test_expect_success "$m: an unreachable broker (bad FLUX_URI) fails closed" '
		FLUX_URI=/tmp/foo unchecked $JOBUSER baduri.$MODE.out &&
		FLUX_URI=local:///nonexistent/local-0 unchecked $JOBUSER baduri2.$MODE.out &&
		admitted $JOBUSER gooduri.$MODE.out
	'
	test_expect_success "$m: $JOBUSER is denied once the job is cancelled and freed" '
		flux cancel $jobid &&
		flux job wait-event -t 30 $jobid free &&
		module_sync 0 $id absent &&
		denied $JOBUSER freed.$MODE.out
	'
	test_expect_success "$m: $JOBUSER is denied while the job is in CLEANUP" '
		cat >"$(pamflux_confdir)"/epilog.toml <<-EOF &&
		[job-manager.epilog]
		command = [ "flux", "event", "sub", "-c1", "pam-test-done" ]
		EOF
		chmod 644 "$(pamflux_confdir)"/epilog.toml &&
		flux config reload &&
		test_when_finished "rm -f \"$(pamflux_confdir)\"/epilog.toml &&
			flux config reload && flux jobtap remove perilog.so" &&
		flux jobtap load perilog.so &&
		test_when_finished "flux event pub pam-test-done" &&
		jobid=$(job_submit -n1 --requires=rank:0 true) &&
		flux job wait-event -t 30 $jobid epilog-start &&
		id=$(flux job id $jobid) &&
		test "$(flux jobs -no {state} $jobid)" = CLEANUP &&
		module_sync 0 $id "cleanup|absent" &&
		denied $JOBUSER cleanup.$MODE.out &&
		test "$(flux jobs -no {state} $jobid)" = CLEANUP &&
		flux event pub pam-test-done &&
		flux job wait-event -t 30 $jobid clean
	'
	test_expect_success "$m: add allow-guest-user to the pam_flux options" '
		pamflux_stack allow-guest-user &&
		grep "allow-guest-user" pam.d/sshd
	'
	test_expect_success "$m: with allow-guest-user and no jobs, all are denied" '
		denied $JOBUSER guest0.$MODE.out &&
		denied nobody guest1.$MODE.out
	'
	test_expect_success "$m: a guest is denied if alice's job is not an instance" '
		test_when_finished cancel_all &&
		jobid=$(owner_job -n1 --requires=rank:0 sleep inf) &&
		denied nobody guest-nouri.$MODE.out
	'
	test_expect_success "$m: the job user is still admitted with allow-guest-user" '
		test_when_finished cancel_all &&
		jobid=$(start_job -n1 --requires=rank:0 sleep inf) &&
		id=$(flux job id $jobid) &&
		module_sync 0 $id running &&
		admitted $JOBUSER guest-jobuser.$MODE.out &&
		denied nobody guest-jobuser-nobody.$MODE.out
	'
	test_expect_success "$m: a guest is denied if access.allow-guest-user is off" '
		test_when_finished cancel_all &&
		jobid=$(owner_alloc -N1 --requires=rank:0) &&
		flux job info $jobid annotations | jq -e ".user.uri" &&
		denied nobody guest-off.$MODE.out
	'
	test_expect_success "$m: a guest is admitted if access.allow-guest-user is on" '
		jobid=$(owner_alloc -N1 --requires=rank:0 \
			--conf=access.allow-guest-user=true) &&
		admitted nobody guest-on.$MODE.out
	'
	test_expect_success "$m: that guest is denied without allow-guest-user" '
		test_when_finished cancel_all &&
		test_when_finished "pamflux_stack allow-guest-user" &&
		pamflux_stack &&
		! grep allow-guest-user pam.d/sshd &&
		denied nobody guest-noopt.$MODE.out
	'
	test_expect_success "$m: a guest is denied on a rank that is not the job's first" '
		test_when_finished cancel_all &&
		jobid=$(owner_alloc -N2 --conf=access.allow-guest-user=true) &&
		test "$(flux jobs -no {ranks} $jobid)" = "[0-1]" &&
		uri1=$(flux exec -r 1 flux getattr local-uri) &&
		FLUX_URI=$uri1 denied nobody guest-rank1.$MODE.out &&
		admitted nobody guest-rank0.$MODE.out
	'
	test_expect_success "$m: the instance shuts down cleanly" '
		pamflux_stop
	'
}

run_cases module
run_cases job-list

test_done

#!/bin/bash

test_description='prolog and housekeeping executables working alone (no pam module)

A 2-broker test instance runs flux-pam-prolog per rank (perilog.so) and
flux-pam-housekeeping as its housekeeping command; systemd is the test bed.
The pam module is not loaded, so the executables do all of the work.'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_DIRECTORY"/lib/perilog.sh

flux_pam_require_flux
perilog_require_testbed
perilog_write_config
test_under_flux_pam 2

U=$PERILOG_UID

# R's cores of a job on RANK (logical ids; this VM maps core N to CPU N)
job_cores() {
	flux job info "$1" R | "${PYTHON:-python3}" -c '
import json, sys
from flux_pam_service.core import idset, rv1
print(idset.encode(rv1.local(json.load(sys.stdin), int(sys.argv[1])).cores))
' "${2:-0}"
}

# Stop a job and wait until its housekeeping has finished everywhere.
end_job() {
	flux cancel "$1" &&
	flux job wait-event -t 60 "$1" clean &&
	perilog_wait_hk_idle 60
}

pam_on() {
	perilog_config_load <<-EOF
	[pam]
	manage-user-slice = true
	$1
	[exec]
	sdexec-constrain-resources = true
	EOF
}

test_expect_success 'the instance is a test instance without the pam module' '
	test "$(flux getattr broker.boot-method)" = simple &&
	test_must_fail flux module stats pam
'
test_expect_success 'load the config with pam.manage-user-slice on every rank' '
	pam_on &&
	flux exec -r all flux config get pam.manage-user-slice >mus.out &&
	test "$(sort -u mus.out)" = true
'
test_expect_success 'load sdexec-mapper on every rank' '
	perilog_load_mapper
'
test_expect_success 'reset the user in the test bed; it starts clean' '
	perilog_reset_user &&
	perilog_torn_down
'
test_expect_success 'a job of the instance owner is skipped' '
	id=$(flux submit -n1 --requires=rank:0 true) &&
	flux job wait-event -t 30 $id clean &&
	perilog_wait_hk_idle &&
	perilog_log prolog $id >owner.log &&
	grep "is the instance owner: skipping" owner.log &&
	! marker_exists $(id -u) &&
	perilog_torn_down
'
test_expect_success 'prolog starts user@, constrains the slice and writes the marker' '
	job1=$(perilog_submit -n1 -c1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $job1 start &&
	manager_is active &&
	slice_cpus_are "$(job_cores $job1)" &&
	test "$(slice_prop DevicePolicy)" = closed &&
	marker_exists &&
	test "$(stat -c %a "$PERILOG_LOCK_DIR")" = 700 &&
	test "$(stat -c %a "$PERILOG_LOCK_DIR/uid.$U.lock")" = 600
'
test_expect_success CPUSET 'cpuset: the kernel enforces the union, the marker admits' '
	test "$(slice_prop AllowedCPUs)" = "$(cat $FLUX_PAM_TESTBED_CGROUP/user.slice/user-$U.slice/cpuset.cpus.effective)" &&
	test ! -s "$PERILOG_LOCK_DIR/uid.$U.active"
'
test_expect_success !CPUSET 'no cpuset: the marker denies her logins, the job runs, the prolog says why' '
	head -1 "$PERILOG_LOCK_DIR/uid.$U.active" >marker.1 &&
	test "$(cat marker.1)" = "deny: Access denied: CPU and memory node confinement is not enforced on this node; ask your administrator" &&
	test "$(flux jobs -no {state} $job1)" = RUN &&
	perilog_log prolog $job1 >job1.log &&
	grep "cpuset controller is not enabled for the slice" job1.log &&
	grep "the user.s logins are refused" job1.log
'
test_expect_success !CPUSET 'no cpuset: allow-unconfined-logins writes a marker that admits' '
	pam_on "allow-unconfined-logins = true" &&
	jobu=$(perilog_submit -n1 -c1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $jobu start &&
	test ! -s "$PERILOG_LOCK_DIR/uid.$U.active" &&
	perilog_log prolog $jobu | grep "admitted unconfined" &&
	pam_on &&
	end_job $jobu &&
	head -1 "$PERILOG_LOCK_DIR/uid.$U.active" | grep "^deny: "
'
test_expect_success 'a second job of the user on the rank widens the slice to the union' '
	job2=$(perilog_submit -n1 -c1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $job2 start &&
	test "$(job_cores $job1)" != "$(job_cores $job2)" &&
	slice_cpus_are 0-1 &&
	perilog_log prolog $job2 >job2.log &&
	grep "1 other active job" job2.log
'
test_expect_success 'the first job ends: housekeeping shrinks the slice, user@ stays' '
	end_job $job1 &&
	slice_cpus_are "$(job_cores $job2)" &&
	manager_is active &&
	marker_exists &&
	perilog_log housekeeping $job1 >hk1.log &&
	grep "1 remaining job" hk1.log
'
test_expect_success 'the last job ends: marker removed, user@ stopped, slice reverted' '
	end_job $job2 &&
	perilog_torn_down &&
	perilog_log housekeeping $job2 >hk2.log &&
	grep "torn down" hk2.log
'
test_expect_success 'prolog got an F58 id and housekeeping a decimal one: same job' '
	grep -E "$(perilog_tag prolog $job2)" job2.log &&
	grep -E "$(perilog_tag housekeeping $job2)" hk2.log &&
	grep -E "FLUX_JOB_ID=(ƒ|f)$(perilog_f58digits $job2) " job2.log &&
	grep "FLUX_JOB_ID=$(flux job id --to=dec $job2) " hk2.log
'
test_expect_success 'the executables accept FLUX_JOB_ID as F58 and as decimal' '
	job3=$(perilog_submit -n1 -c1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $job3 start &&
	FLUX_JOB_ID=$(flux job id --to=dec $job3) FLUX_JOB_USERID=$U \
		"$PERILOG_PROLOG" 2>dec.err &&
	grep -E "$(perilog_tag prolog $job3)" dec.err &&
	FLUX_JOB_ID=ƒ$(perilog_f58digits $job3) FLUX_JOB_USERID=$U \
		"$PERILOG_PROLOG" 2>f58.err &&
	grep "0 other active job" f58.err &&
	slice_cpus_are "$(job_cores $job3)" &&
	end_job $job3 &&
	perilog_torn_down
'
test_expect_success 'a malformed FLUX_JOB_ID fails naming the variable' '
	test_expect_code 1 env FLUX_JOB_ID=notanid FLUX_JOB_USERID=$U \
		"$PERILOG_HOUSEKEEPING" 2>bad.err &&
	grep "FLUX_JOB_ID" bad.err
'
test_expect_success 'a job on both ranks runs the prolog and housekeeping on each' '
	job4=$(perilog_submit -N2 -n2 -c1 sleep inf) &&
	flux job wait-event -t 30 $job4 start &&
	manager_is active &&
	slice_cpus_are "$(job_cores $job4 0)" &&
	marker_exists &&
	perilog_log prolog $job4 >job4.log &&
	grep "(rank 0)" job4.log &&
	grep "(rank 1)" job4.log &&
	end_job $job4 &&
	perilog_log housekeeping $job4 >hk4.log &&
	grep "(rank 0)" hk4.log | grep "torn down" &&
	grep "(rank 1)" hk4.log | grep "torn down" &&
	perilog_torn_down
'
test_expect_success 'partial release: housekeeping with release-after = "0"' '
	cp "$FLUX_PAM_CONFDIR/job-manager.toml" jm.orig &&
	perilog_jobmanager_toml "release-after = \"0\"" \
		>"$FLUX_PAM_CONFDIR/job-manager.toml" &&
	pam_on &&
	flux config get | jq -e ".[\"job-manager\"].housekeeping[\"release-after\"] == \"0\"" &&
	job5=$(perilog_submit -N2 -n2 -c1 sleep inf) &&
	flux job wait-event -t 30 $job5 start &&
	end_job $job5 &&
	perilog_torn_down &&
	job6=$(perilog_submit -n1 -c1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $job6 start &&
	slice_cpus_are "$(job_cores $job6)" &&
	marker_exists &&
	end_job $job6 &&
	perilog_torn_down &&
	cp jm.orig "$FLUX_PAM_CONFDIR/job-manager.toml" &&
	pam_on
'
test_expect_success 'pam.manage-user-slice = false: the executables do nothing' '
	perilog_config_load </dev/null &&
	job7=$(perilog_submit -n1 -c1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $job7 start &&
	perilog_log prolog $job7 | grep "manage-user-slice is false: skipping" &&
	! marker_exists &&
	! manager_is active &&
	end_job $job7 &&
	pam_on
'
test_expect_success 'linger enabled for the user: prolog fails and drains the rank' '
	testbed_run -- loginctl enable-linger alice &&
	test_when_finished "testbed_run -- loginctl disable-linger alice" &&
	job8=$(perilog_submit -n1 -c1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $job8 exception &&
	perilog_log prolog $job8 | grep "has linger enabled" &&
	flux resource drain -no {ranks} | grep -w 0 &&
	! marker_exists &&
	flux job wait-event -t 30 $job8 clean &&
	perilog_wait_hk_idle &&
	flux resource undrain 0
'
test_expect_success 'linger off again: the next job of the user is managed' '
	testbed_run -- loginctl disable-linger alice &&
	systemctl -M "$FLUX_PAM_TESTBED" stop $(perilog_manager) &&
	job9=$(perilog_submit -n1 -c1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $job9 start &&
	manager_is active &&
	marker_exists &&
	end_job $job9 &&
	perilog_torn_down
'
for mode in 0770 0707; do
test_expect_success "lock directory mode $mode: prolog exception, rank drained, 'writable' logged" '
	chmod '$mode' "$PERILOG_LOCK_DIR" &&
	test_when_finished "chmod 0700 \"$PERILOG_LOCK_DIR\"" &&
	id=$(perilog_submit -n1 -c1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $id exception &&
	flux job wait-event -t 30 -f json $id prolog-finish | jq -e ".context.status != 0" &&
	flux job eventlog $id | grep "exception type=\"prolog\" severity=0 note=\"flux-pam-prolog: lock directory .* is group- or other-writable" &&
	flux resource drain -no {reason} | grep "^flux-pam-prolog: lock directory .*-writable" &&
	perilog_log prolog $id | grep "writable" &&
	flux resource drain -no {ranks} | grep -w 0 &&
	! marker_exists &&
	flux job wait-event -t 30 $id clean &&
	chmod 0700 "$PERILOG_LOCK_DIR" &&
	perilog_wait_hk_idle &&
	flux resource undrain 0
'
done
test_expect_success 'kill-user-slice: a process ignoring SIGTERM is SIGKILLed' '
	pam_on "kill-user-slice = true
kill-slice-grace-time = \"1s\"" &&
	job10=$(perilog_submit -n1 -c1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $job10 start &&
	systemd-run -M "$FLUX_PAM_TESTBED" --quiet --uid=$U \
		--slice=$(perilog_slice) --unit=stubborn-$$ \
		/bin/sh -c "trap \"\" TERM; while :; do sleep 0.2; done" &&
	perilog_wait 10 test "$(testbed_unit_state stubborn-$$.service)" = active &&
	end_job $job10 &&
	perilog_log housekeeping $job10 | grep "left after SIGTERM.*sending SIGKILL" &&
	! test "$(testbed_unit_state stubborn-$$.service)" = active &&
	test "$(testbed_unit_tasks stubborn-$$.service)" = 0 &&
	perilog_torn_down &&
	pam_on
'
test_expect_success 'remove sdexec-mapper' '
	perilog_remove_mapper
'
test_done

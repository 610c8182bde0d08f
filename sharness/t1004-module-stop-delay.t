#!/bin/bash

test_description='pam module: the user manager stop delay (pam.user-stop-delay)

When the last job of a user ends, logins are refused and the slice shrinks at
once, while user@UID.service is kept for the delay: a job within it reuses
the same manager (its InvocationID does not change) and is read back; after
the delay, the manager is stopped and the slice reverted.'

. "$(dirname "$0")"/lib/init.sh
flux_pam_require_flux
flux_pam_require_testbed

# a delay long enough for the tests to see the kept manager
cat >"$(flux_pam_confdir)"/pam.toml <<EOF
[exec]
sdexec-constrain-resources = true

[pam]
user-stop-delay = "4s"
manage-user-slice = true
kill-user-slice = true
kill-slice-grace-time = "2s"
debug = true
EOF

test_under_flux_pam 1

prop() { testbed_unit_property "$@"; }
kept() { pam_rpc --rank 0 pam.stats-get | jq -r '."users-kept"'; }

test_expect_success 'setup: the test bed has no leftover slice of 1000' '
	systemctl -M $FLUX_PAM_TESTBED stop user@1000.service user-1000.slice || :
	systemctl -M $FLUX_PAM_TESTBED reset-failed user@1000.service 2>/dev/null || :
	test "$(prop user@1000.service ActiveState)" = inactive
'
test_expect_success 'a first job of 1000 on two cores starts user@ and constrains' '
	jobA=$(pam_submit 1000 -N1 -n1 -c2 sleep inf) &&
	flux job wait-event -t 30 $jobA start &&
	idA=$(flux job id $jobA) &&
	pam_rpc --rank 0 pam.prolog "{\"id\": $idA}" | jq -e ".result == \"applied\"" &&
	test "$(prop user@1000.service ActiveState)" = active &&
	prop user@1000.service InvocationID >invocation &&
	test "$(prop user-1000.slice AllowedCPUs)" = 0-1
'
test_expect_success 'its end refuses logins and shrinks the slice at once; user@ stays' '
	flux cancel $jobA &&
	flux job wait-event -t 30 $jobA clean &&
	pam_rpc --rank 0 pam.check "{\"uid\": 1000}" | jq -e ".admitted == false" &&
	pam_rpc --rank 0 pam.housekeeping "{\"id\": $idA}" |
		jq -e ".result == \"torn-down\"" &&
	test "$(prop user-1000.slice AllowedCPUs)" = 0 &&
	test "$(prop user-1000.slice DevicePolicy)" = closed &&
	test -z "$(prop user-1000.slice DeviceAllow)" &&
	test "$(prop user@1000.service ActiveState)" = active &&
	test "$(kept)" = 1
'
test_expect_success 'a job within the delay reuses the same user manager, read back' '
	jobB=$(pam_submit 1000 -N1 -n1 -c2 sleep inf) &&
	flux job wait-event -t 30 $jobB start &&
	idB=$(flux job id $jobB) &&
	pam_rpc --rank 0 pam.prolog "{\"id\": $idB}" | jq -e ".result == \"applied\"" &&
	test "$(prop user@1000.service InvocationID)" = "$(cat invocation)" &&
	test "$(prop user-1000.slice AllowedCPUs)" = 0-1 &&
	test "$(kept)" = 0 &&
	pam_status 0 | jq -e ".users[0].enforcement.state != \"unknown\""
'
test_expect_success 'after the delay without a job, user@ is stopped and the slice reverted' '
	flux cancel $jobB &&
	flux job wait-event -t 30 $jobB clean &&
	test "$(prop user@1000.service ActiveState)" = active &&
	for i in $(seq 1 60); do
		test "$(prop user@1000.service ActiveState)" = inactive && break
		sleep 0.25
	done &&
	test "$(prop user@1000.service ActiveState)" = inactive &&
	pam_wait_idle 0 &&
	test -z "$(prop user-1000.slice AllowedCPUs)" &&
	test "$(kept)" = 0
'
test_expect_success 'a stop delay set to 0s by config reload stops a kept manager at once' '
	jobC=$(pam_submit 1000 -N1 -n1 sleep inf) &&
	flux job wait-event -t 30 $jobC start &&
	flux cancel $jobC &&
	flux job wait-event -t 30 $jobC clean &&
	pam_wait_idle 0 &&
	test "$(kept)" = 1 &&
	sed -i "s/^user-stop-delay = .*/user-stop-delay = \"0s\"/" \
		$FLUX_PAM_CONFDIR/pam.toml &&
	flux config reload &&
	pam_wait_idle 0 &&
	test "$(prop user@1000.service ActiveState)" = inactive &&
	test "$(kept)" = 0
'
test_done

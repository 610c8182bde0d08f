#!/bin/bash

test_description='pam module: 1000 short jobs, every one matched

Four users, one per rank (the brokers share the test bed systemd), 250 jobs
each, submitted at once.  At the end every rank has forgotten every job,
every start was matched by an end, every user slice is torn down and empty,
and no error was logged.  FLUX_PAM_STRESS_JOBS overrides the job count per
rank (default 250).'

. "$(dirname "$0")"/lib/init.sh

flux_pam_require_flux
flux_pam_require_testbed

cat >"$(flux_pam_confdir)"/pam.toml <<EOF
[pam]
manage-user-slice = true

[exec]
sdexec-constrain-resources = true
EOF

test_under_flux_pam 4

N=${FLUX_PAM_STRESS_JOBS:-250}
USERS="1000 1001 1002 1003"

uid_of_rank() { echo $((1000 + $1)); }

test_expect_success 'setup: users 1002 and 1003 exist in the test bed' '
	for u in 1002 1003; do
		testbed_run -- getent passwd $u >/dev/null ||
		testbed_run -- useradd --uid $u --create-home --user-group user$u ||
		return 1
	done &&
	for u in $USERS; do
		systemctl -M $FLUX_PAM_TESTBED stop user@$u.service || :
	done
'
test_expect_success "submit $N short jobs per rank, one user per rank" '
	t0=$(date +%s) &&
	for r in 0 1 2 3; do
		pam_submit $(uid_of_rank $r) --count=$N -n1 --requires=rank:$r \
			true >/dev/null || return 1
	done &&
	flux queue drain --timeout=600 &&
	echo "jobs done in $(($(date +%s) - t0))s" &&
	test $(flux jobs -A -a -n -f completed | wc -l) -eq $((4 * N))
'
test_expect_success 'every rank settles with no job and no pending operation' '
	for r in 0 1 2 3; do pam_wait_users $r "" 60 || return 1; done &&
	pam_wait_idle "0 1 2 3" 120 &&
	echo "settled $(($(date +%s) - t0))s after submit"
'
test_expect_success 'every job-start was matched by a job-end on its rank' '
	for r in 0 1 2 3; do
		flux exec -r $r flux module stats pam >stats.$r &&
		jq -e ".\"jobs-started\" == $N and .\"jobs-ended\" == $N" stats.$r &&
		jq -e ".jobs == 0 and .users == 0 and .failures == 0" stats.$r ||
		return 1
	done &&
	jq -e ".\"dispatcher-jobs\" == 0" stats.0 &&
	jq -c ".operations" stats.0 stats.1 stats.2 stats.3
'
test_expect_success 'no user slice is left populated or constrained' '
	for u in $USERS; do
		test "$(testbed_unit_tasks user-$u.slice)" -eq 0 &&
		test "$(testbed_unit_state user@$u.service)" = inactive &&
		test -z "$(testbed_unit_property user-$u.slice AllowedCPUs)" ||
		return 1
	done
'
test_expect_success CPUSET 'no error was logged on any rank' '
	flux exec -r all flux dmesg >dmesg.all &&
	test_must_fail grep "pam\\.\\(err\\|crit\\|alert\\|emerg\\)" dmesg.all
'
test_expect_success !CPUSET 'no error but the node'\''s "not enforced" was logged, once per rank' '
	flux exec -r all flux dmesg >dmesg.all &&
	grep "pam\\.\\(err\\|crit\\|alert\\|emerg\\)" dmesg.all >errors.all &&
	grep -c "confinement is not enforced on rank" errors.all >unenforced.count &&
	test $(cat unenforced.count) -le 4 &&
	test_must_fail grep -v "confinement is not enforced on rank" errors.all
'
test_done

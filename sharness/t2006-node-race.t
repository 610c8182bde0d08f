#!/bin/bash

test_description='node replica: logins racing the end of the last job (scenario 7)

sharness/node/race.sh runs ROUNDS rounds inside the replica: alice starts a
job, then the job is cancelled after a random delay while an ssh login of
alice is under way.  After each teardown no login may have entered
user-1000.slice after user@1000 stopped (kill-user-slice=false), the slice
must be empty (kill-user-slice=true), and a new login must be refused.  Both
with the pam module and with the drop-ins alone.  First, the checks must
report a stand-in escape (race.sh selftest-keep, selftest-kill).

FLUX_PAM_RACE_ROUNDS sets ROUNDS (default 10; the acceptance run uses 200).'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

ROUNDS=${FLUX_PAM_RACE_ROUNDS:-10}
RACE="$FLUX_PAM_SRCDIR/sharness/node/race.sh"

race() {
	node_run "$RACE" "$@" </dev/null >race.$1.$2.log 2>&1
	rc=$?
	grep -E "ESCAPE|^race " race.$1.$2.log
	tail -1 race.$1.$2.log >>race.summary
	return $rc
}

test_expect_success 'the replica boots with the pam module' '
	node_up
'
test_expect_success 'the checks see a stand-in escape (kill-user-slice=false)' '
	node_run "$RACE" selftest-keep </dev/null
'
test_expect_success "module, kill-user-slice=false: $ROUNDS rounds, no escape" '
	race keep $ROUNDS
'
test_expect_success 'the checks see a stand-in escape (kill-user-slice=true)' '
	node_pam_kill 1s &&
	node_run "$RACE" selftest-kill </dev/null
'
test_expect_success "module, kill-user-slice=true: $ROUNDS rounds, no escape" '
	race kill $ROUNDS
'
test_expect_success 'the pam module is removed' '
	node_pam_default &&
	node_flux module remove pam
'
test_expect_success "drop-ins, kill-user-slice=false: $ROUNDS rounds, no escape" '
	race keep $ROUNDS
'
test_expect_success "drop-ins, kill-user-slice=true: $ROUNDS rounds, no escape" '
	node_pam_kill 1s &&
	race kill $ROUNDS
'
test_expect_success 'no alice process is left in user-1000.slice; node not drained' '
	test -z "$(node_slice_pids 1000)" &&
	test -z "$(node_drained)" &&
	cat race.summary
'
test_done

#!/bin/bash

test_description='flux pam status and flux pam check against a live instance

The command is run as `flux pam`, found through FLUX_EXEC_PATH_PREPEND in a
flux-pam.py made from libexec/cmd/flux-pam.py.in the way `make install` makes
it.  manage-user-slice is off, so no systemd is needed: the module tracks
jobs and reports them.'

. "$(dirname "$0")"/lib/init.sh

flux_pam_require_flux

cat >"$(flux_pam_confdir)"/pam.toml <<EOF
[pam]
manage-user-slice = false
EOF

if test -z "$FLUX_PAM_UNDER_FLUX"; then
	cmddir=$(mktemp -d "${TMPDIR:-/tmp}/flux-pam-cmd.XXXXXX")
	sed "s|@PYTHONDIR@|$FLUX_PAM_SRCDIR|" \
		"$FLUX_PAM_SRCDIR/libexec/cmd/flux-pam.py.in" >"$cmddir/flux-pam.py"
	chmod 0755 "$cmddir/flux-pam.py"
	export FLUX_EXEC_PATH_PREPEND="$cmddir"
	trap 'rm -rf "$cmddir"' EXIT
fi

test_under_flux_pam 2

test_expect_success 'flux pam runs the flux-pam.py command' '
	flux pam --help | grep "status"
'
test_expect_success 'flux pam status --json answers from the local rank' '
	flux pam status --json >st0 &&
	jq -e "length == 1 and .[0].rank == 0 and .[0].users == []" st0
'
test_expect_success 'a job of uid 1000 on rank 1 shows in rank 1 status only' '
	jobid=$(pam_submit 1000 -N1 --requires=rank:1 sleep inf) &&
	flux job wait-event -t 30 $jobid start &&
	id=$(flux job id $jobid) &&
	pam_wait_users 1 "1000:$id" &&
	flux pam status -r 1 --json >st1 &&
	jq -e ".[0].rank == 1 and .[0].users[0].uid == 1000" st1 &&
	jq -e ".[0].users[0].jobs[0].id == $id" st1
'
test_expect_success 'flux pam status --all gathers every rank' '
	flux pam status --all --json >all &&
	jq -e "length == 2 and ([.[].rank] | sort) == [0, 1]" all &&
	jq -e "[.[] | select(.rank == 1) | .users[].uid] == [1000]" all &&
	jq -e "[.[] | select(.rank == 0) | .users[]] == []" all
'
test_expect_success 'the table shows the user row with rank, jobs and cores' '
	flux pam status --all >table &&
	head -1 table | grep "^RANK  *USER  *JOBS  *CORES  *GPUS  *ENFORCED  *SLICE  *USER@  *SCOPES  *LAST" &&
	user=$(getent passwd 1000 | cut -d: -f1) &&
	cores=$(jq -r ".[] | select(.rank == 1) | .users[0].union.core" all) &&
	test -n "$cores" &&
	grep -E "^1 +${user:-1000} +1/1 +$cores +- " table
'
test_expect_success 'flux pam status USER filters to that user' '
	flux pam status -r 1 --json 1000 >one &&
	jq -e ".[0].users | length == 1" one &&
	flux pam status -r 1 --json 1001 >none &&
	jq -e ".[0].users == []" none
'
test_expect_success 'flux pam check finds the module loaded on this rank' '
	test_might_fail flux pam check >check.out &&
	grep "^PASS  module: pam module loaded on rank 0" check.out
'
test_expect_success 'job end empties rank 1 status' '
	flux cancel $jobid &&
	flux job wait-event -t 30 $jobid clean &&
	pam_wait_users 1 ""
'
test_expect_success 'without the module on a rank, status says so and fails' '
	flux exec -r 1 flux module remove pam &&
	test_must_fail flux pam status -r 1 >nomod &&
	grep "^rank 1: module not loaded" nomod &&
	flux pam status -r 0 --json >still &&
	jq -e ".[0].rank == 0" still
'
test_done

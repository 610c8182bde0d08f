#!/bin/bash

test_description='pam module: an invalid config at load closes the node, a valid reload reopens it

The instance boots with kill-slice-grace-time = "abc" on disk.  The module
loads anyway, on every rank, and runs closed: it logs the error once at
error level naming the file and the key, keeps tracking jobs, answers the
perilog requests at once so that jobs are not failed, refuses job users
(pam.check and pam.attach carry the message for the user) and answers users
without jobs as usual.  A valid config reload reopens it without a restart.
Runs without systemd (manage-user-slice stays off).'

. "$(dirname "$0")"/lib/init.sh

flux_pam_require_flux

cat >"$(flux_pam_confdir)"/pam.toml <<EOF
[pam]
manage-user-slice = false
kill-slice-grace-time = "abc"
EOF

test_under_flux_pam 2

CONF="$FLUX_PAM_CONFDIR/pam.toml"
MESSAGE="Access denied: logins to this node are suspended by a configuration error; ask your administrator"

test_expect_success 'the module is loaded on every rank despite the bad value' '
	flux exec -r all flux module list >modlist &&
	test $(grep -c "^pam " modlist) -eq 2
'
test_expect_success 'each rank logged the error once, at error level, naming file and key' '
	for r in 0 1; do
		flux exec -r $r flux dmesg >dmesg.$r &&
		grep "pam.err\[$r\]: invalid configuration: $CONF: pam.kill-slice-grace-time:" dmesg.$r &&
		test $(grep -c "invalid configuration" dmesg.$r) -eq 1 || return 1
	done
'
test_expect_success 'pam.status says closed, with the file and the key' '
	pam_status 1 >status.closed &&
	jq -e ".closed | test(\"pam.toml: pam.kill-slice-grace-time\")" status.closed
'
test_expect_success 'a job of uid 1000 runs: its prolog is answered at once' '
	jobid=$(pam_submit 1000 -n1 --requires=rank:1 sleep inf) &&
	flux job wait-event -t 30 $jobid start &&
	id=$(flux job id $jobid) &&
	pam_wait_users 1 "1000:$id" &&
	pam_rpc --rank 1 --time t.prolog pam.prolog "{\"id\": $id}" >prolog &&
	jq -e ".result == \"skipped\" and .uid == 1000" prolog &&
	test $(cat t.prolog) -lt 5000
'
test_expect_success 'pam.check refuses uid 1000 with the message, the log reason names the key' '
	pam_rpc --rank 1 pam.check "{\"uid\": 1000}" >check &&
	jq -e ".admitted == false and .jobs == [] and .njobs == 0" check &&
	test "$(jq -r .message check)" = "$MESSAGE" &&
	jq -r .reason check | grep "pam.kill-slice-grace-time"
'
test_expect_success 'pam.check answers a user without jobs as usual, without a message' '
	pam_rpc --rank 1 pam.check "{\"uid\": 1001}" >check.nojob &&
	jq -e ".admitted == false and (has(\"message\") | not)" check.nojob
'
test_expect_success 'pam.attach does not attach a scope of uid 1000, with the message' '
	pam_rpc --rank 1 pam.attach "{\"uid\": 1000, \"scope\": \"flux-pam-9.scope\"}" >attach &&
	jq -e ".attached == false" attach &&
	test "$(jq -r .message attach)" = "$MESSAGE" &&
	test_must_fail pam_rpc --rank 1 pam.attach \
		"{\"uid\": 1001, \"scope\": \"flux-pam-9.scope\"}" 2>attach.nojob &&
	grep EPERM attach.nojob
'
test_expect_success 'the job ends normally, housekeeping is answered, nothing drains' '
	flux cancel $jobid &&
	flux job wait-event -t 30 $jobid clean &&
	pam_wait_users 1 "" &&
	pam_rpc --rank 1 pam.housekeeping "{\"id\": $id}" >hk &&
	jq -e ".result == \"skipped\"" hk &&
	test -z "$(flux resource status -s drain -no {ranks})"
'
test_expect_success 'a reload with another bad value is vetoed, naming file and key' '
	sed -i "s/\"abc\"/\"-1s\"/" "$CONF" &&
	test_must_fail flux config reload 2>reload.err &&
	grep "$CONF: pam.kill-slice-grace-time" reload.err &&
	pam_status 0 | jq -e ".closed != null"
'
test_expect_success 'a valid reload reopens every rank without a restart' '
	jobid2=$(pam_submit 1000 -n1 --requires=rank:1 sleep inf) &&
	flux job wait-event -t 30 $jobid2 start &&
	id2=$(flux job id $jobid2) &&
	pam_wait_users 1 "1000:$id2" &&
	sed -i "s/\"-1s\"/\"5s\"/" "$CONF" &&
	flux config reload &&
	pam_status 0 | jq -e ".closed == null" &&
	pam_status 1 | jq -e ".closed == null and .config.pam.\"kill-slice-grace-time\" == \"5s\"" &&
	flux exec -r 1 flux dmesg | grep "pam.warning\[1\]: configuration valid again"
'
test_expect_success 'uid 1000 is admitted again, with no message' '
	pam_rpc --rank 1 pam.check "{\"uid\": 1000}" >check.open &&
	jq -e ".admitted == true and .njobs == 1 and (has(\"message\") | not)" check.open
'
test_expect_success 'pam.status shows job IDs as integers and in F58' '
	plain=$(flux job id --to=f58plain $jobid2) &&
	pam_status 1 | jq -e --arg f58 "ƒ${plain#f}" --argjson id $id2 \
		".users[0].jobs[0] | .id == \$id and .f58 == \$f58"
'
test_expect_success 'cleanup: the job ends' '
	flux cancel $jobid2 &&
	flux job wait-event -t 30 $jobid2 clean &&
	pam_wait_users 1 ""
'
test_done

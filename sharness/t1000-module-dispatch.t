#!/bin/bash

test_description='pam module: job dispatch to the ranks of a job, admission, status, config

Runs without systemd: manage-user-slice is off, so the module tracks jobs and
answers admission questions but changes no slice.  The jobs are those of
uids 1000 and 1001, submitted as them (pam_submit).'

. "$(dirname "$0")"/lib/init.sh

flux_pam_require_flux

cat >"$(flux_pam_confdir)"/pam.toml <<EOF
[pam]
manage-user-slice = false

[job-manager]
plugins = [ { load = "perilog.so" } ]

[job-manager.prolog]
per-rank = true
command = [ "$SHARNESS_TEST_SRCDIR/lib/test-prolog.sh" ]

[job-manager.housekeeping]
command = [ "$SHARNESS_TEST_SRCDIR/lib/test-housekeeping.sh" ]
release-after = "0"
EOF

test_under_flux_pam 4

ranks_with_user() {
	local uid=$1 r out=""
	for r in 0 1 2 3; do
		pam_status $r | jq -e ".users[] | select(.uid == $uid)" >/dev/null \
			&& out="$out${out:+ }$r"
	done
	echo "$out"
}

test_expect_success 'the pam module is loaded on every rank by modprobe' '
	flux exec -r all flux module list >modlist &&
	test $(grep -c "^pam " modlist) -eq 4
'
test_expect_success 'the module sees the other brokers on its node' '
	pam_status 0 | jq -e ".shared_node == true and .synced == true"
'
test_expect_success 'a job spanning ranks 0-1 reaches exactly those ranks' '
	jobid=$(pam_submit 1000 -N2 -n2 --requires=rank:0-1 sleep inf) &&
	flux job wait-event -t 30 $jobid start &&
	id=$(flux job id $jobid) &&
	pam_wait_users 0 "1000:$id" &&
	pam_wait_users 1 "1000:$id" &&
	test -z "$(pam_users 2)" && test -z "$(pam_users 3)" &&
	test "$(ranks_with_user 1000)" = "0 1"
'
test_expect_success 'each rank holds only its local cores of the job' '
	pam_status 1 | jq -e ".users[0].union.core == \"0\" and .users[0].jobs[0].running"
'
test_expect_success 'pam.check admits the user on the job ranks only' '
	pam_rpc --rank 1 pam.check "{\"uid\": 1000}" >check1 &&
	jq -e ".admitted == true and .jobs == [$id] and .uid == 1000" check1 &&
	jq -e ".manage_user_slice == false" check1 &&
	pam_rpc --rank 2 pam.check "{\"uid\": 1000}" >check2 &&
	jq -e ".admitted == false and .jobs == []" check2 &&
	jq -r .reason check2 | grep "no running job on rank 2"
'
test_expect_success 'pam.check max_jobs lists the first started jobs, njobs counts all' '
	jobid2=$(pam_submit 1000 --requires=rank:1 sleep inf) &&
	flux job wait-event -t 30 $jobid2 start &&
	id2=$(flux job id $jobid2) &&
	pam_wait_users 1 "1000:$(printf "%s\n" $id $id2 | sort -n | paste -sd,)" &&
	pam_rpc --rank 1 pam.check "{\"uid\": 1000, \"max_jobs\": 1}" >checkm &&
	jq -e ".admitted == true and .jobs == [$id] and .njobs == 2" checkm &&
	pam_rpc --rank 1 pam.check "{\"uid\": 1000}" >checka &&
	jq -e ".jobs == [$id,$id2] and .njobs == 2" checka &&
	test_must_fail pam_rpc --rank 1 pam.check \
		"{\"uid\": 1000, \"max_jobs\": -1}" 2>em &&
	grep "EPROTO: pam.check: max_jobs is missing or not an integer" em &&
	flux cancel $jobid2 &&
	pam_wait_users 1 "1000:$id"
'
test_expect_success 'pam.attach confirms a scope for an active user only' '
	pam_rpc --rank 0 pam.attach \
		"{\"uid\": 1000, \"scope\": \"flux-pam-42.scope\"}" >attach &&
	jq -e ".attached == true" attach &&
	test_must_fail pam_rpc --rank 2 pam.attach \
		"{\"uid\": 1000, \"scope\": \"flux-pam-43.scope\"}" 2>attach.err &&
	grep "EPERM: user 1000 has no active job on rank 2" attach.err
'
test_expect_success 'a second user on other ranks is tracked separately' '
	jobid2=$(pam_submit 1001 -N2 -n2 --requires=rank:2-3 sleep inf) &&
	flux job wait-event -t 30 $jobid2 start &&
	id2=$(flux job id $jobid2) &&
	pam_wait_users 2 "1001:$id2" &&
	pam_wait_users 3 "1001:$id2" &&
	test "$(ranks_with_user 1001)" = "2 3"
'
test_expect_success 'the instance owner is never managed' '
	jobO=$(flux submit -n1 --requires=rank:3 sleep inf) &&
	flux job wait-event -t 30 $jobO start &&
	idO=$(flux job id $jobO) &&
	pam_rpc --rank 3 pam.prolog "{\"id\": $idO}" >prologO &&
	jq -e ".result == \"skipped\" and .uid == $(id -u)" prologO &&
	pam_users 3 >usersO &&
	test "$(cat usersO)" = "1001:$id2" &&
	pam_rpc --rank 3 pam.check "{\"uid\": $(id -u)}" >checkO &&
	jq -e ".admitted == false" checkO &&
	jq -r .reason checkO | grep "instance owner" &&
	flux cancel $jobO &&
	flux job wait-event -t 30 $jobO clean
'
test_expect_success 'owner sees every user; a guest sees only itself' '
	pam_status 0 | jq -e "[.users[].uid] == [1000]" &&
	pam_status 2 | jq -e "[.users[].uid] == [1001]" &&
	FLUX_HANDLE_ROLEMASK=0x2 FLUX_HANDLE_USERID=1001 \
		pam_status 2 >guest2 &&
	jq -e "[.users[].uid] == [1001] and .config.pam" guest2 &&
	FLUX_HANDLE_ROLEMASK=0x2 FLUX_HANDLE_USERID=1001 \
		pam_status 0 >guest0 &&
	jq -e ".users == []" guest0 &&
	FLUX_HANDLE_ROLEMASK=0x2 FLUX_HANDLE_USERID=1001 \
		pam_status 3 "{\"uid\": 1000}" | jq -e ".users == []" &&
	pam_status 3 "{\"uid\": 1001}" | jq -e "[.users[].uid] == [1001]"
'
test_expect_success 'a guest may not use the admission RPCs' '
	FLUX_HANDLE_ROLEMASK=0x2 FLUX_HANDLE_USERID=1001 \
		test_must_fail pam_rpc --rank 0 pam.check "{\"uid\": 1000}" \
		2>guest.err &&
	grep EPERM guest.err
'
test_expect_success 'pam.leftovers-removed: counted in pam.status; guests and bad counts refused' '
	pam_rpc --rank 2 pam.leftovers-removed \
		"{\"uid\": 1000, \"removed\": {\"shm\": 2, \"sem\": 0}}" &&
	pam_status 2 | jq -e ".leftovers_removed == {\"shm\": 2}" &&
	FLUX_HANDLE_ROLEMASK=0x2 FLUX_HANDLE_USERID=1001 \
		test_must_fail pam_rpc --rank 2 pam.leftovers-removed \
		"{\"uid\": 1001, \"removed\": {}}" 2>lr.guest &&
	grep EPERM lr.guest &&
	test_must_fail pam_rpc --rank 2 pam.leftovers-removed \
		"{\"uid\": 1000, \"removed\": {\"shm\": \"2\"}}" 2>lr.bad &&
	grep "EPROTO: pam.leftovers-removed: removed is missing or not an object of counts" lr.bad
'
test_expect_success 'root as a guest may use them (pam_flux runs as root)' '
	FLUX_HANDLE_ROLEMASK=0x2 FLUX_HANDLE_USERID=0 \
		pam_rpc --rank 0 pam.check "{\"uid\": 1000}" >root.out &&
	jq -e ".admitted == true" root.out
'
test_expect_success 'bad payloads get EPROTO naming the field' '
	test_must_fail pam_rpc --rank 0 pam.check "{\"uid\": \"alice\"}" 2>e1 &&
	grep "EPROTO: pam.check: uid is missing or not an integer" e1 &&
	test_must_fail pam_rpc --rank 0 pam.attach "{\"uid\": 1000}" 2>e2 &&
	grep "EPROTO: pam.attach: scope" e2 &&
	test_must_fail pam_rpc --rank 0 pam.status "[1]" 2>e3 &&
	grep "EPROTO" e3 &&
	test_must_fail pam_rpc --rank 1 pam.job-start "{\"id\": 1, \"userid\": 5}" \
		2>e4 &&
	grep "EPROTO: pam.job-start: R " e4
'
test_expect_success 'cancel: job-cleanup stops admission at once, then job-end' '
	flux cancel $jobid &&
	flux job wait-event -t 30 $jobid clean &&
	pam_wait_users 0 "" && pam_wait_users 1 "" &&
	pam_rpc --rank 0 pam.check "{\"uid\": 1000}" | jq -e ".admitted == false"
'
test_expect_success 'a job cancelled in SCHED sends no message to any rank' '
	before=$(pam_rpc --rank 0 pam.stats-get | jq ".\"messages-sent\"") &&
	flux queue stop &&
	jobid3=$(pam_submit 1000 -N1 sleep inf) &&
	flux job wait-event -t 30 $jobid3 priority &&
	flux cancel $jobid3 &&
	flux job wait-event -t 30 $jobid3 clean &&
	flux queue start &&
	after=$(pam_rpc --rank 0 pam.stats-get | jq ".\"messages-sent\"") &&
	test "$before" = "$after" &&
	test -z "$(ranks_with_user 1000 | grep -v "^$")"
'
test_expect_success 'a job whose prolog fails is started, cleaned up and ended' '
	before=$(pam_rpc --rank 0 pam.stats-get | jq ".\"jobs-started\"") &&
	jobid4=$(pam_submit 1000 -N1 --requires=rank:0 \
		--setattr=system.test-fail-prolog=1 true) &&
	flux job wait-event -t 30 $jobid4 clean &&
	flux job eventlog $jobid4 | grep "exception.*prolog" &&
	after=$(pam_rpc --rank 0 pam.stats-get | jq ".\"jobs-started\"") &&
	test $after -eq $((before + 1)) &&
	pam_wait_users 0 "" &&
	flux resource undrain 0
'
test_expect_success 'partial release: each rank ends the job at release, housekeeping or not' '
	jobP=$(pam_submit 1001 -N2 -n2 --requires=rank:0-1 \
		--setattr=system.test-slow-housekeeping=1 true) &&
	flux job wait-event -t 30 $jobP clean &&
	idP=$(flux job id $jobP) &&
	pam_wait_users 0 "" 5 && pam_wait_users 1 "" 5 &&
	flux module stats job-manager | jq -e ".housekeeping.running | length == 1" &&
	pam_rpc --rank 1 pam.housekeeping "{\"id\": $idP}" >hkP &&
	jq -e ".result == \"skipped\" and .uid == 1001" hkP
'
test_expect_success 'partial release: rank 0 is reused while rank 1 still housekeeps' '
	jobQ=$(pam_submit 1000 -n1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $jobQ start &&
	pam_wait_users 0 "1000:$(flux job id $jobQ)" &&
	flux module stats job-manager | jq -e ".housekeeping.running | length == 1" &&
	flux cancel $jobQ &&
	flux job wait-event -t 30 $jobQ clean &&
	pam_wait_users 0 ""
'
test_expect_success 'pam.prolog answers skipped while manage-user-slice is off' '
	jobid5=$(pam_submit 1000 -N1 --requires=rank:1 sleep inf) &&
	flux job wait-event -t 30 $jobid5 start &&
	id5=$(flux job id $jobid5) &&
	pam_rpc --rank 1 pam.prolog "{\"id\": $id5}" >prolog.out &&
	jq -e ".result == \"skipped\" and .uid == 1000 and .id == $id5" prolog.out
'
test_expect_success 'module reload on every rank rebuilds the same state' '
	for r in 0 1 2 3; do pam_users $r; done >users.before &&
	flux exec -r all flux module reload pam &&
	for r in 0 1 2 3; do pam_wait_users $r "$(sed -n "$((r+1))p" users.before)"; done &&
	pam_rpc --rank 1 pam.check "{\"uid\": 1000}" | jq -e ".admitted == true"
'
test_expect_success 'reloading rank 1 alone resyncs it from rank 0' '
	flux exec -r 1 flux module reload pam &&
	pam_wait_users 1 "1000:$id5"
'
test_expect_success 'config-reload with a bad key is vetoed, naming the key' '
	cp $FLUX_PAM_CONFDIR/pam.toml pam.toml.good &&
	sed -i "s/^manage-user-slice = false/manage-user-slice = \"yes\"/" \
		$FLUX_PAM_CONFDIR/pam.toml &&
	test_must_fail flux config reload 2>reload.err &&
	grep "pam.manage-user-slice" reload.err &&
	pam_status 0 | jq -e ".config.pam.\"manage-user-slice\" == false" &&
	cp pam.toml.good $FLUX_PAM_CONFDIR/pam.toml
'
test_expect_success 'an unknown [pam] key is vetoed too' '
	printf "[pam]\nmanage-user-slices = true\n" >$FLUX_PAM_CONFDIR/zz.toml &&
	test_must_fail flux config reload 2>reload2.err &&
	grep "pam.manage-user-slices: unknown key" reload2.err &&
	rm $FLUX_PAM_CONFDIR/zz.toml
'
test_expect_success 'a valid config-reload is applied' '
	sed -i "s/^manage-user-slice = false/debug = true\nmanage-user-slice = false/" \
		$FLUX_PAM_CONFDIR/pam.toml &&
	flux config reload &&
	pam_status 3 | jq -e ".config.pam.debug == true"
'
test_expect_success 'debug logs one line per action' '
	jobid6=$(pam_submit 1001 -n1 --requires=rank:2 true) &&
	flux job wait-event -t 30 $jobid6 clean &&
	id6=$(flux job id $jobid6) &&
	pam_wait_users 2 "1001:$id2" &&
	flux exec -r 2 flux dmesg >dmesg2 &&
	plain=$(flux job id --to=f58plain $jobid6) &&
	f58=ƒ${plain#f} &&
	grep "pam.debug\[2\]: job $f58: start uid 1001" dmesg2 &&
	grep "pam.debug\[2\]: job $f58: end uid 1001" dmesg2
'
test_expect_success 'flux module stats pam shows counters' '
	flux exec -r 2 flux module stats pam >stats.out &&
	jq -e ".\"jobs-started\" >= 1 and .\"jobs-ended\" >= 1 and .synced" stats.out &&
	flux module stats pam | jq -e ".\"journal-events\" > 0 and .\"dispatcher-jobs\" >= 1"
'
test_expect_success 'remaining jobs end and leave every rank empty' '
	flux cancel --all --user=all &&
	flux job wait-event -t 30 $jobid2 clean &&
	flux job wait-event -t 30 $jobid5 clean &&
	for r in 0 1 2 3; do pam_wait_users $r "" || return 1; done
'
test_expect_success 'no error was logged by the module on any rank' '
	flux exec -r all flux dmesg >dmesg.all &&
	grep "pam\.debug" dmesg.all &&
	test_must_fail grep "pam\.\(err\|crit\|alert\|emerg\)" dmesg.all
'
test_done

#!/bin/bash

test_description='pam module: user slices in the systemd test bed

All four brokers of the test instance share the one systemd of the test bed,
so a user slice is shared by the ranks too.  The tests keep each user on one
rank, except for a symmetric job spanning two ranks (the same local cores on
each, so both ranks ask for the same properties and end together).  A
restarted module only scans for slices marked with its own rank, as it does
wherever several brokers share a node.  The instance reaches the bus through a proxy
(lib/busproxy.py) that the tests stop to make systemd unreachable.'

. "$(dirname "$0")"/lib/init.sh

flux_pam_require_flux
flux_pam_require_testbed

cat >"$(flux_pam_confdir)"/pam.toml <<EOF
[pam]
manage-user-slice = true
kill-user-slice = true
kill-slice-grace-time = "2s"
debug = true

[exec]
sdexec-constrain-resources = true
EOF

flux_pam_use_busproxy || {
	skip_all="cannot start the D-Bus proxy"
	test_done
}
test_under_flux_pam 4

prop() { testbed_unit_property "$@"; }

test_expect_success 'setup: the test bed has no leftover slices of 1000, 1001' '
	for u in 1000 1001; do
		systemctl -M $FLUX_PAM_TESTBED stop user@$u.service user-$u.slice || :
		systemctl -M $FLUX_PAM_TESTBED reset-failed user@$u.service 2>/dev/null || :
	done &&
	test "$(prop user@1000.service ActiveState)" = inactive
'
test_expect_success 'sdexec-mapper is loaded on every rank with the module' '
	flux exec -r all flux module list >modlist &&
	test $(grep -c "^sdexec-mapper " modlist) -eq 4 &&
	test $(grep -c "^pam " modlist) -eq 4
'
test_expect_success 'systemd is reachable from every rank' '
	for r in 0 1 2 3; do
		pam_status $r | jq -e ".systemd == \"ok\"" || return 1
	done
'
test_expect_success 'first job of 1000 on rank 0: slice constrained, user@ started' '
	jobA=$(pam_submit 1000 -N1 -n1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $jobA start &&
	idA=$(flux job id $jobA) &&
	pam_rpc --rank 0 pam.prolog "{\"id\": $idA}" >prologA &&
	jq -e ".result == \"applied\" and .uid == 1000" prologA &&
	coreA=$(pam_status 0 | jq -r ".users[0].union.core") &&
	test "$(prop user-1000.slice AllowedCPUs)" = "$coreA" &&
	test "$(prop user-1000.slice DevicePolicy)" = closed &&
	test "$(prop user@1000.service ActiveState)" = active &&
	prop user-1000.slice Description | grep "^flux-pam: .* rank 0"
'
test_expect_success 'pam.attach refuses a user without a job' '
	test_must_fail pam_rpc --rank 0 pam.attach \
		"{\"uid\": 1001, \"scope\": \"flux-pam-8.scope\"}" 2>att.err &&
	grep "EPERM: user 1001 has no active job on rank 0" att.err
'
test_expect_success CPUSET 'cpuset: the kernel enforces the union, pam.attach confirms' '
	pam_rpc --rank 0 pam.attach "{\"uid\": 1000, \"scope\": \"flux-pam-7.scope\"}" |
		jq -e ".attached == true" &&
	pam_status 0 >enf &&
	jq -e ".users[0].enforcement.state == \"enforced\"" enf &&
	jq -e ".enforcement.state == \"enforced\" and .enforcement.uid == 1000" enf &&
	cpus=$(prop user-1000.slice AllowedCPUs) &&
	cg=$FLUX_PAM_TESTBED_CGROUP/user.slice/user-1000.slice &&
	test "$(cat $cg/cpuset.cpus.effective)" = "$cpus" &&
	test "$(jq -r .users[0].enforcement.effective.cpus enf)" = "$cpus"
'
UNENFORCED="Access denied: CPU and memory node confinement is not enforced on this node; ask your administrator"
test_expect_success !CPUSET 'no cpuset: pam.attach, pam.check and pam.prolog refuse with the message' '
	pam_rpc --rank 0 pam.attach "{\"uid\": 1000, \"scope\": \"flux-pam-7.scope\"}" >att &&
	jq -e --arg m "$UNENFORCED" ".attached == false and .message == \$m" att &&
	pam_rpc --rank 0 pam.check "{\"uid\": 1000}" >chk &&
	jq -e --arg m "$UNENFORCED" \
		".admitted == false and .jobs == [] and .njobs == 0 and .message == \$m" chk &&
	jq -r .reason chk | grep "cpuset controller is not enabled" &&
	pam_rpc --rank 0 pam.prolog "{\"id\": $idA}" >prologA2 &&
	jq -e --arg m "$UNENFORCED" ".result == \"applied\" and .message == \$m" prologA2
'
test_expect_success !CPUSET 'no cpuset: status says what is not enforced and why' '
	pam_status 0 >enf &&
	jq -e ".users[0].enforcement.state == \"not-enforced\"" enf &&
	jq -e ".users[0].enforcement.missing == [\"CPU\", \"memory node\"]" enf &&
	jq -e ".users[0].admitted == false" enf &&
	jq -e ".enforcement.state == \"not-enforced\" and .enforcement.uid == 1000" enf &&
	jq -r ".users[0].enforcement.reasons[0]" enf |
		grep "CPU: the cpuset controller is not enabled for the slice"
'
test_expect_success !CPUSET 'allow-unconfined-logins admits her unconfined; status marks her' '
	sed -i "/^\[pam\]/a allow-unconfined-logins = true" $FLUX_PAM_CONFDIR/pam.toml &&
	flux config reload &&
	pam_wait_idle 0 &&
	pam_rpc --rank 0 pam.attach "{\"uid\": 1000, \"scope\": \"flux-pam-7.scope\"}" |
		jq -e ".attached == true" &&
	pam_rpc --rank 0 pam.check "{\"uid\": 1000}" >chk &&
	jq -e ".admitted == true and .message == null" chk &&
	jq -r .reason chk | grep "unconfined: pam.allow-unconfined-logins" &&
	pam_status 0 | jq -e ".users[0].enforcement.state == \"unconfined\"" &&
	sed -i "/^allow-unconfined-logins/d" $FLUX_PAM_CONFDIR/pam.toml &&
	flux config reload &&
	pam_wait_idle 0 &&
	pam_rpc --rank 0 pam.check "{\"uid\": 1000}" | jq -e ".admitted == false"
'
test_expect_success 'status shows the slice, the last action and no error' '
	pam_status 0 >st &&
	jq -e ".users[0].slice.service_state == \"active\"" st &&
	jq -e ".users[0].last_action.result == \"ok\"" st &&
	jq -e ".users[0].errors == [] and .pending == 0" st
'
test_expect_success 'a second job of 1000 grows the union' '
	jobB=$(pam_submit 1000 -N1 -n1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $jobB start &&
	idB=$(flux job id $jobB) &&
	pam_rpc --rank 0 pam.prolog "{\"id\": $idB}" | jq -e ".result == \"applied\"" &&
	test "$(prop user-1000.slice AllowedCPUs)" = "0-1"
'
test_expect_success !CPUSET 'no cpuset: the refusal was logged once, not per login or operation' '
	flux dmesg | grep "confinement is not enforced on rank 0" >refusals &&
	cat refusals &&
	test $(grep -c "logins of job users are refused" refusals) -eq 1
'
test_expect_success 'module reload mid-jobs: same state, no teardown, no repair' '
	inv=$(prop user@1000.service InvocationID) &&
	flux exec -r all flux dmesg -C &&
	flux exec -r all flux module reload pam &&
	pam_wait_users 0 "1000:$(echo $idA $idB | tr " " "\n" | sort -n | paste -sd,)" &&
	pam_wait_idle "0 1 2 3" &&
	test "$(prop user@1000.service InvocationID)" = "$inv" &&
	test "$(prop user-1000.slice AllowedCPUs)" = "0-1" &&
	test_must_fail sh -c "flux exec -r all flux dmesg | grep -E \"repair|teardown\""
'
test_expect_success 'the first job ends: the union shrinks, housekeeping confirms' '
	flux cancel $jobA &&
	flux job wait-event -t 30 $jobA clean &&
	pam_rpc --rank 0 pam.housekeeping "{\"id\": $idA}" >hkA &&
	jq -e ".result == \"applied\"" hkA &&
	test "$(prop user-1000.slice AllowedCPUs)" = \
		"$(pam_status 0 | jq -r .users[0].union.core)" &&
	test "$(prop user@1000.service ActiveState)" = active
'
test_expect_success 'drift is repaired on reload and the repair is logged' '
	systemctl -M $FLUX_PAM_TESTBED set-property --runtime user-1000.slice \
		AllowedCPUs= &&
	test -z "$(prop user-1000.slice AllowedCPUs)" &&
	flux dmesg -C &&
	flux exec -r 0 flux module reload pam &&
	pam_wait_idle 0 &&
	flux dmesg | grep "repair: user-1000.slice: AllowedCPUs" &&
	test -n "$(prop user-1000.slice AllowedCPUs)"
'
test_expect_success 'the last job ends: teardown stops user@ and reverts the slice' '
	flux cancel $jobB &&
	flux job wait-event -t 30 $jobB clean &&
	pam_rpc --rank 0 pam.housekeeping "{\"id\": $idB}" >hkB &&
	jq -e ".result == \"torn-down\"" hkB &&
	test "$(prop user@1000.service ActiveState)" = inactive &&
	test -z "$(prop user-1000.slice AllowedCPUs)" &&
	test "$(prop user-1000.slice DevicePolicy)" = auto &&
	test "$(prop user-1000.slice Description)" = "User Slice of UID 1000" &&
	pam_wait_users 0 ""
'
test_expect_success 'kill-user-slice kills a SIGTERM-ignoring process left in the slice' '
	jobC=$(pam_submit 1000 -N1 -n1 --requires=rank:0 sleep inf) &&
	flux job wait-event -t 30 $jobC start &&
	pam_wait_idle 0 &&
	systemd-run -M $FLUX_PAM_TESTBED --slice=user-1000.slice --collect \
		--unit=flux-pam-test-left-$$ --quiet \
		sh -c "trap \"\" TERM; while :; do sleep 1; done" &&
	test "$(testbed_unit_tasks user-1000.slice)" -ge 1 &&
	flux cancel $jobC &&
	flux job wait-event -t 30 $jobC clean &&
	pam_wait_users 0 "" &&
	pam_wait_idle 0 30 &&
	test "$(testbed_unit_tasks user-1000.slice)" -eq 0 &&
	flux dmesg | grep "user-1000.slice: .*SIGKILL" &&
	test "$(pam_rpc --rank 0 pam.stats-get | jq .drains)" = 0
'
test_expect_success 'a job spanning ranks 2-3 constrains the slice from both ranks' '
	jobD=$(pam_submit 1001 -N2 -n2 --requires=rank:2-3 sleep inf) &&
	flux job wait-event -t 30 $jobD start &&
	pam_wait_idle "2 3" &&
	pam_status 2 | jq -e ".users[0].slice.service_state == \"active\"" &&
	pam_status 3 | jq -e ".users[0].uid == 1001" &&
	test "$(prop user-1001.slice AllowedCPUs)" = \
		"$(pam_status 2 | jq -r .users[0].union.core)"
'
test_expect_success 'systemd unreachable: errors in status, admission unaffected' '
	busproxy_stop &&
	jobE=$(pam_submit 1000 -N1 -n1 --requires=rank:1 sleep inf) &&
	flux job wait-event -t 30 $jobE start &&
	idE=$(flux job id $jobE) &&
	pam_rpc --rank 1 pam.check "{\"uid\": 1000}" | jq -e ".admitted == true and .manage_user_slice == true" &&
	i=0 && while ! pam_status 1 | jq -e ".users[0].errors != []" >/dev/null; do
		i=$((i+1)) && test $i -lt 100 && sleep 0.1 || return 1
	done &&
	pam_status 1 >down &&
	jq -e ".systemd != \"ok\" and .pending >= 1" down &&
	jq -r ".users[0].errors[0]" down | grep "uid 1000: prepare" &&
	test_must_fail pam_rpc --rank 1 pam.prolog "{\"id\": $idE}" 2>prologE &&
	grep "user 1000" prologE &&
	test_must_fail pam_rpc --rank 1 pam.attach \
		"{\"uid\": 1000, \"scope\": \"flux-pam-9.scope\"}" 2>attE &&
	grep "EAGAIN: user-1000.slice: uid 1000: prepare" attE
'
test_expect_success 'a job ending while systemd is unreachable is not lost' '
	flux cancel $jobD &&
	flux job wait-event -t 30 $jobD clean &&
	pam_wait_users 2 "" && pam_wait_users 3 ""
'
test_expect_success 'systemd returns: every pending operation completes' '
	busproxy_start &&
	pam_wait_idle "1 2 3" 60 &&
	pam_status 1 | jq -e ".systemd == \"ok\" and .users[0].errors == []" &&
	test "$(prop user@1000.service ActiveState)" = active &&
	test "$(prop user-1000.slice AllowedCPUs)" = \
		"$(pam_status 1 | jq -r .users[0].union.core)" &&
	test "$(prop user@1001.service ActiveState)" = inactive &&
	test -z "$(prop user-1001.slice AllowedCPUs)"
'
test_expect_success 'systemd not answering: pam.status and pam.check still answer at once' '
	busproxy_pause &&
	jobG=$(pam_submit 1001 -N1 -n1 --requires=rank:2 sleep inf) &&
	flux job wait-event -t 30 $jobG start &&
	idG=$(flux job id $jobG) &&
	pam_wait_users 2 "1001:$idG" &&
	pam_rpc --rank 2 --time t.status pam.status >slow &&
	pam_rpc --rank 2 --time t.check pam.check "{\"uid\": 1001}" >check &&
	jq -e ".admitted == true" check &&
	echo "status answered in $(cat t.status) ms, check in $(cat t.check) ms" &&
	test $(cat t.status) -lt 1000 && test $(cat t.check) -lt 1000 &&
	jq -e ".pending == 1 and .users[0].pending" slow
'
test_expect_success 'systemd answers again: the operation completes' '
	busproxy_resume &&
	pam_wait_idle 2 60 &&
	test "$(prop user@1001.service ActiveState)" = active &&
	test "$(prop user-1001.slice AllowedCPUs)" = \
		"$(pam_status 2 | jq -r .users[0].union.core)" &&
	flux cancel $jobG &&
	flux job wait-event -t 30 $jobG clean &&
	pam_wait_users 2 "" &&
	pam_wait_idle 2 60 &&
	test "$(prop user@1001.service ActiveState)" = inactive
'
test_expect_success 'manage-user-slice off: new users untouched, old slices end with jobs' '
	sed -i "s/^manage-user-slice = true/manage-user-slice = false/" \
		$FLUX_PAM_CONFDIR/pam.toml &&
	flux config reload &&
	jobF=$(pam_submit 1001 -N1 -n1 --requires=rank:3 sleep inf) &&
	flux job wait-event -t 30 $jobF start &&
	idF=$(flux job id $jobF) &&
	pam_rpc --rank 3 pam.prolog "{\"id\": $idF}" | jq -e ".result == \"skipped\"" &&
	test "$(prop user@1001.service ActiveState)" = inactive &&
	test "$(prop user@1000.service ActiveState)" = active &&
	flux cancel $jobE &&
	flux job wait-event -t 30 $jobE clean &&
	pam_wait_idle 1 &&
	test "$(prop user@1000.service ActiveState)" = inactive &&
	flux cancel $jobF &&
	flux job wait-event -t 30 $jobF clean &&
	sed -i "s/^manage-user-slice = false/manage-user-slice = true/" \
		$FLUX_PAM_CONFDIR/pam.toml &&
	flux config reload
'
test_expect_success 'a marked slice of a user without a job is torn down on reload' '
	systemctl -M $FLUX_PAM_TESTBED start user@1001.service &&
	systemctl -M $FLUX_PAM_TESTBED set-property --runtime user-1001.slice \
		"Description=flux-pam: user-1001.slice managed by rank 2" \
		AllowedCPUs=0 &&
	flux exec -r 2 flux module reload pam &&
	pam_wait_idle 2 &&
	flux exec -r 2 flux dmesg | grep "repair: uid 1001 has no job on rank 2" &&
	test "$(prop user@1001.service ActiveState)" = inactive &&
	test -z "$(prop user-1001.slice AllowedCPUs)"
'
test_expect_success 'other ranks leave a slice marked by another rank alone' '
	systemctl -M $FLUX_PAM_TESTBED set-property --runtime user-1001.slice \
		"Description=flux-pam: user-1001.slice managed by rank 2" &&
	flux exec -r 3 flux module reload pam &&
	pam_wait_idle 3 &&
	prop user-1001.slice Description | grep "rank 2" &&
	systemctl -M $FLUX_PAM_TESTBED set-property --runtime user-1001.slice \
		"Description=User Slice of UID 1001"
'
test_expect_success 'no job left: every rank empty, no slice populated' '
	for r in 0 1 2 3; do pam_wait_users $r "" || return 1; done &&
	pam_wait_idle "0 1 2 3" &&
	test "$(testbed_unit_tasks user-1000.slice)" -eq 0 &&
	test "$(testbed_unit_tasks user-1001.slice)" -eq 0
'
test_done

#!/bin/bash

test_description='node replica: flux pam status counts live logins; job IDs in F58 (issue 14, item 3)

alice has a job and two logins that stay.  flux pam status reads the
scopes and processes of her slice when asked: SCOPES is 2, as flux pam
slice show and the kernel (the slice'"'"'s cgroups) say; the JSON lists exactly
the two live scopes, and after one login ends, only the other.  Job IDs are
F58 in human output, F58 and integer in the JSON.  Status shows where each
login is held (scope, slice, the CPUs its cgroup has); a login gets
FLUX_JOB_ID for one job, FLUX_JOB_IDS for two, and FLUX_URI (issue 18).'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

# scopes_in_kernel UID: the scopes with processes in user-UID.slice (cgroupfs,
# whose files all have size 0: read them)
scopes_in_kernel() {
	node_sh "cd /sys/fs/cgroup/user.slice/user-$1.slice && for d in *.scope; do
		grep -q . \$d/cgroup.procs 2>/dev/null && echo \$d; done; :" | sort
}

# status_column NAME: the column NAME of alice's row of flux pam status
status_column() {
	node_flux pam status alice | awk -v col="$1" '
		NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
		$2 == "alice" { print $c }'
}

# F58 job IDs as pam_flux sets them in a login: with an ASCII "f"
ascii_f58() {
	sed "s/^ƒ/f/"
}

test_expect_success 'the replica boots' '
	node_up
'
test_expect_success 'alice has a job and two logins that stay' '
	id=$(node_submit alice -n1 sleep inf) &&
	echo $id >st.job &&
	node_job_started $id &&
	node_session_start st1 &&
	node_session_start st2 &&
	scopes_in_kernel 1000 >kernel.2 &&
	cat kernel.2 &&
	test $(wc -l <kernel.2) -eq 2
'
test_expect_success 'flux pam status shows SCOPES 2' '
	node_flux pam status >status.2 &&
	cat status.2 &&
	test "$(status_column SCOPES)" = 2
'
test_expect_success 'flux pam slice show lists the same 2 scopes' '
	node_flux pam slice show --json alice >show.2 &&
	jq -r ".systemd.scopes[]" show.2 | sort >show.scopes &&
	test_cmp kernel.2 show.scopes
'
test_expect_success 'the JSON lists exactly the live scopes, with process counts' '
	node_flux pam status --json >status.json &&
	jq -r ".[0].users[] | select(.uid == 1000) | .scopes[]" status.json | sort >json.scopes &&
	test_cmp kernel.2 json.scopes &&
	jq -e ".[0].live == \"ok\" and (.[0].users[0].slice.processes >= 2)" status.json
'
test_expect_success 'flux pam status shows where each login is held' '
	node_flux pam status alice >held.txt &&
	cat held.txt &&
	grep -o "login flux-pam-[0-9]*\.scope in user-1000\.slice" held.txt |
		sed "s/^login //; s/ in .*//" | sort >held.scopes &&
	test_cmp kernel.2 held.scopes &&
	node_flux pam status --json >held.json &&
	jq -r ".[0].users[] | select(.uid == 1000) | .logins[].scope" held.json |
		sort >held.json.scopes &&
	test_cmp kernel.2 held.json.scopes
'
test_expect_success CPUSET 'the CPUs shown for each login are those its cgroup has' '
	for scope in $(cat kernel.2); do
		have=$(node_sh "cat /sys/fs/cgroup/user.slice/user-1000.slice/$scope/cpuset.cpus.effective") &&
		jq -e --arg s $scope --arg c "$have" ".[0].users[] | select(.uid == 1000) |
			.logins[] | select(.scope == \$s) | .cpus == \$c" held.json || return 1
	done &&
	grep "CPUs $(node_job_cores $(cat st.job))" held.txt
'
test_expect_success 'a login knows its job: FLUX_JOB_ID, and FLUX_URI for flux jobs' '
	node_ssh alice "echo \$FLUX_JOB_ID; echo \$FLUX_URI; echo \${FLUX_JOB_IDS-unset};
		flux jobs -no {id.f58}" >env.1 &&
	cat env.1 &&
	test "$(sed -n 1p env.1)" = "$(ascii_f58 <st.job)" &&
	test "$(sed -n 2p env.1)" = local:///run/flux/local &&
	test "$(sed -n 3p env.1)" = unset &&
	test "$(sed -n 4p env.1)" = "$(cat st.job)"
'
test_expect_success 'with a second job the login gets FLUX_JOB_IDS listing both' '
	id=$(node_submit alice -n1 sleep inf) &&
	echo $id >st.job2 &&
	node_job_started $id &&
	node_ssh alice "echo \${FLUX_JOB_ID-unset}; echo \$FLUX_JOB_IDS" >env.2 &&
	cat env.2 &&
	test "$(sed -n 1p env.2)" = unset &&
	sed -n 2p env.2 | tr , "\n" | sort >ids.2 &&
	cat st.job st.job2 | ascii_f58 | sort >want.2 &&
	test_cmp want.2 ids.2 &&
	node_flux cancel $id &&
	node_job_gone $id
'
test_expect_success 'one login ends: SCOPES 1, and the JSON lists only the other' '
	node_sh "kill -KILL \$(cat /tmp/st1.pid)" &&
	node_wait 20 "test \"\$(scopes_in_kernel 1000 | wc -l)\" = 1" &&
	scopes_in_kernel 1000 >kernel.1 &&
	node_wait 10 "test \"\$(status_column SCOPES)\" = 1" &&
	node_flux pam status --json |
		jq -r ".[0].users[] | select(.uid == 1000) | .scopes[]" >json.1 &&
	test_cmp kernel.1 json.1 &&
	node_sh "sed -n \"s|^0::.*/||p\" /tmp/st1.cg" >dead.scope &&
	test -s dead.scope &&
	! grep -x -F -f dead.scope json.1
'
test_expect_success 'the JSON carries each job ID as integer and F58' '
	node_flux pam status --json >ids.json &&
	dec=$(node_flux job id --to=dec $(cat st.job)) &&
	plain=$(node_flux job id --to=f58plain $(cat st.job)) &&
	jq -e --argjson id $dec --arg f58 "ƒ${plain#f}" \
		".[0].users[0].jobs[0] | .id == \$id and .f58 == \$f58" ids.json
'
test_expect_success 'human output prints the job ID in F58 (flux pam slice show)' '
	plain=$(node_flux job id --to=f58plain $(cat st.job)) &&
	node_flux pam slice show alice >show.txt &&
	cat show.txt &&
	grep -x "         jobs: ƒ${plain#f}" show.txt
'
test_expect_success 'cleanup: the job ends, the logins are ended' '
	node_flux cancel $(cat st.job) &&
	node_job_gone $(cat st.job) &&
	node_kill_sessions
'
test_done

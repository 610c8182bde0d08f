# Scenarios 1-4 of the node tier, as functions that add tests.  They run
# with the pam module loaded (t2000-t2003) and with it removed, the
# prolog/housekeeping drop-ins alone (t2005).  Each leaves alice without jobs
# or logins, and the [pam] config as node_pam_default sets it.
#
# Source after lib/node.sh.

NODE_PAM_DEFAULT='[pam]
manage-user-slice = true
kill-user-slice = false
kill-slice-grace-time = "30s"

[exec]
sdexec-constrain-resources = true'

node_pam_default() {
	node_pam_config "$NODE_PAM_DEFAULT"
}

# The cgroup of a login's shell, e.g. /user.slice/user-1000.slice/flux-pam-12.scope
node_login_cgroup() {
	node_ssh "$1" cat /proc/self/cgroup | sed -n "s/^0:://p"
}

# alice's login that stays: writes /tmp/TAG.info (cgroup, pid) then sleeps
# with a recognisable argument; its ssh client runs in unit ssh-TAG.service.
node_session_start() {
	local tag=$1 ignore=${2:-}
	local trap=
	test -n "$ignore" && trap="trap '' TERM HUP;"
	node_ssh_bg "ssh-$tag" alice \
		"$trap echo \$\$ >/tmp/$tag.pid; cat /proc/self/cgroup >/tmp/$tag.cg; exec sleep 3600" &&
		node_wait 30 "node_sh 'test -s /tmp/$tag.cg'"
}

# Is alice's session TAG still running (its shell, now sleep)?
node_session_alive() {
	node_sh "kill -0 \$(cat /tmp/$1.pid)"
}

node_session_gone() {
	! node_session_alive "$1"
}

scenario_admission() {
	test_expect_success 'alice without a job is refused' '
		test_must_fail node_ssh alice true
	'
	test_expect_success 'the auth log has pam_flux'\''s reason for alice' '
		node_wait 10 "node_auth_log | grep -F \"pam_flux(sshd:account): access denied for user alice (uid=1000): no active jobs\""
	'
	test_expect_success 'bob without a job is refused, with the reason logged' '
		test_must_fail node_ssh bob true &&
		node_wait 10 "node_auth_log | grep -F \"access denied for user bob (uid=1001)\""
	'
	test_expect_success 'root is admitted without a job' '
		node_ssh root id -u >root.out &&
		test "$(cat root.out)" = 0
	'
	test_expect_success 'while alice has a job she is admitted and bob is not' '
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >adm.job &&
		node_job_started $id &&
		node_ssh alice id -un >alice.out &&
		test "$(cat alice.out)" = alice &&
		test_must_fail node_ssh bob true
	'
	test_expect_success 'after her job alice is refused again' '
		node_flux cancel $(cat adm.job) &&
		node_job_gone $(cat adm.job) &&
		test_must_fail node_ssh alice true
	'
}

scenario_confinement() {
	test_expect_success 'alice'\''s jobs run as uid 1000 (through the IMP)' '
		node_flux -u alice run -n1 id -u >conf.jobuid &&
		test "$(cat conf.jobuid)" = 1000 &&
		node_housekeeping_idle
	'
	test_expect_success 'alice has a job running sleep' '
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >conf.job &&
		node_job_started $id &&
		node_job_cores $id >conf.cores &&
		test -s conf.cores
	'
	test_expect_success 'ssh alice@127.0.0.1 is admitted' '
		node_ssh alice id -u >conf.uid &&
		test "$(cat conf.uid)" = 1000
	'
	test_expect_success 'her shell runs in user-1000.slice/flux-pam-*.scope' '
		node_login_cgroup alice >conf.cg &&
		cat conf.cg &&
		grep -E "^/user.slice/user-1000.slice/flux-pam-[0-9]+.scope$" conf.cg
	'
	test_expect_success 'user-1000.slice has AllowedCPUs of exactly the job'\''s cores' '
		node_prop user-1000.slice AllowedCPUs >conf.allowed &&
		echo "AllowedCPUs=$(cat conf.allowed) job cores=$(cat conf.cores)" &&
		test "$(cat conf.allowed)" = "$(cat conf.cores)"
	'
	test_expect_success 'user-1000.slice has DevicePolicy=closed' '
		test "$(node_prop user-1000.slice DevicePolicy)" = closed
	'
	# the probe has /dev/net/tun's numbers (10:200): the container allows it,
	# DevicePolicy=closed does not
	test_expect_success 'a device alice may open outside the slice fails inside it' '
		node_sh "test -e /dev/flux-pam-probe || mknod -m 0666 /dev/flux-pam-probe c 10 200" &&
		node_run -u alice sh -c "exec 3</dev/flux-pam-probe" </dev/null &&
		node_ssh alice "exec 3</dev/null" &&
		test_must_fail node_ssh alice "exec 3</dev/flux-pam-probe" 2>conf.dev &&
		cat conf.dev &&
		grep "Operation not permitted" conf.dev
	'
	test_expect_success 'XDG_RUNTIME_DIR is alice'\''s and writable in the session' '
		node_ssh alice "echo \$XDG_RUNTIME_DIR; test -O \"\$XDG_RUNTIME_DIR\" && touch \"\$XDG_RUNTIME_DIR/probe\" && echo ok" >conf.xdg &&
		cat conf.xdg &&
		test "$(sed -n 1p conf.xdg)" = /run/user/1000 &&
		test "$(sed -n 2p conf.xdg)" = ok
	'
	test_expect_success 'user@1000.service is active' '
		test "$(node_unit_state user@1000.service)" = active
	'
	test_expect_success 'bob is refused while alice is confined' '
		test_must_fail node_ssh bob true
	'
	test_expect_success 'cleanup: alice'\''s job ends' '
		node_flux cancel $(cat conf.job) &&
		node_job_gone $(cat conf.job)
	'
}

scenario_union() {
	test_expect_success 'alice has a 1-core job and a login' '
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >un.job1 &&
		node_job_started $id &&
		node_job_cores $id >un.cores1 &&
		node_session_start un &&
		test "$(node_prop user-1000.slice AllowedCPUs)" = "$(cat un.cores1)"
	'
	test_expect_success 'a second job widens the slice to the union' '
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >un.job2 &&
		node_job_started $id &&
		node_job_cores $id >un.cores2 &&
		test "$(cat un.cores1)" != "$(cat un.cores2)" &&
		node_wait 10 "test \"\$(node_prop user-1000.slice AllowedCPUs)\" = 0-1"
	'
	test_expect_success 'ending the first job narrows it to the second job'\''s cores' '
		node_flux cancel $(cat un.job1) &&
		node_job_gone $(cat un.job1) &&
		node_wait 10 "test \"\$(node_prop user-1000.slice AllowedCPUs)\" = $(cat un.cores2)"
	'
	test_expect_success 'the login survived, and user@1000 still runs' '
		node_session_alive un &&
		test "$(node_unit_state ssh-un.service)" = active &&
		test "$(node_unit_state user@1000.service)" = active
	'
	test_expect_success 'cleanup: the second job ends, the login is ended' '
		node_flux cancel $(cat un.job2) &&
		node_job_gone $(cat un.job2) &&
		node_kill_sessions
	'
}

scenario_teardown() {
	test_expect_success 'kill-user-slice=false: alice has a job and a login' '
		node_pam_default &&
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >td.job1 &&
		node_job_started $id &&
		node_session_start td1
	'
	test_expect_success 'kill-user-slice=false: the last job ends' '
		node_flux cancel $(cat td.job1) &&
		node_job_gone $(cat td.job1)
	'
	test_expect_success 'kill-user-slice=false: user@1000 stopped, the login survives' '
		node_wait 10 "test \"\$(node_unit_state user@1000.service)\" = inactive" &&
		node_session_alive td1
	'
	test_expect_success 'kill-user-slice=false: a new login is refused' '
		test_must_fail node_ssh alice true
	'
	test_expect_success 'cleanup: the surviving login is ended' '
		node_kill_sessions &&
		node_wait 10 "node_session_gone td1"
	'
	test_expect_success 'kill-user-slice=true (grace 2s): alice has a job and a login ignoring SIGTERM' '
		node_pam_config "[pam]
manage-user-slice = true
kill-user-slice = true
kill-slice-grace-time = \"2s\"

[exec]
sdexec-constrain-resources = true" &&
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >td.job2 &&
		node_job_started $id &&
		node_session_start td2 ignore-term &&
		node_sh "kill -TERM \$(cat /tmp/td2.pid)" &&
		sleep 0.2 &&
		node_session_alive td2
	'
	test_expect_success 'kill-user-slice=true: the last job ends, the login is killed within the grace' '
		node_flux cancel $(cat td.job2) &&
		start=$(date +%s) &&
		node_job_gone $(cat td.job2) &&
		node_wait 10 "node_session_gone td2" &&
		elapsed=$(($(date +%s) - start)) &&
		echo "login gone after ${elapsed}s" &&
		test $elapsed -le 8 &&
		test -z "$(node_slice_pids 1000)"
	'
	test_expect_success 'kill-user-slice=true: user@1000 stopped, new logins refused' '
		test "$(node_unit_state user@1000.service)" = inactive &&
		test_must_fail node_ssh alice true
	'
	test_expect_success 'kill-user-slice=true: the node is not drained' '
		test -z "$(node_drained)"
	'
	test_expect_success 'cleanup: default config' '
		node_pam_default
	'
}

# Scenarios 1-4 of the node tier, as functions that add tests.  They run
# with the pam module loaded (t2000-t2003) and with it removed, the
# prolog/housekeeping drop-ins alone (t2005).  Each leaves alice without jobs
# or logins, and the [pam] config as node_pam_default sets it.  The kernel's
# view (a login's own /proc/self/status, cpuset.cpus.effective) is asserted
# where the replica has the cpuset controller (prereq CPUSET, lib/node.sh);
# scenario_gpus needs a replica booted with --fake-gpus 2; scenario_unenforced
# one without cpuset.
#
# Source after lib/node.sh.

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

# "CPUS MEMS": Cpus_allowed_list and Mems_allowed_list of a fresh login of
# USER (node_login_allowed USER), or of alice's session TAG that stays
# (node_session_allowed TAG; node_session_cpus TAG: the first only)
NODE_ALLOWED_SED="sed -n 's/^Cpus_allowed_list:[[:space:]]*//p; s/^Mems_allowed_list:[[:space:]]*//p'"
node_login_allowed() {
	node_ssh "$1" "$NODE_ALLOWED_SED /proc/self/status" | paste -sd" "
}
node_session_allowed() {
	node_sh "$NODE_ALLOWED_SED /proc/\$(cat /tmp/$1.pid)/status" | paste -sd" "
}
node_session_cpus() {
	node_session_allowed "$1" | cut -d" " -f1
}

# "CPUS MEMS" that user-UID.slice asks for (systemd's properties)
node_slice_allowed() {
	echo "$(node_prop user-$1.slice AllowedCPUs) $(node_prop user-$1.slice AllowedMemoryNodes)"
}

# cpuset.cpus.effective of user-UID.slice, as the kernel has it
node_slice_effective() {
	node_sh "cat /sys/fs/cgroup/user.slice/user-$1.slice/cpuset.cpus.effective"
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
	test_expect_success CPUSET 'the kernel holds her login to the job'\''s cores and memory nodes' '
		node_login_allowed alice >conf.allowed-list &&
		node_slice_allowed 1000 >conf.slice-list &&
		echo "login: $(cat conf.allowed-list), slice: $(cat conf.slice-list)" &&
		test "$(cat conf.allowed-list)" = "$(cat conf.slice-list)" &&
		test "$(cut -d" " -f1 conf.allowed-list)" = "$(cat conf.cores)" &&
		test "$(node_slice_effective 1000)" = "$(cat conf.cores)"
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
	test_expect_success CPUSET 'the kernel holds the login to the first job'\''s cores' '
		test "$(node_session_allowed un)" = "$(node_slice_allowed 1000)" &&
		test "$(node_session_cpus un)" = "$(cat un.cores1)"
	'
	test_expect_success 'a second job widens the slice to the union' '
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >un.job2 &&
		node_job_started $id &&
		node_job_cores $id >un.cores2 &&
		test "$(cat un.cores1)" != "$(cat un.cores2)" &&
		node_wait 10 "test \"\$(node_prop user-1000.slice AllowedCPUs)\" = 0-1"
	'
	test_expect_success CPUSET 'the login that stayed grows with the union, in the kernel' '
		node_wait 10 "test \"\$(node_session_cpus un)\" = 0-1" &&
		test "$(node_slice_effective 1000)" = 0-1
	'
	test_expect_success 'ending the first job narrows it to the second job'\''s cores' '
		node_flux cancel $(cat un.job1) &&
		node_job_gone $(cat un.job1) &&
		node_wait 10 "test \"\$(node_prop user-1000.slice AllowedCPUs)\" = $(cat un.cores2)"
	'
	test_expect_success CPUSET 'the login that stayed shrinks with the union, in the kernel' '
		node_wait 10 "test \"\$(node_session_cpus un)\" = $(cat un.cores2)" &&
		test "$(node_slice_effective 1000)" = "$(cat un.cores2)"
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
		node_pam_kill 2s &&
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

# What opening GPU N's device node (sharness/lib/gpu_mapper.py) gives in a
# fresh login of USER: "opened", or the shell's error (its last line).
node_gpu_open() {
	node_ssh "$1" "exec 3</dev/flux-pam-gpu$2 && echo opened" 2>&1 | tail -1
}

# node_job_gpus JOBID: the job's GPUs on rank 0, as an idset
node_job_gpus() {
	node_flux job info "$1" R | jq -r '.execution.R_lite[0].children.gpu'
}

# The device filter of the slice, with GPUs that do not exist: a replica
# booted with --fake-gpus 2.  No driver owns the device nodes, so an open the
# filter lets through answers ENXIO ("No such device or address") and one it
# stops EPERM ("Operation not permitted").
scenario_gpus() {
	test_expect_success 'the replica has 2 GPUs; their device nodes have no driver' '
		test "$(node_flux resource list -no {ngpus})" = 2 &&
		for i in 0 1; do
			node_sh "test -c /dev/flux-pam-gpu$i ||
				mknod -m 0666 /dev/flux-pam-gpu$i c 240 $i" || return 1
		done &&
		test_must_fail node_run -u alice sh -c "exec 3</dev/flux-pam-gpu1" \
			</dev/null 2>gpu.free &&
		grep "No such device or address" gpu.free
	'
	test_expect_success 'alice holds GPU 0: her login opens it, GPU 1 gets EPERM' '
		id=$(node_submit alice -n1 -g1 sleep inf) &&
		echo $id >gpu.job1 &&
		node_job_started $id &&
		test "$(node_job_gpus $id)" = 0 &&
		node_gpu_open alice 0 >gpu.0 &&
		node_gpu_open alice 1 >gpu.1 &&
		cat gpu.0 gpu.1 &&
		grep "No such device or address" gpu.0 &&
		grep "Operation not permitted" gpu.1
	'
	test_expect_success 'a second job with GPU 1: her logins open both' '
		id=$(node_submit alice -n1 -g1 sleep inf) &&
		echo $id >gpu.job2 &&
		node_job_started $id &&
		test "$(node_job_gpus $id)" = 1 &&
		node_gpu_open alice 1 | grep "No such device or address" &&
		node_gpu_open alice 0 | grep "No such device or address"
	'
	test_expect_success 'the first job ends: GPU 0 gets EPERM again, GPU 1 opens' '
		node_flux cancel $(cat gpu.job1) &&
		node_job_gone $(cat gpu.job1) &&
		node_gpu_open alice 0 | grep "Operation not permitted" &&
		node_gpu_open alice 1 | grep "No such device or address"
	'
	test_expect_success 'cleanup: the second job ends' '
		node_flux cancel $(cat gpu.job2) &&
		node_job_gone $(cat gpu.job2)
	'
}

UNENFORCED="Access denied: CPU and memory node confinement is not enforced on this node; ask your administrator"

# node_ssh_told USER CMD: a login whose client shows the server's banners
# (pam_flux's account message reaches the client as one), stderr included
node_ssh_told() {
	local user=$1
	shift
	node_run ssh -o LogLevel=INFO "$user@127.0.0.1" -- "$@" </dev/null 2>&1
}

# node_refused_says USER TEXT FILE: USER's login is refused and the ssh
# client shows TEXT (its output in FILE)
node_refused_says() {
	test_must_fail node_ssh_told "$1" true >"$3" &&
	cat "$3" &&
	grep -F "$2" "$3"
}

# node_root_gets_in FILE: root logs in (id -u in FILE)
node_root_gets_in() {
	node_ssh root id -u >"$1" &&
	test "$(cat "$1")" = 0
}

# On a replica without cpuset (t2000), with the module or the drop-ins
# alone (MODE: module | drop-ins): job users are refused with the message,
# root gets in, pam.allow-unconfined-logins admits them unconfined.
scenario_unenforced() {
	test_expect_success "$1: the config does not allow unconfined logins" '
		node_pam_config "$(echo "$NODE_PAM_DEFAULT" |
			sed "/^\[pam\]/a allow-unconfined-logins = false")"
	'
	test_expect_success "$1: alice with a job is refused; her ssh client says why" '
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >ue.job1 &&
		node_job_started $id &&
		node_refused_says alice "$UNENFORCED" ue.alice
	'
	test_expect_success "$1: the auth log has the reason" '
		node_wait 10 "node_auth_log | grep -F \"access denied for user alice (uid=1000): $UNENFORCED\""
	'
	test_expect_success "$1: root is admitted" '
		node_root_gets_in ue.root
	'
	test_expect_success "$1: bob, without a job, gets the usual refusal" '
		node_refused_says bob "Access denied: user bob has no active jobs on this node" ue.bob
	'
	test "$1" = drop-ins &&
		test_expect_success "$1: flux pam status shows the marker that refuses her" '
			test_must_fail node_flux pam status >ue.local 2>&1 &&
			cat ue.local &&
			grep -F "alice: logins refused: $UNENFORCED" ue.local
		'
	test "$1" = module &&
		test_expect_success "$1: flux pam status says what is not enforced and why" '
			node_flux pam status >ue.status &&
			cat ue.status &&
			grep -E "^0 +alice +1/1 +[0-9-]+ +- +no " ue.status &&
			grep -F "  not enforced: CPU, memory node (CPU: the cpuset controller is not enabled for the slice" ue.status &&
			grep "logins refused$" ue.status &&
			node_flux pam status --json >ue.json &&
			jq -e ".[0].users[0].enforcement.state == \"not-enforced\"" ue.json &&
			jq -e ".[0].enforcement.state == \"not-enforced\"" ue.json
		'
	test_expect_success "$1: allow-unconfined-logins admits her, unconfined" '
		node_flux cancel $(cat ue.job1) &&
		node_job_gone $(cat ue.job1) &&
		node_pam_config "$(echo "$NODE_PAM_DEFAULT" |
			sed "/^\[pam\]/a allow-unconfined-logins = true")" &&
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >ue.job2 &&
		node_job_started $id &&
		node_login_cgroup alice >ue.cg &&
		grep -E "^/user.slice/user-1000.slice/flux-pam-[0-9]+.scope$" ue.cg &&
		node_login_allowed alice >ue.allowed &&
		echo "unconfined login: $(cat ue.allowed), slice asks $(node_slice_allowed 1000)" &&
		test "$(cut -d" " -f1 ue.allowed)" != "$(node_prop user-1000.slice AllowedCPUs)"
	'
	test "$1" = module &&
		test_expect_success "$1: flux pam status marks her unconfined" '
			node_flux pam status >ue.status2 &&
			cat ue.status2 &&
			grep -E "^0 +alice +1/1 +[0-9-]+ +- +unconfined " ue.status2 &&
			grep "logins admitted unconfined (pam.allow-unconfined-logins)$" ue.status2 &&
			node_flux pam status --json |
				jq -e ".[0].users[0].enforcement.state == \"unconfined\""
		'
	test_expect_success "$1: cleanup: her job ends" '
		node_flux cancel $(cat ue.job2) &&
		node_job_gone $(cat ue.job2) &&
		node_pam_default
	'
}

# The node's config with memory limits: the default, with
# allow-unconfined-logins = $1 and the TOML lines $2 added to [pam] and
# the table $3 (e.g. [exec.sdexec-properties]) appended.
node_memory_config() {
	node_pam_config "$(echo "$NODE_PAM_DEFAULT" |
		sed "/^\[pam\]/a allow-unconfined-logins = $1${2:+\\
$2}")
$3"
}

# memory.max of user-UID.slice as the kernel has it ("" without the memory
# controller)
node_slice_memory_max() {
	node_sh "cat /sys/fs/cgroup/user.slice/user-$1.slice/memory.max 2>/dev/null; :"
}

# node_job_running JOBID: the job is still in the RUN state
node_job_running() {
	test "$(node_flux jobs -A -no {state} "$1")" = RUN
}

# node_cancel_jobs FILE...: cancel the jobs whose IDs the FILEs hold (those
# that exist) and wait until they are gone
node_cancel_jobs() {
	local f
	for f in "$@"; do
		test -s "$f" || continue
		node_flux cancel "$(cat "$f")" 2>/dev/null
		node_job_gone "$(cat "$f")" || return 1
	done
}

GIB=1073741824

# Memory limits of logins (issue 18, part 1), with the module or the
# drop-ins alone (MODE: module | drop-ins).  exec.sdexec-properties
# MemoryMax = "2G" is scaled by the sdexec-mapper to the share of the
# node's 2 cores: 1 GiB for a 1-core job, 2 GiB for two (MemorySwapMax = 0:
# a login beyond the limit cannot swap instead of being OOM-killed).  Where the
# replica's cgroup2 has no memory controller (prereq MEMORY) the kernel
# enforces no memory limit: job users are refused unless
# allow-unconfined-logins, and the OOM test skips.
scenario_memory() {
	test_have_prereq MEMORY ||
		echo "# replica without the memory controller in cgroup2:" \
			"$(node_sh 'cat /sys/fs/cgroup/cgroup.controllers') (the host's" \
			"memory controller is held by a cgroup v1 hierarchy in use):" \
			"memory limits are not enforced and the OOM test skips" >&5
	test_expect_success "$1: alice's slice follows her job's memory share" '
		node_memory_config true "" "[exec.sdexec-properties]
MemoryMax = \"2G\"
MemorySwapMax = \"0\"" &&
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >mem.job1 &&
		node_job_started $id &&
		node_wait 10 "test \"\$(node_prop user-1000.slice MemoryMax)\" = $GIB"
	'
	test_expect_success "$1: a second job doubles it, its end halves it again" '
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >mem.job2 &&
		node_job_started $id &&
		node_wait 10 "test \"\$(node_prop user-1000.slice MemoryMax)\" = $((2 * GIB))" &&
		node_flux cancel $(cat mem.job1) &&
		node_job_gone $(cat mem.job1) &&
		node_wait 10 "test \"\$(node_prop user-1000.slice MemoryMax)\" = $GIB"
	'
	test_expect_success "$1: bob has a job on the other core" '
		id=$(node_submit bob -n1 sleep inf) &&
		echo $id >mem.bob &&
		node_job_started $id
	'
	test_expect_success MEMORY "$1: the kernel holds the slice to it" '
		test "$(node_slice_memory_max 1000)" = $GIB
	'
	test_expect_success MEMORY "$1: a login allocating beyond the limit is OOM-killed in the slice" '
		test_must_fail node_ssh alice \
			"python3 -c \"b = bytearray(3 * $GIB); print(len(b))\"" &&
		node_sh "grep \"^oom_kill [1-9]\" /sys/fs/cgroup/user.slice/user-1000.slice/memory.events"
	'
	test_expect_success "$1: alice's job and bob's are untouched" '
		node_job_running $(cat mem.job2) &&
		node_job_running $(cat mem.bob)
	'
	test "$1" = module &&
		test_expect_success "$1: flux pam status reports the memory limit as read back" '
			node_flux pam status --json >mem.json &&
			jq .[0].users mem.json &&
			if test_have_prereq MEMORY; then
				jq -e ".[0].users[] | select(.uid == 1000) |
					.enforcement.effective.memory_max == \"$GIB\"" mem.json
			else
				jq -e ".[0].users[] | select(.uid == 1000) |
					(.enforcement.state == \"unconfined\") and
					(.enforcement.missing | index(\"memory limit\"))" mem.json &&
				node_flux pam status >mem.status &&
				cat mem.status &&
				grep -F "memory limit: the memory controller is not enabled for the slice" mem.status
			fi
		'
	test_expect_success "$1: alice's and bob's jobs end" '
		node_cancel_jobs mem.job2 mem.bob
	'
	test_expect_success "$1: pam.login-memory-max caps her logins: 512M, whatever her jobs" '
		node_memory_config true "login-memory-max = \"512M\"" &&
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >mem.job3 &&
		node_job_started $id &&
		node_wait 10 "test \"\$(node_prop user-1000.slice MemoryMax)\" = 536870912" &&
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >mem.job4 &&
		node_job_started $id &&
		sleep 1 &&
		test "$(node_prop user-1000.slice MemoryMax)" = 536870912
	'
	# a new job after each config change: the drop-ins working alone apply
	# the config at the next prolog only (flux-config-pam(5))
	test_expect_success "$1: without allow-unconfined-logins she is refused where memory is not enforced" '
		node_cancel_jobs mem.job3 mem.job4 &&
		node_memory_config false "login-memory-max = \"512M\"" &&
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >mem.job5 &&
		node_job_started $id &&
		node_wait 10 "test \"\$(node_prop user-1000.slice MemoryMax)\" = 536870912" &&
		if test_have_prereq MEMORY; then
			node_ssh alice true
		else
			node_refused_says alice "memory limit confinement is not enforced on this node" mem.refused &&
			node_root_gets_in mem.root
		fi
	'
	test "$1" = module && ! test_have_prereq MEMORY &&
		test_expect_success "$1: flux pam check says memory is not offered to user.slice" '
			test_might_fail node_flux pam check --config-path $NODE_FLUX_CONF >mem.check &&
			grep "^FAIL  cgroup-controllers: the cgroup2 hierarchy does not offer .*memory" mem.check
		'
	test_expect_success "$1: no memory limit configured: her logins are admitted as before" '
		node_cancel_jobs mem.job5 &&
		node_pam_default &&
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >mem.job6 &&
		node_job_started $id &&
		test "$(node_prop user-1000.slice MemoryMax)" = infinity &&
		node_ssh alice true
	'
	test_expect_success "$1: cleanup: the jobs end" '
		node_cancel_jobs mem.job1 mem.job2 mem.job3 mem.job4 mem.job5 \
			mem.job6 mem.bob
	'
}

# "SHM SEM MSG POSIX MQUEUE": how many System V segments, semaphore sets and
# message queues UID owns (/proc/sysvipc), and its files in /dev/shm and
# /dev/mqueue
node_leftovers() {
	node_sh "awk -v u=$1 'NR > 1 && \$8 == u' /proc/sysvipc/shm | wc -l;
		awk -v u=$1 'NR > 1 && \$5 == u' /proc/sysvipc/sem | wc -l;
		awk -v u=$1 'NR > 1 && \$8 == u' /proc/sysvipc/msg | wc -l;
		find /dev/shm -maxdepth 1 -uid $1 | wc -l;
		find /dev/mqueue -maxdepth 1 -uid $1 2>/dev/null | wc -l" | paste -sd" "
}

# What a login of USER leaves: a System V segment, semaphore set and
# message queue, a /dev/shm file, and a POSIX message queue where the node
# has /dev/mqueue
node_leave_ipc() {
	node_ssh "$1" "ipcmk -M 4096 >/dev/null && ipcmk -S 1 >/dev/null &&
		ipcmk -Q >/dev/null && echo x >/dev/shm/probe-$1 &&
		{ ! test -d /dev/mqueue || touch /dev/mqueue/probe-$1; }"
}

# Nothing left behind (issue 18, part 2), with the module or the drop-ins
# alone (MODE: module | drop-ins): after alice's last job her IPC objects
# are removed; bob, who still has a job, keeps his, and so does root.
scenario_leftovers() {
	node_sh "test -d /dev/mqueue" && MQ=1 || MQ=0
	test $MQ = 1 ||
		echo "# replica without /dev/mqueue: no POSIX message queue is tested" >&5
	test_expect_success "$1: alice and bob have jobs; their logins leave IPC objects" '
		node_pam_default &&
		id=$(node_submit bob -n1 sleep inf) &&
		echo $id >lo.bob &&
		node_job_started $id &&
		id=$(node_submit alice -n1 sleep inf) &&
		echo $id >lo.alice &&
		node_job_started $id &&
		node_leave_ipc alice &&
		node_leave_ipc bob &&
		node_sh "ipcmk -M 4096 >/dev/null && echo x >/dev/shm/probe-root" &&
		node_leftovers 1000 >lo.alice.before &&
		node_leftovers 1001 >lo.bob.before &&
		cat lo.alice.before lo.bob.before &&
		test "$(cat lo.alice.before)" = "1 1 1 1 $MQ" &&
		test "$(cat lo.bob.before)" = "1 1 1 1 $MQ"
	'
	test_expect_success "$1: after her last job, what alice left is gone" '
		node_leftovers 0 >lo.root.before &&
		node_flux cancel $(cat lo.alice) &&
		node_job_gone $(cat lo.alice) &&
		node_leftovers 1000 >lo.alice.after &&
		cat lo.alice.after &&
		test "$(cat lo.alice.after)" = "0 0 0 0 0"
	'
	test_expect_success "$1: bob's, who still has a job, and root's are untouched" '
		test "$(node_leftovers 1001)" = "$(cat lo.bob.before)" &&
		test "$(node_leftovers 0)" = "$(cat lo.root.before)" &&
		node_job_running $(cat lo.bob)
	'
	test "$1" = module &&
		test_expect_success "$1: the module counts what was removed" '
			node_flux pam status --json >lo.json &&
			jq .[0].leftovers_removed lo.json &&
			jq -e ".[0].leftovers_removed | .shm >= 1 and .sem >= 1 and
				.msg >= 1 and .\"posix-shm\" >= 1" lo.json
		'
	test_expect_success "$1: cleanup: bob's job ends and his objects go too" '
		node_cancel_jobs lo.alice lo.bob &&
		test "$(node_leftovers 1001)" = "0 0 0 0 0" &&
		node_sh "ipcrm --all=shm 2>/dev/null; rm -f /dev/shm/probe-root; :"
	'
}

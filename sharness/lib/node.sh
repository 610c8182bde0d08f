# Helpers of the node tier (sharness/t2*-node-*.t): a Flux compute node
# replica in a systemd-nspawn container (sharness/node/node.py).
#
# Source after lib/init.sh:
#
#   . "$(dirname "$0")"/lib/init.sh
#   . "$SHARNESS_TEST_SRCDIR"/lib/node.sh
#   node_require          # skip_all unless root, flux-core in /opt/flux, nspawn
#   node_up               # fresh replica; brought down when the script exits
#
# memory.  node_up sets the prereq MEMORY when the replica's cgroup2 root
# offers the memory controller (it cannot where a cgroup v1 hierarchy in use
# holds it, as on the machines CI runs on: scenario_memory says so).
#
# cpuset.  node_up sets the prereq CPUSET when the replica's cgroup2 root
# offers the cpuset controller (node.py up with FLUX_PAM_TESTBED_CPUSET=1,
# where the host allows it: t/testbed.py), and otherwise prints why.  On a
# replica without it the kernel enforces no CPU or memory node set, so the
# pam module refuses job users' logins; there node_pam_config adds
# allow-unconfined-logins = true to a [pam] table that does not set the key
# (node_up applies node_pam_default at once), so that the scenarios that log
# in still run, unconfined, while their kernel checks skip.  t2000 boots
# without cpuset on purpose and sets the key false to prove the refusal.
#
# Every command runs inside the container as a transient service
# (systemd-run -M, as root unless -u USER); the container has a private
# network, so ssh runs inside too, as root with the replica's client key.
#
# Variables:
#   FLUX_PAM_NODE        machine name (default flux-pam-node-PID: scripts run
#                        at the same time do not share a replica)
#   FLUX_PAM_NODE_KEEP   non-empty: leave the replica up when the script ends
#   NODE_ALICE           1000 (uid of alice)

: "${FLUX_PAM_NODE:=flux-pam-node-$$}"
export FLUX_PAM_NODE
NODE_PY="/usr/bin/python3 $FLUX_PAM_SRCDIR/sharness/node/node.py"
NODE_FLUX_CONF=/opt/flux/etc/flux/system/conf.d
NODE_ALICE=1000

node_require() {
	if test "$(id -u)" != 0; then
		skip_all="the node tier needs root (systemd-nspawn)"
		test_done
	fi
	local why
	if ! why=$($NODE_PY can-run 2>&1); then
		skip_all="node replica cannot run: $why"
		test_done
	fi
}

node_down() {
	test -n "$FLUX_PAM_NODE_KEEP" && return 0
	$NODE_PY down --name "$FLUX_PAM_NODE" >/dev/null 2>&1
}

# Boot a fresh replica; it is brought down when the script exits, whatever
# the way (sharness's own EXIT trap runs after).
# node_up [--sdexec]
node_up() {
	trap '_node_rc=$?; node_down; (exit $_node_rc); die' EXIT
	$NODE_PY up --name "$FLUX_PAM_NODE" "$@" >/dev/null 2>node-up.log
	local rc=$?
	cat node-up.log >&2
	test $rc = 0 || return $rc
	if node_sh "grep -qw memory /sys/fs/cgroup/cgroup.controllers"; then
		test_set_prereq MEMORY
	fi
	if node_sh "grep -qw cpuset /sys/fs/cgroup/cgroup.controllers"; then
		test_set_prereq CPUSET
	else
		# fd 5 is sharness's TAP output: the reason shows in every run
		echo "# replica without the cpuset controller:" \
			"$($NODE_PY status --name "$FLUX_PAM_NODE" | jq -r .cpuset)" >&5
		node_pam_default
	fi
}

NODE_PAM_DEFAULT='[pam]
manage-user-slice = true
kill-user-slice = false
kill-slice-grace-time = "30s"

[exec]
sdexec-constrain-resources = true'

node_pam_default() {
	node_pam_config "$NODE_PAM_DEFAULT"
}

# node_pam_kill GRACE: the default config with kill-user-slice = true and
# kill-slice-grace-time = GRACE
node_pam_kill() {
	node_pam_config "$(echo "$NODE_PAM_DEFAULT" | sed \
		-e "s/^kill-user-slice = .*/kill-user-slice = true/" \
		-e "s/^kill-slice-grace-time = .*/kill-slice-grace-time = \"$1\"/")"
}

# node_run [-u USER] CMD...: run CMD inside; stdin is passed on.  systemd
# expands $NAME and $$ in a unit's command line, so every $ is doubled.
node_run() {
	local uid= a
	local -a argv=()
	if test "$1" = "-u"; then
		uid="--uid=$2"
		shift 2
	fi
	for a in "$@"; do
		argv+=("${a//\$/\$\$}")
	done
	systemd-run -M "$FLUX_PAM_NODE" --wait --pipe --quiet --collect \
		--service-type=exec $uid -- "${argv[@]}"
}

# node_sh [-u USER] 'shell text'
node_sh() {
	if test "$1" = "-u"; then
		node_run -u "$2" /bin/sh -c "$3" </dev/null
	else
		node_run /bin/sh -c "$1" </dev/null
	fi
}

# node_flux [-u USER] ARGS...: flux on the system instance.
node_flux() {
	if test "$1" = "-u"; then
		local u=$2
		shift 2
		node_run -u "$u" flux "$@" </dev/null
	else
		node_run flux "$@" </dev/null
	fi
}

# node_ssh USER CMD: a login through sshd and the whole PAM stack.
node_ssh() {
	local user=$1
	shift
	node_run ssh "$user@127.0.0.1" -- "$@" </dev/null
}

# node_ssh_bg UNIT USER CMD: a login that stays, its client in unit UNIT.
node_ssh_bg() {
	local unit=$1 user=$2 a
	local -a argv=()
	shift 2
	for a in "$@"; do
		argv+=("${a//\$/\$\$}")
	done
	systemd-run -M "$FLUX_PAM_NODE" --quiet --unit="$unit" --service-type=exec \
		-- ssh "$user@127.0.0.1" -- "${argv[@]}" </dev/null
}

# node_prop UNIT PROPERTY: systemctl show -P, inside.
node_prop() {
	systemctl -M "$FLUX_PAM_NODE" show -P "$2" "$1"
}

node_unit_state() {
	node_prop "$1" ActiveState
}

# node_wait TIMEOUT 'shell condition on the host' (polls every 0.1s)
node_wait() {
	local deadline=$(($(date +%s) + $1))
	while ! eval "$2"; do
		if test "$(date +%s)" -ge $deadline; then
			echo "node_wait: timed out after ${1}s: $2" >&2
			return 1
		fi
		sleep 0.1
	done
}

# node_submit USER [flux submit args]: prints the job id (f58)
node_submit() {
	local user=$1
	shift
	node_flux -u "$user" submit "$@"
}

# node_job_started JOBID: wait for the start event (the prolog has run)
node_job_started() {
	node_flux job wait-event -t 60 "$1" start >/dev/null
}

# node_job_cores JOBID: the job's cores on rank 0, as an idset
node_job_cores() {
	node_flux job info "$1" R | jq -r '.execution.R_lite[0].children.core'
}

# node_housekeeping_idle: wait until no housekeeping task is left
node_housekeeping_idle() {
	node_wait ${1:-60} \
		'test -z "$(node_flux housekeeping list -no {id} 2>/dev/null)"'
}

# node_job_gone JOBID: wait for the job's clean event and its housekeeping
node_job_gone() {
	node_flux job wait-event -t 60 "$1" clean >/dev/null &&
		node_housekeeping_idle
}

# node_pam_status: pam.status of the local rank (root is the owner)
node_pam_status() {
	local payload=${1:-}
	test -n "$payload" || payload='{}'
	node_flux python "$FLUX_PAM_SRCDIR/sharness/lib/rpc.py" pam.status "$payload"
}

# node_pam_config TOML: replace the [pam]/[exec] config and reload it
# (without CPUSET, allow-unconfined-logins = true unless TOML sets it)
node_pam_config() {
	local toml=$1
	if ! test_have_prereq CPUSET && ! echo "$toml" | grep -q allow-unconfined-logins
	then
		toml=$(echo "$toml" | sed "/^\[pam\]/a allow-unconfined-logins = true")
	fi
	printf '%s\n' "$toml" |
		node_run sh -c "cat >$NODE_FLUX_CONF/pam.toml" &&
		node_flux config reload
}

# node_auth_log: the container's auth log (syslog facility authpriv)
node_auth_log() {
	node_run journalctl -b --no-pager -o cat SYSLOG_FACILITY=10 </dev/null
}

# node_slice_pids UID: processes in user-UID.slice (recursively), one per line
node_slice_pids() {
	node_sh "find /sys/fs/cgroup/user.slice/user-$1.slice -name cgroup.procs \
		-exec cat {} + 2>/dev/null"
}

# node_drained: ranks drained (empty if none)
node_drained() {
	node_flux resource status -s drain -no {ranks}
}

# node_kill_sessions UID: end every login of UID (test cleanup)
node_kill_sessions() {
	node_sh "systemctl kill -s KILL 'flux-pam-*.scope' 2>/dev/null; \
		systemctl stop 'ssh-*.service' 2>/dev/null; :"
}

# Helpers shared by the broker tier (t0xxx, t1xxx) and node tier (t2xxx).
#
# sharness.sh loads this file automatically (sharness.d/*.sh).  Start a test
# script with:
#
#   test_description='...'
#   . "$(dirname "$0")"/lib/init.sh
#   flux_pam_require_flux          # or: 1..0 # SKIP no flux-core
#   flux_pam_require_testbed       # only if the test needs systemd
#   cat >"$(flux_pam_confdir)"/pam.toml <<-EOF   # instance config (optional)
#   ...
#   EOF
#   test_under_flux_pam 4          # re-runs this script inside the instance
#
# Variables:
#   FLUX_PAM_SRCDIR   top of the source tree (default: parent of sharness/)
#   FLUX              the flux command (default: flux on PATH, /opt/flux/bin/flux)
#   DBUS_SYSTEM_BUS_ADDRESS, FLUX_PAM_TESTBED
#                     the systemd test bed (export them from `t/testbed.py up`)
#   FLUX_PAM_CONFDIR  the instance's config directory (created on demand,
#                     outside the trash directory so that it survives the
#                     re-execution; removed when the outer script ends)
#
# The pam module is loaded the production way, by modprobe: the repo's
# etc/flux/modprobe is on FLUX_MODPROBE_PATH_APPEND (modprobe.d/pam.toml,
# rc1.d/pam.py) and the modules/ directory on FLUX_MODULE_PATH_PREPEND,
# so `pam` resolves to modules/pam.py.  The module loads only if the config
# has a [pam] table (needs-config), so a script that writes none gets an
# instance without it.

: "${FLUX_PAM_SRCDIR:=$(cd "$SHARNESS_TEST_SRCDIR/.." && pwd)}"
export FLUX_PAM_SRCDIR
FLUX_PAM_LIB="$SHARNESS_TEST_SRCDIR/lib"

# Find flux-core; export FLUX and put its bindir first on PATH.
flux_pam_find_flux() {
	local f
	for f in "${FLUX:-}" "$(command -v flux 2>/dev/null)" /opt/flux/bin/flux; do
		if test -n "$f" && test -x "$f"; then
			FLUX=$f
			export FLUX
			PATH="$(dirname "$f"):$PATH"
			export PATH
			return 0
		fi
	done
	return 1
}

# Skip the whole script unless flux-core >= 0.88 (Python broker modules).
flux_pam_require_flux() {
	test -n "$FLUX_PAM_UNDER_FLUX" && return 0
	if ! flux_pam_find_flux; then
		skip_all="flux-core not found (flux on PATH or /opt/flux/bin/flux)"
		test_done
	fi
	local v
	v=$("$FLUX" version 2>/dev/null | awk '/^commands:/ {print $2}')
	if ! "${PYTHON:-python3}" -c '
import sys
v = sys.argv[1].split("-")[0].split(".")
sys.exit(0 if tuple(int(x) for x in v[:2]) >= (0, 88) else 1)' "${v:-0.0}" \
		2>/dev/null; then
		skip_all="flux-core ${v:-?} is older than 0.88"
		test_done
	fi
}

# Skip the whole script unless the systemd test bed is reachable.
flux_pam_require_testbed() {
	testbed_cpuset_prereq
	test -n "$FLUX_PAM_UNDER_FLUX" && return 0
	if test -z "$DBUS_SYSTEM_BUS_ADDRESS" || test -z "$FLUX_PAM_TESTBED"; then
		skip_all="no systemd test bed: DBUS_SYSTEM_BUS_ADDRESS and"
		skip_all="$skip_all FLUX_PAM_TESTBED unset (eval \$(t/testbed.py up))"
		test_done
	fi
	local state
	state=$(testbed_manager_property SystemState 2>&1)
	case "$state" in
	*running* | *degraded*) ;;
	*)
		skip_all="test bed $FLUX_PAM_TESTBED not reachable: $state"
		test_done
		;;
	esac
}

# The instance's config directory (created once; see FLUX_PAM_CONFDIR).
# Safe to call in a command substitution: the name depends only on the outer
# script's PID ($$ is the same in subshells).
flux_pam_confdir() {
	if test -z "$FLUX_PAM_CONFDIR"; then
		FLUX_PAM_CONFDIR="${TMPDIR:-/tmp}/flux-pam-conf.$$"
		export FLUX_PAM_CONFDIR
	fi
	mkdir -p "$FLUX_PAM_CONFDIR" && chmod 700 "$FLUX_PAM_CONFDIR" &&
		echo "$FLUX_PAM_CONFDIR"
}

# Re-execute this script inside `flux start --test-size=SIZE`.
#
# As root, the instance runs in t/node-view: with a /run/flux-pam of its own,
# and the test bed's cgroup2 tree (if one is up) where the module and the
# drop-ins read user slices, as on a node of the test bed.  Its config lets
# guests' jobs run under the test execution (pam_submit).
# Usage: test_under_flux_pam SIZE [flux-start options]
test_under_flux_pam() {
	local size=$1 rc flags="" view=""
	shift
	if test -n "$FLUX_PAM_UNDER_FLUX"; then
		flux_pam_find_flux
		return 0
	fi
	flux_pam_confdir >/dev/null
	printf '[exec.testexec]\nallow-guests = true\n' \
		>"$FLUX_PAM_CONFDIR/testexec.toml"
	test "$(id -u)" = 0 && view="$FLUX_PAM_SRCDIR/t/node-view"
	test "$verbose" = "t" && flags="$flags --verbose"
	test "$debug" = "t" && flags="$flags --debug"
	test "$immediate" = "t" && flags="$flags --immediate"
	export FLUX_PAM_UNDER_FLUX=1
	export FLUX_MODULE_PATH_PREPEND="$FLUX_PAM_SRCDIR/modules"
	export FLUX_MODPROBE_PATH_APPEND="$FLUX_PAM_SRCDIR/etc/flux/modprobe"
	export PYTHONPATH="$FLUX_PAM_SRCDIR${PYTHONPATH:+:$PYTHONPATH}"
	export FLUX_PAM_BROKER_LOG="$SHARNESS_TEST_DIRECTORY/$(basename "$0" .t).broker.log"
	cd "$SHARNESS_TEST_DIRECTORY" || exit 1
	rm -f "$FLUX_PAM_BROKER_LOG"
	$view "$FLUX" start --test-size="$size" -c "$FLUX_PAM_CONFDIR" \
		-Slog-filename="$FLUX_PAM_BROKER_LOG" -Slog-level=7 \
		"$@" bash "$SHARNESS_TEST_FILE" $flags
	rc=$?
	flux_pam_busproxy_cleanup
	rm -rf "$FLUX_PAM_CONFDIR"
	test "$debug" = "t" || test $rc -ne 0 || rm -f "$FLUX_PAM_BROKER_LOG"
	trap - EXIT # the inner script ran test_done; do not let sharness die()
	exit $rc
}

# The CPUSET prereq: the test bed's container has the cpuset controller
# (t/testbed.py up with FLUX_PAM_TESTBED_CPUSET=1, where the host allows it);
# FLUX_PAM_TESTBED_CGROUP is its cgroup2 root (t/node-view).  Without it,
# say why once (the tests that need it are then skipped).
testbed_cpuset_prereq() {
	if grep -qw cpuset "$FLUX_PAM_TESTBED_CGROUP/cgroup.controllers" 2>/dev/null; then
		test_set_prereq CPUSET
	elif test -z "$FLUX_PAM_UNDER_FLUX"; then
		local why
		why=$("${PYTHON:-python3}" "$FLUX_PAM_SRCDIR/t/testbed.py" status \
			--name "$FLUX_PAM_TESTBED" 2>/dev/null | jq -r .cpuset 2>/dev/null)
		echo "# test bed $FLUX_PAM_TESTBED has no cpuset controller: ${why:-unknown}"
	fi
}

# RPC helper: pam_rpc [--rank N] TOPIC [PAYLOAD_JSON]; prints the response.
pam_rpc() {
	flux python "$FLUX_PAM_LIB/rpc.py" "$@"
}

# pam.status of one rank, as JSON.
pam_status() {
	local payload=${2:-}
	test -n "$payload" || payload='{}'
	pam_rpc --rank "$1" pam.status "$payload"
}

# Print "uid:job,job uid:job" for a rank's users (jobs sorted), or nothing.
pam_users() {
	local st
	st=$(pam_status "$1") || return 1
	echo "$st" | jq -r '[.users[] | select(.jobs != []) | "\(.uid):\([.jobs[].id] | sort | map(tostring) | join(","))"] | join(" ")'
}

# Wait until no systemd operation is queued or running on RANKS (idset-ish
# list "0 1 2 3"); fail after ${2:-30} seconds.
pam_wait_idle() {
	local ranks=$1 deadline=$(($(date +%s) + ${2:-30})) r busy
	while :; do
		busy=
		for r in $ranks; do
			test "$(pam_status "$r" | jq .pending)" = 0 || busy=$r
		done
		test -z "$busy" && return 0
		if test "$(date +%s)" -ge $deadline; then
			echo "pam_wait_idle: rank $busy still busy" >&2
			pam_status "$busy" >&2
			return 1
		fi
		sleep 0.1
	done
}

# Wait until `pam_users RANK` prints EXPECTED; fail after ${3:-30} seconds.
pam_wait_users() {
	local rank=$1 expected=$2 deadline=$(($(date +%s) + ${3:-30})) got
	while :; do
		got=$(pam_users "$rank") && test "$got" = "$expected" && return 0
		if test "$(date +%s)" -ge $deadline; then
			echo "rank $rank users: '$got', expected '$expected'" >&2
			return 1
		fi
		sleep 0.1
	done
}

# Submit a job of UID, which is UID's own: signed as UID and submitted with
# FLUX_HANDLE_USERID, as flux-core's tests do (t/guestjobs.py).  It runs
# under the test execution, which starts no process: the COMMAND `true` ends
# at once, any other (`sleep inf`) runs until cancelled.  Prints the job ID
# (one per copy with --count=N).  PAM_SUBMIT_VIA prefixes the flux commands
# (t0500: as_owner); FLUX_PAM_GUESTJOBS is where t/guestjobs.py is.
# Usage: pam_submit UID [--count=N] [flux run options] COMMAND...
pam_submit() {
	local uid=$1 count=1 duration=0s
	shift
	case "$1" in --count=*) count=${1#--count=} && shift ;; esac
	test "${*: -1}" = true && duration=0.01s
	$PAM_SUBMIT_VIA flux run --dry-run \
		--setattr=system.exec.test.run_duration=$duration "$@" |
		$PAM_SUBMIT_VIA flux python \
			"${FLUX_PAM_GUESTJOBS:-$FLUX_PAM_SRCDIR/t/guestjobs.py}" \
			--count="$count" "$uid"
}

# systemd in the test bed --------------------------------------------------

testbed_busctl() {
	busctl --address="${FLUX_PAM_REAL_BUS:-$DBUS_SYSTEM_BUS_ADDRESS}" "$@"
}

# testbed_manager_property NAME -> busctl's "TYPE VALUE" line
testbed_manager_property() {
	testbed_busctl get-property org.freedesktop.systemd1 \
		/org/freedesktop/systemd1 org.freedesktop.systemd1.Manager "$1"
}

# testbed_unit_property UNIT PROPERTY -> value, as `systemctl show -P` prints it
testbed_unit_property() {
	systemctl -M "$FLUX_PAM_TESTBED" show -P "$2" "$1"
}

# testbed_unit_state UNIT -> ActiveState (inactive if not loaded)
testbed_unit_state() {
	testbed_unit_property "$1" ActiveState
}

# Number of processes in a unit's cgroup, subunits included (0 if not loaded).
testbed_unit_tasks() {
	local out
	out=$(testbed_busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
		org.freedesktop.systemd1.Manager GetUnitProcesses s "$1" 2>/dev/null) ||
		{ echo 0; return 0; }
	set -- $out
	echo "${2:-0}"
}

# Run a command inside the test bed (t/testbed.py run).
testbed_run() {
	"${PYTHON:-python3}" "$FLUX_PAM_SRCDIR/t/testbed.py" run --name "$FLUX_PAM_TESTBED" "$@"
}

# D-Bus proxy: make the test bed's systemd unreachable and back ----------

# Before test_under_flux_pam: route the instance's DBUS_SYSTEM_BUS_ADDRESS
# through sharness/lib/busproxy.py; the test bed helpers keep the real bus.
flux_pam_use_busproxy() {
	test -n "$FLUX_PAM_UNDER_FLUX" && return 0
	local dir
	dir=$(mktemp -d "${TMPDIR:-/tmp}/flux-pam-bus.XXXXXX")
	export FLUX_PAM_REAL_BUS="$DBUS_SYSTEM_BUS_ADDRESS"
	export FLUX_PAM_BUS_TARGET="${DBUS_SYSTEM_BUS_ADDRESS#unix:path=}"
	export FLUX_PAM_BUS_PROXY="$dir/system_bus_socket"
	export FLUX_PAM_BUS_PIDFILE="$dir/proxy.pid"
	busproxy_start || return 1
	export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$FLUX_PAM_BUS_PROXY"
}

busproxy_start() {
	rm -f "$FLUX_PAM_BUS_PIDFILE"
	"${FLUX_PAM_PYTHON:-/usr/bin/python3}" "$FLUX_PAM_LIB/busproxy.py" \
		"$FLUX_PAM_BUS_PROXY" "$FLUX_PAM_BUS_TARGET" "$FLUX_PAM_BUS_PIDFILE" \
		</dev/null >/dev/null 2>&1 &
	local i=0
	while ! test -S "$FLUX_PAM_BUS_PROXY" || ! test -s "$FLUX_PAM_BUS_PIDFILE"; do
		i=$((i + 1))
		test $i -gt 100 && return 1
		sleep 0.05
	done
}

busproxy_stop() {
	local pid
	pid=$(cat "$FLUX_PAM_BUS_PIDFILE" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null
	while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
	rm -f "$FLUX_PAM_BUS_PIDFILE"
}

# Freeze the proxy (SIGSTOP): connections hang instead of failing, as with
# a systemd that does not answer.  busproxy_resume undoes it.
busproxy_pause() {
	kill -STOP "$(cat "$FLUX_PAM_BUS_PIDFILE")"
}

busproxy_resume() {
	kill -CONT "$(cat "$FLUX_PAM_BUS_PIDFILE")"
}

# Called by the outer script when the instance has exited.
flux_pam_busproxy_cleanup() {
	test -n "$FLUX_PAM_BUS_PIDFILE" || return 0
	busproxy_stop
	rm -rf "$(dirname "$FLUX_PAM_BUS_PIDFILE")"
}

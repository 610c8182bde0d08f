# Helpers for the prolog/housekeeping tests (sharness/t04xx-perilog-*.t).
#
# Source after lib/init.sh (which loads sharness.d/flux-pam.sh):
#
#   . "$(dirname "$0")"/lib/init.sh
#   . "$(dirname "$0")"/lib/perilog.sh
#   flux_pam_require_flux
#   perilog_require_testbed       # brings a test bed up if none is exported
#   perilog_write_config          # the instance's boot config (no [pam] table)
#   test_under_flux_pam 2
#
# The instance boots with perilog.so (per-rank prolog) and housekeeping
# running the repo's executables directly (a test instance has no IMP), and
# without a [pam] table, so the pam module is not loaded: the executables
# work alone.  perilog_config_load then loads the full config, [pam]
# included, on every rank (each broker has its own config).
#
# Variables exported to the instance (the executables inherit them):
#   FLUX_PAM_SCRIPTS_DEBUG  1: the action trace lands in the broker log
#   PERILOG_UID             the job user (alice, 1000, in the test bed)
# The executables keep their locks and markers in /run/flux-pam, the
# instance's own (t/node-view).

PERILOG_PROLOG="$FLUX_PAM_SRCDIR/libexec/prolog.d/flux-pam-prolog"
PERILOG_LOCK_DIR=/run/flux-pam
PERILOG_HOUSEKEEPING="$FLUX_PAM_SRCDIR/libexec/housekeeping.d/flux-pam-housekeeping"
: "${PERILOG_UID:=1000}"
export PERILOG_UID

# Bring up a test bed of our own when the runner did not export one; it is
# brought down when the outer script exits.  Skip all if it cannot run.
perilog_require_testbed() {
	test -n "$FLUX_PAM_UNDER_FLUX" && return 0
	if test -z "$DBUS_SYSTEM_BUS_ADDRESS" || test -z "$FLUX_PAM_TESTBED"; then
		local py="${PYTHON:-python3}" out
		if ! out=$("$py" "$FLUX_PAM_SRCDIR/t/testbed.py" can-run 2>&1); then
			skip_all="no systemd test bed: $(echo "$out" | tail -1)"
			test_done
		fi
		PERILOG_OWN_TESTBED="flux-pam-perilog-$$"
		if ! out=$("$py" "$FLUX_PAM_SRCDIR/t/testbed.py" up \
			--name "$PERILOG_OWN_TESTBED" 2>&1); then
			"$py" "$FLUX_PAM_SRCDIR/t/testbed.py" down \
				--name "$PERILOG_OWN_TESTBED" >/dev/null 2>&1
			skip_all="test bed failed to come up: $(echo "$out" | tail -1)"
			test_done
		fi
		eval "$(echo "$out" | grep '^export ')"
		trap perilog_testbed_down EXIT
	fi
	flux_pam_require_testbed
}

perilog_testbed_down() {
	test -n "$PERILOG_OWN_TESTBED" || return 0
	"${PYTHON:-python3}" "$FLUX_PAM_SRCDIR/t/testbed.py" down \
		--name "$PERILOG_OWN_TESTBED" >/dev/null 2>&1
}

# The job-manager part of the config (perilog.so, our executables).
# Usage: perilog_jobmanager_toml [housekeeping-extra-line]
perilog_jobmanager_toml() {
	cat <<-EOF
	[job-manager]
	plugins = [ { load = "perilog.so" } ]

	[job-manager.prolog]
	per-rank = true
	command = [ "$PERILOG_PROLOG" ]

	[job-manager.housekeeping]
	command = [ "$PERILOG_HOUSEKEEPING" ]
	$1
	EOF
}

# Write the boot config (outer script, before test_under_flux_pam).
# Usage: perilog_write_config [housekeeping-extra-line]
perilog_write_config() {
	test -n "$FLUX_PAM_UNDER_FLUX" && return 0
	export FLUX_PAM_SCRIPTS_DEBUG=1
	# The executables run under /usr/bin/python3: give them flux's bindings
	# the way `flux python` would.
	PYTHONPATH=$("$FLUX" env sh -c 'printf %s "$PYTHONPATH"')
	export PYTHONPATH
	flux_pam_confdir >/dev/null # sets FLUX_PAM_CONFDIR in this shell
	perilog_jobmanager_toml "$1" >"$FLUX_PAM_CONFDIR/job-manager.toml"
}

# Load the full config (boot config plus the TOML on stdin) on rank 0, which
# passes it on to every rank; wait until the last rank has it.
perilog_config_load() {
	local dir="$PWD/conf.$$" want
	rm -rf "$dir" && mkdir -p "$dir" &&
	cp "$FLUX_PAM_CONFDIR"/*.toml "$dir"/ &&
	cat >"$dir/zz-test.toml" &&
	flux config load "$dir" &&
	want=$(flux config get | jq -S -c .) &&
	perilog_wait 10 perilog_config_is "$want"
}

perilog_config_is() {
	local r
	for r in $(seq 0 $(($(flux getattr size) - 1))); do
		test "$(flux exec -r $r flux config get | jq -S -c .)" = "$1" ||
			return 1
	done
}

# Load sdexec-mapper on every rank (the prolog's property lookup).
perilog_load_mapper() {
	flux exec -r all flux module load sdexec-mapper
}

perilog_remove_mapper() {
	flux exec -r all flux module remove sdexec-mapper
}

# Submit a job of PERILOG_UID (pam_submit); prints its id.
perilog_submit() {
	pam_submit "$PERILOG_UID" "$@"
}

# Wait until "CMD..." succeeds; fail after SECONDS.
# Usage: perilog_wait SECONDS CMD...
perilog_wait() {
	local deadline=$(($(date +%s) + $1))
	shift
	while ! "$@"; do
		if test "$(date +%s)" -ge $deadline; then
			echo "perilog_wait: timed out: $*" >&2
			return 1
		fi
		sleep 0.1
	done
}

# Wait until housekeeping of every job has finished (nothing allocated).
perilog_hk_idle() {
	test "$(flux module stats job-manager | jq '.housekeeping.running | length')" = 0
}

perilog_wait_hk_idle() {
	perilog_wait "${1:-60}" perilog_hk_idle
}

# The slice and the user manager in the test bed -------------------------

perilog_slice() {
	echo "user-${1:-$PERILOG_UID}.slice"
}

perilog_manager() {
	echo "user@${1:-$PERILOG_UID}.service"
}

# slice_prop PROPERTY [UID] -> the slice's property as systemctl show -P prints it
slice_prop() {
	testbed_unit_property "$(perilog_slice "$2")" "$1"
}

manager_state() {
	testbed_unit_state "$(perilog_manager "$1")"
}

# The units the slice holds (systemd's ConsistsOf), empty when unit-free.
slice_units() {
	slice_prop ConsistsOf "$1"
}

slice_cpus_are() {
	test "$(slice_prop AllowedCPUs "$2")" = "$1"
}

manager_is() {
	test "$(manager_state "$2")" = "$1"
}

slice_is_unit_free() {
	test -z "$(slice_units "$1")"
}

marker_exists() {
	test -f "$PERILOG_LOCK_DIR/uid.${1:-$PERILOG_UID}.active"
}

# Put the user back to the test bed's defaults (what an earlier, failed
# script may have left): no linger, user@ stopped, slice unconstrained.
perilog_reset_user() {
	local sd="systemctl -M $FLUX_PAM_TESTBED" name
	name=$(testbed_run -- id -nu "${1:-$PERILOG_UID}") &&
	testbed_run -- loginctl disable-linger "$name" &&
	$sd stop "$(perilog_manager "$1")" &&
	$sd reset-failed "$(perilog_manager "$1")" 2>/dev/null
	$sd set-property --runtime "$(perilog_slice "$1")" \
		AllowedCPUs= AllowedMemoryNodes= DevicePolicy=auto DeviceAllow= &&
	rm -f "$PERILOG_LOCK_DIR/uid.${1:-$PERILOG_UID}.active"
}

# The torn-down state: no marker, user@ not active, the slice unit-free and
# without constraints.
perilog_torn_down() {
	! marker_exists "$1" &&
	! manager_is active "$1" &&
	slice_is_unit_free "$1" &&
	slice_cpus_are "" "$1"
}

# The message prefix of one job's prolog or housekeeping, as an ERE:
# "flux-pam-prolog[ƒXXX]" (the F58 prefix is "f" in an ASCII locale, which
# sharness sets, so match either).
# Usage: perilog_tag prolog|housekeeping JOBID
perilog_tag() {
	printf 'flux-pam-%s\[(ƒ|f)%s\]' "$1" "$(perilog_f58digits "$2")"
}

# The F58 digits of a job id, without the prefix.
perilog_f58digits() {
	local id
	id=$(flux job id --to=f58plain "$1") || return 1
	id=${id#f}
	printf '%s' "${id#ƒ}"
}

# Broker log lines of one job's prolog or housekeeping.
# Usage: perilog_log prolog|housekeeping JOBID
perilog_log() {
	flux dmesg -H | grep -E "$(perilog_tag "$1" "$2")"
}

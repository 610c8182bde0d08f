# The concurrent stress of the prolog/housekeeping tests, shared by
# t0402 (executables alone) and t0403 (pam module loaded).
#
# The instance has a fake R: 50 cores on each of 2 ranks ([resource]
# noverify), mapped core N -> CPU N by lib/perilog_mapper.py, so 50 jobs of
# one user (one core each) run on rank 0 at the same time.
#
# Usage (outer script, before test_under_flux_pam):
#   perilog_stress_config [extra boot TOML on stdin]

PERILOG_NJOBS=${PERILOG_NJOBS:-50}

perilog_stress_config() {
	test -n "$FLUX_PAM_UNDER_FLUX" && return 0
	local dir
	perilog_write_config
	dir=$FLUX_PAM_CONFDIR
	"$FLUX" R encode -r 0-1 -c 0-$((PERILOG_NJOBS - 1)) -H "fake[0-1]" \
		>"$dir/R.json" || exit 1
	cat >"$dir/resource.toml" <<-EOT
	[resource]
	path = "$dir/R.json"
	noverify = true

	[sdexec]
	mapper = "perilog_mapper.IdentityMapper"
	mapper-searchpath = "$FLUX_PAM_LIB"
	EOT
	cat >"$dir/zz-boot.toml"
}

# The stress tests.  $1 describes the mode ("alone" or "module").
perilog_stress_tests() {
	test_expect_success "$1: $PERILOG_NJOBS jobs of one user start together" '
		perilog_submit --count=$PERILOG_NJOBS -n1 -c1 --requires=rank:0 \
			sleep inf >jobids &&
		test $(wc -l <jobids) -eq $PERILOG_NJOBS &&
		for id in $(cat jobids); do
			flux job wait-event -t 120 $id start || return 1
		done
	'
	test_expect_success "$1: every prolog succeeded" '
		for id in $(cat jobids); do
			flux job eventlog $id | grep "prolog-finish" |
				grep -q "status=0" || return 1
		done
	'
	test_expect_success "$1: the slice holds the union of all $PERILOG_NJOBS jobs" '
		manager_is active &&
		marker_exists &&
		slice_cpus_are 0-$((PERILOG_NJOBS - 1))
	'
	test_expect_success "$1: all end together" '
		flux cancel $(cat jobids) &&
		for id in $(cat jobids); do
			flux job wait-event -t 120 $id clean || return 1
		done &&
		perilog_wait_hk_idle 180
	'
	test_expect_success "$1: the user is torn down: unit-free slice, no marker" '
		perilog_wait 30 perilog_torn_down &&
		test "$(slice_prop DevicePolicy)" = auto
	'
	test_expect_success "$1: no rank was drained" '
		test -z "$(flux resource drain -no {ranks})"
	'
}

#!/bin/bash

test_description='node replica: a [pam] mistake on disk does not stop the node (issue 14, item 1)

kill-slice-grace-time = "abc" is written to pam.toml and flux.service is
restarted.  The broker comes up; the pam module runs closed: alice, who has
a running job, is refused with a message that does not blame her, the error
names the file and the key in the logs, flux pam status and flux pam check
show it, root gets in, jobs run and nothing drains.  After the file is fixed,
flux config reload reopens the module: alice gets in, confined.

Then the same mistake with the module removed (fallback): the drop-ins say
what is wrong, the job is not failed, the prolog writes the deny line in the
marker and pam_flux refuses alice with it.'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

CONF=$NODE_FLUX_CONF/pam.toml
MESSAGE="Access denied: logins to this node are suspended by a configuration error; ask your administrator"
KEY="$CONF: pam.kill-slice-grace-time"

# bad_value VALUE: put VALUE as kill-slice-grace-time into pam.toml
bad_value() {
	node_sh "sed -i 's/^kill-slice-grace-time = .*/kill-slice-grace-time = \"$1\"/' $CONF" &&
	node_sh "grep -x 'kill-slice-grace-time = \"$1\"' $CONF"
}

# denials: how many times the auth log has refused alice with MESSAGE
denials() {
	node_auth_log | grep -cF "access denied for user alice (uid=1000): $MESSAGE" || :
}

# refused_again N: alice is refused with MESSAGE a time more than N
refused_again() {
	node_wait 10 "test \$(denials) -gt $1"
}

# broker_up: wait until the restarted broker runs
broker_up() {
	node_wait 60 'node_flux uptime 2>/dev/null | grep -q " run "'
}

test_expect_success 'the replica boots with the pam module' '
	node_up &&
	node_flux module list | grep "^pam "
'
test_expect_success 'a bad value on disk, then systemctl restart flux' '
	bad_value abc &&
	node_run systemctl restart flux </dev/null
'
test_expect_success 'the broker is up (flux uptime) and the module is loaded' '
	broker_up &&
	node_flux uptime &&
	test "$(node_prop flux.service ActiveState)" = active &&
	node_flux module list | grep "^pam "
'
test_expect_success 'the module logged the error once at error level, naming file and key' '
	node_flux dmesg >dmesg.closed &&
	grep "pam.err\[0\]: invalid configuration: $KEY: \"abc\"" dmesg.closed &&
	test $(grep -c "invalid configuration: $KEY" dmesg.closed) -eq 1
'
test_expect_success 'flux pam status shows the closed state with file and key' '
	node_flux pam status >status.closed &&
	cat status.closed &&
	grep "rank 0: closed, job users cannot log in (invalid configuration: $KEY" status.closed
'
test_expect_success 'flux pam check FAILs config and module, naming the key' '
	test_must_fail node_flux pam check >check.closed &&
	cat check.closed &&
	grep "^FAIL  config: pam.toml: pam.kill-slice-grace-time" check.closed &&
	grep "^FAIL  module: pam module on rank 0 is closed.*$KEY" check.closed
'
test_expect_success 'a job of alice runs' '
	id=$(node_submit alice -n1 sleep inf) &&
	echo $id >bc.job &&
	node_job_started $id &&
	test "$(node_flux jobs -no {state} $id)" = RUN
'
test_expect_success 'alice is refused; her ssh client shows the message; pam.check names file and key' '
	n=$(denials) &&
	node_refused_says alice "$MESSAGE" bc.told &&
	refused_again $n &&
	node_run flux python "$FLUX_PAM_SRCDIR/sharness/lib/rpc.py" pam.check \
		"{\"uid\": 1000}" </dev/null >bc.check &&
	jq -r .reason bc.check | grep -F "invalid configuration: $KEY"
'
test_expect_success 'root gets in' '
	node_ssh root id -u >bc.root &&
	test "$(cat bc.root)" = 0
'
test_expect_success 'no node was drained for the mistake' '
	test -z "$(node_drained)"
'
test_expect_success 'the file is fixed and flux config reload reopens the module' '
	bad_value 30s &&
	node_flux config reload &&
	node_flux pam status >status.open &&
	! grep closed status.open &&
	node_flux dmesg | grep "pam.warning\[0\]: configuration valid again"
'
test_expect_success 'alice gets in, into her slice, confined to her job' '
	node_job_cores $(cat bc.job) >bc.cores &&
	node_wait 20 "test \"\$(node_prop user-1000.slice AllowedCPUs)\" = $(cat bc.cores)" &&
	test "$(node_prop user-1000.slice DevicePolicy)" = closed &&
	node_login_cgroup alice >bc.cg &&
	grep -E "^/user.slice/user-1000.slice/flux-pam-[0-9]+.scope$" bc.cg
'
test_expect_success CPUSET 'the kernel holds her login to her job'\''s cores' '
	node_login_allowed alice >bc.allowed &&
	test "$(cut -d" " -f1 bc.allowed)" = "$(cat bc.cores)"
'
test_expect_success 'her login cannot open a device the slice does not allow' '
	node_sh "test -e /dev/flux-pam-probe || mknod -m 0666 /dev/flux-pam-probe c 10 200" &&
	node_run -u alice sh -c "exec 3</dev/flux-pam-probe" </dev/null &&
	test_must_fail node_ssh alice "exec 3</dev/flux-pam-probe" 2>bc.dev &&
	grep "Operation not permitted" bc.dev
'
test_expect_success 'the job ends, the slice is torn down, nothing drained' '
	node_flux cancel $(cat bc.job) &&
	node_job_gone $(cat bc.job) &&
	node_wait 10 "test \"\$(node_unit_state user@1000.service)\" = inactive" &&
	test -z "$(node_drained)"
'

# fallback: the drop-ins alone
test_expect_success 'fallback: the module is removed, the bad value is reloaded' '
	node_flux module remove pam &&
	bad_value abc &&
	node_flux config reload
'
test_expect_success 'fallback: a job of alice runs; its prolog did not fail' '
	id=$(node_submit alice -n1 sleep inf) &&
	echo $id >fb.job &&
	node_job_started $id &&
	node_flux job wait-event -t 30 -f json $id prolog-finish >fb.prolog &&
	jq -e ".context.status == 0" fb.prolog
'
test_expect_success 'fallback: the prolog said what is wrong, in the journal and flux dmesg' '
	unit=flux-prolog@$(node_flux job id --to=f58plain $(cat fb.job)).service &&
	node_run journalctl -b --no-pager -o cat -u $unit </dev/null >fb.journal &&
	grep "flux-pam-prolog\[.*\]: invalid configuration: $KEY" fb.journal &&
	node_flux dmesg | grep "flux-pam-prolog.err\[0\]: .*invalid configuration: $KEY"
'
test_expect_success 'fallback: the marker denies, and pam_flux refuses alice with it' '
	node_sh "head -1 /run/flux-pam/uid.1000.active" >fb.marker &&
	test "$(cat fb.marker)" = "deny: $MESSAGE" &&
	n=$(denials) &&
	test_must_fail node_ssh alice true &&
	refused_again $n
'
test_expect_success 'fallback: root gets in, nothing drained' '
	node_ssh root true &&
	test -z "$(node_drained)"
'
test_expect_success 'fallback: the job ends; housekeeping removes the marker, not failing' '
	node_flux cancel $(cat fb.job) &&
	node_job_gone $(cat fb.job) &&
	node_sh "test ! -e /run/flux-pam/uid.1000.active" &&
	test -z "$(node_drained)"
'
test_expect_success 'cleanup: the fixed file, the module back' '
	bad_value 30s &&
	node_flux config reload &&
	node_flux module load pam
'
test_done

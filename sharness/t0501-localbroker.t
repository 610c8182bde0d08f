#!/bin/bash

test_description='localbroker against a real broker, compared with libflux

pam_flux speaks the local connector itself (flux_pam_service.localbroker)
for local:// URIs; brokerclient.FluxBroker (libflux-core through cffi) is the
reference.  Each request goes through both clients (lib/localbroker_client.py
run by /usr/bin/python3 under `flux env`), and the results must agree:
values, errnos and error texts.'

. "$(dirname "$0")"/lib/init.sh

flux_pam_require_flux

cat >"$(flux_pam_confdir)"/localbroker.toml <<EOF
[localbroker-test]
name = "t0501 é"
list = [1, 2, 3]
EOF

test_under_flux_pam 1

# client CLIENT ARGS...: one request through one client
client() {
	flux env "${FLUX_PAM_PYTHON:-/usr/bin/python3}" \
		"$FLUX_PAM_LIB/localbroker_client.py" "$@"
}

# both NAME ARGS...: the request through both clients into NAME.local and
# NAME.libflux (stdout), NAME.local.err and NAME.libflux.err (stderr);
# returns 99 unless both exit alike with the same output, else their status.
both() {
	local name=$1 rc_local rc_libflux
	shift
	client local "$@" >"$name.local" 2>"$name.local.err"
	rc_local=$?
	client libflux "$@" >"$name.libflux" 2>"$name.libflux.err"
	rc_libflux=$?
	test_debug "cat $name.local $name.local.err $name.libflux $name.libflux.err"
	test "$rc_local" = "$rc_libflux" || {
		echo "local exited $rc_local, libflux $rc_libflux" >&2
		cat "$name.local.err" "$name.libflux.err" >&2
		return 99
	}
	test_cmp "$name.libflux" "$name.local" || return 99
	return "$rc_local"
}

test_expect_success 'both clients run under flux env' '
	client local attr rank &&
	client libflux attr rank
'
test_expect_success 'attr rank: the same value, as flux getattr gives it' '
	both rank attr rank &&
	echo "\"$(flux getattr rank)\"" >rank.expected &&
	test_cmp rank.expected rank.local
'
test_expect_success 'attr security.owner: the same value, the instance owner' '
	both owner attr security.owner &&
	echo "\"$(id -u)\"" >owner.expected &&
	test_cmp owner.expected owner.local
'
test_expect_success 'an unknown attribute fails with ENOENT in both' '
	test_expect_code 1 both noattr attr no.such.attribute &&
	echo "errno ENOENT" >noattr.expected &&
	test_cmp noattr.expected noattr.local
'
test_expect_success 'an unknown topic fails with ENOSYS in both' '
	test_expect_code 1 both nosys rpc no-such-service.method "{}" &&
	echo "errno ENOSYS" >nosys.expected &&
	test_cmp nosys.expected nosys.local
'
test_expect_success 'a refused request gives the same errno and error text' '
	test_expect_code 1 both badreq rpc job-list.list "{\"max_entries\": \"x\"}" &&
	echo "errno EPROTO" >badreq.expected &&
	test_cmp badreq.expected badreq.local &&
	test_cmp badreq.libflux.err badreq.local.err &&
	grep -i "payload" badreq.local.err
'
test_expect_success 'config.get: the same config, with the test table' '
	both config rpc config.get "{}" &&
	jq -e ".\"localbroker-test\" == {\"name\": \"t0501 é\", \"list\": [1, 2, 3]}" \
		config.local
'
test_expect_success 'job-list.list after a submitted job: the same jobs' '
	jobid=$(flux submit sleep inf) &&
	flux job wait-event -t 30 $jobid start &&
	attrs="\"userid\",\"urgency\",\"priority\",\"t_submit\",\"t_depend\"" &&
	attrs="$attrs,\"t_run\",\"state\",\"name\",\"cwd\",\"ntasks\",\"nnodes\"" &&
	attrs="$attrs,\"ranks\",\"nodelist\",\"expiration\",\"duration\",\"queue\"" &&
	attrs="$attrs,\"success\",\"result\",\"waitstatus\",\"exception_occurred\"" &&
	attrs="$attrs,\"t_sched\",\"t_priority\",\"ncores\"" &&
	echo "{\"max_entries\": 10, \"attrs\": [$attrs]}" >joblist.json &&
	test $(wc -c <joblist.json) -ge 255 &&
	both joblist rpc job-list.list @joblist.json &&
	jq -e ".jobs | length == 1" joblist.local &&
	jq -e ".jobs[0].id == $(flux job id $jobid)" joblist.local &&
	jq -e ".jobs[0].userid == $(id -u) and .jobs[0].name == \"sleep\"" joblist.local &&
	flux cancel $jobid
'
# broker.ping echoes its payload (plus route, userid, rolemask, rank);
# the route names the connection, so it differs between the clients.
ping_payload() {
	jq -n --argjson n $1 "{seq: 1, pad: (\"é\" + \"x\" * (\$n - 1))}" >$2
}
# ping_echoed NAME: both clients ping with NAME.json; the pad comes back intact
ping_echoed() {
	both $1 --drop route rpc broker.ping @$1.json &&
	jq .pad $1.json >$1.pad.expected &&
	jq .pad $1.local >$1.pad &&
	test_cmp $1.pad.expected $1.pad
}
test_expect_success 'a request of 255 bytes or more is echoed the same' '
	ping_payload 300 ping300.json &&
	test $(wc -c <ping300.json) -ge 255 &&
	ping_echoed ping300 &&
	jq -e ".seq == 1" ping300.local &&
	jq -e ".userid == $(id -u)" ping300.local
'
test_expect_success 'a request and reply over 64 KiB are echoed the same' '
	ping_payload 300000 pingbig.json &&
	test $(wc -c <pingbig.json) -gt 65536 &&
	ping_echoed pingbig
'
test_expect_success 'the ping route through localbroker ends at this broker' '
	client local rpc broker.ping "{\"seq\": 2}" >route.out &&
	jq -e ".route | test(\"^[0-9a-f]{8}(![0-9a-f]{8})+$\")" route.out
'
test_expect_success 'an unreachable socket fails with ENOENT naming the path' '
	missing="$(pwd)/no-such-dir/local" &&
	test_expect_code 1 client local --uri "local://$missing" attr rank \
		>missing.out 2>missing.err &&
	echo "errno ENOENT" >missing.expected &&
	test_cmp missing.expected missing.out &&
	grep -F "$missing" missing.err &&
	test_expect_code 1 client libflux --uri "local://$missing" attr rank \
		>missing.libflux &&
	test_cmp missing.expected missing.libflux
'

test_done

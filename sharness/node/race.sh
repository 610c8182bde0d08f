#!/bin/bash
# Race of alice's logins against the end of her last job, on the node replica.
# Runs INSIDE the replica as root (node.py run -- .../race.sh MODE ROUNDS).
#
# MODE: keep (kill-user-slice=false) or kill (kill-user-slice=true, grace 1s);
# the config is set by the caller.  Every round:
#   1. alice submits `sleep inf`; wait for start (the prolog has run);
#   2. concurrently: cancel the job after a random 0-990 ms, and start an ssh
#      login of alice that records its shell's pid and sleeps;
#   3. wait for the job's clean event, then until no housekeeping is left;
#   4. check (an escape is counted for each violation):
#      - user@1000.service is inactive;
#      - kill: no process at all is left in user-1000.slice;
#      - keep: every flux-pam-*.scope left in user-1000.slice was started
#        before the stop of user@1000.service began (the order of PID 1's
#        journal entries: "Started flux-pam-N.scope" vs "Stopping
#        user@1000.service"); teardown marks the user inactive before it
#        stops user@, so a scope started later must have been refused and
#        removed;
#      - a new login right after teardown is refused;
#   5. end any surviving login.
# Output: one line per round, then
#   race MODE: rounds N admitted A refused R escapes E
# Exit status 0 if no escape, 1 otherwise.
#
# MODE selftest-keep / selftest-kill: one round without a race, then a
# stand-in for an escaped login (a flux-pam-*.scope of alice started in
# user-1000.slice after the teardown, as root code would) and the checks;
# exit 0 only if they report it.

set -u
mode=$1
rounds=${2:-1}
case "$mode" in
keep | kill | selftest-keep | selftest-kill) ;;
*) echo "usage: race.sh keep|kill|selftest-keep|selftest-kill ROUNDS" >&2; exit 2 ;;
esac
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
slice=/sys/fs/cgroup/user.slice/user-1000.slice
ssh_opts="-o ConnectTimeout=20"

prop() { systemctl show -P "$2" "$1"; }

slice_pids() {
	find "$slice" -name cgroup.procs -exec cat {} + 2>/dev/null
}

housekeeping_idle() {
	local i
	for i in $(seq 600); do
		test -z "$(flux housekeeping list -no {id} 2>/dev/null)" && return 0
		sleep 0.05
	done
	echo "housekeeping still running after 30s" >&2
	return 1
}

end_logins() {
	systemctl kill -s KILL user-1000.slice 2>/dev/null
	local i
	for i in $(seq 100); do
		test -z "$(slice_pids)" && return 0
		sleep 0.05
	done
}

# check_round MODE CURSOR: append the violations found after a teardown to $why
check_round() {
	local mode=$1 cursor=$2 left stopped scope entered
	if test "$(prop user@1000.service ActiveState)" != inactive; then
		why="$why user@1000:$(prop user@1000.service ActiveState)"
	fi
	if test "$mode" = kill; then
		# the kill sequence is part of the teardown housekeeping waits for
		left=$(slice_pids | tr '\n' ' ')
		test -n "$left" && why="$why left-in-slice:[$left]"
	else
		# order of PID 1's own journal entries (user@1000 is unloaded once
		# stopped, so its unit timestamps are gone)
		journalctl --sync
		journalctl --after-cursor="$cursor" _PID=1 -o json >/tmp/race.journal
		stopped=$(jq -r 'select(.UNIT == "user@1000.service" and .JOB_TYPE == "stop")
			| .__MONOTONIC_TIMESTAMP' /tmp/race.journal | head -1)
		if test -z "$stopped"; then
			why="$why user@1000-never-stopped"
		else
			for scope in $(systemctl list-units --plain --no-legend --state=active \
				'flux-pam-*.scope' | awk '{print $1}'); do
				test "$(prop "$scope" Slice)" = user-1000.slice || continue
				entered=$(jq -r --arg u "$scope" 'select(.UNIT == $u and .JOB_TYPE == "start")
					| .__MONOTONIC_TIMESTAMP' /tmp/race.journal | head -1)
				if test -z "$entered" || test "$entered" -gt "$stopped"; then
					why="$why $scope:started-after-teardown(${entered:-?}>$stopped)"
				fi
			done
		fi
	fi
	if ssh $ssh_opts alice@127.0.0.1 true </dev/null >/dev/null 2>&1; then
		why="$why login-admitted-after-teardown"
	fi
}

cursor_now() {
	journalctl -n0 --show-cursor -q | sed -n 's/^-- cursor: //p'
}

if test "${mode#selftest-}" != "$mode"; then
	mode=${mode#selftest-}
	why=
	cursor=$(cursor_now)
	id=$(runuser -u alice -- flux submit -n1 sleep inf) || exit 2
	flux job wait-event -t 30 "$id" start >/dev/null || exit 2
	flux cancel "$id"
	flux job wait-event -t 30 "$id" clean >/dev/null || exit 2
	housekeeping_idle || exit 2
	systemd-run --quiet --scope --unit="flux-pam-selftest$$.scope" \
		--slice=user-1000.slice --uid=alice sleep 60 &
	for i in $(seq 100); do
		test -n "$(slice_pids)" && break
		sleep 0.05
	done
	check_round "$mode" "$cursor"
	end_logins
	wait
	echo "selftest $mode: the checks report:${why:- nothing}"
	test -n "$why"
	exit $?
fi

admitted=0
refused=0
escapes=0
t0=$(date +%s)
for round in $(seq "$rounds"); do
	why=
	rm -f /tmp/race.pid
	cursor=$(cursor_now)
	id=$(runuser -u alice -- flux submit -n1 sleep inf) || { echo "round $round: submit failed"; exit 2; }
	flux job wait-event -t 30 "$id" start >/dev/null || { echo "round $round: $id did not start"; exit 2; }
	delay=$((RANDOM % 100))
	(sleep "0.$(printf %02d $delay)"; flux cancel "$id") &
	cancel=$!
	ssh $ssh_opts alice@127.0.0.1 -- 'echo $$ >/tmp/race.pid; exec sleep 60' \
		</dev/null >/dev/null 2>&1 &
	client=$!
	wait $cancel
	flux job wait-event -t 30 "$id" clean >/dev/null || { echo "round $round: $id not clean"; exit 2; }
	housekeeping_idle || exit 2
	# the login has either been refused (client gone) or its shell started
	for i in $(seq 200); do
		test -s /tmp/race.pid && break
		kill -0 $client 2>/dev/null || break
		sleep 0.05
	done
	if test -s /tmp/race.pid; then
		result=admitted
		admitted=$((admitted + 1))
	else
		result=refused
		refused=$((refused + 1))
	fi
	check_round "$mode" "$cursor"
	if test -n "$why"; then
		escapes=$((escapes + 1))
		echo "round $round job $id cancel+${delay}0ms $result ESCAPE:$why"
	else
		echo "round $round job $id cancel+${delay}0ms $result ok"
	fi
	end_logins
	kill $client 2>/dev/null
	wait $client 2>/dev/null
done
echo "race $mode: rounds $rounds admitted $admitted refused $refused escapes $escapes ($(($(date +%s) - t0))s)"
test $escapes = 0

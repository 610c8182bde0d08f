# pam_flux against a real Flux instance: an instance owned by an unprivileged
# uid, and pamtester running pam_flux.so (built from pam/pam_flux.c) as root.
#
# Source after lib/init.sh and flux_pam_require_flux:
#
#   . "$FLUX_PAM_LIB/pamflux.sh"
#   pamflux_require                 # skip_all unless root, pamtester, the
#                                   # module builds, ...
#   pamflux_users                   # passwd/group for nss_wrapper
#   pamflux_stack [OPTION...]       # pam.d/sshd: account pam_flux OPTION...
#   pamflux_start NAME SIZE [module]  # instance owned by $PAMFLUX_OWNER_UID
#   pamtest USER [PAM_OP...]        # pamtester sshd USER (default acct_mgmt)
#   as_owner CMD...                 # run CMD as the instance owner
#   pamflux_stop                    # shut the instance down
#   pamflux_cleanup                 # remove PAMFLUX_WORLD (at exit)
#
# Why an unprivileged owner.  pam_flux admits root at once, and in a test
# instance every job belongs to the instance owner, so with root as owner no
# job could ever admit anybody through job-list.  The instance is therefore
# started as PAMFLUX_OWNER_UID (a uid without a passwd entry on the host) with
# access.allow-root-owner, the way a system instance owned by `flux` is run
# (doc/design.rst, "Privilege"), and pamtester runs as root, as sshd does.
#
# Users.  pamtester and the instance run with libnss_wrapper preloaded and a
# passwd file in the trash directory, so no account is added to the host:
#   alice  PAMFLUX_OWNER_UID  the instance owner; her jobs are what job-list
#                             reports (the pam module ignores the owner)
#   bob    PAMFLUX_BOB_UID    a job user whose jobs alice submits as him
#                             (pam_submit; module only)
#   nobody 65534              never has a job; the guest
#
# The PAM stack is read from the trash directory's pam.d (libpam_wrapper).
# FLUX_URI (exported by pamflux_start) tells pam_flux where the local broker
# is; set it to another rank's local-uri to ask that rank.
#
# Another uid.  Everything the instance owner reads or writes (the broker
# module and modprobe files, the passwd/group files, the instance's config,
# home and run directories) is in PAMFLUX_WORLD, a directory made for the
# script under $TMPDIR (/tmp) that every uid can enter, with a copy of the
# package: the checkout, and the trash directory in it, may be below a
# directory only root can enter (/root is 0700 on Debian).  What runs as
# root (pamtester, pam_flux) reads the checkout.

PAMFLUX_MODULE=
PAMFLUX_INSTANCE_DIR=
PAMFLUX_BROKER_PID=

# Skip the whole script unless everything pam_flux needs is here.
pamflux_require() {
	local missing="" p
	test "$(id -u)" = 0 || missing="$missing root (instance as another uid, pam_flux as root);"
	command -v pamtester >/dev/null || missing="$missing pamtester;"
	command -v setpriv >/dev/null || missing="$missing setpriv (util-linux);"
	command -v jq >/dev/null || missing="$missing jq;"
	local status
	status=$(make --no-print-directory -s -C "$FLUX_PAM_SRCDIR/pam" status 2>&1)
	case "$status" in
	buildable*)
		if make --no-print-directory -s -C "$FLUX_PAM_SRCDIR/pam" \
			>pam-build.log 2>&1; then
			PAMFLUX_MODULE=$FLUX_PAM_SRCDIR/build/pam_flux.so
		else
			missing="$missing pam_flux.so to build (see pam-build.log);"
		fi ;;
	*)	missing="$missing pam_flux.so ($status);" ;;
	esac
	for p in "libpam_wrapper.so libpam-wrapper" "libnss_wrapper.so libnss-wrapper"; do
		set -- $p
		if LD_PRELOAD=$1 /bin/true 2>&1 | grep -q "cannot be preloaded"; then
			missing="$missing $1 ($2);"
		fi
	done
	if test -n "$missing"; then
		skip_all="pam_flux broker tier needs:$missing"
		test_done
	fi
	export PAMFLUX_MODULE
}

# PAMFLUX_WORLD: create it with the package copied in (see "Another uid").
pamflux_world() {
	test -n "$PAMFLUX_WORLD" && return 0
	PAMFLUX_WORLD=$(mktemp -d "${TMPDIR:-/tmp}/flux-pam-pamflux.XXXXXX") &&
	mkdir -p "$PAMFLUX_WORLD/src/etc/flux" "$PAMFLUX_WORLD/src/t" &&
	cp -R "$FLUX_PAM_SRCDIR/flux_pam_service" "$FLUX_PAM_SRCDIR/modules" \
		"$PAMFLUX_WORLD/src/" &&
	cp "$FLUX_PAM_SRCDIR/t/guestjobs.py" "$PAMFLUX_WORLD/src/t/" &&
	cp -R "$FLUX_PAM_SRCDIR/etc/flux/modprobe" "$PAMFLUX_WORLD/src/etc/flux/" &&
	chmod -R u=rwX,go=rX "$PAMFLUX_WORLD" &&
	export PAMFLUX_WORLD FLUX_PAM_GUESTJOBS="$PAMFLUX_WORLD/src/t/guestjobs.py"
}

pamflux_cleanup() {
	test -n "$PAMFLUX_WORLD" && rm -rf "$PAMFLUX_WORLD"
	PAMFLUX_WORLD=
}

# A uid with no passwd entry on this host, from $1 up.
pamflux_free_uid() {
	local uid=$1
	while getent passwd "$uid" >/dev/null || getent group "$uid" >/dev/null; do
		uid=$((uid + 1))
	done
	echo "$uid"
}

# passwd and group files for nss_wrapper (see "Users" above).
pamflux_users() {
	: "${PAMFLUX_OWNER_UID:=$(pamflux_free_uid 54200)}"
	: "${PAMFLUX_BOB_UID:=$(pamflux_free_uid $((PAMFLUX_OWNER_UID + 1)))}"
	export PAMFLUX_OWNER_UID PAMFLUX_BOB_UID
	pamflux_world || return 1
	PAMFLUX_NSS_DIR=$PAMFLUX_WORLD
	export PAMFLUX_NSS_DIR
	cat >"$PAMFLUX_NSS_DIR/passwd" <<-EOF
	root:x:0:0:root:/root:/bin/bash
	alice:x:$PAMFLUX_OWNER_UID:$PAMFLUX_OWNER_UID:instance owner:/nonexistent:/bin/sh
	bob:x:$PAMFLUX_BOB_UID:$PAMFLUX_BOB_UID:job user:/nonexistent:/bin/sh
	nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
	EOF
	cat >"$PAMFLUX_NSS_DIR/group" <<-EOF
	root:x:0:
	alice:x:$PAMFLUX_OWNER_UID:
	bob:x:$PAMFLUX_BOB_UID:
	nogroup:x:65534:
	EOF
	chmod 0644 "$PAMFLUX_NSS_DIR/passwd" "$PAMFLUX_NSS_DIR/group"
}

# Write pam.d/sshd: the account stack is pam_flux alone, with OPTIONS.
# `pamflux_stack --permit` writes a pam_permit.so-only stack instead.
pamflux_stack() {
	mkdir -p "$PWD/pam.d"
	PAMFLUX_PAM_DIR=$PWD/pam.d
	export PAMFLUX_PAM_DIR
	printf 'account required pam_deny.so\n' >"$PAMFLUX_PAM_DIR/other"
	if test "$1" = "--permit"; then
		printf 'account required pam_permit.so\n' >"$PAMFLUX_PAM_DIR/sshd"
		return
	fi
	printf 'account required %s %s\n' "$PAMFLUX_MODULE" "$*" \
		>"$PAMFLUX_PAM_DIR/sshd"
}

# pamtest USER [PAM_OP...]: run the sshd stack for USER (acct_mgmt unless
# operations are given).  Exits with pamtester's status; the conversation
# (e.g. "Access denied: ...") goes to stderr.
pamtest() {
	local user=$1
	shift
	test $# -gt 0 || set -- acct_mgmt
	LD_PRELOAD="libpam_wrapper.so libnss_wrapper.so" \
	PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$PAMFLUX_PAM_DIR" \
	NSS_WRAPPER_PASSWD="$PAMFLUX_NSS_DIR/passwd" \
	NSS_WRAPPER_GROUP="$PAMFLUX_NSS_DIR/group" \
		pamtester sshd "$user" "$@"
}

# Run a command as the instance owner (FLUX_URI is passed on), with the
# test passwd/group (alice has no entry on the host; a job that starts a
# sub-instance must resolve her uid), from her home (a job runs in the
# directory it was submitted from).
as_owner() {
	(
		cd "$PAMFLUX_INSTANCE_DIR/home" &&
		exec env HOME="$PAMFLUX_INSTANCE_DIR/home" LD_PRELOAD=libnss_wrapper.so \
			NSS_WRAPPER_PASSWD="$PAMFLUX_NSS_DIR/passwd" \
			NSS_WRAPPER_GROUP="$PAMFLUX_NSS_DIR/group" \
			setpriv --reuid="$PAMFLUX_OWNER_UID" --regid="$PAMFLUX_OWNER_UID" \
			--clear-groups "$@"
	)
}

# The instance's config directory (set by pamflux_start).
pamflux_confdir() {
	echo "$PAMFLUX_INSTANCE_DIR/conf"
}

# pamflux_start NAME SIZE [module]: start `flux start --test-size=SIZE` as
# the owner, in the background, and export its FLUX_URI.  With `module`, the
# config has a [pam] table (manage-user-slice off), so modprobe loads the pam
# module on every rank; without, the module is not loaded.  Extra config may
# be written to $(pamflux_confdir) before (files) or after (flux config
# reload) the start.
pamflux_start() {
	local name=$1 size=$2 module=$3 dir i
	pamflux_world || return 1
	dir=$PAMFLUX_WORLD/$name
	mkdir -p "$dir/conf" "$dir/home" "$dir/run" &&
	chmod 0755 "$dir" "$dir/conf" &&
	chown "$PAMFLUX_OWNER_UID:$PAMFLUX_OWNER_UID" "$dir/home" "$dir/run" || return 1
	PAMFLUX_INSTANCE_DIR=$dir
	cat >"$dir/conf/access.toml" <<-EOF
	[access]
	allow-root-owner = true
	EOF
	if test "$module" = module; then
		cat >"$dir/conf/pam.toml" <<-EOF
		[pam]
		manage-user-slice = false

		[exec.testexec]
		allow-guests = true
		EOF
	fi
	chmod 0644 "$dir"/conf/*.toml
	(
		unset FLUX_URI
		cd "$dir/home" || exit 1
		export FLUX_MODULE_PATH_PREPEND="$PAMFLUX_WORLD/src/modules"
		export FLUX_MODPROBE_PATH_APPEND="$PAMFLUX_WORLD/src/etc/flux/modprobe"
		export PYTHONPATH="$PAMFLUX_WORLD/src${PYTHONPATH:+:$PYTHONPATH}"
		exec setsid env HOME="$dir/home" LD_PRELOAD=libnss_wrapper.so \
			NSS_WRAPPER_PASSWD="$PAMFLUX_NSS_DIR/passwd" \
			NSS_WRAPPER_GROUP="$PAMFLUX_NSS_DIR/group" setpriv --reuid="$PAMFLUX_OWNER_UID" \
			--regid="$PAMFLUX_OWNER_UID" --clear-groups \
			"$FLUX" start --test-size="$size" -c "$dir/conf" \
			-Slog-filename="$dir/run/broker.log" -Slog-level=7 \
			sh -c 'printenv FLUX_URI >"$1.tmp" && mv "$1.tmp" "$1" &&
				while ! test -e "$2"; do sleep 0.1; done' \
			sh "$dir/run/uri" "$dir/run/stop"
	) >"$dir/start.log" 2>&1 </dev/null &
	PAMFLUX_BROKER_PID=$!
	i=0
	while ! test -s "$dir/run/uri"; do
		if ! kill -0 "$PAMFLUX_BROKER_PID" 2>/dev/null; then
			echo "flux start exited early:" >&2
			cat "$dir/start.log" >&2
			return 1
		fi
		i=$((i + 1))
		test $i -le 600 || { echo "no FLUX_URI after 60s" >&2; return 1; }
		sleep 0.1
	done
	FLUX_URI=$(cat "$dir/run/uri")
	export FLUX_URI
}

# Shut the instance down: the initial program ends, then rc3.  After 60s
# the instance (its own process group, see setsid above) is killed.
pamflux_stop() {
	local i=0 pid=$PAMFLUX_BROKER_PID rc
	test -n "$pid" || return 0
	touch "$PAMFLUX_INSTANCE_DIR/run/stop"
	while kill -0 "$pid" 2>/dev/null; do
		i=$((i + 1))
		if test $i -gt 600; then
			echo "flux start (pid $pid) still running after 60s: killing" >&2
			kill -TERM -- "-$pid" 2>/dev/null
			sleep 5
			kill -KILL -- "-$pid" 2>/dev/null
			wait "$pid" 2>/dev/null
			PAMFLUX_BROKER_PID=
			return 1
		fi
		sleep 0.1
	done
	wait "$pid"
	rc=$?
	PAMFLUX_BROKER_PID=
	unset FLUX_URI
	if test $rc -ne 0; then
		echo "flux start exited $rc" >&2
		cat "$PAMFLUX_INSTANCE_DIR/start.log" >&2
	fi
	return $rc
}

# The pam module's view of job ID on RANK: running, cleanup, or absent.
pamflux_module_job() {
	pam_status "$1" | jq -r --argjson id "$2" '
		[.users[].jobs[] | select(.id == $id)] |
		if length == 0 then "absent"
		elif .[0].running then "running" else "cleanup" end'
}

# Wait until pamflux_module_job RANK ID prints STATE, or one of the states
# STATE|STATE... (30s).
pamflux_wait_module_job() {
	local rank=$1 id=$2 want=$3 deadline=$(($(date +%s) + 30)) got
	while :; do
		got=$(pamflux_module_job "$rank" "$id") &&
			case "|$want|" in *"|$got|"*) return 0 ;; esac
		if test "$(date +%s)" -ge $deadline; then
			echo "module on rank $rank: job $id is '$got', expected $want" >&2
			return 1
		fi
		sleep 0.1
	done
}

#!/bin/bash

test_description='node replica: the admin guide, word for word, with flux-core in /opt/flux (issue 14, items 2 and 4)

node.py stages every replica with the node-setup blocks of the admin guide
(doc/guide/admin.rst), run as written.  On that node flux pam check has no
FAIL (where the replica has no cpuset controller, but cgroup-controllers,
which says so; FLUX_PAM_TESTBED_CPUSET=1 gives it one where the host
allows), and flux pam check and flux pam config take their paths from the
running broker, or say which path they used and why when no broker answers.

The guide installs an sshd stack that runs pam_systemd for root and the
admin group only: root gets a logind session (session-N.scope,
XDG_RUNTIME_DIR), alice her flux-pam scope, and flux pam check accepts the
guarded stack but still FAILs an unguarded pam_systemd.'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

STAGE=/run/flux-pam-node/$FLUX_PAM_NODE
OPT_CONF=/opt/flux/etc/flux/system/conf.d
OPT_IMP=/opt/flux/etc/flux/imp/conf.d

test_expect_success 'the replica boots' '
	node_up
'
test_expect_success 'it was set up by the guide'\''s node-setup blocks, word for word' '
	"${PYTHON:-python3}" -c "
import sys
sys.path.insert(0, \"$FLUX_PAM_SRCDIR/t/unit\")
import docexamples
guide = \"$FLUX_PAM_SRCDIR/doc/guide/admin.rst\"
blocks = [t for _, _, k, t in docexamples.examples(guide) if k == \"node-setup\"]
sys.stdout.write(\"\".join(blocks))
" >guide.expected &&
	test -s guide.expected &&
	test_cmp guide.expected "$STAGE/guide-setup.sh" &&
	sed -n "s/^+ //p" "$STAGE/guide-setup.log" | sed 1d >guide.ran &&
	test_cmp guide.expected guide.ran
'
test_expect_success 'make install asked flux-core for its directories' '
	grep "flux-core directories from /usr/bin/flux config builtin" "$STAGE/guide-setup.log" &&
	grep "INSTALL $OPT_CONF/pam.toml" "$STAGE/guide-setup.log" &&
	grep "INSTALL $OPT_CONF/perilog.toml" "$STAGE/guide-setup.log" &&
	grep "INSTALL $OPT_IMP/pam.toml" "$STAGE/guide-setup.log"
'
test_expect_success 'the files are where the broker and the IMP read them' '
	test "$(node_flux getattr config.path)" = $OPT_CONF &&
	node_sh "test -f $OPT_CONF/pam.toml && test -f $OPT_IMP/pam.toml" &&
	node_sh "test ! -e /etc/flux/system/conf.d/pam.toml" &&
	node_sh "grep -x \"path = \\\"/opt/flux/libexec/flux/cmd/flux-run-prolog\\\"\" $OPT_IMP/pam.toml"
'
# no_fail FILE: no FAIL in flux pam check's output FILE; on a replica without
# the cpuset controller (prereq CPUSET, lib/node.sh) the one FAIL allowed is
# cgroup-controllers, which says the node cannot confine logins: true there
no_fail() {
	if test_have_prereq CPUSET; then
		! grep "^FAIL" "$1"
	else
		echo "# no cpuset on this replica: cgroup-controllers FAILs, as it should" &&
		grep "^FAIL  cgroup-controllers:" "$1" &&
		! grep "^FAIL" "$1" | grep -v "^FAIL  cgroup-controllers:"
	fi
}

test_expect_success 'flux pam check has no FAIL and says where its paths came from' '
	test_might_fail node_flux pam check >check.out &&
	cat check.out &&
	no_fail check.out &&
	grep -x "using instance config $OPT_CONF (config.path of the running broker)" check.out &&
	grep "^using IMP config $OPT_IMP (flux-security.s sysconfdir for exec.imp /opt/flux/libexec/flux/flux-imp)" check.out &&
	grep "^PASS  imp-run:" check.out &&
	grep "^PASS  drop-ins: /opt/flux/libexec/flux/prolog.d/flux-pam-prolog" check.out
'
test_expect_success 'flux pam config reads the files of the broker'\''s config.path' '
	node_flux pam config >config.out 2>config.err &&
	grep -x "flux-pam config: reading $OPT_CONF (config.path of the running broker)" config.err &&
	jq -e ".pam.\"manage-user-slice\" == true" config.out
'
test_expect_success 'no broker: check and config say which path they used and why' '
	node_run systemctl stop flux </dev/null &&
	node_flux pam config >config.nb 2>config.nb.err &&
	cat config.nb.err &&
	grep "^flux-pam config: reading $OPT_CONF (flux-core.s built-in confdir + /system/conf.d; no broker answered at the system instance (" config.nb.err &&
	jq -e ".pam.\"manage-user-slice\" == true" config.nb &&
	test_might_fail node_flux pam check >check.nb &&
	cat check.nb &&
	no_fail check.nb &&
	grep "^using instance config $OPT_CONF (flux-core.s built-in confdir + /system/conf.d; no broker answered" check.nb &&
	grep "^PASS  config:" check.nb &&
	grep "^WARN  module: cannot ask the broker" check.nb
'
test_expect_success 'the broker starts again' '
	node_run systemctl start flux </dev/null &&
	node_wait 60 "node_flux uptime 2>/dev/null | grep -q \" run \""
'

# item 4: pam_systemd for root and admins, not for job users
test_expect_success 'root'\''s ssh login is in a logind session, with XDG_RUNTIME_DIR' '
	node_ssh root "sed -n \"s/^0:://p\" /proc/self/cgroup; echo \$XDG_RUNTIME_DIR; test -d \"\$XDG_RUNTIME_DIR\" && echo exists" >root.out &&
	cat root.out &&
	sed -n 1p root.out | grep -E "^/user.slice/user-0.slice/session-[0-9]+.scope$" &&
	test "$(sed -n 2p root.out)" = /run/user/0 &&
	test "$(sed -n 3p root.out)" = exists
'
test_expect_success 'alice'\''s login is in flux-pam-PID.scope, as before' '
	id=$(node_submit alice -n1 sleep inf) &&
	echo $id >gd.job &&
	node_job_started $id &&
	node_login_cgroup alice >alice.cg &&
	grep -E "^/user.slice/user-1000.slice/flux-pam-[0-9]+.scope$" alice.cg &&
	node_flux cancel $id &&
	node_job_gone $id
'
test_expect_success 'flux pam check accepts the guarded stack' '
	grep "^PASS  pam-systemd: pam_systemd.so at /etc/pam.d/sshd:[0-9]* is skipped for job users (guarded)" check.out
'
test_expect_success 'flux pam check FAILs the same stack with pam_systemd unguarded' '
	node_sh "sed \"/pam_succeed_if/d\" /etc/pam.d/sshd >/etc/pam.d/sshd-unguarded" &&
	node_sh "grep -c pam_systemd /etc/pam.d/sshd-unguarded" &&
	test_must_fail node_flux pam check --pam-stack /etc/pam.d/sshd-unguarded >check.ung &&
	grep "^FAIL  pam-systemd: pam_systemd.so runs for job users at /etc/pam.d/sshd-unguarded:" check.ung
'
test_done

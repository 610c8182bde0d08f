#!/bin/bash

test_description='node replica: an admitted login is confined (scenario 2)

alice runs a job; her ssh login lands in a flux-pam scope inside
user-1000.slice, which carries AllowedCPUs of exactly the cores of the job and
DevicePolicy=closed (a device she may open elsewhere fails inside); her
XDG_RUNTIME_DIR works and user@1000.service runs.'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

test_expect_success 'the replica boots with the pam module loaded by modprobe' '
	node_up &&
	node_flux module list >modules &&
	grep "^pam " modules
'
scenario_confinement
test_done

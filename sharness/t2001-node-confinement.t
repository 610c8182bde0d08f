#!/bin/bash

test_description='node replica: an admitted login is confined (scenario 2)

alice runs a job; her ssh login lands in a flux-pam scope inside
user-1000.slice, which carries AllowedCPUs of exactly the cores of the job and
DevicePolicy=closed (a device she may open elsewhere fails inside); with the
cpuset controller, the kernel holds her login to those cores and memory nodes
(its own /proc/self/status, cpuset.cpus.effective) and flux pam status says
so; her XDG_RUNTIME_DIR works and user@1000.service runs.  The replica has
two fake GPUs: a login opens the device node of the GPU its user holds and
gets EPERM on the other, following the union as jobs start and end.'

. "$(dirname "$0")"/lib/init.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node.sh
. "$SHARNESS_TEST_SRCDIR"/lib/node-scenarios.sh

node_require

test_expect_success 'the replica boots with the pam module loaded by modprobe' '
	node_up --fake-gpus 2 &&
	node_flux module list >modules &&
	grep "^pam " modules
'
scenario_confinement
test_expect_success CPUSET 'flux pam status: alice'\''s union is enforced, as read back' '
	id=$(node_submit alice -n1 sleep inf) &&
	node_job_started $id &&
	node_flux pam status --json >st.json &&
	jq -e ".[0].users[0].enforcement.state == \"enforced\"" st.json &&
	test "$(jq -r ".[0].users[0].enforcement.effective.cpus" st.json)" = \
		"$(node_job_cores $id)" &&
	node_flux pam status | grep -E "^0 +alice +1/1 +[0-9-]+ +- +yes " &&
	test_might_fail node_flux pam check --config-path $NODE_FLUX_CONF >check.out &&
	grep "^PASS  cgroup-controllers: cgroup2 offers cpuset to user.slice" check.out &&
	node_flux cancel $id &&
	node_job_gone $id
'
scenario_gpus
test_done

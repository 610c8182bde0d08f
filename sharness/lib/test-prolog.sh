#!/bin/sh
# Test prolog for the broker tier: fails for a job submitted with
# --setattr=system.test-fail-prolog=1, succeeds otherwise.
if flux job info "$FLUX_JOB_ID" jobspec | grep -q '"test-fail-prolog"'; then
	echo "test prolog: failing as asked" >&2
	exit 1
fi
exit 0

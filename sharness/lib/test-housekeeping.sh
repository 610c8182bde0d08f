#!/bin/sh
# Test housekeeping for the broker tier: for a job submitted with
# --setattr=system.test-slow-housekeeping=RANK, housekeeping on that rank
# takes 8 seconds (holding the rank) while the other ranks finish at once.
slow=$(flux job info "$FLUX_JOB_ID" jobspec 2>/dev/null |
	jq -r '.attributes.system["test-slow-housekeeping"] // empty')
if test -n "$slow" && test "$(flux getattr rank)" = "$slow"; then
	sleep 8
fi
exit 0

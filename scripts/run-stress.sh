#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make stress: boot the debug kernel once and run only the UPM stress for
# STRESS_SECONDS (default 1800) with STRESS_SEED (default: the time). The
# kernel log must stay clean (vm.sh checks it).
set -uo pipefail
. "$(dirname "$0")/common.sh"

secs=${STRESS_SECONDS:-1800}
res=$BUILD/stress-results
rm -rf "$res"; mkdir -p "$res"
FLAVOUR=debug OUT=$res TIMEOUT=${TIMEOUT:-$((secs + 900))} \
	"$TOP"/scripts/vm.sh "STRESS_SECONDS=$secs STRESS_SEED=${STRESS_SEED:-} bash $TOP/scripts/guest/stress.sh $BUILD/selftests"
rc=$?
echo "Log: $res/upm_stress.log"
if [ $rc = 0 ]; then echo "upm stress: PASS ($secs s)"; else echo "upm stress: FAIL (status $rc)"; fi
exit $rc

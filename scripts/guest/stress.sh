#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Runs inside the guest for `make stress`: the UPM stress alone, for
# STRESS_SECONDS (default 1800) with STRESS_SEED (default: the time).
set -uo pipefail
st=${1:?usage: stress.sh SELFTEST_DIR}
. "$(dirname "$0")/setup.sh"
guest_setup
out=${UPM_OUT:-/tmp}
cd "$st/upm" || exit 1
./upm_stress -t "${STRESS_SECONDS:-1800}" ${STRESS_SEED:+-s "$STRESS_SEED"} \
	2>&1 | tee "$out/upm_stress.log"
rc=${PIPESTATUS[0]}
echo "==> upm_stress: status $rc"
exit "$rc"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make test: run every test in one boot of the debug kernel, then the
# static checks, and end with one summary line.
set -uo pipefail
. "$(dirname "$0")/common.sh"

res=$BUILD/test-results
rm -rf "$res"; mkdir -p "$res"
start=$(date +%s)
FLAVOUR=debug OUT=$res TIMEOUT=${TIMEOUT:-2700} \
	"$TOP"/scripts/vm.sh "bash $TOP/scripts/guest/run-tests.sh $BUILD/selftests"
vmrc=$?
[ -f "$res/results.txt" ] || : > "$res/results.txt"
if [ $vmrc != 0 ]; then
	echo "FAIL guest run: kernel log clean and guest finished (status $vmrc)" >> "$res/results.txt"
else
	echo "PASS guest run: kernel log clean and guest finished" >> "$res/results.txt"
fi

step "Static checks (make check)"
if "$TOP"/scripts/check.sh; then
	echo "PASS make check" >> "$res/results.txt"
else
	echo "FAIL make check" >> "$res/results.txt"
fi

p=$(grep -c '^PASS' "$res/results.txt")
f=$(grep -c '^FAIL' "$res/results.txt")
s=$(grep -c '^SKIP' "$res/results.txt")
if [ "$f" != 0 ]; then
	echo "Failures:"
	grep '^FAIL' "$res/results.txt" | sed 's/^/  /'
fi
echo "Results: $res/results.txt; logs: $res/*.log; took $(( $(date +%s) - start ))s"
echo "upm: $p passed, $f failed, $s skipped"
[ "$f" = 0 ]

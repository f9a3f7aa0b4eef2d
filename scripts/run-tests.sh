#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make test: run every test in one boot of the debug kernel, then the
# static checks, and end with one summary line.
set -uo pipefail
. "$(dirname "$0")/common.sh"

res=$BUILD/test-results
rm -rf "$res"; mkdir -p "$res"
start=$(date +%s)
# Two NUMA nodes for the migration cases; slab_nomerge so that UPM's and
# KSM's slab caches can be checked for leaks on their own.
FLAVOUR=debug OUT=$res TIMEOUT=${TIMEOUT:-2700} NUMA=${NUMA:-2} \
	APPEND="${APPEND:-} slab_nomerge" \
	CPUS=${CPUS:-2} "$TOP"/scripts/vm.sh "UPM_CPUS=${CPUS:-2} UPM_NODES=${NUMA:-2} STRESS_SECONDS=${STRESS_SECONDS:-120} STRESS_SEED=${STRESS_SEED:-} bash $TOP/scripts/guest/run-tests.sh $BUILD/selftests"
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
# How many cases of each kind ran (passed+failed+skipped).
kinds() {
	local label=$1 re=$2 all n_p n_f n_s
	all=$(grep -E "^(PASS|FAIL|SKIP) ($re)" "$res/results.txt")
	n_p=$(printf '%s\n' "$all" | grep -c '^PASS')
	n_f=$(printf '%s\n' "$all" | grep -c '^FAIL')
	n_s=$(printf '%s\n' "$all" | grep -c '^SKIP')
	printf '  %-34s %3d passed, %d failed, %d skipped\n' "$label" "$n_p" "$n_f" "$n_s"
}
echo "Cases by kind:"
kinds "KUnit (upm_index)" 'kunit:'
kinds "UPM functional (upm_tests)" 'upm_tests:'
kinds "tenant isolation (upm_domain_tests)" 'upm_domain_tests:'
kinds "user-space helpers (tools/upm)" \
	'upm_lib_tests:|upm_python:|upm_container:'
kinds "fault matrix (upm_faults)" 'upm_faults: [0-9]+ '
kinds "races (upm_races)" 'upm_races: [0-9]+ '
kinds "bad input (upm_bad_input, root, nobody)" 'upm_bad_input( as nobody)?: [0-9]+ '
kinds "next to ksmd, fork, exit (upm_ksm_mix)" 'upm_ksm_mix: [0-9]+ '
kinds "stress (upm_stress, stress-ng)" 'upm_stress [0-9]+s$|upm_stress next|stress-ng (madvise|not)'
kinds "kernel log checks" '.*: kernel log clean'
kinds "leak check (upm_leakcheck)" 'upm_leakcheck:'
kinds "upstream KSM selftests" 'ksm_functional_tests:|ksm_tests|cow:'
kinds "guest CPUs and nodes, make check" 'guest (CPUs|NUMA)|make check'
echo "Results: $res/results.txt; logs: $res/*.log; took $(( $(date +%s) - start ))s"
echo "upm: $p passed, $f failed, $s skipped"
[ "$f" = 0 ]

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Runs inside the test guest: KUnit results from the boot log, the UPM
# kselftests, then the upstream KSM selftests as a regression guard. Each
# case becomes one "PASS|FAIL|SKIP name" line in $UPM_OUT/results.txt.
st=${1:?usage: run-tests.sh SELFTEST_DIR}
out=${UPM_OUT:-/tmp}
res=$out/results.txt
: > "$res"

record() {
	echo "$1 $2" >> "$res"
}

# Count the TAP lines of a log; a crash with no "not ok" line is a failure.
tap_results() {
	local name=$1 log=$2 rc=$3 line n=0
	while IFS= read -r line; do
		case "$line" in
		"not ok "*) record FAIL "$name: ${line#not ok }" ;;
		"ok "*"# SKIP"*|"ok "*"# skip"*) record SKIP "$name: ${line#ok }" ;;
		"ok "*) record PASS "$name: ${line#ok }" ;;
		*) continue ;;
		esac
		n=$((n + 1))
	done < <(grep -E '^(not )?ok [0-9]+ ' "$log")
	if [ "$n" = 0 ] || { [ "$rc" != 0 ] && ! grep -q '^not ok' "$log"; }; then
		record FAIL "$name: exited with status $rc after $n results"
	fi
}

run_tap() {
	local name=$1 log=$out/$1.log rc
	shift
	echo "==> $name"
	timeout 1200 "$@" > "$log" 2>&1
	rc=$?
	grep -E '^(not ok|# Totals|# FAILED|# PASSED)' "$log"
	tap_results "$name" "$log" "$rc"
}

# Exit status of a non-TAP test: 0 pass, 4 skip (kselftest), else fail.
run_rc() {
	local name=$1 log=$out/$1.log rc
	shift
	timeout 600 "$@" > "$log" 2>&1
	rc=$?
	case $rc in
	0) record PASS "$name" ;;
	4) record SKIP "$name" ;;
	*) record FAIL "$name (status $rc)"; tail -n 5 "$log" ;;
	esac
	echo "==> $name: status $rc"
}

echo "==> KUnit (upm_index, run at boot)"
# Strip the timestamp only: KTAP nests test cases by indentation.
dmesg | sed -e 's/^\[[^]]*\] //' > "$out/kunit.log"
if ! grep -q '# Subtest: upm_index' "$out/kunit.log"; then
	record FAIL "kunit: no upm_index results in the boot log"
else
	sed -n '/# Subtest: upm_index/,/^ok [0-9]* upm_index/p' "$out/kunit.log" |
		sed -e 's/^ *//' | grep -E '^(not )?ok [0-9]+ upm_[a-z]+_test_' \
		> "$out/kunit.tap"
	tap_results kunit "$out/kunit.tap" 0
fi

cd "$st/upm" && run_tap upm_tests ./upm_tests
run_tap upm_domain_tests ./upm_domain_tests

# The user-space helpers of tools/upm (C library, Python module, upmctl)
tools=$(dirname "$st")/tools
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$tools" && run_tap upm_lib_tests ./upm_lib_tests
run_tap upm_python python3 "$top/tools/upm/tests/test_upm_py.py"

cd "$st/mm" || exit 1
run_tap ksm_functional_tests ./ksm_functional_tests
run_rc "ksm_tests -M -p 10" ./ksm_tests -M -p 10
run_rc "ksm_tests -U" ./ksm_tests -U
run_rc "ksm_tests -Z -p 10 -z 0" ./ksm_tests -Z -p 10 -z 0
run_rc "ksm_tests -Z -p 10 -z 1" ./ksm_tests -Z -p 10 -z 1
run_rc "ksm_tests -N -m 1" ./ksm_tests -N -m 1
run_rc "ksm_tests -N -m 0" ./ksm_tests -N -m 0
run_tap cow ./cow
echo "==> guest tests done: $(grep -c ^PASS "$res") passed, $(grep -c ^FAIL "$res") failed, $(grep -c ^SKIP "$res") skipped"
exit 0

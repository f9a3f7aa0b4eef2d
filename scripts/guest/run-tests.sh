#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Runs inside the test guest: KUnit results from the boot log, the UPM
# kselftests (upm_tests, upm_domain_tests, upm_faults, upm_races,
# upm_bad_input, upm_ksm_mix; installed with "make install" and run by
# the kselftest runner with the timeout of upm/settings), the seeded UPM
# stress, a bounded stress-ng run, the upstream KSM selftests as a
# regression guard, and last the leak check. Each case
# becomes one "PASS|FAIL|SKIP name" line in $UPM_OUT/results.txt.
# STRESS_SECONDS (120) and STRESS_SEED (the time) tune the stress.
st=${1:?usage: run-tests.sh SELFTEST_DIR}
. "$(dirname "$0")/setup.sh"
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

# The UPM selftests go through the kselftest runner, as a kernel developer
# runs them: "make install" of the upm collection from the build (nothing
# is compiled here: the guest has not the build's headers) and
# run_kselftest.sh, which applies upm/settings.
ks=/tmp/kselftest
install_upm() {
	local kst=$(dirname "$st")/linux/tools/testing/selftests i=0 f
	rm -rf "$ks"
	# The runner writes to /dev/stdout, which the guest's devtmpfs lacks
	for f in stdin stdout stderr; do
		if [ ! -L /dev/$f ]; then
			rm -f /dev/$f
			ln -s /proc/self/fd/$i /dev/$f
		fi
		i=$((i + 1))
	done
	if ! make -q -C "$kst/upm" OUTPUT="$st/upm" all >/dev/null 2>&1; then
		echo "$st/upm is older than its sources:" \
			"run scripts/build-selftests.sh" > "$out/install.log"
		return 1
	fi
	make -s -C "$kst" TARGETS=upm BUILD="$st" INSTALL_PATH="$ks" \
		install > "$out/install.log" 2>&1 &&
	# The runner and its helpers are installed executable by root only
	chmod -R a+rX "$ks"
}

# One program of the upm collection: run_kselftest.sh prefixes its TAP
# with "# " and ends with its own line for the program, "not ok" with
# "# exit=N" or "# TIMEOUT" when it crashed or ran out of time. Any
# command after the program's name (setpriv) runs it as another user,
# into a pipe of that user's: the runner reopens /dev/stdout, which that
# user could not do on our log file.
run_ksft() {
	local name=$1 prog=$2 log=$out/${1// /_}.log rc
	shift 2
	echo "==> $name"
	"$@" sh -c '"$0" -t "$1" 2>&1 | cat' "$ks/run_kselftest.sh" \
		"upm:$prog" > "$log" 2>&1
	grep -E '^# (not ok|# Totals|# FAILED|# PASSED)|^not ok' "$log"
	sed -n 's/^# \(\(not \)\?ok [0-9]\+ \)/\1/p' "$log" > "$log.tap"
	if grep -qE "^ok [0-9]+ selftests: upm: $prog( # SKIP)?\$" "$log"; then
		rc=0
	elif grep -q "^not ok [0-9]* selftests: upm: $prog" "$log"; then
		rc=$(sed -n "s/^not ok [0-9]* selftests: upm: $prog # //p" \
			"$log")
	else
		rc="unknown (no line from run_kselftest.sh)"
	fi
	tap_results "$name" "$log.tap" "${rc:-1}"
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
# RC_TIMEOUT (600) bounds it.
run_rc() {
	local name=$1 log=$out/${1%% *}.log rc
	shift
	timeout "${RC_TIMEOUT:-600}" "$@" > "$log" 2>&1
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

# A kernel log report since the last mark fails the named step too (vm.sh
# fails the whole run on any report; this says which step caused it).
pat='BUG:|WARNING:|KASAN|possible recursive locking|possible circular locking|inconsistent lock state|suspicious RCU usage|Oops|soft lockup|hung task|blocked for more than|general protection fault|UBSAN|list_add corruption|list_del corruption'
log_mark=0
log_clean() {
	local name=$1 new
	new=$(dmesg | awk -v m="$log_mark" '{ t = $0; sub(/^\[ */, "", t);
		sub(/\].*/, "", t); if (t + 0 > m) print }')
	if printf '%s\n' "$new" | grep -qE "$pat"; then
		record FAIL "$name: kernel log clean"
		printf '%s\n' "$new" | grep -E -A10 "$pat" | head -n 30
	else
		record PASS "$name: kernel log clean"
	fi
	log_mark=$(dmesg | tail -n 1 | sed -e 's/^\[ *//' -e 's/\].*//')
}

guest_setup

# The races and the stress only mean something on the CPUs asked for.
cpus=$(grep -c '^processor' /proc/cpuinfo)
nodes=$(ls -d /sys/devices/system/node/node[0-9]* | wc -l)
if [ "$cpus" -ge "${UPM_CPUS:-1}" ]; then
	record PASS "guest CPUs: $cpus online, ${UPM_CPUS:-1} asked for"
else
	record FAIL "guest CPUs: $cpus online, ${UPM_CPUS:-1} asked for"
fi
if [ "$nodes" -ge "${UPM_NODES:-1}" ]; then
	record PASS "guest NUMA nodes: $nodes, ${UPM_NODES:-1} asked for"
else
	record FAIL "guest NUMA nodes: $nodes, ${UPM_NODES:-1} asked for"
fi

if ! install_upm; then
	record FAIL "upm selftests: make install (see install.log)"
	tail -n 20 "$out/install.log"
fi
cd "$st/upm" || exit 1
run_ksft upm_tests upm_tests
run_ksft upm_domain_tests upm_domain_tests
log_clean "upm_tests and upm_domain_tests"
run_ksft upm_faults upm_faults
run_ksft upm_races upm_races
log_clean "upm_faults and upm_races"
# The bad-input case for hugetlb mappings needs one huge page. The cases
# need no privilege: they run as root and as nobody.
echo 2 > /proc/sys/vm/nr_hugepages
run_ksft upm_bad_input upm_bad_input
run_ksft "upm_bad_input as nobody" upm_bad_input \
	setpriv --reuid=65534 --regid=65534 --clear-groups
echo 0 > /proc/sys/vm/nr_hugepages
log_clean upm_bad_input
run_ksft upm_ksm_mix upm_ksm_mix
log_clean upm_ksm_mix

secs=${STRESS_SECONDS:-120}
echo "==> upm_stress for ${secs}s"
RC_TIMEOUT=$((secs + 300)) run_rc "upm_stress ${secs}s" \
	./upm_stress -t "$secs" ${STRESS_SEED:+-s "$STRESS_SEED"}
grep -E '^(# upm_stress|upm_stress|# MISMATCH|# ERROR)' "$out/upm_stress.log" | head -n 20
log_clean upm_stress

# stress-ng's madvise, mmap and vm stressors (vm memory advised
# MADV_MERGEABLE) with ksmd at full speed, unprivileged, while the UPM
# stress advises next to them as root.
if command -v stress-ng >/dev/null; then
	echo "==> stress-ng with ksmd and upm_stress, 60s"
	knobs=$(cat /sys/kernel/mm/ksm/{run,sleep_millisecs,pages_to_scan})
	echo 0 > /sys/kernel/mm/ksm/sleep_millisecs
	echo 1000 > /sys/kernel/mm/ksm/pages_to_scan
	echo 1 > /sys/kernel/mm/ksm/run
	./upm_stress -t 60 -p 2 > "$out/upm_stress_ng.log" 2>&1 &
	upid=$!
	run_rc "stress-ng madvise,mmap,vm(mergeable) 60s" \
		setpriv --reuid=65534 --regid=65534 --clear-groups \
		stress-ng --temp-path /tmp --timeout 60s --metrics-brief \
		--madvise 2 --mmap 1 --mmap-bytes 32M \
		--vm 2 --vm-bytes 64M --vm-madvise mergeable
	tail -n 8 "$out/stress-ng.log"
	if wait $upid; then
		record PASS "upm_stress next to stress-ng 60s"
	else
		record FAIL "upm_stress next to stress-ng 60s"
		tail -n 20 "$out/upm_stress_ng.log"
	fi
	read -r r s p <<< "$(echo $knobs)"
	echo "$s" > /sys/kernel/mm/ksm/sleep_millisecs
	echo "$p" > /sys/kernel/mm/ksm/pages_to_scan
	echo "$r" > /sys/kernel/mm/ksm/run
	log_clean stress-ng
else
	record FAIL "stress-ng: not installed (scripts/deps.sh installs it)"
fi

# The user-space helpers of tools/upm (C library, Python module, upmctl)
tools=$(dirname "$st")/tools
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$tools" && run_tap upm_lib_tests ./upm_lib_tests
run_tap upm_python python3 "$top/tools/upm/tests/test_upm_py.py"
log_clean "upm helpers"

# The upstream tests count KSM pages system-wide: start them from a KSM
# with nothing merged (ksmd may still be cleaning up after stress-ng).
echo "==> KSM after the UPM tests: $(cd /sys/kernel/mm/ksm && grep -H . run pages_shared pages_sharing ksm_zero_pages | tr '\n' ' ')"
echo 2 > /sys/kernel/mm/ksm/run
echo 0 > /sys/kernel/mm/ksm/run
for i in $(seq 100); do
	[ "$(cat /sys/kernel/mm/ksm/pages_shared)" = 0 ] && break
	sleep 0.1
done
echo "==> KSM before the upstream tests: pages_shared $(cat /sys/kernel/mm/ksm/pages_shared)"

cd "$st/mm" || exit 1
run_tap ksm_functional_tests ./ksm_functional_tests
run_rc "ksm_tests -M -p 10" ./ksm_tests -M -p 10
run_rc "ksm_tests -U" ./ksm_tests -U
run_rc "ksm_tests -Z -p 10 -z 0" ./ksm_tests -Z -p 10 -z 0
run_rc "ksm_tests -Z -p 10 -z 1" ./ksm_tests -Z -p 10 -z 1
run_rc "ksm_tests -N -m 1" ./ksm_tests -N -m 1
run_rc "ksm_tests -N -m 0" ./ksm_tests -N -m 0
run_tap cow ./cow

# The container recipe of the admin guide (upm-exec, upmctl advise
# --cgroup): tools/upm/tests/test_container.py, one TAP case per behaviour.
UPM_TOOLS=$(dirname "$st")/tools run_tap upm_container python3 \
	"$(cd "$(dirname "$0")/../.." && pwd)/tools/upm/tests/test_container.py"
log_clean "upm container recipe"

# Last, with every other test process gone: nothing may leak.
cd "$st/upm" && run_ksft upm_leakcheck upm_leakcheck
echo "==> guest tests done: $(grep -c ^PASS "$res") passed, $(grep -c ^FAIL "$res") failed, $(grep -c ^SKIP "$res") skipped"
exit 0

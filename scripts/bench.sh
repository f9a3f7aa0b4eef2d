#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make bench: UPM against KSM in one boot of the release kernel.
# Builds tools/upm/bench/upm_bench.c against the patched UAPI headers,
# runs it in the guest (MEM=8G by default: the scaling benchmark maps
# 2 GiB), then writes build/bench/results.json and prints the table.
# BENCHES="throughput scaling" runs a subset; UPM_BENCH_* variables
# (see the top of upm_bench.c) change sizes and caps. PROFILE=1 samples
# the guest's CPUs with perf (cpu-clock, call graphs) during the run and
# writes where the benchmark's processes spent their time to profile.txt
# in the run's directory: time in each function and its callees, then in
# each function alone, as shares of the processes' samples (perf.data is
# kept beside it; perf slows the guest: keep such a run's figures apart).
# ICOUNT=1 runs the guest with QEMU's -icount (see vm.sh): every time is
# then a count of guest instructions, 1 ns each, the same from run to run
# on a busy host, but two guest CPUs working at once take as long as one
# doing both in turn, so concurrency figures mean nothing there.
set -uo pipefail
. "$(dirname "$0")/common.sh"
export FLAVOUR=release
export MEM=${MEM:-8G} CPUS=${CPUS:-2} TIMEOUT=${TIMEOUT:-5400}
mkdir -p "$BUILD/bench"
# upm_bench links libupm.a: tools/upm/Makefile builds both
"$TOP"/scripts/build-tools.sh || die "cannot build tools/upm/bench/upm_bench.c"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
run=$BUILD/bench/run-$stamp
mkdir -p "$run"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
step "UPM benchmarks on the release kernel" \
	"(emulated guest: only ratios mean something)"
info "host load average before: $load0 ($(nproc) host cores, shared)"
# UPM_BENCH_* settings reach the guest through the job script.
envs=
for v in ${!UPM_BENCH_@}; do envs+=$(printf 'export %s=%q; ' "$v" "${!v}"); done
bench="$BUILD/tools/upm_bench -o \$UPM_OUT/records.jsonl ${BENCHES:-all}"
report=true
if [ "${PROFILE:-0}" = 1 ]; then
	command -v perf >/dev/null || die "PROFILE=1 needs perf ('make deps')"
	bench="perf record -q -a -g -e cpu-clock -F 1000 \
		-o \$UPM_OUT/perf.data -- $bench"
	report=
	for mode in --children --no-children; do
		report+="perf report -i \$UPM_OUT/perf.data --comm upm_bench \
			$mode --sort sym -g none --percentage relative \
			--percent-limit 0.5 --stdio >> \$UPM_OUT/profile.txt \
			2>&1; "
	done
	report+=true
fi
OUT=$run "$TOP"/scripts/vm.sh "$envs uname -r > \$UPM_OUT/uname; \
cat /sys/devices/system/clocksource/clocksource0/current_clocksource \
	> \$UPM_OUT/clocksource; \
$bench; rc=\$?; $report; \
(cd /sys/kernel/mm/upm && grep . *) > \$UPM_OUT/upm-sysfs.txt; exit \$rc"
rc=$?
load1=$(cut -d' ' -f1-3 /proc/loadavg)
info "host load average after: $load1"
[ -s "$run/records.jsonl" ] || die "the guest wrote no results (status $rc)"
python3 "$TOP"/scripts/bench-report.py "$run/records.jsonl" \
	"$BUILD/bench/results.json" \
	date="$stamp" kernel="$(cat "$run/uname" 2>/dev/null)" \
	clocksource="$(cat "$run/clocksource" 2>/dev/null)" \
	flavour=release guest="QEMU TCG (emulated)" guest_mem="$MEM" \
	guest_cpus="$CPUS" host_cores="$(nproc)" \
	timing="$([ "${ICOUNT:-0}" = 1 ] && echo "icount (1 ns per guest instruction)" || echo wall)" \
	host_load_before="$load0" host_load_after="$load1" \
	benches="${BENCHES:-all}" \
	complete="$([ $rc = 0 ] && echo yes || echo no)" ||
	die "cannot write the results"
cp "$BUILD/bench/results.json" "$run/results.json"
[ $rc = 0 ] ||
	die "the benchmark run failed (status $rc); partial results above"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make run: the serverless density experiment. Builds the helpers, writes
# the model once (build/density/model), boots the kernel (release flavour
# unless FLAVOUR= says otherwise) once for all modes, runs
# tools/upm/density/density.py in the guest, then prints the table and
# plots memory per instance (build/density/density.{json,png}).
# Environment: MEM (guest memory, 6G), COUNTS (instance counts, 4,16),
# KSM_COUNTS (counts for KSM at its defaults, 16), KSM_CAP (seconds KSM
# may take to catch up, 60); SWEEP=full for the full sweep (COUNTS
# 1,2,4,8,16, KSM_COUNTS 4,16, KSM_CAP 120). The defaults keep a fresh
# clone's make run, kernel build included, under 30 minutes here.
set -uo pipefail
. "$(dirname "$0")/common.sh"
py=/usr/bin/python3
out=$BUILD/density
if [ "${SWEEP:-}" = full ]; then
	counts=${COUNTS:-1,2,4,8,16} ksm_counts=${KSM_COUNTS:-4,16}
	cap=${KSM_CAP:-120}
else
	counts=${COUNTS:-4,16} ksm_counts=${KSM_COUNTS:-16} cap=${KSM_CAP:-60}
fi
"$TOP"/scripts/build-tools.sh || exit 1
step "Writing the model weights (once) into $out/model"
$py "$TOP/tools/upm/density/gen_model.py" "$out/model" ||
	die "cannot write the model (is python3-numpy installed? make deps)"
rm -rf "$out/guest"
step "Density experiment in the $FLAVOUR kernel: modes none, upm," \
	"ksm-full (counts $counts), ksm (counts $ksm_counts);" \
	"KSM waits at most ${cap}s per point"
info "the guest is emulated (QEMU TCG): times are not native times"
MEM=${MEM:-6G} TIMEOUT=${TIMEOUT:-5400} OUT=$out/guest \
	"$TOP"/scripts/vm.sh "FLAVOUR=$FLAVOUR \
PYTHONPATH=$TOP/tools/upm/python $py $TOP/tools/upm/density/density.py \
$out/model \$UPM_OUT/density.json --counts $counts --ksm-counts $ksm_counts \
--ksm-cap $cap"
rc=$?
[ -f "$out/guest/density.json" ] || die "the guest wrote no results" \
	"(status $rc; console log: $BUILD/vm-console.log)"
cp "$out/guest/density.json" "$out/density.json"
echo
$py "$TOP/tools/upm/density/report.py" "$out/density.json" "$out/density.png" ||
	die "cannot print or plot the results"
[ "$rc" = 0 ] || echo "upm: warning: the guest run failed (status $rc):" \
	"the results may be partial"
echo "Results (JSON, schema in tools/upm/density/README): $out/density.json"
echo "Plot: $out/density.png"
t=$out/density-timeline.png; [ -f "$t" ] && echo "Timeline plot: $t"
exit "$rc"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make run: boot the kernel and show UPM at work: two processes with the
# same 64 MiB of random data, one madvise each, frames saved at once.
set -uo pipefail
. "$(dirname "$0")/common.sh"
inc=$("$TOP"/scripts/headers.sh | tail -n 1)
mkdir -p "$BUILD/tools"
gcc -O2 -Wall -isystem "$inc" -o "$BUILD/tools/upm_demo" "$TOP/tools/upm/upm_demo.c" ||
	die "cannot build tools/upm/upm_demo.c"
step "UPM demo in the $FLAVOUR kernel (emulated guest: times are not native)"
"$TOP"/scripts/vm.sh "cat /sys/kernel/mm/upm/index_buckets >/dev/null && \
echo 'UPM is in this kernel: /sys/kernel/mm/upm/' && \
$BUILD/tools/upm_demo ${SIZE_MIB:-64}; rc=\$?; \
echo '/sys/kernel/mm/upm:'; cd /sys/kernel/mm/upm && grep . * | sed 's/^/  /'; exit \$rc"

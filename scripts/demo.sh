#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make demo: boot the kernel and show UPM at work: two processes with the
# same 64 MiB of random data, one madvise each, frames saved at once.
set -uo pipefail
. "$(dirname "$0")/common.sh"
"$TOP"/scripts/build-tools.sh
step "UPM demo in the $FLAVOUR kernel (emulated guest: times are not native)"
"$TOP"/scripts/vm.sh "cat /sys/kernel/mm/upm/index_buckets >/dev/null && \
echo 'UPM is in this kernel: /sys/kernel/mm/upm/' && \
$BUILD/tools/upm_demo ${SIZE_MIB:-64}; rc=\$?; \
echo '/sys/kernel/mm/upm:'; \
cd /sys/kernel/mm/upm && grep . * | sed 's/^/  /'; exit \$rc"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Build the user-space helpers of tools/upm into build/tools with
# tools/upm/Makefile: libupm.a, libupm.so, its tests (kselftest harness
# from the unpacked tree), upm-exec, upm_demo and upm_bench (all linked
# with libupm.a), always afresh (-B: the UAPI headers may have changed).
set -euo pipefail
. "$(dirname "$0")/common.sh"
inc=$("$TOP"/scripts/headers.sh | tail -n 1)
out=$BUILD/tools
mkdir -p "$out"
step "Building the UPM user-space helpers into $out"
make -s -B -C "$TOP/tools/upm" OUTPUT="$out" KHDR_INCLUDES="-isystem $inc" \
	SELFTESTS_DIR="$TREE/tools/testing/selftests" all ||
	die "tools/upm does not build (make -C tools/upm, above)"
info "built: libupm.a libupm.so upm_lib_tests upm-exec upm_demo upm_bench"

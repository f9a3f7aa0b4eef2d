#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Build the user-space helpers of tools/upm into build/tools: libupm.a,
# its tests (kselftest harness from the unpacked tree) and upm_demo.
set -euo pipefail
. "$(dirname "$0")/common.sh"
inc=$("$TOP"/scripts/headers.sh | tail -n 1)
src=$TOP/tools/upm
out=$BUILD/tools
mkdir -p "$out"
cflags=(-O2 -Wall -Wextra -Wno-unused-parameter -isystem "$inc" -I"$src")
step "Building the UPM user-space helpers into $out"
gcc "${cflags[@]}" -c -o "$out/upm.o" "$src/upm.c" ||
	die "tools/upm/upm.c does not build"
ar rcs "$out/libupm.a" "$out/upm.o"
gcc "${cflags[@]}" -I"$TREE/tools/testing/selftests" \
	-o "$out/upm_lib_tests" "$src/tests/upm_lib_tests.c" "$out/libupm.a" ||
	die "tools/upm/tests/upm_lib_tests.c does not build"
gcc "${cflags[@]}" -o "$out/upm_demo" "$src/upm_demo.c" ||
	die "tools/upm/upm_demo.c does not build"
info "built: libupm.a upm_lib_tests upm_demo"

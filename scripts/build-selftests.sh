#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Build the UPM kselftests and the upstream KSM selftests (mm/) against
# the patched UAPI headers, into build/selftests.
set -euo pipefail
. "$(dirname "$0")/common.sh"
inc=$("$TOP"/scripts/headers.sh | tail -n 1)
out=$BUILD/selftests
mkdir -p "$out/upm" "$out/mm"
step "Building selftests into $out"
kh="-isystem $inc"
make -s -C "$TREE/tools/testing/selftests/upm" OUTPUT="$out/upm" \
	KHDR_INCLUDES="$kh" all >"$out/upm.log" 2>&1 ||
	{ cat "$out/upm.log" >&2; die "the UPM selftests do not build (above)"; }
MM_TESTS=(ksm_functional_tests ksm_tests cow)
# Probe the host again (liburing may have been installed since): cow only
# builds its io_uring cases when local_config says so.
rm -f "$TREE"/tools/testing/selftests/mm/local_config.{h,mk}
make -s -C "$TREE/tools/testing/selftests/mm" OUTPUT="$out/mm" \
	KHDR_INCLUDES="$kh" "${MM_TESTS[@]/#/$out/mm/}" >"$out/mm.log" 2>&1 ||
	{ tail -n 30 "$out/mm.log" >&2; die "the upstream mm selftests do not build (above)"; }
"$TOP"/scripts/build-tools.sh
info "built: $(cd "$out" && ls upm/ mm/ | grep -v -e ':' -e '\.log' -e '^$' | tr '\n' ' ')"

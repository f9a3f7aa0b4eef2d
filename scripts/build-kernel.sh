#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# build-kernel.sh FLAVOUR: configure (tinyconfig + layered fragments) and
# build bzImage for the debug or release flavour, with ccache.
set -euo pipefail
. "$(dirname "$0")/common.sh"

flavour=${1:-debug}
[ -f "$TOP/configs/$flavour.config" ] ||
	die "unknown flavour '$flavour' (use FLAVOUR=debug or FLAVOUR=release)"
obj=$(objdir "$flavour")
frags=("$TOP/configs/base.config" "$TOP/configs/$flavour.config")
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/upm-ccache}
# Hash paths relative to build/, so that every clone shares the cache.
export CCACHE_BASEDIR=$BUILD CCACHE_NOHASHDIR=1
export KBUILD_BUILD_TIMESTAMP='2024-11-17' KBUILD_BUILD_USER=upm \
	KBUILD_BUILD_HOST=upm
mkdir -p "$obj" "$CCACHE_DIR"
ccache -M 8G >/dev/null 2>&1 || true
kmake() {
	make -C "$TREE" O="$obj" CC="ccache gcc" HOSTCC="ccache gcc" \
		-j"$(nproc_build)" "$@"
}

sum=$(cat "${frags[@]}" "$TOP/Kconfig" | md5sum | cut -d' ' -f1)
if [ ! -f "$obj/.config" ] || [ "$(cat "$obj/.upm-config-sum" 2>/dev/null)" != "$sum" ]; then
	step "Configuring the $flavour kernel (tinyconfig + ${frags[*]##*/})"
	kmake -s tinyconfig >/dev/null
	(cd "$TREE" && scripts/kconfig/merge_config.sh -m -O "$obj" \
		"$obj/.config" "${frags[@]}" >/dev/null)
	kmake -s olddefconfig >/dev/null
	# Every option we asked for must have survived its dependencies.
	bad=0
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=n)
			opt=${line%%=*}
			if grep -q "^$opt=" "$obj/.config"; then
				echo "upm: error: $opt is set, but configs ask for =n" >&2; bad=1
			fi ;;
		CONFIG_*=*)
			if ! grep -qx "$line" "$obj/.config"; then
				echo "upm: error: $line was dropped by Kconfig (unmet dependency); fix configs/*.config" >&2; bad=1
			fi ;;
		esac
	done < <(cat "${frags[@]}" | grep '^CONFIG_')
	[ $bad = 0 ] || die "the $flavour config lacks required options (listed above)"
	echo "$sum" > "$obj/.upm-config-sum"
fi

step "Building the $flavour kernel in $obj (ccache: $CCACHE_DIR)"
log=$obj/build.log
start=$(date +%s)
set +e
kmake bzImage 2>&1 | tee "$log" | awk -v t0="$start" '
	/^  (CC|AS|LD|AR)/ { n++ }
	{ now = systime(); if (now - last >= 20) {
		printf "    ... %d objects built, %ds elapsed\n", n, now - t0
		fflush(); last = now } }'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then
	grep -E 'error|Error' "$log" | head -n 30 >&2
	die "the $flavour kernel build failed (full log: $log)"
fi
grep -E ': warning:' "$log" | sort -u | head -n 20 >&2 || true
info "bzImage: $obj/arch/x86/boot/bzImage ($(( $(date +%s) - start ))s)"

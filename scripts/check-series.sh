#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make bisect: every step of the series builds. Applies the patches of
# build/patch-out one at a time to a copy of the pristine tree and after
# each one compiles every object the series touches (with the debug
# kernel's .config, so that CONFIG_UPM comes in with the step that adds
# it); after the last one it links vmlinux. Incremental, with the kernel
# build's ccache. (The steps before the last are compiled, not linked: a
# full kernel per step would take an hour with a cold cache.)
set -euo pipefail
. "$(dirname "$0")/common.sh"
out=$BUILD/patch-out
bis=$BUILD/bisect
conf=$(objdir debug)/.config
[ -f "$conf" ] || die "no debug kernel configured yet: run 'make kernel' first"
mapfile -t patches < <(ls "$out"/[0-9][0-9][0-9][0-9]-*.patch 2>/dev/null |
			grep -v /0000-cover-letter)
[ ${#patches[@]} -gt 0 ] || die "no series in $out: run 'make patch' first"

# The tree and objects sit at the same depth below $bis as build/linux
# and build/obj-debug below build/, so that ccache (CCACHE_BASEDIR) sees
# the same relative paths and finds the main build's objects.
tree=$bis/linux obj=$bis/obj-debug
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/upm-ccache}
export CCACHE_BASEDIR=$bis CCACHE_NOHASHDIR=1
export KBUILD_BUILD_TIMESTAMP='2024-11-17' KBUILD_BUILD_USER=upm \
	KBUILD_BUILD_HOST=upm
step "Building each step of the series (build/bisect)"
touched=$(cat "${patches[@]}" | sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' |
	  sort -u)
# Fresh copies of the files the series touches; hard links for the rest
rm -rf "$tree"; mkdir -p "$bis" "$obj"
cp -al "$PRISTINE" "$tree"
for f in $touched; do
	[ -f "$tree/$f" ] && cp --remove-destination "$PRISTINE/$f" "$tree/$f"
done
objects=$(printf '%s\n' $touched | sed -n 's|\.c$|.o|p' |
	  grep -v '^tools/' || true)
kmake() {
	make -s -C "$tree" O="$obj" CC="ccache gcc" HOSTCC="ccache gcc" \
		-j"$(nproc_build)" "$@"
}
n=0
for p in "${patches[@]}"; do
	n=$((n + 1))
	patch -s -d "$tree" -p1 -F0 -N --no-backup-if-mismatch -r - < "$p" ||
		die "$(basename "$p") does not apply on the steps before it"
	cp "$conf" "$obj/.config"
	kmake olddefconfig >/dev/null
	t0=$(date +%s)
	present=
	for o in $objects; do
		[ -f "$tree/${o%.o}.c" ] && present="$present $o"
	done
	[ "$n" = ${#patches[@]} ] && present="$present vmlinux"
	# shellcheck disable=SC2086
	if ! kmake $present > "$bis/step-$n.log" 2>&1; then
		grep -E 'error|Error' "$bis/step-$n.log" | head -n 20 >&2
		die "step $n ($(basename "$p")) does not build; log: $bis/step-$n.log"
	fi
	info "step $n builds ($(( $(date +%s) - t0 )) s): $(basename "$p")"
done
rm -rf "$tree"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Build the work tree: pristine 6.12 source + our patches + our new files.
#
# build/pristine  the unmodified source (Debian's linux-source-6.12, or a
#                 copy of KSRC), kept for patch generation and refresh.
# build/linux     the tree we compile. Only files whose content changes are
#                 rewritten, so an incremental kernel build stays short.
set -euo pipefail
. "$(dirname "$0")/common.sh"

KSRC=${KSRC:-}
TARBALL=/usr/src/linux-source-6.12.tar.xz

check_612() {
	local mk=$1/Makefile
	[ -f "$mk" ] || die "KSRC=$1 is not a kernel tree (no Makefile); point KSRC at a Linux 6.12.y source tree"
	local v p
	v=$(awk '/^VERSION =/ {print $3; exit}' "$mk")
	p=$(awk '/^PATCHLEVEL =/ {print $3; exit}' "$mk")
	[ "$v.$p" = "6.12" ] || die "$1 is Linux $v.$p, not 6.12; point KSRC at a 6.12.y tree"
}

mkdir -p "$BUILD"
if [ ! -f "$PRISTINE/.upm-source" ]; then
	rm -rf "$PRISTINE" "$TREE"
	if [ -n "$KSRC" ]; then
		check_612 "$KSRC"
		step "Copying kernel source from $KSRC"
		rsync -a --exclude=.git "$KSRC"/ "$PRISTINE"/
		desc="KSRC=$KSRC"
	else
		[ -f "$TARBALL" ] || die "$TARBALL missing; run 'make deps' (installs linux-source-6.12)"
		step "Unpacking $TARBALL"
		tmp=$BUILD/unpack.tmp
		rm -rf "$tmp"; mkdir -p "$tmp"
		tar -xf "$TARBALL" -C "$tmp"
		mv "$tmp"/linux-source-6.12 "$PRISTINE"
		rmdir "$tmp"
		desc="Debian linux-source-6.12 $(dpkg-query -W -f='${Version}' linux-source-6.12)"
	fi
	check_612 "$PRISTINE"
	sub=$(awk '/^SUBLEVEL =/ {print $3; exit}' "$PRISTINE/Makefile")
	echo "$desc (Linux 6.12.$sub)" > "$PRISTINE/.upm-source"
	info "source: $(cat "$PRISTINE/.upm-source")"
elif [ -n "$KSRC" ] && ! grep -qF "KSRC=$KSRC" "$PRISTINE/.upm-source"; then
	die "build/ was prepared from $(cat "$PRISTINE/.upm-source"); run 'make distclean' before switching KSRC"
fi

if [ ! -d "$TREE" ]; then
	step "Creating the work tree build/linux"
	cp -a "$PRISTINE" "$TREE"
fi

# Stage the patched and new files, then copy only what changed.
stage=$BUILD/stage
rm -rf "$stage"; mkdir -p "$stage"
step "Applying patches/series (zero fuzz)"
files=$("$TOP"/scripts/patch-files.sh)
for f in $files; do
	mkdir -p "$stage/$(dirname "$f")"
	if [ -f "$PRISTINE/$f" ]; then cp -p "$PRISTINE/$f" "$stage/$f"; fi
done
while read -r p _; do
	case "$p" in ''|'#'*) continue ;; esac
	# A step that only adds new files has no hunks
	grep -q '^+++ ' "$TOP/patches/$p" || continue
	if ! out=$(patch -d "$stage" -p1 -F0 -N --no-backup-if-mismatch \
			-r - < "$TOP/patches/$p" 2>&1); then
		printf '%s\n' "$out" | grep -E 'patching file|FAILED|can.t find|Reversed|malformed' >&2 || printf '%s\n' "$out" >&2
		die "patch $p does not apply to $(cat "$PRISTINE/.upm-source") (see the hunk above); fix it in build/linux and run 'make refresh'"
	fi
	info "applied $p"
done < "$TOP/patches/series"

step "Overlaying new files"
for f in $("$TOP"/scripts/overlay-files.sh); do
	mkdir -p "$stage/$(dirname "$f")"
	cp -p "$TOP/$f" "$stage/$f"
done
# Our top-level Kconfig goes into mm/Kconfig, next to KSM's entry.
mkdir -p "$stage/mm"
[ -f "$stage/mm/Kconfig" ] || cp -p "$PRISTINE/mm/Kconfig" "$stage/mm/Kconfig"
splice_kconfig "$TOP/Kconfig" "$stage/mm/Kconfig"

# A file we staged last time but no longer touch goes back to pristine.
(cd "$stage" && find . -type f | sed 's|^\./||' | sort) > "$BUILD/staged.new"
if [ -f "$BUILD/staged.list" ]; then
	comm -23 "$BUILD/staged.list" "$BUILD/staged.new" | while read -r f; do
		if [ -f "$PRISTINE/$f" ]; then cp -p "$PRISTINE/$f" "$TREE/$f"
		else rm -f "$TREE/$f"; fi
		info "restored $f"
	done
fi
rsync -rc "$stage"/ "$TREE"/
# What we installed, so that refresh copies back only later edits.
(cd "$stage" && find . -type f -print0 | xargs -0 md5sum) > "$BUILD/staged.sums"
mv "$BUILD/staged.new" "$BUILD/staged.list"
info "work tree ready: $TREE"

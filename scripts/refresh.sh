#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Regenerate patches/*.patch from edits made directly in build/linux, and
# copy edited overlay files back into the repository. Nobody hand-edits a
# diff. ADD=path PATCH=name adds an existing kernel file to a patch.
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ -d "$TREE" ] || die "no work tree; run 'make tree' first"

if [ -n "${ADD:-}" ]; then
	[ -n "${PATCH:-}" ] && [ -f "$TOP/patches/$PATCH" ] ||
		die "ADD=$ADD needs PATCH=<a file listed in patches/series>"
	[ -f "$PRISTINE/$ADD" ] || die "$ADD is not an existing kernel file"
fi

edited_in_tree() {
	local was
	was=$(awk -v f="./$1" '$2 == f {print $1}' "$BUILD/staged.sums" 2>/dev/null)
	[ -n "$was" ] && [ "$(md5sum < "$TREE/$1" | cut -d' ' -f1)" != "$was" ]
}

# Patches in order, and the kernel files each touches. A file may be
# touched by several patches (a fix first, then UPM's change): only the
# last of them is regenerated from build/linux, as the difference from
# the file after the patches before it; the earlier ones keep their hunks
# for that file as they are.
mapfile -t series < <(grep -v -e '^#' -e '^$' "$TOP/patches/series" |
	awk '{print $1}')
base=$(mktemp -d)
trap 'rm -rf "$base"' EXIT
# hunks_of PATCH FILE: the diff section of FILE in PATCH
hunks_of() {
	awk -v f="a/$2" '/^diff --git / {keep = ($3 == f)} keep' "$1"
}
for i in "${!series[@]}"; do
	p=${series[$i]}
	f=$TOP/patches/$p
	files=$("$TOP"/scripts/patch-files.sh "$p")
	[ "${PATCH:-}" = "$p" ] && files="$files ${ADD:-}"
	# A step that only adds new files has no hunks to refresh
	[ -n "${files// /}" ] || continue
	files=$(printf '%s\n' $files | sort -u)
	later=$(cd "$TOP/patches" && for q in "${series[@]:$((i + 1))}"; do
		sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$q"
		if [ "${PATCH:-}" = "$q" ]; then echo "${ADD:-}"; fi
	done | sort -u)
	diff=
	for k in $files; do
		if [ ! -f "$base/$k" ] && [ -f "$PRISTINE/$k" ]; then
			mkdir -p "$base/$(dirname "$k")"
			cp "$PRISTINE/$k" "$base/$k"
		fi
		if printf '%s\n' "$later" | grep -qxF "$k"; then
			d=$(hunks_of "$f" "$k")
		else
			d=$("$TOP"/scripts/gendiff.sh "$base" "$TREE" "$k")
		fi
		[ -n "$d" ] && diff=${diff:+$diff$'\n'}$d
	done
	[ -n "$diff" ] || die "$p: no changes left in $files"
	printf '%s\n' "$diff" | patch -s -d "$base" -p1 -F0 -N \
		--no-backup-if-mismatch -r - ||
		die "$p: its hunks do not apply after the patches before it"
	hdr=$(awk '/^---$/ {exit} {print}' "$f")
	{
		printf '%s\n---\n' "$hdr"
		printf '%s\n' "$diff" | git apply --stat
		printf '\n%s\n' "$diff"
	} > "$f.new"
	if cmp -s "$f" "$f.new"; then
		rm "$f.new"
	else
		mv "$f.new" "$f"
		info "refreshed $p"
	fi
done

for o in $("$TOP"/scripts/overlay-files.sh); do
	# Only what was edited in build/linux since prepare-tree put it there.
	if [ -f "$TREE/$o" ] && edited_in_tree "$o"; then
		cp "$TREE/$o" "$TOP/$o"
		info "copied back $o"
	fi
done
if edited_in_tree mm/Kconfig; then
	extract_kconfig "$TREE/mm/Kconfig" > "$TOP/Kconfig"
	info "copied back Kconfig (the UPM options in mm/Kconfig)"
fi

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

while read -r p _; do
	case "$p" in ''|'#'*) continue ;; esac
	f=$TOP/patches/$p
	files=$("$TOP"/scripts/patch-files.sh "$p")
	[ "${PATCH:-}" = "$p" ] && files="$files ${ADD:-}"
	# A step that only adds new files has no hunks to refresh
	[ -n "${files// /}" ] || continue
	files=$(printf '%s\n' $files | sort -u)
	hdr=$(awk '/^---$/ {exit} {print}' "$f")
	diff=$("$TOP"/scripts/gendiff.sh "$PRISTINE" "$TREE" $files)
	[ -n "$diff" ] || die "$p: no changes left in $files"
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
done < "$TOP/patches/series"

for o in $("$TOP"/scripts/overlay-files.sh); do
	# Only what was edited in build/linux since prepare-tree put it there.
	if [ -f "$TREE/$o" ] && edited_in_tree "$o"; then
		cp "$TREE/$o" "$TOP/$o"
		info "copied back $o"
	fi
done
if edited_in_tree mm/upm/Kconfig; then
	cp "$TREE/mm/upm/Kconfig" "$TOP/Kconfig"
	info "copied back Kconfig"
fi

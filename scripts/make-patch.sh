#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make patch: the series of patches/series as git format-patch writes it
# (a cover letter, one patch per line of patches/series, in that order,
# with a diffstat and base-commit), and one combined patch. Both are
# made in a throwaway git tree that starts from the pristine files, and
# checked with git am / git apply there. Author and Signed-off-by are the
# git identity of whoever runs it. Output: build/patch-out/.
set -euo pipefail
. "$(dirname "$0")/common.sh"
out=$BUILD/patch-out
git=$BUILD/series-git
src=$(cat "$PRISTINE/.upm-source")

name=$(cd "$TOP" && git config user.name || true)
email=$(cd "$TOP" && git config user.email || true)
[ -n "$name" ] && [ -n "$email" ] ||
	die "no git identity for the patches' author and Signed-off-by: set git config user.name and user.email"
export GIT_AUTHOR_NAME=$name GIT_AUTHOR_EMAIL=$email
export GIT_COMMITTER_NAME=$name GIT_COMMITTER_EMAIL=$email
# Reproducible commits (and so a stable base-commit) for the same input
export GIT_AUTHOR_DATE='2026-12-01T00:00:00Z' GIT_COMMITTER_DATE='2026-12-01T00:00:00Z'

# The series: patch file, then the new files (repository paths) it adds.
mapfile -t lines < <(grep -v -e '^#' -e '^$' "$TOP/patches/series")
# Where a repository path goes in the kernel tree
kpath() { [ "$1" = Kconfig ] && echo mm/Kconfig || echo "$1"; }
new_files() {	# new_files PATH...: the files under each path
	local p
	for p in "$@"; do
		(cd "$TOP" && git ls-files --cached --others --exclude-standard -- "$p")
	done
}

rm -rf "$git" "$out"; mkdir -p "$git" "$out"
# The base: the pristine version of every existing file the series touches
for f in $("$TOP"/scripts/patch-files.sh) mm/Kconfig; do
	[ -f "$PRISTINE/$f" ] || continue
	mkdir -p "$git/$(dirname "$f")"
	cp "$PRISTINE/$f" "$git/$f"
done
cd "$git"
git init -q
git add -A
git commit -q -m "$src (the files the series touches)"
base=$(git rev-parse HEAD)

for line in "${lines[@]}"; do
	read -r p adds <<< "$line"
	patch=$TOP/patches/$p
	[ -f "$patch" ] || die "patches/series lists $p, which does not exist"
	if grep -q '^+++ ' "$patch"; then
		git apply --index "$patch" ||
			die "$p does not apply after the patches before it in patches/series"
	fi
	# shellcheck disable=SC2086
	for f in $(new_files $adds); do
		k=$(kpath "$f")
		mkdir -p "$(dirname "$k")"
		if [ "$f" = Kconfig ]; then
			splice_kconfig "$TOP/$f" "$k"
		else
			cp "$TOP/$f" "$k"
		fi
		git add "$k"
	done
	git diff --cached --quiet && die "$p adds nothing"
	awk '/^---$/ {exit} {print}' "$patch" |
		sed '1s/^Subject: \(\[PATCH\] \)\{0,1\}//' |
		git commit -q -s -F -
done

# Every new file belongs to exactly one step
missing=$(comm -23 <("$TOP"/scripts/overlay-files.sh | while read -r f; do
		kpath "$f"; done | sort) <(git ls-files | sort))
[ -z "$missing" ] ||
	die "new files in no step of patches/series: $(echo $missing)"

total=$(git rev-list --count "$base"..HEAD)
git format-patch -q --cover-letter --base="$base" -o "$out" "$base"..HEAD
cover=$out/0000-cover-letter.patch
blurb=$(mktemp)
cat > "$blurb" <<EOF
Merge identical anonymous pages at madvise(MADV_UPM_MERGEABLE) time,
on KSM's machinery, so that short-lived serverless instances share
memory at once instead of after minutes of ksmd scanning.

The first three patches are independent fixes, each with its Fixes:
tag. Then the UAPI, KSM's side of UPM (a narrow seam of ksm_ functions),
per-mm state, UPM itself, its documentation and its selftests. Each
step builds on its own.

Based on $src.
The series needs 6.12.54 or later: the third patch changes ksm_fork()
as the 6.12.y backport of commit 4d6fc29f3634 ("mm/ksm: fix incorrect
KSM counter handling in mm_struct during fork") left it. Only Debian's
6.12.117 has been built and tested.
The base-commit below is that of a throwaway git tree holding the
pristine files this series touches.
EOF
python3 - "$cover" "$blurb" <<'EOF'
import sys
cover, blurb = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
s = open(cover).read()
s = s.replace("*** SUBJECT HERE ***", "mm: UPM, user-guided page merging")
s = s.replace("*** BLURB HERE ***", blurb)
open(cover, "w").write(s)
EOF
rm -f "$blurb"
git diff "$base" HEAD > "$out/upm-combined.patch"

# Both forms must apply to the base: git am the series, git apply the rest
check=$(mktemp -d); trap 'rm -rf "$check"' EXIT
mapfile -t patches < <(ls "$out"/[0-9][0-9][0-9][0-9]-*.patch | grep -v /0000-cover-letter)
git worktree add -q --detach "$check/am" "$base"
(cd "$check/am" && git am -q --whitespace=error-all "${patches[@]}") ||
	die "the series does not apply with git am to its base," \
		"or adds whitespace errors (above)"
[ -z "$(git -C "$check/am" diff HEAD)" ] &&
	git -C "$check/am" diff --quiet HEAD "$(git rev-parse HEAD)" ||
	die "git am of the series gives another tree than the series"
git worktree add -q --detach "$check/apply" "$base"
(cd "$check/apply" && git apply --check "$out/upm-combined.patch") ||
	die "upm-combined.patch does not apply to the pristine files"
git worktree remove --force "$check/am"
git worktree remove --force "$check/apply"

info "series: $(basename "$cover") and $total patches in $out (author: $name <$email>)"
info "combined: $out/upm-combined.patch (both apply to $src)"

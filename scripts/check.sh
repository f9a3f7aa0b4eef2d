#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make check: checkpatch on every generated patch, kernel-doc on our files,
# a W=1 and sparse (C=2) build of our objects with no warnings, a build
# of every step of the series (check-series.sh), and the KUnit suite
# through kunit.py (kunit.sh).
set -uo pipefail
. "$(dirname "$0")/common.sh"
bad=0
"$TOP"/scripts/make-patch.sh || exit 1

step "checkpatch.pl on build/patch-out/*.patch"
for p in "$BUILD"/patch-out/0*.patch; do
	# No kernel git history here: checkpatch cannot look up the commits
	# that Fixes: tags name (they are upstream ids, checked by hand).
	r=$(cd "$TREE" && perl scripts/checkpatch.pl -q --max-line-length=80 --terse \
		--ignore FILE_PATH_CHANGES,UNKNOWN_COMMIT_ID "$p" 2>&1)
	if printf '%s\n' "$r" | grep -qE 'ERROR:|WARNING:|CHECK:' ||
	   ! printf '%s\n' "$r" | grep -q 'total: 0 errors, 0 warnings'; then
		echo "$(basename "$p"):"; printf '%s\n' "$r" | sed 's/^/    /'; bad=1
	else
		info "$(basename "$p"): 0 errors, 0 warnings"
	fi
done

step "kernel-doc -none -Wall on our files"
ours=$(cd "$TOP" && git ls-files -- 'mm/*.c' 'mm/*.h' 'include/*.h')
r=$(cd "$TREE" && perl scripts/kernel-doc -none -Wall $ours 2>&1)
if [ -n "$r" ]; then printf '%s\n' "$r"; bad=1; else info "clean: $(echo $ours)"; fi

# w1_sparse OBJ KEEP ALLOWED: W=1 and sparse (C=2) build of OBJ; the
# output lines matching KEEP, but those matching ALLOWED, are problems.
w1_sparse() {
	local r
	step "W=1 and sparse (C=2) build of $1"
	touch "$TREE/${1%.o}.c"
	r=$(make -s -C "$TREE" O="$obj" CC="ccache gcc" W=1 C=2 \
		CHECK="sparse -Wno-decl" "$1" 2>&1 | grep -E "$2" |
		grep -vE "$3")
	if [ -n "$r" ]; then printf '%s\n' "$r"; bad=1; else info "no warnings"; fi
}

obj=$(objdir debug)
if [ -f "$obj/.config" ]; then
	export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/upm-ccache}
	# folio_walk_start() takes the PTL without a sparse annotation, so
	# every caller gets this (mm/ksm.c's get_mergeable_page too)
	w1_sparse mm/upm.o 'upm\.[ch]|ksm_internal' \
		"context imbalance in '(upm_collect_page|upm_candidate_page|upm_page_mapped_at_locked|upm_merged_without_item)' - unexpected unlock"
	# KSM's side of the seam: nothing beyond upstream KSM's own sparse
	# context warnings (functions that unlock what a helper locked)
	w1_sparse mm/ksm.o 'warning|error' \
		"context imbalance in '(break_ksm|get_mergeable_page|write_protect_page|replace_page|ksm_next_page_pmd_entry)' - unexpected unlock"
else
	info "skipping the W=1 build: no debug kernel configured yet (make kernel)"
fi
if [ -f "$(objdir debug)/.config" ]; then
	"$TOP"/scripts/check-series.sh || bad=1
else
	info "skipping the build of each step: no debug kernel configured yet"
fi
# The KUnit suite through the kernel's own tool, on its small x86_64
# config (no memcg, NUMA or swap): also proves UPM builds without them.
"$TOP"/scripts/kunit.sh || bad=1
[ $bad = 0 ] || { echo "upm: make check found problems (above)" >&2; exit 1; }

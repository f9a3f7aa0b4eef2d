#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make patch: a format-patch style series (cover letter, then one patch per
# logical step) and one combined patch, both checked with git apply
# --check against the pristine tree. Output: build/patch-out/.
set -euo pipefail
. "$(dirname "$0")/common.sh"
out=$BUILD/patch-out
rm -rf "$out"; mkdir -p "$out"
from="UPM developers <upm-devel@lists.example.org>"
src=$(cat "$PRISTINE/.upm-source")

hunk_files() { "$TOP"/scripts/patch-files.sh "$1"; }
overlay() { "$TOP"/scripts/overlay-files.sh | grep -E "$1" || true; }
header() { awk '/^---$/ {exit} {print}' "$TOP/patches/$1"; }

steps=()
add_step() {	# add_step NAME HEADER-TEXT FILE...
	local name=$1 hdr=$2
	shift 2
	local n=$(( ${#steps[@]} + 1 ))
	local f
	f=$(printf '%s/%04d-%s.patch' "$out" "$n" "$name")
	local d
	d=$("$TOP"/scripts/gendiff.sh "$PRISTINE" "$TREE" "$@")
	{
		printf '%s\n' "$hdr" | sed "s/^Subject: \[PATCH\]/Subject: [PATCH $n\/NN]/"
		echo '---'
		printf '%s\n' "$d" | git apply --stat
		printf '\n%s\n' "$d"
	} > "$f"
	steps+=("$f")
}

mapfile -t series < <(grep -v -e '^#' -e '^$' "$TOP/patches/series")
# An independent fix goes first.
add_step ksm-tests-fix "$(header "${series[6]}")" $(hunk_files "${series[6]}")
add_step uapi "$(header "${series[0]}")" $(hunk_files "${series[0]}")
add_step ksm-internals "$(header "${series[1]}")" $(hunk_files "${series[1]}")
add_step core "From: $from
Subject: [PATCH] mm: add UPM, user-guided page merging at madvise time

madvise(MADV_UPM_MERGEABLE) merges the identical pages of a range during
the call, instead of waiting minutes for ksmd's scan. Each present
anonymous page is hashed outside any lock, looked up in a hash index of
KSM stable pages keyed by content hash and merge domain, verified with
memcmp and merged with KSM's own functions; a page with no twin becomes a
KSM stable page and enters the index. Merged pages are KSM pages in every
respect. Counters are in /sys/kernel/mm/upm/, tracepoints mark the start
and end of each call, /proc/<pid>/ksm_stat shows what UPM did for a
process, and KUnit tests cover the index.

$(header "${series[2]}" | sed -n '/^Subject/,$p' | sed '1d')" \
	$(hunk_files "${series[2]}") $(hunk_files "${series[5]}") \
	mm/upm/Kconfig $(overlay '^(mm|include)/')
add_step kpageflags-fix "$(header "${series[4]}")" $(hunk_files "${series[4]}")
docs="$(overlay '^Documentation/') $(hunk_files "${series[3]}")"
if [ -n "${docs// /}" ]; then
	add_step docs "From: $from
Subject: [PATCH] Documentation: describe UPM for users and developers

Add the admin guide (how to use MADV_UPM_MERGEABLE, every counter and
errno), the design document pulled from the DOC comment of mm/upm.c,
the sysfs ABI description and a MAINTAINERS entry.

Signed-off-by: $from" $docs
fi
add_step selftests "From: $from
Subject: [PATCH] selftests/upm: test merging at madvise time

Two processes with identical content share frames after the second one's
madvise (proven by PFNs, KPF_KSM and exact counter moves); distinct
content is not merged; copy-on-write, zero pages, partial ranges, THP,
exit, MADV_UNMERGEABLE, ksmd running and ksm/run=2 all behave; bad input
gets a clear errno and changes nothing.

Signed-off-by: $from" $(overlay '^tools/testing/selftests/upm/')

total=${#steps[@]}
for f in "${steps[@]}"; do sed -i "1,/^Subject:/ s/\/NN\]/\/$total]/" "$f"; done
{
	echo "From: $from"
	echo "Subject: [PATCH 0/$total] mm: UPM, user-guided page merging"
	echo
	echo "Merge identical anonymous pages at madvise(MADV_UPM_MERGEABLE) time,"
	echo "on KSM's machinery, so short-lived serverless instances share memory"
	echo "at once instead of after minutes of ksmd scanning. Based on $src."
	echo
	for f in "${steps[@]}"; do sed -n 's/^Subject: //p' "$f" | head -n 1; done
	echo
	cat "${steps[@]}" | grep -E '^diff --git' | wc -l | sed 's/$/ files changed in all/'
} > "$out/0000-cover-letter.patch"

all=$("$TOP"/scripts/overlay-files.sh | grep -v '^Kconfig$'; echo mm/upm/Kconfig
      for p in "${series[@]}"; do hunk_files "$p"; done)
"$TOP"/scripts/gendiff.sh "$PRISTINE" "$TREE" $(printf '%s\n' $all | sort -u) > "$out/upm-combined.patch"

# Both forms must apply to the pristine tree.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for f in $(printf '%s\n' $all | sort -u); do
	[ -f "$PRISTINE/$f" ] || continue
	mkdir -p "$tmp/s/$(dirname "$f")" "$tmp/c/$(dirname "$f")"
	cp "$PRISTINE/$f" "$tmp/s/$f"; cp "$PRISTINE/$f" "$tmp/c/$f"
done
mkdir -p "$tmp/s" "$tmp/c"
(cd "$tmp/c" && git apply --check "$out/upm-combined.patch") ||
	die "upm-combined.patch does not apply to the pristine tree"
for f in "${steps[@]}"; do
	(cd "$tmp/s" && git apply --check "$f" && git apply "$f") ||
		die "$(basename "$f") does not apply to the pristine tree"
done
info "series: $out/0000-cover-letter.patch .. $(basename "${steps[-1]}")"
info "combined: $out/upm-combined.patch (both apply to $src)"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# gendiff.sh OLD_ROOT NEW_ROOT FILE...: git-style diff of FILEs between two
# trees; a file missing from OLD_ROOT is shown as new.
set -euo pipefail
old=$1 new=$2
shift 2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in "$@"; do
	mkdir -p "$tmp/a/$(dirname "$f")" "$tmp/b/$(dirname "$f")"
	[ -f "$old/$f" ] && cp "$old/$f" "$tmp/a/$f"
	cp "$new/$f" "$tmp/b/$f"
done
cd "$tmp"
git -c core.quotepath=off diff --no-index --no-prefix --no-color \
	--no-renames a b | sed -e 's|^diff --git b/|diff --git a/|' || true

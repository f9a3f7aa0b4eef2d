#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# patch-files.sh [PATCH]: the existing kernel files one patch touches, or
# (without an argument) all patches of patches/series, one per line.
cd "$(dirname "$0")/../patches"
if [ $# -gt 0 ]; then
	list=("$@")
else
	mapfile -t list < <(grep -v -e '^#' -e '^$' series | awk '{print $1}')
fi
for p in "${list[@]}"; do
	sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$p"
done | sort -u

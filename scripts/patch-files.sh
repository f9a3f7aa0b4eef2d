#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# List the existing kernel files our patches touch (one per line).
cd "$(dirname "$0")/../patches"
grep -v -e '^#' -e '^$' series | while read -r p; do
	sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$p"
done | sort -u

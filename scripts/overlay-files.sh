#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# List our new kernel files (repository paths = kernel paths).
cd "$(dirname "$0")/.."
git ls-files --cached --others --exclude-standard -- \
	mm include Documentation tools/testing/selftests/upm |
while read -r f; do
	[ -f "$f" ] && echo "$f"
done

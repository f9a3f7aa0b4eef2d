#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Install the patched UAPI headers under build/headers; print the
# include directory as the last line.
set -euo pipefail
. "$(dirname "$0")/common.sh"
hdr=$BUILD/headers
stamp=$hdr/.stamp
if [ ! -f "$stamp" ] || [ -n "$(find "$TREE/include/uapi" "$TREE/arch/x86/include/uapi" -newer "$stamp" -print -quit)" ]; then
	step "Installing UAPI headers into $hdr"
	make -s -C "$TREE" O="$BUILD/obj-headers" ARCH=x86_64 \
		INSTALL_HDR_PATH="$hdr" headers_install >/dev/null
	touch "$stamp"
fi
grep -q MADV_UPM_MERGEABLE "$hdr/include/asm-generic/mman-common.h" ||
	die "installed headers lack MADV_UPM_MERGEABLE; is patches/series applied?"
echo "$hdr/include"

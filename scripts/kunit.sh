#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# make kunit: run the upm_index KUnit suite the way a kernel developer
# does, with the kernel's own tool on the patched tree:
#   tools/testing/kunit/kunit.py run --kunitconfig=mm/tests --arch=x86_64
# It configures and builds its own small kernel (in build/kunit) and boots
# it in QEMU. make test runs the same suite in its debug guest instead.
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ -d "$TREE" ] || die "no work tree; run 'make tree' first"
step "kunit.py run --kunitconfig=mm/tests --arch=x86_64 (build/kunit)"
cd "$TREE"
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/upm-ccache}
export CCACHE_BASEDIR=$BUILD CCACHE_NOHASHDIR=1
python3 tools/testing/kunit/kunit.py run --kunitconfig=mm/tests \
	--arch=x86_64 --build_dir="$BUILD/kunit" --jobs="$(nproc_build)" \
	--make_options CC="ccache gcc" --timeout=600

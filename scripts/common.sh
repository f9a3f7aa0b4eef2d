# SPDX-License-Identifier: GPL-2.0
# Shared helpers for the UPM build scripts. Sourced, not executed.

TOP=${TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BUILD=${BUILD:-$TOP/build}
PRISTINE=$BUILD/pristine
TREE=$BUILD/linux

# Print a progress line so long steps never look silent.
step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
# One clear line saying what is wrong and what to do, then stop.
die() { printf 'upm: error: %s\n' "$*" >&2; exit 1; }

# The object directory for a kernel flavour (debug or release).
objdir() { echo "$BUILD/obj-${1:-debug}"; }

nproc_build() { nproc 2>/dev/null || echo 2; }

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Install the Debian packages the pipeline needs, only when missing.
set -euo pipefail
. "$(dirname "$0")/common.sh"

PKGS=(linux-source-6.12 qemu-system-x86 busybox-static build-essential
      gcc make flex bison bc libelf-dev libssl-dev cpio ccache xz-utils
      rsync kmod python3 python3-numpy gnuplot-nox sparse perl file
      stress-ng libnuma-dev liburing-dev linux-perf)

mkdir -p "$BUILD"
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
		grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

step "Installing missing packages: ${missing[*]}"
[ "$(id -u)" = 0 ] || SUDO=sudo
avail=$(df -Pk / | awk 'NR==2 {print $4}')
[ "$avail" -gt 4000000 ] ||
	die "less than 4 GiB free on /; free some disk space and retry"
export DEBIAN_FRONTEND=noninteractive
${SUDO:-} apt-get update -qq >/dev/null 2>&1 || true
if ! ${SUDO:-} apt-get install -y -qq --no-install-recommends \
	"${missing[@]}" >"$BUILD/apt.log" 2>&1; then
	tail -n 5 "$BUILD/apt.log" >&2
	die "apt-get could not install: ${missing[*]} (see $BUILD/apt.log; check the Debian mirror or install them by hand)"
fi

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

# Our Kconfig (the repository's top-level file, the UPM options) lives in
# mm/Kconfig right after KSM's entry, as kernel options do: splice it in
# before "config DEFAULT_MMAP_MIN_ADDR", and take it back out from there.
KCONFIG_ANCHOR='config DEFAULT_MMAP_MIN_ADDR'
splice_kconfig() {	# splice_kconfig OUR_KCONFIG MM_KCONFIG
	grep -qx "$KCONFIG_ANCHOR" "$2" ||
		die "$2 has no '$KCONFIG_ANCHOR' to put the UPM options before"
	awk -v src="$1" -v anchor="$KCONFIG_ANCHOR" '
		$0 == anchor && !done {
			while ((getline l < src) > 0)
				if (l !~ /^# SPDX-License-Identifier/) print l
			print ""
			done = 1
		}
		{ print }' "$2" > "$2.tmp" && mv "$2.tmp" "$2"
}
extract_kconfig() {	# extract_kconfig MM_KCONFIG: our options, as a file
	echo '# SPDX-License-Identifier: GPL-2.0-only'
	awk -v anchor="$KCONFIG_ANCHOR" '
		/^config UPM$/ { on = 1 }
		$0 == anchor { on = 0 }
		on' "$1" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'
}

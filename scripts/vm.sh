#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# vm.sh [--interactive] CMD: boot the built kernel in QEMU and run CMD in
# the caller's working directory, with the host root read-only over
# virtio-9p. Exits with CMD's status; fails if the kernel log has any
# BUG, WARNING, KASAN, lockdep, Oops, soft lockup or hung task report.
# Environment: FLAVOUR (debug), MEM (4G), CPUS (2), TIMEOUT (seconds,
# 1800), ACCEL (auto, kvm or tcg), NUMA (nodes, 1), APPEND (extra cmdline),
# KERNEL (a bzImage to boot instead of FLAVOUR's, e.g. to compare two),
# ICOUNT=1 (guest time counts instructions, 1 ns each: see below).
set -uo pipefail
. "$(dirname "$0")/common.sh"

interactive=0
if [ "${1:-}" = --interactive ]; then interactive=1; shift; fi
cmd=${1:-}
[ $interactive = 1 ] || [ -n "$cmd" ] || die "no command: use make vm CMD='...'"
FLAVOUR=${FLAVOUR:-debug}
MEM=${MEM:-4G}
CPUS=${CPUS:-2}
TIMEOUT=${TIMEOUT:-1800}
NUMA=${NUMA:-1}
kernel=${KERNEL:-$(objdir "$FLAVOUR")/arch/x86/boot/bzImage}
[ -f "$kernel" ] || die "no kernel at $kernel; run 'make kernel FLAVOUR=$FLAVOUR'"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing; run 'make deps'"

# The initramfs: static busybox and our init, rebuilt when they change.
initrd=$BUILD/initramfs.cpio
if [ ! -f "$initrd" ] || [ "$TOP/scripts/guest/init" -nt "$initrd" ]; then
	bb=$(command -v busybox) || die "busybox missing; run 'make deps'"
	file -L "$bb" | grep -q 'statically linked' || bb=/bin/busybox
	r=$BUILD/initramfs.d
	rm -rf "$r"; mkdir -p "$r/bin"
	cp "$bb" "$r/bin/busybox"
	cp "$TOP/scripts/guest/init" "$r/init"
	chmod +x "$r/init"
	(cd "$r" && find . | cpio -o -H newc --quiet) > "$initrd"
fi

accel() {
	case "${ACCEL:-auto}" in
	kvm|tcg) echo "$ACCEL"; return ;;
	esac
	local probe=$BUILD/accel
	if [ -f "$probe" ]; then cat "$probe"; return; fi
	local a=tcg
	# /dev/kvm may exist while a KVM guest hangs: prove it boots first.
	if [ -w /dev/kvm ]; then
		info "probing KVM (falls back to TCG if the guest does not boot)"
		if ACCEL=kvm TIMEOUT=60 QUIET=1 "$0" true >/dev/null 2>&1; then
			a=kvm
		fi
	fi
	echo "$a" > "$probe"
	echo "$a"
}
acc=$(accel)
if [ "$acc" = kvm ]; then cpu=(-accel kvm -cpu host); else cpu=(-accel tcg,thread=multi -cpu max); fi
# ICOUNT=1: the guest's clocks advance by 1 ns per instruction it runs, on
# all its CPUs together (one host thread runs them in turn), and jump over
# idle time: times are instruction counts, the same on a loaded host or an
# idle one, but CPUs working at once do not take less time than in turn.
if [ "${ICOUNT:-0}" = 1 ]; then
	[ "$acc" = tcg ] || die "ICOUNT=1 needs TCG (ACCEL=tcg)"
	cpu=(-accel tcg -icount shift=0,sleep=off -cpu max)
fi

job=$(mktemp -d "$BUILD/vm-job.XXXXXX")
log=$BUILD/vm-console.log
mkdir -p "$job/out"
{
	echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	echo "export HOME=/root TERM=${TERM:-dumb} UPM_OUT=/run/upm-job/out LANG=C.UTF-8"
	printf 'cd %q || exit 125\n' "$PWD"
	if [ $interactive = 1 ]; then
		echo 'echo "UPM guest shell (exit to power off)"; exec /bin/bash -i'
	else
		printf '%s\n' "$cmd"
	fi
} > "$job/job.sh"

numa=()
if [ "$NUMA" -gt 1 ]; then
	# Real NUMA nodes, described to the guest in ACPI's SRAT
	m=$(( ${MEM%G} * 1024 / NUMA ))
	for ((i = 0; i < NUMA; i++)); do
		# CPUs round-robin over the nodes, every one of them placed
		cpus=
		for ((c = i; c < CPUS; c += NUMA)); do cpus+=",cpus=$c"; done
		numa+=(-object "memory-backend-ram,id=m$i,size=${m}M"
		       -numa "node,nodeid=$i,memdev=m$i$cpus")
	done
fi
# The guest TSC ticks at the host's rate (TCG); tell the guest that rate,
# or its clocks advance in 4 ms jiffies steps. Measured once per build dir.
tsc=$BUILD/tsc-khz
if [ ! -s "$tsc" ]; then
	gcc -O2 -o "$BUILD/tsc-khz.bin" "$TOP/scripts/tsc-khz.c" &&
		"$BUILD/tsc-khz.bin" > "$tsc" || rm -f "$tsc"
fi
# With ICOUNT=1 the TSC counts instructions: the guest calibrates it.
case " ${APPEND:-} ${ICOUNT:-0}" in
*" tsc_early_khz="* | *" 1") ;;
*) [ -s "$tsc" ] && APPEND="${APPEND:-} tsc_early_khz=$(cat "$tsc")" ;;
esac
# Under TCG a loaded host can stall a vCPU thread for tens of seconds
# while guest time runs on: report a soft lockup only after 120 s (the
# hung task timeout), not the default 20 s, and an RCU stall after 60 s,
# not 21 s.
append="console=ttyS0 rdinit=/init panic=-1 loglevel=4 \
nokaslr tsc=reliable no_timer_check watchdog_thresh=60 \
rcupdate.rcu_cpu_stall_timeout=60 ${APPEND:-}"
[ $interactive = 1 ] && append="$append upm.interactive=1"

[ "${QUIET:-0}" = 1 ] || step "Booting the $FLAVOUR kernel (${acc^^}, $CPUS CPUs, $MEM): $cmd"
# One CPU per socket: a socket (its LLC) never spans two NUMA nodes
qemu=(qemu-system-x86_64 "${cpu[@]}" -m "$MEM"
	-smp "$CPUS,sockets=$CPUS,cores=1,threads=1" "${numa[@]}"
	-kernel "$kernel" -initrd "$initrd" -append "$append"
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
	-virtfs "local,path=$job,mount_tag=upmjob,security_model=none"
	-nodefaults -no-reboot -display none -device virtio-rng-pci)
if [ $interactive = 1 ]; then
	"${qemu[@]}" -serial mon:stdio
	rc=$?
else
	timeout --foreground -k 10 "$TIMEOUT" "${qemu[@]}" -serial stdio \
		</dev/null 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	if [ "$rc" = 124 ]; then
		echo "upm: error: the guest did not finish within ${TIMEOUT}s (console log: $log); raise TIMEOUT= or look for a hang" >&2
		rm -rf "$job"; exit 124
	fi
fi

status=0
if [ -f "$job/rc" ]; then
	status=$(cat "$job/rc")
else
	echo "upm: error: the guest did not boot or crashed before the command finished (console log: $log)" >&2
	status=1
fi
# Scan the kernel log for reports; any one fails the run.
pat='BUG:|WARNING:|KASAN|possible recursive locking|possible circular locking|inconsistent lock state|suspicious RCU usage|Oops|soft lockup|hung task|blocked for more than|general protection fault|Kernel panic|UBSAN|list_add corruption|list_del corruption'
report=$( { cat "$job/dmesg.txt" 2>/dev/null; cat "$log" 2>/dev/null; } | grep -E -A25 "$pat" | head -n 80)
if [ -n "$report" ]; then
	echo "upm: error: the guest kernel log has a report:" >&2
	printf '%s\n' "$report" >&2
	[ "$status" = 0 ] && status=1
fi
cp "$job/dmesg.txt" "$BUILD/vm-dmesg.txt" 2>/dev/null
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp -r "$job/out/." "$OUT/"; fi
rm -rf "$job"
exit "$status"

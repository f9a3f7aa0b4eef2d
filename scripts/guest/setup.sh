#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Sourced inside the test guest: what the UPM tests need besides the
# kernel. A zram swap device (swap tests, MADV_PAGEOUT in the stress) and
# the cgroup2 memory controller for child groups. Prints one line each.
guest_setup() {
	local z=/sys/block/zram0
	if ! grep -q '^/dev/zram0' /proc/swaps; then
		if [ -e $z/disksize ] && echo 1G > $z/disksize &&
		   mkswap /dev/zram0 >/dev/null && swapon /dev/zram0; then
			echo "==> guest setup: 1 GiB zram swap on /dev/zram0"
		else
			echo "==> guest setup: no zram swap (swap tests will skip)"
		fi
	fi
	if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null &&
	   echo +memory > /sys/fs/cgroup/cgroup.subtree_control; then
		echo "==> guest setup: cgroup2 memory controller enabled"
	else
		echo "==> guest setup: no cgroup2 memory controller (memcg tests will skip)"
	fi
	echo "==> guest setup: $(ls -d /sys/devices/system/node/node* | wc -l) NUMA node(s)"
}

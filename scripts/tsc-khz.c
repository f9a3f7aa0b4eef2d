// SPDX-License-Identifier: GPL-2.0
/*
 * Print this machine's TSC rate in kHz. Under QEMU TCG the guest's TSC
 * ticks at the host's rate, but the guest kernel finds no timer to
 * calibrate it against and keeps time in 4 ms jiffies steps; vm.sh passes
 * this rate as tsc_early_khz= so that guest clocks have TSC resolution.
 */
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

int main(void)
{
	struct timespec a, b, d = { 0, 300000000 };
	unsigned long long c0, c1;
	double us;

	clock_gettime(CLOCK_MONOTONIC_RAW, &a);
	c0 = __rdtsc();
	nanosleep(&d, NULL);
	c1 = __rdtsc();
	clock_gettime(CLOCK_MONOTONIC_RAW, &b);
	us = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
	printf("%.0f\n", (c1 - c0) / us * 1e3);
	return 0;
}

// SPDX-License-Identifier: GPL-2.0
/*
 * upm_demo: two processes each hold the same SIZE MiB of random data and
 * call madvise(MADV_UPM_MERGEABLE) once. Prints how many frames the
 * second call saved, read from the KSM and UPM counters the moment it
 * returns. Exit status 0 only if every page of the second copy merged.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "upm.h"

/* A counter's value, -1 if the kernel does not have it */
static long counter(const char *path)
{
	long v;

	return upm_read_value(path, &v) ? -1 : v;
}

static long meminfo_kb(const char *key)
{
	char line[256];
	long v = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)))
			v = atol(line + strlen(key));
	if (f)
		fclose(f);
	return v;
}

static char *make_copy(size_t size, uint64_t seed)
{
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	for (size_t i = 0; i < size / 8; i++) {	/* splitmix64 */
		uint64_t z = (seed += 0x9e3779b97f4a7c15ULL);

		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		((uint64_t *)p)[i] = z ^ (z >> 31);
	}
	return p;
}

static double advise(char *p, size_t size)
{
	struct timespec a, b;
	int err;

	clock_gettime(CLOCK_MONOTONIC, &a);
	err = upm_advise(p, size);
	if (err) {
		fprintf(stderr, "upm_demo: madvise(MADV_UPM_MERGEABLE): %s\n",
			upm_strerror(err));
		exit(1);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	return (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
}

/* Write one byte to every page; return the time it took. */
static double touch(char *p, size_t size)
{
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (size_t i = 0; i < size; i += getpagesize())
		p[i] ^= 1;
	clock_gettime(CLOCK_MONOTONIC, &b);
	return (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 64;
	size_t size = mib << 20, pages = size / getpagesize();
	long sharing0, sharing1, merged0, merged1, anon0, anon1;
	int go[2], done[2];
	double t1, t2;
	char c;

	if (pipe(go) || pipe(done))
		return 1;
	if (!fork()) {
		char *p = make_copy(size, 42);

		t1 = advise(p, size);
		if (write(done[1], &t1, sizeof(t1)) != sizeof(t1))
			_exit(1);
		if (read(go[0], &c, 1) != 1)	/* stay alive until told */
			_exit(1);
		_exit(0);
	}
	if (read(done[0], &t1, sizeof(t1)) != sizeof(t1))
		return 1;

	char *p = make_copy(size, 42);

	sharing0 = counter("/sys/kernel/mm/ksm/pages_sharing");
	merged0 = counter("/sys/kernel/mm/upm/pages_merged");
	anon0 = meminfo_kb("AnonPages:");
	t2 = advise(p, size);
	sharing1 = counter("/sys/kernel/mm/ksm/pages_sharing");
	merged1 = counter("/sys/kernel/mm/upm/pages_merged");
	anon1 = meminfo_kb("AnonPages:");

	printf("two processes x %zu MiB of the same random data ", mib);
	printf("(%zu pages each)\n", pages);
	printf("  first  madvise: %8.3f s (pages entered as candidates)\n", t1);
	printf("  second madvise: %8.3f s (both copies merged)\n", t2);
	printf("  pages_sharing up by %ld, upm pages_merged up by %ld",
	       sharing1 - sharing0, merged1 - merged0);
	printf(" (expected %zu)\n", pages);
	printf("  AnonPages down by %ld MiB when the second call returned\n",
	       (anon0 - anon1) / 1024);
	/*
	 * What the write protection costs the owner: the first write to
	 * each merged page takes a copy-on-write fault; compare with writing
	 * the same amount to pages of a third copy that was never advised.
	 */
	{
		char *plain = make_copy(size, 42);
		double tw, tp;

		tw = touch(p, size);
		tp = touch(plain, size);
		printf("  first write to every merged page: %8.3f s, ", tw);
		printf("to plain pages: %8.3f s (%.1fx)\n", tp, tw / tp);
		munmap(plain, size);
	}
	c = 'x';
	if (write(go[1], &c, 1) != 1)
		return 1;
	wait(NULL);
	return (size_t)(sharing1 - sharing0) == pages ? 0 : 1;
}

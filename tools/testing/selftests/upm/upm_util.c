// SPDX-License-Identifier: GPL-2.0
/* Helpers shared by the UPM selftests (see upm_util.h). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../kselftest.h"
#include "upm_util.h"


long read_ulong(const char *path)
{
	char buf[64] = "";
	long v = -1;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return -1;
	if (read(fd, buf, sizeof(buf) - 1) > 0)
		v = strtol(buf, NULL, 10);
	close(fd);
	return v;
}

int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	int ret;

	if (fd < 0)
		return -1;
	ret = write(fd, s, strlen(s)) == (ssize_t)strlen(s) ? 0 : -1;
	close(fd);
	return ret;
}

void read_str(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, len - 1);

	buf[n > 0 ? n : 0] = '\0';
	if (fd >= 0)
		close(fd);
}

/*
 * Without UPM in the kernel, end the whole program with the kselftest
 * skip code, before any case runs (as ksm_functional_tests does).
 */
void upm_require_kernel(void)
{
	if (!access("/sys/kernel/mm/upm/calls", R_OK))
		return;
	ksft_print_header();
	ksft_exit_skip("no /sys/kernel/mm/upm: kernel without CONFIG_UPM\n");
}

long upm_counter(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), "/sys/kernel/mm/upm/%s", name);
	return read_ulong(path);
}

long ksm_counter(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), "/sys/kernel/mm/ksm/%s", name);
	return read_ulong(path);
}

/* A field of /proc/PID/ksm_stat of process pid (0: this one), or -1. */
long read_ksm_stat_in(pid_t pid, const char *name)
{
	char path[64], key[64];
	long v, found = -1;
	FILE *f;

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/ksm_stat", pid);
	else
		snprintf(path, sizeof(path), "/proc/self/ksm_stat");
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fscanf(f, "%63s %ld", key, &v) == 2)
		if (!strcmp(key, name))
			found = v;
	fclose(f);
	return found;
}

/* A field of /proc/self/ksm_stat, or -1. */
long read_ksm_stat(const char *name)
{
	return read_ksm_stat_in(0, name);
}

static int open_pagemap(pid_t pid)
{
	char path[64];

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	else
		snprintf(path, sizeof(path), "/proc/self/pagemap");
	return open(path, O_RDONLY);
}

/* Raw pagemap entry of addr in process pid (0: this one), 0 if unreadable */
uint64_t pagemap_in(pid_t pid, const void *addr)
{
	int fd = open_pagemap(pid);
	uint64_t ent;

	if (fd < 0)
		return 0;
	ent = pagemap_get_entry(fd, (char *)addr);
	close(fd);
	return ent;
}

uint64_t pagemap_of(void *addr)
{
	return pagemap_in(0, addr);
}

/* PFN of the page at addr in process pid (0: this one), or 0. */
uint64_t pfn_in(pid_t pid, const void *addr)
{
	int fd = open_pagemap(pid);
	unsigned long pfn;

	if (fd < 0)
		return 0;
	pfn = pagemap_get_pfn(fd, (char *)addr);
	close(fd);
	return pfn == -1UL ? 0 : pfn;
}

/* PFN of the page at addr in this process, or 0 if not present. */
uint64_t pfn_of(void *addr)
{
	return pfn_in(0, addr);
}

uint64_t read_kpageflags(uint64_t pfn)
{
	uint64_t flags = 0;
	int fd = open("/proc/kpageflags", O_RDONLY);

	if (fd < 0)
		return 0;
	if (pread(fd, &flags, sizeof(flags), pfn * sizeof(flags)) !=
	    sizeof(flags))
		flags = 0;
	close(fd);
	return flags;
}

bool is_ksm(void *addr)
{
	uint64_t pfn = pfn_of(addr);

	return pfn && (read_kpageflags(pfn) & (1ULL << KPF_KSM));
}

/* Deterministic page content: every page of a seed differs from others. */
void fill(char *p, size_t npages, uint64_t seed)
{
	for (size_t i = 0; i < npages * psize() / 8; i++) {
		uint64_t x = seed * 0x9e3779b97f4a7c15ULL + i + 1;

		x ^= x >> 31;
		x *= 0xbf58476d1ce4e5b9ULL;
		x ^= x >> 29;
		((uint64_t *)p)[i] = x;
	}
}

bool same_as(const char *p, size_t npages, uint64_t seed)
{
	char *ref = malloc(npages * psize());
	bool same;

	fill(ref, npages, seed);
	same = !memcmp(p, ref, npages * psize());
	free(ref);
	return same;
}

bool is_zero_page_content(const char *p)
{
	for (size_t i = 0; i < psize(); i++)
		if (p[i])
			return false;
	return true;
}

char *map_anon(size_t npages)
{
	char *p = mmap(NULL, npages * psize(), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

void knobs_save(struct knobs *k)
{
	read_str("/sys/kernel/mm/ksm/run", k->run, sizeof(k->run));
	read_str("/sys/kernel/mm/ksm/sleep_millisecs", k->sleep,
		 sizeof(k->sleep));
	read_str("/sys/kernel/mm/ksm/pages_to_scan", k->scan, sizeof(k->scan));
}

void knobs_restore(struct knobs *k)
{
	write_str("/sys/kernel/mm/ksm/run", k->run);
	write_str("/sys/kernel/mm/ksm/sleep_millisecs", k->sleep);
	write_str("/sys/kernel/mm/ksm/pages_to_scan", k->scan);
}

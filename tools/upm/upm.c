// SPDX-License-Identifier: GPL-2.0
/*
 * libupm: user-space helpers for user-guided page merging (UPM).
 * The interface is described in upm.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "upm.h"

static void upm_path(char *buf, size_t size, const char *path)
{
	const char *root = getenv("UPM_ROOT");

	snprintf(buf, size, "%s%s", root ? root : "", path);
}

const char *upm_strerror(int err)
{
	if (err < 0)
		err = -err;
	if (err == ENOSYS)
		return "kernel has no UPM (no /sys/kernel/mm/upm, or madvise rejects MADV_UPM_MERGEABLE)";
	return strerror(err);
}

int upm_available(void)
{
	char path[4096];
	struct stat st;

	upm_path(path, sizeof(path), "/sys/kernel/mm/upm");
	if (stat(path, &st) || !S_ISDIR(st.st_mode))
		return -ENOSYS;
	return 0;
}

/*
 * EINVAL from madvise() means either a range UPM cannot take (shared,
 * hugetlb, VM_IO...) or a kernel that does not know the advice. Tell them
 * apart by advising one fresh private anonymous page.
 */
static int upm_probe_kernel(void)
{
	long psz = sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, psz, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int ret = 0;

	if (p == MAP_FAILED)
		return -errno;
	p[0] = 1;
	if (madvise(p, psz, MADV_UPM_MERGEABLE))
		ret = errno == EINVAL ? -ENOSYS : -errno;
	munmap(p, psz);
	return ret;
}

int upm_advise(void *addr, size_t len)
{
	int err;

	if (!madvise(addr, len, MADV_UPM_MERGEABLE))
		return 0;
	err = errno;
	if (err == EINVAL && (upm_available() || upm_probe_kernel()))
		return -ENOSYS;
	return -err;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Is this /proc/<pid>/maps line a private anonymous writable mapping? */
static int anon_writable(const char *line, unsigned long *start,
			 unsigned long *end)
{
	char perms[8], name[256] = "";
	unsigned long ino;
	int n;

	n = sscanf(line, "%lx-%lx %7s %*s %*s %lu %255s",
		   start, end, perms, &ino, name);
	if (n < 4 || perms[1] != 'w' || perms[3] != 'p' || ino)
		return 0;
	if (!name[0] || !strcmp(name, "[heap]") ||
	    !strncmp(name, "[anon:", 6))
		return 1;
	/* [stack], [vvar], [vdso], [vsyscall], files: never */
	return 0;
}

int upm_advise_self(struct upm_advise_result *res)
{
	struct upm_advise_result r = { 0 };
	unsigned long (*ranges)[2] = NULL, start, end;
	size_t n = 0, cap = 0, i;
	char line[512];
	FILE *f;
	int ret = upm_available();
	double t;

	if (ret)
		return ret;
	/* Read all ranges first: advising may not change the maps. */
	f = fopen("/proc/self/maps", "r");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (!anon_writable(line, &start, &end))
			continue;
		if (n == cap) {
			void *q;

			cap = cap ? 2 * cap : 64;
			q = realloc(ranges, cap * sizeof(*ranges));
			if (!q) {
				fclose(f);
				free(ranges);
				return -ENOMEM;
			}
			ranges = q;
		}
		ranges[n][0] = start;
		ranges[n][1] = end;
		n++;
	}
	fclose(f);
	for (i = 0; i < n; i++) {
		size_t len = ranges[i][1] - ranges[i][0];

		t = now();
		ret = upm_advise((void *)ranges[i][0], len);
		r.seconds += now() - t;
		if (ret == -ENOMEM) {	/* unmapped meanwhile */
			r.ranges_skipped++;
			continue;
		}
		if (ret)
			break;
		r.ranges++;
		r.bytes += len;
	}
	free(ranges);
	if (res)
		*res = r;
	return ret;
}

int upm_read_value(const char *path, long *val)
{
	char p[4096];
	FILE *f;
	int ret = 0;

	upm_path(p, sizeof(p), path);
	f = fopen(p, "r");
	if (!f)
		return -errno;
	if (fscanf(f, "%ld", val) != 1)
		ret = -EIO;
	fclose(f);
	return ret;
}

static long value_or(const char *dir, const char *name)
{
	char path[256];
	long v;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return upm_read_value(path, &v) ? -1 : v;
}

int upm_read_global(struct upm_global *g)
{
	const char *u = "/sys/kernel/mm/upm", *k = "/sys/kernel/mm/ksm";

	g->calls = value_or(u, "calls");
	g->pages_advised = value_or(u, "pages_advised");
	g->pages_merged = value_or(u, "pages_merged");
	g->pages_stable_new = value_or(u, "pages_stable_new");
	g->pages_zero = value_or(u, "pages_zero");
	g->skipped_absent = value_or(u, "skipped_absent");
	g->skipped_ksm = value_or(u, "skipped_ksm");
	g->skipped_pinned = value_or(u, "skipped_pinned");
	g->skipped_thp = value_or(u, "skipped_thp");
	g->skipped_busy = value_or(u, "skipped_busy");
	g->skipped_nomem = value_or(u, "skipped_nomem");
	g->skipped_disabled = value_or(u, "skipped_disabled");
	g->hash_collisions = value_or(u, "hash_collisions");
	g->time_ns = value_or(u, "time_ns");
	g->index_entries = value_or(u, "index_entries");
	g->index_buckets = value_or(u, "index_buckets");
	g->ksm_run = value_or(k, "run");
	g->ksm_pages_shared = value_or(k, "pages_shared");
	g->ksm_pages_sharing = value_or(k, "pages_sharing");
	g->ksm_pages_unshared = value_or(k, "pages_unshared");
	g->ksm_pages_volatile = value_or(k, "pages_volatile");
	g->ksm_full_scans = value_or(k, "full_scans");
	g->ksm_zero_pages = value_or(k, "ksm_zero_pages");
	g->ksm_general_profit = value_or(k, "general_profit");
	g->ksm_pages_to_scan = value_or(k, "pages_to_scan");
	g->ksm_sleep_millisecs = value_or(k, "sleep_millisecs");
	return upm_available();
}

int upm_read_process(pid_t pid, struct upm_process *p)
{
	static const struct {
		const char *key;
		size_t off;
	} keys[] = {
		{ "ksm_rmap_items", offsetof(struct upm_process, ksm_rmap_items) },
		{ "ksm_zero_pages", offsetof(struct upm_process, ksm_zero_pages) },
		{ "ksm_merging_pages", offsetof(struct upm_process, ksm_merging_pages) },
		{ "ksm_process_profit", offsetof(struct upm_process, ksm_process_profit) },
		{ "upm_merged_pages", offsetof(struct upm_process, upm_merged_pages) },
		{ "upm_stable_pages", offsetof(struct upm_process, upm_stable_pages) },
	};
	char path[4096], rel[64], key[64], line[256];
	struct stat st;
	long v;
	size_t i;
	FILE *f;

	p->pid = pid;
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		*(long *)((char *)p + keys[i].off) = -1;
	snprintf(rel, sizeof(rel), "/proc/%d/ksm_stat", (int)pid);
	upm_path(path, sizeof(path), rel);
	f = fopen(path, "r");
	if (!f) {
		int err = errno;

		/* The process is there but the kernel has no ksm_stat */
		snprintf(rel, sizeof(rel), "/proc/%d", (int)pid);
		upm_path(path, sizeof(path), rel);
		if (err == ENOENT && !stat(path, &st))
			return -ENOSYS;
		return err == ENOENT ? -ESRCH : -err;
	}
	/* "key value" lines; "ksm_mergeable: yes"-style lines are ignored */
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s %ld", key, &v) != 2)
			continue;
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (!strcmp(key, keys[i].key))
				*(long *)((char *)p + keys[i].off) = v;
	}
	fclose(f);
	return 0;
}

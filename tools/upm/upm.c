// SPDX-License-Identifier: GPL-2.0
/*
 * libupm: user-space helpers for user-guided page merging (UPM).
 * The interface is described in upm.h.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "upm.h"

#define UPM_IOV_MAX 1024
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

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
		return "kernel has no UPM";
	if (err == EOPNOTSUPP)
		return "this kernel does not support remote UPM advice";
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

static long upm_pidfd_open(pid_t pid)
{
	return syscall(SYS_pidfd_open, pid, 0);
}

static long upm_process_madvise(int pidfd, const struct iovec *iov,
				size_t n, int advice)
{
	return syscall(SYS_process_madvise, pidfd, iov, n, advice, 0);
}

/*
 * EINVAL from madvise() means either a range UPM cannot take (shared,
 * hugetlb, VM_IO...) or a kernel that does not know the advice. Tell them
 * apart by advising one fresh private anonymous page, with madvise() or,
 * if remote, with process_madvise() on a pidfd of this process.
 */
static int upm_probe_kernel(int remote)
{
	long psz = sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, psz, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct iovec iov = { p, psz };
	int ret = 0, fd = -1;

	if (p == MAP_FAILED)
		return -errno;
	p[0] = 1;
	if (remote) {
		fd = upm_pidfd_open(getpid());
		if (fd < 0 || upm_process_madvise(fd, &iov, 1,
						  MADV_UPM_MERGEABLE) < 0)
			ret = errno == EINVAL ? -ENOSYS : -errno;
		if (fd >= 0)
			close(fd);
	} else if (madvise(p, psz, MADV_UPM_MERGEABLE)) {
		ret = errno == EINVAL ? -ENOSYS : -errno;
	}
	munmap(p, psz);
	return ret;
}

int upm_advise(void *addr, size_t len)
{
	int err;

	if (!madvise(addr, len, MADV_UPM_MERGEABLE))
		return 0;
	err = errno;
	if (err == EINVAL && (upm_available() || upm_probe_kernel(0)))
		return -ENOSYS;
	return -err;
}

static int ksm_advise(void *addr, size_t len)
{
	return madvise(addr, len, MADV_MERGEABLE) ? -errno : 0;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Make room for one more element of size @size in the array *@arr that
 * holds @n of *@cap. Return 0 or -ENOMEM (*@arr is unchanged then).
 */
static int grow(void *arr, size_t n, size_t *cap, size_t size)
{
	void *q;

	if (n < *cap)
		return 0;
	q = realloc(*(void **)arr, (*cap ? 2 * *cap : 64) * size);
	if (!q)
		return -ENOMEM;
	*(void **)arr = q;
	*cap = *cap ? 2 * *cap : 64;
	return 0;
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

int upm_anon_ranges(pid_t pid, struct upm_range **ranges, size_t *nr)
{
	struct upm_range *r = NULL;
	unsigned long start, end;
	size_t n = 0, cap = 0, lsize = 0;
	char path[64], *line = NULL;
	int ret = 0;
	FILE *f;

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	else
		snprintf(path, sizeof(path), "/proc/self/maps");
	f = fopen(path, "r");
	if (!f)
		return errno == ENOENT ? -ESRCH : -errno;
	while (getline(&line, &lsize, f) > 0) {
		if (!anon_writable(line, &start, &end))
			continue;
		ret = grow(&r, n, &cap, sizeof(*r));
		if (ret)
			break;
		r[n].start = start;
		r[n].end = end;
		n++;
	}
	if (!ret && ferror(f))
		ret = -errno;
	fclose(f);
	free(line);
	if (ret) {
		free(r);
		return ret;
	}
	*ranges = r;
	*nr = n;
	return 0;
}

static int advise_self(int (*advise)(void *, size_t),
		       struct upm_advise_result *res)
{
	struct upm_advise_result r = { 0 };
	struct upm_range *ranges;
	size_t n, i;
	double t;
	int ret;

	/* Read all ranges first: advising may not change the maps. */
	ret = upm_anon_ranges(0, &ranges, &n);
	if (ret)
		return ret;
	for (i = 0; i < n; i++) {
		size_t len = ranges[i].end - ranges[i].start;

		t = now();
		ret = advise((void *)ranges[i].start, len);
		r.seconds += now() - t;
		if (ret == -ENOMEM) {	/* unmapped meanwhile */
			r.ranges_skipped++;
			ret = 0;
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

int upm_advise_self(struct upm_advise_result *res)
{
	int ret = upm_available();

	return ret ? ret : advise_self(upm_advise, res);
}

int upm_advise_self_ksm(struct upm_advise_result *res)
{
	return advise_self(ksm_advise, res);
}

/* Is the process of this pidfd still there (not yet reaped)? */
static int pidfd_alive(int pidfd)
{
	/* EPERM: there, only not ours to signal */
	return !syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) ||
	       errno != ESRCH;
}

int upm_advise_pid(pid_t pid, struct upm_advise_result *res)
{
	struct upm_advise_result r = { 0 };
	struct upm_range *ranges = NULL;
	struct iovec iov[UPM_IOV_MAX];
	size_t n = 0, i, j, k;
	int fd, ret;
	double t;
	long done;

	ret = upm_available();
	if (ret)
		return ret;
	if (pid <= 0)
		return -EINVAL;
	/*
	 * The pidfd first, then the maps, then a check that the pidfd's
	 * process still lives: the maps read are then that process's, not
	 * those of another one that was given the same pid meanwhile.
	 */
	fd = upm_pidfd_open(pid);
	if (fd < 0)
		return -errno;
	ret = upm_anon_ranges(pid, &ranges, &n);
	if (!ret && !pidfd_alive(fd))
		ret = -ESRCH;
	for (i = 0; !ret && i < n; i += k) {
		k = n - i < UPM_IOV_MAX ? n - i : UPM_IOV_MAX;
		for (j = 0; j < k; j++) {
			struct upm_range *x = &ranges[i + j];

			iov[j].iov_base = (void *)x->start;
			iov[j].iov_len = x->end - x->start;
		}
		t = now();
		done = upm_process_madvise(fd, iov, k, MADV_UPM_MERGEABLE);
		r.seconds += now() - t;
		if (done < 0) {
			ret = -errno;
			if (ret == -EINVAL && upm_probe_kernel(1))
				ret = -EOPNOTSUPP;
			break;
		}
		r.ranges += k;
		r.bytes += done;
	}
	close(fd);
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

/* The file's first word as a decimal integer, as Python's int() reads it */
static int read_integer(int dirfd, const char *name, long *val)
{
	char buf[64], *s, *e;
	ssize_t len;
	int fd;

	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0)
		return -EIO;
	buf[len] = 0;
	for (s = buf; *s == ' ' || *s == '\t' || *s == '\n'; s++)
		;
	errno = 0;
	*val = strtol(s, &e, 10);
	if (e == s || errno || (*e && *e != ' ' && *e != '\t' && *e != '\n'))
		return -EINVAL;
	return 0;
}

static int counter_cmp(const void *a, const void *b)
{
	return strcmp(((const struct upm_counter *)a)->name,
		      ((const struct upm_counter *)b)->name);
}

void upm_counters_free(struct upm_counters *c)
{
	size_t i;

	for (i = 0; i < c->nr; i++)
		free(c->c[i].name);
	free(c->c);
	c->c = NULL;
	c->nr = 0;
}

int upm_read_counters(const char *dir, struct upm_counters *c)
{
	struct upm_counter x;
	size_t cap = 0;
	char path[4096];
	struct dirent *d;
	int ret = 0;
	DIR *dp;

	c->nr = 0;
	c->c = NULL;
	upm_path(path, sizeof(path), dir);
	dp = opendir(path);
	if (!dp)
		return -errno;
	while ((d = readdir(dp))) {
		if (d->d_name[0] == '.')
			continue;
		/* write-only, non-numeric files and directories are left out */
		if (read_integer(dirfd(dp), d->d_name, &x.value))
			continue;
		x.name = strdup(d->d_name);
		if (!x.name || grow(&c->c, c->nr, &cap, sizeof(x))) {
			free(x.name);
			ret = -ENOMEM;
			break;
		}
		c->c[c->nr++] = x;
	}
	closedir(dp);
	if (ret) {
		upm_counters_free(c);
		return ret;
	}
	if (c->nr)
		qsort(c->c, c->nr, sizeof(c->c[0]), counter_cmp);
	return 0;
}

long upm_counter(const struct upm_counters *c, const char *name)
{
	size_t i;

	for (i = 0; i < c->nr; i++)
		if (!strcmp(c->c[i].name, name))
			return c->c[i].value;
	return -1;
}

void upm_global_free(struct upm_global *g)
{
	upm_counters_free(&g->upm);
	upm_counters_free(&g->ksm);
}

int upm_read_global(struct upm_global *g)
{
	int ret;

	g->ksm.nr = 0;
	g->ksm.c = NULL;
	ret = upm_read_counters("/sys/kernel/mm/upm", &g->upm);
	if (ret && ret != -ENOENT)
		return ret;
	/* A kernel without KSM has no ksm directory: no KSM counters */
	if (upm_read_counters("/sys/kernel/mm/ksm", &g->ksm) == -ENOMEM) {
		upm_counters_free(&g->upm);
		return -ENOMEM;
	}
	return ret ? -ENOSYS : upm_available();
}

static void read_comm(pid_t pid, char *comm, size_t size)
{
	char path[4096], rel[64];
	FILE *f;

	comm[0] = 0;
	snprintf(rel, sizeof(rel), "/proc/%d/comm", (int)pid);
	upm_path(path, sizeof(path), rel);
	f = fopen(path, "r");
	if (!f)
		return;
	if (!fgets(comm, size, f))
		comm[0] = 0;
	comm[strcspn(comm, "\n")] = 0;
	fclose(f);
}

int upm_read_process(pid_t pid, struct upm_process *p)
{
	static const struct {
		const char *key;
		size_t off;
	} keys[] = {
#define P(f) { #f, offsetof(struct upm_process, f) }
		P(ksm_rmap_items), P(ksm_zero_pages), P(ksm_merging_pages),
		P(ksm_process_profit), P(upm_merged_pages),
		P(upm_stable_pages), P(upm_domain),
#undef P
	};
	char path[4096], rel[64], key[64], line[256];
	struct stat st;
	long v;
	size_t i;
	FILE *f;

	p->pid = pid;
	p->comm[0] = 0;
	for (i = 0; i < ARRAY_SIZE(keys); i++)
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
		for (i = 0; i < ARRAY_SIZE(keys); i++)
			if (!strcmp(key, keys[i].key))
				*(long *)((char *)p + keys[i].off) = v;
	}
	fclose(f);
	read_comm(pid, p->comm, sizeof(p->comm));
	return 0;
}

static int process_cmp(const void *a, const void *b)
{
	pid_t x = ((const struct upm_process *)a)->pid;
	pid_t y = ((const struct upm_process *)b)->pid;

	return (x > y) - (x < y);
}

/* Any count but the profit nonzero (absent lines read as -1) */
static int process_counts(const struct upm_process *p)
{
	return p->ksm_rmap_items > 0 || p->ksm_zero_pages > 0 ||
	       p->ksm_merging_pages > 0 || p->upm_merged_pages > 0 ||
	       p->upm_stable_pages > 0 || p->upm_domain > 0;
}

int upm_processes(struct upm_process **procs, size_t *nr)
{
	struct upm_process *p = NULL, cur;
	size_t n = 0, cap = 0;
	char path[4096];
	struct dirent *d;
	DIR *dp;
	char *e;
	long pid;

	upm_path(path, sizeof(path), "/proc");
	dp = opendir(path);
	if (!dp)
		return -errno;
	while ((d = readdir(dp))) {
		pid = strtol(d->d_name, &e, 10);
		if (*e || e == d->d_name || pid <= 0 || pid > INT_MAX)
			continue;
		/* gone, or not ours to read */
		if (upm_read_process(pid, &cur) || !process_counts(&cur))
			continue;
		if (grow(&p, n, &cap, sizeof(*p))) {
			closedir(dp);
			free(p);
			return -ENOMEM;
		}
		p[n++] = cur;
	}
	closedir(dp);
	qsort(p, n, sizeof(*p), process_cmp);
	*procs = p;
	*nr = n;
	return 0;
}

static int upm_prctl(int option, unsigned long arg2)
{
	int ret = prctl(option, arg2, 0UL, 0UL, 0UL), err = errno;

	if (ret >= 0)
		return ret;
	if (err == EINVAL && upm_available())
		return -ENOSYS;
	return -err;
}

int upm_get_domain(void)
{
	return upm_prctl(PR_GET_UPM_DOMAIN, 0);
}

int upm_set_domain(unsigned long domain)
{
	return upm_prctl(PR_SET_UPM_DOMAIN, domain);
}

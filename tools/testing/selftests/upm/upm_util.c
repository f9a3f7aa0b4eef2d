// SPDX-License-Identifier: GPL-2.0
/* Helpers shared by the UPM selftests (see upm_util.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
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

/*
 * The value of @key in a file of "key value" lines (ksm_stat, memory.stat,
 * memory.events), or -1 if the file or the key is missing.
 */
long read_key(const char *path, const char *key)
{
	char k[64];
	long v, found = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fscanf(f, "%63s %ld", k, &v) == 2)
		if (!strcmp(k, key))
			found = v;
	fclose(f);
	return found;
}

/* /proc/<pid>/@file of process pid, /proc/self/@file for pid 0 */
static void proc_path(char *path, size_t len, pid_t pid, const char *file)
{
	if (pid)
		snprintf(path, len, "/proc/%d/%s", pid, file);
	else
		snprintf(path, len, "/proc/self/%s", file);
}

/* A field of /proc/PID/ksm_stat of process pid (0: this one), or -1. */
long read_ksm_stat_in(pid_t pid, const char *name)
{
	char path[64];

	proc_path(path, sizeof(path), pid, "ksm_stat");
	return read_key(path, name);
}

/* A field of /proc/self/ksm_stat, or -1. */
long read_ksm_stat(const char *name)
{
	return read_ksm_stat_in(0, name);
}

static int open_pagemap(pid_t pid)
{
	char path[64];

	proc_path(path, sizeof(path), pid, "pagemap");
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

/* Become an unprivileged user whose own processes may still ptrace it. */
int drop_to(uid_t uid)
{
	if (setgroups(0, NULL) || setresgid(uid, uid, uid) ||
	    setresuid(uid, uid, uid))
		return -1;
	return prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

/* Does page i of p hold the seed's bytes (byte 0) or all @byte? */
bool page_is(const char *p, int i, uint64_t seed, int byte)
{
	static char *ref;
	static uint64_t ref_seed;

	if (byte) {
		for (size_t k = 0; k < psize(); k++)
			if (p[k] != (char)byte)
				return false;
		return true;
	}
	if (!ref)
		ref = malloc(PEER_PAGES * psize());
	if (!ref)
		return false;
	if (ref_seed != seed || !ref_seed) {
		fill(ref, PEER_PAGES, seed);
		ref_seed = seed;
	}
	return i < PEER_PAGES && !memcmp(p, ref + i * psize(), psize());
}

/* Pages [a, b) of p that hold the seed's content. */
int good_range(const char *p, uint64_t seed, int a, int b)
{
	int n = 0;

	for (int i = a; i < b; i++)
		n += page_is(p + i * psize(), i, seed, 0);
	return n;
}

struct peer_cmd {
	int op, a, b, v;
};

/* What the peer reports once set up. */
struct peer_report {
	int err;
	uintptr_t addr;
	uint64_t pfn[PEER_PAGES];
};

static void peer_ksm_pfns(char *p, uint64_t *pfn)
{
	for (int i = 0; i < PEER_PAGES; i++)
		pfn[i] = p && is_ksm(p + i * psize()) ?
			 pfn_of(p + i * psize()) : 0;
}

/* Touch @mib MiB of fresh memory: in a small cgroup, the OOM killer ends */
static long peer_hog(size_t mib)
{
	char *hog = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (hog == MAP_FAILED)
		return -errno;
	for (size_t off = 0; off < (mib << 20); off += psize())
		hog[off] = 1;
	munmap(hog, mib << 20);
	return 0;
}

static long peer_do(char *p, const struct peer_cmd *c, uint64_t seed,
		    char *model, int out)
{
	size_t len = PEER_PAGES * psize();
	long n = 0;

	/* Without its pages (a failed setup) it still answers every op */
	if (!p && c->op != PEER_HOG && c->op != PEER_PFNS)
		return -ENXIO;
	switch (c->op) {
	case PEER_CHECK:
		for (int i = 0; i < PEER_PAGES; i++)
			n += !page_is(p + i * psize(), i, seed, model[i]);
		return n;
	case PEER_WRITE:
		for (int i = c->a; i < c->b && i < PEER_PAGES; i++) {
			memset(p + i * psize(), c->v, psize());
			model[i] = c->v;
		}
		return 0;
	case PEER_ADVISE:
		return madvise(p, len, MADV_UPM_MERGEABLE) ? -errno : 0;
	case PEER_UNMERGE:
		return madvise(p, len, MADV_UNMERGEABLE) ? -errno : 0;
	case PEER_PAGEOUT:
		return madvise(p, len, MADV_PAGEOUT) ? -errno : 0;
	case PEER_SWAPPED:
		for (int i = 0; i < PEER_PAGES; i++)
			n += !!(pagemap_of(p + i * psize()) & PM_SWAP);
		return n;
	case PEER_HOG:
		return peer_hog(c->v);
	case PEER_PFNS: {
		uint64_t pfn[PEER_PAGES];

		peer_ksm_pfns(p, pfn);
		if (write(out, pfn, sizeof(pfn)) != sizeof(pfn))
			_exit(3);
		return 0;
	}
	}
	return -EINVAL;
}

/*
 * npages with an unmapped page on either side, so that a range one page
 * past either end has a hole. The page below the lower hole stays mapped
 * (PROT_NONE) as a fence: no later mapping fits into a one-page hole.
 */
static char *map_between_holes(size_t npages)
{
	char *p = map_anon(npages + 3);

	if (!p)
		return NULL;
	mprotect(p, psize(), PROT_NONE);
	munmap(p + psize(), psize());
	munmap(p + (npages + 2) * psize(), psize());
	return p + 2 * psize();
}

/* The peer's side: set up as @o says, report, then serve commands. */
static void peer_main(const struct peer_opts *o, int in, int out)
{
	struct peer_report r = { 0 };
	char model[PEER_PAGES] = { 0 };
	size_t len = PEER_PAGES * psize();
	struct peer_cmd c;
	char *p = NULL;
	long ret;

	if (o->cgroup_procs && write_str(o->cgroup_procs, "0"))
		r.err = errno ? errno : EIO;
	if (!r.err && o->domain &&
	    prctl(PR_SET_UPM_DOMAIN, o->domain, 0, 0, 0))
		r.err = errno;
	if (!r.err && o->uid && drop_to(o->uid))
		r.err = errno;
	if (!r.err) {
		p = map_between_holes(PEER_PAGES);
		if (!p)
			r.err = errno;
	}
	if (p) {
		fill(p, PEER_PAGES, o->seed);
		if (o->advice == PEER_ADVISE_UPM &&
		    madvise(p, len, MADV_UPM_MERGEABLE))
			r.err = errno;
		if (o->advice == PEER_ADVISE_KSM &&
		    madvise(p, len, MADV_MERGEABLE))
			r.err = errno;
	}
	r.addr = (uintptr_t)p;
	peer_ksm_pfns(p, r.pfn);
	if (write(out, &r, sizeof(r)) != sizeof(r))
		_exit(3);
	while (read(in, &c, sizeof(c)) == sizeof(c) && c.op != PEER_EXIT) {
		ret = peer_do(p, &c, o->seed, model, out);
		if (write(out, &ret, sizeof(ret)) != sizeof(ret))
			_exit(4);
	}
	_exit(0);
}

/*
 * Start a peer as @o says and wait for its report: its address, its KSM
 * PFNs and t->err, the errno of the first setup step that failed (the
 * peer then answers every command but PEER_EXIT with -ENXIO). Return: 0
 * once the peer reported, -1 (nothing left behind) otherwise.
 */
int peer_start(struct peer *t, const struct peer_opts *o)
{
	struct peer_report r;
	int to[2], from[2];

	memset(t, 0, sizeof(*t));
	if (pipe(to))
		return -1;
	if (pipe(from)) {
		close(to[0]);
		close(to[1]);
		return -1;
	}
	t->pid = fork();
	if (t->pid < 0) {
		t->pid = 0;
		close(to[0]);
		close(to[1]);
		close(from[0]);
		close(from[1]);
		return -1;
	}
	if (!t->pid) {
		close(to[1]);
		close(from[0]);
		peer_main(o, to[0], from[1]);
	}
	close(to[0]);
	close(from[1]);
	t->cmd = to[1];
	t->reply = from[0];
	if (read(t->reply, &r, sizeof(r)) != sizeof(r)) {
		kill(t->pid, SIGKILL);
		peer_stop(t);
		return -1;
	}
	t->err = r.err;
	t->addr = (char *)r.addr;
	memcpy(t->pfn, r.pfn, sizeof(t->pfn));
	return 0;
}

/*
 * Start a peer holding the seed's content, advised with MADV_UPM_MERGEABLE
 * if @advise, in the cgroup of @cgroup_procs if set. Return: 0 if it set
 * up without an error, -1 otherwise.
 */
int peer_spawn(struct peer *t, uint64_t seed, bool advise,
	       const char *cgroup_procs)
{
	struct peer_opts o = {
		.seed = seed, .cgroup_procs = cgroup_procs,
		.advice = advise ? PEER_ADVISE_UPM : PEER_ADVISE_NONE,
	};

	if (peer_start(t, &o))
		return -1;
	return t->err ? -1 : 0;
}

/* Send a command without waiting for its answer (see peer_wait()). */
int peer_send(struct peer *t, enum peer_op op, int a, int b, int v)
{
	struct peer_cmd c = { .op = op, .a = a, .b = b, .v = v };

	if (!t->pid)
		return -1;
	return write(t->cmd, &c, sizeof(c)) == sizeof(c) ? 0 : -1;
}

/* The answer to the last command sent: >= 0 or -errno; -1000: no answer */
long peer_wait(struct peer *t)
{
	long r;

	if (!t->pid || read(t->reply, &r, sizeof(r)) != sizeof(r))
		return -1000;
	return r;
}

long peer_call(struct peer *t, enum peer_op op, int a, int b, int v)
{
	if (peer_send(t, op, a, b, v))
		return -1000;
	return peer_wait(t);
}

/* Pages of the peer whose content differs from its model (<0: error). */
long peer_mismatches(struct peer *t)
{
	return peer_call(t, PEER_CHECK, 0, 0, 0);
}

/* Refresh t->pfn from the peer. Return: 0 on success, -1 otherwise. */
int peer_pfns(struct peer *t)
{
	if (peer_send(t, PEER_PFNS, 0, 0, 0))
		return -1;
	if (read(t->reply, t->pfn, sizeof(t->pfn)) != sizeof(t->pfn))
		return -1;
	return peer_wait(t) ? -1 : 0;
}

/*
 * Ask the peer to exit (kill it if it cannot be asked), reap it and close
 * the pipes; nothing to do for a peer not running. Return: its exit
 * status, -1 if it was killed by a signal (see t->status) or not running.
 */
int peer_stop(struct peer *t)
{
	struct sigaction ign = { .sa_handler = SIG_IGN }, old;

	t->status = -1;
	if (!t->pid)
		return -1;
	/* A peer gone already must not take this process with SIGPIPE */
	sigaction(SIGPIPE, &ign, &old);
	if (peer_send(t, PEER_EXIT, 0, 0, 0))
		kill(t->pid, SIGKILL);
	sigaction(SIGPIPE, &old, NULL);
	waitpid(t->pid, &t->status, 0);
	close(t->cmd);
	close(t->reply);
	t->pid = 0;
	return WIFEXITED(t->status) ? WEXITSTATUS(t->status) : -1;
}

/* Pages [a, b) of mem that map the peer's KSM frame of the same index. */
int shared_range(char *mem, struct peer *t, int a, int b)
{
	int n = 0;

	if (peer_pfns(t))
		return -1;
	for (int i = a; i < b; i++) {
		uint64_t pfn = pfn_of(mem + i * psize());

		if (pfn && pfn == t->pfn[i] && is_ksm(mem + i * psize()))
			n++;
	}
	return n;
}

/* Pages of mem that map the peer's KSM frame of the same index. */
int shared_with(char *mem, struct peer *t)
{
	return shared_range(mem, t, 0, PEER_PAGES);
}

// SPDX-License-Identifier: GPL-2.0
/*
 * Tests of libupm (tools/upm/upm.c) in a UPM kernel: advising a process's
 * own heap, or another process's memory through a pidfd, merges it with a
 * twin process (same PFN, KPF_KSM), merge domains can be set and read, the
 * counters it reads match sysfs and ksm_stat, and a kernel without UPM is
 * reported as -ENOSYS, never as success.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "upm.h"

#define NPAGES		256
#define KPF_KSM		21
#define PM_PRESENT	(1ULL << 63)
#define PM_PFN_MASK	((1ULL << 55) - 1)

static size_t psize;

static uint64_t pfn_in(pid_t pid, uintptr_t addr)
{
	char path[64];
	uint64_t ent = 0;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	if (pread(fd, &ent, sizeof(ent), addr / psize * sizeof(ent)) !=
	    sizeof(ent))
		ent = 0;
	close(fd);
	return (ent & PM_PRESENT) ? (ent & PM_PFN_MASK) : 0;
}

static int page_is_ksm(uint64_t pfn)
{
	uint64_t flags = 0;
	int fd = open("/proc/kpageflags", O_RDONLY);

	if (fd < 0)
		return 0;
	if (pread(fd, &flags, sizeof(flags), pfn * sizeof(flags)) !=
	    sizeof(flags))
		flags = 0;
	close(fd);
	return !!(flags & (1ULL << KPF_KSM));
}

/* A heap buffer (malloc) of NPAGES pages of content given by seed */
static char *heap_copy(uint64_t seed)
{
	char *p;
	size_t i;

	if (posix_memalign((void **)&p, psize, NPAGES * psize))
		return NULL;
	for (i = 0; i < NPAGES * psize / 8; i++) {
		uint64_t z = (seed += 0x9e3779b97f4a7c15ULL);

		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		((uint64_t *)p)[i] = z ^ (z >> 31);
	}
	return p;
}

/*
 * The twin: a child that fills its own heap copy, advises its whole
 * process with upm_advise_self() (unless told not to: a victim for remote
 * advice), sends the buffer address, then waits.
 */
struct twin {
	pid_t pid;
	uintptr_t addr;
};

static int child_start(struct twin *t, uint64_t seed, int advise)
{
	int fds[2];

	if (pipe(fds))
		return -1;
	t->pid = fork();
	if (t->pid < 0)
		return -1;
	if (!t->pid) {
		char *p = heap_copy(seed);
		uintptr_t a = p ? (uintptr_t)p : 0;

		if (p && advise && upm_advise_self(NULL))
			a = 0;
		if (write(fds[1], &a, sizeof(a)) != sizeof(a))
			_exit(1);
		pause();
		_exit(0);
	}
	close(fds[1]);
	if (read(fds[0], &t->addr, sizeof(t->addr)) != sizeof(t->addr))
		t->addr = 0;
	close(fds[0]);
	if (t->addr)
		return 0;
	/* A failed child must not outlive the test (it holds its stdout) */
	kill(t->pid, SIGKILL);
	waitpid(t->pid, NULL, 0);
	return -1;
}

static int twin_start(struct twin *t, uint64_t seed)
{
	return child_start(t, seed, 1);
}

static void twin_stop(struct twin *t)
{
	kill(t->pid, SIGKILL);
	waitpid(t->pid, NULL, 0);
}

/* How much UPM counter @name rose from @g0 to @g1 */
static long delta(const struct upm_global *g0, const struct upm_global *g1,
		  const char *name)
{
	return upm_counter(&g1->upm, name) - upm_counter(&g0->upm, name);
}

/* Write text to root/rel */
static int write_file(const char *root, const char *rel, const char *text)
{
	char path[256];
	FILE *f;
	int ret;

	snprintf(path, sizeof(path), "%s%s", root, rel);
	f = fopen(path, "w");
	if (!f)
		return -1;
	ret = fputs(text, f) < 0;
	return fclose(f) || ret ? -1 : 0;
}

FIXTURE(lib) {
	char fake[64];
};

FIXTURE_SETUP(lib)
{
	psize = sysconf(_SC_PAGESIZE);
	unsetenv("UPM_ROOT");
	if (upm_available())
		SKIP(return, "kernel has no UPM");
	snprintf(self->fake, sizeof(self->fake), "/tmp/upm-fake-root.XXXXXX");
	ASSERT_NE(NULL, mkdtemp(self->fake));
}

FIXTURE_TEARDOWN(lib)
{
	unsetenv("UPM_ROOT");
	if (self->fake[0]) {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", self->fake);
		if (system(cmd))
			TH_LOG("could not remove %s", self->fake);
	}
}

/* upm_advise_self() merges this process's heap with a twin's */
TEST_F(lib, advise_self_merges_with_twin)
{
	struct upm_advise_result r;
	struct upm_process before, after;
	struct upm_global g0, g1;
	struct twin t;
	int shared = 0, ksm = 0, i;
	char *p;

	ASSERT_EQ(0, twin_start(&t, 42));
	ASSERT_EQ(0, upm_read_process(getpid(), &before));
	ASSERT_EQ(0, upm_read_global(&g0));
	p = heap_copy(42);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, upm_advise_self(&r));
	ASSERT_EQ(0, upm_read_global(&g1));
	ASSERT_EQ(0, upm_read_process(getpid(), &after));
	for (i = 0; i < NPAGES; i++) {
		uint64_t mine = pfn_in(getpid(), (uintptr_t)(p + i * psize));

		shared += mine && mine == pfn_in(t.pid, t.addr + i * psize);
		ksm += mine && page_is_ksm(mine);
	}
	twin_stop(&t);
	TH_LOG("%lu ranges, %lu KiB advised in %.3f s; %d/%d pages shared",
	       r.ranges, r.bytes >> 10, r.seconds, shared, NPAGES);
	EXPECT_LE(1UL, r.ranges);
	EXPECT_LE((unsigned long)NPAGES * psize, r.bytes);
	EXPECT_EQ(NPAGES, shared);
	EXPECT_EQ(NPAGES, ksm);
	EXPECT_LE(NPAGES, after.upm_merged_pages - before.upm_merged_pages);
	EXPECT_LE(NPAGES, delta(&g0, &g1, "pages_merged"));
	EXPECT_LE(1, delta(&g0, &g1, "calls"));
	upm_global_free(&g0);
	upm_global_free(&g1);
	free(p);
}

/* upm_advise() on one range alone: its pages become candidates, unmerged */
TEST_F(lib, advise_range_counts)
{
	struct upm_process before, after;
	struct upm_global g0, g1;
	int ksm = 0, i;
	char *p = heap_copy(getpid() * 7919ULL);

	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, upm_read_process(getpid(), &before));
	ASSERT_EQ(0, upm_read_global(&g0));
	ASSERT_EQ(0, upm_advise(p, NPAGES * psize));
	ASSERT_EQ(0, upm_read_global(&g1));
	ASSERT_EQ(0, upm_read_process(getpid(), &after));
	for (i = 0; i < NPAGES; i++) {
		uintptr_t a = (uintptr_t)(p + i * psize);

		ksm += page_is_ksm(pfn_in(getpid(), a));
	}
	EXPECT_EQ(0, ksm);
	EXPECT_EQ(1, delta(&g0, &g1, "calls"));
	EXPECT_EQ(NPAGES, delta(&g0, &g1, "pages_advised"));
	EXPECT_EQ(NPAGES, delta(&g0, &g1, "pages_candidate"));
	EXPECT_EQ(0, delta(&g0, &g1, "pages_stable_new"));
	EXPECT_EQ(0, after.upm_stable_pages - before.upm_stable_pages);
	EXPECT_EQ(0, after.upm_merged_pages - before.upm_merged_pages);
	upm_global_free(&g0);
	upm_global_free(&g1);
	free(p);
}

/* The struct holds what sysfs says (counters that no one else moves) */
TEST_F(lib, global_matches_sysfs)
{
	struct upm_global g;
	long v;

	ASSERT_EQ(0, upm_read_global(&g));
	ASSERT_EQ(0, upm_read_value("/sys/kernel/mm/upm/index_buckets", &v));
	EXPECT_EQ(v, upm_counter(&g.upm, "index_buckets"));
	EXPECT_LT(0, upm_counter(&g.upm, "index_buckets"));
	ASSERT_EQ(0, upm_read_value("/sys/kernel/mm/upm/calls", &v));
	EXPECT_EQ(v, upm_counter(&g.upm, "calls"));
	ASSERT_EQ(0, upm_read_value("/sys/kernel/mm/ksm/run", &v));
	EXPECT_EQ(v, upm_counter(&g.ksm, "run"));
	ASSERT_EQ(0, upm_read_value("/sys/kernel/mm/ksm/pages_to_scan", &v));
	EXPECT_EQ(v, upm_counter(&g.ksm, "pages_to_scan"));
	EXPECT_EQ(-ENOENT, upm_read_value("/sys/kernel/mm/upm/nonexistent",
					  &v));
}

/* This patch's kernel (merge_policy exists) has remote advice, domains */
static int kernel_has_domains(void)
{
	return !access("/sys/kernel/mm/upm/merge_policy", F_OK);
}

/* upm_advise_pid() merges another process's heap with a twin's */
TEST_F(lib, advise_pid_merges_with_twin)
{
	struct upm_advise_result r;
	struct upm_process pr;
	struct twin t, v;
	int shared = 0, ret, i;

	ASSERT_EQ(0, twin_start(&t, 4242));
	if (child_start(&v, 4242, 0)) {
		twin_stop(&t);
		ASSERT_TRUE(0) TH_LOG("the victim did not start");
	}
	ret = upm_advise_pid(v.pid, &r);
	for (i = 0; i < NPAGES; i++) {
		uint64_t mine = pfn_in(v.pid, v.addr + i * psize);

		shared += mine && mine == pfn_in(t.pid, t.addr + i * psize);
	}
	if (!ret)
		ASSERT_EQ(0, upm_read_process(v.pid, &pr));
	twin_stop(&v);
	twin_stop(&t);
	if (ret == -EOPNOTSUPP && !kernel_has_domains())
		SKIP(return, "%s", upm_strerror(ret));
	ASSERT_EQ(0, ret) TH_LOG("%s", upm_strerror(ret));
	TH_LOG("%lu ranges, %lu KiB advised remotely in %.3f s; %d/%d shared",
	       r.ranges, r.bytes >> 10, r.seconds, shared, NPAGES);
	EXPECT_LE(1UL, r.ranges);
	EXPECT_LE((unsigned long)NPAGES * psize, r.bytes);
	EXPECT_EQ(NPAGES, shared);
	EXPECT_LE(NPAGES, pr.upm_merged_pages);
}

/* A process that is gone is -ESRCH, not success and not "no UPM" */
TEST_F(lib, advise_pid_gone)
{
	struct upm_advise_result r;
	pid_t pid = fork();

	ASSERT_LE(0, pid);
	if (!pid)
		_exit(0);
	ASSERT_EQ(pid, waitpid(pid, NULL, 0));
	EXPECT_EQ(-ESRCH, upm_advise_pid(pid, &r));
	EXPECT_EQ(-EINVAL, upm_advise_pid(0, &r));
}

/* upm_set_domain()/upm_get_domain(), seen in ksm_stat as upm_domain */
TEST_F(lib, domain_set_get)
{
	struct upm_process pr;
	int ret;

	if (!kernel_has_domains())
		SKIP(return, "kernel without merge domains");
	/* The harness runs each test in its own process: nothing leaks */
	EXPECT_EQ(0, upm_get_domain());
	ret = upm_set_domain(77);
	if (ret == -EPERM)
		SKIP(return, "joining a domain needs CAP_SYS_ADMIN");
	ASSERT_EQ(0, ret);
	EXPECT_EQ(77, upm_get_domain());
	ASSERT_EQ(0, upm_read_process(getpid(), &pr));
	EXPECT_EQ(77, pr.upm_domain);
	EXPECT_EQ(-EINVAL, upm_set_domain(1UL << 31));
	EXPECT_EQ(0, upm_set_domain(0));
	EXPECT_EQ(0, upm_get_domain());
}

/*
 * Every integer file of /sys/kernel/mm/upm, and only those, is read:
 * whatever the kernel has (pages_copied, pages_candidate and
 * candidates_dropped in this one), in name order.
 */
TEST_F(lib, counters_are_the_directory)
{
	static const char *const want[] = {
		"calls", "pages_merged", "pages_copied", "pages_candidate",
		"candidates_dropped", "index_entries", "index_buckets",
	};
	struct upm_counters c;
	struct upm_global g;
	struct dirent *d;
	char path[512];
	size_t i, files = 0;
	DIR *dp;
	long v;

	ASSERT_EQ(0, upm_read_global(&g));
	for (i = 0; i < ARRAY_SIZE(want); i++) {
		snprintf(path, sizeof(path), "/sys/kernel/mm/upm/%s", want[i]);
		if (upm_read_value(path, &v))
			continue;	/* an older kernel */
		EXPECT_LE(0, upm_counter(&g.upm, want[i])) TH_LOG("%s", path);
	}
	EXPECT_LT(0, upm_counter(&g.upm, "index_buckets"));
	EXPECT_EQ(-1, upm_counter(&g.upm, "merge_policy"));
	EXPECT_EQ(-1, upm_counter(&g.upm, "no_such_counter"));
	for (i = 1; i < g.upm.nr; i++)
		EXPECT_GT(0, strcmp(g.upm.c[i - 1].name, g.upm.c[i].name));
	for (i = 0; i < g.upm.nr; i++) {
		snprintf(path, sizeof(path), "/sys/kernel/mm/upm/%s",
			 g.upm.c[i].name);
		EXPECT_EQ(0, upm_read_value(path, &v)) TH_LOG("%s", path);
	}
	/* Each file of the directory that reads as a number is there */
	dp = opendir("/sys/kernel/mm/upm");
	ASSERT_NE(NULL, dp);
	while ((d = readdir(dp))) {
		snprintf(path, sizeof(path), "/sys/kernel/mm/upm/%s",
			 d->d_name);
		if (d->d_name[0] != '.' && !upm_read_value(path, &v) &&
		    strcmp(d->d_name, "merge_policy"))
			files++;
	}
	closedir(dp);
	EXPECT_EQ(files, g.upm.nr);
	ASSERT_EQ(0, upm_read_value("/sys/kernel/mm/ksm/run", &v));
	EXPECT_EQ(v, upm_counter(&g.ksm, "run"));
	upm_global_free(&g);
	EXPECT_EQ(0U, g.upm.nr);

	/* A fake directory: integers in, words and other files out */
	snprintf(path, sizeof(path), "%s/sys", self->fake);
	ASSERT_EQ(0, mkdir(path, 0755));
	snprintf(path, sizeof(path), "%s/sys/cnt", self->fake);
	ASSERT_EQ(0, mkdir(path, 0755));
	ASSERT_EQ(0, write_file(self->fake, "/sys/cnt/zeta", "12\n"));
	ASSERT_EQ(0, write_file(self->fake, "/sys/cnt/alpha", "-3\n"));
	ASSERT_EQ(0, write_file(self->fake, "/sys/cnt/policy", "[a] b\n"));
	ASSERT_EQ(0, write_file(self->fake, "/sys/cnt/hex", "0x10\n"));
	snprintf(path, sizeof(path), "%s/sys/cnt/dir", self->fake);
	ASSERT_EQ(0, mkdir(path, 0755));
	setenv("UPM_ROOT", self->fake, 1);
	ASSERT_EQ(0, upm_read_counters("/sys/cnt", &c));
	ASSERT_EQ(2U, c.nr);
	EXPECT_STREQ("alpha", c.c[0].name);
	EXPECT_EQ(-3, c.c[0].value);
	EXPECT_STREQ("zeta", c.c[1].name);
	EXPECT_EQ(12, c.c[1].value);
	upm_counters_free(&c);
	EXPECT_EQ(-ENOENT, upm_read_counters("/sys/none", &c));
	EXPECT_EQ(0U, c.nr);
}

/* upm_processes() lists an advised twin with its counts */
TEST_F(lib, processes_lists_twin)
{
	struct upm_process *ps;
	struct twin t, t2;
	size_t n, i;
	int found = 0;

	/* The second twin's advice makes the first's pages KSM pages */
	ASSERT_EQ(0, twin_start(&t, 31337));
	ASSERT_EQ(0, twin_start(&t2, 31337));
	ASSERT_EQ(0, upm_processes(&ps, &n));
	twin_stop(&t2);
	twin_stop(&t);
	for (i = 0; i < n; i++) {
		if (i)
			EXPECT_LT(ps[i - 1].pid, ps[i].pid);
		if (ps[i].pid != t.pid)
			continue;
		found = 1;
		EXPECT_LE(NPAGES, ps[i].upm_stable_pages +
			  ps[i].upm_merged_pages);
		EXPECT_STRNE("", ps[i].comm);
	}
	free(ps);
	EXPECT_EQ(1, found);
}

/* A range UPM cannot take is EINVAL; with no UPM it becomes ENOSYS */
TEST_F(lib, no_upm_is_enosys)
{
	struct upm_global g;
	struct upm_process pr;
	char *shm = mmap(NULL, psize, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	ASSERT_NE(MAP_FAILED, shm);
	shm[0] = 1;
	EXPECT_EQ(-EINVAL, upm_advise(shm, psize));

	/* A fake root without sys/kernel/mm/upm: a kernel without UPM */
	setenv("UPM_ROOT", self->fake, 1);
	EXPECT_EQ(-ENOSYS, upm_available());
	EXPECT_EQ(-ENOSYS, upm_advise(shm, psize));
	EXPECT_EQ(-ENOSYS, upm_advise_self(NULL));
	EXPECT_EQ(-ENOSYS, upm_advise_pid(getpid(), NULL));
	EXPECT_EQ(-ENOSYS, upm_read_global(&g));
	EXPECT_EQ(-1, upm_counter(&g.upm, "calls"));
	EXPECT_EQ(-ESRCH, upm_read_process(getpid(), &pr));
	EXPECT_NE(NULL, strstr(upm_strerror(-ENOSYS), "no UPM"));
	munmap(shm, psize);
}

/* ksm_stat of a kernel with KSM but without UPM: upm_* read as -1 */
TEST_F(lib, ksm_stat_without_upm_lines)
{
	struct upm_process pr;
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/proc", self->fake);
	ASSERT_EQ(0, mkdir(path, 0755));
	snprintf(path, sizeof(path), "%s/proc/77", self->fake);
	ASSERT_EQ(0, mkdir(path, 0755));
	snprintf(path, sizeof(path), "%s/proc/77/ksm_stat", self->fake);
	f = fopen(path, "w");
	ASSERT_NE(NULL, f);
	fprintf(f, "ksm_rmap_items 5\nksm_zero_pages 1\n"
		"ksm_merging_pages 3\nksm_process_profit 4096\n"
		"ksm_merge_any: no\nksm_mergeable: yes\n");
	fclose(f);
	setenv("UPM_ROOT", self->fake, 1);
	ASSERT_EQ(0, upm_read_process(77, &pr));
	EXPECT_EQ(5, pr.ksm_rmap_items);
	EXPECT_EQ(1, pr.ksm_zero_pages);
	EXPECT_EQ(3, pr.ksm_merging_pages);
	EXPECT_EQ(4096, pr.ksm_process_profit);
	EXPECT_EQ(-1, pr.upm_merged_pages);
	EXPECT_EQ(-1, pr.upm_stable_pages);
}

/* On a kernel without UPM (the host), advice on plain memory is ENOSYS */
TEST(real_kernel_without_upm)
{
	size_t ps = sysconf(_SC_PAGESIZE);
	char *p;

	unsetenv("UPM_ROOT");
	if (!upm_available())
		SKIP(return, "this kernel has UPM");
	p = mmap(NULL, ps, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, p);
	p[0] = 1;
	EXPECT_EQ(-ENOSYS, upm_advise(p, ps));
	EXPECT_EQ(-ENOSYS, upm_advise_self(NULL));
	EXPECT_EQ(-ENOSYS, upm_advise_pid(getpid(), NULL));
	EXPECT_EQ(-ENOSYS, upm_get_domain());
	EXPECT_EQ(-ENOSYS, upm_set_domain(0));
	munmap(p, ps);
}

TEST_HARNESS_MAIN

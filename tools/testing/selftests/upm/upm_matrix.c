// SPDX-License-Identifier: GPL-2.0
/*
 * The fault, stress and concurrency matrix of MADV_UPM_MERGEABLE: merged
 * pages must survive everything KSM pages survive (fork, munmap, mremap,
 * mprotect, MADV_DONTNEED/FREE/PAGEOUT, swap, migration, compaction, THP,
 * mlock, userfaultfd, pins, memory cgroups, max_page_sharing) and races
 * of advise with all of them. Every case checks content in every sharer
 * and sharing by PFNs (/proc/<pid>/pagemap) and KPF_KSM; no case asserts
 * which process's frame became the shared one. Needs root.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "../../../../mm/gup_test.h"
#include "upm_util.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#define MX_MPOL_DEFAULT		0
#define MX_MPOL_BIND		2
#define MX_MPOL_MF_MOVE_ALL	(1 << 2)

#define NP		64
#define CG		"/sys/fs/cgroup"
/* Seconds each race loop runs */
#define RACE_SECS	4

/*
 * A peer: another process holding NP pages of a seed's content. It keeps
 * a model of its own writes (0: the seed's bytes, else the byte written)
 * and answers commands on a pipe.
 */
enum { OP_CHECK = 1, OP_WRITE, OP_PFNS, OP_ADVISE, OP_PAGEOUT, OP_SWAPPED,
	OP_EXIT };

struct cmd {
	int op, a, b, v;
};

struct peer {
	pid_t pid;
	int cmd, reply;
	uint64_t pfn[NP];
};

/* Does page i of p hold the seed's bytes (byte 0) or all @byte? */
static bool page_is(const char *p, int i, uint64_t seed, int byte)
{
	static char *ref;
	static uint64_t ref_seed;

	if (byte) {
		for (size_t k = 0; k < psize(); k++)
			if (p[k] != (char)byte)
				return false;
		return true;
	}
	if (!ref) {
		ref = malloc(NP * psize());
		fill(ref, NP, seed);
		ref_seed = seed;
	} else if (ref_seed != seed) {
		fill(ref, NP, seed);
		ref_seed = seed;
	}
	return !memcmp(p, ref + i * psize(), psize());
}

static long peer_do(char *p, const struct cmd *c, uint64_t seed, char *model,
		    int out)
{
	long n = 0;

	switch (c->op) {
	case OP_CHECK:
		for (int i = 0; i < NP; i++)
			n += !page_is(p + i * psize(), i, seed, model[i]);
		return n;
	case OP_WRITE:
		for (int i = c->a; i < c->b; i++) {
			memset(p + i * psize(), c->v, psize());
			model[i] = c->v;
		}
		return 0;
	case OP_ADVISE:
		return madvise(p, NP * psize(), MADV_UPM_MERGEABLE) ?
		       -errno : 0;
	case OP_PAGEOUT:
		return madvise(p, NP * psize(), MADV_PAGEOUT) ? -errno : 0;
	case OP_SWAPPED:
		for (int i = 0; i < NP; i++)
			n += !!(pagemap_of(p + i * psize()) & PM_SWAP);
		return n;
	case OP_PFNS: {
		uint64_t pfn[NP];

		for (int i = 0; i < NP; i++)
			pfn[i] = is_ksm(p + i * psize()) ?
				 pfn_of(p + i * psize()) : 0;
		if (write(out, pfn, sizeof(pfn)) != sizeof(pfn))
			_exit(3);
		return 0;
	}
	}
	return -EINVAL;
}

/*
 * Start a peer: it joins cgroup @cg (if set), maps and fills its pages,
 * advises them if @advise, and reports its KSM PFNs (0 for a page that is
 * not a KSM page).
 */
static int peer_start(struct peer *t, uint64_t seed, bool advise,
		      const char *cg)
{
	int to[2], from[2];
	struct cmd c;

	if (pipe(to) || pipe(from))
		return -1;
	t->pid = fork();
	if (t->pid < 0)
		return -1;
	if (!t->pid) {
		char model[NP] = { 0 };
		char *p;
		long r;

		close(to[1]);
		close(from[0]);
		if (cg && write_str(cg, "0"))
			_exit(1);
		p = map_anon(NP);
		if (!p)
			_exit(1);
		fill(p, NP, seed);
		if (advise && madvise(p, NP * psize(), MADV_UPM_MERGEABLE))
			_exit(2);
		c.op = OP_PFNS;
		peer_do(p, &c, seed, model, from[1]);
		while (read(to[0], &c, sizeof(c)) == sizeof(c)) {
			if (c.op == OP_EXIT)
				break;
			r = peer_do(p, &c, seed, model, from[1]);
			if (write(from[1], &r, sizeof(r)) != sizeof(r))
				_exit(4);
		}
		_exit(0);
	}
	close(to[0]);
	close(from[1]);
	t->cmd = to[1];
	t->reply = from[0];
	if (read(t->reply, t->pfn, sizeof(t->pfn)) != sizeof(t->pfn))
		return -1;
	return 0;
}

static int peer_send(struct peer *t, int op, int a, int b, int v)
{
	struct cmd c = { .op = op, .a = a, .b = b, .v = v };

	return write(t->cmd, &c, sizeof(c)) == sizeof(c) ? 0 : -1;
}

static long peer_wait(struct peer *t)
{
	long r;

	if (read(t->reply, &r, sizeof(r)) != sizeof(r))
		return -1000;
	return r;
}

static long peer_call(struct peer *t, int op, int a, int b, int v)
{
	if (peer_send(t, op, a, b, v))
		return -1000;
	return peer_wait(t);
}

/* Pages of the peer whose content differs from its model. */
static long peer_mismatches(struct peer *t)
{
	return peer_call(t, OP_CHECK, 0, 0, 0);
}

/* Refresh the peer's PFNs; returns 0 on success. */
static int peer_pfns(struct peer *t)
{
	long r;

	if (peer_send(t, OP_PFNS, 0, 0, 0))
		return -1;
	if (read(t->reply, t->pfn, sizeof(t->pfn)) != sizeof(t->pfn))
		return -1;
	r = peer_wait(t);
	return r ? -1 : 0;
}

static int peer_stop(struct peer *t)
{
	int status = -1;

	if (!t->pid)
		return -1;
	if (peer_send(t, OP_EXIT, 0, 0, 0))
		kill(t->pid, SIGKILL);
	waitpid(t->pid, &status, 0);
	close(t->cmd);
	close(t->reply);
	t->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Pages [a, b) of mem that map the peer's KSM frame of the same index. */
static int shared_range(char *mem, struct peer *t, int a, int b)
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

static int shared(char *mem, struct peer *t)
{
	return shared_range(mem, t, 0, NP);
}

/* Pages [a, b) of p that hold the seed's content. */
static int good_range(const char *p, uint64_t seed, int a, int b)
{
	int n = 0;

	for (int i = a; i < b; i++)
		n += page_is(p + i * psize(), i, seed, 0);
	return n;
}

static bool have_swap(void)
{
	char buf[256] = "";

	read_str("/proc/swaps", buf, sizeof(buf));
	return strchr(buf, '\n') && strchr(buf, '\n')[1];
}

static bool have_memcg(void)
{
	char buf[256] = "";

	read_str(CG "/cgroup.controllers", buf, sizeof(buf));
	if (!strstr(buf, "memory"))
		return false;
	write_str(CG "/cgroup.subtree_control", "+memory");
	return true;
}

/* Make cgroup CG/name (fresh) and return the path of its cgroup.procs. */
static const char *cg_make(const char *name, char *procs, size_t len)
{
	char dir[128];

	snprintf(dir, sizeof(dir), CG "/%s", name);
	rmdir(dir);
	if (mkdir(dir, 0755))
		return NULL;
	snprintf(procs, len, "%s/cgroup.procs", dir);
	return procs;
}

static void cg_remove(const char *name)
{
	char dir[128];

	snprintf(dir, sizeof(dir), CG "/%s", name);
	rmdir(dir);
}

static long cg_stat(const char *name, const char *key)
{
	char path[160], k[64];
	long v, found = -1;
	FILE *f;

	snprintf(path, sizeof(path), CG "/%s/memory.stat", name);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fscanf(f, "%63s %ld", k, &v) == 2)
		if (!strcmp(k, key))
			found = v;
	fclose(f);
	return found;
}

static long cg_read(const char *name, const char *file, const char *key)
{
	char path[160], k[64];
	long v, found = -1;
	FILE *f;

	snprintf(path, sizeof(path), CG "/%s/%s", name, file);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fscanf(f, "%63s %ld", k, &v) == 2)
		if (!strcmp(k, key))
			found = v;
	fclose(f);
	return found;
}

static int nr_nodes(void)
{
	int n = 0;
	char path[64];

	for (;;) {
		snprintf(path, sizeof(path), "/sys/devices/system/node/node%d",
			 n);
		if (access(path, F_OK))
			return n;
		n++;
	}
}

static time_t now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/*
 * Every case may take up to 300 s (TEST_F_TIMEOUT): under an emulated
 * guest and the debug kernel, hundreds of forks or compaction passes take
 * far longer than the harness's default 30 s. No case asserts on time.
 */
FIXTURE(mx) {
	char *mem;
	size_t len;
	struct peer peer[2];
	struct knobs knobs;
};

FIXTURE_SETUP(mx)
{
	if (getuid())
		SKIP(return, "needs root for PFNs and KSM knobs");
	if (upm_counter("calls") < 0)
		SKIP(return, "no /sys/kernel/mm/upm: no CONFIG_UPM");
	knobs_save(&self->knobs);
	/* ksmd off unless a case turns it on */
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/run", "0"));
	self->len = NP * psize();
	self->mem = map_anon(NP);
	ASSERT_NE(NULL, self->mem);
	memset(self->peer, 0, sizeof(self->peer));
}

FIXTURE_TEARDOWN(mx)
{
	for (int i = 0; i < 2; i++)
		if (self->peer[i].pid)
			peer_stop(&self->peer[i]);
	if (self->mem)
		munmap(self->mem, self->len);
	knobs_restore(&self->knobs);
}

/* Merge self->mem (seed) with peer 0: every page shared afterwards. */
#define merge_with_peer(self, seed) do {				\
	ASSERT_EQ(0, peer_start(&(self)->peer[0], seed, true, NULL));	\
	fill((self)->mem, NP, seed);					\
	ASSERT_EQ(0, madvise((self)->mem, NP * psize(),			\
			     MADV_UPM_MERGEABLE));			\
	ASSERT_EQ(NP, shared((self)->mem, &(self)->peer[0]));		\
} while (0)

/* fork after merge: each side sees only its own writes. */
TEST_F_TIMEOUT(mx, fork_after_merge, 300)
{
	int status;
	pid_t pid;

	merge_with_peer(self, 101);
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		int bad = 0;

		memset(self->mem, 0xc1, 16 * psize());
		for (int i = 0; i < 16; i++)
			bad += !page_is(self->mem + i * psize(), i, 0, 0xc1);
		bad += 48 - good_range(self->mem, 101, 16, NP);
		/* the child maps the same frames as the peer */
		bad += 48 - shared_range(self->mem, &self->peer[0], 16, NP);
		_exit(bad ? 1 : 0);
	}
	memset(self->mem + 16 * psize(), 0xd1, 16 * psize());
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	EXPECT_EQ(16, good_range(self->mem, 101, 0, 16));
	for (int i = 16; i < 32; i++)
		EXPECT_TRUE(page_is(self->mem + i * psize(), i, 0, 0xd1));
	EXPECT_EQ(32, good_range(self->mem, 101, 32, NP));
	EXPECT_EQ(16, shared_range(self->mem, &self->peer[0], 0, 16));
	EXPECT_EQ(32, shared_range(self->mem, &self->peer[0], 32, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
}

/* munmap of the middle of a merged range leaves the rest shared. */
TEST_F_TIMEOUT(mx, munmap_part, 300)
{
	merge_with_peer(self, 102);
	ASSERT_EQ(0, munmap(self->mem + 16 * psize(), 16 * psize()));
	EXPECT_EQ(16, good_range(self->mem, 102, 0, 16));
	EXPECT_EQ(32, good_range(self->mem, 102, 32, NP));
	EXPECT_EQ(16, shared_range(self->mem, &self->peer[0], 0, 16));
	EXPECT_EQ(32, shared_range(self->mem, &self->peer[0], 32, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	/* advising across the hole fails and changes nothing */
	EXPECT_EQ(-1, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(ENOMEM, errno);
	EXPECT_EQ(48, shared_range(self->mem, &self->peer[0], 0, 16) +
		  shared_range(self->mem, &self->peer[0], 32, NP));
}

/*
 * mremap: as for ksmd's pages, moving a range unmerges it first (KSM's
 * rule, so stale rmap addresses never meet new pages); content is kept
 * and advising the new address merges again. Grown pages merge later.
 */
TEST_F_TIMEOUT(mx, mremap_move_and_grow, 300)
{
	char *hole, *p;

	merge_with_peer(self, 103);
	hole = mmap(NULL, 4 * NP * psize(), PROT_NONE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, hole);
	p = mremap(self->mem, NP * psize(), NP * psize(),
		   MREMAP_MAYMOVE | MREMAP_FIXED, hole);
	ASSERT_EQ(hole, p);
	munmap(hole + NP * psize(), 3 * NP * psize());
	self->mem = p;
	EXPECT_EQ(NP, good_range(p, 103, 0, NP));
	EXPECT_EQ(0, shared(p, &self->peer[0]));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	ASSERT_EQ(0, madvise(p, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared(p, &self->peer[0]));

	p = mremap(p, NP * psize(), 2 * NP * psize(), MREMAP_MAYMOVE);
	ASSERT_NE(MAP_FAILED, p);
	self->mem = p;
	self->len = 2 * NP * psize();
	EXPECT_EQ(NP, good_range(p, 103, 0, NP));
	for (int i = NP; i < 2 * NP; i++)
		EXPECT_EQ(0, pfn_of(p + i * psize()));
	/* the new half, once it holds the peer's content, merges with it */
	fill(p + NP * psize(), NP, 103);
	ASSERT_EQ(0, madvise(p, 2 * NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared(p, &self->peer[0]));
	EXPECT_EQ(NP, shared(p + NP * psize(), &self->peer[0]));
	EXPECT_EQ(NP, good_range(p + NP * psize(), 103, 0, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
}

/* mprotect read-only, none and back: sharing and content survive. */
TEST_F_TIMEOUT(mx, mprotect_cycle, 300)
{
	long merged;

	merge_with_peer(self, 104);
	ASSERT_EQ(0, mprotect(self->mem, NP * psize(), PROT_READ));
	EXPECT_EQ(NP, good_range(self->mem, 104, 0, NP));
	merged = upm_counter("pages_merged");
	EXPECT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(0, upm_counter("pages_merged") - merged);
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	ASSERT_EQ(0, mprotect(self->mem, NP * psize(), PROT_NONE));
	/* documented: PROT_NONE ranges are accepted */
	EXPECT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	ASSERT_EQ(0, mprotect(self->mem, NP * psize(), PROT_READ | PROT_WRITE));
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 104, 0, NP));
	self->mem[5 * psize()] ^= 1;
	EXPECT_EQ(NP - 1, shared(self->mem, &self->peer[0]));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
}

/*
 * Sealed memory (mseal) is not an error: as for MADV_MERGEABLE, sealing
 * forbids changing the mapping, not merging its pages.
 */
TEST_F_TIMEOUT(mx, sealed_range_merges, 300)
{
	ASSERT_EQ(0, peer_start(&self->peer[0], 120, true, NULL));
	fill(self->mem, NP, 120);
	if (syscall(462, self->mem, NP * psize(), 0))
		SKIP(return, "no mseal(): %s", strerror(errno));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 120, 0, NP));
	self->mem[0] ^= 1;
	EXPECT_EQ(NP - 1, shared(self->mem, &self->peer[0]));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	/* a sealed range cannot be unmapped: the fixture must not try */
	self->mem = NULL;
}

/* A range whose pages were merged while PROT_NONE reads them back. */
TEST_F_TIMEOUT(mx, advise_prot_none_merges, 300)
{
	ASSERT_EQ(0, peer_start(&self->peer[0], 105, true, NULL));
	fill(self->mem, NP, 105);
	ASSERT_EQ(0, mprotect(self->mem, NP * psize(), PROT_NONE));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	ASSERT_EQ(0, mprotect(self->mem, NP * psize(), PROT_READ | PROT_WRITE));
	EXPECT_EQ(NP, good_range(self->mem, 105, 0, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
}

/* MADV_DONTNEED drops this mapping only; MADV_FREE keeps or zeroes. */
TEST_F_TIMEOUT(mx, dontneed_and_free, 300)
{
	merge_with_peer(self, 106);
	ASSERT_EQ(0, madvise(self->mem, 16 * psize(), MADV_DONTNEED));
	for (int i = 0; i < 16; i++)
		EXPECT_EQ(0, pfn_of(self->mem + i * psize()));
	for (int i = 0; i < 16; i++)
		EXPECT_TRUE(is_zero_page_content(self->mem + i * psize()));
	ASSERT_EQ(0, madvise(self->mem + 16 * psize(), 16 * psize(),
			     MADV_FREE));
	for (int i = 16; i < 32; i++) {
		char *pg = self->mem + i * psize();

		EXPECT_TRUE(page_is(pg, i, 106, 0) || is_zero_page_content(pg));
	}
	EXPECT_EQ(32, shared_range(self->mem, &self->peer[0], 32, NP));
	EXPECT_EQ(32, good_range(self->mem, 106, 32, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
}

/* Advising a merged range again counts nothing twice. */
TEST_F_TIMEOUT(mx, advise_again_no_double_count, 300)
{
	long sharing, shared_pages, mine, merged, entries, skipped;

	merge_with_peer(self, 107);
	sharing = ksm_counter("pages_sharing");
	shared_pages = ksm_counter("pages_shared");
	mine = read_ksm_stat("ksm_merging_pages");
	merged = upm_counter("pages_merged");
	entries = upm_counter("index_entries");
	skipped = upm_counter("skipped_ksm");
	for (int r = 0; r < 2; r++)
		ASSERT_EQ(0, madvise(self->mem, NP * psize(),
				     MADV_UPM_MERGEABLE));
	EXPECT_EQ(sharing, ksm_counter("pages_sharing"));
	EXPECT_EQ(shared_pages, ksm_counter("pages_shared"));
	EXPECT_EQ(mine, read_ksm_stat("ksm_merging_pages"));
	EXPECT_EQ(merged, upm_counter("pages_merged"));
	EXPECT_EQ(entries, upm_counter("index_entries"));
	EXPECT_EQ(2 * NP, upm_counter("skipped_ksm") - skipped);
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
}

/* MADV_PAGEOUT: shared pages stay; a sole mapper's KSM pages swap. */
TEST_F_TIMEOUT(mx, pageout_merged, 300)
{
	int swapped = 0;

	if (!have_swap())
		SKIP(return, "no swap (the test guest sets up zram swap)");
	merge_with_peer(self, 108);
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_PAGEOUT));
	EXPECT_EQ(NP, good_range(self->mem, 108, 0, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	/* the peer leaves: this process alone maps the KSM pages now */
	ASSERT_EQ(0, peer_stop(&self->peer[0]));
	for (int i = 0; i < NP; i++)
		EXPECT_TRUE(is_ksm(self->mem + i * psize()));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_PAGEOUT));
	for (int i = 0; i < NP; i++)
		swapped += !!(pagemap_of(self->mem + i * psize()) & PM_SWAP);
	EXPECT_LT(0, swapped);
	TH_LOG("%d of %d KSM pages swapped out", swapped, NP);
	EXPECT_EQ(NP, good_range(self->mem, 108, 0, NP));
}

/*
 * Reclaim of a memory cgroup swaps out pages shared by two processes;
 * one swaps them in while the other writes, both read correct content.
 */
TEST_F_TIMEOUT(mx, swap_shared_pages, 300)
{
	char procs[160];
	int swapped = 0, r;
	long peer_swapped, before;

	if (!have_swap())
		SKIP(return, "no swap (the test guest sets up zram swap)");
	if (!have_memcg())
		SKIP(return, "no cgroup2 memory controller at " CG);
	ASSERT_NE(NULL, cg_make("upm-mx-swap", procs, sizeof(procs)));
	ASSERT_EQ(0, write_str(procs, "0"));
	merge_with_peer(self, 109);
	before = read_ulong(CG "/upm-mx-swap/memory.current");
	/* proactive reclaim, anon only; it may need a few passes */
	for (r = 0; r < 200 && !swapped; r++) {
		write_str(CG "/upm-mx-swap/memory.reclaim",
			  "16M swappiness=200");
		for (int i = 0; i < NP; i++)
			swapped += !!(pagemap_of(self->mem + i * psize()) &
				      PM_SWAP);
	}
	TH_LOG("%d reclaim passes, memory.current %ld -> %ld", r, before,
	       read_ulong(CG "/upm-mx-swap/memory.current"));
	peer_swapped = peer_call(&self->peer[0], OP_SWAPPED, 0, 0, 0);
	TH_LOG("swapped out: %d here, %ld in the peer", swapped, peer_swapped);
	EXPECT_LT(0, swapped);
	EXPECT_LT(0, peer_swapped);
	/* the peer writes half its pages while this process swaps in */
	ASSERT_EQ(0, peer_send(&self->peer[0], OP_WRITE, 0, NP / 2, 0x77));
	EXPECT_EQ(NP, good_range(self->mem, 109, 0, NP));
	EXPECT_EQ(0, peer_wait(&self->peer[0]));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 109, 0, NP));
	/*
	 * As with ksmd, a KSM page read back from swap comes back as a
	 * private page in each sharer; advising again merges them.
	 */
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(0, peer_call(&self->peer[0], OP_ADVISE, 0, 0, 0));
	EXPECT_EQ(NP / 2, shared_range(self->mem, &self->peer[0], NP / 2, NP));
	EXPECT_EQ(NP, good_range(self->mem, 109, 0, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	peer_stop(&self->peer[0]);
	write_str(CG "/cgroup.procs", "0");
	cg_remove("upm-mx-swap");
}

/* move_pages and mbind migrate merged pages; sharing survives. */
TEST_F_TIMEOUT(mx, migrate_merged, 300)
{
	void *pages[NP];
	int nodes[NP], status[NP];
	unsigned long mask = 1;
	long r;

	if (nr_nodes() < 2)
		SKIP(return, "one NUMA node (make test boots with NUMA=2)");
	merge_with_peer(self, 110);
	for (int i = 0; i < NP; i++) {
		pages[i] = self->mem + i * psize();
		nodes[i] = 1;
		status[i] = -1;
	}
	r = syscall(__NR_move_pages, 0, NP, pages, nodes, status,
		    MX_MPOL_MF_MOVE_ALL);
	ASSERT_EQ(0, r);
	for (int i = 0; i < NP; i++)
		EXPECT_EQ(1, status[i]);
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 110, 0, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));

	/* mbind back to node 0, moving pages mapped by others too */
	r = syscall(__NR_mbind, self->mem, NP * psize(), MX_MPOL_BIND, &mask,
		    sizeof(mask) * 8, MX_MPOL_MF_MOVE_ALL);
	ASSERT_EQ(0, r);
	r = syscall(__NR_move_pages, 0, NP, pages, NULL, status, 0);
	ASSERT_EQ(0, r);
	for (int i = 0; i < NP; i++)
		EXPECT_EQ(0, status[i]);
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 110, 0, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	syscall(__NR_mbind, self->mem, NP * psize(), MX_MPOL_DEFAULT, NULL,
		0, 0);
}

static atomic_int stop_flag;

/* Held during each compaction pass, so that a test can pause them. */
static pthread_mutex_t compact_lock = PTHREAD_MUTEX_INITIALIZER;

static void *compact_loop(void *arg)
{
	while (!stop_flag) {
		pthread_mutex_lock(&compact_lock);
		write_str("/proc/sys/vm/compact_memory", "1");
		pthread_mutex_unlock(&compact_lock);
		usleep(1000);
	}
	return NULL;
}

static const char * const outcomes[] = {
	"pages_merged", "pages_candidate", "pages_zero", "skipped_absent",
	"skipped_ksm", "skipped_pinned", "skipped_thp", "skipped_busy",
	"skipped_nomem", "skipped_disabled",
};

static long outcome_sum(void)
{
	long sum = 0;

	for (size_t i = 0; i < ARRAY_SIZE(outcomes); i++)
		sum += upm_counter(outcomes[i]);
	return sum;
}

/*
 * Compaction running while advise calls merge. A page being migrated at
 * that moment is skipped (absent or busy, both documented), so sharing is
 * only asserted once compaction stops: every page is accounted for by
 * exactly one outcome, the content is intact, the pages that were merged
 * are still shared, and a new pair of processes merges completely.
 */
TEST_F_TIMEOUT(mx, compact_while_advising, 300)
{
	time_t end = now() + RACE_SECS;
	long before, merged, busy;
	pthread_t th;
	int rounds = 0, n;

	if (access("/proc/sys/vm/compact_memory", W_OK))
		SKIP(return, "no /proc/sys/vm/compact_memory");
	stop_flag = 0;
	ASSERT_EQ(0, pthread_create(&th, NULL, compact_loop, NULL));
	while (now() < end || rounds < 2) {
		uint64_t seed = 1100 + rounds;

		ASSERT_EQ(0, peer_start(&self->peer[0], seed, true, NULL));
		fill(self->mem, NP, seed);
		before = outcome_sum();
		merged = upm_counter("pages_merged");
		busy = upm_counter("skipped_busy") +
		       upm_counter("skipped_absent");
		ASSERT_EQ(0, madvise(self->mem, NP * psize(),
				     MADV_UPM_MERGEABLE));
		EXPECT_EQ(NP, outcome_sum() - before);
		merged = upm_counter("pages_merged") - merged;
		busy = upm_counter("skipped_busy") +
		       upm_counter("skipped_absent") - busy;
		EXPECT_EQ(NP, good_range(self->mem, seed, 0, NP));
		EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
		/* after more compaction, the merged pages are still shared */
		usleep(200000);
		pthread_mutex_lock(&compact_lock);
		n = shared(self->mem, &self->peer[0]);
		pthread_mutex_unlock(&compact_lock);
		TH_LOG("round %d: %ld merged, %ld skipped, %d shared later",
		       rounds, merged, busy, n);
		EXPECT_LE(merged, n);
		EXPECT_EQ(NP, good_range(self->mem, seed, 0, NP));
		EXPECT_EQ(0, peer_stop(&self->peer[0]));
		rounds++;
	}
	stop_flag = 1;
	pthread_join(th, NULL);
	merge_with_peer(self, 1199);
	EXPECT_EQ(NP, good_range(self->mem, 1199, 0, NP));
}

/* Two 2 MiB aligned ranges of one process with the same content. */
static char *thp_pair(char **raw, size_t thp)
{
	char *a;

	*raw = mmap(NULL, 3 * thp, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (*raw == MAP_FAILED)
		return NULL;
	a = (char *)(((uintptr_t)*raw + thp - 1) & ~(thp - 1));
	if (madvise(a, 2 * thp, MADV_HUGEPAGE))
		return NULL;
	fill(a, thp / psize(), 111);
	fill(a + thp, thp / psize(), 111);
	return a;
}

static int pair_shared(char *a, size_t thp)
{
	int n = 0;

	for (size_t i = 0; i < thp; i += psize()) {
		uint64_t pfn = pfn_of(a + i);

		n += pfn && pfn == pfn_of(a + thp + i) && is_ksm(a + i);
	}
	return n;
}

/* MADV_COLLAPSE and khugepaged over merged ranges. */
TEST_F_TIMEOUT(mx, thp_collapse_merged, 300)
{
	size_t thp = 2UL << 20, n = thp / getpagesize();
	const char *kh = "/sys/kernel/mm/transparent_hugepage/khugepaged/";
	char path[160], old_sleep[32] = "";
	long scans;
	time_t end;
	char *raw, *a;
	int r;

	a = thp_pair(&raw, thp);
	if (!a)
		SKIP(return, "no THP support");
	ASSERT_EQ(0, madvise(a, 2 * thp, MADV_UPM_MERGEABLE));
	ASSERT_EQ(n, pair_shared(a, thp));

	r = madvise(a, thp, MADV_COLLAPSE);
	TH_LOG("MADV_COLLAPSE on a merged range: %d (%s)", r,
	       r ? strerror(errno) : "collapsed");
	EXPECT_TRUE(same_as(a, n, 111));
	EXPECT_TRUE(same_as(a + thp, n, 111));
	for (size_t i = 0; i < thp; i += psize())
		EXPECT_TRUE(is_ksm(a + thp + i));
	if (!r)
		EXPECT_TRUE(read_kpageflags(pfn_of(a)) & (1ULL << KPF_THP));
	/* advising again (splitting a collapsed THP) merges everything */
	ASSERT_EQ(0, madvise(a, 2 * thp, MADV_UPM_MERGEABLE));
	EXPECT_EQ(n, pair_shared(a, thp));

	/* khugepaged at full speed over the merged pair */
	snprintf(path, sizeof(path), "%sscan_sleep_millisecs", kh);
	read_str(path, old_sleep, sizeof(old_sleep));
	snprintf(path, sizeof(path), "%sfull_scans", kh);
	scans = read_ulong(path);
	if (scans < 0)
		SKIP(goto out, "no khugepaged");
	snprintf(path, sizeof(path), "%sscan_sleep_millisecs", kh);
	write_str(path, "0");
	snprintf(path, sizeof(path), "%sfull_scans", kh);
	end = now() + 60;
	while (read_ulong(path) < scans + 2 && now() < end)
		usleep(100000);
	TH_LOG("khugepaged full scans: %ld", read_ulong(path) - scans);
	EXPECT_TRUE(same_as(a, n, 111));
	EXPECT_TRUE(same_as(a + thp, n, 111));
	ASSERT_EQ(0, madvise(a, 2 * thp, MADV_UPM_MERGEABLE));
	EXPECT_EQ(n, pair_shared(a, thp));
	snprintf(path, sizeof(path), "%sscan_sleep_millisecs", kh);
	if (old_sleep[0])
		write_str(path, old_sleep);
out:
	munmap(raw, 3 * thp);
}

struct thp_race {
	char *a;
	size_t len;
};

static void *collapse_loop(void *arg)
{
	struct thp_race *t = arg;

	while (!stop_flag)
		madvise(t->a, t->len, MADV_COLLAPSE);
	return NULL;
}

/* THPs collapsed by one thread while another advises and splits them. */
TEST_F_TIMEOUT(mx, thp_split_during_advise, 300)
{
	size_t thp = 2UL << 20, n = thp / getpagesize();
	time_t end = now() + RACE_SECS;
	struct thp_race t;
	pthread_t th;
	char *raw, *a;
	int rounds = 0;

	a = thp_pair(&raw, thp);
	if (!a)
		SKIP(return, "no THP support");
	t.a = a;
	t.len = 2 * thp;
	stop_flag = 0;
	ASSERT_EQ(0, pthread_create(&th, NULL, collapse_loop, &t));
	while (now() < end || rounds < 2) {
		EXPECT_EQ(0, madvise(a, 2 * thp, MADV_UPM_MERGEABLE));
		/* a write breaks sharing and invites another collapse */
		a[rounds % n * psize()] ^= 1;
		a[rounds % n * psize()] ^= 1;
		rounds++;
	}
	stop_flag = 1;
	pthread_join(th, NULL);
	EXPECT_TRUE(same_as(a, n, 111));
	EXPECT_TRUE(same_as(a + thp, n, 111));
	ASSERT_EQ(0, madvise(a, 2 * thp, MADV_UPM_MERGEABLE));
	EXPECT_EQ(n, pair_shared(a, thp));
	TH_LOG("%d rounds", rounds);
	munmap(raw, 3 * thp);
}

/* mlock then advise merges; munlock keeps it; mlock again is safe. */
TEST_F_TIMEOUT(mx, mlock_merged, 300)
{
	ASSERT_EQ(0, peer_start(&self->peer[0], 112, true, NULL));
	fill(self->mem, NP, 112);
	ASSERT_EQ(0, mlock(self->mem, NP * psize()));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	ASSERT_EQ(0, munlock(self->mem, NP * psize()));
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 112, 0, NP));
	/*
	 * mlock of a merged writable private range faults every page in
	 * for writing (populate breaks COW): this process gets private
	 * copies, the peer keeps its frames and bytes.
	 */
	ASSERT_EQ(0, mlock(self->mem, NP * psize()));
	EXPECT_EQ(0, shared(self->mem, &self->peer[0]));
	for (int i = 0; i < NP; i++)
		EXPECT_FALSE(is_ksm(self->mem + i * psize()));
	EXPECT_EQ(NP, good_range(self->mem, 112, 0, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	/* advising the locked range merges it again */
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	ASSERT_EQ(0, munlock(self->mem, NP * psize()));
	EXPECT_EQ(NP, good_range(self->mem, 112, 0, NP));
}

/* A userfaultfd-registered (missing mode) range merges like any other. */
TEST_F_TIMEOUT(mx, userfaultfd_range, 300)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { 0 };
	int uffd;

	uffd = syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		SKIP(return, "no userfaultfd: %s", strerror(errno));
	ASSERT_EQ(0, ioctl(uffd, UFFDIO_API, &api));
	ASSERT_EQ(0, peer_start(&self->peer[0], 113, true, NULL));
	fill(self->mem, NP, 113);
	reg.range.start = (uintptr_t)self->mem;
	reg.range.len = NP * psize();
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	ASSERT_EQ(0, ioctl(uffd, UFFDIO_REGISTER, &reg));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	self->mem[psize()] ^= 1;
	self->mem[psize()] ^= 1;
	EXPECT_EQ(NP - 1, shared(self->mem, &self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 113, 0, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	close(uffd);
}

/* Pages held by a pipe through vmsplice are not merged while held. */
TEST_F_TIMEOUT(mx, vmsplice_held_not_merged, 300)
{
	struct iovec iov = { .iov_base = NULL, .iov_len = 16 * psize() };
	char *buf = malloc(16 * psize());
	int fds[2];
	ssize_t got = 0, r;

	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, pipe(fds));
	ASSERT_EQ(0, peer_start(&self->peer[0], 114, true, NULL));
	fill(self->mem, NP, 114);
	iov.iov_base = self->mem;
	ASSERT_EQ(16 * psize(), vmsplice(fds[1], &iov, 1, 0));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(0, shared_range(self->mem, &self->peer[0], 0, 16));
	EXPECT_EQ(NP - 16, shared_range(self->mem, &self->peer[0], 16, NP));
	while (got < (ssize_t)(16 * psize())) {
		r = read(fds[0], buf + got, 16 * psize() - got);
		ASSERT_LT(0, r);
		got += r;
	}
	EXPECT_EQ(16, good_range(buf, 114, 0, 16));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	close(fds[0]);
	close(fds[1]);
	free(buf);
}

/* Pages pinned (FOLL_PIN | FOLL_LONGTERM, as O_DIRECT) are never merged. */
TEST_F_TIMEOUT(mx, pinned_never_merged, 300)
{
	struct pin_longterm_test pin = { 0 };
	long pinned;
	int fd;

	fd = open("/sys/kernel/debug/gup_test", O_RDWR);
	if (fd < 0)
		SKIP(return, "no /sys/kernel/debug/gup_test (CONFIG_GUP_TEST)");
	ASSERT_EQ(0, peer_start(&self->peer[0], 115, true, NULL));
	fill(self->mem, NP, 115);
	pin.addr = (uintptr_t)self->mem;
	pin.size = 16 * psize();
	pin.flags = PIN_LONGTERM_TEST_FLAG_USE_WRITE;
	ASSERT_EQ(0, ioctl(fd, PIN_LONGTERM_TEST_START, &pin));
	pinned = upm_counter("skipped_pinned");
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(16, upm_counter("skipped_pinned") - pinned);
	EXPECT_EQ(0, shared_range(self->mem, &self->peer[0], 0, 16));
	for (int i = 0; i < 16; i++)
		EXPECT_FALSE(is_ksm(self->mem + i * psize()));
	EXPECT_EQ(NP - 16, shared_range(self->mem, &self->peer[0], 16, NP));
	ASSERT_EQ(0, ioctl(fd, PIN_LONGTERM_TEST_STOP));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 115, 0, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	close(fd);
}

/*
 * Memory cgroups: a merged page is charged once (to one of the groups);
 * a sharer that leaves its group, or is OOM-killed in its group, leaves
 * the others correct and sharing.
 */
TEST_F_TIMEOUT(mx, memcg_sharers, 300)
{
	char pa[160], pb[160], pc[160], pid_s[16], ok = 0;
	long anon_a, anon_b;
	int status, pfd[2];
	pid_t pid;

	if (!have_memcg())
		SKIP(return, "no cgroup2 memory controller at " CG);
	ASSERT_NE(NULL, cg_make("upm-mx-a", pa, sizeof(pa)));
	ASSERT_NE(NULL, cg_make("upm-mx-b", pb, sizeof(pb)));
	ASSERT_NE(NULL, cg_make("upm-mx-c", pc, sizeof(pc)));
	ASSERT_EQ(0, peer_start(&self->peer[0], 116, true, pa));
	ASSERT_EQ(0, peer_start(&self->peer[1], 116, true, pb));
	/* Peer 0's candidates were replaced by the shared copies since */
	ASSERT_EQ(0, peer_pfns(&self->peer[0]));
	for (int i = 0; i < NP; i++)
		EXPECT_EQ(self->peer[0].pfn[i], self->peer[1].pfn[i]);
	/* memcg statistics are flushed every 2 seconds */
	sleep(3);
	anon_a = cg_stat("upm-mx-a", "anon");
	anon_b = cg_stat("upm-mx-b", "anon");
	TH_LOG("anon charged: a %ld, b %ld bytes", anon_a, anon_b);
	/* NP pages in two processes: charged once, not twice */
	EXPECT_GE(anon_a + anon_b, (long)(NP * psize()));
	EXPECT_GT((long)(2 * NP * psize()), anon_a + anon_b);

	/* peer 0 leaves its group, which is then removed */
	snprintf(pid_s, sizeof(pid_s), "%d", self->peer[0].pid);
	ASSERT_EQ(0, write_str(CG "/cgroup.procs", pid_s));
	EXPECT_EQ(0, rmdir(CG "/upm-mx-a"));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	EXPECT_EQ(0, peer_mismatches(&self->peer[1]));
	ASSERT_EQ(0, peer_pfns(&self->peer[0]));
	ASSERT_EQ(0, peer_pfns(&self->peer[1]));
	for (int i = 0; i < NP; i++) {
		EXPECT_NE(0, self->peer[0].pfn[i]);
		EXPECT_EQ(self->peer[0].pfn[i], self->peer[1].pfn[i]);
	}

	/* a third sharer in a small group merges, then is OOM-killed */
	ASSERT_EQ(0, write_str(CG "/upm-mx-c/memory.max", "16M"));
	write_str(CG "/upm-mx-c/memory.swap.max", "0");
	ASSERT_EQ(0, pipe(pfd));
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		char *p, *hog;

		close(pfd[0]);
		if (write_str(pc, "0"))
			_exit(1);
		p = map_anon(NP);
		if (!p)
			_exit(1);
		fill(p, NP, 116);
		if (madvise(p, NP * psize(), MADV_UPM_MERGEABLE))
			_exit(2);
		ok = is_ksm(p) && is_ksm(p + (NP - 1) * psize()) ? 'y' : 'n';
		if (write(pfd[1], &ok, 1) != 1)
			_exit(3);
		hog = mmap(NULL, 256UL << 20, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (hog == MAP_FAILED)
			_exit(4);
		for (size_t off = 0; off < (256UL << 20); off += psize())
			hog[off] = 1;
		_exit(5);
	}
	close(pfd[1]);
	EXPECT_EQ(1, read(pfd[0], &ok, 1));
	EXPECT_EQ('y', ok);
	close(pfd[0]);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	EXPECT_LE(1, cg_read("upm-mx-c", "memory.events", "oom_kill"));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	EXPECT_EQ(0, peer_mismatches(&self->peer[1]));
	ASSERT_EQ(0, peer_pfns(&self->peer[0]));
	ASSERT_EQ(0, peer_pfns(&self->peer[1]));
	for (int i = 0; i < NP; i++) {
		EXPECT_NE(0, self->peer[0].pfn[i]);
		EXPECT_EQ(self->peer[0].pfn[i], self->peer[1].pfn[i]);
	}
	peer_stop(&self->peer[0]);
	peer_stop(&self->peer[1]);
	write_str(CG "/cgroup.procs", "0");
	cg_remove("upm-mx-a");
	cg_remove("upm-mx-b");
	cg_remove("upm-mx-c");
}

/*
 * More sharers of one content than max_page_sharing: several copies. Under
 * the "global" merge policy they form a stable node chain in ksmd's tree;
 * under "domain" (the default) UPM's nodes stay out of that tree, so the
 * chain count must not move.
 */
TEST_F_TIMEOUT(mx, more_than_max_page_sharing, 300)
{
	long max = ksm_counter("max_page_sharing");
	long chains0 = ksm_counter("stable_node_chains"), chains;
	char policy[32] = "";
	int n, go[2], ask[2], rep[2], distinct = 0, bad = 0, status;
	uint64_t *pfn;
	pid_t *pids;

	if (max < 2 || max > 1000)
		SKIP(return, "max_page_sharing is %ld", max);
	n = max + 44;
	pfn = calloc(n, sizeof(*pfn));
	pids = calloc(n, sizeof(*pids));
	ASSERT_TRUE(pfn && pids);
	ASSERT_EQ(0, pipe(go));
	ASSERT_EQ(0, pipe(ask));
	ASSERT_EQ(0, pipe(rep));
	/*
	 * Each child advises its page, says so, and reports its PFN when
	 * asked: only once all have advised, since the first sharer's
	 * candidate becomes a KSM page (a fresh frame) when the second comes.
	 */
	for (int i = 0; i < n; i++) {
		pids[i] = fork();
		ASSERT_LE(0, pids[i]);
		if (!pids[i]) {
			uint64_t v[2];
			char *p = map_anon(1);
			char c;

			close(go[1]);
			close(ask[1]);
			fill(p, 1, 117);
			v[0] = i;
			v[1] = !madvise(p, psize(), MADV_UPM_MERGEABLE);
			if (write(rep[1], v, sizeof(v)) != sizeof(v) ||
			    read(ask[0], &c, 1) != 1)
				_exit(3);
			v[1] = v[1] && is_ksm(p) ? pfn_of(p) : 0;
			if (write(rep[1], v, sizeof(v)) != sizeof(v))
				_exit(3);
			while (read(go[0], &c, 1) > 0)
				;
			_exit(same_as(p, 1, 117) ? 0 : 1);
		}
	}
	close(go[0]);
	close(ask[0]);
	close(rep[1]);
	for (int i = 0; i < n; i++) {
		uint64_t v[2];

		ASSERT_EQ(sizeof(v), read(rep[0], v, sizeof(v)));
		EXPECT_EQ(1, v[1]) TH_LOG("sharer %d: madvise failed", i);
	}
	for (int i = 0; i < n; i++)
		ASSERT_EQ(1, write(ask[1], "p", 1));
	for (int i = 0; i < n; i++) {
		uint64_t v[2];

		ASSERT_EQ(sizeof(v), read(rep[0], v, sizeof(v)));
		pfn[v[0]] = v[1];
	}
	close(ask[1]);
	chains = ksm_counter("stable_node_chains");
	for (int i = 0; i < n; i++) {
		int users = 0, first = 1;

		EXPECT_NE(0, pfn[i]);
		for (int j = 0; j < n; j++) {
			if (pfn[j] == pfn[i])
				users++;
			if (j < i && pfn[j] == pfn[i])
				first = 0;
		}
		if (first && pfn[i]) {
			distinct++;
			EXPECT_GE(max, users);
			if (users > max)
				bad++;
		}
	}
	TH_LOG("%d sharers on %d frames, %ld chains", n, distinct, chains);
	EXPECT_LE(2, distinct);
	EXPECT_GT(n, distinct * 8);
	read_str("/sys/kernel/mm/upm/merge_policy", policy, sizeof(policy));
	/* a new chain under "global" only */
	EXPECT_EQ(!strcmp(policy, "global\n"), chains > chains0);
	EXPECT_EQ(0, bad);
	close(go[1]);
	for (int i = 0; i < n; i++) {
		ASSERT_EQ(pids[i], waitpid(pids[i], &status, 0));
		EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	}
	close(rep[0]);
	free(pfn);
	free(pids);
}

/* Races: advise against munmap/mremap of the same range by a thread. */
struct race_ctx {
	char *mem;
	uint64_t seed;
	time_t end;
	int bad_errno, forks, bad_children;
};

static void *unmap_remap_loop(void *arg)
{
	struct race_ctx *c = arg;
	char *tmp;
	int i = 0;

	while (now() < c->end) {
		if (i++ & 1) {
			munmap(c->mem + 8 * psize(), 8 * psize());
			mmap(c->mem + 8 * psize(), 8 * psize(),
			     PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		} else {
			tmp = mremap(c->mem, NP * psize(), NP * psize(),
				     MREMAP_MAYMOVE);
			if (tmp == MAP_FAILED)
				continue;
			mremap(tmp, NP * psize(), NP * psize(),
			       MREMAP_MAYMOVE | MREMAP_FIXED, c->mem);
		}
	}
	return NULL;
}

TEST_F_TIMEOUT(mx, race_advise_munmap_mremap, 300)
{
	struct race_ctx c = { .mem = self->mem, .seed = 118 };
	pthread_t th;
	int calls = 0;

	ASSERT_EQ(0, peer_start(&self->peer[0], 118, true, NULL));
	fill(self->mem, NP, 118);
	c.end = now() + RACE_SECS;
	ASSERT_EQ(0, pthread_create(&th, NULL, unmap_remap_loop, &c));
	while (now() < c.end) {
		if (madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE) &&
		    errno != ENOMEM)
			c.bad_errno++;
		calls++;
	}
	pthread_join(th, NULL);
	TH_LOG("%d advise calls", calls);
	EXPECT_EQ(0, c.bad_errno);
	/* the range is whole again: the untouched parts kept their bytes */
	EXPECT_EQ(8, good_range(self->mem, 118, 0, 8));
	EXPECT_EQ(NP - 16, good_range(self->mem, 118, 16, NP));
	fill(self->mem, NP, 118);
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
}

static void *fork_loop(void *arg)
{
	struct race_ctx *c = arg;
	int status;
	pid_t pid;

	while (now() < c->end) {
		pid = fork();
		if (pid < 0)
			continue;
		if (!pid)
			_exit(same_as(c->mem, NP, c->seed) ? 0 : 1);
		waitpid(pid, &status, 0);
		c->forks++;
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			c->bad_children++;
	}
	return NULL;
}

/* Advise and unmerge against fork and exit of the same mm. */
TEST_F_TIMEOUT(mx, race_advise_fork_exit, 300)
{
	struct race_ctx c = { .mem = self->mem, .seed = 119 };
	pthread_t th;

	ASSERT_EQ(0, peer_start(&self->peer[0], 119, true, NULL));
	fill(self->mem, NP, 119);
	c.end = now() + RACE_SECS;
	ASSERT_EQ(0, pthread_create(&th, NULL, fork_loop, &c));
	while (now() < c.end) {
		EXPECT_EQ(0, madvise(self->mem, NP * psize(),
				     MADV_UPM_MERGEABLE));
		EXPECT_EQ(0, madvise(self->mem, NP * psize(),
				     MADV_UNMERGEABLE));
	}
	pthread_join(th, NULL);
	TH_LOG("%d children", c.forks);
	EXPECT_LT(0, c.forks);
	EXPECT_EQ(0, c.bad_children);
	EXPECT_EQ(NP, good_range(self->mem, 119, 0, NP));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared(self->mem, &self->peer[0]));
}

struct zero_race {
	char *mem;
	time_t end;
	int rounds;
};

static void *zero_map_unmap_loop(void *arg)
{
	struct zero_race *z = arg;

	while (now() < z->end) {
		/* private pages of zeroes; advise maps the KSM zero page */
		memset(z->mem, 1, NP * psize());
		memset(z->mem, 0, NP * psize());
		madvise(z->mem, NP * psize(), MADV_UPM_MERGEABLE);
		/* a write to a KSM zero page unmaps it again */
		for (int i = 0; i < NP; i++)
			z->mem[i * psize()] = 1;
		z->rounds++;
	}
	return NULL;
}

/*
 * fork() while another thread maps and unmaps KSM zero pages: once every
 * process has unmapped them, ksm_zero_pages must be back where it was.
 * The child's count is copied with the mm before fork takes the parent's
 * mmap lock, so a zero page mapped or unmapped in that window would be
 * counted wrongly in the child.
 */
TEST_F_TIMEOUT(mx, race_fork_zero_pages, 300)
{
	struct zero_race z = { .mem = self->mem };
	long zero = ksm_counter("ksm_zero_pages");
	int forks = 0, status;
	pthread_t th;
	pid_t pid;

	if (zero < 0)
		SKIP(return, "no ksm_zero_pages counter");
	z.end = now() + RACE_SECS;
	ASSERT_EQ(0, pthread_create(&th, NULL, zero_map_unmap_loop, &z));
	while (now() < z.end) {
		pid = fork();
		ASSERT_LE(0, pid);
		if (!pid)
			_exit(0);
		ASSERT_EQ(pid, waitpid(pid, &status, 0));
		forks++;
	}
	pthread_join(th, NULL);
	ASSERT_EQ(0, munmap(self->mem, NP * psize()));
	self->mem = NULL;
	TH_LOG("%d forks, %d zero-page rounds", forks, z.rounds);
	EXPECT_EQ(zero, ksm_counter("ksm_zero_pages"));
}

/* Two processes advise the same content at the same moment. */
static void two_advisers(struct __test_metadata *_metadata,
			 struct _test_data_mx *self, uint64_t seed)
{
	struct peer *a = &self->peer[0], *b = &self->peer[1];

	ASSERT_EQ(0, peer_start(a, seed, false, NULL));
	ASSERT_EQ(0, peer_start(b, seed, false, NULL));
	ASSERT_EQ(0, peer_send(a, OP_ADVISE, 0, 0, 0));
	ASSERT_EQ(0, peer_send(b, OP_ADVISE, 0, 0, 0));
	EXPECT_EQ(0, peer_wait(a));
	EXPECT_EQ(0, peer_wait(b));
	ASSERT_EQ(0, peer_pfns(a));
	ASSERT_EQ(0, peer_pfns(b));
	for (int i = 0; i < NP; i++) {
		EXPECT_NE(0, a->pfn[i]);
		EXPECT_EQ(a->pfn[i], b->pfn[i]);
	}
	EXPECT_EQ(0, peer_mismatches(a));
	EXPECT_EQ(0, peer_mismatches(b));
	EXPECT_EQ(0, peer_stop(a));
	EXPECT_EQ(0, peer_stop(b));
}

TEST_F_TIMEOUT(mx, race_two_advisers, 300)
{
	time_t end = now() + RACE_SECS;
	int rounds = 0;

	while (now() < end || rounds < 2)
		two_advisers(_metadata, self, 1200 + rounds++);
	TH_LOG("%d rounds", rounds);
}

TEST_F_TIMEOUT(mx, race_advisers_with_ksmd, 300)
{
	time_t end = now() + RACE_SECS;
	int rounds = 0;

	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/sleep_millisecs", "0"));
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/pages_to_scan", "10000"));
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/run", "1"));
	while (now() < end || rounds < 2)
		two_advisers(_metadata, self, 1300 + rounds++);
	TH_LOG("%d rounds", rounds);
}

static void *run2_loop(void *arg)
{
	while (!stop_flag) {
		write_str("/sys/kernel/mm/ksm/run", "2");
		write_str("/sys/kernel/mm/ksm/run", "0");
	}
	return NULL;
}

/* "echo 2 > ksm/run" in the middle of advise calls. */
TEST_F_TIMEOUT(mx, race_ksm_run_2, 300)
{
	time_t end = now() + RACE_SECS;
	struct peer *a = &self->peer[0], *b = &self->peer[1];
	pthread_t th;
	int rounds = 0;

	stop_flag = 0;
	ASSERT_EQ(0, pthread_create(&th, NULL, run2_loop, NULL));
	while (now() < end || rounds < 2) {
		uint64_t seed = 1400 + rounds++;

		ASSERT_EQ(0, peer_start(a, seed, false, NULL));
		ASSERT_EQ(0, peer_start(b, seed, false, NULL));
		ASSERT_EQ(0, peer_send(a, OP_ADVISE, 0, 0, 0));
		ASSERT_EQ(0, peer_send(b, OP_ADVISE, 0, 0, 0));
		EXPECT_EQ(0, peer_wait(a));
		EXPECT_EQ(0, peer_wait(b));
		EXPECT_EQ(0, peer_mismatches(a));
		EXPECT_EQ(0, peer_mismatches(b));
		EXPECT_EQ(0, peer_stop(a));
		EXPECT_EQ(0, peer_stop(b));
	}
	stop_flag = 1;
	pthread_join(th, NULL);
	TH_LOG("%d rounds", rounds);
	/* with run back at 0, advising merges again */
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/run", "0"));
	two_advisers(_metadata, self, 1499);
}

/*
 * Bad input: one case per row of the admin guide's table. Each checks the
 * errno and that nothing in the range changed: content, no KSM page, no
 * VM_MERGEABLE ("mg" in smaps) and no merge pass (the calls counter).
 */
enum { K_UNALIGNED, K_WRAP, K_LEN_ROUNDS_TO_0, K_HUGE_LEN, K_HOLE,
	K_UNMAPPED, K_SHARED, K_MIXED, K_PFNMAP, K_HUGETLB,
	K_ZERO_LEN };

/* Where the bad-input cases map their range: nothing else is near. */
#define BAD_BASE	(1UL << 40)

FIXTURE(bad) {
	char *mem;
};

FIXTURE_VARIANT(bad) {
	int kind;
	int err;
};

FIXTURE_VARIANT_ADD(bad, unaligned_start) {
	.kind = K_UNALIGNED, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, end_overflows) {
	.kind = K_WRAP, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, length_rounds_to_0) {
	.kind = K_LEN_ROUNDS_TO_0, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, huge_length) {
	.kind = K_HUGE_LEN, .err = ENOMEM
};
FIXTURE_VARIANT_ADD(bad, hole_in_range) {
	.kind = K_HOLE, .err = ENOMEM
};
FIXTURE_VARIANT_ADD(bad, unmapped_range) {
	.kind = K_UNMAPPED, .err = ENOMEM
};
FIXTURE_VARIANT_ADD(bad, shared_mapping) {
	.kind = K_SHARED, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, private_and_shared) {
	.kind = K_MIXED, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, pfnmap_vvar) {
	.kind = K_PFNMAP, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, hugetlb_mapping) {
	.kind = K_HUGETLB, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, zero_length) {
	.kind = K_ZERO_LEN, .err = 0
};

FIXTURE_SETUP(bad)
{
	if (getuid())
		SKIP(return, "needs root for PFNs");
	if (upm_counter("calls") < 0)
		SKIP(return, "no /sys/kernel/mm/upm: no CONFIG_UPM");
	self->mem = mmap((void *)BAD_BASE, NP * psize(), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			 -1, 0);
	ASSERT_EQ((void *)BAD_BASE, self->mem);
	fill(self->mem, NP, 130);
}

FIXTURE_TEARDOWN(bad)
{
}

/* VMAs starting in [start, end) with VM_MERGEABLE set. */
static int mergeable_vmas(char *start, char *end)
{
	char line[512];
	unsigned long a = 0, b;
	int n = 0, in = 0;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		/* a VMA's first line: "start-end perms offset dev ..." */
		if (sscanf(line, "%lx-%lx ", &a, &b) == 2 &&
		    !strchr(line, ':')) {
			in = a >= (uintptr_t)start && a < (uintptr_t)end;
			continue;
		}
		if (in && !strncmp(line, "VmFlags:", 8) && strstr(line, " mg"))
			n++;
	}
	fclose(f);
	return n;
}

/* The [vvar] mapping (VM_PFNMAP | VM_IO), or NULL. */
static char *find_vvar(void)
{
	char line[512];
	unsigned long a, b;
	char *found = NULL;
	FILE *f = fopen("/proc/self/maps", "r");

	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "[vvar]") &&
		    sscanf(line, "%lx-%lx", &a, &b) == 2) {
			found = (char *)a;
			break;
		}
	fclose(f);
	return found;
}

TEST_F(bad, row)
{
	char *mem = self->mem, *addr = mem, *m;
	size_t len = NP * psize();
	int intact = NP, r, err;
	long calls;

	switch (variant->kind) {
	case K_UNALIGNED:
		addr = mem + 1;
		len = psize();
		break;
	case K_WRAP:
		len = -(size_t)psize();
		break;
	case K_LEN_ROUNDS_TO_0:
		len = SIZE_MAX;
		break;
	case K_HUGE_LEN:
		len = 1UL << 45;
		break;
	case K_HOLE:
		ASSERT_EQ(0, munmap(mem + 16 * psize(), 16 * psize()));
		intact = 48;
		break;
	case K_UNMAPPED:
		addr = mem + NP * psize();
		len = 4 * psize();
		break;
	case K_SHARED:
	case K_MIXED:
		m = mmap(mem + 48 * psize(), 16 * psize(),
			 PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		ASSERT_EQ(mem + 48 * psize(), m);
		fill(m, 16, 131);
		intact = 48;
		if (variant->kind == K_SHARED) {
			addr = m;
			len = 16 * psize();
		}
		break;
	case K_PFNMAP:
		addr = find_vvar();
		if (!addr)
			SKIP(return, "no [vvar] mapping");
		len = psize();
		break;
	case K_HUGETLB:
		addr = mmap(NULL, 2UL << 20, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		if (addr == MAP_FAILED)
			SKIP(return, "no huge page for MAP_HUGETLB: %s",
			     strerror(errno));
		memset(addr, 7, 2UL << 20);
		len = 2UL << 20;
		break;
	case K_ZERO_LEN:
		len = 0;
		break;
	}
	calls = upm_counter("calls");
	errno = 0;
	r = madvise(addr, len, MADV_UPM_MERGEABLE);
	err = errno;
	if (variant->err) {
		EXPECT_EQ(-1, r);
		EXPECT_EQ(variant->err, err);
	} else {
		EXPECT_EQ(0, r);
	}
	if (r)
		TH_LOG("errno %d (%s)", err, strerror(err));
	EXPECT_EQ(0, upm_counter("calls") - calls);
	EXPECT_EQ(0, mergeable_vmas(mem, mem + NP * psize()));
	for (int i = 0; i < NP; i++)
		EXPECT_FALSE(is_ksm(mem + i * psize()));
	if (variant->kind == K_HOLE) {
		EXPECT_EQ(16, good_range(mem, 130, 0, 16));
		EXPECT_EQ(32, good_range(mem, 130, 32, NP));
	} else {
		EXPECT_EQ(intact, good_range(mem, 130, 0, intact));
	}
	if (variant->kind == K_SHARED || variant->kind == K_MIXED)
		EXPECT_TRUE(same_as(mem + 48 * psize(), 16, 131));
	if (variant->kind == K_HUGETLB)
		EXPECT_EQ(7, addr[12345]);
	if (variant->kind == K_PFNMAP)
		EXPECT_EQ(0, mergeable_vmas(addr, addr + psize()));
}

int main(int argc, char **argv)
{
	upm_require_kernel();
	return test_harness_run(argc, argv);
}

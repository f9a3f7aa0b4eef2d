// SPDX-License-Identifier: GPL-2.0
/*
 * The fault matrix of MADV_UPM_MERGEABLE: merged pages must survive
 * everything KSM pages survive (fork, munmap, mremap, mprotect,
 * MADV_DONTNEED/FREE/PAGEOUT, swap, migration, compaction, THP, mlock,
 * userfaultfd, pins, memory cgroups, max_page_sharing). The fixture and
 * its peers are in upm_mx.h. Needs root.
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

#include "../../../../mm/gup_test.h"
#include "upm_mx.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#define MX_MPOL_DEFAULT		0
#define MX_MPOL_BIND		2
#define MX_MPOL_MF_MOVE_ALL	(1 << 2)

#define CG		"/sys/fs/cgroup"

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

/* The value of @key in file @file of cgroup CG/name, or -1. */
static long cg_read(const char *name, const char *file, const char *key)
{
	char path[160];

	snprintf(path, sizeof(path), CG "/%s/%s", name, file);
	return read_key(path, key);
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
 * mremap to a new place: as for ksmd's pages, moving a range unmerges it
 * first (KSM's rule, so stale rmap addresses never meet new pages);
 * content is kept and advising the new address merges again.
 */
TEST_F_TIMEOUT(mx, mremap_move_remerges, 300)
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
	EXPECT_EQ(0, shared_with(p, &self->peer[0]));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	ASSERT_EQ(0, madvise(p, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared_with(p, &self->peer[0]));
}

/* mremap to twice the size: the new half merges once it holds content. */
TEST_F_TIMEOUT(mx, mremap_grow_merges_new_half, 300)
{
	char *p;

	merge_with_peer(self, 123);
	p = mremap(self->mem, NP * psize(), 2 * NP * psize(), MREMAP_MAYMOVE);
	ASSERT_NE(MAP_FAILED, p);
	self->mem = p;
	self->len = 2 * NP * psize();
	EXPECT_EQ(NP, good_range(p, 123, 0, NP));
	for (int i = NP; i < 2 * NP; i++)
		EXPECT_EQ(0, pfn_of(p + i * psize()));
	/* the new half, once it holds the peer's content, merges with it */
	fill(p + NP * psize(), NP, 123);
	ASSERT_EQ(0, madvise(p, 2 * NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared_with(p, &self->peer[0]));
	EXPECT_EQ(NP, shared_with(p + NP * psize(), &self->peer[0]));
	EXPECT_EQ(NP, good_range(p + NP * psize(), 123, 0, NP));
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
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
	ASSERT_EQ(0, mprotect(self->mem, NP * psize(), PROT_NONE));
	/* documented: PROT_NONE ranges are accepted */
	EXPECT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
	ASSERT_EQ(0, mprotect(self->mem, NP * psize(), PROT_READ | PROT_WRITE));
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 104, 0, NP));
	self->mem[5 * psize()] ^= 1;
	EXPECT_EQ(NP - 1, shared_with(self->mem, &self->peer[0]));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
}

/*
 * Sealed memory (mseal) is not an error: as for MADV_MERGEABLE, sealing
 * forbids changing the mapping, not merging its pages.
 */
TEST_F_TIMEOUT(mx, sealed_range_merges, 300)
{
	ASSERT_EQ(0, peer_spawn(&self->peer[0], 120, true, NULL));
	fill(self->mem, NP, 120);
	if (syscall(462, self->mem, NP * psize(), 0))
		SKIP(return, "no mseal(): %s", strerror(errno));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 120, 0, NP));
	self->mem[0] ^= 1;
	EXPECT_EQ(NP - 1, shared_with(self->mem, &self->peer[0]));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	/* a sealed range cannot be unmapped: the fixture must not try */
	self->mem = NULL;
}

/* A range whose pages were merged while PROT_NONE reads them back. */
TEST_F_TIMEOUT(mx, advise_prot_none_merges, 300)
{
	ASSERT_EQ(0, peer_spawn(&self->peer[0], 105, true, NULL));
	fill(self->mem, NP, 105);
	ASSERT_EQ(0, mprotect(self->mem, NP * psize(), PROT_NONE));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
	ASSERT_EQ(0, mprotect(self->mem, NP * psize(), PROT_READ | PROT_WRITE));
	EXPECT_EQ(NP, good_range(self->mem, 105, 0, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
}

/* MADV_DONTNEED drops this mapping of merged pages only. */
TEST_F_TIMEOUT(mx, dontneed_merged, 300)
{
	merge_with_peer(self, 106);
	ASSERT_EQ(0, madvise(self->mem, 16 * psize(), MADV_DONTNEED));
	for (int i = 0; i < 16; i++)
		EXPECT_EQ(0, pfn_of(self->mem + i * psize()));
	for (int i = 0; i < 16; i++)
		EXPECT_TRUE(is_zero_page_content(self->mem + i * psize()));
	EXPECT_EQ(NP - 16, shared_range(self->mem, &self->peer[0], 16, NP));
	EXPECT_EQ(NP - 16, good_range(self->mem, 106, 16, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
}

/* MADV_FREE of merged pages keeps or zeroes them, and nothing else. */
TEST_F_TIMEOUT(mx, free_merged, 300)
{
	merge_with_peer(self, 124);
	ASSERT_EQ(0, madvise(self->mem + 16 * psize(), 16 * psize(),
			     MADV_FREE));
	for (int i = 16; i < 32; i++) {
		char *pg = self->mem + i * psize();

		EXPECT_TRUE(page_is(pg, i, 124, 0) || is_zero_page_content(pg));
	}
	EXPECT_EQ(32, shared_range(self->mem, &self->peer[0], 32, NP));
	EXPECT_EQ(32, good_range(self->mem, 124, 32, NP));
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
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
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
	peer_swapped = peer_call(&self->peer[0], PEER_SWAPPED, 0, 0, 0);
	TH_LOG("swapped out: %d here, %ld in the peer", swapped, peer_swapped);
	EXPECT_LT(0, swapped);
	EXPECT_LT(0, peer_swapped);
	/* the peer writes half its pages while this process swaps in */
	ASSERT_EQ(0, peer_send(&self->peer[0], PEER_WRITE, 0, NP / 2, 0x77));
	EXPECT_EQ(NP, good_range(self->mem, 109, 0, NP));
	EXPECT_EQ(0, peer_wait(&self->peer[0]));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 109, 0, NP));
	/*
	 * As with ksmd, a KSM page read back from swap comes back as a
	 * private page in each sharer; advising again merges them.
	 */
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(0, peer_call(&self->peer[0], PEER_ADVISE, 0, 0, 0));
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
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
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
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
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

		ASSERT_EQ(0, peer_spawn(&self->peer[0], seed, true, NULL));
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
		n = shared_with(self->mem, &self->peer[0]);
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
	ASSERT_EQ(0, peer_spawn(&self->peer[0], 112, true, NULL));
	fill(self->mem, NP, 112);
	ASSERT_EQ(0, mlock(self->mem, NP * psize()));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
	ASSERT_EQ(0, munlock(self->mem, NP * psize()));
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 112, 0, NP));
	/*
	 * mlock of a merged writable private range faults every page in
	 * for writing (populate breaks COW): this process gets private
	 * copies, the peer keeps its frames and bytes.
	 */
	ASSERT_EQ(0, mlock(self->mem, NP * psize()));
	EXPECT_EQ(0, shared_with(self->mem, &self->peer[0]));
	for (int i = 0; i < NP; i++)
		EXPECT_FALSE(is_ksm(self->mem + i * psize()));
	EXPECT_EQ(NP, good_range(self->mem, 112, 0, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	/* advising the locked range merges it again */
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
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
	ASSERT_EQ(0, peer_spawn(&self->peer[0], 113, true, NULL));
	fill(self->mem, NP, 113);
	reg.range.start = (uintptr_t)self->mem;
	reg.range.len = NP * psize();
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	ASSERT_EQ(0, ioctl(uffd, UFFDIO_REGISTER, &reg));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
	self->mem[psize()] ^= 1;
	self->mem[psize()] ^= 1;
	EXPECT_EQ(NP - 1, shared_with(self->mem, &self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 113, 0, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	close(uffd);
}

/*
 * Pages held by a pipe through vmsplice are not merged while held, and the
 * candidates they matched are given back writable, not left KSM pages.
 */
TEST_F_TIMEOUT(mx, vmsplice_held_not_merged, 300)
{
	struct iovec iov = { .iov_base = NULL, .iov_len = 16 * psize() };
	char *buf = malloc(16 * psize());
	ssize_t got = 0, r;
	int fds[2], i;
	long undone;

	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, pipe(fds));
	ASSERT_EQ(0, peer_spawn(&self->peer[0], 114, true, NULL));
	fill(self->mem, NP, 114);
	iov.iov_base = self->mem;
	ASSERT_EQ(16 * psize(), vmsplice(fds[1], &iov, 1, 0));
	undone = upm_counter("publishes_undone");
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(0, shared_range(self->mem, &self->peer[0], 0, 16));
	EXPECT_EQ(NP - 16, shared_range(self->mem, &self->peer[0], 16, NP));
	/* The peer's pages it matched are not left write-protected alone */
	ASSERT_EQ(0, peer_pfns(&self->peer[0]));
	for (i = 0; i < 16; i++)
		EXPECT_EQ(0, self->peer[0].pfn[i]) TH_LOG("peer page %d", i);
	EXPECT_EQ(16, upm_counter("publishes_undone") - undone);
	while (got < (ssize_t)(16 * psize())) {
		r = read(fds[0], buf + got, 16 * psize() - got);
		ASSERT_LT(0, r);
		got += r;
	}
	EXPECT_EQ(16, good_range(buf, 114, 0, 16));
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
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
	ASSERT_EQ(0, peer_spawn(&self->peer[0], 115, true, NULL));
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
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
	EXPECT_EQ(NP, good_range(self->mem, 115, 0, NP));
	EXPECT_EQ(0, peer_mismatches(&self->peer[0]));
	close(fd);
}

/*
 * Memory cgroups: two sharers, peers 0 and 1, in groups upm-mx-a and
 * upm-mx-b (and a third group upm-mx-c for a third sharer), removed again
 * by memcg_cleanup() in the fixture's teardown.
 */
static const char * const memcg_groups[] = {
	"upm-mx-a", "upm-mx-b", "upm-mx-c",
};

static void memcg_cleanup(void)
{
	for (int i = 0; i < 3; i++)
		cg_remove(memcg_groups[i]);
}

/* Peers 0 and 1 in groups a and b, every page merged into one frame. */
static void memcg_sharers(struct __test_metadata *_metadata,
			  struct peer *peer)
{
	char pa[160], pb[160];

	ASSERT_NE(NULL, cg_make("upm-mx-a", pa, sizeof(pa)));
	ASSERT_NE(NULL, cg_make("upm-mx-b", pb, sizeof(pb)));
	ASSERT_EQ(0, peer_spawn(&peer[0], 116, true, pa));
	ASSERT_EQ(0, peer_spawn(&peer[1], 116, true, pb));
	/* Peer 0's candidates were replaced by the shared copies since */
	ASSERT_EQ(0, peer_pfns(&peer[0]));
	for (int i = 0; i < NP; i++) {
		ASSERT_NE(0, peer[0].pfn[i]);
		ASSERT_EQ(peer[0].pfn[i], peer[1].pfn[i]);
	}
}

/* Peers 0 and 1 still hold their content in one frame per page. */
static void memcg_still_shared(struct __test_metadata *_metadata,
			       struct peer *peer)
{
	EXPECT_EQ(0, peer_mismatches(&peer[0]));
	EXPECT_EQ(0, peer_mismatches(&peer[1]));
	ASSERT_EQ(0, peer_pfns(&peer[0]));
	ASSERT_EQ(0, peer_pfns(&peer[1]));
	for (int i = 0; i < NP; i++) {
		EXPECT_NE(0, peer[0].pfn[i]);
		EXPECT_EQ(peer[0].pfn[i], peer[1].pfn[i]);
	}
}

/* A page merged from two groups is charged once (to one of them). */
TEST_F_TIMEOUT(mx, memcg_charged_once, 300)
{
	long anon_a, anon_b;

	if (!have_memcg())
		SKIP(return, "no cgroup2 memory controller at " CG);
	self->cleanup = memcg_cleanup;
	memcg_sharers(_metadata, self->peer);
	/* memcg statistics are flushed every 2 seconds */
	sleep(3);
	anon_a = cg_read("upm-mx-a", "memory.stat", "anon");
	anon_b = cg_read("upm-mx-b", "memory.stat", "anon");
	TH_LOG("anon charged: a %ld, b %ld bytes", anon_a, anon_b);
	/* NP pages in two processes: charged once, not twice */
	EXPECT_GE(anon_a + anon_b, (long)(NP * psize()));
	EXPECT_GT((long)(2 * NP * psize()), anon_a + anon_b);
}

/* A sharer that leaves its group, then removed, leaves the other intact */
TEST_F_TIMEOUT(mx, memcg_sharer_leaves_group, 300)
{
	char pid_s[16];

	if (!have_memcg())
		SKIP(return, "no cgroup2 memory controller at " CG);
	self->cleanup = memcg_cleanup;
	memcg_sharers(_metadata, self->peer);
	snprintf(pid_s, sizeof(pid_s), "%d", self->peer[0].pid);
	ASSERT_EQ(0, write_str(CG "/cgroup.procs", pid_s));
	EXPECT_EQ(0, rmdir(CG "/upm-mx-a"));
	memcg_still_shared(_metadata, self->peer);
}

/* A third sharer OOM-killed in a small group leaves the others intact. */
TEST_F_TIMEOUT(mx, memcg_oom_killed_sharer, 300)
{
	struct peer *c = &self->peer[2];
	char pc[160];

	if (!have_memcg())
		SKIP(return, "no cgroup2 memory controller at " CG);
	self->cleanup = memcg_cleanup;
	memcg_sharers(_metadata, self->peer);
	ASSERT_NE(NULL, cg_make("upm-mx-c", pc, sizeof(pc)));
	ASSERT_EQ(0, write_str(CG "/upm-mx-c/memory.max", "16M"));
	write_str(CG "/upm-mx-c/memory.swap.max", "0");
	ASSERT_EQ(0, peer_spawn(c, 116, true, pc));
	/* It merged into the others' frames */
	for (int i = 0; i < NP; i++)
		EXPECT_EQ(self->peer[0].pfn[i], c->pfn[i]);
	/* 256 MiB in a 16 MiB group: killed before it can answer */
	EXPECT_EQ(-1000, peer_call(c, PEER_HOG, 0, 0, 256));
	EXPECT_EQ(-1, peer_stop(c));
	EXPECT_TRUE(WIFSIGNALED(c->status) && WTERMSIG(c->status) == SIGKILL);
	EXPECT_LE(1, cg_read("upm-mx-c", "memory.events", "oom_kill"));
	memcg_still_shared(_metadata, self->peer);
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

int main(int argc, char **argv)
{
	upm_require_kernel();
	return test_harness_run(argc, argv);
}

// SPDX-License-Identifier: GPL-2.0
/*
 * Tests for MADV_UPM_MERGEABLE: identical pages are merged during the
 * madvise call. Sharing is proven by PFNs (/proc/self/pagemap), KPF_KSM
 * (/proc/kpageflags) and by exact moves of the UPM and KSM counters.
 * Needs root (PFNs, kpageflags, KSM knobs) and CONFIG_UPM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "upm_util.h"

#define NPAGES		PEER_PAGES

FIXTURE(upm) {
	char *mem;
	/* Processes holding the same content (upm_util.h) */
	struct peer twin, other;
	struct knobs knobs;
};

FIXTURE_SETUP(upm)
{
	if (getuid())
		SKIP(return, "needs root for PFNs and KSM knobs");
	if (upm_counter("calls") < 0)
		SKIP(return, "no /sys/kernel/mm/upm: no CONFIG_UPM");
	knobs_save(&self->knobs);
	/* ksmd off unless a test turns it on: counters then move exactly */
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/run", "0"));
	self->mem = map_anon(NPAGES);
	ASSERT_NE(NULL, self->mem);
}

FIXTURE_TEARDOWN(upm)
{
	peer_stop(&self->twin);
	peer_stop(&self->other);
	if (self->mem)
		munmap(self->mem, NPAGES * psize());
	knobs_restore(&self->knobs);
}

#define start_twin(self, seed)					\
	ASSERT_EQ(0, peer_spawn(&(self)->twin, seed, true, NULL))

#define count_shared_with_twin(self) shared_with((self)->mem, &(self)->twin)

/*
 * The second process's madvise merges every page with the first's: the
 * first's candidates become KSM pages, and the second's merge into them.
 */
TEST_F(upm, two_processes_merge)
{
	long merged, stable, sharing, shared, mine, candidates;

	start_twin(self, 1);
	mine = read_ksm_stat("upm_merged_pages");
	merged = upm_counter("pages_merged");
	stable = upm_counter("pages_stable_new");
	candidates = upm_counter("index_candidates");
	sharing = ksm_counter("pages_sharing");
	shared = ksm_counter("pages_shared");

	fill(self->mem, NPAGES, 1);
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));

	EXPECT_EQ(NPAGES, count_shared_with_twin(self));
	EXPECT_EQ(NPAGES, upm_counter("pages_merged") - merged);
	EXPECT_EQ(NPAGES, upm_counter("pages_stable_new") - stable);
	EXPECT_EQ(-NPAGES, upm_counter("index_candidates") - candidates);
	EXPECT_EQ(NPAGES, ksm_counter("pages_sharing") - sharing);
	EXPECT_EQ(NPAGES, ksm_counter("pages_shared") - shared);
	EXPECT_EQ(NPAGES, read_ksm_stat("upm_merged_pages") - mine);
	EXPECT_TRUE(same_as(self->mem, NPAGES, 1));
	EXPECT_EQ(0, peer_mismatches(&self->twin));
}

/* Pages of many_batches_twins_and_candidates: 15 batches and a part */
#define MB_PAGES	1000

/*
 * Every fourth page unique to process @who, the others the same in all:
 * so that each batch mixes pages merged into a shared twin and pages that
 * become candidates.
 */
static void fill_mixed(char *p, int who)
{
	fill(p, MB_PAGES, 77);
	for (int i = 3; i < MB_PAGES; i += 4) {
		memset(p + i * psize(), 0x40 + who, psize());
		memcpy(p + i * psize(), &i, sizeof(i));
	}
}

static bool is_mixed(const char *p, int who)
{
	char *ref = malloc(MB_PAGES * psize());
	bool same;

	if (!ref)
		return false;
	fill_mixed(ref, who);
	same = !memcmp(p, ref, MB_PAGES * psize());
	free(ref);
	return same;
}

/*
 * A child that advises its own copy of the mixed content, reports where
 * it is, and exits once the pipe @go is closed. Return: its pid, its address in
 * *@addr.
 */
static pid_t advised_child(int who, int go[2], char **addr)
{
	int ready[2];
	char *p;
	pid_t pid;

	if (pipe(ready))
		return -1;
	pid = fork();
	if (!pid) {
		char c;

		close(go[1]);
		p = map_anon(MB_PAGES);
		if (p) {
			fill_mixed(p, who);
			if (madvise(p, MB_PAGES * psize(), MADV_UPM_MERGEABLE))
				p = NULL;
		}
		if (write(ready[1], &p, sizeof(p)) != sizeof(p))
			_exit(1);
		while (read(go[0], &c, 1) > 0)
			;
		_exit(0);
	}
	close(ready[1]);
	if (pid > 0 && read(ready[0], addr, sizeof(*addr)) != sizeof(*addr))
		*addr = NULL;
	close(ready[0]);
	return pid;
}

/*
 * Over many batches, pages merged into shared twins (reserved under the
 * mutex, merged without it) and pages that become candidates (under the
 * mutex) alternate within each batch. Each page ends with exactly one
 * rmap_item: in its twin's stable node, or as a candidate.
 */
TEST_F(upm, many_batches_twins_and_candidates)
{
	int twins = MB_PAGES - MB_PAGES / 4, go[2], status;
	long merged, cands, items, merging;
	char *p, *kaddr[2];
	pid_t kid[2];

	ASSERT_EQ(0, pipe(go));
	/* The first's pages become candidates, the second's shared twins */
	for (int k = 0; k < 2; k++) {
		kid[k] = advised_child(k + 1, go, &kaddr[k]);
		ASSERT_LT(0, kid[k]);
		ASSERT_NE(NULL, kaddr[k]);
	}
	p = map_anon(MB_PAGES);
	ASSERT_NE(NULL, p);
	fill_mixed(p, 0);
	merged = upm_counter("pages_merged");
	cands = upm_counter("pages_candidate");
	items = read_ksm_stat("ksm_rmap_items");
	merging = read_ksm_stat("ksm_merging_pages");
	ASSERT_EQ(0, madvise(p, MB_PAGES * psize(), MADV_UPM_MERGEABLE));

	EXPECT_EQ(twins, upm_counter("pages_merged") - merged);
	EXPECT_EQ(MB_PAGES - twins, upm_counter("pages_candidate") - cands);
	EXPECT_EQ(MB_PAGES, read_ksm_stat("ksm_rmap_items") - items);
	EXPECT_EQ(twins, read_ksm_stat("ksm_merging_pages") - merging);
	for (int i = 0; i < MB_PAGES; i++) {
		char *page = p + i * psize();

		if (i % 4 == 3) {
			EXPECT_FALSE(is_ksm(page));
			continue;
		}
		EXPECT_TRUE(is_ksm(page));
		EXPECT_EQ(pfn_in(kid[1], kaddr[1] + i * psize()),
			  pfn_of(page));
	}
	EXPECT_TRUE(is_mixed(p, 0));
	close(go[1]);
	for (int k = 0; k < 2; k++) {
		ASSERT_EQ(kid[k], waitpid(kid[k], &status, 0));
		EXPECT_EQ(0, status);
	}
	close(go[0]);
	munmap(p, MB_PAGES * psize());
}

/*
 * The first adviser's pages become candidates: they stay ordinary
 * writable pages in their own frames, and writing them takes no fault.
 */
TEST_F(upm, first_adviser_pages_stay_writable)
{
	long stable = upm_counter("pages_stable_new");
	long cands = upm_counter("pages_candidate");
	long in_index = upm_counter("index_candidates");
	long shared = ksm_counter("pages_shared");
	long mine = read_ksm_stat("upm_stable_pages");
	uint64_t pfn[NPAGES];
	struct rusage before, after;

	fill(self->mem, NPAGES, 2);
	for (int i = 0; i < NPAGES; i++)
		pfn[i] = pfn_of(self->mem + i * psize());
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NPAGES, upm_counter("pages_candidate") - cands);
	EXPECT_EQ(NPAGES, upm_counter("index_candidates") - in_index);
	EXPECT_EQ(0, upm_counter("pages_stable_new") - stable);
	EXPECT_EQ(0, ksm_counter("pages_shared") - shared);
	EXPECT_EQ(0, read_ksm_stat("upm_stable_pages") - mine);
	for (int i = 0; i < NPAGES; i++) {
		EXPECT_FALSE(is_ksm(self->mem + i * psize()));
		EXPECT_EQ(pfn[i], pfn_of(self->mem + i * psize()));
	}
	EXPECT_TRUE(same_as(self->mem, NPAGES, 2));

	ASSERT_EQ(0, getrusage(RUSAGE_SELF, &before));
	for (int i = 0; i < NPAGES; i++)
		self->mem[i * psize()] ^= 1;
	ASSERT_EQ(0, getrusage(RUSAGE_SELF, &after));
	EXPECT_EQ(before.ru_minflt, after.ru_minflt);
	for (int i = 0; i < NPAGES; i++)
		EXPECT_EQ(pfn[i], pfn_of(self->mem + i * psize()));
}

/* Different content is never merged. */
TEST_F(upm, distinct_content_not_merged)
{
	long merged;

	start_twin(self, 3);
	merged = upm_counter("pages_merged");
	fill(self->mem, NPAGES, 4);
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(0, upm_counter("pages_merged") - merged);
	EXPECT_EQ(0, count_shared_with_twin(self));
	EXPECT_TRUE(same_as(self->mem, NPAGES, 4));
	EXPECT_EQ(0, peer_mismatches(&self->twin));
}

/*
 * A candidate written to after its advice is not merged, and is dropped:
 * it is compared before it becomes a KSM page, so it keeps its frame (no
 * copy replaces it, no publish is undone), and it is not counted as a
 * hash collision.
 */
TEST_F(upm, changed_candidate_not_merged)
{
	long merged, dropped, undone, collisions;
	unsigned long pfn[NPAGES];

	fill(self->mem, NPAGES, 30);
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	fill(self->mem, NPAGES, 31);
	for (int i = 0; i < NPAGES; i++)
		pfn[i] = pfn_of(self->mem + i * psize());
	merged = upm_counter("pages_merged");
	dropped = upm_counter("candidates_dropped");
	undone = upm_counter("publishes_undone");
	collisions = upm_counter("hash_collisions");
	start_twin(self, 30);
	EXPECT_EQ(0, upm_counter("pages_merged") - merged);
	EXPECT_EQ(NPAGES, upm_counter("candidates_dropped") - dropped);
	EXPECT_EQ(0, upm_counter("publishes_undone") - undone);
	EXPECT_EQ(0, upm_counter("hash_collisions") - collisions);
	for (int i = 0; i < NPAGES; i++)
		EXPECT_EQ(pfn[i], pfn_of(self->mem + i * psize()));
	EXPECT_EQ(0, count_shared_with_twin(self));
	for (int i = 0; i < NPAGES; i++)
		EXPECT_FALSE(is_ksm(self->mem + i * psize()));
	EXPECT_TRUE(same_as(self->mem, NPAGES, 31));
	EXPECT_EQ(0, peer_mismatches(&self->twin));
}

/* An unmapped candidate is dropped when a twin looks it up, not merged. */
TEST_F(upm, unmapped_candidate_dropped)
{
	long merged, dropped, in_index;

	fill(self->mem, NPAGES, 32);
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	ASSERT_EQ(0, munmap(self->mem, NPAGES * psize()));
	self->mem = NULL;
	merged = upm_counter("pages_merged");
	dropped = upm_counter("candidates_dropped");
	in_index = upm_counter("index_candidates");
	start_twin(self, 32);
	EXPECT_EQ(0, upm_counter("pages_merged") - merged);
	EXPECT_EQ(NPAGES, upm_counter("candidates_dropped") - dropped);
	/* Ours left the index, the twin's entered it */
	EXPECT_EQ(0, upm_counter("index_candidates") - in_index);
	EXPECT_EQ(0, peer_mismatches(&self->twin));
}

/* A candidate leaves the index when its owner exits. */
/*
 * What an exit leaves is freed at exit, or by the prune work half a
 * second later (stale stable nodes, candidates whose rmap_items wait for
 * ksmd): the value of counter @name once it is @want, or after 5 s.
 */
static long after_prune(long (*counter)(const char *), const char *name,
			long want)
{
	long v = counter(name);

	for (int i = 0; i < 50 && v != want; i++) {
		usleep(100 * 1000);
		v = counter(name);
	}
	return v;
}

TEST_F(upm, exited_owner_candidates_leave_index)
{
	long in_index = upm_counter("index_candidates");

	start_twin(self, 33);
	EXPECT_EQ(NPAGES, upm_counter("index_candidates") - in_index);
	EXPECT_EQ(0, peer_stop(&self->twin));
	EXPECT_EQ(in_index,
		  after_prune(upm_counter, "index_candidates", in_index));
}

/* A write after the merge gives the writer a private copy. */
TEST_F(upm, write_after_merge_is_private)
{
	start_twin(self, 5);
	fill(self->mem, NPAGES, 5);
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	ASSERT_EQ(NPAGES, count_shared_with_twin(self));

	memset(self->mem + 3 * psize(), 0x5a, 100);
	EXPECT_NE(pfn_of(self->mem + 3 * psize()), self->twin.pfn[3]);
	EXPECT_FALSE(is_ksm(self->mem + 3 * psize()));
	EXPECT_EQ(0x5a, self->mem[3 * psize() + 99]);
	EXPECT_EQ(NPAGES - 1, count_shared_with_twin(self));
	/* The other process still reads its original bytes. */
	EXPECT_EQ(0, peer_mismatches(&self->twin));
}

/* Zero-filled pages map the shared zero page, without an index entry. */
TEST_F(upm, zero_pages)
{
	long zero, kzero, stable;

	memset(self->mem, 1, NPAGES * psize());
	memset(self->mem, 0, NPAGES * psize());
	zero = upm_counter("pages_zero");
	kzero = ksm_counter("ksm_zero_pages");
	stable = upm_counter("pages_stable_new");
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NPAGES, upm_counter("pages_zero") - zero);
	EXPECT_EQ(NPAGES, ksm_counter("ksm_zero_pages") - kzero);
	EXPECT_EQ(0, upm_counter("pages_stable_new") - stable);
	for (int i = 0; i < NPAGES; i++) {
		uint64_t pfn = pfn_of(self->mem + i * psize());

		EXPECT_TRUE(read_kpageflags(pfn) & (1ULL << KPF_ZERO_PAGE));
		EXPECT_EQ(0, self->mem[i * psize() + 7]);
	}
	/* Writing gives a private page again. */
	self->mem[0] = 9;
	EXPECT_EQ(9, self->mem[0]);
	EXPECT_EQ(NPAGES - 1, ksm_counter("ksm_zero_pages") - kzero);
}

/* Two ranges with the same content in one process merge together. */
TEST_F(upm, two_ranges_one_process)
{
	char *b = map_anon(NPAGES);
	long merged = upm_counter("pages_merged");

	ASSERT_NE(NULL, b);
	fill(self->mem, NPAGES, 6);
	fill(b, NPAGES, 6);
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	ASSERT_EQ(0, madvise(b, NPAGES * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NPAGES, upm_counter("pages_merged") - merged);
	for (int i = 0; i < NPAGES; i++)
		EXPECT_EQ(pfn_of(self->mem + i * psize()),
			  pfn_of(b + i * psize()));
	EXPECT_TRUE(same_as(b, NPAGES, 6));
	munmap(b, NPAGES * psize());
}

/*
 * Duplicates within one range merge in one call: the first copy becomes a
 * candidate, the second finds it in the same batch.
 */
TEST_F(upm, duplicates_within_one_range)
{
	long merged = upm_counter("pages_merged");

	fill(self->mem, NPAGES / 2, 34);
	memcpy(self->mem + NPAGES / 2 * psize(), self->mem,
	       NPAGES / 2 * psize());
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NPAGES / 2, upm_counter("pages_merged") - merged);
	for (int i = 0; i < NPAGES / 2; i++) {
		char *a = self->mem + i * psize();
		char *b = a + NPAGES / 2 * psize();

		EXPECT_TRUE(is_ksm(a));
		EXPECT_EQ(pfn_of(a), pfn_of(b));
	}
	EXPECT_TRUE(same_as(self->mem, NPAGES / 2, 34));
	EXPECT_EQ(0, memcmp(self->mem, self->mem + NPAGES / 2 * psize(),
			    NPAGES / 2 * psize()));
}

/*
 * Children forked after the advice still share the parent's pages: their
 * own advice merges nothing (it would free nothing) and adds no second
 * candidate for the same frames, however many children there are.
 */
TEST_F(upm, forked_children_add_no_candidates)
{
	int ready[2], go[2], status, k;
	long in_index, skipped;
	pid_t pids[4];
	char c;

	fill(self->mem, NPAGES, 35);
	in_index = upm_counter("index_candidates");
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	ASSERT_EQ(NPAGES, upm_counter("index_candidates") - in_index);
	skipped = upm_counter("skipped_ksm");
	ASSERT_EQ(0, pipe(ready));
	ASSERT_EQ(0, pipe(go));
	for (k = 0; k < 4; k++) {
		pids[k] = fork();
		ASSERT_LE(0, pids[k]);
		if (!pids[k]) {
			close(go[1]);
			c = madvise(self->mem, NPAGES * psize(),
				    MADV_UPM_MERGEABLE) ? 'n' : 'y';
			if (write(ready[1], &c, 1) != 1)
				_exit(1);
			/* Stay alive, candidates and all, until counted */
			while (read(go[0], &c, 1) > 0)
				;
			_exit(same_as(self->mem, NPAGES, 35) ? 0 : 2);
		}
	}
	close(go[0]);
	for (k = 0; k < 4; k++) {
		ASSERT_EQ(1, read(ready[0], &c, 1));
		EXPECT_EQ('y', c);
	}
	EXPECT_EQ(NPAGES, upm_counter("index_candidates") - in_index);
	EXPECT_EQ(4 * NPAGES, upm_counter("skipped_ksm") - skipped);
	close(go[1]);
	for (k = 0; k < 4; k++) {
		ASSERT_EQ(pids[k], waitpid(pids[k], &status, 0));
		EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	}
	close(ready[0]);
	close(ready[1]);
	for (int i = 0; i < NPAGES; i++)
		EXPECT_FALSE(is_ksm(self->mem + i * psize()));
	EXPECT_TRUE(same_as(self->mem, NPAGES, 35));
}

/* Only the advised part of a mapping is merged; the rest is untouched. */
TEST_F(upm, partial_range)
{
	long advised, merged;

	start_twin(self, 7);
	advised = upm_counter("pages_advised");
	merged = upm_counter("pages_merged");
	fill(self->mem, NPAGES, 7);
	/* An unaligned length is rounded up to whole pages, as madvise does */
	ASSERT_EQ(0, madvise(self->mem + 8 * psize(), 15 * psize() + 1,
			     MADV_UPM_MERGEABLE));
	EXPECT_EQ(16, upm_counter("pages_advised") - advised);
	EXPECT_EQ(16, upm_counter("pages_merged") - merged);
	EXPECT_EQ(16, count_shared_with_twin(self));
	for (int i = 0; i < NPAGES; i++)
		EXPECT_EQ(i >= 8 && i < 24, is_ksm(self->mem + i * psize()));
	EXPECT_TRUE(same_as(self->mem, NPAGES, 7));
	EXPECT_EQ(0, peer_mismatches(&self->twin));
}

/* Never-touched pages are skipped; MADV_POPULATE_READ does not add them. */
TEST_F(upm, absent_pages_skipped)
{
	long absent = upm_counter("skipped_absent");
	long cands = upm_counter("pages_candidate");

	fill(self->mem, NPAGES / 2, 8);
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(NPAGES / 2, upm_counter("skipped_absent") - absent);
	EXPECT_EQ(NPAGES / 2, upm_counter("pages_candidate") - cands);
}

/* A THP-backed range is split and its subpages merged. */
TEST_F(upm, thp_range)
{
	size_t thp = 2UL << 20, n = thp / getpagesize();
	char *raw, *a, *b;
	uint64_t flags;
	long merged;

	raw = mmap(NULL, 3 * thp, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, raw);
	a = (char *)(((uintptr_t)raw + thp - 1) & ~(thp - 1));
	b = a + thp;
	if (madvise(a, 2 * thp, MADV_HUGEPAGE))
		SKIP(goto out, "no THP support");
	/* Every 4 KiB page of a differs; b holds the same pages as a. */
	for (size_t i = 0; i < thp; i += 4096) {
		*(uint64_t *)(a + i) = i / 4096 + 1;
		*(uint64_t *)(b + i) = i / 4096 + 1;
	}
	flags = read_kpageflags(pfn_of(a));
	if (!(flags & (1ULL << KPF_THP)))
		SKIP(goto out, "kernel did not back the range with a THP");
	merged = upm_counter("pages_merged");
	ASSERT_EQ(0, madvise(a, 2 * thp, MADV_UPM_MERGEABLE));
	EXPECT_EQ((long)n, upm_counter("pages_merged") - merged);
	for (size_t i = 0; i < thp; i += 4096) {
		EXPECT_EQ(pfn_of(a + i), pfn_of(b + i));
		EXPECT_EQ(i / 4096 + 1, *(uint64_t *)(b + i));
	}
out:
	munmap(raw, 3 * thp);
}

/* The first owner exits: the second keeps its content and its pages. */
TEST_F(upm, first_owner_exits)
{
	start_twin(self, 10);
	fill(self->mem, NPAGES, 10);
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	ASSERT_EQ(NPAGES, count_shared_with_twin(self));
	EXPECT_EQ(0, peer_stop(&self->twin));
	EXPECT_TRUE(same_as(self->mem, NPAGES, 10));
	for (int i = 0; i < NPAGES; i++)
		EXPECT_EQ(self->twin.pfn[i], pfn_of(self->mem + i * psize()));
}

/* MADV_UNMERGEABLE undoes the merge; content is unchanged. */
TEST_F(upm, unmergeable_undoes)
{
	long sharing;

	start_twin(self, 11);
	fill(self->mem, NPAGES, 11);
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	ASSERT_EQ(NPAGES, count_shared_with_twin(self));
	sharing = ksm_counter("pages_sharing");
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UNMERGEABLE));
	EXPECT_EQ(0, count_shared_with_twin(self));
	for (int i = 0; i < NPAGES; i++)
		EXPECT_FALSE(is_ksm(self->mem + i * psize()));
	EXPECT_TRUE(same_as(self->mem, NPAGES, 11));
	EXPECT_EQ(0, peer_mismatches(&self->twin));
	/* rmap_items of unmerged pages stay until ksmd or exit drops them */
	EXPECT_GE(sharing, ksm_counter("pages_sharing"));
}

/* Advising an already merged range again changes nothing. */
TEST_F(upm, advise_twice_idempotent)
{
	long merged, stable;

	start_twin(self, 12);
	fill(self->mem, NPAGES, 12);
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	merged = upm_counter("pages_merged");
	stable = upm_counter("pages_stable_new");
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(0, upm_counter("pages_merged") - merged);
	EXPECT_EQ(0, upm_counter("pages_stable_new") - stable);
	EXPECT_EQ(NPAGES, count_shared_with_twin(self));
}

/* ksmd at full speed while advising: everything still ends up shared. */
TEST_F(upm, with_ksmd_running)
{
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/sleep_millisecs", "0"));
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/pages_to_scan", "10000"));
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/run", "1"));
	for (int round = 0; round < 4; round++) {
		/*
		 * Start the twin first: a child forked after the fill would
		 * inherit a copy of this content, which ksmd may merge with
		 * the twin's pages outside UPM's index (ksmd knows no merge
		 * domains), leaving this process to share another frame.
		 */
		start_twin(self, 13 + round);
		fill(self->mem, NPAGES, 13 + round);
		ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(),
				     MADV_UPM_MERGEABLE));
		EXPECT_EQ(NPAGES, count_shared_with_twin(self));
		EXPECT_TRUE(same_as(self->mem, NPAGES, 13 + round));
		EXPECT_EQ(0, peer_mismatches(&self->twin));
		EXPECT_EQ(0, peer_stop(&self->twin));
		}
}

/* "echo 2 > /sys/kernel/mm/ksm/run" unmerges UPM's pages too. */
TEST_F(upm, ksm_run_2_unmerges)
{
	start_twin(self, 20);
	fill(self->mem, NPAGES, 20);
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	ASSERT_EQ(NPAGES, count_shared_with_twin(self));
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/run", "2"));
	EXPECT_EQ(0, count_shared_with_twin(self));
	for (int i = 0; i < NPAGES; i++)
		EXPECT_FALSE(is_ksm(self->mem + i * psize()));
	EXPECT_EQ(0, ksm_counter("pages_shared"));
	EXPECT_EQ(0, ksm_counter("pages_sharing"));
	EXPECT_TRUE(same_as(self->mem, NPAGES, 20));
	EXPECT_EQ(0, peer_mismatches(&self->twin));
}

/* After every sharer exits, the counters are back where they started. */
TEST_F(upm, exit_frees_everything)
{
	long shared = ksm_counter("pages_shared");
	long sharing = ksm_counter("pages_sharing");

	ASSERT_EQ(0, peer_spawn(&self->other, 21, true, NULL));
	start_twin(self, 21);
	ASSERT_EQ(0, peer_stop(&self->twin));
	ASSERT_EQ(0, peer_stop(&self->other));
	EXPECT_EQ(shared, after_prune(ksm_counter, "pages_shared", shared));
	EXPECT_EQ(sharing, after_prune(ksm_counter, "pages_sharing", sharing));
}

#define KSM_MAX_SHARING	"/sys/kernel/mm/ksm/max_page_sharing"
#define UPM_SAFE_FRAMES	"/sys/kernel/mm/upm/safe_frames"

/*
 * Two pages of one batch, the second a candidate of the first's content:
 * the first's merge puts a KSM page in place of the second, and fills
 * its stable node (max_page_sharing 2). The second page, mapped nowhere
 * now, must leave its address's rmap_item in that node, or rmap and
 * KSM's counters would lose the mapping. In a child, so that its exit
 * frees the KSM pages before max_page_sharing is set back.
 */
TEST_F(upm, candidate_replaced_in_its_batch_stays_in_node)
{
	char old[32] = "";
	int status;
	pid_t kid;

	read_str(KSM_MAX_SHARING, old, sizeof(old));
	/* KSM refuses a new max_page_sharing while it shares pages */
	if (after_prune(ksm_counter, "pages_shared", 0) ||
	    write_str(KSM_MAX_SHARING, "2"))
		SKIP(return, "cannot set max_page_sharing: KSM pages left");
	kid = fork();
	ASSERT_LE(0, kid);
	if (!kid) {
		char *a = self->mem, *b = self->mem + psize();
		long shared, sharing;
		int bad = 0;

		fill(b, 1, 38);
		fill(a, 1, 39);
		if (madvise(b, psize(), MADV_UPM_MERGEABLE))
			_exit(64);
		memcpy(a, b, psize());
		shared = ksm_counter("pages_shared");
		sharing = ksm_counter("pages_sharing");
		if (madvise(a, 2 * psize(), MADV_UPM_MERGEABLE))
			_exit(65);
		if (!is_ksm(b) || pfn_of(a) != pfn_of(b))
			bad |= 1;
		if (ksm_counter("pages_shared") - shared != 1 ||
		    ksm_counter("pages_sharing") - sharing != 1)
			bad |= 2;
		if (read_ksm_stat("ksm_merging_pages") != 2)
			bad |= 4;
		if (!same_as(a, 1, 38) || !same_as(b, 1, 38))
			bad |= 8;
		_exit(bad);
	}
	ASSERT_EQ(kid, waitpid(kid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status));
	/* 1: not shared, 2: KSM's counters, 4: the mm's, 8: content */
	EXPECT_EQ(0, WEXITSTATUS(status));
	EXPECT_EQ(0, after_prune(ksm_counter, "pages_shared", 0));
	EXPECT_EQ(0, write_str(KSM_MAX_SHARING, old));
}

/*
 * Without safe frames, a candidate's page that its process still shares
 * with its parent since fork is copied, not made a KSM page in place:
 * in place it would be a KSM page in the parent too, which no rmap_item
 * of its stable node finds.
 */
TEST_F(upm, forked_candidate_copied_without_safe_frames)
{
	int advised[2], go[2], status;
	char old[16] = "", c = 0;
	uint64_t pfn;
	pid_t kid;

	read_str(UPM_SAFE_FRAMES, old, sizeof(old));
	ASSERT_EQ(0, write_str(UPM_SAFE_FRAMES, "0"));
	fill(self->mem, 1, 37);
	pfn = pfn_of(self->mem);
	ASSERT_EQ(0, pipe(advised));
	ASSERT_EQ(0, pipe(go));
	kid = fork();
	ASSERT_LE(0, kid);
	if (!kid) {
		/* The child's mapping of the shared page is the candidate */
		c = !madvise(self->mem, psize(), MADV_UPM_MERGEABLE);
		if (write(advised[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(2);
		_exit(same_as(self->mem, 1, 37) ? 0 : 1);
	}
	ASSERT_EQ(1, read(advised[0], &c, 1));
	EXPECT_EQ(1, c);
	start_twin(self, 37);
	ASSERT_EQ(0, peer_pfns(&self->twin));
	/* The child and the twin share a copy; the parent keeps its page */
	EXPECT_NE(0, self->twin.pfn[0]);
	EXPECT_EQ(self->twin.pfn[0], pfn_in(kid, self->mem));
	EXPECT_EQ(pfn, pfn_of(self->mem));
	EXPECT_FALSE(is_ksm(self->mem));
	EXPECT_TRUE(same_as(self->mem, 1, 37));
	ASSERT_EQ(1, write(go[1], "g", 1));
	ASSERT_EQ(kid, waitpid(kid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	EXPECT_EQ(0, write_str(UPM_SAFE_FRAMES, old));
}

int main(int argc, char **argv)
{
	upm_require_kernel();
	return test_harness_run(argc, argv);
}

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

#define NPAGES		64

/*
 * A second process holding the same content: it maps, fills and advises
 * its own copy, reports its PFNs, then waits for a command: 'p' to report
 * its PFNs again (a merge may move its pages to a fresh frame), 'c' to
 * check its content is still the original (answers 'y' or 'n'), 'x' to
 * exit.
 */
struct twin {
	pid_t pid;
	int cmd, reply;
	uint64_t pfn[NPAGES];
};

static int twin_start(struct twin *t, uint64_t seed, bool advise)
{
	int to[2], from[2];

	if (pipe(to) || pipe(from))
		return -1;
	t->pid = fork();
	if (t->pid < 0)
		return -1;
	if (!t->pid) {
		char *p = map_anon(NPAGES);
		char c;

		close(to[1]);
		close(from[0]);
		if (!p)
			_exit(1);
		fill(p, NPAGES, seed);
		if (advise && madvise(p, NPAGES * psize(), MADV_UPM_MERGEABLE))
			_exit(2);
		for (int i = 0; i < NPAGES; i++)
			t->pfn[i] = pfn_of(p + i * psize());
		if (write(from[1], t->pfn, sizeof(t->pfn)) != sizeof(t->pfn))
			_exit(3);
		while (read(to[0], &c, 1) == 1) {
			if (c == 'x')
				break;
			if (c == 'p') {
				for (int i = 0; i < NPAGES; i++)
					t->pfn[i] = pfn_of(p + i * psize());
				if (write(from[1], t->pfn, sizeof(t->pfn)) !=
				    sizeof(t->pfn))
					_exit(4);
				continue;
			}
			c = same_as(p, NPAGES, seed) ? 'y' : 'n';
			if (write(from[1], &c, 1) != 1)
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

/* Ask the twin for its PFNs as they are now; false if it did not answer */
static bool twin_refresh_pfns(struct twin *t)
{
	char c = 'p';

	return write(t->cmd, &c, 1) == 1 &&
	       read(t->reply, t->pfn, sizeof(t->pfn)) == sizeof(t->pfn);
}

static bool twin_content_ok(struct twin *t)
{
	char c = 'c';

	if (write(t->cmd, &c, 1) != 1 || read(t->reply, &c, 1) != 1)
		return false;
	return c == 'y';
}

static int twin_stop(struct twin *t)
{
	int status = -1;
	char c = 'x';

	if (write(t->cmd, &c, 1) != 1)
		kill(t->pid, SIGKILL);
	waitpid(t->pid, &status, 0);
	close(t->cmd);
	close(t->reply);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

FIXTURE(upm) {
	char *mem;
	struct twin twin;
	bool twin_running;
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
	self->twin_running = false;
}

FIXTURE_TEARDOWN(upm)
{
	if (self->twin_running)
		twin_stop(&self->twin);
	if (self->mem)
		munmap(self->mem, NPAGES * psize());
	knobs_restore(&self->knobs);
}

#define start_twin(self, seed) do {					\
	ASSERT_EQ(0, twin_start(&(self)->twin, seed, true));		\
	(self)->twin_running = true;					\
} while (0)

/*
 * Pages of mem that map the very frame the twin maps now, as a KSM page;
 * -1 if the twin does not answer.
 */
static int shared_with(char *mem, struct twin *t)
{
	int n = 0;

	if (!twin_refresh_pfns(t))
		return -1;

	for (int i = 0; i < NPAGES; i++) {
		uint64_t pfn = pfn_of(mem + i * psize());

		if (pfn && pfn == t->pfn[i] && is_ksm(mem + i * psize()))
			n++;
	}
	return n;
}

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
	EXPECT_TRUE(twin_content_ok(&self->twin));
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
	EXPECT_TRUE(twin_content_ok(&self->twin));
}

/* A candidate written to after its advice is not merged, and is dropped. */
TEST_F(upm, changed_candidate_not_merged)
{
	long merged, dropped;

	fill(self->mem, NPAGES, 30);
	ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	fill(self->mem, NPAGES, 31);
	merged = upm_counter("pages_merged");
	dropped = upm_counter("candidates_dropped");
	start_twin(self, 30);
	EXPECT_EQ(0, upm_counter("pages_merged") - merged);
	EXPECT_EQ(NPAGES, upm_counter("candidates_dropped") - dropped);
	EXPECT_EQ(0, count_shared_with_twin(self));
	for (int i = 0; i < NPAGES; i++)
		EXPECT_FALSE(is_ksm(self->mem + i * psize()));
	EXPECT_TRUE(same_as(self->mem, NPAGES, 31));
	EXPECT_TRUE(twin_content_ok(&self->twin));
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
	EXPECT_TRUE(twin_content_ok(&self->twin));
}

/* A candidate leaves the index when its owner exits. */
TEST_F(upm, exited_owner_candidates_leave_index)
{
	long in_index = upm_counter("index_candidates");
	int i;

	start_twin(self, 33);
	EXPECT_EQ(NPAGES, upm_counter("index_candidates") - in_index);
	EXPECT_EQ(0, twin_stop(&self->twin));
	self->twin_running = false;
	/* Freed at exit, or by the prune work half a second later */
	for (i = 0; i < 30; i++) {
		if (upm_counter("index_candidates") == in_index)
			break;
		usleep(100 * 1000);
	}
	EXPECT_EQ(in_index, upm_counter("index_candidates"));
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
	EXPECT_TRUE(twin_content_ok(&self->twin));
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
	EXPECT_TRUE(twin_content_ok(&self->twin));
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

/* Bad input: a clear errno, and nothing in the range changes. */
TEST_F(upm, errors_change_nothing)
{
	long calls = upm_counter("calls");
	char *shared;

	fill(self->mem, NPAGES, 9);
	/* unaligned start */
	EXPECT_EQ(-1, madvise(self->mem + 1, psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(EINVAL, errno);
	/* length that wraps around */
	EXPECT_EQ(-1, madvise(self->mem, -(size_t)psize(),
			      MADV_UPM_MERGEABLE));
	EXPECT_EQ(EINVAL, errno);
	/* length 0 is a no-op */
	EXPECT_EQ(0, madvise(self->mem, 0, MADV_UPM_MERGEABLE));
	/* a hole: unmap the last quarter, advise across it */
	ASSERT_EQ(0, munmap(self->mem + 3 * NPAGES / 4 * psize(),
			    NPAGES / 4 * psize()));
	EXPECT_EQ(-1, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(ENOMEM, errno);
	/* a shared mapping next to a private one */
	shared = mmap(self->mem + 3 * NPAGES / 4 * psize(),
		      NPAGES / 4 * psize(),
		      PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	ASSERT_NE(MAP_FAILED, shared);
	EXPECT_EQ(-1, madvise(self->mem, NPAGES * psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, madvise(shared, psize(), MADV_UPM_MERGEABLE));
	EXPECT_EQ(EINVAL, errno);

	EXPECT_EQ(0, upm_counter("calls") - calls);
	for (int i = 0; i < 3 * NPAGES / 4; i++)
		EXPECT_FALSE(is_ksm(self->mem + i * psize()));
	EXPECT_TRUE(same_as(self->mem, 3 * NPAGES / 4, 9));
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
	EXPECT_EQ(0, twin_stop(&self->twin));
	self->twin_running = false;
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
	EXPECT_TRUE(twin_content_ok(&self->twin));
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
		ASSERT_EQ(0, twin_start(&self->twin, 13 + round, true));
		self->twin_running = true;
		fill(self->mem, NPAGES, 13 + round);
		ASSERT_EQ(0, madvise(self->mem, NPAGES * psize(),
				     MADV_UPM_MERGEABLE));
		EXPECT_EQ(NPAGES, count_shared_with_twin(self));
		EXPECT_TRUE(same_as(self->mem, NPAGES, 13 + round));
		EXPECT_TRUE(twin_content_ok(&self->twin));
		EXPECT_EQ(0, twin_stop(&self->twin));
		self->twin_running = false;
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
	EXPECT_TRUE(twin_content_ok(&self->twin));
}

/* After every sharer exits, the counters are back where they started. */
TEST_F(upm, exit_frees_everything)
{
	long shared = ksm_counter("pages_shared");
	long sharing = ksm_counter("pages_sharing");
	struct twin other;

	ASSERT_EQ(0, twin_start(&other, 21, true));
	start_twin(self, 21);
	ASSERT_EQ(0, twin_stop(&self->twin));
	self->twin_running = false;
	ASSERT_EQ(0, twin_stop(&other));
	EXPECT_EQ(shared, ksm_counter("pages_shared"));
	EXPECT_EQ(sharing, ksm_counter("pages_sharing"));
}

int main(int argc, char **argv)
{
	upm_require_kernel();
	return test_harness_run(argc, argv);
}

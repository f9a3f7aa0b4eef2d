// SPDX-License-Identifier: GPL-2.0
/*
 * Races of MADV_UPM_MERGEABLE with munmap and mremap, fork and exit, KSM
 * zero pages, a second adviser, ksmd and "echo 2 > ksm/run": each loop
 * runs RACE_SECS seconds and then checks content and sharing as the fault
 * matrix does (upm_mx.h). No case asserts on time. Needs root.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "upm_mx.h"

static atomic_int stop_flag;

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

	ASSERT_EQ(0, peer_spawn(&self->peer[0], 118, true, NULL));
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
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
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

	ASSERT_EQ(0, peer_spawn(&self->peer[0], 119, true, NULL));
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
	EXPECT_EQ(NP, shared_with(self->mem, &self->peer[0]));
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

/*
 * Two processes advise the same content at the same moment: both keep
 * their content, and (if @merged) share every page afterwards.
 */
static void two_advisers(struct __test_metadata *_metadata,
			 struct _test_data_mx *self, uint64_t seed,
			 bool merged)
{
	struct peer *a = &self->peer[0], *b = &self->peer[1];

	ASSERT_EQ(0, peer_spawn(a, seed, false, NULL));
	ASSERT_EQ(0, peer_spawn(b, seed, false, NULL));
	ASSERT_EQ(0, peer_send(a, PEER_ADVISE, 0, 0, 0));
	ASSERT_EQ(0, peer_send(b, PEER_ADVISE, 0, 0, 0));
	EXPECT_EQ(0, peer_wait(a));
	EXPECT_EQ(0, peer_wait(b));
	if (merged) {
		ASSERT_EQ(0, peer_pfns(a));
		ASSERT_EQ(0, peer_pfns(b));
		for (int i = 0; i < NP; i++) {
			EXPECT_NE(0, a->pfn[i]);
			EXPECT_EQ(a->pfn[i], b->pfn[i]);
		}
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
		two_advisers(_metadata, self, 1200 + rounds++, true);
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
		two_advisers(_metadata, self, 1300 + rounds++, true);
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
	pthread_t th;
	int rounds = 0;

	stop_flag = 0;
	ASSERT_EQ(0, pthread_create(&th, NULL, run2_loop, NULL));
	while (now() < end || rounds < 2) {
		/* ksm/run=2 may unmerge them at any moment */
		two_advisers(_metadata, self, 1400 + rounds++, false);
	}
	stop_flag = 1;
	pthread_join(th, NULL);
	TH_LOG("%d rounds", rounds);
	/* with run back at 0, advising merges again */
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/run", "0"));
	two_advisers(_metadata, self, 1499, true);
}

/* What races the advisers of advisers_into_shared() */
enum racer { RACER_NONE, RACER_KSMD, RACER_RUN_2 };

static pthread_t run2_thread;

struct run2_ctx {
	unsigned int delay_us;
	struct peer *peers;	/* peers 1 and 2 of the fixture */
	int ksm_after;		/* their KSM pages right after "echo 2" */
};

/*
 * One "echo 2", then "echo 0", a moment into the advice. Between the two,
 * KSM stays unmerged: no advice may merge anything, nor may a merge in
 * flight land behind the unmerge, so the advisers map no KSM page then.
 * The state after that one unmerge is checked later too, before any
 * other unmerge could mend it.
 */
static void *run2_once(void *arg)
{
	struct run2_ctx *c = arg;

	usleep(c->delay_us);
	write_str("/sys/kernel/mm/ksm/run", "2");
	c->ksm_after = 0;
	for (int k = 1; k <= 2; k++) {
		struct peer *t = &c->peers[k];

		for (int i = 0; i < NP; i++) {
			uint64_t pfn = pfn_in(t->pid, t->addr + i * psize());

			if (pfn && (read_kpageflags(pfn) & (1ULL << KPF_KSM)))
				c->ksm_after++;
		}
	}
	write_str("/sys/kernel/mm/ksm/run", "0");
	return NULL;
}

/*
 * Peers 1 and 2 advise, at the same moment, a content that self->mem and
 * peer 0 share already: both merge into the shared pages, the merges
 * reserved under ksm_thread_mutex and done without it, while @racer runs
 * (ksmd at full speed, or one "echo 2 > ksm/run" then 0 after @delay_us),
 * which is done before the checks. Each keeps its content and, unless run=2
 * raced, shares every page with peer 0. Each has exactly one rmap_item in
 * a stable node per KSM page it maps (ksm_merging_pages): none left by a
 * merge that failed, none missing for one that landed, none behind an
 * unmerge of everything.
 */
static void advisers_into_shared(struct __test_metadata *_metadata,
				 struct _test_data_mx *self, uint64_t seed,
				 enum racer racer, unsigned int delay_us)
{
	struct run2_ctx run2 = { delay_us, self->peer, 0 };
	struct peer *owner = &self->peer[0];

	/* The peers must not inherit self->mem's KSM pages */
	ASSERT_EQ(0, madvise(self->mem, NP * psize(), MADV_DONTFORK));
	for (int k = 1; k <= 2; k++)
		ASSERT_EQ(0, peer_spawn(&self->peer[k], seed, false, NULL));
	if (racer == RACER_KSMD)
		ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/run", "1"));
	if (racer == RACER_RUN_2)
		ASSERT_EQ(0, pthread_create(&run2_thread, NULL, run2_once,
					    &run2));
	for (int k = 1; k <= 2; k++)
		ASSERT_EQ(0, peer_send(&self->peer[k], PEER_ADVISE, 0, 0, 0));
	for (int k = 1; k <= 2; k++)
		EXPECT_EQ(0, peer_wait(&self->peer[k]));
	if (racer == RACER_KSMD)
		ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/run", "0"));
	if (racer == RACER_RUN_2) {
		pthread_join(run2_thread, NULL);
		EXPECT_EQ(0, run2.ksm_after);
	}
	ASSERT_EQ(0, peer_pfns(owner));
	for (int k = 1; k <= 2; k++) {
		struct peer *t = &self->peer[k];
		long ksm_pages = 0;

		EXPECT_EQ(0, peer_mismatches(t));
		ASSERT_EQ(0, peer_pfns(t));
		for (int i = 0; i < NP; i++) {
			ksm_pages += t->pfn[i] != 0;
			if (racer == RACER_RUN_2)
				continue;
			EXPECT_NE(0, t->pfn[i]);
			EXPECT_EQ(owner->pfn[i], t->pfn[i]);
		}
		EXPECT_EQ(ksm_pages,
			  read_ksm_stat_in(t->pid, "ksm_merging_pages"));
		EXPECT_EQ(0, peer_stop(t));
	}
	EXPECT_EQ(0, peer_mismatches(owner));
	EXPECT_EQ(NP, good_range(self->mem, seed, 0, NP));
}

TEST_F_TIMEOUT(mx, race_advisers_into_shared, 300)
{
	time_t end = now() + RACE_SECS;
	int rounds = 0;

	merge_with_peer(self, 1500);
	while (now() < end || rounds < 2) {
		advisers_into_shared(_metadata, self, 1500, RACER_NONE, 0);
		rounds++;
	}
	TH_LOG("%d rounds", rounds);
}

TEST_F_TIMEOUT(mx, race_advisers_into_shared_with_ksmd, 300)
{
	time_t end = now() + RACE_SECS;
	int rounds = 0;

	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/sleep_millisecs", "0"));
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/pages_to_scan", "10000"));
	merge_with_peer(self, 1600);
	while (now() < end || rounds < 2) {
		advisers_into_shared(_metadata, self, 1600, RACER_KSMD, 0);
		rounds++;
	}
	TH_LOG("%d rounds", rounds);
}

/*
 * "echo 2 > ksm/run" while advisers merge into shared pages partly without
 * the mutex: it holds them off, so that no merge lands behind its unmerge
 * of everything (a KSM page mapped with no rmap_item in a stable node),
 * and content stays.
 */
TEST_F_TIMEOUT(mx, race_advisers_into_shared_with_ksm_run_2, 300)
{
	time_t end = now() + RACE_SECS;
	int rounds = 0;

	merge_with_peer(self, 1700);
	while (now() < end || rounds < 2) {
		/* From the start of the advice to well past its end */
		advisers_into_shared(_metadata, self, 1700, RACER_RUN_2,
				     (rounds * 7919) % 20000);
		rounds++;
		/* Share again what run=2 unmerged: the next round's twins */
		ASSERT_EQ(0, peer_call(&self->peer[0], PEER_ADVISE, 0, 0, 0));
		ASSERT_EQ(0, madvise(self->mem, NP * psize(),
				     MADV_UPM_MERGEABLE));
		ASSERT_EQ(NP, shared_with(self->mem, &self->peer[0]));
	}
	TH_LOG("%d rounds", rounds);
	advisers_into_shared(_metadata, self, 1700, RACER_NONE, 0);
}

/* Pages of race_ksm_run_2_during_long_advice: 64 batches */
#define LONG_PAGES	4096

/*
 * A child holding LONG_PAGES of @seed that advises them on each byte
 * written to its command pipe, and exits when that pipe closes. Return:
 * its pid; its command and reply pipe ends in @cmd and @reply.
 */
static pid_t long_child(uint64_t seed, int *cmd, int *reply)
{
	int to[2], from[2];
	pid_t pid;
	char c;

	if (pipe(to) || pipe(from))
		return -1;
	pid = fork();
	if (!pid) {
		char *p = map_anon(LONG_PAGES);

		close(to[1]);
		close(from[0]);
		if (!p)
			_exit(1);
		fill(p, LONG_PAGES, seed);
		while (read(to[0], &c, 1) == 1) {
			c = !madvise(p, LONG_PAGES * psize(),
				     MADV_UPM_MERGEABLE);
			if (write(from[1], &c, 1) != 1)
				_exit(1);
		}
		_exit(0);
	}
	close(to[0]);
	close(from[1]);
	*cmd = to[1];
	*reply = from[0];
	return pid;
}

/* Ask a long_child() to advise its pages; true once it did */
static bool long_child_advise(int cmd, int reply)
{
	char c = 'a';

	return write(cmd, &c, 1) == 1 && read(reply, &c, 1) == 1 && c;
}

struct long_run2 {
	char *mem;
	unsigned int delay_us;
	int ksm_after;
};

/* "echo 2", count our KSM pages, "echo 0" (see run2_once()) */
static void *long_run2_once(void *arg)
{
	struct long_run2 *c = arg;

	usleep(c->delay_us);
	write_str("/sys/kernel/mm/ksm/run", "2");
	c->ksm_after = 0;
	for (int i = 0; i < LONG_PAGES; i++)
		c->ksm_after += is_ksm(c->mem + i * psize());
	write_str("/sys/kernel/mm/ksm/run", "0");
	return NULL;
}

/*
 * "echo 2 > ksm/run" in the middle of a long advice (64 batches) that
 * merges into pages shared already, partly without the mutex: once it
 * returns, nothing is merged until "echo 0" (no merge in flight lands
 * behind its unmerge), and each KSM page mapped after has its rmap_item.
 */
TEST_F_TIMEOUT(mx, race_ksm_run_2_during_long_advice, 300)
{
	int cmd[2], reply[2], rounds = 0, status;
	time_t end = now() + RACE_SECS;
	unsigned int advice_us = 0;
	pid_t kid[2];

	for (int k = 0; k < 2; k++) {
		kid[k] = long_child(1800, &cmd[k], &reply[k]);
		ASSERT_LT(0, kid[k]);
	}
	while (now() < end || rounds < 3) {
		struct long_run2 c = { 0 };
		struct timespec t0, t1;
		long ksm_pages = 0;
		pthread_t th;

		/* The first's become candidates, the second's shared pages */
		for (int k = 0; k < 2; k++)
			ASSERT_TRUE(long_child_advise(cmd[k], reply[k]));
		c.mem = map_anon(LONG_PAGES);
		ASSERT_NE(NULL, c.mem);
		fill(c.mem, LONG_PAGES, 1800);
		/* Round 0 times the advice; later ones race it at 10-90% */
		c.delay_us = advice_us / 10 + (rounds * 7919) %
			     (advice_us * 8 / 10 + 1);
		if (rounds)
			ASSERT_EQ(0, pthread_create(&th, NULL, long_run2_once,
						    &c));
		clock_gettime(CLOCK_MONOTONIC, &t0);
		ASSERT_EQ(0, madvise(c.mem, LONG_PAGES * psize(),
				     MADV_UPM_MERGEABLE));
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (rounds)
			pthread_join(th, NULL);
		else
			advice_us = (t1.tv_sec - t0.tv_sec) * 1000000 +
				    (t1.tv_nsec - t0.tv_nsec) / 1000;
		EXPECT_EQ(0, c.ksm_after);
		for (int i = 0; i < LONG_PAGES; i++)
			ksm_pages += is_ksm(c.mem + i * psize());
		if (rounds)
			TH_LOG("run=2 %u us into a %u us advice: %s %d, %s %ld",
			       c.delay_us, advice_us, "KSM pages then",
			       c.ksm_after, "at the end", ksm_pages);
		EXPECT_EQ(ksm_pages, read_ksm_stat("ksm_merging_pages"));
		EXPECT_TRUE(same_as(c.mem, LONG_PAGES, 1800));
		ASSERT_EQ(0, munmap(c.mem, LONG_PAGES * psize()));
		/* Unmerge what is left, the stale items of c.mem too */
		ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/run", "2"));
		ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/run", "0"));
		rounds++;
	}
	TH_LOG("%d rounds", rounds);
	/* Each child holds the other's command pipe too: close all first */
	for (int k = 0; k < 2; k++) {
		close(cmd[k]);
		close(reply[k]);
	}
	for (int k = 0; k < 2; k++) {
		ASSERT_EQ(kid[k], waitpid(kid[k], &status, 0));
		EXPECT_EQ(0, status);
	}
}

int main(int argc, char **argv)
{
	upm_require_kernel();
	return test_harness_run(argc, argv);
}

// SPDX-License-Identifier: GPL-2.0
/*
 * UPM next to ksmd, fork, exit and exec: the cases a review found that no
 * other test reached.
 *
 * - ksmd keeps scanning (and merging MADV_MERGEABLE ranges) after an mm
 *   whose pages it had in its unstable tree starts using UPM, and after
 *   that mm unmaps, exits or "echo 2 > run" unmerges everything;
 * - a forked child's UPM pages can still be migrated after its parent
 *   exits, with ksmd running and without it;
 * - a steady stream of exits does not postpone the pruning of the index;
 * - UPM's index metadata is charged to the adviser's memory cgroup;
 * - a secure (setuid) exec leaves the merge domain its caller chose.
 *
 * Needs root and CONFIG_UPM; the migration cases need two NUMA nodes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "upm_util.h"

#ifndef MPOL_MF_MOVE_ALL
#define MPOL_MF_MOVE_ALL (1 << 2)
#endif

#define KSM "/sys/kernel/mm/ksm/"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wait for ksmd to complete @n more full scans; false after @secs. */
static bool wait_full_scans(long n, double secs)
{
	long target = ksm_counter("full_scans") + n;
	double deadline = now() + secs;

	while (ksm_counter("full_scans") < target) {
		if (now() > deadline)
			return false;
		usleep(20000);
	}
	return true;
}

static void ksmd_full_speed(void)
{
	write_str(KSM "sleep_millisecs", "0");
	write_str(KSM "pages_to_scan", "1000");
	write_str(KSM "run", "1");
}

/* Two pages of the same new content, MADV_MERGEABLE: does ksmd merge them? */
static bool ksmd_merges_pair(uint64_t seed, double secs)
{
	char *p = map_anon(2);
	double deadline = now() + secs;
	bool merged = false;

	if (!p)
		return false;
	fill(p, 1, seed);
	memcpy(p + psize(), p, psize());
	if (madvise(p, 2 * psize(), MADV_MERGEABLE))
		goto out;
	while (!merged && now() < deadline) {
		merged = is_ksm(p) && is_ksm(p + psize()) &&
			 pfn_of(p) == pfn_of(p + psize());
		if (!merged)
			usleep(20000);
	}
out:
	munmap(p, 2 * psize());
	return merged;
}

static void write_byte(int fd)
{
	char c = 'x';

	if (write(fd, &c, 1) != 1)
		_exit(3);
}

static bool read_byte(int fd)
{
	char c;

	return read(fd, &c, 1) == 1;
}

/* KSM's knobs as a test found them, restored after it */
struct mix_knobs {
	struct knobs knobs;
	char smart_scan[16];
};

static void mix_save(struct mix_knobs *k)
{
	knobs_save(&k->knobs);
	read_str(KSM "smart_scan", k->smart_scan, sizeof(k->smart_scan));
}

static void mix_restore(struct mix_knobs *k)
{
	if (k->smart_scan[0])
		write_str(KSM "smart_scan", k->smart_scan);
	knobs_restore(&k->knobs);
}

/* Why the cases cannot run here, or NULL. */
static const char *mix_unsupported(void)
{
	if (geteuid())
		return "needs root for PFNs and KSM knobs";
	if (access("/sys/kernel/mm/upm/calls", R_OK))
		return "no UPM in this kernel";
	return NULL;
}

FIXTURE(mix) {
	struct mix_knobs k;
};

FIXTURE_SETUP(mix)
{
	if (mix_unsupported())
		SKIP(return, "%s", mix_unsupported());
	mix_save(&self->k);
}

FIXTURE_TEARDOWN(mix)
{
	mix_restore(&self->k);
}

/*
 * ksmd had the pages of an mm in its unstable tree when the mm first
 * used UPM; then the mm unmaps them, exits, or "echo 2 > run" unmerges
 * everything. Each removal must find the items in a sane state (the old
 * code hit BUG_ON(age > 1) in remove_rmap_item_from_tree() and killed
 * ksmd), and ksmd must go on scanning and merging.
 */
enum mix_end { END_MUNMAP, END_EXIT, END_UNMERGE_ALL };

FIXTURE(unstable) {
	struct mix_knobs k;
};

FIXTURE_SETUP(unstable)
{
	if (mix_unsupported())
		SKIP(return, "%s", mix_unsupported());
	mix_save(&self->k);
}

FIXTURE_TEARDOWN(unstable)
{
	mix_restore(&self->k);
}

FIXTURE_VARIANT(unstable) {
	int smart_scan;
	enum mix_end end;
};

FIXTURE_VARIANT_ADD(unstable, munmap) { .smart_scan = 0, .end = END_MUNMAP };
FIXTURE_VARIANT_ADD(unstable, exit) { .smart_scan = 0, .end = END_EXIT };
FIXTURE_VARIANT_ADD(unstable, unmerge_all) {
	.smart_scan = 0, .end = END_UNMERGE_ALL };
FIXTURE_VARIANT_ADD(unstable, smart_munmap) {
	.smart_scan = 1, .end = END_MUNMAP };
FIXTURE_VARIANT_ADD(unstable, smart_exit) { .smart_scan = 1, .end = END_EXIT };
FIXTURE_VARIANT_ADD(unstable, smart_unmerge_all) {
	.smart_scan = 1, .end = END_UNMERGE_ALL };

#define MIX_PAGES	2048	/* 8 MiB of distinct pages */

TEST_F_TIMEOUT(unstable, ksmd_survives_upm, 300)
{
	int to_child[2], to_parent[2], status;
	pid_t pid;

	write_str(KSM "smart_scan", variant->smart_scan ? "1" : "0");
	ksmd_full_speed();
	ASSERT_EQ(0, pipe(to_child));
	ASSERT_EQ(0, pipe(to_parent));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		char *a = map_anon(MIX_PAGES), *b = map_anon(16);

		if (!a || !b)
			_exit(2);
		fill(a, MIX_PAGES, 0x6d697861);
		fill(b, 16, 0x6d697862);
		if (madvise(a, MIX_PAGES * psize(), MADV_MERGEABLE))
			_exit(2);
		/* Let ksmd put a's pages in its unstable tree */
		if (!wait_full_scans(3, 120))
			_exit(4);
		if (madvise(b, 16 * psize(), MADV_UPM_MERGEABLE))
			_exit(2);
		if (!wait_full_scans(2, 120))
			_exit(4);
		if (variant->end == END_MUNMAP) {
			munmap(a, MIX_PAGES * psize());
			if (!wait_full_scans(2, 120))
				_exit(4);
		}
		write_byte(to_parent[1]);
		if (variant->end != END_EXIT)
			read_byte(to_child[0]);
		_exit(0);
	}
	ASSERT_TRUE(read_byte(to_parent[0]));
	if (variant->end == END_UNMERGE_ALL) {
		ASSERT_EQ(0, write_str(KSM "run", "2"));
		ASSERT_EQ(0, write_str(KSM "run", "1"));
	}
	write_byte(to_child[1]);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, WEXITSTATUS(status));
	/* ksmd is alive: it still merges (it sleeps while no mm is left) */
	EXPECT_TRUE(ksmd_merges_pair(0x6d697863, 120));
	close(to_child[0]);
	close(to_child[1]);
	close(to_parent[0]);
	close(to_parent[1]);
}

/*
 * One call of MADV_UPM_MERGEABLE hands that range to UPM, not the whole
 * mm: ksmd still merges the mm's MADV_MERGEABLE ranges.
 */
TEST_F_TIMEOUT(mix, ksmd_merges_other_ranges_of_upm_mm, 300)
{
	char *u = map_anon(16);

	ASSERT_NE(NULL, u);
	fill(u, 16, 0x6d697864);
	ASSERT_EQ(0, madvise(u, 16 * psize(), MADV_UPM_MERGEABLE));
	ksmd_full_speed();
	EXPECT_TRUE(ksmd_merges_pair(0x6d697865, 120));
	munmap(u, 16 * psize());
}

/*
 * ksmd passes the pages of UPM's ranges while an adviser enters them as
 * candidates, in small batches so that it often stops in the middle of
 * the range. It must neither free the candidates (the old code did when
 * they were inserted behind its cursor) nor merge them: all of them stay
 * in the index, and a twin merges with every one.
 */
#define SURVIVE_PAGES	4096
#define SURVIVE_SEED	0x73757276

TEST_F_TIMEOUT(mix, candidates_survive_ksmd_scans, 300)
{
	char *mine = map_anon(SURVIVE_PAGES);
	char *twin = map_anon(SURVIVE_PAGES);
	long cands, merged;

	ASSERT_NE(NULL, mine);
	ASSERT_NE(NULL, twin);
	write_str(KSM "smart_scan", "0");
	write_str(KSM "sleep_millisecs", "0");
	write_str(KSM "pages_to_scan", "32");
	write_str(KSM "run", "1");
	fill(mine, SURVIVE_PAGES, SURVIVE_SEED);
	cands = upm_counter("index_candidates");
	for (int i = 0; i < SURVIVE_PAGES; i += 256)
		ASSERT_EQ(0, madvise(mine + i * psize(), 256 * psize(),
				     MADV_UPM_MERGEABLE));
	ASSERT_TRUE(wait_full_scans(3, 120));
	EXPECT_EQ(SURVIVE_PAGES, upm_counter("index_candidates") - cands);
	for (int i = 0; i < SURVIVE_PAGES; i++)
		EXPECT_FALSE(is_ksm(mine + i * psize()));

	fill(twin, SURVIVE_PAGES, SURVIVE_SEED);
	merged = upm_counter("pages_merged");
	ASSERT_EQ(0, madvise(twin, SURVIVE_PAGES * psize(),
			     MADV_UPM_MERGEABLE));
	EXPECT_EQ(SURVIVE_PAGES, upm_counter("pages_merged") - merged);
	EXPECT_TRUE(same_as(mine, SURVIVE_PAGES, SURVIVE_SEED));
	EXPECT_TRUE(same_as(twin, SURVIVE_PAGES, SURVIVE_SEED));
	munmap(mine, SURVIVE_PAGES * psize());
	munmap(twin, SURVIVE_PAGES * psize());
}

/*
 * A forked child's copy of UPM-merged pages must stay movable once the
 * parent is gone: rmap finds the child's mapping through the parent's
 * rmap_item until the child has its own. Moves the child's pages to the
 * other node with move_pages(), with ksmd running or not, the parent
 * alive (control) or exited.
 */
FIXTURE(fork_move) {
	struct knobs knobs;
};

FIXTURE_VARIANT(fork_move) {
	bool ksmd;
	bool parent_exits;
};

FIXTURE_VARIANT_ADD(fork_move, parent_alive) {
	.ksmd = false, .parent_exits = false };
FIXTURE_VARIANT_ADD(fork_move, parent_exits) {
	.ksmd = false, .parent_exits = true };
FIXTURE_VARIANT_ADD(fork_move, ksmd_parent_alive) {
	.ksmd = true, .parent_exits = false };
FIXTURE_VARIANT_ADD(fork_move, ksmd_parent_exits) {
	.ksmd = true, .parent_exits = true };

FIXTURE_SETUP(fork_move)
{
	if (geteuid())
		SKIP(return, "needs root for move_pages() of another process");
	if (access("/sys/kernel/mm/upm/calls", R_OK))
		SKIP(return, "no UPM in this kernel");
	if (access("/sys/devices/system/node/node1", F_OK))
		SKIP(return, "needs two NUMA nodes");
	knobs_save(&self->knobs);
}

FIXTURE_TEARDOWN(fork_move)
{
	knobs_restore(&self->knobs);
}

#define MOVE_PAGES	512
#define MOVE_SEED	0x6d6f7665

TEST_F_TIMEOUT(fork_move, child_pages_move, 300)
{
	int to_test[2], to_child[2], to_parent[2], status, moved = 0, i;
	static void *pages[MOVE_PAGES];
	static int nodes[MOVE_PAGES], st[MOVE_PAGES];
	pid_t parent, child;
	char *buf;
	long ksm_pages;

	if (variant->ksmd)
		ksmd_full_speed();
	else
		write_str(KSM "run", "0");
	ASSERT_EQ(0, pipe(to_test));
	ASSERT_EQ(0, pipe(to_child));
	ASSERT_EQ(0, pipe(to_parent));
	/* Mapped before the fork, so that all three know the address */
	buf = map_anon(MOVE_PAGES);
	ASSERT_NE(NULL, buf);
	parent = fork();
	ASSERT_GE(parent, 0);
	if (!parent) {
		char *twin = map_anon(MOVE_PAGES);

		/* A twin range makes buf's pages KSM pages, then goes */
		if (!twin)
			_exit(2);
		fill(twin, MOVE_PAGES, MOVE_SEED);
		fill(buf, MOVE_PAGES, MOVE_SEED);
		if (madvise(twin, MOVE_PAGES * psize(), MADV_UPM_MERGEABLE) ||
		    madvise(buf, MOVE_PAGES * psize(), MADV_UPM_MERGEABLE))
			_exit(2);
		munmap(twin, MOVE_PAGES * psize());
		for (i = 0; i < MOVE_PAGES; i++)
			if (!is_ksm(buf + i * psize()))
				_exit(5);
		child = fork();
		if (child < 0)
			_exit(2);
		if (!child) {
			bool same;

			/* The parent's pages, mapped by fork */
			read_byte(to_child[0]);
			same = same_as(buf, MOVE_PAGES, MOVE_SEED);
			if (same)
				write_byte(to_test[1]);
			_exit(same ? 0 : 6);
		}
		if (write(to_test[1], &child, sizeof(child)) != sizeof(child))
			_exit(3);
		if (variant->parent_exits)
			_exit(0);
		read_byte(to_parent[0]);
		_exit(0);
	}
	/* Only the parent and the child write: EOF if they fail */
	close(to_test[1]);
	to_test[1] = -1;
	ASSERT_EQ(sizeof(child), read(to_test[0], &child, sizeof(child)));
	if (variant->parent_exits) {
		ASSERT_EQ(parent, waitpid(parent, &status, 0));
		ASSERT_EQ(0, WEXITSTATUS(status));
	}
	/*
	 * Give ksmd the time to free the parent's items and to give the
	 * child its own, then stop it: in this emulated guest, KSM pages do
	 * not migrate while ksmd scans them at full speed (pages ksmd merged
	 * itself neither).
	 */
	if (variant->ksmd) {
		ASSERT_TRUE(wait_full_scans(3, 120));
		write_str(KSM "run", "0");
		EXPECT_EQ(MOVE_PAGES,
			  read_ksm_stat_in(child, "ksm_rmap_items"));
	}

	for (i = 0; i < MOVE_PAGES; i++)
		pages[i] = buf + i * psize();
	ASSERT_EQ(0, syscall(SYS_move_pages, child, MOVE_PAGES, pages, NULL,
			     st, 0));
	for (i = 0; i < MOVE_PAGES; i++) {
		ASSERT_GE(st[i], 0);
		nodes[i] = !st[i];
	}
	ksm_pages = ksm_counter("pages_shared") + ksm_counter("pages_sharing");
	EXPECT_LE(0, syscall(SYS_move_pages, child, MOVE_PAGES, pages, nodes,
			     st, MPOL_MF_MOVE_ALL));
	for (i = 0; i < MOVE_PAGES; i++) {
		if (st[i] != nodes[i] && moved == i)
			TH_LOG("page %d: status %d, wanted node %d", i, st[i],
			       nodes[i]);
		moved += st[i] == nodes[i];
	}
	EXPECT_EQ(MOVE_PAGES, moved);
	TH_LOG("moved %d of %d pages of the child", moved, MOVE_PAGES);
	TH_LOG("KSM pages %ld, rmap_items of the child %ld", ksm_pages,
	       read_ksm_stat_in(child, "ksm_rmap_items"));

	/* The child (not ours to wait for) checks its content after the move */
	write_byte(to_child[1]);
	EXPECT_TRUE(read_byte(to_test[0]));
	if (!variant->parent_exits) {
		write_byte(to_parent[1]);
		ASSERT_EQ(parent, waitpid(parent, &status, 0));
	}
	munmap(buf, MOVE_PAGES * psize());
	close(to_test[0]);
	close(to_child[0]);
	close(to_child[1]);
	close(to_parent[0]);
	close(to_parent[1]);
}

static long meminfo_kb(const char *key)
{
	char line[256];
	long v = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)))
			v = strtol(line + strlen(key), NULL, 10);
	fclose(f);
	return v;
}

static void fork_and_reap(void)
{
	pid_t pid = fork();

	if (!pid)
		_exit(0);
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

/*
 * Every exit of an mm that used UPM asks for a prune of the index, and a
 * stream of exits must not postpone it: advise rounds of distinct pages,
 * unmap them all, then let a child exit every 20 ms until the stale
 * entries are gone. What is left is at most one round's worth of index
 * entries and KSM stable nodes (pages_shared). The rmap_items of the
 * unmapped ranges stay until ksmd runs or the process exits, as KSM's
 * do; they and SUnreclaim are only logged (under KASAN, freed objects
 * wait in its quarantine).
 */
#define CHURN_ROUNDS	64
#define CHURN_PAGES	256

TEST_F_TIMEOUT(mix, exit_churn_keeps_index_bounded, 300)
{
	long entries0, unrec0, entries = 0, unrec, shared0;
	static char *round[CHURN_ROUNDS];
	double deadline;
	int r;

	write_str(KSM "run", "0");
	entries0 = upm_counter("index_entries");
	shared0 = ksm_counter("pages_shared");
	unrec0 = meminfo_kb("SUnreclaim:");
	ASSERT_GE(entries0, 0);
	for (r = 0; r < CHURN_ROUNDS; r++) {
		round[r] = map_anon(CHURN_PAGES);
		ASSERT_NE(NULL, round[r]);
		fill(round[r], CHURN_PAGES, 0x63687572 + r * 7919);
		ASSERT_EQ(0, madvise(round[r], CHURN_PAGES * psize(),
				     MADV_UPM_MERGEABLE));
	}
	for (r = 0; r < CHURN_ROUNDS; r++)
		munmap(round[r], CHURN_PAGES * psize());
	/* Keep exiting every 20 ms: the prune must still come */
	deadline = now() + 20;
	while (now() < deadline) {
		entries = upm_counter("index_entries");
		if (entries <= entries0 + CHURN_PAGES)
			break;
		fork_and_reap();
		usleep(20000);
	}
	TH_LOG("index_entries %ld -> %ld after %d rounds of %d pages",
	       entries0, entries, CHURN_ROUNDS, CHURN_PAGES);
	EXPECT_LE(entries, entries0 + CHURN_PAGES);
	EXPECT_LE(ksm_counter("pages_shared"), shared0 + CHURN_PAGES);
	unrec = meminfo_kb("SUnreclaim:");
	TH_LOG("SUnreclaim %ld kB -> %ld kB, ksm_rmap_items %ld", unrec0,
	       unrec, read_ksm_stat("ksm_rmap_items"));
}

/* slab_unreclaimable of a memory cgroup, in bytes, or -1 */
static long memcg_slab(const char *cg)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/memory.stat", cg);
	return read_key(path, "slab_unreclaimable");
}

/* Object size of a slab cache, from /proc/slabinfo, or -1 */
static long slab_object_size(const char *cache)
{
	char line[512], name[64];
	long active, total, size;
	FILE *f = fopen("/proc/slabinfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s %ld %ld %ld", name, &active, &total,
			   &size) == 4 && !strcmp(name, cache)) {
			fclose(f);
			return size;
		}
	}
	fclose(f);
	return -1;
}

/*
 * The index entries, stable nodes and rmap_items UPM allocates for an
 * adviser are charged to the adviser's memory cgroup, so that its limit
 * bounds them. The second half of the range is a copy of the first: each
 * pair gets a stable node and an index entry, each page an rmap_item.
 */
#define ACCT_PAGES	4096
#define ACCT_CG		"/sys/fs/cgroup/upm_ksm_mix_acct"

TEST_F_TIMEOUT(mix, index_metadata_charged_to_memcg, 300)
{
	int to_child[2], to_test[2], status;
	long before, after, item, node, entry, least;
	size_t half = ACCT_PAGES / 2 * psize();
	char pidbuf[32];
	pid_t pid;

	item = slab_object_size("ksm_rmap_item");
	node = slab_object_size("ksm_stable_node");
	entry = slab_object_size("upm_entry");
	if (item < 0 || node < 0 || entry < 0)
		SKIP(return, "no /proc/slabinfo, or no KSM or UPM slab cache");
	if (access("/sys/fs/cgroup/cgroup.subtree_control", W_OK) ||
	    (mkdir(ACCT_CG, 0755) && errno != EEXIST) ||
	    access(ACCT_CG "/memory.stat", R_OK))
		SKIP(return, "no cgroup2 memory controller");
	write_str(KSM "run", "0");
	ASSERT_EQ(0, pipe(to_child));
	ASSERT_EQ(0, pipe(to_test));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		char *p;

		read_byte(to_child[0]);
		p = map_anon(ACCT_PAGES);
		if (!p)
			_exit(2);
		fill(p, ACCT_PAGES / 2, 0x61636374);
		memcpy(p + half, p, half);
		write_byte(to_test[1]);
		read_byte(to_child[0]);
		if (madvise(p, ACCT_PAGES * psize(), MADV_UPM_MERGEABLE))
			_exit(2);
		write_byte(to_test[1]);
		read_byte(to_child[0]);
		_exit(0);
	}
	snprintf(pidbuf, sizeof(pidbuf), "%d", pid);
	ASSERT_EQ(0, write_str(ACCT_CG "/cgroup.procs", pidbuf));
	write_byte(to_child[1]);
	ASSERT_TRUE(read_byte(to_test[0]));
	before = memcg_slab(ACCT_CG);
	write_byte(to_child[1]);
	ASSERT_TRUE(read_byte(to_test[0]));
	after = memcg_slab(ACCT_CG);
	/*
	 * Charges not yet in the counters wait in a per-CPU stock of less
	 * than a page: allow one page per CPU.
	 */
	least = ACCT_PAGES * item + ACCT_PAGES / 2 * (node + entry) -
		sysconf(_SC_NPROCESSORS_ONLN) * psize();
	TH_LOG("cgroup slab_unreclaimable: %ld -> %ld bytes (>= +%ld expected)",
	       before, after, least);
	EXPECT_GE(after - before, least);
	write_byte(to_child[1]);
	waitpid(pid, &status, 0);
	rmdir(ACCT_CG);
	close(to_child[0]);
	close(to_child[1]);
	close(to_test[0]);
	close(to_test[1]);
}

/* rmap_items in use, from KSM's counters (pages_volatile is the rest) */
static long ksm_items(void)
{
	return ksm_counter("pages_shared") + ksm_counter("pages_sharing") +
	       ksm_counter("pages_unshared") + ksm_counter("pages_volatile");
}

/*
 * A process that used UPM exits before the child it forked, with ksmd
 * off. Its rmap_items stay while rmap finds the child's mapping through
 * them; once the child has exited too, they go with the process's KSM
 * slot (the prune after an exit frees what exits left): KSM's counters
 * come back to where they were, with no ksmd to wait for.
 */
TEST_F_TIMEOUT(mix, parent_exits_first_nothing_leaks, 300)
{
	int to_child[2], to_test[2], status, i;
	long items0, shared0, sharing0;
	struct peer peer = { 0 };
	pid_t parent, child = 0;

	ASSERT_EQ(0, prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0));
	write_str(KSM "run", "0");
	/* Let a prune that earlier cases asked for run first (0.5 s) */
	usleep(1500 * 1000);
	items0 = ksm_items();
	shared0 = ksm_counter("pages_shared");
	sharing0 = ksm_counter("pages_sharing");
	ASSERT_EQ(0, peer_spawn(&peer, 0x7061726e, true, NULL));
	ASSERT_EQ(0, pipe(to_child));
	ASSERT_EQ(0, pipe(to_test));
	parent = fork();
	ASSERT_GE(parent, 0);
	if (!parent) {
		char *p = map_anon(PEER_PAGES);
		pid_t pid;

		if (!p)
			_exit(2);
		fill(p, PEER_PAGES, 0x7061726e);
		if (madvise(p, PEER_PAGES * psize(), MADV_UPM_MERGEABLE) ||
		    !is_ksm(p))
			_exit(3);
		pid = fork();
		if (!pid) {
			/* The child: holds the pages until told to go */
			read_byte(to_child[0]);
			_exit(same_as(p, PEER_PAGES, 0x7061726e) ? 0 : 4);
		}
		if (write(to_test[1], &pid, sizeof(pid)) != sizeof(pid))
			_exit(5);
		_exit(pid > 0 ? 0 : 6);
	}
	ASSERT_EQ(sizeof(child), read(to_test[0], &child, sizeof(child)));
	ASSERT_EQ(parent, waitpid(parent, &status, 0));
	ASSERT_EQ(0, status);
	/* Orphaned, the child is ours to reap (we are its subreaper) */
	write_byte(to_child[1]);
	ASSERT_EQ(child, waitpid(child, &status, 0));
	EXPECT_EQ(0, status) TH_LOG("the child's content changed");
	EXPECT_EQ(0, peer_stop(&peer));
	/* Freed at exit, or by the prune work half a second later */
	for (i = 0; i < 50 && ksm_items() != items0; i++)
		usleep(100 * 1000);
	EXPECT_EQ(items0, ksm_items());
	EXPECT_EQ(shared0, ksm_counter("pages_shared"));
	EXPECT_EQ(sharing0, ksm_counter("pages_sharing"));
	prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
	close(to_child[0]);
	close(to_child[1]);
	close(to_test[0]);
	close(to_test[1]);
}

/*
 * Advice is a hint: when the adviser's memory cgroup is full and cannot
 * reclaim (no swap), UPM skips the pages it has no memory for and counts
 * them, instead of reclaiming hard or calling the OOM killer.
 */
#define OOM_PAGES	4096	/* 16 MiB of distinct pages */
#define OOM_CG		"/sys/fs/cgroup/upm_ksm_mix_oom"

TEST_F_TIMEOUT(mix, advice_never_oom_kills, 300)
{
	int to_child[2], to_test[2], status;
	long nomem0, nomem, cur;
	char buf[64];
	pid_t pid;

	if (access("/sys/fs/cgroup/cgroup.subtree_control", W_OK) ||
	    (mkdir(OOM_CG, 0755) && errno != EEXIST) ||
	    access(OOM_CG "/memory.max", W_OK))
		SKIP(return, "no cgroup2 memory controller");
	write_str(KSM "run", "0");
	write_str("/sys/kernel/mm/upm/safe_frames", "1");
	ASSERT_EQ(0, pipe(to_child));
	ASSERT_EQ(0, pipe(to_test));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		char *p, *ref;

		read_byte(to_child[0]);
		p = map_anon(OOM_PAGES);
		ref = map_anon(OOM_PAGES);
		if (!p || !ref)
			_exit(2);
		fill(p, OOM_PAGES, 0x6f6f6d21);
		/* Checked against later without allocating any memory */
		memcpy(ref, p, OOM_PAGES * psize());
		write_byte(to_test[1]);
		read_byte(to_child[0]);
		/* Each page needs a fresh frame: the cgroup has none left */
		madvise(p, OOM_PAGES * psize(), MADV_UPM_MERGEABLE);
		_exit(memcmp(p, ref, OOM_PAGES * psize()) ? 6 : 0);
	}
	snprintf(buf, sizeof(buf), "%d", pid);
	ASSERT_EQ(0, write_str(OOM_CG "/cgroup.procs", buf));
	write_byte(to_child[1]);
	ASSERT_TRUE(read_byte(to_test[0]));
	/*
	 * Full: what it uses now plus 16 pages, less than the batch of 64
	 * old pages UPM holds until their frames replaced them, and no swap
	 * to reclaim to
	 */
	cur = read_ulong(OOM_CG "/memory.current");
	ASSERT_GT(cur, 0);
	snprintf(buf, sizeof(buf), "%ld", cur + 16 * psize());
	ASSERT_EQ(0, write_str(OOM_CG "/memory.max", buf));
	write_str(OOM_CG "/memory.swap.max", "0");
	nomem0 = upm_counter("skipped_nomem");
	write_byte(to_child[1]);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	nomem = upm_counter("skipped_nomem");
	TH_LOG("skipped_nomem %ld -> %ld", nomem0, nomem);
	EXPECT_TRUE(WIFEXITED(status)) TH_LOG("the adviser was killed");
	EXPECT_EQ(0, WEXITSTATUS(status));
	EXPECT_GT(nomem, nomem0);
	rmdir(OOM_CG);
	close(to_child[0]);
	close(to_child[1]);
	close(to_test[0]);
	close(to_test[1]);
}

/*
 * A merge domain is kept across a plain exec, but not across a setuid
 * one: the privileged program must not inherit a domain chosen for it.
 */
static int exec_domain(const char *self, bool setuid_bit)
{
	const char *copy = "/tmp/upm_ksm_mix_exec";
	int out[2], st = -1, fd_in, fd_out;
	char buf[4096];
	ssize_t n;
	pid_t pid;
	int domain = -1;

	unlink(copy);
	fd_in = open(self, O_RDONLY);
	fd_out = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	if (fd_in < 0 || fd_out < 0)
		return -2;
	while ((n = read(fd_in, buf, sizeof(buf))) > 0)
		if (write(fd_out, buf, n) != n)
			return -2;
	close(fd_in);
	close(fd_out);
	if (chown(copy, 0, 0) || chmod(copy, setuid_bit ? 04755 : 0755))
		return -2;
	if (pipe(out))
		return -2;
	pid = fork();
	if (!pid) {
		dup2(out[1], 1);
		if (prctl(PR_SET_UPM_DOMAIN, 77, 0, 0, 0) ||
		    setresuid(65534, 65534, 65534))
			_exit(2);
		execl(copy, copy, "--print-upm-domain", NULL);
		_exit(2);
	}
	close(out[1]);
	n = read(out[0], buf, sizeof(buf) - 1);
	if (n > 0) {
		buf[n] = '\0';
		domain = atoi(buf);
	}
	close(out[0]);
	waitpid(pid, &st, 0);
	unlink(copy);
	return domain;
}

TEST_F(mix, secure_exec_leaves_domain)
{
	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	ASSERT_GT(n, 0);
	exe[n] = '\0';
	EXPECT_EQ(77, exec_domain(exe, false));
	EXPECT_EQ(0, exec_domain(exe, true));
}

/* The state letter of a process, from /proc/PID/stat, or 0 */
static char proc_state(pid_t pid)
{
	char path[64], buf[512], *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	read_str(path, buf, sizeof(buf));
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

/*
 * "echo 2 > run" holds ksm_thread_mutex while it unmerges everything,
 * which can take minutes. An adviser waiting for the mutex meanwhile must
 * die at once when killed, not when the unmerge is done.
 */
#define KILL_PAGES	32768	/* 128 MiB of one content, to unmerge */

TEST_F_TIMEOUT(mix, advice_wait_is_killable, 600)
{
	int go[2], done[2], status;
	pid_t waiter, unmerger;
	struct pollfd pfd;
	double deadline;
	char *p;
	bool blocked = false, killed_first = false;

	write_str(KSM "run", "0");
	ASSERT_EQ(0, pipe(go));
	ASSERT_EQ(0, pipe(done));
	/* Many KSM mappings, so that run=2 holds the mutex for a while */
	p = map_anon(KILL_PAGES);
	ASSERT_NE(NULL, p);
	memset(p, 0x5a, KILL_PAGES * psize());
	ASSERT_EQ(0, madvise(p, KILL_PAGES * psize(), MADV_UPM_MERGEABLE));

	waiter = fork();
	ASSERT_GE(waiter, 0);
	if (!waiter) {
		char *q = map_anon(1);

		if (!q)
			_exit(2);
		fill(q, 1, 0x6b696c6c);
		read_byte(go[0]);
		madvise(q, psize(), MADV_UPM_MERGEABLE);
		_exit(0);
	}
	unmerger = fork();
	ASSERT_GE(unmerger, 0);
	if (!unmerger) {
		write_str(KSM "run", "2");
		write_byte(done[1]);
		_exit(0);
	}
	close(done[1]);
	/* Let the unmerge take the mutex first, then send the adviser */
	usleep(100000);
	write_byte(go[1]);
	pfd.fd = done[0];
	pfd.events = POLLIN;
	deadline = now() + 10;
	while (!blocked && now() < deadline && !poll(&pfd, 1, 1))
		blocked = proc_state(waiter) == 'D';
	if (!blocked || poll(&pfd, 1, 0)) {
		kill(waiter, SIGKILL);
		waitpid(waiter, NULL, 0);
		waitpid(unmerger, NULL, 0);
		write_str(KSM "run", "0");
		SKIP(return, "the unmerge ended before the adviser waited");
	}
	ASSERT_EQ(0, kill(waiter, SIGKILL));
	/* Is the killed adviser gone before the unmerge is done? */
	while (!poll(&pfd, 1, 1)) {
		if (waitpid(waiter, &status, WNOHANG) == waiter) {
			killed_first = true;
			break;
		}
	}
	if (!killed_first)
		waitpid(waiter, &status, 0);
	EXPECT_TRUE(killed_first);
	EXPECT_TRUE(WIFSIGNALED(status));
	waitpid(unmerger, NULL, 0);
	write_str(KSM "run", "0");
	munmap(p, KILL_PAGES * psize());
	close(go[0]);
	close(go[1]);
	close(done[0]);
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--print-upm-domain")) {
		printf("%d\n", (int)prctl(PR_GET_UPM_DOMAIN, 0, 0, 0, 0));
		return 0;
	}
	upm_require_kernel();
	return test_harness_run(argc, argv);
}

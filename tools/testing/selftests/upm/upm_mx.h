/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The fixture shared by upm_faults and upm_races: a range of NP pages and
 * up to three peers (upm_util.h), with ksmd off unless a case turns it on.
 * Every case checks content in every sharer and sharing by PFNs
 * (/proc/<pid>/pagemap) and KPF_KSM; no case asserts which process's frame
 * became the shared one. Needs root for the PFNs and the KSM knobs.
 */
#ifndef UPM_MX_H
#define UPM_MX_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "upm_util.h"

#define NP		PEER_PAGES
#define MX_PEERS	3
/* Seconds each race loop runs */
#define RACE_SECS	4

static inline time_t now(void)
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
	struct peer peer[MX_PEERS];
	struct knobs knobs;
	/* Undoes what a case set up outside the process (cgroups) */
	void (*cleanup)(void);
};

FIXTURE_SETUP(mx)
{
	if (geteuid())
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
	self->cleanup = NULL;
}

FIXTURE_TEARDOWN(mx)
{
	for (int i = 0; i < MX_PEERS; i++)
		peer_stop(&self->peer[i]);
	if (self->cleanup)
		self->cleanup();
	if (self->mem)
		munmap(self->mem, self->len);
	knobs_restore(&self->knobs);
}

/* Merge self->mem (seed) with peer 0: every page shared afterwards. */
#define merge_with_peer(self, seed) do {				\
	ASSERT_EQ(0, peer_spawn(&(self)->peer[0], seed, true, NULL));	\
	fill((self)->mem, NP, seed);					\
	ASSERT_EQ(0, madvise((self)->mem, NP * psize(),			\
			     MADV_UPM_MERGEABLE));			\
	ASSERT_EQ(NP, shared_with((self)->mem, &(self)->peer[0]));	\
} while (0)

#endif

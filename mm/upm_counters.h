/* SPDX-License-Identifier: GPL-2.0 */
/*
 * UPM's counters, each a file in /sys/kernel/mm/upm/ named in lower case,
 * in this order. mm/upm.c includes this list with UPM_COUNTER(id) defined
 * to make the enum, the names and the sysfs files from it. The SKIPPED_
 * counters stay together: the upm_advise_end trace event sums them.
 */
UPM_COUNTER(CALLS)		/* MADV_UPM_MERGEABLE calls */
UPM_COUNTER(PAGES_ADVISED)	/* pages in the advised ranges */
UPM_COUNTER(PAGES_MERGED)	/* merged into an existing shared page */
UPM_COUNTER(PAGES_STABLE_NEW)	/* became new shared pages, on a match */
UPM_COUNTER(PAGES_ZERO)		/* replaced by the shared zero page */
UPM_COUNTER(PAGES_COPIED)	/* shared through a safe frame */
UPM_COUNTER(PAGES_CANDIDATE)	/* entered as candidates, still writable */
UPM_COUNTER(CANDIDATES_DROPPED)	/* candidates found changed or gone */
UPM_COUNTER(PUBLISHES_UNDONE)	/* made KSM pages, then unshared again */
UPM_COUNTER(SKIPPED_ABSENT)	/* not present, or not anonymous */
UPM_COUNTER(SKIPPED_KSM)	/* shared already, or since a fork */
UPM_COUNTER(SKIPPED_PINNED)	/* pinned, e.g. for DMA */
UPM_COUNTER(SKIPPED_THP)	/* a huge page that could not be split */
UPM_COUNTER(SKIPPED_BUSY)	/* locked, or changed during the merge */
UPM_COUNTER(SKIPPED_NOMEM)	/* no memory for the metadata or frame */
UPM_COUNTER(SKIPPED_DISABLED)	/* KSM unmerged all (run = 2) */
UPM_COUNTER(HASH_COLLISIONS)	/* equal hashes of different pages */
UPM_COUNTER(TIME_NS)		/* time spent in merge passes */

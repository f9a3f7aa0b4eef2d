/* SPDX-License-Identifier: GPL-2.0 */
/*
 * libupm: user-space helpers for user-guided page merging (UPM).
 *
 * Link with libupm.a (built into build/tools/ by the UPM scripts).
 *
 *   upm_available()          0 if the running kernel has UPM, else -ENOSYS.
 *   upm_advise(addr, len)    madvise(addr, len, MADV_UPM_MERGEABLE).
 *   upm_advise_self(&res)    advise every private anonymous writable
 *                            mapping of the calling process.
 *   upm_read_global(&g)      the counters in /sys/kernel/mm/{upm,ksm}.
 *   upm_read_process(pid,&p) /proc/<pid>/ksm_stat (KSM and UPM lines).
 *
 * Every function returns 0 on success or a negative errno; none of them
 * ever turns a failure into a silent no-op. -ENOSYS always means "this
 * kernel has no UPM": /sys/kernel/mm/upm is missing, or madvise() rejects
 * MADV_UPM_MERGEABLE on a plain private anonymous page with EINVAL.
 * upm_strerror() gives a message for these codes.
 *
 * The mappings upm_advise_self() advises are read from /proc/self/maps:
 * writable, private, not file backed ("[heap]", unnamed and "[anon:...]"
 * mappings). Stacks, guard pages (no write permission), [vvar], [vdso],
 * [vsyscall] and file mappings are skipped. A mapping that disappears
 * between reading the maps and the call (ENOMEM) is counted as skipped.
 *
 * The environment variable UPM_ROOT, when set, is prefixed to every /sys
 * and /proc path the counters are read from (tests use it to point the
 * library at a fake tree). It does not change what madvise() does.
 */
#ifndef UPM_H
#define UPM_H

#include <stddef.h>
#include <sys/types.h>

#ifndef MADV_UPM_MERGEABLE
#define MADV_UPM_MERGEABLE 120	/* provisional value, see upm.rst */
#endif

/* What upm_advise_self() did */
struct upm_advise_result {
	unsigned long ranges;		/* mappings advised */
	unsigned long bytes;		/* bytes in them */
	unsigned long ranges_skipped;	/* mappings gone before the call */
	double seconds;			/* wall time in madvise() */
};

/* Global counters; a counter the kernel does not have reads as -1 */
struct upm_global {
	/* /sys/kernel/mm/upm/ */
	long calls;
	long pages_advised;
	long pages_merged;
	long pages_stable_new;
	long pages_zero;
	long skipped_absent;
	long skipped_ksm;
	long skipped_pinned;
	long skipped_thp;
	long skipped_busy;
	long skipped_nomem;
	long skipped_disabled;
	long hash_collisions;
	long time_ns;
	long index_entries;
	long index_buckets;
	/* /sys/kernel/mm/ksm/ */
	long ksm_run;
	long ksm_pages_shared;
	long ksm_pages_sharing;
	long ksm_pages_unshared;
	long ksm_pages_volatile;
	long ksm_full_scans;
	long ksm_zero_pages;
	long ksm_general_profit;
	long ksm_pages_to_scan;
	long ksm_sleep_millisecs;
};

/* /proc/<pid>/ksm_stat; a line the kernel does not print reads as -1 */
struct upm_process {
	pid_t pid;
	long ksm_rmap_items;
	long ksm_zero_pages;
	long ksm_merging_pages;
	long ksm_process_profit;
	long upm_merged_pages;
	long upm_stable_pages;
};

int upm_available(void);
int upm_advise(void *addr, size_t len);
int upm_advise_self(struct upm_advise_result *res);
int upm_read_global(struct upm_global *g);
int upm_read_process(pid_t pid, struct upm_process *p);
/* Read one number from a file under UPM_ROOT, e.g. "/sys/kernel/mm/ksm/run" */
int upm_read_value(const char *path, long *val);
const char *upm_strerror(int err);

#endif /* UPM_H */

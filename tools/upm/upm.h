/* SPDX-License-Identifier: GPL-2.0 */
/*
 * libupm: user-space helpers for user-guided page merging (UPM).
 *
 * Build and install with tools/upm/Makefile (libupm.a, libupm.so and this
 * header); the UPM scripts build it into build/tools/. The Python module
 * tools/upm/python/upm.py offers the same calls:
 *
 *   upm_available()          0 if the running kernel has UPM, else -ENOSYS
 *                            (Python: available(), True or False).
 *   upm_advise(addr, len)    madvise(addr, len, MADV_UPM_MERGEABLE).
 *   upm_advise_self(&res)    advise every private anonymous writable
 *                            mapping of the calling process.
 *   upm_advise_self_ksm(&res) the same ranges get MADV_MERGEABLE instead
 *                            (ksmd merges them later; for comparisons).
 *   upm_advise_pid(pid,&res) the same for another process, through
 *                            pidfd_open() and process_madvise(); needs
 *                            CAP_SYS_NICE and ptrace read access.
 *   upm_anon_ranges(pid,..)  the ranges the advise_* calls take.
 *   upm_read_global(&g)      every integer file of /sys/kernel/mm/upm and
 *                            /sys/kernel/mm/ksm, whatever the kernel has
 *                            (upm_global_free() releases it).
 *   upm_read_counters(d,&c)  every integer file of directory d.
 *   upm_counter(&c, name)    one counter of those, -1 if there is none.
 *   upm_read_value(path,&v)  one number from one file.
 *   upm_read_process(pid,&p) /proc/<pid>/ksm_stat (KSM and UPM lines).
 *   upm_processes(&p, &n)    every process with a nonzero KSM/UPM count.
 *   upm_get_domain()         this process's explicit merge domain (0: none).
 *   upm_set_domain(id)       prctl(PR_SET_UPM_DOMAIN, id): 1..INT_MAX joins
 *                            a domain (needs CAP_SYS_ADMIN), 0 leaves it.
 *   upm_strerror(err)        a message for the codes below.
 *
 * Python: available(), advise(), advise_self(), advise_self(ksm=True),
 * advise_pid(), anon_ranges(), read_global() ({"upm": {...}, "ksm":
 * {...}}), read_counters(), read_value(), read_process(), processes(),
 * get_domain(), set_domain(); the errors below are OSError exceptions
 * with the same errno (UPMUnavailable is ENOSYS, RemoteUnsupported is
 * EOPNOTSUPP, ProcessLookupError is ESRCH).
 *
 * "Available" means the same here and in Python: the directory
 * /sys/kernel/mm/upm (under UPM_ROOT, see below) exists; upm_available()
 * returns 0 then, available() True. It is a cheap test that calls
 * nothing; upm_advise_self(), upm_advise_pid() and upm_read_global()
 * check it first and fail with -ENOSYS without it. An EINVAL from
 * madvise() or prctl() is also turned into -ENOSYS when UPM is not
 * available, and for madvise() when the kernel rejects
 * MADV_UPM_MERGEABLE on one fresh private anonymous page.
 *
 * Every function returns 0 (or a count, where said) on success or a
 * negative errno; none of them ever turns a failure into a silent no-op.
 * -ENOSYS always means "this kernel has no UPM". -EOPNOTSUPP from
 * upm_advise_pid() means "this kernel's process_madvise() does not take
 * MADV_UPM_MERGEABLE" (UPM without remote advice); -ESRCH means the
 * process does not exist or exited before it was advised.
 * upm_strerror() gives a message for these codes.
 *
 * The mappings the advise_* calls take are read from /proc/<pid>/maps:
 * writable, private, not file backed ("[heap]", unnamed and "[anon:...]"
 * mappings). Stacks, guard pages (no write permission), [vvar], [vdso],
 * [vsyscall] and file mappings are skipped. A mapping that disappears
 * between reading the maps and the call (ENOMEM) is counted as skipped.
 * upm_advise_pid() opens a pidfd on the process before it reads the maps
 * and checks through the pidfd afterwards that the process is still
 * alive, so a pid reused in between is never advised.
 *
 * The environment variable UPM_ROOT, when set, is prefixed to every /sys
 * and /proc path the counters are read from (tests use it to point the
 * library at a fake tree). It does not change what madvise() does, nor
 * which maps are read.
 */
#ifndef UPM_H
#define UPM_H

#include <stddef.h>
#include <sys/types.h>
#include <linux/mman.h>
#include <linux/prctl.h>

/*
 * The UAPI headers of a UPM kernel (make headers_install) define these;
 * the values below, for older headers, are the provisional ones of
 * Documentation/admin-guide/mm/upm.rst, kept in this one place.
 */
#ifndef MADV_UPM_MERGEABLE
#define MADV_UPM_MERGEABLE 120
#endif
#ifndef PR_SET_UPM_DOMAIN
#define PR_SET_UPM_DOMAIN 0x55504d53
#define PR_GET_UPM_DOMAIN 0x55504d47
#endif

/* What upm_advise_self() or upm_advise_pid() did */
struct upm_advise_result {
	unsigned long ranges;		/* mappings advised */
	unsigned long bytes;		/* bytes in them */
	unsigned long ranges_skipped;	/* mappings gone before the call */
	double seconds;			/* wall time in madvise() */
};

/* One file of a sysfs directory that holds an integer */
struct upm_counter {
	char *name;
	long value;
};

/* The integer files of one directory, sorted by name */
struct upm_counters {
	size_t nr;
	struct upm_counter *c;
};

/*
 * Every integer file of /sys/kernel/mm/upm/ and /sys/kernel/mm/ksm/, as
 * the running kernel has them: read one with upm_counter(&g.upm,
 * "pages_merged"); a counter the kernel does not have reads as -1.
 */
struct upm_global {
	struct upm_counters upm;
	struct upm_counters ksm;
};

/* /proc/<pid>/ksm_stat; a line the kernel does not print reads as -1 */
struct upm_process {
	pid_t pid;
	char comm[17];			/* /proc/<pid>/comm, or "" */
	long ksm_rmap_items;
	long ksm_zero_pages;
	long ksm_merging_pages;
	long ksm_process_profit;
	long upm_merged_pages;
	long upm_stable_pages;
	long upm_domain;
};

/* A range of a process's address space, [start, end) */
struct upm_range {
	unsigned long start;
	unsigned long end;
};

int upm_available(void);
int upm_advise(void *addr, size_t len);
int upm_advise_self(struct upm_advise_result *res);
int upm_advise_self_ksm(struct upm_advise_result *res);
int upm_advise_pid(pid_t pid, struct upm_advise_result *res);
/* pid 0 is the caller; *ranges is malloc()ed (free() it), *nr set */
int upm_anon_ranges(pid_t pid, struct upm_range **ranges, size_t *nr);
/* -ENOSYS without /sys/kernel/mm/upm; g is valid (maybe empty) anyway */
int upm_read_global(struct upm_global *g);
void upm_global_free(struct upm_global *g);
/* dir under UPM_ROOT, e.g. "/sys/kernel/mm/upm"; -ENOENT if it is missing */
int upm_read_counters(const char *dir, struct upm_counters *c);
void upm_counters_free(struct upm_counters *c);
/* The value of counter name, -1 if c does not have it */
long upm_counter(const struct upm_counters *c, const char *name);
int upm_read_process(pid_t pid, struct upm_process *p);
/* *procs is malloc()ed (free() it), sorted by pid; *nr set */
int upm_processes(struct upm_process **procs, size_t *nr);
/* The domain (>= 0) or a negative errno */
int upm_get_domain(void);
int upm_set_domain(unsigned long domain);
/* Read one number from a file under UPM_ROOT, e.g. "/sys/kernel/mm/ksm/run" */
int upm_read_value(const char *path, long *val);
const char *upm_strerror(int err);

#endif /* UPM_H */

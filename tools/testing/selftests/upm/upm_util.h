/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the UPM selftests: counters, PFNs from
 * /proc/self/pagemap, page flags from /proc/kpageflags, deterministic page
 * content and the KSM knobs.
 */
#ifndef UPM_UTIL_H
#define UPM_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../mm/vm_util.h"

#ifndef MADV_UPM_MERGEABLE
#define MADV_UPM_MERGEABLE 120
#endif
#ifndef PR_SET_UPM_DOMAIN
#define PR_SET_UPM_DOMAIN 0x55504d53
#define PR_GET_UPM_DOMAIN 0x55504d47
#endif

#define KPF_KSM		21
#define KPF_THP		22
#define KPF_ZERO_PAGE	24

long read_ulong(const char *path);
int write_str(const char *path, const char *s);
void read_str(const char *path, char *buf, size_t len);
long upm_counter(const char *name);
void upm_require_kernel(void);
long ksm_counter(const char *name);
long read_key(const char *path, const char *key);
long read_ksm_stat(const char *name);
long read_ksm_stat_in(pid_t pid, const char *name);
uint64_t pagemap_in(pid_t pid, const void *addr);
uint64_t pagemap_of(void *addr);
uint64_t pfn_in(pid_t pid, const void *addr);
uint64_t pfn_of(void *addr);
uint64_t read_kpageflags(uint64_t pfn);
bool is_ksm(void *addr);
void fill(char *p, size_t npages, uint64_t seed);
bool same_as(const char *p, size_t npages, uint64_t seed);
bool is_zero_page_content(const char *p);
char *map_anon(size_t npages);

/* Save and restore the KSM knobs a test touches. */
struct knobs {
	char run[16], sleep[16], scan[16];
};

void knobs_save(struct knobs *k);
void knobs_restore(struct knobs *k);

/*
 * A peer: another process that holds PEER_PAGES pages of a seed's content
 * and answers commands on a pipe. It keeps a model of its own writes (0:
 * the seed's bytes, else the byte written), so that it can tell whether
 * its content is still what it wrote.
 */
#define PEER_PAGES	64

enum peer_advice { PEER_ADVISE_NONE, PEER_ADVISE_UPM, PEER_ADVISE_KSM };

/* What differs between peers; zero-initialised fields mean "as the test" */
struct peer_opts {
	uint64_t seed;
	enum peer_advice advice;
	/* PR_SET_UPM_DOMAIN first, while still root (0: none) */
	unsigned int domain;
	/* then drop to this uid and gid, still ptrace-able (0: stay) */
	uid_t uid;
	/* the cgroup.procs file to join first (NULL: stay) */
	const char *cgroup_procs;
};

enum peer_op { PEER_CHECK = 1, PEER_WRITE, PEER_PFNS, PEER_ADVISE,
	PEER_UNMERGE, PEER_PAGEOUT, PEER_SWAPPED, PEER_HOG, PEER_EXIT };

struct peer {
	pid_t pid;		/* 0: not running */
	int cmd, reply;		/* pipe ends, valid while pid != 0 */
	char *addr;		/* its mapping, in its own address space */
	int err;		/* errno of its first failed setup step, or 0 */
	int status;		/* wait status, set by peer_stop() */
	/* KSM PFNs as of the last peer_pfns() (0: not a KSM page) */
	uint64_t pfn[PEER_PAGES];
};

int drop_to(uid_t uid);
int peer_start(struct peer *t, const struct peer_opts *o);
int peer_spawn(struct peer *t, uint64_t seed, bool advise,
	       const char *cgroup_procs);
int peer_send(struct peer *t, enum peer_op op, int a, int b, int v);
long peer_wait(struct peer *t);
long peer_call(struct peer *t, enum peer_op op, int a, int b, int v);
long peer_mismatches(struct peer *t);
int peer_pfns(struct peer *t);
int peer_stop(struct peer *t);
int shared_range(char *mem, struct peer *t, int a, int b);
int shared_with(char *mem, struct peer *t);
bool page_is(const char *p, int i, uint64_t seed, int byte);
int good_range(const char *p, uint64_t seed, int a, int b);

#endif

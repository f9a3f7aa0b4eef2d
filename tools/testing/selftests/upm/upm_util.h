/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the UPM selftests: counters, PFNs from
 * /proc/<pid>/pagemap (read with ../mm/vm_util), page flags from
 * /proc/kpageflags, deterministic page content and the KSM knobs.
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

#define KPF_KSM		21
#define KPF_THP		22
#define KPF_ZERO_PAGE	24


long read_ulong(const char *path);
int write_str(const char *path, const char *s);
void read_str(const char *path, char *buf, size_t len);
long upm_counter(const char *name);
void upm_require_kernel(void);
long ksm_counter(const char *name);
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

#endif

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * User-guided page merging: madvise(MADV_UPM_MERGEABLE) merges identical
 * anonymous pages during the call, on KSM's machinery. See mm/upm.c.
 */
#ifndef _LINUX_UPM_H
#define _LINUX_UPM_H

#include <linux/errno.h>
#include <linux/types.h>

struct mm_struct;
struct task_struct;
struct vm_area_struct;
struct ksm_stable_node;
struct ksm_rmap_item;

#ifdef CONFIG_UPM
int upm_check_range(struct mm_struct *mm, unsigned long start,
		    unsigned long end);
int upm_merge_range(struct mm_struct *mm, struct task_struct *owner,
		    unsigned long start, unsigned long end);
void upm_stable_node_freed(struct ksm_stable_node *stable_node);
void upm_candidate_removed(struct ksm_rmap_item *rmap_item);
void upm_ksm_exit(struct mm_struct *mm);
void upm_unmerged(struct mm_struct *mm);
bool upm_ksmd_skips(struct vm_area_struct *vma,
		    struct ksm_stable_node *stable_node);
void upm_secure_exec(struct mm_struct *mm);
int upm_prctl(int option, unsigned long arg2, unsigned long arg3,
	      unsigned long arg4, unsigned long arg5);
#else
static inline int upm_check_range(struct mm_struct *mm, unsigned long start,
				  unsigned long end)
{
	return -EINVAL;
}

static inline int upm_merge_range(struct mm_struct *mm,
				  struct task_struct *owner,
				  unsigned long start, unsigned long end)
{
	return -EINVAL;
}

static inline void upm_stable_node_freed(struct ksm_stable_node *stable_node)
{
}

static inline void upm_candidate_removed(struct ksm_rmap_item *rmap_item)
{
}

static inline void upm_ksm_exit(struct mm_struct *mm)
{
}

static inline void upm_unmerged(struct mm_struct *mm)
{
}

static inline bool upm_ksmd_skips(struct vm_area_struct *vma,
				  struct ksm_stable_node *stable_node)
{
	return false;
}

static inline void upm_secure_exec(struct mm_struct *mm)
{
}

static inline int upm_prctl(int option, unsigned long arg2,
			    unsigned long arg3, unsigned long arg4,
			    unsigned long arg5)
{
	return -EINVAL;
}
#endif /* CONFIG_UPM */

#endif /* _LINUX_UPM_H */

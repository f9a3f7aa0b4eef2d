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

#ifdef CONFIG_UPM
int upm_check_range(struct mm_struct *mm, unsigned long start,
		    unsigned long end);
int upm_merge_range(struct mm_struct *mm, struct task_struct *owner,
		    unsigned long start, unsigned long end);
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

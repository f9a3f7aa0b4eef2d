/* SPDX-License-Identifier: GPL-2.0 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM upm

#if !defined(_TRACE_UPM_H) || defined(TRACE_HEADER_MULTI_READ)
#define _TRACE_UPM_H

#include <linux/tracepoint.h>

/**
 * upm_advise_start - called when an MADV_UPM_MERGEABLE merge pass starts
 *
 * @mm:		address space advised
 * @start:	first address of the range
 * @end:	end of the range (exclusive)
 *
 * Allows tracing the start of an advise call.
 */
TRACE_EVENT(upm_advise_start,

	TP_PROTO(struct mm_struct *mm, unsigned long start, unsigned long end),

	TP_ARGS(mm, start, end),

	TP_STRUCT__entry(
		__field(void *,		mm)
		__field(unsigned long,	start)
		__field(unsigned long,	end)
	),

	TP_fast_assign(
		__entry->mm	= mm;
		__entry->start	= start;
		__entry->end	= end;
	),

	TP_printk("mm %p start 0x%lx end 0x%lx",
		  __entry->mm, __entry->start, __entry->end)
);

/**
 * upm_advise_end - called when an MADV_UPM_MERGEABLE merge pass ends
 *
 * @mm:		address space advised
 * @merged:	pages merged into an existing stable page
 * @stable:	pages entered into the index as new stable pages
 * @zero:	pages mapped to the shared zero page
 * @skipped:	pages left alone (absent, busy, pinned, already merged)
 * @err:	return value of the pass
 *
 * Allows tracing the end of an advise call and what it did.
 */
TRACE_EVENT(upm_advise_end,

	TP_PROTO(struct mm_struct *mm, unsigned long merged,
		 unsigned long stable, unsigned long zero,
		 unsigned long skipped, int err),

	TP_ARGS(mm, merged, stable, zero, skipped, err),

	TP_STRUCT__entry(
		__field(void *,		mm)
		__field(unsigned long,	merged)
		__field(unsigned long,	stable)
		__field(unsigned long,	zero)
		__field(unsigned long,	skipped)
		__field(int,		err)
	),

	TP_fast_assign(
		__entry->mm	 = mm;
		__entry->merged	 = merged;
		__entry->stable	 = stable;
		__entry->zero	 = zero;
		__entry->skipped = skipped;
		__entry->err	 = err;
	),

	TP_printk("mm %p merged %lu stable %lu zero %lu skipped %lu err %d",
		  __entry->mm, __entry->merged, __entry->stable,
		  __entry->zero, __entry->skipped, __entry->err)
);

#endif /* _TRACE_UPM_H */

/* This part must be outside protection */
#include <trace/define_trace.h>

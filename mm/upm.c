// SPDX-License-Identifier: GPL-2.0-only
/*
 * User-guided page merging: merge identical pages at madvise() time.
 *
 * Copyright (C) 2026 The UPM developers
 */

#define pr_fmt(fmt) "upm: " fmt

#include <linux/debugfs.h>
#include <linux/hash.h>
#include <linux/highmem.h>
#include <linux/huge_mm.h>
#include <linux/kobject.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/mm_inline.h>
#include <linux/memcontrol.h>
#include <linux/mmap_lock.h>
#include <linux/pagewalk.h>
#include <linux/prctl.h>
#include <linux/random.h>
#include <linux/rmap.h>
#include <linux/seq_file.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/string_helpers.h>
#include <linux/stringify.h>
#include <linux/swap.h>
#include <linux/sysfs.h>
#include <linux/upm.h>
#include <linux/user_namespace.h>
#include <linux/workqueue.h>
#include <linux/xxhash.h>

#include "internal.h"
#include "ksm_internal.h"

#define CREATE_TRACE_POINTS
#include <trace/events/upm.h>

/**
 * DOC: Overview
 *
 * A process calls madvise(addr, len, MADV_UPM_MERGEABLE) on memory that is
 * probably duplicated in other processes. During the call, UPM merges every
 * present anonymous page of the range whose content is already known, and
 * makes every other page a candidate, so the next adviser merges with it.
 * Merged pages are ordinary KSM pages: UPM only decides *when* to merge and
 * *with what*; all merging is done by KSM's own functions, so reclaim, swap,
 * migration, fork, copy-on-write, munmap, exit, MADV_UNMERGEABLE and
 * "echo 2 > /sys/kernel/mm/ksm/run" treat them exactly like pages merged
 * by ksmd.
 *
 * The data path of one call:
 *
 * 1. madvise validates the whole range first (a hole gives -ENOMEM, a
 *    mapping KSM can never merge gives -EINVAL) and sets VM_MERGEABLE on
 *    it, registering the mm with KSM, exactly as MADV_MERGEABLE does.
 * 2. With the mmap lock dropped, upm_merge_range() walks the range in
 *    batches of UPM_BATCH pages. Under mmap_read_lock it takes a reference
 *    on each present anonymous page (splitting transparent huge pages, as
 *    KSM does; skipping KSM and pinned pages).
 * 3. Outside any lock it hashes each page (64-bit xxhash) and notes
 *    whether it is all zeroes.
 * 4. Under ksm_thread_mutex, for each page: the index of shared pages is
 *    looked up by (domain, hash). On a match, the merge is reserved: the
 *    page's rmap_item joins the match's stable node, flagged
 *    UPM_PENDING_FLAG, and a reference on its page is taken
 *    (upm_reserve_twin()). With the mutex dropped, the reserved pages are
 *    merged with ksm_merge_one_page(), which write-protects each and
 *    compares it in full (memcmp) with its match before it maps the match
 *    in its place; zero pages are replaced by the shared zero page the same
 *    way (upm_merge_planned()). Under the mutex again, the items lose
 *    their flag, or leave the node where the merge failed, and such a page
 *    takes the path of step 5 (upm_finish_planned()). This is where
 *    advisers spend their time once a content is shared, so they do so in
 *    parallel. An item in the node before its mapping exists is merely
 *    stale, which KSM tolerates everywhere; the other way round, a mapping
 *    rmap cannot find, never happens.
 * 5. Without a shared match (or after a failed reserved merge), under the
 *    mutex, the page is merged into a match with ksm_merge_page(), which
 *    compares as in step 4, then ksm_stable_node_append(); failing that, the
 *    index of candidates is looked up the same way. A candidate is an advised
 *    page nobody shared yet, left writable and in place; only its KSM rmap_item
 *    is linked into the index. On a match, the candidate's page is made a KSM
 *    page and entered into the index of shared pages, then the adviser's page
 *    is merged into it as in step 4. With safe frames, the default, the
 *    candidate's page is write-protected, then compared with the adviser's page
 *    as it is copied into a freshly allocated frame, which replaces it
 *    (ksm_merge_into_copy()): no adviser chooses the physical frame others will
 *    share, the copy is exact, and each page is read once before the final
 *    compare. Without safe frames, the two pages are compared unlocked, as ksmd
 *    does, and the candidate's page itself is write-protected, unless it is
 *    mapped elsewhere too (shared since a fork): that one is copied. At most
 *    UPM_CANDIDATE_TRIES candidates that fail (busy, or different) are tried
 *    per page. A candidate whose page is gone or changed is dropped when it is
 *    looked up (a changed one found so once write-protected stays so, as after
 *    a failed merge in ksmd: its next write reuses it). If the adviser's merge
 *    then fails (its page is busy, or was written to), the candidate's owner
 *    gets its page back, writable (upm_unpublish()).
 * 6. A page with no match at all becomes a candidate itself.
 *
 * So a unique page costs a hash and its rmap_item, and stays writable: its
 * owner's next write takes no fault. Only pages that are actually shared
 * are write-protected, copied, and given a stable node.
 *
 * The index of shared pages is a hash table of &struct upm_entry, each
 * pointing at one KSM stable node (never a chain head). Both indexes are
 * keyed by the content hash and a merge domain, so pages only ever meet
 * pages of their own domain. A candidate lives as long as its rmap_item:
 * KSM calls upm_candidate_removed() from remove_rmap_item_from_tree(),
 * whatever the reason (the page was merged, unmapped, or its mm exits). An
 * entry lives exactly as long as its stable node: KSM calls
 * upm_stable_node_freed() from free_stable_node(), whatever the reason the
 * node goes away (its page was freed, unmerged, migrated away, or memory
 * was offlined). Stable nodes do not pin their page, so every hit is
 * revalidated with ksm_get_folio() before use.
 *
 * Merge domains. Copy-on-write makes a write to a shared page slow, so
 * whoever can merge a page with yours learns that you hold its content.
 * By default (merge_policy "domain") a page only meets pages of the same
 * domain: the explicit domain of its mm (PR_SET_UPM_DOMAIN; joining one
 * needs CAP_SYS_ADMIN; fork and a plain exec keep it, a secure exec drops
 * it), or else the owner's user namespace and effective uid, that is,
 * processes that could already read each other's memory. The stable nodes
 * of such pages are kept off KSM's stable tree (ksm_stable_node_add()),
 * and ksmd leaves the ranges advised to UPM (VM_UPM) alone
 * (upm_ksmd_skips()), so neither ksmd nor KSM's tree statistics connect
 * two domains. ksmd still keeps the rmap_items of those ranges right (it
 * gives a forked child's KSM pages their own) and leaves candidates in
 * place. merge_policy "global" merges everything, as ksmd does, and puts
 * the nodes in the stable tree; ksmd may then take a candidate into its
 * unstable tree, which removes it from UPM's index (ksmd then merges it
 * at its own pace).
 *
 * What UPM allocates for an adviser (entries, stable nodes, rmap_items)
 * is charged to the advised mm's memory cgroup; a safe frame to that of
 * the mm whose page it replaces. None of it reclaims hard or OOM-kills:
 * advice is a hint. Only the stable node, allocated once its page is
 * merged, may use reserves and go over the memcg limit, since failing it
 * would mean breaking the merge again.
 *
 * A candidate's owner may write to it at any time, as with the pages in
 * ksmd's unstable tree: the hash only finds it, and it is merged only if
 * it still equals the adviser's page once both are write-protected.
 *
 * Locking order (the same as ksmd's): ksm_thread_mutex, then mmap_lock
 * (read), then the folio lock. UPM never waits for ksm_thread_mutex while
 * holding an mmap_lock, and takes one mm's mmap_lock at a time: the
 * adviser's, or a candidate's to merge it. The mutex protects both
 * indexes, KSM's trees and the mm's rmap_item list; it is dropped after
 * every phase of a batch, so ksmd and other advisers are never starved,
 * and cond_resched() runs between batches. Each batch holds upm_merge_sem
 * for read, taken before it collects its pages (so before any page
 * reference or the mutex), and the merges of step 4 run under it
 * and mmap_lock (read), then the folio lock, without the mutex. "echo 2 >
 * run" holds upm_merge_sem for write, taken before the mutex, while it
 * unmerges everything (upm_block_merges()), so that no merge lands behind
 * it. So the order is: upm_merge_sem, ksm_thread_mutex, mmap_lock, folio
 * lock.
 * UPM only ever inserts into an mm's rmap_item list, never frees from it:
 * ksmd's scan cursor may point into that list while the mutex is dropped.
 * An item UPM inserts at that cursor, for an address ksmd has passed,
 * moves the cursor past it, or ksmd would free it (ksm_get_rmap_item()).
 *
 * Stable nodes do not learn when their page is freed; KSM finds stale ones
 * when it next looks at them. Nothing walks the nodes kept off the tree, so
 * after an mm that used UPM exits or unmerges a range, a work item looks at
 * every index entry (upm_prune_workfn()), which frees the stale nodes and
 * their entries, drops the candidates of exited mms whose rmap_items wait
 * for ksmd, and frees what exits could not (ksm_free_exited_mms()): the
 * rmap_items and KSM slot of an mm that exited while the mutex was busy,
 * or before a child it forked. Without ksmd, nothing else revisits an
 * item whose page was written to or unmapped: such items stay counted in
 * KSM's pages_shared and pages_sharing until their mm exits, ksmd runs,
 * or the range is advised again.
 */

/* Pages handled per batch: hashed unlocked, then merged under the mutex */
#define UPM_BATCH	64
/* Addresses looked at per mmap_read_lock hold, present or not */
#define UPM_WALK_MAX	(16 * UPM_BATCH)
/* Candidates of one content tried per page before it becomes one itself */
#define UPM_CANDIDATE_TRIES	4

/**
 * struct upm_entry - one index entry: a KSM stable page of known content
 * @node:	link in its bucket of &struct upm_index
 * @hash:	64-bit xxhash of the page content when it was entered
 * @domain:	merge domain of the process that entered it
 * @stable_node: the KSM stable node (a regular node or a chain dup, never
 *		a chain head); valid while the entry is in the index
 * @user_ns:	the user namespace whose inode number @domain holds, with a
 *		reference, so that no new namespace gets that number while
 *		the entry lives; NULL for explicit domains and the global
 *		policy
 */
struct upm_entry {
	struct hlist_node node;
	u64 hash;
	u64 domain;
	struct ksm_stable_node *stable_node;
	struct user_namespace *user_ns;
};

/**
 * struct upm_index - hash table of &struct upm_entry
 * @buckets:	2^@bits bucket heads
 * @bits:	log2 of the number of buckets
 * @nr_entries:	number of entries in the table
 *
 * The global index is protected by ksm_thread_mutex. The functions below
 * take the index as an argument so that KUnit can test private copies.
 */
struct upm_index {
	struct hlist_head *buckets;
	unsigned int bits;
	unsigned long nr_entries;
};

static struct upm_index upm_index;
/*
 * Candidates: KSM rmap_items of advised pages that nobody shared yet,
 * linked by their upm_node, keyed like upm_index. Under ksm_thread_mutex.
 */
static struct upm_index upm_candidates;
static struct kmem_cache *upm_entry_cache;
/*
 * Read-held by advisers through each batch, whose merges partly run
 * without ksm_thread_mutex (see upm_merge_batch()); "echo 2 > run" holds
 * it for write while it unmerges everything, so that no merge lands
 * behind it.
 */
static DECLARE_RWSEM(upm_merge_sem);
/* Set once the index exists: madvise refuses the advice before that */
static bool upm_ready __read_mostly;

/*
 * Seed of the content hash, random at boot, so that nobody can compute
 * which bucket a content lands in and flood it
 */
static u64 upm_hash_seed __read_mostly;
/* xxhash of a zero-filled page: a cheap first test for zero pages */
static u64 upm_zero_hash __read_mostly;

/* /sys/kernel/mm/upm/merge_policy; changed under ksm_thread_mutex only */
enum upm_policy {
	UPM_POLICY_DOMAIN,	/* merge within a domain; the default */
	UPM_POLICY_GLOBAL,	/* merge everything, as ksmd does */
};
static const char * const upm_policy_names[] = {
	[UPM_POLICY_DOMAIN] = "domain",
	[UPM_POLICY_GLOBAL] = "global",
};
static enum upm_policy upm_merge_policy __read_mostly = UPM_POLICY_DOMAIN;

/* /sys/kernel/mm/upm/safe_frames: share copies, never an adviser's frame */
static bool upm_safe_frames __read_mostly = true;

/* Counters in /sys/kernel/mm/upm/: see mm/upm_counters.h */
enum upm_counter {
#define UPM_COUNTER(id)	UPM_##id,
#include "upm_counters.h"
#undef UPM_COUNTER
	UPM_NR_COUNTERS
};

static atomic_long_t upm_stats[UPM_NR_COUNTERS];

/* ---- The indexes: shared pages (entries) and candidates ---- */

/**
 * upm_index_init() - allocate an empty index
 * @idx:	index to initialise
 * @bits:	log2 of the number of buckets
 *
 * Return: 0 on success, -ENOMEM if the buckets cannot be allocated.
 */
static int upm_index_init(struct upm_index *idx, unsigned int bits)
{
	idx->buckets = kvcalloc(1UL << bits, sizeof(*idx->buckets),
				GFP_KERNEL);
	if (!idx->buckets)
		return -ENOMEM;
	idx->bits = bits;
	idx->nr_entries = 0;
	return 0;
}

static void upm_index_destroy(struct upm_index *idx)
{
	WARN_ON_ONCE(idx->nr_entries);
	kvfree(idx->buckets);
	idx->buckets = NULL;
}

static struct hlist_head *upm_index_bucket(struct upm_index *idx, u64 hash,
					   u64 domain)
{
	/* hash_64() needs at least one bit */
	if (!idx->bits)
		return idx->buckets;
	return &idx->buckets[hash_64(hash ^ (domain * GOLDEN_RATIO_64),
				     idx->bits)];
}

static void upm_index_add(struct upm_index *idx, struct upm_entry *e)
{
	hlist_add_head(&e->node, upm_index_bucket(idx, e->hash, e->domain));
	idx->nr_entries++;
}

static void upm_index_del(struct upm_index *idx, struct upm_entry *e)
{
	hlist_del(&e->node);
	idx->nr_entries--;
}

static bool upm_entry_matches(struct upm_entry *e, u64 hash, u64 domain)
{
	return e->hash == hash && e->domain == domain;
}

/*
 * Iterate over the bucket of (@hash, @domain); @e may be deleted. Callers
 * skip entries for which upm_entry_matches() is false.
 */
#define upm_index_for_each_in_bucket(e, tmp, idx, hash, domain)	\
	hlist_for_each_entry_safe(e, tmp,				\
				  upm_index_bucket(idx, hash, domain), node)

/*
 * The merge domain of @mm's pages, advised by or on behalf of @owner, as a
 * 64-bit key: 0 under the global policy; the explicit domain id (below
 * 2^31) if the mm has one; else the owner's user namespace (its inode
 * number is never 0, so the key is at least 2^32) and effective uid. In
 * that last case, *@user_ns gets a reference on the namespace: entries
 * keep one, so that its inode number is not reused while they live.
 * Should be called under ksm_thread_mutex, which orders it against
 * changes of the policy.
 */
static u64 upm_domain_of(struct mm_struct *mm, struct task_struct *owner,
			 struct user_namespace **user_ns)
{
	const struct cred *cred;
	unsigned int id;
	u64 domain;

	*user_ns = NULL;
	if (upm_merge_policy == UPM_POLICY_GLOBAL)
		return 0;
	id = READ_ONCE(mm->upm_domain);
	if (id)
		return id;
	rcu_read_lock();
	cred = __task_cred(owner);
	domain = ((u64)cred->user_ns->ns.inum << 32) | __kuid_val(cred->euid);
	*user_ns = get_user_ns(cred->user_ns);
	rcu_read_unlock();
	return domain;
}

/* What the batch's phase without the mutex does with a page */
enum upm_plan {
	UPM_PLAN_NONE,		/* nothing: handled, or skipped */
	UPM_PLAN_LOCKED,	/* merge it under the mutex: upm_merge_page() */
	UPM_PLAN_ZERO,		/* replace it by the shared zero page */
	UPM_PLAN_TWIN,		/* merge it into a reserved KSM page */
};

/**
 * struct upm_page - a page of the batch being merged
 * @page:	the page, with a reference held
 * @addr:	its user virtual address
 * @hash:	xxhash of its content when it was hashed
 * @kfolio:	with %UPM_PLAN_TWIN, the KSM folio it is to be merged into,
 *		with a reference held until the batch is done
 * @stable_node: with %UPM_PLAN_TWIN, the stable node of @kfolio, which the
 *		reference keeps
 * @anon_vma:	with %UPM_PLAN_TWIN, the anon_vma its reserved rmap_item
 *		holds (compared only, never dereferenced)
 * @zero:	its content was all zeroes then
 * @plan:	what upm_merge_planned() does with it (&enum upm_plan)
 * @merged:	upm_merge_planned() merged it
 */
struct upm_page {
	struct page *page;
	unsigned long addr;
	u64 hash;
	struct folio *kfolio;
	struct ksm_stable_node *stable_node;
	struct anon_vma *anon_vma;
	bool zero;
	u8 plan;
	bool merged;
};

/**
 * struct upm_pass - state of one MADV_UPM_MERGEABLE call
 * @mm:		the address space being advised
 * @owner:	the task whose pages these are (the caller, or the target
 *		of process_madvise()), for its merge domain
 * @domain:	merge domain of the pages, looked up for each batch
 * @user_ns:	the user namespace @domain is keyed by, referenced, or NULL
 * @addr:	next address to look at
 * @end:	end of the advised range
 * @slot:	the mm's KSM slot; valid under ksm_thread_mutex only
 * @cursor:	link in @slot's rmap_list before which the next rmap_item
 *		goes; valid while @cursor_gen == ksm_rmap_items_freed
 * @cursor_gen:	ksm_rmap_items_freed when @cursor was last checked
 * @batch_cursor: @cursor as the batch's first phase began
 * @released:	the batch's page references were dropped for memory being
 *		offlined: its pages are skipped (upm_release_batch())
 * @memcg:	memory cgroup of @mm, while ksm_thread_mutex is held
 * @old_memcg:	the active memory cgroup to restore after
 * @nr:		pages in @batch
 * @batch:	the pages being merged
 * @nr_put:	references in @put
 * @put:	references to drop together once the batch is merged: on the
 *		batch's pages, and on the candidates' pages that their copies
 *		replaced, which are freed then
 * @count:	this call's counters, added to upm_stats at the end
 */
struct upm_pass {
	struct mm_struct *mm;
	struct task_struct *owner;
	u64 domain;
	struct user_namespace *user_ns;
	unsigned long addr;
	unsigned long end;
	struct ksm_mm_slot *slot;
	struct ksm_rmap_item **cursor;
	unsigned long cursor_gen;
	struct ksm_rmap_item **batch_cursor;
	bool released;
	struct mem_cgroup *memcg;
	struct mem_cgroup *old_memcg;
	unsigned int nr;
	struct upm_page batch[UPM_BATCH];
	unsigned int nr_put;
	struct page *put[2 * UPM_BATCH];
	unsigned long count[UPM_NR_COUNTERS];
};

/* ---- One batch of a pass: collect, hash, merge ---- */

/*
 * May UPM merge the pages of @vma? Not once MADV_UNMERGEABLE has cleared
 * VM_MERGEABLE (or VM_UPM, under the domain policy) since the advice.
 * Should be called under the mmap lock of @vma's mm.
 */
static bool upm_vma_advised(struct vm_area_struct *vma)
{
	if (!(vma->vm_flags & VM_MERGEABLE) || !vma->anon_vma)
		return false;
	return (vma->vm_flags & VM_UPM) ||
	       READ_ONCE(upm_merge_policy) == UPM_POLICY_GLOBAL;
}

/*
 * Take a reference on the page mapped at p->addr, if it is a candidate.
 * Should be called under mmap_read_lock.
 */
static void upm_collect_page(struct upm_pass *p, struct vm_area_struct *vma)
{
	enum upm_counter skip = UPM_NR_COUNTERS;
	bool split_tried = false;
	struct folio_walk fw;
	struct folio *folio;
	struct page *page;

again:
	folio = folio_walk_start(&fw, vma, p->addr, 0);
	if (!folio) {
		p->count[UPM_SKIPPED_ABSENT]++;
		return;
	}
	if (folio_is_zone_device(folio) || !folio_test_anon(folio))
		skip = UPM_SKIPPED_ABSENT;
	else if (folio_test_ksm(folio))
		skip = UPM_SKIPPED_KSM;
	else if (folio_maybe_dma_pinned(folio))
		skip = UPM_SKIPPED_PINNED;
	else
		folio_get(folio);
	page = fw.page;
	folio_walk_end(&fw, vma);
	if (skip != UPM_NR_COUNTERS) {
		p->count[skip]++;
		return;
	}

	if (folio_test_large(folio)) {
		/* KSM shares small pages only: split, as ksmd would. */
		int err = -EBUSY;

		if (!split_tried && folio_trylock(folio)) {
			err = split_folio(folio);
			folio_unlock(folio);
		}
		folio_put(folio);
		if (err) {
			p->count[UPM_SKIPPED_THP]++;
			return;
		}
		split_tried = true;
		goto again;
	}
	p->batch[p->nr].page = page;
	p->batch[p->nr].addr = p->addr;
	p->batch[p->nr].kfolio = NULL;
	p->nr++;
}

/*
 * Fill p->batch from p->addr on, skipping what is not mapped or not
 * mergeable any more (the range may have changed since madvise checked it).
 */
static void upm_collect(struct upm_pass *p)
{
	unsigned long walk_end = p->addr + UPM_WALK_MAX * PAGE_SIZE;
	struct vm_area_struct *vma;
	unsigned long vend;

	mmap_assert_locked(p->mm);
	p->nr = 0;
	if (walk_end < p->addr || walk_end > p->end)
		walk_end = p->end;
	while (p->addr < walk_end && p->nr < UPM_BATCH) {
		vma = find_vma(p->mm, p->addr);
		if (!vma || vma->vm_start >= walk_end) {
			p->count[UPM_SKIPPED_ABSENT] += (walk_end - p->addr) >>
						     PAGE_SHIFT;
			p->addr = walk_end;
			break;
		}
		if (vma->vm_start > p->addr) {
			p->count[UPM_SKIPPED_ABSENT] +=
				(vma->vm_start - p->addr) >> PAGE_SHIFT;
			p->addr = vma->vm_start;
		}
		vend = min(vma->vm_end, walk_end);
		if (!upm_vma_advised(vma)) {
			p->count[UPM_SKIPPED_ABSENT] += (vend - p->addr) >>
						     PAGE_SHIFT;
			p->addr = vend;
			continue;
		}
		for (; p->addr < vend && p->nr < UPM_BATCH;
		     p->addr += PAGE_SIZE)
			upm_collect_page(p, vma);
	}
}

static u64 upm_hash_page(struct page *page, bool *zero)
{
	void *addr = kmap_local_page(page);
	u64 hash = xxh64(addr, PAGE_SIZE, upm_hash_seed);

	*zero = hash == upm_zero_hash && !memchr_inv(addr, 0, PAGE_SIZE);
	kunmap_local(addr);
	return hash;
}

/*
 * Find the mm's KSM slot and make sure the rmap_list cursor is still
 * valid. Should be called under ksm_thread_mutex.
 *
 * Return: false if the mm is no longer registered with KSM.
 */
static bool upm_find_slot(struct upm_pass *p)
{
	struct ksm_mm_slot *mm_slot;

	lockdep_assert_held(&ksm_thread_mutex);
	mm_slot = ksm_mm_slot_find(p->mm);
	/* ksmd may have freed rmap_items while the mutex was dropped */
	if (mm_slot != p->slot || p->cursor_gen != ksm_rmap_items_freed) {
		p->slot = mm_slot;
		p->cursor = mm_slot ? &mm_slot->rmap_list : NULL;
		p->cursor_gen = ksm_rmap_items_freed;
	}
	return mm_slot;
}

/*
 * Move the rmap_list cursor to the link where the item for @addr is or
 * belongs: items are sorted by address, and the cursor only moves up.
 */
static struct ksm_rmap_item **upm_cursor_to(struct upm_pass *p,
					    unsigned long addr)
{
	struct ksm_rmap_item **link = p->cursor;

	while (*link && ((*link)->address & PAGE_MASK) < addr)
		link = &(*link)->rmap_list;
	p->cursor = link;
	return link;
}

/*
 * The rmap_item for @addr: the existing one, or a new one linked into the
 * sorted rmap_list. Never frees an item (see the DOC comment).
 */
static struct ksm_rmap_item *upm_rmap_item(struct upm_pass *p,
					   unsigned long addr)
{
	/* The link is NULL or at or above addr: nothing is freed here */
	return ksm_get_rmap_item(p->slot, upm_cursor_to(p, addr), addr);
}

/* The existing rmap_item for @addr, or NULL: as upm_rmap_item(), no new */
static struct ksm_rmap_item *upm_find_rmap_item(struct upm_pass *p,
						unsigned long addr)
{
	struct ksm_rmap_item **link = upm_cursor_to(p, addr);

	if (*link && ((*link)->address & PAGE_MASK) == addr)
		return *link;
	return NULL;
}

/*
 * Merge the adviser's page into the KSM page of @stable_node. The pages
 * are compared in full once ours is write-protected.
 *
 * Return: 0 if merged; -ENOENT if the node is stale (it is freed, and its
 * entry with it) or has as many sharers as it may; -EBUSY if a page was
 * busy; -EILSEQ if the pages differ.
 */
static int upm_merge_into(struct upm_pass *p, struct upm_page *up,
			  struct ksm_rmap_item *rmap_item,
			  struct ksm_stable_node *stable_node)
{
	struct folio *kfolio;
	struct page *kpage;
	int err = 0;

	/*
	 * Take and drop the folio lock, as stable_tree_search() does, so
	 * that a migration in progress sees our reference and backs off.
	 */
	kfolio = ksm_get_folio(stable_node, KSM_GET_FOLIO_TRYLOCK);
	if (IS_ERR(kfolio))
		return -EBUSY;
	if (!kfolio)
		return -ENOENT;
	folio_unlock(kfolio);
	kpage = folio_page(kfolio, 0);
	if (!ksm_stable_node_can_share(stable_node)) {
		err = -ENOENT;
	} else if (ksm_merge_page(rmap_item, up->page, kpage)) {
		/* A second look tells a busy page from a different one */
		err = pages_identical(up->page, kpage) ? -EBUSY : -EILSEQ;
	} else {
		/* Our reference keeps stable_node on this folio. */
		folio_lock(kfolio);
		ksm_stable_node_append(rmap_item, stable_node, false);
		folio_unlock(kfolio);
		p->mm->upm_merged_pages++;
		p->count[UPM_PAGES_MERGED]++;
	}
	folio_put(kfolio);
	return err;
}

/* Has the adviser's page been written to since it was hashed? */
static bool upm_page_changed(struct upm_page *up)
{
	bool zero;

	return upm_hash_page(up->page, &zero) != up->hash;
}

/*
 * Merge the page into a twin from the index of shared pages.
 *
 * Return: true if a twin was found (merged, or the merge was refused).
 */
static bool upm_merge_with_twin(struct upm_pass *p, struct upm_page *up,
				struct ksm_rmap_item *rmap_item)
{
	struct upm_entry *e;
	struct hlist_node *tmp;
	int err;

	upm_index_for_each_in_bucket(e, tmp, &upm_index, up->hash, p->domain) {
		if (!upm_entry_matches(e, up->hash, p->domain))
			continue;
		err = upm_merge_into(p, up, rmap_item, e->stable_node);
		if (err == -ENOENT)
			continue;
		if (err == -EILSEQ && !upm_page_changed(up)) {
			p->count[UPM_HASH_COLLISIONS]++;
			continue;
		}
		/* Busy, or written to since it was hashed */
		if (err)
			p->count[UPM_SKIPPED_BUSY]++;
		return true;
	}
	return false;
}

/*
 * A fresh frame to share the content of @page, in @page's NUMA node,
 * charged to the memory cgroup of @mm as the page it replaces was. It is
 * filled once @page is write-protected (ksm_merge_into_copy()), and comes
 * locked, so that nothing that finds it on the LRU meanwhile (reclaim,
 * migration) touches it before it holds its content and stable node.
 */
static struct folio *upm_alloc_frame(struct mm_struct *mm, struct page *page)
{
	struct folio *folio;

	/* A hint: never reclaim hard or OOM-kill for it, fail and count it */
	folio = __folio_alloc_node(GFP_HIGHUSER_MOVABLE | __GFP_NORETRY |
				   __GFP_NOWARN, 0, page_to_nid(page));
	if (!folio)
		return NULL;
	if (mem_cgroup_charge(folio, mm, GFP_KERNEL | __GFP_NORETRY)) {
		folio_put(folio);
		return NULL;
	}
	__folio_set_locked(folio);
	__folio_set_swapbacked(folio);
	folio_set_dirty(folio);
	ksm_prepare_kfolio(folio);
	/* On the LRU before it is mapped, as a newly faulted page is */
	folio_add_lru(folio);
	return folio;
}

/*
 * Charge what is allocated from here on to nobody (the root memory cgroup),
 * as ksmd's allocations are. Return: the active memcg to restore after.
 */
static struct mem_cgroup *upm_charge_nobody(void)
{
#ifdef CONFIG_MEMCG
	return set_active_memcg(root_mem_cgroup);
#else
	return NULL;
#endif
}

/*
 * Enter the adviser's page as a candidate: it stays writable, and only
 * its rmap_item (which KSM keeps in the mm's rmap_list anyway) is linked
 * into the index, keyed by its hash and domain.
 */
static void upm_candidate_add(struct upm_pass *p,
			      struct ksm_rmap_item *rmap_item, u64 hash)
{
	/* Its fields share unions with those of KSM's trees: leave them */
	ksm_remove_rmap_item(rmap_item);
	rmap_item->upm_hash = hash;
	rmap_item->oldchecksum = lower_32_bits(p->domain);
	rmap_item->upm_user_ns = p->user_ns ? get_user_ns(p->user_ns) : NULL;
	rmap_item->address |= UPM_CANDIDATE_FLAG;
	hlist_add_head(&rmap_item->upm_node,
		       upm_index_bucket(&upm_candidates, hash, p->domain));
	upm_candidates.nr_entries++;
	p->count[UPM_PAGES_CANDIDATE]++;
}

/*
 * Make @page, mapped at @rmap_item, a KSM page and enter it into the index
 * with @hash: the page of a candidate that the adviser's page @expected,
 * of that hash, has just matched. With @copy (safe frames), @page is
 * write-protected, then compared with @expected while it is copied into
 * a fresh frame that replaces it (ksm_merge_into_copy()); without, @page
 * itself is write-protected and becomes the KSM page. Either way the
 * adviser's merge compares its page with the KSM page in full once its own
 * is write-protected. The page is not hashed again: if both pages were
 * written to alike since they were hashed (racing writers on both sides),
 * the entry's hash is stale, and lookups miss it, or find it and fail the
 * full compare (counted as a hash collision). Nothing is ever merged on a
 * hash alone.
 *
 * Return: 0 with the new stable node in *@nodep; -EILSEQ if @page differs
 * from @expected; -EBUSY if @page could not be write-protected; -ENOMEM if
 * the metadata or the frame could not be allocated.
 */
static int upm_publish(struct upm_pass *p, struct ksm_rmap_item *rmap_item,
		       struct page *page, u64 hash, struct page *expected,
		       bool copy, struct ksm_stable_node **nodep)
{
	struct ksm_stable_node *stable_node;
	struct folio *kfolio;
	struct upm_entry *e;
	int err;

	e = kmem_cache_alloc(upm_entry_cache,
			     GFP_KERNEL | __GFP_NORETRY | __GFP_NOWARN);
	if (!e)
		return -ENOMEM;
	if (copy) {
		kfolio = upm_alloc_frame(rmap_item->mm, page);
		if (!kfolio) {
			err = -ENOMEM;
			goto out_entry;
		}
		err = ksm_merge_into_copy(rmap_item, page, kfolio, expected);
	} else {
		/* Fails rather than waits for the page lock, as ksmd does */
		err = ksm_merge_page(rmap_item, page, NULL);
		if (err) {
			err = -EBUSY;
			goto out_entry;
		}
		kfolio = page_folio(page);
		folio_get(kfolio);
		folio_lock(kfolio);
	}
	if (err) {
		if (err != -EILSEQ)
			err = -EBUSY;
		goto out_folio;
	}

	if (p->domain) {
		stable_node = ksm_stable_node_add(kfolio, false);
	} else {
		/*
		 * KSM's own node, allocated as ksmd does (it may dip into
		 * reserves): not charged, so that the hint cannot OOM-kill.
		 */
		struct mem_cgroup *memcg = upm_charge_nobody();

		stable_node = ksm_stable_node_add(kfolio, true);
		set_active_memcg(memcg);
	}
	if (stable_node) {
		ksm_stable_node_append(rmap_item, stable_node, false);
		e->hash = hash;
		e->domain = p->domain;
		e->user_ns = p->user_ns ? get_user_ns(p->user_ns) : NULL;
		e->stable_node = stable_node;
		stable_node->upm_entry = e;
		upm_index_add(&upm_index, e);
	}
	folio_unlock(kfolio);
	folio_put(kfolio);
	if (!stable_node) {
		/* Undo the write protection, as cmp_and_merge_page() does. */
		ksm_break_cow(rmap_item);
		/* It left the index when it was merged: enter it again */
		upm_candidate_add(p, rmap_item, hash);
		p->count[UPM_PAGES_CANDIDATE]--;
		err = -ENOMEM;
		goto out_entry;
	}
	if (copy)
		p->count[UPM_PAGES_COPIED]++;
	p->count[UPM_PAGES_STABLE_NEW]++;
	rmap_item->mm->upm_stable_pages++;
	*nodep = stable_node;
	return 0;

out_folio:
	folio_unlock(kfolio);
	folio_put(kfolio);
out_entry:
	kmem_cache_free(upm_entry_cache, e);
	return err;
}

/* The merge domain a candidate was advised in, as upm_domain_of() keys it */
static u64 upm_candidate_domain(struct ksm_rmap_item *cand)
{
	if (cand->upm_user_ns)
		return ((u64)cand->upm_user_ns->ns.inum << 32) |
		       cand->oldchecksum;
	return cand->oldchecksum;
}

/**
 * upm_candidate_removed() - a candidate's rmap_item leaves UPM's index
 * @rmap_item:	the rmap_item, with UPM_CANDIDATE_FLAG
 *
 * Called by UPM, and by remove_rmap_item_from_tree() whenever KSM is done
 * with the rmap_item (its page was merged or unmapped, or its mm exits),
 * so that no candidate outlives its rmap_item. Under ksm_thread_mutex.
 */
void upm_candidate_removed(struct ksm_rmap_item *rmap_item)
{
	lockdep_assert_held(&ksm_thread_mutex);
	hlist_del(&rmap_item->upm_node);
	upm_candidates.nr_entries--;
	if (rmap_item->upm_user_ns)
		put_user_ns(rmap_item->upm_user_ns);
	rmap_item->upm_user_ns = NULL;
	rmap_item->address &= PAGE_MASK;
}

/*
 * Is the candidate's mm still in the domain the candidate was entered in?
 * A process that joined or left an explicit domain since takes its pages
 * with it (pages merged before stay merged, as after PR_SET_UPM_DOMAIN).
 */
static bool upm_candidate_current(struct ksm_rmap_item *cand)
{
	unsigned int id = cand->upm_user_ns ? 0 : cand->oldchecksum;

	if (upm_merge_policy == UPM_POLICY_GLOBAL)
		return true;
	return READ_ONCE(cand->mm->upm_domain) == id;
}

static void upm_candidate_drop(struct upm_pass *p, struct ksm_rmap_item *cand)
{
	upm_candidate_removed(cand);
	p->count[UPM_CANDIDATES_DROPPED]++;
}

/* Drop a page reference with the batch's (see &struct upm_pass.put) */
static void upm_put_later(struct upm_pass *p, struct page *page)
{
	if (p->nr_put < ARRAY_SIZE(p->put))
		p->put[p->nr_put++] = page;
	else
		put_page(page);
}

/* Is @page one of the batch's pages (on which the batch holds a reference)? */
static bool upm_batch_holds(struct upm_pass *p, struct page *page)
{
	unsigned int i;

	for (i = 0; i < p->nr; i++)
		if (p->batch[i].page == page)
			return true;
	return false;
}

/*
 * The page of a candidate, with a reference held, if it is still an
 * anonymous page, neither a KSM page nor part of a large folio (khugepaged
 * may have collapsed it since: the candidate is dropped, and the range is
 * merged again when it is advised again), in a range still advised
 * (upm_vma_advised()). Takes the candidate's mmap_lock: we hold none (see
 * the DOC comment).
 */
static struct page *upm_candidate_page(struct ksm_rmap_item *cand)
{
	unsigned long addr = cand->address & PAGE_MASK;
	struct mm_struct *mm = cand->mm;
	struct vm_area_struct *vma;
	struct page *page = NULL;
	struct folio_walk fw;
	struct folio *folio;

	mmap_read_lock(mm);
	vma = ksm_test_exit(mm) ? NULL : vma_lookup(mm, addr);
	if (!vma || !upm_vma_advised(vma))
		goto out;
	folio = folio_walk_start(&fw, vma, addr, 0);
	if (!folio)
		goto out;
	if (folio_test_anon(folio) && !folio_is_zone_device(folio) &&
	    !folio_test_ksm(folio) && !folio_test_large(folio)) {
		folio_get(folio);
		page = fw.page;
	}
	folio_walk_end(&fw, vma);
	if (page) {
		flush_anon_page(vma, page, addr);
		flush_dcache_page(page);
	}
out:
	mmap_read_unlock(mm);
	return page;
}

/*
 * The adviser's page did not merge into the candidate's page that was just
 * made a KSM page for it (busy, held, or written to since): give the
 * candidate's owner its page back, writable, as try_to_merge_two_pages()
 * does with break_cow(), so that no page nobody shares stays
 * write-protected. The stable node goes stale; the next lookup or prune
 * frees it and its entry. If the node went stale already (the page was
 * written to or unmapped meanwhile), ksm_remove_rmap_item() has nothing to
 * do. A page that still holds what it was entered with becomes a candidate
 * again; one that does not is dropped.
 *
 * Return: true if the candidate is still in UPM's hands: a candidate
 * again, or, if there was no memory to unshare it, still shared.
 */
static bool upm_unpublish(struct upm_pass *p, struct ksm_rmap_item *cand,
			  u64 hash, bool copy)
{
	bool unshared, same = false, zero;
	struct page *page;

	/* The item stays in its node meanwhile: rmap still finds the page */
	ksm_unshare(cand);
	page = ksm_get_mergeable_page(cand);
	unshared = !page || !PageKsm(page);
	if (page && unshared)
		same = upm_hash_page(page, &zero) == hash;
	if (page)
		put_page(page);
	/* Still mapped as a KSM page (no memory to copy): keep its item */
	if (!unshared)
		return true;
	ksm_remove_rmap_item(cand);
	cand->mm->upm_stable_pages--;
	p->count[UPM_PAGES_STABLE_NEW]--;
	if (copy)
		p->count[UPM_PAGES_COPIED]--;
	p->count[UPM_PUBLISHES_UNDONE]++;
	if (!same) {
		p->count[UPM_CANDIDATES_DROPPED]++;
		return false;
	}
	/* It matched in this domain: p->domain is the candidate's too */
	upm_candidate_add(p, cand, hash);
	p->count[UPM_PAGES_CANDIDATE]--;
	return true;
}

/*
 * Does the batch hold a reference on @cpage, the page of @cand? Only a
 * page mapped in the adviser's mm when it was collected can be one of
 * the batch's: mapped in @cand's mm too, it is usually mapped twice
 * (shared since a fork), or @cand is the adviser's. A wrong "no" is
 * possible (the adviser's mapping went since: written to, unmapped, or
 * merged earlier in the batch) and safe: the extra reference only makes
 * the write protection fail, and the merge is skipped. A wrong "yes" is
 * not: the batch's references last until the batch is done.
 */
static bool upm_holds_candidate(struct upm_pass *p, struct ksm_rmap_item *cand,
				struct page *cpage)
{
	if (cand->mm != p->mm && folio_mapcount(page_folio(cpage)) < 2)
		return false;
	return upm_batch_holds(p, cpage);
}

/*
 * The candidate's page differs from the adviser's: tell a changed
 * candidate (dropped) from a changed adviser's page and from a hash
 * collision, by hashing both again. Rare: only then are pages hashed twice.
 *
 * Return: true if the adviser's page changed (the lookup ends there).
 */
static bool upm_candidate_differs(struct upm_pass *p, struct upm_page *up,
				  struct ksm_rmap_item *cand,
				  struct page *cpage)
{
	bool zero;

	if (upm_hash_page(cpage, &zero) != up->hash) {
		upm_candidate_drop(p, cand);
		return false;
	}
	if (upm_page_changed(up)) {
		p->count[UPM_SKIPPED_BUSY]++;
		return true;
	}
	p->count[UPM_HASH_COLLISIONS]++;
	return false;
}

/*
 * Merge the page with a candidate of the same hash and domain: make the
 * candidate's page a KSM page (a copy of it, compared with ours as it is
 * copied, with safe frames), then merge ours into that, which compares the
 * two in full once ours is write-protected. A candidate whose page is gone
 * or changed is dropped on the way.
 *
 * Return: true if a twin was found (merged, or the merge was refused).
 */
static bool upm_merge_with_candidate(struct upm_pass *p, struct upm_page *up,
				     struct ksm_rmap_item *rmap_item)
{
	bool safe_frames = READ_ONCE(upm_safe_frames);
	struct ksm_stable_node *stable_node;
	struct ksm_rmap_item *cand;
	struct hlist_head *bucket;
	struct hlist_node *tmp;
	unsigned int tries = 0;
	bool copy, held, stop;
	struct page *cpage;
	int err;

	bucket = upm_index_bucket(&upm_candidates, up->hash, p->domain);
	hlist_for_each_entry_safe(cand, tmp, bucket, upm_node) {
		if (cand->upm_hash != up->hash ||
		    upm_candidate_domain(cand) != p->domain ||
		    WARN_ON_ONCE(cand == rmap_item))
			continue;
		cpage = upm_candidate_current(cand) ?
			upm_candidate_page(cand) : NULL;
		if (!cpage) {
			/* Unmapped, unadvised, its mm exited, or shared */
			upm_candidate_drop(p, cand);
			continue;
		}
		/*
		 * Still shared since a fork with the candidate's process:
		 * merging one side frees nothing, as in KSM, and a second
		 * candidate for the same frame would only lengthen the chain.
		 */
		if (cpage == up->page) {
			put_page(cpage);
			p->count[UPM_SKIPPED_KSM]++;
			return true;
		}
		/*
		 * A page mapped elsewhere too (shared since a fork) is copied
		 * even without safe frames: made a KSM page in place, it would
		 * be one in every process that maps it, and rmap would find
		 * only the candidate's mapping from the stable node.
		 */
		copy = safe_frames || folio_mapcount(page_folio(cpage)) > 1;
		/*
		 * Without a copy, nothing compares the pages before the
		 * candidate's is made a KSM page: compare them unlocked first,
		 * as ksmd does, so that a changed candidate is not frozen.
		 */
		err = 0;
		if (!copy && !pages_identical(up->page, cpage))
			err = -EILSEQ;
		/*
		 * write_protect_page() allows one reference besides the
		 * mappings: for a page of this batch (a duplicate within the
		 * range, or a page shared since a fork), the batch's.
		 */
		held = upm_holds_candidate(p, cand, cpage);
		if (held)
			put_page(cpage);
		if (!err)
			err = upm_publish(p, cand, cpage, up->hash, up->page,
					  copy, &stable_node);
		stop = err == -EILSEQ &&
		       upm_candidate_differs(p, up, cand, cpage);
		/* A page replaced and mapped nowhere else is freed later */
		if (!held && !err && !page_mapped(cpage))
			upm_put_later(p, cpage);
		else if (!held)
			put_page(cpage);
		if (stop)
			return true;
		/*
		 * Busy, no memory or different: try the next, but only a
		 * few, so that pages that never freeze (held by someone)
		 * cannot make every lookup of their content long.
		 */
		if (err) {
			if (++tries == UPM_CANDIDATE_TRIES)
				return false;
			continue;
		}
		err = upm_merge_into(p, up, rmap_item, stable_node);
		if (!err)
			return true;
		/* Gone, or written to since it was compared: try the next */
		if (!upm_unpublish(p, cand, up->hash, copy))
			continue;
		/* Busy, or ours was written to since it was compared */
		p->count[UPM_SKIPPED_BUSY]++;
		return true;
	}
	return false;
}

/*
 * Is the batch's page still mapped where it was collected? It may not be
 * once a merge earlier in the batch made its candidate a KSM page, or
 * after a write (copy-on-write) or an unmap since it was collected.
 */
static bool upm_page_mapped_at_locked(struct upm_pass *p,
				      struct upm_page *up)
{
	struct vm_area_struct *vma;
	struct folio_walk fw;
	bool mapped = false;

	mmap_assert_locked(p->mm);
	vma = vma_lookup(p->mm, up->addr);
	if (vma && folio_walk_start(&fw, vma, up->addr, 0)) {
		mapped = fw.page == up->page;
		folio_walk_end(&fw, vma);
	}
	return mapped;
}

static bool upm_page_mapped_at(struct upm_pass *p, struct upm_page *up)
{
	bool mapped;

	mmap_read_lock(p->mm);
	mapped = upm_page_mapped_at_locked(p, up);
	mmap_read_unlock(p->mm);
	return mapped;
}

/*
 * Merge the page under ksm_thread_mutex: into a twin from the index of
 * shared pages, or with a candidate, or else make it a candidate.
 */
static void upm_merge_page(struct upm_pass *p, struct upm_page *up)
{
	struct ksm_rmap_item *rmap_item;

	/* ksmd may have merged it since: it only does so under the mutex */
	if (PageKsm(up->page)) {
		p->count[UPM_SKIPPED_KSM]++;
		return;
	}
	rmap_item = upm_rmap_item(p, up->addr);
	if (!rmap_item) {
		p->count[UPM_SKIPPED_NOMEM]++;
		return;
	}
	/* Another pass over this mm reserved it: that one merges it */
	if (rmap_item->address & UPM_PENDING_FLAG) {
		p->count[UPM_SKIPPED_BUSY]++;
		return;
	}
	/*
	 * An item in a stable node is stale while our page, no KSM page, is
	 * mapped at its address, and leaves the node below. If our page is
	 * no longer mapped there, the item may be that of the KSM page that
	 * replaced it (its candidate was merged earlier in this batch):
	 * taken out of its node, it would hide that mapping from rmap.
	 */
	if ((rmap_item->address & STABLE_FLAG) &&
	    !upm_page_mapped_at(p, up)) {
		p->count[UPM_SKIPPED_BUSY]++;
		return;
	}
	/* Advised before: re-entered below with its current hash */
	if (rmap_item->address & UPM_CANDIDATE_FLAG)
		upm_candidate_removed(rmap_item);
	if (upm_merge_with_twin(p, up, rmap_item) ||
	    upm_merge_with_candidate(p, up, rmap_item))
		return;
	upm_candidate_add(p, rmap_item, up->hash);
}

/*
 * Reserve the page's merge into a twin from the index of shared pages, for
 * upm_merge_planned() to do without the mutex. The page's rmap_item joins
 * the twin's stable node now, flagged UPM_PENDING_FLAG: rmap and KSM's
 * counts never miss the mapping once it exists, and until then the item is
 * merely stale, which KSM tolerates (ksmd keeps a pending item, see
 * ksm_upm_skip_page()). The reference taken in @up->kfolio keeps the twin's
 * page and node. Under ksm_thread_mutex and the adviser's mmap_read_lock.
 *
 * Return: true if reserved; false if there is no twin that can share (the
 * page takes the path under the mutex), or if the page is skipped
 * (*@skipped is set then).
 */
static bool upm_reserve_twin(struct upm_pass *p, struct upm_page *up,
			     bool *skipped)
{
	struct ksm_stable_node *stable_node = NULL;
	struct folio *kfolio = NULL, *locked;
	struct ksm_rmap_item *rmap_item;
	struct vm_area_struct *vma;
	struct hlist_node *tmp;
	struct upm_entry *e;

	upm_index_for_each_in_bucket(e, tmp, &upm_index, up->hash, p->domain) {
		if (!upm_entry_matches(e, up->hash, p->domain))
			continue;
		/* A stale node is freed here, and its entry with it */
		kfolio = ksm_get_folio(e->stable_node, KSM_GET_FOLIO_NOLOCK);
		if (kfolio && ksm_stable_node_can_share(e->stable_node)) {
			stable_node = e->stable_node;
			break;
		}
		if (kfolio)
			folio_put(kfolio);
	}
	if (!stable_node)
		return false;
	vma = vma_lookup(p->mm, up->addr);
	if (!vma || !upm_vma_advised(vma)) {
		folio_put(kfolio);
		return false;
	}

	*skipped = true;
	rmap_item = upm_rmap_item(p, up->addr);
	if (!rmap_item) {
		p->count[UPM_SKIPPED_NOMEM]++;
		goto out;
	}
	/* Another pass over this mm reserved it: that one merges it */
	if (rmap_item->address & UPM_PENDING_FLAG) {
		p->count[UPM_SKIPPED_BUSY]++;
		goto out;
	}
	/* As in upm_merge_page(): only a stale stable item may leave */
	if ((rmap_item->address & STABLE_FLAG) &&
	    !upm_page_mapped_at_locked(p, up)) {
		p->count[UPM_SKIPPED_BUSY]++;
		goto out;
	}
	if (rmap_item->address & UPM_CANDIDATE_FLAG)
		upm_candidate_removed(rmap_item);
	/* Out of any tree first: their fields share unions */
	ksm_remove_rmap_item(rmap_item);

	/*
	 * Locked, the node is checked again: a migration in progress waited
	 * for fails now (our reference), or moved the node to another folio
	 * before we took it. Our reference keeps the node from going stale.
	 */
	locked = ksm_get_folio(stable_node, KSM_GET_FOLIO_LOCK);
	*skipped = false;
	if (locked != kfolio || !ksm_stable_node_can_share(stable_node)) {
		if (locked) {
			folio_unlock(locked);
			folio_put(locked);
		}
		goto out;
	}
	/* As try_to_merge_with_ksm_page() does, before the merge here */
	rmap_item->anon_vma = vma->anon_vma;
	get_anon_vma(vma->anon_vma);
	rmap_item->address |= UPM_PENDING_FLAG;
	ksm_stable_node_append(rmap_item, stable_node, false);
	folio_unlock(locked);
	folio_put(locked);
	up->kfolio = kfolio;
	up->stable_node = stable_node;
	up->anon_vma = vma->anon_vma;
	up->plan = UPM_PLAN_TWIN;
	return true;
out:
	folio_put(kfolio);
	return false;
}

/*
 * Memory is being offlined, which waits for the pages it moves to lose
 * their extra references, while we wait for it (ksm_wait_while_offlining()):
 * drop the batch's references first and skip its pages. Under
 * ksm_thread_mutex.
 */
static void upm_release_batch(struct upm_pass *p)
{
	unsigned int i;

	for (i = 0; i < p->nr; i++) {
		struct upm_page *up = &p->batch[i];

		if (up->kfolio)
			folio_put(up->kfolio);
		up->kfolio = NULL;
		if (!p->released)
			upm_put_later(p, up->page);
	}
	release_pages(p->put, p->nr_put);
	p->nr_put = 0;
	p->released = true;
}

/*
 * Take ksm_thread_mutex for a phase of the batch, and set up what merging
 * under it needs. What is allocated under it (index entries, stable nodes,
 * rmap_items) is charged to the memory cgroup of the advised mm, also when
 * another process advises it; a safe frame to that of the mm whose
 * candidate page it replaces (upm_alloc_frame()).
 *
 * Return: 1 if pages may be merged; 0 after "echo 2 > run" (KSM stays
 * unmerged until run is set again) or once the mm left KSM; -EINTR if
 * @killable and a fatal signal came while waiting for the mutex.
 */
static int upm_batch_lock(struct upm_pass *p, bool killable)
{
	if (!killable)
		mutex_lock(&ksm_thread_mutex);
	else if (mutex_lock_killable(&ksm_thread_mutex))
		return -EINTR;
	if (ksm_run & KSM_RUN_OFFLINE) {
		upm_release_batch(p);
		ksm_wait_while_offlining();
	}
	/* First, so that the rmap_list cursor is valid whatever follows */
	if (!upm_find_slot(p) || (ksm_run & KSM_RUN_UNMERGE))
		return 0;
	p->memcg = get_mem_cgroup_from_mm(p->mm);
	p->old_memcg = set_active_memcg(p->memcg);
	p->domain = upm_domain_of(p->mm, p->owner, &p->user_ns);
	return 1;
}

static void upm_batch_unlock(struct upm_pass *p, bool enabled)
{
	if (enabled) {
		if (p->user_ns)
			put_user_ns(p->user_ns);
		p->user_ns = NULL;
		set_active_memcg(p->old_memcg);
		mem_cgroup_put(p->memcg);
	}
	mutex_unlock(&ksm_thread_mutex);
}

/*
 * Phase one of a batch, under ksm_thread_mutex: plan what needs no change
 * to the indexes (zero pages, and pages whose twin is shared already),
 * which upm_merge_planned() merges without the mutex, and merge the other
 * pages here (upm_merge_page()).
 */
static void upm_plan_batch(struct upm_pass *p)
{
	struct ksm_rmap_item **batch_start = p->cursor;
	bool skipped;
	unsigned int i;

	mmap_read_lock(p->mm);
	for (i = 0; i < p->nr; i++) {
		struct upm_page *up = &p->batch[i];

		skipped = false;
		up->merged = false;
		up->kfolio = NULL;
		/* ksmd may have merged it since: it only does so here */
		if (PageKsm(up->page)) {
			p->count[UPM_SKIPPED_KSM]++;
			up->plan = UPM_PLAN_NONE;
		} else if (up->zero && !mm_forbids_zeropage(p->mm)) {
			up->plan = UPM_PLAN_ZERO;
		} else if (!upm_reserve_twin(p, up, &skipped)) {
			up->plan = skipped ? UPM_PLAN_NONE : UPM_PLAN_LOCKED;
		}
	}
	mmap_read_unlock(p->mm);

	/* The rmap_list cursor goes back: items are only inserted above */
	p->batch_cursor = batch_start;
	p->cursor = batch_start;
	for (i = 0; i < p->nr; i++) {
		if (p->batch[i].plan != UPM_PLAN_LOCKED)
			continue;
		upm_merge_page(p, &p->batch[i]);
		p->batch[i].plan = UPM_PLAN_NONE;
	}
}

/*
 * Phase two, without ksm_thread_mutex, which advisers thus spend most of
 * their time without: merge the planned pages, each write-protected and
 * compared in full with its twin first (ksm_merge_one_page()). Under the
 * adviser's mmap_read_lock.
 */
static void upm_merge_planned(struct upm_pass *p)
{
	struct vm_area_struct *vma;
	bool disabled, any = false;
	struct page *kpage;
	unsigned int i;

	for (i = 0; i < p->nr; i++)
		any |= p->batch[i].plan != UPM_PLAN_NONE;
	if (!any)
		return;
	mmap_read_lock(p->mm);
	disabled = READ_ONCE(ksm_run) & KSM_RUN_UNMERGE;
	for (i = 0; i < p->nr; i++) {
		struct upm_page *up = &p->batch[i];

		if (up->plan == UPM_PLAN_ZERO)
			kpage = ZERO_PAGE(up->addr);
		else if (up->plan == UPM_PLAN_TWIN)
			kpage = folio_page(up->kfolio, 0);
		else
			continue;
		vma = disabled ? NULL : vma_lookup(p->mm, up->addr);
		/*
		 * The reserved item must find the mapping: same anon_vma, and
		 * the page still where it was collected (not moved by mremap,
		 * which write_protect_page() would follow).
		 */
		if (vma && upm_vma_advised(vma) &&
		    page_address_in_vma(up->page, vma) == up->addr &&
		    (up->plan == UPM_PLAN_ZERO ||
		     vma->anon_vma == up->anon_vma))
			up->merged = !ksm_merge_one_page(vma, up->page, kpage);
		if (up->plan == UPM_PLAN_ZERO)
			p->count[up->merged ? UPM_PAGES_ZERO : disabled ?
				 UPM_SKIPPED_DISABLED : UPM_SKIPPED_BUSY]++;
	}
	mmap_read_unlock(p->mm);
}

/*
 * The page was merged into its twin, but its reserved item is not in the
 * twin's node any more: ksmd freed it (the page was absent as ksmd passed
 * it: swapped out, or under migration), or took it out. Give the mapping
 * an item in the node now, as ksmd would give it one, so that rmap finds
 * it. Not for a batch released for memory offlining (upm_release_batch()),
 * which holds no reference on the twin any more: ksmd's next pass gives
 * such a mapping its item. Under ksm_thread_mutex.
 */
static void upm_merged_without_item(struct upm_pass *p, struct upm_page *up)
{
	struct ksm_rmap_item *rmap_item = NULL;
	struct vm_area_struct *vma;
	struct folio *locked;
	struct folio_walk fw;
	bool mapped = false;

	mmap_read_lock(p->mm);
	vma = vma_lookup(p->mm, up->addr);
	if (vma && folio_walk_start(&fw, vma, up->addr, 0)) {
		mapped = fw.page == folio_page(up->kfolio, 0);
		folio_walk_end(&fw, vma);
	}
	if (mapped)
		rmap_item = upm_rmap_item(p, up->addr);
	/* Unless the mapping went since, or another pass reserved the item */
	if (!rmap_item || (rmap_item->address & UPM_PENDING_FLAG) ||
	    ((rmap_item->address & STABLE_FLAG) &&
	     rmap_item->head == up->stable_node))
		goto out;
	if (rmap_item->address & UPM_CANDIDATE_FLAG)
		upm_candidate_removed(rmap_item);
	ksm_remove_rmap_item(rmap_item);
	locked = ksm_get_folio(up->stable_node, KSM_GET_FOLIO_LOCK);
	if (locked == up->kfolio) {
		rmap_item->anon_vma = vma->anon_vma;
		get_anon_vma(vma->anon_vma);
		/* The mapping exists: it must be found, sharers or not */
		ksm_stable_node_append(rmap_item, up->stable_node, true);
	}
	if (locked) {
		folio_unlock(locked);
		folio_put(locked);
	}
out:
	mmap_read_unlock(p->mm);
}

/*
 * Phase three, under ksm_thread_mutex again, for the pages merged into a
 * twin: their rmap_items lose UPM_PENDING_FLAG, or, where the merge failed,
 * leave the stable node again, and the page takes the path under the mutex
 * (upm_merge_page()), which tries every twin and candidate. Items are
 * looked up again by address: ksmd may have freed some meanwhile, as it
 * frees the item of a page it finds absent (swapped, or migrating); a
 * page merged all the same gets an item again (upm_merged_without_item()).
 */
static void upm_finish_planned(struct upm_pass *p)
{
	struct ksm_rmap_item *rmap_item, **batch_cursor = p->batch_cursor;
	struct ksm_mm_slot *slot = p->slot;
	unsigned long gen = p->cursor_gen;
	bool enabled, any = false;
	unsigned int i;

	for (i = 0; i < p->nr; i++)
		any |= p->batch[i].plan == UPM_PLAN_TWIN;
	if (!any)
		return;
	/*
	 * Not killable: the reserved items must not stay pending. The only
	 * long holder of the mutex, "echo 2 > run", waits for this batch.
	 */
	enabled = upm_batch_lock(p, false);
	if (p->slot == slot && p->cursor_gen == gen)
		p->cursor = batch_cursor;
	for (i = 0; i < p->nr; i++) {
		struct upm_page *up = &p->batch[i];

		if (up->plan != UPM_PLAN_TWIN)
			continue;
		rmap_item = p->slot ? upm_find_rmap_item(p, up->addr) : NULL;
		/* Pending in the node it was reserved in: this pass's item */
		if (rmap_item && (rmap_item->address & UPM_PENDING_FLAG) &&
		    rmap_item->head == up->stable_node) {
			/* rmap walks read the address of an item in a node */
			WRITE_ONCE(rmap_item->address,
				   rmap_item->address & ~UPM_PENDING_FLAG);
			if (!up->merged)
				ksm_remove_rmap_item(rmap_item);
		} else if (up->merged && p->slot && !p->released) {
			upm_merged_without_item(p, up);
		}
		if (up->kfolio)
			folio_put(up->kfolio);
		up->kfolio = NULL;
		if (up->merged) {
			p->mm->upm_merged_pages++;
			p->count[UPM_PAGES_MERGED]++;
		} else if (enabled && !p->released) {
			upm_merge_page(p, up);
		} else {
			p->count[enabled ? UPM_SKIPPED_BUSY :
				 UPM_SKIPPED_DISABLED]++;
		}
	}
	upm_batch_unlock(p, enabled);
}

/*
 * Merge the hashed batch in three phases: plan under ksm_thread_mutex, merge
 * the planned pages without it, finish under it. The caller holds
 * upm_merge_sem for read, which "echo 2 > run" holds for write while it
 * unmerges everything (upm_block_merges()): so the stable nodes and
 * rmap_items of the merges reserved stay until the batch is done.
 *
 * Return: 0, or -EINTR if a fatal signal came while waiting for the mutex.
 */
static int upm_merge_batch(struct upm_pass *p)
{
	unsigned int i;
	int enabled;

	/* "echo 2 > run" can hold the mutex for minutes */
	enabled = upm_batch_lock(p, true);
	if (enabled < 0)
		return enabled;
	if (enabled && !p->released) {
		upm_plan_batch(p);
	} else {
		p->count[p->released ? UPM_SKIPPED_BUSY :
			 UPM_SKIPPED_DISABLED] += p->nr;
		for (i = 0; i < p->nr; i++)
			p->batch[i].plan = UPM_PLAN_NONE;
	}
	upm_batch_unlock(p, enabled);

	upm_merge_planned(p);
	upm_finish_planned(p);
	return 0;
}

/* Hash the batch's pages, outside any lock: the costly read of each */
static void upm_hash_batch(struct upm_pass *p)
{
	unsigned int i;

	for (i = 0; i < p->nr; i++)
		p->batch[i].hash = upm_hash_page(p->batch[i].page,
						 &p->batch[i].zero);
}

/* Add a pass's counts to /sys/kernel/mm/upm/ and trace its end */
static void upm_account_pass(struct upm_pass *p, int err)
{
	unsigned long skipped = 0;
	unsigned int i;

	p->count[UPM_CALLS] = 1;
	for (i = 0; i < UPM_NR_COUNTERS; i++)
		if (p->count[i])
			atomic_long_add(p->count[i], &upm_stats[i]);
	/* The SKIPPED_ counters are together in upm_counters.h */
	for (i = UPM_SKIPPED_ABSENT; i <= UPM_SKIPPED_DISABLED; i++)
		skipped += p->count[i];
	trace_upm_advise_end(p->mm, p->count[UPM_PAGES_MERGED],
			     p->count[UPM_PAGES_STABLE_NEW],
			     p->count[UPM_PAGES_ZERO], skipped, err);
}

/* ---- madvise: check the range, then the merge pass ---- */

/**
 * upm_check_range() - check that a range can be advised as a whole
 * @mm:		address space
 * @start:	page-aligned start of the range
 * @end:	page-aligned end of the range
 *
 * Called by madvise before it changes anything, with the mmap lock held.
 *
 * Return: 0 if every page of the range is in a mapping KSM can merge;
 * -EINVAL if some mapping never can (shared, hugetlb, DAX, VM_PFNMAP,
 * VM_IO, VM_MIXEDMAP, ...); otherwise -ENOMEM if the range has a hole.
 */
int upm_check_range(struct mm_struct *mm, unsigned long start,
		    unsigned long end)
{
	VMA_ITERATOR(vmi, mm, start);
	struct vm_area_struct *vma;
	unsigned long covered = start;
	int err = 0;

	mmap_assert_locked(mm);
	if (!READ_ONCE(upm_ready))
		return -EINVAL;
	for_each_vma_range(vmi, vma, end) {
		if (!ksm_vma_compatible(vma))
			return -EINVAL;
		if (vma->vm_start > covered)
			err = -ENOMEM;
		covered = vma->vm_end;
	}
	if (covered < end)
		err = -ENOMEM;
	return err;
}

/**
 * upm_merge_range() - merge the identical pages of an advised range now
 * @mm:		address space, already registered with KSM by madvise
 * @owner:	the task whose pages are advised: the caller of madvise(),
 *		or the target of process_madvise()
 * @start:	page-aligned start of the range
 * @end:	page-aligned end of the range
 *
 * Must be called without the mmap lock: it takes ksm_thread_mutex, which
 * orders before mmap_lock.
 *
 * Return: 0, or -EINTR if a fatal signal stopped the pass (pages merged so
 * far stay merged), or -EAGAIN if the pass could not start.
 */
int upm_merge_range(struct mm_struct *mm, struct task_struct *owner,
		    unsigned long start, unsigned long end)
{
	u64 t0 = ktime_get_ns();
	struct upm_pass *p;
	unsigned int i;
	int err = 0;

	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return -EAGAIN;
	p->mm = mm;
	p->owner = owner;
	p->addr = start;
	p->end = end;
	trace_upm_advise_start(mm, start, end);
	/* Its exit or unmerge prunes the index (see upm_prune_workfn()) */
	WRITE_ONCE(mm->upm_advised, true);

	/* Pages still in per-CPU LRU batches hold an extra reference. */
	lru_add_drain_all();
	while (p->addr < end) {
		/*
		 * Before the batch's page references: "echo 2 > run" may wait
		 * for memory offlining, which waits for those references.
		 */
		if (fatal_signal_pending(current) ||
		    down_read_killable(&upm_merge_sem)) {
			err = -EINTR;
			break;
		}
		if (mmap_read_lock_killable(mm)) {
			up_read(&upm_merge_sem);
			err = -EINTR;
			break;
		}
		upm_collect(p);
		mmap_read_unlock(mm);

		upm_hash_batch(p);
		p->released = false;
		if (p->nr)
			err = upm_merge_batch(p);
		up_read(&upm_merge_sem);
		for (i = 0; i < p->nr && !p->released; i++)
			upm_put_later(p, p->batch[i].page);
		/* Frees the pages that merges replaced, in one go */
		release_pages(p->put, p->nr_put);
		p->nr_put = 0;
		if (err)
			break;
		/* Put the batch's new frames on the LRU for reclaim */
		lru_add_drain();
		cond_resched();
	}

	p->count[UPM_PAGES_ADVISED] = (end - start) >> PAGE_SHIFT;
	p->count[UPM_TIME_NS] = ktime_get_ns() - t0;
	upm_account_pass(p, err);
	kfree(p);
	return err;
}

/* ---- Pruning the index, and KSM's hooks into UPM ---- */

/*
 * Look at every index entry: ksm_get_folio() frees a stale stable node, and
 * free_stable_node() its entry. Drop the candidates of exited mms, whose
 * rmap_items wait for ksmd when exit could not free them, or with
 * @all_candidates every candidate. Called with ksm_thread_mutex held,
 * which is dropped now and then so that advisers and ksmd are not held up.
 */
static void upm_prune_index(bool all_candidates)
{
	unsigned long b, nr_buckets = 1UL << upm_index.bits;
	struct ksm_rmap_item *cand;
	struct hlist_node *tmp;
	struct upm_entry *e;

	lockdep_assert_held(&ksm_thread_mutex);
	/* upm_candidates has as many buckets (upm_init()) */
	for (b = 0; b < nr_buckets; b++) {
		hlist_for_each_entry_safe(e, tmp, &upm_index.buckets[b], node) {
			struct folio *folio;

			folio = ksm_get_folio(e->stable_node,
					      KSM_GET_FOLIO_NOLOCK);
			if (folio)
				folio_put(folio);
		}
		hlist_for_each_entry_safe(cand, tmp,
					  &upm_candidates.buckets[b], upm_node)
			if (all_candidates || ksm_test_exit(cand->mm))
				upm_candidate_removed(cand);
		if (need_resched()) {
			mutex_unlock(&ksm_thread_mutex);
			cond_resched();
			mutex_lock(&ksm_thread_mutex);
			ksm_wait_while_offlining();
		}
	}
}

static void upm_prune_workfn(struct work_struct *work);
static DECLARE_DELAYED_WORK(upm_prune_work, upm_prune_workfn);

/* Time for an exiting mm's pages to be freed before the index is pruned */
#define UPM_PRUNE_DELAY		(HZ / 2)
/* jiffies of the last request for a prune */
static unsigned long upm_prune_requested;

/*
 * Prune the index UPM_PRUNE_DELAY after a request. A request while the
 * work is pending does not postpone it (a stream of exits must not starve
 * the prune); a request too recent for the run that covered it gets a run
 * of its own.
 */
static void upm_request_prune(void)
{
	WRITE_ONCE(upm_prune_requested, jiffies);
	queue_delayed_work(system_unbound_wq, &upm_prune_work,
			   UPM_PRUNE_DELAY);
}

static void upm_prune_workfn(struct work_struct *work)
{
	unsigned long started = jiffies;
	unsigned long last;

	/* A freed page may still be held by a per-CPU LRU batch */
	lru_add_drain_all();
	mutex_lock(&ksm_thread_mutex);
	ksm_wait_while_offlining();
	upm_prune_index(false);
	/* What exits could not free: without ksmd, nobody else would */
	ksm_free_exited_mms();
	mutex_unlock(&ksm_thread_mutex);

	last = READ_ONCE(upm_prune_requested);
	if (time_after(last + UPM_PRUNE_DELAY, started))
		queue_delayed_work(system_unbound_wq, &upm_prune_work,
				   last + UPM_PRUNE_DELAY - started);
}

/**
 * upm_unmerged() - MADV_UNMERGEABLE broke the sharing of a range
 * @mm:	the mm
 *
 * Pages this mm alone held are freed now; drop their index entries soon.
 */
void upm_unmerged(struct mm_struct *mm)
{
	if (READ_ONCE(mm->upm_advised))
		upm_request_prune();
}

/**
 * upm_ksmd_skips() - should ksmd leave this page alone?
 * @vma:	the VMA that ksmd is scanning
 * @stable_node: the page's stable node if it is a KSM page, else NULL
 *
 * Under the domain policy, the ranges advised with MADV_UPM_MERGEABLE (and
 * their copies in forked children) merge through UPM only: ksmd knows no
 * domains. Ranges advised with MADV_MERGEABLE stay ksmd's, in the same mm.
 * A page shared within a domain stays out of ksmd's trees wherever it is
 * mapped (its VMA may have been advised again since UPM merged it).
 * Called by ksmd under mmap_read_lock and ksm_thread_mutex, which orders
 * it against changes of the policy and of the index.
 *
 * Return: true if ksmd must not merge the page.
 */
bool upm_ksmd_skips(struct vm_area_struct *vma,
		    struct ksm_stable_node *stable_node)
{
	if (stable_node && stable_node->upm_entry &&
	    stable_node->upm_entry->domain)
		return true;
	return (vma->vm_flags & VM_UPM) &&
	       upm_merge_policy == UPM_POLICY_DOMAIN;
}

/* ---- exec and prctl: merge domains ---- */

/**
 * upm_secure_exec() - a setuid or otherwise secure exec is under way
 * @mm:	the new mm
 *
 * A merge domain chosen by the caller must not follow into a program
 * that runs with more privilege: the new program starts in its default
 * domain, and may join another one itself.
 */
void upm_secure_exec(struct mm_struct *mm)
{
	WRITE_ONCE(mm->upm_domain, 0);
}

/**
 * upm_prctl() - PR_SET_UPM_DOMAIN and PR_GET_UPM_DOMAIN
 * @option:	the prctl option
 * @arg2:	for PR_SET_UPM_DOMAIN, the domain id: 1 to INT_MAX joins that
 *		domain (needs CAP_SYS_ADMIN), 0 returns to the default domain
 * @arg3:	must be 0
 * @arg4:	must be 0
 * @arg5:	must be 0
 *
 * The domain belongs to the calling process's address space: its threads
 * share it, and fork and exec keep it. Pages already merged stay merged.
 *
 * Return: for PR_GET_UPM_DOMAIN the domain id (0 if none); for
 * PR_SET_UPM_DOMAIN 0; -EINVAL for bad arguments or a kernel thread,
 * -EPERM for joining a domain without CAP_SYS_ADMIN.
 */
int upm_prctl(int option, unsigned long arg2, unsigned long arg3,
	      unsigned long arg4, unsigned long arg5)
{
	struct mm_struct *mm = current->mm;

	if (arg3 || arg4 || arg5 || !mm)
		return -EINVAL;
	switch (option) {
	case PR_GET_UPM_DOMAIN:
		if (arg2)
			return -EINVAL;
		return READ_ONCE(mm->upm_domain);
	case PR_SET_UPM_DOMAIN:
		if (arg2 > INT_MAX)
			return -EINVAL;
		/* Leaving a domain for the default one is always allowed */
		if (arg2 && arg2 != READ_ONCE(mm->upm_domain) &&
		    !capable(CAP_SYS_ADMIN))
			return -EPERM;
		WRITE_ONCE(mm->upm_domain, arg2);
		return 0;
	}
	return -EINVAL;
}

/* ---- KSM's hooks: a stable node freed, an mm exiting ---- */

/**
 * upm_block_merges() - wait for advisers' batches, and hold off new ones
 *
 * Called by "echo 2 > /sys/kernel/mm/ksm/run" before it takes
 * ksm_thread_mutex to unmerge every page, until upm_allow_merges(): the
 * batches in flight finish first (what they merged is unmerged with the
 * rest), and none merges behind the unmerge, since part of each batch runs
 * without the mutex (see upm_merge_batch()).
 *
 * Return: 0, or -EINTR if a fatal signal came while waiting.
 */
int upm_block_merges(void)
{
	return down_write_killable(&upm_merge_sem);
}

/**
 * upm_allow_merges() - let advisers' batches run again
 */
void upm_allow_merges(void)
{
	up_write(&upm_merge_sem);
}

/**
 * upm_stable_node_freed() - KSM is freeing a stable node
 * @stable_node: the node
 *
 * Called from free_stable_node(), under ksm_thread_mutex or while memory
 * offlining holds every mutex taker back, so the index never points at a
 * freed node.
 */
void upm_stable_node_freed(struct ksm_stable_node *stable_node)
{
	struct upm_entry *e = stable_node->upm_entry;

	if (!e)
		return;
	upm_index_del(&upm_index, e);
	stable_node->upm_entry = NULL;
	if (e->user_ns)
		put_user_ns(e->user_ns);
	kmem_cache_free(upm_entry_cache, e);
}

/**
 * upm_ksm_exit() - an mm registered with KSM is exiting
 * @mm:	the mm
 *
 * ksmd frees an exiting mm's rmap_items when its scan reaches it; when ksmd
 * is not running (UPM does not need it), nobody would, and the stable
 * pages would stay counted and their metadata would leak. Free them now,
 * or in the prune that follows (ksm_free_exited_mms()) if the mutex is
 * busy. Only for mms that used UPM: KSM's own wait for ksmd, as before.
 * Called from __ksm_exit() before it decides how to free the mm's slot.
 */
void upm_ksm_exit(struct mm_struct *mm)
{
	if (!mm->upm_advised)
		return;
	/* Frees later what ksm_free_exiting_mm() cannot free now */
	upm_request_prune();
	ksm_free_exiting_mm(mm);
}

/* ---- sysfs: /sys/kernel/mm/upm/, and debugfs ---- */

/* A counter's sysfs file: its id from upm_counters.h, in lower case */
struct upm_counter_attr {
	struct kobj_attribute attr;
	char name[24];
};

static const char * const upm_counter_ids[] = {
#define UPM_COUNTER(id)	__stringify(id),
#include "upm_counters.h"
#undef UPM_COUNTER
};

static struct upm_counter_attr upm_counter_attrs[UPM_NR_COUNTERS];

static ssize_t upm_counter_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct upm_counter_attr *ca;

	ca = container_of(attr, struct upm_counter_attr, attr);
	return sysfs_emit(buf, "%ld\n",
			  atomic_long_read(&upm_stats[ca - upm_counter_attrs]));
}

static ssize_t index_entries_show(struct kobject *kobj,
				  struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%lu\n", READ_ONCE(upm_index.nr_entries));
}
static struct kobj_attribute index_entries_attr = __ATTR_RO(index_entries);

static ssize_t index_candidates_show(struct kobject *kobj,
				     struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%lu\n", READ_ONCE(upm_candidates.nr_entries));
}
static struct kobj_attribute index_candidates_attr =
	__ATTR_RO(index_candidates);

static ssize_t index_buckets_show(struct kobject *kobj,
				  struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%lu\n", 1UL << upm_index.bits);
}
static struct kobj_attribute index_buckets_attr = __ATTR_RO(index_buckets);

static ssize_t merge_policy_show(struct kobject *kobj,
				 struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n",
			  upm_policy_names[READ_ONCE(upm_merge_policy)]);
}

/* Only with an empty index: entries never mix the two policies. */
static ssize_t merge_policy_store(struct kobject *kobj,
				  struct kobj_attribute *attr,
				  const char *buf, size_t count)
{
	int policy = sysfs_match_string(upm_policy_names, buf);
	ssize_t err = count;

	if (policy < 0)
		return -EINVAL;
	lru_add_drain_all();
	mutex_lock(&ksm_thread_mutex);
	ksm_wait_while_offlining();
	if (policy != upm_merge_policy) {
		upm_prune_index(false);
		if (upm_index.nr_entries) {
			err = -EBUSY;
		} else {
			WRITE_ONCE(upm_merge_policy, policy);
			/* Keyed for the old policy: they never match again */
			upm_prune_index(true);
		}
	}
	mutex_unlock(&ksm_thread_mutex);
	return err;
}
static struct kobj_attribute merge_policy_attr = __ATTR_RW(merge_policy);

static ssize_t safe_frames_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", READ_ONCE(upm_safe_frames));
}

static ssize_t safe_frames_store(struct kobject *kobj,
				 struct kobj_attribute *attr,
				 const char *buf, size_t count)
{
	bool on;

	if (kstrtobool(buf, &on))
		return -EINVAL;
	WRITE_ONCE(upm_safe_frames, on);
	return count;
}
static struct kobj_attribute safe_frames_attr = __ATTR_RW(safe_frames);

/* Per-domain totals of the index, for debugfs "upm/domains" */
struct upm_domain_stat {
	u64 domain;
	unsigned long entries;
	unsigned long mappings;
};

#define UPM_DOMAINS_SHOWN	64
/* Buckets looked at per hold of ksm_thread_mutex */
#define UPM_DOMAINS_BUCKETS	1024

static void upm_domain_stat_add(struct upm_domain_stat *st,
				unsigned int *nr, struct upm_entry *e)
{
	unsigned int i;

	for (i = 0; i < *nr && st[i].domain != e->domain; i++)
		;
	if (i == UPM_DOMAINS_SHOWN)
		return;	/* shown as "more" */
	if (i == *nr) {
		st[i].domain = e->domain;
		(*nr)++;
	}
	st[i].entries++;
	st[i].mappings += e->stable_node->rmap_hlist_len;
}

/*
 * One line per domain with entries in the index: the domain, its entries
 * and the mappings of their pages. A diagnostic for root (mode 0400): it
 * tells which users and domains share what amount of memory. The walk
 * takes ksm_thread_mutex for a slice of buckets at a time, so advisers and
 * ksmd are not held up, and waits while memory is being offlined, which
 * frees stable nodes and their entries. Entries that move while the mutex
 * is dropped may be counted once or not at all.
 */
static int upm_domains_show(struct seq_file *m, void *unused)
{
	unsigned long b, nr_buckets = 1UL << upm_index.bits;
	struct upm_domain_stat *st;
	unsigned int i, nr = 0;
	struct upm_entry *e;

	st = kcalloc(UPM_DOMAINS_SHOWN, sizeof(*st), GFP_KERNEL);
	if (!st)
		return -ENOMEM;
	for (b = 0; b < nr_buckets; b++) {
		if (!(b % UPM_DOMAINS_BUCKETS)) {
			if (b)
				mutex_unlock(&ksm_thread_mutex);
			cond_resched();
			if (mutex_lock_killable(&ksm_thread_mutex)) {
				kfree(st);
				return -EINTR;
			}
			ksm_wait_while_offlining();
		}
		hlist_for_each_entry(e, &upm_index.buckets[b], node)
			upm_domain_stat_add(st, &nr, e);
	}
	mutex_unlock(&ksm_thread_mutex);

	seq_puts(m, "# domain entries mappings\n");
	for (i = 0; i < nr; i++) {
		u64 d = st[i].domain;

		if (!d)
			seq_puts(m, "global");
		else if (d >> 32)
			seq_printf(m, "userns=%llu,euid=%llu", d >> 32,
				   d & U32_MAX);
		else
			seq_printf(m, "id=%llu", d);
		seq_printf(m, " %lu %lu\n", st[i].entries, st[i].mappings);
	}
	if (nr == UPM_DOMAINS_SHOWN)
		seq_puts(m, "# more domains not shown\n");
	kfree(st);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(upm_domains);

/* The counters' files (see upm_counter_attrs_init()), then these */
static struct attribute *upm_attrs[UPM_NR_COUNTERS + 6] = {
	[UPM_NR_COUNTERS] = &index_entries_attr.attr,
	&index_candidates_attr.attr,
	&index_buckets_attr.attr,
	&merge_policy_attr.attr,
	&safe_frames_attr.attr,
	NULL,
};

static const struct attribute_group upm_attr_group = {
	.attrs = upm_attrs,
	.name = "upm",
};

/* ---- Init ---- */

static void __init upm_counter_attrs_init(void)
{
	int i;

	for (i = 0; i < UPM_NR_COUNTERS; i++) {
		struct upm_counter_attr *ca = &upm_counter_attrs[i];

		WARN_ON_ONCE(strscpy(ca->name, upm_counter_ids[i],
				     sizeof(ca->name)) < 0);
		string_lower(ca->name, ca->name);
		sysfs_attr_init(&ca->attr.attr);
		ca->attr.attr.name = ca->name;
		ca->attr.attr.mode = 0444;
		ca->attr.show = upm_counter_show;
		upm_attrs[i] = &ca->attr.attr;
	}
}

static int __init upm_init(void)
{
	/* A bucket per four pages of RAM: short chains, 2 bytes per page */
	unsigned int bits = clamp(ilog2(totalram_pages() / 4), 10, 24);
	void *zero;
	int err;

	zero = kzalloc(PAGE_SIZE, GFP_KERNEL);
	if (!zero)
		return -ENOMEM;
	upm_hash_seed = get_random_u64();
	upm_zero_hash = xxh64(zero, PAGE_SIZE, upm_hash_seed);
	kfree(zero);

	upm_entry_cache = KMEM_CACHE(upm_entry, SLAB_ACCOUNT);
	if (!upm_entry_cache)
		return -ENOMEM;
	err = upm_index_init(&upm_index, bits);
	if (err)
		goto out_cache;
	err = upm_index_init(&upm_candidates, bits);
	if (err)
		goto out_index;
	upm_counter_attrs_init();
	err = sysfs_create_group(mm_kobj, &upm_attr_group);
	if (err) {
		pr_err("cannot register sysfs files\n");
		goto out_candidates;
	}
	/* A diagnostic: UPM works without it */
	debugfs_create_file("domains", 0400, debugfs_create_dir("upm", NULL),
			    NULL, &upm_domains_fops);
	WRITE_ONCE(upm_ready, true);
	pr_info("index of %u buckets ready\n", 1U << bits);
	return 0;

out_candidates:
	upm_index_destroy(&upm_candidates);
out_index:
	upm_index_destroy(&upm_index);
out_cache:
	kmem_cache_destroy(upm_entry_cache);
	return err;
}
/* After ksm_init(): KSM's caches and sysfs directory exist by then. */
late_initcall(upm_init);

#ifdef CONFIG_UPM_KUNIT_TEST
#include "tests/upm-kunit.h"
#endif

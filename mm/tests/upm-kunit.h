/* SPDX-License-Identifier: GPL-2.0 */
/*
 * KUnit tests for the UPM content index. Included at the end of mm/upm.c
 * so that its static helpers can be tested on a private index; the stable
 * node pointers here are never dereferenced by the index.
 */
#ifndef _UPM_KUNIT_H
#define _UPM_KUNIT_H

#include <kunit/test.h>

/* A distinct fake stable node for each test entry */
#define FAKE_NODE(n)	((struct ksm_stable_node *)(0x1000UL * (n)))

static void upm_test_entry(struct upm_entry *e, u64 hash, u64 domain,
			   unsigned long n)
{
	e->hash = hash;
	e->domain = domain;
	e->stable_node = FAKE_NODE(n);
}

static unsigned int upm_test_count(struct upm_index *idx, u64 hash,
				   u64 domain, unsigned long *nodes)
{
	struct upm_entry *e;
	struct hlist_node *tmp;
	unsigned int n = 0;

	*nodes = 0;
	upm_index_for_each_in_bucket(e, tmp, idx, hash, domain) {
		if (!upm_entry_matches(e, hash, domain))
			continue;
		*nodes |= (unsigned long)e->stable_node;
		n++;
	}
	return n;
}

static void upm_index_test_insert_lookup(struct kunit *test)
{
	struct upm_index idx;
	struct upm_entry a, b;
	unsigned long nodes;

	KUNIT_ASSERT_EQ(test, upm_index_init(&idx, 4), 0);
	upm_test_entry(&a, 0x1234, 1, 1);
	upm_test_entry(&b, 0x5678, 1, 2);
	upm_index_add(&idx, &a);
	upm_index_add(&idx, &b);
	KUNIT_EXPECT_EQ(test, idx.nr_entries, 2UL);

	KUNIT_EXPECT_EQ(test, upm_test_count(&idx, 0x1234, 1, &nodes), 1U);
	KUNIT_EXPECT_EQ(test, nodes, (unsigned long)FAKE_NODE(1));
	KUNIT_EXPECT_EQ(test, upm_test_count(&idx, 0x5678, 1, &nodes), 1U);
	KUNIT_EXPECT_EQ(test, nodes, (unsigned long)FAKE_NODE(2));
	/* Unknown content finds nothing. */
	KUNIT_EXPECT_EQ(test, upm_test_count(&idx, 0x9999, 1, &nodes), 0U);

	upm_index_del(&idx, &a);
	upm_index_del(&idx, &b);
	upm_index_destroy(&idx);
}

/* The same content in another domain is never found. */
static void upm_index_test_domains(struct kunit *test)
{
	struct upm_index idx;
	struct upm_entry a;
	unsigned long nodes;

	KUNIT_ASSERT_EQ(test, upm_index_init(&idx, 4), 0);
	upm_test_entry(&a, 0xabcd, 7, 1);
	upm_index_add(&idx, &a);
	KUNIT_EXPECT_EQ(test, upm_test_count(&idx, 0xabcd, 7, &nodes), 1U);
	KUNIT_EXPECT_EQ(test, upm_test_count(&idx, 0xabcd, 8, &nodes), 0U);
	KUNIT_EXPECT_EQ(test, upm_test_count(&idx, 0xabcd, 0, &nodes), 0U);
	upm_index_del(&idx, &a);
	upm_index_destroy(&idx);
}

/*
 * With a single bucket every entry collides: lookups still return exactly
 * the entries of the right (hash, domain), and equal hashes of different
 * pages (a real collision, or a chain of dups) are all returned.
 */
static void upm_index_test_collisions(struct kunit *test)
{
	struct upm_index idx;
	struct upm_entry e[4];
	unsigned long nodes;

	KUNIT_ASSERT_EQ(test, upm_index_init(&idx, 0), 0);
	upm_test_entry(&e[0], 0x1, 1, 1);
	upm_test_entry(&e[1], 0x2, 1, 2);
	upm_test_entry(&e[2], 0x1, 1, 4);	/* same hash as e[0] */
	upm_test_entry(&e[3], 0x1, 2, 8);	/* same hash, other domain */
	for (int i = 0; i < 4; i++)
		upm_index_add(&idx, &e[i]);

	KUNIT_EXPECT_EQ(test, upm_test_count(&idx, 0x1, 1, &nodes), 2U);
	KUNIT_EXPECT_EQ(test, nodes,
			(unsigned long)FAKE_NODE(1) |
			(unsigned long)FAKE_NODE(4));
	KUNIT_EXPECT_EQ(test, upm_test_count(&idx, 0x2, 1, &nodes), 1U);
	KUNIT_EXPECT_EQ(test, upm_test_count(&idx, 0x1, 2, &nodes), 1U);
	KUNIT_EXPECT_EQ(test, nodes, (unsigned long)FAKE_NODE(8));

	for (int i = 0; i < 4; i++)
		upm_index_del(&idx, &e[i]);
	KUNIT_EXPECT_EQ(test, idx.nr_entries, 0UL);
	upm_index_destroy(&idx);
}

/* Removal while iterating (as a stale node is removed during lookup). */
static void upm_index_test_remove(struct kunit *test)
{
	struct upm_index idx;
	struct upm_entry e[3], *pos;
	struct hlist_node *tmp;
	unsigned long nodes;

	KUNIT_ASSERT_EQ(test, upm_index_init(&idx, 1), 0);
	for (int i = 0; i < 3; i++) {
		upm_test_entry(&e[i], 0x42, 3, 1UL << i);
		upm_index_add(&idx, &e[i]);
	}
	upm_index_for_each_in_bucket(pos, tmp, &idx, 0x42, 3)
		if (pos == &e[1])
			upm_index_del(&idx, pos);
	KUNIT_EXPECT_EQ(test, idx.nr_entries, 2UL);
	KUNIT_EXPECT_EQ(test, upm_test_count(&idx, 0x42, 3, &nodes), 2U);
	KUNIT_EXPECT_EQ(test, nodes,
			(unsigned long)FAKE_NODE(1) |
			(unsigned long)FAKE_NODE(4));

	upm_index_del(&idx, &e[0]);
	upm_index_del(&idx, &e[2]);
	KUNIT_EXPECT_EQ(test, upm_test_count(&idx, 0x42, 3, &nodes), 0U);
	upm_index_destroy(&idx);
}

/* The zero-page hash is what upm_hash_page() computes for zeroes. */
static void upm_hash_test_zero(struct kunit *test)
{
	struct page *page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	bool zero;
	u64 hash;

	KUNIT_ASSERT_NOT_NULL(test, page);
	hash = upm_hash_page(page, &zero);
	KUNIT_EXPECT_EQ(test, hash, upm_zero_hash);
	KUNIT_EXPECT_TRUE(test, zero);

	memset(page_address(page) + PAGE_SIZE - 1, 1, 1);
	hash = upm_hash_page(page, &zero);
	KUNIT_EXPECT_NE(test, hash, upm_zero_hash);
	KUNIT_EXPECT_FALSE(test, zero);
	__free_page(page);
}

/*
 * The content hash is seeded at boot, so nobody can tell which bucket a
 * content lands in: the hash of zeroes is not the unseeded one.
 */
static void upm_hash_test_seeded(struct kunit *test)
{
	void *zero = kunit_kzalloc(test, PAGE_SIZE, GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, zero);
	KUNIT_EXPECT_NE(test, upm_hash_seed, 0ULL);
	KUNIT_EXPECT_EQ(test, upm_zero_hash,
			xxh64(zero, PAGE_SIZE, upm_hash_seed));
	KUNIT_EXPECT_NE(test, upm_zero_hash, xxh64(zero, PAGE_SIZE, 0));
}

/*
 * Domain keys: 0 under the global policy, the explicit id if the mm has
 * one, else user namespace and euid, which never equals an explicit id.
 */
static void upm_domain_test_keys(struct kunit *test)
{
	struct mm_struct *mm = kunit_kzalloc(test, sizeof(*mm), GFP_KERNEL);
	const struct cred *cred = current_cred();
	struct user_namespace *ns;
	enum upm_policy saved;
	u64 key;

	KUNIT_ASSERT_NOT_NULL(test, mm);
	mutex_lock(&ksm_thread_mutex);
	saved = upm_merge_policy;

	upm_merge_policy = UPM_POLICY_DOMAIN;
	key = upm_domain_of(mm, current, &ns);
	KUNIT_EXPECT_EQ(test, key, ((u64)cred->user_ns->ns.inum << 32) |
				   __kuid_val(cred->euid));
	KUNIT_EXPECT_GT(test, key, (u64)U32_MAX);
	/* The key pins its namespace, so that its number is not reused */
	KUNIT_EXPECT_PTR_EQ(test, ns, cred->user_ns);
	put_user_ns(ns);
	mm->upm_domain = INT_MAX;
	KUNIT_EXPECT_EQ(test, upm_domain_of(mm, current, &ns), (u64)INT_MAX);
	KUNIT_EXPECT_NULL(test, ns);

	upm_merge_policy = UPM_POLICY_GLOBAL;
	KUNIT_EXPECT_EQ(test, upm_domain_of(mm, current, &ns), 0ULL);
	mm->upm_domain = 0;
	KUNIT_EXPECT_EQ(test, upm_domain_of(mm, current, &ns), 0ULL);

	upm_merge_policy = saved;
	mutex_unlock(&ksm_thread_mutex);
}

static struct kunit_case upm_index_test_cases[] = {
	KUNIT_CASE(upm_index_test_insert_lookup),
	KUNIT_CASE(upm_index_test_domains),
	KUNIT_CASE(upm_index_test_collisions),
	KUNIT_CASE(upm_index_test_remove),
	KUNIT_CASE(upm_hash_test_zero),
	KUNIT_CASE(upm_hash_test_seeded),
	KUNIT_CASE(upm_domain_test_keys),
	{},
};

static struct kunit_suite upm_index_test_suite = {
	.name = "upm_index",
	.test_cases = upm_index_test_cases,
};
kunit_test_suites(&upm_index_test_suite);

#endif /* _UPM_KUNIT_H */

// SPDX-License-Identifier: GPL-2.0
/*
 * Bad input to MADV_UPM_MERGEABLE: one case per row of the admin guide's
 * table. Needs no privilege: as root, each case also checks every page's
 * KPF_KSM flag through its PFN.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "upm_util.h"

#define NP		64

/*
 * Bad input: one case per row of the admin guide's table. Each checks the
 * errno and that nothing in the range changed: content, no KSM page, no
 * VM_MERGEABLE ("mg" in smaps) and no merge pass (the calls counter).
 */
enum { K_UNALIGNED, K_WRAP, K_LEN_ROUNDS_TO_0, K_HUGE_LEN, K_HOLE,
	K_HOLE_AT_END, K_UNMAPPED, K_SHARED, K_MIXED, K_PFNMAP, K_HUGETLB,
	K_ZERO_LEN };

/* Where the bad-input cases map their range: nothing else is near. */
#define BAD_BASE	(1UL << 40)

FIXTURE(bad) {
	char *mem;
	char *huge;	/* the MAP_HUGETLB range of hugetlb_mapping */
};

FIXTURE_VARIANT(bad) {
	int kind;
	int err;
};

FIXTURE_VARIANT_ADD(bad, unaligned_start) {
	.kind = K_UNALIGNED, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, end_overflows) {
	.kind = K_WRAP, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, length_rounds_to_0) {
	.kind = K_LEN_ROUNDS_TO_0, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, huge_length) {
	.kind = K_HUGE_LEN, .err = ENOMEM
};
FIXTURE_VARIANT_ADD(bad, hole_in_range) {
	.kind = K_HOLE, .err = ENOMEM
};
FIXTURE_VARIANT_ADD(bad, hole_at_end) {
	.kind = K_HOLE_AT_END, .err = ENOMEM
};
FIXTURE_VARIANT_ADD(bad, unmapped_range) {
	.kind = K_UNMAPPED, .err = ENOMEM
};
FIXTURE_VARIANT_ADD(bad, shared_mapping) {
	.kind = K_SHARED, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, private_and_shared) {
	.kind = K_MIXED, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, pfnmap_vvar) {
	.kind = K_PFNMAP, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, hugetlb_mapping) {
	.kind = K_HUGETLB, .err = EINVAL
};
FIXTURE_VARIANT_ADD(bad, zero_length) {
	.kind = K_ZERO_LEN, .err = 0
};

FIXTURE_SETUP(bad)
{
	if (upm_counter("calls") < 0)
		SKIP(return, "no /sys/kernel/mm/upm: no CONFIG_UPM");
	self->mem = mmap((void *)BAD_BASE, NP * psize(), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			 -1, 0);
	ASSERT_EQ((void *)BAD_BASE, self->mem);
	fill(self->mem, NP, 130);
}

FIXTURE_TEARDOWN(bad)
{
	if (self->mem != MAP_FAILED)
		munmap(self->mem, NP * psize());
	if (self->huge)
		munmap(self->huge, 2UL << 20);
}

/* VMAs starting in [start, end) with VM_MERGEABLE set. */
static int mergeable_vmas(char *start, char *end)
{
	char line[512];
	unsigned long a = 0, b;
	int n = 0, in = 0;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		/* a VMA's first line: "start-end perms offset dev ..." */
		if (sscanf(line, "%lx-%lx ", &a, &b) == 2 &&
		    !strchr(line, ':')) {
			in = a >= (uintptr_t)start && a < (uintptr_t)end;
			continue;
		}
		if (in && !strncmp(line, "VmFlags:", 8) && strstr(line, " mg"))
			n++;
	}
	fclose(f);
	return n;
}

/* The [vvar] mapping (VM_PFNMAP | VM_IO), or NULL. */
static char *find_vvar(void)
{
	char line[512];
	unsigned long a, b;
	char *found = NULL;
	FILE *f = fopen("/proc/self/maps", "r");

	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "[vvar]") &&
		    sscanf(line, "%lx-%lx", &a, &b) == 2) {
			found = (char *)a;
			break;
		}
	fclose(f);
	return found;
}

TEST_F(bad, row)
{
	char *mem = self->mem, *addr = mem, *m;
	size_t len = NP * psize();
	int intact = NP, r, err;
	long calls, merging;

	switch (variant->kind) {
	case K_UNALIGNED:
		addr = mem + 1;
		len = psize();
		break;
	case K_WRAP:
		len = -(size_t)psize();
		break;
	case K_LEN_ROUNDS_TO_0:
		len = SIZE_MAX;
		break;
	case K_HUGE_LEN:
		len = 1UL << 45;
		break;
	case K_HOLE:
		ASSERT_EQ(0, munmap(mem + 16 * psize(), 16 * psize()));
		intact = 48;
		break;
	case K_HOLE_AT_END:
		ASSERT_EQ(0, munmap(mem + 48 * psize(), 16 * psize()));
		intact = 48;
		break;
	case K_UNMAPPED:
		addr = mem + NP * psize();
		len = 4 * psize();
		break;
	case K_SHARED:
	case K_MIXED:
		m = mmap(mem + 48 * psize(), 16 * psize(),
			 PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		ASSERT_EQ(mem + 48 * psize(), m);
		fill(m, 16, 131);
		intact = 48;
		if (variant->kind == K_SHARED) {
			addr = m;
			len = 16 * psize();
		}
		break;
	case K_PFNMAP:
		addr = find_vvar();
		if (!addr)
			SKIP(return, "no [vvar] mapping");
		len = psize();
		break;
	case K_HUGETLB:
		addr = mmap(NULL, 2UL << 20, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		if (addr == MAP_FAILED)
			SKIP(return, "no huge page for MAP_HUGETLB: %s",
			     strerror(errno));
		self->huge = addr;
		memset(addr, 7, 2UL << 20);
		len = 2UL << 20;
		break;
	case K_ZERO_LEN:
		len = 0;
		break;
	}
	calls = upm_counter("calls");
	merging = read_ksm_stat("ksm_merging_pages");
	ASSERT_LE(0, merging) TH_LOG("no /proc/self/ksm_stat");
	errno = 0;
	r = madvise(addr, len, MADV_UPM_MERGEABLE);
	err = errno;
	if (variant->err) {
		EXPECT_EQ(-1, r);
		EXPECT_EQ(variant->err, err);
	} else {
		EXPECT_EQ(0, r);
	}
	if (r)
		TH_LOG("errno %d (%s)", err, strerror(err));
	EXPECT_EQ(0, upm_counter("calls") - calls);
	EXPECT_EQ(0, mergeable_vmas(mem, mem + NP * psize()));
	/* No page of this process became a KSM page ... */
	EXPECT_EQ(merging, read_ksm_stat("ksm_merging_pages"));
	/* ... nor of the range (PFNs are for root only) */
	for (int i = 0; !geteuid() && i < NP; i++)
		EXPECT_FALSE(is_ksm(mem + i * psize()));
	if (variant->kind == K_HOLE) {
		EXPECT_EQ(16, good_range(mem, 130, 0, 16));
		EXPECT_EQ(32, good_range(mem, 130, 32, NP));
	} else {
		EXPECT_EQ(intact, good_range(mem, 130, 0, intact));
	}
	if (variant->kind == K_SHARED || variant->kind == K_MIXED)
		EXPECT_TRUE(same_as(mem + 48 * psize(), 16, 131));
	if (variant->kind == K_HUGETLB)
		EXPECT_EQ(7, addr[12345]);
	if (variant->kind == K_PFNMAP)
		EXPECT_EQ(0, mergeable_vmas(addr, addr + psize()));
}

int main(int argc, char **argv)
{
	upm_require_kernel();
	return test_harness_run(argc, argv);
}

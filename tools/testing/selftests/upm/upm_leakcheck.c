// SPDX-License-Identifier: GPL-2.0
/*
 * Run last, after every other test process has exited: nothing UPM or
 * KSM allocated may remain. The gauges (pages_shared, pages_sharing,
 * pages_unshared, pages_volatile, stable node chains and dups,
 * ksm_zero_pages, UPM's index_entries) must be 0, and UPM's and KSM's
 * slab caches must hold no object (this needs slab_nomerge, or the caches
 * share slabs with others). KSM's own cleanup runs first: see settle().
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "upm_util.h"

static const char * const gauges[] = {
	"pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
	"stable_node_chains", "stable_node_dups", "ksm_zero_pages",
};

static const char * const caches[] = {
	"upm_entry", "ksm_rmap_item", "ksm_stable_node", "ksm_mm_slot",
};

static long busy(void)
{
	long sum = upm_counter("index_entries"), v;

	for (size_t i = 0; i < ARRAY_SIZE(gauges); i++) {
		v = ksm_counter(gauges[i]);
		/* a gauge this kernel does not have reads as -1 */
		if (v > 0)
			sum += v;
	}
	return sum;
}

static void log_gauges(struct __test_metadata *_metadata, const char *when)
{
	for (size_t i = 0; i < ARRAY_SIZE(gauges); i++)
		TH_LOG("%s: ksm/%s %ld", when, gauges[i],
		       ksm_counter(gauges[i]));
	TH_LOG("%s: upm/index_entries %ld", when,
	       upm_counter("index_entries"));
}

/*
 * KSM frees a stable node whose page is gone only when ksmd or "run=2"
 * walks the stable tree. Let ksmd run two full scans first (it frees
 * what exited processes left behind); if the gauges are still not 0,
 * "echo 2 > run" unmerges and frees every node KSM still has. After
 * that, anything left is a leak.
 */
static void settle(struct __test_metadata *_metadata)
{
	struct knobs k;
	long scans = ksm_counter("full_scans");
	time_t end = time(NULL) + 30;

	if (!busy())
		return;
	log_gauges(_metadata, "after the tests");
	knobs_save(&k);
	write_str("/sys/kernel/mm/ksm/sleep_millisecs", "0");
	write_str("/sys/kernel/mm/ksm/pages_to_scan", "10000");
	write_str("/sys/kernel/mm/ksm/run", "1");
	while (busy() && ksm_counter("full_scans") < scans + 2 &&
	       time(NULL) < end)
		usleep(100000);
	if (busy()) {
		log_gauges(_metadata, "after ksmd");
		write_str("/sys/kernel/mm/ksm/run", "2");
	}
	knobs_restore(&k);
}

FIXTURE(leak) {
};

FIXTURE_SETUP(leak)
{
	if (getuid())
		SKIP(return, "needs root");
	if (upm_counter("index_entries") < 0)
		SKIP(return, "no /sys/kernel/mm/upm: no CONFIG_UPM");
	settle(_metadata);
}

FIXTURE_TEARDOWN(leak)
{
}

TEST_F_TIMEOUT(leak, counters_back_to_zero, 120)
{
	for (size_t i = 0; i < ARRAY_SIZE(gauges); i++) {
		long v = ksm_counter(gauges[i]);

		if (v < 0)
			continue;
		TH_LOG("ksm/%s: %ld", gauges[i], v);
		EXPECT_EQ(0, v);
	}
	EXPECT_EQ(0, upm_counter("index_entries"));
}

/* Objects left in a slab cache after shrinking it, or -1. */
static long cache_objects(const char *name, bool *merged)
{
	char path[160];
	struct stat st;

	snprintf(path, sizeof(path), "/sys/kernel/slab/%s", name);
	*merged = false;
	if (lstat(path, &st))
		return -1;
	/* a symlink: this cache shares its slabs with other caches */
	if (S_ISLNK(st.st_mode)) {
		*merged = true;
		return -1;
	}
	snprintf(path, sizeof(path), "/sys/kernel/slab/%s/shrink", name);
	write_str(path, "1");
	snprintf(path, sizeof(path), "/sys/kernel/slab/%s/objects", name);
	return read_ulong(path);
}

TEST_F_TIMEOUT(leak, slab_caches_empty, 120)
{
	int checked = 0;

	if (access("/sys/kernel/slab", F_OK))
		SKIP(return, "no /sys/kernel/slab (CONFIG_SLUB_DEBUG, SYSFS)");
	for (size_t i = 0; i < ARRAY_SIZE(caches); i++) {
		bool merged;
		long n = cache_objects(caches[i], &merged);

		if (merged) {
			TH_LOG("%s shares its slabs (boot with slab_nomerge)",
			       caches[i]);
			continue;
		}
		if (n < 0 && !strcmp(caches[i], "upm_entry"))
			EXPECT_LE(0, n);
		if (n < 0)
			continue;
		TH_LOG("%s: %ld objects", caches[i], n);
		EXPECT_EQ(0, n);
		checked++;
	}
	if (!checked)
		SKIP(return, "every cache is merged: boot with slab_nomerge");
}

int main(int argc, char **argv)
{
	upm_require_kernel();
	return test_harness_run(argc, argv);
}

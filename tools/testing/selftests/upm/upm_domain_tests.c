// SPDX-License-Identifier: GPL-2.0
/*
 * Tenant isolation for MADV_UPM_MERGEABLE: merge domains (PR_SET_UPM_DOMAIN
 * and the default (user namespace, euid) domain), the merge_policy switch,
 * safe frames, remote advice with process_madvise(), ksmd staying out of
 * the domains, and a first-write timing test. Sharing is proven by the
 * PFNs other processes map (/proc/<pid>/pagemap) and KPF_KSM. Needs root:
 * each tenant is a child that drops to its own uid.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../kselftest_harness.h"
#include "upm_util.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif

#define NPAGES		PEER_PAGES
#define UID_A		1001
#define UID_B		1002

static bool pfn_is_ksm(uint64_t pfn)
{
	return pfn && (read_kpageflags(pfn) & (1ULL << KPF_KSM));
}

/*
 * A tenant is a peer (upm_util.h) that joins a domain (if any, while still
 * root), drops to uid (if any), maps NPAGES of seed's content and advises
 * them. The test reads its PFNs from /proc/<pid>/pagemap: a tenant that
 * dropped to a uid cannot read its own.
 */
static int tenant_start(struct peer *t, uid_t uid, unsigned int domain,
			uint64_t seed, enum peer_advice advice)
{
	struct peer_opts o = {
		.seed = seed, .advice = advice, .uid = uid, .domain = domain,
	};

	return peer_start(t, &o);
}

static bool tenant_content_ok(struct peer *t)
{
	return peer_mismatches(t) == 0;
}

static uint64_t tenant_pfn(struct peer *t, int i)
{
	return pfn_in(t->pid, t->addr + i * psize());
}

/* Pages at which a and b map the same frame, and it is a KSM page. */
static int shared_pages(struct peer *a, struct peer *b)
{
	int n = 0;

	for (int i = 0; i < NPAGES; i++) {
		uint64_t pfn = tenant_pfn(a, i);

		if (pfn && pfn == tenant_pfn(b, i) && pfn_is_ksm(pfn))
			n++;
	}
	return n;
}

static int ksm_pages(struct peer *t)
{
	int n = 0;

	for (int i = 0; i < NPAGES; i++)
		n += pfn_is_ksm(tenant_pfn(t, i));
	return n;
}

#define NTENANTS 4

FIXTURE(domain) {
	struct peer t[NTENANTS];
	char policy[32], safe[8];
	struct knobs knobs;
};

FIXTURE_SETUP(domain)
{
	memset(self->t, 0, sizeof(self->t));
	if (getuid())
		SKIP(return, "needs root: tenants drop to their own uids");
	if (access("/sys/kernel/mm/upm/merge_policy", R_OK))
		SKIP(return, "no /sys/kernel/mm/upm/merge_policy");
	read_str("/sys/kernel/mm/upm/merge_policy", self->policy,
		 sizeof(self->policy));
	read_str("/sys/kernel/mm/upm/safe_frames", self->safe,
		 sizeof(self->safe));
	knobs_save(&self->knobs);
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/run", "0"));
	ASSERT_EQ(0, write_str("/sys/kernel/mm/upm/safe_frames", "1"));
}

FIXTURE_TEARDOWN(domain)
{
	for (int i = 0; i < NTENANTS; i++)
		peer_stop(&self->t[i]);
	knobs_restore(&self->knobs);
	write_str("/sys/kernel/mm/upm/safe_frames", self->safe);
	/* The index is empty again once the tenants are gone */
	write_str("/sys/kernel/mm/upm/merge_policy", self->policy);
}

#define start(i, uid, dom, seed, adv) do {				\
	ASSERT_EQ(0, tenant_start(&self->t[i], uid, dom, seed, adv));	\
	ASSERT_EQ(0, self->t[i].err) TH_LOG("tenant %d: %s", i,	\
					    strerror(self->t[i].err));	\
} while (0)

/* Two users with the same content never share a frame. */
TEST_F(domain, different_users_never_share)
{
	long merged = upm_counter("pages_merged");

	start(0, UID_A, 0, 1, PEER_ADVISE_UPM);
	start(1, UID_B, 0, 1, PEER_ADVISE_UPM);
	EXPECT_EQ(0, shared_pages(&self->t[0], &self->t[1]));
	/* Both advised: each is a candidate of its own domain, unmerged */
	EXPECT_EQ(0, ksm_pages(&self->t[0]));
	EXPECT_EQ(0, ksm_pages(&self->t[1]));
	EXPECT_EQ(merged, upm_counter("pages_merged"));
	/* Control: a second process of the first user shares everything */
	start(2, UID_A, 0, 1, PEER_ADVISE_UPM);
	EXPECT_EQ(NPAGES, shared_pages(&self->t[0], &self->t[2]));
	EXPECT_EQ(0, shared_pages(&self->t[1], &self->t[2]));
	EXPECT_TRUE(tenant_content_ok(&self->t[0]));
	EXPECT_TRUE(tenant_content_ok(&self->t[1]));
	EXPECT_TRUE(tenant_content_ok(&self->t[2]));
}

/* An explicit domain groups processes of different users. */
TEST_F(domain, explicit_domain_shares_across_users)
{
	start(0, UID_A, 7, 2, PEER_ADVISE_UPM);
	start(1, UID_B, 7, 2, PEER_ADVISE_UPM);
	EXPECT_EQ(NPAGES, shared_pages(&self->t[0], &self->t[1]));
	/* Same user, other domain: nothing shared */
	start(2, UID_A, 8, 2, PEER_ADVISE_UPM);
	EXPECT_EQ(0, shared_pages(&self->t[0], &self->t[2]));
	/* Same user, default domain: nothing shared with domain 7 either */
	start(3, UID_A, 0, 2, PEER_ADVISE_UPM);
	EXPECT_EQ(0, shared_pages(&self->t[0], &self->t[3]));
	for (int i = 0; i < 4; i++)
		EXPECT_TRUE(tenant_content_ok(&self->t[i]));
}

/* Print the domain and exit: run through exec by domain_survives_exec. */
static int print_domain_main(void)
{
	int d = prctl(PR_GET_UPM_DOMAIN, 0, 0, 0, 0);

	printf("%d\n", d);
	return d < 0;
}

static int child_domain_after(bool do_exec, unsigned int domain)
{
	int fds[2], status;
	char buf[32] = "";
	pid_t pid;

	if (pipe(fds))
		return -1;
	pid = fork();
	if (!pid) {
		if (prctl(PR_SET_UPM_DOMAIN, domain, 0, 0, 0))
			_exit(1);
		dup2(fds[1], 1);
		if (do_exec) {
			execl("/proc/self/exe", "upm_domain_tests",
			      "--print-domain", NULL);
			_exit(2);
		}
		/* And a grandchild: fork keeps the domain */
		if (!fork())
			_exit(print_domain_main());
		wait(NULL);
		_exit(0);
	}
	close(fds[1]);
	if (read(fds[0], buf, sizeof(buf) - 1) <= 0)
		buf[0] = '\0';
	close(fds[0]);
	waitpid(pid, &status, 0);
	return buf[0] ? atoi(buf) : -1;
}

TEST_F(domain, domain_survives_fork_and_exec)
{
	EXPECT_EQ(11, child_domain_after(false, 11));
	EXPECT_EQ(12, child_domain_after(true, 12));
	/* This process was never placed in a domain */
	EXPECT_EQ(0, prctl(PR_GET_UPM_DOMAIN, 0, 0, 0, 0));
}

/* Run fn in a child dropped to uid; its exit status is the result. */
#define AS_USER(uid, body) ({						\
	pid_t __pid = fork();						\
	int __st = -1;							\
	if (!__pid) {							\
		if (drop_to(uid))					\
			_exit(100);					\
		body;							\
		_exit(0);						\
	}								\
	waitpid(__pid, &__st, 0);					\
	WIFEXITED(__st) ? WEXITSTATUS(__st) : -1;			\
})

#define CHECK(n, cond) do { if (!(cond)) _exit(n); } while (0)

TEST_F(domain, prctl_errors_change_nothing)
{
	/* Bad arguments, as root */
	EXPECT_EQ(-1, prctl(PR_SET_UPM_DOMAIN, (unsigned long)INT_MAX + 1,
			    0, 0, 0));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, prctl(PR_SET_UPM_DOMAIN, 3, 1, 0, 0));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, prctl(PR_GET_UPM_DOMAIN, 1, 0, 0, 0));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(0, prctl(PR_GET_UPM_DOMAIN, 0, 0, 0, 0));

	/* An unprivileged process cannot join a domain */
	EXPECT_EQ(0, AS_USER(UID_A, ({
		CHECK(1, prctl(PR_SET_UPM_DOMAIN, 5, 0, 0, 0) == -1);
		CHECK(2, errno == EPERM);
		CHECK(3, prctl(PR_GET_UPM_DOMAIN, 0, 0, 0, 0) == 0);
		CHECK(4, prctl(PR_SET_UPM_DOMAIN, 0, 0, 0, 0) == 0);
	})));

	/* Placed in domain 5 by root: may stay, may leave, may not move */
	ASSERT_EQ(0, prctl(PR_SET_UPM_DOMAIN, 5, 0, 0, 0));
	EXPECT_EQ(0, AS_USER(UID_A, ({
		CHECK(1, prctl(PR_GET_UPM_DOMAIN, 0, 0, 0, 0) == 5);
		CHECK(2, prctl(PR_SET_UPM_DOMAIN, 5, 0, 0, 0) == 0);
		CHECK(3, prctl(PR_SET_UPM_DOMAIN, 6, 0, 0, 0) == -1);
		CHECK(4, errno == EPERM);
		CHECK(5, prctl(PR_GET_UPM_DOMAIN, 0, 0, 0, 0) == 5);
		CHECK(6, prctl(PR_SET_UPM_DOMAIN, 0, 0, 0, 0) == 0);
		CHECK(7, prctl(PR_GET_UPM_DOMAIN, 0, 0, 0, 0) == 0);
	})));
	EXPECT_EQ(0, prctl(PR_SET_UPM_DOMAIN, 0, 0, 0, 0));
}

static long process_madvise_upm(pid_t pid, void *addr, size_t len)
{
	struct iovec iov = { .iov_base = addr, .iov_len = len };
	int pidfd = syscall(SYS_pidfd_open, pid, 0);
	long ret;

	if (pidfd < 0)
		return -1;
	ret = syscall(SYS_process_madvise, pidfd, &iov, 1,
		      MADV_UPM_MERGEABLE, 0);
	if (ret < 0) {
		int err = errno;

		close(pidfd);
		errno = err;
		return ret;
	}
	close(pidfd);
	return ret;
}

/*
 * Remote advice merges exactly as local advice, in the target's domain:
 * root advises a uid A process, which then shares with another uid A
 * process and not with root's own.
 */
TEST_F(domain, process_madvise_merges_like_local)
{
	long merged = upm_counter("pages_merged");

	start(0, UID_A, 0, 3, PEER_ADVISE_UPM);
	start(1, 0, 0, 3, PEER_ADVISE_UPM);
	start(2, UID_A, 0, 3, PEER_ADVISE_NONE);
	EXPECT_EQ(0, ksm_pages(&self->t[2]));
	EXPECT_EQ((long)(NPAGES * psize()),
		  process_madvise_upm(self->t[2].pid, self->t[2].addr,
				      NPAGES * psize()));
	EXPECT_EQ(NPAGES, shared_pages(&self->t[0], &self->t[2]));
	EXPECT_EQ(0, shared_pages(&self->t[1], &self->t[2]));
	EXPECT_EQ(NPAGES, upm_counter("pages_merged") - merged);
	EXPECT_TRUE(tenant_content_ok(&self->t[2]));
	/* A hole in the remote range: ENOMEM, as local advice */
	EXPECT_EQ(-1, process_madvise_upm(self->t[2].pid,
					  self->t[2].addr - psize(),
					  NPAGES * psize()));
	EXPECT_EQ(ENOMEM, errno);
}

/* Another user's process: refused by ptrace access; own: CAP_SYS_NICE. */
TEST_F(domain, process_madvise_needs_permission)
{
	struct peer *b = &self->t[1], *a2 = &self->t[2];
	pid_t bpid, a2pid;
	void *baddr, *a2addr;

	start(0, UID_A, 0, 4, PEER_ADVISE_UPM);
	start(1, UID_B, 0, 4, PEER_ADVISE_NONE);
	start(2, UID_A, 0, 4, PEER_ADVISE_NONE);
	bpid = b->pid;
	baddr = b->addr;
	a2pid = a2->pid;
	a2addr = a2->addr;
	EXPECT_EQ(0, AS_USER(UID_A, ({
		CHECK(1, process_madvise_upm(bpid, baddr,
					     NPAGES * psize()) == -1);
		CHECK(2, errno == EACCES || errno == EPERM);
		CHECK(3, process_madvise_upm(a2pid, a2addr,
					     NPAGES * psize()) == -1);
		CHECK(4, errno == EPERM);
	})));
	/* Nothing was merged or even made a KSM page */
	EXPECT_EQ(0, ksm_pages(b));
	EXPECT_EQ(0, ksm_pages(a2));
	EXPECT_TRUE(tenant_content_ok(b));
	EXPECT_TRUE(tenant_content_ok(a2));
}

/* Safe frames: the shared frame is none of the advisers' own frames. */
TEST_F(domain, safe_frames_share_a_fresh_frame)
{
	uint64_t before[2][NPAGES];
	long copied;

	for (int pass = 0; pass < 2; pass++) {
		bool safe = pass == 0;
		int fresh = 0, first_owner = 0;

		ASSERT_EQ(0, write_str("/sys/kernel/mm/upm/safe_frames",
					safe ? "1" : "0"));
		copied = upm_counter("pages_copied");
		start(0, 0, 0, 5 + pass, PEER_ADVISE_NONE);
		start(1, 0, 0, 5 + pass, PEER_ADVISE_NONE);
		for (int t = 0; t < 2; t++)
			for (int i = 0; i < NPAGES; i++)
				before[t][i] = tenant_pfn(&self->t[t], i);
		ASSERT_EQ((long)(NPAGES * psize()),
			  process_madvise_upm(self->t[0].pid, self->t[0].addr,
					      NPAGES * psize()));
		ASSERT_EQ((long)(NPAGES * psize()),
			  process_madvise_upm(self->t[1].pid, self->t[1].addr,
					      NPAGES * psize()));
		ASSERT_EQ(NPAGES, shared_pages(&self->t[0], &self->t[1]));
		for (int i = 0; i < NPAGES; i++) {
			uint64_t pfn = tenant_pfn(&self->t[0], i);

			fresh += pfn != before[0][i] && pfn != before[1][i];
			first_owner += pfn == before[0][i];
		}
		if (safe) {
			EXPECT_EQ(NPAGES, fresh);
			EXPECT_EQ(NPAGES, upm_counter("pages_copied") - copied);
		} else {
			/* Control: the first adviser's frames are shared */
			EXPECT_EQ(NPAGES, first_owner);
			EXPECT_EQ(0, upm_counter("pages_copied") - copied);
		}
		EXPECT_TRUE(tenant_content_ok(&self->t[0]));
		EXPECT_TRUE(tenant_content_ok(&self->t[1]));
		peer_stop(&self->t[0]);
		peer_stop(&self->t[1]);
	}
}

static int set_policy(const char *policy)
{
	return write_str("/sys/kernel/mm/upm/merge_policy", policy);
}

/* merge_policy=global merges across users; it changes only when idle. */
TEST_F(domain, global_policy)
{
	char buf[32];

	start(0, UID_A, 0, 6, PEER_ADVISE_UPM);
	start(1, UID_A, 0, 6, PEER_ADVISE_UPM);
	ASSERT_EQ(NPAGES, shared_pages(&self->t[0], &self->t[1]));
	/* Live entries: the policy cannot change under them */
	EXPECT_EQ(-1, set_policy("global"));
	EXPECT_EQ(EBUSY, errno);
	read_str("/sys/kernel/mm/upm/merge_policy", buf, sizeof(buf));
	EXPECT_STREQ("domain\n", buf);
	EXPECT_EQ(-1, set_policy("bogus"));
	EXPECT_EQ(EINVAL, errno);
	peer_stop(&self->t[0]);
	peer_stop(&self->t[1]);

	/* Its pages are gone: the write prunes the index and succeeds */
	ASSERT_EQ(0, set_policy("global"));
	start(0, UID_A, 0, 6, PEER_ADVISE_UPM);
	start(1, UID_B, 0, 6, PEER_ADVISE_UPM);
	EXPECT_EQ(NPAGES, shared_pages(&self->t[0], &self->t[1]));
	peer_stop(&self->t[0]);
	peer_stop(&self->t[1]);
	EXPECT_EQ(0, set_policy("domain"));
}

/* Wait up to 10 s for an index of at most want entries. */
static long index_entries_drop_to(long want)
{
	long n = upm_counter("index_entries");

	for (int i = 0; i < 200 && n > want; i++) {
		usleep(50000);
		n = upm_counter("index_entries");
	}
	return n;
}

/*
 * MADV_UNMERGEABLE undoes UPM: the pages are private again, and the index
 * keeps a content while someone still shares it and forgets it after.
 */
TEST_F(domain, unmergeable_drops_index_entries)
{
	/* Entries of earlier tests' pages are dropped within a second */
	long entries = index_entries_drop_to(0);

	start(0, UID_A, 0, 9, PEER_ADVISE_UPM);
	start(1, UID_A, 0, 9, PEER_ADVISE_UPM);
	ASSERT_EQ(entries + NPAGES, upm_counter("index_entries"));
	ASSERT_EQ(NPAGES, shared_pages(&self->t[0], &self->t[1]));

	ASSERT_EQ(0, peer_call(&self->t[0], PEER_UNMERGE, 0, 0, 0));
	EXPECT_EQ(0, ksm_pages(&self->t[0]));
	/* Tenant 1 still maps the shared pages: a new sharer finds them */
	EXPECT_EQ(NPAGES, ksm_pages(&self->t[1]));
	start(2, UID_A, 0, 9, PEER_ADVISE_UPM);
	EXPECT_EQ(NPAGES, shared_pages(&self->t[1], &self->t[2]));
	EXPECT_EQ(entries + NPAGES, upm_counter("index_entries"));

	ASSERT_EQ(0, peer_call(&self->t[1], PEER_UNMERGE, 0, 0, 0));
	EXPECT_EQ(0, ksm_pages(&self->t[1]));
	peer_stop(&self->t[2]);
	/* Nobody maps them any more */
	EXPECT_EQ(entries + 0, index_entries_drop_to(entries));
	for (int i = 0; i < 2; i++)
		EXPECT_TRUE(tenant_content_ok(&self->t[i]));
}

/* Wait for ksmd to finish n more full scans, up to a deadline. */
static bool ksmd_scans(int n)
{
	long start = read_ulong("/sys/kernel/mm/ksm/full_scans");

	for (int i = 0; i < 600; i++) {
		if (read_ulong("/sys/kernel/mm/ksm/full_scans") >= start + n)
			return true;
		usleep(50000);
	}
	return false;
}

/* ksmd never merges a page of another domain with a UPM domain's page. */
TEST_F(domain, ksmd_stays_out_of_domains)
{
	start(0, UID_A, 0, 7, PEER_ADVISE_UPM);
	start(1, UID_B, 0, 7, PEER_ADVISE_KSM);
	start(2, UID_B, 0, 7, PEER_ADVISE_KSM);
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/sleep_millisecs", "0"));
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/pages_to_scan", "5000"));
	ASSERT_EQ(0, write_str("/sys/kernel/mm/ksm/run", "1"));
	ASSERT_TRUE(ksmd_scans(3));
	/* Control: ksmd did merge the two MADV_MERGEABLE processes */
	EXPECT_EQ(NPAGES, shared_pages(&self->t[1], &self->t[2]));
	EXPECT_EQ(0, shared_pages(&self->t[0], &self->t[1]));
	EXPECT_EQ(0, ksm_pages(&self->t[0]));
	/* ksmd's scans left tenant 0's candidates to UPM: a twin finds them */
	start(3, UID_A, 0, 7, PEER_ADVISE_UPM);
	EXPECT_EQ(NPAGES, shared_pages(&self->t[0], &self->t[3]));
	EXPECT_EQ(0, shared_pages(&self->t[1], &self->t[3]));
	EXPECT_TRUE(tenant_content_ok(&self->t[0]));
	EXPECT_TRUE(tenant_content_ok(&self->t[1]));
}

/* The per-domain totals: for root only, and they count what is merged. */
#define UPM_DOMAINS_FILE "/sys/kernel/debug/upm/domains"

TEST_F(domain, domains_file)
{
	char buf[4096], line[64];
	struct stat st;

	if (access("/sys/kernel/debug/upm", F_OK))
		SKIP(return, "no debugfs at /sys/kernel/debug");

	ASSERT_EQ(0, stat(UPM_DOMAINS_FILE, &st));
	EXPECT_EQ(0400, st.st_mode & 0777);
	start(0, UID_A, 9, 8, PEER_ADVISE_UPM);
	start(1, UID_B, 9, 8, PEER_ADVISE_UPM);
	read_str(UPM_DOMAINS_FILE, buf, sizeof(buf));
	snprintf(line, sizeof(line), "\nid=9 %d %d\n", NPAGES, 2 * NPAGES);
	EXPECT_NE(NULL, strstr(buf, line)) TH_LOG("%s", buf);
	EXPECT_EQ(0, AS_USER(UID_A, ({
		CHECK(1, open(UPM_DOMAINS_FILE, O_RDONLY) < 0);
		CHECK(2, errno == EACCES);
	})));
}

#define SIDE_PAGES	64

static char *map_filled(size_t npages, uint64_t seed)
{
	char *p = map_anon(npages);

	if (p)
		fill(p, npages, seed);
	return p;
}

/*
 * Pages of p (npages) that are KSM pages, and those whose frame a write
 * replaced (a copy-on-write fault), written now
 */
static void write_and_count(char *p, int npages, int *ksm, int *moved)
{
	*ksm = *moved = 0;
	for (int i = 0; i < npages; i++) {
		uint64_t pfn = pfn_of(p + i * psize());

		*ksm += is_ksm(p + i * psize());
		p[i * psize()] ^= 1;
		*moved += pfn_of(p + i * psize()) != pfn;
	}
}

/*
 * The side channel: an attacker (uid B) advises pages and then looks at
 * what its first write to them does. Whether a write takes a
 * copy-on-write fault (a write-protected, shared page) is what a timing
 * attack measures; here it is read directly, from the PFN and KPF_KSM.
 * Pages whose twin exists only in another domain (uid A) must behave
 * exactly like pages with no twin anywhere: not KSM pages, no fault.
 * Control: pages the attacker's own domain holds twice are shared, and
 * each write moves one to a new frame. (Latencies are in make bench.)
 */
TEST_F(domain, cross_domain_twin_behaves_like_no_twin)
{
	int fds[2], status, res[6];
	pid_t pid;

	ASSERT_EQ(0, pipe(fds));
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		char *twin, *alone, *merged, *other;
		struct peer v;

		/* The victim holds seed 100, advised, in uid A's domain */
		if (tenant_start(&v, UID_A, 0, 100, PEER_ADVISE_UPM) || v.err)
			_exit(1);
		twin = map_filled(SIDE_PAGES, 100);
		alone = map_filled(SIDE_PAGES, 101);
		merged = map_filled(SIDE_PAGES, 102);
		other = map_filled(SIDE_PAGES, 102);
		/* Stays root for pagemap's PFNs; advises as uid B */
		if (!twin || !alone || !merged || !other ||
		    setresuid(UID_B, UID_B, 0))
			_exit(2);
		if (madvise(twin, SIDE_PAGES * psize(), MADV_UPM_MERGEABLE) ||
		    madvise(alone, SIDE_PAGES * psize(), MADV_UPM_MERGEABLE) ||
		    madvise(other, SIDE_PAGES * psize(), MADV_UPM_MERGEABLE) ||
		    madvise(merged, SIDE_PAGES * psize(), MADV_UPM_MERGEABLE))
			_exit(3);
		if (setresuid(0, 0, 0))
			_exit(4);
		write_and_count(twin, SIDE_PAGES, &res[0], &res[1]);
		write_and_count(alone, SIDE_PAGES, &res[2], &res[3]);
		write_and_count(merged, SIDE_PAGES, &res[4], &res[5]);
		if (!tenant_content_ok(&v))
			_exit(5);
		peer_stop(&v);
		if (write(fds[1], res, sizeof(res)) != sizeof(res))
			_exit(6);
		_exit(0);
	}
	close(fds[1]);
	ASSERT_EQ(sizeof(res), read(fds[0], res, sizeof(res)));
	close(fds[0]);
	waitpid(pid, &status, 0);
	ASSERT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	TH_LOG("KSM pages, faulting writes: other domain's twin %d %d",
	       res[0], res[1]);
	TH_LOG("no twin %d %d, control %d %d", res[2], res[3], res[4], res[5]);
	EXPECT_EQ(0, res[0]);
	EXPECT_EQ(0, res[1]);
	EXPECT_EQ(0, res[2]);
	EXPECT_EQ(0, res[3]);
	EXPECT_EQ(SIDE_PAGES, res[4]);
	EXPECT_EQ(SIDE_PAGES, res[5]);
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--print-domain"))
		return print_domain_main();
	upm_require_kernel();
	return test_harness_run(argc, argv);
}

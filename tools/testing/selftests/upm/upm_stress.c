// SPDX-License-Identifier: GPL-2.0
/*
 * Seeded, randomized stress of MADV_UPM_MERGEABLE. Several worker
 * processes, each with several threads, own regions of private anonymous
 * memory filled from a small pool of page contents (so pages of different
 * processes are identical and merge). Each thread randomly writes, advises,
 * unmerges, pages out, discards, mprotects, mremaps (move and grow),
 * munmaps, forks (the child checks and changes its copy, then exits) and
 * compacts. Workers exit at random and are replaced; the controller
 * flips ksmd on and off and sometimes writes 2 to ksm/run.
 *
 * Every thread keeps a checksum of every page it owns and verifies them
 * all periodically and at the end. Exit status 0 means no mismatch, no
 * unexpected error, and UPM merged pages during the run. On a mismatch it
 * prints the seed and the tail of the thread's operation log.
 *
 * Usage: upm_stress [-t seconds] [-s seed] [-p workers] [-T threads]
 * (defaults: $STRESS_SECONDS or 120, $STRESS_SEED or the time, 4, 2).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "upm_util.h"

#define REGIONS		4	/* per thread */
#define MIN_PAGES	8
#define MAX_PAGES	64
#define POOL		24	/* distinct shared page contents */
#define LOG_LEN		64	/* operations kept per thread */
#define MAX_THREADS	8

enum op { OP_WRITE, OP_ADVISE, OP_VERIFY, OP_PAGEOUT, OP_DONTNEED,
	OP_PROTECT, OP_MOVE, OP_GROW, OP_REMAP, OP_UNMERGE, OP_FORK,
	OP_COMPACT, NR_OPS };

static const char * const op_name[NR_OPS] = {
	"write", "advise", "verify", "pageout", "dontneed", "mprotect",
	"mremap-move", "mremap-grow", "munmap-remap", "unmergeable", "fork",
	"compact",
};

struct logent {
	unsigned long seq;
	int op, region, a, b;
	uint64_t arg;
};

struct region {
	char *addr;
	int npages;
	uint64_t sum[MAX_PAGES];
};

struct worker_thread {
	int worker, index;
	uint64_t rng;
	struct region reg[REGIONS];
	struct logent log[LOG_LEN];
	unsigned long seq, verifies, pages_checked, mismatches, errors;
	pthread_t th;
};

static uint64_t seed;
static time_t deadline;
static int nthreads = 2;
static struct worker_thread wt[MAX_THREADS];
static uint64_t zero_sum;

static uint64_t next_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static int rnd(struct worker_thread *t, int n)
{
	return next_rand(&t->rng) % n;
}

static uint64_t page_sum(const char *p)
{
	const uint64_t *w = (const uint64_t *)p;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < psize() / 8; i++) {
		h ^= w[i];
		h *= 0x100000001b3ULL;
		h ^= h >> 29;
	}
	return h;
}

/* Messages go out with write(): safe in a child forked by a thread. */
static void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	if (write(STDOUT_FILENO, buf, n) < 0)
		return;
}

static void log_op(struct worker_thread *t, int op, int r, int a, int b,
		   uint64_t arg)
{
	struct logent *e = &t->log[t->seq % LOG_LEN];

	e->seq = t->seq++;
	e->op = op;
	e->region = r;
	e->a = a;
	e->b = b;
	e->arg = arg;
}

static void dump_log(struct worker_thread *t)
{
	unsigned long first = t->seq > LOG_LEN ? t->seq - LOG_LEN : 0;

	say("# seed %llu worker %d thread %d: last %lu operations:\n",
	    (unsigned long long)seed, t->worker, t->index, t->seq - first);
	for (unsigned long s = first; s < t->seq; s++) {
		struct logent *e = &t->log[s % LOG_LEN];

		say("#   %6lu %-12s region %d pages [%d, %d) arg %llx\n",
		    e->seq, op_name[e->op], e->region, e->a, e->b,
		    (unsigned long long)e->arg);
	}
}

/* Content of pool entry tag (0: zeroes) or of a unique value. */
static void make_page(char *p, uint64_t tag)
{
	if (!tag) {
		memset(p, 0, psize());
		return;
	}
	fill(p, 1, tag);
}

static uint64_t pick_tag(struct worker_thread *t)
{
	int r = rnd(t, 100);

	if (r < 10)
		return 0;
	if (r < 85)
		return 1 + rnd(t, POOL);
	return next_rand(&t->rng) | (1ULL << 63);
}

static void write_page(struct worker_thread *t, struct region *g, int i)
{
	uint64_t words[512];
	char *buf = (char *)words;

	make_page(buf, pick_tag(t));
	memcpy(g->addr + i * psize(), buf, psize());
	g->sum[i] = page_sum(buf);
}

static int verify_region(struct worker_thread *t, int r)
{
	struct region *g = &t->reg[r];
	int bad = 0;

	t->verifies++;
	for (int i = 0; i < g->npages; i++) {
		uint64_t s = page_sum(g->addr + i * psize());

		t->pages_checked++;
		if (s == g->sum[i])
			continue;
		say(
		    "# MISMATCH seed %llu worker %d thread %d region %d page %d (addr %p pfn %llx flags %llx): sum %llx, expected %llx\n",
		    (unsigned long long)seed, t->worker, t->index, r, i,
		    g->addr + i * psize(),
		    (unsigned long long)pfn_of(g->addr + i * psize()),
		    (unsigned long long)read_kpageflags(pfn_of(g->addr +
							       i * psize())),
		    (unsigned long long)s, (unsigned long long)g->sum[i]);
		bad++;
	}
	if (bad) {
		t->mismatches += bad;
		dump_log(t);
	}
	return bad;
}

static int verify_all(struct worker_thread *t)
{
	int bad = 0;

	for (int r = 0; r < REGIONS; r++)
		bad += verify_region(t, r);
	return bad;
}

static void error(struct worker_thread *t, const char *what, int err)
{
	t->errors++;
	say("# ERROR seed %llu worker %d thread %d: %s: %s\n",
	    (unsigned long long)seed, t->worker, t->index, what,
	    strerror(err));
	dump_log(t);
}

static void new_region(struct worker_thread *t, int r)
{
	struct region *g = &t->reg[r];

	g->npages = MIN_PAGES + rnd(t, MAX_PAGES - MIN_PAGES - 8);
	g->addr = map_anon(g->npages);
	if (!g->addr) {
		error(t, "mmap", errno);
		exit(2);
	}
	for (int i = 0; i < g->npages; i++)
		write_page(t, g, i);
}

static void do_op(struct worker_thread *t, bool in_child);

/* Advise a whole region (so that its VMAs can merge into one). */
static void whole(struct worker_thread *t, struct region *g, int r)
{
	if (madvise(g->addr, g->npages * psize(), MADV_UPM_MERGEABLE))
		error(t, "madvise(MADV_UPM_MERGEABLE) of a region", errno);
}

/* A child of this thread checks and changes its copy, then exits. */
static void do_fork(struct worker_thread *t)
{
	int status;
	pid_t pid = fork();

	if (pid < 0) {
		error(t, "fork", errno);
		return;
	}
	if (!pid) {
		t->mismatches = 0;
		t->errors = 0;
		t->rng ^= 0x5bd1e995;
		verify_all(t);
		for (int i = 0; i < 40; i++)
			do_op(t, true);
		verify_all(t);
		_exit(t->mismatches ? 1 : t->errors ? 2 : 0);
	}
	if (waitpid(pid, &status, 0) != pid) {
		error(t, "waitpid", errno);
		return;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) == 1) {
		say("# forked child of worker %d thread %d: status %x\n",
		    t->worker, t->index, status);
		t->mismatches++;
	} else if (WEXITSTATUS(status)) {
		t->errors++;
	}
}

static time_t last_compact;

static void do_op(struct worker_thread *t, bool in_child)
{
	int r = rnd(t, REGIONS), op, a, b, n;
	struct region *g = &t->reg[r];
	char *p, *tmp;

	n = g->npages;
	a = rnd(t, n);
	b = a + 1 + rnd(t, n - a);
	switch (rnd(t, 40)) {
	case 0 ... 11:
		op = OP_WRITE;
		break;
	case 12 ... 19:
		op = OP_ADVISE;
		break;
	case 20 ... 21:
		op = OP_VERIFY;
		break;
	case 22 ... 23:
		op = OP_PAGEOUT;
		break;
	case 24:
		op = OP_DONTNEED;
		break;
	case 25 ... 26:
		op = OP_PROTECT;
		break;
	case 27 ... 28:
		op = OP_MOVE;
		break;
	case 29:
		op = OP_GROW;
		break;
	case 30:
		op = OP_REMAP;
		break;
	case 31:
		op = OP_UNMERGE;
		break;
	case 32:
		op = in_child ? OP_WRITE : OP_FORK;
		break;
	case 33:
		op = OP_COMPACT;
		break;
	default:
		op = OP_ADVISE;
		break;
	}
	log_op(t, op, r, a, b, 0);
	switch (op) {
	case OP_WRITE:
		for (int i = a; i < b && i < a + 4; i++)
			write_page(t, g, i);
		break;
	case OP_ADVISE:
		if (madvise(g->addr + a * psize(), (b - a) * psize(),
			    MADV_UPM_MERGEABLE))
			error(t, "madvise(MADV_UPM_MERGEABLE)", errno);
		break;
	case OP_VERIFY:
		verify_region(t, r);
		break;
	case OP_PAGEOUT:
		if (madvise(g->addr + a * psize(), (b - a) * psize(),
			    MADV_PAGEOUT) && errno != EINVAL)
			error(t, "madvise(MADV_PAGEOUT)", errno);
		break;
	case OP_DONTNEED:
		if (madvise(g->addr + a * psize(), (b - a) * psize(),
			    MADV_DONTNEED))
			error(t, "madvise(MADV_DONTNEED)", errno);
		for (int i = a; i < b; i++)
			g->sum[i] = zero_sum;
		break;
	case OP_PROTECT:
		if (mprotect(g->addr, n * psize(),
			     rnd(t, 2) ? PROT_READ : PROT_NONE))
			error(t, "mprotect", errno);
		if (rnd(t, 2) && madvise(g->addr, n * psize(),
					 MADV_UPM_MERGEABLE))
			error(t, "madvise(PROT_READ/NONE range)", errno);
		if (mprotect(g->addr, n * psize(), PROT_READ | PROT_WRITE))
			error(t, "mprotect back", errno);
		break;
	case OP_MOVE:
		/*
		 * mremap wants one VMA; partial advice split the region, and
		 * advising all of it lets the parts merge into one again.
		 */
		whole(t, g, r);
		p = mmap(NULL, n * psize(), PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			error(t, "mmap", errno);
			break;
		}
		tmp = mremap(g->addr, n * psize(), n * psize(),
			     MREMAP_MAYMOVE | MREMAP_FIXED, p);
		if (tmp == MAP_FAILED) {
			if (errno != EFAULT)
				error(t, "mremap move", errno);
			munmap(p, n * psize());
		} else {
			g->addr = tmp;
		}
		t->log[(t->seq - 1) % LOG_LEN].arg = (uintptr_t)g->addr;
		break;
	case OP_GROW:
		whole(t, g, r);
		if (n + 8 > MAX_PAGES) {
			p = mremap(g->addr, n * psize(), (n - 8) * psize(), 0);
			if (p == MAP_FAILED && errno != EFAULT)
				error(t, "mremap shrink", errno);
			else if (p != MAP_FAILED)
				g->npages = n - 8;
			break;
		}
		p = mremap(g->addr, n * psize(), (n + 8) * psize(),
			   MREMAP_MAYMOVE);
		if (p == MAP_FAILED) {
			if (errno != EFAULT)
				error(t, "mremap grow", errno);
			break;
		}
		g->addr = p;
		g->npages = n + 8;
		for (int i = n; i < n + 8; i++)
			g->sum[i] = zero_sum;
		t->log[(t->seq - 1) % LOG_LEN].arg = (uintptr_t)g->addr;
		break;
	case OP_REMAP:
		verify_region(t, r);
		if (munmap(g->addr, n * psize()))
			error(t, "munmap", errno);
		new_region(t, r);
		break;
	case OP_UNMERGE:
		if (madvise(g->addr, n * psize(), MADV_UNMERGEABLE))
			error(t, "madvise(MADV_UNMERGEABLE)", errno);
		break;
	case OP_FORK:
		do_fork(t);
		break;
	case OP_COMPACT:
		if (!in_child && t->worker % 4 == 0 && !t->index &&
		    time(NULL) > last_compact + 2) {
			last_compact = time(NULL);
			write_str("/proc/sys/vm/compact_memory", "1");
		}
		break;
	}
}

static void *thread_main(void *arg)
{
	struct worker_thread *t = arg;
	int lifetime = 100 + rnd(t, 400);

	for (int r = 0; r < REGIONS; r++)
		new_region(t, r);
	for (int i = 0; time(NULL) < deadline; i++) {
		do_op(t, false);
		if (i % 256 == 255)
			verify_all(t);
		/* some workers exit early and are replaced */
		if (t->worker % 2 && i > lifetime)
			break;
	}
	verify_all(t);
	return NULL;
}

/* Result of a worker, sent to the controller through a pipe. */
struct result {
	unsigned long ops, verifies, pages_checked, mismatches, errors;
};

static void worker(int index, int out)
{
	struct result res = { 0 };

	for (int i = 0; i < nthreads; i++) {
		wt[i].worker = index;
		wt[i].index = i;
		wt[i].rng = seed * 1000003 + index * 101 + i;
		next_rand(&wt[i].rng);
		if (pthread_create(&wt[i].th, NULL, thread_main, &wt[i])) {
			say("# pthread_create failed\n");
			_exit(2);
		}
	}
	for (int i = 0; i < nthreads; i++) {
		pthread_join(wt[i].th, NULL);
		res.ops += wt[i].seq;
		res.verifies += wt[i].verifies;
		res.pages_checked += wt[i].pages_checked;
		res.mismatches += wt[i].mismatches;
		res.errors += wt[i].errors;
	}
	if (write(out, &res, sizeof(res)) != sizeof(res))
		_exit(2);
	_exit(res.mismatches ? 1 : 0);
}

/* Start worker @index, its result pipe in *fd. Return: its pid, or 0. */
static pid_t spawn(int index, int *fd)
{
	int p[2];
	pid_t pid;

	if (pipe(p))
		return 0;
	pid = fork();
	if (!pid) {
		close(p[0]);
		worker(index, p[1]);
	}
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		return 0;
	}
	*fd = p[0];
	return pid;
}

/*
 * Add the result of a worker that exited with @status, read from @fd
 * (closed then), to @total. Return: whether it reported and exited 0.
 */
static bool collect(int fd, int status, struct result *total)
{
	struct result res = { 0 };
	bool ok = read(fd, &res, sizeof(res)) == sizeof(res) &&
		  WIFEXITED(status) && !WEXITSTATUS(status);

	total->ops += res.ops;
	total->verifies += res.verifies;
	total->pages_checked += res.pages_checked;
	total->mismatches += res.mismatches;
	total->errors += res.errors;
	close(fd);
	return ok;
}

int main(int argc, char **argv)
{
	long seconds = getenv("STRESS_SECONDS") ?
		       atol(getenv("STRESS_SECONDS")) : 120;
	int nworkers = 4, spawned = 0, c, bad_exits = 0;
	long merged0, merged, stable0, stable;
	struct result total = { 0 };
	uint64_t ctl_rng;
	char zero[4096] = { 0 }, old_run[16], *s;
	pid_t *pid;
	int *fd;

	seed = (s = getenv("STRESS_SEED")) ? strtoull(s, NULL, 0) : 0;
	while ((c = getopt(argc, argv, "t:s:p:T:")) != -1) {
		switch (c) {
		case 't':
			seconds = atol(optarg);
			break;
		case 's':
			seed = strtoull(optarg, NULL, 0);
			break;
		case 'p':
			nworkers = atoi(optarg);
			break;
		case 'T':
			nthreads = atoi(optarg);
			break;
		default:
			fprintf(stderr,
				"usage: %s [-t seconds] [-s seed] [-p workers] [-T threads]\n",
				argv[0]);
			return 2;
		}
	}
	if (nthreads < 1 || nthreads > MAX_THREADS || nworkers < 1) {
		fprintf(stderr, "upm_stress: 1-%d threads, 1 or more workers\n",
			MAX_THREADS);
		return 2;
	}
	if (!seed)
		seed = time(NULL);
	if (psize() != sizeof(zero)) {
		printf("upm_stress: SKIP: page size %u is not 4096\n", psize());
		return 4;
	}
	zero_sum = page_sum(zero);
	if (upm_counter("calls") < 0) {
		printf("upm_stress: SKIP: no /sys/kernel/mm/upm\n");
		return 4;
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	printf(
	       "# upm_stress: seed %llu, %ld s, %d workers x %d threads (replay: upm_stress -s %llu -t %ld -p %d -T %d)\n",
	       (unsigned long long)seed, seconds, nworkers, nthreads,
	       (unsigned long long)seed, seconds, nworkers, nthreads);
	read_str("/sys/kernel/mm/ksm/run", old_run, sizeof(old_run));
	write_str("/sys/kernel/mm/ksm/sleep_millisecs", "20");
	merged0 = upm_counter("pages_merged");
	stable0 = upm_counter("pages_stable_new");
	deadline = time(NULL) + seconds;
	ctl_rng = seed ^ 0xc0ffee;
	pid = calloc(nworkers, sizeof(*pid));
	fd = calloc(nworkers, sizeof(*fd));
	for (int i = 0; i < nworkers; i++) {
		pid[i] = spawn(spawned++, &fd[i]);
		bad_exits += !pid[i];
	}

	while (time(NULL) < deadline) {
		int status, k = next_rand(&ctl_rng) % 100;

		sleep(1);
		/* ksmd on or off; now and then "unmerge everything" */
		if (k < 10) {
			write_str("/sys/kernel/mm/ksm/run", "1");
		} else if (k < 20) {
			write_str("/sys/kernel/mm/ksm/run", "0");
		} else if (k < 23) {
			printf("# ksm/run=2 at %ld s\n",
			       seconds - (deadline - time(NULL)));
			write_str("/sys/kernel/mm/ksm/run", "2");
			write_str("/sys/kernel/mm/ksm/run", "0");
		}
		for (int i = 0; i < nworkers; i++) {
			if (!pid[i] ||
			    waitpid(pid[i], &status, WNOHANG) != pid[i])
				continue;
			bad_exits += !collect(fd[i], status, &total);
			pid[i] = 0;
			if (time(NULL) < deadline) {
				pid[i] = spawn(spawned++, &fd[i]);
				bad_exits += !pid[i];
			}
		}
	}
	for (int i = 0; i < nworkers; i++) {
		int status;

		if (!pid[i])
			continue;
		waitpid(pid[i], &status, 0);
		bad_exits += !collect(fd[i], status, &total);
	}
	write_str("/sys/kernel/mm/ksm/run", old_run);
	merged = upm_counter("pages_merged") - merged0;
	stable = upm_counter("pages_stable_new") - stable0;
	printf(
	       "# upm_stress: seed %llu: %d workers ran, %lu operations, %lu verifies of %lu pages, UPM merged %ld pages and entered %ld\n",
	       (unsigned long long)seed, spawned, total.ops, total.verifies,
	       total.pages_checked, merged, stable);
	printf(
	       "upm_stress: %lu mismatches, %lu errors, %d bad worker exits (seed %llu)\n",
	       total.mismatches, total.errors, bad_exits,
	       (unsigned long long)seed);
	if (!merged) {
		printf("upm_stress: FAIL: UPM merged nothing\n");
		return 1;
	}
	return total.mismatches || total.errors || bad_exits ? 1 : 0;
}

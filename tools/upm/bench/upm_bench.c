// SPDX-License-Identifier: GPL-2.0
/*
 * upm_bench: microbenchmarks of MADV_UPM_MERGEABLE side by side with KSM.
 *
 * Usage: upm_bench [-o FILE] BENCH...
 * BENCH: time_to_savings throughput scaling content_mix concurrency
 *        first_write metadata (or "all").
 *
 * Every result is one JSON object per line (JSON Lines) in FILE (stdout
 * by default); progress goes to stderr. Records carry "bench" and "mode"
 * (none, ksm, ksm-full, upm); target checks carry "target" and "verdict".
 * scripts/bench.sh turns them into the results file and the table; the
 * schema is documented in README.md ("Benchmarks").
 *
 * The memory under test lives in worker processes (fork), driven over
 * pipes: fill, read pass, advise, write pass, quit. Times are taken with
 * CLOCK_MONOTONIC inside the worker around the one system call or loop.
 * Must run as root: it writes /sys/kernel/mm/ksm/ tunables.
 *
 *
 * Environment (sizes in MiB): UPM_BENCH_INSTANCES (16), UPM_BENCH_TTS_MIB
 * (64), UPM_BENCH_KSM_CAP (600 s, the KSM-defaults limit),
 * UPM_BENCH_KSM_FULL_CAP (600 s), UPM_BENCH_TP_MIB (256),
 * UPM_BENCH_SCALE_MIB ("16 64 256 1024 2048"), UPM_BENCH_MIX_MIB (64),
 * UPM_BENCH_CONC_MIB (128), UPM_BENCH_FW_MIB (64), UPM_BENCH_META_MIB
 * (128), UPM_BENCH_KSM_PAGES (100000, pages_to_scan at full speed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "upm.h"

#define KSM "/sys/kernel/mm/ksm/"
#define UPM "/sys/kernel/mm/upm/"
#define MIB (1UL << 20)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static FILE *out;
static size_t pg;

/* One line of progress to stderr: @prefix, then the message */
static void say(const char *prefix, const char *fmt, va_list ap)
{
	fputs(prefix, stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	say("upm_bench: error: ", fmt, ap);
	va_end(ap);
	exit(1);
}

static void note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	say("  ", fmt, ap);
	va_end(ap);
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* CPU time of the calling thread, user and system (the madvise itself) */
static double thread_cpu(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static long env_long(const char *name, long def)
{
	const char *v = getenv(name);

	return v && *v ? strtol(v, NULL, 0) : def;
}

/* ---- kernel counters and tunables ---- */

/* A counter or tunable (libupm), -1 if the kernel does not have it */
static long rd(const char *path)
{
	long v;

	return upm_read_value(path, &v) ? -1 : v;
}

static void wr(const char *path, long v)
{
	FILE *f = fopen(path, "w");

	if (!f || fprintf(f, "%ld\n", v) < 0 || fclose(f))
		die("cannot write %ld to %s: %s", v, path, strerror(errno));
}

static long meminfo_kb(const char *key)
{
	char line[256];
	size_t n = strlen(key);
	long v = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, n) && line[n] == ':')
			v = atol(line + n + 1);
	if (f)
		fclose(f);
	return v;
}

/* Bytes held by one slab cache (num_objs * objsize), -1 if not listed. */
static long slab_bytes(const char *cache)
{
	char line[512], name[128];
	long active, num, size, v = -1;
	FILE *f = fopen("/proc/slabinfo", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "%127s %ld %ld %ld", name, &active, &num,
			   &size) == 4 && !strcmp(name, cache))
			v = num * size;
	if (f)
		fclose(f);
	return v;
}

/* CPU seconds per GiB of @pages saved pages (NAN if none were saved) */
static double per_gib(double cpu, long pages)
{
	return pages > 0 ? cpu / ((double)pages * pg / (1 << 30)) : NAN;
}

/* CPU seconds ksmd has used since boot (utime + stime), -1 if not found */
static double ksmd_cpu(void)
{
	static char stat_path[64];
	unsigned long ut = 0, st = 0;
	char comm[32], line[512], *p;
	FILE *f;
	int n;

	for (int pid = 2; !stat_path[0] && pid < 4096; pid++) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/%d/comm", pid);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) && !strcmp(comm, "ksmd\n"))
			snprintf(stat_path, sizeof(stat_path),
				 "/proc/%d/stat", pid);
		fclose(f);
	}
	f = stat_path[0] ? fopen(stat_path, "r") : NULL;
	if (!f)
		return -1;
	line[0] = 0;
	if (!fgets(line, sizeof(line), f))
		line[0] = 0;
	fclose(f);
	/* After "pid (comm)": state is field 1, utime 12 and stime 13 */
	p = strrchr(line, ')');
	for (n = 0, p = p ? strtok(p + 1, " ") : NULL; p && n < 13;
	     p = strtok(NULL, " ")) {
		if (++n == 12)
			ut = strtoul(p, NULL, 10);
		else if (n == 13)
			st = strtoul(p, NULL, 10);
	}
	if (n < 13)
		return -1;
	return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

/* Saved mappings as KSM counts them: sharing pages plus zero pages */
static long ksm_saved(void)
{
	long z = rd(KSM "ksm_zero_pages");

	return rd(KSM "pages_sharing") + (z > 0 ? z : 0);
}

struct ksm_knobs {
	long run, sleep, pages, smart;
};

static struct ksm_knobs ksm_saved_knobs;

static void ksm_save(void)
{
	ksm_saved_knobs.run = rd(KSM "run");
	ksm_saved_knobs.sleep = rd(KSM "sleep_millisecs");
	ksm_saved_knobs.pages = rd(KSM "pages_to_scan");
	ksm_saved_knobs.smart = rd(KSM "smart_scan");
}

/* ksmd at its defaults (pages_to_scan 100, sleep 20 ms) or at full speed */
static void ksm_speed(int full)
{
	wr(KSM "sleep_millisecs", full ? 0 : 20);
	wr(KSM "pages_to_scan", full ? env_long("UPM_BENCH_KSM_PAGES", 100000)
				   : 100);
}

/*
 * Unmerge everything and free KSM's (and so UPM's) metadata: the state
 * every benchmark starts from. Call only when no worker is alive.
 */
static void reset(void)
{
	double dl = now() + 120;

	wr(KSM "run", 2);
	while ((rd(KSM "pages_shared") > 0 || rd(KSM "pages_sharing") > 0) &&
	       now() < dl)
		usleep(20000);
	wr(KSM "run", 0);
	ksm_speed(0);
	if (ksm_saved_knobs.smart >= 0)
		wr(KSM "smart_scan", ksm_saved_knobs.smart);
	if (rd(KSM "pages_shared") > 0 || rd(KSM "pages_sharing") > 0)
		note("warning: KSM still reports merged pages (run=2 done)");
}

static void ksm_restore(void)
{
	reset();
	if (ksm_saved_knobs.sleep >= 0)
		wr(KSM "sleep_millisecs", ksm_saved_knobs.sleep);
	if (ksm_saved_knobs.pages >= 0)
		wr(KSM "pages_to_scan", ksm_saved_knobs.pages);
	if (ksm_saved_knobs.run >= 0)
		wr(KSM "run", ksm_saved_knobs.run);
}

/*
 * Wait until KSM's saved count reaches @goal or @cap seconds pass since
 * @t0. Return the time it took, or -1 if the cap was reached.
 */
static double ksm_wait(long base, long goal, double t0, double cap)
{
	double t;

	for (;;) {
		t = now() - t0;
		if (ksm_saved() - base >= goal)
			return t;
		if (t >= cap)
			return -1;
		usleep(t < 5 ? 10000 : 50000);
	}
}

/* ---- content ---- */

static uint64_t mix64(uint64_t z)	/* splitmix64 finaliser */
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void fill_random(void *p, size_t size, uint64_t seed)
{
	uint64_t *w = p;

	for (size_t i = 0; i < size / 8; i++)
		w[i] = mix64(seed += 0x9e3779b97f4a7c15ULL);
}

static uint64_t page_hash(const void *p)
{
	const uint64_t *w = p;
	uint64_t h = 0x243f6a8885a308d3ULL;

	for (size_t i = 0; i < pg / 8; i++)
		h = mix64(h ^ w[i]) + i;
	return h;
}

static char *map_anon(size_t size)
{
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap %zu MiB: %s", size / MIB, strerror(errno));
	/* Small pages only: the comparison is about 4 KiB pages. */
	madvise(p, size, MADV_NOHUGEPAGE);
	return p;
}

/* Sorted-unique count of the hashes: distinct page contents */
static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static size_t distinct(uint64_t *h, size_t n)
{
	size_t d = 0;

	qsort(h, n, sizeof(*h), cmp_u64);
	for (size_t i = 0; i < n; i++)
		if (!i || h[i] != h[i - 1])
			d++;
	return d;
}

/* ---- workers ---- */

enum fill_kind {
	FILL_TEMPLATE,	/* copy of the parent's template; dup_pct applies */
	FILL_HALVES,	/* random first half, second half a copy of it */
	FILL_ZERO,	/* every page written with zeroes */
};

struct fill {
	enum fill_kind kind;
	size_t size;
	int dup_pct;		/* FILL_TEMPLATE: % of template pages */
	uint64_t seed;		/* for the pages that are not duplicates */
	uint64_t *hashes;	/* if set: page hashes written here (shared) */
};

struct worker {
	pid_t pid;
	int cmd, rep;
};

struct reply {
	double start, end;
	double cpu;	/* CPU seconds of the worker in the command */
	int err;
};

static char *template;
static size_t template_size;

static void worker_fill(char *p, const struct fill *f)
{
	size_t n = f->size / pg;

	switch (f->kind) {
	case FILL_ZERO:
		memset(p, 0, f->size);
		break;
	case FILL_HALVES:
		fill_random(p, f->size / 2, f->seed);
		memcpy(p + f->size / 2, p, f->size / 2);
		break;
	case FILL_TEMPLATE:
		if (f->size > template_size)
			die("template too small");
		for (size_t i = 0; i < n; i++) {
			if ((int)(i % 100) < f->dup_pct)
				memcpy(p + i * pg, template + i * pg, pg);
			else
				fill_random(p + i * pg, pg, f->seed + i * 4099);
		}
		break;
	}
	if (f->hashes)
		for (size_t i = 0; i < n; i++)
			f->hashes[i] = page_hash(p + i * pg);
}

/* The read pass stores its sum here so that the loop is not optimised out */
uint64_t read_sink;

static void worker_main(const struct fill *f, int cmd, int rep)
{
	char *p = map_anon(f->size);
	struct reply r;
	char c;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	worker_fill(p, f);
	memset(&r, 0, sizeof(r));
	if (write(rep, &r, sizeof(r)) != sizeof(r))	/* ready */
		_exit(1);
	while (read(cmd, &c, 1) == 1) {
		double cpu0 = thread_cpu();

		memset(&r, 0, sizeof(r));
		r.start = now();
		switch (c) {
		case 'u':
			r.err = -upm_advise(p, f->size);
			break;
		case 'k':
			if (madvise(p, f->size, MADV_MERGEABLE))
				r.err = errno;
			break;
		case 'r': {
			const uint64_t *w = (const uint64_t *)p;
			uint64_t s = 0;

			for (size_t i = 0; i < f->size / 8; i++)
				s += w[i];
			read_sink = s;
			break;
		}
		case 'w':
			for (size_t i = 0; i < f->size; i += pg)
				p[i] ^= 1;
			break;
		case 'F': {	/* the same, with the pages shared by fork() */
			pid_t kid = fork();

			if (!kid) {
				pause();
				_exit(0);
			}
			if (kid < 0) {
				r.err = errno;
				break;
			}
			r.start = now();
			for (size_t i = 0; i < f->size; i += pg)
				p[i] ^= 1;
			r.end = now();
			kill(kid, SIGKILL);
			waitpid(kid, NULL, 0);
			if (write(rep, &r, sizeof(r)) != sizeof(r))
				_exit(1);
			continue;
		}
		case 'q':
			_exit(0);
		}
		r.end = now();
		r.cpu = thread_cpu() - cpu0;
		if (write(rep, &r, sizeof(r)) != sizeof(r))
			_exit(1);
	}
	_exit(0);
}

static struct worker spawn(const struct fill *f)
{
	int c[2], r[2];
	struct worker w;
	struct reply rep;

	if (pipe(c) || pipe(r))
		die("pipe: %s", strerror(errno));
	w.pid = fork();
	if (w.pid < 0)
		die("fork: %s", strerror(errno));
	if (!w.pid) {
		close(c[1]);
		close(r[0]);
		worker_main(f, c[0], r[1]);
	}
	close(c[0]);
	close(r[1]);
	w.cmd = c[1];
	w.rep = r[0];
	if (read(w.rep, &rep, sizeof(rep)) != sizeof(rep))
		die("worker %d died while filling its memory", w.pid);
	return w;
}

static void send(struct worker *w, char c)
{
	if (write(w->cmd, &c, 1) != 1)
		die("worker %d is gone", w->pid);
}

static struct reply wait_reply(struct worker *w, char c)
{
	struct reply r;

	if (read(w->rep, &r, sizeof(r)) != sizeof(r))
		die("worker %d died during '%c'", w->pid, c);
	if (r.err)
		die("worker %d: madvise ('%c'): %s%s", w->pid, c,
		    strerror(r.err), c == 'u' ? " (kernel without UPM?)" : "");
	return r;
}

/* CPU seconds the workers spent in the last run1() or run_all() */
static double run_cpu;

/* Run command @c in one worker; return the seconds it took. */
static double run1(struct worker *w, char c)
{
	struct reply r;

	send(w, c);
	r = wait_reply(w, c);
	run_cpu = r.cpu;
	return r.end - r.start;
}

/*
 * Run @c in @n workers at once: return the time from the first start to
 * the last end (CLOCK_MONOTONIC is system-wide).
 */
static double run_all(struct worker *w, int n, char c)
{
	double first = 1e30, last = 0;

	run_cpu = 0;
	for (int i = 0; i < n; i++)
		send(&w[i], c);
	for (int i = 0; i < n; i++) {
		struct reply r = wait_reply(&w[i], c);

		run_cpu += r.cpu;
		if (r.start < first)
			first = r.start;
		if (r.end > last)
			last = r.end;
	}
	return last - first;
}

static void quit(struct worker *w, int n)
{
	for (int i = 0; i < n; i++) {
		char c = 'q';

		if (write(w[i].cmd, &c, 1) != 1)
			kill(w[i].pid, SIGKILL);
		close(w[i].cmd);
		close(w[i].rep);
		waitpid(w[i].pid, NULL, 0);
	}
}

static struct fill copy_of_template(size_t size)
{
	struct fill f = { FILL_TEMPLATE, size, 100, 0, NULL };

	return f;
}

/* ---- JSON lines ---- */

static void rec_begin(const char *bench, const char *mode)
{
	fprintf(out, "{\"bench\": \"%s\", \"mode\": \"%s\"", bench, mode);
}

static void rec_num(const char *k, double v)
{
	if (isfinite(v))
		fprintf(out, ", \"%s\": %.6g", k, v);
	else
		fprintf(out, ", \"%s\": null", k);
}

static void rec_int(const char *k, long v)
{
	fprintf(out, ", \"%s\": %ld", k, v);
}

static void rec_str(const char *k, const char *v)
{
	fprintf(out, ", \"%s\": \"%s\"", k, v);	/* no quotes in our text */
}

static void rec_null(const char *k)
{
	fprintf(out, ", \"%s\": null", k);
}

static void rec_end(void)
{
	fputs("}\n", out);
	fflush(out);
}

/*
 * A target check: @value against @limit, PASS if value >= limit
 * (@ge) or value <= limit (!@ge). @lower_bound: the value is only a lower
 * bound (a capped measurement), so a miss is UNDECIDED, not MISS.
 */
static void rec_target(const char *bench, const char *name, const char *unit,
		   double value, int ge, double limit, int lower_bound)
{
	const char *v;

	if (ge && value < limit)
		v = lower_bound ? "UNDECIDED" : "MISS";
	else if (ge)
		v = "PASS";
	else
		v = value <= limit ? "PASS" : "MISS";
	fprintf(out, "{\"target\": \"%s\", \"bench\": \"%s\", ", name, bench);
	fprintf(out, "\"unit\": \"%s\", \"measured\": %.6g, ", unit, value);
	fprintf(out, "\"op\": \"%s\", \"limit\": %.6g, ", ge ? ">=" : "<=",
		limit);
	fprintf(out, "\"lower_bound\": %s, \"verdict\": \"%s\"}\n",
		lower_bound ? "true" : "false", v);
	fflush(out);
	note("target %s: %.3g %s %s %.3g: %s", name, value, unit,
	     ge ? ">=" : "<=", limit, v);
}

/* ---- safe frames ---- */

static long safe_default = -1;	/* -1: no safe_frames tunable */

/* Values of safe_frames to run with: the default first, then the other */
static int safe_values(long *v)
{
	if (safe_default < 0) {
		v[0] = -1;
		return 1;
	}
	v[0] = safe_default;
	v[1] = !safe_default;
	return 2;
}

static void safe_set(long v)
{
	if (v >= 0)
		wr(UPM "safe_frames", v);
}

static void rec_safe(long v)
{
	if (v < 0)
		rec_null("safe_frames");
	else
		rec_int("safe_frames", v);
}

/* Median of @n values (sorts them) */
static double median(double *v, int n)
{
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (v[j] < v[i]) {
				double x = v[i];

				v[i] = v[j];
				v[j] = x;
			}
	return v[n / 2];
}

#define REPS 3	/* repetitions of the short measurements */

/* ---- 1. time to savings ---- */

static void bench_time_to_savings(void)
{
	int n = env_long("UPM_BENCH_INSTANCES", 16);
	size_t size = env_long("UPM_BENCH_TTS_MIB", 64) * MIB;
	size_t np = size / pg;
	double cap_def = env_long("UPM_BENCH_KSM_CAP", 600);
	double cap_full = env_long("UPM_BENCH_KSM_FULL_CAP", 600);
	struct worker *w = calloc(n, sizeof(*w));
	uint64_t *h = mmap(NULL, n * np * 8, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	double t_upm = 0, t_ksm[2], t_seq = 0, t_read = 0, cpu_seq = 0;
	double upm_cpu_gib = 0, ksm_cpu_gib = 0;
	long sv[2], nsv, upm_saved = 0, seq_saved;
	size_t ideal;

	if (!w || h == MAP_FAILED)
		die("out of memory");
	fprintf(stderr, "== 1. time to savings: %d processes x %zu MiB",
		n, size / MIB);
	fputs(" of the same random data\n", stderr);
	nsv = safe_values(sv);
	for (int s = 0; s < nsv; s++) {
		long m0, b0, saved, merged;
		double t, cpu;

		reset();
		safe_set(sv[s]);
		for (int i = 0; i < n; i++) {
			struct fill f = copy_of_template(size);

			f.hashes = h + i * np;
			w[i] = spawn(&f);
		}
		b0 = ksm_saved();
		m0 = rd(UPM "pages_merged");
		t = run_all(w, n, 'u');
		cpu = run_cpu;
		saved = ksm_saved() - b0;
		merged = rd(UPM "pages_merged") - m0;
		quit(w, n);
		ideal = n * np - distinct(h, n * np);
		rec_begin("time_to_savings", "upm");
		rec_str("order", "all_at_once");
		rec_int("instances", n);
		rec_int("memory_bytes", (long)(n * size));
		rec_num("seconds", t);
		rec_num("cpu_seconds", cpu);
		rec_num("cpu_seconds_per_gib_saved", per_gib(cpu, saved));
		rec_int("pages_saved", saved);
		rec_int("pages_merged", merged);
		rec_int("ideal_pages_saved", ideal);
		rec_num("saving_percent", 100.0 * saved / (n * np));
		rec_num("ideal_saving_percent", 100.0 * ideal / (n * np));
		rec_num("percent_of_ideal", ideal ? 100.0 * saved / ideal : 0);
		rec_safe(sv[s]);
		rec_end();
		note("UPM (safe_frames=%s): last advise after %.3f s,",
		     sv[s] < 0 ? "n/a" : sv[s] ? "1" : "0", t);
		note("  %ld of %zu ideal pages saved", saved, ideal);
		if (s == 0) {
			t_upm = t;
			upm_saved = saved;
			upm_cpu_gib = saved ? per_gib(cpu, saved) : 0;
			rec_target("time_to_savings",
				   "savings_at_return_vs_ideal", "%",
				   ideal ? 100.0 * saved / ideal : 0, 1, 99, 0);
		}
	}
	safe_set(safe_default);

	/*
	 * Instances that start one after another: each reads its memory once
	 * (as a cold start does), then advises it. The sum of the madvise
	 * times is the time UPM adds to the cold starts.
	 */
	reset();
	for (int i = 0; i < n; i++) {
		struct fill f = copy_of_template(size);

		w[i] = spawn(&f);
	}
	seq_saved = ksm_saved();
	for (int i = 0; i < n; i++) {
		t_read += run1(&w[i], 'r');
		t_seq += run1(&w[i], 'u');
		cpu_seq += run_cpu;
	}
	seq_saved = ksm_saved() - seq_saved;
	quit(w, n);
	rec_begin("time_to_savings", "upm");
	rec_str("order", "one_after_another");
	rec_int("instances", n);
	rec_int("memory_bytes", (long)(n * size));
	rec_num("seconds", t_seq);
	rec_num("read_pass_seconds", t_read);
	rec_num("vs_read_pass", t_seq / t_read);
	rec_num("cpu_seconds", cpu_seq);
	rec_num("cpu_seconds_per_gib_saved", per_gib(cpu_seq, seq_saved));
	rec_int("pages_saved", seq_saved);
	rec_num("percent_of_ideal", ideal ? 100.0 * seq_saved / ideal : 0);
	rec_safe(safe_default);
	rec_end();
	note("UPM one after another: %.3f s of madvise in all", t_seq);
	note("  (%.2fx the read passes), %ld pages saved", t_seq / t_read,
	     seq_saved);

	for (int full = 0; full < 2; full++) {
		double cap = full ? cap_full : cap_def, t0, t, c0, cpu;
		long b0, fs0, goal = (long)(0.99 * upm_saved);

		reset();
		ksm_speed(full);
		for (int i = 0; i < n; i++) {
			struct fill f = copy_of_template(size);

			w[i] = spawn(&f);
		}
		fs0 = rd(KSM "full_scans");
		c0 = ksmd_cpu();
		wr(KSM "run", 1);
		b0 = ksm_saved();
		t0 = now();
		run_all(w, n, 'k');
		t = ksm_wait(b0, goal, t0, cap);
		cpu = ksmd_cpu() - c0;
		rec_begin("time_to_savings", full ? "ksm-full" : "ksm");
		rec_int("instances", n);
		rec_int("memory_bytes", (long)(n * size));
		if (t < 0)
			rec_null("seconds");
		else
			rec_num("seconds", t);
		rec_num("cap_seconds", cap);
		fprintf(out, ", \"capped\": %s", t < 0 ? "true" : "false");
		rec_int("pages_saved", ksm_saved() - b0);
		rec_num("cpu_seconds", c0 < 0 ? NAN : cpu);
		rec_num("cpu_seconds_per_gib_saved",
			c0 < 0 ? NAN : per_gib(cpu, ksm_saved() - b0));
		if (full && c0 >= 0 && ksm_saved() > b0)
			ksm_cpu_gib = per_gib(cpu, ksm_saved() - b0);
		rec_int("goal_pages", goal);
		rec_num("saving_percent",
			100.0 * (ksm_saved() - b0) / (n * np));
		rec_int("full_scans", rd(KSM "full_scans") - fs0);
		rec_int("sleep_millisecs", rd(KSM "sleep_millisecs"));
		rec_int("pages_to_scan", rd(KSM "pages_to_scan"));
		rec_end();
		note("KSM %s: %s%.1f s to 99%% of UPM's savings", full ?
		     "full speed" : "defaults", t < 0 ? "> " : "",
		     t < 0 ? cap : t);
		wr(KSM "run", 0);
		quit(w, n);
		t_ksm[full] = t < 0 ? -cap : t;
	}
	reset();
	/* fabs(): a capped KSM time is stored as -cap, a lower bound */
	rec_target("time_to_savings", "speedup_vs_ksm_defaults", "x",
		   fabs(t_ksm[0]) / t_upm, 1, 100, t_ksm[0] < 0);
	rec_target("time_to_savings", "speedup_vs_ksm_full", "x",
		   fabs(t_ksm[1]) / t_upm, 1, 8, t_ksm[1] < 0);
	rec_target("time_to_savings", "one_after_another_vs_ksm_defaults", "x",
		   fabs(t_ksm[0]) / t_seq, 1, 100, t_ksm[0] < 0);
	rec_target("time_to_savings", "one_after_another_vs_ksm_full", "x",
		   fabs(t_ksm[1]) / t_seq, 1, 8, t_ksm[1] < 0);
	if (upm_cpu_gib > 0 && ksm_cpu_gib > 0)
		rec_target("time_to_savings",
			   "cpu_per_gib_saved_ksm_full_vs_upm", "x",
			   ksm_cpu_gib / upm_cpu_gib, 1, 8, 0);
	munmap(h, n * np * 8);
	free(w);
}

/* ---- 2. throughput ---- */

/* A throughput record of one advise of @size bytes taking @t seconds */
static void rec_advise(size_t size, const char *op, double t, double read)
{
	rec_begin("throughput", "upm");
	rec_int("memory_bytes", size);
	rec_str("op", op);
	rec_num("seconds", t);
	rec_num("mib_per_s", size / MIB / t);
	rec_num("vs_read_pass", t / read);
}

static void bench_throughput(void)
{
	size_t size = env_long("UPM_BENCH_TP_MIB", 256) * MIB;
	size_t np = size / pg;
	double cap = env_long("UPM_BENCH_KSM_FULL_CAP", 600);
	struct fill f = copy_of_template(size);
	struct worker w[2];
	long sv[2], nsv;
	double upm_both = 0;

	fprintf(stderr, "== 2. throughput: 2 processes x %zu MiB",
		size / MIB);
	fputs(" of the same random data\n", stderr);
	nsv = safe_values(sv);
	for (int s = 0; s < nsv; s++) {
		double rd1, t1, rd2, t2;
		long b0;

		reset();
		safe_set(sv[s]);
		w[0] = spawn(&f);
		w[1] = spawn(&f);
		rd1 = run1(&w[0], 'r');
		t1 = run1(&w[0], 'u');
		rd2 = run1(&w[1], 'r');
		b0 = ksm_saved();
		t2 = run1(&w[1], 'u');
		b0 = ksm_saved() - b0;
		quit(w, 2);

		rec_begin("throughput", "none");
		rec_int("memory_bytes", size);
		rec_str("op", "read_pass");
		rec_num("seconds", rd2);
		rec_num("mib_per_s", size / MIB / rd2);
		rec_num("seconds_first_process", rd1);
		rec_safe(sv[s]);
		rec_end();
		rec_advise(size, "first_advise", t1, rd1);
		rec_safe(sv[s]);
		rec_end();
		rec_advise(size, "merging_advise", t2, rd2);
		rec_int("pages_saved", b0);
		rec_num("saving_percent", 100.0 * b0 / np);
		rec_safe(sv[s]);
		rec_end();
		note("safe_frames=%s: read pass %.3f s,",
		     sv[s] < 0 ? "n/a" : sv[s] ? "1" : "0", rd2);
		note("  first advise %.3f s (%.2fx)", t1, t1 / rd1);
		note("  merging advise %.3f s (%.2fx)", t2, t2 / rd2);
		if (s == 0) {
			upm_both = t1 + t2;
			rec_target("throughput", "first_advise_vs_read_pass",
				   "x", t1 / rd1, 0, 1.5, 0);
			rec_target("throughput",
				   "merging_advise_vs_read_pass", "x",
				   t2 / rd2, 0, 3, 0);
		}
	}
	if (nsv == 1) {
		rec_begin("throughput", "upm");
		rec_str("op", "safe_frames_cost");
		rec_str("skipped", "no " UPM "safe_frames in this kernel");
		rec_end();
		note("safe_frames: not in this kernel, cost not measured");
	}
	safe_set(safe_default);

	/* KSM at full speed merging the same two copies */
	{
		double t0, t;
		long b0;

		reset();
		ksm_speed(1);
		w[0] = spawn(&f);
		w[1] = spawn(&f);
		wr(KSM "run", 1);
		b0 = ksm_saved();
		t0 = now();
		run_all(w, 2, 'k');
		t = ksm_wait(b0, (long)(0.99 * np), t0, cap);
		wr(KSM "run", 0);
		quit(w, 2);
		rec_begin("throughput", "ksm-full");
		rec_int("memory_bytes", 2 * size);
		rec_str("op", "merge_two_copies");
		if (t < 0) {
			rec_null("seconds");
			rec_num("cap_seconds", cap);
		} else {
			rec_num("seconds", t);
			rec_num("mib_per_s", 2 * size / MIB / t);
			rec_num("upm_speedup", t / upm_both);
		}
		rec_end();
		note("KSM full speed: %s%.2f s for both copies;",
		     t < 0 ? "> " : "", t < 0 ? cap : t);
		note("  UPM both calls %.3f s", upm_both);
	}
	reset();
}

/* ---- 3. scaling ---- */

static void bench_scaling(void)
{
	const char *list = getenv("UPM_BENCH_SCALE_MIB");
	char buf[256], *tok, *save;
	double base = 0;
	long last_mib = 0;
	double last = 0;

	snprintf(buf, sizeof(buf), "%s",
		 list && *list ? list : "16 64 256 1024 2048");
	fprintf(stderr, "== 3. scaling: one process, second half a copy");
	fprintf(stderr, " of the first (%s MiB)\n", buf);
	for (tok = strtok_r(buf, " ,", &save); tok;
	     tok = strtok_r(NULL, " ,", &save)) {
		long mib = atol(tok);
		size_t size = mib * MIB, np = size / pg;
		int reps = mib <= 256 ? REPS : 1;
		double t[REPS], rdp[REPS], ns, rns;
		long m0, merged = 0;

		for (int r = 0; r < reps; r++) {
			struct fill f = { FILL_HALVES, size, 0, 7 + r, NULL };
			struct worker w;

			reset();
			w = spawn(&f);
			rdp[r] = run1(&w, 'r');
			m0 = rd(UPM "pages_merged");
			t[r] = run1(&w, 'u');
			merged = rd(UPM "pages_merged") - m0;
			quit(&w, 1);
		}
		median(t, reps);
		median(rdp, reps);
		ns = t[reps / 2] * 1e9 / np;
		rns = rdp[reps / 2] * 1e9 / np;
		if (!base)
			base = ns;
		rec_begin("scaling", "upm");
		rec_int("memory_bytes", size);
		rec_str("content", "one process, second half duplicates first");
		rec_int("repetitions", reps);
		rec_num("seconds", t[reps / 2]);
		rec_num("ns_per_page", ns);
		rec_num("read_ns_per_page", rns);
		rec_num("vs_smallest", ns / base);
		rec_int("pages_merged", merged);
		rec_end();
		note("%5ld MiB: %.0f ns/page (read pass %.0f ns/page),",
		     mib, ns, rns);
		note("  %.2fx the smallest, %ld merged", ns / base, merged);
		last_mib = mib;
		last = ns;
	}
	reset();
	if (last_mib) {
		char name[64];

		snprintf(name, sizeof(name), "per_page_cost_%ldMiB_vs_smallest",
			 last_mib);
		rec_target("scaling", name, "x", last / base, 0, 1.2, 0);
	}
}

/* ---- 4. content mix ---- */

static void bench_content_mix(void)
{
	size_t size = env_long("UPM_BENCH_MIX_MIB", 64) * MIB;
	size_t np = size / pg;
	struct fill ref = copy_of_template(size);
	struct worker r;
	static const char * const names[] = { "0%", "50%", "100%", "zero" };

	fprintf(stderr, "== 4. content mix: %zu MiB advised", size / MIB);
	fprintf(stderr, " against a %zu MiB advised reference\n", size / MIB);
	reset();
	r = spawn(&ref);
	run1(&r, 'u');
	for (int i = 0; i < 4; i++) {
		struct fill f = copy_of_template(size);
		long m0 = 0, z0 = 0, n0 = 0, s0 = 0;
		double tr[REPS], t;

		if (i < 3) {
			f.dup_pct = i * 50;
			f.seed = 1000 + i;
		} else {
			f.kind = FILL_ZERO;
		}
		for (int k = 0; k < REPS; k++) {
			struct worker w = spawn(&f);

			/* counts of the last repetition (all are alike) */
			m0 = rd(UPM "pages_merged");
			z0 = rd(UPM "pages_zero");
			n0 = rd(UPM "pages_stable_new");
			s0 = ksm_saved();
			tr[k] = run1(&w, 'u');
			m0 = rd(UPM "pages_merged") - m0;
			z0 = rd(UPM "pages_zero") - z0;
			n0 = rd(UPM "pages_stable_new") - n0;
			s0 = ksm_saved() - s0;
			quit(&w, 1);
		}
		t = median(tr, REPS);
		rec_begin("content_mix", "upm");
		rec_int("memory_bytes", size);
		rec_str("duplicates", names[i]);
		rec_int("repetitions", REPS);
		rec_num("seconds", t);
		rec_num("ns_per_page", t * 1e9 / np);
		rec_int("pages_merged", m0);
		rec_int("pages_zero", z0);
		rec_int("pages_stable_new", n0);
		rec_num("saving_percent", 100.0 * s0 / np);
		rec_end();
		note("%-4s duplicates: %.0f ns/page, merged %ld, zero %ld,",
		     names[i], t * 1e9 / np, m0, z0);
		note("  new stable %ld", n0);
	}
	quit(&r, 1);
	reset();
}

/* ---- 5. concurrency ---- */

/*
 * 1, 2 and 16 processes, each with its own copy of an advised reference,
 * advise it at the same moment (median of REPS): aggregate throughput
 * against one adviser. Every adviser merges into the reference's pages.
 */
static void bench_concurrency(void)
{
	size_t size = env_long("UPM_BENCH_CONC_MIB", 128) * MIB;
	static const int counts[] = { 1, 2, 16 };
	struct fill f = copy_of_template(size);
	double one = 0, tr[REPS];
	struct worker r, w[16];

	fprintf(stderr, "== 5. concurrency: %zu MiB copies of an advised",
		size / MIB);
	fputs(" reference, advised by 1, 2 and 16 processes at once\n", stderr);
	reset();
	r = spawn(&f);
	run1(&r, 'u');
	for (size_t c = 0; c < ARRAY_SIZE(counts); c++) {
		int n = counts[c];
		double t, agg;

		for (int k = 0; k < REPS; k++) {
			for (int i = 0; i < n; i++)
				w[i] = spawn(&f);
			tr[k] = run_all(w, n, 'u');
			quit(w, n);
		}
		t = median(tr, REPS);
		agg = n * size / MIB / t;
		if (n == 1)
			one = agg;
		rec_begin("concurrency", "upm");
		rec_int("instances", n);
		rec_int("memory_bytes", n * size);
		rec_int("repetitions", REPS);
		rec_num("seconds", t);
		rec_num("mib_per_s", agg);
		if (n > 1)
			rec_num("vs_one_adviser", agg / one);
		rec_end();
		note("%2d adviser(s) at once: %.0f MiB/s aggregate (%.2fx one)",
		     n, agg, agg / one);
		if (n == 2)
			rec_target("concurrency", "two_advisers_vs_one", "x",
				   agg / one, 1, 1.7, 0);
	}
	quit(&r, 1);
	reset();
}

/* ---- 6. first write ---- */

/* A first_write record: writing @size bytes of @state took @t s (< 0: no) */
static void rec_write(const char *mode, const char *state, size_t size,
		      double t)
{
	rec_begin("first_write", mode);
	rec_int("memory_bytes", size);
	rec_str("page_state", state);
	if (t < 0)
		rec_null("ns_per_page");
	else
		rec_num("ns_per_page", t * 1e9 / (size / pg));
}

static void bench_first_write(void)
{
	size_t size = env_long("UPM_BENCH_FW_MIB", 64) * MIB;
	size_t np = size / pg;
	double cap = env_long("UPM_BENCH_KSM_FULL_CAP", 600);
	struct fill f = copy_of_template(size);
	struct worker w[2], plain;
	double t_plain, t_cow, t_upm, t_stable, t_ksm, t_cand;
	long b0;

	fprintf(stderr, "== 6. first write to each page of %zu MiB\n",
		size / MIB);
	reset();
	plain = spawn(&f);
	t_plain = run1(&plain, 'w');	/* present, writable: no fault */
	t_cow = run1(&plain, 'F');	/* shared by fork(): a COW fault */
	quit(&plain, 1);

	/* Advised, but nobody else holds the content: a candidate */
	plain = spawn(&f);
	run1(&plain, 'u');
	t_cand = run1(&plain, 'w');
	quit(&plain, 1);

	w[0] = spawn(&f);
	w[1] = spawn(&f);
	run1(&w[0], 'u');
	b0 = ksm_saved();
	run1(&w[1], 'u');
	b0 = ksm_saved() - b0;
	t_upm = run1(&w[1], 'w');
	t_stable = run1(&w[0], 'w');	/* now its only user */
	quit(w, 2);

	reset();
	ksm_speed(1);
	w[0] = spawn(&f);
	w[1] = spawn(&f);
	wr(KSM "run", 1);
	{
		long k0 = ksm_saved();
		double t0 = now();

		run_all(w, 2, 'k');
		t_ksm = ksm_wait(k0, (long)(0.99 * np), t0, cap);
	}
	wr(KSM "run", 0);	/* stop ksmd, keep what it merged */
	if (t_ksm >= 0)
		t_ksm = run1(&w[1], 'w');
	quit(w, 2);
	reset();

	rec_write("none", "present_unshared", size, t_plain);
	rec_end();
	rec_write("none", "fork_shared", size, t_cow);
	rec_end();
	rec_write("upm", "advised_unshared", size, t_cand);
	rec_num("vs_present", t_cand / t_plain);
	rec_num("vs_fork_shared", t_cand / t_cow);
	rec_end();
	rec_write("upm", "merged", size, t_upm);
	rec_int("pages_saved", b0);
	rec_num("vs_fork_shared", t_upm / t_cow);
	rec_end();
	rec_write("upm", "stable_single_user", size, t_stable);
	rec_num("vs_fork_shared", t_stable / t_cow);
	rec_end();
	rec_write("ksm-full", "merged", size, t_ksm);
	if (t_ksm < 0) {
		rec_str("skipped", "ksmd did not merge the pages in time");
	} else {
		rec_num("vs_fork_shared", t_ksm / t_cow);
		rec_num("upm_vs_ksm", t_upm / t_ksm);
	}
	rec_end();
	note("ns/page: present %.0f, fork-shared %.0f,",
	     t_plain * 1e9 / np, t_cow * 1e9 / np);
	note("  UPM advised unshared %.0f, UPM-merged %.0f,",
	     t_cand * 1e9 / np, t_upm * 1e9 / np);
	note("  UPM stable (single user) %.0f, KSM-merged %.0f",
	     t_stable * 1e9 / np, t_ksm < 0 ? -1 : t_ksm * 1e9 / np);
	/* No fault: within noise of a write to a plain present page */
	rec_target("first_write", "advised_unshared_vs_present", "x",
		   t_cand / t_plain, 0, 1.5, 0);
}

/* ---- 7. metadata ---- */

static const char *const caches[] = {
	"ksm_rmap_item", "ksm_stable_node", "upm_entry", NULL
};

/*
 * Kernel memory per advised page: UPM with 2 sharers of each content,
 * with 16 sharers, with none (every page unique: candidates only), and
 * KSM at full speed with 2 sharers.
 */
static const struct meta_case {
	const char *mode;
	int instances;
	int divisor;		/* of UPM_BENCH_META_MIB, per instance */
	int unique;		/* every instance holds other content */
	double limit;		/* target bytes per advised page, or 0 */
	const char *target;
} meta_cases[] = {
	{ "upm", 2, 1, 0, 64, "bytes_per_advised_page_2_sharers" },
	{ "upm", 16, 8, 0, 40, "bytes_per_advised_page_16_sharers" },
	{ "upm", 1, 1, 1, 32, "bytes_per_advised_page_unique" },
	{ "ksm-full", 2, 1, 0, 0, NULL },
};

static void bench_metadata(void)
{
	size_t mib = env_long("UPM_BENCH_META_MIB", 128);
	double cap = env_long("UPM_BENCH_KSM_FULL_CAP", 600);

	fprintf(stderr, "== 7. kernel metadata per advised page");
	fprintf(stderr, " (%zu MiB per process, /8 with 16)\n", mib);
	for (size_t k = 0; k < ARRAY_SIZE(meta_cases); k++) {
		const struct meta_case *mc = &meta_cases[k];
		size_t size = mib * MIB / mc->divisor, np = size / pg;
		long su0, sl0, ie0, ic0, c0[3], su1, sl1, ie1, ic1, saved;
		int n = mc->instances, ksm = !strcmp(mc->mode, "ksm-full");
		struct worker w[16];
		double per;

		reset();
		if (ksm)
			ksm_speed(1);
		for (int i = 0; i < n; i++) {
			struct fill f = copy_of_template(size);

			if (mc->unique) {
				f.dup_pct = 0;
				f.seed = 77 + i;
			}
			w[i] = spawn(&f);
		}
		usleep(200000);
		su0 = meminfo_kb("SUnreclaim");
		sl0 = meminfo_kb("Slab");
		ie0 = rd(UPM "index_entries");
		ic0 = rd(UPM "index_candidates");
		for (int i = 0; caches[i]; i++)
			c0[i] = slab_bytes(caches[i]);
		saved = ksm_saved();
		if (!ksm) {
			for (int i = 0; i < n; i++)
				run1(&w[i], 'u');
		} else {
			double t0 = now();

			wr(KSM "run", 1);
			run_all(w, n, 'k');
			if (ksm_wait(saved, (long)(0.99 * np), t0, cap) < 0)
				note("KSM did not merge within %.0f s", cap);
			wr(KSM "run", 0);
		}
		usleep(200000);
		saved = ksm_saved() - saved;
		su1 = meminfo_kb("SUnreclaim");
		sl1 = meminfo_kb("Slab");
		ie1 = rd(UPM "index_entries");
		ic1 = rd(UPM "index_candidates");
		per = (su1 - su0) * 1024.0 / (n * np);
		rec_begin("metadata", mc->mode);
		rec_int("instances", n);
		rec_int("sharers", mc->unique ? 1 : n);
		rec_int("memory_bytes", n * size);
		rec_int("pages_advised", n * np);
		rec_int("pages_saved", saved);
		rec_num("saving_percent", 100.0 * saved / (n * np));
		rec_int("sunreclaim_delta_bytes", (su1 - su0) * 1024);
		rec_int("slab_delta_bytes", (sl1 - sl0) * 1024);
		rec_num("bytes_per_advised_page", per);
		rec_int("index_entries_delta", ie1 - ie0);
		if (ic0 >= 0)
			rec_int("index_candidates_delta", ic1 - ic0);
		for (int i = 0; caches[i]; i++) {
			char key[64];
			long c1 = slab_bytes(caches[i]);

			snprintf(key, sizeof(key), "slab_%s_delta_bytes",
				 caches[i]);
			if (c0[i] < 0 || c1 < 0)
				rec_null(key);
			else
				rec_int(key, c1 - c0[i]);
		}
		rec_end();
		note("%s, %d x %zu MiB%s: SUnreclaim +%ld KiB",
		     ksm ? "KSM" : "UPM", n, size / MIB,
		     mc->unique ? " (unique)" : "", su1 - su0);
		note("  for %zu advised pages: %.1f bytes/page;", n * np, per);
		note("  index_entries +%ld", ie1 - ie0);
		quit(w, n);
		if (mc->target)
			rec_target("metadata", mc->target, "bytes", per, 0,
				   mc->limit, 0);
	}
	reset();
}

/* ---- main ---- */

static const struct {
	const char *name;
	void (*fn)(void);
} benches[] = {
	{ "time_to_savings", bench_time_to_savings },
	{ "throughput", bench_throughput },
	{ "scaling", bench_scaling },
	{ "content_mix", bench_content_mix },
	{ "concurrency", bench_concurrency },
	{ "first_write", bench_first_write },
	{ "metadata", bench_metadata },
};

#define NR_BENCHES ARRAY_SIZE(benches)

int main(int argc, char **argv)
{
	int opt, all = 0;

	out = stdout;
	pg = getpagesize();
	while ((opt = getopt(argc, argv, "o:")) != -1) {
		if (opt != 'o')
			die("usage: upm_bench [-o FILE] BENCH...|all");
		out = fopen(optarg, "a");
		if (!out)
			die("cannot open %s: %s", optarg, strerror(errno));
	}
	if (optind >= argc)
		die("usage: upm_bench [-o FILE] BENCH...|all");
	if (geteuid())
		die("must run as root (it sets /sys/kernel/mm/ksm/ tunables)");
	if (rd(UPM "index_entries") < 0)
		die("no %s: this kernel lacks UPM", UPM);
	for (int i = optind; i < argc; i++) {
		size_t k;

		if (!strcmp(argv[i], "all")) {
			all = 1;
			continue;
		}
		for (k = 0; k < NR_BENCHES; k++)
			if (!strcmp(argv[i], benches[k].name))
				break;
		if (k == NR_BENCHES)
			die("unknown benchmark %s", argv[i]);
	}
	safe_default = rd(UPM "safe_frames");
	ksm_save();

	/* The largest copy any benchmark takes of the template */
	template_size = 256 * MIB;
	{
		static const char * const v[] = {
			"UPM_BENCH_TTS_MIB", "UPM_BENCH_TP_MIB",
			"UPM_BENCH_MIX_MIB", "UPM_BENCH_CONC_MIB",
			"UPM_BENCH_FW_MIB", "UPM_BENCH_META_MIB"
		};

		for (size_t i = 0; i < ARRAY_SIZE(v); i++)
			if ((size_t)env_long(v[i], 0) * MIB > template_size)
				template_size = env_long(v[i], 0) * MIB;
	}
	template = map_anon(template_size);
	fill_random(template, template_size, 42);

	for (size_t k = 0; k < NR_BENCHES; k++)
		for (int i = optind; i < argc; i++)
			if (all || !strcmp(argv[i], benches[k].name)) {
				benches[k].fn();
				break;
			}
	ksm_restore();
	safe_set(safe_default);
	return 0;
}

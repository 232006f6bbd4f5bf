// SPDX-License-Identifier: GPL-2.0
/*
 * pvmm-bench: the guest half of "make bench".  Not a test: it measures and
 * prints, and bench/run.py on the host collects, compares and judges.
 *
 * For each mode in PVMM_BENCH_MODES, in that order and as often as it is
 * named, it runs one phase (pvmm_latency.h): a storm beside the latency
 * probe, then a drain.  After the first phase of each mode in
 * PVMM_BENCH_CYCLICTEST it runs a second phase with the same storm in which
 * cyclictest measures instead, as the cross-check, and after the first phase
 * of each mode in PVMM_BENCH_TIMERLAT one in which the kernel's timerlat
 * tracer measures interrupt and thread latency apart (pvmm_timerlat.h).
 * Every phase is framed by markers on stdout, so the host can read its own
 * counters at both ends:
 *
 *   PVMM-BENCH-BEGIN mode=M probe=P
 *   PVMM-BENCH-END mode=M probe=P rc=R
 *   # PVMM-BENCH-RESULT mode=M probe=P samples=... max=... (pvmm_phase_print)
 *   PVMM-BENCH-HIST mode=M probe=P US:COUNT ...      (sparse 1 us bins)
 *   PVMM-BENCH-SERIES mode=M t_ms=.. outstanding=.. ... draining=0|1
 *
 * A timerlat phase's RESULT and HIST are its thread latency; its IRQ
 * latency follows with ctx=irq after probe=timerlat, and lost=N.
 *
 * Environment (the guest init takes pvmm.env.NAME=VALUE from the kernel
 * command line): PVMM_BENCH_MODES (off,sync,chunked,async),
 * PVMM_BENCH_CYCLICTEST (off,sync,async; "none" for none),
 * PVMM_BENCH_TIMERLAT (off,sync,async; "none" for none),
 * PVMM_BENCH_SHAPE (large|small), PVMM_BENCH_MIB (64), PVMM_BENCH_SECONDS
 * (5), PVMM_BENCH_INTERVAL_US (200), PVMM_BENCH_SERIES_MS (0: none),
 * PVMM_BENCH_WARMUP_S (2: an unmeasured storm before the first phase),
 * PVMM_BENCH_CAPS (default|max: max lifts the credit caps to their limits),
 * PVMM_CYCLICTEST (/bin/cyclictest).
 */

#include "pvmm_latency.h"
#include "pvmm_timerlat.h"

#define HIST_PER_LINE	48
#define CT_HIST_FILE	"/tmp/cyclictest.hist"

static const char *env_str(const char *name, const char *def)
{
	const char *s = getenv(name);

	return s && *s ? s : def;
}

/* Is @word in the comma-separated @list? */
static bool in_list(const char *list, const char *word)
{
	size_t n = strlen(word);
	const char *p = list;

	while ((p = strstr(p, word))) {
		if ((p == list || p[-1] == ',') && (p[n] == ',' || !p[n]))
			return true;
		p += n;
	}
	return false;
}

/* @ctx: which side of the probe, or "" (timerlat has an IRQ side). */
static void print_hist(const char *mode, const char *probe, const char *ctx,
		       const uint64_t *hist)
{
	unsigned int b, n = 0;

	for (b = 0; b < PVMM_LAT_HIST_US; b++) {
		if (!hist[b])
			continue;
		if (!n)
			printf("PVMM-BENCH-HIST mode=%s probe=%s%s", mode, probe,
			       ctx);
		printf(" %u:%llu", b, (unsigned long long)hist[b]);
		if (++n == HIST_PER_LINE) {
			printf("\n");
			n = 0;
		}
	}
	if (n)
		printf("\n");
}

static void print_series(const char *mode, const struct pvmm_phase_res *r)
{
	unsigned int i;

	for (i = 0; i < r->npts; i++)
		printf("PVMM-BENCH-SERIES mode=%s t_ms=%llu outstanding=%llu pgds_pending=%llu spaces_live=%llu throttle_events=%llu draining=%d\n",
		       mode, (unsigned long long)r->pts[i].t_ms,
		       (unsigned long long)r->pts[i].outstanding,
		       (unsigned long long)r->pts[i].pgds_pending,
		       (unsigned long long)r->pts[i].spaces_live,
		       (unsigned long long)r->pts[i].throttle_events,
		       r->pts[i].draining);
}

/* The "# Name: v0 v1 ..." line of a cyclictest histogram file, per thread. */
static unsigned int ct_values(const char *line, const char *key,
			      uint64_t *v, unsigned int max)
{
	const char *p = line + strlen(key);
	unsigned int n = 0;
	char *end;

	if (strncmp(line, key, strlen(key)))
		return 0;
	while (n < max) {
		unsigned long long x = strtoull(p, &end, 10);

		if (end == p)
			break;
		v[n++] = x;
		p = end;
	}
	return n;
}

/* Parse cyclictest's --histfile output into a phase result. */
static int ct_parse(struct pvmm_phase_res *r)
{
	uint64_t v[PVMM_LAT_MAX_CPUS], sum_avg = 0;
	unsigned int i, n, nthreads = 0;
	char line[4096];
	FILE *f;

	f = fopen(CT_HIST_FILE, "re");
	if (!f)
		return -errno;
	r->lat.min = UINT64_MAX;
	while (fgets(line, sizeof(line), f)) {
		if (line[0] != '#') {
			char *p = line, *end;
			unsigned long long bin = strtoull(p, &end, 10), c;

			if (end == p || bin >= PVMM_LAT_HIST_US)
				continue;
			for (p = end;; p = end) {
				c = strtoull(p, &end, 10);
				if (end == p)
					break;
				r->hist[bin] += c;
			}
			continue;
		}
		if ((n = ct_values(line, "# Total:", v, PVMM_LAT_MAX_CPUS))) {
			nthreads = n;
			for (i = 0; i < n; i++)
				r->lat.samples += v[i];
		} else if ((n = ct_values(line, "# Min Latencies:", v,
					  PVMM_LAT_MAX_CPUS))) {
			for (i = 0; i < n; i++)
				if (v[i] < r->lat.min)
					r->lat.min = v[i];
		} else if ((n = ct_values(line, "# Avg Latencies:", v,
					  PVMM_LAT_MAX_CPUS))) {
			for (i = 0; i < n; i++)
				sum_avg += v[i];
		} else if ((n = ct_values(line, "# Max Latencies:", v,
					  PVMM_LAT_MAX_CPUS))) {
			for (i = 0; i < n; i++)
				if (v[i] > r->lat.max)
					r->lat.max = v[i];
		} else if ((n = ct_values(line, "# Histogram Overflows:", v,
					  PVMM_LAT_MAX_CPUS))) {
			for (i = 0; i < n; i++)
				r->lat.overflow += v[i];
		}
	}
	fclose(f);
	if (!nthreads || !r->lat.samples)
		return -ENODATA;
	/* cyclictest prints whole microseconds per thread: a mean of means. */
	r->lat.avg = (double)sum_avg / nthreads;
	return 0;
}

struct ct_arg {
	const char *path;
	unsigned int interval_us;
	int prio;
};

/* cyclictest -m -p99 -i200 -h..., one thread per CPU, each pinned. */
static int ct_probe(void *arg, unsigned int seconds, struct pvmm_phase_res *r)
{
	const struct ct_arg *a = arg;
	char prio[24], interval[24], hist[24], dur[24], threads[24];
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	int status, ret;
	pid_t pid;

	snprintf(prio, sizeof(prio), "-p%d", a->prio);
	snprintf(interval, sizeof(interval), "-i%u", a->interval_us);
	snprintf(hist, sizeof(hist), "-h%u", PVMM_LAT_HIST_US - 1);
	snprintf(dur, sizeof(dur), "-D%u", seconds);
	snprintf(threads, sizeof(threads), "-t%ld", n > 0 ? n : 1);
	unlink(CT_HIST_FILE);
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (!pid) {
		int null = open("/dev/null", O_WRONLY);

		/* Its summary is in the histogram file: keep the console quiet. */
		if (null >= 0)
			dup2(null, STDOUT_FILENO);
		execl(a->path, a->path, "-m", prio, interval, hist, dur,
		      threads, "-a", "-q", "--histfile=" CT_HIST_FILE,
		      (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		ksft_print_msg("%s exited with status %#x\n", a->path, status);
		return -ECHILD;
	}
	ret = ct_parse(r);
	if (!ret)
		pvmm_lat_percentiles(r->hist, &r->lat);
	return ret;
}

static int run_phase(struct pvmm_phase_cfg *cfg, const char *mode,
		     const char *probe, struct pvmm_phase_res *r)
{
	int ret;

	cfg->mode = mode;
	printf("PVMM-BENCH-BEGIN mode=%s probe=%s\n", mode, probe);
	fflush(stdout);
	ret = pvmm_phase_run(cfg, r);
	printf("PVMM-BENCH-END mode=%s probe=%s rc=%d\n", mode, probe, ret);
	if (ret) {
		ksft_print_msg("%s/%s: %s\n", mode, probe, strerror(-ret));
	} else {
		pvmm_phase_print("PVMM-BENCH-RESULT", mode, probe, r);
		print_hist(mode, probe, "", r->hist);
		print_series(mode, r);
	}
	fflush(stdout);
	free(r->hist);
	r->hist = NULL;
	return ret;
}

/* A phase measured by @probe instead of the built-in probe; no series. */
static int run_probe(const struct pvmm_phase_cfg *cfg, const char *mode,
		     const char *name,
		     int (*probe)(void *, unsigned int, struct pvmm_phase_res *),
		     void *arg, struct pvmm_phase_res *r)
{
	struct pvmm_phase_cfg c = *cfg;

	c.probe = probe;
	c.probe_arg = arg;
	c.series_ms = 0;
	return run_phase(&c, mode, name, r);
}

/* A phase measured by cyclictest, if it is there. */
static int run_cyclictest(const struct pvmm_phase_cfg *cfg, const char *mode,
			  struct ct_arg *ct, struct pvmm_phase_res *r)
{
	if (access(ct->path, X_OK)) {
		printf("PVMM-BENCH-ERROR %s: %s\n", ct->path, strerror(errno));
		return -ENOENT;
	}
	return run_probe(cfg, mode, "cyclictest", ct_probe, ct, r);
}

/* A phase measured by the timerlat tracer: thread, then IRQ latency. */
static int run_timerlat(const struct pvmm_phase_cfg *cfg, const char *mode,
			struct pvmm_timerlat *tl, struct pvmm_phase_res *r)
{
	char why[128];
	int ret;

	if (pvmm_timerlat_available(why, sizeof(why))) {
		printf("PVMM-BENCH-ERROR timerlat: %s\n", why);
		return -ENOENT;
	}
	ret = run_probe(cfg, mode, "timerlat", pvmm_timerlat_probe, tl, r);
	if (!ret) {
		pvmm_timerlat_print(mode, tl);
		print_hist(mode, "timerlat", " ctx=irq", tl->irq_hist);
		fflush(stdout);
	}
	return ret;
}

/* Lift both credit caps to the largest values the driver takes. */
static int caps_to_max(void)
{
	static const char *const caps[] = { "cap_spaces", "cap_pages" };
	unsigned int i;
	int ret;

	for (i = 0; i < 2; i++) {
		unsigned long v = 1UL << 40;

		/* Halve until the driver accepts: its limit is its business. */
		while ((ret = pvmm_knob_write_ul(caps[i], v)) && v > 1)
			v /= 2;
		if (ret)
			return ret;
		ksft_print_msg("%s set to %lu\n", caps[i], v);
	}
	return 0;
}

/* The credit caps in effect, for the host's record of the run. */
static void print_caps(void)
{
	char spaces[32] = "?", pages[32] = "?";

	pvmm_knob_read("cap_spaces", spaces, sizeof(spaces));
	pvmm_knob_read("cap_pages", pages, sizeof(pages));
	printf("PVMM-BENCH-CAPS cap_spaces=%s cap_pages=%s\n", spaces, pages);
}

int main(void)
{
	static struct pvmm_phase_res res;
	static const char *const all[] = { "off", "sync", "chunked", "async" };
	const char *modes = env_str("PVMM_BENCH_MODES", "off,sync,chunked,async");
	const char *ct_modes = env_str("PVMM_BENCH_CYCLICTEST", "off,sync,async");
	const char *tl_modes = env_str("PVMM_BENCH_TIMERLAT", "off,sync,async");
	struct ct_arg ct = {
		.path = env_str("PVMM_CYCLICTEST", "/bin/cyclictest"),
		.interval_us = pvmm_env_ul("PVMM_BENCH_INTERVAL_US", 200, 50,
					   1000000),
		.prio = 99,
	};
	struct pvmm_timerlat tl = { .period_us = ct.interval_us };
	struct pvmm_phase_cfg cfg = {
		.shape = strcmp(env_str("PVMM_BENCH_SHAPE", "large"), "small") ?
			 PVMM_SHAPE_LARGE : PVMM_SHAPE_SMALL,
		.mib = pvmm_env_ul("PVMM_BENCH_MIB", 64, 1, 4096),
		.seconds = pvmm_env_ul("PVMM_BENCH_SECONDS", 5, 1, 3600),
		.warmup_ms = 500,
		.interval_us = ct.interval_us,
		.prio = ct.prio,
		.drain_ms = pvmm_drain_timeout_ms(),
		.series_ms = pvmm_env_ul("PVMM_BENCH_SERIES_MS", 0, 0, 60000),
	};
	char why[256], *list = strdup(modes), *tok, *save;
	unsigned int i, seen = 0;
	unsigned long warmup;
	int failed = 0;

	if (!list)
		return 1;
	if (pvmm_stats_unavailable(why, sizeof(why))) {
		printf("PVMM-BENCH-ERROR %s\n", why);
		return KSFT_SKIP;
	}
	if (!strcmp(env_str("PVMM_BENCH_CAPS", "default"), "max") &&
	    caps_to_max()) {
		printf("PVMM-BENCH-ERROR cannot lift the credit caps\n");
		return 1;
	}
	print_caps();
	warmup = pvmm_env_ul("PVMM_BENCH_WARMUP_S", 2, 0, 3600);
	if (warmup && pvmm_phase_warmup(&cfg, warmup))
		printf("PVMM-BENCH-ERROR the warm-up storm failed\n");
	/* In the order given, repeats allowed: the host rotates the order. */
	for (tok = strtok_r(list, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		for (i = 0; i < 4 && strcmp(tok, all[i]); i++)
			;
		if (i == 4) {
			printf("PVMM-BENCH-ERROR unknown mode %s\n", tok);
			failed = 1;
			continue;
		}
		cfg.probe = NULL;
		failed |= run_phase(&cfg, all[i], "pvmm_latency", &res) != 0;
		/* The other probes once per mode, after its first phase. */
		if (seen & (1u << i))
			continue;
		seen |= 1u << i;
		if (in_list(ct_modes, all[i]))
			failed |= run_cyclictest(&cfg, all[i], &ct, &res) != 0;
		if (in_list(tl_modes, all[i]))
			failed |= run_timerlat(&cfg, all[i], &tl, &res) != 0;
	}
	free(tl.irq_hist);
	free(list);
	pvmm_knob_write("mode", "async\n");
	return failed;
}

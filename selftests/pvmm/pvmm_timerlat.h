/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The kernel's timerlat tracer as a latency probe (pvmm-bench).
 *
 * timerlat arms an hrtimer per CPU every period.  Its interrupt handler
 * records how late it ran (IRQ latency) and wakes a per-CPU kernel thread
 * at SCHED_FIFO 95, the tracer's default, which records how late it woke
 * (thread latency).  So one run gives interrupt latency and thread latency
 * apart, from the same timer expiries.
 *
 * It is driven through tracefs, as rtla timerlat drives it, but nothing
 * reads the trace buffer while the storm runs: the samples stay in the ring
 * buffer, which is sized for the phase, and are read after the tracer
 * stops.  An overwritten sample would bias the maximum, so a phase that lost
 * any fails rather than reports.
 */
#ifndef PVMM_TIMERLAT_H
#define PVMM_TIMERLAT_H

#include "pvmm_latency.h"

#define PVMM_TRACEFS		"/sys/kernel/tracing"
/* Per CPU: a sample takes some 32 bytes, two per period (IRQ and thread). */
#define PVMM_TIMERLAT_BUF_KB	8192

struct pvmm_timerlat {
	unsigned int period_us;
	/* The IRQ side of the last run; the thread side is the phase's. */
	struct pvmm_lat_sum irq;
	uint64_t *irq_hist;		/* PVMM_LAT_HIST_US bins */
	uint64_t lost;			/* samples the ring buffer overwrote */
};

static inline int pvmm_tracefs_write(const char *name, const char *val)
{
	return pvmm_write_text(PVMM_TRACEFS, name, val);
}

/* Is there a timerlat tracer to drive?  0, or -errno with @why set. */
static inline int pvmm_timerlat_available(char *why, size_t len)
{
	char tracers[512];

	if (pvmm_read_text(PVMM_TRACEFS "/available_tracers", tracers,
			   sizeof(tracers))) {
		snprintf(why, len, "%s not mounted", PVMM_TRACEFS);
		return -ENOENT;
	}
	if (!strstr(tracers, "timerlat")) {
		snprintf(why, len, "no timerlat tracer (CONFIG_TIMERLAT_TRACER)");
		return -ENOENT;
	}
	return 0;
}

/* Samples the ring buffer overwrote, summed over the CPUs. */
static inline uint64_t pvmm_timerlat_overruns(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t sum = 0;
	char path[128], line[128];
	long cpu;

	for (cpu = 0; cpu < n; cpu++) {
		FILE *f;

		snprintf(path, sizeof(path), PVMM_TRACEFS "/per_cpu/cpu%ld/stats",
			 cpu);
		f = fopen(path, "re");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f)) {
			unsigned long long v;

			if (sscanf(line, "overrun: %llu", &v) == 1)
				sum += v;
		}
		fclose(f);
	}
	return sum;
}

static inline void pvmm_timerlat_sample(struct pvmm_lat_cpu *c, uint64_t ns)
{
	pvmm_lat_record(c, ns / 1000);
}

/* The summary of one side's samples, in whole microseconds. */
static inline void pvmm_timerlat_sum(const struct pvmm_lat_cpu *c,
				     struct pvmm_lat_sum *s)
{
	memset(s, 0, sizeof(*s));
	s->samples = c->samples;
	s->overflow = c->overflow;
	s->min = c->samples ? c->min_us : 0;
	s->max = c->max_us;
	s->avg = c->samples ? (double)c->sum_us / c->samples : 0;
	pvmm_lat_percentiles(c->hist, s);
}

/*
 * The samples of the trace: "#SEQ context irq timer_latency NNN ns" and the
 * same with "thread" (trace_timerlat_print() in kernel/trace/trace_output.c).
 */
static inline int pvmm_timerlat_read(struct pvmm_lat_cpu *irq,
				     struct pvmm_lat_cpu *thread)
{
	char line[512], ctx[16];
	FILE *f = fopen(PVMM_TRACEFS "/trace", "re");

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long ns;
		const char *p = strstr(line, " context ");

		if (!p || sscanf(p, " context %15s timer_latency %llu ns", ctx,
				 &ns) != 2)
			continue;
		if (!strcmp(ctx, "irq"))
			pvmm_timerlat_sample(irq, ns);
		else if (!strcmp(ctx, "thread"))
			pvmm_timerlat_sample(thread, ns);
	}
	fclose(f);
	return 0;
}

static inline int pvmm_timerlat_setup(unsigned int period_us)
{
	char v[32];
	int ret;

	ret = pvmm_tracefs_write("tracing_on", "0");
	if (!ret)
		ret = pvmm_tracefs_write("current_tracer", "nop");
	snprintf(v, sizeof(v), "%u", period_us);
	if (!ret)
		ret = pvmm_tracefs_write("osnoise/timerlat_period_us", v);
	/* Never stop on a high latency: every sample is wanted. */
	if (!ret)
		ret = pvmm_tracefs_write("osnoise/stop_tracing_us", "0");
	if (!ret)
		ret = pvmm_tracefs_write("osnoise/stop_tracing_total_us", "0");
	if (!ret)
		ret = pvmm_tracefs_write("osnoise/print_stack", "0");
	snprintf(v, sizeof(v), "%u", PVMM_TIMERLAT_BUF_KB);
	if (!ret)
		ret = pvmm_tracefs_write("buffer_size_kb", v);
	/* Opening "trace" for writing with O_TRUNC empties the buffers. */
	if (!ret)
		ret = pvmm_tracefs_write("trace", "");
	return ret;
}

/*
 * A phase's probe (struct pvmm_phase_cfg.probe): timerlat for @seconds
 * beside the storm.  The phase's result gets the thread latency, @arg (a
 * struct pvmm_timerlat) the IRQ latency.
 */
static inline int pvmm_timerlat_probe(void *arg, unsigned int seconds,
				      struct pvmm_phase_res *r)
{
	struct pvmm_timerlat *t = arg;
	struct pvmm_lat_cpu irq = { .min_us = UINT64_MAX };
	struct pvmm_lat_cpu thread = { .min_us = UINT64_MAX };
	int ret;

	memset(&t->irq, 0, sizeof(t->irq));
	t->lost = 0;
	free(t->irq_hist);
	t->irq_hist = calloc(PVMM_LAT_HIST_US, sizeof(*t->irq_hist));
	irq.hist = t->irq_hist;
	thread.hist = r->hist;
	if (!t->irq_hist)
		return -ENOMEM;
	ret = pvmm_timerlat_setup(t->period_us);
	if (!ret)
		ret = pvmm_tracefs_write("current_tracer", "timerlat");
	if (!ret)
		ret = pvmm_tracefs_write("tracing_on", "1");
	if (!ret) {
		pvmm_sleep_ms(seconds * 1000UL);
		ret = pvmm_tracefs_write("tracing_on", "0");
	}
	if (!ret) {
		t->lost = pvmm_timerlat_overruns();
		ret = pvmm_timerlat_read(&irq, &thread);
	}
	/* Stops the tracer's threads and frees its buffers' samples. */
	pvmm_tracefs_write("current_tracer", "nop");
	pvmm_tracefs_write("trace", "");
	if (ret)
		return ret;
	if (t->lost) {
		ksft_print_msg("timerlat: the trace buffer lost %llu samples\n",
			       (unsigned long long)t->lost);
		return -EOVERFLOW;
	}
	if (!irq.samples || !thread.samples)
		return -ENODATA;
	pvmm_timerlat_sum(&irq, &t->irq);
	pvmm_timerlat_sum(&thread, &r->lat);
	return 0;
}

/* The IRQ side, for bench/run.py: the thread side is the phase's RESULT. */
static inline void pvmm_timerlat_print(const char *mode,
				       const struct pvmm_timerlat *t)
{
	printf("PVMM-BENCH-RESULT mode=%s probe=timerlat ctx=irq samples=%llu min=%llu avg=%.1f p99=%llu p999=%llu max=%llu overflow=%llu lost=%llu period_us=%u\n",
	       mode, (unsigned long long)t->irq.samples,
	       (unsigned long long)t->irq.min, t->irq.avg,
	       (unsigned long long)t->irq.p99,
	       (unsigned long long)t->irq.p999,
	       (unsigned long long)t->irq.max,
	       (unsigned long long)t->irq.overflow,
	       (unsigned long long)t->lost, t->period_us);
}

#endif /* PVMM_TIMERLAT_H */

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The latency probe and the measured phase, shared by the pvmm_latency
 * kselftest and the pvmm-bench guest program.
 *
 * The probe measures what cyclictest measures: one SCHED_FIFO thread per
 * CPU, pinned, sleeps to an absolute CLOCK_MONOTONIC deadline every
 * interval and records how late it woke, in a 1 us histogram.  A phase runs
 * the probe beside a teardown storm in one pvmm mode and collects the
 * driver's counters around it.
 *
 * No harness checks in here: the bench program has no harness, so errors
 * are returned and the caller decides.
 */
#ifndef PVMM_LATENCY_H
#define PVMM_LATENCY_H

#include "pvmm_lib.h"	/* first: it defines _GNU_SOURCE */

#include <pthread.h>
#include <stddef.h>

#define PVMM_LAT_HIST_US	100000	/* 100 ms of 1 us bins; beyond: overflow */
#define PVMM_LAT_MAX_CPUS	64
#define PVMM_LAT_SERIES_MAX	4096

struct pvmm_lat_cpu {
	pthread_t thread;
	int cpu;
	unsigned int interval_us;
	const volatile int *stop;
	uint64_t *hist;		/* PVMM_LAT_HIST_US bins */
	uint64_t samples, overflow, sum_us, min_us, max_us;
	int err;		/* errno of a failed setup in the thread */
};

/* Latency summary over all CPUs, in microseconds. */
struct pvmm_lat_sum {
	uint64_t samples, overflow, min, max, p99, p999;
	double avg;
};

struct pvmm_lat {
	unsigned int ncpus;
	int prio;
	int dma_fd;		/* PM QoS request held while probing, or -1 */
	volatile int stop;
	struct pvmm_lat_cpu cpu[PVMM_LAT_MAX_CPUS];
};

static inline uint64_t pvmm_ts_ns(const struct timespec *t)
{
	return (uint64_t)t->tv_sec * 1000000000ULL + t->tv_nsec;
}

static inline void pvmm_ts_add_us(struct timespec *t, unsigned int us)
{
	t->tv_nsec += (long)us * 1000;
	while (t->tv_nsec >= 1000000000L) {
		t->tv_nsec -= 1000000000L;
		t->tv_sec++;
	}
}

static inline void pvmm_lat_record(struct pvmm_lat_cpu *c, uint64_t us)
{
	c->samples++;
	c->sum_us += us;
	if (us < c->min_us)
		c->min_us = us;
	if (us > c->max_us)
		c->max_us = us;
	if (us < PVMM_LAT_HIST_US)
		c->hist[us]++;
	else
		c->overflow++;
}

/* cyclictest's loop: sleep to an absolute deadline, record the lateness. */
static inline void *pvmm_lat_thread(void *arg)
{
	struct pvmm_lat_cpu *c = arg;
	struct timespec next, now;
	cpu_set_t one;

	CPU_ZERO(&one);
	CPU_SET(c->cpu, &one);
	if (pthread_setaffinity_np(pthread_self(), sizeof(one), &one)) {
		c->err = EINVAL;
		return NULL;
	}
	clock_gettime(CLOCK_MONOTONIC, &next);
	pvmm_ts_add_us(&next, c->interval_us);
	while (!*c->stop) {
		int r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next,
					NULL);

		if (r && r != EINTR) {
			c->err = r;
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (r)
			continue;
		pvmm_lat_record(c, (pvmm_ts_ns(&now) - pvmm_ts_ns(&next)) /
				   1000);
		/* Missed periods are not samples: skip to the next one ahead. */
		do {
			pvmm_ts_add_us(&next, c->interval_us);
		} while (pvmm_ts_ns(&next) <= pvmm_ts_ns(&now));
	}
	return NULL;
}

/*
 * Ask for no CPU wakeup latency, as cyclictest does, for as long as the fd
 * stays open: otherwise idle CPUs halt, and waking a halted vCPU is part of
 * what would be measured.  Kernels without PM QoS have no such file.
 */
static inline int pvmm_lat_qos_open(void)
{
	int32_t zero = 0;
	int fd = open("/dev/cpu_dma_latency", O_WRONLY | O_CLOEXEC);

	if (fd >= 0 && write(fd, &zero, sizeof(zero)) != sizeof(zero)) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static inline void pvmm_lat_release(struct pvmm_lat *lat)
{
	if (lat->dma_fd >= 0)
		close(lat->dma_fd);
	lat->dma_fd = -1;
	munlockall();
}

/*
 * Start one thread per online CPU at SCHED_FIFO @prio.  Memory is locked, as
 * with cyclictest -m, so a page fault never counts as latency.  0 or -errno.
 */
static inline int pvmm_lat_start(struct pvmm_lat *lat, unsigned int interval_us,
				 int prio)
{
	struct sched_param sp = { .sched_priority = prio };
	pthread_attr_t attr;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned int i;
	int r;

	memset(lat, 0, sizeof(*lat));
	lat->ncpus = n < 1 ? 1 : n > PVMM_LAT_MAX_CPUS ? PVMM_LAT_MAX_CPUS : n;
	lat->prio = prio;
	lat->dma_fd = -1;
	for (i = 0; i < lat->ncpus; i++) {
		struct pvmm_lat_cpu *c = &lat->cpu[i];

		c->cpu = i;
		c->interval_us = interval_us;
		c->stop = &lat->stop;
		c->min_us = UINT64_MAX;
		c->hist = calloc(PVMM_LAT_HIST_US, sizeof(*c->hist));
		if (!c->hist)
			return -ENOMEM;
	}
	if (mlockall(MCL_CURRENT | MCL_FUTURE))
		return -errno;
	lat->dma_fd = pvmm_lat_qos_open();
	pthread_attr_init(&attr);
	pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
	pthread_attr_setschedpolicy(&attr, SCHED_FIFO);
	pthread_attr_setschedparam(&attr, &sp);
	for (i = 0; i < lat->ncpus; i++) {
		r = pthread_create(&lat->cpu[i].thread, &attr, pvmm_lat_thread,
				   &lat->cpu[i]);
		if (r) {
			lat->stop = 1;
			while (i--)
				pthread_join(lat->cpu[i].thread, NULL);
			pthread_attr_destroy(&attr);
			pvmm_lat_release(lat);
			return -r;
		}
	}
	pthread_attr_destroy(&attr);
	return 0;
}

/* Stop and join the threads; -errno of the first thread that failed. */
static inline int pvmm_lat_stop(struct pvmm_lat *lat)
{
	unsigned int i;
	int err = 0;

	lat->stop = 1;
	for (i = 0; i < lat->ncpus; i++) {
		pthread_join(lat->cpu[i].thread, NULL);
		if (lat->cpu[i].err && !err)
			err = -lat->cpu[i].err;
	}
	pvmm_lat_release(lat);
	return err;
}

static inline void pvmm_lat_free(struct pvmm_lat *lat)
{
	unsigned int i;

	for (i = 0; i < lat->ncpus; i++) {
		free(lat->cpu[i].hist);
		lat->cpu[i].hist = NULL;
	}
}

/*
 * p99 and p99.9 of @s from its bins: the smallest bin with at least that
 * share of the samples at or below it.  Needs s->samples and s->max.
 */
static inline void pvmm_lat_percentiles(const uint64_t *hist,
					struct pvmm_lat_sum *s)
{
	uint64_t seen = 0, p99_at = (s->samples * 99 + 99) / 100;
	uint64_t p999_at = (s->samples * 999 + 999) / 1000;
	unsigned int b;

	s->p99 = s->p999 = s->max;
	for (b = 0; b < PVMM_LAT_HIST_US; b++) {
		uint64_t before = seen;

		seen += hist[b];
		if (before < p99_at && seen >= p99_at)
			s->p99 = b;
		if (before < p999_at && seen >= p999_at) {
			s->p999 = b;
			break;
		}
	}
}

/* Bins of all CPUs summed into @hist (PVMM_LAT_HIST_US entries). */
static inline void pvmm_lat_merge(const struct pvmm_lat *lat, uint64_t *hist,
				  struct pvmm_lat_sum *s)
{
	uint64_t sum = 0;
	unsigned int i, b;

	memset(s, 0, sizeof(*s));
	memset(hist, 0, PVMM_LAT_HIST_US * sizeof(*hist));
	s->min = UINT64_MAX;
	for (i = 0; i < lat->ncpus; i++) {
		const struct pvmm_lat_cpu *c = &lat->cpu[i];

		for (b = 0; b < PVMM_LAT_HIST_US; b++)
			hist[b] += c->hist[b];
		s->samples += c->samples;
		s->overflow += c->overflow;
		sum += c->sum_us;
		if (c->samples && c->min_us < s->min)
			s->min = c->min_us;
		if (c->max_us > s->max)
			s->max = c->max_us;
	}
	if (!s->samples) {
		s->min = 0;
		return;
	}
	s->avg = (double)sum / s->samples;
	pvmm_lat_percentiles(hist, s);
}

/* Wait until nothing is outstanding, parked or backlogged.  0 or -ETIME. */
static inline int pvmm_drain(unsigned long timeout_ms, struct pvmm_stats *st)
{
	uint64_t start = pvmm_now_ms(), o, p, b;
	char err[256];

	for (;;) {
		if (!pvmm_stats_read(st, err, sizeof(err)) &&
		    !pvmm_stats_get(st, "outstanding", &o) && !o &&
		    !pvmm_stats_get(st, "pgds_pending", &p) && !p &&
		    !pvmm_stats_get(st, "backlog", &b) && !b)
			return 0;
		if (pvmm_now_ms() - start >= timeout_ms)
			return -ETIME;
		pvmm_sleep_ms(20);
	}
}

/* ---- a measured phase ---- */

/* Most vCPUs a phase keeps busy. */
#define PVMM_LAT_SPINNERS	64

enum pvmm_shape { PVMM_SHAPE_LARGE, PVMM_SHAPE_SMALL };

struct pvmm_phase_res;

struct pvmm_phase_cfg {
	const char *mode;		/* off, sync, chunked, async */
	enum pvmm_shape shape;
	unsigned long mib;		/* per process of a large storm */
	unsigned int seconds;		/* probe time */
	unsigned int warmup_ms;		/* storm before the probe starts */
	unsigned int interval_us;
	int prio;
	unsigned long drain_ms;
	unsigned int series_ms;		/* 0: no series */
	/*
	 * Runs instead of the built-in probe when set (e.g. cyclictest); it
	 * fills in the latency summary and bins of the result.
	 */
	int (*probe)(void *arg, unsigned int seconds,
		     struct pvmm_phase_res *r);
	void *probe_arg;
};

struct pvmm_series_pt {
	uint64_t t_ms, outstanding, pgds_pending, spaces_live, throttle_events;
	bool draining;			/* taken after the storm stopped */
};

struct pvmm_phase_res {
	struct pvmm_lat_sum lat;
	uint64_t *hist;			/* merged bins, owned by the caller */
	uint64_t procs, fork_failed, child_failed, ms;
	double forks_per_s;
	/* Counter deltas over the phase, and peaks since its start. */
	uint64_t created, destroyed, doorbells, throttle_events;
	uint64_t throttle_wait_us, peak_outstanding, throttle_timeouts;
	uint64_t sync_timeouts;		/* waits that gave up (and went async) */
	bool drained;
	unsigned int npts;
	struct pvmm_series_pt pts[PVMM_LAT_SERIES_MAX];
};

static inline uint64_t pvmm_get0(const struct pvmm_stats *st, const char *name)
{
	uint64_t v = 0;

	pvmm_stats_get(st, name, &v);
	return v;
}

static inline uint64_t pvmm_diff0(const struct pvmm_stats *a,
				  const struct pvmm_stats *b, const char *name)
{
	uint64_t x = pvmm_get0(a, name), y = pvmm_get0(b, name);

	return y > x ? y - x : 0;
}

/* Storm shapes: a few large address spaces, or many small ones. */
static inline void pvmm_shape_cfg(const struct pvmm_phase_cfg *p,
				  struct pvmm_storm_cfg *cfg)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	memset(cfg, 0, sizeof(*cfg));
	cfg->procs = 0;		/* until told to stop */
	cfg->fork_every = 4;
	cfg->exec_every = 4;
	if (p->shape == PVMM_SHAPE_LARGE) {
		cfg->parallel = n > 0 ? n : 1;
		cfg->mib = p->mib;
	} else {
		cfg->parallel = 4 * (n > 0 ? n : 1);
		cfg->mib = 1;
	}
	pvmm_storm_fit(cfg);
	cfg->exec_path = pvmm_exec_path(&cfg->exec_arg);
}

static inline void pvmm_sample(struct pvmm_phase_res *r, uint64_t t0,
			       bool draining)
{
	struct pvmm_series_pt *pt;
	struct pvmm_stats st;
	char err[256];

	if (r->npts == PVMM_LAT_SERIES_MAX ||
	    pvmm_stats_read(&st, err, sizeof(err)))
		return;
	pt = &r->pts[r->npts++];
	pt->t_ms = pvmm_now_ms() - t0;
	pt->outstanding = pvmm_get0(&st, "outstanding");
	pt->pgds_pending = pvmm_get0(&st, "pgds_pending");
	pt->spaces_live = pvmm_get0(&st, "spaces_live");
	pt->throttle_events = pvmm_get0(&st, "throttle_events");
	pt->draining = draining;
}

/* Sleep @ms, sampling the counters every @every ms if set. */
static inline void pvmm_phase_sleep(struct pvmm_phase_res *r, uint64_t t0,
				    unsigned int ms, unsigned int every)
{
	uint64_t end = pvmm_now_ms() + ms;

	while (pvmm_now_ms() < end) {
		uint64_t left = end - pvmm_now_ms();

		if (every) {
			pvmm_sample(r, t0, false);
			pvmm_sleep_ms(left < every ? left : every);
		} else {
			pvmm_sleep_ms(left);
		}
	}
}

/*
 * One phase: switch to the mode, run the storm in a child, probe latency
 * beside it, stop the storm and wait for the driver to drain.  The storm
 * runs at normal priority on every CPU; the probe above it.  Returns 0, or
 * -errno if the phase could not be run at all.
 */
static inline int pvmm_phase_run(const struct pvmm_phase_cfg *p,
				 struct pvmm_phase_res *r)
{
	struct pvmm_stats before, after;
	struct pvmm_storm_res *storm;
	struct pvmm_storm_cfg scfg;
	pid_t spinners[PVMM_LAT_SPINNERS];
	unsigned int nspin;
	struct pvmm_lat lat;
	uint64_t t0;
	char err[256];
	int ret, status;
	pid_t pid;

	memset(r, 0, offsetof(struct pvmm_phase_res, pts));
	r->hist = calloc(PVMM_LAT_HIST_US, sizeof(*r->hist));
	storm = pvmm_storm_res_alloc();
	if (!r->hist || !storm)
		return -ENOMEM;
	ret = pvmm_drain(p->drain_ms, &before);
	if (!ret)
		ret = pvmm_knob_write("mode", p->mode);
	if (!ret)
		ret = pvmm_reset_peaks();
	if (!ret)
		ret = pvmm_stats_read(&before, err, sizeof(err));
	if (ret)
		goto out;

	pvmm_shape_cfg(p, &scfg);
	/*
	 * No vCPU ever idles: a fork waiting for its CREATE would leave it
	 * idle, and the probe would then wake from idle, when the host's
	 * scheduler, not the guest, decides how late (under icount, idle
	 * guest time runs at host speed).  The spinners take only what the
	 * storm leaves, in every mode alike.
	 */
	nspin = pvmm_spinners_start(spinners, PVMM_LAT_SPINNERS, SCHED_IDLE);
	t0 = pvmm_now_ms();
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		pvmm_spinners_stop(spinners, &nspin);
		goto out;
	}
	if (!pid) {
		pvmm_storm_run(&scfg, storm);
		_exit(0);
	}
	pvmm_phase_sleep(r, t0, p->warmup_ms, p->series_ms);
	if (p->probe) {
		ret = p->probe(p->probe_arg, p->seconds, r);
	} else {
		ret = pvmm_lat_start(&lat, p->interval_us, p->prio);
		if (!ret) {
			pvmm_phase_sleep(r, t0, p->seconds * 1000,
					 p->series_ms);
			ret = pvmm_lat_stop(&lat);
			pvmm_lat_merge(&lat, r->hist, &r->lat);
		}
		pvmm_lat_free(&lat);
	}
	__atomic_store_n(&storm->stop, 1, __ATOMIC_RELEASE);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	pvmm_spinners_stop(spinners, &nspin);
	r->procs = storm->reaped;
	r->fork_failed = storm->fork_failed;
	r->child_failed = storm->child_failed + storm->child_signaled;
	r->ms = storm->ms;
	r->forks_per_s = storm->ms ? storm->reaped * 1000.0 / storm->ms : 0;
	/* Samples until drained show how the backlog comes down. */
	while (p->series_ms && pvmm_drain(p->series_ms, &after) == -ETIME &&
	       pvmm_now_ms() - t0 < p->drain_ms + p->seconds * 1000ULL +
				    p->warmup_ms)
		pvmm_sample(r, t0, true);
	r->drained = !pvmm_drain(p->drain_ms, &after);
	r->created = pvmm_diff0(&before, &after, "spaces_created");
	r->destroyed = pvmm_diff0(&before, &after, "spaces_destroyed");
	r->doorbells = pvmm_diff0(&before, &after, "doorbells");
	r->throttle_events = pvmm_diff0(&before, &after, "throttle_events");
	r->throttle_wait_us = pvmm_diff0(&before, &after, "throttle_wait_us");
	r->throttle_timeouts = pvmm_diff0(&before, &after,
					  "throttle_timeouts");
	r->sync_timeouts = pvmm_diff0(&before, &after, "sync_timeouts");
	r->peak_outstanding = pvmm_get0(&after, "peak_outstanding");
out:
	munmap(storm, sizeof(*storm));
	return ret;
}

static inline int pvmm_no_probe(void *arg, unsigned int seconds,
				struct pvmm_phase_res *r)
{
	(void)arg;
	(void)r;
	pvmm_sleep_ms(seconds * 1000UL);
	return 0;
}

/*
 * An unmeasured storm in async mode: the first phase after boot otherwise
 * runs on cold caches and makes whichever mode comes first look worse.
 */
static inline int pvmm_phase_warmup(const struct pvmm_phase_cfg *p,
				    unsigned int seconds)
{
	struct pvmm_phase_res *r = calloc(1, sizeof(*r));
	struct pvmm_phase_cfg warm = *p;
	int ret;

	if (!r)
		return -ENOMEM;
	warm.mode = "async";
	warm.probe = pvmm_no_probe;
	warm.seconds = seconds;
	warm.series_ms = 0;
	ret = pvmm_phase_run(&warm, r);
	free(r->hist);
	free(r);
	return ret;
}

/* "name=value ..." of a phase, for TAP diagnostics and the bench parser. */
static inline void pvmm_phase_print(const char *prefix, const char *mode,
				    const char *probe,
				    const struct pvmm_phase_res *r)
{
	ksft_print_msg("%s mode=%s probe=%s samples=%llu min=%llu avg=%.1f p99=%llu p999=%llu max=%llu overflow=%llu procs=%llu ms=%llu forks_per_s=%.1f fork_failed=%llu child_failed=%llu created=%llu destroyed=%llu doorbells=%llu peak_outstanding=%llu throttle_events=%llu throttle_wait_us=%llu throttle_timeouts=%llu sync_timeouts=%llu drained=%d\n",
		       prefix, mode, probe,
		       (unsigned long long)r->lat.samples,
		       (unsigned long long)r->lat.min, r->lat.avg,
		       (unsigned long long)r->lat.p99,
		       (unsigned long long)r->lat.p999,
		       (unsigned long long)r->lat.max,
		       (unsigned long long)r->lat.overflow,
		       (unsigned long long)r->procs,
		       (unsigned long long)r->ms, r->forks_per_s,
		       (unsigned long long)r->fork_failed,
		       (unsigned long long)r->child_failed,
		       (unsigned long long)r->created,
		       (unsigned long long)r->destroyed,
		       (unsigned long long)r->doorbells,
		       (unsigned long long)r->peak_outstanding,
		       (unsigned long long)r->throttle_events,
		       (unsigned long long)r->throttle_wait_us,
		       (unsigned long long)r->throttle_timeouts,
		       (unsigned long long)r->sync_timeouts, r->drained);
}

#endif /* PVMM_LATENCY_H */

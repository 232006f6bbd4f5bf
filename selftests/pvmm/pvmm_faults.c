// SPDX-License-Identifier: GPL-2.0
/*
 * pvmm_faults: the guest against a host that misbehaves on purpose.
 *
 * The host stub runs with --fault; PVMM_FAULT must name the same fault, and
 * selects the fixture of that name (the others need another host):
 *
 *  never-ack  the host takes requests and never answers.  A synchronous
 *             teardown gives up after sync_timeout_ms and pvmm switches to
 *             async; creation at the cap fails with ENOMEM after
 *             throttle_timeout_ms instead of hanging; unloading finishes
 *             within the detach deadline and counts what it released.
 *  cq-flood   the host fills every free completion slot with entries that
 *             match nothing and interrupts every millisecond.  Storms still
 *             complete and drain, the bogus entries are counted, and a
 *             timer still fires in time.
 *  irq-storm  interrupts every millisecond with nothing new.  The guest stays
 *             responsive and reports them as not handled, so the interrupt
 *             core can see the storm.
 *
 * Without PVMM_FAULT the program skips: it needs a faulty host.
 */

#include "pvmm_latency.h"

static const char *fault(void)
{
	const char *f = getenv("PVMM_FAULT");

	return f && *f ? f : NULL;
}

/* A child that exits at once; returns how long fork to reap took, in ms. */
static uint64_t timed_child(struct __test_metadata *_metadata)
{
	uint64_t start = pvmm_now_ms();

	pvmm_run_child(_metadata, NULL, NULL);
	return pvmm_now_ms() - start;
}

static unsigned long slack_ms(void)
{
	/* TCG and a lockdep kernel make every step slow; generous by default. */
	return pvmm_env_ul("PVMM_FAULT_SLACK_MS", 3000, 0, 600000);
}

/* ---- never-ack ---- */

FIXTURE(never_ack) {
	struct pvmm_stats before, after;
};

FIXTURE_SETUP(never_ack)
{
	PVMM_REQUIRE_STATS();
	pvmm_snapshot(_metadata, &self->before);
}

FIXTURE_TEARDOWN(never_ack)
{
	pvmm_knob_write("mode", "async\n");
}

/* A blocking teardown on a dead host is bounded, and happens only once. */
TEST_F_TIMEOUT(never_ack, sync_gives_up_and_degrades, 120)
{
	unsigned long timeout = 200;
	char mode[32];
	uint64_t ms;

	ASSERT_EQ(0, pvmm_knob_write_ul("sync_timeout_ms", timeout));
	/* The limit keeps interrupts-off waits far from the watchdogs. */
	EXPECT_NE(0, pvmm_knob_write_ul("sync_timeout_ms", 10000));
	if (pvmm_knob_write("mode", "sync\n"))
		SKIP(return, "no sync mode (CONFIG_PVMM_SYNC_BASELINES=n)");
	pvmm_pin_to_this_cpu(_metadata);
	ms = timed_child(_metadata);
	ksft_print_msg("exit in sync mode took %llu ms (timeout %lu ms)\n",
		       (unsigned long long)ms, timeout);
	EXPECT_LE(ms, timeout + slack_ms());
	ASSERT_EQ(0, pvmm_read_text(PVMM_DEBUGFS_DIR "/mode", mode,
				    sizeof(mode)));
	EXPECT_STREQ("async", mode);
	/* Later exits no longer wait. */
	ms = timed_child(_metadata);
	EXPECT_LE(ms, slack_ms());
	pvmm_snapshot(_metadata, &self->after);
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "sync_timeouts"), 1ULL);
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "mode_degraded"), 1ULL);
	EXPECT_LE(pvmm_stat(_metadata, &self->after, "irq_off_max_us"),
		  (timeout + slack_ms()) * 1000ULL);
}

/* At the cap, fork fails after throttle_timeout_ms instead of hanging. */
TEST_F_TIMEOUT(never_ack, fork_fails_at_the_cap, 120)
{
	unsigned long limit = 300, i;
	uint64_t start, failed_after = 0;
	char cap[32], tmo[32];
	int status;
	pid_t pid;

	ASSERT_EQ(0, pvmm_read_text(PVMM_DEBUGFS_DIR "/cap_spaces", cap,
				    sizeof(cap)));
	ASSERT_EQ(0, pvmm_read_text(PVMM_DEBUGFS_DIR "/throttle_timeout_ms",
				    tmo, sizeof(tmo)));
	ASSERT_EQ(0, pvmm_knob_write("mode", "async\n"));
	ASSERT_EQ(0, pvmm_knob_write_ul("cap_spaces", 4));
	ASSERT_EQ(0, pvmm_knob_write_ul("throttle_timeout_ms", limit));
	for (i = 0; i < 12 && !failed_after; i++) {
		start = pvmm_now_ms();
		pid = fork();
		if (pid < 0) {
			EXPECT_EQ(ENOMEM, errno);
			failed_after = pvmm_now_ms() - start;
			break;
		}
		if (!pid)
			_exit(0);
		ASSERT_EQ(pid, waitpid(pid, &status, 0));
	}
	pvmm_knob_write("cap_spaces", cap);
	pvmm_knob_write("throttle_timeout_ms", tmo);
	ksft_print_msg("fork failed after %llu ms at child %lu (throttle_timeout_ms %lu)\n",
		       (unsigned long long)failed_after, i, limit);
	ASSERT_NE(0ULL, failed_after) {
		TH_LOG("fork never failed: the cap did not hold");
	}
	EXPECT_GE(failed_after + 50, limit);
	EXPECT_LE(failed_after, limit + slack_ms());
	pvmm_snapshot(_metadata, &self->after);
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "throttle_timeouts"), 1ULL);
}

/* Unloading gives up on the host within its deadline and says so. */
TEST_F_TIMEOUT(never_ack, unload_within_deadline, 120)
{
	unsigned long deadline = pvmm_env_ul("PVMM_DETACH_DEADLINE_MS", 10000,
					     1, 600000);
	unsigned int tries;
	uint64_t start, ms, parked;
	char why[256];
	int ret;

	if (pvmm_module_unavailable(why, sizeof(why)))
		SKIP(return, "%s", why);
	/* Something parked that the host will never acknowledge. */
	pvmm_run_child(_metadata, NULL, NULL);
	pvmm_snapshot(_metadata, &self->after);
	parked = pvmm_stat(_metadata, &self->after, "pgds_pending");
	ksft_print_msg("%llu pgds parked before unloading\n",
		       (unsigned long long)parked);
	EXPECT_GT(parked, 0ULL);
	start = pvmm_now_ms();
	ret = pvmm_module_unload(deadline + slack_ms(), &tries);
	ms = pvmm_now_ms() - start;
	ksft_print_msg("unload took %llu ms (deadline %lu ms)\n",
		       (unsigned long long)ms, deadline);
	ASSERT_EQ(0, ret);
	EXPECT_GE(ms + 100, deadline);
	EXPECT_LE(ms, deadline + slack_ms());
	/* Back for the tests that follow. */
	ASSERT_EQ(0, pvmm_module_load());
}

/* ---- cq-flood ---- */

FIXTURE(cq_flood) {
	struct pvmm_stats before, after;
	struct pvmm_storm_res *res;
};

FIXTURE_SETUP(cq_flood)
{
	PVMM_REQUIRE_STATS();
	self->res = pvmm_storm_res_alloc();
	ASSERT_NE(NULL, self->res);
}

FIXTURE_TEARDOWN(cq_flood)
{
	if (self->res)
		munmap(self->res, sizeof(*self->res));
}

/* Real work gets through the flood; every bogus entry is counted. */
TEST_F_TIMEOUT(cq_flood, storm_completes, 300)
{
	struct pvmm_storm_cfg cfg = {
		.procs = 48, .parallel = 4, .mib = 2,
		.fork_every = 4, .exec_every = 4,
	};
	uint64_t destroyed;

	ASSERT_EQ(0, pvmm_knob_write("mode", "async\n"));
	pvmm_snapshot(_metadata, &self->before);
	pvmm_storm_fit(&cfg);
	cfg.exec_path = pvmm_exec_path(&cfg.exec_arg);
	pvmm_storm_run(&cfg, self->res);
	EXPECT_EQ(cfg.procs, self->res->ok);
	pvmm_wait_drained(_metadata, &self->after, pvmm_drain_timeout_ms(),
			  NULL, 0);
	destroyed = pvmm_delta(_metadata, &self->before, &self->after,
			       "spaces_destroyed");
	ksft_print_msg("%llu teardowns in %llu ms beside %llu bogus completions\n",
		       (unsigned long long)destroyed,
		       (unsigned long long)self->res->ms,
		       (unsigned long long)pvmm_delta(_metadata,
						      &self->before,
						      &self->after,
						      "bad_completions"));
	EXPECT_GT(destroyed, 0ULL);
	EXPECT_EQ(destroyed, pvmm_delta(_metadata, &self->before, &self->after,
					"spaces_acked"));
	EXPECT_EQ(pvmm_delta(_metadata, &self->before, &self->after,
			     "pgds_parked"),
		  pvmm_delta(_metadata, &self->before, &self->after,
			     "pgds_released"));
	EXPECT_GT(pvmm_delta(_metadata, &self->before, &self->after,
			     "bad_completions"), 0ULL);
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "forced_releases"));
}

/* The flood does not keep the CPUs: a periodic timer still fires in time. */
TEST_F_TIMEOUT(cq_flood, timers_still_fire, 120)
{
	unsigned long bound = pvmm_env_ul("PVMM_FAULT_MAX_LATENCY_US", 100000,
					  1, 100000000);
	static uint64_t hist[PVMM_LAT_HIST_US];
	struct pvmm_lat_sum sum;
	struct pvmm_lat lat;

	ASSERT_EQ(0, pvmm_lat_start(&lat, 1000, 99));
	pvmm_sleep_ms(3000);
	ASSERT_EQ(0, pvmm_lat_stop(&lat));
	pvmm_lat_merge(&lat, hist, &sum);
	pvmm_lat_free(&lat);
	ksft_print_msg("under the flood: %llu wakeups, max %llu us, p99.9 %llu us\n",
		       (unsigned long long)sum.samples,
		       (unsigned long long)sum.max,
		       (unsigned long long)sum.p999);
	EXPECT_GT(sum.samples, 0ULL);
	EXPECT_LE(sum.max, bound) {
		TH_LOG("PVMM_FAULT_MAX_LATENCY_US=%lu", bound);
	}
}

/* ---- irq-storm ---- */

/* The "unhandled" count of the pvmm interrupt in /proc/irq/N/spurious. */
static int unhandled(unsigned long *count)
{
	char line[512], path[64];
	int irq = -1;
	FILE *f;

	f = fopen("/proc/interrupts", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "pvmm") && sscanf(line, " %d:", &irq) == 1)
			break;
	fclose(f);
	if (irq < 0)
		return -ENOENT;
	snprintf(path, sizeof(path), "/proc/irq/%d/spurious", irq);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	*count = ULONG_MAX;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "unhandled %lu", count) == 1)
			break;
	fclose(f);
	return *count == ULONG_MAX ? -ENODATA : 0;
}

FIXTURE(irq_storm) {
	struct pvmm_stats before, after;
};

FIXTURE_SETUP(irq_storm)
{
	PVMM_REQUIRE_STATS();
}

FIXTURE_TEARDOWN(irq_storm)
{
}

/* Empty interrupts are not claimed, and work goes on beside them. */
TEST_F_TIMEOUT(irq_storm, empty_interrupts_unclaimed, 120)
{
	unsigned long u0, u1;
	uint64_t irqs;
	unsigned int i;

	ASSERT_EQ(0, unhandled(&u0)) {
		TH_LOG("no /proc/irq/<pvmm>/spurious");
	}
	pvmm_snapshot(_metadata, &self->before);
	for (i = 0; i < 8; i++)
		EXPECT_LE(timed_child(_metadata), slack_ms());
	pvmm_sleep_ms(2000);
	pvmm_wait_drained(_metadata, &self->after, pvmm_drain_timeout_ms(),
			  NULL, 0);
	ASSERT_EQ(0, unhandled(&u1));
	irqs = pvmm_delta(_metadata, &self->before, &self->after, "irqs");
	/*
	 * Not a counter: the core restarts it after 100000 interrupts and
	 * after a pause of 100 ms between unhandled ones, so it can go down.
	 * A storm of unclaimed interrupts keeps it climbing meanwhile.
	 */
	ksft_print_msg("%llu interrupts; unhandled went from %lu to %lu\n",
		       (unsigned long long)irqs, u0, u1);
	EXPECT_GT(irqs, 100ULL);
	EXPECT_GT((long long)u1 - (long long)u0, (long long)irqs / 2);
	EXPECT_EQ(pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_destroyed"),
		  pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_acked"));
}

PVMM_KERNEL_FIXTURE

int main(int argc, char **argv)
{
	static const char *const map[][2] = {
		{ "never-ack", "never_ack" },
		{ "cq-flood", "cq_flood" },
		{ "irq-storm", "irq_storm" },
	};
	const char *f = fault();
	unsigned int i;

	if (argc == 1 && f) {
		/* Only the fixture of this host's fault, and the kernel check. */
		for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
			if (!strcmp(f, map[i][0])) {
				char *args[] = { argv[0], "-f", (char *)map[i][1],
						 "-f", "kernel", NULL };

				return pvmm_main(5, args, PVMM_NEED_STATS);
			}
		}
		ksft_print_header();
		ksft_exit_fail_msg("PVMM_FAULT=%s: no tests for that fault\n", f);
	}
	if (!f && !pvmm_only_listing(argc, argv)) {
		ksft_print_header();
		ksft_exit_skip("PVMM_FAULT is not set: these tests need a host started with --fault\n");
	}
	return pvmm_main(argc, argv, PVMM_NEED_STATS);
}

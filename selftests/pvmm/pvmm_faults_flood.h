/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pvmm_faults: floods of completions and interrupts (cq-flood,
 * irq-storm).
 *
 * Part of pvmm_faults.c, which includes it once, after its helpers: the
 * harness allows one translation unit per program.
 */

/* ---- cq-flood ---- */

STORM_FIXTURE(cq_flood)

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
			     "pgds_parked") +
		  pvmm_delta(_metadata, &self->before, &self->after,
			     "pgds_returned"),
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

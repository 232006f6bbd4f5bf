// SPDX-License-Identifier: GPL-2.0
/*
 * pvmm_credits: the credits at default settings, against the host of the
 * paper's trap: a teardown worker below the vCPUs' priority (pvmm-host
 * --worker-sched idle) while the guest keeps its vCPUs busy.  Without
 * credits, dead address spaces pile up on the starved worker; with them,
 * creation slows to the host's pace and nothing piles up beyond the caps.
 *
 * Needs a host of its own (check.sh runs it in the "credits" guest): with a
 * host that keeps up, the caps never bind and the first test fails.
 */

#include "pvmm_lib.h"

FIXTURE(credits) {
	struct pvmm_stats before, after;
	struct pvmm_storm_res *res;
	char cap[32];
	pid_t spinners[64];
	unsigned int nspin;
};

FIXTURE_SETUP(credits)
{
	PVMM_REQUIRE_STATS();
	self->res = pvmm_storm_res_alloc();
	ASSERT_NE(NULL, self->res);
	ASSERT_EQ(0, pvmm_knob_read("cap_spaces", self->cap,
				    sizeof(self->cap)));
	ASSERT_EQ(0, pvmm_knob_write("mode", "async\n"));
}

FIXTURE_TEARDOWN(credits)
{
	pvmm_spinners_stop(self->spinners, &self->nspin);
	pvmm_knob_write("cap_spaces", self->cap);
	if (self->res)
		munmap(self->res, sizeof(*self->res));
}

/*
 * Runs @procs small processes, @parallel at once, beside the spinners, and
 * the storm's snapshot before any drain; returns the storm's milliseconds.
 */
static uint64_t starved_storm(struct __test_metadata *_metadata,
			      FIXTURE_DATA(credits) *self,
			      unsigned long procs, unsigned long parallel)
{
	struct pvmm_storm_cfg cfg = {
		.procs = procs, .parallel = parallel, .mib = 1,
	};
	static const char *const logged[] = {
		"spaces_created", "spaces_acked", "throttle_events",
		"throttle_wait_us", "throttle_timeouts", "create_wait_us",
		"create_timeouts", "host_declared_dead", NULL,
	};

	pvmm_wait_drained(_metadata, &self->before, pvmm_drain_timeout_ms(),
			  NULL, 0);
	ASSERT_EQ(0, pvmm_reset_peaks());
	pvmm_snapshot(_metadata, &self->before);
	/* A loaded guest keeps every vCPU busy. */
	self->nspin = pvmm_spinners_start(self->spinners, 64, SCHED_OTHER);
	pvmm_storm_run(&cfg, self->res);
	pvmm_snapshot(_metadata, &self->after);
	pvmm_spinners_stop(self->spinners, &self->nspin);
	pvmm_log_deltas(_metadata, "storm", &self->before, &self->after,
			logged);
	ksft_print_msg("%lu processes in %llu ms; peak outstanding %llu, in flight %llu (host: %llu), cap_spaces %s\n",
		       procs, (unsigned long long)self->res->ms,
		       (unsigned long long)pvmm_stat(_metadata, &self->after,
						     "peak_outstanding"),
		       (unsigned long long)pvmm_stat(_metadata, &self->after,
						     "peak_in_flight"),
		       (unsigned long long)pvmm_stat(_metadata, &self->after,
						     "peak_host_held"),
		       self->cap);
	EXPECT_EQ(procs, self->res->ok) {
		TH_LOG("%llu forks failed (last: %s)",
		       (unsigned long long)self->res->fork_failed,
		       strerror(self->res->last_errno));
	}
	return self->res->ms;
}

/* Once the guest is idle the worker catches up, and no pgd went early. */
static void drains(struct __test_metadata *_metadata,
		   FIXTURE_DATA(credits) *self)
{
	uint64_t ms = pvmm_wait_drained(_metadata, &self->after,
					pvmm_drain_timeout_ms(), NULL, 0);

	ksft_print_msg("drained in %llu ms\n", (unsigned long long)ms);
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "forced_releases"));
}

/*
 * Default caps: creation waits at cap_spaces, so what the starved worker owes
 * stays bounded, and no fork fails or hangs.
 */
TEST_F_TIMEOUT(credits, bind_at_defaults, 600)
{
	unsigned long cap = strtoul(self->cap, NULL, 10);
	unsigned long parallel = 16;
	uint64_t ms, created, acked;

	ASSERT_GT(cap, 0UL);
	ms = starved_storm(_metadata, self, cap + 64, parallel);
	created = pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_created");
	acked = pvmm_delta(_metadata, &self->before, &self->after,
			   "spaces_acked");
	ksft_print_msg("created %.1f/s, the host acknowledged %.1f/s\n",
		       created * 1000.0 / (ms ? ms : 1),
		       acked * 1000.0 / (ms ? ms : 1));
	/* The caps bound, not the ring or the host's speed. */
	EXPECT_LT(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "throttle_events"));
	/* Spaces alive when the cap was reached may still exit past it. */
	EXPECT_GE(cap + parallel, pvmm_stat(_metadata, &self->after,
					    "peak_outstanding"));
	EXPECT_GE(cap, pvmm_stat(_metadata, &self->after, "peak_in_flight"));
	/* Creation went at the host's pace: beyond the cap, one per ack. */
	EXPECT_GE(acked + cap + parallel, created);
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "throttle_timeouts"));
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "create_timeouts"));
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "host_declared_dead"));
	drains(_metadata, self);
}

/*
 * The caps lifted: nothing slows creation down, and what the starved worker
 * owes grows past the default caps.  The trap the credits close.
 */
TEST_F_TIMEOUT(credits, lifted_caps_pile_up, 600)
{
	unsigned long cap = strtoul(self->cap, NULL, 10);

	ASSERT_EQ(0, pvmm_knob_write_ul("cap_spaces", 1UL << 20));
	starved_storm(_metadata, self, cap + 64, 16);
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "throttle_events"));
	EXPECT_LT(cap, pvmm_stat(_metadata, &self->after, "peak_outstanding"));
	drains(_metadata, self);
}

PVMM_TEST_MAIN(PVMM_NEED_STATS)

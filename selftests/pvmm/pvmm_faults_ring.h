/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pvmm_faults: a broken ring, a stalled host and late completions
 * (break-ring, break-ring-back, stall, late-ack).
 *
 * Part of pvmm_faults.c, which includes it once, after its helpers: the
 * harness allows one translation unit per program.
 */

/* ---- break-ring:N, break-ring-back:N ---- */

STORM_FIXTURE(break_ring)

/* The ring stops at the impossible index and a reset restarts it. */
TEST_F_TIMEOUT(break_ring, reset_recovers, 300)
{
	uint64_t resets;

	storm_drains(_metadata, self->res, &self->before, &self->after, false);
	resets = pvmm_delta(_metadata, &self->before, &self->after, "resets");
	ksft_print_msg("%llu protocol errors, %llu resets, %llu pgds released on a reset\n",
		       (unsigned long long)pvmm_delta(_metadata, &self->before,
						      &self->after,
						      "protocol_errors"),
		       (unsigned long long)resets,
		       (unsigned long long)pvmm_delta(_metadata, &self->before,
						      &self->after,
						      "reset_releases"));
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "protocol_errors"), 1ULL);
	EXPECT_GE(resets, 1ULL);
	/*
	 * The spaces in use at the reset, this test's own at least, got their
	 * host objects again: their DESTROYs find them (a host without the
	 * object answers with an error status).
	 */
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_recreated"), 1ULL);
	/* The host breaks the ring once: the next storm sees a sound one. */
	storm_drains(_metadata, self->res, &self->before, &self->after, false);
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "protocol_errors"));
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, &self->after, "host_errors"));
}

/* After the recovery, unloading is as quick as ever. */
TEST_F_TIMEOUT(break_ring, unload_after_recovery, 120)
{
	char why[256];
	uint64_t ms;

	if (pvmm_module_unavailable(why, sizeof(why)))
		SKIP(return, "%s", why);
	ms = reload_ms(_metadata, 1000);
	ksft_print_msg("unload took %llu ms\n", (unsigned long long)ms);
	EXPECT_LE(ms, 1000 + slack_ms());
}

/* ---- stall:MS ---- */

FIXTURE(stall) {
	struct pvmm_stats before, after;
	struct pvmm_storm_res *res;
};

FIXTURE_SETUP(stall)
{
	PVMM_REQUIRE_STATS();
	self->res = pvmm_storm_res_alloc();
	ASSERT_NE(NULL, self->res);
}

FIXTURE_TEARDOWN(stall)
{
	if (self->res)
		munmap(self->res, sizeof(*self->res));
	pvmm_knob_write("cap_spaces", "256\n");
	pvmm_knob_write("host_timeout_ms", "10000\n");
}

/*
 * Declared dead during the stall, alive again after it; nothing is lost.  A
 * creation waiting when the host is taken for dead fails.
 */
TEST_F_TIMEOUT(stall, dead_then_alive, 300)
{
	ASSERT_EQ(0, pvmm_knob_write_ul("cap_spaces", 2));
	ASSERT_EQ(0, pvmm_knob_write_ul("host_timeout_ms", 500));
	storm_drains(_metadata, self->res, &self->before, &self->after, true);
	ksft_print_msg("storm of %llu ms; host declared dead %llu time(s), throttled %llu ms\n",
		       (unsigned long long)self->res->ms,
		       (unsigned long long)pvmm_delta(_metadata, &self->before,
						      &self->after,
						      "host_declared_dead"),
		       (unsigned long long)pvmm_delta(_metadata, &self->before,
						      &self->after,
						      "throttle_wait_us") / 1000);
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "host_declared_dead"), 1ULL);
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, &self->after, "host_dead"));
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "throttle_timeouts"));
	EXPECT_EQ(pvmm_stat(_metadata, &self->after, "spaces_destroyed"),
		  pvmm_stat(_metadata, &self->after, "spaces_acked"));
}

/* ---- late-ack:MS ---- */

FIXTURE(late_ack) {
	struct pvmm_stats before, after;
};

FIXTURE_SETUP(late_ack)
{
	PVMM_REQUIRE_STATS();
}

FIXTURE_TEARDOWN(late_ack)
{
}

/*
 * Completions held past the detach deadline: the reset at detach drops them,
 * so the next instance neither sees them nor releases anything early.
 */
TEST_F_TIMEOUT(late_ack, reload_sees_no_stale_completion, 300)
{
	unsigned long deadline = pvmm_env_ul("PVMM_DETACH_DEADLINE_MS", 10000,
					     1, 600000);
	char why[256];
	uint64_t ms;

	if (pvmm_module_unavailable(why, sizeof(why)))
		SKIP(return, "%s", why);
	ASSERT_EQ(0, pvmm_knob_write("mode", "async\n"));
	pvmm_run_child(_metadata, NULL, NULL);
	pvmm_run_child(_metadata, NULL, NULL);
	ms = reload_ms(_metadata, deadline);
	ksft_print_msg("unload took %llu ms (deadline %lu ms)\n",
		       (unsigned long long)ms, deadline);
	EXPECT_LE(ms, deadline + slack_ms());
	/* A new instance: its counters start at zero. */
	pvmm_snapshot(_metadata, &self->before);
	pvmm_run_child(_metadata, NULL, NULL);
	pvmm_wait_drained(_metadata, &self->after, pvmm_drain_timeout_ms(),
			  NULL, 0);
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, &self->after, "stale_completions"));
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, &self->after, "bad_completions"));
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, &self->after, "forced_releases"));
	EXPECT_EQ(pvmm_stat(_metadata, &self->after, "spaces_destroyed"),
		  pvmm_stat(_metadata, &self->after, "spaces_acked"));
}

/*
 * Unbinding the device in the middle of a storm, with every acknowledgement
 * late: the storm goes on throughout, the unbind keeps to its deadline, and
 * the new instance after the bind starts clean.
 */
TEST_F_TIMEOUT(late_ack, unbind_bind_during_storm, 300)
{
	unsigned long deadline = pvmm_env_ul("PVMM_DETACH_DEADLINE_MS", 10000,
					     1, 600000);
	struct pvmm_storm_cfg cfg = {
		.parallel = 4, .mib = 2, .fork_every = 4, .exec_every = 4,
	};
	struct pvmm_storm_res *res = pvmm_storm_res_alloc();
	uint64_t start, ms;
	char bdf[64];
	int status;
	pid_t runner;

	ASSERT_NE(NULL, res);
	ASSERT_TRUE(pvmm_pci_bound(bdf, sizeof(bdf)));
	ASSERT_EQ(0, pvmm_knob_write("mode", "async\n"));
	pvmm_storm_fit(&cfg);
	cfg.procs = 0;	/* until told to stop */
	cfg.exec_path = pvmm_exec_path(&cfg.exec_arg);
	runner = fork();
	ASSERT_LE(0, runner);
	if (!runner) {
		pvmm_storm_run(&cfg, res);
		_exit(0);
	}
	pvmm_sleep_ms(1000);
	start = pvmm_now_ms();
	EXPECT_EQ(0, pvmm_write_text(PVMM_PCI_DRIVER_DIR, "unbind", bdf));
	ms = pvmm_now_ms() - start;
	pvmm_sleep_ms(500);
	EXPECT_EQ(0, pvmm_write_text(PVMM_PCI_DRIVER_DIR, "bind", bdf));
	pvmm_sleep_ms(1000);
	__atomic_store_n(&res->stop, 1, __ATOMIC_RELEASE);
	ASSERT_EQ(runner, waitpid(runner, &status, 0));
	ksft_print_msg("unbind took %llu ms (deadline %lu ms) during a storm of %llu processes\n",
		       (unsigned long long)ms, deadline,
		       (unsigned long long)res->reaped);
	EXPECT_LE(ms, deadline + slack_ms());
	EXPECT_GT(res->ok, 0ULL);
	EXPECT_EQ(res->reaped, res->ok);
	EXPECT_EQ(0ULL, res->fork_failed);
	/* The instance bound afterwards. */
	pvmm_wait_drained(_metadata, &self->after, pvmm_drain_timeout_ms(),
			  NULL, 0);
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, &self->after, "bad_completions"));
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, &self->after, "stale_completions"));
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, &self->after, "forced_releases"));
	munmap(res, sizeof(*res));
}

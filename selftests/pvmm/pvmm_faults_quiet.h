/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pvmm_faults: a host that never interrupts (no-irq), one that serves
 * nothing (stopped) and one that never says it is idle (no-wakeup).
 *
 * Part of pvmm_faults.c, which includes it once, after its helpers: the
 * harness allows one translation unit per program.
 */

/* ---- no-irq ---- */

STORM_FIXTURE(no_irq)

/*
 * Completions are published and no interrupt says so: the guest must still
 * find them, by polling while work is outstanding, and a healthy host must
 * not be taken for dead meanwhile, not even by throttled forks.
 */
TEST_F_TIMEOUT(no_irq, polled_without_interrupts, 300)
{
	char cap[32], htmo[32];

	ASSERT_EQ(0, pvmm_knob_read("cap_spaces", cap, sizeof(cap)));
	ASSERT_EQ(0, pvmm_knob_read("host_timeout_ms", htmo, sizeof(htmo)));
	storm_drains(_metadata, self->res, &self->before, &self->after);
	/* At a small cap, throttled forks wait for completions only a poll sees. */
	ASSERT_EQ(0, pvmm_knob_write_ul("cap_spaces", 2));
	ASSERT_EQ(0, pvmm_knob_write_ul("host_timeout_ms", 2000));
	storm_drains(_metadata, self->res, &self->before, &self->after);
	pvmm_knob_write("cap_spaces", cap);
	pvmm_knob_write("host_timeout_ms", htmo);
	ksft_print_msg("storm of %llu ms; %llu polls, %llu irqs, throttled %llu ms\n",
		       (unsigned long long)self->res->ms,
		       (unsigned long long)pvmm_delta(_metadata, &self->before,
						      &self->after,
						      "completion_polls"),
		       (unsigned long long)pvmm_delta(_metadata, &self->before,
						      &self->after, "irqs"),
		       (unsigned long long)pvmm_delta(_metadata, &self->before,
						      &self->after,
						      "throttle_wait_us") / 1000);
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "throttle_events"), 1ULL);
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "host_declared_dead"));
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "throttle_timeouts"));
}

/* ---- stopped ---- */

/* The host's ring size (check.sh: --sq-entries 8). */
#define PVMM_STOPPED_RING 8

DEAD_HOST_FIXTURE(stopped)

/*
 * The host took nothing: its small ring is full of CREATEs and every DESTROY
 * waits in the backlog, so none is in flight. The work it owes still arms
 * the watchdog: forks past the cap wait host_timeout_ms at most, not
 * throttle_timeout_ms each.
 */
TEST_F_TIMEOUT(stopped, dead_host_stops_throttling, 120)
{
	pid_t sleepers[PVMM_STOPPED_RING];
	int status, go[2];
	unsigned int i;

	ASSERT_EQ(0, pvmm_knob_write("mode", "async\n"));
	/* Live processes whose CREATEs fill the ring, then their DESTROYs. */
	ASSERT_EQ(0, pipe(go));
	for (i = 0; i < PVMM_STOPPED_RING; i++) {
		sleepers[i] = fork();
		ASSERT_LE(0, sleepers[i]);
		if (!sleepers[i]) {
			char c;

			close(go[1]);
			_exit(read(go[0], &c, 1) == 0 ? 0 : 1);
		}
	}
	close(go[0]);
	close(go[1]);
	for (i = 0; i < PVMM_STOPPED_RING; i++)
		ASSERT_EQ(sleepers[i], waitpid(sleepers[i], &status, 0));
	forks_past_dead_host(_metadata, &self->before, &self->after);
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, &self->after, "in_flight"));
}

/* ---- no-wakeup ---- */

STORM_FIXTURE(no_wakeup)

/*
 * Without FEATURE_NEED_WAKEUP the host never says it is idle: the guest
 * rings for every batch, and a drained host is one that took everything.
 */
TEST_F_TIMEOUT(no_wakeup, storm_and_quick_unload, 300)
{
	char why[256];
	uint64_t ms;

	storm_drains(_metadata, self->res, &self->before, &self->after);
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "doorbells_suppressed"));
	if (pvmm_module_unavailable(why, sizeof(why)))
		SKIP(return, "%s", why);
	ms = reload_ms(_metadata, 1000);
	ksft_print_msg("unload took %llu ms\n", (unsigned long long)ms);
	EXPECT_LE(ms, 1000 + slack_ms());
}

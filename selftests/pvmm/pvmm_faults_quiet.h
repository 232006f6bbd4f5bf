/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pvmm_faults: a host that never interrupts (no-irq), one that stops
 * serving (stop:N) and one that never says it is idle (no-wakeup).
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

/* ---- stop:N ---- */

/* Longer than the host's ring (check.sh: --sq-entries 8). */
#define PVMM_STOP_SLEEPERS 10

DEAD_HOST_FIXTURE(stop)

/* Waits until the host has answered every DESTROY handed to it. */
static void wait_none_in_flight(struct __test_metadata *_metadata,
				struct pvmm_stats *s)
{
	uint64_t end = pvmm_now_ms() + slack_ms();

	do {
		pvmm_snapshot(_metadata, s);
		if (!pvmm_stat(_metadata, s, "in_flight"))
			return;
		pvmm_sleep_ms(20);
	} while (pvmm_now_ms() < end);
	ASSERT_EQ(0ULL, pvmm_stat(_metadata, s, "in_flight"));
}

/*
 * The host stops after N requests, the last of them CREATEs, with nothing
 * in flight; then the guest's CREATEs fill its ring and every DESTROY waits
 * in the backlog, none in flight.  The work it owes still arms the
 * watchdog: forks past the cap wait host_timeout_ms at most, not
 * throttle_timeout_ms each.
 */
TEST_F_TIMEOUT(stop, dead_host_stops_throttling, 120)
{
	unsigned long n = strtoul(strchr(fault(), ':') + 1, NULL, 10);
	pid_t sleepers[PVMM_STOP_SLEEPERS];
	uint64_t sent;
	int status, go[2];
	unsigned int i;

	ASSERT_EQ(0, pvmm_knob_write("mode", "async\n"));
	/* Up to two requests short of N, each DESTROY answered. */
	for (;;) {
		wait_none_in_flight(_metadata, &self->after);
		sent = pvmm_stat(_metadata, &self->after, "submissions");
		ASSERT_LT(sent, n);
		if (n - sent <= 2)
			break;
		pvmm_run_child(_metadata, NULL, NULL);
	}
	/* Live processes: their CREATEs stop the host, then fill its ring. */
	ASSERT_EQ(0, pipe(go));
	for (i = 0; i < PVMM_STOP_SLEEPERS; i++) {
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
	for (i = 0; i < PVMM_STOP_SLEEPERS; i++)
		ASSERT_EQ(sleepers[i], waitpid(sleepers[i], &status, 0));
	forks_past_dead_host(_metadata, &self->before, &self->after);
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, &self->after, "in_flight"));
}

/*
 * A fatal signal to the unloading task ends the detach early, and what the
 * host never acknowledged stays unreleased: freed, the host might still read
 * it.
 */
TEST_F_TIMEOUT(stop, killed_unload_frees_nothing_early, 120)
{
	uint64_t seq0, seq, start, ms;
	unsigned int tries;
	char why[256];
	int status;
	pid_t pid;

	if (pvmm_module_unavailable(why, sizeof(why)))
		SKIP(return, "%s", why);
	ASSERT_EQ(0, pvmm_knob_write("mode", "async\n"));
	/* Something parked (a child's pgd is freed when its mm is dropped). */
	for (tries = 0; tries < 50; tries++) {
		pvmm_run_child(_metadata, NULL, NULL);
		pvmm_snapshot(_metadata, &self->after);
		if (pvmm_stat(_metadata, &self->after, "pgds_pending"))
			break;
		pvmm_sleep_ms(100);
	}
	ASSERT_GT(pvmm_stat(_metadata, &self->after, "pgds_pending"), 0ULL);
	ASSERT_LE(0, pvmm_kmsg_find(0, &seq0, false, ""));
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid)
		_exit(pvmm_module_unload(60000, &tries) ? 1 : 0);
	/* Well inside the drain, which a dead host makes last its deadline. */
	pvmm_sleep_ms(1000);
	start = pvmm_now_ms();
	ASSERT_EQ(0, kill(pid, SIGKILL));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ms = pvmm_now_ms() - start;
	ksft_print_msg("SIGKILL ended the unload in %llu ms\n",
		       (unsigned long long)ms);
	EXPECT_LE(ms, slack_ms());
	EXPECT_EQ(1, pvmm_kmsg_find(seq0, &seq, true, "unreleased"));
	EXPECT_EQ(0, pvmm_kmsg_find(seq0, &seq, true, "pvmm: released"));
	/* Back for the tests that follow; the unload may not have finished. */
	(void)pvmm_module_unload(slack_ms(), &tries);
	ASSERT_EQ(0, pvmm_module_load());
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

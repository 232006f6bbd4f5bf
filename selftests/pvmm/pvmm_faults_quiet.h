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
	storm_drains(_metadata, self->res, &self->before, &self->after, false);
	/* At a small cap, throttled forks wait for completions only a poll sees. */
	ASSERT_EQ(0, pvmm_knob_write_ul("cap_spaces", 2));
	ASSERT_EQ(0, pvmm_knob_write_ul("host_timeout_ms", 2000));
	storm_drains(_metadata, self->res, &self->before, &self->after, false);
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
 * The host stops after N requests.  A fork waits for its CREATE, so the
 * first one the host never answers fails with ENOMEM once the host is taken
 * for dead (host_timeout_ms), not after create_timeout_ms; its DESTROY
 * follows the CREATE the host may have seen, and its pgd waits for that.
 * Later forks run without the host, at once.
 */
TEST_F_TIMEOUT(stop, dead_host_fails_one_creation, 120)
{
	unsigned long n = strtoul(strchr(fault(), ':') + 1, NULL, 10);
	unsigned long host_timeout = 1000;
	uint64_t sent, start, ms;
	int status, i, failed = -1;
	pid_t pid;

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
	pvmm_snapshot(_metadata, &self->before);
	ASSERT_EQ(0, pvmm_knob_write_ul("host_timeout_ms", host_timeout));
	start = pvmm_now_ms();
	for (i = 0; i < 4 && failed < 0; i++) {
		pid = fork();
		if (pid < 0) {
			EXPECT_EQ(ENOMEM, errno);
			failed = i;
			break;
		}
		if (!pid)
			_exit(0);
		ASSERT_EQ(pid, waitpid(pid, &status, 0));
	}
	ms = pvmm_now_ms() - start;
	ksft_print_msg("fork %d failed after %llu ms (host_timeout_ms %lu)\n",
		       failed, (unsigned long long)ms, host_timeout);
	ASSERT_LE(0, failed);
	EXPECT_LE(ms, host_timeout + slack_ms());
	start = pvmm_now_ms();
	for (i = 0; i < 6; i++)
		pvmm_run_child(_metadata, NULL, NULL);
	ms = pvmm_now_ms() - start;
	EXPECT_LE(ms, slack_ms());
	pvmm_snapshot(_metadata, &self->after);
	EXPECT_EQ(1ULL, pvmm_stat(_metadata, &self->after, "host_dead"));
	EXPECT_EQ(1ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "create_timeouts"));
	EXPECT_LE(6ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "spaces_hostless"));
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "forced_releases"));
	/* The failed fork's pgd, at least, waits for its DESTROY. */
	EXPECT_GT(pvmm_stat(_metadata, &self->after, "pgds_pending"), 0ULL);
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
	/*
	 * The new instance learns that the host is dead from its first
	 * creation, which fails; the forks after it run without the host.
	 */
	ASSERT_EQ(0, pvmm_knob_write_ul("host_timeout_ms", 1000));
	start = pvmm_now_ms();
	pid = fork();
	if (!pid)
		_exit(0);
	ms = pvmm_now_ms() - start;
	EXPECT_EQ(-1, pid);
	EXPECT_EQ(ENOMEM, errno);
	EXPECT_LE(ms, 1000 + slack_ms());
	if (pid > 0)
		waitpid(pid, &status, 0);
	pvmm_run_child(_metadata, NULL, NULL);
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

	storm_drains(_metadata, self->res, &self->before, &self->after, false);
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "doorbells_suppressed"));
	if (pvmm_module_unavailable(why, sizeof(why)))
		SKIP(return, "%s", why);
	ms = reload_ms(_metadata, 1000);
	ksft_print_msg("unload took %llu ms\n", (unsigned long long)ms);
	EXPECT_LE(ms, 1000 + slack_ms());
}

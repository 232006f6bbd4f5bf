/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pvmm_faults: a dead host (never-ack).
 *
 * Part of pvmm_faults.c, which includes it once, after its helpers: the
 * harness allows one translation unit per program.
 */

/* ---- never-ack ---- */

/* A fixture whose tests change the throttle's settings, restored after each. */
#define DEAD_HOST_FIXTURE(name)						\
	FIXTURE(name) {							\
		struct pvmm_stats before, after;			\
		char cap[32], tmo[32], htmo[32];			\
	};								\
	FIXTURE_SETUP(name)						\
	{								\
		PVMM_REQUIRE_STATS();					\
		ASSERT_EQ(0, pvmm_knob_read("cap_spaces", self->cap,	\
					    sizeof(self->cap)));	\
		ASSERT_EQ(0, pvmm_knob_read("throttle_timeout_ms",	\
					    self->tmo, sizeof(self->tmo))); \
		ASSERT_EQ(0, pvmm_knob_read("host_timeout_ms",		\
					    self->htmo, sizeof(self->htmo))); \
		pvmm_snapshot(_metadata, &self->before);		\
	}								\
	FIXTURE_TEARDOWN(name)						\
	{								\
		pvmm_knob_write("mode", "async\n");			\
		pvmm_knob_write("cap_spaces", self->cap);		\
		pvmm_knob_write("throttle_timeout_ms", self->tmo);	\
		pvmm_knob_write("host_timeout_ms", self->htmo);		\
	}

/*
 * Forks past a cap of 2 with a host that answers nothing: each waits until
 * the host is taken for dead, after host_timeout_ms, and none fails.
 */
static void forks_past_dead_host(struct __test_metadata *_metadata,
				 struct pvmm_stats *before,
				 struct pvmm_stats *after)
{
	unsigned long host_timeout = 1000, i;
	uint64_t start, ms;
	int status;
	pid_t pid;

	ASSERT_EQ(0, pvmm_knob_write_ul("cap_spaces", 2));
	ASSERT_EQ(0, pvmm_knob_write_ul("throttle_timeout_ms", 20000));
	ASSERT_EQ(0, pvmm_knob_write_ul("host_timeout_ms", host_timeout));
	start = pvmm_now_ms();
	for (i = 0; i < 6; i++) {
		pid = fork();
		ASSERT_LE(0, pid) {
			TH_LOG("fork %lu failed: %s", i, strerror(errno));
		}
		if (!pid)
			_exit(0);
		ASSERT_EQ(pid, waitpid(pid, &status, 0));
	}
	ms = pvmm_now_ms() - start;
	pvmm_snapshot(_metadata, after);
	ksft_print_msg("6 forks past the cap took %llu ms (host_timeout_ms %lu); %llu in flight, %llu in the backlog\n",
		       (unsigned long long)ms, host_timeout,
		       (unsigned long long)pvmm_stat(_metadata, after,
						     "in_flight"),
		       (unsigned long long)pvmm_stat(_metadata, after,
						     "backlog"));
	EXPECT_LE(ms, host_timeout + slack_ms());
	EXPECT_EQ(1ULL, pvmm_stat(_metadata, after, "host_dead"));
	EXPECT_GE(pvmm_delta(_metadata, before, after, "host_declared_dead"),
		  1ULL);
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, before, after,
				   "throttle_timeouts"));
	/* Nothing was released without an acknowledgement. */
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, before, after,
				   "forced_releases"));
	EXPECT_GT(pvmm_stat(_metadata, after, "pgds_pending"), 0ULL);
}

DEAD_HOST_FIXTURE(never_ack)

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
	ASSERT_EQ(0, pvmm_knob_read("mode", mode, sizeof(mode)));
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
	int status;
	pid_t pid;

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

/*
 * A forker throttled at the cap: SIGSTOP and SIGCONT do not end its wait,
 * SIGKILL does, at once.
 */
TEST_F_TIMEOUT(never_ack, kill_throttled_forker, 120)
{
	static const char *const gauges[] = {
		"outstanding", "in_flight", "ring_broken", "resetting",
		"host_dead", "hooks_active", "spaces_live", "cap_spaces", NULL,
	};
	unsigned long bound = pvmm_env_ul("PVMM_KILL_EXIT_MS", 200, 1, 60000);
	int pipefd[2], gofd[2], status;
	uint64_t start, ms;
	struct pollfd pfd;
	pid_t pid;

	ASSERT_EQ(0, pvmm_knob_write("mode", "async\n"));
	ASSERT_EQ(0, pvmm_knob_write_ul("throttle_timeout_ms", 60000));
	ASSERT_EQ(0, pvmm_knob_write_ul("host_timeout_ms", 60000));
	/* Two teardowns the host never answers, then a cap of one. */
	pvmm_run_child(_metadata, NULL, NULL);
	pvmm_run_child(_metadata, NULL, NULL);
	/* The forker exists before the cap drops: its own fork would wait. */
	ASSERT_EQ(0, pipe(pipefd));
	ASSERT_EQ(0, pipe(gofd));
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		char go;
		pid_t c;

		if (read(gofd[0], &go, 1) != 1)
			_exit(2);
		/* Blocks in the throttle; reports if fork ever returns. */
		c = fork();
		if (!c)
			_exit(0);
		(void)!write(pipefd[1], "x", 1);
		_exit(0);
	}
	close(pipefd[1]);
	close(gofd[0]);
	ASSERT_EQ(0, pvmm_knob_write_ul("cap_spaces", 1));
	pvmm_snapshot(_metadata, &self->after);
	pvmm_log_values("before the throttled fork", &self->after, gauges);
	ASSERT_EQ(1, write(gofd[1], "g", 1));
	close(gofd[1]);
	pfd = (struct pollfd){ .fd = pipefd[0], .events = POLLIN };
	EXPECT_EQ(0, poll(&pfd, 1, 500)) {
		TH_LOG("the fork at the cap returned");
	}
	ASSERT_EQ(0, kill(pid, SIGSTOP));
	pvmm_sleep_ms(200);
	ASSERT_EQ(0, kill(pid, SIGCONT));
	EXPECT_EQ(0, poll(&pfd, 1, 500)) {
		TH_LOG("SIGSTOP/SIGCONT ended the throttled wait");
	}
	start = pvmm_now_ms();
	ASSERT_EQ(0, kill(pid, SIGKILL));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ms = pvmm_now_ms() - start;
	close(pipefd[0]);
	ksft_print_msg("SIGKILL ended the throttled fork in %llu ms\n",
		       (unsigned long long)ms);
	EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	EXPECT_LE(ms, bound) {
		TH_LOG("PVMM_KILL_EXIT_MS=%lu", bound);
	}
}

/* A host that answers nothing for host_timeout_ms stops throttling creation. */
TEST_F_TIMEOUT(never_ack, dead_host_stops_throttling, 120)
{
	ASSERT_EQ(0, pvmm_knob_write("mode", "async\n"));
	forks_past_dead_host(_metadata, &self->before, &self->after);
}

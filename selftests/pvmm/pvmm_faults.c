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
 *  dup-ack    every completion twice; forged-ack: a DESTROY completion for
 *             every CREATE, before the host even took the DESTROY.  Each
 *             extra one is counted and rejected, and nothing is released
 *             early (the host's release audit checks that too).
 *  break-ring:N, break-ring-back:N
 *             after N requests the host publishes an impossible index.  The
 *             guest stops the ring, the reset handshake restarts it, pgds
 *             parked meanwhile are released on the reset, and the next
 *             storm and an unload work as before.
 *  stall:MS   the host stops for MS ms after the first DESTROY.  With a
 *             short host_timeout_ms the guest declares it dead, stops
 *             throttling, and recovers when it answers again.
 *  late-ack:MS
 *             every completion arrives MS ms late, beyond the detach
 *             deadline.  Unloading waits for the deadline, the reset then
 *             releases what is parked, and the next instance sees no stale
 *             completion.
 *
 * Without PVMM_FAULT the program skips: it needs a faulty host.
 */

#include "pvmm_latency.h"

#include <poll.h>

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

/*
 * A fixture that runs storms: stats snapshots around them and the shared
 * area their children count in.
 */
#define STORM_FIXTURE(name)						\
	FIXTURE(name) {							\
		struct pvmm_stats before, after;			\
		struct pvmm_storm_res *res;				\
	};								\
	FIXTURE_SETUP(name)						\
	{								\
		PVMM_REQUIRE_STATS();					\
		self->res = pvmm_storm_res_alloc();			\
		ASSERT_NE(NULL, self->res);				\
	}								\
	FIXTURE_TEARDOWN(name)						\
	{								\
		if (self->res)						\
			munmap(self->res, sizeof(*self->res));		\
	}

static unsigned long slack_ms(void)
{
	/* TCG and a lockdep kernel make every step slow; generous by default. */
	return pvmm_env_ul("PVMM_FAULT_SLACK_MS", 3000, 0, 600000);
}

/* ---- never-ack ---- */

FIXTURE(never_ack) {
	struct pvmm_stats before, after;
	/* The settings the tests change, restored after each. */
	char cap[32], tmo[32], htmo[32];
};

FIXTURE_SETUP(never_ack)
{
	PVMM_REQUIRE_STATS();
	ASSERT_EQ(0, pvmm_knob_read("cap_spaces", self->cap, sizeof(self->cap)));
	ASSERT_EQ(0, pvmm_knob_read("throttle_timeout_ms", self->tmo,
				    sizeof(self->tmo)));
	ASSERT_EQ(0, pvmm_knob_read("host_timeout_ms", self->htmo,
				    sizeof(self->htmo)));
	pvmm_snapshot(_metadata, &self->before);
}

FIXTURE_TEARDOWN(never_ack)
{
	pvmm_knob_write("mode", "async\n");
	pvmm_knob_write("cap_spaces", self->cap);
	pvmm_knob_write("throttle_timeout_ms", self->tmo);
	pvmm_knob_write("host_timeout_ms", self->htmo);
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
	unsigned long host_timeout = 1000, i;
	uint64_t start, ms;
	int status;
	pid_t pid;

	ASSERT_EQ(0, pvmm_knob_write("mode", "async\n"));
	ASSERT_EQ(0, pvmm_knob_write_ul("cap_spaces", 2));
	ASSERT_EQ(0, pvmm_knob_write_ul("throttle_timeout_ms", 60000));
	ASSERT_EQ(0, pvmm_knob_write_ul("host_timeout_ms", host_timeout));
	/* Past the cap: each fork waits until the host is taken for dead. */
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
	pvmm_snapshot(_metadata, &self->after);
	ksft_print_msg("6 forks past the cap took %llu ms (host_timeout_ms %lu)\n",
		       (unsigned long long)ms, host_timeout);
	EXPECT_LE(ms, host_timeout + slack_ms());
	EXPECT_EQ(1ULL, pvmm_stat(_metadata, &self->after, "host_dead"));
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "host_declared_dead"), 1ULL);
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "throttle_timeouts"));
	/* Nothing was released without an acknowledgement. */
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "forced_releases"));
	EXPECT_GT(pvmm_stat(_metadata, &self->after, "pgds_pending"), 0ULL);
}

/* ---- shared by the faults below ---- */

/*
 * A storm in async mode that must complete and drain; every pgd handed over is
 * released, none without an acknowledgement (a reset counts as one).
 */
static void storm_drains(struct __test_metadata *_metadata,
			 struct pvmm_storm_res *res, struct pvmm_stats *before,
			 struct pvmm_stats *after)
{
	static const char *const logged[] = {
		"spaces_created", "spaces_untracked", "spaces_destroyed",
		"spaces_acked", "untracked_exits", "fallback_exits",
		"pgds_parked", "pgds_returned", "pgds_released",
		"bad_completions", "protocol_errors", "resets",
		"reset_releases", "forced_releases", NULL,
	};
	struct pvmm_storm_cfg cfg = {
		.procs = 32, .parallel = 4, .mib = 2,
		.fork_every = 4, .exec_every = 4,
	};

	ASSERT_EQ(0, pvmm_knob_write("mode", "async\n"));
	memset(res, 0, sizeof(*res));
	pvmm_snapshot(_metadata, before);
	pvmm_storm_fit(&cfg);
	cfg.exec_path = pvmm_exec_path(&cfg.exec_arg);
	pvmm_storm_run(&cfg, res);
	EXPECT_EQ(cfg.procs, res->ok);
	pvmm_wait_drained(_metadata, after, pvmm_drain_timeout_ms(), NULL, 0);
	pvmm_log_deltas(_metadata, "storm", before, after, logged);
	EXPECT_GT(pvmm_delta(_metadata, before, after, "spaces_destroyed"),
		  0ULL);
	/*
	 * Totals of this driver instance, not deltas: work from before the
	 * storm may complete during it (a stalled host, say).
	 */
	EXPECT_EQ(pvmm_stat(_metadata, after, "pgds_parked") +
		  pvmm_stat(_metadata, after, "pgds_returned"),
		  pvmm_stat(_metadata, after, "pgds_released"));
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, after, "forced_releases"));
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, after, "ring_broken"));
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, after, "resetting"));
}

/* Unloads and loads the module; returns how long the unload took, in ms. */
static uint64_t reload_ms(struct __test_metadata *_metadata,
			  unsigned long deadline)
{
	unsigned int tries;
	uint64_t start, ms;

	start = pvmm_now_ms();
	EXPECT_EQ(0, pvmm_module_unload(deadline + slack_ms(), &tries));
	ms = pvmm_now_ms() - start;
	EXPECT_EQ(0, pvmm_module_load());
	return ms;
}

/* ---- dup-ack, forged-ack ---- */

STORM_FIXTURE(extra_acks)

/* Every extra completion is rejected; the real ones still count once. */
TEST_F_TIMEOUT(extra_acks, rejected_and_counted, 300)
{
	uint64_t destroyed, created, bad;

	storm_drains(_metadata, self->res, &self->before, &self->after);
	destroyed = pvmm_delta(_metadata, &self->before, &self->after,
			       "spaces_destroyed");
	created = pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_created");
	bad = pvmm_delta(_metadata, &self->before, &self->after,
			 "bad_completions");
	ksft_print_msg("%llu creates, %llu teardowns, %llu bogus completions\n",
		       (unsigned long long)created,
		       (unsigned long long)destroyed, (unsigned long long)bad);
	EXPECT_EQ(pvmm_stat(_metadata, &self->after, "spaces_destroyed"),
		  pvmm_stat(_metadata, &self->after, "spaces_acked"));
	/* dup-ack doubles every completion; forged-ack adds one per CREATE. */
	EXPECT_GE(bad, strcmp(fault(), "dup-ack") ? created : created + destroyed);
}

/* ---- break-ring:N, break-ring-back:N ---- */

STORM_FIXTURE(break_ring)

/* The ring stops at the impossible index and a reset restarts it. */
TEST_F_TIMEOUT(break_ring, reset_recovers, 300)
{
	uint64_t resets;

	storm_drains(_metadata, self->res, &self->before, &self->after);
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
	/* The host breaks the ring once: the next storm sees a sound one. */
	storm_drains(_metadata, self->res, &self->before, &self->after);
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "protocol_errors"));
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

/* Declared dead during the stall, alive again after it; nothing is lost. */
TEST_F_TIMEOUT(stall, dead_then_alive, 300)
{
	ASSERT_EQ(0, pvmm_knob_write_ul("cap_spaces", 2));
	ASSERT_EQ(0, pvmm_knob_write_ul("host_timeout_ms", 500));
	storm_drains(_metadata, self->res, &self->before, &self->after);
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

PVMM_KERNEL_FIXTURE

int main(int argc, char **argv)
{
	/* Fault (up to a ':'), fixture, driver messages it may cause. */
	static const struct {
		const char *fault, *fixture;
		const char *const expected[4];
	} map[] = {
		{ "never-ack", "never_ack",
		  { "switched to async", "acknowledged nothing" } },
		/* Random tags: some look like an earlier instance's. */
		{ "cq-flood", "cq_flood",
		  { "bogus completion", "earlier instance" } },
		{ "irq-storm", "irq_storm", { NULL } },
		{ "dup-ack", "extra_acks", { "bogus completion" } },
		{ "forged-ack", "extra_acks", { "bogus completion" } },
		{ "break-ring", "break_ring",
		  { "broke the ring protocol", "bogus completion" } },
		{ "break-ring-back", "break_ring",
		  { "broke the ring protocol", "bogus completion" } },
		{ "stall", "stall", { "acknowledged nothing" } },
		/* Acks later than host_timeout_ms: a throttled storm may
		 * declare the host dead before the first one arrives. */
		{ "late-ack", "late_ack", { "acknowledged nothing" } },
	};
	const char *f = fault();
	unsigned int i;

	if (argc == 1 && f) {
		/* Only the fixture of this host's fault, and the kernel check. */
		for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
			size_t n = strlen(map[i].fault);

			if (!strncmp(f, map[i].fault, n) &&
			    (f[n] == '\0' || f[n] == ':')) {
				char *args[] = { argv[0], "-f",
						 (char *)map[i].fixture,
						 "-f", "kernel", NULL };

				pvmm_kmsg_expected = map[i].expected;
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

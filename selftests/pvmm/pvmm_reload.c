// SPDX-License-Identifier: GPL-2.0
/*
 * pvmm_reload: unload and reload the pvmm module, alone and while processes
 * keep forking and exiting.  Unload must drain (wait for the host's acks and
 * free every parked pgd) and a new instance must start clean.  Needs pvmm
 * built as a module; skips when it is built in.
 */

#include "pvmm_lib.h"

FIXTURE(reload) {
	struct pvmm_stats before, after;
	struct pvmm_storm_res *res;
	pid_t storm;
};

static void stop_storm(struct __test_metadata *_metadata,
		       FIXTURE_DATA(reload) *self, int *status)
{
	uint64_t deadline = pvmm_now_ms() + pvmm_drain_timeout_ms();
	pid_t pid;

	__atomic_store_n(&self->res->stop, 1, __ATOMIC_RELEASE);
	for (;;) {
		pid = waitpid(self->storm, status, WNOHANG);
		if (pid == self->storm || (pid < 0 && errno != EINTR))
			break;
		if (pvmm_now_ms() >= deadline) {
			TH_LOG("storm did not stop, killing it");
			kill(self->storm, SIGKILL);
			waitpid(self->storm, status, 0);
			break;
		}
		pvmm_sleep_ms(50);
	}
	self->storm = 0;
}

FIXTURE_SETUP(reload)
{
	char why[512];

	PVMM_REQUIRE_STATS();
	if (pvmm_module_unavailable(why, sizeof(why)))
		SKIP(return, "%s", why);
	self->res = pvmm_storm_res_alloc();
	ASSERT_NE(NULL, self->res);
}

/* Leave the driver loaded for whatever runs next, even after a failure. */
FIXTURE_TEARDOWN(reload)
{
	int status, ret;

	if (self->storm > 0)
		stop_storm(_metadata, self, &status);
	if (!pvmm_is_module()) {
		ret = pvmm_module_load();
		if (ret)
			TH_LOG("could not load %s again: %s",
			       pvmm_module_path(), strerror(-ret));
	}
	if (self->res)
		munmap(self->res, sizeof(*self->res));
}

static void unload(struct __test_metadata *_metadata, unsigned int round)
{
	unsigned long retry = pvmm_env_ul("PVMM_UNLOAD_RETRY_MS", 10000, 0,
					  3600000);
	uint64_t t0 = pvmm_now_ms(), deadline;
	static const char *const logged[] = {
		"spaces_created", "spaces_destroyed", "spaces_acked",
		"untracked_exits", "outstanding", "pgds_pending", NULL,
	};
	static struct pvmm_stats st;
	unsigned int tries;
	char err[256];
	int ret;

	/* The old instance's totals, for the log. */
	if (!pvmm_stats_read(&st, err, sizeof(err)))
		pvmm_log_values("old instance", &st, logged);

	ret = pvmm_module_unload(retry, &tries);
	ASSERT_EQ(0, ret) {
		TH_LOG("round %u: delete_module(pvmm) failed after %u tries: %s",
		       round, tries, strerror(-ret));
	}
	/* Module and debugfs files go away before delete_module returns. */
	deadline = pvmm_now_ms() + 5000;
	while ((pvmm_exists(PVMM_SYSFS_MODULE) ||
		pvmm_exists(pvmm_stats_path())) && pvmm_now_ms() < deadline)
		pvmm_sleep_ms(50);
	EXPECT_FALSE(pvmm_exists(PVMM_SYSFS_MODULE)) {
		TH_LOG("round %u: %s still there after unload", round,
		       PVMM_SYSFS_MODULE);
	}
	EXPECT_FALSE(pvmm_exists(pvmm_stats_path())) {
		TH_LOG("round %u: %s still there after unload", round,
		       pvmm_stats_path());
	}
	ksft_print_msg("round %u: unloaded in %llu ms (%u tries)\n", round,
		       (unsigned long long)(pvmm_now_ms() - t0), tries);
}

static void load(struct __test_metadata *_metadata, unsigned int round,
		 struct pvmm_stats *st)
{
	unsigned long timeout = pvmm_env_ul("PVMM_LOAD_TIMEOUT_MS", 10000, 1,
					    3600000);
	uint64_t t0 = pvmm_now_ms();
	char err[512] = "";
	bool up = false;
	int ret;

	ret = pvmm_module_load();
	ASSERT_EQ(0, ret) {
		TH_LOG("round %u: finit_module(%s) failed: %s", round,
		       pvmm_module_path(), strerror(-ret));
	}
	/* Probing may finish after init returns: wait for the hooks. */
	while (pvmm_now_ms() - t0 < timeout) {
		if (!pvmm_stats_read(st, err, sizeof(err)) &&
		    pvmm_stat(_metadata, st, "hooks_active") == 1) {
			up = true;
			break;
		}
		pvmm_sleep_ms(50);
	}
	ASSERT_TRUE(up) {
		TH_LOG("round %u: no stats with hooks_active 1 within %lu ms (PVMM_LOAD_TIMEOUT_MS): %s",
		       round, timeout, err[0] ? err : "hooks_active != 1");
	}
	ASSERT_TRUE(pvmm_is_module());
	ksft_print_msg("round %u: loaded in %llu ms\n", round,
		       (unsigned long long)(pvmm_now_ms() - t0));
}

/* Everything the current instance submitted was acked and released. */
static void check_instance(struct __test_metadata *_metadata,
			   const struct pvmm_stats *st)
{
	static const char *const logged[] = {
		"spaces_created", "spaces_destroyed", "spaces_acked",
		"pgds_parked", "pgds_released", "untracked_exits",
		"doorbells", "irqs", "forced_releases", NULL,
	};

	pvmm_log_values("new instance", st, logged);
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, st, "outstanding"));
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, st, "pgds_pending"));
	EXPECT_EQ(pvmm_stat(_metadata, st, "spaces_destroyed"),
		  pvmm_stat(_metadata, st, "spaces_acked"));
	EXPECT_EQ(pvmm_stat(_metadata, st, "pgds_parked") +
		  pvmm_stat(_metadata, st, "pgds_returned"),
		  pvmm_stat(_metadata, st, "pgds_released"));
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, st, "bad_completions"));
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, st, "protocol_errors"));
}

/* One unload and load with nothing else going on, then one fork+exit. */
TEST_F_TIMEOUT(reload, quiet, 120)
{
	unsigned long timeout = pvmm_drain_timeout_ms();
	uint64_t released;

	unload(_metadata, 1);
	load(_metadata, 1, &self->before);
	pvmm_check_names(_metadata, &self->before);

	pvmm_pin_to_this_cpu(_metadata);
	pvmm_run_child(_metadata, NULL, NULL);
	pvmm_snapshot(_metadata, &self->after);
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_created"), 1ULL);
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_destroyed"), 1ULL);
	released = pvmm_stat(_metadata, &self->before, "pgds_released");
	pvmm_wait_drained(_metadata, &self->after, timeout, "pgds_released",
			  released + 1);
	check_instance(_metadata, &self->after);
}

TEST_F_TIMEOUT(reload, under_storm, 300)
{
	unsigned int rounds = pvmm_env_ul("PVMM_RELOAD_ROUNDS", 3, 1, 1000);
	unsigned long warmup = pvmm_env_ul("PVMM_RELOAD_WARMUP_MS", 1000, 0,
					   600000);
	unsigned long gap = pvmm_env_ul("PVMM_RELOAD_GAP_MS", 500, 0, 600000);
	unsigned long hold = pvmm_env_ul("PVMM_RELOAD_HOLD_MS", 1000, 0,
					 600000);
	unsigned long timeout = pvmm_drain_timeout_ms();
	struct pvmm_storm_res *res = self->res;
	struct pvmm_storm_cfg cfg = {
		.procs = 0,	/* until told to stop */
		.fork_every = 4,
		.exec_every = 4,
	};
	unsigned int round;
	uint64_t memfree = 0;
	int status = 0;

	cfg.parallel = pvmm_env_ul("PVMM_RELOAD_STORM_PARALLEL", 4, 1, 4096);
	cfg.mib = pvmm_env_ul("PVMM_RELOAD_STORM_MIB", 8, 1, 1 << 20);
	pvmm_storm_fit(&cfg);
	cfg.exec_path = pvmm_exec_path(&cfg.exec_arg);

	pvmm_wait_drained(_metadata, &self->before, timeout, NULL, 0);
	ASSERT_EQ(0, pvmm_meminfo_kib("MemFree", &memfree));

	self->storm = fork();
	ASSERT_GE(self->storm, 0);
	if (!self->storm) {
		pvmm_storm_run(&cfg, res);
		_exit(0);
	}
	ksft_print_msg("storm: %lu at once, %lu MiB each; %u rounds\n",
		       cfg.parallel, cfg.mib, rounds);
	pvmm_sleep_ms(warmup);

	for (round = 1; round <= rounds; round++) {
		unload(_metadata, round);
		/* Spaces created now are unknown to the next instance. */
		pvmm_sleep_ms(gap);
		load(_metadata, round, &self->after);
		pvmm_sleep_ms(hold);
	}

	stop_storm(_metadata, self, &status);
	ksft_print_msg("storm: %llu processes (+%llu grandchildren, %llu execs), %llu MiB touched, fork errors %llu, %llu ms\n",
		       (unsigned long long)res->started,
		       (unsigned long long)res->grandchildren,
		       (unsigned long long)(res->execs - res->exec_failed),
		       (unsigned long long)res->mib_touched,
		       (unsigned long long)res->fork_failed,
		       (unsigned long long)res->ms);
	EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	EXPECT_LT(0ULL, res->started);
	EXPECT_EQ(res->started, res->ok) {
		TH_LOG("%llu children failed, %llu killed by a signal (last status 0x%x)",
		       (unsigned long long)res->child_failed,
		       (unsigned long long)res->child_signaled,
		       res->last_status);
	}

	ASSERT_TRUE(pvmm_is_module());
	pvmm_wait_drained(_metadata, &self->after, timeout, NULL, 0);
	check_instance(_metadata, &self->after);
	pvmm_expect_memfree(_metadata, memfree, timeout);
	pvmm_kernel_clean(_metadata);
}

/*
 * A space alive at unload outlives the driver: the host forgets it in the
 * detach's reset, and the unload says how many such spaces the kernel now
 * frees by itself.  Then the space ends, its pgd_free finds no hooks, and
 * the kernel stays clean.
 */
TEST_F_TIMEOUT(reload, live_space_outlives_the_driver, 120)
{
	uint64_t seq = 0, last;
	int go[2], status, found;
	pid_t child;
	char c = 0;

	unload(_metadata, 1);
	load(_metadata, 1, &self->before);
	ASSERT_EQ(0, pipe(go));
	/* Its address space is created by this instance. */
	child = fork();
	ASSERT_GE(child, 0);
	if (!child) {
		close(go[1]);
		_exit(read(go[0], &c, 1) == 1 ? 0 : 1);
	}
	close(go[0]);
	ASSERT_LE(0, pvmm_kmsg_find(0, &seq, false, ""));
	unload(_metadata, 2);
	found = pvmm_kmsg_find(seq, &last, true,
			       "live address spaces go on without pvmm");
	EXPECT_LE(1, found) {
		TH_LOG("the unload did not say which live spaces outlive it");
	}
	ASSERT_EQ(1, write(go[1], &c, 1));
	close(go[1]);
	ASSERT_EQ(child, waitpid(child, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	load(_metadata, 2, &self->before);
	pvmm_kernel_clean(_metadata);
}

/*
 * The mode module parameter: an instance starts in the mode it names, and a
 * value that is not a mode makes the load fail.
 */
TEST_F_TIMEOUT(reload, mode_param, 120)
{
	const char *saved = getenv("PVMM_MODULE_PARAMS");
	char mode[32] = "";
	int ret;

	unload(_metadata, 1);
	setenv("PVMM_MODULE_PARAMS", "mode=bogus", 1);
	ret = pvmm_module_load();
	EXPECT_EQ(-EINVAL, ret) {
		TH_LOG("finit_module with mode=bogus: %s", strerror(-ret));
	}
	EXPECT_FALSE(pvmm_is_module());

	setenv("PVMM_MODULE_PARAMS", "mode=chunked", 1);
	load(_metadata, 1, &self->before);
	EXPECT_EQ(0, pvmm_knob_read("mode", mode, sizeof(mode)));
	EXPECT_STREQ("chunked", mode);
	pvmm_run_child(_metadata, NULL, NULL);
	pvmm_snapshot(_metadata, &self->after);
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "teardowns_chunked"), 1ULL);

	/* Without the parameter, the next instance is async again. */
	unload(_metadata, 2);
	if (saved)
		setenv("PVMM_MODULE_PARAMS", saved, 1);
	else
		unsetenv("PVMM_MODULE_PARAMS");
	load(_metadata, 2, &self->before);
	EXPECT_EQ(0, pvmm_knob_read("mode", mode, sizeof(mode)));
	EXPECT_STREQ("async", mode);
}

PVMM_TEST_MAIN(PVMM_NEED_STATS | PVMM_NEED_MODULE)

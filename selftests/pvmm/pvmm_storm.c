// SPDX-License-Identifier: GPL-2.0
/*
 * pvmm_storm: a teardown storm.  Many processes, a few alive at once, each
 * writing a realistic amount of anonymous memory before it exits; some fork a
 * grandchild or exec.  Once the host has caught up, every DESTROY must have
 * been acked, every parked pgd released, and guest memory must be back.
 */

#include "pvmm_lib.h"

FIXTURE(storm) {
	struct pvmm_stats before, after;
	struct pvmm_storm_res *res;
};

FIXTURE_VARIANT(storm) {
	const char *env;	/* knob prefix: <env>_PROCS etc. */
	unsigned long procs, parallel, mib;
};

/* Big address spaces: the cost the paper is about. */
FIXTURE_VARIANT_ADD(storm, big) {
	.env = "PVMM_STORM", .procs = 64, .parallel = 8, .mib = 32,
};

/* Many small ones: batching, doorbell suppression and credits. */
FIXTURE_VARIANT_ADD(storm, burst) {
	.env = "PVMM_BURST", .procs = 256, .parallel = 32, .mib = 1,
};

FIXTURE_SETUP(storm)
{
	PVMM_REQUIRE_STATS();
	self->res = pvmm_storm_res_alloc();
	ASSERT_NE(NULL, self->res);
}

FIXTURE_TEARDOWN(storm)
{
	if (self->res)
		munmap(self->res, sizeof(*self->res));
}

static unsigned long knob(const char *prefix, const char *name,
			  unsigned long def, unsigned long max)
{
	char env[64];

	snprintf(env, sizeof(env), "%s_%s", prefix, name);
	return pvmm_env_ul(env, def, 1, max);
}

TEST_F_TIMEOUT(storm, drains_clean, 300)
{
	static const char *const logged[] = {
		"spaces_created", "spaces_destroyed", "spaces_acked",
		"pgds_parked", "pgds_returned", "pgds_released",
		"untracked_exits",
		"submissions", "doorbells", "irqs", "completions",
		"forced_releases", NULL,
	};
	unsigned long timeout = pvmm_drain_timeout_ms();
	uint64_t created, destroyed, acked, parked, released, doorbells;
	uint64_t memfree = 0, spaces, drain_ms;
	struct pvmm_storm_res *res = self->res;
	struct pvmm_storm_cfg cfg = {
		.fork_every = 4,
		.exec_every = 4,
	};

	cfg.procs = knob(variant->env, "PROCS", variant->procs, 1000000);
	cfg.parallel = knob(variant->env, "PARALLEL", variant->parallel,
			    4096);
	cfg.mib = knob(variant->env, "MIB", variant->mib, 1 << 20);
	pvmm_storm_fit(&cfg);
	cfg.exec_path = pvmm_exec_path(&cfg.exec_arg);

	/* Start from a quiet state, or deltas mix in older work. */
	pvmm_wait_drained(_metadata, &self->before, timeout, NULL, 0);
	ASSERT_EQ(0, pvmm_meminfo_kib("MemFree", &memfree));
	pvmm_snapshot(_metadata, &self->before);
	EXPECT_EQ(1ULL, pvmm_stat(_metadata, &self->before, "hooks_active"));

	ksft_print_msg("storm: baseline snapshot taken, starting %lu processes, %lu at once, %lu MiB each, exec %s\n",
		       cfg.procs, cfg.parallel, cfg.mib, cfg.exec_path);
	pvmm_storm_run(&cfg, res);
	ksft_print_msg("storm: all %llu processes reaped in %llu ms, waiting for drain\n",
		       (unsigned long long)res->reaped,
		       (unsigned long long)res->ms);

	drain_ms = pvmm_wait_drained(_metadata, &self->after, timeout, NULL,
				     0);

	created = pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_created");
	destroyed = pvmm_delta(_metadata, &self->before, &self->after,
			       "spaces_destroyed");
	acked = pvmm_delta(_metadata, &self->before, &self->after,
			   "spaces_acked");
	/* Handed over at pgd_free: kept for an acknowledgement, or not. */
	parked = pvmm_delta(_metadata, &self->before, &self->after,
			    "pgds_parked") +
		 pvmm_delta(_metadata, &self->before, &self->after,
			    "pgds_returned");
	released = pvmm_delta(_metadata, &self->before, &self->after,
			      "pgds_released");
	doorbells = pvmm_delta(_metadata, &self->before, &self->after,
			       "doorbells");
	spaces = res->started + res->grandchildren + res->execs -
		 res->exec_failed;

	ksft_print_msg("processes %llu (+%llu grandchildren, %llu execs), %llu MiB touched, fork errors %llu\n",
		       (unsigned long long)res->started,
		       (unsigned long long)res->grandchildren,
		       (unsigned long long)(res->execs - res->exec_failed),
		       (unsigned long long)res->mib_touched,
		       (unsigned long long)res->fork_failed);
	pvmm_log_deltas(_metadata, "deltas", &self->before, &self->after,
			logged);
	if (destroyed)
		ksft_print_msg("doorbells per teardown: %.3f\n",
			       (double)doorbells / destroyed);
	ksft_print_msg("time: storm %llu ms, drain %llu ms\n",
		       (unsigned long long)res->ms,
		       (unsigned long long)drain_ms);

	/* The storm itself ran as planned. */
	EXPECT_EQ(cfg.procs, res->started) {
		TH_LOG("fork kept failing: %s", strerror(res->last_errno));
	}
	EXPECT_EQ(res->started, res->ok) {
		TH_LOG("%llu children failed, %llu killed by a signal (last status 0x%x)",
		       (unsigned long long)res->child_failed,
		       (unsigned long long)res->child_signaled,
		       res->last_status);
	}

	/* Every address space went through CREATE ... release. */
	EXPECT_GE(created, spaces) {
		TH_LOG("%llu address spaces but only %llu CREATEs",
		       (unsigned long long)spaces,
		       (unsigned long long)created);
	}
	EXPECT_EQ(created, destroyed);
	EXPECT_EQ(destroyed, acked);
	EXPECT_EQ(parked, released);
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, &self->after, "pgds_pending"));
	EXPECT_EQ(0ULL, pvmm_stat(_metadata, &self->after, "outstanding"));
	/*
	 * Exact, unlike MemFree below, whose tolerance is larger than all the
	 * storm's pgds together: nothing is pending, and every pgd handed over
	 * was released.  (spaces_live is no baseline: an idle CPU keeps the
	 * last mm it ran, so older spaces come and go during the storm.)
	 */
	EXPECT_EQ(pvmm_stat(_metadata, &self->after, "pgds_parked") +
		  pvmm_stat(_metadata, &self->after, "pgds_returned"),
		  pvmm_stat(_metadata, &self->after, "pgds_released"));
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				"bad_completions"));
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				"protocol_errors"));
	/* With a live host nothing is freed without its ack. */
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				"forced_releases"));

	pvmm_expect_memfree(_metadata, memfree, timeout);
	pvmm_kernel_clean(_metadata);
}

PVMM_TEST_MAIN(PVMM_NEED_STATS)

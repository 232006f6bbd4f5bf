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
 *  stall:MS   the host stops for MS ms after the 16th DESTROY.  With a
 *             short host_timeout_ms the guest declares it dead, stops
 *             throttling, fails a creation it then waits for, and recovers
 *             when the host answers again.
 *  late-ack:MS
 *             every completion arrives MS ms late, beyond the detach
 *             deadline.  Unloading waits for the deadline, the reset then
 *             releases what is parked, and the next instance sees no stale
 *             completion.
 *  no-irq     completions are published, the guest is never interrupted.
 *             Polling while work is outstanding still drains storms, and
 *             the healthy host is not taken for dead.
 *  stop:N     after N requests the host serves nothing.  The first fork
 *             whose CREATE it leaves unanswered fails once the work it owes
 *             has the host taken for dead; later forks run without it; an
 *             unload killed while it waits leaves what the host never
 *             acknowledged unreleased.
 *  no-wakeup  the host does not offer FEATURE_NEED_WAKEUP, so it never says
 *             it is idle.  Storms drain, and unloading does not wait for the
 *             detach deadline.
 *
 * The tests of each family of faults are in a pvmm_faults_*.h file, included
 * below.  Without PVMM_FAULT the program skips: it needs a faulty host.
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

/* ---- shared by the faults ---- */

/*
 * A storm in async mode that must complete and drain; every pgd handed over is
 * released, none without an acknowledgement (a reset counts as one).  With
 * @host_dies the host is taken for dead during the storm: a fork or exec
 * whose CREATE it then left unanswered fails with ENOMEM, counted in
 * create_timeouts; the storm retries its own forks but not those of its
 * children, so only those may fail.
 */
static void storm_drains(struct __test_metadata *_metadata,
			 struct pvmm_storm_res *res, struct pvmm_stats *before,
			 struct pvmm_stats *after, bool host_dies)
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
	pvmm_wait_drained(_metadata, after, pvmm_drain_timeout_ms(), NULL, 0);
	pvmm_log_deltas(_metadata, "storm", before, after, logged);
	if (host_dies) {
		uint64_t failed = cfg.procs - res->ok;

		ksft_print_msg("%llu of %lu processes failed to fork or exec, %llu creation(s) timed out\n",
			       (unsigned long long)failed, cfg.procs,
			       (unsigned long long)pvmm_delta(_metadata, before, after,
							      "create_timeouts"));
		EXPECT_EQ(0ULL, res->child_signaled);
		EXPECT_LE(failed, pvmm_delta(_metadata, before, after,
					     "create_timeouts"));
	} else {
		EXPECT_EQ(cfg.procs, res->ok);
	}
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

#include "pvmm_faults_dead.h"
#include "pvmm_faults_acks.h"
#include "pvmm_faults_ring.h"
#include "pvmm_faults_flood.h"
#include "pvmm_faults_quiet.h"

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
		{ "no-irq", "no_irq", { NULL } },
		{ "stop", "stop",
		  { "acknowledged nothing", "detach interrupted",
		    "did not create" } },
		{ "no-wakeup", "no_wakeup", { NULL } },
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

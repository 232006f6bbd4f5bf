// SPDX-License-Identifier: GPL-2.0
/*
 * pvmm_device: the driver is bound to its ivshmem-doorbell device, exports
 * the stats it promises, and one fork+exit (and one exec) goes through the
 * CREATE/DESTROY/ack/release cycle.
 */
#include "pvmm_lib.h"

#include <libgen.h>

FIXTURE(device) {
	struct pvmm_stats before, after;
};

FIXTURE_SETUP(device)
{
	PVMM_REQUIRE_STATS();
}

FIXTURE_TEARDOWN(device)
{
}

/*
 * @spaces address spaces were created and destroyed: check the immediate
 * counters, then wait for the host's acks and the pgd releases.
 */
static void check_lifecycle(struct __test_metadata *_metadata,
			    FIXTURE_DATA(device) *self, uint64_t spaces)
{
	static const char *const logged[] = {
		"spaces_created", "spaces_destroyed", "spaces_acked",
		"pgds_parked", "pgds_released", "submissions", "doorbells",
		"irqs", "completions", NULL,
	};
	uint64_t released0, waited;

	/* CREATE at pgd_alloc and DESTROY at exit_mmap are synchronous. */
	pvmm_snapshot(_metadata, &self->after);
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_created"), spaces);
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_destroyed"), spaces);

	released0 = pvmm_stat(_metadata, &self->before, "pgds_released");
	waited = pvmm_wait_drained(_metadata, &self->after,
				   pvmm_drain_timeout_ms(), "pgds_released",
				   released0 + spaces);
	pvmm_log_deltas(_metadata, "counters", &self->before, &self->after,
			logged);
	ksft_print_msg("drained in %llu ms\n", (unsigned long long)waited);
	EXPECT_GE(pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_acked"), spaces);
	/*
	 * Every space made was torn down.  (spaces_live is no baseline: an
	 * idle CPU keeps the last mm it ran, so older spaces go meanwhile.)
	 */
	EXPECT_EQ(pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_created"),
		  pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_destroyed"));
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				"bad_completions"));
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				"protocol_errors"));
}

/*
 * A built-in driver starts in the mode named by pvmm.mode= on the kernel
 * command line.  First test, so nothing has switched the mode yet.
 */
TEST_F(device, boot_mode)
{
	char cmdline[4096], mode[32] = "", want[32] = "";
	const char *arg;

	if (pvmm_is_module())
		SKIP(return, "pvmm is a module: see reload.mode_param");
	ASSERT_EQ(0, pvmm_read_text("/proc/cmdline", cmdline, sizeof(cmdline)));
	arg = strstr(cmdline, "pvmm.mode=");
	if (!arg)
		SKIP(return, "no pvmm.mode= on the kernel command line");
	sscanf(arg + strlen("pvmm.mode="), "%31s", want);
	ASSERT_EQ(0, pvmm_knob_read("mode", mode, sizeof(mode)));
	EXPECT_STREQ(want, mode);
	ksft_print_msg("booted with pvmm.mode=%s, driver mode %s\n", want,
		       mode);
}

TEST_F(device, bound)
{
	char path[PATH_MAX], bdf[64], id[32];

	ASSERT_TRUE(pvmm_pci_bound(bdf, sizeof(bdf))) {
		TH_LOG("no device under %s", PVMM_PCI_DRIVER_DIR);
	}
	snprintf(path, sizeof(path), "%s/%s/vendor", PVMM_PCI_DRIVER_DIR, bdf);
	ASSERT_EQ(0, pvmm_read_text(path, id, sizeof(id)));
	EXPECT_STREQ("0x1af4", id);
	snprintf(path, sizeof(path), "%s/%s/device", PVMM_PCI_DRIVER_DIR, bdf);
	ASSERT_EQ(0, pvmm_read_text(path, id, sizeof(id)));
	EXPECT_STREQ("0x1110", id);
	ksft_print_msg("pvmm bound to %s\n", bdf);
}

TEST_F(device, stats_complete)
{
	char dir[PATH_MAX], path[PATH_MAX];
	const struct pvmm_stat *mode;

	pvmm_snapshot(_metadata, &self->before);
	pvmm_check_names(_metadata, &self->before);
	EXPECT_EQ(1ULL, pvmm_stat(_metadata, &self->before, "hooks_active"));

	mode = pvmm_stats_find(&self->before, "mode");
	ksft_print_msg("%u stats, mode %s\n", self->before.n,
		       mode ? mode->word : "(not reported)");

	/* "device" lives next to "stats" (also for PVMM_STATS_PATH). */
	snprintf(dir, sizeof(dir), "%s", pvmm_stats_path());
	snprintf(path, sizeof(path), "%s/device", dirname(dir));
	EXPECT_TRUE(pvmm_exists(path)) {
		TH_LOG("%s is missing", path);
	}
}

/*
 * The settings are module parameters: one 0644 file each, whose value the
 * stats file reports too; a write outside the limits or of a word that is no
 * mode fails with EINVAL and changes nothing.
 */
TEST_F(device, settings_are_parameters)
{
	static const char *const names[] = {
		"mode", "batch", "flush_us", "cap_spaces", "cap_pages",
		"chunk_us", "sync_timeout_ms", "throttle_timeout_ms",
		"create_timeout_ms", "host_timeout_ms", NULL,
	};
	static const char *const bad[] = { "0", "-1", "16x", "65537", " ",
					   NULL };
	char path[PATH_MAX], val[64], saved[64];
	const struct pvmm_stat *st;
	const char *const *n;
	struct stat sb;

	pvmm_snapshot(_metadata, &self->before);
	for (n = names; *n; n++) {
		snprintf(path, sizeof(path), "%s/%s", PVMM_PARAM_DIR, *n);
		ASSERT_EQ(0, stat(path, &sb)) {
			TH_LOG("%s: %s", path, strerror(errno));
		}
		EXPECT_EQ(0644U, sb.st_mode & 07777) {
			TH_LOG("%s has mode %o", path, sb.st_mode & 07777);
		}
		ASSERT_EQ(0, pvmm_knob_read(*n, val, sizeof(val)));
		st = pvmm_stats_find(&self->before, *n);
		ASSERT_NE(NULL, st) {
			TH_LOG("stats does not report %s", *n);
		}
		EXPECT_STREQ(st->word, val);
	}

	ASSERT_EQ(0, pvmm_knob_read("batch", saved, sizeof(saved)));
	for (n = bad; *n; n++) {
		EXPECT_EQ(-EINVAL, pvmm_knob_write("batch", *n)) {
			TH_LOG("batch=\"%s\" was accepted", *n);
		}
	}
	ASSERT_EQ(0, pvmm_knob_read("batch", val, sizeof(val)));
	EXPECT_STREQ(saved, val);
	ASSERT_EQ(0, pvmm_knob_write("batch", " 17\n"));
	ASSERT_EQ(0, pvmm_knob_read("batch", val, sizeof(val)));
	EXPECT_STREQ("17", val);
	pvmm_snapshot(_metadata, &self->after);
	EXPECT_EQ(17ULL, pvmm_stat(_metadata, &self->after, "batch"));
	ASSERT_EQ(0, pvmm_knob_write("batch", saved));

	ASSERT_EQ(0, pvmm_knob_read("mode", saved, sizeof(saved)));
	EXPECT_EQ(-EINVAL, pvmm_knob_write("mode", "fast\n"));
	EXPECT_EQ(-EINVAL, pvmm_knob_write("mode", "3\n"));
	ASSERT_EQ(0, pvmm_knob_read("mode", val, sizeof(val)));
	EXPECT_STREQ(saved, val);
}

/*
 * The gauges are defined by the counters: on a quiet system
 * outstanding == destroyed - acked and pgds_pending == parked - released.
 */
TEST_F_TIMEOUT(device, gauges_match_counters, 120)
{
	uint64_t start = pvmm_now_ms(), d, a, p, r;
	unsigned long timeout = pvmm_drain_timeout_ms();
	const char *const names[] = {
		"spaces_destroyed", "spaces_acked", "pgds_parked",
		"pgds_returned", "pgds_released", "outstanding",
		"pgds_pending", NULL,
	};
	bool same;
	int i;

	/* Two equal snapshots in a row: nothing moved in between. */
	pvmm_snapshot(_metadata, &self->before);
	for (;;) {
		pvmm_sleep_ms(100);
		pvmm_snapshot(_metadata, &self->after);
		same = true;
		for (i = 0; names[i]; i++)
			if (pvmm_stat(_metadata, &self->before, names[i]) !=
			    pvmm_stat(_metadata, &self->after, names[i]))
				same = false;
		if (same || pvmm_now_ms() - start > timeout)
			break;
		self->before = self->after;
	}
	ASSERT_TRUE(same) {
		TH_LOG("counters kept moving for %lu ms", timeout);
	}
	d = pvmm_stat(_metadata, &self->after, "spaces_destroyed");
	a = pvmm_stat(_metadata, &self->after, "spaces_acked");
	/* Handed over: kept for an acknowledgement, or released at once. */
	p = pvmm_stat(_metadata, &self->after, "pgds_parked") +
	    pvmm_stat(_metadata, &self->after, "pgds_returned");
	r = pvmm_stat(_metadata, &self->after, "pgds_released");
	ASSERT_GE(d, a);
	ASSERT_GE(p, r);
	EXPECT_EQ(d - a, pvmm_stat(_metadata, &self->after, "outstanding"));
	EXPECT_EQ(p - r, pvmm_stat(_metadata, &self->after, "pgds_pending"));
}

TEST_F_TIMEOUT(device, fork_exit, 120)
{
	pvmm_pin_to_this_cpu(_metadata);
	pvmm_snapshot(_metadata, &self->before);
	EXPECT_EQ(1ULL, pvmm_stat(_metadata, &self->before, "hooks_active"));
	pvmm_run_child(_metadata, NULL, NULL);
	check_lifecycle(_metadata, self, 1);
}

/* exec replaces the mm: one more CREATE and one more DESTROY. */
TEST_F_TIMEOUT(device, fork_exec_exit, 120)
{
	const char *arg, *path = pvmm_exec_path(&arg);

	ksft_print_msg("exec target: %s\n", path);
	pvmm_pin_to_this_cpu(_metadata);
	pvmm_snapshot(_metadata, &self->before);
	pvmm_run_child(_metadata, path, arg);
	check_lifecycle(_metadata, self, 2);
}

PVMM_TEST_MAIN(PVMM_NEED_STATS)

/*
 * Forks that fail part way, at every allocation in turn (fail-nth): pgd_free
 * then meets a space that pgd_alloc registered and that never ran, or that
 * exit_mmap saw only half built.  Every one is torn down, every pgd comes
 * back, and nothing warns.
 */
TEST_F_TIMEOUT(device, fork_fails_midway, 300)
{
	static const char *const inject_dirs[] = {
		"/sys/kernel/debug/failslab",
		"/sys/kernel/debug/fail_page_alloc",
	};
	unsigned long n, failed = 0, max = pvmm_env_ul("PVMM_FAIL_NTH_MAX",
							300, 1, 100000);
	char val[16];
	unsigned int i;
	int status;
	pid_t pid;

	if (!pvmm_exists("/proc/thread-self/fail-nth"))
		SKIP(return, "no /proc/thread-self/fail-nth (CONFIG_FAULT_INJECTION=n)");
	/* fork allocates with GFP_KERNEL, which injection skips by default. */
	for (i = 0; i < 2; i++)
		ASSERT_EQ(0, pvmm_write_text(inject_dirs[i], "ignore-gfp-wait", "N"));
	pvmm_wait_drained(_metadata, &self->before, pvmm_drain_timeout_ms(),
			  NULL, 0);
	for (n = 1; n <= max; n++) {
		snprintf(val, sizeof(val), "%lu", n);
		ASSERT_EQ(0, pvmm_write_text("/proc/thread-self", "fail-nth", val));
		pid = fork();
		/* Disarm at once: the nth call may not have come yet. */
		pvmm_write_text("/proc/thread-self", "fail-nth", "0");
		if (!pid)
			_exit(0);
		if (pid < 0) {
			EXPECT_EQ(ENOMEM, errno);
			failed++;
			continue;
		}
		ASSERT_EQ(pid, waitpid(pid, &status, 0));
	}
	for (i = 0; i < 2; i++)
		pvmm_write_text(inject_dirs[i], "ignore-gfp-wait", "Y");
	pvmm_wait_drained(_metadata, &self->after, pvmm_drain_timeout_ms(),
			  NULL, 0);
	ksft_print_msg("%lu of %lu forks failed part way; %llu spaces created, %llu torn down\n",
		       failed, max,
		       (unsigned long long)pvmm_delta(_metadata, &self->before,
						      &self->after,
						      "spaces_created"),
		       (unsigned long long)pvmm_delta(_metadata, &self->before,
						      &self->after,
						      "spaces_destroyed"));
	EXPECT_GT(failed, 0UL);
	/* Each space pgd_alloc registered was torn down, ran or not. */
	EXPECT_EQ(pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_created"),
		  pvmm_delta(_metadata, &self->before, &self->after,
			     "spaces_destroyed"));
	EXPECT_EQ(pvmm_stat(_metadata, &self->after, "pgds_parked") +
		  pvmm_stat(_metadata, &self->after, "pgds_returned"),
		  pvmm_stat(_metadata, &self->after, "pgds_released"));
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "forced_releases"));
	EXPECT_EQ(0ULL, pvmm_delta(_metadata, &self->before, &self->after,
				   "bad_completions"));
}


/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What every pvmm selftest program includes: the kselftest harness, the
 * helpers (one header per concept, below), and the program's main().
 */
#ifndef PVMM_LIB_H
#define PVMM_LIB_H

#include "pvmm_harness.h"	/* first: it defines _GNU_SOURCE */

/* For the programs themselves: kill(), stat(). */
#include <signal.h>
#include <sys/stat.h>

#include "pvmm_env.h"
#include "pvmm_kernel.h"
#include "pvmm_module.h"
#include "pvmm_params.h"
#include "pvmm_procs.h"
#include "pvmm_stats.h"
#include "pvmm_stats_checks.h"

#define PVMM_NEED_STATS		0x1
#define PVMM_NEED_MODULE	0x2

static pid_t pvmm_main_pid;

/*
 * The 6.12 harness exits 0 when every test was skipped; kselftest wants 4.
 * Runs at exit of the main process only (the harness' children _exit()).
 */
static inline void pvmm_exit_skip_if_all_skipped(void)
{
	if (getpid() != pvmm_main_pid)
		return;
	if (ksft_cnt.ksft_xskip && !ksft_cnt.ksft_pass &&
	    !ksft_cnt.ksft_fail && !ksft_cnt.ksft_xfail &&
	    !ksft_cnt.ksft_xpass && !ksft_cnt.ksft_error) {
		fflush(stdout);
		fflush(stderr);
		_exit(KSFT_SKIP);
	}
}

/* PVMM_TEST_TIMEOUT_S replaces every test's harness timeout. */
static inline void pvmm_apply_timeout_override(void)
{
	unsigned long s = pvmm_env_ul("PVMM_TEST_TIMEOUT_S", 0, 0, 86400);
	struct __fixture_metadata *f;
	struct __test_metadata *t;

	if (!s)
		return;
	for (f = __fixture_list; f; f = f->next)
		for (t = f->tests; t; t = t->next)
			t->timeout = s;
}

static inline bool pvmm_only_listing(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++)
		if (!strcmp(argv[i], "-l") || !strcmp(argv[i], "-h"))
			return true;
	return false;
}

static inline int pvmm_main(int argc, char **argv, unsigned int needs)
{
	char why[512];

	/* Exec target of the storm when /bin/true is missing. */
	if (argc == 2 && !strcmp(argv[1], PVMM_EXEC_EXIT_ARG))
		_exit(0);

	pvmm_main_pid = getpid();
	if (!pvmm_only_listing(argc, argv)) {
		if (((needs & PVMM_NEED_STATS) &&
		     pvmm_stats_unavailable(why, sizeof(why))) ||
		    ((needs & PVMM_NEED_MODULE) &&
		     pvmm_module_unavailable(why, sizeof(why)))) {
			ksft_print_header();
			ksft_exit_skip("%s\n", why);
		}
	}
	pvmm_kernel_baseline();
	pvmm_apply_timeout_override();
	atexit(pvmm_exit_skip_if_all_skipped);
	return test_harness_run(argc, argv);
}

/*
 * The end of every test program: the kernel check, and main() with what
 * the program @needs (PVMM_NEED_*).
 */
#define PVMM_TEST_MAIN(needs)						\
	PVMM_KERNEL_FIXTURE						\
									\
	int main(int argc, char **argv)					\
	{								\
		return pvmm_main(argc, argv, (needs));			\
	}

#endif /* PVMM_LIB_H */

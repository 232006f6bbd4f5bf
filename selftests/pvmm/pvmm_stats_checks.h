/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The stats file under the harness: snapshots, values the contract promises,
 * deltas, and waiting until the driver has drained and MemFree is back.
 */
#ifndef PVMM_STATS_CHECKS_H
#define PVMM_STATS_CHECKS_H

#include "pvmm_module.h"

/* Skip the current test if the stats file is not there. */
#define PVMM_REQUIRE_STATS() do {					\
	char __why[512];						\
									\
	if (pvmm_stats_unavailable(__why, sizeof(__why)))		\
		SKIP(return, "%s", __why);				\
} while (0)

static inline void pvmm_snapshot(struct __test_metadata *_metadata,
				 struct pvmm_stats *st)
{
	char err[512];
	int ret;

	ret = pvmm_stats_read(st, err, sizeof(err));
	ASSERT_EQ(0, ret) {
		TH_LOG("stats: %s", err);
	}
}

/* A numeric stat that must exist: a missing one breaks the contract. */
static inline uint64_t pvmm_stat(struct __test_metadata *_metadata,
				 const struct pvmm_stats *st, const char *name)
{
	const struct pvmm_stat *e = pvmm_stats_find(st, name);

	ASSERT_NE(NULL, e) {
		TH_LOG("stats: no \"%s\" line in %s (driver/test contract mismatch)",
		       name, pvmm_stats_path());
	}
	ASSERT_TRUE(e->numeric) {
		TH_LOG("stats: \"%s\" has non-numeric value \"%s\"", name,
		       e->word);
	}
	return e->val;
}

/* after - before for a counter; counters never go backwards. */
static inline uint64_t pvmm_delta(struct __test_metadata *_metadata,
				  const struct pvmm_stats *before,
				  const struct pvmm_stats *after,
				  const char *name)
{
	uint64_t a = pvmm_stat(_metadata, before, name);
	uint64_t b = pvmm_stat(_metadata, after, name);

	ASSERT_GE(b, a) {
		TH_LOG("counter %s went backwards (%llu -> %llu): driver reloaded?",
		       name, (unsigned long long)a, (unsigned long long)b);
	}
	return b - a;
}

static inline void pvmm_check_names(struct __test_metadata *_metadata,
				    const struct pvmm_stats *st)
{
	const char *const *n;

	for (n = pvmm_stat_names(); *n; n++)
		pvmm_stat(_metadata, st, *n);
}

/* Log "name value" for each name in @names; a missing one shows as "?". */
static inline void pvmm_log_values(const char *what,
				   const struct pvmm_stats *st,
				   const char *const *names)
{
	const struct pvmm_stat *e;
	char line[1024];
	size_t n = 0;

	line[0] = '\0';
	for (; *names && n < sizeof(line); names++) {
		e = pvmm_stats_find(st, *names);
		n += snprintf(line + n, sizeof(line) - n, " %s %s", *names,
			      e ? e->word : "?");
	}
	ksft_print_msg("%s:%s\n", what, line);
}

/* Log "name +delta" for each name in the NULL-terminated @names. */
static inline void pvmm_log_deltas(struct __test_metadata *_metadata,
				   const char *what,
				   const struct pvmm_stats *before,
				   const struct pvmm_stats *after,
				   const char *const *names)
{
	char line[1024];
	size_t n = 0;

	line[0] = '\0';
	for (; *names && n < sizeof(line); names++)
		n += snprintf(line + n, sizeof(line) - n, " %s +%llu", *names,
			      (unsigned long long)pvmm_delta(_metadata, before,
							     after, *names));
	ksft_print_msg("%s:%s\n", what, line);
}

/* Nothing left in flight: every DESTROY acked, every parked pgd freed. */
static inline bool pvmm_is_drained(struct __test_metadata *_metadata,
				   const struct pvmm_stats *st)
{
	return !pvmm_stat(_metadata, st, "outstanding") &&
	       !pvmm_stat(_metadata, st, "pgds_pending") &&
	       !pvmm_stat(_metadata, st, "backlog");
}

/* Counters that must not move between the two reads of a quiet state. */
static inline bool pvmm_same_counters(struct __test_metadata *_metadata,
				      const struct pvmm_stats *a,
				      const struct pvmm_stats *b)
{
	static const char *const names[] = {
		"spaces_created", "spaces_destroyed", "spaces_acked",
		"pgds_parked", "pgds_returned", "pgds_released", NULL,
	};
	int i;

	for (i = 0; names[i]; i++)
		if (pvmm_stat(_metadata, a, names[i]) !=
		    pvmm_stat(_metadata, b, names[i]))
			return false;
	return true;
}

/*
 * Poll until drained and, if @name is set, until stat @name >= @min.  The
 * state must hold on two reads in a row with equal counters, so a pgd freed
 * while the file was being printed cannot make one snapshot inconsistent.
 * Fails the test after @timeout_ms.  Tolerates the stats file being briefly
 * absent (module reload).  Returns the time waited in ms.
 */
static inline uint64_t pvmm_wait_drained(struct __test_metadata *_metadata,
					 struct pvmm_stats *st,
					 unsigned long timeout_ms,
					 const char *name, uint64_t min)
{
	static struct pvmm_stats prev;
	uint64_t start = pvmm_now_ms();
	bool have = false, have_prev = false;
	char err[512] = "";

	for (;;) {
		if (!pvmm_stats_read(st, err, sizeof(err))) {
			have = true;
			if (pvmm_is_drained(_metadata, st) &&
			    (!name || pvmm_stat(_metadata, st, name) >= min)) {
				if (have_prev &&
				    pvmm_same_counters(_metadata, &prev, st))
					return pvmm_now_ms() - start;
				prev = *st;
				have_prev = true;
			} else {
				have_prev = false;
			}
		} else {
			have_prev = false;
		}
		if (pvmm_now_ms() - start >= timeout_ms)
			break;
		pvmm_sleep_ms(50);
	}
	ASSERT_TRUE(have) {
		TH_LOG("stats unreadable for %lu ms: %s", timeout_ms, err);
	}
	TH_LOG("not drained after %lu ms (PVMM_DRAIN_TIMEOUT_MS): outstanding=%llu pgds_pending=%llu backlog=%llu%s%s=%llu",
	       timeout_ms,
	       (unsigned long long)pvmm_stat(_metadata, st, "outstanding"),
	       (unsigned long long)pvmm_stat(_metadata, st, "pgds_pending"),
	       (unsigned long long)pvmm_stat(_metadata, st, "backlog"),
	       name ? " " : "", name ? name : "",
	       name ? (unsigned long long)pvmm_stat(_metadata, st, name) : 0);
	ASSERT_TRUE(false);
	return 0;
}

/*
 * Poll MemFree until it is back to at least @before_kib - tolerance, so that
 * frees deferred to RCU or workqueues are not taken for a leak.
 */
static inline void pvmm_expect_memfree(struct __test_metadata *_metadata,
				       uint64_t before_kib,
				       unsigned long timeout_ms)
{
	uint64_t tol = pvmm_mem_tolerance_kib();
	uint64_t start = pvmm_now_ms();
	uint64_t now_kib = 0;

	for (;;) {
		ASSERT_EQ(0, pvmm_meminfo_kib("MemFree", &now_kib));
		if (now_kib + tol >= before_kib)
			break;
		if (pvmm_now_ms() - start >= timeout_ms)
			break;
		pvmm_sleep_ms(100);
	}
	ksft_print_msg("MemFree: before %llu KiB, after %llu KiB (%+lld KiB, tolerance %llu KiB)\n",
		       (unsigned long long)before_kib,
		       (unsigned long long)now_kib,
		       (long long)now_kib - (long long)before_kib,
		       (unsigned long long)tol);
	EXPECT_GE(now_kib + tol, before_kib) {
		TH_LOG("MemFree did not come back: %llu KiB below the start (PVMM_MEM_TOLERANCE_KIB=%llu)",
		       (unsigned long long)(before_kib - now_kib),
		       (unsigned long long)tol);
	}
}

#endif /* PVMM_STATS_CHECKS_H */

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel health: the kernel must not become tainted or log a warning, an
 * oops or a stall while a test program runs.  Every program ends with the
 * check (PVMM_KERNEL_FIXTURE).
 */
#ifndef PVMM_KERNEL_H
#define PVMM_KERNEL_H

#include "pvmm_env.h"

struct pvmm_kbase {
	bool have_taint;
	unsigned long taint;
	bool have_kmsg;
	uint64_t kmsg_seq;
};

static struct pvmm_kbase pvmm_kbase;

static inline int pvmm_read_taint(unsigned long *taint)
{
	char buf[64];
	char *end;
	int ret;

	ret = pvmm_read_text("/proc/sys/kernel/tainted", buf, sizeof(buf));
	if (ret)
		return ret;
	errno = 0;
	*taint = strtoul(buf, &end, 10);
	return errno || *end ? -EINVAL : 0;
}

/*
 * Driver messages a test against a misbehaving host expects; NULL-terminated,
 * NULL for none.  Everything else in pvmm_kmsg_is_bad() stays bad.
 */
static const char *const *pvmm_kmsg_expected;

static inline bool pvmm_kmsg_is_bad(const char *msg)
{
	static const char *const bad[] = {
		"WARNING:", "BUG:", "Oops", "kernel BUG", "general protection",
		"Kernel panic", "UBSAN:", "KASAN:",
		/* Stalls a vCPU held with interrupts off would cause. */
		"detected stalls", "hard LOCKUP", "soft lockup",
		"blocked for more than", "nobody cared",
		/* The driver's own reports of a host that misbehaved. */
		"never acknowledged", "broke the ring protocol",
		"bogus completion", "earlier instance", "acknowledged nothing",
		"left the ring unusable", "pvmm: host: ", "switched to async",
		"stale record", NULL,
	};
	int i;

	for (i = 0; pvmm_kmsg_expected && pvmm_kmsg_expected[i]; i++)
		if (strstr(msg, pvmm_kmsg_expected[i]))
			return false;
	for (i = 0; bad[i]; i++)
		if (strstr(msg, bad[i]))
			return true;
	return false;
}

/*
 * Walk /dev/kmsg records newer than @after.  Returns the number of records
 * that contain @find or, without it, look like a warning or an oops
 * (printed if @report), or -errno if the log cannot be read.  *@last gets
 * the newest sequence number seen.
 */
static inline int pvmm_kmsg_find(uint64_t after, uint64_t *last, bool report,
				 const char *find)
{
	char rec[8192];
	int fd, bad = 0;
	ssize_t r;

	fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*last = after;
	for (;;) {
		unsigned long long seq;
		char *msg, *nl;

		r = read(fd, rec, sizeof(rec) - 1);
		if (r < 0 && errno == EPIPE)
			continue;	/* overwritten while we read */
		if (r <= 0)
			break;
		rec[r] = '\0';
		/* "prio,seq,usec,flags;text\n" followed by dictionary lines */
		if (sscanf(rec, "%*u,%llu,", &seq) != 1)
			continue;
		if (seq > *last)
			*last = seq;
		if (seq <= after)
			continue;
		msg = strchr(rec, ';');
		if (!msg)
			continue;
		msg++;
		nl = strchr(msg, '\n');
		if (nl)
			*nl = '\0';
		if (find ? !!strstr(msg, find) : pvmm_kmsg_is_bad(msg)) {
			bad++;
			if (report)
				ksft_print_msg("kernel log: %s\n", msg);
		}
	}
	close(fd);
	return bad;
}

static inline int pvmm_kmsg_scan(uint64_t after, uint64_t *last, bool report)
{
	return pvmm_kmsg_find(after, last, report, NULL);
}

/* Called once per program, before any test runs. */
static inline void pvmm_kernel_baseline(void)
{
	uint64_t seq;

	pvmm_kbase.have_taint = !pvmm_read_taint(&pvmm_kbase.taint);
	pvmm_kbase.have_kmsg = pvmm_kmsg_scan(0, &seq, false) >= 0;
	pvmm_kbase.kmsg_seq = seq;
}

static inline void pvmm_taint_letters(unsigned long bits, char *buf,
				      size_t len)
{
	static const char letters[] = "PFSRMBUDAWCIOELKXTN";
	size_t n = 0;
	unsigned int i;

	for (i = 0; i < sizeof(unsigned long) * 8 && n + 1 < len; i++) {
		if (!(bits & (1UL << i)))
			continue;
		buf[n++] = i < sizeof(letters) - 1 ? letters[i] : '?';
	}
	buf[n] = '\0';
}

/*
 * The kernel must not have warned or oopsed since the program started:
 * /proc/sys/kernel/tainted unchanged (bits in PVMM_TAINT_IGNORE excepted)
 * and no new WARNING/BUG/Oops records in /dev/kmsg.  Returns false if
 * neither source can be read.
 */
static inline bool pvmm_kernel_clean(struct __test_metadata *_metadata)
{
	unsigned long ignore, taint, added;
	uint64_t last;
	char l[72];
	int bad;

	ignore = pvmm_env_ul("PVMM_TAINT_IGNORE", 0, 0, ULONG_MAX);
	if (pvmm_kbase.have_taint) {
		ASSERT_EQ(0, pvmm_read_taint(&taint));
		added = (taint & ~pvmm_kbase.taint) & ~ignore;
		pvmm_taint_letters(added, l, sizeof(l));
		EXPECT_EQ(0UL, added) {
			TH_LOG("kernel became tainted: 0x%lx -> 0x%lx (new: %s)",
			       pvmm_kbase.taint, taint, l);
		}
	}
	if (pvmm_kbase.have_kmsg) {
		bad = pvmm_kmsg_scan(pvmm_kbase.kmsg_seq, &last, true);
		EXPECT_EQ(0, bad) {
			TH_LOG("%d new warning/oops records in the kernel log",
			       bad);
		}
	}
	return pvmm_kbase.have_taint || pvmm_kbase.have_kmsg;
}

/*
 * A last fixture, so that it runs after all the others and checks that none
 * of them left a kernel warning or taint.
 */
#define PVMM_KERNEL_FIXTURE						\
	FIXTURE(kernel) {};						\
	FIXTURE_SETUP(kernel) {}					\
	FIXTURE_TEARDOWN(kernel) {}					\
									\
	TEST_F(kernel, no_warnings)					\
	{								\
		if (!pvmm_kernel_clean(_metadata))			\
			SKIP(return,					\
			     "no /proc/sys/kernel/tainted and no /dev/kmsg"); \
	}

#endif /* PVMM_KERNEL_H */

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the pvmm selftests, and the kselftest harness itself:
 * the helpers that take a _metadata argument use its EXPECT/ASSERT macros.
 * Everything is static inline because the harness header defines global
 * symbols and so can only be part of one translation unit per program.
 */
#ifndef PVMM_LIB_H
#define PVMM_LIB_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

/*
 * -Wextra finds an unused parameter in the 6.12 harness, and a variable its
 * TEST_F() wrapper keeps across setjmp(); neither is ours to fix.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include "kselftest_harness.h"
#pragma GCC diagnostic pop
#pragma GCC diagnostic ignored "-Wclobbered"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pvmm_stats.h"

#define PVMM_DEBUGFS_MOUNT	"/sys/kernel/debug"
#define PVMM_DEBUGFS_MAGIC	0x64626720
#define PVMM_PCI_DRIVER_DIR	"/sys/bus/pci/drivers/pvmm"
#define PVMM_SYSFS_MODULE	"/sys/module/pvmm"
/* The settings: module parameters, writable at run time. */
#define PVMM_PARAM_DIR		PVMM_SYSFS_MODULE "/parameters"
#define PVMM_MODULE_NAME	"pvmm"
#define PVMM_MODULE_DEFAULT	"/lib/modules/pvmm.ko"
#define PVMM_EXEC_EXIT_ARG	"--pvmm-exec-exit"

#define PVMM_NEED_STATS		0x1
#define PVMM_NEED_MODULE	0x2

/* ---- environment, time, files ---- */

/* Unsigned env knob; bad or out-of-range values fall back loudly. */
static inline unsigned long pvmm_env_ul(const char *name, unsigned long def,
					unsigned long min, unsigned long max)
{
	const char *s = getenv(name);
	unsigned long v;
	char *end;

	if (!s || !*s)
		return def;
	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end || *s == '-' || v < min || v > max) {
		ksft_print_msg("%s=%s is not a number in [%lu, %lu], using %lu\n",
			       name, s, min, max, def);
		return def;
	}
	return v;
}

static inline unsigned long pvmm_drain_timeout_ms(void)
{
	return pvmm_env_ul("PVMM_DRAIN_TIMEOUT_MS", 30000, 1, 3600000);
}

static inline unsigned long pvmm_mem_tolerance_kib(void)
{
	return pvmm_env_ul("PVMM_MEM_TOLERANCE_KIB", 8192, 0, ULONG_MAX);
}

static inline uint64_t pvmm_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void pvmm_sleep_ms(unsigned long ms)
{
	struct timespec ts = {
		.tv_sec = ms / 1000,
		.tv_nsec = (ms % 1000) * 1000000L,
	};

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static inline bool pvmm_exists(const char *path)
{
	return !access(path, F_OK);
}

/* Read a small text file, stripping the trailing newline.  0 or -errno. */
static inline int pvmm_read_text(const char *path, char *buf, size_t len)
{
	ssize_t r;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = read(fd, buf, len - 1);
	if (r < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	close(fd);
	buf[r] = '\0';
	while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == ' '))
		buf[--r] = '\0';
	return 0;
}

/* A "Name:  123 kB" value from /proc/meminfo, in KiB.  0 or -errno. */
static inline int pvmm_meminfo_kib(const char *key, uint64_t *kib)
{
	char line[256];
	size_t klen = strlen(key);
	FILE *f;
	int ret = -ENOENT;

	f = fopen("/proc/meminfo", "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, key, klen) && line[klen] == ':') {
			unsigned long long v;

			if (sscanf(line + klen + 1, "%llu", &v) == 1) {
				*kib = v;
				ret = 0;
			}
			break;
		}
	}
	fclose(f);
	return ret;
}

/* ---- why a program has to skip ---- */

static inline bool pvmm_pci_bound(char *bdf, size_t len)
{
	struct dirent *de;
	bool found = false;
	DIR *d;

	d = opendir(PVMM_PCI_DRIVER_DIR);
	if (!d)
		return false;
	while ((de = readdir(d))) {
		/* Bound devices appear as "DDDD:BB:DD.F" symlinks. */
		if (strchr(de->d_name, ':')) {
			snprintf(bdf, len, "%.*s", (int)len - 1, de->d_name);
			found = true;
			break;
		}
	}
	closedir(d);
	return found;
}

/* True, with a reason, if the pvmm stats file cannot be read. */
static inline bool pvmm_stats_unavailable(char *why, size_t len)
{
	const char *path = pvmm_stats_path();
	struct statfs sfs;
	char bdf[64];
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		return false;
	}
	if (errno == EACCES || errno == EPERM) {
		snprintf(why, len, "%s: %s (run as root)", path,
			 strerror(errno));
	} else if (getenv("PVMM_STATS_PATH") && *getenv("PVMM_STATS_PATH")) {
		snprintf(why, len, "PVMM_STATS_PATH=%s: %s", path,
			 strerror(errno));
	} else if (statfs(PVMM_DEBUGFS_MOUNT, &sfs) ||
		   sfs.f_type != PVMM_DEBUGFS_MAGIC) {
		snprintf(why, len, "debugfs is not mounted at %s",
			 PVMM_DEBUGFS_MOUNT);
	} else if (!pvmm_exists(PVMM_PCI_DRIVER_DIR) &&
		   !pvmm_exists(PVMM_SYSFS_MODULE)) {
		snprintf(why, len, "pvmm driver not loaded (no %s)",
			 PVMM_PCI_DRIVER_DIR);
	} else if (!pvmm_pci_bound(bdf, sizeof(bdf))) {
		snprintf(why, len,
			 "pvmm driver has no device bound (no ivshmem-doorbell 1af4:1110?)");
	} else {
		snprintf(why, len, "%s: %s", path, strerror(errno));
	}
	return true;
}

static inline bool pvmm_is_module(void)
{
	return pvmm_exists(PVMM_SYSFS_MODULE "/initstate");
}

static inline const char *pvmm_module_path(void)
{
	const char *p = getenv("PVMM_MODULE");

	return p && *p ? p : PVMM_MODULE_DEFAULT;
}

static inline const char *pvmm_module_params(void)
{
	const char *p = getenv("PVMM_MODULE_PARAMS");

	return p ? p : "";
}

/* True, with a reason, if the driver cannot be unloaded and reloaded. */
static inline bool pvmm_module_unavailable(char *why, size_t len)
{
	if (!pvmm_is_module()) {
		snprintf(why, len,
			 "pvmm is built in (CONFIG_PVMM=y): no %s/initstate",
			 PVMM_SYSFS_MODULE);
		return true;
	}
	if (access(pvmm_module_path(), R_OK)) {
		snprintf(why, len, "module file %s: %s (set PVMM_MODULE)",
			 pvmm_module_path(), strerror(errno));
		return true;
	}
	if (geteuid()) {
		snprintf(why, len, "loading modules needs root");
		return true;
	}
	return false;
}

/* ---- module load and unload ---- */

static inline int pvmm_module_load(void)
{
	int fd, ret = 0;

	fd = open(pvmm_module_path(), O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (syscall(__NR_finit_module, fd, pvmm_module_params(), 0))
		ret = -errno;
	close(fd);
	return ret;
}

/*
 * delete_module() fails with EAGAIN (EWOULDBLOCK) while the module is in use
 * and with EBUSY while it is still coming up or going away: retry those.
 */
static inline int pvmm_module_unload(unsigned long retry_ms,
				     unsigned int *tries)
{
	uint64_t deadline = pvmm_now_ms() + retry_ms;

	for (*tries = 1;; (*tries)++) {
		if (!syscall(__NR_delete_module, PVMM_MODULE_NAME, O_NONBLOCK))
			return 0;
		if (errno != EAGAIN && errno != EBUSY)
			return -errno;
		if (pvmm_now_ms() >= deadline)
			return -errno;
		pvmm_sleep_ms(50);
	}
}

/* ---- kernel health: taint and new warnings in the log ---- */

struct pvmm_kbase {
	bool have_taint;
	unsigned long taint;
	bool have_kmsg;
	uint64_t kmsg_seq;
};

static struct pvmm_kbase pvmm_kbase;
static pid_t pvmm_main_pid;

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
 * that look like a warning or an oops (printed if @report), or -errno if
 * the log cannot be read.  *@last gets the newest sequence number seen.
 */
static inline int pvmm_kmsg_scan(uint64_t after, uint64_t *last, bool report)
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
		if (pvmm_kmsg_is_bad(msg)) {
			bad++;
			if (report)
				ksft_print_msg("kernel log: %s\n", msg);
		}
	}
	close(fd);
	return bad;
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

/* ---- the driver's knobs (debugfs), and other control files ---- */

/* Writes @val to @dir/@name in one write(); 0 or a negative errno. */
static inline int pvmm_write_text(const char *dir, const char *name,
				  const char *val)
{
	char path[PATH_MAX];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = write(fd, val, strlen(val));
	if (n < 0)
		n = -errno;
	close(fd);
	return n == (ssize_t)strlen(val) ? 0 : n < 0 ? n : -EINVAL;
}

static inline int pvmm_knob_write(const char *name, const char *val)
{
	return pvmm_write_text(PVMM_PARAM_DIR, name, val);
}

/* The setting @name as text, without the newline. */
static inline int pvmm_knob_read(const char *name, char *buf, size_t len)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", PVMM_PARAM_DIR, name);
	return pvmm_read_text(path, buf, len);
}

/* Restart the peak gauges and maxima in the stats file. */
static inline int pvmm_reset_peaks(void)
{
	return pvmm_write_text(PVMM_DEBUGFS_DIR, "stats", "reset_peaks\n");
}

static inline int pvmm_knob_write_ul(const char *name, unsigned long v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%lu\n", v);
	return pvmm_knob_write(name, buf);
}

/* ---- stats with harness checks ---- */

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

/* ---- single processes ---- */

/*
 * Run the caller (and so its children) on the CPU it is on.  A CPU that goes
 * idle keeps the last exited mm as its lazy TLB mm, which delays pgd_free()
 * until that CPU runs another task; on the caller's CPU the caller is that
 * task.  Tests run in their own process, so the pinning ends with them.
 */
static inline void pvmm_pin_to_this_cpu(struct __test_metadata *_metadata)
{
	cpu_set_t one;
	int cpu;

	cpu = sched_getcpu();
	ASSERT_GE(cpu, 0);
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	ASSERT_EQ(0, sched_setaffinity(0, sizeof(one), &one));
}

/* Fork one child that exits at once, or execs @path first. */
static inline void pvmm_run_child(struct __test_metadata *_metadata,
				  const char *path, const char *arg)
{
	int status;
	pid_t pid;

	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		if (path)
			execl(path, path, arg, (char *)NULL);
		_exit(path ? 13 : 0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(0, WEXITSTATUS(status)) {
		TH_LOG("child failed (exec of %s?)", path ? path : "none");
	}
}

/* ---- address-space storm ---- */

/* A program to exec: PVMM_EXEC_PATH, /bin/true, else ourselves. */
static inline const char *pvmm_exec_path(const char **arg)
{
	const char *p = getenv("PVMM_EXEC_PATH");

	*arg = NULL;
	if (p && *p)
		return p;
	if (!access("/bin/true", X_OK))
		return "/bin/true";
	/* main() exits at once when given PVMM_EXEC_EXIT_ARG. */
	*arg = PVMM_EXEC_EXIT_ARG;
	return "/proc/self/exe";
}

struct pvmm_storm_cfg {
	unsigned long procs;	/* children to run; 0: until *stop is set */
	unsigned long parallel;	/* children alive at once */
	unsigned long mib;	/* anonymous memory each child writes */
	unsigned int fork_every;	/* child i forks if i % n == 1 */
	unsigned int exec_every;	/* child i execs if i % n == n - 1 */
	const char *exec_path;
	const char *exec_arg;
};

/* Lives in MAP_SHARED memory: children count their own work here. */
struct pvmm_storm_res {
	uint64_t started, reaped, ok;
	uint64_t fork_failed, child_failed, child_signaled;
	uint64_t grandchildren, execs, exec_failed;
	uint64_t mib_touched;
	int last_errno, last_status;
	uint64_t ms;
	int stop;
};

static inline struct pvmm_storm_res *pvmm_storm_res_alloc(void)
{
	struct pvmm_storm_res *r;

	r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (r == MAP_FAILED)
		return NULL;
	memset(r, 0, sizeof(*r));
	return r;
}

/* Map @mib MiB of private anonymous memory and write every page. */
static inline int pvmm_touch(unsigned long mib)
{
	size_t len = (size_t)mib << 20;
	long page = sysconf(_SC_PAGESIZE);
	volatile char *p;
	size_t off;

	if (!len)
		return 0;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	for (off = 0; off < len; off += page)
		p[off] = (char)(off >> 12) | 1;
	/* Left mapped on purpose: exit_mmap() is what we exercise. */
	return 0;
}

static inline void pvmm_storm_child(const struct pvmm_storm_cfg *cfg,
				    struct pvmm_storm_res *res,
				    unsigned long i)
{
	int status;
	pid_t pid;

	if (pvmm_touch(cfg->mib))
		_exit(10);
	__atomic_add_fetch(&res->mib_touched, cfg->mib, __ATOMIC_RELAXED);

	if (cfg->fork_every && i % cfg->fork_every == 1) {
		unsigned long gmib = cfg->mib / 4 ? cfg->mib / 4 : 1;

		pid = fork();
		if (pid < 0)
			_exit(11);
		if (!pid) {
			if (pvmm_touch(gmib))
				_exit(10);
			__atomic_add_fetch(&res->mib_touched, gmib,
					   __ATOMIC_RELAXED);
			_exit(0);
		}
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status))
			_exit(12);
		__atomic_add_fetch(&res->grandchildren, 1, __ATOMIC_RELAXED);
	} else if (cfg->exec_path && cfg->exec_every &&
		   i % cfg->exec_every == cfg->exec_every - 1) {
		__atomic_add_fetch(&res->execs, 1, __ATOMIC_RELAXED);
		execl(cfg->exec_path, cfg->exec_path, cfg->exec_arg,
		      (char *)NULL);
		__atomic_add_fetch(&res->exec_failed, 1, __ATOMIC_RELAXED);
		_exit(13);
	}
	_exit(0);
}

/*
 * Run children, at most cfg->parallel at once, until cfg->procs have run or
 * res->stop is set.  Plain code without harness checks, so that it can run
 * in a helper process too.
 */
static inline void pvmm_storm_run(const struct pvmm_storm_cfg *cfg,
				  struct pvmm_storm_res *res)
{
	uint64_t start = pvmm_now_ms();
	unsigned int fork_errors = 0;
	unsigned long alive = 0;
	int status;
	pid_t pid;

	for (;;) {
		bool more = cfg->procs ? res->started < cfg->procs :
			    !__atomic_load_n(&res->stop, __ATOMIC_ACQUIRE);

		if (more && fork_errors < 200 && alive < cfg->parallel) {
			pid = fork();
			if (!pid)
				pvmm_storm_child(cfg, res, res->started);
			if (pid < 0) {
				res->fork_failed++;
				res->last_errno = errno;
				fork_errors++;
				if (alive)
					goto reap;
				pvmm_sleep_ms(10);
				continue;
			}
			fork_errors = 0;
			res->started++;
			alive++;
			continue;
		}
		if (!alive)
			break;
reap:
		pid = waitpid(-1, &status, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		alive--;
		res->reaped++;
		if (WIFEXITED(status) && !WEXITSTATUS(status)) {
			res->ok++;
		} else {
			res->last_status = status;
			if (WIFSIGNALED(status))
				res->child_signaled++;
			else
				res->child_failed++;
		}
	}
	res->ms = pvmm_now_ms() - start;
}

/* Let @parallel children of @mib MiB (plus grandchildren) fit in RAM. */
static inline void pvmm_storm_fit(struct pvmm_storm_cfg *cfg)
{
	uint64_t avail_kib = 0, budget_mib, slot_mib;

	if (pvmm_meminfo_kib("MemAvailable", &avail_kib) &&
	    pvmm_meminfo_kib("MemFree", &avail_kib))
		return;
	budget_mib = avail_kib / 1024 / 2;
	if (budget_mib < 2)
		budget_mib = 2;
	if (cfg->mib > budget_mib * 4 / 5) {
		ksft_print_msg("only %llu MiB available: %lu MiB per process lowered to %llu\n",
			       (unsigned long long)avail_kib / 1024, cfg->mib,
			       (unsigned long long)budget_mib * 4 / 5);
		cfg->mib = budget_mib * 4 / 5;
	}
	slot_mib = cfg->mib + (cfg->mib / 4 ? cfg->mib / 4 : 1);
	if (cfg->parallel * slot_mib > budget_mib) {
		unsigned long p = budget_mib / slot_mib;

		if (!p)
			p = 1;
		ksft_print_msg("only %llu MiB available: parallelism lowered from %lu to %lu\n",
			       (unsigned long long)avail_kib / 1024,
			       cfg->parallel, p);
		cfg->parallel = p;
	}
}

/* ---- main ---- */

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

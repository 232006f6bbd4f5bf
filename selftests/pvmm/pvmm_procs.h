/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Address spaces to tear down: single child processes, and storms of them
 * that fork, exec and touch memory.
 */
#ifndef PVMM_PROCS_H
#define PVMM_PROCS_H

#include "pvmm_env.h"

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PVMM_EXEC_EXIT_ARG	"--pvmm-exec-exit"

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

/*
 * Start a busy loop on every online CPU (at most @max) under scheduling
 * @policy (SCHED_OTHER or SCHED_IDLE); returns how many, their pids in
 * @pids.  They run until pvmm_spinners_stop().
 */
static inline unsigned int pvmm_spinners_start(pid_t *pids, unsigned int max,
					       int policy)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	struct sched_param sp = { 0 };
	unsigned int n;

	for (n = 0; n < max && n < cpus; n++) {
		pid_t pid = fork();

		if (pid < 0)
			break;
		if (!pid) {
			if (sched_setscheduler(0, policy, &sp))
				_exit(1);
			for (;;)
				;
		}
		pids[n] = pid;
	}
	return n;
}

static inline void pvmm_spinners_stop(pid_t *pids, unsigned int *n)
{
	while (*n) {
		(*n)--;
		kill(pids[*n], SIGKILL);
		while (waitpid(pids[*n], NULL, 0) < 0 && errno == EINTR)
			;
	}
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

#endif /* PVMM_PROCS_H */

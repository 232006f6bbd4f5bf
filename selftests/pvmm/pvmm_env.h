/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The pvmm selftests' environment: settings from environment variables,
 * time, and small files.
 */
#ifndef PVMM_ENV_H
#define PVMM_ENV_H

#include "pvmm_harness.h"	/* first: it defines _GNU_SOURCE */

#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

#endif /* PVMM_ENV_H */

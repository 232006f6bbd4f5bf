/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Control files: the driver's settings, and what else the tests write to
 * steer the driver or its device.
 */
#ifndef PVMM_PARAMS_H
#define PVMM_PARAMS_H

#include "pvmm_module.h"

/* The settings: module parameters, writable at run time. */
#define PVMM_PARAM_DIR		PVMM_SYSFS_MODULE "/parameters"

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

#endif /* PVMM_PARAMS_H */

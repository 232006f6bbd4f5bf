/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The pvmm driver as userspace finds it: whether it is there with a device
 * bound, whether it can be reloaded, and loading and unloading it.  The
 * checks give the reason a program or a test has to skip.
 */
#ifndef PVMM_MODULE_H
#define PVMM_MODULE_H

#include "pvmm_env.h"

#include <dirent.h>
#include <sys/statfs.h>
#include <sys/syscall.h>

#include "pvmm_stats.h"

#define PVMM_DEBUGFS_MOUNT	"/sys/kernel/debug"
#define PVMM_DEBUGFS_MAGIC	0x64626720
#define PVMM_PCI_DRIVER_DIR	"/sys/bus/pci/drivers/pvmm"
#define PVMM_SYSFS_MODULE	"/sys/module/pvmm"
#define PVMM_MODULE_NAME	"pvmm"
#define PVMM_MODULE_DEFAULT	"/lib/modules/pvmm.ko"

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

#endif /* PVMM_MODULE_H */

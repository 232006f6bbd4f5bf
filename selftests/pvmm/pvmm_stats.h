/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Parser for /sys/kernel/debug/pvmm/stats: one "name value" pair per line.
 *
 * Values are decimal u64 counters or gauges, except for a few words such as
 * "mode async".  Unknown names are kept but never required, so the driver can
 * add statistics without breaking the tests.  No kselftest harness here, so
 * the parser can be unit-tested on its own.
 */
#ifndef PVMM_STATS_H
#define PVMM_STATS_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PVMM_DEBUGFS_DIR	"/sys/kernel/debug/pvmm"
#define PVMM_STATS_DEFAULT	PVMM_DEBUGFS_DIR "/stats"

#define PVMM_STATS_MAX		256
#define PVMM_STAT_NAME_LEN	64
#define PVMM_STAT_WORD_LEN	64
#define PVMM_STATS_FILE_MAX	(64 * 1024)

struct pvmm_stat {
	char name[PVMM_STAT_NAME_LEN];
	char word[PVMM_STAT_WORD_LEN];	/* value as text, always set */
	uint64_t val;			/* valid if numeric */
	bool numeric;
};

struct pvmm_stats {
	unsigned int n;
	struct pvmm_stat s[PVMM_STATS_MAX];
};

/* The names the driver contract promises; "mode" is the only word value. */
static inline const char *const *pvmm_stat_names(void)
{
	static const char *const names[] = {
		"hooks_active", "spaces_created", "spaces_destroyed",
		"spaces_acked", "pgds_parked", "pgds_released",
		"pgds_pending", "spaces_live", "outstanding",
		"outstanding_pages", "untracked_exits", "submissions",
		"doorbells", "irqs", "completions", "bad_completions",
		"protocol_errors", "backlog", "forced_releases",
		"pgds_returned", "stale_completions", "resets",
		"reset_releases", "host_declared_dead", "ring_broken",
		"resetting", "host_dead", NULL,
	};

	return names;
}

/* PVMM_STATS_PATH points the tests at another file (e.g. a fake one). */
static inline const char *pvmm_stats_path(void)
{
	const char *p = getenv("PVMM_STATS_PATH");

	return p && *p ? p : PVMM_STATS_DEFAULT;
}

static inline bool pvmm_parse_u64(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

/*
 * Parse the text of a stats file.  Blank lines are skipped; a line without a
 * value, or with a value that is not a plain decimal u64, is kept as a word.
 * Returns 0, or -EINVAL (with @err filled in) if the text holds no pair at all
 * or a line cannot be stored.
 */
static inline int pvmm_stats_parse(struct pvmm_stats *st, char *text,
				   char *err, size_t errlen)
{
	char *line, *save = NULL;

	st->n = 0;
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		struct pvmm_stat *e;
		char *name, *val, *end;

		name = line + strspn(line, " \t\r");
		if (!*name)
			continue;
		val = name + strcspn(name, " \t\r");
		if (*val)
			*val++ = '\0';
		val += strspn(val, " \t\r");
		end = val + strlen(val);
		while (end > val && (end[-1] == ' ' || end[-1] == '\t' ||
				     end[-1] == '\r'))
			*--end = '\0';

		if (strlen(name) >= PVMM_STAT_NAME_LEN)
			continue;	/* cannot be a name we look up */
		if (st->n == PVMM_STATS_MAX) {
			snprintf(err, errlen, "more than %d stats lines",
				 PVMM_STATS_MAX);
			return -EINVAL;
		}
		e = &st->s[st->n++];
		strcpy(e->name, name);
		snprintf(e->word, sizeof(e->word), "%s", val);
		e->numeric = pvmm_parse_u64(val, &e->val);
		if (!e->numeric)
			e->val = 0;
	}
	if (!st->n) {
		snprintf(err, errlen, "no \"name value\" lines");
		return -EINVAL;
	}
	return 0;
}

/* Read and parse the stats file.  Returns 0 or a negative errno. */
static inline int pvmm_stats_read_path(const char *path, struct pvmm_stats *st,
				       char *err, size_t errlen)
{
	static char buf[PVMM_STATS_FILE_MAX + 1];
	size_t len = 0;
	ssize_t r;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "open %s: %s", path, strerror(-ret));
		return ret;
	}
	/*
	 * Every read() renders the file anew and copies from the offset: one
	 * read of the whole buffer is one snapshot.  Read to EOF all the same,
	 * in case a read comes back short.
	 */
	while (len < PVMM_STATS_FILE_MAX) {
		r = read(fd, buf + len, PVMM_STATS_FILE_MAX - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			ret = -errno;
			close(fd);
			snprintf(err, errlen, "read %s: %s", path,
				 strerror(-ret));
			return ret;
		}
		if (!r)
			break;
		len += r;
	}
	close(fd);
	if (len == PVMM_STATS_FILE_MAX) {
		snprintf(err, errlen, "%s is larger than %d bytes", path,
			 PVMM_STATS_FILE_MAX);
		return -E2BIG;
	}
	buf[len] = '\0';
	ret = pvmm_stats_parse(st, buf, err, errlen);
	if (ret) {
		size_t l = strlen(err);

		snprintf(err + l, errlen - l, " in %s", path);
	}
	return ret;
}

static inline int pvmm_stats_read(struct pvmm_stats *st, char *err,
				  size_t errlen)
{
	return pvmm_stats_read_path(pvmm_stats_path(), st, err, errlen);
}

/* First entry with this name, or NULL. */
static inline const struct pvmm_stat *
pvmm_stats_find(const struct pvmm_stats *st, const char *name)
{
	unsigned int i;

	for (i = 0; i < st->n; i++)
		if (!strcmp(st->s[i].name, name))
			return &st->s[i];
	return NULL;
}

/* Returns 0, -ENOENT if the name is missing, -EINVAL if not a number. */
static inline int pvmm_stats_get(const struct pvmm_stats *st,
				 const char *name, uint64_t *val)
{
	const struct pvmm_stat *e = pvmm_stats_find(st, name);

	if (!e)
		return -ENOENT;
	if (!e->numeric)
		return -EINVAL;
	*val = e->val;
	return 0;
}

#endif /* PVMM_STATS_H */

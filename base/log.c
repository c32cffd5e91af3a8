/* log.c — the station's log: journal, file or stderr (log.h). */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

#define MAX_FIELDS 16

struct st_log {
	enum st_log_target target;
	char ident[32];
	FILE *file;
	st_log_sink_fn sink;
	void *ctx;
	pthread_mutex_t lock;
};

int st_log_field_ok(const char *name)
{
	static const char *const secret[] = { "PIN", "PASSWORD", "PASSWD", "SECRET",
					      "KEY_MATERIAL", "PRIVATE" };

	if (!name || !*name || *name == '_' || strlen(name) > 64)
		return 0;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
			return 0;
	for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
		if (strstr(name, secret[i]))
			return 0;
	return 1;
}

static st_log *alloc(const char *ident, enum st_log_target t)
{
	st_log *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->target = t;
	snprintf(l->ident, sizeof(l->ident), "%s", ident ? ident : "station");
	pthread_mutex_init(&l->lock, NULL);
	return l;
}

st_log *st_log_open(const char *ident, const char *file, char *err, size_t errlen)
{
	const char *js = getenv("JOURNAL_STREAM");
	st_log *l;
	int fd;

	if (js && *js)
		return alloc(ident, ST_LOG_JOURNAL);
	if (!file)
		return alloc(ident, ST_LOG_STDERR);
	fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open the log %s: %s", file, strerror(errno));
		return NULL;
	}
	l = alloc(ident, ST_LOG_FILE);
	if (!l || !(l->file = fdopen(fd, "a"))) {
		snprintf(err, errlen, "cannot open the log %s: out of memory", file);
		close(fd);
		free(l);
		return NULL;
	}
	setvbuf(l->file, NULL, _IOLBF, 0);
	return l;
}

st_log *st_log_open_sink(const char *ident, st_log_sink_fn sink, void *ctx)
{
	st_log *l = alloc(ident, ST_LOG_SINK);

	if (l)
		l->sink = sink, l->ctx = ctx;
	return l;
}

void st_log_close(st_log *l)
{
	if (!l)
		return;
	if (l->file)
		fclose(l->file);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

enum st_log_target st_log_target(const st_log *l)
{
	return l->target;
}

int st_log_format(char *out, size_t len, const char *msg,
		  const struct st_log_field *fields, size_t n)
{
	size_t o;
	int w, first = 1;

	w = snprintf(out, len, "%s", msg);
	if (w < 0)
		return w;
	o = (size_t)w;
	for (size_t i = 0; i < n; i++) {
		if (!fields[i].value || !st_log_field_ok(fields[i].name))
			continue;
		w = snprintf(o < len ? out + o : NULL, o < len ? len - o : 0, "%s%s=%s",
			     first ? " [" : " ", fields[i].name, fields[i].value);
		if (w < 0)
			return w;
		o += (size_t)w;
		first = 0;
	}
	if (!first) {
		if (o + 1 < len)
			out[o] = ']', out[o + 1] = '\0';
		o++;
	}
	return (int)o;
}

/* The journal: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER and the fields. */
static void to_journal(const st_log *l, int prio, const char *msg,
		       const struct st_log_field *fields, size_t n)
{
	struct iovec iov[MAX_FIELDS + 3];
	char *text[MAX_FIELDS + 3];
	int k = 0;

	if (asprintf(&text[k], "MESSAGE=%s", msg) >= 0)
		k++;
	if (asprintf(&text[k], "PRIORITY=%d", prio) >= 0)
		k++;
	if (asprintf(&text[k], "SYSLOG_IDENTIFIER=%s", l->ident) >= 0)
		k++;
	for (size_t i = 0; i < n && k < MAX_FIELDS + 3; i++) {
		if (!fields[i].value || !st_log_field_ok(fields[i].name))
			continue;
		if (asprintf(&text[k], "%s=%s", fields[i].name, fields[i].value) >= 0)
			k++;
	}
	for (int i = 0; i < k; i++)
		iov[i] = (struct iovec){ text[i], strlen(text[i]) };
	sd_journal_sendv(iov, k);
	for (int i = 0; i < k; i++)
		free(text[i]);
}

void st_log_send(st_log *l, int prio, const struct st_log_field *fields,
		 size_t n, const char *fmt, ...)
{
	struct st_log_field ok[MAX_FIELDS];
	size_t nok = 0;
	char msg[1024], line[2048];
	va_list ap;

	if (!l)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (size_t i = 0; i < n && nok < MAX_FIELDS; i++)
		if (fields[i].value && st_log_field_ok(fields[i].name))
			ok[nok++] = fields[i];
	pthread_mutex_lock(&l->lock);
	switch (l->target) {
	case ST_LOG_JOURNAL:
		to_journal(l, prio, msg, ok, nok);
		break;
	case ST_LOG_SINK:
		l->sink(l->ctx, prio, msg, ok, nok);
		break;
	case ST_LOG_FILE: case ST_LOG_STDERR: {
		char ts[32] = "";
		time_t now = time(NULL);
		struct tm tm;

		if (gmtime_r(&now, &tm))
			strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
		st_log_format(line, sizeof(line), msg, ok, nok);
		fprintf(l->file ? l->file : stderr, "%s %s: %s\n", ts, l->ident, line);
		break;
	}
	}
	pthread_mutex_unlock(&l->lock);
}

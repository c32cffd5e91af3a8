/* log.h — the station's log, with structured fields, to one of three
 * places: the systemd journal when the station runs under systemd
 * (sd_journal_sendv: every field searchable, `journalctl UNIT_UID=...`),
 * the configured log file, or standard error.  A front end opens one
 * handle (no global state) and may register its own sink instead (tests,
 * another transport).
 *
 * Only what is not secret is ever passed in: unit UIDs, slots, results,
 * work orders, station IDs, step names.  A field whose name says it holds
 * a secret (PIN, PASSWORD, SECRET, KEY_MATERIAL) is refused and dropped
 * from every target, so a careless caller fails safe. */
#ifndef ST_LOG_H
#define ST_LOG_H

#include <stddef.h>
#include <syslog.h>

typedef struct st_log st_log;

/* One structured field: name in journal form (A-Z, 0-9, _; not starting
 * with _), value as text.  NULL values are left out. */
struct st_log_field {
	const char *name;
	const char *value;
};

enum st_log_target {
	ST_LOG_STDERR,
	ST_LOG_FILE,
	ST_LOG_JOURNAL,
	ST_LOG_SINK,
};

/* A sink gets each message with its priority (LOG_INFO, ...) and fields
 * (already filtered). */
typedef void (*st_log_sink_fn)(void *ctx, int prio, const char *msg,
			       const struct st_log_field *fields, size_t n);

/* Where the log goes: the journal when under systemd (JOURNAL_STREAM set,
 * as systemd sets it for a service's stdout/stderr), else file when given
 * (appended, created 0640), else stderr.  ident: SYSLOG_IDENTIFIER.
 * NULL when the file cannot be opened (err says why) or out of memory. */
st_log *st_log_open(const char *ident, const char *file, char *err, size_t errlen);
/* A log whose every message goes to sink (ST_LOG_SINK). */
st_log *st_log_open_sink(const char *ident, st_log_sink_fn sink, void *ctx);
void st_log_close(st_log *l);
enum st_log_target st_log_target(const st_log *l);

/* Log msg (printf format) with n fields at prio.  Safe from several
 * threads. */
void st_log_send(st_log *l, int prio, const struct st_log_field *fields,
		 size_t n, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The one-line form of a message for a file or stderr:
 * "msg [NAME=value NAME=value]" (secret and malformed fields dropped, as
 * everywhere).  Returns the length it needed, as snprintf. */
int st_log_format(char *out, size_t len, const char *msg,
		  const struct st_log_field *fields, size_t n);

/* Would this field reach a target?  Its name must be in journal form and
 * not name a secret. */
int st_log_field_ok(const char *name);

#endif

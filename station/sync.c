/* sync.c — the engine's side of the central copy of the records
 * (docs/sync.md): the sync group of the configuration, the state file of
 * the last sync, the lag line for a status header and the shared quota hook
 * of a provisioning run.  The commands (`records sync`, `records verify
 * --pg`) are cli/cmd_sync.c; PostgreSQL itself is records/pgsync.c. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libconfig.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "station/st_int.h"
#include "records/pgsync.h"
#include "station/checkpoint.h"
#include "station/sync.h"
#include "station/schema.h"

#define RECONNECT_MS 5000	/* a provisioning run asks an unreachable
				 * server again at most this often */

/* ---- Configuration ---- */

/* *dst = a copy of the string setting at path, NULL when absent. */
static int opt_str(const config_t *c, const char *path, char **dst)
{
	const char *v = st_schema_string(c, st_config_schema, st_config_schema_len, path);

	*dst = v ? strdup(v) : NULL;
	return v && !*dst ? ST_E_NOMEM : ST_OK;
}

static int opt_int(const config_t *c, const char *path)
{
	return (int)st_schema_int(c, st_config_schema, st_config_schema_len, path);
}

int st_sync_config_load(const char *path, st_sync_cfg *out, char *err,
			size_t errlen)
{
	const char *mode;
	config_t c;
	int rc;

	memset(out, 0, sizeof(*out));
	config_init(&c);
	rc = st_config_read_checked(&c, path, err, errlen);
	if (rc)
		goto cleanup;
	out->batch = opt_int(&c, "sync.batch");
	out->interval_ms = opt_int(&c, "sync.interval_ms");
	out->backoff_max_ms = opt_int(&c, "sync.backoff_max_ms");
	out->connect_timeout_s = opt_int(&c, "sync.connect_timeout_s");
	if (!config_lookup(&c, "sync"))
		goto cleanup;
	out->configured = true;
	if (opt_str(&c, "sync.conninfo", &out->conninfo) ||
	    opt_str(&c, "sync.passfile", &out->passfile) ||
	    opt_str(&c, "sync.sslmode", &out->sslmode) ||
	    opt_str(&c, "sync.sslrootcert", &out->sslrootcert) ||
	    opt_str(&c, "sync.sslcert", &out->sslcert) ||
	    opt_str(&c, "sync.sslkey", &out->sslkey)) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	mode = st_schema_string(&c, st_config_schema, st_config_schema_len,
				"sync.offline");
	out->offline_allowance = mode && !strcmp(mode, "allowance");
	out->allowance = opt_int(&c, "sync.allowance");
	if (out->offline_allowance && out->allowance == 0) {
		snprintf(err, errlen, "%s:%d: 'sync.offline' = \"allowance\" needs "
			 "sync.allowance = N (units pre-reserved for offline "
			 "work)", path, st_schema_line(&c, "sync.offline"));
		rc = ST_E_CONFIG;
	}
cleanup:
	config_destroy(&c);
	if (rc)
		st_sync_config_free(out);
	return rc;
}

void st_sync_config_free(st_sync_cfg *c)
{
	free(c->conninfo);
	free(c->passfile);
	free(c->sslmode);
	free(c->sslrootcert);
	free(c->sslcert);
	free(c->sslkey);
	memset(c, 0, sizeof(*c));
}

pgs_opts st_sync_opts(const st_sync_cfg *s, const st_config *cfg)
{
	return (pgs_opts){ .conninfo = s->conninfo, .passfile = s->passfile,
		.sslmode = s->sslmode, .sslrootcert = s->sslrootcert,
		.sslcert = s->sslcert, .sslkey = s->sslkey,
		.connect_timeout_s = s->connect_timeout_s,
		.station_id = cfg->station_id, .batch = s->batch };
}

/* ---- The state file: what the last sync did, for --status and the UI ---- */

static void state_path(const st_config *cfg, const char *what, char *buf,
		       size_t len)
{
	snprintf(buf, len, "%s.%s.json", cfg->records_path, what);
}

json_t *st_sync_state_read(const st_config *cfg, const char *what)
{
	char path[4096];
	json_error_t je;
	json_t *o;

	state_path(cfg, what, path, sizeof(path));
	o = json_load_file(path, 0, &je);
	return json_is_object(o) ? o : (json_decref(o), json_object());
}

/* Replace the file whole (write, fsync, rename): a reader never sees half. */
int st_sync_state_write(const st_config *cfg, const char *what, json_t *o)
{
	char path[4096], tmp[4200];
	int fd, ok;
	char *text = json_dumps(o, JSON_INDENT(1) | JSON_SORT_KEYS);

	if (!text)
		return ST_E_NOMEM;
	state_path(cfg, what, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text) &&
	     fsync(fd) == 0;
	if (fd >= 0)
		ok = close(fd) == 0 && ok;
	ok = ok && rename(tmp, path) == 0;
	if (!ok)
		unlink(tmp);
	free(text);
	return ok ? ST_OK : ST_E_IO;
}

static void utc_now(char out[32])
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void st_sync_note_result(const st_config *cfg, const pgs_result *res,
			const char *error)
{
	json_t *o = st_sync_state_read(cfg, "sync");
	char now[32];

	utc_now(now);
	if (error) {
		json_object_set_new(o, "last_error", json_string(error));
		json_object_set_new(o, "last_error_at", json_string(now));
	} else {
		json_object_set_new(o, "last_ok", json_string(now));
		json_object_del(o, "last_error");
		json_object_del(o, "last_error_at");
	}
	if (res && (!error || res->server_seq))
		json_object_set_new(o, "server_seq", json_integer(res->server_seq));
	st_sync_state_write(cfg, "sync", o);
	json_decref(o);
}

void st_sync_lag(const st_config *cfg, rec_store *rec, char *buf, size_t len)
{
	json_t *o = st_sync_state_read(cfg, "sync");
	long long server = json_integer_value(json_object_get(o, "server_seq"));
	const char *ok = json_string_value(json_object_get(o, "last_ok"));
	const char *bad = json_string_value(json_object_get(o, "last_error"));
	long long local = 0, events = 0, units = 0;

	buf[0] = '\0';
	if ((ok || bad) && !pgs_local_lag(rec, server, &local, &events, &units)) {
		if (events == 0)
			snprintf(buf, len, "sync: up to date (%s)", ok ? ok + 11 : "-");
		else
			snprintf(buf, len, "sync: %lld events / %lld units behind%s%s",
				 events, units, bad ? "; last error: " : "",
				 bad ? bad : "");
	}
	json_decref(o);
}

/* ---- The shared quota of a provisioning run ---- */

struct st_sync_quota {
	pthread_mutex_t lock;
	st_sync_cfg scfg;
	const st_config *cfg;
	rec_store *rec;
	pgs *p;
	int64_t next_try;       /* st_now_ms() of the next reconnect */
	long held;              /* allowance held (from the allowance file) */
	long long held_seq;     /* local seq when it was topped up */
	long used;              /* taken offline since, before this run, and
				 * granted by this run: counted here, since a
				 * grant's step is recorded after the grant and
				 * slots ask concurrently */
	char online[64][72];    /* devices reserved centrally, to settle */
	st_quota_hook hook;
};

static bool reconnect(st_sync_quota *q)
{
	pgs_opts o = st_sync_opts(&q->scfg, q->cfg);

	if (pgs_ok(q->p))
		return true;
	if (st_now_ms() < q->next_try)
		return false;
	pgs_close(q->p);
	q->p = NULL;
	if (pgs_connect(&o, &q->p) == ST_OK)
		return true;
	q->next_try = st_now_ms() + RECONNECT_MS;
	return false;
}

static void remember(st_sync_quota *q, const char *uid, bool on)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(q->online); i++) {
		if (on && !q->online[i][0]) {
			snprintf(q->online[i], sizeof(q->online[i]), "%s", uid);
			return;
		}
		if (!on && !strcmp(q->online[i], uid)) {
			q->online[i][0] = '\0';
			return;
		}
	}
}

static bool remembered(st_sync_quota *q, const char *uid)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(q->online); i++)
		if (!strcmp(q->online[i], uid))
			return true;
	return false;
}

static int quota_reserve(void *ctx, const char *wo, const char *uid,
			 st_quota_note *note)
{
	st_sync_quota *q = ctx;
	int rc;

	pthread_mutex_lock(&q->lock);
	rc = reconnect(q) ? pgs_reserve(q->p, wo, uid) : ST_E_IO;
	if (rc == ST_OK) {
		remember(q, uid, true);
		note->step = ST_STEP_QUOTA;
		snprintf(note->detail, sizeof(note->detail), "work order %s: "
			 "reserved in the central database", wo);
		goto out;
	}
	if (rc != ST_E_IO) {
		snprintf(note->detail, sizeof(note->detail), "%s", pgs_errmsg(q->p));
		goto out;
	}
	if (!q->scfg.offline_allowance) {
		snprintf(note->detail, sizeof(note->detail), "the central database "
			 "is unreachable (%s) and sync.offline = \"stop\": no unit "
			 "is started until it is back", pgs_errmsg(q->p));
		goto out;
	}
	if (q->used >= q->held) {
		rc = ST_E_IO;
		snprintf(note->detail, sizeof(note->detail), "the central database "
			 "is unreachable (%s) and this station's pre-reserved "
			 "allowance for work order %s is used up (%ld of %ld): no "
			 "unit is started until it is back", pgs_errmsg(q->p), wo,
			 q->used, q->held);
		goto out;
	}
	note->step = ST_STEP_QUOTA_OFFLINE;
	snprintf(note->detail, sizeof(note->detail), "work order %s: the central "
		 "database is unreachable; taken from this station's pre-reserved "
		 "allowance (%ld of %ld left after this unit)", wo,
		 q->held - q->used - 1, q->held);
	q->used++;
	rc = ST_OK;
out:
	pthread_mutex_unlock(&q->lock);
	return rc;
}

static void quota_finish(void *ctx, const char *wo, const char *uid,
			 st_verdict result)
{
	st_sync_quota *q = ctx;

	pthread_mutex_lock(&q->lock);
	/* only a central reservation is settled here; an offline unit is
	 * settled when its events are shipped.  One that cannot reach the
	 * server keeps holding its reservation (never over-books) until the
	 * device is presented again */
	if (remembered(q, uid)) {
		remember(q, uid, false);
		if (reconnect(q))
			pgs_finish(q->p, wo, uid, st_verdict_name(result));
	}
	pthread_mutex_unlock(&q->lock);
}

int st_sync_quota_open(const char *config_path, const st_config *cfg,
		       rec_store *rec, const char *wo, st_sync_quota **out,
		       char *err, size_t errlen)
{
	st_sync_quota *q;
	pgs_opts o;
	pgs_workorder pw;
	rec_workorder lw;
	json_t *st = NULL, *e;
	int rc;

	*out = NULL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return ST_E_NOMEM;
	pthread_mutex_init(&q->lock, NULL);
	q->cfg = cfg;
	q->rec = rec;
	q->hook = (st_quota_hook){ .reserve = quota_reserve,
				   .finish = quota_finish, .ctx = q };
	rc = st_sync_config_load(config_path, &q->scfg, err, errlen);
	if (rc || !q->scfg.configured || !wo)
		goto cleanup;
	st = st_sync_state_read(cfg, "allowance");
	e = json_object_get(st, wo);
	q->held = (long)json_integer_value(json_object_get(e, "held"));
	q->held_seq = json_integer_value(json_object_get(e, "at_seq"));
	if (pgs_local_offline(rec, wo, q->held_seq, &q->used)) {
		snprintf(err, errlen, "records: %s", rec_errmsg(rec));
		rc = ST_E_DB;
		goto cleanup;
	}
	o = st_sync_opts(&q->scfg, cfg);
	if (pgs_connect(&o, &q->p) != ST_OK) {
		/* offline from the start: the policy decides per unit */
		q->next_try = st_now_ms() + RECONNECT_MS;
		rc = ST_OK;
		goto cleanup;
	}
	rc = pgs_workorder_get(q->p, wo, &pw);
	if (rc == ST_E_NOTFOUND && rec_workorder_get(rec, wo, &lw) == ST_OK) {
		/* made here before sync was configured: publish it */
		rc = pgs_workorder_put(q->p, wo, lw.quota);
		if (!rc)
			rc = pgs_workorder_get(q->p, wo, &pw);
	}
	if (rc) {
		snprintf(err, errlen, "%s", pgs_errmsg(q->p));
		goto cleanup;
	}
	rc = rec_workorder_get(rec, wo, &lw);
	if (rc == ST_E_NOTFOUND)
		rc = rec_workorder_create(rec, wo, pw.quota);
	if (rc) {
		snprintf(err, errlen, "records: %s", rec_errmsg(rec));
		goto cleanup;
	}
	if (q->scfg.offline_allowance) {
		long long server = 0;
		long held = 0, unsynced = 0;
		char when[32];

		/* what the server counts as unused allowance, less the units
		 * this station already took from it offline and has not
		 * shipped yet */
		rc = pgs_allowance(q->p, wo, q->scfg.allowance, &held);
		if (!rc)
			rc = pgs_server_mark(q->p, &server, when);
		if (rc) {
			snprintf(err, errlen, "%s", pgs_errmsg(q->p));
			goto cleanup;
		}
		if (pgs_local_offline(rec, wo, server, &unsynced) ||
		    pgs_local_lag(rec, 0, &q->held_seq, NULL, NULL)) {
			snprintf(err, errlen, "records: %s", rec_errmsg(rec));
			rc = ST_E_DB;
			goto cleanup;
		}
		q->held = held - unsynced > 0 ? held - unsynced : 0;
		q->used = 0;
		e = json_pack("{s:I, s:I}", "held", (json_int_t)q->held,
			      "at_seq", (json_int_t)q->held_seq);
		json_object_set_new(st, wo, e);
		if (st_sync_state_write(cfg, "allowance", st)) {
			snprintf(err, errlen, "cannot write the allowance file "
				 "beside %s", cfg->records_path);
			rc = ST_E_IO;
			goto cleanup;
		}
	}
cleanup:
	json_decref(st);
	if (rc || !q->scfg.configured || !wo) {
		st_sync_quota_close(q);
		return rc;
	}
	*out = q;
	return ST_OK;
}

const st_quota_hook *st_sync_quota_hook(st_sync_quota *q)
{
	return q ? &q->hook : NULL;
}

void st_sync_quota_close(st_sync_quota *q)
{
	if (!q)
		return;
	pgs_close(q->p);
	st_sync_config_free(&q->scfg);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

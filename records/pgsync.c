/* pgsync.c — the central PostgreSQL copy of every station's audit chain
 * (pgsync.h, docs/sync.md): schema, shipping, global rules, shared
 * quotas, verification. */
#include "records/pgsync.h"
#include "rec_int.h"

#include "base.h"

#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PGS_MSG_MAX	768
#define PGS_LOCK_KEY	"1398034755"	/* advisory lock of the schema: "STRC" */

struct pgs {
	PGconn *conn;
	char station[128];
	int batch;
	char msg[PGS_MSG_MAX];
};

/* Central schema steps, oldest first; a database at version N gets every
 * step above N in one transaction.  Never edit a shipped step. */
static const struct pgs_migration {
	int version;
	const char *sql;
} migrations[] = {
	{ 1,
	  "CREATE TABLE stations ("
	  " id text PRIMARY KEY,"
	  " high_seq bigint NOT NULL DEFAULT 0,"
	  " head_hash text NOT NULL DEFAULT repeat('0', 64),"
	  " first_sync timestamptz NOT NULL DEFAULT now(),"
	  " last_sync timestamptz);"
	  "CREATE TABLE audit_certs ("
	  " sha256 text PRIMARY KEY,"
	  " pem text NOT NULL,"
	  " first_station text NOT NULL,"
	  " added_at timestamptz NOT NULL DEFAULT now());"
	  "CREATE TABLE events ("
	  " station_id text NOT NULL REFERENCES stations(id),"
	  " seq bigint NOT NULL,"
	  " hash text NOT NULL UNIQUE,"
	  " prev text NOT NULL,"
	  " at text NOT NULL,"
	  " kind text NOT NULL,"
	  " unit_id bigint,"
	  " uid text,"
	  " body text NOT NULL,"
	  " sig text,"
	  " signer text REFERENCES audit_certs(sha256),"
	  " received_at timestamptz NOT NULL DEFAULT now(),"
	  " PRIMARY KEY (station_id, seq));"
	  "CREATE INDEX events_uid ON events(uid);"
	  "CREATE TABLE units ("
	  " station_id text NOT NULL REFERENCES stations(id),"
	  " unit_id bigint NOT NULL,"
	  " uid text NOT NULL,"
	  " work_order text,"
	  " state text NOT NULL,"
	  " reason text,"
	  " cert_serial text,"
	  " cert_sha256 text,"
	  " started_at text,"
	  " finished_at text,"
	  " PRIMARY KEY (station_id, unit_id));"
	  "CREATE INDEX units_uid ON units(uid);"
	  /* the global rules: one identity per device, one unit per serial */
	  "CREATE TABLE device_identities ("
	  " uid text PRIMARY KEY,"
	  " station_id text NOT NULL,"
	  " unit_id bigint NOT NULL,"
	  " cert_serial text,"
	  " event_hash text NOT NULL);"
	  "CREATE TABLE cert_serials ("
	  " serial text PRIMARY KEY,"
	  " station_id text NOT NULL,"
	  " unit_id bigint NOT NULL,"
	  " uid text NOT NULL);"
	  "CREATE TABLE alerts ("
	  " id bigserial PRIMARY KEY,"
	  " kind text NOT NULL,"
	  " uid text,"
	  " cert_serial text,"
	  " first_station text NOT NULL,"
	  " first_unit bigint,"
	  " second_station text NOT NULL,"
	  " second_unit bigint,"
	  " event_hash text NOT NULL,"
	  " detail text NOT NULL,"
	  " raised_at timestamptz NOT NULL DEFAULT now(),"
	  " UNIQUE (kind, event_hash));"
	  "CREATE TABLE work_orders ("
	  " id text PRIMARY KEY,"
	  " quota bigint CHECK (quota IS NULL OR quota >= 0),"
	  " reserved bigint NOT NULL DEFAULT 0,"
	  " created_by text NOT NULL,"
	  " created_at timestamptz NOT NULL DEFAULT now());"
	  "CREATE TABLE reservations ("
	  " id bigserial PRIMARY KEY,"
	  " work_order text NOT NULL REFERENCES work_orders(id),"
	  " station_id text NOT NULL,"
	  " uid text,"
	  " unit_id bigint,"
	  " state text NOT NULL"
	  "  CHECK (state IN ('HELD', 'ALLOWANCE', 'PASS', 'RELEASED')),"
	  " at timestamptz NOT NULL DEFAULT now());"
	  "CREATE UNIQUE INDEX reservations_held ON reservations"
	  " (work_order, station_id, uid) WHERE state = 'HELD';"
	  "CREATE INDEX reservations_station ON reservations"
	  " (work_order, station_id, state);" },
	/* Signed checkpoints of each station's chain head (docs/records.md,
	 * "Checkpoints"): evidence of how far a chain had got, kept apart
	 * from the chain so a station that lost its tail is seen. */
	{ 2,
	  "CREATE TABLE checkpoints ("
	  " station_id text NOT NULL,"
	  " seq bigint NOT NULL,"
	  " head_hash text NOT NULL,"
	  " at text NOT NULL,"
	  " audit_cert text NOT NULL,"
	  " body text NOT NULL,"
	  " sig text NOT NULL,"
	  " received_at timestamptz NOT NULL DEFAULT now(),"
	  " PRIMARY KEY (station_id, seq, head_hash));" },
};

static int fail(pgs *p, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(pgs *p, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->msg, sizeof(p->msg), fmt, ap);
	va_end(ap);
	return err;
}

/* The server's words appended; a lost connection is ST_E_IO (retry
 * later), anything else err. */
static int pg_fail(pgs *p, int err, PGresult *res, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int pg_fail(pgs *p, int err, PGresult *res, const char *fmt, ...)
{
	const char *why = res ? PQresultErrorMessage(res) : "";
	va_list ap;
	size_t n;

	if (!why || !*why)
		why = PQerrorMessage(p->conn);
	va_start(ap, fmt);
	vsnprintf(p->msg, sizeof(p->msg), fmt, ap);
	va_end(ap);
	n = strlen(p->msg);
	snprintf(p->msg + n, sizeof(p->msg) - n, ": %s", why ? why : "");
	n = strlen(p->msg);
	while (n > 0 && (p->msg[n - 1] == '\n' || p->msg[n - 1] == ' '))
		p->msg[--n] = '\0';
	/* libpq's messages span lines: one line for logs and status */
	for (char *c = p->msg; *c; c++)
		if (*c == '\n' || *c == '\t')
			*c = ' ';
	return PQstatus(p->conn) == CONNECTION_BAD ? ST_E_IO : err;
}

/* Run sql with n text parameters (NULL: SQL NULL).  *res gets the result
 * on success (PQclear it); on failure it is cleared and the cause kept. */
static int run(pgs *p, PGresult **res, const char *what, const char *sql,
	       int n, ...)
{
	const char *v[16];
	PGresult *r;
	va_list ap;
	int st;

	va_start(ap, n);
	for (int i = 0; i < n && i < 16; i++)
		v[i] = va_arg(ap, const char *);
	va_end(ap);
	r = PQexecParams(p->conn, sql, n, NULL, v, NULL, NULL, 0);
	st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		int err = pg_fail(p, ST_E_DB, r, "%s", what);

		PQclear(r);
		if (res)
			*res = NULL;
		return err;
	}
	if (res)
		*res = r;
	else
		PQclear(r);
	return ST_OK;
}

/* Several statements in one string (the schema steps): the simple query
 * protocol. */
static int run_script(pgs *p, const char *what, const char *sql)
{
	PGresult *r = PQexec(p->conn, sql);
	int err = ST_OK;

	if (!r || PQresultStatus(r) != PGRES_COMMAND_OK)
		err = pg_fail(p, ST_E_DB, r, "%s", what);
	PQclear(r);
	return err;
}

/* Roll back whatever is open (harmless when nothing is). */
static void rollback(pgs *p)
{
	if (p->conn && PQtransactionStatus(p->conn) != PQTRANS_IDLE &&
	    PQstatus(p->conn) == CONNECTION_OK)
		PQclear(PQexec(p->conn, "ROLLBACK"));
}

static const char *val(PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

static void quiet(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

static int migrate(pgs *p)
{
	int latest = migrations[ST_ARRAY_SIZE(migrations) - 1].version;
	PGresult *res = NULL;
	char ver[16];
	int have = 0, err;

	if ((err = run(p, NULL, "begin the schema", "BEGIN", 0)) ||
	    (err = run(p, NULL, "lock the schema",
		       "SELECT pg_advisory_xact_lock(" PGS_LOCK_KEY ")", 0)) ||
	    (err = run(p, NULL, "create the schema version table",
		       "CREATE TABLE IF NOT EXISTS station_schema ("
		       " version integer NOT NULL)", 0)) ||
	    (err = run(p, &res, "read the schema version",
		       "SELECT coalesce(max(version), 0) FROM station_schema", 0)))
		goto cleanup;
	have = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (have > latest) {
		err = fail(p, ST_E_DB, "the central database has schema version "
			   "%d, newer than this station knows (%d): upgrade the "
			   "station", have, latest);
		goto cleanup;
	}
	for (size_t i = 0; i < ST_ARRAY_SIZE(migrations); i++) {
		if (migrations[i].version <= have)
			continue;
		snprintf(ver, sizeof(ver), "%d", migrations[i].version);
		if ((err = run_script(p, "central schema step", migrations[i].sql)) ||
		    (err = run(p, NULL, "record the schema version",
			       "INSERT INTO station_schema VALUES ($1::int)", 1, ver)))
			goto cleanup;
	}
	err = run(p, NULL, "commit the schema", "COMMIT", 0);
cleanup:
	rollback(p);
	return err;
}

int pgs_connect(const pgs_opts *o, pgs **out)
{
	const char *kw[10], *vv[10];
	PQconninfoOption *opts = NULL;
	char *perr = NULL, timeout[16], app[160];
	int n = 0, err;
	pgs *p;

	if (!out)
		return ST_E_INVAL;
	*out = p = calloc(1, sizeof(*p));
	if (!p)
		return ST_E_NOMEM;
	if (!o || !o->conninfo || !o->station_id || !*o->station_id)
		return fail(p, ST_E_CONFIG, "sync: no connection string or "
			    "station id");
	snprintf(p->station, sizeof(p->station), "%s", o->station_id);
	p->batch = o->batch > 0 ? o->batch : 500;
	opts = PQconninfoParse(o->conninfo, &perr);
	if (!opts) {
		err = fail(p, ST_E_CONFIG, "sync.conninfo does not parse: %s",
			   perr ? perr : "out of memory");
		PQfreemem(perr);
		return err;
	}
	for (PQconninfoOption *c = opts; c->keyword; c++) {
		if (!strcmp(c->keyword, "password") && c->val && *c->val) {
			PQconninfoFree(opts);
			return fail(p, ST_E_CONFIG, "sync.conninfo holds a password: "
				    "put it in a password file (sync.passfile or "
				    "PGPASSFILE), never in the configuration");
		}
	}
	PQconninfoFree(opts);
	snprintf(timeout, sizeof(timeout), "%d",
		 o->connect_timeout_s > 0 ? o->connect_timeout_s : 10);
	snprintf(app, sizeof(app), "station %s", o->station_id);
	kw[n] = "dbname"; vv[n++] = o->conninfo;
	kw[n] = "connect_timeout"; vv[n++] = timeout;
	kw[n] = "application_name"; vv[n++] = app;
	if (o->passfile) { kw[n] = "passfile"; vv[n++] = o->passfile; }
	if (o->sslmode) { kw[n] = "sslmode"; vv[n++] = o->sslmode; }
	if (o->sslrootcert) { kw[n] = "sslrootcert"; vv[n++] = o->sslrootcert; }
	if (o->sslcert) { kw[n] = "sslcert"; vv[n++] = o->sslcert; }
	if (o->sslkey) { kw[n] = "sslkey"; vv[n++] = o->sslkey; }
	kw[n] = NULL;
	vv[n] = NULL;
	p->conn = PQconnectdbParams(kw, vv, 1);
	if (!p->conn)
		return fail(p, ST_E_NOMEM, "out of memory connecting");
	if (PQstatus(p->conn) != CONNECTION_OK)
		return pg_fail(p, ST_E_IO, NULL, "cannot reach the central "
			       "database");
	PQsetNoticeProcessor(p->conn, quiet, NULL);
	return migrate(p);
}

const char *pgs_errmsg(const pgs *p)
{
	return p ? p->msg : "";
}

bool pgs_ok(const pgs *p)
{
	return p && p->conn && PQstatus(p->conn) == CONNECTION_OK;
}

void pgs_close(pgs *p)
{
	if (!p)
		return;
	if (p->conn)
		PQfinish(p->conn);
	free(p);
}

/* ---- Reading the local chain ---- */

struct lev {
	long long seq, unit;
	char *at, *kind, *uid, *body, *hash, *sig;
};

static void lev_free(struct lev *e, int n)
{
	for (int i = 0; i < n; i++) {
		free(e[i].at);
		free(e[i].kind);
		free(e[i].uid);
		free(e[i].body);
		free(e[i].hash);
		free(e[i].sig);
	}
	free(e);
}

static char *dup_col(sqlite3_stmt *s, int i)
{
	const char *v = (const char *)sqlite3_column_text(s, i);

	return v ? strdup(v) : NULL;
}

/* Up to max local events above seq, copied out so no lock is held while
 * the network is used. */
static int local_events(pgs *p, rec_store *r, long long after, int max,
			struct lev **out, int *n)
{
	struct lev *e = calloc((size_t)max, sizeof(*e));
	sqlite3_stmt *s = NULL;
	int rc, err;

	*out = NULL;
	*n = 0;
	if (!e)
		return fail(p, ST_E_NOMEM, "out of memory");
	err = rec_enter(r);
	if (err)
		goto out;
	if (sqlite3_prepare_v2(r->db, "SELECT seq, at, kind, unit_id, uid, body,"
			       " hash, sig FROM events WHERE seq > ?1"
			       " ORDER BY seq LIMIT ?2", -1, &s, NULL) != SQLITE_OK) {
		err = rec_db_fail(r, ST_E_DB, "read the local events");
		goto out;
	}
	sqlite3_bind_int64(s, 1, after);
	sqlite3_bind_int(s, 2, max);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct lev *v = &e[(*n)++];

		v->seq = sqlite3_column_int64(s, 0);
		v->unit = sqlite3_column_int64(s, 3);
		v->at = dup_col(s, 1);
		v->kind = dup_col(s, 2);
		v->uid = dup_col(s, 4);
		v->body = dup_col(s, 5);
		v->hash = dup_col(s, 6);
		v->sig = dup_col(s, 7);
		if (!v->at || !v->kind || !v->body || !v->hash) {
			err = rec_fail(r, ST_E_NOMEM, "out of memory");
			goto out;
		}
	}
	if (rc != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "read the local events");
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	if (err) {
		fail(p, err, "local store: %s", rec_errmsg(r));
		lev_free(e, *n);
		*n = 0;
		return err;
	}
	*out = e;
	return ST_OK;
}

int pgs_local_lag(rec_store *r, long long server_seq, long long *local_seq,
		  long long *events, long long *units)
{
	sqlite3_stmt *s = NULL;
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	/* range scans on the primary key: cheap enough for every redraw */
	if (sqlite3_prepare_v2(r->db, "SELECT (SELECT coalesce(max(seq), 0)"
			       " FROM events), (SELECT count(*) FROM events"
			       " WHERE seq > ?1), (SELECT count(DISTINCT unit_id)"
			       " FROM events WHERE seq > ?1)", -1, &s,
			       NULL) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 1, server_seq) != SQLITE_OK ||
	    sqlite3_step(s) != SQLITE_ROW) {
		err = rec_db_fail(r, ST_E_DB, "measure the sync lag");
		goto out;
	}
	if (local_seq)
		*local_seq = sqlite3_column_int64(s, 0);
	if (events)
		*events = sqlite3_column_int64(s, 1);
	if (units)
		*units = sqlite3_column_int64(s, 2);
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	return err;
}

int pgs_local_offline(rec_store *r, const char *wo, long long seq, long *n)
{
	sqlite3_stmt *s = NULL;
	int err;

	if (!r || !wo || !n)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	if (sqlite3_prepare_v2(r->db, "SELECT count(*) FROM events e"
			       " JOIN units u ON u.id = e.unit_id"
			       " WHERE e.seq > ?1 AND e.kind = 'step'"
			       " AND json_extract(e.body, '$.data.step') ="
			       " 'quota-offline' AND u.work_order = ?2",
			       -1, &s, NULL) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 1, seq) != SQLITE_OK ||
	    rec_bind_text(s, 2, wo) != SQLITE_OK ||
	    sqlite3_step(s) != SQLITE_ROW) {
		err = rec_db_fail(r, ST_E_DB, "count the units started offline");
		goto out;
	}
	*n = (long)sqlite3_column_int64(s, 0);
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* Audit certificates go first: events name them.  Every one, each pass:
 * there are few (one per audit key the station ever had). */
static int ship_certs(pgs *p, rec_store *r)
{
	struct cert { char fp[REC_HASH_HEX]; char *pem; } *c = NULL, *m;
	sqlite3_stmt *s = NULL;
	int n = 0, rc, err;

	err = rec_enter(r);
	if (!err && sqlite3_prepare_v2(r->db, "SELECT sha256, pem FROM audit_certs"
				       " ORDER BY rowid", -1, &s, NULL) != SQLITE_OK)
		err = rec_db_fail(r, ST_E_DB, "read the audit certificates");
	while (!err && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		m = realloc(c, sizeof(*c) * (size_t)(n + 1));
		if (!m) {
			err = rec_fail(r, ST_E_NOMEM, "out of memory");
			break;
		}
		c = m;
		snprintf(c[n].fp, sizeof(c[n].fp), "%s", sqlite3_column_text(s, 0));
		c[n].pem = dup_col(s, 1);
		if (c[n++].pem == NULL)
			err = rec_fail(r, ST_E_NOMEM, "out of memory");
	}
	if (!err && rc != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "read the audit certificates");
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	if (err)
		fail(p, err, "local store: %s", rec_errmsg(r));
	for (int i = 0; i < n && !err; i++)
		err = run(p, NULL, "store an audit certificate",
			  "INSERT INTO audit_certs (sha256, pem, first_station)"
			  " VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
			  3, c[i].fp, c[i].pem, p->station);
	for (int i = 0; i < n; i++)
		free(c[i].pem);
	free(c);
	return err;
}

/* ---- Applying one event to the central tables ---- */

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* A PASS for a device or serial that another station already holds. */
static int raise_alert(pgs *p, const char *kind, const char *uid,
		       const char *serial, const char *first, const char *funit,
		       const char *unit, const char *hash, const char *detail,
		       long long *raised)
{
	PGresult *res = NULL;
	int err;

	err = run(p, &res, "record an alert",
		  "INSERT INTO alerts (kind, uid, cert_serial, first_station,"
		  " first_unit, second_station, second_unit, event_hash, detail)"
		  " VALUES ($1, $2, $3, $4, $5::bigint, $6, $7::bigint, $8, $9)"
		  " ON CONFLICT (kind, event_hash) DO NOTHING RETURNING id",
		  9, kind, uid, serial, first, funit, p->station, unit, hash, detail);
	if (!err && PQntuples(res) == 1)
		(*raised)++;
	PQclear(res);
	return err;
}

/* The PASS or UNFUSED of uid: the device's one identity and the serial's
 * one unit, across every station.  An UNFUSED unit holds a live identity
 * (docs/fuses.md), so it claims it too; the armed run that finishes it at
 * the same station (same certificate, same serial) is that identity, not
 * a second one. */
static int claim_identity(pgs *p, const struct lev *e, const char *unit,
			  json_t *data, long long *raised)
{
	const char *serial = jstr(data, "cert_serial");
	PGresult *res = NULL;
	char detail[512];
	int err;

	err = run(p, &res, "claim the device identity",
		  "WITH ins AS (INSERT INTO device_identities (uid, station_id,"
		  " unit_id, cert_serial, event_hash) VALUES ($1, $2, $3::bigint,"
		  " $4, $5) ON CONFLICT (uid) DO NOTHING RETURNING station_id)"
		  " SELECT station_id, unit_id::text, coalesce(cert_serial, '')"
		  " FROM device_identities WHERE uid = $1 AND NOT EXISTS"
		  " (SELECT 1 FROM ins) AND NOT (station_id = $2 AND"
		  " cert_serial IS NOT DISTINCT FROM $4)",
		  5, e->uid, p->station, unit, serial, e->hash);
	if (err)
		return err;
	if (PQntuples(res) == 1) {
		snprintf(detail, sizeof(detail), "device %s was given a second "
			 "identity: provisioned at station %s (unit %s, serial %s) and "
			 "at station %s (unit %s, serial %s); not merged: "
			 "withdraw one of the certificates", e->uid,
			 PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
			 PQgetvalue(res, 0, 2), p->station, unit,
			 serial ? serial : "-");
		err = raise_alert(p, "duplicate_device", e->uid, serial,
				  PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
				  unit, e->hash, detail, raised);
	}
	PQclear(res);
	if (err || !serial)
		return err;
	err = run(p, &res, "claim the certificate serial",
		  "WITH ins AS (INSERT INTO cert_serials (serial, station_id,"
		  " unit_id, uid) VALUES ($1, $2, $3::bigint, $4)"
		  " ON CONFLICT (serial) DO NOTHING RETURNING serial)"
		  " SELECT station_id, unit_id::text, uid FROM cert_serials"
		  " WHERE serial = $1 AND NOT EXISTS (SELECT 1 FROM ins)"
		  " AND NOT (station_id = $2 AND uid = $4)",
		  4, serial, p->station, unit, e->uid);
	if (err)
		return err;
	if (PQntuples(res) == 1) {
		snprintf(detail, sizeof(detail), "certificate serial %s was "
			 "issued twice: station %s (unit %s, device %s) and "
			 "station %s (unit %s, device %s)", serial,
			 PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
			 PQgetvalue(res, 0, 2), p->station, unit, e->uid);
		err = raise_alert(p, "duplicate_serial", e->uid, serial,
				  PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
				  unit, e->hash, detail, raised);
	}
	PQclear(res);
	return err;
}

/* A unit started offline took a pre-reserved allowance: that allowance
 * now belongs to it (or, with none left, the quota was overrun: said). */
static int take_allowance(pgs *p, const struct lev *e, const char *unit,
			  long long *raised)
{
	PGresult *res = NULL;
	const char *wo;
	char detail[512];
	int err;

	err = run(p, &res, "find the unit's work order",
		  "SELECT work_order FROM units WHERE station_id = $1"
		  " AND unit_id = $2::bigint", 2, p->station, unit);
	if (err)
		return err;
	wo = PQntuples(res) == 1 ? val(res, 0, 0) : NULL;
	if (!wo) {
		PQclear(res);
		return ST_OK;
	}
	wo = strdup(wo);
	PQclear(res);
	if (!wo)
		return fail(p, ST_E_NOMEM, "out of memory");
	err = run(p, &res, "take an allowance",
		  "UPDATE reservations SET state = 'HELD', uid = $3,"
		  " unit_id = $4::bigint, at = now() WHERE id = (SELECT id"
		  " FROM reservations WHERE work_order = $1 AND station_id = $2"
		  " AND state = 'ALLOWANCE' ORDER BY id LIMIT 1 FOR UPDATE)"
		  " RETURNING id", 4, wo, p->station, e->uid, unit);
	if (!err && PQntuples(res) == 0) {
		PQclear(res);
		res = NULL;
		snprintf(detail, sizeof(detail), "work order %s: unit %s (device "
			 "%s) was started offline at station %s without a "
			 "pre-reserved allowance: the quota may be overrun",
			 wo, unit, e->uid, p->station);
		err = run(p, NULL, "count the offline unit",
			  "WITH u AS (UPDATE work_orders SET reserved ="
			  " reserved + 1 WHERE id = $1 RETURNING id)"
			  " INSERT INTO reservations (work_order, station_id,"
			  " uid, unit_id, state) VALUES ($1, $2, $3, $4::bigint,"
			  " 'HELD')", 4, wo, p->station, e->uid, unit);
		if (!err)
			err = raise_alert(p, "quota_overrun", e->uid, NULL,
					  p->station, unit, unit, e->hash,
					  detail, raised);
	}
	PQclear(res);
	free((char *)wo);
	return err;
}

/* The end of a unit that took an allowance offline: PASS keeps it,
 * anything else gives it back. */
static int end_allowance(pgs *p, const char *unit, const char *result)
{
	bool pass = result && !strcmp(result, "PASS");

	/* UNFUSED keeps the reservation held: the armed run that finishes
	 * the device reuses it (pgs_reserve) and settles it */
	if (result && !strcmp(result, "UNFUSED"))
		return ST_OK;

	return run(p, NULL, "settle the unit's reservation",
		   "WITH r AS (UPDATE reservations SET state = $3, at = now()"
		   " WHERE station_id = $1 AND unit_id = $2::bigint"
		   " AND state = 'HELD' RETURNING work_order)"
		   " UPDATE work_orders w SET reserved = reserved - 1 FROM r"
		   " WHERE w.id = r.work_order AND $3 = 'RELEASED'",
		   3, p->station, unit, pass ? "PASS" : "RELEASED");
}

static int apply(pgs *p, const struct lev *e, json_t *body, long long *raised)
{
	json_t *data = json_object_get(body, "data");
	char unit[24];

	snprintf(unit, sizeof(unit), "%lld", e->unit);
	if (!strcmp(e->kind, "unit_start") && e->uid)
		return run(p, NULL, "record the unit",
			   "INSERT INTO units (station_id, unit_id, uid,"
			   " work_order, state, started_at) VALUES ($1,"
			   " $2::bigint, $3, $4, 'RUNNING', $5)"
			   " ON CONFLICT DO NOTHING", 5, p->station, unit,
			   e->uid, jstr(data, "work_order"), e->at);
	if (!strcmp(e->kind, "step") && e->uid &&
	    jstr(data, "step") && !strcmp(jstr(data, "step"), "quota-offline"))
		return take_allowance(p, e, unit, raised);
	if (!strcmp(e->kind, "unit_end") && e->uid) {
		const char *result = jstr(data, "result");
		int err = run(p, NULL, "record the unit's end",
			      "UPDATE units SET state = $3, reason = $4,"
			      " cert_serial = $5, cert_sha256 = $6,"
			      " finished_at = $7 WHERE station_id = $1"
			      " AND unit_id = $2::bigint", 7, p->station, unit,
			      result, jstr(data, "reason"),
			      jstr(data, "cert_serial"),
			      jstr(data, "cert_sha256"), e->at);

		if (!err)
			err = end_allowance(p, unit, result);
		if (!err && result && (!strcmp(result, "PASS") ||
				       !strcmp(result, "UNFUSED")))
			err = claim_identity(p, e, unit, data, raised);
		return err;
	}
	return ST_OK;
}

/* One transaction: the station's mark under a row lock, the next batch of
 * local events after it, each inserted (or found identical), applied, and
 * the mark moved.  *more: there may be more to ship. */
static int ship_batch(pgs *p, rec_store *r, pgs_result *out, bool *more)
{
	struct lev *e = NULL;
	PGresult *res = NULL;
	char prev[REC_HASH_HEX], seq[24];
	long long high;
	int n = 0, err;

	*more = false;
	if ((err = run(p, NULL, "begin a batch", "BEGIN", 0)) ||
	    (err = run(p, NULL, "register the station",
		       "INSERT INTO stations (id) VALUES ($1)"
		       " ON CONFLICT (id) DO NOTHING", 1, p->station)) ||
	    (err = run(p, &res, "read the station's high-water mark",
		       "SELECT high_seq, head_hash FROM stations WHERE id = $1"
		       " FOR UPDATE", 1, p->station)))
		goto cleanup;
	high = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	snprintf(prev, sizeof(prev), "%s", PQgetvalue(res, 0, 1));
	PQclear(res);
	res = NULL;
	out->server_seq = high;
	/* the server's last event must be this store's event at that place
	 * (a replaced file can have as many events, and none to ship) */
	if (high > 0) {
		if ((err = local_events(p, r, high - 1, 1, &e, &n)))
			goto cleanup;
		if (n == 0 || strcmp(e[0].hash, prev)) {
			err = fail(p, ST_E_VERIFY, "the central database holds %lld "
				   "events of station %s and this store %s: a "
				   "replaced records file, or two stations with "
				   "one station id; nothing shipped", high,
				   p->station, n == 0 ? "fewer" :
				   "others (its event there has another hash)");
			goto cleanup;
		}
		lev_free(e, n);
		e = NULL;
		n = 0;
	}
	if ((err = local_events(p, r, high, p->batch, &e, &n)))
		goto cleanup;
	if (n == 0) {
		/* nothing to ship: the station is registered */
		err = run(p, NULL, "commit", "COMMIT", 0);
		goto cleanup;
	}
	for (int i = 0; i < n; i++) {
		json_error_t je;
		json_t *body = json_loads(e[i].body, 0, &je);
		const char *bprev = jstr(body, "prev"), *key = jstr(body, "key");
		char unit[24];

		if (!body || !bprev || strcmp(bprev, prev)) {
			json_decref(body);
			err = fail(p, ST_E_VERIFY, "local event %lld of station %s "
				   "does not follow the chain held centrally "
				   "(previous hash %.16s..., expected %.16s...): a "
				   "replaced records file or a reused station id; "
				   "nothing shipped", e[i].seq, p->station,
				   bprev ? bprev : "?", prev);
			goto cleanup;
		}
		snprintf(seq, sizeof(seq), "%lld", e[i].seq);
		snprintf(unit, sizeof(unit), "%lld", e[i].unit);
		err = run(p, &res, "ship an event",
			  "INSERT INTO events (station_id, seq, hash, prev, at,"
			  " kind, unit_id, uid, body, sig, signer) VALUES ($1,"
			  " $2::bigint, $3, $4, $5, $6, $7::bigint, $8, $9, $10,"
			  " $11) ON CONFLICT DO NOTHING RETURNING seq",
			  11, p->station, seq, e[i].hash, bprev, e[i].at,
			  e[i].kind, e[i].unit ? unit : NULL, e[i].uid,
			  e[i].body, e[i].sig, key);
		if (!err && PQntuples(res) == 0) {
			/* already there (the same hash): it must be this very
			 * event, or the chains forked */
			PQclear(res);
			res = NULL;
			err = run(p, &res, "compare with the stored event",
				  "SELECT station_id, seq FROM events WHERE hash = $1",
				  1, e[i].hash);
			if (!err && (PQntuples(res) != 1 ||
				     strcmp(PQgetvalue(res, 0, 0), p->station) ||
				     strcmp(PQgetvalue(res, 0, 1), seq)))
				err = fail(p, ST_E_VERIFY, "event %lld of station "
					   "%s differs from the one held centrally "
					   "at that place", e[i].seq, p->station);
		} else if (!err) {
			err = apply(p, &e[i], body, &out->conflicts);
		}
		PQclear(res);
		res = NULL;
		json_decref(body);
		if (err)
			goto cleanup;
		snprintf(prev, sizeof(prev), "%s", e[i].hash);
	}
	snprintf(seq, sizeof(seq), "%lld", e[n - 1].seq);
	if ((err = run(p, NULL, "move the high-water mark",
		       "UPDATE stations SET high_seq = $2::bigint, head_hash = $3,"
		       " last_sync = now() WHERE id = $1", 3, p->station, seq,
		       prev)) ||
	    (err = run(p, NULL, "commit the batch", "COMMIT", 0)))
		goto cleanup;
	out->shipped += n;
	out->batches++;
	out->server_seq = e[n - 1].seq;
	*more = n == p->batch;
cleanup:
	PQclear(res);
	rollback(p);
	lev_free(e, n);
	return err;
}

/* Alert ids this station already recorded locally. */
static int local_alerts(pgs *p, rec_store *r, long long **ids, int *n)
{
	sqlite3_stmt *s = NULL;
	int cap = 0, rc, err;

	*ids = NULL;
	*n = 0;
	err = rec_enter(r);
	if (!err && sqlite3_prepare_v2(r->db, "SELECT json_extract(body,"
				       " '$.data.alert') FROM events"
				       " WHERE kind = 'sync_alert'", -1, &s,
				       NULL) != SQLITE_OK)
		err = rec_db_fail(r, ST_E_DB, "read the recorded alerts");
	while (!err && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (*n == cap) {
			long long *m = realloc(*ids, sizeof(**ids) *
					       (size_t)(cap = cap ? 2 * cap : 16));

			if (!m) {
				err = rec_fail(r, ST_E_NOMEM, "out of memory");
				break;
			}
			*ids = m;
		}
		(*ids)[(*n)++] = strtoll((const char *)sqlite3_column_text(s, 0) ?
					 (const char *)sqlite3_column_text(s, 0) :
					 "0", NULL, 10);
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	if (err)
		return fail(p, err, "local store: %s", rec_errmsg(r));
	return ST_OK;
}

/* Every alert naming this station, recorded once in the local store. */
static int pick_alerts(pgs *p, rec_store *r, pgs_ready_fn ready, void *ctx,
		       bool *readied, pgs_result *out)
{
	PGresult *res = NULL;
	long long *have = NULL;
	int nhave = 0, err;

	if ((err = run(p, &res, "read the alerts",
		       "SELECT id::text, kind, uid, cert_serial, first_station,"
		       " first_unit::text, second_station, second_unit::text,"
		       " detail FROM alerts WHERE first_station = $1"
		       " OR second_station = $1 ORDER BY id", 1, p->station)))
		return err;
	if (PQntuples(res) > 0)
		err = local_alerts(p, r, &have, &nhave);
	for (int i = 0; !err && i < PQntuples(res); i++) {
		long long id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		bool known = false;

		for (int k = 0; k < nhave; k++)
			known = known || have[k] == id;
		if (known)
			continue;
		if (!*readied && ready) {
			err = ready(ctx, r);
			if (err) {
				fail(p, err, "cannot record alert %lld locally: %s",
				     id, rec_errmsg(r));
				break;
			}
		}
		*readied = true;
		err = rec_event(r, "sync_alert", val(res, i, 2),
				"alert", PQgetvalue(res, i, 0),
				"alert_kind", val(res, i, 1),
				"cert_serial", val(res, i, 3),
				"first_station", val(res, i, 4),
				"first_unit", val(res, i, 5),
				"second_station", val(res, i, 6),
				"second_unit", val(res, i, 7),
				"detail", val(res, i, 8), NULL);
		if (err) {
			fail(p, err, "cannot record alert %lld locally: %s", id,
			     rec_errmsg(r));
			break;
		}
		out->alerts_recorded++;
	}
	free(have);
	PQclear(res);
	return err;
}

/* ---- A chain that lost its tail ---- */

/* Raise an alert of this station about its own chain, in a transaction of
 * its own (idempotent: one per kind and head hash). */
static int self_alert(pgs *p, const char *kind, const char *hash,
		      const char *detail, long long *raised)
{
	int err = run(p, NULL, "begin an alert", "BEGIN", 0);

	if (!err)
		err = raise_alert(p, kind, NULL, NULL, p->station, NULL, NULL, hash,
				  detail, raised);
	if (!err)
		err = run(p, NULL, "commit the alert", "COMMIT", 0);
	rollback(p);
	return err;
}

/* What the central database knows of this station's chain — its mark
 * (the events held) and its newest checkpoint — must be in the local
 * chain: event seq with that hash.  A shorter local chain lost its tail
 * (or is an older copy); another hash is a replaced or rewritten file.
 * Either is an alert ("chain_cut", "chain_fork"), and nothing is
 * shipped over it. */
static int tail_check(pgs *p, rec_store *r, pgs_result *out)
{
	static const char *const sql[2] = {
		"SELECT high_seq, head_hash FROM stations WHERE id = $1",
		"SELECT seq, head_hash FROM checkpoints WHERE station_id = $1"
		" ORDER BY seq DESC LIMIT 1",
	};
	char seen[200], detail[768], hash[REC_HASH_HEX];
	long long seq, local = 0;
	struct lev *e = NULL;
	int n = 0, err = ST_OK;

	if (pgs_local_lag(r, 0, &local, NULL, NULL))
		return fail(p, ST_E_DB, "local store: %s", rec_errmsg(r));
	for (int i = 0; i < 2 && !err; i++) {
		PGresult *res = NULL;

		if ((err = run(p, &res, "read what the central database holds",
			       sql[i], 1, p->station)))
			break;
		seq = PQntuples(res) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
		snprintf(hash, sizeof(hash), "%s", seq > 0 ? PQgetvalue(res, 0, 1) : "");
		PQclear(res);
		if (seq <= 0)
			continue;
		if (i == 0)
			snprintf(seen, sizeof(seen), "events 1..%lld of station %s",
				 seq, p->station);
		else
			snprintf(seen, sizeof(seen), "a checkpoint of station %s at "
				 "event %lld", p->station, seq);
		if ((err = local_events(p, r, seq - 1, 1, &e, &n)))
			break;
		if (n == 1 && !strcmp(e[0].hash, hash)) {
			lev_free(e, n);
			continue;
		}
		lev_free(e, n);
		if (n == 0)
			snprintf(detail, sizeof(detail), "the central database holds "
				 "%s, but this store ends at event %lld: events "
				 "%lld..%lld were cut off the end of the local chain "
				 "(or it is a replaced records file, an older copy); "
				 "nothing shipped", seen, local, local + 1, seq);
		else
			snprintf(detail, sizeof(detail), "the central database holds "
				 "%s, and this store's event %lld has another hash: "
				 "a replaced records file, a rewritten chain, or two "
				 "stations with one station id; nothing shipped",
				 seen, seq);
		err = self_alert(p, n == 0 ? "chain_cut" : "chain_fork", hash,
				 detail, &out->conflicts);
		if (!err)
			err = fail(p, ST_E_VERIFY, "%s", detail);
	}
	return err;
}

int pgs_checkpoint_put(pgs *p, const char *body, const char *sig_hex)
{
	rec_checkpoint cp;
	char seq[24];

	if (!p || !body || !sig_hex)
		return ST_E_INVAL;
	if (rec_checkpoint_parse(body, &cp))
		return fail(p, ST_E_INVAL, "not a checkpoint");
	if (strcmp(cp.station, p->station))
		return fail(p, ST_E_INVAL, "a checkpoint of station %s, not of "
			    "this station %s", cp.station, p->station);
	snprintf(seq, sizeof(seq), "%lld", cp.seq);
	return run(p, NULL, "store a checkpoint",
		   "INSERT INTO checkpoints (station_id, seq, head_hash, at,"
		   " audit_cert, body, sig) VALUES ($1, $2::bigint, $3, $4, $5,"
		   " $6, $7) ON CONFLICT DO NOTHING", 7, p->station, seq,
		   cp.head_hash, cp.at, cp.audit_sha256, body, sig_hex);
}

int pgs_checkpoint_mark(pgs *p, long long *seq)
{
	PGresult *res = NULL;
	int err;

	if (!p || !seq)
		return ST_E_INVAL;
	err = run(p, &res, "read the newest checkpoint",
		  "SELECT coalesce(max(seq), 0) FROM checkpoints"
		  " WHERE station_id = $1", 1, p->station);
	if (!err)
		*seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return err;
}

int pgs_sync(pgs *p, rec_store *r, pgs_ready_fn ready, void *ready_ctx,
	     pgs_result *out)
{
	pgs_result dummy;
	bool more = true, readied = false;
	int err, pass;

	if (!out)
		out = &dummy;
	memset(out, 0, sizeof(*out));
	if (!p || !r)
		return ST_E_INVAL;
	if (!pgs_ok(p))
		return fail(p, ST_E_IO, "not connected to the central database");
	/* two rounds: alerts recorded in the first are shipped in the
	 * second */
	for (pass = 0; pass < 2; pass++) {
		long long before = out->alerts_recorded;

		if ((err = ship_certs(p, r)))
			return err;
		if ((err = tail_check(p, r, out))) {
			char why[PGS_MSG_MAX];

			/* the alert goes into this station's own chain too
			 * (signed), then the sync stops */
			snprintf(why, sizeof(why), "%s", p->msg);
			if (err == ST_E_VERIFY &&
			    pick_alerts(p, r, ready, ready_ctx, &readied, out) == ST_OK)
				snprintf(p->msg, sizeof(p->msg), "%s", why);
			return err;
		}
		more = true;
		while (more)
			if ((err = ship_batch(p, r, out, &more)))
				return err;
		if ((err = pick_alerts(p, r, ready, ready_ctx, &readied, out)))
			return err;
		if (out->alerts_recorded == before)
			break;
	}
	return pgs_local_lag(r, out->server_seq, &out->local_seq, NULL, NULL) ?
	       fail(p, ST_E_DB, "local store: %s", rec_errmsg(r)) : ST_OK;
}

int pgs_server_mark(pgs *p, long long *seq, char when[32])
{
	PGresult *res = NULL;
	int err;

	*seq = 0;
	when[0] = '\0';
	err = run(p, &res, "read the high-water mark",
		  "SELECT high_seq, coalesce(to_char(last_sync AT TIME ZONE 'UTC',"
		  " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') FROM stations"
		  " WHERE id = $1", 1, p->station);
	if (err)
		return err;
	if (PQntuples(res) == 1) {
		*seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		snprintf(when, 32, "%s", PQgetvalue(res, 0, 1));
	}
	PQclear(res);
	return ST_OK;
}

/* ---- Quotas ---- */

int pgs_workorder_put(pgs *p, const char *id, long quota)
{
	PGresult *res = NULL;
	char q[32];
	int err;

	if (!p || !id)
		return ST_E_INVAL;
	snprintf(q, sizeof(q), "%ld", quota);
	err = run(p, &res, "create the work order centrally",
		  "WITH ins AS (INSERT INTO work_orders (id, quota, created_by)"
		  " VALUES ($1, $2::bigint, $3) ON CONFLICT (id) DO NOTHING"
		  " RETURNING quota) SELECT coalesce((SELECT quota::text FROM"
		  " ins), (SELECT coalesce(quota::text, 'none') FROM work_orders"
		  " WHERE id = $1))", 3, id, quota >= 0 ? q : NULL, p->station);
	if (err)
		return err;
	if (strcmp(PQgetvalue(res, 0, 0), quota >= 0 ? q : "none") &&
	    !(quota < 0 && PQgetisnull(res, 0, 0)))
		err = fail(p, ST_E_EXISTS, "work order %s exists centrally with "
			   "a quota of %s, not %s", id, PQgetvalue(res, 0, 0),
			   quota >= 0 ? q : "none");
	PQclear(res);
	return err;
}

int pgs_workorder_get(pgs *p, const char *id, pgs_workorder *out)
{
	PGresult *res = NULL;
	int err;

	if (!p || !id || !out)
		return ST_E_INVAL;
	err = run(p, &res, "read the work order",
		  "SELECT coalesce(quota, -1), reserved,"
		  " (SELECT count(*) FROM reservations WHERE work_order = $1"
		  "  AND state = 'PASS'),"
		  " (SELECT count(*) FROM reservations WHERE work_order = $1"
		  "  AND station_id = $2 AND state = 'ALLOWANCE')"
		  " FROM work_orders WHERE id = $1", 2, id, p->station);
	if (err)
		return err;
	if (PQntuples(res) == 0) {
		err = fail(p, ST_E_NOTFOUND, "work order %s does not exist in the "
			   "central database: create it with 'station records "
			   "workorder create %s --quota N'", id, id);
	} else {
		out->quota = atol(PQgetvalue(res, 0, 0));
		out->reserved = atol(PQgetvalue(res, 0, 1));
		out->pass = atol(PQgetvalue(res, 0, 2));
		out->allowance = atol(PQgetvalue(res, 0, 3));
	}
	PQclear(res);
	return err;
}

int pgs_reserve(pgs *p, const char *wo, const char *uid)
{
	PGresult *res = NULL;
	int err;

	if (!p || !wo || !uid)
		return ST_E_INVAL;
	if (!pgs_ok(p))
		return fail(p, ST_E_IO, "not connected to the central database");
	if ((err = run(p, NULL, "begin a reservation", "BEGIN", 0)) ||
	    (err = run(p, &res, "look up the work order",
		       "SELECT quota FROM work_orders WHERE id = $1 FOR UPDATE",
		       1, wo)))
		goto cleanup;
	if (PQntuples(res) == 0) {
		err = fail(p, ST_E_NOTFOUND, "work order %s does not exist in the "
			   "central database: create it with 'station records "
			   "workorder create %s --quota N'", wo, wo);
		goto cleanup;
	}
	PQclear(res);
	/* a reservation this station still holds for the device (its last
	 * run was interrupted) is reused, not counted twice */
	if ((err = run(p, &res, "look for a held reservation",
		       "SELECT id FROM reservations WHERE work_order = $1"
		       " AND station_id = $2 AND uid = $3 AND state = 'HELD'",
		       3, wo, p->station, uid)))
		goto cleanup;
	if (PQntuples(res) == 0) {
		PQclear(res);
		err = run(p, &res, "reserve a unit",
			  "UPDATE work_orders SET reserved = reserved + 1"
			  " WHERE id = $1 AND (quota IS NULL OR reserved < quota)"
			  " RETURNING reserved", 1, wo);
		if (!err && PQntuples(res) == 1) {
			err = run(p, NULL, "record the reservation",
				  "INSERT INTO reservations (work_order, station_id,"
				  " uid, state) VALUES ($1, $2, $3, 'HELD')",
				  3, wo, p->station, uid);
		} else if (!err) {
			/* full: this station's own pre-reserved units */
			PQclear(res);
			err = run(p, &res, "use an allowance",
				  "UPDATE reservations SET state = 'HELD', uid = $3,"
				  " at = now() WHERE id = (SELECT id FROM"
				  " reservations WHERE work_order = $1 AND"
				  " station_id = $2 AND state = 'ALLOWANCE'"
				  " ORDER BY id LIMIT 1 FOR UPDATE) RETURNING id",
				  3, wo, p->station, uid);
			if (!err && PQntuples(res) == 0)
				err = fail(p, ST_E_STATE, "work order %s: its quota "
					   "is taken across the stations; device "
					   "%s was not started", wo, uid);
		}
		if (err)
			goto cleanup;
	}
	err = run(p, NULL, "commit the reservation", "COMMIT", 0);
cleanup:
	PQclear(res);
	rollback(p);
	return err;
}

int pgs_finish(pgs *p, const char *wo, const char *uid, const char *result)
{
	bool pass = result && !strcmp(result, "PASS");

	if (!p || !wo || !uid)
		return ST_E_INVAL;
	if (!pgs_ok(p))
		return fail(p, ST_E_IO, "not connected to the central database");
	if (result && !strcmp(result, "UNFUSED"))
		return ST_OK;   /* held for the armed run that finishes it */
	return run(p, NULL, "settle the reservation",
		   "WITH r AS (UPDATE reservations SET state = $4, at = now()"
		   " WHERE work_order = $1 AND station_id = $2 AND uid = $3"
		   " AND state = 'HELD' AND unit_id IS NULL RETURNING work_order)"
		   " UPDATE work_orders w SET reserved = reserved - 1 FROM r"
		   " WHERE w.id = r.work_order AND $4 = 'RELEASED'",
		   4, wo, p->station, uid, pass ? "PASS" : "RELEASED");
}

int pgs_allowance(pgs *p, const char *wo, long want, long *held)
{
	PGresult *res = NULL;
	char w[32];
	int err;

	if (!p || !wo || !held)
		return ST_E_INVAL;
	snprintf(w, sizeof(w), "%ld", want);
	if ((err = run(p, NULL, "begin the allowance", "BEGIN", 0)) ||
	    (err = run(p, &res, "top up the allowance",
		       "WITH wo AS (SELECT id, quota, reserved FROM work_orders"
		       "  WHERE id = $1 FOR UPDATE),"
		       " have AS (SELECT count(*) AS n FROM reservations"
		       "  WHERE work_order = $1 AND station_id = $2"
		       "  AND state = 'ALLOWANCE'),"
		       " k AS (SELECT greatest(0, least($3::bigint - have.n,"
		       "  coalesce(wo.quota - wo.reserved, $3::bigint))) AS n,"
		       "  have.n AS had FROM wo, have),"
		       " ins AS (INSERT INTO reservations (work_order, station_id,"
		       "  state) SELECT $1, $2, 'ALLOWANCE'"
		       "  FROM k, generate_series(1, k.n) RETURNING 1),"
		       " upd AS (UPDATE work_orders SET reserved = reserved +"
		       "  (SELECT n FROM k) WHERE id = $1 RETURNING 1)"
		       " SELECT (SELECT had + n FROM k), (SELECT count(*) FROM upd)",
		       3, wo, p->station, w)))
		goto cleanup;
	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		err = fail(p, ST_E_NOTFOUND, "work order %s does not exist in the "
			   "central database", wo);
		goto cleanup;
	}
	*held = atol(PQgetvalue(res, 0, 0));
	err = run(p, NULL, "commit the allowance", "COMMIT", 0);
cleanup:
	PQclear(res);
	rollback(p);
	return err;
}

/* ---- Verify ---- */

int pgs_verify(pgs *p, rec_store *msg, rec_cert_check_fn check, void *ctx,
	       pgs_verify_result *out)
{
	PGresult *st = NULL, *certs = NULL, *ev = NULL;
	struct rec_chain c;
	int err;

	if (!p || !msg || !out)
		return ST_E_INVAL;
	memset(out, 0, sizeof(*out));
	rec_chain_init(&c, msg);
	/* one snapshot: a sync committing meanwhile is not half seen */
	if ((err = run(p, NULL, "begin reading",
		       "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0)) ||
	    (err = run(p, &st, "list the stations",
		       "SELECT id, high_seq FROM stations ORDER BY id", 0)) ||
	    (err = run(p, &certs, "read the audit certificates",
		       "SELECT sha256, pem FROM audit_certs ORDER BY sha256", 0)))
		goto cleanup;
	for (int i = 0; i < PQntuples(st) && !err; i++) {
		const char *sid = PQgetvalue(st, i, 0);
		long long high = strtoll(PQgetvalue(st, i, 1), NULL, 10), n;

		snprintf(out->bad_station, sizeof(out->bad_station), "%s", sid);
		rec_chain_free(&c);
		rec_chain_init(&c, msg);
		for (int k = 0; k < PQntuples(certs) && !err; k++)
			err = rec_chain_cert(&c, PQgetvalue(certs, k, 0),
					     PQgetvalue(certs, k, 1), check, ctx);
		if (err)
			break;
		PQclear(ev);
		if ((err = run(p, &ev, "read a station's events",
			       "SELECT seq, at, kind, coalesce(unit_id, 0), uid,"
			       " body, hash, sig FROM events WHERE station_id = $1"
			       " ORDER BY seq", 1, sid)))
			break;
		n = PQntuples(ev);
		for (int k = 0; k < n && !err; k++) {
			rec_event_row e = {
				.seq = strtoll(PQgetvalue(ev, k, 0), NULL, 10),
				.at = val(ev, k, 1), .kind = val(ev, k, 2),
				.unit_id = strtoll(PQgetvalue(ev, k, 3), NULL, 10),
				.uid = val(ev, k, 4), .body = val(ev, k, 5),
				.hash = val(ev, k, 6), .sig = val(ev, k, 7),
			};

			err = rec_chain_event(&c, &e, NULL);
			if (!err)
				out->events++;
		}
		if (!err) {
			PGresult *cp = NULL;

			/* every checkpoint of the station names an event held */
			err = run(p, &cp, "read a station's checkpoints",
				  "SELECT seq, head_hash, at FROM checkpoints"
				  " WHERE station_id = $1 ORDER BY seq", 1, sid);
			for (int k = 0; !err && k < PQntuples(cp); k++) {
				long long s = strtoll(PQgetvalue(cp, k, 0), NULL, 10);

				if (s >= 1 && s <= n &&
				    !strcmp(PQgetvalue(ev, (int)s - 1, 6),
					    PQgetvalue(cp, k, 1)))
					continue;
				c.bad_seq = s <= n ? s : n + 1;
				err = rec_fail(msg, ST_E_VERIFY, "event %lld %s: the "
					       "station's checkpoint of %s says event "
					       "%lld has hash %.16s... (events cut off "
					       "or rewritten)", c.bad_seq, s <= n ?
					       "has another hash" : "is missing",
					       PQgetvalue(cp, k, 2), s,
					       PQgetvalue(cp, k, 1));
			}
			PQclear(cp);
		}
		if (!err && n != high) {
			c.bad_seq = n + 1;
			err = rec_fail(msg, ST_E_VERIFY, "event %lld is missing: "
				       "the station's mark says %lld events, %lld "
				       "are held: events were removed from the end",
				       n + 1, high, n);
		}
		if (err == ST_E_VERIFY)
			out->bad_seq = c.bad_seq;
		if (!err)
			out->stations++;
	}
	if (!err)
		out->bad_station[0] = '\0';
	run(p, NULL, "end reading", "COMMIT", 0);
cleanup:
	PQclear(st);
	PQclear(certs);
	PQclear(ev);
	rec_chain_free(&c);
	rollback(p);
	return err;
}

/* pgsync.c — the central PostgreSQL copy of every station's audit chain
 * (pgsync.h, docs/sync.md): the connection, the central schema, and the
 * helpers the other pgs_*.c files share (pgs_int.h): shipping and the
 * global rules (pgs_ship.c), shared quotas (pgs_quota.c), verification
 * (pgs_verify.c).  The local store is read through records functions
 * (rec_int.h), never with SQL of its own. */
#include "records/pgsync.h"
#include "pgs_int.h"

#include "base.h"

#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PGS_LOCK_KEY	"1398034755"	/* advisory lock of the schema: "STRC" */

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

/* Keep a readable cause in p and return err. */
int pgs_fail(pgs *p, int err, const char *fmt, ...)
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
int pgs_run(pgs *p, PGresult **res, const char *what, const char *sql,
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
void pgs_rollback(pgs *p)
{
	if (p->conn && PQtransactionStatus(p->conn) != PQTRANS_IDLE &&
	    PQstatus(p->conn) == CONNECTION_OK)
		PQclear(PQexec(p->conn, "ROLLBACK"));
}

const char *pgs_val(PGresult *r, int row, int col)
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

	if ((err = pgs_run(p, NULL, "begin the schema", "BEGIN", 0)) ||
	    (err = pgs_run(p, NULL, "lock the schema",
			   "SELECT pg_advisory_xact_lock(" PGS_LOCK_KEY ")", 0)) ||
	    (err = pgs_run(p, NULL, "create the schema version table",
			   "CREATE TABLE IF NOT EXISTS station_schema ("
			   " version integer NOT NULL)", 0)) ||
	    (err = pgs_run(p, &res, "read the schema version",
			   "SELECT coalesce(max(version), 0) FROM station_schema", 0)))
		goto cleanup;
	have = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (have > latest) {
		err = pgs_fail(p, ST_E_DB, "the central database has schema version "
			       "%d, newer than this station knows (%d): upgrade the "
			       "station", have, latest);
		goto cleanup;
	}
	for (size_t i = 0; i < ST_ARRAY_SIZE(migrations); i++) {
		if (migrations[i].version <= have)
			continue;
		snprintf(ver, sizeof(ver), "%d", migrations[i].version);
		if ((err = run_script(p, "central schema step", migrations[i].sql)) ||
		    (err = pgs_run(p, NULL, "record the schema version",
				   "INSERT INTO station_schema VALUES ($1::int)", 1, ver)))
			goto cleanup;
	}
	err = pgs_run(p, NULL, "commit the schema", "COMMIT", 0);
cleanup:
	pgs_rollback(p);
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
		return pgs_fail(p, ST_E_CONFIG, "sync: no connection string or "
				"station id");
	snprintf(p->station, sizeof(p->station), "%s", o->station_id);
	p->batch = o->batch > 0 ? o->batch : 500;
	opts = PQconninfoParse(o->conninfo, &perr);
	if (!opts) {
		err = pgs_fail(p, ST_E_CONFIG, "sync.conninfo does not parse: %s",
			       perr ? perr : "out of memory");
		PQfreemem(perr);
		return err;
	}
	for (PQconninfoOption *c = opts; c->keyword; c++) {
		if (!strcmp(c->keyword, "password") && c->val && *c->val) {
			PQconninfoFree(opts);
			return pgs_fail(p, ST_E_CONFIG, "sync.conninfo holds a password: "
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
		return pgs_fail(p, ST_E_NOMEM, "out of memory connecting");
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

/* records.c — the audit store on SQLite: WAL, synchronous=FULL, a versioned
 * schema, prepared statements, one mutex per store. */
#include "records.h"
#include "rec_int.h"

#include "base.h"

#include <errno.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REC_MSG_MAX	512
#define REC_BUSY_MS	30000		/* another process holding the write lock;
					 * SQLite's busy wait is not fair, so leave
					 * room for a few writers under load */
#define REC_APP_ID	0x53545243	/* PRAGMA application_id: "STRC" */

/* UTC ISO-8601 with milliseconds, evaluated once per statement by SQLite. */
#define NOW "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

/* Schema steps, oldest first.  A store at user_version N gets every step
 * above N in one transaction; never edit a shipped step, append one. */
static const struct migration {
	int version;
	const char *sql;
} migrations[] = {
	{ 1,
	  "CREATE TABLE units ("
	  " id INTEGER PRIMARY KEY,"
	  " uid TEXT NOT NULL,"
	  " slot INTEGER,"
	  " port TEXT,"
	  " station TEXT,"
	  " operator TEXT,"
	  " profile TEXT,"
	  " profile_digest TEXT,"
	  " state TEXT NOT NULL"
	  "  CHECK (state IN ('RUNNING', 'PASS', 'FAIL', 'QUARANTINE')),"
	  " reason TEXT,"
	  " cert_serial TEXT UNIQUE,"
	  " cert_sha256 TEXT,"
	  " cert_pem TEXT,"
	  " pubkey TEXT,"
	  " rot_hash TEXT,"
	  " fuse_readback TEXT,"
	  " started_at TEXT,"
	  " finished_at TEXT);"
	  "CREATE INDEX units_uid ON units(uid);"
	  "CREATE UNIQUE INDEX units_one_pass ON units(uid) WHERE state = 'PASS';"
	  "CREATE TABLE steps ("
	  " id INTEGER PRIMARY KEY,"
	  " unit_id INTEGER NOT NULL REFERENCES units(id),"
	  " seq INTEGER NOT NULL,"
	  " step TEXT NOT NULL,"
	  " outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'fail', 'skip')),"
	  " detail TEXT,"
	  " at TEXT NOT NULL,"
	  " UNIQUE (unit_id, seq));" },
	/* The audit chain, work orders with quotas, and rules that keep
	 * final records final (see docs/records.md). */
	{ 2,
	  "CREATE TABLE work_orders ("
	  " id TEXT PRIMARY KEY,"
	  " quota INTEGER CHECK (quota IS NULL OR quota >= 0),"
	  " created_at TEXT NOT NULL);"
	  "ALTER TABLE units ADD COLUMN work_order TEXT"
	  " REFERENCES work_orders(id);"
	  "CREATE INDEX units_work_order ON units(work_order);"
	  "CREATE UNIQUE INDEX units_cert_sha256 ON units(cert_sha256);"
	  /* reserve on start: RUNNING and PASS units hold the quota */
	  "CREATE TRIGGER units_quota BEFORE INSERT ON units"
	  " WHEN NEW.work_order IS NOT NULL AND"
	  "  (SELECT quota FROM work_orders WHERE id = NEW.work_order) <="
	  "  (SELECT count(*) FROM units WHERE work_order = NEW.work_order"
	  "   AND state IN ('RUNNING', 'PASS'))"
	  " BEGIN SELECT RAISE(ABORT, 'work order quota reached'); END;"
	  "CREATE TRIGGER units_final BEFORE UPDATE ON units"
	  " WHEN OLD.state <> 'RUNNING'"
	  " BEGIN SELECT RAISE(ABORT, 'unit record is final'); END;"
	  "CREATE TRIGGER units_no_delete BEFORE DELETE ON units"
	  " BEGIN SELECT RAISE(ABORT, 'unit records are never deleted'); END;"
	  "CREATE TABLE audit_certs ("
	  " sha256 TEXT PRIMARY KEY,"
	  " pem TEXT NOT NULL,"
	  " added_at TEXT NOT NULL);"
	  "CREATE TABLE events ("
	  " seq INTEGER PRIMARY KEY,"
	  " at TEXT NOT NULL,"
	  " kind TEXT NOT NULL,"
	  " unit_id INTEGER,"
	  " uid TEXT,"
	  " body TEXT NOT NULL,"
	  " hash TEXT NOT NULL UNIQUE,"
	  " sig TEXT);"
	  "CREATE INDEX events_unit ON events(unit_id);"
	  "CREATE TRIGGER events_no_update BEFORE UPDATE ON events"
	  " BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;"
	  "CREATE TRIGGER events_no_delete BEFORE DELETE ON events"
	  " BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;" },
	/* Re-provisioning (docs/roles.md): a PASS identity a supervisor
	 * replaced is revoked; one PASS per device is now one PASS that is
	 * not revoked, so a device can get a new identity without its old
	 * record changing. */
	{ 3,
	  "CREATE TABLE revocations ("
	  " unit_id INTEGER PRIMARY KEY REFERENCES units(id),"
	  " uid TEXT NOT NULL,"
	  " cert_serial TEXT NOT NULL,"
	  " reason TEXT NOT NULL,"
	  " revoked_by TEXT NOT NULL,"
	  " revoked_at TEXT NOT NULL);"
	  "CREATE TRIGGER revocations_final BEFORE UPDATE ON revocations"
	  " BEGIN SELECT RAISE(ABORT, 'revocations are final'); END;"
	  "CREATE TRIGGER revocations_no_delete BEFORE DELETE ON revocations"
	  " BEGIN SELECT RAISE(ABORT, 'revocations are never deleted'); END;"
	  "DROP INDEX units_one_pass;"
	  "CREATE TRIGGER units_one_live_pass BEFORE UPDATE OF state ON units"
	  " WHEN NEW.state = 'PASS' AND EXISTS (SELECT 1 FROM units u"
	  "  WHERE u.uid = NEW.uid AND u.state = 'PASS' AND u.id <> NEW.id"
	  "  AND u.id NOT IN (SELECT unit_id FROM revocations))"
	  " BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: units.uid"
	  " (device already has a PASS record)'); END;"
	  "CREATE TRIGGER units_one_live_pass_ins BEFORE INSERT ON units"
	  " WHEN NEW.state = 'PASS' AND EXISTS (SELECT 1 FROM units u"
	  "  WHERE u.uid = NEW.uid AND u.state = 'PASS'"
	  "  AND u.id NOT IN (SELECT unit_id FROM revocations))"
	  " BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: units.uid"
	  " (device already has a PASS record)'); END;" },
	/* UNFUSED (docs/records.md): an unarmed run's verdict, identity on
	 * the device, fuses and lifecycle untouched; a later armed run
	 * finishes it to PASS with the same certificate.  SQLite cannot
	 * alter a CHECK, so the table is rebuilt (migrate() runs this with
	 * foreign keys off and checks them before the commit).  A serial
	 * (and fingerprint) may now appear on several records of one device
	 * (the UNFUSED record and the PASS that finishes it), never on two
	 * devices.  The quota counts devices: a device that holds an
	 * UNFUSED reservation takes no second one when it is finished. */
	{ 4,
	  "CREATE TABLE units_v4 ("
	  " id INTEGER PRIMARY KEY,"
	  " uid TEXT NOT NULL,"
	  " slot INTEGER,"
	  " port TEXT,"
	  " station TEXT,"
	  " operator TEXT,"
	  " profile TEXT,"
	  " profile_digest TEXT,"
	  " state TEXT NOT NULL"
	  "  CHECK (state IN ('RUNNING', 'PASS', 'FAIL', 'QUARANTINE',"
	  "   'UNFUSED')),"
	  " reason TEXT,"
	  " cert_serial TEXT,"
	  " cert_sha256 TEXT,"
	  " cert_pem TEXT,"
	  " pubkey TEXT,"
	  " rot_hash TEXT,"
	  " fuse_readback TEXT,"
	  " started_at TEXT,"
	  " finished_at TEXT,"
	  " work_order TEXT REFERENCES work_orders(id));"
	  "INSERT INTO units_v4 (id, uid, slot, port, station, operator,"
	  " profile, profile_digest, state, reason, cert_serial, cert_sha256,"
	  " cert_pem, pubkey, rot_hash, fuse_readback, started_at,"
	  " finished_at, work_order)"
	  " SELECT id, uid, slot, port, station, operator, profile,"
	  " profile_digest, state, reason, cert_serial, cert_sha256, cert_pem,"
	  " pubkey, rot_hash, fuse_readback, started_at, finished_at,"
	  " work_order FROM units;"
	  "DROP TABLE units;"
	  "ALTER TABLE units_v4 RENAME TO units;"
	  "CREATE INDEX units_uid ON units(uid);"
	  "CREATE INDEX units_work_order ON units(work_order);"
	  "CREATE INDEX units_cert_serial ON units(cert_serial);"
	  "CREATE INDEX units_cert_sha256 ON units(cert_sha256);"
	  "CREATE TRIGGER units_cert_one_device BEFORE UPDATE OF cert_serial,"
	  " cert_sha256 ON units"
	  " WHEN EXISTS (SELECT 1 FROM units u WHERE u.uid <> NEW.uid AND"
	  "  (u.cert_serial = NEW.cert_serial OR u.cert_sha256 = NEW.cert_sha256))"
	  " BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: units.cert_serial"
	  " (the certificate is recorded for another device)'); END;"
	  "CREATE TRIGGER units_cert_one_device_ins BEFORE INSERT ON units"
	  " WHEN EXISTS (SELECT 1 FROM units u WHERE u.uid <> NEW.uid AND"
	  "  (u.cert_serial = NEW.cert_serial OR u.cert_sha256 = NEW.cert_sha256))"
	  " BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: units.cert_serial"
	  " (the certificate is recorded for another device)'); END;"
	  "CREATE TRIGGER units_quota BEFORE INSERT ON units"
	  " WHEN NEW.work_order IS NOT NULL AND NEW.uid NOT IN"
	  "  (SELECT uid FROM units WHERE work_order = NEW.work_order"
	  "   AND state = 'UNFUSED') AND"
	  "  (SELECT quota FROM work_orders WHERE id = NEW.work_order) <="
	  "  (SELECT count(DISTINCT uid) FROM units WHERE work_order ="
	  "   NEW.work_order AND state IN ('RUNNING', 'PASS', 'UNFUSED'))"
	  " BEGIN SELECT RAISE(ABORT, 'work order quota reached'); END;"
	  "CREATE TRIGGER units_final BEFORE UPDATE ON units"
	  " WHEN OLD.state <> 'RUNNING'"
	  " BEGIN SELECT RAISE(ABORT, 'unit record is final'); END;"
	  "CREATE TRIGGER units_no_delete BEFORE DELETE ON units"
	  " BEGIN SELECT RAISE(ABORT, 'unit records are never deleted'); END;"
	  "CREATE TRIGGER units_one_live_pass BEFORE UPDATE OF state ON units"
	  " WHEN NEW.state = 'PASS' AND EXISTS (SELECT 1 FROM units u"
	  "  WHERE u.uid = NEW.uid AND u.state = 'PASS' AND u.id <> NEW.id"
	  "  AND u.id NOT IN (SELECT unit_id FROM revocations))"
	  " BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: units.uid"
	  " (device already has a PASS record)'); END;"
	  "CREATE TRIGGER units_one_live_pass_ins BEFORE INSERT ON units"
	  " WHEN NEW.state = 'PASS' AND EXISTS (SELECT 1 FROM units u"
	  "  WHERE u.uid = NEW.uid AND u.state = 'PASS'"
	  "  AND u.id NOT IN (SELECT unit_id FROM revocations))"
	  " BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: units.uid"
	  " (device already has a PASS record)'); END;" },
	/* Certificates of units that did not PASS are revoked too
	 * (docs/pki.md): each revocation keeps its RFC 5280 CRLReason code.
	 * Rows from before have none: superseded (re-provisioning). */
	{ 5,
	  "ALTER TABLE revocations ADD COLUMN crl_reason INTEGER;" },
};

enum {
	S_BEGIN,
	S_COMMIT,
	S_ROLLBACK,
	S_UNIT_INS,
	S_STEP_INS,
	S_UNIT_GET,
	S_UNIT_END,
	S_LAST,
	S_PASS,
	S_COUNT_ALL,
	S_COUNT,
	S_EV_LAST,
	S_EV_INS,
	S_STEP_SEQ,
	S_WO_GET,
	S_WO_INS,
	S_CERT_INS,
	S_SP,
	S_SP_RELEASE,
	S_SP_ROLLBACK,
	S_N
};

_Static_assert(S_N <= REC_MAX_STMT, "raise REC_MAX_STMT");

/* Every statement a call needs, prepared once at open. */
static const char *const stmt_sql[S_N] = {
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_UNIT_INS] =
		"INSERT INTO units (uid, slot, port, station, operator, profile,"
		" profile_digest, work_order, state, started_at)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'RUNNING', ?9)",
	/* seq and the RUNNING check in the same statement: one atomic write */
	[S_STEP_INS] =
		"INSERT INTO steps (unit_id, seq, step, outcome, detail, at)"
		" SELECT id, (SELECT coalesce(max(seq), 0) + 1 FROM steps"
		"  WHERE unit_id = ?1), ?2, ?3, ?4, ?5"
		" FROM units WHERE id = ?1 AND state = 'RUNNING'",
	[S_UNIT_GET] = "SELECT uid, state FROM units WHERE id = ?1",
	[S_UNIT_END] =
		"UPDATE units SET state = ?2, reason = ?3, cert_serial = ?4,"
		" cert_sha256 = ?5, cert_pem = ?6, pubkey = ?7, rot_hash = ?8,"
		" fuse_readback = ?9, finished_at = ?10"
		" WHERE id = ?1 AND state = 'RUNNING'",
	[S_LAST] = "SELECT id, state FROM units WHERE uid = ?1"
		" ORDER BY id DESC LIMIT 1",
	[S_PASS] = "SELECT id FROM units WHERE uid = ?1 AND state = 'PASS'"
		" AND id NOT IN (SELECT unit_id FROM revocations)",
	[S_COUNT_ALL] = "SELECT count(*) FROM units",
	[S_COUNT] = "SELECT count(*) FROM units WHERE state = ?1",
	[S_EV_LAST] = "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
	[S_EV_INS] =
		"INSERT INTO events (seq, at, kind, unit_id, uid, body, hash, sig)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	[S_STEP_SEQ] = "SELECT seq FROM steps WHERE id = ?1",
	[S_WO_GET] =
		"SELECT quota, (SELECT count(*) FROM units WHERE work_order = ?1"
		"  AND state = 'PASS'),"
		" (SELECT count(*) FROM units WHERE work_order = ?1"
		"  AND state = 'RUNNING'),"
		" (SELECT count(*) FROM units WHERE work_order = ?1"
		"  AND state IN ('FAIL', 'QUARANTINE'))"
		" FROM work_orders WHERE id = ?1",
	[S_WO_INS] = "INSERT INTO work_orders (id, quota, created_at)"
		" VALUES (?1, ?2, ?3)",
	[S_CERT_INS] = "INSERT OR IGNORE INTO audit_certs (sha256, pem, added_at)"
		" VALUES (?1, ?2, " NOW ")",
	[S_SP] = "SAVEPOINT w",
	[S_SP_RELEASE] = "RELEASE w",
	[S_SP_ROLLBACK] = "ROLLBACK TO w",
};

/* Runs at thread exit so a long shift of short-lived threads does not pile
 * up buffers; rec_close frees whatever is left. */
static void errbuf_release(void *p)
{
	struct rec_errbuf *b = p;
	rec_store *r = b->owner;
	struct rec_errbuf **pp;

	pthread_mutex_lock(&r->lock);
	for (pp = &r->errbufs; *pp; pp = &(*pp)->next) {
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	}
	pthread_mutex_unlock(&r->lock);
	free(b);
}

/* The calling thread's buffer, made on first failure; called with the lock
 * held (or from rec_open, before the store is shared). */
static struct rec_errbuf *errbuf_get(rec_store *r)
{
	struct rec_errbuf *b = pthread_getspecific(r->errkey);

	if (b)
		return b;
	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	if (pthread_setspecific(r->errkey, b) != 0) {
		free(b);
		return NULL;
	}
	b->owner = r;
	b->next = r->errbufs;
	r->errbufs = b;
	return b;
}

/* Keep a readable cause for the operator and hand back err, so error paths
 * stay one line. */
int rec_fail(rec_store *r, int err, const char *fmt, ...)
{
	struct rec_errbuf *b = errbuf_get(r);
	va_list ap;

	if (b) {
		va_start(ap, fmt);
		vsnprintf(b->msg, sizeof(b->msg), fmt, ap);
		va_end(ap);
	}
	return err;
}

/* SQLite's own words for the last failure on the connection, with errno
 * for I/O trouble such as a full disk. */
static void db_why(rec_store *r, char *buf, size_t len)
{
	char ebuf[128];
	const char *es = NULL;
	int prim = sqlite3_errcode(r->db) & 0xff;

	if ((prim == SQLITE_IOERR || prim == SQLITE_CANTOPEN ||
	     prim == SQLITE_FULL) && sqlite3_system_errno(r->db))
		es = strerror_r(sqlite3_system_errno(r->db), ebuf, sizeof(ebuf));
	snprintf(buf, len, "%s%s%s%s", sqlite3_errmsg(r->db), es ? " (" : "",
		 es ? es : "", es ? ")" : "");
}

/* Like rec_fail() with SQLite's own words (and errno for I/O trouble such as a
 * full disk) appended; call it before anything else touches the
 * connection, or the message is gone. */
int rec_db_fail(rec_store *r, int err, const char *fmt, ...)
{
	struct rec_errbuf *b = errbuf_get(r);
	va_list ap;
	size_t n;

	if (!b)
		return err;
	va_start(ap, fmt);
	vsnprintf(b->msg, sizeof(b->msg), fmt, ap);
	va_end(ap);
	if (!r->db)
		return err;
	n = strlen(b->msg);
	snprintf(b->msg + n, sizeof(b->msg) - n, ": ");
	n = strlen(b->msg);
	db_why(r, b->msg + n, sizeof(b->msg) - n);
	return err;
}

/* Statements are reused: leave each one reset and unbound after use so the
 * next call (and COMMIT) sees no pending read. */
void rec_stmt_done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

/* NULL binds SQL NULL; the strings outlive the statement's use. */
int rec_bind_text(sqlite3_stmt *s, int i, const char *v)
{
	return sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
}

/* Copy a text column into a caller buffer; ST_E_INVAL when it does not fit
 * rather than a silently cut result name. */
static int copy_col(rec_store *r, sqlite3_stmt *s, int col, char *buf,
		    size_t len)
{
	const char *v = (const char *)sqlite3_column_text(s, col);
	size_t n = v ? strlen(v) : 0;

	if (!buf)
		return ST_OK;
	if (n + 1 > len)
		return rec_fail(r, ST_E_INVAL, "buffer of %zu bytes too small for "
			    "\"%s\"", len, v ? v : "");
	memcpy(buf, v ? v : "", n + 1);
	return ST_OK;
}

/* Run a one-row query that is not worth a kept statement (pragmas at open
 * and in rec_get_settings); text into buf when given, else an int. */
static int query1(rec_store *r, const char *sql, int *ival, char *buf,
		  size_t len)
{
	sqlite3_stmt *s = NULL;
	int err;

	if (sqlite3_prepare_v2(r->db, sql, -1, &s, NULL) != SQLITE_OK)
		return rec_db_fail(r, ST_E_DB, "%s", sql);
	if (sqlite3_step(s) != SQLITE_ROW) {
		err = rec_db_fail(r, ST_E_DB, "%s", sql);
		goto cleanup;
	}
	err = ST_OK;
	if (buf)
		err = copy_col(r, s, 0, buf, len);
	else
		*ival = sqlite3_column_int(s, 0);
cleanup:
	sqlite3_finalize(s);
	return err;
}

/* Run the schema steps above the file's version in one IMMEDIATE
 * transaction (so two stations opening a fresh file cannot both migrate),
 * and refuse files that belong to another program or a newer station. */
static int migrate(rec_store *r, const char *path)
{
	int latest = migrations[ST_ARRAY_SIZE(migrations) - 1].version;
	int ver, app, objs, err;
	char sql[64];

	/* A step may rebuild a table others refer to (SQLite's own recipe:
	 * foreign keys off, which only takes effect outside a transaction,
	 * then foreign_key_check before the commit). */
	if (sqlite3_exec(r->db, "PRAGMA foreign_keys = OFF", NULL, NULL, NULL) != SQLITE_OK)
		return rec_db_fail(r, ST_E_DB, "%s: pragmas", path);
	if (sqlite3_exec(r->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		err = rec_db_fail(r, ST_E_DB, "%s: cannot lock for the schema", path);
		sqlite3_exec(r->db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
		return err;
	}
	err = query1(r, "PRAGMA user_version", &ver, NULL, 0);
	if (!err)
		err = query1(r, "PRAGMA application_id", &app, NULL, 0);
	if (!err)
		err = query1(r, "SELECT count(*) FROM sqlite_master", &objs,
			     NULL, 0);
	if (err)
		goto cleanup;
	if ((ver == 0 && objs > 0) || (ver > 0 && app != REC_APP_ID)) {
		err = rec_fail(r, ST_E_DB, "%s is an SQLite file of another program "
			   "(application_id %#x, user_version %d), not a "
			   "records store", path, (unsigned)app, ver);
		goto cleanup;
	}
	if (ver > latest) {
		err = rec_fail(r, ST_E_DB, "%s has schema version %d, newer than "
			   "this station knows (%d): upgrade the station",
			   path, ver, latest);
		goto cleanup;
	}
	for (size_t i = 0; i < ST_ARRAY_SIZE(migrations); i++) {
		const struct migration *m = &migrations[i];

		if (m->version <= ver)
			continue;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d",
			 m->version);
		if (sqlite3_exec(r->db, m->sql, NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(r->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
			err = rec_db_fail(r, ST_E_DB, "%s: schema step to version %d",
				      path, m->version);
			goto cleanup;
		}
	}
	if (ver == 0) {
		snprintf(sql, sizeof(sql), "PRAGMA application_id = %d",
			 REC_APP_ID);
		if (sqlite3_exec(r->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
			err = rec_db_fail(r, ST_E_DB, "%s: set application_id", path);
			goto cleanup;
		}
	}
	if (ver < latest) {
		err = query1(r, "SELECT count(*) FROM pragma_foreign_key_check",
			     &objs, NULL, 0);
		if (!err && objs)
			err = rec_fail(r, ST_E_DB, "%s: the schema step to version "
				       "%d broke %d foreign key(s)", path, latest, objs);
		if (err)
			goto cleanup;
	}
	if (sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		err = rec_db_fail(r, ST_E_DB, "%s: commit the schema", path);
cleanup:
	if (!sqlite3_get_autocommit(r->db))
		sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
	if (sqlite3_exec(r->db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL) != SQLITE_OK &&
	    !err)
		err = rec_db_fail(r, ST_E_DB, "%s: pragmas", path);
	return err;
}

/* A new file's directory entry must reach the disk too, or a power cut
 * right after the first PASS could lose the whole store. */
static int sync_parent(rec_store *r, const char *path)
{
	char *copy = strdup(path);
	int fd = -1, err = ST_OK;

	if (!copy)
		return rec_fail(r, ST_E_NOMEM, "out of memory");
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) != 0)
		err = rec_fail(r, ST_E_IO, "cannot sync the directory of %s: %s",
			   path, strerror(errno));
	if (fd >= 0)
		close(fd);
	free(copy);
	return err;
}

/* Everything after the file is open: reject non-databases before anything
 * writes to them, insist on WAL + FULL (reading them back, since SQLite
 * silently keeps another mode where WAL is impossible), then the schema
 * and the statements. */
static int setup(rec_store *r, const char *path)
{
	char mode[16];
	int n, sync, fk;

	sqlite3_extended_result_codes(r->db, 1);
	sqlite3_busy_timeout(r->db, REC_BUSY_MS);
	if (query1(r, "SELECT count(*) FROM sqlite_master", &n, NULL, 0))
		return rec_db_fail(r, ST_E_DB, "%s is not a usable records store",
			       path);
	if (sqlite3_db_readonly(r->db, "main") != 0)
		return rec_fail(r, ST_E_IO, "%s can only be opened read-only: "
			    "the audit trail could not be written", path);
	if (query1(r, "PRAGMA journal_mode = WAL", NULL, mode, sizeof(mode)))
		return ST_E_DB;
	if (strcmp(mode, "wal") != 0)
		return rec_fail(r, ST_E_DB, "%s: cannot use WAL (journal_mode "
			    "stays %s)", path, mode);
	if (sqlite3_exec(r->db, "PRAGMA synchronous = FULL; "
			 "PRAGMA foreign_keys = ON", NULL, NULL, NULL) != SQLITE_OK)
		return rec_db_fail(r, ST_E_DB, "%s: pragmas", path);
	if (query1(r, "PRAGMA synchronous", &sync, NULL, 0) ||
	    query1(r, "PRAGMA foreign_keys", &fk, NULL, 0))
		return ST_E_DB;
	if (sync != 2 || fk != 1)
		return rec_fail(r, ST_E_DB, "%s: synchronous=%d foreign_keys=%d, "
			    "wanted FULL(2) and 1", path, sync, fk);
	if (migrate(r, path))
		return ST_E_DB;
	for (int i = 0; i < S_N; i++) {
		if (sqlite3_prepare_v3(r->db, stmt_sql[i], -1,
				       SQLITE_PREPARE_PERSISTENT, &r->stmt[i],
				       NULL) != SQLITE_OK)
			return rec_db_fail(r, ST_E_DB, "prepare \"%s\"", stmt_sql[i]);
	}
	return ST_OK;
}

/* The handle stays allocated on failure (like sqlite3_open) because the
 * only place the cause can live is the handle; an ENOENT before the open
 * tells us to sync the directory afterwards. */
int rec_open(const char *path, rec_store **out)
{
	rec_store *r;
	struct stat st;
	int created, rc, err;

	if (!out)
		return ST_E_INVAL;
	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return ST_E_NOMEM;
	if (pthread_key_create(&r->errkey, errbuf_release) != 0) {
		free(r);
		return ST_E_NOMEM;
	}
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->durable, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&r->lazy_cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	r->lazy_ms = REC_LAZY_MS;
	*out = r;

	if (!path || !*path)
		return rec_fail(r, ST_E_INVAL, "no records path given");
	created = stat(path, &st) != 0 && errno == ENOENT;
	rc = sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READWRITE |
			     SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK) {
		err = r->db ? rec_db_fail(r, ST_E_IO, "cannot open records store %s",
				      path)
			    : rec_fail(r, ST_E_NOMEM, "out of memory opening %s",
				   path);
		goto cleanup;
	}
	err = setup(r, path);
	if (!err && created)
		err = sync_parent(r, path);
cleanup:
	if (err) {
		for (int i = 0; i < S_N; i++) {
			sqlite3_finalize(r->stmt[i]);
			r->stmt[i] = NULL;
		}
		sqlite3_close_v2(r->db);
		r->db = NULL;
	}
	return err;
}

/* No lock: only the calling thread ever writes its own buffer. */
const char *rec_errmsg(const rec_store *r)
{
	struct rec_errbuf *b;

	if (!r)
		return "";
	b = pthread_getspecific(r->errkey);
	return b ? b->msg : "";
}

/* Entry of every call: take the lock and refuse a handle whose open
 * failed, so callers get an error, not a crash. */
int rec_enter(rec_store *r)
{
	pthread_mutex_lock(&r->lock);
	if (!r->db)
		return rec_fail(r, ST_E_STATE, "records store is not open");
	return ST_OK;
}

/* ---- Group commit ----
 *
 * Every write call (a unit start, a step, a unit end, an event, ...) is a
 * SAVEPOINT inside the batch's IMMEDIATE transaction: its rows and the
 * event that describes them stand or fall together, and a write that fails
 * rolls back only itself.  A write that succeeded waits for the batch to
 * commit; the commit (one fsync for the whole batch) is made by the last
 * writer through, i.e. when no other writer is counted in (r->want), or
 * when the batch is full.  Writers queued on the lock while a commit
 * syncs thus form the next batch, so the number of commits falls as
 * concurrency rises while a lone writer still commits at once.  Each call
 * returns only after its own commit: ST_OK still means durable.  Events
 * are hashed, chained and signed one by one as they are appended, so the
 * chain order is the commit order.
 *
 * ---- Durable and lazy writes ----
 *
 * A lazy write (rec_step_ex with REC_LAZY) joins the batch the same way but
 * does not wait: it returns once its savepoint is released.  It is not
 * left uncommitted for long, because a batch is committed
 *  - by the last writer through when the batch holds a durable write (one
 *    is waiting), or by the REC_BATCH_MAX-th write, as before;
 *  - by a later durable write of any thread (it commits the batch it
 *    joins; a durable write never commits without the writes before it,
 *    since there is one transaction at a time and SQLite commits it whole);
 *  - by the flusher thread, REC_LAZY_MS after the batch's first lazy
 *    write, when nothing else has (it is started on the first lazy write
 *    and sleeps on lazy_cv otherwise);
 *  - by rec_sync and rec_close.
 * While a batch with lazy writes is open, this connection (all threads of
 * the process) reads them; another process sees them once committed and
 * waits up to REC_LAZY_MS (within busy_timeout) for the write lock.
 * If such a batch fails, its lazy writes are lost: their units go on the
 * lost list, and rec_step_ex refuses their later steps and rec_unit_end
 * refuses them a PASS, so a PASS is never recorded over missing steps. */

#define REC_BATCH_MAX	64		/* writes per commit at most, so a
					 * steady stream cannot delay a commit
					 * without bound */

/* One write call's place in a batch; on the caller's stack. */
struct rec_waiter {
	struct rec_waiter *next;
	int sp;                 /* its savepoint is open */
	int joined;             /* it waits for the batch's commit */
	int done;               /* the batch committed or failed */
	int err;                /* how it ended */
	int now;                /* commit at once, do not wait for others */
	int lazy;               /* do not wait: ride in the batch */
	char what[160];         /* "the end of unit 5 (device d1)" */
	char why[REC_MSG_MAX];  /* why the batch failed */
};

/* Start of every write call: count the writer in before it queues on the
 * lock, so a writer that is already in knows a batch-mate is coming. */
static int wr_enter(rec_store *r, struct rec_waiter *w)
{
	w->next = NULL;
	w->sp = w->joined = w->done = w->err = w->now = w->lazy = 0;
	w->what[0] = w->why[0] = '\0';
	atomic_fetch_add(&r->want, 1);
	return rec_enter(r);
}

/* Open the batch's transaction if none is, then this write's savepoint;
 * what names the write in a later commit failure. */
static int wr_txn(rec_store *r, struct rec_waiter *w, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int wr_txn(rec_store *r, struct rec_waiter *w, const char *fmt, ...)
{
	sqlite3_stmt *s;
	va_list ap;
	int err = ST_OK;

	va_start(ap, fmt);
	vsnprintf(w->what, sizeof(w->what), fmt, ap);
	va_end(ap);
	if (!r->in_batch) {
		s = r->stmt[S_BEGIN];
		if (sqlite3_step(s) != SQLITE_DONE)
			err = rec_db_fail(r, ST_E_DB, "cannot start a write (%s)",
					  w->what);
		rec_stmt_done(s);
		if (err)
			return err;
		r->in_batch = 1;
	}
	s = r->stmt[S_SP];
	if (sqlite3_step(s) != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "cannot start a write (%s)", w->what);
	rec_stmt_done(s);
	if (!err) {
		w->sp = 1;
		r->sp_events = 0;
	}
	return err;
}

static int unit_lost(const rec_store *r, int64_t unit_id);

/* The batch is over (committed, err 0, or lost): wake its writers. */
static void batch_finish(rec_store *r, int err, const char *why)
{
	struct rec_waiter *w;

	if (!err) {
		r->n_commits++;
		r->n_events += r->batch_events;
		r->n_writes += r->batch_n;
		r->n_lazy += r->lazy_n;
		if (r->batch_n > r->max_batch)
			r->max_batch = r->batch_n;
	} else if (r->lazy_n) {
		/* room was made when each lazy write joined (lazy_join) */
		for (int i = 0; i < r->lazy_units_n; i++)
			if (!unit_lost(r, r->lazy_units[i]))
				r->lost[r->lost_n++] = r->lazy_units[i];
		r->lost_writes += r->lazy_n;
		snprintf(r->lost_why, sizeof(r->lost_why), "%s", why);
	}
	r->lazy_n = 0;
	r->lazy_units_n = 0;
	for (w = r->batch; w; w = w->next) {
		w->err = err;
		if (err)
			snprintf(w->why, sizeof(w->why), "%s", why);
		w->done = 1;
	}
	r->batch = NULL;
	r->batch_n = 0;
	r->batch_events = 0;
	r->in_batch = 0;
	pthread_cond_broadcast(&r->durable);
}

/* COMMIT the batch (the fsync), or roll it back if that fails: then every
 * write in it fails (and its lazy writes are lost), since none of them is
 * durable.  Returns the commit's outcome, the cause in why. */
static int batch_commit(rec_store *r, char why[REC_MSG_MAX])
{
	sqlite3_stmt *s = r->stmt[S_COMMIT];
	int err = ST_OK;

	why[0] = '\0';
	if (!r->batch_n) {
		/* only failed writes: nothing to sync */
		s = r->stmt[S_ROLLBACK];
		sqlite3_step(s);
		rec_stmt_done(s);
		r->in_batch = 0;
		return ST_OK;
	}
	if (sqlite3_step(s) != SQLITE_DONE) {
		err = ST_E_DB;
		db_why(r, why, REC_MSG_MAX);
	}
	rec_stmt_done(s);
	if (err && !sqlite3_get_autocommit(r->db)) {
		s = r->stmt[S_ROLLBACK];
		sqlite3_step(s);
		rec_stmt_done(s);
	}
	batch_finish(r, err, why);
	return err;
}

static long long mono_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The flusher: commits a batch whose lazy writes nobody else committed
 * within REC_LAZY_MS of the first.  Holds the lock except while it
 * sleeps; a commit failure is handled by batch_finish (lost list). */
static void *flusher_main(void *arg)
{
	rec_store *r = arg;
	char why[REC_MSG_MAX];
	struct timespec ts;
	long long due;

	pthread_mutex_lock(&r->lock);
	while (!r->closing) {
		if (!r->in_batch || !r->lazy_n) {
			pthread_cond_wait(&r->lazy_cv, &r->lock);
			continue;
		}
		due = r->lazy_t0_ms + r->lazy_ms;
		if (mono_ms() < due) {
			ts.tv_sec = (time_t)(due / 1000);
			ts.tv_nsec = (long)(due % 1000) * 1000000;
			pthread_cond_timedwait(&r->lazy_cv, &r->lock, &ts);
			continue;
		}
		batch_commit(r, why);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* Lock held, a lazy write just joined an open batch that stays open: make
 * sure the flusher will commit it.  ST_OK, or an error when no thread can
 * be started (the caller then commits at once). */
static int flusher_kick(rec_store *r)
{
	sigset_t all, old;
	int rc;

	if (r->flusher_up) {
		pthread_cond_signal(&r->lazy_cv);
		return ST_OK;
	}
	/* signals stay with the threads that handle them */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&r->flusher, NULL, flusher_main, r);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc)
		return ST_E_NOMEM;
	r->flusher_up = 1;
	return ST_OK;
}

static int unit_lost(const rec_store *r, int64_t unit_id)
{
	for (int i = 0; i < r->lost_n; i++)
		if (r->lost[i] == unit_id)
			return 1;
	return 0;
}

/* Grow an id array to hold at least n. */
static int ids_reserve(int64_t **ids, int *cap, int n)
{
	int64_t *m;
	int c = *cap ? *cap : 8;

	if (n <= *cap)
		return ST_OK;
	while (c < n)
		c *= 2;
	m = realloc(*ids, sizeof(**ids) * (size_t)c);
	if (!m)
		return ST_E_NOMEM;
	*ids = m;
	*cap = c;
	return ST_OK;
}

/* Lock held, the write of unit_id succeeded and may ride along: note its
 * unit (with room reserved on the lost list, so a failed commit can always
 * mark it) and let wr_end join it without waiting.  Out of memory: it
 * stays a durable write. */
static void lazy_join(rec_store *r, struct rec_waiter *w, int64_t unit_id)
{
	int i;

	for (i = 0; i < r->lazy_units_n; i++)
		if (r->lazy_units[i] == unit_id)
			break;
	if (i == r->lazy_units_n) {
		if (ids_reserve(&r->lazy_units, &r->lazy_units_cap,
				r->lazy_units_n + 1) ||
		    ids_reserve(&r->lost, &r->lost_cap,
				r->lost_n + r->lazy_units_n + 1))
			return;
		r->lazy_units[r->lazy_units_n++] = unit_id;
	}
	w->lazy = 1;
}

/* End of every write call (lock held, as after wr_enter, whatever failed):
 * keep or roll back this write's savepoint, join the batch, commit it when
 * no other writer is coming, and wait until this write is durable.  Returns
 * err, or the commit's failure. */
static int wr_end(rec_store *r, struct rec_waiter *w, int err)
{
	char why[REC_MSG_MAX];
	sqlite3_stmt *s;
	int last;

	if (w->sp && sqlite3_get_autocommit(r->db)) {
		/* SQLite rolled the whole transaction back (an I/O error,
		 * a full disk): the batch-mates' writes are gone too */
		if (!err)
			err = rec_db_fail(r, ST_E_DB, "%s was rolled back", w->what);
		batch_finish(r, ST_E_DB, rec_errmsg(r));
	} else if (w->sp) {
		if (err) {
			s = r->stmt[S_SP_ROLLBACK];
			sqlite3_step(s);
			rec_stmt_done(s);
		}
		s = r->stmt[S_SP_RELEASE];
		if (sqlite3_step(s) != SQLITE_DONE && !err)
			err = rec_db_fail(r, ST_E_DB, "cannot finish %s", w->what);
		rec_stmt_done(s);
		if (!err) {
			r->batch_n++;
			r->batch_events += r->sp_events;
		}
		if (!err && w->lazy) {
			if (!r->lazy_n++)
				r->lazy_t0_ms = mono_ms();
		} else if (!err) {
			w->joined = 1;
			w->next = r->batch;
			r->batch = w;
		}
	}
	/* commit when a durable write waits and nobody else is coming, when
	 * the batch is full, or when it holds only failed writes; a batch of
	 * lazy writes alone is left to the flusher */
	last = atomic_fetch_sub(&r->want, 1) == 1;
	if (r->in_batch && (w->now || r->batch_n >= REC_BATCH_MAX ||
			    (last && (r->batch || !r->batch_n))))
		batch_commit(r, why);
	else if (r->in_batch && last && flusher_kick(r))
		batch_commit(r, why);
	while (w->joined && !w->done)
		pthread_cond_wait(&r->durable, &r->lock);
	if (w->joined && w->err)
		err = rec_fail(r, w->err, "cannot commit %s: %s", w->what, w->why);
	return err;
}

/* The flusher re-reads the delay when woken. */
int rec_set_lazy_ms(rec_store *r, int ms)
{
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (!err && ms < 0)
		err = rec_fail(r, ST_E_INVAL, "rec_set_lazy_ms: %d ms", ms);
	if (!err) {
		r->lazy_ms = ms;
		pthread_cond_signal(&r->lazy_cv);
	}
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* Not a write: nothing to count in; the lock alone keeps every commit
 * out of the way. */
int rec_sync(rec_store *r)
{
	char why[REC_MSG_MAX];
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (!err && r->in_batch && batch_commit(r, why))
		err = rec_fail(r, ST_E_DB, "cannot commit the pending records: "
			       "%s; %lld lazy step records are lost", why,
			       r->lost_writes);
	if (!err && r->lost_writes)
		err = rec_fail(r, ST_E_DB, "%lld lazy step records were lost when "
			       "their commit failed (%s)", r->lost_writes,
			       r->lost_why);
	pthread_mutex_unlock(&r->lock);
	return err;
}

int rec_get_stats(rec_store *r, rec_stats *out)
{
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (!err && !out)
		err = rec_fail(r, ST_E_INVAL, "rec_get_stats: no output");
	if (!err) {
		out->events = r->n_events;
		out->writes = r->n_writes;
		out->commits = r->n_commits;
		out->max_batch = r->max_batch;
		out->lazy_writes = r->n_lazy;
		out->pending = r->lazy_n;
		out->lost = r->lost_writes;
	}
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* The final states a unit may end in (RUNNING is not one). */
static int is_result(const char *s)
{
	return s && (!strcmp(s, "PASS") || !strcmp(s, "FAIL") ||
		     !strcmp(s, "QUARANTINE") || !strcmp(s, "UNFUSED"));
}

/* Why a work order cannot take a unit: unknown, or its quota is held by
 * PASS and RUNNING units.  Lock held, inside the transaction. */
static int quota_fail(rec_store *r, const char *wo, const char *uid)
{
	sqlite3_stmt *s = r->stmt[S_WO_GET];
	int err;

	rec_bind_text(s, 1, wo);
	if (sqlite3_step(s) != SQLITE_ROW)
		err = rec_fail(r, ST_E_NOTFOUND, "work order %s does not exist: "
			       "create it with 'station records workorder "
			       "create %s --quota N'", wo, wo);
	else
		err = rec_fail(r, ST_E_STATE, "work order %s: quota of %lld "
			       "units reached (%lld PASS, %lld in work); device "
			       "%s was not started", wo,
			       (long long)sqlite3_column_int64(s, 0),
			       (long long)sqlite3_column_int64(s, 1),
			       (long long)sqlite3_column_int64(s, 2), uid);
	rec_stmt_done(s);
	return err;
}

/* The row is written (and synced) before the engine touches the device, so
 * an interrupted unit leaves a RUNNING row to resume from.  With a work
 * order, the row is the quota reservation (the schema's trigger refuses it
 * beyond the quota), taken in the same transaction. */
int rec_unit_begin(rec_store *r, const rec_unit_start *u, int64_t *unit_id)
{
	return rec_unit_begin_ex(r, u, unit_id, NULL, NULL);
}

int rec_unit_begin_ex(rec_store *r, const rec_unit_start *u, int64_t *unit_id,
		      rec_begun_fn fn, void *ctx)
{
	struct rec_waiter w;
	sqlite3_stmt *s;
	char at[32];
	int64_t id = 0;
	int err;

	if (!r)
		return ST_E_INVAL;
	err = wr_enter(r, &w);
	if (err)
		goto out;
	rec_now(at);
	if (!u || !u->uid || !*u->uid || !unit_id) {
		err = rec_fail(r, ST_E_INVAL, "rec_unit_begin: a uid and unit_id "
			   "are required");
		goto out;
	}
	if ((err = wr_txn(r, &w, "the start of device %s", u->uid)))
		goto out;
	s = r->stmt[S_UNIT_INS];
	if (rec_bind_text(s, 1, u->uid) || sqlite3_bind_int(s, 2, u->slot) ||
	    rec_bind_text(s, 3, u->port) || rec_bind_text(s, 4, u->station) ||
	    rec_bind_text(s, 5, u->operator_name) || rec_bind_text(s, 6, u->profile) ||
	    rec_bind_text(s, 7, u->profile_digest) ||
	    rec_bind_text(s, 8, u->work_order) || rec_bind_text(s, 9, at) ||
	    sqlite3_step(s) != SQLITE_DONE) {
		int ext = sqlite3_extended_errcode(r->db);

		if (u->work_order && (ext == SQLITE_CONSTRAINT_TRIGGER ||
				      ext == SQLITE_CONSTRAINT_FOREIGNKEY)) {
			rec_stmt_done(s);
			err = quota_fail(r, u->work_order, u->uid);
		} else {
			err = rec_db_fail(r, ST_E_DB, "cannot record the start of "
					  "device %s", u->uid);
			rec_stmt_done(s);
		}
		goto out;
	}
	rec_stmt_done(s);
	id = sqlite3_last_insert_rowid(r->db);
	/* the row's started_at is in the signed data (and is the event's
	 * time), so verify checks it exactly */
	err = rec_append_event_at(r, "unit_start", id, u->uid, at,
		json_pack("{s:i, s:s?, s:s?, s:s?, s:s?, s:s?, s:s?, s:s}",
			  "slot", u->slot, "port", u->port, "station", u->station,
			  "operator", u->operator_name, "profile", u->profile,
			  "profile_digest", u->profile_digest,
			  "work_order", u->work_order, "started_at", at));
	if (!err && fn)
		fn(ctx, id);
out:
	err = wr_end(r, &w, err);
	if (!err)
		*unit_id = id;
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* Why a unit cannot take a step or an end: it does not exist
 * (ST_E_NOTFOUND) or is already final (ST_E_STATE). */
static int unit_not_running(rec_store *r, int64_t unit_id, const char *what)
{
	sqlite3_stmt *s = r->stmt[S_UNIT_GET];
	int rc, err;

	sqlite3_bind_int64(s, 1, unit_id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		err = rec_fail(r, ST_E_STATE, "%s: unit %lld (device %s) is not "
			   "RUNNING but %s; its record is final", what,
			   (long long)unit_id, sqlite3_column_text(s, 0),
			   sqlite3_column_text(s, 1));
	else if (rc == SQLITE_DONE)
		err = rec_fail(r, ST_E_NOTFOUND, "%s: no unit %lld", what,
			   (long long)unit_id);
	else
		err = rec_db_fail(r, ST_E_DB, "%s: look up unit %lld", what,
			      (long long)unit_id);
	rec_stmt_done(s);
	return err;
}

/* Why a unit takes no more records: a commit lost some of its steps. */
static int lost_fail(rec_store *r, int64_t unit_id, const char *what)
{
	return rec_fail(r, ST_E_DB, "%s: step records of unit %lld written "
			"earlier were lost when their commit failed (%s): the "
			"unit cannot PASS; provision it again", what,
			(long long)unit_id, r->lost_why);
}

int rec_step(rec_store *r, int64_t unit_id, const char *step,
	     const char *outcome, const char *detail)
{
	return rec_step_ex(r, unit_id, step, outcome, detail, REC_DURABLE);
}

/* Steps only go to RUNNING units: a final record must not grow later. */
int rec_step_ex(rec_store *r, int64_t unit_id, const char *step,
		const char *outcome, const char *detail, rec_durability d)
{
	struct rec_waiter w;
	sqlite3_stmt *s;
	int64_t row, seq = 0;
	char uid[128], at[32];
	int err;

	if (!r)
		return ST_E_INVAL;
	err = wr_enter(r, &w);
	if (err)
		goto out;
	if (!step || !*step || !outcome || (strcmp(outcome, "ok") &&
	    strcmp(outcome, "fail") && strcmp(outcome, "skip"))) {
		err = rec_fail(r, ST_E_INVAL, "rec_step: need a step name and an "
			   "outcome of ok, fail or skip (got %s)",
			   outcome ? outcome : "NULL");
		goto out;
	}
	if (unit_lost(r, unit_id)) {
		err = lost_fail(r, unit_id, "rec_step");
		goto out;
	}
	if ((err = wr_txn(r, &w, "step %s of unit %lld", step,
			  (long long)unit_id)))
		goto out;
	rec_now(at);
	s = r->stmt[S_STEP_INS];
	if (sqlite3_bind_int64(s, 1, unit_id) || rec_bind_text(s, 2, step) ||
	    rec_bind_text(s, 3, outcome) || rec_bind_text(s, 4, detail) ||
	    rec_bind_text(s, 5, at) || sqlite3_step(s) != SQLITE_DONE) {
		err = rec_db_fail(r, ST_E_DB, "cannot record step %s of unit %lld",
			      step, (long long)unit_id);
		rec_stmt_done(s);
		goto out;
	}
	rec_stmt_done(s);
	if (sqlite3_changes(r->db) == 0) {
		err = unit_not_running(r, unit_id, "rec_step");
		goto out;
	}
	row = sqlite3_last_insert_rowid(r->db);
	s = r->stmt[S_STEP_SEQ];
	sqlite3_bind_int64(s, 1, row);
	if (sqlite3_step(s) == SQLITE_ROW)
		seq = sqlite3_column_int64(s, 0);
	rec_stmt_done(s);
	s = r->stmt[S_UNIT_GET];
	sqlite3_bind_int64(s, 1, unit_id);
	snprintf(uid, sizeof(uid), "%s", sqlite3_step(s) == SQLITE_ROW ?
		 (const char *)sqlite3_column_text(s, 0) : "");
	rec_stmt_done(s);
	err = rec_append_event_at(r, "step", unit_id, uid, at,
		json_pack("{s:I, s:s, s:s, s:s?, s:s}", "seq", (json_int_t)seq,
			  "step", step, "outcome", outcome, "detail", detail,
			  "at", at));
	if (!err && d == REC_LAZY && r->lazy_ms > 0)
		lazy_join(r, &w, unit_id);
out:
	err = wr_end(r, &w, err);
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* Turn SQLite's constraint text into what the operator must hear. */
static int end_fail(rec_store *r, int64_t unit_id, const char *uid,
		    const rec_unit_result *e)
{
	const char *msg = sqlite3_errmsg(r->db);

	if (sqlite3_extended_errcode(r->db) == SQLITE_CONSTRAINT_TRIGGER &&
	    strstr(msg, "already has a PASS record"))
		return rec_fail(r, ST_E_DB, "device %s already has a PASS record "
			    "that is not revoked", uid);
	if (sqlite3_extended_errcode(r->db) == SQLITE_CONSTRAINT_TRIGGER &&
	    strstr(msg, "units.cert_serial"))
		return rec_fail(r, ST_E_DB, "certificate serial %s is already "
			    "recorded for another unit (%s)", e->cert_serial, msg);
	if (sqlite3_extended_errcode(r->db) == SQLITE_CONSTRAINT_UNIQUE) {
		if (strstr(msg, "units.uid"))
			return rec_fail(r, ST_E_DB, "device %s already has a PASS "
				    "record (%s)", uid, msg);
		if (strstr(msg, "units.cert_serial"))
			return rec_fail(r, ST_E_DB, "certificate serial %s is "
				    "already recorded for another unit (%s)",
				    e->cert_serial, msg);
	}
	return rec_db_fail(r, ST_E_DB, "cannot end unit %lld (device %s)",
		       (long long)unit_id, uid);
}

/* Check and update in one IMMEDIATE transaction, so two enders can never
 * both see RUNNING, and the commit (synced) is the moment PASS is true. */
int rec_unit_end(rec_store *r, int64_t unit_id, const rec_unit_result *e)
{
	struct rec_waiter w;
	sqlite3_stmt *s;
	const char *state;
	char uid[128], at[32];
	int rc, err;

	if (!r)
		return ST_E_INVAL;
	err = wr_enter(r, &w);
	if (err)
		goto out;
	if (!e || !is_result(e->result)) {
		err = rec_fail(r, ST_E_INVAL, "rec_unit_end: result must be PASS, "
			   "UNFUSED, FAIL or QUARANTINE (got %s)",
			   e && e->result ? e->result : "NULL");
		goto out;
	}
	if (!strcmp(e->result, "PASS") && unit_lost(r, unit_id)) {
		err = lost_fail(r, unit_id, "rec_unit_end");
		goto out;
	}
	if ((err = wr_txn(r, &w, "the end of unit %lld", (long long)unit_id)))
		goto out;

	s = r->stmt[S_UNIT_GET];
	sqlite3_bind_int64(s, 1, unit_id);
	rc = sqlite3_step(s);
	state = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 1) : NULL;
	if (state && !strcmp(state, "RUNNING")) {
		snprintf(uid, sizeof(uid), "%s", sqlite3_column_text(s, 0));
		rec_stmt_done(s);
		snprintf(w.what, sizeof(w.what), "the end of unit %lld "
			 "(device %s)", (long long)unit_id, uid);
	} else {
		rec_stmt_done(s);
		err = unit_not_running(r, unit_id, "rec_unit_end");
		goto out;
	}

	rec_now(at);
	s = r->stmt[S_UNIT_END];
	if (sqlite3_bind_int64(s, 1, unit_id) || rec_bind_text(s, 2, e->result) ||
	    rec_bind_text(s, 3, e->reason) || rec_bind_text(s, 4, e->cert_serial) ||
	    rec_bind_text(s, 5, e->cert_sha256) || rec_bind_text(s, 6, e->cert_pem) ||
	    rec_bind_text(s, 7, e->pubkey_hex) || rec_bind_text(s, 8, e->rot_hash) ||
	    rec_bind_text(s, 9, e->fuse_readback) || rec_bind_text(s, 10, at) ||
	    sqlite3_step(s) != SQLITE_DONE)
		err = end_fail(r, unit_id, uid, e);
	else if (sqlite3_changes(r->db) != 1)
		err = rec_fail(r, ST_E_STATE, "unit %lld changed under us",
			   (long long)unit_id);
	rec_stmt_done(s);
	if (err)
		goto out;
	err = rec_append_event_at(r, "unit_end", unit_id, uid, at,
		json_pack("{s:s, s:s?, s:s?, s:s?, s:s?, s:s?, s:s?, s:s?, s:s}",
			  "result", e->result, "reason", e->reason,
			  "cert_serial", e->cert_serial,
			  "cert_sha256", e->cert_sha256, "cert_pem", e->cert_pem,
			  "pubkey", e->pubkey_hex, "rot_hash", e->rot_hash,
			  "fuse_readback", e->fuse_readback, "finished_at", at));
out:
	err = wr_end(r, &w, err);
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* Shared by rec_last_unit and rec_last_result; lock held. */
static int last_unit(rec_store *r, const char *uid, int64_t *unit_id,
		     char *state, size_t len)
{
	sqlite3_stmt *s = r->stmt[S_LAST];
	int rc, err;

	if (!uid || !*uid)
		return rec_fail(r, ST_E_INVAL, "no device uid given");
	rec_bind_text(s, 1, uid);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		err = copy_col(r, s, 1, state, len);
		if (!err && unit_id)
			*unit_id = sqlite3_column_int64(s, 0);
	} else if (rc == SQLITE_DONE) {
		err = rec_fail(r, ST_E_NOTFOUND, "device %s was never seen", uid);
	} else {
		err = rec_db_fail(r, ST_E_DB, "look up device %s", uid);
	}
	rec_stmt_done(s);
	return err;
}

/* The id comes with the state so the engine can close an interrupted
 * RUNNING unit before starting the next. */
int rec_last_unit(rec_store *r, const char *uid, int64_t *unit_id,
		  char *state, size_t len)
{
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (!err)
		err = last_unit(r, uid, unit_id, state, len);
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* Kept for callers that only want the word. */
int rec_last_result(rec_store *r, const char *uid, char *buf, size_t len)
{
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (!err && !buf)
		err = rec_fail(r, ST_E_INVAL, "rec_last_result: no buffer");
	if (!err)
		err = last_unit(r, uid, NULL, buf, len);
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* Backed by the units_one_live_pass trigger, so at most one row can
 * answer: a revoked PASS (re-provisioned device) does not count. */
int rec_find_pass(rec_store *r, const char *uid, int64_t *unit_id)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	if (!uid || !*uid) {
		err = rec_fail(r, ST_E_INVAL, "no device uid given");
		goto out;
	}
	s = r->stmt[S_PASS];
	rec_bind_text(s, 1, uid);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		if (unit_id)
			*unit_id = sqlite3_column_int64(s, 0);
	} else if (rc == SQLITE_DONE) {
		err = rec_fail(r, ST_E_NOTFOUND, "device %s has no PASS record",
			   uid);
	} else {
		err = rec_db_fail(r, ST_E_DB, "look up device %s", uid);
	}
	rec_stmt_done(s);
out:
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* An unknown state name is a caller bug, not "zero units". */
int rec_count(rec_store *r, const char *result, long *count)
{
	sqlite3_stmt *s;
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	if (!count || (result && !is_result(result) &&
		       strcmp(result, "RUNNING"))) {
		err = rec_fail(r, ST_E_INVAL, "rec_count: unknown state %s",
			   result ? result : "(no count pointer)");
		goto out;
	}
	s = r->stmt[result ? S_COUNT : S_COUNT_ALL];
	if (result)
		rec_bind_text(s, 1, result);
	if (sqlite3_step(s) == SQLITE_ROW)
		*count = (long)sqlite3_column_int64(s, 0);
	else
		err = rec_db_fail(r, ST_E_DB, "count units");
	rec_stmt_done(s);
out:
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* Read back from the live connection: that, not what rec_open asked for,
 * is what protects the records. */
int rec_get_settings(rec_store *r, rec_settings *out)
{
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	if (!out) {
		err = rec_fail(r, ST_E_INVAL, "rec_get_settings: no output");
		goto out;
	}
	memset(out, 0, sizeof(*out));
	err = query1(r, "PRAGMA journal_mode", NULL, out->journal_mode,
		     sizeof(out->journal_mode));
	if (!err)
		err = query1(r, "PRAGMA synchronous", &out->synchronous, NULL, 0);
	if (!err)
		err = query1(r, "PRAGMA foreign_keys", &out->foreign_keys,
			     NULL, 0);
	if (!err)
		err = query1(r, "PRAGMA busy_timeout", &out->busy_timeout_ms,
			     NULL, 0);
	if (!err)
		err = query1(r, "PRAGMA user_version", &out->schema_version,
			     NULL, 0);
out:
	pthread_mutex_unlock(&r->lock);
	return err;
}

void rec_now(char out[32])
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + strlen(out), 32 - strlen(out), ".%03dZ",
		 (int)(ts.tv_nsec / 1000000) % 1000);
}

/* Raw r||s to a DER ECDSA-Sig-Value in hex, the form `openssl dgst
 * -verify` takes (after xxd -r -p). */
static int sig_hex(const uint8_t rs[64], char *out, size_t len)
{
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *br = BN_bin2bn(rs, 32, NULL), *bs = BN_bin2bn(rs + 32, 32, NULL);
	unsigned char *der = NULL;
	int n = -1;

	if (!sig || !br || !bs)
		goto cleanup;
	ECDSA_SIG_set0(sig, br, bs);
	br = bs = NULL;
	n = i2d_ECDSA_SIG(sig, &der);
	if (n > 0 && (size_t)n * 2 + 1 <= len)
		st_hex(der, (size_t)n, out);
	else
		n = -1;
cleanup:
	BN_free(br);
	BN_free(bs);
	ECDSA_SIG_free(sig);
	OPENSSL_free(der);
	return n > 0 ? ST_OK : ST_E_CRYPTO;
}

/* The body is the only thing hashed and signed: canonical JSON (jansson,
 * sorted keys, compact, \u-escaped non-ASCII), so anyone can recompute the
 * hash from the stored text alone. */
int rec_append_event(rec_store *r, const char *kind, int64_t unit_id,
		     const char *uid, json_t *data)
{
	return rec_append_event_at(r, kind, unit_id, uid, NULL, data);
}

int rec_append_event_at(rec_store *r, const char *kind, int64_t unit_id,
			const char *uid, const char *when, json_t *data)
{
	sqlite3_stmt *s = r->stmt[S_EV_LAST];
	char at[32], prev[REC_HASH_HEX], hash[REC_HASH_HEX], sig[200];
	uint8_t dig[SHA256_DIGEST_LENGTH], rs[64];
	json_int_t seq = 1;
	json_t *body = NULL;
	char *text = NULL;
	int rc, err;

	if (!data)
		return rec_fail(r, ST_E_INVAL, "event %s%s%s: its data is not "
				"valid UTF-8 text", kind, uid ? " of device " : "",
				uid ? uid : "");
	memset(prev, '0', 64);
	prev[64] = '\0';
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		seq = sqlite3_column_int64(s, 0) + 1;
		snprintf(prev, sizeof(prev), "%s", sqlite3_column_text(s, 1));
	}
	rec_stmt_done(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		json_decref(data);
		return rec_db_fail(r, ST_E_DB, "read the end of the audit chain");
	}
	if (when)
		snprintf(at, sizeof(at), "%s", when);
	else
		rec_now(at);
	body = json_pack("{s:s, s:o, s:s?, s:s, s:s, s:I, s:s?, s:o}",
			 "at", at, "data", data, "key",
			 r->sign ? r->sign_key : NULL, "kind", kind, "prev", prev,
			 "seq", seq, "uid", uid, "unit",
			 unit_id > 0 ? json_integer(unit_id) : json_null());
	if (body)
		text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS |
				  JSON_ENSURE_ASCII);
	json_decref(body);
	if (!text)
		return rec_fail(r, ST_E_NOMEM, "event %s: cannot encode", kind);
	SHA256((const unsigned char *)text, strlen(text), dig);
	st_hex(dig, sizeof(dig), hash);
	if (r->sign) {
		err = r->sign(r->sign_ctx, dig, rs);
		if (!err)
			err = sig_hex(rs, sig, sizeof(sig));
		if (err) {
			free(text);
			return rec_fail(r, err, "the audit key could not sign "
					"event %lld (%s): %s", (long long)seq,
					kind, st_strerror(err));
		}
	}
	s = r->stmt[S_EV_INS];
	err = ST_OK;
	if (sqlite3_bind_int64(s, 1, seq) || rec_bind_text(s, 2, at) ||
	    rec_bind_text(s, 3, kind) ||
	    (unit_id > 0 ? sqlite3_bind_int64(s, 4, unit_id) :
			   sqlite3_bind_null(s, 4)) ||
	    rec_bind_text(s, 5, uid) || rec_bind_text(s, 6, text) ||
	    rec_bind_text(s, 7, hash) || rec_bind_text(s, 8, r->sign ? sig : NULL) ||
	    sqlite3_step(s) != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "cannot record event %lld (%s%s%s)",
				  (long long)seq, kind, uid ? " of device " : "",
				  uid ? uid : "");
	rec_stmt_done(s);
	free(text);
	if (!err)
		r->sp_events++;
	return err;
}

/* The certificate goes into the store in its own transaction with an
 * event naming it, so the chain says when the key changed. */
int rec_set_signer(rec_store *r, rec_sign_fn fn, void *ctx,
		   const uint8_t *cert_der, size_t cert_len)
{
	const uint8_t *p = cert_der;
	uint8_t dig[SHA256_DIGEST_LENGTH];
	char fp[REC_HASH_HEX], *pem = NULL;
	struct rec_waiter w;
	X509 *x = NULL;
	BIO *b = NULL;
	sqlite3_stmt *s;
	int tried = 0;
	long n;
	int err;

	if (!r)
		return ST_E_INVAL;
	err = wr_enter(r, &w);
	if (err)
		goto out;
	if (!fn) {
		r->sign = NULL;
		r->sign_ctx = NULL;
		goto out;
	}
	x = cert_der ? d2i_X509(NULL, &p, (long)cert_len) : NULL;
	b = BIO_new(BIO_s_mem());
	if (!x || !b || !PEM_write_bio_X509(b, x)) {
		err = rec_fail(r, ST_E_INVAL, "rec_set_signer: the audit "
			       "certificate does not parse");
		goto out;
	}
	n = BIO_get_mem_data(b, &pem);
	SHA256(cert_der, cert_len, dig);
	st_hex(dig, sizeof(dig), fp);
	/* committed at once, before the lock is let go, so no other write
	 * is signed by a key whose certificate might not be stored */
	w.now = 1;
	tried = 1;
	if ((err = wr_txn(r, &w, "the audit certificate")))
		goto out;
	s = r->stmt[S_CERT_INS];
	rec_bind_text(s, 1, fp);
	sqlite3_bind_text(s, 2, pem, (int)n, SQLITE_TRANSIENT);
	if (sqlite3_step(s) != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "cannot store the audit certificate");
	rec_stmt_done(s);
	if (!err && sqlite3_changes(r->db) == 1) {
		r->sign = fn;
		r->sign_ctx = ctx;
		memcpy(r->sign_key, fp, sizeof(fp));
		err = rec_append_event(r, "audit_key", 0, NULL,
				       json_pack("{s:s}", "cert_sha256", fp));
	}
out:
	err = wr_end(r, &w, err);
	if (err && tried) {
		r->sign = NULL;
		r->sign_ctx = NULL;
	} else if (!err && fn) {
		r->sign = fn;
		r->sign_ctx = ctx;
		memcpy(r->sign_key, fp, sizeof(fp));
	}
	X509_free(x);
	BIO_free(b);
	pthread_mutex_unlock(&r->lock);
	return err;
}

int rec_event(rec_store *r, const char *kind, const char *uid, ...)
{
	json_t *data = json_object();
	struct rec_waiter w;
	const char *k, *v;
	va_list ap;
	int err;

	if (!r || !kind || !*kind || !data) {
		json_decref(data);
		return ST_E_INVAL;
	}
	va_start(ap, uid);
	while ((k = va_arg(ap, const char *))) {
		v = va_arg(ap, const char *);
		if (json_object_set_new(data, k, v ? json_string(v) : json_null())) {
			json_decref(data);
			data = NULL;    /* reported by rec_append_event */
			break;
		}
	}
	va_end(ap);
	err = wr_enter(r, &w);
	if (!err)
		err = wr_txn(r, &w, "event %s", kind);
	if (!err) {
		err = rec_append_event(r, kind, 0, uid, data);
		data = NULL;
	}
	err = wr_end(r, &w, err);
	json_decref(data);
	pthread_mutex_unlock(&r->lock);
	return err;
}

int rec_workorder_create(rec_store *r, const char *id, long quota)
{
	struct rec_waiter w;
	sqlite3_stmt *s;
	char q[32], at[32];
	int err;

	if (!r)
		return ST_E_INVAL;
	err = wr_enter(r, &w);
	if (err)
		goto out;
	if (!id || !*id) {
		err = rec_fail(r, ST_E_INVAL, "a work order needs an id");
		goto out;
	}
	if ((err = wr_txn(r, &w, "work order %s", id)))
		goto out;
	rec_now(at);
	s = r->stmt[S_WO_INS];
	rec_bind_text(s, 1, id);
	if (quota >= 0)
		sqlite3_bind_int64(s, 2, quota);
	rec_bind_text(s, 3, at);
	if (sqlite3_step(s) != SQLITE_DONE) {
		if (sqlite3_extended_errcode(r->db) ==
		    SQLITE_CONSTRAINT_PRIMARYKEY)
			err = rec_fail(r, ST_E_EXISTS, "work order %s already "
				       "exists", id);
		else
			err = rec_db_fail(r, ST_E_DB, "cannot create work "
					  "order %s", id);
	}
	rec_stmt_done(s);
	snprintf(q, sizeof(q), "%ld", quota);
	if (!err)
		err = rec_append_event_at(r, "workorder_create", 0, NULL, at,
			json_pack("{s:s, s:s?, s:s}", "work_order", id,
				  "quota", quota >= 0 ? q : NULL,
				  "created_at", at));
out:
	err = wr_end(r, &w, err);
	pthread_mutex_unlock(&r->lock);
	return err;
}

int rec_workorder_get(rec_store *r, const char *id, rec_workorder *out)
{
	sqlite3_stmt *s;
	int rc, err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	if (!id || !out) {
		err = rec_fail(r, ST_E_INVAL, "rec_workorder_get: no id or output");
		goto out;
	}
	s = r->stmt[S_WO_GET];
	rec_bind_text(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		out->quota = sqlite3_column_type(s, 0) == SQLITE_NULL ? -1 :
			     (long)sqlite3_column_int64(s, 0);
		out->pass = (long)sqlite3_column_int64(s, 1);
		out->running = (long)sqlite3_column_int64(s, 2);
		out->failed = (long)sqlite3_column_int64(s, 3);
	} else if (rc == SQLITE_DONE) {
		err = rec_fail(r, ST_E_NOTFOUND, "work order %s does not exist", id);
	} else {
		err = rec_db_fail(r, ST_E_DB, "look up work order %s", id);
	}
	rec_stmt_done(s);
out:
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* Finalize first so sqlite3_close can checkpoint and drop the WAL. */
void rec_close(rec_store *r)
{
	struct rec_errbuf *b, *next;

	if (!r)
		return;
	if (r->flusher_up) {
		pthread_mutex_lock(&r->lock);
		r->closing = 1;
		pthread_cond_signal(&r->lazy_cv);
		pthread_mutex_unlock(&r->lock);
		pthread_join(r->flusher, NULL);
	}
	if (r->db && r->in_batch) {
		char why[REC_MSG_MAX];

		batch_commit(r, why);   /* lazy writes still pending */
	}
	for (int i = 0; i < S_N; i++)
		sqlite3_finalize(r->stmt[i]);
	sqlite3_close_v2(r->db);
	pthread_key_delete(r->errkey);
	for (b = r->errbufs; b; b = next) {
		next = b->next;
		free(b);
	}
	free(r->lazy_units);
	free(r->lost);
	pthread_cond_destroy(&r->lazy_cv);
	pthread_cond_destroy(&r->durable);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

/* Read-only and rare (only when a run was interrupted): prepared here, not
 * kept with the hot statements. */
int rec_unit_steps(rec_store *r, int64_t unit_id, rec_step_fn fn, void *ctx)
{
	sqlite3_stmt *s = NULL;
	int rc, err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	if (!fn) {
		err = rec_fail(r, ST_E_INVAL, "rec_unit_steps: no callback");
		goto out;
	}
	if (sqlite3_prepare_v2(r->db, "SELECT step, outcome, coalesce(detail, '') "
			       "FROM steps WHERE unit_id = ?1 ORDER BY seq", -1, &s,
			       NULL) != SQLITE_OK) {
		err = rec_db_fail(r, ST_E_DB, "read the steps of unit %lld", (long long)unit_id);
		goto out;
	}
	sqlite3_bind_int64(s, 1, unit_id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && !err)
		err = fn(ctx, (const char *)sqlite3_column_text(s, 0),
			 (const char *)sqlite3_column_text(s, 1),
			 (const char *)sqlite3_column_text(s, 2));
	if (!err && rc != SQLITE_DONE && rc != SQLITE_ROW)
		err = rec_db_fail(r, ST_E_DB, "read the steps of unit %lld", (long long)unit_id);
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* One revocation row and its signed event, in one transaction.  pass:
 * the unit must be PASS (re-provisioning) and its serial is the unit's;
 * else the unit must not be PASS and serial names the certificate its
 * certificate step recorded. */
static int revoke_unit(rec_store *r, int64_t unit_id, const char *want_serial,
		       int crl_reason, const char *reason, const char *by, bool pass)
{
	struct rec_waiter w;
	sqlite3_stmt *s = NULL;
	char uid[128] = "", serial[128] = "", state[16] = "", at[32];
	json_t *data = NULL;
	int err;

	if (!r)
		return ST_E_INVAL;
	err = wr_enter(r, &w);
	if (err)
		goto out;
	if (!reason || !*reason || !by || !*by || crl_reason < 0 ||
	    crl_reason > 10 || crl_reason == 7 || (!pass && (!want_serial ||
	    !*want_serial || strspn(want_serial, "0123456789abcdefABCDEF") !=
	    strlen(want_serial)))) {
		err = rec_fail(r, ST_E_INVAL, "a revocation needs a reason, who "
			   "decided it, a CRL reason code and a hex serial");
		goto out;
	}
	err = wr_txn(r, &w, "the revocation of unit %lld", (long long)unit_id);
	if (err)
		goto out;
	if (sqlite3_prepare_v2(r->db, "SELECT uid, state, coalesce(cert_serial, '')"
			       " FROM units WHERE id = ?1", -1, &s, NULL) != SQLITE_OK) {
		err = rec_db_fail(r, ST_E_DB, "look up unit %lld", (long long)unit_id);
		goto done;
	}
	sqlite3_bind_int64(s, 1, unit_id);
	if (sqlite3_step(s) != SQLITE_ROW) {
		err = rec_fail(r, ST_E_NOTFOUND, "no unit record %lld", (long long)unit_id);
		goto done;
	}
	snprintf(uid, sizeof(uid), "%s", (const char *)sqlite3_column_text(s, 0));
	snprintf(state, sizeof(state), "%s", (const char *)sqlite3_column_text(s, 1));
	snprintf(serial, sizeof(serial), "%s", (const char *)sqlite3_column_text(s, 2));
	sqlite3_finalize(s);
	s = NULL;
	/* A record closed as interrupted holds no certificate in its row
	 * (the next presentation may still resume it): the serial is the
	 * one its durable certificate step issued. */
	if (pass && !serial[0] && strcmp(state, "RUNNING")) {
		if (sqlite3_prepare_v2(r->db, "SELECT substr(detail, 8,"
				       " instr(substr(detail, 8), ' ') - 1) FROM steps"
				       " WHERE unit_id = ?1 AND step = 'certificate'"
				       " AND outcome = 'ok' AND detail LIKE 'serial %'"
				       " ORDER BY seq DESC LIMIT 1", -1, &s,
				       NULL) != SQLITE_OK) {
			err = rec_db_fail(r, ST_E_DB, "look up unit %lld",
					  (long long)unit_id);
			goto done;
		}
		sqlite3_bind_int64(s, 1, unit_id);
		if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
			snprintf(serial, sizeof(serial), "%s",
				 (const char *)sqlite3_column_text(s, 0));
		sqlite3_finalize(s);
		s = NULL;
	}
	if (pass && (!strcmp(state, "RUNNING") || !serial[0])) {
		err = rec_fail(r, ST_E_STATE, "unit record %lld (device %s) is %s, "
			   "not a final record with a certificate: nothing to revoke",
			   (long long)unit_id, uid, state);
		goto done;
	}
	if (!pass && !strcmp(state, "PASS")) {
		err = rec_fail(r, ST_E_STATE, "unit record %lld (device %s) is PASS: "
			   "its identity is revoked only by re-provisioning",
			   (long long)unit_id, uid);
		goto done;
	}
	if (!pass && serial[0] && strcasecmp(serial, want_serial)) {
		err = rec_fail(r, ST_E_STATE, "unit record %lld (device %s) holds "
			   "certificate %s, not %s", (long long)unit_id, uid, serial,
			   want_serial);
		goto done;
	}
	if (!pass)
		snprintf(serial, sizeof(serial), "%s", want_serial);
	if (sqlite3_prepare_v2(r->db, "INSERT INTO revocations (unit_id, uid,"
			       " cert_serial, reason, revoked_by, revoked_at,"
			       " crl_reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
			       -1, &s, NULL) != SQLITE_OK) {
		err = rec_db_fail(r, ST_E_DB, "revoke unit %lld", (long long)unit_id);
		goto done;
	}
	sqlite3_bind_int64(s, 1, unit_id);
	rec_bind_text(s, 2, uid);
	rec_bind_text(s, 3, serial);
	rec_bind_text(s, 4, reason);
	rec_bind_text(s, 5, by);
	rec_now(at);
	rec_bind_text(s, 6, at);
	sqlite3_bind_int(s, 7, crl_reason);
	if (sqlite3_step(s) != SQLITE_DONE) {
		err = sqlite3_extended_errcode(r->db) == SQLITE_CONSTRAINT_PRIMARYKEY ?
		      rec_fail(r, ST_E_EXISTS, "unit record %lld is already revoked",
			       (long long)unit_id) :
		      rec_db_fail(r, ST_E_DB, "revoke unit %lld", (long long)unit_id);
		goto done;
	}
	data = json_pack("{s:I, s:s, s:s, s:s, s:s, s:i}", "unit",
			 (json_int_t)unit_id, "cert_serial", serial, "reason", reason,
			 "by", by, "revoked_at", at, "crl_reason", crl_reason);
	err = rec_append_event_at(r, "revoke", 0, uid, at, data);
done:
	sqlite3_finalize(s);
out:
	err = wr_end(r, &w, err);
	pthread_mutex_unlock(&r->lock);
	return err;
}

int rec_revoke(rec_store *r, int64_t unit_id, const char *reason,
	       const char *by)
{
	return revoke_unit(r, unit_id, NULL, REC_CRL_SUPERSEDED, reason, by, true);
}

int rec_revoke_issued(rec_store *r, int64_t unit_id, const char *cert_serial,
		      int crl_reason, const char *reason, const char *by)
{
	return revoke_unit(r, unit_id, cert_serial, crl_reason, reason, by, false);
}

int rec_list_revoked(rec_store *r, rec_revoked_fn fn, void *ctx)
{
	sqlite3_stmt *s = NULL;
	int rc, err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	if (sqlite3_prepare_v2(r->db, "SELECT unit_id, uid, cert_serial, reason,"
			       " revoked_by, revoked_at, coalesce(crl_reason, 4)"
			       " FROM revocations ORDER BY"
			       " revoked_at, unit_id", -1, &s, NULL) != SQLITE_OK) {
		err = rec_db_fail(r, ST_E_DB, "read the revocations");
		goto out;
	}
	while (!err && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		rec_revoked_row row = {
			.unit_id = sqlite3_column_int64(s, 0),
			.uid = (const char *)sqlite3_column_text(s, 1),
			.cert_serial = (const char *)sqlite3_column_text(s, 2),
			.reason = (const char *)sqlite3_column_text(s, 3),
			.by = (const char *)sqlite3_column_text(s, 4),
			.at = (const char *)sqlite3_column_text(s, 5),
			.crl_reason = sqlite3_column_int(s, 6),
		};

		err = fn(ctx, &row);
	}
	if (!err && rc != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "read the revocations");
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	return err;
}

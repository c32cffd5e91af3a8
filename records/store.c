/* store.c — the audit store on SQLite: WAL, synchronous=FULL, a versioned
 * schema, prepared statements, one mutex per store; opening and closing
 * it, the settings read back, and the error messages every records/ file
 * keeps through rec_fail.  The writes are in commit.c (group commit),
 * units.c, workorders.c and chain.c; the reads in query.c and verify.c. */
#include "records.h"
#include "rec_int.h"

#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
	/* The code a unit left with (docs/firmware.md): the images written
	 * and the device's own digests of them, and the end-of-line
	 * attestation; canonical JSON text, also in the unit_end event
	 * under the same names, so verify covers both. */
	{ 6,
	  "ALTER TABLE units ADD COLUMN firmware TEXT;"
	  "ALTER TABLE units ADD COLUMN attestation TEXT;" },
	/* What the plant's MES needs of a unit (docs/integration.md): its
	 * measurements (name, value, unit, limits, outcome) and its flags
	 * (a route check the MES did not answer); JSON text, also in the
	 * unit_end event under the same names, so verify covers both. */
	{ 7,
	  "ALTER TABLE units ADD COLUMN measurements TEXT;"
	  "ALTER TABLE units ADD COLUMN flags TEXT;" },
	/* One audit signature per commit (records/chain.c, "One signature
	 * per commit"): the writer signs a batch's last event just before
	 * its COMMIT, so an event row may get its missing signature once,
	 * and nothing else of it may change. */
	{ 8,
	  "DROP TRIGGER events_no_update;"
	  "CREATE TRIGGER events_no_update BEFORE UPDATE ON events"
	  " WHEN NOT (OLD.sig IS NULL AND NEW.sig IS NOT NULL AND"
	  " NEW.seq = OLD.seq AND NEW.at IS OLD.at AND NEW.kind IS OLD.kind AND"
	  " NEW.unit_id IS OLD.unit_id AND NEW.uid IS OLD.uid AND"
	  " NEW.body IS OLD.body AND NEW.hash IS OLD.hash)"
	  " BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;" },
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
		" fuse_readback = ?9, finished_at = ?10, firmware = ?11,"
		" attestation = ?12, measurements = ?13, flags = ?14"
		" WHERE id = ?1 AND state = 'RUNNING'",
	[S_LAST] = "SELECT id, state FROM units WHERE uid = ?1"
		" ORDER BY id DESC LIMIT 1",
	[S_PASS] = "SELECT id FROM units WHERE uid = ?1 AND state = 'PASS'"
		" AND id NOT IN (SELECT unit_id FROM revocations)",
	[S_COUNT_ALL] = "SELECT count(*) FROM units",
	[S_COUNT] = "SELECT count(*) FROM units WHERE state = ?1",
	[S_EV_LAST] = "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
	[S_EV_SIG] = "UPDATE events SET sig = ?1 WHERE seq = ?2 AND sig IS NULL",
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
void rec_db_why(rec_store *r, char *buf, size_t len)
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
	rec_db_why(r, b->msg + n, sizeof(b->msg) - n);
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
int rec_copy_col(rec_store *r, sqlite3_stmt *s, int col, char *buf,
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
		err = rec_copy_col(r, s, 0, buf, len);
	else
		*ival = sqlite3_column_int(s, 0);
cleanup:
	sqlite3_finalize(s);
	return err;
}

/* Prepare a one-off statement, failing with its text in the message. */
int rec_prep(rec_store *r, const char *sql, sqlite3_stmt **s)
{
	if (sqlite3_prepare_v2(r->db, sql, -1, s, NULL) != SQLITE_OK)
		return rec_db_fail(r, ST_E_DB, "prepare %.60s", sql);
	return ST_OK;
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

static int prepare_all(rec_store *r);

/* A read-only open: the store must be ours and at this binary's schema;
 * nothing is migrated (a reading command never changes the store). */
static int check_schema(rec_store *r, const char *path)
{
	int latest = migrations[ST_ARRAY_SIZE(migrations) - 1].version;
	int ver, app;

	if (query1(r, "PRAGMA user_version", &ver, NULL, 0) ||
	    query1(r, "PRAGMA application_id", &app, NULL, 0))
		return ST_E_DB;
	if (ver == 0 || app != REC_APP_ID)
		return rec_fail(r, ST_E_DB, "%s is not a records store (application_id "
				"%#x, user_version %d)", path, (unsigned)app, ver);
	if (ver > latest)
		return rec_fail(r, ST_E_DB, "%s has schema version %d, newer than "
				"this station knows (%d): upgrade the station",
				path, ver, latest);
	if (ver < latest)
		return rec_fail(r, ST_E_STATE, "%s has schema version %d, older than "
				"this station's (%d): a reading command does not "
				"change the store; run a writing command once (e.g. "
				"'station records workorder create' or a provisioning "
				"run) to upgrade it first", path, ver, latest);
	return prepare_all(r);
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
	if (r->readonly)
		return check_schema(r, path);
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
	return prepare_all(r);
}

/* The statements every call uses, prepared once. */
static int prepare_all(rec_store *r)
{
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
int rec_open_mode(const char *path, rec_mode mode, rec_store **out)
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
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&r->writer_cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	r->lazy_ms = REC_LAZY_MS;
	r->wal_fd = -1;
	r->readonly = mode == REC_OPEN_READ;
	*out = r;

	if (!path || !*path)
		return rec_fail(r, ST_E_INVAL, "no records path given");
	if (stat(path, &st) != 0 && errno != ENOENT)
		return rec_fail(r, ST_E_IO, "cannot open records store %s: %s", path,
				strerror(errno));
	created = stat(path, &st) != 0;
	err = rec_open_diagnose(r, path, mode, !created);
	if (err)
		goto cleanup;
	if (mode == REC_OPEN_READ)
		rc = rec_open_readonly(r, path) ? SQLITE_CANTOPEN : SQLITE_OK;
	else
		rc = sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READWRITE |
				     (mode == REC_OPEN_CREATE ? SQLITE_OPEN_CREATE : 0) |
				     SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK) {
		char dir[4096];

		rec_dir_of(path, dir, sizeof(dir));
		err = !r->db ? rec_fail(r, ST_E_NOMEM, "out of memory opening %s", path) :
		      access(dir, F_OK) != 0 ?
		      rec_db_fail(r, ST_E_IO, "cannot open records store %s (its "
				  "directory %s does not exist)", path, dir) :
		      rec_db_fail(r, ST_E_IO, "cannot open records store %s", path);
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

int rec_open(const char *path, rec_store **out)
{
	return rec_open_mode(path, REC_OPEN_CREATE, out);
}

bool rec_readonly(const rec_store *r)
{
	return r && r->readonly;
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

/* Drain the writer, then finalize so sqlite3_close can checkpoint and drop
 * the WAL. */
void rec_close(rec_store *r)
{
	struct rec_errbuf *b, *next;

	if (!r)
		return;
	rec_writer_stop(r);     /* commits and syncs what is pending */
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
	pthread_cond_destroy(&r->writer_cv);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

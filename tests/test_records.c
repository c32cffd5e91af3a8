/* test_records.c — the audit store: values round-trip, durability settings,
 * constraints, bad files, reopen, and slot threads sharing one store.
 * Every test gets its own /tmp/st-rec-XXXXXX (Criterion forks each test and
 * may run them in parallel); results are read back with the sqlite3 API or
 * the sqlite3 CLI, never only through records.c itself. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"
#include "tests/fixtures/fx_softhsm.h"
#include "records/records.h"

static char tmpdir[64];
static char dbpath[128];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/st-rec-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
	snprintf(dbpath, sizeof(dbpath), "%s/records.db", tmpdir);
}

static void teardown(void)
{
	fx_rmtree(tmpdir);
}

TestSuite(records, .init = setup, .fini = teardown, .timeout = 120);

/* A second, independent connection: what an auditor (or a crash) sees. */
static sqlite3 *ext_open(const char *path)
{
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);

	cr_assert_eq(rc, SQLITE_OK, "sqlite3_open_v2(%s): %s", path,
		     db ? sqlite3_errmsg(db) : "no memory");
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static long long q_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s = NULL;
	long long v;

	cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK,
		     "%s: %s", sql, sqlite3_errmsg(db));
	cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "%s: %s", sql,
		     sqlite3_errmsg(db));
	v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

static void q_text(sqlite3 *db, const char *sql, char *buf, size_t len)
{
	sqlite3_stmt *s = NULL;
	const unsigned char *t;

	cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK,
		     "%s: %s", sql, sqlite3_errmsg(db));
	cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "%s: %s", sql,
		     sqlite3_errmsg(db));
	t = sqlite3_column_text(s, 0);
	snprintf(buf, len, "%s", t ? (const char *)t : "(null)");
	sqlite3_finalize(s);
}

static rec_store *open_ok(const char *path)
{
	rec_store *r = NULL;
	int rc = rec_open(path, &r);

	cr_assert_eq(rc, ST_OK, "rec_open(%s): %s: %s", path, st_strerror(rc),
		     rec_errmsg(r));
	cr_assert_not_null(r);
	return r;
}

static int64_t begin(rec_store *r, const char *uid)
{
	rec_unit_start u = { .uid = uid, .slot = 1, .port = "/dev/ttyS0",
			     .station = "st-1", .operator_name = "op",
			     .profile = "p", .profile_digest = "00" };
	int64_t id = -1;
	int rc = rec_unit_begin(r, &u, &id);

	cr_assert_eq(rc, ST_OK, "begin %s: %s", uid, rec_errmsg(r));
	cr_assert_gt(id, 0);
	return id;
}

static int end_as(rec_store *r, int64_t id, const char *result,
		  const char *serial)
{
	rec_unit_result e = { .result = result, .cert_serial = serial,
			      .reason = strcmp(result, "PASS") ? "test" : NULL };

	return rec_unit_end(r, id, &e);
}

/* UTC ISO-8601 with milliseconds: 2024-05-01T12:34:56.789Z */
static int is_iso_ms(const char *t)
{
	int y, mo, d, h, mi, s, ms, n = 0;

	if (strlen(t) != 24)
		return 0;
	if (sscanf(t, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &y, &mo, &d, &h, &mi,
		   &s, &ms, &n) != 7 || n != 24)
		return 0;
	return y >= 2020 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 &&
	       h < 24 && mi < 60 && s < 61 && ms < 1000;
}

Test(records, round_trip)
{
	rec_store *r = open_ok(dbpath);
	rec_unit_start u = { .uid = "a1b2c3d4", .slot = 3, .port = "/dev/ttyACM1",
			     .station = "line2-st4", .operator_name = "alice",
			     .profile = "widget-v2", .profile_digest = "ab12" };
	rec_unit_result e = { .result = "PASS", .cert_serial = "5e71a1",
			      .cert_sha256 = "f1f2", .cert_pem = "-----BEGIN CERTIFICATE-----\nMII\n",
			      .pubkey_hex = "04aa", .rot_hash = "cafe",
			      .fuse_readback = "cafe00" };
	static const char *const want[][3] = {
		{ "identify", "ok", "uid=a1b2c3d4" },
		{ "keygen", "ok", NULL },
		{ "fuses", "skip", "not armed" },
	};
	sqlite3_stmt *s;
	sqlite3 *db;
	int64_t id = -1;
	char started[32], finished[32];
	int n = 0;

	cr_assert_eq(rec_unit_begin(r, &u, &id), ST_OK, "%s", rec_errmsg(r));
	for (size_t i = 0; i < ST_ARRAY_SIZE(want); i++)
		cr_assert_eq(rec_step(r, id, want[i][0], want[i][1], want[i][2]),
			     ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_unit_end(r, id, &e), ST_OK, "%s", rec_errmsg(r));

	/* read back while the store is still open: committed means visible */
	db = ext_open(dbpath);
	cr_assert_eq(sqlite3_prepare_v2(db, "SELECT uid, slot, port, station, "
			"operator, profile, profile_digest, state, reason, "
			"cert_serial, cert_sha256, cert_pem, pubkey, rot_hash, "
			"fuse_readback, started_at, finished_at FROM units "
			"WHERE id = ?", -1, &s, NULL), SQLITE_OK);
	sqlite3_bind_int64(s, 1, id);
	cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "unit %lld missing",
		     (long long)id);
#define COL(i) ((const char *)sqlite3_column_text(s, (i)))
	cr_assert_str_eq(COL(0), "a1b2c3d4");
	cr_assert_eq(sqlite3_column_int(s, 1), 3);
	cr_assert_str_eq(COL(2), "/dev/ttyACM1");
	cr_assert_str_eq(COL(3), "line2-st4");
	cr_assert_str_eq(COL(4), "alice");
	cr_assert_str_eq(COL(5), "widget-v2");
	cr_assert_str_eq(COL(6), "ab12");
	cr_assert_str_eq(COL(7), "PASS");
	cr_assert_eq(sqlite3_column_type(s, 8), SQLITE_NULL, "reason set on PASS");
	cr_assert_str_eq(COL(9), "5e71a1");
	cr_assert_str_eq(COL(10), "f1f2");
	cr_assert_str_eq(COL(11), "-----BEGIN CERTIFICATE-----\nMII\n");
	cr_assert_str_eq(COL(12), "04aa");
	cr_assert_str_eq(COL(13), "cafe");
	cr_assert_str_eq(COL(14), "cafe00");
	snprintf(started, sizeof(started), "%s", COL(15));
	snprintf(finished, sizeof(finished), "%s", COL(16) ? COL(16) : "");
	sqlite3_finalize(s);
	cr_assert(is_iso_ms(started), "started_at \"%s\"", started);
	cr_assert(is_iso_ms(finished), "finished_at \"%s\"", finished);
	cr_assert_leq(strcmp(started, finished), 0, "%s after %s", started,
		      finished);

	cr_assert_eq(sqlite3_prepare_v2(db, "SELECT seq, step, outcome, detail, "
			"at FROM steps WHERE unit_id = ? ORDER BY seq", -1, &s,
			NULL), SQLITE_OK);
	sqlite3_bind_int64(s, 1, id);
	while (sqlite3_step(s) == SQLITE_ROW) {
		cr_assert_lt(n, 3, "more steps than written");
		cr_assert_eq(sqlite3_column_int(s, 0), n + 1);
		cr_assert_str_eq(COL(1), want[n][0]);
		cr_assert_str_eq(COL(2), want[n][1]);
		if (want[n][2])
			cr_assert_str_eq(COL(3), want[n][2]);
		else
			cr_assert_eq(sqlite3_column_type(s, 3), SQLITE_NULL);
		cr_assert(is_iso_ms(COL(4)), "at \"%s\"", COL(4));
		n++;
	}
#undef COL
	sqlite3_finalize(s);
	cr_assert_eq(n, 3, "%d steps read back", n);
	sqlite3_close(db);
	rec_close(r);
}

Test(records, durability_settings)
{
	rec_store *r = open_ok(dbpath);
	rec_settings st;
	char mode[16];
	sqlite3 *db;
	struct stat sb;
	char wal[160];

	cr_assert_eq(rec_get_settings(r, &st), ST_OK, "%s", rec_errmsg(r));
	cr_assert_str_eq(st.journal_mode, "wal");
	cr_assert_eq(st.synchronous, 2, "synchronous=%d, want FULL(2)",
		     st.synchronous);
	cr_assert_eq(st.foreign_keys, 1);
	cr_assert_geq(st.busy_timeout_ms, 1000, "busy_timeout %d",
		      st.busy_timeout_ms);
	cr_assert_eq(st.schema_version, 8);

	/* WAL is a property of the file: a stranger's connection sees it too */
	db = ext_open(dbpath);
	q_text(db, "PRAGMA journal_mode", mode, sizeof(mode));
	cr_assert_str_eq(mode, "wal");
	cr_assert_eq(q_int(db, "PRAGMA user_version"), 8);
	cr_assert_eq(q_int(db, "PRAGMA application_id"), 0x53545243);
	snprintf(wal, sizeof(wal), "%s-wal", dbpath);
	cr_assert_eq(stat(wal, &sb), 0, "no %s while open", wal);
	sqlite3_close(db);
	rec_close(r);
}

Test(records, schema_constraints)
{
	rec_store *r = open_ok(dbpath);
	sqlite3 *db;
	char sql[256];

	rec_close(r);
	db = ext_open(dbpath);
	sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
	cr_assert_neq(sqlite3_exec(db, "INSERT INTO units (uid, state) "
				   "VALUES ('x', 'DONE')", NULL, NULL, NULL),
		      SQLITE_OK, "state CHECK missing");
	cr_assert_neq(sqlite3_exec(db, "INSERT INTO steps (unit_id, seq, step, "
				   "outcome, at) VALUES (999, 1, 's', 'ok', 'now')",
				   NULL, NULL, NULL),
		      SQLITE_OK, "steps.unit_id foreign key missing");
	cr_assert_eq(sqlite3_exec(db, "INSERT INTO units (id, uid, state) "
				  "VALUES (7, 'x', 'RUNNING')", NULL, NULL, NULL),
		     SQLITE_OK, "%s", sqlite3_errmsg(db));
	cr_assert_neq(sqlite3_exec(db, "INSERT INTO steps (unit_id, seq, step, "
				   "outcome, at) VALUES (7, 1, 's', 'maybe', 'now')",
				   NULL, NULL, NULL),
		      SQLITE_OK, "outcome CHECK missing");
	/* one PASS per device that is not revoked (schema 3: re-provisioning) */
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM sqlite_master WHERE "
		 "type = 'trigger' AND tbl_name = 'units' AND sql LIKE "
		 "'%%PASS%%revocations%%'");
	cr_assert_eq(q_int(db, sql), 2, "one-live-PASS triggers missing");
	sqlite3_close(db);
}

Test(records, second_pass_for_uid_refused)
{
	rec_store *r = open_ok(dbpath);
	int64_t a = begin(r, "dead01"), b, c;
	char last[16];
	int rc;

	cr_assert_eq(end_as(r, a, "PASS", "01"), ST_OK, "%s", rec_errmsg(r));
	b = begin(r, "dead01");
	rc = end_as(r, b, "PASS", "02");
	cr_assert_eq(rc, ST_E_DB, "second PASS gave %d (%s)", rc, st_strerror(rc));
	cr_assert_not_null(strstr(rec_errmsg(r), "device dead01 already has a PASS "
				  "record"), "message: %s", rec_errmsg(r));
	/* the failed end rolled back: b is still open and can fail cleanly */
	cr_assert_eq(rec_last_result(r, "dead01", last, sizeof(last)), ST_OK);
	cr_assert_str_eq(last, "RUNNING");
	cr_assert_eq(end_as(r, b, "FAIL", NULL), ST_OK, "%s", rec_errmsg(r));
	/* FAIL and QUARANTINE rows beside the PASS are allowed */
	c = begin(r, "dead01");
	cr_assert_eq(end_as(r, c, "QUARANTINE", NULL), ST_OK, "%s", rec_errmsg(r));
	rec_close(r);
}

Test(records, duplicate_cert_serial_refused)
{
	rec_store *r = open_ok(dbpath);
	int64_t a = begin(r, "aa"), b = begin(r, "bb");
	long n = -1;
	int rc;

	cr_assert_eq(end_as(r, a, "PASS", "c0ffee"), ST_OK, "%s", rec_errmsg(r));
	rc = end_as(r, b, "PASS", "c0ffee");
	cr_assert_eq(rc, ST_E_DB, "duplicate serial gave %d", rc);
	cr_assert_not_null(strstr(rec_errmsg(r), "serial c0ffee"), "message: %s",
			   rec_errmsg(r));
	cr_assert_not_null(strstr(rec_errmsg(r), "units.cert_serial"),
			   "message: %s", rec_errmsg(r));
	cr_assert_eq(rec_count(r, "PASS", &n), ST_OK);
	cr_assert_eq(n, 1);
	rec_close(r);
}

Test(records, end_only_once)
{
	rec_store *r = open_ok(dbpath);
	int64_t id = begin(r, "beef");
	rec_unit_result bad = { .result = "RUNNING" };
	char state[16];
	sqlite3 *db;
	int rc;

	cr_assert_eq(rec_unit_end(r, id, &bad), ST_E_INVAL,
		     "RUNNING accepted as a result");
	cr_assert_eq(end_as(r, id, "PASS", "11"), ST_OK, "%s", rec_errmsg(r));
	rc = end_as(r, id, "FAIL", NULL);
	cr_assert_eq(rc, ST_E_STATE, "second end gave %d", rc);
	cr_assert_not_null(strstr(rec_errmsg(r), "not RUNNING but PASS"),
			   "message: %s", rec_errmsg(r));
	rc = rec_step(r, id, "late", "ok", NULL);
	cr_assert_eq(rc, ST_E_STATE, "step after end gave %d", rc);
	cr_assert_eq(end_as(r, 4242, "FAIL", NULL), ST_E_NOTFOUND);
	cr_assert_not_null(strstr(rec_errmsg(r), "no unit 4242"), "message: %s",
			   rec_errmsg(r));
	cr_assert_eq(rec_step(r, 4242, "x", "ok", NULL), ST_E_NOTFOUND);
	cr_assert_eq(rec_step(r, id, "x", "maybe", NULL), ST_E_INVAL);

	db = ext_open(dbpath);
	q_text(db, "SELECT state FROM units WHERE uid = 'beef'", state,
	       sizeof(state));
	cr_assert_str_eq(state, "PASS", "first result overwritten");
	cr_assert_eq(q_int(db, "SELECT count(*) FROM steps"), 0);
	sqlite3_close(db);
	rec_close(r);
}

Test(records, count)
{
	rec_store *r = open_ok(dbpath);
	static const struct { const char *res; long n; } want[] = {
		{ "PASS", 3 }, { "FAIL", 2 }, { "QUARANTINE", 1 },
		{ "RUNNING", 1 }, { NULL, 7 },
	};
	char uid[16], serial[16];
	long n;

	for (int i = 0; i < 6; i++) {
		const char *res = i < 3 ? "PASS" : i < 5 ? "FAIL" : "QUARANTINE";

		snprintf(uid, sizeof(uid), "u%d", i);
		snprintf(serial, sizeof(serial), "s%d", i);
		cr_assert_eq(end_as(r, begin(r, uid), res, serial), ST_OK,
			     "%s", rec_errmsg(r));
	}
	begin(r, "still-running");
	for (size_t i = 0; i < ST_ARRAY_SIZE(want); i++) {
		n = -1;
		cr_assert_eq(rec_count(r, want[i].res, &n), ST_OK, "%s",
			     rec_errmsg(r));
		cr_assert_eq(n, want[i].n, "%s: %ld, want %ld",
			     want[i].res ? want[i].res : "all", n, want[i].n);
	}
	cr_assert_eq(rec_count(r, "pass", &n), ST_E_INVAL);
	rec_close(r);
}

Test(records, history_lookups)
{
	rec_store *r = open_ok(dbpath);
	int64_t a, b, id = -1;
	char buf[16], tiny[3];

	cr_assert_eq(rec_last_result(r, "cafe", buf, sizeof(buf)), ST_E_NOTFOUND);
	cr_assert_eq(rec_find_pass(r, "cafe", &id), ST_E_NOTFOUND);
	a = begin(r, "cafe");
	cr_assert_eq(end_as(r, a, "PASS", "1"), ST_OK);
	b = begin(r, "cafe");
	cr_assert_eq(end_as(r, b, "FAIL", NULL), ST_OK);
	cr_assert_eq(rec_last_result(r, "cafe", buf, sizeof(buf)), ST_OK);
	cr_assert_str_eq(buf, "FAIL");
	cr_assert_eq(rec_last_unit(r, "cafe", &id, buf, sizeof(buf)), ST_OK);
	cr_assert_eq(id, b);
	cr_assert_eq(rec_find_pass(r, "cafe", &id), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(id, a, "PASS unit %lld, want %lld", (long long)id,
		     (long long)a);
	cr_assert_eq(rec_last_result(r, "cafe", tiny, sizeof(tiny)), ST_E_INVAL,
		     "\"FAIL\" does not fit in 3 bytes");
	rec_close(r);
}

Test(records, missing_directory)
{
	char path[192];
	rec_store *r = NULL;
	struct stat sb;
	int rc;

	snprintf(path, sizeof(path), "%s/no/such/dir/records.db", tmpdir);
	rc = rec_open(path, &r);
	cr_assert_eq(rc, ST_E_IO, "rec_open gave %d (%s)", rc, st_strerror(rc));
	cr_assert_not_null(r, "no handle to read the cause from");
	cr_assert_not_null(strstr(rec_errmsg(r), path), "message: %s",
			   rec_errmsg(r));
	cr_assert_not_null(strstr(rec_errmsg(r), "unable to open"), "message: %s",
			   rec_errmsg(r));
	/* the failed handle refuses work instead of crashing */
	cr_assert_eq(rec_count(r, NULL, &(long){ 0 }), ST_E_STATE);
	rec_close(r);
	snprintf(path, sizeof(path), "%s/no", tmpdir);
	cr_assert_neq(stat(path, &sb), 0, "rec_open created directories");
}

Test(records, garbage_file)
{
	char junk[4096], back[sizeof(junk) + 1];
	rec_store *r = NULL;
	FILE *f;
	int rc;

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)('A' + i * 7 % 26);
	f = fopen(dbpath, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(junk, 1, sizeof(junk), f), sizeof(junk));
	cr_assert_eq(fclose(f), 0);

	rc = rec_open(dbpath, &r);
	cr_assert_eq(rc, ST_E_DB, "rec_open on garbage gave %d", rc);
	cr_assert_not_null(strstr(rec_errmsg(r), "file is not a database"),
			   "message: %s", rec_errmsg(r));
	cr_assert_not_null(strstr(rec_errmsg(r), dbpath), "message: %s",
			   rec_errmsg(r));
	cr_assert_eq(rec_unit_begin(r, &(rec_unit_start){ .uid = "x" },
				    &(int64_t){ 0 }), ST_E_STATE);
	rec_close(r);

	/* and the file was not "repaired" */
	f = fopen(dbpath, "rb");
	cr_assert_not_null(f);
	cr_assert_eq(fread(back, 1, sizeof(back), f), sizeof(junk));
	fclose(f);
	cr_assert_eq(memcmp(back, junk, sizeof(junk)), 0, "garbage file modified");
}

Test(records, foreign_or_newer_file_refused)
{
	rec_store *r = NULL;
	sqlite3 *db;
	char other[160];
	int rc;

	snprintf(other, sizeof(other), "%s/other.db", tmpdir);
	db = NULL;
	cr_assert_eq(sqlite3_open(other, &db), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL),
		     SQLITE_OK);
	sqlite3_close(db);
	rc = rec_open(other, &r);
	cr_assert_eq(rc, ST_E_DB, "foreign SQLite file accepted (%d)", rc);
	cr_assert_not_null(strstr(rec_errmsg(r), "another program"), "message: %s",
			   rec_errmsg(r));
	rec_close(r);

	rec_close(open_ok(dbpath));
	db = ext_open(dbpath);
	cr_assert_eq(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL,
				  NULL), SQLITE_OK);
	sqlite3_close(db);
	r = NULL;
	rc = rec_open(dbpath, &r);
	cr_assert_eq(rc, ST_E_DB, "newer schema accepted (%d)", rc);
	cr_assert_not_null(strstr(rec_errmsg(r), "schema version 99"),
			   "message: %s", rec_errmsg(r));
	rec_close(r);
}

Test(records, reopen_keeps_data_and_schema)
{
	rec_store *r = open_ok(dbpath);
	int64_t a = begin(r, "0a0b"), b;
	rec_settings st;
	char buf[16];
	long n = -1;
	sqlite3 *db;

	cr_assert_eq(rec_step(r, a, "identify", "ok", NULL), ST_OK);
	cr_assert_eq(end_as(r, a, "PASS", "77"), ST_OK);
	rec_close(r);

	r = open_ok(dbpath);
	cr_assert_eq(rec_count(r, NULL, &n), ST_OK);
	cr_assert_eq(n, 1);
	cr_assert_eq(rec_last_result(r, "0a0b", buf, sizeof(buf)), ST_OK);
	cr_assert_str_eq(buf, "PASS");
	cr_assert_eq(rec_get_settings(r, &st), ST_OK);
	cr_assert_eq(st.schema_version, 8);
	/* the reopened store still enforces the schema it found */
	b = begin(r, "0a0b");
	cr_assert_eq(end_as(r, b, "PASS", "78"), ST_E_DB);
	/* and new steps continue the numbering per unit */
	cr_assert_eq(rec_step(r, b, "identify", "ok", NULL), ST_OK);
	rec_close(r);

	db = ext_open(dbpath);
	cr_assert_eq(q_int(db, "PRAGMA user_version"), 8);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM units"), 2);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM steps WHERE seq = 1"), 2);
	sqlite3_close(db);
}

/* The sqlite3 CLI query from docs/records.md works on a live store. */
Test(records, sqlite3_cli_reads_store)
{
	rec_store *r = open_ok(dbpath);
	int64_t id = begin(r, "f00d");
	char cmd[512], line[256] = "";
	FILE *p;

	cr_assert_eq(rec_step(r, id, "identify", "ok", "fw 1.2"), ST_OK);
	cr_assert_eq(end_as(r, id, "PASS", "abcd"), ST_OK);
	snprintf(cmd, sizeof(cmd), "sqlite3 -readonly -separator '|' '%s' "
		 "\"SELECT uid, state, cert_serial FROM units "
		 "WHERE uid = 'f00d' ORDER BY id\" 2>&1", dbpath);
	p = popen(cmd, "r");
	cr_assert_not_null(p, "popen sqlite3");
	if (!fgets(line, sizeof(line), p))
		line[0] = '\0';
	cr_assert_eq(pclose(p), 0, "sqlite3 CLI failed (installed?): %s", line);
	cr_assert_str_eq(line, "f00d|PASS|abcd\n");
	rec_close(r);
}

#define NTHREADS 4
#define NUNITS 50
#define NSTEPS 3

struct worker {
	rec_store *r;
	int n;
	int failures;
	char first_err[256];
};

static void *slot_thread(void *arg)
{
	struct worker *w = arg;
	char uid[32], serial[32], detail[48];
	static const char *const steps[NSTEPS] = { "identify", "keygen", "cert" };

	for (int i = 0; i < NUNITS; i++) {
		rec_unit_start u = { .uid = uid, .slot = w->n + 1 };
		rec_unit_result e = { .result = "PASS", .cert_serial = serial };
		int64_t id;
		int rc;

		snprintf(uid, sizeof(uid), "t%d-%03d", w->n, i);
		snprintf(serial, sizeof(serial), "%02x%04x", w->n, i);
		rc = rec_unit_begin(w->r, &u, &id);
		for (int k = 0; !rc && k < NSTEPS; k++) {
			snprintf(detail, sizeof(detail), "%s #%d", uid, k);
			rc = rec_step(w->r, id, steps[k], "ok", detail);
		}
		if (!rc)
			rc = rec_unit_end(w->r, id, &e);
		if (rc && w->failures++ == 0)
			snprintf(w->first_err, sizeof(w->first_err), "%s: %s",
				 uid, rec_errmsg(w->r));
	}
	return NULL;
}

static void check_threads_result(void)
{
	sqlite3 *db = ext_open(dbpath);

	cr_assert_eq(q_int(db, "SELECT count(*) FROM units WHERE state = 'PASS'"),
		     NTHREADS * NUNITS);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM steps"),
		     NTHREADS * NUNITS * NSTEPS);
	/* every unit has exactly seq 1..NSTEPS, in the order written */
	cr_assert_eq(q_int(db, "SELECT count(*) FROM (SELECT unit_id FROM steps "
			   "GROUP BY unit_id HAVING count(*) = 3 AND min(seq) = 1 "
			   "AND max(seq) = 3 AND group_concat(step, ',') = "
			   "'identify,keygen,cert')"), NTHREADS * NUNITS);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM steps s JOIN units u ON "
			   "u.id = s.unit_id WHERE s.detail NOT LIKE u.uid || ' #%'"),
		     0, "a step landed on another thread's unit");
	sqlite3_close(db);
}

Test(records, threads_share_one_store)
{
	rec_store *r = open_ok(dbpath);
	struct worker w[NTHREADS];
	pthread_t t[NTHREADS];
	long n = -1;

	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){ .r = r, .n = i };
		cr_assert_eq(pthread_create(&t[i], NULL, slot_thread, &w[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < NTHREADS; i++)
		cr_assert_eq(w[i].failures, 0, "thread %d: %d failures, first %s",
			     i, w[i].failures, w[i].first_err);
	cr_assert_eq(rec_count(r, NULL, &n), ST_OK);
	cr_assert_eq(n, NTHREADS * NUNITS);
	rec_close(r);
	check_threads_result();
}

/* Two stations (two connections) on one file: busy_timeout, not errors. */
Test(records, two_connections_one_file)
{
	struct worker w[NTHREADS];
	pthread_t t[NTHREADS];

	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){ .r = open_ok(dbpath), .n = i };
	}
	for (int i = 0; i < NTHREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, slot_thread, &w[i]), 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < NTHREADS; i++) {
		rec_close(w[i].r);
		cr_assert_eq(w[i].failures, 0, "store %d: %d failures, first %s",
			     i, w[i].failures, w[i].first_err);
	}
	check_threads_result();
}

struct errcheck {
	rec_store *r;
	pthread_barrier_t failed, checked;
	int rc;
	char msg[256];
};

/* Fail, then stay alive (and keep the error) while main looks at its own. */
static void *fail_in_thread(void *arg)
{
	struct errcheck *c = arg;

	c->rc = rec_step(c->r, 555, "x", "ok", NULL);
	snprintf(c->msg, sizeof(c->msg), "%s", rec_errmsg(c->r));
	pthread_barrier_wait(&c->failed);
	pthread_barrier_wait(&c->checked);
	return NULL;
}

Test(records, errmsg_is_per_thread)
{
	rec_store *r = open_ok(dbpath);
	struct errcheck c = { .r = r };
	char mine[256];
	pthread_t t;

	cr_assert_str_eq(rec_errmsg(r), "");
	cr_assert_eq(rec_step(r, 111, "x", "ok", NULL), ST_E_NOTFOUND);
	cr_assert_not_null(strstr(rec_errmsg(r), "no unit 111"));
	pthread_barrier_init(&c.failed, NULL, 2);
	pthread_barrier_init(&c.checked, NULL, 2);
	cr_assert_eq(pthread_create(&t, NULL, fail_in_thread, &c), 0);
	pthread_barrier_wait(&c.failed);
	snprintf(mine, sizeof(mine), "%s", rec_errmsg(r));
	pthread_barrier_wait(&c.checked);
	pthread_join(t, NULL);
	cr_assert_eq(c.rc, ST_E_NOTFOUND);
	cr_assert_not_null(strstr(c.msg, "no unit 555"), "thread saw: %s", c.msg);
	cr_assert_not_null(strstr(mine, "no unit 111"),
			   "another thread's error leaked in: %s", mine);
	cr_assert_not_null(strstr(rec_errmsg(r), "no unit 111"));
	rec_close(r);
}

/* A full disk (simulated with RLIMIT_FSIZE, which binds root too) must be
 * an error from the call that could not be made durable, whichever call it
 * is, and must not break the store once space is back. */
Test(records, full_disk_is_an_error)
{
	rec_store *r = open_ok(dbpath);
	static char big[2 * 1024 * 1024];
	rec_unit_result e = { .result = "PASS", .cert_serial = "01",
			      .cert_pem = big };
	struct rlimit old, lim;
	int64_t x, y = 0;
	long n = -1;
	sqlite3 *db;
	int rc;

	memset(big, 'M', sizeof(big) - 1);
	cr_assert_neq(signal(SIGXFSZ, SIG_IGN), SIG_ERR);
	cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 1024 * 1024;     /* below one big row, above the rest */
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);

	x = begin(r, "d1");             /* small writes still fit */
	rc = rec_unit_end(r, x, &e);
	cr_assert_eq(rc, ST_E_DB, "end with 2 MiB under 1 MiB: %d (%s)", rc,
		     st_strerror(rc));
	cr_assert(strstr(rec_errmsg(r), "I/O") || strstr(rec_errmsg(r), "full"),
		  "message: %s", rec_errmsg(r));
	cr_assert_not_null(strstr(rec_errmsg(r), "d1"), "message: %s",
			   rec_errmsg(r));
	rc = rec_step(r, x, "cert", "ok", big);
	cr_assert_eq(rc, ST_E_DB, "step with 2 MiB: %d", rc);
	rc = rec_unit_begin(r, &(rec_unit_start){ .uid = "d2", .port = big }, &y);
	cr_assert_eq(rc, ST_E_DB, "begin with 2 MiB: %d", rc);
	cr_assert_eq(y, 0, "unit id handed out for a failed begin");
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);

	/* nothing half-written is visible, and x can still be finished */
	cr_assert_eq(rec_count(r, NULL, &n), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(n, 1, "%ld units after failed begin", n);
	cr_assert_eq(rec_count(r, "RUNNING", &n), ST_OK);
	cr_assert_eq(n, 1, "failed end left x %s", n ? "RUNNING?" : "ended");
	e.cert_pem = "small";
	cr_assert_eq(rec_unit_end(r, x, &e), ST_OK, "%s", rec_errmsg(r));
	rec_close(r);

	db = ext_open(dbpath);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM units WHERE state = 'PASS' "
			   "AND cert_pem = 'small'"), 1);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM steps"), 0);
	sqlite3_close(db);
}

Test(records, bad_arguments)
{
	rec_store *r = open_ok(dbpath);
	int64_t id;

	cr_assert_eq(rec_open(dbpath, NULL), ST_E_INVAL);
	cr_assert_eq(rec_unit_begin(NULL, &(rec_unit_start){ .uid = "x" }, &id),
		     ST_E_INVAL);
	cr_assert_eq(rec_unit_begin(r, &(rec_unit_start){ .uid = "" }, &id),
		     ST_E_INVAL);
	cr_assert_eq(rec_unit_begin(r, &(rec_unit_start){ .uid = NULL }, &id),
		     ST_E_INVAL);
	cr_assert_eq(rec_unit_end(r, 1, NULL), ST_E_INVAL);
	cr_assert_eq(rec_count(r, NULL, NULL), ST_E_INVAL);
	cr_assert_str_eq(rec_errmsg(NULL), "");
	rec_close(NULL);
	rec_close(r);
}

/* Schema 4 (UNFUSED): a store written by schema 3 (tests/fixtures/
 * records-v3.sql, dumped from a real one) is rebuilt with its rows, steps
 * and revocations kept and its foreign keys whole; UNFUSED is a final
 * state; one certificate may sit on several records of one device (the
 * UNFUSED record and the PASS that finishes it), never on two devices;
 * the certificate of a record without one in its row (closed as
 * interrupted) is revoked by the serial its certificate step issued. */
Test(records, v3_store_migrates_to_unfused_schema)
{
	char src[512], path[700], *sql;
	sqlite3 *db;
	rec_store *r;
	int64_t other, mine;
	long n = -1;
	FILE *f;
	long len;

	snprintf(src, sizeof(src), "%s", getenv("STATION_BUILD"));
	snprintf(path, sizeof(path), "%s/../tests/fixtures/records-v3.sql", src);
	f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	sql = calloc(1, (size_t)len + 1);
	cr_assert_eq(fread(sql, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s",
		     sqlite3_errmsg(db));
	free(sql);
	cr_assert_eq(q_int(db, "PRAGMA user_version"), 3);
	sqlite3_close(db);

	r = open_ok(dbpath);
	/* the interrupted unit 3 of bb02 ends UNFUSED with the serial its
	 * device's FAIL record 2 holds: one device, allowed */
	cr_assert_eq(rec_step(r, 3, "possession", "ok", NULL), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(end_as(r, 3, "UNFUSED", "5e02"), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_count(r, "UNFUSED", &n), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(n, 1);
	/* another device with that serial: refused */
	other = begin(r, "cc03");
	cr_assert_eq(end_as(r, other, "PASS", "5e02"), ST_E_DB);
	cr_assert_not_null(strstr(rec_errmsg(r), "units.cert_serial"), "%s", rec_errmsg(r));
	/* a record closed as interrupted: its step's serial is revoked */
	mine = begin(r, "dd04");
	cr_assert_eq(rec_step(r, mine, "certificate", "ok", "serial 0abc sha256 99"), ST_OK);
	cr_assert_eq(end_as(r, mine, "FAIL", NULL), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_revoke(r, mine, "interrupted, not resumed", "station"), ST_OK,
		     "%s", rec_errmsg(r));
	rec_close(r);

	db = ext_open(dbpath);
	cr_assert_eq(q_int(db, "PRAGMA user_version"), 8);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM units WHERE id <= 3"), 3);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM units WHERE id = 1 AND state = 'PASS'"
			   " AND cert_serial = '5e01'"), 1);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM steps WHERE unit_id <= 3"), 4);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM revocations WHERE unit_id = 1"), 1);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM revocations WHERE cert_serial = '0abc'"), 1);
	/* the rules of schema 2 and 3 survived the rebuild */
	cr_assert_neq(sqlite3_exec(db, "DELETE FROM units WHERE id = 1", NULL, NULL, NULL),
		      SQLITE_OK, "units_no_delete is gone");
	cr_assert_neq(sqlite3_exec(db, "UPDATE units SET state = 'PASS' WHERE id = 2", NULL,
				   NULL, NULL), SQLITE_OK, "units_final is gone");
	sqlite3_close(db);
}

/* A reader's open (REC_OPEN_READ) and a writer's (REC_OPEN_WRITE) never
 * create a store; a reader never migrates one: an older schema is refused
 * with what to do, and the file keeps its version.  At the current schema
 * it reads, and refuses to write. */
Test(records, read_open_neither_creates_nor_migrates)
{
	char src[512], path[700], *sql;
	rec_store *r = NULL;
	sqlite3 *db;
	long n = -1;
	FILE *f;
	long len;

	cr_assert_eq(rec_open_mode(dbpath, REC_OPEN_READ, &r), ST_E_NOTFOUND);
	cr_assert(strstr(rec_errmsg(r), "does not exist"), "%s", rec_errmsg(r));
	rec_close(r);
	cr_assert_eq(rec_open_mode(dbpath, REC_OPEN_WRITE, &r), ST_E_NOTFOUND);
	rec_close(r);
	cr_assert_neq(access(dbpath, F_OK), 0, "a store was created");

	snprintf(src, sizeof(src), "%s", getenv("STATION_BUILD"));
	snprintf(path, sizeof(path), "%s/../tests/fixtures/records-v3.sql", src);
	f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	sql = calloc(1, (size_t)len + 1);
	cr_assert_eq(fread(sql, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s",
		     sqlite3_errmsg(db));
	free(sql);
	sqlite3_close(db);

	cr_assert_eq(rec_open_mode(dbpath, REC_OPEN_READ, &r), ST_E_STATE);
	cr_assert(strstr(rec_errmsg(r), "schema version 3, older"), "%s", rec_errmsg(r));
	cr_assert(strstr(rec_errmsg(r), "run a writing command"), "%s", rec_errmsg(r));
	rec_close(r);
	db = ext_open(dbpath);
	cr_assert_eq(q_int(db, "PRAGMA user_version"), 3, "a reader migrated");
	sqlite3_close(db);

	/* a writer brings it up to date; then a reader reads it */
	r = open_ok(dbpath);
	rec_close(r);
	cr_assert_eq(rec_open_mode(dbpath, REC_OPEN_READ, &r), ST_OK, "%s", rec_errmsg(r));
	cr_assert(rec_readonly(r));
	cr_assert_eq(rec_count(r, "PASS", &n), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(n, 1);
	cr_assert_neq(rec_unit_begin(r, &(rec_unit_start){ .uid = "ee05", .slot = 1 },
				     &(int64_t){ 0 }), ST_OK, "a reader wrote");
	rec_close(r);
}

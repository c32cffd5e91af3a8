/* test_audit.c — the records' audit chain and work orders: an untouched
 * store verifies; modifying, deleting, inserting or swapping records (done
 * from outside with the sqlite3 API, as an attacker would, triggers dropped
 * first) makes rec_verify fail naming the record; quotas reserve, commit,
 * release and refuse.  The audit key here is a software P-256 key (the HSM
 * signer is tested through the station binary in test_evidence.c). */
#include <criterion/criterion.h>

#include <errno.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "records/records.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_softsign.h"

static char tmpdir[64];
static char dbpath[128];
static fx_softsign ss;    /* the software audit key */

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/st-aud-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
	snprintf(dbpath, sizeof(dbpath), "%s/records.db", tmpdir);
	fx_softsign_make(&ss, "test audit", 7);
}

static void teardown(void)
{
	fx_softsign_free(&ss);
	fx_rmtree(tmpdir);
}

TestSuite(audit, .init = setup, .fini = teardown, .timeout = 120);

static rec_store *open_signed(void)
{
	rec_store *r = NULL;

	cr_assert_eq(rec_open(dbpath, &r), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_set_signer(r, fx_soft_sign, ss.key, ss.cert_der, (size_t)ss.cert_len),
		     ST_OK, "%s", rec_errmsg(r));
	return r;
}

static int64_t unit(rec_store *r, const char *uid, const char *wo,
		    const char *result, const char *serial)
{
	rec_unit_start u = { .uid = uid, .slot = 1, .port = "/dev/pts/9",
			     .station = "st", .operator_name = "alice",
			     .profile = "p", .profile_digest = "ab",
			     .work_order = wo };
	rec_unit_result e = { .result = result, .cert_serial = serial,
			      .cert_sha256 = serial, .reason = strcmp(result, "PASS") ?
			      "test failure" : NULL };
	int64_t id = 0;

	cr_assert_eq(rec_unit_begin(r, &u, &id), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_step(r, id, "identify", "ok", "model X"), ST_OK);
	cr_assert_eq(rec_step(r, id, "certificate", "ok", serial), ST_OK);
	cr_assert_eq(rec_unit_end(r, id, &e), ST_OK, "%s", rec_errmsg(r));
	return id;
}

/* A store with 3 units (4 events each) after an audit_key and a station
 * event: 14 events. */
static void fill(void)
{
	rec_store *r = open_signed();

	cr_assert_eq(rec_event(r, "station_start", NULL, "operator", "alice",
			       "profile_digest", "ab", NULL), ST_OK);
	unit(r, "u1", NULL, "PASS", "01");
	unit(r, "u2", NULL, "FAIL", "02");
	unit(r, "u3", NULL, "PASS", "03");
	rec_close(r);
}

/* Tamper from outside, the way anyone with the file could. */
static void tamper(const char *sql)
{
	sqlite3 *db = NULL;
	char *err = NULL;

	cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db, "DROP TRIGGER events_no_update;"
				  "DROP TRIGGER events_no_delete;"
				  "DROP TRIGGER units_final;", NULL, NULL, &err),
		     SQLITE_OK, "%s", err);
	cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &err), SQLITE_OK,
		     "%s: %s", sql, err);
	cr_assert_gt(sqlite3_changes(db), 0, "%s changed nothing", sql);
	sqlite3_close(db);
}

/* Verify and return the result, with the message in msg. */
static int verify(rec_verify_result *v, char *msg, size_t len)
{
	rec_store *r = NULL;
	int rc;

	cr_assert_eq(rec_open(dbpath, &r), ST_OK, "%s", rec_errmsg(r));
	rc = rec_verify(r, NULL, NULL, v);
	snprintf(msg, len, "%s", rec_errmsg(r));
	rec_close(r);
	return rc;
}

Test(audit, untouched_store_verifies)
{
	rec_verify_result v;
	char msg[512];

	fill();
	cr_assert_eq(verify(&v, msg, sizeof(msg)), ST_OK, "%s", msg);
	cr_assert_eq(v.events, 14, "%lld events", v.events);
	cr_assert_eq(v.units, 3);
	cr_assert_eq(v.audit_certs, 1);
}

Test(audit, modified_byte_in_one_record_is_named)
{
	rec_verify_result v;
	char msg[512];

	fill();
	/* one byte of event 8 (u2's identify step): 'X' -> 'Y' */
	tamper("UPDATE events SET body = replace(body, 'model X', 'model Y')"
	       " WHERE seq = 8 AND body LIKE '%model X%'");
	cr_assert_eq(verify(&v, msg, sizeof(msg)), ST_E_VERIFY);
	cr_assert_eq(v.bad_seq, 8, "bad_seq %lld: %s", v.bad_seq, msg);
	cr_assert(strstr(msg, "event 8"), "%s", msg);
}

Test(audit, modified_record_with_recomputed_hash_fails_the_signature)
{
	rec_verify_result v;
	char msg[512];

	fill();
	/* change the body and fix its hash: only the signature can tell */
	tamper("UPDATE events SET body = replace(body, 'model X', 'model Y')"
	       " WHERE seq = 8 AND body LIKE '%model X%'");
	{
		sqlite3 *db;
		sqlite3_stmt *s;
		unsigned char dig[32];
		char hex[65];
		const char *body;

		cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
		cr_assert_eq(sqlite3_prepare_v2(db, "SELECT body FROM events WHERE seq = 8",
						-1, &s, NULL), SQLITE_OK);
		cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
		body = (const char *)sqlite3_column_text(s, 0);
		EVP_Digest(body, strlen(body), dig, NULL, EVP_sha256(), NULL);
		st_hex(dig, 32, hex);
		sqlite3_finalize(s);
		cr_assert_eq(sqlite3_prepare_v2(db, "UPDATE events SET hash = ?1 WHERE seq = 8",
						-1, &s, NULL), SQLITE_OK);
		sqlite3_bind_text(s, 1, hex, -1, SQLITE_STATIC);
		cr_assert_eq(sqlite3_step(s), SQLITE_DONE);
		sqlite3_finalize(s);
		sqlite3_close(db);
	}
	cr_assert_eq(verify(&v, msg, sizeof(msg)), ST_E_VERIFY);
	/* the hash is right now, so the signature over the body must fail */
	cr_assert_eq(v.bad_seq, 8, "bad_seq %lld: %s", v.bad_seq, msg);
	cr_assert(strstr(msg, "signature"), "%s", msg);
}

Test(audit, deleted_record_is_named)
{
	rec_verify_result v;
	char msg[512];

	fill();
	tamper("DELETE FROM events WHERE seq = 5");
	cr_assert_eq(verify(&v, msg, sizeof(msg)), ST_E_VERIFY);
	cr_assert_eq(v.bad_seq, 5, "bad_seq %lld: %s", v.bad_seq, msg);
	cr_assert(strstr(msg, "event 5 is missing"), "%s", msg);
}

Test(audit, deleted_last_record_is_found_by_the_rows)
{
	rec_verify_result v;
	char msg[512];

	fill();
	tamper("DELETE FROM events WHERE seq = 14");  /* u3's unit_end */
	cr_assert_eq(verify(&v, msg, sizeof(msg)), ST_E_VERIFY);
	cr_assert(strstr(msg, "unit_end"), "%s", msg);
}

Test(audit, inserted_record_is_named)
{
	rec_verify_result v;
	char msg[512];

	fill();
	/* make room after event 4 and put a copy of event 2 there */
	tamper("UPDATE events SET seq = seq + 100 WHERE seq > 4;"
	       "UPDATE events SET seq = seq - 99 WHERE seq > 100;"
	       "INSERT INTO events (seq, at, kind, unit_id, uid, body, hash, sig)"
	       " SELECT 5, at, kind, unit_id, uid, body, upper(hash), sig"
	       " FROM events WHERE seq = 2");
	cr_assert_eq(verify(&v, msg, sizeof(msg)), ST_E_VERIFY);
	cr_assert_eq(v.bad_seq, 5, "bad_seq %lld: %s", v.bad_seq, msg);
	cr_assert(strstr(msg, "event 5"), "%s", msg);
}

Test(audit, swapped_records_are_named)
{
	rec_verify_result v;
	char msg[512];

	fill();
	/* swap the contents of events 9 and 10 */
	tamper("UPDATE events SET seq = 1000 WHERE seq = 9;"
	       "UPDATE events SET seq = 9 WHERE seq = 10;"
	       "UPDATE events SET seq = 10 WHERE seq = 1000");
	cr_assert_eq(verify(&v, msg, sizeof(msg)), ST_E_VERIFY);
	cr_assert_eq(v.bad_seq, 9, "bad_seq %lld: %s", v.bad_seq, msg);
	cr_assert(strstr(msg, "event 9"), "%s", msg);
}

Test(audit, changed_unit_row_is_found)
{
	rec_verify_result v;
	char msg[512];

	fill();
	/* turn u2's FAIL into a PASS in the table people query */
	tamper("UPDATE units SET state = 'PASS', reason = NULL WHERE uid = 'u2'");
	cr_assert_eq(verify(&v, msg, sizeof(msg)), ST_E_VERIFY);
	cr_assert(strstr(msg, "u2"), "%s", msg);
	cr_assert_gt(v.bad_seq, 0, "%s", msg);
}

Test(audit, unsigned_events_do_not_verify)
{
	rec_verify_result v;
	rec_store *r = NULL;
	char msg[512];

	cr_assert_eq(rec_open(dbpath, &r), ST_OK);
	cr_assert_eq(rec_event(r, "station_start", NULL, NULL), ST_OK);
	rec_close(r);
	cr_assert_eq(verify(&v, msg, sizeof(msg)), ST_E_VERIFY);
	cr_assert(strstr(msg, "not signed"), "%s", msg);
}

Test(audit, events_are_append_only_by_schema)
{
	sqlite3 *db;

	fill();
	cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
	cr_assert_neq(sqlite3_exec(db, "UPDATE events SET kind = 'x' WHERE seq = 1",
				   NULL, NULL, NULL), SQLITE_OK);
	cr_assert_neq(sqlite3_exec(db, "DELETE FROM events", NULL, NULL, NULL),
		      SQLITE_OK);
	cr_assert_neq(sqlite3_exec(db, "UPDATE units SET state = 'FAIL'"
				   " WHERE uid = 'u1'", NULL, NULL, NULL), SQLITE_OK);
	cr_assert_neq(sqlite3_exec(db, "DELETE FROM units", NULL, NULL, NULL),
		      SQLITE_OK);
	sqlite3_close(db);
}

Test(audit, no_pin_or_key_in_records)
{
	char cmd[512];

	fill();
	/* the records hold certificates and signatures, never key material:
	 * no PEM private key and no raw private scalar of the audit key */
	snprintf(cmd, sizeof(cmd), "sqlite3 '%s' .dump | grep -q 'PRIVATE KEY'", dbpath);
	cr_assert_neq(system(cmd), 0, "a private key in the records");
}

Test(audit, quota_reserve_commit_release_refuse)
{
	rec_store *r = open_signed();
	rec_unit_start u = { .uid = "q3", .work_order = "WO-1" };
	rec_workorder wo;
	rec_verify_result v;
	int64_t id, run;
	char msg[512];

	cr_assert_eq(rec_workorder_create(r, "WO-1", 2), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_workorder_create(r, "WO-1", 5), ST_E_EXISTS);
	unit(r, "q1", "WO-1", "PASS", "a1");       /* commit */
	unit(r, "q2", "WO-1", "FAIL", "a2");       /* released */
	cr_assert_eq(rec_workorder_get(r, "WO-1", &wo), ST_OK);
	cr_assert_eq(wo.quota, 2);
	cr_assert_eq(wo.pass, 1);
	cr_assert_eq(wo.failed, 1);
	cr_assert_eq(rec_unit_begin(r, &u, &run), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_workorder_get(r, "WO-1", &wo), ST_OK);
	cr_assert_eq(wo.running, 1, "reserved on start");
	/* q1 PASS + q3 RUNNING hold the quota of 2: refused */
	u.uid = "q4";
	cr_assert_eq(rec_unit_begin(r, &u, &id), ST_E_STATE);
	cr_assert(strstr(rec_errmsg(r), "quota of 2"), "%s", rec_errmsg(r));
	cr_assert(strstr(rec_errmsg(r), "q4"), "%s", rec_errmsg(r));
	/* q3 fails: its reservation is released and q4 may start */
	cr_assert_eq(rec_unit_end(r, run, &(rec_unit_result){ .result = "FAIL",
		     .reason = "x" }), ST_OK);
	cr_assert_eq(rec_unit_begin(r, &u, &id), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_unit_end(r, id, &(rec_unit_result){ .result = "PASS",
		     .cert_serial = "a4" }), ST_OK);
	u.uid = "q5";
	cr_assert_eq(rec_unit_begin(r, &u, &id), ST_E_STATE, "quota full");
	/* unknown work orders are refused */
	u.work_order = "WO-nope";
	cr_assert_eq(rec_unit_begin(r, &u, &id), ST_E_NOTFOUND);
	cr_assert(strstr(rec_errmsg(r), "WO-nope"), "%s", rec_errmsg(r));
	rec_close(r);
	cr_assert_eq(verify(&v, msg, sizeof(msg)), ST_OK, "%s", msg);
}

Test(audit, quota_is_enforced_by_the_schema)
{
	rec_store *r = open_signed();
	sqlite3 *db;

	cr_assert_eq(rec_workorder_create(r, "WO-2", 1), ST_OK);
	unit(r, "s1", "WO-2", "PASS", "b1");
	rec_close(r);
	cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
	cr_assert_neq(sqlite3_exec(db, "INSERT INTO units (uid, state, work_order)"
				   " VALUES ('s2', 'RUNNING', 'WO-2')", NULL, NULL,
				   NULL), SQLITE_OK);
	cr_assert(strstr(sqlite3_errmsg(db), "quota"), "%s", sqlite3_errmsg(db));
	sqlite3_close(db);
}

Test(audit, list_filters)
{
	rec_store *r;
	int n = 0;

	fill();
	cr_assert_eq(rec_open(dbpath, &r), ST_OK);
	{
		rec_filter f = { .result = "PASS" };
		int count(void *ctx, const rec_unit_row *row);

		cr_assert_eq(rec_list_units(r, &f, count, &n), ST_OK);
		cr_assert_eq(n, 2);
		n = 0;
		f = (rec_filter){ .uid = "u2" };
		cr_assert_eq(rec_list_units(r, &f, count, &n), ST_OK);
		cr_assert_eq(n, 1);
		n = 0;
		f = (rec_filter){ .since = "2999-01-01" };
		cr_assert_eq(rec_list_units(r, &f, count, &n), ST_OK);
		cr_assert_eq(n, 0);
		f = (rec_filter){ .until = "2999-01-01" };
		cr_assert_eq(rec_list_units(r, &f, count, &n), ST_OK);
		cr_assert_eq(n, 3);
	}
	rec_close(r);
}

int count(void *ctx, const rec_unit_row *row);
int count(void *ctx, const rec_unit_row *row)
{
	(void)row;
	(*(int *)ctx)++;
	return 0;
}

Test(audit, uniqueness_is_enforced_by_the_schema)
{
	rec_store *r = open_signed();
	rec_unit_start u = { .uid = "dup-fp" };
	int64_t id;
	sqlite3 *db;

	unit(r, "v1", NULL, "PASS", "c1");
	/* another unit may not carry the same certificate fingerprint */
	cr_assert_eq(rec_unit_begin(r, &u, &id), ST_OK);
	cr_assert_eq(rec_unit_end(r, id, &(rec_unit_result){ .result = "PASS",
		     .cert_serial = "c2", .cert_sha256 = "c1" }), ST_E_DB);
	rec_close(r);
	/* from outside, bypassing records.c: the schema still refuses a second
	 * PASS for a device and a second use of a serial */
	cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
	cr_assert_neq(sqlite3_exec(db, "INSERT INTO units (uid, state) VALUES ('v1', 'PASS')",
				   NULL, NULL, NULL), SQLITE_OK);
	cr_assert(strstr(sqlite3_errmsg(db), "UNIQUE"), "%s", sqlite3_errmsg(db));
	cr_assert_neq(sqlite3_exec(db, "INSERT INTO units (uid, state, cert_serial)"
				   " VALUES ('v9', 'FAIL', 'c1')", NULL, NULL, NULL), SQLITE_OK);
	cr_assert(strstr(sqlite3_errmsg(db), "UNIQUE"), "%s", sqlite3_errmsg(db));
	sqlite3_close(db);
}

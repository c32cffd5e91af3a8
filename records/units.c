/* units.c — the unit rows: a unit's start, its steps and its end (each a
 * write with its event), what is known of a device, and revocations. */
#include "records.h"
#include "rec_int.h"

#include "base.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

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
	err = rec_wr_enter(r, &w);
	if (err)
		goto out;
	rec_now(at);
	if (!u || !u->uid || !*u->uid || !unit_id) {
		err = rec_fail(r, ST_E_INVAL, "rec_unit_begin: a uid and unit_id "
			       "are required");
		goto out;
	}
	if ((err = rec_wr_txn(r, &w, "the start of device %s", u->uid)))
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
	err = rec_wr_done(r, &w, err);
	if (!err)
		*unit_id = id;
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
	err = rec_wr_enter(r, &w);
	if (err)
		goto out;
	if (!step || !*step || !outcome || (strcmp(outcome, "ok") &&
	    strcmp(outcome, "fail") && strcmp(outcome, "skip"))) {
		err = rec_fail(r, ST_E_INVAL, "rec_step: need a step name and an "
			       "outcome of ok, fail or skip (got %s)",
			       outcome ? outcome : "NULL");
		goto out;
	}
	if (rec_unit_lost(r, unit_id)) {
		err = lost_fail(r, unit_id, "rec_step");
		goto out;
	}
	if ((err = rec_wr_txn(r, &w, "step %s of unit %lld", step,
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
		rec_lazy_join(r, &w, unit_id);
out:
	return rec_wr_done(r, &w, err);
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
	err = rec_wr_enter(r, &w);
	if (err)
		goto out;
	if (!e || !is_result(e->result)) {
		err = rec_fail(r, ST_E_INVAL, "rec_unit_end: result must be PASS, "
			       "UNFUSED, FAIL or QUARANTINE (got %s)",
			       e && e->result ? e->result : "NULL");
		goto out;
	}
	if (!strcmp(e->result, "PASS") && rec_unit_lost(r, unit_id)) {
		err = lost_fail(r, unit_id, "rec_unit_end");
		goto out;
	}
	if ((err = rec_wr_txn(r, &w, "the end of unit %lld", (long long)unit_id)))
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
	    rec_bind_text(s, 11, e->firmware) || rec_bind_text(s, 12, e->attestation) ||
	    rec_bind_text(s, 13, e->measurements) || rec_bind_text(s, 14, e->flags) ||
	    sqlite3_step(s) != SQLITE_DONE)
		err = end_fail(r, unit_id, uid, e);
	else if (sqlite3_changes(r->db) != 1)
		err = rec_fail(r, ST_E_STATE, "unit %lld changed under us",
			       (long long)unit_id);
	rec_stmt_done(s);
	if (err)
		goto out;
	err = rec_append_event_at(r, "unit_end", unit_id, uid, at,
		json_pack("{s:s, s:s?, s:s?, s:s?, s:s?, s:s?, s:s?, s:s?, s:s, s:s?, s:s?,"
			  " s:s?, s:s?}",
			  "result", e->result, "reason", e->reason,
			  "cert_serial", e->cert_serial,
			  "cert_sha256", e->cert_sha256, "cert_pem", e->cert_pem,
			  "pubkey", e->pubkey_hex, "rot_hash", e->rot_hash,
			  "fuse_readback", e->fuse_readback, "finished_at", at,
			  "firmware", e->firmware, "attestation", e->attestation,
			  "measurements", e->measurements, "flags", e->flags));
out:
	return rec_wr_done(r, &w, err);
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
		err = rec_copy_col(r, s, 1, state, len);
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
	err = rec_wr_enter(r, &w);
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
	err = rec_wr_txn(r, &w, "the revocation of unit %lld", (long long)unit_id);
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
	return rec_wr_done(r, &w, err);
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

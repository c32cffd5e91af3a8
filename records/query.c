/* query.c — reading the records back for list, show, export and sync:
 * units, events and audit certificates. */
#include "records.h"
#include "rec_int.h"

#include "base.h"

#include <sqlite3.h>
#include <string.h>

int rec_list_units(rec_store *r, const rec_filter *f, rec_unit_fn fn,
		   void *ctx)
{
	static const rec_filter none;
	sqlite3_stmt *s = NULL;
	int rc, err;

	if (!r || !fn)
		return ST_E_INVAL;
	if (!f)
		f = &none;
	err = rec_enter(r);
	if (err)
		goto out;
	err = rec_prep(r, "SELECT id, slot, uid, state, reason, work_order, port,"
		       " station, operator, profile, profile_digest, cert_serial,"
		       " cert_sha256, cert_pem, pubkey, rot_hash, fuse_readback,"
		       " started_at, finished_at FROM units"
		       " WHERE (?1 IS NULL OR work_order = ?1)"
		       " AND (?2 IS NULL OR started_at >= ?2)"
		       " AND (?3 IS NULL OR started_at < ?3)"
		       " AND (?4 IS NULL OR state = ?4)"
		       " AND (?5 IS NULL OR uid = ?5)"
		       " AND (?6 = 0 OR id = ?6) ORDER BY id", &s);
	if (err)
		goto out;
	rec_bind_text(s, 1, f->work_order);
	rec_bind_text(s, 2, f->since);
	rec_bind_text(s, 3, f->until);
	rec_bind_text(s, 4, f->result);
	rec_bind_text(s, 5, f->uid);
	sqlite3_bind_int64(s, 6, f->unit_id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		rec_unit_row u = {
			.id = sqlite3_column_int64(s, 0),
			.slot = sqlite3_column_int(s, 1),
			.uid = rec_col(s, 2), .state = rec_col(s, 3), .reason = rec_col(s, 4),
			.work_order = rec_col(s, 5), .port = rec_col(s, 6),
			.station = rec_col(s, 7), .operator_name = rec_col(s, 8),
			.profile = rec_col(s, 9), .profile_digest = rec_col(s, 10),
			.cert_serial = rec_col(s, 11), .cert_sha256 = rec_col(s, 12),
			.cert_pem = rec_col(s, 13), .pubkey = rec_col(s, 14),
			.rot_hash = rec_col(s, 15), .fuse_readback = rec_col(s, 16),
			.started_at = rec_col(s, 17), .finished_at = rec_col(s, 18),
		};

		if ((err = fn(ctx, &u)))
			goto out;
	}
	if (rc != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "list units");
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	return err;
}

int rec_list_events(rec_store *r, int64_t unit_id, rec_event_fn fn,
		    void *ctx)
{
	sqlite3_stmt *s = NULL;
	int rc, err;

	if (!r || !fn)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	err = rec_prep(r, "SELECT seq, unit_id, at, kind, uid, body, hash, sig"
		       " FROM events WHERE (?1 = 0 OR unit_id = ?1) ORDER BY seq", &s);
	if (err)
		goto out;
	sqlite3_bind_int64(s, 1, unit_id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		rec_event_row e = {
			.seq = sqlite3_column_int64(s, 0),
			.unit_id = sqlite3_column_int64(s, 1),
			.at = rec_col(s, 2), .kind = rec_col(s, 3), .uid = rec_col(s, 4),
			.body = rec_col(s, 5), .hash = rec_col(s, 6), .sig = rec_col(s, 7),
		};

		if ((err = fn(ctx, &e)))
			goto out;
	}
	if (rc != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "list events");
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	return err;
}

int rec_list_audit_certs(rec_store *r, int (*fn)(void *ctx, const char *sha256,
						 const char *pem), void *ctx)
{
	sqlite3_stmt *s = NULL;
	int rc, err;

	if (!r || !fn)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	if ((err = rec_prep(r, "SELECT sha256, pem FROM audit_certs ORDER BY rowid", &s)))
		goto out;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		if ((err = fn(ctx, rec_col(s, 0), rec_col(s, 1))))
			goto out;
	if (rc != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "list audit certificates");
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	return err;
}

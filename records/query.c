/* query.c — reading the records back for list, show, export and sync:
 * units, events and audit certificates, and what the sync (pgsync.c)
 * needs to know of the local chain, so that only records/ files other
 * than pgsync's touch the local SQL. */
#include "records.h"
#include "rec_int.h"

#include "base.h"

#include <sqlite3.h>
#include <stdlib.h>
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
		       " started_at, finished_at, firmware, attestation,"
		       " measurements, flags FROM units"
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
			.firmware = rec_col(s, 19), .attestation = rec_col(s, 20),
			.measurements = rec_col(s, 21), .flags = rec_col(s, 22),
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

/* Events of one unit (0: all) above seq after, at most max (-1: all), in
 * order: rec_list_events, and the sync's batches (rec_list_events_after). */
static int list_events(rec_store *r, int64_t unit_id, long long after,
		       int max, rec_event_fn fn, void *ctx)
{
	sqlite3_stmt *s = NULL;
	int rc, err;

	if (!r || !fn)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	err = rec_prep(r, "SELECT seq, unit_id, at, kind, uid, body, hash, sig"
		       " FROM events WHERE (?1 = 0 OR unit_id = ?1) AND seq > ?2"
		       " ORDER BY seq LIMIT ?3", &s);
	if (err)
		goto out;
	sqlite3_bind_int64(s, 1, unit_id);
	sqlite3_bind_int64(s, 2, after);
	sqlite3_bind_int(s, 3, max);
	rc = sqlite3_step(s);
	if ((rc == SQLITE_ROW || rc == SQLITE_DONE) && (err = rec_read_durable(r)))
		goto out;
	for (; rc == SQLITE_ROW; rc = sqlite3_step(s)) {
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

int rec_list_events(rec_store *r, int64_t unit_id, rec_event_fn fn,
		    void *ctx)
{
	return list_events(r, unit_id, 0, -1, fn, ctx);
}

int rec_list_events_after(rec_store *r, long long after, int max,
			  rec_event_fn fn, void *ctx)
{
	return list_events(r, 0, after, max, fn, ctx);
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

/* Range scans on the primary key: cheap enough for every redraw. */
int rec_chain_lag(rec_store *r, long long after, long long *last_seq,
		  long long *events, long long *units)
{
	sqlite3_stmt *s = NULL;
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	if (sqlite3_prepare_v2(r->db, "SELECT (SELECT coalesce(max(seq), 0)"
			       " FROM events), (SELECT count(*) FROM events"
			       " WHERE seq > ?1), (SELECT count(DISTINCT unit_id)"
			       " FROM events WHERE seq > ?1)", -1, &s,
			       NULL) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 1, after) != SQLITE_OK ||
	    sqlite3_step(s) != SQLITE_ROW) {
		err = rec_db_fail(r, ST_E_DB, "measure the sync lag");
		goto out;
	}
	if (last_seq)
		*last_seq = sqlite3_column_int64(s, 0);
	if (events)
		*events = sqlite3_column_int64(s, 1);
	if (units)
		*units = sqlite3_column_int64(s, 2);
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	return err;
}

int rec_offline_units(rec_store *r, const char *wo, long long after, long *n)
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
	    sqlite3_bind_int64(s, 1, after) != SQLITE_OK ||
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

int rec_alert_ids(rec_store *r, long long **ids, int *n)
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
		(*ids)[(*n)++] = strtoll(rec_col(s, 0) ? rec_col(s, 0) : "0",
					 NULL, 10);
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	return err;
}

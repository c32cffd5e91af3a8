/* outbox.c — the ended units a connector to the MES has yet to publish
 * (records/outbox.h): range scans over the chain's unit_end events. */
#include "records/outbox.h"
#include "rec_int.h"

#include "base.h"

#include <sqlite3.h>

int rec_outbox_list(rec_store *r, long long after, int max,
		    rec_outbox_item *out, int *n)
{
	sqlite3_stmt *s = NULL;
	int rc, err;

	if (!r || !out || !n || max < 1)
		return ST_E_INVAL;
	*n = 0;
	err = rec_enter(r);
	if (err)
		goto out;
	err = rec_prep(r, "SELECT seq, unit_id FROM events WHERE seq > ?1"
		       " AND kind = 'unit_end' ORDER BY seq LIMIT ?2", &s);
	if (err)
		goto out;
	sqlite3_bind_int64(s, 1, after);
	sqlite3_bind_int(s, 2, max);
	rc = sqlite3_step(s);
	if ((rc == SQLITE_ROW || rc == SQLITE_DONE) && (err = rec_read_durable(r)))
		goto out;
	for (; rc == SQLITE_ROW; rc = sqlite3_step(s)) {
		out[*n].seq = sqlite3_column_int64(s, 0);
		out[*n].unit_id = sqlite3_column_int64(s, 1);
		(*n)++;
	}
	if (rc != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "list the ended units");
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	return err;
}

int rec_outbox_lag(rec_store *r, long long after, long long *pending,
		   long long *last)
{
	sqlite3_stmt *s = NULL;
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	/* both range scans on the primary key, from the cursor and from
	 * the end: cheap however long the chain */
	err = rec_prep(r, "SELECT (SELECT count(*) FROM events WHERE seq > ?1"
		       " AND kind = 'unit_end'), coalesce((SELECT seq FROM events"
		       " WHERE kind = 'unit_end' ORDER BY seq DESC LIMIT 1), 0)", &s);
	if (err)
		goto out;
	sqlite3_bind_int64(s, 1, after);
	if (sqlite3_step(s) != SQLITE_ROW) {
		err = rec_db_fail(r, ST_E_DB, "count the ended units");
		goto out;
	}
	if (pending)
		*pending = sqlite3_column_int64(s, 0);
	if (last)
		*last = sqlite3_column_int64(s, 1);
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	return err;
}

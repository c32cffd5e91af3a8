/* workorders.c — work orders and their quota usage.  The quota itself is
 * enforced by the schema (units_quota trigger) when a unit starts. */
#include "records.h"
#include "rec_int.h"

#include "base.h"

#include <sqlite3.h>
#include <stdio.h>

int rec_workorder_create(rec_store *r, const char *id, long quota)
{
	struct rec_waiter w;
	sqlite3_stmt *s;
	char q[32], at[32];
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_wr_enter(r, &w);
	if (err)
		goto out;
	if (!id || !*id) {
		err = rec_fail(r, ST_E_INVAL, "a work order needs an id");
		goto out;
	}
	if ((err = rec_wr_txn(r, &w, "work order %s", id)))
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
	return rec_wr_done(r, &w, err);
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

/* pgs_quota.c — work-order quotas shared between stations: reservations
 * and allowances taken in transactions of the central database. */
#include "records/pgsync.h"
#include "pgs_int.h"

#include "base.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Quotas ---- */

int pgs_workorder_put(pgs *p, const char *id, long quota)
{
	PGresult *res = NULL;
	char q[32];
	int err;

	if (!p || !id)
		return ST_E_INVAL;
	snprintf(q, sizeof(q), "%ld", quota);
	err = pgs_run(p, &res, "create the work order centrally",
		      "WITH ins AS (INSERT INTO work_orders (id, quota, created_by)"
		      " VALUES ($1, $2::bigint, $3) ON CONFLICT (id) DO NOTHING"
		      " RETURNING quota) SELECT coalesce((SELECT quota::text FROM"
		      " ins), (SELECT coalesce(quota::text, 'none') FROM work_orders"
		      " WHERE id = $1))", 3, id, quota >= 0 ? q : NULL, p->station);
	if (err)
		return err;
	if (strcmp(PQgetvalue(res, 0, 0), quota >= 0 ? q : "none") &&
	    !(quota < 0 && PQgetisnull(res, 0, 0)))
		err = pgs_fail(p, ST_E_EXISTS, "work order %s exists centrally with "
			       "a quota of %s, not %s", id, PQgetvalue(res, 0, 0),
			       quota >= 0 ? q : "none");
	PQclear(res);
	return err;
}

int pgs_workorder_get(pgs *p, const char *id, pgs_workorder *out)
{
	PGresult *res = NULL;
	int err;

	if (!p || !id || !out)
		return ST_E_INVAL;
	err = pgs_run(p, &res, "read the work order",
		      "SELECT coalesce(quota, -1), reserved,"
		      " (SELECT count(*) FROM reservations WHERE work_order = $1"
		      "  AND state = 'PASS'),"
		      " (SELECT count(*) FROM reservations WHERE work_order = $1"
		      "  AND station_id = $2 AND state = 'ALLOWANCE')"
		      " FROM work_orders WHERE id = $1", 2, id, p->station);
	if (err)
		return err;
	if (PQntuples(res) == 0) {
		err = pgs_fail(p, ST_E_NOTFOUND, "work order %s does not exist in the "
			       "central database: create it with 'station records "
			       "workorder create %s --quota N'", id, id);
	} else {
		out->quota = atol(PQgetvalue(res, 0, 0));
		out->reserved = atol(PQgetvalue(res, 0, 1));
		out->pass = atol(PQgetvalue(res, 0, 2));
		out->allowance = atol(PQgetvalue(res, 0, 3));
	}
	PQclear(res);
	return err;
}

int pgs_reserve(pgs *p, const char *wo, const char *uid)
{
	PGresult *res = NULL;
	int err;

	if (!p || !wo || !uid)
		return ST_E_INVAL;
	if (!pgs_ok(p))
		return pgs_fail(p, ST_E_IO, "not connected to the central database");
	if ((err = pgs_run(p, NULL, "begin a reservation", "BEGIN", 0)) ||
	    (err = pgs_run(p, &res, "look up the work order",
			   "SELECT quota FROM work_orders WHERE id = $1 FOR UPDATE",
			   1, wo)))
		goto cleanup;
	if (PQntuples(res) == 0) {
		err = pgs_fail(p, ST_E_NOTFOUND, "work order %s does not exist in the "
			       "central database: create it with 'station records "
			       "workorder create %s --quota N'", wo, wo);
		goto cleanup;
	}
	PQclear(res);
	/* a reservation this station still holds for the device (its last
	 * run was interrupted) is reused, not counted twice */
	if ((err = pgs_run(p, &res, "look for a held reservation",
			   "SELECT id FROM reservations WHERE work_order = $1"
			   " AND station_id = $2 AND uid = $3 AND state = 'HELD'",
			   3, wo, p->station, uid)))
		goto cleanup;
	if (PQntuples(res) == 0) {
		PQclear(res);
		err = pgs_run(p, &res, "reserve a unit",
			      "UPDATE work_orders SET reserved = reserved + 1"
			      " WHERE id = $1 AND (quota IS NULL OR reserved < quota)"
			      " RETURNING reserved", 1, wo);
		if (!err && PQntuples(res) == 1) {
			err = pgs_run(p, NULL, "record the reservation",
				      "INSERT INTO reservations (work_order, station_id,"
				      " uid, state) VALUES ($1, $2, $3, 'HELD')",
				      3, wo, p->station, uid);
		} else if (!err) {
			/* full: this station's own pre-reserved units */
			PQclear(res);
			err = pgs_run(p, &res, "use an allowance",
				      "UPDATE reservations SET state = 'HELD', uid = $3,"
				      " at = now() WHERE id = (SELECT id FROM"
				      " reservations WHERE work_order = $1 AND"
				      " station_id = $2 AND state = 'ALLOWANCE'"
				      " ORDER BY id LIMIT 1 FOR UPDATE) RETURNING id",
				      3, wo, p->station, uid);
			if (!err && PQntuples(res) == 0)
				err = pgs_fail(p, ST_E_STATE, "work order %s: its quota "
					       "is taken across the stations; device "
					       "%s was not started", wo, uid);
		}
		if (err)
			goto cleanup;
	}
	err = pgs_run(p, NULL, "commit the reservation", "COMMIT", 0);
cleanup:
	PQclear(res);
	pgs_rollback(p);
	return err;
}

int pgs_finish(pgs *p, const char *wo, const char *uid, const char *result)
{
	bool pass = result && !strcmp(result, "PASS");

	if (!p || !wo || !uid)
		return ST_E_INVAL;
	if (!pgs_ok(p))
		return pgs_fail(p, ST_E_IO, "not connected to the central database");
	if (result && !strcmp(result, "UNFUSED"))
		return ST_OK;   /* held for the armed run that finishes it */
	return pgs_run(p, NULL, "settle the reservation",
		       "WITH r AS (UPDATE reservations SET state = $4, at = now()"
		       " WHERE work_order = $1 AND station_id = $2 AND uid = $3"
		       " AND state = 'HELD' AND unit_id IS NULL RETURNING work_order)"
		       " UPDATE work_orders w SET reserved = reserved - 1 FROM r"
		       " WHERE w.id = r.work_order AND $4 = 'RELEASED'",
		       4, wo, p->station, uid, pass ? "PASS" : "RELEASED");
}

int pgs_allowance(pgs *p, const char *wo, long want, long *held)
{
	PGresult *res = NULL;
	char w[32];
	int err;

	if (!p || !wo || !held)
		return ST_E_INVAL;
	snprintf(w, sizeof(w), "%ld", want);
	if ((err = pgs_run(p, NULL, "begin the allowance", "BEGIN", 0)) ||
	    (err = pgs_run(p, &res, "top up the allowance",
			   "WITH wo AS (SELECT id, quota, reserved FROM work_orders"
			   "  WHERE id = $1 FOR UPDATE),"
			   " have AS (SELECT count(*) AS n FROM reservations"
			   "  WHERE work_order = $1 AND station_id = $2"
			   "  AND state = 'ALLOWANCE'),"
			   " k AS (SELECT greatest(0, least($3::bigint - have.n,"
			   "  coalesce(wo.quota - wo.reserved, $3::bigint))) AS n,"
			   "  have.n AS had FROM wo, have),"
			   " ins AS (INSERT INTO reservations (work_order, station_id,"
			   "  state) SELECT $1, $2, 'ALLOWANCE'"
			   "  FROM k, generate_series(1, k.n) RETURNING 1),"
			   " upd AS (UPDATE work_orders SET reserved = reserved +"
			   "  (SELECT n FROM k) WHERE id = $1 RETURNING 1)"
			   " SELECT (SELECT had + n FROM k), (SELECT count(*) FROM upd)",
			   3, wo, p->station, w)))
		goto cleanup;
	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		err = pgs_fail(p, ST_E_NOTFOUND, "work order %s does not exist in the "
			       "central database", wo);
		goto cleanup;
	}
	*held = atol(PQgetvalue(res, 0, 0));
	err = pgs_run(p, NULL, "commit the allowance", "COMMIT", 0);
cleanup:
	PQclear(res);
	pgs_rollback(p);
	return err;
}

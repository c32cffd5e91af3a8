/* pgs_verify.c — every station's chain held centrally, walked with the
 * checks of rec_verify (rec_chain_*, records/chain.c). */
#include "records/pgsync.h"
#include "pgs_int.h"
#include "rec_int.h"

#include "base.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Verify ---- */

int pgs_verify(pgs *p, rec_store *msg, rec_cert_check_fn check, void *ctx,
	       pgs_verify_result *out)
{
	PGresult *st = NULL, *certs = NULL, *ev = NULL;
	struct rec_chain c;
	int err;

	if (!p || !msg || !out)
		return ST_E_INVAL;
	memset(out, 0, sizeof(*out));
	rec_chain_init(&c, msg);
	/* one snapshot: a sync committing meanwhile is not half seen */
	if ((err = pgs_run(p, NULL, "begin reading",
			   "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0)) ||
	    (err = pgs_run(p, &st, "list the stations",
			   "SELECT id, high_seq FROM stations ORDER BY id", 0)) ||
	    (err = pgs_run(p, &certs, "read the audit certificates",
			   "SELECT sha256, pem FROM audit_certs ORDER BY sha256", 0)))
		goto cleanup;
	for (int i = 0; i < PQntuples(st) && !err; i++) {
		const char *sid = PQgetvalue(st, i, 0);
		long long high = strtoll(PQgetvalue(st, i, 1), NULL, 10), n;

		snprintf(out->bad_station, sizeof(out->bad_station), "%s", sid);
		rec_chain_free(&c);
		rec_chain_init(&c, msg);
		for (int k = 0; k < PQntuples(certs) && !err; k++)
			err = rec_chain_cert(&c, PQgetvalue(certs, k, 0),
					     PQgetvalue(certs, k, 1), check, ctx);
		if (err)
			break;
		PQclear(ev);
		if ((err = pgs_run(p, &ev, "read a station's events",
				   "SELECT seq, at, kind, coalesce(unit_id, 0), uid,"
				   " body, hash, sig FROM events WHERE station_id = $1"
				   " ORDER BY seq", 1, sid)))
			break;
		n = PQntuples(ev);
		for (int k = 0; k < n && !err; k++) {
			rec_event_row e = {
				.seq = strtoll(PQgetvalue(ev, k, 0), NULL, 10),
				.at = pgs_val(ev, k, 1), .kind = pgs_val(ev, k, 2),
				.unit_id = strtoll(PQgetvalue(ev, k, 3), NULL, 10),
				.uid = pgs_val(ev, k, 4), .body = pgs_val(ev, k, 5),
				.hash = pgs_val(ev, k, 6), .sig = pgs_val(ev, k, 7),
			};

			err = rec_chain_event(&c, &e, NULL);
			if (!err)
				out->events++;
		}
		if (!err)
			err = rec_chain_end(&c, 0);
		if (!err) {
			PGresult *cp = NULL;

			/* every checkpoint of the station names an event held */
			err = pgs_run(p, &cp, "read a station's checkpoints",
				      "SELECT seq, head_hash, at FROM checkpoints"
				      " WHERE station_id = $1 ORDER BY seq", 1, sid);
			for (int k = 0; !err && k < PQntuples(cp); k++) {
				long long s = strtoll(PQgetvalue(cp, k, 0), NULL, 10);

				if (s >= 1 && s <= n &&
				    !strcmp(PQgetvalue(ev, (int)s - 1, 6),
					    PQgetvalue(cp, k, 1)))
					continue;
				c.bad_seq = s <= n ? s : n + 1;
				err = rec_fail(msg, ST_E_VERIFY, "event %lld %s: the "
					       "station's checkpoint of %s says event "
					       "%lld has hash %.16s... (events cut off "
					       "or rewritten)", c.bad_seq, s <= n ?
					       "has another hash" : "is missing",
					       PQgetvalue(cp, k, 2), s,
					       PQgetvalue(cp, k, 1));
			}
			PQclear(cp);
		}
		if (!err && n != high) {
			c.bad_seq = n + 1;
			err = rec_fail(msg, ST_E_VERIFY, "event %lld is missing: "
				       "the station's mark says %lld events, %lld "
				       "are held: events were removed from the end",
				       n + 1, high, n);
		}
		if (err == ST_E_VERIFY)
			out->bad_seq = c.bad_seq;
		if (!err)
			out->stations++;
	}
	if (!err)
		out->bad_station[0] = '\0';
	pgs_run(p, NULL, "end reading", "COMMIT", 0);
cleanup:
	PQclear(st);
	PQclear(certs);
	PQclear(ev);
	rec_chain_free(&c);
	pgs_rollback(p);
	return err;
}

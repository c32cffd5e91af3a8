/* pgs_ship.c — shipping the local chain to the central database: batches
 * of events applied to the central tables under the global rules (one
 * identity per device, one unit per serial: alerts otherwise), alerts
 * picked up into the local store, the check that the local chain still
 * holds what was shipped, checkpoints. */
#include "records/pgsync.h"
#include "pgs_int.h"
#include "rec_int.h"

#include "base.h"

#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Reading the local chain ---- */

struct lev {
	long long seq, unit;
	char *at, *kind, *uid, *body, *hash, *sig;
};

static void lev_clear(struct lev *e, int n)
{
	for (int i = 0; i < n; i++) {
		free(e[i].at);
		free(e[i].kind);
		free(e[i].uid);
		free(e[i].body);
		free(e[i].hash);
		free(e[i].sig);
	}
}

static void lev_free(struct lev *e, int n)
{
	lev_clear(e, n);
	free(e);
}

static char *dup_or_null(const char *v)
{
	return v ? strdup(v) : NULL;
}

/* Where local_events copies the rows to. */
struct lev_buf {
	rec_store *r;
	struct lev *e;
	int n;
};

static int lev_copy(void *ctx, const rec_event_row *row)
{
	struct lev_buf *b = ctx;
	struct lev *v = &b->e[b->n++];

	v->seq = row->seq;
	v->unit = row->unit_id;
	v->at = dup_or_null(row->at);
	v->kind = dup_or_null(row->kind);
	v->uid = dup_or_null(row->uid);
	v->body = dup_or_null(row->body);
	v->hash = dup_or_null(row->hash);
	v->sig = dup_or_null(row->sig);
	if (!v->at || !v->kind || !v->body || !v->hash)
		return rec_fail(b->r, ST_E_NOMEM, "out of memory");
	return ST_OK;
}

/* Does the event wait for a later event's signature (records/chain.c,
 * "One signature per commit")? */
static int awaits_sig(const struct lev *e)
{
	json_error_t je;
	json_t *o;
	int yes;

	if (e->sig && *e->sig)
		return 0;
	o = json_loads(e->body, 0, &je);
	yes = o && json_is_integer(json_object_get(o, "batch"));
	json_decref(o);
	return yes;
}

/* Up to max local events above seq, copied out so no lock is held while
 * the network is used.  The copy ends on a signed event: the events of a
 * batch after the last signature in reach are left for the next round
 * (the central check, like records verify, refuses a chain whose end
 * waits for a signature); when max ends inside a batch larger than max,
 * more are read.  *more: the local chain goes on after *out.  more NULL:
 * exactly the stored events, up to max (a look at one event). */
static int local_events(pgs *p, rec_store *r, long long after, int max,
			struct lev **out, int *n, int *more)
{
	struct lev_buf b = { 0 };
	int err, cut;

	*out = NULL;
	*n = 0;
	for (;;) {
		b.r = r;
		b.n = 0;
		b.e = calloc((size_t)max, sizeof(*b.e));
		if (!b.e)
			return pgs_fail(p, ST_E_NOMEM, "out of memory");
		err = rec_list_events_after(r, after, max, lev_copy, &b);
		if (err) {
			pgs_fail(p, err, "local store: %s", rec_errmsg(r));
			lev_free(b.e, b.n);
			return err;
		}
		for (cut = b.n; more && cut > 0 && awaits_sig(&b.e[cut - 1]); cut--)
			;
		if (cut > 0 || b.n < max || max >= INT_MAX / 2)
			break;
		/* one batch longer than max: read further */
		lev_free(b.e, b.n);
		max *= 2;
	}
	if (more)
		*more = b.n == max;
	lev_clear(b.e + cut, b.n - cut);
	*out = b.e;
	*n = cut;
	return ST_OK;
}

int pgs_local_lag(rec_store *r, long long server_seq, long long *local_seq,
		  long long *events, long long *units)
{
	return rec_chain_lag(r, server_seq, local_seq, events, units);
}

int pgs_local_offline(rec_store *r, const char *wo, long long seq, long *n)
{
	return rec_offline_units(r, wo, seq, n);
}

/* The audit certificates, copied out of the store (ship_certs). */
struct cert_buf {
	rec_store *r;
	struct cert { char fp[REC_HASH_HEX]; char *pem; } *c;
	int n;
};

static int cert_copy(void *ctx, const char *sha256, const char *pem)
{
	struct cert_buf *b = ctx;
	struct cert *m = realloc(b->c, sizeof(*m) * (size_t)(b->n + 1));

	if (!m)
		return rec_fail(b->r, ST_E_NOMEM, "out of memory");
	b->c = m;
	snprintf(m[b->n].fp, sizeof(m[b->n].fp), "%s", sha256 ? sha256 : "");
	m[b->n].pem = dup_or_null(pem);
	if (m[b->n++].pem == NULL)
		return rec_fail(b->r, ST_E_NOMEM, "out of memory");
	return ST_OK;
}

/* Audit certificates go first: events name them.  Every one, each pass:
 * there are few (one per audit key the station ever had). */
static int ship_certs(pgs *p, rec_store *r)
{
	struct cert_buf b = { .r = r };
	int err;

	err = rec_list_audit_certs(r, cert_copy, &b);
	if (err)
		pgs_fail(p, err, "local store: %s", rec_errmsg(r));
	for (int i = 0; i < b.n && !err; i++)
		err = pgs_run(p, NULL, "store an audit certificate",
			      "INSERT INTO audit_certs (sha256, pem, first_station)"
			      " VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
			      3, b.c[i].fp, b.c[i].pem, p->station);
	for (int i = 0; i < b.n; i++)
		free(b.c[i].pem);
	free(b.c);
	return err;
}

/* ---- Applying one event to the central tables ---- */

static const char *jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* A PASS for a device or serial that another station already holds. */
static int raise_alert(pgs *p, const char *kind, const char *uid,
		       const char *serial, const char *first, const char *funit,
		       const char *unit, const char *hash, const char *detail,
		       long long *raised)
{
	PGresult *res = NULL;
	int err;

	err = pgs_run(p, &res, "record an alert",
		      "INSERT INTO alerts (kind, uid, cert_serial, first_station,"
		      " first_unit, second_station, second_unit, event_hash, detail)"
		      " VALUES ($1, $2, $3, $4, $5::bigint, $6, $7::bigint, $8, $9)"
		      " ON CONFLICT (kind, event_hash) DO NOTHING RETURNING id",
		      9, kind, uid, serial, first, funit, p->station, unit, hash, detail);
	if (!err && PQntuples(res) == 1)
		(*raised)++;
	PQclear(res);
	return err;
}

/* The PASS or UNFUSED of uid: the device's one identity and the serial's
 * one unit, across every station.  An UNFUSED unit holds a live identity
 * (docs/fuses.md), so it claims it too; the armed run that finishes it at
 * the same station (same certificate, same serial) is that identity, not
 * a second one. */
static int claim_identity(pgs *p, const struct lev *e, const char *unit,
			  json_t *data, long long *raised)
{
	const char *serial = jstr(data, "cert_serial");
	PGresult *res = NULL;
	char detail[512];
	int err;

	err = pgs_run(p, &res, "claim the device identity",
		      "WITH ins AS (INSERT INTO device_identities (uid, station_id,"
		      " unit_id, cert_serial, event_hash) VALUES ($1, $2, $3::bigint,"
		      " $4, $5) ON CONFLICT (uid) DO NOTHING RETURNING station_id)"
		      " SELECT station_id, unit_id::text, coalesce(cert_serial, '')"
		      " FROM device_identities WHERE uid = $1 AND NOT EXISTS"
		      " (SELECT 1 FROM ins) AND NOT (station_id = $2 AND"
		      " cert_serial IS NOT DISTINCT FROM $4)",
		      5, e->uid, p->station, unit, serial, e->hash);
	if (err)
		return err;
	if (PQntuples(res) == 1) {
		snprintf(detail, sizeof(detail), "device %s was given a second "
			 "identity: provisioned at station %s (unit %s, serial %s) and "
			 "at station %s (unit %s, serial %s); not merged: "
			 "withdraw one of the certificates", e->uid,
			 PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
			 PQgetvalue(res, 0, 2), p->station, unit,
			 serial ? serial : "-");
		err = raise_alert(p, "duplicate_device", e->uid, serial,
				  PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
				  unit, e->hash, detail, raised);
	}
	PQclear(res);
	if (err || !serial)
		return err;
	err = pgs_run(p, &res, "claim the certificate serial",
		      "WITH ins AS (INSERT INTO cert_serials (serial, station_id,"
		      " unit_id, uid) VALUES ($1, $2, $3::bigint, $4)"
		      " ON CONFLICT (serial) DO NOTHING RETURNING serial)"
		      " SELECT station_id, unit_id::text, uid FROM cert_serials"
		      " WHERE serial = $1 AND NOT EXISTS (SELECT 1 FROM ins)"
		      " AND NOT (station_id = $2 AND uid = $4)",
		      4, serial, p->station, unit, e->uid);
	if (err)
		return err;
	if (PQntuples(res) == 1) {
		snprintf(detail, sizeof(detail), "certificate serial %s was "
			 "issued twice: station %s (unit %s, device %s) and "
			 "station %s (unit %s, device %s)", serial,
			 PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
			 PQgetvalue(res, 0, 2), p->station, unit, e->uid);
		err = raise_alert(p, "duplicate_serial", e->uid, serial,
				  PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
				  unit, e->hash, detail, raised);
	}
	PQclear(res);
	return err;
}

/* A unit started offline took a pre-reserved allowance: that allowance
 * now belongs to it (or, with none left, the quota was overrun: said). */
static int take_allowance(pgs *p, const struct lev *e, const char *unit,
			  long long *raised)
{
	PGresult *res = NULL;
	const char *wo;
	char detail[512];
	int err;

	err = pgs_run(p, &res, "find the unit's work order",
		      "SELECT work_order FROM units WHERE station_id = $1"
		      " AND unit_id = $2::bigint", 2, p->station, unit);
	if (err)
		return err;
	wo = PQntuples(res) == 1 ? pgs_val(res, 0, 0) : NULL;
	if (!wo) {
		PQclear(res);
		return ST_OK;
	}
	wo = strdup(wo);
	PQclear(res);
	if (!wo)
		return pgs_fail(p, ST_E_NOMEM, "out of memory");
	err = pgs_run(p, &res, "take an allowance",
		      "UPDATE reservations SET state = 'HELD', uid = $3,"
		      " unit_id = $4::bigint, at = now() WHERE id = (SELECT id"
		      " FROM reservations WHERE work_order = $1 AND station_id = $2"
		      " AND state = 'ALLOWANCE' ORDER BY id LIMIT 1 FOR UPDATE)"
		      " RETURNING id", 4, wo, p->station, e->uid, unit);
	if (!err && PQntuples(res) == 0) {
		PQclear(res);
		res = NULL;
		snprintf(detail, sizeof(detail), "work order %s: unit %s (device "
			 "%s) was started offline at station %s without a "
			 "pre-reserved allowance: the quota may be overrun",
			 wo, unit, e->uid, p->station);
		err = pgs_run(p, NULL, "count the offline unit",
			      "WITH u AS (UPDATE work_orders SET reserved ="
			      " reserved + 1 WHERE id = $1 RETURNING id)"
			      " INSERT INTO reservations (work_order, station_id,"
			      " uid, unit_id, state) VALUES ($1, $2, $3, $4::bigint,"
			      " 'HELD')", 4, wo, p->station, e->uid, unit);
		if (!err)
			err = raise_alert(p, "quota_overrun", e->uid, NULL,
					  p->station, unit, unit, e->hash,
					  detail, raised);
	}
	PQclear(res);
	free((char *)wo);
	return err;
}

/* The end of a unit that took an allowance offline: PASS keeps it,
 * anything else gives it back. */
static int end_allowance(pgs *p, const char *unit, const char *result)
{
	bool pass = result && !strcmp(result, "PASS");

	/* UNFUSED keeps the reservation held: the armed run that finishes
	 * the device reuses it (pgs_reserve) and settles it */
	if (result && !strcmp(result, "UNFUSED"))
		return ST_OK;

	return pgs_run(p, NULL, "settle the unit's reservation",
		       "WITH r AS (UPDATE reservations SET state = $3, at = now()"
		       " WHERE station_id = $1 AND unit_id = $2::bigint"
		       " AND state = 'HELD' RETURNING work_order)"
		       " UPDATE work_orders w SET reserved = reserved - 1 FROM r"
		       " WHERE w.id = r.work_order AND $3 = 'RELEASED'",
		       3, p->station, unit, pass ? "PASS" : "RELEASED");
}

static int apply(pgs *p, const struct lev *e, json_t *body, long long *raised)
{
	json_t *data = json_object_get(body, "data");
	char unit[24];

	snprintf(unit, sizeof(unit), "%lld", e->unit);
	if (!strcmp(e->kind, "unit_start") && e->uid)
		return pgs_run(p, NULL, "record the unit",
			       "INSERT INTO units (station_id, unit_id, uid,"
			       " work_order, state, started_at) VALUES ($1,"
			       " $2::bigint, $3, $4, 'RUNNING', $5)"
			       " ON CONFLICT DO NOTHING", 5, p->station, unit,
			       e->uid, jstr(data, "work_order"), e->at);
	if (!strcmp(e->kind, "step") && e->uid &&
	    jstr(data, "step") && !strcmp(jstr(data, "step"), "quota-offline"))
		return take_allowance(p, e, unit, raised);
	if (!strcmp(e->kind, "unit_end") && e->uid) {
		const char *result = jstr(data, "result");
		int err = pgs_run(p, NULL, "record the unit's end",
				  "UPDATE units SET state = $3, reason = $4,"
				  " cert_serial = $5, cert_sha256 = $6,"
				  " finished_at = $7 WHERE station_id = $1"
				  " AND unit_id = $2::bigint", 7, p->station, unit,
				  result, jstr(data, "reason"),
				  jstr(data, "cert_serial"),
				  jstr(data, "cert_sha256"), e->at);

		if (!err)
			err = end_allowance(p, unit, result);
		if (!err && result && (!strcmp(result, "PASS") ||
				       !strcmp(result, "UNFUSED")))
			err = claim_identity(p, e, unit, data, raised);
		return err;
	}
	return ST_OK;
}

/* One transaction: the station's mark under a row lock, the next batch of
 * local events after it, each inserted (or found identical), applied, and
 * the mark moved.  *more: there may be more to ship. */
static int ship_batch(pgs *p, rec_store *r, pgs_result *out, bool *more)
{
	struct lev *e = NULL;
	PGresult *res = NULL;
	char prev[REC_HASH_HEX], seq[24];
	long long high;
	int n = 0, err, more_local = 0;

	*more = false;
	if ((err = pgs_run(p, NULL, "begin a batch", "BEGIN", 0)) ||
	    (err = pgs_run(p, NULL, "register the station",
			   "INSERT INTO stations (id) VALUES ($1)"
			   " ON CONFLICT (id) DO NOTHING", 1, p->station)) ||
	    (err = pgs_run(p, &res, "read the station's high-water mark",
			   "SELECT high_seq, head_hash FROM stations WHERE id = $1"
			   " FOR UPDATE", 1, p->station)))
		goto cleanup;
	high = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	snprintf(prev, sizeof(prev), "%s", PQgetvalue(res, 0, 1));
	PQclear(res);
	res = NULL;
	out->server_seq = high;
	/* the server's last event must be this store's event at that place
	 * (a replaced file can have as many events, and none to ship) */
	if (high > 0) {
		if ((err = local_events(p, r, high - 1, 1, &e, &n, NULL)))
			goto cleanup;
		if (n == 0 || strcmp(e[0].hash, prev)) {
			err = pgs_fail(p, ST_E_VERIFY, "the central database holds %lld "
				       "events of station %s and this store %s: a "
				       "replaced records file, or two stations with "
				       "one station id; nothing shipped", high,
				       p->station, n == 0 ? "fewer" :
				       "others (its event there has another hash)");
			goto cleanup;
		}
		lev_free(e, n);
		e = NULL;
		n = 0;
	}
	if ((err = local_events(p, r, high, p->batch, &e, &n, &more_local)))
		goto cleanup;
	if (n == 0) {
		/* nothing to ship: the station is registered */
		err = pgs_run(p, NULL, "commit", "COMMIT", 0);
		goto cleanup;
	}
	for (int i = 0; i < n; i++) {
		json_error_t je;
		json_t *body = json_loads(e[i].body, 0, &je);
		const char *bprev = jstr(body, "prev"), *key = jstr(body, "key");
		char unit[24];

		if (!body || !bprev || strcmp(bprev, prev)) {
			json_decref(body);
			err = pgs_fail(p, ST_E_VERIFY, "local event %lld of station %s "
				       "does not follow the chain held centrally "
				       "(previous hash %.16s..., expected %.16s...): a "
				       "replaced records file or a reused station id; "
				       "nothing shipped", e[i].seq, p->station,
				       bprev ? bprev : "?", prev);
			goto cleanup;
		}
		snprintf(seq, sizeof(seq), "%lld", e[i].seq);
		snprintf(unit, sizeof(unit), "%lld", e[i].unit);
		err = pgs_run(p, &res, "ship an event",
			      "INSERT INTO events (station_id, seq, hash, prev, at,"
			      " kind, unit_id, uid, body, sig, signer) VALUES ($1,"
			      " $2::bigint, $3, $4, $5, $6, $7::bigint, $8, $9, $10,"
			      " $11) ON CONFLICT DO NOTHING RETURNING seq",
			      11, p->station, seq, e[i].hash, bprev, e[i].at,
			      e[i].kind, e[i].unit ? unit : NULL, e[i].uid,
			      e[i].body, e[i].sig, key);
		if (!err && PQntuples(res) == 0) {
			/* already there (the same hash): it must be this very
			 * event, or the chains forked */
			PQclear(res);
			res = NULL;
			err = pgs_run(p, &res, "compare with the stored event",
				      "SELECT station_id, seq FROM events WHERE hash = $1",
				      1, e[i].hash);
			if (!err && (PQntuples(res) != 1 ||
				     strcmp(PQgetvalue(res, 0, 0), p->station) ||
				     strcmp(PQgetvalue(res, 0, 1), seq)))
				err = pgs_fail(p, ST_E_VERIFY, "event %lld of station "
					       "%s differs from the one held centrally "
					       "at that place", e[i].seq, p->station);
		} else if (!err) {
			err = apply(p, &e[i], body, &out->conflicts);
		}
		PQclear(res);
		res = NULL;
		json_decref(body);
		if (err)
			goto cleanup;
		snprintf(prev, sizeof(prev), "%s", e[i].hash);
	}
	snprintf(seq, sizeof(seq), "%lld", e[n - 1].seq);
	if ((err = pgs_run(p, NULL, "move the high-water mark",
			   "UPDATE stations SET high_seq = $2::bigint, head_hash = $3,"
			   " last_sync = now() WHERE id = $1", 3, p->station, seq,
			   prev)) ||
	    (err = pgs_run(p, NULL, "commit the batch", "COMMIT", 0)))
		goto cleanup;
	out->shipped += n;
	out->batches++;
	out->server_seq = e[n - 1].seq;
	*more = more_local;
cleanup:
	PQclear(res);
	pgs_rollback(p);
	lev_free(e, n);
	return err;
}

/* Alert ids this station already recorded locally. */
static int local_alerts(pgs *p, rec_store *r, long long **ids, int *n)
{
	int err = rec_alert_ids(r, ids, n);

	if (err)
		return pgs_fail(p, err, "local store: %s", rec_errmsg(r));
	return ST_OK;
}

/* Every alert naming this station, recorded once in the local store. */
static int pick_alerts(pgs *p, rec_store *r, pgs_ready_fn ready, void *ctx,
		       bool *readied, pgs_result *out)
{
	PGresult *res = NULL;
	long long *have = NULL;
	int nhave = 0, err;

	if ((err = pgs_run(p, &res, "read the alerts",
			   "SELECT id::text, kind, uid, cert_serial, first_station,"
			   " first_unit::text, second_station, second_unit::text,"
			   " detail FROM alerts WHERE first_station = $1"
			   " OR second_station = $1 ORDER BY id", 1, p->station)))
		return err;
	if (PQntuples(res) > 0)
		err = local_alerts(p, r, &have, &nhave);
	for (int i = 0; !err && i < PQntuples(res); i++) {
		long long id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		bool known = false;

		for (int k = 0; k < nhave; k++)
			known = known || have[k] == id;
		if (known)
			continue;
		if (!*readied && ready) {
			err = ready(ctx, r);
			if (err) {
				pgs_fail(p, err, "cannot record alert %lld locally: %s",
					 id, rec_errmsg(r));
				break;
			}
		}
		*readied = true;
		err = rec_event(r, "sync_alert", pgs_val(res, i, 2),
				"alert", PQgetvalue(res, i, 0),
				"alert_kind", pgs_val(res, i, 1),
				"cert_serial", pgs_val(res, i, 3),
				"first_station", pgs_val(res, i, 4),
				"first_unit", pgs_val(res, i, 5),
				"second_station", pgs_val(res, i, 6),
				"second_unit", pgs_val(res, i, 7),
				"detail", pgs_val(res, i, 8), NULL);
		if (err) {
			pgs_fail(p, err, "cannot record alert %lld locally: %s", id,
				 rec_errmsg(r));
			break;
		}
		out->alerts_recorded++;
	}
	free(have);
	PQclear(res);
	return err;
}

/* ---- A chain that lost its tail ---- */

/* Raise an alert of this station about its own chain, in a transaction of
 * its own (idempotent: one per kind and head hash). */
static int self_alert(pgs *p, const char *kind, const char *hash,
		      const char *detail, long long *raised)
{
	int err = pgs_run(p, NULL, "begin an alert", "BEGIN", 0);

	if (!err)
		err = raise_alert(p, kind, NULL, NULL, p->station, NULL, NULL, hash,
				  detail, raised);
	if (!err)
		err = pgs_run(p, NULL, "commit the alert", "COMMIT", 0);
	pgs_rollback(p);
	return err;
}

/* What the central database knows of this station's chain — its mark
 * (the events held) and its newest checkpoint — must be in the local
 * chain: event seq with that hash.  A shorter local chain lost its tail
 * (or is an older copy); another hash is a replaced or rewritten file.
 * Either is an alert ("chain_cut", "chain_fork"), and nothing is
 * shipped over it. */
static int tail_check(pgs *p, rec_store *r, pgs_result *out)
{
	static const char *const sql[2] = {
		"SELECT high_seq, head_hash FROM stations WHERE id = $1",
		"SELECT seq, head_hash FROM checkpoints WHERE station_id = $1"
		" ORDER BY seq DESC LIMIT 1",
	};
	char seen[200], detail[768], hash[REC_HASH_HEX];
	long long seq, local = 0;
	struct lev *e = NULL;
	int n = 0, err = ST_OK;

	if (pgs_local_lag(r, 0, &local, NULL, NULL))
		return pgs_fail(p, ST_E_DB, "local store: %s", rec_errmsg(r));
	for (int i = 0; i < 2 && !err; i++) {
		PGresult *res = NULL;

		if ((err = pgs_run(p, &res, "read what the central database holds",
				   sql[i], 1, p->station)))
			break;
		seq = PQntuples(res) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
		snprintf(hash, sizeof(hash), "%s", seq > 0 ? PQgetvalue(res, 0, 1) : "");
		PQclear(res);
		if (seq <= 0)
			continue;
		if (i == 0)
			snprintf(seen, sizeof(seen), "events 1..%lld of station %s",
				 seq, p->station);
		else
			snprintf(seen, sizeof(seen), "a checkpoint of station %s at "
				 "event %lld", p->station, seq);
		if ((err = local_events(p, r, seq - 1, 1, &e, &n, NULL)))
			break;
		if (n == 1 && !strcmp(e[0].hash, hash)) {
			lev_free(e, n);
			continue;
		}
		lev_free(e, n);
		if (n == 0)
			snprintf(detail, sizeof(detail), "the central database holds "
				 "%s, but this store ends at event %lld: events "
				 "%lld..%lld were cut off the end of the local chain "
				 "(or it is a replaced records file, an older copy); "
				 "nothing shipped", seen, local, local + 1, seq);
		else
			snprintf(detail, sizeof(detail), "the central database holds "
				 "%s, and this store's event %lld has another hash: "
				 "a replaced records file, a rewritten chain, or two "
				 "stations with one station id; nothing shipped",
				 seen, seq);
		err = self_alert(p, n == 0 ? "chain_cut" : "chain_fork", hash,
				 detail, &out->conflicts);
		if (!err)
			err = pgs_fail(p, ST_E_VERIFY, "%s", detail);
	}
	return err;
}

int pgs_checkpoint_put(pgs *p, const char *body, const char *sig_hex)
{
	rec_checkpoint cp;
	char seq[24];

	if (!p || !body || !sig_hex)
		return ST_E_INVAL;
	if (rec_checkpoint_parse(body, &cp))
		return pgs_fail(p, ST_E_INVAL, "not a checkpoint");
	if (strcmp(cp.station, p->station))
		return pgs_fail(p, ST_E_INVAL, "a checkpoint of station %s, not of "
				"this station %s", cp.station, p->station);
	snprintf(seq, sizeof(seq), "%lld", cp.seq);
	return pgs_run(p, NULL, "store a checkpoint",
		       "INSERT INTO checkpoints (station_id, seq, head_hash, at,"
		       " audit_cert, body, sig) VALUES ($1, $2::bigint, $3, $4, $5,"
		       " $6, $7) ON CONFLICT DO NOTHING", 7, p->station, seq,
		       cp.head_hash, cp.at, cp.audit_sha256, body, sig_hex);
}

int pgs_checkpoint_mark(pgs *p, long long *seq)
{
	PGresult *res = NULL;
	int err;

	if (!p || !seq)
		return ST_E_INVAL;
	err = pgs_run(p, &res, "read the newest checkpoint",
		      "SELECT coalesce(max(seq), 0) FROM checkpoints"
		      " WHERE station_id = $1", 1, p->station);
	if (!err)
		*seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return err;
}

int pgs_sync(pgs *p, rec_store *r, pgs_ready_fn ready, void *ready_ctx,
	     pgs_result *out)
{
	pgs_result dummy;
	bool more = true, readied = false;
	int err, pass;

	if (!out)
		out = &dummy;
	memset(out, 0, sizeof(*out));
	if (!p || !r)
		return ST_E_INVAL;
	if (!pgs_ok(p))
		return pgs_fail(p, ST_E_IO, "not connected to the central database");
	/* two rounds: alerts recorded in the first are shipped in the
	 * second */
	for (pass = 0; pass < 2; pass++) {
		long long before = out->alerts_recorded;

		if ((err = ship_certs(p, r)))
			return err;
		if ((err = tail_check(p, r, out))) {
			char why[PGS_MSG_MAX];

			/* the alert goes into this station's own chain too
			 * (signed), then the sync stops */
			snprintf(why, sizeof(why), "%s", p->msg);
			if (err == ST_E_VERIFY &&
			    pick_alerts(p, r, ready, ready_ctx, &readied, out) == ST_OK)
				snprintf(p->msg, sizeof(p->msg), "%s", why);
			return err;
		}
		more = true;
		while (more)
			if ((err = ship_batch(p, r, out, &more)))
				return err;
		if ((err = pick_alerts(p, r, ready, ready_ctx, &readied, out)))
			return err;
		if (out->alerts_recorded == before)
			break;
	}
	return pgs_local_lag(r, out->server_seq, &out->local_seq, NULL, NULL) ?
	       pgs_fail(p, ST_E_DB, "local store: %s", rec_errmsg(r)) : ST_OK;
}

int pgs_server_mark(pgs *p, long long *seq, char when[32])
{
	PGresult *res = NULL;
	int err;

	*seq = 0;
	when[0] = '\0';
	err = pgs_run(p, &res, "read the high-water mark",
		      "SELECT high_seq, coalesce(to_char(last_sync AT TIME ZONE 'UTC',"
		      " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') FROM stations"
		      " WHERE id = $1", 1, p->station);
	if (err)
		return err;
	if (PQntuples(res) == 1) {
		*seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		snprintf(when, 32, "%s", PQgetvalue(res, 0, 1));
	}
	PQclear(res);
	return ST_OK;
}

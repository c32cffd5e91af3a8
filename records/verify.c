/* verify.c — rec_verify: the whole chain walked (chain.c), then every row
 * of every table checked against the signed events that made it. */
#include "records.h"
#include "rec_int.h"

#include "base.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct vstate {
	struct rec_chain c;
	rec_verify_result *out;
	long long starts, steps, ends;          /* events seen, by kind */
	long long revokes, orders, keys;
};


/* Load every audit certificate of the store. */
static int load_certs(struct vstate *v, rec_cert_check_fn check, void *ctx)
{
	rec_store *r = v->c.r;
	sqlite3_stmt *s = NULL;
	int rc, err;

	if ((err = rec_prep(r, "SELECT sha256, pem FROM audit_certs ORDER BY rowid", &s)))
		return err;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		if ((err = rec_chain_cert(&v->c, rec_col(s, 0), rec_col(s, 1), check, ctx)))
			goto cleanup;
	if (rc != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "read the audit certificates");
cleanup:
	sqlite3_finalize(s);
	v->out->audit_certs = v->c.ncerts;
	return err;
}

/* ---- What verify covers: every column of every table, from the events ----
 *
 * Each table that list, export, the CRL or the engine reads is rebuilt,
 * row by row, from the signed events that made the row, and compared with
 * what is stored, column by column, for every column the table has
 * (PRAGMA table_info through "SELECT *", not a list kept here): a column
 * is covered by a rule below, else by the key of the same name in the
 * data of the row's events; a column that neither covers must be NULL,
 * or verify fails naming it ("column X of table Y is not covered by any
 * event").  So a column someone adds later is checked as soon as its
 * value is in the event data, and is never silently skipped. */

/* How one column is rebuilt from the row's events (body[ev]). */
enum csrc {
	C_UNIT,         /* the body's unit */
	C_UID,          /* the body's uid */
	C_DATA,         /* data.key */
	C_TIME,         /* data.key; in events written before the key was
			 * there, the event's own time within REC_OLD_MS */
	C_STATE,        /* data.result of body[ev], RUNNING without one */
	C_NOT_READ,     /* nothing reads it (why says so) */
};

static const struct cover {
	const char *table, *column;
	enum csrc src;
	int ev;                 /* which of the row's events */
	const char *key;
} covers[] = {
	{ "units", "id", C_UNIT, 0, NULL },
	{ "units", "uid", C_UID, 0, NULL },
	{ "units", "state", C_STATE, 1, "result" },
	{ "units", "started_at", C_TIME, 0, "started_at" },
	{ "units", "finished_at", C_TIME, 1, "finished_at" },
	/* the row key: steps are read by (unit_id, seq) */
	{ "steps", "id", C_NOT_READ, 0, NULL },
	{ "steps", "unit_id", C_UNIT, 0, NULL },
	{ "steps", "at", C_TIME, 0, "at" },
	{ "revocations", "unit_id", C_DATA, 0, "unit" },
	{ "revocations", "uid", C_UID, 0, NULL },
	{ "revocations", "revoked_by", C_DATA, 0, "by" },
	{ "revocations", "revoked_at", C_TIME, 0, "revoked_at" },
	{ "work_orders", "id", C_DATA, 0, "work_order" },
	{ "work_orders", "created_at", C_TIME, 0, "created_at" },
};

/* Every table of the store and the events that make its rows; one that
 * is not here fails verify until it is covered. */
static const struct ctable {
	const char *name;
	const char *kind;       /* the event that makes a row; NULL: below */
	const char *key_sql;    /* its row, from ?1 = unit, ?2 = data value */
	const char *key;        /* that data value */
} ctables[] = {
	{ "units", NULL, NULL, NULL },  /* unit_start + unit_end: rows_units */
	{ "steps", "step", "SELECT * FROM steps WHERE unit_id = ?1 AND seq = ?2",
	  "seq" },
	{ "revocations", "revoke",
	  "SELECT * FROM revocations WHERE unit_id = ?2", "unit" },
	{ "work_orders", "workorder_create",
	  "SELECT * FROM work_orders WHERE id = ?2", "work_order" },
	/* the chain itself, and the audit certificates (each stored under
	 * its own fingerprint, each with its audit_key event) */
	{ "events", NULL, NULL, NULL },
	{ "audit_certs", NULL, NULL, NULL },
};

#define REC_OLD_MS	2000	/* a row time written by SQLite's clock
				 * beside an older event's time */

/* UTC 2024-05-01T12:34:56.789Z as ms since 1970; -1 if not that form. */
static long long utc_ms(const char *s)
{
	struct tm tm = { 0 };
	int ms = 0, n = 0;

	if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &tm.tm_year,
			 &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
			 &tm.tm_sec, &ms, &n) != 7 || s[n])
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (long long)timegm(&tm) * 1000 + ms;
}

/* A JSON scalar as the text SQLite gives for the column (NULL: null or
 * absent). */
static const char *jtext(json_t *j, char *buf, size_t len)
{
	if (json_is_string(j))
		return json_string_value(j);
	if (json_is_integer(j)) {
		snprintf(buf, len, "%lld", (long long)json_integer_value(j));
		return buf;
	}
	if (json_is_true(j) || json_is_false(j))
		return json_is_true(j) ? "1" : "0";
	if (json_is_real(j)) {
		snprintf(buf, len, "%.17g", json_real_value(j));
		return buf;
	}
	return NULL;
}

static const struct cover *cover_of(const char *table, const char *column)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(covers); i++)
		if (!strcmp(covers[i].table, table) &&
		    !strcmp(covers[i].column, column))
			return &covers[i];
	return NULL;
}

/* The row at s (a "SELECT *" on table) against the nb events that made it
 * (body[i] NULL: that event is not there, e.g. no unit_end yet); who
 * names the row for people ("unit 3 (device d1)"). */
static int compare_row(struct vstate *v, const char *table, const char *who,
		       sqlite3_stmt *s, json_t *const *body, int nb)
{
	rec_store *r = v->c.r;
	char nbuf[32];

	for (int i = 0; i < sqlite3_column_count(s); i++) {
		const char *name = sqlite3_column_name(s, i);
		const char *got = sqlite3_column_type(s, i) == SQLITE_NULL ? NULL :
				  rec_col(s, i), *want = NULL, *old_at = NULL;
		const struct cover *c = cover_of(table, name);
		json_t *b = NULL, *j;
		int from = -1;

		if (c && c->src == C_NOT_READ)
			continue;
		if (c) {
			from = c->ev;
			b = c->ev < nb ? body[c->ev] : NULL;
			j = json_object_get(json_object_get(b, "data"), c->key ?
					    c->key : "");
			switch (c->src) {
			case C_UNIT:
				want = jtext(json_object_get(b, "unit"), nbuf,
					     sizeof(nbuf));
				break;
			case C_UID:
				want = jtext(json_object_get(b, "uid"), nbuf,
					     sizeof(nbuf));
				break;
			case C_STATE:
				want = b ? jtext(j, nbuf, sizeof(nbuf)) : "RUNNING";
				break;
			case C_TIME:
				if (b && !j)
					old_at = json_string_value(json_object_get(b, "at"));
				/* fall through */
			default:
				want = jtext(j, nbuf, sizeof(nbuf));
				break;
			}
		} else {
			for (int k = 0; k < nb && from < 0; k++) {
				j = json_object_get(json_object_get(body[k], "data"),
						    name);
				if (j) {
					from = k;
					b = body[k];
					want = jtext(j, nbuf, sizeof(nbuf));
				}
			}
		}
		if (from < 0 && got) {
			v->out->bad_seq = json_integer_value(json_object_get(body[0], "seq"));
			return rec_fail(r, ST_E_VERIFY, "event %lld (%s): column %s of "
					"table %s is not covered by any event, yet %s "
					"holds \"%.40s\" there (a column added without "
					"its value in the event data, or a row changed)",
					v->out->bad_seq, who, name, table, who, got);
		}
		if (from < 0)
			continue;
		if (old_at) {
			long long a = utc_ms(got), e = utc_ms(old_at);

			if (a >= 0 && e >= 0 && llabs(a - e) <= REC_OLD_MS)
				continue;
			want = old_at;
		} else if ((!got && !want) || (got && want && !strcmp(got, want))) {
			continue;
		}
		if (!b) {
			/* the rule's event is not there: a unit with no end */
			v->out->bad_seq = json_integer_value(json_object_get(body[0], "seq"));
			return rec_fail(r, ST_E_VERIFY, "event %lld (%s): column %s "
					"of table %s is %s%.40s%s but no signed event "
					"ends the unit (a result set without its "
					"unit_end event, or events removed from the end)",
					v->out->bad_seq, who, name, table,
					got ? "\"" : "", got ? got : "NULL",
					got ? "\"" : "");
		}
		v->out->bad_seq = json_integer_value(json_object_get(b, "seq"));
		return rec_fail(r, ST_E_VERIFY, "event %lld (%s of %s): column %s "
				"of table %s is %s%.40s%s%s, the signed event says "
				"%s%.40s%s%s (modified)", v->out->bad_seq,
				json_string_value(json_object_get(b, "kind")), who,
				name, table, got ? "\"" : "", got ? got : "NULL",
				got ? "\"" : "", got && strlen(got) > 40 ? "..." : "",
				want ? "\"" : "", want ? want : "NULL",
				want ? "\"" : "",
				want && strlen(want) > 40 ? "..." : "");
	}
	return ST_OK;
}

/* A row of a table made by one event (steps, revocations, work orders):
 * it must exist, once, and be that event's row in every column. */
static int check_row(struct vstate *v, const struct ctable *t, json_t *body)
{
	rec_store *r = v->c.r;
	json_t *data = json_object_get(body, "data");
	long long seq = json_integer_value(json_object_get(body, "seq"));
	json_t *jk = json_object_get(data, t->key);
	const char *uid = json_string_value(json_object_get(body, "uid"));
	char who[200], kbuf[32];
	sqlite3_stmt *s = NULL;
	const char *k = jtext(jk, kbuf, sizeof(kbuf));
	int rc, err;

	if (!strcmp(t->name, "steps"))
		snprintf(who, sizeof(who), "step %s of unit %lld, device %s",
			 k ? k : "?", (long long)json_integer_value(
			 json_object_get(body, "unit")), uid ? uid : "?");
	else if (!strcmp(t->name, "revocations"))
		snprintf(who, sizeof(who), "the revocation of unit %s, device %s",
			 k ? k : "?", uid ? uid : "?");
	else
		snprintf(who, sizeof(who), "work order %s", k ? k : "?");
	if ((err = rec_prep(r, t->key_sql, &s)))
		return err;
	sqlite3_bind_int64(s, 1, json_integer_value(json_object_get(body, "unit")));
	if (json_is_integer(jk))
		sqlite3_bind_int64(s, 2, json_integer_value(jk));
	else
		rec_bind_text(s, 2, k);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		err = compare_row(v, t->name, who, s, &body, 1);
	else if (rc == SQLITE_DONE)
		err = rec_fail(r, ST_E_VERIFY, "event %lld (%s): its %s row is "
			       "missing (deleted)", seq, who, t->name);
	else
		err = rec_db_fail(r, ST_E_DB, "read the %s row of event %lld",
				  t->name, seq);
	if (err == ST_E_VERIFY && !v->out->bad_seq)
		v->out->bad_seq = seq;
	sqlite3_finalize(s);
	return err;
}

/* Every table of the store must be one verify covers. */
static int check_tables(struct vstate *v)
{
	rec_store *r = v->c.r;
	sqlite3_stmt *s = NULL;
	int rc, err;

	if ((err = rec_prep(r, "SELECT name FROM sqlite_master WHERE type = 'table'"
			    " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
			    &s)))
		return err;
	while (!err && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		size_t i;

		for (i = 0; i < ST_ARRAY_SIZE(ctables); i++)
			if (!strcmp(ctables[i].name, rec_col(s, 0)))
				break;
		if (i == ST_ARRAY_SIZE(ctables))
			err = rec_fail(r, ST_E_VERIFY, "table %s is not covered by "
				       "any event: verify cannot vouch for it (add "
				       "it to the tables in records/verify.c)",
				       rec_col(s, 0));
	}
	if (!err && rc != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "list the tables");
	sqlite3_finalize(s);
	return err;
}

/* Every unit row against its unit_start and (once ended) unit_end
 * events, found through events.unit_id (checked against each body by the
 * chain walk). */
static int rows_units(struct vstate *v)
{
	rec_store *r = v->c.r;
	sqlite3_stmt *u = NULL, *e = NULL;
	long long rows = 0, ends = 0;
	int rc, err;

	if ((err = rec_prep(r, "SELECT * FROM units ORDER BY id", &u)) ||
	    (err = rec_prep(r, "SELECT kind, body FROM events WHERE unit_id = ?1"
			    " AND kind IN ('unit_start', 'unit_end') ORDER BY seq", &e)))
		goto cleanup;
	while (!err && (rc = sqlite3_step(u)) == SQLITE_ROW) {
		long long id = sqlite3_column_int64(u, 0);
		json_t *body[2] = { NULL, NULL };
		const char *uid = NULL;
		char who[200];
		int bad = 0, erc;
		json_error_t je;

		for (int i = 0; i < sqlite3_column_count(u); i++)
			if (!strcmp(sqlite3_column_name(u, i), "uid"))
				uid = rec_col(u, i);
		snprintf(who, sizeof(who), "unit %lld, device %s", id,
			 uid ? uid : "?");
		rows++;
		sqlite3_bind_int64(e, 1, id);
		while ((erc = sqlite3_step(e)) == SQLITE_ROW) {
			int k = !strcmp(rec_col(e, 0), "unit_end");

			if (body[k] || (k && !body[0]))
				bad = 1;        /* twice, or an end before a start */
			else
				body[k] = json_loads(rec_col(e, 1), 0, &je);
		}
		sqlite3_reset(e);
		if (erc != SQLITE_DONE)
			err = rec_db_fail(r, ST_E_DB, "read the events of unit %lld", id);
		else if (bad || !body[0])
			err = rec_fail(r, ST_E_VERIFY, "%s: its row has %s (a unit "
				       "row inserted, or its events rewritten)", who,
				       body[0] ? "more than one start or end event" :
				       "no unit_start event");
		else
			err = compare_row(v, "units", who, u, body, 2);
		ends += body[1] != NULL;
		json_decref(body[0]);
		json_decref(body[1]);
	}
	if (!err && rc != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "read the units");
	if (!err)
		v->out->units = rows;
	if (!err && rows != v->starts) {
		v->out->bad_seq = 0;
		err = rec_fail(r, ST_E_VERIFY, "%lld unit_start events but %lld unit "
			       "rows: unit rows were deleted", v->starts, rows);
	}
	if (!err && ends != v->ends) {
		v->out->bad_seq = 0;
		err = rec_fail(r, ST_E_VERIFY, "%lld unit_end events but %lld of "
			       "them end a unit that has a row: unit rows were "
			       "deleted", v->ends, ends);
	}
cleanup:
	sqlite3_finalize(u);
	sqlite3_finalize(e);
	return err;
}

/* Rows with no event: more rows than events of their kind (each event
 * found its own row by key, so equal counts mean one row per event). */
static int check_counts(struct vstate *v)
{
	static const char *const names[] = { "steps", "revocations",
					     "work_orders", "audit_certs" };
	const long long want[] = { v->steps, v->revokes, v->orders, v->keys };
	const char *const kinds[] = { "step", "revoke", "workorder_create",
				      "audit_key" };
	rec_store *r = v->c.r;
	char sql[80];
	int err = ST_OK;

	for (size_t i = 0; i < ST_ARRAY_SIZE(names) && !err; i++) {
		sqlite3_stmt *s = NULL;
		long long n = -1;

		snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", names[i]);
		if ((err = rec_prep(r, sql, &s)))
			break;
		if (sqlite3_step(s) == SQLITE_ROW)
			n = sqlite3_column_int64(s, 0);
		else
			err = rec_db_fail(r, ST_E_DB, "count the %s", names[i]);
		sqlite3_finalize(s);
		if (!err && n != want[i]) {
			v->out->bad_seq = 0;
			err = rec_fail(r, ST_E_VERIFY, "%lld %s rows but %lld %s "
				       "events: %s rows were %s without their "
				       "signed event", n, names[i], want[i],
				       kinds[i], names[i], n > want[i] ?
				       "inserted" : "deleted");
		}
	}
	return err;
}

/* One stored event: the chain, then the row it describes. */
static int check_event(struct vstate *v, sqlite3_stmt *s)
{
	rec_event_row e = {
		.seq = sqlite3_column_int64(s, 0), .at = rec_col(s, 1),
		.kind = rec_col(s, 2), .uid = rec_col(s, 4), .body = rec_col(s, 5),
		.hash = rec_col(s, 6), .sig = rec_col(s, 7),
		.unit_id = sqlite3_column_type(s, 3) == SQLITE_NULL ? 0 :
			   sqlite3_column_int64(s, 3),
	};
	json_t *o = NULL;
	int err;

	err = rec_chain_event(&v->c, &e, &o);
	v->out->bad_seq = v->c.bad_seq;
	if (err)
		goto cleanup;
	if (!strcmp(e.kind, "unit_start"))
		v->starts++;
	else if (!strcmp(e.kind, "unit_end"))
		v->ends++;
	else if (!strcmp(e.kind, "audit_key"))
		v->keys++;
	for (size_t i = 0; i < ST_ARRAY_SIZE(ctables); i++) {
		if (!ctables[i].kind || strcmp(ctables[i].kind, e.kind))
			continue;
		if (!strcmp(e.kind, "step"))
			v->steps++;
		else if (!strcmp(e.kind, "revoke"))
			v->revokes++;
		else
			v->orders++;
		err = check_row(v, &ctables[i], o);
	}
	v->out->bad_seq = err ? e.seq : 0;
cleanup:
	json_decref(o);
	return err;
}

int rec_verify(rec_store *r, rec_cert_check_fn check, void *check_ctx,
	       rec_verify_result *out)
{
	struct vstate v = { .out = out };
	sqlite3_stmt *s = NULL;
	int rc, err, own;

	if (!r || !out)
		return ST_E_INVAL;
	memset(out, 0, sizeof(*out));
	rec_chain_init(&v.c, r);
	err = rec_enter(r);
	if (err)
		goto out;
	/* One read transaction: a writer in another process cannot make the
	 * walk see half an append.  Inside an open group-commit batch (slot
	 * workers of this process writing) the batch's transaction is that,
	 * and only its committer may end it. */
	own = sqlite3_get_autocommit(r->db);
	if (own && sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
		err = rec_db_fail(r, ST_E_DB, "begin reading");
		goto out;
	}
	if ((err = check_tables(&v)) || (err = load_certs(&v, check, check_ctx)))
		goto done;
	if ((err = rec_prep(r, "SELECT seq, at, kind, unit_id, uid, body, hash, sig"
			    " FROM events ORDER BY seq", &s)))
		goto done;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((err = check_event(&v, s)))
			goto done;
		out->events++;
		out->head_seq = sqlite3_column_int64(s, 0);
		snprintf(out->head_hash, sizeof(out->head_hash), "%s", rec_col(s, 6));
	}
	if (rc != SQLITE_DONE) {
		err = rec_db_fail(r, ST_E_DB, "read the events");
		goto done;
	}
	/* inside this process's open batch its own events still wait for
	 * the signature its commit makes */
	if ((err = rec_chain_end(&v.c, own ? 0 : r->batch_first))) {
		out->bad_seq = v.c.bad_seq;
		goto done;
	}
	out->bad_seq = 0;
	if (!(err = rows_units(&v)))
		err = check_counts(&v);
done:
	sqlite3_finalize(s);
	if (own)
		sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
out:
	rec_chain_free(&v.c);
	if (!err)
		out->bad_seq = 0;
	pthread_mutex_unlock(&r->lock);
	return err;
}

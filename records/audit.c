/* audit.c — reading the records back: walking and checking the audit
 * chain (hashes, signatures, and the unit and step rows against their
 * events), and the queries behind list/show/export. */
#include "records.h"
#include "rec_int.h"

#include "base.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* An audit certificate the store holds, with its key. */
struct acert {
	char sha256[REC_HASH_HEX];
	EVP_PKEY *key;
	int superseded;         /* the check said REC_CERT_SUPERSEDED */
	char why[256];          /* and why */
};

struct vstate {
	struct rec_chain c;
	rec_verify_result *out;
	long long starts, steps, ends;          /* events seen, by kind */
	long long revokes, orders, keys;
};

/* Text of a column, or NULL. */
static const char *col(sqlite3_stmt *s, int i)
{
	return (const char *)sqlite3_column_text(s, i);
}

/* Equal as optional strings: a JSON string or null against a column. */
static int same(json_t *o, const char *key, const char *v)
{
	json_t *j = json_object_get(o, key);

	if (!v)
		return !j || json_is_null(j);
	return json_is_string(j) && !strcmp(json_string_value(j), v);
}

static int prep(rec_store *r, const char *sql, sqlite3_stmt **s)
{
	if (sqlite3_prepare_v2(r->db, sql, -1, s, NULL) != SQLITE_OK)
		return rec_db_fail(r, ST_E_DB, "prepare %.60s", sql);
	return ST_OK;
}

/* One audit certificate: stored under its own fingerprint, accepted by
 * the caller's check, kept with its key for the signatures. */
int rec_chain_cert(struct rec_chain *c, const char *fp, const char *pem,
		   rec_cert_check_fn check, void *ctx)
{
	rec_store *r = c->r;
	BIO *b = BIO_new_mem_buf(pem ? pem : "", -1);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	unsigned char *der = NULL, dig[SHA256_DIGEST_LENGTH];
	char hex[REC_HASH_HEX], why[256] = "";
	int n = x ? i2d_X509(x, &der) : -1, err = ST_OK, verdict;
	struct acert *a;

	BIO_free(b);
	if (n > 0)
		SHA256(der, (size_t)n, dig);
	OPENSSL_free(der);
	if (n > 0)
		st_hex(dig, sizeof(dig), hex);
	if (n <= 0 || !fp || strcmp(hex, fp)) {
		err = rec_fail(r, ST_E_VERIFY, "audit certificate %s: does "
			       "not parse or is not the certificate of "
			       "that fingerprint (modified)", fp ? fp : "?");
		goto cleanup;
	}
	verdict = check ? check(ctx, pem, why, sizeof(why)) : 0;
	if (verdict && verdict != REC_CERT_SUPERSEDED) {
		err = rec_fail(r, ST_E_VERIFY, "audit certificate %s is "
			       "not trusted: %s", fp, why);
		goto cleanup;
	}
	a = realloc(c->certs, sizeof(*a) * (size_t)(c->ncerts + 1));
	if (!a) {
		err = rec_fail(r, ST_E_NOMEM, "out of memory");
		goto cleanup;
	}
	c->certs = a;
	a = &c->certs[c->ncerts++];
	memcpy(a->sha256, hex, sizeof(hex));
	a->key = X509_get_pubkey(x);
	a->superseded = verdict == REC_CERT_SUPERSEDED;
	snprintf(a->why, sizeof(a->why), "%s", a->superseded ? why : "");
cleanup:
	X509_free(x);
	return err;
}

void rec_chain_init(struct rec_chain *c, rec_store *r)
{
	memset(c, 0, sizeof(*c));
	c->r = r;
	c->expect = 1;
	memset(c->prev, '0', 64);
	c->prev[64] = '\0';
}

void rec_chain_free(struct rec_chain *c)
{
	for (int i = 0; i < c->ncerts; i++)
		EVP_PKEY_free(c->certs[i].key);
	free(c->certs);
	c->certs = NULL;
	c->ncerts = 0;
}

/* Load every audit certificate of the store. */
static int load_certs(struct vstate *v, rec_cert_check_fn check, void *ctx)
{
	rec_store *r = v->c.r;
	sqlite3_stmt *s = NULL;
	int rc, err;

	if ((err = prep(r, "SELECT sha256, pem FROM audit_certs ORDER BY rowid", &s)))
		return err;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		if ((err = rec_chain_cert(&v->c, col(s, 0), col(s, 1), check, ctx)))
			goto cleanup;
	if (rc != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "read the audit certificates");
cleanup:
	sqlite3_finalize(s);
	v->out->audit_certs = v->c.ncerts;
	return err;
}

/* Is k the key of an audit certificate the check accepted by itself?
 * (What makes an older certificate of the same key count.) */
static int key_certified(struct rec_chain *v, EVP_PKEY *k)
{
	for (int i = 0; k && i < v->ncerts; i++)
		if (!v->certs[i].superseded && v->certs[i].key &&
		    EVP_PKEY_eq(v->certs[i].key, k) == 1)
			return 1;
	return 0;
}

/* Check a signature (DER, hex) over body with the named audit key. */
static int check_sig(struct rec_chain *v, long long seq, const char *body,
		     const char *key, const char *sighex)
{
	unsigned char der[80];
	size_t n = sighex ? strlen(sighex) / 2 : 0;
	struct acert *ac = NULL;
	EVP_PKEY *pk = NULL;
	EVP_MD_CTX *md;
	int ok;

	if (!key || !sighex)
		return rec_fail(v->r, ST_E_VERIFY, "event %lld is not signed "
				"(written without the audit key)", seq);
	for (int i = 0; i < v->ncerts; i++)
		if (!strcmp(v->certs[i].sha256, key))
			ac = &v->certs[i];
	if (!ac)
		return rec_fail(v->r, ST_E_VERIFY, "event %lld: signed by audit "
				"key %s, whose certificate is not in the store",
				seq, key);
	if (ac->superseded && !key_certified(v, ac->key))
		return rec_fail(v->r, ST_E_VERIFY, "event %lld: signed under "
				"certificate %s, which is not an audit certificate, "
				"and no audit certificate in the store certifies its "
				"key: %s", seq, key, ac->why);
	pk = ac->key;
	if (n == 0 || n > sizeof(der) || strlen(sighex) != 2 * n ||
	    st_unhex(sighex, der, n))
		return rec_fail(v->r, ST_E_VERIFY, "event %lld: signature is "
				"not hex DER (modified)", seq);
	md = EVP_MD_CTX_new();
	ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pk) == 1 &&
	     EVP_DigestVerify(md, der, n, (const unsigned char *)body,
			      strlen(body)) == 1;
	EVP_MD_CTX_free(md);
	if (!ok)
		return rec_fail(v->r, ST_E_VERIFY, "event %lld: the signature "
				"does not verify under audit key %s (modified)",
				seq, key);
	return ST_OK;
}

/* One event against its predecessor: in sequence, its hash, its body's
 * seq and prev, its columns, its signature.  On success *body_out (may be
 * NULL) gets the parsed body and the chain moves on. */
int rec_chain_event(struct rec_chain *c, const rec_event_row *e,
		    json_t **body_out)
{
	long long seq = e->seq, unit = e->unit_id;
	const char *kind = e->kind, *body = e->body, *hash = e->hash;
	unsigned char dig[SHA256_DIGEST_LENGTH];
	char hex[REC_HASH_HEX];
	json_t *o = NULL, *ju;
	json_error_t je;
	int err;

	c->bad_seq = seq;
	if (seq != c->expect) {
		c->bad_seq = c->expect;
		return rec_fail(c->r, ST_E_VERIFY, "event %lld is missing (the "
				"next stored is %lld): events were deleted",
				c->expect, seq);
	}
	SHA256((const unsigned char *)(body ? body : ""), body ? strlen(body) : 0,
	       dig);
	st_hex(dig, sizeof(dig), hex);
	if (!hash || strcmp(hex, hash))
		return rec_fail(c->r, ST_E_VERIFY, "event %lld (%s): its hash "
				"does not match its body (modified)", seq,
				kind ? kind : "?");
	o = json_loads(body, JSON_REJECT_DUPLICATES, &je);
	if (!o || json_integer_value(json_object_get(o, "seq")) != seq) {
		err = rec_fail(c->r, ST_E_VERIFY, "event %lld: its body is not "
			       "the event of that sequence number (inserted "
			       "or reordered)", seq);
		goto cleanup;
	}
	if (!same(o, "prev", c->prev)) {
		err = rec_fail(c->r, ST_E_VERIFY, "event %lld (%s) does not "
			       "follow event %lld: its previous hash differs "
			       "(events inserted, deleted or reordered)", seq,
			       kind ? kind : "?", seq - 1);
		goto cleanup;
	}
	ju = json_object_get(o, "unit");
	if (!same(o, "kind", kind) || !same(o, "at", e->at) ||
	    !same(o, "uid", e->uid) ||
	    (unit ? json_integer_value(ju) != unit : !json_is_null(ju))) {
		err = rec_fail(c->r, ST_E_VERIFY, "event %lld: its columns "
			       "differ from its signed body (modified)", seq);
		goto cleanup;
	}
	err = check_sig(c, seq, body, json_string_value(json_object_get(o, "key")),
			e->sig);
	if (!err) {
		memcpy(c->prev, hash, REC_HASH_HEX);
		c->expect++;
		if (body_out) {
			*body_out = o;
			o = NULL;
		}
	}
cleanup:
	json_decref(o);
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
				  col(s, i), *want = NULL, *old_at = NULL;
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
	if ((err = prep(r, t->key_sql, &s)))
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

	if ((err = prep(r, "SELECT name FROM sqlite_master WHERE type = 'table'"
			" AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
			&s)))
		return err;
	while (!err && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		size_t i;

		for (i = 0; i < ST_ARRAY_SIZE(ctables); i++)
			if (!strcmp(ctables[i].name, col(s, 0)))
				break;
		if (i == ST_ARRAY_SIZE(ctables))
			err = rec_fail(r, ST_E_VERIFY, "table %s is not covered by "
				       "any event: verify cannot vouch for it (add "
				       "it to the tables in records/audit.c)",
				       col(s, 0));
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

	if ((err = prep(r, "SELECT * FROM units ORDER BY id", &u)) ||
	    (err = prep(r, "SELECT kind, body FROM events WHERE unit_id = ?1"
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
				uid = col(u, i);
		snprintf(who, sizeof(who), "unit %lld, device %s", id,
			 uid ? uid : "?");
		rows++;
		sqlite3_bind_int64(e, 1, id);
		while ((erc = sqlite3_step(e)) == SQLITE_ROW) {
			int k = !strcmp(col(e, 0), "unit_end");

			if (body[k] || (k && !body[0]))
				bad = 1;        /* twice, or an end before a start */
			else
				body[k] = json_loads(col(e, 1), 0, &je);
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
		if ((err = prep(r, sql, &s)))
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
		.seq = sqlite3_column_int64(s, 0), .at = col(s, 1),
		.kind = col(s, 2), .uid = col(s, 4), .body = col(s, 5),
		.hash = col(s, 6), .sig = col(s, 7),
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
	if ((err = prep(r, "SELECT seq, at, kind, unit_id, uid, body, hash, sig"
			" FROM events ORDER BY seq", &s)))
		goto done;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((err = check_event(&v, s)))
			goto done;
		out->events++;
		out->head_seq = sqlite3_column_int64(s, 0);
		snprintf(out->head_hash, sizeof(out->head_hash), "%s", col(s, 6));
	}
	if (rc != SQLITE_DONE) {
		err = rec_db_fail(r, ST_E_DB, "read the events");
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
	err = prep(r, "SELECT id, slot, uid, state, reason, work_order, port,"
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
			.uid = col(s, 2), .state = col(s, 3), .reason = col(s, 4),
			.work_order = col(s, 5), .port = col(s, 6),
			.station = col(s, 7), .operator_name = col(s, 8),
			.profile = col(s, 9), .profile_digest = col(s, 10),
			.cert_serial = col(s, 11), .cert_sha256 = col(s, 12),
			.cert_pem = col(s, 13), .pubkey = col(s, 14),
			.rot_hash = col(s, 15), .fuse_readback = col(s, 16),
			.started_at = col(s, 17), .finished_at = col(s, 18),
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
	err = prep(r, "SELECT seq, unit_id, at, kind, uid, body, hash, sig"
		   " FROM events WHERE (?1 = 0 OR unit_id = ?1) ORDER BY seq", &s);
	if (err)
		goto out;
	sqlite3_bind_int64(s, 1, unit_id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		rec_event_row e = {
			.seq = sqlite3_column_int64(s, 0),
			.unit_id = sqlite3_column_int64(s, 1),
			.at = col(s, 2), .kind = col(s, 3), .uid = col(s, 4),
			.body = col(s, 5), .hash = col(s, 6), .sig = col(s, 7),
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
	if ((err = prep(r, "SELECT sha256, pem FROM audit_certs ORDER BY rowid", &s)))
		goto out;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		if ((err = fn(ctx, col(s, 0), col(s, 1))))
			goto out;
	if (rc != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "list audit certificates");
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* ---- Checkpoints ---- */

int rec_head(rec_store *r, long long *seq, char hash[65])
{
	sqlite3_stmt *s = NULL;
	int rc, err;

	if (!r || !seq || !hash)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (err)
		goto out;
	if ((err = prep(r, "SELECT seq, hash FROM events ORDER BY seq DESC"
			" LIMIT 1", &s)))
		goto out;
	*seq = 0;
	memset(hash, '0', 64);
	hash[64] = '\0';
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*seq = sqlite3_column_int64(s, 0);
		snprintf(hash, 65, "%s", col(s, 1) ? col(s, 1) : "");
	} else if (rc != SQLITE_DONE) {
		err = rec_db_fail(r, ST_E_DB, "read the head of the chain");
	}
out:
	sqlite3_finalize(s);
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* Sorted keys, compact, ASCII, like the events: one text per content. */
char *rec_checkpoint_body(const char *station, long long seq,
			  const char *hash, const char *audit_sha256)
{
	char at[32], *text, *out = NULL;
	json_t *o;

	rec_now(at);
	o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:i}", "at", at,
		      "audit_cert_sha256", audit_sha256 ? audit_sha256 : "",
		      "head_hash", hash ? hash : "", "kind", "checkpoint",
		      "seq", (json_int_t)seq, "station", station ? station : "",
		      "version", 1);
	text = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS |
			      JSON_ENSURE_ASCII) : NULL;
	json_decref(o);
	if (text && asprintf(&out, "%s\n", text) < 0)
		out = NULL;
	free(text);
	return out;
}

int rec_checkpoint_parse(const char *body, rec_checkpoint *out)
{
	json_error_t je;
	json_t *o = body ? json_loads(body, JSON_REJECT_DUPLICATES, &je) : NULL;
	const char *st = json_string_value(json_object_get(o, "station"));
	const char *h = json_string_value(json_object_get(o, "head_hash"));
	const char *at = json_string_value(json_object_get(o, "at"));
	const char *k = json_string_value(json_object_get(o, "audit_cert_sha256"));
	const char *kind = json_string_value(json_object_get(o, "kind"));
	json_t *seq = json_object_get(o, "seq");
	int err = ST_E_INVAL;

	if (st && h && at && k && kind && !strcmp(kind, "checkpoint") &&
	    json_is_integer(seq) && json_integer_value(seq) >= 0 &&
	    strlen(h) == 64 && strlen(k) == 64 && strlen(st) < sizeof(out->station) &&
	    strlen(at) < sizeof(out->at)) {
		snprintf(out->station, sizeof(out->station), "%s", st);
		snprintf(out->head_hash, sizeof(out->head_hash), "%s", h);
		snprintf(out->at, sizeof(out->at), "%s", at);
		snprintf(out->audit_sha256, sizeof(out->audit_sha256), "%s", k);
		out->seq = json_integer_value(seq);
		err = ST_OK;
	}
	json_decref(o);
	return err;
}

int rec_checkpoint_check(rec_store *r, const char *body, const uint8_t *sig,
			 size_t siglen, rec_cert_check_fn check, void *ctx,
			 rec_checkpoint *out)
{
	struct rec_chain c;
	sqlite3_stmt *s = NULL;
	rec_checkpoint cp;
	EVP_MD_CTX *md = NULL;
	EVP_PKEY *pk = NULL;
	long long last = 0;
	int rc, err;

	if (!r || !body)
		return ST_E_INVAL;
	rec_chain_init(&c, r);
	err = rec_enter(r);
	if (err)
		goto out;
	if (rec_checkpoint_parse(body, &cp)) {
		err = rec_fail(r, ST_E_VERIFY, "the checkpoint is not one (its "
			       "text is not a checkpoint body)");
		goto out;
	}
	if (out)
		*out = cp;
	if ((err = prep(r, "SELECT pem FROM audit_certs WHERE sha256 = ?1", &s)))
		goto out;
	rec_bind_text(s, 1, cp.audit_sha256);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		err = rec_chain_cert(&c, cp.audit_sha256, col(s, 0), check, ctx);
	else
		err = rec_fail(r, ST_E_VERIFY, "the checkpoint of seq %lld was "
			       "signed by audit certificate %s, which this store "
			       "does not hold (a checkpoint of another store, or "
			       "a replaced store)", cp.seq, cp.audit_sha256);
	sqlite3_finalize(s);
	s = NULL;
	if (err)
		goto out;
	pk = c.certs[0].key;
	md = EVP_MD_CTX_new();
	if (!sig || !md || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pk) != 1 ||
	    EVP_DigestVerify(md, sig, siglen, (const unsigned char *)body,
			     strlen(body)) != 1) {
		err = rec_fail(r, ST_E_VERIFY, "the checkpoint's signature does "
			       "not verify under audit certificate %s (the "
			       "checkpoint or its signature was changed)",
			       cp.audit_sha256);
		goto out;
	}
	if ((err = prep(r, "SELECT (SELECT coalesce(max(seq), 0) FROM events),"
			" (SELECT hash FROM events WHERE seq = ?1)", &s)))
		goto out;
	sqlite3_bind_int64(s, 1, cp.seq);
	if (sqlite3_step(s) != SQLITE_ROW) {
		err = rec_db_fail(r, ST_E_DB, "read the chain");
		goto out;
	}
	last = sqlite3_column_int64(s, 0);
	if (last < cp.seq)
		err = rec_fail(r, ST_E_VERIFY, "the chain ends at event %lld, "
			       "but the checkpoint of %s says station %s had "
			       "%lld events (head %.16s...): events %lld..%lld "
			       "were cut off its end", last, cp.at, cp.station,
			       cp.seq, cp.head_hash, last + 1, cp.seq);
	else if (!col(s, 1) || strcmp(col(s, 1), cp.head_hash))
		err = rec_fail(r, ST_E_VERIFY, "event %lld has hash %.16s..., "
			       "but the checkpoint of %s says %.16s...: the chain "
			       "was replaced or rewritten from there on", cp.seq,
			       col(s, 1) ? col(s, 1) : "?", cp.at, cp.head_hash);
out:
	EVP_MD_CTX_free(md);
	sqlite3_finalize(s);
	rec_chain_free(&c);
	pthread_mutex_unlock(&r->lock);
	return err;
}

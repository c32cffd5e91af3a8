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
	long long starts, steps, ends;
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

/* The row an event describes must exist and say the same. */
static int check_row(struct vstate *v, long long seq, const char *kind,
		     long long unit, const char *uid, json_t *data)
{
	rec_store *r = v->c.r;
	sqlite3_stmt *s = NULL;
	const char *sql;
	int err, ok = 0;

	if (!strcmp(kind, "unit_start") || !strcmp(kind, "unit_end"))
		sql = "SELECT uid, work_order, state, reason, cert_serial,"
		      " cert_sha256, cert_pem, pubkey, rot_hash, fuse_readback,"
		      " station, operator, profile_digest"
		      " FROM units WHERE id = ?1";
	else if (!strcmp(kind, "step"))
		sql = "SELECT u.uid, s.step, s.outcome, s.detail FROM steps s"
		      " JOIN units u ON u.id = s.unit_id"
		      " WHERE s.unit_id = ?1 AND s.seq = ?2";
	else
		return ST_OK;
	if ((err = prep(r, sql, &s)))
		return err;
	sqlite3_bind_int64(s, 1, unit);
	sqlite3_bind_int64(s, 2, json_integer_value(json_object_get(data, "seq")));
	if (sqlite3_step(s) == SQLITE_ROW && uid && col(s, 0) &&
	    !strcmp(uid, col(s, 0))) {
		if (!strcmp(kind, "unit_start")) {
			v->starts++;
			ok = same(data, "work_order", col(s, 1)) &&
			     same(data, "station", col(s, 10)) &&
			     same(data, "operator", col(s, 11)) &&
			     same(data, "profile_digest", col(s, 12));
		} else if (!strcmp(kind, "unit_end")) {
			v->ends++;
			ok = same(data, "result", col(s, 2)) &&
			     same(data, "reason", col(s, 3)) &&
			     same(data, "cert_serial", col(s, 4)) &&
			     same(data, "cert_sha256", col(s, 5)) &&
			     same(data, "cert_pem", col(s, 6)) &&
			     same(data, "pubkey", col(s, 7)) &&
			     same(data, "rot_hash", col(s, 8)) &&
			     same(data, "fuse_readback", col(s, 9));
		} else {
			v->steps++;
			ok = same(data, "step", col(s, 1)) &&
			     same(data, "outcome", col(s, 2)) &&
			     same(data, "detail", col(s, 3));
		}
	}
	sqlite3_finalize(s);
	if (!ok)
		return rec_fail(r, ST_E_VERIFY, "event %lld (%s of unit %lld, "
				"device %s): the %s row is missing or differs "
				"from the signed event (modified)", seq, kind,
				unit, uid ? uid : "?",
				strcmp(kind, "step") ? "units" : "steps");
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
	if (!err)
		err = check_row(v, e.seq, e.kind, e.unit_id, e.uid,
				json_object_get(o, "data"));
	json_decref(o);
	return err;
}

/* Rows with no event: more rows than events of their kind. */
static int check_counts(struct vstate *v)
{
	rec_store *r = v->c.r;
	sqlite3_stmt *s = NULL;
	long long units = 0, steps = 0, ended = 0;
	int err;

	err = prep(r, "SELECT (SELECT count(*) FROM units),"
		   " (SELECT count(*) FROM steps),"
		   " (SELECT count(*) FROM units WHERE state <> 'RUNNING')", &s);
	if (err)
		return err;
	if (sqlite3_step(s) == SQLITE_ROW) {
		units = sqlite3_column_int64(s, 0);
		steps = sqlite3_column_int64(s, 1);
		ended = sqlite3_column_int64(s, 2);
	} else {
		err = rec_db_fail(r, ST_E_DB, "count the rows");
	}
	sqlite3_finalize(s);
	if (err)
		return err;
	v->out->units = units;
	v->out->bad_seq = 0;
	if (units != v->starts)
		return rec_fail(r, ST_E_VERIFY, "%lld unit rows but %lld "
				"unit_start events: unit rows were inserted or "
				"events removed from the end", units, v->starts);
	if (ended != v->ends)
		return rec_fail(r, ST_E_VERIFY, "%lld finished units but %lld "
				"unit_end events: a result was changed or events "
				"removed from the end", ended, v->ends);
	if (steps != v->steps)
		return rec_fail(r, ST_E_VERIFY, "%lld step rows but %lld step "
				"events: step rows were inserted or events "
				"removed from the end", steps, v->steps);
	return ST_OK;
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
	if ((err = load_certs(&v, check, check_ctx)))
		goto done;
	if ((err = prep(r, "SELECT seq, at, kind, unit_id, uid, body, hash, sig"
			" FROM events ORDER BY seq", &s)))
		goto done;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((err = check_event(&v, s)))
			goto done;
		out->events++;
	}
	if (rc != SQLITE_DONE) {
		err = rec_db_fail(r, ST_E_DB, "read the events");
		goto done;
	}
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

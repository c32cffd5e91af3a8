/* chain.c — the audit chain: appending an event (hashed, chained, signed),
 * the audit signer, station events; walking a chain (rec_chain_*, shared by
 * verify.c and the check of the central copy in pgsync); the chain's head
 * and checkpoints. */
#include "records.h"
#include "rec_int.h"

#include "base.h"

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <sqlite3.h>
#include <stdarg.h>
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

/* Equal as optional strings: a JSON string or null against a column. */
static int same(json_t *o, const char *key, const char *v)
{
	json_t *j = json_object_get(o, key);

	if (!v)
		return !j || json_is_null(j);
	return json_is_string(j) && !strcmp(json_string_value(j), v);
}

/* The body is the only thing hashed and signed: canonical JSON (jansson,
 * sorted keys, compact, \u-escaped non-ASCII), so anyone can recompute the
 * hash from the stored text alone.
 *
 * ---- One signature per commit ----
 *
 * An event appended in a group-commit batch (every write of records/ is)
 * with an audit signer set is not signed as it is appended.  Its body
 * names the audit key ("key") and the seq of the batch's first such event
 * ("batch"); right before the batch's COMMIT the writer signs the last
 * event of the chain (rec_sign_batch).  Through the "prev" links that one
 * signature covers every event before it, so it vouches for the whole
 * batch, and since a batch commits whole the stored chain always ends on
 * a signed event.  A verifier (rec_chain_event, the auditor's loop in
 * docs/evidence.md) accepts an event without a signature only when the
 * next signed event names the same key and a "batch" at or before it: an
 * unsigned event put into the chain by anyone else (between batches, or at
 * its end) is covered by no signature and fails.  What a signature per
 * event proved is still proved; what changes is that the chain can only
 * be cut at a batch boundary instead of any event, which a checkpoint or
 * the central copy detects either way (docs/records.md).  One slot makes
 * about 8 commits per unit, 64 slots about one: the HSM signs that often
 * instead of once per event (~19 per unit). */
int rec_append_event(rec_store *r, const char *kind, int64_t unit_id,
		     const char *uid, json_t *data)
{
	return rec_append_event_at(r, kind, unit_id, uid, NULL, data);
}

int rec_append_event_at(rec_store *r, const char *kind, int64_t unit_id,
			const char *uid, const char *when, json_t *data)
{
	sqlite3_stmt *s = r->stmt[S_EV_LAST];
	char at[32], prev[REC_HASH_HEX], hash[REC_HASH_HEX], sig[2 * REC_SIG_MAX + 1];
	uint8_t dig[SHA256_DIGEST_LENGTH], raw[REC_SIG_MAX];
	size_t rawlen = 0;
	json_int_t seq = 1;
	json_t *body = NULL;
	char *text = NULL;
	int rc, err, defer;

	if (!data)
		return rec_fail(r, ST_E_INVAL, "event %s%s%s: its data is not "
				"valid UTF-8 text", kind, uid ? " of device " : "",
				uid ? uid : "");
	memset(prev, '0', 64);
	prev[64] = '\0';
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		seq = sqlite3_column_int64(s, 0) + 1;
		snprintf(prev, sizeof(prev), "%s", sqlite3_column_text(s, 1));
	}
	rec_stmt_done(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		json_decref(data);
		return rec_db_fail(r, ST_E_DB, "read the end of the audit chain");
	}
	if (when)
		snprintf(at, sizeof(at), "%s", when);
	else
		rec_now(at);
	/* in a batch the writer signs the batch's last event (above) */
	defer = r->sign && r->in_batch;
	if (defer && !r->batch_first)
		r->batch_first = seq;
	body = json_pack("{s:s, s:o?, s:o, s:s?, s:s, s:s, s:I, s:s?, s:o}",
			 "at", at, "batch",
			 defer ? json_integer(r->batch_first) : NULL, "data", data,
			 "key", r->sign ? r->sign_key : NULL, "kind", kind, "prev",
			 prev, "seq", seq, "uid", uid, "unit",
			 unit_id > 0 ? json_integer(unit_id) : json_null());
	if (body)
		text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS |
				  JSON_ENSURE_ASCII);
	json_decref(body);
	if (!text)
		return rec_fail(r, ST_E_NOMEM, "event %s: cannot encode", kind);
	SHA256((const unsigned char *)text, strlen(text), dig);
	st_hex(dig, sizeof(dig), hash);
	if (r->sign && !defer) {
		r->n_sigs++;
		err = r->sign(r->sign_ctx, dig, raw, sizeof(raw), &rawlen);
		if (!err && (!rawlen || rawlen > sizeof(raw)))
			err = ST_E_CRYPTO;
		if (!err)
			st_hex(raw, rawlen, sig);
		if (err) {
			free(text);
			return rec_fail(r, err, "the audit key could not sign "
					"event %lld (%s): %s", (long long)seq,
					kind, st_strerror(err));
		}
	}
	s = r->stmt[S_EV_INS];
	err = ST_OK;
	if (sqlite3_bind_int64(s, 1, seq) || rec_bind_text(s, 2, at) ||
	    rec_bind_text(s, 3, kind) ||
	    (unit_id > 0 ? sqlite3_bind_int64(s, 4, unit_id) :
			   sqlite3_bind_null(s, 4)) ||
	    rec_bind_text(s, 5, uid) || rec_bind_text(s, 6, text) ||
	    rec_bind_text(s, 7, hash) ||
	    rec_bind_text(s, 8, r->sign && !defer ? sig : NULL) ||
	    sqlite3_step(s) != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "cannot record event %lld (%s%s%s)",
				  (long long)seq, kind, uid ? " of device " : "",
				  uid ? uid : "");
	rec_stmt_done(s);
	free(text);
	if (!err)
		r->sp_events++;
	return err;
}

int rec_sign_batch(rec_store *r)
{
	sqlite3_stmt *s = r->stmt[S_EV_LAST];
	uint8_t dig[SHA256_DIGEST_LENGTH], raw[REC_SIG_MAX];
	char sig[2 * REC_SIG_MAX + 1], hash[REC_HASH_HEX] = "";
	long long seq = 0;
	size_t rawlen = 0;
	int rc, err;

	if (!r->batch_first || !r->sign)
		return ST_OK;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		seq = sqlite3_column_int64(s, 0);
		snprintf(hash, sizeof(hash), "%s", rec_col(s, 1));
	}
	rec_stmt_done(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return rec_db_fail(r, ST_E_DB, "read the end of the audit chain "
				   "to sign it");
	if (seq < r->batch_first) {
		/* the batch's events were all rolled back */
		r->batch_first = 0;
		return ST_OK;
	}
	if (strlen(hash) != 2 * sizeof(dig) || st_unhex(hash, dig, sizeof(dig)))
		return rec_fail(r, ST_E_DB, "event %lld: its stored hash is not "
				"SHA-256 hex", seq);
	r->n_sigs++;
	err = r->sign(r->sign_ctx, dig, raw, sizeof(raw), &rawlen);
	if (!err && (!rawlen || rawlen > sizeof(raw)))
		err = ST_E_CRYPTO;
	if (err)
		return rec_fail(r, err, "the audit key could not sign events "
				"%lld..%lld: %s", r->batch_first, seq,
				st_strerror(err));
	st_hex(raw, rawlen, sig);
	s = r->stmt[S_EV_SIG];
	if (rec_bind_text(s, 1, sig) || sqlite3_bind_int64(s, 2, seq) ||
	    sqlite3_step(s) != SQLITE_DONE || sqlite3_changes(r->db) != 1)
		err = rec_db_fail(r, ST_E_DB, "cannot store the signature of "
				  "events %lld..%lld", r->batch_first, seq);
	rec_stmt_done(s);
	if (!err)
		r->batch_first = 0;
	return err;
}

/* The certificate goes into the store in its own transaction with an
 * event naming it, so the chain says when the key changed. */
int rec_set_signer(rec_store *r, rec_sign_fn fn, void *ctx,
		   const uint8_t *cert_der, size_t cert_len)
{
	const uint8_t *p = cert_der;
	uint8_t dig[SHA256_DIGEST_LENGTH];
	char fp[REC_HASH_HEX], *pem = NULL;
	struct rec_waiter w;
	X509 *x = NULL;
	BIO *b = NULL;
	sqlite3_stmt *s;
	int tried = 0;
	long n;
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_wr_enter(r, &w);
	if (err)
		goto out;
	/* the open batch's events so far are signed by the key they name */
	if (r->in_batch && (err = rec_sign_batch(r)))
		goto out;
	if (!fn) {
		r->sign = NULL;
		r->sign_ctx = NULL;
		goto out;
	}
	x = cert_der ? d2i_X509(NULL, &p, (long)cert_len) : NULL;
	b = BIO_new(BIO_s_mem());
	if (!x || !b || !PEM_write_bio_X509(b, x)) {
		err = rec_fail(r, ST_E_INVAL, "rec_set_signer: the audit "
			       "certificate does not parse");
		goto out;
	}
	n = BIO_get_mem_data(b, &pem);
	SHA256(cert_der, cert_len, dig);
	st_hex(dig, sizeof(dig), fp);
	/* committed at once, before the lock is let go, so no other write
	 * is signed by a key whose certificate might not be stored */
	w.now = 1;
	tried = 1;
	if ((err = rec_wr_txn(r, &w, "the audit certificate")))
		goto out;
	s = r->stmt[S_CERT_INS];
	rec_bind_text(s, 1, fp);
	sqlite3_bind_text(s, 2, pem, (int)n, SQLITE_TRANSIENT);
	if (sqlite3_step(s) != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "cannot store the audit certificate");
	rec_stmt_done(s);
	if (!err && sqlite3_changes(r->db) == 1) {
		r->sign = fn;
		r->sign_ctx = ctx;
		memcpy(r->sign_key, fp, sizeof(fp));
		err = rec_append_event(r, "audit_key", 0, NULL,
				       json_pack("{s:s}", "cert_sha256", fp));
	}
out:
	err = rec_wr_end(r, &w, err);
	if (err && tried) {
		r->sign = NULL;
		r->sign_ctx = NULL;
	} else if (!err && fn) {
		r->sign = fn;
		r->sign_ctx = ctx;
		memcpy(r->sign_key, fp, sizeof(fp));
	}
	X509_free(x);
	BIO_free(b);
	pthread_mutex_unlock(&r->lock);
	return err;
}

int rec_event(rec_store *r, const char *kind, const char *uid, ...)
{
	json_t *data = json_object();
	struct rec_waiter w;
	const char *k, *v;
	va_list ap;
	int err;

	if (!r || !kind || !*kind || !data) {
		json_decref(data);
		return ST_E_INVAL;
	}
	va_start(ap, uid);
	while ((k = va_arg(ap, const char *))) {
		v = va_arg(ap, const char *);
		if (json_object_set_new(data, k, v ? json_string(v) : json_null())) {
			json_decref(data);
			data = NULL;    /* reported by rec_append_event */
			break;
		}
	}
	va_end(ap);
	err = rec_wr_enter(r, &w);
	if (!err)
		err = rec_wr_txn(r, &w, "event %s", kind);
	if (!err) {
		err = rec_append_event(r, kind, 0, uid, data);
		data = NULL;
	}
	err = rec_wr_done(r, &w, err);
	json_decref(data);
	return err;
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
	unsigned char der[REC_SIG_MAX];
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

/* An event's signature, or its place in a batch that a later signature
 * covers (above, "One signature per commit"). */
static int check_cover(struct rec_chain *c, long long seq, json_t *o,
		       const char *sig, const char *body)
{
	const char *key = json_string_value(json_object_get(o, "key"));
	json_t *jb = json_object_get(o, "batch");
	long long batch = json_is_integer(jb) ? json_integer_value(jb) : 0;
	int err;

	if (key && !sig && batch >= 1 && batch <= seq &&
	    strlen(key) < sizeof(c->pend_key)) {
		if (!c->pend_from) {
			c->pend_from = seq;
			snprintf(c->pend_key, sizeof(c->pend_key), "%s", key);
		} else if (strcmp(key, c->pend_key)) {
			return rec_fail(c->r, ST_E_VERIFY, "event %lld names audit "
					"key %.16s..., the unsigned events before it "
					"%.16s...: no one signature covers them "
					"(modified)", seq, key, c->pend_key);
		}
		return ST_OK;
	}
	if ((err = check_sig(c, seq, body, key, sig)))
		return err;
	if (c->pend_from) {
		if (!batch || batch > c->pend_from || strcmp(key, c->pend_key)) {
			c->bad_seq = c->pend_from;
			return rec_fail(c->r, ST_E_VERIFY, "events %lld..%lld are "
					"not signed, and the signature of event "
					"%lld does not cover them (its batch "
					"starts at %lld): unsigned events were "
					"inserted, or a signature removed",
					c->pend_from, seq - 1, seq, batch);
		}
		c->pend_from = 0;
	}
	return ST_OK;
}

int rec_chain_end(struct rec_chain *c, long long open_from)
{
	if (!c->pend_from || (open_from > 0 && c->pend_from >= open_from))
		return ST_OK;
	c->bad_seq = c->pend_from;
	return rec_fail(c->r, ST_E_VERIFY, "events %lld..%lld at the end of the "
			"chain are not signed, and no signed event follows them: "
			"the chain's signed end was cut off, or they were added "
			"without the audit key", c->pend_from, c->expect - 1);
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
	err = check_cover(c, seq, o, e->sig && *e->sig ? e->sig : NULL, body);
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
	if ((err = rec_prep(r, "SELECT seq, hash FROM events ORDER BY seq DESC"
			    " LIMIT 1", &s)))
		goto out;
	*seq = 0;
	memset(hash, '0', 64);
	hash[64] = '\0';
	rc = sqlite3_step(s);
	if ((rc == SQLITE_ROW || rc == SQLITE_DONE) && (err = rec_read_durable(r)))
		goto out;
	if (rc == SQLITE_ROW) {
		*seq = sqlite3_column_int64(s, 0);
		snprintf(hash, 65, "%s", rec_col(s, 1) ? rec_col(s, 1) : "");
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
	if ((err = rec_prep(r, "SELECT pem FROM audit_certs WHERE sha256 = ?1", &s)))
		goto out;
	rec_bind_text(s, 1, cp.audit_sha256);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		err = rec_chain_cert(&c, cp.audit_sha256, rec_col(s, 0), check, ctx);
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
	if ((err = rec_prep(r, "SELECT (SELECT coalesce(max(seq), 0) FROM events),"
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
	else if (!rec_col(s, 1) || strcmp(rec_col(s, 1), cp.head_hash))
		err = rec_fail(r, ST_E_VERIFY, "event %lld has hash %.16s..., "
			       "but the checkpoint of %s says %.16s...: the chain "
			       "was replaced or rewritten from there on", cp.seq,
			       rec_col(s, 1) ? rec_col(s, 1) : "?", cp.at, cp.head_hash);
out:
	EVP_MD_CTX_free(md);
	sqlite3_finalize(s);
	rec_chain_free(&c);
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* crl.c — the revocation list: the certificates of re-provisioned devices
 * and of units that did not end PASS (records: revocations, each with its
 * RFC 5280 reason code) as an X.509 CRL issued by the station's CA and
 * signed in the HSM like a certificate (x509.c), for the PKI team and for
 * `openssl crl -CAfile ca.pem`.  A CRL lists only the certificates its CA
 * issued: with several CAs in the token, export one per CA. */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "station.h"
#include "station/st_int.h"
#include "station/roles.h"
#include "x509.h"

struct revoked {
	int64_t unit_id;
	char serial[80];
	char at[40];
	int reason;           /* CRLReason */
	char *pem;            /* the certificate, when on record */
};

struct collect {
	struct revoked *v;
	size_t n, cap;
};

static int collect_one(void *ctx, const rec_revoked_row *row)
{
	struct collect *c = ctx;

	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 16;
		struct revoked *v = realloc(c->v, cap * sizeof(*v));

		if (!v)
			return ST_E_NOMEM;
		c->v = v;
		c->cap = cap;
	}
	c->v[c->n].unit_id = row->unit_id;
	snprintf(c->v[c->n].serial, sizeof(c->v[c->n].serial), "%s", row->cert_serial);
	snprintf(c->v[c->n].at, sizeof(c->v[c->n].at), "%s", row->at);
	c->v[c->n].reason = row->crl_reason;
	c->v[c->n].pem = NULL;
	c->n++;
	return 0;
}

/* The PEM of each revoked certificate from its issuance record (an
 * interrupted unit's record has it only there). */
static int pem_of_issued(void *ctx, const st_issued *is)
{
	struct collect *c = ctx;

	for (size_t i = 0; is->pem && i < c->n; i++)
		if (!c->v[i].pem && !strcasecmp(c->v[i].serial, is->serial) &&
		    !(c->v[i].pem = strdup(is->pem)))
			return ST_E_NOMEM;
	return 0;
}

/* Does the PEM certificate name issuer ca? */
static int pem_issued_by(const char *pem, X509_NAME *ca)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	int match = x && !X509_NAME_cmp(X509_get_issuer_name(x), ca);

	X509_free(x);
	BIO_free(b);
	ERR_clear_error();
	return match;
}

/* The issuer of the unit's certificate (from its PEM in the records). */
struct issuer_q {
	X509_NAME *ca;
	int match;
};

static int issuer_of(void *ctx, const rec_unit_row *row)
{
	struct issuer_q *q = ctx;
	BIO *b;
	X509 *x;

	/* A record closed as interrupted keeps no PEM (its certificate was
	 * revoked by the serial its step issued): listed under every CA, a
	 * random 128-bit serial no other CA issued harms nothing. */
	if (!row->cert_pem) {
		q->match = 1;
		return 0;
	}
	b = BIO_new_mem_buf(row->cert_pem, -1);
	x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	if (x && !X509_NAME_cmp(X509_get_issuer_name(x), q->ca))
		q->match = 1;
	X509_free(x);
	BIO_free(b);
	ERR_clear_error();
	return 0;
}

/* One CRL entry: serial, revocation time (records' UTC time), the
 * recorded reason (superseded: the device got a new identity;
 * cessationOfOperation: its unit did not pass). */
static int add_entry(X509_CRL *crl, const struct revoked *r)
{
	X509_REVOKED *rv = X509_REVOKED_new();
	ASN1_INTEGER *sn = NULL;
	ASN1_TIME *t = ASN1_TIME_new();
	ASN1_ENUMERATED *why = ASN1_ENUMERATED_new();
	BIGNUM *bn = NULL;
	char gt[32];
	int ok = 0;

	/* 2026-11-25T14:33:21.123Z -> 20261125143321Z */
	snprintf(gt, sizeof(gt), "%.4s%.2s%.2s%.2s%.2s%.2sZ", r->at, r->at + 5,
		 r->at + 8, r->at + 11, r->at + 14, r->at + 17);
	if (!rv || !t || !why || !BN_hex2bn(&bn, r->serial) ||
	    !(sn = BN_to_ASN1_INTEGER(bn, NULL)) ||
	    !ASN1_TIME_set_string_X509(t, gt) ||
	    !X509_REVOKED_set_serialNumber(rv, sn) ||
	    !X509_REVOKED_set_revocationDate(rv, t) ||
	    !ASN1_ENUMERATED_set(why, r->reason) ||
	    !X509_REVOKED_add1_ext_i2d(rv, NID_crl_reason, why, 0, 0))
		goto cleanup;
	if (X509_CRL_add0_revoked(crl, rv)) {
		rv = NULL;
		ok = 1;
	}
cleanup:
	X509_REVOKED_free(rv);
	ASN1_INTEGER_free(sn);
	ASN1_TIME_free(t);
	ASN1_ENUMERATED_free(why);
	BN_free(bn);
	return ok;
}

int st_crl_export(hsm_session *s, rec_store *rec, const char *ca_label,
		  int days, const char *out, long *count, char *err,
		  size_t errlen)
{
	struct collect c = { 0 };
	st_ca_choice ca = { 0 };
	X509_CRL *crl = NULL, *signed_crl = NULL;
	ASN1_TIME *now = NULL, *next = NULL;
	hsm_obj priv;
	BIO *b = NULL;
	char *pem, tmp[4096];
	long pemlen;
	FILE *f = NULL;
	int rc;

	*count = 0;
	rc = st_ca_select(s, ca_label, 0, &ca, err, errlen);
	if (rc)
		return rc;
	if (hsm_find_privkey(s, ca.label, &priv)) {
		snprintf(err, errlen, "no key for CA '%s': %s", ca.label,
			 hsm_session_errmsg(s));
		rc = ST_E_NOTFOUND;
		goto cleanup;
	}
	rc = rec_list_revoked(rec, collect_one, &c);
	if (rc) {
		snprintf(err, errlen, "records: %s", rec_errmsg(rec));
		goto cleanup;
	}
	if (c.n && (rc = st_issued_list(rec, NULL, pem_of_issued, &c, err, errlen)))
		goto cleanup;
	rc = ST_E_CRYPTO;
	crl = X509_CRL_new();
	now = X509_gmtime_adj(NULL, 0);
	next = X509_time_adj_ex(NULL, days, 0, NULL);
	if (!crl || !now || !next || !X509_CRL_set_version(crl, X509_CRL_VERSION_2) ||
	    !X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca.cert)) ||
	    !X509_CRL_set1_lastUpdate(crl, now) || !X509_CRL_set1_nextUpdate(crl, next)) {
		snprintf(err, errlen, "cannot build the CRL");
		goto cleanup;
	}
	for (size_t i = 0; i < c.n; i++) {
		struct issuer_q q = { .ca = X509_get_subject_name(ca.cert) };
		rec_filter f1 = { .unit_id = c.v[i].unit_id };

		rc = ST_OK;
		if (c.v[i].pem)
			q.match = pem_issued_by(c.v[i].pem, q.ca);
		else
			rc = rec_list_units(rec, &f1, issuer_of, &q);
		if (rc) {
			snprintf(err, errlen, "records: %s", rec_errmsg(rec));
			goto cleanup;
		}
		rc = ST_E_CRYPTO;
		if (!q.match)
			continue;       /* another CA's certificate */
		if (!add_entry(crl, &c.v[i])) {
			snprintf(err, errlen, "cannot add serial %s to the CRL",
				 c.v[i].serial);
			goto cleanup;
		}
		(*count)++;
	}
	{
		/* the CRL number and the authority key id, as RFC 5280 asks */
		ASN1_INTEGER *num = ASN1_INTEGER_new();
		X509V3_CTX ctx;
		X509_EXTENSION *aki;
		int ok;

		ok = num && ASN1_INTEGER_set_int64(num, (int64_t)time(NULL)) &&
		     X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0);
		ASN1_INTEGER_free(num);
		X509V3_set_ctx(&ctx, ca.cert, NULL, NULL, crl, 0);
		aki = ok ? X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier,
					       "keyid:always") : NULL;
		ok = aki && X509_CRL_add_ext(crl, aki, -1);
		X509_EXTENSION_free(aki);
		if (!ok) {
			snprintf(err, errlen, "cannot add the CRL extensions");
			goto cleanup;
		}
	}
	X509_CRL_sort(crl);
	signed_crl = st_x509_crl_hsm_sign(crl, s, priv, ca.type, err, errlen);
	if (!signed_crl)
		goto cleanup;
	b = BIO_new(BIO_s_mem());
	if (!b || !PEM_write_bio_X509_CRL(b, signed_crl)) {
		snprintf(err, errlen, "cannot encode the CRL");
		goto cleanup;
	}
	pemlen = BIO_get_mem_data(b, &pem);
	snprintf(tmp, sizeof(tmp), "%s.tmp", out);
	rc = ST_E_IO;
	f = fopen(tmp, "w");
	if (!f || fwrite(pem, 1, (size_t)pemlen, f) != (size_t)pemlen ||
	    fflush(f) || fsync(fileno(f))) {
		snprintf(err, errlen, "cannot write %s", tmp);
		if (f)
			fclose(f);
		f = NULL;
		remove(tmp);
		goto cleanup;
	}
	fclose(f);
	f = NULL;
	if (rename(tmp, out)) {
		snprintf(err, errlen, "cannot rename %s to %s", tmp, out);
		remove(tmp);
		goto cleanup;
	}
	rc = ST_OK;
cleanup:
	ERR_clear_error();
	BIO_free(b);
	X509_CRL_free(crl);
	X509_CRL_free(signed_crl);
	ASN1_TIME_free(now);
	ASN1_TIME_free(next);
	X509_free(ca.cert);
	for (size_t i = 0; i < c.n; i++)
		free(c.v[i].pem);
	free(c.v);
	return rc;
}

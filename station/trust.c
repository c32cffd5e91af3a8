/* trust.c — what audit certificates are checked against (station.h,
 * st_trust): the CA certificates given in a PEM file, or those in the
 * configured token; and the check itself, the rec_cert_check_fn that
 * `records verify`, `records verify --pg` and `records export` hand the
 * records. */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>

#include "base.h"
#include "station/st_int.h"
#include "station/x509.h"

struct st_trust {
	STACK_OF(X509) *cas;
	char what[300];
};

void st_trust_free(st_trust *t)
{
	if (!t)
		return;
	sk_X509_pop_free(t->cas, X509_free);
	free(t);
}

const char *st_trust_what(const st_trust *t)
{
	return t->what;
}

/* Every certificate in the PEM file path. */
static int read_certs(const char *path, STACK_OF(X509) *out)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	if (!f)
		return -1;
	while ((x = PEM_read_X509(f, NULL, NULL, NULL)))
		if (!sk_X509_push(out, x))
			X509_free(x);
	fclose(f);
	ERR_clear_error();
	return sk_X509_num(out) ? 0 : -1;
}

/* The token's CA certificates: public objects, read without logging in
 * first; some tokens show them only to a logged-in user, so then the
 * station logs in (login) and they are read again. */
static int token_cas(st_station *st, int (*login)(void *ctx), void *ctx,
		     st_trust *t, char *err, size_t errlen)
{
	const st_config *cfg = st_station_config(st);
	char why[512] = "";
	hsm_session *s = NULL;
	hsm *own = NULL, *h = NULL;
	int rc = ST_OK;

	for (int round = 0; round < 2 && !sk_X509_num(t->cas); round++) {
		STACK_OF(X509) *cas = NULL;

		if (round == 1) {
			if (!login)
				break;
			hsm_close(own);
			own = NULL;
			if (login(ctx)) {
				err[0] = '\0';
				rc = ST_E_PIN;
				goto cleanup;
			}
			h = st_station_hsm(st);
		} else if (st_hsm_open(cfg, &own, why, sizeof(why))) {
			snprintf(err, errlen, "cannot reach token '%s' to read the CA "
				 "certificates the audit certificates must chain to "
				 "(%s): pass the CA certificate with --ca-cert FILE",
				 cfg->token_label, why);
			rc = ST_E_NOTOKEN;
			goto cleanup;
		} else {
			h = own;
		}
		if (hsm_session_open(h, &s) || st_x509_token_cas(s, &cas)) {
			snprintf(err, errlen, "cannot read the CA certificates in token "
				 "'%s' (%s): pass the CA certificate with --ca-cert FILE",
				 cfg->token_label,
				 s ? hsm_session_errmsg(s) : hsm_errmsg(h));
			sk_X509_pop_free(cas, X509_free);
			rc = ST_E_HSM;
			goto cleanup;
		}
		hsm_session_close(s);
		s = NULL;
		sk_X509_pop_free(t->cas, X509_free);
		t->cas = cas;
	}
	if (!sk_X509_num(t->cas)) {
		snprintf(err, errlen, "token '%s' holds no CA certificate to check the "
			 "audit certificates against: pass the CA certificate with "
			 "--ca-cert FILE", cfg->token_label);
		rc = ST_E_NOTFOUND;
	}
	snprintf(t->what, sizeof(t->what), "the CA certificate%s in token '%s'",
		 sk_X509_num(t->cas) == 1 ? "" : "s", cfg->token_label);
cleanup:
	hsm_session_close(s);
	hsm_close(own);
	return rc;
}

int st_trust_open(st_station *st, const char *ca_cert, int (*login)(void *ctx),
		  void *ctx, st_trust **out, char *err, size_t errlen)
{
	st_trust *t = calloc(1, sizeof(*t));
	int rc;

	*out = NULL;
	if (!t || !(t->cas = sk_X509_new_null())) {
		free(t);
		snprintf(err, errlen, "out of memory");
		return ST_E_NOMEM;
	}
	if (ca_cert) {
		if (read_certs(ca_cert, t->cas)) {
			st_trust_free(t);
			snprintf(err, errlen, "cannot read the CA certificate %s", ca_cert);
			return ST_E_IO;
		}
		snprintf(t->what, sizeof(t->what), "the CA given with --ca-cert");
		*out = t;
		return ST_OK;
	}
	rc = token_cas(st, login, ctx, t, err, errlen);
	if (rc) {
		st_trust_free(t);
		return rc;
	}
	*out = t;
	return ST_OK;
}

int st_trust_check_audit(void *ctx, const char *pem, char *why, size_t len)
{
	st_trust *t = ctx;
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	char reason[300] = "";
	int rc;

	BIO_free(b);
	if (!x) {
		snprintf(why, len, "it does not parse");
		return -1;
	}
	rc = st_x509_audit_check(x, t->cas, reason, sizeof(reason));
	X509_free(x);
	ERR_clear_error();
	if (rc == ST_AUDIT_CERT_OK)
		return 0;
	if (rc == ST_AUDIT_CERT_BAD)
		snprintf(why, len, "%s (checked against %s)", reason, t->what);
	else
		snprintf(why, len, "%s", reason);
	return rc == ST_AUDIT_CERT_OLD ? REC_CERT_SUPERSEDED : -1;
}

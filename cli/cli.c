/* cli.c — what the station's commands share (see cli.h). */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "base.h"
#include "cli/cli.h"
#include "station/x509.h"

int st_say(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("station: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

int st_cli_open_store(const st_config *cfg, rec_store **r)
{
	int rc = rec_open(cfg->records_path, r);

	if (rc)
		return st_say(ST_EXIT_RECORDS, "records: cannot open %s: %s",
			      cfg->records_path, *r ? rec_errmsg(*r) : st_strerror(rc));
	return 0;
}

struct st_cli_trust {
	STACK_OF(X509) *cas;
	char what[300];
};

void st_cli_trust_free(st_cli_trust *t)
{
	if (!t)
		return;
	sk_X509_pop_free(t->cas, X509_free);
	free(t);
}

const char *st_cli_trust_what(const st_cli_trust *t)
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
 * first; some tokens show them only to a logged-in user. */
static int token_cas(const st_config *cfg, int (*login)(void *ctx, hsm **out),
		     void *ctx, st_cli_trust *t)
{
	char err[512] = "";
	hsm_session *s = NULL;
	hsm *h = NULL;
	int code = 0;

	for (int round = 0; round < 2 && !sk_X509_num(t->cas); round++) {
		STACK_OF(X509) *cas = NULL;

		if (round == 1) {
			if (!login)
				break;
			hsm_close(h);
			h = NULL;
			code = login(ctx, &h);
			if (code)
				goto cleanup;
		} else if (st_hsm_open(cfg, &h, err, sizeof(err))) {
			code = st_say(ST_EXIT_HSM, "verify: cannot reach token '%s' to "
				      "read the CA certificates the audit certificates must "
				      "chain to (%s): pass the CA certificate with --ca-cert "
				      "FILE", cfg->token_label, err);
			goto cleanup;
		}
		if (hsm_session_open(h, &s) || st_x509_token_cas(s, &cas)) {
			code = st_say(ST_EXIT_HSM, "verify: cannot read the CA "
				      "certificates in token '%s' (%s): pass the CA "
				      "certificate with --ca-cert FILE", cfg->token_label,
				      s ? hsm_session_errmsg(s) : hsm_errmsg(h));
			sk_X509_pop_free(cas, X509_free);
			goto cleanup;
		}
		hsm_session_close(s);
		s = NULL;
		sk_X509_pop_free(t->cas, X509_free);
		t->cas = cas;
	}
	if (!sk_X509_num(t->cas))
		code = st_say(ST_EXIT_HSM, "verify: token '%s' holds no CA certificate "
			      "to check the audit certificates against: pass the CA "
			      "certificate with --ca-cert FILE", cfg->token_label);
	snprintf(t->what, sizeof(t->what), "the CA certificate%s in token '%s'",
		 sk_X509_num(t->cas) == 1 ? "" : "s", cfg->token_label);
cleanup:
	hsm_session_close(s);
	hsm_close(h);
	return code;
}

int st_cli_trust_open(const st_config *cfg, const char *ca_cert,
		      int (*login)(void *ctx, hsm **out), void *ctx,
		      st_cli_trust **out)
{
	st_cli_trust *t = calloc(1, sizeof(*t));
	int code;

	*out = NULL;
	if (!t || !(t->cas = sk_X509_new_null())) {
		free(t);
		return st_say(ST_EXIT_RECORDS, "out of memory");
	}
	if (ca_cert) {
		if (read_certs(ca_cert, t->cas)) {
			st_cli_trust_free(t);
			return st_say(ST_EXIT_USAGE, "verify: cannot read the CA "
				      "certificate %s", ca_cert);
		}
		snprintf(t->what, sizeof(t->what), "the CA given with --ca-cert");
		*out = t;
		return 0;
	}
	code = token_cas(cfg, login, ctx, t);
	if (code) {
		st_cli_trust_free(t);
		return code;
	}
	*out = t;
	return 0;
}

int st_cli_check_audit(void *ctx, const char *pem, char *why, size_t len)
{
	st_cli_trust *t = ctx;
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

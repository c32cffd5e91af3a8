/* ca_select.c — issuing CAs in the token, looked at: `ca show`, and the
 * choice of the CA a run issues from (the configured one, or the newest
 * valid one).  Making and importing CAs: ca.c. */
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "station/st_int.h"
#include "station.h"
#include "x509.h"
#include "station/ca_int.h"

#define CA_MAX_CHAIN 8

/* Whether x is valid now; why not in why. */
static int validity(X509 *x, char *why, size_t len)
{
	if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
		snprintf(why, len, "expired");
		return ST_E_VERIFY;
	}
	if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
		snprintf(why, len, "not valid yet");
		return ST_E_VERIFY;
	}
	snprintf(why, len, "valid");
	return ST_OK;
}

static int days_left(X509 *x)
{
	int days = 0, secs = 0;

	ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x));
	return days;
}

/* Labels of the issuing CAs: private keys in the token (device keys are
 * session objects of other sessions and never show here).  with_cert
 * keeps only those that also have a certificate (chain certificates have
 * no key, so they never count). */
static int ca_labels(hsm_session *s, bool with_cert, char ***out, size_t *n)
{
	char **labels = NULL;
	size_t cnt = 0, k = 0;
	int rc = hsm_list_labels(s, true, &labels, &cnt);

	if (rc)
		return rc;
	for (size_t i = 0; i < cnt; i++) {
		uint8_t *der = NULL;
		size_t len;

		if (!with_cert || hsm_cert_load(s, labels[i], &der, &len) == ST_OK)
			labels[k++] = labels[i];
		else
			free(labels[i]);
		free(der);
	}
	*out = labels;
	*n = k;
	return ST_OK;
}

/* One CA, as `ca show` prints it. */
static void show_one(hsm_session *s, const char *label, FILE *f)
{
	char fp[65], serial[80], why[32], *subj = NULL, *iss = NULL;
	hsm_keytype t = 0;
	X509 *x = NULL;
	int chain = 0;

	if (st_ca_load_cert(s, label, &x)) {
		EVP_PKEY *pub = NULL;

		if (!st_ca_token_pubkey(s, label, &pub, &t))
			EVP_PKEY_free(pub);
		fprintf(f, "label:       %s\nkey:         %s (in the HSM)\nstatus:      "
			"NO CERTIFICATE (pending: import the signed certificate with "
			"'station ca import')\n\n", label, t ? hsm_keytype_name(t) : "?");
		return;
	}
	for (int i = 1; i <= CA_MAX_CHAIN; i++) {
		char cl[160];
		uint8_t *der = NULL;
		size_t len;

		snprintf(cl, sizeof(cl), "%s.chain%d", label, i);
		if (hsm_cert_load(s, cl, &der, &len))
			break;
		free(der);
		chain++;
	}
	subj = X509_NAME_oneline(X509_get_subject_name(x), NULL, 0);
	iss = X509_NAME_oneline(X509_get_issuer_name(x), NULL, 0);
	st_x509_fingerprint(x, fp);
	st_x509_serial_hex(x, serial, sizeof(serial));
	if (st_ca_key_matches(s, label, x, &t))
		snprintf(why, sizeof(why), "KEY MISMATCH");
	else
		validity(x, why, sizeof(why));
	fprintf(f, "label:       %s\nsubject:     %s\nissuer:      %s\nserial:      %s\n"
		"key:         %s (in the HSM)\nnot before:  ", label, subj ? subj : "?",
		iss ? iss : "?", serial, t ? hsm_keytype_name(t) : "?");
	{
		BIO *b = BIO_new_fp(f, BIO_NOCLOSE);

		ASN1_TIME_print(b, X509_get0_notBefore(x));
		BIO_printf(b, "\nnot after:   ");
		ASN1_TIME_print(b, X509_get0_notAfter(x));
		BIO_free(b);
	}
	fprintf(f, "\ndays left:   %d\nstatus:      %s\nchain:       %d certificate%s%s\n"
		"sha256:      %s\n\n", days_left(x), why, chain, chain == 1 ? "" : "s",
		st_ca_self_signed(x) ? " (self-signed)" : "", fp);
	OPENSSL_free(subj);
	OPENSSL_free(iss);
	X509_free(x);
	ERR_clear_error();
}

int st_ca_show(hsm_session *s, const char *label, void *file,
	       char *err, size_t errlen)
{
	FILE *f = file;
	char **labels = NULL;
	size_t n = 0;
	hsm_obj priv;
	int rc;

	if (label) {
		if (hsm_find_privkey(s, label, &priv)) {
			snprintf(err, errlen, "no CA labelled '%s' in the token: %s", label,
				 hsm_session_errmsg(s));
			return ST_E_NOTFOUND;
		}
		show_one(s, label, f);
		return ST_OK;
	}
	rc = ca_labels(s, false, &labels, &n);
	if (rc) {
		snprintf(err, errlen, "cannot list the token's keys: %s",
			 hsm_session_errmsg(s));
		return rc;
	}
	if (!n) {
		snprintf(err, errlen, "no issuing CA in the token: run 'station ca init' "
			 "(lab) or 'ca csr' and 'ca import'");
		rc = ST_E_NOTFOUND;
	}
	for (size_t i = 0; i < n; i++)
		show_one(s, labels[i], f);
	hsm_labels_free(labels, n);
	return rc;
}

/* Check one candidate; why gets the reason it cannot issue. */
static int usable(hsm_session *s, const char *label, X509 **x, hsm_keytype *t,
		  char *why, size_t len)
{
	int rc = st_ca_load_cert(s, label, x);

	if (rc) {
		snprintf(why, len, "no certificate (%s)", hsm_session_errmsg(s));
		return rc;
	}
	rc = st_ca_key_matches(s, label, *x, t);
	if (rc == ST_E_VERIFY) {
		snprintf(why, len, "its certificate does not match its key in the token");
		return rc;
	}
	if (rc) {
		snprintf(why, len, "its key cannot be read (%s)", hsm_session_errmsg(s));
		return rc;
	}
	rc = validity(*x, why, len);
	if (rc == ST_OK && X509_check_ca(*x) < 1) {
		snprintf(why, len, "its certificate is not a CA certificate");
		rc = ST_E_VERIFY;
	}
	if (rc == ST_E_VERIFY && !strcmp(why, "expired"))
		snprintf(why, len, "its certificate has expired: renew the issuing CA "
			 "('station ca csr' + 'ca import') before provisioning");
	else if (rc == ST_E_VERIFY && !strcmp(why, "not valid yet"))
		snprintf(why, len, "its certificate is not valid yet: check the station "
			 "clock, or wait for the successor's start date");
	return rc;
}

int st_ca_select(hsm_session *s, const char *label, int renew_days,
		 st_ca_choice *out, char *err, size_t errlen)
{
	char **labels = NULL, why[256];
	size_t n = 0, used = 0;
	X509 *best = NULL;
	int rc, bi = -1;

	memset(out, 0, sizeof(*out));
	if (label) {
		hsm_obj priv;

		if (hsm_find_privkey(s, label, &priv)) {
			snprintf(err, errlen, "no issuing CA '%s' in the token (%s); run "
				 "'station ca init' first", label, hsm_session_errmsg(s));
			return ST_E_NOTFOUND;
		}
		rc = usable(s, label, &best, &out->type, why, sizeof(why));
		if (rc) {
			snprintf(err, errlen, "the CA certificate '%s' cannot issue: %s",
				 label, why);
			X509_free(best);
			return rc;
		}
		snprintf(out->label, sizeof(out->label), "%s", label);
		goto found;
	}
	rc = ca_labels(s, true, &labels, &n);
	if (rc) {
		snprintf(err, errlen, "cannot list the token's CAs: %s", hsm_session_errmsg(s));
		return rc;
	}
	if (!n) {
		snprintf(err, errlen, "no issuing CA in the token: run 'station ca init' "
			 "(lab) or 'ca csr' and 'ca import'");
		rc = ST_E_NOTFOUND;
		goto cleanup;
	}
	used = (size_t)snprintf(err, errlen, "no issuing CA in the token can issue:");
	for (size_t i = 0; i < n; i++) {
		X509 *x = NULL;
		hsm_keytype t;

		if (usable(s, labels[i], &x, &t, why, sizeof(why))) {
			if (used < errlen)
				used += (size_t)snprintf(err + used, errlen - used, " '%s': %s;",
							 labels[i], why);
			X509_free(x);
			continue;
		}
		/* Rollover: the newest valid CA wins; ties go to the longer-lived. */
		if (!best || ASN1_TIME_compare(X509_get0_notBefore(x),
					       X509_get0_notBefore(best)) > 0 ||
		    (!ASN1_TIME_compare(X509_get0_notBefore(x), X509_get0_notBefore(best)) &&
		     ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(best)) > 0)) {
			X509_free(best);
			best = x;
			bi = (int)i;
			out->type = t;
		} else {
			X509_free(x);
		}
	}
	if (!best) {
		rc = ST_E_VERIFY;
		goto cleanup;
	}
	snprintf(out->label, sizeof(out->label), "%s", labels[bi]);
found:
	err[0] = '\0';
	out->cert = best;
	out->days_left = days_left(best);
	if (renew_days > 0 && out->days_left < renew_days)
		snprintf(out->warning, sizeof(out->warning), "issuing CA '%s' expires in "
			 "%d days (renewal window %d days): make its successor now "
			 "('station ca csr --ca-key NEW', then 'ca import')", out->label,
			 out->days_left, renew_days);
	rc = ST_OK;
cleanup:
	hsm_labels_free(labels, n);
	ERR_clear_error();
	return rc;
}

int st_ca_info(hsm *h, const char *label, char *subject, size_t sublen,
	       int *days_left, char *err, size_t errlen)
{
	hsm_session *s = NULL;
	st_ca_choice ca = { 0 };
	int rc, n;

	*days_left = 0;
	rc = hsm_session_open(h, &s);
	if (rc) {
		snprintf(err, errlen, "cannot open an HSM session: %s", hsm_errmsg(h));
		return rc;
	}
	/* The same choice as a run makes (label, or the newest valid CA). */
	rc = st_ca_select(s, label, 0, &ca, err, errlen);
	hsm_session_close(s);
	if (rc)
		return rc;
	n = X509_NAME_get_text_by_NID(X509_get_subject_name(ca.cert), NID_commonName,
				      subject, (int)sublen);
	if (n < 0)
		X509_NAME_oneline(X509_get_subject_name(ca.cert), subject, (int)sublen);
	*days_left = ca.days_left;
	X509_free(ca.cert);
	return ST_OK;
}

/* ca.c — issuing CA bootstrap and inspection.  The CA private key is made
 * inside the token and never leaves it; only its certificate is exported. */
#include <fcntl.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "station.h"
#include "x509.h"

/* Write the certificate as PEM to path, replacing it atomically. */
static int write_pem(X509 *x, const char *path, char *err, size_t errlen)
{
	char tmp[4096];
	FILE *f = NULL;
	int fd, rc = ST_E_IO;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0644);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		snprintf(err, errlen, "cannot write %s", tmp);
		if (fd >= 0)
			close(fd);
		return ST_E_IO;
	}
	if (PEM_write_X509(f, x) && fflush(f) == 0 && fsync(fileno(f)) == 0)
		rc = ST_OK;
	if (fclose(f) != 0)
		rc = ST_E_IO;
	if (rc == ST_OK && rename(tmp, path) != 0)
		rc = ST_E_IO;
	if (rc) {
		unlink(tmp);
		snprintf(err, errlen, "cannot write %s", path);
	}
	return rc;
}

int st_ca_init(hsm_session *s, const char *label, const char *subject_cn,
	       const char *org, int days, const char *pem_path,
	       char *err, size_t errlen)
{
	uint8_t point[HSM_P256_POINT_LEN], serial[ST_CERT_SERIAL_LEN];
	uint8_t *der = NULL;
	EVP_PKEY *pub = NULL;
	X509 *tmpl = NULL, *cert = NULL;
	hsm_obj priv;
	int rc, len;

	rc = hsm_keygen_p256(s, label, true, point, &priv);
	if (rc) {
		if (rc == ST_E_EXISTS)
			snprintf(err, errlen, "a CA key labelled '%s' already exists in the token; "
				 "choose another label or use the existing CA", label);
		else
			snprintf(err, errlen, "CA key generation failed: %s",
				 hsm_session_errmsg(s));
		goto cleanup;
	}
	rc = ST_E_CRYPTO;
	pub = st_p256_pubkey(point);
	if (!pub || st_x509_random_serial(s, serial) ||
	    !(tmpl = st_x509_ca_template(pub, subject_cn, org, days, serial))) {
		snprintf(err, errlen, "cannot build the CA certificate");
		goto cleanup;
	}
	cert = st_x509_hsm_sign(tmpl, s, priv, err, errlen);
	if (!cert)
		goto cleanup;
	if (X509_verify(cert, pub) != 1) {
		snprintf(err, errlen, "the HSM's CA signature does not verify");
		rc = ST_E_VERIFY;
		goto cleanup;
	}
	len = i2d_X509(cert, &der);
	if (len <= 0)
		goto cleanup;
	rc = hsm_cert_store(s, label, der, (size_t)len);
	if (rc) {
		snprintf(err, errlen, "cannot store the CA certificate in the token: %s",
			 hsm_session_errmsg(s));
		goto cleanup;
	}
	rc = pem_path ? write_pem(cert, pem_path, err, errlen) : ST_OK;
cleanup:
	OPENSSL_free(der);
	X509_free(tmpl);
	X509_free(cert);
	EVP_PKEY_free(pub);
	return rc;
}

int st_ca_show(hsm_session *s, const char *label, void *file,
	       char *err, size_t errlen)
{
	FILE *f = file;
	uint8_t *der = NULL;
	const uint8_t *p;
	size_t len = 0;
	X509 *x = NULL;
	char fp[65], serial[80], *subj = NULL;
	int rc, days = 0, secs = 0;

	rc = hsm_cert_load(s, label, &der, &len);
	if (rc) {
		snprintf(err, errlen, "no CA certificate labelled '%s' in the token: %s",
			 label, hsm_session_errmsg(s));
		goto cleanup;
	}
	p = der;
	x = d2i_X509(NULL, &p, (long)len);
	if (!x) {
		snprintf(err, errlen, "the CA certificate '%s' does not parse", label);
		rc = ST_E_CRYPTO;
		goto cleanup;
	}
	subj = X509_NAME_oneline(X509_get_subject_name(x), NULL, 0);
	st_x509_fingerprint(x, fp);
	st_x509_serial_hex(x, serial, sizeof(serial));
	ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x));
	fprintf(f, "label:       %s\nsubject:     %s\nserial:      %s\n"
		"key:         EC P-256 (in the HSM)\nnot before:  ",
		label, subj ? subj : "?", serial);
	{
		BIO *b = BIO_new_fp(f, BIO_NOCLOSE);

		ASN1_TIME_print(b, X509_get0_notBefore(x));
		BIO_printf(b, "\nnot after:   ");
		ASN1_TIME_print(b, X509_get0_notAfter(x));
		BIO_free(b);
	}
	fprintf(f, "\ndays left:   %d\nsha256:      %s\n", days, fp);
cleanup:
	OPENSSL_free(subj);
	X509_free(x);
	free(der);
	return rc;
}

int st_ca_info(hsm *h, const char *label, char *subject, size_t sublen,
	       int *days_left, char *err, size_t errlen)
{
	hsm_session *s = NULL;
	uint8_t *der = NULL;
	const uint8_t *p;
	size_t len = 0;
	X509 *x = NULL;
	int rc, secs = 0, n;

	*days_left = 0;
	rc = hsm_session_open(h, &s);
	if (rc) {
		snprintf(err, errlen, "cannot open an HSM session: %s", hsm_errmsg(h));
		goto cleanup;
	}
	rc = hsm_cert_load(s, label, &der, &len);
	if (rc) {
		snprintf(err, errlen, "no CA certificate labelled '%s' in the token: %s",
			 label, hsm_session_errmsg(s));
		goto cleanup;
	}
	p = der;
	x = d2i_X509(NULL, &p, (long)len);
	if (!x) {
		snprintf(err, errlen, "the CA certificate '%s' does not parse", label);
		rc = ST_E_CRYPTO;
		goto cleanup;
	}
	n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName,
				      subject, (int)sublen);
	if (n < 0)
		X509_NAME_oneline(X509_get_subject_name(x), subject, (int)sublen);
	ASN1_TIME_diff(days_left, &secs, NULL, X509_get0_notAfter(x));
cleanup:
	X509_free(x);
	free(der);
	hsm_session_close(s);
	return rc;
}

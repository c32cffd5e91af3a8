/* audit.c — the station's audit key: an EC P-256 key in the HSM whose
 * certificate is issued by the station's CA, and the signer the records
 * call for every event (records/ never calls hsm/: the engine hands it
 * st_audit_sign).  The key is made by `station audit init`, or on the
 * first provisioning run when missing. */
#include <fcntl.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "station.h"
#include "x509.h"

struct st_audit {
	hsm_session *s;         /* used only under the records' lock */
	hsm_obj priv;
	uint8_t *der;           /* the audit certificate */
	size_t len;
};

/* The HSM key type of a CA's public key, so the HSM signs with the right
 * mechanism; non-zero for a key type the station does not use. */
static int keytype_of(EVP_PKEY *k, hsm_keytype *t)
{
	switch (EVP_PKEY_get_base_id(k)) {
	case EVP_PKEY_EC:
		*t = EVP_PKEY_get_bits(k) == 384 ? HSM_KEY_P384 : HSM_KEY_P256;
		return EVP_PKEY_get_bits(k) == 256 || EVP_PKEY_get_bits(k) == 384 ? 0 : -1;
	case EVP_PKEY_RSA:
		*t = HSM_KEY_RSA3072;
		return 0;
	case EVP_PKEY_ED25519:
		*t = HSM_KEY_ED25519;
		return 0;
	default:
		return -1;
	}
}

/* Issue the audit certificate for pub from the CA in the token. */
static X509 *issue(hsm_session *s, const char *ca_label, EVP_PKEY *pub,
		   const char *station_id, char *err, size_t errlen)
{
	uint8_t *der = NULL, serial[ST_CERT_SERIAL_LEN];
	const uint8_t *p;
	size_t len = 0;
	char cn[128];
	hsm_obj ca_priv;
	X509 *ca = NULL, *tmpl = NULL, *cert = NULL;
	struct st_cert_profile cp = { .org = "station audit", .validity_days = 3650,
				      .key_usage = "critical,digitalSignature" };
	st_subject_vars vars;
	hsm_keytype ca_type;

	if (hsm_cert_load(s, ca_label, &der, &len) ||
	    hsm_find_privkey(s, ca_label, &ca_priv)) {
		snprintf(err, errlen, "no issuing CA '%s' in the token to certify "
			 "the audit key (%s); run 'station ca init' first", ca_label,
			 hsm_session_errmsg(s));
		goto cleanup;
	}
	p = der;
	ca = d2i_X509(NULL, &p, (long)len);
	snprintf(cn, sizeof(cn), "audit %s", station_id);
	vars = (st_subject_vars){ .uid = cn, .serial = cn, .product = "station audit",
				  .model = "" };
	if (!ca || keytype_of(X509_get0_pubkey(ca), &ca_type)) {
		snprintf(err, errlen, "the CA certificate '%s' does not parse or has "
			 "an unsupported key type", ca_label);
		goto cleanup;
	}
	/* It signs records, not TLS handshakes: no extendedKeyUsage. */
	if (st_x509_random_serial(s, serial) ||
	    !(tmpl = st_x509_device_template(pub, ca, &cp, &vars, (const uint8_t *)cn,
					     strlen(cn), serial, err, errlen))) {
		if (!err[0])
			snprintf(err, errlen, "cannot build the audit certificate");
		goto cleanup;
	}
	cert = st_x509_hsm_sign(tmpl, s, ca_priv, ca_type, err, errlen);
cleanup:
	free(der);
	X509_free(ca);
	X509_free(tmpl);
	return cert;
}

int st_audit_init(hsm_session *s, const char *ca_label, const char *label,
		  const char *station_id, const char *pem_path,
		  char *err, size_t errlen)
{
	uint8_t point[HSM_P256_POINT_LEN], *der = NULL;
	EVP_PKEY *pub = NULL;
	X509 *cert = NULL;
	hsm_obj priv;
	int rc, len;

	rc = hsm_keygen_p256(s, label, true, point, &priv);
	if (rc) {
		if (rc == ST_E_EXISTS)
			snprintf(err, errlen, "an audit key labelled '%s' already "
				 "exists in the token", label);
		else
			snprintf(err, errlen, "audit key generation failed: %s",
				 hsm_session_errmsg(s));
		return rc;
	}
	rc = ST_E_CRYPTO;
	pub = st_p256_pubkey(point);
	if (!pub || !(cert = issue(s, ca_label, pub, station_id, err, errlen)))
		goto cleanup;
	len = i2d_X509(cert, &der);
	if (len <= 0)
		goto cleanup;
	rc = hsm_cert_store(s, label, der, (size_t)len);
	if (rc) {
		snprintf(err, errlen, "cannot store the audit certificate in the "
			 "token: %s", hsm_session_errmsg(s));
		goto cleanup;
	}
	rc = pem_path ? st_write_pem(pem_path, cert, NULL, err, errlen) : ST_OK;
cleanup:
	OPENSSL_free(der);
	X509_free(cert);
	EVP_PKEY_free(pub);
	return rc;
}

int st_audit_open(hsm *h, const char *ca_label, const char *label,
		  const char *station_id, st_audit **out, char *err,
		  size_t errlen)
{
	st_audit *a = calloc(1, sizeof(*a));
	int rc;

	*out = NULL;
	if (!a)
		return ST_E_NOMEM;
	rc = hsm_session_open(h, &a->s);
	if (rc) {
		snprintf(err, errlen, "cannot open an HSM session for the audit "
			 "key: %s", hsm_errmsg(h));
		goto fail;
	}
	rc = hsm_find_privkey(a->s, label, &a->priv);
	if (rc == ST_E_NOTFOUND) {
		/* first use: make it, so no run is ever unsigned */
		rc = st_audit_init(a->s, ca_label, label, station_id, NULL, err,
				   errlen);
		if (!rc)
			rc = hsm_find_privkey(a->s, label, &a->priv);
	}
	if (rc) {
		if (!err[0])
			snprintf(err, errlen, "audit key '%s': %s", label,
				 hsm_session_errmsg(a->s));
		goto fail;
	}
	rc = hsm_cert_load(a->s, label, &a->der, &a->len);
	if (rc) {
		snprintf(err, errlen, "the audit key '%s' has no certificate in "
			 "the token: %s", label, hsm_session_errmsg(a->s));
		goto fail;
	}
	*out = a;
	return ST_OK;
fail:
	st_audit_close(a);
	return rc;
}

const uint8_t *st_audit_cert(const st_audit *a, size_t *len)
{
	*len = a->len;
	return a->der;
}

int st_audit_sign(void *ctx, const uint8_t digest[32], uint8_t sig[64])
{
	st_audit *a = ctx;
	size_t n = HSM_P256_SIG_LEN;
	int rc = hsm_sign_digest(a->s, a->priv, digest, 32, sig, &n);

	return rc ? rc : n == HSM_P256_SIG_LEN ? ST_OK : ST_E_HSM;
}

void st_audit_close(st_audit *a)
{
	if (!a)
		return;
	hsm_session_close(a->s);
	free(a->der);
	free(a);
}

int st_audit_attach(hsm *h, rec_store *rec, const st_config *cfg,
		    st_audit **out, char *err, size_t errlen)
{
	const uint8_t *der;
	st_audit *a = NULL;
	size_t len;
	int rc;

	*out = NULL;
	rc = st_audit_open(h, cfg->ca_label ? cfg->ca_label : "issuing-ca",
			   ST_AUDIT_LABEL, cfg->station_id, &a, err, errlen);
	if (rc)
		return rc;
	der = st_audit_cert(a, &len);
	rc = rec_set_signer(rec, st_audit_sign, a, der, len);
	if (rc) {
		snprintf(err, errlen, "records: %s", rec_errmsg(rec));
		st_audit_close(a);
		return rc;
	}
	*out = a;
	return ST_OK;
}

void st_audit_detach(rec_store *rec, st_audit *a)
{
	if (!a)
		return;
	rec_set_signer(rec, NULL, NULL, NULL, 0);
	st_audit_close(a);
}

/* audit.c — the station's audit key: a key in the HSM (EC P-256 where the
 * token offers it, else RSA-3072: the token decides, not the station) whose
 * certificate is issued by the station's CA with the audit
 * extendedKeyUsage (ST_AUDIT_EKU_OID, which no device certificate can
 * carry), and the signer the records call for every event (records/ never
 * calls hsm/: the engine hands it st_audit_sign).
 *
 * Opening the key brings the token into a usable state first, whatever an
 * interrupted `audit init` or first start left (docs/records.md, "The
 * audit certificate"): nothing → a new key; a key pair without its
 * certificate → the key is certified (it never signed under another
 * certificate that is lost: an old certificate of a re-certified key stays
 * in the records); half a key pair without certificate → removed and made
 * again (it cannot have signed anything); a certificate without the audit
 * extendedKeyUsage (made before it existed), or no longer issued by a CA
 * in the token → the same key is certified again.  What was repaired is
 * recorded as a signed event by st_audit_use(). */
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "station/st_int.h"
#include "station.h"
#include "x509.h"

struct st_audit {
	hsm *h;
	hsm_session *s;         /* used only under the records' lock */
	hsm_obj priv;
	hsm_keytype type;       /* what priv is, so it signs with its mechanism */
	uint8_t *der;           /* the audit certificate */
	size_t len;
	bool created;           /* the key was made by this open */
	char label[128];        /* of the key pair and certificate */
	char repair[512];       /* what this open repaired ("": nothing) */
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
	/* The device template without a profile EKU, then the audit EKU that
	 * only this certificate carries (no TLS usage). */
	if (st_x509_random_serial(s, serial) ||
	    !(tmpl = st_x509_device_template(pub, ca, &cp, &vars, (const uint8_t *)cn,
					     strlen(cn), serial, err, errlen)) ||
	    !st_x509_add_audit_eku(tmpl)) {
		if (!err[0])
			snprintf(err, errlen, "cannot build the audit certificate");
		goto cleanup;
	}
	cert = st_x509_hsm_sign(tmpl, s, ca_priv, ca_type, err, errlen);
cleanup:
	free(der);
	X509_free(ca);
	X509_free(tmpl);
	ERR_clear_error();
	return cert;
}

/* Certify pub (the audit key's public half) and store the certificate in
 * the token under label; a->der gets it. */
static int certify(st_audit *a, const char *ca_label, const char *label,
		   EVP_PKEY *pub, const char *station_id, char *err, size_t errlen)
{
	X509 *cert = issue(a->s, ca_label, pub, station_id, err, errlen);
	uint8_t *der = NULL;
	size_t len = 0;
	int rc;

	if (!cert)
		return ST_E_CRYPTO;
	rc = st_x509_hsm_store(a->s, label, cert, "audit certificate", &der, &len,
			       err, errlen);
	if (!rc) {
		free(a->der);
		a->der = der;
		a->len = len;
	}
	X509_free(cert);
	return rc;
}

/* The type of a new audit key: EC P-256 where the token can make and use
 * one, else RSA-3072 (an RSA-only token, such as Debian 12's opencryptoki
 * soft token, would otherwise pass `ca init` and fail every provision). */
static int new_key_type(st_audit *a, char *err, size_t errlen)
{
	static const hsm_mech ec[] = { HSM_M_EC_KEY_PAIR_GEN, HSM_M_ECDSA };
	static const hsm_mech rsa[] = { HSM_M_RSA_KEY_PAIR_GEN, HSM_M_RSA_PKCS };

	if (hsm_check_mechanisms(a->h, ec, ST_ARRAY_SIZE(ec)) == ST_OK) {
		a->type = HSM_KEY_P256;
		return ST_OK;
	}
	if (hsm_check_mechanisms(a->h, rsa, ST_ARRAY_SIZE(rsa)) == ST_OK) {
		a->type = HSM_KEY_RSA3072;
		return ST_OK;
	}
	snprintf(err, errlen, "the token can make no key to sign the records "
		 "with: it offers neither CKM_EC_KEY_PAIR_GEN with CKM_ECDSA (an EC "
		 "P-256 audit key) nor CKM_RSA_PKCS_KEY_PAIR_GEN with CKM_RSA_PKCS "
		 "(RSA-3072): use a token (or HSM licence) that has one of them");
	return ST_E_HSM;
}

/* The audit key in the token signs with its mechanism: checked before it
 * is used, so a token without it is refused at start, naming it. */
static int sign_mech_offered(st_audit *a, const char *label, char *err,
			     size_t errlen)
{
	hsm_mech m = st_sigmech_need(a->type);

	if (hsm_check_mechanisms(a->h, &m, 1) == ST_OK)
		return ST_OK;
	snprintf(err, errlen, "the audit key '%s' (%s) cannot sign: %s", label,
		 hsm_keytype_name(a->type), hsm_errmsg(a->h));
	return ST_E_HSM;
}

/* The public key labelled label as an EVP_PKEY (NULL when absent or
 * unreadable); a->type is set from it. */
static EVP_PKEY *token_pubkey(st_audit *a, const char *label)
{
	uint8_t *spki = NULL;
	size_t len = 0;
	hsm_keytype t;
	EVP_PKEY *pub = NULL;

	if (hsm_pubkey_spki(a->s, label, &spki, &len, &t) == ST_OK &&
	    (pub = st_spki_pubkey(spki, len)))
		a->type = t;
	free(spki);
	return pub;
}

/* A new key pair under label, certified.  A pair whose public half cannot
 * be read back would block the label: both halves are removed then. */
static int make_key(st_audit *a, const char *ca_label, const char *label,
		    const char *station_id, char *err, size_t errlen)
{
	EVP_PKEY *pub = NULL;
	int rc = new_key_type(a, err, errlen);

	if (rc)
		return rc;
	rc = hsm_keygen(a->s, a->type, label, true, &a->priv);
	if (rc) {
		snprintf(err, errlen, "audit key (%s) generation failed: %s",
			 hsm_keytype_name(a->type), hsm_session_errmsg(a->s));
		return rc;
	}
	a->created = true;
	pub = token_pubkey(a, label);
	if (!pub) {
		snprintf(err, errlen, "cannot read back the new audit key's public "
			 "half: %s", hsm_session_errmsg(a->s));
		hsm_remove(a->s, label, HSM_O_PRIVKEY | HSM_O_PUBKEY);
		return ST_E_HSM;
	}
	rc = certify(a, ca_label, label, pub, station_id, err, errlen);
	EVP_PKEY_free(pub);
	if (rc) {
		/* never signed anything: take it back, the next try starts clean */
		st_audit_discard(a);
		a->created = false;
	}
	return rc;
}

/* The audit key has a certificate: it must be the key's, issued by a CA
 * in the token, and carry the audit extendedKeyUsage; one that only lacks
 * the last two (an old certificate, a retired CA) is replaced by a new
 * certificate for the same key. */
static int check_cert(st_audit *a, const char *ca_label, const char *label,
		      const char *station_id, char *err, size_t errlen)
{
	STACK_OF(X509) *cas = NULL;
	const uint8_t *p;
	char why[300], fp[65];
	X509 *x = NULL;
	int rc, chk;

	rc = hsm_cert_load(a->s, label, &a->der, &a->len);
	if (rc) {
		snprintf(err, errlen, "cannot read the audit certificate '%s': %s",
			 label, hsm_session_errmsg(a->s));
		return rc;
	}
	p = a->der;
	x = d2i_X509(NULL, &p, (long)a->len);
	if (x && st_key_type(X509_get0_pubkey(x), &a->type) == ST_OK &&
	    (rc = sign_mech_offered(a, label, err, errlen)))
		goto cleanup;
	if (!x || !st_hsm_key_matches(a->s, a->priv, a->type,
				      X509_get0_pubkey(x))) {
		snprintf(err, errlen, "the certificate labelled '%s' in the token "
			 "does not belong to the audit key of that label: it cannot "
			 "sign records; remove that certificate object and start "
			 "again (the key is then certified anew)", label);
		rc = ST_E_VERIFY;
		goto cleanup;
	}
	rc = st_x509_token_cas(a->s, &cas);
	if (rc) {
		snprintf(err, errlen, "cannot list the token's CA certificates: %s",
			 hsm_session_errmsg(a->s));
		goto cleanup;
	}
	chk = st_x509_audit_check(x, cas, why, sizeof(why));
	if (chk == ST_AUDIT_CERT_OK)
		goto cleanup;
	/* The old certificate stays in the records (every event names the
	 * certificate it was signed under); the token keeps only the new. */
	st_x509_fingerprint(x, fp);
	snprintf(a->repair, sizeof(a->repair), "re-certified the audit key: its "
		 "certificate %s was refused (%.200s); the same key now has a "
		 "certificate with the audit extendedKeyUsage", fp, why);
	rc = hsm_remove(a->s, label, HSM_O_CERT);
	if (rc) {
		snprintf(err, errlen, "cannot replace the audit certificate: %s",
			 hsm_session_errmsg(a->s));
		goto cleanup;
	}
	rc = certify(a, ca_label, label, X509_get0_pubkey(x), station_id, err, errlen);
cleanup:
	sk_X509_pop_free(cas, X509_free);
	X509_free(x);
	ERR_clear_error();
	return rc;
}

/* Bring the token's audit key and certificate to a usable state (see the
 * top of the file); a->priv and a->der are set on success. */
static int ensure(st_audit *a, const char *ca_label, const char *label,
		  const char *station_id, char *err, size_t errlen)
{
	EVP_PKEY *pub = NULL;
	unsigned have = 0;
	int rc = hsm_objects(a->s, label, &have);

	if (rc) {
		snprintf(err, errlen, "cannot look for the audit key '%s': %s", label,
			 hsm_session_errmsg(a->s));
		return rc;
	}
	if (!(have & HSM_O_PRIVKEY)) {
		if (have & (HSM_O_PUBKEY | HSM_O_CERT)) {
			/* no private key: nothing was ever signed with it */
			rc = hsm_remove(a->s, label, HSM_O_PUBKEY | HSM_O_CERT);
			if (rc) {
				snprintf(err, errlen, "cannot remove the rest of a "
					 "half-made audit key: %s",
					 hsm_session_errmsg(a->s));
				return rc;
			}
			snprintf(a->repair, sizeof(a->repair), "removed a %s labelled "
				 "'%s' without its private key (an interrupted key "
				 "generation) and made a new audit key", have & HSM_O_PUBKEY ?
				 "public key" : "certificate", label);
		}
		return make_key(a, ca_label, label, station_id, err, errlen);
	}
	rc = hsm_find_privkey(a->s, label, &a->priv);
	if (rc) {
		snprintf(err, errlen, "audit key '%s': %s", label,
			 hsm_session_errmsg(a->s));
		return rc;
	}
	if (have & HSM_O_CERT)
		return check_cert(a, ca_label, label, station_id, err, errlen);
	if (have & HSM_O_PUBKEY)
		pub = token_pubkey(a, label);
	if (pub && (rc = sign_mech_offered(a, label, err, errlen))) {
		EVP_PKEY_free(pub);
		return rc;
	}
	if (!pub || !st_hsm_key_matches(a->s, a->priv, a->type, pub)) {
		/* half a key pair and never a certificate: it signed nothing */
		EVP_PKEY_free(pub);
		rc = hsm_remove(a->s, label, HSM_O_PRIVKEY | HSM_O_PUBKEY);
		if (rc) {
			snprintf(err, errlen, "cannot remove a half-made audit key: %s",
				 hsm_session_errmsg(a->s));
			return rc;
		}
		snprintf(a->repair, sizeof(a->repair), "removed a half-made audit key "
			 "'%s' (a private key without its public key and without "
			 "certificate: an interrupted key generation) and made a new "
			 "one", label);
		return make_key(a, ca_label, label, station_id, err, errlen);
	}
	if (!hsm_key_made_here(a->s, a->priv)) {
		EVP_PKEY_free(pub);
		snprintf(err, errlen, "the audit key '%s' in the token has no "
			 "certificate and was not generated inside the token (CKA_LOCAL, "
			 "CKA_NEVER_EXTRACTABLE): the station does not certify it; remove "
			 "it and start again", label);
		return ST_E_VERIFY;
	}
	rc = certify(a, ca_label, label, pub, station_id, err, errlen);
	EVP_PKEY_free(pub);
	if (!rc)
		snprintf(a->repair, sizeof(a->repair), "certified the audit key '%s', "
			 "which had no certificate (an earlier 'audit init' or first "
			 "start stopped before storing it)", label);
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
	err[0] = '\0';
	a->h = h;
	snprintf(a->label, sizeof(a->label), "%s", label);
	rc = hsm_session_open(h, &a->s);
	if (rc) {
		snprintf(err, errlen, "cannot open an HSM session for the audit "
			 "key: %s", hsm_errmsg(h));
		goto fail;
	}
	rc = ensure(a, ca_label, label, station_id, err, errlen);
	if (rc) {
		if (!err[0])
			snprintf(err, errlen, "audit key '%s': %s", label,
				 hsm_session_errmsg(a->s));
		goto fail;
	}
	*out = a;
	return ST_OK;
fail:
	st_audit_close(a);
	return rc;
}

void st_audit_discard(st_audit *a)
{
	size_t used;

	if (!a || !a->created)
		return;
	if (hsm_remove(a->s, a->label, HSM_O_PRIVKEY | HSM_O_PUBKEY | HSM_O_CERT) == ST_OK)
		return;
	used = strlen(a->repair);
	if (used < sizeof(a->repair))
		snprintf(a->repair + used, sizeof(a->repair) - used, "%sremoving the new "
			 "audit key '%s' failed (%s): remove it before trying again",
			 used ? "; " : "", a->label, hsm_session_errmsg(a->s));
}

bool st_audit_created(const st_audit *a)
{
	return a->created;
}

const char *st_audit_repaired(const st_audit *a)
{
	return a->repair[0] ? a->repair : NULL;
}

const uint8_t *st_audit_cert(const st_audit *a, size_t *len)
{
	*len = a->len;
	return a->der;
}

int st_audit_sign(void *ctx, const uint8_t digest[32], uint8_t *sig,
		  size_t cap, size_t *siglen)
{
	st_audit *a = ctx;
	uint8_t *der = NULL;
	char err[256];
	int n = st_hsm_sign_sha256(a->s, a->priv, a->type, digest, &der, err,
				   sizeof(err));

	if (n > 0 && (size_t)n <= cap) {
		memcpy(sig, der, (size_t)n);
		*siglen = (size_t)n;
	}
	OPENSSL_free(der);
	return n > 0 && (size_t)n <= cap ? ST_OK : ST_E_HSM;
}

void st_audit_close(st_audit *a)
{
	if (!a)
		return;
	hsm_session_close(a->s);
	free(a->der);
	free(a);
}

/* What the store already holds of this key: whether this certificate is
 * in it, and the fingerprints of other certificates of the same key
 * (those it supersedes). */
struct prior {
	EVP_PKEY *key;
	char fp[65];
	bool have;
	char older[1024];
};

static int prior_cert(void *ctx, const char *sha256, const char *pem)
{
	struct prior *p = ctx;
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	size_t used = strlen(p->older);

	BIO_free(b);
	if (!strcmp(sha256, p->fp))
		p->have = true;
	else if (x && EVP_PKEY_eq(X509_get0_pubkey(x), p->key) == 1 &&
		 used + 66 < sizeof(p->older))
		snprintf(p->older + used, sizeof(p->older) - used, "%s%s",
			 used ? " " : "", sha256);
	X509_free(x);
	ERR_clear_error();
	return 0;
}

int st_audit_use(st_audit *a, rec_store *rec, char *err, size_t errlen)
{
	const uint8_t *p = a->der;
	X509 *x = d2i_X509(NULL, &p, (long)a->len);
	struct prior pr = { .key = x ? X509_get0_pubkey(x) : NULL };
	int rc;

	if (!x) {
		snprintf(err, errlen, "the audit certificate does not parse");
		return ST_E_CRYPTO;
	}
	st_x509_fingerprint(x, pr.fp);
	rc = rec_list_audit_certs(rec, prior_cert, &pr);
	if (!rc)
		rc = rec_set_signer(rec, st_audit_sign, a, a->der, a->len);
	/* An auditor reads why the key's certificate changed and that the
	 * older ones stay valid for the events signed under them. */
	if (!rc && !pr.have && pr.older[0])
		rc = rec_event(rec, "audit_recertified", NULL, "cert_sha256", pr.fp,
			       "supersedes", pr.older, "reason", "the audit key was "
			       "certified again (the superseded certificates lack "
			       "the audit extendedKeyUsage " ST_AUDIT_EKU_OID " or "
			       "their CA left the token); the events signed under "
			       "them are signed by this same key", NULL);
	if (!rc && a->repair[0]) {
		rc = rec_event(rec, "audit_key_repair", NULL, "cert_sha256", pr.fp,
			       "repair", a->repair, NULL);
		if (!rc)
			a->repair[0] = '\0';
	}
	if (rc)
		snprintf(err, errlen, "records: %s", rec_errmsg(rec));
	X509_free(x);
	return rc;
}

int st_audit_attach(hsm *h, rec_store *rec, const st_config *cfg,
		    st_audit **out, char *err, size_t errlen)
{
	st_audit *a = NULL;
	int rc;

	*out = NULL;
	rc = st_audit_open(h, cfg->ca_label ? cfg->ca_label : "issuing-ca",
			   ST_AUDIT_LABEL, cfg->station_id, &a, err, errlen);
	if (rc)
		return rc;
	rc = st_audit_use(a, rec, err, errlen);
	if (rc) {
		rec_set_signer(rec, NULL, NULL, NULL, 0);
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

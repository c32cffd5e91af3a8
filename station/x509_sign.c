/* x509_sign.c — X.509 objects (certificates, requests, CRLs) and plain
 * messages signed by a key in the HSM.
 *
 * OpenSSL 3 has no public setter for the TBS signature algorithm, so the
 * template is first signed with a throwaway key (which fills in both
 * AlgorithmIdentifiers), then the re-encoded TBS is hashed on the host,
 * signed in the HSM (CKM_ECDSA, CKM_RSA_PKCS, CKM_EDDSA), and
 * SEQUENCE { tbs, algorithm, BIT STRING } is assembled and parsed back. */
#include "x509.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "station/st_int.h"

int st_key_type(EVP_PKEY *key, hsm_keytype *t)
{
	switch (EVP_PKEY_get_base_id(key)) {
	case EVP_PKEY_EC:
		if (EVP_PKEY_get_bits(key) == 256)
			*t = HSM_KEY_P256;
		else if (EVP_PKEY_get_bits(key) == 384)
			*t = HSM_KEY_P384;
		else
			return ST_E_INVAL;
		return ST_OK;
	case EVP_PKEY_RSA:
		if (EVP_PKEY_get_bits(key) != 3072)
			return ST_E_INVAL;
		*t = HSM_KEY_RSA3072;
		return ST_OK;
	case EVP_PKEY_ED25519:
		*t = HSM_KEY_ED25519;
		return ST_OK;
	default:
		return ST_E_INVAL;
	}
}

/* Encode raw r||s as a DER ECDSA-Sig-Value; returns length or -1. */
static int rs_to_der(const uint8_t *rs, size_t rslen, uint8_t **der)
{
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(rs, (int)(rslen / 2), NULL);
	BIGNUM *s = BN_bin2bn(rs + rslen / 2, (int)(rslen / 2), NULL);
	int n = -1;

	if (!sig || !r || !s)
		goto cleanup;
	ECDSA_SIG_set0(sig, r, s);
	r = s = NULL;
	*der = NULL;
	n = i2d_ECDSA_SIG(sig, der);
cleanup:
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(sig);
	return n;
}

/* The hash that goes with a signing key: SHA-384 for P-384 (so the hash is
 * as strong as the curve), SHA-256 for P-256 and RSA-3072, none for
 * Ed25519 (it hashes internally). */
static const EVP_MD *md_for(hsm_keytype t)
{
	return t == HSM_KEY_P384 ? EVP_sha384() :
	       t == HSM_KEY_ED25519 ? NULL : EVP_sha256();
}

/* A throwaway software key of the same family, only to have OpenSSL fill
 * in the AlgorithmIdentifiers (the curve or RSA size does not appear in
 * them, so small and fast ones do). */
static EVP_PKEY *dummy_for(hsm_keytype t)
{
	switch (t) {
	case HSM_KEY_P256:
	case HSM_KEY_P384:
		return EVP_EC_gen("P-256");
	case HSM_KEY_RSA3072:
		return EVP_RSA_gen(1024);
	case HSM_KEY_ED25519:
		return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	}
	return NULL;
}

/* DER DigestInfo prefix for SHA-256 (RFC 8017 section 9.2, note 1). */
static const uint8_t sha256_info[] = {
	0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03,
	0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20
};

static int sign_prepared(hsm_session *s, hsm_obj priv, hsm_keytype t,
			 const uint8_t *msg, size_t inlen, uint8_t **sig,
			 char *err, size_t errlen);

/* Sign tbs with the HSM key priv of type t; *sig gets the signature as it
 * goes into the BIT STRING (DER ECDSA-Sig-Value, or the raw RSA/EdDSA
 * signature).  Returns its length, or -1 with err filled in. */
static int hsm_sign_tbs(hsm_session *s, hsm_obj priv, hsm_keytype t,
			const uint8_t *tbs, size_t tbslen, uint8_t **sig,
			char *err, size_t errlen)
{
	uint8_t in[sizeof(sha256_info) + EVP_MAX_MD_SIZE];
	const uint8_t *msg = in;
	size_t inlen = 0;
	unsigned int mdlen = 0;
	const EVP_MD *md = md_for(t);

	*sig = NULL;
	if (t == HSM_KEY_RSA3072) {
		memcpy(in, sha256_info, sizeof(sha256_info));
		inlen = sizeof(sha256_info);
	}
	if (md) {
		if (!EVP_Digest(tbs, tbslen, in + inlen, &mdlen, md, NULL)) {
			snprintf(err, errlen, "cannot hash the data to sign");
			return -1;
		}
		inlen += mdlen;
	} else {
		msg = tbs;
		inlen = tbslen;
	}
	return sign_prepared(s, priv, t, msg, inlen, sig, err, errlen);
}

/* Sign what the mechanism of t takes (a digest, a DigestInfo, a whole
 * message) and return the signature in the form OpenSSL verifies. */
static int sign_prepared(hsm_session *s, hsm_obj priv, hsm_keytype t,
			 const uint8_t *msg, size_t inlen, uint8_t **sig,
			 char *err, size_t errlen)
{
	uint8_t raw[HSM_MAX_SIG];
	size_t rawlen = 0;
	int rc;

	*sig = NULL;
	rc = hsm_sign(s, priv, hsm_keytype_sigmech(t), msg, inlen, raw, sizeof(raw),
		      &rawlen);
	if (rc) {
		snprintf(err, errlen, "HSM signing failed: %s", hsm_session_errmsg(s));
		return -1;
	}
	if (hsm_keytype_sigmech(t) == HSM_SIG_ECDSA) {
		int n = rs_to_der(raw, rawlen, sig);

		if (n <= 0)
			snprintf(err, errlen, "cannot encode the ECDSA signature");
		return n;
	}
	*sig = OPENSSL_memdup(raw, rawlen);
	if (!*sig) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return (int)rawlen;
}

/* Assemble SEQUENCE { body, algorithm, BIT STRING signature }: the shape of
 * a Certificate, a CertificationRequest and a CRL.  Returns a malloc'd DER
 * buffer and its length in *len, or NULL. */
static uint8_t *assemble(const uint8_t *body, int bodylen, const X509_ALGOR *oalg,
			 const uint8_t *sig, int siglen, int *len)
{
	uint8_t *alg = NULL, *bits = NULL, *out = NULL;
	ASN1_BIT_STRING *bs = ASN1_BIT_STRING_new();
	int alglen, bitslen, inner;

	alglen = i2d_X509_ALGOR(oalg, &alg);
	if (alglen <= 0 || !bs || !ASN1_BIT_STRING_set(bs, (uint8_t *)sig, siglen))
		goto cleanup;
	/* A signature is whole bytes: say "0 unused bits" explicitly. */
	bs->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
	bs->flags |= ASN1_STRING_FLAG_BITS_LEFT;
	bitslen = i2d_ASN1_BIT_STRING(bs, &bits);
	if (bitslen <= 0)
		goto cleanup;
	inner = bodylen + alglen + bitslen;
	*len = ASN1_object_size(1, inner, V_ASN1_SEQUENCE);
	out = OPENSSL_malloc((size_t)*len);
	if (out) {
		uint8_t *p = out;

		ASN1_put_object(&p, 1, inner, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
		memcpy(p, body, (size_t)bodylen);
		p += bodylen;
		memcpy(p, alg, (size_t)alglen);
		p += alglen;
		memcpy(p, bits, (size_t)bitslen);
	}
cleanup:
	OPENSSL_free(alg);
	OPENSSL_free(bits);
	ASN1_BIT_STRING_free(bs);
	return out;
}

/* What differs between signing a certificate, a request and a CRL: the
 * word for it in messages, its ASN.1 type (to parse the result), how the
 * throwaway key fills in its AlgorithmIdentifiers, and how its body (TBS)
 * and signature algorithm are read back.  OpenSSL types these calls per
 * object, hence the one-line adapters below. */
struct signable {
	const char *what;
	const ASN1_ITEM *(*item)(void);
	int (*prepare)(void *obj, EVP_PKEY *dummy, const EVP_MD *md);
	int (*tbs)(void *obj, uint8_t **der, const X509_ALGOR **alg);
};

static int cert_prepare(void *obj, EVP_PKEY *dummy, const EVP_MD *md)
{
	return X509_sign(obj, dummy, md);
}

static int cert_tbs(void *obj, uint8_t **der, const X509_ALGOR **alg)
{
	X509_get0_signature(NULL, alg, obj);
	return i2d_re_X509_tbs(obj, der);
}

static int req_prepare(void *obj, EVP_PKEY *dummy, const EVP_MD *md)
{
	return X509_REQ_sign(obj, dummy, md);
}

static int req_tbs(void *obj, uint8_t **der, const X509_ALGOR **alg)
{
	X509_REQ_get0_signature(obj, NULL, alg);
	return i2d_re_X509_REQ_tbs(obj, der);
}

static int crl_prepare(void *obj, EVP_PKEY *dummy, const EVP_MD *md)
{
	return X509_CRL_sign(obj, dummy, md);
}

static int crl_tbs(void *obj, uint8_t **der, const X509_ALGOR **alg)
{
	X509_CRL_get0_signature(obj, NULL, alg);
	return i2d_re_X509_CRL_tbs(obj, der);
}

static const struct signable signable_cert = {
	.what = "certificate",
	.item = ASN1_ITEM_ref(X509),
	.prepare = cert_prepare,
	.tbs = cert_tbs,
};

static const struct signable signable_req = {
	.what = "request",
	.item = ASN1_ITEM_ref(X509_REQ),
	.prepare = req_prepare,
	.tbs = req_tbs,
};

static const struct signable signable_crl = {
	.what = "CRL",
	.item = ASN1_ITEM_ref(X509_CRL),
	.prepare = crl_prepare,
	.tbs = crl_tbs,
};

/* The one signing path of all three: fill in the AlgorithmIdentifiers with
 * a throwaway key, sign the re-encoded TBS with the HSM, assemble
 * SEQUENCE { tbs, algorithm, signature } and parse it back as k's type.
 * Returns the new object (the caller's type), or NULL with err filled in. */
static void *hsm_sign_object(const struct signable *k, void *obj, hsm_session *s,
			     hsm_obj priv, hsm_keytype t, char *err, size_t errlen)
{
	EVP_PKEY *dummy = dummy_for(t);
	uint8_t *tbs = NULL, *sig = NULL, *der = NULL;
	const X509_ALGOR *alg = NULL;
	void *out = NULL;
	int tbslen, siglen, total = 0;

	if (!dummy || !k->prepare(obj, dummy, md_for(t))) {
		snprintf(err, errlen, "cannot prepare the %s for signing", k->what);
		goto cleanup;
	}
	tbslen = k->tbs(obj, &tbs, &alg);
	if (tbslen <= 0) {
		snprintf(err, errlen, "cannot encode the %s body", k->what);
		goto cleanup;
	}
	siglen = hsm_sign_tbs(s, priv, t, tbs, (size_t)tbslen, &sig, err, errlen);
	if (siglen <= 0)
		goto cleanup;
	der = assemble(tbs, tbslen, alg, sig, siglen, &total);
	if (der) {
		const uint8_t *cp = der;

		out = ASN1_item_d2i(NULL, &cp, total, k->item());
	}
	if (!out)
		snprintf(err, errlen, "assembled %s does not parse", k->what);
cleanup:
	EVP_PKEY_free(dummy);
	OPENSSL_free(tbs);
	OPENSSL_free(sig);
	OPENSSL_free(der);
	return out;
}

X509 *st_x509_hsm_sign(X509 *x, hsm_session *s, hsm_obj priv, hsm_keytype t,
		       char *err, size_t errlen)
{
	return hsm_sign_object(&signable_cert, x, s, priv, t, err, errlen);
}

X509_REQ *st_x509_req_hsm_sign(X509_REQ *r, hsm_session *s, hsm_obj priv,
			       hsm_keytype t, char *err, size_t errlen)
{
	return hsm_sign_object(&signable_req, r, s, priv, t, err, errlen);
}

X509_CRL *st_x509_crl_hsm_sign(X509_CRL *c, hsm_session *s, hsm_obj priv,
			       hsm_keytype t, char *err, size_t errlen)
{
	return hsm_sign_object(&signable_crl, c, s, priv, t, err, errlen);
}

int st_hsm_sign_bytes(hsm_session *s, hsm_obj priv, hsm_keytype t,
		      const uint8_t *data, size_t len, uint8_t **sig,
		      char *err, size_t errlen)
{
	return hsm_sign_tbs(s, priv, t, data, len, sig, err, errlen);
}

int st_hsm_sign_sha256(hsm_session *s, hsm_obj priv, hsm_keytype t,
		       const uint8_t digest[32], uint8_t **sig, char *err,
		       size_t errlen)
{
	uint8_t in[sizeof(sha256_info) + 32];
	size_t inlen = 0;

	*sig = NULL;
	if (t == HSM_KEY_ED25519) {
		snprintf(err, errlen, "an Ed25519 key cannot sign a digest made "
			 "elsewhere");
		return -1;
	}
	if (t == HSM_KEY_RSA3072) {
		memcpy(in, sha256_info, sizeof(sha256_info));
		inlen = sizeof(sha256_info);
	}
	memcpy(in + inlen, digest, 32);
	return sign_prepared(s, priv, t, in, inlen + 32, sig, err, errlen);
}


bool st_hsm_key_matches(hsm_session *s, hsm_obj priv, hsm_keytype t,
			EVP_PKEY *pub)
{
	uint8_t challenge[32], *sig = NULL;
	EVP_MD_CTX *md = NULL;
	char err[256];
	int n;
	bool ok = false;

	if (!pub || hsm_random(s, challenge, sizeof(challenge)))
		return false;
	n = st_hsm_sign_bytes(s, priv, t, challenge, sizeof(challenge), &sig, err,
			      sizeof(err));
	md = EVP_MD_CTX_new();
	ok = n > 0 && md &&
	     EVP_DigestVerifyInit(md, NULL, md_for(t), NULL, pub) == 1 &&
	     EVP_DigestVerify(md, sig, (size_t)n, challenge, sizeof(challenge)) == 1;
	EVP_MD_CTX_free(md);
	OPENSSL_free(sig);
	ERR_clear_error();
	return ok;
}

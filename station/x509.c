/* x509.c — certificates built with OpenSSL, signed by a key in the HSM.
 *
 * OpenSSL 3 has no public setter for the TBS signature algorithm, so the
 * template is first signed with a throwaway key (which fills in both
 * AlgorithmIdentifiers), then the re-encoded TBS is hashed on the host,
 * signed with CKM_ECDSA in the HSM, and Certificate ::= SEQUENCE { tbs,
 * algorithm, BIT STRING } is assembled and parsed back. */
#include "x509.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "station/st_int.h"

EVP_PKEY *st_p256_pubkey(const uint8_t point[HSM_P256_POINT_LEN])
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *key = NULL;

	if (!bld || point[0] != 0x04)
		goto cleanup;
	if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
					     "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
					      point, HSM_P256_POINT_LEN))
		goto cleanup;
	params = OSSL_PARAM_BLD_to_param(bld);
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		key = NULL;
cleanup:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return key;
}

EVP_PKEY *st_spki_pubkey(const uint8_t *der, size_t len)
{
	const uint8_t *p = der;

	return d2i_PUBKEY(NULL, &p, (long)len);
}

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

/* Add one extension given in openssl.cnf syntax; 0 on failure. */
static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *e;
	int ok;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!e)
		return 0;
	ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok;
}

bool st_eku_names_audit(const char *eku)
{
	X509_EXTENSION *e = *eku ? X509V3_EXT_conf_nid(NULL, NULL, NID_ext_key_usage,
						       eku) : NULL;
	EXTENDED_KEY_USAGE *u = e ? X509V3_EXT_d2i(e) : NULL;
	ASN1_OBJECT *audit = OBJ_txt2obj(ST_AUDIT_EKU_OID, 1);
	bool found = false;

	for (int i = 0; u && audit && i < sk_ASN1_OBJECT_num(u); i++)
		if (!OBJ_cmp(sk_ASN1_OBJECT_value(u, i), audit))
			found = true;
	EXTENDED_KEY_USAGE_free(u);
	X509_EXTENSION_free(e);
	ASN1_OBJECT_free(audit);
	ERR_clear_error();
	return found;
}

bool st_x509_is_audit(X509 *x)
{
	EXTENDED_KEY_USAGE *u = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
	ASN1_OBJECT *audit = OBJ_txt2obj(ST_AUDIT_EKU_OID, 1);
	bool found = false;

	for (int i = 0; u && audit && i < sk_ASN1_OBJECT_num(u); i++)
		if (!OBJ_cmp(sk_ASN1_OBJECT_value(u, i), audit))
			found = true;
	EXTENDED_KEY_USAGE_free(u);
	ASN1_OBJECT_free(audit);
	ERR_clear_error();
	return found;
}

/* Critical: the certificate is for signing the station's records and
 * nothing else, and a relying party that checks EKU at all (TLS stacks
 * do) must never take it for a client or server identity. */
int st_x509_add_audit_eku(X509 *x)
{
	return add_ext(x, NULL, NID_ext_key_usage, "critical," ST_AUDIT_EKU_OID);
}

int st_x509_audit_check(X509 *x, STACK_OF(X509) *cas, char *why, size_t len)
{
	X509 *issuer = NULL;

	for (int i = 0; !issuer && i < sk_X509_num(cas); i++) {
		X509 *ca = sk_X509_value(cas, i);

		if (X509_check_issued(ca, x) == X509_V_OK &&
		    X509_verify(x, X509_get0_pubkey(ca)) == 1)
			issuer = ca;
	}
	ERR_clear_error();
	if (!issuer) {
		snprintf(why, len, "not issued by %s", sk_X509_num(cas) == 1 ?
			 "the CA" : "any of the CAs");
		return ST_AUDIT_CERT_BAD;
	}
	if (X509_check_ca(x) > 0) {
		snprintf(why, len, "it is a CA certificate, not an audit certificate");
		return ST_AUDIT_CERT_BAD;
	}
	if (!st_x509_is_audit(x)) {
		snprintf(why, len, "it lacks the audit extendedKeyUsage %s: a "
			 "device certificate, or an audit certificate from before "
			 "(then run 'station audit init' at that station once)",
			 ST_AUDIT_EKU_OID);
		return ST_AUDIT_CERT_OLD;
	}
	return ST_AUDIT_CERT_OK;
}

int st_x509_token_cas(hsm_session *s, STACK_OF(X509) **out)
{
	char **labels = NULL;
	size_t n = 0;
	int rc;

	*out = sk_X509_new_null();
	if (!*out)
		return ST_E_NOMEM;
	rc = hsm_list_labels(s, false, &labels, &n);
	for (size_t i = 0; !rc && i < n; i++) {
		uint8_t *der = NULL;
		const uint8_t *p;
		size_t len = 0;
		X509 *x = NULL;

		if (hsm_cert_load(s, labels[i], &der, &len) == ST_OK) {
			p = der;
			x = d2i_X509(NULL, &p, (long)len);
		}
		free(der);
		if (x && X509_check_ca(x) > 0 && sk_X509_push(*out, x))
			x = NULL;
		X509_free(x);
	}
	hsm_labels_free(labels, n);
	ERR_clear_error();
	return rc;
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

/* Common part of both templates: version, serial, validity, subject, key. */
static X509 *template_base(EVP_PKEY *key, X509_NAME *subject, int days,
			   const uint8_t serial[ST_CERT_SERIAL_LEN])
{
	X509 *x = X509_new();
	BIGNUM *bn = BN_bin2bn(serial, ST_CERT_SERIAL_LEN, NULL);

	if (!x || !bn || !X509_set_version(x, X509_VERSION_3) ||
	    !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL) ||
	    !X509_set_subject_name(x, subject) || !X509_set_pubkey(x, key)) {
		X509_free(x);
		x = NULL;
	}
	BN_free(bn);
	return x;
}

X509 *st_x509_ca_template(EVP_PKEY *capub, const char *cn, const char *org,
			  int days, const uint8_t serial[ST_CERT_SERIAL_LEN])
{
	X509_NAME *name = X509_NAME_new();
	X509 *x = NULL;

	if (!name ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
					(const unsigned char *)org, -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
					(const unsigned char *)cn, -1, -1, 0))
		goto cleanup;
	x = template_base(capub, name, days, serial);
	if (!x)
		goto cleanup;
	if (!X509_set_issuer_name(x, name) ||
	    !add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
	    !add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    !add_ext(x, x, NID_subject_key_identifier, "hash")) {
		X509_free(x);
		x = NULL;
	}
cleanup:
	X509_NAME_free(name);
	return x;
}

hsm_mech st_sigmech_need(hsm_keytype t)
{
	switch (hsm_keytype_sigmech(t)) {
	case HSM_SIG_RSA_PKCS:
		return HSM_M_RSA_PKCS;
	case HSM_SIG_EDDSA:
		return HSM_M_EDDSA;
	default:
		return HSM_M_ECDSA;
	}
}

/* Expand ${var} in value into out; the values are inserted as data, after
 * the template has been split into attributes, so a device ID can never
 * add an attribute. */
static int expand(const char *value, const st_subject_vars *v, char *out,
		  size_t cap, char *err, size_t errlen)
{
	size_t n = 0;

	while (*value) {
		const char *rep = NULL, *end;
		size_t k;

		if (value[0] != '$' || value[1] != '{') {
			if (n + 1 >= cap)
				goto toolong;
			out[n++] = *value++;
			continue;
		}
		end = strchr(value, '}');
		if (!end) {
			snprintf(err, errlen, "unterminated ${ in '%s'", value);
			return ST_E_CONFIG;
		}
		k = (size_t)(end - value - 2);
		if (k == 3 && !strncmp(value + 2, "uid", 3))
			rep = v->uid;
		else if (k == 6 && !strncmp(value + 2, "serial", 6))
			rep = v->serial;
		else if (k == 7 && !strncmp(value + 2, "product", 7))
			rep = v->product;
		else if (k == 5 && !strncmp(value + 2, "model", 5))
			rep = v->model;
		else {
			snprintf(err, errlen, "unknown variable '%.*s' (known: ${uid}, "
				 "${serial}, ${product}, ${model})", (int)(k + 3), value);
			return ST_E_CONFIG;
		}
		if (n + strlen(rep) >= cap)
			goto toolong;
		memcpy(out + n, rep, strlen(rep));
		n += strlen(rep);
		value = end + 1;
	}
	out[n] = '\0';
	return ST_OK;
toolong:
	snprintf(err, errlen, "a subject attribute is too long");
	return ST_E_CONFIG;
}

/* Build the subject from "KEY=VALUE, KEY=VALUE" (attributes in order). */
static int subject_build(const char *tmpl, const st_subject_vars *v,
			 X509_NAME **out, char *err, size_t errlen)
{
	char buf[512], val[256];
	X509_NAME *name = X509_NAME_new();
	char *save = NULL;
	int rc = ST_E_CONFIG, n = 0;

	*out = NULL;
	if (!name)
		return ST_E_NOMEM;
	snprintf(buf, sizeof(buf), "%s", tmpl);
	for (char *f = strtok_r(buf, ",", &save); f; f = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(f, '='), *key = f, *e;

		while (*key == ' ' || *key == '\t')
			key++;
		if (!eq || eq == key) {
			snprintf(err, errlen, "'%s' is not KEY=VALUE", f);
			goto cleanup;
		}
		*eq = '\0';
		for (e = eq; e > key && (e[-1] == ' ' || e[-1] == '\t'); e--)
			e[-1] = '\0';
		if (OBJ_txt2nid(key) == NID_undef) {
			snprintf(err, errlen, "unknown subject attribute '%s'", key);
			goto cleanup;
		}
		if (expand(eq + 1, v, val, sizeof(val), err, errlen))
			goto cleanup;
		if (!val[0] || !X509_NAME_add_entry_by_txt(name, key, MBSTRING_UTF8,
							   (const unsigned char *)val, -1, -1, 0)) {
			snprintf(err, errlen, "subject attribute %s cannot take '%s'", key, val);
			goto cleanup;
		}
		n++;
	}
	if (!n) {
		snprintf(err, errlen, "empty subject template");
		goto cleanup;
	}
	*out = name;
	name = NULL;
	rc = ST_OK;
cleanup:
	X509_NAME_free(name);
	ERR_clear_error();
	return rc;
}

int st_subject_check(const char *tmpl, char *err, size_t errlen)
{
	st_subject_vars v = { "00", "00", "product", "model" };
	X509_NAME *name = NULL;
	int rc = subject_build(tmpl, &v, &name, err, errlen);

	X509_NAME_free(name);
	return rc;
}

/* subjectAltName with the IEEE 802.1AR / RFC 4108 hardwareModuleName:
 * otherName 1.3.6.1.5.5.7.8.4 ::= SEQUENCE { hwType OID, hwSerialNum
 * OCTET STRING }. */
static int add_hmn(X509 *x, const char *hwtype, const uint8_t *sn, size_t snlen)
{
	ASN1_OBJECT *type = OBJ_txt2obj(hwtype, 1);
	ASN1_OBJECT *on = OBJ_txt2obj("1.3.6.1.5.5.7.8.4", 1);
	ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
	uint8_t *tder = NULL, *oder = NULL, *seq = NULL, *p;
	int tlen, olen, total, ok = 0;
	ASN1_STRING *val = NULL;
	ASN1_TYPE *at = NULL;
	GENERAL_NAME *gn = NULL;
	GENERAL_NAMES *gens = NULL;

	if (!type || !on || !os || !ASN1_OCTET_STRING_set(os, sn, (int)snlen))
		goto cleanup;
	tlen = i2d_ASN1_OBJECT(type, &tder);
	olen = i2d_ASN1_OCTET_STRING(os, &oder);
	if (tlen <= 0 || olen <= 0)
		goto cleanup;
	total = ASN1_object_size(1, tlen + olen, V_ASN1_SEQUENCE);
	seq = OPENSSL_malloc((size_t)total);
	if (!seq)
		goto cleanup;
	p = seq;
	ASN1_put_object(&p, 1, tlen + olen, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
	memcpy(p, tder, (size_t)tlen);
	memcpy(p + tlen, oder, (size_t)olen);
	val = ASN1_STRING_type_new(V_ASN1_SEQUENCE);
	at = ASN1_TYPE_new();
	gn = GENERAL_NAME_new();
	gens = GENERAL_NAMES_new();
	if (!val || !at || !gn || !gens || !ASN1_STRING_set(val, seq, total))
		goto cleanup;
	ASN1_TYPE_set(at, V_ASN1_SEQUENCE, val);
	val = NULL;
	if (!GENERAL_NAME_set0_othername(gn, on, at))
		goto cleanup;
	on = NULL;
	at = NULL;
	if (!sk_GENERAL_NAME_push(gens, gn))
		goto cleanup;
	gn = NULL;
	ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1;
cleanup:
	GENERAL_NAMES_free(gens);
	GENERAL_NAME_free(gn);
	ASN1_TYPE_free(at);
	ASN1_STRING_free(val);
	OPENSSL_free(seq);
	OPENSSL_free(tder);
	OPENSSL_free(oder);
	ASN1_OCTET_STRING_free(os);
	ASN1_OBJECT_free(on);
	ASN1_OBJECT_free(type);
	return ok;
}

X509 *st_x509_device_template(EVP_PKEY *devpub, X509 *ca,
			      const st_cert_profile *cp, const st_subject_vars *v,
			      const uint8_t *uid, size_t uidlen,
			      const uint8_t serial[ST_CERT_SERIAL_LEN],
			      char *err, size_t errlen)
{
	X509_NAME *name = NULL;
	X509 *x = NULL;
	char ext[300];

	if (cp->subject[0]) {
		if (subject_build(cp->subject, v, &name, err, errlen))
			return NULL;
	} else if (!(name = X509_NAME_new()) ||
		   !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
					       (const unsigned char *)cp->org, -1, -1, 0) ||
		   !X509_NAME_add_entry_by_txt(name, "serialNumber", MBSTRING_ASC,
					       (const unsigned char *)v->uid, -1, -1, 0) ||
		   !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					       (const unsigned char *)v->uid, -1, -1, 0)) {
		snprintf(err, errlen, "cannot build the subject");
		goto fail;
	}
	x = template_base(devpub, name, cp->validity_days, serial);
	if (!x) {
		snprintf(err, errlen, "cannot build the certificate template");
		goto fail;
	}
	if (cp->no_expiry) {
		/* IEEE 802.1AR 8.5 / RFC 5280 4.1.2.5: no well-defined expiration. */
		if (!ASN1_TIME_set_string(X509_getm_notAfter(x), "99991231235959Z")) {
			snprintf(err, errlen, "cannot set the no-expiry date");
			goto fail;
		}
	} else if (ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(ca)) > 0 &&
		   !X509_set1_notAfter(x, X509_get0_notAfter(ca))) {
		/* A certificate must not outlive its issuer. */
		goto fail;
	}
	if (cp->eku[0] && st_eku_names_audit(cp->eku)) {
		/* second line behind the profile check: a device that held a
		 * certificate with it could sign an audit log */
		snprintf(err, errlen, "the device certificate would carry the "
			 "station's audit extendedKeyUsage %s: refused",
			 ST_AUDIT_EKU_OID);
		goto fail;
	}
	if (!X509_set_issuer_name(x, X509_get_subject_name(ca)) ||
	    !add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") ||
	    (cp->key_usage[0] && !add_ext(x, ca, NID_key_usage, cp->key_usage)) ||
	    (cp->eku[0] && !add_ext(x, ca, NID_ext_key_usage, cp->eku)) ||
	    !add_ext(x, ca, NID_subject_key_identifier, "hash") ||
	    !add_ext(x, ca, NID_authority_key_identifier, "keyid:always") ||
	    (cp->hwtype_oid[0] && !add_hmn(x, cp->hwtype_oid, uid, uidlen))) {
		snprintf(err, errlen, "cannot add the profile's extensions");
		goto fail;
	}
	if (cp->crl_url[0]) {
		snprintf(ext, sizeof(ext), "URI:%s", cp->crl_url);
		if (!add_ext(x, ca, NID_crl_distribution_points, ext)) {
			snprintf(err, errlen, "bad crl_url '%s'", cp->crl_url);
			goto fail;
		}
	}
	if (cp->ocsp_url[0]) {
		snprintf(ext, sizeof(ext), "OCSP;URI:%s", cp->ocsp_url);
		if (!add_ext(x, ca, NID_info_access, ext)) {
			snprintf(err, errlen, "bad ocsp_url '%s'", cp->ocsp_url);
			goto fail;
		}
	}
	X509_NAME_free(name);
	return x;
fail:
	if (!err[0])
		snprintf(err, errlen, "cannot build the certificate");
	X509_NAME_free(name);
	X509_free(x);
	ERR_clear_error();
	return NULL;
}

void st_x509_fingerprint(X509 *x, char out[65])
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (!X509_digest(x, EVP_sha256(), md, &n) || n != 32) {
		out[0] = '\0';
		return;
	}
	st_hex(md, 32, out);
}

void st_x509_serial_hex(X509 *x, char *out, size_t len)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *h = bn ? BN_bn2hex(bn) : NULL;

	snprintf(out, len, "%s", h ? h : "");
	OPENSSL_free(h);
	BN_free(bn);
}

int st_x509_random_serial(hsm_session *s, uint8_t serial[ST_CERT_SERIAL_LEN])
{
	int rc = hsm_random(s, serial, ST_CERT_SERIAL_LEN);

	if (rc)
		return rc;
	/* Positive (RFC 5280) and full length, so the hex form is stable. */
	serial[0] = (uint8_t)((serial[0] & 0x7f) | 0x01);
	return ST_OK;
}

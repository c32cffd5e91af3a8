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
#include <openssl/param_build.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "base.h"

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

X509 *st_x509_hsm_sign(X509 *x, hsm_session *s, hsm_obj priv,
		       char *err, size_t errlen)
{
	EVP_PKEY *dummy = NULL;
	uint8_t *tbs = NULL, *sigder = NULL, *alg = NULL, *bits = NULL, *cert = NULL;
	uint8_t digest[SHA256_DIGEST_LENGTH], rs[HSM_P256_SIG_LEN];
	size_t rslen = sizeof(rs);
	ASN1_BIT_STRING *bs = NULL;
	const ASN1_BIT_STRING *osig;
	const X509_ALGOR *oalg;
	X509 *out = NULL;
	int tbslen, siglen, alglen, bitslen, inner, total, rc;

	dummy = EVP_EC_gen("P-256");
	if (!dummy || !X509_sign(x, dummy, EVP_sha256())) {
		snprintf(err, errlen, "cannot prepare the certificate for signing");
		goto cleanup;
	}
	tbslen = i2d_re_X509_tbs(x, &tbs);
	if (tbslen <= 0) {
		snprintf(err, errlen, "cannot encode the certificate body");
		goto cleanup;
	}
	SHA256(tbs, (size_t)tbslen, digest);
	rc = hsm_sign_digest(s, priv, digest, sizeof(digest), rs, &rslen);
	if (rc) {
		snprintf(err, errlen, "HSM signing failed: %s", hsm_session_errmsg(s));
		goto cleanup;
	}
	siglen = rs_to_der(rs, rslen, &sigder);
	X509_get0_signature(&osig, &oalg, x);
	alglen = i2d_X509_ALGOR(oalg, &alg);
	bs = ASN1_BIT_STRING_new();
	if (siglen <= 0 || alglen <= 0 || !bs ||
	    !ASN1_BIT_STRING_set(bs, sigder, siglen)) {
		snprintf(err, errlen, "cannot encode the signature");
		goto cleanup;
	}
	/* A DER signature is whole bytes: say "0 unused bits" explicitly. */
	bs->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
	bs->flags |= ASN1_STRING_FLAG_BITS_LEFT;
	bitslen = i2d_ASN1_BIT_STRING(bs, &bits);
	if (bitslen <= 0)
		goto cleanup;
	inner = tbslen + alglen + bitslen;
	total = ASN1_object_size(1, inner, V_ASN1_SEQUENCE);
	cert = OPENSSL_malloc((size_t)total);
	if (!cert)
		goto cleanup;
	{
		uint8_t *p = cert;
		const uint8_t *cp = cert;

		ASN1_put_object(&p, 1, inner, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
		memcpy(p, tbs, (size_t)tbslen);
		p += tbslen;
		memcpy(p, alg, (size_t)alglen);
		p += alglen;
		memcpy(p, bits, (size_t)bitslen);
		out = d2i_X509(NULL, &cp, total);
	}
	if (!out)
		snprintf(err, errlen, "assembled certificate does not parse");
cleanup:
	EVP_PKEY_free(dummy);
	OPENSSL_free(tbs);
	OPENSSL_free(sigder);
	OPENSSL_free(alg);
	OPENSSL_free(bits);
	OPENSSL_free(cert);
	ASN1_BIT_STRING_free(bs);
	return out;
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

X509 *st_x509_device_template(EVP_PKEY *devpub, X509 *ca, const char *uid_hex,
			      const char *org, int days,
			      const uint8_t serial[ST_CERT_SERIAL_LEN])
{
	X509_NAME *name = X509_NAME_new();
	X509 *x = NULL;

	if (!name ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
					(const unsigned char *)org, -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "serialNumber", MBSTRING_ASC,
					(const unsigned char *)uid_hex, -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					(const unsigned char *)uid_hex, -1, -1, 0))
		goto cleanup;
	x = template_base(devpub, name, days, serial);
	if (!x)
		goto cleanup;
	/* A certificate must not outlive its issuer (RFC 5280 path validation
	 * would reject it then anyway): clamp to the CA's notAfter. */
	if (ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(ca)) > 0 &&
	    !X509_set1_notAfter(x, X509_get0_notAfter(ca))) {
		X509_free(x);
		x = NULL;
		goto cleanup;
	}
	if (!X509_set_issuer_name(x, X509_get_subject_name(ca)) ||
	    !add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") ||
	    !add_ext(x, ca, NID_key_usage, "critical,digitalSignature") ||
	    !add_ext(x, ca, NID_ext_key_usage, "clientAuth,serverAuth") ||
	    !add_ext(x, ca, NID_subject_key_identifier, "hash") ||
	    !add_ext(x, ca, NID_authority_key_identifier, "keyid:always")) {
		X509_free(x);
		x = NULL;
	}
cleanup:
	X509_NAME_free(name);
	return x;
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

/* x509.c — what the station's certificates say: device and CA templates,
 * subjects from the profile, the hardware-module name, the audit EKU and
 * the checks of an audit certificate, fingerprints and serials.  Signing
 * them in the HSM is x509_sign.c. */
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

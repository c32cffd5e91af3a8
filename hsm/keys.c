/* keys.c — key types and mechanisms, key generation, public keys read
 * back (point, SubjectPublicKeyInfo), signing and random. */
#include "hsm.h"
#include "hsm_int.h"
#include "base.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#define HSM_MAX_SIG_LEN 132     /* raw r||s up to P-521 */

/* DER OID 1.2.840.10045.3.1.7 (prime256v1), the value of CKA_EC_PARAMS. */
const CK_BYTE hsm_p256_oid[HSM_P256_OID_LEN] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
};

/* DER OID 1.3.132.0.34 (secp384r1). */
static const CK_BYTE p384_oid[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };
/* DER OID 1.3.101.112 (Ed25519), as SoftHSM and the v3.0 spec take it. */
static const CK_BYTE ed25519_oid[] = { 0x06, 0x03, 0x2b, 0x65, 0x70 };

/* What each hsm_mech is in PKCS#11 terms. */
static const struct {
	hsm_mech m;
	CK_MECHANISM_TYPE ckm;
	const char *name;
} mechs[] = {
	{ HSM_M_EC_KEY_PAIR_GEN, CKM_EC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN" },
	{ HSM_M_RSA_KEY_PAIR_GEN, CKM_RSA_PKCS_KEY_PAIR_GEN, "CKM_RSA_PKCS_KEY_PAIR_GEN" },
	{ HSM_M_EDDSA_KEY_PAIR_GEN, CKM_EC_EDWARDS_KEY_PAIR_GEN, "CKM_EC_EDWARDS_KEY_PAIR_GEN" },
	{ HSM_M_ECDSA, CKM_ECDSA, "CKM_ECDSA" },
	{ HSM_M_RSA_PKCS, CKM_RSA_PKCS, "CKM_RSA_PKCS" },
	{ HSM_M_EDDSA, CKM_EDDSA, "CKM_EDDSA" },
	{ HSM_M_ECDH1_DERIVE, CKM_ECDH1_DERIVE, "CKM_ECDH1_DERIVE" },
	{ HSM_M_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP_PAD, "CKM_AES_KEY_WRAP_PAD" },
	{ HSM_M_AES_KEY_WRAP_KWP, CKM_AES_KEY_WRAP_KWP, "CKM_AES_KEY_WRAP_KWP" },
	/* either: checked specially in hsm_check_mechanisms */
	{ HSM_M_AES_KEY_WRAP_5649, CKM_AES_KEY_WRAP_KWP,
	  "CKM_AES_KEY_WRAP_KWP (or SoftHSM's CKM_AES_KEY_WRAP_PAD)" },
};

/* Key types by name, with what PKCS#11 needs to make and use them. */
static const struct {
	hsm_keytype t;
	const char *arg, *name;
	hsm_mech gen;
	hsm_sigmech sig;
} keytypes[] = {
	{ HSM_KEY_P256, "p256", "EC P-256", HSM_M_EC_KEY_PAIR_GEN, HSM_SIG_ECDSA },
	{ HSM_KEY_P384, "p384", "EC P-384", HSM_M_EC_KEY_PAIR_GEN, HSM_SIG_ECDSA },
	{ HSM_KEY_RSA3072, "rsa3072", "RSA-3072", HSM_M_RSA_KEY_PAIR_GEN, HSM_SIG_RSA_PKCS },
	{ HSM_KEY_ED25519, "ed25519", "Ed25519", HSM_M_EDDSA_KEY_PAIR_GEN, HSM_SIG_EDDSA },
};

int hsm_keytype_parse(const char *name, hsm_keytype *out)
{
	for (size_t i = 0; name && i < ST_ARRAY_SIZE(keytypes); i++)
		if (!strcmp(name, keytypes[i].arg)) {
			*out = keytypes[i].t;
			return ST_OK;
		}
	return ST_E_INVAL;
}

const char *hsm_keytype_name(hsm_keytype t)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(keytypes); i++)
		if (keytypes[i].t == t)
			return keytypes[i].name;
	return "unknown key type";
}

hsm_sigmech hsm_keytype_sigmech(hsm_keytype t)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(keytypes); i++)
		if (keytypes[i].t == t)
			return keytypes[i].sig;
	return 0;
}

hsm_mech hsm_keytype_genmech(hsm_keytype t)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(keytypes); i++)
		if (keytypes[i].t == t)
			return keytypes[i].gen;
	return 0;
}

const char *hsm_mech_name(hsm_mech m)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(mechs); i++)
		if (mechs[i].m == m)
			return mechs[i].name;
	return "unknown mechanism";
}

static CK_MECHANISM_TYPE ckm_of(hsm_mech m)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(mechs); i++)
		if (mechs[i].m == m)
			return mechs[i].ckm;
	return CKM_VENDOR_DEFINED;
}

/* From the list, not C_GetMechanismInfo: a module restricted to some
 * mechanisms (SoftHSM's slots.mechanisms) may still describe the others. */
bool hsm_has_mech(hsm *h, CK_MECHANISM_TYPE m)
{
	CK_MECHANISM_TYPE *list = NULL;
	CK_ULONG count = 0;
	bool found = false;

	if (h->fl->C_GetMechanismList(h->slot, NULL, &count) != CKR_OK)
		return false;
	list = calloc(count ? count : 1, sizeof(*list));
	if (list && h->fl->C_GetMechanismList(h->slot, list, &count) == CKR_OK)
		for (CK_ULONG i = 0; i < count && !found; i++)
			found = list[i] == m;
	free(list);
	return found;
}

/* One list call per start-up; the message lists every missing mechanism so
 * the operator can compare it with the HSM's documentation in one go. */
int hsm_check_mechanisms(hsm *h, const hsm_mech *need, size_t n)
{
	CK_MECHANISM_TYPE *list = NULL;
	CK_ULONG count = 0;
	char missing[HSM_ERRMSG_LEN / 2] = "";
	size_t mlen = 0;
	CK_RV rv;
	int err = ST_OK;

	if (!h || !h->fl || (!need && n))
		return ST_E_INVAL;
	rv = h->fl->C_GetMechanismList(h->slot, NULL, &count);
	if (rv != CKR_OK)
		return hsm_h_rv(h, "C_GetMechanismList", rv);
	list = calloc(count ? count : 1, sizeof(*list));
	if (!list) {
		hsm_h_err(h, "out of memory listing mechanisms");
		return ST_E_NOMEM;
	}
	rv = h->fl->C_GetMechanismList(h->slot, list, &count);
	if (rv != CKR_OK) {
		err = hsm_h_rv(h, "C_GetMechanismList", rv);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		CK_MECHANISM_TYPE want = ckm_of(need[i]);
		bool found = false;

		for (CK_ULONG j = 0; j < count && !found; j++)
			found = list[j] == want || (need[i] == HSM_M_AES_KEY_WRAP_5649 &&
						    list[j] == CKM_AES_KEY_WRAP_PAD);
		for (size_t k = 0; k < i && !found; k++)
			found = need[k] == need[i];     /* named once already */
		if (found)
			continue;
		if (mlen < sizeof(missing)) {
			int w = snprintf(missing + mlen, sizeof(missing) - mlen, "%s%s",
					 mlen ? ", " : "", hsm_mech_name(need[i]));
			if (w > 0)
				mlen += (size_t)w;
		}
	}
	if (mlen) {
		bool inject = strstr(missing, "WRAP") || strstr(missing, "ECDH");
		bool other = false;

		for (size_t i = 0; i < n; i++)
			other |= need[i] != HSM_M_AES_KEY_WRAP_5649 &&
				 need[i] != HSM_M_AES_KEY_WRAP_PAD &&
				 need[i] != HSM_M_AES_KEY_WRAP_KWP &&
				 need[i] != HSM_M_ECDH1_DERIVE &&
				 strstr(missing, hsm_mech_name(need[i]));
		hsm_h_err(h, "the token does not offer %s, which the configured keys and "
			  "profile need: %s%s%s", missing,
			  other ? "use an HSM (or HSM firmware/licence) that has it, or "
			  "choose another key type" : "",
			  other && inject ? "; " : "",
			  inject ? "for key injection (key_mode = \"inject\") set "
			  "key_mode = \"device\" in the profile (the device makes its own "
			  "key), or use a token that offers the ECDH derive and "
			  "CKM_AES_KEY_WRAP_KWP" : "");
		err = ST_E_HSM;
	}
out:
	free(list);
	return err;
}

/* The keygen template differs only in the type-specific public attributes;
 * private keys are always sensitive, never extractable, private.  A
 * persistent key must be unique by label, or later lookups by label
 * become ambiguous; the check and the generation are not atomic, so two
 * threads creating the same CA key at once is the caller's to avoid.
 * Session keys skip the check: they are per-unit and fast. */
static int keygen_any(hsm_session *s, hsm_keytype t, const char *label,
		      bool token, CK_OBJECT_HANDLE *hpub, CK_OBJECT_HANDLE *hpriv)
{
	static const CK_OBJECT_CLASS classes[] = {
		CKO_PRIVATE_KEY, CKO_PUBLIC_KEY
	};
	static const CK_BYTE f4[] = { 0x01, 0x00, 0x01 };
	CK_MECHANISM mech = { ckm_of(hsm_keytype_genmech(t)), NULL, 0 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE, tok = token ? CK_TRUE : CK_FALSE;
	CK_ULONG llen = label ? strlen(label) : 0, bits = 3072;
	CK_ATTRIBUTE pub_tmpl[8] = {
		{ CKA_TOKEN, &tok, sizeof(tok) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_VERIFY, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)label, llen },
		{ CKA_ID, (void *)label, llen },
	};
	CK_ULONG npub = 5;
	CK_ATTRIBUTE priv_tmpl[] = {
		{ CKA_TOKEN, &tok, sizeof(tok) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_SIGN, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)label, llen },
		{ CKA_ID, (void *)label, llen },
	};
	CK_RV rv;
	int err;

	if (!s)
		return ST_E_INVAL;
	if (!hsm_label_ok(s, label) || !hpub || !hpriv)
		return ST_E_INVAL;
	switch (t) {
	case HSM_KEY_P256:
		pub_tmpl[npub++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)hsm_p256_oid,
						   sizeof(hsm_p256_oid) };
		break;
	case HSM_KEY_P384:
		pub_tmpl[npub++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)p384_oid,
						   sizeof(p384_oid) };
		break;
	case HSM_KEY_ED25519:
		pub_tmpl[npub++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)ed25519_oid,
						   sizeof(ed25519_oid) };
		break;
	case HSM_KEY_RSA3072:
		pub_tmpl[npub++] = (CK_ATTRIBUTE){ CKA_MODULUS_BITS, &bits, sizeof(bits) };
		pub_tmpl[npub++] = (CK_ATTRIBUTE){ CKA_PUBLIC_EXPONENT, (void *)f4,
						   sizeof(f4) };
		break;
	default:
		hsm_s_err(s, "unknown key type %d", (int)t);
		return ST_E_INVAL;
	}
	if (token) {
		for (size_t i = 0; i < ST_ARRAY_SIZE(classes); i++) {
			CK_OBJECT_HANDLE found[2];
			CK_ULONG n;

			err = hsm_find_objs(s, classes[i], label, found, &n);
			if (err)
				return err;
			if (n) {
				hsm_s_err(s, "a %s labelled '%s' already exists",
					  hsm_class_name(classes[i]), label);
				return ST_E_EXISTS;
			}
		}
	}
	rv = s->h->fl->C_GenerateKeyPair(s->sh, &mech, pub_tmpl, npub,
					 priv_tmpl, ST_ARRAY_SIZE(priv_tmpl),
					 hpub, hpriv);
	if (rv == CKR_MECHANISM_INVALID) {
		hsm_s_err(s, "the token cannot make %s keys: it does not offer %s",
			  hsm_keytype_name(t), hsm_mech_name(hsm_keytype_genmech(t)));
		return ST_E_HSM;
	}
	if (rv != CKR_OK)
		return hsm_s_rv_pair(s, "C_GenerateKeyPair",
				     rv, pub_tmpl, npub, priv_tmpl, ST_ARRAY_SIZE(priv_tmpl));
	return ST_OK;
}

int hsm_keygen(hsm_session *s, hsm_keytype t, const char *label, bool token,
	       hsm_obj *priv)
{
	CK_OBJECT_HANDLE hpub, hpriv;
	int err;

	if (!priv)
		return ST_E_INVAL;
	err = keygen_any(s, t, label, token, &hpub, &hpriv);
	if (err)
		return err;
	*priv = hpriv;
	return ST_OK;
}

/* The P-256 pair the station has always made (CA keys, tests, bench):
 * hsm_keygen's rules, and the public point read back.  A half-usable pair
 * would block the label forever: on failure both halves are removed. */
int hsm_keygen_p256(hsm_session *s, const char *label, bool token,
		    uint8_t pub[HSM_P256_POINT_LEN], hsm_obj *priv)
{
	CK_OBJECT_HANDLE hpub, hpriv;
	int err;

	if (!s || !pub || !priv)
		return ST_E_INVAL;
	err = keygen_any(s, HSM_KEY_P256, label, token, &hpub, &hpriv);
	if (err)
		return err;
	err = hsm_read_point(s, hpub, pub);
	if (err) {
		s->h->fl->C_DestroyObject(s->sh, hpriv);
		s->h->fl->C_DestroyObject(s->sh, hpub);
		return err;
	}
	*priv = hpriv;
	return ST_OK;
}

#define TMPL_MAX 16
#define TMP_ID_LEN 96

/* This process's CKA_ID for temporary token objects: "host:pid". */
static void tmp_id(char id[TMP_ID_LEN])
{
	char host[64] = "";

	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	snprintf(id, TMP_ID_LEN, "%s:%ld", host, (long)getpid());
}

/* in without CKA_TOKEN, CKA_LABEL and CKA_ID, then those three for a
 * temporary token object; the count, or 0 when it does not fit. */
static CK_ULONG tmp_template(CK_ATTRIBUTE out[TMPL_MAX], const CK_ATTRIBUTE *in,
			     CK_ULONG n, CK_BBOOL *yes, char *id)
{
	static const char label[] = HSM_TMP_LABEL;
	CK_ULONG k = 0;

	for (CK_ULONG i = 0; i < n; i++) {
		if (in[i].type == CKA_TOKEN || in[i].type == CKA_LABEL ||
		    in[i].type == CKA_ID)
			continue;
		if (k + 3 >= TMPL_MAX)
			return 0;
		out[k++] = in[i];
	}
	out[k++] = (CK_ATTRIBUTE){ CKA_TOKEN, yes, sizeof(*yes) };
	out[k++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)label, sizeof(label) - 1 };
	out[k++] = (CK_ATTRIBUTE){ CKA_ID, id, strlen(id) };
	return k;
}

/* Try session objects first (fast, and gone with the session whatever
 * happens); only a refusal of CKA_TOKEN false itself switches the handle
 * to token objects, and only once the token form has worked, so another
 * template error is reported as it is. */
CK_RV hsm_genpair_tmp(hsm_session *s, CK_MECHANISM *mech,
		      const CK_ATTRIBUTE *pub, CK_ULONG npub,
		      const CK_ATTRIBUTE *priv, CK_ULONG npriv,
		      CK_OBJECT_HANDLE *hpub, CK_OBJECT_HANDLE *hpriv)
{
	CK_ATTRIBUTE tp[TMPL_MAX], tv[TMPL_MAX];
	CK_BBOOL yes = CK_TRUE;
	char id[TMP_ID_LEN];
	CK_ULONG np, nv;
	CK_RV rv = CKR_OK, first;

	if (!atomic_load(&s->h->tmp_on_token)) {
		rv = s->h->fl->C_GenerateKeyPair(s->sh, mech, (CK_ATTRIBUTE *)pub, npub,
						 (CK_ATTRIBUTE *)priv, npriv, hpub, hpriv);
		if (rv != CKR_ATTRIBUTE_VALUE_INVALID && rv != CKR_TEMPLATE_INCONSISTENT)
			return rv;
	}
	first = rv;
	tmp_id(id);
	np = tmp_template(tp, pub, npub, &yes, id);
	nv = tmp_template(tv, priv, npriv, &yes, id);
	if (!np || !nv)
		return CKR_ARGUMENTS_BAD;
	rv = s->h->fl->C_GenerateKeyPair(s->sh, mech, tp, np, tv, nv, hpub, hpriv);
	if (rv == CKR_OK)
		atomic_store(&s->h->tmp_on_token, true);
	else if (first != CKR_OK)
		return first;   /* not a session-object refusal after all */
	return rv;
}

/* Is the "host:pid" in id a process of this host that is gone? */
static bool tmp_orphan(const char *id, size_t len)
{
	char buf[TMP_ID_LEN], mine[TMP_ID_LEN], *colon, *end;
	long pid;

	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, id, len);
	buf[len] = '\0';
	colon = strrchr(buf, ':');
	if (!colon)
		return false;
	tmp_id(mine);
	if (strncmp(buf, mine, (size_t)(colon - buf) + 1))
		return false;   /* another host's: it may be at work */
	errno = 0;
	pid = strtol(colon + 1, &end, 10);
	if (errno || *end || pid <= 0 || pid > INT_MAX)
		return false;
	if (pid == (long)getpid())
		return false;
	return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

int hsm_tmp_sweep(hsm *h, unsigned *n)
{
	static const char label[] = HSM_TMP_LABEL;
	CK_ATTRIBUTE tmpl[] = { { CKA_LABEL, (void *)label, sizeof(label) - 1 } };
	CK_OBJECT_HANDLE found[64];
	CK_ULONG k = 0;
	CK_FUNCTION_LIST *fl = h->fl;
	CK_RV rv, frv;

	*n = 0;
	rv = fl->C_FindObjectsInit(h->main, tmpl, ST_ARRAY_SIZE(tmpl));
	if (rv != CKR_OK)
		return hsm_h_rv(h, "C_FindObjectsInit(" HSM_TMP_LABEL ")", rv);
	rv = fl->C_FindObjects(h->main, found, ST_ARRAY_SIZE(found), &k);
	frv = fl->C_FindObjectsFinal(h->main);
	if (rv != CKR_OK)
		return hsm_h_rv(h, "C_FindObjects(" HSM_TMP_LABEL ")", rv);
	if (frv != CKR_OK)
		return hsm_h_rv(h, "C_FindObjectsFinal", frv);
	for (CK_ULONG i = 0; i < k; i++) {
		char id[TMP_ID_LEN];
		CK_ATTRIBUTE a = { CKA_ID, id, sizeof(id) };

		if (fl->C_GetAttributeValue(h->main, found[i], &a, 1) != CKR_OK ||
		    a.ulValueLen == CK_UNAVAILABLE_INFORMATION ||
		    !tmp_orphan(id, a.ulValueLen))
			continue;
		if (fl->C_DestroyObject(h->main, found[i]) == CKR_OK)
			(*n)++;
	}
	return ST_OK;
}

/* CKA_EC_POINT is a DER OCTET STRING by the spec, bare in some modules:
 * return the bare point if it has the expected length either way. */
static const uint8_t *bare_point(const uint8_t *buf, size_t len, size_t want)
{
	if (len == want + 2 && buf[0] == 0x04 && buf[1] == want)
		return buf + 2;
	if (len == want + 3 && buf[0] == 0x04 && buf[1] == 0x81 && buf[2] == want)
		return buf + 3;
	if (len == want)
		return buf;
	return NULL;
}

/* An RSA public key as a SubjectPublicKeyInfo, via OpenSSL's encoder. */
static int rsa_spki(hsm_session *s, CK_OBJECT_HANDLE o, uint8_t **der, size_t *len)
{
	uint8_t *n = NULL, *e = NULL;
	size_t nlen = 0, elen = 0;
	BIGNUM *bn = NULL, *be = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *key = NULL;
	unsigned char *p = NULL;
	int err, l;

	err = hsm_get_attr(s, o, CKA_MODULUS, "CKA_MODULUS", &n, &nlen);
	if (!err)
		err = hsm_get_attr(s, o, CKA_PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT", &e, &elen);
	if (err)
		goto out;
	err = ST_E_CRYPTO;
	bn = BN_bin2bn(n, (int)nlen, NULL);
	be = BN_bin2bn(e, (int)elen, NULL);
	bld = OSSL_PARAM_BLD_new();
	if (!bn || !be || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) ||
	    !(params = OSSL_PARAM_BLD_to_param(bld)) ||
	    !(ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) ||
	    EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) <= 0 ||
	    (l = i2d_PUBKEY(key, &p)) <= 0) {
		hsm_s_err(s, "the token's RSA public key does not encode");
		goto out;
	}
	*der = malloc((size_t)l);
	if (!*der) {
		err = ST_E_NOMEM;
		goto out;
	}
	memcpy(*der, p, (size_t)l);
	*len = (size_t)l;
	err = ST_OK;
out:
	OPENSSL_free(p);
	EVP_PKEY_free(key);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	free(n);
	free(e);
	return err;
}

/* An EC or Ed25519 public key as a SubjectPublicKeyInfo.  Parsed back with
 * OpenSSL so a point that is not on the curve is refused here. */
static int ec_spki(hsm_session *s, CK_OBJECT_HANDLE o, hsm_keytype *type,
		   uint8_t **der, size_t *len)
{
	uint8_t *params = NULL, *pt = NULL, *enc = NULL, *p = NULL;
	const uint8_t *bare, *cp;
	size_t plen = 0, ptlen = 0, want;
	X509_PUBKEY *xpk = NULL;
	EVP_PKEY *check = NULL;
	int err, nid, l;

	err = hsm_get_attr(s, o, CKA_EC_PARAMS, "CKA_EC_PARAMS", &params, &plen);
	if (!err)
		err = hsm_get_attr(s, o, CKA_EC_POINT, "CKA_EC_POINT", &pt, &ptlen);
	if (err)
		goto out;
	err = ST_E_HSM;
	if (plen == sizeof(hsm_p256_oid) && !memcmp(params, hsm_p256_oid, plen)) {
		*type = HSM_KEY_P256, nid = NID_X9_62_prime256v1, want = 65;
	} else if (plen == sizeof(p384_oid) && !memcmp(params, p384_oid, plen)) {
		*type = HSM_KEY_P384, nid = NID_secp384r1, want = 97;
	} else if ((plen == sizeof(ed25519_oid) && !memcmp(params, ed25519_oid, plen)) ||
		   (plen == 14 && !memcmp(params, "\x13\x0c" "edwards25519", 14))) {
		*type = HSM_KEY_ED25519, nid = NID_ED25519, want = 32;
	} else {
		hsm_s_err(s, "the key's curve is not one the station supports "
			  "(P-256, P-384, Ed25519)");
		goto out;
	}
	bare = bare_point(pt, ptlen, want);
	if (!bare) {
		hsm_s_err(s, "CKA_EC_POINT has %zu bytes, not a %s public key", ptlen,
			  hsm_keytype_name(*type));
		goto out;
	}
	err = ST_E_CRYPTO;
	enc = OPENSSL_malloc(want);
	xpk = X509_PUBKEY_new();
	if (!enc || !xpk)
		goto out;
	memcpy(enc, bare, want);
	if (nid == NID_ED25519)
		l = X509_PUBKEY_set0_param(xpk, OBJ_nid2obj(NID_ED25519), V_ASN1_UNDEF,
					   NULL, enc, (int)want);
	else
		l = X509_PUBKEY_set0_param(xpk, OBJ_nid2obj(NID_X9_62_id_ecPublicKey),
					   V_ASN1_OBJECT, OBJ_nid2obj(nid), enc, (int)want);
	if (!l)
		goto out;
	enc = NULL;
	l = i2d_X509_PUBKEY(xpk, &p);
	cp = p;
	if (l <= 0 || !(check = d2i_PUBKEY(NULL, &cp, l))) {
		hsm_s_err(s, "the token's %s public key is not valid", hsm_keytype_name(*type));
		goto out;
	}
	*der = malloc((size_t)l);
	if (!*der) {
		err = ST_E_NOMEM;
		goto out;
	}
	memcpy(*der, p, (size_t)l);
	*len = (size_t)l;
	err = ST_OK;
out:
	EVP_PKEY_free(check);
	OPENSSL_free(p);
	OPENSSL_free(enc);
	X509_PUBKEY_free(xpk);
	free(params);
	free(pt);
	ERR_clear_error();
	return err;
}

/* Read from the token each time, so that what gets certified is what the
 * HSM holds. */
int hsm_pubkey_spki(hsm_session *s, const char *label, uint8_t **der,
		    size_t *len, hsm_keytype *type)
{
	CK_OBJECT_HANDLE o;
	CK_KEY_TYPE kt;
	CK_ATTRIBUTE a = { CKA_KEY_TYPE, &kt, sizeof(kt) };
	CK_RV rv;
	int err;

	if (!s)
		return ST_E_INVAL;
	if (!hsm_label_ok(s, label) || !der || !len || !type)
		return ST_E_INVAL;
	*der = NULL;
	err = hsm_find_one(s, CKO_PUBLIC_KEY, label, &o);
	if (err)
		return err;
	rv = s->h->fl->C_GetAttributeValue(s->sh, o, &a, 1);
	if (rv != CKR_OK)
		return hsm_s_rv(s, "C_GetAttributeValue(CKA_KEY_TYPE)", rv);
	if (kt == CKK_RSA) {
		*type = HSM_KEY_RSA3072;
		return rsa_spki(s, o, der, len);
	}
	if (kt == CKK_EC || kt == CKK_EC_EDWARDS)
		return ec_spki(s, o, type, der, len);
	hsm_s_err(s, "the key labelled '%s' has a key type the station does not use "
		  "(0x%lx)", label, (unsigned long)kt);
	return ST_E_HSM;
}

int hsm_sign(hsm_session *s, hsm_obj priv, hsm_sigmech m, const uint8_t *in,
	     size_t inlen, uint8_t *out, size_t cap, size_t *outlen)
{
	CK_MECHANISM mech = { 0, NULL, 0 };
	CK_ULONG siglen = (CK_ULONG)cap;
	CK_RV rv;

	if (!s)
		return ST_E_INVAL;
	if (!in || !inlen || inlen > 1 << 20 || !out || !outlen) {
		hsm_s_err(s, "hsm_sign: need input and an output buffer");
		return ST_E_INVAL;
	}
	mech.mechanism = m == HSM_SIG_ECDSA ? CKM_ECDSA :
			 m == HSM_SIG_RSA_PKCS ? CKM_RSA_PKCS :
			 m == HSM_SIG_EDDSA ? CKM_EDDSA : CKM_VENDOR_DEFINED;
	rv = s->h->fl->C_SignInit(s->sh, &mech, (CK_OBJECT_HANDLE)priv);
	if (rv == CKR_MECHANISM_INVALID) {
		hsm_s_err(s, "C_SignInit: the token does not offer %s",
			  m == HSM_SIG_ECDSA ? "CKM_ECDSA" : m == HSM_SIG_RSA_PKCS ?
			  "CKM_RSA_PKCS" : "CKM_EDDSA");
		return ST_E_HSM;
	}
	if (rv != CKR_OK)
		return hsm_s_rv(s, "C_SignInit", rv);
	rv = s->h->fl->C_Sign(s->sh, (CK_BYTE_PTR)in, (CK_ULONG)inlen, out, &siglen);
	if (rv != CKR_OK)
		return hsm_s_rv(s, "C_Sign", rv);
	*outlen = siglen;
	return ST_OK;
}

/* hsm_sign with CKM_ECDSA for a P-256 key.  Hashing happens on the host
 * because many HSMs (SoftHSM included) have no CKM_ECDSA_SHA256.  out must
 * hold HSM_P256_SIG_LEN bytes; *outlen is only written (the signature
 * length), never read, so an uninitialised length is harmless.  A
 * signature of another length means the key is not P-256 and is refused
 * rather than truncated. */
int hsm_sign_digest(hsm_session *s, hsm_obj priv, const uint8_t *digest,
		    size_t dlen, uint8_t *out, size_t *outlen)
{
	uint8_t sig[HSM_MAX_SIG_LEN];
	size_t siglen;
	int err;

	if (!s)
		return ST_E_INVAL;
	if (!digest || dlen == 0 || dlen > 64 || !out || !outlen) {
		hsm_s_err(s, "hsm_sign_digest: need a 1..64 byte digest and "
			  "an output buffer");
		return ST_E_INVAL;
	}
	err = hsm_sign(s, priv, HSM_SIG_ECDSA, digest, dlen, sig, sizeof(sig),
		       &siglen);
	if (err)
		return err;
	if (siglen != HSM_P256_SIG_LEN) {
		hsm_s_err(s, "C_Sign returned %zu bytes, not a P-256 signature",
			  siglen);
		return ST_E_HSM;
	}
	memcpy(out, sig, HSM_P256_SIG_LEN);
	*outlen = HSM_P256_SIG_LEN;
	return ST_OK;
}

/* Serial numbers and nonces come from the token's generator so that their
 * quality does not depend on the host. */
int hsm_random(hsm_session *s, uint8_t *buf, size_t n)
{
	CK_RV rv;

	if (!s)
		return ST_E_INVAL;
	if (n == 0)
		return ST_OK;
	if (!buf || n > ULONG_MAX) {
		hsm_s_err(s, "hsm_random: bad buffer");
		return ST_E_INVAL;
	}
	rv = s->h->fl->C_GenerateRandom(s->sh, buf, (CK_ULONG)n);
	if (rv != CKR_OK)
		return hsm_s_rv(s, "C_GenerateRandom", rv);
	return ST_OK;
}

/* wrap.c — wrapped key injection: a device key pair made in the token,
 * wrapped for the target with an ephemeral ECDH key and AES key wrap. */
#include "hsm.h"
#include "hsm_int.h"
#include "base.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

/* The wrap mechanism for want, from what the token offers; 0 if none. */
static CK_MECHANISM_TYPE pick_wrap(hsm *h, hsm_wrapmech want)
{
	bool kwp = want != HSM_WRAP_PAD && hsm_has_mech(h, CKM_AES_KEY_WRAP_KWP);

	if (kwp)
		return CKM_AES_KEY_WRAP_KWP;
	if (want != HSM_WRAP_KWP && hsm_has_mech(h, CKM_AES_KEY_WRAP_PAD))
		return CKM_AES_KEY_WRAP_PAD;
	return 0;
}

static const char *wrap_name(CK_MECHANISM_TYPE m)
{
	return m == CKM_AES_KEY_WRAP_KWP ? "CKM_AES_KEY_WRAP_KWP" :
	       m == CKM_AES_KEY_WRAP_PAD ? "CKM_AES_KEY_WRAP_PAD" : NULL;
}

const char *hsm_inject_mech(const hsm *h)
{
	return h ? wrap_name(h->wrap) : NULL;
}

/* The known-answer test's fixed inputs: a 20-byte secret (not a multiple
 * of 8, so RFC 5649's padding is exercised as it is for a PKCS#8 device
 * key) and an AES-256 wrapping key.  Test values, not secrets. */
static const CK_BYTE kat_kek[32] = {
	0x5d, 0x0d, 0x35, 0x9b, 0x4c, 0x6b, 0x61, 0x54, 0x0a, 0x8a, 0x71, 0x38,
	0x6e, 0x23, 0xb5, 0x0c, 0x91, 0xfe, 0x1f, 0x7a, 0x2c, 0x45, 0x83, 0xd0,
	0x6a, 0x17, 0xe9, 0x3f, 0x0b, 0xc4, 0x52, 0xa6,
};
static const CK_BYTE kat_key[20] = {
	0xc3, 0x7b, 0x7e, 0x64, 0x92, 0x58, 0x43, 0x40, 0xbe, 0xd1, 0x22, 0x07,
	0x80, 0x89, 0x41, 0x15, 0x50, 0x68, 0xf7, 0x38,
};

/* RFC 5649 of kat_key under kat_kek, by OpenSSL. */
static int kat_expected(uint8_t *out, int cap, int *len)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n = 0, f = 0, ok;

	ok = c && cap >= (int)sizeof(kat_key) + 16 &&
	     EVP_EncryptInit_ex(c, EVP_aes_256_wrap_pad(), NULL, kat_kek, NULL) == 1 &&
	     EVP_EncryptUpdate(c, out, &n, kat_key, (int)sizeof(kat_key)) == 1 &&
	     EVP_EncryptFinal_ex(c, out + n, &f) == 1;
	EVP_CIPHER_CTX_free(c);
	ERR_clear_error();
	*len = n + f;
	return ok ? ST_OK : ST_E_CRYPTO;
}

/* SoftHSM pads the key with zero bytes to a multiple of 8 before its RFC
 * 5649 wrap (so the MLI counts them): the output is RFC 5649, of the key
 * and up to 7 zero bytes, which the device's DER parser of the PKCS#8
 * inside ignores.  True when out unwraps (OpenSSL, RFC 5649's integrity
 * check) to exactly that. */
static bool kat_zero_padded(const uint8_t *out, CK_ULONG len)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	uint8_t plain[64];
	int n = 0, f = 0;
	bool ok;

	ok = c && len <= sizeof(plain) &&
	     EVP_DecryptInit_ex(c, EVP_aes_256_wrap_pad(), NULL, kat_kek, NULL) == 1 &&
	     EVP_DecryptUpdate(c, plain, &n, out, (int)len) == 1 &&
	     EVP_DecryptFinal_ex(c, plain + n, &f) == 1;
	EVP_CIPHER_CTX_free(c);
	ERR_clear_error();
	n += f;
	ok = ok && n >= (int)sizeof(kat_key) && n < (int)sizeof(kat_key) + 8 &&
	     !memcmp(plain, kat_key, sizeof(kat_key));
	for (int i = (int)sizeof(kat_key); ok && i < n; i++)
		ok = plain[i] == 0;
	return ok;
}

int hsm_inject_check(hsm *h, hsm_wrapmech want)
{
	CK_OBJECT_CLASS kcls = CKO_SECRET_KEY;
	CK_KEY_TYPE aes = CKK_AES, gen = CKK_GENERIC_SECRET;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE kek_tmpl[] = {
		{ CKA_CLASS, &kcls, sizeof(kcls) },
		{ CKA_KEY_TYPE, &aes, sizeof(aes) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_WRAP, &yes, sizeof(yes) },
		{ CKA_VALUE, (void *)kat_kek, sizeof(kat_kek) },
	};
	CK_ATTRIBUTE key_tmpl[] = {
		{ CKA_CLASS, &kcls, sizeof(kcls) },
		{ CKA_KEY_TYPE, &gen, sizeof(gen) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &no, sizeof(no) },
		{ CKA_VALUE, (void *)kat_key, sizeof(kat_key) },
	};
	CK_OBJECT_HANDLE kek = CK_INVALID_HANDLE, key = CK_INVALID_HANDLE;
	CK_MECHANISM mech = { 0, NULL, 0 };
	hsm_session *s = NULL;
	uint8_t got[64], want_out[64];
	CK_ULONG glen = sizeof(got);
	int wlen = 0, err;
	CK_RV rv;

	if (!h || !h->fl)
		return ST_E_INVAL;
	h->wrap = 0;
	mech.mechanism = pick_wrap(h, want);
	if (!mech.mechanism) {
		hsm_h_err(h, "the token offers neither CKM_AES_KEY_WRAP_KWP nor "
			  "CKM_AES_KEY_WRAP_PAD%s, which key injection needs: set "
			  "key_mode = \"device\" in the profile (the device makes its own "
			  "key), or use a token that offers CKM_AES_KEY_WRAP_KWP",
			  want == HSM_WRAP_AUTO ? "" : " (as asked)");
		return ST_E_HSM;
	}
	err = kat_expected(want_out, sizeof(want_out), &wlen);
	if (err) {
		hsm_h_err(h, "cannot compute the RFC 5649 known answer with OpenSSL");
		return err;
	}
	err = hsm_session_open(h, &s);
	if (err)
		return err;
	rv = h->fl->C_CreateObject(s->sh, kek_tmpl, ST_ARRAY_SIZE(kek_tmpl), &kek);
	if (rv != CKR_OK) {
		err = hsm_s_rv_tmpl(s, "C_CreateObject(key wrap test: AES key)", rv,
				    kek_tmpl, ST_ARRAY_SIZE(kek_tmpl));
		goto out;
	}
	rv = h->fl->C_CreateObject(s->sh, key_tmpl, ST_ARRAY_SIZE(key_tmpl), &key);
	if (rv != CKR_OK) {
		err = hsm_s_rv_tmpl(s, "C_CreateObject(key wrap test: secret)", rv,
				    key_tmpl, ST_ARRAY_SIZE(key_tmpl));
		goto out;
	}
	rv = h->fl->C_WrapKey(s->sh, &mech, kek, key, got, &glen);
	if (rv != CKR_OK) {
		char fn[80];

		snprintf(fn, sizeof(fn), "C_WrapKey(%s, key wrap test)",
			 wrap_name(mech.mechanism));
		err = hsm_s_rv(s, fn, rv);
		goto out;
	}
	if ((glen != (CK_ULONG)wlen || memcmp(got, want_out, glen)) &&
	    !kat_zero_padded(got, glen)) {
		hsm_s_err(s, "the token's %s output is not RFC 5649 (known-answer test: "
			  "%lu bytes, RFC 5649 gives %d%s), which is what the device "
			  "unwraps: key injection with this token would fail on every "
			  "unit; set key_mode = \"device\" in the profile, or use a token "
			  "whose CKM_AES_KEY_WRAP_KWP (0x210B) follows RFC 5649",
			  wrap_name(mech.mechanism), (unsigned long)glen, wlen,
			  mech.mechanism == CKM_AES_KEY_WRAP_PAD ? "; this module reads "
			  "0x210A as PKCS#7 padding + RFC 3394" : "");
		err = ST_E_HSM;
		goto out;
	}
	h->wrap = mech.mechanism;
	err = ST_OK;
out:
	if (err)
		hsm_h_err(h, "%s", s->err);
	if (key != CK_INVALID_HANDLE)
		h->fl->C_DestroyObject(s->sh, key);
	if (kek != CK_INVALID_HANDLE)
		h->fl->C_DestroyObject(s->sh, kek);
	hsm_session_close(s);
	return err;
}

int hsm_inject_keygen(hsm_session *s, hsm_obj *priv, hsm_obj *pubobj,
		      uint8_t pub[HSM_P256_POINT_LEN])
{
	CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	static const char label[] = HSM_INJECT_LABEL;
	CK_ATTRIBUTE pub_tmpl[] = {
		{ CKA_EC_PARAMS, (void *)hsm_p256_oid, sizeof(hsm_p256_oid) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_VERIFY, &no, sizeof(no) },
		{ CKA_LABEL, (void *)label, sizeof(label) - 1 },
	};
	/* Extractable only so that C_WrapKey may export it; sensitive, so
	 * never in clear; no sign/derive: the HSM never uses it itself. */
	CK_ATTRIBUTE priv_tmpl[] = {
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
		{ CKA_SIGN, &no, sizeof(no) },
		{ CKA_DERIVE, &no, sizeof(no) },
		{ CKA_LABEL, (void *)label, sizeof(label) - 1 },
	};
	CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE, hpriv = CK_INVALID_HANDLE;
	CK_RV rv;
	int err;

	if (!s || !priv || !pubobj || !pub)
		return ST_E_INVAL;
	rv = hsm_genpair_tmp(s, &mech, pub_tmpl, ST_ARRAY_SIZE(pub_tmpl),
			     priv_tmpl, ST_ARRAY_SIZE(priv_tmpl), &hpub, &hpriv);
	if (rv != CKR_OK)
		return hsm_s_rv_pair(s, "C_GenerateKeyPair(device key)", rv, pub_tmpl, ST_ARRAY_SIZE(pub_tmpl),
				     priv_tmpl, ST_ARRAY_SIZE(priv_tmpl));
	err = hsm_read_point(s, hpub, pub);
	if (err) {
		s->h->fl->C_DestroyObject(s->sh, hpriv);
		s->h->fl->C_DestroyObject(s->sh, hpub);
		return err;
	}
	*priv = hpriv;
	*pubobj = hpub;
	return ST_OK;
}

int hsm_inject_wrap(hsm_session *s, hsm_obj priv,
		    const uint8_t transport[HSM_P256_POINT_LEN],
		    uint8_t eph[HSM_P256_POINT_LEN], uint8_t *wrapped,
		    size_t cap, size_t *wlen)
{
	CK_MECHANISM gen = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE epub_tmpl[] = {
		{ CKA_EC_PARAMS, (void *)hsm_p256_oid, sizeof(hsm_p256_oid) },
		{ CKA_TOKEN, &no, sizeof(no) },
	};
	CK_ATTRIBUTE epriv_tmpl[] = {
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_DERIVE, &yes, sizeof(yes) },
	};
	CK_OBJECT_CLASS kcls = CKO_SECRET_KEY;
	CK_KEY_TYPE ktype = CKK_AES;
	CK_ULONG klen = 32;
	CK_ATTRIBUTE kek_tmpl[] = {
		{ CKA_CLASS, &kcls, sizeof(kcls) },
		{ CKA_KEY_TYPE, &ktype, sizeof(ktype) },
		{ CKA_VALUE_LEN, &klen, sizeof(klen) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_WRAP, &yes, sizeof(yes) },
	};
	CK_ECDH1_DERIVE_PARAMS ep = { CKD_NULL, 0, NULL, HSM_P256_POINT_LEN,
				      (CK_BYTE_PTR)transport };
	CK_MECHANISM derive = { CKM_ECDH1_DERIVE, &ep, sizeof(ep) };
	CK_MECHANISM wrap = { 0, NULL, 0 };
	CK_OBJECT_HANDLE hepub = CK_INVALID_HANDLE, hepriv = CK_INVALID_HANDLE;
	CK_OBJECT_HANDLE kek = CK_INVALID_HANDLE;
	CK_ULONG outlen = (CK_ULONG)cap;
	CK_FUNCTION_LIST *fl;
	CK_RV rv;
	int err;

	if (!s)
		return ST_E_INVAL;
	if (!transport || transport[0] != 0x04 || !eph || !wrapped || !wlen) {
		hsm_s_err(s, "hsm_inject_wrap: need an uncompressed P-256 transport key");
		return ST_E_INVAL;
	}
	fl = s->h->fl;
	rv = hsm_genpair_tmp(s, &gen, epub_tmpl, ST_ARRAY_SIZE(epub_tmpl),
			     epriv_tmpl, ST_ARRAY_SIZE(epriv_tmpl), &hepub, &hepriv);
	if (rv != CKR_OK)
		return hsm_s_rv_pair(s, "C_GenerateKeyPair(ephemeral)", rv, epub_tmpl, ST_ARRAY_SIZE(epub_tmpl),
				     epriv_tmpl, ST_ARRAY_SIZE(epriv_tmpl));
	err = hsm_read_point(s, hepub, eph);
	if (err)
		goto out;
	rv = fl->C_DeriveKey(s->sh, &derive, hepriv, kek_tmpl, ST_ARRAY_SIZE(kek_tmpl), &kek);
	if (rv != CKR_OK) {
		err = hsm_s_rv_tmpl(s, "C_DeriveKey(CKM_ECDH1_DERIVE)", rv, kek_tmpl,
				    ST_ARRAY_SIZE(kek_tmpl));
		if (rv == CKR_MECHANISM_PARAM_INVALID || rv == CKR_DOMAIN_PARAMS_INVALID)
			hsm_s_err(s, "C_DeriveKey(CKM_ECDH1_DERIVE): the device's transport "
				  "key was refused (not a P-256 point)");
		goto out;
	}
	/* The run's start chose it (hsm_inject_check); the derive's failure
	 * on a module without ECDH is said before this one. */
	wrap.mechanism = s->h->wrap ? s->h->wrap : pick_wrap(s->h, HSM_WRAP_AUTO);
	if (!wrap.mechanism) {
		hsm_s_err(s, "the token offers neither CKM_AES_KEY_WRAP_KWP nor "
			  "CKM_AES_KEY_WRAP_PAD: set key_mode = \"device\" in the profile");
		err = ST_E_HSM;
		goto out;
	}
	rv = fl->C_WrapKey(s->sh, &wrap, kek, (CK_OBJECT_HANDLE)priv, wrapped, &outlen);
	if (rv != CKR_OK) {
		char fn[64];

		snprintf(fn, sizeof(fn), "C_WrapKey(%s)", wrap_name(wrap.mechanism));
		err = hsm_s_rv(s, fn, rv);
		goto out;
	}
	*wlen = outlen;
	err = ST_OK;
out:
	if (kek != CK_INVALID_HANDLE)
		fl->C_DestroyObject(s->sh, kek);
	fl->C_DestroyObject(s->sh, hepriv);
	fl->C_DestroyObject(s->sh, hepub);
	return err;
}

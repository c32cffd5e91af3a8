/* wrap.c — wrapped key injection: a device key pair made in the token,
 * wrapped for the target with an ephemeral ECDH key and AES key wrap. */
#include "hsm.h"
#include "hsm_int.h"
#include "base.h"

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
		return hsm_s_rv(s, "C_GenerateKeyPair(device key)", rv);
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
	CK_MECHANISM wrap = { CKM_AES_KEY_WRAP_PAD, NULL, 0 };
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
		return hsm_s_rv(s, "C_GenerateKeyPair(ephemeral)", rv);
	err = hsm_read_point(s, hepub, eph);
	if (err)
		goto out;
	rv = fl->C_DeriveKey(s->sh, &derive, hepriv, kek_tmpl, ST_ARRAY_SIZE(kek_tmpl), &kek);
	if (rv != CKR_OK) {
		err = hsm_s_rv(s, "C_DeriveKey(CKM_ECDH1_DERIVE)", rv);
		if (rv == CKR_MECHANISM_PARAM_INVALID || rv == CKR_DOMAIN_PARAMS_INVALID)
			hsm_s_err(s, "C_DeriveKey(CKM_ECDH1_DERIVE): the device's transport "
				  "key was refused (not a P-256 point)");
		goto out;
	}
	rv = fl->C_WrapKey(s->sh, &wrap, kek, (CK_OBJECT_HANDLE)priv, wrapped, &outlen);
	if (rv != CKR_OK) {
		err = hsm_s_rv(s, "C_WrapKey(CKM_AES_KEY_WRAP_PAD)", rv);
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

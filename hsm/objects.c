/* objects.c — finding token objects by label, listing them, certificate
 * and data objects, and removing what a label holds. */
#include "hsm.h"
#include "hsm_int.h"
#include "base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* Object kinds as the operator reads them in messages. */
const char *hsm_class_name(CK_OBJECT_CLASS cls)
{
	switch (cls) {
	case CKO_PRIVATE_KEY:
		return "private key";
	case CKO_PUBLIC_KEY:
		return "public key";
	case CKO_CERTIFICATE:
		return "certificate";
	default:
		return "object";
	}
}

/* Count objects of class cls labelled label, up to two: callers need to
 * tell none, exactly one and ambiguous apart.  The search is always
 * finalised so the session stays usable. */
int hsm_find_objs(hsm_session *s, CK_OBJECT_CLASS cls, const char *label,
		  CK_OBJECT_HANDLE found[2], CK_ULONG *n)
{
	CK_FUNCTION_LIST *fl = s->h->fl;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_RV rv, frv;

	*n = 0;
	rv = fl->C_FindObjectsInit(s->sh, tmpl, ST_ARRAY_SIZE(tmpl));
	if (rv != CKR_OK)
		return hsm_s_rv(s, "C_FindObjectsInit", rv);
	rv = fl->C_FindObjects(s->sh, found, 2, n);
	frv = fl->C_FindObjectsFinal(s->sh);
	if (rv != CKR_OK)
		return hsm_s_rv(s, "C_FindObjects", rv);
	if (frv != CKR_OK)
		return hsm_s_rv(s, "C_FindObjectsFinal", frv);
	return ST_OK;
}

/* Exactly one object, or a clear reason why not: using the wrong one of two
 * equally labelled keys would sign with the wrong identity. */
int hsm_find_one(hsm_session *s, CK_OBJECT_CLASS cls, const char *label,
		 CK_OBJECT_HANDLE *obj)
{
	CK_OBJECT_HANDLE found[2];
	CK_ULONG n;
	int err;

	err = hsm_find_objs(s, cls, label, found, &n);
	if (err)
		return err;
	if (n == 0) {
		hsm_s_err(s, "no %s labelled '%s'", hsm_class_name(cls), label);
		return ST_E_NOTFOUND;
	}
	if (n > 1) {
		hsm_s_err(s, "more than one %s labelled '%s'", hsm_class_name(cls),
			  label);
		return ST_E_HSM;
	}
	*obj = found[0];
	return ST_OK;
}

/* Modules differ: the spec says CKA_EC_POINT is a DER OCTET STRING, some
 * return the bare point.  Accept both, nothing else. */
int hsm_read_point(hsm_session *s, CK_OBJECT_HANDLE pub,
		   uint8_t point[HSM_P256_POINT_LEN])
{
	CK_BYTE buf[128];
	CK_ATTRIBUTE a = { CKA_EC_POINT, buf, sizeof(buf) };
	CK_RV rv;

	rv = s->h->fl->C_GetAttributeValue(s->sh, pub, &a, 1);
	if (rv == CKR_BUFFER_TOO_SMALL) {
		hsm_s_err(s, "CKA_EC_POINT is too long for a P-256 point");
		return ST_E_HSM;
	}
	if (rv != CKR_OK)
		return hsm_s_rv(s, "C_GetAttributeValue(CKA_EC_POINT)", rv);
	if (a.ulValueLen == HSM_P256_POINT_LEN + 2 && buf[0] == 0x04 &&
	    buf[1] == HSM_P256_POINT_LEN && buf[2] == 0x04) {
		memcpy(point, buf + 2, HSM_P256_POINT_LEN);
		return ST_OK;
	}
	if (a.ulValueLen == HSM_P256_POINT_LEN && buf[0] == 0x04) {
		memcpy(point, buf, HSM_P256_POINT_LEN);
		return ST_OK;
	}
	hsm_s_err(s, "CKA_EC_POINT is not an uncompressed P-256 point "
		  "(%lu bytes)", (unsigned long)a.ulValueLen);
	return ST_E_HSM;
}

/* Object labels double as CKA_ID and lookup keys: an empty one would
 * match nothing useful, so refuse it up front with a message. */
bool hsm_label_ok(hsm_session *s, const char *label)
{
	if (label && *label)
		return true;
	hsm_s_err(s, "an object label is required");
	return false;
}

/* Lookup by label is how a persistent CA key is found again after a
 * restart; handles are only valid for this process. */
int hsm_find_privkey(hsm_session *s, const char *label, hsm_obj *priv)
{
	CK_OBJECT_HANDLE o;
	int err;

	if (!s)
		return ST_E_INVAL;
	if (!hsm_label_ok(s, label) || !priv)
		return ST_E_INVAL;
	err = hsm_find_one(s, CKO_PRIVATE_KEY, label, &o);
	if (err)
		return err;
	*priv = o;
	return ST_OK;
}

/* The public half is read from the token rather than cached, so what the
 * station certifies is what the HSM holds. */
int hsm_read_pubkey(hsm_session *s, const char *label,
		    uint8_t pub[HSM_P256_POINT_LEN])
{
	CK_OBJECT_HANDLE o;
	int err;

	if (!s)
		return ST_E_INVAL;
	if (!hsm_label_ok(s, label) || !pub)
		return ST_E_INVAL;
	err = hsm_find_one(s, CKO_PUBLIC_KEY, label, &o);
	if (err)
		return err;
	return hsm_read_point(s, o, pub);
}

/* A DER encoding (from i2d_*, len bytes or <= 0) as an attribute value. */
static int der_attr(CK_ATTRIBUTE *a, int len, unsigned char *der)
{
	if (len <= 0 || !der)
		return -1;
	a->pValue = der;
	a->ulValueLen = (CK_ULONG)len;
	return 0;
}

/* The attributes PKCS#11 lists for an X.509 certificate object, all taken
 * from the certificate itself: CKA_SUBJECT, CKA_ISSUER and
 * CKA_SERIAL_NUMBER (DER) so that modules that index certificates by
 * issuer and serial (NSS softokn refuses the object without them) and
 * tools that pair keys and certificates see a consistent token; CKA_ID is
 * the label, as on the key pair (hsm_keygen), so the certificate pairs
 * with its key by CKA_ID too; CKA_CERTIFICATE_CATEGORY says authority (a
 * CA certificate) or token user (one whose key the token holds).  The
 * category is optional: a module that predates it (CKR_ATTRIBUTE_TYPE_INVALID)
 * gets the object without it.  The cert is public (CKA_PRIVATE false):
 * reading it must not need the PIN. */
int hsm_cert_store(hsm_session *s, const char *label, const uint8_t *der,
		   size_t len)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ctype = CKC_X_509;
	CK_ULONG category;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG llen = label ? strlen(label) : 0;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_CERTIFICATE_TYPE, &ctype, sizeof(ctype) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_LABEL, (void *)label, llen },
		{ CKA_ID, (void *)label, llen },
		{ CKA_VALUE, (void *)der, (CK_ULONG)len },
		{ CKA_SUBJECT, NULL, 0 },               /* filled below */
		{ CKA_ISSUER, NULL, 0 },
		{ CKA_SERIAL_NUMBER, NULL, 0 },
		{ CKA_CERTIFICATE_CATEGORY, &category, sizeof(category) }, /* last: optional */
	};
	const size_t nt = ST_ARRAY_SIZE(tmpl);
	CK_ATTRIBUTE *subj = &tmpl[nt - 4], *iss = &tmpl[nt - 3], *ser = &tmpl[nt - 2];
	CK_OBJECT_HANDLE found[2], obj;
	CK_ULONG n;
	const unsigned char *p = der;
	unsigned char *sd = NULL, *id = NULL, *nd = NULL;
	X509 *x = NULL;
	int err, sl, il, nl;
	CK_RV rv;

	if (!s)
		return ST_E_INVAL;
	if (!hsm_label_ok(s, label))
		return ST_E_INVAL;
	if (!der || len == 0 || len > LONG_MAX) {
		hsm_s_err(s, "hsm_cert_store: empty certificate");
		return ST_E_INVAL;
	}
	x = d2i_X509(NULL, &p, (long)len);
	if (!x || p != der + len) {
		hsm_s_err(s, "certificate for '%s' is not one DER X.509 "
			  "certificate", label);
		err = ST_E_INVAL;
		goto out;
	}
	sl = i2d_X509_NAME(X509_get_subject_name(x), &sd);
	il = i2d_X509_NAME(X509_get_issuer_name(x), &id);
	nl = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &nd);
	if (der_attr(subj, sl, sd) || der_attr(iss, il, id) || der_attr(ser, nl, nd)) {
		hsm_s_err(s, "cannot encode the subject, issuer or serial number of "
			  "certificate '%s'", label);
		err = ST_E_CRYPTO;
		goto out;
	}
	category = X509_check_ca(x) >= 1 ? 2 /* authority */ : 1 /* token user */;

	err = hsm_find_objs(s, CKO_CERTIFICATE, label, found, &n);
	if (err)
		goto out;
	if (n) {
		hsm_s_err(s, "a certificate labelled '%s' already exists", label);
		err = ST_E_EXISTS;
		goto out;
	}

	rv = s->h->fl->C_CreateObject(s->sh, tmpl, nt, &obj);
	if (rv == CKR_ATTRIBUTE_TYPE_INVALID)
		rv = s->h->fl->C_CreateObject(s->sh, tmpl, nt - 1, &obj);
	if (rv != CKR_OK) {
		err = hsm_s_rv_tmpl(s, "C_CreateObject(certificate)", rv, tmpl, nt);
		goto out;
	}
	err = ST_OK;
out:
	OPENSSL_free(sd);
	OPENSSL_free(id);
	OPENSSL_free(nd);
	X509_free(x);
	ERR_clear_error();      /* the queue is per thread: leave it clean */
	return err;
}

/* Two-step read (length, then value) as PKCS#11 prescribes; the caller
 * owns the returned buffer. */
int hsm_cert_load(hsm_session *s, const char *label, uint8_t **der,
		  size_t *len)
{
	CK_OBJECT_HANDLE o;
	CK_ATTRIBUTE a = { CKA_VALUE, NULL, 0 };
	uint8_t *buf = NULL;
	CK_RV rv;
	int err;

	if (!s)
		return ST_E_INVAL;
	if (!hsm_label_ok(s, label) || !der || !len)
		return ST_E_INVAL;
	*der = NULL;
	*len = 0;
	err = hsm_find_one(s, CKO_CERTIFICATE, label, &o);
	if (err)
		return err;

	rv = s->h->fl->C_GetAttributeValue(s->sh, o, &a, 1);
	if (rv != CKR_OK)
		return hsm_s_rv(s, "C_GetAttributeValue(CKA_VALUE)", rv);
	if (a.ulValueLen == 0 || a.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
		hsm_s_err(s, "certificate '%s' has no value", label);
		return ST_E_HSM;
	}
	buf = malloc(a.ulValueLen);
	if (!buf) {
		hsm_s_err(s, "out of memory reading certificate '%s'", label);
		return ST_E_NOMEM;
	}
	a.pValue = buf;
	rv = s->h->fl->C_GetAttributeValue(s->sh, o, &a, 1);
	if (rv != CKR_OK) {
		err = hsm_s_rv(s, "C_GetAttributeValue(CKA_VALUE)", rv);
		goto fail;
	}
	*der = buf;
	*len = a.ulValueLen;
	return ST_OK;
fail:
	free(buf);
	return err;
}

void hsm_labels_free(char **labels, size_t n)
{
	for (size_t i = 0; labels && i < n; i++)
		free(labels[i]);
	free(labels);
}

/* Every object of class cls visible to the session, however many: a
 * shared HSM partition can hold hundreds.  C_FindObjects is called until
 * it returns none; *out is malloc'd (caller frees).  The search is always
 * finalised so the session stays usable. */
static int find_all(hsm_session *s, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE **out,
		    CK_ULONG *nout)
{
	CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) } };
	CK_OBJECT_HANDLE *all = NULL, *grown;
	CK_ULONG n = 0, cap = 0, got;
	CK_RV rv, frv;
	int err = ST_OK;

	*out = NULL;
	*nout = 0;
	rv = s->h->fl->C_FindObjectsInit(s->sh, tmpl, 1);
	if (rv != CKR_OK)
		return hsm_s_rv(s, "C_FindObjectsInit", rv);
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			grown = realloc(all, cap * sizeof(*all));
			if (!grown) {
				hsm_s_err(s, "out of memory listing objects");
				err = ST_E_NOMEM;
				break;
			}
			all = grown;
		}
		got = 0;
		rv = s->h->fl->C_FindObjects(s->sh, all + n, cap - n, &got);
		if (rv != CKR_OK) {
			err = hsm_s_rv(s, "C_FindObjects", rv);
			break;
		}
		if (got == 0)
			break;
		n += got;
	}
	frv = s->h->fl->C_FindObjectsFinal(s->sh);
	if (!err && frv != CKR_OK)
		err = hsm_s_rv(s, "C_FindObjectsFinal", frv);
	if (err) {
		free(all);
		return err;
	}
	*out = all;
	*nout = n;
	return ST_OK;
}

/* Collect handles first and read labels after C_FindObjectsFinal: some
 * modules refuse other calls on a session with an active search. */
int hsm_list_labels(hsm_session *s, bool privkeys, char ***labels, size_t *n)
{
	CK_OBJECT_CLASS cls = privkeys ? CKO_PRIVATE_KEY : CKO_CERTIFICATE;
	CK_OBJECT_HANDLE *found = NULL;
	CK_ULONG nf = 0;
	char **out = NULL;
	size_t cnt = 0;
	int err;

	if (!s || !labels || !n)
		return ST_E_INVAL;
	*labels = NULL;
	*n = 0;
	err = find_all(s, cls, &found, &nf);
	if (err)
		return err;
	out = calloc(nf ? nf : 1, sizeof(*out));
	if (!out) {
		free(found);
		hsm_s_err(s, "out of memory listing objects");
		return ST_E_NOMEM;
	}
	for (CK_ULONG i = 0; i < nf; i++) {
		uint8_t *l = NULL;
		size_t llen = 0;

		if (hsm_get_attr(s, found[i], CKA_LABEL, "CKA_LABEL", &l, &llen))
			continue;       /* unlabelled: not one of ours */
		out[cnt] = strndup((char *)l, llen);
		free(l);
		if (!out[cnt]) {
			err = ST_E_NOMEM;
			break;
		}
		cnt++;
	}
	free(found);
	if (err) {
		hsm_labels_free(out, cnt);
		hsm_s_err(s, "out of memory listing objects");
		return err;
	}
	*labels = out;
	*n = cnt;
	return ST_OK;
}

/* Asks for the length only: a sensitive value is refused before any byte
 * of it could be copied. */
bool hsm_value_readable(hsm_session *s, hsm_obj obj)
{
	CK_ATTRIBUTE a = { CKA_VALUE, NULL, 0 };
	CK_RV rv;

	if (!s)
		return false;
	rv = s->h->fl->C_GetAttributeValue(s->sh, (CK_OBJECT_HANDLE)obj, &a, 1);
	return rv == CKR_OK && a.ulValueLen != CK_UNAVAILABLE_INFORMATION;
}

int hsm_destroy(hsm_session *s, hsm_obj obj)
{
	CK_RV rv;

	if (!s)
		return ST_E_INVAL;
	rv = s->h->fl->C_DestroyObject(s->sh, (CK_OBJECT_HANDLE)obj);
	if (rv == CKR_OK || rv == CKR_OBJECT_HANDLE_INVALID)
		return ST_OK;
	return hsm_s_rv(s, "C_DestroyObject", rv);
}

static const struct {
	unsigned bit;
	CK_OBJECT_CLASS cls;
} obj_kinds[] = {
	{ HSM_O_PRIVKEY, CKO_PRIVATE_KEY }, { HSM_O_PUBKEY, CKO_PUBLIC_KEY },
	{ HSM_O_CERT, CKO_CERTIFICATE }, { HSM_O_DATA, CKO_DATA },
};

int hsm_objects(hsm_session *s, const char *label, unsigned *found)
{
	if (!s || !found)
		return ST_E_INVAL;
	if (!hsm_label_ok(s, label))
		return ST_E_INVAL;
	*found = 0;
	for (size_t i = 0; i < ST_ARRAY_SIZE(obj_kinds); i++) {
		CK_OBJECT_HANDLE h[2];
		CK_ULONG n;
		int err = hsm_find_objs(s, obj_kinds[i].cls, label, h, &n);

		if (err)
			return err;
		if (n)
			*found |= obj_kinds[i].bit;
	}
	return ST_OK;
}

/* Found again after each destroy: hsm_find_objs returns at most two. */
int hsm_remove(hsm_session *s, const char *label, unsigned what)
{
	if (!s)
		return ST_E_INVAL;
	if (!hsm_label_ok(s, label))
		return ST_E_INVAL;
	for (size_t i = 0; i < ST_ARRAY_SIZE(obj_kinds); i++) {
		if (!(what & obj_kinds[i].bit))
			continue;
		for (int round = 0; round < 64; round++) {
			CK_OBJECT_HANDLE h[2];
			CK_ULONG n;
			CK_RV rv;
			int err = hsm_find_objs(s, obj_kinds[i].cls, label, h, &n);

			if (err)
				return err;
			if (!n)
				break;
			for (CK_ULONG k = 0; k < n; k++) {
				rv = s->h->fl->C_DestroyObject(s->sh, h[k]);
				if (rv != CKR_OK && rv != CKR_OBJECT_HANDLE_INVALID)
					return hsm_s_rv(s, "C_DestroyObject", rv);
			}
		}
	}
	return ST_OK;
}

int hsm_data_put(hsm_session *s, const char *label, const char *text)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_BBOOL yes = CK_TRUE;
	static const char app[] = "station";
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)label, label ? strlen(label) : 0 },
		{ CKA_APPLICATION, (void *)app, sizeof(app) - 1 },
		{ CKA_VALUE, (void *)text, text ? strlen(text) : 0 },
	};
	CK_OBJECT_HANDLE h[2], obj;
	CK_ULONG n;
	CK_RV rv;
	int err;

	if (!s)
		return ST_E_INVAL;
	if (!hsm_label_ok(s, label) || !text)
		return ST_E_INVAL;
	err = hsm_find_objs(s, CKO_DATA, label, h, &n);
	if (err)
		return err;
	if (n) {
		hsm_s_err(s, "a data object labelled '%s' already exists", label);
		return ST_E_EXISTS;
	}
	s->last_rv = CKR_OK;
	rv = s->h->fl->C_CreateObject(s->sh, tmpl, ST_ARRAY_SIZE(tmpl), &obj);
	if (rv != CKR_OK)
		return hsm_s_rv_tmpl(s, "C_CreateObject(data)", rv, tmpl,
				     ST_ARRAY_SIZE(tmpl));
	return ST_OK;
}

bool hsm_data_refused(const hsm_session *s)
{
	return s && (s->last_rv == CKR_ATTRIBUTE_VALUE_INVALID ||
		     s->last_rv == CKR_ATTRIBUTE_TYPE_INVALID ||
		     s->last_rv == CKR_TEMPLATE_INCONSISTENT);
}

bool hsm_key_made_here(hsm_session *s, hsm_obj priv)
{
	CK_BBOOL local = CK_FALSE, never = CK_FALSE;
	CK_ATTRIBUTE a[] = {
		{ CKA_LOCAL, &local, sizeof(local) },
		{ CKA_NEVER_EXTRACTABLE, &never, sizeof(never) },
	};

	if (!s)
		return false;
	if (s->h->fl->C_GetAttributeValue(s->sh, (CK_OBJECT_HANDLE)priv, a,
					  ST_ARRAY_SIZE(a)) != CKR_OK)
		return false;
	return local == CK_TRUE && never == CK_TRUE;
}

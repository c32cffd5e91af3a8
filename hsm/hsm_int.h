/* hsm_int.h — hsm/ internals shared by hsm.c (core: module, token, login,
 * sessions, errors), objects.c, keys.c and wrap.c.  Not a public header:
 * PKCS#11 types never leave hsm/. */
#ifndef ST_HSM_INT_H
#define ST_HSM_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "hsm.h"

/* PKCS#11 2.40's standard RFC 5649 wrap; p11-kit 0.24's header predates it. */
#ifndef CKM_AES_KEY_WRAP_KWP
#define CKM_AES_KEY_WRAP_KWP 0x210BUL
#endif

#define HSM_ERRMSG_LEN 768
#define HSM_LABEL_LEN 32        /* CK_TOKEN_INFO.label, space padded */

struct hsm {
	void *dl;                       /* dlopen handle of the module */
	CK_FUNCTION_LIST *fl;
	bool initialized;               /* our C_Initialize succeeded: we finalise */
	bool logged_in;                 /* our C_Login succeeded: we log out */
	bool have_main;
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE main;         /* keeps the login alive */
	/* The module refused per-unit keys as session objects (CKA_TOKEN
	 * false: tpm2-pkcs11): hsm_genpair_tmp makes token objects. */
	atomic_bool tmp_on_token;
	CK_MECHANISM_TYPE wrap;         /* chosen by hsm_inject_check; 0: none yet */
	pthread_mutex_t err_lock;       /* sessions may be opened from workers */
	char err[HSM_ERRMSG_LEN];
};

struct hsm_session {
	hsm *h;
	CK_SESSION_HANDLE sh;
	CK_RV last_rv;          /* of the last failed call, for hsm_session_lost */
	char err[HSM_ERRMSG_LEN];
};

/* DER OID 1.2.840.10045.3.1.7 (prime256v1), the value of CKA_EC_PARAMS
 * (keys.c). */
#define HSM_P256_OID_LEN 10
extern const CK_BYTE hsm_p256_oid[HSM_P256_OID_LEN];

/* ---- Errors (hsm.c) ---- */

/* Record a cause on the shared handle (locked: workers share it). */
void hsm_h_err(hsm *h, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Record a cause on a session; only its own thread writes it. */
void hsm_s_err(hsm_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* A failed PKCS#11 call fn on h / on s: its st_err, its message. */
int hsm_h_rv(hsm *h, const char *fn, CK_RV rv);
int hsm_s_rv(hsm_session *s, const char *fn, CK_RV rv);
/* hsm_s_rv for a call given template t[0..n): for the attribute return
 * codes (CKR_TEMPLATE_INCOMPLETE, CKR_ATTRIBUTE_*) the message names what
 * the module objects to and every attribute it was given. */
int hsm_s_rv_tmpl(hsm_session *s, const char *fn, CK_RV rv,
		  const CK_ATTRIBUTE *t, CK_ULONG n);
/* hsm_s_rv_tmpl for C_GenerateKeyPair: the template stated is the public
 * one followed by the private one. */
int hsm_s_rv_pair(hsm_session *s, const char *fn, CK_RV rv,
		  const CK_ATTRIBUTE *pub, CK_ULONG np,
		  const CK_ATTRIBUTE *priv, CK_ULONG nv);
/* PKCS#11 name of an attribute type ("CKA_ISSUER"), buf for unknown ones. */
const char *hsm_attr_name(CK_ATTRIBUTE_TYPE t, char *buf, size_t n);

/* Read a variable-length attribute into a malloc'd buffer (hsm.c). */
int hsm_get_attr(hsm_session *s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
		 const char *what, uint8_t **out, size_t *len);

/* ---- Temporary key pairs (keys.c) ---- */

/* CKA_LABEL of a temporary pair made as token objects; its CKA_ID names
 * the host and process that made it ("host:pid"), so the next start on
 * that host removes what a crash left (hsm_tmp_sweep). */
#define HSM_TMP_LABEL "station-tmp"

/* C_GenerateKeyPair for a pair that lives only while one unit is worked
 * on, from templates that say CKA_TOKEN false: as session objects, or,
 * where the module refuses those (CKR_ATTRIBUTE_VALUE_INVALID or
 * CKR_TEMPLATE_INCONSISTENT, remembered for the handle), as token objects
 * labelled HSM_TMP_LABEL instead of the template's label.  The caller
 * destroys both halves after use, as for session objects.  Returns the
 * module's CK_RV. */
CK_RV hsm_genpair_tmp(hsm_session *s, CK_MECHANISM *mech,
		      const CK_ATTRIBUTE *pub, CK_ULONG npub,
		      const CK_ATTRIBUTE *priv, CK_ULONG npriv,
		      CK_OBJECT_HANDLE *hpub, CK_OBJECT_HANDLE *hpriv);

/* Destroy the HSM_TMP_LABEL objects a process of this host that is no
 * longer running left in the token (a crash between making and
 * destroying them); called at every login.  *n gets how many. */
int hsm_tmp_sweep(hsm *h, unsigned *n);
/* Does the token offer mechanism m (C_GetMechanismList)?  keys.c. */
bool hsm_has_mech(hsm *h, CK_MECHANISM_TYPE m);

/* ---- Objects (objects.c) ---- */

/* Object kinds as the operator reads them in messages. */
const char *hsm_class_name(CK_OBJECT_CLASS cls);
/* Count objects of class cls labelled label, up to two. */
int hsm_find_objs(hsm_session *s, CK_OBJECT_CLASS cls, const char *label,
		  CK_OBJECT_HANDLE found[2], CK_ULONG *n);
/* Exactly one object of class cls labelled label, or why not. */
int hsm_find_one(hsm_session *s, CK_OBJECT_CLASS cls, const char *label,
		 CK_OBJECT_HANDLE *obj);
/* The P-256 point of public key object pub (DER OCTET STRING or bare). */
int hsm_read_point(hsm_session *s, CK_OBJECT_HANDLE pub,
		   uint8_t point[HSM_P256_POINT_LEN]);
/* A non-empty label, or false with a message on s. */
bool hsm_label_ok(hsm_session *s, const char *label);

#endif

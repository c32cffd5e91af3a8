/* hsm.c — the station's PKCS#11 client: module loading, token lookup by
 * label, login, EC P-256 keys, ECDSA signing, random, certificate objects.
 *
 * PKCS#11 types stay in this file.  Every CK_RV is turned into an st_err
 * here and the cause is written as "<C_Function>: <CKR_NAME>" into the
 * handle the call was made on.  PINs are never copied, logged or put in a
 * message. */
#include "hsm.h"
#include "base.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

#define HSM_ERRMSG_LEN 256
#define HSM_LABEL_LEN 32        /* CK_TOKEN_INFO.label, space padded */
#define HSM_MAX_SIG_LEN 132     /* raw r||s up to P-521 */

struct hsm {
	void *dl;                       /* dlopen handle of the module */
	CK_FUNCTION_LIST *fl;
	bool initialized;               /* our C_Initialize succeeded: we finalise */
	bool logged_in;                 /* our C_Login succeeded: we log out */
	bool have_main;
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE main;         /* keeps the login alive */
	pthread_mutex_t err_lock;       /* sessions may be opened from workers */
	char err[HSM_ERRMSG_LEN];
};

struct hsm_session {
	hsm *h;
	CK_SESSION_HANDLE sh;
	CK_RV last_rv;          /* of the last failed call, for hsm_session_lost */
	char err[HSM_ERRMSG_LEN];
};

/* DER OID 1.2.840.10045.3.1.7 (prime256v1), the value of CKA_EC_PARAMS. */
static const CK_BYTE p256_oid[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
};

/* DER OID 1.3.132.0.34 (secp384r1). */
static const CK_BYTE p384_oid[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };
/* DER OID 1.3.101.112 (Ed25519), as SoftHSM and the v3.0 spec take it. */
static const CK_BYTE ed25519_oid[] = { 0x06, 0x03, 0x2b, 0x65, 0x70 };

#define RV(x) { x, #x }
static const struct {
	CK_RV rv;
	const char *name;
} rv_names[] = {
	RV(CKR_OK),
	RV(CKR_CANCEL),
	RV(CKR_HOST_MEMORY),
	RV(CKR_SLOT_ID_INVALID),
	RV(CKR_GENERAL_ERROR),
	RV(CKR_FUNCTION_FAILED),
	RV(CKR_ARGUMENTS_BAD),
	RV(CKR_NEED_TO_CREATE_THREADS),
	RV(CKR_CANT_LOCK),
	RV(CKR_ATTRIBUTE_READ_ONLY),
	RV(CKR_ATTRIBUTE_SENSITIVE),
	RV(CKR_ATTRIBUTE_TYPE_INVALID),
	RV(CKR_ATTRIBUTE_VALUE_INVALID),
	RV(CKR_ACTION_PROHIBITED),
	RV(CKR_DATA_INVALID),
	RV(CKR_DATA_LEN_RANGE),
	RV(CKR_DEVICE_ERROR),
	RV(CKR_DEVICE_MEMORY),
	RV(CKR_DEVICE_REMOVED),
	RV(CKR_FUNCTION_CANCELED),
	RV(CKR_FUNCTION_NOT_SUPPORTED),
	RV(CKR_KEY_HANDLE_INVALID),
	RV(CKR_KEY_SIZE_RANGE),
	RV(CKR_KEY_TYPE_INCONSISTENT),
	RV(CKR_KEY_FUNCTION_NOT_PERMITTED),
	RV(CKR_MECHANISM_INVALID),
	RV(CKR_MECHANISM_PARAM_INVALID),
	RV(CKR_OBJECT_HANDLE_INVALID),
	RV(CKR_OPERATION_ACTIVE),
	RV(CKR_OPERATION_NOT_INITIALIZED),
	RV(CKR_PIN_INCORRECT),
	RV(CKR_PIN_INVALID),
	RV(CKR_PIN_LEN_RANGE),
	RV(CKR_PIN_EXPIRED),
	RV(CKR_PIN_LOCKED),
	RV(CKR_SESSION_CLOSED),
	RV(CKR_SESSION_COUNT),
	RV(CKR_SESSION_HANDLE_INVALID),
	RV(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
	RV(CKR_SESSION_READ_ONLY),
	RV(CKR_SESSION_EXISTS),
	RV(CKR_SESSION_READ_ONLY_EXISTS),
	RV(CKR_SESSION_READ_WRITE_SO_EXISTS),
	RV(CKR_SIGNATURE_INVALID),
	RV(CKR_SIGNATURE_LEN_RANGE),
	RV(CKR_TEMPLATE_INCOMPLETE),
	RV(CKR_TEMPLATE_INCONSISTENT),
	RV(CKR_TOKEN_NOT_PRESENT),
	RV(CKR_TOKEN_NOT_RECOGNIZED),
	RV(CKR_TOKEN_WRITE_PROTECTED),
	RV(CKR_USER_ALREADY_LOGGED_IN),
	RV(CKR_USER_NOT_LOGGED_IN),
	RV(CKR_USER_PIN_NOT_INITIALIZED),
	RV(CKR_USER_TYPE_INVALID),
	RV(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
	RV(CKR_USER_TOO_MANY_TYPES),
	RV(CKR_DOMAIN_PARAMS_INVALID),
	RV(CKR_CURVE_NOT_SUPPORTED),
	RV(CKR_BUFFER_TOO_SMALL),
	RV(CKR_RANDOM_SEED_NOT_SUPPORTED),
	RV(CKR_RANDOM_NO_RNG),
	RV(CKR_CRYPTOKI_NOT_INITIALIZED),
	RV(CKR_CRYPTOKI_ALREADY_INITIALIZED),
	RV(CKR_MUTEX_BAD),
	RV(CKR_MUTEX_NOT_LOCKED),
};
#undef RV

/* Name a return code for the operator; codes outside the table keep their
 * number so a vendor code can still be looked up. */
static const char *rv_name(CK_RV rv, char *buf, size_t n)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(rv_names); i++)
		if (rv_names[i].rv == rv)
			return rv_names[i].name;
	if (rv & CKR_VENDOR_DEFINED)
		snprintf(buf, n, "CKR_VENDOR_DEFINED+0x%lx",
			 (unsigned long)(rv & ~(CK_RV)CKR_VENDOR_DEFINED));
	else
		snprintf(buf, n, "CKR 0x%08lx", (unsigned long)rv);
	return buf;
}

/* The project error for a failed call: the few codes a caller acts on get
 * their own value, everything else is a plain HSM failure. */
static int rv_err(CK_RV rv)
{
	switch (rv) {
	case CKR_OK:
		return ST_OK;
	case CKR_PIN_INCORRECT:
		return ST_E_PIN;
	case CKR_PIN_LOCKED:
		return ST_E_PIN_LOCKED;
	case CKR_HOST_MEMORY:
		return ST_E_NOMEM;
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_DEVICE_REMOVED:
		return ST_E_NOTOKEN;
	default:
		return ST_E_HSM;
	}
}

/* Record a cause on the shared handle.  Locked because a worker may fail
 * hsm_session_open while another does the same. */
__attribute__((format(printf, 2, 3)))
static void h_err(hsm *h, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&h->err_lock);
	va_start(ap, fmt);
	vsnprintf(h->err, sizeof(h->err), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&h->err_lock);
}

/* Record a cause on a session; only its own thread writes it. */
__attribute__((format(printf, 2, 3)))
static void s_err(hsm_session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
}

/* Turn a failed PKCS#11 call on h into its st_err and message. */
static int h_rv(hsm *h, const char *fn, CK_RV rv)
{
	char num[48];

	h_err(h, "%s: %s", fn, rv_name(rv, num, sizeof(num)));
	return rv_err(rv);
}

/* Turn a failed PKCS#11 call on a session into its st_err and message. */
static int s_rv(hsm_session *s, const char *fn, CK_RV rv)
{
	char num[48];

	s->last_rv = rv;
	s_err(s, "%s: %s", fn, rv_name(rv, num, sizeof(num)));
	return rv_err(rv);
}

/* The token label as a C string: PKCS#11 pads it with spaces, no NUL. */
static void label_of(const CK_TOKEN_INFO *ti, char out[HSM_LABEL_LEN + 1])
{
	size_t n = HSM_LABEL_LEN;

	memcpy(out, ti->label, HSM_LABEL_LEN);
	while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == '\0'))
		n--;
	out[n] = '\0';
}

/* Resolve label to a slot now: slot IDs are not stable across token
 * (re)initialisation, labels are.  The error names the labels that are
 * present, which is what an operator needs when the config is wrong. */
static int find_slot(hsm *h, const char *label, CK_SLOT_ID *slot)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0;
	char present[HSM_ERRMSG_LEN / 2] = "";
	size_t plen = 0;
	CK_RV rv;
	int err;

	for (;;) {
		rv = h->fl->C_GetSlotList(CK_TRUE, NULL, &n);
		if (rv != CKR_OK) {
			err = h_rv(h, "C_GetSlotList", rv);
			goto out;
		}
		free(slots);
		slots = calloc(n ? n : 1, sizeof(*slots));
		if (!slots) {
			h_err(h, "out of memory listing slots");
			err = ST_E_NOMEM;
			goto out;
		}
		rv = h->fl->C_GetSlotList(CK_TRUE, slots, &n);
		if (rv == CKR_OK)
			break;
		if (rv != CKR_BUFFER_TOO_SMALL) {
			err = h_rv(h, "C_GetSlotList", rv);
			goto out;
		}
	}

	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		char l[HSM_LABEL_LEN + 1];

		rv = h->fl->C_GetTokenInfo(slots[i], &ti);
		if (rv != CKR_OK)
			continue;       /* token pulled meanwhile: not ours */
		if (!(ti.flags & CKF_TOKEN_INITIALIZED))
			continue;
		label_of(&ti, l);
		if (strcmp(l, label) == 0) {
			*slot = slots[i];
			err = ST_OK;
			goto out;
		}
		if (plen < sizeof(present)) {
			int w = snprintf(present + plen, sizeof(present) - plen,
					 "%s%s", plen ? ", " : "", l);
			if (w > 0)
				plen += (size_t)w;
		}
	}
	h_err(h, "no token labelled '%s' (tokens present: %s)", label,
	      plen ? present : "none");
	err = ST_E_NOTOKEN;
out:
	free(slots);
	return err;
}

/* Everything up to a usable main session, so that a failure at any step
 * leaves h in a state hsm_close() can undo. */
int hsm_open(const char *module_path, const char *token_label, hsm **out)
{
	CK_C_GetFunctionList get_list;
	CK_C_INITIALIZE_ARGS args;
	hsm *h;
	CK_RV rv;
	int err;

	if (!out)
		return ST_E_INVAL;
	*out = NULL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return ST_E_NOMEM;
	pthread_mutex_init(&h->err_lock, NULL);
	*out = h;

	if (!module_path || !token_label || !*token_label) {
		h_err(h, "hsm_open: module path and token label are required");
		return ST_E_INVAL;
	}
	if (strlen(token_label) > HSM_LABEL_LEN) {
		h_err(h, "token label '%s' is longer than %d bytes",
		      token_label, HSM_LABEL_LEN);
		return ST_E_INVAL;
	}

	/* RTLD_NODELETE: modules built on OpenSSL or with thread-local state
	 * (SoftHSM among them) are not safe to unmap before exit, and a
	 * mapped module keeps leak reports attributable to it. */
	h->dl = dlopen(module_path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	if (!h->dl) {
		h_err(h, "cannot load PKCS#11 module %s: %s", module_path,
		      dlerror());
		return ST_E_IO;
	}
	/* POSIX guarantees dlsym results convert to function pointers. */
	get_list = (CK_C_GetFunctionList)dlsym(h->dl, "C_GetFunctionList");
	if (!get_list) {
		h_err(h, "%s is not a PKCS#11 module: no C_GetFunctionList",
		      module_path);
		return ST_E_IO;
	}
	rv = get_list(&h->fl);
	if (rv != CKR_OK || !h->fl) {
		h->fl = NULL;
		return h_rv(h, "C_GetFunctionList", rv != CKR_OK ? rv :
			    CKR_GENERAL_ERROR);
	}

	/* Workers call into the module concurrently on their own sessions. */
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	rv = h->fl->C_Initialize(&args);
	if (rv == CKR_OK)
		h->initialized = true;
	else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
		return h_rv(h, "C_Initialize", rv);

	err = find_slot(h, token_label, &h->slot);
	if (err)
		return err;

	rv = h->fl->C_OpenSession(h->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
				  NULL, NULL, &h->main);
	if (rv != CKR_OK)
		return h_rv(h, "C_OpenSession", rv);
	h->have_main = true;
	h->err[0] = '\0';
	return ST_OK;
}

/* Never NULL, so callers can print it unconditionally. */
const char *hsm_errmsg(const hsm *h)
{
	return h ? h->err : "no HSM handle";
}

/* Log in on the main session; the login then holds for every session of
 * this process.  A wrong PIN is reported once and never retried here, since
 * each retry burns one of the token's few attempts. */
int hsm_login(hsm *h, const char *pin, size_t pinlen)
{
	CK_RV rv;

	if (!h)
		return ST_E_INVAL;
	if (!h->have_main) {
		h_err(h, "hsm_login: HSM not open");
		return ST_E_STATE;
	}
	if (!pin && pinlen) {
		h_err(h, "hsm_login: no PIN given");
		return ST_E_INVAL;
	}
	rv = h->fl->C_Login(h->main, CKU_USER, (CK_UTF8CHAR_PTR)pin,
			    (CK_ULONG)pinlen);
	if (rv == CKR_USER_ALREADY_LOGGED_IN)
		return ST_OK;
	if (rv != CKR_OK)
		return h_rv(h, "C_Login", rv);
	h->logged_in = true;
	return ST_OK;
}

/* Read the flags fresh each time: they change with every login attempt. */
const char *hsm_pin_warning(hsm *h)
{
	CK_TOKEN_INFO ti;
	CK_RV rv;

	if (!h || !h->fl)
		return NULL;
	rv = h->fl->C_GetTokenInfo(h->slot, &ti);
	if (rv != CKR_OK) {
		h_rv(h, "C_GetTokenInfo", rv);
		return NULL;
	}
	if (ti.flags & CKF_USER_PIN_LOCKED)
		return "user PIN is locked: the security officer must reset it";
	if (ti.flags & CKF_USER_PIN_FINAL_TRY)
		return "one user PIN attempt left before the PIN locks";
	if (ti.flags & CKF_USER_PIN_COUNT_LOW)
		return "a wrong user PIN was entered: few attempts left";
	return NULL;
}

/* A session per worker: PKCS#11 sessions carry operation state (SignInit
 * then Sign), so they cannot be shared between threads. */
int hsm_session_open(hsm *h, hsm_session **out)
{
	hsm_session *s;
	CK_RV rv;

	if (!out)
		return ST_E_INVAL;
	*out = NULL;
	if (!h)
		return ST_E_INVAL;
	if (!h->have_main) {
		h_err(h, "hsm_session_open: HSM not open");
		return ST_E_STATE;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		h_err(h, "out of memory opening a session");
		return ST_E_NOMEM;
	}
	s->h = h;
	rv = h->fl->C_OpenSession(h->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
				  NULL, NULL, &s->sh);
	if (rv != CKR_OK) {
		free(s);
		return h_rv(h, "C_OpenSession", rv);
	}
	*out = s;
	return ST_OK;
}

/* Session objects (per-unit keys made with token=false) die with the
 * session; that is intended. */
void hsm_session_close(hsm_session *s)
{
	if (!s)
		return;
	s->h->fl->C_CloseSession(s->sh);
	free(s);
}

bool hsm_session_lost(const hsm_session *s)
{
	if (!s)
		return false;
	switch (s->last_rv) {
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_DEVICE_ERROR:
	case CKR_OBJECT_HANDLE_INVALID:
	case CKR_KEY_HANDLE_INVALID:
		return true;
	default:
		return false;
	}
}

/* The old session may already be dead: its close result is irrelevant. */
int hsm_session_reopen(hsm_session *s)
{
	CK_SESSION_HANDLE sh;
	CK_RV rv;

	if (!s)
		return ST_E_INVAL;
	s->h->fl->C_CloseSession(s->sh);
	rv = s->h->fl->C_OpenSession(s->h->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
				     NULL, NULL, &sh);
	if (rv != CKR_OK) {
		s->sh = CK_INVALID_HANDLE;
		return s_rv(s, "C_OpenSession (re-open)", rv);
	}
	s->sh = sh;
	s->last_rv = CKR_OK;
	s->err[0] = '\0';
	return ST_OK;
}

/* Never NULL, so callers can print it unconditionally. */
const char *hsm_session_errmsg(const hsm_session *s)
{
	return s ? s->err : "no HSM session";
}

/* Object kinds as the operator reads them in messages. */
static const char *class_name(CK_OBJECT_CLASS cls)
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
static int find_objs(hsm_session *s, CK_OBJECT_CLASS cls, const char *label,
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
		return s_rv(s, "C_FindObjectsInit", rv);
	rv = fl->C_FindObjects(s->sh, found, 2, n);
	frv = fl->C_FindObjectsFinal(s->sh);
	if (rv != CKR_OK)
		return s_rv(s, "C_FindObjects", rv);
	if (frv != CKR_OK)
		return s_rv(s, "C_FindObjectsFinal", frv);
	return ST_OK;
}

/* Exactly one object, or a clear reason why not: using the wrong one of two
 * equally labelled keys would sign with the wrong identity. */
static int find_one(hsm_session *s, CK_OBJECT_CLASS cls, const char *label,
		    CK_OBJECT_HANDLE *obj)
{
	CK_OBJECT_HANDLE found[2];
	CK_ULONG n;
	int err;

	err = find_objs(s, cls, label, found, &n);
	if (err)
		return err;
	if (n == 0) {
		s_err(s, "no %s labelled '%s'", class_name(cls), label);
		return ST_E_NOTFOUND;
	}
	if (n > 1) {
		s_err(s, "more than one %s labelled '%s'", class_name(cls),
		      label);
		return ST_E_HSM;
	}
	*obj = found[0];
	return ST_OK;
}

/* Modules differ: the spec says CKA_EC_POINT is a DER OCTET STRING, some
 * return the bare point.  Accept both, nothing else. */
static int read_point(hsm_session *s, CK_OBJECT_HANDLE pub,
		      uint8_t point[HSM_P256_POINT_LEN])
{
	CK_BYTE buf[128];
	CK_ATTRIBUTE a = { CKA_EC_POINT, buf, sizeof(buf) };
	CK_RV rv;

	rv = s->h->fl->C_GetAttributeValue(s->sh, pub, &a, 1);
	if (rv == CKR_BUFFER_TOO_SMALL) {
		s_err(s, "CKA_EC_POINT is too long for a P-256 point");
		return ST_E_HSM;
	}
	if (rv != CKR_OK)
		return s_rv(s, "C_GetAttributeValue(CKA_EC_POINT)", rv);
	if (a.ulValueLen == HSM_P256_POINT_LEN + 2 && buf[0] == 0x04 &&
	    buf[1] == HSM_P256_POINT_LEN && buf[2] == 0x04) {
		memcpy(point, buf + 2, HSM_P256_POINT_LEN);
		return ST_OK;
	}
	if (a.ulValueLen == HSM_P256_POINT_LEN && buf[0] == 0x04) {
		memcpy(point, buf, HSM_P256_POINT_LEN);
		return ST_OK;
	}
	s_err(s, "CKA_EC_POINT is not an uncompressed P-256 point "
	      "(%lu bytes)", (unsigned long)a.ulValueLen);
	return ST_E_HSM;
}

/* Object labels double as CKA_ID and lookup keys: an empty one would
 * match nothing useful, so refuse it up front with a message. */
static bool label_ok(hsm_session *s, const char *label)
{
	if (label && *label)
		return true;
	s_err(s, "an object label is required");
	return false;
}

/* A persistent key must be unique by label, or later lookups by label
 * become ambiguous; the check and the generation are not atomic, so two
 * threads creating the same CA key at once is the caller's to avoid.
 * Session keys skip the check: they are per-unit and fast. */
int hsm_keygen_p256(hsm_session *s, const char *label, bool token,
		    uint8_t pub[HSM_P256_POINT_LEN], hsm_obj *priv)
{
	static const CK_OBJECT_CLASS classes[] = {
		CKO_PRIVATE_KEY, CKO_PUBLIC_KEY
	};
	CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE, tok = token ? CK_TRUE : CK_FALSE;
	CK_ULONG llen = label ? strlen(label) : 0;
	CK_ATTRIBUTE pub_tmpl[] = {
		{ CKA_EC_PARAMS, (void *)p256_oid, sizeof(p256_oid) },
		{ CKA_TOKEN, &tok, sizeof(tok) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_VERIFY, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)label, llen },
		{ CKA_ID, (void *)label, llen },
	};
	CK_ATTRIBUTE priv_tmpl[] = {
		{ CKA_TOKEN, &tok, sizeof(tok) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_SIGN, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)label, llen },
		{ CKA_ID, (void *)label, llen },
	};
	CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE, hpriv = CK_INVALID_HANDLE;
	CK_FUNCTION_LIST *fl;
	CK_RV rv;
	int err;

	if (!s)
		return ST_E_INVAL;
	if (!label_ok(s, label) || !pub || !priv)
		return ST_E_INVAL;
	fl = s->h->fl;

	if (token) {
		for (size_t i = 0; i < ST_ARRAY_SIZE(classes); i++) {
			CK_OBJECT_HANDLE found[2];
			CK_ULONG n;

			err = find_objs(s, classes[i], label, found, &n);
			if (err)
				return err;
			if (n) {
				s_err(s, "a %s labelled '%s' already exists",
				      class_name(classes[i]), label);
				return ST_E_EXISTS;
			}
		}
	}

	rv = fl->C_GenerateKeyPair(s->sh, &mech,
				   pub_tmpl, ST_ARRAY_SIZE(pub_tmpl),
				   priv_tmpl, ST_ARRAY_SIZE(priv_tmpl),
				   &hpub, &hpriv);
	if (rv != CKR_OK)
		return s_rv(s, "C_GenerateKeyPair", rv);

	err = read_point(s, hpub, pub);
	if (err)
		goto fail;
	*priv = hpriv;
	return ST_OK;

fail:
	/* A half-usable pair would block the label forever: remove it. */
	fl->C_DestroyObject(s->sh, hpriv);
	fl->C_DestroyObject(s->sh, hpub);
	return err;
}

/* Lookup by label is how a persistent CA key is found again after a
 * restart; handles are only valid for this process. */
int hsm_find_privkey(hsm_session *s, const char *label, hsm_obj *priv)
{
	CK_OBJECT_HANDLE o;
	int err;

	if (!s)
		return ST_E_INVAL;
	if (!label_ok(s, label) || !priv)
		return ST_E_INVAL;
	err = find_one(s, CKO_PRIVATE_KEY, label, &o);
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
	if (!label_ok(s, label) || !pub)
		return ST_E_INVAL;
	err = find_one(s, CKO_PUBLIC_KEY, label, &o);
	if (err)
		return err;
	return read_point(s, o, pub);
}

/* Hashing happens on the host because many HSMs (SoftHSM included) have no
 * CKM_ECDSA_SHA256.  out must hold HSM_P256_SIG_LEN bytes; *outlen is only
 * written (the signature length), never read, so an uninitialised length
 * is harmless.  A signature of another length means the key is not P-256
 * and is refused rather than truncated. */
int hsm_sign_digest(hsm_session *s, hsm_obj priv, const uint8_t *digest,
		    size_t dlen, uint8_t *out, size_t *outlen)
{
	CK_FUNCTION_LIST *fl;
	CK_MECHANISM mech = { CKM_ECDSA, NULL, 0 };
	CK_BYTE sig[HSM_MAX_SIG_LEN];
	CK_ULONG siglen = sizeof(sig);
	CK_RV rv;

	if (!s)
		return ST_E_INVAL;
	if (!digest || dlen == 0 || dlen > 64 || !out || !outlen) {
		s_err(s, "hsm_sign_digest: need a 1..64 byte digest and "
		      "an output buffer");
		return ST_E_INVAL;
	}
	fl = s->h->fl;
	rv = fl->C_SignInit(s->sh, &mech, (CK_OBJECT_HANDLE)priv);
	if (rv != CKR_OK)
		return s_rv(s, "C_SignInit", rv);
	rv = fl->C_Sign(s->sh, (CK_BYTE_PTR)digest, (CK_ULONG)dlen, sig,
			&siglen);
	if (rv != CKR_OK)
		return s_rv(s, "C_Sign", rv);
	if (siglen != HSM_P256_SIG_LEN) {
		s_err(s, "C_Sign returned %lu bytes, not a P-256 signature",
		      (unsigned long)siglen);
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
		s_err(s, "hsm_random: bad buffer");
		return ST_E_INVAL;
	}
	rv = s->h->fl->C_GenerateRandom(s->sh, buf, (CK_ULONG)n);
	if (rv != CKR_OK)
		return s_rv(s, "C_GenerateRandom", rv);
	return ST_OK;
}

/* CKA_SUBJECT is filled from the certificate itself so that tools that
 * pair keys and certificates by subject see a consistent token.  The cert
 * is public (CKA_PRIVATE false): reading it must not need the PIN. */
int hsm_cert_store(hsm_session *s, const char *label, const uint8_t *der,
		   size_t len)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ctype = CKC_X_509;
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
		{ CKA_SUBJECT, NULL, 0 },       /* filled below */
	};
	CK_ATTRIBUTE *subj_attr = &tmpl[ST_ARRAY_SIZE(tmpl) - 1];
	CK_OBJECT_HANDLE found[2], obj;
	CK_ULONG n;
	const unsigned char *p = der;
	unsigned char *subj = NULL;
	X509 *x = NULL;
	int subjlen, err;
	CK_RV rv;

	if (!s)
		return ST_E_INVAL;
	if (!label_ok(s, label))
		return ST_E_INVAL;
	if (!der || len == 0 || len > LONG_MAX) {
		s_err(s, "hsm_cert_store: empty certificate");
		return ST_E_INVAL;
	}
	x = d2i_X509(NULL, &p, (long)len);
	if (!x || p != der + len) {
		s_err(s, "certificate for '%s' is not one DER X.509 "
		      "certificate", label);
		err = ST_E_INVAL;
		goto out;
	}
	subjlen = i2d_X509_NAME(X509_get_subject_name(x), &subj);
	if (subjlen <= 0) {
		s_err(s, "cannot encode the certificate subject");
		err = ST_E_CRYPTO;
		goto out;
	}
	subj_attr->pValue = subj;
	subj_attr->ulValueLen = (CK_ULONG)subjlen;

	err = find_objs(s, CKO_CERTIFICATE, label, found, &n);
	if (err)
		goto out;
	if (n) {
		s_err(s, "a certificate labelled '%s' already exists", label);
		err = ST_E_EXISTS;
		goto out;
	}

	rv = s->h->fl->C_CreateObject(s->sh, tmpl, ST_ARRAY_SIZE(tmpl), &obj);
	if (rv != CKR_OK) {
		err = s_rv(s, "C_CreateObject(certificate)", rv);
		goto out;
	}
	err = ST_OK;
out:
	OPENSSL_free(subj);
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
	if (!label_ok(s, label) || !der || !len)
		return ST_E_INVAL;
	*der = NULL;
	*len = 0;
	err = find_one(s, CKO_CERTIFICATE, label, &o);
	if (err)
		return err;

	rv = s->h->fl->C_GetAttributeValue(s->sh, o, &a, 1);
	if (rv != CKR_OK)
		return s_rv(s, "C_GetAttributeValue(CKA_VALUE)", rv);
	if (a.ulValueLen == 0 || a.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
		s_err(s, "certificate '%s' has no value", label);
		return ST_E_HSM;
	}
	buf = malloc(a.ulValueLen);
	if (!buf) {
		s_err(s, "out of memory reading certificate '%s'", label);
		return ST_E_NOMEM;
	}
	a.pValue = buf;
	rv = s->h->fl->C_GetAttributeValue(s->sh, o, &a, 1);
	if (rv != CKR_OK) {
		err = s_rv(s, "C_GetAttributeValue(CKA_VALUE)", rv);
		goto fail;
	}
	*der = buf;
	*len = a.ulValueLen;
	return ST_OK;
fail:
	free(buf);
	return err;
}

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
		return h_rv(h, "C_GetMechanismList", rv);
	list = calloc(count ? count : 1, sizeof(*list));
	if (!list) {
		h_err(h, "out of memory listing mechanisms");
		return ST_E_NOMEM;
	}
	rv = h->fl->C_GetMechanismList(h->slot, list, &count);
	if (rv != CKR_OK) {
		err = h_rv(h, "C_GetMechanismList", rv);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		CK_MECHANISM_TYPE want = ckm_of(need[i]);
		bool found = false;

		for (CK_ULONG j = 0; j < count && !found; j++)
			found = list[j] == want;
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
		h_err(h, "the token does not offer %s, which the configured keys and "
		      "profile need: use an HSM (or HSM firmware/licence) that has it, "
		      "or choose another key type", missing);
		err = ST_E_HSM;
	}
out:
	free(list);
	return err;
}

/* The keygen template differs only in the type-specific public attributes;
 * private keys are always sensitive, never extractable, private. */
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
	if (!label_ok(s, label) || !hpub || !hpriv)
		return ST_E_INVAL;
	switch (t) {
	case HSM_KEY_P256:
		pub_tmpl[npub++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)p256_oid,
						   sizeof(p256_oid) };
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
		s_err(s, "unknown key type %d", (int)t);
		return ST_E_INVAL;
	}
	if (token) {
		for (size_t i = 0; i < ST_ARRAY_SIZE(classes); i++) {
			CK_OBJECT_HANDLE found[2];
			CK_ULONG n;

			err = find_objs(s, classes[i], label, found, &n);
			if (err)
				return err;
			if (n) {
				s_err(s, "a %s labelled '%s' already exists",
				      class_name(classes[i]), label);
				return ST_E_EXISTS;
			}
		}
	}
	rv = s->h->fl->C_GenerateKeyPair(s->sh, &mech, pub_tmpl, npub,
					 priv_tmpl, ST_ARRAY_SIZE(priv_tmpl),
					 hpub, hpriv);
	if (rv == CKR_MECHANISM_INVALID) {
		s_err(s, "the token cannot make %s keys: it does not offer %s",
		      hsm_keytype_name(t), hsm_mech_name(hsm_keytype_genmech(t)));
		return ST_E_HSM;
	}
	if (rv != CKR_OK)
		return s_rv(s, "C_GenerateKeyPair", rv);
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

/* Read a variable-length attribute into a malloc'd buffer. */
static int get_attr(hsm_session *s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
		    const char *what, uint8_t **out, size_t *len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	CK_RV rv;

	*out = NULL;
	rv = s->h->fl->C_GetAttributeValue(s->sh, o, &a, 1);
	if (rv == CKR_OK && (a.ulValueLen == CK_UNAVAILABLE_INFORMATION ||
			     a.ulValueLen == 0 || a.ulValueLen > 65536)) {
		s_err(s, "%s is not available", what);
		return ST_E_HSM;
	}
	if (rv != CKR_OK) {
		char num[48];

		s_err(s, "C_GetAttributeValue(%s): %s", what, rv_name(rv, num, sizeof(num)));
		return rv_err(rv);
	}
	a.pValue = malloc(a.ulValueLen);
	if (!a.pValue) {
		s_err(s, "out of memory reading %s", what);
		return ST_E_NOMEM;
	}
	rv = s->h->fl->C_GetAttributeValue(s->sh, o, &a, 1);
	if (rv != CKR_OK) {
		char num[48];

		free(a.pValue);
		s_err(s, "C_GetAttributeValue(%s): %s", what, rv_name(rv, num, sizeof(num)));
		return rv_err(rv);
	}
	*out = a.pValue;
	*len = a.ulValueLen;
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

	err = get_attr(s, o, CKA_MODULUS, "CKA_MODULUS", &n, &nlen);
	if (!err)
		err = get_attr(s, o, CKA_PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT", &e, &elen);
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
		s_err(s, "the token's RSA public key does not encode");
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

	err = get_attr(s, o, CKA_EC_PARAMS, "CKA_EC_PARAMS", &params, &plen);
	if (!err)
		err = get_attr(s, o, CKA_EC_POINT, "CKA_EC_POINT", &pt, &ptlen);
	if (err)
		goto out;
	err = ST_E_HSM;
	if (plen == sizeof(p256_oid) && !memcmp(params, p256_oid, plen)) {
		*type = HSM_KEY_P256, nid = NID_X9_62_prime256v1, want = 65;
	} else if (plen == sizeof(p384_oid) && !memcmp(params, p384_oid, plen)) {
		*type = HSM_KEY_P384, nid = NID_secp384r1, want = 97;
	} else if ((plen == sizeof(ed25519_oid) && !memcmp(params, ed25519_oid, plen)) ||
		   (plen == 14 && !memcmp(params, "\x13\x0c" "edwards25519", 14))) {
		*type = HSM_KEY_ED25519, nid = NID_ED25519, want = 32;
	} else {
		s_err(s, "the key's curve is not one the station supports "
		      "(P-256, P-384, Ed25519)");
		goto out;
	}
	bare = bare_point(pt, ptlen, want);
	if (!bare) {
		s_err(s, "CKA_EC_POINT has %zu bytes, not a %s public key", ptlen,
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
		s_err(s, "the token's %s public key is not valid", hsm_keytype_name(*type));
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
	if (!label_ok(s, label) || !der || !len || !type)
		return ST_E_INVAL;
	*der = NULL;
	err = find_one(s, CKO_PUBLIC_KEY, label, &o);
	if (err)
		return err;
	rv = s->h->fl->C_GetAttributeValue(s->sh, o, &a, 1);
	if (rv != CKR_OK)
		return s_rv(s, "C_GetAttributeValue(CKA_KEY_TYPE)", rv);
	if (kt == CKK_RSA) {
		*type = HSM_KEY_RSA3072;
		return rsa_spki(s, o, der, len);
	}
	if (kt == CKK_EC || kt == CKK_EC_EDWARDS)
		return ec_spki(s, o, type, der, len);
	s_err(s, "the key labelled '%s' has a key type the station does not use "
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
		s_err(s, "hsm_sign: need input and an output buffer");
		return ST_E_INVAL;
	}
	mech.mechanism = m == HSM_SIG_ECDSA ? CKM_ECDSA :
			 m == HSM_SIG_RSA_PKCS ? CKM_RSA_PKCS :
			 m == HSM_SIG_EDDSA ? CKM_EDDSA : CKM_VENDOR_DEFINED;
	rv = s->h->fl->C_SignInit(s->sh, &mech, (CK_OBJECT_HANDLE)priv);
	if (rv == CKR_MECHANISM_INVALID) {
		s_err(s, "C_SignInit: the token does not offer %s",
		      m == HSM_SIG_ECDSA ? "CKM_ECDSA" : m == HSM_SIG_RSA_PKCS ?
		      "CKM_RSA_PKCS" : "CKM_EDDSA");
		return ST_E_HSM;
	}
	if (rv != CKR_OK)
		return s_rv(s, "C_SignInit", rv);
	rv = s->h->fl->C_Sign(s->sh, (CK_BYTE_PTR)in, (CK_ULONG)inlen, out, &siglen);
	if (rv != CKR_OK)
		return s_rv(s, "C_Sign", rv);
	*outlen = siglen;
	return ST_OK;
}

void hsm_labels_free(char **labels, size_t n)
{
	for (size_t i = 0; labels && i < n; i++)
		free(labels[i]);
	free(labels);
}

/* Collect handles first and read labels after C_FindObjectsFinal: some
 * modules refuse other calls on a session with an active search. */
int hsm_list_labels(hsm_session *s, bool privkeys, char ***labels, size_t *n)
{
	CK_OBJECT_CLASS cls = privkeys ? CKO_PRIVATE_KEY : CKO_CERTIFICATE;
	CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) } };
	CK_OBJECT_HANDLE found[64];
	CK_ULONG nf = 0;
	char **out = NULL;
	size_t cnt = 0;
	CK_RV rv, frv;
	int err = ST_OK;

	if (!s || !labels || !n)
		return ST_E_INVAL;
	*labels = NULL;
	*n = 0;
	rv = s->h->fl->C_FindObjectsInit(s->sh, tmpl, 1);
	if (rv != CKR_OK)
		return s_rv(s, "C_FindObjectsInit", rv);
	rv = s->h->fl->C_FindObjects(s->sh, found, ST_ARRAY_SIZE(found), &nf);
	frv = s->h->fl->C_FindObjectsFinal(s->sh);
	if (rv != CKR_OK)
		return s_rv(s, "C_FindObjects", rv);
	if (frv != CKR_OK)
		return s_rv(s, "C_FindObjectsFinal", frv);
	out = calloc(nf ? nf : 1, sizeof(*out));
	if (!out) {
		s_err(s, "out of memory listing objects");
		return ST_E_NOMEM;
	}
	for (CK_ULONG i = 0; i < nf; i++) {
		uint8_t *l = NULL;
		size_t llen = 0;

		if (get_attr(s, found[i], CKA_LABEL, "CKA_LABEL", &l, &llen))
			continue;       /* unlabelled: not one of ours */
		out[cnt] = strndup((char *)l, llen);
		free(l);
		if (!out[cnt]) {
			err = ST_E_NOMEM;
			break;
		}
		cnt++;
	}
	if (err) {
		hsm_labels_free(out, cnt);
		s_err(s, "out of memory listing objects");
		return err;
	}
	*labels = out;
	*n = cnt;
	return ST_OK;
}

int hsm_inject_keygen(hsm_session *s, hsm_obj *priv, hsm_obj *pubobj,
		      uint8_t pub[HSM_P256_POINT_LEN])
{
	CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	static const char label[] = HSM_INJECT_LABEL;
	CK_ATTRIBUTE pub_tmpl[] = {
		{ CKA_EC_PARAMS, (void *)p256_oid, sizeof(p256_oid) },
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
	rv = s->h->fl->C_GenerateKeyPair(s->sh, &mech, pub_tmpl, ST_ARRAY_SIZE(pub_tmpl),
					 priv_tmpl, ST_ARRAY_SIZE(priv_tmpl),
					 &hpub, &hpriv);
	if (rv != CKR_OK)
		return s_rv(s, "C_GenerateKeyPair(device key)", rv);
	err = read_point(s, hpub, pub);
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
		{ CKA_EC_PARAMS, (void *)p256_oid, sizeof(p256_oid) },
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
		s_err(s, "hsm_inject_wrap: need an uncompressed P-256 transport key");
		return ST_E_INVAL;
	}
	fl = s->h->fl;
	rv = fl->C_GenerateKeyPair(s->sh, &gen, epub_tmpl, ST_ARRAY_SIZE(epub_tmpl),
				   epriv_tmpl, ST_ARRAY_SIZE(epriv_tmpl), &hepub, &hepriv);
	if (rv != CKR_OK)
		return s_rv(s, "C_GenerateKeyPair(ephemeral)", rv);
	err = read_point(s, hepub, eph);
	if (err)
		goto out;
	rv = fl->C_DeriveKey(s->sh, &derive, hepriv, kek_tmpl, ST_ARRAY_SIZE(kek_tmpl), &kek);
	if (rv != CKR_OK) {
		err = s_rv(s, "C_DeriveKey(CKM_ECDH1_DERIVE)", rv);
		if (rv == CKR_MECHANISM_PARAM_INVALID || rv == CKR_DOMAIN_PARAMS_INVALID)
			s_err(s, "C_DeriveKey(CKM_ECDH1_DERIVE): the device's transport "
			      "key was refused (not a P-256 point)");
		goto out;
	}
	rv = fl->C_WrapKey(s->sh, &wrap, kek, (CK_OBJECT_HANDLE)priv, wrapped, &outlen);
	if (rv != CKR_OK) {
		err = s_rv(s, "C_WrapKey(CKM_AES_KEY_WRAP_PAD)", rv);
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
	return s_rv(s, "C_DestroyObject", rv);
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
	if (!label_ok(s, label))
		return ST_E_INVAL;
	*found = 0;
	for (size_t i = 0; i < ST_ARRAY_SIZE(obj_kinds); i++) {
		CK_OBJECT_HANDLE h[2];
		CK_ULONG n;
		int err = find_objs(s, obj_kinds[i].cls, label, h, &n);

		if (err)
			return err;
		if (n)
			*found |= obj_kinds[i].bit;
	}
	return ST_OK;
}

/* Found again after each destroy: find_objs returns at most two. */
int hsm_remove(hsm_session *s, const char *label, unsigned what)
{
	if (!s)
		return ST_E_INVAL;
	if (!label_ok(s, label))
		return ST_E_INVAL;
	for (size_t i = 0; i < ST_ARRAY_SIZE(obj_kinds); i++) {
		if (!(what & obj_kinds[i].bit))
			continue;
		for (int round = 0; round < 64; round++) {
			CK_OBJECT_HANDLE h[2];
			CK_ULONG n;
			CK_RV rv;
			int err = find_objs(s, obj_kinds[i].cls, label, h, &n);

			if (err)
				return err;
			if (!n)
				break;
			for (CK_ULONG k = 0; k < n; k++) {
				rv = s->h->fl->C_DestroyObject(s->sh, h[k]);
				if (rv != CKR_OK && rv != CKR_OBJECT_HANDLE_INVALID)
					return s_rv(s, "C_DestroyObject", rv);
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
	if (!label_ok(s, label) || !text)
		return ST_E_INVAL;
	err = find_objs(s, CKO_DATA, label, h, &n);
	if (err)
		return err;
	if (n) {
		s_err(s, "a data object labelled '%s' already exists", label);
		return ST_E_EXISTS;
	}
	rv = s->h->fl->C_CreateObject(s->sh, tmpl, ST_ARRAY_SIZE(tmpl), &obj);
	if (rv != CKR_OK)
		return s_rv(s, "C_CreateObject(data)", rv);
	return ST_OK;
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

/* Only finalise what we initialised: if another user in this process had
 * already initialised the module, C_Finalize would pull it from under
 * them.  All hsm_sessions must be closed before this: their handles point
 * at h.  When we finalise, the module closes any session still open. */
void hsm_close(hsm *h)
{
	if (!h)
		return;
	if (h->fl) {
		if (h->logged_in)
			h->fl->C_Logout(h->main);
		if (h->have_main)
			h->fl->C_CloseSession(h->main);
		if (h->initialized)
			h->fl->C_Finalize(NULL);
	}
	if (h->dl)
		dlclose(h->dl);
	pthread_mutex_destroy(&h->err_lock);
	free(h);
}

/* hsm.c — the station's PKCS#11 client, its core: module loading, token
 * lookup by label, login, sessions, and the error reporting the other
 * files of hsm/ share (objects.c, keys.c, wrap.c).
 *
 * PKCS#11 types stay in hsm/ (hsm_int.h).  Every CK_RV is turned into an
 * st_err here and the cause is written as "<C_Function>: <CKR_NAME>" into
 * the handle the call was made on.  PINs are never copied, logged or put
 * in a message. */
#include "hsm.h"
#include "hsm_int.h"
#include "base.h"

#include <dlfcn.h>
#include <p11-kit/uri.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#define A(x) { x, #x }
static const struct {
	CK_ATTRIBUTE_TYPE t;
	const char *name;
} attr_names[] = {
	A(CKA_CLASS), A(CKA_TOKEN), A(CKA_PRIVATE), A(CKA_LABEL), A(CKA_APPLICATION),
	A(CKA_VALUE), A(CKA_CERTIFICATE_TYPE), A(CKA_ISSUER), A(CKA_SERIAL_NUMBER),
	A(CKA_CERTIFICATE_CATEGORY), A(CKA_KEY_TYPE), A(CKA_SUBJECT), A(CKA_ID),
	A(CKA_SENSITIVE), A(CKA_ENCRYPT), A(CKA_DECRYPT), A(CKA_WRAP), A(CKA_UNWRAP),
	A(CKA_SIGN), A(CKA_VERIFY), A(CKA_DERIVE), A(CKA_MODULUS_BITS),
	A(CKA_PUBLIC_EXPONENT), A(CKA_VALUE_LEN), A(CKA_EXTRACTABLE), A(CKA_LOCAL),
	A(CKA_NEVER_EXTRACTABLE), A(CKA_EC_PARAMS), A(CKA_EC_POINT),
};
#undef A

const char *hsm_attr_name(CK_ATTRIBUTE_TYPE t, char *buf, size_t n)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(attr_names); i++)
		if (attr_names[i].t == t)
			return attr_names[i].name;
	snprintf(buf, n, "CKA 0x%lx", (unsigned long)t);
	return buf;
}

/* What the operator can do about a return code, for the few where that
 * is clear whatever the call was ("" otherwise). */
static const char *rv_hint(CK_RV rv)
{
	switch (rv) {
	case CKR_USER_NOT_LOGGED_IN:
		return ": the token needs a login (check the PIN source)";
	case CKR_TOKEN_WRITE_PROTECTED:
	case CKR_SESSION_READ_ONLY:
		return ": the token is read-only; the station needs a writable token";
	case CKR_DEVICE_MEMORY:
		return ": the token is full; remove objects that are no longer needed";
	case CKR_MECHANISM_INVALID:
		return ": the token does not offer this mechanism";
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_DEVICE_REMOVED:
		return ": the token was removed; insert it and start again";
	default:
		return "";
	}
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
void hsm_h_err(hsm *h, const char *fmt, ...)
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
void hsm_s_err(hsm_session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
}

/* Turn a failed PKCS#11 call on h into its st_err and message. */
int hsm_h_rv(hsm *h, const char *fn, CK_RV rv)
{
	char num[48];

	hsm_h_err(h, "%s: %s%s", fn, rv_name(rv, num, sizeof(num)), rv_hint(rv));
	return rv_err(rv);
}

/* Turn a failed PKCS#11 call on a session into its st_err and message. */
int hsm_s_rv(hsm_session *s, const char *fn, CK_RV rv)
{
	char num[48];

	s->last_rv = rv;
	hsm_s_err(s, "%s: %s%s", fn, rv_name(rv, num, sizeof(num)), rv_hint(rv));
	return rv_err(rv);
}

/* A failed call that took a template: for the attribute codes, which
 * attribute cannot be known without trying (and a retry of a create could
 * make the object), so the message states the template the module was
 * given, so the operator can hold it against the module's documentation. */
int hsm_s_rv_tmpl(hsm_session *s, const char *fn, CK_RV rv,
		  const CK_ATTRIBUTE *t, CK_ULONG n)
{
	char num[48], list[HSM_ERRMSG_LEN / 2] = "";
	const char *what;
	size_t used = 0;
	int err = hsm_s_rv(s, fn, rv);

	switch (rv) {
	case CKR_TEMPLATE_INCOMPLETE:
		what = "the module needs an attribute the station does not set";
		break;
	case CKR_ATTRIBUTE_TYPE_INVALID:
		what = "the module does not know one of the attributes";
		break;
	case CKR_ATTRIBUTE_VALUE_INVALID:
	case CKR_TEMPLATE_INCONSISTENT:
		what = "the module refuses the value of one of the attributes";
		break;
	case CKR_ATTRIBUTE_READ_ONLY:
		what = "the module does not let the station set one of the attributes";
		break;
	default:
		return err;
	}
	for (CK_ULONG i = 0; i < n && used < sizeof(list); i++) {
		int w = snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "",
				 hsm_attr_name(t[i].type, num, sizeof(num)));
		if (w > 0)
			used += (size_t)w;
	}
	hsm_s_err(s, "%s: %s: %s (template: %s); check which of them the module "
		  "requires or refuses in its documentation, or use a module that "
		  "follows PKCS#11 2.40 here", fn, rv_name(rv, num, sizeof(num)), what, list);
	return err;
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
	P11KitUri *uri = NULL;
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0;
	char present[HSM_ERRMSG_LEN / 2] = "";
	size_t plen = 0;
	CK_RV rv;
	int err;

	if (!strncmp(label, "pkcs11:", 7)) {
		int urc;

		uri = p11_kit_uri_new();
		if (!uri) {
			hsm_h_err(h, "out of memory parsing the token URI");
			return ST_E_NOMEM;
		}
		urc = p11_kit_uri_parse(label, P11_KIT_URI_FOR_TOKEN, uri);
		if (urc != P11_KIT_URI_OK) {
			hsm_h_err(h, "hsm.token '%s' is not a PKCS#11 URI (RFC 7512): %s",
				  label, p11_kit_uri_message(urc));
			p11_kit_uri_free(uri);
			return ST_E_CONFIG;
		}
	}
	for (;;) {
		rv = h->fl->C_GetSlotList(CK_TRUE, NULL, &n);
		if (rv != CKR_OK) {
			err = hsm_h_rv(h, "C_GetSlotList", rv);
			goto out;
		}
		free(slots);
		slots = calloc(n ? n : 1, sizeof(*slots));
		if (!slots) {
			hsm_h_err(h, "out of memory listing slots");
			err = ST_E_NOMEM;
			goto out;
		}
		rv = h->fl->C_GetSlotList(CK_TRUE, slots, &n);
		if (rv == CKR_OK)
			break;
		if (rv != CKR_BUFFER_TOO_SMALL) {
			err = hsm_h_rv(h, "C_GetSlotList", rv);
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
		if (uri ? p11_kit_uri_match_token_info(uri, &ti) == 1 :
			  strcmp(l, label) == 0) {
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
	hsm_h_err(h, "no token %s '%s' (tokens present: %s)", uri ? "matches" :
		  "labelled", label, plen ? present : "none");
	err = ST_E_NOTOKEN;
out:
	if (uri)
		p11_kit_uri_free(uri);
	free(slots);
	return err;
}

/* Everything up to a usable main session, so that a failure at any step
 * leaves h in a state hsm_close() can undo. */
int hsm_open(const char *module_path, const char *token_label, hsm **out)
{
	return hsm_open_with(module_path, token_label, NULL, out);
}

int hsm_open_with(const char *module_path, const char *token_label,
		  const char *init_args, hsm **out)
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
		hsm_h_err(h, "hsm_open: module path and token label are required");
		return ST_E_INVAL;
	}
	if (strlen(token_label) > HSM_LABEL_LEN && strncmp(token_label, "pkcs11:", 7)) {
		hsm_h_err(h, "token label '%s' is longer than %d bytes",
			  token_label, HSM_LABEL_LEN);
		return ST_E_INVAL;
	}

	/* RTLD_NODELETE: modules built on OpenSSL or with thread-local state
	 * (SoftHSM among them) are not safe to unmap before exit, and a
	 * mapped module keeps leak reports attributable to it. */
	h->dl = dlopen(module_path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	if (!h->dl) {
		hsm_h_err(h, "cannot load PKCS#11 module %s: %s", module_path,
			  dlerror());
		return ST_E_IO;
	}
	/* POSIX guarantees dlsym results convert to function pointers. */
	get_list = (CK_C_GetFunctionList)dlsym(h->dl, "C_GetFunctionList");
	if (!get_list) {
		hsm_h_err(h, "%s is not a PKCS#11 module: no C_GetFunctionList",
			  module_path);
		return ST_E_IO;
	}
	rv = get_list(&h->fl);
	if (rv != CKR_OK || !h->fl) {
		h->fl = NULL;
		return hsm_h_rv(h, "C_GetFunctionList", rv != CKR_OK ? rv :
				CKR_GENERAL_ERROR);
	}

	/* Workers call into the module concurrently on their own sessions. */
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	/* Some modules take their configuration here (NSS softokn: its
	 * database directory), outside PKCS#11's own definition. */
	args.pReserved = (void *)(init_args && *init_args ? init_args : NULL);
	rv = h->fl->C_Initialize(&args);
	if (rv == CKR_OK)
		h->initialized = true;
	else if (rv == CKR_ARGUMENTS_BAD && !args.pReserved) {
		hsm_h_rv(h, "C_Initialize", rv);
		hsm_h_err(h, "C_Initialize: CKR_ARGUMENTS_BAD: module %s may need "
			  "initialisation parameters: set hsm.init_args (NSS softokn: "
			  "\"configdir='sql:/path/to/db' certPrefix='' keyPrefix='' "
			  "secmod='secmod.db' flags=\"), or load it through "
			  "p11-kit-proxy.so with x-init-reserved in its module file",
			  module_path);
		return ST_E_HSM;
	} else if (rv == CKR_ARGUMENTS_BAD) {
		hsm_h_rv(h, "C_Initialize", rv);
		hsm_h_err(h, "C_Initialize: CKR_ARGUMENTS_BAD: module %s refused "
			  "hsm.init_args: check the string against the module's "
			  "documentation", module_path);
		return ST_E_HSM;
	} else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
		return hsm_h_rv(h, "C_Initialize", rv);

	err = find_slot(h, token_label, &h->slot);
	if (err)
		return err;

	rv = h->fl->C_OpenSession(h->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
				  NULL, NULL, &h->main);
	if (rv != CKR_OK)
		return hsm_h_rv(h, "C_OpenSession", rv);
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
	unsigned swept;
	CK_RV rv;

	if (!h)
		return ST_E_INVAL;
	if (!h->have_main) {
		hsm_h_err(h, "hsm_login: HSM not open");
		return ST_E_STATE;
	}
	if (!pin && pinlen) {
		hsm_h_err(h, "hsm_login: no PIN given");
		return ST_E_INVAL;
	}
	rv = h->fl->C_Login(h->main, CKU_USER, (CK_UTF8CHAR_PTR)pin,
			    (CK_ULONG)pinlen);
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		return hsm_h_rv(h, "C_Login", rv);
	if (rv == CKR_OK)
		h->logged_in = true;
	/* Temporary keys a crashed run left (private objects: after login).
	 * Best effort: a token that cannot list them still works. */
	hsm_tmp_sweep(h, &swept);
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
		hsm_h_rv(h, "C_GetTokenInfo", rv);
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

hsm_pin_state hsm_pin_state_get(hsm *h)
{
	CK_TOKEN_INFO ti;
	CK_RV rv;

	if (!h || !h->fl)
		return HSM_PIN_UNKNOWN;
	rv = h->fl->C_GetTokenInfo(h->slot, &ti);
	if (rv != CKR_OK) {
		hsm_h_rv(h, "C_GetTokenInfo", rv);
		return HSM_PIN_UNKNOWN;
	}
	return ti.flags & CKF_USER_PIN_LOCKED ? HSM_PIN_LOCKED :
	       ti.flags & CKF_USER_PIN_FINAL_TRY ? HSM_PIN_FINAL_TRY :
	       ti.flags & CKF_USER_PIN_COUNT_LOW ? HSM_PIN_COUNT_LOW : HSM_PIN_OK;
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
		hsm_h_err(h, "hsm_session_open: HSM not open");
		return ST_E_STATE;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		hsm_h_err(h, "out of memory opening a session");
		return ST_E_NOMEM;
	}
	s->h = h;
	rv = h->fl->C_OpenSession(h->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
				  NULL, NULL, &s->sh);
	if (rv != CKR_OK) {
		free(s);
		return hsm_h_rv(h, "C_OpenSession", rv);
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
		return hsm_s_rv(s, "C_OpenSession (re-open)", rv);
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

/* C_GenerateKeyPair takes two templates: both are stated, public first. */
int hsm_s_rv_pair(hsm_session *s, const char *fn, CK_RV rv,
		  const CK_ATTRIBUTE *pub, CK_ULONG np,
		  const CK_ATTRIBUTE *priv, CK_ULONG nv)
{
	CK_ATTRIBUTE all[32];
	CK_ULONG n = 0;

	for (CK_ULONG i = 0; i < np && n < ST_ARRAY_SIZE(all); i++)
		all[n++] = pub[i];
	for (CK_ULONG i = 0; i < nv && n < ST_ARRAY_SIZE(all); i++)
		all[n++] = priv[i];
	return hsm_s_rv_tmpl(s, fn, rv, all, n);
}

/* Read a variable-length attribute into a malloc'd buffer. */
int hsm_get_attr(hsm_session *s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
		 const char *what, uint8_t **out, size_t *len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	CK_RV rv;

	*out = NULL;
	rv = s->h->fl->C_GetAttributeValue(s->sh, o, &a, 1);
	if (rv == CKR_OK && (a.ulValueLen == CK_UNAVAILABLE_INFORMATION ||
			     a.ulValueLen == 0 || a.ulValueLen > 65536)) {
		hsm_s_err(s, "%s is not available", what);
		return ST_E_HSM;
	}
	if (rv != CKR_OK) {
		char num[48];

		hsm_s_err(s, "C_GetAttributeValue(%s): %s", what, rv_name(rv, num, sizeof(num)));
		return rv_err(rv);
	}
	a.pValue = malloc(a.ulValueLen);
	if (!a.pValue) {
		hsm_s_err(s, "out of memory reading %s", what);
		return ST_E_NOMEM;
	}
	rv = s->h->fl->C_GetAttributeValue(s->sh, o, &a, 1);
	if (rv != CKR_OK) {
		char num[48];

		free(a.pValue);
		hsm_s_err(s, "C_GetAttributeValue(%s): %s", what, rv_name(rv, num, sizeof(num)));
		return rv_err(rv);
	}
	*out = a.pValue;
	*len = a.ulValueLen;
	return ST_OK;
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

/* The label is what the station looks keys up by; a URI naming the key
 * some other way would be matched differently from what `ca show` lists. */
int hsm_uri_label(const char *uri_text, char *label, size_t len, char *why,
		  size_t whylen)
{
	P11KitUri *uri = p11_kit_uri_new();
	CK_ATTRIBUTE *a;
	int urc, rc = ST_E_CONFIG;

	if (!uri)
		return ST_E_NOMEM;
	urc = p11_kit_uri_parse(uri_text, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, uri);
	if (urc != P11_KIT_URI_OK) {
		snprintf(why, whylen, "'%s' is not a PKCS#11 URI (RFC 7512): %s",
			 uri_text, p11_kit_uri_message(urc));
		goto out;
	}
	a = p11_kit_uri_get_attribute(uri, CKA_LABEL);
	if (!a || !a->pValue || a->ulValueLen == 0) {
		snprintf(why, whylen, "'%s' names no object: give the key's label as "
			 "object=LABEL", uri_text);
		goto out;
	}
	if (a->ulValueLen >= len || memchr(a->pValue, '\0', a->ulValueLen)) {
		snprintf(why, whylen, "'%s': the object label is too long or holds "
			 "a NUL byte", uri_text);
		goto out;
	}
	memcpy(label, a->pValue, a->ulValueLen);
	label[a->ulValueLen] = '\0';
	rc = ST_OK;
out:
	p11_kit_uri_free(uri);
	return rc;
}

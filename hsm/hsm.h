/* hsm.h — the station's PKCS#11 client.
 *
 * Loads a PKCS#11 module by path (dlopen + C_GetFunctionList), initialises it
 * once with OS locking, finds a token by label, logs in, and offers the few
 * typed operations the station needs.  PKCS#11 structures never leave this
 * module.  Thread model: one hsm_session per worker thread; the hsm handle
 * itself is shared and its open/login calls happen before workers start.
 *
 * Every function returns an st_err (0 ok, negative error).  On error a
 * readable cause (with the PKCS#11 return code name) is kept in the handle
 * the call was made on: hsm_errmsg() or hsm_session_errmsg(). */
#ifndef ST_HSM_H
#define ST_HSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hsm hsm;                 /* loaded module + chosen token */
typedef struct hsm_session hsm_session; /* one PKCS#11 session, one thread */
typedef unsigned long hsm_obj;          /* a PKCS#11 object handle */

#define HSM_P256_POINT_LEN 65           /* uncompressed 04||X||Y */
#define HSM_P256_SIG_LEN 64             /* raw r||s from CKM_ECDSA */

/* Load the module at module_path, initialise it (CKF_OS_LOCKING_OK) and find
 * the token whose label is token_label.  Missing module → ST_E_IO, no such
 * token → ST_E_NOTOKEN.  On failure *out may still be set so the caller can
 * read hsm_errmsg(); it must be freed with hsm_close() either way. */
int hsm_open(const char *module_path, const char *token_label, hsm **out);

/* hsm_open with initialisation parameters: init_args (NULL or "" for
 * none) is passed as CK_C_INITIALIZE_ARGS.pReserved, for modules that take
 * their configuration there (NSS softokn).  token_label may also be an
 * RFC 7512 URI ("pkcs11:token=station;manufacturer=..."): the first token
 * whose CK_TOKEN_INFO matches it (p11-kit's parser and matcher).  A
 * module's CKR_ARGUMENTS_BAD without init_args is reported as "may need
 * hsm.init_args". */
int hsm_open_with(const char *module_path, const char *token_label,
		  const char *init_args, hsm **out);

/* The object label an RFC 7512 key URI names (its object= attribute),
 * into label (len bytes).  ST_E_CONFIG with the reason in why when uri is
 * not a URI for an object or names none (selecting by id= alone is not
 * supported: the station pairs keys and certificates by label). */
int hsm_uri_label(const char *uri, char *label, size_t len, char *why,
		  size_t whylen);

/* Readable cause of the last failed call on h ("" when none). */
const char *hsm_errmsg(const hsm *h);

/* Log the user in with pin (not NUL-terminated, pinlen bytes).  The caller
 * wipes its copy; this module keeps none.  CKR_PIN_INCORRECT → ST_E_PIN,
 * CKR_PIN_LOCKED → ST_E_PIN_LOCKED.  Never retried here.  Once logged in,
 * destroys the temporary "station-tmp" token objects that a process of
 * this host no longer running left (see hsm_inject_keygen). */
int hsm_login(hsm *h, const char *pin, size_t pinlen);

/* Token flags worth a warning, as a static string, or NULL (e.g. the
 * token reports the user PIN count low or the final try). */
const char *hsm_pin_warning(hsm *h);

/* The user PIN's counter state as the token reports it (read fresh). */
typedef enum hsm_pin_state {
	HSM_PIN_UNKNOWN = -1,   /* C_GetTokenInfo failed (hsm_errmsg) */
	HSM_PIN_OK = 0,
	HSM_PIN_COUNT_LOW,      /* CKF_USER_PIN_COUNT_LOW: a wrong PIN was entered */
	HSM_PIN_FINAL_TRY,      /* CKF_USER_PIN_FINAL_TRY: one more wrong PIN locks it */
	HSM_PIN_LOCKED,         /* CKF_USER_PIN_LOCKED */
} hsm_pin_state;
hsm_pin_state hsm_pin_state_get(hsm *h);

/* Open a new read-write session on the token (logged-in state is shared by
 * all sessions of the application).  One per worker thread. */
int hsm_session_open(hsm *h, hsm_session **out);
void hsm_session_close(hsm_session *s);
const char *hsm_session_errmsg(const hsm_session *s);

/* Did the last failure on s mean the token or the session went away
 * (CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_SESSION_HANDLE_INVALID,
 * CKR_SESSION_CLOSED, CKR_DEVICE_ERROR, or a held object handle no longer
 * valid)?  Then the caller re-opens rather than retrying the operation. */
bool hsm_session_lost(const hsm_session *s);

/* Replace s's PKCS#11 session with a new one on the same token (handles
 * found through the old one must be looked up again).  Login state belongs
 * to the application: if the token itself was pulled and re-inserted, key
 * lookups on the new session fail and the station must log in again. */
int hsm_session_reopen(hsm_session *s);

/* Generate an EC P-256 key pair labelled label (CKA_LABEL and CKA_ID).
 * token=true makes persistent token objects (a CA key); false makes session
 * objects.  The private key is always CKA_SENSITIVE, !CKA_EXTRACTABLE,
 * CKA_PRIVATE and CKA_SIGN.  The public point is returned in pub.  Fails with
 * ST_E_EXISTS when token=true and a key with that label already exists. */
int hsm_keygen_p256(hsm_session *s, const char *label, bool token,
		    uint8_t pub[HSM_P256_POINT_LEN], hsm_obj *priv);

/* Find the private key labelled label; ST_E_NOTFOUND when absent. */
int hsm_find_privkey(hsm_session *s, const char *label, hsm_obj *priv);

/* Read the public point (04||X||Y) of the public key labelled label. */
int hsm_read_pubkey(hsm_session *s, const char *label,
		    uint8_t pub[HSM_P256_POINT_LEN]);

/* Sign a host-computed digest with CKM_ECDSA; out gets raw r||s (64 bytes
 * for P-256), *outlen its length. */
int hsm_sign_digest(hsm_session *s, hsm_obj priv, const uint8_t *digest,
		    size_t dlen, uint8_t *out, size_t *outlen);

/* Fill buf with n bytes from the token's random generator. */
int hsm_random(hsm_session *s, uint8_t *buf, size_t n);

/* Store a DER X.509 certificate as a token object labelled label (replaces
 * none: ST_E_EXISTS if one with that label exists). */
int hsm_cert_store(hsm_session *s, const char *label, const uint8_t *der,
		   size_t len);

/* Read the DER certificate labelled label; *der is malloc'd, caller frees. */
int hsm_cert_load(hsm_session *s, const char *label, uint8_t **der,
		  size_t *len);

/* Key types for CA and device keys.  The hash that goes with each is the
 * caller's choice (SHA-256 for P-256 and RSA-3072, SHA-384 for P-384). */
typedef enum hsm_keytype {
	HSM_KEY_P256 = 1,
	HSM_KEY_P384,
	HSM_KEY_RSA3072,
	HSM_KEY_ED25519,
} hsm_keytype;

/* Signature mechanisms offered by hsm_sign().  Hashing happens on the host
 * for ECDSA and RSA because many HSMs offer only the raw mechanisms. */
typedef enum hsm_sigmech {
	HSM_SIG_ECDSA = 1,      /* CKM_ECDSA: in = digest, out = raw r||s */
	HSM_SIG_RSA_PKCS,       /* CKM_RSA_PKCS: in = DER DigestInfo */
	HSM_SIG_EDDSA,          /* CKM_EDDSA: in = the whole message */
} hsm_sigmech;

/* Mechanisms a profile can need; checked at start-up by
 * hsm_check_mechanisms() so a missing one is named before any unit. */
typedef enum hsm_mech {
	HSM_M_EC_KEY_PAIR_GEN = 1,
	HSM_M_RSA_KEY_PAIR_GEN,
	HSM_M_EDDSA_KEY_PAIR_GEN,
	HSM_M_ECDSA,
	HSM_M_RSA_PKCS,
	HSM_M_EDDSA,
	HSM_M_ECDH1_DERIVE,
	HSM_M_AES_KEY_WRAP_PAD,         /* 0x210A: RFC 5649 in SoftHSM only */
	HSM_M_AES_KEY_WRAP_KWP,         /* 0x210B: RFC 5649 by the standard */
	HSM_M_AES_KEY_WRAP_5649,        /* either of the two: what inject needs */
} hsm_mech;

#define HSM_MAX_SIG 512         /* enough for RSA-4096 */

/* Parse "p256", "p384", "rsa3072" or "ed25519"; ST_E_INVAL otherwise. */
int hsm_keytype_parse(const char *name, hsm_keytype *out);
/* Readable name of a key type ("EC P-256", ...). */
const char *hsm_keytype_name(hsm_keytype t);
/* The signature mechanism a key type signs with. */
hsm_sigmech hsm_keytype_sigmech(hsm_keytype t);
/* The keygen mechanism a key type needs. */
hsm_mech hsm_keytype_genmech(hsm_keytype t);
/* PKCS#11 name of a mechanism ("CKM_ECDSA"), for messages. */
const char *hsm_mech_name(hsm_mech m);

/* Ask the token (C_GetMechanismList) whether it offers every mechanism in
 * need[0..n).  ST_E_HSM naming each missing one in hsm_errmsg() if not:
 * checked before any unit starts rather than failing on the first one. */
int hsm_check_mechanisms(hsm *h, const hsm_mech *need, size_t n);

/* Generate a key pair of type t labelled label (CKA_LABEL and CKA_ID), with
 * the same attributes and ST_E_EXISTS rule as hsm_keygen_p256().  The
 * module must offer the type; if not, ST_E_HSM says which mechanism. */
int hsm_keygen(hsm_session *s, hsm_keytype t, const char *label, bool token,
	       hsm_obj *priv);

/* The public key labelled label as a DER SubjectPublicKeyInfo (malloc'd,
 * caller frees), and its type. */
int hsm_pubkey_spki(hsm_session *s, const char *label, uint8_t **der,
		    size_t *len, hsm_keytype *type);

/* Sign in (a digest, a DigestInfo or a message, see hsm_sigmech) with
 * priv; out (cap bytes) gets the signature as the mechanism returns it. */
int hsm_sign(hsm_session *s, hsm_obj priv, hsm_sigmech m, const uint8_t *in,
	     size_t inlen, uint8_t *out, size_t cap, size_t *outlen);

/* Labels of every certificate (privkeys false) or private key (true)
 * object visible to the session: several issuing CAs and their chains can
 * live in one token.  *labels is a malloc'd array of *n malloc'd strings;
 * free it with hsm_labels_free(). */
int hsm_list_labels(hsm_session *s, bool privkeys, char ***labels, size_t *n);
void hsm_labels_free(char **labels, size_t n);

/* Wrapped key injection.  hsm_inject_keygen() makes a P-256 device key
 * pair as session objects; the private key is CKA_SENSITIVE and
 * extractable only by wrapping (CKA_EXTRACTABLE, never readable in clear),
 * with no usage of its own, labelled HSM_INJECT_LABEL (so listings show
 * it while it lives).  pub gets its public point.  On a module that
 * refuses session objects (tpm2-pkcs11) this pair and the ephemeral one of
 * hsm_inject_wrap are token objects labelled "station-tmp" instead,
 * destroyed the same way; hsm_login removes those a crash left. */
#define HSM_INJECT_LABEL "station-device-key"
int hsm_inject_keygen(hsm_session *s, hsm_obj *priv, hsm_obj *pubobj,
		      uint8_t pub[HSM_P256_POINT_LEN]);

/* Which mechanism hsm_inject_wrap() wraps with.  AUTO: CKM_AES_KEY_WRAP_KWP
 * when the token offers it, SoftHSM's CKM_AES_KEY_WRAP_PAD form only when
 * it does not (other modules read 0x210A as PKCS#7 padding + RFC 3394). */
typedef enum hsm_wrapmech {
	HSM_WRAP_AUTO = 0,
	HSM_WRAP_KWP,
	HSM_WRAP_PAD,
} hsm_wrapmech;

/* Choose the wrap mechanism (want, normally HSM_WRAP_AUTO) and prove with
 * a known-answer test that the module's output is RFC 5649, the format
 * the device unwraps: a fixed 20-byte secret is wrapped under a fixed
 * AES-256 key (both made in the token as session objects, destroyed
 * after) and compared with OpenSSL's EVP_aes_256_wrap_pad (SoftHSM's
 * 0x210A, RFC 5649 of the key zero-padded to 8 bytes, passes by unwrapping
 * with OpenSSL to the key and zeros: the device's DER parser ignores them).  ST_E_HSM with
 * the reason and what to do in hsm_errmsg() when the token has neither
 * mechanism or its output differs: inject mode must then not run.  Call
 * once before workers start; hsm_inject_wrap() then uses the choice. */
int hsm_inject_check(hsm *h, hsm_wrapmech want);

/* PKCS#11 name of the wrap mechanism hsm_inject_check() chose, or NULL. */
const char *hsm_inject_mech(const hsm *h);

/* Wrap the device key priv for a target whose transport public key is
 * transport: a fresh ephemeral P-256 key pair, CKM_ECDH1_DERIVE (CKD_NULL,
 * so any HSM with ECDH can do it) with transport gives an AES-256 session
 * key, the mechanism hsm_inject_check() chose wraps priv (PKCS#8 inside,
 * RFC 5649; without a check: KWP when offered, else 0x210A).  eph gets
 * the ephemeral public point, wrapped (cap bytes) the blob.  The ephemeral
 * key and the AES key are destroyed before return, pass or fail. */
int hsm_inject_wrap(hsm_session *s, hsm_obj priv,
		    const uint8_t transport[HSM_P256_POINT_LEN],
		    uint8_t eph[HSM_P256_POINT_LEN], uint8_t *wrapped,
		    size_t cap, size_t *wlen);

/* Would the token hand out the secret value of obj (CKA_VALUE) in clear?
 * false is the only acceptable answer for a device key. */
bool hsm_value_readable(hsm_session *s, hsm_obj obj);

/* Destroy a (session) object; ST_OK if it is already gone. */
int hsm_destroy(hsm_session *s, hsm_obj obj);

/* What hsm_objects() finds and hsm_remove() removes under one label: the
 * halves of a key pair, its certificate, and a data object (a marker the
 * station keeps while it makes a key and its certificate, so that a crash
 * half-way is told apart from a pending CA request). */
#define HSM_O_PRIVKEY  0x1u
#define HSM_O_PUBKEY   0x2u
#define HSM_O_CERT     0x4u
#define HSM_O_DATA     0x8u

/* Which of the objects above exist labelled label (*found, a mask); an
 * object of one kind found twice counts as found. */
int hsm_objects(hsm_session *s, const char *label, unsigned *found);

/* Destroy every object of the kinds in what labelled label (token objects
 * too: the caller decides that nothing can need them).  ST_OK when none
 * is left. */
int hsm_remove(hsm_session *s, const char *label, unsigned what);

/* Create a private token data object labelled label holding text (the
 * in-progress marker above).  ST_E_EXISTS when one exists. */
int hsm_data_put(hsm_session *s, const char *label, const char *text);

/* Did the last hsm_data_put() on s fail because the module keeps no
 * private token data objects at all (NSS softokn refuses them with
 * CKR_ATTRIBUTE_VALUE_INVALID)?  Then the caller goes on without one. */
bool hsm_data_refused(const hsm_session *s);

/* Was the private key priv generated inside the token and never
 * extractable (CKA_LOCAL and CKA_NEVER_EXTRACTABLE true)?  false when
 * the token cannot tell. */
bool hsm_key_made_here(hsm_session *s, hsm_obj priv);

/* Log out, close every session, finalise and unload.  NULL is fine. */
void hsm_close(hsm *h);

#endif

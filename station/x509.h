/* x509.h — engine-internal: building certificates with OpenSSL and having
 * the HSM sign them.  Not a public module header. */
#ifndef ST_X509_H
#define ST_X509_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>

#include "hsm/hsm.h"
#include "station.h"

#define ST_CERT_SERIAL_LEN 16

/* The extendedKeyUsage that makes a certificate the station's audit
 * certificate (docs/records.md, "The audit certificate"): an OID of its
 * own under the 2.25 UUID arc (ITU-T X.667; UUID
 * 235cac73-b2c1-40b5-9d9f-b558388d607f), so nobody else's OID is reused.
 * Only the audit certificate carries it, critical and alone; a device
 * certificate profile that asks for it is refused (config.c) and so is a
 * device template that would carry it (st_x509_device_template).  Every
 * check of an audit certificate requires it. */
#define ST_AUDIT_EKU_OID "2.25.47004168904469736934228417795089850495"

/* Does x carry the audit extendedKeyUsage? */
bool st_x509_is_audit(X509 *x);

/* Does an extendedKeyUsage in openssl.cnf syntax (a profile's) name the
 * audit OID, in any spelling OpenSSL accepts? */
bool st_eku_names_audit(const char *eku);

/* Add the audit extendedKeyUsage (critical, that OID alone) to the
 * unsigned template x.  0 on failure. */
int st_x509_add_audit_eku(X509 *x);

/* What st_x509_audit_check found. */
enum {
	ST_AUDIT_CERT_OK = 0,      /* issued by one of the CAs, audit EKU */
	ST_AUDIT_CERT_OLD = 1,     /* issued by one of the CAs, no audit EKU:
				    * trusted only for a key that an OK
				    * certificate certifies too (the old
				    * certificate of a re-certified key) */
	ST_AUDIT_CERT_BAD = -1,    /* not issued by them, a CA, or unreadable */
};

/* Check x as an audit certificate against the CA certificates cas:
 * issued and signed by one of them, not itself a CA, and carrying the
 * audit extendedKeyUsage.  why gets the reason for anything but OK. */
int st_x509_audit_check(X509 *x, STACK_OF(X509) *cas, char *why, size_t len);

/* Every CA certificate (basicConstraints CA:TRUE) in the token: the
 * issuing CAs and their chains.  Certificates are public objects, so no
 * login is needed.  *out is a new stack (possibly empty). */
int st_x509_token_cas(hsm_session *s, STACK_OF(X509) **out);

/* Does the HSM private key priv of type t belong to the public key pub?
 * (It signs a random challenge and pub verifies it.) */
bool st_hsm_key_matches(hsm_session *s, hsm_obj priv, hsm_keytype t,
			EVP_PKEY *pub);

/* An EVP_PKEY for a P-256 public point (04||X||Y), or NULL. */
EVP_PKEY *st_p256_pubkey(const uint8_t point[HSM_P256_POINT_LEN]);

/* A public key from a DER SubjectPublicKeyInfo, or NULL. */
EVP_PKEY *st_spki_pubkey(const uint8_t *der, size_t len);

/* The hsm_keytype of a public key; ST_E_INVAL for one the station does not
 * sign with. */
int st_key_type(EVP_PKEY *key, hsm_keytype *t);

/* Sign the TBS part of x with the HSM key priv of type t (hash on the host
 * matching the key: SHA-256, SHA-384 for P-384, none for Ed25519) and
 * return the assembled certificate; x is left as is. */
X509 *st_x509_hsm_sign(X509 *x, hsm_session *s, hsm_obj priv, hsm_keytype t,
		       char *err, size_t errlen);

/* The same for a certificate signing request. */
X509_REQ *st_x509_req_hsm_sign(X509_REQ *r, hsm_session *s, hsm_obj priv,
			       hsm_keytype t, char *err, size_t errlen);

/* Sign data (a whole file: a profile, the operator list) with the HSM key
 * priv of type t, hashing on the host as for certificates; *sig gets a
 * detached signature OpenSSL verifies as is (DER ECDSA-Sig-Value, PKCS#1
 * v1.5, or Ed25519), OPENSSL_free it.  Returns its length, or -1 with err
 * filled in. */
int st_hsm_sign_bytes(hsm_session *s, hsm_obj priv, hsm_keytype t,
		      const uint8_t *data, size_t len, uint8_t **sig,
		      char *err, size_t errlen);

/* Sign a SHA-256 digest of data hashed elsewhere (the audit chain's
 * events, checkpoints, manifests) with the HSM key priv of type t (P-256,
 * P-384 or RSA; not Ed25519): *sig as st_hsm_sign_bytes() gives it, so
 * `openssl dgst -sha256 -verify` checks it against the data. */
int st_hsm_sign_sha256(hsm_session *s, hsm_obj priv, hsm_keytype t,
		       const uint8_t digest[32], uint8_t **sig, char *err,
		       size_t errlen);

/* The same as st_x509_hsm_sign() for a CRL (the revocation list). */
X509_CRL *st_x509_crl_hsm_sign(X509_CRL *c, hsm_session *s, hsm_obj priv,
			       hsm_keytype t, char *err, size_t errlen);

/* A self-signed CA certificate template for capub (not yet signed). */
X509 *st_x509_ca_template(EVP_PKEY *capub, const char *cn, const char *org,
			  int days, const uint8_t serial[ST_CERT_SERIAL_LEN]);

/* The device certificate profile, from the product profile's
 * "certificate" group (see config.c and docs/profile.md). */
struct st_cert_profile {
	char org[128];          /* O when no subject template is given */
	char subject[512];      /* "O=..., CN=${uid}, serialNumber=${serial}" or "" */
	int validity_days;
	bool no_expiry;         /* IEEE 802.1AR: notAfter 99991231235959Z */
	char key_usage[128];    /* openssl.cnf syntax, "" = none */
	char eku[256];          /* openssl.cnf syntax, "" = none */
	char hwtype_oid[64];    /* 802.1AR hardwareModuleName hwType, "" = none */
	char crl_url[256];      /* CRL distribution point, "" = none */
	char ocsp_url[256];     /* OCSP responder (AIA), "" = none */
};

/* What a subject template may refer to: ${uid}, ${serial}, ${product},
 * ${model}. */
typedef struct st_subject_vars {
	const char *uid, *serial, *product, *model;
} st_subject_vars;

/* Check a subject template (attribute names OpenSSL knows, variables
 * this station fills); err says what is wrong. */
int st_subject_check(const char *tmpl, char *err, size_t errlen);

/* A device certificate template for devpub issued by ca, following the
 * profile cp: subject from the template (or O=org, serialNumber=uid,
 * CN=uid), validity (clamped to the CA's notAfter unless no-expiry),
 * basicConstraints CA:FALSE (critical), keyUsage, extendedKeyUsage, SKI,
 * AKI, subjectAltName with the 802.1AR hardwareModuleName (hwSerialNum =
 * the uid bytes), CRL distribution point and OCSP URL when configured.
 * Not yet signed.  NULL with err filled in on failure. */
X509 *st_x509_device_template(EVP_PKEY *devpub, X509 *ca,
			      const st_cert_profile *cp, const st_subject_vars *v,
			      const uint8_t *uid, size_t uidlen,
			      const uint8_t serial[ST_CERT_SERIAL_LEN],
			      char *err, size_t errlen);

/* The mechanism a CA key of type t signs with, for the start-up check. */
hsm_mech st_sigmech_need(hsm_keytype t);

/* SHA-256 fingerprint of the DER certificate, hex (65 bytes). */
void st_x509_fingerprint(X509 *x, char out[65]);

/* Serial number of x as hex (out >= 2*ST_CERT_SERIAL_LEN+3). */
void st_x509_serial_hex(X509 *x, char *out, size_t len);

/* Random positive serial: first byte in 0x01..0x7f. */
int st_x509_random_serial(hsm_session *s, uint8_t serial[ST_CERT_SERIAL_LEN]);

/* The issuing CA chosen for a run. */
typedef struct st_ca_choice {
	char label[128];
	hsm_keytype type;
	X509 *cert;          /* owned by the caller after st_ca_select() */
	int days_left;
	char warning[384];   /* non-empty inside the renewal window */
} st_ca_choice;

/* Choose the CA to issue from: the one labelled label (when not NULL), or
 * the newest valid issuing CA in the token (rollover).  A CA whose
 * certificate is expired, not yet valid, not a CA or does not match its
 * key is refused; err says which and why (every candidate's reason when
 * none can issue).  out->warning is set when fewer than renew_days are
 * left. */
int st_ca_select(hsm_session *s, const char *label, int renew_days,
		 st_ca_choice *out, char *err, size_t errlen);

/* Write a certificate (x) or a request (req) as PEM to path through a temp
 * file, fsync and rename, so a crash never leaves half a file behind. */
int st_write_pem(const char *path, X509 *x, X509_REQ *req,
		 char *err, size_t errlen);

/* Store x in the token as the certificate object label.  When der is not
 * NULL it gets a malloc'd copy of the DER stored (free() it) and *len its
 * length.  On a token error err reads "cannot store the <what> in the
 * token: <cause>"; ST_E_CRYPTO (x does not encode) and ST_E_NOMEM leave
 * err alone. */
int st_x509_hsm_store(hsm_session *s, const char *label, X509 *x,
		      const char *what, uint8_t **der, size_t *len,
		      char *err, size_t errlen);

#endif

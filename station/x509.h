/* x509.h — engine-internal: building certificates with OpenSSL and having
 * the HSM sign them.  Not a public module header. */
#ifndef ST_X509_H
#define ST_X509_H

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "hsm/hsm.h"

#define ST_CERT_SERIAL_LEN 16

/* An EVP_PKEY for a P-256 public point (04||X||Y), or NULL. */
EVP_PKEY *st_p256_pubkey(const uint8_t point[HSM_P256_POINT_LEN]);

/* Sign the TBS part of x with the HSM key priv (ECDSA over SHA-256, hash
 * on the host) and return the assembled certificate; x is left as is. */
X509 *st_x509_hsm_sign(X509 *x, hsm_session *s, hsm_obj priv,
		       char *err, size_t errlen);

/* A self-signed CA certificate template for capub (not yet signed). */
X509 *st_x509_ca_template(EVP_PKEY *capub, const char *cn, const char *org,
			  int days, const uint8_t serial[ST_CERT_SERIAL_LEN]);

/* A device certificate template: subject CN = uid, serialNumber = uid,
 * O = org; issued by ca; client+server auth; not yet signed. */
X509 *st_x509_device_template(EVP_PKEY *devpub, X509 *ca, const char *uid_hex,
			      const char *org, int days,
			      const uint8_t serial[ST_CERT_SERIAL_LEN]);

/* SHA-256 fingerprint of the DER certificate, hex (65 bytes). */
void st_x509_fingerprint(X509 *x, char out[65]);

/* Serial number of x as hex (out >= 2*ST_CERT_SERIAL_LEN+3). */
void st_x509_serial_hex(X509 *x, char *out, size_t len);

/* Random positive serial: first byte in 0x01..0x7f. */
int st_x509_random_serial(hsm_session *s, uint8_t serial[ST_CERT_SERIAL_LEN]);

#endif

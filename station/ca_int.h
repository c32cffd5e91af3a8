/* ca_int.h — what ca.c (making CAs) and ca_select.c (showing and choosing
 * them) share.  Internal to station/. */
#ifndef ST_CA_INT_H
#define ST_CA_INT_H

#include <stdbool.h>
#include <openssl/x509.h>

#include "hsm/hsm.h"

/* The token's public key labelled label, as an EVP_PKEY, and its type. */
int st_ca_token_pubkey(hsm_session *s, const char *label, EVP_PKEY **out,
		       hsm_keytype *t);
/* Load and parse the certificate labelled label. */
int st_ca_load_cert(hsm_session *s, const char *label, X509 **out);
/* Does the certificate go with the token key labelled label?  ST_E_VERIFY
 * when not; *t gets the key's type. */
int st_ca_key_matches(hsm_session *s, const char *label, X509 *x,
		      hsm_keytype *t);
bool st_ca_self_signed(X509 *x);

#endif

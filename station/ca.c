/* ca.c — issuing CA lifecycle, making one: bootstrap (self-signed, for
 * labs), CSR for an offline root, import of the signed certificate and its
 * chain (inspection and choosing the CA to issue from: ca_select.c).  CA private keys are made inside the
 * token and never leave it; only certificates and requests are exported.
 *
 * Several issuing CAs can live in one token, each a key pair and a
 * certificate sharing one label; the chain above a CA is stored as
 * certificates labelled "<label>.chain<N>" (N from 1, issuer order). */
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "station/st_int.h"
#include "station.h"
#include "x509.h"
#include "station/ca_int.h"

#define CA_MAX_CHAIN 8

int st_write_pem(const char *path, X509 *x, X509_REQ *req,
		 char *err, size_t errlen)
{
	char tmp[4096];
	FILE *f = NULL;
	int fd, rc = ST_E_IO;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0644);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		snprintf(err, errlen, "cannot write %s", tmp);
		if (fd >= 0)
			close(fd);
		return ST_E_IO;
	}
	if ((x ? PEM_write_X509(f, x) : PEM_write_X509_REQ(f, req)) &&
	    fflush(f) == 0 && fsync(fileno(f)) == 0)
		rc = ST_OK;
	if (fclose(f) != 0)
		rc = ST_E_IO;
	if (rc == ST_OK && rename(tmp, path) != 0)
		rc = ST_E_IO;
	if (rc == ST_OK) {
		/* the rename itself must survive a power cut */
		char dir[4096], *slash;
		int dfd;

		snprintf(dir, sizeof(dir), "%s", path);
		slash = strrchr(dir, '/');
		if (slash == dir)
			dir[1] = '\0';
		else if (slash)
			*slash = '\0';
		else
			snprintf(dir, sizeof(dir), ".");
		dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd) != 0)
			rc = ST_E_IO;
		if (dfd >= 0)
			close(dfd);
	}
	if (rc) {
		unlink(tmp);
		snprintf(err, errlen, "cannot write %s", path);
	}
	return rc;
}

int st_x509_hsm_store(hsm_session *s, const char *label, X509 *x,
		      const char *what, uint8_t **der, size_t *len,
		      char *err, size_t errlen)
{
	uint8_t *enc = NULL;
	int rc = ST_E_CRYPTO, n = i2d_X509(x, &enc);

	if (n <= 0)
		goto cleanup;
	rc = hsm_cert_store(s, label, enc, (size_t)n);
	if (rc) {
		snprintf(err, errlen, "cannot store the %s in the token: %s", what,
			 hsm_session_errmsg(s));
		goto cleanup;
	}
	if (der) {
		*der = malloc((size_t)n);
		if (!*der) {
			rc = ST_E_NOMEM;
			goto cleanup;
		}
		memcpy(*der, enc, (size_t)n);
		*len = (size_t)n;
	}
cleanup:
	OPENSSL_free(enc);
	return rc;
}

/* The token's public key labelled label, as an EVP_PKEY, and its type. */
int st_ca_token_pubkey(hsm_session *s, const char *label, EVP_PKEY **out,
			hsm_keytype *t)
{
	uint8_t *spki = NULL;
	size_t len = 0;
	int rc = hsm_pubkey_spki(s, label, &spki, &len, t);

	*out = NULL;
	if (rc)
		return rc;
	*out = st_spki_pubkey(spki, len);
	free(spki);
	return *out ? ST_OK : ST_E_CRYPTO;
}


/* A new CA key, with the error an operator can act on. */
static int make_key(hsm_session *s, const char *label, hsm_keytype t,
		    EVP_PKEY **pub, hsm_obj *priv, char *err, size_t errlen)
{
	hsm_keytype got;
	int rc = hsm_keygen(s, t, label, true, priv);

	if (rc == ST_E_EXISTS) {
		snprintf(err, errlen, "a CA key labelled '%s' already exists in the token; "
			 "choose another label (--ca-key) or use the existing CA", label);
		return rc;
	}
	if (rc) {
		snprintf(err, errlen, "CA key generation (%s) failed: %s",
			 hsm_keytype_name(t), hsm_session_errmsg(s));
		return rc;
	}
	rc = st_ca_token_pubkey(s, label, pub, &got);
	if (rc)
		snprintf(err, errlen, "cannot read the new CA public key: %s",
			 hsm_session_errmsg(s));
	return rc;
}

/* Self-sign pub (the key priv of type t) and store the certificate under
 * label; *out gets it. */
static int self_certify(hsm_session *s, const char *label, hsm_keytype type,
			hsm_obj priv, EVP_PKEY *pub, const char *subject_cn,
			const char *org, int days, X509 **out, char *err,
			size_t errlen)
{
	uint8_t serial[ST_CERT_SERIAL_LEN];
	X509 *tmpl = NULL, *cert = NULL;
	int rc = ST_E_CRYPTO;

	if (st_x509_random_serial(s, serial) ||
	    !(tmpl = st_x509_ca_template(pub, subject_cn, org, days, serial))) {
		snprintf(err, errlen, "cannot build the CA certificate");
		goto cleanup;
	}
	cert = st_x509_hsm_sign(tmpl, s, priv, type, err, errlen);
	if (!cert)
		goto cleanup;
	if (X509_verify(cert, pub) != 1) {
		snprintf(err, errlen, "the HSM's CA signature does not verify");
		rc = ST_E_VERIFY;
		goto cleanup;
	}
	rc = st_x509_hsm_store(s, label, cert, "CA certificate", NULL, NULL, err,
			       errlen);
	if (rc)
		goto cleanup;
	*out = cert;
	cert = NULL;
cleanup:
	X509_free(tmpl);
	X509_free(cert);
	return rc;
}

/* `ca init` keeps a data object labelled "<label>.init" in the token from
 * before the key is made until the certificate is stored and written: a
 * key without certificate and with it is an interrupted init (finished by
 * running init again), one without it a pending request of `ca csr` (never
 * touched by init). */
static void marker_label(const char *label, char *out, size_t len)
{
	snprintf(out, len, "%s.init", label);
}

/* A `ca init` that failed takes back what it made (objects in made, the
 * PEM file at pem when it wrote it), so that the next attempt starts from
 * the same token; what an earlier, interrupted init left is not ours to
 * remove here.  A failed removal is added to err: the operator then knows
 * which label to clear by hand. */
static void undo_init(hsm_session *s, const char *label, const char *marker,
		      unsigned made, const char *pem, char *err, size_t errlen)
{
	size_t used = strlen(err);
	int rc = made & ~HSM_O_DATA ? hsm_remove(s, label, made & ~HSM_O_DATA) : ST_OK;

	if (!rc && (made & HSM_O_DATA))
		rc = hsm_remove(s, marker, HSM_O_DATA);
	if (rc && used < errlen)
		snprintf(err + used, errlen - used, "; removing what this attempt made "
			 "in the token failed too (%s): remove the objects labelled '%s' "
			 "and '%s' before trying again", hsm_session_errmsg(s), label,
			 marker);
	else if (!rc && used < errlen)
		snprintf(err + used, errlen - used, " (nothing was left in the token: "
			 "fix the cause and run it again)");
	if (pem)
		unlink(pem);
}

int st_ca_init(hsm_session *s, const char *label, hsm_keytype type,
	       const char *subject_cn, const char *org, int days,
	       const char *pem_path, char *note, size_t notelen,
	       char *err, size_t errlen)
{
	char marker[160];
	unsigned have = 0, mark = 0, made = 0;  /* made: HSM_O_* this run created */
	bool wrote = false;
	EVP_PKEY *pub = NULL;
	X509 *cert = NULL;
	hsm_keytype got;
	hsm_obj priv;
	int rc;

	note[0] = '\0';
	marker_label(label, marker, sizeof(marker));
	rc = hsm_objects(s, label, &have);
	if (!rc)
		rc = hsm_objects(s, marker, &mark);
	if (rc) {
		snprintf(err, errlen, "cannot look for the CA '%s' in the token: %s",
			 label, hsm_session_errmsg(s));
		goto cleanup;
	}
	mark &= HSM_O_DATA;
	if ((have & HSM_O_CERT) && (have & HSM_O_PRIVKEY)) {
		/* complete: never a second key; an interrupted init is only
		 * missing its PEM file and the marker's removal */
		rc = st_ca_load_cert(s, label, &cert);
		if (rc || st_ca_key_matches(s, label, cert, &got)) {
			snprintf(err, errlen, "CA '%s' in the token has a certificate that "
				 "does not match its key; see 'station ca show'", label);
			rc = ST_E_VERIFY;
			goto cleanup;
		}
		if (!mark) {
			snprintf(err, errlen, "a CA key labelled '%s' already exists in the "
				 "token, with its certificate; choose another label "
				 "(--ca-key) or use the existing CA", label);
			rc = ST_E_EXISTS;
			goto cleanup;
		}
		if (mark)
			snprintf(note, notelen, "finished an interrupted 'ca init' of "
				 "'%s' (its key and certificate were in the token)", label);
		goto finish;
	}
	if ((have & (HSM_O_PRIVKEY | HSM_O_PUBKEY | HSM_O_CERT)) && !mark) {
		snprintf(err, errlen, "the token holds %s labelled '%s' without %s: %s",
			 have & HSM_O_CERT ? "a certificate" : "a CA key", label,
			 have & HSM_O_CERT ? "its key" : "a certificate",
			 have & HSM_O_CERT ? "remove it or choose another label (--ca-key)" :
			 "a pending request ('station ca csr'): import its certificate "
			 "with 'station ca import', or choose another label (--ca-key)");
		rc = ST_E_EXISTS;
		goto cleanup;
	}
	if (!mark) {
		rc = hsm_data_put(s, marker, "station ca init in progress");
		if (rc && hsm_data_refused(s)) {
			/* a module without token data objects (NSS): no marker;
			 * a failure is still taken back below, only a crash
			 * half-way leaves a key that looks like a pending
			 * request */
			rc = ST_OK;
		} else if (rc) {
			snprintf(err, errlen, "cannot mark the CA init in the token: %s",
				 hsm_session_errmsg(s));
			goto cleanup;
		} else {
			made |= HSM_O_DATA;
		}
	}
	if ((have & HSM_O_PRIVKEY) && (have & HSM_O_PUBKEY) && !(have & HSM_O_CERT) &&
	    hsm_find_privkey(s, label, &priv) == ST_OK &&
	    st_ca_token_pubkey(s, label, &pub, &got) == ST_OK && got == type &&
	    hsm_key_made_here(s, priv) && st_hsm_key_matches(s, priv, got, pub)) {
		/* our own interrupted init: the key never signed anything */
		snprintf(note, notelen, "finished an interrupted 'ca init' of '%s': "
			 "certified the key it had made", label);
	} else {
		EVP_PKEY_free(pub);
		pub = NULL;
		if (have & (HSM_O_PRIVKEY | HSM_O_PUBKEY | HSM_O_CERT)) {
			/* half a key pair (or a certificate without key) that an
			 * interrupted init left: it never issued anything */
			rc = hsm_remove(s, label, HSM_O_PRIVKEY | HSM_O_PUBKEY | HSM_O_CERT);
			if (rc) {
				snprintf(err, errlen, "cannot remove what an interrupted "
					 "'ca init' left: %s", hsm_session_errmsg(s));
				goto cleanup;
			}
			snprintf(note, notelen, "removed the half-made key an interrupted "
				 "'ca init' of '%s' left and made the CA again", label);
		}
		rc = make_key(s, label, type, &pub, &priv, err, errlen);
		if (rc != ST_E_EXISTS)
			made |= HSM_O_PRIVKEY | HSM_O_PUBKEY;  /* half a pair too */
		if (rc)
			goto cleanup;
	}
	rc = self_certify(s, label, type, priv, pub, subject_cn, org, days, &cert,
			  err, errlen);
	if (rc)
		goto cleanup;
	made |= HSM_O_CERT;
finish:
	rc = pem_path ? st_write_pem(pem_path, cert, NULL, err, errlen) : ST_OK;
	wrote = pem_path && !rc;
	if (!rc && hsm_remove(s, marker, HSM_O_DATA)) {
		snprintf(err, errlen, "cannot remove the CA init marker '%s': %s",
			 marker, hsm_session_errmsg(s));
		rc = ST_E_HSM;
	}
cleanup:
	if (rc && made)
		undo_init(s, label, marker, made, wrote ? pem_path : NULL, err, errlen);
	X509_free(cert);
	EVP_PKEY_free(pub);
	ERR_clear_error();
	return rc;
}

/* Add one extension (openssl.cnf syntax) to an extension list. */
static int push_ext(STACK_OF(X509_EXTENSION) *exts, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, nid, value);

	if (!e)
		return 0;
	if (!sk_X509_EXTENSION_push(exts, e)) {
		X509_EXTENSION_free(e);
		return 0;
	}
	return 1;
}

/* A CSR for an issuing CA whose certificate an offline root will sign.
 * The key is made now unless it exists without a certificate (a request
 * made again for the same pending key). */
int st_ca_csr(hsm_session *s, const char *label, hsm_keytype type,
	      const char *subject_cn, const char *org, const char *csr_path,
	      char *err, size_t errlen)
{
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_NAME *name = X509_NAME_new();
	X509_REQ *tmpl = NULL, *req = NULL;
	EVP_PKEY *pub = NULL;
	uint8_t *der = NULL;
	size_t len = 0;
	hsm_obj priv;
	int rc;

	if (hsm_cert_load(s, label, &der, &len) == ST_OK) {
		snprintf(err, errlen, "CA '%s' already has a certificate in the token; "
			 "make the successor under a new label (--ca-key)", label);
		rc = ST_E_EXISTS;
		goto cleanup;
	}
	if (hsm_find_privkey(s, label, &priv) == ST_OK) {
		rc = st_ca_token_pubkey(s, label, &pub, &type);
		if (rc) {
			snprintf(err, errlen, "cannot read the CA public key '%s': %s",
				 label, hsm_session_errmsg(s));
			goto cleanup;
		}
	} else {
		rc = make_key(s, label, type, &pub, &priv, err, errlen);
		if (rc)
			goto cleanup;
	}
	rc = ST_E_CRYPTO;
	tmpl = X509_REQ_new();
	if (!tmpl || !exts || !name ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
					(const unsigned char *)org, -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
					(const unsigned char *)subject_cn, -1, -1, 0) ||
	    !X509_REQ_set_version(tmpl, 0) || !X509_REQ_set_subject_name(tmpl, name) ||
	    !X509_REQ_set_pubkey(tmpl, pub) ||
	    !push_ext(exts, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
	    !push_ext(exts, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    !X509_REQ_add_extensions(tmpl, exts)) {
		snprintf(err, errlen, "cannot build the certificate request");
		goto cleanup;
	}
	req = st_x509_req_hsm_sign(tmpl, s, priv, type, err, errlen);
	if (!req)
		goto cleanup;
	if (X509_REQ_verify(req, pub) != 1) {
		snprintf(err, errlen, "the HSM's signature on the request does not verify");
		rc = ST_E_VERIFY;
		goto cleanup;
	}
	rc = st_write_pem(csr_path, NULL, req, err, errlen);
cleanup:
	free(der);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(name);
	X509_REQ_free(tmpl);
	X509_REQ_free(req);
	EVP_PKEY_free(pub);
	ERR_clear_error();
	return rc;
}

/* Append every PEM certificate in path to certs. */
static int read_certs(const char *path, STACK_OF(X509) *certs, char *err,
		      size_t errlen)
{
	FILE *f = fopen(path, "r");
	X509 *x;
	int n = 0;

	if (!f) {
		snprintf(err, errlen, "cannot read %s", path);
		return ST_E_IO;
	}
	while ((x = PEM_read_X509(f, NULL, NULL, NULL))) {
		if (!sk_X509_push(certs, x)) {
			X509_free(x);
			fclose(f);
			return ST_E_NOMEM;
		}
		n++;
	}
	fclose(f);
	ERR_clear_error();
	if (!n) {
		snprintf(err, errlen, "%s holds no PEM certificate", path);
		return ST_E_INVAL;
	}
	return ST_OK;
}

bool st_ca_self_signed(X509 *x)
{
	return X509_check_issued(x, x) == X509_V_OK;
}

/* Does the certificate go with the token key labelled label? */
int st_ca_key_matches(hsm_session *s, const char *label, X509 *x,
		       hsm_keytype *t)
{
	EVP_PKEY *pub = NULL;
	int rc = st_ca_token_pubkey(s, label, &pub, t);

	if (!rc && EVP_PKEY_eq(X509_get0_pubkey(x), pub) != 1)
		rc = ST_E_VERIFY;
	EVP_PKEY_free(pub);
	ERR_clear_error();
	return rc;
}

/* The chain must lead to a self-signed root given in the files: a CA that
 * cannot be traced to its root would make device certificates no relying
 * party can verify.  Times are not checked here (a successor CA is often
 * imported before it becomes valid); issuing checks them. */
static int verify_chain(X509 *ca, STACK_OF(X509) *rest, char *err, size_t errlen)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	STACK_OF(X509) *untrusted = sk_X509_new_null();
	int rc = ST_E_VERIFY, roots = 0;

	if (!store || !ctx || !untrusted) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	if (st_ca_self_signed(ca)) {
		X509_STORE_add_cert(store, ca);
		roots++;
	}
	for (int i = 0; i < sk_X509_num(rest); i++) {
		X509 *x = sk_X509_value(rest, i);

		if (st_ca_self_signed(x)) {
			X509_STORE_add_cert(store, x);
			roots++;
		} else {
			sk_X509_push(untrusted, x);
		}
	}
	if (!roots) {
		snprintf(err, errlen, "the chain does not reach a self-signed root "
			 "certificate: give the intermediates and the root with --chain FILE");
		goto cleanup;
	}
	X509_STORE_set_flags(store, X509_V_FLAG_NO_CHECK_TIME);
	if (!X509_STORE_CTX_init(ctx, store, ca, untrusted)) {
		rc = ST_E_CRYPTO;
		goto cleanup;
	}
	if (X509_verify_cert(ctx) != 1) {
		snprintf(err, errlen, "the CA certificate does not verify up to its root: %s",
			 X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
		goto cleanup;
	}
	rc = ST_OK;
cleanup:
	sk_X509_free(untrusted);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	ERR_clear_error();
	return rc;
}

int st_ca_import(hsm_session *s, const char *label, const char *cert_path,
		 const char *chain_path, char *err, size_t errlen)
{
	STACK_OF(X509) *certs = sk_X509_new_null(), *rest = NULL;
	X509 *ca;
	uint8_t *der = NULL;
	hsm_obj priv;
	hsm_keytype t;
	int rc, len, made = 0;  /* chain certificates stored by this import */
	bool made_chain[CA_MAX_CHAIN] = { false };

	if (!certs)
		return ST_E_NOMEM;
	rc = read_certs(cert_path, certs, err, errlen);
	if (!rc && chain_path)
		rc = read_certs(chain_path, certs, err, errlen);
	if (rc)
		goto cleanup;
	ca = sk_X509_value(certs, 0);
	if (hsm_find_privkey(s, label, &priv)) {
		snprintf(err, errlen, "no CA key labelled '%s' in the token: %s (make it "
			 "with 'station ca csr' first)", label, hsm_session_errmsg(s));
		rc = ST_E_NOTFOUND;
		goto cleanup;
	}
	rc = st_ca_key_matches(s, label, ca, &t);
	if (rc) {
		snprintf(err, errlen, "the certificate in %s does not match the CA key "
			 "'%s' in the token: it was issued for another key; import the "
			 "answer to this CA's own request", cert_path, label);
		goto cleanup;
	}
	if (X509_check_ca(ca) < 1 ||
	    !(X509_get_key_usage(ca) & KU_KEY_CERT_SIGN)) {
		snprintf(err, errlen, "the certificate in %s is not a CA certificate "
			 "(basicConstraints CA:TRUE and keyCertSign needed)", cert_path);
		rc = ST_E_VERIFY;
		goto cleanup;
	}
	rest = sk_X509_dup(certs);
	if (!rest) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	(void)sk_X509_shift(rest);
	if (sk_X509_num(rest) > CA_MAX_CHAIN) {
		snprintf(err, errlen, "chain longer than %d certificates", CA_MAX_CHAIN);
		rc = ST_E_INVAL;
		goto cleanup;
	}
	rc = verify_chain(ca, rest, err, errlen);
	if (rc)
		goto cleanup;
	/* The chain first: a CA certificate without its chain must not look
	 * complete if the import stops half-way. */
	for (int i = 0; i < sk_X509_num(rest); i++) {
		char clabel[160];

		snprintf(clabel, sizeof(clabel), "%s.chain%d", label, i + 1);
		len = i2d_X509(sk_X509_value(rest, i), &der);
		rc = len > 0 ? hsm_cert_store(s, clabel, der, (size_t)len) : ST_E_CRYPTO;
		OPENSSL_free(der);
		der = NULL;
		if (rc && rc != ST_E_EXISTS) {
			snprintf(err, errlen, "cannot store chain certificate '%s': %s",
				 clabel, hsm_session_errmsg(s));
			goto cleanup;
		}
		if (!rc) {
			made_chain[i] = true;
			made++;
		}
	}
	len = i2d_X509(ca, &der);
	rc = len > 0 ? hsm_cert_store(s, label, der, (size_t)len) : ST_E_CRYPTO;
	if (rc == ST_E_EXISTS)
		snprintf(err, errlen, "CA '%s' already has a certificate in the token; "
			 "import a successor under its own label", label);
	else if (rc)
		snprintf(err, errlen, "cannot store the CA certificate: %s",
			 hsm_session_errmsg(s));
cleanup:
	/* A failed import takes its chain certificates back out: the token is
	 * as before and the next attempt starts clean. */
	for (int i = 0; rc && made && i < CA_MAX_CHAIN; i++) {
		char clabel[160];

		if (!made_chain[i])
			continue;
		snprintf(clabel, sizeof(clabel), "%s.chain%d", label, i + 1);
		if (hsm_remove(s, clabel, HSM_O_CERT)) {
			size_t used = strlen(err);

			if (used < errlen)
				snprintf(err + used, errlen - used, "; removing chain "
					 "certificate '%s' failed too (%s): remove it before "
					 "trying again", clabel, hsm_session_errmsg(s));
		}
	}
	OPENSSL_free(der);
	sk_X509_free(rest);
	sk_X509_pop_free(certs, X509_free);
	ERR_clear_error();
	return rc;
}

/* Load and parse the certificate labelled label. */
int st_ca_load_cert(hsm_session *s, const char *label, X509 **out)
{
	uint8_t *der = NULL;
	const uint8_t *p;
	size_t len = 0;
	int rc = hsm_cert_load(s, label, &der, &len);

	*out = NULL;
	if (rc)
		return rc;
	p = der;
	*out = d2i_X509(NULL, &p, (long)len);
	free(der);
	return *out ? ST_OK : ST_E_CRYPTO;
}


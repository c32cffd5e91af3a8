/* signed.c — detached signatures over whole files (product profiles, the
 * operator list) made with an engineering key in the HSM and checked
 * against the trust anchors of the configuration (trust.profile_keys).
 *
 * The signature is the plain one OpenSSL makes and checks over a file
 * (`openssl dgst -sha256 -verify KEY.pem -signature FILE.sig FILE`), so
 * anyone can check a profile without the station.  Signing uses the same
 * host-hash + raw-mechanism path as certificates (x509.c). */
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"
#include "station.h"
#include "station/st_int.h"
#include "station/roles.h"
#include "x509.h"

#define SIGNED_MAX (4 << 20)    /* a profile or an operator list, not a disk image */

/* The whole file at path into a malloc'd buffer (*len bytes). */
static int read_all(const char *path, uint8_t **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b = NULL;
	size_t n = 0, cap = 0, got;
	int rc = ST_E_IO;

	*buf = NULL;
	*len = 0;
	if (!f)
		return errno == ENOENT ? ST_E_NOTFOUND : ST_E_IO;
	for (;;) {
		if (n == cap) {
			uint8_t *nb;

			if (cap >= SIGNED_MAX) {
				rc = ST_E_INVAL;
				goto cleanup;
			}
			cap = cap ? cap * 2 : 4096;
			nb = realloc(b, cap);
			if (!nb) {
				rc = ST_E_NOMEM;
				goto cleanup;
			}
			b = nb;
		}
		got = fread(b + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f))
		goto cleanup;
	*buf = b;
	*len = n;
	b = NULL;
	rc = ST_OK;
cleanup:
	free(b);
	fclose(f);
	return rc;
}

/* Write len bytes to path through path.tmp, fsync, rename: never half a
 * signature on disk. */
static int write_atomic(const char *path, const void *data, size_t len,
			char *err, size_t errlen)
{
	char tmp[4096];
	int fd, rc = ST_E_IO;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
		return ST_E_IO;
	}
	if (write(fd, data, len) != (ssize_t)len || fsync(fd)) {
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		return rc;
	}
	close(fd);
	if (rename(tmp, path)) {
		snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path,
			 strerror(errno));
		unlink(tmp);
		return rc;
	}
	return ST_OK;
}

/* The hash a detached signature uses with key k: as for certificates
 * (SHA-384 for P-384, none for Ed25519, else SHA-256). */
static const EVP_MD *md_of(EVP_PKEY *k)
{
	if (EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519)
		return NULL;
	if (EVP_PKEY_get_base_id(k) == EVP_PKEY_EC && EVP_PKEY_get_bits(k) == 384)
		return EVP_sha384();
	return EVP_sha256();
}

/* SHA-256 of the key's SubjectPublicKeyInfo, hex: who signed. */
static int key_id(EVP_PKEY *k, char out[65])
{
	uint8_t *der = NULL, md[32];
	int n = i2d_PUBKEY(k, &der);

	if (n <= 0 || !EVP_Digest(der, (size_t)n, md, NULL, EVP_sha256(), NULL)) {
		OPENSSL_free(der);
		return ST_E_CRYPTO;
	}
	OPENSSL_free(der);
	st_hex(md, 32, out);
	return ST_OK;
}

int st_engkey(hsm_session *s, const char *label, hsm_keytype t, bool make,
	      const char *pem_path, char *err, size_t errlen)
{
	uint8_t *der = NULL;
	const uint8_t *p;
	size_t len = 0;
	hsm_keytype got;
	hsm_obj priv;
	EVP_PKEY *k = NULL;
	BIO *b = NULL;
	char *pem;
	long pemlen;
	int rc;

	if (make) {
		rc = hsm_keygen(s, t, label, true, &priv);
		if (rc == ST_E_EXISTS) {
			snprintf(err, errlen, "the token already has a key labelled "
				 "'%s': export its public key with 'station profile "
				 "pubkey --key %s --out FILE', or choose another label",
				 label, label);
			return rc;
		}
		if (rc) {
			snprintf(err, errlen, "cannot make the engineering key '%s': %s",
				 label, hsm_session_errmsg(s));
			return rc;
		}
	}
	rc = hsm_pubkey_spki(s, label, &der, &len, &got);
	if (rc) {
		snprintf(err, errlen, "no engineering key '%s' in the token: %s", label,
			 hsm_session_errmsg(s));
		return rc;
	}
	p = der;
	k = d2i_PUBKEY(NULL, &p, (long)len);
	b = BIO_new(BIO_s_mem());
	rc = ST_E_CRYPTO;
	if (!k || !b || !PEM_write_bio_PUBKEY(b, k)) {
		snprintf(err, errlen, "cannot encode the public key of '%s'", label);
		goto cleanup;
	}
	pemlen = BIO_get_mem_data(b, &pem);
	rc = write_atomic(pem_path, pem, (size_t)pemlen, err, errlen);
cleanup:
	free(der);
	EVP_PKEY_free(k);
	BIO_free(b);
	ERR_clear_error();
	return rc;
}

int st_sign_file(hsm_session *s, const char *label, const char *in,
		 const char *out, char *err, size_t errlen)
{
	uint8_t *data = NULL, *der = NULL, *sig = NULL;
	const uint8_t *p;
	size_t len = 0, dlen = 0;
	hsm_keytype t;
	hsm_obj priv;
	EVP_PKEY *k = NULL;
	EVP_MD_CTX *ctx = NULL;
	int rc, siglen;

	rc = read_all(in, &data, &len);
	if (rc) {
		snprintf(err, errlen, "cannot read %s: %s", in,
			 rc == ST_E_NOTFOUND ? "no such file" : st_strerror(rc));
		return rc;
	}
	if (hsm_find_privkey(s, label, &priv) ||
	    hsm_pubkey_spki(s, label, &der, &dlen, &t)) {
		snprintf(err, errlen, "no engineering key '%s' in the token (make one "
			 "with 'station profile keygen --key %s --out PUB.pem'): %s",
			 label, label, hsm_session_errmsg(s));
		rc = ST_E_NOTFOUND;
		goto cleanup;
	}
	siglen = st_hsm_sign_bytes(s, priv, t, data, len, &sig, err, errlen);
	if (siglen <= 0) {
		rc = ST_E_HSM;
		goto cleanup;
	}
	/* Check it in software before it leaves: a signature nobody can
	 * verify must not be handed out. */
	p = der;
	k = d2i_PUBKEY(NULL, &p, (long)dlen);
	ctx = EVP_MD_CTX_new();
	if (!k || !ctx || EVP_DigestVerifyInit(ctx, NULL, md_of(k), NULL, k) != 1 ||
	    EVP_DigestVerify(ctx, sig, (size_t)siglen, data, len) != 1) {
		snprintf(err, errlen, "the HSM's signature with '%s' does not verify "
			 "under its own public key", label);
		rc = ST_E_VERIFY;
		goto cleanup;
	}
	rc = write_atomic(out, sig, (size_t)siglen, err, errlen);
cleanup:
	ERR_clear_error();
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(k);
	OPENSSL_free(sig);
	free(der);
	free(data);
	return rc;
}

/* A trust anchor: a PEM public key, or a certificate whose key counts. */
static EVP_PKEY *load_anchor(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k = NULL;
	X509 *x = NULL;

	if (!f)
		return NULL;
	k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	if (!k) {
		rewind(f);
		x = PEM_read_X509(f, NULL, NULL, NULL);
		if (x)
			k = X509_get_pubkey(x);
		X509_free(x);
	}
	fclose(f);
	ERR_clear_error();
	return k;
}

int st_verify_file(const st_config *cfg, const char *path, const char *sig_path,
		   st_signed_info *info, char *err, size_t errlen)
{
	uint8_t *data = NULL, *sig = NULL, md[32];
	char sigbuf[4096];
	size_t len = 0, siglen = 0;
	EVP_MD_CTX *ctx = NULL;
	EVP_PKEY *k = NULL;
	int rc;

	memset(info, 0, sizeof(*info));
	if (!sig_path) {
		snprintf(sigbuf, sizeof(sigbuf), "%s.sig", path);
		sig_path = sigbuf;
	}
	if (!cfg->nprofile_keys) {
		snprintf(err, errlen, "%s: no trusted engineering key is configured, so "
			 "no signature can be checked: list the engineering public keys "
			 "in trust.profile_keys in the station configuration", path);
		return ST_E_VERIFY;
	}
	rc = read_all(path, &data, &len);
	if (rc) {
		snprintf(err, errlen, "cannot read %s: %s", path,
			 rc == ST_E_NOTFOUND ? "no such file" : st_strerror(rc));
		return rc == ST_E_NOTFOUND ? ST_E_IO : rc;
	}
	rc = read_all(sig_path, &sig, &siglen);
	if (rc == ST_E_NOTFOUND || (!rc && !siglen)) {
		snprintf(err, errlen, "%s is not signed (no signature %s): only a "
			 "profile signed by engineering runs; have it signed with "
			 "'station profile sign --key LABEL --in %s'", path, sig_path,
			 path);
		rc = ST_E_VERIFY;
		goto cleanup;
	}
	if (rc) {
		snprintf(err, errlen, "cannot read the signature %s: %s", sig_path,
			 st_strerror(rc));
		goto cleanup;
	}
	if (!EVP_Digest(data, len, md, NULL, EVP_sha256(), NULL)) {
		rc = ST_E_CRYPTO;
		snprintf(err, errlen, "cannot hash %s", path);
		goto cleanup;
	}
	st_hex(md, 32, info->digest);
	rc = ST_E_VERIFY;
	for (size_t i = 0; i < cfg->nprofile_keys && rc; i++) {
		k = load_anchor(cfg->profile_keys[i]);
		if (!k) {
			snprintf(err, errlen, "trust anchor %s (trust.profile_keys) is not "
				 "a readable PEM public key or certificate: fix the station "
				 "configuration", cfg->profile_keys[i]);
			rc = ST_E_CONFIG;
			goto cleanup;
		}
		ctx = EVP_MD_CTX_new();
		if (ctx && EVP_DigestVerifyInit(ctx, NULL, md_of(k), NULL, k) == 1 &&
		    EVP_DigestVerify(ctx, sig, siglen, data, len) == 1 &&
		    key_id(k, info->signer) == ST_OK) {
			snprintf(info->anchor, sizeof(info->anchor), "%s",
				 cfg->profile_keys[i]);
			rc = ST_OK;
		}
		EVP_MD_CTX_free(ctx);
		ctx = NULL;
		EVP_PKEY_free(k);
		k = NULL;
		ERR_clear_error();
	}
	if (rc)
		snprintf(err, errlen, "%s: its signature %s does not verify under any "
			 "trusted engineering key (%zu in trust.profile_keys): the file "
			 "was changed after it was signed, or it was signed by a key "
			 "this station does not trust; use the file exactly as "
			 "engineering released it, or have it signed again with a "
			 "trusted key", path, sig_path, cfg->nprofile_keys);
cleanup:
	if (rc)
		memset(info, 0, sizeof(*info));
	free(data);
	free(sig);
	return rc;
}

int st_profile_load_signed(const st_config *cfg, const char *path,
			   st_profile **out, st_signed_info *info,
			   char *err, size_t errlen)
{
	st_profile *p = NULL;
	int rc;

	*out = NULL;
	if (!path) {
		snprintf(err, errlen, "no profile: set 'profile' in the configuration "
			 "or give --profile FILE");
		return ST_E_CONFIG;
	}
	rc = st_verify_file(cfg, path, NULL, info, err, errlen);
	if (rc)
		return rc;
	rc = st_profile_load(path, &p, err, errlen);
	if (rc)
		return rc;
	/* The profile is read again to parse it: what was parsed must be what
	 * was verified, byte for byte. */
	if (strcmp(st_profile_digest(p), info->digest)) {
		snprintf(err, errlen, "%s changed while it was being loaded (its "
			 "SHA-256 is no longer the one whose signature checked): "
			 "nothing was run; try again once nobody is writing it", path);
		st_profile_free(p);
		return ST_E_VERIFY;
	}
	*out = p;
	return ST_OK;
}

/* esp32_identity.c — the ESP32-C3 identity scheme: the ECDSA P-256 key
 * esp_secure_cert derives on the chip from a read-protected eFuse HMAC key
 * and a salt (docs/esp32.md, "Identity").  The derivation is the one
 * esp_secure_cert_mgr performs (PBKDF2-HMAC-SHA256, 2048 iterations, 32
 * bytes, the bytes a big-endian scalar, valid when 1 < d < n), done here
 * with OpenSSL so that a real C3 running esp_secure_cert gets the key whose
 * public half the station certifies.  The HMAC key lives only in a locked,
 * undumpable page and is wiped as soon as it has been used. */
#include "station/esp32.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"

/* What lives in the locked page: K and the derived scalar. */
struct page {
	uint8_t key[ESP_HMAC_KEY_LEN];
	uint8_t d[32];
};

struct st_esp_secret {
	struct page *pg;
	size_t len;             /* bytes asked of st_secret_alloc */
};

int st_esp_secret_new(st_esp_secret **out, char *err, size_t errlen)
{
	st_esp_secret *s = calloc(1, sizeof(*s));
	char why[256] = "";
	void *p;
	int rc;

	*out = NULL;
	if (!s)
		return ST_E_NOMEM;
	s->len = sizeof(struct page);
	if ((rc = st_secret_alloc(s->len, &p, why, sizeof(why)))) {
		free(s);
		if (rc == ST_E_IO)
			snprintf(err, errlen, "the eFuse HMAC key is never held in "
				 "swappable or dumpable memory: %s", why);
		return rc;
	}
	s->pg = p;
	*out = s;
	return ST_OK;
}

const uint8_t *st_esp_secret_key(const st_esp_secret *s)
{
	return s->pg->key;
}

void st_esp_secret_wipe(st_esp_secret *s)
{
	if (s)
		OPENSSL_cleanse(s->pg, sizeof(*s->pg));
}

void st_esp_secret_free(st_esp_secret *s)
{
	if (!s)
		return;
	st_secret_free(s->pg, s->len);
	free(s);
}

int st_esp_hmac_ecdsa_pub(st_esp_secret *key, const uint8_t *salt, size_t salt_len,
			  uint8_t pub[ESP_P256_POINT_LEN], char *err, size_t errlen)
{
	EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	BN_CTX *ctx = BN_CTX_secure_new();
	BIGNUM *d = BN_secure_new();
	EC_POINT *q = NULL;
	int rc = ST_E_CRYPTO;

	if (!g || !ctx || !d || !(q = EC_POINT_new(g)))
		goto out;
	/* K is PBKDF2's "password": the HMAC key of every HMAC-SHA256 round,
	 * as the chip's HMAC peripheral uses the eFuse key. */
	if (PKCS5_PBKDF2_HMAC((const char *)key->pg->key, ESP_HMAC_KEY_LEN, salt,
			      (int)salt_len, ESP_KDF_ITERATIONS, EVP_sha256(),
			      (int)sizeof(key->pg->d), key->pg->d) != 1)
		goto out;
	BN_set_flags(d, BN_FLG_CONSTTIME);
	if (!BN_bin2bn(key->pg->d, sizeof(key->pg->d), d))
		goto out;
	/* esp_secure_cert refuses a scalar outside 1 < d < n (and the all-0xFF
	 * pattern, which is >= n anyway) */
	if (BN_cmp(d, BN_value_one()) <= 0 || BN_cmp(d, EC_GROUP_get0_order(g)) >= 0) {
		snprintf(err, errlen, "the derived scalar is not a valid P-256 key");
		rc = ST_E_VERIFY;
		goto out;
	}
	if (EC_POINT_mul(g, q, d, NULL, NULL, ctx) != 1 ||
	    EC_POINT_point2oct(g, q, POINT_CONVERSION_UNCOMPRESSED, pub,
			       ESP_P256_POINT_LEN, ctx) != ESP_P256_POINT_LEN)
		goto out;
	rc = ST_OK;
out:
	if (rc == ST_E_CRYPTO)
		snprintf(err, errlen, "deriving the public key failed (OpenSSL)");
	ERR_clear_error();
	OPENSSL_cleanse(key->pg->d, sizeof(key->pg->d));
	BN_clear_free(d);
	EC_POINT_free(q);
	BN_CTX_free(ctx);
	EC_GROUP_free(g);
	return rc;
}

int st_esp_hmac_identity_draw(st_esp_rand_fn rnd, void *ctx, st_esp_secret *key,
			      uint8_t salt[ESP_KDF_SALT_LEN],
			      uint8_t pub[ESP_P256_POINT_LEN], char *err, size_t errlen)
{
	int rc;

	if ((rc = rnd(ctx, salt, ESP_KDF_SALT_LEN))) {
		snprintf(err, errlen, "the HSM's random generator failed (%s)",
			 st_strerror(rc));
		return rc;
	}
	for (int i = 0; i < ESP_KDF_TRIES; i++) {
		if ((rc = rnd(ctx, key->pg->key, ESP_HMAC_KEY_LEN))) {
			snprintf(err, errlen, "the HSM's random generator failed (%s)",
				 st_strerror(rc));
			break;
		}
		rc = st_esp_hmac_ecdsa_pub(key, salt, ESP_KDF_SALT_LEN, pub, err, errlen);
		if (rc != ST_E_VERIFY)
			break;
	}
	if (rc == ST_E_VERIFY)
		snprintf(err, errlen, "no valid P-256 key derived in %d draws: the "
			 "random source is broken", ESP_KDF_TRIES);
	if (rc)
		st_esp_secret_wipe(key);
	return rc;
}

char *st_esp_identity_record(unsigned key_block, const uint8_t *salt, size_t salt_len,
			     const uint8_t pub[ESP_P256_POINT_LEN])
{
	char blk[16], ph[2 * ESP_P256_POINT_LEN + 1], sh[2 * 64 + 1];
	json_t *o;
	char *text;

	if (salt_len > 64)
		return NULL;
	snprintf(blk, sizeof(blk), "BLOCK_KEY%u", key_block);
	st_hex(pub, ESP_P256_POINT_LEN, ph);
	st_hex(salt, salt_len, sh);
	o = json_pack("{s:s,s:s,s:s,s:s,s:s}", "scheme", ESP_IDENTITY_SCHEME,
		      "efuse_key_block", blk, "key_purpose", "HMAC_UP", "salt", sh,
		      "public_key", ph);
	text = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(o);
	return text;
}

/* esp32_sbv2.c — Secure Boot V2 (RSA-3072) as the ESP32-C3 ROM checks it:
 * the key digest the eFuse key block holds and the signature sector at the
 * end of a signed image (docs/esp32.md).  Learnt from Espressif's
 * documentation of the signature block and checked against espsecure in
 * tests/test_esp32.c; the numbers are OpenSSL BIGNUMs, the signature
 * OpenSSL's RSA-PSS. */
#include "station/esp32.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "base.h"

#define NBYTES (ESP_SBV2_RSA_BITS / 8)      /* 384 */
/* The signature block: magic, version, 2 pad, image SHA-256, then the key
 * part (n, e, R^2 mod n, m'), the signature, CRC32 of all before it, pad. */
#define OFF_MAGIC 0
#define OFF_VERSION 1
#define OFF_DIGEST 4
#define OFF_KEY 36
#define KEY_LEN (NBYTES + 4 + NBYTES + 4)    /* 776 */
#define OFF_SIG (OFF_KEY + KEY_LEN)          /* 812 */
#define OFF_CRC (OFF_SIG + NBYTES)           /* 1196 */
#define SBV2_MAGIC 0xE7
#define SBV2_VERSION_RSA 0x02
#define SBV2_VERSION_ECDSA 0x03

int st_esp_sbv2_key_load(const uint8_t *pem, size_t len, EVP_PKEY **out,
			 char *err, size_t errlen)
{
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *key = NULL;
	BIGNUM *n = NULL;
	int rc = ST_E_CONFIG;

	*out = NULL;
	if (!b)
		return ST_E_NOMEM;
	key = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
	if (!key) {
		/* espsecure's signing key file: keep only the public half */
		EVP_PKEY *priv;
		unsigned char *der = NULL;
		const unsigned char *p;
		int dlen;

		ERR_clear_error();
		BIO_reset(b);
		priv = PEM_read_bio_PrivateKey(b, NULL, NULL, (void *)"");
		if (priv && (dlen = i2d_PUBKEY(priv, &der)) > 0) {
			p = der;
			key = d2i_PUBKEY(NULL, &p, dlen);
		}
		OPENSSL_free(der);
		EVP_PKEY_free(priv);
	}
	if (!key) {
		snprintf(err, errlen, "not a PEM public key (nor an RSA private key)");
		goto out;
	}
	if (!EVP_PKEY_is_a(key, "RSA")) {
		snprintf(err, errlen, "a %s key, but Secure Boot V2 on the ESP32-C3 "
			 "takes RSA-3072", EVP_PKEY_get0_type_name(key));
		goto out;
	}
	if (EVP_PKEY_get_bits(key) != ESP_SBV2_RSA_BITS ||
	    !EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n) ||
	    !BN_is_odd(n)) {
		snprintf(err, errlen, "an RSA-%d key, but Secure Boot V2 on the "
			 "ESP32-C3 takes RSA-3072 (espsecure generate_signing_key "
			 "--version 2 --scheme rsa3072)", EVP_PKEY_get_bits(key));
		goto out;
	}
	*out = key;
	key = NULL;
	rc = ST_OK;
out:
	ERR_clear_error();
	BN_free(n);
	EVP_PKEY_free(key);
	BIO_free(b);
	return rc;
}

/* The 776-byte key part of a signature block for key. */
static int key_part(EVP_PKEY *key, uint8_t out[KEY_LEN], char *err, size_t errlen)
{
	BIGNUM *n = NULL, *e = NULL, *rr = NULL, *r32 = NULL, *inv = NULL;
	BN_CTX *ctx = BN_CTX_new();
	int rc = ST_E_CRYPTO;

	if (!ctx)
		return ST_E_NOMEM;
	if (!EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n) ||
	    !EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e) ||
	    BN_num_bits(n) != ESP_SBV2_RSA_BITS || !BN_is_odd(n) ||
	    BN_num_bits(e) > 32) {
		snprintf(err, errlen, "the secure-boot key is not an RSA-3072 key "
			 "with an odd modulus and a 32-bit exponent");
		rc = ST_E_CONFIG;
		goto out;
	}
	/* R^2 mod n, R = 2^3072: the Montgomery constant the RSA peripheral
	 * takes, so the ROM need not compute it. */
	if (!(rr = BN_new()) || !(r32 = BN_new()) ||
	    !BN_set_bit(rr, 2 * ESP_SBV2_RSA_BITS) || !BN_mod(rr, rr, n, ctx) ||
	    BN_bn2lebinpad(n, out, NBYTES) != NBYTES ||
	    BN_bn2lebinpad(rr, out + NBYTES + 4, NBYTES) != NBYTES)
		goto out;
	st_put_le32(out + NBYTES, (uint32_t)BN_get_word(e));
	/* m' = -n^-1 mod 2^32 (n is odd, so the inverse exists). */
	if (!BN_set_bit(r32, 32) || !(inv = BN_mod_inverse(NULL, n, r32, ctx)))
		goto out;
	st_put_le32(out + 2 * NBYTES + 4, (uint32_t)(0u - (uint32_t)BN_get_word(inv)));
	rc = ST_OK;
out:
	if (rc == ST_E_CRYPTO)
		snprintf(err, errlen, "computing the Secure Boot V2 key values failed");
	ERR_clear_error();
	BN_free(n);
	BN_free(e);
	BN_free(rr);
	BN_free(r32);
	BN_free(inv);
	BN_CTX_free(ctx);
	return rc;
}

int st_esp_sbv2_digest(EVP_PKEY *key, uint8_t digest[ESP_SBV2_DIGEST_LEN],
		       char *err, size_t errlen)
{
	uint8_t part[KEY_LEN];
	unsigned int l = 0;
	int rc = key_part(key, part, err, errlen);

	if (rc)
		return rc;
	if (EVP_Digest(part, sizeof(part), digest, &l, EVP_sha256(), NULL) != 1)
		return ST_E_CRYPTO;
	return ST_OK;
}

/* RSA-PSS-3072 over the 32-byte image digest: SHA-256, MGF1-SHA-256, a
 * 32-byte salt, the signature stored little-endian in the block. */
static int pss_verify(EVP_PKEY *key, const uint8_t md[32], const uint8_t *sig_le)
{
	uint8_t sig[NBYTES];
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
	int ok = 0;

	for (size_t i = 0; i < NBYTES; i++)
		sig[i] = sig_le[NBYTES - 1 - i];
	if (ctx && EVP_PKEY_verify_init(ctx) == 1 &&
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) == 1 &&
	    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 &&
	    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) == 1 &&
	    EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, 32) == 1)
		ok = EVP_PKEY_verify(ctx, sig, sizeof(sig), md, 32) == 1;
	ERR_clear_error();
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

int st_esp_sbv2_verify(const uint8_t *img, size_t len, EVP_PKEY *key,
		       const uint8_t want[ESP_SBV2_DIGEST_LEN], char *err,
		       size_t errlen)
{
	const uint8_t *sector;
	uint8_t md[32], kd[32];
	unsigned int l = 0;
	char why[256] = "";
	int valid = 0;

	if (len < ESP_SBV2_SECTOR || len % ESP_SBV2_SECTOR) {
		snprintf(err, errlen, "the image is %zu bytes, not a non-zero "
			 "multiple of 4096: a Secure Boot V2 image ends with a 4 KiB signature sector "
			 "(truncated, or never signed with espsecure sign_data "
			 "--version 2)", len);
		return ST_E_VERIFY;
	}
	sector = img + len - ESP_SBV2_SECTOR;
	if (EVP_Digest(img, len - ESP_SBV2_SECTOR, md, &l, EVP_sha256(), NULL) != 1)
		return ST_E_CRYPTO;
	for (int i = 0; i < ESP_SBV2_MAX_BLOCKS; i++) {
		const uint8_t *b = sector + (size_t)i * ESP_SBV2_BLOCK_LEN;
		uLong crc = crc32(0L, b, OFF_CRC);

		if (b[OFF_MAGIC] != SBV2_MAGIC || st_get_le32(b + OFF_CRC) != (uint32_t)crc ||
		    (b[OFF_VERSION] != SBV2_VERSION_RSA &&
		     b[OFF_VERSION] != SBV2_VERSION_ECDSA))
			continue;           /* absent or damaged: not a block */
		valid++;
		if (memcmp(b + OFF_DIGEST, md, 32)) {
			char h[65];

			st_hex(md, 32, h);
			snprintf(err, errlen, "signature block %d holds another image "
				 "SHA-256 than the image's (%s): the image was changed "
				 "after signing", i, h);
			return ST_E_VERIFY;
		}
		if (b[OFF_VERSION] != SBV2_VERSION_RSA) {
			snprintf(why, sizeof(why), "signature block %d is ECDSA, which the "
				 "ESP32-C3 does not take", i);
			continue;
		}
		if (EVP_Digest(b + OFF_KEY, KEY_LEN, kd, &l, EVP_sha256(), NULL) != 1)
			return ST_E_CRYPTO;
		if (memcmp(kd, want, 32)) {
			char h[65], w[65];

			st_hex(kd, 32, h);
			st_hex(want, 32, w);
			snprintf(why, sizeof(why), "signature block %d carries another "
				 "key (digest %s, the profile's is %s): signed with "
				 "another secure-boot key", i, h, w);
			continue;
		}
		if (!pss_verify(key, md, b + OFF_SIG)) {
			snprintf(why, sizeof(why), "the RSA-PSS signature of block %d "
				 "does not verify under the secure-boot key", i);
			continue;
		}
		return ST_OK;
	}
	if (!valid)
		snprintf(err, errlen, "no valid Secure Boot V2 signature block in the "
			 "image's last 4 KiB (magic 0xE7, version, CRC32): not signed, "
			 "truncated or damaged");
	else
		snprintf(err, errlen, "%s", why);
	return ST_E_VERIFY;
}

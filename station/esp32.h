/* esp32.h — Espressif formats the engine produces or checks for an
 * ESP32-C3 unit (docs/esp32.md).  Engine-internal: only the engine
 * (station/) and the tests include it; it names OpenSSL types and never a front end's.
 *
 *  - Secure Boot V2 (RSA-3072): the public-key digest the eFuse key block
 *    holds and the check of a signed image, as Espressif's ROM bootloader
 *    and `espsecure verify_signature --version 2` do (esp32_sbv2.c);
 *  - the partition table and the esp_secure_cert partition (esp32_part.c);
 *  - the identity scheme: the ECDSA P-256 key esp_secure_cert derives on
 *    the chip from a read-protected eFuse HMAC key and a salt
 *    (esp32_identity.c).
 *
 * Every function returns an st_err; on failure err (errlen bytes) says what
 * failed and what to do. */
#ifndef ST_ESP32_H
#define ST_ESP32_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Secure Boot V2 ---------------------------------------------------- */

#define ESP_SBV2_DIGEST_LEN 32
#define ESP_SBV2_SECTOR 4096u       /* the signature sector */
#define ESP_SBV2_BLOCK_LEN 1216u    /* one signature block */
#define ESP_SBV2_MAX_BLOCKS 3       /* blocks a sector may hold */
#define ESP_SBV2_RSA_BITS 3072

/* The secure-boot public key from PEM text (a SubjectPublicKeyInfo, or an
 * RSA private key as `espsecure generate_signing_key` writes it: only its
 * public half is kept).  It must be RSA-3072 with an odd modulus.
 * ST_E_CONFIG naming what the key is instead. */
int st_esp_sbv2_key_load(const uint8_t *pem, size_t len, EVP_PKEY **out,
			 char *err, size_t errlen);

/* The digest Secure Boot V2 burns into the key block: SHA-256 over the
 * key part of a signature block — the modulus n (384 bytes little-endian),
 * the exponent e (32-bit LE), R^2 mod n with R = 2^3072 (384 bytes LE) and
 * -n^-1 mod 2^32 (32-bit LE) — exactly `espsecure digest_sbv2_public_key`.
 * It is not the SHA-256 of the DER key. */
int st_esp_sbv2_digest(EVP_PKEY *key, uint8_t digest[ESP_SBV2_DIGEST_LEN],
		       char *err, size_t errlen);

/* Check a signed image (bootloader or app) as the chip would: its length a
 * non-zero multiple of 4 KiB, the last 4 KiB the signature sector; some
 * block in it (magic 0xE7, version 2 = RSA, CRC32 right) whose image
 * SHA-256 is that of everything before the sector, whose key part hashes
 * to want (the profile's digest, st_esp_sbv2_digest of key) and whose
 * RSA-PSS signature (SHA-256, MGF1-SHA-256, 32-byte salt) verifies under
 * key.  A valid block with another image digest fails at once, as
 * espsecure does.  ST_E_VERIFY with the block and the reason. */
int st_esp_sbv2_verify(const uint8_t *img, size_t len, EVP_PKEY *key,
		       const uint8_t want[ESP_SBV2_DIGEST_LEN], char *err,
		       size_t errlen);

/* ---- Partition table and the esp_secure_cert partition ----------------- */

#define ESP_PART_TABLE_ADDR 0x8000u    /* where the bootloader looks */
#define ESP_PART_TABLE_LEN 0xC00u      /* entries, the MD5 entry, 0xFF pad */
#define ESP_PART_MAX 16
#define ESP_PART_TYPE_APP 0x00
#define ESP_PART_TYPE_DATA 0x01
#define ESP_PART_TYPE_SECURE_CERT 0x3F
#define ESP_SECURE_CERT_NAME "esp_secure_cert"
#define ESP_SECURE_CERT_LEN 0x2000u    /* the partition esp_secure_cert_mgr maps */

/* One partition, as a line of an ESP-IDF partitions.csv says it. */
typedef struct st_esp_part {
	char name[17];          /* at most 16 bytes, NUL-padded on flash */
	uint8_t type, subtype;
	uint32_t offset, size;
	uint32_t flags;         /* bit 0: encrypted */
} st_esp_part;

/* The binary partition table ESP-IDF's gen_esp32part.py writes for
 * parts[0..n): 32-byte entries (magic 0xAA50, type, subtype, offset, size,
 * name, flags, little-endian), then the MD5 entry (0xEBEB, 14 x 0xFF, MD5
 * of the entries), 0xFF to ESP_PART_TABLE_LEN.  Refuses (ST_E_CONFIG) an
 * entry below the table's sector end, an app not 64 KiB-aligned, data not
 * 4 KiB-aligned, overlaps, a name too long or used twice. */
int st_esp_part_table(const st_esp_part *parts, int n,
		      uint8_t out[ESP_PART_TABLE_LEN], char *err, size_t errlen);

/* The layout the station writes to a unit (docs/esp32.md, "Identity"):
 * nvs (data/nvs, 0x9000, 0x4000), esp_secure_cert (0x3F, 0xD000, 0x2000)
 * and the factory app at app_offset (the profile's app address: 64 KiB-
 * aligned, at least 0x10000) to the end of a flash of flash_size bytes.
 * parts gets 3 entries.  ST_E_CONFIG naming what does not fit. */
#define ESP_SECURE_CERT_ADDR 0xD000u
int st_esp_default_layout(uint32_t app_offset, uint32_t flash_size,
			  st_esp_part parts[3], char *err, size_t errlen);

/* What goes into the esp_secure_cert partition (TLV format). */
typedef struct st_esp_cert_tlvs {
	const char *dev_cert_pem;       /* the unit's certificate, PEM */
	const char *ca_chain_pem;       /* issuing CA (and up), PEM, may be NULL */
	const uint8_t *salt;            /* HMAC-derived ECDSA key: its salt, or NULL */
	size_t salt_len;
} st_esp_cert_tlvs;

/* The esp_secure_cert partition (ESP_SECURE_CERT_LEN bytes into out) as
 * esp_secure_cert_mgr reads it: TLVs from offset 0, each a 12-byte header
 * (magic 0xBA5EBA11, flags, 3 reserved, type, subtype, length LE), the
 * data, zero padding to 16 bytes, CRC32 (zlib, initial 0xFFFFFFFF) of
 * header, data and padding; 0xFF after the last.  The device certificate
 * (type 1) and the CA chain (type 0) are PEM with their NUL, as
 * configure_esp_secure_cert.py stores PEM; with a salt, the salt (type 5)
 * and an empty private-key TLV (type 2) flagged "derive the ECDSA key with
 * the HMAC peripheral" (0x40).  *used gets the bytes the TLVs take.
 * ST_E_INVAL when they do not fit. */
int st_esp_secure_cert(const st_esp_cert_tlvs *c, uint8_t out[ESP_SECURE_CERT_LEN],
		       size_t *used, char *err, size_t errlen);

/* ---- The identity scheme: esp_secure_cert's HMAC-derived ECDSA key -----
 *
 * The unit's P-256 key is never stored: esp_secure_cert derives it on the
 * chip, each time it is needed, as PBKDF2-HMAC-SHA256(K, salt, 2048
 * iterations, 32 bytes) read as a big-endian scalar, where K is a 32-byte
 * key in an eFuse key block with purpose HMAC_UP that software cannot read
 * (the HMAC peripheral uses it) and salt is the salt TLV of the
 * esp_secure_cert partition.  The ROM's eFuse programming takes K in clear
 * over the UART, so the station draws K (from the HSM), derives the public
 * key, has K burned, and wipes it (docs/esp32.md, "Identity"). */

#define ESP_HMAC_KEY_LEN 32
#define ESP_KDF_SALT_LEN 32
#define ESP_KDF_ITERATIONS 2048     /* ESP_SECURE_CERT_KEY_DERIVATION_ITERATION_COUNT */
#define ESP_KDF_TRIES 30            /* as Espressif's own writer tries */
#define ESP_P256_POINT_LEN 65
#define ESP_IDENTITY_SCHEME "esp_secure_cert-hmac-ecdsa-p256"
#define ESP_KEY_PURPOSE_HMAC_UP 8   /* KEY_PURPOSE_n value on the C3 */

/* The HMAC key K while the station holds it: one page of its own,
 * mlock()ed (never swapped) and MADV_DONTDUMP (never in a core dump),
 * wiped with OPENSSL_cleanse by st_esp_secret_wipe and again when freed.
 * Opaque; nothing else ever copies K. */
typedef struct st_esp_secret st_esp_secret;

/* A new, zeroed secret.  ST_E_NOMEM; ST_E_IO (with err) when the page
 * cannot be locked (RLIMIT_MEMLOCK): the station then refuses rather than
 * hold K in swappable memory. */
int st_esp_secret_new(st_esp_secret **out, char *err, size_t errlen);

/* K itself (ESP_HMAC_KEY_LEN bytes), for the one call that burns it. */
const uint8_t *st_esp_secret_key(const st_esp_secret *s);

/* Wipe K (and the derivation's scratch) now; the page stays locked. */
void st_esp_secret_wipe(st_esp_secret *s);

/* Wipe, unlock and unmap.  NULL is a no-op. */
void st_esp_secret_free(st_esp_secret *s);

/* The public key (04||X||Y) esp_secure_cert derives from key and salt.
 * ST_E_VERIFY when the derived scalar is not a valid P-256 private key
 * (not 1 < d < n): esp_secure_cert's writer draws another K then.  The
 * scalar lives only in the secret's page and OpenSSL's cleared BIGNUMs. */
int st_esp_hmac_ecdsa_pub(st_esp_secret *key, const uint8_t *salt, size_t salt_len,
			  uint8_t pub[ESP_P256_POINT_LEN], char *err, size_t errlen);

/* What a unit's record says of its identity: a JSON object (malloc'd
 * text) {"scheme": ESP_IDENTITY_SCHEME, "efuse_key_block": "BLOCK_KEYn",
 * "key_purpose": "HMAC_UP", "salt": hex, "public_key": hex (04||X||Y)}.
 * Never K.  NULL when out of memory. */
char *st_esp_identity_record(unsigned key_block, const uint8_t *salt, size_t salt_len,
			     const uint8_t pub[ESP_P256_POINT_LEN]);

/* Where random bytes come from (the HSM: C_GenerateRandom). */
typedef int (*st_esp_rand_fn)(void *ctx, uint8_t *buf, size_t n);

/* Draw a unit's identity: salt and K from rnd (K straight into key's
 * page), derived until the scalar is valid (at most ESP_KDF_TRIES), the
 * public key into pub.  On failure key is wiped. */
int st_esp_hmac_identity_draw(st_esp_rand_fn rnd, void *ctx, st_esp_secret *key,
			      uint8_t salt[ESP_KDF_SALT_LEN],
			      uint8_t pub[ESP_P256_POINT_LEN], char *err, size_t errlen);

#endif

/* esp32c3_app.c — the simulated C3's factory app: what a maker's firmware
 * serves on UART0 after the chip boots from flash (docs/esp32.md, "The
 * factory app").  It speaks the station's own device protocol
 * (docs/protocol.md, device-drivers/proto/codec.c) for the few requests an
 * app needs: HELLO, IDENTIFY, GET_PUBKEY, READ_CERT, SIGN_CHALLENGE,
 * ATTEST and TO_LOADER (restart into the ROM loader).
 *
 * Its identity key is esp_secure_cert_mgr's HMAC-derived ECDSA key: the
 * 32 bytes of the key block whose purpose is HMAC_UP (the HMAC peripheral
 * reads it even when it is read-protected: so does the sim, from the
 * array) as PBKDF2-HMAC-SHA256's password, the esp_secure_cert partition's
 * salt TLV as its salt, 2048 iterations, 32 bytes, a big-endian P-256
 * scalar.  The sim derives it with OpenSSL; it links no station code. */
#include "devsim/esp32c3.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "base.h"

#define PART_TABLE 0x8000u
#define PART_MAGIC 0x50AAu          /* bytes AA 50, read little-endian */
#define PART_ENTRY 32
#define PART_MAX 95
#define SECURE_CERT_TYPE 0x3F
#define TLV_MAGIC 0xBA5EBA11u
#define TLV_HDR 12
#define TLV_DEV_CERT 1
#define TLV_PRIV_KEY 2
#define TLV_SALT 5
#define TLV_FLAG_HMAC_ECDSA 0x40
#define KDF_ITERATIONS 2048         /* esp_secure_cert_mgr's count */
#define KDF_LEN 32
#define POP_PREFIX "STPOP1"
#define APP_FW "esp32c3-factory-app/1"

/* A partition of the table at 0x8000: 0 found, -1 not. */
static int find_part(const struct c3 *c, uint8_t type, int any_app, uint32_t *off,
		     uint32_t *size)
{
	for (unsigned i = 0; i < PART_MAX; i++) {
		const uint8_t *e = c->flash + PART_TABLE + i * PART_ENTRY;

		if ((uint16_t)(e[0] | e[1] << 8) != PART_MAGIC)
			return -1;            /* the MD5 entry 0xEBEB or the end */
		if (e[2] != type)
			continue;
		/* apps: factory (0x00) or ota_0 (0x10), the first one */
		if (any_app && e[3] != 0x00 && e[3] != 0x10)
			continue;
		*off = esp_le32(e + 4);
		*size = esp_le32(e + 8);
		if (*off >= C3_FLASH_SIZE || *size > C3_FLASH_SIZE - *off)
			return -1;
		return 0;
	}
	return -1;
}

/* The TLV of type in the esp_secure_cert partition (CRC-checked as
 * esp_secure_cert_mgr does: zlib crc32 seeded with 0xFFFFFFFF over header,
 * data and padding). */
static const uint8_t *find_tlv(const struct c3 *c, uint8_t type, size_t *len,
			       uint8_t *flags)
{
	uint32_t off = 0, size = 0, p = 0;

	if (find_part(c, SECURE_CERT_TYPE, 0, &off, &size))
		return NULL;
	while (p + TLV_HDR + 4 <= size) {
		const uint8_t *t = c->flash + off + p;
		size_t n = (size_t)(t[10] | t[11] << 8), pad = (16 - n % 16) % 16;

		if (esp_le32(t) != TLV_MAGIC || p + TLV_HDR + n + pad + 4 > size)
			return NULL;
		if ((uint32_t)crc32(0xFFFFFFFFul, t, (uInt)(TLV_HDR + n + pad)) !=
		    esp_le32(t + TLV_HDR + n + pad))
			return NULL;
		if (t[8] == type) {
			*len = n;
			if (flags)
				*flags = t[4];
			return t + TLV_HDR;
		}
		p += (uint32_t)(TLV_HDR + n + pad + 4);
	}
	return NULL;
}

/* The image at off as the station wrote it: the ESP image, and when a
 * Secure Boot V2 signature sector follows it at the next 4 KiB boundary,
 * up to the end of that sector.  0 when there is no image. */
static uint32_t image_span(const struct c3 *c, uint32_t off)
{
	uint32_t len = c3_image_length(c->flash, off), sector;

	if (!len)
		return 0;
	sector = (len + C3_SECTOR - 1) & ~(C3_SECTOR - 1);
	if (off + sector + C3_SECTOR <= C3_FLASH_SIZE && c->flash[off + sector] == 0xE7 &&
	    c->flash[off + sector + 1] == 0x02)
		return sector + C3_SECTOR;
	return len;
}

int c3_app_boot(struct c3 *c, char *why, size_t cap)
{
	uint32_t off, size;

	if (!image_span(c, 0)) {
		snprintf(why, cap, "no bootloader image at 0x0");
		return 0;
	}
	if (find_part(c, 0x00, 1, &off, &size) || !image_span(c, off)) {
		snprintf(why, cap, "no partition table at 0x8000 with an app image");
		return 0;
	}
	if (find_part(c, SECURE_CERT_TYPE, 0, &off, &size)) {
		snprintf(why, cap, "no esp_secure_cert partition");
		return 0;
	}
	snprintf(why, cap, "factory app running");
	proto_rx_init(&c->app_rx);
	return 1;
}

/* ---- the identity ------------------------------------------------------ */

/* The key block whose purpose is HMAC_UP (its 32 bytes into k): 0, or
 * -1 when there is none. */
static int hmac_up_key(const struct c3 *c, uint8_t k[32])
{
	static const char *const kp[6] = {
		"KEY_PURPOSE_0", "KEY_PURPOSE_1", "KEY_PURPOSE_2",
		"KEY_PURPOSE_3", "KEY_PURPOSE_4", "KEY_PURPOSE_5",
	};

	for (unsigned b = 0; b < 6; b++)
		if (c3_efuse_field(c, kp[b]) == ESP_C3_KP_HMAC_UP) {
			for (unsigned w = 0; w < 8; w++)
				esp_put_le32(k + 4 * w, c->raw[4 + b][w]);
			return 0;
		}
	return -1;
}

/* The P-256 key with private scalar d (big-endian). */
static EVP_PKEY *p256_from_scalar(const uint8_t d[32])
{
	EVP_PKEY *key = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	EC_POINT *pt = NULL;
	BIGNUM *priv = BN_bin2bn(d, 32, NULL);
	uint8_t pub[65];

	if (!g || !priv || BN_is_zero(priv) || BN_cmp(priv, EC_GROUP_get0_order(g)) >= 0 ||
	    !(pt = EC_POINT_new(g)) || !EC_POINT_mul(g, pt, priv, NULL, NULL, NULL) ||
	    EC_POINT_point2oct(g, pt, POINT_CONVERSION_UNCOMPRESSED, pub, sizeof(pub),
			       NULL) != sizeof(pub))
		goto out;
	bld = OSSL_PARAM_BLD_new();
	if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
						     "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub,
					      sizeof(pub)) ||
	    !(params = OSSL_PARAM_BLD_to_param(bld)))
		goto out;
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_KEYPAIR, params) <= 0)
		key = NULL;
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	EC_POINT_free(pt);
	EC_GROUP_free(g);
	BN_clear_free(priv);
	return key;
}

/* The identity key, derived as esp_secure_cert_mgr does; with the
 * app-wrong-key fault, a key from another HMAC key (the app signs with
 * another key than the one its public key says).  NULL with *st the
 * status to answer. */
static EVP_PKEY *identity(const struct c3 *c, int for_signing, uint8_t *st)
{
	uint8_t k[32], d[KDF_LEN], flags = 0;
	const uint8_t *salt;
	size_t slen = 0;
	EVP_PKEY *key = NULL;

	if (hmac_up_key(c, k)) {
		c3_log(c, "app: no key block with purpose HMAC_UP: no identity key");
		*st = PROTO_ST_NO_KEY;
		return NULL;
	}
	salt = find_tlv(c, TLV_SALT, &slen, NULL);
	if (!salt || !find_tlv(c, TLV_PRIV_KEY, &(size_t){ 0 }, &flags) ||
	    !(flags & TLV_FLAG_HMAC_ECDSA)) {
		c3_log(c, "app: the esp_secure_cert partition has no salt / HMAC-derived "
		       "key marker: no identity key");
		OPENSSL_cleanse(k, sizeof(k));
		*st = PROTO_ST_NO_KEY;
		return NULL;
	}
	if (for_signing)
		for (size_t i = 0; i < c->nfault; i++)
			if (c->fault[i].kind == C3_FAULT_APP_WRONG_KEY)
				k[0] ^= 0x5a;
	if (PKCS5_PBKDF2_HMAC((const char *)k, sizeof(k), salt, (int)slen,
			      KDF_ITERATIONS, EVP_sha256(), sizeof(d), d) == 1)
		key = p256_from_scalar(d);
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(d, sizeof(d));
	if (!key) {
		c3_log(c, "app: the derived scalar is not a P-256 key");
		*st = PROTO_ST_INTERNAL;
	}
	return key;
}

/* The unique ID the ROM side reports (esp32 driver's identify): MAC,
 * revision major and minor, "ESP32-C3". */
static void uid_of(const struct c3 *c, uint8_t uid[DRV_UID_LEN])
{
	uint32_t m0 = c->raw[1][0], m1 = c->raw[1][1], w3 = c->raw[1][3],
		 w5 = c->raw[1][5];

	uid[0] = (uint8_t)(m1 >> 8);
	uid[1] = (uint8_t)m1;
	uid[2] = (uint8_t)(m0 >> 24);
	uid[3] = (uint8_t)(m0 >> 16);
	uid[4] = (uint8_t)(m0 >> 8);
	uid[5] = (uint8_t)m0;
	uid[6] = (uint8_t)((w5 >> 24) & 3);
	uid[7] = (uint8_t)(((w5 >> 23) & 1) << 3 | ((w3 >> 18) & 7));
	memcpy(uid + 8, "ESP32-C3", 8);
}

static uint8_t lifecycle(const struct c3 *c)
{
	return c3_efuse_field(c, "ENABLE_SECURITY_DOWNLOAD") ||
	       c3_efuse_field(c, "DIS_DOWNLOAD_MODE") ? DRV_LC_LOCKED : DRV_LC_OPEN;
}

/* The device certificate as DER (the TLV holds PEM with its NUL). */
static int cert_der(const struct c3 *c, uint8_t *out, size_t cap, size_t *len)
{
	size_t n = 0;
	const uint8_t *pem = find_tlv(c, TLV_DEV_CERT, &n, NULL);
	BIO *bio;
	X509 *x = NULL;
	int dl;
	uint8_t *p = out;

	if (!pem)
		return -1;
	bio = BIO_new_mem_buf(pem, (int)n);
	if (bio)
		x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	dl = x ? i2d_X509(x, NULL) : -1;
	if (dl <= 0 || (size_t)dl > cap) {
		X509_free(x);
		return -1;
	}
	i2d_X509(x, &p);
	X509_free(x);
	*len = (size_t)dl;
	return 0;
}

/* ECDSA-SHA256 of msg under key into out (DER); 0 or -1. */
static int sign(EVP_PKEY *key, const uint8_t *msg, size_t n, uint8_t *out, size_t *olen)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
		 EVP_DigestSign(md, out, olen, msg, n) == 1;

	EVP_MD_CTX_free(md);
	return ok ? 0 : -1;
}

/* The attestation statement (docs/protocol.md "13 ATTEST"): slot 0 the
 * bootloader at 0x0, slot 1 the app the partition table names, each with
 * the SHA-256 the app measures over the flash now. */
static char *statement(const struct c3 *c, const uint8_t *nonce, size_t nlen)
{
	json_t *o = json_object(), *imgs = json_array();
	uint32_t at[2] = { 0, 0 }, size;
	char hex[2 * 64 + 1];
	uint8_t uid[DRV_UID_LEN];
	char *text = NULL;

	if (!o || !imgs)
		goto out;
	if (find_part(c, 0x00, 1, &at[1], &size))
		at[1] = UINT32_MAX;
	for (unsigned s = 0; s < 2; s++) {
		uint32_t n = at[s] == UINT32_MAX ? 0 : image_span(c, at[s]);
		uint8_t md[32];

		if (!n)
			continue;
		SHA256(c->flash + at[s], n, md);
		st_hex(md, sizeof(md), hex);
		json_array_append_new(imgs, json_pack("{s:s,s:I,s:I}", "sha256", hex,
						      "size", (json_int_t)n,
						      "slot", (json_int_t)s));
	}
	json_object_set_new(o, "images", imgs);
	imgs = NULL;
	json_object_set_new(o, "lifecycle", json_integer(lifecycle(c)));
	st_hex(nonce, nlen, hex);
	json_object_set_new(o, "nonce", json_string(hex));
	json_object_set_new(o, "type", json_string("station-attestation/1"));
	uid_of(c, uid);
	st_hex(uid, DRV_UID_LEN, hex);
	json_object_set_new(o, "uid", json_string(hex));
	text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
out:
	json_decref(imgs);
	json_decref(o);
	return text;
}

/* ---- the protocol -------------------------------------------------------- */

static void answer(struct c3 *c, const proto_frame *req, uint8_t status,
		   const uint8_t *body, size_t n)
{
	proto_frame *rep = &c->app_rep;
	uint8_t wire[PROTO_MAX_WIRE];
	size_t wlen = 0;

	rep->version = PROTO_VERSION;
	rep->type = req->type | PROTO_REPLY;
	rep->seq = req->seq;
	rep->payload[0] = status;
	if (n > PROTO_MAX_PAYLOAD - 1)
		n = 0;
	if (n)
		memcpy(rep->payload + 1, body, n);
	rep->len = (uint16_t)(1 + n);
	if (proto_frame_encode(rep, wire, sizeof(wire), &wlen) == ST_OK)
		c3_line_send(c, wire, wlen);
}

static void handle(struct c3 *c, const proto_frame *req)
{
	uint8_t body[PROTO_MAX_PAYLOAD], st = PROTO_ST_OK;
	size_t n = 0;
	EVP_PKEY *key = NULL;
	char *text = NULL;

	c3_log(c, "app: %s", proto_cmd_name(req->type));
	switch (req->type) {
	case PROTO_CMD_HELLO:
		if (req->len < 2 || req->payload[0] > PROTO_VERSION ||
		    req->payload[1] < PROTO_VERSION) {
			body[0] = body[1] = PROTO_VERSION;
			answer(c, req, PROTO_ST_BAD_VERSION, body, 2);
			return;
		}
		body[0] = PROTO_VERSION;
		proto_put32(body + 1, PROTO_CAP_CERT | PROTO_CAP_ATTEST);
		proto_put16(body + 5, PROTO_MAX_PAYLOAD);
		body[7] = (uint8_t)strlen(APP_FW);
		memcpy(body + 8, APP_FW, body[7]);
		n = 8u + body[7];
		/* Of the link extension, NAK: a garbled request is answered
		 * at once, so the host re-sends without waiting out its
		 * timeout (docs/protocol.md §6.1). */
		c->app_nak = req->len >= 10 && (proto_get32(req->payload + 6) &
						 PROTO_LINK_NAK);
		proto_put32(body + n, PROTO_LINK_NAK);
		n += 4;
		break;
	case PROTO_CMD_IDENTIFY: {
		uint8_t k[32];
		size_t cl = 0;

		uid_of(c, body);
		body[DRV_UID_LEN] = lifecycle(c);
		body[DRV_UID_LEN + 1] = hmac_up_key(c, k) == 0 &&
					find_tlv(c, TLV_SALT, &cl, NULL);
		OPENSSL_cleanse(k, sizeof(k));
		body[DRV_UID_LEN + 2] = find_tlv(c, TLV_DEV_CERT, &cl, NULL) != NULL;
		body[DRV_UID_LEN + 3] = 0;
		body[DRV_UID_LEN + 4] = (uint8_t)strlen("ESP32-C3 factory app");
		memcpy(body + DRV_UID_LEN + 5, "ESP32-C3 factory app", body[DRV_UID_LEN + 4]);
		n = DRV_UID_LEN + 5u + body[DRV_UID_LEN + 4];
		break;
	}
	case PROTO_CMD_GET_PUBKEY: {
		size_t pl = 0;

		if (!(key = identity(c, 0, &st)))
			break;
		if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, body, 65,
						    &pl) != 1 || pl != 65)
			st = PROTO_ST_INTERNAL;
		else
			n = 65;
		break;
	}
	case PROTO_CMD_READ_CERT:
		if (cert_der(c, body, sizeof(body) - 1, &n)) {
			st = PROTO_ST_NO_CERT;
			n = 0;
		}
		break;
	case PROTO_CMD_SIGN_CHALLENGE: {
		uint8_t msg[6 + 64];

		if (req->len < 16 || req->len > 64) {
			st = PROTO_ST_BAD_ARG;
			break;
		}
		if (!(key = identity(c, 1, &st)))
			break;
		memcpy(msg, POP_PREFIX, 6);
		memcpy(msg + 6, req->payload, req->len);
		n = 80;
		if (sign(key, msg, 6u + req->len, body, &n)) {
			st = PROTO_ST_INTERNAL;
			n = 0;
		}
		break;
	}
	case PROTO_CMD_ATTEST: {
		size_t tl, sl = 80;

		if (req->len < 16 || req->len > 64) {
			st = PROTO_ST_BAD_ARG;
			break;
		}
		if (!(key = identity(c, 1, &st)))
			break;
		text = statement(c, req->payload, req->len);
		tl = text ? strlen(text) : 0;
		if (!text || tl > DRV_MAX_STATEMENT ||
		    sign(key, (const uint8_t *)text, tl, body + 2 + tl, &sl)) {
			st = PROTO_ST_INTERNAL;
			break;
		}
		proto_put16(body, (uint16_t)tl);
		memcpy(body + 2, text, tl);
		n = 2 + tl + sl;
		break;
	}
	case PROTO_CMD_APP_TO_LOADER:
		/* esp_restart() with RTC_CNTL_FORCE_DOWNLOAD_BOOT set: the
		 * answer goes out first, then the ROM comes up in its loader. */
		answer(c, req, PROTO_ST_OK, NULL, 0);
		c->app_leave = 1;
		return;
	default:
		st = PROTO_ST_UNKNOWN_CMD;
		break;
	}
	EVP_PKEY_free(key);
	free(text);
	answer(c, req, st, st == PROTO_ST_OK ? body : NULL, st == PROTO_ST_OK ? n : 0);
	OPENSSL_cleanse(body, sizeof(body));
}

void c3_app_byte(struct c3 *c, uint8_t b)
{
	int why = 0, r = proto_rx_byte(&c->app_rx, b, &c->app_req, &why);

	if (r == 1) {
		handle(c, &c->app_req);
	} else if (r < 0) {
		c3_log(c, "app: bad frame (%s)%s", proto_bad_str(why),
		       c->app_nak ? ": NAK" : " dropped");
		if (c->app_nak) {
			proto_frame nak = { .version = PROTO_VERSION };
			uint8_t body[1] = { (uint8_t)why };

			nak.type = PROTO_NAK_TYPE & (uint8_t)~PROTO_REPLY;
			answer(c, &nak, PROTO_ST_BAD_FRAME, body, 1);
		}
	}
}

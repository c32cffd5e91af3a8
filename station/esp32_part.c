/* esp32_part.c — the ESP-IDF partition table and the esp_secure_cert
 * partition (TLV format) the station writes to an ESP32-C3's flash
 * (docs/esp32.md, "Identity").  The formats are Espressif's published ones
 * (ESP-IDF gen_esp32part, esp_secure_cert_mgr); tests/test_esp32.c reads
 * them back with a parser of its own and openssl. */
#include "station/esp32.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "base.h"

#define ENTRY_LEN 32
#define TABLE_END (ESP_PART_TABLE_ADDR + 0x1000u)  /* the table's sector */
#define TLV_MAGIC 0xBA5EBA11u
#define TLV_HDR 12
#define TLV_ALIGN 16
#define TLV_CA_CERT 0
#define TLV_DEV_CERT 1
#define TLV_PRIV_KEY 2
#define TLV_SALT 5
#define TLV_FLAG_HMAC_ECDSA_DERIVATION 0x40

/* One partition's rules, alone and against those before it. */
static int check_part(const st_esp_part *parts, int i, char *err, size_t errlen)
{
	const st_esp_part *p = &parts[i];
	uint32_t align = p->type == ESP_PART_TYPE_APP ? 0x10000u : 0x1000u;

	if (!p->name[0] || strnlen(p->name, sizeof(p->name)) > 16) {
		snprintf(err, errlen, "partition %d: a name of 1 to 16 bytes is needed", i);
		return ST_E_CONFIG;
	}
	if (p->offset < TABLE_END || p->offset % align || !p->size ||
	    (uint64_t)p->offset + p->size > 0x100000000ull) {
		snprintf(err, errlen, "partition '%s' at 0x%x (0x%x bytes): it must "
			 "start after the partition table (0x%x), %s-aligned, and "
			 "have a size", p->name, (unsigned)p->offset, (unsigned)p->size,
			 (unsigned)TABLE_END, align == 0x10000u ? "an app 64 KiB" : "4 KiB");
		return ST_E_CONFIG;
	}
	for (int j = 0; j < i; j++) {
		const st_esp_part *o = &parts[j];

		if (!strcmp(o->name, p->name)) {
			snprintf(err, errlen, "partition name '%s' is used twice", p->name);
			return ST_E_CONFIG;
		}
		if (p->offset < o->offset + o->size && o->offset < p->offset + p->size) {
			snprintf(err, errlen, "partition '%s' at 0x%x overlaps '%s' "
				 "(0x%x, 0x%x bytes)", p->name, (unsigned)p->offset,
				 o->name, (unsigned)o->offset, (unsigned)o->size);
			return ST_E_CONFIG;
		}
	}
	return ST_OK;
}

int st_esp_part_table(const st_esp_part *parts, int n,
		      uint8_t out[ESP_PART_TABLE_LEN], char *err, size_t errlen)
{
	unsigned int l = 0;
	uint8_t *e = out;
	int rc;

	if (n < 1 || n > ESP_PART_MAX) {
		snprintf(err, errlen, "a partition table holds 1 to %d partitions, "
			 "not %d", ESP_PART_MAX, n);
		return ST_E_CONFIG;
	}
	memset(out, 0xFF, ESP_PART_TABLE_LEN);
	for (int i = 0; i < n; i++, e += ENTRY_LEN) {
		if ((rc = check_part(parts, i, err, errlen)))
			return rc;
		e[0] = 0xAA;
		e[1] = 0x50;
		e[2] = parts[i].type;
		e[3] = parts[i].subtype;
		st_put_le32(e + 4, parts[i].offset);
		st_put_le32(e + 8, parts[i].size);
		memset(e + 12, 0, 16);
		memcpy(e + 12, parts[i].name, strnlen(parts[i].name, 16));
		st_put_le32(e + 28, parts[i].flags);
	}
	/* the MD5 entry: 0xEB 0xEB, fourteen 0xFF, MD5 of every entry above */
	e[0] = 0xEB;
	e[1] = 0xEB;
	if (EVP_Digest(out, (size_t)n * ENTRY_LEN, e + 16, &l, EVP_md5(), NULL) != 1)
		return ST_E_CRYPTO;
	return ST_OK;
}

/* Append one TLV at *off; ST_E_INVAL when it does not fit. */
static int put_tlv(uint8_t *out, size_t *off, uint8_t type, uint8_t flags,
		   const void *data, size_t len, const char *what, char *err,
		   size_t errlen)
{
	size_t pad = (TLV_ALIGN - len % TLV_ALIGN) % TLV_ALIGN;
	size_t total = TLV_HDR + len + pad + 4;
	uint8_t *t = out + *off;
	uLong crc;

	if (len > 0xFFFF || total > ESP_SECURE_CERT_LEN - *off) {
		snprintf(err, errlen, "the esp_secure_cert partition (%u bytes) has no "
			 "room for the %s (%zu bytes after %zu used)",
			 (unsigned)ESP_SECURE_CERT_LEN, what, len, *off);
		return ST_E_INVAL;
	}
	st_put_le32(t, TLV_MAGIC);
	t[4] = flags;
	t[5] = t[6] = t[7] = 0;
	t[8] = type;
	t[9] = 0;                   /* subtype 0: what esp_secure_cert reads */
	t[10] = (uint8_t)len;
	t[11] = (uint8_t)(len >> 8);
	if (len)
		memcpy(t + TLV_HDR, data, len);
	memset(t + TLV_HDR + len, 0, pad);
	crc = crc32(0xFFFFFFFFul, t, (uInt)(TLV_HDR + len + pad));
	st_put_le32(t + TLV_HDR + len + pad, (uint32_t)crc);
	*off += total;
	return ST_OK;
}

int st_esp_secure_cert(const st_esp_cert_tlvs *c, uint8_t out[ESP_SECURE_CERT_LEN],
		       size_t *used, char *err, size_t errlen)
{
	size_t off = 0;
	int rc;

	*used = 0;
	memset(out, 0xFF, ESP_SECURE_CERT_LEN);
	if (!c->dev_cert_pem || !c->dev_cert_pem[0]) {
		snprintf(err, errlen, "no device certificate for the esp_secure_cert "
			 "partition");
		return ST_E_INVAL;
	}
	/* PEM is stored with its NUL: mbedtls parses PEM only NUL-terminated */
	if ((rc = put_tlv(out, &off, TLV_DEV_CERT, 0, c->dev_cert_pem,
			  strlen(c->dev_cert_pem) + 1, "device certificate", err,
			  errlen)))
		return rc;
	if (c->ca_chain_pem && c->ca_chain_pem[0] &&
	    (rc = put_tlv(out, &off, TLV_CA_CERT, 0, c->ca_chain_pem,
			  strlen(c->ca_chain_pem) + 1, "CA chain", err, errlen)))
		return rc;
	if (c->salt) {
		if ((rc = put_tlv(out, &off, TLV_SALT, 0, c->salt, c->salt_len,
				  "key-derivation salt", err, errlen)) ||
		    (rc = put_tlv(out, &off, TLV_PRIV_KEY,
				  TLV_FLAG_HMAC_ECDSA_DERIVATION, NULL, 0,
				  "private-key marker", err, errlen)))
			return rc;
	}
	*used = off;
	return ST_OK;
}

int st_esp_default_layout(uint32_t app_offset, uint32_t flash_size,
			  st_esp_part parts[3], char *err, size_t errlen)
{
	const st_esp_part fixed[2] = {
		{ .name = "nvs", .type = ESP_PART_TYPE_DATA, .subtype = 0x02,
		  .offset = 0x9000, .size = 0x4000 },
		/* subtype 0x06 ("undefined"): what gen_esp32part gives the
		 * esp_secure_cert line of Espressif's partitions.csv */
		{ .name = ESP_SECURE_CERT_NAME, .type = ESP_PART_TYPE_SECURE_CERT,
		  .subtype = 0x06, .offset = ESP_SECURE_CERT_ADDR,
		  .size = ESP_SECURE_CERT_LEN },
	};

	if (app_offset < 0x10000 || app_offset % 0x10000 || app_offset >= flash_size) {
		snprintf(err, errlen, "the app at 0x%x: it must be 64 KiB-aligned, "
			 "after the esp_secure_cert partition (0x10000 or later) and "
			 "inside the %u-byte flash", (unsigned)app_offset,
			 (unsigned)flash_size);
		return ST_E_CONFIG;
	}
	memcpy(parts, fixed, sizeof(fixed));
	parts[2] = (st_esp_part){ .name = "factory", .type = ESP_PART_TYPE_APP,
				  .subtype = 0x00, .offset = app_offset,
				  .size = flash_size - app_offset };
	return ST_OK;
}

/* firmware.c — the profile's firmware group: read every referenced file
 * once, check it against the digest the signed profile names, verify each
 * image's signature under the secure-boot key, parse each SBOM
 * (docs/firmware.md). */
#include "station/firmware.h"

#include <errno.h>
#include <openssl/err.h>
#include <jansson.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base.h"
#include "station/esp32.h"

/* path as given when absolute, else beside the profile. */
static void resolve(const char *profile_path, const char *path, char *out,
		    size_t cap)
{
	char *dup = strdup(profile_path);

	if (path[0] == '/' || !dup)
		snprintf(out, cap, "%s", path);
	else
		snprintf(out, cap, "%s/%s", dirname(dup), path);
	free(dup);
}

/* The whole file (at most max bytes) into *buf (malloc'd, NUL-terminated
 * after *len bytes). */
static int slurp(const char *path, size_t max, uint8_t **buf, size_t *len,
		 char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b = NULL;
	size_t n = 0, cap = 0;
	int rc = ST_OK;

	*buf = NULL;
	*len = 0;
	if (!f) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return ST_E_CONFIG;
	}
	for (;;) {
		size_t got;

		if (n + 4096 + 1 > cap) {
			uint8_t *nb;

			cap = cap ? 2 * cap : 65536;
			if (!(nb = realloc(b, cap))) {
				rc = ST_E_NOMEM;
				goto out;
			}
			b = nb;
		}
		got = fread(b + n, 1, cap - n - 1, f);
		n += got;
		if (n > max) {
			snprintf(err, errlen, "%s is larger than %zu bytes", path, max);
			rc = ST_E_CONFIG;
			goto out;
		}
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		snprintf(err, errlen, "cannot read %s", path);
		rc = ST_E_CONFIG;
		goto out;
	}
	b[n] = 0;
	*buf = b;
	*len = n;
	b = NULL;
out:
	free(b);
	fclose(f);
	return rc;
}

static void sha256_hex(const uint8_t *d, size_t n, uint8_t md[32], char hex[65])
{
	unsigned int l = 0;

	EVP_Digest(d, n, md, &l, EVP_sha256(), NULL);
	st_hex(md, 32, hex);
}

/* The file at path must have the SHA-256 the profile names (want, hex). */
static int check_digest(const char *what, const char *path, const uint8_t *d,
			size_t n, const char *want, uint8_t md[32], char hex[65],
			char *err, size_t errlen)
{
	sha256_hex(d, n, md, hex);
	if (strcasecmp(hex, want)) {
		snprintf(err, errlen, "%s %s has SHA-256 %s, but the signed profile "
			 "names %s: the file was changed (or truncated) after the "
			 "profile was signed; use the file exactly as engineering "
			 "released it, or have the profile signed again", what, path,
			 hex, want);
		return ST_E_CONFIG;
	}
	return ST_OK;
}

json_t *st_fw_components(const char *sbom, size_t len)
{
	json_t *root = json_loadb(sbom, len, 0, NULL), *comps, *out = NULL, *c;
	size_t i;

	if (!json_is_object(root))
		goto cleanup;
	comps = json_object_get(root, "components");
	if (!(out = json_array()))
		goto cleanup;
	json_array_foreach(comps, i, c) {
		const char *name = json_string_value(json_object_get(c, "name"));
		const char *ver = json_string_value(json_object_get(c, "version"));
		const char *purl = json_string_value(json_object_get(c, "purl"));

		if (name)
			json_array_append_new(out, json_pack("{s:s,s:s?,s:s?}", "name",
							     name, "version", ver,
							     "purl", purl));
	}
cleanup:
	json_decref(root);
	return out;
}

/* A CycloneDX JSON SBOM: parses, says bomFormat "CycloneDX", and lists its
 * components (an array; each with a name). */
static int check_sbom(const st_fw_image *im, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root = json_loadb(im->sbom, im->sbom_len, 0, &je), *comps, *c;
	const char *fmt;
	size_t i;
	int rc = ST_E_CONFIG;

	if (!root) {
		snprintf(err, errlen, "the SBOM of image '%s' (%s) does not parse as "
			 "JSON (line %d: %s): give a CycloneDX JSON SBOM", im->name,
			 im->sbom_file, je.line, je.text);
		return rc;
	}
	fmt = json_string_value(json_object_get(root, "bomFormat"));
	comps = json_object_get(root, "components");
	if (!fmt || strcmp(fmt, "CycloneDX") || !json_is_array(comps)) {
		snprintf(err, errlen, "the SBOM of image '%s' (%s) is not a CycloneDX "
			 "SBOM (it needs \"bomFormat\": \"CycloneDX\" and a "
			 "\"components\" array)", im->name, im->sbom_file);
		goto out;
	}
	json_array_foreach(comps, i, c) {
		if (!json_is_string(json_object_get(c, "name"))) {
			snprintf(err, errlen, "the SBOM of image '%s' (%s): component "
				 "%zu has no name", im->name, im->sbom_file, i + 1);
			goto out;
		}
	}
	rc = ST_OK;
out:
	json_decref(root);
	return rc;
}

/* The image's detached signature (FILE.sig: DER ECDSA over SHA-256, as
 * `openssl dgst -sha256 -sign` makes it) must verify under key. */
static int check_signature(const st_fw_image *im, EVP_PKEY *key, const char *key_file,
			   char *err, size_t errlen)
{
	char sigpath[4200];
	uint8_t *sig = NULL;
	size_t siglen = 0;
	EVP_MD_CTX *md = NULL;
	int rc;

	snprintf(sigpath, sizeof(sigpath), "%s.sig", im->file);
	if (access(sigpath, F_OK) < 0) {
		snprintf(err, errlen, "image '%s' (%s) is not signed (no signature "
			 "%s): only images signed with the secure-boot key are "
			 "written; have engineering sign it", im->name, im->file,
			 sigpath);
		return ST_E_CONFIG;
	}
	if ((rc = slurp(sigpath, 1024, &sig, &siglen, err, errlen)))
		return rc;
	md = EVP_MD_CTX_new();
	if (!md) {
		rc = ST_E_NOMEM;
		goto out;
	}
	if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestVerify(md, sig, siglen, im->data, im->len) != 1) {
		snprintf(err, errlen, "image '%s' (%s): its signature %s does not "
			 "verify under the secure-boot key %s: the image was signed "
			 "with another key or changed after signing, and the unit's "
			 "boot ROM would refuse it; nothing was provisioned — use the "
			 "image engineering signed with that key", im->name, im->file,
			 sigpath, key_file);
		rc = ST_E_CONFIG;
	}
out:
	ERR_clear_error();
	EVP_MD_CTX_free(md);
	free(sig);
	return rc;
}

/* An ESP32 image carries its Secure Boot V2 signature sector: it must
 * verify under key, whose digest is the profile's root of trust, and sit
 * where the chip boots it from (the bootloader at 0 below the partition
 * table at 0x8000, an app 64 KiB-aligned for the flash MMU). */
static int check_esp32(const st_fw_image *im, EVP_PKEY *key, const st_firmware *fw,
		       char *err, size_t errlen)
{
	char why[512] = "";
	int rc;

	if (im->address == 0 ? im->len > 0x8000 : im->address % 0x10000) {
		snprintf(err, errlen, "image '%s' (%s) at flash address 0x%x: on the "
			 "ESP32-C3 the bootloader is at 0x0 and ends below the "
			 "partition table at 0x8000 (this one is %zu bytes), and an "
			 "app sits at a 64 KiB-aligned address; fix 'address'",
			 im->name, im->file, (unsigned)im->address, im->len);
		return ST_E_CONFIG;
	}
	for (const st_fw_image *o = fw->img; o < im; o++) {
		if (im->address < o->address + o->len && o->address < im->address + im->len) {
			snprintf(err, errlen, "image '%s' (%s) at 0x%x overlaps image "
				 "'%s' at 0x%x (%zu bytes) in flash; fix 'address'",
				 im->name, im->file, (unsigned)im->address, o->name,
				 (unsigned)o->address, o->len);
			return ST_E_CONFIG;
		}
	}
	rc = st_esp_sbv2_verify(im->data, im->len, key, fw->rot, why, sizeof(why));
	if (rc == ST_E_VERIFY) {
		snprintf(err, errlen, "image '%s' (%s) fails the Secure Boot V2 "
			 "check under the secure-boot key %s: %s; the chip's ROM would "
			 "not boot it, so nothing was provisioned — use the image "
			 "engineering signed with that key (espsecure sign_data "
			 "--version 2)", im->name, im->file, fw->key_file, why);
		return ST_E_CONFIG;
	}
	return rc;
}

/* The secure-boot key: its file's digest, a P-256 public key, and the
 * root-of-trust hash computed from it; for esp32-sbv2 an RSA-3072 key and
 * its Secure Boot V2 digest. */
static int load_key(const config_t *c, const char *profile_path, st_firmware *fw,
		    EVP_PKEY **out, char *err, size_t errlen)
{
	const char *kf = NULL, *want = NULL;
	uint8_t *pem = NULL, *der = NULL, md[32];
	size_t len = 0;
	char hex[65];
	BIO *b = NULL;
	EVP_PKEY *key = NULL;
	int dlen, rc;

	config_lookup_string(c, "firmware.secure_boot_key", &kf);
	config_lookup_string(c, "firmware.secure_boot_key_sha256", &want);
	resolve(profile_path, kf, fw->key_file, sizeof(fw->key_file));
	if ((rc = slurp(fw->key_file, 65536, &pem, &len, err, errlen)) ||
	    (rc = check_digest("the secure-boot key", fw->key_file, pem, len, want,
			       md, hex, err, errlen)))
		goto out;
	if (fw->format == ST_FW_ESP32_SBV2) {
		char why[256] = "";

		rc = st_esp_sbv2_key_load(pem, len, &key, why, sizeof(why));
		if (rc == ST_E_CONFIG)
			snprintf(err, errlen, "the secure-boot key %s: %s", fw->key_file,
				 why);
		else if (!rc && (rc = st_esp_sbv2_digest(key, fw->rot, why, sizeof(why))))
			snprintf(err, errlen, "the secure-boot key %s: %s", fw->key_file,
				 why);
		if (!rc) {
			*out = key;
			key = NULL;
		}
		goto out;
	}
	b = BIO_new_mem_buf(pem, (int)len);
	key = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
	if (!key || !EVP_PKEY_is_a(key, "EC") || EVP_PKEY_get_bits(key) != 256) {
		snprintf(err, errlen, "the secure-boot key %s is not a PEM P-256 "
			 "public key", fw->key_file);
		rc = ST_E_CONFIG;
		goto out;
	}
	dlen = i2d_PUBKEY(key, &der);
	if (dlen <= 0) {
		rc = ST_E_CRYPTO;
		goto out;
	}
	sha256_hex(der, (size_t)dlen, fw->rot, hex);
	*out = key;
	key = NULL;
out:
	ERR_clear_error();
	OPENSSL_free(der);
	EVP_PKEY_free(key);
	BIO_free(b);
	free(pem);
	return rc;
}

int st_fw_parse(const config_t *c, const char *profile_path, st_firmware *fw,
		char *err, size_t errlen)
{
	const config_setting_t *list = config_lookup(c, "firmware.images");
	EVP_PKEY *key = NULL;
	int rc;

	memset(fw, 0, sizeof(*fw));
	{
		const char *fmt = NULL;

		config_lookup_string(c, "firmware.format", &fmt);
		fw->format = fmt && !strcmp(fmt, "esp32-sbv2") ? ST_FW_ESP32_SBV2
							      : ST_FW_STATION;
	}
	if ((rc = load_key(c, profile_path, fw, &key, err, errlen)))
		goto out;
	for (int i = 0; list && i < config_setting_length(list); i++) {
		const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
		st_fw_image *im = &fw->img[fw->n];
		const char *name = "", *ver = "", *file = "", *sha = "", *sbom = "";
		const char *sbom_sha = "";
		long long addr = 0;
		int slot = 0;
		uint8_t md[32];

		if (fw->n >= ST_FW_MAX_IMAGES)
			break;
		fw->n++;
		config_setting_lookup_string(e, "name", &name);
		config_setting_lookup_string(e, "version", &ver);
		config_setting_lookup_string(e, "file", &file);
		config_setting_lookup_string(e, "sha256", &sha);
		config_setting_lookup_string(e, "sbom", &sbom);
		config_setting_lookup_string(e, "sbom_sha256", &sbom_sha);
		config_setting_lookup_int(e, "slot", &slot);
		if (!config_setting_lookup_int64(e, "address", &addr)) {
			int a = 0;

			if (config_setting_lookup_int(e, "address", &a))
				addr = a;
		}
		snprintf(im->name, sizeof(im->name), "%s", name);
		snprintf(im->version, sizeof(im->version), "%s", ver);
		im->slot = (unsigned)slot;
		im->address = (uint32_t)addr;
		for (int j = 0; j < fw->n - 1; j++) {
			if (!strcmp(fw->img[j].name, im->name) || fw->img[j].slot == im->slot) {
				snprintf(err, errlen, "firmware image '%s': another image "
					 "(%s) has the same %s", im->name, fw->img[j].name,
					 fw->img[j].slot == im->slot ? "slot" : "name");
				rc = ST_E_CONFIG;
				goto out;
			}
		}
		resolve(profile_path, file, im->file, sizeof(im->file));
		resolve(profile_path, sbom, im->sbom_file, sizeof(im->sbom_file));
		if ((rc = slurp(im->file, ST_FW_MAX_IMAGE, &im->data, &im->len, err, errlen)))
			goto out;
		if (!im->len) {
			snprintf(err, errlen, "firmware image '%s' (%s) is empty", im->name,
				 im->file);
			rc = ST_E_CONFIG;
			goto out;
		}
		{
			char what[80];

			snprintf(what, sizeof(what), "firmware image '%s'", im->name);
			if ((rc = check_digest(what, im->file, im->data, im->len, sha,
					       im->sha256, im->sha256_hex, err, errlen)))
				goto out;
		}
		if ((rc = fw->format == ST_FW_ESP32_SBV2
			  ? check_esp32(im, key, fw, err, errlen)
			  : check_signature(im, key, fw->key_file, err, errlen)))
			goto out;
		if ((rc = slurp(im->sbom_file, ST_FW_MAX_SBOM, (uint8_t **)&im->sbom,
				&im->sbom_len, err, errlen)))
			goto out;
		{
			char what[80];

			snprintf(what, sizeof(what), "the SBOM of image '%s'", im->name);
			if ((rc = check_digest(what, im->sbom_file, (uint8_t *)im->sbom,
					       im->sbom_len, sbom_sha, md,
					       im->sbom_sha256_hex, err, errlen)))
				goto out;
		}
		if ((rc = check_sbom(im, err, errlen)))
			goto out;
		{
			json_t *comps = st_fw_components(im->sbom, im->sbom_len);

			im->ncomponents = (int)json_array_size(comps);
			json_decref(comps);
		}
	}
out:
	EVP_PKEY_free(key);
	return rc;
}

void st_fw_free(st_firmware *fw)
{
	if (!fw)
		return;
	for (int i = 0; i < ST_FW_MAX_IMAGES; i++) {
		free(fw->img[i].data);
		free(fw->img[i].sbom);
	}
	memset(fw, 0, sizeof(*fw));
}

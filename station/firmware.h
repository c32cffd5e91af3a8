/* firmware.h — a profile's firmware group (docs/firmware.md): the images a
 * unit gets, their SBOMs, and the secure-boot key the images are signed
 * with and whose hash the fuse plan burns.  Inside station/: the profile
 * loader fills it, the engine writes and attests from it.
 *
 * Everything is read and checked once, when the profile loads (before any
 * unit): each file's SHA-256 against the digest the signed profile names,
 * each image's signature against the secure-boot key (a detached FILE.sig,
 * or an ESP32 image's own Secure Boot V2 signature sector), each SBOM
 * parsed as CycloneDX JSON.  The bytes checked are the bytes written: the
 * images stay in memory, so a file changed after the check is never
 * written. */
#ifndef ST_FIRMWARE_H
#define ST_FIRMWARE_H

#include <jansson.h>
#include <libconfig.h>
#include <stddef.h>
#include <stdint.h>

#include "station.h"

#define ST_FW_MAX_IMAGES 4
#define ST_FW_MAX_IMAGE (64u * 1024 * 1024)  /* largest image file read */
#define ST_FW_MAX_SBOM (16u * 1024 * 1024)   /* largest SBOM file read */

typedef struct st_fw_image {
	char name[32], version[32];
	char file[4096], sbom_file[4096];   /* resolved paths */
	unsigned slot;
	uint32_t address;
	uint8_t *data;                      /* the image, len bytes */
	size_t len;
	uint8_t sha256[32];
	char sha256_hex[65];
	char sbom_sha256_hex[65];
	char *sbom;                         /* the SBOM's text, as signed */
	size_t sbom_len;
	int ncomponents;                    /* components the SBOM lists */
} st_fw_image;

/* How the images are signed (firmware.format). */
typedef enum st_fw_format {
	ST_FW_STATION = 0,      /* FILE.sig: DER ECDSA P-256 over SHA-256 */
	ST_FW_ESP32_SBV2,       /* Espressif Secure Boot V2, RSA-3072 (esp32.h) */
} st_fw_format;

typedef struct st_firmware {
	int n;
	st_fw_image img[ST_FW_MAX_IMAGES];
	st_fw_format format;
	char key_file[4096];
	uint8_t rot[32];        /* ST_FW_STATION: SHA-256 of the key's DER
				 * SubjectPublicKeyInfo; ST_FW_ESP32_SBV2: the
				 * Secure Boot V2 key digest (st_esp_sbv2_digest) */
} st_firmware;

/* Read the "firmware" group of c (the profile at profile_path; relative
 * paths are taken from its directory), check every file (digests,
 * signatures, SBOMs) and fill fw.  ST_E_CONFIG with err naming the image,
 * the file, what failed and what to do; ST_E_NOMEM.  fw is freed by
 * st_fw_free whatever the result. */
int st_fw_parse(const config_t *c, const char *profile_path, st_firmware *fw,
		char *err, size_t errlen);

void st_fw_free(st_firmware *fw);

/* The firmware group of a loaded profile; NULL when it has none. */
const st_firmware *st_profile_firmware(const st_profile *p);

/* The components an SBOM lists, as {"name","version","purl"} objects
 * (a new reference), or NULL when it does not parse. */
json_t *st_fw_components(const char *sbom, size_t len);

#endif

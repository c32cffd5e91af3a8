/* tpm2.c — the "tpm2" target driver: a TPM 2.0 provisioned through tpm2-tss
 * (ESYS over a TCTI from the slot URI), filling the same ops table as the
 * programmer drivers so the engine needs no special case.
 *
 *   identify        manufacturer, firmware, device ID = first 16 bytes of
 *                   SHA-256(0x04||x||y) of the ECC P-256 endorsement key
 *                   (the TCG default EK template, as `tpm2_createek -G ecc`)
 *   keygen          P-256 signing key (fixedTPM|fixedParent|
 *                   sensitiveDataOrigin|userWithAuth|sign) under an ECC SRK,
 *                   made persistent at the key handle
 *   write/read_cert the certificate in an NV index of exactly its size
 *   sign_challenge  TPM2_Sign over SHA-256(DRV_POP_PREFIX||challenge)
 *   fuse_read/burn  bank 0 = a 32-byte NV index defined write-once
 *                   (ownerwrite|ownerread|writedefine), written, locked
 *   release         a TPM is one unit: afterwards identify says NO_TARGET
 *
 * Owner authorisation is the empty password of a factory-fresh TPM. */
#include "device-drivers/tpm2/tpm2.h"

#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "base.h"

struct tpm2 {
	TSS2_TCTI_CONTEXT *tcti;
	ESYS_CONTEXT *esys;
	char conf[256];        /* TCTI configuration, for messages */
	uint32_t key_handle;
	uint32_t cert_nv;
	uint32_t rot_nv;
	uint16_t nv_chunk;     /* TPM2_PT_NV_BUFFER_MAX */
	uint32_t nv_max;       /* TPM2_PT_NV_INDEX_MAX */
	bool released;
};

/* State of the root-of-trust index. */
enum rot_state { ROT_NONE, ROT_OPEN, ROT_LOCKED };

/* What an operator can do about the TPM errors a station meets first. */
static const char *tpm_hint(TSS2_RC rc)
{
	if (rc & TSS2_RC_LAYER_MASK)
		return "";
	if ((rc & TPM2_RC_FMT1) && ((rc & 0x3f) == (TPM2_RC_AUTH_FAIL & 0x3f) ||
				    (rc & 0x3f) == (TPM2_RC_BAD_AUTH & 0x3f)))
		return " (the station needs the empty owner/endorsement password of a "
		       "factory-fresh TPM: clear the TPM or set the unit aside)";
	if (rc == TPM2_RC_LOCKOUT)
		return " (the TPM is in dictionary-attack lockout: wait or clear it)";
	if (rc == TPM2_RC_NV_SPACE || rc == TPM2_RC_OBJECT_MEMORY)
		return " (the TPM is out of NV space or object slots)";
	return "";
}

/* Turn a TSS2 return code into an st_err with a readable cause.  A lost
 * link (TCTI layer, or an I/O base code from any layer) is ST_E_UNPLUGGED:
 * the engine stops the slot and the unit can be provisioned again. */
static int tss_fail(drv_dev *d, TSS2_RC rc, const char *what)
{
	struct tpm2 *t = drv_priv(d);
	unsigned base = rc & 0xffffu;

	if ((rc & TSS2_RC_LAYER_MASK) == TSS2_TCTI_RC_LAYER ||
	    ((rc & TSS2_RC_LAYER_MASK) != 0 &&
	     (base == TSS2_BASE_RC_IO_ERROR || base == TSS2_BASE_RC_NO_CONNECTION))) {
		drv_set_error(d, "TPM at %s stopped answering during %s (%s): check "
			      "that the TPM (or swtpm) is running; the unit is "
			      "interrupted and can be provisioned again", t->conf,
			      what, Tss2_RC_Decode(rc));
		return ST_E_UNPLUGGED;
	}
	drv_set_error(d, "TPM at %s: %s failed: 0x%x %s%s", t->conf, what, rc,
		      Tss2_RC_Decode(rc), tpm_hint(rc));
	return ST_E_DEVICE;
}

/* Parse one "name=0x..." option value into *out. */
static int parse_handle(drv_dev *d, const char *name, const char *val,
			size_t len, uint32_t *out)
{
	char buf[16], *end;
	unsigned long v;

	if (len == 0 || len >= sizeof(buf))
		goto bad;
	memcpy(buf, val, len);
	buf[len] = '\0';
	v = strtoul(buf, &end, 0);
	if (*end || v > 0xffffffffu)
		goto bad;
	*out = (uint32_t)v;
	return ST_OK;
bad:
	drv_set_error(d, "tpm2 option %s: '%.*s' is not a handle (e.g. 0x81020000)",
		      name, (int)len, val);
	return ST_E_CONFIG;
}

/* Read "key=..&cert_nv=..&rot_nv=.." and check each handle's range; *set
 * gets a bit per option given (key 1, cert_nv 2, rot_nv 4). */
static int parse_query(drv_dev *d, const char *q, unsigned *set)
{
	struct tpm2 *t = drv_priv(d);
	static const struct { const char *name; uint8_t hi; } opt[] = {
		{ "key", 0x81 }, { "cert_nv", 0x01 }, { "rot_nv", 0x01 },
	};
	uint32_t *dst[] = { &t->key_handle, &t->cert_nv, &t->rot_nv };

	while (q && *q) {
		size_t n = strcspn(q, "&"), k = strcspn(q, "=");
		size_t i;
		int rc;

		for (i = 0; i < ST_ARRAY_SIZE(opt); i++)
			if (k < n && strlen(opt[i].name) == k && !strncmp(q, opt[i].name, k))
				break;
		if (i == ST_ARRAY_SIZE(opt)) {
			drv_set_error(d, "tpm2: unknown option '%.*s' (key=, cert_nv=, "
				      "rot_nv=)", (int)n, q);
			return ST_E_CONFIG;
		}
		rc = parse_handle(d, opt[i].name, q + k + 1, n - k - 1, dst[i]);
		if (rc)
			return rc;
		*set |= 1u << i;
		if (*dst[i] >> 24 != opt[i].hi) {
			drv_set_error(d, "tpm2 option %s=0x%08x: must be a %s handle "
				      "(0x%02x......)", opt[i].name, *dst[i],
				      opt[i].hi == 0x81 ? "persistent" : "NV", opt[i].hi);
			return ST_E_CONFIG;
		}
		q += n + (q[n] == '&');
	}
	if (t->cert_nv == t->rot_nv) {
		drv_set_error(d, "tpm2: cert_nv and rot_nv must differ");
		return ST_E_CONFIG;
	}
	return ST_OK;
}

/* Fixed TPM properties from first to last (inclusive) into val[]. */
static int get_props(drv_dev *d, TPM2_PT first, TPM2_PT last, uint32_t *val)
{
	struct tpm2 *t = drv_priv(d);
	TPMS_CAPABILITY_DATA *cap = NULL;
	TPMI_YES_NO more;
	TSS2_RC rc;

	memset(val, 0, (last - first + 1) * sizeof(*val));
	rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				TPM2_CAP_TPM_PROPERTIES, first, last - first + 1,
				&more, &cap);
	if (rc)
		return tss_fail(d, rc, "reading TPM properties");
	for (UINT32 i = 0; i < cap->data.tpmProperties.count; i++) {
		TPMS_TAGGED_PROPERTY *p = &cap->data.tpmProperties.tpmProperty[i];

		if (p->property >= first && p->property <= last)
			val[p->property - first] = p->value;
	}
	Esys_Free(cap);
	return ST_OK;
}

/* Does the TPM hold handle h (persistent object or NV index)?  Asked by
 * listing, so an absent handle is not an error the TSS would log. */
static int handle_exists(drv_dev *d, uint32_t h, bool *exists)
{
	struct tpm2 *t = drv_priv(d);
	TPMS_CAPABILITY_DATA *cap = NULL;
	TPMI_YES_NO more;
	TSS2_RC rc;

	rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
				TPM2_CAP_HANDLES, h, 1, &more, &cap);
	if (rc)
		return tss_fail(d, rc, "listing handles");
	*exists = cap->data.handles.count >= 1 && cap->data.handles.handle[0] == h;
	Esys_Free(cap);
	return ST_OK;
}

/* An ESYS handle for TPM handle h (which must exist). */
static int tr_from(drv_dev *d, uint32_t h, ESYS_TR *tr, const char *what)
{
	struct tpm2 *t = drv_priv(d);
	TSS2_RC rc = Esys_TR_FromTPMPublic(t->esys, h, ESYS_TR_NONE, ESYS_TR_NONE,
					   ESYS_TR_NONE, tr);

	return rc ? tss_fail(d, rc, what) : ST_OK;
}

static void tr_close(drv_dev *d, ESYS_TR *tr)
{
	struct tpm2 *t = drv_priv(d);

	if (*tr != ESYS_TR_NONE)
		Esys_TR_Close(t->esys, tr);
	*tr = ESYS_TR_NONE;
}

/* Public area of NV index idx: *exists, and its attributes and size. */
static int nv_public(drv_dev *d, uint32_t idx, bool *exists, TPMA_NV *attrs,
		     uint16_t *size)
{
	struct tpm2 *t = drv_priv(d);
	TPM2B_NV_PUBLIC *pub = NULL;
	ESYS_TR tr = ESYS_TR_NONE;
	TSS2_RC trc;
	int rc;

	rc = handle_exists(d, idx, exists);
	if (rc || !*exists)
		return rc;
	if ((rc = tr_from(d, idx, &tr, "opening an NV index")))
		return rc;
	trc = Esys_NV_ReadPublic(t->esys, tr, ESYS_TR_NONE, ESYS_TR_NONE,
				 ESYS_TR_NONE, &pub, NULL);
	tr_close(d, &tr);
	if (trc)
		return tss_fail(d, trc, "reading an NV index's public area");
	*attrs = pub->nvPublic.attributes;
	*size = pub->nvPublic.dataSize;
	Esys_Free(pub);
	return ST_OK;
}

/* Read len bytes of NV index idx, in chunks the TPM accepts.  auth is the
 * hierarchy or the index itself. */
static int nv_read(drv_dev *d, uint32_t idx, uint8_t *out, uint16_t len,
		   const char *what)
{
	struct tpm2 *t = drv_priv(d);
	ESYS_TR tr = ESYS_TR_NONE;
	int rc;

	if ((rc = tr_from(d, idx, &tr, what)))
		return rc;
	for (uint16_t off = 0; off < len;) {
		uint16_t n = len - off < t->nv_chunk ? len - off : t->nv_chunk;
		TPM2B_MAX_NV_BUFFER *buf = NULL;
		TSS2_RC trc = Esys_NV_Read(t->esys, ESYS_TR_RH_OWNER, tr,
					   ESYS_TR_PASSWORD, ESYS_TR_NONE,
					   ESYS_TR_NONE, n, off, &buf);

		if (trc) {
			rc = tss_fail(d, trc, what);
			break;
		}
		if (buf->size != n) {
			drv_set_error(d, "%s: the TPM returned %u bytes, not %u", what,
				      buf->size, n);
			Esys_Free(buf);
			rc = ST_E_DEVICE;
			break;
		}
		memcpy(out + off, buf->buffer, n);
		Esys_Free(buf);
		off += n;
	}
	tr_close(d, &tr);
	return rc;
}

/* Write data to NV index tr from offset 0, in chunks. */
static int nv_write(drv_dev *d, ESYS_TR tr, const uint8_t *data, uint16_t len,
		    const char *what)
{
	struct tpm2 *t = drv_priv(d);

	for (uint16_t off = 0; off < len;) {
		TPM2B_MAX_NV_BUFFER buf;
		uint16_t n = len - off < t->nv_chunk ? len - off : t->nv_chunk;
		TSS2_RC trc;

		buf.size = n;
		memcpy(buf.buffer, data + off, n);
		trc = Esys_NV_Write(t->esys, ESYS_TR_RH_OWNER, tr, ESYS_TR_PASSWORD,
				    ESYS_TR_NONE, ESYS_TR_NONE, &buf, off);
		if (trc)
			return tss_fail(d, trc, what);
		off += n;
	}
	return ST_OK;
}

/* Define NV index idx of size bytes in the owner hierarchy. */
static int nv_define(drv_dev *d, uint32_t idx, uint16_t size, TPMA_NV attrs,
		     ESYS_TR *tr, const char *what)
{
	struct tpm2 *t = drv_priv(d);
	TPM2B_AUTH auth = { .size = 0 };
	TPM2B_NV_PUBLIC pub = {
		.nvPublic = { .nvIndex = idx, .nameAlg = TPM2_ALG_SHA256,
			      .attributes = attrs, .dataSize = size },
	};
	TSS2_RC trc = Esys_NV_DefineSpace(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD,
					  ESYS_TR_NONE, ESYS_TR_NONE, &auth, &pub, tr);

	return trc ? tss_fail(d, trc, what) : ST_OK;
}

/* Where the root-of-trust index stands. */
static int rot_state(drv_dev *d, enum rot_state *st, TPMA_NV *attrs, uint16_t *size)
{
	struct tpm2 *t = drv_priv(d);
	bool exists;
	int rc = nv_public(d, t->rot_nv, &exists, attrs, size);

	if (rc)
		return rc;
	*st = !exists ? ROT_NONE : (*attrs & TPMA_NV_WRITELOCKED) ? ROT_LOCKED : ROT_OPEN;
	return ST_OK;
}

static int t2_open(drv_dev *d, const char *path, const drv_opts *opts)
{
	struct tpm2 *t = drv_priv(d);
	size_t clen = strcspn(path, "?");
	uint32_t nv[2];
	TSS2_RC trc;
	int rc;

	/* opts->timeout_ms is not used: the TCTI has its own timeouts. */
	t->key_handle = TPM2_DRV_KEY_HANDLE;
	t->cert_nv = TPM2_DRV_CERT_NV;
	t->rot_nv = TPM2_DRV_ROT_NV;
	if (clen == 0 || clen >= sizeof(t->conf)) {
		drv_set_error(d, "tpm2: give a TCTI, e.g. tpm2:device:/dev/tpmrm0 or "
			      "tpm2:swtpm:host=127.0.0.1,port=2321");
		return ST_E_CONFIG;
	}
	snprintf(t->conf, sizeof(t->conf), "%.*s", (int)clen, path);
	/* The product profile says where the identity lives; the slot URI may
	 * only repeat it (a station-side typo must not move the identity). */
	if (opts && opts->target_opts && opts->target_opts[0]) {
		uint32_t want[3];
		unsigned pset = 0, uset = 0;
		static const char *const names[] = { "key", "cert_nv", "rot_nv" };

		if ((rc = parse_query(d, opts->target_opts, &pset)))
			return rc;
		want[0] = t->key_handle;
		want[1] = t->cert_nv;
		want[2] = t->rot_nv;
		if (path[clen] == '?' && (rc = parse_query(d, path + clen + 1, &uset)))
			return rc;
		for (int i = 0; i < 3; i++) {
			uint32_t got = i == 0 ? t->key_handle : i == 1 ? t->cert_nv : t->rot_nv;

			if ((pset & uset & (1u << i)) && got != want[i]) {
				drv_set_error(d, "tpm2: the slot URI sets %s=0x%08x but the "
					      "product profile says 0x%08x: remove it from the "
					      "slot", names[i], got, want[i]);
				return ST_E_CONFIG;
			}
		}
	} else if (path[clen] == '?') {
		unsigned uset = 0;

		if ((rc = parse_query(d, path + clen + 1, &uset)))
			return rc;
	}
	trc = Tss2_TctiLdr_Initialize(t->conf, &t->tcti);
	if (trc) {
		drv_set_error(d, "cannot reach the TPM at %s (%s): check the TCTI and "
			      "that the TPM is there", t->conf, Tss2_RC_Decode(trc));
		t->tcti = NULL;
		return ST_E_IO;
	}
	trc = Esys_Initialize(&t->esys, t->tcti, NULL);
	if (trc) {
		rc = tss_fail(d, trc, "ESYS initialisation");
		goto fail;
	}
	/* Ask now, so a dead TPM fails at open rather than mid-unit; a TPM no
	 * one has started (a bare simulator) gets TPM2_Startup(CLEAR). */
	rc = get_props(d, TPM2_PT_NV_INDEX_MAX, TPM2_PT_NV_INDEX_MAX, nv);
	if (rc == ST_E_DEVICE) {
		trc = Esys_Startup(t->esys, TPM2_SU_CLEAR);
		if (trc && trc != TPM2_RC_INITIALIZE) {
			rc = tss_fail(d, trc, "TPM2_Startup");
			goto fail;
		}
		rc = get_props(d, TPM2_PT_NV_INDEX_MAX, TPM2_PT_NV_INDEX_MAX, nv);
	}
	if (!rc)
		rc = get_props(d, TPM2_PT_NV_BUFFER_MAX, TPM2_PT_NV_BUFFER_MAX, nv + 1);
	if (rc)
		goto fail;
	t->nv_max = nv[0];
	t->nv_chunk = nv[1] && nv[1] < TPM2_MAX_NV_BUFFER_SIZE ? (uint16_t)nv[1] : 512;
	return ST_OK;
fail:
	Esys_Finalize(&t->esys);
	Tss2_TctiLdr_Finalize(&t->tcti);
	return rc;
}

/* The TCG default ECC P-256 endorsement key template (EK Credential
 * Profile, template L-2), so the key is the one `tpm2_createek -G ecc`
 * makes and the device ID can be checked by anyone with tpm2-tools. */
static const TPM2B_PUBLIC ek_template = {
	.publicArea = {
		.type = TPM2_ALG_ECC,
		.nameAlg = TPM2_ALG_SHA256,
		.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
			TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY |
			TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT,
		.authPolicy = { .size = 32, .buffer = {
			0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90,
			0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24, 0xFD, 0x52, 0xD7, 0x6E,
			0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14,
			0x69, 0xAA } },
		.parameters.eccDetail = {
			.symmetric = { .algorithm = TPM2_ALG_AES, .keyBits.aes = 128,
				       .mode.aes = TPM2_ALG_CFB },
			.scheme = { .scheme = TPM2_ALG_NULL },
			.curveID = TPM2_ECC_NIST_P256,
			.kdf = { .scheme = TPM2_ALG_NULL },
		},
		.unique.ecc = { .x = { .size = 32 }, .y = { .size = 32 } },
	},
};

/* The storage root key: the TCG ECC P-256 SRK template (owner hierarchy). */
static const TPM2B_PUBLIC srk_template = {
	.publicArea = {
		.type = TPM2_ALG_ECC,
		.nameAlg = TPM2_ALG_SHA256,
		.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
			TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
			TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT,
		.parameters.eccDetail = {
			.symmetric = { .algorithm = TPM2_ALG_AES, .keyBits.aes = 128,
				       .mode.aes = TPM2_ALG_CFB },
			.scheme = { .scheme = TPM2_ALG_NULL },
			.curveID = TPM2_ECC_NIST_P256,
			.kdf = { .scheme = TPM2_ALG_NULL },
		},
		.unique.ecc = { .x = { .size = 32 }, .y = { .size = 32 } },
	},
};

/* The device identity key: an IDevID-style P-256 ECDSA-SHA256 signing key
 * that cannot leave this TPM (fixedTPM) nor be re-parented (fixedParent),
 * generated inside it (sensitiveDataOrigin); unrestricted, so it can sign
 * the station's challenge digest. */
static const TPM2B_PUBLIC idevid_template = {
	.publicArea = {
		.type = TPM2_ALG_ECC,
		.nameAlg = TPM2_ALG_SHA256,
		.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
			TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
			TPMA_OBJECT_SIGN_ENCRYPT,
		.parameters.eccDetail = {
			.symmetric = { .algorithm = TPM2_ALG_NULL },
			.scheme = { .scheme = TPM2_ALG_ECDSA,
				    .details.ecdsa.hashAlg = TPM2_ALG_SHA256 },
			.curveID = TPM2_ECC_NIST_P256,
			.kdf = { .scheme = TPM2_ALG_NULL },
		},
	},
};

/* 0x04||x||y from a P-256 public area (coordinates left-padded to 32). */
static int ecc_point(drv_dev *d, const TPMT_PUBLIC *p, uint8_t pub[DRV_P256_POINT_LEN])
{
	const TPMS_ECC_POINT *e = &p->unique.ecc;

	if (p->type != TPM2_ALG_ECC || p->parameters.eccDetail.curveID != TPM2_ECC_NIST_P256 ||
	    e->x.size > 32 || e->y.size > 32) {
		drv_set_error(d, "the TPM returned a key that is not P-256");
		return ST_E_DEVICE;
	}
	memset(pub, 0, DRV_P256_POINT_LEN);
	pub[0] = 0x04;
	memcpy(pub + 1 + 32 - e->x.size, e->x.buffer, e->x.size);
	memcpy(pub + 33 + 32 - e->y.size, e->y.buffer, e->y.size);
	return ST_OK;
}

/* Device ID: the first 16 bytes of SHA-256 of the EK's public point. */
static int ek_uid(drv_dev *d, uint8_t uid[DRV_UID_LEN])
{
	struct tpm2 *t = drv_priv(d);
	TPM2B_SENSITIVE_CREATE sens = { .size = 0 };
	TPM2B_DATA outside = { .size = 0 };
	TPML_PCR_SELECTION pcrs = { .count = 0 };
	TPM2B_PUBLIC *pub = NULL;
	uint8_t point[DRV_P256_POINT_LEN], md[32];
	ESYS_TR ek = ESYS_TR_NONE;
	TSS2_RC trc;
	int rc;

	trc = Esys_CreatePrimary(t->esys, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD,
				 ESYS_TR_NONE, ESYS_TR_NONE, &sens, &ek_template,
				 &outside, &pcrs, &ek, &pub, NULL, NULL, NULL);
	if (trc)
		return tss_fail(d, trc, "creating the endorsement key");
	Esys_FlushContext(t->esys, ek);
	rc = ecc_point(d, &pub->publicArea, point);
	Esys_Free(pub);
	if (rc)
		return rc;
	if (EVP_Digest(point, sizeof(point), md, NULL, EVP_sha256(), NULL) != 1) {
		drv_set_error(d, "SHA-256 failed");
		return ST_E_CRYPTO;
	}
	memcpy(uid, md, DRV_UID_LEN);
	return ST_OK;
}

/* Copy the printable part of a 4-byte TPM vendor string. */
static void vendor_str(uint32_t v, char *out)
{
	int n = 0;

	for (int shift = 24; shift >= 0; shift -= 8) {
		char c = (char)((v >> shift) & 0xff);

		if (c > ' ' && c < 0x7f)
			out[n++] = c;
	}
	out[n] = '\0';
}

static int t2_identify(drv_dev *d, drv_info *info)
{
	struct tpm2 *t = drv_priv(d);
	uint32_t props[TPM2_PT_FIRMWARE_VERSION_2 - TPM2_PT_MANUFACTURER + 1];
	enum rot_state rs;
	TPMA_NV attrs;
	uint16_t size;
	bool key, cert;
	char vendor[5];
	int rc;

	if (t->released) {
		drv_set_error(d, "no more units: a TPM is one unit and it has been "
			      "released");
		return ST_E_NO_TARGET;
	}
	memset(info, 0, sizeof(*info));
	if ((rc = get_props(d, TPM2_PT_MANUFACTURER, TPM2_PT_FIRMWARE_VERSION_2, props)) ||
	    (rc = ek_uid(d, info->uid)) ||
	    (rc = handle_exists(d, t->key_handle, &key)) ||
	    (rc = handle_exists(d, t->cert_nv, &cert)) ||
	    (rc = rot_state(d, &rs, &attrs, &size)))
		return rc;
	st_hex(info->uid, DRV_UID_LEN, info->uid_hex);
	vendor_str(props[0], vendor);
	snprintf(info->model, sizeof(info->model), "TPM 2.0 %s", vendor);
	snprintf(info->fw_version, sizeof(info->fw_version), "%u.%u.%u.%u",
		 props[TPM2_PT_FIRMWARE_VERSION_1 - TPM2_PT_MANUFACTURER] >> 16,
		 props[TPM2_PT_FIRMWARE_VERSION_1 - TPM2_PT_MANUFACTURER] & 0xffff,
		 props[TPM2_PT_FIRMWARE_VERSION_2 - TPM2_PT_MANUFACTURER] >> 16,
		 props[TPM2_PT_FIRMWARE_VERSION_2 - TPM2_PT_MANUFACTURER] & 0xffff);
	/* A locked root of trust is "provisioned", not DRV_LC_LOCKED: a TPM
	 * has no debug/secure-boot lifecycle, and the engine must reach the
	 * fuse step to tell a same-value skip from a quarantine. */
	info->lifecycle = rs == ROT_LOCKED || cert ? DRV_LC_PROVISIONED : DRV_LC_OPEN;
	info->has_key = key;
	info->has_cert = cert;
	info->fuse_banks = 1;
	return ST_OK;
}

static int t2_get_pubkey(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN])
{
	struct tpm2 *t = drv_priv(d);
	TPM2B_PUBLIC *out = NULL;
	ESYS_TR tr = ESYS_TR_NONE;
	bool exists;
	TSS2_RC trc;
	int rc;

	if ((rc = handle_exists(d, t->key_handle, &exists)))
		return rc;
	if (!exists) {
		drv_set_error(d, "no identity key at persistent handle 0x%08x",
			      t->key_handle);
		return ST_E_NOTFOUND;
	}
	if ((rc = tr_from(d, t->key_handle, &tr, "opening the identity key")))
		return rc;
	trc = Esys_ReadPublic(t->esys, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
			      &out, NULL, NULL);
	tr_close(d, &tr);
	if (trc)
		return tss_fail(d, trc, "reading the identity key");
	rc = ecc_point(d, &out->publicArea, pub);
	Esys_Free(out);
	return rc;
}

/* A key already at the handle is replaced only while the root of trust is
 * not locked: once locked, the unit's identity is final. */
static int t2_keygen(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN])
{
	struct tpm2 *t = drv_priv(d);
	TPM2B_SENSITIVE_CREATE sens = { .size = 0 };
	TPM2B_DATA outside = { .size = 0 };
	TPML_PCR_SELECTION pcrs = { .count = 0 };
	TPM2B_PRIVATE *priv = NULL;
	TPM2B_PUBLIC *kpub = NULL;
	ESYS_TR srk = ESYS_TR_NONE, key = ESYS_TR_NONE, pers = ESYS_TR_NONE, old;
	enum rot_state rs;
	TPMA_NV attrs;
	uint16_t size;
	bool exists;
	TSS2_RC trc;
	int rc;

	if ((rc = handle_exists(d, t->key_handle, &exists)))
		return rc;
	if (exists) {
		if ((rc = rot_state(d, &rs, &attrs, &size)))
			return rc;
		if (rs == ROT_LOCKED) {
			drv_set_error(d, "an identity key exists at 0x%08x and the root "
				      "of trust (NV 0x%08x) is locked: the key is not "
				      "replaced; set the unit aside", t->key_handle,
				      t->rot_nv);
			return ST_E_LOCKED;
		}
		if ((rc = tr_from(d, t->key_handle, &old, "opening the old identity key")))
			return rc;
		trc = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, old, ESYS_TR_PASSWORD,
					ESYS_TR_NONE, ESYS_TR_NONE, t->key_handle, &pers);
		/* ESYS keeps the evicted object's name under the handle: drop
		 * it, or the new key at the same handle is refused later. */
		tr_close(d, &old);
		if (trc)
			return tss_fail(d, trc, "removing the old identity key");
		pers = ESYS_TR_NONE;
	}
	trc = Esys_CreatePrimary(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD,
				 ESYS_TR_NONE, ESYS_TR_NONE, &sens, &srk_template,
				 &outside, &pcrs, &srk, NULL, NULL, NULL, NULL);
	if (trc) {
		rc = tss_fail(d, trc, "creating the storage root key");
		goto cleanup;
	}
	trc = Esys_Create(t->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
			  &sens, &idevid_template, &outside, &pcrs, &priv, &kpub,
			  NULL, NULL, NULL);
	if (trc) {
		rc = tss_fail(d, trc, "creating the identity key");
		goto cleanup;
	}
	trc = Esys_Load(t->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
			priv, kpub, &key);
	if (trc) {
		rc = tss_fail(d, trc, "loading the identity key");
		goto cleanup;
	}
	trc = Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, key, ESYS_TR_PASSWORD,
				ESYS_TR_NONE, ESYS_TR_NONE, t->key_handle, &pers);
	if (trc) {
		rc = tss_fail(d, trc, "making the identity key persistent");
		goto cleanup;
	}
	rc = ecc_point(d, &kpub->publicArea, pub);
cleanup:
	if (key != ESYS_TR_NONE)
		Esys_FlushContext(t->esys, key);
	if (srk != ESYS_TR_NONE)
		Esys_FlushContext(t->esys, srk);
	tr_close(d, &pers);
	Esys_Free(priv);
	Esys_Free(kpub);
	return rc;
}

/* The certificate index is sized to the certificate: one of another size
 * is undefined and defined again. */
static int t2_write_cert(drv_dev *d, const uint8_t *der, size_t len)
{
	struct tpm2 *t = drv_priv(d);
	ESYS_TR tr = ESYS_TR_NONE;
	TPMA_NV attrs;
	uint16_t size;
	bool exists;
	TSS2_RC trc;
	int rc;

	if (t->nv_max && len > t->nv_max) {
		drv_set_error(d, "the certificate (%zu bytes) is larger than this TPM's "
			      "largest NV index (%u bytes)", len, t->nv_max);
		return ST_E_INVAL;
	}
	if ((rc = nv_public(d, t->cert_nv, &exists, &attrs, &size)))
		return rc;
	if (exists && size != len) {
		if ((rc = tr_from(d, t->cert_nv, &tr, "opening the certificate index")))
			return rc;
		trc = Esys_NV_UndefineSpace(t->esys, ESYS_TR_RH_OWNER, tr,
					    ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE);
		if (trc) {
			tr_close(d, &tr);
			return tss_fail(d, trc, "removing the old certificate index");
		}
		tr = ESYS_TR_NONE;
		exists = false;
	}
	if (exists)
		rc = tr_from(d, t->cert_nv, &tr, "opening the certificate index");
	else
		rc = nv_define(d, t->cert_nv, (uint16_t)len, TPMA_NV_OWNERWRITE |
			       TPMA_NV_OWNERREAD | TPMA_NV_AUTHREAD | TPMA_NV_NO_DA,
			       &tr, "defining the certificate index");
	if (!rc)
		rc = nv_write(d, tr, der, (uint16_t)len, "writing the certificate");
	tr_close(d, &tr);
	return rc;
}

static int t2_read_cert(drv_dev *d, uint8_t *buf, size_t cap, size_t *len)
{
	struct tpm2 *t = drv_priv(d);
	TPMA_NV attrs;
	uint16_t size;
	bool exists;
	int rc;

	if ((rc = nv_public(d, t->cert_nv, &exists, &attrs, &size)))
		return rc;
	if (!exists || !(attrs & TPMA_NV_WRITTEN)) {
		drv_set_error(d, "no certificate in NV index 0x%08x", t->cert_nv);
		return ST_E_NOTFOUND;
	}
	if (size > cap) {
		drv_set_error(d, "the certificate in NV 0x%08x (%u bytes) does not fit "
			      "in %zu", t->cert_nv, size, cap);
		return ST_E_INVAL;
	}
	rc = nv_read(d, t->cert_nv, buf, size, "reading the certificate");
	if (!rc)
		*len = size;
	return rc;
}

/* The digest is computed here and TPM2_Sign signs it (the key is not
 * restricted, so no hash-check ticket is needed); r,s become DER. */
static int t2_sign_challenge(drv_dev *d, const uint8_t *chal, size_t clen,
			     uint8_t *sig, size_t cap, size_t *siglen)
{
	struct tpm2 *t = drv_priv(d);
	TPM2B_DIGEST dg = { .size = 32 };
	TPMT_SIG_SCHEME scheme = { .scheme = TPM2_ALG_ECDSA,
				   .details.ecdsa.hashAlg = TPM2_ALG_SHA256 };
	TPMT_TK_HASHCHECK ticket = { .tag = TPM2_ST_HASHCHECK,
				     .hierarchy = TPM2_RH_NULL };
	TPMT_SIGNATURE *ts = NULL;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *s = NULL;
	ESYS_TR key = ESYS_TR_NONE;
	unsigned char *p;
	TSS2_RC trc;
	int rc = ST_E_CRYPTO, n;

	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, DRV_POP_PREFIX, sizeof(DRV_POP_PREFIX) - 1) != 1 ||
	    EVP_DigestUpdate(md, chal, clen) != 1 ||
	    EVP_DigestFinal_ex(md, dg.buffer, NULL) != 1) {
		drv_set_error(d, "SHA-256 of the challenge failed");
		goto cleanup;
	}
	if ((rc = tr_from(d, t->key_handle, &key, "opening the identity key")))
		goto cleanup;
	trc = Esys_Sign(t->esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
			&dg, &scheme, &ticket, &ts);
	if (trc) {
		rc = tss_fail(d, trc, "signing the challenge");
		goto cleanup;
	}
	rc = ST_E_CRYPTO;
	if (ts->sigAlg != TPM2_ALG_ECDSA || ts->signature.ecdsa.signatureR.size > 32 ||
	    ts->signature.ecdsa.signatureS.size > 32) {
		drv_set_error(d, "the TPM's signature is not a P-256 ECDSA signature");
		goto cleanup;
	}
	r = BN_bin2bn(ts->signature.ecdsa.signatureR.buffer,
		      ts->signature.ecdsa.signatureR.size, NULL);
	s = BN_bin2bn(ts->signature.ecdsa.signatureS.buffer,
		      ts->signature.ecdsa.signatureS.size, NULL);
	es = ECDSA_SIG_new();
	if (!r || !s || !es || ECDSA_SIG_set0(es, r, s) != 1) {
		drv_set_error(d, "out of memory converting the TPM's signature");
		goto cleanup;
	}
	r = s = NULL;
	n = i2d_ECDSA_SIG(es, NULL);
	if (n <= 0 || (size_t)n > cap) {
		drv_set_error(d, "the DER signature does not fit in %zu bytes", cap);
		rc = ST_E_INVAL;
		goto cleanup;
	}
	p = sig;
	*siglen = (size_t)i2d_ECDSA_SIG(es, &p);
	rc = ST_OK;
cleanup:
	tr_close(d, &key);
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	Esys_Free(ts);
	EVP_MD_CTX_free(md);
	return rc;
}

/* Bank 0 is the root-of-trust index.  It counts as burned only once it is
 * write-locked: a defined but unlocked index (a burn interrupted between
 * write and lock) reads blank, so the engine burns it again and the burn
 * completes it. */
static int t2_fuse_read(drv_dev *d, unsigned bank, uint8_t out[DRV_FUSE_BANK_LEN])
{
	struct tpm2 *t = drv_priv(d);
	enum rot_state rs;
	TPMA_NV attrs;
	uint16_t size;
	int rc;

	if (bank != 0) {
		drv_set_error(d, "a TPM has one root-of-trust bank (0), not %u", bank);
		return ST_E_INVAL;
	}
	memset(out, 0, DRV_FUSE_BANK_LEN);
	if ((rc = rot_state(d, &rs, &attrs, &size)))
		return rc;
	if (rs != ROT_LOCKED)
		return ST_OK;
	if (size != DRV_FUSE_BANK_LEN || !(attrs & TPMA_NV_WRITTEN)) {
		drv_set_error(d, "the root-of-trust index 0x%08x is locked but %s: it "
			      "can never hold the root of trust", t->rot_nv,
			      size != DRV_FUSE_BANK_LEN ? "not 32 bytes" : "was never written");
		return ST_E_FUSE_CONFLICT;
	}
	return nv_read(d, t->rot_nv, out, DRV_FUSE_BANK_LEN, "reading the root of trust");
}

/* Define (if needed), write, NV_WriteLock, read back.  A locked index is
 * never written: same value → readback (a retried burn), other → conflict.
 * The TPM's commands are atomic, so request_id is not needed. */
static int t2_fuse_burn(drv_dev *d, unsigned bank,
			const uint8_t value[DRV_FUSE_BANK_LEN], uint32_t request_id,
			uint8_t readback[DRV_FUSE_BANK_LEN])
{
	struct tpm2 *t = drv_priv(d);
	ESYS_TR tr = ESYS_TR_NONE;
	enum rot_state rs;
	TPMA_NV attrs = 0;
	uint16_t size = 0;
	TSS2_RC trc;
	int rc;

	(void)request_id;
	if (bank != 0) {
		drv_set_error(d, "a TPM has one root-of-trust bank (0), not %u", bank);
		return ST_E_INVAL;
	}
	if ((rc = rot_state(d, &rs, &attrs, &size)))
		return rc;
	if (rs == ROT_LOCKED) {
		if ((rc = t2_fuse_read(d, 0, readback)))
			return rc;
		if (memcmp(readback, value, DRV_FUSE_BANK_LEN)) {
			drv_set_error(d, "the root-of-trust index 0x%08x is locked with "
				      "another value: nothing written", t->rot_nv);
			return ST_E_FUSE_CONFLICT;
		}
		return ST_OK;
	}
	if (rs == ROT_OPEN && (size != DRV_FUSE_BANK_LEN ||
			       !(attrs & TPMA_NV_WRITEDEFINE) ||
			       !(attrs & TPMA_NV_OWNERWRITE))) {
		drv_set_error(d, "NV index 0x%08x exists but is not a 32-byte write-once "
			      "owner index: not ours, nothing written", t->rot_nv);
		return ST_E_FUSE_CONFLICT;
	}
	if (rs == ROT_OPEN)
		rc = tr_from(d, t->rot_nv, &tr, "opening the root-of-trust index");
	else
		rc = nv_define(d, t->rot_nv, DRV_FUSE_BANK_LEN, TPMA_NV_OWNERWRITE |
			       TPMA_NV_OWNERREAD | TPMA_NV_WRITEDEFINE, &tr,
			       "defining the root-of-trust index");
	if (!rc)
		rc = nv_write(d, tr, value, DRV_FUSE_BANK_LEN, "writing the root of trust");
	if (!rc) {
		trc = Esys_NV_WriteLock(t->esys, ESYS_TR_RH_OWNER, tr, ESYS_TR_PASSWORD,
					ESYS_TR_NONE, ESYS_TR_NONE);
		if (trc)
			rc = tss_fail(d, trc, "locking the root of trust");
	}
	tr_close(d, &tr);
	if (!rc)
		rc = t2_fuse_read(d, 0, readback);
	return rc;
}

/* A TPM has no lifecycle the station advances; the root-of-trust lock is
 * its irreversible step.  Asking for more is refused. */
static int t2_set_lifecycle(drv_dev *d, uint8_t state)
{
	if (state <= DRV_LC_PROVISIONED)
		return ST_OK;
	drv_set_error(d, "a TPM target has no lockable lifecycle: its root of trust "
		      "is the write-locked NV index");
	return ST_E_STATE;
}

static int t2_release(drv_dev *d)
{
	struct tpm2 *t = drv_priv(d);

	t->released = true;
	return ST_OK;
}

static void t2_close(drv_dev *d)
{
	struct tpm2 *t = drv_priv(d);

	Esys_Finalize(&t->esys);
	Tss2_TctiLdr_Finalize(&t->tcti);
}

const struct drv_ops tpm2_ops = {
	.name = "tpm2",
	.priv_size = sizeof(struct tpm2),
	.open = t2_open,
	.identify = t2_identify,
	.keygen = t2_keygen,
	.get_pubkey = t2_get_pubkey,
	.write_cert = t2_write_cert,
	.read_cert = t2_read_cert,
	.sign_challenge = t2_sign_challenge,
	.fuse_read = t2_fuse_read,
	.fuse_burn = t2_fuse_burn,
	.otp_is_nv = true,	/* write-once NV index: no programming window */
	.set_lifecycle = t2_set_lifecycle,
	.release = t2_release,
	.close = t2_close,
};

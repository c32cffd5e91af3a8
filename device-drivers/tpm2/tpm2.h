/* tpm2.h — the TPM 2.0 target driver ("tpm2:"), for the registry.
 *
 * The URI after "tpm2:" is a tpm2-tss TCTI configuration string, optionally
 * followed by "?key=0x81020000&cert_nv=0x01c10000&rot_nv=0x01c10001":
 *   tpm2:device:/dev/tpmrm0
 *   tpm2:swtpm:host=127.0.0.1,port=2321?key=0x81020001
 * One TPM is one unit.  See docs/tpm2.md for what each op does in the TPM. */
#ifndef ST_TPM2_H
#define ST_TPM2_H

#include "device-drivers/drv_api.h"

/* Defaults, overridable per slot in the URI query. */
#define TPM2_DRV_KEY_HANDLE 0x81020000u /* persistent IDevID-style key */
#define TPM2_DRV_CERT_NV    0x01c10000u /* certificate (DER, exact size) */
#define TPM2_DRV_ROT_NV     0x01c10001u /* 32-byte write-once root of trust */

extern const struct drv_ops tpm2_ops;

#endif

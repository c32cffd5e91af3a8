/* drv.h — what the engine uses to talk to a programmer and its target.
 *
 * A drv_dev is one open programmer (one slot).  Which driver serves it is
 * chosen from the URI scheme through the static registry (registry.c):
 *   "serial:/dev/ttyUSB0[?baud=115200]"   the station programmer protocol
 *                                         over a raw termios serial line;
 *   a bare path ("/dev/pts/3") means serial.
 * Calls on one drv_dev are not thread-safe; use one per worker thread.
 * Every call returns an st_err; on error drv_errmsg() says what failed in
 * words an operator can act on (command, timeout, port). */
#ifndef ST_DRV_H
#define ST_DRV_H

#include <stddef.h>
#include <stdint.h>

typedef struct drv_dev drv_dev;

#define DRV_UID_LEN 16
#define DRV_P256_POINT_LEN 65
#define DRV_FUSE_BANK_LEN 32
#define DRV_MAX_CERT 2048
#define DRV_MAX_SIG 80
#define DRV_POP_PREFIX "STPOP1" /* 6 bytes, no NUL on the wire */

/* Device lifecycle states, as the target reports them. */
enum drv_lifecycle {
	DRV_LC_OPEN = 0,        /* factory state: debug open, secure boot off */
	DRV_LC_PROVISIONED = 1, /* identity written */
	DRV_LC_LOCKED = 2,      /* secure boot on, debug off: irreversible */
};

/* Options for drv_open(); zero means "default". */
typedef struct drv_opts {
	int timeout_ms;  /* per command; default 2000 */
	int retries;     /* bounded retries of idempotent commands; default 2 */
} drv_opts;

/* What IDENTIFY tells about the programmer and the inserted target. */
typedef struct drv_info {
	uint8_t uid[DRV_UID_LEN];
	char uid_hex[2 * DRV_UID_LEN + 1];
	char model[32];        /* target model, NUL-terminated, printable */
	char fw_version[32];   /* programmer firmware, NUL-terminated */
	uint8_t proto_version; /* negotiated protocol version */
	uint8_t lifecycle;     /* enum drv_lifecycle */
	uint8_t has_key;       /* a device key exists */
	uint8_t has_cert;      /* a certificate is stored */
	uint8_t fuse_banks;    /* number of OTP banks of DRV_FUSE_BANK_LEN */
} drv_info;

/* Open the programmer at uri.  On failure *out may be set so the caller can
 * read drv_errmsg(); free it with drv_close() either way. */
int drv_open(const char *uri, const drv_opts *opts, drv_dev **out);

/* Readable cause of the last failure ("" when none). */
const char *drv_errmsg(const drv_dev *d);

/* Name of the driver serving d ("serial", ...) and the port it opened. */
const char *drv_driver_name(const drv_dev *d);
const char *drv_port(const drv_dev *d);

/* Read identity and state of the inserted target.  ST_E_NO_TARGET when the
 * programmer is empty. */
int drv_identify(drv_dev *d, drv_info *info);

/* Ask the target to generate its P-256 identity key on-chip; the public
 * point comes back.  The private key never leaves the target. */
int drv_keygen(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN]);

/* Wrapped key injection, for targets that cannot generate keys: the
 * target's one-time transport public key (P-256), then the HSM's ephemeral
 * public key and the device key wrapped under ECDH(ephemeral, transport)
 * with AES key wrap (RFC 5649).  The target unwraps and installs it; pub
 * gets the installed key's public point.  ST_E_DEVICE when the programmer
 * or target does not offer it. */
#define DRV_MAX_WRAPPED 512
int drv_get_transport_key(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN]);
int drv_inject_key(drv_dev *d, const uint8_t eph[DRV_P256_POINT_LEN],
		   const uint8_t *wrapped, size_t len,
		   uint8_t pub[DRV_P256_POINT_LEN]);

/* Read the public point of the target's existing identity key. */
int drv_get_pubkey(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN]);

/* Store a DER certificate in the target's certificate slot. */
int drv_write_cert(drv_dev *d, const uint8_t *der, size_t len);

/* Read the stored certificate into buf (cap bytes); *len gets its size. */
int drv_read_cert(drv_dev *d, uint8_t *buf, size_t cap, size_t *len);

/* Proof of possession: the target signs the message DRV_POP_PREFIX ||
 * challenge with ECDSA-SHA256 under its identity key (the prefix keeps the
 * device from being a signing oracle for arbitrary data); sig gets a DER
 * ECDSA-Sig-Value.  clen is 16..64 bytes. */
int drv_sign_challenge(drv_dev *d, const uint8_t *challenge, size_t clen,
		       uint8_t *sig, size_t cap, size_t *siglen);

/* Read OTP fuse bank `bank` (DRV_FUSE_BANK_LEN bytes). */
int drv_fuse_read(drv_dev *d, unsigned bank, uint8_t out[DRV_FUSE_BANK_LEN]);

/* Burn value into bank (bits only go 0→1).  request_id lets the programmer
 * recognise a retry of the same burn.  readback gets the bank afterwards.
 * ST_E_FUSE_CONFLICT when a bit would have to go 1→0 (nothing burned). */
int drv_fuse_burn(drv_dev *d, unsigned bank, const uint8_t value[DRV_FUSE_BANK_LEN],
		  uint32_t request_id, uint8_t readback[DRV_FUSE_BANK_LEN]);

/* Advance the target's lifecycle to state (never backwards). */
int drv_set_lifecycle(drv_dev *d, uint8_t state);

/* Tell the programmer this unit is finished; it ejects it and presents the
 * next one, if any (on a real fixture: the technician swaps the unit). */
int drv_release(drv_dev *d);

/* Close the port and free d.  NULL is fine. */
void drv_close(drv_dev *d);

#endif

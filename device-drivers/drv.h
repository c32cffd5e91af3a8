/* drv.h — what the engine uses to talk to a programmer and its target.
 *
 * A drv_dev is one open programmer (one slot).  Which driver serves it is
 * chosen from the URI scheme through the static registry (registry.c):
 *   "serial:/dev/ttyUSB0[?baud=115200]"   the station programmer protocol
 *                                         over a raw termios serial line;
 *   "usb:1209:5354[?serial=S|?port=1-2.3]" the same protocol over USB bulk
 *                                         endpoints (libusb);
 *   a bare path ("/dev/pts/3") means serial;
 *   "tpm2:<TCTI>[?key=..&cert_nv=..&rot_nv=..]"  a TPM 2.0 as the target
 *                                         (docs/tpm2.md);
 *   "esp32:/dev/ttyUSB0[?baud=N]"         an ESP32-C3 through its ROM
 *                                         serial loader (docs/esp32.md).
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
	/* Target options from the product profile, in the driver's URI query
	 * syntax (tpm2: "key=0x81020000&cert_nv=0x01c10000&rot_nv=..."), or
	 * NULL.  A driver without such options ignores them; the slot URI may
	 * repeat a value but never contradict the profile. */
	const char *target_opts;
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
	/* Bit b set: bank b is burned bit by bit (each bit 0->1 on its own,
	 * as an ESP32's eFuse BLOCK0), so several fields may share one of its
	 * words; a clear bit: a word is programmed once, whole (0 for every
	 * target of the station programmer protocol and for a TPM). */
	uint32_t bitprog_banks;
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

/* drv_keygen under request_id (fresh for each key wanted, e.g. HSM
 * random): when the reply is lost or garbled the request is sent again with
 * the same id, and a programmer with the link extension answers it with
 * the key it made for that id, never a second key (docs/protocol.md §4,
 * KEYGEN).  Other programmers get one plain KEYGEN, as drv_keygen(). */
int drv_keygen_req(drv_dev *d, uint32_t request_id, uint8_t pub[DRV_P256_POINT_LEN]);

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
 * ST_E_FUSE_CONFLICT when a bit would have to go 1→0, or the bank (or, in
 * a bit-programmable bank, a field it touches) is write-protected
 * (nothing burned).  In a bit-programmable bank (drv_info.bitprog_banks)
 * value is the whole bank as it must read afterwards: the bits already
 * burned plus the new ones. */
int drv_fuse_burn(drv_dev *d, unsigned bank, const uint8_t value[DRV_FUSE_BANK_LEN],
		  uint32_t request_id, uint8_t readback[DRV_FUSE_BANK_LEN]);

/* Read bank like drv_fuse_read; *faulty gets one bit per 4-byte word (bit w
 * = bytes 4w..4w+3) whose redundant copies disagree: a word whose
 * programming was interrupted.  Such a word may read as the intended value
 * and still be bad, so a burn is verified with this, not drv_fuse_read. */
int drv_fuse_read_status(drv_dev *d, unsigned bank, uint8_t out[DRV_FUSE_BANK_LEN],
			 uint8_t *faulty);

/* ---- A secret key for a peripheral that uses it unseen (docs/esp32.md,
 * "Identity"): an ESP32's eFuse HMAC key. ---- */

#define DRV_EFUSE_KEY_LEN 32

/* Burn key into the target's eFuse key block key_block (ESP32-C3: 0..5,
 * BLOCK_KEY0..5) with purpose (the chip's KEY_PURPOSE value; ESP32-C3
 * HMAC_UP = 8), then read-protect the block and write-protect it and its
 * purpose, so that nobody (the ROM loader, espefuse, the application)
 * reads the key back or changes it.  In this order:
 *  1. the block must read blank without errors, its purpose USER (0),
 *     neither the block nor its purpose protected: else
 *     ST_E_FUSE_CONFLICT, nothing burned (the unit goes to quarantine).
 *     A block that already holds exactly key, readable, purpose USER (a
 *     burn cut before step 3) goes on at step 3; a block read-protected
 *     with this purpose and both write-protections is ST_E_EXISTS, nothing
 *     burned (the key cannot be compared: the caller decides from its
 *     records);
 *  2. the block is programmed with key and read back: the read-back must
 *     be key (else ST_E_VERIFY);
 *  3. BLOCK0 gets the purpose, the RD_DIS bit and the two WR_DIS bits in
 *     one program; read back, the block must then read as zeros.
 * The driver keeps no copy of key: its read-back buffers are wiped and
 * the controller's programming registers are cleared after each program.
 * The key crosses the link in clear once (the ROM programs eFuses only
 * from its PGM_DATA registers).  ST_E_STATE when the driver has no such
 * key blocks. */
int drv_efuse_key_burn(drv_dev *d, unsigned key_block, uint8_t purpose,
		       const uint8_t key[DRV_EFUSE_KEY_LEN]);

/* Programming conditions the programmer measures at the target: fuses
 * burned outside the part's voltage/temperature window may read back right
 * and still fail later, so the engine checks them before every burn. */
typedef struct drv_conditions {
	int vpp_mv;      /* programming voltage, millivolts */
	int temp_dc;     /* die temperature, tenths of a degree Celsius */
} drv_conditions;

/* Measure the programming conditions now.  ST_E_STATE when the driver or
 * programmer cannot report them (then nothing may be burned). */
int drv_get_conditions(drv_dev *d, drv_conditions *out);

/* Whether this target's one-time storage is write-once NV memory the target
 * writes itself (a TPM NV index: each write atomic, then write-locked)
 * rather than electrically programmed fuses.  Then no programming window
 * applies, and a write cut short leaves the field either untouched, written
 * but unlocked (rewritable with the same value) or complete, never
 * half-programmed, so it is resumed rather than quarantined. */
int drv_otp_is_nv(const drv_dev *d);

/* Whether the target's own fuse controller makes the programming voltage
 * and timing (an ESP32's eFuse controller): no programming window exists
 * outside the chip to measure, so none is checked; a burn is judged by its
 * read-back and the controller's error registers only. */
int drv_otp_self_timed(const drv_dev *d);

/* ---- Firmware images and end-of-line attestation (docs/firmware.md) ----
 *
 * Every target that runs code the station programs implements these three
 * optional ops (drv_api.h): what a slot holds, writing an image into it
 * (resumable: a write cut short by a crash or an unplug continues from what
 * the target holds, once the target's own digest of that prefix matches),
 * and the signed statement of what the target holds. */

#define DRV_SHA256_LEN 32
#define DRV_MAX_STATEMENT 2048

/* Where an image goes and what it is.  slot: the target's image slot
 * (the station programmer protocol); address: the flash address, for
 * targets that place images by address (0 when unused). */
typedef struct drv_image {
	unsigned slot;
	uint32_t address;
	const uint8_t *data;
	size_t len;
	uint8_t sha256[DRV_SHA256_LEN]; /* SHA-256 of data */
} drv_image;

/* What a slot holds, as the target reports it. */
typedef struct drv_image_info {
	uint32_t capacity;      /* most bytes the slot takes */
	uint32_t total;         /* size of the image held or being written; 0 none */
	uint32_t stored;        /* bytes of it held, from its start */
	uint8_t id[DRV_SHA256_LEN];     /* the SHA-256 the host declared for it */
	uint8_t digest[DRV_SHA256_LEN]; /* SHA-256 the target computed itself
					 * over its stored bytes, now */
} drv_slot_info;

/* Ask what the slot of img holds (img->data may be NULL).  ST_E_STATE when
 * the driver or programmer has no image slots. */
int drv_image_info(drv_dev *d, const drv_image *img, drv_slot_info *out);

/* Write img.  When the slot already holds a prefix of this very image (same
 * size and declared SHA-256) and the target's own digest of that prefix is
 * the SHA-256 of img's first bytes, the write continues after it; otherwise
 * it starts over.  *resumed_from (may be NULL) gets the offset it went on
 * from (0: from the start).  ST_E_INVAL when the image does not fit the
 * slot.  The caller checks the result with drv_image_info (the target's
 * digest), never by trusting the write. */
int drv_image_write(drv_dev *d, const drv_image *img, uint32_t *resumed_from);

/* End-of-line attestation: the target signs, with its identity key
 * (ECDSA P-256, SHA-256, DER), a statement (JSON text, docs/firmware.md)
 * over nonce, its unique ID, the SHA-256 it measures of each image it
 * holds and its lifecycle.  stmt gets the statement's exact bytes (what
 * the signature covers), sig the signature.  nlen is 16..64. */
int drv_attest(drv_dev *d, const uint8_t *nonce, size_t nlen, uint8_t *stmt,
	       size_t cap, size_t *stmtlen, uint8_t *sig, size_t sigcap,
	       size_t *siglen);

/* Advance the target's lifecycle to state (never backwards). */
int drv_set_lifecycle(drv_dev *d, uint8_t state);

/* Tell the programmer this unit is finished; it ejects it and presents the
 * next one, if any (on a real fixture: the technician swaps the unit). */
int drv_release(drv_dev *d);

/* What the link to the programmer has cost since it was opened: commands
 * asked, requests sent (re-sends included), re-sends, attempts answered
 * with garbled frames or a NAK, attempts with nothing back.  A rising
 * share of re-sends is a fixture going bad (worn pogo pins, a long cable). */
typedef struct drv_linkstat {
	uint64_t commands, attempts, retries, garbled, silent;
} drv_linkstat;

/* Fill out (zeros for drivers that do not count). */
void drv_link_stats(drv_dev *d, drv_linkstat *out);

/* Close the port and free d.  NULL is fine. */
void drv_close(drv_dev *d);

/* One attached programmer, as `station devices` shows it. */
typedef struct drv_found {
	char driver[16];      /* "usb", "serial" */
	char uri[192];        /* what to pass to --slot / drv_open() */
	char port[64];        /* USB port path ("1-2.3") or tty path */
	char serial[64];      /* USB iSerialNumber, "" when unknown */
	char product[64];     /* what the id table calls it */
	char fw_version[32];  /* from HELLO; "" when it could not be asked */
	char err[192];        /* why it could not be asked, "" when fine */
} drv_found;

/* Find attached programmers: every USB device in the drivers' id tables,
 * plus each of the extra serial ports given (serial lines cannot be told
 * apart without talking to them).  Each is opened to read its firmware
 * version; one that cannot be opened is still listed with err set.  *out
 * gets a malloc()ed array of *n rows (free() it).  ST_OK, ST_E_NOMEM, or a
 * USB stack error (err says which). */
int drv_list(const char *const *serial_ports, size_t nports, drv_found **out,
	     size_t *n, char *err, size_t errlen);

/* Programmer hotplug: arrive/leave events, so a slot can appear and
 * disappear as programmers are plugged.  Not thread-safe; one per thread. */
typedef struct drv_monitor drv_monitor;

enum drv_hotplug_event { DRV_HOTPLUG_ARRIVED = 1, DRV_HOTPLUG_LEFT = 2 };

typedef struct drv_hotplug {
	int event;            /* enum drv_hotplug_event */
	char uri[192];        /* usb:VID:PID?port=...: stable for the socket */
	char port[64];
	char serial[64];      /* "" on LEFT when it was never seen arriving */
} drv_hotplug;

/* Start watching.  ST_OK, ST_E_IO (no hotplug support; err says so). */
int drv_monitor_open(drv_monitor **out, char *err, size_t errlen);
/* Next event within timeout_ms: 1 (ev filled), 0 timeout, negative error. */
int drv_monitor_wait(drv_monitor *m, int timeout_ms, drv_hotplug *ev);
/* Stop watching; NULL is fine. */
void drv_monitor_close(drv_monitor *m);

#endif

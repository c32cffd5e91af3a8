/* proto.h — the station programmer wire protocol (docs/protocol.md): frame
 * codec and command client, shared by every transport.
 *
 * The codec is pure (no I/O): COBS framing, header, CRC-32, and a byte-wise
 * receiver that resynchronises on 0x00.  The client runs commands over an
 * abstract transport (read/write/ctx), so the same code serves the serial
 * driver, a USB bulk driver and the simulator (which uses the codec only).
 * Nothing here keeps global state; all state lives in the caller's structs. */
#ifndef ST_PROTO_H
#define ST_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "device-drivers/drv.h"

#define PROTO_VERSION 1           /* the only version this code speaks */
#define PROTO_MAX_PAYLOAD 4096
#define PROTO_HDR_LEN 6           /* version, type, seq(2), length(2) */
#define PROTO_CRC_LEN 4
#define PROTO_MIN_DECODED (PROTO_HDR_LEN + PROTO_CRC_LEN)
#define PROTO_MAX_DECODED (PROTO_MIN_DECODED + PROTO_MAX_PAYLOAD)
/* COBS adds one code byte per started 254-byte run, plus one. */
#define PROTO_MAX_ENCODED (PROTO_MAX_DECODED + PROTO_MAX_DECODED / 254 + 2)
/* One frame on the wire: encoded bytes plus the 0x00 delimiter. */
#define PROTO_MAX_WIRE (PROTO_MAX_ENCODED + 1)
#define PROTO_REPLY 0x80          /* type bit set on replies */

/* Command codes (the request's type byte). */
enum proto_cmd {
	PROTO_CMD_HELLO = 0x01,
	PROTO_CMD_IDENTIFY = 0x02,
	PROTO_CMD_KEYGEN = 0x03,
	PROTO_CMD_GET_PUBKEY = 0x04,
	PROTO_CMD_WRITE_CERT = 0x05,
	PROTO_CMD_READ_CERT = 0x06,
	PROTO_CMD_SIGN_CHALLENGE = 0x07,
	PROTO_CMD_FUSE_READ = 0x08,
	PROTO_CMD_FUSE_BURN = 0x09,
	PROTO_CMD_SET_LIFECYCLE = 0x0a,
	PROTO_CMD_RELEASE = 0x0b,
	PROTO_CMD_CONDITIONS = 0x0c,   /* programming voltage and temperature */
	/* The link extension (PROTO_LINK_PARTS): the certificate in parts. */
	PROTO_CMD_WRITE_CERT_PART = 0x0d,
	PROTO_CMD_READ_CERT_PART = 0x0e,
	/* Wrapped key injection (issue 3), numbered apart from the v1 core. */
	PROTO_CMD_GET_TRANSPORT_KEY = 0x20,
	PROTO_CMD_INJECT_KEY = 0x21,
	/* Firmware images and attestation (docs/firmware.md, issue 20). */
	PROTO_CMD_IMAGE_INFO = 0x10,
	PROTO_CMD_IMAGE_BEGIN = 0x11,
	PROTO_CMD_IMAGE_WRITE = 0x12,
	PROTO_CMD_ATTEST = 0x13,
	/* A factory app on a chip booted from flash (docs/esp32.md "The
	 * factory app"): restart into the chip's ROM loader. */
	PROTO_CMD_APP_TO_LOADER = 0x30,
};

/* Status byte, first byte of every reply payload. */
enum proto_status {
	PROTO_ST_OK = 0x00,
	PROTO_ST_BAD_FRAME = 0x01,     /* CRC-valid frame with a bad length */
	PROTO_ST_BAD_VERSION = 0x02,   /* frame or HELLO version unsupported */
	PROTO_ST_UNKNOWN_CMD = 0x03,
	PROTO_ST_BAD_ARG = 0x04,       /* payload malformed or out of range */
	PROTO_ST_NO_TARGET = 0x05,     /* programmer empty */
	PROTO_ST_NO_KEY = 0x06,        /* target has no identity key */
	PROTO_ST_FUSE_CONFLICT = 0x07, /* a bit would have to go 1->0 */
	PROTO_ST_LOCKED = 0x08,        /* lifecycle LOCKED forbids it */
	PROTO_ST_INTERNAL = 0x09,      /* programmer-side failure */
	PROTO_ST_BUSY = 0x0a,          /* try again later */
	PROTO_ST_NO_CERT = 0x0b,       /* certificate slot empty */
	PROTO_ST_BAD_STATE = 0x0c,     /* e.g. lifecycle backwards */
	PROTO_ST_REQ_REUSED = 0x0d,    /* burn request_id reused with other data */
	PROTO_ST_TOO_LARGE = 0x0e,     /* the image does not fit the slot */
};

/* Capability bits exchanged in HELLO. */
#define PROTO_CAP_KEYGEN 0x00000001u
#define PROTO_CAP_CERT 0x00000002u
#define PROTO_CAP_FUSES 0x00000004u
#define PROTO_CAP_LIFECYCLE 0x00000008u
#define PROTO_CAP_RELEASE 0x00000010u
#define PROTO_CAPS_V1 0x0000001fu
#define PROTO_CAP_CONDITIONS 0x00000020u /* CONDITIONS, FUSE_READ word status */
#define PROTO_CAP_IMAGES 0x00000040u     /* IMAGE_INFO, IMAGE_BEGIN, IMAGE_WRITE */
#define PROTO_CAP_ATTEST 0x00000080u     /* ATTEST */

/* Link extension bits (docs/protocol.md §6.1): a u32 appended to the HELLO
 * request (what the host understands) and to the HELLO reply (what the
 * device implements), so v1 peers, which ignore extra bytes, see nothing
 * new.  A host uses a feature only when both sides set its bit. */
#define PROTO_LINK_NAK 0x00000001u     /* device NAKs frames it cannot read */
#define PROTO_LINK_PARTS 0x00000002u   /* WRITE/READ_CERT_PART */
#define PROTO_LINK_REPEAT 0x00000004u  /* KEYGEN request id, RELEASE by uid */
#define PROTO_LINK_ALL 0x00000007u

/* A NAK: the reply type of a frame the device could not read (bad COBS or
 * CRC), seq 0, payload: status BAD_FRAME, u8 enum proto_bad. */
#define PROTO_NAK_TYPE 0xff

/* The certificate travels in parts of at most this many bytes when the
 * device has PROTO_LINK_PARTS (docs/protocol.md §6.2 says why 32). */
#define PROTO_CERT_PART 32

/* An image travels in chunks of at most this many bytes (fewer when the
 * device's max_payload is smaller): small enough that a noisy line still
 * gets most chunks through, large enough that a clean line is not slowed
 * by the per-frame overhead (docs/firmware.md). */
#define PROTO_IMAGE_CHUNK 512

/* Retry bounds for a repeatable command (docs/protocol.md §6): it is sent
 * again while frames come back garbled, at most PROTO_NOISE_ATTEMPTS times
 * (PROTO_HELLO_ATTEMPTS until a HELLO has succeeded) and for at most
 * PROTO_NOISE_BUDGET_MS (or (retries + 1) * timeout_ms,
 * whichever is longer); retries + 1 attempts in a row with nothing back at
 * all end it as "no answer". */
#define PROTO_NOISE_ATTEMPTS 10000
#define PROTO_NOISE_BUDGET_MS 15000
/* Before the first HELLO has come through, at most this many attempts. */
#define PROTO_HELLO_ATTEMPTS 256

/* Why a received frame was rejected (the codec's diagnosis). */
enum proto_bad {
	PROTO_BAD_NONE = 0,
	PROTO_BAD_COBS,       /* not valid COBS */
	PROTO_BAD_SHORT,      /* shorter than header + CRC */
	PROTO_BAD_OVERSIZE,   /* longer than the maximum frame */
	PROTO_BAD_CRC,        /* CRC mismatch */
	PROTO_BAD_LENGTH,     /* length field disagrees with the frame */
	PROTO_BAD_VERSION,    /* envelope version is not PROTO_VERSION */
};

/* One decoded frame.  The payload lives inline so a frame needs no heap. */
typedef struct proto_frame {
	uint8_t version;
	uint8_t type;
	uint16_t seq;
	uint16_t len;
	uint8_t payload[PROTO_MAX_PAYLOAD];
} proto_frame;

/* Short words for a proto_bad value ("bad CRC"), for operator messages. */
const char *proto_bad_str(int why);

/* Name of a command code ("IDENTIFY"), "?" when unknown. */
const char *proto_cmd_name(uint8_t cmd);

/* Words for a device status byte ("no target"). */
const char *proto_status_str(uint8_t status);

/* The st_err a device status maps to (ST_OK for PROTO_ST_OK). */
int proto_status_err(uint8_t status);

/* COBS-encode n bytes into out (room for n + n/254 + 1); return the length.
 * Canonical COBS (a full 254-byte run at the very end gets no extra code
 * byte).  No delimiter is written: the encoding contains no 0x00. */
size_t proto_cobs_encode(const uint8_t *in, size_t n, uint8_t *out);

/* COBS-decode n bytes (no delimiter) into out (cap bytes).  ST_E_PROTO on a
 * zero byte, a run past the end or an output overflow. */
int proto_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap,
		      size_t *outlen);

/* Encode f into wire bytes: header, payload, CRC, COBS, trailing 0x00.
 * out needs PROTO_MAX_WIRE bytes.  ST_E_INVAL when f->len is too large. */
int proto_frame_encode(const proto_frame *f, uint8_t *out, size_t cap,
		       size_t *outlen);

/* Decode the COBS bytes between two delimiters into f.  Returns ST_OK,
 * ST_E_PROTO (bad COBS/CRC/length/size) or ST_E_VERSION (the frame is intact
 * but not version 1; f's type and seq are filled so a device can answer).
 * *why (may be NULL) gets the enum proto_bad diagnosis. */
int proto_frame_decode(const uint8_t *enc, size_t n, proto_frame *f, int *why);

/* Byte-wise receiver: accumulates bytes up to each 0x00 delimiter.  Garbage
 * is reported as one bad frame at the next 0x00, after which reception is
 * in sync again, so a line glitch costs one frame, never the session. */
typedef struct proto_rx {
	size_t len;
	int overflow;
	uint8_t buf[PROTO_MAX_ENCODED];
} proto_rx;

/* Reset the receiver (drop any partial frame). */
void proto_rx_init(proto_rx *rx);

/* Feed one byte.  Returns 0 when no frame ended, 1 when a good frame is in f,
 * or the negative st_err of proto_frame_decode when a bad one ended (*why
 * says why).  Empty frames (repeated 0x00) are ignored: senders may emit a
 * leading 0x00 to flush a receiver. */
int proto_rx_byte(proto_rx *rx, uint8_t b, proto_frame *f, int *why);

/* A byte transport: serial port, USB bulk pipe pair, test loopback. */
typedef struct proto_transport {
	/* Read up to cap bytes, waiting at most timeout_ms for the first.
	 * Returns the count (> 0), 0 on timeout, or a negative st_err:
	 * ST_E_UNPLUGGED when the device went away (so the engine can tell a
	 * pulled cable from a slow device), ST_E_IO otherwise. */
	int (*read)(void *ctx, uint8_t *buf, size_t cap, int timeout_ms);
	/* Write all n bytes within timeout_ms; ST_OK, ST_E_TIMEOUT, or the
	 * read() errors.  Blocking the whole frame keeps framing simple. */
	int (*write)(void *ctx, const uint8_t *buf, size_t n, int timeout_ms);
	/* Handed back to read/write. */
	void *ctx;
	/* Port name for operator messages ("/dev/ttyUSB0"). */
	const char *name;
} proto_transport;

/* What the link has cost so far (drv_link_stats). */
typedef struct proto_stats {
	uint64_t commands;        /* commands asked */
	uint64_t attempts;        /* requests sent, re-sends included */
	uint64_t retries;         /* re-sends */
	uint64_t garbled;         /* attempts answered with bad frames or a NAK */
	uint64_t silent;          /* attempts with nothing back in time */
} proto_stats;

/* The command client: one per open programmer.  Not thread-safe. */
typedef struct proto_client {
	proto_transport tr;
	int timeout_ms;
	int retries;
	uint16_t seq;             /* last sequence number sent */
	uint8_t version;          /* negotiated (after HELLO) */
	uint32_t caps;            /* device capabilities (after HELLO) */
	uint32_t link;            /* link extension bits both sides have */
	uint8_t uid[DRV_UID_LEN]; /* target of the last IDENTIFY (RELEASE) */
	int have_uid;
	proto_stats stats;
	uint16_t max_payload;     /* device's limit (after HELLO) */
	char fw_version[32];      /* programmer firmware (after HELLO) */
	char err[320];            /* cause of the last failure */
	size_t in_pos, in_len;    /* unconsumed transport bytes in `in` */
	uint8_t in[512];
	proto_rx rx;
	proto_frame req, rep;     /* scratch: keeps 8 KiB off the stack */
	/* A leading 0x00, the frame, a second 0x00 (docs/protocol.md §2.2). */
	uint8_t wire[2 + PROTO_MAX_WIRE];
} proto_client;

/* Prepare c over tr.  timeout_ms and retries <= 0 take the drv_opts
 * defaults (2000 ms, 2 retries; retries < 0 means none). */
void proto_client_init(proto_client *c, const proto_transport *tr,
		       int timeout_ms, int retries);

/* Send one request and wait for its reply.  Idempotent commands (and
 * FUSE_BURN, whose request_id makes a repeat safe) are re-sent after a
 * garbled reply, a NAK or a timeout, within the bounds above; other
 * commands are sent once because the device may already have acted.
 * Replies with another seq are stale and skipped.  On ST_OK c->rep holds
 * the reply (payload[0] == 0); otherwise c->err says what failed, naming
 * the command and port and whether nothing came back ("no answer",
 * ST_E_TIMEOUT) or only garbled frames ("malformed frames", ST_E_PROTO). */
int proto_call(proto_client *c, uint8_t cmd, const uint8_t *req, size_t len);

/* Typed commands; each returns an st_err with c->err set on failure.  See
 * docs/protocol.md for the layouts. */

/* Negotiate version 1 and read capabilities and firmware version. */
int proto_hello(proto_client *c);
/* Fill info (fw_version and proto_version come from HELLO). */
int proto_identify(proto_client *c, drv_info *info);
/* KEYGEN sent once (a repeat could make a second key). */
int proto_keygen(proto_client *c, uint8_t pub[DRV_P256_POINT_LEN]);
/* KEYGEN with a request id: re-sent like a read when the device has
 * PROTO_LINK_REPEAT (it answers a repeat of request_id with the key it
 * made for it and makes no other); sent once, without the id, otherwise. */
int proto_keygen_req(proto_client *c, uint32_t request_id,
		     uint8_t pub[DRV_P256_POINT_LEN]);
int proto_get_pubkey(proto_client *c, uint8_t pub[DRV_P256_POINT_LEN]);
/* The certificate in PROTO_CERT_PART parts when the device has
 * PROTO_LINK_PARTS, in one frame otherwise. */
int proto_write_cert(proto_client *c, const uint8_t *der, size_t len);
int proto_read_cert(proto_client *c, uint8_t *buf, size_t cap, size_t *len);
int proto_sign_challenge(proto_client *c, const uint8_t *chal, size_t clen,
			 uint8_t *sig, size_t cap, size_t *siglen);
int proto_fuse_read(proto_client *c, unsigned bank,
		    uint8_t out[DRV_FUSE_BANK_LEN]);
int proto_fuse_burn(proto_client *c, unsigned bank,
		    const uint8_t value[DRV_FUSE_BANK_LEN], uint32_t request_id,
		    uint8_t readback[DRV_FUSE_BANK_LEN]);
/* FUSE_READ with the word status byte a device may append: *faulty gets a
 * bit per word whose redundant copies disagree (0 from older devices). */
int proto_fuse_read_status(proto_client *c, unsigned bank,
			   uint8_t out[DRV_FUSE_BANK_LEN], uint8_t *faulty);
int proto_conditions(proto_client *c, drv_conditions *out);
int proto_set_lifecycle(proto_client *c, uint8_t state);
/* RELEASE naming the unit of the last IDENTIFY (re-sent like a read) when
 * the device has PROTO_LINK_REPEAT; sent once, empty, otherwise. */
int proto_release(proto_client *c);
/* The target's one-time transport public key (made on first request). */
int proto_get_transport_key(proto_client *c, uint8_t pub[DRV_P256_POINT_LEN]);
/* Hand the target the HSM's ephemeral public key and the wrapped device
 * key; pub gets the public point of the key the target installed. */
int proto_inject_key(proto_client *c, const uint8_t eph[DRV_P256_POINT_LEN],
		     const uint8_t *wrapped, size_t len,
		     uint8_t pub[DRV_P256_POINT_LEN]);

/* Firmware images (drv_image_info, drv_image_write) and attestation
 * (drv_attest); every one re-sent like a read (docs/firmware.md). */
int proto_image_info(proto_client *c, unsigned slot, drv_slot_info *out);
int proto_image_write(proto_client *c, const drv_image *img,
		      uint32_t *resumed_from);
int proto_attest(proto_client *c, const uint8_t *nonce, size_t nlen,
		 uint8_t *stmt, size_t cap, size_t *stmtlen, uint8_t *sig,
		 size_t sigcap, size_t *siglen);

/* Little-endian helpers shared by client and simulator. */
static inline void proto_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void proto_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline uint16_t proto_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t proto_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

#endif

/* client.c — the host side of the programmer protocol: request/reply with
 * sequence numbers, timeouts, bounded retries of safe commands, and the
 * typed commands every transport's driver shares. */
#include "device-drivers/proto/proto.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "base.h"

#define DEFAULT_TIMEOUT_MS 2000
#define DEFAULT_RETRIES 2
#define HELLO_WAIT_MS 100
#define HELLO_SILENT_MS 2000

/* Commands that may be sent again when the reply was lost or garbled.
 * FUSE_BURN is safe to repeat because its request_id lets the programmer
 * recognise the repeat; WRITE_CERT (same bytes again), WRITE_CERT_PART (the
 * same bytes at the same offset), SIGN_CHALLENGE (no state change) and
 * SET_LIFECYCLE (the same state again is OK) are idempotent; the others
 * here only read.  KEYGEN and RELEASE are repeatable only in their
 * link-extension form (a request id, a uid: proto_keygen_req(),
 * proto_release()); bare, a repeat would make a second key or skip a unit. */
static const uint8_t retry_safe[] = {
	PROTO_CMD_HELLO, PROTO_CMD_IDENTIFY, PROTO_CMD_GET_PUBKEY,
	PROTO_CMD_READ_CERT, PROTO_CMD_FUSE_READ, PROTO_CMD_FUSE_BURN,
	PROTO_CMD_WRITE_CERT, PROTO_CMD_SIGN_CHALLENGE, PROTO_CMD_SET_LIFECYCLE,
	PROTO_CMD_CONDITIONS,
	PROTO_CMD_GET_TRANSPORT_KEY,
	PROTO_CMD_WRITE_CERT_PART, PROTO_CMD_READ_CERT_PART,
	/* IMAGE_BEGIN with the same size and SHA-256 keeps what is stored,
	 * IMAGE_WRITE puts the same bytes at the same place, ATTEST changes
	 * nothing (any valid signature of the statement will do). */
	PROTO_CMD_IMAGE_INFO, PROTO_CMD_IMAGE_BEGIN, PROTO_CMD_IMAGE_WRITE,
	PROTO_CMD_ATTEST,
};

static int may_retry(uint8_t cmd)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(retry_safe); i++)
		if (retry_safe[i] == cmd)
			return 1;
	return 0;
}

/* The capability a command needs (0: always available). */
static uint32_t needed_cap(uint8_t cmd)
{
	switch (cmd) {
	case PROTO_CMD_KEYGEN: return PROTO_CAP_KEYGEN;
	case PROTO_CMD_WRITE_CERT: case PROTO_CMD_READ_CERT:
	case PROTO_CMD_WRITE_CERT_PART: case PROTO_CMD_READ_CERT_PART:
		return PROTO_CAP_CERT;
	case PROTO_CMD_FUSE_READ: case PROTO_CMD_FUSE_BURN: return PROTO_CAP_FUSES;
	case PROTO_CMD_SET_LIFECYCLE: return PROTO_CAP_LIFECYCLE;
	case PROTO_CMD_RELEASE: return PROTO_CAP_RELEASE;
	case PROTO_CMD_IMAGE_INFO: case PROTO_CMD_IMAGE_BEGIN:
	case PROTO_CMD_IMAGE_WRITE: return PROTO_CAP_IMAGES;
	case PROTO_CMD_ATTEST: return PROTO_CAP_ATTEST;
	default: return 0;
	}
}

__attribute__((format(printf, 3, 4)))
static int fail(proto_client *c, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return err;
}

void proto_client_init(proto_client *c, const proto_transport *tr,
		       int timeout_ms, int retries)
{
	memset(c, 0, sizeof(*c));
	c->tr = *tr;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
	c->retries = retries > 0 ? retries : retries < 0 ? 0 : DEFAULT_RETRIES;
	c->max_payload = PROTO_MAX_PAYLOAD;
	proto_rx_init(&c->rx);
}

/* Next frame from the link before deadline: 1 good frame in *f, a negative
 * decode error (*why set) for a bad one, ST_E_TIMEOUT, or a transport error. */
static int recv_frame(proto_client *c, int64_t deadline, proto_frame *f, int *why)
{
	for (;;) {
		int64_t left;
		int n;

		while (c->in_pos < c->in_len) {
			int r = proto_rx_byte(&c->rx, c->in[c->in_pos++], f, why);

			if (r != 0)
				return r;
		}
		left = deadline - st_now_ms();
		if (left <= 0)
			return ST_E_TIMEOUT;
		n = c->tr.read(c->tr.ctx, c->in, sizeof(c->in), (int)left);
		if (n < 0)
			return n;
		c->in_pos = 0;
		c->in_len = (size_t)n;
	}
}

static int link_error(proto_client *c, int rc, const char *name, const char *what)
{
	if (rc == ST_E_UNPLUGGED)
		return fail(c, rc, "%s: the programmer on %s went away while %s — "
			    "check the USB/serial cable", name, c->tr.name, what);
	if (rc == ST_E_TIMEOUT)
		return fail(c, rc, "%s: could not send to %s within %d ms — "
			    "is the port flow-controlled or stuck?", name,
			    c->tr.name, c->timeout_ms);
	return fail(c, rc, "%s: I/O error on %s while %s", name, c->tr.name,
		    what);
}

/* How one attempt ended (or a negative st_err, c->err set). */
enum { GOT_REPLY = 1, GARBLED, SILENT };

/* One attempt: send the request under a fresh seq and wait for its reply.
 * GARBLED: a frame came back that failed COBS/CRC, a NAK (the device could
 * not read our request), or bytes that never ended a frame; *why says
 * which.  SILENT: nothing at all came back in time. */
static int attempt(proto_client *c, uint8_t cmd, const uint8_t *req, size_t len,
		   uint16_t first_seq, int wait_ms, int *why)
{
	const char *name = proto_cmd_name(cmd);
	int64_t deadline;
	size_t wlen;
	int rc;

	/* What is left of earlier replies (fragments of a garbled one, a
	 * second NAK) belongs to earlier attempts: start clean. */
	c->in_pos = c->in_len = 0;
	proto_rx_init(&c->rx);
	c->req.version = PROTO_VERSION;
	c->req.type = cmd;
	c->req.seq = ++c->seq;
	c->req.len = (uint16_t)len;
	if (len)
		memcpy(c->req.payload, req, len);
	/* A leading 0x00 ends any garbage sitting in the device's receiver,
	 * so our frame is never glued to line noise; a trailing second one
	 * ends the frame even when noise hit its own delimiter. */
	c->wire[0] = 0;
	rc = proto_frame_encode(&c->req, c->wire + 1, sizeof(c->wire) - 2, &wlen);
	if (rc != ST_OK)
		return fail(c, rc, "%s: cannot encode request", name);
	c->wire[1 + wlen] = 0;
	c->stats.attempts++;
	rc = c->tr.write(c->tr.ctx, c->wire, wlen + 2, c->timeout_ms);
	if (rc != ST_OK)
		return link_error(c, rc, name, "sending");
	deadline = st_now_ms() + wait_ms;
	for (;;) {
		*why = PROTO_BAD_NONE;
		rc = recv_frame(c, deadline, &c->rep, why);
		if (rc == 1 && c->rep.type == PROTO_NAK_TYPE) {
			*why = c->rep.len >= 2 && c->rep.payload[1] <= PROTO_BAD_VERSION &&
			       c->rep.payload[1] != PROTO_BAD_NONE ?
			       c->rep.payload[1] : PROTO_BAD_CRC;
			return GARBLED;
		}
		if (rc == 1) {
			/* A repeatable command's attempts all ask the same, so
			 * a late reply to an earlier one answers it as well;
			 * anything older is stale. */
			if (!(c->rep.type & PROTO_REPLY) ||
			    (uint16_t)(c->rep.seq - first_seq) >
			    (uint16_t)(c->req.seq - first_seq) ||
			    (c->rep.seq != c->req.seq && c->rep.type != (cmd | PROTO_REPLY)))
				continue; /* stale reply or echo */
			return GOT_REPLY;
		}
		if (rc == ST_E_VERSION)
			return fail(c, rc, "%s: the programmer on %s answered "
				    "with protocol version %u; this station "
				    "speaks %u", name, c->tr.name,
				    c->rep.version, PROTO_VERSION);
		if (rc == ST_E_PROTO)
			return GARBLED;
		if (rc == ST_E_TIMEOUT) {
			if (c->rx.len == 0 && !c->rx.overflow)
				return SILENT;
			*why = PROTO_BAD_SHORT; /* bytes that never ended a frame */
			return GARBLED;
		}
		return link_error(c, rc, name, "waiting for the reply");
	}
}

/* A reply arrived: its status decides. */
static int reply_status(proto_client *c, uint8_t cmd)
{
	const char *name = proto_cmd_name(cmd);

	if (c->rep.type != (cmd | PROTO_REPLY) || c->rep.len < 1)
		return fail(c, ST_E_PROTO, "%s: the programmer on %s sent a "
			    "malformed reply (type 0x%02x, %u bytes)", name,
			    c->tr.name, c->rep.type, c->rep.len);
	if (c->rep.payload[0] != PROTO_ST_OK)
		return fail(c, proto_status_err(c->rep.payload[0]),
			    "%s on %s: %s (device status %u)", name,
			    c->tr.name, proto_status_str(c->rep.payload[0]),
			    c->rep.payload[0]);
	return ST_OK;
}

/* Pause before re-asking after `run` garbled attempts in a row.  Noise
 * hits single bytes at random, so re-asking at once is the fastest way
 * through it; a pause of 1 ms after every 16th garbled attempt in a row
 * lets a burst of interference (a relay, a motor starting) pass without
 * costing a clean-but-noisy line more than a few per cent. */
static void backoff(int run)
{
	struct timespec t = { 0, 1000000L };

	if (run % 16)
		return;
	while (nanosleep(&t, &t) < 0 && errno == EINTR)
		;
}

/* Send cmd until a reply comes, within the bounds of proto.h; repeatable
 * says whether a repeat is safe (else one attempt). */
static int call(proto_client *c, uint8_t cmd, const uint8_t *req, size_t len,
		int repeatable)
{
	const char *name = proto_cmd_name(cmd);
	int64_t t0 = st_now_ms(), budget, silent_since = 0;
	int attempts = 0, garbled = 0, silent_run = 0, garbled_run = 0;
	int why = PROTO_BAD_NONE, last_why = PROTO_BAD_CRC;
	/* "No answer" is nothing back for retries + 1 timeouts in a row. */
	int64_t max_silent_ms = (int64_t)(1 + c->retries) * c->timeout_ms;
	/* HELLO comes before the device may NAK, so a request lost to noise
	 * gets silence: ask again after HELLO_WAIT_MS (devices answer HELLO
	 * within 100 ms, §5; a later reply to an earlier try still counts). */
	int wait_ms = cmd == PROTO_CMD_HELLO && c->timeout_ms > HELLO_WAIT_MS ?
		      HELLO_WAIT_MS : c->timeout_ms;
	uint16_t first_seq = (uint16_t)(c->seq + 1);
	int max_attempts = !repeatable || c->retries == 0 ? 1 :
			   /* not one good frame yet: more likely the wrong
			    * port or baud rate than noise */
			   c->version ? PROTO_NOISE_ATTEMPTS : PROTO_HELLO_ATTEMPTS;

	c->err[0] = '\0';
	/* After HELLO, only what both sides can do (docs/protocol.md §4). */
	if (c->version && needed_cap(cmd) && !(c->caps & needed_cap(cmd)))
		return fail(c, ST_E_STATE, "%s: the programmer on %s does not "
			    "offer it (capabilities 0x%02x, firmware %s)", name,
			    c->tr.name, (unsigned)c->caps, c->fw_version);
	if (len > PROTO_MAX_PAYLOAD || len > c->max_payload)
		return fail(c, ST_E_INVAL, "%s: request of %zu bytes exceeds the "
			    "programmer's %u-byte limit", name, len,
			    (unsigned)c->max_payload);
	if (!repeatable)
		max_silent_ms = c->timeout_ms;
	/* ...and for HELLO at least HELLO_SILENT_MS: twenty tries or more, so
	 * a noisy line is not taken for a dead one at open. */
	if (cmd == PROTO_CMD_HELLO && repeatable && c->retries &&
	    max_silent_ms < HELLO_SILENT_MS)
		max_silent_ms = HELLO_SILENT_MS;
	budget = (int64_t)(1 + c->retries) * c->timeout_ms;
	if (budget < PROTO_NOISE_BUDGET_MS)
		budget = PROTO_NOISE_BUDGET_MS;
	c->stats.commands++;
	for (;;) {
		int rc;

		if (attempts++)
			c->stats.retries++;
		rc = attempt(c, cmd, req, len, first_seq, wait_ms, &why);
		if (rc < 0)
			return rc;
		if (rc == GOT_REPLY)
			return reply_status(c, cmd);
		if (rc == GARBLED) {
			c->stats.garbled++;
			garbled++;
			garbled_run++;
			silent_run = 0;
			last_why = why;
		} else {
			c->stats.silent++;
			if (!silent_run++)
				silent_since = st_now_ms() - wait_ms;
			garbled_run = 0;
		}
		if (rc == GARBLED && !repeatable)
			return fail(c, ST_E_PROTO, "malformed frames from %s (%s) in "
				    "reply to %s, which is not sent again (the "
				    "programmer may have acted on it) — check the "
				    "contacts/cable: the line is noisy", c->tr.name,
				    proto_bad_str(last_why), name);
		if (silent_run && st_now_ms() - silent_since >= max_silent_ms) {
			char extra[64] = "";

			if (garbled)
				snprintf(extra, sizeof(extra), ", after %d garbled",
					 garbled);
			return fail(c, ST_E_TIMEOUT, "no answer to %s on %s: nothing "
				    "came back for %lld ms (%d attempt%s in a row, "
				    "timeout %d ms%s) — check the cable/power of the "
				    "programmer", name, c->tr.name,
				    (long long)max_silent_ms, silent_run,
				    silent_run == 1 ? "" : "s", c->timeout_ms, extra);
		}
		if (attempts >= max_attempts || st_now_ms() - t0 >= budget)
			return fail(c, ST_E_PROTO, "malformed frames from %s in reply "
				    "to %s: %d of %d frames garbled (%s), %d with "
				    "nothing back, in %lld ms — check the contacts/"
				    "cable: the line is noisy", c->tr.name, name,
				    garbled, attempts, proto_bad_str(last_why),
				    attempts - garbled, (long long)(st_now_ms() - t0));
		if (rc == GARBLED)
			backoff(garbled_run);
	}
}

int proto_call(proto_client *c, uint8_t cmd, const uint8_t *req, size_t len)
{
	return call(c, cmd, req, len, may_retry(cmd));
}

/* Reply payload (after the status byte) must be at least n bytes. */
static int need(proto_client *c, uint8_t cmd, size_t n)
{
	if ((size_t)c->rep.len < 1 + n)
		return fail(c, ST_E_PROTO, "%s: reply from %s too short (%u bytes, "
			    "need %zu)", proto_cmd_name(cmd), c->tr.name,
			    c->rep.len, 1 + n);
	return ST_OK;
}

/* Copy a length-prefixed device string into out as printable ASCII. */
static void copy_str(char *out, size_t cap, const uint8_t *s, size_t n)
{
	size_t i;

	if (n > cap - 1)
		n = cap - 1;
	for (i = 0; i < n; i++)
		out[i] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
	out[i] = '\0';
}

int proto_hello(proto_client *c)
{
	uint8_t req[10] = { PROTO_VERSION, PROTO_VERSION };
	const uint8_t *p = c->rep.payload + 1;
	size_t fw;
	int rc;

	proto_put32(req + 2, PROTO_CAPS_V1);
	/* The link extension rides after the v1 fields (§6.1): a v1 device
	 * ignores it, and its reply simply lacks the answer. */
	proto_put32(req + 6, PROTO_LINK_ALL);
	rc = proto_call(c, PROTO_CMD_HELLO, req, sizeof(req));
	if (rc != ST_OK)
		return rc;
	if ((rc = need(c, PROTO_CMD_HELLO, 8)) != ST_OK)
		return rc;
	if (p[0] != PROTO_VERSION)
		return fail(c, ST_E_VERSION, "HELLO: the programmer on %s chose "
			    "protocol version %u; this station speaks %u",
			    c->tr.name, p[0], PROTO_VERSION);
	c->version = p[0];
	c->caps = proto_get32(p + 1);
	c->max_payload = proto_get16(p + 5);
	if (c->max_payload > PROTO_MAX_PAYLOAD)
		c->max_payload = PROTO_MAX_PAYLOAD;
	fw = p[7];
	if ((rc = need(c, PROTO_CMD_HELLO, 8 + fw)) != ST_OK)
		return rc;
	copy_str(c->fw_version, sizeof(c->fw_version), p + 8, fw);
	c->link = (size_t)c->rep.len >= 1 + 8 + fw + 4 ?
		  proto_get32(p + 8 + fw) & PROTO_LINK_ALL : 0;
	/* Parts need room for their 4-byte header and one part. */
	if (c->max_payload < 4 + PROTO_CERT_PART)
		c->link &= ~PROTO_LINK_PARTS;
	return ST_OK;
}

int proto_identify(proto_client *c, drv_info *info)
{
	const uint8_t *p = c->rep.payload + 1;
	int rc;

	rc = proto_call(c, PROTO_CMD_IDENTIFY, NULL, 0);
	if (rc != ST_OK)
		return rc;
	if ((rc = need(c, PROTO_CMD_IDENTIFY, DRV_UID_LEN + 5)) != ST_OK)
		return rc;
	if ((rc = need(c, PROTO_CMD_IDENTIFY, DRV_UID_LEN + 5 +
		       (size_t)p[DRV_UID_LEN + 4])) != ST_OK)
		return rc;
	memset(info, 0, sizeof(*info));
	memcpy(info->uid, p, DRV_UID_LEN);
	st_hex(info->uid, DRV_UID_LEN, info->uid_hex);
	info->lifecycle = p[DRV_UID_LEN];
	info->has_key = p[DRV_UID_LEN + 1];
	info->has_cert = p[DRV_UID_LEN + 2];
	info->fuse_banks = p[DRV_UID_LEN + 3];
	copy_str(info->model, sizeof(info->model), p + DRV_UID_LEN + 5,
		 p[DRV_UID_LEN + 4]);
	memcpy(info->fw_version, c->fw_version, sizeof(info->fw_version));
	info->proto_version = c->version;
	/* RELEASE names this unit (proto_release()). */
	memcpy(c->uid, info->uid, DRV_UID_LEN);
	c->have_uid = 1;
	return ST_OK;
}

/* Shared tail of KEYGEN and GET_PUBKEY: check and copy the point. */
static int take_point(proto_client *c, uint8_t cmd, uint8_t pub[DRV_P256_POINT_LEN])
{
	int rc = need(c, cmd, DRV_P256_POINT_LEN);

	if (rc != ST_OK)
		return rc;
	if (c->rep.payload[1] != 0x04)
		return fail(c, ST_E_PROTO, "%s: the programmer on %s returned a "
			    "point that is not uncompressed P-256",
			    proto_cmd_name(cmd), c->tr.name);
	memcpy(pub, c->rep.payload + 1, DRV_P256_POINT_LEN);
	return ST_OK;
}

int proto_keygen(proto_client *c, uint8_t pub[DRV_P256_POINT_LEN])
{
	int rc = proto_call(c, PROTO_CMD_KEYGEN, NULL, 0);

	return rc != ST_OK ? rc : take_point(c, PROTO_CMD_KEYGEN, pub);
}

int proto_keygen_req(proto_client *c, uint32_t request_id,
		     uint8_t pub[DRV_P256_POINT_LEN])
{
	uint8_t req[4];
	int rc;

	if (!(c->link & PROTO_LINK_REPEAT))
		return proto_keygen(c, pub);
	proto_put32(req, request_id);
	rc = call(c, PROTO_CMD_KEYGEN, req, sizeof(req), 1);
	return rc != ST_OK ? rc : take_point(c, PROTO_CMD_KEYGEN, pub);
}

int proto_get_pubkey(proto_client *c, uint8_t pub[DRV_P256_POINT_LEN])
{
	int rc = proto_call(c, PROTO_CMD_GET_PUBKEY, NULL, 0);

	return rc != ST_OK ? rc : take_point(c, PROTO_CMD_GET_PUBKEY, pub);
}

/* WRITE_CERT_PART: u16 total, u16 offset, the bytes; each part is
 * idempotent (the same bytes at the same offset), and the device takes the
 * certificate into its slot when the last byte has arrived. */
static int write_cert_parts(proto_client *c, const uint8_t *der, size_t len)
{
	uint8_t req[4 + PROTO_CERT_PART];

	for (size_t off = 0; off < len; off += PROTO_CERT_PART) {
		size_t n = len - off < PROTO_CERT_PART ? len - off : PROTO_CERT_PART;
		int rc;

		proto_put16(req, (uint16_t)len);
		proto_put16(req + 2, (uint16_t)off);
		memcpy(req + 4, der + off, n);
		rc = proto_call(c, PROTO_CMD_WRITE_CERT_PART, req, 4 + n);
		if (rc != ST_OK)
			return rc;
	}
	return ST_OK;
}

int proto_write_cert(proto_client *c, const uint8_t *der, size_t len)
{
	if (len == 0 || len > DRV_MAX_CERT)
		return fail(c, ST_E_INVAL, "WRITE_CERT: certificate of %zu bytes "
			    "(1..%d allowed)", len, DRV_MAX_CERT);
	if (c->link & PROTO_LINK_PARTS)
		return write_cert_parts(c, der, len);
	return proto_call(c, PROTO_CMD_WRITE_CERT, der, len);
}

/* READ_CERT_PART: u16 offset, u16 max -> u16 total, up to max bytes. */
static int read_cert_parts(proto_client *c, uint8_t *buf, size_t cap, size_t *len)
{
	size_t off = 0, total = 0;

	do {
		uint8_t req[4];
		size_t n, t;
		int rc;

		proto_put16(req, (uint16_t)off);
		proto_put16(req + 2, PROTO_CERT_PART);
		rc = proto_call(c, PROTO_CMD_READ_CERT_PART, req, sizeof(req));
		if (rc == ST_OK)
			rc = need(c, PROTO_CMD_READ_CERT_PART, 2);
		if (rc != ST_OK)
			return rc;
		t = proto_get16(c->rep.payload + 1);
		n = (size_t)c->rep.len - 3;
		if (off && t != total)
			return fail(c, ST_E_PROTO, "READ_CERT_PART: the certificate on "
				    "%s changed size while it was read (%zu, then %zu "
				    "bytes)", c->tr.name, total, t);
		total = t;
		if (total > cap)
			return fail(c, ST_E_INVAL, "READ_CERT: certificate of %zu bytes "
				    "does not fit the %zu-byte buffer", total, cap);
		if (n == 0 || n > PROTO_CERT_PART || off + n > total)
			return fail(c, ST_E_PROTO, "READ_CERT_PART: the programmer on "
				    "%s sent %zu bytes at offset %zu of %zu", c->tr.name,
				    n, off, total);
		memcpy(buf + off, c->rep.payload + 3, n);
		off += n;
	} while (off < total);
	*len = total;
	return ST_OK;
}

int proto_read_cert(proto_client *c, uint8_t *buf, size_t cap, size_t *len)
{
	size_t n;
	int rc;

	if (c->link & PROTO_LINK_PARTS)
		return read_cert_parts(c, buf, cap, len);
	rc = proto_call(c, PROTO_CMD_READ_CERT, NULL, 0);
	if (rc != ST_OK)
		return rc;
	n = (size_t)c->rep.len - 1;
	if (n > cap)
		return fail(c, ST_E_INVAL, "READ_CERT: certificate of %zu bytes "
			    "does not fit the %zu-byte buffer", n, cap);
	memcpy(buf, c->rep.payload + 1, n);
	*len = n;
	return ST_OK;
}

int proto_sign_challenge(proto_client *c, const uint8_t *chal, size_t clen,
			 uint8_t *sig, size_t cap, size_t *siglen)
{
	size_t n;
	int rc;

	if (clen < 16 || clen > 64)
		return fail(c, ST_E_INVAL, "SIGN_CHALLENGE: challenge of %zu bytes "
			    "(16..64 allowed)", clen);
	rc = proto_call(c, PROTO_CMD_SIGN_CHALLENGE, chal, clen);
	if (rc != ST_OK)
		return rc;
	n = (size_t)c->rep.len - 1;
	if (n == 0 || n > cap || n > DRV_MAX_SIG)
		return fail(c, ST_E_PROTO, "SIGN_CHALLENGE: signature of %zu bytes "
			    "from %s (buffer %zu)", n, c->tr.name, cap);
	memcpy(sig, c->rep.payload + 1, n);
	*siglen = n;
	return ST_OK;
}

int proto_fuse_read(proto_client *c, unsigned bank, uint8_t out[DRV_FUSE_BANK_LEN])
{
	uint8_t req[1];
	int rc;

	if (bank > 0xff)
		return fail(c, ST_E_INVAL, "FUSE_READ: bank %u out of range", bank);
	req[0] = (uint8_t)bank;
	rc = proto_call(c, PROTO_CMD_FUSE_READ, req, sizeof(req));
	if (rc == ST_OK && (rc = need(c, PROTO_CMD_FUSE_READ, DRV_FUSE_BANK_LEN)) == ST_OK)
		memcpy(out, c->rep.payload + 1, DRV_FUSE_BANK_LEN);
	return rc;
}

/* The burn's replies never came through the noise: read the bank instead
 * of failing.  When it holds value with every word sound, the burn is done
 * (by this request or an earlier one: a repeat burns nothing), and that is
 * what the caller needs to know; otherwise the burn's own error stands. */
static int burn_read_back(proto_client *c, unsigned bank,
			  const uint8_t value[DRV_FUSE_BANK_LEN],
			  uint8_t readback[DRV_FUSE_BANK_LEN], int rc)
{
	uint8_t cur[DRV_FUSE_BANK_LEN], faulty = 0;
	char err[sizeof(c->err)];

	memcpy(err, c->err, sizeof(err));
	if (proto_fuse_read_status(c, bank, cur, &faulty) == ST_OK && !faulty &&
	    !memcmp(cur, value, DRV_FUSE_BANK_LEN)) {
		memcpy(readback, cur, DRV_FUSE_BANK_LEN);
		c->err[0] = '\0';
		return ST_OK;
	}
	memcpy(c->err, err, sizeof(err));
	return rc;
}

int proto_fuse_burn(proto_client *c, unsigned bank,
		    const uint8_t value[DRV_FUSE_BANK_LEN], uint32_t request_id,
		    uint8_t readback[DRV_FUSE_BANK_LEN])
{
	uint8_t req[5 + DRV_FUSE_BANK_LEN];
	int rc;

	if (bank > 0xff)
		return fail(c, ST_E_INVAL, "FUSE_BURN: bank %u out of range", bank);
	proto_put32(req, request_id);
	req[4] = (uint8_t)bank;
	memcpy(req + 5, value, DRV_FUSE_BANK_LEN);
	rc = proto_call(c, PROTO_CMD_FUSE_BURN, req, sizeof(req));
	/* A conflict reply carries the bank too: hand it back for the record. */
	if ((rc == ST_OK || rc == ST_E_FUSE_CONFLICT) &&
	    c->rep.len >= 1 + DRV_FUSE_BANK_LEN)
		memcpy(readback, c->rep.payload + 1, DRV_FUSE_BANK_LEN);
	else if (rc == ST_OK)
		rc = need(c, PROTO_CMD_FUSE_BURN, DRV_FUSE_BANK_LEN);
	else if (rc == ST_E_PROTO)
		rc = burn_read_back(c, bank, value, readback, rc);
	return rc;
}

int proto_fuse_read_status(proto_client *c, unsigned bank,
			   uint8_t out[DRV_FUSE_BANK_LEN], uint8_t *faulty)
{
	int rc = proto_fuse_read(c, bank, out);

	/* v1 devices without the status byte report no faulty words. */
	if (rc == ST_OK)
		*faulty = c->rep.len >= 2 + DRV_FUSE_BANK_LEN ?
			  c->rep.payload[1 + DRV_FUSE_BANK_LEN] : 0;
	return rc;
}

int proto_conditions(proto_client *c, drv_conditions *out)
{
	int rc;

	/* Not a link fault: a programmer too old to measure them. */
	if (!(c->caps & PROTO_CAP_CONDITIONS))
		return fail(c, ST_E_STATE, "the programmer on %s (firmware %s) cannot "
			    "report programming voltage and temperature (no CONDITIONS "
			    "capability): fuses cannot be burned through it", c->tr.name,
			    c->fw_version);
	rc = proto_call(c, PROTO_CMD_CONDITIONS, NULL, 0);

	if (rc == ST_OK && (rc = need(c, PROTO_CMD_CONDITIONS, 4)) == ST_OK) {
		out->vpp_mv = proto_get16(c->rep.payload + 1);
		out->temp_dc = (int16_t)proto_get16(c->rep.payload + 3);
	}
	return rc;
}

int proto_set_lifecycle(proto_client *c, uint8_t state)
{
	uint8_t req[1] = { state };

	return proto_call(c, PROTO_CMD_SET_LIFECYCLE, req, sizeof(req));
}

int proto_release(proto_client *c)
{
	int rc;

	/* Naming the unit makes a repeat harmless: the device releases it
	 * only while it is still the one in the programmer. */
	if (!(c->link & PROTO_LINK_REPEAT) || !c->have_uid)
		return proto_call(c, PROTO_CMD_RELEASE, NULL, 0);
	rc = call(c, PROTO_CMD_RELEASE, c->uid, DRV_UID_LEN, 1);
	if (rc == ST_OK)
		c->have_uid = 0;
	return rc;
}

/* GET_TRANSPORT_KEY is retry-safe: the target keeps one transport key per
 * unit until INJECT_KEY uses it, so a repeat returns the same key. */
int proto_get_transport_key(proto_client *c, uint8_t pub[DRV_P256_POINT_LEN])
{
	int rc = proto_call(c, PROTO_CMD_GET_TRANSPORT_KEY, NULL, 0);

	return rc != ST_OK ? rc : take_point(c, PROTO_CMD_GET_TRANSPORT_KEY, pub);
}

/* Sent once: the target consumes its transport key on the first try. */
int proto_inject_key(proto_client *c, const uint8_t eph[DRV_P256_POINT_LEN],
		     const uint8_t *wrapped, size_t len,
		     uint8_t pub[DRV_P256_POINT_LEN])
{
	uint8_t req[DRV_P256_POINT_LEN + DRV_MAX_WRAPPED];
	int rc;

	if (len == 0 || len > DRV_MAX_WRAPPED)
		return fail(c, ST_E_INVAL, "INJECT_KEY: wrapped key of %zu bytes "
			    "(1..%d allowed)", len, DRV_MAX_WRAPPED);
	memcpy(req, eph, DRV_P256_POINT_LEN);
	memcpy(req + DRV_P256_POINT_LEN, wrapped, len);
	rc = proto_call(c, PROTO_CMD_INJECT_KEY, req, DRV_P256_POINT_LEN + len);
	return rc != ST_OK ? rc : take_point(c, PROTO_CMD_INJECT_KEY, pub);
}

/* ---- Firmware images and attestation (docs/firmware.md) ---- */

int proto_image_info(proto_client *c, unsigned slot, drv_slot_info *out)
{
	uint8_t req[1];
	const uint8_t *p;
	int rc;

	if (slot > 0xff)
		return fail(c, ST_E_INVAL, "IMAGE_INFO: slot %u out of range", slot);
	req[0] = (uint8_t)slot;
	rc = proto_call(c, PROTO_CMD_IMAGE_INFO, req, sizeof(req));
	if (rc != ST_OK || (rc = need(c, PROTO_CMD_IMAGE_INFO, 12 + 2 * DRV_SHA256_LEN)))
		return rc;
	p = c->rep.payload + 1;
	out->capacity = proto_get32(p);
	out->total = proto_get32(p + 4);
	out->stored = proto_get32(p + 8);
	memcpy(out->id, p + 12, DRV_SHA256_LEN);
	memcpy(out->digest, p + 12 + DRV_SHA256_LEN, DRV_SHA256_LEN);
	if (out->total > out->capacity || out->stored > out->total)
		return fail(c, ST_E_PROTO, "IMAGE_INFO: slot %u on %s reports %u of "
			    "%u bytes in a %u-byte slot", slot, c->tr.name,
			    (unsigned)out->stored, (unsigned)out->total,
			    (unsigned)out->capacity);
	return ST_OK;
}

/* Where to go on from: the prefix the slot holds of this very image (same
 * size, same declared SHA-256), when the device's own digest of it is the
 * SHA-256 of the image's first `stored` bytes; else 0 (start over). */
static uint32_t resume_point(const drv_image *img, const drv_slot_info *in)
{
	uint8_t md[DRV_SHA256_LEN];
	unsigned int mdlen = 0;

	if (in->total != img->len || in->stored == 0 || in->stored > img->len ||
	    memcmp(in->id, img->sha256, DRV_SHA256_LEN))
		return 0;
	if (!EVP_Digest(img->data, in->stored, md, &mdlen, EVP_sha256(), NULL) ||
	    memcmp(md, in->digest, DRV_SHA256_LEN))
		return 0;
	return in->stored;
}

int proto_image_write(proto_client *c, const drv_image *img, uint32_t *resumed_from)
{
	uint8_t req[9 + PROTO_IMAGE_CHUNK];
	drv_slot_info in;
	size_t chunk = PROTO_IMAGE_CHUNK, off;
	uint32_t stored;
	int rc;

	*resumed_from = 0;
	if (c->max_payload < 9 + 16)
		return fail(c, ST_E_STATE, "IMAGE_WRITE: the programmer on %s takes "
			    "requests of at most %u bytes: too small for image "
			    "chunks", c->tr.name, (unsigned)c->max_payload);
	if (chunk > (size_t)c->max_payload - 9)
		chunk = (size_t)c->max_payload - 9;
	if ((rc = proto_image_info(c, img->slot, &in)))
		return rc;
	if (img->len > in.capacity)
		return fail(c, ST_E_INVAL, "image of %zu bytes does not fit slot %u "
			    "of the target on %s (%u bytes)", img->len, img->slot,
			    c->tr.name, (unsigned)in.capacity);
	stored = resume_point(img, &in);
	if (!stored || stored != in.stored) {
		/* Another image, or a prefix that is not this image's: the
		 * device starts the slot over (a repeat of the same BEGIN
		 * keeps what the first one started). */
		req[0] = (uint8_t)img->slot;
		proto_put32(req + 1, (uint32_t)img->len);
		memcpy(req + 5, img->sha256, DRV_SHA256_LEN);
		if (in.total == img->len && !memcmp(in.id, img->sha256, DRV_SHA256_LEN) &&
		    in.stored) {
			/* same image, but the prefix is not what we sent: make
			 * the device forget it (BEGIN with size 0), then begin */
			uint8_t clear[5 + DRV_SHA256_LEN] = { (uint8_t)img->slot };

			if ((rc = proto_call(c, PROTO_CMD_IMAGE_BEGIN, clear, sizeof(clear))))
				return rc;
		}
		if ((rc = proto_call(c, PROTO_CMD_IMAGE_BEGIN, req, 5 + DRV_SHA256_LEN)) ||
		    (rc = need(c, PROTO_CMD_IMAGE_BEGIN, 4)))
			return rc;
		stored = proto_get32(c->rep.payload + 1);
		if (stored)
			return fail(c, ST_E_PROTO, "IMAGE_BEGIN: the programmer on %s "
				    "kept %u bytes of slot %u after it was told to "
				    "start over", c->tr.name, (unsigned)stored, img->slot);
	}
	*resumed_from = stored;
	for (off = stored; off < img->len; off += chunk) {
		size_t n = img->len - off < chunk ? img->len - off : chunk;

		req[0] = (uint8_t)img->slot;
		proto_put32(req + 1, (uint32_t)off);
		proto_put32(req + 5, (uint32_t)crc32(0L, img->data + off, (uInt)n));
		memcpy(req + 9, img->data + off, n);
		if ((rc = proto_call(c, PROTO_CMD_IMAGE_WRITE, req, 9 + n)) ||
		    (rc = need(c, PROTO_CMD_IMAGE_WRITE, 4)))
			return rc;
		if (proto_get32(c->rep.payload + 1) < off + n)
			return fail(c, ST_E_PROTO, "IMAGE_WRITE: the programmer on %s "
				    "holds %u bytes of slot %u after the chunk at %zu",
				    c->tr.name, (unsigned)proto_get32(c->rep.payload + 1),
				    img->slot, off);
	}
	return ST_OK;
}

int proto_attest(proto_client *c, const uint8_t *nonce, size_t nlen,
		 uint8_t *stmt, size_t cap, size_t *stmtlen, uint8_t *sig,
		 size_t sigcap, size_t *siglen)
{
	size_t n, s;
	int rc;

	if (nlen < 16 || nlen > 64)
		return fail(c, ST_E_INVAL, "ATTEST: nonce of %zu bytes (16..64 "
			    "allowed)", nlen);
	rc = proto_call(c, PROTO_CMD_ATTEST, nonce, nlen);
	if (rc != ST_OK || (rc = need(c, PROTO_CMD_ATTEST, 2)))
		return rc;
	n = proto_get16(c->rep.payload + 1);
	if ((size_t)c->rep.len < 3 + n || n == 0 || n > cap)
		return fail(c, ST_E_PROTO, "ATTEST: statement of %zu bytes from %s "
			    "(reply %u bytes, buffer %zu)", n, c->tr.name,
			    c->rep.len, cap);
	s = (size_t)c->rep.len - 3 - n;
	if (s == 0 || s > sigcap || s > DRV_MAX_SIG)
		return fail(c, ST_E_PROTO, "ATTEST: signature of %zu bytes from %s",
			    s, c->tr.name);
	memcpy(stmt, c->rep.payload + 3, n);
	memcpy(sig, c->rep.payload + 3 + n, s);
	*stmtlen = n;
	*siglen = s;
	return ST_OK;
}

/* codec.c — COBS framing, frame header and CRC, the resynchronising receiver,
 * and the protocol's name tables.  Pure functions: no I/O, no state. */
#include "device-drivers/proto/proto.h"

#include <string.h>
#include <zlib.h>

#include "base.h"

static const char *const bad_text[] = {
	[PROTO_BAD_NONE] = "no error",
	[PROTO_BAD_COBS] = "bad COBS encoding",
	[PROTO_BAD_SHORT] = "truncated frame",
	[PROTO_BAD_OVERSIZE] = "oversized frame",
	[PROTO_BAD_CRC] = "bad CRC",
	[PROTO_BAD_LENGTH] = "bad length field",
	[PROTO_BAD_VERSION] = "unsupported frame version",
};

static const struct {
	uint8_t cmd;
	const char *name;
} cmd_names[] = {
	{ PROTO_CMD_HELLO, "HELLO" },
	{ PROTO_CMD_IDENTIFY, "IDENTIFY" },
	{ PROTO_CMD_KEYGEN, "KEYGEN" },
	{ PROTO_CMD_GET_PUBKEY, "GET_PUBKEY" },
	{ PROTO_CMD_WRITE_CERT, "WRITE_CERT" },
	{ PROTO_CMD_READ_CERT, "READ_CERT" },
	{ PROTO_CMD_SIGN_CHALLENGE, "SIGN_CHALLENGE" },
	{ PROTO_CMD_FUSE_READ, "FUSE_READ" },
	{ PROTO_CMD_FUSE_BURN, "FUSE_BURN" },
	{ PROTO_CMD_SET_LIFECYCLE, "SET_LIFECYCLE" },
	{ PROTO_CMD_RELEASE, "RELEASE" },
	{ PROTO_CMD_CONDITIONS, "CONDITIONS" },
	{ PROTO_CMD_WRITE_CERT_PART, "WRITE_CERT_PART" },
	{ PROTO_CMD_READ_CERT_PART, "READ_CERT_PART" },
	{ PROTO_CMD_GET_TRANSPORT_KEY, "GET_TRANSPORT_KEY" },
	{ PROTO_CMD_INJECT_KEY, "INJECT_KEY" },
	{ PROTO_CMD_IMAGE_INFO, "IMAGE_INFO" },
	{ PROTO_CMD_IMAGE_BEGIN, "IMAGE_BEGIN" },
	{ PROTO_CMD_IMAGE_WRITE, "IMAGE_WRITE" },
	{ PROTO_CMD_ATTEST, "ATTEST" },
	{ PROTO_CMD_APP_TO_LOADER, "APP_TO_LOADER" },
};

static const struct {
	uint8_t status;
	int err;
	const char *text;
} status_map[] = {
	{ PROTO_ST_OK, ST_OK, "ok" },
	{ PROTO_ST_BAD_FRAME, ST_E_PROTO, "bad frame" },
	{ PROTO_ST_BAD_VERSION, ST_E_VERSION, "unsupported protocol version" },
	{ PROTO_ST_UNKNOWN_CMD, ST_E_PROTO, "unknown command" },
	{ PROTO_ST_BAD_ARG, ST_E_INVAL, "bad argument" },
	{ PROTO_ST_NO_TARGET, ST_E_NO_TARGET, "no target inserted" },
	{ PROTO_ST_NO_KEY, ST_E_STATE, "target has no identity key" },
	{ PROTO_ST_FUSE_CONFLICT, ST_E_FUSE_CONFLICT,
	  "fuse conflict: a bit would have to go 1->0, nothing burned" },
	{ PROTO_ST_LOCKED, ST_E_LOCKED, "target is locked" },
	{ PROTO_ST_INTERNAL, ST_E_DEVICE, "internal programmer error" },
	{ PROTO_ST_BUSY, ST_E_DEVICE, "programmer busy" },
	{ PROTO_ST_NO_CERT, ST_E_NOTFOUND, "no certificate stored" },
	{ PROTO_ST_BAD_STATE, ST_E_STATE, "not allowed in the target's state" },
	{ PROTO_ST_REQ_REUSED, ST_E_INVAL,
	  "fuse request id reused with different data" },
	{ PROTO_ST_TOO_LARGE, ST_E_INVAL, "the image does not fit the slot" },
};

const char *proto_bad_str(int why)
{
	if (why < 0 || (size_t)why >= ST_ARRAY_SIZE(bad_text))
		return "bad frame";
	return bad_text[why];
}

const char *proto_cmd_name(uint8_t cmd)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(cmd_names); i++)
		if (cmd_names[i].cmd == cmd)
			return cmd_names[i].name;
	return "?";
}

const char *proto_status_str(uint8_t status)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(status_map); i++)
		if (status_map[i].status == status)
			return status_map[i].text;
	return "unknown status code";
}

int proto_status_err(uint8_t status)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(status_map); i++)
		if (status_map[i].status == status)
			return status_map[i].err;
	return ST_E_DEVICE;
}

size_t proto_cobs_encode(const uint8_t *in, size_t n, uint8_t *out)
{
	size_t o = 1, code_at = 0;
	uint8_t code = 1;

	for (size_t i = 0; i < n; i++) {
		if (in[i] == 0) {
			out[code_at] = code;
			code_at = o++;
			code = 1;
			continue;
		}
		out[o++] = in[i];
		if (++code == 0xff && i + 1 < n) {
			out[code_at] = code;
			code_at = o++;
			code = 1;
		}
	}
	out[code_at] = code;
	return o;
}

/* COBS decode with a diagnosis: PROTO_BAD_NONE, _COBS or _OVERSIZE. */
static int cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap,
		       size_t *outlen)
{
	size_t i = 0, o = 0;

	while (i < n) {
		uint8_t code = in[i++];

		if (code == 0)
			return PROTO_BAD_COBS;
		for (uint8_t k = 1; k < code; k++) {
			if (i >= n || in[i] == 0)
				return PROTO_BAD_COBS;
			if (o >= cap)
				return PROTO_BAD_OVERSIZE;
			out[o++] = in[i++];
		}
		if (code != 0xff && i < n) {
			if (o >= cap)
				return PROTO_BAD_OVERSIZE;
			out[o++] = 0;
		}
	}
	*outlen = o;
	return PROTO_BAD_NONE;
}

int proto_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap,
		      size_t *outlen)
{
	return cobs_decode(in, n, out, cap, outlen) == PROTO_BAD_NONE ?
	       ST_OK : ST_E_PROTO;
}

int proto_frame_encode(const proto_frame *f, uint8_t *out, size_t cap,
		       size_t *outlen)
{
	uint8_t raw[PROTO_MAX_DECODED];
	size_t n = PROTO_HDR_LEN + f->len;
	size_t enc;

	if (f->len > PROTO_MAX_PAYLOAD || cap < PROTO_MAX_WIRE)
		return ST_E_INVAL;
	raw[0] = f->version;
	raw[1] = f->type;
	proto_put16(raw + 2, f->seq);
	proto_put16(raw + 4, f->len);
	memcpy(raw + PROTO_HDR_LEN, f->payload, f->len);
	proto_put32(raw + n, (uint32_t)crc32(0L, raw, (uInt)n));
	n += PROTO_CRC_LEN;
	enc = proto_cobs_encode(raw, n, out);
	out[enc++] = 0;
	*outlen = enc;
	return ST_OK;
}

int proto_frame_decode(const uint8_t *enc, size_t n, proto_frame *f, int *why)
{
	uint8_t raw[PROTO_MAX_DECODED];
	size_t len;
	int bad;

	bad = cobs_decode(enc, n, raw, sizeof(raw), &len);
	if (bad != PROTO_BAD_NONE)
		goto bad;
	if (len < PROTO_MIN_DECODED) {
		bad = PROTO_BAD_SHORT;
		goto bad;
	}
	if (proto_get32(raw + len - PROTO_CRC_LEN) !=
	    (uint32_t)crc32(0L, raw, (uInt)(len - PROTO_CRC_LEN))) {
		bad = PROTO_BAD_CRC;
		goto bad;
	}
	/* The CRC holds, so the header can be trusted from here on. */
	f->version = raw[0];
	f->type = raw[1];
	f->seq = proto_get16(raw + 2);
	f->len = 0;
	if (f->version != PROTO_VERSION) {
		if (why)
			*why = PROTO_BAD_VERSION;
		return ST_E_VERSION;
	}
	if (proto_get16(raw + 4) > PROTO_MAX_PAYLOAD) {
		bad = PROTO_BAD_OVERSIZE;
		goto bad;
	}
	if ((size_t)proto_get16(raw + 4) != len - PROTO_MIN_DECODED) {
		bad = PROTO_BAD_LENGTH;
		goto bad;
	}
	f->len = proto_get16(raw + 4);
	memcpy(f->payload, raw + PROTO_HDR_LEN, f->len);
	if (why)
		*why = PROTO_BAD_NONE;
	return ST_OK;
bad:
	if (why)
		*why = bad;
	return ST_E_PROTO;
}

void proto_rx_init(proto_rx *rx)
{
	rx->len = 0;
	rx->overflow = 0;
}

int proto_rx_byte(proto_rx *rx, uint8_t b, proto_frame *f, int *why)
{
	int rc;

	if (b != 0) {
		if (rx->len < sizeof(rx->buf))
			rx->buf[rx->len++] = b;
		else
			rx->overflow = 1;
		return 0;
	}
	if (rx->overflow) {
		proto_rx_init(rx);
		if (why)
			*why = PROTO_BAD_OVERSIZE;
		return ST_E_PROTO;
	}
	if (rx->len == 0)
		return 0;
	rc = proto_frame_decode(rx->buf, rx->len, f, why);
	proto_rx_init(rx);
	return rc == ST_OK ? 1 : rc;
}

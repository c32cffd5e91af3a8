/* fuzz_proto.c — the protocol decoders under arbitrary input. */
#include "tests/fuzz/fuzz_proto.h"

#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "device-drivers/proto/proto.h"

/* A loopback "programmer": whatever request arrives is answered with the
 * fuzz payload in a well-formed reply frame (same seq, reply type). */
struct fake {
	const uint8_t *payload;
	size_t len;
	uint8_t wire[PROTO_MAX_WIRE];
	size_t wlen, wpos;
	proto_frame f;
	proto_rx rx;
};

static int fake_write(void *ctx, const uint8_t *buf, size_t n, int timeout_ms)
{
	struct fake *k = ctx;

	(void)timeout_ms;
	proto_rx_init(&k->rx);
	for (size_t i = 0; i < n; i++) {
		int why;

		if (proto_rx_byte(&k->rx, buf[i], &k->f, &why) == 1) {
			k->f.type |= PROTO_REPLY;
			k->f.len = (uint16_t)(k->len > PROTO_MAX_PAYLOAD ?
					      PROTO_MAX_PAYLOAD : k->len);
			memcpy(k->f.payload, k->payload, k->f.len);
			if (proto_frame_encode(&k->f, k->wire, sizeof(k->wire),
					       &k->wlen) != ST_OK)
				abort();
			k->wpos = 0;
		}
	}
	return ST_OK;
}

static int fake_read(void *ctx, uint8_t *buf, size_t cap, int timeout_ms)
{
	struct fake *k = ctx;
	size_t n = k->wlen - k->wpos;

	(void)timeout_ms;
	if (n == 0)
		return ST_E_UNPLUGGED; /* answered once: end the call now */
	if (n > cap)
		n = cap;
	memcpy(buf, k->wire + k->wpos, n);
	k->wpos += n;
	return (int)n;
}

static void raw_bytes(const uint8_t *data, size_t size)
{
	proto_rx *rx = malloc(sizeof(*rx));
	proto_frame *f = malloc(sizeof(*f)), *g = malloc(sizeof(*g));
	uint8_t *wire = malloc(PROTO_MAX_WIRE);
	size_t n;

	if (!rx || !f || !g || !wire)
		abort();
	proto_rx_init(rx);
	for (size_t i = 0; i < size; i++) {
		int why = -1, rc = proto_rx_byte(rx, data[i], f, &why);

		if (rc == 0)
			continue;
		if (rc == 1) {
			/* A good frame survives a round trip unchanged. */
			if (why != PROTO_BAD_NONE || f->len > PROTO_MAX_PAYLOAD)
				abort();
			if (proto_frame_encode(f, wire, PROTO_MAX_WIRE, &n) != ST_OK ||
			    proto_frame_decode(wire, n - 1, g, NULL) != ST_OK ||
			    g->len != f->len || g->seq != f->seq || g->type != f->type ||
			    memcmp(g->payload, f->payload, f->len))
				abort();
		} else if (rc != ST_E_PROTO && rc != ST_E_VERSION) {
			abort();
		} else if (why <= PROTO_BAD_NONE || why > PROTO_BAD_VERSION ||
			   !proto_bad_str(why)[0]) {
			abort();
		}
	}
	/* The whole input as one frame body, too. */
	if (size <= PROTO_MAX_ENCODED)
		(void)proto_frame_decode(data, size, f, NULL);
	free(rx);
	free(f);
	free(g);
	free(wire);
}

static void reply(uint8_t sel, const uint8_t *data, size_t size)
{
	struct fake *k = calloc(1, sizeof(*k));
	proto_client *c = malloc(sizeof(*c));
	proto_transport t = { fake_read, fake_write, NULL, "fuzz" };
	uint8_t pub[DRV_P256_POINT_LEN], bank[DRV_FUSE_BANK_LEN], chal[32] = { 1 };
	uint8_t *buf = malloc(DRV_MAX_CERT);
	size_t len = 0;
	drv_info info;
	int rc = ST_OK;

	if (!k || !c || !buf)
		abort();
	k->payload = data;
	k->len = size;
	t.ctx = k;
	proto_client_init(c, &t, 50, -1);
	switch (sel % 11) {
	case 0: rc = proto_hello(c); break;
	case 1: rc = proto_identify(c, &info); break;
	case 2: rc = proto_keygen(c, pub); break;
	case 3: rc = proto_get_pubkey(c, pub); break;
	case 4: rc = proto_write_cert(c, chal, sizeof(chal)); break;
	case 5: rc = proto_read_cert(c, buf, DRV_MAX_CERT, &len);
		if (rc == ST_OK && len > DRV_MAX_CERT)
			abort();
		break;
	case 6: rc = proto_sign_challenge(c, chal, sizeof(chal), buf, DRV_MAX_SIG, &len);
		if (rc == ST_OK && (len == 0 || len > DRV_MAX_SIG))
			abort();
		break;
	case 7: rc = proto_fuse_read(c, 0, bank); break;
	case 8: rc = proto_fuse_burn(c, 0, bank, 7, bank); break;
	case 9: rc = proto_set_lifecycle(c, 1); break;
	case 10: rc = proto_release(c); break;
	}
	/* Every failure carries words for the operator. */
	if (rc != ST_OK && !c->err[0])
		abort();
	if (sel % 11 == 1 && rc == ST_OK &&
	    (strlen(info.model) >= sizeof(info.model) || strlen(info.uid_hex) != 32))
		abort();
	if (sel % 11 == 0 && rc == ST_OK &&
	    (c->max_payload > PROTO_MAX_PAYLOAD || strlen(c->fw_version) >= 32))
		abort();
	free(buf);
	free(c);
	free(k);
}

void fuzz_proto_one(const uint8_t *data, size_t size)
{
	if (size == 0)
		return;
	if (data[0] & 1)
		reply((uint8_t)(data[0] >> 1), data + 1, size - 1);
	else
		raw_bytes(data + 1, size - 1);
}

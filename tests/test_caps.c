/* test_caps.c — capability negotiation on the host side: after HELLO the
 * client refuses commands the programmer did not offer, with words for the
 * operator, and never sends them (a loopback "programmer" answers). */
#include <criterion/criterion.h>
#include <string.h>

#include "base.h"
#include "device-drivers/proto/proto.h"

/* A programmer that offers `caps` and answers every other command OK. */
struct loop {
	uint32_t caps;
	int sent[256];
	proto_rx rx;
	proto_frame f;
	uint8_t wire[PROTO_MAX_WIRE];
	size_t wlen, wpos;
};

static int loop_write(void *ctx, const uint8_t *buf, size_t n, int timeout_ms)
{
	struct loop *l = ctx;

	(void)timeout_ms;
	for (size_t i = 0; i < n; i++) {
		int why;

		if (proto_rx_byte(&l->rx, buf[i], &l->f, &why) != 1)
			continue;
		l->sent[l->f.type]++;
		l->f.type |= PROTO_REPLY;
		l->f.payload[0] = PROTO_ST_OK;
		l->f.len = 1;
		if (l->f.type == (PROTO_CMD_HELLO | PROTO_REPLY)) {
			l->f.payload[1] = PROTO_VERSION;
			proto_put32(l->f.payload + 2, l->caps);
			proto_put16(l->f.payload + 6, PROTO_MAX_PAYLOAD);
			l->f.payload[8] = 3;
			memcpy(l->f.payload + 9, "fw1", 3);
			l->f.len = 12;
		}
		cr_assert_eq(proto_frame_encode(&l->f, l->wire, sizeof(l->wire),
						&l->wlen), ST_OK);
		l->wpos = 0;
	}
	return ST_OK;
}

static int loop_read(void *ctx, uint8_t *buf, size_t cap, int timeout_ms)
{
	struct loop *l = ctx;
	size_t n = l->wlen - l->wpos;

	(void)timeout_ms;
	if (n == 0)
		return 0;
	if (n > cap)
		n = cap;
	memcpy(buf, l->wire + l->wpos, n);
	l->wpos += n;
	return (int)n;
}

Test(caps, commands_outside_the_negotiated_set_are_refused)
{
	static struct loop l;
	static proto_client c;
	proto_transport t = { loop_read, loop_write, &l, "loop0" };
	uint8_t bank[DRV_FUSE_BANK_LEN];

	/* A manual fixture: no feeder (RELEASE) and no fuses. */
	l.caps = PROTO_CAPS_V1 & ~(PROTO_CAP_RELEASE | PROTO_CAP_FUSES);
	proto_rx_init(&l.rx);
	proto_client_init(&c, &t, 200, -1);
	cr_assert_eq(proto_hello(&c), ST_OK, "%s", c.err);
	cr_assert_eq(c.caps, l.caps);
	cr_assert_eq(proto_set_lifecycle(&c, 1), ST_OK, "%s", c.err);
	cr_assert_eq(proto_release(&c), ST_E_STATE);
	cr_assert(strstr(c.err, "RELEASE") && strstr(c.err, "loop0") &&
		  strstr(c.err, "does not offer"), "%s", c.err);
	cr_assert_eq(proto_fuse_read(&c, 0, bank), ST_E_STATE);
	cr_assert(strstr(c.err, "FUSE_READ"), "%s", c.err);
	/* Refused on the host: never sent to the programmer. */
	cr_assert_eq(l.sent[PROTO_CMD_RELEASE], 0);
	cr_assert_eq(l.sent[PROTO_CMD_FUSE_READ], 0);
	cr_assert_eq(l.sent[PROTO_CMD_SET_LIFECYCLE], 1);
}

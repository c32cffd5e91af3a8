/* core.c — the simulated programmer's protocol engine, independent of the
 * line it sits on: bytes in (sim_feed), frames served through the fault
 * table and target.c, bytes out through sim_send_raw (the pty in main.c, or
 * a USB bulk IN queue when the simulator runs as a umockdev device; see
 * tests/fixtures/fx_usbsim.c). */
#include "devsim/sim.h"

#include <errno.h>
#include <openssl/sha.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base.h"

void sim_log(const struct sim *s, const char *fmt, ...)
{
	va_list ap;

	if (!s->verbose)
		return;
	va_start(ap, fmt);
	fputs("station-devsim: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

void sim_seed(struct sim *s, const char *seed)
{
	uint8_t md[SHA256_DIGEST_LENGTH];

	SHA256((const uint8_t *)seed, strlen(seed), md);
	memcpy(&s->rng, md, sizeof(s->rng));
	if (!s->rng)
		s->rng = 0x9e3779b97f4a7c15ull;
}

uint64_t sim_rand(struct sim *s)
{
	s->rng ^= s->rng >> 12;
	s->rng ^= s->rng << 25;
	s->rng ^= s->rng >> 27;
	return s->rng * 0x2545f4914f6cdd1dull;
}

void sim_sleep_us(unsigned long us)
{
	struct timespec t = { .tv_sec = (time_t)(us / 1000000),
			      .tv_nsec = (long)(us % 1000000) * 1000L };

	while (nanosleep(&t, &t) < 0 && errno == EINTR)
		;
}

/* --baud: n bytes take 10 bit times each on a real UART (start, 8 data,
 * stop); a pty moves them at once. */
static void wire_time(const struct sim *s, size_t n)
{
	if (s->baud)
		sim_sleep_us((unsigned long)((uint64_t)n * 10 * 1000000 / s->baud));
}

/* Write to the pty master; gives up after a second if nobody reads. */
static int pty_send(struct sim *s, const uint8_t *buf, size_t n)
{
	int64_t deadline = st_now_ms() + 1000;
	size_t off = 0;

	while (off < n) {
		struct pollfd pfd = { .fd = s->master, .events = POLLOUT };
		int64_t left = deadline - st_now_ms();
		ssize_t w;

		if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
			sim_log(s, "nobody reads the line: reply dropped");
			return -1;
		}
		w = write(s->master, buf + off, n - off);
		if (w > 0)
			off += (size_t)w;
		else if (w < 0 && errno != EINTR && errno != EAGAIN)
			return -1;
	}
	return 0;
}

int sim_send_raw(struct sim *s, const uint8_t *buf, size_t n)
{
	size_t keep = n;
	int rc;

	if (s->dropped)
		return -1;
	/* A fault may cut the line part-way through these bytes. */
	if (s->fault->on_send && s->fault->on_send(s, &keep)) {
		s->dropped = 1;
		sim_log(s, "link dropped after %zu of %zu bytes", keep, n);
	}
	if (keep == 0)
		return -1;
	wire_time(s, keep);
	rc = s->send ? s->send(s, buf, keep) : pty_send(s, buf, keep);
	return s->dropped ? -1 : rc;
}

/* Sleep ms milliseconds (latency faults). */
void sim_sleep_ms(unsigned ms)
{
	struct timespec t = { .tv_sec = ms / 1000,
			      .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&t, &t) < 0 && errno == EINTR)
		;
}

/* One frame ended on the line: let the fault look, then serve it. */
static void on_frame(struct sim *s, int rc, int why)
{
	size_t n;

	if (s->dead)
		return; /* browned out: nothing answers until a restart */
	if (s->fault->on_frame && s->fault->on_frame(s, rc == 1 ? &s->req : NULL))
		return;
	if (rc == ST_E_VERSION) {
		/* Intact but from the future: say which versions we speak. */
		s->rep.version = PROTO_VERSION;
		s->rep.type = s->req.type | PROTO_REPLY;
		s->rep.seq = s->req.seq;
		s->rep.len = 3;
		s->rep.payload[0] = PROTO_ST_BAD_VERSION;
		s->rep.payload[1] = PROTO_VERSION;
		s->rep.payload[2] = PROTO_VERSION;
	} else if (rc < 0 && why == PROTO_BAD_LENGTH) {
		/* CRC held, so seq is trustworthy: tell the host. */
		s->rep.version = PROTO_VERSION;
		s->rep.type = s->req.type | PROTO_REPLY;
		s->rep.seq = s->req.seq;
		s->rep.len = 1;
		s->rep.payload[0] = PROTO_ST_BAD_FRAME;
	} else if (rc < 0 && !(s->link_caps & s->host_link & PROTO_LINK_NAK)) {
		/* Cannot trust seq or type: stay silent, the host times out
		 * and retries what is safe to retry. */
		sim_log(s, "dropped a frame: %s", proto_bad_str(why));
		return;
	} else if (rc < 0) {
		/* The host understands NAKs: tell it now that its frame did
		 * not arrive readable, so it asks again without waiting. */
		sim_log(s, "NAK for a frame: %s", proto_bad_str(why));
		s->rep.version = PROTO_VERSION;
		s->rep.type = PROTO_NAK_TYPE;
		s->rep.seq = 0;
		s->rep.len = 2;
		s->rep.payload[0] = PROTO_ST_BAD_FRAME;
		s->rep.payload[1] = (uint8_t)why;
	} else if (s->req.type & PROTO_REPLY) {
		return; /* a reply sent to us: an echoing line, ignore */
	} else {
		sim_handle(s, &s->req, &s->rep);
		if (s->dead)
			return;
		sim_log(s, "%s seq %u -> status %u", proto_cmd_name(s->req.type),
			s->req.seq, s->rep.payload[0]);
	}
	if (proto_frame_encode(&s->rep, s->wire, sizeof(s->wire), &n) != ST_OK)
		return;
	/* A second delimiter ends the reply even when noise hit the first. */
	s->wire[n++] = 0;
	if (s->fault->on_reply)
		s->fault->on_reply(s, s->wire, &n);
	sim_send_raw(s, s->wire, n);
}

void sim_feed(struct sim *s, uint8_t *buf, size_t n)
{
	wire_time(s, n);
	if (s->fault->on_bytes_in)
		s->fault->on_bytes_in(s, buf, n);
	for (size_t i = 0; i < n && !s->dropped; i++) {
		int why = PROTO_BAD_NONE;
		int rc = proto_rx_byte(&s->rx, buf[i], &s->req, &why);

		if (rc != 0)
			on_frame(s, rc, why);
	}
}

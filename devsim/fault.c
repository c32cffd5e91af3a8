/* fault.c — simulated misbehaviour, one row per fault.  Every random choice
 * comes from the seeded generator in struct sim, so a failing test replays
 * byte for byte.  "corrupt:N" shows the shape: a setup for the argument, a
 * hook for the bytes.  Link faults: "noise:RATE" (bytes corrupted at a
 * seeded rate, both directions), "drop:N" (the line dies after N bytes out),
 * "latency:MS" (every answer late).  Fuse faults ("brownout:K", "stuck:B:B:B",
 * "slowburn:MS") act per programmed word through on_burn_word;
 * "cutread:K" pulls the cable at a fuse read-back. */
#include "devsim/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/ec.h>
#include <openssl/evp.h>

#include "base.h"

/* mute: a programmer that is powered off or on another port. */
static int mute_frame(struct sim *s, const proto_frame *req)
{
	sim_log(s, "mute: ignoring %s", req ? proto_cmd_name(req->type) : "bad frame");
	return 1;
}

/* garbage: a line at the wrong baud rate or with a broken ground: every
 * request gets 8..71 random non-zero bytes and a delimiter. */
static int garbage_frame(struct sim *s, const proto_frame *req)
{
	uint8_t junk[72];
	size_t n = 8 + (size_t)(sim_rand(s) % 64);

	(void)req;
	for (size_t i = 0; i < n; i++)
		junk[i] = (uint8_t)(1 + sim_rand(s) % 255);
	junk[n++] = 0;
	sim_send_raw(s, junk, n);
	return 1;
}

/* corrupt:N — a noisy line: every Nth reply (the 1st, N+1th, ...) gets one
 * seeded random bit flipped after the programmer has acted, so the host
 * sees a garbled reply to a command that did happen (default N = 2). */
static int corrupt_setup(struct sim *s, const char *arg)
{
	char *end;

	s->fault_n = 2;
	if (arg) {
		s->fault_n = strtoul(arg, &end, 10);
		if (*end || s->fault_n == 0) {
			fprintf(stderr, "station-devsim: corrupt:N needs N >= 1\n");
			return -1;
		}
	}
	return 0;
}

static void corrupt_reply(struct sim *s, uint8_t *wire, size_t *len)
{
	size_t at;

	if (s->fault_count++ % s->fault_n != 0 || *len < 2)
		return;
	at = (size_t)(sim_rand(s) % (*len - 1)); /* keep the delimiter */
	wire[at] ^= (uint8_t)(1u << (sim_rand(s) % 8));
	sim_log(s, "corrupt: flipped a bit of byte %zu", at);
}

/* noise:RATE — a noisy line: each byte in either direction is replaced by
 * a different seeded random byte with probability RATE ("1%" or "0.01").
 * Any byte may be hit, delimiters too, so the receivers' resync is used. */
static int noise_setup(struct sim *s, const char *arg)
{
	char *end;
	double v;

	if (!arg) {
		fprintf(stderr, "station-devsim: noise:RATE needs a rate (1%% or 0.01)\n");
		return -1;
	}
	v = strtod(arg, &end);
	if (end != arg && *end == '%') {
		v /= 100.0;
		end++;
	}
	if (end == arg || *end || !(v >= 0.0 && v <= 1.0)) {
		fprintf(stderr, "station-devsim: bad noise rate '%s' (0..100%%)\n", arg);
		return -1;
	}
	s->fault_rate = v;
	return 0;
}

static void noise_bytes(struct sim *s, uint8_t *buf, size_t n)
{
	/* 2^53 steps: the rate compares against a uniform double in [0,1). */
	for (size_t i = 0; i < n; i++) {
		if ((double)(sim_rand(s) >> 11) * 0x1p-53 >= s->fault_rate)
			continue;
		buf[i] ^= (uint8_t)(1 + sim_rand(s) % 255);
		s->fault_count++;
	}
}

static void noise_reply(struct sim *s, uint8_t *wire, size_t *len)
{
	noise_bytes(s, wire, *len);
}

/* drop:N — the cable is pulled after the programmer has sent N bytes (a
 * reply may be cut in half); the simulator then hangs up and exits 3.  The
 * state file keeps whatever the target did, so a restart is a re-plug. */
static int drop_setup(struct sim *s, const char *arg)
{
	char *end;

	if (!arg) {
		fprintf(stderr, "station-devsim: drop:N needs a byte count\n");
		return -1;
	}
	s->fault_n = strtoul(arg, &end, 10);
	if (end == arg || *end) {
		fprintf(stderr, "station-devsim: bad drop:N '%s'\n", arg);
		return -1;
	}
	return 0;
}

static int drop_send(struct sim *s, size_t *n)
{
	if (s->bytes_out + *n > s->fault_n) {
		*n = (size_t)(s->fault_n - s->bytes_out);
		s->bytes_out = s->fault_n;
		return 1;
	}
	s->bytes_out += *n;
	return 0;
}

/* latency:MS — a slow programmer: each request is answered MS plus a
 * seeded 0..MS/4 milliseconds late (timeout and throughput tests). */
static int latency_setup(struct sim *s, const char *arg)
{
	char *end;

	s->fault_n = arg ? strtoul(arg, &end, 10) : 0;
	if (!arg || end == arg || *end || s->fault_n > 60000) {
		fprintf(stderr, "station-devsim: latency:MS needs 0..60000 ms\n");
		return -1;
	}
	return 0;
}

static int latency_frame(struct sim *s, const proto_frame *req)
{
	unsigned ms = (unsigned)s->fault_n;

	(void)req;
	if (ms >= 4)
		ms += (unsigned)(sim_rand(s) % (ms / 4 + 1));
	sim_sleep_ms(ms);
	return 0;
}

/* Parse "A[:B[:C]]" unsigned numbers into out (n at most); count them. */
static int parse_nums(const char *arg, unsigned long *out, int n)
{
	int got = 0;
	char *end;

	while (arg && *arg && got < n) {
		out[got++] = strtoul(arg, &end, 10);
		if (end == arg || (*end && *end != ':'))
			return -1;
		arg = *end ? end + 1 : end;
	}
	return arg && *arg ? -1 : got;
}

/* lose:CMD[:N] — the reply to the N-th request CMD (a name as in
 * docs/protocol.md, e.g. KEYGEN; N default 1) never reaches the host,
 * after the programmer has acted on it: a reply lost on the line. */
static int lose_setup(struct sim *s, const char *arg)
{
	char name[32];
	const char *colon = arg ? strchr(arg, ':') : NULL;
	size_t n = colon ? (size_t)(colon - arg) : arg ? strlen(arg) : 0;

	s->fault_n = 1;
	s->fault_arg[0] = 0x100; /* no command */
	if (n && n < sizeof(name)) {
		memcpy(name, arg, n);
		name[n] = '\0';
		for (unsigned c = 1; c < 0x100; c++)
			if (!strcmp(proto_cmd_name((uint8_t)c), name))
				s->fault_arg[0] = c;
	}
	if (s->fault_arg[0] == 0x100 ||
	    (colon && (parse_nums(colon + 1, &s->fault_n, 1) != 1 || !s->fault_n))) {
		fprintf(stderr, "station-devsim: lose:CMD[:N] needs a command name "
			"(e.g. KEYGEN) and N >= 1\n");
		return -1;
	}
	return 0;
}

static int lose_frame(struct sim *s, const proto_frame *req)
{
	s->fault_arg[1] = 0;
	if (req && !(req->type & PROTO_REPLY) && req->type == s->fault_arg[0] &&
	    ++s->fault_count == s->fault_n) {
		s->fault_arg[1] = 1;
		sim_log(s, "lose: the reply to %s seq %u will be lost",
			proto_cmd_name(req->type), req->seq);
	}
	return 0;
}

static void lose_reply(struct sim *s, uint8_t *wire, size_t *len)
{
	(void)wire;
	if (s->fault_arg[1])
		*len = 0;
	s->fault_arg[1] = 0;
}

/* brownout:K — the supply dies while the K-th fuse word of this power-up
 * is being programmed (0 = the first): words before it are burned, word K
 * has only its first copy, the rest of the burn never happens, and the
 * programmer stays silent until it is restarted (default K = 0). */
static int brownout_setup(struct sim *s, const char *arg)
{
	s->fault_n = 0;
	if (arg && parse_nums(arg, &s->fault_n, 1) != 1) {
		fprintf(stderr, "station-devsim: brownout:K needs a word count K >= 0\n");
		return -1;
	}
	return 0;
}

static int brownout_word(struct sim *s, unsigned bank, unsigned word,
			 uint8_t val[SIM_FUSE_WORD])
{
	(void)bank;
	(void)word;
	(void)val;
	return s->fault_count++ == s->fault_n;
}

/* stuck:BANK:BYTE:BIT — one fuse bit of every unit that never blows: it
 * reads 0 in both copies whatever is burned. */
static int stuck_setup(struct sim *s, const char *arg)
{
	if (parse_nums(arg, s->fault_arg, 3) != 3 || s->fault_arg[0] >= SIM_FUSE_BANKS ||
	    s->fault_arg[1] >= DRV_FUSE_BANK_LEN || s->fault_arg[2] > 7) {
		fprintf(stderr, "station-devsim: stuck:BANK:BYTE:BIT needs bank 0..%d, "
			"byte 0..%d, bit 0..7\n", SIM_FUSE_BANKS - 1, DRV_FUSE_BANK_LEN - 1);
		return -1;
	}
	return 0;
}

static int stuck_word(struct sim *s, unsigned bank, unsigned word,
		      uint8_t val[SIM_FUSE_WORD])
{
	unsigned byte = (unsigned)s->fault_arg[1];

	if (bank == s->fault_arg[0] && byte / SIM_FUSE_WORD == word)
		val[byte % SIM_FUSE_WORD] &= (uint8_t)~(1u << s->fault_arg[2]);
	return 0;
}

/* slowburn:MS — every fuse word, and the lifecycle fuse, takes MS
 * milliseconds to program (kill tests stop the station in the middle of a
 * burn; default 100). */
static int slowburn_setup(struct sim *s, const char *arg)
{
	s->fault_n = 100;
	if (arg && (parse_nums(arg, &s->fault_n, 1) != 1 || s->fault_n > 1000)) {
		fprintf(stderr, "station-devsim: slowburn:MS needs MS 0..1000\n");
		return -1;
	}
	s->lifecycle_ms = s->fault_n;
	return 0;
}

static int slowburn_word(struct sim *s, unsigned bank, unsigned word,
			 uint8_t val[SIM_FUSE_WORD])
{
	struct timespec ts = { .tv_sec = (time_t)(s->fault_n / 1000),
			       .tv_nsec = (long)(s->fault_n % 1000) * 1000000L };

	(void)val;
	sim_log(s, "slowburn: bank %u word %u", bank, word);
	while (nanosleep(&ts, &ts) < 0)
		;
	return 0;
}

/* cutread:K — the cable is pulled right after the K-th fuse burn of this
 * power-up (default 1) was answered: the fuses are burned, the read-back
 * that follows gets no answer, and the simulator hangs up and exits 3
 * (the link is gone, the device is not: a restart is a re-plug). */
static int cutread_setup(struct sim *s, const char *arg)
{
	s->fault_n = 1;
	if (arg && (parse_nums(arg, &s->fault_n, 1) != 1 || s->fault_n == 0)) {
		fprintf(stderr, "station-devsim: cutread:K needs K >= 1\n");
		return -1;
	}
	return 0;
}

static int cutread_frame(struct sim *s, const proto_frame *req)
{
	if (!req)
		return 0;
	if (req->type == PROTO_CMD_FUSE_BURN)
		s->fault_count++;
	if (req->type != PROTO_CMD_FUSE_READ || s->fault_count < s->fault_n)
		return 0;
	sim_log(s, "cutread: cable pulled before the read-back of burn %lu",
		(unsigned long)s->fault_count);
	s->dropped = 1;
	return 1;
}

/* wrongkey — a programmer that reports another public key than the one
 * the chip made (a fresh P-256 point whose private key nobody keeps): the
 * attack a proof of possession exists for.  The chip keeps and signs with
 * its real key. */
static void wrongkey_keygen(struct sim *s, uint8_t pub[DRV_P256_POINT_LEN])
{
	EVP_PKEY *other = EVP_EC_gen("P-256");

	if (other && sim_pubkey_point(other, pub) == 0)
		sim_log(s, "wrongkey: reported another public key");
	EVP_PKEY_free(other);
}

/* imgflip — the flash takes the image's last chunk with one bit flipped
 * (a weak cell): the chip's own digest then differs from the image the
 * host sent, which the station must catch before any fuse. */
static void imgflip_chunk(struct sim *s, struct sim_image *im, uint32_t off,
			  size_t n)
{
	if (off + n != im->total)
		return;
	im->data[im->total / 2] ^= 0x10;
	sim_log(s, "imgflip: bit 4 of byte %u flipped in flash", im->total / 2);
}

/* slowimage:MS — each image chunk takes MS ms to program (kill tests). */
static int slowimage_setup(struct sim *s, const char *arg)
{
	s->fault_n = 50;
	if (arg && (parse_nums(arg, &s->fault_n, 1) != 1 || s->fault_n > 10000)) {
		fprintf(stderr, "station-devsim: slowimage:MS needs MS 0..10000\n");
		return -1;
	}
	return 0;
}

static void slowimage_chunk(struct sim *s, struct sim_image *im, uint32_t off,
			    size_t n)
{
	(void)im;
	sim_log(s, "slowimage: chunk at %u (%zu bytes)", off, n);
	sim_sleep_ms((unsigned)s->fault_n);
}

/* attestkey — the statement is signed with another key than the identity
 * key the station certified (a swapped chip, a programmer answering for
 * it): the signature does not verify under the unit's certificate. */
static void attestkey_attest(struct sim *s, struct sim_unit *u, uint8_t *nonce,
			     size_t *nlen, EVP_PKEY **other)
{
	(void)u;
	(void)nonce;
	(void)nlen;
	*other = EVP_EC_gen("P-256");
	sim_log(s, "attestkey: signing the statement with another key");
}

/* replay — the statement carries the nonce of the previous ATTEST (32
 * zero bytes before the first): a recorded answer played back, signed by
 * the right key.  Only the station's fresh nonce tells it apart. */
static void replay_attest(struct sim *s, struct sim_unit *u, uint8_t *nonce,
			  size_t *nlen, EVP_PKEY **other)
{
	(void)other;
	if (u->last_nonce_len) {
		memcpy(nonce, u->last_nonce, u->last_nonce_len);
		*nlen = u->last_nonce_len;
	} else {
		memset(nonce, 0, 32);
		*nlen = 32;
	}
	sim_log(s, "replay: answering with an old nonce");
}

static const struct sim_fault faults[] = {
	{ .name = "none", .help = "a healthy programmer (default)" },
	{ .name = "mute", .help = "never answer (timeout tests)",
	  .on_frame = mute_frame },
	{ .name = "garbage", .help = "answer every request with random bytes",
	  .on_frame = garbage_frame },
	{ .name = "corrupt", .help = "corrupt:N  flip a bit in every Nth reply "
	  "(1st, N+1th, ...)", .setup = corrupt_setup, .on_reply = corrupt_reply },
	{ .name = "noise", .help = "noise:RATE  corrupt bytes both ways at RATE "
	  "(1% or 0.01), seeded", .setup = noise_setup, .on_reply = noise_reply,
	  .on_bytes_in = noise_bytes },
	{ .name = "drop", .help = "drop:N  cut the line after N bytes sent, exit 3",
	  .setup = drop_setup, .on_send = drop_send },
	{ .name = "lose", .help = "lose:CMD[:N]  the reply to the Nth CMD (e.g. "
	  "KEYGEN; default 1st) is lost after acting", .setup = lose_setup,
	  .on_frame = lose_frame, .on_reply = lose_reply },
	{ .name = "latency", .help = "latency:MS  answer MS (+0..25%, seeded) late",
	  .setup = latency_setup, .on_frame = latency_frame },
	{ .name = "brownout", .help = "brownout:K  power dies while programming "
	  "fuse word K (0 = first); silent until restarted", .setup = brownout_setup,
	  .on_burn_word = brownout_word },
	{ .name = "stuck", .help = "stuck:BANK:BYTE:BIT  that fuse bit never blows",
	  .setup = stuck_setup, .on_burn_word = stuck_word },
	{ .name = "slowburn", .help = "slowburn:MS  each fuse word takes MS ms "
	  "(default 100)", .setup = slowburn_setup, .on_burn_word = slowburn_word },
	{ .name = "cutread", .help = "cutread:K  cable pulled at the read-back "
	  "after the K-th fuse burn (default 1), exit 3", .setup = cutread_setup,
	  .on_frame = cutread_frame },
	{ .name = "wrongkey", .help = "KEYGEN reports another public key than the "
	  "chip holds", .on_keygen = wrongkey_keygen },
	{ .name = "imgflip", .help = "the flash stores the last image chunk with "
	  "one bit flipped", .on_image_chunk = imgflip_chunk },
	{ .name = "slowimage", .help = "slowimage:MS  each image chunk takes MS ms "
	  "(default 50)", .setup = slowimage_setup, .on_image_chunk = slowimage_chunk },
	{ .name = "attestkey", .help = "ATTEST signs with another key than the "
	  "identity key", .on_attest = attestkey_attest },
	{ .name = "replay", .help = "ATTEST answers with the previous nonce (a "
	  "recorded answer)", .on_attest = replay_attest },
};

const struct sim_fault *sim_fault_find(const char *name)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(faults); i++)
		if (!strcmp(faults[i].name, name))
			return &faults[i];
	return NULL;
}

void sim_fault_list(void)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(faults); i++)
		fprintf(stderr, "  %-10s %s\n", faults[i].name, faults[i].help);
}

/* fault.c — simulated misbehaviour, one row per fault.  Every random choice
 * comes from the seeded generator in struct sim, so a failing test replays
 * byte for byte.  Planned rows (issue 4): "drop:N" (close the line after N frames),
 * "brownout" (persist half a burn, then die), "latency:MS".  "corrupt:N"
 * below shows the shape: a setup for the argument, a hook for the bytes. */
#include "device-drivers/sim/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static const struct sim_fault faults[] = {
	{ .name = "none", .help = "a healthy programmer (default)" },
	{ .name = "mute", .help = "never answer (timeout tests)",
	  .on_frame = mute_frame },
	{ .name = "garbage", .help = "answer every request with random bytes",
	  .on_frame = garbage_frame },
	{ .name = "corrupt", .help = "corrupt:N  flip a bit in every Nth reply "
	  "(1st, N+1th, ...)", .setup = corrupt_setup, .on_reply = corrupt_reply },
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

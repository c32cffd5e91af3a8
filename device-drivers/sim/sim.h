/* sim.h — station-devsim internals: a station programmer with a stack of
 * target units behind it, speaking the wire protocol on a pty.
 *
 * main.c owns the pty and the event loop, state.c the persistent JSON state,
 * target.c the command semantics (the "chip"), fault.c the fault table.
 * All state lives in one struct sim owned by main(). */
#ifndef ST_SIM_H
#define ST_SIM_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "device-drivers/drv.h"
#include "device-drivers/proto/proto.h"

#define SIM_FUSE_BANKS 4
#define SIM_FW_VERSION "devsim-1.0"

struct sim_unit {
	uint8_t uid[DRV_UID_LEN];
	char model[32];
	uint8_t lifecycle;
	EVP_PKEY *key;                  /* identity key, NULL until KEYGEN */
	EVP_PKEY *transport;            /* one-time key for INJECT_KEY (memory only) */
	uint8_t pub[DRV_P256_POINT_LEN];
	uint8_t *cert;                  /* DER, NULL when the slot is empty */
	size_t cert_len;
	uint8_t fuses[SIM_FUSE_BANKS][DRV_FUSE_BANK_LEN];
	uint32_t burn_count;            /* physical burns, for tests */
	int has_last;                   /* last FUSE_BURN, to spot a repeat */
	uint32_t last_id;
	uint8_t last_bank;
	uint8_t last_value[DRV_FUSE_BANK_LEN];
};

struct sim;

/* A fault: how a misbehaving programmer or link is simulated.  Faults are
 * rows of a static table (fault.c) so new ones (corruption rate, dropped
 * link, brown-out during a burn, latency) are one row and one hook each.
 * All hooks are optional. */
struct sim_fault {
	const char *name;     /* --fault NAME[:ARG] */
	const char *help;     /* one line for --help */
	/* Parse ARG (NULL when absent); nonzero rejects the command line. */
	int (*setup)(struct sim *s, const char *arg);
	/* A frame ended on the wire (req NULL when it was malformed).  Return
	 * nonzero when the fault consumed it: the programmer does not act. */
	int (*on_frame)(struct sim *s, const proto_frame *req);
	/* Mutate the encoded reply (delimiter included) before it is sent. */
	void (*on_reply)(struct sim *s, uint8_t *wire, size_t *len);
};

struct sim {
	const char *state_path;
	int verbose;
	struct sim_unit *units;
	size_t nunits;
	size_t current;                 /* unit in the programmer; nunits: empty */
	const struct sim_fault *fault;
	uint64_t rng;                   /* seeded, so faults repeat exactly */
	unsigned long fault_n;          /* the fault's numeric argument */
	unsigned long fault_count;      /* frames the fault has seen */
	int master;                     /* pty master: our end of the line */
	proto_rx rx;
	proto_frame req, rep;
	uint8_t wire[PROTO_MAX_WIRE];
};

/* Log to stderr when --verbose. */
void sim_log(const struct sim *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Next seeded pseudo-random 64-bit value (xorshift64*). */
uint64_t sim_rand(struct sim *s);

/* Seed the generator from a string (SHA-256 of it). */
void sim_seed(struct sim *s, const char *seed);

/* Write bytes to the line; gives up after a second if nobody reads. */
int sim_send_raw(struct sim *s, const uint8_t *buf, size_t n);

/* Load FILE, or create nunits fresh units from seed/model when it does not
 * exist (and save it).  Returns 0 or -1 with a message on stderr. */
int sim_state_load(struct sim *s, int create, size_t nunits, const char *seed,
		   const char *model);

/* Persist the state atomically (temp file, fsync, rename, fsync dir).
 * 0 or -1. */
int sim_state_save(struct sim *s);

/* Print the state JSON to stdout.  0 or -1. */
int sim_state_dump(struct sim *s);

/* A P-256 public key from an uncompressed point, or NULL. */
EVP_PKEY *sim_point_pubkey(const uint8_t pub[DRV_P256_POINT_LEN]);

/* Uncompressed public point of a P-256 key; 0 or -1. */
int sim_pubkey_point(EVP_PKEY *key, uint8_t pub[DRV_P256_POINT_LEN]);

/* Free units and keys. */
void sim_state_free(struct sim *s);

/* Act on one intact request and fill s->rep with the reply. */
void sim_handle(struct sim *s, const proto_frame *req, proto_frame *rep);

/* Find a fault by name; NULL when unknown. */
const struct sim_fault *sim_fault_find(const char *name);

/* Print the fault list (for --help). */
void sim_fault_list(void);

#endif

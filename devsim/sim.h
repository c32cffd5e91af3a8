/* sim.h — station-devsim internals: a station programmer with a stack of
 * target units behind it, speaking the wire protocol on a pty.
 *
 * main.c owns the pty and the event loop, core.c the line-independent
 * protocol engine (bytes in, frames served, bytes out), state.c the
 * persistent JSON state, target.c the command semantics (the "chip"),
 * fault.c the fault table.  All state lives in one struct sim owned by its
 * host (main(), or a test's umockdev USB device). */
#ifndef ST_SIM_H
#define ST_SIM_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

/* The simulator is a device, not a driver, and otherwise stays out of the
 * station's modules.  It may include the wire protocol it shares with the
 * host side: proto/ (the frame codec and command numbers) and drv.h for the
 * protocol's limits and lifecycle values (DRV_UID_LEN, DRV_MAX_CERT,
 * DRV_LC_*), so both ends are built from one definition and cannot drift.
 * scripts/check-layers.sh holds it to exactly these two. */
#include "device-drivers/drv.h"
#include "device-drivers/proto/proto.h"

#define SIM_FUSE_BANKS 4
#define SIM_FW_VERSION "devsim-1.0"
#define SIM_FUSE_WORD 4                               /* bytes per OTP word */
#define SIM_FUSE_WORDS (DRV_FUSE_BANK_LEN / SIM_FUSE_WORD)
#define SIM_IMAGE_SLOTS 2                             /* firmware image slots */
#define SIM_SLOT_SIZE 65536                           /* default --slot-size */
#define SIM_MAX_PROGRAMMERS 64                        /* --programmers */

/* One firmware image slot of a target (docs/firmware.md): the image the
 * host declared (size and SHA-256) and the bytes stored so far, from the
 * start.  Kept in the state file, as flash keeps it across a power cut. */
struct sim_image {
	uint32_t total;                 /* declared size; 0: the slot is empty */
	uint8_t id[DRV_SHA256_LEN];     /* declared SHA-256 */
	uint32_t stored;                /* bytes held from offset 0 */
	uint8_t *data;                  /* total bytes (stored of them valid) */
};

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
	/* The redundant copy of every word (real OTP arrays keep each word
	 * twice or with ECC): a word whose programming was cut short has
	 * copies that disagree, which FUSE_READ reports. */
	uint8_t fuses_red[SIM_FUSE_BANKS][DRV_FUSE_BANK_LEN];
	uint32_t burn_count;            /* physical burns, for tests */
	uint32_t keygen_count;          /* keys made, for tests */
	int has_keygen_id;              /* the key was made under keygen_id */
	uint32_t keygen_id;
	/* WRITE_CERT_PART staging (RAM: a power cycle starts it over). */
	uint8_t *stage;
	size_t stage_total, stage_have;
	int has_last;                   /* last FUSE_BURN, to spot a repeat */
	uint32_t last_id;
	uint8_t last_bank;
	uint8_t last_value[DRV_FUSE_BANK_LEN];
	struct sim_image images[SIM_IMAGE_SLOTS];
	/* The nonce of the last ATTEST (memory only): what a recorded answer
	 * would carry (the replay fault). */
	uint8_t last_nonce[64];
	size_t last_nonce_len;
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
	/* Mutate bytes as they arrive from the host, before framing. */
	void (*on_bytes_in)(struct sim *s, uint8_t *buf, size_t n);
	/* n bytes are about to go out.  Return nonzero to cut the line after
	 * the first *n of them (lower *n): the link is then dead for good,
	 * as a pulled cable is. */
	int (*on_send)(struct sim *s, size_t *n);
	/* Word `word` of `bank` is about to be programmed with val (its 4
	 * bytes may be changed: bits that do not take).  Return nonzero to cut
	 * the power after the word's first copy: the burn stops there, the
	 * state is saved and the programmer stays silent until restarted. */
	int (*on_burn_word)(struct sim *s, unsigned bank, unsigned word,
			    uint8_t val[SIM_FUSE_WORD]);
	/* KEYGEN made a key with public point pub: the point the programmer
	 * reports instead may be written to pub (the target keeps its key). */
	void (*on_keygen)(struct sim *s, uint8_t pub[DRV_P256_POINT_LEN]);
	/* IMAGE_WRITE stored n bytes at off of im (already in im->data): the
	 * fault may change what the flash holds, or take its time. */
	void (*on_image_chunk)(struct sim *s, struct sim_image *im, uint32_t off,
			       size_t n);
	/* ATTEST is about to sign a statement over nonce (nlen bytes, room
	 * for 64) with the unit's key: the fault may change the nonce the
	 * statement carries, or set *other to another key to sign with (the
	 * caller frees it). */
	void (*on_attest)(struct sim *s, struct sim_unit *u, uint8_t *nonce,
			  size_t *nlen, EVP_PKEY **other);
};

struct sim {
	const char *state_path;
	int verbose;
	struct sim_unit *units;
	size_t nunits;
	size_t current;                 /* unit in the programmer; nunits: empty */
	/* --forget-done: units[] holds only the unit in the programmer; a
	 * released one is dropped and the next is made from seed when it
	 * enters, so a save costs the same at unit 10,000 as at unit 1. */
	int forget_done;
	/* --save-at-release (benchmarks): a change marks the state dirty and
	 * it is saved only when a unit is released, when the power is cut
	 * mid-burn and at exit; the default saves after every change. */
	int save_at_release;
	int dirty;                      /* changed since the last save */
	char *seed;                     /* forget_done: owned copy of --seed */
	char model[32];                 /* forget_done: model of units to come */
	size_t next;                    /* forget_done: index of the next unit */
	size_t total;                   /* forget_done: units in the whole run */
	const struct sim_fault *fault;
	uint64_t rng;                   /* seeded, so faults repeat exactly */
	unsigned long fault_n;          /* the fault's numeric argument */
	unsigned long fault_count;      /* frames the fault has seen */
	double fault_rate;              /* the fault's rate argument (0..1) */
	uint64_t bytes_out;             /* bytes sent so far (drop:N) */
	int dropped;                    /* a fault cut the line */
	/* Where replies go when not to the pty (USB bulk IN queue); 0/-1. */
	int (*send)(struct sim *s, const uint8_t *buf, size_t n);
	void *send_ctx;                 /* for send */
	unsigned long fault_arg[3];     /* further numeric arguments */
	int dead;                       /* browned out: silent until restart */
	unsigned long lifecycle_ms;     /* slowburn: the lifecycle fuse is slow too */
	/* Line model (docs/benchmarks.md): realistic timings, 0 = none. */
	unsigned long baud;             /* --baud: 10 bit times per byte, both ways */
	unsigned long fuse_word_us;     /* --fuse-word-us: programming one OTP word */
	unsigned long keygen_ms;        /* --keygen-ms: the chip making its key */
	int vpp_mv;                     /* programming voltage (CONDITIONS) */
	int temp_dc;                    /* temperature, tenths of a degree C */
	uint32_t slot_size;             /* --slot-size: bytes per image slot */
	/* Link extension (docs/protocol.md §6.1): the bits this programmer
	 * implements (--link-caps; 0 is a v1 programmer that knows nothing of
	 * it) and those the host offered in its last HELLO. */
	uint32_t link_caps;
	uint32_t host_link;
	int master;                     /* pty master: our end of the line */
	proto_rx rx;
	proto_frame req, rep;
	uint8_t wire[PROTO_MAX_WIRE + 1]; /* a reply and a second delimiter */
};

/* Log to stderr when --verbose. */
void sim_log(const struct sim *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Next seeded pseudo-random 64-bit value (xorshift64*). */
uint64_t sim_rand(struct sim *s);

/* Seed the generator from a string (SHA-256 of it). */
void sim_seed(struct sim *s, const char *seed);

/* Write bytes to the line (s->send, or the pty, giving up after a second
 * if nobody reads).  0, or -1 when they were not sent or the line dropped. */
int sim_send_raw(struct sim *s, const uint8_t *buf, size_t n);

/* Bytes arrived from the host: frame them and serve every request that
 * ends (faults applied).  buf may be modified by a fault.  Stops early once
 * s->dropped is set. */
void sim_feed(struct sim *s, uint8_t *buf, size_t n);

/* Sleep ms milliseconds (latency faults). */
void sim_sleep_ms(unsigned ms);

/* Sleep us microseconds (the line model's timings). */
void sim_sleep_us(unsigned long us);

/* Load FILE, or create nunits fresh units from seed/model when it does not
 * exist (and save it).  Returns 0 or -1 with a message on stderr. */
int sim_state_load(struct sim *s, int create, size_t nunits, const char *seed,
		   const char *model);

/* The unit in the programmer was released: move to the next one (with
 * forget_done, drop it and make the next from the seed).  Does not save. */
void sim_state_release(struct sim *s);

/* Persist the state atomically (temp file, fsync, rename, fsync dir).
 * 0 or -1. */
int sim_state_save(struct sim *s);

/* The state changed: save it now (the default), or with save_at_release
 * only mark it dirty unless release is set (a unit left the programmer).
 * 0 or -1. */
int sim_state_changed(struct sim *s, int release);

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

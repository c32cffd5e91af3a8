/* records.h — the audit store: one SQLite file (WAL, synchronous=FULL) with a
 * row per unit and a row per step outcome.
 *
 * Thread model: one rec_store may be shared by several slot workers; calls
 * are serialised inside.  Every write is committed (durable on disk) before
 * the call returns, so a caller may announce a result once the call
 * returned ST_OK — except a step written with rec_step_ex(..., REC_LAZY),
 * which rides in the open batch and becomes durable with the next durable
 * write (docs/records.md, "Durable and lazy writes").  Writes of threads
 * that call at the same time share one transaction and one fsync (group
 * commit, docs/records.md): each durable write returns only once it (and
 * every write before it) is durable, and fails if its batch could not be
 * committed.  Errors return ST_E_DB (or ST_E_IO for a path that cannot be
 * opened) with the SQLite message in rec_errmsg(). */
#ifndef ST_RECORDS_H
#define ST_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rec_store rec_store;

/* What is known when a unit starts. */
typedef struct rec_unit_start {
	const char *uid;            /* device unique ID (hex) */
	int slot;                   /* slot number, 1-based */
	const char *port;           /* programmer port */
	const char *station;        /* station ID */
	const char *operator_name;  /* operator */
	const char *profile;        /* profile name */
	const char *profile_digest; /* SHA-256 of the profile file, hex */
	const char *work_order;     /* work order whose quota this unit takes
				     * (NULL: none); it must exist */
} rec_unit_start;

/* How a unit ended. Strings may be NULL when not reached. */
typedef struct rec_unit_result {
	const char *result;         /* "PASS", "UNFUSED", "FAIL" or "QUARANTINE"
				     * (UNFUSED: identity issued, fuses and
				     * lifecycle untouched; docs/records.md) */
	const char *reason;         /* failure reason, NULL on PASS */
	const char *cert_serial;    /* hex */
	const char *cert_sha256;    /* certificate fingerprint, hex */
	const char *cert_pem;       /* the issued certificate */
	const char *pubkey_hex;     /* device public point, hex */
	const char *rot_hash;       /* root-of-trust hash burned, hex */
	const char *fuse_readback;  /* fuse bank read back, hex */
	/* Schema 6 (docs/firmware.md), canonical JSON text or NULL: the
	 * images written and what the device measured of them, and the
	 * end-of-line attestation (nonce, statement, signature). */
	const char *firmware;
	const char *attestation;
	/* Schema 7 (docs/integration.md), JSON text or NULL: the unit's
	 * measurements with their limits and outcomes, and its flags
	 * (["route-unchecked"]). */
	const char *measurements;
	const char *flags;
} rec_unit_result;

/* How a store is opened (docs/records.md, "Who creates the store"). */
typedef enum rec_mode {
	REC_OPEN_CREATE,  /* read and write; created when absent; the schema
			   * brought up to date */
	REC_OPEN_WRITE,   /* read and write an existing store (ST_E_NOTFOUND
			   * when absent); the schema brought up to date */
	REC_OPEN_READ,    /* read only (SQLITE_OPEN_READONLY): nothing is
			   * written, created or migrated; works on a
			   * read-only file in a read-only directory.  A store
			   * at an older schema is refused (ST_E_STATE, "run a
			   * writing command first") */
} rec_mode;

/* Open the store at path as mode says.  Like sqlite3_open, *out is set
 * even on failure (to a handle that only carries the message for
 * rec_errmsg, which names the cause: absent (ST_E_NOTFOUND), permission
 * denied, a read-only directory, not a database) unless memory ran out;
 * the caller rec_close()s it either way. */
int rec_open_mode(const char *path, rec_mode mode, rec_store **out);
/* rec_open_mode(path, REC_OPEN_CREATE, out). */
int rec_open(const char *path, rec_store **out);

/* Was r opened REC_OPEN_READ? */
bool rec_readonly(const rec_store *r);

/* Readable cause of the last failure seen by the calling thread on this
 * store ("" when none), so slot threads never read each other's errors.
 * Valid until that thread's next call on the store or rec_close. */
const char *rec_errmsg(const rec_store *r);

/* Insert a unit row in state RUNNING; *unit_id gets its id.  With a work
 * order the row reserves one unit of its quota: ST_E_STATE when the quota
 * is taken by PASS and RUNNING units, ST_E_NOTFOUND for an unknown work
 * order (rec_errmsg says which and what to do). */
int rec_unit_begin(rec_store *r, const rec_unit_start *u, int64_t *unit_id);

/* Called by rec_unit_begin_ex with the new unit's id as soon as its row is
 * in the open batch — from then on every thread of this process can read
 * it — and before the call waits for the commit.  The store's lock is
 * held: it must not call the store. */
typedef void (*rec_begun_fn)(void *ctx, int64_t unit_id);

/* rec_unit_begin that tells fn (may be NULL) the id first, so the caller
 * can mark the row as its own before another thread can see it, without
 * holding a lock of its own across the commit wait.  If the call then
 * fails, the row is gone and the id may be handed out again. */
int rec_unit_begin_ex(rec_store *r, const rec_unit_start *u, int64_t *unit_id,
		      rec_begun_fn fn, void *ctx);

/* Append a step outcome ("ok", "fail", "skip") with a detail text. */
int rec_step(rec_store *r, int64_t unit_id, const char *step,
	     const char *outcome, const char *detail);

/* How durable a step must be when rec_step_ex returns. */
typedef enum rec_durability {
	/* Committed (fsynced) before the call returns, together with every
	 * write made before it: for a step that must survive a crash, e.g.
	 * a burn intent before the burn. */
	REC_DURABLE = 0,
	/* Appended to the open batch (its row, its chained and signed event)
	 * and the call returns without waiting.  It becomes durable with the
	 * next durable write of any thread (commit order is chain order), or
	 * by rec_sync, rec_close, or at the latest REC_LAZY_MS after the first
	 * lazy write of the batch.  If that commit fails, the step is lost
	 * and the unit is marked: its later steps fail and it cannot end as
	 * PASS on this handle (it can end FAIL or QUARANTINE). */
	REC_LAZY,
} rec_durability;

#define REC_LAZY_MS	50	/* most a lazy write stays uncommitted */

/* rec_step with a choice of durability (rec_step is REC_DURABLE).  Any
 * step of a unit that lost lazy writes fails with ST_E_DB. */
int rec_step_ex(rec_store *r, int64_t unit_id, const char *step,
		const char *outcome, const char *detail, rec_durability d);

/* The most a lazy write may stay uncommitted when nothing else commits
 * it (REC_LAZY_MS after rec_open).  0: no lazy writes — REC_LAZY is
 * treated as REC_DURABLE.  Tests use a long delay to see exactly which
 * write committed what. */
int rec_set_lazy_ms(rec_store *r, int ms);

/* Make every write made on this handle so far durable: commits the open
 * batch (if any) and waits.  ST_E_DB when that commit fails, or when a
 * lazy write made earlier on this handle was lost to a failed commit
 * (rec_errmsg says which unit). */
int rec_sync(rec_store *r);

/* Finish the unit: set its result and evidence fields.  Durable; commits
 * every earlier write with it.  A PASS of a unit whose lazy steps were
 * lost is refused (ST_E_DB). */
int rec_unit_end(rec_store *r, int64_t unit_id, const rec_unit_result *e);

/* Latest result recorded for a device ID ("PASS", "FAIL", ...) into buf;
 * ST_E_NOTFOUND when the device was never seen. */
int rec_last_result(rec_store *r, const char *uid, char *buf, size_t len);

/* Count units with the given result (NULL: all units). */
int rec_count(rec_store *r, const char *result, long *count);

/* Additions for the engine's history step (see docs/records.md). */

/* The latest unit row of a device: its id and its state ("RUNNING" when a
 * run was interrupted, so the engine can close it and resume);
 * ST_E_NOTFOUND when the device was never seen.  state may be NULL. */
int rec_last_unit(rec_store *r, const char *uid, int64_t *unit_id,
		  char *state, size_t len);

/* The PASS unit of a device, if any: a later FAIL row does not hide it, so
 * this (not rec_last_result) answers "was this device already done?".
 * ST_E_NOTFOUND when the device never passed. */
int rec_find_pass(rec_store *r, const char *uid, int64_t *unit_id);

/* Called for each step of a unit, in order; a nonzero return stops the
 * walk and is returned by rec_unit_steps. */
typedef int (*rec_step_fn)(void *ctx, const char *step, const char *outcome,
			   const char *detail);

/* Walk the steps of a unit (for resuming an interrupted unit: the fuse
 * intents it recorded).  The callback runs with the store locked: it must
 * not call the store. */
int rec_unit_steps(rec_store *r, int64_t unit_id, rec_step_fn fn, void *ctx);

/* Settings in force on the store's connection, for status screens and tests. */
typedef struct rec_settings {
	char journal_mode[16];      /* "wal" */
	int synchronous;            /* 2 = FULL */
	int foreign_keys;           /* 1 = enforced */
	int busy_timeout_ms;
	int schema_version;         /* PRAGMA user_version */
} rec_settings;

/* Read the settings back from the connection (not from what was asked). */
int rec_get_settings(rec_store *r, rec_settings *out);

/* What group commit did on this handle since rec_open, for benchmarks and
 * tests: fewer commits than writes means writes shared fsyncs. */
typedef struct rec_stats {
	long long events;           /* audit events committed */
	long long writes;           /* write calls committed */
	long long commits;          /* transactions (fsyncs) that carried them */
	int max_batch;              /* most write calls in one commit */
	long long lazy_writes;      /* of the writes, REC_LAZY ones */
	long long pending;          /* lazy writes not yet committed */
	long long lost;             /* lazy writes lost to a failed commit */
	long long signatures;       /* audit signatures made (one per commit
				     * with events, chain.c) */
} rec_stats;

int rec_get_stats(rec_store *r, rec_stats *out);

/* ---- The audit chain (docs/records.md, "Audit chain") ----
 *
 * Every write above also appends an event to an append-only chain in the
 * same transaction: unit_start, step, unit_end, plus whatever the station
 * reports with rec_event().  Each event's body is canonical JSON (sorted
 * keys, compact, ASCII) holding the previous event's SHA-256; the SHA-256
 * of the last event of each commit's body is signed by the station's
 * audit key through rec_sign_fn, and covers the events before it
 * (records/chain.c, "One signature per commit"). */

/* Sign a SHA-256 digest with the audit key; sig (cap bytes, at least
 * REC_SIG_MAX) gets the signature in the form OpenSSL verifies over
 * SHA-256 of the body (`openssl dgst -sha256 -verify`): a DER
 * ECDSA-Sig-Value for an EC key, PKCS#1 v1.5 for an RSA key; *siglen its
 * length.  Called with the store's lock held, from whichever thread is
 * writing, one call at a time; return ST_OK or an st_err (the write that
 * needed the signature then fails and nothing of it is stored). */
#define REC_SIG_MAX 512         /* RSA-4096 */
typedef int (*rec_sign_fn)(void *ctx, const uint8_t digest[32], uint8_t *sig,
			   size_t cap, size_t *siglen);

/* Sign every later event with fn, under the key whose X.509 certificate
 * (DER) is cert_der; the certificate is stored in the records (once) so a
 * verifier needs nothing else.  fn NULL: later events are unsigned (and
 * 'verify' will report them).  ctx must stay valid until the signer is
 * replaced or the store closed. */
int rec_set_signer(rec_store *r, rec_sign_fn fn, void *ctx,
		   const uint8_t *cert_der, size_t cert_len);

/* Append a station event: kind (station_start, station_stop, override,
 * ...), an optional device uid, then NULL-terminated name, value string
 * pairs (a NULL value is stored as null).  Committed before return. */
int rec_event(rec_store *r, const char *kind, const char *uid, ...)
	__attribute__((sentinel));

/* Create a work order; quota < 0: no quota.  ST_E_EXISTS when the id is
 * taken. */
int rec_workorder_create(rec_store *r, const char *id, long quota);

typedef struct rec_workorder {
	long quota;                 /* -1: none */
	long pass, running, failed; /* FAIL and QUARANTINE count as failed */
} rec_workorder;

/* Usage of a work order; ST_E_NOTFOUND when unknown. */
int rec_workorder_get(rec_store *r, const char *id, rec_workorder *out);

/* What rec_verify found. */
typedef struct rec_verify_result {
	long long events;           /* events checked */
	long long units;            /* unit rows cross-checked */
	long long bad_seq;          /* first bad event, 0 if not one event */
	int audit_certs;            /* audit certificates in the store */
	long long head_seq;         /* the last event checked (0: none) */
	char head_hash[65];         /* its hash, hex */
} rec_verify_result;

/* Approve an audit certificate (PEM) before its signatures count, e.g.
 * check it chains to the station's CA.  Return 0 to accept;
 * REC_CERT_SUPERSEDED to accept it only for a key that an accepted (0)
 * certificate of the same chain certifies too (the older certificate of a
 * re-certified key: an event signed under it fails otherwise), with the
 * reason it is not accepted by itself in why; anything else refuses it,
 * with the reason in why. */
#define REC_CERT_SUPERSEDED 1
typedef int (*rec_cert_check_fn)(void *ctx, const char *pem, char *why,
				 size_t len);

/* Walk the chain from the first event: sequence without gaps, each body's
 * prev equal to the hash before it, each hash equal to SHA-256 of its
 * body, each signature valid under the audit certificate the body names;
 * then cross-check the units and steps tables against the events (a row
 * without its event, or differing from it, is tampering too).  ST_OK, or
 * ST_E_VERIFY with the first bad record in rec_errmsg() and out->bad_seq.
 * check may be NULL. */
int rec_verify(rec_store *r, rec_cert_check_fn check, void *check_ctx,
	       rec_verify_result *out);

/* ---- Checkpoints (docs/records.md, "Checkpoints") ----
 *
 * A checkpoint is a small signed statement of the chain's head that
 * leaves the store (printed, written to a file, put in each evidence
 * bundle, shipped by sync): whoever keeps one can later tell a chain cut
 * off at its end from one that grew.  Its body is canonical JSON and a
 * newline; the signature (the audit key's, DER) is over those bytes, so
 * `openssl dgst -sha256 -verify audit.pub.pem -signature cp.sig cp.json`
 * checks it. */

/* The chain's last event: its seq (0 for an empty chain) and hash (64
 * zeros then). */
int rec_head(rec_store *r, long long *seq, char hash[65]);

/* The body of a checkpoint of station's chain at seq with that hash,
 * signed by the audit certificate whose SHA-256 (of the DER) is
 * audit_sha256, at the time now: malloc'd text ending in a newline, or
 * NULL when out of memory. */
char *rec_checkpoint_body(const char *station, long long seq,
			  const char *hash, const char *audit_sha256);

/* What a checkpoint says, read back by rec_checkpoint_parse. */
typedef struct rec_checkpoint {
	char station[128];
	long long seq;
	char head_hash[65];
	char at[32];
	char audit_sha256[65];
} rec_checkpoint;

/* Read a checkpoint's body; ST_E_INVAL when it is not one (out says
 * nothing then). */
int rec_checkpoint_parse(const char *body, rec_checkpoint *out);

/* Check a checkpoint against the store: the signature (DER) over body
 * under the audit certificate it names, which must be in the store (and
 * pass check, may be NULL); then the chain must hold the event at its seq
 * with its hash.  ST_OK; ST_E_VERIFY with the cause in rec_errmsg (a chain
 * shorter than the checkpoint: events were cut off its end; another hash:
 * the chain was replaced or rewritten; a bad signature). */
int rec_checkpoint_check(rec_store *r, const char *body, const uint8_t *sig,
			 size_t siglen, rec_cert_check_fn check, void *ctx,
			 rec_checkpoint *out);

/* ---- Queries ---- */

/* Which units a query returns; NULL fields do not filter.  Dates compare
 * with started_at as text: "2024-05-01" or "2024-05-01T12:00". */
typedef struct rec_filter {
	const char *work_order;
	const char *since;          /* started_at >= since */
	const char *until;          /* started_at < until */
	const char *result;         /* PASS, UNFUSED, FAIL, QUARANTINE, RUNNING */
	const char *uid;
	int64_t unit_id;            /* 0: any */
} rec_filter;

/* One unit row; strings are NULL when not set, valid during the call. */
typedef struct rec_unit_row {
	int64_t id;
	int slot;
	const char *uid, *state, *reason, *work_order, *port, *station;
	const char *operator_name, *profile, *profile_digest;
	const char *cert_serial, *cert_sha256, *cert_pem, *pubkey;
	const char *rot_hash, *fuse_readback, *started_at, *finished_at;
	const char *firmware, *attestation;  /* schema 6; NULL when none */
	const char *measurements, *flags;    /* schema 7; NULL when none */
} rec_unit_row;

/* One event of the chain, as stored. */
typedef struct rec_event_row {
	int64_t seq, unit_id;
	const char *at, *kind, *uid, *body, *hash, *sig;
} rec_event_row;

/* Callbacks run with the store locked: they must not call the store.
 * Returning non-zero stops the walk and is handed back. */
typedef int (*rec_unit_fn)(void *ctx, const rec_unit_row *row);
typedef int (*rec_event_fn)(void *ctx, const rec_event_row *row);

/* Units matching f (NULL: all), oldest first. */
int rec_list_units(rec_store *r, const rec_filter *f, rec_unit_fn fn,
		   void *ctx);

/* Events of one unit (unit_id > 0) or the whole chain (0), in order. */
int rec_list_events(rec_store *r, int64_t unit_id, rec_event_fn fn,
		    void *ctx);

/* The audit certificates stored with the records, PEM, in the order they
 * were added. */
int rec_list_audit_certs(rec_store *r, int (*fn)(void *ctx, const char *sha256,
						 const char *pem), void *ctx);

/* ---- Revocations (re-provisioning, docs/roles.md) ---- */

/* Revoke the certificate of the final unit record unit_id (its serial
 * goes on the revocation list; a revoked PASS counts as not provisioned,
 * so the device can be given a new identity), with the reason and who
 * decided it (a supervisor, or "station" for the engine's own decisions),
 * and a "revoke" event, in one transaction.  The serial is the row's, or
 * for a record closed as interrupted (no certificate in its row) the one
 * its certificate step issued.  ST_E_STATE for a RUNNING unit or one that
 * issued no certificate, ST_E_EXISTS when already revoked. */
int rec_revoke(rec_store *r, int64_t unit_id, const char *reason,
	       const char *by);

/* RFC 5280 CRLReason codes a revocation records (others are valid too). */
enum {
	REC_CRL_UNSPECIFIED = 0,
	REC_CRL_KEY_COMPROMISE = 1,
	REC_CRL_SUPERSEDED = 4,       /* re-provisioned: a new identity */
	REC_CRL_CESSATION = 5,        /* cessationOfOperation: never in service */
};

/* Revoke the certificate issued during unit record unit_id, a unit that
 * did not end PASS (FAIL, QUARANTINE, or still RUNNING: interrupted), with
 * cert_serial (hex) as its certificate step recorded it, the CRLReason
 * code, the reason and who decided it ("station ID" when automatic), and
 * a "revoke" event, in one transaction; durable on return.  ST_E_STATE
 * for a PASS unit or a serial other than the unit's, ST_E_EXISTS when the
 * unit is already revoked. */
int rec_revoke_issued(rec_store *r, int64_t unit_id, const char *cert_serial,
		      int crl_reason, const char *reason, const char *by);

/* One revoked certificate, valid during the callback. */
typedef struct rec_revoked_row {
	int64_t unit_id;
	const char *uid, *cert_serial, *reason, *by, *at;
	int crl_reason;             /* RFC 5280 CRLReason (REC_CRL_...) */
} rec_revoked_row;

typedef int (*rec_revoked_fn)(void *ctx, const rec_revoked_row *row);

/* Every revocation, oldest first (callback under the store's lock). */
int rec_list_revoked(rec_store *r, rec_revoked_fn fn, void *ctx);

/* Close the store: commits lazy writes still pending first (call
 * rec_sync before to see whether that worked).  NULL is fine.  Every other
 * thread must be done with it (joined, or at least finished calling). */
void rec_close(rec_store *r);

#endif

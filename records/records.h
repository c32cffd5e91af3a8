/* records.h — the audit store: one SQLite file (WAL, synchronous=FULL) with a
 * row per unit and a row per step outcome.
 *
 * Thread model: one rec_store may be shared by several slot workers; calls
 * are serialised inside.  Every write is committed (durable on disk) before
 * the call returns, so a caller may announce a result once the call
 * returned ST_OK.  Errors return ST_E_DB (or ST_E_IO for a path that cannot
 * be opened) with the SQLite message in rec_errmsg(). */
#ifndef ST_RECORDS_H
#define ST_RECORDS_H

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
} rec_unit_start;

/* How a unit ended. Strings may be NULL when not reached. */
typedef struct rec_unit_result {
	const char *result;         /* "PASS", "FAIL" or "QUARANTINE" */
	const char *reason;         /* failure reason, NULL on PASS */
	const char *cert_serial;    /* hex */
	const char *cert_sha256;    /* certificate fingerprint, hex */
	const char *cert_pem;       /* the issued certificate */
	const char *pubkey_hex;     /* device public point, hex */
	const char *rot_hash;       /* root-of-trust hash burned, hex */
	const char *fuse_readback;  /* fuse bank read back, hex */
} rec_unit_result;

/* Open (creating if needed) the store at path and apply the schema.
 * Like sqlite3_open, *out is set even on failure (to a handle that only
 * carries the message for rec_errmsg) unless memory ran out; the caller
 * rec_close()s it either way. */
int rec_open(const char *path, rec_store **out);

/* Readable cause of the last failure seen by the calling thread on this
 * store ("" when none), so slot threads never read each other's errors.
 * Valid until that thread's next call on the store or rec_close. */
const char *rec_errmsg(const rec_store *r);

/* Insert a unit row in state RUNNING; *unit_id gets its id. */
int rec_unit_begin(rec_store *r, const rec_unit_start *u, int64_t *unit_id);

/* Append a step outcome ("ok", "fail", "skip") with a detail text. */
int rec_step(rec_store *r, int64_t unit_id, const char *step,
	     const char *outcome, const char *detail);

/* Finish the unit: set its result and evidence fields. */
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

/* Close the store.  NULL is fine.  Every other thread must be done with it
 * (joined, or at least finished calling). */
void rec_close(rec_store *r);

#endif

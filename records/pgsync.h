/* pgsync.h — store-and-forward of the audit records to PostgreSQL
 * (docs/sync.md): the local SQLite store stays the durable first write;
 * this ships its hash-chained events, in order and idempotently, to one
 * central database shared by every station, keeps the global rules there
 * (one identity per device, one unit per certificate serial: a breach is
 * an alert at both stations, never merged silently), shares work-order
 * quotas between stations through reservations in transactions, and
 * verifies every station's chain held there.
 *
 * libpq only; no HSM, no engine.  A write to the local store (an alert
 * picked up from the server) goes through rec_event(), after the caller's
 * pgs_ready_fn has set the audit signer.
 *
 * Thread model: one pgs per thread, or calls serialised by the caller. */
#ifndef ST_PGSYNC_H
#define ST_PGSYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "records/records.h"

typedef struct pgs pgs;

/* How to reach the central database.  The password never comes from here:
 * libpq reads it from passfile (or PGPASSFILE, or ~/.pgpass). */
typedef struct pgs_opts {
	const char *conninfo;     /* libpq connection string or URI; one with
				   * a password in it is refused */
	const char *passfile;     /* NULL: PGPASSFILE / ~/.pgpass */
	const char *sslmode;      /* NULL: the conninfo's (libpq: prefer) */
	const char *sslrootcert, *sslcert, *sslkey; /* NULL: none given */
	int connect_timeout_s;    /* 0: 10 s */
	const char *station_id;   /* this station (events are keyed by it) */
	int batch;                /* events per transaction; 0: 500 */
} pgs_opts;

/* Connect and bring the central schema to this version (created on first
 * use, migrated under an advisory lock so stations starting together do
 * not race).  Like rec_open, *out is set even on failure (for
 * pgs_errmsg) unless memory ran out; pgs_close() it either way.  ST_E_IO:
 * the server cannot be reached; ST_E_CONFIG: bad settings (a password in
 * the connection string); ST_E_DB: anything else. */
int pgs_connect(const pgs_opts *o, pgs **out);

/* Readable cause of the last failure ("" when none). */
const char *pgs_errmsg(const pgs *p);

/* Still connected?  False after the server went away: pgs_close and
 * pgs_connect again (pgs_sync's callers retry with backoff). */
bool pgs_ok(const pgs *p);

void pgs_close(pgs *p);

/* Called once before the sync writes to the local store (to record an
 * alert), so the caller can set the audit signer; non-zero stops the
 * sync with that error. */
typedef int (*pgs_ready_fn)(void *ctx, rec_store *r);

typedef struct pgs_result {
	long long shipped;        /* events sent in this call */
	long long batches;        /* transactions committed */
	long long server_seq;     /* this station's high-water mark there */
	long long local_seq;      /* the local chain's last event */
	long long conflicts;      /* new alerts raised by this station */
	long long alerts_recorded; /* alerts written to the local store */
} pgs_result;

/* One pass: ship every local event above this station's high-water mark
 * (read back from the server, under a row lock, never trusted from local
 * state), one transaction per batch; each event is keyed by its hash
 * (ON CONFLICT DO NOTHING, then what is there must match) and must follow
 * the server's head hash.  Applying an event keeps the units, identities,
 * serials and reservations tables; a device or serial already held by
 * another station raises an alert.  Then every alert naming this station
 * that the local store lacks is recorded there as a "sync_alert" event
 * (and shipped).  Before anything is shipped, what the server holds of
 * this station — its mark and its newest checkpoint — must be in the local
 * chain (that seq, that hash): else an alert "chain_cut" (the local chain
 * is shorter) or "chain_fork" (another hash) is raised centrally and
 * recorded locally, and the call fails with ST_E_VERIFY, nothing shipped.  A failure leaves every committed batch in place: the
 * next pass resumes from the server's mark.  ready may be NULL (then
 * alerts are written with whatever signer the store has). */
int pgs_sync(pgs *p, rec_store *r, pgs_ready_fn ready, void *ready_ctx,
	     pgs_result *out);

/* Keep a signed checkpoint of this station's chain (body and its
 * signature, DER as hex) in the central database (once).  ST_E_INVAL for
 * a text that is not a checkpoint of this station. */
int pgs_checkpoint_put(pgs *p, const char *body, const char *sig_hex);

/* The highest seq of this station's checkpoints held centrally (0: none). */
int pgs_checkpoint_mark(pgs *p, long long *seq);

/* The local chain's last seq and how many of its events / units are above
 * seq (not yet shipped); no network. */
int pgs_local_lag(rec_store *r, long long server_seq, long long *local_seq,
		  long long *events, long long *units);

/* Units of work_order started offline from the allowance (their step
 * "quota-offline") whose event is above seq. */
int pgs_local_offline(rec_store *r, const char *work_order, long long seq,
		      long *n);

/* This station's high-water mark on the server (0: never synced) and the
 * server's time of its last sync ("" when never), into when (32 bytes). */
int pgs_server_mark(pgs *p, long long *seq, char when[32]);

/* ---- Shared work-order quotas ---- */

/* Create a work order in the central database, or accept it when it
 * exists with the same quota (quota < 0: none); ST_E_EXISTS when it exists
 * with another. */
int pgs_workorder_put(pgs *p, const char *id, long quota);

typedef struct pgs_workorder {
	long quota;               /* -1: none */
	long reserved;            /* units held (in work, PASS, allowances) */
	long pass;                /* PASS across stations */
	long allowance;           /* this station's unused pre-reserved units */
} pgs_workorder;

/* ST_E_NOTFOUND when unknown. */
int pgs_workorder_get(pgs *p, const char *id, pgs_workorder *out);

/* Reserve one unit of the work order for device uid at this station, in
 * one transaction (a held reservation of the same device is reused; a
 * full quota falls back on this station's pre-reserved allowance).
 * ST_E_STATE: the quota is taken across stations; ST_E_NOTFOUND: unknown
 * work order; ST_E_IO: the server is unreachable. */
int pgs_reserve(pgs *p, const char *work_order, const char *uid);

/* The unit of uid ended: PASS keeps its reservation, anything else gives
 * it back. */
int pgs_finish(pgs *p, const char *work_order, const char *uid,
	       const char *result);

/* Top this station's pre-reserved allowance up to want units (as far as
 * the quota allows); *held gets how many it holds now. */
int pgs_allowance(pgs *p, const char *work_order, long want, long *held);

/* ---- Verification of the central copy ---- */

typedef struct pgs_verify_result {
	int stations;             /* stations checked */
	long long events;         /* events checked */
	char bad_station[128];    /* the station whose chain failed, "" */
	long long bad_seq;        /* its first bad event */
} pgs_verify_result;

/* Walk every station's chain held in the database with the same checks as
 * rec_verify (sequence, hash, previous hash, columns, signature under an
 * audit certificate held there, which check may refuse).  ST_OK or
 * ST_E_VERIFY with the cause in rec_errmsg(msg) (any open store, used
 * only for the message), ST_E_DB/ST_E_IO in pgs_errmsg. */
int pgs_verify(pgs *p, rec_store *msg, rec_cert_check_fn check, void *ctx,
	       pgs_verify_result *out);

/* The regulator's question on the central copy (docs/firmware.md): every
 * unit of every station that left the line (PASS, UNFUSED) with an image
 * whose recorded SBOM lists component name (and version, unless NULL),
 * oldest first.  fn gets, as text (NULL: none): station, unit id, uid,
 * certificate serial, work order, finished_at, state, image name, image
 * version, component version; nonzero stops and is returned. */
typedef int (*pgs_component_fn)(void *ctx, const char *const v[10]);
int pgs_units_with_component(pgs *p, const char *name, const char *version,
			     pgs_component_fn fn, void *ctx);

#endif

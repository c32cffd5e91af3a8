/* rec_int.h — records/ internals shared by its files: store.c (open,
 * schema, errors), commit.c (group commit), units.c, workorders.c,
 * chain.c (append, walk, checkpoints), verify.c, query.c, and pgsync.c,
 * which reads the local store only through the functions below.  Not a
 * public header. */
#ifndef ST_REC_INT_H
#define ST_REC_INT_H

#include <jansson.h>
#include <pthread.h>
#include <semaphore.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "records.h"

#define REC_MSG_MAX	512
#define REC_HASH_HEX	65		/* SHA-256, hex, NUL */
#define REC_MAX_STMT	32


/* One thread's last error on one store. */
struct rec_errbuf {
	struct rec_errbuf *next;
	rec_store *owner;
	char msg[REC_MSG_MAX];
};

struct rec_store {
	sqlite3 *db;                    /* NULL after a failed open */
	pthread_mutex_t lock;           /* serialises every call */
	pthread_key_t errkey;           /* this thread's rec_errbuf */
	struct rec_errbuf *errbufs;     /* all of them, under lock */
	sqlite3_stmt *stmt[REC_MAX_STMT]; /* the kept statements (S_...) */
	rec_sign_fn sign;               /* audit signer, NULL: unsigned */
	void *sign_ctx;
	char sign_key[REC_HASH_HEX];    /* SHA-256 of the signer's cert DER */
	long long batch_first;          /* seq of the first event of the open
					 * batch awaiting the batch's signature
					 * (chain.c, "One signature per
					 * commit"); 0: none */
	long long n_sigs;               /* audit signatures made (rec_get_stats) */

	/* Group commit (commit.c, "Group commit"): writes of several
	 * threads share one transaction; the record writer thread commits
	 * it and fsyncs the WAL with the lock let go. */
	atomic_int want;                /* writers counted in, not yet through */
	int in_batch;                   /* the batch's transaction is open */
	struct rec_waiter *batch;       /* writes waiting for its commit */
	int batch_n;                    /* how many */
	int commit_asked;               /* commit the open batch now */
	long long batch_events;         /* events they appended */
	long long sp_events;            /* events of the write in progress */
	long long n_events, n_writes, n_commits; /* rec_get_stats */
	long long n_syncs;
	int max_batch;
	struct rec_waiter *flushing;    /* committed, waiting for the WAL sync */
	int unsynced;                   /* commits since the last WAL sync */
	int broken;                     /* a WAL sync failed: no more writes */
	char broken_why[REC_MSG_MAX];

	/* The writer thread's own (never touched under the lock after start):
	 * its descriptor of the WAL, reopened when the file is replaced. */
	char *wal_path;
	int wal_fd;
	dev_t wal_dev;
	ino_t wal_ino;

	/* Lazy writes (commit.c, "Durable and lazy writes"): in the open
	 * batch without waiting; committed by the writer with the next
	 * durable write, REC_LAZY_MS after the first of them, or at rec_sync
	 * and rec_close. */
	int lazy_ms;                    /* rec_set_lazy_ms, REC_LAZY_MS */
	bool readonly;                  /* opened REC_OPEN_READ */
	int lazy_n;                     /* lazy writes in the open batch */
	long long lazy_t0_ms;           /* monotonic ms of the first one */
	int64_t *lazy_units;            /* units they wrote to (no dups) */
	int lazy_units_n, lazy_units_cap;
	int64_t *lost;                  /* units whose lazy writes a failed
					 * commit lost: no more steps, no PASS */
	int lost_n, lost_cap;
	long long n_lazy;               /* lazy writes committed */
	long long lost_writes;          /* lazy writes lost since rec_open */
	char lost_why[REC_MSG_MAX];     /* why the last of them was lost */
	pthread_cond_t writer_cv;       /* wakes the writer */
	pthread_t writer;
	int writer_up;                  /* the writer thread runs */
	int closing;                    /* rec_close: the writer drains, ends */
};

/* The statements every store prepares at open (store.c, stmt_sql) and keeps
 * in r->stmt. */
enum {
	S_BEGIN,
	S_COMMIT,
	S_ROLLBACK,
	S_UNIT_INS,
	S_STEP_INS,
	S_UNIT_GET,
	S_UNIT_END,
	S_LAST,
	S_PASS,
	S_COUNT_ALL,
	S_COUNT,
	S_EV_LAST,
	S_EV_INS,
	S_STEP_SEQ,
	S_WO_GET,
	S_WO_INS,
	S_CERT_INS,
	S_SP,
	S_SP_RELEASE,
	S_SP_ROLLBACK,
	S_EV_SIG,
	S_N
};

/* Keep a readable cause for the caller's thread and return err. */
int rec_fail(rec_store *r, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* rec_fail with SQLite's (and errno's) words appended. */
int rec_db_fail(rec_store *r, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* SQLite's words for the last failure on the connection (with errno for
 * I/O trouble) into buf. */
void rec_db_why(rec_store *r, char *buf, size_t len);
/* Reset and unbind a kept statement after use. */
void rec_stmt_done(sqlite3_stmt *s);
/* Bind a C string (NULL: SQL NULL) that outlives the statement's use. */
int rec_bind_text(sqlite3_stmt *s, int i, const char *v);
/* Copy text column col into buf (len bytes; NULL buf: nothing);
 * ST_E_INVAL when it does not fit. */
int rec_copy_col(rec_store *r, sqlite3_stmt *s, int col, char *buf,
		 size_t len);
/* Prepare a one-off statement; ST_E_DB with its text on failure. */
int rec_prep(rec_store *r, const char *sql, sqlite3_stmt **s);
/* Text of a column, or NULL. */
static inline const char *rec_col(sqlite3_stmt *s, int i)
{
	return (const char *)sqlite3_column_text(s, i);
}
/* Take the store's lock; fails (lock still held) on a store whose open
 * failed.  Every public call pairs it with pthread_mutex_unlock. */
int rec_enter(rec_store *r);

/* ---- Group commit (commit.c) ----
 *
 * A write call is rec_wr_enter (counts the writer in, takes the lock),
 * rec_wr_txn (opens the batch if none is, then the write's savepoint),
 * its rows and event, then rec_wr_done (keeps or rolls back the savepoint,
 * hands the batch to the writer, lets the lock go and waits for its
 * commit) — on every path; or rec_wr_end and the unlock, for a caller that
 * needs the lock after the commit. */

/* One write call's place in a batch; on the caller's stack. */
struct rec_waiter {
	struct rec_waiter *next;
	int sp;                 /* its savepoint is open */
	int joined;             /* it waits for the batch's commit */
	int done;               /* the batch committed or failed */
	int err;                /* how it ended */
	int now;                /* commit at once, do not wait for others */
	int lazy;               /* do not wait: ride in the batch */
	char what[160];         /* "the end of unit 5 (device d1)" */
	char why[REC_MSG_MAX];  /* why the batch failed */
	sem_t sem;              /* posted by the writer when done is set */
};

int rec_wr_enter(rec_store *r, struct rec_waiter *w);
/* what (printf) names the write in a later commit failure. */
int rec_wr_txn(rec_store *r, struct rec_waiter *w, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Returns err, or the commit's failure; the lock is let go.  A durable
 * write waits for its commit without the lock, so waking after a sync
 * costs no turn on it. */
int rec_wr_done(rec_store *r, struct rec_waiter *w, int err);
/* rec_wr_done, but returns with the lock held again. */
int rec_wr_end(rec_store *r, struct rec_waiter *w, int err);
/* rec_close: let the writer commit and sync what is pending, and end. */
void rec_writer_stop(rec_store *r);
/* After a read's first step: what it sees of other processes' commits is
 * on disk (their WAL synced) before a row is handed on.  ST_E_IO. */
int rec_read_durable(rec_store *r);
/* Did a failed commit lose lazy writes of unit_id? */
int rec_unit_lost(const rec_store *r, int64_t unit_id);
/* Let the write w of unit_id ride in the batch without waiting (REC_LAZY). */
void rec_lazy_join(rec_store *r, struct rec_waiter *w, int64_t unit_id);

/* Append one event to the chain: lock held, inside the caller's write
 * transaction, so the event and the rows it describes commit together.
 * data is stolen (may be NULL).  uid may be NULL, unit_id 0 for none. */
int rec_append_event(rec_store *r, const char *kind, int64_t unit_id,
		     const char *uid, json_t *data);
/* rec_append_event with the event's time given (NULL: now), so a row's
 * time column and its event's time are one value. */
int rec_append_event_at(rec_store *r, const char *kind, int64_t unit_id,
			const char *uid, const char *when, json_t *data);

/* UTC now as 2024-05-01T12:34:56.789Z into out. */
void rec_now(char out[32]);

/* The chain walk behind rec_verify (chain.c), shared with the check of the
 * chains held in PostgreSQL (pgsync.c): one chain, its audit certificates,
 * where it has got to.  Failures go to r's rec_errmsg. */
struct acert;
struct rec_chain {
	rec_store *r;
	struct acert *certs;
	int ncerts;
	char prev[REC_HASH_HEX];        /* hash of the last good event */
	long long expect;               /* the next seq */
	long long bad_seq;              /* the event that failed */
	long long pend_from;            /* first of the unsigned events that
					 * wait for their batch's signature */
	char pend_key[REC_HASH_HEX];    /* the audit key they name */
};

void rec_chain_init(struct rec_chain *c, rec_store *r);
/* Add an audit certificate (PEM) stored under fingerprint fp; check may
 * refuse it (NULL: accept). */
int rec_chain_cert(struct rec_chain *c, const char *fp, const char *pem,
		   rec_cert_check_fn check, void *ctx);
/* Check the next event (sequence, hash, body, columns, signature); on
 * success *body (may be NULL) gets its parsed body, to json_decref. */
int rec_chain_event(struct rec_chain *c, const rec_event_row *e, json_t **body);
/* After the last event: nothing may still wait for a signature, except
 * events from seq open_from on (>0: this process's own open batch, read
 * through its own transaction). */
int rec_chain_end(struct rec_chain *c, long long open_from);
/* Lock held, in the open batch: sign the last event of the chain if it
 * is one of the batch's, so every event of the batch is covered
 * (chain.c, "One signature per commit").  Called by the writer right
 * before COMMIT, and before the signer changes. */
int rec_sign_batch(rec_store *r);
void rec_chain_free(struct rec_chain *c);

/* ---- What the sync (pgsync.c) reads of the local store (query.c) ---- */

/* rec_list_events over the whole chain from seq after + 1, at most max
 * events (-1: all). */
int rec_list_events_after(rec_store *r, long long after, int max,
			  rec_event_fn fn, void *ctx);
/* The chain's last seq and how many events / distinct units are above
 * after (each may be NULL). */
int rec_chain_lag(rec_store *r, long long after, long long *last_seq,
		  long long *events, long long *units);
/* Units of work order wo whose "quota-offline" step event is above after. */
int rec_offline_units(rec_store *r, const char *wo, long long after, long *n);
/* The central alert ids recorded as "sync_alert" events: *ids malloc'd
 * (the caller frees it, also on failure), *n of them. */
int rec_alert_ids(rec_store *r, long long **ids, int *n);

/* access.c: the folder of path into out; why path cannot be opened as
 * mode asks (0: nothing the file system can tell; else the error, said
 * with rec_fail); and the read-only open of path into r->db (a WAL store
 * in a directory this process cannot write, with no journal beside it,
 * opened immutable).  ST_OK or ST_E_IO. */
void rec_dir_of(const char *path, char *out, size_t cap);
int rec_open_diagnose(rec_store *r, const char *path, rec_mode mode, bool exists);
int rec_open_readonly(rec_store *r, const char *path);

#endif

/* commit.c — group commit: every write call of records/ is a savepoint in
 * a batch; the record writer thread commits batches and makes each durable
 * with one fsync of the WAL, with the store's lock let go; lazy writes. */
#include "records.h"
#include "rec_int.h"

#include "base.h"

#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- Group commit: the record writer ----
 *
 * Every write call (a unit start, a step, a unit end, an event, ...) is a
 * SAVEPOINT inside the batch's IMMEDIATE transaction: its rows and the
 * event that describes them stand or fall together, and a write that fails
 * rolls back only itself.  Producers (the slot threads) append under the
 * store's lock; events are hashed, chained and signed one by one as they
 * are appended, so the chain order is the commit order.
 *
 * One thread, the record writer, ends the batches.  It takes the lock only
 * to COMMIT (SQLite writes the batch's pages to the WAL: page cache, no
 * fsync, since the batch runs with synchronous=NORMAL), then lets the lock
 * go and makes the batch durable with one fdatasync of the WAL on its own
 * descriptor.  While it syncs, producers append the next batch; when the
 * sync returns it commits whatever has gathered and syncs again.  So no
 * producer ever waits behind an fsync for the lock, and the number of
 * fsyncs falls as the load rises.  A durable write waits (on the durable
 * condition variable, lock let go) until the sync that covers its commit
 * has returned: ST_OK still means on disk.  A lazy write never waits.
 * The writer wakes each durable writer through a semaphore of its own:
 * they do not queue for the lock again to return (with 64 slots, a
 * broadcast on a condition variable tied to the lock woke dozens of
 * threads that then took turns on it).
 * The connection is back at synchronous=FULL whenever no batch is open.
 *
 * ---- Durable and lazy writes ----
 *
 * A lazy write (rec_step_ex with REC_LAZY) joins the batch the same way but
 * does not wait: it returns once its savepoint is released.  The writer
 * commits a batch
 *  - at once when it holds a durable write (one is waiting) or rec_sync
 *    asked, or when it holds REC_BATCH_MAX writes;
 *  - REC_LAZY_MS after the batch's first lazy write otherwise;
 *  - at rec_close, which lets the writer drain and end.
 * A durable write never commits without the writes before it, since there
 * is one transaction at a time and SQLite commits it whole.
 * While a batch with lazy writes is open, this connection (all threads of
 * the process) reads them; another process sees them once committed and
 * waits up to REC_LAZY_MS (within busy_timeout) for the write lock.
 * If a COMMIT fails, its lazy writes are lost: their units go on the lost
 * list, and rec_step_ex refuses their later steps and rec_unit_end refuses
 * them a PASS, so a PASS is never recorded over missing steps.
 *
 * If the WAL sync itself fails (EIO, ENOSPC at writeback), the kernel may
 * have dropped the pages: nothing committed since the last good sync can be
 * called durable.  Every write waiting for it fails, and so does every
 * later write on this handle (the store is "broken" until it is opened
 * again), so nothing more is announced on a disk that lost data. */

#define REC_BATCH_MAX	64		/* writes per commit at most, so a
					 * steady stream cannot delay a commit
					 * without bound */

static long long mono_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Lock held, no transaction open: the durability the connection is at
 * between batches (FULL) or inside one (NORMAL: the writer syncs). */
static int set_sync(rec_store *r, int full)
{
	return sqlite3_exec(r->db, full ? "PRAGMA synchronous = FULL" :
			    "PRAGMA synchronous = NORMAL", NULL, NULL, NULL) ==
		SQLITE_OK ? ST_OK : ST_E_DB;
}

static void *writer_main(void *arg);

/* Lock held: start the writer on the store's first write. */
static int writer_start(rec_store *r)
{
	const char *db = sqlite3_db_filename(r->db, "main");
	const char *wal = db && *db ? sqlite3_filename_wal(db) : NULL;
	sigset_t all, old;
	int rc;

	if (r->writer_up)
		return ST_OK;
	if (!wal || !*wal)
		return rec_fail(r, ST_E_DB, "the records store has no file for "
				"its write-ahead log");
	free(r->wal_path);
	r->wal_path = strdup(wal);
	if (!r->wal_path)
		return rec_fail(r, ST_E_NOMEM, "out of memory starting the "
				"record writer");
	/* signals stay with the threads that handle them */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&r->writer, NULL, writer_main, r);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc)
		return rec_fail(r, ST_E_NOMEM, "cannot start the record writer "
				"thread: %s", strerror(rc));
	r->writer_up = 1;
	return ST_OK;
}

/* Start of every write call: count the writer in before it queues on the
 * lock, so a writer that is already in knows a batch-mate is coming. */
int rec_wr_enter(rec_store *r, struct rec_waiter *w)
{
	w->next = NULL;
	w->sp = w->joined = w->done = w->err = w->now = w->lazy = 0;
	w->what[0] = w->why[0] = '\0';
	sem_init(&w->sem, 0, 0);
	atomic_fetch_add(&r->want, 1);
	return rec_enter(r);
}

/* Open the batch's transaction if none is, then this write's savepoint;
 * what names the write in a later commit failure. */
int rec_wr_txn(rec_store *r, struct rec_waiter *w, const char *fmt, ...)
{
	sqlite3_stmt *s;
	va_list ap;
	int err = ST_OK;

	va_start(ap, fmt);
	vsnprintf(w->what, sizeof(w->what), fmt, ap);
	va_end(ap);
	if (r->broken)
		return rec_fail(r, ST_E_DB, "cannot record %s: the records disk "
				"failed to sync earlier records (%s), so nothing "
				"more is recorded; check the disk, then start "
				"the station again", w->what, r->broken_why);
	if (!r->in_batch) {
		if ((err = writer_start(r)))
			return err;
		if (set_sync(r, 0))
			return rec_db_fail(r, ST_E_DB, "cannot start a write (%s)",
					   w->what);
		s = r->stmt[S_BEGIN];
		if (sqlite3_step(s) != SQLITE_DONE)
			err = rec_db_fail(r, ST_E_DB, "cannot start a write (%s)",
					  w->what);
		rec_stmt_done(s);
		if (err) {
			set_sync(r, 1);
			return err;
		}
		r->in_batch = 1;
	}
	s = r->stmt[S_SP];
	if (sqlite3_step(s) != SQLITE_DONE)
		err = rec_db_fail(r, ST_E_DB, "cannot start a write (%s)", w->what);
	rec_stmt_done(s);
	if (!err) {
		w->sp = 1;
		r->sp_events = 0;
	}
	return err;
}

/* The open batch is over (committed, err 0, or lost): count it, and on a
 * failure fail its writers and put its lazy units on the lost list. */
static void batch_finish(rec_store *r, int err, const char *why)
{
	struct rec_waiter *w, *next;

	if (!err) {
		r->n_commits++;
		r->n_events += r->batch_events;
		r->n_writes += r->batch_n;
		r->n_lazy += r->lazy_n;
		if (r->batch_n > r->max_batch)
			r->max_batch = r->batch_n;
		/* durable once the next WAL sync returns */
		for (w = r->batch; w; w = next) {
			next = w->next;
			w->next = r->flushing;
			r->flushing = w;
		}
		r->unsynced++;
	} else {
		if (r->lazy_n) {
			/* room was made when each lazy write joined */
			for (int i = 0; i < r->lazy_units_n; i++)
				if (!rec_unit_lost(r, r->lazy_units[i]))
					r->lost[r->lost_n++] = r->lazy_units[i];
			r->lost_writes += r->lazy_n;
			snprintf(r->lost_why, sizeof(r->lost_why), "%s", why);
		}
		for (w = r->batch; w; w = next) {
			next = w->next;         /* w is gone once posted */
			w->err = err;
			snprintf(w->why, sizeof(w->why), "%s", why);
			w->done = 1;
			sem_post(&w->sem);
		}
	}
	r->lazy_n = 0;
	r->lazy_units_n = 0;
	r->batch_first = 0;
	r->batch = NULL;
	r->batch_n = 0;
	r->batch_events = 0;
	r->in_batch = 0;
	r->commit_asked = 0;
	set_sync(r, 1);
}

/* Lock held: end the open batch's transaction.  COMMIT writes it to the
 * WAL (no fsync: the writer syncs next); if that fails it is rolled back
 * and every write in it fails.  A batch of failed writes only is rolled
 * back.  Returns the commit's outcome. */
static int batch_commit(rec_store *r)
{
	char why[REC_MSG_MAX];
	sqlite3_stmt *s = r->stmt[S_COMMIT];
	int err = ST_OK;

	if (!r->batch_n) {
		s = r->stmt[S_ROLLBACK];
		sqlite3_step(s);
		rec_stmt_done(s);
		r->batch_first = 0;
		r->in_batch = 0;
		r->commit_asked = 0;
		set_sync(r, 1);
		return ST_OK;
	}
	why[0] = '\0';
	/* the batch's one audit signature (chain.c, "One signature per
	 * commit"); without it the batch is not committed: it fails as a
	 * failed COMMIT does */
	if ((err = rec_sign_batch(r))) {
		snprintf(why, sizeof(why), "%s", rec_errmsg(r));
	} else if (sqlite3_step(s) != SQLITE_DONE) {
		err = ST_E_DB;
		rec_db_why(r, why, REC_MSG_MAX);
	}
	rec_stmt_done(s);
	if (err && !sqlite3_get_autocommit(r->db)) {
		s = r->stmt[S_ROLLBACK];
		sqlite3_step(s);
		rec_stmt_done(s);
	}
	batch_finish(r, err, why);
	return err;
}

/* Writer thread, lock NOT held: make every frame written to the WAL so far
 * durable.  The descriptor is the writer's own, opened by path (and the
 * directory synced, for a WAL file SQLite has just made) whenever the WAL
 * is not the file it has open.  0 or an errno. */
static int wal_sync(rec_store *r)
{
	char dir[4096];
	struct stat st;
	int fd, e;

	if (stat(r->wal_path, &st) != 0)
		return errno;
	if (r->wal_fd < 0 || st.st_dev != r->wal_dev || st.st_ino != r->wal_ino) {
		if (r->wal_fd >= 0)
			close(r->wal_fd);
		r->wal_fd = open(r->wal_path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (r->wal_fd < 0)
			return errno;
		if (fstat(r->wal_fd, &st) != 0) {
			e = errno;
			close(r->wal_fd);
			r->wal_fd = -1;
			return e;
		}
		r->wal_dev = st.st_dev;
		r->wal_ino = st.st_ino;
		rec_dir_of(r->wal_path, dir, sizeof(dir));
		fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return errno;
		e = fsync(fd) ? errno : 0;
		close(fd);
		if (e)
			return e;
	}
	return fdatasync(r->wal_fd) ? errno : 0;
}

/* Writer thread, lock held, commits waiting to be synced: sync them with
 * the lock let go, then wake their writers. */
static void sync_round(rec_store *r)
{
	struct rec_waiter *list = r->flushing, *w, *next;
	int e;

	r->flushing = NULL;
	r->unsynced = 0;
	pthread_mutex_unlock(&r->lock);
	e = wal_sync(r);
	pthread_mutex_lock(&r->lock);
	r->n_syncs++;
	if (e && !r->broken) {
		r->broken = 1;
		snprintf(r->broken_why, sizeof(r->broken_why), "fdatasync of "
			 "%s: %s", r->wal_path, strerror(e));
	}
	/* after one failed sync no later one proves anything: the WAL is
	 * replayed only up to its first lost frame */
	for (w = list; w; w = next) {
		next = w->next;                 /* w is gone once posted */
		if (r->broken) {
			w->err = ST_E_DB;
			snprintf(w->why, sizeof(w->why), "%s", r->broken_why);
		}
		w->done = 1;
		sem_post(&w->sem);
	}
}

/* Lock held: is the open batch to be committed now?  If not and it holds
 * lazy writes, *due gets when (monotonic ms). */
static int commit_due(rec_store *r, long long *due)
{
	*due = 0;
	if (!r->in_batch)
		return 0;
	if (!r->batch_n)
		/* failed writes only, and nobody inside: roll it back */
		return atomic_load(&r->want) == 0;
	if (r->batch || r->commit_asked || r->closing ||
	    r->batch_n >= REC_BATCH_MAX)
		return 1;
	if (r->lazy_n) {
		*due = r->lazy_t0_ms + r->lazy_ms;
		return mono_ms() >= *due;
	}
	return 0;
}

/* The record writer: commits batches and syncs the WAL (commit.c, "Group
 * commit: the record writer").  Holds the lock except while it syncs or
 * sleeps; ends at rec_close once nothing is pending. */
static void *writer_main(void *arg)
{
	rec_store *r = arg;
	struct timespec ts;
	long long due;

	pthread_mutex_lock(&r->lock);
	for (;;) {
		if (commit_due(r, &due)) {
			batch_commit(r);
			continue;
		}
		if (r->flushing || r->unsynced) {
			sync_round(r);
			continue;
		}
		if (r->closing && !r->in_batch)
			break;
		if (due) {
			ts.tv_sec = (time_t)(due / 1000);
			ts.tv_nsec = (long)(due % 1000) * 1000000;
			pthread_cond_timedwait(&r->writer_cv, &r->lock, &ts);
		} else {
			pthread_cond_wait(&r->writer_cv, &r->lock);
		}
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

void rec_writer_stop(rec_store *r)
{
	if (r->writer_up) {
		pthread_mutex_lock(&r->lock);
		r->closing = 1;
		pthread_cond_signal(&r->writer_cv);
		pthread_mutex_unlock(&r->lock);
		pthread_join(r->writer, NULL);
		r->writer_up = 0;
	}
	if (r->wal_fd >= 0)
		close(r->wal_fd);
	r->wal_fd = -1;
	free(r->wal_path);
	r->wal_path = NULL;
}

/* Lock held, a read statement stepped once (its snapshot taken): the
 * WAL frames it can see are synced before the caller hands any row on.
 * Another process's record writer makes a batch visible at its COMMIT and
 * durable a moment later, at its WAL sync; a reader whose output leaves
 * the machine (records sync, an evidence bundle, a checkpoint, the MES
 * outbox) must not ship what a power cut could still take back.  No WAL
 * file (an immutable read-only open, a checkpointed store): nothing to
 * do. */
int rec_read_durable(rec_store *r)
{
	const char *db = sqlite3_db_filename(r->db, "main");
	const char *wal = db && *db ? sqlite3_filename_wal(db) : NULL;
	int fd, err = ST_OK;

	if (!wal || !*wal)
		return ST_OK;
	fd = open(wal, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? ST_OK :
			rec_fail(r, ST_E_IO, "cannot open %s to make sure the "
				 "records read are on disk: %s", wal,
				 strerror(errno));
	if (fdatasync(fd))
		err = rec_fail(r, ST_E_IO, "cannot make sure the records read "
			       "are on disk (fdatasync of %s: %s)", wal,
			       strerror(errno));
	close(fd);
	return err;
}

int rec_unit_lost(const rec_store *r, int64_t unit_id)
{
	for (int i = 0; i < r->lost_n; i++)
		if (r->lost[i] == unit_id)
			return 1;
	return 0;
}

/* Grow an id array to hold at least n. */
static int ids_reserve(int64_t **ids, int *cap, int n)
{
	int64_t *m;
	int c = *cap ? *cap : 8;

	if (n <= *cap)
		return ST_OK;
	while (c < n)
		c *= 2;
	m = realloc(*ids, sizeof(**ids) * (size_t)c);
	if (!m)
		return ST_E_NOMEM;
	*ids = m;
	*cap = c;
	return ST_OK;
}

/* Lock held, the write of unit_id succeeded and may ride along: note its
 * unit (with room reserved on the lost list, so a failed commit can always
 * mark it) and let rec_wr_done join it without waiting.  Out of memory: it
 * stays a durable write. */
void rec_lazy_join(rec_store *r, struct rec_waiter *w, int64_t unit_id)
{
	int i;

	for (i = 0; i < r->lazy_units_n; i++)
		if (r->lazy_units[i] == unit_id)
			break;
	if (i == r->lazy_units_n) {
		if (ids_reserve(&r->lazy_units, &r->lazy_units_cap,
				r->lazy_units_n + 1) ||
		    ids_reserve(&r->lost, &r->lost_cap,
				r->lost_n + r->lazy_units_n + 1))
			return;
		r->lazy_units[r->lazy_units_n++] = unit_id;
	}
	w->lazy = 1;
}

/* Sleep until the writer posts w: the lock is not held. */
static void waiter_sleep(struct rec_waiter *w)
{
	while (sem_wait(&w->sem) != 0 && errno == EINTR)
		;
}

/* End of every write call (lock held, as after rec_wr_enter, whatever failed):
 * keep or roll back this write's savepoint, join the batch, hand it to the
 * writer, let the lock go, and wait until this write is durable unless it
 * is lazy.  Returns err, or the commit's (or the sync's) failure. */
int rec_wr_done(rec_store *r, struct rec_waiter *w, int err)
{
	sqlite3_stmt *s;
	int last;

	if (w->sp && sqlite3_get_autocommit(r->db)) {
		/* SQLite rolled the whole transaction back (an I/O error,
		 * a full disk): the batch-mates' writes are gone too */
		if (!err)
			err = rec_db_fail(r, ST_E_DB, "%s was rolled back", w->what);
		batch_finish(r, ST_E_DB, rec_errmsg(r));
	} else if (w->sp) {
		if (err) {
			s = r->stmt[S_SP_ROLLBACK];
			sqlite3_step(s);
			rec_stmt_done(s);
		}
		s = r->stmt[S_SP_RELEASE];
		if (sqlite3_step(s) != SQLITE_DONE && !err)
			err = rec_db_fail(r, ST_E_DB, "cannot finish %s", w->what);
		rec_stmt_done(s);
		if (!err) {
			r->batch_n++;
			r->batch_events += r->sp_events;
		}
		if (!err && w->lazy) {
			if (!r->lazy_n++)
				r->lazy_t0_ms = mono_ms();
		} else if (!err) {
			w->joined = 1;
			w->next = r->batch;
			r->batch = w;
		}
		if (w->now)
			r->commit_asked = 1;
	}
	last = atomic_fetch_sub(&r->want, 1) == 1;
	/* the writer acts on a durable write, a full batch, a batch of
	 * failed writes only, or the first lazy write (its timer) */
	if (r->in_batch && (w->joined || r->batch_n >= REC_BATCH_MAX ||
			    (!r->batch_n && last) || r->lazy_n == 1))
		pthread_cond_signal(&r->writer_cv);
	pthread_mutex_unlock(&r->lock);
	if (w->joined) {
		waiter_sleep(w);
		if (w->err) {
			/* the thread's error buffer may need the lock */
			pthread_mutex_lock(&r->lock);
			err = rec_fail(r, w->err, "cannot commit %s: %s", w->what,
				       w->why);
			pthread_mutex_unlock(&r->lock);
		}
	}
	sem_destroy(&w->sem);
	return err;
}

int rec_wr_end(rec_store *r, struct rec_waiter *w, int err)
{
	err = rec_wr_done(r, w, err);
	pthread_mutex_lock(&r->lock);
	return err;
}

/* The writer re-reads the delay when woken. */
int rec_set_lazy_ms(rec_store *r, int ms)
{
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (!err && ms < 0)
		err = rec_fail(r, ST_E_INVAL, "rec_set_lazy_ms: %d ms", ms);
	if (!err) {
		r->lazy_ms = ms;
		pthread_cond_signal(&r->writer_cv);
	}
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* Not a write: nothing to count in.  Asks the writer to commit the open
 * batch and waits, like a durable write, until everything written before
 * the call is durable. */
int rec_sync(rec_store *r)
{
	struct rec_waiter w;
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	memset(&w, 0, sizeof(w));
	sem_init(&w.sem, 0, 0);
	snprintf(w.what, sizeof(w.what), "the pending records");
	if (!err && r->in_batch && r->batch_n) {
		w.joined = 1;
		w.next = r->batch;
		r->batch = &w;
	} else if (!err && (r->flushing || r->unsynced)) {
		/* committed, the sync under way or due: the next one */
		w.joined = 1;
		w.next = r->flushing;
		r->flushing = &w;
	}
	if (w.joined) {
		pthread_cond_signal(&r->writer_cv);
		pthread_mutex_unlock(&r->lock);
		waiter_sleep(&w);
		pthread_mutex_lock(&r->lock);
	}
	sem_destroy(&w.sem);
	if (!err && w.err)
		err = rec_fail(r, ST_E_DB, "cannot commit the pending records: "
			       "%s; %lld lazy step records are lost", w.why,
			       r->lost_writes);
	if (!err && r->lost_writes)
		err = rec_fail(r, ST_E_DB, "%lld lazy step records were lost when "
			       "their commit failed (%s)", r->lost_writes,
			       r->lost_why);
	if (!err && r->broken)
		err = rec_fail(r, ST_E_DB, "the records disk failed to sync (%s): "
			       "records written since the sync before it may "
			       "not be on disk", r->broken_why);
	pthread_mutex_unlock(&r->lock);
	return err;
}

int rec_get_stats(rec_store *r, rec_stats *out)
{
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (!err && !out)
		err = rec_fail(r, ST_E_INVAL, "rec_get_stats: no output");
	if (!err) {
		out->events = r->n_events;
		out->writes = r->n_writes;
		out->commits = r->n_commits;
		out->signatures = r->n_sigs;
		out->max_batch = r->max_batch;
		out->lazy_writes = r->n_lazy;
		out->pending = r->lazy_n;
		out->lost = r->lost_writes;
	}
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* commit.c — group commit: every write call of records/ is a savepoint in
 * a batch that one COMMIT (one fsync) makes durable; lazy writes and the
 * flusher thread that commits them. */
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

/* ---- Group commit ----
 *
 * Every write call (a unit start, a step, a unit end, an event, ...) is a
 * SAVEPOINT inside the batch's IMMEDIATE transaction: its rows and the
 * event that describes them stand or fall together, and a write that fails
 * rolls back only itself.  A write that succeeded waits for the batch to
 * commit; the commit (one fsync for the whole batch) is made by the last
 * writer through, i.e. when no other writer is counted in (r->want), or
 * when the batch is full.  Writers queued on the lock while a commit
 * syncs thus form the next batch, so the number of commits falls as
 * concurrency rises while a lone writer still commits at once.  Each call
 * returns only after its own commit: ST_OK still means durable.  Events
 * are hashed, chained and signed one by one as they are appended, so the
 * chain order is the commit order.
 *
 * ---- Durable and lazy writes ----
 *
 * A lazy write (rec_step_ex with REC_LAZY) joins the batch the same way but
 * does not wait: it returns once its savepoint is released.  It is not
 * left uncommitted for long, because a batch is committed
 *  - by the last writer through when the batch holds a durable write (one
 *    is waiting), or by the REC_BATCH_MAX-th write, as before;
 *  - by a later durable write of any thread (it commits the batch it
 *    joins; a durable write never commits without the writes before it,
 *    since there is one transaction at a time and SQLite commits it whole);
 *  - by the flusher thread, REC_LAZY_MS after the batch's first lazy
 *    write, when nothing else has (it is started on the first lazy write
 *    and sleeps on lazy_cv otherwise);
 *  - by rec_sync and rec_close.
 * While a batch with lazy writes is open, this connection (all threads of
 * the process) reads them; another process sees them once committed and
 * waits up to REC_LAZY_MS (within busy_timeout) for the write lock.
 * If such a batch fails, its lazy writes are lost: their units go on the
 * lost list, and rec_step_ex refuses their later steps and rec_unit_end
 * refuses them a PASS, so a PASS is never recorded over missing steps. */

#define REC_BATCH_MAX	64		/* writes per commit at most, so a
					 * steady stream cannot delay a commit
					 * without bound */

/* Start of every write call: count the writer in before it queues on the
 * lock, so a writer that is already in knows a batch-mate is coming. */
int rec_wr_enter(rec_store *r, struct rec_waiter *w)
{
	w->next = NULL;
	w->sp = w->joined = w->done = w->err = w->now = w->lazy = 0;
	w->what[0] = w->why[0] = '\0';
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
	if (!r->in_batch) {
		s = r->stmt[S_BEGIN];
		if (sqlite3_step(s) != SQLITE_DONE)
			err = rec_db_fail(r, ST_E_DB, "cannot start a write (%s)",
					  w->what);
		rec_stmt_done(s);
		if (err)
			return err;
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

/* The batch is over (committed, err 0, or lost): wake its writers. */
static void batch_finish(rec_store *r, int err, const char *why)
{
	struct rec_waiter *w;

	if (!err) {
		r->n_commits++;
		r->n_events += r->batch_events;
		r->n_writes += r->batch_n;
		r->n_lazy += r->lazy_n;
		if (r->batch_n > r->max_batch)
			r->max_batch = r->batch_n;
	} else if (r->lazy_n) {
		/* room was made when each lazy write joined (rec_lazy_join) */
		for (int i = 0; i < r->lazy_units_n; i++)
			if (!rec_unit_lost(r, r->lazy_units[i]))
				r->lost[r->lost_n++] = r->lazy_units[i];
		r->lost_writes += r->lazy_n;
		snprintf(r->lost_why, sizeof(r->lost_why), "%s", why);
	}
	r->lazy_n = 0;
	r->lazy_units_n = 0;
	for (w = r->batch; w; w = w->next) {
		w->err = err;
		if (err)
			snprintf(w->why, sizeof(w->why), "%s", why);
		w->done = 1;
	}
	r->batch = NULL;
	r->batch_n = 0;
	r->batch_events = 0;
	r->in_batch = 0;
	pthread_cond_broadcast(&r->durable);
}

/* COMMIT the batch (the fsync), or roll it back if that fails: then every
 * write in it fails (and its lazy writes are lost), since none of them is
 * durable.  Returns the commit's outcome, the cause in why. */
int rec_batch_commit(rec_store *r, char why[REC_MSG_MAX])
{
	sqlite3_stmt *s = r->stmt[S_COMMIT];
	int err = ST_OK;

	why[0] = '\0';
	if (!r->batch_n) {
		/* only failed writes: nothing to sync */
		s = r->stmt[S_ROLLBACK];
		sqlite3_step(s);
		rec_stmt_done(s);
		r->in_batch = 0;
		return ST_OK;
	}
	if (sqlite3_step(s) != SQLITE_DONE) {
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

static long long mono_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The flusher: commits a batch whose lazy writes nobody else committed
 * within REC_LAZY_MS of the first.  Holds the lock except while it
 * sleeps; a commit failure is handled by batch_finish (lost list). */
static void *flusher_main(void *arg)
{
	rec_store *r = arg;
	char why[REC_MSG_MAX];
	struct timespec ts;
	long long due;

	pthread_mutex_lock(&r->lock);
	while (!r->closing) {
		if (!r->in_batch || !r->lazy_n) {
			pthread_cond_wait(&r->lazy_cv, &r->lock);
			continue;
		}
		due = r->lazy_t0_ms + r->lazy_ms;
		if (mono_ms() < due) {
			ts.tv_sec = (time_t)(due / 1000);
			ts.tv_nsec = (long)(due % 1000) * 1000000;
			pthread_cond_timedwait(&r->lazy_cv, &r->lock, &ts);
			continue;
		}
		rec_batch_commit(r, why);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* Lock held, a lazy write just joined an open batch that stays open: make
 * sure the flusher will commit it.  ST_OK, or an error when no thread can
 * be started (the caller then commits at once). */
static int flusher_kick(rec_store *r)
{
	sigset_t all, old;
	int rc;

	if (r->flusher_up) {
		pthread_cond_signal(&r->lazy_cv);
		return ST_OK;
	}
	/* signals stay with the threads that handle them */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&r->flusher, NULL, flusher_main, r);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc)
		return ST_E_NOMEM;
	r->flusher_up = 1;
	return ST_OK;
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
 * mark it) and let rec_wr_end join it without waiting.  Out of memory: it
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

/* End of every write call (lock held, as after rec_wr_enter, whatever failed):
 * keep or roll back this write's savepoint, join the batch, commit it when
 * no other writer is coming, and wait until this write is durable.  Returns
 * err, or the commit's failure. */
int rec_wr_end(rec_store *r, struct rec_waiter *w, int err)
{
	char why[REC_MSG_MAX];
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
	}
	/* commit when a durable write waits and nobody else is coming, when
	 * the batch is full, or when it holds only failed writes; a batch of
	 * lazy writes alone is left to the flusher */
	last = atomic_fetch_sub(&r->want, 1) == 1;
	if (r->in_batch && (w->now || r->batch_n >= REC_BATCH_MAX ||
			    (last && (r->batch || !r->batch_n))))
		rec_batch_commit(r, why);
	else if (r->in_batch && last && flusher_kick(r))
		rec_batch_commit(r, why);
	while (w->joined && !w->done)
		pthread_cond_wait(&r->durable, &r->lock);
	if (w->joined && w->err)
		err = rec_fail(r, w->err, "cannot commit %s: %s", w->what, w->why);
	return err;
}

/* The flusher re-reads the delay when woken. */
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
		pthread_cond_signal(&r->lazy_cv);
	}
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* Not a write: nothing to count in; the lock alone keeps every commit
 * out of the way. */
int rec_sync(rec_store *r)
{
	char why[REC_MSG_MAX];
	int err;

	if (!r)
		return ST_E_INVAL;
	err = rec_enter(r);
	if (!err && r->in_batch && rec_batch_commit(r, why))
		err = rec_fail(r, ST_E_DB, "cannot commit the pending records: "
			       "%s; %lld lazy step records are lost", why,
			       r->lost_writes);
	if (!err && r->lost_writes)
		err = rec_fail(r, ST_E_DB, "%lld lazy step records were lost when "
			       "their commit failed (%s)", r->lost_writes,
			       r->lost_why);
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
		out->max_batch = r->max_batch;
		out->lazy_writes = r->n_lazy;
		out->pending = r->lazy_n;
		out->lost = r->lost_writes;
	}
	pthread_mutex_unlock(&r->lock);
	return err;
}

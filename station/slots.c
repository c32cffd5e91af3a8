/* slots.c — the slot workers: a batch run's (worker_main) and an
 * interactive run's (worker_interactive), each taking unit after unit
 * from its programmer. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_int.h"

/* How often an interactive slot asks an empty programmer for a unit, and
 * looks for a programmer that is not (or no longer) plugged in. */
#define POLL_MS 300
#define PLUG_MS 1000

/* The class of cause an st_err names when nothing more precise was set. */
st_cause cause_of_err(int rc)
{
	switch (rc) {
	case ST_OK: return ST_CAUSE_NONE;
	case ST_E_PROTO: case ST_E_VERSION: return ST_CAUSE_GARBLED;
	case ST_E_TIMEOUT: return ST_CAUSE_SILENT;
	case ST_E_IO: return ST_CAUSE_LINK;
	case ST_E_UNPLUGGED: case ST_E_NOTFOUND: return ST_CAUSE_UNPLUGGED;
	case ST_E_FUSE_CONFLICT: return ST_CAUSE_FUSE_CONFLICT;
	case ST_E_HSM: case ST_E_NOTOKEN: case ST_E_PIN_LOCKED: case ST_E_PIN:
		return ST_CAUSE_HSM;
	case ST_E_DB: return ST_CAUSE_RECORDS;
	case ST_E_LOCKED: return ST_CAUSE_LOCKED;
	default: return ST_CAUSE_DEVICE;
	}
}

/* Hand an event to the front end. */
void emit(struct worker *w, st_event *ev)
{
	if (!ev->cause && ev->err)
		ev->cause = cause_of_err(ev->err);
	ev->slot = w->slot;
	ev->port = w->port;
	if (w->job->cb)
		w->job->cb(ev, w->job->cb_ctx);
}

/* Report that the slot stopped, with the cause. */
void slot_error(struct worker *w, int rc, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	st_event ev = { .kind = ST_EV_SLOT_ERROR, .err = rc, .detail = msg };

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	w->sum.slot_errors++;
	emit(w, &ev);
}

/* Errors that mean the HSM (session, token) went away, not the device. */
bool hsm_gone(int rc)
{
	return rc == ST_E_HSM || rc == ST_E_NOTOKEN || rc == ST_E_PIN_LOCKED;
}

/* A record could not be written: count it against the right cause.  With
 * signed records, a lost HSM is why the audit key cannot sign: exit 3 (HSM),
 * not 4 (records store). */
void record_failed(struct worker *w, int rc)
{
	if (hsm_gone(rc)) {
		w->sum.hsm_errors++;
		w->sum.slot_errors++;
	} else {
		w->sum.record_errors++;
	}
}

/* Is why (a rec_errmsg) a full records disk?  SQLite's words for
 * SQLITE_FULL, or the errno rec_db_why() appends to an I/O error (no space,
 * a quota, a file size limit).  The words, not a code: a failed group
 * commit reaches the unit only as its message. */
bool records_full(const char *why)
{
	char e[3][128];
	int i, errs[3] = { ENOSPC, EDQUOT, EFBIG };

	if (!why)
		return false;
	if (strstr(why, "database or disk is full"))
		return true;
	for (i = 0; i < 3; i++)
		if (strstr(why, strerror_r(errs[i], e[i], sizeof(e[i]))))
			return true;
	return false;
}

/* The slot error for a unit whose record could not be written (why: the
 * store's words).  open: the unit's record was opened and stays RUNNING,
 * as after a crash; the unit's next start closes it (next_unit).  A full
 * disk asks for space and a new start; anything else for the store to be
 * fixed. */
void records_stop_msg(char *buf, size_t len, const struct worker *w,
		      const char *uid, const char *why, bool open)
{
	if (records_full(why))
		snprintf(buf, len, "slot %d: unit %s: the records disk is full "
			 "(%s): %s; free space, then start again; %s", w->slot,
			 uid, why, open ? "the unit is NOT passed" :
			 "nothing was done to the unit", open ? "the unit's open "
			 "record will be closed then" : "the unit is provisioned then");
	else
		snprintf(buf, len, "slot %d: unit %s: %s; %s: fix the records "
			 "store and provision it again", w->slot, uid, why,
			 open ? "the unit is NOT passed and the slot stops" :
			 "nothing was done to the unit");
}

/* fuse-run callback for a dry run: one line per field, to the front end. */
static void plan_line(void *ctx, const char *line)
{
	struct unit *u = ctx;
	st_event ev = { .kind = ST_EV_FUSE_PLAN, .uid = u->info.uid_hex,
			.detail = line };

	emit(u->w, &ev);
}

/* The same for a field of the plan, as data. */
static void plan_field(void *ctx, const char *field, const char *current,
		       const char *target, const char *action, const char *line)
{
	struct unit *u = ctx;
	st_event ev = { .kind = ST_EV_FUSE_PLAN, .uid = u->info.uid_hex,
			.detail = line, .field = field, .current = current,
			.target = target, .action = action };

	emit(u->w, &ev);
}

/* Dry run of one slot: the unit in the programmer is identified and its
 * fuse plan printed (current, target, action per field).  Only reads: no
 * key, no certificate, no burn, no release, no record. */
static void dry_run_slot(struct worker *w, drv_dev *dev)
{
	struct unit u = { .w = w, .dev = dev };
	st_fuse_run run = { .dev = dev, .plan = st_profile_fuse_plan(w->job->prof),
			    .dry_run = true, .plan_line = plan_line,
			    .plan_field = plan_field, .ctx = &u };
	int rc = drv_identify(dev, &u.info);

	if (rc) {
		slot_error(w, rc, "slot %d (%s): identify failed: %s", w->slot, w->port,
			   drv_errmsg(dev));
		return;
	}
	run.lifecycle = u.info.lifecycle;
	run.banks = u.info.fuse_banks;
	run.bitprog_banks = u.info.bitprog_banks;
	rc = st_fuse_run_plan(&run);
	if (rc && st_err_is_link(rc))
		slot_error(w, rc, "slot %d (%s): %s", w->slot, w->port, run.reason);
	else if (rc)
		plan_line(&u, run.reason);
	w->sum.skipped++;
}

/* Hotplug: wait up to run->plug_wait_ms for this slot's programmer to be
 * plugged, then open it.  ST_OK with *dev open, or the last open error. */
static int wait_plug(struct worker *w, const drv_opts *opts, drv_dev **dev)
{
	int64_t deadline = st_now_ms() + w->job->run->plug_wait_ms;
	st_event ev = { .kind = ST_EV_STEP, .step = ST_STEP_PLUG, .outcome = ST_OUTCOME_WAIT,
			.detail = "programmer absent: waiting for it to be plugged" };
	drv_monitor *m = NULL;
	char err[256];
	int rc = ST_E_NOTFOUND;

	emit(w, &ev);
	drv_close(*dev);
	*dev = NULL;
	if (drv_monitor_open(&m, err, sizeof(err)) != ST_OK)
		return rc;
	/* Any arrival may be ours (attached ones arrive first): try to open.
	 * A device still settling may fail to open: keep waiting.  Once a
	 * second without events, try anyway, in case an event was missed. */
	while (st_now_ms() < deadline) {
		drv_hotplug hp;
		int64_t left = deadline - st_now_ms();
		int got = drv_monitor_wait(m, left > 1000 ? 1000 : (int)left, &hp);

		if (got < 0)
			break;
		if (got == 1 && hp.event != DRV_HOTPLUG_ARRIVED)
			continue;
		drv_close(*dev);
		*dev = NULL;
		rc = drv_open(w->port, opts, dev);
		if (rc == ST_OK)
			break;
	}
	drv_monitor_close(m);
	return rc;
}


/* After a unit that lost the HSM session or token: re-open the session and
 * find the CA key again.  Non-zero (after a slot error) when that fails:
 * the slot stops rather than failing every following unit the same way. */
static int hsm_recover(struct worker *w, hsm_session *sess, hsm_obj *ca_priv)
{
	const struct job *job = w->job;

	if (!hsm_session_reopen(sess) && !hsm_find_privkey(sess, job->ca_label, ca_priv))
		return 0;
	slot_error(w, ST_E_HSM, "slot %d: the HSM session or token was lost "
		   "(%s) and could not be re-opened: the slot stops; put the "
		   "token back and restart the station", w->slot,
		   hsm_session_errmsg(sess));
	w->sum.hsm_errors++;
	return ST_E_HSM;
}

/* Has the run been stopped, or this slot? */
static bool halted(struct worker *w)
{
	struct job *job = (struct job *)w->job;
	bool h;

	pthread_mutex_lock(&job->lock);
	h = job->stopping || job->ctl[w->slot - 1].paused ||
	    (job->run->stop && atomic_load(job->run->stop));
	pthread_mutex_unlock(&job->lock);
	return h;
}

/* A slot worker's own HSM session and the run's CA key in it (ca is the
 * worker's copy of the CA certificate, NULL when it could not be made).
 * Non-zero after a slot error. */
static int slot_hsm_open(struct worker *w, X509 *ca, hsm_session **sess,
			 hsm_obj *ca_priv)
{
	const struct job *job = w->job;
	int rc;

	if (!ca) {
		slot_error(w, ST_E_NOMEM, "slot %d: out of memory", w->slot);
		return ST_E_NOMEM;
	}
	rc = hsm_session_open(job->h, sess);
	if (!rc)
		rc = hsm_find_privkey(*sess, job->ca_label, ca_priv);
	if (rc)
		slot_error(w, rc, "slot %d: HSM session failed: %s", w->slot,
			   *sess ? hsm_session_errmsg(*sess) : hsm_errmsg(job->h));
	return rc;
}

/* Wait on job->cond, with job->lock held, for at most ms (0: no limit). */
static void wait_locked(struct job *job, int ms)
{
	struct timespec t;

	if (ms <= 0) {
		pthread_cond_wait(&job->cond, &job->lock);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&job->cond, &job->lock, &t);
}

/* Stop taking units on this slot until the operator starts it again. */
static void pause_slot(struct worker *w)
{
	struct job *job = (struct job *)w->job;

	pthread_mutex_lock(&job->lock);
	job->ctl[w->slot - 1].paused = true;
	pthread_mutex_unlock(&job->lock);
}

/* Tell the front end the slot has no unit in work, and why. */
static void idle(struct worker *w, const char *why)
{
	st_event ev = { .kind = ST_EV_SLOT_IDLE, .detail = why };

	emit(w, &ev);
}

/* Keep a unit that did not pass in its programmer until the operator
 * decides.  Returns the st_cmd, or -1 when the run or the slot stops
 * first (the unit stays where it is). */
static int hold_unit(struct worker *w, struct unit *u)
{
	struct job *job = (struct job *)w->job;
	struct slot_ctl *c = &job->ctl[w->slot - 1];
	bool q = u->result == ST_VERDICT_QUARANTINE;
	st_event ev = { .kind = ST_EV_UNIT_HELD, .uid = u->info.uid_hex,
			.result = u->result, .err = u->err,
			.cause = u->cause,
			.detail = q ? "set the unit aside for a supervisor; release it "
				      "from the programmer (skip or quarantine)" :
				      "retry it, skip it (its FAIL stands) or quarantine it" };
	int cmd;

	pthread_mutex_lock(&job->lock);
	c->held = true;
	c->held_quarantine = q;
	c->cmd = -1;
	pthread_mutex_unlock(&job->lock);
	emit(w, &ev);
	pthread_mutex_lock(&job->lock);
	while (c->cmd < 0 && !job->stopping && !c->paused)
		wait_locked(job, 0);
	cmd = c->cmd;
	c->cmd = -1;
	c->held = false;
	pthread_mutex_unlock(&job->lock);
	/* A unit the engine quarantined is already recorded as such. */
	if (q && cmd == ST_CMD_QUARANTINE)
		cmd = ST_CMD_SKIP;
	return cmd;
}

/* The operator sets a failed unit aside: a QUARANTINE record of its own
 * (the FAIL record stays), then the verdict is announced. */
static int quarantine_held(struct worker *w, struct unit *u)
{
	const struct job *job = w->job;
	char reason[768];
	rec_unit_start start = unit_start_of(w, u);
	rec_unit_result e = { .result = st_verdict_name(ST_VERDICT_QUARANTINE),
			      .reason = reason };
	st_event ev = { .kind = ST_EV_UNIT_DONE, .uid = u->info.uid_hex,
			.result = ST_VERDICT_QUARANTINE, .detail = reason,
			.err = ST_E_STATE, .cause = ST_CAUSE_OPERATOR };
	int64_t id;
	int rc;

	snprintf(reason, sizeof(reason), "set aside by operator %s after FAIL: %s",
		 job->run->operator_name ? job->run->operator_name : "?", u->reason);
	rc = rec_unit_begin(job->rec, &start, &id);
	if (rc == ST_E_STATE && start.work_order) {
		/* A QUARANTINE record holds no quota, but its RUNNING row would
		 * need a free one for a moment: with the work order full, it is
		 * recorded without the work order rather than not at all. */
		start.work_order = NULL;
		rc = rec_unit_begin(job->rec, &start, &id);
	}
	if (!rc)
		rc = rec_step(job->rec, id, st_step_name(ST_STEP_QUARANTINE), "ok", reason);
	if (!rc)
		rc = rec_unit_end(job->rec, id, &e);
	if (rc) {
		slot_error(w, hsm_gone(rc) ? rc : ST_E_DB, "slot %d: unit %s: the "
			   "quarantine could not be recorded (%s); keep the unit aside "
			   "and fix the records store", w->slot, u->info.uid_hex,
			   rec_errmsg(job->rec));
		record_failed(w, rc);
		return ST_E_DB;
	}
	w->sum.quarantine++;
	emit(w, &ev);
	return 0;
}

/* Sleep up to ms unless the run or the slot is stopped meanwhile. */
static void nap(struct worker *w, int ms)
{
	struct job *job = (struct job *)w->job;

	pthread_mutex_lock(&job->lock);
	if (!job->stopping && !job->ctl[w->slot - 1].paused)
		wait_locked(job, ms);
	pthread_mutex_unlock(&job->lock);
}

/* The programmer, the HSM session and the CA a slot worker works with. */
struct slot_io {
	drv_dev *dev;
	hsm_session *sess;
	X509 *ca;            /* the worker's copy of the CA certificate */
	hsm_obj ca_priv;     /* the CA key in sess (found again by hsm_recover) */
};

/* How one unit cycle ended (unit_cycle); *err gives the cause of a stop. */
enum cycle_end {
	CYCLE_NEXT,       /* the unit was released (or skipped): take the next */
	CYCLE_RETRY,      /* the operator wants the same unit run again */
	CYCLE_EMPTY,      /* no unit in the programmer (nothing was said) */
	CYCLE_HELD,       /* the run or the slot stopped while the unit was
			   * held: it stays in the programmer */
	CYCLE_STOP,       /* the slot cannot go on (said) */
	CYCLE_UNIT_STOP,  /* a step of the unit stopped the slot: the link or
			   * the records failed (said) */
};

/* The unit stopped its slot because a record could not be written
 * (anything but a lost link, which unit_cycle reports itself): say so,
 * once, and count it as a records error.  The unit was not passed. */
static void records_stopped(struct worker *w, const struct unit *u)
{
	st_event se = { .kind = ST_EV_SLOT_ERROR, .uid = u->info.uid_hex,
			.err = u->err ? u->err : ST_E_DB };
	char msg[768];

	if (u->stop_said || (u->err && st_err_is_link(u->err)))
		return;
	records_stop_msg(msg, sizeof(msg), w, u->info.uid_hex, u->reason, true);
	se.detail = msg;
	record_failed(w, se.err);
	emit(w, &se);
}

/* One unit, the same in every slot worker: identify it and decide what to
 * do with it (next_unit), open its record (begin_unit), run its steps,
 * close the record with its verdict, then release it from the programmer.
 * In an interactive run a unit that did not pass is held in the
 * programmer until the operator decides (retry, skip, quarantine).
 * *began is set when the unit got a record. */
static enum cycle_end unit_cycle(struct worker *w, struct slot_io *io, int *err,
				 bool *began)
{
	struct unit u = { .w = w, .dev = io->dev, .sess = io->sess, .ca = io->ca,
			  .ca_priv = io->ca_priv, .t0 = st_now_ms() };
	int rc = next_unit(w, &u), cmd = ST_CMD_SKIP, b = 0;

	*began = false;
	if (rc == ST_E_NO_TARGET) {
		unclaim_uid(w);
		return CYCLE_EMPTY;
	}
	if (rc < 0 || (rc != ADMIT_SKIP && (b = begin_unit(w, &u)))) {
		/* b == 1: the work order's quota is taken (said): the slot
		 * stops until a new work order or a start */
		unclaim_uid(w);
		*err = rc < 0 ? rc : b == 1 ? ST_E_STATE : ST_E_DB;
		return CYCLE_STOP;
	}
	if (rc != ADMIT_SKIP) {
		*began = true;
		run_unit(&u);
		finish_unit(&u);
		set_live(w, 0);
	}
	/* A dead session or a pulled token: re-open it and find the CA key
	 * again (before the unit is held: a retry needs it); if that fails
	 * the slot stops rather than failing every following unit the same
	 * way. */
	if (!u.stop_slot && u.hsm_lost && hsm_recover(w, io->sess, &io->ca_priv)) {
		unclaim_uid(w);
		free(u.cert_pem);
		*err = ST_E_HSM;
		return CYCLE_STOP;
	}
	if (w->job->run->interactive && !u.stop_slot && rc != ADMIT_SKIP &&
	    !st_verdict_good(u.result))
		cmd = hold_unit(w, &u);
	if (cmd == ST_CMD_QUARANTINE && quarantine_held(w, &u))
		u.stop_slot = u.stop_said = true;
	unclaim_uid(w);
	free(u.cert_pem);
	if (u.stop_slot) {
		bool link = u.err && st_err_is_link(u.err);

		if (link)
			slot_error(w, u.err, "slot %d (%s): %s", w->slot, w->port,
				   u.reason);
		records_stopped(w, &u);
		*err = link ? u.err : ST_E_DB;
		return CYCLE_UNIT_STOP;
	}
	if (cmd == ST_CMD_RETRY)
		return CYCLE_RETRY;
	if (cmd < 0)
		return CYCLE_HELD;
	rc = drv_release(io->dev);
	if (rc) {
		slot_error(w, rc, "slot %d (%s): releasing the unit failed: %s",
			   w->slot, w->port, drv_errmsg(io->dev));
		*err = rc;
		return CYCLE_STOP;
	}
	return CYCLE_NEXT;
}

/* The slot worker of a batch run: open programmer and HSM session, then
 * unit after unit until there is none, or max_units. */
void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct job *job = w->job;
	drv_opts opts = { .timeout_ms = job->cfg->timeout_ms,
			  .retries = job->cfg->retries,
			  .target_opts = st_profile_target_opts(job->prof) };
	struct slot_io io = { .ca = X509_dup(job->ca) };
	int rc, units = 0;

	if (slot_hsm_open(w, io.ca, &io.sess, &io.ca_priv))
		goto cleanup;
	rc = drv_open(w->port, &opts, &io.dev);
	if ((rc == ST_E_NOTFOUND || rc == ST_E_UNPLUGGED) && job->run->plug_wait_ms > 0)
		rc = wait_plug(w, &opts, &io.dev);
	if (rc) {
		slot_error(w, rc, "slot %d (%s): programmer not usable: %s", w->slot,
			   w->port, io.dev ? drv_errmsg(io.dev) : st_strerror(rc));
		goto cleanup;
	}
	{
		st_event ev = { .kind = ST_EV_SLOT_READY, .detail = drv_driver_name(io.dev) };

		emit(w, &ev);
	}
	if (job->run->dry_run) {
		dry_run_slot(w, io.dev);
		goto done;
	}
	while ((!job->run->max_units || units < job->run->max_units) && !halted(w)) {
		bool began;
		enum cycle_end end = unit_cycle(w, &io, &rc, &began);

		units += began;
		/* Unplugged and hotplug on: the slot comes back with its
		 * programmer, and the interrupted unit is done again. */
		if (end == CYCLE_UNIT_STOP && rc == ST_E_UNPLUGGED &&
		    job->run->plug_wait_ms > 0 && wait_plug(w, &opts, &io.dev) == ST_OK)
			continue;
		if (end != CYCLE_NEXT)
			break;
	}
done:
	{
		st_event ev = { .kind = ST_EV_SLOT_DONE };

		emit(w, &ev);
	}
cleanup:
	drv_close(io.dev);
	hsm_session_close(io.sess);
	X509_free(io.ca);
	return NULL;
}

/* A failure that ends serve_units(): an unplugged programmer is waited for
 * (returns 1: reopen it when it is back); anything else pauses the slot
 * until the operator starts it again (returns 0). */
static int gone(struct worker *w, int rc)
{
	if (rc == ST_E_UNPLUGGED)
		return 1;
	pause_slot(w);
	return 0;
}

/* Units one after the other on an open programmer, until the run or the
 * slot stops (0) or the programmer is unplugged (1); another link or
 * records error pauses the slot (0). */
static int serve_units(struct worker *w, struct slot_io *io)
{
	bool waiting = false, began;
	int err = ST_OK;

	while (!halted(w)) {
		switch (unit_cycle(w, io, &err, &began)) {
		case CYCLE_EMPTY:
			if (!waiting)
				idle(w, "waiting for a unit");
			waiting = true;
			nap(w, POLL_MS);
			continue;
		case CYCLE_NEXT:
		case CYCLE_RETRY:
			waiting = false;
			continue;
		case CYCLE_HELD:
			return 0;
		case CYCLE_STOP:
		case CYCLE_UNIT_STOP:
			return gone(w, err);
		}
	}
	return 0;
}

/* The slot worker of an interactive run: (re)open the programmer whenever
 * the slot is started or the programmer is plugged (back) in, serve units,
 * wait while stopped, until the run ends. */
void *worker_interactive(void *arg)
{
	struct worker *w = arg;
	struct job *job = (struct job *)w->job;
	drv_opts opts = { .timeout_ms = job->cfg->timeout_ms,
			  .retries = job->cfg->retries,
			  .target_opts = st_profile_target_opts(job->prof) };
	struct slot_io io = { .ca = X509_dup(job->ca) };
	bool absent = false;  /* "waiting for the programmer" was said */
	int rc;

	if (slot_hsm_open(w, io.ca, &io.sess, &io.ca_priv))
		goto cleanup;
	for (;;) {
		drv_dev *dev = NULL;
		bool paused;

		pthread_mutex_lock(&job->lock);
		paused = job->ctl[w->slot - 1].paused;
		if (job->stopping) {
			pthread_mutex_unlock(&job->lock);
			break;
		}
		pthread_mutex_unlock(&job->lock);
		if (paused) {
			idle(w, "stopped: start the slot to take units");
			pthread_mutex_lock(&job->lock);
			while (job->ctl[w->slot - 1].paused && !job->stopping)
				wait_locked(job, 0);
			pthread_mutex_unlock(&job->lock);
			continue;
		}
		rc = drv_open(w->port, &opts, &dev);
		if (rc == ST_E_NOTFOUND || rc == ST_E_UNPLUGGED) {
			/* Not plugged in (yet): look again, units start by themselves. */
			drv_close(dev);
			if (!absent)
				idle(w, "waiting for the programmer to be plugged in");
			absent = true;
			nap(w, PLUG_MS);
			continue;
		}
		if (rc) {
			slot_error(w, rc, "slot %d (%s): programmer not usable: %s; check "
				   "it and start the slot again", w->slot, w->port,
				   dev ? drv_errmsg(dev) : st_strerror(rc));
			drv_close(dev);
			pause_slot(w);
			continue;
		}
		absent = false;
		{
			st_event ev = { .kind = ST_EV_SLOT_READY, .detail = drv_driver_name(dev) };

			emit(w, &ev);
		}
		io.dev = dev;
		if (serve_units(w, &io))
			nap(w, PLUG_MS);
		drv_close(dev);
		io.dev = NULL;
	}
	{
		st_event ev = { .kind = ST_EV_SLOT_DONE };

		emit(w, &ev);
	}
cleanup:
	hsm_session_close(io.sess);
	X509_free(io.ca);
	return NULL;
}

/* ui.c — the UI's loop, its flows (login, work order, arming, slot
 * commands, quitting) and the hand-over of engine events from the worker
 * threads.  Drawing is in draw.c.
 *
 * Threads: the engine's slot workers call on_event(), which copies and
 * escapes the event, appends it to the queue and writes a byte to a pipe.
 * The UI thread poll()s that pipe, the keyboard and a signalfd; it alone
 * touches ncurses and the UI state. */
#include <curses.h>
#include <errno.h>
#include <fcntl.h>
#include <langinfo.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <term.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "ui/ui_int.h"

char *ui_escape_dup(const char *s)
{
	size_t n = 0;
	char *out, *p;

	if (!s)
		return NULL;
	for (const char *c = s; *c; c++)
		n += (*c >= 0x20 && *c < 0x7f) ? 1 : 4;
	out = malloc(n + 1);
	if (!out)
		return NULL;
	p = out;
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c >= 0x20 && *c < 0x7f)
			*p++ = (char)*c;
		else
			p += sprintf(p, "\\x%02x", *c);
	}
	*p = '\0';
	return out;
}

/* Length of the valid UTF-8 sequence at s of a printable character that
 * is neither a control (C0, DEL, C1) nor outside Unicode, else 0; *cp
 * gets the code point. */
static size_t utf8_printable(const unsigned char *s, unsigned *cp)
{
	size_t n = s[0] >= 0xf0 && s[0] < 0xf5 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
	unsigned c;

	if (s[0] >= 0xf5 || n == 0)
		return 0;
	c = s[0] & (0x7f >> n);
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	/* overlong forms, surrogates, C1 controls, beyond U+10FFFF */
	if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10ffff)) ||
	    (c >= 0xd800 && c <= 0xdfff) || (c >= 0x80 && c < 0xa0))
		return 0;
	*cp = c;
	return n;
}

char *ui_text_dup(const char *s, bool utf8)
{
	const unsigned char *c;
	char *out, *p;
	unsigned cp;

	if (!s)
		return NULL;
	out = malloc(strlen(s) * 4 + 1);
	if (!out)
		return NULL;
	p = out;
	for (c = (const unsigned char *)s; *c;) {
		size_t n = *c >= 0x80 ? utf8_printable(c, &cp) : 0;

		if (*c >= 0x20 && *c < 0x7f) {
			*p++ = (char)*c++;
		} else if (n && utf8) {
			memcpy(p, c, n);
			p += n;
			c += n;
		} else if (n && (cp == 0x2013 || cp == 0x2014)) {
			*p++ = '-';   /* an ASCII terminal: our dashes as '-' */
			c += n;
		} else {
			p += sprintf(p, "\\x%02x", *c++);
		}
	}
	*p = '\0';
	return out;
}

enum ui_verdict ui_verdict_of(st_verdict result)
{
	switch (result) {
	case ST_VERDICT_PASS: return V_PASS;
	case ST_VERDICT_UNFUSED: return V_UNFUSED;
	case ST_VERDICT_QUARANTINE: return V_QUARANTINE;
	case ST_VERDICT_FAIL: break;
	}
	return V_FAIL;
}

/* A step's outcome as the panel's mark. */
static enum ui_step_state outcome_of(st_outcome outcome)
{
	return outcome == ST_OUTCOME_OK ? STP_OK :
	       outcome == ST_OUTCOME_FAIL ? STP_FAIL : STP_SKIP;
}

/* Is this the step the engine announces when it looked up a unit's history
 * (and, with outcome skip, did not provision it)? */
static bool is_history_skip(const struct ui_ev *e)
{
	return e->step == ST_STEP_HISTORY && e->outcome == ST_OUTCOME_SKIP;
}

static void ev_free(struct ui_ev *e)
{
	if (!e)
		return;
	free(e->uid);
	free(e->detail);
	free(e->cert_serial);
	free(e);
}

/* The engine's callback (any worker thread): copy, queue, wake the UI.
 * Never blocks on the UI: the pipe is only a wake-up and is non-blocking. */
static void on_event(const st_event *ev, void *ctx)
{
	struct ui_queue *q = ctx;
	struct ui_ev *e = calloc(1, sizeof(*e));
	char b = 1;

	if (!e)
		return;
	e->kind = ev->kind;
	e->slot = ev->slot;
	e->err = ev->err;
	e->cause = ev->cause;
	e->elapsed_ms = ev->elapsed_ms;
	e->uid = ui_escape_dup(ev->uid);
	e->step = ev->step;
	e->outcome = ev->outcome;
	/* the engine's words (our em-dash stays); device strings in them
	 * were made printable by the driver, and controls are escaped here */
	e->detail = ui_text_dup(ev->detail, q->utf8);
	e->result = ev->result;
	e->cert_serial = ui_escape_dup(ev->cert_serial);
	e->fuses = ev->fuses;
	pthread_mutex_lock(&q->lock);
	if (q->tail)
		q->tail->next = e;
	else
		q->head = e;
	q->tail = e;
	pthread_mutex_unlock(&q->lock);
	if (write(q->wfd, &b, 1) < 0) {
		/* EAGAIN: the UI has wake-ups pending already. */
	}
}

/* Take everything queued so far (oldest first). */
static struct ui_ev *queue_take(struct ui_queue *q)
{
	struct ui_ev *e;
	char buf[256];

	while (read(q->rfd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&q->lock);
	e = q->head;
	q->head = q->tail = NULL;
	pthread_mutex_unlock(&q->lock);
	return e;
}

/* A line for the log file and the log pane (text already escaped). */
static void ui_log(struct ui *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ui_log(struct ui *u, const char *fmt, ...)
{
	char line[1024], stamp[32];
	time_t t = time(NULL);
	struct tm tm;
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	gmtime_r(&t, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (u->logfd >= 0) {
		char out[1100];

		n = snprintf(out, sizeof(out), "%s %s\n", stamp, line);
		if (n > 0 && write(u->logfd, out, (size_t)n < sizeof(out) ? (size_t)n :
				   sizeof(out) - 1) < 0) {
			/* Nowhere else to say it while the screen is ours. */
		}
	}
	n = (int)strftime(u->log[u->loghead], sizeof(u->log[0]), "%H:%M:%S ", &tm);
	snprintf(u->log[u->loghead] + n, sizeof(u->log[0]) - (size_t)n, "%.*s",
		 (int)(sizeof(u->log[0]) - 10), line);
	u->loghead = (u->loghead + 1) % UI_LOG_LINES;
	if (u->nlog < UI_LOG_LINES)
		u->nlog++;
}

int ui_busy_slots(const struct ui *u)
{
	int n = 0;

	for (int i = 0; i < u->o->nslots; i++)
		if (u->slots[i].state == SL_BUSY || u->slots[i].state == SL_HELD)
			n++;
	return n;
}

static int step_index(const struct ui *u, const char *name)
{
	for (int i = 0; i < u->nsteps && i < UI_MAX_STEPS; i++)
		if (!strcmp(u->steps[i], name))
			return i;
	return -1;
}

/* A full work order's counts for its panel ("work order complete (N/N)"). */
static void quota_counts(struct ui *u, struct ui_slot *s)
{
	st_workorder_info wi;
	st_rec_step step;
	char err[256];

	s->quota = s->quota_done = -1;
	if (u->work_order[0] && !st_records_workorder_get(u->o->st, u->work_order, &wi, &step,
							   err, sizeof(err))) {
		s->quota = wi.quota;
		s->quota_done = wi.pass + wi.running;
	}
}

/* Fold one engine event into what the screen shows.  A unit's verdict
 * stays on its panel until the next unit starts: events after it (the
 * programmer unplugged, the slot idle, a retried unit not provisioned)
 * add to it, they do not clear it. */
static void apply(struct ui *u, const struct ui_ev *e)
{
	struct ui_slot *s;
	int i;

	if (e->kind == ST_EV_WARNING) {  /* run-wide (slot 0): e.g. CA renewal */
		ui_log(u, "WARNING: %s", e->detail ? e->detail : "");
		return;
	}
	if (e->slot < 1 || e->slot > u->o->nslots)
		return;
	s = &u->slots[e->slot - 1];
	switch (e->kind) {
	case ST_EV_SLOT_READY:
		if (s->state != SL_VERDICT && s->state != SL_HELD)
			s->state = SL_IDLE;
		s->slot_cause = ST_CAUSE_NONE;
		s->stopped = false;
		s->ready = true;
		snprintf(s->note, sizeof(s->note), "programmer ready (%s)",
			 e->detail ? e->detail : "?");
		ui_log(u, "slot %d %s: programmer ready (%s)", e->slot, s->port,
		       e->detail ? e->detail : "?");
		break;
	case ST_EV_SLOT_IDLE:
		/* The last verdict or error stays up until the next unit; a held
		 * unit the operator decided on keeps its verdict. */
		if (s->state == SL_HELD)
			s->state = SL_VERDICT;
		else if (s->state != SL_VERDICT && s->state != SL_ERROR)
			s->state = SL_IDLE;
		s->stopped = e->detail && !strncmp(e->detail, "stopped", 7);
		s->ready = !s->stopped;
		snprintf(s->note, sizeof(s->note), "%s", e->detail ? e->detail : "");
		ui_log(u, "slot %d: %s", e->slot, e->detail ? e->detail : "idle");
		break;
	case ST_EV_UNIT_START:
		s->state = SL_BUSY;
		s->ready = false;
		snprintf(s->uid, sizeof(s->uid), "%s", e->uid ? e->uid : "");
		memset(s->steps, 0, sizeof(s->steps));
		s->verdict = V_NONE;
		s->cause = s->slot_cause = ST_CAUSE_NONE;
		s->skipped = false;
		s->reason[0] = s->note[0] = s->failed_step[0] = '\0';
		s->t0 = s->step_t0 = st_now_ms();
		s->elapsed_ms = 0;
		ui_log(u, "slot %d: unit %s started", e->slot, s->uid);
		break;
	case ST_EV_STEP:
		i = step_index(u, st_step_name(e->step));
		if (i >= 0)
			s->steps[i] = (unsigned char)outcome_of(e->outcome);
		if (outcome_of(e->outcome) == STP_FAIL)
			snprintf(s->failed_step, sizeof(s->failed_step), "%s",
				 st_step_name(e->step));
		s->step_t0 = st_now_ms();
		if (e->step == ST_STEP_HISTORY) {
			bool same = e->uid && !strcmp(e->uid, s->uid) && s->verdict != V_NONE;

			snprintf(s->uid, sizeof(s->uid), "%s", e->uid ? e->uid : "");
			snprintf(s->note, sizeof(s->note), "%s", e->detail ? e->detail : "");
			if (is_history_skip(e)) {
				/* Not provisioned, as its records say: the unit
				 * still ends with a verdict on its panel (the one
				 * it had, when this is the same unit retried). */
				s->state = SL_VERDICT;
				s->ready = false;
				s->skipped = true;
				s->slot_cause = ST_CAUSE_NONE;
				if (!same) {
					s->verdict = e->cause == ST_CAUSE_QUARANTINED ?
						     V_QUARANTINE : e->cause ==
						     ST_CAUSE_ALREADY_UNFUSED ? V_UNFUSED :
						     e->cause == ST_CAUSE_ALREADY_PASS ?
						     V_PASS : V_FAIL;
					s->elapsed_ms = 0;
				}
				/* a clone retried is still a clone */
				if (!same || s->cause != ST_CAUSE_CLONE)
					s->cause = e->cause;
				snprintf(s->reason, sizeof(s->reason), "%s",
					 e->detail ? e->detail : "");
			}
		}
		ui_log(u, "slot %d: %s %s %s", e->slot, st_step_name(e->step),
		       st_outcome_name(e->outcome), e->detail ? e->detail : "");
		break;
	case ST_EV_UNIT_DONE:
		u->sync_at = 0;    /* one more event to sync: read the lag again */
		s->state = SL_VERDICT;
		snprintf(s->uid, sizeof(s->uid), "%s", e->uid ? e->uid : "");
		s->verdict = ui_verdict_of(e->result);
		s->cause = e->cause;
		s->slot_cause = ST_CAUSE_NONE;
		s->skipped = false;
		snprintf(s->reason, sizeof(s->reason), "%s", e->detail ? e->detail : "");
		s->note[0] = '\0';
		s->elapsed_ms = e->elapsed_ms;
		switch (s->verdict) {
		case V_PASS: u->pass++; break;
		case V_UNFUSED: u->unfused++; break;  /* good, not locked */
		case V_QUARANTINE: u->quarantine++; break;
		default: u->fail++; break;
		}
		if (u->bell_on_fail && (s->verdict == V_FAIL || s->verdict == V_QUARANTINE))
			beep();
		{
			struct ui_recent *r = &u->recent[u->nrecent % UI_RECENT];
			time_t t = time(NULL);
			struct tm tm;

			localtime_r(&t, &tm);
			strftime(r->when, sizeof(r->when), "%H:%M:%S", &tm);
			r->slot = e->slot;
			memcpy(r->uid, s->uid, sizeof(r->uid));
			r->result = s->verdict;
			snprintf(r->serial, sizeof(r->serial), "%s",
				 e->cert_serial ? e->cert_serial : "-");
			snprintf(r->fuses, sizeof(r->fuses), "%s",
				 st_fuses_name(e->fuses) ? st_fuses_name(e->fuses) : "-");
			snprintf(r->wo, sizeof(r->wo), "%s", u->work_order);
			r->ms = e->elapsed_ms;
			u->nrecent++;
		}
		ui_log(u, "slot %d: unit %s %s%s%s (recorded)", e->slot, s->uid,
		       ui_verdict_word(s->verdict), s->reason[0] ? ": " : "", s->reason);
		break;
	case ST_EV_UNIT_HELD:
		s->state = SL_HELD;
		s->ready = false;
		if (e->cause)
			s->cause = e->cause;
		snprintf(s->note, sizeof(s->note), "%s", e->detail ? e->detail : "");
		ui_log(u, "slot %d: unit %s held: %s", e->slot, s->uid, s->note);
		break;
	case ST_EV_SLOT_ERROR:
		if (e->cause == ST_CAUSE_QUOTA_FULL) {
			/* the normal end of a batch, not an error */
			s->state = SL_ERROR;
			s->verdict = V_NONE;
			s->cause = ST_CAUSE_QUOTA_FULL;
			quota_counts(u, s);
		} else if (s->state == SL_VERDICT || s->state == SL_HELD) {
			/* the unit's verdict stays; the slot's trouble is
			 * what to act on now */
			s->slot_cause = e->cause ? e->cause : ST_CAUSE_LINK;
		} else {
			s->state = SL_ERROR;
			s->verdict = V_NONE;
			s->cause = e->cause ? e->cause : ST_CAUSE_LINK;
		}
		snprintf(s->reason + (s->state == SL_ERROR ? 0 : strlen(s->reason)),
			 sizeof(s->reason) - (s->state == SL_ERROR ? 0 : strlen(s->reason)),
			 "%s%s", s->state == SL_ERROR || !s->reason[0] ? "" : "; then: ",
			 e->detail ? e->detail : "");
		ui_log(u, "slot %d: %s %s", e->slot, e->cause == ST_CAUSE_QUOTA_FULL ?
		       "work order complete:" : "ERROR", e->detail ? e->detail : "");
		break;
	case ST_EV_SLOT_DONE:
		if (s->state != SL_ERROR && s->state != SL_VERDICT)
			s->state = SL_OFF;
		ui_log(u, "slot %d: done", e->slot);
		break;
	case ST_EV_FUSE_PLAN:  /* dry runs only; the UI never asks for one */
		ui_log(u, "slot %d: fuse plan %s: %s", e->slot, e->uid ? e->uid : "?",
		       e->detail ? e->detail : "");
		break;
	case ST_EV_WARNING:    /* handled above */
		break;
	}
}

static void drain_events(struct ui *u)
{
	struct ui_ev *e = queue_take(&u->q), *next;

	for (; e; e = next) {
		next = e->next;
		apply(u, e);
		ev_free(e);
	}
}

/* Show a message box; any key returns to mode `back`. */
static void show_msg(struct ui *u, bool error, enum ui_mode back, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void show_msg(struct ui *u, bool error, enum ui_mode back, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(u->msg, sizeof(u->msg), fmt, ap);
	va_end(ap);
	u->msg_error = error;
	u->after_msg = back;
	u->mode = M_MSG;
}

/* Start the engine on every slot for the current work order. */
static void start_run(struct ui *u)
{
	char err[512] = "";
	int rc;

	u->run = (st_run){ .nslots = u->o->nslots, .burn_fuses = u->armed,
			   .operator_name = u->operator_name,
			   .operator_authenticated = u->op_auth,
			   .work_order = u->work_order, .interactive = true };
	for (int i = 0; i < u->o->nslots; i++)
		u->run.ports[i] = u->o->ports[i];
	for (int i = 0; i < u->o->nslots; i++) {
		struct ui_slot *s = &u->slots[i];

		s->state = SL_IDLE;
		s->verdict = V_NONE;
		s->cause = s->slot_cause = ST_CAUSE_NONE;
		s->stopped = s->skipped = false;
		s->reason[0] = s->uid[0] = '\0';
		snprintf(s->note, sizeof(s->note), "opening the programmer");
	}
	/* with the work order's shared quota when there is a sync group */
	rc = st_station_run_start(u->o->st, u->o->prof, &u->run, on_event, &u->q,
				  &u->rh, err, sizeof(err));
	if (rc) {
		ui_log(u, "cannot start: %s", err);
		for (int i = 0; i < u->o->nslots; i++)
			u->slots[i].state = SL_OFF;
		show_msg(u, true, M_WO, "Cannot start the slots: %s", err);
		return;
	}
	u->run_t0 = st_now_ms();
	ui_log(u, "work order %s started on %d slot(s), fuse burning %s",
	       u->work_order, u->o->nslots, u->armed ? "ARMED" : "not armed");
	u->mode = M_MAIN;
}

/* Stop the run and wait for its workers (each finishes its unit first). */
static void stop_run(struct ui *u)
{
	if (!u->rh)
		return;
	u->msg[0] = '\0';
	ui_log(u, "stopping: slots finish the unit in work");
	ui_draw(u);
	st_run_stop(u->rh);
	st_station_run_wait(u->o->st, u->rh, NULL);
	u->rh = NULL;
	drain_events(u);
}

static void login_done(struct ui *u);

/* With an operator list (docs/roles.md) the operator also proves who they
 * are: the password typed is checked against the signed list; a refusal is
 * recorded (never the password) and the password asked again. */
static void do_op_auth(struct ui *u)
{
	char why[512], recerr[512];
	int rc;

	rc = st_station_authenticate(u->o->st, u->operator_name, u->pin, u->pinlen,
				     ST_ROLE_OPERATOR, false, why, sizeof(why),
				     recerr, sizeof(recerr));
	st_wipe(u->pin, sizeof(u->pin));
	u->pinlen = 0;
	if (!rc) {
		u->op_auth = true;
		ui_log(u, "operator %s authenticated (operator list)", u->operator_name);
		login_done(u);
		return;
	}
	ui_log(u, "operator %s refused: %s", u->operator_name, why);
	if (recerr[0])
		ui_log(u, "the refusal could not be recorded: %s", recerr);
	snprintf(u->msg, sizeof(u->msg), "%s: type it again (Esc: change the name)", why);
	u->msg_error = true;
}

/* A supervisor releases a quarantined unit: authenticated now, against
 * the signed operator list; the decision is recorded with the reason
 * (signed by the running work order's audit signer, or the audit key
 * attached for it). */
static void do_release(struct ui *u)
{
	char err[1024] = "", why[600], recerr[512];
	bool attached = false;
	int64_t id = 0;
	int rc;

	/* the decision is signed: by the run's signer, else the audit key */
	if (!u->rh) {
		if (st_station_audit_attach(u->o->st, err, sizeof(err))) {
			st_wipe(u->pin, sizeof(u->pin));
			u->pinlen = 0;
			ui_log(u, "release: audit key: %s", err);
			show_msg(u, true, M_MAIN, "Nothing released: the audit key is not "
				 "available (%s)", err);
			return;
		}
		attached = true;
	}
	rc = st_station_authenticate(u->o->st, u->rel_sup, u->pin, u->pinlen,
				     ST_ROLE_SUPERVISOR, true, why, sizeof(why),
				     recerr, sizeof(recerr));
	st_wipe(u->pin, sizeof(u->pin));
	u->pinlen = 0;
	if (rc) {
		ui_log(u, "supervisor %s refused: %s", u->rel_sup, why);
		if (recerr[0])
			ui_log(u, "the refusal could not be recorded: %s", recerr);
		if (attached)
			st_station_audit_detach(u->o->st);
		show_msg(u, true, M_MAIN, "Supervisor refused: %s. Nothing was released.",
			 why);
		return;
	}
	rc = st_station_quarantine_release(u->o->st, u->rel_uid, u->rel_sup,
					   u->rel_why, &id, err, sizeof(err));
	if (attached)
		st_station_audit_detach(u->o->st);
	if (rc) {
		ui_log(u, "release of %s refused: %s", u->rel_uid, err);
		show_msg(u, true, M_MAIN, "Not released: %s", err);
		return;
	}
	ui_log(u, "device %s released from quarantine by supervisor %s: %s",
	       u->rel_uid, u->rel_sup, u->rel_why);
	show_msg(u, false, M_MAIN, "Device %s is released from quarantine (record "
		 "%lld): it is provisioned again when next presented.", u->rel_uid,
		 (long long)id);
}

/* The work order just scanned (u->wo_new), checked at once, before the
 * arming question: an unknown one is offered for a supervisor to create,
 * a full one is said to be complete; a usable one goes on to arming. */
static void wo_check(struct ui *u)
{
	st_rec_step step = 0;
	char err[512] = "";
	int rc = st_records_workorder_get(u->o->st, u->wo_new, &u->wo_info, &step, err,
					  sizeof(err));
	const st_workorder_info *i = &u->wo_info;

	if (rc == ST_E_NOTFOUND && step == ST_REC_STEP_OP) {
		ui_log(u, "work order %s does not exist", u->wo_new);
		u->msg[0] = '\0';
		u->mode = M_WO_NEW;
		return;
	}
	if (rc) {
		ui_log(u, "work order %s cannot be checked: %s", u->wo_new, err);
		show_msg(u, true, M_WO, "Work order %s cannot be checked: %s", u->wo_new, err);
		return;
	}
	if (i->quota >= 0 && i->pass + i->running >= i->quota) {
		ui_log(u, "work order %s is complete (%ld/%ld)", u->wo_new,
		       i->pass + i->running, i->quota);
		show_msg(u, false, M_WO, "Work order %s is complete (%ld/%ld): scan the "
			 "next work order.", u->wo_new, i->pass + i->running, i->quota);
		return;
	}
	u->mode = M_ARM;
}

/* A supervisor creates the unknown work order u->wo_new with u->wo_quota:
 * authenticated now against the signed operator list (the refusal on
 * record), the work order created as a signed event, as `station records
 * workorder create` does; then on to arming. */
static void wo_create(struct ui *u)
{
	char why[600], recerr[512], err[1024] = "";
	st_rec_step step = 0;
	bool attached = false, central = false;
	int rc;

	if (!u->rh) {
		if (st_station_audit_attach(u->o->st, err, sizeof(err))) {
			st_wipe(u->pin, sizeof(u->pin));
			u->pinlen = 0;
			show_msg(u, true, M_WO, "Work order not created: the audit key is "
				 "not available (%s)", err);
			return;
		}
		attached = true;
	}
	rc = st_station_authenticate(u->o->st, u->rel_sup, u->pin, u->pinlen,
				     ST_ROLE_SUPERVISOR, true, why, sizeof(why),
				     recerr, sizeof(recerr));
	st_wipe(u->pin, sizeof(u->pin));
	u->pinlen = 0;
	if (attached)
		st_station_audit_detach(u->o->st);
	if (rc) {
		ui_log(u, "supervisor %s refused: %s", u->rel_sup, why);
		if (recerr[0])
			ui_log(u, "the refusal could not be recorded: %s", recerr);
		show_msg(u, true, M_WO, "Supervisor refused: %s. Work order %s was not "
			 "created.", why, u->wo_new);
		return;
	}
	rc = st_central_workorder_put(u->o->st, u->wo_new, u->wo_quota, &central, err,
				      sizeof(err));
	if (!rc)
		rc = st_records_workorder_create(u->o->st, u->cfg, u->wo_new, u->wo_quota,
						 &step, err, sizeof(err));
	if (rc) {
		ui_log(u, "work order %s not created: %s", u->wo_new, err);
		show_msg(u, true, M_WO, "Work order %s not created: %s", u->wo_new, err);
		return;
	}
	ui_log(u, "work order %s created by supervisor %s (quota %ld)%s", u->wo_new,
	       u->rel_sup, u->wo_quota, central ? ", also centrally" : "");
	wo_check(u);
}

/* Back to the name: log out of the HSM (a wrong operator password). */
static void logout(struct ui *u)
{
	st_station_logout(u->o->st);
	u->logged_in = false;
	u->op_auth = false;
}

/* The token's PIN counter in words (docs/tui.md). */
static const char *pin_state_text(int s)
{
	switch (s) {
	case ST_PIN_COUNT_LOW: return "few attempts left";
	case ST_PIN_FINAL_TRY: return "one attempt left before the PIN locks";
	case ST_PIN_LOCKED: return "the PIN is locked";
	}
	return "";
}

/* Should the UI stop asking for the PIN?  Before the token's final try
 * (or once it is locked), and after UI_PIN_TRIES wrong PINs here (a token
 * that reports no counter may lock on the next one): then it says so. */
static bool pin_stop(struct ui *u)
{
	if (u->pin_state < ST_PIN_FINAL_TRY && u->pin_tries < UI_PIN_TRIES)
		return false;
	ui_log(u, "PIN not asked again (%d wrong here%s%s)", u->pin_tries,
	       u->pin_state ? "; " : "", pin_state_text(u->pin_state));
	show_msg(u, true, M_NAME, "%s%sThe station does not ask for the PIN of token '%s' "
		 "again: one more wrong PIN may lock it and stop the line. A "
		 "supervisor checks the PIN (or has the security officer reset it), "
		 "then restart the station.", u->pin_tries ? "Wrong PIN. " : "",
		 u->pin_state >= ST_PIN_FINAL_TRY ? "The token has one attempt left "
		 "or is locked. " : "", u->cfg->token_label);
	return true;
}

/* Before the PIN is asked: the token's counter now (opened and closed
 * again), so a token at its final try is not tried. */
static void pin_precheck(struct ui *u)
{
	char err[512];

	if (!st_station_hsm_open(u->o->st, err, sizeof(err)))
		u->pin_state = (int)st_station_pin_state(u->o->st);
	st_station_logout(u->o->st);
}

/* The operator pressed Enter on the PIN: open the HSM session. */
static void do_login(struct ui *u)
{
	char err[512] = "";
	const char *warn;
	int rc;

	snprintf(u->msg, sizeof(u->msg), "Logging in to token '%s'...",
		 u->cfg->token_label);
	ui_draw(u);
	rc = st_station_hsm_open(u->o->st, err, sizeof(err));
	if (!rc)
		rc = st_station_hsm_auth(u->o->st, u->pin, u->pinlen, err, sizeof(err));
	st_wipe(u->pin, sizeof(u->pin));
	u->pinlen = 0;
	u->msg[0] = '\0';
	if (rc) {
		u->pin_state = (int)st_station_pin_state(u->o->st);
		st_station_logout(u->o->st);
		if (rc == ST_E_PIN)
			u->pin_tries++;
		ui_log(u, "login of %s refused: %s%s%s", u->operator_name, err,
		       u->pin_state ? "; " : "", pin_state_text(u->pin_state));
		if (rc == ST_E_PIN && pin_stop(u))
			return;
		/* plain words here; the PKCS#11 detail is in the log */
		snprintf(u->msg, sizeof(u->msg), "%s%s%s%s%s", rc == ST_E_PIN ? "wrong PIN" :
			 err, u->pin_state ? " (token: " : "", pin_state_text(u->pin_state),
			 u->pin_state ? ")" : "", rc == ST_E_PIN ?
			 ": type the PIN again (Esc: change the name)" : "");
		u->msg_error = true;
		return;
	}
	u->pin_state = ST_PIN_OK;
	u->logged_in = true;
	ui_log(u, "operator %s logged in to token '%s'", u->operator_name,
	       u->cfg->token_label);
	warn = st_station_pin_warning(u->o->st);
	if (warn)
		ui_log(u, "warning: %s", warn);
	if (u->cfg->operators_path || u->cfg->roles_require) {
		u->msg_error = false;
		u->mode = M_OPPW;
		return;
	}
	login_done(u);
}

/* Logged in: which CA the runs issue from, then the work order. */
static void login_done(struct ui *u)
{
	char err[512] = "";
	const char *ca_label;

	/* The CA the runs issue from: the profile's, else the configured one,
	 * else the newest valid one in the token. */
	ca_label = st_profile_issuer(u->o->prof) ? st_profile_issuer(u->o->prof) :
		   u->cfg->ca_label;
	if (st_station_ca_info(u->o->st, ca_label, u->ca_name, sizeof(u->ca_name),
		       &u->ca_days, err, sizeof(err))) {
		snprintf(u->ca_name, sizeof(u->ca_name), "(no CA: %s)",
			 ca_label ? ca_label : "none valid");
		ui_log(u, "CA: %s", err);
	}
	u->msg_error = false;
	u->mode = M_WO;
}

static bool is_enter(int k)
{
	return k == '\n' || k == '\r' || k == KEY_ENTER;
}

static bool is_backspace(int k)
{
	return k == KEY_BACKSPACE || k == 127 || k == 8;
}

/* Edit the visible input line; returns true on Enter. */
static bool edit_line(struct ui *u, int k)
{
	if (is_enter(k))
		return true;
	if (is_backspace(k) && u->inlen)
		u->in[--u->inlen] = '\0';
	else if (k >= 0x20 && k < 0x7f && u->inlen + 1 < sizeof(u->in))
		u->in[u->inlen++] = (char)k, u->in[u->inlen] = '\0';
	return false;
}

/* Slot commands from the main screen. */
static void slot_cmd(struct ui *u, st_cmd cmd, const char *what)
{
	int rc;

	if (!u->rh) {
		show_msg(u, true, M_MAIN, "No work order is running: press w to start one.");
		return;
	}
	rc = st_run_command(u->rh, u->sel + 1, cmd);
	if (rc == ST_OK) {
		ui_log(u, "slot %d: operator %s: %s", u->sel + 1, u->operator_name, what);
		return;
	}
	if (cmd == ST_CMD_RETRY && u->slots[u->sel].state == SL_HELD)
		ui_log(u, "slot %d: a QUARANTINE unit is not retried: put it aside, then press k",
		       u->sel + 1);
	else if (cmd == ST_CMD_STOP && u->slots[u->sel].state == SL_HELD)
		ui_log(u, "slot %d: decide the unit first (r retry, k skip, x quarantine), "
		       "then stop the slot", u->sel + 1);
	else
		ui_log(u, "slot %d: cannot %s now (%s)", u->sel + 1, what,
		       u->slots[u->sel].state == SL_HELD ? "already asked" :
		       cmd == ST_CMD_START || cmd == ST_CMD_STOP ? "already so" :
		       "no failed unit waits here");
}

/* l: the label of the selected slot's unit again (files, and the printer
 * queue when one is set), as `station label print UID` does: only a unit
 * that passed has one. */
static void label_again(struct ui *u, const struct ui_slot *s)
{
	st_label_files f;
	char err[1024];

	if (!s->uid[0]) {
		show_msg(u, true, M_MAIN, "Slot %d has no unit yet: only a unit that "
			 "passed has a label.", u->sel + 1);
		return;
	}
	if (st_label_print(u->o->st, s->uid, &f, err, sizeof(err))) {
		show_msg(u, true, M_MAIN, "Slot %d, unit %s: no label: %s", u->sel + 1,
			 s->uid, err);
		return;
	}
	ui_log(u, "slot %d: label of %s printed again", u->sel + 1, s->uid);
	show_msg(u, false, M_MAIN, "Slot %d, unit %s: label printed again (%s)",
		 u->sel + 1, s->uid, f.png);
}

static void key_main(struct ui *u, int k)
{
	struct ui_slot *s = &u->slots[u->sel];

	if (k >= '1' && k <= '9' && k - '1' < u->o->nslots) {
		u->sel = k - '1';
		return;
	}
	switch (k) {
	case '\t': case KEY_RIGHT:
		u->sel = (u->sel + 1) % u->o->nslots;
		break;
	case KEY_BTAB: case KEY_LEFT:
		u->sel = (u->sel + u->o->nslots - 1) % u->o->nslots;
		break;
	case 's':
		if (s->state == SL_ERROR || s->stopped || s->slot_cause) {
			slot_cmd(u, ST_CMD_START, "start");
			s->slot_cause = ST_CAUSE_NONE;
		} else {
			slot_cmd(u, ST_CMD_STOP, "stop");
		}
		if (u->rh && s->state == SL_ERROR)
			s->state = SL_IDLE;
		break;
	case 'd': case '\n': case '\r': case KEY_ENTER:
		/* the unit view: the engine's whole words for this slot */
		show_msg(u, false, M_MAIN, "Slot %d, unit %s: %s", u->sel + 1,
			 s->uid[0] ? s->uid : "-", s->reason[0] ? s->reason :
			 s->note[0] ? s->note : "nothing to report");
		break;
	case 'r':
		slot_cmd(u, ST_CMD_RETRY, "retry");
		break;
	case 'k':
		slot_cmd(u, ST_CMD_SKIP, "skip");
		break;
	case 'x':
		slot_cmd(u, ST_CMD_QUARANTINE, "quarantine");
		break;
	case 'v':
		u->show_records = !u->show_records;
		break;
	case 'l':
		label_again(u, s);
		break;
	case 'R':
		if (!u->cfg->operators_path) {
			show_msg(u, true, M_MAIN, "Releasing a quarantined unit needs a "
				 "supervisor from the operator list (roles.operators).");
			break;
		}
		u->in[0] = '\0';
		u->inlen = 0;
		u->mode = M_REL_UID;
		break;
	case 'w':
		if (ui_busy_slots(u)) {
			show_msg(u, true, M_MAIN, "Units are in progress: let them finish "
				 "and decide any failed unit before a new work order.");
			break;
		}
		u->in[0] = '\0';
		u->inlen = 0;
		u->mode = M_WO;
		break;
	case 'q':
		if (ui_busy_slots(u))
			u->mode = M_QUIT;
		else
			u->quit = true;
		break;
	}
}

/* One key into the hidden field u->pin (PIN, password; never echoed):
 * Esc wipes it and returns -1, Enter with something typed returns 1, any
 * other key edits the field and returns 0. */
static int edit_secret(struct ui *u, int k)
{
	if (k == 27) {
		st_wipe(u->pin, sizeof(u->pin));
		u->pinlen = 0;
		return -1;
	}
	if (is_enter(k))
		return u->pinlen ? 1 : 0;
	if (is_backspace(k)) {
		if (u->pinlen)
			u->pin[--u->pinlen] = '\0';
	} else if (k >= 0x20 && k < 0x7f && u->pinlen + 1 < sizeof(u->pin)) {
		u->pin[u->pinlen++] = (char)k;
	}
	return 0;
}

/* One key, by mode. */
static void key(struct ui *u, int k)
{
	if (k == KEY_RESIZE)
		return;
	switch (u->mode) {
	case M_NAME:
		if (k == 27)
			u->quit = true;
		else if (edit_line(u, k) && u->inlen) {
			snprintf(u->operator_name, sizeof(u->operator_name), "%s", u->in);
			u->in[0] = '\0';
			u->inlen = 0;
			u->msg[0] = '\0';
			pin_precheck(u);
			if (!pin_stop(u)) {
				u->mode = M_PIN;
				snprintf(u->msg, sizeof(u->msg), "%s%s", u->pin_state ?
					 "token: " : "", pin_state_text(u->pin_state));
				u->msg_error = true;
			}
		}
		break;
	case M_PIN:
		k = edit_secret(u, k);
		if (k < 0) {
			u->msg[0] = '\0';
			u->mode = M_NAME;
		} else if (k) {
			do_login(u);
		}
		break;
	case M_OPPW:
		k = edit_secret(u, k);
		if (k < 0) {
			u->msg[0] = '\0';
			logout(u);
			u->mode = M_NAME;
		} else if (k) {
			do_op_auth(u);
		}
		break;
	case M_REL_UID:
	case M_REL_WHY:
	case M_REL_SUP:
		if (k == 27) {
			u->in[0] = '\0';
			u->inlen = 0;
			u->mode = M_MAIN;
		} else if (edit_line(u, k) && u->inlen) {
			char *dst = u->mode == M_REL_UID ? u->rel_uid :
				    u->mode == M_REL_WHY ? u->rel_why : u->rel_sup;

			snprintf(dst, UI_IN_MAX, "%s", u->in);
			u->in[0] = '\0';
			u->inlen = 0;
			u->msg[0] = '\0';
			u->mode = u->mode == M_REL_UID ? M_REL_WHY :
				  u->mode == M_REL_WHY ? M_REL_SUP : M_REL_PW;
		}
		break;
	case M_REL_PW:
		k = edit_secret(u, k);
		if (k < 0)
			u->mode = M_MAIN;
		else if (k)
			do_release(u);
		break;
	case M_WO:
		if (k == 27) {  /* back to the running work order, or out */
			u->in[0] = '\0';
			u->inlen = 0;
			if (u->rh)
				u->mode = M_MAIN;
			else
				u->quit = true;
		} else if (edit_line(u, k) && u->inlen) {
			memcpy(u->wo_new, u->in, sizeof(u->wo_new));
			u->in[0] = '\0';
			u->inlen = 0;
			ui_log(u, "work order %s scanned by %s", u->wo_new, u->operator_name);
			wo_check(u);
		}
		break;
	case M_WO_NEW:   /* unknown: c a supervisor creates it, else back */
		if ((k == 'c' || k == 'C') && u->cfg->operators_path) {
			u->mode = M_WO_QUOTA;
		} else {
			u->mode = M_WO;
		}
		break;
	case M_WO_QUOTA:
	case M_WO_SUP:
		if (k == 27) {
			u->in[0] = '\0';
			u->inlen = 0;
			u->msg[0] = '\0';
			u->mode = M_WO;
		} else if (edit_line(u, k) && u->inlen) {
			if (u->mode == M_WO_QUOTA) {
				char *end;
				long q = strtol(u->in, &end, 10);

				if (*end || q < 1) {
					snprintf(u->msg, sizeof(u->msg), "'%s' is not a number of "
						 "units: type the quota (1 or more)", u->in);
					u->msg_error = true;
				} else {
					u->wo_quota = q;
					u->msg[0] = '\0';
					u->mode = M_WO_SUP;
				}
			} else {
				snprintf(u->rel_sup, sizeof(u->rel_sup), "%s", u->in);
				u->msg[0] = '\0';
				u->mode = M_WO_PW;
			}
			u->in[0] = '\0';
			u->inlen = 0;
		}
		break;
	case M_WO_PW:
		k = edit_secret(u, k);
		if (k < 0)
			u->mode = M_WO;
		else if (k)
			wo_create(u);
		break;
	case M_ARM:
		if (ui_busy_slots(u)) {  /* a unit started meanwhile: not now */
			show_msg(u, true, M_MAIN, "Units are in progress: let them finish "
				 "and decide any failed unit before a new work order.");
			break;
		}
		stop_run(u);  /* the engine no longer reads the old work order */
		memcpy(u->work_order, u->wo_new, sizeof(u->work_order));
		u->armed = k == 'y' || k == 'Y';
		ui_log(u, "work order %s: fuse burning %s by %s", u->work_order,
		       u->armed ? "ARMED" : "not armed", u->operator_name);
		start_run(u);
		break;
	case M_QUIT:
		if (k == 'y' || k == 'Y')
			u->quit = true;
		else
			u->mode = M_MAIN;
		break;
	case M_MSG:
		u->mode = u->after_msg;
		u->msg[0] = '\0';
		break;
	case M_MAIN:
		key_main(u, k);
		break;
	}
}

/* Block the signals the UI takes through its signalfd; the engine's
 * threads inherit the mask, so only the UI thread sees them. */
static int signals_open(sigset_t *old)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	if (pthread_sigmask(SIG_BLOCK, &set, old))
		return -1;
	return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* SIGWINCH stays blocked except while the UI thread polls, so the engine's
 * threads (which inherit the mask) never take it and ncurses' handler
 * interrupts the UI's poll() instead. */
static void block_winch(int how)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGWINCH);
	pthread_sigmask(how, &set, NULL);
}

/* The header's sync lag (a state file read and an SQLite query): read
 * every UI_SYNC_MS, and after a unit is recorded, never per redraw. */
static void sync_lag_refresh(struct ui *u)
{
	int64_t now = st_now_ms();

	if (u->sync_at && now - u->sync_at < UI_SYNC_MS)
		return;
	st_station_sync_lag(u->o->st, u->sync_lag, sizeof(u->sync_lag));
	u->sync_at = now;
}

static int ui_loop(struct ui *u)
{
	int code = 0;

	while (!u->quit) {
		struct pollfd p[3] = {
			{ .fd = 0, .events = POLLIN },
			{ .fd = u->q.rfd, .events = POLLIN },
			{ .fd = u->sigfd, .events = POLLIN },
		};
		int k;

		sync_lag_refresh(u);
		ui_draw(u);
		block_winch(SIG_UNBLOCK);
		k = poll(p, 3, 250);
		block_winch(SIG_BLOCK);
		if (k < 0 && errno != EINTR)
			break;
		if (p[2].revents & POLLIN) {
			struct signalfd_siginfo si;

			if (read(u->sigfd, &si, sizeof(si)) == sizeof(si)) {
				ui_log(u, "signal %d: stopping", (int)si.ssi_signo);
				code = 128 + (int)si.ssi_signo;
				break;
			}
		}
		drain_events(u);
		while ((k = getch()) != ERR) {
			key(u, k);
			if (u->quit)
				break;
		}
	}
	return code;
}

int ui_main(const ui_opts *o)
{
	struct ui *u = calloc(1, sizeof(*u));
	sigset_t oldmask;
	int fds[2] = { -1, -1 }, saved_err = -1, code = 2;
	SCREEN *scr = NULL;
	const char *nc = getenv("NO_COLOR");

	if (!u) {
		fprintf(stderr, "station tui: out of memory\n");
		return 2;
	}
	u->o = o;
	u->cfg = st_station_config(o->st);
	u->sigfd = -1;
	u->logfd = open(o->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (u->logfd < 0) {
		fprintf(stderr, "station tui: cannot open the log file %s: %s (give "
			"another with --log FILE)\n", o->log_path, strerror(errno));
		free(u);
		return 2;
	}
	if (!isatty(0) || !isatty(1)) {
		fprintf(stderr, "station tui: needs a terminal on stdin and stdout; "
			"use 'station provision' in scripts\n");
		goto out;
	}
	u->steps = st_steps(&u->nsteps);
	for (int i = 0; i < o->nslots; i++)
		snprintf(u->slots[i].port, sizeof(u->slots[i].port), "%s", o->ports[i]);
	pthread_mutex_init(&u->q.lock, NULL);
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK)) {
		fprintf(stderr, "station tui: pipe: %s\n", strerror(errno));
		goto out;
	}
	u->q.rfd = fds[0];
	u->q.wfd = fds[1];
	u->sigfd = signals_open(&oldmask);
	if (u->sigfd < 0) {
		fprintf(stderr, "station tui: signalfd: %s\n", strerror(errno));
		goto out;
	}
	block_winch(SIG_BLOCK);
	setlocale(LC_ALL, "");
	u->utf8 = !strcmp(nl_langinfo(CODESET), "UTF-8");
	u->q.utf8 = u->utf8;
	ui_log(u, "station tui started (pid %d): %d slot(s), log %s", (int)getpid(),
	       o->nslots, o->log_path);
	scr = newterm(NULL, stdout, stdin);
	if (!scr) {
		fprintf(stderr, "station tui: cannot drive this terminal (TERM=%s)\n",
			getenv("TERM") ? getenv("TERM") : "");
		goto out;
	}
	/* While ncurses owns the screen, stray stderr goes to the log. */
	saved_err = dup(2);
	dup2(u->logfd, 2);
	cbreak();
	noecho();
	nonl();
	keypad(stdscr, TRUE);
	nodelay(stdscr, TRUE);
	set_escdelay(25);
	curs_set(0);
	u->color = has_colors() && !(nc && *nc);
	u->bell_on_fail = u->cfg->ui_bell_on_fail;
	if (u->color)
		ui_colors(u);
	u->mode = M_NAME;
	code = ui_loop(u);
	if (u->rh)
		stop_run(u);
out:
	if (scr) {
		endwin();
		delscreen(scr);
	}
	if (saved_err >= 0) {
		dup2(saved_err, 2);
		close(saved_err);
	}
	st_wipe(u->pin, sizeof(u->pin));
	st_station_logout(o->st);
	ui_log(u, "station tui ended (%d PASS, %d UNFUSED, %d FAIL, %d QUARANTINE)",
	       u->pass, u->unfused, u->fail, u->quarantine);
	drain_events(u);
	if (u->sigfd >= 0) {
		close(u->sigfd);
		pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
	}
	if (fds[0] >= 0) {
		close(fds[0]);
		close(fds[1]);
		pthread_mutex_destroy(&u->q.lock);
	}
	close(u->logfd);
	if (code == 0 && scr)
		printf("station tui: %d PASS, %d UNFUSED, %d FAIL, %d QUARANTINE; log "
		       "in %s\n", u->pass, u->unfused, u->fail, u->quarantine, o->log_path);
	free(u);
	return code;
}

/* Put the terminal back as a crashed UI left it: modes, screen, cursor. */
static void restore_terminal(const struct termios *saved)
{
	int err = 0;

	tcsetattr(0, TCSAFLUSH, saved);
	if (setupterm(NULL, 1, &err) == OK) {
		const char *caps[] = { "rmcup", "sgr0", "cnorm" };

		for (size_t i = 0; i < ST_ARRAY_SIZE(caps); i++) {
			char *s = tigetstr(caps[i]);

			if (s && s != (char *)-1)
				putp(s);
		}
		fflush(stdout);
	}
}

int ui_guard(const char *log_path, int *code)
{
	struct termios saved;
	bool tty = tcgetattr(0, &saved) == 0;
	sigset_t set, old;
	pid_t pid;
	int status = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		return -1;
	}
	if (pid == 0) {
		sigset_t chld;

		sigemptyset(&chld);
		sigaddset(&chld, SIGCHLD);
		sigprocmask(SIG_UNBLOCK, &chld, NULL);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		return 0;
	}
	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(&set, &si);

		if (sig == SIGTERM || sig == SIGHUP) {
			kill(pid, sig);     /* let the UI stop cleanly */
		} else if (sig == SIGCHLD || sig < 0) {
			if (waitpid(pid, &status, WNOHANG) == pid)
				break;
		}
		/* SIGINT from the terminal reaches the UI itself. */
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	*code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
	/* The UI and its set-up end with 0, 2..5 (station's exit codes) or
	 * 128 + INT/TERM/HUP, with the screen already given back.  Anything
	 * else is a crash: a signal, or a sanitizer or abort path that exits
	 * (1, 23, ...) without a word to ncurses. */
	if (WIFSIGNALED(status) || (*code != 0 && (*code < 2 || *code > 5) &&
	    *code != 128 + SIGINT && *code != 128 + SIGTERM && *code != 128 + SIGHUP)) {
		if (tty)
			restore_terminal(&saved);
		if (WIFSIGNALED(status))
			fprintf(stderr, "\nstation tui: the UI stopped on signal %d (%s); ",
				WTERMSIG(status), strsignal(WTERMSIG(status)));
		else
			fprintf(stderr, "\nstation tui: the UI stopped abnormally (exit %d); ",
				*code);
		fprintf(stderr, "the terminal was restored. Units in work may be "
			"unfinished: their records say so. Log: %s\n", log_path);
	}
	return 1;
}

/* draw.c — everything the UI puts on the screen, redrawn whole from the UI
 * state on every change (a resize is just another redraw).  Layout: a
 * three-line header, a grid of slot panels, the log (or last units) pane,
 * a key-help line; dialogs on top.  Only ASCII from the state reaches the
 * screen (device strings were escaped when queued). */
#include <curses.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <wchar.h>

#include "base.h"
#include "ui/ui_int.h"

enum { C_PASS = 1, C_FAIL, C_BUSY, C_HEAD, C_PASSBAR, C_FAILBAR, C_DIM };

void ui_colors(struct ui *u)
{
	(void)u;
	start_color();
	use_default_colors();
	init_pair(C_PASS, COLOR_GREEN, -1);
	init_pair(C_FAIL, COLOR_RED, -1);
	init_pair(C_BUSY, COLOR_YELLOW, -1);
	init_pair(C_HEAD, COLOR_BLACK, COLOR_CYAN);
	init_pair(C_PASSBAR, COLOR_BLACK, COLOR_GREEN);
	init_pair(C_FAILBAR, COLOR_WHITE, COLOR_RED);
	init_pair(C_DIM, COLOR_BLUE, -1);
}

/* An attribute with its colour when colour is on, or the fallback. */
static attr_t col(const struct ui *u, int pair, attr_t mono)
{
	return u->color ? (attr_t)COLOR_PAIR(pair) : mono;
}

/* Print at y,x at most w columns (ASCII text). */
static void put(int y, int x, int w, attr_t a, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static void put(int y, int x, int w, attr_t a, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (w <= 0 || y < 0 || y >= LINES || x >= COLS)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (x + w > COLS)
		w = COLS - x;
	attron(a);
	mvaddnstr(y, x, buf, w);
	attroff(a);
}

/* Wrap text into at most maxl lines of width w starting at y; returns the
 * lines used. */
static int wrap(int y, int x, int w, int maxl, attr_t a, const char *text)
{
	int n = 0;
	size_t len = strlen(text);

	while (len && n < maxl && w > 0) {
		size_t cut = len <= (size_t)w ? len : (size_t)w;

		if (cut < len) {
			size_t sp = cut;

			while (sp > 0 && text[sp] != ' ')
				sp--;
			if (sp > 0)
				cut = sp;
		}
		put(y + n, x, w, a, "%.*s", (int)cut, text);
		text += cut;
		len -= cut;
		while (len && *text == ' ')
			text++, len--;
		n++;
	}
	return n;
}

/* For a narrow panel: long hex runs (fuse values, IDs) become head..tail so
 * the words around them, which say what to do, still fit.  The log and
 * the log file keep the full text. */
static void shorten_hex(const char *in, char *out, size_t cap)
{
	size_t o = 0;

	while (*in && o + 1 < cap) {
		size_t n = strspn(in, "0123456789abcdef");

		if (n > 16) {
			o += (size_t)snprintf(out + o, cap - o, "%.6s..%.6s", in, in + n - 6);
			in += n;
		} else if (n) {
			o += (size_t)snprintf(out + o, cap - o, "%.*s", (int)n, in);
			in += n;
		} else {
			out[o++] = *in++;
		}
		if (o >= cap)
			o = cap - 1;
	}
	out[o] = '\0';
}

static void frame(int y, int x, int h, int w, attr_t a)
{
	if (h < 2 || w < 2)
		return;
	attron(a);
	mvaddch(y, x, ACS_ULCORNER);
	mvhline(y, x + 1, ACS_HLINE, w - 2);
	mvaddch(y, x + w - 1, ACS_URCORNER);
	mvvline(y + 1, x, ACS_VLINE, h - 2);
	mvvline(y + 1, x + w - 1, ACS_VLINE, h - 2);
	mvaddch(y + h - 1, x, ACS_LLCORNER);
	mvhline(y + h - 1, x + 1, ACS_HLINE, w - 2);
	mvaddch(y + h - 1, x + w - 1, ACS_LRCORNER);
	attroff(a);
}

/* A three-row letter (after figlet's "future" font). */
struct glyph {
	char c;
	const wchar_t *row[3];
};

static const struct glyph font[] = {
	{ 'A', { L"┏━┓", L"┣━┫", L"╹ ╹" } },
	{ 'D', { L"┳━┓", L"┃ ┃", L"┻━┛" } },
	{ 'E', { L"┏━╸", L"┣╸ ", L"┗━╸" } },
	{ 'F', { L"┏━╸", L"┣╸ ", L"╹  " } },
	{ 'I', { L"╻", L"┃", L"╹" } },
	{ 'L', { L"╻  ", L"┃  ", L"┗━╸" } },
	{ 'N', { L"┏┓╻", L"┃┗┫", L"╹ ╹" } },
	{ 'O', { L"┏━┓", L"┃ ┃", L"┗━┛" } },
	{ 'P', { L"┏━┓", L"┣━┛", L"╹  " } },
	{ 'Q', { L"┏━┓", L"┃┓┃", L"┗┻┛" } },
	{ 'R', { L"┏━┓", L"┣┳┛", L"╹┗╸" } },
	{ 'S', { L"┏━┓", L"┗━┓", L"┗━┛" } },
	{ 'T', { L"╺┳╸", L" ┃ ", L" ╹ " } },
	{ 'U', { L"╻ ╻", L"┃ ┃", L"┗━┛" } },
};

static const struct glyph *glyph(char c)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(font); i++)
		if (font[i].c == c)
			return &font[i];
	return NULL;
}

/* Width of word in the big font with gap columns between letters, or -1
 * when a letter is missing. */
static int big_width(const char *word, int gap)
{
	int w = 0;

	for (const char *c = word; *c; c++) {
		const struct glyph *g = glyph(*c);

		if (!g)
			return -1;
		w += (int)wcslen(g->row[0]) + (c[1] ? gap : 0);
	}
	return w;
}

/* The verdict in large letters, centred in w columns, 3 rows: the big
 * font on a UTF-8 terminal, else a solid bar with the word. */
static void big(const struct ui *u, int y, int x, int w, const char *word, attr_t a,
		attr_t bar)
{
	int gap = 1, bw = big_width(word, 1);

	if (bw > w) {
		gap = 0;
		bw = big_width(word, 0);
	}
	if (!u->utf8 || bw < 0 || bw > w) {
		int len = (int)strlen(word);

		for (int r = 0; r < 3; r++)
			put(y + r, x, w, bar, "%*s", w, "");
		put(y + 1, x + (w > len ? (w - len) / 2 : 0), w, bar | A_BOLD, "%s", word);
		return;
	}
	x += (w - bw) / 2;
	attron(a | A_BOLD);
	for (int r = 0; r < 3; r++) {
		int cx = x;

		for (const char *c = word; *c; c++) {
			const struct glyph *g = glyph(*c);

			mvaddwstr(y + r, cx, g->row[r]);
			cx += (int)wcslen(g->row[0]) + gap;
		}
	}
	attroff(a | A_BOLD);
}

static const char *slot_tag(const struct ui_slot *s)
{
	switch (s->state) {
	case SL_OFF: return "off";
	case SL_IDLE: return !strncmp(s->note, "stopped", 7) ? "STOPPED" : "ready";
	case SL_BUSY: return "WORKING";
	case SL_VERDICT: return "done";
	case SL_HELD: return "DECIDE";
	case SL_ERROR: return "ERROR";
	}
	return "";
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

/* Show the device ID, shortened from the left to fit. */
static void put_uid(int y, int x, int w, const char *uid)
{
	int len = (int)strlen(uid);

	if (!*uid)
		put(y, x, w, A_NORMAL, "ID -");
	else if (len + 3 <= w)
		put(y, x, w, A_NORMAL, "ID %s", uid);
	else
		put(y, x, w, A_NORMAL, "ID ..%s", uid + len - (w - 5 > 0 ? w - 5 : 0));
}

static void panel(struct ui *u, int i, int y, int x, int h, int w)
{
	struct ui_slot *s = &u->slots[i];
	bool sel = i == u->sel;
	int iw = w - 2, row = y + 1, last = y + h - 2, done = 0, cur = -1;
	bool good = s->state != SL_ERROR && st_verdict_good(s->v);
	attr_t fa = s->state == SL_ERROR || (s->state >= SL_VERDICT && !good) ?
		    col(u, C_FAIL, A_BOLD) : s->state == SL_VERDICT ? col(u, C_PASS, A_NORMAL) :
		    A_NORMAL;

	frame(y, x, h, w, fa | (sel ? A_BOLD : 0));
	put(y, x + 1, iw, sel ? A_REVERSE | A_BOLD : A_BOLD, "%s%d %s", sel ? ">" : " ",
	    i + 1, base_name(s->port));
	{
		const char *tag = slot_tag(s);
		int tl = (int)strlen(tag) + 2;

		if (iw > tl + 8)
			put(y, x + w - 1 - tl, tl, s->state == SL_BUSY ?
			    col(u, C_BUSY, A_BOLD) : A_NORMAL, " %s ", tag);
	}
	if (iw < 4 || h < 3)
		return;
	put_uid(row++, x + 1, iw, s->uid);
	for (int k = 0; k < u->nsteps && k < UI_MAX_STEPS; k++) {
		if (s->steps[k] != STP_TODO)
			done++;
		else if (cur < 0)
			cur = k;
	}
	if (s->state == SL_BUSY) {
		int rows = last - row + 1, bar = iw - 8;
		int64_t el = st_now_ms() - s->t0;

		if (rows >= u->nsteps + 2) {
			for (int k = 0; k < u->nsteps && row <= last - 2; k++) {
				const char *mark = s->steps[k] == STP_OK ? "+" :
						   s->steps[k] == STP_FAIL ? "x" :
						   s->steps[k] == STP_SKIP ? "-" :
						   k == cur ? ">" : " ";

				put(row++, x + 1, iw, k == cur ? col(u, C_BUSY, A_REVERSE) | A_BOLD :
				    s->steps[k] == STP_OK ? col(u, C_PASS, A_NORMAL) : A_NORMAL,
				    "%s %-*s", mark, iw - 2, u->steps[k]);
			}
		} else if (row <= last) {
			put(row++, x + 1, iw, col(u, C_BUSY, A_BOLD), "> %s",
			    cur >= 0 ? u->steps[cur] : "finishing");
		}
		if (row <= last && bar > 2) {
			int fill = u->nsteps ? bar * done / u->nsteps : 0;

			put(row, x + 1, 1, A_NORMAL, "[");
			for (int b = 0; b < bar; b++)
				put(row, x + 2 + b, 1, b < fill ? col(u, C_BUSY, A_REVERSE) : A_NORMAL,
				    "%c", b < fill ? '#' : '.');
			put(row++, x + 2 + bar, 6, A_NORMAL, "]%d/%d", done, u->nsteps);
		}
		if (row <= last)
			put(row++, x + 1, iw, A_NORMAL, "elapsed %02lld:%02lld",
			    (long long)(el / 60000), (long long)(el / 1000 % 60));
		return;
	}
	if (s->state == SL_VERDICT || s->state == SL_HELD || s->state == SL_ERROR) {
		bool pass = s->state != SL_ERROR && st_verdict_good(s->v);
		attr_t a = pass ? col(u, C_PASS, A_BOLD) : col(u, C_FAIL, A_BOLD);
		attr_t bar = pass ? col(u, C_PASSBAR, A_REVERSE) : col(u, C_FAILBAR, A_REVERSE);
		/* UNFUSED: identity issued, fuses and lifecycle untouched (an
		 * unarmed run): good, but not a locked PASS; say how to finish */
		bool unfused = s->state != SL_ERROR && s->v == ST_VERDICT_UNFUSED;
		const char *hint = s->state == SL_VERDICT && unfused ? (iw >= 40 ?
			"not locked: finish it armed (y at start)" : "not locked: arm it") :
			s->state == SL_HELD ?
			(s->v == ST_VERDICT_QUARANTINE ? "set aside: k or x releases" :
			 "r retry  k skip  x quarantine") :
			s->state == SL_ERROR ? (!strncmp(s->note, "waiting for the programmer", 26) ?
						"plug it in: resumes" : "fix it, then s starts the slot") :
			s->note[0] ? s->note : "next unit: insert it";
		bool two = s->state == SL_HELD && iw < 30; /* the hint on two lines */
		int reserve = two ? 3 : 2; /* the plain verdict line and the hint */

		if (last - row + 1 >= 3 + reserve + 1) {
			big(u, row, x + 1, iw, s->verdict, a, bar);
			row += 3;
		}
		if (row <= last) {
			if (unfused)
				put(row++, x + 1, iw, a, "UNFUSED %.1fs%s",
				    (double)s->elapsed_ms / 1000.0,
				    iw >= 30 ? ", fuses not burned" : "");
			else if (pass)
				put(row++, x + 1, iw, a, "PASS %.1fs recorded",
				    (double)s->elapsed_ms / 1000.0);
			else
				put(row++, x + 1, iw, a, "%s", s->verdict);
		}
		if (!pass && row < last - (two ? 1 : 0)) {
			char shown[sizeof(s->reason)];

			shorten_hex(s->reason, shown, sizeof(shown));
			row += wrap(row, x + 1, iw, last - row - (two ? 1 : 0), A_NORMAL, shown);
		}
		if (two && row < last) {
			bool q = s->v == ST_VERDICT_QUARANTINE;

			put(last - 1, x + 1, iw, A_BOLD | A_REVERSE, "%s",
			    q ? "set aside, then" : "r retry  k skip");
			put(last, x + 1, iw, A_BOLD | A_REVERSE, "%s",
			    q ? "k or x: release" : "x quarantine");
		} else if (row <= last) {
			put(last, x + 1, iw, s->state == SL_HELD ? A_BOLD | A_REVERSE : A_NORMAL,
			    "%s", hint);
		}
		return;
	}
	if (row <= last)
		wrap(row, x + 1, iw, last - row + 1, A_NORMAL,
		     s->state == SL_OFF ? (u->logged_in ? "not started" : "log in first") :
		     s->note);
}

static void header(struct ui *u)
{
	attr_t a = col(u, C_HEAD, A_REVERSE);
	int total = u->pass + u->unfused + u->fail + u->quarantine;
	int64_t run_ms = u->run_t0 ? st_now_ms() - u->run_t0 : 0;
	char uph[24] = "-", yield[16] = "-";
	const char *digest = st_profile_digest(u->o->prof);

	if (total)
		snprintf(yield, sizeof(yield), "%d%%", (u->pass + u->unfused) * 100 / total);
	if (total && run_ms >= 60000) /* a rate over seconds says nothing */
		snprintf(uph, sizeof(uph), "%lld", (long long)total * 3600000LL / run_ms);
	for (int r = 0; r < 3; r++)
		put(r, 0, COLS, a, "%*s", COLS, "");
	put(0, 0, COLS, a | A_BOLD, " STATION %s  OPERATOR %s  HSM %s: %s",
	    u->cfg->station_id ? u->cfg->station_id : "?",
	    u->logged_in ? u->operator_name : "-", u->cfg->token_label,
	    u->logged_in ? "logged in" : "not logged in");
	{
		char ca[160] = "-";

		if (u->logged_in)
			snprintf(ca, sizeof(ca), "%s %dd", u->ca_name, u->ca_days);
		put(1, 0, COLS, a, " CA %s  PROFILE %s %.8s  WO %s%s", ca,
		    st_profile_name(u->o->prof), digest ? digest : "",
		    u->work_order[0] ? u->work_order : "-",
		    !u->rh ? "" : u->armed ? " ARMED" : " not armed");
	}
	{
		/* "" until this store was synced (docs/sync.md); the UI loop
		 * reads it on a timer (sync_lag_refresh), not per redraw */
		const char *sync = u->sync_lag;

		char unf[32] = ""; /* shown once a unit ended UNFUSED */

		if (u->unfused)
			snprintf(unf, sizeof(unf), "  UNFUSED %d", u->unfused);
		put(2, 0, COLS, a | A_BOLD, " PASS %d%s  FAIL %d  QUARANTINE %d  YIELD %s  "
		    "UNITS/H %s%s%s", u->pass, unf, u->fail, u->quarantine, yield, uph,
		    sync[0] ? "  " : "", sync);
	}
}

static void log_pane(struct ui *u, int y, int h)
{
	put(y, 0, COLS, A_BOLD | A_UNDERLINE, "%-*s", COLS, u->show_records ?
	    " Last units (as recorded)   v: log" : " Log   v: last units");
	if (u->show_records) {
		int n = u->nrecent < UI_RECENT ? u->nrecent : UI_RECENT;
		int rows = h - 2;

		put(y + 1, 0, COLS, A_BOLD, " %-8s %-2s %-10s %-9s %-6s %-12s %s", "time", "sl",
		    "result", "fuses", "ms", "work order", "device id");
		for (int r = 0; r < rows && r < n; r++) {
			const struct ui_recent *e = &u->recent[(u->nrecent - 1 - r) % UI_RECENT];

			put(y + 2 + r, 0, COLS, !e->good ? col(u, C_FAIL, A_BOLD) : A_NORMAL, " %-8s %-2d %-10s %-9s %-6lld %-12s %s", e->when, e->slot,
			    e->result, e->fuses, (long long)e->ms, e->wo, e->uid);
		}
		return;
	}
	for (int r = 0; r < h - 1 && r < u->nlog; r++) {
		int idx = (u->loghead - 1 - r + UI_LOG_LINES) % UI_LOG_LINES;

		put(y + h - 1 - r, 0, COLS, A_NORMAL, " %s", u->log[idx]);
	}
}

static const char *help_text(const struct ui *u)
{
	switch (u->mode) {
	case M_NAME: return " Type your name, Enter";
	case M_PIN: return " Type the PIN (not shown), Enter   Esc back";
	case M_OPPW: return " Type your password (not shown), Enter   Esc back";
	case M_REL_UID: case M_REL_WHY: case M_REL_SUP: return " Type, Enter   Esc cancel";
	case M_REL_PW: return " Type the password (not shown), Enter   Esc cancel";
	case M_WO: return " Scan or type the work order, Enter";
	case M_ARM: return " y arm fuse burning   n / Enter: do not burn";
	case M_QUIT: return " y quit   n / Enter: stay";
	case M_MSG: return " any key: continue";
	case M_MAIN: break;
	}
	return " 1-8 slot  s start/stop  r retry  k skip  x quar.  w work order  v view  q quit";
}

/* A centred box with a title, wrapped text and maybe an input line. */
static void dialog(struct ui *u, const char *title, const char *text, const char *prompt,
		   const char *input, const char *err)
{
	int w = COLS - 4 < 64 ? COLS - 4 : 64, iw = w - 4, h = 9, y, x, row;

	if (w < 20)
		w = COLS, iw = w - 2;
	h = 4 + (text ? 3 : 0) + (prompt ? 1 : 0) + (err && *err ? 3 : 0);
	if (h > LINES)
		h = LINES;
	y = (LINES - h) / 2;
	x = (COLS - w) / 2;
	for (int r = 0; r < h; r++)
		put(y + r, x, w, A_NORMAL, "%*s", w, "");
	frame(y, x, h, w, A_BOLD);
	put(y, x + 2, w - 4, A_BOLD | A_REVERSE, " %s ", title);
	row = y + 2;
	if (text)
		row += wrap(row, x + 2, iw, 3, A_NORMAL, text) ? 3 : 0;
	if (err && *err)
		row += wrap(row, x + 2, iw, 3, col(u, C_FAIL, A_BOLD), err) ? 3 : 0;
	if (prompt && row < y + h - 1) {
		put(row, x + 2, iw, A_BOLD, "%s %s", prompt, input ? input : "");
		move(row, x + 2 + (int)strlen(prompt) + 1 + (input ? (int)strlen(input) : 0));
	}
}

void ui_draw(struct ui *u)
{
	int n = u->o->nslots, cols, rows, lower, avail, pw, ph;
	char text[400];

	erase();
	curs_set(0);
	header(u);
	cols = COLS / 20;
	cols = cols < 1 ? 1 : cols > n ? n : cols;
	rows = (n + cols - 1) / cols;
	lower = LINES >= 36 ? LINES / 4 : 5;
	avail = LINES - 3 - 1 - lower;
	while (avail / rows < 5 && lower > 2) {
		lower--;
		avail++;
	}
	pw = COLS / cols;
	ph = avail / rows;
	for (int i = 0; i < n; i++)
		panel(u, i, 3 + (i / cols) * ph, (i % cols) * pw, ph, pw);
	log_pane(u, 3 + rows * ph, LINES - 1 - 3 - rows * ph);
	put(LINES - 1, 0, COLS, A_REVERSE, "%-*s", COLS, help_text(u));
	switch (u->mode) {
	case M_NAME:
		dialog(u, "Operator login", "Scan your badge or type your name, then Enter.",
		       "Name:", u->in, NULL);
		curs_set(1);
		break;
	case M_PIN:
		snprintf(text, sizeof(text), "Operator %s: the PIN of token '%s' opens the "
			 "HSM session. It is not shown as you type.", u->operator_name,
			 u->cfg->token_label);
		dialog(u, "Operator login", text, "PIN:", "", u->msg);
		curs_set(1);
		break;
	case M_REL_UID:
		dialog(u, "Release a quarantined unit", "A supervisor's decision. Scan or "
		       "type the device ID of the quarantined unit, then Enter.",
		       "Device ID:", u->in, NULL);
		curs_set(1);
		break;
	case M_REL_WHY:
		snprintf(text, sizeof(text), "Device %s: why is it released? The reason "
			 "is recorded with the supervisor's name.", u->rel_uid);
		dialog(u, "Release a quarantined unit", text, "Reason:", u->in, NULL);
		curs_set(1);
		break;
	case M_REL_SUP:
		dialog(u, "Release a quarantined unit", "A supervisor authorises the "
		       "release now: name, then password.", "Supervisor:", u->in, NULL);
		curs_set(1);
		break;
	case M_REL_PW:
		snprintf(text, sizeof(text), "Supervisor %s: your password. It is not "
			 "shown as you type.", u->rel_sup);
		dialog(u, "Release a quarantined unit", text, "Password:", "", u->msg);
		curs_set(1);
		break;
	case M_OPPW:
		snprintf(text, sizeof(text), "Operator %s: your password from the "
			 "station's operator list. It is not shown as you type.",
			 u->operator_name);
		dialog(u, "Operator login", text, "Password:", "", u->msg);
		curs_set(1);
		break;
	case M_WO:
		dialog(u, "Work order", "Scan the work order barcode (or type it), then Enter.",
		       "Work order:", u->in, NULL);
		curs_set(1);
		break;
	case M_ARM:
		snprintf(text, sizeof(text), "Work order %s: burn the root-of-trust fuses of "
			 "every unit? Burning cannot be undone.", u->wo_new);
		dialog(u, "Arm fuse burning", text, "Burn fuses for this work order? [y/N]",
		       "", NULL);
		break;
	case M_QUIT:
		snprintf(text, sizeof(text), "%d slot(s) have a unit in progress or waiting "
			 "for a decision. Quitting lets units in work finish first.",
			 ui_busy_slots(u));
		dialog(u, "Quit?", text, "Quit anyway? [y/N]", "", NULL);
		break;
	case M_MSG:
		dialog(u, u->msg_error ? "Error" : "Note", u->msg, "Press any key", "", NULL);
		break;
	case M_MAIN:
		if (u->msg[0])
			put(LINES - 2, 0, COLS, A_BOLD, " %s", u->msg);
		break;
	}
	refresh();
}

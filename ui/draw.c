/* draw.c — everything the UI puts on the screen, redrawn whole from the UI
 * state on every change (a resize is just another redraw).  Layout: a
 * three-line header, a grid of slot panels, the log (or last units) pane,
 * a key-help line; dialogs on top.  Only ASCII from the state reaches the
 * screen (device strings were escaped when queued). */
#include <curses.h>
#include <stdarg.h>
#include <stddef.h>
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

/* How many bytes of s (n bytes) fill at most w columns, and in *cols how
 * many columns they take (the engine's text may hold UTF-8). */
static size_t fit(const char *s, size_t n, int w, int *cols)
{
	mbstate_t st;
	size_t off = 0;
	int c = 0;

	memset(&st, 0, sizeof(st));
	while (off < n) {
		wchar_t wc;
		size_t k = mbrtowc(&wc, s + off, n - off, &st);
		int cw = 1;

		if (k == (size_t)-1 || k == (size_t)-2 || k == 0) {
			k = 1;
			memset(&st, 0, sizeof(st));
		} else if ((cw = wcwidth(wc)) < 0) {
			cw = 1;
		}
		if (c + cw > w)
			break;
		c += cw;
		off += k;
	}
	if (cols)
		*cols = c;
	return off;
}

/* Columns the text takes. */
static int text_cols(const char *s)
{
	int c;

	fit(s, strlen(s), 1 << 20, &c);
	return c;
}

/* Print at y,x at most w columns. */
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
	mvaddnstr(y, x, buf, (int)fit(buf, strlen(buf), w, NULL));
	attroff(a);
}

#define WRAP_MAX 8

/* Text broken into lines of at most w columns: at spaces, a word longer
 * than a line is split; a '\n' in the text is where it breaks first when
 * it does not fit on one line. */
struct lines {
	int n;
	char l[WRAP_MAX][256];
};

static void add_line(struct lines *L, const char *p, size_t n)
{
	if (L->n < WRAP_MAX)
		snprintf(L->l[L->n++], sizeof(L->l[0]), "%.*s", (int)n, p);
}

static void wrap_text(const char *text, int w, struct lines *L)
{
	char one[512];
	const char *para = text;

	L->n = 0;
	if (w < 1 || !*text)
		return;
	snprintf(one, sizeof(one), "%s", text);
	for (char *c = one; *c; c++)
		if (*c == '\n')
			*c = ' ';
	if (text_cols(one) <= w) {
		add_line(L, one, strlen(one));
		return;
	}
	while (para) {
		const char *end = strchr(para, '\n');
		size_t len = end ? (size_t)(end - para) : strlen(para);

		while (len) {
			int cols;
			size_t cut = fit(para, len, w, &cols);

			if (cut < len) {
				size_t sp = cut;

				while (sp > 0 && para[sp] != ' ')
					sp--;
				if (sp > 0)
					cut = sp;
				else if (cut == 0)
					cut = 1;
			}
			add_line(L, para, cut);
			para += cut;
			len -= cut;
			while (len && *para == ' ')
				para++, len--;
		}
		para = end ? end + 1 : NULL;
	}
}

/* Wrap text into at most maxl lines of width w starting at y; returns the
 * lines used. */
static int wrap(int y, int x, int w, int maxl, attr_t a, const char *text)
{
	struct lines L;
	int n;

	wrap_text(text, w, &L);
	for (n = 0; n < L.n && n < maxl; n++)
		put(y + n, x, w, a, "%s", L.l[n]);
	return n;
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

/* A 5-row bitmap letter for the scaled verdict ('#' a pixel). */
struct bitglyph {
	char c;
	const char *row[5];
};

static const struct bitglyph bfont[] = {
	{ 'A', { ".#.", "#.#", "###", "#.#", "#.#" } },
	{ 'C', { ".##", "#..", "#..", "#..", ".##" } },
	{ 'D', { "##.", "#.#", "#.#", "#.#", "##." } },
	{ 'E', { "###", "#..", "##.", "#..", "###" } },
	{ 'F', { "###", "#..", "##.", "#..", "#.." } },
	{ 'I', { "#", "#", "#", "#", "#" } },
	{ 'K', { "#.#", "#.#", "##.", "#.#", "#.#" } },
	{ 'L', { "#..", "#..", "#..", "#..", "###" } },
	{ 'N', { "#..#", "##.#", "#.##", "#..#", "#..#" } },
	{ 'O', { "###", "#.#", "#.#", "#.#", "###" } },
	{ 'P', { "##.", "#.#", "##.", "#..", "#.." } },
	{ 'Q', { ".##.", "#..#", "#..#", "#.#.", ".#.#" } },
	{ 'R', { "##.", "#.#", "##.", "#.#", "#.#" } },
	{ 'S', { ".##", "#..", ".#.", "..#", "##." } },
	{ 'T', { "###", ".#.", ".#.", ".#.", ".#." } },
	{ 'U', { "#.#", "#.#", "#.#", "#.#", "###" } },
};

static const struct bitglyph *bitglyph(char c)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(bfont); i++)
		if (bfont[i].c == c)
			return &bfont[i];
	return NULL;
}

/* Columns of word in the bitmap font at sx columns a pixel (one column
 * between letters), or -1 when a letter is missing. */
static int block_width(const char *word, int sx)
{
	int w = 0;

	for (const char *c = word; *c; c++) {
		const struct bitglyph *g = bitglyph(*c);

		if (!g)
			return -1;
		w += (int)strlen(g->row[0]) * sx + (c[1] ? 1 : 0);
	}
	return w;
}

/* The verdict in block letters as large as w columns and h rows allow
 * (pixels sx wide, sy high, sy <= sx <= 2 sy so the letters keep their
 * shape); a verdict that did not pass stands on a hatched ground, so it
 * reads without colour too.  Returns the rows used, 0 when even the
 * smallest size does not fit. */
static int big_block(const struct ui *u, int y, int x, int w, int h, const char *word,
		     bool bad, attr_t a)
{
	int best = 0, sx = 0, sy = 0, bw, bh, x0;

	for (int ty = 1; ty <= 6; ty++)
		for (int tx = ty; tx <= 2 * ty; tx++) {
			int need = block_width(word, tx);

			if (need > 0 && need + (bad ? 2 : 0) <= w && 5 * ty <= h &&
			    tx * ty > best) {
				best = tx * ty;
				sx = tx;
				sy = ty;
			}
		}
	if (!best)
		return 0;
	bw = block_width(word, sx);
	bh = 5 * sy;
	x0 = x + (w - bw) / 2;
	attron(a | A_BOLD);
	for (int r = 0; r < bh; r++) {
		int cx = x0;

		if (bad) {   /* the hatched ground, one column either side */
			for (int c = x0 - 1; c <= x0 + bw; c++) {
				if (u->utf8)
					mvaddwstr(y + r, c, L"\u2591");
				else
					mvaddch(y + r, c, ':');
			}
		}
		for (const char *c = word; *c; c++) {
			const struct bitglyph *g = bitglyph(*c);
			int gw = (int)strlen(g->row[0]);

			for (int px = 0; px < gw; px++)
				for (int k = 0; k < sx; k++) {
					if (g->row[r / sy][px] != '#')
						continue;
					if (u->utf8) {
						mvaddwstr(y + r, cx + px * sx + k, L"\u2588");
					} else {
						attron(A_REVERSE);
						mvaddch(y + r, cx + px * sx + k, ' ');
						attroff(A_REVERSE);
					}
				}
			cx += gw * sx + 1;
		}
	}
	attroff(a | A_BOLD);
	return bh;
}

const char *ui_verdict_word(enum ui_verdict v)
{
	switch (v) {
	case V_PASS: return "PASS";
	case V_UNFUSED: return "UNFUSED";
	case V_FAIL: return "FAIL";
	case V_QUARANTINE: return "QUARANTINE";
	case V_NONE: break;
	}
	return "";
}

static bool good(enum ui_verdict v)
{
	return v == V_PASS || v == V_UNFUSED;
}

static bool link_cause(st_cause c)
{
	return c == ST_CAUSE_GARBLED || c == ST_CAUSE_SILENT || c == ST_CAUSE_LINK ||
	       c == ST_CAUSE_UNPLUGGED || c == ST_CAUSE_INTERRUPTED;
}

/* What a stopped slot says: the cause in plain words, and what to do. */
static void slot_advice(const struct ui_slot *s, int n, st_cause c, char *cause,
			size_t clen, char *action, size_t alen)
{
	const char *a;

	switch (c) {
	case ST_CAUSE_GARBLED:
		snprintf(cause, clen, _("programmer %d sends garbled data"), n);
		a = _("check its cable,\nthen press s");
		break;
	case ST_CAUSE_SILENT:
		snprintf(cause, clen, _("programmer %d does not answer"), n);
		a = _("check cable and power,\nthen press s");
		break;
	case ST_CAUSE_UNPLUGGED:
		snprintf(cause, clen, _("programmer %d is unplugged"), n);
		a = _("plug it back in:\nthe slot resumes");
		break;
	case ST_CAUSE_HSM:
		snprintf(cause, clen, _("the HSM token was lost"));
		a = _("put the token back,\nrestart the station");
		break;
	case ST_CAUSE_RECORDS:
		snprintf(cause, clen, _("the records store failed"));
		a = _("call a supervisor\n(d: details)");
		break;
	case ST_CAUSE_QUOTA_FULL:
		if (s->quota >= 0)
			snprintf(cause, clen, _("work order complete (%ld/%ld)"), s->quota_done,
				 s->quota);
		else
			snprintf(cause, clen, _("work order complete"));
		a = _("w: scan the next\nwork order");
		break;
	case ST_CAUSE_LINK:
		snprintf(cause, clen, _("programmer %d: line error"), n);
		a = _("check its cable,\nthen press s");
		break;
	default:
		snprintf(cause, clen, _("programmer %d stopped"), n);
		a = _("d: details,\nthen press s");
		break;
	}
	snprintf(action, alen, "%s", a);
}

void ui_advice(const struct ui *u, int i, char *cause, size_t clen, char *action,
	       size_t alen, bool narrow)
{
	const struct ui_slot *s = &u->slots[i];
	bool held = s->state == SL_HELD;
	const char *a = "";
	int n = i + 1;

	cause[0] = action[0] = '\0';
	if (s->state == SL_ERROR) {
		slot_advice(s, n, s->cause, cause, clen, action, alen);
		return;
	}
	if (s->state != SL_VERDICT && s->state != SL_HELD)
		return;
	if (good(s->verdict) && !s->skipped) {
		if (s->verdict == V_UNFUSED) {
			snprintf(cause, clen, _("fuses not burned"));
			a = narrow ? _("not locked: arm it") : _("not locked: finish it armed (y at start)");
		} else {
			a = s->note[0] ? s->note : _("next unit: insert it");
		}
		snprintf(action, alen, "%s", a);
	} else {
		switch (s->cause) {
		case ST_CAUSE_CLONE:
			snprintf(cause, clen, _("another unit has the same ID: a clone?"));
			a = held ? _("x: put it aside\nfor a supervisor") :
			    _("put it aside\nfor a supervisor");
			break;
		case ST_CAUSE_FUSE_CONFLICT:
			snprintf(cause, clen, _("its fuses are not as planned: do not burn again"));
			a = held ? _("press k, then\nput it aside") : _("put it aside\nfor a supervisor");
			break;
		case ST_CAUSE_INTERRUPTED:
			snprintf(cause, clen, _("programmer %d was cut off during the burn"), n);
			a = _("plug it back in:\nthe unit resumes");
			break;
		case ST_CAUSE_UNPLUGGED:
			snprintf(cause, clen, _("programmer %d was unplugged during the unit"), n);
			a = _("plug it back in:\nthe unit resumes");
			break;
		case ST_CAUSE_GARBLED:
		case ST_CAUSE_SILENT:
		case ST_CAUSE_LINK:
		case ST_CAUSE_HSM:
		case ST_CAUSE_RECORDS:
			slot_advice(s, n, s->cause, cause, clen, action, alen);
			a = NULL;
			break;
		case ST_CAUSE_NO_ID:
			snprintf(cause, clen, _("its ID cannot be read"));
			a = held ? _("seat it again,\nthen press r") : _("seat it again");
			break;
		case ST_CAUSE_LOCKED:
			snprintf(cause, clen, _("locked, and no record of it here"));
			a = held ? _("x: put it aside\nfor a supervisor") :
			    _("put it aside\nfor a supervisor");
			break;
		case ST_CAUSE_QUARANTINED:
			snprintf(cause, clen, _("quarantined on record: not touched"));
			a = _("take it out,\nput it aside");
			break;
		case ST_CAUSE_ALREADY_PASS:
			snprintf(cause, clen, _("already provisioned (PASS on record)"));
			a = _("take it out");
			break;
		case ST_CAUSE_ALREADY_UNFUSED:
			snprintf(cause, clen, _("provisioned before, not locked"));
			a = _("to lock it: w, then\ny (burn fuses)");
			break;
		case ST_CAUSE_OPERATOR:
			snprintf(cause, clen, _("set aside by operator %s"), u->operator_name);
			a = _("take it out,\nput it aside");
			break;
		case ST_CAUSE_ROUTE_REFUSED:
			/* "refused by the MES: <its reason>; nothing was done ..." */
			snprintf(cause, clen, "%.*s", (int)(strstr(s->reason, "; nothing") ?
				 strstr(s->reason, "; nothing") - s->reason :
				 (ptrdiff_t)strlen(s->reason)), s->reason);
			a = held ? _("r ask again\nk skip") : _("take it out\n(nothing was done)");
			break;
		case ST_CAUSE_ROUTE_UNANSWERED:
			snprintf(cause, clen, _("the MES does not answer the route check"));
			a = held ? _("r retry when the\nMES answers") : _("run it again when\nthe MES answers");
			break;
		case ST_CAUSE_MEASUREMENT:
			/* "measurement NAME = V U is outside its limits [L, H] ..." */
			snprintf(cause, clen, "%.*s", (int)(strstr(s->reason, " (the profile") ?
				 strstr(s->reason, " (the profile") - s->reason :
				 (ptrdiff_t)strlen(s->reason)), s->reason);
			a = held ? _("r retry  k skip\nx quarantine") : _("take it out\n(d: details)");
			break;
		default:
			snprintf(cause, clen, _("failed at %s"), s->failed_step[0] ?
				 s->failed_step : _("a step"));
			a = held ? _("r retry  k skip\nx quarantine") : _("take it out\n(d: details)");
			break;
		}
		if (a)
			snprintf(action, alen, "%s", a);
	}
	/* the programmer went away or stopped after the verdict: what to do
	 * now is about the slot, said once */
	if (s->slot_cause) {
		char c2[160], a2[160];

		slot_advice(s, n, s->slot_cause, c2, sizeof(c2), a2, sizeof(a2));
		if (!link_cause(s->cause) || !cause[0])
			snprintf(cause, clen, "%s", c2);
		if (s->verdict == V_QUARANTINE && s->slot_cause == ST_CAUSE_UNPLUGGED)
			snprintf(action, alen, _("put the unit aside,\nplug the programmer in"));
		else if (!link_cause(s->cause) || s->slot_cause != ST_CAUSE_UNPLUGGED)
			snprintf(action, alen, "%s", a2);
	}
}

static const char *slot_tag(const struct ui_slot *s)
{
	switch (s->state) {
	case SL_OFF: return _("off");
	case SL_IDLE: return s->stopped ? _("STOPPED") : _("ready");
	case SL_BUSY: return _("WORKING");
	case SL_VERDICT:
		return s->slot_cause == ST_CAUSE_UNPLUGGED ? _("UNPLUGGED") :
		       s->slot_cause || s->stopped ? _("STOPPED") : s->ready ? _("ready") : _("done");
	case SL_HELD: return _("DECIDE");
	case SL_ERROR:
		return s->cause == ST_CAUSE_QUOTA_FULL ? _("COMPLETE") :
		       s->cause == ST_CAUSE_UNPLUGGED ? _("UNPLUGGED") : _("ERROR");
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
	bool quota = s->state == SL_ERROR && s->cause == ST_CAUSE_QUOTA_FULL;
	attr_t fa = quota ? col(u, C_PASS, A_NORMAL) :
		    s->state == SL_ERROR || (s->state >= SL_VERDICT && !good(s->verdict)) ?
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
		int64_t el = st_now_ms() - s->t0, sel_ms = st_now_ms() - s->step_t0;
		char cur_s[24] = "";   /* a long step (a burn) shows its own time */

		if (sel_ms >= 1000)
			snprintf(cur_s, sizeof(cur_s), " %llds", (long long)(sel_ms / 1000));

		if (rows >= u->nsteps + 2) {
			for (int k = 0; k < u->nsteps && row <= last - 2; k++) {
				const char *mark = s->steps[k] == STP_OK ? "+" :
						   s->steps[k] == STP_FAIL ? "x" :
						   s->steps[k] == STP_SKIP ? "-" :
						   k == cur ? ">" : " ";

				put(row++, x + 1, iw, k == cur ? col(u, C_BUSY, A_REVERSE) | A_BOLD :
				    s->steps[k] == STP_OK ? col(u, C_PASS, A_NORMAL) : A_NORMAL,
				    "%s %s%-*s", mark, u->steps[k], iw - 2 - (int)strlen(u->steps[k]),
				    k == cur ? cur_s : "");
			}
		} else if (row <= last) {
			put(row++, x + 1, iw, col(u, C_BUSY, A_BOLD), "> %s%s",
			    cur >= 0 ? u->steps[cur] : "finishing", cur_s);
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
		bool ok = quota || (s->state != SL_ERROR && good(s->verdict));
		attr_t a = ok ? col(u, C_PASS, A_BOLD) : col(u, C_FAIL, A_BOLD);
		attr_t bar = ok ? col(u, C_PASSBAR, A_REVERSE) : col(u, C_FAILBAR, A_REVERSE);
		const char *word = s->state == SL_ERROR ? (quota ? "" : _("ERROR")) :
				   ui_verdict_word(s->verdict);
		char cause[200], action[200], vline[80] = "";
		struct lines C, A;
		int avail = last - row + 1, cn, gh;

		ui_advice(u, i, cause, sizeof(cause), action, sizeof(action), iw < 40);
		wrap_text(cause, iw, &C);
		wrap_text(action, iw, &A);
		if (s->skipped)
			snprintf(vline, sizeof(vline), "%s on record", word);
		else if (s->verdict == V_UNFUSED && s->state != SL_ERROR)
			snprintf(vline, sizeof(vline), "UNFUSED %.1fs", (double)s->elapsed_ms / 1000.0);
		else if (s->verdict == V_PASS && s->state != SL_ERROR)
			snprintf(vline, sizeof(vline), "PASS %.1fs recorded",
				 (double)s->elapsed_ms / 1000.0);
		else
			snprintf(vline, sizeof(vline), "%s", word);
		/* The action first, whole, at the bottom; then the cause; the
		 * verdict's word line; the large verdict in what is left. */
		if (A.n > avail)
			A.n = avail;
		cn = avail - A.n - (vline[0] ? 1 : 0);
		cn = cn < 0 ? 0 : cn > C.n ? C.n : cn;
		gh = avail - A.n - cn - (vline[0] ? 1 : 0);
		if (word[0] && gh >= 5) {
			int used = big_block(u, row, x + 1, iw, gh - (gh > 6 ? 1 : 0), word,
					     !ok, a);

			if (!used && gh >= 4) {
				big(u, row, x + 1, iw, word, a, bar);
				used = 3;
			}
			row += used;
			if (used && gh - used > 0)
				row++;  /* a blank row under the letters */
		} else if (word[0] && gh >= 4) {
			big(u, row, x + 1, iw, word, a, bar);
			row += 3;
		}
		if (vline[0] && row <= last - A.n)
			put(row++, x + 1, iw, a, "%s", vline);
		for (int k = 0; k < C.n && row <= last - A.n; k++)
			put(row++, x + 1, iw, quota ? a : A_NORMAL, "%s", C.l[k]);
		/* the action under the cause, a blank row between when there
		 * is room, never pushed off the panel */
		if (row < last - A.n + 1)
			row++;
		if (row > last - A.n + 1)
			row = last - A.n + 1;
		for (int k = 0; k < A.n; k++)
			put(row + k, x + 1, iw, s->state == SL_HELD ||
			    (s->state == SL_ERROR && !quota) || s->slot_cause ?
			    A_BOLD | A_REVERSE : A_BOLD, "%-*s", iw, A.l[k]);
		return;
	}
	if (row <= last)
		wrap(row, x + 1, iw, last - row + 1, A_NORMAL,
		     s->state == SL_OFF ? (u->logged_in ? _("not started") : _("log in first")) :
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
	put(0, 0, COLS, a | A_BOLD, _(" STATION %s  OPERATOR %s  HSM %s: %s"),
	    u->cfg->station_id ? u->cfg->station_id : "?",
	    u->logged_in ? u->operator_name : "-", u->cfg->token_label,
	    u->logged_in ? _("logged in") : _("not logged in"));
	{
		char ca[160] = "-";

		if (u->logged_in)
			snprintf(ca, sizeof(ca), "%s %dd", u->ca_name, u->ca_days);
		put(1, 0, COLS, a, _(" CA %s  PROFILE %s %.8s  WO %s%s"), ca,
		    st_profile_name(u->o->prof), digest ? digest : "",
		    u->work_order[0] ? u->work_order : "-",
		    !u->rh ? "" : u->armed ? _(" ARMED") : _(" not armed"));
	}
	{
		/* "" until this store was synced (docs/sync.md); the UI loop
		 * reads it on a timer (sync_lag_refresh), not per redraw */
		const char *sync = u->sync_lag;

		char unf[32] = ""; /* shown once a unit ended UNFUSED */

		if (u->unfused)
			snprintf(unf, sizeof(unf), _("  UNFUSED %d"), u->unfused);
		put(2, 0, COLS, a | A_BOLD, _(" PASS %d%s  FAIL %d  QUARANTINE %d  YIELD %s  "
		    "UNITS/H %s%s%s"), u->pass, unf, u->fail, u->quarantine, yield, uph,
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

			put(y + 2 + r, 0, COLS, good(e->result) ? A_NORMAL : col(u, C_FAIL, A_BOLD),
			    " %-8s %-2d %-10s %-9s %-6lld %-12s %s", e->when, e->slot,
			    ui_verdict_word(e->result), e->fuses, (long long)e->ms, e->wo,
			    e->uid);
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
	case M_NAME: return _(" Type your name, Enter");
	case M_PIN: return _(" Type the PIN (not shown), Enter   Esc back");
	case M_OPPW: return _(" Type your password (not shown), Enter   Esc back");
	case M_REL_UID: case M_REL_WHY: case M_REL_SUP: return _(" Type, Enter   Esc cancel");
	case M_REL_PW: return _(" Type the password (not shown), Enter   Esc cancel");
	case M_WO: return _(" Scan or type the work order, Enter");
	case M_WO_NEW: return _(" c a supervisor creates it   any other key: scan another");
	case M_WO_QUOTA: case M_WO_SUP: return _(" Type, Enter   Esc cancel");
	case M_WO_PW: return _(" Type the password (not shown), Enter   Esc cancel");
	case M_ARM: return _(" y arm fuse burning   n / Enter: do not burn");
	case M_QUIT: return _(" y quit   n / Enter: stay");
	case M_MSG: return _(" any key: continue");
	case M_MAIN: break;
	}
	return _(" 1-8 slot  s start/stop  r retry  k skip  x quar.  w work order  v view  q quit");
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
	case M_WO_NEW:
		snprintf(text, sizeof(text), "Work order %s does not exist. %s", u->wo_new,
			 u->cfg->operators_path ? "A supervisor can create it now: press c. "
			 "Any other key: scan another." : "A supervisor creates it "
			 "('station records workorder create'); any key: scan another.");
		dialog(u, "Unknown work order", text, NULL, NULL, NULL);
		break;
	case M_WO_QUOTA:
		snprintf(text, sizeof(text), "Work order %s: how many units may it "
			 "provision?", u->wo_new);
		dialog(u, "New work order", text, "Quota:", u->in, u->msg);
		curs_set(1);
		break;
	case M_WO_SUP:
		snprintf(text, sizeof(text), "A supervisor creates work order %s (quota "
			 "%ld): name, then password.", u->wo_new, u->wo_quota);
		dialog(u, "New work order", text, "Supervisor:", u->in, NULL);
		curs_set(1);
		break;
	case M_WO_PW:
		snprintf(text, sizeof(text), "Supervisor %s: your password. It is not "
			 "shown as you type.", u->rel_sup);
		dialog(u, "New work order", text, "Password:", "", NULL);
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

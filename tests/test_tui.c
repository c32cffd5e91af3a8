/* test_tui.c — the real `station tui` driven in tmux (send-keys, then the
 * screen read back with capture-pane) against station-devsim on ptys and a
 * fresh SoftHSM token.  Every test has its own tmux server (-L socket), temp
 * dir, token and simulators; screens are polled until the expected text
 * shows (bounded), never slept on. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "ui/ui_int.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

#define PIN "36187201"
#define ROT "2622102199f06fad94b827703f16e2998a2260f77f4e3210c2dae769ce1ca586"
#define WAIT_MS 30000

/* Every work order a test scans (created by world_init). */
static const char *const work_orders[] = {
	"WO-4711", "WO-Q1", "WO-C1", "WO-8", "WO-E1", "WO-P1", "WO-U1", "WO-R1",
};

/* One test's world: token, configuration, CA, a tmux server. */
struct world {
	char dir[256];
	char conf[512], pinfile[512], db[512], log[512];
	char sock[64];
	int starts;           /* tmux servers started so far */
	bool plain;           /* start as plain `station`, no command word */
	char screen[65536];
};

/* The tmux server of the running test, killed by the fini even when an
 * assertion ends the test early. */
static char live_sock[64];

static void write_file(const char *p, const char *text)
{
	FILE *f = fopen(p, "w");

	cr_assert_not_null(f, "cannot write %s", p);
	fputs(text, f);
	fclose(f);
}

/* Run argv (NULL-terminated), stdout into out (may be NULL); exit code. */
static int run(char *out, size_t cap, const char *const *argv)
{
	int p[2], status;
	pid_t pid;
	size_t n = 0;
	ssize_t k;

	cr_assert_eq(pipe(p), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(out ? p[1] : null, 1);
		dup2(null, 2);
		close(p[0]);
		execvp(argv[0], (char **)argv);
		_exit(127);
	}
	close(p[1]);
	while (out && n + 1 < cap && (k = read(p[0], out + n, cap - 1 - n)) > 0)
		n += (size_t)k;
	if (out)
		out[n] = '\0';
	close(p[0]);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* tmux -L <sock> ARGS... */
static int tmux(struct world *w, char *out, size_t cap, ...)
{
	const char *argv[32] = { "tmux", "-L", w->sock };
	int argc = 3;
	const char *a;
	va_list ap;

	va_start(ap, cap);
	while ((a = va_arg(ap, const char *)) && argc < 31)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	return run(out, cap, argv);
}

static void tmux_fini(void)
{
	if (live_sock[0]) {
		const char *argv[] = { "tmux", "-L", live_sock, "kill-server", NULL };
		int status;
		pid_t pid = fork();

		if (pid == 0) {
			int null = open("/dev/null", O_RDWR);

			dup2(null, 1);
			dup2(null, 2);
			execvp(argv[0], (char **)argv);
			_exit(127);
		}
		if (pid > 0)
			waitpid(pid, &status, 0);
	}
}

/* A work order the supervisor created (a run takes its units from the
 * work order's quota: an unknown one is refused).  Before the UI starts:
 * not two processes creating the records store at once. */
static void create_work_order(struct world *w, const char *wo, const char *quota)
{
	char bin[512];
	const char *argv[] = { bin, "--config", w->conf, "--pin-file", w->pinfile,
			       "records", "workorder", "create", wo, "--quota", quota,
			       NULL };

	snprintf(bin, sizeof(bin), "%s/station", getenv("STATION_BUILD"));
	cr_assert_eq(run(NULL, 0, argv), 0, "station records workorder create %s failed",
		     wo);
}

/* Token "station", configuration, profile, issuing CA, the
 * work orders the tests scan. */
static void world_init(struct world *w)
{
	char text[4096], bin[512], profile[512], certs[512], engkey[512], engpub[512];
	const char *argv[12];

	memset(w, 0, sizeof(*w));
	cr_assert_eq(fx_softhsm_init(w->dir, sizeof(w->dir), "station", PIN), 0,
		     "SoftHSM fixture failed");
	cr_assert_not_null(getenv("STATION_BUILD"), "STATION_BUILD is not set");
	snprintf(w->conf, sizeof(w->conf), "%s/station.conf", w->dir);
	snprintf(w->pinfile, sizeof(w->pinfile), "%s/user.pin", w->dir);
	snprintf(w->db, sizeof(w->db), "%s/records.db", w->dir);
	snprintf(w->log, sizeof(w->log), "%s/tui.log", w->dir);
	snprintf(profile, sizeof(profile), "%s/test.profile", w->dir);
	snprintf(certs, sizeof(certs), "%s/certs", w->dir);
	snprintf(engkey, sizeof(engkey), "%s/eng.key.pem", w->dir);
	snprintf(engpub, sizeof(engpub), "%s/eng.pub.pem", w->dir);
	fx_engkey_make(engkey, engpub);
	mkdir(certs, 0755);
	write_file(w->pinfile, PIN "\n");
	snprintf(text, sizeof(text),
		 "station: { id = \"tui-station\"; };\n"
		 "hsm: { module = \"%s\"; token = \"station\"; ca_key = \"issuing-ca\"; };\n"
		 "records: { path = \"%s\"; cert_dir = \"%s\"; };\n"
		 "profile = \"%s\";\nprogrammer: { timeout_ms = 3000; };\n"
		 "trust: { profile_keys = [ \"%s\" ]; };\n",
		 FX_SOFTHSM_MODULE, w->db, certs, profile, engpub);
	write_file(w->conf, text);
	write_file(profile,
		   "name = \"tui-sensor\";\n"
		   "certificate: { organization = \"Test Devices\"; validity_days = 365; };\n"
		   "root_of_trust: { sha256 = \"" ROT "\"; fuse_bank = 0; };\n");
	fx_sign_with(engkey, profile);
	snprintf(bin, sizeof(bin), "%s/station", getenv("STATION_BUILD"));
	argv[0] = bin;
	argv[1] = "--config";
	argv[2] = w->conf;
	argv[3] = "--pin-file";
	argv[4] = w->pinfile;
	argv[5] = "ca";
	argv[6] = "init";
	argv[7] = "--cn";
	argv[8] = "TUI Test CA";
	argv[9] = NULL;
	cr_assert_eq(run(NULL, 0, argv), 0, "station ca init failed");
	for (size_t i = 0; i < ST_ARRAY_SIZE(work_orders); i++)
		create_work_order(w, work_orders[i], "1000");
}

/* Start `station tui` over the simulators in a w x h tmux session.  When it
 * ends, the pane shows its exit code and the terminal's modes. */
static void tui_start_env(struct world *w, int cols, int rows, fx_devsim *sims, int n,
			  const char *env)
{
	char cmd[8192], x[16], y[16];
	int len;

	len = snprintf(cmd, sizeof(cmd), "env %s LANG=C.UTF-8 SOFTHSM2_CONF=%s %s/station "
		       "--config %s --log %s%s", env, getenv("SOFTHSM2_CONF"),
		       getenv("STATION_BUILD"), w->conf, w->log, w->plain ? "" : " tui");
	for (int i = 0; i < n; i++)
		len += snprintf(cmd + len, sizeof(cmd) - (size_t)len, " --slot %s",
				sims[i].port);
	snprintf(cmd + len, sizeof(cmd) - (size_t)len, "; echo STATION-EXIT=$?; "
		 "stty -a | tr ' ' '\\n' | grep -x -e echo -e -echo -e icanon "
		 "-e -icanon | tr '\\n' ' '; echo; sleep 600");
	snprintf(x, sizeof(x), "%d", cols);
	snprintf(y, sizeof(y), "%d", rows);
	/* A fresh server each time: a killed one may still be going away. */
	snprintf(w->sock, sizeof(w->sock), "st-tui-%d-%d", (int)getpid(), ++w->starts);
	snprintf(live_sock, sizeof(live_sock), "%s", w->sock);
	cr_assert_eq(tmux(w, NULL, 0, "-f", "/dev/null", "new-session", "-d", "-s", "main",
			  "-x", x, "-y", y, cmd, NULL), 0, "tmux did not start (is it installed?)");
}

static void tui_start(struct world *w, int cols, int rows, fx_devsim *sims, int n)
{
	tui_start_env(w, cols, rows, sims, n, "");
}

static const char *screen(struct world *w)
{
	tmux(w, w->screen, sizeof(w->screen), "capture-pane", "-p", "-t", "main", NULL);
	return w->screen;
}

/* Poll the screen until text shows (true) or WAIT_MS pass (false). */
static bool wait_for(struct world *w, const char *text)
{
	struct timespec t = { 0, 50 * 1000 * 1000 };
	int64_t end = st_now_ms() + WAIT_MS;

	do {
		if (strstr(screen(w), text))
			return true;
		nanosleep(&t, NULL);
	} while (st_now_ms() < end);
	return false;
}

#define expect(w, text) \
	cr_assert(wait_for(w, text), "'%s' never showed; the screen:\n%s", text, (w)->screen)

/* Type literal text, then Enter when enter is true. */
static void type(struct world *w, const char *text, bool enter)
{
	if (*text)
		tmux(w, NULL, 0, "send-keys", "-t", "main", "-l", text, NULL);
	if (enter)
		tmux(w, NULL, 0, "send-keys", "-t", "main", "Enter", NULL);
}

/* Log in, scan the work order, answer the arming question. */
static void login_and_start(struct world *w, const char *wo, bool arm)
{
	expect(w, "Operator login");
	type(w, "alice", true);
	expect(w, "PIN:");
	type(w, PIN, true);
	expect(w, "HSM station: logged in");
	expect(w, "Work order:");
	type(w, wo, true);
	expect(w, "Burn fuses for this work order? [y/N]");
	type(w, arm ? "y" : "n", false);
	expect(w, arm ? " ARMED" : "not armed");
}

/* Count unit rows (optionally with a state) straight from the SQLite file. */
static int count_units(const struct world *w, const char *state)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int n = -1;

	cr_assert_eq(sqlite3_open_v2(w->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(db, state ?
		"SELECT count(*) FROM units WHERE state = ?1" :
		"SELECT count(*) FROM units", -1, &st, NULL), SQLITE_OK);
	if (state)
		sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

static void start_sims(struct world *w, fx_devsim *sims, int n, int units)
{
	char name[16], seed[64];

	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "p%d", i + 1);
		snprintf(seed, sizeof(seed), "--seed tui-%d", i + 1);
		cr_assert_eq(fx_devsim_start(&sims[i], w->dir, name, units, seed), 0);
	}
}

static void finish(struct world *w, fx_devsim *sims, int n)
{
	tmux(w, NULL, 0, "kill-server", NULL);
	live_sock[0] = '\0';
	for (int i = 0; i < n; i++)
		fx_devsim_stop(&sims[i]);
	fx_rmtree(w->dir);
}

/* The whole file: the UI's log must never hold the PIN. */
static void assert_log_has_no_pin(const struct world *w)
{
	char buf[65536];
	FILE *f = fopen(w->log, "r");
	size_t n;

	cr_assert_not_null(f, "no log file %s", w->log);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	cr_assert_null(strstr(buf, PIN), "the PIN is in the log");
	cr_assert_null(strstr(buf, "99999999"), "a typed PIN is in the log");
}

/* One screen line as code points (the capture is UTF-8: box lines and
 * block letters are one column each); returns how many. */
static int decode(const char *line, size_t len, unsigned *cp, int max)
{
	const unsigned char *c = (const unsigned char *)line, *end = c + len;
	int n = 0;

	while (c < end && n < max) {
		int k = *c >= 0xf0 ? 4 : *c >= 0xe0 ? 3 : *c >= 0xc0 ? 2 : 1;
		unsigned v = k == 1 ? *c : *c & (0x7f >> k);

		for (int i = 1; i < k && c + i < end; i++)
			v = v << 6 | (c[i] & 0x3f);
		cp[n++] = v;
		c += k;
	}
	return n;
}

/* The inner text of the panel titled title ("2 p2.tty") on the current
 * screen, its rows joined by single spaces (runs of blanks collapsed), into
 * out; *glyph_rows gets how many of its rows hold block-letter pixels
 * (U+2588).  False when no such panel is on screen. */
static bool panel_text(struct world *w, const char *title, char *out, size_t cap,
		       int *glyph_rows)
{
	static unsigned rows[80][400];
	int len[80], nrows = 0, top = -1, x0 = -1, x1 = -1;
	unsigned tcp[64];
	int tn = decode(title, strlen(title), tcp, 64);
	size_t o = 0;
	const char *p = w->screen;

	while (*p && nrows < 80) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);

		len[nrows] = decode(p, n, rows[nrows], 400);
		nrows++;
		p += n + (nl ? 1 : 0);
	}
	for (int r = 0; r < nrows && top < 0; r++)
		for (int c = 0; c + tn <= len[r]; c++)
			if (!memcmp(&rows[r][c], tcp, sizeof(unsigned) * (size_t)tn)) {
				top = r;
				for (x0 = c; x0 >= 0 && rows[r][x0] != 0x250c; x0--)
					;
				for (x1 = c; x1 < len[r] && rows[r][x1] != 0x2510; x1++)
					;
				break;
			}
	if (top < 0 || x0 < 0 || x1 >= len[top])
		return false;
	*glyph_rows = 0;
	out[0] = '\0';
	for (int r = top + 1; r < nrows && x0 < len[r] && rows[r][x0] != 0x2514; r++) {
		bool pix = false;

		for (int c = x0 + 1; c < x1 && c < len[r]; c++) {
			unsigned v = rows[r][c];

			pix |= v == 0x2588;
			if (v == ' ' && (o == 0 || out[o - 1] == ' '))
				continue;
			if (o + 5 >= cap)
				break;
			if (v < 0x80)
				out[o++] = (char)v;
			else
				out[o++] = '*';   /* letters and ground: not text */
		}
		if (o && out[o - 1] != ' ' && o + 1 < cap)
			out[o++] = ' ';
		*glyph_rows += pix;
	}
	out[o] = '\0';
	return true;
}

/* Poll until the panel titled title shows text (whole, maybe wrapped over
 * several rows); returns the panel's glyph rows. */
static int expect_panel(struct world *w, const char *title, const char *text)
{
	struct timespec t = { 0, 50 * 1000 * 1000 };
	int64_t end = st_now_ms() + WAIT_MS;
	char got[4096] = "";
	int g = 0;

	do {
		screen(w);
		if (panel_text(w, title, got, sizeof(got), &g) && strstr(got, text))
			return g;
		nanosleep(&t, NULL);
	} while (st_now_ms() < end);
	cr_assert_fail("panel '%s' never showed '%s' whole; it shows '%s'; the screen:\n%s",
		       title, text, got, w->screen);
	return 0;
}

/* The panel of title must not show text (checked once, on the last
 * capture). */
static void refute_panel(struct world *w, const char *title, const char *text)
{
	char got[4096] = "";
	int g;

	cr_assert(panel_text(w, title, got, sizeof(got), &g), "no panel '%s':\n%s", title,
		  w->screen);
	cr_assert_null(strstr(got, text), "panel '%s' shows '%s':\n%s", title, text, w->screen);
}

static void resize(struct world *w, const char *x, const char *y)
{
	tmux(w, NULL, 0, "resize-window", "-t", "main", "-x", x, "-y", y, NULL);
}

/* Programmers 2..n with no unit: four slots on screen, one doing the
 * scenario. */
static void idle_sims(struct world *w, fx_devsim *sims, int from, int n)
{
	char name[16];

	for (int i = from; i < n; i++) {
		snprintf(name, sizeof(name), "p%d", i + 1);
		cr_assert_eq(fx_devsim_start(&sims[i], w->dir, name, 0, "--seed idle"), 0);
	}
}

TestSuite(tui, .fini = tmux_fini);

Test(tui, wrong_pin_is_an_error_then_login_works, .timeout = 120)
{
	struct world w;
	fx_devsim sim;

	world_init(&w);
	start_sims(&w, &sim, 1, 1);
	w.plain = true;  /* plain `station` on a terminal is the UI */
	tui_start(&w, 80, 24, &sim, 1);
	expect(&w, "Operator login");
	type(&w, "alice", true);
	expect(&w, "PIN:");
	type(&w, "99999999", true);
	expect(&w, "wrong PIN");
	cr_assert_null(strstr(w.screen, "99999999"), "the PIN was shown:\n%s", w.screen);
	cr_assert(strstr(w.screen, "not logged in"), "%s", w.screen);
	/* Still alive and asking: the right PIN now opens the session. */
	type(&w, PIN, true);
	expect(&w, "HSM station: logged in");
	cr_assert(strstr(w.screen, "OPERATOR alice"), "%s", w.screen);
	cr_assert(strstr(w.screen, "CA TUI Test CA 36"), "CA and days left:\n%s", w.screen);
	cr_assert_null(strstr(w.screen, PIN), "the PIN was shown:\n%s", w.screen);
	expect(&w, "Work order:");
	/* Esc with no work order running leaves; the terminal is back. */
	tmux(&w, NULL, 0, "send-keys", "-t", "main", "Escape", NULL);
	expect(&w, "STATION-EXIT=0");
	expect(&w, "icanon echo");
	assert_log_has_no_pin(&w);
	finish(&w, &sim, 1);
}

/* Four slots, one unit each: all PASS, counts and records agree, fuses
 * burned; every slot stays visible at 160x48 and back at 80x24. */
Test(tui, four_slots_pass_and_counts_update, .timeout = 180)
{
	struct world w;
	fx_devsim sims[4];
	json_t *st = NULL;

	world_init(&w);
	start_sims(&w, sims, 4, 1);
	tui_start(&w, 80, 24, sims, 4);
	login_and_start(&w, "WO-4711", true);
	expect(&w, "PASS 4  FAIL 0  QUARANTINE 0  YIELD 100%");
	cr_assert(strstr(w.screen, "WO WO-4711 ARMED"), "%s", w.screen);
	cr_assert_eq(count_units(&w, "PASS"), 4);
	for (int i = 0; i < 4; i++) {
		json_t *u;

		cr_assert_eq(fx_devsim_dump(sims[i].state_path, &st), 0);
		u = json_array_get(json_object_get(st, "units"), 0);
		cr_assert_str_eq(json_string_value(json_array_get(json_object_get(u, "fuses"), 0)),
				 ROT, "slot %d: fuses not burned", i + 1);
		json_decref(st);
	}
	for (int pass = 0; pass < 2; pass++) {
		const char *size[2][2] = { { "160", "48" }, { "80", "24" } };

		tmux(&w, NULL, 0, "resize-window", "-t", "main", "-x", size[pass][0], "-y",
		     size[pass][1], NULL);
		expect(&w, "4 p4.tty");
		for (int i = 1; i <= 4; i++) {
			char title[32];

			snprintf(title, sizeof(title), "%d p%d.tty", i, i);
			cr_assert(strstr(w.screen, title), "%sx%s: slot %d not visible:\n%s",
				  size[pass][0], size[pass][1], i, w.screen);
		}
		cr_assert(strstr(w.screen, "PASS 4"), "%s", w.screen);
	}
	/* The last units' records view lists them with the work order. */
	type(&w, "v", false);
	expect(&w, "Last units (as recorded)");
	cr_assert(strstr(w.screen, "WO-4711"), "%s", w.screen);
	/* Nothing in progress: q leaves at once. */
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	expect(&w, "icanon echo");
	assert_log_has_no_pin(&w);
	finish(&w, sims, 4);
}

/* A unit whose fuses hold another value: QUARANTINE in red with the reason,
 * nothing burned; q asks first while it waits for a decision. */
Test(tui, fuse_conflict_shows_quarantine_reason_and_q_asks, .timeout = 120)
{
	struct world w;
	fx_devsim sim;
	json_t *st = NULL, *u;
	const char *other = "00000000000000000000000000000000000000000000000000000000000000ff";

	world_init(&w);
	start_sims(&w, &sim, 1, 1);
	fx_devsim_stop(&sim);
	cr_assert_eq(fx_devsim_dump(sim.state_path, &st), 0);
	u = json_array_get(json_object_get(st, "units"), 0);
	/* Both copies of the bank (the simulator keeps a redundant one): a
	 * value really programmed, not a half-done burn. */
	json_array_set_new(json_object_get(u, "fuses"), 0, json_string(other));
	json_array_set_new(json_object_get(u, "fuses_redundant"), 0, json_string(other));
	cr_assert_eq(json_dump_file(st, sim.state_path, 0), 0);
	json_decref(st);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "p1", 1, "--seed tui-1"), 0);
	tui_start(&w, 80, 24, &sim, 1);
	login_and_start(&w, "WO-Q1", true);
	expect(&w, "PASS 0  FAIL 0  QUARANTINE 1");
	expect(&w, "fuse field root-of-trust (bank 0)");
	cr_assert(strstr(w.screen, "QUARANTINE"), "%s", w.screen);
	cr_assert(strstr(w.screen, "DECIDE"), "the unit waits for a decision:\n%s", w.screen);
	cr_assert_eq(count_units(&w, "QUARANTINE"), 1);
	/* q while the unit waits: asked, and n keeps the UI. */
	type(&w, "q", false);
	expect(&w, "Quit anyway? [y/N]");
	type(&w, "n", false);
	expect(&w, "q quit");
	cr_assert_null(strstr(w.screen, "Quit anyway"), "%s", w.screen);
	/* Retry is refused for a quarantined unit, so is stopping the slot
	 * around it; k releases it. */
	type(&w, "r", false);
	expect(&w, "is not retried");
	type(&w, "s", false);
	expect(&w, "decide the unit first");
	type(&w, "k", false);
	expect(&w, "waiting for a unit");
	/* Stop the slot, start it again. */
	type(&w, "s", false);
	expect(&w, "STOPPED");
	type(&w, "s", false);
	expect(&w, "operator alice: start");
	expect(&w, " ready ");
	cr_assert_eq(count_units(&w, NULL), 1, "nothing more was recorded");
	cr_assert_eq(fx_devsim_dump(sim.state_path, &st), 0);
	u = json_array_get(json_object_get(st, "units"), 0);
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(u, "fuses"), 0)),
			 other, "the fuses were changed");
	json_decref(st);
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, &sim, 1);
}

/* A work order the records do not know is checked when it is scanned,
 * before the arming question: the slots do not start (nothing is
 * provisioned outside a work order's quota), the operator is told, and
 * nothing is recorded as a unit. */
Test(tui, unknown_work_order_is_refused, .timeout = 120)
{
	struct world w;
	fx_devsim sim;

	world_init(&w);
	start_sims(&w, &sim, 1, 1);
	tui_start(&w, 160, 48, &sim, 1);
	expect(&w, "Operator login");
	type(&w, "alice", true);
	expect(&w, "PIN:");
	type(&w, PIN, true);
	expect(&w, "Work order:");
	type(&w, "WO-NONE", true);
	expect(&w, "Work order WO-NONE does not exist");
	cr_assert_null(strstr(w.screen, "Burn fuses"), "asked to arm an unknown work "
		       "order:\n%s", w.screen);
	/* no operator list here: a supervisor creates it outside */
	cr_assert(strstr(w.screen, "station records workorder create"), "%s", w.screen);
	cr_assert_eq(count_units(&w, NULL), 0, "a unit was recorded");
	type(&w, " ", false);
	expect(&w, "Work order:");
	/* a known one goes on to the question */
	type(&w, "WO-4711", true);
	expect(&w, "Burn fuses for this work order? [y/N]");
	type(&w, "n", false);
	expect(&w, "PASS 0  UNFUSED 1");
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, &sim, 1);
}

/* Two programmers answering with one device ID (a cloned ID): one unit
 * FAILs with the reason; the operator quarantines it. */
Test(tui, cloned_id_fails_with_reason_and_operator_quarantines, .timeout = 120)
{
	struct world w;
	fx_devsim sims[2];

	world_init(&w);
	cr_assert_eq(fx_devsim_start(&sims[0], w.dir, "p1", 1, "--seed same"), 0);
	cr_assert_eq(fx_devsim_start(&sims[1], w.dir, "p2", 1, "--seed same"), 0);
	tui_start(&w, 80, 24, sims, 2);
	login_and_start(&w, "WO-C1", false);
	expect(&w, "FAIL 1");
	expect(&w, "PASS 0  UNFUSED 1"); /* not armed: provisioned, not locked */
	/* the cause in plain words on the panel; the engine's own words in
	 * the unit view (d on the slot) */
	expect(&w, "another unit has the same ID");
	cr_assert(strstr(w.screen, "r retry"), "what to do:\n%s", w.screen);
	for (int i = 1; i <= 2; i++) {
		char key[2] = { (char)('0' + i), 0 };

		type(&w, key, false);
		type(&w, "d", false);
		expect(&w, "any key: continue");
		if (strstr(w.screen, "same device ID")) {
			type(&w, " ", false);
			break;
		}
		type(&w, " ", false);
		cr_assert_neq(i, 2, "no unit view shows the engine's reason:\n%s", w.screen);
	}
	/* Only the held slot takes x. */
	type(&w, "1", false);
	type(&w, "x", false);
	type(&w, "2", false);
	type(&w, "x", false);
	expect(&w, "PASS 0  UNFUSED 1  FAIL 1  QUARANTINE 1");
	expect(&w, "set aside by operator alice");
	cr_assert_eq(count_units(&w, "QUARANTINE"), 1);
	cr_assert_eq(count_units(&w, "FAIL"), 1);
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, sims, 2);
}

/* Eight slots fit a 160x48 terminal and 80x24 still shows all eight. */
Test(tui, eight_slots_scale, .timeout = 180)
{
	struct world w;
	fx_devsim sims[8];

	world_init(&w);
	start_sims(&w, sims, 8, 1);
	tui_start(&w, 160, 48, sims, 8);
	login_and_start(&w, "WO-8", false);
	/* not armed: every unit UNFUSED, a good verdict (yield 100%) that is
	 * not a locked PASS, and each panel says how to finish it */
	expect(&w, "PASS 0  UNFUSED 8  FAIL 0  QUARANTINE 0  YIELD 100%");
	expect(&w, "not locked: arm it");
	cr_assert_eq(count_units(&w, "UNFUSED"), 8);
	cr_assert_eq(count_units(&w, "PASS"), 0);
	for (int pass = 0; pass < 2; pass++) {
		if (pass)
			tmux(&w, NULL, 0, "resize-window", "-t", "main", "-x", "80", "-y", "24",
			     NULL);
		expect(&w, pass ? "8 p8" : "8 p8.tty");
		for (int i = 1; i <= 8; i++) {
			char title[32];

			snprintf(title, sizeof(title), "%d p%d", i, i);
			cr_assert(strstr(w.screen, title), "slot %d not visible:\n%s", i,
				  w.screen);
		}
	}
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, sims, 8);
}

/* SIGTERM stops the UI cleanly; a crash (SIGSEGV) still gives the terminal
 * back: the guard restores it and says so. */
static pid_t ui_pid(const struct world *w)
{
	char buf[65536], *p;
	FILE *f = fopen(w->log, "r");
	size_t n;

	cr_assert_not_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	p = strstr(buf, "(pid ");
	cr_assert_not_null(p, "no pid in the log:\n%s", buf);
	return (pid_t)atoi(p + 5);
}

Test(tui, sigterm_and_crash_restore_the_terminal, .timeout = 120)
{
	struct world w;
	fx_devsim sim;

	world_init(&w);
	start_sims(&w, &sim, 1, 1);
	tui_start(&w, 80, 24, &sim, 1);
	expect(&w, "Operator login");
	cr_assert_eq(kill(ui_pid(&w), SIGTERM), 0);
	expect(&w, "STATION-EXIT=143");
	expect(&w, "icanon echo");
	tmux(&w, NULL, 0, "kill-server", NULL);
	unlink(w.log);
	tui_start(&w, 80, 24, &sim, 1);
	expect(&w, "Operator login");
	type(&w, "bob", true);
	expect(&w, "PIN:");
	cr_assert_eq(kill(ui_pid(&w), SIGSEGV), 0);
	expect(&w, "the UI stopped");
	expect(&w, "icanon echo");
	finish(&w, &sim, 1);
}

/* A programmer on a broken line (the simulator answers garbage): the slot
 * shows ERROR with the reason and what to do, and the UI stays usable. */
Test(tui, programmer_error_shows_on_its_slot, .timeout = 120)
{
	struct world w;
	fx_devsim sims[2];

	world_init(&w);
	cr_assert_eq(fx_devsim_start(&sims[0], w.dir, "p1", 1, "--seed g1"), 0);
	cr_assert_eq(fx_devsim_start(&sims[1], w.dir, "p2", 1, "--seed g2 --fault garbage"), 0);
	tui_start(&w, 80, 24, sims, 2);
	login_and_start(&w, "WO-E1", false);
	expect(&w, "PASS 0  UNFUSED 1  FAIL 0");
	expect_panel(&w, "2 p2.tty", "check its cable, then press s");
	cr_assert(strstr(w.screen, "ERROR"), "%s", w.screen);
	/* Starting it again tries again (and fails again, visibly). */
	type(&w, "2", false);
	type(&w, "s", false);
	expect(&w, "slot 2: operator alice: start");
	expect_panel(&w, "2 p2.tty", "check its cable, then press s");
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, sims, 2);
}

/* Colour where the terminal has it; none at all with NO_COLOR set. */
Test(tui, no_color_means_monochrome, .timeout = 120)
{
	struct world w;
	fx_devsim sim;

	world_init(&w);
	start_sims(&w, &sim, 1, 1);
	for (int nc = 0; nc < 2; nc++) {
		tui_start_env(&w, 80, 24, &sim, 1, nc ? "NO_COLOR=1" : "NO_COLOR=");
		expect(&w, "Operator login");
		tmux(&w, w.screen, sizeof(w.screen), "capture-pane", "-e", "-p", "-t", "main",
		     NULL);
		/* The header's cyan background (SGR 46) is the colour mark. */
		if (nc)
			cr_assert_null(strstr(w.screen, "46m"), "colour under NO_COLOR:\n%s",
				       w.screen);
		else
			cr_assert_not_null(strstr(w.screen, "46m"), "no colour:\n%s", w.screen);
		tmux(&w, NULL, 0, "send-keys", "-t", "main", "Escape", NULL);
		expect(&w, "STATION-EXIT=0");
		tmux(&w, NULL, 0, "kill-server", NULL);
	}
	finish(&w, &sim, 1);
}

/* What a device sends is shown escaped: no byte of it reaches the terminal
 * as a control character. */
Test(tui, device_strings_are_escaped)
{
	char *e = ui_escape_dup("ok \x1b[2J\x07\r\n\xc3\xa9~");

	cr_assert_not_null(e);
	cr_assert_str_eq(e, "ok \\x1b[2J\\x07\\x0d\\x0a\\xc3\\xa9~");
	for (const char *c = e; *c; c++)
		cr_assert(*c >= 0x20 && *c < 0x7f, "byte 0x%02x left as is", (unsigned char)*c);
	free(e);
	cr_assert_null(ui_escape_dup(NULL));
}

/* The station's own text keeps its em-dash (issue 25: it was shown as
 * \xe2\x80\x94); control bytes, escape sequences, C1 controls and
 * broken UTF-8 in it are still escaped; on an ASCII terminal the dash is
 * '-'. */
Test(tui, engine_text_keeps_our_dash_and_escapes_controls)
{
	char *e = ui_text_dup("went away \xe2\x80\x94 check \x1b[2J\x07 \xc2\x9b \xff\xe2\x80", true);

	cr_assert_not_null(e);
	cr_assert_str_eq(e, "went away \xe2\x80\x94 check \\x1b[2J\\x07 \\xc2\\x9b "
			 "\\xff\\xe2\\x80");
	free(e);
	e = ui_text_dup("a \xe2\x80\x94 b \xc3\xa9", false);
	cr_assert_str_eq(e, "a - b \\xc3\\xa9");
	free(e);
	cr_assert_null(ui_text_dup(NULL, true));
}

/* A programmer plugged in after the start, unplugged, and plugged in again
 * with a new unit: the slot finds it and its units start by themselves. */
Test(tui, units_start_when_a_programmer_appears, .timeout = 120)
{
	struct world w;
	fx_devsim sim = { 0 };
	char state[600];

	world_init(&w);
	snprintf(sim.port, sizeof(sim.port), "%s/p1.tty", w.dir);
	tui_start(&w, 80, 24, &sim, 1);
	login_and_start(&w, "WO-P1", false);
	expect(&w, "waiting for the programmer");
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "p1", 1, "--seed plug-a"), 0);
	expect(&w, "PASS 0  UNFUSED 1  FAIL 0");
	/* Unplugged: it says so and waits; a new programmer with a new unit. */
	fx_devsim_stop(&sim);
	expect(&w, "ERROR");
	snprintf(state, sizeof(state), "%s/p1.json", w.dir);
	cr_assert_eq(unlink(state), 0);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "p1", 1, "--seed plug-b"), 0);
	expect(&w, "PASS 0  UNFUSED 2  FAIL 0");
	cr_assert_eq(count_units(&w, "UNFUSED"), 2);
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, &sim, 1);
}

/* The signed operator list: alice (operator), sam (operator, supervisor),
 * their passwords in <dir>/NAME.pw, roles.operators in the configuration. */
static void roles_init(struct world *w)
{
	static const char *const people[][3] = {
		{ "alice", "operator", "alice-secret-1" },
		{ "sam", "operator,supervisor", "sam-secret-22" },
	};
	char bin[512], pw[512], list[4096], path[512], key[512], conf[8192], line[600];
	const char *argv[] = { bin, "--config", w->conf, "operator", "hash", "--operator",
			       NULL, "--role", NULL, "--password-file", pw, NULL };
	char *end;
	FILE *f;
	size_t n;

	snprintf(bin, sizeof(bin), "%s/station", getenv("STATION_BUILD"));
	snprintf(list, sizeof(list), "operators = (\n");
	for (size_t i = 0; i < ST_ARRAY_SIZE(people); i++) {
		snprintf(pw, sizeof(pw), "%s/%s.pw", w->dir, people[i][0]);
		snprintf(line, sizeof(line), "%s\n", people[i][2]);
		write_file(pw, line);
		argv[6] = people[i][0];
		argv[8] = people[i][1];
		cr_assert_eq(run(line, sizeof(line), argv), 0, "operator hash failed");
		end = strstr(line, "},");
		cr_assert_not_null(end, "%s", line);
		/* the last entry of a libconfig list takes no comma */
		snprintf(end, sizeof(line) - (size_t)(end - line), "%s",
			 i + 1 < ST_ARRAY_SIZE(people) ? "},\n" : "}\n");
		strcat(list, line);
	}
	strcat(list, ");\n");
	snprintf(path, sizeof(path), "%s/operators.conf", w->dir);
	write_file(path, list);
	snprintf(key, sizeof(key), "%s/eng.key.pem", w->dir);
	fx_sign_with(key, path);
	f = fopen(w->conf, "r");
	cr_assert_not_null(f);
	n = fread(conf, 1, sizeof(conf) - 1, f);
	fclose(f);
	snprintf(conf + n, sizeof(conf) - n, "roles: { operators = \"%s\"; };\n", path);
	write_file(w->conf, conf);
}

static int q_int(const struct world *w, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int v = -1;

	cr_assert_eq(sqlite3_open_v2(w->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s", sql);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void log_text(const struct world *w, char *buf, size_t cap)
{
	FILE *lf = fopen(w->log, "r");
	size_t n;

	cr_assert_not_null(lf);
	n = fread(buf, 1, cap - 1, lf);
	buf[n] = '\0';
	fclose(lf);
}

/* With an operator list the operator's password is checked after the PIN;
 * a wrong one is refused on screen and on record, and never shown. */
Test(tui, operator_password_is_checked_against_the_signed_list, .timeout = 120)
{
	struct world w;
	fx_devsim sim;
	char buf[65536];

	world_init(&w);
	roles_init(&w);
	start_sims(&w, &sim, 1, 1);
	tui_start(&w, 80, 24, &sim, 1);
	expect(&w, "Operator login");
	type(&w, "alice", true);
	expect(&w, "PIN:");
	type(&w, PIN, true);
	expect(&w, "Password:");
	type(&w, "not-the-password", true);
	expect(&w, "not on the operator list");
	cr_assert_null(strstr(w.screen, "not-the-password"), "shown:\n%s", w.screen);
	type(&w, "alice-secret-1", true);
	expect(&w, "Work order:");
	cr_assert_null(strstr(w.screen, "alice-secret-1"), "shown:\n%s", w.screen);
	tmux(&w, NULL, 0, "send-keys", "-t", "main", "Escape", NULL);
	expect(&w, "STATION-EXIT=0");
	cr_assert_eq(q_int(&w, "SELECT count(*) FROM events WHERE kind = 'auth_refused'"
			   " AND body LIKE '%\"alice\"%'"
			   " AND body NOT LIKE '%not-the-password%'"), 1);
	log_text(&w, buf, sizeof(buf));
	cr_assert_null(strstr(buf, "not-the-password"), "a password is in the log");
	cr_assert_null(strstr(buf, "alice-secret-1"), "a password is in the log");
	cr_assert(strstr(buf, "operator alice authenticated"), "%s", buf);
	finish(&w, &sim, 1);
}

/* R: a supervisor releases a quarantined unit, asked for their password
 * at that moment; an operator cannot. */
Test(tui, supervisor_releases_a_quarantined_unit, .timeout = 180)
{
	struct world w;
	fx_devsim sim;
	json_t *st = NULL, *u;
	const char *other = "00000000000000000000000000000000000000000000000000000000000000ff";
	char uid[64] = "", buf[65536];
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;

	world_init(&w);
	roles_init(&w);
	start_sims(&w, &sim, 1, 1);
	fx_devsim_stop(&sim);
	cr_assert_eq(fx_devsim_dump(sim.state_path, &st), 0);
	u = json_array_get(json_object_get(st, "units"), 0);
	json_array_set_new(json_object_get(u, "fuses"), 0, json_string(other));
	json_array_set_new(json_object_get(u, "fuses_redundant"), 0, json_string(other));
	cr_assert_eq(json_dump_file(st, sim.state_path, 0), 0);
	json_decref(st);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "p1", 1, "--seed tui-1"), 0);
	tui_start(&w, 80, 24, &sim, 1);
	expect(&w, "Operator login");
	type(&w, "alice", true);
	expect(&w, "PIN:");
	type(&w, PIN, true);
	expect(&w, "Password:");
	type(&w, "alice-secret-1", true);
	expect(&w, "Work order:");
	type(&w, "WO-Q1", true);
	expect(&w, "Burn fuses for this work order? [y/N]");
	type(&w, "y", false);
	expect(&w, "PASS 0  FAIL 0  QUARANTINE 1");
	type(&w, "k", false);
	expect(&w, "waiting for a unit");
	cr_assert_eq(sqlite3_open_v2(w.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(db, "SELECT uid FROM units WHERE state = "
					"'QUARANTINE'", -1, &q, NULL), SQLITE_OK);
	if (sqlite3_step(q) == SQLITE_ROW)
		snprintf(uid, sizeof(uid), "%s", (const char *)sqlite3_column_text(q, 0));
	sqlite3_finalize(q);
	sqlite3_close(db);
	cr_assert(uid[0], "no quarantined unit");

	/* alice is no supervisor */
	type(&w, "R", false);
	expect(&w, "Device ID:");
	type(&w, uid, true);
	expect(&w, "Reason:");
	type(&w, "bench check ok", true);
	expect(&w, "Supervisor:");
	type(&w, "alice", true);
	expect(&w, "Password:");
	type(&w, "alice-secret-1", true);
	expect(&w, "Supervisor refused");
	cr_assert(strstr(w.screen, "not a supervisor"), "%s", w.screen);
	type(&w, " ", false);
	/* sam is */
	type(&w, "R", false);
	expect(&w, "Device ID:");
	type(&w, uid, true);
	expect(&w, "Reason:");
	type(&w, "bench check ok", true);
	expect(&w, "Supervisor:");
	type(&w, "sam", true);
	expect(&w, "Password:");
	type(&w, "sam-secret-22", true);
	expect(&w, "released from quarantine");
	cr_assert_null(strstr(w.screen, "sam-secret-22"), "shown:\n%s", w.screen);
	type(&w, " ", false);
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	snprintf(buf, sizeof(buf), "SELECT count(*) FROM units WHERE uid = '%s' AND "
		 "state = 'FAIL' AND operator = 'sam' AND reason LIKE '%%supervisor sam: "
		 "bench check ok%%' AND id = (SELECT max(id) FROM units)", uid);
	cr_assert_eq(q_int(&w, buf), 1, "the release is not the device's last record");
	cr_assert_eq(q_int(&w, "SELECT count(*) FROM events WHERE kind = "
			   "'quarantine_release' AND body LIKE '%\"sam\"%'"), 1);
	cr_assert_eq(q_int(&w, "SELECT count(*) FROM events WHERE kind = 'auth_refused'"
			   " AND body LIKE '%supervisor%'"), 1);
	log_text(&w, buf, sizeof(buf));
	cr_assert_null(strstr(buf, "sam-secret-22"), "a password is in the log");
	/* every event is covered by an audit signature (the release came
	 * while the work order ran, under its audit signer; the work
	 * order's own event too): signed, or in the batch of a later
	 * signed event (records/chain.c, "One signature per commit") */
	cr_assert_eq(q_int(&w, "SELECT count(*) FROM events e WHERE sig IS NULL AND (body NOT LIKE "
			   "'%\"batch\":%' OR NOT EXISTS (SELECT 1 FROM events s WHERE "
			   "s.seq > e.seq AND s.sig IS NOT NULL))"), 0);
	cr_assert_eq(q_int(&w, "SELECT count(*) FROM events WHERE kind"
			   " IN ('quarantine_release', 'auth_refused')"), 2);
	finish(&w, &sim, 1);
}

/* With TUI_DUMP=FILE, append the screen to FILE (the captures in
 * docs/tui.md come from there). */
static void dump_screen(const struct world *w)
{
	const char *path = getenv("TUI_DUMP");
	FILE *f = path ? fopen(path, "a") : NULL;

	if (f) {
		fprintf(f, "%s\n----\n", w->screen);
		fclose(f);
	}
}

/* The panels' words, at 80x24 with four slots and at 120x40 (issue 25):
 * the cause in plain words, the action whole (maybe wrapped, never cut),
 * the engine's detail in the log pane, not on the panel. */
static void both_sizes(struct world *w, const char *title, const char *cause,
		       const char *action, int glyph[2])
{
	for (int pass = 0; pass < 2; pass++) {
		resize(w, pass ? "120" : "80", pass ? "40" : "24");
		expect(w, pass ? "UNITS/H" : "4 p4.tty");
		expect_panel(w, title, cause);
		glyph[pass] = expect_panel(w, title, action);
		refute_panel(w, title, "\\x");
		dump_screen(w);
	}
}

Test(tui, link_fault_says_what_to_do_at_both_sizes, .timeout = 180)
{
	struct world w;
	fx_devsim sims[4];
	int g[2];

	world_init(&w);
	cr_assert_eq(fx_devsim_start(&sims[0], w.dir, "p1", 1, "--seed g1 --fault garbage"), 0);
	idle_sims(&w, sims, 1, 4);
	tui_start(&w, 80, 24, sims, 4);
	login_and_start(&w, "WO-E1", false);
	both_sizes(&w, "1 p1.tty", "programmer 1 sends garbled data",
		   "check its cable, then press s", g);
	refute_panel(&w, "1 p1.tty", "COBS");
	/* the detail is in the log pane, with the station's own dash */
	expect(&w, "slot 1: ERROR");
	cr_assert_null(strstr(w.screen, "\\xe2\\x80\\x94"), "%s", w.screen);
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, sims, 4);
}

/* The cable cut during a burn (at its read-back): the unit's verdict (FAIL,
 * interrupted) on the panel as in the header, one instruction; plugged back
 * in, the unit resumes and passes. */
Test(tui, unplug_mid_burn_is_one_state_and_one_instruction, .timeout = 180)
{
	struct world w;
	fx_devsim sims[4];
	int g[2];

	world_init(&w);
	cr_assert_eq(fx_devsim_start(&sims[0], w.dir, "p1", 1, "--seed u1 --fault cutread:1"),
		     0);
	idle_sims(&w, sims, 1, 4);
	tui_start(&w, 80, 24, sims, 4);
	login_and_start(&w, "WO-U1", true);
	expect(&w, "PASS 0  FAIL 1  QUARANTINE 0");
	both_sizes(&w, "1 p1.tty", "programmer 1 was cut off during the burn",
		   "plug it back in: the unit resumes", g);
	expect_panel(&w, "1 p1.tty", "FAIL");
	refute_panel(&w, "1 p1.tty", "ERROR");
	refute_panel(&w, "1 p1.tty", "QUARANTINE");
	refute_panel(&w, "1 p1.tty", "re-plug");
	/* the engine's words went to the log (pane and file), the station's
	 * own dash as a dash, not escaped */
	{
		char text[65536];

		log_text(&w, text, sizeof(text));
		cr_assert_not_null(strstr(text, "went away"), "%s", text);
		cr_assert_not_null(strstr(text, "\xe2\x80\x94"), "no dash in the log:\n%s", text);
		cr_assert_null(strstr(text, "\\xe2\\x80\\x94"), "an escaped dash:\n%s", text);
	}
	/* plugged back in with the same unit: it resumes and passes */
	fx_devsim_stop(&sims[0]);
	cr_assert_eq(fx_devsim_rewind(sims[0].state_path), 0);
	cr_assert_eq(fx_devsim_start(&sims[0], w.dir, "p1", 1, "--seed u1"), 0);
	expect(&w, "PASS 1  FAIL 1  QUARANTINE 0");
	expect_panel(&w, "1 p1.tty", "PASS");
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, sims, 4);
}

Test(tui, quarantine_says_what_to_do_at_both_sizes, .timeout = 180)
{
	struct world w;
	fx_devsim sims[4];
	json_t *st = NULL, *u;
	const char *other = "00000000000000000000000000000000000000000000000000000000000000ff";
	int g[2];

	world_init(&w);
	start_sims(&w, sims, 1, 1);
	fx_devsim_stop(&sims[0]);
	cr_assert_eq(fx_devsim_dump(sims[0].state_path, &st), 0);
	u = json_array_get(json_object_get(st, "units"), 0);
	json_array_set_new(json_object_get(u, "fuses"), 0, json_string(other));
	json_array_set_new(json_object_get(u, "fuses_redundant"), 0, json_string(other));
	cr_assert_eq(json_dump_file(st, sims[0].state_path, 0), 0);
	json_decref(st);
	cr_assert_eq(fx_devsim_start(&sims[0], w.dir, "p1", 1, "--seed tui-1"), 0);
	idle_sims(&w, sims, 1, 4);
	tui_start(&w, 80, 24, sims, 4);
	login_and_start(&w, "WO-Q1", true);
	expect(&w, "QUARANTINE 1");
	both_sizes(&w, "1 p1.tty", "its fuses are not as planned: do not burn again",
		   "press k, then put it aside", g);
	type(&w, "k", false);
	expect_panel(&w, "1 p1.tty", "put it aside for a supervisor");
	expect_panel(&w, "1 p1.tty", "QUARANTINE");
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, sims, 4);
}

/* A work order's quota taken is the batch's normal end: said as such,
 * not as a red ERROR. */
Test(tui, full_quota_is_work_order_complete, .timeout = 180)
{
	struct world w;
	fx_devsim sims[4];
	int g[2];

	world_init(&w);
	create_work_order(&w, "WO-FULL", "1");
	start_sims(&w, sims, 1, 2);
	idle_sims(&w, sims, 1, 4);
	tui_start(&w, 80, 24, sims, 4);
	login_and_start(&w, "WO-FULL", true);
	expect(&w, "PASS 1  FAIL 0");
	both_sizes(&w, "1 p1.tty", "work order complete (1/1)",
		   "w: scan the next work order", g);
	refute_panel(&w, "1 p1.tty", "ERROR");
	cr_assert_eq(count_units(&w, NULL), 1, "the second unit was not started");
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, sims, 4);
}

/* Which of the panels titled in titles shows text (polled); its index. */
static int panel_with(struct world *w, const char *const *titles, int n, const char *text)
{
	struct timespec t = { 0, 50 * 1000 * 1000 };
	int64_t end = st_now_ms() + WAIT_MS;
	char got[4096];
	int g;

	do {
		screen(w);
		for (int i = 0; i < n; i++)
			if (panel_text(w, titles[i], got, sizeof(got), &g) && strstr(got, text))
				return i;
		nanosleep(&t, NULL);
	} while (st_now_ms() < end);
	cr_assert_fail("no panel shows '%s':\n%s", text, w->screen);
	return -1;
}

/* A cloned ID: the hint whole at both sizes, the verdict larger on the
 * larger terminal; retried, the unit still ends with a verdict. */
Test(tui, clone_says_what_to_do_and_a_retry_ends_with_a_verdict, .timeout = 180)
{
	static const char *const titles[] = { "1 p1.tty", "2 p2.tty" };
	struct world w;
	fx_devsim sims[4];
	char key[2];
	int g[2], i;

	world_init(&w);
	cr_assert_eq(fx_devsim_start(&sims[0], w.dir, "p1", 1, "--seed same"), 0);
	cr_assert_eq(fx_devsim_start(&sims[1], w.dir, "p2", 1, "--seed same"), 0);
	idle_sims(&w, sims, 2, 4);
	tui_start(&w, 80, 24, sims, 4);
	login_and_start(&w, "WO-C1", true);
	expect(&w, "FAIL 1");
	i = panel_with(&w, titles, 2, "another unit has the same ID");
	both_sizes(&w, titles[i], "another unit has the same ID: a clone?",
		   "x: put it aside for a supervisor", g);
	cr_assert_geq(g[0], 3, "a verdict in large letters at 80x24:\n%s", w.screen);
	cr_assert_gt(g[1], g[0], "the verdict is no larger at 120x40 (%d rows) than at "
		     "80x24 (%d rows):\n%s", g[1], g[0], w.screen);
	/* retried: the unit is not provisioned again, and its panel still
	 * ends with its verdict and what to do */
	snprintf(key, sizeof(key), "%d", i + 1);
	type(&w, key, false);
	type(&w, "r", false);
	expect(&w, "operator alice: retry");
	expect(&w, "history skip");
	expect_panel(&w, titles[i], "FAIL");
	expect_panel(&w, titles[i], "another unit has the same ID: a clone?");
	expect_panel(&w, titles[i], "put it aside for a supervisor");
	cr_assert_eq(count_units(&w, "FAIL"), 1);
	cr_assert_eq(count_units(&w, "PASS"), 1, "one identity for the ID");
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, sims, 4);
}

/* A supervisor creates an unknown work order from the UI: an operator is
 * refused (on record), the supervisor's creation is a signed event and
 * the run takes its units from the new quota. */
Test(tui, supervisor_creates_an_unknown_work_order, .timeout = 180)
{
	struct world w;
	fx_devsim sim;
	char buf[65536];

	world_init(&w);
	roles_init(&w);
	start_sims(&w, &sim, 1, 1);
	tui_start(&w, 80, 24, &sim, 1);
	expect(&w, "Operator login");
	type(&w, "alice", true);
	expect(&w, "PIN:");
	type(&w, PIN, true);
	expect(&w, "Password:");
	type(&w, "alice-secret-1", true);
	expect(&w, "Work order:");
	type(&w, "WO-NEW7", true);
	expect(&w, "Work order WO-NEW7 does not exist");
	cr_assert_null(strstr(w.screen, "Burn fuses"), "%s", w.screen);
	type(&w, "c", false);
	expect(&w, "Quota:");
	type(&w, "lots", true);
	expect(&w, "is not a number of units");
	type(&w, "3", true);
	expect(&w, "Supervisor:");
	type(&w, "alice", true);
	expect(&w, "Password:");
	type(&w, "alice-secret-1", true);
	expect(&w, "Supervisor refused");
	cr_assert_eq(q_int(&w, "SELECT count(*) FROM work_orders WHERE id = 'WO-NEW7'"), 0);
	type(&w, " ", false);
	expect(&w, "Work order:");
	type(&w, "WO-NEW7", true);
	expect(&w, "does not exist");
	type(&w, "c", false);
	expect(&w, "Quota:");
	type(&w, "3", true);
	expect(&w, "Supervisor:");
	type(&w, "sam", true);
	expect(&w, "Password:");
	type(&w, "sam-secret-22", true);
	expect(&w, "Burn fuses for this work order? [y/N]");
	cr_assert_null(strstr(w.screen, "sam-secret-22"), "shown:\n%s", w.screen);
	cr_assert_eq(q_int(&w, "SELECT count(*) FROM work_orders WHERE id = 'WO-NEW7' "
			   "AND quota = 3"), 1);
	type(&w, "y", false);
	expect(&w, "PASS 1  FAIL 0");
	cr_assert_eq(q_int(&w, "SELECT count(*) FROM units WHERE work_order = 'WO-NEW7' "
			   "AND state = 'PASS'"), 1);
	/* every event covered by an audit signature */
	cr_assert_eq(q_int(&w, "SELECT count(*) FROM events e WHERE sig IS NULL AND (body NOT LIKE "
			   "'%\"batch\":%' OR NOT EXISTS (SELECT 1 FROM events s WHERE "
			   "s.seq > e.seq AND s.sig IS NOT NULL))"), 0);
	log_text(&w, buf, sizeof(buf));
	cr_assert_not_null(strstr(buf, "work order WO-NEW7 created by supervisor sam"), "%s",
			   buf);
	cr_assert_null(strstr(buf, "sam-secret-22"), "a password is in the log");
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, &sim, 1);
}

/* A wrong PIN: the token's counter is shown (SoftHSM reports
 * CKF_USER_PIN_COUNT_LOW after one), and the UI stops asking before a try
 * that may lock the token: not a third PIN, not after a new name either. */
Test(tui, wrong_pin_shows_the_counter_and_stops_before_the_final_try, .timeout = 120)
{
	struct world w;
	fx_devsim sim;

	world_init(&w);
	start_sims(&w, &sim, 1, 1);
	tui_start(&w, 80, 24, &sim, 1);
	expect(&w, "Operator login");
	type(&w, "alice", true);
	expect(&w, "PIN:");
	type(&w, "99999999", true);
	expect(&w, "few attempts left");
	expect(&w, "type the PIN again");
	type(&w, "99999998", true);
	expect(&w, "does not ask for the PIN");
	cr_assert_null(strstr(w.screen, "PIN:"), "asked again:\n%s", w.screen);
	type(&w, " ", false);
	expect(&w, "Operator login");
	type(&w, "bob", true);
	expect(&w, "does not ask for the PIN");
	cr_assert_null(strstr(w.screen, "PIN:"), "asked again:\n%s", w.screen);
	cr_assert(strstr(w.screen, "not logged in"), "%s", w.screen);
	type(&w, " ", false);
	expect(&w, "Operator login");
	tmux(&w, NULL, 0, "send-keys", "-t", "main", "Escape", NULL);
	expect(&w, "STATION-EXIT=0");
	assert_log_has_no_pin(&w);
	finish(&w, &sim, 1);
}

/* The German catalogue (po/de.po, built into $STATION_BUILD/locale): with
 * LANGUAGE=de the header, the key help and a stopped panel's cause and
 * action are German, whole at 80x24 (the screen keeps UTF-8; the panel
 * reader shows a non-ASCII letter as '*'). */
Test(tui, german_screen_says_what_to_do_in_german, .timeout = 180)
{
	struct world w;
	fx_devsim sims[4];
	char env[700];

	world_init(&w);
	cr_assert_eq(fx_devsim_start(&sims[0], w.dir, "p1", 1, "--seed g1 --fault garbage"), 0);
	idle_sims(&w, sims, 1, 4);
	snprintf(env, sizeof(env), "LANGUAGE=de STATION_LOCALEDIR=%s/locale",
		 getenv("STATION_BUILD"));
	tui_start_env(&w, 80, 24, sims, 4, env);
	expect(&w, "Operator login");
	type(&w, "alice", true);
	expect(&w, "PIN:");
	type(&w, PIN, true);
	expect(&w, "HSM station: angemeldet");
	expect(&w, "BEDIENER alice");
	expect(&w, "Work order:");
	type(&w, "WO-E1", true);
	expect(&w, "Burn fuses for this work order? [y/N]");
	type(&w, "n", false);
	expect(&w, " nicht scharf");
	expect_panel(&w, "1 p1.tty", "Programmer 1 sendet verst*mmelte Daten");
	expect_panel(&w, "1 p1.tty", "Kabel pr*fen, dann s dr*cken");
	expect(&w, "Kabel prüfen,");
	/* the key help, whole in 80 columns */
	expect(&w, "s Start/Stopp  r neu  k weiter  x Quar.  w Auftrag  v Sicht  q Ende");
	expect(&w, "AUSBEUTE");
	refute_panel(&w, "1 p1.tty", "check its cable");
	refute_panel(&w, "1 p1.tty", "ERROR");
	expect_panel(&w, "1 p1.tty", "FEHLER");
	dump_screen(&w);
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, sims, 4);
}

/* The MES's route check refuses the unit (tests/fixtures/mes_receiver.py,
 * a real HTTP receiver): its panel says so in the MES's words, the unit
 * waits for the operator, nothing was done to it. */
Test(tui, mes_refusal_shows_the_reason_in_the_unit_panel, .timeout = 180)
{
	struct world w;
	fx_devsim sim;
	char script[1200], rxdir[600], portfile[700], profile[600], engkey[600];
	char text[2048], b[1024];
	json_t *st = NULL, *u;
	int port = 0, waited = 0;
	pid_t rx;
	FILE *f;

	world_init(&w);
	snprintf(b, sizeof(b), "%s", getenv("STATION_BUILD"));
	snprintf(script, sizeof(script), "%s/tests/fixtures/mes_receiver.py", dirname(b));
	snprintf(rxdir, sizeof(rxdir), "%s/rx", w.dir);
	mkdir(rxdir, 0700);
	snprintf(portfile, sizeof(portfile), "%s/port", rxdir);
	rx = fork();
	cr_assert_geq(rx, 0);
	if (rx == 0) {
		/* gone with the test, even one an assertion ended */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr))
			_exit(126);
		execlp("python3", "python3", script, "--dir", rxdir, "--route",
		       "refuse:no ICT pass on record", (char *)NULL);
		_exit(127);
	}
	while (!(f = fopen(portfile, "r"))) {
		cr_assert_lt(waited++, 200, "the receiver did not start");
		usleep(50000);
	}
	cr_assert_eq(fscanf(f, "%d", &port), 1);
	fclose(f);
	snprintf(profile, sizeof(profile), "%s/test.profile", w.dir);
	snprintf(engkey, sizeof(engkey), "%s/eng.key.pem", w.dir);
	snprintf(text, sizeof(text),
		 "name = \"tui-sensor\";\n"
		 "certificate: { organization = \"Test Devices\"; validity_days = 365; };\n"
		 "root_of_trust: { sha256 = \"" ROT "\"; fuse_bank = 0; };\n"
		 "route: { url = \"http://127.0.0.1:%d/route/${uid}\"; timeout_ms = 3000; };\n",
		 port);
	write_file(profile, text);
	fx_sign_with(engkey, profile);

	start_sims(&w, &sim, 1, 1);
	tui_start(&w, 80, 24, &sim, 1);
	login_and_start(&w, "WO-R1", true);
	expect(&w, "FAIL 1");
	expect_panel(&w, "1 p1.tty", "refused by the MES: no ICT pass on record");
	expect_panel(&w, "1 p1.tty", "ask again");
	cr_assert(strstr(w.screen, "DECIDE"), "the unit waits for a decision:\n%s", w.screen);
	cr_assert_eq(count_units(&w, "FAIL"), 1);
	/* skipped: its FAIL stands; the device was never touched */
	type(&w, "k", false);
	expect(&w, "waiting for a unit");
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	kill(rx, SIGKILL);
	waitpid(rx, NULL, 0);
	fx_devsim_stop(&sim);
	cr_assert_eq(fx_devsim_dump(sim.state_path, &st), 0);
	u = json_array_get(json_object_get(st, "units"), 0);
	cr_assert_eq(json_integer_value(json_object_get(u, "keygen_count")), 0);
	cr_assert(json_is_null(json_object_get(u, "cert")));
	cr_assert_eq(json_integer_value(json_object_get(u, "burn_count")), 0);
	json_decref(st);
	finish(&w, &sim, 1);
}

/* l on a slot: the label of its unit that passed, written (and queued)
 * again, as `station label print UID` does; a slot with no unit says so. */
Test(tui, l_prints_the_label_of_the_slots_unit_again, .timeout = 180)
{
	struct world w;
	fx_devsim sims[2];
	char line[1200], uid[64] = "", path[3][800];
	const char *ext[3] = { "png", "pdf", "zpl" };
	struct stat sb;
	FILE *f;

	world_init(&w);
	f = fopen(w.conf, "a");
	cr_assert_not_null(f);
	fprintf(f, "labels: { dir = \"%s/labels\"; };\n", w.dir);
	fclose(f);
	start_sims(&w, sims, 2, 1);
	tui_start(&w, 80, 24, sims, 2);
	login_and_start(&w, "WO-4711", true);
	expect(&w, "PASS 2  FAIL 0");
	/* the unit of slot 1, from the records */
	snprintf(line, sizeof(line), "sqlite3 %s \"SELECT uid FROM units WHERE slot = 1 AND "
		 "state = 'PASS'\"", w.db);
	f = popen(line, "r");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(uid, sizeof(uid), f));
	pclose(f);
	uid[strcspn(uid, "\n")] = '\0';
	cr_assert_gt(strlen(uid), 8);
	/* the run wrote its label; take it away, then ask the TUI for it again */
	for (int i = 0; i < 3; i++) {
		snprintf(path[i], sizeof(path[i]), "%s/labels/%s.%s", w.dir, uid, ext[i]);
		cr_assert_eq(stat(path[i], &sb), 0, "the run wrote no %s", path[i]);
		cr_assert_eq(unlink(path[i]), 0);
	}
	type(&w, "1", false);
	type(&w, "l", false);
	expect(&w, "printed again");
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(stat(path[i], &sb), 0, "l did not write %s:\n%s", path[i], w.screen);
		cr_assert_gt(sb.st_size, 0);
	}
	snprintf(line, sizeof(line), "zbarimg -q --raw %s", path[0]);
	f = popen(line, "r");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(line, sizeof(line), f));
	pclose(f);
	cr_assert(strstr(line, uid), "the QR code does not carry %s: %s", uid, line);
	type(&w, " ", false);
	type(&w, "q", false);
	expect(&w, "STATION-EXIT=0");
	finish(&w, sims, 2);
}

/* test_mes.c — results to the plant's MES (docs/integration.md): real
 * stations (SoftHSM token, CA, simulated units) provision, then `station
 * mes send` POSTs each ended unit to a real HTTP(S) receiver started here
 * (tests/fixtures/mes_receiver.py: checks the HMAC, keeps each body by its
 * Idempotency-Key, can answer 503 or die after a receipt).  What arrived is
 * compared with the store read straight from SQLite. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <libgen.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

#define KEY "a3f1c9e0-hmac-key-of-the-line-1-mes"

typedef struct receiver {
	pid_t pid;
	int port;
	char dir[600];
} receiver;

/* The receiver script of the source tree. */
static void script_path(char *out, size_t cap)
{
	char b[1024];

	cr_assert_not_null(getenv("STATION_BUILD"));
	snprintf(b, sizeof(b), "%s", getenv("STATION_BUILD"));
	snprintf(out, cap, "%s/tests/fixtures/mes_receiver.py", dirname(b));
}

/* Start the receiver in w's dir/sub with extra arguments (NULL-ended);
 * port 0: any, else that one (a restart).  Waits for its port file. */
static void rx_start(receiver *rx, const fx_world *w, const char *sub, int port, ...)
{
	char script[1200], portarg[16], portfile[700];
	const char *argv[32];
	int n = 0, waited = 0;
	va_list ap;
	FILE *f;

	script_path(script, sizeof(script));
	snprintf(rx->dir, sizeof(rx->dir), "%s/%s", w->dir, sub);
	mkdir(rx->dir, 0700);
	snprintf(portfile, sizeof(portfile), "%s/port", rx->dir);
	unlink(portfile);
	snprintf(portarg, sizeof(portarg), "%d", port);
	argv[n++] = "python3";
	argv[n++] = script;
	argv[n++] = "--dir";
	argv[n++] = rx->dir;
	argv[n++] = "--port";
	argv[n++] = portarg;
	va_start(ap, port);
	for (const char *a; (a = va_arg(ap, const char *)) && n < 30;)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	rx->pid = fork();
	cr_assert_geq(rx->pid, 0);
	if (rx->pid == 0) {
		char log[800];

		/* gone with the test, even one an assertion ended */
		prctl(PR_SET_PDEATHSIG, SIGKILL);

		snprintf(log, sizeof(log), "%s/receiver.log", rx->dir);
		if (!freopen(log, "a", stderr))
			_exit(126);
		execvp("python3", (char **)argv);
		_exit(127);
	}
	while (!(f = fopen(portfile, "r"))) {
		cr_assert_lt(waited++, 200, "the receiver did not start (%s/receiver.log)",
			     rx->dir);
		usleep(50000);
	}
	cr_assert_eq(fscanf(f, "%d", &rx->port), 1);
	fclose(f);
}

static int rx_wait(receiver *rx)
{
	int status;

	if (!rx->pid)
		return -1;
	cr_assert_eq(waitpid(rx->pid, &status, 0), rx->pid);
	rx->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void rx_stop(receiver *rx)
{
	if (rx->pid) {
		kill(rx->pid, SIGKILL);
		rx_wait(rx);
	}
}

/* Every delivery the receiver accepted, in order: [{key, body}]. */
static json_t *received(const receiver *rx)
{
	char path[700], line[65536];
	json_t *a = json_array();
	FILE *f;

	snprintf(path, sizeof(path), "%s/received.jsonl", rx->dir);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f)) {
		json_t *o = json_loads(line, 0, NULL);

		cr_assert_not_null(o, "not JSON: %s", line);
		json_array_append_new(a, o);
	}
	if (f)
		fclose(f);
	return a;
}

/* (Re)write w's configuration with a mes group: url, the world's HMAC
 * key file, short retries; extra goes inside the group. */
static void set_mes(const fx_world *w, const char *id, const char *url,
		    const char *extra)
{
	fx_world_opts o = { .with_ca = true, .timeout_ms = 700, .station_id = id };
	FILE *f;

	fx_write_conf(w, &o);
	f = fopen(w->conf, "a");
	cr_assert_not_null(f);
	fprintf(f, "mes: { url = \"%s\"; hmac_key_file = \"%s/mes.key\"; "
		"retries = 1; interval_ms = 100; backoff_max_ms = 300; %s };\n",
		url, w->dir, extra ? extra : "");
	fclose(f);
}

/* A world with a CA and an HMAC key file (mode 0600). */
static void mes_world(fx_world *w, const char *id)
{
	fx_world_opts o = { .with_ca = true, .timeout_ms = 700, .station_id = id };
	char key[600];

	fx_world_init_opts(w, &o);
	snprintf(key, sizeof(key), "%s/mes.key", w->dir);
	fx_write_file(key, KEY "\n");
	cr_assert_eq(chmod(key, 0600), 0);
}

static void url_of(char *out, size_t cap, const receiver *rx, const char *scheme)
{
	snprintf(out, cap, "%s://127.0.0.1:%d/results", scheme, rx->port);
}

static void provision(const fx_world *w, fx_devsim *sim, int units, const char *seed)
{
	fx_run *r = malloc(sizeof(*r));

	cr_assert_not_null(r);
	cr_assert_eq(fx_devsim_start(sim, w->dir, "prog", units, seed), 0);
	fx_station_run(r, w, "--burn-fuses", "--yes", "--slot", sim->port,
		       "provision", NULL);
	cr_assert_eq(r->code, 0, "provision: %s", r->err);
	fx_devsim_stop(sim);
	free(r);
}

/* The kept body of a key, parsed. */
static json_t *kept(const receiver *rx, const char *key)
{
	char path[900];

	snprintf(path, sizeof(path), "%s/kept/%s.json", rx->dir, key);
	return json_load_file(path, 0, NULL);
}

/* Every unit of the store arrived, under its key, with the store's
 * fields; returns how many units the store holds. */
static int check_all_arrived(const fx_world *w, const receiver *rx, const char *station)
{
	long long n = fx_q_int(w, "SELECT count(*) FROM units");

	for (long long id = 1; id <= n; id++) {
		char key[200], sql[300], want[4096];
		json_t *m;

		snprintf(key, sizeof(key), "%s:%lld", station, id);
		m = kept(rx, key);
		cr_assert_not_null(m, "unit %lld (%s) never arrived", id, key);
		cr_assert_str_eq(json_string_value(json_object_get(m, "idempotency_key")), key);
		cr_assert_str_eq(json_string_value(json_object_get(m, "schema")),
				 "station-mes-result/1");
		cr_assert_str_eq(json_string_value(json_object_get(m, "station")), station);
#define FIELD(col, val) do { \
		snprintf(sql, sizeof(sql), "SELECT " col " FROM units WHERE id = %lld", id); \
		fx_q_text(w, sql, want, sizeof(want)); \
		cr_assert_str_eq(json_string_value(val), want, "unit %lld: %s", id, col); \
	} while (0)
		FIELD("uid", json_object_get(m, "uid"));
		FIELD("state", json_object_get(m, "verdict"));
		FIELD("cert_serial", json_object_get(json_object_get(m, "certificate"), "serial"));
		FIELD("cert_sha256", json_object_get(json_object_get(m, "certificate"), "sha256"));
		FIELD("operator", json_object_get(m, "operator"));
		FIELD("started_at", json_object_get(m, "started_at"));
		FIELD("finished_at", json_object_get(m, "finished_at"));
#undef FIELD
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM steps WHERE unit_id = %lld", id);
		cr_assert_eq((long long)json_array_size(json_object_get(m, "steps")),
			     fx_q_int(w, sql), "unit %lld: the steps", id);
		cr_assert_gt(json_array_size(json_object_get(m, "steps")), 3);
		json_decref(m);
	}
	return (int)n;
}

/* Each key delivered more than once carried the same body each time;
 * returns the number of distinct keys. */
static size_t same_body_per_key(json_t *all)
{
	json_t *first = json_object(), *d;
	size_t i, n;

	json_array_foreach(all, i, d) {
		const char *k = json_string_value(json_object_get(d, "key"));
		json_t *b = json_object_get(d, "body"), *was = json_object_get(first, k);

		if (was)
			cr_assert_str_eq(json_string_value(was), json_string_value(b),
					 "key %s was sent twice with different bodies", k);
		else
			json_object_set(first, k, b);
	}
	n = json_object_size(first);
	json_decref(first);
	return n;
}

Test(mes, every_unit_arrives_once_signed_with_its_fields, .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	receiver rx = { 0 };
	fx_run *r = malloc(sizeof(*r));
	char keyfile[600], url[200], schema[1300];
	json_t *all;

	cr_assert_not_null(r);
	mes_world(&w, "line1-st1");
	provision(&w, &sim, 3, NULL);
	cr_assert_eq(fx_count_units(&w, "PASS"), 3);
	snprintf(keyfile, sizeof(keyfile), "%s/mes.key", w.dir);
	/* every body is checked against the published JSON Schema */
	script_path(schema, sizeof(schema));
	snprintf(strstr(schema, "/tests/fixtures/"), 100, "/docs/schemas/mes-result-1.schema.json");
	rx_start(&rx, &w, "rx", 0, "--key-file", keyfile, "--schema", schema, NULL);
	url_of(url, sizeof(url), &rx, "http");
	set_mes(&w, "line1-st1", url, NULL);

	/* before: all three waiting */
	fx_station_run(r, &w, "mes", "send", "--status", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "lag:                3 units"), "%s", r->out);
	cr_assert(strstr(r->out, "last success:       never"), "%s", r->out);

	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert(strstr(r->out, "3 units sent; 0 waiting (up to date)"), "%s", r->out);
	all = received(&rx);
	cr_assert_eq(json_array_size(all), 3, "each unit once");
	cr_assert_eq(same_body_per_key(all), 3);
	json_decref(all);
	cr_assert_eq(check_all_arrived(&w, &rx, "line1-st1"), 3);
	/* the key never reaches the output */
	cr_assert_null(strstr(r->out, KEY));
	cr_assert_null(strstr(r->err, KEY));

	/* again: nothing new, nothing sent */
	fx_station_run(r, &w, "mes", "send", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "0 units sent; 0 waiting"), "%s", r->out);
	all = received(&rx);
	cr_assert_eq(json_array_size(all), 3);
	json_decref(all);
	fx_station_run(r, &w, "mes", "send", "--status", NULL);
	cr_assert(strstr(r->out, "lag:                0 units"), "%s", r->out);

	/* a station signing with another key is refused by the receiver
	 * (401): nothing is acknowledged, the unit stays waiting */
	rx_stop(&rx);
	fx_write_file(keyfile, "another-key-entirely\n");
	cr_assert_eq(chmod(keyfile, 0600), 0);
	{
		char good[600];

		snprintf(good, sizeof(good), "%s/good.key", w.dir);
		fx_write_file(good, KEY "\n");
		rx_start(&rx, &w, "rx2", 0, "--key-file", good, NULL);
	}
	url_of(url, sizeof(url), &rx, "http");
	set_mes(&w, "line1-st1", url, NULL);
	/* the state file says 3 acknowledged: take it away, so the three are
	 * sent again (with the same keys) */
	{
		char st[700];

		snprintf(st, sizeof(st), "%s.mes.json", w.db);
		cr_assert_eq(unlink(st), 0, "%s", st);
	}
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert(strstr(r->err, "line1-st1:1") && strstr(r->err, "HTTP 401"), "%s", r->err);
	cr_assert(strstr(r->err, "3 waiting"), "%s", r->err);
	all = received(&rx);
	cr_assert_eq(json_array_size(all), 0, "a badly signed body was accepted");
	json_decref(all);

	/* a group-readable key file is refused before anything is sent */
	cr_assert_eq(chmod(keyfile, 0640), 0);
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	cr_assert(strstr(r->err, "chmod 600"), "%s", r->err);

	rx_stop(&rx);
	fx_rmtree(w.dir);
	free(r);
}

Test(mes, receiver_down_and_killed_mid_run_loses_nothing, .timeout = 300)
{
	fx_world w;
	fx_devsim sim;
	receiver rx = { 0 };
	fx_run *r = malloc(sizeof(*r));
	char keyfile[600], fail[600], url[200], st[700], bin[512];
	const char *argv[64];
	int port, waited = 0;
	json_t *all;
	pid_t follow;

	cr_assert_not_null(r);
	mes_world(&w, "line2-st1");
	provision(&w, &sim, 4, "--seed l2");
	snprintf(keyfile, sizeof(keyfile), "%s/mes.key", w.dir);
	snprintf(fail, sizeof(fail), "%s/rx-fail", w.dir);

	/* the MES answers 503: nothing acknowledged, the lag says 4 */
	fx_write_file(fail, "");
	rx_start(&rx, &w, "rx", 0, "--key-file", keyfile, "--fail-file", fail,
		 "--die-after", "2", NULL);
	port = rx.port;
	url_of(url, sizeof(url), &rx, "http");
	set_mes(&w, "line2-st1", url, NULL);
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert(strstr(r->err, "HTTP 503"), "%s", r->err);
	fx_station_run(r, &w, "mes", "send", "--status", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "lag:                4 units"), "%s", r->out);
	cr_assert(strstr(r->out, "HTTP 503"), "%s", r->out);

	/* back up, but it dies after storing the second body, before its
	 * answer: the follower keeps retrying while it is gone */
	unlink(fail);
	snprintf(bin, sizeof(bin), "%s/station", getenv("STATION_BUILD"));
	argv[0] = bin;
	argv[1] = "--config";
	argv[2] = w.conf;
	argv[3] = "mes";
	argv[4] = "send";
	argv[5] = "--follow";
	argv[6] = NULL;
	follow = fork();
	cr_assert_geq(follow, 0);
	if (follow == 0) {
		char out[700], err[700];

		snprintf(out, sizeof(out), "%s/follow.out", w.dir);
		snprintf(err, sizeof(err), "%s/follow.err", w.dir);
		if (!freopen(out, "w", stdout) || !freopen(err, "w", stderr))
			_exit(126);
		execv(bin, (char **)argv);
		_exit(127);
	}
	cr_assert_eq(rx_wait(&rx), 0, "the receiver did not die after 2 bodies");
	all = received(&rx);
	cr_assert_eq(json_array_size(all), 2);
	json_decref(all);
	/* while it is down the follower retries and says so */
	{
		char p[700], *text = NULL;

		snprintf(p, sizeof(p), "%s/follow.err", w.dir);
		for (waited = 0; !text || !strstr(text, "retrying in"); waited++) {
			FILE *f;

			cr_assert_lt(waited, 200, "no retry reported: %s", text ? text : "");
			usleep(50000);
			free(text);
			text = calloc(1, 65536);
			f = fopen(p, "r");
			if (f) {
				cr_assert_geq(fread(text, 1, 65535, f), 0);
				fclose(f);
			}
		}
		free(text);
	}
	fx_station_run(r, &w, "mes", "send", "--status", NULL);
	cr_assert(strstr(r->out, "lag:                3 units"), "the first was "
		  "acknowledged, the second stored but not: %s", r->out);

	/* restarted on the same port: the follower drains the rest */
	rx_start(&rx, &w, "rx", port, "--key-file", keyfile, NULL);
	snprintf(st, sizeof(st), "%s.mes.json", w.db);
	for (waited = 0;; waited++) {
		fx_station_run(r, &w, "mes", "send", "--status", NULL);
		if (strstr(r->out, "lag:                0 units"))
			break;
		cr_assert_lt(waited, 100, "the follower did not drain: %s", r->out);
		usleep(100000);
	}
	kill(follow, SIGTERM);
	{
		int status;

		cr_assert_eq(waitpid(follow, &status, 0), follow);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	all = received(&rx);
	/* 4 units; the second was delivered twice (stored, then the
	 * receiver died before answering), with the same key and body */
	cr_assert_eq(same_body_per_key(all), 4);
	cr_assert_eq(json_array_size(all), 5);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(all, 1), "key")),
			 "line2-st1:2");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(all, 2), "key")),
			 "line2-st1:2");
	json_decref(all);
	cr_assert_eq(check_all_arrived(&w, &rx, "line2-st1"), 4);

	rx_stop(&rx);
	fx_rmtree(w.dir);
	free(r);
}

/* Lines in a file (0 when it does not exist). */
static int lines_in(const char *dir, const char *name)
{
	char path[800], line[4096];
	int n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		n++;
	if (f)
		fclose(f);
	return n;
}

/* A receiver that refuses one unit's message for good (422) does not hold
 * the queue: the unit is kept as rejected (status, the start of the
 * answer) and passed, the others arrive, `--status` counts and names it,
 * and it is not sent again.  A 503 before that is retried: nothing is
 * rejected or passed while the MES is down. */
Test(mes, permanent_4xx_is_kept_as_rejected_and_passed_5xx_retried, .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	receiver rx = { 0 };
	fx_run *r = malloc(sizeof(*r));
	char keyfile[600], fail[600], url[200], uid2[200], want[600];
	json_t *all, *d;
	size_t i;

	cr_assert_not_null(r);
	mes_world(&w, "line8-st1");
	provision(&w, &sim, 3, "--seed l8");
	fx_q_text(&w, "SELECT uid FROM units WHERE id = 2", uid2, sizeof(uid2));
	snprintf(keyfile, sizeof(keyfile), "%s/mes.key", w.dir);
	snprintf(fail, sizeof(fail), "%s/rx-fail", w.dir);
	fx_write_file(fail, "");
	rx_start(&rx, &w, "rx", 0, "--key-file", keyfile, "--fail-file", fail,
		 "--reject-uid", uid2, NULL);
	url_of(url, sizeof(url), &rx, "http");
	set_mes(&w, "line8-st1", url, NULL);

	/* down (503): retried, nothing passed, nothing rejected */
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert(strstr(r->err, "HTTP 503") && strstr(r->err, "3 waiting"), "%s", r->err);
	fx_station_run(r, &w, "mes", "send", "--status", NULL);
	cr_assert(strstr(r->out, "lag:                3 units"), "%s", r->out);
	cr_assert(strstr(r->out, "rejected:           0 units"), "%s", r->out);

	/* up; unit 2 refused for good: kept as rejected, the others sent */
	cr_assert_eq(unlink(fail), 0);
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert(strstr(r->out, "2 units sent, 1 rejected; 0 waiting (up to date)"), "%s",
		  r->out);
	cr_assert(strstr(r->err, "unit 2 (line8-st1:2, device ") && strstr(r->err, uid2) &&
		  strstr(r->err, "HTTP 422") &&
		  strstr(r->err, "work order closed at the MES"), "%s", r->err);
	cr_assert_eq(lines_in(rx.dir, "rejected.jsonl"), 1);
	all = received(&rx);
	cr_assert_eq(json_array_size(all), 2);
	json_array_foreach(all, i, d)
		cr_assert_str_neq(json_string_value(json_object_get(d, "key")), "line8-st1:2");
	json_decref(all);
	fx_station_run(r, &w, "mes", "send", "--status", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "lag:                0 units"), "%s", r->out);
	cr_assert(strstr(r->out, "rejected:           1 unit refused for good"), "%s", r->out);
	snprintf(want, sizeof(want), "unit 2 (line8-st1:2) device %s: HTTP 422 ", uid2);
	cr_assert(strstr(r->out, want), "no '%s' in:\n%s", want, r->out);
	cr_assert(strstr(r->out, "work order closed at the MES"), "%s", r->out);

	/* not sent again */
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert(strstr(r->out, "0 units sent; 0 waiting"), "%s", r->out);
	cr_assert_eq(lines_in(rx.dir, "rejected.jsonl"), 1);
	all = received(&rx);
	cr_assert_eq(json_array_size(all), 2);
	json_decref(all);

	/* mes resend: an unknown key is a usage error; before the MES is
	 * mended the unit is refused again and stays on the list */
	fx_station_run(r, &w, "mes", "resend", "line8-st1:9", NULL);
	cr_assert_eq(r->code, 2, "%s%s", r->out, r->err);
	cr_assert(strstr(r->err, "no rejected unit 'line8-st1:9'"), "%s", r->err);
	fx_station_run(r, &w, "mes", "resend", "line8-st1:2", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert(strstr(r->out, "0 units taken by the MES, 1 rejected again"), "%s", r->out);
	cr_assert(strstr(r->err, "work order closed at the MES"), "%s", r->err);
	cr_assert_eq(lines_in(rx.dir, "rejected.jsonl"), 2);
	fx_station_run(r, &w, "mes", "send", "--status", NULL);
	cr_assert(strstr(r->out, "rejected:           1 unit refused for good"), "%s", r->out);
	/* mended: taken once, off the list; a second resend has nothing to do */
	{
		char mended[700];

		snprintf(mended, sizeof(mended), "%s/mended", rx.dir);
		fx_write_file(mended, "");
	}
	fx_station_run(r, &w, "mes", "resend", "all", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert(strstr(r->out, "1 unit taken by the MES, 0 rejected again"), "%s", r->out);
	all = received(&rx);
	cr_assert_eq(json_array_size(all), 3);
	json_decref(all);
	cr_assert_eq(check_all_arrived(&w, &rx, "line8-st1"), 3);
	fx_station_run(r, &w, "mes", "send", "--status", NULL);
	cr_assert(strstr(r->out, "rejected:           0 units"), "%s", r->out);
	fx_station_run(r, &w, "mes", "resend", "all", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert(strstr(r->out, "0 units taken by the MES, 0 rejected again"), "%s", r->out);
	all = received(&rx);
	cr_assert_eq(json_array_size(all), 3);
	json_decref(all);

	/* passes and resends take turns: while another holds the state's
	 * lock (flock(1) here), a pass waits (timeout(1) ends it, exit 124),
	 * and goes through once the lock is free */
	{
		char cmd[3000];
		int st;

		snprintf(cmd, sizeof(cmd), "cd '%s' && L=$(ls *.mes.json | sed 's/json$/lock/') && "
			 "{ flock -x \"$L\" sleep 4 & } && sleep 0.5 && "
			 "timeout 2 '%s/station' --config '%s' --pin-file '%s' mes send --once "
			 ">/dev/null 2>&1; echo $? > waited; wait",
			 w.dir, getenv("STATION_BUILD"), w.conf, w.pinfile);
		st = system(cmd);
		cr_assert_eq(st, 0, "%s", cmd);
		snprintf(cmd, sizeof(cmd), "test \"$(cat '%s/waited')\" = 124", w.dir);
		cr_assert_eq(system(cmd), 0, "a pass did not wait for the lock");
	}
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);

	rx_stop(&rx);
	fx_rmtree(w.dir);
	free(r);
}

/* openssl, in dir: a CA (name) and a server certificate for 127.0.0.1
 * issued by it (server.pem/server.key), or a client one. */
static void make_ca(const char *dir, const char *name)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd), "cd '%s' && openssl req -x509 -newkey ec "
		 "-pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s.key -out %s.pem "
		 "-days 2 -subj /CN=%s 2>/dev/null", dir, name, name, name);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void make_leaf(const char *dir, const char *ca, const char *name,
		      const char *ext)
{
	char cmd[3000];

	snprintf(cmd, sizeof(cmd), "cd '%s' && printf '%%s\\n' '%s' > %s.ext && "
		 "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
		 "-keyout %s.key -out %s.csr -subj /CN=%s 2>/dev/null && "
		 "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key "
		 "-CAcreateserial -days 2 -extfile %s.ext -out %s.pem 2>/dev/null",
		 dir, ext, name, name, name, name, name, ca, ca, name, name);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

Test(mes, tls_test_ca_accepted_wrong_ca_and_no_client_cert_refused, .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	receiver rx = { 0 };
	fx_run *r = malloc(sizeof(*r));
	char keyfile[600], pki[600], a[700], b[700], c[700], url[200], opts[2400];
	json_t *all;

	cr_assert_not_null(r);
	mes_world(&w, "line3-st1");
	provision(&w, &sim, 1, "--seed l3");
	snprintf(keyfile, sizeof(keyfile), "%s/mes.key", w.dir);
	snprintf(pki, sizeof(pki), "%s/pki", w.dir);
	cr_assert_eq(mkdir(pki, 0700), 0);
	make_ca(pki, "mes-ca");
	make_ca(pki, "other-ca");
	make_leaf(pki, "mes-ca", "server", "subjectAltName=IP:127.0.0.1");
	make_leaf(pki, "mes-ca", "client", "extendedKeyUsage=clientAuth");
	snprintf(a, sizeof(a), "%s/server.pem", pki);
	snprintf(b, sizeof(b), "%s/server.key", pki);
	snprintf(c, sizeof(c), "%s/mes-ca.pem", pki);
	rx_start(&rx, &w, "rx", 0, "--key-file", keyfile, "--tls-cert", a,
		 "--tls-key", b, "--client-ca", c, NULL);
	url_of(url, sizeof(url), &rx, "https");

	/* the wrong CA: the server's certificate is refused, nothing sent */
	snprintf(opts, sizeof(opts), "tls_ca = \"%s/other-ca.pem\"; tls_cert = "
		 "\"%s/client.pem\"; tls_key = \"%s/client.key\";", pki, pki, pki);
	set_mes(&w, "line3-st1", url, opts);
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert(strstr(r->err, "certificate"), "%s", r->err);

	/* the right CA but no client certificate: the server refuses */
	snprintf(opts, sizeof(opts), "tls_ca = \"%s/mes-ca.pem\";", pki);
	set_mes(&w, "line3-st1", url, opts);
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	all = received(&rx);
	cr_assert_eq(json_array_size(all), 0);
	json_decref(all);

	/* the test CA and the client certificate: delivered */
	snprintf(opts, sizeof(opts), "tls_ca = \"%s/mes-ca.pem\"; tls_cert = "
		 "\"%s/client.pem\"; tls_key = \"%s/client.key\";", pki, pki, pki);
	set_mes(&w, "line3-st1", url, opts);
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert(strstr(r->out, "1 unit sent"), "%s", r->out);
	all = received(&rx);
	cr_assert_eq(json_array_size(all), 1);
	json_decref(all);
	cr_assert_eq(check_all_arrived(&w, &rx, "line3-st1"), 1);

	rx_stop(&rx);
	fx_rmtree(w.dir);
	free(r);
}

/* What the station should have put in the QR code of unit id. */
static void want_payload(const fx_world *w, long long id, char *uid, size_t ulen,
			 char *out, size_t len)
{
	char sql[200], sn[200], fp[200];

	snprintf(sql, sizeof(sql), "SELECT uid FROM units WHERE id = %lld", id);
	fx_q_text(w, sql, uid, ulen);
	snprintf(sql, sizeof(sql), "SELECT cert_serial FROM units WHERE id = %lld", id);
	fx_q_text(w, sql, sn, sizeof(sn));
	snprintf(sql, sizeof(sql), "SELECT cert_sha256 FROM units WHERE id = %lld", id);
	fx_q_text(w, sql, fp, sizeof(fp));
	cr_assert(uid[0] && sn[0] && strlen(fp) == 64, "unit %lld", id);
	snprintf(out, len, "ST1;UID=%s;SN=%s;FP=%s", uid, sn, fp);
}

/* zbarimg's reading of the PNG, the symbology prefix taken off. */
static void zbar_read(const char *png, char *out, size_t len)
{
	char cmd[1200];
	FILE *p;
	size_t n;

	snprintf(cmd, sizeof(cmd), "zbarimg --nodbus --quiet --raw '%s'", png);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	n = fread(out, 1, len - 1, p);
	out[n] = '\0';
	cr_assert_eq(pclose(p), 0, "zbarimg could not read %s: %s", png, out);
	while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		out[--n] = '\0';
}

/* The ZPL: one ^XA...^XZ label whose ^BQ field's data is payload. */
static void check_zpl(const char *path, const char *payload)
{
	char text[8192], *bq, *fd, *fs;
	FILE *f = fopen(path, "r");
	size_t n;

	cr_assert_not_null(f, "%s", path);
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	cr_assert_eq(strncmp(text, "^XA", 3), 0, "%s", text);
	cr_assert(n > 4 && !strcmp(text + n - 4, "^XZ\n"), "%s", text);
	cr_assert_null(strstr(text + 3, "^XA"), "one label only");
	bq = strstr(text, "^BQN,2,");
	cr_assert_not_null(bq, "no QR command: %s", text);
	fd = strstr(bq, "^FD");
	fs = fd ? strstr(fd, "^FS") : NULL;
	cr_assert(fd && fs, "%s", text);
	cr_assert_eq(strncmp(fd, "^FDMA,", 6), 0, "error correction M, automatic");
	cr_assert_eq((size_t)(fs - fd - 6), strlen(payload));
	cr_assert_eq(strncmp(fd + 6, payload, strlen(payload)), 0, "%s", text);
}

/* The value of "Key:   value" in pdfinfo's output ("" when absent). */
static const char *info_field(const char *text, const char *key, char *out, size_t len)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "%s:", key);
	out[0] = '\0';
	/* at the start of a line (pdftotext ends its page with a form feed) */
	for (p = strstr(text, k); p && p != text && p[-1] != '\n' && p[-1] != '\f';
	     p = strstr(p + 1, k))
		;
	if (!p)
		return out;
	p += strlen(k);
	p += strspn(p, " ");
	snprintf(out, len, "%.*s", (int)strcspn(p, "\n"), p);
	return out;
}

/* The PDF label, read by outside tools: poppler's pdftoppm renders the
 * page (150 dpi) and zbarimg decodes its QR code to payload; pdftotext
 * finds the words (UID, serial, both halves of the fingerprint); pdfinfo
 * says one page, titled with the UID. */
static void check_pdf(const char *pdf, const char *uid, const char *payload)
{
	char cmd[2400], base[1000], png[1100], got[1024], text[8192], fp[80];
	const char *sn = strstr(payload, ";SN="), *f = strstr(payload, ";FP=");
	FILE *p;
	size_t n;

	cr_assert(sn && f, "%s", payload);
	snprintf(base, sizeof(base), "%.*s-page", (int)(strlen(pdf) - 4), pdf);
	snprintf(png, sizeof(png), "%s.png", base);
	snprintf(cmd, sizeof(cmd), "pdftoppm -r 150 -gray -png -singlefile '%s' '%s' 2>&1",
		 pdf, base);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
	zbar_read(png, got, sizeof(got));
	cr_assert_str_eq(got, payload, "the PDF's QR code");
	unlink(png);
	snprintf(cmd, sizeof(cmd), "pdftotext -layout '%s' - 2>&1; pdfinfo '%s' 2>&1", pdf, pdf);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	n = fread(text, 1, sizeof(text) - 1, p);
	text[n] = '\0';
	cr_assert_eq(pclose(p), 0, "%s", text);
	cr_assert(strstr(text, uid), "no UID in the PDF's text:\n%s", text);
	snprintf(fp, sizeof(fp), "%.*s", (int)(f - sn - 4), sn + 4);
	cr_assert(strstr(text, fp), "no serial %s in:\n%s", fp, text);
	snprintf(fp, sizeof(fp), "%.32s", f + 4);
	cr_assert(strstr(text, fp), "no fingerprint start %s in:\n%s", fp, text);
	cr_assert(strstr(text, f + 4 + 32), "no fingerprint end in:\n%s", text);
	cr_assert_str_eq(info_field(text, "Pages", got, sizeof(got)), "1", "%s", text);
	cr_assert_str_eq(info_field(text, "Title", got, sizeof(got)), uid, "%s", text);
}

Test(mes, label_qr_decodes_to_the_unit_and_zpl_carries_it, .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	fx_run *r = malloc(sizeof(*r));
	fx_world_opts o = { .with_ca = true, .timeout_ms = 700, .station_id = "line4-st1" };
	char uid[200], payload[600], png[900], zpl[900], pdf[900], got[1024];
	FILE *f;

	cr_assert_not_null(r);
	mes_world(&w, "line4-st1");
	fx_write_conf(&w, &o);
	f = fopen(w.conf, "a");
	cr_assert_not_null(f);
	fprintf(f, "labels: { dir = \"%s/labels\"; };\n", w.dir);
	fclose(f);
	provision(&w, &sim, 2, "--seed l4");
	cr_assert_eq(fx_count_units(&w, "PASS"), 2);

	/* after each PASS: its label, read by an outside decoder */
	for (long long id = 1; id <= 2; id++) {
		want_payload(&w, id, uid, sizeof(uid), payload, sizeof(payload));
		snprintf(png, sizeof(png), "%s/labels/%s.png", w.dir, uid);
		snprintf(zpl, sizeof(zpl), "%s/labels/%s.zpl", w.dir, uid);
		snprintf(pdf, sizeof(pdf), "%s/labels/%s.pdf", w.dir, uid);
		zbar_read(png, got, sizeof(got));
		cr_assert_str_eq(got, payload);
		check_zpl(zpl, payload);
		check_pdf(pdf, uid, payload);
	}

	/* a reprint makes it again */
	cr_assert_eq(unlink(png), 0);
	cr_assert_eq(unlink(zpl), 0);
	cr_assert_eq(unlink(pdf), 0);
	fx_station_run(r, &w, "label", "print", uid, NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, pdf), "%s", r->out);
	zbar_read(png, got, sizeof(got));
	cr_assert_str_eq(got, payload);
	check_zpl(zpl, payload);
	check_pdf(pdf, uid, payload);

	/* a device that never passed here gets none */
	fx_station_run(r, &w, "label", "print", "00112233445566778899aabbccddeeff", NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	cr_assert(strstr(r->err, "never passed"), "%s", r->err);

	fx_rmtree(w.dir);
	free(r);
}

/* The width of a PNG (its IHDR), read from the file's bytes. */
static unsigned png_width(const char *path)
{
	unsigned char h[24];
	FILE *f = fopen(path, "rb");

	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fread(h, 1, sizeof(h), f), sizeof(h));
	fclose(f);
	cr_assert_eq(memcmp(h + 12, "IHDR", 4), 0);
	return (unsigned)h[16] << 24 | (unsigned)h[17] << 16 | (unsigned)h[18] << 8 | h[19];
}

#define LABEL_PROFILE FX_PROFILE \
	"label: { lines = [ \"text:ACME sensor v2\", \"uid\", \"profile\" ]; module = 4; };\n"

/* The label template of the (signed) profile: its lines in that order and
 * nothing else (no serial or fingerprint words), its module size (the PNG
 * is 4 pixels a module: its width is 4 x (a QR size + 8 quiet modules)),
 * the ZPL's ^BQ magnification and text; the code still decodes to the
 * unit in the PNG and the PDF; a reprint takes the same template.  A line
 * the template does not know is refused at load, with the rule. */
Test(mes, label_template_of_the_profile, .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	fx_run *r = malloc(sizeof(*r));
	fx_world_opts o = { .with_ca = true, .timeout_ms = 700, .station_id = "line10-st1",
			    .profile = LABEL_PROFILE };
	char uid[200], payload[600], png[900], pdf[900], zpl[900], got[1024], cmd[2400];
	char text[8192], sn[100], bad[600];
	unsigned width, n;
	FILE *f;

	cr_assert_not_null(r);
	fx_world_init_opts(&w, &o);
	f = fopen(w.conf, "a");
	cr_assert_not_null(f);
	fprintf(f, "labels: { dir = \"%s/labels\"; };\n", w.dir);
	fclose(f);
	provision(&w, &sim, 1, "--seed l10");
	want_payload(&w, 1, uid, sizeof(uid), payload, sizeof(payload));
	snprintf(png, sizeof(png), "%s/labels/%s.png", w.dir, uid);
	snprintf(pdf, sizeof(pdf), "%s/labels/%s.pdf", w.dir, uid);
	snprintf(zpl, sizeof(zpl), "%s/labels/%s.zpl", w.dir, uid);
	for (int pass = 0; pass < 2; pass++) {
		if (pass) {
			/* a reprint: the same template */
			cr_assert_eq(unlink(png) | unlink(pdf) | unlink(zpl), 0);
			fx_station_run(r, &w, "label", "print", uid, NULL);
			cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
		}
		zbar_read(png, got, sizeof(got));
		cr_assert_str_eq(got, payload);
		width = png_width(png);
		n = width / 4 - 8;
		cr_assert(width % 4 == 0 && n >= 21 && (n - 17) % 4 == 0,
			  "the PNG (%u pixels wide) is not 4 pixels a module", width);
		check_zpl(zpl, payload);
		f = fopen(zpl, "r");
		cr_assert_not_null(f);
		text[fread(text, 1, sizeof(text) - 1, f)] = '\0';
		fclose(f);
		cr_assert(strstr(text, "^BQN,2,3^"), "magnification 3 for module 4:\n%s", text);
		cr_assert(strstr(text, "^FDACME sensor v2^FS"), "%s", text);
		cr_assert(strstr(text, "^FDtest-sensor^FS"), "%s", text);
		/* the PDF: the code decodes; the words in the template's order */
		snprintf(cmd, sizeof(cmd), "pdftoppm -r 150 -gray -png -singlefile '%s' '%s/page' "
			 "2>&1", pdf, w.dir);
		cr_assert_eq(system(cmd), 0, "%s", cmd);
		snprintf(cmd, sizeof(cmd), "%s/page.png", w.dir);
		zbar_read(cmd, got, sizeof(got));
		cr_assert_str_eq(got, payload, "the PDF's QR code");
		snprintf(cmd, sizeof(cmd), "pdftotext -layout '%s' - 2>&1", pdf);
		f = popen(cmd, "r");
		cr_assert_not_null(f);
		text[fread(text, 1, sizeof(text) - 1, f)] = '\0';
		cr_assert_eq(pclose(f), 0, "%s", text);
		{
			char *a = strstr(text, "ACME sensor v2"), *b = strstr(text, uid),
			     *c = strstr(text, "test-sensor");

			cr_assert(a && b && c && a < b && b < c, "not the template's lines "
				  "in order:\n%s", text);
		}
		fx_q_text(&w, "SELECT cert_serial FROM units WHERE id = 1", sn, sizeof(sn));
		cr_assert_null(strstr(text, sn), "the serial is not on this template:\n%s", text);
		cr_assert_null(strstr(text, "FP "), "%s", text);
	}

	/* a line the template does not know: refused at load, with the rule */
	snprintf(bad, sizeof(bad), "%s/bad.profile", w.dir);
	fx_write_file(bad, FX_PROFILE "label: { lines = [ \"uid\", \"colour\" ]; };\n");
	fx_sign(&w, bad);
	fx_station_run(r, &w, "--profile", bad, "config", "check", NULL);
	cr_assert_eq(r->code, 2, "%s%s", r->out, r->err);
	cr_assert(strstr(r->out, "label.lines") || strstr(r->err, "label.lines"), "%s%s",
		  r->out, r->err);
	cr_assert(strstr(r->out, "line 2 (colour) is not one of") ||
		  strstr(r->err, "line 2 (colour) is not one of"), "%s%s", r->out, r->err);

	fx_rmtree(w.dir);
	free(r);
}

/* ---- MQTT: a real Mosquitto broker and mosquitto_sub ---- */

typedef struct broker {
	pid_t pid, sub;
	int port;
	char dir[600];
	char tls[2200];         /* listener lines for TLS (certfile, keyfile) */
	char cafile[700];       /* the subscriber's CA when the listener is TLS */
	char subcert[700];      /* the subscriber's client certificate, if any */
	char subkey[700];
} broker;

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static bool port_open(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

static pid_t spawn_to(const char *out, char *const argv[])
{
	pid_t p = fork();

	cr_assert_geq(p, 0);
	if (p == 0) {
		/* gone with the test, also when an assertion ends it early */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (!freopen(out, "a", stdout) || !freopen(out, "a", stderr))
			_exit(126);
		execvp(argv[0], argv);
		_exit(127);
	}
	return p;
}

/* Mosquitto on 127.0.0.1:b->port (anonymous, persistent: a subscriber's
 * session survives a SIGKILL once saved, autosave every second). */
static void broker_start(broker *b)
{
	char conf[700], log[700];
	int waited = 0;
	FILE *f;

	snprintf(conf, sizeof(conf), "%s/mosquitto.conf", b->dir);
	snprintf(log, sizeof(log), "%s/mosquitto.log", b->dir);
	f = fopen(conf, "w");
	cr_assert_not_null(f);
	/* mosquitto started as root runs as the user mosquitto */
	cr_assert_eq(chmod(b->dir, 0777), 0);
	fprintf(f, "listener %d 127.0.0.1\n%sallow_anonymous true\npersistence true\n"
		"persistence_location %s/\nautosave_interval 1\n", b->port, b->tls, b->dir);
	fclose(f);
	b->pid = spawn_to(log, (char *const[]){ "mosquitto", "-c", conf, NULL });
	while (!port_open(b->port)) {
		cr_assert_lt(waited++, 100, "mosquitto did not start (%s)", log);
		usleep(50000);
	}
}

static void broker_kill(broker *b)
{
	if (b->pid > 0) {
		kill(b->pid, SIGKILL);
		waitpid(b->pid, NULL, 0);
		b->pid = 0;
	}
}

/* mosquitto_sub on station/#, a persistent session, QoS 1, MQTT v5:
 * "topic retain user-properties payload" per line into dir/sub.out. */
static void sub_start(broker *b)
{
	char out[700], port[16];

	snprintf(out, sizeof(out), "%s/sub.out", b->dir);
	snprintf(port, sizeof(port), "%d", b->port);
	if (b->subcert[0])
		b->sub = spawn_to(out, (char *const[]){ "mosquitto_sub", "-h", "127.0.0.1",
			"-p", port, "--cafile", b->cafile, "--cert", b->subcert, "--key",
			b->subkey, "-V", "5", "-q", "1", "-c", "-i", "test-sub", "-t",
			"station/#", "-F", "%t %r %P %p", NULL });
	else if (b->cafile[0])
		b->sub = spawn_to(out, (char *const[]){ "mosquitto_sub", "-h", "127.0.0.1",
			"-p", port, "--cafile", b->cafile, "-V", "5", "-q", "1", "-c", "-i",
			"test-sub", "-t", "station/#", "-F", "%t %r %P %p", NULL });
	else
		b->sub = spawn_to(out, (char *const[]){ "mosquitto_sub", "-h", "127.0.0.1",
			"-p", port, "-V", "5", "-q", "1", "-c", "-i", "test-sub", "-t",
			"station/#", "-F", "%t %r %P %p", NULL });
}

static char *slurp(const char *path)
{
	char *t = calloc(1, 1 << 20);
	FILE *f = fopen(path, "r");

	cr_assert_not_null(t);
	if (f) {
		cr_assert_geq(fread(t, 1, (1 << 20) - 1, f), 0);
		fclose(f);
	}
	return t;
}

/* The unit messages mosquitto_sub printed, as the HTTP receiver keeps
 * them ([{key, body}], and kept/<key>.json the first of each), so the same
 * checks apply; the user property must carry the body's key. */
static json_t *sub_units(const broker *b, const char *station, receiver *as)
{
	char path[700], topic[300], *text, *line, *save = NULL;
	json_t *all = json_array();

	snprintf(as->dir, sizeof(as->dir), "%s", b->dir);
	snprintf(path, sizeof(path), "%s/kept", b->dir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/sub.out", b->dir);
	snprintf(topic, sizeof(topic), "station/%s/units ", station);
	text = slurp(path);
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *body = strchr(line, '{'), prop[300], kp[900];
		json_t *m, *d;
		const char *key;
		FILE *f;

		if (strncmp(line, topic, strlen(topic)) || !body)
			continue;
		m = json_loads(body, 0, NULL);
		cr_assert_not_null(m, "%s", line);
		key = json_string_value(json_object_get(m, "idempotency_key"));
		cr_assert_not_null(key);
		snprintf(prop, sizeof(prop), " idempotency-key:%s ", key);
		cr_assert_not_null(strstr(line, prop), "no user property: %s", line);
		d = json_pack("{s:s, s:s}", "key", key, "body", body);
		json_array_append_new(all, d);
		snprintf(kp, sizeof(kp), "%s/kept/%s.json", b->dir, key);
		if (access(kp, F_OK)) {
			f = fopen(kp, "w");
			cr_assert_not_null(f);
			fputs(body, f);
			fclose(f);
		}
		json_decref(m);
	}
	free(text);
	return all;
}

static size_t wait_units(const broker *b, const char *station, size_t n)
{
	receiver as;
	size_t got = 0;

	for (int waited = 0; got < n; waited++) {
		json_t *all = sub_units(b, station, &as);

		got = same_body_per_key(all);
		json_decref(all);
		if (got >= n)
			break;
		cr_assert_lt(waited, 200, "only %zu of %zu units reached the subscriber", got, n);
		usleep(50000);
	}
	return got;
}

/* The retained message of topic, as a fresh subscriber sees it. */
static json_t *retained(const broker *b, const char *topic)
{
	char cmd[900], line[4096] = "";
	FILE *p;

	snprintf(cmd, sizeof(cmd), "mosquitto_sub -h 127.0.0.1 -p %d -V 5 -t '%s' "
		 "--retained-only -C 1 -W 3 -F '%%r %%p' 2>&1", b->port, topic);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	cr_assert_not_null(fgets(line, sizeof(line), p), "no retained message on %s", topic);
	pclose(p);
	cr_assert_eq(strncmp(line, "1 {", 3), 0, "not retained: %s", line);
	return json_loads(line + 2, 0, NULL);
}

/* The MQTT tests' world: station id with units provisioned units (seed)
 * and a folder for a Mosquitto (b->dir). */
static void mqtt_world(fx_world *w, fx_devsim *sim, broker *b, const char *id,
		       int units, const char *seed)
{
	mes_world(w, id);
	provision(w, sim, units, seed);
	snprintf(b->dir, sizeof(b->dir), "%s/broker", w->dir);
	cr_assert_eq(mkdir(b->dir, 0700), 0);
}

/* TLS for the broker: test certificates made by openssl in pki (600
 * bytes: <world>/pki) — broker-ca, other-ca, the listener's "server" for
 * 127.0.0.1 — and a TLS-only listener; client_certs: it requires a client
 * certificate from broker-ca ("station", the subscriber's "subscriber",
 * and another CA's "stranger" are made too). */
static void mqtt_tls(broker *b, const fx_world *w, char *pki, bool client_certs)
{
	size_t n;

	snprintf(pki, 600, "%s/pki", w->dir);
	cr_assert_eq(mkdir(pki, 0755), 0);
	make_ca(pki, "broker-ca");
	make_ca(pki, "other-ca");
	make_leaf(pki, "broker-ca", "server", "subjectAltName=IP:127.0.0.1");
	n = (size_t)snprintf(b->tls, sizeof(b->tls), "certfile %s/server.pem\n"
			     "keyfile %s/server.key\n", pki, pki);
	snprintf(b->cafile, sizeof(b->cafile), "%s/broker-ca.pem", pki);
	if (!client_certs)
		return;
	make_leaf(pki, "broker-ca", "station", "extendedKeyUsage=clientAuth");
	make_leaf(pki, "broker-ca", "subscriber", "extendedKeyUsage=clientAuth");
	make_leaf(pki, "other-ca", "stranger", "extendedKeyUsage=clientAuth");
	snprintf(b->tls + n, sizeof(b->tls) - n, "cafile %s/broker-ca.pem\n"
		 "require_certificate true\n", pki);
	snprintf(b->subcert, sizeof(b->subcert), "%s/subscriber.pem", pki);
	snprintf(b->subkey, sizeof(b->subkey), "%s/subscriber.key", pki);
}

/* The broker up (its listener lines so far, then conf) on a free port,
 * and the subscriber.  Mosquitto started as root would read its files as
 * the user mosquitto, who may not enter the test's private folder: it
 * keeps the test's user (the key stays 0600). */
static void mqtt_up(broker *b, const char *conf)
{
	size_t n = strlen(b->tls);

	snprintf(b->tls + n, sizeof(b->tls) - n, "%suser %s\n", conf ? conf : "",
		 getpwuid(getuid())->pw_name);
	b->port = free_port();
	broker_start(b);
	sub_start(b);
	usleep(500000);
}

/* One pass of `mes send --once` delivers the world's n units, each once,
 * with the store's fields (at the subscriber). */
static void mqtt_sends_all(fx_run *r, const fx_world *w, broker *b,
			   const char *id, int n)
{
	char want[64];
	receiver as;
	json_t *all;

	fx_station_run(r, w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	snprintf(want, sizeof(want), "%d units sent; 0 waiting", n);
	cr_assert(strstr(r->out, want), "%s", r->out);
	cr_assert_eq(wait_units(b, id, n), n);
	all = sub_units(b, id, &as);
	cr_assert_eq(json_array_size(all), (size_t)n, "each unit once");
	json_decref(all);
	cr_assert_eq(check_all_arrived(w, &as, id), n);
}

/* Nothing of station id reached the subscriber (after a moment for one
 * in flight); why: what it would mean. */
static void mqtt_nothing_arrived(broker *b, const char *id, const char *why)
{
	receiver as;
	json_t *all;

	usleep(300000);
	all = sub_units(b, id, &as);
	cr_assert_eq(json_array_size(all), 0, "%s", why);
	json_decref(all);
}

static void mqtt_world_end(fx_world *w, broker *b, fx_run *r)
{
	kill(b->sub, SIGKILL);
	waitpid(b->sub, NULL, 0);
	broker_kill(b);
	fx_rmtree(w->dir);
	free(r);
}

/* w's configuration with a mes group for broker b; tls (may be NULL)
 * goes inside the group. */
static void set_mqtt_tls(const fx_world *w, const char *id, const broker *b,
			 const char *tls)
{
	char extra[1200];

	snprintf(extra, sizeof(extra), "mqtt_host = \"127.0.0.1\"; mqtt_port = %d; %s",
		 b->port, tls ? tls : "");
	fx_world_opts o = { .with_ca = true, .timeout_ms = 700, .station_id = id };
	FILE *f;

	fx_write_conf(w, &o);
	f = fopen(w->conf, "a");
	cr_assert_not_null(f);
	fprintf(f, "mes: { %s retries = 1; timeout_ms = 2000; interval_ms = 100; "
		"backoff_max_ms = 300; };\n", extra);
	fclose(f);
}

static void set_mqtt(const fx_world *w, const char *id, const broker *b)
{
	set_mqtt_tls(w, id, b, NULL);
}

static pid_t follow_start(const fx_world *w)
{
	char bin[512], out[700];

	snprintf(bin, sizeof(bin), "%s/station", getenv("STATION_BUILD"));
	snprintf(out, sizeof(out), "%s/follow.log", w->dir);
	return spawn_to(out, (char *const[]){ bin, "--config", (char *)w->conf, "mes",
		"send", "--follow", NULL });
}

Test(mes, mqtt_every_unit_once_retained_status_and_will, .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	broker b = { 0 };
	receiver as;
	fx_run *r = malloc(sizeof(*r));
	json_t *all, *st;
	pid_t follow;
	char topic[200];

	cr_assert_not_null(r);
	mqtt_world(&w, &sim, &b, "line5-st1", 3, "--seed l5");
	mqtt_up(&b, NULL);
	set_mqtt(&w, "line5-st1", &b);

	fx_station_run(r, &w, "mes", "send", "--status", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "mqtt://127.0.0.1:") && strstr(r->out, "/station/line5-st1/units"),
		  "%s", r->out);
	cr_assert(strstr(r->out, "lag:                3 units"), "%s", r->out);
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert(strstr(r->out, "3 units sent; 0 waiting"), "%s", r->out);
	cr_assert_eq(wait_units(&b, "line5-st1", 3), 3);
	all = sub_units(&b, "line5-st1", &as);
	cr_assert_eq(json_array_size(all), 3, "each unit once");
	json_decref(all);
	cr_assert_eq(check_all_arrived(&w, &as, "line5-st1"), 3);
	/* a clean end leaves the retained status offline, with the lag */
	snprintf(topic, sizeof(topic), "station/line5-st1/status");
	st = retained(&b, topic);
	cr_assert_str_eq(json_string_value(json_object_get(st, "status")), "offline");
	cr_assert_eq(json_integer_value(json_object_get(st, "lag")), 0);
	cr_assert_str_eq(json_string_value(json_object_get(st, "last_unit")), "line5-st1:3");
	json_decref(st);

	/* a follower says online; killed, the broker publishes its will */
	follow = follow_start(&w);
	for (int waited = 0;; waited++) {
		st = retained(&b, topic);
		if (!strcmp(json_string_value(json_object_get(st, "status")), "online"))
			break;
		json_decref(st);
		cr_assert_lt(waited, 100, "the follower never said online");
		usleep(100000);
	}
	cr_assert_eq(json_integer_value(json_object_get(st, "lag")), 0);
	json_decref(st);
	kill(follow, SIGKILL);
	waitpid(follow, NULL, 0);
	for (int waited = 0;; waited++) {
		st = retained(&b, topic);
		if (!strcmp(json_string_value(json_object_get(st, "status")), "offline"))
			break;
		json_decref(st);
		cr_assert_lt(waited, 100, "no will after SIGKILL");
		usleep(100000);
	}
	cr_assert_null(json_object_get(st, "lag"), "the will, not a clean end");
	json_decref(st);

	mqtt_world_end(&w, &b, r);
}

Test(mes, mqtt_broker_down_then_killed_loses_nothing, .timeout = 300)
{
	fx_world w;
	fx_devsim sim;
	broker b = { 0 };
	receiver as;
	fx_run *r = malloc(sizeof(*r));
	json_t *all;
	pid_t follow;
	char log[700];

	cr_assert_not_null(r);
	mqtt_world(&w, &sim, &b, "line6-st1", 3, "--seed l6");
	b.port = free_port();
	set_mqtt(&w, "line6-st1", &b);

	/* no broker: nothing acknowledged, the lag says 3 */
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert(strstr(r->err, "mqtt://127.0.0.1") && strstr(r->err, "line6-st1:1"), "%s", r->err);
	fx_station_run(r, &w, "mes", "send", "--status", NULL);
	cr_assert(strstr(r->out, "lag:                3 units"), "%s", r->out);

	/* up, a persistent subscriber saved by the broker, a follower drains */
	broker_start(&b);
	sub_start(&b);
	usleep(2500000);
	follow = follow_start(&w);
	cr_assert_eq(wait_units(&b, "line6-st1", 3), 3);

	/* killed and restarted on the same port (a second batch of units
	 * provisioned while it is down is left undone: see the report) */
	broker_kill(&b);
	(void)log;
	/* restarted on the same port: drained, every unit at the subscriber */
	broker_start(&b);
	for (int waited = 0;; waited++) {
		fx_station_run(r, &w, "mes", "send", "--status", NULL);
		if (strstr(r->out, "lag:                0 units"))
			break;
		cr_assert_lt(waited, 100, "the follower did not drain: %s", r->out);
		usleep(100000);
	}
	cr_assert_eq(wait_units(&b, "line6-st1", 3), 3);
	all = sub_units(&b, "line6-st1", &as);
	cr_assert_eq(same_body_per_key(all), 3, "duplicates only with the same key and body");
	json_decref(all);
	cr_assert_eq(check_all_arrived(&w, &as, "line6-st1"), 3);

	kill(follow, SIGTERM);
	waitpid(follow, NULL, 0);
	mqtt_world_end(&w, &b, r);
}

/* MQTT over TLS: a real Mosquitto with a TLS-only listener whose
 * certificate a test CA (made here with openssl) issued for 127.0.0.1.
 * With another CA in mes.tls_ca the handshake is refused: exit 4, the
 * error names the TLS handshake, OpenSSL's reason and mes.tls_ca; nothing
 * reaches the subscriber, the cursor does not move (lag 2).  With the test
 * CA the same units are delivered, each once, with the store's fields. */
Test(mes, mqtt_tls_test_ca_accepted_wrong_ca_refused_nothing_lost, .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	broker b = { 0 };
	fx_run *r = malloc(sizeof(*r));
	char pki[600], opts[1400];

	cr_assert_not_null(r);
	mqtt_world(&w, &sim, &b, "line7-st1", 2, "--seed l7");
	mqtt_tls(&b, &w, pki, false);
	mqtt_up(&b, NULL);

	/* the wrong CA: refused at the handshake, nothing sent or lost */
	snprintf(opts, sizeof(opts), "tls_ca = \"%s/other-ca.pem\";", pki);
	set_mqtt_tls(&w, "line7-st1", &b, opts);
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert(strstr(r->err, "TLS handshake failed"), "%s", r->err);
	cr_assert(strstr(r->err, "certificate verify failed"), "%s", r->err);
	cr_assert(strstr(r->err, "other-ca.pem"), "%s", r->err);
	cr_assert(strstr(r->err, "line7-st1:1"), "%s", r->err);
	fx_station_run(r, &w, "mes", "send", "--status", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "mqtts://127.0.0.1:"), "%s", r->out);
	cr_assert(strstr(r->out, "acknowledged up to: event 0 "), "%s", r->out);
	cr_assert(strstr(r->out, "lag:                2 units"), "%s", r->out);
	cr_assert(strstr(r->out, "TLS handshake failed"), "%s", r->out);
	mqtt_nothing_arrived(&b, "line7-st1", "a message passed the wrong CA");

	/* the test CA: the same units, delivered once each */
	snprintf(opts, sizeof(opts), "tls_ca = \"%s/broker-ca.pem\";", pki);
	set_mqtt_tls(&w, "line7-st1", &b, opts);
	mqtt_sends_all(r, &w, &b, "line7-st1", 2);

	mqtt_world_end(&w, &b, r);
}

/* MQTT with a client certificate: the Mosquitto listener requires one
 * issued by its CA (require_certificate).  Without mes.tls_cert/tls_key
 * the broker closes the connection: exit 4, the error says a client
 * certificate is wanted and which settings give one, nothing at the
 * subscriber, the cursor unmoved; with a client certificate of another
 * CA: the error says the broker does not trust it; with the broker CA's
 * client certificate: every unit delivered once, with the store's
 * fields. */
Test(mes, mqtt_client_certificate_required_by_the_broker, .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	broker b = { 0 };
	fx_run *r = malloc(sizeof(*r));
	char pki[600], opts[2000];

	cr_assert_not_null(r);
	mqtt_world(&w, &sim, &b, "line8-st1", 2, "--seed l8");
	mqtt_tls(&b, &w, pki, true);
	mqtt_up(&b, NULL);

	/* no client certificate, then one of another CA: refused, nothing lost */
	for (int i = 0; i < 2; i++) {
		if (i == 0)
			snprintf(opts, sizeof(opts), "tls_ca = \"%s/broker-ca.pem\";", pki);
		else
			snprintf(opts, sizeof(opts), "tls_ca = \"%s/broker-ca.pem\"; tls_cert = "
				 "\"%s/stranger.pem\"; tls_key = \"%s/stranger.key\";", pki,
				 pki, pki);
		set_mqtt_tls(&w, "line8-st1", &b, opts);
		fx_station_run(r, &w, "mes", "send", "--once", NULL);
		cr_assert_eq(r->code, 4, "%s: %s%s", i ? "another CA" : "no client cert",
			     r->out, r->err);
		cr_assert(strstr(r->err, "line8-st1:1"), "%s", r->err);
		cr_log_info("%s", r->err);
		cr_assert(strstr(r->err, "mqtts://127.0.0.1:"), "%s", r->err);
		cr_assert(strstr(r->err, i ? "does not trust ours" :
				 "set mes.tls_cert and mes.tls_key"), "%s", r->err);
		fx_station_run(r, &w, "mes", "send", "--status", NULL);
		cr_assert_eq(r->code, 0, "%s", r->err);
		cr_assert(strstr(r->out, "lag:                2 units"), "%s", r->out);
	}
	mqtt_nothing_arrived(&b, "line8-st1", "a message passed without the broker "
			     "CA's client certificate");

	/* the broker CA's client certificate: delivered once each */
	snprintf(opts, sizeof(opts), "tls_ca = \"%s/broker-ca.pem\"; tls_cert = "
		 "\"%s/station.pem\"; tls_key = \"%s/station.key\";", pki, pki, pki);
	set_mqtt_tls(&w, "line8-st1", &b, opts);
	mqtt_sends_all(r, &w, &b, "line8-st1", 2);

	mqtt_world_end(&w, &b, r);
}

/* A broker that takes the CONNECT but refuses the results' topic: a
 * real Mosquitto whose ACL lets this station write its status and not
 * station/<id>/units answers each PUBLISH with a PUBACK of reason 0x87
 * (not authorized).  That is not delivery: exit 4 naming the topic and
 * the broker's reason, the cursor unmoved, nothing at the subscriber.
 * With the ACL opened (SIGHUP: the broker reloads it), the same units
 * go, once each. */
Test(mes, mqtt_puback_refusal_is_not_delivery, .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	broker b = { 0 };
	fx_run *r = malloc(sizeof(*r));
	char acl[700], conf[800];
	FILE *f;

	cr_assert_not_null(r);
	mqtt_world(&w, &sim, &b, "line9-st1", 2, "--seed l9");
	snprintf(acl, sizeof(acl), "%s/acl", b.dir);
	f = fopen(acl, "w");
	cr_assert_not_null(f);
	fprintf(f, "topic readwrite station/line9-st1/status\ntopic read station/#\n");
	fclose(f);
	snprintf(conf, sizeof(conf), "acl_file %s\n", acl);
	mqtt_up(&b, conf);
	set_mqtt(&w, "line9-st1", &b);

	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert(strstr(r->err, "refused the message on station/line9-st1/units") &&
		  strstr(r->err, "Not authorized"), "%s", r->err);
	cr_assert(strstr(r->err, "line9-st1:1"), "%s", r->err);
	fx_station_run(r, &w, "mes", "send", "--status", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "lag:                2 units"), "%s", r->out);
	mqtt_nothing_arrived(&b, "line9-st1", "a refused message reached the subscriber");

	/* the ACL opened: both units, once each */
	f = fopen(acl, "w");
	cr_assert_not_null(f);
	fprintf(f, "topic readwrite station/#\n");
	fclose(f);
	cr_assert_eq(kill(b.pid, SIGHUP), 0);   /* mosquitto reloads its ACL */
	usleep(500000);
	mqtt_sends_all(r, &w, &b, "line9-st1", 2);

	mqtt_world_end(&w, &b, r);
}

/* ---- The route check and measured steps (docs/integration.md) ---- */

/* The world's profile: the default one with extra groups (route,
 * measurements), signed again. */
static void set_profile(const fx_world *w, const char *fmt, ...)
{
	char extra[2048], text[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(extra, sizeof(extra), fmt, ap);
	va_end(ap);
	snprintf(text, sizeof(text), "%s%s", FX_PROFILE, extra);
	fx_write_file(w->profile, text);
	fx_sign(w, w->profile);
}

/* A path in the source tree's docs/schemas. */
static void schema_of(char *out, size_t cap, const char *name)
{
	script_path(out, cap);
	snprintf(strstr(out, "/tests/fixtures/"), 200, "/docs/schemas/%s", name);
}

/* The route questions the receiver got: [{path, body}]. */
static json_t *route_asked(const receiver *rx)
{
	char path[700], line[8192];
	json_t *a = json_array();
	FILE *f;

	snprintf(path, sizeof(path), "%s/route.jsonl", rx->dir);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		json_array_append_new(a, json_loads(line, 0, NULL));
	if (f)
		fclose(f);
	return a;
}

static void set_route_mode(const receiver *rx, const char *mode)
{
	char p[700];

	snprintf(p, sizeof(p), "%s/route-mode", rx->dir);
	fx_write_file(p, mode);
}

/* One unit of a new simulator (name) provisioned, armed, with --json;
 * returns its one "unit" line (the run's output in r). */
static json_t *one_unit(fx_run *r, const fx_world *w, fx_devsim *sim,
			const char *name, const char *simargs)
{
	json_t *units, *u;

	cr_assert_eq(fx_devsim_start(sim, w->dir, name, 1, simargs), 0);
	fx_station_run(r, w, "--json", "--burn-fuses", "--yes", "--slot", sim->port,
		       "provision", NULL);
	fx_devsim_stop(sim);
	units = fx_json_events(r->out, "unit");
	cr_assert_eq(json_array_size(units), 1, "%s%s", r->out, r->err);
	u = json_incref(json_array_get(units, 0));
	json_decref(units);
	return u;
}

static const char *jstr(json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	return v ? v : "";
}

/* The simulator's device was never touched: no key made, no certificate
 * written, no fuse burned, not locked (its own state file says so). */
static void untouched(const fx_devsim *sim, const char *uid)
{
	json_t *d = fx_sim_unit(sim->state_path, uid);
	const char *bank0;

	cr_assert_not_null(d, "no simulated unit %s", uid);
	cr_assert_eq(json_integer_value(json_object_get(d, "keygen_count")), 0, "a key was made");
	cr_assert(json_is_null(json_object_get(d, "cert")), "a certificate was written");
	cr_assert_eq(json_integer_value(json_object_get(d, "burn_count")), 0, "a fuse was burned");
	cr_assert_eq(json_integer_value(json_object_get(d, "lifecycle")), 0, "locked");
	bank0 = json_string_value(json_array_get(json_object_get(d, "fuses"), 0));
	cr_assert_not_null(bank0);
	cr_assert_eq(strspn(bank0, "0"), strlen(bank0), "bank 0 holds %s", bank0);
	json_decref(d);
}

/* How many steps named step unit id has. */
static long long steps_named(const fx_world *w, long long id, const char *step)
{
	char sql[300];

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM steps WHERE unit_id = %lld "
		 "AND step = '%s'", id, step);
	return fx_q_int(w, sql);
}

Test(mes, route_allowed_then_refused_with_the_mes_reason_nothing_burned, .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	receiver rx = { 0 };
	fx_run *r = malloc(sizeof(*r));
	char keyfile[600], url[200], rschema[1300], want[600], text[4096];
	json_t *u, *asked, *q;

	cr_assert_not_null(r);
	mes_world(&w, "line3-st1");
	snprintf(keyfile, sizeof(keyfile), "%s/mes.key", w.dir);
	schema_of(rschema, sizeof(rschema), "mes-route-1.schema.json");
	/* the MES checks the signature and the question's schema */
	rx_start(&rx, &w, "rx", 0, "--key-file", keyfile, "--route-schema", rschema, NULL);
	url_of(url, sizeof(url), &rx, "http");
	set_mes(&w, "line3-st1", url, NULL);
	set_profile(&w, "route: { url = \"http://127.0.0.1:%d/route/${station}/${uid}"
		    "?wo=${work_order}\"; timeout_ms = 3000; on_error = \"stop\"; };\n",
		    rx.port);

	/* allowed: provisioned as ever, the question on record */
	u = one_unit(r, &w, &sim, "ok", "--seed r1");
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert_str_eq(jstr(u, "result"), "PASS");
	cr_assert_str_eq(jstr(u, "cause"), "none");
	fx_check_pass(&w, sim.state_path, jstr(u, "uid"));
	asked = route_asked(&rx);
	cr_assert_eq(json_array_size(asked), 1, "asked once per unit");
	q = json_array_get(asked, 0);
	snprintf(want, sizeof(want), "/route/line3-st1/%s?wo=", jstr(u, "uid"));
	cr_assert_str_eq(jstr(q, "path"), want);
	cr_assert_str_eq(jstr(json_object_get(q, "body"), "uid"), jstr(u, "uid"));
	cr_assert_str_eq(jstr(json_object_get(q, "body"), "station"), "line3-st1");
	cr_assert_str_eq(jstr(json_object_get(q, "body"), "profile"), "test-sensor");
	json_decref(asked);
	cr_assert_eq(steps_named(&w, 1, "route"), 1);
	fx_q_text(&w, "SELECT outcome FROM steps WHERE unit_id = 1 AND step = 'route'",
		  text, sizeof(text));
	cr_assert_str_eq(text, "ok");
	json_decref(u);

	/* refused: recorded FAIL with the MES's reason; no key, no
	 * certificate, no fuse, though the run is armed */
	set_route_mode(&rx, "refuse:skipped station ICT (line3-ict has no PASS)");
	u = one_unit(r, &w, &sim, "refused", "--seed r2");
	cr_assert_eq(r->code, 1, "exit as the other refusals: %s", r->err);
	cr_assert_str_eq(jstr(u, "result"), "FAIL");
	cr_assert_str_eq(jstr(u, "cause"), "route-refused");
	cr_assert(strstr(jstr(u, "reason"), "refused by the MES: skipped station ICT "
			 "(line3-ict has no PASS)"), "%s", jstr(u, "reason"));
	cr_assert_eq(json_string_value(json_object_get(u, "cert_serial")), NULL);
	untouched(&sim, jstr(u, "uid"));
	fx_q_text(&w, "SELECT state || '|' || reason || '|' || coalesce(cert_serial, 'none') "
		  "FROM units WHERE id = 2", text, sizeof(text));
	cr_assert(!strncmp(text, "FAIL|refused by the MES: skipped station ICT", 44) &&
		  strstr(text, "|none"), "%s", text);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE unit_id = 2 AND step "
			      "IN ('keygen', 'possession', 'certificate', 'write-cert', "
			      "'fuse-check', 'fuse', 'fuse-intent', 'fuses')"), 0,
		     "a step after the refusal ran");
	fx_q_text(&w, "SELECT outcome FROM steps WHERE unit_id = 2 AND step = 'route'",
		  text, sizeof(text));
	cr_assert_str_eq(text, "fail");
	/* the records say why, and verify */
	fx_station_run(r, &w, "records", "show", jstr(u, "uid"), NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "route") && strstr(r->out, "skipped station ICT"), "%s", r->out);
	fx_station_run(r, &w, "records", "verify", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	json_decref(u);

	/* a template naming anything else is refused when the profile loads */
	set_profile(&w, "route: { url = \"http://127.0.0.1:%d/route/${serial}\"; };\n",
		    rx.port);
	fx_station_run(r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	cr_assert(strstr(r->err, "route.url") && strstr(r->err, "${serial}"), "%s", r->err);
	cr_assert_eq(json_array_size(asked = route_asked(&rx)), 2, "asked anyway");
	json_decref(asked);

	rx_stop(&rx);
	fx_rmtree(w.dir);
	free(r);
}

/* ---- Labels to a real CUPS queue ---- */

/* A private cupsd (its own configuration, spool and port; nothing of the
 * system's) and a network label printer emulated behind it: a TCP
 * listener, like a Zebra's raw port 9100, keeping each job's bytes in
 * out/job-N.bin.  CUPS's file: device cannot stand in for the printer: a
 * raw queue runs no filter and file: no backend, so nothing would carry
 * the job's bytes (seen with CUPS 2.4); the socket backend does. */
typedef struct cups {
	pid_t cupsd, printer;
	int port, printer_port;
	char dir[64];
} cups;

static void cups_start(cups *c)
{
	static const char *const sub[] = { "conf", "spool", "cache", "state", "tmp",
					   "log", "out" };
	char path[300], cmd[1200], conf[200], files[200], log[200];
	int waited = 0;
	FILE *f;

	/* its own folder, which the backends (run as the user lp) may enter */
	snprintf(c->dir, sizeof(c->dir), "/tmp/st-cups-XXXXXX");
	cr_assert_not_null(mkdtemp(c->dir));
	cr_assert_eq(chmod(c->dir, 0755), 0);
	for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", c->dir, sub[i]);
		cr_assert_eq(mkdir(path, 0755), 0);
	}
	c->port = free_port();
	c->printer_port = free_port();
	snprintf(conf, sizeof(conf), "%s/conf/cupsd.conf", c->dir);
	f = fopen(conf, "w");
	cr_assert_not_null(f);
	fprintf(f, "Listen 127.0.0.1:%d\nLogLevel info\nWebInterface No\nBrowsing No\n"
		"DefaultAuthType None\n<Location />\n  Order allow,deny\n  Allow all\n"
		"</Location>\n<Policy default>\n  <Limit All>\n    Order deny,allow\n"
		"  </Limit>\n</Policy>\n", c->port);
	fclose(f);
	snprintf(files, sizeof(files), "%s/conf/cups-files.conf", c->dir);
	f = fopen(files, "w");
	cr_assert_not_null(f);
	fprintf(f, "FileDevice No\nServerRoot %s/conf\nRequestRoot %s/spool\nCacheDir %s/cache\n"
		"StateDir %s/state\nTempDir %s/tmp\nErrorLog %s/log/error_log\n"
		"AccessLog %s/log/access_log\nPageLog %s/log/page_log\nPrintcap %s/printcap\n"
		"ServerBin /usr/lib/cups\nDataDir /usr/share/cups\nSystemGroup root\n",
		c->dir, c->dir, c->dir, c->dir, c->dir, c->dir, c->dir, c->dir, c->dir);
	fclose(f);
	snprintf(log, sizeof(log), "%s/log/cupsd.out", c->dir);
	c->cupsd = spawn_to(log, (char *const[]){ "cupsd", "-F", "-c", conf, "-s", files,
						 NULL });
	/* the printer: one file per connection that brought bytes (not the
	 * test's own probe of its port), whole when it closes */
	snprintf(path, sizeof(path), "%s/out", c->dir);
	{
		char port[16], script[900];

		snprintf(port, sizeof(port), "%d", c->printer_port);
		snprintf(script, sizeof(script),
			 "import os, socket, sys\n"
			 "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
			 "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(4); n = 0\n"
			 "while True:\n"
			 "    c, _ = s.accept(); data = b''\n"
			 "    while True:\n"
			 "        b = c.recv(65536)\n"
			 "        if not b: break\n"
			 "        data += b\n"
			 "    c.close()\n"
			 "    if not data: continue\n"
			 "    n += 1; p = os.path.join(sys.argv[2], 'job-%%d.bin' %% n)\n"
			 "    open(p + '.tmp', 'wb').write(data); os.rename(p + '.tmp', p)\n");
		snprintf(log, sizeof(log), "%s/log/printer.out", c->dir);
		c->printer = spawn_to(log, (char *const[]){ "python3", "-c", script, port, path,
							   NULL });
	}
	while (!port_open(c->port) || !port_open(c->printer_port)) {
		cr_assert_lt(waited++, 200, "cupsd or the printer did not start (%s/log)", c->dir);
		usleep(50000);
	}
	snprintf(cmd, sizeof(cmd), "lpadmin -h 127.0.0.1:%d -p zebra -E -v "
		 "socket://127.0.0.1:%d 2>&1", c->port, c->printer_port);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void cups_stop(cups *c)
{
	pid_t p[2] = { c->cupsd, c->printer };

	for (int i = 0; i < 2; i++)
		if (p[i] > 0) {
			kill(p[i], SIGTERM);
			waitpid(p[i], NULL, 0);
		}
	fx_rmtree(c->dir);
}

/* The bytes of the printer's job n (waits up to 20 s for it). */
static char *printer_job(const cups *c, int n)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/out/job-%d.bin", c->dir, n);
	for (int waited = 0; access(path, F_OK); waited++) {
		cr_assert_lt(waited, 400, "job %d never reached the printer (%s/log/error_log)",
			     n, c->dir);
		usleep(50000);
	}
	return slurp(path);
}

/* A PASS unit's label goes through a real CUPS queue (labels.queue on the
 * cupsd of labels.server, `lp -h`) to the printer: the bytes the printer
 * gets are the unit's ZPL exactly, whose ^BQ carries the unit's payload; a
 * reprint is a second job; a queue the server does not have is a clear
 * error naming lp, the server and what to check. */
Test(mes, label_print_job_reaches_a_cups_queue, .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	cups c = { 0 };
	fx_run *r = malloc(sizeof(*r));
	fx_world_opts o = { .with_ca = true, .timeout_ms = 700, .station_id = "line9-st1" };
	char uid[200], payload[600], zpl[900], *want, *got, cmd[600], out[4096];
	FILE *f;

	cr_assert_not_null(r);
	cups_start(&c);
	mes_world(&w, "line9-st1");
	fx_write_conf(&w, &o);
	f = fopen(w.conf, "a");
	cr_assert_not_null(f);
	fprintf(f, "labels: { dir = \"%s/labels\"; queue = \"zebra\"; server = \"127.0.0.1:%d\"; };\n",
		w.dir, c.port);
	fclose(f);
	provision(&w, &sim, 1, "--seed l9");
	want_payload(&w, 1, uid, sizeof(uid), payload, sizeof(payload));
	snprintf(zpl, sizeof(zpl), "%s/labels/%s.zpl", w.dir, uid);
	want = slurp(zpl);
	cr_assert(want[0], "no ZPL label written");

	/* the PASS's label, as the printer got it */
	got = printer_job(&c, 1);
	cr_assert_str_eq(got, want, "the printer got other bytes than the label:\n%s\nwant:\n%s", got, want);
	free(got);
	check_zpl(zpl, payload);

	/* a reprint is a second job */
	fx_station_run(r, &w, "label", "print", uid, NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert(strstr(r->out, "sent to zebra"), "%s", r->out);
	got = printer_job(&c, 2);
	cr_assert_str_eq(got, want);
	free(got);
	snprintf(cmd, sizeof(cmd), "lpstat -h 127.0.0.1:%d -W completed -o zebra 2>&1", c.port);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	out[fread(out, 1, sizeof(out) - 1, f)] = '\0';
	cr_assert_eq(pclose(f), 0, "%s", out);
	cr_assert(strstr(out, "zebra-1") && strstr(out, "zebra-2"), "%s", out);

	/* a queue the server does not have */
	fx_write_conf(&w, &o);
	f = fopen(w.conf, "a");
	cr_assert_not_null(f);
	fprintf(f, "labels: { dir = \"%s/labels\"; queue = \"nosuch\"; server = \"127.0.0.1:%d\"; };\n",
		w.dir, c.port);
	fclose(f);
	fx_station_run(r, &w, "label", "print", uid, NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	snprintf(cmd, sizeof(cmd), "lp -h 127.0.0.1:%d -d nosuch did not take", c.port);
	cr_assert(strstr(r->err, cmd), "%s", r->err);
	cr_assert(strstr(r->err, "lpstat -h 127.0.0.1:"), "%s", r->err);

	free(want);
	cups_stop(&c);
	fx_rmtree(w.dir);
	free(r);
}

Test(mes, route_mes_down_or_silent_by_policy_stop_or_allow_and_flag, .timeout = 300)
{
	fx_world w;
	fx_devsim sim;
	receiver rx = { 0 };
	fx_run *r = malloc(sizeof(*r));
	char url[200], schema[1300], key[200], text[4096];
	int dead = free_port();
	json_t *u, *m;

	cr_assert_not_null(r);
	mes_world(&w, "line4-st1");
	schema_of(schema, sizeof(schema), "mes-result-1.schema.json");

	/* down (nothing listens) and allow-and-flag: provisioned, flagged in
	 * the record, the run's output and the MES message */
	set_mes(&w, "line4-st1", "http://127.0.0.1:9/results", NULL);
	set_profile(&w, "route: { url = \"http://127.0.0.1:%d/route/${uid}\"; "
		    "timeout_ms = 500; on_error = \"allow-and-flag\"; };\n", dead);
	u = one_unit(r, &w, &sim, "down-flag", "--seed d1");
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert_str_eq(jstr(u, "result"), "PASS");
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(u, "flags"), 0)),
			 "route-unchecked");
	fx_check_pass(&w, sim.state_path, jstr(u, "uid"));
	fx_q_text(&w, "SELECT flags FROM units WHERE id = 1", text, sizeof(text));
	cr_assert_str_eq(text, "[\"route-unchecked\"]");
	fx_q_text(&w, "SELECT outcome || '|' || detail FROM steps WHERE unit_id = 1 AND "
		  "step = 'route'", text, sizeof(text));
	cr_assert(!strncmp(text, "skip|FLAGGED route-unchecked", 28), "%s", text);
	json_decref(u);

	/* silent (it takes the question and never answers) and stop: the
	 * unit is recorded FAIL after route.timeout_ms, nothing done to it */
	rx_start(&rx, &w, "rx", 0, "--schema", schema, "--route", "hang", NULL);
	url_of(url, sizeof(url), &rx, "http");
	set_mes(&w, "line4-st1", url, NULL);
	set_profile(&w, "route: { url = \"http://127.0.0.1:%d/route/${uid}\"; "
		    "timeout_ms = 500; };\n", rx.port);
	u = one_unit(r, &w, &sim, "silent-stop", "--seed d2");
	cr_assert_eq(r->code, 1, "%s", r->err);
	cr_assert_str_eq(jstr(u, "result"), "FAIL");
	cr_assert_str_eq(jstr(u, "cause"), "route-unanswered");
	cr_assert(strstr(jstr(u, "reason"), "did not answer the route check") &&
		  strstr(jstr(u, "reason"), "timed out"), "%s", jstr(u, "reason"));
	untouched(&sim, jstr(u, "uid"));
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE id = 2 AND "
			      "cert_serial IS NULL AND state = 'FAIL'"), 1);
	json_decref(u);

	/* down and stop */
	set_profile(&w, "route: { url = \"http://127.0.0.1:%d/route/${uid}\"; "
		    "timeout_ms = 500; on_error = \"stop\"; };\n", dead);
	u = one_unit(r, &w, &sim, "down-stop", "--seed d3");
	cr_assert_eq(r->code, 1, "%s", r->err);
	cr_assert_str_eq(jstr(u, "cause"), "route-unanswered");
	untouched(&sim, jstr(u, "uid"));
	json_decref(u);

	/* the MES message carries the flag, valid under the schema (the
	 * receiver refuses a body that is not: 422) */
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	snprintf(key, sizeof(key), "line4-st1:1");
	m = kept(&rx, key);
	cr_assert_not_null(m);
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(m, "flags"), 0)),
			 "route-unchecked");
	json_decref(m);
	m = kept(&rx, "line4-st1:2");
	cr_assert_not_null(m);
	cr_assert_eq(json_array_size(json_object_get(m, "flags")), 0);
	cr_assert_str_eq(jstr(m, "verdict"), "FAIL");
	json_decref(m);

	rx_stop(&rx);
	fx_rmtree(w.dir);
	free(r);
}

/* The measurement named in a --json unit line's list, or NULL. */
static json_t *meas_of(json_t *list, const char *name)
{
	size_t i;
	json_t *m;

	json_array_foreach(list, i, m)
		if (!strcmp(jstr(m, "name"), name))
			return m;
	return NULL;
}

Test(mes, measurements_limits_fail_the_unit_and_reach_records_export_and_mes, .timeout = 300)
{
	fx_world w;
	fx_devsim sim;
	receiver rx = { 0 };
	fx_run *r = malloc(sizeof(*r));
	char url[200], schema[1300], text[4096];
	json_t *u, *ms, *m, *exp, *line;

	cr_assert_not_null(r);
	mes_world(&w, "line5-st1");
	schema_of(schema, sizeof(schema), "mes-result-1.schema.json");
	rx_start(&rx, &w, "rx", 0, "--schema", schema, NULL);
	url_of(url, sizeof(url), &rx, "http");
	set_mes(&w, "line5-st1", url, NULL);
	set_profile(&w, "measurements: { keygen_ms = [0, 200]; vpp_mv = [2400, 2600]; "
		    "temp_c = [20.0, 30.5]; link_retries = [0, 3]; };\n");

	/* within the limits: PASS, every measurement with its limits */
	u = one_unit(r, &w, &sim, "good", "--seed m1");
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert_str_eq(jstr(u, "result"), "PASS");
	ms = json_object_get(u, "measurements");
	cr_assert_eq(json_array_size(ms), 4, "%s", r->out);
	m = meas_of(ms, "vpp_mv");
	cr_assert_not_null(m);
	cr_assert_eq(json_integer_value(json_object_get(m, "value")), 2500);
	cr_assert_str_eq(jstr(m, "unit"), "mV");
	cr_assert_eq(json_integer_value(json_object_get(m, "low")), 2400);
	cr_assert_str_eq(jstr(m, "outcome"), "pass");
	m = meas_of(ms, "temp_c");
	cr_assert_not_null(m);
	cr_assert_eq(json_number_value(json_object_get(m, "value")), 25.0);
	cr_assert_eq(json_number_value(json_object_get(m, "high")), 30.5);
	cr_assert_not_null(meas_of(ms, "keygen_ms"));
	cr_assert_str_eq(jstr(meas_of(ms, "keygen_ms"), "unit"), "ms");
	cr_assert_not_null(meas_of(ms, "link_retries"));
	/* records show lists them; the export carries the same list */
	fx_station_run(r, &w, "records", "show", jstr(u, "uid"), NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "measurement vpp_mv") && strstr(r->out, "2500 mV") &&
		  strstr(r->out, "[2400, 2600] pass") && strstr(r->out, "measurement keygen_ms"),
		  "%s", r->out);
	fx_station_run(r, &w, "records", "export", "--format", "jsonl", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	exp = json_loads(r->out, JSON_DISABLE_EOF_CHECK, NULL);
	cr_assert_not_null(exp, "%s", r->out);
	cr_assert(json_equal(json_object_get(exp, "measurements"), ms), "%s", r->out);
	json_decref(exp);
	json_decref(u);

	/* a slow key generation (the simulator's --keygen-ms) fails the unit
	 * naming the measurement; no certificate, no fuse */
	u = one_unit(r, &w, &sim, "slowkey", "--seed m2 --keygen-ms 450");
	cr_assert_eq(r->code, 1, "%s", r->err);
	cr_assert_str_eq(jstr(u, "result"), "FAIL");
	cr_assert_str_eq(jstr(u, "cause"), "measurement");
	cr_assert(strstr(jstr(u, "reason"), "measurement keygen_ms = ") &&
		  strstr(jstr(u, "reason"), "outside its limits [0, 200]"), "%s",
		  jstr(u, "reason"));
	cr_assert_str_eq(jstr(meas_of(json_object_get(u, "measurements"), "keygen_ms"),
			      "outcome"), "fail");
	cr_assert_geq(json_integer_value(json_object_get(meas_of(json_object_get(u,
		"measurements"), "keygen_ms"), "value")), 450);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE id = 2 AND state = 'FAIL' "
			      "AND cert_serial IS NULL"), 1);
	cr_assert_eq(steps_named(&w, 2, "certificate"), 0);
	{
		json_t *d = fx_sim_unit(sim.state_path, jstr(u, "uid"));

		cr_assert(json_is_null(json_object_get(d, "cert")));
		cr_assert_eq(json_integer_value(json_object_get(d, "burn_count")), 0);
		json_decref(d);
	}
	json_decref(u);

	/* the programmer measures 3.1 V: out of limits before any key */
	u = one_unit(r, &w, &sim, "hivpp", "--seed m3 --vpp 3100");
	cr_assert_eq(r->code, 1, "%s", r->err);
	cr_assert_str_eq(jstr(u, "cause"), "measurement");
	cr_assert(strstr(jstr(u, "reason"), "measurement vpp_mv = 3100 mV is outside its "
			 "limits [2400, 2600]"), "%s", jstr(u, "reason"));
	untouched(&sim, jstr(u, "uid"));
	json_decref(u);

	/* the records verify (the new columns are covered by the unit_end
	 * events) and the MES gets every measurement, valid under the schema */
	fx_station_run(r, &w, "records", "verify", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	fx_station_run(r, &w, "mes", "send", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	for (int id = 1; id <= 3; id++) {
		char k[64], sql[200];

		snprintf(k, sizeof(k), "line5-st1:%d", id);
		m = kept(&rx, k);
		cr_assert_not_null(m, "%s never arrived", k);
		snprintf(sql, sizeof(sql), "SELECT measurements FROM units WHERE id = %d", id);
		fx_q_text(&w, sql, text, sizeof(text));
		line = json_loads(text, 0, NULL);
		cr_assert_not_null(line, "unit %d: %s", id, text);
		cr_assert(json_equal(json_object_get(m, "measurements"), line),
			  "unit %d: the message's measurements are not the record's", id);
		json_decref(line);
		json_decref(m);
	}

	rx_stop(&rx);
	fx_rmtree(w.dir);
	free(r);
}

/* test_evidence.c — the audit trail through the real `station` binary and
 * a fresh SoftHSM token: the HSM-signed chain verifies and `records verify`
 * catches tampering; the evidence bundle passes exactly the commands
 * docs/evidence.md gives an auditor, and fails them once tampered with;
 * work-order quotas; SIGKILL during bursts keeps every reported PASS; a
 * full disk and a read-only store stop provisioning with a clear error and
 * lose nothing already recorded. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base.h"
#include "records/records.h"
#include "station/x509.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

static fx_run R;    /* big: keep it off the stack */

static long long q_int(const char *db, const char *sql)
{
	sqlite3 *d = NULL;
	sqlite3_stmt *s = NULL;
	long long v = -1;

	cr_assert_eq(sqlite3_open_v2(db, &d, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	sqlite3_busy_timeout(d, 5000);
	cr_assert_eq(sqlite3_prepare_v2(d, sql, -1, &s, NULL), SQLITE_OK, "%s: %s",
		     sql, sqlite3_errmsg(d));
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(d);
	return v;
}

static void sql_exec(const char *db, const char *sql)
{
	sqlite3 *d = NULL;
	char *e = NULL;

	cr_assert_eq(sqlite3_open(db, &d), SQLITE_OK);
	sqlite3_busy_timeout(d, 5000);
	cr_assert_eq(sqlite3_exec(d, sql, NULL, NULL, &e), SQLITE_OK, "%s: %s", sql, e);
	sqlite3_close(d);
}

/* Provision n units from one simulator; returns with the simulator
 * stopped. */
static void provision(fx_world *w, const char *name, int n, const char *wo)
{
	fx_devsim sim;

	cr_assert_eq(fx_devsim_start(&sim, w->dir, name, n, NULL), 0);
	if (wo)
		fx_station_run(&R, w, "--json", "--burn-fuses", "--yes", "--work-order", wo,
			       "--slot", sim.port, "provision", NULL);
	else
		fx_station_run(&R, w, "--json", "--burn-fuses", "--yes", "--slot", sim.port,
			       "provision", NULL);
	fx_devsim_stop(&sim);
}

Test(evidence, provisioning_is_signed_and_verify_catches_tampering, .timeout = 120)
{
	fx_world w;

	fx_world_init(&w, true, 2000);
	provision(&w, "p1", 3, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	/* every event of the run is covered by the HSM's audit key: the
	 * last event of each commit is signed, and its signature covers the
	 * events of its batch before it (fewer signatures than events) */
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM events e WHERE sig IS NULL AND "
			   "(body NOT LIKE '%\"batch\":%' OR NOT EXISTS (SELECT 1 FROM "
			   "events s WHERE s.seq > e.seq AND s.sig IS NOT NULL))"), 0);
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM events WHERE seq = (SELECT "
			   "max(seq) FROM events) AND sig IS NOT NULL"), 1);
	cr_assert_lt(q_int(w.db, "SELECT count(*) FROM events WHERE sig IS NOT NULL"),
		     q_int(w.db, "SELECT count(*) FROM events"));
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM events WHERE kind IN "
			   "('station_start','operator_login','operator_logout',"
			   "'station_stop')"), 4);
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM audit_certs"), 1);
	fx_station_run(&R, &w, "--ca-cert", w.ca, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.out, "records OK"), "%s", R.out);
	/* list, show and export read the same store */
	fx_station_run(&R, &w, "--format", "jsonl", "--result", "PASS", "records", "export", NULL);
	cr_assert_eq(R.code, 0, "%s", R.err);
	{
		int lines = 0;

		for (char *p = R.out; (p = strstr(p, "\"cert_pem\"")); p++)
			lines++;
		cr_assert_eq(lines, 3, "%s", R.out);
	}
	fx_station_run(&R, &w, "records", "show", "1", NULL);
	cr_assert_eq(R.code, 0, "%s", R.err);
	cr_assert(strstr(R.out, "unit_end") && strstr(R.out, "possession"), "%s", R.out);
	/* the PIN never reaches the records */
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM events WHERE body LIKE '%" FX_PIN "%'"), 0);

	/* cutting events off the end together with their rows leaves a
	 * consistent chain; a hash kept from before (an export) catches it */
	{
		char anchor[80] = "", cmd[1024];
		FILE *p;

		snprintf(cmd, sizeof(cmd), "sqlite3 '%s' 'SELECT hash FROM events "
			 "ORDER BY seq DESC LIMIT 1'", w.db);
		p = popen(cmd, "r");
		cr_assert_not_null(p);
		cr_assert_not_null(fgets(anchor, sizeof(anchor), p));
		pclose(p);
		anchor[strcspn(anchor, "\n")] = '\0';
		fx_station_run(&R, &w, "--anchor", anchor, "records", "verify", NULL);
		cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
		sql_exec(w.db, "DROP TRIGGER events_no_delete; DROP TRIGGER units_no_delete;"
			 "DELETE FROM events WHERE seq > (SELECT seq FROM events WHERE"
			 " kind = 'unit_start' AND unit_id = 3) - 1;"
			 "DELETE FROM steps WHERE unit_id = 3; DELETE FROM units WHERE id = 3");
		fx_station_run(&R, &w, "records", "verify", NULL);
		cr_assert_eq(R.code, 0, "the documented limit: %s\n%s", R.out, R.err);
		fx_station_run(&R, &w, "--anchor", anchor, "records", "verify", NULL);
		cr_assert_eq(R.code, 4, "%s\n%s", R.out, R.err);
		cr_assert(strstr(R.out, "cut off"), "%s", R.out);
	}
	/* change one byte of one step record */
	sql_exec(w.db, "DROP TRIGGER events_no_update;"
		 "UPDATE events SET body = replace(body, '\"ok\"', '\"OK\"')"
		 " WHERE seq = (SELECT min(seq) FROM events WHERE kind = 'step')");
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 4, "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.out, "TAMPERED") && strstr(R.out, "first bad record: event"),
		  "%s", R.out);
	fx_rmtree(w.dir);
}

/* The block between the auditor-<name> markers in docs/evidence.md. */
static void auditor_block(const char *dst, const char *name)
{
	char doc[1024], line[4096], build[512], begin[128];
	FILE *in, *out;
	int state = 0;

	snprintf(begin, sizeof(begin), "<!-- auditor-%s:begin -->", name);
	snprintf(build, sizeof(build), "%s", getenv("STATION_BUILD"));
	snprintf(doc, sizeof(doc), "%s/docs/evidence.md", dirname(build));
	in = fopen(doc, "r");
	cr_assert_not_null(in, "cannot read %s", doc);
	out = fopen(dst, "w");
	cr_assert_not_null(out);
	while (fgets(line, sizeof(line), in)) {
		if (strstr(line, begin))
			state = 1;
		else if (state == 1 && !strncmp(line, "```sh", 5))
			state = 2;
		else if (state == 2 && !strncmp(line, "```", 3))
			state = 3;
		else if (state == 2)
			fputs(line, out);
	}
	fclose(in);
	fclose(out);
	cr_assert_eq(state, 3, "no auditor-%s block in %s", name, doc);
}

static void auditor_script(const char *dst)
{
	auditor_block(dst, "check");
}

/* Run the auditor's commands in dir; returns bash's exit status. */
static int audit_bundle(const char *script, const char *dir, char *log, size_t cap)
{
	char cmd[2048];
	FILE *p;
	size_t n;

	snprintf(cmd, sizeof(cmd), "cd '%s' && bash '%s' 2>&1", dir, script);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	n = fread(log, 1, cap - 1, p);
	log[n] = '\0';
	return pclose(p);
}

/* The extends-check of docs/evidence.md in the bundle dir, with OLD the
 * earlier bundle; returns bash's exit status. */
static int audit_extends(const char *script, const char *dir, const char *old,
			 char *log, size_t cap)
{
	char cmd[2048];
	FILE *p;
	size_t n;

	snprintf(cmd, sizeof(cmd), "cd '%s' && OLD='%s' bash '%s' 2>&1", dir, old,
		 script);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	n = fread(log, 1, cap - 1, p);
	log[n] = '\0';
	return pclose(p);
}

Test(evidence, bundle_passes_the_documented_openssl_checks, .timeout = 180)
{
	fx_world w;
	char bundle[600], script[600], cmd[2048], log[16384], cert[900];
	int rc;

	fx_world_init(&w, true, 2000);
	provision(&w, "p1", 3, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	snprintf(bundle, sizeof(bundle), "%s/bundle", w.dir);
	snprintf(script, sizeof(script), "%s/auditor.sh", w.dir);
	fx_station_run(&R, &w, "records", "export", "--evidence", bundle, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	auditor_script(script);
	rc = audit_bundle(script, bundle, log, sizeof(log));
	cr_assert_eq(rc, 0, "the documented checks failed on a good bundle:\n%s", log);
	cr_assert(strstr(log, "evidence OK"), "%s", log);

	/* a device certificate replaced: the manifest check must fail */
	snprintf(cmd, sizeof(cmd), "cp -r '%s' '%s.1' && cd '%s.1' && "
		 "f=$(ls certs/*.pem | head -1) && cp ca.pem \"$f\"", bundle, bundle, bundle);
	cr_assert_eq(system(cmd), 0);
	snprintf(cert, sizeof(cert), "%s.1", bundle);
	cr_assert_neq(audit_bundle(script, cert, log, sizeof(log)), 0,
		      "a swapped certificate passed:\n%s", log);

	/* an event changed and the manifest re-hashed: the signature fails */
	snprintf(cmd, sizeof(cmd), "cp -r '%s' '%s.2' && cd '%s.2' && "
		 "sed -i '3s/\"ok\"/\"OK\"/' events.jsonl && "
		 "sha256sum units.jsonl events.jsonl ca.pem audit.pem certs/*.pem"
		 " > manifest.sha256", bundle, bundle, bundle);
	cr_assert_eq(system(cmd), 0);
	snprintf(cert, sizeof(cert), "%s.2", bundle);
	cr_assert_neq(audit_bundle(script, cert, log, sizeof(log)), 0,
		      "a re-hashed manifest passed:\n%s", log);

	/* a store that does not verify gives no evidence */
	sql_exec(w.db, "DROP TRIGGER events_no_delete; DELETE FROM events WHERE seq = 5");
	snprintf(cert, sizeof(cert), "%s/bundle3", w.dir);
	fx_station_run(&R, &w, "records", "export", "--evidence", cert, NULL);
	cr_assert_eq(R.code, 4, "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.err, "event 5"), "%s", R.err);
	cr_assert_neq(access(cert, F_OK), 0, "a bundle was written");
	fx_rmtree(w.dir);
}

/* One audit signature per commit (records/chain.c): the signature of a
 * batch's last event covers the batch, and nothing else.  Both referees —
 * `records verify` and the auditor's step 4 run by bash and openssl (the
 * documented block with the manifest lines taken out, so the chain check
 * itself is what answers) — refuse a chain whose end waits for a
 * signature, and a signature removed so that one batch's events would
 * hang on the next batch's signature. */
Test(evidence, one_signature_per_commit_covers_its_batch_and_nothing_else, .timeout = 180)
{
	fx_world w;
	char bundle[600], script[600], step4[700], cmd[4096], log[16384], dir[700];
	long long open_seq, strip_seq, last;

	fx_world_init(&w, true, 2000);
	provision(&w, "p1", 3, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	snprintf(bundle, sizeof(bundle), "%s/bundle", w.dir);
	snprintf(script, sizeof(script), "%s/auditor.sh", w.dir);
	snprintf(step4, sizeof(step4), "%s/step4.sh", w.dir);
	fx_station_run(&R, &w, "records", "export", "--evidence", bundle, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	auditor_script(script);
	snprintf(cmd, sizeof(cmd), "grep -v manifest '%s' > '%s'", script, step4);
	cr_assert_eq(system(cmd), 0);
	cr_assert_eq(audit_bundle(step4, bundle, log, sizeof(log)), 0, "%s", log);

	/* the last unsigned event, and a signed one followed by an unsigned
	 * one (the end of a batch with a batch after it) */
	last = q_int(w.db, "SELECT max(seq) FROM events");
	open_seq = q_int(w.db, "SELECT max(seq) FROM events WHERE sig IS NULL");
	strip_seq = q_int(w.db, "SELECT min(s.seq) FROM events s JOIN events n ON "
			  "n.seq = s.seq + 1 WHERE s.sig IS NOT NULL AND n.sig IS NULL "
			  "AND s.seq > 1");
	cr_assert_gt(open_seq, 0, "no event waits for its batch's signature");
	cr_assert_lt(open_seq, last);
	cr_assert_gt(strip_seq, 1);

	/* the bundle cut after an event that waits for a signature */
	snprintf(dir, sizeof(dir), "%s.cut", bundle);
	snprintf(cmd, sizeof(cmd), "cp -r '%s' '%s' && cd '%s' && head -n %lld "
		 "events.jsonl > e && mv e events.jsonl", bundle, dir, dir, open_seq);
	cr_assert_eq(system(cmd), 0);
	cr_assert_neq(audit_bundle(step4, dir, log, sizeof(log)), 0, "a chain "
		      "ending on an unsigned event passed:\n%s", log);
	cr_assert(strstr(log, "are not signed: the signed end is missing"), "%s", log);
	/* a batch's signature removed: its events are covered by nothing */
	snprintf(dir, sizeof(dir), "%s.strip", bundle);
	snprintf(cmd, sizeof(cmd), "cp -r '%s' '%s' && cd '%s' && sed -i "
		 "'%llds/\"sig\":\"[0-9a-f]*\"/\"sig\":\"\"/' events.jsonl",
		 bundle, dir, dir, strip_seq);
	cr_assert_eq(system(cmd), 0);
	cr_assert_neq(audit_bundle(step4, dir, log, sizeof(log)), 0, "a removed "
		      "signature passed:\n%s", log);
	cr_assert(strstr(log, "are not signed"), "%s", log);

	/* the same two in the store: records verify */
	snprintf(cmd, sizeof(cmd), "sqlite3 '%s' \".backup '%s.orig'\"", w.db, w.db);
	cr_assert_eq(system(cmd), 0);
	sql_exec(w.db, "DROP TRIGGER events_no_update;");
	snprintf(cmd, sizeof(cmd), "UPDATE events SET sig = NULL WHERE seq = %lld",
		 strip_seq);
	sql_exec(w.db, cmd);
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 4, "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.out, "does not cover them"), "%s", R.out);
	snprintf(cmd, sizeof(cmd), "sqlite3 '%s' \".restore '%s.orig'\"", w.db, w.db);
	cr_assert_eq(system(cmd), 0);
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	snprintf(cmd, sizeof(cmd), "DROP TRIGGER events_no_delete; DELETE FROM events "
		 "WHERE seq > %lld", open_seq);
	sql_exec(w.db, cmd);
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 4, "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.out, "no signed event follows them"), "%s", R.out);
	fx_rmtree(w.dir);
}

Test(evidence, work_order_quota_via_cli, .timeout = 120)
{
	fx_world w;
	char *line, *save = NULL;
	int pass = 0;

	fx_world_init(&w, true, 2000);
	fx_station_run(&R, &w, "--quota", "2", "records", "workorder", "create", "WO-7", NULL);
	cr_assert_eq(R.code, 0, "%s", R.err);
	fx_station_run(&R, &w, "records", "workorder", "create", "WO-7", NULL);
	cr_assert_eq(R.code, 2, "a second WO-7: %s", R.err);
	/* the work order's event is a signed link of the chain */
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM events WHERE kind = "
			   "'workorder_create' AND sig IS NOT NULL"), 1);
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s%s", R.out, R.err);
	provision(&w, "p1", 4, "WO-7");
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	for (line = strtok_r(R.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (strstr(line, "\"result\":\"PASS\""))
			pass++;
	cr_assert_eq(pass, 2, "PASS lines: %d", pass);
	cr_assert(strstr(R.err, "quota"), "%s", R.err);
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM units"), 2, "a unit beyond the quota was started");
	fx_station_run(&R, &w, "records", "workorder", "show", "WO-7", NULL);
	cr_assert(strstr(R.out, "quota 2, 2 PASS, 0 in work"), "%s", R.out);
	fx_station_run(&R, &w, "--work-order", "WO-7", "--format", "csv", "records", "list", NULL);
	cr_assert_eq(R.code, 0);
	cr_assert_eq(strstr(R.out, "WO-7") != NULL, 1, "%s", R.out);
	/* an unknown work order stops before anything is touched */
	provision(&w, "p2", 1, "WO-none");
	cr_assert_eq(R.code, 2, "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.err, "WO-none"), "%s", R.err);
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM units"), 2);
	fx_rmtree(w.dir);
}

/* Start the station on the nsims slots of sims (none: the slots of its
 * configuration) and send it sig once `after` PASS lines were printed;
 * every PASS line it prints (before and after) adds its uid to seen
 * (space-separated).  *status: the station's wait status. */
static int signal_slots_during_burst(fx_world *w, fx_devsim *sims, int nsims,
				     int after, int sig, char *seen, size_t cap,
				     int *status)
{
	char bin[512], buf[65536], line[65536];
	const char *argv[32];
	int argc = 0, p[2], pass = 0;
	bool sent = false;
	size_t len = 0;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/station", getenv("STATION_BUILD"));
	argv[argc++] = bin;
	argv[argc++] = "--config";
	argv[argc++] = w->conf;
	argv[argc++] = "--pin-file";
	argv[argc++] = w->pinfile;
	argv[argc++] = "--json";
	argv[argc++] = "--burn-fuses";
	argv[argc++] = "--yes";
	for (int i = 0; i < nsims; i++) {
		argv[argc++] = "--slot";
		argv[argc++] = sims[i].port;
	}
	argv[argc++] = "provision";
	argv[argc] = NULL;
	cr_assert_eq(pipe(p), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(p[1], 1);
		dup2(null, 2);
		close(p[0]);
		execv(bin, (char **)argv);
		_exit(127);
	}
	close(p[1]);
	for (;;) {
		ssize_t k;
		char *nl;

		if (!sent && pass >= after) {
			kill(pid, sig);
			sent = true;
		}
		k = read(p[0], buf + len, sizeof(buf) - 1 - len);
		if (k <= 0)
			break;
		len += (size_t)k;
		buf[len] = '\0';
		while ((nl = strchr(buf, '\n'))) {
			json_error_t je;
			json_t *o;

			*nl = '\0';
			snprintf(line, sizeof(line), "%s", buf);
			memmove(buf, nl + 1, len - (size_t)(nl + 1 - buf) + 1);
			len = strlen(buf);
			o = json_loads(line, 0, &je);
			if (o && !strcmp(json_string_value(json_object_get(o, "event")) ?: "", "unit") &&
			    !strcmp(json_string_value(json_object_get(o, "result")) ?: "", "PASS")) {
				strncat(seen, json_string_value(json_object_get(o, "uid")),
					cap - strlen(seen) - 2);
				strncat(seen, " ", cap - strlen(seen) - 1);
				pass++;
			}
			json_decref(o);
		}
	}
	close(p[0]);
	waitpid(pid, status, 0);
	cr_assert(sent, "the station ended before the signal (after %d PASS)", pass);
	return pass;
}

/* signal_slots_during_burst on the three slots of sims. */
static int signal_during_burst(fx_world *w, fx_devsim *sims, int after, int sig,
			       char *seen, size_t cap, int *status)
{
	return signal_slots_during_burst(w, sims, 3, after, sig, seen, cap, status);
}

static int kill_during_burst(fx_world *w, fx_devsim *sims, int after,
			     char *seen, size_t cap)
{
	int status, pass = signal_during_burst(w, sims, after, SIGKILL, seen, cap,
					       &status);

	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		  "the station ended before the kill (after %d PASS)", pass);
	return pass;
}

Test(evidence, sigkill_during_bursts_keeps_every_reported_pass, .timeout = 300)
{
	static const int kill_after[] = { 1, 9, 25 };
	fx_world w;
	fx_devsim sims[3];
	char seen[16384] = "", *uid, *save = NULL, sql[256];
	int total = 0;

	fx_world_init(&w, true, 2000);
	for (size_t k = 0; k < ST_ARRAY_SIZE(kill_after); k++) {
		for (int i = 0; i < 3; i++) {
			char name[16], seed[32];

			snprintf(name, sizeof(name), "p%d", i);
			snprintf(seed, sizeof(seed), "--seed s%d", i);
			cr_assert_eq(fx_devsim_start(&sims[i], w.dir, name, 40, seed), 0);
		}
		total += kill_during_burst(&w, sims, kill_after[k], seen, sizeof(seen));
		for (int i = 0; i < 3; i++)
			fx_devsim_stop(&sims[i]);
		/* the store opens and verifies after every kill */
		fx_station_run(&R, &w, "--ca-cert", w.ca, "records", "verify", NULL);
		cr_assert_eq(R.code, 0, "after kill %zu: %s\n%s", k, R.out, R.err);
	}
	cr_assert_geq(total, 35);
	/* every unit that was reported PASS is PASS on record */
	for (uid = strtok_r(seen, " ", &save); uid; uid = strtok_r(NULL, " ", &save)) {
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM units WHERE uid = '%s'"
			 " AND state = 'PASS'", uid);
		cr_assert_eq(q_int(w.db, sql), 1, "reported PASS %s is not on record", uid);
	}
	fx_rmtree(w.dir);
}

/* A gang programmer (issue 22): 32 sites of one simulator process, the
 * slots in station.conf, SIGKILL once 24 units were announced PASS (with
 * the other slots' units in flight, their lazy steps in the record
 * writer's open batch and its WAL sync under way).  Every unit announced
 * PASS on the machine-readable output is PASS on record, nothing is PASS
 * that was not announced, and the store verifies. */
#define KGANG_SLOTS 32
#define KGANG_UNITS 4

Test(evidence, sigkill_during_a_32_slot_gang_run_keeps_every_reported_pass,
     .timeout = 600)
{
	fx_world w;
	fx_devsim g;
	char seen[65536] = "", *uid, *save = NULL, sql[256];
	int status, pass, n = 0;
	FILE *f;

	fx_world_init(&w, true, 20000);
	cr_assert_eq(fx_devsim_start_gang(&g, w.dir, "gang", KGANG_SLOTS,
					  KGANG_UNITS, "--seed K"), 0);
	f = fopen(w.conf, "a");
	cr_assert(f);
	fprintf(f, "slots = (\n");
	for (int i = 1; i <= KGANG_SLOTS; i++)
		fprintf(f, "  { port = \"%s.%d\"; }%s\n", g.port, i,
			i < KGANG_SLOTS ? "," : "");
	fprintf(f, ");\n");
	cr_assert_eq(fclose(f), 0);
	pass = signal_slots_during_burst(&w, NULL, 0, 24, SIGKILL, seen,
					 sizeof(seen), &status);
	fx_devsim_stop(&g);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		  "the station ended before the kill (after %d PASS)", pass);
	cr_assert_lt(pass, KGANG_SLOTS * KGANG_UNITS,
		     "every unit was done before the kill");
	for (uid = strtok_r(seen, " ", &save); uid; uid = strtok_r(NULL, " ", &save)) {
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM units WHERE uid = '%s'"
			 " AND state = 'PASS'", uid);
		cr_assert_eq(q_int(w.db, sql), 1, "reported PASS %s is not on record", uid);
		n++;
	}
	cr_assert_eq(n, pass);
	cr_assert_geq(pass, 24);
	/* a PASS on record was announced (or was being, when the kill came:
	 * its end committed, its line not yet printed) */
	cr_assert_leq(q_int(w.db, "SELECT count(*) FROM units WHERE state = 'PASS'"),
		      pass + KGANG_SLOTS);
	fx_station_run(&R, &w, "--ca-cert", w.ca, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	fx_rmtree(w.dir);
}

/* SIGTERM (and SIGINT, SIGHUP) is a clean stop: the units in work finish,
 * no new one starts, the run ends with its records complete. */
Test(evidence, sigterm_finishes_the_units_in_work_and_stops, .timeout = 300)
{
	fx_world w;
	fx_devsim sims[3];
	char seen[16384] = "", *uid, *save = NULL, sql[256];
	int status, pass;

	fx_world_init(&w, true, 2000);
	for (int i = 0; i < 3; i++) {
		char name[16], seed[32];

		snprintf(name, sizeof(name), "p%d", i);
		snprintf(seed, sizeof(seed), "--seed t%d", i);
		cr_assert_eq(fx_devsim_start(&sims[i], w.dir, name, 40, seed), 0);
	}
	pass = signal_during_burst(&w, sims, 3, SIGTERM, seen, sizeof(seen), &status);
	for (int i = 0; i < 3; i++)
		fx_devsim_stop(&sims[i]);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the station did not end by itself with 0 (status 0x%x)", status);
	cr_assert_lt(pass, 120, "it did not stop: all %d units were provisioned", pass);
	/* nothing was cut off: no unit left RUNNING, every PASS printed is on
	 * record and nothing else is, and the run's stop is recorded */
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM units WHERE state = 'RUNNING'"), 0);
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM units WHERE state = 'PASS'"), pass);
	for (uid = strtok_r(seen, " ", &save); uid; uid = strtok_r(NULL, " ", &save)) {
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM units WHERE uid = '%s'"
			 " AND state = 'PASS'", uid);
		cr_assert_eq(q_int(w.db, sql), 1, "reported PASS %s is not on record", uid);
	}
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM events WHERE kind = 'station_stop'"), 1);
	fx_station_run(&R, &w, "--ca-cert", w.ca, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	fx_rmtree(w.dir);
}

Test(evidence, full_disk_stops_provisioning_and_loses_nothing, .timeout = 180)
{
	fx_world w;
	fx_devsim sim;
	char *line, *save = NULL, sql[256];
	struct stat sb;
	long long before;
	int reported = 0;

	fx_world_init(&w, true, 2000);
	provision(&w, "p0", 2, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	before = q_int(w.db, "SELECT count(*) FROM units WHERE state = 'PASS'");
	cr_assert_eq(before, 2);
	/* no file may grow past 1 MiB: the WAL fills during the run */
	cr_assert_eq(stat(w.db, &sb), 0);
	cr_assert_lt(sb.st_size, 512 * 1024);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "p1", 60, "--seed full"), 0);
	fx_station_run_limited(&R, &w, 1024 * 1024, "--json", "--burn-fuses", "--yes",
			       "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(R.code, 4, "exit %d\n%s\n%s", R.code, R.out, R.err);
	cr_assert(strstr(R.out, "record") || strstr(R.err, "record"), "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.out, "disk I/O error") || strstr(R.out, "File too large") ||
		  strstr(R.out, "full"), "no cause given: %s\n%s", R.out, R.err);
	/* Where the limit bites depends on how much each unit writes: at a
	 * unit's start (nothing done to it) or at its end (NOT passed). */
	cr_assert(strstr(R.out, "NOT passed") || strstr(R.out, "nothing was done to the unit"),
		  "%s", R.out);
	/* nothing recorded is lost; every reported PASS is on record */
	for (line = strtok_r(R.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_error_t je;
		json_t *o = json_loads(line, 0, &je);

		if (o && !strcmp(json_string_value(json_object_get(o, "result")) ?: "", "PASS")) {
			snprintf(sql, sizeof(sql), "SELECT count(*) FROM units WHERE uid"
				 " = '%s' AND state = 'PASS'",
				 json_string_value(json_object_get(o, "uid")));
			cr_assert_eq(q_int(w.db, sql), 1);
			reported++;
		}
		json_decref(o);
	}
	cr_assert_lt(reported, 60, "the limit never bit");
	cr_assert_gt(reported, 0, "the limit bit before any unit");
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM units WHERE state = 'PASS'"),
		     before + reported);
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	fx_rmtree(w.dir);
}

Test(evidence, read_only_store_stops_provisioning_and_loses_nothing, .timeout = 120)
{
	fx_world w;
	fx_devsim sim;
	char cmd[1024];
	long long before;

	fx_world_init(&w, true, 2000);
	provision(&w, "p0", 2, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	before = q_int(w.db, "SELECT count(*) FROM events");
	/* root ignores file modes; the immutable attribute binds root too */
	snprintf(cmd, sizeof(cmd), "chattr +i '%s'", w.db);
	cr_assert_eq(system(cmd), 0, "chattr +i failed (needs e2fsprogs and a "
		     "filesystem with attributes under /tmp)");
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "p1", 2, "--seed ro"), 0);
	fx_station_run(&R, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	snprintf(cmd, sizeof(cmd), "chattr -i '%s'", w.db);
	cr_assert_eq(system(cmd), 0);
	cr_assert_eq(R.code, 4, "exit %d\n%s\n%s", R.code, R.out, R.err);
	cr_assert(strstr(R.err, "read-only"), "%s", R.err);
	cr_assert_null(strstr(R.out, "PASS"), "%s", R.out);
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM events"), before);
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM units"), 2);
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	fx_rmtree(w.dir);
}

Test(evidence, audit_init_makes_a_ca_certified_key_once, .timeout = 120)
{
	fx_world w;
	char pem[600], cmd[2048];

	fx_world_init(&w, true, 2000);
	snprintf(pem, sizeof(pem), "%s/audit.pem", w.dir);
	fx_station_run(&R, &w, "audit", "init", "--out", pem, NULL);
	cr_assert_eq(R.code, 0, "%s", R.err);
	snprintf(cmd, sizeof(cmd), "openssl verify -CAfile '%s' '%s' >/dev/null", w.ca, pem);
	cr_assert_eq(system(cmd), 0, "the audit certificate does not chain to the CA");
	fx_station_run(&R, &w, "audit", "init", NULL);
	cr_assert_eq(R.code, 3, "%s", R.err);
	cr_assert(strstr(R.err, "already exists"), "%s", R.err);
	/* provisioning uses that key: the stored certificate is the same */
	provision(&w, "p1", 1, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	snprintf(cmd, sizeof(cmd), "sqlite3 '%s' 'SELECT pem FROM audit_certs' | "
		 "openssl x509 -noout -fingerprint -sha256 > '%s/a.fp' && openssl x509 "
		 "-in '%s' -noout -fingerprint -sha256 | cmp - '%s/a.fp'", w.db, w.dir,
		 pem, w.dir);
	cr_assert_eq(system(cmd), 0, "provisioning signed with another key");
	fx_rmtree(w.dir);
}

/* Every column of the units and steps tables (as the schema lists them
 * now, so a column added later is tried too) is covered by the signed
 * events: a changed value — a start time that hides a unit from a
 * --since/--until bundle, a slot, a port, a profile, ... — fails verify
 * naming the unit and the column, and no bundle is exported. */
Test(evidence, every_changed_unit_or_step_column_is_named, .timeout = 240)
{
	static const char *const tables[] = { "units", "steps" };
	fx_world w;
	char clean[600], cmd[2048], want[256], names[4096];
	int tried = 0;

	fx_world_init(&w, true, 2000);
	provision(&w, "p1", 2, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	snprintf(clean, sizeof(clean), "%s/clean.db", w.dir);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", w.db, clean);
	cr_assert_eq(system(cmd), 0);
	for (size_t t = 0; t < ST_ARRAY_SIZE(tables); t++) {
		char sql[256], *name, *save = NULL;

		snprintf(sql, sizeof(sql), "SELECT group_concat(name, ' ') FROM "
			 "pragma_table_info('%s')", tables[t]);
		fx_q_text(&w, sql, names, sizeof(names));
		cr_assert_gt(strlen(names), 10, "%s", names);
		for (name = strtok_r(names, " ", &save); name;
		     name = strtok_r(NULL, " ", &save)) {
			const char *val = !strcmp(name, "started_at") || !strcmp(name, "at") ||
					  !strcmp(name, "finished_at") ?
					  "'2000-01-01T00:00:00.000Z'" :
					  !strcmp(name, "state") ? "'FAIL'" :
					  !strcmp(name, "outcome") ? "'skip'" :
					  !strcmp(name, "slot") || !strcmp(name, "seq") ? "77" :
					  !strcmp(name, "id") || !strcmp(name, "unit_id") ? "99" :
					  "'forged'";

			if (!strcmp(tables[t], "steps") && !strcmp(name, "id"))
				continue;       /* the row key: nothing reads it */
			snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", clean, w.db);
			cr_assert_eq(system(cmd), 0);
			snprintf(sql, sizeof(sql), "DROP TRIGGER units_final;"
				 "UPDATE %s SET %s = %s WHERE %s", tables[t], name, val,
				 !strcmp(tables[t], "units") ? "id = 1" :
				 "unit_id = 1 AND seq = 2");
			sql_exec(w.db, sql);
			fx_station_run(&R, &w, "records", "verify", NULL);
			cr_assert_eq(R.code, 4, "%s.%s changed, verify says: %s%s",
				     tables[t], name, R.out, R.err);
			if (!strcmp(name, "id") || !strcmp(name, "unit_id") ||
			    !strcmp(name, "seq")) {
				/* a key: the event's row is gone, or the row
				 * is another unit's now, or none's */
				cr_assert(strstr(R.out, "TAMPERED: ") &&
					  strstr(R.out, "unit ") && strstr(R.out, ", device "),
					  "%s", R.out);
			} else {
				snprintf(want, sizeof(want), "column %s of table %s",
					 name, tables[t]);
				cr_assert(strstr(R.out, want), "%s.%s: %s", tables[t],
					  name, R.out);
				cr_assert(strstr(R.out, !strcmp(tables[t], "units") ?
						 "of unit 1, device " :
						 "step 2 of unit 1, device "),
					  "%s.%s: the unit is not named: %s", tables[t],
					  name, R.out);
			}
			tried++;
		}
	}
	cr_assert_geq(tried, 24, "only %d columns tried", tried);
	/* the forged start time would hide unit 1 from a dated bundle: the
	 * export refuses the store instead */
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", clean, w.db);
	cr_assert_eq(system(cmd), 0);
	sql_exec(w.db, "DROP TRIGGER units_final; UPDATE units SET started_at ="
		 " '2000-01-01T00:00:00.000Z' WHERE id = 1");
	snprintf(cmd, sizeof(cmd), "%s/dated", w.dir);
	fx_station_run(&R, &w, "--since", "2001-01-01", "records", "export",
		       "--evidence", cmd, NULL);
	cr_assert_eq(R.code, 4, "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.err, "column started_at of table units"), "%s", R.err);
	cr_assert_neq(access(cmd, F_OK), 0, "a bundle was written");
	fx_rmtree(w.dir);
}

/* A column nobody signed (added to the schema without putting its value
 * in the event data) fails loudly instead of being skipped, and so does a
 * table verify does not know. */
Test(evidence, an_uncovered_column_or_table_fails_loudly, .timeout = 120)
{
	fx_world w;

	fx_world_init(&w, true, 2000);
	provision(&w, "p1", 1, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	sql_exec(w.db, "ALTER TABLE units ADD COLUMN batch TEXT");
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "an empty new column: %s%s", R.out, R.err);
	sql_exec(w.db, "DROP TRIGGER units_final; UPDATE units SET batch = 'B7'");
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 4, "%s%s", R.out, R.err);
	cr_assert(strstr(R.out, "column batch of table units is not covered by any "
			 "event"), "%s", R.out);
	sql_exec(w.db, "UPDATE units SET batch = NULL; CREATE TABLE notes (t TEXT)");
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 4, "%s%s", R.out, R.err);
	cr_assert(strstr(R.out, "table notes is not covered by any event"), "%s", R.out);
	fx_rmtree(w.dir);
}

/* The first bad record is named once: "first bad record: event 5 is
 * missing ...", not "event 5: event 5 is missing ...". */
Test(evidence, the_first_bad_record_is_named_once, .timeout = 120)
{
	fx_world w;
	char want[1024];

	fx_world_init(&w, true, 2000);
	provision(&w, "p1", 1, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	sql_exec(w.db, "DROP TRIGGER events_no_delete; DELETE FROM events WHERE seq = 5");
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 4, "%s%s", R.out, R.err);
	snprintf(want, sizeof(want), "records TAMPERED: %s: first bad record: event 5 "
		 "is missing (the next stored is 6): events were deleted\n", w.db);
	cr_assert_str_eq(R.out, want);
	fx_rmtree(w.dir);
}

/* The checkpoint a --json run prints: its file. */
static void run_checkpoint_file(const char *out, char *file, size_t cap,
				long long *seq)
{
	json_t *a = fx_json_events(out, "summary"), *cp;

	cr_assert_eq(json_array_size(a), 1, "%s", out);
	cp = json_object_get(json_array_get(a, 0), "checkpoint");
	cr_assert(json_is_object(cp), "no checkpoint in the summary: %s", out);
	snprintf(file, cap, "%s", json_string_value(json_object_get(cp, "file")));
	*seq = json_integer_value(json_object_get(cp, "seq"));
	cr_assert_gt(*seq, 0);
	cr_assert_eq(strlen(json_string_value(json_object_get(cp, "head_hash"))), 64);
	json_decref(a);
}

/* Cutting the last run off the chain (its events, steps and unit rows,
 * made consistent) passes plain verify, as before; a checkpoint taken
 * before the cut catches it, with openssl alone too, and a bundle
 * exported after the cut fails the documented extends-check against an
 * earlier bundle (a bundle exported without a cut passes it). */
Test(evidence, a_cut_tail_is_caught_by_an_earlier_checkpoint, .timeout = 240)
{
	fx_world w;
	char cp1[600], cp2[600], b1[600], b2[600], b3[600], cmd[4096], log[16384];
	char check[600], extends[600], dir[600];
	long long s1, s2;

	fx_world_init(&w, true, 2000);
	snprintf(check, sizeof(check), "%s/auditor.sh", w.dir);
	snprintf(extends, sizeof(extends), "%s/extends.sh", w.dir);
	auditor_script(check);
	auditor_block(extends, "extends");

	provision(&w, "p1", 2, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	run_checkpoint_file(R.out, cp1, sizeof(cp1), &s1);
	cr_assert_eq(s1, fx_q_int(&w, "SELECT max(seq) FROM events"));
	/* the file is checked by openssl alone, with the certificate beside it */
	snprintf(dir, sizeof(dir), "%s", cp1);
	*strrchr(dir, '/') = '\0';
	snprintf(cmd, sizeof(cmd), "cd '%s' && openssl x509 -in audit-*.pem -noout "
		 "-pubkey > /tmp/cp-$$.pub && openssl dgst -sha256 -verify "
		 "/tmp/cp-$$.pub -signature '%.*s.sig' '%s'; rc=$?; rm -f "
		 "/tmp/cp-$$.pub; exit $rc", dir, (int)(strlen(cp1) - 5), cp1, cp1);
	cr_assert_eq(system(cmd), 0, "openssl does not verify %s", cp1);
	snprintf(b1, sizeof(b1), "%s/b1", w.dir);
	fx_station_run(&R, &w, "records", "export", "--evidence", b1, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);

	provision(&w, "p2", 1, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	run_checkpoint_file(R.out, cp2, sizeof(cp2), &s2);
	cr_assert_gt(s2, s1);
	fx_station_run(&R, &w, "--checkpoint", cp2, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.out, "checkpoint OK"), "%s", R.out);
	snprintf(b2, sizeof(b2), "%s/b2", w.dir);
	fx_station_run(&R, &w, "records", "export", "--evidence", b2, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	cr_assert_eq(audit_bundle(check, b2, log, sizeof(log)), 0, "%s", log);
	cr_assert_eq(audit_extends(extends, b2, b1, log, sizeof(log)), 0,
		     "a grown chain does not extend the older bundle:\n%s", log);

	/* cut the second run off: its events and the rows it made */
	snprintf(cmd, sizeof(cmd), "DROP TRIGGER events_no_delete;"
		 " DROP TRIGGER units_no_delete; DELETE FROM events WHERE seq > %lld;"
		 " DELETE FROM steps WHERE unit_id = 3; DELETE FROM units WHERE id = 3",
		 s1);
	sql_exec(w.db, cmd);
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "the documented limit of plain verify: %s\n%s",
		     R.out, R.err);
	fx_station_run(&R, &w, "--checkpoint", cp1, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	fx_station_run(&R, &w, "--checkpoint", cp2, "records", "verify", NULL);
	cr_assert_eq(R.code, 4, "%s\n%s", R.out, R.err);
	snprintf(cmd, sizeof(cmd), "the chain ends at event %lld, but the "
		 "checkpoint of ", s1);
	cr_assert(strstr(R.out, cmd), "%s", R.out);
	snprintf(cmd, sizeof(cmd), "events %lld..%lld were cut off its end", s1 + 1, s2);
	cr_assert(strstr(R.out, cmd), "%s", R.out);

	/* the bundle made after the cut is consistent by itself, and does not
	 * extend the one made before it */
	snprintf(b3, sizeof(b3), "%s/b3", w.dir);
	fx_station_run(&R, &w, "records", "export", "--evidence", b3, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	cr_assert_eq(audit_bundle(check, b3, log, sizeof(log)), 0, "%s", log);
	cr_assert_neq(audit_extends(extends, b3, b2, log, sizeof(log)), 0,
		      "a cut chain passed the extends-check:\n%s", log);
	/* and a rewritten tail (other events where the cut ones were) fails
	 * too; its own checkpoint does not replace the kept one */
	{
		fx_devsim sim;

		cr_assert_eq(fx_devsim_start(&sim, w.dir, "p3", 3, "--seed cut3"), 0);
		fx_station_run(&R, &w, "--json", "--burn-fuses", "--yes", "--slot", sim.port,
			       "provision", NULL);
		fx_devsim_stop(&sim);
	}
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	cr_assert_gt(fx_q_int(&w, "SELECT max(seq) FROM events"), s2);
	fx_station_run(&R, &w, "--checkpoint", cp2, "records", "verify", NULL);
	cr_assert_eq(R.code, 4, "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.out, "replaced or rewritten"), "%s", R.out);
	fx_rmtree(w.dir);
}

/* A PIN given in the environment leaves no trace in /proc/PID/environ of
 * the running station once read: not its value, not the variable's name,
 * not a run of NULs as long as it where the entry was (the variables
 * around it are still there and now adjacent). */
Test(evidence, pin_from_the_environment_leaves_no_trace_in_proc_environ, .timeout = 120)
{
	extern char **environ;
	static char blk[65536];
	fx_world w;
	fx_devsim sim;
	char bin[512], path[64], pinvar[64] = "STATION_PIN=" FX_PIN;
	const char *argv[16], *envp[512];
	size_t n = 0, len = 0, ne = 0;
	pid_t pid;
	int fd, status;

	fx_world_init(&w, true, 60000);
	/* a programmer that never answers: the station waits on it */
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "mute", 1, "--fault mute"), 0);
	snprintf(bin, sizeof(bin), "%s/station", getenv("STATION_BUILD"));
	argv[n++] = bin;
	argv[n++] = "--config";
	argv[n++] = w.conf;
	argv[n++] = "--slot";
	argv[n++] = sim.port;
	argv[n++] = "provision";
	argv[n] = NULL;
	envp[ne++] = "A_BEFORE=1";
	envp[ne++] = pinvar;
	for (char **e = environ; *e && ne < 500; e++)
		if (strncmp(*e, "STATION_PIN=", 12))
			envp[ne++] = *e;
	envp[ne++] = "Z_AFTER=2";
	envp[ne] = NULL;
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		dup2(null, 2);
		execve(bin, (char **)argv, (char **)envp);
		_exit(127);
	}
	/* logged in and started once its start is on record */
	for (int i = 0; i < 300 && (access(w.db, F_OK) ||
				    q_int(w.db, "SELECT count(*) FROM sqlite_master WHERE "
					  "name = 'events'") < 1 ||
				    q_int(w.db, "SELECT count(*) FROM events WHERE "
					  "kind = 'station_start'") < 1); i++)
		usleep(100000);
	cr_assert_eq(kill(pid, 0), 0, "the station is not running");
	snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
	fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	for (ssize_t k; (k = read(fd, blk + len, sizeof(blk) - 1 - len)) > 0;)
		len += (size_t)k;
	close(fd);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	fx_devsim_stop(&sim);
	cr_assert_gt(len, 0);
	cr_assert_null(memmem(blk, len, "STATION_PIN", 11), "the name is still there");
	cr_assert_null(memmem(blk, len, FX_PIN, strlen(FX_PIN)), "the PIN is still there");
	/* the entries are contiguous: A_BEFORE=1 is now followed by the next
	 * variable, and no two NULs meet before the block's end */
	{
		const char *a = memmem(blk, len, "A_BEFORE=1", 11);
		size_t last = len;

		cr_assert_not_null(a, "A_BEFORE is gone");
		cr_assert_neq(a[11], '\0', "a hole where STATION_PIN was");
		cr_assert_not_null(memmem(blk, len, "Z_AFTER=2", 10), "Z_AFTER is gone");
		while (last > 0 && blk[last - 1] == '\0')
			last--;
		for (size_t i = 1; i < last; i++)
			cr_assert(blk[i] || blk[i - 1], "a run of NULs at byte %zu", i);
	}
	fx_rmtree(w.dir);
}

/* ---- a log re-signed with a device key (issue 17, item 1) ---- */

/* SHA-256 of the DER of the PEM certificate pem, hex. */
static void pem_fp(const char *pem, char out[65])
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	unsigned char *der = NULL, dig[32];
	int n;

	cr_assert_not_null(x, "not a certificate: %s", pem);
	n = i2d_X509(x, &der);
	cr_assert_gt(n, 0);
	SHA256(der, (size_t)n, dig);
	st_hex(dig, sizeof(dig), out);
	OPENSSL_free(der);
	X509_free(x);
	BIO_free(b);
}

/* Re-sign one event body as an attacker holding key would: "key" names
 * the certificate keyfp, "prev" links to prev, a step's detail is changed
 * when it is the step with data.seq == change_seq of unit change_unit.
 * body_out gets the canonical body, hash its SHA-256, sig the hex DER
 * ECDSA signature. */
static void forge_body(const char *body, const char *prev, const char *keyfp,
		       EVP_PKEY *key, long long change_unit, long long change_seq,
		       char **body_out, char hash[65], char **sig)
{
	json_error_t je;
	json_t *o = json_loads(body, 0, &je);
	json_t *data = json_object_get(o, "data");
	unsigned char dig[32], der[128];
	size_t dlen = sizeof(der);
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	cr_assert_not_null(o, "%s", je.text);
	json_object_set_new(o, "key", json_string(keyfp));
	json_object_set_new(o, "prev", json_string(prev));
	/* the attacker's audit "certificate" is announced like a real one */
	if (!strcmp(json_string_value(json_object_get(o, "kind")), "audit_key"))
		json_object_set_new(data, "cert_sha256", json_string(keyfp));
	if (!strcmp(json_string_value(json_object_get(o, "kind")), "step") &&
	    json_integer_value(json_object_get(o, "unit")) == change_unit &&
	    json_integer_value(json_object_get(data, "seq")) == change_seq)
		json_object_set_new(data, "detail", json_string("forged by the test"));
	*body_out = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
	cr_assert_not_null(*body_out);
	SHA256((const unsigned char *)*body_out, strlen(*body_out), dig);
	st_hex(dig, sizeof(dig), hash);
	cr_assert(md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
		  EVP_DigestSign(md, der, &dlen, (const unsigned char *)*body_out,
				 strlen(*body_out)) == 1);
	*sig = malloc(2 * dlen + 1);
	cr_assert_not_null(*sig);
	st_hex(der, dlen, *sig);
	EVP_MD_CTX_free(md);
	json_decref(o);
}

/* Forge the store: the device certificate replaces audit_certs, the
 * step (unit 1, seq 1) gets another detail in its row and its event, and
 * the whole chain is re-signed with the device key. */
static void forge_store(const char *db, const char *devcert, EVP_PKEY *key)
{
	char fp[65], prev[65], hash[65], *body, *sig;
	sqlite3 *d = NULL;
	sqlite3_stmt *s = NULL, *u = NULL;

	pem_fp(devcert, fp);
	memset(prev, '0', 64);
	prev[64] = '\0';
	sql_exec(db, "DROP TRIGGER events_no_update");
	/* every row is covered by a signed event (docs/records.md): the
	 * device certificate replaces the audit certificate, as its event
	 * will announce it */
	sql_exec(db, "DELETE FROM audit_certs");
	cr_assert_eq(sqlite3_open(db, &d), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(d, "INSERT INTO audit_certs (sha256, pem, added_at) "
					"VALUES (?1, ?2, '2026-01-01T00:00:00Z')", -1, &s, NULL), SQLITE_OK,
		     "%s", sqlite3_errmsg(d));
	sqlite3_bind_text(s, 1, fp, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 2, devcert, -1, SQLITE_TRANSIENT);
	cr_assert_eq(sqlite3_step(s), SQLITE_DONE, "%s", sqlite3_errmsg(d));
	sqlite3_finalize(s);
	cr_assert_eq(sqlite3_exec(d, "BEGIN; UPDATE steps SET detail = 'forged by the "
				  "test' WHERE unit_id = 1 AND seq = 1", NULL, NULL,
				  NULL), SQLITE_OK, "%s", sqlite3_errmsg(d));
	cr_assert_eq(sqlite3_changes(d), 1);
	cr_assert_eq(sqlite3_prepare_v2(d, "SELECT seq, body FROM events ORDER BY seq",
					-1, &s, NULL), SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(d, "UPDATE events SET body = ?1, hash = ?2, "
					"sig = ?3 WHERE seq = ?4", -1, &u, NULL), SQLITE_OK);
	while (sqlite3_step(s) == SQLITE_ROW) {
		forge_body((const char *)sqlite3_column_text(s, 1), prev, fp, key, 1, 1,
			   &body, hash, &sig);
		sqlite3_bind_text(u, 1, body, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(u, 2, hash, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(u, 3, sig, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(u, 4, sqlite3_column_int64(s, 0));
		cr_assert_eq(sqlite3_step(u), SQLITE_DONE, "%s", sqlite3_errmsg(d));
		sqlite3_reset(u);
		memcpy(prev, hash, sizeof(prev));
		free(body);
		free(sig);
	}
	sqlite3_finalize(s);
	sqlite3_finalize(u);
	cr_assert_eq(sqlite3_exec(d, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(d);
}

/* Forge an exported bundle the same way: audit.pem becomes the device
 * certificate, events.jsonl is re-signed, the manifest re-hashed and
 * signed with the device key (keyfile, PEM). */
static void forge_bundle(const char *dir, const char *devcert, EVP_PKEY *key,
			 const char *keyfile)
{
	char path[700], fp[65], prev[65], hash[65], *body, *sig, line[65536], cmd[4096];
	FILE *in, *out;

	pem_fp(devcert, fp);
	memset(prev, '0', 64);
	prev[64] = '\0';
	snprintf(path, sizeof(path), "%s/audit.pem", dir);
	fx_write_file(path, devcert);
	snprintf(path, sizeof(path), "%s/events.jsonl", dir);
	in = fopen(path, "r");
	cr_assert_not_null(in);
	snprintf(path, sizeof(path), "%s/events.new", dir);
	out = fopen(path, "w");
	cr_assert_not_null(out);
	while (fgets(line, sizeof(line), in)) {
		json_error_t je;
		json_t *o = json_loads(line, 0, &je);
		char *b = json_dumps(json_object_get(o, "body"), JSON_COMPACT |
				     JSON_SORT_KEYS | JSON_ENSURE_ASCII);

		cr_assert_not_null(b, "%s", je.text);
		forge_body(b, prev, fp, key, 1, 1, &body, hash, &sig);
		fprintf(out, "{\"seq\":%lld,\"hash\":\"%s\",\"sig\":\"%s\",\"body\":%s}\n",
			(long long)json_integer_value(json_object_get(o, "seq")), hash,
			sig, body);
		memcpy(prev, hash, sizeof(prev));
		free(b);
		free(body);
		free(sig);
		json_decref(o);
	}
	fclose(in);
	fclose(out);
	/* the checkpoint names the forged head and "audit" certificate and
	 * is signed with the device key too */
	snprintf(path, sizeof(path), "%s/checkpoint.json", dir);
	{
		json_error_t je;
		json_t *cp = json_load_file(path, 0, &je);
		char *text;

		cr_assert_not_null(cp, "%s", je.text);
		json_object_set_new(cp, "head_hash", json_string(prev));
		json_object_set_new(cp, "audit_cert_sha256", json_string(fp));
		text = json_dumps(cp, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
		cr_assert_not_null(text);
		fx_write_file(path, text);
		free(text);
		json_decref(cp);
	}
	/* every file the manifest listed, hashed again, signed again */
	snprintf(cmd, sizeof(cmd), "cd '%s' && mv events.new events.jsonl && "
		 "openssl dgst -sha256 -sign '%s' -out checkpoint.sig checkpoint.json && "
		 "cut -c67- manifest.sha256 | xargs sha256sum > manifest.new && "
		 "mv manifest.new manifest.sha256 && openssl dgst -sha256 -sign '%s' "
		 "-out manifest.sig manifest.sha256", dir, keyfile, keyfile);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

Test(evidence, a_log_resigned_with_a_device_key_is_refused, .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	char bundle[600], forged[600], script[600], keyfile[600], cmd[2048],
	     log[16384], uid[80], devcert[8192];
	const char *pem;
	rec_verify_result v;
	rec_store *r = NULL;
	json_t *dev;
	EVP_PKEY *key;
	BIO *b;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "p1", 2, NULL), 0);
	fx_station_run(&R, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	snprintf(bundle, sizeof(bundle), "%s/bundle", w.dir);
	fx_station_run(&R, &w, "records", "export", "--evidence", bundle, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);

	/* one extracted device: its key (the simulator keeps it in its state
	 * file) and the certificate the station's CA issued for it */
	fx_q_text(&w, "SELECT uid FROM units WHERE id = 1", uid, sizeof(uid));
	fx_q_text(&w, "SELECT cert_pem FROM units WHERE id = 1", devcert, sizeof(devcert));
	cr_assert(strstr(devcert, "BEGIN CERTIFICATE"), "%s", devcert);
	dev = fx_sim_unit(sim.state_path, uid);
	cr_assert_not_null(dev);
	pem = json_string_value(json_object_get(dev, "privkey_pem"));
	cr_assert_not_null(pem);
	snprintf(keyfile, sizeof(keyfile), "%s/device.key", w.dir);
	fx_write_file(keyfile, pem);
	b = BIO_new_mem_buf(pem, -1);
	key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	json_decref(dev);
	cr_assert_not_null(key);

	forge_store(w.db, devcert, key);
	/* the forgery is complete: the chain, every signature and every row
	 * check out; only what the certificate is gives it away */
	cr_assert_eq(rec_open(w.db, &r), ST_OK);
	cr_assert_eq(rec_verify(r, NULL, NULL, &v), ST_OK, "%s", rec_errmsg(r));
	rec_close(r);
	fx_station_run(&R, &w, "--ca-cert", w.ca, "records", "verify", NULL);
	cr_assert_eq(R.code, 4, "a forged log passed --ca-cert: %s\n%s", R.out, R.err);
	cr_assert(strstr(R.out, "TAMPERED") && strstr(R.out, "not an audit certificate") &&
		  strstr(R.out, "extendedKeyUsage"), "%s", R.out);
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 4, "a forged log passed: %s\n%s", R.out, R.err);
	cr_assert(strstr(R.out, "not an audit certificate"), "%s", R.out);
	snprintf(forged, sizeof(forged), "%s/from-forged-store", w.dir);
	fx_station_run(&R, &w, "records", "export", "--evidence", forged, NULL);
	cr_assert_eq(R.code, 4, "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.err, "not an audit certificate"), "%s", R.err);

	/* the bundle forged the same way: the documented checks refuse it,
	 * and without the audit-usage check they would not have */
	snprintf(forged, sizeof(forged), "%s/forged", w.dir);
	snprintf(cmd, sizeof(cmd), "cp -r '%s' '%s'", bundle, forged);
	cr_assert_eq(system(cmd), 0);
	forge_bundle(forged, devcert, key, keyfile);
	snprintf(script, sizeof(script), "%s/auditor.sh", w.dir);
	auditor_script(script);
	cr_assert_eq(audit_bundle(script, bundle, log, sizeof(log)), 0, "%s", log);
	cr_assert_neq(audit_bundle(script, forged, log, sizeof(log)), 0,
		      "a bundle re-signed with a device key passed:\n%s", log);
	cr_assert(strstr(log, "not the station's audit certificate"), "%s", log);
	snprintf(cmd, sizeof(cmd), "grep -v '" ST_AUDIT_EKU_OID "' '%s' > '%s.old'",
		 script, script);
	cr_assert_eq(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s.old", script);
	cr_assert_eq(audit_bundle(cmd, forged, log, sizeof(log)), 0,
		     "the forged bundle is not a complete forgery:\n%s", log);
	EVP_PKEY_free(key);
	fx_rmtree(w.dir);
}

/* The old station's signer: the audit key in the token. */
struct old_signer {
	hsm_session *s;
	hsm_obj key;
};

static int old_sign(void *ctx, const uint8_t digest[32], uint8_t *sig,
		    size_t cap, size_t *siglen)
{
	struct old_signer *o = ctx;
	uint8_t *der = NULL;
	char err[256];
	int n = st_hsm_sign_sha256(o->s, o->key, HSM_KEY_P256, digest, &der, err,
				   sizeof(err));

	if (n > 0 && (size_t)n <= cap) {
		memcpy(sig, der, (size_t)n);
		*siglen = (size_t)n;
	}
	OPENSSL_free(der);
	return n > 0 && (size_t)n <= cap ? ST_OK : ST_E_HSM;
}

/* What a station before the audit extendedKeyUsage left: the audit key
 * with the certificate the old code issued (the device template, no
 * extendedKeyUsage), and events signed under it. */
static void old_station(const fx_world *w)
{
	struct st_cert_profile cp = { .org = "station audit", .validity_days = 3650,
				      .key_usage = "critical,digitalSignature" };
	st_subject_vars vars = { .uid = "audit old", .serial = "audit old",
				 .product = "station audit", .model = "" };
	uint8_t point[65], serial[ST_CERT_SERIAL_LEN], *der = NULL, *cader = NULL;
	const uint8_t *p;
	struct old_signer o;
	char err[512] = "";
	hsm_obj ca_priv;
	hsm *h = NULL;
	rec_store *r = NULL;
	EVP_PKEY *pub;
	X509 *ca, *tmpl, *old;
	size_t calen = 0;
	int len;

	cr_assert_eq(hsm_open(FX_SOFTHSM_MODULE, "station", &h), ST_OK);
	cr_assert_eq(hsm_login(h, FX_PIN, strlen(FX_PIN)), ST_OK, "%s", hsm_errmsg(h));
	cr_assert_eq(hsm_session_open(h, &o.s), ST_OK);
	cr_assert_eq(hsm_keygen_p256(o.s, "station-audit", true, point, &o.key), ST_OK);
	cr_assert_eq(hsm_cert_load(o.s, "issuing-ca", &cader, &calen), ST_OK);
	cr_assert_eq(hsm_find_privkey(o.s, "issuing-ca", &ca_priv), ST_OK);
	p = cader;
	ca = d2i_X509(NULL, &p, (long)calen);
	pub = st_p256_pubkey(point);
	cr_assert_eq(st_x509_random_serial(o.s, serial), ST_OK);
	tmpl = st_x509_device_template(pub, ca, &cp, &vars, (const uint8_t *)"audit old",
				       9, serial, err, sizeof(err));
	cr_assert_not_null(tmpl, "%s", err);
	old = st_x509_hsm_sign(tmpl, o.s, ca_priv, HSM_KEY_P256, err, sizeof(err));
	cr_assert_not_null(old, "%s", err);
	cr_assert(!st_x509_is_audit(old));
	len = i2d_X509(old, &der);
	cr_assert_gt(len, 0);
	cr_assert_eq(hsm_cert_store(o.s, "station-audit", der, (size_t)len), ST_OK);
	cr_assert_eq(rec_open(w->db, &r), ST_OK);
	cr_assert_eq(rec_set_signer(r, old_sign, &o, der, (size_t)len), ST_OK, "%s",
		     rec_errmsg(r));
	cr_assert_eq(rec_event(r, "station_start", NULL, "station", "old", NULL), ST_OK);
	cr_assert_eq(rec_event(r, "station_stop", NULL, "pass", "0", NULL), ST_OK);
	rec_close(r);
	OPENSSL_free(der);
	free(cader);
	X509_free(ca);
	X509_free(tmpl);
	X509_free(old);
	EVP_PKEY_free(pub);
	hsm_session_close(o.s);
	hsm_close(h);
}

Test(evidence, an_old_audit_certificate_is_recertified_and_its_events_verify, .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	char bundle[600], script[600], log[16384], cmd[2048];

	fx_world_init(&w, true, 2000);
	old_station(&w);
	/* as it is, its certificate is not an audit certificate */
	fx_station_run(&R, &w, "--ca-cert", w.ca, "records", "verify", NULL);
	cr_assert_eq(R.code, 4, "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.out, "not an audit certificate") && strstr(R.out, "audit init"),
		  "%s", R.out);
	/* the next start re-certifies the same key, on record */
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "p1", 1, NULL), 0);
	fx_station_run(&R, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM audit_certs"), 2);
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM events WHERE kind = "
			   "'audit_recertified' AND json_extract(body, '$.data.supersedes') = "
			   "(SELECT sha256 FROM audit_certs ORDER BY rowid LIMIT 1)"), 1);
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM events WHERE kind = 'audit_key_repair'"
			   " AND json_extract(body, '$.data.repair') LIKE 're-certified%'"), 1);
	fx_station_run(&R, &w, "--ca-cert", w.ca, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	/* the new certificate has the audit usage and the same key: the old
	 * events check out under the bundle's audit.pem with openssl alone */
	snprintf(cmd, sizeof(cmd), "sqlite3 '%s' 'SELECT pem FROM audit_certs ORDER BY "
		 "rowid DESC LIMIT 1' | openssl x509 -noout -ext extendedKeyUsage | "
		 "grep -q " ST_AUDIT_EKU_OID, w.db);
	cr_assert_eq(system(cmd), 0);
	snprintf(bundle, sizeof(bundle), "%s/bundle", w.dir);
	fx_station_run(&R, &w, "records", "export", "--evidence", bundle, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	snprintf(script, sizeof(script), "%s/auditor.sh", w.dir);
	auditor_script(script);
	cr_assert_eq(audit_bundle(script, bundle, log, sizeof(log)), 0, "%s", log);
	/* and once only */
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM events WHERE kind = 'audit_recertified'"), 1);
	fx_rmtree(w.dir);
}

/* Without --ca-cert, verify checks the audit certificates against the CAs
 * in the token; when it cannot reach the token it says so and what to do,
 * instead of accepting any issuer. */
Test(evidence, verify_without_a_reachable_token_asks_for_the_ca, .timeout = 120)
{
	fx_world w;
	char conf[600];

	fx_world_init(&w, true, 2000);
	fx_station_run(&R, &w, "records", "workorder", "create", "WO-1", NULL);
	cr_assert_eq(R.code, 0, "%s", R.err);
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s%s", R.out, R.err);
	cr_assert(strstr(R.out, "certified by the CA certificate in token 'station'"),
		  "%s", R.out);
	snprintf(conf, sizeof(conf), "%s", getenv("SOFTHSM2_CONF"));
	setenv("SOFTHSM2_CONF", "/nonexistent/softhsm2.conf", 1);
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 3, "%s%s", R.out, R.err);
	cr_assert(strstr(R.err, "--ca-cert"), "%s", R.err);
	cr_assert_null(strstr(R.out, "records OK"), "%s", R.out);
	fx_station_run(&R, &w, "--ca-cert", w.ca, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s%s", R.out, R.err);
	setenv("SOFTHSM2_CONF", conf, 1);
	fx_rmtree(w.dir);
}

/* Fill the file system at dir to the last byte with the file "filler",
 * then give back leave bytes of it. */
static void fill_up(const char *dir, off_t leave)
{
	char path[700], block[4096];
	struct stat sb;
	int fd;

	memset(block, 0x5a, sizeof(block));
	snprintf(path, sizeof(path), "%s/filler", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	while (write(fd, block, sizeof(block)) > 0)
		;
	cr_assert_eq(errno, ENOSPC, "filling %s: %s", dir, strerror(errno));
	cr_assert_eq(fstat(fd, &sb), 0);
	cr_assert_eq(ftruncate(fd, sb.st_size > leave ? sb.st_size - leave : 0), 0);
	close(fd);
}

/* A records disk that fills during a run: the slot stops saying the disk
 * is full and what to do (free space, start again; an open record is
 * closed then).  After space is freed, the next start closes the record
 * the failed run left open, as after a crash, and says so; the unit is
 * provisioned and no record stays RUNNING. */
Test(evidence, full_records_disk_is_named_and_the_next_start_closes_the_open_record,
     .timeout = 240)
{
	fx_world w;
	fx_devsim sim;
	char dir[600], db[700], filler[700];
	long long running;
	bool open_left;

	fx_world_init(&w, true, 2000);
	fx_path(dir, &w, "small");
	cr_assert_eq(mkdir(dir, 0755), 0);
	cr_assert_eq(mount("tmpfs", dir, "tmpfs", 0, "size=8m"), 0,
		     "mount tmpfs (the tests run as root)");
	snprintf(db, sizeof(db), "%s/records.db", dir);
	snprintf(filler, sizeof(filler), "%s/filler", dir);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "p0", 1, NULL), 0);
	fx_station_run(&R, &w, "--json", "--records", db, "--slot", sim.port,
		       "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	/* room for the start of a run and a few units, not for 60 */
	fill_up(dir, 160 * 1024);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "p1", 60, NULL), 0);
	fx_station_run(&R, &w, "--json", "--records", db, "--slot", sim.port,
		       "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(R.code, 4, "exit %d\n%s\n%s", R.code, R.out, R.err);
	cr_assert(strstr(R.out, "the records disk is full ("), "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.out, "free space, then start again; "), "%s", R.out);
	running = q_int(db, "SELECT count(*) FROM units WHERE state = 'RUNNING'");
	open_left = running > 0;
	cr_log_info("the disk filled %s a record was open (%lld RUNNING)",
		    open_left ? "while" : "before", running);
	cr_assert_leq(running, 1);
	if (open_left)
		cr_assert(strstr(R.out, "the unit is NOT passed; free space, then "
				 "start again; the unit's open record will be "
				 "closed then"), "%s", R.out);
	else
		cr_assert(strstr(R.out, "nothing was done to the unit; free space, "
				 "then start again"), "%s", R.out);

	/* free space, start again: the same unit is presented first */
	cr_assert_eq(unlink(filler), 0);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "p1", 60, NULL), 0);
	fx_station_run(&R, &w, "--json", "--records", db, "--slot", sim.port,
		       "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(R.code, 0, "exit %d\n%s\n%s", R.code, R.out, R.err);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM units WHERE state = 'RUNNING'"), 0);
	if (open_left) {
		cr_assert(strstr(R.err, "was left open (RUNNING) by an earlier run "
				 "that stopped during this unit (a crash, a lost "
				 "link or a full records disk): closed as FAIL "
				 "(interrupted); the unit is provisioned again"),
			  "%s", R.err);
		cr_assert_eq(q_int(db, "SELECT count(*) FROM units WHERE state = "
				   "'FAIL' AND reason LIKE 'interrupted%'"), 1);
	}
	cr_assert_eq(q_int(db, "SELECT count(*) FROM units WHERE state = 'UNFUSED'"),
		     60, "every unit provisioned once (the lot's first unit is p0's)");
	fx_station_run(&R, &w, "--records", db, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	umount(dir);
	fx_rmtree(w.dir);
}

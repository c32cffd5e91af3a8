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
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base.h"
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
		fx_station_run(&R, w, "--json", "--burn-fuses", "--work-order", wo,
			       "--slot", sim.port, "provision", NULL);
	else
		fx_station_run(&R, w, "--json", "--burn-fuses", "--slot", sim.port,
			       "provision", NULL);
	fx_devsim_stop(&sim);
}

Test(evidence, provisioning_is_signed_and_verify_catches_tampering, .timeout = 120)
{
	fx_world w;

	fx_world_init(&w, true, 2000);
	provision(&w, "p1", 3, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	/* every event of the run is signed by the HSM's audit key */
	cr_assert_eq(q_int(w.db, "SELECT count(*) FROM events WHERE sig IS NULL"), 0);
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

/* Start the station on three slots and send it sig once `after` PASS
 * lines were printed; every PASS line it prints (before and after) adds its
 * uid to seen (space-separated).  *status: the station's wait status. */
static int signal_during_burst(fx_world *w, fx_devsim *sims, int after, int sig,
			       char *seen, size_t cap, int *status)
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
	for (int i = 0; i < 3; i++) {
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
	fx_station_run_limited(&R, &w, 1024 * 1024, "--json", "--burn-fuses",
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
	fx_station_run(&R, &w, "--burn-fuses", "--slot", sim.port, "provision", NULL);
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
		fx_station_run(&R, &w, "--json", "--burn-fuses", "--slot", sim.port,
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

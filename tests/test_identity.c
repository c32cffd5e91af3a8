/* test_identity.c — a unit that does not PASS leaves without a valid
 * identity (issue 17 item 4): the real `station` binary against
 * station-devsim on a pty and a fresh SoftHSM token.  Nothing is issued to
 * a unit that can be refused (quarantined fuses, armed or not; a programmer
 * reporting a key the chip does not hold; an unreadable device ID); a
 * certificate issued to a unit that then fails is revoked and on the CA's
 * CRL; after SIGKILLs, resumes and `records close-interrupted`, every issued
 * certificate is a PASS identity or on the CRL.  Referees: the simulator's
 * own state file, SQLite, `openssl crl`, `openssl verify -crl_check`, and the
 * auditor block of docs/evidence.md. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

#define SAM_PW "sam-secret-22"
#define OTHER_ROT "00000000000000000000000000000000000000000000000000000000000000ff"

static fx_run R;    /* big: keep it off the stack */

/* Output of a shell command (stdout+stderr) and its exit status. */
static int sh(char *out, size_t cap, const char *cmd)
{
	FILE *p = popen(cmd, "r");
	size_t n;

	cr_assert_not_null(p, "cannot run %s", cmd);
	n = fread(out, 1, cap - 1, p);
	out[n] = '\0';
	return pclose(p);
}

/* Rewrite unit i of a stopped simulator's state: field = value. */
static void sim_set(const char *state_path, size_t i, const char *field, int bank,
		    const char *value)
{
	json_t *st = NULL, *u;

	cr_assert_eq(fx_devsim_dump(state_path, &st), 0);
	u = json_array_get(json_object_get(st, "units"), i);
	cr_assert_not_null(u);
	if (bank >= 0) {
		json_array_set_new(json_object_get(u, "fuses"), (size_t)bank,
				   json_string(value));
		json_array_set_new(json_object_get(u, "fuses_redundant"), (size_t)bank,
				   json_string(value));
	} else {
		json_object_set_new(u, field, json_string(value));
	}
	cr_assert_eq(json_dump_file(st, state_path, 0), 0);
	json_decref(st);
}

/* The simulator's unit i holds no key and no certificate. */
static void assert_no_identity(const char *state_path, size_t i)
{
	json_t *st = NULL, *u;

	cr_assert_eq(fx_devsim_dump(state_path, &st), 0);
	u = json_array_get(json_object_get(st, "units"), i);
	cr_assert_not_null(u);
	cr_assert(json_is_null(json_object_get(u, "cert")), "the device got a certificate");
	cr_assert(json_is_null(json_object_get(u, "pubkey")), "the device got a key");
	json_decref(st);
}

/* Nothing issued: no certificate step, no serial, no revocation. */
static void assert_nothing_issued(const fx_world *w)
{
	cr_assert_eq(fx_q_int(w, "SELECT count(*) FROM steps WHERE step IN "
			      "('certificate', 'keygen', 'write-cert')"), 0,
		     "a key or certificate step was recorded");
	cr_assert_eq(fx_q_int(w, "SELECT count(*) FROM units WHERE cert_serial IS NOT "
			      "NULL OR cert_pem IS NOT NULL"), 0);
	cr_assert_eq(fx_q_int(w, "SELECT count(*) FROM revocations"), 0);
}

/* A simulator whose first unit holds another root-of-trust hash. */
static void quarantined(bool armed)
{
	fx_world w;
	fx_devsim sim;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	fx_devsim_stop(&sim);
	sim_set(sim.state_path, 0, NULL, 0, OTHER_ROT);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	if (armed)
		fx_station_run(&R, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	else
		fx_station_run(&R, &w, "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(R.code, 1, "stdout:%s\nstderr:%s", R.out, R.err);
	cr_assert(strstr(R.out, "QUARANTINE"), "%s", R.out);
	cr_assert(strstr(R.out, "no key or certificate issued"), "%s", R.out);
	cr_assert_eq(fx_count_units(&w, "QUARANTINE"), 1);
	assert_nothing_issued(&w);
	assert_no_identity(sim.state_path, 0);
	fx_rmtree(w.dir);
}

Test(identity, quarantined_unit_gets_no_certificate_armed, .timeout = 90)
{
	quarantined(true);
}

Test(identity, quarantined_unit_gets_no_certificate_unarmed, .timeout = 90)
{
	quarantined(false);
}

/* A programmer that reports a public key the chip does not hold (the
 * simulator's wrongkey fault) fails the proof of possession: no
 * certificate for that key. */
Test(identity, key_the_device_does_not_hold_gets_no_certificate, .timeout = 90)
{
	fx_world w;
	fx_devsim sim;
	char reason[1024];

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--fault wrongkey"), 0);
	fx_station_run(&R, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(R.code, 1, "stdout:%s\nstderr:%s", R.out, R.err);
	fx_q_text(&w, "SELECT reason FROM units WHERE state = 'FAIL'", reason, sizeof(reason));
	cr_assert(strstr(reason, "does not hold that key"), "reason: %s", reason);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'possession' "
			      "AND outcome = 'fail'"), 1);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step IN "
			      "('certificate', 'write-cert')"), 0, "a certificate was issued");
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE cert_serial IS NOT NULL"),
		     0);
	fx_rmtree(w.dir);
}

/* An all-zero or all-FF device ID is what a badly seated chip reads as:
 * refused with words for the operator, nothing issued. */
Test(identity, unreadable_device_id_is_refused, .timeout = 90)
{
	static const char *const ids[] = { "00000000000000000000000000000000",
					   "ffffffffffffffffffffffffffffffff" };
	fx_world w;
	fx_devsim sim;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 2, NULL), 0);
	fx_devsim_stop(&sim);
	for (size_t i = 0; i < 2; i++)
		sim_set(sim.state_path, i, "uid", -1, ids[i]);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 2, NULL), 0);
	fx_station_run(&R, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(R.code, 1, "stdout:%s\nstderr:%s", R.out, R.err);
	for (size_t i = 0; i < 2; i++) {
		char line[256];

		snprintf(line, sizeof(line), "unit %s FAIL: the device ID could not be "
			 "read", ids[i]);
		cr_assert(strstr(R.out, line), "no '%s' in:\n%s", line, R.out);
		assert_no_identity(sim.state_path, i);
	}
	cr_assert(strstr(R.out, "check the contact"), "%s", R.out);
	cr_assert_eq(fx_count_units(&w, "FAIL"), 2);
	assert_nothing_issued(&w);
	fx_rmtree(w.dir);
}

/* The block between the auditor-check markers in docs/evidence.md. */
static void auditor_script(const char *dst)
{
	char doc[1024], line[4096], build[512];
	FILE *in, *out;
	int state = 0;

	snprintf(build, sizeof(build), "%s", getenv("STATION_BUILD"));
	snprintf(doc, sizeof(doc), "%s/docs/evidence.md", dirname(build));
	in = fopen(doc, "r");
	cr_assert_not_null(in, "cannot read %s", doc);
	out = fopen(dst, "w");
	cr_assert_not_null(out);
	while (fgets(line, sizeof(line), in)) {
		if (strstr(line, "<!-- auditor-check:begin -->"))
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
	cr_assert_eq(state, 3, "no auditor-check block in %s", doc);
}

/* Export an evidence bundle to w's dir/name and run the auditor block on
 * it; returns bash's status, log gets its output. */
static int bundle_audit(const fx_world *w, const char *name, char *log, size_t cap)
{
	char bundle[600], script[600], cmd[2048];

	snprintf(bundle, sizeof(bundle), "%s/%s", w->dir, name);
	snprintf(script, sizeof(script), "%s/auditor.sh", w->dir);
	fx_station_run(&R, w, "records", "export", "--evidence", bundle, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	auditor_script(script);
	snprintf(cmd, sizeof(cmd), "cd '%s' && bash '%s' 2>&1", bundle, script);
	return sh(log, cap, cmd);
}

/* `crl export` to w's dir/crl.pem; the CRL verifies under the CA with
 * openssl; text gets `openssl crl -text`. */
static void crl_text(const fx_world *w, char *text, size_t cap)
{
	char crl[600], cmd[2048];

	snprintf(crl, sizeof(crl), "%s/crl.pem", w->dir);
	fx_station_run(&R, w, "crl", "export", "--out", crl, NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	snprintf(cmd, sizeof(cmd), "openssl crl -in '%s' -CAfile '%s' -noout 2>&1", crl,
		 w->ca);
	cr_assert_eq(sh(text, cap, cmd), 0, "openssl crl: %s", text);
	cr_assert(strstr(text, "verify OK"), "%s", text);
	snprintf(cmd, sizeof(cmd), "openssl crl -in '%s' -noout -text 2>&1", crl);
	cr_assert_eq(sh(text, cap, cmd), 0, "openssl crl: %s", text);
}

/* A unit whose root-of-trust bit never blows (stuck fault) fails its
 * read-back after its certificate was issued and written: QUARANTINE,
 * the certificate revoked (cessationOfOperation) and on the CA's CRL, the
 * bundle lists it as revoked with its PEM, and the auditor block passes;
 * openssl refuses the revoked certificate with a CRL check. */
Test(identity, unit_failing_after_issuance_is_revoked, .timeout = 120)
{
	fx_world w;
	fx_devsim sim;
	char serial[128], text[65536], path[900], cmd[2048], line[512];
	static char log[65536];
	FILE *f;
	bool listed = false;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--fault stuck:0:0:1"), 0);
	fx_station_run(&R, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(R.code, 1, "stdout:%s\nstderr:%s", R.out, R.err);
	cr_assert_eq(fx_count_units(&w, "QUARANTINE"), 1, "%s", R.out);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'certificate'"), 1,
		     "the certificate was not issued before the burn");
	fx_q_text(&w, "SELECT cert_serial FROM units", serial, sizeof(serial));
	cr_assert(serial[0], "no serial on record");
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM revocations WHERE crl_reason = 5 "
			      "AND revoked_by = 'station test-station'"), 1);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM events WHERE kind = 'revoke'"), 1);
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);

	crl_text(&w, text, sizeof(text));
	cr_assert(strstr(text, serial), "serial %s not on the CRL:\n%s", serial, text);
	cr_assert(strstr(text, "Cessation Of Operation"), "%s", text);

	cr_assert_eq(bundle_audit(&w, "bundle", log, sizeof(log)), 0,
		     "the auditor block failed:\n%s", log);
	snprintf(path, sizeof(path), "%s/bundle/certs.jsonl", w.dir);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		listed |= strstr(line, serial) && strstr(line, "\"fate\":\"revoked\"") &&
			  strstr(line, "\"crl_reason_name\":\"cessationOfOperation\"");
	fclose(f);
	cr_assert(listed, "certs.jsonl does not list %s as revoked", serial);
	snprintf(cmd, sizeof(cmd), "cd '%s/bundle' && openssl verify -crl_check -CAfile "
		 "ca.pem -CRLfile crl.pem certs/revoked/%s.pem 2>&1", w.dir, serial);
	cr_assert_neq(sh(text, sizeof(text), cmd), 0, "a revoked certificate verified");
	cr_assert(strstr(text, "revoked"), "%s", text);
	fx_rmtree(w.dir);
}

/* UNFUSED is a live identity in the evidence bundle: two units unarmed,
 * the first then finished armed (its records: UNFUSED, then PASS, one
 * certificate).  The bundle holds one certificate per device, lists both
 * as valid, revokes neither, and passes the auditor block of
 * docs/evidence.md. */
Test(identity, unfused_and_finished_units_pass_the_auditor_block, .timeout = 150)
{
	fx_world w;
	fx_devsim sim;
	static char log[65536], text[65536];
	char path[900], line[4096];
	int valid = 0, lines = 0;
	FILE *f;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 2, NULL), 0);
	fx_station_run(&R, &w, "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(R.code, 0, "stdout:%s\nstderr:%s", R.out, R.err);
	cr_assert(strstr(R.out, "summary: 2 UNFUSED"), "%s", R.out);
	cr_assert_eq(fx_count_units(&w, "UNFUSED"), 2);
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 2, NULL), 0);
	fx_station_run(&R, &w, "--burn-fuses", "--yes", "--units", "1", "--slot", sim.port,
		       "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(R.code, 0, "stdout:%s\nstderr:%s", R.out, R.err);
	cr_assert_eq(fx_count_units(&w, "PASS"), 1, "%s", R.out);
	cr_assert_eq(fx_q_int(&w, "SELECT count(DISTINCT cert_serial) FROM units"), 2);

	cr_assert_eq(bundle_audit(&w, "bundle", log, sizeof(log)), 0,
		     "the auditor block failed:\n%s", log);
	cr_assert(strstr(R.out, "2 device certificates"), "%s", R.out);
	snprintf(path, sizeof(path), "cd '%s/bundle' && ls certs/*.pem | wc -l", w.dir);
	cr_assert_eq(sh(text, sizeof(text), path), 0);
	cr_assert_eq(atoi(text), 2, "certs/: %s", text);
	snprintf(path, sizeof(path), "%s/bundle/certs.jsonl", w.dir);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		lines++;
		valid += strstr(line, "\"fate\":\"valid\"") != NULL;
	}
	fclose(f);
	cr_assert_eq(valid, lines, "an UNFUSED identity is not valid in certs.jsonl");
	cr_assert_geq(valid, 2);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM revocations"), 0);
	fx_rmtree(w.dir);
}

/* ---- crash test ---- */

/* A supervisor on a signed operator list (nothing else required). */
static void supervisor_init(fx_world *w, char pw[512])
{
	char list[2048], path[512], conf[8192];
	FILE *f;
	size_t n;
	char *nl;

	snprintf(pw, 512, "%s/sam.pw", w->dir);
	fx_write_file(pw, SAM_PW "\n");
	fx_station_run(&R, w, "operator", "hash", "--operator", "sam", "--role",
		       "operator,supervisor", "--password-file", pw, NULL);
	cr_assert_eq(R.code, 0, "%s", R.err);
	nl = strchr(R.out, '\n');
	if (nl)
		*nl = '\0';
	n = strlen(R.out);
	if (n && R.out[n - 1] == ',')
		R.out[n - 1] = '\0';
	snprintf(list, sizeof(list), "operators = (\n  %s\n);\n", R.out);
	fx_path(path, w, "operators.conf");
	fx_write_file(path, list);
	fx_sign(w, path);
	f = fopen(w->conf, "r");
	cr_assert_not_null(f);
	n = fread(conf, 1, sizeof(conf) - 1, f);
	conf[n] = '\0';
	fclose(f);
	snprintf(conf + n, sizeof(conf) - n, "roles: { operators = \"%s\"; };\n", path);
	fx_write_file(w->conf, conf);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0)
		;
}

/* A certificate issued to a unit still running: what a kill must catch for
 * close-interrupted to have something to revoke. */
#define OPEN_CERT_SQL "SELECT count(*) FROM steps s JOIN units u ON u.id = " \
	"s.unit_id WHERE s.step = 'certificate' AND s.detail LIKE 'serial %' " \
	"AND u.state NOT IN ('PASS', 'UNFUSED')"

/* Start a provisioning run on the n programmers and SIGKILL it after
 * delay_ms, or (delay_ms < 0) as soon as the store shows a certificate of
 * a unit that did not pass, polling every 20 ms for at most -delay_ms. */
static void kill_after(const fx_world *w, fx_devsim *sims, int n, long delay_ms)
{
	char bin[512];
	const char *argv[64];
	int argc = 0, status = 0;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/station", getenv("STATION_BUILD"));
	argv[argc++] = bin;
	argv[argc++] = "--config";
	argv[argc++] = w->conf;
	argv[argc++] = "--pin-file";
	argv[argc++] = w->pinfile;
	argv[argc++] = "--burn-fuses";
	argv[argc++] = "--yes";
	for (int i = 0; i < n; i++) {
		argv[argc++] = "--slot";
		argv[argc++] = sims[i].port;
	}
	argv[argc++] = "provision";
	argv[argc] = NULL;
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		if (!getenv("IDT_DEBUG"))
			dup2(null, 2);
		execv(bin, (char **)argv);
		_exit(127);
	}
	if (delay_ms >= 0)
		sleep_ms(delay_ms);
	for (long t = 0; delay_ms < 0 && t < -delay_ms && fx_q_int(w, OPEN_CERT_SQL) == 0;
	     t += 20)
		sleep_ms(20);
	cr_assert_eq(kill(pid, SIGKILL), 0);
	waitpid(pid, &status, 0);  /* a run that ended first is fine too */
}

/* Serials of every issued certificate, from the certificate steps. */
static int issued_serials(const fx_world *w, char serials[][80], int cap)
{
	char cmd[1024], out[65536], *save = NULL;
	int n = 0;

	snprintf(cmd, sizeof(cmd), "sqlite3 '%s' \"SELECT substr(detail, 8, instr(detail, "
		 "' sha256') - 8) FROM steps WHERE step = 'certificate' AND detail LIKE "
		 "'serial %%'\"", w->db);
	cr_assert_eq(sh(out, sizeof(out), cmd), 0, "%s", out);
	for (char *s = strtok_r(out, "\n", &save); s && n < cap; s = strtok_r(NULL, "\n", &save))
		snprintf(serials[n++], 80, "%s", s);
	return n;
}

/* SIGKILL the station at random points while it provisions units on three
 * slots (slow burns: most of a unit's time is after its certificate), run
 * again to resume one lot, leave the other lot's interrupted units for
 * good, then `records close-interrupted`: every certificate ever issued is
 * the identity of a PASS unit or on the CA's CRL. */
Test(identity, crash_resume_and_close_leave_no_valid_non_pass_identity, .timeout = 300)
{
	static char serials[256][80], text[262144], log[65536];
	fx_world w;
	fx_devsim sims[3];
	char pw[512], sql[256];
	int n, pass = 0, revoked = 0;

	srand((unsigned)time(NULL));
	fx_world_init(&w, true, 2000);
	supervisor_init(&w, pw);
	for (int lot = 0; lot < 2; lot++) {
		for (int i = 0; i < 3; i++) {
			char name[16], args[64];

			snprintf(name, sizeof(name), "l%dp%d", lot, i);
			snprintf(args, sizeof(args), "--seed l%dp%d --fault slowburn:40", lot, i);
			cr_assert_eq(fx_devsim_start(&sims[i], w.dir, name, 10, args), 0);
		}
		/* two kills at random points of a lot */
		kill_after(&w, sims, 3, 600 + rand() % 900);
		kill_after(&w, sims, 3, 300 + rand() % 900);
		/* the last lot must leave a certificate with a unit that did
		 * not pass (what close-interrupted must revoke): when both
		 * kills came before any, run again and kill the run as soon
		 * as one is issued (timed kills alone missed it under load) */
		if (lot == 1 && fx_q_int(&w, OPEN_CERT_SQL) == 0)
			kill_after(&w, sims, 3, -120000);
		if (lot == 1)
			cr_assert_gt(fx_q_int(&w, OPEN_CERT_SQL), 0,
				     "no kill left a certificate with a unit that did "
				     "not pass");
		if (lot == 0) {
			/* the first lot comes back: the unit in each programmer
			 * is presented again */
			fx_station_run(&R, &w, "--burn-fuses", "--yes", "--units", "1", "--slot",
				       sims[0].port, "--slot", sims[1].port, "--slot",
				       sims[2].port, "provision", NULL);
			cr_assert_lt(R.code, 2, "%s\n%s", R.out, R.err);
		}
		for (int i = 0; i < 3; i++)
			fx_devsim_stop(&sims[i]);
	}
	cr_assert_geq(fx_q_int(&w, "SELECT count(*) FROM units WHERE state = 'RUNNING'"), 1,
		      "no unit was interrupted: no kill landed in a unit");

	/* Before closing: the warning, and the bundle fails the auditor. */
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	/* the warning says exactly what the store holds: certificates of
	 * open (RUNNING) units, and of closed units that did not pass whose
	 * revocation is still owed (a unit closed as interrupted at its next
	 * presentation, that run killed before it decided) */
	if (fx_q_int(&w, "SELECT count(*) FROM steps s JOIN units u ON u.id = s.unit_id "
		     "WHERE s.step = 'certificate' AND s.detail LIKE 'serial %' AND "
		     "u.state = 'RUNNING'") > 0)
		cr_assert(strstr(R.err, "to open units"), "%s", R.err);
	else
		cr_assert_null(strstr(R.err, "to open units"), "%s", R.err);
	if (fx_q_int(&w, "SELECT count(*) FROM (SELECT substr(s.detail, 8, instr(s.detail, "
		     "' sha256') - 8) AS serial FROM steps s JOIN units u ON u.id = s.unit_id "
		     "WHERE s.step = 'certificate' AND s.detail LIKE 'serial %' AND u.state "
		     "NOT IN ('RUNNING', 'PASS', 'UNFUSED')) WHERE serial NOT IN (SELECT "
		     "cert_serial FROM revocations) AND serial NOT IN (SELECT cert_serial "
		     "FROM units WHERE state IN ('PASS', 'UNFUSED') AND cert_serial IS NOT "
		     "NULL)") > 0)
		cr_assert(strstr(R.err, "of units that did not pass"), "%s", R.err);
	else
		cr_assert_null(strstr(R.err, "of units that did not pass"), "%s", R.err);
	/* an open certificate is one issued in a RUNNING record (its step
	 * "serial S sha256 H"); a RUNNING record that resumed an identity
	 * issued in an earlier record ("resumed: ...") did not issue one */
	if (fx_q_int(&w, "SELECT count(*) FROM steps s JOIN units u ON u.id = s.unit_id "
		     "WHERE s.step = 'certificate' AND s.detail LIKE 'serial %' AND "
		     "u.state = 'RUNNING'") > 0) {
		char bundle[600], cmd[1024];

		snprintf(bundle, sizeof(bundle), "%s/before", w.dir);
		fx_station_run(&R, &w, "records", "export", "--evidence", bundle, NULL);
		cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
		snprintf(cmd, sizeof(cmd), "grep -c '\"fate\":\"open\"' '%s/certs.jsonl'",
			 bundle);
		cr_assert_eq(sh(log, sizeof(log), cmd), 0, "no open certificate listed");
	}

	/* Only a supervisor, with the password, closes them. */
	fx_station_run(&R, &w, "records", "close-interrupted", "--supervisor", "sam",
		       "--reason", "line cleared", NULL);
	cr_assert_neq(R.code, 0, "closed without a password: %s", R.out);
	fx_station_run(&R, &w, "records", "close-interrupted", "--supervisor", "sam",
		       "--supervisor-password-file", pw, "--reason", "line cleared", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	cr_assert(strstr(R.out, "closed as FAIL"), "%s", R.out);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE state = 'RUNNING'"), 0);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM events WHERE kind = "
			      "'close_interrupted' AND body LIKE '%\"sam\"%'"), 1);

	/* Every issued certificate: a PASS identity, or on the CRL. */
	crl_text(&w, text, sizeof(text));
	n = issued_serials(&w, serials, 256);
	cr_assert_geq(n, 3, "too few certificates issued: %d", n);
	for (int i = 0; i < n; i++) {
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM units WHERE state = 'PASS' "
			 "AND cert_serial = '%.*s'", (int)64, serials[i]);
		if (fx_q_int(&w, sql) == 1) {
			pass++;
			cr_assert_null(strstr(text, serials[i]), "PASS serial %s revoked",
				       serials[i]);
		} else {
			cr_assert(strstr(text, serials[i]), "certificate %s of a unit that "
				  "did not pass is not on the CRL", serials[i]);
			revoked++;
		}
	}
	cr_assert_eq(pass + revoked, n);
	cr_assert_geq(revoked, 1, "no interrupted unit held a certificate");
	cr_assert_eq(pass, fx_count_units(&w, "PASS"));
	fx_station_run(&R, &w, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	cr_assert_null(strstr(R.err, "open units"), "%s", R.err);
	cr_assert_eq(bundle_audit(&w, "after", log, sizeof(log)), 0,
		     "the auditor block failed after close-interrupted:\n%s", log);
	fx_rmtree(w.dir);
}

/* ---- a cloned ID presented again (unarmed) ---- */

/* Two programmers hold a unit with one device ID (--seed clone), run
 * unarmed in one run: the first identified makes its key (slowly:
 * --keygen-ms) and ends UNFUSED, the other is refused as a clone (FAIL).
 * Sets *clone to the clone's simulator (a or b), uid and serial to the
 * device ID and the UNFUSED identity's serial. */
static fx_devsim *clone_pair(fx_world *w, fx_devsim *a, fx_devsim *b, char uid[128],
			     char serial[128])
{
	long long fail_slot;

	cr_assert_eq(fx_devsim_start(a, w->dir, "progA", 1, "--seed clone --keygen-ms 3000"), 0);
	cr_assert_eq(fx_devsim_start(b, w->dir, "progB", 1, "--seed clone --keygen-ms 3000"), 0);
	fx_station_run(&R, w, "--slot", a->port, "--slot", b->port, "provision", NULL);
	cr_assert_eq(R.code, 1, "stdout:%s\nstderr:%s", R.out, R.err);
	cr_assert(strstr(R.out, "same device ID right now"), "%s", R.out);
	cr_assert_eq(fx_count_units(w, "UNFUSED"), 1, "%s", R.out);
	cr_assert_eq(fx_count_units(w, "FAIL"), 1, "%s", R.out);
	fx_q_text(w, "SELECT uid FROM units WHERE state = 'UNFUSED'", uid, 128);
	fx_q_text(w, "SELECT cert_serial FROM units WHERE state = 'UNFUSED'", serial, 128);
	cr_assert(serial[0], "the UNFUSED unit has no serial on record");
	fail_slot = fx_q_int(w, "SELECT slot FROM units WHERE state = 'FAIL'");
	cr_assert(fail_slot == 1 || fail_slot == 2, "clone in slot %lld", fail_slot);
	fx_devsim_stop(a);
	fx_devsim_stop(b);
	return fail_slot == 1 ? a : b;
}

/* Present the clone's (stopped) simulator again. */
static void clone_again(fx_world *w, fx_devsim *clone, fx_devsim *a)
{
	cr_assert_eq(fx_devsim_rewind(clone->state_path), 0);
	cr_assert_eq(fx_devsim_start(clone, w->dir, clone == a ? "progA" : "progB", 1,
				     "--seed clone"), 0);
}

/* The referees' count of the device ID's live identities: the evidence
 * bundle's certs.jsonl lines that are not revoked, and the certificates
 * of the bundle (certs/ and certs/revoked/) that openssl verifies with a
 * CRL check; both must be 1, and that certificate's serial is serial. */
static void one_live_identity(const fx_world *w, const char *name, const char *uid,
			      const char *serial)
{
	char path[900], line[8192], cmd[2400], out[4096], want[160];
	static char log[65536];
	int live = 0, lines = 0;
	FILE *f;

	cr_assert_eq(bundle_audit(w, name, log, sizeof(log)), 0,
		     "the auditor block failed:\n%s", log);
	snprintf(path, sizeof(path), "%s/%s/certs.jsonl", w->dir, name);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		if (!strstr(line, uid))
			continue;
		lines++;
		live += !strstr(line, "\"fate\":\"revoked\"");
	}
	fclose(f);
	cr_assert_geq(lines, 1, "certs.jsonl lists nothing for %s", uid);
	cr_assert_eq(live, 1, "%d certificates of %s not revoked (certs.jsonl)", live, uid);
	snprintf(cmd, sizeof(cmd), "cd '%s/%s' && n=0 && for c in certs/*.pem "
		 "certs/revoked/*.pem; do [ -e \"$c\" ] || continue; openssl verify "
		 "-crl_check -CAfile ca.pem -CRLfile crl.pem \"$c\" >/dev/null 2>&1 && "
		 "n=$((n+1)); done; echo $n; openssl x509 -in 'certs/%s.pem' -noout "
		 "-serial", w->dir, name, uid);
	cr_assert_eq(sh(out, sizeof(out), cmd), 0, "%s", out);
	cr_assert_eq(atoi(out), 1, "openssl verifies %d certificates with a CRL check:\n%s",
		     atoi(out), out);
	snprintf(want, sizeof(want), "serial=%s", serial);
	for (char *c = want + 7; *c; c++)
		*c = (char)toupper((unsigned char)*c);
	cr_assert(strstr(out, want), "the live certificate is not %s:\n%s", want, out);
}

/* A cloned ID refused in an unarmed run comes back alone (its slot run
 * again): the ID already has a live identity (UNFUSED, not revoked) that
 * this device does not hold, so it is refused a second one (FAIL, the
 * serial named, nothing on the device), and the store keeps exactly one
 * unrevoked certificate for the ID.  The genuine unit is then finished by
 * an armed run with the same serial. */
Test(identity, clone_rerun_gets_no_second_identity_unarmed, .timeout = 180)
{
	fx_world w;
	fx_devsim a, b, *clone;
	char uid[128], serial[128], want[512];

	fx_world_init(&w, true, 2000);
	clone = clone_pair(&w, &a, &b, uid, serial);
	clone_again(&w, clone, &a);
	fx_station_run(&R, &w, "--slot", clone->port, "provision", NULL);
	fx_devsim_stop(clone);
	cr_assert_eq(R.code, 1, "stdout:%s\nstderr:%s", R.out, R.err);
	snprintf(want, sizeof(want), "UID %s already has identity serial %s", uid, serial);
	cr_assert(strstr(R.out, want), "no '%s' in:\n%s", want, R.out);
	cr_assert(strstr(R.out, "re-provisioning needs a supervisor"), "%s", R.out);
	assert_no_identity(clone->state_path, 0);
	cr_assert_eq(fx_count_units(&w, "UNFUSED"), 1);
	cr_assert_eq(fx_count_units(&w, "FAIL"), 2);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'certificate' "
			      "AND outcome = 'ok' AND detail LIKE 'serial %'"), 1,
		     "a second certificate was issued");
	/* the records say so, with the reason */
	fx_station_run(&R, &w, "records", "list", "--uid", uid, "--result", "FAIL",
		       "--format", "jsonl", NULL);
	cr_assert_eq(R.code, 0, "%s", R.err);
	cr_assert(strstr(R.out, want), "records list: %s", R.out);
	fx_station_run(&R, &w, "--ca-cert", w.ca, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "records verify: %s%s", R.out, R.err);
	one_live_identity(&w, "bundle", uid, serial);

	/* the genuine unit still resumes: an armed run finishes it */
	{
		fx_devsim *good = clone == &a ? &b : &a;

		cr_assert_eq(fx_devsim_rewind(good->state_path), 0);
		cr_assert_eq(fx_devsim_start(good, w.dir, good == &a ? "progA" : "progB", 1,
					     "--seed clone"), 0);
		fx_station_run(&R, &w, "--burn-fuses", "--yes", "--slot", good->port,
			       "provision", NULL);
		fx_devsim_stop(good);
		cr_assert_eq(R.code, 0, "stdout:%s\nstderr:%s", R.out, R.err);
		fx_q_text(&w, "SELECT cert_serial FROM units WHERE state = 'PASS'", want,
			  sizeof(want));
		cr_assert_str_eq(want, serial);
		fx_check_pass(&w, good->state_path, uid);
	}
	one_live_identity(&w, "bundle2", uid, serial);
	fx_rmtree(w.dir);
}

/* The refusal's way out: a supervisor's re-provisioning revokes the live
 * UNFUSED identity first (superseded, the supervisor and reason on
 * record), then the device takes a new one; still one live certificate. */
Test(identity, clone_rerun_reprovisioned_by_a_supervisor, .timeout = 180)
{
	fx_world w;
	fx_devsim a, b, *clone;
	char uid[128], serial[128], now[128], pw[512], text[512];

	fx_world_init(&w, true, 2000);
	supervisor_init(&w, pw);
	clone = clone_pair(&w, &a, &b, uid, serial);
	clone_again(&w, clone, &a);
	fx_station_run(&R, &w, "--reprovision", "--reason", "RMA 9: board replaced",
		       "--supervisor", "sam", "--supervisor-password-file", pw,
		       "--slot", clone->port, "provision", NULL);
	fx_devsim_stop(clone);
	cr_assert_eq(R.code, 0, "stdout:%s\nstderr:%s", R.out, R.err);
	cr_assert_eq(fx_count_units(&w, "UNFUSED"), 2);
	fx_q_text(&w, "SELECT cert_serial FROM units WHERE state = 'UNFUSED' ORDER BY id DESC",
		  now, sizeof(now));
	cr_assert_str_neq(now, serial);
	fx_q_text(&w, "SELECT cert_serial FROM revocations", text, sizeof(text));
	cr_assert_str_eq(text, serial);
	fx_q_text(&w, "SELECT revoked_by || ': ' || reason FROM revocations", text,
		  sizeof(text));
	cr_assert_str_eq(text, "sam: RMA 9: board replaced");
	fx_q_text(&w, "SELECT detail FROM steps WHERE step = 'reprovision'", text, sizeof(text));
	cr_assert(strstr(text, "supervisor sam"), "%s", text);
	fx_station_run(&R, &w, "--ca-cert", w.ca, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "records verify: %s%s", R.out, R.err);
	one_live_identity(&w, "bundle", uid, now);
	fx_rmtree(w.dir);
}

/* test_roles.c — only approved recipes run, and every action has a name:
 * signed profiles (unsigned, one changed byte, an untrusted signer are
 * refused with nothing provisioned; a profile signed in the HSM runs and
 * its digest is on record), operators and supervisors from the signed
 * operator list, re-provisioning with a revoked serial in the CRL
 * (checked with openssl crl), quarantine release.  The real station
 * binary against SoftHSM and station-devsim; results read with sqlite3,
 * openssl and the simulator's own state file. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

#define ALICE_PW "alice-secret-1"
#define SAM_PW "sam-secret-22"

/* Output of a shell command (stdout+stderr) and its exit code. */
static int sh(char *out, size_t cap, const char *cmd)
{
	FILE *p = popen(cmd, "r");
	size_t n;

	cr_assert_not_null(p, "cannot run %s", cmd);
	n = fread(out, 1, cap - 1, p);
	out[n] = '\0';
	return pclose(p);
}

static void sha256_file(const char *path, char hex[65])
{
	char cmd[1024], out[512];

	snprintf(cmd, sizeof(cmd), "openssl dgst -sha256 -r '%s'", path);
	cr_assert_eq(sh(out, sizeof(out), cmd), 0, "%s", out);
	snprintf(hex, 65, "%.64s", out);
}

/* The device has no certificate and no key from the station. */
static void assert_untouched(const fx_devsim *sim)
{
	json_t *st = NULL, *u;
	const char *cert;

	cr_assert_eq(fx_devsim_dump(sim->state_path, &st), 0);
	u = json_array_get(json_object_get(st, "units"), 0);
	cr_assert_not_null(u);
	cert = json_string_value(json_object_get(u, "cert"));
	cr_assert(!cert || !*cert, "the device got a certificate: %s", cert);
	json_decref(st);
}

/* A profile that must be refused: exit 2, the message, no unit on record,
 * the device untouched. */
static void refused(fx_world *w, fx_devsim *sim, const char *expect)
{
	fx_run r;

	fx_station_run(&r, w, "--slot", sim->port, "provision", NULL);
	cr_assert_eq(r.code, 2, "exit %d\nstdout:%s\nstderr:%s", r.code, r.out, r.err);
	cr_assert(strstr(r.err, expect), "no '%s' in: %s", expect, r.err);
	cr_assert(strstr(r.err, w->profile), "the message names no file: %s", r.err);
	cr_assert(strstr(r.err, "nothing was provisioned"), "%s", r.err);
	cr_assert_eq(fx_count_units(w, NULL), 0, "a unit was recorded");
	assert_untouched(sim);
}

Test(signed, unsigned_profile_is_refused, .timeout = 90)
{
	fx_world w;
	fx_devsim sim;
	char sig[600];

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed u1"), 0);
	snprintf(sig, sizeof(sig), "%s.sig", w.profile);
	cr_assert_eq(unlink(sig), 0);
	refused(&w, &sim, "is not signed");
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

Test(signed, one_changed_byte_is_refused, .timeout = 90)
{
	fx_world w;
	fx_devsim sim;
	FILE *f;
	int c;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed u2"), 0);
	/* "test-sensor" -> "Test-sensor": one byte */
	f = fopen(w.profile, "r+");
	cr_assert_not_null(f);
	cr_assert_eq(fseek(f, 8, SEEK_SET), 0);
	c = fgetc(f);
	cr_assert_eq(c, 't');
	cr_assert_eq(fseek(f, 8, SEEK_SET), 0);
	fputc('T', f);
	fclose(f);
	refused(&w, &sim, "does not verify under any trusted engineering key");
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

Test(signed, untrusted_signer_is_refused, .timeout = 90)
{
	fx_world w;
	fx_devsim sim;
	char key[512], pub[512];

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed u3"), 0);
	fx_path(key, &w, "rogue.key.pem");
	fx_path(pub, &w, "rogue.pub.pem");
	fx_engkey_make(key, pub);
	fx_sign_with(key, w.profile);
	refused(&w, &sim, "does not verify under any trusted engineering key");
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

/* An engineering key in the HSM signs the profile; plain openssl checks
 * the signature; the station runs it and records its digest. */
Test(signed, hsm_signed_profile_runs_and_its_digest_is_recorded, .timeout = 120)
{
	fx_world w;
	fx_devsim sim;
	fx_run r;
	char cmd[2048], out[4096], digest[65], got[128], sig[600];

	fx_world_init(&w, true, 2000);
	/* The world's software key is no longer trusted: the HSM key is. */
	fx_station_run(&r, &w, "profile", "keygen", "--key", "eng-2027", "--out",
		       w.engpub, NULL);
	cr_assert_eq(r.code, 0, "%s", r.err);
	fx_station_run(&r, &w, "profile", "sign", "--key", "eng-2027", "--in",
		       w.profile, NULL);
	cr_assert_eq(r.code, 0, "%s", r.err);
	snprintf(sig, sizeof(sig), "%s.sig", w.profile);
	snprintf(cmd, sizeof(cmd), "openssl dgst -sha256 -verify '%s' -signature '%s' "
		 "'%s' 2>&1", w.engpub, sig, w.profile);
	cr_assert_eq(sh(out, sizeof(out), cmd), 0, "openssl: %s", out);
	cr_assert(strstr(out, "Verified OK"), "%s", out);
	fx_station_run(&r, &w, "profile", "verify", NULL);
	cr_assert_eq(r.code, 0, "%s", r.err);
	cr_assert(strstr(r.out, "signature OK"), "%s", r.out);
	/* The key never leaves the token: signing again with a missing key
	 * is an error naming it. */
	fx_station_run(&r, &w, "profile", "sign", "--key", "nope", "--in", w.profile,
		       "--out", "/dev/null", NULL);
	cr_assert_neq(r.code, 0);
	cr_assert(strstr(r.err, "'nope'"), "%s", r.err);

	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed s1"), 0);
	fx_station_run(&r, &w, "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert_eq(fx_count_units(&w, "UNFUSED"), 1); /* unarmed */
	sha256_file(w.profile, digest);
	fx_q_text(&w, "SELECT profile_digest FROM units", got, sizeof(got));
	cr_assert_str_eq(got, digest);
	/* ... and in the signed audit chain, with the signer */
	fx_q_text(&w, "SELECT body FROM events WHERE kind = 'station_start'", out, sizeof(out));
	cr_assert(strstr(out, digest), "%s", out);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM events WHERE kind = 'operator_login'"
			   " AND body LIKE '%profile_signer%'"), 1);
	fx_station_run(&r, &w, "records", "verify", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

/* ---- roles ---- */

/* Password files, the signed operator list (alice: operator; sam:
 * operator + supervisor; eve: engineer) and roles in the configuration. */
static void roles_init(fx_world *w)
{
	static const struct { const char *name, *roles, *pw; } people[] = {
		{ "alice", "operator", ALICE_PW },
		{ "sam", "operator,supervisor", SAM_PW },
		{ "eve", "engineer", "eve-secret-333" },
	};
	char list[4096] = "operators = (\n", path[512], conf[8192];
	fx_run *r = malloc(sizeof(*r));
	FILE *f;
	size_t n;

	cr_assert_not_null(r);
	for (size_t i = 0; i < ST_ARRAY_SIZE(people); i++) {
		char *nl;

		snprintf(path, sizeof(path), "%s/%s.pw", w->dir, people[i].name);
		f = fopen(path, "w");
		cr_assert_not_null(f);
		fprintf(f, "%s\n", people[i].pw);
		fclose(f);
		fx_station_run(r, w, "operator", "hash", "--operator", people[i].name,
			       "--role", people[i].roles, "--password-file", path, NULL);
		cr_assert_eq(r->code, 0, "%s", r->err);
		cr_assert(strstr(r->out, "\"$y$"), "not a yescrypt hash: %s", r->out);
		cr_assert_null(strstr(r->out, people[i].pw), "the password was printed");
		nl = strchr(r->out, '\n');
		if (nl)
			*nl = '\0';
		strcat(list, "  ");
		strcat(list, r->out);
		strcat(list, "\n");
	}
	/* the last entry of a libconfig list takes no comma */
	n = strlen(list);
	cr_assert_eq(list[n - 2], ',');
	list[n - 2] = '\n';
	list[n - 1] = '\0';
	strcat(list, ");\n");
	fx_path(path, w, "operators.conf");
	fx_write_file(path, list);
	fx_sign(w, path);
	f = fopen(w->conf, "r");
	cr_assert_not_null(f);
	n = fread(conf, 1, sizeof(conf) - 1, f);
	conf[n] = '\0';
	fclose(f);
	snprintf(conf + n, sizeof(conf) - n, "roles: { operators = \"%s\"; require = true; };\n",
		 path);
	fx_write_file(w->conf, conf);
	free(r);
}

static void pwfile(char out[512], const fx_world *w, const char *name)
{
	snprintf(out, 512, "%s/%s.pw", w->dir, name);
}

Test(roles, operator_needs_the_right_password_and_is_recorded, .timeout = 120)
{
	fx_world w;
	fx_devsim sim;
	fx_run r;
	char pw[512], wrong[512], who[128], body[4096];

	fx_world_init(&w, true, 2000);
	roles_init(&w);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed r1"), 0);
	/* nobody named: refused (roles.require) */
	fx_station_run(&r, &w, "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 2, "%s", r.err);
	cr_assert(strstr(r.err, "--operator NAME"), "%s", r.err);
	/* a wrong password: refused, on record, no secret printed */
	fx_path(wrong, &w, "wrong.pw");
	fx_write_file(wrong, "not-alices-password\n");
	fx_station_run(&r, &w, "--operator", "alice", "--password-file", wrong,
		       "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 2, "%s", r.err);
	cr_assert(strstr(r.err, "operator refused"), "%s", r.err);
	cr_assert_null(strstr(r.err, "not-alices-password"), "%s", r.err);
	cr_assert_null(strstr(r.out, "not-alices-password"), "%s", r.out);
	cr_assert_eq(fx_count_units(&w, NULL), 0);
	assert_untouched(&sim);
	fx_q_text(&w, "SELECT body FROM events WHERE kind = 'auth_refused'", body, sizeof(body));
	cr_assert(strstr(body, "\"alice\""), "%s", body);
	cr_assert_null(strstr(body, "not-alices-password"), "%s", body);
	/* the password from the environment, removed once read */
	pwfile(pw, &w, "alice");
	fx_station_run(&r, &w, "--operator", "alice", "--password-file", pw,
		       "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_q_text(&w, "SELECT operator FROM units WHERE state = 'UNFUSED'", who, sizeof(who));
	cr_assert_str_eq(who, "alice");
	fx_q_text(&w, "SELECT body FROM events WHERE kind = 'operator_login'", body,
	       sizeof(body));
	cr_assert(strstr(body, "\"authenticated\":\"yes\""), "%s", body);
	fx_station_run(&r, &w, "records", "verify", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

Test(roles, reprovision_needs_a_supervisor_and_revokes_the_old_serial, .timeout = 180)
{
	fx_world w;
	fx_devsim sim;
	fx_run r;
	char apw[512], spw[512], old_serial[128], new_serial[128], text[4096];
	char crl[512], cmd[2048], out[16384], uid[128];

	fx_world_init(&w, true, 2000);
	roles_init(&w);
	pwfile(apw, &w, "alice");
	pwfile(spw, &w, "sam");
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed r2"), 0);
	fx_station_run(&r, &w, "--operator", "alice", "--password-file", apw,
		       "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_q_text(&w, "SELECT cert_serial FROM units WHERE state = 'PASS'", old_serial,
	       sizeof(old_serial));
	fx_q_text(&w, "SELECT uid FROM units WHERE state = 'PASS'", uid, sizeof(uid));
	fx_devsim_stop(&sim);

	/* no supervisor: refused before anything */
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed r2"), 0);
	fx_station_run(&r, &w, "--operator", "alice", "--password-file", apw,
		       "--reprovision", "--reason", "RMA 7", "--burn-fuses", "--yes", "--slot", sim.port,
		       "provision", NULL);
	cr_assert_eq(r.code, 2, "%s", r.err);
	cr_assert(strstr(r.err, "--supervisor NAME"), "%s", r.err);
	/* an operator cannot: alice is not a supervisor */
	fx_station_run(&r, &w, "--operator", "alice", "--password-file", apw,
		       "--reprovision", "--reason", "RMA 7", "--supervisor", "alice",
		       "--supervisor-password-file", apw, "--burn-fuses", "--yes", "--slot", sim.port,
		       "provision", NULL);
	cr_assert_eq(r.code, 2, "%s", r.err);
	cr_assert(strstr(r.err, "is not a supervisor"), "%s", r.err);
	cr_assert_eq(fx_count_units(&w, NULL), 1, "a unit was recorded");
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM revocations"), 0);
	/* without --reprovision the device is skipped, as always */
	fx_station_run(&r, &w, "--operator", "alice", "--password-file", apw,
		       "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "%s", r.err);
	cr_assert(strstr(r.err, "already provisioned"), "%s", r.err);
	fx_devsim_stop(&sim);

	/* the supervisor, with a reason: a new identity, the old one revoked */
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed r2"), 0);
	fx_station_run(&r, &w, "--operator", "alice", "--password-file", apw,
		       "--reprovision", "--reason", "RMA 7: key compromised",
		       "--supervisor", "sam", "--supervisor-password-file", spw,
		       "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_devsim_stop(&sim);
	cr_assert_eq(fx_count_units(&w, "PASS"), 2);
	fx_q_text(&w, "SELECT cert_serial FROM units WHERE state = 'PASS' ORDER BY id DESC",
	       new_serial, sizeof(new_serial));
	cr_assert_str_neq(new_serial, old_serial);
	fx_q_text(&w, "SELECT cert_serial FROM revocations", text, sizeof(text));
	cr_assert_str_eq(text, old_serial);
	fx_q_text(&w, "SELECT revoked_by || ': ' || reason FROM revocations", text, sizeof(text));
	cr_assert_str_eq(text, "sam: RMA 7: key compromised");
	fx_q_text(&w, "SELECT detail FROM steps WHERE step = 'reprovision'", text, sizeof(text));
	cr_assert(strstr(text, "supervisor sam") && strstr(text, "RMA 7: key compromised"),
		  "%s", text);
	fx_q_text(&w, "SELECT body FROM events WHERE kind = 'revoke'", text, sizeof(text));
	cr_assert(strstr(text, old_serial) && strstr(text, "\"sam\""), "%s", text);
	fx_station_run(&r, &w, "records", "verify", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	fx_check_pass(&w, sim.state_path, uid);

	/* the revocation list, signed by the CA in the HSM */
	fx_path(crl, &w, "line.crl");
	fx_station_run(&r, &w, "crl", "export", "--out", crl, NULL);
	cr_assert_eq(r.code, 0, "%s", r.err);
	cr_assert(strstr(r.out, "1 revoked certificate"), "%s", r.out);
	snprintf(cmd, sizeof(cmd), "openssl crl -in '%s' -CAfile '%s' -noout 2>&1", crl,
		 w.ca);
	cr_assert_eq(sh(out, sizeof(out), cmd), 0, "openssl crl: %s", out);
	cr_assert(strstr(out, "verify OK"), "%s", out);
	snprintf(cmd, sizeof(cmd), "openssl crl -in '%s' -noout -text 2>&1", crl);
	cr_assert_eq(sh(out, sizeof(out), cmd), 0, "openssl crl: %s", out);
	cr_assert(strstr(out, old_serial), "old serial %s not in:\n%s", old_serial, out);
	cr_assert_null(strstr(out, new_serial), "the new serial is revoked:\n%s", out);
	cr_assert(strstr(out, "Superseded"), "%s", out);
	fx_rmtree(w.dir);
}

/* Revocations are checked against their signed events both ways: a
 * revocation row deleted (its trigger dropped), one inserted without an
 * event, or one changed fails verify, and no CRL is made from such a
 * store (it would silently leave a certificate out). */
Test(roles, revocations_are_checked_both_ways_and_no_clean_crl_is_made, .timeout = 180)
{
	fx_world w;
	fx_devsim sim;
	fx_run r;
	char apw[512], spw[512], crl[512], clean[512], cmd[2048];

	fx_world_init(&w, true, 2000);
	roles_init(&w);
	pwfile(apw, &w, "alice");
	pwfile(spw, &w, "sam");
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed r5"), 0);
	fx_station_run(&r, &w, "--operator", "alice", "--password-file", apw,
		       "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_devsim_stop(&sim);
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed r5"), 0);
	fx_station_run(&r, &w, "--operator", "alice", "--password-file", apw,
		       "--reprovision", "--reason", "RMA 8", "--supervisor", "sam",
		       "--supervisor-password-file", spw, "--burn-fuses", "--yes", "--slot", sim.port,
		       "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_devsim_stop(&sim);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM revocations"), 1);
	fx_station_run(&r, &w, "records", "verify", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	fx_path(clean, &w, "clean.db");
	fx_path(crl, &w, "line.crl");
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", w.db, clean);
	cr_assert_eq(system(cmd), 0);

	/* deleted */
	snprintf(cmd, sizeof(cmd), "sqlite3 '%s' 'DROP TRIGGER revocations_no_delete;"
		 " DELETE FROM revocations'", w.db);
	cr_assert_eq(system(cmd), 0);
	fx_station_run(&r, &w, "records", "verify", NULL);
	cr_assert_eq(r.code, 4, "%s%s", r.out, r.err);
	cr_assert(strstr(r.out, "the revocation of unit 1, device ") &&
		  strstr(r.out, "its revocations row is missing"), "%s", r.out);
	fx_station_run(&r, &w, "crl", "export", "--out", crl, NULL);
	cr_assert_eq(r.code, 4, "a CRL from a store that lost a revocation: %s%s",
		     r.out, r.err);
	cr_assert(strstr(r.err, "no CRL written"), "%s", r.err);
	cr_assert_neq(access(crl, F_OK), 0, "a CRL was written");

	/* inserted without an event: the new identity revoked behind the
	 * chain's back */
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && sqlite3 '%s' \"INSERT INTO"
		 " revocations (unit_id, uid, cert_serial, reason, revoked_by,"
		 " revoked_at) SELECT id, uid, cert_serial, 'forged', 'mallory',"
		 " started_at FROM units WHERE id = 2\"", clean, w.db, w.db);
	cr_assert_eq(system(cmd), 0);
	fx_station_run(&r, &w, "records", "verify", NULL);
	cr_assert_eq(r.code, 4, "%s%s", r.out, r.err);
	cr_assert(strstr(r.out, "2 revocations rows but 1 revoke events"), "%s", r.out);
	fx_station_run(&r, &w, "crl", "export", "--out", crl, NULL);
	cr_assert_eq(r.code, 4, "%s%s", r.out, r.err);

	/* changed */
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && sqlite3 '%s' 'DROP TRIGGER"
		 " revocations_final; UPDATE revocations SET revoked_by = \"nobody\"'",
		 clean, w.db, w.db);
	cr_assert_eq(system(cmd), 0);
	fx_station_run(&r, &w, "records", "verify", NULL);
	cr_assert_eq(r.code, 4, "%s%s", r.out, r.err);
	cr_assert(strstr(r.out, "column revoked_by of table revocations"), "%s", r.out);

	/* untouched: the CRL is made */
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", clean, w.db);
	cr_assert_eq(system(cmd), 0);
	fx_station_run(&r, &w, "crl", "export", "--out", crl, NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	cr_assert(strstr(r.out, "1 revoked certificate"), "%s", r.out);
	fx_rmtree(w.dir);
}

/* Only an engineer installs a profile, only a signed one; recorded. */
Test(roles, profile_install_is_for_an_engineer_and_recorded, .timeout = 120)
{
	fx_world w;
	fx_run r;
	char apw[512], epw[512], fresh[512], unsigned_p[512], text[4096], digest[65];
	const char *v2 = "name = \"test-sensor-v2\";\n"
		"certificate: { organization = \"Test Devices\"; validity_days = 365; };\n"
		"root_of_trust: { sha256 = \"" FX_ROT "\"; fuse_bank = 0; };\n";
	FILE *f;
	size_t n;

	fx_world_init(&w, true, 2000);
	roles_init(&w);
	pwfile(apw, &w, "alice");
	pwfile(epw, &w, "eve");
	fx_path(fresh, &w, "v2.profile");
	fx_write_file(fresh, v2);
	fx_sign(&w, fresh);
	fx_path(unsigned_p, &w, "v3.profile");
	fx_write_file(unsigned_p, v2);
	/* an operator cannot */
	fx_station_run(&r, &w, "profile", "install", "--in", fresh, "--operator", "alice",
		       "--password-file", apw, NULL);
	cr_assert_eq(r.code, 2, "%s", r.err);
	cr_assert(strstr(r.err, "is not an engineer"), "%s", r.err);
	/* an unsigned profile is not installed, even by an engineer */
	fx_station_run(&r, &w, "profile", "install", "--in", unsigned_p, "--operator",
		       "eve", "--password-file", epw, NULL);
	cr_assert_eq(r.code, 2, "%s", r.err);
	cr_assert(strstr(r.err, "is not signed"), "%s", r.err);
	f = fopen(w.profile, "r");
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	cr_assert_str_eq(text, FX_PROFILE, "the installed profile changed");
	/* the engineer installs the signed one; it is on record */
	fx_station_run(&r, &w, "profile", "install", "--in", fresh, "--operator", "eve",
		       "--password-file", epw, NULL);
	cr_assert_eq(r.code, 0, "%s", r.err);
	f = fopen(w.profile, "r");
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	cr_assert_str_eq(text, v2);
	fx_station_run(&r, &w, "profile", "verify", NULL);
	cr_assert_eq(r.code, 0, "the installed profile does not verify: %s", r.err);
	sha256_file(w.profile, digest);
	fx_q_text(&w, "SELECT body FROM events WHERE kind = 'profile_install'", text,
	       sizeof(text));
	cr_assert(strstr(text, "\"eve\"") && strstr(text, digest), "%s", text);
	fx_station_run(&r, &w, "records", "verify", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	fx_rmtree(w.dir);
}

/* A locked device cannot take a new identity: re-provisioning it revokes
 * nothing and leaves it as it is. */
Test(roles, a_locked_device_is_not_reprovisioned, .timeout = 180)
{
	fx_world_opts o = { .with_ca = true, .timeout_ms = 2000 };
	fx_world w;
	fx_devsim sim;
	fx_run r;
	char apw[512], spw[512], profile[2048];

	snprintf(profile, sizeof(profile), "%s%s", FX_PROFILE,
		 "fuses: {\n  conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n"
		 "  plan = ( { name = \"lock\"; kind = \"lifecycle\"; state = \"locked\"; } );\n"
		 "};\n");
	o.profile = profile;
	fx_world_init_opts(&w, &o);
	roles_init(&w);
	pwfile(apw, &w, "alice");
	pwfile(spw, &w, "sam");
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed l1"), 0);
	fx_station_run(&r, &w, "--operator", "alice", "--password-file", apw,
		       "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_devsim_stop(&sim);
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed l1"), 0);
	fx_station_run(&r, &w, "--operator", "alice", "--password-file", apw,
		       "--reprovision", "--reason", "RMA 9", "--supervisor", "sam",
		       "--supervisor-password-file", spw, "--slot", sim.port,
		       "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.err, "the device is locked"), "%s", r.err);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM revocations"), 0);
	cr_assert_eq(fx_count_units(&w, NULL), 1);
	cr_assert_eq(fx_count_units(&w, "PASS"), 1);
	fx_rmtree(w.dir);
}

#define Z8 "00000000"
#define QPLAN \
	"fuses: {\n" \
	"  conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n" \
	"  plan = ( { name = \"secure-boot\"; bank = 1; word = 0; bits = [0, 0]; value = 1; } );\n" \
	"};\n"

Test(roles, quarantine_release_is_for_a_supervisor_with_a_reason, .timeout = 180)
{
	fx_world_opts o = { .with_ca = true, .timeout_ms = 2000 };
	fx_world w;
	fx_devsim sim;
	fx_run r;
	char apw[512], spw[512], uid[128], text[4096], profile[2048];
	json_t *st = NULL, *u;

	snprintf(profile, sizeof(profile), "%s%s", FX_PROFILE, QPLAN);
	o.profile = profile;
	fx_world_init_opts(&w, &o);
	roles_init(&w);
	pwfile(apw, &w, "alice");
	pwfile(spw, &w, "sam");
	/* a unit whose fuse holds another value: QUARANTINE */
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed q1"), 0);
	fx_devsim_stop(&sim);
	cr_assert_eq(fx_devsim_dump(sim.state_path, &st), 0);
	u = json_array_get(json_object_get(st, "units"), 0);
	json_array_set_new(json_object_get(u, "fuses"), 1, json_string("02000000" Z8 Z8 Z8 Z8 Z8 Z8 Z8));
	json_array_set_new(json_object_get(u, "fuses_redundant"), 1,
			   json_string("02000000" Z8 Z8 Z8 Z8 Z8 Z8 Z8));
	cr_assert_eq(json_dump_file(st, sim.state_path, 0), 0);
	json_decref(st);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed q1"), 0);
	fx_station_run(&r, &w, "--operator", "alice", "--password-file", apw,
		       "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 1, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_devsim_stop(&sim);
	fx_q_text(&w, "SELECT uid FROM units WHERE state = 'QUARANTINE'", uid, sizeof(uid));
	cr_assert(uid[0]);

	/* an operator cannot release it */
	fx_station_run(&r, &w, "quarantine", "release", "--uid", uid, "--supervisor",
		       "alice", "--supervisor-password-file", apw, "--reason", "checked",
		       NULL);
	cr_assert_eq(r.code, 2, "%s", r.err);
	cr_assert(strstr(r.err, "is not a supervisor"), "%s", r.err);
	cr_assert_eq(fx_count_units(&w, NULL), 1);
	/* nor a supervisor without a reason, nor with a wrong password */
	fx_station_run(&r, &w, "quarantine", "release", "--uid", uid, "--supervisor",
		       "sam", "--supervisor-password-file", spw, NULL);
	cr_assert_eq(r.code, 2, "%s", r.err);
	cr_assert(strstr(r.err, "--reason"), "%s", r.err);
	fx_station_run(&r, &w, "quarantine", "release", "--uid", uid, "--supervisor",
		       "sam", "--supervisor-password-file", apw, "--reason", "checked",
		       NULL);
	cr_assert_eq(r.code, 2, "%s", r.err);
	cr_assert_null(strstr(r.err, ALICE_PW));
	cr_assert_eq(fx_count_units(&w, NULL), 1);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM events WHERE kind = 'auth_refused'"), 2);
	/* the supervisor releases it, on record with the reason */
	fx_station_run(&r, &w, "quarantine", "release", "--uid", uid, "--supervisor",
		       "sam", "--supervisor-password-file", spw, "--reason",
		       "fuse bank 1 read checked on the bench", NULL);
	cr_assert_eq(r.code, 0, "%s", r.err);
	fx_q_text(&w, "SELECT operator || ' | ' || reason FROM units ORDER BY id DESC", text,
	       sizeof(text));
	cr_assert(strstr(text, "sam | released from quarantine"), "%s", text);
	cr_assert(strstr(text, "fuse bank 1 read checked on the bench"), "%s", text);
	fx_q_text(&w, "SELECT body FROM events WHERE kind = 'quarantine_release'", text,
	       sizeof(text));
	cr_assert(strstr(text, "\"sam\"") && strstr(text, "bench"), "%s", text);
	/* releasing twice: nothing to release */
	fx_station_run(&r, &w, "quarantine", "release", "--uid", uid, "--supervisor",
		       "sam", "--supervisor-password-file", spw, "--reason", "again", NULL);
	cr_assert_eq(r.code, 2, "%s", r.err);
	cr_assert(strstr(r.err, "not quarantined"), "%s", r.err);
	/* the next run looks at the unit again (and finds the same fuse) */
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--seed q1"), 0);
	fx_station_run(&r, &w, "--operator", "alice", "--password-file", apw,
		       "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_null(strstr(r.err, "QUARANTINED on record"), "%s", r.err);
	cr_assert_eq(fx_count_units(&w, NULL), 3, "the released unit was not looked at again");
	fx_station_run(&r, &w, "records", "verify", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	fx_rmtree(w.dir);
}

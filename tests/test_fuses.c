/* test_fuses.c — the fuse plan end to end: the real `station` binary
 * against station-devsim (word-level OTP with redundant copies, brown-out,
 * stuck bits, slow burns, programming conditions) and a fresh SoftHSM
 * token.  Verdicts are checked outside the station: the simulator's own
 * state file (fuses, redundant copies, burn_count, last_burn), the SQLite
 * records, and the programmer driver talking to the simulator directly. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "device-drivers/drv.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

#define Z8 "00000000"
#define BLANK Z8 Z8 Z8 Z8 Z8 Z8 Z8 Z8
/* What the plan below leaves in banks 1 and 3. */
#define BANK1 "01000000" "0f000000" Z8 Z8 Z8 Z8 Z8 Z8
#define BANK3 "03000000" Z8 Z8 Z8 Z8 Z8 Z8 Z8
#define NBURNS 4 /* fields that burn: rot-hash, secure-boot, jtag-disable, rot-wp */

#define PLAN \
	"fuses: {\n" \
	"  conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n" \
	"  plan = (\n" \
	"    { name = \"rot-hash\"; bank = 0; word = 0; words = 8; source = \"root_of_trust\"; },\n" \
	"    { name = \"secure-boot\"; bank = 1; word = 0; bits = [0, 0]; value = 1; },\n" \
	"    { name = \"jtag-disable\"; bank = 1; word = 1; bits = [0, 3]; value = 0xF; },\n" \
	"    { name = \"rot-wp\"; kind = \"write-protect\"; bank = 3; word = 0; bits = [0, 1]; value = 3; },\n" \
	"    { name = \"lock\"; kind = \"lifecycle\"; state = \"locked\"; }\n" \
	"  );\n" \
	"};\n"

/* A world: token with a CA, configuration, profile (FX_PROFILE + fuses). */
static void world_init(fx_world *w, const char *fuses, int timeout_ms)
{
	char text[4096];
	fx_world_opts o = { .with_ca = true, .timeout_ms = timeout_ms, .profile = text,
			    .profile_file = "test.profile" };

	snprintf(text, sizeof(text), "%s%s", FX_PROFILE, fuses ? fuses : "");
	fx_world_init_opts(w, &o);
}

/* Unit i of the simulator, from its own state file. */
static json_t *sim_unit(const char *state_path, size_t i)
{
	json_t *st = NULL, *u;

	cr_assert_eq(fx_devsim_dump(state_path, &st), 0);
	u = json_incref(json_array_get(json_object_get(st, "units"), i));
	json_decref(st);
	cr_assert_not_null(u);
	return u;
}

static const char *bank_hex(json_t *u, const char *which, size_t bank)
{
	return json_string_value(json_array_get(json_object_get(u, which), bank));
}

static long long jint(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

/* The device holds the whole plan, both copies, locked. */
static void assert_plan_burned(json_t *u)
{
	cr_assert_str_eq(bank_hex(u, "fuses", 0), FX_ROT);
	cr_assert_str_eq(bank_hex(u, "fuses", 1), BANK1);
	cr_assert_str_eq(bank_hex(u, "fuses", 2), BLANK);
	cr_assert_str_eq(bank_hex(u, "fuses", 3), BANK3);
	for (int b = 0; b < 4; b++)
		cr_assert_str_eq(bank_hex(u, "fuses", b), bank_hex(u, "fuses_redundant", b),
				 "bank %d: redundant copy differs", b);
	cr_assert_eq(jint(u, "lifecycle"), 2, "not locked");
}

/* Write fuse banks into the simulator's stopped state file (unit 0):
 * primary and redundant copies (red NULL: same as primary). */
static void preset(const char *state_path, int bank, const char *primary,
		   const char *red)
{
	json_t *st = NULL, *u;

	cr_assert_eq(fx_devsim_dump(state_path, &st), 0);
	u = json_array_get(json_object_get(st, "units"), 0);
	json_array_set_new(json_object_get(u, "fuses"), (size_t)bank, json_string(primary));
	json_array_set_new(json_object_get(u, "fuses_redundant"), (size_t)bank,
			   json_string(red ? red : primary));
	cr_assert_eq(json_dump_file(st, state_path, 0), 0);
	json_decref(st);
}

/* SHA-256 of a file, hex. */
static void file_sha(const char *p, char out[65])
{
	uint8_t buf[65536], md[32];
	FILE *f = fopen(p, "rb");
	size_t n;

	cr_assert_not_null(f);
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	SHA256(buf, n, md);
	st_hex(md, 32, out);
}

static void start_sim(fx_devsim *s, const fx_world *w, int units, const char *extra)
{
	cr_assert_eq(fx_devsim_start(s, w->dir, "prog1", units, extra), 0,
		     "station-devsim did not start");
}

/* Create the simulator's state (blank units), then stop it for presets. */
static void make_state(fx_devsim *s, const fx_world *w, int units)
{
	start_sim(s, w, units, NULL);
	fx_devsim_stop(s);
}

/* ---- the branches of plan → check → burn → verify ---- */

Test(fuses, blank_unit_gets_every_field_once_then_lock, .timeout = 90)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	char detail[512], want[64];
	json_t *u;

	world_init(&w, PLAN, 2000);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--json", "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.out, "\"fuses\":\"burned\""), "%s", r.out);
	u = sim_unit(sim.state_path, 0);
	assert_plan_burned(u);
	cr_assert_eq(jint(u, "burn_count"), NBURNS, "each field burned exactly once");
	/* The last burn the device saw carries the request id of the last
	 * intent the station recorded before it. */
	fx_q_text(&w, "SELECT detail FROM steps WHERE step = 'fuse-intent' ORDER BY id DESC "
	       "LIMIT 1", detail, sizeof(detail));
	snprintf(want, sizeof(want), "request %08llx",
		 (long long)jint(json_object_get(u, "last_burn"), "id"));
	cr_assert(strstr(detail, want), "intent '%s' vs device %s", detail, want);
	cr_assert(strstr(detail, "field rot-wp bank 3"), "%s", detail);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'fuse-intent'"), NBURNS);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'fuse' AND "
			   "outcome = 'ok'"), NBURNS);
	/* Intent strictly before its outcome, and lifecycle after every fuse. */
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps i JOIN steps o ON o.unit_id = "
			   "i.unit_id AND o.step = 'fuse' AND o.seq = i.seq + 1 WHERE "
			   "i.step = 'fuse-intent'"), NBURNS);
	cr_assert_eq(fx_q_int(&w, "SELECT min(seq) > (SELECT max(seq) FROM steps WHERE step = "
			   "'fuse') FROM steps WHERE step = 'lifecycle-intent'"), 1);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE state = 'PASS' AND "
			   "fuse_readback = '" FX_ROT "'"), 1);
	json_decref(u);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

Test(fuses, identical_fields_are_skipped_and_recorded, .timeout = 90)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	json_t *u;

	world_init(&w, PLAN, 2000);
	make_state(&sim, &w, 1);
	preset(sim.state_path, 0, FX_ROT, NULL);
	preset(sim.state_path, 1, BANK1, NULL);
	preset(sim.state_path, 3, BANK3, NULL);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--json", "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.out, "\"fuses\":\"already\""), "%s", r.out);
	u = sim_unit(sim.state_path, 0);
	assert_plan_burned(u);
	cr_assert_eq(jint(u, "burn_count"), 0, "nothing burned again");
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'fuse' AND "
			   "outcome = 'skip' AND detail LIKE '%verified, not burned again%'"),
		     NBURNS);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'fuse-intent'"), 0);
	json_decref(u);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

/* A field the device already holds differently: QUARANTINE with the reason,
 * nothing at all burned (the check of every field precedes any burn), and
 * a second run does not touch the unit. */
static void refused(const char *bank1, const char *expect_reason)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	char reason[1024];
	json_t *u;

	world_init(&w, PLAN, 2000);
	make_state(&sim, &w, 1);
	preset(sim.state_path, 1, bank1, NULL);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 1, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.out, "QUARANTINE"), "%s", r.out);
	fx_q_text(&w, "SELECT reason FROM units", reason, sizeof(reason));
	cr_assert(strstr(reason, expect_reason), "reason: %s", reason);
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 0, "a refused unit got a burn");
	cr_assert_str_eq(bank_hex(u, "fuses", 0), BLANK, "root of trust burned anyway");
	cr_assert_str_eq(bank_hex(u, "fuses", 1), bank1);
	cr_assert_eq(jint(u, "lifecycle"), 0);
	json_decref(u);
	/* Never again without a supervisor: the next run leaves it alone. */
	fx_devsim_stop(&sim);
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 1, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.err, "QUARANTINED on record"), "%s", r.err);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units"), 1, "a second record was opened");
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 0);
	json_decref(u);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

Test(fuses, different_value_quarantines_and_burns_nothing, .timeout = 90)
{
	/* jtag-disable wants 0x0f in word 1; it holds 0x01: only 0->1 would be
	 * needed, but a programmed word cannot be programmed again. */
	refused("01000000" "01000000" Z8 Z8 Z8 Z8 Z8 Z8, "different value in an already "
		"programmed word");
}

Test(fuses, one_to_zero_needed_quarantines, .timeout = 90)
{
	/* secure-boot wants 0x01; the word holds 0x02. */
	refused("02000000" Z8 Z8 Z8 Z8 Z8 Z8 Z8, "a bit would have to go 1->0");
}

Test(fuses, partial_burn_quarantines, .timeout = 90)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	char reason[1024], half[65];
	json_t *u;

	/* Words 0..3 of the root of trust hold the hash, 4..7 are blank. */
	snprintf(half, sizeof(half), "%.32s%s", FX_ROT, Z8 Z8 Z8 Z8);
	world_init(&w, PLAN, 2000);
	make_state(&sim, &w, 1);
	preset(sim.state_path, 0, half, NULL);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 1, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_q_text(&w, "SELECT reason FROM units WHERE state = 'QUARANTINE'", reason, sizeof(reason));
	cr_assert(strstr(reason, "partially burned: 4 of 8 words"), "reason: %s", reason);
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 0);
	cr_assert_str_eq(bank_hex(u, "fuses", 0), half);
	json_decref(u);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

/* A word whose copies disagree reads as the target and is still refused. */
Test(fuses, half_programmed_word_quarantines_even_when_it_reads_right, .timeout = 90)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	char reason[1024], red[65];
	json_t *u;

	snprintf(red, sizeof(red), "%.56s%s", FX_ROT, Z8);
	world_init(&w, PLAN, 2000);
	make_state(&sim, &w, 1);
	preset(sim.state_path, 0, FX_ROT, red);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 1, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_q_text(&w, "SELECT reason FROM units WHERE state = 'QUARANTINE'", reason, sizeof(reason));
	cr_assert(strstr(reason, "half-programmed"), "reason: %s", reason);
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 0);
	json_decref(u);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

static void out_of_range(const char *sim_args, const char *expect)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	char reason[1024];
	json_t *u;

	world_init(&w, PLAN, 2000);
	start_sim(&sim, &w, 1, sim_args);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 1, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.out, "FAIL"), "%s", r.out);
	fx_q_text(&w, "SELECT reason FROM units", reason, sizeof(reason));
	cr_assert(strstr(reason, "out of the profile's limits"), "reason: %s", reason);
	cr_assert(strstr(reason, expect), "reason: %s", reason);
	cr_assert(strstr(reason, "no fuse burned"), "reason: %s", reason);
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 0);
	for (int b = 0; b < 4; b++)
		cr_assert_str_eq(bank_hex(u, "fuses", b), BLANK);
	cr_assert_eq(jint(u, "lifecycle"), 0);
	json_decref(u);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

Test(fuses, voltage_out_of_range_refuses_to_burn, .timeout = 90)
{
	out_of_range("--vpp 2900", "vpp 2900 mV, allowed 2375..2625");
}

Test(fuses, temperature_out_of_range_refuses_to_burn, .timeout = 90)
{
	out_of_range("--temp -12.5", "temperature -12.5 C, allowed 0.0..70.0");
}

Test(fuses, dry_run_prints_the_plan_and_changes_nothing, .timeout = 90)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	char before[65], after[65], half[65];

	snprintf(half, sizeof(half), "%.32s%s", FX_ROT, Z8 Z8 Z8 Z8);
	world_init(&w, PLAN, 2000);
	make_state(&sim, &w, 1);
	preset(sim.state_path, 1, BANK1, NULL);
	preset(sim.state_path, 3, "01000000" Z8 Z8 Z8 Z8 Z8 Z8 Z8, NULL);
	start_sim(&sim, &w, 1, NULL);
	file_sha(sim.state_path, before);
	fx_station_run(&r, &w, "--dry-run", "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.out, "field rot-hash (data, bank 0 words 0-7): current " BLANK
			  ", target " FX_ROT ", action burn"), "%s", r.out);
	cr_assert(strstr(r.out, "field secure-boot (data, bank 1 words 0-0): current "
			  "01000000, target 01000000, action skip"), "%s", r.out);
	cr_assert(strstr(r.out, "field rot-wp (write-protect, bank 3 words 0-0): current "
			  "01000000, target 03000000, action refuse"), "%s", r.out);
	cr_assert(strstr(r.out, "lifecycle: current open, target locked, action advance"),
		  "%s", r.out);
	cr_assert(strstr(r.out, "conditions: vpp 2500 mV"), "%s", r.out);
	/* The same plan as JSON lines for tools. */
	fx_station_run(&r, &w, "--dry-run", "--json", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	{
		char *save = NULL;
		int n = 0;

		for (char *line = strtok_r(r.out, "\n", &save); line;
		     line = strtok_r(NULL, "\n", &save)) {
			json_t *o = json_loads(line, 0, NULL);

			cr_assert_not_null(o, "not JSON: %s", line);
			cr_assert_str_eq(json_string_value(json_object_get(o, "event")),
					 "fuse_plan");
			n++;
			json_decref(o);
		}
		cr_assert_eq(n, 6, "conditions + 4 fields + lifecycle");
	}
	/* Nothing changed on the device: the state file is byte-identical
	 * (the simulator saves after every change), and nothing was recorded. */
	fx_devsim_stop(&sim);
	file_sha(sim.state_path, after);
	cr_assert_str_eq(before, after, "the dry run changed the device");
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units"), 0);
	fx_rmtree(w.dir);
}

Test(fuses, unarmed_burns_nothing, .timeout = 90)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	json_t *u;

	world_init(&w, PLAN, 2000);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--json", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.out, "\"fuses\":\"not-armed\""), "%s", r.out);
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 0);
	for (int b = 0; b < 4; b++)
		cr_assert_str_eq(bank_hex(u, "fuses", b), BLANK);
	cr_assert_eq(jint(u, "lifecycle"), 0, "locked without --burn-fuses");
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step LIKE '%intent%'"), 0);
	json_decref(u);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

/* Output of a shell command (stdout and stderr) and its exit status. */
static int sh_out(char *out, size_t cap, const char *cmd)
{
	FILE *p = popen(cmd, "r");
	size_t n;

	cr_assert_not_null(p, "cannot run %s", cmd);
	n = fread(out, 1, cap - 1, p);
	out[n] = '\0';
	return pclose(p);
}

/* An unarmed run is not a locked PASS: the unit ends UNFUSED (records,
 * --json, `records list`), its certificate is a live identity (verifies
 * with a CRL check, not on the CRL), a second unarmed run leaves it alone,
 * and an armed run finishes it: the same certificate, the whole plan
 * burned, locked, PASS.  (Another root-of-trust hash in an unarmed run is
 * QUARANTINE with nothing issued: test_identity.c,
 * quarantined_unit_gets_no_certificate_unarmed.) */
Test(fuses, unarmed_is_unfused_and_an_armed_run_finishes_it, .timeout = 150)
{
	static char text[65536];
	fx_world w;
	fx_run r;
	fx_devsim sim;
	json_t *u, *ev;
	char uid[80], serial[80], upper[80], crl[600], cert[700], cmd[2048];

	world_init(&w, PLAN, 2000);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--json", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r.code, 0, "an all-UNFUSED unarmed run exits 0\nstdout:%s\nstderr:%s",
		     r.out, r.err);
	/* --json: the unit line and the summary */
	u = fx_json_events(r.out, "unit");
	cr_assert_eq(json_array_size(u), 1, "%s", r.out);
	ev = json_array_get(u, 0);
	cr_assert_str_eq(json_string_value(json_object_get(ev, "result")), "UNFUSED");
	cr_assert_str_eq(json_string_value(json_object_get(ev, "fuses")), "not-armed");
	snprintf(uid, sizeof(uid), "%s", json_string_value(json_object_get(ev, "uid")));
	json_decref(u);
	u = fx_json_events(r.out, "summary");
	cr_assert_eq(json_array_size(u), 1, "%s", r.out);
	cr_assert_eq(jint(json_array_get(u, 0), "unfused"), 1, "%s", r.out);
	cr_assert_eq(jint(json_array_get(u, 0), "pass"), 0, "%s", r.out);
	json_decref(u);
	/* the records (SQLite) */
	cr_assert_eq(fx_count_units(&w, "UNFUSED"), 1);
	cr_assert_eq(fx_count_units(&w, "PASS"), 0);
	fx_q_text(&w, "SELECT cert_serial FROM units WHERE state = 'UNFUSED'", serial,
		  sizeof(serial));
	cr_assert(serial[0], "an UNFUSED unit has no serial on record");
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM revocations"), 0);
	/* the device: identity written, nothing burned, not locked */
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 0);
	cr_assert_eq(jint(u, "lifecycle"), 0, "locked without --burn-fuses");
	cr_assert(json_is_string(json_object_get(u, "cert")), "no certificate on the device");
	json_decref(u);
	/* records list: an UNFUSED unit, not a PASS */
	fx_station_run(&r, &w, "--result", "UNFUSED", "records", "list", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	cr_assert(strstr(r.out, uid) && strstr(r.out, "UNFUSED") &&
		  strstr(r.out, "\n1 unit\n"), "%s", r.out);
	fx_station_run(&r, &w, "--result", "PASS", "records", "list", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	cr_assert(strstr(r.out, "0 units"), "%s", r.out);
	/* a live identity: verifies under the CA with a CRL check, not on the CRL */
	fx_path(crl, &w, "crl.pem");
	fx_station_run(&r, &w, "crl", "export", "--out", crl, NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	snprintf(cmd, sizeof(cmd), "openssl crl -in '%s' -noout -text 2>&1", crl);
	cr_assert_eq(sh_out(text, sizeof(text), cmd), 0, "openssl crl: %s", text);
	snprintf(upper, sizeof(upper), "%s", serial);
	for (char *c = upper; *c; c++)
		*c = (char)toupper((unsigned char)*c);
	cr_assert_null(strstr(text, upper), "the UNFUSED serial %s is revoked:\n%s",
		       serial, text);
	snprintf(cert, sizeof(cert), "%s/%s.pem", w.certs, uid);
	snprintf(cmd, sizeof(cmd), "openssl verify -crl_check -CAfile '%s' -CRLfile '%s' "
		 "'%s' 2>&1", w.ca, crl, cert);
	cr_assert_eq(sh_out(text, sizeof(text), cmd), 0, "openssl verify: %s", text);

	/* a second unarmed run: skipped, nothing new, nothing touched */
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.err, "already provisioned, not locked"), "%s", r.err);
	cr_assert(strstr(r.out, "1 skipped"), "%s", r.out);
	cr_assert_eq(fx_count_units(&w, NULL), 1, "a second record was made");
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 0);
	json_decref(u);

	/* armed: finished with the same certificate, burned, locked, PASS */
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.out, " PASS ") && strstr(r.out, serial), "%s", r.out);
	cr_assert_eq(fx_count_units(&w, "PASS"), 1);
	fx_q_text(&w, "SELECT cert_serial FROM units WHERE state = 'PASS'", text,
		  sizeof(text));
	cr_assert_str_eq(text, serial, "the armed run issued a second identity");
	cr_assert_eq(fx_q_int(&w, "SELECT count(DISTINCT cert_serial) FROM units"), 1);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM revocations"), 0);
	u = sim_unit(sim.state_path, 0);
	assert_plan_burned(u);
	cr_assert_eq(jint(u, "burn_count"), NBURNS);
	json_decref(u);
	fx_check_pass(&w, sim.state_path, uid);
	/* a third run, armed: a PASS on record is done */
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.err, "already provisioned (PASS on record)"), "%s", r.err);
	cr_assert_eq(fx_count_units(&w, "PASS"), 1);
	fx_station_run(&r, &w, "--ca-cert", w.ca, "records", "verify", NULL);
	cr_assert_eq(r.code, 0, "records verify: %s%s", r.out, r.err);
	fx_rmtree(w.dir);
}

Test(fuses, stuck_bit_is_caught_by_the_read_back, .timeout = 90)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	char reason[1024];
	json_t *u;

	/* ROT byte 0 is 0x26: bit 1 is meant to blow and never does. */
	world_init(&w, PLAN, 2000);
	start_sim(&sim, &w, 1, "--fault stuck:0:0:1");
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 1, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_q_text(&w, "SELECT reason FROM units WHERE state = 'QUARANTINE'", reason, sizeof(reason));
	cr_assert(strstr(reason, "field rot-hash reads back 2422"), "reason: %s", reason);
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 1, "burned once, then stopped");
	cr_assert_str_eq(bank_hex(u, "fuses", 1), BLANK, "went on after a bad read-back");
	cr_assert_eq(jint(u, "lifecycle"), 0);
	json_decref(u);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

/* Brown-out while the root of trust burns: the link drops after words 0..2
 * and half of word 3.  Not PASS: the link was lost with the intent open,
 * the same state as a crash there, so the same decision (docs/fuses.md):
 * the record closes as interrupted, and the next presentation reads the
 * device, finds the half-programmed word (kept across a power cycle) and
 * quarantines; no run burns it again. */
Test(fuses, brownout_mid_burn_quarantines_without_second_burn, .timeout = 120)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	char reason[1024];
	json_t *u;
	const char *p, *q;

	world_init(&w, PLAN, 300);
	start_sim(&sim, &w, 1, "--fault brownout:3");
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_neq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(!strstr(r.out, " PASS  cert"), "%s", r.out);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE state = 'FAIL' AND "
			   "cert_serial IS NULL"), 1, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_q_text(&w, "SELECT reason FROM units", reason, sizeof(reason));
	cr_assert(strstr(reason, "burn of field rot-hash"), "reason: %s", reason);
	cr_assert(strstr(reason, "interrupted: the link to the programmer was lost"),
		  "reason: %s", reason);
	/* Power restored: the simulator restarts from its saved state. */
	fx_devsim_stop(&sim);
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 1);
	p = bank_hex(u, "fuses", 0);
	q = bank_hex(u, "fuses_redundant", 0);
	cr_assert(!strncmp(p, FX_ROT, 32), "words 0..3 programmed: %s", p);
	cr_assert(!strncmp(q, FX_ROT, 24) && !strncmp(q + 24, Z8, 8), "word 3 has one copy: %s", q);
	cr_assert_str_eq(p + 32, Z8 Z8 Z8 Z8);
	json_decref(u);
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	start_sim(&sim, &w, 1, NULL);
	/* The plan shows why; the next run resolves the open intent from the
	 * device: half-programmed, quarantined, nothing burned. */
	fx_station_run(&r, &w, "--dry-run", "--slot", sim.port, "provision", NULL);
	cr_assert(strstr(r.out, "action refuse: 1 word(s) of bank 0 are half-programmed"),
		  "%s", r.out);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 1, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE state = 'QUARANTINE'"), 1,
		     "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'fuse-resume' AND "
			   "outcome = 'fail' AND detail LIKE '%half-programmed%'"), 1);
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 1, "burned a second time");
	json_decref(u);
	fx_devsim_stop(&sim);
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	start_sim(&sim, &w, 1, NULL);
	/* and a later run leaves the unit alone */
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 1, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.err, "QUARANTINED on record"), "%s", r.err);
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 1, "burned a second time");
	json_decref(u);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

/* ---- kill tests: SIGKILL the station at points of a slow burn ---- */

/* Start the station with stderr on a pipe; *errfd gets its read end. */
static pid_t spawn_station(const fx_world *w, int *errfd, ...)
{
	char bin[512];
	const char *argv[64];
	int p[2], devnull;
	va_list ap;
	pid_t pid;

	va_start(ap, errfd);
	fx_station_argv(argv, bin, w, ap);
	va_end(ap);
	cr_assert_eq(pipe(p), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 1);
		dup2(p[1], 2);
		close(p[0]);
		execv(bin, (char **)argv);
		_exit(127);
	}
	close(p[1]);
	*errfd = p[0];
	return pid;
}

/* Read the station's stderr until the nth line containing what; log keeps
 * what was read, for failure messages. */
static void wait_line(int fd, const char *what, int nth, char *log, size_t cap)
{
	char line[4096];
	size_t n = 0, len = strlen(log);
	int seen = 0;

	while (seen < nth) {
		char c;
		ssize_t k = read(fd, &c, 1);

		cr_assert_eq(k, 1, "station ended before '%s' #%d:\n%s", what, nth, log);
		if (len + 1 < cap) {
			log[len++] = c;
			log[len] = '\0';
		}
		if (c != '\n') {
			if (n + 1 < sizeof(line))
				line[n++] = c;
			continue;
		}
		line[n] = '\0';
		n = 0;
		if (strstr(line, what))
			seen++;
	}
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0)
		;
}

/* The simulator finishes a burn before it serves the next station, so a
 * kill inside a burn always finds it completed on the re-run. */
#define COMPLETED "that burn completed, verified, not repeated"

/* Kill the station delay_ms after its nth stderr line containing what,
 * then run again: the unit ends PASS with every field burned exactly once,
 * and the records tell what happened (resume: what the resumed run must
 * have recorded about the open intent; NULL when no intent was open or
 * either outcome is right). */
static void kill_at(const char *what, int nth, long delay_ms, const char *resume)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	char log[65536] = "", reason[2048];
	int errfd, status;
	pid_t pid;
	json_t *u;

	world_init(&w, PLAN, 2000);
	start_sim(&sim, &w, 1, "--fault slowburn:120");
	pid = spawn_station(&w, &errfd, "--verbose", "--burn-fuses", "--yes", "--slot", sim.port,
			    "provision", NULL);
	wait_line(errfd, what, nth, log, sizeof(log));
	if (delay_ms)
		sleep_ms(delay_ms); /* a kill point inside the burn, not a sync */
	cr_assert_eq(kill(pid, SIGKILL), 0);
	waitpid(pid, &status, 0);
	close(errfd);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		  "the station ended before the kill:\n%s", log);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE state = 'RUNNING'"), 1);

	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "after kill at %s #%d +%ldms\nstdout:%s\nstderr:%s", what,
		     nth, delay_ms, r.out, r.err);
	u = sim_unit(sim.state_path, 0);
	assert_plan_burned(u);
	cr_assert_eq(jint(u, "burn_count"), NBURNS, "a field was burned twice (or not)");
	json_decref(u);
	/* The records: the killed unit closed as interrupted, naming the open
	 * intent; the new one resolved it and passed. */
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE state = 'PASS'"), 1);
	fx_q_text(&w, "SELECT reason FROM units WHERE state = 'FAIL'", reason, sizeof(reason));
	cr_assert(strstr(reason, "interrupted"), "reason: %s", reason);
	if (!strcmp(what, "lifecycle-intent"))
		cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'certificate' "
				   "AND detail LIKE 'resumed: the certificate on the locked%'"), 1,
			     "the locked unit was not verified as it is");
	if (strstr(what, "intent")) {
		char detail[1024];

		cr_assert(strstr(reason, "intent 'field "), "reason: %s", reason);
		cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps s JOIN units u ON u.id = "
				   "s.unit_id WHERE u.state = 'PASS' AND s.step = 'fuse-resume'"),
			     1, "the resumed run did not record what it found");
		fx_q_text(&w, "SELECT detail FROM steps WHERE step = 'fuse-resume'", detail,
		       sizeof(detail));
		cr_assert(!resume || (strstr(detail, resume) && strstr(detail, "completed")),
			  "resume: %s", detail);
	}
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

Test(fuses_kill, right_after_the_first_intent, .timeout = 120)
{
	kill_at("fuse-intent", 1, 0, NULL);
}

Test(fuses_kill, in_the_middle_of_the_root_of_trust_burn, .timeout = 120)
{
	kill_at("fuse-intent", 1, 450, "field rot-hash had an intent");
}

Test(fuses_kill, during_the_second_field, .timeout = 120)
{
	kill_at("fuse-intent", 2, 60, "field secure-boot had an intent");
}

Test(fuses_kill, during_the_write_protect_burn, .timeout = 120)
{
	kill_at("fuse-intent", 4, 30, "field rot-wp had an intent");
}

Test(fuses_kill, after_the_root_of_trust_verified, .timeout = 120)
{
	kill_at("field rot-hash burned and read back", 1, 0, NULL);
}

/* Killed once the lifecycle lock was intended: the unit may be locked
 * already, so the re-run verifies the certificate on it instead of
 * provisioning again. */
Test(fuses_kill, at_the_lifecycle_lock, .timeout = 120)
{
	kill_at("lifecycle-intent", 1, 40, "lifecycle step lock had an intent");
}

/* ---- whole-history resume: several kills, cable cuts (issue 17) ---- */

struct kill_point {
	const char *what;   /* stderr line to wait for */
	int nth;
	long delay_ms;
};

/* Run the station armed against sim and SIGKILL it delay_ms after the
 * nth stderr line with what. */
static void run_and_kill(const fx_world *w, const fx_devsim *sim, const struct kill_point *k)
{
	char log[65536] = "";
	int errfd, status;
	pid_t pid;

	pid = spawn_station(w, &errfd, "--verbose", "--burn-fuses", "--yes", "--slot", sim->port,
			    "provision", NULL);
	wait_line(errfd, k->what, k->nth, log, sizeof(log));
	if (k->delay_ms)
		sleep_ms(k->delay_ms);
	cr_assert_eq(kill(pid, SIGKILL), 0);
	waitpid(pid, &status, 0);
	close(errfd);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		  "the station ended before the kill at '%s':\n%s", k->what, log);
}

/* The unit passed with the one certificate its first record issued: one
 * certificate step issued a serial (the others resumed it), the PASS row
 * holds it and its PEM, the device holds it (openssl verify against the
 * CA, the device's key: fx_check_pass), and the records verify. */
static void assert_one_identity_passed(const fx_world *w, const char *state_path)
{
	char issued[128], pass[128], pem[8192], path[1024], kept[8192] = "", uid[80];
	fx_run r;
	FILE *f;

	cr_assert_eq(fx_q_int(w, "SELECT count(*) FROM steps WHERE step = 'certificate' "
			   "AND outcome = 'ok' AND detail LIKE 'serial %'"), 1,
		     "a second identity was issued");
	fx_q_text(w, "SELECT substr(detail, 8, instr(substr(detail, 8), ' ') - 1) FROM "
		  "steps WHERE step = 'certificate' AND detail LIKE 'serial %'", issued,
		  sizeof(issued));
	fx_q_text(w, "SELECT cert_serial FROM units WHERE state = 'PASS'", pass, sizeof(pass));
	cr_assert_str_eq(pass, issued, "PASS holds another certificate than was issued");
	cr_assert_eq(fx_q_int(w, "SELECT count(*) FROM revocations"), 0);
	fx_q_text(w, "SELECT uid FROM units WHERE state = 'PASS'", uid, sizeof(uid));
	fx_q_text(w, "SELECT cert_pem FROM units WHERE state = 'PASS'", pem, sizeof(pem));
	snprintf(path, sizeof(path), "%s/%s.pem", w->certs, uid);
	f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	kept[fread(kept, 1, sizeof(kept) - 1, f)] = '\0';
	fclose(f);
	cr_assert_str_eq(pem, kept, "the certificate on record is not the one kept");
	fx_check_pass(w, state_path, uid);
	fx_station_run(&r, w, "--ca-cert", w->ca, "records", "verify", NULL);
	cr_assert_eq(r.code, 0, "records verify: %s%s", r.out, r.err);
}

/* Kill the station at each point in turn (each run resumes what the ones
 * before left), then run it to the end: PASS, every field burned exactly
 * once, the original identity. */
static void kill_sequence(const struct kill_point *k, int n)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	json_t *u;

	world_init(&w, PLAN, 2000);
	start_sim(&sim, &w, 1, "--fault slowburn:120");
	for (int i = 0; i < n; i++)
		run_and_kill(&w, &sim, &k[i]);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE state = 'RUNNING'"), 1);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "after %d kills (last at %s)\nstdout:%s\nstderr:%s", n,
		     k[n - 1].what, r.out, r.err);
	u = sim_unit(sim.state_path, 0);
	assert_plan_burned(u);
	cr_assert_eq(jint(u, "burn_count"), NBURNS, "a field was burned twice (or not)");
	json_decref(u);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE state = 'PASS'"), 1);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE state = 'FAIL' AND "
			   "reason LIKE 'interrupted%'"), n);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps s JOIN units u ON u.id = "
			   "s.unit_id WHERE u.state = 'PASS' AND s.step = 'resume' AND "
			   "s.outcome = 'ok'"), 1, "the PASS does not name the record it finishes");
	assert_one_identity_passed(&w, sim.state_path);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

/* Issue 17 item 5: killed at the lifecycle lock, then killed again as soon
 * as the next run started on the same (now locked) unit.  The third run
 * reads the whole history: the lock was intended after the identity was
 * issued, so the locked unit is verified and passes, never refused. */
Test(fuses_kill, twice_around_the_lifecycle_lock, .timeout = 150)
{
	static const struct kill_point k[] = {
		{ "lifecycle-intent", 1, 40 }, { "identify", 1, 0 },
	};

	kill_sequence(k, 2);
}

/* Killed during a burn, then during the resume of that burn. */
Test(fuses_kill, during_a_burn_then_during_its_resume, .timeout = 150)
{
	static const struct kill_point k[] = {
		{ "fuse-intent", 2, 60 }, { "fuse-resume", 1, 0 },
	};

	kill_sequence(k, 2);
}

/* Killed in the middle of the root of trust, then during the next burn of
 * the resumed run, then as the third run identified the unit. */
Test(fuses_kill, three_kills_across_burns, .timeout = 180)
{
	static const struct kill_point k[] = {
		{ "fuse-intent", 1, 450 }, { "fuse-intent", 1, 60 }, { "identify", 1, 0 },
	};

	kill_sequence(k, 3);
}

/* Issue 17 item 7: a cable cut at the fuse read-back and a SIGKILL of the
 * station at the same point leave the same state (the burn happened, its
 * outcome is not on record): the same decision.  The cut run closes the
 * unit as interrupted (not QUARANTINE, no certificate in its row, nothing
 * revoked), and the next presentation resolves the intent from the device
 * and passes with the same identity, as after the kill (fuses_kill). */
Test(fuses, cable_cut_at_the_read_back_resumes_like_a_kill, .timeout = 120)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	char reason[2048], detail[1024];
	json_t *u;

	world_init(&w, PLAN, 500);
	start_sim(&sim, &w, 1, "--fault cutread:1");
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_neq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE state = 'QUARANTINE'"), 0,
		     "a lost link after a burn is not a conflict\nstdout:%s", r.out);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM units WHERE state = 'FAIL' AND "
			   "cert_serial IS NULL"), 1, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_q_text(&w, "SELECT reason FROM units", reason, sizeof(reason));
	cr_assert(strstr(reason, "interrupted: the link to the programmer was lost during "
			 "the read-back of field rot-hash"), "reason: %s", reason);
	fx_devsim_stop(&sim);
	u = sim_unit(sim.state_path, 0);
	cr_assert_str_eq(bank_hex(u, "fuses", 0), FX_ROT, "the burn did happen");
	cr_assert_eq(jint(u, "burn_count"), 1);
	json_decref(u);
	/* re-plugged: the next presentation reads the device */
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_q_text(&w, "SELECT detail FROM steps WHERE step = 'fuse-resume'", detail,
		  sizeof(detail));
	cr_assert(strstr(detail, "field rot-hash had an intent") && strstr(detail, COMPLETED),
		  "resume: %s", detail);
	u = sim_unit(sim.state_path, 0);
	assert_plan_burned(u);
	cr_assert_eq(jint(u, "burn_count"), NBURNS);
	json_decref(u);
	assert_one_identity_passed(&w, sim.state_path);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

/* Killed after the certificate was written: the device holds it and its
 * key, so the next run resumes it (no second identity, nothing revoked). */
Test(fuses_kill, after_the_certificate_was_written_it_is_resumed, .timeout = 120)
{
	static const struct kill_point k[] = { { "write-cert", 1, 0 } };

	kill_sequence(k, 1);
}

/* Killed after the certificate was issued, and it never reached the device
 * (its certificate slot is cleared before the re-run, as when the write
 * was cut): the unit gets a new identity, and the interrupted record's
 * certificate is revoked, naming the record that replaced it: it is in
 * the CRL. */
Test(fuses_kill, issued_certificate_not_resumed_is_revoked, .timeout = 120)
{
	/* the certificate step's own line ("unit ID: certificate ok serial"):
	 * the fuse-check line before it also names a certificate */
	static const struct kill_point k = { ": certificate ", 1, 0 };
	fx_world w;
	fx_run r;
	fx_devsim sim;
	char old[128], now[128], reason[512], crl[1024], cmd[2400];
	json_t *st = NULL;
	FILE *p;
	char text[65536];
	size_t n;

	world_init(&w, PLAN, 2000);
	start_sim(&sim, &w, 1, NULL);
	run_and_kill(&w, &sim, &k);
	fx_q_text(&w, "SELECT substr(detail, 8, instr(substr(detail, 8), ' ') - 1) FROM "
		  "steps WHERE step = 'certificate' AND detail LIKE 'serial %'", old, sizeof(old));
	cr_assert(old[0], "no certificate step before the kill");
	fx_devsim_stop(&sim);
	cr_assert_eq(fx_devsim_dump(sim.state_path, &st), 0);
	json_object_set_new(json_array_get(json_object_get(st, "units"), 0), "cert", json_null());
	cr_assert_eq(json_dump_file(st, sim.state_path, 0), 0);
	json_decref(st);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_q_text(&w, "SELECT cert_serial FROM units WHERE state = 'PASS'", now, sizeof(now));
	cr_assert_str_neq(now, old);
	fx_q_text(&w, "SELECT uid FROM units WHERE state = 'PASS'", reason, sizeof(reason));
	fx_check_pass(&w, sim.state_path, reason);
	fx_q_text(&w, "SELECT reason || ' | ' || cert_serial FROM revocations", reason,
		  sizeof(reason));
	cr_assert(strstr(reason, "interrupted, not resumed: re-provisioned in unit record 2"),
		  "revocation: %s", reason);
	cr_assert(strstr(reason, old), "revocation: %s", reason);
	fx_path(crl, &w, "crl.pem");
	fx_station_run(&r, &w, "crl", "export", "--out", crl, NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	snprintf(cmd, sizeof(cmd), "openssl crl -in '%s' -noout -text", crl);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	n = fread(text, 1, sizeof(text) - 1, p);
	text[n] = '\0';
	cr_assert_eq(pclose(p), 0, "%s", text);
	for (char *c = old; *c; c++)
		*c = (char)toupper((unsigned char)*c);
	cr_assert(strstr(text, old), "serial %s not in the CRL:\n%s", old, text);
	fx_station_run(&r, &w, "--ca-cert", w.ca, "records", "verify", NULL);
	cr_assert_eq(r.code, 0, "records verify: %s%s", r.out, r.err);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

/* ---- the plan is checked when the profile loads ---- */

Test(fuses, bad_plans_are_refused_at_load_with_the_rule, .timeout = 90)
{
	static const struct { const char *plan, *expect; } cases[] = {
		{ "fuses: { conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n"
		  "plan = ( { name = \"wp\"; kind = \"write-protect\"; bank = 3; word = 0; "
		  "bits = [0, 0]; value = 1; },\n"
		  "{ name = \"rot\"; bank = 0; word = 0; source = \"root_of_trust\"; } ); };\n",
		  "the order must be data fields, then write-protect fields" },
		{ "fuses: { conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n"
		  "plan = ( { name = \"a\"; bank = 1; word = 2; bits = [0, 1]; value = 1; },\n"
		  "{ name = \"b\"; bank = 1; word = 2; bits = [1, 4]; value = 1; } ); };\n",
		  "(bits 0..1 and 1..4 overlap)" },
		{ "fuses: { conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n"
		  "plan = ( { name = \"rot\"; bank = 1; word = 0; source = \"root_of_trust\"; },\n"
		  "{ name = \"b\"; bank = 1; word = 2; bits = [4, 4]; value = 1; } ); };\n",
		  "share a word of bank 1" },
		{ "fuses: { conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n"
		  "plan = ( { name = \"rot\"; bank = 0; word = 0; source = \"operator\"; } ); };\n",
		  "unknown source 'operator'" },
		{ "fuses: { plan = ( { name = \"a\"; bank = 1; word = 0; bits = [0, 0]; "
		  "value = 1; } ); };\n",
		  "'fuses.conditions' is missing" },
		{ "fuses: { conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n"
		  "plan = ( { name = \"a\"; bank = 1; word = 0; bits = [0, 1]; value = 4; } ); };\n",
		  "'value' must be 1..3 to fit bits 0..1" },
		{ "fuses: { conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n"
		  "plan = ( { name = \"l\"; kind = \"lifecycle\"; state = \"locked\"; },\n"
		  "{ name = \"a\"; bank = 1; word = 0; bits = [0, 0]; value = 1; } ); };\n",
		  "comes after 'l' (lifecycle)" },
		{ "fuses: { conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n"
		  "plan = ( { name = \"a\"; kind = 3; bank = 1; word = 0; bits = [0, 0]; "
		  "value = 1; } ); };\n",
		  "is not data, write-protect or lifecycle" },
		{ "fuses: { conditions: { vpp_mv = [2625, 2375]; temp_c = [0, 70]; };\n"
		  "plan = ( { name = \"a\"; bank = 1; word = 0; bits = [0, 0]; value = 1; } ); };\n",
		  "'fuses.conditions.vpp_mv' must be [min, max]" },
	};
	fx_world w;
	fx_run r;
	char text[4096];

	world_init(&w, NULL, 2000);
	for (size_t i = 0; i < ST_ARRAY_SIZE(cases); i++) {
		snprintf(text, sizeof(text), "%s%s", FX_PROFILE, cases[i].plan);
		fx_write_file(w.profile, text);
		fx_sign(&w, w.profile);
		fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", "/nonexistent", "provision", NULL);
		cr_assert_eq(r.code, 2, "case %zu: exit %d: %s", i, r.code, r.err);
		cr_assert(strstr(r.err, cases[i].expect), "case %zu: %s", i, r.err);
		cr_assert(strstr(r.err, w.profile), "case %zu names no file: %s", i, r.err);
	}
	fx_rmtree(w.dir);
}

/* Two constants in one word, bits apart, are a plan only for a target
 * that burns the bank bit by bit (an ESP32's eFuse BLOCK0: test_esp32.c
 * burns such a plan).  The station programmer's word-once banks cannot take
 * it: the profile loads, and each unit is refused before anything is
 * issued or burned, with the bank and the driver named; `fuses show` says
 * the same per field. */
Test(fuses, shared_word_plan_is_refused_on_a_word_once_target, .timeout = 90)
{
	static const char plan[] =
		"fuses: {\n"
		"  conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n"
		"  plan = (\n"
		"    { name = \"secure-boot\"; bank = 1; word = 0; bits = [0, 0]; value = 1; },\n"
		"    { name = \"jtag-disable\"; bank = 1; word = 0; bits = [4, 7]; value = 0xF; }\n"
		"  );\n"
		"};\n";
	fx_world w;
	fx_run r;
	fx_devsim sim;
	char reason[1024];
	json_t *u;

	world_init(&w, plan, 2000);
	make_state(&sim, &w, 1);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(&r, &w, "--json", "--slot", sim.port, "fuses", "show", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.out, "programs a word once, whole"), "%s", r.out);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_neq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_q_text(&w, "SELECT reason FROM units", reason, sizeof(reason));
	cr_assert(strstr(reason, "one word of bank 1"), "reason: %s", reason);
	cr_assert(strstr(reason, "driver serial"), "reason: %s", reason);
	cr_assert(strstr(reason, "nothing burned"), "reason: %s", reason);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'fuse-intent'"), 0);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'certificate'"), 0,
		     "a certificate was issued for a unit the plan cannot fit");
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 0, "a burn reached the device");
	cr_assert_str_eq(bank_hex(u, "fuses", 1), BLANK);
	json_decref(u);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

/* ---- the simulated fuse array itself, through the driver ---- */

Test(fusesim, words_program_once_with_redundancy_and_conditions, .timeout = 60)
{
	char dir[] = "/tmp/st-fusesim-XXXXXX";
	uint8_t v[DRV_FUSE_BANK_LEN] = { 0 }, rb[DRV_FUSE_BANK_LEN], faulty = 0xff;
	drv_opts o = { .timeout_ms = 2000 };
	drv_conditions c;
	fx_devsim sim;
	drv_dev *d = NULL;
	json_t *st = NULL, *u;

	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(fx_devsim_start(&sim, dir, "p", 1, "--vpp 2410 --temp -3.5"), 0);
	cr_assert_eq(drv_open(sim.port, &o, &d), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(drv_get_conditions(d, &c), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(c.vpp_mv, 2410);
	cr_assert_eq(c.temp_dc, -35);
	v[4] = 0x01;                                   /* word 1 */
	cr_assert_eq(drv_fuse_burn(d, 2, v, 10, rb), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(drv_fuse_read_status(d, 2, rb, &faulty), ST_OK);
	cr_assert_eq(faulty, 0);
	cr_assert_eq(rb[4], 0x01);
	/* More bits into the same word: refused (programmed once), even 0->1. */
	v[4] = 0x03;
	cr_assert_eq(drv_fuse_burn(d, 2, v, 11, rb), ST_E_FUSE_CONFLICT);
	/* Another word of the bank: fine. */
	v[4] = 0x01;
	v[8] = 0x80;
	cr_assert_eq(drv_fuse_burn(d, 2, v, 12, rb), ST_OK, "%s", drv_errmsg(d));
	drv_close(d);
	fx_devsim_stop(&sim);
	/* Both copies survive the power cycle. */
	cr_assert_eq(fx_devsim_dump(sim.state_path, &st), 0);
	u = json_array_get(json_object_get(st, "units"), 0);
	cr_assert_str_eq(bank_hex(u, "fuses", 2), Z8 "01000000" "80000000" Z8 Z8 Z8 Z8 Z8);
	cr_assert_str_eq(bank_hex(u, "fuses_redundant", 2), bank_hex(u, "fuses", 2));
	cr_assert_eq(jint(u, "burn_count"), 2);
	json_decref(st);
	/* Brown-out at the second word programmed this power-up. */
	cr_assert_eq(fx_devsim_start(&sim, dir, "p", 1, "--fault brownout:1"), 0);
	o.timeout_ms = 300;
	cr_assert_eq(drv_open(sim.port, &o, &d), ST_OK, "%s", drv_errmsg(d));
	memset(v, 0x5a, sizeof(v));
	cr_assert_eq(drv_fuse_burn(d, 1, v, 13, rb), ST_E_TIMEOUT);
	drv_close(d);
	fx_devsim_stop(&sim);
	cr_assert_eq(fx_devsim_start(&sim, dir, "p", 1, NULL), 0);
	o.timeout_ms = 2000;
	cr_assert_eq(drv_open(sim.port, &o, &d), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(drv_fuse_read_status(d, 1, rb, &faulty), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(faulty, 0x02, "word 1 half-programmed: faulty %02x", faulty);
	cr_assert_eq(rb[0], 0x5a);
	cr_assert_eq(rb[4], 0x5a, "word 1's first copy took");
	cr_assert_eq(rb[8], 0x00, "nothing after the brown-out");
	/* The half word is not blank: the same burn again is refused. */
	cr_assert_eq(drv_fuse_burn(d, 1, v, 14, rb), ST_E_FUSE_CONFLICT);
	drv_close(d);
	fx_devsim_stop(&sim);
	fx_rmtree(dir);
}

/* ---- station fuses show: read only ---- */

/* `fuses show --json` on the simulator's unit 0: the parsed object, after
 * checking the run changed neither the device nor the records. */
static json_t *fuses_show(const fx_world *w, fx_devsim *sim)
{
	fx_run *r = calloc(1, sizeof(*r));
	json_t *before, *after, *o;
	json_error_t je;
	bool store = access(w->db, F_OK) == 0;
	long long events = store ? fx_q_int(w, "SELECT count(*) FROM events") : 0;

	cr_assert_not_null(r);
	before = sim_unit(sim->state_path, 0);
	start_sim(sim, w, 1, NULL);
	fx_station_run(r, w, "--json", "fuses", "show", "--slot", sim->port, NULL);
	fx_devsim_stop(sim);
	cr_assert_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
	after = sim_unit(sim->state_path, 0);
	cr_assert(json_equal(before, after), "fuses show changed the device");
	if (store)
		cr_assert_eq(fx_q_int(w, "SELECT count(*) FROM events"), events,
			     "fuses show wrote to the records");
	else
		cr_assert_neq(access(w->db, F_OK), 0, "fuses show made a store");
	o = json_loads(r->out, 0, &je);
	cr_assert_not_null(o, "not one JSON object: %s\n%s", je.text, r->out);
	json_decref(before);
	json_decref(after);
	free(r);
	return o;
}

/* The field name's object in o's fields array. */
static json_t *shown(json_t *o, const char *name)
{
	json_t *fields = json_object_get(o, "fields"), *f;
	size_t i;

	json_array_foreach(fields, i, f)
		if (!strcmp(json_string_value(json_object_get(f, "name")), name))
			return f;
	cr_assert_fail("no field %s", name);
	return NULL;
}

static const char *sget(json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	cr_assert_not_null(v, "no %s", k);
	return v;
}

Test(fuses_show, a_blank_unit_is_blank_in_every_field, .timeout = 90)
{
	fx_world w;
	fx_devsim sim;
	json_t *o, *f;
	const char *names[] = { "rot-hash", "secure-boot", "jtag-disable", "rot-wp" };

	world_init(&w, PLAN, 2000);
	make_state(&sim, &w, 1);
	o = fuses_show(&w, &sim);
	cr_assert_eq(json_array_size(json_object_get(o, "fields")), 5);
	cr_assert_str_eq(sget(o, "lifecycle"), "open");
	cr_assert_eq(strlen(sget(o, "uid")), 32);
	for (size_t i = 0; i < 4; i++) {
		f = shown(o, names[i]);
		cr_assert_str_eq(sget(f, "state"), "blank", "%s", names[i]);
		cr_assert_str_eq(sget(f, "action"), "burn", "%s", names[i]);
	}
	f = shown(o, "rot-hash");
	cr_assert_str_eq(sget(f, "current"), BLANK);
	cr_assert_str_eq(sget(f, "target"), FX_ROT);
	cr_assert_eq(json_integer_value(json_object_get(f, "bank")), 0);
	cr_assert_eq(json_integer_value(json_array_get(json_object_get(f, "words"), 1)), 7);
	f = shown(o, "jtag-disable");
	cr_assert_str_eq(sget(f, "target"), "0f000000");
	cr_assert_eq(json_integer_value(json_object_get(f, "bank")), 1);
	cr_assert_eq(json_integer_value(json_array_get(json_object_get(f, "words"), 0)), 1);
	f = shown(o, "lock");
	cr_assert_str_eq(sget(f, "kind"), "lifecycle");
	cr_assert_str_eq(sget(f, "current"), "open");
	cr_assert_str_eq(sget(f, "target"), "locked");
	cr_assert_str_eq(sget(f, "state"), "blank");
	cr_assert_str_eq(sget(f, "action"), "advance");
	cr_assert_null(json_object_get(f, "bank"));
	json_decref(o);
	fx_rmtree(w.dir);
}

Test(fuses_show, a_provisioned_unit_matches_and_is_locked, .timeout = 120)
{
	fx_world w;
	fx_run *r = calloc(1, sizeof(*r));
	fx_devsim sim;
	json_t *o;

	cr_assert_not_null(r);
	world_init(&w, PLAN, 2000);
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r->code, 0, "%s\n%s", r->out, r->err);
	cr_assert_eq(fx_devsim_rewind(sim.state_path), 0);
	o = fuses_show(&w, &sim);
	cr_assert_str_eq(sget(o, "lifecycle"), "locked");
	cr_assert_str_eq(sget(shown(o, "rot-hash"), "state"), "matches");
	cr_assert_str_eq(sget(shown(o, "rot-hash"), "current"), FX_ROT);
	cr_assert_str_eq(sget(shown(o, "secure-boot"), "state"), "matches");
	cr_assert_str_eq(sget(shown(o, "jtag-disable"), "state"), "matches");
	cr_assert_str_eq(sget(shown(o, "jtag-disable"), "action"), "skip");
	cr_assert_str_eq(sget(shown(o, "rot-wp"), "state"), "locked");
	cr_assert_str_eq(sget(shown(o, "lock"), "state"), "locked");
	cr_assert_str_eq(sget(shown(o, "lock"), "action"), "skip");
	json_decref(o);
	/* the table says the same */
	start_sim(&sim, &w, 1, NULL);
	fx_station_run(r, &w, "fuses", "show", "--slot", sim.port, NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r->code, 0, "%s\n%s", r->out, r->err);
	cr_assert(strstr(r->out, "lifecycle locked"), "%s", r->out);
	cr_assert(strstr(r->out, "rot-wp"), "%s", r->out);
	cr_assert(strstr(r->out, " locked "), "%s", r->out);
	cr_assert(strstr(r->out, FX_ROT " -> " FX_ROT), "%s", r->out);
	free(r);
	fx_rmtree(w.dir);
}

Test(fuses_show, a_pre_burned_conflicting_field_differs_with_why, .timeout = 90)
{
	fx_world w;
	fx_devsim sim;
	json_t *o, *f;

	world_init(&w, PLAN, 2000);
	make_state(&sim, &w, 1);
	/* secure-boot wants 0x01; the word holds 0x02 */
	preset(sim.state_path, 1, "02000000" Z8 Z8 Z8 Z8 Z8 Z8 Z8, NULL);
	o = fuses_show(&w, &sim);
	f = shown(o, "secure-boot");
	cr_assert_str_eq(sget(f, "state"), "differs");
	cr_assert_str_eq(sget(f, "current"), "02000000");
	cr_assert_str_eq(sget(f, "target"), "01000000");
	cr_assert_str_eq(sget(f, "action"), "refuse");
	cr_assert(strstr(sget(f, "why"), "1->0"), "%s", sget(f, "why"));
	cr_assert_str_eq(sget(shown(o, "jtag-disable"), "state"), "blank");
	cr_assert_str_eq(sget(shown(o, "rot-hash"), "state"), "blank");
	json_decref(o);
	fx_rmtree(w.dir);
}

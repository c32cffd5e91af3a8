/* test_config.c — station.conf and product profiles against their schema,
 * through the real binary: `station config check` names every problem
 * with file, line and setting; provision and tui refuse a bad file before
 * touching anything; the configured slots and defaults are used; the
 * schema printed by `station config schema` is the one in
 * docs/configuration.md. */
#include <criterion/criterion.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

/* A directory and a fake world for runs that need no token: only
 * `config check` (the --pin-file is never read). */
static void bare_world(fx_world *w)
{
	memset(w, 0, sizeof(*w));
	snprintf(w->dir, sizeof(w->dir), "/tmp/st-config-XXXXXX");
	cr_assert_not_null(mkdtemp(w->dir));
	fx_path(w->conf, w, "station.conf");
	fx_path(w->pinfile, w, "user.pin");
	fx_path(w->db, w, "records.db");
	fx_path(w->certs, w, "certs");
	fx_path(w->profile, w, "test.profile");
}

/* A configuration valid in every group, this world's paths. */
static void good_conf(const fx_world *w, const char *extra)
{
	char text[4096];

	snprintf(text, sizeof(text),
		 "# line 1: a comment\n"
		 "station: { id = \"line1-st3\"; log_file = \"%s/tui.log\"; };\n"
		 "hsm: { module = \"%s\"; token = \"station\"; ca_key = \"issuing-ca\"; };\n"
		 "records: { path = \"%s\"; };\n"
		 "profile = \"%s\";\n"
		 "programmer: { timeout_ms = 2000; retries = 3; };\n"
		 "slots = ( { name = \"left\"; port = \"/dev/ttyUSB0\"; },\n"
		 "          { driver = \"usb\"; port = \"1209:5354?serial=SP-1\"; },\n"
		 "          { name = \"tpm\"; port = \"tpm2:swtpm:host=127.0.0.1,port=2321\"; } );\n"
		 "defaults: { burn_fuses = false; units = 0; plug_wait_s = 5; };\n"
		 "trust: { profile_keys = [ \"eng-2026\", \"eng-2027\" ]; engineering_key = \"eng-2026\"; };\n"
		 "roles: { require = false; };\n"
		 "sync: { conninfo = \"host=db.example.com dbname=fleet\"; sslmode = \"verify-full\";\n"
		 "        offline = \"allowance\"; allowance = 50; interval_ms = 30000; };\n"
		 "%s",
		 w->dir, FX_SOFTHSM_MODULE, w->db, w->profile, extra ? extra : "");
	fx_write_file(w->conf, text);
}

/* The demo profile of the repository: valid, versioned, full fuse plan. */
static void demo_profile(const fx_world *w)
{
	char src[1024], cmd[2200];

	snprintf(src, sizeof(src), "%s", getenv("STATION_BUILD"));
	snprintf(cmd, sizeof(cmd), "cp '%s/profiles/demo.profile' '%s'", dirname(src),
		 w->profile);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static int check(fx_run *r, const fx_world *w, const char *profile)
{
	if (profile)
		return fx_station_run(r, w, "--profile", profile, "config", "check", NULL);
	return fx_station_run(r, w, "config", "check", NULL);
}

/* stderr has "FILE:LINE: 'SETTING'" and what. */
static void expect_at(const fx_run *r, const char *file, int line,
		      const char *setting, const char *what)
{
	char head[1024];

	if (setting)
		snprintf(head, sizeof(head), "%s:%d: '%s'", file, line, setting);
	else
		snprintf(head, sizeof(head), "%s:%d: ", file, line);
	cr_assert(strstr(r->err, head), "no '%s' in:\n%s", head, r->err);
	if (what)
		cr_assert(strstr(r->err, what), "no '%s' in:\n%s", what, r->err);
}

static fx_run *new_run(void)
{
	fx_run *r = malloc(sizeof(*r));

	cr_assert_not_null(r);
	return r;
}

/* ---- station.conf ---------------------------------------------------- */

Test(config, a_valid_configuration_and_profile_pass_with_one_line, .timeout = 30)
{
	fx_world w;
	fx_run *r = new_run();

	bare_world(&w);
	good_conf(&w, NULL);
	demo_profile(&w);
	check(r, &w, NULL);
	cr_assert_eq(r->code, 0, "exit %d:\n%s", r->code, r->err);
	cr_assert(strstr(r->out, "OK: configuration"), "%s", r->out);
	cr_assert(strstr(r->out, "3 slots"), "%s", r->out);
	cr_assert(strstr(r->out, "demo-sensor 1.0"), "%s", r->out);
	cr_assert_eq(strchr(r->out, '\n'), r->out + strlen(r->out) - 1, "one line: %s", r->out);
	free(r);
	fx_rmtree(w.dir);
}

Test(config, missing_required_settings_are_named_with_their_group, .timeout = 30)
{
	fx_world w;
	fx_run *r = new_run();

	bare_world(&w);
	fx_write_file(w.conf, "hsm: {\n module = \"" FX_SOFTHSM_MODULE "\";\n};\n"
		      "slots = ( { name = \"a\"; } );\n");
	check(r, &w, NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	expect_at(r, w.conf, 1, "hsm.token", "is missing (a required setting");
	expect_at(r, w.conf, 4, "slots[1].port", "is missing (a required setting");
	cr_assert(strstr(r->err, "'station' is missing"), "%s", r->err);
	free(r);
	fx_rmtree(w.dir);
}

Test(config, wrong_types_are_named_with_what_was_expected, .timeout = 30)
{
	fx_world w;
	fx_run *r = new_run();

	bare_world(&w);
	good_conf(&w, NULL);
	demo_profile(&w);
	fx_write_file(w.conf, "station: { id = 42; };\n"
		      "hsm: { token = \"station\"; };\n"
		      "programmer: { timeout_ms = \"2000\"; };\n"
		      "defaults: { burn_fuses = 1; };\n"
		      "slots = { port = \"/dev/ttyUSB0\"; };\n");
	check(r, &w, NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	expect_at(r, w.conf, 1, "station.id", "must be a string");
	expect_at(r, w.conf, 3, "programmer.timeout_ms", "must be an integer, not a string");
	expect_at(r, w.conf, 4, "defaults.burn_fuses", "must be true or false");
	expect_at(r, w.conf, 5, "slots", "must be a list of groups");
	free(r);
	fx_rmtree(w.dir);
}

Test(config, unknown_keys_are_named_with_the_nearest_known_one, .timeout = 30)
{
	fx_world w;
	fx_run *r = new_run();

	bare_world(&w);
	demo_profile(&w);
	good_conf(&w, "hsm_pin = \"1234\";\n"
		      "records2: { pth = \"x\"; };\n");
	/* A typo inside a known group, too. */
	{
		char text[4096];
		FILE *f = fopen(w.conf, "r");
		size_t n = fread(text, 1, sizeof(text) - 1, f);

		fclose(f);
		text[n] = '\0';
		*strstr(text, "timeout_ms") = 'T';
		fx_write_file(w.conf, text);
	}
	check(r, &w, NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	expect_at(r, w.conf, 6, "programmer.Timeout_ms",
		  "did you mean 'programmer.timeout_ms'?");
	expect_at(r, w.conf, 15, "hsm_pin", "is not a known setting");
	expect_at(r, w.conf, 16, "records2", "did you mean 'records'?");
	cr_assert(strstr(r->err, "3 problems found"), "%s", r->err);
	free(r);
	fx_rmtree(w.dir);
}

Test(config, out_of_range_values_and_bad_choices_are_named, .timeout = 30)
{
	fx_world w;
	fx_run *r = new_run();

	bare_world(&w);
	demo_profile(&w);
	fx_write_file(w.conf, "station: { id = \"\"; };\n"
		      "hsm: { token = \"station\"; };\n"
		      "programmer: { timeout_ms = 5; retries = 99; };\n"
		      "sync: { conninfo = \"host=db\"; offline = \"panic\"; sslmode = \"maybe\"; allowance = -1; };\n"
		      "slots = ( { port = \"usb:12:zz\"; }, { port = \"can:0\"; },\n"
		      "  { driver = \"usb\"; port = \"serial:/dev/ttyS0\"; } );\n");
	check(r, &w, NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	expect_at(r, w.conf, 1, "station.id", "is empty");
	expect_at(r, w.conf, 3, "programmer.timeout_ms", "is 5, out of range 50..600000");
	expect_at(r, w.conf, 3, "programmer.retries", "out of range 0..10");
	expect_at(r, w.conf, 4, "sync.offline", "'panic' is not stop or allowance");
	expect_at(r, w.conf, 4, "sync.sslmode", "is not disable, allow, prefer");
	expect_at(r, w.conf, 4, "sync.allowance", "is -1");
	expect_at(r, w.conf, 5, "slots[1].port", "not a USB programmer selector");
	expect_at(r, w.conf, 5, "slots[2].port", "unknown driver 'can'");
	expect_at(r, w.conf, 6, "slots[3].port", "the slot's 'driver' says usb");
	cr_assert(strstr(r->err, "9 problems found"), "%s", r->err);
	free(r);
	fx_rmtree(w.dir);
}

Test(config, syntax_errors_and_truncated_files_name_the_line, .timeout = 30)
{
	fx_world w;
	fx_run *r = new_run();

	bare_world(&w);
	fx_write_file(w.conf, "station: { id = \"x\"; };\nhsm: { token = \"station\"; };\n"
		      "programmer: { timeout_ms = ; };\n");
	check(r, &w, NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	expect_at(r, w.conf, 3, NULL, "syntax error");
	/* Cut in the middle of a string, as a copy cut short leaves it. */
	fx_write_file(w.conf, "station: { id = \"x\"; };\nhsm: { token = \"station\"; };\n"
		      "records: { path = \"/var/lib/st");
	check(r, &w, NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	expect_at(r, w.conf, 3, NULL, "truncated");
	free(r);
	fx_rmtree(w.dir);
}

Test(config, referenced_files_that_do_not_exist_are_named, .timeout = 30)
{
	fx_world w;
	fx_run *r = new_run();

	bare_world(&w);
	fx_write_file(w.conf, "station: { id = \"x\"; };\n"
		      "hsm: { module = \"/nonexistent/libpkcs11.so\"; token = \"station\"; };\n"
		      "records: { path = \"/nonexistent/dir/records.db\";\n"
		      "  cert_dir = \"/nonexistent/certs\"; };\n"
		      "profile = \"/nonexistent/product.profile\";\n");
	check(r, &w, NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	expect_at(r, w.conf, 2, "hsm.module", "does not exist");
	expect_at(r, w.conf, 3, "records.path", "directory '/nonexistent/dir' does not exist");
	expect_at(r, w.conf, 4, "records.cert_dir", "not an existing directory");
	expect_at(r, w.conf, 5, "profile", "does not exist");
	cr_assert(strstr(r->err, "4 problems found"), "%s", r->err);
	free(r);
	fx_rmtree(w.dir);
}

/* ---- product profiles ------------------------------------------------ */

Test(profile, every_problem_in_a_profile_is_listed_with_its_line, .timeout = 30)
{
	fx_world w;
	fx_run *r = new_run();

	bare_world(&w);
	good_conf(&w, NULL);
	fx_write_file(w.profile,
		      "version = 3;\n"                                         /* 1 */
		      "key_mode = \"hsm\";\n"                                  /* 2 */
		      "certificate: { organisation = \"X\"; validity_days = 0; };\n" /* 3 */
		      "root_of_trust: { sha256 = \"abc\"; fuse_bank = 300; };\n"     /* 4 */
		      "fuses: {\n"                                             /* 5 */
		      "  conditions: { vpp_mv = [2375]; temp_c = [0, 70]; };\n"      /* 6 */
		      "  plan = ( { name = \"a\"; kind = 3; bank = 1; word = 9; },\n" /* 7 */
		      "           { bank = 2; word = 0; bits = [0, 40]; value = 1; } );\n" /* 8 */
		      "};\n"
		      "algorithms: { device_key = \"rsa1024\"; };\n"           /* 10 */
		      "quota: { require_work_order = \"yes\"; };\n");          /* 11 */
	check(r, &w, NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	cr_assert(strstr(r->err, "'name' is missing"), "%s", r->err);
	expect_at(r, w.profile, 1, "version", "must be a string");
	expect_at(r, w.profile, 2, "key_mode", "'hsm' is not device, inject or esp_secure_cert");
	expect_at(r, w.profile, 3, "certificate.organisation",
		  "did you mean 'certificate.organization'?");
	expect_at(r, w.profile, 3, "certificate.validity_days", "is 0, out of range 1..36500");
	expect_at(r, w.profile, 4, "root_of_trust.sha256", "64 hex digits");
	expect_at(r, w.profile, 4, "root_of_trust.fuse_bank", "is 300, out of range 0..255");
	expect_at(r, w.profile, 6, "fuses.conditions.vpp_mv", "has 1 element(s), must have 2");
	expect_at(r, w.profile, 7, "fuses.plan[1].kind", "not data, write-protect or lifecycle");
	expect_at(r, w.profile, 7, "fuses.plan[1].word", "is 9, out of range 0..7");
	expect_at(r, w.profile, 8, "fuses.plan[2].name", "is missing (a required setting");
	expect_at(r, w.profile, 8, "fuses.plan[2].bits", "element 2 is 40");
	expect_at(r, w.profile, 10, "algorithms.device_key", "'rsa1024' is not p256");
	expect_at(r, w.profile, 11, "quota.require_work_order", "must be true or false");
	cr_assert(strstr(r->err, "14 problems found"), "%s", r->err);
	free(r);
	fx_rmtree(w.dir);
}

Test(profile, rules_across_settings_name_the_field_and_its_line, .timeout = 30)
{
	fx_world w;
	fx_run *r = new_run();

	bare_world(&w);
	good_conf(&w, NULL);
	fx_write_file(w.profile,
		      "name = \"x\";\n"
		      "certificate: {\n"
		      "  validity_days = 30;\n"
		      "  key_usage = \"digitalSig\";\n"                          /* 4 */
		      "};\n"
		      "root_of_trust: { sha256 = \"" FX_ROT "\"; };\n"
		      "fuses: {\n"
		      "  conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n"
		      "  plan = ( { name = \"a\"; bank = 1; word = 0; bits = [0, 1]; value = 4; } );\n" /* 9 */
		      "};\n"
		      "tpm2: { key_handle = 0x01020009; };\n");                 /* 11 */
	check(r, &w, NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	expect_at(r, w.profile, 4, NULL, "'certificate.key_usage' is not a keyUsage");
	expect_at(r, w.profile, 9, NULL, "'value' must be 1..3 to fit bits 0..1");
	expect_at(r, w.profile, 11, NULL, "'tpm2.key_handle' must be a persistent handle");
	free(r);
	fx_rmtree(w.dir);
}

Test(profile, missing_truncated_and_empty_profiles_are_named, .timeout = 30)
{
	fx_world w;
	fx_run *r = new_run();

	bare_world(&w);
	good_conf(&w, NULL);
	fx_write_file(w.profile, "name = \"x\";\ncertificate: { organization = \"X\";\n"
		      "validity_days = 30; };\nroot_of_trust: { sha256 = \"26221021");
	check(r, &w, NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	expect_at(r, w.profile, 4, NULL, "truncated");
	fx_write_file(w.profile, "");
	check(r, &w, NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	cr_assert(strstr(r->err, "'name' is missing"), "%s", r->err);
	cr_assert(strstr(r->err, "'certificate' is missing"), "%s", r->err);
	cr_assert(strstr(r->err, "'root_of_trust' is missing"), "%s", r->err);
	cr_assert(strstr(r->err, w.profile), "%s", r->err);
	check(r, &w, "/nonexistent/other.profile");
	cr_assert_eq(r->code, 2, "%s", r->err);
	cr_assert(strstr(r->err, "/nonexistent/other.profile: cannot read this profile"),
		  "%s", r->err);
	free(r);
	fx_rmtree(w.dir);
}

Test(profile, an_old_profile_without_version_still_loads, .timeout = 30)
{
	fx_world w;
	fx_run *r = new_run();

	bare_world(&w);
	good_conf(&w, NULL);
	fx_write_file(w.profile, FX_PROFILE);
	check(r, &w, NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "test-sensor unversioned"), "%s", r->out);
	free(r);
	fx_rmtree(w.dir);
}

/* ---- runs refuse bad files, use good ones ---------------------------- */

Test(run, a_bad_profile_provisions_nothing, .timeout = 90)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;
	char before[65536], after[65536];
	FILE *f;
	size_t n;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog1", 2, NULL), 0);
	f = fopen(sim.state_path, "r");
	cr_assert_not_null(f);
	n = fread(before, 1, sizeof(before) - 1, f);
	before[n] = '\0';
	fclose(f);
	fx_write_file(w.profile, FX_PROFILE "fuses: { plan = ( { name = \"a\"; bank = 1; "
		      "word = 0; bits = [0, 0]; value = 1; } ); };\nkey_mod = \"inject\";\n");
	fx_sign(&w, w.profile);
	fx_station_run(r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s", r->code, r->err);
	cr_assert(strstr(r->err, w.profile), "%s", r->err);
	cr_assert(strstr(r->err, "'fuses.conditions' is missing"), "%s", r->err);
	cr_assert(strstr(r->err, "and 1 more problem"), "%s", r->err);
	cr_assert_eq(fx_count_units(&w, NULL), 0);
	f = fopen(sim.state_path, "r");
	cr_assert_not_null(f);
	n = fread(after, 1, sizeof(after) - 1, f);
	after[n] = '\0';
	fclose(f);
	cr_assert_str_eq(after, before, "the device changed");
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
}

Test(run, a_bad_configuration_is_refused_by_every_command, .timeout = 60)
{
	fx_world w;
	fx_run *r = new_run();

	fx_world_init(&w, false, 2000);
	fx_write_file(w.conf, "station: { id = \"x\"; };\nhsm: { token = \"station\"; };\n"
		      "programmer: { timeout_ms = 5; };\n");
	fx_station_run(r, &w, "--slot", "/nonexistent", "provision", NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	expect_at(r, w.conf, 3, "programmer.timeout_ms", "out of range");
	fx_station_run(r, &w, "records", "list", NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	cr_assert(strstr(r->err, "programmer.timeout_ms"), "%s", r->err);
	cr_assert_eq(fx_count_units(&w, NULL), 0);
	free(r);
	fx_rmtree(w.dir);
}

/* Append text to the world's configuration. */
static void conf_append(const fx_world *w, const char *text)
{
	FILE *f = fopen(w->conf, "a");

	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
}

Test(run, configured_slots_and_defaults_are_used_without_slot_options, .timeout = 120)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim a, b;
	char text[2048];
	json_t *units, *ev;
	size_t i;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&a, w.dir, "progA", 1, "--seed left"), 0);
	cr_assert_eq(fx_devsim_start(&b, w.dir, "progB", 1, "--seed right"), 0);
	snprintf(text, sizeof(text),
		 "slots = ( { name = \"left\"; port = \"%s\"; },\n"
		 "          { name = \"right\"; driver = \"serial\"; port = \"%s\"; } );\n"
		 "defaults: { burn_fuses = true; };\n", a.port, b.port);
	conf_append(&w, text);
	/* armed by the configuration: confirmed like --burn-fuses */
	fx_station_run(r, &w, "--json", "--yes", "provision", NULL);
	cr_assert_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
	units = fx_json_events(r->out, "unit");
	cr_assert_eq(json_array_size(units), 2, "%s", r->out);
	json_array_foreach(units, i, ev) {
		cr_assert_str_eq(json_string_value(json_object_get(ev, "result")), "PASS");
		cr_assert_str_eq(json_string_value(json_object_get(ev, "fuses")), "burned",
				 "defaults.burn_fuses arms the run: %s", r->out);
	}
	json_decref(units);
	cr_assert_eq(fx_count_units(&w, "PASS"), 2);
	fx_devsim_stop(&a);
	fx_devsim_stop(&b);
	free(r);
	fx_rmtree(w.dir);
}

Test(run, a_slot_option_overrides_the_configured_slots, .timeout = 120)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog1", 1, NULL), 0);
	conf_append(&w, "slots = ( { name = \"gone\"; port = \"/nonexistent/ttyX\"; } );\n");
	fx_station_run(r, &w, "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
	cr_assert_eq(fx_count_units(&w, "UNFUSED"), 1); /* unarmed */
	cr_assert_null(strstr(r->err, "/nonexistent/ttyX"), "%s", r->err);
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
}

Test(run, a_profile_that_requires_a_work_order_refuses_a_run_without, .timeout = 90)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog1", 1, NULL), 0);
	fx_write_file(w.profile, FX_PROFILE "quota: { require_work_order = true; };\n");
	fx_sign(&w, w.profile);
	fx_station_run(r, &w, "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s", r->code, r->err);
	cr_assert(strstr(r->err, "requires a work order"), "%s", r->err);
	cr_assert_eq(fx_count_units(&w, NULL), 0);
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
}

/* ---- the documented schema is the one in the code -------------------- */

Test(schema, docs_configuration_md_lists_the_schema_the_station_checks, .timeout = 30)
{
	static const char begin[] = "<!-- schema: generated by `station config schema` -->\n";
	static const char end[] = "<!-- end of schema -->";
	fx_world w;
	fx_run *r = new_run();
	char src[1024], doc[1100], *text, *a, *b;
	FILE *f;
	long n;

	bare_world(&w);
	fx_station_run(r, &w, "config", "schema", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "| `slots[].port` |"), "%s", r->out);
	cr_assert(strstr(r->out, "| `sync.offline` |"), "%s", r->out);
	snprintf(src, sizeof(src), "%s", getenv("STATION_BUILD"));
	snprintf(doc, sizeof(doc), "%s/docs/configuration.md", dirname(src));
	f = fopen(doc, "r");
	cr_assert_not_null(f, "cannot read %s", doc);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	text = malloc((size_t)n + 1);
	cr_assert_eq(fread(text, 1, (size_t)n, f), (size_t)n);
	text[n] = '\0';
	fclose(f);
	a = strstr(text, begin);
	cr_assert_not_null(a, "no schema block in %s", doc);
	a += strlen(begin);
	b = strstr(a, end);
	cr_assert_not_null(b);
	*b = '\0';
	cr_assert_str_eq(a, r->out, "docs/configuration.md is out of date: regenerate "
			 "its schema block with `build/station config schema`");
	free(text);
	free(r);
	fx_rmtree(w.dir);
}

/* The body of the run's station_start event, from the store with sqlite3. */
static void start_event(const fx_world *w, char *out, size_t cap)
{
	char cmd[1200];
	FILE *p;
	size_t n;

	snprintf(cmd, sizeof(cmd), "sqlite3 '%s' \"SELECT body FROM events WHERE "
		 "kind = 'station_start' ORDER BY seq DESC LIMIT 1\"", w->db);
	p = popen(cmd, "r");
	cr_assert_not_null(p, "%s", cmd);
	n = fread(out, 1, cap - 1, p);
	out[n] = '\0';
	cr_assert_eq(pclose(p), 0, "sqlite3 failed (is it installed?): %s", cmd);
}

Test(run, the_profile_algorithms_and_version_hold_and_are_recorded, .timeout = 120)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;
	char body[8192];

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog1", 1, NULL), 0);
	/* `ca init` made a P-256 CA: a profile that wants P-384 is refused. */
	fx_write_file(w.profile, FX_PROFILE "version = \"2.1\";\n"
		      "algorithms: { device_key = \"p256\"; ca_key = \"p384\"; };\n");
	fx_sign(&w, w.profile);
	fx_station_run(r, &w, "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s", r->code, r->err);
	cr_assert(strstr(r->err, "requires a p384 issuing CA (algorithms.ca_key) but "
			 "CA 'issuing-ca' is EC P-256"), "%s", r->err);
	cr_assert_eq(fx_count_units(&w, NULL), 0);
	fx_write_file(w.profile, FX_PROFILE "version = \"2.1\";\n"
		      "algorithms: { device_key = \"p256\"; ca_key = \"p256\"; };\n");
	fx_sign(&w, w.profile);
	fx_station_run(r, &w, "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r->code, 0, "exit %d: %s", r->code, r->err);
	cr_assert_eq(fx_count_units(&w, "UNFUSED"), 1); /* unarmed */
	start_event(&w, body, sizeof(body));
	cr_assert(strstr(body, "\"profile_version\":\"2.1\""), "%s", body);
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
}

Test(profile, an_include_is_refused_in_a_profile_and_named_in_a_configuration, .timeout = 30)
{
	fx_world w;
	fx_run *r = new_run();
	char inc[600], text[2048];

	bare_world(&w);
	good_conf(&w, NULL);
	/* A profile whose recipe is partly elsewhere: its digest would not
	 * cover what is burned. */
	fx_path(inc, &w, "part.profile");
	fx_write_file(inc, "root_of_trust: { sha256 = \"" FX_ROT "\"; };\n");
	snprintf(text, sizeof(text), "name = \"x\";\n"
		 "certificate: { organization = \"X\"; validity_days = 30; };\n"
		 "@include \"%s\"\n", inc);
	fx_write_file(w.profile, text);
	check(r, &w, NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	expect_at(r, inc, 1, NULL, "comes from an @include in");
	cr_assert(strstr(r->err, "a profile must be one file"), "%s", r->err);
	/* A configuration may include; a problem there names that file. */
	demo_profile(&w);
	fx_path(inc, &w, "hsm.conf");
	fx_write_file(inc, "hsm: {\n  token = \"station\";\n  tokn = \"x\"; };\n");
	snprintf(text, sizeof(text), "station: { id = \"x\"; };\n@include \"%s\"\n", inc);
	fx_write_file(w.conf, text);
	check(r, &w, NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	expect_at(r, inc, 3, "hsm.tokn", "did you mean 'hsm.token'?");
	free(r);
	fx_rmtree(w.dir);
}

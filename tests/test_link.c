/* test_link.c — the serial link under simulated faults, end to end: the
 * real station binary against station-devsim on a pty with a noisy line
 * (seeded byte corruption both ways) or a cable pulled mid-unit.  Verdicts
 * are checked against the device's own state: a PASS must be true. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "device-drivers/drv.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

/* Every unit row is PASS or FAIL with a reason; every PASS is checked
 * against the device.  Returns the number of PASS rows. */
static int check_rows(const fx_world *w, const char *state, int *fails)
{
	json_t *rows = fx_unit_rows(w), *row;
	size_t i;
	int pass = 0;

	*fails = 0;
	json_array_foreach(rows, i, row) {
		const char *st = json_string_value(json_object_get(row, "state"));
		const char *uid = json_string_value(json_object_get(row, "uid"));
		const char *why = json_string_value(json_object_get(row, "reason"));

		cr_assert(!strcmp(st, "PASS") || !strcmp(st, "FAIL"),
			  "unit %s ended %s", uid, st);
		if (!strcmp(st, "PASS")) {
			fx_check_pass(w, state, uid);
			pass++;
		} else {
			cr_assert(why && strlen(why) > 10, "FAIL of %s without a "
				  "clear reason", uid);
			(*fails)++;
		}
	}
	json_decref(rows);
	return pass;
}

/* Programmer with `units` units on a line corrupting `rate` of the bytes;
 * the line runs the station until every unit has passed or `runs` runs
 * (a technician pressing start again after a link error). */
static void noisy_line(const char *rate, const char *seed, int units, int runs,
		       int *pass_out, int *fail_out)
{
	fx_world w;
	fx_run *r = calloc(1, sizeof(*r));
	fx_devsim sim;
	char args[128];
	int pass = 0, fails = 0;

	cr_assert_not_null(r);
	fx_world_init(&w, true, 300);
	snprintf(args, sizeof(args), "--fault noise:%s --seed %s", rate, seed);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "noisy", units, args), 0);
	for (int i = 0; i < runs && pass < units; i++) {
		fx_station_run(r, &w, "--json", "--burn-fuses", "--yes", "--slot", sim.port,
			       "provision", NULL);
		/* 0 all PASS, 1 a unit failed, 5 the link stopped the slot. */
		cr_assert(r->code == 0 || r->code == 1 || r->code == 5,
			  "run %d: exit %d\n%s\n%s", i, r->code, r->out, r->err);
		pass = check_rows(&w, sim.state_path, &fails);
	}
	fx_devsim_stop(&sim);
	cr_assert_eq(fx_count_units(&w, "RUNNING"), 0);
	fx_rmtree(w.dir);
	free(r);
	*pass_out = pass;
	*fail_out = fails;
}

Test(link, one_percent_noise_never_gives_a_false_pass, .timeout = 300)
{
	int pass, fails;

	/* At 1% of bytes a certificate frame (~600 bytes) rarely crosses
	 * intact: most units FAIL, clearly; any PASS must be genuine. */
	noisy_line("1%", "noise-1", 2, 6, &pass, &fails);
	cr_log_info("1%% noise: %d PASS, %d FAIL rows", pass, fails);
	cr_assert_gt(pass + fails, 0, "nothing was attempted");
}

Test(link, light_noise_is_absorbed_by_retries, .timeout = 300)
{
	int pass, fails;

	/* At 0.2% the bounded retries of idempotent commands carry most
	 * units through; every PASS is checked against the device. */
	noisy_line("0.2%", "noise-2", 3, 10, &pass, &fails);
	cr_log_info("0.2%% noise: %d PASS, %d FAIL rows", pass, fails);
	cr_assert_geq(pass, 1, "no unit passed at 0.2%% noise in 10 runs");
}

Test(link, dropped_link_mid_unit_is_reported_and_resumable, .timeout = 120)
{
	fx_world w;
	fx_run *r = calloc(1, sizeof(*r));
	fx_devsim sim;
	json_t *rows;
	const char *why;
	int fails;

	cr_assert_not_null(r);
	fx_world_init(&w, true, 1000);
	/* HELLO, IDENTIFY and KEYGEN replies fit in 300 bytes; the line dies
	 * while the certificate is read back. */
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--fault drop:300"), 0);
	fx_station_run(r, &w, "--json", "--burn-fuses", "--yes", "--slot", sim.port,
		       "provision", NULL);
	cr_assert_eq(r->code, 5, "exit %d\n%s\n%s", r->code, r->out, r->err);
	fx_devsim_stop(&sim);
	cr_assert_eq(sim.exit_status, 3, "the simulator did not drop the link");
	rows = fx_unit_rows(&w);
	cr_assert_eq(json_array_size(rows), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0),
							   "state")), "FAIL");
	why = json_string_value(json_object_get(json_array_get(rows, 0), "reason"));
	cr_assert(strstr(why, "interrupted"), "reason: %s", why);
	cr_assert(strstr(r->err, "went away") || strstr(r->out, "went away"),
		  "no clear unplug message:\n%s\n%s", r->out, r->err);
	json_decref(rows);

	/* Re-plug (same device state, healthy line) and run again. */
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	fx_station_run(r, &w, "--json", "--burn-fuses", "--yes", "--slot", sim.port,
		       "provision", NULL);
	cr_assert_eq(r->code, 0, "resume exit %d\n%s\n%s", r->code, r->out, r->err);
	cr_assert_eq(check_rows(&w, sim.state_path, &fails), 1);
	cr_assert_eq(fails, 1);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
	free(r);
}

Test(link, two_stations_cannot_share_a_serial_port, .timeout = 60)
{
	fx_world w;
	fx_run *r = calloc(1, sizeof(*r));
	fx_devsim sim;
	drv_dev *mine = NULL;

	cr_assert_not_null(r);
	fx_world_init(&w, true, 500);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	/* This process is "the other station": it holds the port. */
	cr_assert_eq(drv_open(sim.port, NULL, &mine), ST_OK, "%s", drv_errmsg(mine));
	fx_station_run(r, &w, "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r->code, 5, "exit %d\n%s", r->code, r->err);
	cr_assert(strstr(r->err, "in use"), "%s", r->err);
	cr_assert_eq(fx_count_units(&w, NULL), 0, "nothing may be recorded");
	drv_close(mine);
	/* Released: now it works. */
	fx_station_run(r, &w, "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r->code, 0, "exit %d\n%s", r->code, r->err);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
	free(r);
}

Test(link, latency_within_and_beyond_the_timeout, .timeout = 60)
{
	char *dir = strdup("/tmp/station-link-XXXXXX");
	drv_opts slow = { .timeout_ms = 1500 }, fast = { .timeout_ms = 60, .retries = -1 };
	fx_devsim sim;
	drv_dev *d = NULL;
	drv_info info;

	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(fx_devsim_start(&sim, dir, "slow", 1, "--fault latency:150"), 0);
	cr_assert_eq(drv_open(sim.port, &slow, &d), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	drv_close(d);
	d = NULL;
	cr_assert_eq(drv_open(sim.port, &fast, &d), ST_E_TIMEOUT);
	cr_assert(strstr(drv_errmsg(d), "HELLO") && strstr(drv_errmsg(d), "60 ms"),
		  "%s", drv_errmsg(d));
	drv_close(d);
	fx_devsim_stop(&sim);
	fx_rmtree(dir);
	free(dir);
}

/* ---- a noisy line yields (issue 17, item 6) ---------------------------- */

/* A PASS row is genuine: the certificate on record (SQLite, not the
 * station's own word) verifies against the CA with the openssl CLI, is
 * byte for byte the certificate in the device's slot (the simulator's
 * state file), and certifies the key the device holds. */
static void check_genuine(const fx_world *w, const char *state, json_t *row)
{
	const char *uid = json_string_value(json_object_get(row, "uid"));
	const char *pem = json_string_value(json_object_get(row, "cert_pem"));
	char path[600], cmd[1400], point[131], *hex;
	uint8_t pt[65], *der = NULL;
	size_t len = 0;
	json_t *dev;
	BIO *b;
	X509 *x;
	int dlen;

	cr_assert_not_null(pem, "PASS unit %s has no certificate on record", uid);
	snprintf(path, sizeof(path), "%s/record-%s.pem", w->dir, uid);
	fx_write_file(path, pem);
	snprintf(cmd, sizeof(cmd), "openssl verify -CAfile '%s' '%s' >/dev/null 2>&1",
		 w->ca, path);
	cr_assert_eq(system(cmd), 0, "PASS unit %s: the certificate on record does "
		     "not verify against the CA", uid);
	b = BIO_new_mem_buf(pem, -1);
	x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	cr_assert_not_null(x);
	dev = fx_sim_unit(state, uid);
	cr_assert_not_null(dev, "device has no unit %s", uid);
	cr_assert_eq(EVP_PKEY_get_octet_string_param(X509_get0_pubkey(x),
		OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &len), 1);
	st_hex(pt, 65, point);
	cr_assert_str_eq(json_string_value(json_object_get(dev, "pubkey")), point,
			 "PASS unit %s: the certified key is not the device's key", uid);
	dlen = i2d_X509(x, &der);
	cr_assert_gt(dlen, 0);
	hex = malloc(2 * (size_t)dlen + 1);
	cr_assert_not_null(hex);
	st_hex(der, (size_t)dlen, hex);
	cr_assert_not_null(json_string_value(json_object_get(dev, "cert")),
			   "PASS unit %s has no certificate on the device", uid);
	cr_assert_str_eq(json_string_value(json_object_get(dev, "cert")), hex,
			 "PASS unit %s: the device holds another certificate than "
			 "the one on record", uid);
	free(hex);
	OPENSSL_free(der);
	X509_free(x);
	json_decref(dev);
}

#define YIELD_SLOTS 2

/* One run of the station over YIELD_SLOTS programmers in parallel, each
 * with `per_slot` units on a line corrupting `rate` of the bytes both ways.
 * Every unit presented counts: a slot that stops leaves its remaining units
 * unprovisioned, which is lost yield.  Every PASS is checked as genuine;
 * returns the PASS count, *retries the re-sends the --json unit lines
 * report, *ms_per_unit the mean time of a unit. */
static int yield_run(const char *rate, const char *seed, int per_slot,
		     long long *retries, long long *ms_per_unit)
{
	fx_world w;
	fx_run *r = calloc(1, sizeof(*r));
	fx_devsim sim[YIELD_SLOTS];
	json_t *rows, *units, *row;
	long long ms = 0;
	size_t i;
	int pass = 0;

	cr_assert_not_null(r);
	fx_world_init(&w, true, 300);
	for (int k = 0; k < YIELD_SLOTS; k++) {
		char name[16], args[160];

		snprintf(name, sizeof(name), "prog%d", k);
		snprintf(args, sizeof(args), "--fault noise:%s --seed %s-%d", rate,
			 seed, k);
		cr_assert_eq(fx_devsim_start(&sim[k], w.dir, name, per_slot, args), 0);
	}
	fx_station_run(r, &w, "--json", "--burn-fuses", "--yes", "--slot", sim[0].port,
		       "--slot", sim[1].port, "provision", NULL);
	cr_assert(r->code == 0 || r->code == 1 || r->code == 5, "exit %d\n%s",
		  r->code, r->err);
	for (int k = 0; k < YIELD_SLOTS; k++)
		fx_devsim_stop(&sim[k]);
	rows = fx_unit_rows(&w);
	json_array_foreach(rows, i, row) {
		const char *st = json_string_value(json_object_get(row, "state"));
		const char *uid = json_string_value(json_object_get(row, "uid"));
		json_t *dev = NULL;

		cr_assert(strcmp(st, "RUNNING"), "unit %s left RUNNING", uid);
		if (strcmp(st, "PASS")) {
			cr_log_info("%s noise: unit %s %s: %s", rate, uid, st,
				    json_string_value(json_object_get(row, "reason")));
			continue;
		}
		for (int k = 0; k < YIELD_SLOTS && !dev; k++)
			if ((dev = fx_sim_unit(sim[k].state_path, uid)))
				check_genuine(&w, sim[k].state_path, row);
		cr_assert_not_null(dev, "PASS unit %s is on no programmer", uid);
		json_decref(dev);
		pass++;
	}
	json_decref(rows);
	/* The --json unit lines carry the link's cost per unit. */
	*retries = 0;
	units = fx_json_events(r->out, "unit");
	json_array_foreach(units, i, row) {
		json_t *link = json_object_get(row, "link");

		cr_assert(json_is_object(link), "unit line without link counters");
		cr_assert(json_integer_value(json_object_get(link, "commands")) > 0);
		*retries += json_integer_value(json_object_get(link, "retries"));
		ms += json_integer_value(json_object_get(row, "ms"));
	}
	*ms_per_unit = json_array_size(units) ? ms / (long long)json_array_size(units) : 0;
	json_decref(units);
	if (pass < YIELD_SLOTS * per_slot) {
		json_t *errs = fx_json_events(r->out, "slot_error"), *e;

		json_array_foreach(errs, i, e)
			cr_log_info("%s noise: %s", rate,
				    json_string_value(json_object_get(e, "message")));
		json_decref(errs);
	}
	fx_rmtree(w.dir);
	free(r);
	return pass;
}

Test(link, one_percent_noise_yields_at_least_95_percent, .timeout = 300)
{
	long long retries, ms;
	int pass = yield_run("1%", "yield-1", 10, &retries, &ms);

	cr_log_info("1%% noise: %d of 20 PASS, %lld re-sends, %lld ms a unit",
		    pass, retries, ms);
	cr_assert_geq(pass, 19, "1%% noise: only %d of 20 units PASS", pass);
	cr_assert_gt(retries, 0, "1%% noise without a single re-send counted");
}

Test(link, five_percent_noise_yields_at_least_half, .timeout = 300)
{
	long long retries, ms;
	int pass = yield_run("5%", "yield-5", 5, &retries, &ms);

	cr_log_info("5%% noise: %d of 10 PASS, %lld re-sends, %lld ms a unit",
		    pass, retries, ms);
	cr_assert_geq(pass, 5, "5%% noise: only %d of 10 units PASS", pass);
}

Test(link, clean_line_counts_no_resends, .timeout = 120)
{
	long long retries, ms;
	int pass = yield_run("0", "clean", 2, &retries, &ms);

	cr_log_info("0%% noise: %d of 4 PASS, %lld ms a unit", pass, ms);
	cr_assert_eq(pass, 4);
	cr_assert_eq(retries, 0, "a clean line re-sent %lld requests", retries);
}

/* The reply to KEYGEN is lost on the line after the chip made its key: the
 * station asks again under the same request id and gets that key; the chip
 * made exactly one (the simulator's own count), and the unit is PASS with
 * a certificate for it. */
Test(link, lost_keygen_reply_is_asked_again_one_key_made, .timeout = 120)
{
	fx_world w;
	fx_run *r = calloc(1, sizeof(*r));
	fx_devsim sim;
	json_t *rows, *dev;

	cr_assert_not_null(r);
	fx_world_init(&w, true, 300);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, "--fault lose:KEYGEN"), 0);
	fx_station_run(r, &w, "--json", "--burn-fuses", "--yes", "--slot", sim.port,
		       "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
	rows = fx_unit_rows(&w);
	cr_assert_eq(json_array_size(rows), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0),
							   "state")), "PASS");
	check_genuine(&w, sim.state_path, json_array_get(rows, 0));
	dev = fx_sim_unit(sim.state_path, json_string_value(json_object_get(
				  json_array_get(rows, 0), "uid")));
	cr_assert_not_null(dev);
	cr_assert_eq(json_integer_value(json_object_get(dev, "keygen_count")), 1,
		     "the device made %lld keys for one request",
		     json_integer_value(json_object_get(dev, "keygen_count")));
	cr_assert(json_is_integer(json_object_get(dev, "keygen_id")),
		  "the key was not made under a request id");
	json_decref(dev);
	json_decref(rows);
	fx_rmtree(w.dir);
	free(r);
}

/* A programmer without the link extension (v1) still works on a clean line:
 * whole-frame certificate, plain KEYGEN. */
Test(link, v1_programmer_without_the_extension_still_works, .timeout = 120)
{
	fx_world w;
	fx_run *r = calloc(1, sizeof(*r));
	fx_devsim sim;
	json_t *rows;

	cr_assert_not_null(r);
	fx_world_init(&w, true, 1000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "old", 2, "--link-caps 0"), 0);
	fx_station_run(r, &w, "--json", "--burn-fuses", "--yes", "--slot", sim.port,
		       "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
	rows = fx_unit_rows(&w);
	cr_assert_eq(json_array_size(rows), 2);
	for (size_t i = 0; i < 2; i++) {
		json_t *dev;

		check_genuine(&w, sim.state_path, json_array_get(rows, i));
		dev = fx_sim_unit(sim.state_path, json_string_value(json_object_get(
					  json_array_get(rows, i), "uid")));
		cr_assert(json_is_null(json_object_get(dev, "keygen_id")),
			  "a v1 programmer got a KEYGEN request id");
		json_decref(dev);
	}
	json_decref(rows);
	fx_rmtree(w.dir);
	free(r);
}

/* "No answer" (cable, power) and "garbled frames" (noise) are told apart,
 * with the slot, the port, counts and what to do. */
Test(link, mute_and_garbage_programmers_get_different_messages, .timeout = 120)
{
	fx_world w;
	fx_run *r = calloc(1, sizeof(*r));
	fx_devsim sim;
	char want[2048];
	regex_t re;
	regmatch_t m[3];

	cr_assert_not_null(r);
	fx_world_init(&w, true, 300);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "mute", 1, "--fault mute"), 0);
	fx_station_run(r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r->code, 5, "exit %d\n%s", r->code, r->err);
	/* HELLO is asked every 100 ms for 2 s (more than 3 timeouts). */
	snprintf(want, sizeof(want), "station: slot 1 (%s): programmer not usable: "
		 "no answer to HELLO on %s: nothing came back for 2000 ms (",
		 sim.port, sim.port);
	cr_assert(strstr(r->err, want), "want:\n%s\ngot:\n%s", want, r->err);
	cr_assert(strstr(r->err, " attempts in a row, timeout 300 ms) — check the "
			 "cable/power of the programmer\n"), "%s", r->err);
	cr_assert(!strstr(r->err, "noisy"), "%s", r->err);

	cr_assert_eq(fx_devsim_start(&sim, w.dir, "junk", 1, "--fault garbage --seed j"), 0);
	fx_station_run(r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r->code, 5, "exit %d\n%s", r->code, r->err);
	snprintf(want, sizeof(want), "station: slot 1 (%s): programmer not usable: "
		 "malformed frames from %s in reply to HELLO: ", sim.port, sim.port);
	cr_assert(strstr(r->err, want), "want:\n%s\ngot:\n%s", want, r->err);
	cr_assert_eq(regcomp(&re, "HELLO: ([0-9]+) of ([0-9]+) frames garbled \\([a-zA-Z ]+\\), "
			     "0 with nothing back, in [0-9]+ ms — check the contacts/cable: "
			     "the line is noisy\n", REG_EXTENDED), 0);
	cr_assert_eq(regexec(&re, r->err, 3, m, 0), 0, "%s", r->err);
	cr_assert_eq(m[1].rm_eo - m[1].rm_so, m[2].rm_eo - m[2].rm_so);
	cr_assert(!strncmp(r->err + m[1].rm_so, r->err + m[2].rm_so,
			   (size_t)(m[1].rm_eo - m[1].rm_so)), "not every frame "
		  "garbled: %s", r->err);
	cr_assert(!strstr(r->err, "no answer"), "%s", r->err);
	regfree(&re);
	cr_assert_eq(fx_count_units(&w, NULL), 0);
	fx_rmtree(w.dir);
	free(r);
}

/* test_link.c — the serial link under simulated faults, end to end: the
 * real station binary against station-devsim on a pty with a noisy line
 * (seeded byte corruption both ways) or a cable pulled mid-unit.  Verdicts
 * are checked against the device's own state: a PASS must be true. */
#include <criterion/criterion.h>
#include <jansson.h>
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
		fx_station_run(r, &w, "--json", "--burn-fuses", "--slot", sim.port,
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
	fx_station_run(r, &w, "--json", "--burn-fuses", "--slot", sim.port,
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
	fx_station_run(r, &w, "--json", "--burn-fuses", "--slot", sim.port,
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

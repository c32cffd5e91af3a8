/* test_slots.c — slots in parallel (issue 8): a programmer that is
 * unplugged mid-unit, or never answers, stops only its own slot; the other
 * slots provision every unit they have, each PASS checked against the
 * device and the CA with openssl, and the records (written by all slots
 * through one group-committing store) verify.  Also the per-unit step
 * times of --json that the benchmark reads. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

#define GOOD_UNITS 4

static fx_run R;

/* Run three slots: slot 1 misbehaves as `fault` says, slots 2 and 3 are
 * healthy with GOOD_UNITS units each; check the healthy slots finished. */
static void one_bad_slot(const char *fault, int bad_units)
{
	fx_world w;
	fx_devsim bad, a, b;
	json_t *units, *u, *errs;
	int per_slot[4] = { 0 };
	size_t i;

	fx_world_init(&w, true, 1500);
	cr_assert_eq(fx_devsim_start(&bad, w.dir, "bad", bad_units, fault), 0);
	cr_assert_eq(fx_devsim_start(&a, w.dir, "a", GOOD_UNITS, "--seed A"), 0);
	cr_assert_eq(fx_devsim_start(&b, w.dir, "b", GOOD_UNITS, "--seed B"), 0);
	fx_station_run(&R, &w, "--json", "--burn-fuses", "--yes", "--slot", bad.port,
		       "--slot", a.port, "--slot", b.port, "provision", NULL);
	/* 5: a programmer/link error stopped a slot */
	cr_assert_eq(R.code, 5, "exit %d\n%s\n%s", R.code, R.out, R.err);

	units = fx_json_events(R.out, "unit");
	json_array_foreach(units, i, u) {
		int slot = (int)json_integer_value(json_object_get(u, "slot"));
		const char *res = json_string_value(json_object_get(u, "result"));
		const char *uid = json_string_value(json_object_get(u, "uid"));

		cr_assert(slot >= 1 && slot <= 3);
		if (slot == 1) {
			cr_assert_str_neq(res, "PASS", "the bad slot passed %s", uid);
			continue;
		}
		cr_assert_str_eq(res, "PASS", "slot %d unit %s: %s", slot, uid, res);
		fx_check_pass(&w, slot == 2 ? a.state_path : b.state_path, uid);
		per_slot[slot]++;
	}
	cr_assert_eq(per_slot[2], GOOD_UNITS, "slot 2 did %d units", per_slot[2]);
	cr_assert_eq(per_slot[3], GOOD_UNITS, "slot 3 did %d units", per_slot[3]);
	cr_assert_eq(fx_count_units(&w, "PASS"), 2 * GOOD_UNITS);
	/* the bad slot's stop is reported, naming it */
	errs = fx_json_events(R.out, "slot_error");
	cr_assert_geq(json_array_size(errs), 1, "no slot error:\n%s\n%s", R.out, R.err);
	cr_assert_eq(json_integer_value(json_object_get(json_array_get(errs, 0),
							"slot")), 1);
	json_decref(errs);
	json_decref(units);
	fx_station_run(&R, &w, "--ca-cert", w.ca, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	fx_devsim_stop(&bad);
	fx_devsim_stop(&a);
	fx_devsim_stop(&b);
	fx_rmtree(w.dir);
}

/* The cable of slot 1 is pulled during its first unit (after 300 bytes:
 * while the certificate is read back). */
Test(slots, unplug_in_one_slot_never_stalls_the_others, .timeout = 180)
{
	one_bad_slot("--fault drop:300 --seed X", 3);
}

/* Slot 1's programmer never answers: that slot times out, the others do
 * all their units. */
Test(slots, silent_programmer_in_one_slot_never_stalls_the_others, .timeout = 180)
{
	one_bad_slot("--fault mute --seed Y", 1);
}

/* --json unit lines carry where the time went (read by make bench): every
 * part present, none negative, records, HSM and certificate work non-zero
 * for a PASS, and the parts add up to the unit's time. */
Test(slots, unit_json_has_step_times, .timeout = 120)
{
	fx_world w;
	fx_devsim a;
	json_t *units, *u;
	size_t i;

	fx_world_init(&w, true, 1500);
	cr_assert_eq(fx_devsim_start(&a, w.dir, "a", 2, "--seed T"), 0);
	fx_station_run(&R, &w, "--json", "--burn-fuses", "--yes", "--slot", a.port,
		       "provision", NULL);
	cr_assert_eq(R.code, 0, "exit %d\n%s\n%s", R.code, R.out, R.err);
	units = fx_json_events(R.out, "unit");
	cr_assert_eq(json_array_size(units), 2);
	json_array_foreach(units, i, u) {
		json_t *us = json_object_get(u, "us");
		long long ms = json_integer_value(json_object_get(u, "ms"));
		long long rec = json_integer_value(json_object_get(us, "records"));
		long long hsm = json_integer_value(json_object_get(us, "hsm"));
		long long x509 = json_integer_value(json_object_get(us, "x509"));
		long long dev = json_integer_value(json_object_get(us, "device"));

		cr_assert(json_is_object(us), "no step times in %s",
			  json_dumps(u, JSON_COMPACT));
		cr_assert_gt(rec, 0);
		cr_assert_gt(hsm, 0);
		cr_assert_gt(x509, 0);
		cr_assert_geq(dev, 0);
		cr_assert_leq(rec + hsm + x509, ms * 1000 + 1000);
		cr_assert_geq(rec + hsm + x509 + dev, ms * 1000 - 1000);
	}
	json_decref(units);
	fx_devsim_stop(&a);
	fx_rmtree(w.dir);
}

/* A gang programmer (issue 22): 64 sites in one simulator process, two
 * units each, the slots listed in station.conf.  Every unit PASSes, all
 * 128 are in the store as PASS, each checked against its device and the CA
 * (fx_check_pass), and `records verify` accepts the chain the 64 slots
 * wrote through one store.  The simulator keeps its durable default. */
#define GANG_SLOTS 64
#define GANG_UNITS 2

Test(slots, gang_of_64_slots_all_pass_and_verify, .timeout = 900)
{
	fx_world w;
	fx_devsim g;
	FILE *f;
	char state[600];

	fx_world_init(&w, true, 20000);
	cr_assert_eq(fx_devsim_start_gang(&g, w.dir, "gang", GANG_SLOTS, GANG_UNITS,
					  "--seed G"), 0);
	f = fopen(w.conf, "a");
	cr_assert(f);
	fprintf(f, "slots = (\n");
	for (int i = 1; i <= GANG_SLOTS; i++)
		fprintf(f, "  { port = \"%s.%d\"; }%s\n", g.port, i,
			i < GANG_SLOTS ? "," : "");
	fprintf(f, ");\n");
	cr_assert_eq(fclose(f), 0);
	fx_station_run(&R, &w, "--burn-fuses", "--yes", "provision", NULL);
	cr_assert_eq(R.code, 0, "exit %d\n%s\n%s", R.code, R.out, R.err);
	cr_assert_eq(fx_count_units(&w, "PASS"), GANG_SLOTS * GANG_UNITS);
	cr_assert_eq(fx_count_units(&w, NULL), GANG_SLOTS * GANG_UNITS);
	/* every programmer's every unit, against the device it is in */
	for (int i = 1; i <= GANG_SLOTS; i++) {
		json_t *root = NULL, *units, *u;
		size_t k;

		snprintf(state, sizeof(state), "%s.%d", g.state_path, i);
		cr_assert_eq(fx_devsim_dump(state, &root), 0);
		units = json_object_get(root, "units");
		cr_assert_eq(json_array_size(units), GANG_UNITS, "%s", state);
		json_array_foreach(units, k, u)
			fx_check_pass(&w, state, json_string_value(json_object_get(u, "uid")));
		json_decref(root);
	}
	fx_station_run(&R, &w, "--ca-cert", w.ca, "records", "verify", NULL);
	cr_assert_eq(R.code, 0, "%s\n%s", R.out, R.err);
	fx_devsim_stop(&g);
	cr_assert_eq(g.exit_status, 0);
	fx_rmtree(w.dir);
}

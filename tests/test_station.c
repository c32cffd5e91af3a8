/* test_station.c — the real `station` binary against station-devsim on ptys
 * and a fresh SoftHSM token; results checked with outside means: OpenSSL
 * verify, the simulator's own state file, SQLite. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

/* Uncompressed EC point of a certificate's key, hex. */
static void cert_point_hex(X509 *x, char out[131])
{
	uint8_t pt[65];
	size_t len = 0;

	cr_assert_eq(EVP_PKEY_get_octet_string_param(X509_get0_pubkey(x),
		OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &len), 1);
	cr_assert_eq(len, 65);
	st_hex(pt, 65, out);
}

static int openssl_verify(const char *ca, const char *cert)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd), "openssl verify -CAfile '%s' '%s' >/dev/null 2>&1", ca, cert);
	return system(cmd);
}

static const char *fuse0(json_t *unit)
{
	return json_string_value(json_array_get(json_object_get(unit, "fuses"), 0));
}

Test(station, provisions_three_units_end_to_end, .timeout = 120)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	json_t *units, *ev;
	size_t i;

	fx_world_init(&w, true, 700);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog1", 3, NULL), 0);
	fx_station_run(&r, &w, "--json", "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "provision exit %d\nstdout:%s\nstderr:%s", r.code, r.out, r.err);
	units = fx_json_events(r.out, "unit");
	cr_assert_eq(json_array_size(units), 3, "expected 3 unit events: %s", r.out);
	json_array_foreach(units, i, ev) {
		const char *uid = json_string_value(json_object_get(ev, "uid"));
		char cert[700], point[131];
		json_t *dev;
		FILE *f;
		X509 *x;

		cr_assert_str_eq(json_string_value(json_object_get(ev, "result")), "PASS");
		cr_assert_str_eq(json_string_value(json_object_get(ev, "fuses")), "burned");
		snprintf(cert, sizeof(cert), "%s/%s.pem", w.certs, uid);
		cr_assert_eq(openssl_verify(w.ca, cert), 0, "openssl verify failed for %s", cert);
		f = fopen(cert, "r");
		cr_assert_not_null(f);
		x = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
		cr_assert_not_null(x);
		cert_point_hex(x, point);
		dev = fx_sim_unit(sim.state_path, uid);
		cr_assert_not_null(dev, "simulator has no unit %s", uid);
		/* The certified key is the one the device generated. */
		cr_assert_str_eq(json_string_value(json_object_get(dev, "pubkey")), point);
		/* The device's OTP bank holds the profile's root-of-trust hash. */
		cr_assert_str_eq(fuse0(dev), FX_ROT);
		json_decref(dev);
		X509_free(x);
	}
	json_decref(units);
	cr_assert_eq(fx_count_units(&w, "PASS"), 3);
	cr_assert_eq(fx_count_units(&w, NULL), 3);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

Test(station, two_slots_in_parallel_and_no_second_identity, .timeout = 120)
{
	fx_world w;
	fx_run r;
	fx_devsim a, b;

	fx_world_init(&w, true, 700);
	cr_assert_eq(fx_devsim_start(&a, w.dir, "progA", 2, "--seed A"), 0);
	cr_assert_eq(fx_devsim_start(&b, w.dir, "progB", 2, "--seed B"), 0);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", a.port, "--slot", b.port,
		       "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert_eq(fx_count_units(&w, "PASS"), 4);
	cr_assert(strstr(r.out, "summary: 4 PASS"), "%s", r.out);
	fx_devsim_stop(&a);
	fx_devsim_stop(&b);
	/* The same units again (state kept): refused a second identity. */
	cr_assert_eq(fx_devsim_rewind(a.state_path), 0);
	cr_assert_eq(fx_devsim_start(&a, w.dir, "progA", 2, "--seed A"), 0);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", a.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.err, "already provisioned"), "%s", r.err);
	cr_assert(strstr(r.out, "2 skipped"), "%s", r.out);
	cr_assert_eq(fx_count_units(&w, NULL), 4);
	fx_devsim_stop(&a);
	fx_rmtree(w.dir);
}

Test(station, same_device_id_in_two_slots_gets_one_identity, .timeout = 60)
{
	fx_world w;
	fx_run r;
	fx_devsim a, b;

	fx_world_init(&w, true, 700);
	/* Same seed: both programmers hold units with the same IDs (clones). */
	cr_assert_eq(fx_devsim_start(&a, w.dir, "progA", 1, "--seed clone"), 0);
	cr_assert_eq(fx_devsim_start(&b, w.dir, "progB", 1, "--seed clone"), 0);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", a.port, "--slot", b.port,
		       "provision", NULL);
	cr_assert_eq(fx_count_units(&w, "PASS"), 1, "stdout:%s\nstderr:%s", r.out, r.err);
	/* Either both were identified at once (the second is refused as a
	 * clone: FAIL) or one after the other (the second is skipped). */
	cr_assert(strstr(r.out, "same device ID") || strstr(r.err, "already provisioned"),
		  "stdout:%s\nstderr:%s", r.out, r.err);
	fx_devsim_stop(&a);
	fx_devsim_stop(&b);
	fx_rmtree(w.dir);
}

Test(station, fuses_untouched_unless_armed, .timeout = 60)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	json_t *units, *dev;

	fx_world_init(&w, true, 700);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog1", 1, NULL), 0);
	fx_station_run(&r, &w, "--json", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stderr:%s", r.err);
	units = fx_json_events(r.out, "unit");
	cr_assert_eq(json_array_size(units), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(units, 0), "fuses")),
			 "not-armed");
	/* provisioned, not locked: not the verdict of a locked unit */
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(units, 0), "result")),
			 "UNFUSED");
	dev = fx_sim_unit(sim.state_path,
			  json_string_value(json_object_get(json_array_get(units, 0), "uid")));
	cr_assert_str_eq(fuse0(dev), "0000000000000000000000000000000000000000000000000000000000000000");
	json_decref(dev);
	json_decref(units);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

Test(station, other_fuse_value_quarantines_and_never_burns, .timeout = 60)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;
	json_t *st = NULL, *u;
	const char *other = "00000000000000000000000000000000000000000000000000000000000000ff";
	char uid[64];

	fx_world_init(&w, true, 700);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog1", 1, NULL), 0);
	fx_devsim_stop(&sim);
	/* Pre-burn another value into the simulated chip's OTP bank 0. */
	cr_assert_eq(fx_devsim_dump(sim.state_path, &st), 0);
	u = json_array_get(json_object_get(st, "units"), 0);
	snprintf(uid, sizeof(uid), "%s", json_string_value(json_object_get(u, "uid")));
	json_array_set_new(json_object_get(u, "fuses"), 0, json_string(other));
	cr_assert_eq(json_dump_file(st, sim.state_path, 0), 0);
	json_decref(st);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog1", 1, NULL), 0);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 1, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.out, "QUARANTINE"), "%s", r.out);
	cr_assert_eq(fx_count_units(&w, "QUARANTINE"), 1);
	u = fx_sim_unit(sim.state_path, uid);
	cr_assert_str_eq(fuse0(u), other, "the fuses were changed");
	json_decref(u);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

Test(station, wrong_pin_is_refused_and_records_nothing, .timeout = 60)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;

	fx_world_init(&w, true, 700);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog1", 1, NULL), 0);
	fx_write_file(w.pinfile, "99999999\n");
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 3, "stderr:%s", r.err);
	cr_assert(strstr(r.err, "wrong PIN"), "%s", r.err);
	cr_assert_null(strstr(r.err, "99999999"), "the PIN was printed");
	cr_assert_null(strstr(r.out, "99999999"), "the PIN was printed");
	cr_assert_eq(fx_count_units(&w, NULL), 0);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

Test(station, missing_token_is_a_clear_error, .timeout = 60)
{
	fx_world w;
	fx_run r;

	fx_world_init(&w, false, 700);
	fx_station_run(&r, &w, "--token", "no-such-token", "--slot", "/dev/null",
		       "provision", NULL);
	cr_assert_eq(r.code, 3, "stderr:%s", r.err);
	cr_assert(strstr(r.err, "no-such-token"), "%s", r.err);
	cr_assert_eq(fx_count_units(&w, NULL), 0);
	fx_rmtree(w.dir);
}

Test(station, silent_programmer_times_out_naming_slot_and_port, .timeout = 60)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;

	fx_world_init(&w, true, 700);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog1", 1, "--fault mute"), 0);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 5, "stderr:%s", r.err);
	cr_assert(strstr(r.err, "slot 1"), "%s", r.err);
	cr_assert(strstr(r.err, sim.port), "%s", r.err);
	cr_assert(strstr(r.err, "no answer") || strstr(r.err, "timed out"), "%s", r.err);
	cr_assert_eq(fx_count_units(&w, NULL), 0);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

Test(station, garbage_from_the_port_is_a_clear_error, .timeout = 60)
{
	fx_world w;
	fx_run r;
	fx_devsim sim;

	fx_world_init(&w, true, 700);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog1", 1, "--fault garbage"), 0);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 5, "stderr:%s", r.err);
	cr_assert(strstr(r.err, "slot 1"), "%s", r.err);
	cr_assert(strstr(r.err, "malformed"), "%s", r.err);
	cr_assert_eq(fx_count_units(&w, NULL), 0);
	fx_devsim_stop(&sim);
	fx_rmtree(w.dir);
}

Test(station, bad_profile_is_a_usage_error, .timeout = 60)
{
	fx_world w;
	fx_run r;

	fx_world_init(&w, false, 700);
	fx_write_file(w.profile, "name = \"x\";\nroot_of_trust: { sha256 = \"abc\"; };\n");
	fx_sign(&w, w.profile);
	fx_station_run(&r, &w, "--slot", "/dev/null", "provision", NULL);
	cr_assert_eq(r.code, 2, "stderr:%s", r.err);
	cr_assert(strstr(r.err, "profile"), "%s", r.err);
	cr_assert_eq(fx_count_units(&w, NULL), 0);
	fx_rmtree(w.dir);
}

Test(station, ca_init_refuses_a_second_ca_and_key_stays_in_token, .timeout = 60)
{
	fx_world w;
	fx_run r;
	char cmd[1024], buf[8192];
	FILE *p;
	size_t n;

	fx_world_init(&w, true, 700);
	cr_assert_eq(openssl_verify(w.ca, w.ca), 0, "self-signed CA does not verify");
	fx_station_run(&r, &w, "ca", "init", NULL);
	cr_assert_eq(r.code, 3);
	cr_assert(strstr(r.err, "already exists"), "%s", r.err);
	snprintf(cmd, sizeof(cmd), "pkcs11-tool --module %s --token-label station --login "
		 "--pin " FX_PIN " --list-objects --type privkey 2>&1", FX_SOFTHSM_MODULE);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	n = fread(buf, 1, sizeof(buf) - 1, p);
	buf[n] = '\0';
	pclose(p);
	cr_assert(strstr(buf, "issuing-ca"), "%s", buf);
	cr_assert(strstr(buf, "never extractable"), "CA key is extractable: %s", buf);
	fx_rmtree(w.dir);
}

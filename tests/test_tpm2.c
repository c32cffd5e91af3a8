/* test_tpm2.c — the real `station` binary provisioning a software TPM 2.0
 * (swtpm, fresh state and port pair per test) through the "tpm2" driver;
 * what it left in the TPM is checked with tpm2-tools and OpenSSL only. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"
#include "tests/fixtures/fx_swtpm.h"

#define OTHER "00000000000000000000000000000000000000000000000000000000000000ff"
#define KEY_HANDLE "0x81020000"
#define CERT_NV "0x01c10000"
#define ROT_NV "0x01c10001"
#define CC_NV_WRITELOCK 0x138u
#define CC_SIGN 0x15du

#define PROFILE \
	"name = \"test-gateway\";\n" \
	"certificate: { organization = \"Test Gateways\"; validity_days = 365; };\n" \
	"root_of_trust: { sha256 = \"" FX_ROT "\"; fuse_bank = 0; };\n"

/* One test's world: the station world and a TPM on a TCTI slot. */
struct world {
	fx_world fx;
	fx_swtpm tpm;
	char slot[160];
};

/* Token, configuration, profile (NULL: PROFILE), CA, and a fresh swtpm. */
static void world_init_profile(struct world *w, const char *profile)
{
	fx_world_opts o = { .with_ca = true, .timeout_ms = 2000,
			    .profile = profile ? profile : PROFILE };

	memset(w, 0, sizeof(*w));
	fx_world_init_opts(&w->fx, &o);
	cr_assert_eq(fx_swtpm_start(&w->tpm, w->fx.dir), 0, "swtpm fixture failed");
	snprintf(w->slot, sizeof(w->slot), "tpm2:%s", w->tpm.tcti);
}

static void world_init(struct world *w)
{
	world_init_profile(w, NULL);
}

static void world_end(struct world *w)
{
	fx_swtpm_stop(&w->tpm);
	fx_rmtree(w->fx.dir);
}

/* The one unit event of a --json run. */
static json_t *the_unit(const char *out)
{
	json_t *units = fx_json_events(out, "unit"), *found;

	cr_assert_leq(json_array_size(units), 1, "more than one unit: %s", out);
	found = json_incref(json_array_get(units, 0));
	json_decref(units);
	cr_assert_not_null(found, "no unit event: %s", out);
	return found;
}

static const char *jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

static EVP_PKEY *read_pubkey_pem(const char *p)
{
	FILE *f = fopen(p, "r");
	EVP_PKEY *k;

	cr_assert_not_null(f, "no %s", p);
	k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(k, "%s is not a PEM public key", p);
	return k;
}

/* The "attributes: friendly:" line of NV index idx in tpm2_nvreadpublic. */
static void nv_attrs(const struct world *w, const char *idx, char *attrs, size_t cap)
{
	char out[8192], *p, *e;

	cr_assert_eq(fx_swtpm_sh(&w->tpm, out, sizeof(out), "tpm2_nvreadpublic %s", idx),
		     0, "tpm2_nvreadpublic %s failed: %s", idx, out);
	p = strstr(out, "friendly: owner");
	cr_assert_not_null(p, "no attributes for %s: %s", idx, out);
	p += strlen("friendly: ");
	e = strchr(p, '\n');
	snprintf(attrs, cap, "%.*s", e ? (int)(e - p) : (int)strlen(p), p);
}

/* Is word one of the |-separated attributes? */
static bool has_attr(const char *attrs, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = attrs; (p = strstr(p, word)); p += n)
		if ((p == attrs || p[-1] == '|') && (p[n] == '\0' || p[n] == '|'))
			return true;
	return false;
}

/* The root-of-trust index's 32 bytes, hex, read by tpm2_nvread. */
static void rot_hex(const struct world *w, char hex[65])
{
	char out[256];

	cr_assert_eq(fx_swtpm_sh(&w->tpm, out, sizeof(out), "tpm2_nvread -C o " ROT_NV
				 " 2>/dev/null | od -An -v -tx1 | tr -d ' \\n'"), 0);
	cr_assert_eq(strlen(out), 64, "root of trust reads %s", out);
	memcpy(hex, out, 65);
}

/* The certificate in the TPM verifies against the CA and certifies the
 * persistent key; all read out with tpm2-tools. */
static void check_tpm_identity(const struct world *w, const char *key_handle,
			       const char *cert_nv)
{
	char cmd_out[4096], der[600], pem[600], key[600];
	EVP_PKEY *kp;
	X509 *x;
	FILE *f;

	snprintf(der, sizeof(der), "%s/tpm-cert.der", w->fx.dir);
	snprintf(pem, sizeof(pem), "%s/tpm-cert.pem", w->fx.dir);
	snprintf(key, sizeof(key), "%s/tpm-key.pem", w->fx.dir);
	cr_assert_eq(fx_swtpm_sh(&w->tpm, cmd_out, sizeof(cmd_out),
				 "tpm2_nvread -C o %s -o '%s' 2>&1", cert_nv, der), 0,
		     "tpm2_nvread of the certificate failed: %s", cmd_out);
	cr_assert_eq(fx_swtpm_sh(&w->tpm, cmd_out, sizeof(cmd_out),
				 "openssl x509 -inform DER -in '%s' -out '%s' 2>&1 && "
				 "openssl verify -CAfile '%s' '%s' 2>&1", der, pem, w->fx.ca, pem),
		     0, "openssl verify of the certificate in the TPM: %s", cmd_out);
	cr_assert_eq(fx_swtpm_sh(&w->tpm, cmd_out, sizeof(cmd_out),
				 "tpm2_readpublic -c %s -f pem -o '%s' 2>&1", key_handle, key),
		     0, "tpm2_readpublic failed: %s", cmd_out);
	f = fopen(pem, "r");
	cr_assert_not_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(x);
	kp = read_pubkey_pem(key);
	cr_assert_eq(EVP_PKEY_eq(X509_get0_pubkey(x), kp), 1,
		     "the certificate does not certify the TPM's persistent key");
	EVP_PKEY_free(kp);
	X509_free(x);
}

Test(tpm2, provisions_a_tpm_end_to_end_then_skips_it, .timeout = 120)
{
	struct world w;
	fx_run r;
	char attrs[256], hex[65], out[4096], ek[600], uid_sha[80];
	json_t *u;

	world_init(&w);
	fx_station_run(&r, &w.fx, "--json", "--burn-fuses", "--yes", "--slot", w.slot, "provision", NULL);
	cr_assert_eq(r.code, 0, "provision exit %d\nstdout:%s\nstderr:%s", r.code, r.out, r.err);
	u = the_unit(r.out);
	cr_assert_str_eq(jstr(u, "result"), "PASS");
	cr_assert_str_eq(jstr(u, "fuses"), "burned");
	check_tpm_identity(&w, KEY_HANDLE, CERT_NV);
	/* The root of trust is written and write-locked. */
	nv_attrs(&w, ROT_NV, attrs, sizeof(attrs));
	cr_assert(has_attr(attrs, "written") && has_attr(attrs, "writelocked") &&
		  has_attr(attrs, "writedefine"), "root-of-trust index: %s", attrs);
	rot_hex(&w, hex);
	cr_assert_str_eq(hex, FX_ROT);
	/* The device ID is the first 16 bytes of SHA-256 of the EK's point,
	 * the EK as tpm2_createek makes it. */
	snprintf(ek, sizeof(ek), "%s/ek.pem", w.fx.dir);
	cr_assert_eq(fx_swtpm_sh(&w.tpm, out, sizeof(out),
				 "tpm2_createek -G ecc -c '%s/ek.ctx' -u '%s' -f pem >/dev/null "
				 "2>&1 && openssl pkey -pubin -in '%s' -outform DER | tail -c 65 | "
				 "sha256sum", w.fx.dir, ek, ek), 0, "tpm2_createek: %s", out);
	snprintf(uid_sha, sizeof(uid_sha), "%.32s", out);
	cr_assert_str_eq(jstr(u, "uid"), uid_sha);
	cr_assert_eq(fx_count_units(&w.fx, "PASS"), 1);
	json_decref(u);

	/* A second run: PASS on record, the TPM is not given a second identity. */
	fx_station_run(&r, &w.fx, "--burn-fuses", "--yes", "--slot", w.slot, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.err, "already provisioned"), "%s", r.err);
	cr_assert(strstr(r.out, "1 skipped"), "%s", r.out);
	cr_assert_eq(fx_count_units(&w.fx, NULL), 1);
	check_tpm_identity(&w, KEY_HANDLE, CERT_NV);
	world_end(&w);
}

/* Unarmed, a TPM is UNFUSED like any target: its identity is issued and
 * proven, its write-once root-of-trust index (its fuse plan) is left
 * unwritten; an armed run finishes it with the same certificate. */
Test(tpm2, unarmed_tpm_is_unfused_then_an_armed_run_finishes_it, .timeout = 150)
{
	struct world w;
	fx_run r;
	char attrs[256], hex[65], out[8192], serial[80], again[80];
	json_t *u;
	int rc;

	world_init(&w);
	fx_station_run(&r, &w.fx, "--json", "--slot", w.slot, "provision", NULL);
	cr_assert_eq(r.code, 0, "provision exit %d\nstdout:%s\nstderr:%s", r.code, r.out, r.err);
	u = the_unit(r.out);
	cr_assert_str_eq(jstr(u, "result"), "UNFUSED");
	cr_assert_str_eq(jstr(u, "fuses"), "not-armed");
	snprintf(serial, sizeof(serial), "%s", jstr(u, "cert_serial"));
	json_decref(u);
	cr_assert_eq(fx_count_units(&w.fx, "UNFUSED"), 1);
	check_tpm_identity(&w, KEY_HANDLE, CERT_NV);
	/* the write-once index is untouched: not defined, or defined unwritten */
	rc = fx_swtpm_sh(&w.tpm, out, sizeof(out), "tpm2_nvreadpublic %s 2>&1", ROT_NV);
	cr_assert(rc != 0 || !strstr(out, "written"), "root of trust written unarmed: %s",
		  out);

	fx_station_run(&r, &w.fx, "--json", "--burn-fuses", "--yes", "--slot", w.slot, "provision",
		       NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	u = the_unit(r.out);
	cr_assert_str_eq(jstr(u, "result"), "PASS");
	cr_assert_str_eq(jstr(u, "fuses"), "burned");
	snprintf(again, sizeof(again), "%s", jstr(u, "cert_serial"));
	json_decref(u);
	cr_assert_str_eq(again, serial, "the armed run issued a second identity");
	check_tpm_identity(&w, KEY_HANDLE, CERT_NV);
	nv_attrs(&w, ROT_NV, attrs, sizeof(attrs));
	cr_assert(has_attr(attrs, "written") && has_attr(attrs, "writelocked"),
		  "root-of-trust index: %s", attrs);
	rot_hex(&w, hex);
	cr_assert_str_eq(hex, FX_ROT);
	cr_assert_eq(fx_count_units(&w.fx, "PASS"), 1);
	cr_assert_eq(fx_q_int(&w.fx, "SELECT count(*) FROM revocations"), 0);
	world_end(&w);
}

Test(tpm2, root_of_trust_locked_with_another_hash_is_quarantined, .timeout = 120)
{
	struct world w;
	fx_run r;
	char out[4096], attrs[256], hex[65], other[600];
	uint8_t bin[32];
	json_t *u;
	FILE *f;

	world_init(&w);
	/* Someone locked another hash into the index first (tpm2-tools). */
	snprintf(other, sizeof(other), "%s/other.bin", w.fx.dir);
	cr_assert_eq(st_unhex(OTHER, bin, sizeof(bin)), ST_OK);
	f = fopen(other, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(bin, 1, sizeof(bin), f), sizeof(bin));
	fclose(f);
	cr_assert_eq(fx_swtpm_sh(&w.tpm, out, sizeof(out),
		"tpm2_nvdefine " ROT_NV " -C o -s 32 -a 'ownerwrite|ownerread|writedefine' "
		"2>&1 && tpm2_nvwrite " ROT_NV " -C o -i '%s' 2>&1 && "
		"tpm2_nvwritelock " ROT_NV " -C o 2>&1", other), 0,
		"pre-locking the index failed: %s", out);
	fx_station_run(&r, &w.fx, "--json", "--burn-fuses", "--yes", "--slot", w.slot, "provision", NULL);
	cr_assert_eq(r.code, 1, "stdout:%s\nstderr:%s", r.out, r.err);
	u = the_unit(r.out);
	cr_assert_str_eq(jstr(u, "result"), "QUARANTINE", "%s", r.out);
	cr_assert_str_eq(jstr(u, "fuses"), "conflict");
	cr_assert(strstr(jstr(u, "reason"), OTHER), "the conflicting value is not "
		  "reported: %s", r.out);
	cr_assert_eq(fx_count_units(&w.fx, "QUARANTINE"), 1);
	/* Nothing was written over it. */
	rot_hex(&w, hex);
	cr_assert_str_eq(hex, OTHER);
	nv_attrs(&w, ROT_NV, attrs, sizeof(attrs));
	cr_assert(has_attr(attrs, "writelocked"), "%s", attrs);
	json_decref(u);
	world_end(&w);
}

/* swtpm dies when the relay sees command cc: the unit is recorded FAIL
 * with a clear cause, the slot stops; after swtpm comes back (same state)
 * a rerun completes the unit. */
static void kill_and_resume(uint32_t cc, const char *step_text)
{
	struct world w;
	fx_run r;
	char slot[160], attrs[256], hex[65];
	json_t *u;

	world_init(&w);
	cr_assert_eq(fx_swtpm_relay(&w.tpm, cc), 0);
	snprintf(slot, sizeof(slot), "tpm2:%s", w.tpm.relay_tcti);
	fx_station_run(&r, &w.fx, "--json", "--burn-fuses", "--yes", "--slot", slot, "provision", NULL);
	cr_assert_eq(r.code, 5, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.out, "slot 1"), "%s", r.out);
	cr_assert(strstr(r.out, "stopped answering"), "%s", r.out);
	cr_assert(strstr(r.out, step_text), "%s", r.out);
	u = the_unit(r.out);
	cr_assert_str_eq(jstr(u, "result"), "FAIL");
	json_decref(u);
	cr_assert_eq(fx_count_units(&w.fx, "FAIL"), 1);
	cr_assert_eq(fx_count_units(&w.fx, "PASS"), 0);

	/* Power the TPM up again with the same state; provision directly. */
	cr_assert_eq(fx_swtpm_start(&w.tpm, w.fx.dir), 0);
	if (cc == CC_NV_WRITELOCK) {
		/* Killed between write and lock: written, not locked. */
		nv_attrs(&w, ROT_NV, attrs, sizeof(attrs));
		cr_assert(has_attr(attrs, "written") && !has_attr(attrs, "writelocked"),
			  "%s", attrs);
	}
	fx_station_run(&r, &w.fx, "--json", "--burn-fuses", "--yes", "--slot", w.slot, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	u = the_unit(r.out);
	cr_assert_str_eq(jstr(u, "result"), "PASS");
	json_decref(u);
	cr_assert_eq(fx_count_units(&w.fx, "PASS"), 1);
	cr_assert_eq(fx_count_units(&w.fx, NULL), 2);
	check_tpm_identity(&w, KEY_HANDLE, CERT_NV);
	nv_attrs(&w, ROT_NV, attrs, sizeof(attrs));
	cr_assert(has_attr(attrs, "writelocked"), "%s", attrs);
	rot_hex(&w, hex);
	cr_assert_str_eq(hex, FX_ROT);
	world_end(&w);
}

Test(tpm2, tpm_stopped_at_proof_of_possession_is_interrupted_and_resumable,
     .timeout = 120)
{
	kill_and_resume(CC_SIGN, "could not sign the challenge");
}

Test(tpm2, tpm_stopped_between_root_of_trust_write_and_lock_completes_on_rerun,
     .timeout = 120)
{
	kill_and_resume(CC_NV_WRITELOCK, "root-of-trust (bank 0, request");
}

Test(tpm2, handles_from_the_uri_and_a_bad_option_is_a_clear_error, .timeout = 120)
{
	struct world w;
	fx_run r;
	char slot[300], attrs[256];

	world_init(&w);
	snprintf(slot, sizeof(slot), "%s?colour=blue", w.slot);
	fx_station_run(&r, &w.fx, "--burn-fuses", "--yes", "--slot", slot, "provision", NULL);
	cr_assert_eq(r.code, 5, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.err, "unknown option 'colour=blue'"), "%s", r.err);
	cr_assert_eq(fx_count_units(&w.fx, NULL), 0);

	snprintf(slot, sizeof(slot), "%s?key=0x81020007&cert_nv=0x01c20000&rot_nv=0x01c20001",
		 w.slot);
	fx_station_run(&r, &w.fx, "--burn-fuses", "--yes", "--slot", slot, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	check_tpm_identity(&w, "0x81020007", "0x01c20000");
	nv_attrs(&w, "0x01c20001", attrs, sizeof(attrs));
	cr_assert(has_attr(attrs, "writelocked"), "%s", attrs);
	world_end(&w);
}

Test(tpm2, handles_from_the_profile_and_a_contradicting_slot_is_refused, .timeout = 120)
{
	struct world w;
	fx_run r;
	char slot[300], attrs[256];

	world_init_profile(&w, PROFILE
		"tpm2: { key_handle = 0x81020009; cert_nv = 0x01c30000; rot_nv = 0x01c30001; };\n");
	/* The slot may not move the identity the product profile placed. */
	snprintf(slot, sizeof(slot), "%s?key=0x81020001", w.slot);
	fx_station_run(&r, &w.fx, "--burn-fuses", "--yes", "--slot", slot, "provision", NULL);
	cr_assert_eq(r.code, 5, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.err, "the product profile says 0x81020009"), "%s", r.err);
	cr_assert_eq(fx_count_units(&w.fx, NULL), 0);
	/* Repeating the profile's value is fine; the identity lands where the
	 * profile says (checked with tpm2-tools). */
	snprintf(slot, sizeof(slot), "%s?rot_nv=0x01c30001", w.slot);
	fx_station_run(&r, &w.fx, "--burn-fuses", "--yes", "--slot", slot, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	check_tpm_identity(&w, "0x81020009", "0x01c30000");
	nv_attrs(&w, "0x01c30001", attrs, sizeof(attrs));
	cr_assert(has_attr(attrs, "writelocked"), "%s", attrs);
	world_end(&w);
}

Test(tpm2, profile_with_a_bad_tpm2_handle_is_a_usage_error, .timeout = 60)
{
	struct world w;
	fx_run r;

	world_init_profile(&w, PROFILE "tpm2: { key_handle = 0x01020009; };\n");
	fx_station_run(&r, &w.fx, "--burn-fuses", "--yes", "--slot", w.slot, "provision", NULL);
	cr_assert_eq(r.code, 2, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.err, "'tpm2.key_handle' must be a persistent handle"), "%s", r.err);
	cr_assert_eq(fx_count_units(&w.fx, NULL), 0);
	world_end(&w);
}

Test(tpm2, tpm_not_running_is_a_clear_slot_error, .timeout = 120)
{
	struct world w;
	fx_run r;

	world_init(&w);
	fx_swtpm_stop(&w.tpm);
	fx_station_run(&r, &w.fx, "--burn-fuses", "--yes", "--slot", w.slot, "provision", NULL);
	cr_assert_eq(r.code, 5, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.err, "cannot reach the TPM at swtpm:host=127.0.0.1"), "%s", r.err);
	cr_assert(strstr(r.err, "slot 1"), "%s", r.err);
	cr_assert_eq(fx_count_units(&w.fx, NULL), 0);
	world_end(&w);
}

Test(tpm2, owner_password_set_fails_the_unit_with_a_hint, .timeout = 120)
{
	struct world w;
	fx_run r;
	char out[4096];
	json_t *u;

	world_init(&w);
	cr_assert_eq(fx_swtpm_sh(&w.tpm, out, sizeof(out),
				 "tpm2_changeauth -c o not-empty 2>&1"), 0, "%s", out);
	fx_station_run(&r, &w.fx, "--json", "--burn-fuses", "--yes", "--slot", w.slot, "provision", NULL);
	cr_assert_eq(r.code, 1, "stdout:%s\nstderr:%s", r.out, r.err);
	u = the_unit(r.out);
	cr_assert_str_eq(jstr(u, "result"), "FAIL");
	cr_assert(strstr(jstr(u, "reason"), "empty owner/endorsement password"), "%s", r.out);
	json_decref(u);
	/* Nothing was defined in the TPM. */
	cr_assert_neq(fx_swtpm_sh(&w.tpm, NULL, 0, "tpm2_nvreadpublic " ROT_NV
				  " >/dev/null 2>&1"), 0, "the root-of-trust index exists");
	world_end(&w);
}

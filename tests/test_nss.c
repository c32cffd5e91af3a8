/* test_nss.c — the whole flow on PKCS#11 modules other than SoftHSM2,
 * each with its own fresh token (tests/fixtures/fx_module.h): profile key
 * and signature, `ca init` (P-256 and P-384), `provision --burn-fuses` of
 * simulated units in device and inject key mode, `records verify`,
 * `openssl verify` of every device certificate, `crl export`.  NSS softokn
 * is run once directly (hsm.init_args) and once through p11-kit-proxy.so
 * as an unprivileged user, so that p11-kit really reads the per-user
 * module configuration (it ignores it for root).  Module-specific quirks
 * are checked at the hsm/ level beside. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base.h"
#include "hsm/hsm.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_module.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

#define PIN "7319kq4"

#define PLAN \
	"fuses: {\n" \
	"  conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n" \
	"  plan = (\n" \
	"    { name = \"rot-hash\"; bank = 0; word = 0; words = 8; source = \"root_of_trust\"; },\n" \
	"    { name = \"secure-boot\"; bank = 1; word = 0; bits = [0, 0]; value = 1; },\n" \
	"    { name = \"lock\"; kind = \"lifecycle\"; state = \"locked\"; }\n" \
	"  );\n" \
	"};\n"

/* The profile: the issuing CA named by an RFC 7512 URI, key mode mode. */
static void profile_text(char *out, size_t len, const char *mode)
{
	snprintf(out, len, "name = \"module-sensor\";\nkey_mode = \"%s\";\n"
		 "certificate: { organization = \"Module Test\"; validity_days = 365; "
		 "issuer = \"pkcs11:object=issuing-ca;type=private\"; };\n"
		 "root_of_trust: { sha256 = \"" FX_ROT "\"; fuse_bank = 0; };\n%s",
		 mode, PLAN);
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Provision units new units on a fresh simulator named name, armed; every
 * one must PASS and check out against the device (fx_check_pass). */
static void provision_units(fx_world *w, const char *name, int units, bool nobody)
{
	fx_devsim sim;
	fx_run *r = malloc(sizeof(*r));
	json_t *st = NULL, *arr;
	char seed[48];

	cr_assert_not_null(r);

	snprintf(seed, sizeof(seed), "--seed %s", name);   /* units of their own */
	cr_assert_eq(fx_devsim_start(&sim, w->dir, name, units, seed), 0);
	if (nobody)
		cr_assert_eq(chmod(sim.slave, 0666), 0, "chmod %s", sim.slave);
	fx_station_run(r, w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r->code, 0, "provision (%s): stdout:%s\nstderr:%s", name, r->out,
		     r->err);
	cr_assert_eq(fx_devsim_dump(sim.state_path, &st), 0);
	arr = json_object_get(st, "units");
	cr_assert_eq(json_array_size(arr), (size_t)units);
	for (size_t i = 0; i < json_array_size(arr); i++)
		fx_check_pass(w, sim.state_path,
			      json_string_value(json_object_get(json_array_get(arr, i), "uid")));
	json_decref(st);
	free(r);
}

/* The whole flow in world w (its configuration already names the module). */
static void full_flow(fx_world *w, const char *what, bool nobody)
{
	fx_run *r = malloc(sizeof(*r));
	char text[4096], ca384[600], crl[600], cmd[2048];
	int before;

	cr_assert_not_null(r);
	/* CAs: P-256 (the one provisioning uses, named in the profile by URI)
	 * and P-384 beside it */
	fx_station_run(r, w, "ca", "init", "--key-type", "p256", "--out", w->ca, NULL);
	cr_assert_eq(r->code, 0, "%s: ca init p256: %s", what, r->err);
	fx_path(ca384, w, "ca384.pem");
	fx_station_run(r, w, "--ca-key", "pkcs11:object=ca-p384", "ca", "init",
		       "--key-type", "p384", "--cn", "P-384 Issuing CA", "--out", ca384, NULL);
	cr_assert_eq(r->code, 0, "%s: ca init p384: %s", what, r->err);
	cr_assert_eq(sh("openssl verify -CAfile '%s' '%s' >/dev/null && openssl x509 "
			"-in '%s' -noout -text | grep -q 'NIST CURVE: P-384'", ca384, ca384,
			ca384), 0, "%s: the P-384 CA certificate", what);
	fx_station_run(r, w, "ca", "show", NULL);
	cr_assert_eq(r->code, 0, "%s: ca show: %s", what, r->err);
	cr_assert(strstr(r->out, "label:       issuing-ca") &&
		  strstr(r->out, "label:       ca-p384") && strstr(r->out, "EC P-384"),
		  "%s: %s", what, r->out);
	/* device key mode, then inject mode */
	provision_units(w, "dev", 3, nobody);
	profile_text(text, sizeof(text), "inject");
	fx_write_file(w->profile, text);
	fx_sign(w, w->profile);
	if (nobody)
		fx_open_up(w->dir, true);
	before = fx_count_units(w, "PASS");
	provision_units(w, "inj", 2, nobody);
	cr_assert_eq(fx_count_units(w, "PASS"), before + 2);
	/* the evidence */
	fx_station_run(r, w, "--ca-cert", w->ca, "records", "verify", NULL);
	cr_assert_eq(r->code, 0, "%s: records verify: %s%s", what, r->out, r->err);
	fx_path(crl, w, "crl.pem");
	fx_station_run(r, w, "--ca-key", "pkcs11:object=issuing-ca", "crl", "export",
		       "--out", crl, NULL);
	cr_assert_eq(r->code, 0, "%s: crl export: %s%s", what, r->out, r->err);
	snprintf(cmd, sizeof(cmd), "openssl crl -in '%s' -CAfile '%s' -noout 2>&1 | "
		 "grep -q 'verify OK'", crl, w->ca);
	cr_assert_eq(system(cmd), 0, "%s: the CRL does not verify under the CA", what);
	free(r);
}

/* A world whose token is m's: SoftHSM's fixture token is made (the world's
 * directory) but the configuration names m. */
static void module_world(fx_world *w, const fx_module *m, const char *module,
			 const char *token, const char *init_args)
{
	char text[4096];
	fx_world_opts o = { .timeout_ms = 2000, .pin = m->pin, .station_id = "mod-station",
			    .module = module, .token = token, .init_args = init_args,
			    .ca_key = "", .profile = text, .profile_file = "mod.profile" };

	profile_text(text, sizeof(text), "device");
	fx_world_init_opts(w, &o);
}

Test(nss, nss_softokn_full_flow_with_init_args, .timeout = 300)
{
	fx_module m;
	fx_world w;

	cr_assert_eq(fx_nss_init(&m, PIN), 0, "NSS fixture failed (see stderr)");
	module_world(&w, &m, m.module, m.token, m.init_args);
	full_flow(&w, "NSS softokn", false);
	fx_rmtree(w.dir);
	fx_rmtree(m.dir);
}

/* Through p11-kit-proxy.so, as nobody: NSS is only in nobody's per-user
 * module configuration, so the token exists only if p11-kit read it; the
 * token is chosen by URI. */
Test(nss, nss_softokn_full_flow_through_p11_kit_as_non_root, .timeout = 300)
{
	fx_module m;
	fx_world w;
	char home[512];

	cr_assert_eq(access(FX_P11KIT_PROXY, R_OK), 0,
		     "p11-kit-proxy.so missing: install p11-kit-modules");
	cr_assert_eq(fx_nss_init(&m, PIN), 0, "NSS fixture failed (see stderr)");
	module_world(&w, &m, FX_P11KIT_PROXY, "pkcs11:token=NSS%20Certificate%20DB", NULL);
	fx_path(home, &w, "home");
	cr_assert_eq(fx_p11kit_user_module(&m, home, "station-nss"), 0);
	cr_assert_eq(fx_open_up(w.dir, true), 0);
	cr_assert_eq(fx_open_up(m.dir, true), 0);
	snprintf(w.as_nobody_env, sizeof(w.as_nobody_env), "HOME=%s", home);
	full_flow(&w, "NSS softokn via p11-kit as nobody", true);
	fx_rmtree(w.dir);
	fx_rmtree(m.dir);
}

/* NSS needs its database in C_Initialize's pReserved: without
 * hsm.init_args the station says so instead of a bare CKR_ARGUMENTS_BAD. */
Test(nss, nss_without_init_args_names_the_setting, .timeout = 60)
{
	fx_module m;
	fx_world w;
	fx_run *r = malloc(sizeof(*r));

	cr_assert_not_null(r);
	cr_assert_eq(fx_nss_init(&m, PIN), 0, "NSS fixture failed (see stderr)");
	module_world(&w, &m, m.module, m.token, NULL);
	fx_station_run(r, &w, "ca", "init", NULL);
	cr_assert_neq(r->code, 0);
	cr_assert(strstr(r->err, "C_Initialize") && strstr(r->err, "CKR_ARGUMENTS_BAD") &&
		  strstr(r->err, "hsm.init_args"), "%s", r->err);
	free(r);
	fx_rmtree(w.dir);
	fx_rmtree(m.dir);
}

/* NSS's 0x210A is PKCS#7 padding + RFC 3394: the known-answer test
 * refuses it with what to do, and picks NSS's CKM_AES_KEY_WRAP_KWP, whose
 * output is RFC 5649. */
Test(nss, nss_wrap_pad_is_refused_and_kwp_chosen, .timeout = 60)
{
	fx_module m;
	hsm *h = NULL;

	cr_assert_eq(fx_nss_init(&m, PIN), 0, "NSS fixture failed (see stderr)");
	cr_assert_eq(hsm_open_with(m.module, m.token, m.init_args, &h), ST_OK, "%s",
		     hsm_errmsg(h));
	cr_assert_eq(hsm_login(h, m.pin, strlen(m.pin)), ST_OK, "%s", hsm_errmsg(h));
	cr_assert_eq(hsm_inject_check(h, HSM_WRAP_PAD), ST_E_HSM);
	cr_assert(strstr(hsm_errmsg(h), "not RFC 5649") &&
		  strstr(hsm_errmsg(h), "key_mode = \"device\""), "%s", hsm_errmsg(h));
	cr_assert_eq(hsm_inject_check(h, HSM_WRAP_AUTO), ST_OK, "%s", hsm_errmsg(h));
	cr_assert_str_eq(hsm_inject_mech(h), "CKM_AES_KEY_WRAP_KWP");
	hsm_close(h);
	fx_rmtree(m.dir);
}

/* A refused template names every attribute the module was given (NSS
 * keeps no token data objects). */
Test(nss, nss_refused_template_is_stated, .timeout = 60)
{
	fx_module m;
	hsm *h = NULL;
	hsm_session *s = NULL;

	cr_assert_eq(fx_nss_init(&m, PIN), 0, "NSS fixture failed (see stderr)");
	cr_assert_eq(hsm_open_with(m.module, m.token, m.init_args, &h), ST_OK, "%s",
		     hsm_errmsg(h));
	cr_assert_eq(hsm_login(h, m.pin, strlen(m.pin)), ST_OK, "%s", hsm_errmsg(h));
	cr_assert_eq(hsm_session_open(h, &s), ST_OK);
	cr_assert_neq(hsm_data_put(s, "marker", "x"), ST_OK);
	cr_assert(hsm_data_refused(s));
	cr_assert(strstr(hsm_session_errmsg(s), "C_CreateObject(data): "
			 "CKR_ATTRIBUTE_VALUE_INVALID") &&
		  strstr(hsm_session_errmsg(s), "template: CKA_CLASS, CKA_TOKEN, "
			 "CKA_PRIVATE, CKA_LABEL, CKA_APPLICATION, CKA_VALUE"),
		  "%s", hsm_session_errmsg(s));
	hsm_session_close(s);
	hsm_close(h);
	fx_rmtree(m.dir);
}

/* The reference row: the same flow on SoftHSM2. */
Test(nss, softhsm_full_flow, .timeout = 300)
{
	fx_module m = { .pin = PIN };
	fx_world w;

	module_world(&w, &m, FX_SOFTHSM_MODULE, "station", NULL);
	full_flow(&w, "SoftHSM2", false);
	fx_rmtree(w.dir);
}

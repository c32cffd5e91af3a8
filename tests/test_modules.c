/* test_modules.c — the whole flow on PKCS#11 modules nobody here wrote
 * (issue 19): opencryptoki's soft token (RSA only in Debian 12's 3.8.1)
 * and tpm2-pkcs11 over swtpm through tpm2-abrmd, each on a token of its
 * own (tests/fixtures/fx_modules.h).  The referees are openssl (device
 * certificates, CRL, the auditor's check of docs/evidence.md on an
 * evidence bundle), pkcs11-tool (what is left in the token) and the
 * station's own `records verify`. */
#include <criterion/criterion.h>
#include <libgen.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base.h"
#include "hsm/hsm.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_modules.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

#define PROFILE(mode) \
	"name = \"any-module\";\n" mode \
	"certificate: { organization = \"Module Test\"; validity_days = 30; };\n" \
	"root_of_trust: { sha256 = \"" FX_ROT "\"; fuse_bank = 0; };\n"

static void mkworld_dir(char *dir, size_t cap)
{
	snprintf(dir, cap, "/tmp/st-mod-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	if (getenv("LSAN_OPTIONS") && !strstr(getenv("LSAN_OPTIONS"), "fast_unwind")) {
		/* The modules' own leaks (tests/lsan.supp) are only attributed
		 * to them with full unwinding through libcrypto and their
		 * libraries. */
		char opts[1024];

		snprintf(opts, sizeof(opts), "%s:fast_unwind_on_malloc=0",
			 getenv("LSAN_OPTIONS"));
		setenv("LSAN_OPTIONS", opts, 1);
	}
}

static X509 *read_pem(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	cr_assert_not_null(f, "cannot read %s", path);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(x, "%s holds no certificate", path);
	return x;
}

/* The profile's engineering key made in the token, the profile signed
 * with it (the station checks the signature at every start). */
static void sign_profile_in_token(const fx_world *w, const char *key_type)
{
	fx_run *r = malloc(sizeof(*r));

	cr_assert_not_null(r);
	fx_station_run(r, w, "profile", "keygen", "--key", "eng", "--out", w->engpub,
		       "--key-type", key_type, NULL);
	cr_assert_eq(r->code, 0, "profile keygen %s: %s", key_type, r->err);
	fx_station_run(r, w, "profile", "sign", "--key", "eng", "--in", w->profile, NULL);
	cr_assert_eq(r->code, 0, "profile sign: %s", r->err);
	fx_station_run(r, w, "profile", "verify", "--in", w->profile, NULL);
	cr_assert_eq(r->code, 0, "profile verify: %s", r->err);
	free(r);
}

/* `ca init` of a CA labelled label of key type type into pem. */
static void ca_init(const fx_world *w, const char *label, const char *type,
		    const char *pem, int want_sig_nid)
{
	fx_run *r = malloc(sizeof(*r));
	X509 *x;

	cr_assert_not_null(r);
	fx_station_run(r, w, "--ca-key", label, "ca", "init", "--key-type", type,
		       "--out", pem, NULL);
	cr_assert_eq(r->code, 0, "ca init %s: %s", type, r->err);
	x = read_pem(pem);
	cr_assert_eq(X509_get_signature_nid(x), want_sig_nid, "%s CA signature", type);
	X509_free(x);
	free(r);
}

/* Provision n simulated units with --burn-fuses from CA label (its PEM
 * ca): every unit PASS, its certificate verified by openssl under the CA,
 * certifying the key the device holds, the fuses burned. */
static void provision(fx_world *w, const char *label, const char *ca,
		      const char *simname, int n)
{
	fx_run *r = malloc(sizeof(*r));
	fx_devsim sim;
	json_t *units, *ev;
	size_t i;

	cr_assert_not_null(r);
	snprintf(w->ca, sizeof(w->ca), "%s", ca);
	char seed[64];

	snprintf(seed, sizeof(seed), "--seed %s", simname);      /* other device IDs */
	cr_assert_eq(fx_devsim_start(&sim, w->dir, simname, n, seed), 0);
	fx_station_run(r, w, "--ca-key", label, "--json", "--burn-fuses", "--yes", "--slot",
		       sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r->code, 0, "provision from %s: exit %d\nstdout:%s\nstderr:%s",
		     label, r->code, r->out, r->err);
	units = fx_json_events(r->out, "unit");
	cr_assert_eq(json_array_size(units), (size_t)n, "%s", r->out);
	json_array_foreach(units, i, ev) {
		const char *uid = json_string_value(json_object_get(ev, "uid"));

		cr_assert_str_eq(json_string_value(json_object_get(ev, "result")), "PASS",
				 "%s", r->out);
		cr_assert_str_eq(json_string_value(json_object_get(ev, "fuses")), "burned");
		fx_check_pass(w, sim.state_path, uid);
	}
	json_decref(units);
	free(r);
}

/* Inject mode on a module without its mechanisms: refused before any
 * unit, naming what is missing and what to do. */
static void inject_refused(fx_world *w, const char *missing)
{
	fx_run *r = malloc(sizeof(*r));
	fx_devsim sim;
	long long before = fx_count_units(w, NULL);

	cr_assert_not_null(r);
	fx_write_file(w->profile, PROFILE("key_mode = \"inject\";\n"));
	fx_station_run(r, w, "profile", "sign", "--key", "eng", "--in", w->profile, NULL);
	cr_assert_eq(r->code, 0, "profile sign: %s", r->err);
	cr_assert_eq(fx_devsim_start(&sim, w->dir, "inject", 1, "--seed inject"), 0);
	fx_station_run(r, w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	fx_devsim_stop(&sim);
	cr_assert_eq(r->code, 3, "inject on a module without %s: exit %d\n%s", missing,
		     r->code, r->err);
	cr_assert(strstr(r->err, missing), "the refusal names %s: %s", missing, r->err);
	cr_assert_eq(fx_count_units(w, NULL), before, "no unit was started");
	/* back to device-generated keys for what follows */
	fx_write_file(w->profile, PROFILE(""));
	fx_station_run(r, w, "profile", "sign", "--key", "eng", "--in", w->profile, NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	free(r);
}

/* records verify, crl export checked by openssl, and an evidence bundle
 * that passes the auditor's check of docs/evidence.md (openssl and
 * sha256sum only), whatever the audit key's type. */
static void records_crl_evidence(const fx_world *w, const char *ca,
				 int want_audit_pkey)
{
	fx_run *r = malloc(sizeof(*r));
	char crl[512], bundle[512], script[600], doc[1024], build[512], out[16384];
	X509 *audit;

	cr_assert_not_null(r);
	fx_station_run(r, w, "records", "verify", NULL);
	cr_assert_eq(r->code, 0, "records verify: %s%s", r->out, r->err);
	fx_path(crl, w, "revoked.crl");
	fx_station_run(r, w, "crl", "export", "--out", crl, NULL);
	cr_assert_eq(r->code, 0, "crl export: %s", r->err);
	cr_assert_eq(fx_sh_out(out, sizeof(out), "openssl crl -in '%s' -CAfile '%s' -noout",
			       crl, ca), 0, "openssl crl: %s", out);
	fx_path(bundle, w, "evidence");
	fx_station_run(r, w, "records", "export", "--evidence", bundle, NULL);
	cr_assert_eq(r->code, 0, "evidence export: %s", r->err);
	snprintf(script, sizeof(script), "%s/audit.pem", bundle);
	audit = read_pem(script);
	cr_assert_eq(EVP_PKEY_get_base_id(X509_get0_pubkey(audit)), want_audit_pkey,
		     "the audit key's type");
	X509_free(audit);
	/* the auditor's commands, exactly as docs/evidence.md gives them */
	snprintf(build, sizeof(build), "%s", getenv("STATION_BUILD"));
	snprintf(doc, sizeof(doc), "%s/docs/evidence.md", dirname(build));
	fx_path(script, w, "auditor.sh");
	cr_assert_eq(fx_sh_out(out, sizeof(out), "sed -n '/<!-- auditor-check:begin -->/,"
			       "/^```$/p' '%s' | sed '1,2d;$d' > '%s'", doc, script), 0,
		     "%s", out);
	cr_assert_eq(fx_sh_out(out, sizeof(out), "cd '%s' && bash '%s'", bundle, script), 0,
		     "the auditor's check of the bundle: %s", out);
	free(r);
}

/* ---- opencryptoki: the RSA-only path -------------------------------- */

Test(modules, opencryptoki_rsa_only_full_flow, .timeout = 600)
{
	char dir[64], ca[512], out[8192];
	fx_world w;
	fx_run *r = malloc(sizeof(*r));
	fx_ock ock;

	cr_assert_not_null(r);
	mkworld_dir(dir, sizeof(dir));
	cr_assert_eq(fx_ock_start(&ock, dir, "station", FX_PIN), 0, "opencryptoki fixture");
	fx_module_world(&w, dir, FX_OCK_MODULE, FX_PIN, PROFILE(""));
	sign_profile_in_token(&w, "rsa3072");
	/* No EC in this module: a P-256 CA is refused, naming the mechanisms,
	 * and nothing is left in the token. */
	fx_path(ca, &w, "ca-p256.pem");
	fx_station_run(r, &w, "--ca-key", "ec-ca", "ca", "init", "--out", ca, NULL);
	cr_assert_eq(r->code, 3, "%s", r->err);
	cr_assert(strstr(r->err, "CKM_EC_KEY_PAIR_GEN"), "%s", r->err);
	fx_path(ca, &w, "ca.pem");
	ca_init(&w, "issuing-ca", "rsa3072", ca, NID_sha256WithRSAEncryption);
	/* The audit key follows the token: RSA here (a P-256 audit key made
	 * every provision fail after an RSA CA was made). */
	provision(&w, "issuing-ca", ca, "line1", 3);
	inject_refused(&w, "CKM_EC_KEY_PAIR_GEN");
	records_crl_evidence(&w, ca, EVP_PKEY_RSA);
	cr_assert_eq(fx_count_units(&w, "PASS"), 3);
	/* What the token holds: the CA, the engineering key, the audit key. */
	cr_assert_eq(fx_sh_out(out, sizeof(out), "pkcs11-tool --module %s --token-label "
			       "station --login --pin %s --list-objects --type privkey",
			       FX_OCK_MODULE, FX_PIN), 0, "%s", out);
	cr_assert(strstr(out, "issuing-ca") && strstr(out, "station-audit") &&
		  strstr(out, "eng"), "%s", out);
	cr_assert_null(strstr(out, "ec-ca"), "%s", out);
	fx_ock_stop(&ock);
	free(r);
	fx_rmtree(dir);
}

/* ---- tpm2-pkcs11 ---------------------------------------------------- */

Test(modules, tpm2_pkcs11_full_flow, .timeout = 900)
{
	char dir[64], ca[512], ca2[512];
	fx_world w;
	fx_tpm2pk t;

	mkworld_dir(dir, sizeof(dir));
	cr_assert_eq(fx_tpm2pk_start(&t, dir, "station", FX_PIN), 0, "tpm2-pkcs11 fixture");
	fx_module_world(&w, dir, FX_TPM2PK_MODULE, FX_PIN, PROFILE(""));
	sign_profile_in_token(&w, "p256");
	fx_path(ca, &w, "ca.pem");
	ca_init(&w, "issuing-ca", "p256", ca, NID_ecdsa_with_SHA256);
	fx_path(ca2, &w, "ca-p384.pem");
	ca_init(&w, "ca-p384", "p384", ca2, NID_ecdsa_with_SHA384);
	provision(&w, "issuing-ca", ca, "line1", 3);
	/* tpm2-pkcs11 has no ECDH and no AES key wrap. */
	inject_refused(&w, "CKM_ECDH1_DERIVE");
	/* (before the second CA issues: an evidence bundle names one CA) */
	records_crl_evidence(&w, ca, EVP_PKEY_EC);
	provision(&w, "ca-p384", ca2, "line2", 2);
	cr_assert_eq(fx_count_units(&w, "PASS"), 5);
	{
		fx_run *r = malloc(sizeof(*r));

		cr_assert_not_null(r);
		fx_station_run(r, &w, "records", "verify", NULL);
		cr_assert_eq(r->code, 0, "records verify: %s%s", r->out, r->err);
		free(r);
	}
	fx_tpm2pk_stop(&t);
	fx_rmtree(dir);
}

/* ---- per-unit keys where session objects are refused ---------------- */

/* pkcs11-tool's object list of the tpm2-pkcs11 token. */
static void tpm2_objects(char *out, size_t cap)
{
	cr_assert_eq(fx_sh_out(out, cap, "pkcs11-tool --module %s --token-label station "
			       "--login --pin %s --list-objects", FX_TPM2PK_MODULE, FX_PIN),
		     0, "%s", out);
}

static int count(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

/* A pid that ran on this host and is gone. */
static pid_t dead_pid(void)
{
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(0);
	cr_assert_eq(waitpid(pid, NULL, 0), pid);
	return pid;
}

/* tpm2-pkcs11 refuses CKA_TOKEN=FALSE keys (CKR_ATTRIBUTE_VALUE_INVALID):
 * a per-unit key pair (here inject's ephemeral ECDH key) is then made as
 * token objects labelled station-tmp and destroyed after use like a
 * session object; what a crashed process left is removed at the next
 * login.  (Inject itself still cannot work on this module: no ECDH, no
 * key wrap, and it refuses a key both sensitive and extractable.) */
Test(modules, tpm2_pkcs11_per_unit_keys_as_token_objects_and_swept_after_a_crash,
     .timeout = 300)
{
	char dir[64], out[16384], host[64] = "", id[160], hexid[330];
	uint8_t transport[HSM_P256_POINT_LEN], eph[HSM_P256_POINT_LEN], wrapped[512];
	size_t tlen = 0, wlen = 0;
	hsm *h = NULL;
	hsm_session *s = NULL;
	EVP_PKEY *dev = EVP_EC_gen("P-256");
	fx_tpm2pk t;
	fx_world w;
	fx_run *r = malloc(sizeof(*r));
	int rc;

	cr_assert_not_null(r);
	cr_assert_not_null(dev);
	cr_assert_eq(EVP_PKEY_get_octet_string_param(dev, "encoded-pub-key", transport,
						     sizeof(transport), &tlen), 1);
	mkworld_dir(dir, sizeof(dir));
	cr_assert_eq(fx_tpm2pk_start(&t, dir, "station", FX_PIN), 0, "tpm2-pkcs11 fixture");
	cr_assert_eq(hsm_open(FX_TPM2PK_MODULE, "station", &h), ST_OK, "%s", hsm_errmsg(h));
	cr_assert_eq(hsm_login(h, FX_PIN, strlen(FX_PIN)), ST_OK, "%s", hsm_errmsg(h));
	cr_assert_eq(hsm_session_open(h, &s), ST_OK, "%s", hsm_errmsg(h));
	rc = hsm_inject_wrap(s, 0, transport, eph, wrapped, sizeof(wrapped), &wlen);
	/* The ephemeral key was made (a token object); the module then lacks
	 * ECDH: the failure is there, not at the key generation. */
	cr_assert_neq(rc, ST_OK);
	cr_assert(strstr(hsm_session_errmsg(s), "ECDH1_DERIVE"), "%s", hsm_session_errmsg(s));
	cr_assert_null(strstr(hsm_session_errmsg(s), "ephemeral"), "%s", hsm_session_errmsg(s));
	tpm2_objects(out, sizeof(out));
	cr_assert_eq(count(out, "station-tmp"), 0, "destroyed after use: %s", out);
	hsm_session_close(s);
	hsm_close(h);
	EVP_PKEY_free(dev);

	/* What a station process killed mid-unit leaves: a station-tmp pair
	 * whose CKA_ID names this host and a process that is gone; and one
	 * of another host, which may be at work and stays. */
	gethostname(host, sizeof(host) - 1);
	snprintf(id, sizeof(id), "%s:%ld", host, (long)dead_pid());
	st_hex((const uint8_t *)id, strlen(id), hexid);
	cr_assert_eq(fx_sh_out(out, sizeof(out), "pkcs11-tool --module %s --token-label station "
			       "--login --pin %s --keypairgen --key-type EC:prime256v1 --label "
			       "station-tmp --id %s", FX_TPM2PK_MODULE, FX_PIN, hexid), 0, "%s", out);
	snprintf(id, sizeof(id), "other-host.example:1");
	st_hex((const uint8_t *)id, strlen(id), hexid);
	cr_assert_eq(fx_sh_out(out, sizeof(out), "pkcs11-tool --module %s --token-label station "
			       "--login --pin %s --keypairgen --key-type EC:prime256v1 --label "
			       "station-tmp --id %s", FX_TPM2PK_MODULE, FX_PIN, hexid), 0, "%s", out);
	tpm2_objects(out, sizeof(out));
	cr_assert_eq(count(out, "label:      station-tmp"), 4, "left behind: %s", out);
	/* The next start (any command that logs in) removes this host's. */
	fx_module_world(&w, dir, FX_TPM2PK_MODULE, FX_PIN, PROFILE(""));
	fx_station_run(r, &w, "ca", "show", NULL);
	tpm2_objects(out, sizeof(out));
	cr_assert_eq(count(out, "label:      station-tmp"), 2, "after the next start: %s", out);
	cr_assert(strstr(out, "6f746865722d686f73742e6578616d706c653a31"),
		  "the other host's pair stays: %s", out);
	fx_tpm2pk_stop(&t);
	free(r);
	fx_rmtree(dir);
}

/* ---- the audit key's mechanism is checked at start ------------------ */

/* A token that made the audit key (P-256) and later offers only RSA (a
 * licence or firmware change, a module swap): the run is refused before
 * any unit, naming the audit key and the mechanism it lacks, rather than
 * calling the audit certificate someone else's. */
Test(modules, audit_key_without_its_mechanism_is_refused_at_start_naming_it,
     .timeout = 180)
{
	fx_world_opts o = { .timeout_ms = 3000 };
	char conf[600], ca[512];
	fx_world w;
	fx_run *r = malloc(sizeof(*r));
	FILE *f;

	cr_assert_not_null(r);
	fx_world_init_opts(&w, &o);
	fx_path(ca, &w, "ca.pem");
	ca_init(&w, "issuing-ca", "rsa3072", ca, NID_sha256WithRSAEncryption);
	fx_station_run(r, &w, "audit", "init", NULL);
	cr_assert_eq(r->code, 0, "audit init: %s", r->err);
	fx_path(conf, &w, "softhsm2.conf");
	f = fopen(conf, "a");
	cr_assert_not_null(f);
	fputs("slots.mechanisms = CKM_RSA_PKCS_KEY_PAIR_GEN,CKM_RSA_PKCS,CKM_SHA256\n", f);
	fclose(f);
	fx_station_run(r, &w, "--slot", "/dev/null", "provision", NULL);
	cr_assert_eq(r->code, 3, "exit %d: %s", r->code, r->err);
	cr_assert(strstr(r->err, "audit key") && strstr(r->err, "CKM_ECDSA"),
		  "names the audit key and CKM_ECDSA: %s", r->err);
	cr_assert_eq(fx_count_units(&w, NULL), 0);
	free(r);
	fx_rmtree(w.dir);
}

/* The same RSA-only path on SoftHSM told to offer RSA only: the audit
 * key is RSA-3072 from the first start, the chain, checkpoint and
 * manifest signatures check with openssl (and this runs under the leak
 * checker with no module suppressions). */
Test(modules, rsa_only_softhsm_token_gets_an_rsa_audit_key, .timeout = 300)
{
	fx_world_opts o = { .timeout_ms = 3000 };
	char conf[600], ca[512];
	fx_world w;
	FILE *f;

	fx_world_init_opts(&w, &o);
	fx_path(conf, &w, "softhsm2.conf");
	f = fopen(conf, "a");
	cr_assert_not_null(f);
	fputs("slots.mechanisms = CKM_RSA_PKCS_KEY_PAIR_GEN,CKM_RSA_PKCS,CKM_SHA256\n", f);
	fclose(f);
	fx_path(ca, &w, "ca.pem");
	ca_init(&w, "issuing-ca", "rsa3072", ca, NID_sha256WithRSAEncryption);
	provision(&w, "issuing-ca", ca, "rsa", 2);
	records_crl_evidence(&w, ca, EVP_PKEY_RSA);
	fx_rmtree(w.dir);
}

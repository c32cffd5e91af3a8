/* test_firmware.c — signed firmware, SBOMs and the end-of-line attestation
 * (docs/firmware.md), end to end: the real `station` binary against
 * station-devsim and a fresh SoftHSM token.  Outside referees decide:
 * `openssl dgst -verify` for image signatures and for the attestation,
 * `sha256sum` for what the device holds, the simulator's own state file,
 * and the SQLite records read straight. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_pg.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

#define PLAN \
	"fuses: {\n" \
	"  conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n" \
	"  plan = (\n" \
	"    { name = \"rot-hash\"; bank = 0; word = 0; words = 8; source = \"root_of_trust\"; },\n" \
	"    { name = \"secure-boot\"; bank = 1; word = 0; bits = [0, 0]; value = 1; },\n" \
	"    { name = \"lock\"; kind = \"lifecycle\"; state = \"locked\"; }\n" \
	"  );\n" \
	"};\n"

#define SBOM_FMT \
	"{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.5\",\"version\":1,\n" \
	" \"metadata\":{\"component\":{\"type\":\"firmware\",\"name\":\"%s\",\"version\":\"%s\"}},\n" \
	" \"components\":[\n" \
	"  {\"type\":\"library\",\"name\":\"zlib\",\"version\":\"%s\",\"purl\":\"pkg:generic/zlib@%s\"},\n" \
	"  {\"type\":\"library\",\"name\":\"mbedtls\",\"version\":\"3.5.2\"}]}\n"

/* What a firmware world adds to fx_world: the secure-boot key and the
 * image with its signature and SBOM. */
struct fw {
	fx_world w;
	char sbkey[512], sbpub[512], img[512], sbom[512];
	size_t size;
};

static void sha_file(const char *p, char out[65])
{
	static uint8_t buf[1 << 20];
	uint8_t md[32];
	FILE *f = fopen(p, "rb");
	size_t n;

	cr_assert_not_null(f, "cannot read %s", p);
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	SHA256(buf, n, md);
	st_hex(md, 32, out);
}

/* Output of a shell command (first line), and its status. */
static int sh(char *out, size_t cap, const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	FILE *p;
	int st;

	char script[] = "/tmp/fwtest-sh-XXXXXX", run[64];
	int fd;

	/* bash, as the auditor's recipes in docs/ are (printf %b with \x) */
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	fd = mkstemp(script);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, cmd, strlen(cmd)), (ssize_t)strlen(cmd));
	close(fd);
	snprintf(run, sizeof(run), "bash %s", script);
	p = popen(run, "r");
	cr_assert_not_null(p);
	if (out) {
		out[0] = '\0';
		if (!fgets(out, (int)cap, p))
			out[0] = '\0';
		out[strcspn(out, "\n")] = '\0';
	} else {
		char sink[256];

		while (fgets(sink, sizeof(sink), p))
			;
	}
	st = pclose(p);
	unlink(script);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* An image of size bytes whose content depends on seed. */
static void make_image(const char *path, size_t size, unsigned seed)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f);
	for (size_t i = 0; i < size; i++)
		fputc((int)((i * 131u + seed * 7u + (i >> 8)) & 0xff), f);
	fclose(f);
}

/* The profile naming the world's key, image and SBOM, by digest; extra
 * goes into root_of_trust (e.g. a typed sha256), version is the image's. */
static void write_profile(struct fw *f, const char *version, const char *rot_extra)
{
	char text[8192], ksha[65], isha[65], ssha[65];

	sha_file(f->sbpub, ksha);
	sha_file(f->img, isha);
	sha_file(f->sbom, ssha);
	snprintf(text, sizeof(text),
		 "name = \"fw-sensor\";\n"
		 "certificate: { organization = \"Test Devices\"; validity_days = 365; };\n"
		 "root_of_trust: { fuse_bank = 0; %s };\n"
		 "firmware: {\n"
		 "  secure_boot_key = \"sb.pub.pem\";\n"
		 "  secure_boot_key_sha256 = \"%s\";\n"
		 "  images = ( { name = \"app\"; version = \"%s\"; file = \"app.bin\";\n"
		 "    sha256 = \"%s\"; slot = 0; sbom = \"app.cdx.json\"; sbom_sha256 = \"%s\"; } );\n"
		 "};\n" PLAN, rot_extra ? rot_extra : "", ksha, version, isha, ssha);
	fx_write_file(f->w.profile, text);
	fx_sign(&f->w, f->w.profile);
}

/* A world with a CA, a secure-boot key, a signed image of size bytes with
 * an SBOM listing zlib@zlib_version, and the profile naming them. */
static void fw_world_at(struct fw *f, size_t size, const char *zlib_version,
			const char *station_id)
{
	fx_world_opts o = { .with_ca = true, .timeout_ms = 2000, .station_id = station_id };
	char sbom[2048];

	fx_world_init_opts(&f->w, &o);
	fx_path(f->sbkey, &f->w, "sb.key.pem");
	fx_path(f->sbpub, &f->w, "sb.pub.pem");
	fx_path(f->img, &f->w, "app.bin");
	fx_path(f->sbom, &f->w, "app.cdx.json");
	f->size = size;
	fx_engkey_make(f->sbkey, f->sbpub);
	make_image(f->img, size, (unsigned)size);
	fx_sign_with(f->sbkey, f->img);
	snprintf(sbom, sizeof(sbom), SBOM_FMT, "app", "1.0.0", zlib_version, zlib_version);
	fx_write_file(f->sbom, sbom);
	write_profile(f, "1.0.0", NULL);
}

static void fw_world(struct fw *f, size_t size, const char *zlib_version)
{
	fw_world_at(f, size, zlib_version, NULL);
}

static void start_sim(fx_devsim *s, const fx_world *w, const char *name, int units,
		      const char *extra)
{
	cr_assert_eq(fx_devsim_start(s, w->dir, name, units, extra), 0,
		     "station-devsim did not start");
}

static json_t *sim_unit(const char *state_path, size_t i)
{
	json_t *st = NULL, *u;

	cr_assert_eq(fx_devsim_dump(state_path, &st), 0);
	u = json_incref(json_array_get(json_object_get(st, "units"), i));
	json_decref(st);
	cr_assert_not_null(u);
	return u;
}

/* The image the simulated device holds in slot 0, as a file, and its
 * sha256sum. */
static void device_image_sha(const struct fw *f, json_t *u, char out[65])
{
	json_t *im = json_array_get(json_object_get(u, "images"), 0);
	const char *hex = json_string_value(json_object_get(im, "data"));
	char path[600], got[65];
	FILE *o;

	cr_assert_not_null(hex, "the device holds no image in slot 0");
	snprintf(path, sizeof(path), "%s/device-slot0.bin", f->w.dir);
	o = fopen(path, "wb");
	cr_assert_not_null(o);
	for (size_t i = 0; hex[i] && hex[i + 1]; i += 2) {
		unsigned b;

		sscanf(hex + i, "%2x", &b);
		fputc((int)b, o);
	}
	fclose(o);
	cr_assert_eq(sh(got, sizeof(got), "sha256sum '%s' | cut -d' ' -f1", path), 0);
	snprintf(out, 65, "%s", got);
}

/* Nothing was touched: no record, and the device never got a key. */
static void assert_untouched(const struct fw *f, const fx_devsim *sim)
{
	json_t *u = sim_unit(sim->state_path, 0);

	cr_assert_eq(fx_count_units(&f->w, NULL), 0, "a unit was recorded");
	cr_assert(json_is_null(json_object_get(u, "privkey_pem")), "the device got a key");
	cr_assert(json_is_null(json_array_get(json_object_get(u, "images"), 0)),
		  "the device got an image");
	json_decref(u);
}

/* ---- the outside check of the signature format ---- */

Test(firmware, openssl_verifies_the_image_signature_and_rejects_a_modified_image,
     .timeout = 60)
{
	struct fw f;
	char mod[600];

	fw_world(&f, 3000, "1.2.13");
	cr_assert_eq(sh(NULL, 0, "openssl dgst -sha256 -verify '%s' -signature '%s.sig' '%s'",
			f.sbpub, f.img, f.img), 0, "openssl rejects the signed image");
	snprintf(mod, sizeof(mod), "%s/mod.bin", f.w.dir);
	cr_assert_eq(sh(NULL, 0, "cp '%s' '%s' && printf X | dd of='%s' bs=1 seek=100 "
			"conv=notrunc 2>/dev/null", f.img, mod, mod), 0);
	cr_assert_neq(sh(NULL, 0, "openssl dgst -sha256 -verify '%s' -signature '%s.sig' '%s'",
			 f.sbpub, f.img, mod), 0, "openssl accepts a modified image");
	fx_rmtree(f.w.dir);
}

/* ---- the good path ---- */

Test(firmware, images_written_attested_and_recorded, .timeout = 120)
{
	struct fw f;
	fx_devsim sim;
	fx_run r;
	char want[65], got[65], rot[65], att[8192], fwj[2048], buf[512];
	json_t *u, *a, *stmt;

	fw_world(&f, 5000, "1.2.13");
	start_sim(&sim, &f.w, "prog1", 2, NULL);
	fx_station_run(&r, &f.w, "--json", "--burn-fuses", "--yes", "--slot", sim.port, "provision",
		       NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert_eq(fx_count_units(&f.w, "PASS"), 2, "%s", r.out);
	cr_assert_eq(sh(want, sizeof(want), "sha256sum '%s' | cut -d' ' -f1", f.img), 0);
	for (int i = 0; i < 2; i++) {
		u = sim_unit(sim.state_path, (size_t)i);
		device_image_sha(&f, u, got);
		cr_assert_str_eq(got, want, "unit %d holds another image", i);
		cr_assert_eq(json_integer_value(json_object_get(u, "lifecycle")), 2);
		json_decref(u);
	}
	/* the root of trust burned is computed from the secure-boot key */
	cr_assert_eq(sh(rot, sizeof(rot), "openssl pkey -pubin -in '%s' -outform DER | "
			"sha256sum | cut -d' ' -f1", f.sbpub), 0);
	u = sim_unit(sim.state_path, 0);
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(u, "fuses"), 0)),
			 rot);
	json_decref(u);
	/* the record: what was written and what the device measured */
	fx_q_text(&f.w, "SELECT firmware FROM units WHERE id = 1", fwj, sizeof(fwj));
	cr_assert(strstr(fwj, want), "firmware record %s lacks %s", fwj, want);
	cr_assert(strstr(fwj, "\"version\":\"1.0.0\""), "%s", fwj);
	sha_file(f.sbom, got);
	cr_assert(strstr(fwj, got), "firmware record lacks the SBOM digest: %s", fwj);
	/* the attestation: openssl alone checks it, as docs/evidence.md says */
	fx_q_text(&f.w, "SELECT attestation FROM units WHERE id = 1", att, sizeof(att));
	a = json_loads(att, 0, NULL);
	cr_assert_not_null(a, "attestation %s", att);
	stmt = json_loads(json_string_value(json_object_get(a, "statement")), 0, NULL);
	cr_assert_not_null(stmt);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(
		json_object_get(stmt, "images"), 0), "sha256")), want,
		"the attested digest is not sha256sum of the image");
	cr_assert_str_eq(json_string_value(json_object_get(stmt, "nonce")),
			 json_string_value(json_object_get(a, "nonce")));
	cr_assert_eq(json_integer_value(json_object_get(stmt, "lifecycle")), 2);
	{
		char p_stmt[600], p_hex[600], p_sig[600], p_cert[600];

		snprintf(p_stmt, sizeof(p_stmt), "%s/stmt.json", f.w.dir);
		snprintf(p_hex, sizeof(p_hex), "%s/sig.hex", f.w.dir);
		snprintf(p_sig, sizeof(p_sig), "%s/stmt.sig", f.w.dir);
		snprintf(p_cert, sizeof(p_cert), "%s/cert.pem", f.w.dir);
		fx_write_file(p_stmt, json_string_value(json_object_get(a, "statement")));
		fx_write_file(p_hex, json_string_value(json_object_get(a, "signature")));
		fx_q_text(&f.w, "SELECT cert_pem FROM units WHERE id = 1", att, sizeof(att));
		fx_write_file(p_cert, att);
		cr_assert_eq(sh(buf, sizeof(buf), "cd '%s' && printf '%%b' \"$(sed 's/../\\\\x&/g' sig.hex)\" > stmt.sig && "
				"openssl x509 -in cert.pem -noout -pubkey > dev.pub.pem && "
				"openssl dgst -sha256 -verify dev.pub.pem -signature stmt.sig "
				"stmt.json", f.w.dir), 0, "openssl: %s", buf);
		cr_assert_str_eq(buf, "Verified OK");
		(void)p_sig;
	}
	json_decref(stmt);
	json_decref(a);
	/* the measured steps (docs/integration.md): the image write and the
	 * attestation were timed, recorded without limits */
	fx_q_text(&f.w, "SELECT measurements FROM units WHERE id = 1", fwj, sizeof(fwj));
	cr_assert(strstr(fwj, "\"name\":\"image_write_ms\"") &&
		  strstr(fwj, "\"name\":\"attest_ms\"") && strstr(fwj, "\"outcome\":\"unset\""),
		  "%s", fwj);
	/* and `records verify` covers the new columns */
	fx_station_run(&r, &f.w, "records", "verify", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	fx_devsim_stop(&sim);
	fx_rmtree(f.w.dir);
}

Test(firmware, a_changed_firmware_record_fails_verify, .timeout = 120)
{
	struct fw f;
	fx_devsim sim;
	fx_run r;
	char cmd[1024];

	fw_world(&f, 2000, "1.2.13");
	start_sim(&sim, &f.w, "prog1", 1, NULL);
	fx_station_run(&r, &f.w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	snprintf(cmd, sizeof(cmd), "sqlite3 '%s' \"DROP TRIGGER units_final; UPDATE units SET "
		 "firmware = replace(firmware, '1.0.0', '1.0.1')\"", f.w.db);
	cr_assert_eq(system(cmd), 0);
	fx_station_run(&r, &f.w, "records", "verify", NULL);
	cr_assert_neq(r.code, 0, "%s", r.out);
	cr_assert(strstr(r.out, "firmware"), "verify does not name the column: %s", r.out);
	fx_devsim_stop(&sim);
	fx_rmtree(f.w.dir);
}

/* ---- bad input before any unit: exit 2, nothing touched ---- */

static void refused_before_any_unit(struct fw *f, const char *want1, const char *want2)
{
	fx_devsim sim;
	fx_run r;

	start_sim(&sim, &f->w, "prog1", 1, NULL);
	fx_station_run(&r, &f->w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 2, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert(strstr(r.err, want1), "stderr: %s", r.err);
	cr_assert(!want2 || strstr(r.err, want2), "stderr: %s", r.err);
	fx_devsim_stop(&sim);
	assert_untouched(f, &sim);
	fx_rmtree(f->w.dir);
}

Test(firmware_refused, image_signed_by_another_key, .timeout = 60)
{
	struct fw f;
	char other[600], otherpub[600];

	fw_world(&f, 3000, "1.2.13");
	snprintf(other, sizeof(other), "%s/other.key.pem", f.w.dir);
	snprintf(otherpub, sizeof(otherpub), "%s/other.pub.pem", f.w.dir);
	fx_engkey_make(other, otherpub);
	fx_sign_with(other, f.img);    /* app.bin.sig now by another key */
	refused_before_any_unit(&f, "image 'app'", "does not verify under the secure-boot key");
}

Test(firmware_refused, truncated_image, .timeout = 60)
{
	struct fw f;

	fw_world(&f, 3000, "1.2.13");
	cr_assert_eq(truncate(f.img, 1500), 0);
	refused_before_any_unit(&f, "firmware image 'app'", "changed (or truncated)");
}

Test(firmware_refused, sbom_that_does_not_parse, .timeout = 60)
{
	struct fw f;

	fw_world(&f, 3000, "1.2.13");
	fx_write_file(f.sbom, "{\"bomFormat\":\"CycloneDX\",\"components\":[ {\"name\":");
	write_profile(&f, "1.0.0", NULL);  /* signed as it is: still refused */
	refused_before_any_unit(&f, "SBOM of image 'app'", "does not parse");
}

Test(firmware_refused, typed_root_of_trust_that_disagrees_with_the_key, .timeout = 60)
{
	struct fw f;

	fw_world(&f, 3000, "1.2.13");
	write_profile(&f, "1.0.0", "sha256 = \"" FX_ROT "\";");
	refused_before_any_unit(&f, "disagrees with the hash of the secure-boot key", NULL);
}

/* ---- bad units: each a clear verdict naming the image, nothing passes ---- */

static void unit_refused(size_t size, const char *fault, const char *state,
			 const char *want, bool fuses_untouched)
{
	struct fw f;
	fx_devsim sim;
	fx_run r;
	char reason[2048], q[256];
	json_t *u;

	fw_world(&f, size, "1.2.13");
	start_sim(&sim, &f.w, "prog1", 1, fault);
	fx_station_run(&r, &f.w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_neq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert_eq(fx_count_units(&f.w, "PASS"), 0);
	snprintf(q, sizeof(q), "SELECT reason FROM units WHERE state = '%s'", state);
	fx_q_text(&f.w, q, reason, sizeof(reason));
	cr_assert(strstr(reason, want), "%s reason: '%s'\nstdout:%s", state, reason, r.out);
	cr_assert(strstr(r.out, want) || strstr(r.err, want), "not said: %s%s", r.out, r.err);
	u = sim_unit(sim.state_path, 0);
	if (fuses_untouched) {
		cr_assert_eq(json_integer_value(json_object_get(u, "burn_count")), 0,
			     "a fuse was burned");
		cr_assert_eq(json_integer_value(json_object_get(u, "lifecycle")), 0);
	}
	json_decref(u);
	fx_devsim_stop(&sim);
	fx_rmtree(f.w.dir);
}

Test(firmware_unit, image_larger_than_the_slot, .timeout = 90)
{
	unit_refused(3000, "--slot-size 2048", "FAIL", "image 'app' 1.0.0 is 3000 bytes, "
		     "but slot 0 of this target", true);
}

Test(firmware_unit, measured_digest_differs_after_writing, .timeout = 90)
{
	unit_refused(3000, "--fault imgflip", "FAIL", "what the flash holds is not what "
		     "was written", true);
}

Test(firmware_unit, attestation_signed_with_another_key, .timeout = 90)
{
	unit_refused(3000, "--fault attestkey", "QUARANTINE", "does not verify under the "
		     "unit's certificate", false);
}

Test(firmware_unit, replayed_attestation, .timeout = 90)
{
	unit_refused(3000, "--fault replay", "QUARANTINE", "a replayed or stale "
		     "attestation", false);
}

/* ---- kill -9 in the middle of an image write, then resume ---- */

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0)
		;
}

/* Bytes of slot 0 the simulator's state file says it holds (-1: none). */
static long stored_now(const char *state_path)
{
	json_t *st = json_load_file(state_path, 0, NULL), *im;
	long n = -1;

	im = json_array_get(json_object_get(json_array_get(json_object_get(st, "units"), 0),
					    "images"), 0);
	if (json_is_object(im))
		n = (long)json_integer_value(json_object_get(im, "stored"));
	json_decref(st);
	return n;
}

Test(firmware_kill, sigkill_mid_image_write_resumes_and_passes, .timeout = 180)
{
	struct fw f;
	fx_devsim sim;
	fx_run r;
	char bin[512], want[65], got[65], detail[1024];
	const char *argv[64];
	long n = -1;
	int status;
	pid_t pid;
	json_t *u;

	fw_world(&f, 16384, "1.2.13");       /* 32 chunks of 512 bytes */
	start_sim(&sim, &f.w, "prog1", 1, "--fault slowimage:60");
	{
		const char *args[] = { "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL };
		int argc = 0;

		snprintf(bin, sizeof(bin), "%s/station", getenv("STATION_BUILD"));
		argv[argc++] = bin;
		argv[argc++] = "--config";
		argv[argc++] = f.w.conf;
		argv[argc++] = "--pin-file";
		argv[argc++] = f.w.pinfile;
		for (int i = 0; args[i]; i++)
			argv[argc++] = args[i];
		argv[argc] = NULL;
	}
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int dn = open("/dev/null", O_WRONLY);

		dup2(dn, 1);
		dup2(dn, 2);
		execv(bin, (char **)argv);
		_exit(127);
	}
	for (int i = 0; i < 600; i++) {
		n = stored_now(sim.state_path);
		if (n >= 4096)
			break;
		sleep_ms(20);
	}
	cr_assert_eq(kill(pid, SIGKILL), 0);
	waitpid(pid, &status, 0);
	cr_assert(WIFSIGNALED(status), "the station ended before the kill");
	n = stored_now(sim.state_path);
	cr_assert(n >= 4096 && n < 16384, "killed with %ld of 16384 bytes written", n);
	cr_assert_eq(fx_q_int(&f.w, "SELECT count(*) FROM units WHERE state = 'RUNNING'"), 1);

	fx_station_run(&r, &f.w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert_eq(fx_count_units(&f.w, "PASS"), 1);
	fx_q_text(&f.w, "SELECT s.detail FROM steps s JOIN units u ON u.id = s.unit_id "
		  "WHERE u.state = 'PASS' AND s.step = 'firmware'", detail, sizeof(detail));
	cr_assert(strstr(detail, "resumed at byte"), "not resumed: %s", detail);
	cr_assert_eq(sh(want, sizeof(want), "sha256sum '%s' | cut -d' ' -f1", f.img), 0);
	u = sim_unit(sim.state_path, 0);
	device_image_sha(&f, u, got);
	cr_assert_str_eq(got, want);
	json_decref(u);
	fx_q_text(&f.w, "SELECT attestation FROM units WHERE state = 'PASS'", detail,
		  sizeof(detail));
	cr_assert(strstr(detail, want), "attestation lacks the digest: %s", detail);
	fx_devsim_stop(&sim);
	fx_rmtree(f.w.dir);
}

/* ---- the regulator's question ---- */

Test(firmware_query, component_query_returns_exactly_the_units_with_it, .timeout = 180)
{
	struct fw f;
	fx_devsim a, b;
	fx_run r;
	char sbom[2048], uid_b[64];
	json_t *ub;

	/* lot A: 2 units with zlib 1.2.13 */
	fw_world(&f, 2500, "1.2.13");
	start_sim(&a, &f.w, "progA", 2, "--seed lotA");
	fx_station_run(&r, &f.w, "--burn-fuses", "--yes", "--slot", a.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	/* lot B: 1 unit, a new image with zlib 1.3.1 */
	make_image(f.img, 2600, 99);
	fx_sign_with(f.sbkey, f.img);
	snprintf(sbom, sizeof(sbom), SBOM_FMT, "app", "1.1.0", "1.3.1", "1.3.1");
	fx_write_file(f.sbom, sbom);
	write_profile(&f, "1.1.0", NULL);
	start_sim(&b, &f.w, "progB", 1, "--seed lotB");
	fx_station_run(&r, &f.w, "--burn-fuses", "--yes", "--slot", b.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert_eq(fx_count_units(&f.w, "PASS"), 3);
	ub = sim_unit(b.state_path, 0);
	snprintf(uid_b, sizeof(uid_b), "%s", json_string_value(json_object_get(ub, "uid")));
	json_decref(ub);

	fx_station_run(&r, &f.w, "records", "units", "--component", "zlib@1.2.13",
		       "--format", "jsonl", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	{
		int lines = 0;
		json_t *ua0 = sim_unit(a.state_path, 0), *ua1 = sim_unit(a.state_path, 1);

		for (char *p = r.out; (p = strchr(p, '\n')); p++)
			lines++;
		cr_assert_eq(lines, 2, "%s", r.out);
		cr_assert(strstr(r.out, json_string_value(json_object_get(ua0, "uid"))), "%s", r.out);
		cr_assert(strstr(r.out, json_string_value(json_object_get(ua1, "uid"))), "%s", r.out);
		cr_assert(!strstr(r.out, uid_b), "lot B listed: %s", r.out);
		cr_assert(strstr(r.out, "\"cert_serial\":\""), "%s", r.out);
		json_decref(ua0);
		json_decref(ua1);
	}
	fx_station_run(&r, &f.w, "records", "units", "--component", "zlib@1.3.1",
		       "--format", "csv", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	cr_assert(strstr(r.out, "uid,cert_serial,work_order,date"), "%s", r.out);
	cr_assert(strstr(r.out, uid_b), "%s", r.out);
	cr_assert_eq(strchr(strchr(r.out, '\n') + 1, '\n')[1], '\0', "one unit: %s", r.out);
	fx_station_run(&r, &f.w, "records", "units", "--component", "zlib", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	cr_assert(strstr(r.out, "3 units left with zlib"), "%s", r.out);
	fx_station_run(&r, &f.w, "records", "units", "--component", "openssl", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	cr_assert(strstr(r.out, "0 units left with openssl"), "%s", r.out);
	fx_devsim_stop(&a);
	fx_devsim_stop(&b);
	fx_rmtree(f.w.dir);
}

/* ---- the evidence bundle: SBOMs, firmware digests, the auditor's check ---- */

/* The auditor-attestation block of docs/evidence.md, into dst. */
static void attestation_block(const char *dst)
{
	char doc[1024], line[4096], build[512];
	FILE *in, *out;
	int state = 0;

	snprintf(build, sizeof(build), "%s/../docs/evidence.md", getenv("STATION_BUILD"));
	snprintf(doc, sizeof(doc), "%s", build);
	in = fopen(doc, "r");
	cr_assert_not_null(in, "cannot read %s", doc);
	out = fopen(dst, "w");
	cr_assert_not_null(out);
	while (fgets(line, sizeof(line), in)) {
		if (strstr(line, "<!-- auditor-attestation:begin -->"))
			state = 1;
		else if (state == 1 && !strncmp(line, "```sh", 5))
			state = 2;
		else if (state == 2 && !strncmp(line, "```", 3))
			state = 3;
		else if (state == 2)
			fputs(line, out);
	}
	fclose(in);
	fclose(out);
	cr_assert_eq(state, 3, "no auditor-attestation block in %s", doc);
}

Test(firmware, evidence_bundle_carries_sboms_and_an_attestation_openssl_checks,
     .timeout = 120)
{
	struct fw f;
	fx_devsim sim;
	fx_run r;
	char bundle[600], script[600], uid[64], ssha[65], out[512], path[900];
	json_t *u;

	fw_world(&f, 4000, "1.2.13");
	start_sim(&sim, &f.w, "prog1", 1, NULL);
	fx_station_run(&r, &f.w, "--burn-fuses", "--yes", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	snprintf(bundle, sizeof(bundle), "%s/bundle", f.w.dir);
	fx_station_run(&r, &f.w, "records", "export", "--evidence", bundle, NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	u = sim_unit(sim.state_path, 0);
	snprintf(uid, sizeof(uid), "%s", json_string_value(json_object_get(u, "uid")));
	json_decref(u);
	/* the SBOM, byte for byte, under its own digest, in the manifest */
	sha_file(f.sbom, ssha);
	snprintf(path, sizeof(path), "%s/sboms/%s.cdx.json", bundle, ssha);
	cr_assert_eq(sh(NULL, 0, "cmp '%s' '%s'", f.sbom, path), 0, "SBOM not in the bundle");
	cr_assert_eq(sh(NULL, 0, "cd '%s' && grep -q 'sboms/%s.cdx.json' manifest.sha256 && "
			"sha256sum --strict -c manifest.sha256", bundle, ssha), 0);
	cr_assert_eq(sh(out, sizeof(out), "grep -c '\"uid\":\"%s\"' '%s/firmware.jsonl'",
			uid, bundle), 0);
	cr_assert_str_eq(out, "1");
	/* the auditor's recipe, as docs/evidence.md gives it */
	snprintf(script, sizeof(script), "%s/attest-check.sh", f.w.dir);
	attestation_block(script);
	cr_assert_eq(sh(out, sizeof(out), "cd '%s' && DEVICE=%s bash '%s' 2>&1 | tail -n 1",
			bundle, uid, script), 0);
	cr_assert(!strncmp(out, "attestation OK: ", 16) && !strcmp(out + 16, uid), "%s", out);
	/* ...and it fails once one byte of the statement is changed */
	cr_assert_eq(sh(NULL, 0, "cd '%s' && sed -i 's/\"lifecycle\":2/\"lifecycle\":1/' "
			"attestations/%s.statement.json", bundle, uid), 0);
	cr_assert_neq(sh(NULL, 0, "cd '%s' && DEVICE=%s bash -e '%s'", bundle, uid, script), 0,
		      "a changed statement passes the auditor's check");
	fx_devsim_stop(&sim);
	fx_rmtree(f.w.dir);
}

/* ...and on the central copy: every station's units, shipped by sync. */
Test(firmware_query, component_query_on_the_central_copy, .timeout = 300)
{
	struct fw f1, f2;
	fx_devsim a, b;
	fx_pg pg;
	fx_run r;
	char uid_b[64];
	FILE *c;
	json_t *u;

	cr_assert_eq(fx_pg_start(&pg), 0, "the PostgreSQL fixture failed (see stderr)");
	fw_world_at(&f1, 2500, "1.2.13", "line1");
	fw_world_at(&f2, 2600, "1.3.1", "line2");
	for (int i = 0; i < 2; i++) {
		c = fopen(i ? f2.w.conf : f1.w.conf, "a");
		cr_assert_not_null(c);
		fprintf(c, "sync: { conninfo = \"%s\"; passfile = \"%s\"; };\n",
			pg.conninfo, pg.passfile);
		fclose(c);
	}
	start_sim(&a, &f1.w, "progA", 2, "--seed lotA");
	start_sim(&b, &f2.w, "progB", 1, "--seed lotB");
	fx_station_run(&r, &f1.w, "--burn-fuses", "--yes", "--slot", a.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_station_run(&r, &f2.w, "--burn-fuses", "--yes", "--slot", b.port, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	fx_station_run(&r, &f1.w, "records", "sync", "--once", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	fx_station_run(&r, &f2.w, "records", "sync", "--once", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	u = sim_unit(b.state_path, 0);
	snprintf(uid_b, sizeof(uid_b), "%s", json_string_value(json_object_get(u, "uid")));
	json_decref(u);
	/* asked at station 2, which has no unit with zlib 1.2.13 itself */
	fx_station_run(&r, &f2.w, "records", "units", "--component", "zlib@1.2.13",
		       "--pg", "--format", "jsonl", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	{
		json_t *ua0 = sim_unit(a.state_path, 0), *ua1 = sim_unit(a.state_path, 1);
		int lines = 0;

		for (char *p = r.out; (p = strchr(p, '\n')); p++)
			lines++;
		cr_assert_eq(lines, 2, "%s", r.out);
		cr_assert(strstr(r.out, json_string_value(json_object_get(ua0, "uid"))), "%s", r.out);
		cr_assert(strstr(r.out, json_string_value(json_object_get(ua1, "uid"))), "%s", r.out);
		cr_assert(strstr(r.out, "\"station\":\"line1\""), "%s", r.out);
		cr_assert(!strstr(r.out, uid_b), "%s", r.out);
		json_decref(ua0);
		json_decref(ua1);
	}
	fx_station_run(&r, &f1.w, "records", "units", "--component", "zlib", "--pg", NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	cr_assert(strstr(r.out, "3 units of every station left with zlib"), "%s", r.out);
	cr_assert(strstr(r.out, uid_b), "%s", r.out);
	/* the local store of station 1 knows only its own */
	fx_station_run(&r, &f1.w, "records", "units", "--component", "zlib", NULL);
	cr_assert(strstr(r.out, "2 units left with zlib"), "%s", r.out);
	fx_devsim_stop(&a);
	fx_devsim_stop(&b);
	fx_pg_destroy(&pg);
	fx_rmtree(f1.w.dir);
	fx_rmtree(f2.w.dir);
}

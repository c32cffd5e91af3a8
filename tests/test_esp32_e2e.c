/* test_esp32_e2e.c — an ESP32-C3 provisioned end to end by the station
 * binary (docs/esp32.md, "End to end"), judged by outside referees only.
 *
 * The world is what a maker's line has: a fresh RSA-3072 secure-boot key
 * and two images signed with `espsecure sign_data --version 2`
 * (scripts/esp32c3-firmware.sh; the private key stays in the test's
 * directory), profiles/esp32c3.profile with their digests, signed by the
 * engineering key, the issuing CA in SoftHSM, and a simulated C3
 * (station-devsim --model esp32c3) on a pty.  `station provision` runs it
 * to PASS; then espefuse on the locked chip (Secure Download Mode), and
 * on what a lab reads off the chip (the exported eFuse and flash images):
 * espefuse --virt, the esp_secure_cert reader written from the public
 * formats, openssl verify, espsecure verify_signature.
 *
 * esp32_e2e/killed_after_the_lock_is_not_failed_and_gets_no_second_identity:
 * the station SIGKILLed after the lock and before the PASS is recorded,
 * the unit re-seated (or, ..._with_the_app_left_running_resumes, left in
 * the factory app): the next run resumes it to PASS with its first
 * identity (the unit ID from the factory app's IDENTIFY; see the test).
 *
 * esp32_e2e/killed_mid_{flash,burn}_resumes_to_pass_with_one_identity:
 * kill -9 of the station while it writes the images, or burns the plan;
 * the next run resumes to PASS, one identity, the records verify. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/fixtures/fx_esp.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

#define OUTCAP (1 << 18)

static char out[OUTCAP];

/* A shell command (Debian's tools); its stdout+stderr in o (may be NULL). */
static int sh(char *o, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int sh(char *o, size_t cap, const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	FILE *p;
	size_t n = 0;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	if (o && cap) {
		n = fread(o, 1, cap - 1, p);
		o[n] = '\0';
		while (n && (o[n - 1] == '\n' || o[n - 1] == ' '))
			o[--n] = '\0';
	} else {
		char sink[4096];

		while (fread(sink, 1, sizeof(sink), p) > 0)
			;
	}
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

struct c3w {
	fx_world w;
	char fw[600];        /* scripts/esp32c3-firmware.sh's directory */
	char digest[65];     /* espsecure digest_sbv2_public_key of its key */
};

/* The signed images and profile from a fresh key, into a station world. */
static void c3_world(struct c3w *c)
{
	static char text[16384];
	fx_world_opts o = { .with_ca = true, .timeout_ms = 1000, .profile = text,
			    .profile_file = "esp32c3.profile" };
	char tmp[64] = "/tmp/test-esp32-e2e-XXXXXX", p[700];
	FILE *f;
	size_t n;

	(void)fx_esp_referee_path();   /* fails the test when it is missing */
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(c->fw, sizeof(c->fw), "%s", tmp);
	cr_assert_eq(sh(out, sizeof(out), "bash scripts/esp32c3-firmware.sh %s "
			"profiles/esp32c3.profile 2>&1", c->fw), 0, "%s", out);
	snprintf(p, sizeof(p), "%s/esp32c3.profile", c->fw);
	f = fopen(p, "r");
	cr_assert_not_null(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	cr_assert(strstr(text, "key_mode = \"esp_secure_cert\";") &&
		  strstr(text, "format = \"esp32-sbv2\";"), "%s", text);
	fx_world_init_opts(&c->w, &o);
	cr_assert_eq(sh(out, sizeof(out), "cd %s && cp esp32c3-secureboot.pub.pem "
			"esp32c3-bootloader.bin esp32c3-app.bin esp32c3.cdx.json %s/ 2>&1",
			c->fw, c->w.dir), 0, "%s", out);
	cr_assert_eq(sh(c->digest, sizeof(c->digest), "od -An -tx1 -v %s/sbv2-digest.bin | "
			"tr -d ' \\n'", c->fw), 0);
	cr_assert_eq(strlen(c->digest), 64);
}

static void c3_world_free(struct c3w *c)
{
	fx_rmtree(c->w.dir);
	sh(NULL, 0, "rm -rf '%s'", c->fw);
}

static json_t *field(json_t *s, const char *name)
{
	json_t *f = json_object_get(s, name);

	cr_assert_not_null(f, "espefuse shows no %s", name);
	return f;
}

static bool is_true(json_t *s, const char *name)
{
	json_t *v = json_object_get(field(s, name), "value");

	return json_is_true(v) || (json_is_integer(v) && json_integer_value(v) != 0);
}

static const char *sval(json_t *s, const char *name)
{
	json_t *v = json_object_get(field(s, name), "value");

	return json_is_string(v) ? json_string_value(v) : "";
}

/* espefuse's key block value ("aa bb ..." or "aabb..."), as 64 hex chars. */
static void hex_of(const char *v, char h[65])
{
	size_t n = 0;

	for (; *v && n < 64; v++)
		if ((*v >= '0' && *v <= '9') || (*v >= 'a' && *v <= 'f') ||
		    (*v >= 'A' && *v <= 'F'))
			h[n++] = (char)(*v | 0x20);
	h[n] = '\0';
}

/* Start the station with stderr on a pipe; *errfd gets its read end. */
static pid_t spawn_station(const fx_world *w, int *errfd, ...)
{
	char bin[512];
	const char *argv[64];
	int p[2];
	va_list ap;
	pid_t pid;

	va_start(ap, errfd);
	fx_station_argv(argv, bin, w, ap);
	va_end(ap);
	cr_assert_eq(pipe(p), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		FILE *dn = freopen("/dev/null", "w", stdout);

		(void)dn;
		dup2(p[1], 2);
		close(p[0]);
		execv(bin, (char **)argv);
		_exit(127);
	}
	close(p[1]);
	*errfd = p[0];
	return pid;
}

/* Read stderr until a line containing what; log keeps what was read. */
static void wait_line(int fd, const char *what, char *log, size_t cap)
{
	char line[4096];
	size_t n = 0, len = strlen(log);

	for (;;) {
		char c;
		ssize_t k = read(fd, &c, 1);

		cr_assert_eq(k, 1, "station ended before '%s':\n%s", what, log);
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
			return;
	}
}

/* Everything an auditor checks on a provisioned unit's exported images. */
static void referee_offline(struct c3w *c, const fx_esp_sim *s, const char *dir)
{
	char ef[700], fl[700], args[1600], h[65], uid[80], serial[80], pub[140];
	static const char *const img[2][2] = { { "esp32c3-bootloader.bin", "0" },
					       { "esp32c3-app.bin", "65536" } };
	json_t *j;

	snprintf(ef, sizeof(ef), "%s/efuse.bin", dir);
	snprintf(fl, sizeof(fl), "%s/flash.bin", dir);
	cr_assert_eq(sh(out, sizeof(out), "%s/station-devsim --model esp32c3 --state %s "
			"--efuse-image %s --flash-image %s 2>&1", getenv("STATION_BUILD"),
			s->state, ef, fl), 0, "%s", out);

	/* the eFuses, as Espressif's model of the controller reads them */
	snprintf(args, sizeof(args), "--chip esp32c3 --virt --path-efuse-file %s "
		 "summary --format json", ef);
	cr_assert_eq(fx_esp_tool("espefuse", args, out, sizeof(out), 60), 0, "%s", out);
	j = fx_esp_json(out);
	hex_of(sval(j, "BLOCK_KEY0"), h);
	cr_expect_str_eq(h, c->digest, "BLOCK_KEY0 is not espsecure's digest of the key");
	cr_expect(strstr(sval(j, "KEY_PURPOSE_0"), "SECURE_BOOT_DIGEST0"), "%s",
		  sval(j, "KEY_PURPOSE_0"));
	cr_expect(json_is_false(json_object_get(field(j, "BLOCK_KEY0"), "writeable")),
		  "BLOCK_KEY0 is not write-protected");
	cr_expect(json_is_false(json_object_get(field(j, "KEY_PURPOSE_0"), "writeable")),
		  "KEY_PURPOSE_0 is not write-protected");
	cr_expect(is_true(j, "SECURE_BOOT_EN"), "secure boot is off");
	cr_expect(is_true(j, "DIS_USB_JTAG"), "USB JTAG is on");
	cr_expect(is_true(j, "DIS_PAD_JTAG"), "pad JTAG is on");
	cr_expect(is_true(j, "SOFT_DIS_JTAG"), "SOFT_DIS_JTAG is 0");
	cr_expect(is_true(j, "ENABLE_SECURITY_DOWNLOAD"), "download mode is not locked");
	cr_expect(strstr(sval(j, "KEY_PURPOSE_1"), "HMAC_UP"), "%s", sval(j, "KEY_PURPOSE_1"));
	cr_expect(json_is_false(json_object_get(field(j, "BLOCK_KEY1"), "readable")),
		  "the HMAC key block is readable");
	json_decref(j);
	/* RS errors are in the controller's error registers, not in the
	 * summary's JSON: espefuse's check_error judges them (exit status) */
	snprintf(args, sizeof(args), "--chip esp32c3 --virt --path-efuse-file %s "
		 "check_error", ef);
	cr_expect_eq(fx_esp_tool("espefuse", args, out, sizeof(out), 60), 0,
		     "espefuse finds eFuse errors: %s", out);
	cr_expect(strstr(out, "No errors detected"), "%s", out);

	/* esp_secure_cert, found through the partition table in the raw flash */
	cr_assert_eq(sh(out, sizeof(out), "mkdir -p %s/sc && /usr/bin/python3 "
			"tests/fixtures/esp32_secure_cert_read.py %s %s/sc 2>&1", dir, fl,
			dir), 0, "%s", out);
	cr_assert_eq(sh(out, sizeof(out), "openssl verify -CAfile %s %s/sc/dev_cert.pem 2>&1",
			c->w.ca, dir), 0, "openssl: %s", out);
	/* ... and it is the unit's: serial and public key as `records show`
	 * says */
	fx_q_text(&c->w, "SELECT uid FROM units WHERE state = 'PASS'", uid, sizeof(uid));
	cr_assert_eq(sh(serial, sizeof(serial), "openssl x509 -in %s/sc/dev_cert.pem "
			"-noout -serial | cut -d= -f2", dir), 0);
	cr_assert_eq(sh(pub, sizeof(pub), "openssl x509 -in %s/sc/dev_cert.pem -noout "
			"-pubkey | openssl pkey -pubin -outform DER | tail -c 65 | "
			"od -An -v -tx1 | tr -d ' \\n'", dir), 0);
	cr_assert_eq(strlen(pub), 130);
	{
		static fx_run r;
		char line[256];

		fx_station_run(&r, &c->w, "records", "show", uid, NULL);
		cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
		snprintf(line, sizeof(line), "PASS");
		cr_expect(strstr(r.out, serial) && strstr(r.out, line),
			  "records show %s does not name serial %s:\n%s", uid, serial, r.out);
		snprintf(line, sizeof(line), "\"public_key\":\"%s\"", pub);
		cr_expect(strstr(r.out, line), "records show %s does not name the key %s:\n%s",
			  uid, pub, r.out);
	}

	/* the signed images, cut from the raw flash at their offsets */
	for (int i = 0; i < 2; i++) {
		char cut[800];

		snprintf(cut, sizeof(cut), "%s/cut-%d.bin", dir, i);
		cr_assert_eq(sh(out, sizeof(out), "dd if=%s of=%s iflag=skip_bytes,count_bytes "
				"skip=%s count=$(stat -c %%s %s/%s) status=none 2>&1", fl, cut,
				img[i][1], c->fw, img[i][0]), 0, "%s", out);
		snprintf(args, sizeof(args), "verify_signature --version 2 --keyfile "
			 "%s/esp32c3-secureboot.pub.pem %s", c->fw, cut);
		cr_expect_eq(fx_esp_tool("espsecure", args, out, sizeof(out), 60), 0,
			     "%s at %s: %s", img[i][0], img[i][1], out);
		cr_expect(strstr(out, "verification successful"), "%s at %s: %s", img[i][0],
			  img[i][1], out);
	}
}

/* Online after the lock: espefuse is refused (Secure Download Mode). */
static void referee_locked(const fx_esp_sim *s)
{
	char args[800];

	snprintf(args, sizeof(args), "--port %s --before no_reset --do-not-confirm summary",
		 s->slave);
	cr_expect_neq(fx_esp_tool("espefuse", args, out, sizeof(out), 60), 0,
		      "espefuse read the locked chip: %s", out);
	cr_expect(strstr(out, "Secure Download Mode is enabled"), "%s", out);
}

Test(esp32_e2e, provisioned_unit_passes_every_referee, .timeout = 900)
{
	static fx_run r;
	struct c3w c;
	fx_esp_sim s;
	char slot[700], steps[16384];

	c3_world(&c);
	cr_assert_eq(fx_esp_sim_start(&s, c.fw, "c3", NULL), 0);
	snprintf(slot, sizeof(slot), "esp32:%s", s.slave);
	fx_station_run(&r, &c.w, "--burn-fuses", "--yes", "--slot", slot, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert_eq(fx_count_units(&c.w, "PASS"), 1, "%s", r.out);
	/* possession and attestation by the factory app, not skipped */
	fx_q_text(&c.w, "SELECT group_concat(step || ' ' || outcome || ' ' || "
		  "substr(detail, 1, 120), '\n') FROM steps", steps, sizeof(steps));
	cr_expect(strstr(steps, "possession ok challenge signed and verified"), "%s", steps);
	cr_expect(strstr(steps, "attest ok"), "%s", steps);
	cr_expect_eq(fx_q_int(&c.w, "SELECT count(*) FROM steps WHERE outcome = 'skip'"), 0,
		     "%s", steps);
	referee_locked(&s);
	fx_esp_sim_stop(&s);
	referee_offline(&c, &s, c.fw);
	c3_world_free(&c);
}

/* A station SIGKILLed after the lock was burned and recorded, before
 * the attestation and the PASS; the chip is either re-seated (it comes up
 * in its ROM loader) or left as the kill left it (maybe in the factory
 * app, which the attestation boots; app_running makes that certain with
 * the sim's SIGUSR1, "reset with GPIO9 high").  The next run resumes it
 * (docs/esp32.md, "End to end"): the ROM in Secure Download Mode refuses
 * the eFuse reads, so the driver takes the unit ID from the factory app's
 * IDENTIFY (on a pty left in the app, after APP_TO_LOADER), and the
 * engine's resume reads the certificate back, proves possession, finds
 * the fuse plan done and attests: PASS with the first identity, no second
 * HMAC key, certificate or burn, and the records verify. */
static void killed_after_the_lock(bool reseat)
{
	static fx_run r;
	static char log[65536];
	struct c3w c;
	fx_esp_sim s;
	char slot[700], uid[80], uid2[80], steps[16384];
	int errfd, status, burns;
	pid_t pid;

	c3_world(&c);
	cr_assert_eq(fx_esp_sim_start(&s, c.fw, "c3", NULL), 0);
	snprintf(slot, sizeof(slot), "esp32:%s", s.slave);
	log[0] = '\0';
	pid = spawn_station(&c.w, &errfd, "--verbose", "--burn-fuses", "--yes", "--slot",
			    slot, "provision", NULL);
	wait_line(errfd, "lifecycle locked set and read back", log, sizeof(log));
	cr_assert_eq(kill(pid, SIGKILL), 0);
	waitpid(pid, &status, 0);
	close(errfd);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		  "the station ended before the kill:\n%s", log);
	cr_assert_eq(fx_count_units(&c.w, "PASS"), 0, "the PASS was recorded before the kill");
	cr_assert_eq(fx_q_int(&c.w, "SELECT count(*) FROM units WHERE state = 'RUNNING'"), 1);
	fx_q_text(&c.w, "SELECT uid FROM units WHERE state = 'RUNNING'", uid, sizeof(uid));
	burns = fx_q_int(&c.w, "SELECT count(*) FROM steps WHERE step IN ('fuse-intent', "
			 "'lifecycle-intent', 'keygen', 'write-cert')");
	cr_assert_gt(burns, 10, "the killed run did not burn its plan");
	if (reseat) {
		/* re-seated: powered up in its ROM loader; the state file keeps
		 * eFuses and flash */
		fx_esp_sim_stop(&s);
		cr_assert_eq(fx_esp_sim_start(&s, c.fw, "c3", NULL), 0);
		snprintf(slot, sizeof(slot), "esp32:%s", s.slave);
		/* the chip is locked: the ROM refuses espefuse */
		referee_locked(&s);
	} else {
		/* left in the factory app: nothing answers SYNC on a pty */
		cr_assert_eq(kill(s.pid, SIGUSR1), 0);
		usleep(300 * 1000);
	}

	fx_station_run(&r, &c.w, "--burn-fuses", "--yes", "--slot", slot, "provision", NULL);
	cr_assert_eq(r.code, 0, "the locked unit was not resumed\nstdout:%s\nstderr:%s",
		     r.out, r.err);
	cr_expect_eq(fx_count_units(&c.w, "PASS"), 1, "%s", r.out);
	/* the killed run's record is closed as interrupted (as for every
	 * target), and the new record finishes it with the same identity */
	cr_expect_eq(fx_q_int(&c.w, "SELECT count(*) FROM units WHERE state = 'FAIL' AND "
			      "reason LIKE 'interrupted%'"), 1);
	cr_expect_eq(fx_q_int(&c.w, "SELECT count(*) FROM units"), 2);
	fx_q_text(&c.w, "SELECT uid FROM units WHERE state = 'PASS'", uid2, sizeof(uid2));
	cr_expect_str_eq(uid2, uid, "the app's IDENTIFY is not the ROM side's unit ID");
	fx_q_text(&c.w, "SELECT group_concat(step || ' ' || outcome || ' ' || "
		  "substr(detail, 1, 120), '\n') FROM steps", steps, sizeof(steps));
	cr_expect_eq(fx_q_int(&c.w, "SELECT count(*) FROM steps WHERE step = 'certificate' "
			      "AND outcome = 'ok' AND detail NOT LIKE 'resumed%'"), 1,
		     "a second certificate was issued:\n%s", steps);
	cr_expect(strstr(steps, "no second identity"), "%s", steps);
	cr_expect_eq(fx_q_int(&c.w, "SELECT count(*) FROM steps WHERE step = 'keygen' AND "
			      "detail LIKE 'identity {%'"), 1, "a second HMAC key was drawn");
	cr_expect_eq(fx_q_int(&c.w, "SELECT count(*) FROM steps WHERE step IN ('fuse-intent', "
			      "'lifecycle-intent', 'keygen', 'write-cert')"), burns,
		     "the resume burned or wrote again:\n%s", steps);
	cr_expect(strstr(steps, "already held whole, nothing written"), "%s", steps);
	cr_expect(strstr(steps, "fuse plan complete (already)"), "%s", steps);
	cr_expect(strstr(steps, "attest ok"), "%s", steps);
	cr_expect_geq(fx_q_int(&c.w, "SELECT count(*) FROM steps WHERE step = 'possession' "
			       "AND outcome = 'ok'"), 1, "%s", steps);
	fx_station_run(&r, &c.w, "--ca-cert", c.w.ca, "records", "verify", NULL);
	cr_expect_eq(r.code, 0, "records verify:\n%s%s", r.out, r.err);
	referee_locked(&s);
	fx_esp_sim_stop(&s);
	/* the lab's view: the first identity, every referee as for a unit
	 * provisioned in one run */
	referee_offline(&c, &s, c.fw);
	c3_world_free(&c);
}

Test(esp32_e2e, killed_after_the_lock_is_not_failed_and_gets_no_second_identity,
     .timeout = 900)
{
	killed_after_the_lock(true);
}

Test(esp32_e2e, killed_after_the_lock_with_the_app_left_running_resumes,
     .timeout = 900)
{
	killed_after_the_lock(false);
}

/* kill -9 of the station at a line of its --verbose output (the chip
 * stays as it is: in its ROM loader, mid-operation); the next run resumes
 * the unit to PASS with one identity, and the records verify. */
static void killed_at(const char *line)
{
	static fx_run r;
	static char log[65536];
	struct c3w c;
	fx_esp_sim s;
	char slot[700], steps[16384];
	int errfd, status;
	pid_t pid;

	c3_world(&c);
	cr_assert_eq(fx_esp_sim_start(&s, c.fw, "c3", NULL), 0);
	snprintf(slot, sizeof(slot), "esp32:%s", s.slave);
	log[0] = '\0';
	pid = spawn_station(&c.w, &errfd, "--verbose", "--burn-fuses", "--yes", "--slot",
			    slot, "provision", NULL);
	wait_line(errfd, line, log, sizeof(log));
	cr_assert_eq(kill(pid, SIGKILL), 0);
	waitpid(pid, &status, 0);
	close(errfd);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		  "the station ended before the kill:\n%s", log);
	cr_assert_eq(fx_count_units(&c.w, "PASS"), 0);

	fx_station_run(&r, &c.w, "--burn-fuses", "--yes", "--slot", slot, "provision", NULL);
	cr_assert_eq(r.code, 0, "not resumed\nstdout:%s\nstderr:%s", r.out, r.err);
	cr_expect_eq(fx_count_units(&c.w, "PASS"), 1, "%s", r.out);
	fx_q_text(&c.w, "SELECT group_concat(step || ' ' || outcome || ' ' || "
		  "substr(detail, 1, 120), '\n') FROM steps", steps, sizeof(steps));
	cr_expect_eq(fx_q_int(&c.w, "SELECT count(*) FROM steps WHERE step = 'certificate' "
			      "AND outcome = 'ok' AND detail NOT LIKE 'resumed%'"), 1,
		     "a second certificate was issued:\n%s", steps);
	cr_expect_eq(fx_q_int(&c.w, "SELECT count(*) FROM steps WHERE step = 'keygen' AND "
			      "detail LIKE 'identity {%'"), 1, "a second HMAC key was drawn:\n%s",
		     steps);
	cr_expect(strstr(steps, "no second identity"), "%s", steps);
	cr_expect(strstr(steps, "attest ok"), "%s", steps);
	fx_station_run(&r, &c.w, "--ca-cert", c.w.ca, "records", "verify", NULL);
	cr_expect_eq(r.code, 0, "records verify:\n%s%s", r.out, r.err);
	referee_locked(&s);
	fx_esp_sim_stop(&s);
	referee_offline(&c, &s, c.fw);
	c3_world_free(&c);
}

Test(esp32_e2e, killed_mid_flash_resumes_to_pass_with_one_identity, .timeout = 900)
{
	/* the next step writes the bootloader, then the app */
	killed_at("write-cert ");
}

Test(esp32_e2e, killed_mid_burn_resumes_to_pass_with_one_identity, .timeout = 900)
{
	/* the intent of the first field of the plan is on record: its burn
	 * is under way */
	killed_at("field sb-digest bank");
}

/* test_esp32_drv.c — the esp32 driver (device-drivers/esp32/) and the
 * ESP32-C3 fuse plan (profiles/esp32c3.profile, run by the engine's fuse
 * run, station/fuses.c) against the simulated C3 (station-devsim --model
 * esp32c3 on a pty), refereed by Espressif's own esptool, espefuse and
 * espsecure 4.7.0: what they read from the same chip, and what espefuse
 * --virt (Espressif's model of the eFuse controller) makes of the same
 * burns from the same blank chip.
 *
 * The station binary cannot provision a C3 end to end yet: the engine's
 * identity steps need on-chip key generation or key injection, and the
 * ROM loader offers neither (the esp_secure_cert scheme is not wired in;
 * docs/esp32.md).  So the plan is run through the engine's fuse run
 * (st_fuse_run_plan, the code `provision` runs) linked in here, and the
 * station binary is driven for what it can do with a C3: show the plan
 * against the chip, and refuse to provision it with words that say why,
 * with nothing burned. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <libconfig.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "base.h"
#include "device-drivers/drv.h"
#include "device-drivers/proto/esp_rom.h"
#include "station/fuses.h"
#include "tests/fixtures/fx_esp.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

#define OUTCAP 262144

/* The tree's top (STATION_BUILD/..), for the profile and its key. */
static void top(char *out, size_t cap, const char *rel)
{
	const char *b = getenv("STATION_BUILD");

	cr_assert(b && *b, "STATION_BUILD is not set");
	snprintf(out, cap, "%s/../%s", b, rel);
}

static char *tmpdir(void)
{
	static char d[64];

	snprintf(d, sizeof(d), "/tmp/st-esp32-XXXXXX");
	cr_assert_not_null(mkdtemp(d));
	return d;
}

static void rmtree(const char *d)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
	cr_assert_eq(system(cmd), 0);
}

/* ---- the plan, from the repository's profile ---- */

typedef struct plan_ctx {
	st_fuse_plan plan;
	uint8_t rot[32];
	char rot_hex[65];
} plan_ctx;

/* Parse profiles/esp32c3.profile's fuse plan as the profile loader does;
 * with_lock false drops its last step (the lifecycle lock). */
static void plan_load(plan_ctx *p, bool with_lock)
{
	char path[600], err[512];
	const char *hex = NULL;
	config_t c;

	top(path, sizeof(path), "profiles/esp32c3.profile");
	config_init(&c);
	cr_assert(config_read_file(&c, path), "%s: %s", path, config_error_text(&c));
	cr_assert(config_lookup_string(&c, "root_of_trust.sha256", &hex));
	snprintf(p->rot_hex, sizeof(p->rot_hex), "%s", hex);
	cr_assert_eq(st_unhex(hex, p->rot, 32), ST_OK);
	cr_assert_eq(st_fuse_plan_parse(&c, path, p->rot, 0, &p->plan, err, sizeof(err)),
		     ST_OK, "%s", err);
	config_destroy(&c);
	cr_assert_eq(p->plan.f[p->plan.n - 1].kind, ST_FUSE_LIFECYCLE);
	if (!with_lock)
		p->plan.n--;
}

/* ---- the engine's fuse run, linked in ---- */

typedef struct run_log {
	char text[16384];
	int intents;
	int kill_after;      /* SIGKILL ourselves kill_ms after this intent */
	int kill_ms;
	FILE *steps;         /* "name\toutcome\tdetail" per step (child runs) */
} run_log;

static void die_now(int sig)
{
	(void)sig;
	kill(getpid(), SIGKILL);
}

static int log_record(void *ctx, st_step s, st_outcome o, const char *detail,
		      bool durable)
{
	run_log *l = ctx;
	size_t n = strlen(l->text);

	snprintf(l->text + n, sizeof(l->text) - n, "%s %s: %s\n", st_step_name(s),
		 st_outcome_name(o), detail);
	if (l->steps) {
		fprintf(l->steps, "%s\t%s\t%s\n", st_step_name(s), st_outcome_name(o),
			detail);
		fflush(l->steps);
		fsync(fileno(l->steps));
	}
	if (durable && ++l->intents == l->kill_after) {
		struct itimerval t = { .it_value = { 0, l->kill_ms * 1000 } };

		signal(SIGALRM, die_now);
		setitimer(ITIMER_REAL, &t, NULL);
	}
	return 0;
}

static int log_request_id(void *ctx, uint32_t *id)
{
	(void)ctx;
	*id = (uint32_t)random();
	return 0;
}

/* Open the C3 on port, identify it and run plan; the run's result code,
 * run->reason etc. for the caller. */
static int run_plan_opts(const char *port, const char *target_opts,
			 const st_fuse_plan *plan, const st_fuse_resume *resume,
			 run_log *log, st_fuse_run *run, drv_linkstat *stats)
{
	drv_opts o = { .timeout_ms = 1000, .retries = 3, .target_opts = target_opts };
	char uri[700];
	drv_dev *d = NULL;
	drv_info info;
	int rc;

	snprintf(uri, sizeof(uri), "esp32:%s", port);
	rc = drv_open(uri, &o, &d);
	cr_assert_eq(rc, ST_OK, "open %s: %s", uri, drv_errmsg(d));
	rc = drv_identify(d, &info);
	cr_assert_eq(rc, ST_OK, "identify: %s", drv_errmsg(d));
	memset(run, 0, sizeof(*run));
	run->dev = d;
	run->plan = plan;
	run->lifecycle = info.lifecycle;
	run->banks = info.fuse_banks;
	run->bitprog_banks = info.bitprog_banks;
	run->resume = resume;
	run->record = log_record;
	run->request_id = log_request_id;
	run->ctx = log;
	rc = st_fuse_run_plan(run);
	if (stats)
		drv_link_stats(d, stats);
	run->dev = NULL;
	drv_close(d);
	return rc;
}

static int run_plan(const char *port, const st_fuse_plan *plan,
		    const st_fuse_resume *resume, run_log *log, st_fuse_run *run,
		    drv_linkstat *stats)
{
	return run_plan_opts(port, NULL, plan, resume, log, run, stats);
}

/* ---- the referee ---- */

/* espefuse summary --format json of the chip on port. */
static json_t *summary_online(const char *port)
{
	static char out[OUTCAP];
	char args[800];
	int rc;

	snprintf(args, sizeof(args), "--port %s --before no_reset --do-not-confirm "
		 "summary --format json", port);
	rc = fx_esp_tool("espefuse", args, out, sizeof(out), 60);
	cr_assert_eq(rc, 0, "espefuse summary: %s", out);
	return fx_esp_json(out);
}

/* The chip's espefuse summary a is the one b (every field's value,
 * readability and write protection). */
static void same_efuses(json_t *a, json_t *b, const char *what)
{
	int n = fx_esp_summary_diff(a, b, what);

	cr_assert_eq(n, 0, "%s: %d field(s) differ (logged above)", what, n);
}

static const char *sval(json_t *s, const char *field)
{
	json_t *v = json_object_get(json_object_get(s, field), "value");

	cr_assert_not_null(v, "no %s in the summary", field);
	return json_is_string(v) ? json_string_value(v) : json_is_true(v) ? "true" :
	       json_is_false(v) ? "false" : "(number)";
}

static long long ival(json_t *s, const char *field)
{
	json_t *v = json_object_get(json_object_get(s, field), "value");

	cr_assert(json_is_integer(v), "%s is not a number", field);
	return json_integer_value(v);
}

static bool writeable(json_t *s, const char *field)
{
	return json_is_true(json_object_get(json_object_get(s, field), "writeable"));
}

/* "70 ed 4f ..." (espefuse's byte listing) as plain hex. */
static void spaced_hex(const char *in, char *out, size_t cap)
{
	size_t n = 0;

	for (; *in && n + 1 < cap; in++)
		if (*in != ' ')
			out[n++] = *in;
	out[n] = '\0';
}

/* The repository's secure-boot key digest, as espsecure computes it. */
static void sbv2_digest(const char *dir, char hex[65])
{
	char key[600], args[1400], out[4096], bin[600];
	uint8_t d[32];
	FILE *f;

	top(key, sizeof(key), "profiles/esp32c3-secureboot.pub.pem");
	snprintf(bin, sizeof(bin), "%s/digest.bin", dir);
	snprintf(args, sizeof(args), "digest_sbv2_public_key --keyfile %s --output %s",
		 key, bin);
	cr_assert_eq(fx_esp_tool("espsecure", args, out, sizeof(out), 60), 0, "%s", out);
	f = fopen(bin, "rb");
	cr_assert_not_null(f);
	cr_assert_eq(fread(d, 1, 32, f), 32);
	fclose(f);
	st_hex(d, 32, hex);
}

/* The burns the profile's plan (before the lock) stands for, replayed in
 * espefuse --virt on the eFuse file f: the key digest with its purpose
 * (burn_key_digest also write-protects the block and the purpose), then
 * the BLOCK0 bits. */
static void replay_plan(const char *f, bool lock)
{
	char key[600], args[1000], out[OUTCAP];

	top(key, sizeof(key), "profiles/esp32c3-secureboot.pub.pem");
	snprintf(args, sizeof(args), "burn_key_digest BLOCK_KEY0 %s SECURE_BOOT_DIGEST0",
		 key);
	cr_assert_eq(fx_esp_virt(f, args, out, sizeof(out)), 0, "%s", out);
	cr_assert_eq(fx_esp_virt(f, "burn_efuse SECURE_BOOT_EN 1 DIS_USB_JTAG 1 "
			  "DIS_DOWNLOAD_ICACHE 1 SOFT_DIS_JTAG 7 DIS_PAD_JTAG 1", out,
			  sizeof(out)), 0, "%s", out);
	if (lock)
		cr_assert_eq(fx_esp_virt(f, "burn_efuse ENABLE_SECURITY_DOWNLOAD 1", out,
				  sizeof(out)), 0, "%s", out);
}

/* A blank chip: start it, export its blank eFuses to dir/blank.bin. */
static void blank_chip(fx_esp_sim *s, const char *dir, const char *extra)
{
	char f[300];

	cr_assert_eq(fx_esp_sim_start(s, dir, "c3", NULL), 0);
	fx_esp_sim_stop(s);
	snprintf(f, sizeof(f), "%s/blank.bin", dir);
	fx_esp_export_efuses(s->state, f);
	cr_assert_eq(fx_esp_sim_start(s, dir, "c3", extra), 0);
}

/* ---- tests ---- */

Test(esp32, identify_gives_the_mac_esptool_reads, .timeout = 120)
{
	char *dir = tmpdir(), uri[700], out[8192], args[800], mac[32];
	drv_opts o = { .timeout_ms = 1000 };
	drv_dev *d = NULL;
	drv_info info;
	fx_esp_sim s;

	cr_assert_eq(fx_esp_sim_start(&s, dir, "c3", NULL), 0);
	snprintf(uri, sizeof(uri), "esp32:%s", s.slave);
	cr_assert_eq(drv_open(uri, &o, &d), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	drv_close(d);
	cr_assert_str_eq(info.model, "ESP32-C3 v0.4");
	cr_assert_eq(info.fuse_banks, 11);
	cr_assert_eq(info.bitprog_banks, 1u);
	cr_assert_eq(info.lifecycle, DRV_LC_OPEN);
	/* esptool, on the same port after the station let go */
	snprintf(args, sizeof(args), "--port %s --before no_reset --after no_reset "
		 "--no-stub read_mac", s.slave);
	cr_assert_eq(fx_esp_tool("esptool", args, out, sizeof(out), 60), 0, "%s", out);
	cr_assert(strstr(out, "Chip is ESP32-C3"), "%s", out);
	snprintf(mac, sizeof(mac), "%c%c:%c%c:%c%c:%c%c:%c%c:%c%c", info.uid_hex[0],
		 info.uid_hex[1], info.uid_hex[2], info.uid_hex[3], info.uid_hex[4],
		 info.uid_hex[5], info.uid_hex[6], info.uid_hex[7], info.uid_hex[8],
		 info.uid_hex[9], info.uid_hex[10], info.uid_hex[11]);
	cr_assert(strstr(out, mac), "esptool does not read MAC %s (the ID %s): %s", mac,
		  info.uid_hex, out);
	snprintf(args, sizeof(args), "--port %s --before no_reset --after no_reset "
		 "--no-stub chip_id", s.slave);
	cr_assert_eq(fx_esp_tool("esptool", args, out, sizeof(out), 60), 0, "%s", out);
	cr_assert(strstr(out, "ESP32-C3"), "%s", out);
	fx_esp_sim_stop(&s);
	rmtree(dir);
}

/* ?baud=N: after SYNC the driver asks the ROM for N (CHANGE_BAUDRATE,
 * whose answer the open needs) and sets its side of the port to N (the
 * pty's termios, read through the same device, say so); the chip then
 * answers (identify).  A rate the host cannot set (57600: the old driver
 * asked the chip for it, then failed to follow) is refused before the
 * chip is asked, naming the rates it can use. */
Test(esp32, baud_in_the_uri_on_both_sides_and_one_the_host_cannot_set_refused,
     .timeout = 120)
{
	char *dir = tmpdir(), uri[700];
	drv_opts o = { .timeout_ms = 1000 };
	drv_dev *d = NULL;
	drv_info info;
	struct termios tio;
	fx_esp_sim s;
	int fd;

	cr_assert_eq(fx_esp_sim_start(&s, dir, "c3", NULL), 0);
	snprintf(uri, sizeof(uri), "esp32:%s?baud=460800", s.slave);
	cr_assert_eq(drv_open(uri, &o, &d), ST_OK, "%s", drv_errmsg(d));
	fd = open(s.slave, O_RDWR | O_NOCTTY | O_NONBLOCK);
	cr_assert_geq(fd, 0, "%s", s.slave);
	cr_assert_eq(tcgetattr(fd, &tio), 0);
	cr_expect_eq(cfgetospeed(&tio), B460800, "the port is not at 460800 baud");
	close(fd);
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	cr_assert_str_eq(info.model, "ESP32-C3 v0.4");
	drv_close(d);

	snprintf(uri, sizeof(uri), "esp32:%s?baud=57600", s.slave);
	cr_assert_eq(drv_open(uri, &o, &d), ST_E_CONFIG);
	cr_assert(strstr(drv_errmsg(d), "not one the host can set") &&
		  strstr(drv_errmsg(d), "921600"), "%s", drv_errmsg(d));
	drv_close(d);
	fx_esp_sim_stop(&s);
	rmtree(dir);
}

Test(esp32, profile_digest_is_espsecures, .timeout = 60)
{
	char *dir = tmpdir(), hex[65];
	plan_ctx p;

	plan_load(&p, true);
	sbv2_digest(dir, hex);
	cr_assert_str_eq(p.rot_hex, hex, "profiles/esp32c3.profile names %s, espsecure "
			 "digest_sbv2_public_key of its key gives %s", p.rot_hex, hex);
	rmtree(dir);
}

/* The plan before the lock: the chip as espefuse reads it equals what
 * espefuse --virt makes of the same burns from the same blank chip; a
 * second run burns nothing. */
Test(esp32, plan_equals_espefuse_replay_before_the_lock, .timeout = 300)
{
	char *dir = tmpdir(), f[300], digest[65], key0[200];
	static run_log log;
	st_fuse_run run;
	fx_esp_sim s;
	plan_ctx p;
	json_t *chip, *ref;
	int rc;

	plan_load(&p, false);
	blank_chip(&s, dir, NULL);
	rc = run_plan(s.slave, &p.plan, NULL, &log, &run, NULL);
	cr_assert_eq(rc, ST_OK, "%s\n%s", run.reason, log.text);
	cr_assert_eq(run.summary, ST_FUSES_BURNED);
	chip = summary_online(s.slave);
	snprintf(f, sizeof(f), "%s/blank.bin", dir);
	replay_plan(f, false);
	ref = fx_esp_summary_virt(f);
	same_efuses(chip, ref, "before the lock");
	sbv2_digest(dir, digest);
	spaced_hex(sval(chip, "BLOCK_KEY0"), key0, sizeof(key0));
	cr_assert_str_eq(key0, digest);
	cr_assert_str_eq(sval(chip, "KEY_PURPOSE_0"), "SECURE_BOOT_DIGEST0");
	cr_assert(!writeable(chip, "BLOCK_KEY0") && !writeable(chip, "KEY_PURPOSE_0"));
	json_decref(ref);
	json_decref(chip);
	/* Again: every field verified, nothing burned. */
	memset(&log, 0, sizeof(log));
	rc = run_plan(s.slave, &p.plan, NULL, &log, &run, NULL);
	cr_assert_eq(rc, ST_OK, "%s", run.reason);
	cr_assert_eq(run.summary, ST_FUSES_ALREADY, "%s", log.text);
	cr_assert_null(strstr(log.text, "fuse-intent"), "%s", log.text);
	fx_esp_sim_stop(&s);
	rmtree(dir);
}

/* The whole plan with the lock: online, espefuse meets Secure Download
 * Mode; offline, the exported eFuses show the plan, with no errors. */
Test(esp32, lock_is_real_and_the_exported_efuses_show_the_plan, .timeout = 300)
{
	char *dir = tmpdir(), f[300], args[800], digest[65], key0[200];
	static char out[OUTCAP];
	static run_log log;
	st_fuse_run run;
	fx_esp_sim s;
	plan_ctx p;
	json_t *img, *ref;
	int rc;

	plan_load(&p, true);
	blank_chip(&s, dir, NULL);
	rc = run_plan(s.slave, &p.plan, NULL, &log, &run, NULL);
	cr_assert_eq(rc, ST_OK, "%s\n%s", run.reason, log.text);
	cr_assert(strstr(log.text, "lifecycle ok: lifecycle locked set and read back"),
		  "%s", log.text);
	snprintf(args, sizeof(args), "--port %s --before no_reset --do-not-confirm "
		 "summary --format json", s.slave);
	rc = fx_esp_tool("espefuse", args, out, sizeof(out), 60);
	cr_assert_neq(rc, 0, "espefuse read a locked chip: %s", out);
	cr_assert(strstr(out, "Secure Download Mode is enabled"), "%s", out);
	/* the station, opening the locked chip afresh, cannot identify it */
	{
		drv_opts o = { .timeout_ms = 1000 };
		drv_dev *d = NULL;
		drv_info info;
		char uri[700];

		snprintf(uri, sizeof(uri), "esp32:%s", s.slave);
		cr_assert_eq(drv_open(uri, &o, &d), ST_OK, "%s", drv_errmsg(d));
		cr_assert_eq(drv_identify(d, &info), ST_E_LOCKED);
		cr_assert(strstr(drv_errmsg(d), "the chip is locked (Secure Download "
				 "Mode)"), "%s", drv_errmsg(d));
		drv_close(d);
	}
	fx_esp_sim_stop(&s);
	snprintf(f, sizeof(f), "%s/locked.bin", dir);
	fx_esp_export_efuses(s.state, f);
	img = fx_esp_summary_virt(f);
	sbv2_digest(dir, digest);
	spaced_hex(sval(img, "BLOCK_KEY0"), key0, sizeof(key0));
	cr_assert_str_eq(key0, digest);
	cr_assert_str_eq(sval(img, "KEY_PURPOSE_0"), "SECURE_BOOT_DIGEST0");
	cr_assert(!writeable(img, "BLOCK_KEY0"), "KEY0 not write-protected");
	cr_assert(!writeable(img, "KEY_PURPOSE_0"), "its purpose not write-protected");
	cr_assert_str_eq(sval(img, "SECURE_BOOT_EN"), "true");
	cr_assert_str_eq(sval(img, "DIS_USB_JTAG"), "true");
	cr_assert_str_eq(sval(img, "DIS_PAD_JTAG"), "true");
	cr_assert_eq(ival(img, "SOFT_DIS_JTAG"), 7);
	cr_assert_str_eq(sval(img, "DIS_DOWNLOAD_ICACHE"), "true");
	cr_assert_str_eq(sval(img, "ENABLE_SECURITY_DOWNLOAD"), "true");
	cr_assert_eq(fx_esp_virt(f, "check_error", out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "No errors detected"), "%s", out);
	/* and the same as the replay of the plan with the lock */
	snprintf(f, sizeof(f), "%s/blank.bin", dir);
	replay_plan(f, true);
	ref = fx_esp_summary_virt(f);
	same_efuses(img, ref, "after the lock");
	json_decref(ref);
	json_decref(img);
	rmtree(dir);
}

/* Quarantine cases: the run refuses before anything burns, and the chip
 * reads as before, by espefuse. */
static void refused(const char *extra, const char *preburn, const char *why)
{
	char *dir = tmpdir(), f[300];
	static char out[OUTCAP];
	static run_log log;
	st_fuse_run run;
	fx_esp_sim s;
	plan_ctx p;
	json_t *before, *after;
	int rc;

	plan_load(&p, true);
	blank_chip(&s, dir, extra);
	if (preburn) {
		char args[1200];

		snprintf(args, sizeof(args), "--port %s --before no_reset --do-not-confirm "
			 "%s", s.slave, preburn);
		cr_assert_eq(fx_esp_tool("espefuse", args, out, sizeof(out), 60), 0, "%s",
			     out);
	}
	fx_esp_sim_stop(&s);
	snprintf(f, sizeof(f), "%s/before.bin", dir);
	fx_esp_export_efuses(s.state, f);
	before = fx_esp_summary_virt(f);
	cr_assert_eq(fx_esp_sim_start(&s, dir, "c3", extra), 0);
	rc = run_plan(s.slave, &p.plan, NULL, &log, &run, NULL);
	cr_assert_eq(rc, ST_E_FUSE_CONFLICT, "rc %d: %s\n%s", rc, run.reason, log.text);
	cr_assert(run.quarantine, "not quarantined: %s", run.reason);
	cr_assert(strstr(run.reason, why), "reason: %s", run.reason);
	cr_assert_null(strstr(log.text, "fuse-intent"), "something was burned:\n%s",
		       log.text);
	fx_esp_sim_stop(&s);
	snprintf(f, sizeof(f), "%s/after.bin", dir);
	fx_esp_export_efuses(s.state, f);
	after = fx_esp_summary_virt(f);
	same_efuses(before, after, "a refused unit");
	json_decref(before);
	json_decref(after);
	rmtree(dir);
}

Test(esp32, key_block_with_another_digest_quarantines_nothing_burned, .timeout = 300)
{
	/* Another digest in KEY0 with the same purpose, written by espefuse
	 * itself: only the digest differs from the plan. */
	refused(NULL, "burn_efuse BLOCK_KEY0 0x1111111111111111111111111111111111111111"
		"111111111111111111111111 KEY_PURPOSE_0 SECURE_BOOT_DIGEST0",
		"fuse field sb-digest (bank 4) holds a different value");
}

Test(esp32, rs_error_in_the_key_block_quarantines, .timeout = 300)
{
	refused("--fault efuse-flip:4:5", NULL, "half-programmed");
}

Test(esp32, write_protected_key_block_quarantines_nothing_burned, .timeout = 300)
{
	char *dir = tmpdir(), f[300];
	static run_log log;
	st_fuse_run run;
	fx_esp_sim s;
	plan_ctx p;
	json_t *before, *after;
	int rc;

	plan_load(&p, true);
	blank_chip(&s, dir, "--fault wr-protect:4");
	fx_esp_sim_stop(&s);
	snprintf(f, sizeof(f), "%s/before.bin", dir);
	fx_esp_export_efuses(s.state, f);
	before = fx_esp_summary_virt(f);
	cr_assert_eq(fx_esp_sim_start(&s, dir, "c3", "--fault wr-protect:4"), 0);
	rc = run_plan(s.slave, &p.plan, NULL, &log, &run, NULL);
	cr_assert_eq(rc, ST_E_FUSE_CONFLICT, "rc %d: %s", rc, run.reason);
	cr_assert(run.quarantine);
	cr_assert(strstr(run.reason, "write-protected"), "%s", run.reason);
	fx_esp_sim_stop(&s);
	snprintf(f, sizeof(f), "%s/after.bin", dir);
	fx_esp_export_efuses(s.state, f);
	after = fx_esp_summary_virt(f);
	same_efuses(before, after, "write-protected KEY0");
	json_decref(before);
	json_decref(after);
	rmtree(dir);
}

/* 1 % of the bytes either way corrupted or dropped: the plan still
 * completes (retries, re-reads, checked writes) and the chip holds exactly
 * what the clean replay gives. */
Test(esp32, one_percent_line_noise_still_completes, .timeout = 600)
{
	char *dir = tmpdir(), f[300];
	static run_log log;
	drv_linkstat st;
	st_fuse_run run;
	fx_esp_sim s;
	plan_ctx p;
	json_t *chip, *ref;
	int rc;

	plan_load(&p, false);
	blank_chip(&s, dir, "--fault noise:1 --seed noisy");
	rc = run_plan(s.slave, &p.plan, NULL, &log, &run, &st);
	cr_assert_eq(rc, ST_OK, "%s\n%s", run.reason, log.text);
	cr_assert_gt(st.retries + st.garbled, 0, "no noise seen");
	fx_esp_sim_stop(&s);
	cr_assert_eq(fx_esp_sim_start(&s, dir, "c3", NULL), 0);
	chip = summary_online(s.slave);
	snprintf(f, sizeof(f), "%s/blank.bin", dir);
	replay_plan(f, false);
	ref = fx_esp_summary_virt(f);
	same_efuses(chip, ref, "under noise");
	json_decref(chip);
	json_decref(ref);
	fx_esp_sim_stop(&s);
	rmtree(dir);
}

/* A station killed (SIGKILL) while it drives a burn: the next run, told
 * of the open intents as the records would tell it, completes or verifies
 * every field, and the chip ends as the clean replay. */
static void killed_mid_burn(int which, int ms)
{
	char *dir = tmpdir(), f[300], steps[300], line[1024];
	static run_log log;
	st_fuse_resume res;
	st_fuse_run run;
	fx_esp_sim s;
	plan_ctx p;
	json_t *chip, *ref;
	pid_t pid;
	int st, rc;
	FILE *in;

	plan_load(&p, false);
	blank_chip(&s, dir, NULL);
	snprintf(steps, sizeof(steps), "%s/steps", dir);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		memset(&log, 0, sizeof(log));
		log.kill_after = which;
		log.kill_ms = ms;
		log.steps = fopen(steps, "w");
		run_plan(s.slave, &p.plan, NULL, &log, &run, NULL);
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the run was not killed");
	memset(&res, 0, sizeof(res));
	in = fopen(steps, "r");
	cr_assert_not_null(in);
	while (fgets(line, sizeof(line), in)) {
		char *o = strchr(line, '\t'), *dt = o ? strchr(o + 1, '\t') : NULL;

		cr_assert_not_null(dt);
		*o++ = '\0';
		*dt++ = '\0';
		dt[strcspn(dt, "\n")] = '\0';
		st_fuse_resume_step(&res, line, o, dt);
	}
	fclose(in);
	cr_assert_eq(res.nintents, 1, "open intents: %s", res.pending);
	memset(&log, 0, sizeof(log));
	rc = run_plan(s.slave, &p.plan, &res, &log, &run, NULL);
	cr_assert_eq(rc, ST_OK, "%s\n%s", run.reason, log.text);
	cr_assert(strstr(log.text, "had an intent without outcome"), "%s", log.text);
	chip = summary_online(s.slave);
	snprintf(f, sizeof(f), "%s/blank.bin", dir);
	replay_plan(f, false);
	ref = fx_esp_summary_virt(f);
	same_efuses(chip, ref, "after a kill mid-burn");
	json_decref(chip);
	json_decref(ref);
	fx_esp_sim_stop(&s);
	rmtree(dir);
}

Test(esp32_kill, during_the_key_digest_burn, .timeout = 300)
{
	killed_mid_burn(1, 4);
}

Test(esp32_kill, during_a_block0_burn, .timeout = 300)
{
	killed_mid_burn(3, 8);
}

Test(esp32_kill, right_at_a_write_protect_intent, .timeout = 300)
{
	killed_mid_burn(6, 1);
}

/* Flash: FLASH_BEGIN/DATA/END, verified by the chip's MD5; a write killed
 * halfway resumes from what the chip confirms, and esptool verify_flash
 * agrees with the result. */
Test(esp32, flash_write_resumes_after_a_kill_and_esptool_verifies, .timeout = 300)
{
	char *dir = tmpdir(), uri[700], img_path[600], args[1800];
	static char out[OUTCAP];
	static uint8_t data[512 * 1024];
	drv_opts o = { .timeout_ms = 2000 };
	drv_slot_info si;
	drv_image img = { .address = 0x10000, .data = data, .len = sizeof(data) };
	uint32_t from = 0;
	drv_dev *d = NULL;
	fx_esp_sim s;
	pid_t pid;
	int st;
	FILE *fp;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + i / 251);
	cr_assert_eq(fx_esp_sim_start(&s, dir, "c3", NULL), 0);
	snprintf(uri, sizeof(uri), "esp32:%s", s.slave);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		if (drv_open(uri, &o, &d))
			_exit(2);
		drv_image_write(d, &img, &from);
		_exit(0);
	}
	/* SIGKILL once the chip's flash (the simulator's mapped file) holds
	 * the image's 200th KiB: a write cut in its middle. */
	snprintf(img_path, sizeof(img_path), "%s.flash", s.state);
	for (int i = 0; i < 3000; i++) {
		uint8_t got[1024];
		FILE *fl = fopen(img_path, "rb");

		if (fl && !fseek(fl, 0x10000 + 200 * 1024, SEEK_SET) &&
		    fread(got, 1, sizeof(got), fl) == sizeof(got) &&
		    !memcmp(got, data + 200 * 1024, sizeof(got))) {
			fclose(fl);
			kill(pid, SIGKILL);
			break;
		}
		if (fl)
			fclose(fl);
		usleep(2000);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st), "the write finished before the kill (status %d)", st);
	cr_assert_eq(drv_open(uri, &o, &d), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(drv_image_write(d, &img, &from), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(drv_image_info(d, &img, &si), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(si.stored, sizeof(data));
	drv_close(d);
	cr_assert_gt(from, 0, "nothing resumed: the kill came before any block");
	cr_assert_lt(from, sizeof(data));
	snprintf(img_path, sizeof(img_path), "%s/app.bin", dir);
	fp = fopen(img_path, "wb");
	cr_assert_eq(fwrite(data, 1, sizeof(data), fp), sizeof(data));
	fclose(fp);
	snprintf(args, sizeof(args), "--port %s --before no_reset --after no_reset "
		 "--no-stub verify_flash 0x10000 %s", s.slave, img_path);
	cr_assert_eq(fx_esp_tool("esptool", args, out, sizeof(out), 120), 0, "%s", out);
	cr_assert(strstr(out, "verify OK"), "%s", out);
	fx_esp_sim_stop(&s);
	rmtree(dir);
}

/* ---- the station binary with a C3 in the slot ---- */

/* A world whose profile is profiles/esp32c3.profile, with the example
 * images and key it names beside it; device_keys: key_mode = "device"
 * instead of its esp_secure_cert. */
static void c3_world_mode(fx_world *w, bool device_keys)
{
	static char text[16384];
	char path[600], cmd[4000], *m;
	fx_world_opts o = { .with_ca = true, .timeout_ms = 1000, .profile = text,
			    .profile_file = "esp32c3.profile" };
	FILE *f;
	size_t n;

	top(path, sizeof(path), "profiles/esp32c3.profile");
	f = fopen(path, "r");
	cr_assert_not_null(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	if (device_keys) {
		m = strstr(text, "key_mode = \"esp_secure_cert\";");
		cr_assert_not_null(m);
		memcpy(m, "key_mode = \"device\";         ", strlen("key_mode = \"esp_secure_cert\";"));
	}
	fx_world_init_opts(w, &o);
	top(path, sizeof(path), "profiles");
	snprintf(cmd, sizeof(cmd), "cp %s/esp32c3-secureboot.pub.pem %s/esp32c3-bootloader.bin "
		 "%s/esp32c3-app.bin %s/esp32c3.cdx.json %s/", path, path, path, path, w->dir);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void c3_world(fx_world *w)
{
	c3_world_mode(w, false);
}

static json_t *field_shown(json_t *o, const char *name)
{
	json_t *f;
	size_t i;

	json_array_foreach(json_object_get(o, "fields"), i, f)
		if (!strcmp(json_string_value(json_object_get(f, "name")), name))
			return f;
	cr_assert_fail("field %s not shown", name);
	return NULL;
}

/* `station fuses show` reads the C3's eFuses through the driver against the
 * profile's plan: every field blank on a blank chip, a BLOCK0 field shown
 * as its own bits; after the plan ran, every field matches or is locked. */
Test(esp32_station, fuses_show_reads_the_plan_from_the_chip, .timeout = 300)
{
	char *dir = tmpdir(), slot[700];
	static fx_run r;
	static run_log log;
	st_fuse_run run;
	fx_world w;
	fx_esp_sim s;
	plan_ctx p;
	json_t *o;

	c3_world(&w);
	cr_assert_eq(fx_esp_sim_start(&s, dir, "c3", NULL), 0);
	snprintf(slot, sizeof(slot), "esp32:%s", s.slave);
	fx_station_run(&r, &w, "--json", "--slot", slot, "fuses", "show", NULL);
	cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
	o = json_loads(r.out, 0, NULL);
	cr_assert_not_null(o, "%s", r.out);
	cr_assert_str_eq(json_string_value(json_object_get(o, "model")), "ESP32-C3 v0.4");
	cr_assert_eq(json_integer_value(json_object_get(o, "banks")), 11);
	cr_assert_str_eq(json_string_value(json_object_get(field_shown(o, "sb-digest"),
							    "state")), "blank");
	cr_assert_str_eq(json_string_value(json_object_get(field_shown(o, "soft-dis-jtag"),
							    "target")), "00000700");
	cr_assert_str_eq(json_string_value(json_object_get(field_shown(o, "lock"),
							    "action")), "advance");
	json_decref(o);
	fx_esp_sim_stop(&s);
	/* the plan, without the lock, through the engine's fuse run */
	plan_load(&p, false);
	cr_assert_eq(fx_esp_sim_start(&s, dir, "c3", NULL), 0);
	cr_assert_eq(run_plan(s.slave, &p.plan, NULL, &log, &run, NULL), ST_OK, "%s",
		     run.reason);
	snprintf(slot, sizeof(slot), "esp32:%s", s.slave);
	fx_station_run(&r, &w, "--json", "--slot", slot, "fuses", "show", NULL);
	cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
	o = json_loads(r.out, 0, NULL);
	cr_assert_not_null(o, "%s", r.out);
	cr_assert_str_eq(json_string_value(json_object_get(field_shown(o, "sb-digest"),
							    "current")), p.rot_hex);
	cr_assert_str_eq(json_string_value(json_object_get(field_shown(o, "soft-dis-jtag"),
							    "state")), "matches");
	cr_assert_str_eq(json_string_value(json_object_get(field_shown(o, "wp-key0"),
							    "state")), "locked");
	json_decref(o);
	fx_esp_sim_stop(&s);
	fx_rmtree(w.dir);
	rmtree(dir);
}

/* A C3 profile asking the chip to make its own key (key_mode = "device"):
 * the plan is checked against the chip (nothing refuses it), then the
 * identity step fails with the driver's words (the ROM loader cannot make
 * or hold a key), the unit record says so, no certificate is issued and no
 * eFuse is burned. */
Test(esp32_station, device_key_mode_stops_at_the_identity_with_nothing_burned, .timeout = 300)
{
	char *dir = tmpdir(), slot[700], f[300], reason[1024];
	static fx_run r;
	fx_world w;
	fx_esp_sim s;
	json_t *before, *after;

	c3_world_mode(&w, true);
	blank_chip(&s, dir, NULL);
	snprintf(slot, sizeof(slot), "esp32:%s", s.slave);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", slot, "provision", NULL);
	cr_assert_neq(r.code, 0, "%s\n%s", r.out, r.err);
	fx_q_text(&w, "SELECT reason FROM units", reason, sizeof(reason));
	cr_assert(strstr(reason, "ROM loader cannot make, hold or use a device key"),
		  "reason: %s", reason);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'fuse-check' "
			      "AND outcome = 'ok'"), 1);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'fuse-intent'"), 0);
	cr_assert_eq(fx_q_int(&w, "SELECT count(*) FROM steps WHERE step = 'certificate'"), 0);
	fx_esp_sim_stop(&s);
	snprintf(f, sizeof(f), "%s/blank.bin", dir);
	before = fx_esp_summary_virt(f);
	snprintf(f, sizeof(f), "%s/after.bin", dir);
	fx_esp_export_efuses(s.state, f);
	after = fx_esp_summary_virt(f);
	same_efuses(before, after, "after provision");
	json_decref(before);
	json_decref(after);
	fx_rmtree(w.dir);
	rmtree(dir);
}

/* The other lock (the profile's esp32 { lock = "dis_download_mode"; }, a
 * driver option): DIS_DOWNLOAD_MODE burned, and after the reset the loader
 * never answers again, not even to esptool; the exported eFuses show it. */
Test(esp32, lock_by_disabling_download_mode_silences_the_loader, .timeout = 300)
{
	char *dir = tmpdir(), f[300], args[800];
	static char out[OUTCAP];
	static run_log log;
	static fx_run r;
	st_fuse_run run;
	fx_esp_sim s;
	plan_ctx p;
	fx_world w;
	json_t *img;
	char prof[600];
	int rc;

	/* the profile setting becomes the driver option */
	c3_world(&w);
	fx_path(prof, &w, "esp32c3.profile");
	{
		FILE *fp = fopen(prof, "a");

		cr_assert_not_null(fp);
		fputs("esp32: { lock = \"dis_download_mode\"; };\n", fp);
		fclose(fp);
	}
	fx_station_run(&r, &w, "config", "check", "--profile", prof, NULL);
	cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
	fx_rmtree(w.dir);
	plan_load(&p, true);
	cr_assert_eq(fx_esp_sim_start(&s, dir, "c3", NULL), 0);
	rc = run_plan_opts(s.slave, "lock=dis_download_mode", &p.plan, NULL, &log, &run,
			   NULL);
	cr_assert_eq(rc, ST_OK, "%s\n%s", run.reason, log.text);
	snprintf(args, sizeof(args), "--port %s --before no_reset --after no_reset "
		 "--no-stub chip_id", s.slave);
	rc = fx_esp_tool("esptool", args, out, sizeof(out), 60);
	cr_assert_neq(rc, 0, "esptool still talks to the chip: %s", out);
	fx_esp_sim_stop(&s);
	snprintf(f, sizeof(f), "%s/locked.bin", dir);
	fx_esp_export_efuses(s.state, f);
	img = fx_esp_summary_virt(f);
	cr_assert_str_eq(sval(img, "DIS_DOWNLOAD_MODE"), "true");
	cr_assert_str_eq(sval(img, "ENABLE_SECURITY_DOWNLOAD"), "false");
	json_decref(img);
	rmtree(dir);
}

/* A bad lock setting is refused when the profile loads, naming it. */
Test(esp32_station, bad_lock_setting_is_refused_at_load, .timeout = 120)
{
	static fx_run r;
	fx_world w;
	char prof[600];
	FILE *fp;

	c3_world(&w);
	fx_path(prof, &w, "esp32c3.profile");
	fp = fopen(prof, "a");
	cr_assert_not_null(fp);
	fputs("esp32: { lock = \"later\"; };\n", fp);
	fclose(fp);
	fx_station_run(&r, &w, "config", "check", "--profile", prof, NULL);
	cr_assert_eq(r.code, 2, "%s%s", r.out, r.err);
	cr_assert(strstr(r.err, "'esp32.lock' 'later' is not secure_download or "
			 "dis_download_mode"), "%s", r.err);
	fx_rmtree(w.dir);
}

/* ---- another chip in the fixture ----
 * The simulated C3 cannot be another chip, so a few lines here answer as
 * an ESP32 (not C3) ROM would: SYNC, no GET_SECURITY_INFO (the ESP32 ROM
 * refuses it), and its chip-detect magic 0x00f01d83. */

struct other_chip {
	int master;
	volatile int stop;
};

static void *other_chip_serve(void *arg)
{
	struct other_chip *oc = arg;
	static esp_slip_rx rx;
	uint8_t buf[512], pkt[64], enc[160];

	esp_slip_rx_init(&rx);
	while (!oc->stop) {
		struct pollfd p = { .fd = oc->master, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 50) <= 0)
			continue;
		n = read(oc->master, buf, sizeof(buf));
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			esp_req rq;
			size_t len = 0, m;

			if (esp_slip_rx_byte(&rx, buf[i]) != ESP_SLIP_FRAME ||
			    esp_req_parse(rx.buf, rx.len, &rq))
				continue;
			if (rq.op == ESP_OP_SYNC)
				len = esp_resp_build(rq.op, 0x20120707, NULL, 0, 0, 0, 4,
						     pkt, sizeof(pkt));
			else if (rq.op == ESP_OP_READ_REG &&
				 esp_le32(rq.data) == ESP_CHIP_DETECT_MAGIC_REG)
				len = esp_resp_build(rq.op, 0x00f01d83, NULL, 0, 0, 0, 4,
						     pkt, sizeof(pkt));
			else
				len = esp_resp_build(rq.op, 0, NULL, 0, 1,
						     ESP_ROM_ERR_INVALID_MSG, 4, pkt,
						     sizeof(pkt));
			m = esp_slip_encode(pkt, len, enc, sizeof(enc));
			if (write(oc->master, enc, m) != (ssize_t)m)
				break;
		}
	}
	return NULL;
}

Test(esp32, another_chip_is_refused_naming_port_and_chip, .timeout = 60)
{
	struct other_chip oc = { 0 };
	char name[128], uri[160];
	drv_opts o = { .timeout_ms = 500 };
	drv_dev *d = NULL;
	pthread_t t;
	int slave, rc;

	cr_assert_eq(openpty(&oc.master, &slave, name, NULL, NULL), 0);
	cr_assert_eq(pthread_create(&t, NULL, other_chip_serve, &oc), 0);
	snprintf(uri, sizeof(uri), "esp32:%s", name);
	rc = drv_open(uri, &o, &d);
	cr_assert_eq(rc, ST_E_DEVICE, "rc %d: %s", rc, drv_errmsg(d));
	cr_assert(strstr(drv_errmsg(d), name), "%s", drv_errmsg(d));
	cr_assert(strstr(drv_errmsg(d), "not an ESP32-C3 (chip-detect magic 0x00f01d83, "
			 "an ESP32)"), "%s", drv_errmsg(d));
	drv_close(d);
	oc.stop = 1;
	pthread_join(t, NULL);
	close(slave);
	close(oc.master);
}

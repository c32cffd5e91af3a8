/* test_esp32_sim.c — the simulated ESP32-C3 (station-devsim --model
 * esp32c3) judged by Espressif's own tools, never by our driver: esptool
 * and espefuse 4.7.0 on the sim's pty, and espefuse --virt (Espressif's
 * model of the eFuse controller) replaying the same burns from the sim's
 * exported blank eFuses.  Summaries are compared as JSON. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "device-drivers/proto/esp_rom.h"
#include "tests/fixtures/fx_esp.h"

#define OUT_CAP 65536

static char tmpdir[64];
static char out[OUT_CAP];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-esp32-sim-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
	if (tmpdir[0])
		nftw(tmpdir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(esp32sim, .init = setup, .fini = teardown, .timeout = 240);

/* tmpdir/name */
static const char *tp(const char *name)
{
	static char p[8][256];
	static int k;

	k = (k + 1) % 8;
	snprintf(p[k], sizeof(p[k]), "%s/%s", tmpdir, name);
	return p[k];
}

/* espefuse on the sim's pty; returns the exit status, output in out. */
static int efuse(const fx_esp_sim *s, const char *args)
{
	return fx_esp_on("espefuse", s, args, out, sizeof(out));
}

/* espefuse --virt on an eFuse image file. */
static int vefuse(const char *file, const char *args)
{
	return fx_esp_virt(file, args, out, sizeof(out));
}

/* esptool on the sim's pty (ROM only, no reset lines). */
static int esptool(const fx_esp_sim *s, const char *args)
{
	return fx_esp_on("esptool", s, args, out, sizeof(out));
}

/* summary --format json of the sim (virt NULL) or of a virt file. */
static json_t *summary(const fx_esp_sim *s, const char *virt)
{
	char args[512];
	const char *f = tp(virt ? "virt-summary.json" : "sim-summary.json");
	json_error_t err;
	json_t *j;
	int rc;

	snprintf(args, sizeof(args), "summary --format json --file %s", f);
	rc = virt ? vefuse(virt, args) : efuse(s, args);
	cr_assert_eq(rc, 0, "espefuse summary failed:\n%s", out);
	j = json_load_file(f, 0, &err);
	cr_assert_not_null(j, "summary is not JSON: %s", err.text);
	return j;
}

static const char *value_str(json_t *sum, const char *field)
{
	json_t *v = json_object_get(json_object_get(sum, field), "value");

	cr_assert_not_null(v, "no field %s in the summary", field);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static json_int_t value_int(json_t *sum, const char *field)
{
	json_t *v = json_object_get(json_object_get(sum, field), "value");

	cr_assert_not_null(v, "no field %s in the summary", field);
	if (json_is_true(v))
		return 1;
	if (json_is_false(v))
		return 0;
	cr_assert(json_is_integer(v), "%s is not a number", field);
	return json_integer_value(v);
}

static int bool_of(json_t *sum, const char *field, const char *key)
{
	json_t *v = json_object_get(json_object_get(sum, field), key);

	cr_assert(json_is_boolean(v), "%s.%s is not a boolean", field, key);
	return json_is_true(v);
}

/* Every field the two summaries disagree on, in msg; 0 when equal. */
static int summary_diff(json_t *a, json_t *b, char *msg, size_t cap)
{
	const char *k;
	json_t *v;
	int n = 0;
	size_t len = 0;

	msg[0] = '\0';
	json_object_foreach(a, k, v) {
		if (!json_equal(v, json_object_get(b, k))) {
			char *x = json_dumps(json_object_get(v, "value"), JSON_ENCODE_ANY);
			char *y = json_dumps(json_object_get(json_object_get(b, k), "value"),
					     JSON_ENCODE_ANY);

			len += (size_t)snprintf(msg + len, len < cap ? cap - len : 0,
						"%s: sim %s, virt %s\n", k, x ? x : "-",
						y ? y : "-");
			free(x);
			free(y);
			n++;
		}
	}
	json_object_foreach(b, k, v)
		if (!json_object_get(a, k))
			n++;
	return n;
}

/* Stop a sim that must have exited cleanly (no sanitizer report, no
 * crash). */
static void stop_ok(fx_esp_sim *s)
{
	fx_esp_sim_stop(s);
	cr_assert_eq(s->exit_status, 0, "the simulated chip exited %d", s->exit_status);
}

static void start(fx_esp_sim *s, const char *name, const char *extra)
{
	char args[512];

	snprintf(args, sizeof(args), "--seed %s%s%s", name, extra ? " " : "",
		 extra ? extra : "");
	cr_assert_eq(fx_esp_sim_start(s, tmpdir, name, args), 0);
}

/* --efuse-image / --flash-image of a (stopped) sim's state. */
static void export(const fx_esp_sim *s, const char *opt, const char *file,
		   const char *extra)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd), "%s/station-devsim --model esp32c3 --state %s %s %s %s",
		 getenv("STATION_BUILD"), s->state, opt, file, extra ? extra : "");
	cr_assert_eq(system(cmd), 0, "%s failed", cmd);
}

static void make_files(void)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "openssl genrsa -out %s 3072 2>/dev/null && "
		 "head -c 32 /dev/urandom > %s", tp("sb.pem"), tp("hmac.bin"));
	cr_assert_eq(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "digest_sbv2_public_key --keyfile %s -o %s",
		 tp("sb.pem"), tp("digest.bin"));
	cr_assert_eq(fx_esp_tool("espsecure", cmd, out, sizeof(out), 60), 0,
		     "espsecure: %s", out);
}

/* The digest file as espefuse prints a key block ("7e fd ..."). */
static void digest_hex(char *hex, size_t cap)
{
	uint8_t d[32];
	FILE *f = fopen(tp("digest.bin"), "rb");

	cr_assert_not_null(f);
	cr_assert_eq(fread(d, 1, 32, f), 32);
	fclose(f);
	cr_assert_geq(cap, 3 * 32);
	for (int i = 0; i < 32; i++)
		snprintf(hex + (i ? 3 * i - 1 : 0), 4, i ? " %02x" : "%02x", d[i]);
}

Test(esp32sim, esptool_reports_the_c3_and_its_seeded_mac)
{
	fx_esp_sim a, b, clone;
	char mac_a[32] = "", mac_b[32] = "", mac_c[32] = "";
	char *m;

	start(&a, "unit-a", NULL);
	start(&b, "unit-b", NULL);
	cr_assert_eq(fx_esp_sim_start(&clone, tmpdir, "clone", "--seed unit-a"), 0);
	cr_assert_eq(esptool(&a, "read_mac"), 0, "%s", out);
	cr_assert_not_null(strstr(out, "Chip is ESP32-C3 (QFN32) (revision v0.4)"), "%s", out);
	cr_assert_not_null(m = strstr(out, "MAC: "), "%s", out);
	sscanf(m + 5, "%17s", mac_a);
	cr_assert_eq(esptool(&b, "chip_id"), 0, "%s", out);
	cr_assert_not_null(m = strstr(out, "MAC: "), "%s", out);
	sscanf(m + 5, "%17s", mac_b);
	cr_assert_eq(esptool(&clone, "read_mac"), 0, "%s", out);
	cr_assert_not_null(m = strstr(out, "MAC: "), "%s", out);
	sscanf(m + 5, "%17s", mac_c);
	cr_assert_eq(strlen(mac_a), 17);
	cr_assert_str_neq(mac_a, mac_b, "two seeds, two MACs");
	cr_assert_str_eq(mac_a, mac_c, "a --seed clone collides");
	/* espefuse reads the same MAC from BLOCK1, RS-clean. */
	json_t *sum = summary(&a, NULL);
	const char *mac = value_str(sum, "MAC");
	cr_assert_not_null(mac);
	cr_assert_eq(strncmp(mac, mac_a, 17), 0, "espefuse MAC %s, esptool %s", mac, mac_a);
	cr_assert_not_null(strstr(mac, "(OK)"), "%s", mac);
	cr_assert_eq(value_int(sum, "WAFER_VERSION_MINOR_LO"), 4);
	cr_assert_str_eq(value_str(sum, "BLK_VERSION_MAJOR"), "With calibration");
	json_decref(sum);
	stop_ok(&a);
	stop_ok(&b);
	stop_ok(&clone);
}

/* The same burns through the sim and through espefuse --virt started from
 * the sim's blank eFuse image end in the same summary. */
Test(esp32sim, burns_match_espefuse_virt)
{
	fx_esp_sim s;
	char virt[256];
	char cmd[1024], diff[8192], hex[100];
	const char *burns[4];
	json_t *a, *b;

	make_files();
	snprintf(virt, sizeof(virt), "%s", tp("virt.efuse"));
	start(&s, "unit", NULL);
	stop_ok(&s);
	export(&s, "--efuse-image", virt, NULL);
	start(&s, "unit", NULL);
	snprintf(cmd, sizeof(cmd), "burn_key BLOCK_KEY0 %s SECURE_BOOT_DIGEST0", tp("digest.bin"));
	burns[0] = strdup(cmd);
	snprintf(cmd, sizeof(cmd), "burn_key BLOCK_KEY1 %s HMAC_UP", tp("hmac.bin"));
	burns[1] = strdup(cmd);
	burns[2] = "burn_efuse SECURE_BOOT_EN 1 DIS_USB_JTAG 1 DIS_PAD_JTAG 1 "
		   "SOFT_DIS_JTAG 7 DIS_DOWNLOAD_ICACHE 1";
	burns[3] = "write_protect_efuse BLOCK_KEY0 KEY_PURPOSE_0 SECURE_BOOT_EN";
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(efuse(&s, burns[i]), 0, "sim: %s\n%s", burns[i], out);
		cr_assert_eq(vefuse(virt, burns[i]), 0, "virt: %s\n%s", burns[i], out);
	}
	a = summary(&s, NULL);
	b = summary(NULL, virt);
	cr_assert_eq(summary_diff(a, b, diff, sizeof(diff)), 0,
		     "the sim and espefuse --virt disagree:\n%s", diff);
	/* And what they agree on is what was burned. */
	digest_hex(hex, sizeof(hex));
	cr_assert_str_eq(value_str(a, "BLOCK_KEY0"), hex);
	cr_assert_str_eq(value_str(a, "KEY_PURPOSE_0"), "SECURE_BOOT_DIGEST0");
	cr_assert_str_eq(value_str(a, "KEY_PURPOSE_1"), "HMAC_UP");
	cr_assert_not(bool_of(a, "BLOCK_KEY1", "readable"), "an HMAC key is read-protected");
	cr_assert_not(bool_of(a, "BLOCK_KEY0", "writeable"));
	cr_assert_not(bool_of(a, "KEY_PURPOSE_0", "writeable"));
	cr_assert_not(bool_of(a, "SECURE_BOOT_EN", "writeable"));
	cr_assert(bool_of(a, "BLOCK_KEY2", "writeable"));
	cr_assert_eq(value_int(a, "SECURE_BOOT_EN"), 1);
	cr_assert_eq(value_int(a, "SOFT_DIS_JTAG"), 7);
	json_decref(a);
	json_decref(b);
	/* No coding errors anywhere on the chip. */
	cr_assert_eq(efuse(&s, "check_error"), 0, "%s", out);
	cr_assert_null(strstr(out, "Error(s)"), "%s", out);
	/* The exported image, read by espefuse --virt alone: key, purpose,
	 * write protection, no RS errors. */
	stop_ok(&s);
	export(&s, "--efuse-image", tp("lab.efuse"), NULL);
	a = summary(NULL, tp("lab.efuse"));
	cr_assert_str_eq(value_str(a, "BLOCK_KEY0"), hex);
	cr_assert_str_eq(value_str(a, "KEY_PURPOSE_0"), "SECURE_BOOT_DIGEST0");
	cr_assert_not(bool_of(a, "BLOCK_KEY0", "writeable"));
	cr_assert_eq(value_int(a, "SECURE_BOOT_EN"), 1);
	cr_assert_eq(value_int(a, "DIS_PAD_JTAG"), 1);
	cr_assert_eq(value_int(a, "DIS_USB_JTAG"), 1);
	json_decref(a);
	cr_assert_eq(vefuse(tp("lab.efuse"), "check_error"), 0, "%s", out);
	cr_assert_null(strstr(out, "Error(s)"), "%s", out);
	free((void *)burns[0]);
	free((void *)burns[1]);
}

/* A burn that changes nothing physical is refused by the chip, not only
 * by espefuse: with the block's WR_DIS bit burned (fault wr-protect), even
 * a forced burn leaves the block blank. */
Test(esp32sim, write_protected_block_refuses_the_burn)
{
	fx_esp_sim s;
	char cmd[1024];
	json_t *a;

	make_files();
	start(&s, "unit", "--fault wr-protect:6");
	a = summary(&s, NULL);
	cr_assert_not(bool_of(a, "BLOCK_KEY2", "writeable"));
	cr_assert(bool_of(a, "BLOCK_KEY3", "writeable"));
	json_decref(a);
	snprintf(cmd, sizeof(cmd), "burn_key BLOCK_KEY2 %s SECURE_BOOT_DIGEST0",
		 tp("digest.bin"));
	cr_assert_neq(efuse(&s, cmd), 0, "espefuse burned a write-protected block");
	cr_assert_not_null(strstr(out, "write-protected"), "%s", out);
	/* Past espefuse's own check: the chip's controller still burns nothing. */
	snprintf(cmd, sizeof(cmd), "burn_block_data --force-write-always BLOCK_KEY2 %s",
		 tp("digest.bin"));
	cr_assert_neq(efuse(&s, cmd), 0, "a forced burn of a protected block: %s", out);
	cr_assert_not_null(strstr(out, "Burn BLOCK_KEY2 (['BLOCK6']) was not successful"),
			   "%s", out);
	a = summary(&s, NULL);
	cr_assert_str_eq(value_str(a, "BLOCK_KEY2"),
			 "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
			 "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00");
	json_decref(a);
	stop_ok(&s);
}

/* ENABLE_SECURITY_DOWNLOAD takes effect at the next reset: then espefuse
 * cannot read eFuses, esptool sees Secure Download Mode, and flash writes
 * still work. */
Test(esp32sim, secure_download_mode_after_reset)
{
	fx_esp_sim s;
	char cmd[1024], img[1024];
	FILE *f;
	uint8_t data[8192], got[8192];

	start(&s, "unit", NULL);
	cr_assert_eq(efuse(&s, "burn_efuse ENABLE_SECURITY_DOWNLOAD 1"), 0, "%s", out);
	/* Before a reset the loader is still the open one. */
	cr_assert_eq(efuse(&s, "summary --format json --file /dev/null"), 0, "%s", out);
	kill(s.pid, SIGHUP);                  /* the EN pin */
	usleep(200000);
	cr_assert_neq(efuse(&s, "summary"), 0, "espefuse read a chip in SDM");
	cr_assert_not_null(strstr(out, "Secure Download Mode is enabled. The tool can not "
				  "read eFuses."), "%s", out);
	cr_assert_eq(esptool(&s, "get_security_info"), 0, "%s", out);
	cr_assert_not_null(strstr(out, "Chip is ESP32-C3 in Secure Download Mode"), "%s", out);
	cr_assert_neq(esptool(&s, "read_mac"), 0, "register reads are refused in SDM");
	cr_assert_not_null(strstr(out, "not supported in Secure Download Mode"), "%s", out);
	/* Flash writes are allowed. */
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 3);
	f = fopen(tp("app.bin"), "wb");
	cr_assert_eq(fwrite(data, 1, sizeof(data), f), sizeof(data));
	fclose(f);
	snprintf(cmd, sizeof(cmd), "write_flash --flash_size 4MB 0x30000 %s", tp("app.bin"));
	cr_assert_eq(esptool(&s, cmd), 0, "%s", out);
	stop_ok(&s);
	snprintf(img, sizeof(img), "%s", tp("flash.img"));
	export(&s, "--flash-image", img, NULL);
	f = fopen(img, "rb");
	cr_assert_not_null(f);
	cr_assert_eq(fseek(f, 0x30000, SEEK_SET), 0);
	cr_assert_eq(fread(got, 1, sizeof(got), f), sizeof(got));
	fclose(f);
	cr_assert_arr_eq(got, data, sizeof(data));
	/* The state file kept the fuse: a power cycle comes back in SDM. */
	start(&s, "unit", NULL);
	cr_assert_neq(efuse(&s, "summary"), 0);
	cr_assert_not_null(strstr(out, "Secure Download Mode is enabled"), "%s", out);
	stop_ok(&s);
	export(&s, "--efuse-image", tp("lab.efuse"), NULL);
	json_t *a = summary(NULL, tp("lab.efuse"));
	cr_assert_eq(value_int(a, "ENABLE_SECURITY_DOWNLOAD"), 1);
	json_decref(a);
}

Test(esp32sim, download_mode_disabled_means_no_answer)
{
	fx_esp_sim s;

	start(&s, "unit", NULL);
	cr_assert_eq(efuse(&s, "burn_efuse DIS_DOWNLOAD_MODE 1"), 0, "%s", out);
	kill(s.pid, SIGHUP);
	usleep(200000);
	cr_assert_neq(esptool(&s, "--connect-attempts 1 read_mac"), 0);
	cr_assert_not_null(strstr(out, "Failed to connect"), "%s", out);
	stop_ok(&s);
}

/* write_flash (verified by the ROM's MD5) lands in the raw flash image and
 * survives a restart; FLASH_END's reboot is a reset. */
Test(esp32sim, write_flash_lands_in_the_flash_image)
{
	fx_esp_sim s;
	char cmd[1024];
	uint8_t data[70000], got[70000];
	FILE *f;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)((i * 2654435761u) >> 13);
	f = fopen(tp("app.bin"), "wb");
	cr_assert_eq(fwrite(data, 1, sizeof(data), f), sizeof(data));
	fclose(f);
	start(&s, "unit", NULL);
	snprintf(cmd, sizeof(cmd), "write_flash 0x10000 %s", tp("app.bin"));
	cr_assert_eq(esptool(&s, cmd), 0, "%s", out);
	cr_assert_not_null(strstr(out, "Hash of data verified."), "%s", out);
	stop_ok(&s);
	start(&s, "unit", NULL);
	/* CHANGE_BAUDRATE first (--baud): the pty keeps serving. */
	snprintf(cmd, sizeof(cmd), "--baud 921600 verify_flash 0x10000 %s", tp("app.bin"));
	cr_assert_eq(esptool(&s, cmd), 0, "after a restart: %s", out);
	cr_assert_not_null(strstr(out, "Changed."), "%s", out);
	/* The ROM reboot (esptool run: FLASH_BEGIN 0, FLASH_END reboot). */
	cr_assert_eq(esptool(&s, "run"), 0, "%s", out);
	cr_assert_eq(esptool(&s, "read_mac"), 0, "the loader is back after the reboot: %s", out);
	stop_ok(&s);
	export(&s, "--flash-image", tp("flash.img"), NULL);
	f = fopen(tp("flash.img"), "rb");
	cr_assert_not_null(f);
	cr_assert_eq(fseek(f, 0, SEEK_END), 0);
	cr_assert_eq(ftell(f), 4 * 1024 * 1024);
	cr_assert_eq(fseek(f, 0x10000, SEEK_SET), 0);
	cr_assert_eq(fread(got, 1, sizeof(got), f), sizeof(got));
	cr_assert_arr_eq(got, data, sizeof(data));
	cr_assert_eq(fseek(f, 0x10000 + sizeof(data), SEEK_SET), 0);
	cr_assert_eq(fgetc(f), 0xFF, "erased flash reads 0xFF");
	fclose(f);
}

/* A bit the controller reads wrong in a key block is an RS error for
 * espefuse, online and in the exported image. */
Test(esp32sim, flipped_key_bit_is_an_rs_error)
{
	fx_esp_sim s;
	char cmd[1024];

	make_files();
	start(&s, "unit", NULL);
	snprintf(cmd, sizeof(cmd), "burn_key BLOCK_KEY0 %s SECURE_BOOT_DIGEST0", tp("digest.bin"));
	cr_assert_eq(efuse(&s, cmd), 0, "%s", out);
	cr_assert_eq(efuse(&s, "check_error"), 0, "%s", out);
	cr_assert_null(strstr(out, "Error(s)"), "clean before the fault: %s", out);
	stop_ok(&s);
	start(&s, "unit", "--fault efuse-flip:4:77");
	efuse(&s, "check_error");
	cr_assert_not_null(strstr(out, "Error(s) in BLOCK4 [ERRORS:1 FAIL:0]"), "%s", out);
	stop_ok(&s);
	export(&s, "--efuse-image", tp("flip.efuse"), "--fault efuse-flip:4:77");
	vefuse(tp("flip.efuse"), "check_error");
	cr_assert_not_null(strstr(out, "Error(s) in BLOCK4"), "%s", out);
	/* Two bytes wrong: beyond correction, the block fails. */
	export(&s, "--efuse-image", tp("flip2.efuse"),
	       "--fault efuse-flip:4:77 --fault efuse-flip:4:300");
	vefuse(tp("flip2.efuse"), "check_error");
	cr_assert_not_null(strstr(out, "FAIL:1]"), "%s", out);
}

/* Power cut halfway through a BLOCK0 program cycle: the primary copy is
 * burned, the repeat copy not; after the restart espefuse sees the
 * repeat error and the value is there (the chip ORs the copies). */
Test(esp32sim, power_cut_mid_burn)
{
	fx_esp_sim s;
	json_t *a;

	start(&s, "unit", "--fault burn-cut:1");
	cr_assert_neq(efuse(&s, "burn_efuse DIS_ICACHE 1"), 0, "the chip went away: %s", out);
	fx_esp_sim_stop(&s);
	cr_assert_eq(s.exit_status, 3, "burn-cut exits 3");
	start(&s, "unit", NULL);
	efuse(&s, "check_error");
	cr_assert_not_null(strstr(out, "Error(s) in BLOCK0"), "%s", out);
	a = summary(&s, NULL);
	cr_assert_eq(value_int(a, "DIS_ICACHE"), 1);
	json_decref(a);
	stop_ok(&s);
}

/* Line noise: every byte corrupted means nothing gets through, and the
 * chip answers again once the line is clean. */
Test(esp32sim, line_noise_breaks_the_line)
{
	fx_esp_sim s;

	start(&s, "unit", "--fault noise:100");
	cr_assert_neq(esptool(&s, "--connect-attempts 1 read_mac"), 0);
	stop_ok(&s);
	start(&s, "unit", "--fault noise:0");
	cr_assert_eq(esptool(&s, "read_mac"), 0, "%s", out);
	stop_ok(&s);
}

/* A minimal ESP image (one segment, checksum, appended SHA-256) as a
 * bootloader for the signature check; espsecure signs it. */
static void make_image(const char *path)
{
	uint8_t img[2048] = { 0xE9, 1, 2, 0x20, 0x00, 0x00, 0x38, 0x40,
			      0xEE, 0, 0, 0, 5, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 1 };
	size_t n = 24, len = 1000;
	uint8_t chk = 0xEF;
	FILE *f;
	char cmd[512];

	img[n++] = 0x00; img[n++] = 0x00; img[n++] = 0xc8; img[n++] = 0x3f;
	img[n++] = (uint8_t)len; img[n++] = (uint8_t)(len >> 8); img[n++] = 0; img[n++] = 0;
	for (size_t i = 0; i < len; i++) {
		img[n] = (uint8_t)(i * 7);
		chk ^= img[n++];
	}
	while (n % 16 != 15)
		img[n++] = 0;
	img[n++] = chk;
	f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(img, 1, n, f), n);
	fclose(f);
	/* The appended hash: SHA-256 of everything before it. */
	snprintf(cmd, sizeof(cmd), "openssl dgst -sha256 -binary %s >> %s.h && cat %s.h >> %s && rm %s.h",
		 path, path, path, path, path);
	cr_assert_eq(system(cmd), 0);
}

/* Reset the sim with GPIO9 high (SIGUSR1: boot from flash) and return
 * what the ROM prints on the UART, in out. */
static void boot_log(const fx_esp_sim *s)
{
	struct termios tio;
	size_t n = 0;
	int fd = open(s->slave, O_RDWR | O_NOCTTY);

	out[0] = '\0';
	cr_assert_geq(fd, 0);
	cr_assert_eq(tcgetattr(fd, &tio), 0);
	cfmakeraw(&tio);
	tio.c_cc[VMIN] = 0;
	tio.c_cc[VTIME] = 0;
	cr_assert_eq(tcsetattr(fd, TCSANOW, &tio), 0);
	tcflush(fd, TCIFLUSH);
	kill(s->pid, SIGUSR1);
	for (int i = 0; i < 40 && !strstr(out, "boot refused") && !strstr(out, "loading the");
	     i++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		out[n] = '\0';
		if (poll(&p, 1, 100) <= 0)
			continue;
		r = read(fd, out + n, sizeof(out) - 1 - n);
		if (r > 0)
			n += (size_t)r;
		out[n] = '\0';
	}
	close(fd);
}

/* Stretch of issue 24: with SECURE_BOOT_EN burned the ROM boots only a
 * bootloader signed by a key whose digest is in a SECURE_BOOT_DIGEST key
 * block; espsecure is the judge of which images are signed by what. */
Test(esp32sim, secure_boot_refuses_a_wrongly_signed_bootloader)
{
	fx_esp_sim s;
	char cmd[1024];

	make_files();
	make_image(tp("boot.bin"));
	snprintf(cmd, sizeof(cmd), "openssl genrsa -out %s 3072 2>/dev/null", tp("other.pem"));
	cr_assert_eq(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "sign_data --version 2 --keyfile %s -o %s %s",
		 tp("sb.pem"), tp("good.bin"), tp("boot.bin"));
	cr_assert_eq(fx_esp_tool("espsecure", cmd, out, sizeof(out), 60), 0, "%s", out);
	snprintf(cmd, sizeof(cmd), "sign_data --version 2 --keyfile %s -o %s %s",
		 tp("other.pem"), tp("bad.bin"), tp("boot.bin"));
	cr_assert_eq(fx_esp_tool("espsecure", cmd, out, sizeof(out), 60), 0, "%s", out);
	snprintf(cmd, sizeof(cmd), "verify_signature --version 2 --keyfile %s %s",
		 tp("sb.pem"), tp("good.bin"));
	cr_assert_eq(fx_esp_tool("espsecure", cmd, out, sizeof(out), 60), 0, "%s", out);
	snprintf(cmd, sizeof(cmd), "verify_signature --version 2 --keyfile %s %s",
		 tp("sb.pem"), tp("bad.bin"));
	cr_assert_neq(fx_esp_tool("espsecure", cmd, out, sizeof(out), 60), 0, "%s", out);

	start(&s, "unit", NULL);
	/* Without SECURE_BOOT_EN anything boots. */
	snprintf(cmd, sizeof(cmd), "write_flash 0 %s", tp("bad.bin"));
	cr_assert_eq(esptool(&s, cmd), 0, "%s", out);
	boot_log(&s);
	cr_assert_not_null(strstr(out, "secure boot off: loading the bootloader"), "%s", out);
	kill(s.pid, SIGHUP);
	usleep(200000);
	snprintf(cmd, sizeof(cmd), "burn_key BLOCK_KEY0 %s SECURE_BOOT_DIGEST0", tp("digest.bin"));
	cr_assert_eq(efuse(&s, cmd), 0, "%s", out);
	cr_assert_eq(efuse(&s, "burn_efuse SECURE_BOOT_EN 1"), 0, "%s", out);
	boot_log(&s);
	cr_assert_not_null(strstr(out, "secure boot check fail: boot refused"), "%s", out);
	kill(s.pid, SIGHUP);
	usleep(200000);
	snprintf(cmd, sizeof(cmd), "write_flash --force 0 %s", tp("good.bin"));
	cr_assert_eq(esptool(&s, cmd), 0, "%s", out);
	boot_log(&s);
	cr_assert_not_null(strstr(out, "secure boot verification succeeded"), "%s", out);
	/* The app owns the UART now: no loader until the next reset. */
	cr_assert_neq(esptool(&s, "--connect-attempts 1 read_mac"), 0);
	kill(s.pid, SIGHUP);
	usleep(200000);
	cr_assert_eq(esptool(&s, "read_mac"), 0, "%s", out);
	/* One byte of the signed image changed: the digest no longer matches. */
	{
		FILE *f = fopen(tp("good.bin"), "r+b");

		cr_assert_not_null(f);
		fseek(f, 100, SEEK_SET);
		fputc(0x5a, f);
		fclose(f);
	}
	snprintf(cmd, sizeof(cmd), "write_flash --force 0 %s", tp("good.bin"));
	cr_assert_eq(esptool(&s, cmd), 0, "%s", out);
	boot_log(&s);
	cr_assert_not_null(strstr(out, "boot refused"), "%s", out);
	cr_assert_not_null(strstr(out, "image digest mismatch"), "%s", out);
	stop_ok(&s);
}

/* ---- the sim at packet level (what esptool never sends) -------------- */

static int raw_open(const fx_esp_sim *s)
{
	struct termios tio;
	int fd = open(s->slave, O_RDWR | O_NOCTTY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(tcgetattr(fd, &tio), 0);
	cfmakeraw(&tio);
	tio.c_cc[VMIN] = 0;
	tio.c_cc[VTIME] = 0;
	cr_assert_eq(tcsetattr(fd, TCSANOW, &tio), 0);
	tcflush(fd, TCIOFLUSH);
	return fd;
}

static void raw_send(int fd, uint8_t op, const uint8_t *data, uint16_t n, uint32_t chk)
{
	static uint8_t pkt[ESP_HDR_LEN + 2048], wire[ESP_SLIP_ENCODED_MAX(sizeof(pkt))];
	size_t len = esp_req_build(op, data, n, chk, pkt, sizeof(pkt));
	size_t w = esp_slip_encode(pkt, len, wire, sizeof(wire));

	cr_assert_gt(w, 0);
	cr_assert_eq(write(fd, wire, w), (ssize_t)w);
}

/* Next response within 2 s; 0 or -1. */
static int raw_recv(int fd, esp_slip_rx *rx, esp_resp *rp)
{
	for (int i = 0; i < 40; i++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint8_t b;

		if (poll(&p, 1, 50) <= 0)
			continue;
		while (read(fd, &b, 1) == 1) {
			if (esp_slip_rx_byte(rx, b) == ESP_SLIP_FRAME) {
				cr_assert_eq(esp_resp_parse(rx->buf, rx->len,
							    ESP_C3_ROM_STATUS_LEN, rp), 0);
				return 0;
			}
		}
	}
	return -1;
}

Test(esp32sim, rom_packets_checksums_and_refusals)
{
	static esp_slip_rx rx;
	fx_esp_sim s;
	uint8_t sync[ESP_SYNC_DATA_LEN] = { 0x07, 0x07, 0x12, 0x20 };
	uint8_t blk[16 + 64], begin[16], addr[4];
	esp_resp rp;
	int fd;

	memset(sync + 4, 0x55, sizeof(sync) - 4);
	start(&s, "unit", NULL);
	fd = raw_open(&s);
	esp_slip_rx_init(&rx);
	raw_send(fd, ESP_OP_SYNC, sync, sizeof(sync), 0);
	for (int i = 0; i < ESP_SYNC_REPLIES; i++) {
		cr_assert_eq(raw_recv(fd, &rx, &rp), 0, "SYNC answer %d", i);
		cr_assert_eq(rp.op, ESP_OP_SYNC);
		cr_assert_neq(rp.value, 0, "a ROM, not a stub, answers SYNC");
		cr_assert_eq(rp.status, 0);
	}
	/* A badly escaped frame is dropped; the line goes on. */
	{
		const uint8_t junk[] = { 0xC0, 0x00, 0x0a, 0xDB, 0x11, 0xC0 };

		cr_assert_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	}
	esp_put_le32(addr, ESP_CHIP_DETECT_MAGIC_REG);
	raw_send(fd, ESP_OP_READ_REG, addr, 4, 0);
	cr_assert_eq(raw_recv(fd, &rx, &rp), 0);
	cr_assert_eq(rp.op, ESP_OP_READ_REG);
	cr_assert(esp_c3_magic_ok(rp.value));
	/* FLASH_DATA with a wrong checksum: status 1, error 0x07. */
	esp_put_le32(begin, 4096);
	esp_put_le32(begin + 4, 1);
	esp_put_le32(begin + 8, 64);
	esp_put_le32(begin + 12, 0x1000);
	raw_send(fd, ESP_OP_FLASH_BEGIN, begin, 16, 0);
	cr_assert_eq(raw_recv(fd, &rx, &rp), 0);
	cr_assert_eq(rp.status, 0);
	memset(blk, 0, 16);
	esp_put_le32(blk, 64);
	memset(blk + 16, 0x3c, 64);
	raw_send(fd, ESP_OP_FLASH_DATA, blk, sizeof(blk), esp_checksum(blk + 16, 64) ^ 1);
	cr_assert_eq(raw_recv(fd, &rx, &rp), 0);
	cr_assert_eq(rp.op, ESP_OP_FLASH_DATA);
	cr_assert_eq(rp.status, 1);
	cr_assert_eq(rp.error, ESP_ROM_ERR_BAD_CRC);
	raw_send(fd, ESP_OP_FLASH_DATA, blk, sizeof(blk), esp_checksum(blk + 16, 64));
	cr_assert_eq(raw_recv(fd, &rx, &rp), 0);
	cr_assert_eq(rp.status, 0, "the retry with the right checksum is taken");
	/* An unknown op: error 0x05 under its own op. */
	raw_send(fd, 0x55, NULL, 0, 0);
	cr_assert_eq(raw_recv(fd, &rx, &rp), 0);
	cr_assert_eq(rp.op, 0x55);
	cr_assert_eq(rp.status, 1);
	cr_assert_eq(rp.error, ESP_ROM_ERR_INVALID_MSG);
	close(fd);
	stop_ok(&s);
}

/* A power cut between a key block's data and check words: the block
 * reads as an uncorrectable RS error after the restart. */
Test(esp32sim, power_cut_mid_key_burn_is_an_rs_failure)
{
	fx_esp_sim s;
	char cmd[1024];

	make_files();
	start(&s, "unit", "--fault burn-cut:1");
	snprintf(cmd, sizeof(cmd), "burn_key BLOCK_KEY3 %s SECURE_BOOT_DIGEST0", tp("digest.bin"));
	cr_assert_neq(efuse(&s, cmd), 0, "%s", out);
	fx_esp_sim_stop(&s);
	cr_assert_eq(s.exit_status, 3);
	start(&s, "unit", NULL);
	efuse(&s, "check_error");
	cr_assert_not_null(strstr(out, "Error(s) in BLOCK7 [ERRORS:7 FAIL:1]"), "%s", out);
	stop_ok(&s);
}

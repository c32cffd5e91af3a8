/* test_esp32_app.c — the ESP32-C3 factory app (docs/esp32.md, "The
 * factory app"): the simulated C3's app side (devsim/esp32c3_app.c) and
 * the esp32 driver's identity ops that boot it and speak the station's
 * device protocol to it (device-drivers/esp32/esp32_app.c).
 *
 * The flash and eFuses are made the way a maker's line does, with
 * Espressif's own tools on the sim's pty: esptool write_flash of a
 * bootloader, the partition table, the esp_secure_cert partition (TLVs:
 * device certificate, salt, HMAC-derivation marker) and an app;
 * espefuse burn_key BLOCK_KEYn ... HMAC_UP (read-protected, as espefuse
 * leaves it); with Secure Boot, images signed by espsecure.  The expected
 * identity key is computed by Python's hashlib and cryptography
 * (PBKDF2-HMAC-SHA256, 2048 iterations, a P-256 scalar), not by our code.
 *
 * The driver's ops are driven directly, and the real `station` binary
 * provisions a simulated C3 end to end (key_mode = "esp_secure_cert",
 * signed bootloader and app, the fuse plan, the lock): possession is
 * proved and the attestation signed by the chip's app. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "device-drivers/drv.h"
#include "device-drivers/proto/proto.h"
#include "device-drivers/serial/serial.h"
#include "station/esp32.h"
#include "tests/fixtures/fx_esp.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

#define OUT_CAP 65536

static char tmpdir[64];
static char out[OUT_CAP];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-esp32-app-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[128];

	if (tmpdir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd))
			fprintf(stderr, "cannot remove %s\n", tmpdir);
	}
}

TestSuite(esp32app, .init = setup, .fini = teardown, .timeout = 300);

static const char *tp(const char *name)
{
	static char p[8][256];
	static int k;

	k = (k + 1) % 8;
	snprintf(p[k], sizeof(p[k]), "%s/%s", tmpdir, name);
	return p[k];
}

static void sh(const char *cmd)
{
	cr_assert_eq(system(cmd), 0, "failed: %s", cmd);
}

static size_t slurp(const char *path, uint8_t *buf, size_t cap)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	cr_assert_not_null(f, "%s", path);
	n = fread(buf, 1, cap, f);
	fclose(f);
	return n;
}

static void spit(const char *path, const void *buf, size_t n)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fwrite(buf, 1, n, f), n);
	fclose(f);
}

/* A minimal ESP image (one segment, checksum, appended SHA-256); fill
 * makes two images differ. */
static size_t make_image(const char *path, uint8_t fill)
{
	uint8_t img[2048] = { 0xE9, 1, 2, 0x20, 0x00, 0x00, 0x38, 0x40,
			      0xEE, 0, 0, 0, 5, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 1 };
	size_t n = 24, len = 1000;
	uint8_t chk = 0xEF;

	img[n++] = 0x00; img[n++] = 0x00; img[n++] = 0xc8; img[n++] = 0x3f;
	img[n++] = (uint8_t)len; img[n++] = (uint8_t)(len >> 8); img[n++] = 0; img[n++] = 0;
	for (size_t i = 0; i < len; i++) {
		img[n] = (uint8_t)(i * 7 + fill);
		chk ^= img[n++];
	}
	while (n % 16 != 15)
		img[n++] = 0;
	img[n++] = chk;
	SHA256(img, n, img + n);
	n += 32;
	spit(path, img, n);
	return n;
}

static int esptool(const fx_esp_sim *s, const char *args)
{
	return fx_esp_on("esptool", s, args, out, sizeof(out));
}

static int efuse(const fx_esp_sim *s, const char *args)
{
	return fx_esp_on("espefuse", s, args, out, sizeof(out));
}

/* What a maker's line puts in flash: the partition table (esp_secure_cert
 * at 0xD000, the factory app at 0x10000) and the esp_secure_cert
 * partition with a certificate, the salt and the derivation marker. */
static void make_partitions(const uint8_t salt[32])
{
	static const st_esp_part parts[] = {
		{ .name = "esp_secure_cert", .type = ESP_PART_TYPE_SECURE_CERT,
		  .subtype = 0, .offset = 0xD000, .size = 0x2000 },
		{ .name = "factory", .type = ESP_PART_TYPE_APP, .subtype = 0,
		  .offset = 0x10000, .size = 0x100000 },
	};
	uint8_t table[ESP_PART_TABLE_LEN], cert[ESP_SECURE_CERT_LEN], pem[4096];
	char err[256], cmd[1024];
	size_t used = 0, n;
	st_esp_cert_tlvs c = { 0 };

	snprintf(cmd, sizeof(cmd), "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
		 "-nodes -keyout %s -subj /CN=esp32-app-test -days 30 -out %s 2>/dev/null && "
		 "openssl x509 -in %s -outform DER -out %s", tp("cert.key"), tp("cert.pem"),
		 tp("cert.pem"), tp("cert.der"));
	sh(cmd);
	n = slurp(tp("cert.pem"), pem, sizeof(pem) - 1);
	pem[n] = '\0';
	c.dev_cert_pem = (const char *)pem;
	c.salt = salt;
	c.salt_len = 32;
	cr_assert_eq(st_esp_part_table(parts, 2, table, err, sizeof(err)), ST_OK, "%s", err);
	cr_assert_eq(st_esp_secure_cert(&c, cert, &used, err, sizeof(err)), ST_OK, "%s", err);
	spit(tp("pt.bin"), table, sizeof(table));
	spit(tp("sc.bin"), cert, sizeof(cert));
}

/* The public key esp_secure_cert derives from k.bin and salt.bin, by
 * Python's hashlib and cryptography. */
static void expected_pub(uint8_t pub[65])
{
	char cmd[1536], hex[256] = "";
	FILE *p;

	snprintf(cmd, sizeof(cmd),
		 "/usr/bin/python3 -c \"import hashlib,sys\n"
		 "from cryptography.hazmat.primitives.asymmetric import ec\n"
		 "from cryptography.hazmat.primitives import serialization as s\n"
		 "k=open('%s','rb').read(); salt=open('%s','rb').read()\n"
		 "d=int.from_bytes(hashlib.pbkdf2_hmac('sha256',k,salt,2048,32),'big')\n"
		 "key=ec.derive_private_key(d, ec.SECP256R1())\n"
		 "print(key.public_key().public_bytes(s.Encoding.X962,"
		 "s.PublicFormat.UncompressedPoint).hex())\"",
		 tp("k.bin"), tp("salt.bin"));
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	cr_assert_not_null(fgets(hex, sizeof(hex), p));
	cr_assert_eq(pclose(p), 0);
	hex[strcspn(hex, "\n")] = '\0';
	cr_assert_eq(st_unhex(hex, pub, 65), ST_OK, "python said %s", hex);
}

/* A unit as the line leaves it before the station's identity steps:
 * bootloader, table, esp_secure_cert, app in flash; with_key: the HMAC
 * key burned (HMAC_UP, read-protected) into BLOCK_KEY1. */
static void provision_flash(fx_esp_sim *s, const char *boot_path, const char *app_path,
			    bool with_key)
{
	uint8_t k[32], salt[32];
	char cmd[1024], boot[256], app[256];

	/* tp()'s buffers are reused: keep the names */
	snprintf(boot, sizeof(boot), "%s", boot_path);
	snprintf(app, sizeof(app), "%s", app_path);

	cr_assert_eq(RAND_bytes(k, sizeof(k)), 1);
	cr_assert_eq(RAND_bytes(salt, sizeof(salt)), 1);
	spit(tp("k.bin"), k, sizeof(k));
	spit(tp("salt.bin"), salt, sizeof(salt));
	make_partitions(salt);
	snprintf(cmd, sizeof(cmd), "write_flash 0x0 %s 0x8000 %s 0xd000 %s 0x10000 %s",
		 boot, tp("pt.bin"), tp("sc.bin"), app);
	cr_assert_eq(esptool(s, cmd), 0, "%s", out);
	if (with_key) {
		snprintf(cmd, sizeof(cmd), "burn_key BLOCK_KEY1 %s HMAC_UP", tp("k.bin"));
		cr_assert_eq(efuse(s, cmd), 0, "%s", out);
		/* espefuse read-protects an HMAC key: nobody reads it back */
		cr_assert_eq(efuse(s, "summary --format json"), 0, "%s", out);
		cr_assert_not_null(strstr(out, "\"KEY_PURPOSE_1\""), "%s", out);
	}
}

static drv_dev *open_c3(const fx_esp_sim *s)
{
	drv_opts o = { .timeout_ms = 1000, .retries = 3 };
	char uri[700];
	drv_dev *d = NULL;

	snprintf(uri, sizeof(uri), "esp32:%s", s->slave);
	cr_assert_eq(drv_open(uri, &o, &d), ST_OK, "open %s: %s", uri, drv_errmsg(d));
	return d;
}

static bool verify(const uint8_t pub[65], const uint8_t *msg, size_t n,
		   const uint8_t *sig, size_t slen)
{
	uint8_t spki[91] = { 0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce,
			     0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
			     0x03, 0x01, 0x07, 0x03, 0x42, 0x00 };
	const uint8_t *p = spki;
	EVP_PKEY *key;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok;

	memcpy(spki + 26, pub, 65);
	key = d2i_PUBKEY(NULL, &p, sizeof(spki));
	cr_assert_not_null(key);
	ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
	     EVP_DigestVerify(md, sig, slen, msg, n) == 1;
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(key);
	return ok;
}

static void sha_hex_of(const char *path, char hex[65], size_t *len)
{
	static uint8_t buf[1 << 20];
	uint8_t md[32];

	*len = slurp(path, buf, sizeof(buf));
	SHA256(buf, *len, md);
	st_hex(md, sizeof(md), hex);
}

/* The statement names slot S with the SHA-256 and size of file. */
static void assert_image(json_t *st, int slot, const char *file)
{
	char hex[65];
	size_t len, i;
	json_t *e;
	bool found = false;

	sha_hex_of(file, hex, &len);
	json_array_foreach(json_object_get(st, "images"), i, e) {
		if (json_integer_value(json_object_get(e, "slot")) != slot)
			continue;
		found = true;
		cr_assert_str_eq(json_string_value(json_object_get(e, "sha256")), hex,
				 "slot %d", slot);
		cr_assert_eq(json_integer_value(json_object_get(e, "size")), (json_int_t)len);
	}
	cr_assert(found, "no slot %d in the statement", slot);
}

/* The whole app side: the key the app derives is esp_secure_cert's, it
 * signs the proof of possession with it, returns the certificate of the
 * partition, attests the images in flash; each op boots the app by
 * FLASH_END-reboot and comes back to the loader (identify works after). */
Test(esp32app, driver_ops_run_on_the_chip)
{
	fx_esp_sim s;
	drv_dev *d;
	drv_info info, after;
	uint8_t pub[65], want[65], chal[32], sig[DRV_MAX_SIG], der[4096], cder[4096];
	uint8_t nonce[32], stmt[DRV_MAX_STATEMENT];
	size_t slen = 0, dlen = 0, tlen = 0, cl;
	char nhex[65];
	json_t *st;

	make_image(tp("boot.bin"), 1);
	make_image(tp("app.bin"), 2);
	cr_assert_eq(fx_esp_sim_start(&s, tmpdir, "unit", NULL), 0);
	provision_flash(&s, tp("boot.bin"), tp("app.bin"), true);
	expected_pub(want);

	d = open_c3(&s);
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(drv_get_pubkey(d, pub), ST_OK, "%s", drv_errmsg(d));
	cr_assert_arr_eq(pub, want, 65, "the app's key is not esp_secure_cert's derivation");

	cr_assert_eq(RAND_bytes(chal, sizeof(chal)), 1);
	cr_assert_eq(drv_sign_challenge(d, chal, sizeof(chal), sig, sizeof(sig), &slen),
		     ST_OK, "%s", drv_errmsg(d));
	{
		uint8_t msg[6 + 32];

		memcpy(msg, "STPOP1", 6);
		memcpy(msg + 6, chal, 32);
		cr_assert(verify(want, msg, sizeof(msg), sig, slen),
			  "the proof of possession does not verify under the derived key");
		cr_assert(!verify(want, chal, sizeof(chal), sig, slen));
	}

	cr_assert_eq(drv_read_cert(d, der, sizeof(der), &dlen), ST_OK, "%s", drv_errmsg(d));
	cl = slurp(tp("cert.der"), cder, sizeof(cder));
	cr_assert_eq(dlen, cl);
	cr_assert_arr_eq(der, cder, cl);

	cr_assert_eq(RAND_bytes(nonce, sizeof(nonce)), 1);
	cr_assert_eq(drv_attest(d, nonce, sizeof(nonce), stmt, sizeof(stmt), &tlen, sig,
				sizeof(sig), &slen), ST_OK, "%s", drv_errmsg(d));
	cr_assert(verify(want, stmt, tlen, sig, slen), "the statement's signature");
	st = json_loadb((const char *)stmt, tlen, 0, NULL);
	cr_assert_not_null(st, "%.*s", (int)tlen, stmt);
	st_hex(nonce, sizeof(nonce), nhex);
	cr_assert_str_eq(json_string_value(json_object_get(st, "nonce")), nhex);
	cr_assert_str_eq(json_string_value(json_object_get(st, "uid")), info.uid_hex);
	cr_assert_str_eq(json_string_value(json_object_get(st, "type")),
			 "station-attestation/1");
	cr_assert_eq(json_integer_value(json_object_get(st, "lifecycle")), 0);
	assert_image(st, 0, tp("boot.bin"));
	assert_image(st, 1, tp("app.bin"));
	cr_assert_eq(json_array_size(json_object_get(st, "images")), 2);
	json_decref(st);

	/* Back in the ROM loader: the same unit, readable. */
	cr_assert_eq(drv_identify(d, &after), ST_OK, "%s", drv_errmsg(d));
	cr_assert_str_eq(after.uid_hex, info.uid_hex);
	drv_close(d);
	cr_assert_eq(esptool(&s, "chip_id"), 0, "%s", out);
	fx_esp_sim_stop(&s);
	cr_assert_eq(s.exit_status, 0);
}

/* SIGUSR1 (reset with GPIO9 high) boots the app; the protocol client
 * talks to it directly; APP_TO_LOADER brings the ROM loader back (esptool
 * answers); SIGHUP still resets into the loader. */
Test(esp32app, sigusr1_boots_the_app_and_it_returns_to_the_loader)
{
	fx_esp_sim s;
	serial_port p = { .fd = -1 };
	proto_transport tr;
	proto_client *c = calloc(1, sizeof(*c));
	drv_info info;
	uint8_t pub[65], want[65];
	char err[320];

	cr_assert_not_null(c);
	make_image(tp("boot.bin"), 1);
	make_image(tp("app.bin"), 2);
	cr_assert_eq(fx_esp_sim_start(&s, tmpdir, "unit", NULL), 0);
	provision_flash(&s, tp("boot.bin"), tp("app.bin"), true);
	expected_pub(want);

	kill(s.pid, SIGUSR1);
	usleep(200000);
	cr_assert_neq(esptool(&s, "chip_id"), 0, "the loader answered in the app: %s", out);
	kill(s.pid, SIGUSR1);
	usleep(200000);
	cr_assert_eq(serial_open(&p, s.slave, err, sizeof(err)), ST_OK, "%s", err);
	serial_transport(&p, &tr);
	proto_client_init(c, &tr, 1000, 2);
	cr_assert_eq(proto_hello(c), ST_OK, "%s", c->err);
	cr_assert_eq(proto_identify(c, &info), ST_OK, "%s", c->err);
	cr_assert_str_eq(info.model, "ESP32-C3 factory app");
	cr_assert(info.has_key && info.has_cert);
	cr_assert_eq(proto_get_pubkey(c, pub), ST_OK, "%s", c->err);
	cr_assert_arr_eq(pub, want, 65);
	cr_assert_eq(proto_call(c, PROTO_CMD_APP_TO_LOADER, NULL, 0), ST_OK, "%s", c->err);
	serial_close(&p);
	free(c);
	cr_assert_eq(esptool(&s, "chip_id"), 0, "no loader after APP_TO_LOADER: %s", out);
	kill(s.pid, SIGUSR1);
	usleep(200000);
	kill(s.pid, SIGHUP);
	usleep(200000);
	cr_assert_eq(esptool(&s, "chip_id"), 0, "no loader after SIGHUP: %s", out);
	fx_esp_sim_stop(&s);
	cr_assert_eq(s.exit_status, 0);
}

/* With Secure Boot on (espsecure-signed images): the app runs only
 * behind a verified bootloader, attests the signed images as written
 * (signature sector included); with the sim's app-wrong-key fault the
 * proof of possession does not verify under the key the app reports. */
Test(esp32app, secure_boot_signed_images_and_a_wrong_key_app)
{
	fx_esp_sim s;
	drv_dev *d;
	uint8_t pub[65], want[65], chal[32], sig[DRV_MAX_SIG], nonce[32];
	uint8_t stmt[DRV_MAX_STATEMENT], msg[6 + 32];
	size_t slen = 0, tlen = 0;
	char cmd[1024];
	json_t *st;

	make_image(tp("boot.raw"), 3);
	make_image(tp("app.raw"), 4);
	snprintf(cmd, sizeof(cmd), "openssl genrsa -out %s 3072 2>/dev/null", tp("sb.pem"));
	sh(cmd);
	snprintf(cmd, sizeof(cmd), "sign_data --version 2 --keyfile %s -o %s %s",
		 tp("sb.pem"), tp("boot.bin"), tp("boot.raw"));
	cr_assert_eq(fx_esp_tool("espsecure", cmd, out, sizeof(out), 60), 0, "%s", out);
	snprintf(cmd, sizeof(cmd), "sign_data --version 2 --keyfile %s -o %s %s",
		 tp("sb.pem"), tp("app.bin"), tp("app.raw"));
	cr_assert_eq(fx_esp_tool("espsecure", cmd, out, sizeof(out), 60), 0, "%s", out);
	snprintf(cmd, sizeof(cmd), "digest_sbv2_public_key --keyfile %s --output %s",
		 tp("sb.pem"), tp("digest.bin"));
	cr_assert_eq(fx_esp_tool("espsecure", cmd, out, sizeof(out), 60), 0, "%s", out);

	cr_assert_eq(fx_esp_sim_start(&s, tmpdir, "unit", "--fault app-wrong-key"), 0);
	provision_flash(&s, tp("boot.bin"), tp("app.bin"), true);
	snprintf(cmd, sizeof(cmd), "burn_key BLOCK_KEY0 %s SECURE_BOOT_DIGEST0",
		 tp("digest.bin"));
	cr_assert_eq(efuse(&s, cmd), 0, "%s", out);
	cr_assert_eq(efuse(&s, "burn_efuse SECURE_BOOT_EN 1"), 0, "%s", out);
	expected_pub(want);

	d = open_c3(&s);
	cr_assert_eq(drv_get_pubkey(d, pub), ST_OK, "%s", drv_errmsg(d));
	cr_assert_arr_eq(pub, want, 65);
	cr_assert_eq(RAND_bytes(chal, sizeof(chal)), 1);
	cr_assert_eq(drv_sign_challenge(d, chal, sizeof(chal), sig, sizeof(sig), &slen),
		     ST_OK, "%s", drv_errmsg(d));
	memcpy(msg, "STPOP1", 6);
	memcpy(msg + 6, chal, 32);
	cr_assert(!verify(want, msg, sizeof(msg), sig, slen),
		  "a wrong-key app's proof of possession verified");
	cr_assert_eq(RAND_bytes(nonce, sizeof(nonce)), 1);
	cr_assert_eq(drv_attest(d, nonce, sizeof(nonce), stmt, sizeof(stmt), &tlen, sig,
				sizeof(sig), &slen), ST_OK, "%s", drv_errmsg(d));
	cr_assert(!verify(want, stmt, tlen, sig, slen));
	st = json_loadb((const char *)stmt, tlen, 0, NULL);
	cr_assert_not_null(st);
	assert_image(st, 0, tp("boot.bin"));
	assert_image(st, 1, tp("app.bin"));
	json_decref(st);
	drv_close(d);
	fx_esp_sim_stop(&s);
	cr_assert_eq(s.exit_status, 0);

	/* The same chip without the fault: the proof verifies. */
	cr_assert_eq(fx_esp_sim_start(&s, tmpdir, "unit", NULL), 0);
	d = open_c3(&s);
	cr_assert_eq(drv_sign_challenge(d, chal, sizeof(chal), sig, sizeof(sig), &slen),
		     ST_OK, "%s", drv_errmsg(d));
	cr_assert(verify(want, msg, sizeof(msg), sig, slen));
	drv_close(d);
	fx_esp_sim_stop(&s);
	cr_assert_eq(s.exit_status, 0);
}

/* No HMAC_UP key burned: the app answers NO_KEY and the driver says what
 * is missing, naming the port; no app in flash: the driver says the app
 * did not answer.  Either way the unit is back in its loader. */
Test(esp32app, missing_key_or_app_is_a_clear_error)
{
	fx_esp_sim s;
	drv_dev *d;
	drv_info info;
	uint8_t pub[65];

	cr_assert_eq(fx_esp_sim_start(&s, tmpdir, "blank", NULL), 0);
	d = open_c3(&s);
	cr_assert_neq(drv_get_pubkey(d, pub), ST_OK);
	cr_assert_not_null(strstr(drv_errmsg(d), "did not answer"), "%s", drv_errmsg(d));
	cr_assert_not_null(strstr(drv_errmsg(d), "factory app flashed"), "%s", drv_errmsg(d));
	cr_assert_not_null(strstr(drv_errmsg(d), s.slave), "%s", drv_errmsg(d));
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	drv_close(d);
	fx_esp_sim_stop(&s);

	make_image(tp("boot.bin"), 1);
	make_image(tp("app.bin"), 2);
	cr_assert_eq(fx_esp_sim_start(&s, tmpdir, "unit", NULL), 0);
	provision_flash(&s, tp("boot.bin"), tp("app.bin"), false);
	d = open_c3(&s);
	cr_assert_neq(drv_get_pubkey(d, pub), ST_OK);
	cr_assert_not_null(strstr(drv_errmsg(d), "HMAC_UP"), "%s", drv_errmsg(d));
	cr_assert_not_null(strstr(drv_errmsg(d), s.slave), "%s", drv_errmsg(d));
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	drv_close(d);
	fx_esp_sim_stop(&s);
	cr_assert_eq(s.exit_status, 0);
}

/* The lock with a factory app in flash: the driver's lock step resets the
 * ROM by FLASH_END with reboot, which now boots the app; the driver's
 * hook sends it back to the loader, and the chip is seen in Secure
 * Download Mode.  The app still serves a locked chip (its loader takes
 * FLASH_BEGIN/END): the proof of possession verifies and the statement
 * says LOCKED. */
Test(esp32app, lock_with_the_app_in_flash_then_pop_on_the_locked_chip)
{
	fx_esp_sim s;
	drv_dev *d;
	drv_info info;
	uint8_t want[65], chal[32], sig[DRV_MAX_SIG], nonce[32], msg[6 + 32];
	uint8_t stmt[DRV_MAX_STATEMENT];
	size_t slen = 0, tlen = 0;
	json_t *st;

	make_image(tp("boot.bin"), 1);
	make_image(tp("app.bin"), 2);
	cr_assert_eq(fx_esp_sim_start(&s, tmpdir, "unit", NULL), 0);
	provision_flash(&s, tp("boot.bin"), tp("app.bin"), true);
	expected_pub(want);

	d = open_c3(&s);
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(drv_set_lifecycle(d, DRV_LC_LOCKED), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(RAND_bytes(chal, sizeof(chal)), 1);
	cr_assert_eq(drv_sign_challenge(d, chal, sizeof(chal), sig, sizeof(sig), &slen),
		     ST_OK, "%s", drv_errmsg(d));
	memcpy(msg, "STPOP1", 6);
	memcpy(msg + 6, chal, 32);
	cr_assert(verify(want, msg, sizeof(msg), sig, slen));
	cr_assert_eq(RAND_bytes(nonce, sizeof(nonce)), 1);
	cr_assert_eq(drv_attest(d, nonce, sizeof(nonce), stmt, sizeof(stmt), &tlen, sig,
				sizeof(sig), &slen), ST_OK, "%s", drv_errmsg(d));
	cr_assert(verify(want, stmt, tlen, sig, slen));
	st = json_loadb((const char *)stmt, tlen, 0, NULL);
	cr_assert_not_null(st);
	cr_assert_eq(json_integer_value(json_object_get(st, "lifecycle")), DRV_LC_LOCKED);
	cr_assert_str_eq(json_string_value(json_object_get(st, "uid")), info.uid_hex);
	json_decref(st);
	drv_close(d);
	/* The referee: espefuse is refused, as on a chip in Secure Download Mode. */
	cr_assert_neq(efuse(&s, "summary"), 0, "%s", out);
	cr_assert_not_null(strstr(out, "Secure Download Mode is enabled"), "%s", out);
	fx_esp_sim_stop(&s);
	cr_assert_eq(s.exit_status, 0);
}

/* 1 % line noise both ways (the sim's noise fault, seeded): the app's
 * requests are re-sent like reads, the way back to the loader is tried
 * again, and the results are still the chip's. */
Test(esp32app, line_noise_one_percent)
{
	fx_esp_sim s;
	drv_dev *d;
	drv_info info;
	uint8_t pub[65], want[65], chal[32], sig[DRV_MAX_SIG], msg[6 + 32];
	size_t slen = 0;

	make_image(tp("boot.bin"), 1);
	make_image(tp("app.bin"), 2);
	cr_assert_eq(fx_esp_sim_start(&s, tmpdir, "unit", NULL), 0);
	provision_flash(&s, tp("boot.bin"), tp("app.bin"), true);
	expected_pub(want);
	fx_esp_sim_stop(&s);
	cr_assert_eq(fx_esp_sim_start(&s, tmpdir, "unit", "--seed noisy --fault noise:1"), 0);
	d = open_c3(&s);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(drv_get_pubkey(d, pub), ST_OK, "%s", drv_errmsg(d));
		cr_assert_arr_eq(pub, want, 65);
		cr_assert_eq(RAND_bytes(chal, sizeof(chal)), 1);
		cr_assert_eq(drv_sign_challenge(d, chal, sizeof(chal), sig, sizeof(sig),
						&slen), ST_OK, "%s", drv_errmsg(d));
		memcpy(msg, "STPOP1", 6);
		memcpy(msg + 6, chal, 32);
		cr_assert(verify(want, msg, sizeof(msg), sig, slen));
	}
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	drv_close(d);
	fx_esp_sim_stop(&s);
	cr_assert_eq(s.exit_status, 0);
}

/* ---- `station provision` of a simulated C3, end to end ---- */

/* A profile for key_mode = "esp_secure_cert" with profiles/esp32c3.profile's
 * fuse plan (its root of trust: the digest of sb.pem, made here) and a
 * firmware group: bootloader.bin at 0x0, app.bin at 0x10000, both ESP
 * images signed by espsecure. */
static void e2e_world(fx_world *w, char boot[512], char app[512])
{
	fx_world_opts o = { .with_ca = true, .timeout_ms = 1000,
			    .profile_file = "esp32c3.profile" };
	char key[512], pub[512], raw[512], sbom[512], digest[512], cmd[2048];
	char ks[65], bs[65], as[65], ss[65], rot[65], top[600], *t, *fz, *rl;
	static char text[32768];
	uint8_t d[32];
	size_t n;
	FILE *f;

	fx_world_init_opts(w, &o);
	fx_path(key, w, "sb.pem");
	fx_path(pub, w, "sb.pub.pem");
	fx_path(raw, w, "raw.bin");
	fx_path(boot, w, "bootloader.bin");
	fx_path(app, w, "app.bin");
	fx_path(sbom, w, "idf.cdx.json");
	fx_path(digest, w, "digest.bin");
	fx_write_file(sbom, "{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.5\","
		      "\"version\":1,\"components\":[]}\n");
	snprintf(cmd, sizeof(cmd), "openssl genrsa -out '%s' 3072 2>/dev/null && "
		 "openssl rsa -in '%s' -pubout -out '%s' 2>/dev/null", key, key, pub);
	sh(cmd);
	make_image(raw, 5);
	snprintf(cmd, sizeof(cmd), "sign_data --version 2 --keyfile %s -o %s %s", key, boot, raw);
	cr_assert_eq(fx_esp_tool("espsecure", cmd, out, sizeof(out), 60), 0, "%s", out);
	make_image(raw, 6);
	snprintf(cmd, sizeof(cmd), "sign_data --version 2 --keyfile %s -o %s %s", key, app, raw);
	cr_assert_eq(fx_esp_tool("espsecure", cmd, out, sizeof(out), 60), 0, "%s", out);
	snprintf(cmd, sizeof(cmd), "digest_sbv2_public_key --keyfile %s --output %s", pub, digest);
	cr_assert_eq(fx_esp_tool("espsecure", cmd, out, sizeof(out), 60), 0, "%s", out);
	cr_assert_eq(slurp(digest, d, sizeof(d)), 32);
	st_hex(d, 32, rot);
	sha_hex_of(pub, ks, &n);
	sha_hex_of(boot, bs, &n);
	sha_hex_of(app, as, &n);
	sha_hex_of(sbom, ss, &n);
	/* the repository's profile: its fuse plan and certificate */
	snprintf(top, sizeof(top), "%s/../profiles/esp32c3.profile", getenv("STATION_BUILD"));
	f = fopen(top, "r");
	cr_assert_not_null(f, "%s", top);
	t = calloc(1, 16384);
	cr_assert_not_null(t);
	n = fread(t, 1, 16383, f);
	fclose(f);
	t[n] = '\0';
	/* merge esp-e2e: the committed profile is esp_secure_cert with its own
	 * firmware group; take its text without them, as before */
	{
		char *m = strstr(t, "key_mode = \"esp_secure_cert\";"), *a = strstr(t, "\nfirmware: {"),
		     *b = a ? strstr(a, "\n};\n") : NULL;

		cr_assert(m && a && b, "profiles/esp32c3.profile changed");
		memmove(a, b + 3, strlen(b + 3) + 1);
		memmove(m + strlen("key_mode = \"device\";"), m + strlen("key_mode = \"esp_secure_cert\";"),
			strlen(m + strlen("key_mode = \"esp_secure_cert\";")) + 1);
		memcpy(m, "key_mode = \"device\";", strlen("key_mode = \"device\";"));
	}
	cr_assert_not_null(strstr(t, "key_mode = \"device\";"));
	rl = strstr(t, "  sha256 = \"");
	cr_assert_not_null(rl);
	memcpy(rl + strlen("  sha256 = \""), rot, 64);
	fz = strstr(t, "fuses: {");
	cr_assert_not_null(fz);
	*strstr(t, "key_mode = \"device\";") = '\0';
	{
		char *after_mode = t + strlen(t) + strlen("key_mode = \"device\";");
		char head_rest[16384];

		/* text = head + new mode + [mode .. fuses) + firmware + fuses... */
		snprintf(head_rest, sizeof(head_rest), "%.*s", (int)(fz - after_mode),
			 after_mode);
		snprintf(text, sizeof(text),
			 "%skey_mode = \"esp_secure_cert\";%s"
			 "firmware: {\n"
			 "  format = \"esp32-sbv2\";\n"
			 "  secure_boot_key = \"sb.pub.pem\"; secure_boot_key_sha256 = \"%s\";\n"
			 "  images = (\n"
			 "    { name = \"bootloader\"; version = \"5.1\"; file = \"bootloader.bin\";\n"
			 "      sha256 = \"%s\"; slot = 0; address = 0x0;\n"
			 "      sbom = \"idf.cdx.json\"; sbom_sha256 = \"%s\"; },\n"
			 "    { name = \"app\"; version = \"1.0.0\"; file = \"app.bin\";\n"
			 "      sha256 = \"%s\"; slot = 1; address = 0x10000;\n"
			 "      sbom = \"idf.cdx.json\"; sbom_sha256 = \"%s\"; } );\n"
			 "};\n%s", t, head_rest, ks, bs, ss, as, ss, fz);
	}
	free(t);
	fx_write_file(w->profile, text);
	fx_sign(w, w->profile);
}

/* The whole line with the real station binary: key_mode esp_secure_cert
 * (HMAC key burned read-protected, certificate and esp_secure_cert
 * written), the signed images, the fuse plan with SECURE_BOOT_EN and the
 * lock; the possession step is done by the simulated chip's factory app,
 * and the attestation it signs after the lock verifies with openssl under
 * the unit's certificate and names the SHA-256 of the images written.
 * With the app-wrong-key fault the possession step fails and nothing is
 * locked. */
Test(esp32app, station_provisions_a_c3_end_to_end_with_the_factory_app, .timeout = 900)
{
	static fx_run r;
	static char steps[16384], att[8192], buf[4096];
	fx_world w;
	fx_esp_sim s;
	char boot[512], app[512], slot[700], bh[65], ah[65], p[600];
	size_t n;
	json_t *a, *stmt;

	e2e_world(&w, boot, app);
	sha_hex_of(boot, bh, &n);
	sha_hex_of(app, ah, &n);

	/* a chip whose app signs with another key: possession fails */
	cr_assert_eq(fx_esp_sim_start(&s, tmpdir, "bad", "--seed bad --fault app-wrong-key"), 0);
	snprintf(slot, sizeof(slot), "esp32:%s", s.slave);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", slot, "provision", NULL);
	cr_expect_neq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_expect_eq(fx_count_units(&w, "PASS"), 0, "%s", r.out);
	fx_q_text(&w, "SELECT group_concat(step || ' ' || outcome || ' ' || detail, '\n') "
		  "FROM steps", steps, sizeof(steps));
	cr_expect(strstr(steps, "possession fail"), "%s", steps);
	fx_esp_sim_stop(&s);
	cr_assert_eq(s.exit_status, 0);
	/* ... and the chip was not locked: espefuse still reads it */
	cr_assert_eq(fx_esp_sim_start(&s, tmpdir, "bad", NULL), 0);
	cr_expect_eq(efuse(&s, "summary --format json"), 0, "%s", out);
	fx_esp_sim_stop(&s);

	/* a good chip: PASS, possession by the chip, attested */
	cr_assert_eq(fx_esp_sim_start(&s, tmpdir, "good", "--seed good"), 0);
	snprintf(slot, sizeof(slot), "esp32:%s", s.slave);
	fx_station_run(&r, &w, "--burn-fuses", "--yes", "--slot", slot, "provision", NULL);
	cr_assert_eq(r.code, 0, "stdout:%s\nstderr:%s", r.out, r.err);
	cr_assert_eq(fx_count_units(&w, "PASS"), 1, "%s", r.out);
	fx_q_text(&w, "SELECT group_concat(step || ' ' || outcome || ' ' || detail, '\n') "
		  "FROM steps WHERE unit_id = (SELECT id FROM units WHERE state = 'PASS')",
		  steps, sizeof(steps));
	cr_expect(strstr(steps, "possession ok"), "%s", steps);
	fx_q_text(&w, "SELECT attestation FROM units WHERE state = 'PASS'", att, sizeof(att));
	a = json_loads(att, 0, NULL);
	cr_assert_not_null(a, "attestation %s", att);
	stmt = json_loads(json_string_value(json_object_get(a, "statement")), 0, NULL);
	cr_assert_not_null(stmt);
	cr_expect_eq(json_integer_value(json_object_get(stmt, "lifecycle")), 2);
	assert_image(stmt, 0, boot);
	assert_image(stmt, 1, app);
	snprintf(p, sizeof(p), "%s/stmt.json", w.dir);
	fx_write_file(p, json_string_value(json_object_get(a, "statement")));
	{
		const char *hex = json_string_value(json_object_get(a, "signature"));
		uint8_t sig[DRV_MAX_SIG];

		cr_assert(hex && strlen(hex) / 2 <= sizeof(sig));
		cr_assert_eq(st_unhex(hex, sig, strlen(hex) / 2), ST_OK);
		snprintf(p, sizeof(p), "%s/stmt.sig", w.dir);
		spit(p, sig, strlen(hex) / 2);
	}
	fx_q_text(&w, "SELECT cert_pem FROM units WHERE state = 'PASS'", att, sizeof(att));
	snprintf(p, sizeof(p), "%s/cert.pem", w.dir);
	fx_write_file(p, att);
	snprintf(p, sizeof(p), "cd '%s' && openssl x509 -in cert.pem -noout -pubkey > dev.pub.pem && "
		 "openssl dgst -sha256 -verify dev.pub.pem -signature stmt.sig stmt.json 2>&1",
		 w.dir);
	{
		FILE *pp = popen(p, "r");

		cr_assert_not_null(pp);
		n = fread(buf, 1, sizeof(buf) - 1, pp);
		buf[n] = '\0';
		pclose(pp);
	}
	cr_assert_not_null(strstr(buf, "Verified OK"), "openssl: %s", buf);
	json_decref(stmt);
	json_decref(a);
	/* locked: espefuse is refused */
	cr_expect_neq(efuse(&s, "summary"), 0, "%s", out);
	cr_expect_not_null(strstr(out, "Secure Download Mode is enabled"), "%s", out);
	fx_esp_sim_stop(&s);
	cr_assert_eq(s.exit_status, 0);
	fx_rmtree(w.dir);
}

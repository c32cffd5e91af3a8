/* esp32_app.c — the ESP32-C3's identity ops through the maker's factory
 * app (docs/esp32.md, "The factory app").  The ROM loader cannot hold or
 * use a device key, so proof of possession, the certificate read and the
 * attestation run in firmware booted from flash, which speaks the
 * station's own device protocol (docs/protocol.md) on the same UART:
 *
 *   enter: a reset with GPIO9 high (DTR/RTS: EN pulsed, IO0 left high),
 *          or, on a port without the lines, the ROM's FLASH_END with
 *          reboot (esptool's `run`); then HELLO and IDENTIFY, whose uid
 *          must be the one the ROM side reads (MAC, revision);
 *   the request (GET_PUBKEY, READ_CERT, SIGN_CHALLENGE, ATTEST);
 *   leave: APP_TO_LOADER (the app restarts with FORCE_DOWNLOAD_BOOT), then
 *          the ROM loader again (DTR/RTS reset with GPIO9 low where the
 *          port has them), unless download mode is burned off.
 *
 * The protocol client is the one every station programmer uses
 * (device-drivers/proto/client.c). */
#include "device-drivers/esp32/esp32.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "base.h"
#include "device-drivers/proto/proto.h"

#define APP_TIMEOUT_MS 1000     /* a request to a running app ... */
#define APP_RETRIES 2           /* ... re-sent this often (HELLO: 3 s in all) */
#define APP_BOOT_MS 150         /* ROM, bootloader and app start-up, at least */
#define LEAVE_PROBE_MS 300      /* is an app there after a ROM reset? */
#define LEAVE_TRIES 3
#define BOOT_TRIES 3            /* boots from flash per op */

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* The app's console rate: 115200 8N1, whatever the loader ran at. */
static void host_115200(int fd)
{
	struct termios tio;

	if (tcgetattr(fd, &tio) == 0) {
		cfsetispeed(&tio, B115200);
		cfsetospeed(&tio, B115200);
		tcsetattr(fd, TCSANOW, &tio);
	}
}

/* esptool's hard reset with IO0 (GPIO9) left high: EN low for 100 ms.
 * false when the port has no modem lines (a pty). */
static bool hard_reset_to_app(int fd)
{
	int dtr = TIOCM_DTR, rts = TIOCM_RTS;

	if (ioctl(fd, TIOCMBIC, &dtr))
		return false;
	ioctl(fd, TIOCMBIS, &rts);
	sleep_ms(100);
	ioctl(fd, TIOCMBIC, &rts);
	return true;
}

/* A protocol client over the driver's open port. */
static proto_client *client_new(drv_dev *d, int timeout_ms, int retries)
{
	proto_client *c = calloc(1, sizeof(*c));
	proto_transport tr;

	if (!c)
		return NULL;
	serial_transport(esp32_port(d), &tr);
	tr.name = drv_port(d);
	proto_client_init(c, &tr, timeout_ms, retries);
	return c;
}

/* Boot the app and check it is this unit's: a client talking to it, or
 * NULL with the error set.  With rom NULL (identify on a chip opened in
 * Secure Download Mode, whose ROM cannot read the MAC) the app's IDENTIFY
 * is taken as it is, into *appp. */
static proto_client *app_boot(drv_dev *d, const char *step, const drv_info *rom,
			      drv_info *appp, int *rcp)
{
	serial_port *p = esp32_port(d);
	drv_info app;
	proto_client *c = NULL;
	bool booted = false;
	int rc = ST_OK;

	if (!(c = client_new(d, APP_TIMEOUT_MS, APP_RETRIES))) {
		rc = ST_E_NOMEM;
		goto fail;
	}
	/* A FLASH_END lost to line noise leaves the ROM in its loader: then
	 * SYNC again and boot once more. */
	for (int t = 0; t < BOOT_TRIES; t++) {
		if (t && (esp32_loader_gone(d) || esp32_rom_enter(d)))
			break;
		booted = true;
		if (!hard_reset_to_app(p->fd) && (rc = esp32_rom_run(d))) {
			/* FLASH_BEGIN carries no checksum: a request damaged on
			 * the line may be refused.  SYNC again and retry. */
			char why[400];

			snprintf(why, sizeof(why), "%s", drv_errmsg(d));
			drv_set_error(d, "ESP32-C3 on %s: %s: the ROM loader did not take "
				      "the reboot into the app (%s)", drv_port(d), step, why);
			continue;
		}
		host_115200(p->fd);
		sleep_ms(APP_BOOT_MS);
		tcflush(p->fd, TCIFLUSH); /* the boot log */
		if (!(rc = proto_hello(c)))
			break;
	}
	if (rc && !c->err[0])
		goto fail;      /* the ROM side failed: its words are set */
	if (rc) {
		drv_set_error(d, "ESP32-C3 on %s: %s: the app did not answer within %d s "
			      "after the chip booted from flash (%s): is the factory app "
			      "flashed, and does its secure boot check pass? (docs/esp32.md, "
			      "\"The factory app\")", drv_port(d), step,
			      (APP_RETRIES + 1) * APP_TIMEOUT_MS / 1000, c->err);
		goto fail;
	}
	if ((rc = proto_identify(c, &app))) {
		drv_set_error(d, "ESP32-C3 on %s: %s: the app's IDENTIFY failed: %s",
			      drv_port(d), step, c->err);
		goto fail;
	}
	if (rom && rom->uid_hex[0] &&
	    memcmp(rom->uid, (uint8_t[DRV_UID_LEN]){ 0 }, DRV_UID_LEN) &&
	    memcmp(rom->uid, app.uid, DRV_UID_LEN)) {
		drv_set_error(d, "ESP32-C3 on %s: %s: the app reports unit %s, the ROM "
			      "loader %s: the firmware is not reading this chip's eFuses; "
			      "set the unit aside", drv_port(d), step, app.uid_hex,
			      rom->uid_hex);
		rc = ST_E_VERIFY;
		goto fail;
	}
	if (appp)
		*appp = app;
	return c;
fail:
	free(c);
	*rcp = rc;
	if (booted && !esp32_loader_gone(d)) {
		/* Leave the unit in its loader for whatever comes next; the
		 * app's failure is what the operator is told. */
		char msg[512];

		snprintf(msg, sizeof(msg), "%s", drv_errmsg(d));
		(void)esp32_rom_enter(d);
		drv_set_error(d, "%s", msg);
	}
	return NULL;
}

static proto_client *app_enter(drv_dev *d, const char *step, int *rcp)
{
	drv_info rom;

	/* The unit as the ROM side reads it (cached once read). */
	if ((*rcp = esp32_ops.identify(d, &rom)))
		return NULL;
	return app_boot(d, step, &rom, NULL, rcp);
}

/* Back to the ROM loader (when there is one): APP_TO_LOADER, then SYNC
 * again.  APP_TO_LOADER is sent once per try (the app may already have
 * gone, and the loader ignores the frame); what counts is the loader
 * answering: up to LEAVE_TRIES times, as a request lost to line noise
 * leaves the app running.  rc is the op's result: a failure to leave
 * only replaces ST_OK. */
static int app_leave(drv_dev *d, proto_client *c, const char *step, int rc)
{
	char why[320] = "";
	int lrc = ST_OK;

	if (esp32_loader_gone(d)) {
		free(c);
		return rc;
	}
	for (int t = 0; t < LEAVE_TRIES; t++) {
		host_115200(esp32_port(d)->fd);
		if (proto_call(c, PROTO_CMD_APP_TO_LOADER, NULL, 0))
			snprintf(why, sizeof(why), "%s", c->err);
		sleep_ms(50);
		if (!(lrc = esp32_rom_enter(d)))
			break;
	}
	free(c);
	if (lrc && rc == ST_OK) {
		drv_set_error(d, "ESP32-C3 on %s: after %s: the app did not restart into "
			      "the ROM loader (%s%s%s): reset the unit with BOOT (GPIO9) "
			      "held low", drv_port(d), step, st_strerror(lrc),
			      why[0] ? "; " : "", why);
		return lrc;
	}
	return rc;
}

/* An app's failure, worded for the operator. */
static int app_fail(drv_dev *d, proto_client *c, const char *step, int rc)
{
	drv_set_error(d, "ESP32-C3 on %s: %s by the factory app failed: %s%s",
		      drv_port(d), step, c->err,
		      c->rep.payload[0] == PROTO_ST_NO_KEY ? " (no key block with purpose HMAC_UP, or no "
		      "salt in the esp_secure_cert partition: the identity was not "
		      "provisioned)" : "");
	return rc;
}

int esp32_app_get_pubkey(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN])
{
	const char *step = "reading the device key (GET_PUBKEY)";
	int rc = ST_OK;
	proto_client *c = app_enter(d, step, &rc);

	if (!c)
		return rc;
	if ((rc = proto_get_pubkey(c, pub)))
		app_fail(d, c, step, rc);
	return app_leave(d, c, step, rc);
}

int esp32_app_read_cert(drv_dev *d, uint8_t *buf, size_t cap, size_t *len)
{
	const char *step = "reading the certificate (READ_CERT)";
	int rc = ST_OK;
	proto_client *c = app_enter(d, step, &rc);

	*len = 0;
	if (!c)
		return rc;
	if ((rc = proto_read_cert(c, buf, cap, len)))
		app_fail(d, c, step, rc);
	return app_leave(d, c, step, rc);
}

int esp32_app_sign_challenge(drv_dev *d, const uint8_t *chal, size_t clen,
			     uint8_t *sig, size_t cap, size_t *siglen)
{
	const char *step = "proof of possession (SIGN_CHALLENGE)";
	int rc = ST_OK;
	proto_client *c = app_enter(d, step, &rc);

	*siglen = 0;
	if (!c)
		return rc;
	if ((rc = proto_sign_challenge(c, chal, clen, sig, cap, siglen)))
		app_fail(d, c, step, rc);
	return app_leave(d, c, step, rc);
}

int esp32_app_attest(drv_dev *d, const uint8_t *nonce, size_t nlen, uint8_t *stmt,
		     size_t cap, size_t *stmtlen, uint8_t *sig, size_t sigcap,
		     size_t *siglen)
{
	const char *step = "attestation (ATTEST)";
	int rc = ST_OK;
	proto_client *c = app_enter(d, step, &rc);

	*stmtlen = *siglen = 0;
	if (!c)
		return rc;
	if ((rc = proto_attest(c, nonce, nlen, stmt, cap, stmtlen, sig, sigcap, siglen)))
		app_fail(d, c, step, rc);
	return app_leave(d, c, step, rc);
}

int esp32_app_identify(drv_dev *d, uint8_t uid[DRV_UID_LEN])
{
	const char *step = "reading the unit ID from the factory app (IDENTIFY)";
	drv_info app;
	int rc = ST_OK;
	proto_client *c = app_boot(d, step, NULL, &app, &rc);

	if (!c)
		return rc;
	memcpy(uid, app.uid, DRV_UID_LEN);
	return app_leave(d, c, step, rc);
}

/* The entry for slot in the app's statement: size and SHA-256, or
 * *found false.  ST_E_PROTO when the statement is not one. */
static int statement_slot(drv_dev *d, const uint8_t *stmt, size_t n, unsigned slot,
			  bool *found, uint32_t *size, uint8_t sha[DRV_SHA256_LEN])
{
	json_t *j = json_loadb((const char *)stmt, n, 0, NULL), *im = NULL, *e;
	size_t i;
	int rc = ST_E_PROTO;

	*found = false;
	if (!j || !json_is_array(im = json_object_get(j, "images")))
		goto out;
	json_array_foreach(im, i, e) {
		json_t *s = json_object_get(e, "slot"), *z = json_object_get(e, "size");
		const char *h = json_string_value(json_object_get(e, "sha256"));

		if (!json_is_integer(s) || !json_is_integer(z) || !h || strlen(h) != 64 ||
		    st_unhex(h, sha, DRV_SHA256_LEN))
			goto out;
		if (json_integer_value(s) == (json_int_t)slot) {
			*found = true;
			*size = (uint32_t)json_integer_value(z);
			break;
		}
	}
	rc = ST_OK;
out:
	if (rc)
		drv_set_error(d, "ESP32-C3 on %s: the factory app's statement is not "
			      "one (docs/protocol.md, 13 ATTEST): no images list with "
			      "slot, size and sha256", drv_port(d));
	json_decref(j);
	return rc;
}

int esp32_app_measure(drv_dev *d, unsigned slot, bool *held, uint32_t *size,
		      uint8_t sha[DRV_SHA256_LEN])
{
	uint8_t nonce[32], *stmt = NULL, sig[160];
	size_t n = 0, sn = 0;
	int rc;

	*held = false;
	*size = 0;
	if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
		drv_set_error(d, "ESP32-C3 on %s: no random nonce (OpenSSL RAND_bytes)",
			      drv_port(d));
		return ST_E_CRYPTO;
	}
	if (!(stmt = malloc(2048)))
		return ST_E_NOMEM;
	if (!(rc = esp32_app_attest(d, nonce, sizeof(nonce), stmt, 2048, &n, sig,
				    sizeof(sig), &sn)))
		rc = statement_slot(d, stmt, n, slot, held, size, sha);
	free(stmt);
	return rc;
}

void esp32_app_leave_if_running(drv_dev *d)
{
	serial_port *p = esp32_port(d);
	proto_client *c;

	host_115200(p->fd);
	sleep_ms(APP_BOOT_MS);
	tcflush(p->fd, TCIFLUSH);
	/* One HELLO, a short wait: an app answers at once, the ROM never. */
	if (!(c = client_new(d, LEAVE_PROBE_MS, -1)))
		return;
	if (proto_call(c, PROTO_CMD_HELLO, (const uint8_t[10]){ PROTO_VERSION,
		       PROTO_VERSION }, 10) == ST_OK)
		(void)proto_call(c, PROTO_CMD_APP_TO_LOADER, NULL, 0);
	free(c);
}

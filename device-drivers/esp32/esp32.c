/* esp32.c — the ESP32-C3 as a target, through the chip's ROM serial loader
 * only (no flasher stub): SLIP frames, SYNC, READ_REG/WRITE_REG,
 * GET_SECURITY_INFO, the eFuse controller's registers, FLASH_BEGIN/DATA/END
 * and SPI_FLASH_MD5.  The wire format and the chip's register map are in
 * device-drivers/proto/esp_rom.h (shared with the simulated C3).
 *
 * Every number and sequence follows Espressif's esptool/espefuse 4.7.0,
 * the referee the tests run against the same chip (docs/esp32.md). */
#include "device-drivers/esp32/esp32.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "device-drivers/proto/esp_rom.h"
#include "device-drivers/serial/serial.h"

#define ROM_BAUD 115200u
#define APP_MIN_ADDR 0x10000u    /* app partitions start here (not data) */
#define SYNC_TIMEOUT_MS 100      /* esptool's SYNC_TIMEOUT */
#define CONNECT_ATTEMPTS 7       /* esptool's DEFAULT_CONNECT_ATTEMPTS */
#define SYNC_TRIES 5             /* SYNC per connect attempt, as esptool */
#define EFUSE_IDLE_MS 2000       /* espefuse's EFUSE_BURN_TIMEOUT is 0.25 s
				  * per poll loop; a slow link needs more */
#define FLASH_BLOCK 0x400        /* the ROM's FLASH_WRITE_SIZE */
#define FLASH_SECTOR 0x1000
#define WRITE_BLOCK_ATTEMPTS 3   /* esptool's WRITE_BLOCK_ATTEMPTS */
#define MD5_LEN 16
#define GARBLED_GRACE_MS 30      /* after a garbled frame, before re-sending */
/* Register commands: the ROM answers at once (a few ms at 115200 baud
 * through a USB bridge), so a lost answer is re-sent after this, not
 * after the configured command timeout (which FLASH/MD5 commands keep). */
#define REG_TIMEOUT_MS 150
/* ... and, being cheap, re-sent more often than the configured retries:
 * at 1 % line noise a quarter of them is lost. */
#define REG_ATTEMPTS(retries) (2 + 3 * (retries))

/* eFuse words of BLOCK0 (the bank as the engine sees it): word 0 is
 * WR_DIS, words 1..5 are RD_REPEAT_DATA0..4. */
#define B0_WR_DIS 0
#define B0_RD_DIS_WORD 1
#define B0_RD_DIS_MASK 0x7fu

struct esp32 {
	serial_port port;
	esp_slip_rx rx;
	int timeout_ms, retries;
	unsigned baud;             /* asked for in the URI */
	drv_linkstat st;
	bool secure_dl;            /* the ROM runs in Secure Download Mode */
	bool dl_gone;              /* download mode was burned off: no answer */
	bool have_id;              /* mac/rev read (cached for a locked chip) */
	uint8_t mac[6];
	unsigned rev_major, rev_minor;
	bool lock_dis_download;    /* lock = DIS_DOWNLOAD_MODE (target option) */
	bool released;             /* the unit is finished: swap it */
	/* Every buffer a request or an answer passes through: for the
	 * identity's HMAC key block they carry the key (WRITE_REG to
	 * PGM_DATA, READ_REG of the block before it is hidden), so they live
	 * here, in the locked, undumpable private state (priv_secret), and
	 * esp32_forget() wipes them after an eFuse burn. */
	uint8_t arg[16];           /* a register request's data */
	uint8_t pkt[ESP_HDR_LEN + 16 + FLASH_BLOCK];
	uint8_t frame[ESP_SLIP_ENCODED_MAX(ESP_HDR_LEN + 16 + FLASH_BLOCK)];
	uint8_t raw[512];          /* bytes as read from the port */
};

void esp32_forget(drv_dev *d)
{
	struct esp32 *e = drv_priv(d);

	st_wipe(e->arg, sizeof(e->arg));
	st_wipe(e->pkt, sizeof(e->pkt));
	st_wipe(e->frame, sizeof(e->frame));
	st_wipe(e->raw, sizeof(e->raw));
	st_wipe(&e->rx, sizeof(e->rx));
	esp_slip_rx_init(&e->rx);
}

/* ---- the link ------------------------------------------------------------ */

static const char *op_name(uint8_t op)
{
	switch (op) {
	case ESP_OP_FLASH_BEGIN: return "FLASH_BEGIN";
	case ESP_OP_FLASH_DATA: return "FLASH_DATA";
	case ESP_OP_FLASH_END: return "FLASH_END";
	case ESP_OP_SYNC: return "SYNC";
	case ESP_OP_WRITE_REG: return "WRITE_REG";
	case ESP_OP_READ_REG: return "READ_REG";
	case ESP_OP_SPI_ATTACH: return "SPI_ATTACH";
	case ESP_OP_CHANGE_BAUDRATE: return "CHANGE_BAUDRATE";
	case ESP_OP_SPI_FLASH_MD5: return "SPI_FLASH_MD5";
	case ESP_OP_GET_SECURITY_INFO: return "GET_SECURITY_INFO";
	default: return "command";
	}
}

/* One request out as a SLIP frame. */
static int send_req(drv_dev *d, uint8_t op, const uint8_t *data, uint16_t n,
		    uint32_t chk)
{
	struct esp32 *e = drv_priv(d);
	size_t len = esp_req_build(op, data, n, chk, e->pkt, sizeof(e->pkt)), enc;

	if (!len)
		return ST_E_INVAL;
	enc = esp_slip_encode(e->pkt, len, e->frame, sizeof(e->frame));
	if (!enc)
		return ST_E_INVAL;
	return serial_write(&e->port, e->frame, enc, e->timeout_ms);
}

/* A garbled frame most likely was the answer: wait only a little longer
 * for another (a stale frame may have come first), then re-send. */
static void garble(bool *garbled, int64_t *deadline)
{
	int64_t soon = st_now_ms() + GARBLED_GRACE_MS;

	*garbled = true;
	if (*deadline > soon)
		*deadline = soon;
}

/* The response to op within timeout_ms.  Frames that do not parse are
 * counted as garbled and skipped; responses to another op (the extra SYNC
 * replies, a late answer to an earlier attempt) are skipped.  ST_E_TIMEOUT
 * when nothing fitting came; *garbled says whether a bad frame was seen. */
static int recv_resp(drv_dev *d, uint8_t op, int timeout_ms, esp_resp *out,
		     bool *garbled)
{
	struct esp32 *e = drv_priv(d);
	int64_t deadline = st_now_ms() + timeout_ms;
	uint8_t *buf = e->raw;

	for (;;) {
		int64_t left = deadline - st_now_ms();
		int n;

		if (left <= 0)
			return ST_E_TIMEOUT;
		n = serial_read(&e->port, buf, sizeof(e->raw), (int)left);
		if (n < 0)
			return n;
		for (int i = 0; i < n; i++) {
			enum esp_slip_event ev = esp_slip_rx_byte(&e->rx, buf[i]);

			if (ev == ESP_SLIP_BAD_ESCAPE || ev == ESP_SLIP_OVERLONG) {
				garble(garbled, &deadline);
				continue;
			}
			if (ev != ESP_SLIP_FRAME || e->rx.len == 0)
				continue;
			if (esp_resp_parse(e->rx.buf, e->rx.len, ESP_C3_ROM_STATUS_LEN,
					   out)) {
				garble(garbled, &deadline);
				continue;
			}
			if (out->op != op)
				continue;
			if (out->status > 1) { /* a status byte hit by noise */
				garble(garbled, &deadline);
				continue;
			}
			/* The rest of buf is dropped: one request, one answer. */
			return ST_OK;
		}
	}
}

/* Send op and wait for its answer, re-sending a bounded number of times
 * when the answer is missing or garbled (safe only for requests that may
 * arrive twice: every caller's op is, or says why not).  A ROM error
 * answer is returned as ST_E_DEVICE with out->error, not retried here. */
static int command_n(drv_dev *d, uint8_t op, const uint8_t *data, uint16_t n,
		     uint32_t chk, int timeout_ms, int attempts, esp_resp *out)
{
	struct esp32 *e = drv_priv(d);
	int rc = ST_E_TIMEOUT;

	e->st.commands++;
	for (int a = 0; a < attempts; a++) {
		bool garbled = false;

		if (a)
			e->st.retries++;
		e->st.attempts++;
		rc = send_req(d, op, data, n, chk);
		if (rc)
			break;
		rc = recv_resp(d, op, timeout_ms, out, &garbled);
		if (garbled)
			e->st.garbled++;
		if (rc == ST_E_TIMEOUT && !garbled)
			e->st.silent++;
		if (rc == ST_OK)
			return out->status ? ST_E_DEVICE : ST_OK;
		if (rc != ST_E_TIMEOUT)
			break;
	}
	if (rc == ST_E_TIMEOUT)
		drv_set_error(d, "ESP32 on %s: no valid answer to %s after %d attempt%s "
			      "(check the cable and that the chip is in its ROM "
			      "loader: hold BOOT/GPIO9 low while resetting)",
			      drv_port(d), op_name(op), attempts, attempts == 1 ? "" : "s");
	else if (rc == ST_E_UNPLUGGED)
		drv_set_error(d, "ESP32 on %s: the port went away during %s (unplugged?)",
			      drv_port(d), op_name(op));
	else if (rc)
		drv_set_error(d, "ESP32 on %s: %s: %s", drv_port(d), op_name(op),
			      st_strerror(rc));
	return rc;
}

static int command(drv_dev *d, uint8_t op, const uint8_t *data, uint16_t n,
		   uint32_t chk, esp_resp *out)
{
	struct esp32 *e = drv_priv(d);
	int t = e->timeout_ms;

	int attempts = 1 + e->retries;

	if (op == ESP_OP_READ_REG || op == ESP_OP_WRITE_REG ||
	    op == ESP_OP_GET_SECURITY_INFO) {
		if (t > REG_TIMEOUT_MS)
			t = REG_TIMEOUT_MS;
		attempts = REG_ATTEMPTS(e->retries);
	}
	return command_n(d, op, data, n, chk, t, attempts, out);
}

/* Say what a ROM error answer to op means. */
static int rom_error(drv_dev *d, const char *what, const esp_resp *r)
{
	struct esp32 *e = drv_priv(d);

	drv_set_error(d, "ESP32 on %s: the ROM refused %s (status %u, error 0x%02x)%s",
		      drv_port(d), what, r->status, r->error,
		      e->secure_dl ? ": the chip is in Secure Download Mode, which "
		      "allows no register or eFuse access" :
		      r->error == ESP_ROM_ERR_BAD_CRC ? ": the data checksum failed "
		      "(line noise?)" : "");
	return ST_E_DEVICE;
}

/* One READ_REG; a ROM error answer is retried like a lost one (noise on
 * the request can turn it into one the ROM refuses), except in Secure
 * Download Mode, where every READ_REG is refused. */
static int read_reg_once(drv_dev *d, uint32_t addr, uint32_t *val)
{
	struct esp32 *e = drv_priv(d);
	uint8_t b[4];
	esp_resp r;
	int rc = ST_E_DEVICE;

	esp_put_le32(b, addr);
	for (int a = 0; a <= e->retries && rc == ST_E_DEVICE; a++) {
		rc = command(d, ESP_OP_READ_REG, b, 4, 0, &r);
		if (rc == ST_E_DEVICE && (e->secure_dl || a == e->retries)) {
			char what[48];

			snprintf(what, sizeof(what), "READ_REG 0x%08x", addr);
			return rom_error(d, what, &r);
		}
	}
	if (!rc)
		*val = r.value;
	return rc;
}

/* READ_REG until two answers in a row agree: the ROM's answers carry no
 * checksum, and one bit hit by line noise must not become a wrong eFuse
 * value the station then acts on. */
static int read_reg(drv_dev *d, uint32_t addr, uint32_t *val)
{
	struct esp32 *e = drv_priv(d);
	uint32_t prev = 0, v = 0;
	int rc = read_reg_once(d, addr, &prev);

	for (int a = 0; !rc && a < 2 + 2 * e->retries; a++) {
		if ((rc = read_reg_once(d, addr, &v)))
			break;
		if (v == prev) {
			*val = v;
			return ST_OK;
		}
		e->st.garbled++;
		prev = v;
	}
	if (!rc) {
		drv_set_error(d, "ESP32 on %s: READ_REG 0x%08x answers keep changing "
			      "(0x%08x, 0x%08x): the line is too noisy; check the cable "
			      "and the ground", drv_port(d), addr, prev, v);
		rc = ST_E_PROTO;
	}
	return rc;
}

/* One WRITE_REG addr = val (mask all, no delay). */
static int write_reg_once(drv_dev *d, uint32_t addr, uint32_t val, int attempts)
{
	struct esp32 *e = drv_priv(d);
	uint8_t *b = e->arg;
	esp_resp r;
	int rc;

	esp_put_le32(b, addr);
	esp_put_le32(b + 4, val);
	esp_put_le32(b + 8, 0xffffffffu);
	esp_put_le32(b + 12, 0);
	rc = command_n(d, ESP_OP_WRITE_REG, b, 16, 0, e->timeout_ms < REG_TIMEOUT_MS ?
		       e->timeout_ms : REG_TIMEOUT_MS, attempts, &r);
	if (rc == ST_E_DEVICE) {
		char what[64];

		snprintf(what, sizeof(what), "WRITE_REG 0x%08x", addr);
		return rom_error(d, what, &r);
	}
	return rc;
}

/* WRITE_REG addr = val, then read it back until it holds val: a request
 * hit by noise may have written another value (the ROM checks no sum on
 * it).  Re-sending is safe: the same value lands twice.  Only for
 * registers that read back what was written; not for EFUSE_CMD (see
 * efuse_cmd). */
static int write_reg(drv_dev *d, uint32_t addr, uint32_t val)
{
	struct esp32 *e = drv_priv(d);
	uint32_t back = 0;
	int rc = ST_OK;

	for (int a = 0; a <= e->retries; a++) {
		rc = write_reg_once(d, addr, val, REG_ATTEMPTS(e->retries));
		if (rc == ST_E_DEVICE && !e->secure_dl)
			continue;
		if (rc || (rc = read_reg(d, addr, &back)))
			return rc;
		if (back == val)
			return ST_OK;
		e->st.garbled++;
	}
	if (!rc)
		drv_set_error(d, "ESP32 on %s: register 0x%08x reads 0x%08x after "
			      "writing 0x%08x: the line is too noisy or the chip is not "
			      "an ESP32-C3", drv_port(d), addr, back, val);
	return rc ? rc : ST_E_PROTO;
}

/* Read-modify-write of the field mask in addr, as espefuse's update_reg. */
static int update_reg(drv_dev *d, uint32_t addr, uint32_t mask, uint32_t val)
{
	uint32_t cur;
	int rc = read_reg(d, addr, &cur);

	if (rc)
		return rc;
	return write_reg(d, addr, (cur & ~mask) | ((val << __builtin_ctz(mask)) & mask));
}

/* GET_SECURITY_INFO once. */
static int security_info_once(drv_dev *d, uint32_t *flags, uint32_t *chip_id)
{
	esp_resp r;
	int rc = command(d, ESP_OP_GET_SECURITY_INFO, NULL, 0, 0, &r);

	if (rc == ST_E_DEVICE)
		return rom_error(d, "GET_SECURITY_INFO", &r);
	if (rc)
		return rc;
	if (r.data_len < ESP_SECINFO_LEN) {
		drv_set_error(d, "ESP32 on %s: GET_SECURITY_INFO answered %zu bytes, not "
			      "%d: not an ESP32-C3 ROM", drv_port(d), r.data_len,
			      ESP_SECINFO_LEN);
		return ST_E_PROTO;
	}
	*flags = esp_le32(r.data);
	*chip_id = esp_le32(r.data + 12);
	return ST_OK;
}

/* GET_SECURITY_INFO: flags and chip id (answered in Secure Download Mode),
 * asked until two answers agree (no checksum protects them either). */
static int security_info(drv_dev *d, uint32_t *flags, uint32_t *chip_id)
{
	struct esp32 *e = drv_priv(d);
	uint32_t f0, c0;
	int rc = security_info_once(d, &f0, &c0);

	for (int a = 0; !rc && a < 2 + 2 * e->retries; a++) {
		if ((rc = security_info_once(d, flags, chip_id)))
			break;
		if (*flags == f0 && *chip_id == c0)
			return ST_OK;
		e->st.garbled++;
		f0 = *flags;
		c0 = *chip_id;
	}
	if (!rc) {
		drv_set_error(d, "ESP32 on %s: GET_SECURITY_INFO answers keep changing: "
			      "the line is too noisy; check the cable and the ground",
			      drv_port(d));
		rc = ST_E_PROTO;
	}
	return rc;
}

/* ---- open: reset into the loader and SYNC -------------------------------- */

/* Set or clear a modem line; false when the port has none (a pty). */
static bool set_line(int fd, int line, bool on)
{
	return ioctl(fd, on ? TIOCMBIS : TIOCMBIC, &line) == 0;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* esptool's classic reset: EN low with IO0 high, then IO0 low as EN rises
 * (DTR drives IO0, RTS drives EN through the usual two-transistor
 * circuit), so the ROM starts its serial loader.  A port without the lines
 * (a pty, a bridge wired without them) is left alone: then the unit must
 * already sit in its loader (BOOT held at power-up). */
static bool classic_reset(int fd)
{
	if (!set_line(fd, TIOCM_DTR, false))
		return false;
	set_line(fd, TIOCM_RTS, true);
	sleep_ms(100);
	set_line(fd, TIOCM_DTR, true);
	set_line(fd, TIOCM_RTS, false);
	sleep_ms(50);
	set_line(fd, TIOCM_DTR, false);
	return true;
}

/* Reset (when possible) and SYNC until the ROM answers. */
static int connect_rom(drv_dev *d)
{
	struct esp32 *e = drv_priv(d);
	uint8_t sync[ESP_SYNC_DATA_LEN] = { 0x07, 0x07, 0x12, 0x20 };
	esp_resp r;
	int rc = ST_E_TIMEOUT;

	memset(sync + 4, 0x55, sizeof(sync) - 4);
	for (int a = 0; a < CONNECT_ATTEMPTS; a++) {
		classic_reset(e->port.fd);
		tcflush(e->port.fd, TCIFLUSH);
		esp_slip_rx_init(&e->rx);
		rc = command_n(d, ESP_OP_SYNC, sync, sizeof(sync), 0, SYNC_TIMEOUT_MS,
			       SYNC_TRIES, &r);
		if (rc == ST_OK || rc == ST_E_UNPLUGGED || rc == ST_E_IO)
			break;
	}
	if (rc == ST_E_TIMEOUT || rc == ST_E_DEVICE)
		drv_set_error(d, "ESP32 on %s: no answer to SYNC after %d attempts: "
			      "is a chip in its ROM loader there? (on a bridge without "
			      "DTR/RTS, hold BOOT/GPIO9 low while resetting or powering "
			      "the unit; a chip with download mode burned off never "
			      "answers)", drv_port(d), CONNECT_ATTEMPTS);
	if (rc)
		return rc == ST_E_DEVICE ? ST_E_TIMEOUT : rc;
	/* The ROM answers SYNC ESP_SYNC_REPLIES times: let the rest pass. */
	{
		bool g = false;

		while (recv_resp(d, ESP_OP_SYNC, 50, &r, &g) == ST_OK)
			;
	}
	return ST_OK;
}

/* Which chip is it?  The chip-detect magic register, or, in Secure
 * Download Mode (which refuses READ_REG), GET_SECURITY_INFO's chip id. */
static int detect_chip(drv_dev *d)
{
	struct esp32 *e = drv_priv(d);
	uint32_t magic = 0, flags = 0, chip = 0;
	int rc = security_info(d, &flags, &chip);

	if (rc && rc != ST_E_DEVICE)
		return rc;
	if (!rc && (flags & ESP_SECINFO_SECURE_DOWNLOAD_ENABLE)) {
		e->secure_dl = true;
		if (chip == ESP_C3_IMAGE_CHIP_ID)
			return ST_OK;
		drv_set_error(d, "%s: the chip is an ESP chip with image chip id %u, not "
			      "an ESP32-C3 (id %d): this driver serves the ESP32-C3 only",
			      drv_port(d), chip, ESP_C3_IMAGE_CHIP_ID);
		return ST_E_DEVICE;
	}
	rc = read_reg(d, ESP_CHIP_DETECT_MAGIC_REG, &magic);
	if (rc)
		return rc;
	if (!esp_c3_magic_ok(magic)) {
		drv_set_error(d, "%s: the chip answering is not an ESP32-C3 (chip-detect "
			      "magic 0x%08x%s): this driver serves the ESP32-C3 only; "
			      "use the right profile and programmer for this unit",
			      drv_port(d), magic, magic == 0x00f01d83u ? ", an ESP32" :
			      magic == 0x000007c6u ? ", an ESP32-S2" :
			      magic == 0x9u ? ", an ESP32-S3" : "");
		return ST_E_DEVICE;
	}
	return ST_OK;
}

/* The rates the host side can be set to (termios), one of which the
 * chip is asked for: a rate the host cannot follow must be refused before
 * the chip switches. */
static const struct { unsigned b; speed_t s; } bauds[] = {
	{ 115200, B115200 }, { 230400, B230400 }, { 460800, B460800 },
	{ 921600, B921600 }, { 1000000, B1000000 }, { 1500000, B1500000 },
	{ 2000000, B2000000 },
};

static bool baud_known(unsigned long v)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(bauds); i++)
		if (bauds[i].b == v)
			return true;
	return false;
}

/* Options in the URI query: baud=N (after SYNC at 115200) and
 * lock=secure_download|dis_download_mode (also from the profile). */
static int parse_opts(drv_dev *d, const char *q, struct esp32 *e)
{
	while (q && *q) {
		size_t n = strcspn(q, "&");
		char *end;

		if (!strncmp(q, "baud=", 5)) {
			unsigned long v = strtoul(q + 5, &end, 10);

			if (end != q + n || !baud_known(v)) {
				drv_set_error(d, "esp32:%s: baud rate '%.*s' is not one the "
					      "host can set: use 115200, 230400, 460800, "
					      "921600, 1000000, 1500000 or 2000000",
					      drv_port(d), (int)(n - 5), q + 5);
				return ST_E_CONFIG;
			}
			e->baud = (unsigned)v;
		} else if (n == 22 && !strncmp(q, "lock=dis_download_mode", n)) {
			e->lock_dis_download = true;
		} else if (n == 20 && !strncmp(q, "lock=secure_download", n)) {
			e->lock_dis_download = false;
		} else {
			drv_set_error(d, "esp32:%s: unknown option '%.*s' (known: baud=N, "
				      "lock=secure_download, lock=dis_download_mode)",
				      drv_port(d), (int)n, q);
			return ST_E_CONFIG;
		}
		q += n + (q[n] == '&');
	}
	return ST_OK;
}

static int set_host_baud(struct esp32 *e, unsigned baud)
{
	struct termios tio;

	for (size_t i = 0; i < ST_ARRAY_SIZE(bauds); i++) {
		if (bauds[i].b != baud)
			continue;
		if (tcgetattr(e->port.fd, &tio))
			return ST_E_IO;
		cfsetispeed(&tio, bauds[i].s);
		cfsetospeed(&tio, bauds[i].s);
		return tcsetattr(e->port.fd, TCSANOW, &tio) ? ST_E_IO : ST_OK;
	}
	return ST_E_CONFIG;
}

/* CHANGE_BAUDRATE (new, 0 for the ROM), then the host follows. */
static int change_baud(drv_dev *d)
{
	struct esp32 *e = drv_priv(d);
	uint8_t b[8];
	esp_resp r;
	int rc;

	if (e->baud == ROM_BAUD)
		return ST_OK;
	esp_put_le32(b, e->baud);
	esp_put_le32(b + 4, 0);
	rc = command_n(d, ESP_OP_CHANGE_BAUDRATE, b, 8, 0, e->timeout_ms, 1, &r);
	if (rc == ST_E_DEVICE)
		return rom_error(d, "CHANGE_BAUDRATE", &r);
	if (rc)
		return rc;
	if ((rc = set_host_baud(e, e->baud))) {
		drv_set_error(d, "esp32:%s: cannot set the host side to %u baud",
			      drv_port(d), e->baud);
		return rc;
	}
	sleep_ms(50); /* esptool: let what the switch garbled pass */
	tcflush(e->port.fd, TCIFLUSH);
	esp_slip_rx_init(&e->rx);
	return ST_OK;
}

static int e_open(drv_dev *d, const char *path, const drv_opts *opts)
{
	struct esp32 *e = drv_priv(d);
	const char *q = strchr(path, '?');
	char dev[256], err[320];
	int rc;

	e->port.fd = -1;
	e->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 3000;
	e->retries = opts->retries > 0 ? opts->retries : opts->retries < 0 ? 0 : 2;
	e->baud = ROM_BAUD;
	if ((rc = parse_opts(d, opts->target_opts, e)) ||
	    (rc = parse_opts(d, q ? q + 1 : NULL, e)))
		return rc;
	snprintf(dev, sizeof(dev), "%.*s", (int)strcspn(path, "?"), path);
	rc = serial_open(&e->port, dev, err, sizeof(err));
	if (rc) {
		drv_set_error(d, "%s", err);
		return rc;
	}
	esp_slip_rx_init(&e->rx);
	rc = connect_rom(d);
	if (rc == ST_E_TIMEOUT) {
		/* A station killed while the factory app ran (it had booted it
		 * for an identity op) leaves the chip in the app, which ignores
		 * SYNC: on a port without DTR/RTS nothing else brings the loader
		 * back.  Ask an app that answers to restart into it. */
		char why[512];

		snprintf(why, sizeof(why), "%s", drv_errmsg(d));
		esp32_app_leave_if_running(d);
		esp_slip_rx_init(&e->rx);
		if ((rc = connect_rom(d)) == ST_E_TIMEOUT)
			drv_set_error(d, "%s", why);
	}
	if (!rc && !(rc = detect_chip(d)))
		rc = change_baud(d);
	if (rc)
		serial_close(&e->port);
	return rc;
}

static void e_close(drv_dev *d)
{
	struct esp32 *e = drv_priv(d);

	serial_close(&e->port);
}

static void e_link_stats(drv_dev *d, drv_linkstat *out)
{
	struct esp32 *e = drv_priv(d);

	*out = e->st;
}

static const char *e_fw_version(drv_dev *d)
{
	(void)d;
	return "ESP32-C3 ROM loader";
}

/* ---- eFuse ---------------------------------------------------------------- */

/* Read bank (eFuse block) into out (32 bytes, a 6-word block zero-padded). */
static int read_block(drv_dev *d, unsigned bank, uint8_t out[DRV_FUSE_BANK_LEN])
{
	const esp_c3_block *b = esp_c3_block_get(bank);
	uint32_t v;
	int rc;

	memset(out, 0, DRV_FUSE_BANK_LEN);
	for (unsigned w = 0; w < b->words; w++) {
		if ((rc = read_reg(d, b->rd_addr + 4 * w, &v)))
			return rc;
		esp_put_le32(out + 4 * w, v);
	}
	return ST_OK;
}

/* The faulty-word mask of bank: BLOCK0 from RD_REPEAT_ERR0..4 (words
 * 1..5; WR_DIS has none), an RS block from its error count and fail bit
 * in RD_RS_ERR0/1 (the code cannot say which word: all of them). */
static int block_faults(drv_dev *d, unsigned bank, uint8_t *faulty)
{
	const esp_c3_block *b = esp_c3_block_get(bank);
	uint32_t v, regs[2];
	int rc;

	*faulty = 0;
	if (!b->rs_coded) {
		for (unsigned i = 0; i < 5; i++) {
			if ((rc = read_reg(d, ESP_C3_EFUSE_RD_REPEAT_ERR(i), &v)))
				return rc;
			if (v)
				*faulty |= (uint8_t)(1u << (i + 1));
		}
		return ST_OK;
	}
	if ((rc = read_reg(d, ESP_C3_EFUSE_RD_RS_ERR0, &regs[0])) ||
	    (rc = read_reg(d, ESP_C3_EFUSE_RD_RS_ERR1, &regs[1])))
		return rc;
	if ((b->err_reg >= 0 && (regs[b->err_reg] >> b->err_num_shift) & 7) ||
	    (b->fail_reg >= 0 && (regs[b->fail_reg] >> b->fail_bit) & 1))
		*faulty = (uint8_t)((1u << b->words) - 1);
	return ST_OK;
}

/* Refuse what the ROM cannot do now; 0 when eFuses can be accessed. */
static int efuse_ready(drv_dev *d, unsigned bank, const char *what)
{
	struct esp32 *e = drv_priv(d);

	if (!esp_c3_block_get(bank)) {
		drv_set_error(d, "ESP32-C3 on %s: %s of eFuse block %u: the chip has "
			      "BLOCK0..BLOCK10", drv_port(d), what, bank);
		return ST_E_INVAL;
	}
	if (e->secure_dl || e->dl_gone) {
		drv_set_error(d, "ESP32-C3 on %s: %s of eFuse block %u refused: the chip "
			      "is in %s, which allows no eFuse access (it is locked)",
			      drv_port(d), what, bank, e->dl_gone ? "no download mode" :
			      "Secure Download Mode");
		return ST_E_LOCKED;
	}
	return ST_OK;
}

static int e_fuse_read(drv_dev *d, unsigned bank, uint8_t out[DRV_FUSE_BANK_LEN])
{
	int rc = efuse_ready(d, bank, "read");

	return rc ? rc : read_block(d, bank, out);
}

static int e_fuse_read_status(drv_dev *d, unsigned bank, uint8_t out[DRV_FUSE_BANK_LEN],
			      uint8_t *faulty)
{
	int rc = efuse_ready(d, bank, "read");

	if (!rc)
		rc = read_block(d, bank, out);
	if (!rc)
		rc = block_faults(d, bank, faulty);
	return rc;
}

/* Poll EFUSE_CMD until the controller is idle (espefuse wait_efuse_idle,
 * which reads twice for the READ_CMD erratum). */
static int efuse_idle(drv_dev *d)
{
	int64_t deadline = st_now_ms() + EFUSE_IDLE_MS;
	uint32_t v;
	int rc;

	do {
		if ((rc = read_reg(d, ESP_C3_EFUSE_CMD, &v)))
			return rc;
		if (!(v & (ESP_C3_EFUSE_PGM_CMD | ESP_C3_EFUSE_READ_CMD))) {
			if ((rc = read_reg(d, ESP_C3_EFUSE_CMD, &v)))
				return rc;
			if (!(v & (ESP_C3_EFUSE_PGM_CMD | ESP_C3_EFUSE_READ_CMD)))
				return ST_OK;
		}
	} while (st_now_ms() < deadline);
	drv_set_error(d, "ESP32-C3 on %s: the eFuse controller stayed busy (EFUSE_CMD "
		      "0x%08x) for %d ms: power-cycle the unit and run it again",
		      drv_port(d), v, EFUSE_IDLE_MS);
	return ST_E_DEVICE;
}

/* Write EFUSE_CMD once: a re-sent PGM would program the block a second
 * time, so a lost answer is not retried here (the caller reads the block
 * to learn what happened). */
static int efuse_cmd(drv_dev *d, uint32_t cmd)
{
	return write_reg_once(d, ESP_C3_EFUSE_CMD, cmd, 1);
}

/* CONF = READ_OP_CODE, CMD = READ, wait: the RD registers (and the error
 * registers) reload from the eFuse array. */
static int efuse_reload(drv_dev *d)
{
	int rc;

	if ((rc = efuse_idle(d)) ||
	    (rc = write_reg(d, ESP_C3_EFUSE_CONF, ESP_C3_EFUSE_READ_OP_CODE)))
		return rc;
	rc = efuse_cmd(d, ESP_C3_EFUSE_READ_CMD);
	if (rc == ST_E_TIMEOUT || rc == ST_E_PROTO)
		rc = ST_OK; /* READ may be sent again: the idle poll tells */
	return rc ? rc : efuse_idle(d);
}

static int clear_pgm(drv_dev *d)
{
	int rc = efuse_idle(d);

	for (unsigned i = 0; !rc && i < 8; i++)
		rc = write_reg(d, ESP_C3_EFUSE_PGM_DATA(i), 0);
	for (unsigned i = 0; !rc && i < 3; i++)
		rc = write_reg(d, ESP_C3_EFUSE_PGM_CHECK(i), 0);
	return rc;
}

/* Which BLOCK0 field the bits `bits` of word w touch that WR_DIS now
 * protects; NULL when none. */
static const esp_c3_field *protected_field(uint32_t wr_dis, unsigned w, uint32_t bits)
{
	const esp_c3_field *f;

	for (size_t i = 0; (f = esp_c3_field_at(i)); i++) {
		uint32_t m;

		if (f->block != 0 || f->word != w || f->wr_dis_bit < 0 || f->len > 32)
			continue;
		m = (uint32_t)(((1ull << f->len) - 1) << f->pos);
		if ((bits & m) && (wr_dis >> f->wr_dis_bit) & 1)
			return f;
	}
	return NULL;
}

/* Check the burn of value into bank against what the chip holds; *pgm
 * gets the words to program (BLOCK0: only the new bits, as espefuse
 * writes them; an RS block: all of it).  ST_OK with *nothing set when
 * the bank already holds value; ST_E_FUSE_CONFLICT when it cannot be. */
static int plan_burn(drv_dev *d, unsigned bank, const uint8_t value[DRV_FUSE_BANK_LEN],
		     const uint8_t cur[DRV_FUSE_BANK_LEN], uint8_t faulty,
		     uint32_t wr_dis, uint32_t rd_dis, uint8_t pgm[DRV_FUSE_BANK_LEN],
		     bool *nothing)
{
	const esp_c3_block *b = esp_c3_block_get(bank);
	bool any = false;

	*nothing = false;
	memset(pgm, 0, DRV_FUSE_BANK_LEN);
	for (unsigned w = b->words; w < DRV_FUSE_BANK_LEN / 4; w++)
		if (esp_le32(value + 4 * w)) {
			drv_set_error(d, "ESP32-C3 on %s: eFuse block %u has %u words; "
				      "the burn asks for word %u: nothing burned",
				      drv_port(d), bank, b->words, w);
			return ST_E_FUSE_CONFLICT;
		}
	if (faulty) {
		drv_set_error(d, "ESP32-C3 on %s: eFuse block %u (%s) reads with %s "
			      "errors (faulty words %02x): nothing burned; set the unit "
			      "aside", drv_port(d), bank, b->name, b->rs_coded ? "RS" :
			      "repeat", faulty);
		return ST_E_FUSE_CONFLICT;
	}
	for (unsigned w = 0; w < b->words; w++) {
		uint32_t c = esp_le32(cur + 4 * w), v = esp_le32(value + 4 * w);

		if (c & ~v) {
			drv_set_error(d, "ESP32-C3 on %s: eFuse block %u word %u holds "
				      "0x%08x; 0x%08x would need a bit to go 1->0: "
				      "nothing burned", drv_port(d), bank, w, c, v);
			return ST_E_FUSE_CONFLICT;
		}
		any |= (v & ~c) != 0;
	}
	if (!any) {
		*nothing = true;
		return ST_OK;
	}
	if (b->rd_dis_bit >= 0 && (rd_dis >> b->rd_dis_bit) & 1) {
		drv_set_error(d, "ESP32-C3 on %s: eFuse block %u (%s) is read-protected: "
			      "what it holds cannot be seen, so nothing is burned into "
			      "it", drv_port(d), bank, b->name);
		return ST_E_FUSE_CONFLICT;
	}
	if (b->wr_dis_bit >= 0 && (wr_dis >> b->wr_dis_bit) & 1) {
		drv_set_error(d, "ESP32-C3 on %s: eFuse block %u (%s) is write-protected "
			      "(WR_DIS bit %d): nothing burned", drv_port(d), bank,
			      b->name, b->wr_dis_bit);
		return ST_E_FUSE_CONFLICT;
	}
	if (b->rs_coded) {
		for (unsigned w = 0; w < b->words; w++)
			if (esp_le32(cur + 4 * w)) {
				drv_set_error(d, "ESP32-C3 on %s: eFuse block %u (%s) is "
					      "already programmed: an RS-coded block is "
					      "programmed once, whole; nothing burned",
					      drv_port(d), bank, b->name);
				return ST_E_FUSE_CONFLICT;
			}
		memcpy(pgm, value, DRV_FUSE_BANK_LEN);
		return ST_OK;
	}
	for (unsigned w = 0; w < b->words; w++) {
		uint32_t add = esp_le32(value + 4 * w) & ~esp_le32(cur + 4 * w);
		const esp_c3_field *f = protected_field(wr_dis, w, add);

		if (f) {
			drv_set_error(d, "ESP32-C3 on %s: eFuse field %s is write-protected "
				      "(WR_DIS bit %d): nothing burned", drv_port(d),
				      f->name, f->wr_dis_bit);
			return ST_E_FUSE_CONFLICT;
		}
		esp_put_le32(pgm + 4 * w, add);
	}
	return ST_OK;
}

/* Just before CMD=PGM: every programming register still holds what the
 * burn needs (a later request hit by noise could have written another
 * register than it named). */
static int pgm_holds(drv_dev *d, const uint8_t pgm[DRV_FUSE_BANK_LEN],
		     const uint8_t *check)
{
	uint32_t v;
	int rc;

	for (unsigned i = 0; i < 11; i++) {
		uint32_t want = i < 8 ? esp_le32(pgm + 4 * i) :
				check ? esp_le32(check + 4 * (i - 8)) : 0;
		uint32_t addr = i < 8 ? ESP_C3_EFUSE_PGM_DATA(i) : ESP_C3_EFUSE_PGM_CHECK(i - 8);

		if ((rc = read_reg(d, addr, &v)))
			return rc;
		if (v != want && (rc = write_reg(d, addr, want)))
			return rc;
	}
	return ST_OK;
}

/* The controller's programming sequence for one block, as espefuse runs it:
 * timing, clear, PGM_DATA (+ RS check bytes), CONF=WRITE, CMD=PGM|block,
 * wait, clear, CONF=READ, CMD=READ, wait. */
static int program_block_in(drv_dev *d, unsigned bank, const uint8_t pgm[DRV_FUSE_BANK_LEN],
			    uint8_t check[ESP_C3_RS_CHECK])
{
	const esp_c3_block *b = esp_c3_block_get(bank);
	int rc;

	if ((rc = update_reg(d, ESP_C3_EFUSE_DAC_CONF, ESP_C3_EFUSE_DAC_NUM_M, 0xFF)) ||
	    (rc = update_reg(d, ESP_C3_EFUSE_DAC_CONF, ESP_C3_EFUSE_DAC_CLK_DIV_M, 0x28)) ||
	    (rc = update_reg(d, ESP_C3_EFUSE_WR_TIM_CONF1, ESP_C3_EFUSE_PWR_ON_NUM_M,
			     0x3000)) ||
	    (rc = update_reg(d, ESP_C3_EFUSE_WR_TIM_CONF2, ESP_C3_EFUSE_PWR_OFF_NUM_M,
			     0x190)) ||
	    (rc = clear_pgm(d)))
		return rc;
	for (unsigned i = 0; i < 8; i++)
		if ((rc = write_reg(d, ESP_C3_EFUSE_PGM_DATA(i), esp_le32(pgm + 4 * i))))
			return rc;
	if (b->rs_coded) {
		esp_rs_encode(pgm, check);
		for (unsigned i = 0; i < 3; i++)
			if ((rc = write_reg(d, ESP_C3_EFUSE_PGM_CHECK(i),
					    esp_le32(check + 4 * i))))
				return rc;
	}
	if ((rc = efuse_idle(d)) ||
	    (rc = write_reg(d, ESP_C3_EFUSE_CONF, ESP_C3_EFUSE_WRITE_OP_CODE)) ||
	    (rc = pgm_holds(d, pgm, b->rs_coded ? check : NULL)))
		return rc;
	rc = efuse_cmd(d, ESP_C3_EFUSE_PGM_CMD | (bank << ESP_C3_EFUSE_CMD_BLK_SHIFT));
	if (rc)
		return rc;
	if ((rc = efuse_idle(d)) || (rc = clear_pgm(d)))
		return rc;
	return efuse_reload(d);
}

static int program_block(drv_dev *d, unsigned bank, const uint8_t pgm[DRV_FUSE_BANK_LEN])
{
	uint8_t check[ESP_C3_RS_CHECK];
	int rc = program_block_in(d, bank, pgm, check);

	st_wipe(check, sizeof(check));   /* RS bytes of a key block: of the key */
	return rc;
}

/* Lost answer to CMD=PGM: did the chip get it?  PGM_DATA is cleared only
 * by us after a program, and the controller is idle again either way;
 * reload and compare: unchanged means it never arrived. */
static int program_lost(drv_dev *d, unsigned bank, const uint8_t before[DRV_FUSE_BANK_LEN],
			bool *programmed)
{
	uint8_t now[DRV_FUSE_BANK_LEN];
	int rc;

	if (!(rc = efuse_idle(d)) && !(rc = efuse_reload(d)) &&
	    !(rc = read_block(d, bank, now)))
		*programmed = memcmp(now, before, sizeof(now)) != 0;
	st_wipe(now, sizeof(now));
	return rc;
}

/* e_fuse_burn's work, with its block buffers given by the caller, which
 * wipes them: for a key block (esp32_identity.c) they hold the key. */
static int fuse_burn_in(drv_dev *d, unsigned bank, const uint8_t value[DRV_FUSE_BANK_LEN],
			uint8_t readback[DRV_FUSE_BANK_LEN], uint8_t cur[DRV_FUSE_BANK_LEN],
			uint8_t pgm[DRV_FUSE_BANK_LEN])
{
	uint8_t b0[DRV_FUSE_BANK_LEN];
	uint8_t faulty = 0;
	bool nothing = false, programmed = true;
	int rc = efuse_ready(d, bank, "burn");

	if (rc)
		return rc;
	if ((rc = read_block(d, bank, cur)) || (rc = block_faults(d, bank, &faulty)) ||
	    (rc = read_block(d, 0, b0)))
		return rc;
	rc = plan_burn(d, bank, value, cur, faulty, esp_le32(b0 + 4 * B0_WR_DIS),
		       esp_le32(b0 + 4 * B0_RD_DIS_WORD) & B0_RD_DIS_MASK, pgm, &nothing);
	if (rc)
		return rc;
	if (!nothing) {
		rc = program_block(d, bank, pgm);
		if (rc == ST_E_TIMEOUT || rc == ST_E_PROTO) {
			/* Only the CMD write is not re-sent: find out whether
			 * it arrived, and send it once more only if not. */
			int rc2 = program_lost(d, bank, cur, &programmed);

			if (rc2)
				return rc2;
			rc = programmed ? ST_OK : program_block(d, bank, pgm);
		}
		if (rc)
			return rc;
		/* A READ or PGM command that noise turned into another value is
		 * answered "ok" all the same: a block that reads unchanged was
		 * not programmed (or not reloaded): reload, and program again
		 * only if it still reads as before. */
		for (int a = 0; a < 2; a++) {
			if ((rc = read_block(d, bank, readback)))
				return rc;
			if (memcmp(readback, cur, DRV_FUSE_BANK_LEN))
				return ST_OK;
			if ((rc = efuse_reload(d)) || (rc = read_block(d, bank, readback)))
				return rc;
			if (memcmp(readback, cur, DRV_FUSE_BANK_LEN))
				return ST_OK;
			if ((rc = program_block(d, bank, pgm)))
				return rc;
		}
	}
	return read_block(d, bank, readback);
}

static int e_fuse_burn(drv_dev *d, unsigned bank, const uint8_t value[DRV_FUSE_BANK_LEN],
		       uint32_t request_id, uint8_t readback[DRV_FUSE_BANK_LEN])
{
	uint8_t cur[DRV_FUSE_BANK_LEN], pgm[DRV_FUSE_BANK_LEN];
	int rc;

	(void)request_id; /* a retry is recognised by reading the block first */
	rc = fuse_burn_in(d, bank, value, readback, cur, pgm);
	st_wipe(cur, sizeof(cur));
	st_wipe(pgm, sizeof(pgm));
	esp32_forget(d);
	return rc;
}

/* Reset the chip as esptool's `run` does (FLASH_BEGIN of nothing, then
 * FLASH_END asking for a reboot), or with DTR/RTS when the port has them,
 * and SYNC again.  With the fixture holding GPIO9 (BOOT) low the ROM comes
 * back in its loader, having read its eFuses anew. */
static int rom_reset(drv_dev *d)
{
	struct esp32 *e = drv_priv(d);
	uint8_t b[20] = { 0 }, fin[4] = { 0 };
	esp_resp r;
	int rc;

	esp_put_le32(b + 8, FLASH_BLOCK);
	rc = command(d, ESP_OP_FLASH_BEGIN, b, 20, 0, &r);
	if (rc == ST_OK) /* 0: reboot; the answer may be lost in the reset */
		(void)command_n(d, ESP_OP_FLASH_END, fin, 4, 0, e->timeout_ms, 1, &r);
	else if (rc != ST_E_DEVICE)
		return rc;
	sleep_ms(50);
	esp32_app_leave_if_running(d); /* FLASH_END may have booted the app */
	return connect_rom(d);
}

/* The lock: ENABLE_SECURITY_DOWNLOAD (the ROM then serves only the secure
 * download commands), or DIS_DOWNLOAD_MODE (no loader at all) when the
 * profile says lock=dis_download_mode.  Burned as one BLOCK0 bit; the ROM
 * applies it at the READ that follows, so the answer to that may be lost:
 * reconnect and ask GET_SECURITY_INFO what the chip is now. */
static int e_set_lifecycle(drv_dev *d, uint8_t state)
{
	struct esp32 *e = drv_priv(d);
	const esp_c3_field *f = esp_c3_field_find(e->lock_dis_download ?
						  "DIS_DOWNLOAD_MODE" :
						  "ENABLE_SECURITY_DOWNLOAD");
	uint8_t cur[DRV_FUSE_BANK_LEN], val[DRV_FUSE_BANK_LEN], back[DRV_FUSE_BANK_LEN];
	uint32_t flags = 0, chip = 0;
	int rc;

	if (state != DRV_LC_LOCKED) {
		drv_set_error(d, "ESP32-C3 on %s: the chip has no '%s' lifecycle state; "
			      "a plan for it ends with state = \"locked\"", drv_port(d),
			      state == DRV_LC_OPEN ? "open" : "provisioned");
		return ST_E_INVAL;
	}
	if (e->secure_dl || e->dl_gone)
		return ST_OK; /* already locked */
	if ((rc = read_block(d, 0, cur)))
		return rc;
	memcpy(val, cur, sizeof(val));
	esp_put_le32(val + 4 * f->word, esp_le32(cur + 4 * f->word) | (1u << f->pos));
	rc = e_fuse_burn(d, 0, val, 0, back);
	if (rc == ST_OK && !(esp_le32(back + 4 * f->word) & (1u << f->pos))) {
		drv_set_error(d, "ESP32-C3 on %s: %s reads 0 after its burn", drv_port(d),
			      f->name);
		return ST_E_VERIFY;
	}
	if (rc && !st_err_is_link(rc) && rc != ST_E_DEVICE)
		return rc;
	/* The chip now either refuses register reads (secure download), or
	 * will not answer after its next reset (download mode off). */
	if (e->lock_dis_download) {
		/* After a reset the loader must no longer answer at all. */
		if (!rc && (rc = rom_reset(d)) != ST_E_TIMEOUT) {
			if (!rc)
				drv_set_error(d, "ESP32-C3 on %s: DIS_DOWNLOAD_MODE was "
					      "burned but the ROM loader still answers "
					      "after a reset", drv_port(d));
			return rc ? rc : ST_E_VERIFY;
		}
		e->dl_gone = true;
		return ST_OK;
	}
	if (rc && (rc = connect_rom(d)))
		return rc;
	if ((rc = security_info(d, &flags, &chip)))
		return rc;
	if (!(flags & ESP_SECINFO_SECURE_DOWNLOAD_ENABLE)) {
		/* The ROM takes the mode from the eFuses at reset: reset it
		 * (the fixture holds GPIO9 low, so it comes back in its loader)
		 * and ask again. */
		if ((rc = rom_reset(d)) || (rc = security_info(d, &flags, &chip)))
			return rc;
	}
	e->secure_dl = (flags & ESP_SECINFO_SECURE_DOWNLOAD_ENABLE) != 0;
	if (!e->secure_dl) {
		drv_set_error(d, "ESP32-C3 on %s: ENABLE_SECURITY_DOWNLOAD was burned but "
			      "the ROM does not report Secure Download Mode (flags "
			      "0x%08x)", drv_port(d), flags);
		return ST_E_VERIFY;
	}
	return ST_OK;
}

/* ---- identify ------------------------------------------------------------- */

/* Factory MAC (BLOCK1 words 0..1) and wafer revision (BLOCK1 words 3, 5),
 * read as esptool's read_mac / get_{major,minor}_chip_version do. */
static int read_identity(drv_dev *d)
{
	struct esp32 *e = drv_priv(d);
	uint8_t b1[DRV_FUSE_BANK_LEN];
	uint32_t m0, m1, w3, w5;
	int rc = read_block(d, 1, b1);

	if (rc)
		return rc;
	m0 = esp_le32(b1);
	m1 = esp_le32(b1 + 4);
	w3 = esp_le32(b1 + 12);
	w5 = esp_le32(b1 + 20);
	e->mac[0] = (uint8_t)(m1 >> 8);
	e->mac[1] = (uint8_t)m1;
	e->mac[2] = (uint8_t)(m0 >> 24);
	e->mac[3] = (uint8_t)(m0 >> 16);
	e->mac[4] = (uint8_t)(m0 >> 8);
	e->mac[5] = (uint8_t)m0;
	e->rev_major = (w5 >> 24) & 3;
	e->rev_minor = ((w5 >> 23) & 1) << 3 | ((w3 >> 18) & 7);
	e->have_id = true;
	return ST_OK;
}

/* The unit ID from the factory app's IDENTIFY, for a chip in Secure
 * Download Mode: it must have the ROM side's form (MAC, wafer revision,
 * "ESP32-C3"), so a resumed unit keeps the ID its record was opened with. */
static int app_identity(drv_dev *d)
{
	struct esp32 *e = drv_priv(d);
	uint8_t uid[DRV_UID_LEN];
	char hex[2 * DRV_UID_LEN + 1];
	int rc = esp32_app_identify(d, uid);

	if (rc)
		return rc;
	if (memcmp(uid + 8, "ESP32-C3", 8) ||
	    !memcmp(uid, (uint8_t[6]){ 0 }, 6) || uid[6] > 3 || uid[7] > 15) {
		st_hex(uid, DRV_UID_LEN, hex);
		drv_set_error(d, "the app's IDENTIFY gave unit %s, which is not an "
			      "ESP32-C3 unit ID (factory MAC, wafer revision, "
			      "\"ESP32-C3\")", hex);
		return ST_E_VERIFY;
	}
	memcpy(e->mac, uid, 6);
	e->rev_major = uid[6];
	e->rev_minor = uid[7];
	e->have_id = true;
	return ST_OK;
}

static int e_identify(drv_dev *d, drv_info *info)
{
	struct esp32 *e = drv_priv(d);
	uint8_t b0[DRV_FUSE_BANK_LEN];
	bool locked = e->secure_dl || e->dl_gone;
	int rc;

	memset(info, 0, sizeof(*info));
	if (e->released) {
		drv_set_error(d, "ESP32-C3 on %s: this unit is finished: put the next "
			      "one in the fixture (held in its ROM loader) and start again",
			      drv_port(d));
		return ST_E_NO_TARGET;
	}
	if (!locked) {
		if ((rc = read_identity(d)) || (rc = read_block(d, 0, b0)))
			return rc;
		/* ENABLE_SECURITY_DOWNLOAD or DIS_DOWNLOAD_MODE burned but not
		 * yet in force (no reset since): locked all the same. */
		locked = esp_le32(b0 + 16) & (1u << 0 | 1u << 5);
	}
	/* A chip opened locked refuses READ_REG: its MAC cannot be read over
	 * the ROM.  In Secure Download Mode the factory app (which Secure
	 * Boot has verified) reads it: a unit locked by a run that was cut
	 * before its PASS is identified, and the engine resumes it. */
	if (!e->have_id && e->secure_dl && !e->dl_gone && (rc = app_identity(d))) {
		char why[512];

		snprintf(why, sizeof(why), "%s", drv_errmsg(d));
		drv_set_error(d, "ESP32-C3 on %s: the chip is locked (Secure Download "
			      "Mode): its factory MAC, the unit ID, cannot be read over "
			      "the ROM loader, and the factory app did not give it "
			      "either (%s); set it aside (its eFuses can be read "
			      "offline only)", drv_port(d), why);
		return rc == ST_E_VERIFY ? rc : ST_E_LOCKED;
	}
	if (!e->have_id) {
		drv_set_error(d, "ESP32-C3 on %s: the chip is locked (%s): its factory "
			      "MAC, the unit ID, cannot be read over the ROM loader; "
			      "set it aside (its eFuses can be read offline only)",
			      drv_port(d), e->dl_gone ? "download mode disabled" :
			      "Secure Download Mode");
		return ST_E_LOCKED;
	}
	{
		memcpy(info->uid, e->mac, 6);
		info->uid[6] = (uint8_t)e->rev_major;
		info->uid[7] = (uint8_t)e->rev_minor;
		memcpy(info->uid + 8, "ESP32-C3", 8);
	}
	st_hex(info->uid, DRV_UID_LEN, info->uid_hex);
	snprintf(info->model, sizeof(info->model), "ESP32-C3 v%u.%u", e->rev_major,
		 e->rev_minor);
	snprintf(info->fw_version, sizeof(info->fw_version), "%s", e_fw_version(d));
	info->lifecycle = locked ? DRV_LC_LOCKED : DRV_LC_OPEN;
	info->fuse_banks = ESP_C3_EFUSE_BLOCKS;
	info->bitprog_banks = 1u << 0; /* BLOCK0: bit by bit; 1..10: RS, whole */
	return ST_OK;
}

/* A C3 fixture holds one unit, which the technician swaps: after this
 * the slot reports no unit, so the run goes on with the other slots. */
static int e_release(drv_dev *d)
{
	struct esp32 *e = drv_priv(d);

	e->released = true;
	return ST_OK;
}

/* ---- what the ROM loader cannot do ---------------------------------------- */

static int no_identity(drv_dev *d, const char *what)
{
	drv_set_error(d, "ESP32-C3 on %s: %s: the chip's ROM loader cannot make, hold "
		      "or use a device key (the ESP32-C3 identity needs the "
		      "esp_secure_cert scheme, docs/esp32.md)", drv_port(d), what);
	return ST_E_DEVICE;
}

static int e_keygen(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN])
{
	(void)pub;
	return no_identity(d, "no on-chip key generation");
}

static int e_write_cert(drv_dev *d, const uint8_t *der, size_t len)
{
	(void)der;
	(void)len;
	return no_identity(d, "no certificate slot");
}

/* ---- flash ---------------------------------------------------------------- */

/* SPI_ATTACH (default pins), once per open; the ROM needs it before flash. */
static int spi_attach(drv_dev *d)
{
	uint8_t b[8] = { 0 };
	esp_resp r;
	int rc = command(d, ESP_OP_SPI_ATTACH, b, 8, 0, &r);

	return rc == ST_E_DEVICE ? rom_error(d, "SPI_ATTACH", &r) : rc;
}

/* SPI_FLASH_MD5 of [addr, addr+len): the ROM answers 32 hex digits. */
static int flash_md5(drv_dev *d, uint32_t addr, uint32_t len, uint8_t md5[MD5_LEN])
{
	struct esp32 *e = drv_priv(d);
	uint8_t b[16];
	esp_resp r;
	int rc;

	esp_put_le32(b, addr);
	esp_put_le32(b + 4, len);
	esp_put_le32(b + 8, 0);
	esp_put_le32(b + 12, 0);
	/* esptool: 8 s per MB, at least its default timeout */
	rc = command_n(d, ESP_OP_SPI_FLASH_MD5, b, 16, 0,
		       e->timeout_ms + (int)(len / 131072u) * 1000, 1 + e->retries, &r);
	if (rc == ST_E_DEVICE)
		return rom_error(d, "SPI_FLASH_MD5", &r);
	if (rc)
		return rc;
	if (r.data_len != 32 || st_unhex((const char *)r.data, md5, MD5_LEN)) {
		drv_set_error(d, "ESP32-C3 on %s: SPI_FLASH_MD5 answered %zu bytes, not "
			      "32 hex digits", drv_port(d), r.data_len);
		return ST_E_PROTO;
	}
	return ST_OK;
}

static void md5_of(const uint8_t *p, size_t n, uint8_t out[MD5_LEN])
{
	EVP_Digest(p, n, out, NULL, EVP_md5(), NULL);
}

/* How many FLASH_BLOCK blocks from the image's start the flash already
 * holds, found by halving with SPI_FLASH_MD5 of prefixes (the ROM reads
 * no flash back; its MD5 of a range is all it tells).  A write goes in
 * order, so a matching prefix means every shorter one matches too. */
static int stored_prefix(drv_dev *d, const drv_image *img, uint32_t *blocks)
{
	uint32_t n = (uint32_t)((img->len + FLASH_BLOCK - 1) / FLASH_BLOCK), lo = 0, hi;
	uint8_t want[MD5_LEN], got[MD5_LEN];
	int rc;

	/* The whole image first: the common cases are "all" and "none". */
	if ((rc = flash_md5(d, img->address, (uint32_t)img->len, got)))
		return rc;
	md5_of(img->data, img->len, want);
	if (!memcmp(want, got, MD5_LEN)) {
		*blocks = n;
		return ST_OK;
	}
	hi = n - 1;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo + 1) / 2;

		if ((rc = flash_md5(d, img->address, mid * FLASH_BLOCK, got)))
			return rc;
		md5_of(img->data, mid * FLASH_BLOCK, want);
		if (!memcmp(want, got, MD5_LEN))
			lo = mid;
		else
			hi = mid - 1;
	}
	*blocks = lo;
	return ST_OK;
}

static int e_image_info(drv_dev *d, const drv_image *img, drv_slot_info *out)
{
	struct esp32 *e = drv_priv(d);
	uint32_t blocks = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	out->capacity = 0x400000u - img->address; /* a 4 MB part */
	if (e->secure_dl && !e->dl_gone && img->data && img->len &&
	    (img->address == 0 || img->address >= APP_MIN_ADDR)) {
		/* Secure Download Mode refuses flash reads; the factory app
		 * (Secure Boot verified it) measures its bootloader (at 0x0,
		 * its slot 0) and app (the first app partition, its slot 1)
		 * for its statement: what a unit resumed after the lock
		 * holds. */
		bool held;
		uint32_t size;
		uint8_t sha[DRV_SHA256_LEN];

		if ((rc = esp32_app_measure(d, img->address ? 1 : 0, &held, &size, sha)))
			return rc;
		if (held && size == img->len) {
			out->total = out->stored = size;
			memcpy(out->id, img->sha256, DRV_SHA256_LEN);
			memcpy(out->digest, sha, DRV_SHA256_LEN);
		}
		return ST_OK;
	}
	if (e->secure_dl || e->dl_gone) {
		drv_set_error(d, "ESP32-C3 on %s: the chip is locked: its flash cannot be "
			      "read back", drv_port(d));
		return ST_E_LOCKED;
	}
	if (!img->data || !img->len)
		return ST_OK;
	if ((rc = spi_attach(d)) || (rc = stored_prefix(d, img, &blocks)))
		return rc;
	out->total = (uint32_t)img->len;
	out->stored = blocks * FLASH_BLOCK > img->len ? (uint32_t)img->len :
		      blocks * FLASH_BLOCK;
	memcpy(out->id, img->sha256, DRV_SHA256_LEN);
	/* The ROM measures MD5 only: the digest is the SHA-256 of the bytes
	 * whose MD5 the chip confirmed, which is what the contract asks for
	 * as far as this loader can tell. */
	EVP_Digest(img->data, out->stored, out->digest, NULL, EVP_sha256(), NULL);
	return ST_OK;
}

/* FLASH_BEGIN for [addr, addr+len) in blocks of FLASH_BLOCK: the ROM
 * erases the sectors first (esptool: 30 s per MB). */
static int flash_begin(drv_dev *d, uint32_t addr, uint32_t len)
{
	struct esp32 *e = drv_priv(d);
	uint32_t erase = (len + FLASH_SECTOR - 1) / FLASH_SECTOR * FLASH_SECTOR;
	uint8_t b[20];
	esp_resp r;
	int rc;

	esp_put_le32(b, erase);
	esp_put_le32(b + 4, (len + FLASH_BLOCK - 1) / FLASH_BLOCK);
	esp_put_le32(b + 8, FLASH_BLOCK);
	esp_put_le32(b + 12, addr);
	esp_put_le32(b + 16, 0); /* not encrypted */
	rc = command_n(d, ESP_OP_FLASH_BEGIN, b, 20, 0,
		       e->timeout_ms + (int)(len / 35000u) * 1000, 1 + e->retries, &r);
	return rc == ST_E_DEVICE ? rom_error(d, "FLASH_BEGIN", &r) : rc;
}

/* One FLASH_DATA block (padded with 0xFF), with esptool's retries: a bad
 * checksum answer or a lost answer sends the same sequence number again. */
static int flash_block(drv_dev *d, const uint8_t *p, size_t n, uint32_t seq)
{
	struct esp32 *e = drv_priv(d);
	uint8_t b[16 + FLASH_BLOCK];
	esp_resp r;
	int rc = ST_E_TIMEOUT;

	memset(b + 16, 0xff, FLASH_BLOCK);
	memcpy(b + 16, p, n);
	esp_put_le32(b, FLASH_BLOCK);
	esp_put_le32(b + 4, seq);
	esp_put_le32(b + 8, 0);
	esp_put_le32(b + 12, 0);
	for (int a = 0; a < WRITE_BLOCK_ATTEMPTS; a++) {
		rc = command_n(d, ESP_OP_FLASH_DATA, b, sizeof(b),
			       esp_checksum(b + 16, FLASH_BLOCK), e->timeout_ms,
			       1 + e->retries, &r);
		if (rc != ST_E_DEVICE)
			break;
		e->st.retries++;
	}
	if (rc == ST_E_DEVICE) {
		char what[48];

		snprintf(what, sizeof(what), "FLASH_DATA block %u", seq);
		return rom_error(d, what, &r);
	}
	return rc;
}

static int e_image_write(drv_dev *d, const drv_image *img, uint32_t *resumed_from)
{
	struct esp32 *e = drv_priv(d);
	uint32_t blocks = 0, from, n = (uint32_t)((img->len + FLASH_BLOCK - 1) / FLASH_BLOCK);
	uint8_t want[MD5_LEN], got[MD5_LEN], fin[4];
	esp_resp r;
	int rc;

	*resumed_from = 0;
	if (e->secure_dl || e->dl_gone) {
		drv_set_error(d, "ESP32-C3 on %s: the chip is locked: no flash writes",
			      drv_port(d));
		return ST_E_LOCKED;
	}
	if (img->address % FLASH_SECTOR || img->len > 0x400000u - img->address) {
		drv_set_error(d, "ESP32-C3 on %s: image at 0x%x (%zu bytes) must start on "
			      "a 4 KiB sector and fit a 4 MB flash", drv_port(d),
			      img->address, img->len);
		return ST_E_INVAL;
	}
	if ((rc = spi_attach(d)) || (rc = stored_prefix(d, img, &blocks)))
		return rc;
	/* Resume on a whole sector the chip confirmed (FLASH_BEGIN erases
	 * from a sector start). */
	from = blocks * FLASH_BLOCK / FLASH_SECTOR * FLASH_SECTOR;
	if (from >= img->len && blocks == n) {
		*resumed_from = (uint32_t)img->len;
		return ST_OK;
	}
	*resumed_from = from;
	if ((rc = flash_begin(d, img->address + from, (uint32_t)img->len - from)))
		return rc;
	for (uint32_t s = 0, off = from; off < img->len; s++, off += FLASH_BLOCK) {
		size_t len = img->len - off < FLASH_BLOCK ? img->len - off : FLASH_BLOCK;

		if ((rc = flash_block(d, img->data + off, len, s)))
			return rc;
	}
	esp_put_le32(fin, 1); /* stay in the loader */
	rc = command(d, ESP_OP_FLASH_END, fin, 4, 0, &r);
	if (rc == ST_E_DEVICE)
		return rom_error(d, "FLASH_END", &r);
	if (rc)
		return rc;
	if ((rc = flash_md5(d, img->address, (uint32_t)img->len, got)))
		return rc;
	md5_of(img->data, img->len, want);
	if (memcmp(want, got, MD5_LEN)) {
		drv_set_error(d, "ESP32-C3 on %s: the flash at 0x%x does not hold the "
			      "image after the write (MD5 differs): write it again",
			      drv_port(d), img->address);
		return ST_E_VERIFY;
	}
	return ST_OK;
}

/* ESP32-C3 USB-Serial-JTAG and the bridges dev boards carry. */
/* ---- for the factory app (esp32_app.c) ----------------------------------- */

serial_port *esp32_port(drv_dev *d)
{
	return &((struct esp32 *)drv_priv(d))->port;
}

bool esp32_loader_gone(drv_dev *d)
{
	return ((struct esp32 *)drv_priv(d))->dl_gone;
}

int esp32_rom_run(drv_dev *d)
{
	uint8_t b[20] = { 0 }, fin[4] = { 0 };
	esp_resp r;
	int rc;

	esp_put_le32(b + 8, FLASH_BLOCK);
	rc = command(d, ESP_OP_FLASH_BEGIN, b, 20, 0, &r);
	if (rc == ST_E_DEVICE)
		return rom_error(d, "FLASH_BEGIN", &r);
	if (rc)
		return rc;
	/* 0: reboot; the answer may be lost in the reset */
	(void)command_n(d, ESP_OP_FLASH_END, fin, 4, 0,
			((struct esp32 *)drv_priv(d))->timeout_ms, 1, &r);
	return ST_OK;
}

int esp32_rom_enter(drv_dev *d)
{
	struct esp32 *e = drv_priv(d);
	int rc;

	if ((rc = set_host_baud(e, ROM_BAUD)) || (rc = connect_rom(d)))
		return rc;
	return change_baud(d);
}

/* ---- the ops table --------------------------------------------------------- */

static const struct drv_usb_id esp32_ids[] = {
	{ 0x303a, 0x1001, "Espressif ESP32-C3 USB-Serial-JTAG" },
	{ 0x10c4, 0xea60, "Silicon Labs CP210x USB-serial (ESP32 boards)" },
	{ 0x1a86, 0x7523, "WCH CH340 USB-serial (ESP32 boards)" },
	{ 0x0403, 0x6001, "FTDI FT232R USB-serial (ESP32 boards)" },
	{ 0, 0, NULL },
};

const struct drv_ops esp32_ops = {
	.name = "esp32",
	.priv_size = sizeof(struct esp32),
	.priv_secret = true,
	.usb_ids = esp32_ids,
	.udev_subsystem = "tty",
	.open = e_open,
	.identify = e_identify,
	.keygen = e_keygen,
	.get_pubkey = esp32_app_get_pubkey,
	.write_cert = e_write_cert,
	.read_cert = esp32_app_read_cert,
	.sign_challenge = esp32_app_sign_challenge,
	.fuse_read = e_fuse_read,
	.fuse_burn = e_fuse_burn,
	.fuse_read_status = e_fuse_read_status,
	.efuse_key_burn = esp32_efuse_key_burn,
	.otp_self_timed = true,
	.set_lifecycle = e_set_lifecycle,
	.image_info = e_image_info,
	.image_write = e_image_write,
	.attest = esp32_app_attest,
	.fw_version = e_fw_version,
	.link_stats = e_link_stats,
	.release = e_release,
	.close = e_close,
};

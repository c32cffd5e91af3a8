/* esp32c3.c — station-devsim --model esp32c3: an ESP32-C3 in its ROM
 * serial loader on a pty.
 *
 *   station-devsim --model esp32c3 --state FILE [--seed S] [--link PATH]
 *                  [--fault NAME[:ARG]]... [--verbose]
 *   station-devsim --model esp32c3 --state FILE --efuse-image OUT
 *   station-devsim --model esp32c3 --state FILE --flash-image OUT
 *
 * Serving prints "ready <pty>" and answers the ROM loader's commands
 * (esp_rom.h) until SIGTERM/SIGINT; SIGHUP resets the chip (the EN pin:
 * a pty has no DTR/RTS), as does FLASH_END with its reboot flag; SIGUSR1
 * resets it with GPIO9 high: it boots from flash (esp32c3_boot.c checks
 * the Secure Boot V2 signature when SECURE_BOOT_EN is burned) and, when
 * the flash holds one, runs the factory app (esp32c3_app.c), which
 * FLASH_END's reboot also boots.  The
 * eFuses live in FILE (saved after every burn), the 4 MiB flash in
 * FILE.flash (a mapped file).  The image options write what a lab would
 * read from the chip and exit.  docs/esp32.md, "The simulated ESP32-C3",
 * says what is modelled and how. */
#include "devsim/esp32c3.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define SYNC_VALUE 0x20120707u        /* what a ROM puts in SYNC's value */
#define JEDEC_ID 0x1640EFu            /* RDID: Winbond, 4 MiB (size id 0x16) */
#define UARTDEV_BUF_NO 0x3FCDF07Cu    /* ROM .bss: the port in use (0: UART0) */

void c3_log(const struct c3 *c, const char *fmt, ...)
{
	va_list ap;

	if (!c->verbose)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "station-devsim[esp32c3]: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* xorshift64*: the faults repeat exactly for one seed. */
static uint64_t c3_rand(struct c3 *c)
{
	c->rng ^= c->rng >> 12;
	c->rng ^= c->rng << 25;
	c->rng ^= c->rng >> 27;
	return c->rng * 2685821657736338717ull;
}

static const struct c3_fault_row {
	const char *name;
	enum c3_fault kind;
	int arg;                      /* 0 none, 1 optional, 2 required */
	const char *help;
} c3_faults[] = {
	{ "efuse-flip", C3_FAULT_EFUSE_FLIP, 2,
	  "efuse-flip:BLOCK[:BIT]  the controller reads bit BIT (default 0) of "
	  "BLOCK's codeword wrong: an RS error (BLOCK0: a repeat error)" },
	{ "wr-protect", C3_FAULT_WR_PROTECT, 2,
	  "wr-protect:BLOCK        BLOCK's WR_DIS bit is burned (factory): "
	  "programming it does nothing" },
	{ "burn-cut", C3_FAULT_BURN_CUT, 1,
	  "burn-cut[:N]            power cut halfway through the N-th eFuse "
	  "program command (default 1): the state is saved, the process exits 3" },
	{ "noise", C3_FAULT_NOISE, 2,
	  "noise:PERCENT           that share of the bytes either way is "
	  "corrupted (one bit) or dropped" },
	{ "app-wrong-key", C3_FAULT_APP_WRONG_KEY, 0,
	  "app-wrong-key           the factory app signs (SIGN_CHALLENGE, ATTEST) "
	  "with a key derived from another HMAC key than its GET_PUBKEY's" },
};

static void c3_usage(void)
{
	fprintf(stderr,
		"usage: station-devsim --model esp32c3 --state FILE [--seed S] [--link PATH]\n"
		"                      [--fault NAME[:ARG]]... [--verbose]\n"
		"       station-devsim --model esp32c3 --state FILE --efuse-image OUT\n"
		"       station-devsim --model esp32c3 --state FILE --flash-image OUT\n"
		"  an ESP32-C3 in its ROM serial loader on a pty (docs/esp32.md); the\n"
		"  eFuses live in FILE, the 4 MiB flash in FILE.flash.  SIGHUP resets\n"
		"  the chip into its loader, SIGUSR1 boots it from flash (Secure Boot V2\n"
		"  checked when SECURE_BOOT_EN) and runs the factory app when the flash\n"
		"  holds one; FLASH_END with reboot boots that app, else the loader.\n"
		"  --efuse-image writes the eFuse registers in espefuse --virt\n"
		"  --path-efuse-file's format,\n"
		"  --flash-image the raw flash; both exit without serving.\n"
		"faults:\n");
	for (size_t i = 0; i < sizeof(c3_faults) / sizeof(c3_faults[0]); i++)
		fprintf(stderr, "  %s\n", c3_faults[i].help);
}

/* --fault NAME[:A[:B]].  0 or -1 with a message. */
static int parse_fault(struct c3 *c, const char *spec)
{
	char buf[128], *a, *b = NULL, *end;
	const struct c3_fault_row *row = NULL;

	if (c->nfault == C3_MAX_FAULTS) {
		fprintf(stderr, "station-devsim: at most %d faults\n", C3_MAX_FAULTS);
		return -1;
	}
	snprintf(buf, sizeof(buf), "%s", spec);
	if ((a = strchr(buf, ':'))) {
		*a++ = '\0';
		if ((b = strchr(a, ':')))
			*b++ = '\0';
	}
	for (size_t i = 0; i < sizeof(c3_faults) / sizeof(c3_faults[0]); i++)
		if (!strcmp(c3_faults[i].name, buf))
			row = &c3_faults[i];
	if (!row) {
		fprintf(stderr, "station-devsim: unknown esp32c3 fault '%s'\n", buf);
		return -1;
	}
	if ((row->arg == 2 && !a) || (row->arg == 0 && a) ||
	    (b && row->kind != C3_FAULT_EFUSE_FLIP)) {
		fprintf(stderr, "station-devsim: fault %s: wrong argument (%s)\n",
			row->name, row->help);
		return -1;
	}
	c->fault[c->nfault].kind = row->kind;
	if (a) {
		errno = 0;
		c->fault[c->nfault].a = strtoul(a, &end, 0);
		if (errno || end == a || *end) {
			fprintf(stderr, "station-devsim: fault %s: bad number '%s'\n",
				row->name, a);
			return -1;
		}
		c->fault[c->nfault].has_a = 1;
	}
	if (b) {
		errno = 0;
		c->fault[c->nfault].b = strtoul(b, &end, 0);
		if (errno || end == b || *end || c->fault[c->nfault].b >= 44 * 8) {
			fprintf(stderr, "station-devsim: fault %s: bad bit '%s' (0..351)\n",
				row->name, b);
			return -1;
		}
		c->fault[c->nfault].has_b = 1;
	}
	if ((row->kind == C3_FAULT_EFUSE_FLIP || row->kind == C3_FAULT_WR_PROTECT) &&
	    c->fault[c->nfault].a >= ESP_C3_EFUSE_BLOCKS) {
		fprintf(stderr, "station-devsim: fault %s: no block %lu (0..10)\n",
			row->name, c->fault[c->nfault].a);
		return -1;
	}
	if (row->kind == C3_FAULT_WR_PROTECT && c->fault[c->nfault].a == 0) {
		fprintf(stderr, "station-devsim: fault wr-protect: BLOCK0 has no "
			"block write-protect bit (1..10)\n");
		return -1;
	}
	if (row->kind == C3_FAULT_NOISE && c->fault[c->nfault].a > 100) {
		fprintf(stderr, "station-devsim: fault noise: 0..100 percent\n");
		return -1;
	}
	c->nfault++;
	return 0;
}

static unsigned long noise_pct(const struct c3 *c)
{
	for (size_t i = 0; i < c->nfault; i++)
		if (c->fault[i].kind == C3_FAULT_NOISE)
			return c->fault[i].a;
	return 0;
}

/* ---- state ------------------------------------------------------------- */

static json_t *words_json(const uint32_t *w, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++) {
		char hex[16];

		snprintf(hex, sizeof(hex), "0x%08x", w[i]);
		json_array_append_new(a, json_string(hex));
	}
	return a;
}

static int json_words(json_t *a, uint32_t *w, size_t n)
{
	if (!json_is_array(a) || json_array_size(a) != n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(a, i));
		char *end;

		if (!s)
			return -1;
		errno = 0;
		w[i] = (uint32_t)strtoul(s, &end, 16);
		if (errno || *end)
			return -1;
	}
	return 0;
}

int c3_state_save(struct c3 *c)
{
	json_t *root = json_object(), *blocks = json_array();
	char tmp[4200], *dir = NULL;
	int fd = -1, rc = -1;

	json_object_set_new(root, "model", json_string("esp32c3"));
	json_object_set_new(root, "seed", json_string(c->seed));
	json_object_set_new(root, "block0", words_json(c->b0, 6));
	json_object_set_new(root, "block0_repeat", words_json(c->b0_rep, 6));
	for (unsigned n = 1; n < ESP_C3_EFUSE_BLOCKS; n++)
		json_array_append_new(blocks, words_json(c->raw[n], C3_RAW_WORDS));
	json_object_set_new(root, "blocks", blocks);
	json_object_set_new(root, "burns", json_integer(c->burns));
	snprintf(tmp, sizeof(tmp), "%s.tmpXXXXXX", c->state_path);
	fd = mkstemp(tmp);
	if (fd < 0)
		goto out;
	if (json_dumpfd(root, fd, JSON_INDENT(1)) < 0 || write(fd, "\n", 1) != 1 ||
	    fsync(fd) < 0)
		goto out;
	if (close(fd) < 0) {
		fd = -1;
		goto out;
	}
	fd = -1;
	if (rename(tmp, c->state_path) < 0)
		goto out;
	tmp[0] = '\0';
	/* The rename itself must survive a power cut. */
	dir = strdup(c->state_path);
	if (dir) {
		int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "station-devsim: cannot save %s: %s\n", c->state_path,
			strerror(errno));
	if (fd >= 0)
		close(fd);
	if (rc && tmp[0])
		unlink(tmp);
	free(dir);
	json_decref(root);
	return rc;
}

/* Load FILE, or make a blank chip from the seed (and save it).  create
 * 0: the file must exist (the image exports).  0 or -1. */
static int state_load(struct c3 *c, int create)
{
	json_error_t jerr;
	json_t *root = json_load_file(c->state_path, 0, &jerr), *blocks;
	int rc = -1;

	if (!root) {
		if (access(c->state_path, F_OK) == 0 || !create) {
			fprintf(stderr, "station-devsim: cannot read %s: %s\n",
				c->state_path, access(c->state_path, F_OK) ? strerror(errno) :
				jerr.text);
			return -1;
		}
		c3_efuse_factory(c, c->seed);
		return c3_state_save(c);
	}
	if (strcmp(json_string_value(json_object_get(root, "model")) ?
		   json_string_value(json_object_get(root, "model")) : "", "esp32c3")) {
		fprintf(stderr, "station-devsim: %s is not an esp32c3 state file\n",
			c->state_path);
		goto out;
	}
	blocks = json_object_get(root, "blocks");
	if (json_words(json_object_get(root, "block0"), c->b0, 6) < 0 ||
	    json_words(json_object_get(root, "block0_repeat"), c->b0_rep, 6) < 0 ||
	    !json_is_array(blocks) || json_array_size(blocks) != ESP_C3_EFUSE_BLOCKS - 1)
		goto bad;
	for (unsigned n = 1; n < ESP_C3_EFUSE_BLOCKS; n++)
		if (json_words(json_array_get(blocks, n - 1), c->raw[n], C3_RAW_WORDS) < 0)
			goto bad;
	c->burns = (unsigned)json_integer_value(json_object_get(root, "burns"));
	rc = 0;
	goto out;
bad:
	fprintf(stderr, "station-devsim: %s: malformed esp32c3 state\n", c->state_path);
out:
	json_decref(root);
	return rc;
}

/* Map FILE.flash (made erased, all 0xFF, when missing).  0 or -1. */
static int flash_open(struct c3 *c, int create)
{
	struct stat st;
	size_t n = strlen(c->state_path) + 8;

	c->flash_path = malloc(n);
	if (!c->flash_path)
		return -1;
	snprintf(c->flash_path, n, "%s.flash", c->state_path);
	c->flash_fd = open(c->flash_path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
	if (c->flash_fd < 0 || fstat(c->flash_fd, &st) < 0)
		goto fail;
	if (st.st_size == 0) {
		static const uint8_t ff[C3_SECTOR] = { [0 ... C3_SECTOR - 1] = 0xFF };

		for (uint32_t off = 0; off < C3_FLASH_SIZE; off += C3_SECTOR)
			if (write(c->flash_fd, ff, sizeof(ff)) != (ssize_t)sizeof(ff))
				goto fail;
		if (fsync(c->flash_fd) < 0)
			goto fail;
	} else if (st.st_size != C3_FLASH_SIZE) {
		fprintf(stderr, "station-devsim: %s is not a 4 MiB flash image\n",
			c->flash_path);
		return -1;
	}
	c->flash = mmap(NULL, C3_FLASH_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
			c->flash_fd, 0);
	if (c->flash == MAP_FAILED) {
		c->flash = NULL;
		goto fail;
	}
	return 0;
fail:
	fprintf(stderr, "station-devsim: cannot open the flash %s: %s\n", c->flash_path,
		strerror(errno));
	return -1;
}

/* Make the flash durable (FLASH_END, exit). */
static void flash_sync(struct c3 *c)
{
	if (c->flash && c->flash_dirty) {
		msync(c->flash, C3_FLASH_SIZE, MS_SYNC);
		c->flash_dirty = 0;
	}
}

/* ---- the chip ---------------------------------------------------------- */

/* Power-on or reset: the ROM reads the eFuses and decides how the
 * loader behaves until the next reset. */
static void chip_reset(struct c3 *c, const char *why)
{
	static const char banner[] =
		"ESP-ROM:esp32c3-api1-20210207\r\nBuild:Feb  7 2021\r\n";
	char line[160];

	c3_efuse_reload(c);
	c->sdm = c3_efuse_field(c, "ENABLE_SECURITY_DOWNLOAD") != 0;
	c->no_download = c3_efuse_field(c, "DIS_DOWNLOAD_MODE") != 0;
	c->fl_active = 0;
	c->in_app = 0;
	c->app_serving = 0;
	c->app_leave = 0;
	c->app_nak = 0;
	esp_slip_rx_init(&c->rx);
	memset(c->spi, 0, sizeof(c->spi));
	c->nother = 0;
	if (c->master < 0)
		return;
	/* The boot log a C3 prints on UART0 (strapped for download). */
	if (write(c->master, banner, sizeof(banner) - 1) < 0)
		c3_log(c, "banner: %s", strerror(errno));
	snprintf(line, sizeof(line), "rst:%s,boot:0x5 (DOWNLOAD(USB/UART0/1))\r\n%s",
		 why, c->no_download ? "Download mode is disabled\r\n" :
		 "waiting for download\r\n");
	if (write(c->master, line, strlen(line)) < 0)
		c3_log(c, "banner: %s", strerror(errno));
	c3_log(c, "reset (%s): %s", why, c->no_download ? "download mode disabled" :
	       c->sdm ? "Secure Download Mode" : "download mode");
}

/* Reset with GPIO9 high (SIGUSR1, or FLASH_END's reboot when there is a
 * factory app to boot): the ROM boots from flash.  With SECURE_BOOT_EN it
 * first checks the bootloader's Secure Boot V2 signature; either way the
 * loader is gone until the next reset into download mode.  When the boot
 * passes and the flash holds the factory app (esp32c3_app.c), the app
 * serves the station's device protocol on the UART; otherwise the chip
 * prints its boot log and says nothing more. */
static void chip_boot_flash(struct c3 *c, const char *rst)
{
	char why[160] = "", app[160] = "", line[600];
	int secure, ok = 1;

	c3_efuse_reload(c);
	c->fl_active = 0;
	c->in_app = 1;
	c->app_serving = 0;
	c->app_leave = 0;
	c->app_nak = 0;
	secure = c3_efuse_field(c, "SECURE_BOOT_EN") != 0;
	if (secure)
		ok = c3_boot_check(c, why, sizeof(why));
	if (ok)
		c->app_serving = c3_app_boot(c, app, sizeof(app));
	snprintf(line, sizeof(line),
		 "ESP-ROM:esp32c3-api1-20210207\r\nBuild:Feb  7 2021\r\n"
		 "rst:%s,boot:0xc (SPI_FAST_FLASH_BOOT)\r\n%s%s%s%s%s",
		 rst, secure ? "Secure Boot V2: " : "", secure ? why : "",
		 !secure ? "secure boot off: loading the bootloader\r\n" :
		 ok ? "\r\nsecure boot verification succeeded: loading the bootloader\r\n" :
		 "\r\nsecure boot check fail: boot refused, chip halted\r\n",
		 ok ? app : "", ok ? "\r\n" : "");
	if (c->master >= 0 && write(c->master, line, strlen(line)) < 0)
		c3_log(c, "boot log: %s", strerror(errno));
	c3_log(c, "SPI boot: %s; %s", secure ? (ok ? "verified" : "refused") :
	       "no secure boot", ok ? app : "halted");
}

/* FLASH_END with its reboot flag: a software reset.  On a pty there is
 * no GPIO9: the sim takes the strap as high (esptool's `run`) when the
 * flash holds a factory app that would run, and as low (back to the
 * loader, as a fixture holding BOOT does) otherwise. */
static void chip_soft_reset(struct c3 *c)
{
	char why[160];
	int ok = 1;

	c3_efuse_reload(c);
	if (c3_efuse_field(c, "SECURE_BOOT_EN"))
		ok = c3_boot_check(c, why, sizeof(why));
	if (ok && c3_app_boot(c, why, sizeof(why)))
		chip_boot_flash(c, "0x3 (RTC_SW_SYS_RST)");
	else
		chip_reset(c, "0x3 (RTC_SW_SYS_RST)");
}

/* Write n bytes to the line, the noise fault applied.  Gives up after a
 * second if nobody reads. */
void c3_line_send(struct c3 *c, const uint8_t *buf, size_t n)
{
	unsigned long pct = noise_pct(c);
	uint8_t tmp[PROTO_MAX_WIRE + sizeof(c->out)];
	size_t m = 0, done = 0;

	if (pct) {
		for (size_t i = 0; i < n && m < sizeof(tmp); i++) {
			uint64_t r = c3_rand(c);

			if (r % 10000 < pct * 100) {
				if (r & (1ull << 40))
					continue;                         /* dropped */
				tmp[m++] = buf[i] ^ (uint8_t)(1u << ((r >> 32) & 7));
			} else {
				tmp[m++] = buf[i];
			}
		}
		buf = tmp;
		n = m;
	}
	for (int waited = 0; done < n && waited < 100;) {
		ssize_t w = write(c->master, buf + done, n - done);

		if (w > 0) {
			done += (size_t)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EINTR)
			return;
		struct pollfd p = { .fd = c->master, .events = POLLOUT };
		poll(&p, 1, 10);
		waited++;
	}
}

/* Send one response: body[0..n) then the 4 status bytes. */
static void respond(struct c3 *c, uint8_t op, uint32_t value, const uint8_t *body,
		    size_t n, uint8_t status, uint8_t error)
{
	uint8_t pkt[ESP_HDR_LEN + 64 + ESP_C3_ROM_STATUS_LEN];
	size_t len, wlen;

	len = esp_resp_build(op, value, body, n, status, error, ESP_C3_ROM_STATUS_LEN,
			     pkt, sizeof(pkt));
	if (!len)
		return;
	wlen = esp_slip_encode(pkt, len, c->out, sizeof(c->out));
	if (wlen)
		c3_line_send(c, c->out, wlen);
}

static void fail(struct c3 *c, uint8_t op, uint8_t error)
{
	respond(c, op, 0, NULL, 0, 1, error);
}

/* A register read as the ROM's READ_REG does it. */
static uint32_t reg_read(struct c3 *c, uint32_t addr)
{
	uint32_t v;

	if (addr == ESP_CHIP_DETECT_MAGIC_REG)
		return ESP_C3_MAGIC_ECO3;
	if (c3_efuse_read(c, addr, &v))
		return v;
	if (addr >= ESP_C3_SPI_BASE && addr < ESP_C3_SPI_BASE + sizeof(c->spi) && !(addr % 4))
		return c->spi[(addr - ESP_C3_SPI_BASE) / 4];
	if (addr == UARTDEV_BUF_NO)
		return 0;
	for (size_t i = 0; i < c->nother; i++)
		if (c->other[i].addr == addr)
			return c->other[i].val;
	return 0;   /* unmodelled memory reads as 0 */
}

/* SPI_CMD with USR set: run the user command (RDID; others read 0). */
static void spi_user_command(struct c3 *c)
{
	uint8_t cmd = (uint8_t)c->spi[(ESP_C3_SPI_USR2 - ESP_C3_SPI_BASE) / 4];

	c->spi[(ESP_C3_SPI_W0 - ESP_C3_SPI_BASE) / 4] = cmd == 0x9F ? JEDEC_ID : 0;
	c->spi[0] &= ~ESP_C3_SPI_CMD_USR;       /* done at once */
}

static void reg_write(struct c3 *c, uint32_t addr, uint32_t val, uint32_t mask)
{
	uint32_t v = (reg_read(c, addr) & ~mask) | (val & mask);
	int burned = 0;

	if (c3_efuse_write(c, addr, v, &burned)) {
		if (burned && c3_state_save(c) < 0)
			c3_log(c, "state not saved");
		return;
	}
	if (addr >= ESP_C3_SPI_BASE && addr < ESP_C3_SPI_BASE + sizeof(c->spi) && !(addr % 4)) {
		c->spi[(addr - ESP_C3_SPI_BASE) / 4] = v;
		if (addr == ESP_C3_SPI_CMD && (v & ESP_C3_SPI_CMD_USR))
			spi_user_command(c);
		return;
	}
	for (size_t i = 0; i < c->nother; i++)
		if (c->other[i].addr == addr) {
			c->other[i].val = v;
			return;
		}
	if (c->nother < sizeof(c->other) / sizeof(c->other[0])) {
		c->other[c->nother].addr = addr;
		c->other[c->nother++].val = v;
	}
}

/* GET_SECURITY_INFO's 20 bytes from the eFuses (as the ROM reports them;
 * the Secure Download flag is the mode this boot runs in). */
static void security_info(struct c3 *c, uint8_t out[ESP_SECINFO_LEN])
{
	uint32_t f = 0;
	static const char *const kp[6] = {
		"KEY_PURPOSE_0", "KEY_PURPOSE_1", "KEY_PURPOSE_2",
		"KEY_PURPOSE_3", "KEY_PURPOSE_4", "KEY_PURPOSE_5",
	};

	if (c3_efuse_field(c, "SECURE_BOOT_EN"))
		f |= ESP_SECINFO_SECURE_BOOT_EN;
	if (c3_efuse_field(c, "SECURE_BOOT_AGGRESSIVE_REVOKE"))
		f |= ESP_SECINFO_SECURE_BOOT_AGGRESSIVE_REVOKE;
	if (c->sdm)
		f |= ESP_SECINFO_SECURE_DOWNLOAD_ENABLE;
	if (c3_efuse_field(c, "SECURE_BOOT_KEY_REVOKE0"))
		f |= ESP_SECINFO_SECURE_BOOT_KEY_REVOKE0;
	if (c3_efuse_field(c, "SECURE_BOOT_KEY_REVOKE1"))
		f |= ESP_SECINFO_SECURE_BOOT_KEY_REVOKE1;
	if (c3_efuse_field(c, "SECURE_BOOT_KEY_REVOKE2"))
		f |= ESP_SECINFO_SECURE_BOOT_KEY_REVOKE2;
	if (c3_efuse_field(c, "SOFT_DIS_JTAG"))
		f |= ESP_SECINFO_SOFT_DIS_JTAG;
	if (c3_efuse_field(c, "DIS_PAD_JTAG"))
		f |= ESP_SECINFO_HARD_DIS_JTAG;
	if (c3_efuse_field(c, "DIS_USB_JTAG"))
		f |= ESP_SECINFO_DIS_USB;
	if (c3_efuse_field(c, "DIS_DOWNLOAD_ICACHE"))
		f |= ESP_SECINFO_DIS_DOWNLOAD_ICACHE;
	memset(out, 0, ESP_SECINFO_LEN);
	esp_put_le32(out, f);
	out[4] = (uint8_t)c3_efuse_field(c, "SPI_BOOT_CRYPT_CNT");
	for (unsigned i = 0; i < 6; i++)
		out[5 + i] = (uint8_t)c3_efuse_field(c, kp[i]);
	esp_put_le32(out + 12, ESP_C3_IMAGE_CHIP_ID);
	esp_put_le32(out + 16, 0);              /* api_version */
}

/* Is op allowed in Secure Download Mode? (esptool docs: flash writes,
 * SPI setup, baud rate and security info only.) */
static int sdm_allows(uint8_t op)
{
	switch (op) {
	case ESP_OP_SYNC:
	case ESP_OP_FLASH_BEGIN:
	case ESP_OP_FLASH_DATA:
	case ESP_OP_FLASH_END:
	case ESP_OP_SPI_SET_PARAMS:
	case ESP_OP_SPI_ATTACH:
	case ESP_OP_CHANGE_BAUDRATE:
	case ESP_OP_GET_SECURITY_INFO:
		return 1;
	default:
		return 0;
	}
}

static void do_flash_begin(struct c3 *c, const esp_req *rq)
{
	uint32_t erase, blocks, blksz, off, start, end;

	if (rq->size != 16 && rq->size != 20) {
		fail(c, rq->op, ESP_ROM_ERR_INVALID_MSG);
		return;
	}
	erase = esp_le32(rq->data);
	blocks = esp_le32(rq->data + 4);
	blksz = esp_le32(rq->data + 8);
	off = esp_le32(rq->data + 12);
	if (off > C3_FLASH_SIZE || erase > C3_FLASH_SIZE - off || blksz == 0 ||
	    blksz > ESP_SLIP_MAX_FRAME - ESP_HDR_LEN - 16) {
		fail(c, rq->op, ESP_ROM_ERR_INVALID_MSG);
		return;
	}
	/* The ROM erases up front, whole 4 KiB sectors. */
	start = off & ~(C3_SECTOR - 1);
	end = (off + erase + C3_SECTOR - 1) & ~(C3_SECTOR - 1);
	if (end > C3_FLASH_SIZE)
		end = C3_FLASH_SIZE;
	if (erase && end > start) {
		memset(c->flash + start, 0xFF, end - start);
		c->flash_dirty = 1;
	}
	c->fl_active = 1;
	c->fl_off = off;
	c->fl_blocks = blocks;
	c->fl_blksz = blksz;
	c3_log(c, "FLASH_BEGIN 0x%x, %u blocks of %u, erased 0x%x..0x%x", off, blocks,
	       blksz, start, end);
	respond(c, rq->op, 0, NULL, 0, 0, 0);
}

static void do_flash_data(struct c3 *c, const esp_req *rq)
{
	uint32_t len, seq, at;
	const uint8_t *p = rq->data + 16;

	if (rq->size < 16) {
		fail(c, rq->op, ESP_ROM_ERR_INVALID_MSG);
		return;
	}
	len = esp_le32(rq->data);
	seq = esp_le32(rq->data + 4);
	if (len != (uint32_t)rq->size - 16) {
		fail(c, rq->op, ESP_ROM_ERR_INVALID_MSG);
		return;
	}
	if (esp_checksum(p, len) != (uint8_t)rq->chk) {
		c3_log(c, "FLASH_DATA seq %u: checksum 0x%02x, want 0x%02x", seq,
		       (unsigned)(uint8_t)rq->chk, esp_checksum(p, len));
		fail(c, rq->op, ESP_ROM_ERR_BAD_CRC);
		return;
	}
	if (!c->fl_active) {
		fail(c, rq->op, ESP_ROM_ERR_FAILED);
		return;
	}
	at = c->fl_off + seq * c->fl_blksz;
	if (seq >= c->fl_blocks || len > c->fl_blksz || at > C3_FLASH_SIZE ||
	    len > C3_FLASH_SIZE - at) {
		fail(c, rq->op, ESP_ROM_ERR_FLASH_WRITE);
		return;
	}
	/* NOR flash: programming only clears bits (erase set them). */
	for (uint32_t i = 0; i < len; i++)
		c->flash[at + i] &= p[i];
	c->flash_dirty = 1;
	respond(c, rq->op, 0, NULL, 0, 0, 0);
}

static void do_md5(struct c3 *c, const esp_req *rq)
{
	uint8_t md[16];
	char hex[33];
	unsigned int mdlen = 0;
	uint32_t addr, size;

	if (rq->size != 16) {
		fail(c, rq->op, ESP_ROM_ERR_INVALID_MSG);
		return;
	}
	addr = esp_le32(rq->data);
	size = esp_le32(rq->data + 4);
	if (addr > C3_FLASH_SIZE || size > C3_FLASH_SIZE - addr) {
		fail(c, rq->op, ESP_ROM_ERR_FLASH_READ_LEN);
		return;
	}
	if (!EVP_Digest(c->flash + addr, size, md, &mdlen, EVP_md5(), NULL)) {
		fail(c, rq->op, ESP_ROM_ERR_FAILED);
		return;
	}
	/* The ROM answers in hex text (a stub sends the 16 bytes). */
	for (unsigned i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	respond(c, rq->op, 0, (const uint8_t *)hex, 32, 0, 0);
}

/* Serve one request. */
static void handle(struct c3 *c, const esp_req *rq)
{
	uint8_t si[ESP_SECINFO_LEN];

	if (c->sdm && !sdm_allows(rq->op)) {
		/* Refused the way esptool recognises (UnsupportedCommandError:
		 * a failure answer, error 0x05, not carrying the request's op). */
		c3_log(c, "op 0x%02x refused in Secure Download Mode", rq->op);
		respond(c, 0x00, 0, NULL, 0, 1, ESP_ROM_ERR_INVALID_MSG);
		return;
	}
	switch (rq->op) {
	case ESP_OP_SYNC:
		if (rq->size != ESP_SYNC_DATA_LEN) {
			fail(c, rq->op, ESP_ROM_ERR_INVALID_MSG);
			return;
		}
		for (int i = 0; i < ESP_SYNC_REPLIES; i++)
			respond(c, rq->op, SYNC_VALUE, NULL, 0, 0, 0);
		return;
	case ESP_OP_READ_REG:
		if (rq->size != 4) {
			fail(c, rq->op, ESP_ROM_ERR_INVALID_MSG);
			return;
		}
		respond(c, rq->op, reg_read(c, esp_le32(rq->data)), NULL, 0, 0, 0);
		return;
	case ESP_OP_WRITE_REG:
		if (rq->size == 0 || rq->size % 16) {
			fail(c, rq->op, ESP_ROM_ERR_INVALID_MSG);
			return;
		}
		for (unsigned i = 0; i < rq->size; i += 16) {
			reg_write(c, esp_le32(rq->data + i), esp_le32(rq->data + i + 4),
				  esp_le32(rq->data + i + 8));
			if (c->cut)
				return;         /* the power went: no answer */
		}
		respond(c, rq->op, 0, NULL, 0, 0, 0);
		return;
	case ESP_OP_GET_SECURITY_INFO:
		security_info(c, si);
		respond(c, rq->op, 0, si, sizeof(si), 0, 0);
		return;
	case ESP_OP_SPI_ATTACH:
		if (rq->size != 8 && rq->size != 4) {
			fail(c, rq->op, ESP_ROM_ERR_INVALID_MSG);
			return;
		}
		respond(c, rq->op, 0, NULL, 0, 0, 0);
		return;
	case ESP_OP_SPI_SET_PARAMS:
		if (rq->size != 24) {
			fail(c, rq->op, ESP_ROM_ERR_INVALID_MSG);
			return;
		}
		respond(c, rq->op, 0, NULL, 0, 0, 0);
		return;
	case ESP_OP_CHANGE_BAUDRATE:
		if (rq->size != 8) {
			fail(c, rq->op, ESP_ROM_ERR_INVALID_MSG);
			return;
		}
		/* A pty has no baud rate: answer and keep serving. */
		c3_log(c, "baud rate %u", esp_le32(rq->data));
		respond(c, rq->op, 0, NULL, 0, 0, 0);
		return;
	case ESP_OP_FLASH_BEGIN:
		do_flash_begin(c, rq);
		return;
	case ESP_OP_FLASH_DATA:
		do_flash_data(c, rq);
		return;
	case ESP_OP_FLASH_END:
		if (rq->size != 4) {
			fail(c, rq->op, ESP_ROM_ERR_INVALID_MSG);
			return;
		}
		if (!c->fl_active) {
			fail(c, rq->op, ESP_ROM_ERR_FAILED);
			return;
		}
		c->fl_active = 0;
		flash_sync(c);
		respond(c, rq->op, 0, NULL, 0, 0, 0);
		if (esp_le32(rq->data) == 0)          /* 0: reboot */
			chip_soft_reset(c);
		return;
	case ESP_OP_SPI_FLASH_MD5:
		do_md5(c, rq);
		return;
	case ESP_OP_MEM_BEGIN:
	case ESP_OP_MEM_DATA:
	case ESP_OP_MEM_END:
		/* RAM download (a flasher stub) is accepted and discarded:
		 * this chip runs no uploaded code (use --no-stub). */
		if (rq->op == ESP_OP_MEM_DATA && rq->size >= 16 &&
		    esp_checksum(rq->data + 16, rq->size - 16u) != (uint8_t)rq->chk) {
			fail(c, rq->op, ESP_ROM_ERR_BAD_CRC);
			return;
		}
		respond(c, rq->op, 0, NULL, 0, 0, 0);
		return;
	default:
		fail(c, rq->op, ESP_ROM_ERR_INVALID_MSG);
		return;
	}
}

/* Bytes from the host: noise, framing, requests. */
static void feed(struct c3 *c, const uint8_t *buf, size_t n)
{
	unsigned long pct = noise_pct(c);

	for (size_t i = 0; i < n && !c->cut; i++) {
		uint8_t b = buf[i];
		enum esp_slip_event ev;
		esp_req rq;

		if (pct) {
			uint64_t r = c3_rand(c);

			if (r % 10000 < pct * 100) {
				if (r & (1ull << 40))
					continue;
				b ^= (uint8_t)(1u << ((r >> 32) & 7));
			}
		}
		if (c->app_serving) {
			c3_app_byte(c, b);
			if (c->app_leave) /* FORCE_DOWNLOAD_BOOT and restart */
				chip_reset(c, "0x3 (RTC_SW_SYS_RST)");
			continue;
		}
		if (c->no_download || c->in_app)
			continue;       /* the loader is not running */
		ev = esp_slip_rx_byte(&c->rx, b);
		if (ev == ESP_SLIP_FRAME) {
			if (esp_req_parse(c->rx.buf, c->rx.len, &rq) == 0)
				handle(c, &rq);
			else
				c3_log(c, "malformed packet (%zu bytes) ignored", c->rx.len);
		} else if (ev != ESP_SLIP_MORE) {
			c3_log(c, "SLIP: %s frame dropped",
			       ev == ESP_SLIP_OVERLONG ? "overlong" : "badly escaped");
		}
	}
}

/* ---- main -------------------------------------------------------------- */

static int make_link(const char *link, const char *target)
{
	char tmp[4200];

	snprintf(tmp, sizeof(tmp), "%s.tmp%ld", link, (long)getpid());
	unlink(tmp);
	if (symlink(target, tmp) < 0 || rename(tmp, link) < 0) {
		fprintf(stderr, "station-devsim: cannot link %s -> %s: %s\n", link, target,
			strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int write_flash_image(struct c3 *c, const char *path)
{
	char tmp[4200];
	int fd, rc = -1;

	snprintf(tmp, sizeof(tmp), "%s.tmp%ld", path, (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		goto out;
	for (uint32_t off = 0; off < C3_FLASH_SIZE;) {
		ssize_t w = write(fd, c->flash + off, C3_FLASH_SIZE - off);

		if (w <= 0) {
			close(fd);
			goto out;
		}
		off += (uint32_t)w;
	}
	if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0)
		goto out;
	rc = 0;
out:
	if (rc) {
		fprintf(stderr, "station-devsim: cannot write the flash image %s: %s\n",
			path, strerror(errno));
		unlink(tmp);
	}
	return rc;
}

int esp32c3_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "state", required_argument, NULL, 's' },
		{ "seed", required_argument, NULL, 'S' },
		{ "link", required_argument, NULL, 'l' },
		{ "fault", required_argument, NULL, 'f' },
		{ "efuse-image", required_argument, NULL, 'E' },
		{ "flash-image", required_argument, NULL, 'F' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct c3 *c = calloc(1, sizeof(*c));
	const char *link = NULL, *efuse_out = NULL, *flash_out = NULL;
	char slave_name[256];
	uint8_t seedh[SHA256_DIGEST_LENGTH];
	int rc = 1, opt, slave = -1, sigfd = -1, exporting;
	sigset_t set;

	if (!c)
		return 1;
	c->master = -1;
	c->flash_fd = -1;
	c->seed = "devsim";
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'm': break;                /* esp32c3: how we got here */
		case 's': c->state_path = optarg; break;
		case 'S': c->seed = optarg; break;
		case 'l': link = optarg; break;
		case 'f':
			if (parse_fault(c, optarg) < 0)
				goto out;
			break;
		case 'E': efuse_out = optarg; break;
		case 'F': flash_out = optarg; break;
		case 'v': c->verbose = 1; break;
		case 'h': c3_usage(); rc = 0; goto out;
		default:
			fprintf(stderr, "station-devsim: that option is not one of "
				"--model esp32c3's\n");
			c3_usage();
			goto out;
		}
	}
	if (!c->state_path || optind != argc) {
		c3_usage();
		goto out;
	}
	SHA256((const uint8_t *)c->seed, strlen(c->seed), seedh);
	memcpy(&c->rng, seedh, sizeof(c->rng));
	c->rng |= 1;
	exporting = efuse_out || flash_out;
	if (state_load(c, !exporting) < 0 || flash_open(c, !exporting) < 0)
		goto out;
	/* wr-protect: the block's WR_DIS bit burned, as from the factory. */
	for (size_t i = 0; i < c->nfault; i++)
		if (c->fault[i].kind == C3_FAULT_WR_PROTECT) {
			uint32_t bit = 1u << esp_c3_block_get((unsigned)c->fault[i].a)->wr_dis_bit;

			if ((c->b0[0] & bit) != bit) {
				c->b0[0] |= bit;
				c->b0_rep[0] |= bit;
				if (c3_state_save(c) < 0)
					goto out;
			}
		}
	if (exporting) {
		rc = 0;
		if (efuse_out && c3_efuse_export(c, efuse_out) < 0)
			rc = 1;
		if (flash_out && write_flash_image(c, flash_out) < 0)
			rc = 1;
		goto out;
	}

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sigfd < 0) {
		perror("station-devsim: signalfd");
		goto out;
	}
	if (openpty(&c->master, &slave, slave_name, NULL, NULL) < 0) {
		perror("station-devsim: openpty");
		goto out;
	}
	{
		struct termios tio;

		/* We keep the slave open: the master never sees EIO when a
		 * tool closes the port. */
		if (tcgetattr(slave, &tio) == 0) {
			cfmakeraw(&tio);
			cfsetispeed(&tio, B115200);
			cfsetospeed(&tio, B115200);
			tcsetattr(slave, TCSANOW, &tio);
		}
	}
	fcntl(c->master, F_SETFL, fcntl(c->master, F_GETFL) | O_NONBLOCK);
	fcntl(c->master, F_SETFD, FD_CLOEXEC);
	fcntl(slave, F_SETFD, FD_CLOEXEC);
	if (link && make_link(link, slave_name) < 0)
		goto out;
	chip_reset(c, "0x1 (POWERON)");
	printf("ready %s\n", slave_name);
	fflush(stdout);
	c3_log(c, "serving %s", slave_name);
	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = c->master, .events = POLLIN },
			{ .fd = sigfd, .events = POLLIN },
		};
		uint8_t buf[4096];
		ssize_t n;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents) {
			struct signalfd_siginfo si;

			if (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si) &&
			    (si.ssi_signo == SIGHUP || si.ssi_signo == SIGUSR1)) {
				flash_sync(c);
				if (si.ssi_signo == SIGHUP)
					chip_reset(c, "0x1 (POWERON)");
				else
					chip_boot_flash(c, "0x1 (POWERON)");
				continue;
			}
			rc = 0;
			break;
		}
		if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = read(c->master, buf, sizeof(buf));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			poll(pfd + 1, 1, 50);
			continue;
		}
		feed(c, buf, (size_t)n);
		if (c->cut) {
			/* The power went mid-burn: what was burned stays. */
			fprintf(stderr, "station-devsim: fault burn-cut: power cut during "
				"eFuse program command %u\n", c->burns);
			c3_state_save(c);
			rc = 3;
			break;
		}
	}
	if (link) {
		char cur[256];
		ssize_t k = readlink(link, cur, sizeof(cur) - 1);

		if (k > 0 && (cur[k] = '\0', !strcmp(cur, slave_name)))
			unlink(link);
	}
out:
	flash_sync(c);
	if (c->flash)
		munmap(c->flash, C3_FLASH_SIZE);
	if (c->flash_fd >= 0) {
		fsync(c->flash_fd);
		close(c->flash_fd);
	}
	if (sigfd >= 0)
		close(sigfd);
	if (slave >= 0)
		close(slave);
	if (c->master >= 0)
		close(c->master);
	free(c->flash_path);
	free(c);
	return rc;
}

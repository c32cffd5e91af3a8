/* esp32c3.h — station-devsim --model esp32c3: a simulated ESP32-C3 whose
 * ROM serial loader and eFuse controller answer on a pty (docs/esp32.md,
 * "The simulated ESP32-C3").
 *
 * esp32c3.c holds the command line, the pty, the state file and the
 * loader's commands; esp32c3_efuse.c the eFuse array and its controller
 * at register level.  All state lives in one struct c3 owned by
 * esp32c3_main(). */
#ifndef ST_DEVSIM_ESP32C3_H
#define ST_DEVSIM_ESP32C3_H

#include <stddef.h>
#include <stdint.h>

#include "device-drivers/proto/esp_rom.h"
#include "device-drivers/proto/proto.h"

#define C3_FLASH_SIZE (4u * 1024 * 1024)
#define C3_SECTOR 4096u
#define C3_RAW_WORDS 11               /* 8 data words + 3 RS check words */
#define C3_MAX_FAULTS 5

/* The faults --fault NAME[:ARG] can switch on (docs/esp32.md). */
enum c3_fault {
	C3_FAULT_NONE = 0,
	C3_FAULT_EFUSE_FLIP,      /* efuse-flip:BLOCK[:BIT] */
	C3_FAULT_WR_PROTECT,      /* wr-protect:BLOCK */
	C3_FAULT_BURN_CUT,        /* burn-cut[:N] */
	C3_FAULT_NOISE,           /* noise:PERCENT */
	C3_FAULT_APP_WRONG_KEY,   /* app-wrong-key: the app signs with another key */
};

struct c3 {
	/* The eFuse array as burned.  BLOCK0 keeps every bit twice (b0 and
	 * b0_rep: a disagreement is a repeat error); BLOCK1..10 keep their
	 * RS codeword: data words 0..7 (a 6-word block leaves 6 and 7 zero)
	 * and check words 8..10. */
	uint32_t b0[6], b0_rep[6];
	uint32_t raw[ESP_C3_EFUSE_BLOCKS][C3_RAW_WORDS];
	/* The controller's register window (EFUSE_BASE .. +0x200): the PGM
	 * registers, the RD_* registers as the last READ_CMD left them, the
	 * error registers, CONF, timing and clock registers. */
	uint32_t win[ESP_C3_EFUSE_MEM_SIZE / 4];
	unsigned burns;               /* PGM commands done (burn-cut counts them) */

	/* The SPI flash controller's registers (user commands: RDID). */
	uint32_t spi[0x100 / 4];
	/* Any other register written (WDT, ...), read back as written. */
	struct { uint32_t addr, val; } other[64];
	size_t nother;

	/* Flash: a file beside the state, mapped shared (writes are cheap and
	 * survive a kill; msync at FLASH_END and exit). */
	uint8_t *flash;
	int flash_fd;
	int fl_active;                /* between FLASH_BEGIN and FLASH_END */
	uint32_t fl_off, fl_blocks, fl_blksz;
	int flash_dirty;

	/* Latched at reset from the eFuses, as the ROM decides at boot. */
	int sdm;                      /* ENABLE_SECURITY_DOWNLOAD: Secure Download Mode */
	int no_download;              /* DIS_DOWNLOAD_MODE: the loader never answers */
	int in_app;                   /* booted from flash (SIGUSR1): no loader */
	int app_serving;              /* ... and the factory app answers (esp32c3_app.c) */
	int app_leave;                /* the app asked for a restart into the loader */
	int app_nak;                  /* the host's HELLO asked for NAKs */
	proto_rx app_rx;
	proto_frame app_req, app_rep;

	/* Command line and line. */
	const char *state_path;
	char *flash_path;
	const char *seed;
	int verbose;
	int master;
	esp_slip_rx rx;
	uint8_t out[ESP_SLIP_ENCODED_MAX(512)];

	/* Faults. */
	struct { enum c3_fault kind; unsigned long a, b; int has_a, has_b; }
		fault[C3_MAX_FAULTS];
	size_t nfault;
	uint64_t rng;
	int cut;                      /* burn-cut fired: exit now */
};

/* eFuse side (esp32c3_efuse.c). */

/* A blank chip's factory eFuses: MAC and unique id from seed, chip
 * revision v0.4, calibration; everything else 0. */
void c3_efuse_factory(struct c3 *c, const char *seed);

/* Power-on / READ_CMD: reload the RD_* and error registers from the
 * array (RS decode, repeat check, RD_DIS hiding). */
void c3_efuse_reload(struct c3 *c);

/* A register read in the eFuse window; 1 when addr is in it. */
int c3_efuse_read(struct c3 *c, uint32_t addr, uint32_t *val);

/* A register write in the eFuse window (PGM, CONF, CMD, timing); 1 when
 * addr is in it.  A PGM_CMD burns (and the state is saved by the caller:
 * *burned is set). */
int c3_efuse_write(struct c3 *c, uint32_t addr, uint32_t val, int *burned);

/* The value of a BLOCK0 field as the chip's logic sees it (both copies
 * ORed).  name from esp_c3_field_find(). */
uint32_t c3_efuse_field(const struct c3 *c, const char *name);

/* Write the register window in espefuse --virt's file format (the 512
 * bytes, last register first, each big-endian).  0 or -1. */
int c3_efuse_export(struct c3 *c, const char *path);

/* SPI boot with SECURE_BOOT_EN: is the bootloader at 0x0 signed by a
 * key whose digest is burned (esp32c3_boot.c)?  1 yes, 0 no; why says
 * what was found. */
int c3_boot_check(struct c3 *c, char *why, size_t cap);

/* Length of the ESP image at off in flash f (header, segments, checksum,
 * appended SHA-256), or 0 when there is none (esp32c3_boot.c). */
uint32_t c3_image_length(const uint8_t *f, uint32_t off);

/* The factory app (esp32c3_app.c).  After a boot that passed: 1 when the
 * flash holds a bootloader, a partition table naming an app image and an
 * esp_secure_cert partition (the app then serves), else 0; why says which. */
int c3_app_boot(struct c3 *c, char *why, size_t cap);

/* One byte from the host to the app (the station's device protocol). */
void c3_app_byte(struct c3 *c, uint8_t b);

/* Write n bytes to the line (the noise fault applied). */
void c3_line_send(struct c3 *c, const uint8_t *buf, size_t n);

/* Save the state file (temp, fsync, rename, fsync dir).  0 or -1. */
int c3_state_save(struct c3 *c);

/* Log to stderr when --verbose. */
void c3_log(const struct c3 *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* station-devsim --model esp32c3 ...: the whole program.  Exit code. */
int esp32c3_main(int argc, char **argv);

#endif

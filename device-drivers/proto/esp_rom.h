/* esp_rom.h — the ESP32 ROM serial loader's wire protocol and the
 * ESP32-C3 facts both ends need: shared by the station's esp32 driver and
 * the simulated chip (station-devsim --model esp32c3).
 *
 * Pure code, no I/O and no global state: SLIP framing (an encoder and an
 * incremental decoder), the loader's command/response packets, the data
 * checksum, the ESP32-C3 register map of the chip-detect magic and the
 * eFuse controller, the eFuse block layout and field positions, and the
 * RS(44,32) encoder the chip applies to eFuse BLOCK1..BLOCK10.
 *
 * Every number here comes from Espressif's esptool/espefuse 4.7.0 (the
 * project's referee; docs/esp32.md names the source file of each). */
#ifndef ST_ESP_ROM_H
#define ST_ESP_ROM_H

#include <stddef.h>
#include <stdint.h>

/* ---- SLIP (RFC 1055 as the ROM uses it) --------------------------------- */

#define ESP_SLIP_END 0xC0
#define ESP_SLIP_ESC 0xDB
#define ESP_SLIP_ESC_END 0xDC         /* ESC ESC_END stands for 0xC0 */
#define ESP_SLIP_ESC_ESC 0xDD         /* ESC ESC_ESC stands for 0xDB */

/* The longest decoded frame the decoder keeps: a FLASH_DATA/MEM_DATA
 * request with a 16 KiB block (a flasher stub's size; the ROM itself
 * takes 1 KiB flash and 6 KiB RAM blocks), its 8+16 header bytes, and
 * slack. */
#define ESP_SLIP_MAX_FRAME (0x4000 + 64)

/* Bytes esp_slip_encode() writes at most for n input bytes. */
#define ESP_SLIP_ENCODED_MAX(n) (2 * (n) + 2)

/* Encode in[0..n) as one frame (END, escaped bytes, END) into out.
 * Returns the encoded length, or 0 when cap is too small. */
size_t esp_slip_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* What one byte fed to the decoder completed. */
enum esp_slip_event {
	ESP_SLIP_MORE = 0,        /* nothing yet */
	ESP_SLIP_FRAME,           /* a whole frame: esp_slip_rx.buf[0..len) */
	ESP_SLIP_BAD_ESCAPE,      /* a frame ended that held ESC + neither DC nor DD */
	ESP_SLIP_OVERLONG,        /* a frame ended that was longer than the buffer */
};

/* An incremental SLIP decoder.  Bytes before the first END are ignored (a
 * chip prints its boot banner before it speaks SLIP); after that every END
 * closes the frame in progress, and an empty one (END END) is just a
 * boundary.  A bad frame is reported once, when its END arrives, and the
 * decoder carries on with the next: it never fails for good. */
typedef struct esp_slip_rx {
	size_t len;               /* decoded bytes of the frame in progress */
	int started;              /* an END has been seen */
	int esc;                  /* the previous byte was ESC */
	int bad_escape;           /* this frame had an invalid escape */
	int overlong;             /* this frame outgrew buf */
	int done;                 /* buf holds a frame already returned */
	uint8_t buf[ESP_SLIP_MAX_FRAME];
} esp_slip_rx;

/* Start (or restart) rx empty. */
void esp_slip_rx_init(esp_slip_rx *rx);

/* Feed one byte.  After ESP_SLIP_FRAME the frame is rx->buf[0..rx->len),
 * valid until the next call. */
enum esp_slip_event esp_slip_rx_byte(esp_slip_rx *rx, uint8_t b);

/* ---- Loader packets ------------------------------------------------------ */

#define ESP_DIR_REQUEST 0x00
#define ESP_DIR_RESPONSE 0x01
#define ESP_HDR_LEN 8                 /* direction, op, size (LE16), chk/value (LE32) */
#define ESP_CHECKSUM_SEED 0xEF        /* data checksum: XOR of the bytes into 0xEF */

/* Status bytes at the end of every response's data.  The ESP32-C3 ROM
 * sends 4 (status, error, 0, 0): esptool's ESP32C3ROM inherits
 * STATUS_BYTES_LENGTH = 4 from ESP32ROM (targets/esp32.py); only the flasher
 * stubs (and the ESP8266/S2-style ROMs) send 2. */
#define ESP_C3_ROM_STATUS_LEN 4

/* Command opcodes (esptool/loader.py ESPLoader.ESP_*). */
enum esp_op {
	ESP_OP_FLASH_BEGIN = 0x02,
	ESP_OP_FLASH_DATA = 0x03,
	ESP_OP_FLASH_END = 0x04,
	ESP_OP_MEM_BEGIN = 0x05,
	ESP_OP_MEM_END = 0x06,
	ESP_OP_MEM_DATA = 0x07,
	ESP_OP_SYNC = 0x08,
	ESP_OP_WRITE_REG = 0x09,
	ESP_OP_READ_REG = 0x0a,
	ESP_OP_SPI_SET_PARAMS = 0x0b,
	ESP_OP_SPI_ATTACH = 0x0d,
	ESP_OP_READ_FLASH_SLOW = 0x0e,
	ESP_OP_CHANGE_BAUDRATE = 0x0f,
	ESP_OP_FLASH_DEFL_BEGIN = 0x10,
	ESP_OP_FLASH_DEFL_DATA = 0x11,
	ESP_OP_FLASH_DEFL_END = 0x12,
	ESP_OP_SPI_FLASH_MD5 = 0x13,
	ESP_OP_GET_SECURITY_INFO = 0x14,
};

/* The ROM's error byte (the second status byte when the first is 1).
 * esptool reports them as "result was 0x01NN"; 0x05 on a response to
 * another op is what esptool's command() turns into
 * UnsupportedCommandError (loader.py ROM_INVALID_RECV_MSG). */
enum esp_rom_error {
	ESP_ROM_ERR_INVALID_MSG = 0x05,   /* bad parameters/length, or refused */
	ESP_ROM_ERR_FAILED = 0x06,        /* failed to act on the message */
	ESP_ROM_ERR_BAD_CRC = 0x07,       /* data checksum mismatch */
	ESP_ROM_ERR_FLASH_WRITE = 0x08,
	ESP_ROM_ERR_FLASH_READ = 0x09,
	ESP_ROM_ERR_FLASH_READ_LEN = 0x0a,
	ESP_ROM_ERR_DEFLATE = 0x0b,
};

/* The SYNC request's data: 07 07 12 20 then 32 x 0x55.  A ROM answers it
 * with ESP_SYNC_REPLIES responses (esptool's sync() reads one, then 7). */
#define ESP_SYNC_DATA_LEN 36
#define ESP_SYNC_REPLIES 8

/* A decoded request (the host's packet). */
typedef struct esp_req {
	uint8_t op;
	uint16_t size;            /* data length the header claims */
	uint32_t chk;             /* checksum field (FLASH_DATA, MEM_DATA) */
	const uint8_t *data;      /* points into the frame */
} esp_req;

/* A decoded response (the chip's packet). */
typedef struct esp_resp {
	uint8_t op;
	uint16_t size;
	uint32_t value;           /* READ_REG's value, SYNC's non-zero word */
	const uint8_t *data;      /* the body before the status bytes */
	size_t data_len;
	uint8_t status;           /* 0 ok, 1 failed */
	uint8_t error;            /* enum esp_rom_error when status is 1 */
} esp_resp;

/* Parse a request frame.  0, or -1 when it is not one (too short, wrong
 * direction, size disagreeing with the frame). */
int esp_req_parse(const uint8_t *frame, size_t len, esp_req *out);

/* Build a request packet (not yet SLIP-encoded).  Returns its length, or 0
 * when cap is too small. */
size_t esp_req_build(uint8_t op, const uint8_t *data, uint16_t n, uint32_t chk,
		     uint8_t *out, size_t cap);

/* Parse a response frame whose status takes status_len bytes at the end of
 * its data (ESP_C3_ROM_STATUS_LEN for the C3 ROM).  0 or -1. */
int esp_resp_parse(const uint8_t *frame, size_t len, size_t status_len,
		   esp_resp *out);

/* Build a response packet: header, body[0..n), then status_len status
 * bytes (status, error, zeros).  Returns its length or 0. */
size_t esp_resp_build(uint8_t op, uint32_t value, const uint8_t *body, size_t n,
		      uint8_t status, uint8_t error, size_t status_len,
		      uint8_t *out, size_t cap);

/* The ROM's data checksum: 0xEF XOR every byte. */
uint8_t esp_checksum(const uint8_t *data, size_t n);

/* Little-endian helpers for packet fields. */
uint32_t esp_le32(const uint8_t *p);
void esp_put_le32(uint8_t *p, uint32_t v);

/* ---- ESP32-C3 chip facts -------------------------------------------------- */

#define ESP_CHIP_DETECT_MAGIC_REG 0x40001000u
#define ESP_C3_IMAGE_CHIP_ID 5        /* GET_SECURITY_INFO chip_id, image header */
#define ESP_C3_MAGIC_ECO3 0x1B31506Fu /* one of the four values esptool accepts */

/* 1 when v is a magic value esptool 4.7.0 takes for an ESP32-C3
 * (targets/esp32c3.py CHIP_DETECT_MAGIC_VALUE). */
int esp_c3_magic_ok(uint32_t v);

/* GET_SECURITY_INFO: 20 bytes of body (flags LE32, flash_crypt_cnt, 7 key
 * purpose bytes, chip_id LE32, api_version LE32) then the status. */
#define ESP_SECINFO_LEN 20
enum esp_secinfo_flag {
	ESP_SECINFO_SECURE_BOOT_EN = 1u << 0,
	ESP_SECINFO_SECURE_BOOT_AGGRESSIVE_REVOKE = 1u << 1,
	ESP_SECINFO_SECURE_DOWNLOAD_ENABLE = 1u << 2,
	ESP_SECINFO_SECURE_BOOT_KEY_REVOKE0 = 1u << 3,
	ESP_SECINFO_SECURE_BOOT_KEY_REVOKE1 = 1u << 4,
	ESP_SECINFO_SECURE_BOOT_KEY_REVOKE2 = 1u << 5,
	ESP_SECINFO_SOFT_DIS_JTAG = 1u << 6,
	ESP_SECINFO_HARD_DIS_JTAG = 1u << 7,
	ESP_SECINFO_DIS_USB = 1u << 8,
	ESP_SECINFO_DIS_DOWNLOAD_DCACHE = 1u << 9,
	ESP_SECINFO_DIS_DOWNLOAD_ICACHE = 1u << 10,
};

/* The SPI0/1 flash controller registers esptool's run_spiflash_command()
 * drives (targets/esp32c3.py SPI_*; flash_id() sends RDID 0x9F). */
#define ESP_C3_SPI_BASE 0x60002000u
#define ESP_C3_SPI_CMD (ESP_C3_SPI_BASE + 0x00)
#define ESP_C3_SPI_CMD_USR (1u << 18)
#define ESP_C3_SPI_ADDR (ESP_C3_SPI_BASE + 0x04)
#define ESP_C3_SPI_USR (ESP_C3_SPI_BASE + 0x18)
#define ESP_C3_SPI_USR1 (ESP_C3_SPI_BASE + 0x1C)
#define ESP_C3_SPI_USR2 (ESP_C3_SPI_BASE + 0x20)
#define ESP_C3_SPI_MOSI_DLEN (ESP_C3_SPI_BASE + 0x24)
#define ESP_C3_SPI_MISO_DLEN (ESP_C3_SPI_BASE + 0x28)
#define ESP_C3_SPI_W0 (ESP_C3_SPI_BASE + 0x58)

/* The eFuse controller (espefuse/efuse/esp32c3/mem_definition.py). */
#define ESP_C3_EFUSE_BASE 0x60008800u
#define ESP_C3_EFUSE_PGM_DATA(i) (ESP_C3_EFUSE_BASE + 0x000 + 4u * (i))   /* i 0..7 */
#define ESP_C3_EFUSE_PGM_CHECK(i) (ESP_C3_EFUSE_BASE + 0x020 + 4u * (i))  /* i 0..2 */
#define ESP_C3_EFUSE_RD_WR_DIS (ESP_C3_EFUSE_BASE + 0x02C)   /* BLOCK0 word 0 */
#define ESP_C3_EFUSE_RD_REPEAT_DATA(i) (ESP_C3_EFUSE_BASE + 0x030 + 4u * (i)) /* 0..4 */
#define ESP_C3_EFUSE_RD_REPEAT_ERR(i) (ESP_C3_EFUSE_BASE + 0x17C + 4u * (i))  /* 0..4 */
#define ESP_C3_EFUSE_RD_RS_ERR0 (ESP_C3_EFUSE_BASE + 0x1C0)
#define ESP_C3_EFUSE_RD_RS_ERR1 (ESP_C3_EFUSE_BASE + 0x1C4)
#define ESP_C3_EFUSE_CLK (ESP_C3_EFUSE_BASE + 0x1C8)
#define ESP_C3_EFUSE_CONF (ESP_C3_EFUSE_BASE + 0x1CC)
#define ESP_C3_EFUSE_STATUS (ESP_C3_EFUSE_BASE + 0x1D0)
#define ESP_C3_EFUSE_CMD (ESP_C3_EFUSE_BASE + 0x1D4)
#define ESP_C3_EFUSE_DAC_CONF (ESP_C3_EFUSE_BASE + 0x1E8)
#define ESP_C3_EFUSE_RD_TIM_CONF (ESP_C3_EFUSE_BASE + 0x1EC)
#define ESP_C3_EFUSE_WR_TIM_CONF1 (ESP_C3_EFUSE_BASE + 0x1F0)
#define ESP_C3_EFUSE_WR_TIM_CONF2 (ESP_C3_EFUSE_BASE + 0x1F4)
#define ESP_C3_EFUSE_DATE (ESP_C3_EFUSE_BASE + 0x1FC)
#define ESP_C3_EFUSE_MEM_SIZE 0x200   /* the register window, bytes */

#define ESP_C3_EFUSE_WRITE_OP_CODE 0x5A5A  /* CONF before PGM_CMD */
#define ESP_C3_EFUSE_READ_OP_CODE 0x5AA5   /* CONF before READ_CMD */
#define ESP_C3_EFUSE_READ_CMD 0x1
#define ESP_C3_EFUSE_PGM_CMD 0x2
#define ESP_C3_EFUSE_CMD_BLK_SHIFT 2       /* CMD[5:2]: the block to program */
#define ESP_C3_EFUSE_CMD_BLK_MASK 0xF

/* espefuse's set_efuse_timing() fields (DAC_CONF, WR_TIM_CONF1/2). */
#define ESP_C3_EFUSE_DAC_CLK_DIV_M 0xFFu
#define ESP_C3_EFUSE_DAC_NUM_M (0xFFu << 9)
#define ESP_C3_EFUSE_PWR_ON_NUM_M (0xFFFFu << 8)
#define ESP_C3_EFUSE_PWR_OFF_NUM_M 0xFFFFu

#define ESP_C3_EFUSE_BLOCKS 11
#define ESP_C3_RS_DATA 32             /* RS(44,32): 32 data bytes ... */
#define ESP_C3_RS_CHECK 12            /* ... and 12 check bytes in PGM_CHECK0..2 */

/* One eFuse block: BLOCK0 (6 words, no RS: every bit is kept twice and
 * a disagreement shows in RD_REPEAT_ERR), BLOCK1..BLOCK10 RS(44,32)-coded
 * (the write window is always 8 data words + 3 check words; a 6-word block
 * is coded with its last 2 words zero). */
typedef struct esp_c3_block {
	const char *name;         /* espefuse's name, e.g. "BLOCK_KEY0" */
	unsigned words;           /* 6 or 8 */
	uint32_t rd_addr;         /* first RD_* register */
	int wr_dis_bit;           /* WR_DIS bit protecting it, -1 none */
	int rd_dis_bit;           /* RD_DIS bit hiding it, -1 none */
	int rs_coded;             /* 1 for BLOCK1..10 */
	/* RD_RS_ERR0/1: error count field and fail bit as the chip sets them
	 * and espefuse reads them (the C3's fail bits sit one block further
	 * on, a hardware erratum espefuse follows; -1: none). */
	int err_reg;              /* 0: RD_RS_ERR0, 1: RD_RS_ERR1, -1 (BLOCK0) */
	int err_num_shift;        /* 3-bit count at this shift */
	int fail_reg;             /* register of the fail bit, -1 none */
	int fail_bit;
} esp_c3_block;

/* Block n (0..10), or NULL. */
const esp_c3_block *esp_c3_block_get(unsigned n);

/* A named eFuse field of BLOCK0..BLOCK2 (espefuse/efuse_defs/esp32c3.yaml):
 * position and the WR_DIS bit that protects it (-1: none). */
typedef struct esp_c3_field {
	const char *name;
	unsigned block, word, pos, len;
	int wr_dis_bit;
	int rd_dis_bit;
} esp_c3_field;

/* The field called name, or NULL. */
const esp_c3_field *esp_c3_field_find(const char *name);

/* The i-th field (0..), or NULL past the end. */
const esp_c3_field *esp_c3_field_at(size_t i);

/* KEY_PURPOSE_n values (espefuse esp32c3 fields.py KEY_PURPOSES). */
enum esp_c3_key_purpose {
	ESP_C3_KP_USER = 0,
	ESP_C3_KP_RESERVED = 1,
	ESP_C3_KP_XTS_AES_128_KEY = 4,
	ESP_C3_KP_HMAC_DOWN_ALL = 5,
	ESP_C3_KP_HMAC_DOWN_JTAG = 6,
	ESP_C3_KP_HMAC_DOWN_DIGITAL_SIGNATURE = 7,
	ESP_C3_KP_HMAC_UP = 8,
	ESP_C3_KP_SECURE_BOOT_DIGEST0 = 9,
	ESP_C3_KP_SECURE_BOOT_DIGEST1 = 10,
	ESP_C3_KP_SECURE_BOOT_DIGEST2 = 11,
};

/* RS(44,32) over GF(2^8) with polynomial 0x11d, generator 2, first
 * consecutive root 0 (reedsolo.RSCodec(12) as espefuse calls it):
 * check[0..12) for data[0..32), in the order they go to PGM_CHECK0..2
 * (little-endian words: check[0] is the low byte of PGM_CHECK0). */
void esp_rs_encode(const uint8_t data[ESP_C3_RS_DATA],
		   uint8_t check[ESP_C3_RS_CHECK]);

/* Check a stored 44-byte RS word (data then check bytes).  Returns the
 * number of corrected bytes (0 clean, 1 one byte wrong and fixed in
 * place), or -1 when the errors are more than this decoder corrects
 * (it locates single-byte errors only; the data are left as stored). */
int esp_rs_check(uint8_t word[ESP_C3_RS_DATA + ESP_C3_RS_CHECK]);

#endif

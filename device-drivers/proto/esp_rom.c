/* esp_rom.c — ESP32 ROM loader framing and packets, ESP32-C3 tables and
 * the eFuse RS(44,32) code (esp_rom.h says what and where from). */
#include "device-drivers/proto/esp_rom.h"

#include <string.h>

/* ---- SLIP ----------------------------------------------------------------- */

size_t esp_slip_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	size_t o = 0;

	if (cap < 2)
		return 0;
	out[o++] = ESP_SLIP_END;
	for (size_t i = 0; i < n; i++) {
		uint8_t b = in[i];
		int esc = b == ESP_SLIP_END || b == ESP_SLIP_ESC;

		/* Room for this byte (1 or 2) and the closing END. */
		if (o + (size_t)(esc ? 2 : 1) + 1 > cap)
			return 0;
		if (esc) {
			out[o++] = ESP_SLIP_ESC;
			out[o++] = b == ESP_SLIP_END ? ESP_SLIP_ESC_END : ESP_SLIP_ESC_ESC;
		} else {
			out[o++] = b;
		}
	}
	out[o++] = ESP_SLIP_END;
	return o;
}

void esp_slip_rx_init(esp_slip_rx *rx)
{
	rx->len = 0;
	rx->started = 0;
	rx->esc = 0;
	rx->bad_escape = 0;
	rx->overlong = 0;
	rx->done = 0;
}

enum esp_slip_event esp_slip_rx_byte(esp_slip_rx *rx, uint8_t b)
{
	enum esp_slip_event ev = ESP_SLIP_MORE;

	if (rx->done) {
		/* The frame returned last time is the caller's no longer. */
		rx->len = 0;
		rx->done = 0;
	}
	if (b == ESP_SLIP_END) {
		if (rx->started) {
			if (rx->overlong)
				ev = ESP_SLIP_OVERLONG;
			else if (rx->bad_escape || rx->esc)
				ev = ESP_SLIP_BAD_ESCAPE;   /* ESC END is no escape */
			else if (rx->len)
				ev = ESP_SLIP_FRAME;
		}
		rx->started = 1;
		rx->esc = 0;
		rx->bad_escape = 0;
		rx->overlong = 0;
		if (ev == ESP_SLIP_FRAME)
			rx->done = 1;
		else
			rx->len = 0;
		return ev;
	}
	if (!rx->started)
		return ESP_SLIP_MORE;           /* boot banner, line noise */
	if (rx->esc) {
		rx->esc = 0;
		if (b == ESP_SLIP_ESC_END)
			b = ESP_SLIP_END;
		else if (b == ESP_SLIP_ESC_ESC)
			b = ESP_SLIP_ESC;
		else {
			rx->bad_escape = 1;
			return ESP_SLIP_MORE;
		}
	} else if (b == ESP_SLIP_ESC) {
		rx->esc = 1;
		return ESP_SLIP_MORE;
	}
	if (rx->len < sizeof(rx->buf))
		rx->buf[rx->len++] = b;
	else
		rx->overlong = 1;
	return ESP_SLIP_MORE;
}

/* ---- Packets -------------------------------------------------------------- */

uint32_t esp_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

void esp_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

uint8_t esp_checksum(const uint8_t *data, size_t n)
{
	uint8_t c = ESP_CHECKSUM_SEED;

	for (size_t i = 0; i < n; i++)
		c ^= data[i];
	return c;
}

int esp_req_parse(const uint8_t *frame, size_t len, esp_req *out)
{
	if (!frame || !out || len < ESP_HDR_LEN || frame[0] != ESP_DIR_REQUEST)
		return -1;
	out->op = frame[1];
	out->size = (uint16_t)(frame[2] | frame[3] << 8);
	out->chk = esp_le32(frame + 4);
	out->data = frame + ESP_HDR_LEN;
	if ((size_t)out->size != len - ESP_HDR_LEN)
		return -1;
	return 0;
}

size_t esp_req_build(uint8_t op, const uint8_t *data, uint16_t n, uint32_t chk,
		     uint8_t *out, size_t cap)
{
	if (cap < (size_t)ESP_HDR_LEN + n)
		return 0;
	out[0] = ESP_DIR_REQUEST;
	out[1] = op;
	out[2] = (uint8_t)n;
	out[3] = (uint8_t)(n >> 8);
	esp_put_le32(out + 4, chk);
	if (n)
		memcpy(out + ESP_HDR_LEN, data, n);
	return ESP_HDR_LEN + (size_t)n;
}

int esp_resp_parse(const uint8_t *frame, size_t len, size_t status_len,
		   esp_resp *out)
{
	size_t body;

	if (!frame || !out || len < ESP_HDR_LEN || frame[0] != ESP_DIR_RESPONSE)
		return -1;
	out->op = frame[1];
	out->size = (uint16_t)(frame[2] | frame[3] << 8);
	out->value = esp_le32(frame + 4);
	body = len - ESP_HDR_LEN;
	if ((size_t)out->size != body || body < status_len)
		return -1;
	out->data = frame + ESP_HDR_LEN;
	out->data_len = body - status_len;
	out->status = status_len ? frame[ESP_HDR_LEN + out->data_len] : 0;
	out->error = status_len > 1 ? frame[ESP_HDR_LEN + out->data_len + 1] : 0;
	return 0;
}

size_t esp_resp_build(uint8_t op, uint32_t value, const uint8_t *body, size_t n,
		      uint8_t status, uint8_t error, size_t status_len,
		      uint8_t *out, size_t cap)
{
	size_t total = n + status_len;

	if (total > 0xFFFF || cap < ESP_HDR_LEN + total)
		return 0;
	out[0] = ESP_DIR_RESPONSE;
	out[1] = op;
	out[2] = (uint8_t)total;
	out[3] = (uint8_t)(total >> 8);
	esp_put_le32(out + 4, value);
	if (n)
		memcpy(out + ESP_HDR_LEN, body, n);
	memset(out + ESP_HDR_LEN + n, 0, status_len);
	if (status_len)
		out[ESP_HDR_LEN + n] = status;
	if (status_len > 1)
		out[ESP_HDR_LEN + n + 1] = error;
	return ESP_HDR_LEN + total;
}

/* ---- ESP32-C3 tables ------------------------------------------------------ */

int esp_c3_magic_ok(uint32_t v)
{
	/* ECO1+2, ECO3, ECO6, ECO7 (targets/esp32c3.py). */
	static const uint32_t magic[] = {
		0x6921506Fu, 0x1B31506Fu, 0x4881606Fu, 0x4361606Fu,
	};

	for (size_t i = 0; i < sizeof(magic) / sizeof(magic[0]); i++)
		if (magic[i] == v)
			return 1;
	return 0;
}

#define RD(off) (ESP_C3_EFUSE_BASE + (off))
/* mem_definition.py EfuseDefineBlocks.BLOCKS and the BLOCK_FAIL_BIT /
 * BLOCK_NUM_ERRORS tables (the fail bits shifted by one block). */
static const esp_c3_block c3_blocks[ESP_C3_EFUSE_BLOCKS] = {
	{ "BLOCK0",          6, RD(0x02C), -1, -1, 0, -1, 0,  -1, 0 },
	{ "MAC_SPI_8M_0",    6, RD(0x044), 20, -1, 1,  0, 0,   0, 7 },
	{ "BLOCK_SYS_DATA",  8, RD(0x05C), 21, -1, 1,  0, 4,   0, 11 },
	{ "BLOCK_USR_DATA",  8, RD(0x07C), 22, -1, 1,  0, 8,   0, 15 },
	{ "BLOCK_KEY0",      8, RD(0x09C), 23,  0, 1,  0, 12,  0, 19 },
	{ "BLOCK_KEY1",      8, RD(0x0BC), 24,  1, 1,  0, 16,  0, 23 },
	{ "BLOCK_KEY2",      8, RD(0x0DC), 25,  2, 1,  0, 20,  0, 27 },
	{ "BLOCK_KEY3",      8, RD(0x0FC), 26,  3, 1,  0, 24,  0, 31 },
	{ "BLOCK_KEY4",      8, RD(0x11C), 27,  4, 1,  0, 28,  1, 3 },
	{ "BLOCK_KEY5",      8, RD(0x13C), 28,  5, 1,  1, 0,   1, 7 },
	{ "BLOCK_SYS_DATA2", 8, RD(0x15C), 29,  6, 1,  1, 4,  -1, 0 },
};
#undef RD

const esp_c3_block *esp_c3_block_get(unsigned n)
{
	return n < ESP_C3_EFUSE_BLOCKS ? &c3_blocks[n] : NULL;
}

/* espefuse/efuse_defs/esp32c3.yaml, BLOCK0..BLOCK2 fields (the reserved
 * ones left out): name, block, word, bit, length, WR_DIS bit, RD_DIS bit. */
static const esp_c3_field c3_fields[] = {
	{ "WR_DIS", 0, 0, 0, 32, -1, -1 },
	{ "RD_DIS", 0, 1, 0, 7, 0, -1 },
	{ "DIS_RTC_RAM_BOOT", 0, 1, 7, 1, 1, -1 },
	{ "DIS_ICACHE", 0, 1, 8, 1, 2, -1 },
	{ "DIS_USB_JTAG", 0, 1, 9, 1, 2, -1 },
	{ "DIS_DOWNLOAD_ICACHE", 0, 1, 10, 1, 2, -1 },
	{ "DIS_USB_SERIAL_JTAG", 0, 1, 11, 1, 2, -1 },
	{ "DIS_FORCE_DOWNLOAD", 0, 1, 12, 1, 2, -1 },
	{ "DIS_TWAI", 0, 1, 14, 1, 2, -1 },
	{ "JTAG_SEL_ENABLE", 0, 1, 15, 1, 2, -1 },
	{ "SOFT_DIS_JTAG", 0, 1, 16, 3, 31, -1 },
	{ "DIS_PAD_JTAG", 0, 1, 19, 1, 2, -1 },
	{ "DIS_DOWNLOAD_MANUAL_ENCRYPT", 0, 1, 20, 1, 2, -1 },
	{ "USB_DREFH", 0, 1, 21, 2, 30, -1 },
	{ "USB_DREFL", 0, 1, 23, 2, 30, -1 },
	{ "USB_EXCHG_PINS", 0, 1, 25, 1, 30, -1 },
	{ "VDD_SPI_AS_GPIO", 0, 1, 26, 1, 30, -1 },
	{ "BTLC_GPIO_ENABLE", 0, 1, 27, 2, 30, -1 },
	{ "POWERGLITCH_EN", 0, 1, 29, 1, 3, -1 },
	{ "POWER_GLITCH_DSENSE", 0, 1, 30, 2, 3, -1 },
	{ "WDT_DELAY_SEL", 0, 2, 16, 2, 3, -1 },
	{ "SPI_BOOT_CRYPT_CNT", 0, 2, 18, 3, 4, -1 },
	{ "SECURE_BOOT_KEY_REVOKE0", 0, 2, 21, 1, 5, -1 },
	{ "SECURE_BOOT_KEY_REVOKE1", 0, 2, 22, 1, 6, -1 },
	{ "SECURE_BOOT_KEY_REVOKE2", 0, 2, 23, 1, 7, -1 },
	{ "KEY_PURPOSE_0", 0, 2, 24, 4, 8, -1 },
	{ "KEY_PURPOSE_1", 0, 2, 28, 4, 9, -1 },
	{ "KEY_PURPOSE_2", 0, 3, 0, 4, 10, -1 },
	{ "KEY_PURPOSE_3", 0, 3, 4, 4, 11, -1 },
	{ "KEY_PURPOSE_4", 0, 3, 8, 4, 12, -1 },
	{ "KEY_PURPOSE_5", 0, 3, 12, 4, 13, -1 },
	{ "SECURE_BOOT_EN", 0, 3, 20, 1, 15, -1 },
	{ "SECURE_BOOT_AGGRESSIVE_REVOKE", 0, 3, 21, 1, 16, -1 },
	{ "FLASH_TPUW", 0, 3, 28, 4, 18, -1 },
	{ "DIS_DOWNLOAD_MODE", 0, 4, 0, 1, 18, -1 },
	{ "DIS_DIRECT_BOOT", 0, 4, 1, 1, 18, -1 },
	{ "DIS_USB_SERIAL_JTAG_ROM_PRINT", 0, 4, 2, 1, 18, -1 },
	{ "FLASH_ECC_MODE", 0, 4, 3, 1, 18, -1 },
	{ "DIS_USB_SERIAL_JTAG_DOWNLOAD_MODE", 0, 4, 4, 1, 18, -1 },
	{ "ENABLE_SECURITY_DOWNLOAD", 0, 4, 5, 1, 18, -1 },
	{ "UART_PRINT_CONTROL", 0, 4, 6, 2, 18, -1 },
	{ "PIN_POWER_SELECTION", 0, 4, 8, 1, 18, -1 },
	{ "FLASH_TYPE", 0, 4, 9, 1, 18, -1 },
	{ "FLASH_PAGE_SIZE", 0, 4, 10, 2, 18, -1 },
	{ "FLASH_ECC_EN", 0, 4, 12, 1, 18, -1 },
	{ "FORCE_SEND_RESUME", 0, 4, 13, 1, 18, -1 },
	{ "SECURE_VERSION", 0, 4, 14, 16, 18, -1 },
	{ "ERR_RST_ENABLE", 0, 4, 31, 1, 19, -1 },
	{ "DISABLE_WAFER_VERSION_MAJOR", 0, 5, 0, 1, 19, -1 },
	{ "DISABLE_BLK_VERSION_MAJOR", 0, 5, 1, 1, 19, -1 },
	{ "MAC", 1, 0, 0, 48, 20, -1 },
	{ "SPI_PAD_CONFIG_CLK", 1, 1, 16, 6, 20, -1 },
	{ "SPI_PAD_CONFIG_Q", 1, 1, 22, 6, 20, -1 },
	{ "SPI_PAD_CONFIG_D", 1, 1, 28, 6, 20, -1 },
	{ "SPI_PAD_CONFIG_CS", 1, 2, 2, 6, 20, -1 },
	{ "SPI_PAD_CONFIG_HD", 1, 2, 8, 6, 20, -1 },
	{ "SPI_PAD_CONFIG_WP", 1, 2, 14, 6, 20, -1 },
	{ "SPI_PAD_CONFIG_DQS", 1, 2, 20, 6, 20, -1 },
	{ "SPI_PAD_CONFIG_D4", 1, 2, 26, 6, 20, -1 },
	{ "SPI_PAD_CONFIG_D5", 1, 3, 0, 6, 20, -1 },
	{ "SPI_PAD_CONFIG_D6", 1, 3, 6, 6, 20, -1 },
	{ "SPI_PAD_CONFIG_D7", 1, 3, 12, 6, 20, -1 },
	{ "WAFER_VERSION_MINOR_LO", 1, 3, 18, 3, 20, -1 },
	{ "PKG_VERSION", 1, 3, 21, 3, 20, -1 },
	{ "BLK_VERSION_MINOR", 1, 3, 24, 3, 20, -1 },
	{ "FLASH_CAP", 1, 3, 27, 3, 20, -1 },
	{ "FLASH_TEMP", 1, 3, 30, 2, 20, -1 },
	{ "FLASH_VENDOR", 1, 4, 0, 3, 20, -1 },
	{ "K_RTC_LDO", 1, 4, 7, 7, 20, -1 },
	{ "K_DIG_LDO", 1, 4, 14, 7, 20, -1 },
	{ "V_RTC_DBIAS20", 1, 4, 21, 8, 20, -1 },
	{ "V_DIG_DBIAS20", 1, 4, 29, 8, 20, -1 },
	{ "DIG_DBIAS_HVT", 1, 5, 5, 5, 20, -1 },
	{ "THRES_HVT", 1, 5, 10, 10, 20, -1 },
	{ "WAFER_VERSION_MINOR_HI", 1, 5, 23, 1, 20, -1 },
	{ "WAFER_VERSION_MAJOR", 1, 5, 24, 2, 20, -1 },
	{ "OPTIONAL_UNIQUE_ID", 2, 0, 0, 128, 21, -1 },
	{ "BLK_VERSION_MAJOR", 2, 4, 0, 2, 21, -1 },
	{ "TEMP_CALIB", 2, 4, 3, 9, 21, -1 },
	{ "OCODE", 2, 4, 12, 8, 21, -1 },
	{ "ADC1_INIT_CODE_ATTEN0", 2, 4, 20, 10, 21, -1 },
	{ "ADC1_INIT_CODE_ATTEN1", 2, 4, 30, 10, 21, -1 },
	{ "ADC1_INIT_CODE_ATTEN2", 2, 5, 8, 10, 21, -1 },
	{ "ADC1_INIT_CODE_ATTEN3", 2, 5, 18, 10, 21, -1 },
	{ "ADC1_CAL_VOL_ATTEN0", 2, 5, 28, 10, 21, -1 },
	{ "ADC1_CAL_VOL_ATTEN1", 2, 6, 6, 10, 21, -1 },
	{ "ADC1_CAL_VOL_ATTEN2", 2, 6, 16, 10, 21, -1 },
	{ "ADC1_CAL_VOL_ATTEN3", 2, 6, 26, 10, 21, -1 },
};

const esp_c3_field *esp_c3_field_at(size_t i)
{
	return i < sizeof(c3_fields) / sizeof(c3_fields[0]) ? &c3_fields[i] : NULL;
}

const esp_c3_field *esp_c3_field_find(const char *name)
{
	for (size_t i = 0; name && i < sizeof(c3_fields) / sizeof(c3_fields[0]); i++)
		if (!strcmp(c3_fields[i].name, name))
			return &c3_fields[i];
	return NULL;
}

/* ---- RS(44,32) ------------------------------------------------------------ */

/* Multiply in GF(2^8) modulo x^8+x^4+x^3+x^2+1 (0x11d). */
static uint8_t gf_mul(uint8_t a, uint8_t b)
{
	unsigned r = 0, x = a;

	while (b) {
		if (b & 1)
			r ^= x;
		x <<= 1;
		if (x & 0x100)
			x ^= 0x11d;
		b >>= 1;
	}
	return (uint8_t)r;
}

/* alpha^e for the generator alpha = 2. */
static uint8_t gf_pow2(unsigned e)
{
	uint8_t r = 1;

	while (e--)
		r = gf_mul(r, 2);
	return r;
}

void esp_rs_encode(const uint8_t data[ESP_C3_RS_DATA],
		   uint8_t check[ESP_C3_RS_CHECK])
{
	/* g(x) = prod_{i=0..11} (x - alpha^i), g[0] the x^12 coefficient. */
	uint8_t g[ESP_C3_RS_CHECK + 1] = { 1 };
	uint8_t rem[ESP_C3_RS_CHECK] = { 0 };

	for (unsigned i = 0; i < ESP_C3_RS_CHECK; i++) {
		uint8_t root = gf_pow2(i);

		for (unsigned j = i + 1; j > 0; j--)
			g[j] ^= gf_mul(g[j - 1], root);
	}
	/* Systematic code: the remainder of data(x) * x^12 by g(x), the
	 * highest coefficient first, as reedsolo appends it. */
	for (unsigned i = 0; i < ESP_C3_RS_DATA; i++) {
		uint8_t f = data[i] ^ rem[0];

		memmove(rem, rem + 1, ESP_C3_RS_CHECK - 1);
		rem[ESP_C3_RS_CHECK - 1] = 0;
		if (f)
			for (unsigned j = 0; j < ESP_C3_RS_CHECK; j++)
				rem[j] ^= gf_mul(g[j + 1], f);
	}
	memcpy(check, rem, ESP_C3_RS_CHECK);
}

int esp_rs_check(uint8_t word[ESP_C3_RS_DATA + ESP_C3_RS_CHECK])
{
	enum { N = ESP_C3_RS_DATA + ESP_C3_RS_CHECK };
	uint8_t s[ESP_C3_RS_CHECK];
	int clean = 1;

	/* Syndromes S_j = r(alpha^j), word[0] the x^43 coefficient. */
	for (unsigned j = 0; j < ESP_C3_RS_CHECK; j++) {
		uint8_t x = gf_pow2(j), acc = 0;

		for (unsigned i = 0; i < N; i++)
			acc = (uint8_t)(gf_mul(acc, x) ^ word[i]);
		s[j] = acc;
		clean &= acc == 0;
	}
	if (clean)
		return 0;
	/* One wrong byte e at degree d gives S_j = e * alpha^(d*j). */
	if (!s[0])
		return -1;
	for (unsigned d = 0; d < N; d++) {
		uint8_t ad = gf_pow2(d), t = s[0];
		int ok = 1;

		for (unsigned j = 1; j < ESP_C3_RS_CHECK && ok; j++) {
			t = gf_mul(t, ad);
			ok = t == s[j];
		}
		if (ok) {
			word[N - 1 - d] ^= s[0];
			return 1;
		}
	}
	return -1;
}

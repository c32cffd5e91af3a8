/* esp32c3_efuse.c — the simulated ESP32-C3's eFuse array and controller,
 * at register level as espefuse drives a real chip (mem_definition.py,
 * fields.py, emulate_efuse_controller*.py of espefuse 4.7.0 describe what
 * the chip does; docs/esp32.md lists the rules this file follows). */
#include "devsim/esp32c3.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define W(addr) (((addr) - ESP_C3_EFUSE_BASE) / 4)

/* The word index in win[] of block n's first RD register. */
static unsigned rd_word(unsigned n)
{
	return W(esp_c3_block_get(n)->rd_addr);
}

/* Set len bits at pos of a 6- or 8-word block image (bits may cross a
 * word, as the 48-bit MAC does). */
static void put_bits(uint32_t *words, unsigned word, unsigned pos, unsigned len,
		     uint64_t v)
{
	for (unsigned i = 0; i < len; i++) {
		unsigned bit = word * 32 + pos + i;

		if ((v >> i) & 1)
			words[bit / 32] |= 1u << (bit % 32);
		else
			words[bit / 32] &= ~(1u << (bit % 32));
	}
}

static uint64_t get_bits(const uint32_t *words, unsigned word, unsigned pos,
			 unsigned len)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < len; i++) {
		unsigned bit = word * 32 + pos + i;

		v |= (uint64_t)((words[bit / 32] >> (bit % 32)) & 1) << i;
	}
	return v;
}

/* A named field of BLOCK1/BLOCK2 into a data image. */
static void put_field(uint32_t *words, const char *name, uint64_t v)
{
	const esp_c3_field *f = esp_c3_field_find(name);

	if (f)
		put_bits(words, f->word, f->pos, f->len, v);
}

/* The 44-byte codeword of data words d[0..8) (little-endian, as the
 * PGM registers hold them) with its RS check words. */
static void rs_words(uint32_t raw[C3_RAW_WORDS])
{
	uint8_t data[ESP_C3_RS_DATA], chk[ESP_C3_RS_CHECK];

	for (unsigned i = 0; i < 8; i++)
		esp_put_le32(data + 4 * i, raw[i]);
	esp_rs_encode(data, chk);
	for (unsigned i = 0; i < 3; i++)
		raw[8 + i] = esp_le32(chk + 4 * i);
}

void c3_efuse_factory(struct c3 *c, const char *seed)
{
	uint8_t h[SHA256_DIGEST_LENGTH];
	uint32_t *b1 = c->raw[1], *b2 = c->raw[2];
	char buf[512];

	memset(c->b0, 0, sizeof(c->b0));
	memset(c->b0_rep, 0, sizeof(c->b0_rep));
	memset(c->raw, 0, sizeof(c->raw));
	snprintf(buf, sizeof(buf), "esp32c3-factory:%s", seed);
	SHA256((const uint8_t *)buf, strlen(buf), h);
	/* MAC: Espressif's OUI 7c:df:a1 and three bytes of the seed.  The
	 * 48-bit field holds it as esptool reads it back: word 1 bits 15..0
	 * are bytes 0..1, word 0 bytes 2..5, most significant first. */
	b1[1] = 0x7cu << 8 | 0xdfu;
	b1[0] = 0xa1u << 24 | (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
	/* Chip revision v0.4 (WAFER_VERSION_MINOR_LO 4, HI 0, MAJOR 0),
	 * QFN32 package, external flash, BLK_VERSION_MINOR 1, and the LDO /
	 * bias calibration a real part carries (typical values). */
	put_field(b1, "WAFER_VERSION_MINOR_LO", 4);
	put_field(b1, "PKG_VERSION", 0);
	put_field(b1, "BLK_VERSION_MINOR", 1);
	put_field(b1, "K_RTC_LDO", 0x0c);
	put_field(b1, "K_DIG_LDO", 0x0a);
	put_field(b1, "V_RTC_DBIAS20", 0x36);
	put_field(b1, "V_DIG_DBIAS20", 0x32);
	put_field(b1, "DIG_DBIAS_HVT", 0x1c);
	put_field(b1, "THRES_HVT", 0x1e0);
	rs_words(b1);
	/* BLOCK2: a 128-bit unique id from the seed, BLK_VERSION_MAJOR 1
	 * (the ADC/temperature calibration below is then in use). */
	for (unsigned i = 0; i < 4; i++)
		b2[i] = esp_le32(h + 4 + 4 * i);
	put_field(b2, "BLK_VERSION_MAJOR", 1);
	put_field(b2, "TEMP_CALIB", 0x0d);
	put_field(b2, "OCODE", 0x5a);
	put_field(b2, "ADC1_INIT_CODE_ATTEN0", 0x1a0);
	put_field(b2, "ADC1_INIT_CODE_ATTEN1", 0x070);
	put_field(b2, "ADC1_INIT_CODE_ATTEN2", 0x072);
	put_field(b2, "ADC1_INIT_CODE_ATTEN3", 0x0d0);
	put_field(b2, "ADC1_CAL_VOL_ATTEN0", 0x23c);
	put_field(b2, "ADC1_CAL_VOL_ATTEN1", 0x230);
	put_field(b2, "ADC1_CAL_VOL_ATTEN2", 0x22a);
	put_field(b2, "ADC1_CAL_VOL_ATTEN3", 0x2b6);
	rs_words(b2);
}

uint32_t c3_efuse_field(const struct c3 *c, const char *name)
{
	const esp_c3_field *f = esp_c3_field_find(name);
	uint32_t w[6];

	if (!f || f->block != 0)
		return 0;
	for (unsigned i = 0; i < 6; i++)
		w[i] = c->b0[i] | c->b0_rep[i];
	return (uint32_t)get_bits(w, f->word, f->pos, f->len);
}

/* The read-side faults: the bits the sense amplifiers get wrong in
 * block's stored bytes (n bytes: BLOCK0 its repeat copy, else the
 * codeword). */
static void flip_bits(const struct c3 *c, unsigned block, uint8_t *bytes, size_t n)
{
	for (size_t i = 0; i < c->nfault; i++) {
		unsigned long bit = c->fault[i].has_b ? c->fault[i].b : 0;

		if (c->fault[i].kind == C3_FAULT_EFUSE_FLIP && c->fault[i].a == block &&
		    bit < 8 * n)
			bytes[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
}

void c3_efuse_reload(struct c3 *c)
{
	uint32_t err0 = 0, err1 = 0, rd_dis;
	uint8_t rep_bytes[6 * 4];

	for (unsigned w = 0; w < 6; w++)
		esp_put_le32(rep_bytes + 4 * w, c->b0_rep[w]);
	flip_bits(c, 0, rep_bytes, sizeof(rep_bytes));
	/* BLOCK0: the OR of both copies; where they differ, RD_REPEAT_ERR
	 * (words 1..5; WR_DIS has no error register). */
	for (unsigned w = 0; w < 6; w++) {
		uint32_t rep = esp_le32(rep_bytes + 4 * w);

		c->win[rd_word(0) + w] = c->b0[w] | rep;
		if (w >= 1)
			c->win[W(ESP_C3_EFUSE_RD_REPEAT_ERR(w - 1))] = c->b0[w] ^ rep;
	}
	rd_dis = c3_efuse_field(c, "RD_DIS");
	for (unsigned n = 1; n < ESP_C3_EFUSE_BLOCKS; n++) {
		const esp_c3_block *b = esp_c3_block_get(n);
		uint8_t cw[ESP_C3_RS_DATA + ESP_C3_RS_CHECK];
		int r;

		for (unsigned i = 0; i < C3_RAW_WORDS; i++)
			esp_put_le32(cw + 4 * i, c->raw[n][i]);
		flip_bits(c, n, cw, sizeof(cw));
		/* The decoder corrects what it can; the count goes to the
		 * error register, the fail bit when it could not. */
		r = esp_rs_check(cw);
		if (r != 0) {
			uint32_t num = r < 0 ? 7u : (uint32_t)r;
			uint32_t *e = b->err_reg == 0 ? &err0 : &err1;

			*e |= num << b->err_num_shift;
			if (r < 0 && b->fail_reg >= 0)
				*(b->fail_reg == 0 ? &err0 : &err1) |= 1u << b->fail_bit;
		}
		for (unsigned w = 0; w < b->words; w++) {
			uint32_t v = esp_le32(cw + 4 * w);

			/* RD_DIS: the key stays in the chip, the register reads 0. */
			if (b->rd_dis_bit >= 0 && (rd_dis >> b->rd_dis_bit) & 1)
				v = 0;
			c->win[rd_word(n) + w] = v;
		}
	}
	c->win[W(ESP_C3_EFUSE_RD_RS_ERR0)] = err0;
	c->win[W(ESP_C3_EFUSE_RD_RS_ERR1)] = err1;
}

/* The mask of BLOCK0 bits a program command may still set: the bits of
 * every field whose WR_DIS bit is burned are out. */
static void block0_mask(const struct c3 *c, uint32_t mask[6])
{
	uint32_t wr_dis = c->b0[0] | c->b0_rep[0];
	const esp_c3_field *f;

	for (unsigned i = 0; i < 6; i++)
		mask[i] = 0xFFFFFFFFu;
	for (size_t i = 0; (f = esp_c3_field_at(i)); i++)
		if (f->block == 0 && f->wr_dis_bit >= 0 && (wr_dis >> f->wr_dis_bit) & 1)
			put_bits(mask, f->word, f->pos, f->len, 0);
}

/* Is the burn-cut fault due for this program command? */
static int cut_now(struct c3 *c)
{
	for (size_t i = 0; i < c->nfault; i++)
		if (c->fault[i].kind == C3_FAULT_BURN_CUT &&
		    c->burns == (c->fault[i].has_a ? c->fault[i].a : 1))
			return 1;
	return 0;
}

/* PGM_CMD for block n: OR the PGM registers into the array (a fuse only
 * goes 0 -> 1), skipping write-protected bits; the RD registers change
 * only at the next READ_CMD, as on the chip. */
static void program(struct c3 *c, unsigned n)
{
	uint32_t wr_dis = c->b0[0] | c->b0_rep[0];
	uint32_t *pgm = &c->win[W(ESP_C3_EFUSE_PGM_DATA(0))];
	int cut;

	c->burns++;
	cut = cut_now(c);
	if (n == 0) {
		uint32_t mask[6];

		block0_mask(c, mask);
		/* Primary copy first, then the repeat copy: a power cut in
		 * between leaves them different (RD_REPEAT_ERR). */
		for (unsigned w = 0; w < 6; w++)
			c->b0[w] |= pgm[w] & mask[w];
		if (cut) {
			c->cut = 1;
			return;
		}
		for (unsigned w = 0; w < 6; w++)
			c->b0_rep[w] |= pgm[w] & mask[w];
	} else if (n < ESP_C3_EFUSE_BLOCKS) {
		const esp_c3_block *b = esp_c3_block_get(n);

		if ((wr_dis >> b->wr_dis_bit) & 1) {
			c3_log(c, "eFuse: BLOCK%u is write-protected (WR_DIS bit %d): "
			       "nothing burned", n, b->wr_dis_bit);
			goto done;
		}
		/* Data words, then the check words: a cut in between leaves
		 * a codeword the RS decoder rejects. */
		for (unsigned w = 0; w < b->words; w++)
			c->raw[n][w] |= pgm[w];
		if (cut) {
			c->cut = 1;
			return;
		}
		for (unsigned w = 0; w < 3; w++)
			c->raw[n][8 + w] |= pgm[8 + w];
	}
done:
	/* The PGM registers are cleared after a program cycle. */
	memset(pgm, 0, 11 * sizeof(*pgm));
}

int c3_efuse_read(struct c3 *c, uint32_t addr, uint32_t *val)
{
	if (addr < ESP_C3_EFUSE_BASE || addr >= ESP_C3_EFUSE_BASE + ESP_C3_EFUSE_MEM_SIZE ||
	    addr % 4)
		return 0;
	if (addr == ESP_C3_EFUSE_CMD)
		*val = 0;                       /* every command is done at once */
	else if (addr == ESP_C3_EFUSE_STATUS)
		*val = 1;                       /* STATE: idle */
	else if (addr == ESP_C3_EFUSE_DATE)
		*val = 0x02007200;
	else
		*val = c->win[W(addr)];
	return 1;
}

int c3_efuse_write(struct c3 *c, uint32_t addr, uint32_t val, int *burned)
{
	uint32_t off;

	if (addr < ESP_C3_EFUSE_BASE || addr >= ESP_C3_EFUSE_BASE + ESP_C3_EFUSE_MEM_SIZE ||
	    addr % 4)
		return 0;
	off = addr - ESP_C3_EFUSE_BASE;
	if (off < 0x2C) {                       /* PGM_DATA0..7, CHECK0..2 */
		c->win[W(addr)] = val;
		return 1;
	}
	if (addr == ESP_C3_EFUSE_CMD) {
		uint32_t conf = c->win[W(ESP_C3_EFUSE_CONF)];

		if ((val & ESP_C3_EFUSE_PGM_CMD) && conf == ESP_C3_EFUSE_WRITE_OP_CODE) {
			unsigned n = (val >> ESP_C3_EFUSE_CMD_BLK_SHIFT) &
				     ESP_C3_EFUSE_CMD_BLK_MASK;

			program(c, n);
			*burned = 1;
			c3_log(c, "eFuse: programmed BLOCK%u", n);
		} else if ((val & ESP_C3_EFUSE_READ_CMD) &&
			   conf == ESP_C3_EFUSE_READ_OP_CODE) {
			c3_efuse_reload(c);
		} else if (val) {
			c3_log(c, "eFuse: CMD 0x%x ignored (CONF 0x%x is not its opcode)",
			       val, conf);
		}
		return 1;
	}
	/* CLK, CONF, DAC_CONF, RD_TIM_CONF, WR_TIM_CONF1/2 keep what is
	 * written; the RD_* and error registers are read-only. */
	if (addr == ESP_C3_EFUSE_CLK || addr == ESP_C3_EFUSE_CONF ||
	    addr == ESP_C3_EFUSE_DAC_CONF || addr == ESP_C3_EFUSE_RD_TIM_CONF ||
	    addr == ESP_C3_EFUSE_WR_TIM_CONF1 || addr == ESP_C3_EFUSE_WR_TIM_CONF2)
		c->win[W(addr)] = val;
	return 1;
}

int c3_efuse_export(struct c3 *c, const char *path)
{
	uint8_t le[ESP_C3_EFUSE_MEM_SIZE], out[ESP_C3_EFUSE_MEM_SIZE];
	char tmp[4200];
	int fd, rc = -1;

	c3_efuse_reload(c);
	for (unsigned i = 0; i < ESP_C3_EFUSE_MEM_SIZE / 4; i++) {
		uint32_t v = c->win[i];

		/* What a lab reads: the array, not a host's half-written
		 * PGM registers or a command in flight. */
		if (i < W(ESP_C3_EFUSE_RD_WR_DIS) || i == W(ESP_C3_EFUSE_CMD) ||
		    i == W(ESP_C3_EFUSE_CONF))
			v = 0;
		esp_put_le32(le + 4 * i, v);
	}
	/* espefuse --virt keeps the window as one bit string whose last 32
	 * bits are the register at EFUSE_BASE, each register big-endian: the
	 * little-endian window byte-reversed. */
	for (unsigned i = 0; i < sizeof(le); i++)
		out[i] = le[sizeof(le) - 1 - i];
	snprintf(tmp, sizeof(tmp), "%s.tmp%ld", path, (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		goto out;
	if (write(fd, out, sizeof(out)) != (ssize_t)sizeof(out) || fsync(fd) < 0) {
		close(fd);
		goto out;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0)
		goto out;
	rc = 0;
out:
	if (rc) {
		fprintf(stderr, "station-devsim: cannot write the eFuse image %s: %s\n",
			path, strerror(errno));
		unlink(tmp);
	}
	return rc;
}

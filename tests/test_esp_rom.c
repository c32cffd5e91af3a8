/* test_esp_rom.c — the shared ESP ROM loader protocol module
 * (device-drivers/proto/esp_rom.c): SLIP, packets, the checksum, the C3
 * tables, and the eFuse RS(44,32) encoder against Espressif's referee
 * (reedsolo.RSCodec(12), as espefuse calls it). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device-drivers/proto/esp_rom.h"
#include "tests/fixtures/fx_esp.h"

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

/* Feed bytes; collect the events and the last frame. */
static int feed(esp_slip_rx *rx, const uint8_t *b, size_t n, int *events,
		int max, uint8_t *last, size_t *last_len)
{
	int k = 0;

	for (size_t i = 0; i < n; i++) {
		enum esp_slip_event ev = esp_slip_rx_byte(rx, b[i]);

		if (ev == ESP_SLIP_MORE)
			continue;
		if (k < max)
			events[k] = ev;
		k++;
		if (ev == ESP_SLIP_FRAME && last) {
			memcpy(last, rx->buf, rx->len);
			*last_len = rx->len;
		}
	}
	return k;
}

Test(slip, round_trip_every_byte_value)
{
	static esp_slip_rx rx;
	uint8_t in[600], wire[ESP_SLIP_ENCODED_MAX(600)], out[600];
	size_t n, olen = 0;
	int ev[4];

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)i;
	in[5] = ESP_SLIP_END;
	in[6] = ESP_SLIP_ESC;
	n = esp_slip_encode(in, sizeof(in), wire, sizeof(wire));
	cr_assert_gt(n, sizeof(in) + 2);
	cr_assert_eq(wire[0], ESP_SLIP_END);
	cr_assert_eq(wire[n - 1], ESP_SLIP_END);
	for (size_t i = 1; i + 1 < n; i++)
		cr_assert_neq(wire[i], ESP_SLIP_END, "END inside the frame at %zu", i);
	esp_slip_rx_init(&rx);
	cr_assert_eq(feed(&rx, wire, n, ev, 4, out, &olen), 1);
	cr_assert_eq(ev[0], ESP_SLIP_FRAME);
	cr_assert_eq(olen, sizeof(in));
	cr_assert_arr_eq(out, in, sizeof(in));
}

Test(slip, escapes_are_exactly_the_rom_ones)
{
	const uint8_t in[] = { 0xC0, 0xDB, 0x01 };
	const uint8_t want[] = { 0xC0, 0xDB, 0xDC, 0xDB, 0xDD, 0x01, 0xC0 };
	uint8_t wire[16];

	cr_assert_eq(esp_slip_encode(in, sizeof(in), wire, sizeof(wire)), sizeof(want));
	cr_assert_arr_eq(wire, want, sizeof(want));
	/* Too small a buffer: 0, never an overrun. */
	cr_assert_eq(esp_slip_encode(in, sizeof(in), wire, sizeof(want) - 1), 0);
}

Test(slip, random_frames_back_to_back_with_banner_before)
{
	static esp_slip_rx rx;
	static uint8_t wire[8 * ESP_SLIP_ENCODED_MAX(2000)];
	uint8_t data[8][2000], out[2000];
	size_t len[8], w = 0;
	const char banner[] = "ESP-ROM:esp32c3-api1-20210207\r\nwaiting for download\r\n";

	memcpy(wire, banner, strlen(banner));
	w = strlen(banner);
	for (int i = 0; i < 8; i++) {
		len[i] = 1 + (size_t)(i * 271) % 2000;
		fill(data[i], len[i], (uint32_t)i + 7);
		w += esp_slip_encode(data[i], len[i], wire + w, sizeof(wire) - w);
	}
	esp_slip_rx_init(&rx);
	int got = 0;
	for (size_t i = 0; i < w; i++) {
		if (esp_slip_rx_byte(&rx, wire[i]) != ESP_SLIP_FRAME)
			continue;
		cr_assert_lt(got, 8);
		cr_assert_eq(rx.len, len[got], "frame %d: %zu bytes, want %zu", got,
			     rx.len, len[got]);
		memcpy(out, rx.buf, rx.len);
		cr_assert_arr_eq(out, data[got], len[got]);
		got++;
	}
	cr_assert_eq(got, 8, "the banner before the first END is ignored");
}

Test(slip, bad_escape_is_reported_and_the_next_frame_still_decodes)
{
	static esp_slip_rx rx;
	const uint8_t wire[] = { 0xC0, 0x01, 0xDB, 0x42, 0x02, 0xC0,   /* bad escape */
				 0xC0, 0x03, 0xDB, 0xC0,               /* ESC then END */
				 0xC0, 0x07, 0xDB, 0xDC, 0xC0 };       /* a good one */
	uint8_t out[8];
	size_t olen = 0;
	int ev[8];

	esp_slip_rx_init(&rx);
	cr_assert_eq(feed(&rx, wire, sizeof(wire), ev, 8, out, &olen), 3);
	cr_assert_eq(ev[0], ESP_SLIP_BAD_ESCAPE);
	cr_assert_eq(ev[1], ESP_SLIP_BAD_ESCAPE);
	cr_assert_eq(ev[2], ESP_SLIP_FRAME);
	cr_assert_eq(olen, 2);
	cr_assert_eq(out[0], 0x07);
	cr_assert_eq(out[1], 0xC0);
}

Test(slip, overlong_frame_is_reported_not_overrun)
{
	static esp_slip_rx rx;
	static uint8_t big[ESP_SLIP_MAX_FRAME + 100];
	const uint8_t next[] = { 0xC0, 0x11, 0x22, 0xC0 };
	uint8_t out[4];
	size_t olen = 0;
	int ev[4];

	memset(big, 0x41, sizeof(big));
	big[0] = 0xC0;
	big[sizeof(big) - 1] = 0xC0;
	esp_slip_rx_init(&rx);
	cr_assert_eq(feed(&rx, big, sizeof(big), ev, 4, NULL, NULL), 1);
	cr_assert_eq(ev[0], ESP_SLIP_OVERLONG);
	cr_assert_eq(feed(&rx, next, sizeof(next), ev, 4, out, &olen), 1);
	cr_assert_eq(ev[0], ESP_SLIP_FRAME);
	cr_assert_eq(olen, 2);
}

Test(packet, request_and_response_layout)
{
	uint8_t data[16], pkt[64];
	esp_req rq;
	esp_resp rp;
	size_t n;

	fill(data, sizeof(data), 3);
	n = esp_req_build(ESP_OP_FLASH_DATA, data, sizeof(data),
			  esp_checksum(data, sizeof(data)), pkt, sizeof(pkt));
	cr_assert_eq(n, 8 + sizeof(data));
	cr_assert_eq(pkt[0], 0x00);
	cr_assert_eq(pkt[1], 0x03);
	cr_assert_eq(pkt[2], 16);
	cr_assert_eq(pkt[3], 0);
	cr_assert_eq(esp_req_parse(pkt, n, &rq), 0);
	cr_assert_eq(rq.op, ESP_OP_FLASH_DATA);
	cr_assert_eq(rq.size, 16);
	cr_assert_eq(rq.chk, esp_checksum(data, sizeof(data)));
	cr_assert_eq(esp_req_parse(pkt, n - 1, &rq), -1, "size disagrees with the frame");
	pkt[0] = 1;
	cr_assert_eq(esp_req_parse(pkt, n, &rq), -1, "a response is not a request");

	/* READ_REG's reply: value in the header, 4 status bytes (C3 ROM). */
	n = esp_resp_build(ESP_OP_READ_REG, 0x1B31506F, NULL, 0, 0, 0,
			   ESP_C3_ROM_STATUS_LEN, pkt, sizeof(pkt));
	cr_assert_eq(n, 12);
	const uint8_t want[] = { 1, 0x0a, 4, 0, 0x6f, 0x50, 0x31, 0x1b, 0, 0, 0, 0 };
	cr_assert_arr_eq(pkt, want, sizeof(want));
	cr_assert_eq(esp_resp_parse(pkt, n, ESP_C3_ROM_STATUS_LEN, &rp), 0);
	cr_assert_eq(rp.value, 0x1B31506F);
	cr_assert_eq(rp.data_len, 0);
	cr_assert_eq(rp.status, 0);
	/* A failure: status 1, error byte. */
	n = esp_resp_build(ESP_OP_FLASH_DATA, 0, NULL, 0, 1, ESP_ROM_ERR_BAD_CRC,
			   ESP_C3_ROM_STATUS_LEN, pkt, sizeof(pkt));
	cr_assert_eq(esp_resp_parse(pkt, n, ESP_C3_ROM_STATUS_LEN, &rp), 0);
	cr_assert_eq(rp.status, 1);
	cr_assert_eq(rp.error, 0x07);
	cr_assert_eq(esp_resp_parse(pkt, 10, ESP_C3_ROM_STATUS_LEN, &rp), -1);
}

Test(packet, checksum_seed_and_xor)
{
	const uint8_t d[] = { 0x01, 0x02, 0xEF };

	cr_assert_eq(esp_checksum(NULL, 0), 0xEF);
	cr_assert_eq(esp_checksum(d, 3), 0xEF ^ 0x01 ^ 0x02 ^ 0xEF);
}

Test(c3, magic_blocks_and_fields)
{
	cr_assert(esp_c3_magic_ok(0x1B31506F));
	cr_assert(esp_c3_magic_ok(0x4361606F));
	cr_assert_not(esp_c3_magic_ok(0x00f01d83), "an ESP32's magic is not a C3's");
	cr_assert_eq(esp_c3_block_get(4)->rd_addr, 0x6000889C);
	cr_assert_eq(esp_c3_block_get(4)->rd_dis_bit, 0);
	cr_assert_eq(esp_c3_block_get(4)->wr_dis_bit, 23);
	cr_assert_eq(esp_c3_block_get(1)->words, 6);
	cr_assert_null(esp_c3_block_get(11));
	const esp_c3_field *f = esp_c3_field_find("SECURE_BOOT_EN");
	cr_assert_not_null(f);
	cr_assert_eq(f->word, 3);
	cr_assert_eq(f->pos, 20);
	cr_assert_eq(f->wr_dis_bit, 15);
	f = esp_c3_field_find("ENABLE_SECURITY_DOWNLOAD");
	cr_assert_eq(f->word, 4);
	cr_assert_eq(f->pos, 5);
	cr_assert_null(esp_c3_field_find("NO_SUCH_FIELD"));
}

Test(rs, matches_reedsolo_as_espefuse_calls_it)
{
	char py[4096], tmp[] = "/tmp/esp-rs-XXXXXX", line[256];
	uint8_t data[16][32], chk[16][12];
	FILE *f, *p;
	int fd = mkstemp(tmp), n = 0;

	cr_assert_geq(fd, 0);
	f = fdopen(fd, "w");
	for (int i = 0; i < 16; i++) {
		fill(data[i], 32, (uint32_t)(i * 977 + 1));
		if (i == 0)
			memset(data[i], 0, 32);
		if (i == 1)
			memset(data[i], 0xff, 32);
		esp_rs_encode(data[i], chk[i]);
		for (int j = 0; j < 32; j++)
			fprintf(f, "%02x", data[i][j]);
		fputc('\n', f);
	}
	fclose(f);
	snprintf(py, sizeof(py),
		 "PYTHONPATH=%s /usr/bin/python3 -c '"
		 "import reedsolo,sys\n"
		 "rs = reedsolo.RSCodec(12)\n"
		 "for l in open(sys.argv[1]):\n"
		 "    d = bytes.fromhex(l.strip())\n"
		 "    print(bytes(rs.encode(list(d)))[32:].hex())\n"
		 "' %s", fx_esp_referee_path(), tmp);
	p = popen(py, "r");
	cr_assert_not_null(p);
	while (fgets(line, sizeof(line), p)) {
		char mine[25];

		cr_assert_lt(n, 16);
		for (int j = 0; j < 12; j++)
			snprintf(mine + 2 * j, 3, "%02x", chk[n][j]);
		line[strcspn(line, "\n")] = '\0';
		cr_assert_str_eq(mine, line, "block %d: ours %s, reedsolo %s", n, mine, line);
		n++;
	}
	cr_assert_eq(pclose(p), 0, "the referee failed");
	unlink(tmp);
	cr_assert_eq(n, 16);
}

Test(rs, check_finds_and_fixes_one_byte_and_refuses_more)
{
	uint8_t w[44], orig[44];

	fill(w, 32, 99);
	esp_rs_encode(w, w + 32);
	memcpy(orig, w, sizeof(w));
	cr_assert_eq(esp_rs_check(w), 0);
	for (int pos = 0; pos < 44; pos += 5) {
		w[pos] ^= 0x10;
		cr_assert_eq(esp_rs_check(w), 1, "one flipped bit at byte %d", pos);
		cr_assert_arr_eq(w, orig, sizeof(w));
	}
	w[3] ^= 1;
	w[40] ^= 0x80;
	cr_assert_eq(esp_rs_check(w), -1);
}

/* test_proto.c — the wire protocol codec, then the serial driver against a
 * real station-devsim on a pty (tests/fixtures/fx_devsim). */
#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "base.h"
#include "device-drivers/drv.h"
#include "device-drivers/proto/proto.h"
#include "device-drivers/serial/serial.h"
#include "tests/fixtures/fx_devsim.h"

/* ---- helpers ---------------------------------------------------------- */

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

static size_t encode(const uint8_t *payload, size_t n, uint8_t type,
		     uint16_t seq, uint8_t *wire)
{
	proto_frame *f = calloc(1, sizeof(*f));
	size_t len = 0;

	cr_assert_not_null(f);
	f->version = PROTO_VERSION;
	f->type = type;
	f->seq = seq;
	f->len = (uint16_t)n;
	memcpy(f->payload, payload, n);
	cr_assert_eq(proto_frame_encode(f, wire, PROTO_MAX_WIRE, &len), ST_OK);
	free(f);
	return len;
}

/* Feed wire bytes through a receiver; count good and bad frames. */
static int feed(const uint8_t *wire, size_t n, proto_frame *f, int *bad,
		int *last_why)
{
	proto_rx *rx = malloc(sizeof(*rx));
	int good = 0;

	cr_assert_not_null(rx);
	proto_rx_init(rx);
	*bad = 0;
	for (size_t i = 0; i < n; i++) {
		int why = 0, r = proto_rx_byte(rx, wire[i], f, &why);

		if (r == 1)
			good++;
		else if (r < 0) {
			(*bad)++;
			if (last_why)
				*last_why = why;
		}
	}
	free(rx);
	return good;
}

/* A raw decoded frame with an arbitrary header, valid CRC, COBS + 0x00. */
static size_t raw_frame(uint8_t ver, uint16_t lenfield, const uint8_t *payload,
			size_t n, uint8_t *wire)
{
	uint8_t *raw = malloc(PROTO_MIN_DECODED + n);
	size_t len;

	cr_assert_not_null(raw);
	raw[0] = ver;
	raw[1] = PROTO_CMD_IDENTIFY;
	proto_put16(raw + 2, 7);
	proto_put16(raw + 4, lenfield);
	memcpy(raw + PROTO_HDR_LEN, payload, n);
	proto_put32(raw + PROTO_HDR_LEN + n,
		    (uint32_t)crc32(0L, raw, (uInt)(PROTO_HDR_LEN + n)));
	len = proto_cobs_encode(raw, PROTO_MIN_DECODED + n, wire);
	wire[len++] = 0;
	free(raw);
	return len;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

/* Per-test state: a temp dir and up to two simulators. */
static char tmpdir[64];
static fx_devsim sim, sim2;

static void setup_dir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/st-proto-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown_dir(void)
{
	fx_devsim_stop(&sim);
	fx_devsim_stop(&sim2);
	if (tmpdir[0])
		nftw(tmpdir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void start_sim(fx_devsim *s, const char *name, int units, const char *extra)
{
	cr_assert_eq(fx_devsim_start(s, tmpdir, name, units, extra), 0,
		     "station-devsim did not start (STATION_BUILD=%s)",
		     getenv("STATION_BUILD") ? getenv("STATION_BUILD") : "(unset)");
}

static drv_dev *open_dev(const char *port, int timeout_ms)
{
	drv_opts o = { .timeout_ms = timeout_ms };
	drv_dev *d = NULL;
	int rc = drv_open(port, &o, &d);

	cr_assert_eq(rc, ST_OK, "drv_open(%s): %s: %s", port, st_strerror(rc),
		     drv_errmsg(d));
	return d;
}

static json_t *dump_unit(size_t i)
{
	json_t *root = NULL, *u;

	cr_assert_eq(fx_devsim_dump(sim.state_path, &root), 0);
	u = json_array_get(json_object_get(root, "units"), i);
	cr_assert_not_null(u);
	json_incref(u);
	json_decref(root);
	return u;
}

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "(null)";
}

/* ---- codec ------------------------------------------------------------ */

Test(codec, cobs_vectors)
{
	static const struct {
		uint8_t in[8];
		size_t n;
		uint8_t out[8];
		size_t m;
	} v[] = {
		{ { 0x00 }, 1, { 0x01, 0x01 }, 2 },
		{ { 0x00, 0x00 }, 2, { 0x01, 0x01, 0x01 }, 3 },
		{ { 0x11, 0x22, 0x00, 0x33 }, 4, { 0x03, 0x11, 0x22, 0x02, 0x33 }, 5 },
		{ { 0x11, 0x22, 0x33, 0x44 }, 4, { 0x05, 0x11, 0x22, 0x33, 0x44 }, 5 },
		{ { 0x11, 0x00, 0x00, 0x00 }, 4, { 0x02, 0x11, 0x01, 0x01, 0x01 }, 5 },
	};
	uint8_t in[600], out[700], back[600];
	size_t m, n;

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		m = proto_cobs_encode(v[i].in, v[i].n, out);
		cr_assert_eq(m, v[i].m, "vector %zu", i);
		cr_assert_arr_eq(out, v[i].out, m, "vector %zu", i);
		cr_assert_eq(proto_cobs_decode(out, m, back, sizeof(back), &n), ST_OK);
		cr_assert_eq(n, v[i].n);
		cr_assert_arr_eq(back, v[i].in, n);
	}
	/* 254 non-zero bytes: one full run, no trailing code byte. */
	for (int i = 0; i < 254; i++)
		in[i] = (uint8_t)(i + 1);
	m = proto_cobs_encode(in, 254, out);
	cr_assert_eq(m, 255);
	cr_assert_eq(out[0], 0xff);
	/* 255 non-zero bytes: FF run, then a 02 run. */
	in[254] = 0x42;
	m = proto_cobs_encode(in, 255, out);
	cr_assert_eq(m, 257);
	cr_assert_eq(out[255], 0x02);
	cr_assert_eq(proto_cobs_decode(out, m, back, sizeof(back), &n), ST_OK);
	cr_assert_eq(n, 255);
	cr_assert_arr_eq(back, in, 255);
	/* A zero inside, and a run past the end, are not COBS. */
	out[3] = 0;
	cr_assert_eq(proto_cobs_decode(out, m, back, sizeof(back), &n), ST_E_PROTO);
	out[0] = 0x05;
	cr_assert_eq(proto_cobs_decode(out, 3, back, sizeof(back), &n), ST_E_PROTO);
}

/* The worked example in docs/protocol.md, byte for byte. */
Test(codec, doc_example)
{
	static const uint8_t payload[] = { 0x01, 0x01, 0x1f, 0x00, 0x00, 0x00 };
	static const uint8_t expect[] = {
		0x04, 0x01, 0x01, 0x01, 0x02, 0x06, 0x04, 0x01, 0x01, 0x1f,
		0x01, 0x01, 0x05, 0xa5, 0x8a, 0x15, 0xf6, 0x00,
	};
	uint8_t wire[PROTO_MAX_WIRE];
	size_t n = encode(payload, sizeof(payload), PROTO_CMD_HELLO, 1, wire);

	cr_assert_eq(n, sizeof(expect));
	cr_assert_arr_eq(wire, expect, n);
}

Test(codec, roundtrip_sizes)
{
	static const size_t sizes[] = { 0, 1, 2, 253, 254, 255, 256, 508, 509,
					1000, 2048, 4095, PROTO_MAX_PAYLOAD };
	uint8_t *payload = malloc(PROTO_MAX_PAYLOAD), *wire = malloc(PROTO_MAX_WIRE);
	proto_frame *f = malloc(sizeof(*f));

	cr_assert(payload && wire && f);
	for (int pattern = 0; pattern < 3; pattern++) {
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			size_t n = sizes[i], len;
			int bad, good;

			if (pattern == 0)
				fill(payload, n, (uint32_t)n);
			else
				memset(payload, pattern == 1 ? 0x00 : 0xff, n);
			len = encode(payload, n, PROTO_CMD_READ_CERT | PROTO_REPLY,
				     (uint16_t)(n * 7), wire);
			cr_assert_leq(len, PROTO_MAX_WIRE);
			cr_assert_eq(wire[len - 1], 0);
			cr_assert_null(memchr(wire, 0, len - 1),
				       "0x00 inside frame (size %zu)", n);
			good = feed(wire, len, f, &bad, NULL);
			cr_assert_eq(good, 1, "size %zu pattern %d", n, pattern);
			cr_assert_eq(bad, 0);
			cr_assert_eq(f->len, n);
			cr_assert_eq(f->seq, (uint16_t)(n * 7));
			cr_assert_eq(f->type, PROTO_CMD_READ_CERT | PROTO_REPLY);
			cr_assert_eq(f->version, PROTO_VERSION);
			cr_assert_arr_eq(f->payload, payload, n);
		}
	}
	free(payload);
	free(wire);
	free(f);
}

Test(codec, every_bit_flip_is_caught)
{
	uint8_t payload[300], wire[PROTO_MAX_WIRE], bent[PROTO_MAX_WIRE];
	proto_frame *f = malloc(sizeof(*f));
	size_t len;

	cr_assert_not_null(f);
	fill(payload, sizeof(payload), 99);
	memset(payload + 10, 0, 20); /* zeros make COBS code bytes interesting */
	len = encode(payload, sizeof(payload), PROTO_CMD_WRITE_CERT, 513, wire);
	for (size_t i = 0; i + 1 < len; i++) {
		for (int b = 0; b < 8; b++) {
			int bad;

			memcpy(bent, wire, len);
			bent[i] ^= (uint8_t)(1u << b);
			cr_assert_eq(feed(bent, len, f, &bad, NULL), 0,
				     "flip of bit %d in byte %zu went unnoticed", b, i);
			cr_assert_geq(bad, 1);
		}
	}
	free(f);
}

Test(codec, truncated_frames)
{
	uint8_t payload[64], wire[PROTO_MAX_WIRE], cut[PROTO_MAX_WIRE];
	proto_frame *f = malloc(sizeof(*f));
	size_t len;
	int why = 0;

	cr_assert_not_null(f);
	fill(payload, sizeof(payload), 5);
	len = encode(payload, sizeof(payload), PROTO_CMD_IDENTIFY, 3, wire);
	for (size_t keep = 1; keep + 1 < len; keep++) {
		memcpy(cut, wire, keep);
		cr_assert_neq(proto_frame_decode(cut, keep, f, &why), ST_OK,
			      "frame cut to %zu bytes accepted", keep);
	}
	/* Shorter than a header: "truncated". */
	payload[0] = 0x01;
	len = proto_cobs_encode(payload, 5, cut);
	cr_assert_eq(proto_frame_decode(cut, len, f, &why), ST_E_PROTO);
	cr_assert_eq(why, PROTO_BAD_SHORT);
	cr_assert_str_eq(proto_bad_str(why), "truncated frame");
	free(f);
}

Test(codec, bad_length_field)
{
	uint8_t payload[40] = { 1, 2, 3 }, wire[PROTO_MAX_WIRE];
	proto_frame *f = malloc(sizeof(*f));
	size_t len;
	int why = 0;

	cr_assert_not_null(f);
	len = raw_frame(PROTO_VERSION, 39, payload, 40, wire);
	cr_assert_eq(proto_frame_decode(wire, len - 1, f, &why), ST_E_PROTO);
	cr_assert_eq(why, PROTO_BAD_LENGTH);
	len = raw_frame(PROTO_VERSION, 41, payload, 40, wire);
	cr_assert_eq(proto_frame_decode(wire, len - 1, f, &why), ST_E_PROTO);
	cr_assert_eq(why, PROTO_BAD_LENGTH);
	len = raw_frame(PROTO_VERSION, 40, payload, 40, wire);
	cr_assert_eq(proto_frame_decode(wire, len - 1, f, &why), ST_OK);
	free(f);
}

Test(codec, oversized)
{
	size_t big = PROTO_MAX_PAYLOAD + 1;
	uint8_t *payload = calloc(1, big), *wire = malloc(2 * PROTO_MAX_WIRE);
	proto_frame *f = calloc(1, sizeof(*f));
	uint8_t good[PROTO_MAX_WIRE];
	size_t len, glen;
	int why = 0, bad;

	cr_assert(payload && wire && f);
	/* The encoder refuses. */
	f->version = PROTO_VERSION;
	f->len = (uint16_t)big;
	cr_assert_eq(proto_frame_encode(f, wire, PROTO_MAX_WIRE, &len), ST_E_INVAL);
	/* A consistent but too-long frame is refused by the decoder... */
	fill(payload, big, 1);
	len = raw_frame(PROTO_VERSION, (uint16_t)big, payload, big, wire);
	cr_assert_eq(proto_frame_decode(wire, len - 1, f, &why), ST_E_PROTO);
	cr_assert_eq(why, PROTO_BAD_OVERSIZE);
	/* ...and by the receiver, which then resynchronises. */
	glen = encode(payload, 16, PROTO_CMD_IDENTIFY, 9, good);
	memcpy(wire + len, good, glen);
	cr_assert_eq(feed(wire, len + glen, f, &bad, &why), 1);
	cr_assert_eq(bad, 1);
	cr_assert_eq(why, PROTO_BAD_OVERSIZE);
	cr_assert_eq(f->seq, 9);
	free(payload);
	free(wire);
	free(f);
}

Test(codec, bad_version)
{
	uint8_t payload[4] = { 0 }, wire[64];
	proto_frame *f = malloc(sizeof(*f));
	size_t len;
	int why = 0;

	cr_assert_not_null(f);
	len = raw_frame(2, 4, payload, 4, wire);
	cr_assert_eq(proto_frame_decode(wire, len - 1, f, &why), ST_E_VERSION);
	cr_assert_eq(why, PROTO_BAD_VERSION);
	cr_assert_eq(f->version, 2);
	cr_assert_eq(f->seq, 7); /* so a device can answer BAD_VERSION */
	free(f);
}

Test(codec, resync_after_garbage)
{
	uint8_t stream[4096], payload[100];
	proto_frame *f = malloc(sizeof(*f));
	size_t n = 0;
	int bad, good;

	cr_assert_not_null(f);
	fill(payload, sizeof(payload), 3);
	fill(stream, 700, 77);               /* garbage with stray zeros */
	n = 700;
	stream[n++] = 0;
	n += encode(payload, sizeof(payload), PROTO_CMD_SIGN_CHALLENGE, 1, stream + n);
	fill(stream + n, 50, 8);             /* garbage glued to the next... */
	for (size_t i = n; i < n + 50; i++)
		stream[i] |= 1;
	n += 50;
	stream[n++] = 0;                     /* ...ended by the sender's 0x00 */
	n += encode(payload, 20, PROTO_CMD_SIGN_CHALLENGE, 2, stream + n);
	stream[n++] = 0;                     /* idle delimiters are ignored */
	stream[n++] = 0;
	good = feed(stream, n, f, &bad, NULL);
	cr_assert_eq(good, 2);
	cr_assert_geq(bad, 2);
	cr_assert_eq(f->seq, 2);
	cr_assert_eq(f->len, 20);
	free(f);
}

Test(codec, names_and_status_map)
{
	cr_assert_str_eq(proto_cmd_name(PROTO_CMD_IDENTIFY), "IDENTIFY");
	cr_assert_str_eq(proto_cmd_name(0x7f), "?");
	cr_assert_eq(proto_status_err(PROTO_ST_OK), ST_OK);
	cr_assert_eq(proto_status_err(PROTO_ST_NO_TARGET), ST_E_NO_TARGET);
	cr_assert_eq(proto_status_err(PROTO_ST_FUSE_CONFLICT), ST_E_FUSE_CONFLICT);
	cr_assert_eq(proto_status_err(PROTO_ST_LOCKED), ST_E_LOCKED);
	cr_assert_eq(proto_status_err(PROTO_ST_BAD_VERSION), ST_E_VERSION);
	cr_assert_eq(proto_status_err(0xee), ST_E_DEVICE);
}

/* ---- driver against station-devsim ------------------------------------ */

TestSuite(devsim, .init = setup_dir, .fini = teardown_dir, .timeout = 60);

Test(devsim, identify)
{
	uint8_t md[SHA256_DIGEST_LENGTH];
	drv_info info;
	drv_dev *d;

	start_sim(&sim, "p", 1, NULL);
	d = open_dev(sim.port, 2000);
	cr_assert_str_eq(drv_driver_name(d), "serial");
	cr_assert_str_eq(drv_port(d), sim.port);
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	SHA256((const uint8_t *)"devsim:0", 8, md);
	cr_assert_arr_eq(info.uid, md, DRV_UID_LEN);
	cr_assert_eq(strlen(info.uid_hex), 32);
	cr_assert_str_eq(info.model, "ST-DEV-1");
	cr_assert_str_eq(info.fw_version, "devsim-1.0");
	cr_assert_eq(info.proto_version, 1);
	cr_assert_eq(info.lifecycle, DRV_LC_OPEN);
	cr_assert_eq(info.has_key, 0);
	cr_assert_eq(info.has_cert, 0);
	cr_assert_eq(info.fuse_banks, 4);
	drv_close(d);
	/* The serial: scheme and ?baud= work too; the port is the bare path. */
	{
		char uri[600];

		snprintf(uri, sizeof(uri), "serial:%s?baud=115200", sim.slave);
		d = open_dev(uri, 2000);
		cr_assert_str_eq(drv_port(d), sim.slave);
		cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
		drv_close(d);
	}
	fx_devsim_stop(&sim);
	cr_assert_eq(sim.exit_status, 0, "devsim should exit 0 on SIGTERM");
}

Test(devsim, open_errors)
{
	char path[700];
	drv_dev *d = NULL;

	snprintf(path, sizeof(path), "%s/nothing", tmpdir);
	cr_assert_eq(drv_open(path, NULL, &d), ST_E_NOTFOUND);
	cr_assert_not_null(strstr(drv_errmsg(d), path), "%s", drv_errmsg(d));
	drv_close(d);
	cr_assert_eq(drv_open("usb9:1234", NULL, &d), ST_E_CONFIG);
	cr_assert_not_null(strstr(drv_errmsg(d), "usb9"));
	drv_close(d);
	start_sim(&sim, "p", 1, NULL);
	snprintf(path, sizeof(path), "serial:%s?baud=12345", sim.port);
	cr_assert_eq(drv_open(path, NULL, &d), ST_E_CONFIG);
	cr_assert_not_null(strstr(drv_errmsg(d), "baud"), "%s", drv_errmsg(d));
	drv_close(d);
	/* One station per programmer. */
	{
		drv_dev *a = open_dev(sim.port, 2000);

		cr_assert_eq(drv_open(sim.port, NULL, &d), ST_E_IO);
		cr_assert_not_null(strstr(drv_errmsg(d), "in use"), "%s",
				   drv_errmsg(d));
		drv_close(d);
		drv_close(a);
	}
	cr_assert_eq(drv_identify(NULL, NULL), ST_E_INVAL);
	drv_close(NULL);
}

static EVP_PKEY *point_key(const uint8_t pub[DRV_P256_POINT_LEN])
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
						 "prime256v1", 0),
		OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY,
						  (void *)pub, DRV_P256_POINT_LEN),
		OSSL_PARAM_construct_end(),
	};
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *key = NULL;

	cr_assert_not_null(ctx);
	cr_assert_eq(EVP_PKEY_fromdata_init(ctx), 1);
	cr_assert_eq(EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params), 1);
	EVP_PKEY_CTX_free(ctx);
	return key;
}

static int verify(EVP_PKEY *key, const char *prefix, const uint8_t *chal,
		  size_t clen, const uint8_t *sig, size_t siglen)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok;

	cr_assert_eq(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
	EVP_DigestVerifyUpdate(md, prefix, strlen(prefix));
	EVP_DigestVerifyUpdate(md, chal, clen);
	ok = EVP_DigestVerifyFinal(md, sig, siglen);
	EVP_MD_CTX_free(md);
	return ok;
}

Test(devsim, keygen_and_proof_of_possession)
{
	uint8_t pub[DRV_P256_POINT_LEN], pub2[DRV_P256_POINT_LEN];
	uint8_t chal[32], sig[DRV_MAX_SIG];
	char hex[2 * DRV_P256_POINT_LEN + 1];
	size_t siglen = 0;
	drv_info info;
	EVP_PKEY *key;
	json_t *u;
	drv_dev *d;

	start_sim(&sim, "p", 1, NULL);
	d = open_dev(sim.port, 2000);
	cr_assert_eq(drv_get_pubkey(d, pub), ST_E_STATE, "no key yet");
	cr_assert_eq(drv_sign_challenge(d, chal, sizeof(chal), sig, sizeof(sig),
					 &siglen), ST_E_STATE);
	cr_assert_eq(drv_keygen(d, pub), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(pub[0], 0x04);
	cr_assert_eq(drv_get_pubkey(d, pub2), ST_OK, "%s", drv_errmsg(d));
	cr_assert_arr_eq(pub, pub2, sizeof(pub));
	cr_assert_eq(drv_identify(d, &info), ST_OK);
	cr_assert_eq(info.has_key, 1);
	/* The simulator's own record of the chip agrees. */
	u = dump_unit(0);
	st_hex(pub, sizeof(pub), hex);
	cr_assert_str_eq(jstr(u, "pubkey"), hex);
	json_decref(u);

	fill(chal, sizeof(chal), 42);
	cr_assert_eq(drv_sign_challenge(d, chal, sizeof(chal), sig, sizeof(sig),
					&siglen), ST_OK, "%s", drv_errmsg(d));
	key = point_key(pub);
	cr_assert_eq(verify(key, DRV_POP_PREFIX, chal, sizeof(chal), sig, siglen), 1,
		     "signature does not verify over STPOP1||challenge");
	cr_assert_neq(verify(key, "", chal, sizeof(chal), sig, siglen), 1,
		      "the prefix must be part of the signed message");
	EVP_PKEY_free(key);
	cr_assert_eq(drv_sign_challenge(d, chal, 8, sig, sizeof(sig), &siglen),
		     ST_E_INVAL);
	drv_close(d);
}

Test(devsim, certificate_slot)
{
	uint8_t cert[1500], back[DRV_MAX_CERT], big[DRV_MAX_CERT + 1] = { 0 };
	char *hex = malloc(2 * sizeof(cert) + 1);
	size_t len = 0;
	drv_info info;
	json_t *u;
	drv_dev *d;

	cr_assert_not_null(hex);
	start_sim(&sim, "p", 1, NULL);
	d = open_dev(sim.port, 2000);
	cr_assert_eq(drv_read_cert(d, back, sizeof(back), &len), ST_E_NOTFOUND);
	cr_assert_not_null(strstr(drv_errmsg(d), "READ_CERT"), "%s", drv_errmsg(d));
	fill(cert, sizeof(cert), 11);
	memset(cert + 100, 0, 300);
	cr_assert_eq(drv_write_cert(d, cert, sizeof(cert)), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(drv_read_cert(d, back, sizeof(back), &len), ST_OK, "%s",
		     drv_errmsg(d));
	cr_assert_eq(len, sizeof(cert));
	cr_assert_arr_eq(back, cert, len);
	cr_assert_eq(drv_read_cert(d, back, 10, &len), ST_E_INVAL);
	cr_assert_eq(drv_write_cert(d, big, sizeof(big)), ST_E_INVAL);
	cr_assert_eq(drv_identify(d, &info), ST_OK);
	cr_assert_eq(info.has_cert, 1);
	u = dump_unit(0);
	st_hex(cert, sizeof(cert), hex);
	cr_assert_str_eq(jstr(u, "cert"), hex);
	json_decref(u);
	free(hex);
	drv_close(d);
}

Test(devsim, fuses_are_otp)
{
	uint8_t a[DRV_FUSE_BANK_LEN] = { 0 }, b[DRV_FUSE_BANK_LEN], c[DRV_FUSE_BANK_LEN];
	uint8_t rb[DRV_FUSE_BANK_LEN], zero[DRV_FUSE_BANK_LEN] = { 0 };
	char hex[2 * DRV_FUSE_BANK_LEN + 1];
	json_t *u;
	drv_dev *d;

	start_sim(&sim, "p", 1, NULL);
	d = open_dev(sim.port, 2000);
	cr_assert_eq(drv_fuse_read(d, 2, rb), ST_OK, "%s", drv_errmsg(d));
	cr_assert_arr_eq(rb, zero, sizeof(rb));
	cr_assert_eq(drv_fuse_read(d, 4, rb), ST_E_INVAL, "only 4 banks");

	a[0] = 0x81;
	a[31] = 0x10;
	cr_assert_eq(drv_fuse_burn(d, 2, a, 1, rb), ST_OK, "%s", drv_errmsg(d));
	cr_assert_arr_eq(rb, a, sizeof(a));
	/* More bits: fine (0 -> 1). */
	memcpy(b, a, sizeof(b));
	b[5] = 0xff;
	cr_assert_eq(drv_fuse_burn(d, 2, b, 2, rb), ST_OK, "%s", drv_errmsg(d));
	cr_assert_arr_eq(rb, b, sizeof(b));
	/* Fewer bits: a 1 would have to become 0: conflict, nothing burned. */
	memcpy(c, b, sizeof(c));
	c[0] = 0x01;
	c[7] = 0x44;
	memset(rb, 0xee, sizeof(rb));
	cr_assert_eq(drv_fuse_burn(d, 2, c, 3, rb), ST_E_FUSE_CONFLICT);
	cr_assert_not_null(strstr(drv_errmsg(d), "FUSE_BURN"), "%s", drv_errmsg(d));
	cr_assert_arr_eq(rb, b, sizeof(b), "a conflict reports the bank as is");
	cr_assert_eq(drv_fuse_read(d, 2, rb), ST_OK);
	cr_assert_arr_eq(rb, b, sizeof(b));

	/* A repeat of request 2 is answered, not burned again. */
	u = dump_unit(0);
	cr_assert_eq(json_integer_value(json_object_get(u, "burn_count")), 2);
	json_decref(u);
	cr_assert_eq(drv_fuse_burn(d, 2, b, 2, rb), ST_OK, "%s", drv_errmsg(d));
	cr_assert_arr_eq(rb, b, sizeof(b));
	u = dump_unit(0);
	cr_assert_eq(json_integer_value(json_object_get(u, "burn_count")), 2);
	st_hex(b, sizeof(b), hex);
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(u, "fuses"), 2)),
			 hex);
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(u, "fuses"), 0)),
			 "0000000000000000000000000000000000000000000000000000000000000000");
	json_decref(u);
	/* Request 2 with other data is a host bug, refused. */
	b[9] = 1;
	cr_assert_eq(drv_fuse_burn(d, 2, b, 2, rb), ST_E_INVAL);
	b[9] = 0;
	drv_close(d);

	/* Fuses survive a power cycle of the programmer. */
	fx_devsim_stop(&sim);
	start_sim(&sim, "p", 1, NULL);
	d = open_dev(sim.port, 2000);
	cr_assert_eq(drv_fuse_read(d, 2, rb), ST_OK, "%s", drv_errmsg(d));
	cr_assert_arr_eq(rb, b, sizeof(b));
	cr_assert_eq(drv_fuse_burn(d, 2, b, 2, rb), ST_OK, "repeat after restart");
	cr_assert_eq(drv_fuse_burn(d, 2, c, 4, rb), ST_E_FUSE_CONFLICT);
	drv_close(d);
}

Test(devsim, lifecycle_forward_only)
{
	uint8_t pub[DRV_P256_POINT_LEN], cert[10] = { 0x30 };
	drv_info info;
	drv_dev *d;

	start_sim(&sim, "p", 1, NULL);
	d = open_dev(sim.port, 2000);
	cr_assert_eq(drv_set_lifecycle(d, DRV_LC_PROVISIONED), ST_OK, "%s",
		     drv_errmsg(d));
	cr_assert_eq(drv_set_lifecycle(d, DRV_LC_PROVISIONED), ST_OK, "same: ok");
	cr_assert_eq(drv_set_lifecycle(d, DRV_LC_LOCKED), ST_OK);
	cr_assert_eq(drv_set_lifecycle(d, DRV_LC_OPEN), ST_E_STATE);
	cr_assert_eq(drv_set_lifecycle(d, 7), ST_E_INVAL);
	cr_assert_eq(drv_keygen(d, pub), ST_E_LOCKED);
	cr_assert_not_null(strstr(drv_errmsg(d), "locked"), "%s", drv_errmsg(d));
	cr_assert_eq(drv_write_cert(d, cert, sizeof(cert)), ST_E_LOCKED);
	cr_assert_eq(drv_identify(d, &info), ST_OK);
	cr_assert_eq(info.lifecycle, DRV_LC_LOCKED);
	drv_close(d);
}

Test(devsim, release_walks_the_units)
{
	uint8_t md[SHA256_DIGEST_LENGTH];
	drv_info info;
	drv_dev *d;

	start_sim(&sim, "p", 2, "--seed lot7");
	d = open_dev(sim.port, 2000);
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	SHA256((const uint8_t *)"lot7:0", 6, md);
	cr_assert_arr_eq(info.uid, md, DRV_UID_LEN);
	cr_assert_eq(drv_release(d), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	SHA256((const uint8_t *)"lot7:1", 6, md);
	cr_assert_arr_eq(info.uid, md, DRV_UID_LEN);
	cr_assert_eq(drv_release(d), ST_OK);
	cr_assert_eq(drv_identify(d, &info), ST_E_NO_TARGET);
	cr_assert_not_null(strstr(drv_errmsg(d), "no target"), "%s", drv_errmsg(d));
	cr_assert_eq(drv_fuse_read(d, 0, md), ST_E_NO_TARGET);
	cr_assert_eq(drv_release(d), ST_E_NO_TARGET);
	drv_close(d);
}

/* --forget-done: a released unit leaves the state file, so a long run's
 * saves stay small; the units still come in order, across a restart. */
Test(devsim, forget_done_keeps_only_the_unit_in_the_programmer)
{
	uint8_t md[SHA256_DIGEST_LENGTH], pub[DRV_P256_POINT_LEN];
	char msg[32];
	long first_size = 0;
	drv_info info;
	json_t *root = NULL, *units;
	drv_dev *d;

	start_sim(&sim, "p", 40, "--forget-done --seed lot9");
	d = open_dev(sim.port, 2000);
	for (int i = 0; i < 40; i++) {
		FILE *f;
		long size;

		if (i == 20) {
			/* A power cycle, without the option: the file keeps it. */
			drv_close(d);
			fx_devsim_stop(&sim);
			cr_assert_eq(sim.exit_status, 0);
			start_sim(&sim, "p", 40, "--seed lot9");
			d = open_dev(sim.port, 2000);
		}
		cr_assert_eq(drv_identify(d, &info), ST_OK, "unit %d: %s", i,
			     drv_errmsg(d));
		SHA256((const uint8_t *)msg, (size_t)snprintf(msg, sizeof(msg),
		       "lot9:%d", i), md);
		cr_assert_arr_eq(info.uid, md, DRV_UID_LEN, "unit %d out of order", i);
		cr_assert_eq(drv_keygen(d, pub), ST_OK, "%s", drv_errmsg(d));
		cr_assert_eq(drv_release(d), ST_OK, "%s", drv_errmsg(d));
		f = fopen(sim.state_path, "r");
		cr_assert_not_null(f);
		fseek(f, 0, SEEK_END);
		size = ftell(f);
		fclose(f);
		if (!first_size)
			first_size = size;
		/* Same size whether 1 or 39 units have gone by. */
		cr_assert_leq(size, first_size + 8, "unit %d: state file %ld bytes, "
			      "was %ld after the first", i, size, first_size);
	}
	cr_assert_eq(drv_identify(d, &info), ST_E_NO_TARGET);
	drv_close(d);
	cr_assert_eq(fx_devsim_dump(sim.state_path, &root), 0);
	units = json_object_get(root, "units");
	cr_assert_eq(json_array_size(units), 0, "released units stay in the file");
	json_decref(root);
}

Test(devsim, mute_programmer_times_out_at_open)
{
	drv_opts o = { .timeout_ms = 200, .retries = 1 };
	int64_t t0 = st_now_ms();
	drv_dev *d = NULL;
	int rc;

	start_sim(&sim, "p", 1, "--fault mute");
	rc = drv_open(sim.port, &o, &d);
	cr_assert_eq(rc, ST_E_TIMEOUT, "got %s", st_strerror(rc));
	cr_assert_not_null(strstr(drv_errmsg(d), sim.port), "%s", drv_errmsg(d));
	cr_assert_not_null(strstr(drv_errmsg(d), "HELLO"), "%s", drv_errmsg(d));
	cr_assert_not_null(strstr(drv_errmsg(d), "200 ms"), "%s", drv_errmsg(d));
	cr_assert_lt(st_now_ms() - t0, 3000);
	cr_assert_eq(drv_identify(d, NULL), ST_E_STATE, "a failed open stays closed");
	drv_close(d);
}

Test(devsim, garbage_gives_proto_error)
{
	drv_opts o = { .timeout_ms = 1000 };
	drv_dev *d = NULL;
	int rc;

	start_sim(&sim, "p", 1, "--fault garbage --seed g1");
	rc = drv_open(sim.port, &o, &d);
	cr_assert_eq(rc, ST_E_PROTO, "got %s: %s", st_strerror(rc), drv_errmsg(d));
	cr_assert_not_null(strstr(drv_errmsg(d), "malformed frames from"), "%s",
			   drv_errmsg(d));
	cr_assert_not_null(strstr(drv_errmsg(d), sim.port), "%s", drv_errmsg(d));
	drv_close(d);
}

/* Every 2nd reply has a flipped bit: reads and burns are retried and
 * succeed; KEYGEN is not retried (it acted: the chip has a key now). */
Test(devsim, corrupted_replies_retry_what_is_safe)
{
	uint8_t pub[DRV_P256_POINT_LEN], v[DRV_FUSE_BANK_LEN] = { 3 }, rb[DRV_FUSE_BANK_LEN];
	drv_info info;
	json_t *u;
	drv_dev *d;

	start_sim(&sim, "p", 1, "--fault corrupt:2");
	d = open_dev(sim.port, 1000);                 /* reply 1 bad, 2 good */
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d)); /* 3, 4 */
	cr_assert_eq(drv_keygen(d, pub), ST_E_PROTO);  /* 5: bad, not retried */
	cr_assert_not_null(strstr(drv_errmsg(d), "KEYGEN"), "%s", drv_errmsg(d));
	cr_assert_eq(drv_fuse_burn(d, 1, v, 77, rb), ST_OK, "%s", drv_errmsg(d)); /* 6 */
	cr_assert_eq(drv_fuse_burn(d, 1, v, 78, rb), ST_OK, "%s", drv_errmsg(d)); /* 7, 8 */
	cr_assert_arr_eq(rb, v, sizeof(v));
	u = dump_unit(0);
	cr_assert_neq(json_object_get(u, "pubkey"), json_null(), "KEYGEN did act");
	cr_assert(json_is_string(json_object_get(u, "pubkey")));
	cr_assert_eq(json_integer_value(json_object_get(u, "burn_count")), 1);
	json_decref(u);
	drv_close(d);
}

Test(devsim, killed_simulator_is_an_error_not_a_hang)
{
	uint8_t bank[DRV_FUSE_BANK_LEN];
	drv_info info;
	int64_t t0;
	drv_dev *d;
	int rc;

	start_sim(&sim, "p", 1, NULL);
	d = open_dev(sim.port, 1000);
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	kill(sim.pid, SIGKILL);
	waitpid(sim.pid, NULL, 0);
	sim.pid = 0;
	t0 = st_now_ms();
	rc = drv_identify(d, &info);
	cr_assert_neq(rc, ST_OK);
	cr_assert(rc == ST_E_UNPLUGGED || rc == ST_E_TIMEOUT, "got %s: %s",
		  st_strerror(rc), drv_errmsg(d));
	cr_assert_lt(st_now_ms() - t0, 5000);
	cr_assert_neq(drv_errmsg(d)[0], '\0');
	rc = drv_fuse_read(d, 0, bank);
	cr_assert_neq(rc, ST_OK);
	drv_close(d);
}

Test(devsim, two_programmers_in_parallel)
{
	drv_info i1, i2;
	drv_dev *a, *b;

	start_sim(&sim, "a", 1, "--seed A");
	start_sim(&sim2, "b", 1, "--seed B");
	a = open_dev(sim.port, 2000);
	b = open_dev(sim2.port, 2000);
	cr_assert_eq(drv_identify(a, &i1), ST_OK);
	cr_assert_eq(drv_identify(b, &i2), ST_OK);
	cr_assert_neq(memcmp(i1.uid, i2.uid, DRV_UID_LEN), 0);
	drv_close(a);
	drv_close(b);
}

/* Talk to the simulator below the driver: raw frames over the serial
 * transport, to check the device side of §2.3 of docs/protocol.md. */
static int raw_exchange(serial_port *p, const uint8_t *wire, size_t n,
			proto_frame *rep)
{
	uint8_t buf[256];
	proto_rx rx;
	int64_t deadline = st_now_ms() + 2000;

	proto_rx_init(&rx);
	cr_assert_eq(serial_write(p, wire, n, 1000), ST_OK);
	while (st_now_ms() < deadline) {
		int got = serial_read(p, buf, sizeof(buf), 200);

		for (int i = 0; i < got; i++) {
			int why, r = proto_rx_byte(&rx, buf[i], rep, &why);

			if (r != 0)
				return r;
		}
	}
	return ST_E_TIMEOUT;
}

Test(devsim, device_side_rejections)
{
	uint8_t payload[8] = { 0 }, wire[PROTO_MAX_WIRE];
	proto_frame *rep = malloc(sizeof(*rep));
	proto_transport t;
	proto_client *c = malloc(sizeof(*c));
	serial_port p;
	char err[300];
	size_t n;

	cr_assert(rep && c);
	start_sim(&sim, "p", 1, NULL);
	cr_assert_eq(serial_open(&p, sim.port, err, sizeof(err)), ST_OK, "%s", err);
	/* A version-2 envelope: answered BAD_VERSION with the range 1..1. */
	n = raw_frame(2, 8, payload, 8, wire);
	cr_assert_eq(raw_exchange(&p, wire, n, rep), 1);
	cr_assert_eq(rep->seq, 7);
	cr_assert_eq(rep->type, PROTO_CMD_IDENTIFY | PROTO_REPLY);
	cr_assert_eq(rep->len, 3);
	cr_assert_eq(rep->payload[0], PROTO_ST_BAD_VERSION);
	cr_assert_eq(rep->payload[1], 1);
	cr_assert_eq(rep->payload[2], 1);
	/* A CRC-valid frame with a lying length: BAD_FRAME. */
	n = raw_frame(PROTO_VERSION, 9, payload, 8, wire);
	cr_assert_eq(raw_exchange(&p, wire, n, rep), 1);
	cr_assert_eq(rep->payload[0], PROTO_ST_BAD_FRAME);
	/* A corrupted frame: silence (the host's timeout handles it). */
	n = raw_frame(PROTO_VERSION, 8, payload, 8, wire);
	wire[3] ^= 0x10;
	cr_assert_eq(raw_exchange(&p, wire, n, rep), ST_E_TIMEOUT);
	/* Unknown commands and HELLO without a common version. */
	serial_transport(&p, &t);
	proto_client_init(c, &t, 1000, 0);
	cr_assert_eq(proto_call(c, 0x3c, NULL, 0), ST_E_PROTO);
	cr_assert_not_null(strstr(c->err, "unknown command"), "%s", c->err);
	payload[0] = 2;
	payload[1] = 3;
	cr_assert_eq(proto_call(c, PROTO_CMD_HELLO, payload, 6), ST_E_VERSION);
	cr_assert_eq(c->rep.len, 3);
	cr_assert_eq(proto_hello(c), ST_OK, "%s", c->err);
	cr_assert_str_eq(c->fw_version, "devsim-1.0");
	cr_assert_eq(c->caps, PROTO_CAPS_V1 | PROTO_CAP_CONDITIONS |
		     PROTO_CAP_IMAGES | PROTO_CAP_ATTEST);
	serial_close(&p);
	free(rep);
	free(c);
}

/* KEYGEN under a request id (link extension, docs/protocol.md §4): the
 * same id again returns the same key and makes none; a new id makes a new
 * key.  With the reply to the first KEYGEN lost on the line, the driver
 * asks again and still exactly one key is made. */
Test(devsim, keygen_request_id_makes_one_key)
{
	uint8_t a[DRV_P256_POINT_LEN], b[DRV_P256_POINT_LEN], c[DRV_P256_POINT_LEN];
	json_t *u;
	drv_dev *d;

	start_sim(&sim, "p", 1, NULL);
	d = open_dev(sim.port, 1000);
	cr_assert_eq(drv_keygen_req(d, 0x1234, a), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(drv_keygen_req(d, 0x1234, b), ST_OK, "%s", drv_errmsg(d));
	cr_assert_arr_eq(a, b, sizeof(a), "a repeated request id made another key");
	u = dump_unit(0);
	cr_assert_eq(json_integer_value(json_object_get(u, "keygen_count")), 1);
	cr_assert_eq(json_integer_value(json_object_get(u, "keygen_id")), 0x1234);
	json_decref(u);
	cr_assert_eq(drv_keygen_req(d, 0x1235, c), ST_OK, "%s", drv_errmsg(d));
	cr_assert_neq(memcmp(a, c, sizeof(a)), 0, "a new request id kept the old key");
	u = dump_unit(0);
	cr_assert_eq(json_integer_value(json_object_get(u, "keygen_count")), 2);
	json_decref(u);
	drv_close(d);
	fx_devsim_stop(&sim);

	start_sim(&sim2, "q", 1, "--fault lose:KEYGEN");
	d = open_dev(sim2.port, 300);
	cr_assert_eq(drv_keygen_req(d, 77, a), ST_OK, "%s", drv_errmsg(d));
	{
		json_t *root = NULL;
		char hex[2 * DRV_P256_POINT_LEN + 1];

		cr_assert_eq(fx_devsim_dump(sim2.state_path, &root), 0);
		u = json_array_get(json_object_get(root, "units"), 0);
		cr_assert_eq(json_integer_value(json_object_get(u, "keygen_count")), 1,
			     "the lost reply made the chip make a second key");
		st_hex(a, sizeof(a), hex);
		cr_assert_str_eq(jstr(u, "pubkey"), hex);
		json_decref(root);
	}
	drv_close(d);
}

/* The certificate in parts over a noisy line (5 % of the bytes both ways):
 * written and read back byte for byte, and the device's slot holds it. */
Test(devsim, certificate_in_parts_through_noise)
{
	uint8_t cert[620], back[DRV_MAX_CERT];
	char *hex = malloc(2 * sizeof(cert) + 1);
	drv_linkstat ls;
	size_t len = 0;
	json_t *u;
	drv_dev *d;

	cr_assert_not_null(hex);
	fill(cert, sizeof(cert), 9);
	start_sim(&sim, "p", 1, "--fault noise:5% --seed parts");
	d = open_dev(sim.port, 300);
	cr_assert_eq(drv_write_cert(d, cert, sizeof(cert)), ST_OK, "%s", drv_errmsg(d));
	cr_assert_eq(drv_read_cert(d, back, sizeof(back), &len), ST_OK, "%s",
		     drv_errmsg(d));
	cr_assert_eq(len, sizeof(cert));
	cr_assert_arr_eq(back, cert, sizeof(cert));
	drv_link_stats(d, &ls);
	cr_assert_gt(ls.retries, 0, "5%% noise without a re-send");
	cr_assert_geq(ls.commands, 2 * (sizeof(cert) + PROTO_CERT_PART - 1) /
		      PROTO_CERT_PART, "not sent in %d-byte parts", PROTO_CERT_PART);
	drv_close(d);
	u = dump_unit(0);
	st_hex(cert, sizeof(cert), hex);
	cr_assert_str_eq(jstr(u, "cert"), hex);
	json_decref(u);
	free(hex);
}

/* target.c — what the simulated programmer and its target chip do with each
 * command (docs/protocol.md).  Keys are made by OpenSSL (the "chip");
 * fuses follow OTP rules: a 4-byte word is programmed once, into two
 * redundant copies, and never changes afterwards. */
#include "devsim/sim.h"

#include <openssl/ec.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <zlib.h>
#include <string.h>
#include <time.h>

#include "base.h"

/* Start a reply with status st; returns a pointer to the payload after it. */
static uint8_t *reply(proto_frame *rep, uint8_t st)
{
	rep->payload[0] = st;
	rep->len = 1;
	return rep->payload + 1;
}

static void put(proto_frame *rep, const void *p, size_t n)
{
	memcpy(rep->payload + rep->len, p, n);
	rep->len = (uint16_t)(rep->len + n);
}

/* Persist a change (with --save-at-release: only once the unit leaves,
 * release set); a failed write is the programmer's internal error. */
static void commit_at(struct sim *s, proto_frame *rep, int release)
{
	if (sim_state_changed(s, release) < 0)
		reply(rep, PROTO_ST_INTERNAL);
}

static void commit(struct sim *s, proto_frame *rep)
{
	commit_at(s, rep, 0);
}

static void do_hello(struct sim *s, const proto_frame *req, proto_frame *rep)
{
	uint8_t v[7];
	size_t fw = strlen(SIM_FW_VERSION);

	if (req->len < 2) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	if (req->payload[0] > PROTO_VERSION || req->payload[1] < PROTO_VERSION) {
		uint8_t range[2] = { PROTO_VERSION, PROTO_VERSION };

		reply(rep, PROTO_ST_BAD_VERSION);
		put(rep, range, sizeof(range));
		return;
	}
	/* What the host understands of the link extension (§6.1): a v1 host
	 * sends 6 bytes, and gets no NAKs. */
	s->host_link = req->len >= 10 ? proto_get32(req->payload + 6) : 0;
	reply(rep, PROTO_ST_OK);
	v[0] = PROTO_VERSION;
	proto_put32(v + 1, PROTO_CAPS_V1 | PROTO_CAP_CONDITIONS | PROTO_CAP_IMAGES |
		    PROTO_CAP_ATTEST);
	proto_put16(v + 5, PROTO_MAX_PAYLOAD);
	put(rep, v, sizeof(v));
	v[0] = (uint8_t)fw;
	put(rep, v, 1);
	put(rep, SIM_FW_VERSION, fw);
	if (s->link_caps) {
		proto_put32(v, s->link_caps);
		put(rep, v, 4);
	}
}

static void do_identify(struct sim_unit *u, proto_frame *rep)
{
	uint8_t v[5] = { u->lifecycle, u->key != NULL, u->cert != NULL,
			 SIM_FUSE_BANKS, (uint8_t)strlen(u->model) };

	reply(rep, PROTO_ST_OK);
	put(rep, u->uid, DRV_UID_LEN);
	put(rep, v, sizeof(v));
	put(rep, u->model, v[4]);
}

/* Drop a staged certificate (a new key makes it a lie). */
static void stage_drop(struct sim_unit *u)
{
	free(u->stage);
	u->stage = NULL;
	u->stage_total = u->stage_have = 0;
}

/* KEYGEN, plain (v1: always a new key) or under a u32 request id (link
 * extension): a repeat of the id of the key now held returns that key and
 * makes none, so a host that lost the reply can ask again. */
static void do_keygen(struct sim *s, struct sim_unit *u, const proto_frame *req,
		      proto_frame *rep)
{
	int with_id = (s->link_caps & PROTO_LINK_REPEAT) && req->len == 4;
	uint32_t id = with_id ? proto_get32(req->payload) : 0;
	EVP_PKEY *key;

	if (u->lifecycle == DRV_LC_LOCKED) {
		reply(rep, PROTO_ST_LOCKED);
		return;
	}
	if (with_id && u->key && u->has_keygen_id && u->keygen_id == id) {
		sim_log(s, "keygen request %08x repeated: the same key, no new one", id);
		reply(rep, PROTO_ST_OK);
		put(rep, u->pub, DRV_P256_POINT_LEN);
		return;
	}
	if (s->keygen_ms)
		sim_sleep_ms((unsigned)s->keygen_ms);
	key = EVP_EC_gen("P-256");
	if (!key || sim_pubkey_point(key, u->pub) < 0) {
		EVP_PKEY_free(key);
		reply(rep, PROTO_ST_INTERNAL);
		return;
	}
	EVP_PKEY_free(u->key);
	u->key = key;
	u->keygen_count++;
	/* Remembered durably (commit) before the reply leaves. */
	u->has_keygen_id = with_id;
	u->keygen_id = id;
	/* A certificate for the old key would now be a lie: drop it. */
	free(u->cert);
	u->cert = NULL;
	u->cert_len = 0;
	stage_drop(u);
	reply(rep, PROTO_ST_OK);
	if (s->fault->on_keygen) {
		uint8_t told[DRV_P256_POINT_LEN];

		memcpy(told, u->pub, sizeof(told));
		s->fault->on_keygen(s, told);
		put(rep, told, DRV_P256_POINT_LEN);
	} else {
		put(rep, u->pub, DRV_P256_POINT_LEN);
	}
	commit(s, rep);
}

static void do_get_pubkey(struct sim_unit *u, proto_frame *rep)
{
	if (!u->key) {
		reply(rep, PROTO_ST_NO_KEY);
		return;
	}
	reply(rep, PROTO_ST_OK);
	put(rep, u->pub, DRV_P256_POINT_LEN);
}

static void do_write_cert(struct sim *s, struct sim_unit *u,
			  const proto_frame *req, proto_frame *rep)
{
	uint8_t *c;

	if (req->len == 0 || req->len > DRV_MAX_CERT) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	if (u->lifecycle == DRV_LC_LOCKED) {
		reply(rep, PROTO_ST_LOCKED);
		return;
	}
	c = malloc(req->len);
	if (!c) {
		reply(rep, PROTO_ST_INTERNAL);
		return;
	}
	memcpy(c, req->payload, req->len);
	free(u->cert);
	u->cert = c;
	u->cert_len = req->len;
	reply(rep, PROTO_ST_OK);
	commit(s, rep);
}

/* WRITE_CERT_PART: u16 total, u16 offset, bytes.  Parts arrive in order
 * (offset 0 starts over; an offset past what is staged is BAD_STATE); the
 * same part again is harmless, and the part that completes the staging
 * replaces the certificate slot (again: the same bytes again).  Reply:
 * u16 bytes staged. */
static void do_write_cert_part(struct sim *s, struct sim_unit *u,
			       const proto_frame *req, proto_frame *rep)
{
	size_t total, off, n;
	uint8_t have[2];

	if (req->len < 5) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	total = proto_get16(req->payload);
	off = proto_get16(req->payload + 2);
	n = req->len - 4u;
	if (total == 0 || total > DRV_MAX_CERT || off + n > total) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	if (u->lifecycle == DRV_LC_LOCKED) {
		reply(rep, PROTO_ST_LOCKED);
		return;
	}
	if (off == 0 && (!u->stage || u->stage_total != total)) {
		uint8_t *b = malloc(total);

		if (!b) {
			reply(rep, PROTO_ST_INTERNAL);
			return;
		}
		stage_drop(u);
		u->stage = b;
		u->stage_total = total;
	}
	if (off == 0)
		u->stage_have = 0;
	if (!u->stage || u->stage_total != total || off > u->stage_have) {
		reply(rep, PROTO_ST_BAD_STATE);
		return;
	}
	memcpy(u->stage + off, req->payload + 4, n);
	if (off + n > u->stage_have)
		u->stage_have = off + n;
	proto_put16(have, (uint16_t)u->stage_have);
	if (off + n < total) {
		reply(rep, PROTO_ST_OK);
		put(rep, have, 2);
		return;
	}
	if (u->stage_have != total) {
		reply(rep, PROTO_ST_BAD_STATE);
		return;
	}
	free(u->cert);
	u->cert = malloc(total);
	u->cert_len = u->cert ? total : 0;
	if (!u->cert) {
		reply(rep, PROTO_ST_INTERNAL);
		return;
	}
	memcpy(u->cert, u->stage, total);
	reply(rep, PROTO_ST_OK);
	put(rep, have, 2);
	commit(s, rep);
}

/* READ_CERT_PART: u16 offset, u16 max -> u16 total, up to max bytes. */
static void do_read_cert_part(struct sim_unit *u, const proto_frame *req,
			      proto_frame *rep)
{
	size_t off, max;
	uint8_t total[2];

	if (req->len != 4) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	off = proto_get16(req->payload);
	max = proto_get16(req->payload + 2);
	if (!u->cert) {
		reply(rep, PROTO_ST_NO_CERT);
		return;
	}
	if (max == 0 || off >= u->cert_len) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	if (max > u->cert_len - off)
		max = u->cert_len - off;
	if (max > PROTO_MAX_PAYLOAD - 3)
		max = PROTO_MAX_PAYLOAD - 3;
	proto_put16(total, (uint16_t)u->cert_len);
	reply(rep, PROTO_ST_OK);
	put(rep, total, 2);
	put(rep, u->cert + off, max);
}

static void do_read_cert(struct sim_unit *u, proto_frame *rep)
{
	if (!u->cert) {
		reply(rep, PROTO_ST_NO_CERT);
		return;
	}
	reply(rep, PROTO_ST_OK);
	put(rep, u->cert, u->cert_len);
}

static void do_sign(struct sim_unit *u, const proto_frame *req, proto_frame *rep)
{
	EVP_MD_CTX *md = NULL;
	uint8_t sig[DRV_MAX_SIG];
	size_t siglen = sizeof(sig);

	if (req->len < 16 || req->len > 64) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	if (!u->key) {
		reply(rep, PROTO_ST_NO_KEY);
		return;
	}
	md = EVP_MD_CTX_new();
	if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, u->key) != 1 ||
	    EVP_DigestSignUpdate(md, DRV_POP_PREFIX, strlen(DRV_POP_PREFIX)) != 1 ||
	    EVP_DigestSignUpdate(md, req->payload, req->len) != 1 ||
	    EVP_DigestSignFinal(md, sig, &siglen) != 1) {
		reply(rep, PROTO_ST_INTERNAL);
		goto out;
	}
	reply(rep, PROTO_ST_OK);
	put(rep, sig, siglen);
out:
	EVP_MD_CTX_free(md);
}

/* A transport key per unit, kept until INJECT_KEY consumes it, so a
 * repeated request returns the same key. */
static void do_transport_key(struct sim_unit *u, proto_frame *rep)
{
	uint8_t pub[DRV_P256_POINT_LEN];

	if (u->lifecycle == DRV_LC_LOCKED) {
		reply(rep, PROTO_ST_LOCKED);
		return;
	}
	if (!u->transport)
		u->transport = EVP_EC_gen("P-256");
	if (!u->transport || sim_pubkey_point(u->transport, pub) < 0) {
		reply(rep, PROTO_ST_INTERNAL);
		return;
	}
	reply(rep, PROTO_ST_OK);
	put(rep, pub, sizeof(pub));
}

/* What a target without a key generator does: ECDH(transport, HSM
 * ephemeral) gives the 32-byte AES-256 key-encryption key (the raw shared
 * x coordinate, as CKM_ECDH1_DERIVE with CKD_NULL gives the HSM), AES key
 * unwrap with padding (RFC 5649) gives the PKCS#8 device key, which must
 * be P-256.  The transport key is used once and dropped, pass or fail. */
static void do_inject(struct sim *s, struct sim_unit *u, const proto_frame *req,
		      proto_frame *rep)
{
	uint8_t kek[32], plain[DRV_MAX_WRAPPED + 16];
	size_t keklen = sizeof(kek);
	int plen = 0, flen = 0;
	EVP_PKEY *eph = NULL, *key = NULL;
	EVP_PKEY_CTX *dc = NULL;
	EVP_CIPHER_CTX *cc = NULL;
	const uint8_t *p;
	uint8_t pub[DRV_P256_POINT_LEN];

	if (req->len <= DRV_P256_POINT_LEN || req->len > DRV_P256_POINT_LEN + DRV_MAX_WRAPPED) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	if (u->lifecycle == DRV_LC_LOCKED) {
		reply(rep, PROTO_ST_LOCKED);
		return;
	}
	if (!u->transport) {
		reply(rep, PROTO_ST_BAD_STATE);
		return;
	}
	eph = sim_point_pubkey(req->payload);
	dc = eph ? EVP_PKEY_CTX_new(u->transport, NULL) : NULL;
	if (!dc || EVP_PKEY_derive_init(dc) != 1 || EVP_PKEY_derive_set_peer(dc, eph) != 1 ||
	    EVP_PKEY_derive(dc, kek, &keklen) != 1 || keklen != sizeof(kek)) {
		reply(rep, PROTO_ST_BAD_ARG);
		goto out;
	}
	cc = EVP_CIPHER_CTX_new();
	if (!cc || EVP_DecryptInit_ex(cc, EVP_aes_256_wrap_pad(), NULL, kek, NULL) != 1 ||
	    EVP_DecryptUpdate(cc, plain, &plen, req->payload + DRV_P256_POINT_LEN,
			      req->len - DRV_P256_POINT_LEN) != 1 ||
	    EVP_DecryptFinal_ex(cc, plain + plen, &flen) != 1) {
		reply(rep, PROTO_ST_BAD_ARG);   /* wrong key or tampered blob */
		goto out;
	}
	p = plain;
	key = d2i_AutoPrivateKey(NULL, &p, plen + flen);
	if (!key || !EVP_PKEY_is_a(key, "EC") || EVP_PKEY_get_bits(key) != 256 ||
	    sim_pubkey_point(key, pub) < 0) {
		reply(rep, PROTO_ST_BAD_ARG);
		goto out;
	}
	EVP_PKEY_free(u->key);
	u->key = key;
	key = NULL;
	u->has_keygen_id = 0;
	stage_drop(u);
	memcpy(u->pub, pub, sizeof(pub));
	free(u->cert);
	u->cert = NULL;
	u->cert_len = 0;
	reply(rep, PROTO_ST_OK);
	put(rep, pub, sizeof(pub));
	commit(s, rep);
out:
	EVP_PKEY_free(u->transport);
	u->transport = NULL;
	OPENSSL_cleanse(kek, sizeof(kek));
	OPENSSL_cleanse(plain, sizeof(plain));
	EVP_CIPHER_CTX_free(cc);
	EVP_PKEY_CTX_free(dc);
	EVP_PKEY_free(eph);
	EVP_PKEY_free(key);
}

/* Bit w set: word w's two copies disagree (an interrupted programming). */
static uint8_t faulty_words(const struct sim_unit *u, unsigned bank)
{
	uint8_t mask = 0;

	for (unsigned w = 0; w < SIM_FUSE_WORDS; w++)
		if (memcmp(u->fuses[bank] + w * SIM_FUSE_WORD,
			   u->fuses_red[bank] + w * SIM_FUSE_WORD, SIM_FUSE_WORD))
			mask |= (uint8_t)(1u << w);
	return mask;
}

static int word_blank(const struct sim_unit *u, unsigned bank, unsigned w)
{
	static const uint8_t zero[SIM_FUSE_WORD];

	return !memcmp(u->fuses[bank] + w * SIM_FUSE_WORD, zero, SIM_FUSE_WORD) &&
	       !memcmp(u->fuses_red[bank] + w * SIM_FUSE_WORD, zero, SIM_FUSE_WORD);
}

static void do_fuse_read(struct sim_unit *u, const proto_frame *req,
			 proto_frame *rep)
{
	uint8_t faulty;

	if (req->len != 1 || req->payload[0] >= SIM_FUSE_BANKS) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	faulty = faulty_words(u, req->payload[0]);
	reply(rep, PROTO_ST_OK);
	put(rep, u->fuses[req->payload[0]], DRV_FUSE_BANK_LEN);
	put(rep, &faulty, 1);
}

/* Program the words of bank that differ from value, one at a time (the
 * fault may slow a word, drop bits of it, or cut the power after its first
 * copy).  Returns 0, or -1 when the power was cut. */
static int program_words(struct sim *s, struct sim_unit *u, unsigned bank,
			 const uint8_t *value)
{
	for (unsigned w = 0; w < SIM_FUSE_WORDS; w++) {
		uint8_t *p = u->fuses[bank] + w * SIM_FUSE_WORD;
		uint8_t *r = u->fuses_red[bank] + w * SIM_FUSE_WORD;
		uint8_t val[SIM_FUSE_WORD];

		memcpy(val, value + w * SIM_FUSE_WORD, SIM_FUSE_WORD);
		if (!memcmp(p, val, SIM_FUSE_WORD) && !memcmp(r, val, SIM_FUSE_WORD))
			continue;
		if (s->fault->on_burn_word && s->fault->on_burn_word(s, bank, w, val)) {
			memcpy(p, val, SIM_FUSE_WORD);
			sim_log(s, "brown-out: bank %u word %u half programmed", bank, w);
			return -1;
		}
		if (s->fuse_word_us)
			sim_sleep_us(s->fuse_word_us);
		memcpy(p, val, SIM_FUSE_WORD);
		memcpy(r, val, SIM_FUSE_WORD);
	}
	return 0;
}

/* OTP burn, word by word: every word of value that differs from the bank
 * must still be blank (in both copies); otherwise nothing is burned.  A
 * repeat of the last request_id with the same data is answered from the
 * current bank without burning, so a host that lost the reply can ask again. */
static void do_fuse_burn(struct sim *s, struct sim_unit *u,
			 const proto_frame *req, proto_frame *rep)
{
	const uint8_t *value = req->payload + 5;
	uint32_t id;
	uint8_t bank, *cur;
	int change = 0;

	if (req->len != 5 + DRV_FUSE_BANK_LEN || req->payload[4] >= SIM_FUSE_BANKS) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	id = proto_get32(req->payload);
	bank = req->payload[4];
	cur = u->fuses[bank];
	if (u->has_last && u->last_id == id) {
		if (u->last_bank != bank ||
		    memcmp(u->last_value, value, DRV_FUSE_BANK_LEN) != 0) {
			reply(rep, PROTO_ST_REQ_REUSED);
			return;
		}
		sim_log(s, "fuse burn %u repeated: not burning again", id);
		reply(rep, PROTO_ST_OK);
		put(rep, cur, DRV_FUSE_BANK_LEN);
		return;
	}
	for (unsigned w = 0; w < SIM_FUSE_WORDS; w++) {
		unsigned off = w * SIM_FUSE_WORD;

		if (!memcmp(cur + off, value + off, SIM_FUSE_WORD) &&
		    !(faulty_words(u, bank) & (1u << w)))
			continue;
		if (!word_blank(u, bank, w)) {
			reply(rep, PROTO_ST_FUSE_CONFLICT);
			put(rep, cur, DRV_FUSE_BANK_LEN);
			return;
		}
		change = 1;
	}
	if (change) {
		u->burn_count++;
		if (program_words(s, u, bank, value) < 0) {
			/* Power cut mid-burn: what was programmed stays. */
			sim_state_save(s);
			s->dead = 1;
			return;
		}
	}
	u->has_last = 1;
	u->last_id = id;
	u->last_bank = bank;
	memcpy(u->last_value, value, DRV_FUSE_BANK_LEN);
	reply(rep, PROTO_ST_OK);
	put(rep, cur, DRV_FUSE_BANK_LEN);
	commit(s, rep);
}

/* Programming conditions as measured (set with --vpp / --temp). */
static void do_conditions(struct sim *s, proto_frame *rep)
{
	uint8_t v[4];

	proto_put16(v, (uint16_t)s->vpp_mv);
	proto_put16(v + 2, (uint16_t)(int16_t)s->temp_dc);
	reply(rep, PROTO_ST_OK);
	put(rep, v, sizeof(v));
}

static void do_set_lifecycle(struct sim *s, struct sim_unit *u,
			     const proto_frame *req, proto_frame *rep)
{
	uint8_t want;

	if (req->len != 1 || req->payload[0] > DRV_LC_LOCKED) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	want = req->payload[0];
	if (want < u->lifecycle) {
		reply(rep, PROTO_ST_BAD_STATE);
		put(rep, &u->lifecycle, 1);
		return;
	}
	if (want == u->lifecycle) {
		reply(rep, PROTO_ST_OK);
		put(rep, &u->lifecycle, 1);
		return;
	}
	if (s->lifecycle_ms) {
		/* The lifecycle is a fuse too: slow with slowburn. */
		struct timespec ts = { .tv_sec = (time_t)(s->lifecycle_ms / 1000),
				       .tv_nsec = (long)(s->lifecycle_ms % 1000) * 1000000L };

		while (nanosleep(&ts, &ts) < 0)
			;
	}
	u->lifecycle = want;
	reply(rep, PROTO_ST_OK);
	put(rep, &u->lifecycle, 1);
	commit(s, rep);
}

/* RELEASE naming a unit (link extension): release it if it is the one in
 * the programmer; if it is not (released already: this is a repeat whose
 * first reply was lost) do nothing.  Reply: u8 1 released now, 0 not. */
static void do_release_uid(struct sim *s, struct sim_unit *u,
			   const proto_frame *req, proto_frame *rep)
{
	uint8_t done = 0;

	if (!u || memcmp(u->uid, req->payload, DRV_UID_LEN)) {
		sim_log(s, "release of a unit no longer here: a repeat, nothing done");
		reply(rep, PROTO_ST_OK);
		put(rep, &done, 1);
		return;
	}
	sim_state_release(s);
	done = 1;
	reply(rep, PROTO_ST_OK);
	put(rep, &done, 1);
	commit_at(s, rep, 1);
}

/* ---- Firmware images and attestation (docs/firmware.md) ---- */

static uint32_t slot_size(const struct sim *s)
{
	return s->slot_size ? s->slot_size : SIM_SLOT_SIZE;
}

/* SHA-256 of what the slot holds, computed by the "chip" itself. */
static void image_digest(const struct sim_image *im, uint8_t md[DRV_SHA256_LEN])
{
	unsigned int n = 0;

	EVP_Digest(im->data ? im->data : (const uint8_t *)"", im->stored, md, &n,
		   EVP_sha256(), NULL);
}

/* IMAGE_INFO: u8 slot -> u32 capacity, u32 total, u32 stored, 32 id,
 * 32 SHA-256 of the stored bytes. */
static void do_image_info(struct sim *s, struct sim_unit *u, const proto_frame *req,
			  proto_frame *rep)
{
	struct sim_image *im;
	uint8_t v[12], md[DRV_SHA256_LEN];

	if (req->len != 1 || req->payload[0] >= SIM_IMAGE_SLOTS) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	im = &u->images[req->payload[0]];
	image_digest(im, md);
	proto_put32(v, slot_size(s));
	proto_put32(v + 4, im->total);
	proto_put32(v + 8, im->stored);
	reply(rep, PROTO_ST_OK);
	put(rep, v, sizeof(v));
	put(rep, im->id, DRV_SHA256_LEN);
	put(rep, md, DRV_SHA256_LEN);
}

/* IMAGE_BEGIN: u8 slot, u32 total, 32 id -> u32 stored.  The same total
 * and id again keep what is stored (a repeat, or a write resumed after a
 * power cut); anything else empties the slot first (total 0: just that). */
static void do_image_begin(struct sim *s, struct sim_unit *u, const proto_frame *req,
			   proto_frame *rep)
{
	struct sim_image *im;
	uint32_t total;
	uint8_t v[4];

	if (req->len != 5 + DRV_SHA256_LEN || req->payload[0] >= SIM_IMAGE_SLOTS) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	if (u->lifecycle == DRV_LC_LOCKED) {
		reply(rep, PROTO_ST_LOCKED);
		return;
	}
	im = &u->images[req->payload[0]];
	total = proto_get32(req->payload + 1);
	if (total > slot_size(s)) {
		reply(rep, PROTO_ST_TOO_LARGE);
		return;
	}
	if (!total || im->total != total ||
	    memcmp(im->id, req->payload + 5, DRV_SHA256_LEN)) {
		uint8_t *d = total ? calloc(1, total) : NULL;

		if (total && !d) {
			reply(rep, PROTO_ST_INTERNAL);
			return;
		}
		free(im->data);
		im->data = d;
		im->total = total;
		im->stored = 0;
		memcpy(im->id, req->payload + 5, DRV_SHA256_LEN);
		if (!total)
			memset(im->id, 0, DRV_SHA256_LEN);
		sim_log(s, "image slot %u: begin %u bytes", req->payload[0], total);
	}
	proto_put32(v, im->stored);
	reply(rep, PROTO_ST_OK);
	put(rep, v, sizeof(v));
	commit(s, rep);
}

/* IMAGE_WRITE: u8 slot, u32 offset, u32 crc32, bytes -> u32 stored.  The
 * chunk goes at offset (at most what is stored: no gaps), stored durably
 * before the reply; the same chunk again is harmless. */
static void do_image_write(struct sim *s, struct sim_unit *u, const proto_frame *req,
			   proto_frame *rep)
{
	struct sim_image *im;
	uint32_t off, n;
	uint8_t v[4];

	if (req->len < 10 || req->payload[0] >= SIM_IMAGE_SLOTS) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	if (u->lifecycle == DRV_LC_LOCKED) {
		reply(rep, PROTO_ST_LOCKED);
		return;
	}
	im = &u->images[req->payload[0]];
	off = proto_get32(req->payload + 1);
	n = req->len - 9u;
	if (crc32(0L, req->payload + 9, n) != proto_get32(req->payload + 5) ||
	    !im->total || off > im->total || n > im->total - off) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	if (off > im->stored) {
		reply(rep, PROTO_ST_BAD_STATE);
		return;
	}
	memcpy(im->data + off, req->payload + 9, n);
	if (off + n > im->stored)
		im->stored = off + n;
	if (s->fault->on_image_chunk)
		s->fault->on_image_chunk(s, im, off, n);
	proto_put32(v, im->stored);
	reply(rep, PROTO_ST_OK);
	put(rep, v, sizeof(v));
	commit(s, rep);
}

/* The statement the target signs (docs/firmware.md): canonical JSON
 * (sorted keys, compact) over the nonce, its uid, the SHA-256 it measures
 * of each complete image and its lifecycle.  malloc'd, or NULL. */
static char *statement(const struct sim_unit *u, const uint8_t *nonce, size_t nlen)
{
	json_t *o = json_object(), *imgs = json_array();
	char hex[2 * 64 + 1], *text = NULL;

	if (!o || !imgs)
		goto out;
	for (unsigned i = 0; i < SIM_IMAGE_SLOTS; i++) {
		const struct sim_image *im = &u->images[i];
		uint8_t md[DRV_SHA256_LEN];

		if (!im->total || im->stored != im->total)
			continue;
		image_digest(im, md);
		st_hex(md, sizeof(md), hex);
		json_array_append_new(imgs, json_pack("{s:s,s:I,s:I}", "sha256", hex,
						      "size", (json_int_t)im->total,
						      "slot", (json_int_t)i));
	}
	json_object_set_new(o, "images", imgs);
	imgs = NULL;
	json_object_set_new(o, "lifecycle", json_integer(u->lifecycle));
	st_hex(nonce, nlen, hex);
	json_object_set_new(o, "nonce", json_string(hex));
	json_object_set_new(o, "type", json_string("station-attestation/1"));
	st_hex(u->uid, DRV_UID_LEN, hex);
	json_object_set_new(o, "uid", json_string(hex));
	text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
out:
	json_decref(imgs);
	json_decref(o);
	return text;
}

/* ATTEST: nonce (16..64) -> u16 n, the statement's n bytes, the DER
 * signature over exactly those bytes (ECDSA P-256, SHA-256) by the
 * identity key. */
static void do_attest(struct sim *s, struct sim_unit *u, const proto_frame *req,
		      proto_frame *rep)
{
	uint8_t nonce[64], sig[DRV_MAX_SIG], v[2];
	size_t nlen = req->len, siglen = sizeof(sig), tlen;
	EVP_PKEY *other = NULL;
	EVP_MD_CTX *md = NULL;
	char *text = NULL;

	if (nlen < 16 || nlen > 64) {
		reply(rep, PROTO_ST_BAD_ARG);
		return;
	}
	if (!u->key) {
		reply(rep, PROTO_ST_NO_KEY);
		return;
	}
	memcpy(nonce, req->payload, nlen);
	if (s->fault->on_attest)
		s->fault->on_attest(s, u, nonce, &nlen, &other);
	memcpy(u->last_nonce, req->payload, req->len);
	u->last_nonce_len = req->len;
	text = statement(u, nonce, nlen);
	tlen = text ? strlen(text) : 0;
	md = EVP_MD_CTX_new();
	if (!text || tlen > DRV_MAX_STATEMENT || !md ||
	    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, other ? other : u->key) != 1 ||
	    EVP_DigestSign(md, sig, &siglen, (const uint8_t *)text, tlen) != 1) {
		reply(rep, PROTO_ST_INTERNAL);
		goto out;
	}
	proto_put16(v, (uint16_t)tlen);
	reply(rep, PROTO_ST_OK);
	put(rep, v, sizeof(v));
	put(rep, text, tlen);
	put(rep, sig, siglen);
out:
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(other);
	free(text);
}

void sim_handle(struct sim *s, const proto_frame *req, proto_frame *rep)
{
	struct sim_unit *u = s->current < s->nunits ? &s->units[s->current] : NULL;

	rep->version = PROTO_VERSION;
	rep->type = req->type | PROTO_REPLY;
	rep->seq = req->seq;
	if (req->type == PROTO_CMD_HELLO) {
		do_hello(s, req, rep);
		return;
	}
	if (req->type == PROTO_CMD_CONDITIONS) {
		do_conditions(s, rep);
		return;
	}
	if ((req->type < PROTO_CMD_IDENTIFY || req->type > PROTO_CMD_RELEASE) &&
	    req->type != PROTO_CMD_GET_TRANSPORT_KEY && req->type != PROTO_CMD_INJECT_KEY &&
	    (req->type < PROTO_CMD_IMAGE_INFO || req->type > PROTO_CMD_ATTEST) &&
	    !(s->link_caps & PROTO_LINK_PARTS &&
	      (req->type == PROTO_CMD_WRITE_CERT_PART ||
	       req->type == PROTO_CMD_READ_CERT_PART))) {
		reply(rep, PROTO_ST_UNKNOWN_CMD);
		return;
	}
	if (req->type == PROTO_CMD_RELEASE && s->link_caps & PROTO_LINK_REPEAT &&
	    req->len == DRV_UID_LEN) {
		do_release_uid(s, u, req, rep);
		return;
	}
	if (!u) {
		reply(rep, PROTO_ST_NO_TARGET);
		return;
	}
	switch (req->type) {
	case PROTO_CMD_IDENTIFY:
		do_identify(u, rep);
		break;
	case PROTO_CMD_KEYGEN:
		do_keygen(s, u, req, rep);
		break;
	case PROTO_CMD_GET_PUBKEY:
		do_get_pubkey(u, rep);
		break;
	case PROTO_CMD_WRITE_CERT:
		do_write_cert(s, u, req, rep);
		break;
	case PROTO_CMD_READ_CERT:
		do_read_cert(u, rep);
		break;
	case PROTO_CMD_WRITE_CERT_PART:
		do_write_cert_part(s, u, req, rep);
		break;
	case PROTO_CMD_READ_CERT_PART:
		do_read_cert_part(u, req, rep);
		break;
	case PROTO_CMD_SIGN_CHALLENGE:
		do_sign(u, req, rep);
		break;
	case PROTO_CMD_FUSE_READ:
		do_fuse_read(u, req, rep);
		break;
	case PROTO_CMD_FUSE_BURN:
		do_fuse_burn(s, u, req, rep);
		break;
	case PROTO_CMD_SET_LIFECYCLE:
		do_set_lifecycle(s, u, req, rep);
		break;
	case PROTO_CMD_GET_TRANSPORT_KEY:
		do_transport_key(u, rep);
		break;
	case PROTO_CMD_INJECT_KEY:
		do_inject(s, u, req, rep);
		break;
	case PROTO_CMD_IMAGE_INFO:
		do_image_info(s, u, req, rep);
		break;
	case PROTO_CMD_IMAGE_BEGIN:
		do_image_begin(s, u, req, rep);
		break;
	case PROTO_CMD_IMAGE_WRITE:
		do_image_write(s, u, req, rep);
		break;
	case PROTO_CMD_ATTEST:
		do_attest(s, u, req, rep);
		break;
	case PROTO_CMD_RELEASE:
		sim_state_release(s);
		reply(rep, PROTO_ST_OK);
		commit_at(s, rep, 1);
		break;
	}
}

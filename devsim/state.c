/* state.c — the simulator's persistent state: units, keys, certificates and
 * fuses as JSON, written atomically after every change so fuses survive a
 * restart exactly like OTP silicon does.  With --forget-done only the unit
 * in the programmer is kept (and a counter for the units to come). */
#include "devsim/sim.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"

#define STATE_VERSION 1

static void unit_free(struct sim_unit *u)
{
	EVP_PKEY_free(u->key);
	EVP_PKEY_free(u->transport);
	free(u->cert);
	free(u->stage);
	for (int i = 0; i < SIM_IMAGE_SLOTS; i++)
		free(u->images[i].data);
	memset(u, 0, sizeof(*u));
}

void sim_state_free(struct sim *s)
{
	for (size_t i = 0; i < s->nunits; i++)
		unit_free(&s->units[i]);
	free(s->units);
	s->units = NULL;
	s->nunits = 0;
	free(s->seed);
	s->seed = NULL;
}

/* Unit i of a fresh stack: uid = first bytes of SHA-256("<seed>:<i>"). */
static void make_unit(struct sim_unit *u, const char *seed, size_t i,
		      const char *model)
{
	uint8_t md[SHA256_DIGEST_LENGTH];
	char msg[300];
	int len = snprintf(msg, sizeof(msg), "%s:%zu", seed, i);

	SHA256((const uint8_t *)msg, (size_t)len, md);
	memcpy(u->uid, md, DRV_UID_LEN);
	snprintf(u->model, sizeof(u->model), "%s", model);
}

void sim_state_release(struct sim *s)
{
	if (!s->forget_done) {
		s->current++;
		return;
	}
	/* Off the programmer, off the line: nothing of it is kept. */
	unit_free(&s->units[0]);
	if (s->next < s->total)
		make_unit(&s->units[0], s->seed, s->next++, s->model);
	else
		s->nunits = 0;
	s->current = 0;
}

static json_t *hex_json(const uint8_t *b, size_t n)
{
	char *h = malloc(2 * n + 1);
	json_t *j;

	if (!h)
		return NULL;
	st_hex(b, n, h);
	j = json_string(h);
	free(h);
	return j;
}

/* The private key as PEM text (a simulated chip may keep it in a file). */
static json_t *key_json(EVP_PKEY *key)
{
	BIO *bio = NULL;
	json_t *j = NULL;
	char *pem;
	long n;

	if (!key)
		return json_null();
	bio = BIO_new(BIO_s_secmem());
	if (!bio || !PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL))
		goto out;
	n = BIO_get_mem_data(bio, &pem);
	j = json_stringn(pem, (size_t)n);
out:
	BIO_free(bio);
	return j;
}

static json_t *unit_json(const struct sim_unit *u)
{
	json_t *o = json_object(), *fuses = json_array(), *red = json_array();

	if (!o || !fuses || !red)
		goto fail;
	for (int b = 0; b < SIM_FUSE_BANKS; b++) {
		json_array_append_new(fuses, hex_json(u->fuses[b], DRV_FUSE_BANK_LEN));
		json_array_append_new(red, hex_json(u->fuses_red[b], DRV_FUSE_BANK_LEN));
	}
	json_object_set_new(o, "uid", hex_json(u->uid, DRV_UID_LEN));
	json_object_set_new(o, "model", json_string(u->model));
	json_object_set_new(o, "lifecycle", json_integer(u->lifecycle));
	json_object_set_new(o, "privkey_pem", key_json(u->key));
	json_object_set_new(o, "pubkey", u->key ?
			    hex_json(u->pub, DRV_P256_POINT_LEN) : json_null());
	json_object_set_new(o, "cert", u->cert ?
			    hex_json(u->cert, u->cert_len) : json_null());
	json_object_set_new(o, "fuses", fuses);
	json_object_set_new(o, "fuses_redundant", red);
	json_object_set_new(o, "burn_count", json_integer(u->burn_count));
	json_object_set_new(o, "keygen_count", json_integer(u->keygen_count));
	json_object_set_new(o, "keygen_id", u->has_keygen_id ?
			    json_integer((json_int_t)u->keygen_id) : json_null());
	if (u->has_last)
		json_object_set_new(o, "last_burn", json_pack("{s:I,s:i,s:o}",
				    "id", (json_int_t)u->last_id, "bank", u->last_bank,
				    "value", hex_json(u->last_value, DRV_FUSE_BANK_LEN)));
	else
		json_object_set_new(o, "last_burn", json_null());
	{
		/* flash: each slot's declared image and the bytes stored so far */
		json_t *imgs = json_array();

		for (int i = 0; imgs && i < SIM_IMAGE_SLOTS; i++) {
			const struct sim_image *im = &u->images[i];

			json_array_append_new(imgs, !im->total ? json_null() :
				json_pack("{s:I,s:o,s:I,s:o}", "total", (json_int_t)im->total,
					  "sha256", hex_json(im->id, DRV_SHA256_LEN),
					  "stored", (json_int_t)im->stored,
					  "data", hex_json(im->data, im->stored)));
		}
		json_object_set_new(o, "images", imgs);
	}
	return o;
fail:
	json_decref(o);
	json_decref(fuses);
	json_decref(red);
	return NULL;
}

static json_t *state_json(const struct sim *s)
{
	json_t *root = json_object(), *units = json_array();

	if (!root || !units) {
		json_decref(root);
		json_decref(units);
		return NULL;
	}
	for (size_t i = 0; i < s->nunits; i++)
		json_array_append_new(units, unit_json(&s->units[i]));
	json_object_set_new(root, "version", json_integer(STATE_VERSION));
	json_object_set_new(root, "current", json_integer((json_int_t)s->current));
	json_object_set_new(root, "units", units);
	if (s->forget_done)
		json_object_set_new(root, "forget_done", json_pack("{s:s,s:s,s:I,s:I}",
				    "seed", s->seed, "model", s->model,
				    "next", (json_int_t)s->next,
				    "total", (json_int_t)s->total));
	return root;
}

int sim_pubkey_point(EVP_PKEY *key, uint8_t pub[DRV_P256_POINT_LEN])
{
	size_t len = 0;

	if (!EVP_PKEY_get_octet_string_param(key, "encoded-pub-key", pub,
					     DRV_P256_POINT_LEN, &len) ||
	    len != DRV_P256_POINT_LEN)
		return -1;
	return 0;
}

EVP_PKEY *sim_point_pubkey(const uint8_t pub[DRV_P256_POINT_LEN])
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_utf8_string("group", "prime256v1", 0),
		OSSL_PARAM_octet_string("pub", (void *)pub, DRV_P256_POINT_LEN),
		OSSL_PARAM_END,
	};
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *key = NULL;

	if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
		key = NULL;
	EVP_PKEY_CTX_free(ctx);
	return key;
}

/* Parse an exact-length hex string member. */
static int get_hex(json_t *o, const char *name, uint8_t *out, size_t n)
{
	const char *h = json_string_value(json_object_get(o, name));

	return h && strlen(h) == 2 * n && st_unhex(h, out, n) == ST_OK ? 0 : -1;
}

static int unit_from_json(struct sim_unit *u, json_t *o)
{
	json_t *fuses = json_object_get(o, "fuses"), *j;
	json_t *red = json_object_get(o, "fuses_redundant");
	const char *str;

	if (!json_is_object(o) || get_hex(o, "uid", u->uid, DRV_UID_LEN) < 0)
		return -1;
	str = json_string_value(json_object_get(o, "model"));
	snprintf(u->model, sizeof(u->model), "%s", str ? str : "ST-DEV-1");
	u->lifecycle = (uint8_t)json_integer_value(json_object_get(o, "lifecycle"));
	if (u->lifecycle > DRV_LC_LOCKED)
		return -1;
	str = json_string_value(json_object_get(o, "privkey_pem"));
	if (str) {
		BIO *bio = BIO_new_mem_buf(str, -1);

		u->key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
		BIO_free(bio);
		if (!u->key || sim_pubkey_point(u->key, u->pub) < 0)
			return -1;
	}
	str = json_string_value(json_object_get(o, "cert"));
	if (str) {
		size_t n = strlen(str) / 2;

		if (n == 0 || n > DRV_MAX_CERT || !(u->cert = malloc(n)) ||
		    st_unhex(str, u->cert, n) != ST_OK)
			return -1;
		u->cert_len = n;
	}
	if (!json_is_array(fuses) || json_array_size(fuses) != SIM_FUSE_BANKS)
		return -1;
	for (size_t b = 0; b < SIM_FUSE_BANKS; b++) {
		str = json_string_value(json_array_get(fuses, b));
		if (!str || strlen(str) != 2 * DRV_FUSE_BANK_LEN ||
		    st_unhex(str, u->fuses[b], DRV_FUSE_BANK_LEN) != ST_OK)
			return -1;
		/* Files from before the redundant copy: both copies agree. */
		str = json_string_value(json_array_get(red, b));
		if (!red) {
			memcpy(u->fuses_red[b], u->fuses[b], DRV_FUSE_BANK_LEN);
		} else if (!str || strlen(str) != 2 * DRV_FUSE_BANK_LEN ||
			   st_unhex(str, u->fuses_red[b], DRV_FUSE_BANK_LEN) != ST_OK) {
			return -1;
		}
	}
	u->burn_count = (uint32_t)json_integer_value(json_object_get(o, "burn_count"));
	u->keygen_count = (uint32_t)json_integer_value(json_object_get(o, "keygen_count"));
	j = json_object_get(o, "keygen_id");
	u->has_keygen_id = json_is_integer(j);
	u->keygen_id = (uint32_t)json_integer_value(j);
	j = json_object_get(o, "last_burn");
	if (json_is_object(j)) {
		u->has_last = 1;
		u->last_id = (uint32_t)json_integer_value(json_object_get(j, "id"));
		u->last_bank = (uint8_t)json_integer_value(json_object_get(j, "bank"));
		if (get_hex(j, "value", u->last_value, DRV_FUSE_BANK_LEN) < 0)
			return -1;
	}
	/* Files from before image slots: every slot empty. */
	j = json_object_get(o, "images");
	for (size_t i = 0; json_is_array(j) && i < json_array_size(j) &&
	     i < SIM_IMAGE_SLOTS; i++) {
		json_t *e = json_array_get(j, i);
		struct sim_image *im = &u->images[i];

		if (json_is_null(e))
			continue;
		im->total = (uint32_t)json_integer_value(json_object_get(e, "total"));
		im->stored = (uint32_t)json_integer_value(json_object_get(e, "stored"));
		str = json_string_value(json_object_get(e, "data"));
		if (!im->total || im->stored > im->total || !str ||
		    strlen(str) != 2 * (size_t)im->stored ||
		    get_hex(e, "sha256", im->id, DRV_SHA256_LEN) < 0 ||
		    !(im->data = calloc(1, im->total)) ||
		    (im->stored && st_unhex(str, im->data, im->stored) != ST_OK))
			return -1;
	}
	return 0;
}

static int create_units(struct sim *s, size_t n, const char *seed,
			const char *model)
{
	s->current = 0;
	if (s->forget_done) {
		/* Only the first unit now; the rest as each one enters. */
		s->seed = strdup(seed);
		snprintf(s->model, sizeof(s->model), "%s", model);
		s->total = n;
		s->next = n ? 1 : 0;
		n = s->next;
	}
	s->units = calloc(n ? n : 1, sizeof(*s->units));
	if (!s->units || (s->forget_done && !s->seed))
		return -1;
	s->nunits = n;
	for (size_t i = 0; i < n; i++)
		make_unit(&s->units[i], seed, i, model);
	return 0;
}

int sim_state_load(struct sim *s, int create, size_t nunits, const char *seed,
		   const char *model)
{
	json_error_t jerr;
	json_t *root, *units, *fd;
	size_t i;

	if (access(s->state_path, F_OK) < 0 && errno == ENOENT) {
		if (!create) {
			fprintf(stderr, "station-devsim: %s does not exist\n",
				s->state_path);
			return -1;
		}
		if (create_units(s, nunits, seed, model) < 0)
			return -1;
		return sim_state_save(s);
	}
	root = json_load_file(s->state_path, 0, &jerr);
	if (!root) {
		fprintf(stderr, "station-devsim: %s:%d: %s\n", s->state_path,
			jerr.line, jerr.text);
		return -1;
	}
	units = json_object_get(root, "units");
	if (json_integer_value(json_object_get(root, "version")) != STATE_VERSION ||
	    !json_is_array(units))
		goto bad;
	s->nunits = json_array_size(units);
	s->units = calloc(s->nunits ? s->nunits : 1, sizeof(*s->units));
	if (!s->units)
		goto bad;
	for (i = 0; i < s->nunits; i++)
		if (unit_from_json(&s->units[i], json_array_get(units, i)) < 0)
			goto bad;
	s->current = (size_t)json_integer_value(json_object_get(root, "current"));
	if (s->current > s->nunits)
		s->current = s->nunits;
	fd = json_object_get(root, "forget_done");
	if (s->forget_done && !fd) {
		fprintf(stderr, "station-devsim: %s was made without --forget-done: "
			"remove it or drop the option\n", s->state_path);
		json_decref(root);
		return -1;
	}
	if (fd) {
		/* A file made with --forget-done stays that way. */
		const char *str = json_string_value(json_object_get(fd, "seed"));

		s->forget_done = 1;
		s->seed = str ? strdup(str) : NULL;
		str = json_string_value(json_object_get(fd, "model"));
		snprintf(s->model, sizeof(s->model), "%s", str ? str : "ST-DEV-1");
		s->next = (size_t)json_integer_value(json_object_get(fd, "next"));
		s->total = (size_t)json_integer_value(json_object_get(fd, "total"));
		if (!s->seed || s->nunits > 1 || s->next > s->total)
			goto bad;
	}
	json_decref(root);
	return 0;
bad:
	fprintf(stderr, "station-devsim: %s: not a valid devsim state file\n",
		s->state_path);
	json_decref(root);
	return -1;
}

int sim_state_save(struct sim *s)
{
	char tmp[4096] = "", dir[4096];
	json_t *root = state_json(s);
	char *text = NULL;
	size_t len, off = 0;
	int fd = -1, rc = -1;

	if (!root)
		goto out;
	text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	if (!text)
		goto out;
	len = strlen(text);
	snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", s->state_path);
	fd = mkstemp(tmp);
	if (fd < 0)
		goto out;
	while (off < len) {
		ssize_t w = write(fd, text + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			goto out;
		off += (size_t)w;
	}
	if (write(fd, "\n", 1) != 1 || fsync(fd) < 0 || close(fd) < 0) {
		fd = -1;
		goto out;
	}
	fd = -1;
	if (rename(tmp, s->state_path) < 0)
		goto out;
	tmp[0] = '\0';
	/* fsync the directory so the rename itself survives a power cut. */
	snprintf(dir, sizeof(dir), "%s", s->state_path);
	fd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
	if (fd >= 0)
		fsync(fd);
	s->dirty = 0;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (rc < 0) {
		fprintf(stderr, "station-devsim: cannot save %s: %s\n",
			s->state_path, strerror(errno));
		if (tmp[0])
			unlink(tmp);
	}
	if (text) {
		st_wipe(text, strlen(text)); /* it held private keys */
		free(text);
	}
	json_decref(root);
	return rc;
}

int sim_state_changed(struct sim *s, int release)
{
	if (s->save_at_release && !release) {
		s->dirty = 1;
		return 0;
	}
	return sim_state_save(s);
}

int sim_state_dump(struct sim *s)
{
	json_t *root = state_json(s);
	int rc = -1;

	if (root && json_dumpf(root, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER) == 0) {
		fputc('\n', stdout);
		rc = fflush(stdout) == 0 ? 0 : -1;
	}
	json_decref(root);
	return rc;
}

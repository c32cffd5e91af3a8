/* checkpoint.c — signing, writing and reading checkpoints of the audit
 * chain's head (checkpoint.h, docs/records.md "Checkpoints"). */
#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"
#include "station/st_int.h"
#include "station/checkpoint.h"

void st_checkpoint_dir(const st_config *cfg, char *buf, size_t len)
{
	if (cfg->checkpoint_dir && *cfg->checkpoint_dir)
		snprintf(buf, len, "%s", cfg->checkpoint_dir);
	else
		snprintf(buf, len, "%s.checkpoints", cfg->records_path);
}

int st_checkpoint_make(rec_store *rec, st_audit *a, const char *station,
		       long long seq, const char *hash, st_checkpoint *out,
		       char *err, size_t errlen)
{
	uint8_t dig[SHA256_DIGEST_LENGTH];
	char fp[65], head[65];
	const uint8_t *der;
	size_t dlen;
	int rc;

	memset(out, 0, sizeof(*out));
	if (seq < 0) {
		rc = rec_head(rec, &seq, head);
		if (rc) {
			snprintf(err, errlen, "records: %s", rec_errmsg(rec));
			return rc;
		}
		hash = head;
	}
	der = st_audit_cert(a, &dlen);
	SHA256(der, dlen, dig);
	st_hex(dig, sizeof(dig), fp);
	out->body = rec_checkpoint_body(station, seq, hash, fp);
	if (!out->body || rec_checkpoint_parse(out->body, &out->cp)) {
		snprintf(err, errlen, "cannot make the checkpoint text");
		return ST_E_NOMEM;
	}
	SHA256((const unsigned char *)out->body, strlen(out->body), dig);
	rc = st_audit_sign(a, dig, out->sig, sizeof(out->sig), &out->siglen);
	if (rc)
		snprintf(err, errlen, "the audit key could not sign the "
			 "checkpoint: %s", st_strerror(rc));
	return rc;
}

/* Write len bytes to path, fsynced, replacing it whole. */
static int put(const char *path, const void *data, size_t len, char *err,
	       size_t errlen)
{
	char tmp[4200];
	int fd, ok;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	ok = fd >= 0 && write(fd, data, len) == (ssize_t)len && fsync(fd) == 0;
	if (fd >= 0)
		ok = close(fd) == 0 && ok;
	ok = ok && rename(tmp, path) == 0;
	if (!ok) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
	}
	return ok ? ST_OK : ST_E_IO;
}

int st_checkpoint_write(st_checkpoint *c, st_audit *a, const char *dir,
			const char *name, char *err, size_t errlen)
{
	char base[4000], path[4200], *pem = NULL;
	const uint8_t *der, *p;
	struct stat sb;
	size_t dlen;
	X509 *x = NULL;
	BIO *b = NULL;
	long n;
	int rc;

	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create the checkpoint directory %s: "
			 "%s", dir, strerror(errno));
		return ST_E_IO;
	}
	if (name)
		snprintf(base, sizeof(base), "%s/%s", dir, name);
	else
		snprintf(base, sizeof(base), "%s/%s-%lld-%.16s", dir,
			 c->cp.station, c->cp.seq, c->cp.head_hash);
	snprintf(path, sizeof(path), "%s.sig", base);
	rc = put(path, c->sig, c->siglen, err, errlen);
	snprintf(c->path, sizeof(c->path), "%s.json", base);
	if (!rc)
		rc = put(c->path, c->body, strlen(c->body), err, errlen);
	if (rc) {
		c->path[0] = '\0';
		return rc;
	}
	/* the certificate that checks it, for an auditor with openssl */
	snprintf(path, sizeof(path), "%s/audit-%s.pem", dir, c->cp.audit_sha256);
	if (stat(path, &sb) == 0)
		return ST_OK;
	der = p = st_audit_cert(a, &dlen);
	x = d2i_X509(NULL, &p, (long)dlen);
	b = BIO_new(BIO_s_mem());
	if (!x || !b || !PEM_write_bio_X509(b, x) ||
	    (n = BIO_get_mem_data(b, &pem)) <= 0) {
		snprintf(err, errlen, "cannot encode the audit certificate");
		rc = ST_E_CRYPTO;
	} else {
		rc = put(path, pem, (size_t)n, err, errlen);
	}
	(void)der;
	X509_free(x);
	BIO_free(b);
	return rc;
}

/* The whole file into a malloc'd buffer (NUL added). */
static int slurp(const char *path, char **out, size_t *len, char *err,
		 size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n = -1;

	if (f && fseek(f, 0, SEEK_END) == 0)
		n = ftell(f);
	if (n >= 0 && n < (1 << 20) && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1)) &&
	    fread(buf, 1, (size_t)n, f) == (size_t)n) {
		buf[n] = '\0';
		*out = buf;
		*len = (size_t)n;
		fclose(f);
		return ST_OK;
	}
	snprintf(err, errlen, "cannot read %s: %s", path,
		 f ? "not a small readable file" : strerror(errno));
	free(buf);
	if (f)
		fclose(f);
	return ST_E_IO;
}

int st_checkpoint_read(const char *path, char **body, uint8_t **sig,
		       size_t *siglen, char *err, size_t errlen)
{
	char sp[4200];
	size_t n = strlen(path), blen;
	int rc;

	*body = NULL;
	*sig = NULL;
	if (n > 5 && !strcmp(path + n - 5, ".json"))
		snprintf(sp, sizeof(sp), "%.*s.sig", (int)(n - 5), path);
	else
		snprintf(sp, sizeof(sp), "%s.sig", path);
	rc = slurp(path, body, &blen, err, errlen);
	if (!rc)
		rc = slurp(sp, (char **)sig, siglen, err, errlen);
	if (rc) {
		free(*body);
		*body = NULL;
	}
	return rc;
}

void st_checkpoint_free(st_checkpoint *c)
{
	if (!c)
		return;
	free(c->body);
	c->body = NULL;
}

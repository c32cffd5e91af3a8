/* cli.c — what the station's commands share (see cli.h). */
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>

#include "base.h"
#include "station/cli.h"

int st_say(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("station: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

int st_cli_open_store(const st_config *cfg, rec_store **r)
{
	int rc = rec_open(cfg->records_path, r);

	if (rc)
		return st_say(ST_EXIT_RECORDS, "records: cannot open %s: %s",
			      cfg->records_path, *r ? rec_errmsg(*r) : st_strerror(rc));
	return 0;
}

X509 *st_cli_read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;

	if (f)
		fclose(f);
	return x;
}

int st_cli_check_issuer(void *ctx, const char *pem, char *why, size_t len)
{
	X509 *ca = ctx, *x = NULL;
	BIO *b = BIO_new_mem_buf(pem, -1);
	int ok;

	x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	ok = x && X509_check_issued(ca, x) == X509_V_OK &&
	     X509_verify(x, X509_get0_pubkey(ca)) == 1;
	if (!ok)
		snprintf(why, len, "not issued by the CA given with --ca-cert");
	X509_free(x);
	return ok ? 0 : -1;
}

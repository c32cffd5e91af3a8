/* base.c — error strings, hex helpers, secret wiping and locked memory. */
#include "base.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef ST_LOCALEDIR
#define ST_LOCALEDIR "/usr/local/share/locale"
#endif

void st_i18n_init(void)
{
	const char *dir = getenv("STATION_LOCALEDIR");

	setlocale(LC_MESSAGES, "");
	bindtextdomain(ST_TEXTDOMAIN, dir && *dir ? dir : ST_LOCALEDIR);
	bind_textdomain_codeset(ST_TEXTDOMAIN, "UTF-8");
	textdomain(ST_TEXTDOMAIN);
}

static const struct {
	int code;
	const char *text;
} err_text[] = {
	{ ST_OK, "success" },
	{ ST_E_INVAL, "invalid argument or input" },
	{ ST_E_NOMEM, "out of memory" },
	{ ST_E_IO, "input/output error" },
	{ ST_E_TIMEOUT, "timed out" },
	{ ST_E_PROTO, "protocol error (malformed frame)" },
	{ ST_E_DEVICE, "device reported an error" },
	{ ST_E_HSM, "HSM error" },
	{ ST_E_PIN, "PIN incorrect" },
	{ ST_E_PIN_LOCKED, "PIN locked" },
	{ ST_E_NOTOKEN, "token not found" },
	{ ST_E_NOTFOUND, "not found" },
	{ ST_E_CRYPTO, "cryptographic operation failed" },
	{ ST_E_DB, "records store error" },
	{ ST_E_VERIFY, "verification failed" },
	{ ST_E_FUSE_CONFLICT, "fuses hold a different value" },
	{ ST_E_UNPLUGGED, "programmer unplugged" },
	{ ST_E_CONFIG, "configuration error" },
	{ ST_E_EXISTS, "already exists" },
	{ ST_E_NO_TARGET, "no unit in the programmer" },
	{ ST_E_VERSION, "protocol version not supported" },
	{ ST_E_LOCKED, "device is locked" },
	{ ST_E_STATE, "not valid in this state" },
};

const char *st_strerror(int err)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(err_text); i++)
		if (err_text[i].code == err)
			return err_text[i].text;
	return "unknown error";
}

bool st_err_is_link(int err)
{
	return err == ST_E_TIMEOUT || err == ST_E_PROTO || err == ST_E_UNPLUGGED ||
	       err == ST_E_IO;
}

void st_wipe(void *p, size_t n)
{
	if (p && n)
		OPENSSL_cleanse(p, n);
}

static size_t secret_len(size_t n)
{
	long ps = sysconf(_SC_PAGESIZE);
	size_t pg = ps > 0 ? (size_t)ps : 4096;

	return (n + pg - 1) / pg * pg;
}

int st_secret_alloc(size_t n, void **out, char *err, size_t errlen)
{
	size_t len = secret_len(n ? n : 1);
	void *p;
	int e;

	*out = NULL;
	/* MAP_LOCKED as well as mlock(): the mapping is locked from its
	 * first byte, and a sanitizer build (whose mlock() does nothing)
	 * still locks it; mlock() is what reports a refusal. */
	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
	if (p == MAP_FAILED) {
		e = errno;
		if (e != EAGAIN && e != EPERM)
			return ST_E_NOMEM;
		goto not_locked;
	}
	if (mlock(p, len) < 0) {
		e = errno;
		munmap(p, len);
		goto not_locked;
	}
	/* a core dump must not carry a secret; without the flag, refuse */
	if (madvise(p, len, MADV_DONTDUMP) < 0) {
		e = errno;
		munlock(p, len);
		munmap(p, len);
		snprintf(err, errlen, "cannot keep secrets out of core dumps "
			 "(madvise: %s)", strerror(e));
		return ST_E_IO;
	}
	*out = p;
	return ST_OK;
not_locked:
	snprintf(err, errlen, "cannot lock %zu bytes of memory for secrets (%s): "
		 "raise the station's RLIMIT_MEMLOCK (LimitMEMLOCK= in its "
		 "systemd unit)", len, strerror(e));
	return ST_E_IO;
}

void st_secret_free(void *p, size_t n)
{
	size_t len = secret_len(n ? n : 1);

	if (!p)
		return;
	OPENSSL_cleanse(p, len);
	munlock(p, len);
	munmap(p, len);
}

void st_hex(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int st_unhex(const char *in, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int hi = hexval((unsigned char)in[2 * i]);
		int lo = hi < 0 ? -1 : hexval((unsigned char)in[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return ST_E_INVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return in[2 * n] == '\0' ? ST_OK : ST_E_INVAL;
}

int64_t st_now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

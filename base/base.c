/* base.c — error strings, hex helpers, secret wiping. */
#include "base.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <locale.h>
#include <stdlib.h>
#include <time.h>

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

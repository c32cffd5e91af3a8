/* base.h — the small shared base every module may include: the project error
 * enum, its strerror, hex helpers and secret wiping.  No state lives here. */
#ifndef ST_BASE_H
#define ST_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <libintl.h>

/* Messages for people go through gettext (docs/tui.md, "Translations"):
 * _() where the text is used, N_() where a table only holds it.  The
 * catalogue is the text domain "station". */
#define _(s) gettext(s)
#define N_(s) (s)
#define ST_TEXTDOMAIN "station"

/* Bind the message catalogue: STATION_LOCALEDIR when set (a build's
 * locale directory, for tests), else the installed one (ST_LOCALEDIR);
 * LC_MESSAGES from the environment, so LANGUAGE / LC_ALL / LC_MESSAGES /
 * LANG choose the language.  Output is UTF-8 whatever LC_CTYPE says. */
void st_i18n_init(void);

/* One project-wide error enum: 0 is success, errors are negative.  Modules
 * convert CK_RV, errno, SQLite and OpenSSL errors to these at their boundary
 * and keep a readable cause in their own handle (hsm_errmsg, drv_errmsg, ...). */
typedef enum st_err {
	ST_OK = 0,
	ST_E_INVAL = -1,        /* bad argument or input */
	ST_E_NOMEM = -2,        /* out of memory */
	ST_E_IO = -3,           /* read/write/open failed */
	ST_E_TIMEOUT = -4,      /* the peer did not answer in time */
	ST_E_PROTO = -5,        /* malformed frame, bad CRC, wrong sequence */
	ST_E_DEVICE = -6,       /* the device answered with an error code */
	ST_E_HSM = -7,          /* PKCS#11 call failed */
	ST_E_PIN = -8,          /* PIN incorrect */
	ST_E_PIN_LOCKED = -9,   /* PIN locked: needs the security officer */
	ST_E_NOTOKEN = -10,     /* token not present / no token with that label */
	ST_E_NOTFOUND = -11,    /* object or record not found */
	ST_E_CRYPTO = -12,      /* OpenSSL operation failed */
	ST_E_DB = -13,          /* records store failed */
	ST_E_VERIFY = -14,      /* a read-back or signature check failed */
	ST_E_FUSE_CONFLICT = -15, /* fuses hold another value: quarantine */
	ST_E_UNPLUGGED = -16,   /* programmer went away */
	ST_E_CONFIG = -17,      /* bad configuration or profile */
	ST_E_EXISTS = -18,      /* already exists */
	ST_E_NO_TARGET = -19,   /* the programmer has no unit inserted */
	ST_E_VERSION = -20,     /* protocol version not supported */
	ST_E_LOCKED = -21,      /* device lifecycle forbids the operation */
	ST_E_STATE = -22,       /* operation not valid in this state */
} st_err;

/* Return a short, static, human description of an st_err. */
const char *st_strerror(int err);

/* Is err the link to the programmer (timeout, malformed frame, unplugged,
 * I/O) rather than the unit?  After such an error what the device did is
 * unknown until it is read again, so callers stop the slot or treat the
 * step as interrupted instead of failing the unit. */
bool st_err_is_link(int err);

/* Wipe a buffer that held a secret; never optimised away (OPENSSL_cleanse). */
void st_wipe(void *p, size_t n);

/* n zeroed bytes for secrets: whole pages of their own, locked in RAM
 * (never swapped) and left out of core dumps.  ST_OK, or ST_E_NOMEM, or
 * ST_E_IO with the reason in err (mlock refused: RLIMIT_MEMLOCK; no
 * MADV_DONTDUMP) and nothing allocated.  Freed, wiped first, by
 * st_secret_free(p, n) with the same n. */
int st_secret_alloc(size_t n, void **out, char *err, size_t errlen);
void st_secret_free(void *p, size_t n);

/* Write 2*n lower-case hex digits and a NUL into out (size >= 2*n+1). */
void st_hex(const uint8_t *in, size_t n, char *out);

/* Parse exactly 2*n hex digits into out; return ST_OK or ST_E_INVAL. */
int st_unhex(const char *in, uint8_t *out, size_t n);

/* Monotonic milliseconds, for timeouts and durations. */
int64_t st_now_ms(void);

#define ST_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Little-endian 32-bit words in byte buffers (fuse words, ESP formats). */
static inline uint32_t st_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline void st_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

#endif

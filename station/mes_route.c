/* mes_route.c — the route check (docs/integration.md, "Route check"):
 * before a unit gets anything, the plant's MES is asked over HTTP(S)
 * whether this device may be provisioned at this station.  The question
 * is a POST of a small JSON body to the profile's URL template, signed
 * and sent over TLS exactly as the results are (the station's mes.tls_*
 * and mes.hmac_key_file); the answer is a 2xx JSON object with a boolean
 * "allow" and, for a refusal, a "reason".  Anything else (no connection,
 * a timeout, another status, another body) is no answer: the profile's
 * route.on_error decides.  Called from every slot worker at once: each
 * call has its own curl handle; the shared state is read only. */
#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <libconfig.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "station/schema.h"
#include "station/st_int.h"

#define ROUTE_KEY_MAX 1024      /* longest HMAC key file, as mes.c */
#define ROUTE_ANSWER_MAX 65536  /* longest answer body read */

struct st_route {
	char *url;              /* the template */
	char *station, *profile;
	int timeout_ms;
	char *cafile, *certfile, *keyfile;
	unsigned char key[ROUTE_KEY_MAX];
	size_t keylen;          /* 0: no signature header */
	bool curl_up;
	st_route_hook hook;
};

/* The answer's body, cut at ROUTE_ANSWER_MAX. */
struct answer {
	char buf[ROUTE_ANSWER_MAX];
	size_t len;
};

static size_t take(char *p, size_t size, size_t n, void *ctx)
{
	struct answer *a = ctx;
	size_t k = size * n, room = sizeof(a->buf) - 1 - a->len;

	memcpy(a->buf + a->len, p, k < room ? k : room);
	a->len += k < room ? k : room;
	a->buf[a->len] = '\0';
	return k;
}

/* The MES's words, for the records and a terminal: printable ASCII only
 * (anything else becomes '?'), at most len - 1 bytes. */
static void clean_words(const char *in, char *out, size_t len)
{
	size_t i = 0;

	for (; in && *in && i + 1 < len; in++)
		out[i++] = isprint((unsigned char)*in) ? *in : '?';
	out[i] = '\0';
}

/* The URL for one unit: the template with ${uid}, ${station} and
 * ${work_order} replaced, URL-escaped (malloc'd; NULL out of memory).
 * Another ${...} is left as it is (the profile's load refuses one). */
static char *expand(CURL *curl, const char *tmpl, const char *uid,
		    const char *station, const char *wo)
{
	static const char *const names[] = { "uid", "station", "work_order" };
	const char *vals[] = { uid, station, wo ? wo : "" };
	size_t cap = strlen(tmpl) * 3 + 1024, o = 0;
	char *out = malloc(cap);

	if (!out)
		return NULL;
	for (const char *p = tmpl; *p;) {
		const char *end;
		size_t i;

		if (strncmp(p, "${", 2) || !(end = strchr(p, '}'))) {
			if (o + 1 >= cap)
				goto toolong;
			out[o++] = *p++;
			continue;
		}
		for (i = 0; i < ST_ARRAY_SIZE(names); i++)
			if ((size_t)(end - p - 2) == strlen(names[i]) &&
			    !strncmp(p + 2, names[i], strlen(names[i])))
				break;
		if (i == ST_ARRAY_SIZE(names)) {
			if (o + (size_t)(end - p + 1) >= cap)
				goto toolong;
			memcpy(out + o, p, (size_t)(end - p + 1));
			o += (size_t)(end - p + 1);
		} else {
			char *e = curl_easy_escape(curl, vals[i], 0);
			size_t n = e ? strlen(e) : 0;

			if (!e || o + n >= cap) {
				curl_free(e);
				goto toolong;
			}
			memcpy(out + o, e, n);
			o += n;
			curl_free(e);
		}
		p = end + 1;
	}
	out[o] = '\0';
	return out;
toolong:
	free(out);
	return NULL;
}

/* The question's body (compact JSON, keys sorted; malloc'd). */
static char *question(const struct st_route *r, const char *uid, const char *wo,
		      int slot, const char *port)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s?, s:s, s:i, s:s?}",
			      "schema", "station-mes-route/1", "uid", uid,
			      "station", r->station, "work_order", wo,
			      "profile", r->profile, "slot", slot, "port", port);
	char *text = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

	json_decref(o);
	return text;
}

static st_route_answer route_ask(void *ctx, const char *uid, const char *wo,
				 int slot, const char *port, char *why,
				 size_t whylen)
{
	const struct st_route *r = ctx;
	struct answer *a = calloc(1, sizeof(*a));
	struct curl_slist *h = NULL;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	char line[600], hex[2 * EVP_MAX_MD_SIZE + 1], cerr[CURL_ERROR_SIZE] = "";
	char *url = NULL, *body = NULL;
	CURL *curl = curl_easy_init();
	st_route_answer ans = ST_ROUTE_UNANSWERED;
	json_t *j = NULL, *allow;
	long status = 0;
	CURLcode cc;

	if (!a || !curl || !(url = expand(curl, r->url, uid, r->station, wo)) ||
	    !(body = question(r, uid, wo, slot, port))) {
		snprintf(why, whylen, "out of memory asking the MES");
		goto cleanup;
	}
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, "Accept: application/json");
	snprintf(line, sizeof(line), "X-Station-Id: %s", r->station);
	h = curl_slist_append(h, line);
	if (r->keylen) {
		if (!HMAC(EVP_sha256(), r->key, (int)r->keylen, (const unsigned char *)body,
			  strlen(body), mac, &maclen)) {
			snprintf(why, whylen, "HMAC-SHA256 failed");
			goto cleanup;
		}
		st_hex(mac, maclen, hex);
		snprintf(line, sizeof(line), "X-Station-Signature: sha256=%s", hex);
		h = curl_slist_append(h, line);
	}
	if (!h) {
		snprintf(why, whylen, "out of memory asking the MES");
		goto cleanup;
	}
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)r->timeout_ms);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, take);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, a);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
	if (r->cafile)
		curl_easy_setopt(curl, CURLOPT_CAINFO, r->cafile);
	if (r->certfile) {
		curl_easy_setopt(curl, CURLOPT_SSLCERT, r->certfile);
		curl_easy_setopt(curl, CURLOPT_SSLKEY, r->keyfile);
	}
	cc = curl_easy_perform(curl);
	if (cc != CURLE_OK) {
		snprintf(why, whylen, "%s: %s", url, cerr[0] ? cerr : curl_easy_strerror(cc));
		goto cleanup;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status > 299) {
		snprintf(why, whylen, "%s answered HTTP %ld", url, status);
		goto cleanup;
	}
	j = json_loads(a->buf, 0, NULL);
	allow = json_object_get(j, "allow");
	if (!json_is_boolean(allow)) {
		snprintf(why, whylen, "%s answered HTTP %ld without a route answer (a JSON "
			 "object with a boolean \"allow\")", url, status);
		goto cleanup;
	}
	ans = json_is_true(allow) ? ST_ROUTE_ALLOW : ST_ROUTE_REFUSE;
	clean_words(json_string_value(json_object_get(j, "reason")), why,
		    whylen < 300 ? whylen : 300);
	if (ans == ST_ROUTE_REFUSE && !why[0])
		snprintf(why, whylen, "(the MES gave no reason)");
cleanup:
	OPENSSL_cleanse(mac, sizeof(mac));
	json_decref(j);
	curl_slist_free_all(h);
	if (curl)
		curl_easy_cleanup(curl);
	free(url);
	free(body);
	free(a);
	return ans;
}

/* A string setting of the mes group, copied; NULL when absent. */
static int setting(const config_t *c, const char *path, char **dst)
{
	const char *v = st_schema_string(c, st_config_schema, st_config_schema_len, path);

	*dst = v && v[0] ? strdup(v) : NULL;
	return v && v[0] && !*dst ? ST_E_NOMEM : ST_OK;
}

int st_route_open(const char *config_path, const st_config *cfg,
		  const st_profile *prof, st_route **out, char *err, size_t errlen)
{
	const char *url = st_profile_route_url(prof);
	char why[512], *key_file = NULL;
	st_route *r = NULL;
	config_t c;
	int rc;

	*out = NULL;
	if (!url)
		return ST_OK;
	config_init(&c);
	r = calloc(1, sizeof(*r));
	if (!r) {
		rc = ST_E_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	r->timeout_ms = st_profile_route_timeout_ms(prof);
	r->hook = (st_route_hook){ .check = route_ask, .ctx = r,
				   .stop_unanswered = st_profile_route_stop(prof) };
	if (!(r->url = strdup(url)) ||
	    !(r->station = strdup(cfg->station_id ? cfg->station_id : "")) ||
	    !(r->profile = strdup(st_profile_name(prof)))) {
		rc = ST_E_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	/* TLS and the signature: the results connector's settings */
	rc = st_config_read_checked(&c, config_path, why, sizeof(why));
	if (rc) {
		snprintf(err, errlen, "configuration: %s", rc == ST_E_NOMEM ?
			 "out of memory" : why);
		goto fail;
	}
	if (setting(&c, "mes.tls_ca", &r->cafile) ||
	    setting(&c, "mes.tls_cert", &r->certfile) ||
	    setting(&c, "mes.tls_key", &r->keyfile) ||
	    setting(&c, "mes.hmac_key_file", &key_file)) {
		rc = ST_E_NOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (!r->certfile != !r->keyfile) {
		snprintf(err, errlen, "configuration: %s: 'mes.tls_cert' and 'mes.tls_key' "
			 "go together (the client certificate of mutual TLS and its "
			 "key)", config_path ? config_path : "-");
		rc = ST_E_CONFIG;
		goto fail;
	}
	if (key_file && (rc = st_mes_read_secret(key_file, "HMAC key", "mes.hmac_key_file",
						 r->key, sizeof(r->key), &r->keylen,
						 err, errlen)))
		goto fail;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(err, errlen, "libcurl could not start");
		rc = ST_E_NOMEM;
		goto fail;
	}
	r->curl_up = true;
	free(key_file);
	config_destroy(&c);
	*out = r;
	return ST_OK;
fail:
	free(key_file);
	config_destroy(&c);
	st_route_close(r);
	return rc;
}

const st_route_hook *st_route_hook_of(const st_route *r)
{
	return r ? &r->hook : NULL;
}

void st_route_close(st_route *r)
{
	if (!r)
		return;
	if (r->curl_up)
		curl_global_cleanup();
	st_wipe(r->key, sizeof(r->key));
	free(r->url);
	free(r->station);
	free(r->profile);
	free(r->cafile);
	free(r->certfile);
	free(r->keyfile);
	free(r);
}

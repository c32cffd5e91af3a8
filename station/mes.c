/* mes.c — results to the plant's MES over HTTP(S) (docs/integration.md):
 * the `mes` group of the configuration, each ended unit's message (JSON),
 * its signature (HMAC-SHA256 over the body) and its delivery with libcurl
 * (or over MQTT: station/mes_mqtt.c), store-and-forward from the records
 * store, the rejected list and its resend.
 *
 * The durability model is the PostgreSQL sync's (docs/sync.md): the
 * records store is the first write; the connector's cursor is the chain
 * seq of the last unit_end event the MES acknowledged with a 2xx, kept in
 * "<records>.mes.json" (written whole, fsynced) and moved only after that
 * answer.  A connector that dies between the answer and the write sends
 * that unit again — with the same Idempotency-Key, so the receiver keeps
 * one.  Nothing is skipped: a unit is only ever behind the cursor once the
 * MES said it has it. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libconfig.h>
#include <mosquitto.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "records/outbox.h"
#include "records/records.h"
#include "station/schema.h"
#include "station/st_int.h"
#include "station/sync.h"
#include "station/mes_int.h"

/* ---- Configuration ---- */

static int cfg_str(const config_t *c, const char *path, char **dst)
{
	const char *v = st_schema_string(c, st_config_schema, st_config_schema_len,
					 path);

	*dst = v && v[0] ? strdup(v) : NULL;
	return v && v[0] && !*dst ? ST_E_NOMEM : ST_OK;
}

static int cfg_int(const config_t *c, const char *path)
{
	return (int)st_schema_int(c, st_config_schema, st_config_schema_len, path);
}

static void mes_cfg_free(mes_cfg *m)
{
	free(m->url);
	free(m->key_file);
	free(m->cafile);
	free(m->certfile);
	free(m->keyfile);
	free(m->mqtt_host);
	free(m->mqtt_topic);
	free(m->mqtt_user);
	free(m->mqtt_pass_file);
	memset(m, 0, sizeof(*m));
}

/* Read the mes group of the file at path, checked by the schema like the
 * rest of the configuration.  ST_E_NOTFOUND without the group. */
static int mes_cfg_load(const char *path, mes_cfg *m, char *err, size_t errlen)
{
	char why[512];
	config_t c;
	int rc;

	memset(m, 0, sizeof(*m));
	config_init(&c);
	rc = st_config_read_checked(&c, path, why, sizeof(why));
	if (rc) {
		snprintf(err, errlen, "configuration: %s", rc == ST_E_NOMEM ?
			 "out of memory" : why);
		goto cleanup;
	}
	if (!path || !config_lookup(&c, "mes")) {
		snprintf(err, errlen, "mes: the configuration%s%s has no 'mes' "
			 "group: give mes.url (see docs/integration.md)",
			 path ? " " : "", path ? path : "");
		rc = ST_E_NOTFOUND;
		goto cleanup;
	}
	if (cfg_str(&c, "mes.url", &m->url) ||
	    cfg_str(&c, "mes.hmac_key_file", &m->key_file) ||
	    cfg_str(&c, "mes.tls_ca", &m->cafile) ||
	    cfg_str(&c, "mes.tls_cert", &m->certfile) ||
	    cfg_str(&c, "mes.tls_key", &m->keyfile) ||
	    cfg_str(&c, "mes.mqtt_host", &m->mqtt_host) ||
	    cfg_str(&c, "mes.mqtt_topic", &m->mqtt_topic) ||
	    cfg_str(&c, "mes.mqtt_username", &m->mqtt_user) ||
	    cfg_str(&c, "mes.mqtt_password_file", &m->mqtt_pass_file)) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	if (!m->url == !m->mqtt_host) {
		snprintf(err, errlen, "configuration: %s: the 'mes' group needs "
			 "one transport: 'mes.url' (HTTP(S)) or 'mes.mqtt_host' "
			 "(MQTT), not %s", path, m->url ? "both" : "neither");
		rc = ST_E_CONFIG;
		goto cleanup;
	}
	if (m->url && strncmp(m->url, "http://", 7) && strncmp(m->url, "https://", 8)) {
		snprintf(err, errlen, "configuration: %s:%d: 'mes.url' must start "
			 "with https:// (or http:// on a trusted network)", path,
			 st_schema_line(&c, "mes.url"));
		rc = ST_E_CONFIG;
		goto cleanup;
	}
	if (!m->certfile != !m->keyfile) {
		snprintf(err, errlen, "configuration: %s: 'mes.tls_cert' and "
			 "'mes.tls_key' go together (the client certificate of "
			 "mutual TLS and its key)", path);
		rc = ST_E_CONFIG;
		goto cleanup;
	}
	if (!m->mqtt_user != !m->mqtt_pass_file) {
		snprintf(err, errlen, "configuration: %s: 'mes.mqtt_username' and "
			 "'mes.mqtt_password_file' go together", path);
		rc = ST_E_CONFIG;
		goto cleanup;
	}
	m->mqtt_port = cfg_int(&c, "mes.mqtt_port");
	m->timeout_ms = cfg_int(&c, "mes.timeout_ms");
	m->retries = cfg_int(&c, "mes.retries");
	m->batch = cfg_int(&c, "mes.batch");
	m->interval_ms = cfg_int(&c, "mes.interval_ms");
	m->backoff_max_ms = cfg_int(&c, "mes.backoff_max_ms");
cleanup:
	config_destroy(&c);
	if (rc)
		mes_cfg_free(m);
	return rc;
}

/* A secret file (the HMAC key, the MQTT password): the file's bytes less
 * trailing line ends, into buf (NUL-ended).  The secret is never printed;
 * a message names only the file and what it is. */
int st_mes_read_secret(const char *file, const char *what, const char *knob,
		       unsigned char *buf, size_t cap, size_t *len, char *err,
		       size_t errlen)
{
	struct stat sb;
	ssize_t n;
	int fd, rc = ST_OK;

	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &sb)) {
		snprintf(err, errlen, "mes: cannot read the %s file %s (%s): "
			 "check %s", what, file, strerror(errno), knob);
		rc = ST_E_CONFIG;
		goto cleanup;
	}
	if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
		snprintf(err, errlen, "mes: the %s file %s may be read by "
			 "others (mode %03o): chmod 600 it", what, file,
			 (unsigned)(sb.st_mode & 0777));
		rc = ST_E_CONFIG;
		goto cleanup;
	}
	n = read(fd, buf, cap);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	if (n <= 0 || (size_t)n >= cap) {
		snprintf(err, errlen, "mes: the %s file %s is %s: put 1 to %d "
			 "bytes in it", what, file, n <= 0 ? "empty" : "too long",
			 (int)cap - 1);
		rc = ST_E_CONFIG;
		goto cleanup;
	}
	buf[n] = '\0';
	*len = (size_t)n;
cleanup:
	if (fd >= 0)
		close(fd);
	if (rc)
		st_wipe(buf, cap);
	return rc;
}

void mes_utc_now(char out[32])
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int st_mes_open(st_station *st, st_mes **out, char *err, size_t errlen)
{
	st_mes *s = calloc(1, sizeof(*s));
	int rc;

	*out = NULL;
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return ST_E_NOMEM;
	}
	s->st = st;
	s->cfg = st_station_config(st);
	rc = mes_cfg_load(st_station_config_path(st), &s->m, err, errlen);
	if (rc)
		goto fail;
	if (s->m.key_file &&
	    (rc = st_mes_read_secret(s->m.key_file, "HMAC key", "mes.hmac_key_file",
			      s->key, sizeof(s->key), &s->keylen, err, errlen)))
		goto fail;
	if (s->m.mqtt_pass_file) {
		size_t plen;

		rc = st_mes_read_secret(s->m.mqtt_pass_file, "MQTT password",
				 "mes.mqtt_password_file", (unsigned char *)s->q.pass,
				 sizeof(s->q.pass), &plen, err, errlen);
		if (rc)
			goto fail;
	}
	if (s->m.mqtt_host) {
		if (s->m.mqtt_topic)
			snprintf(s->q.topic, sizeof(s->q.topic), "%s", s->m.mqtt_topic);
		else
			snprintf(s->q.topic, sizeof(s->q.topic), "station/%s/units",
				 s->cfg->station_id);
		snprintf(s->q.status_topic, sizeof(s->q.status_topic),
			 "station/%s/status", s->cfg->station_id);
		mosquitto_lib_init();
	}
	rc = st_station_records_for(st, ST_STORE_READ, &s->r, err, errlen);
	if (rc)
		goto fail;
	*out = s;
	return ST_OK;
fail:
	st_mes_close(s);
	return rc;
}

void st_mes_close(st_mes *s)
{
	if (!s)
		return;
	if (s->curl)
		curl_easy_cleanup(s->curl);
	if (s->m.mqtt_host) {
		mes_mqtt_close(s, true);
		mosquitto_lib_cleanup();
	}
	st_wipe(s->q.pass, sizeof(s->q.pass));
	st_wipe(s->key, sizeof(s->key));
	mes_cfg_free(&s->m);
	free(s);
}

/* ---- The message ---- */

static json_t *str_or_null(const char *v)
{
	return v ? json_string(v) : json_null();
}

struct unit_walk {
	json_t *msg;
	int found;
};

/* The unit row into the message (under the store's lock: no store calls). */
static int unit_fields(void *ctx, const rec_unit_row *u)
{
	struct unit_walk *w = ctx;
	json_t *m = w->msg, *cert = json_object(), *fw = NULL;

	w->found = 1;
	json_object_set_new(m, "uid", str_or_null(u->uid));
	json_object_set_new(m, "verdict", str_or_null(u->state));
	json_object_set_new(m, "reason", str_or_null(u->reason));
	json_object_set_new(cert, "serial", str_or_null(u->cert_serial));
	json_object_set_new(cert, "sha256", str_or_null(u->cert_sha256));
	json_object_set_new(m, "certificate",
			    u->cert_serial ? cert : (json_decref(cert), json_null()));
	if (u->firmware)
		fw = json_loads(u->firmware, 0, NULL);
	json_object_set_new(m, "firmware", fw ? fw : json_null());
	/* what the unit measured, and its flags (docs/integration.md) */
	fw = u->measurements ? json_loads(u->measurements, 0, NULL) : NULL;
	json_object_set_new(m, "measurements", fw ? fw : json_array());
	fw = u->flags ? json_loads(u->flags, 0, NULL) : NULL;
	json_object_set_new(m, "flags", fw ? fw : json_array());
	json_object_set_new(m, "work_order", str_or_null(u->work_order));
	json_object_set_new(m, "operator", str_or_null(u->operator_name));
	json_object_set_new(m, "profile", str_or_null(u->profile));
	json_object_set_new(m, "profile_sha256", str_or_null(u->profile_digest));
	json_object_set_new(m, "slot", json_integer(u->slot));
	json_object_set_new(m, "port", str_or_null(u->port));
	json_object_set_new(m, "started_at", str_or_null(u->started_at));
	json_object_set_new(m, "finished_at", str_or_null(u->finished_at));
	return 0;
}

static int step_fields(void *ctx, const char *step, const char *outcome,
		       const char *detail)
{
	json_t *steps = ctx, *o = json_object();

	json_object_set_new(o, "step", str_or_null(step));
	json_object_set_new(o, "outcome", str_or_null(outcome));
	json_object_set_new(o, "detail", str_or_null(detail));
	return json_array_append_new(steps, o);
}

/* The message of the unit whose unit_end event is seq: compact JSON with
 * sorted keys (malloc'd), its key and device ID, or NULL with err. */
static char *message(st_mes *s, const rec_outbox_item *it, char *key,
		     size_t keylen, char uid[130], char *err, size_t errlen)
{
	rec_filter f = { .unit_id = it->unit_id };
	struct unit_walk w = { .msg = json_object() };
	json_t *steps = json_array();
	char *text = NULL;

	snprintf(key, keylen, "%s:%lld", s->cfg->station_id,
		 (long long)it->unit_id);
	json_object_set_new(w.msg, "schema", json_string("station-mes-result/1"));
	json_object_set_new(w.msg, "idempotency_key", json_string(key));
	json_object_set_new(w.msg, "station", json_string(s->cfg->station_id));
	json_object_set_new(w.msg, "unit_id", json_integer(it->unit_id));
	json_object_set_new(w.msg, "event_seq", json_integer(it->seq));
	if (rec_list_units(s->r, &f, unit_fields, &w) ||
	    rec_unit_steps(s->r, it->unit_id, step_fields, steps)) {
		snprintf(err, errlen, "records: unit %lld: %s",
			 (long long)it->unit_id, rec_errmsg(s->r));
		goto cleanup;
	}
	if (!w.found) {
		snprintf(err, errlen, "records: unit %lld has a unit_end event "
			 "(seq %lld) but no row", (long long)it->unit_id, it->seq);
		goto cleanup;
	}
	json_object_set(w.msg, "steps", steps);
	snprintf(uid, 130, "%s", json_string_value(json_object_get(w.msg, "uid")) ?
		 json_string_value(json_object_get(w.msg, "uid")) : "");
	text = json_dumps(w.msg, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(12));
	if (!text)
		snprintf(err, errlen, "out of memory");
cleanup:
	json_decref(steps);
	json_decref(w.msg);
	return text;
}

/* ---- Delivery ---- */

/* Keep the start of the answer (printable ASCII only: it is the MES's
 * text, shown to the operator and written to the state file). */
static size_t keep_answer(char *p, size_t size, size_t n, void *ctx)
{
	st_mes *s = ctx;

	for (size_t i = 0; i < size * n && s->answer_len < MES_ANSWER_MAX; i++) {
		unsigned char c = (unsigned char)p[i];

		s->answer[s->answer_len++] = c == '\n' || c == '\r' || c == '\t' ? ' ' :
					      c < 0x20 || c > 0x7e ? '?' : (char)c;
	}
	s->answer[s->answer_len] = '\0';
	return size * n;
}

/* Is a refusal about this one message, so that sending it again can never
 * succeed?  A 4xx, except those that say something about the station's
 * configuration or the receiver's state, which hold for every unit alike
 * and pass when that is mended: 401/403/407 (the signature key or the
 * client certificate), 404/405/421 (mes.url), 408 (a timeout), 429 (too
 * many requests).  Those, 5xx, and a failed transport are retried. */
static bool rejected_for_good(long status)
{
	static const long retry[] = { 401, 403, 404, 405, 407, 408, 421, 429 };

	if (status < 400 || status > 499)
		return false;
	for (size_t i = 0; i < ST_ARRAY_SIZE(retry); i++)
		if (status == retry[i])
			return false;
	return true;
}

/* POST body once.  ST_OK on a 2xx; MES_REJECTED when the MES refused
 * this message for good (rejected_for_good; s->status and s->answer say
 * how); else ST_E_IO with err (the transport's error, or the status and
 * the start of the answer). */
static int post_once(st_mes *s, const char *body, const char *key, char *err,
		     size_t errlen)
{
	struct curl_slist *h = NULL;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	char line[600], hex[2 * EVP_MAX_MD_SIZE + 1];
	long status = 0;
	CURLcode cc;
	int rc = ST_E_IO;

	if (!s->curl && !(s->curl = curl_easy_init())) {
		snprintf(err, errlen, "libcurl could not start");
		return ST_E_NOMEM;
	}
	curl_easy_reset(s->curl);
	s->curl_err[0] = '\0';
	s->answer[0] = '\0';
	s->answer_len = 0;
	s->status = 0;
	h = curl_slist_append(h, "Content-Type: application/json");
	snprintf(line, sizeof(line), "Idempotency-Key: %s", key);
	h = curl_slist_append(h, line);
	snprintf(line, sizeof(line), "X-Station-Id: %s", s->cfg->station_id);
	h = curl_slist_append(h, line);
	if (s->keylen) {
		if (!HMAC(EVP_sha256(), s->key, (int)s->keylen,
			  (const unsigned char *)body, strlen(body), mac, &maclen)) {
			snprintf(err, errlen, "HMAC-SHA256 failed");
			rc = ST_E_CRYPTO;
			goto cleanup;
		}
		st_hex(mac, maclen, hex);
		snprintf(line, sizeof(line), "X-Station-Signature: sha256=%s", hex);
		h = curl_slist_append(h, line);
	}
	if (!h) {
		snprintf(err, errlen, "out of memory");
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	curl_easy_setopt(s->curl, CURLOPT_URL, s->m.url);
	curl_easy_setopt(s->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(s->curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(s->curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(s->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(s->curl, CURLOPT_TIMEOUT_MS, (long)s->m.timeout_ms);
	curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)s->m.timeout_ms);
	curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, s->curl_err);
	curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, keep_answer);
	curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, s);
	curl_easy_setopt(s->curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(s->curl, CURLOPT_SSL_VERIFYHOST, 2L);
	if (s->m.cafile)
		curl_easy_setopt(s->curl, CURLOPT_CAINFO, s->m.cafile);
	if (s->m.certfile) {
		curl_easy_setopt(s->curl, CURLOPT_SSLCERT, s->m.certfile);
		curl_easy_setopt(s->curl, CURLOPT_SSLKEY, s->m.keyfile);
	}
	cc = curl_easy_perform(s->curl);
	if (cc != CURLE_OK) {
		snprintf(err, errlen, "%s: %s", s->m.url,
			 s->curl_err[0] ? s->curl_err : curl_easy_strerror(cc));
		goto cleanup;
	}
	curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
	s->status = status;
	if (status < 200 || status > 299) {
		snprintf(err, errlen, "%s answered HTTP %ld%s%s", s->m.url, status,
			 s->answer[0] ? ": " : "", s->answer);
		if (rejected_for_good(status))
			rc = MES_REJECTED;
		goto cleanup;
	}
	rc = ST_OK;
cleanup:
	OPENSSL_cleanse(mac, sizeof(mac));
	curl_slist_free_all(h);
	return rc;
}

/* One unit's message by the configured transport, up to mes.retries
 * times, waiting 0.5 s, 1 s, ... between: the only place HTTP and MQTT
 * differ (the message, the cursor and the state file are shared).
 * MES_REJECTED (not retried) when the MES refused it for good. */
static int deliver(st_mes *s, const char *body, const char *key, char *err,
		size_t errlen)
{
	int wait = 500, rc = ST_E_IO;

	for (int i = 0; i < s->m.retries; i++) {
		if (i) {
			struct timespec ts = { wait / 1000, (long)(wait % 1000) * 1000000L };

			nanosleep(&ts, NULL);
			wait = wait * 2 > s->m.backoff_max_ms ? s->m.backoff_max_ms : wait * 2;
		}
		rc = s->m.mqtt_host ? mes_mqtt_send(s, body, key, err, errlen) :
				      post_once(s, body, key, err, errlen);
		if (rc != ST_E_IO)
			break;
	}
	return rc;
}

/* ---- Passes, the state file, the status ---- */

/* The cursor moves (and the file is on disk) before the next unit is
 * sent; error NULL for a success. */
static int note(st_mes *s, long long cursor, const char *error)
{
	json_t *o = st_sync_state_read(s->cfg, "mes");
	char now[32];
	int rc;

	mes_utc_now(now);
	if (cursor >= 0)
		json_object_set_new(o, "cursor", json_integer(cursor));
	if (error) {
		json_object_set_new(o, "last_error", json_string(error));
		json_object_set_new(o, "last_error_at", json_string(now));
	} else {
		json_object_set_new(o, "last_ok", json_string(now));
		json_object_del(o, "last_error");
		json_object_del(o, "last_error_at");
	}
	rc = st_sync_state_write(s->cfg, "mes", o);
	json_decref(o);
	return rc;
}

/* A message the MES refused for good: kept in the state file's
 * "rejected" list (its unit, key, device, the status and the start of the
 * answer) and the cursor moved past it in the same write, so it no longer
 * holds the units behind it and is never dropped unsaid. */
static int note_rejected(st_mes *s, const rec_outbox_item *it, const char *key,
			 const char *uid)
{
	json_t *o = st_sync_state_read(s->cfg, "mes"), *list, *e;
	char now[32];
	int rc;

	mes_utc_now(now);
	list = json_object_get(o, "rejected");
	if (!json_is_array(list)) {
		list = json_array();
		json_object_set_new(o, "rejected", list);
	}
	e = json_pack("{s:I, s:s, s:s, s:I, s:I, s:s, s:s}", "unit_id",
		      (json_int_t)it->unit_id, "key", key, "uid", uid,
		      "event_seq", (json_int_t)it->seq, "status", (json_int_t)s->status,
		      "answer", s->answer, "at", now);
	if (!e || json_array_append_new(list, e)) {
		json_decref(o);
		return ST_E_NOMEM;
	}
	json_object_set_new(o, "cursor", json_integer(it->seq));
	rc = st_sync_state_write(s->cfg, "mes", o);
	json_decref(o);
	return rc;
}

/* One mes process at a time changes <records>.mes.json (a pass, a
 * resend): an exclusive flock on <records>.mes.lock, waited for.  The fd,
 * or -1 with err. */
static int mes_lock(st_mes *s, char *err, size_t errlen)
{
	char path[1100];
	int fd;

	snprintf(path, sizeof(path), "%s.mes.lock", s->cfg->records_path);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || flock(fd, LOCK_EX)) {
		snprintf(err, errlen, "cannot lock %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static void mes_unlock(int fd)
{
	if (fd >= 0) {
		flock(fd, LOCK_UN);
		close(fd);
	}
}

static long long cursor_of(st_mes *s)
{
	json_t *o = st_sync_state_read(s->cfg, "mes");
	long long c = json_integer_value(json_object_get(o, "cursor"));

	json_decref(o);
	return c;
}

static int mes_pass(st_mes *s, st_mes_result *out, char *err, size_t errlen);

/* One unit's message, built from the records and delivered (key and uid
 * are its): ST_OK (out->sent counted); MES_REJECTED (out->rejected
 * counted, out->last_rejected says it); ST_E_DB (the records; err);
 * another error with err naming the unit and its key. */
static int send_unit(st_mes *s, const rec_outbox_item *it, char key[200],
		     char uid[130], st_mes_result *out, char *err, size_t errlen)
{
	char *body = message(s, it, key, 200, uid, err, errlen), why[700];
	int rc;

	if (!body)
		return ST_E_DB;
	rc = deliver(s, body, key, err, errlen);
	free(body);
	if (rc == ST_OK) {
		out->sent++;
	} else if (rc == MES_REJECTED) {
		out->rejected++;
		snprintf(out->last_rejected, sizeof(out->last_rejected),
			 "unit %lld (%s, device %s): %s", (long long)it->unit_id,
			 key, uid, err);
	} else {
		snprintf(why, sizeof(why), "unit %lld (%s): %s",
			 (long long)it->unit_id, key, err);
		snprintf(err, errlen, "%s", why);
	}
	return rc;
}

int st_mes_pass(st_mes *s, st_mes_result *out, char *err, size_t errlen)
{
	int fd, rc;

	memset(out, 0, sizeof(*out));
	if ((fd = mes_lock(s, err, errlen)) < 0)
		return ST_E_IO;
	rc = mes_pass(s, out, err, errlen);
	mes_unlock(fd);
	return rc;
}

static int mes_pass(st_mes *s, st_mes_result *out, char *err, size_t errlen)
{
	rec_outbox_item items[MES_BATCH_MAX];
	long long cursor = cursor_of(s);
	int n = 0, rc = ST_OK;

	do {
		rc = rec_outbox_list(s->r, cursor, s->m.batch, items, &n);
		if (rc) {
			snprintf(err, errlen, "records: %s", rec_errmsg(s->r));
			rc = ST_E_DB;
			break;
		}
		for (int i = 0; i < n && !rc; i++) {
			char key[200], uid[130];

			rc = send_unit(s, &items[i], key, uid, out, err, errlen);
			if (rc == ST_E_DB)
				break;
			if (rc == MES_REJECTED) {
				/* kept as rejected, said, and passed */
				cursor = items[i].seq;
				rc = note_rejected(s, &items[i], key, uid);
				if (rc) {
					snprintf(err, errlen, "cannot write %s.mes.json "
						 "(the cursor and the rejected unit %s)",
						 s->cfg->records_path, key);
					rc = ST_E_IO;
				}
			} else if (rc == ST_OK) {
				cursor = items[i].seq;
				if (note(s, cursor, NULL)) {
					snprintf(err, errlen, "cannot write %s.mes.json "
						 "(the cursor)", s->cfg->records_path);
					rc = ST_E_IO;
				}
			} else {
				note(s, -1, err);
			}
		}
	} while (!rc && n == s->m.batch);
	out->cursor = cursor;
	if (rec_outbox_lag(s->r, cursor, &out->pending, NULL) && !rc) {
		snprintf(err, errlen, "records: %s", rec_errmsg(s->r));
		rc = ST_E_DB;
	}
	if (!rc && !out->sent && !out->rejected)
		note(s, -1, NULL);
	if (!rc && s->m.mqtt_host)
		mes_mqtt_status(s, out);
	return rc;
}

/* The resend's work, under the lock: o is the state file's object. */
static int resend_in(st_mes *s, json_t *o, const char *key, st_mes_result *out,
		     char *err, size_t errlen)
{
	json_t *list = json_object_get(o, "rejected");
	bool found = false;
	int rc = ST_OK;

	for (size_t i = 0; i < json_array_size(list) && !rc;) {
		json_t *e = json_array_get(list, i);
		const char *k = json_string_value(json_object_get(e, "key"));
		rec_outbox_item it = {
			.seq = json_integer_value(json_object_get(e, "event_seq")),
			.unit_id = json_integer_value(json_object_get(e, "unit_id")) };
		char mkey[200], uid[130], now[32];

		if (!k || (key && strcmp(k, key))) {
			i++;
			continue;
		}
		found = true;
		rc = send_unit(s, &it, mkey, uid, out, err, errlen);
		if (rc == ST_E_DB)
			return rc;
		if (rc == ST_OK) {
			json_array_remove(list, i);
		} else if (rc == MES_REJECTED) {
			mes_utc_now(now);
			json_object_set_new(e, "status", json_integer(s->status));
			json_object_set_new(e, "answer", json_string(s->answer));
			json_object_set_new(e, "at", json_string(now));
			rc = ST_OK;
			i++;
		}
		/* each outcome on disk before the next unit is sent */
		if (st_sync_state_write(s->cfg, "mes", o)) {
			snprintf(err, errlen, "cannot write %s.mes.json (the rejected "
				 "list)", s->cfg->records_path);
			return ST_E_IO;
		}
	}
	if (!rc && key && !found) {
		snprintf(err, errlen, "no rejected unit '%s' (mes send --status lists "
			 "them)", key);
		return ST_E_NOTFOUND;
	}
	return rc;
}

int st_mes_resend(st_mes *s, const char *key, st_mes_result *out, char *err,
		  size_t errlen)
{
	json_t *o;
	int fd, rc;

	memset(out, 0, sizeof(*out));
	if ((fd = mes_lock(s, err, errlen)) < 0)
		return ST_E_IO;
	o = st_sync_state_read(s->cfg, "mes");
	rc = resend_in(s, o, key, out, err, errlen);
	out->cursor = json_integer_value(json_object_get(o, "cursor"));
	json_decref(o);
	if (rec_outbox_lag(s->r, out->cursor, &out->pending, NULL) && !rc) {
		snprintf(err, errlen, "records: %s", rec_errmsg(s->r));
		rc = ST_E_DB;
	}
	mes_unlock(fd);
	return rc;
}

int st_mes_follow(st_mes *s, st_mes_follow_fn fn, void *ctx, char *err,
		  size_t errlen)
{
	int backoff = 500, wait_ms, rc = ST_OK;
	sigset_t stop, old;

	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop, &old);
	for (;;) {
		st_mes_result res;
		struct timespec ts;

		rc = st_mes_pass(s, &res, err, errlen);
		if (rc == ST_E_CONFIG || rc == ST_E_DB || rc == ST_E_NOMEM)
			break;          /* retrying does not mend these */
		if (rc) {
			fn(ctx, rc, &res, err, backoff);
			wait_ms = backoff;
			backoff = backoff * 2 > s->m.backoff_max_ms ?
				  s->m.backoff_max_ms : backoff * 2;
		} else {
			if (res.sent || res.rejected)
				fn(ctx, ST_OK, &res, "", 0);
			backoff = 500;
			wait_ms = s->m.interval_ms;
		}
		ts.tv_sec = wait_ms / 1000;
		ts.tv_nsec = (long)(wait_ms % 1000) * 1000000L;
		if (sigtimedwait(&stop, NULL, &ts) >= 0) {
			rc = ST_OK;
			break;
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc;
}

int st_mes_status(st_mes *s, st_mes_state *out, char *err, size_t errlen)
{
	json_t *o = st_sync_state_read(s->cfg, "mes");
	const char *ok = json_string_value(json_object_get(o, "last_ok"));
	const char *bad = json_string_value(json_object_get(o, "last_error"));
	const char *bad_at = json_string_value(json_object_get(o, "last_error_at"));
	int rc = ST_OK;

	memset(out, 0, sizeof(*out));
	out->cursor = json_integer_value(json_object_get(o, "cursor"));
	if (s->m.mqtt_host)
		snprintf(out->url, sizeof(out->url), "mqtt%s://%s:%d/%s",
			 s->m.cafile ? "s" : "", s->m.mqtt_host, s->m.mqtt_port,
			 s->q.topic);
	else
		snprintf(out->url, sizeof(out->url), "%s", s->m.url);
	snprintf(out->last_ok, sizeof(out->last_ok), "%s", ok ? ok : "");
	snprintf(out->last_error, sizeof(out->last_error), "%s", bad ? bad : "");
	snprintf(out->last_error_at, sizeof(out->last_error_at), "%s",
		 bad_at ? bad_at : "");
	{
		json_t *list = json_object_get(o, "rejected"), *e;
		size_t n = json_array_size(list), first;

		out->rejected = (long long)n;
		first = n > ST_MES_REJECTED_SHOWN ? n - ST_MES_REJECTED_SHOWN : 0;
		for (size_t i = first; i < n; i++) {
			struct st_mes_rejected *d = &out->rejected_units[out->nshown++];
			const char *v;

			e = json_array_get(list, i);
			d->unit_id = json_integer_value(json_object_get(e, "unit_id"));
			d->status = (long)json_integer_value(json_object_get(e, "status"));
			v = json_string_value(json_object_get(e, "key"));
			snprintf(d->key, sizeof(d->key), "%s", v ? v : "");
			v = json_string_value(json_object_get(e, "uid"));
			snprintf(d->uid, sizeof(d->uid), "%s", v ? v : "");
			v = json_string_value(json_object_get(e, "answer"));
			snprintf(d->answer, sizeof(d->answer), "%s", v ? v : "");
			v = json_string_value(json_object_get(e, "at"));
			snprintf(d->at, sizeof(d->at), "%s", v ? v : "");
		}
	}
	if (rec_outbox_lag(s->r, out->cursor, &out->pending, &out->last)) {
		snprintf(err, errlen, "records: %s", rec_errmsg(s->r));
		rc = ST_E_DB;
	}
	json_decref(o);
	return rc;
}

/* mes_mqtt.c — the MES connector's MQTT transport (libmosquitto, MQTT v5;
 * docs/integration.md "MQTT"): the connection, TLS and its failures in
 * words, a unit's PUBLISH awaited to its PUBACK, the retained status and
 * the last will.  The message, the cursor and the state file are
 * station/mes.c's. */
#include "station/mes_int.h"

#include <errno.h>
#include <jansson.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base.h"

/* ---- The MQTT transport (libmosquitto, MQTT v5) ----
 * One connection, made when there is something to publish and dropped on
 * any failure (the next attempt makes a new one).  A unit counts as
 * delivered only on the PUBACK of its QoS 1 PUBLISH.  The will, set at
 * each connect, is the retained `offline` status. */

static void on_connect(struct mosquitto *m, void *ctx, int rc, int flags,
		       const mosquitto_property *props)
{
	st_mes *s = ctx;

	(void)m;
	(void)flags;
	(void)props;
	s->q.conn_rc = rc;
	s->q.connected = rc == 0 ? 1 : -1;
}

static void on_publish(struct mosquitto *m, void *ctx, int mid, int reason,
		       const mosquitto_property *props)
{
	st_mes *s = ctx;

	(void)m;
	(void)props;
	if (mid == s->q.wait_mid) {
		s->q.acked = 1;
		s->q.ack_reason = reason;
	}
}

/* libmosquitto's log: keep its last error line, which holds OpenSSL's
 * reason for a failed handshake ("certificate verify failed"). */
static void on_log(struct mosquitto *m, void *ctx, int level, const char *str)
{
	st_mes *s = ctx;

	(void)m;
	if (level == MOSQ_LOG_ERR && str)
		snprintf(s->q.lib_err, sizeof(s->q.lib_err), "%s", str);
}

/* "mqtts" when the connection is TLS, for messages. */
static const char *mqtt_scheme(const st_mes *s)
{
	return s->m.cafile ? "mqtts" : "mqtt";
}

/* A TLS connection the broker ended while we connected, before its
 * CONNACK: that is how a broker answers a client certificate it wants and
 * did not get or does not trust (with TLS 1.3 the handshake has already
 * "succeeded" on our side, so the alert comes with the CONNECT or after
 * it); say so, with OpenSSL's reason when libmosquitto logged one. */
static void lost_before_connack(st_mes *s, char *err, size_t errlen)
{
	snprintf(err, errlen, "mqtts://%s:%d closed the TLS connection before "
		 "accepting it%s%s%s: a broker that requires a client certificate "
		 "does so when %s; nothing was sent", s->m.mqtt_host, s->m.mqtt_port,
		 s->q.lib_err[0] ? " (" : "", s->q.lib_err, s->q.lib_err[0] ? ")" : "",
		 s->m.certfile ? "it does not trust ours: mes.tls_cert must be "
		 "issued by a CA the broker trusts" : "none is given: set mes.tls_cert "
		 "and mes.tls_key to a client certificate from a CA the broker trusts");
}

/* A TLS failure in words: the handshake, when the broker's certificate is
 * not trusted (another CA than mes.tls_ca, not for this host, expired) or
 * the broker refused ours; OpenSSL's reason from libmosquitto's log. */
static void tls_failed(st_mes *s, char *err, size_t errlen)
{
	/* the broker's alert about our certificate ("tlsv13 alert
	 * certificate required", "tlsv1 alert unknown ca"; our own check of
	 * its certificate reads "certificate verify failed") */
	if (strstr(s->q.lib_err, " alert ") &&
	    (strstr(s->q.lib_err, "certificate") || strstr(s->q.lib_err, "unknown ca"))) {
		lost_before_connack(s, err, errlen);
		return;
	}
	snprintf(err, errlen, "mqtts://%s:%d: the TLS handshake failed (%s): the "
		 "broker's certificate must chain to mes.tls_ca (%s) and name %s; "
		 "nothing was sent", s->m.mqtt_host, s->m.mqtt_port,
		 s->q.lib_err[0] ? s->q.lib_err : mosquitto_strerror(MOSQ_ERR_TLS),
		 s->m.cafile ? s->m.cafile : "-", s->m.mqtt_host);
}

/* What libmosquitto returns when the broker ends a TLS connection while
 * we connect: the connection lost, a protocol error, or EPROTO from the
 * socket layer under OpenSSL. */
static bool tls_ended_by_broker(const st_mes *s, int rc, int e)
{
	return s->m.cafile && (rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_PROTOCOL ||
			       (rc == MOSQ_ERR_ERRNO && e == EPROTO));
}

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run the network loop until *flag is set, for at most mes.timeout_ms. */
static int mqtt_wait(st_mes *s, const int *flag, const char *what, char *err,
		     size_t errlen)
{
	long long end = mono_ms() + s->m.timeout_ms;

	while (!*flag) {
		long long left = end - mono_ms();
		int rc;

		if (left <= 0) {
			snprintf(err, errlen, "%s://%s:%d: no %s within %d ms",
				 mqtt_scheme(s), s->m.mqtt_host, s->m.mqtt_port, what,
				 s->m.timeout_ms);
			return ST_E_IO;
		}
		rc = mosquitto_loop(s->q.m, left < 100 ? (int)left : 100, 1);
		if (rc == MOSQ_ERR_TLS) {
			tls_failed(s, err, errlen);
			return ST_E_IO;
		}
		if (flag == &s->q.connected && tls_ended_by_broker(s, rc, errno)) {
			lost_before_connack(s, err, errlen);
			return ST_E_IO;
		}
		if (rc != MOSQ_ERR_SUCCESS) {
			snprintf(err, errlen, "%s://%s:%d: waiting for the %s: %s",
				 mqtt_scheme(s), s->m.mqtt_host, s->m.mqtt_port, what,
				 rc == MOSQ_ERR_ERRNO ? strerror(errno) :
				 mosquitto_strerror(rc));
			return ST_E_IO;
		}
	}
	return ST_OK;
}

/* The station's status message (retained on station/<id>/status). */
static char *status_body(st_mes *s, const char *state, const st_mes_result *res)
{
	json_t *o = json_object();
	char now[32], *text;

	mes_utc_now(now);
	json_object_set_new(o, "schema", json_string("station-mes-status/1"));
	json_object_set_new(o, "station", json_string(s->cfg->station_id));
	json_object_set_new(o, "status", json_string(state));
	json_object_set_new(o, "at", json_string(now));
	if (res) {
		json_object_set_new(o, "lag", json_integer(res->pending));
		json_object_set_new(o, "cursor", json_integer(res->cursor));
		json_object_set_new(o, "last_unit", s->q.last_key[0] ?
				    json_string(s->q.last_key) : json_null());
	}
	text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	return text;
}

static int mqtt_publish(st_mes *s, const char *topic, const char *body,
			const char *key, bool retain, char *err, size_t errlen);

/* Close the connection: clean (a DISCONNECT after the retained `offline`
 * status) or not (dropped: the broker sends the will). */
void mes_mqtt_close(st_mes *s, bool clean)
{
	if (!s->q.m)
		return;
	if (clean && s->q.connected == 1) {
		char e[300], *off = status_body(s, "offline", s->q.have_last ?
						&s->q.last_res : NULL);

		if (off && mqtt_publish(s, s->q.status_topic, off, NULL, true, e,
					sizeof(e)) == ST_OK) {
			mosquitto_disconnect_v5(s->q.m, MQTT_RC_NORMAL_DISCONNECTION, NULL);
			mosquitto_loop(s->q.m, 50, 1);
		}
		free(off);
	}
	if (s->q.m)
		mosquitto_destroy(s->q.m);
	s->q.m = NULL;
	s->q.connected = 0;
}

static int mqtt_connect(st_mes *s, char *err, size_t errlen)
{
	char *will = NULL;
	int rc;

	if (s->q.m && s->q.connected == 1)
		return ST_OK;
	mes_mqtt_close(s, false);
	s->q.m = mosquitto_new(s->cfg->station_id, true, s);
	will = status_body(s, "offline", NULL);
	if (!s->q.m || !will) {
		free(will);
		snprintf(err, errlen, "out of memory");
		return ST_E_NOMEM;
	}
	mosquitto_int_option(s->q.m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_connect_v5_callback_set(s->q.m, on_connect);
	mosquitto_publish_v5_callback_set(s->q.m, on_publish);
	mosquitto_log_callback_set(s->q.m, on_log);
	s->q.lib_err[0] = '\0';
	rc = mosquitto_will_set_v5(s->q.m, s->q.status_topic, (int)strlen(will),
				   will, 1, true, NULL);
	free(will);
	if (rc == MOSQ_ERR_SUCCESS && s->m.mqtt_user)
		rc = mosquitto_username_pw_set(s->q.m, s->m.mqtt_user, s->q.pass);
	if (rc == MOSQ_ERR_SUCCESS && s->m.cafile)
		rc = mosquitto_tls_set(s->q.m, s->m.cafile, NULL, s->m.certfile,
				       s->m.keyfile, NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		snprintf(err, errlen, "mqtt: cannot set the connection up (%s): "
			 "check mes.tls_* and mes.mqtt_*", mosquitto_strerror(rc));
		mes_mqtt_close(s, false);
		return ST_E_CONFIG;
	}
	s->q.connected = 0;
	rc = mosquitto_connect(s->q.m, s->m.mqtt_host, s->m.mqtt_port, 30);
	if (rc == MOSQ_ERR_TLS) {
		tls_failed(s, err, errlen);
		mes_mqtt_close(s, false);
		return ST_E_IO;
	}
	if (tls_ended_by_broker(s, rc, errno)) {
		lost_before_connack(s, err, errlen);
		mes_mqtt_close(s, false);
		return ST_E_IO;
	}
	if (rc != MOSQ_ERR_SUCCESS) {
		snprintf(err, errlen, "%s://%s:%d: %s", mqtt_scheme(s),
			 s->m.mqtt_host, s->m.mqtt_port, rc == MOSQ_ERR_ERRNO ? strerror(errno) :
			 mosquitto_strerror(rc));
		mes_mqtt_close(s, false);
		return ST_E_IO;
	}
	rc = mqtt_wait(s, &s->q.connected, "CONNACK", err, errlen);
	if (!rc && s->q.connected < 0) {
		snprintf(err, errlen, "%s://%s:%d refused the connection: %s",
			 mqtt_scheme(s), s->m.mqtt_host, s->m.mqtt_port,
			 mosquitto_reason_string(s->q.conn_rc));
		rc = ST_E_IO;
	}
	if (rc)
		mes_mqtt_close(s, false);
	return rc;
}

/* One QoS 1 PUBLISH, ST_OK only on its PUBACK with a success reason. */
static int mqtt_publish(st_mes *s, const char *topic, const char *body,
			const char *key, bool retain, char *err, size_t errlen)
{
	mosquitto_property *props = NULL;
	int mid = 0, rc;

	if (key && (mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY,
							"idempotency-key", key) ||
		    mosquitto_property_add_string(&props, MQTT_PROP_CONTENT_TYPE,
						  "application/json"))) {
		mosquitto_property_free_all(&props);
		snprintf(err, errlen, "out of memory");
		return ST_E_NOMEM;
	}
	s->q.acked = 0;
	rc = mosquitto_publish_v5(s->q.m, &mid, topic, (int)strlen(body), body, 1,
				  retain, props);
	mosquitto_property_free_all(&props);
	if (rc != MOSQ_ERR_SUCCESS) {
		snprintf(err, errlen, "%s://%s:%d: publishing to %s: %s",
			 mqtt_scheme(s), s->m.mqtt_host, s->m.mqtt_port, topic,
			 mosquitto_strerror(rc));
		return ST_E_IO;
	}
	s->q.wait_mid = mid;
	rc = mqtt_wait(s, &s->q.acked, "PUBACK", err, errlen);
	if (!rc && s->q.ack_reason >= 128) {
		snprintf(err, errlen, "%s://%s:%d refused the message on %s: %s",
			 mqtt_scheme(s), s->m.mqtt_host, s->m.mqtt_port, topic,
			 mosquitto_reason_string(s->q.ack_reason));
		rc = ST_E_IO;
	}
	return rc;
}

/* A unit's message over MQTT: connect if needed, publish, wait for the
 * PUBACK; any failure drops the connection. */
int mes_mqtt_send(st_mes *s, const char *body, const char *key, char *err,
		  size_t errlen)
{
	int rc = mqtt_connect(s, err, errlen);

	if (!rc)
		rc = mqtt_publish(s, s->q.topic, body, key, false, err, errlen);
	if (rc)
		mes_mqtt_close(s, false);
	else
		snprintf(s->q.last_key, sizeof(s->q.last_key), "%s", key);
	return rc;
}

/* After a pass that went well: the retained `online` status with the lag. */
void mes_mqtt_status(st_mes *s, const st_mes_result *res)
{
	char e[700], *body;

	s->q.last_res = *res;
	s->q.have_last = true;
	if (mqtt_connect(s, e, sizeof(e)))
		return;
	body = status_body(s, "online", res);
	if (!body || mqtt_publish(s, s->q.status_topic, body, NULL, true, e, sizeof(e)))
		mes_mqtt_close(s, false);
	free(body);
}


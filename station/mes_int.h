/* mes_int.h — what the MES connector's files share (station/mes.c: the
 * configuration, the message, HTTP delivery, passes and the state file;
 * station/mes_mqtt.c: the MQTT transport).  Not a public header. */
#ifndef ST_MES_INT_H
#define ST_MES_INT_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>

#include "records/records.h"
#include "station/station.h"

#define MES_KEY_MAX 1024        /* longest HMAC key file, bytes */
#define MES_REJECTED 1          /* deliver(): the MES refused the message
				 * for good (a permanent 4xx) */
#define MES_ANSWER_MAX 160      /* the start of an answer kept for the
				 * operator */
#define MES_BATCH_MAX 1000      /* mes.batch's top (schema_tables.c) */

/* The `mes` group of station.conf; strings owned. */
typedef struct mes_cfg {
	char *url;              /* mes.url: where results are POSTed */
	char *key_file;         /* mes.hmac_key_file */
	char *cafile, *certfile, *keyfile;  /* mes.tls_* */
	char *mqtt_host, *mqtt_topic, *mqtt_user, *mqtt_pass_file;
	int mqtt_port;
	int timeout_ms, retries, batch, interval_ms, backoff_max_ms;
} mes_cfg;

/* The MQTT transport's connection (docs/integration.md "MQTT"). */
typedef struct mes_mqtt {
	struct mosquitto *m;
	char topic[300], status_topic[300];
	char pass[MES_KEY_MAX];
	int connected;          /* 1 CONNACK ok, -1 refused, 0 waiting */
	int conn_rc;            /* the CONNACK's reason */
	int wait_mid, acked, ack_reason;
	char last_key[200];     /* the last unit acknowledged by the broker */
	char lib_err[256];      /* libmosquitto's last error line (its TLS
				 * errors name OpenSSL's reason there only) */
	st_mes_result last_res; /* the last pass's, for the closing status */
	bool have_last;
} mes_mqtt;

struct st_mes {
	st_station *st;
	const st_config *cfg;
	mes_cfg m;
	rec_store *r;
	CURL *curl;             /* kept across posts: one connection */
	unsigned char key[MES_KEY_MAX];
	size_t keylen;          /* 0: no signature header */
	char curl_err[CURL_ERROR_SIZE];
	char answer[MES_ANSWER_MAX + 1];  /* the start of the last answer */
	size_t answer_len;
	long status;            /* the last answer's HTTP status */
	mes_mqtt q;             /* used when m.mqtt_host is set */
};

/* Now, UTC, ISO 8601 ("2026-12-07T10:02:14Z"). */
void mes_utc_now(char out[32]);

/* ---- station/mes_mqtt.c ---- */
/* body to the broker as a unit's message (QoS 1, its PUBACK awaited):
 * ST_OK, or ST_E_IO with err (the connection is dropped). */
int mes_mqtt_send(st_mes *s, const char *body, const char *key, char *err,
		  size_t errlen);
/* The retained status after a pass (online, the lag); quiet on failure. */
void mes_mqtt_status(st_mes *s, const st_mes_result *res);
/* Drop the connection; clean: say offline first (a clean end). */
void mes_mqtt_close(st_mes *s, bool clean);

#endif

/* sync.h — the engine's side of the central copy of the records
 * (docs/sync.md, station/sync.c): the `sync` group of station.conf, the
 * state file of the last sync, the lag line for a status header, and the
 * work-order quota shared with other stations for a provisioning run.
 * Engine-internal: front ends reach it through st_station. */
#ifndef ST_SYNC_H
#define ST_SYNC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "records/pgsync.h"
#include "records/records.h"
#include "station/st_int.h"

/* The `sync` group of station.conf.  Strings are owned (st_sync_config_free). */
typedef struct st_sync_cfg {
	bool configured;          /* the group is there */
	char *conninfo;           /* sync.conninfo: libpq string, no password */
	char *passfile;           /* sync.passfile (else PGPASSFILE, ~/.pgpass) */
	char *sslmode, *sslrootcert, *sslcert, *sslkey; /* sync.ssl* (TLS) */
	bool offline_allowance;   /* sync.offline = "allowance" (else "stop") */
	long allowance;           /* sync.allowance: units pre-reserved */
	int batch;                /* sync.batch: events per transaction */
	int interval_ms;          /* sync.interval_ms: --follow's pause */
	int backoff_max_ms;       /* sync.backoff_max_ms: longest retry wait */
	int connect_timeout_s;    /* sync.connect_timeout_s */
} st_sync_cfg;

/* Read the sync group of the configuration file at path (NULL or no
 * group: out->configured false, ST_OK).  ST_E_CONFIG with err naming the
 * file and the setting. */
int st_sync_config_load(const char *path, st_sync_cfg *out, char *err,
			size_t errlen);
void st_sync_config_free(st_sync_cfg *c);

/* The connection options of pgsync for s and the station of cfg. */
pgs_opts st_sync_opts(const st_sync_cfg *s, const st_config *cfg);

/* The state file "<records>.<what>.json": read (an empty object when
 * missing or unreadable; the caller decrefs), replaced whole. */
json_t *st_sync_state_read(const st_config *cfg, const char *what);
int st_sync_state_write(const st_config *cfg, const char *what, json_t *o);

/* Note what a sync did in the state file: error NULL for success. */
void st_sync_note_result(const st_config *cfg, const pgs_result *res,
			 const char *error);

/* One line for a status header: "sync: up to date (12:03:04Z)", "sync: 42
 * events / 3 units behind; last error ...", or "" when this store was never
 * synced.  Reads the local store and the sync state file (no network): an
 * SQLite query and a file read, so a UI asks now and then, not per redraw. */
void st_sync_lag(const st_config *cfg, rec_store *rec, char *buf, size_t len);

/* The shared quota for a provisioning run (st_run.quota). */
typedef struct st_sync_quota st_sync_quota;

/* Set up the shared quota of work_order for a run when the configuration
 * at config_path has a sync group (else *out NULL, ST_OK): connect (an
 * unreachable server is not an error: the offline policy decides per
 * unit), make the work order known on both sides (created locally from the
 * central one when missing), and with sync.offline = "allowance" top this
 * station's pre-reserved allowance up.  ST_E_CONFIG / ST_E_NOTFOUND /
 * ST_E_EXISTS with err. */
int st_sync_quota_open(const char *config_path, const st_config *cfg,
		       rec_store *rec, const char *work_order,
		       st_sync_quota **out, char *err, size_t errlen);
const st_quota_hook *st_sync_quota_hook(st_sync_quota *q);
void st_sync_quota_close(st_sync_quota *q);

#endif

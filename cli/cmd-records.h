/* cmd-records.h — the work of `station records ...` and `station audit
 * ...` (cmd-records.c); the dispatcher parses the options and hands them
 * over in a st_rec_cli. */
#ifndef ST_CMD_RECORDS_H
#define ST_CMD_RECORDS_H

#include <stdbool.h>

#include "station/station.h"

typedef struct st_rec_cli {
	const st_config *cfg;
	const char *work_order, *since, *until, *result, *uid;
	const char *format;        /* table, jsonl, csv */
	const char *evidence;      /* export --evidence DIR */
	const char *ca_cert;       /* verify --ca-cert FILE */
	const char *anchor;        /* verify --anchor HASH: must be in the chain */
	const char *checkpoint;    /* verify --checkpoint FILE: a signed head the
				    * chain must still hold */
	const char *out;           /* audit init --out FILE */
	long quota;                /* workorder create --quota N; -1 none */
	const char *config_path;   /* the configuration file (its sync group) */
	bool sync_once, sync_follow, sync_status; /* records sync --once ... */
	bool pg;                   /* verify --pg: the central copy */
	const char *component;     /* units --component NAME[@VERSION] */
	void *ctx;
	st_station *st;            /* the station: its login stays its own */
	/* Log the station in to the HSM (the PIN); 0 or an exit code after
	 * printing the reason. */
	int (*login)(void *ctx);
} st_rec_cli;

#endif

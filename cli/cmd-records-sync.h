/* cmd-records-sync.h — the commands of the central copy of the records
 * (docs/sync.md): `station records sync [--once|--follow|--status]`,
 * `station records verify --pg` and the central side of `records
 * workorder`.  The engine's side (configuration, lag, shared quota) is
 * station/sync.h. */
#ifndef ST_CMD_SYNC_H
#define ST_CMD_SYNC_H

#include "cli/cmd-records.h"

/* station records sync [--once|--follow|--status]: returns the exit code. */
int st_cmd_sync(st_rec_cli *c);

/* records workorder create with a sync group: the work order goes to the
 * central database too (an existing one must have the same quota).  0 or
 * an exit code after saying why; 0 without a sync group. */
int st_sync_workorder_put(st_rec_cli *c, const char *id, long quota);

/* records workorder show with a sync group: the central figures (a line,
 * or a note that the server is unreachable).  0 or an exit code. */
int st_sync_workorder_show(st_rec_cli *c, const char *id);

/* station records units --component X --pg: the central copy's units
 * with that component, each handed to fn.  0 or an exit code. */
int st_sync_units_component(st_rec_cli *c, st_records_component_fn fn, void *ctx);

/* station records verify --pg: every station's chain held centrally. */
int st_cmd_verify_pg(st_rec_cli *c);

#endif

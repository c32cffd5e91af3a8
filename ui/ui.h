/* ui.h — the technician's terminal UI (ncurses).
 *
 * A front end to the engine and nothing more: it shows the engine's events
 * (header, one panel per slot, log, last units) and sends the engine the
 * operator's commands (log in, work order, arm fuse burning, start/stop a
 * slot, retry/skip/quarantine a failed unit).  The engine's workers report
 * from their own threads; their events reach the UI thread through a queue
 * and a pipe, so keys are answered while slots are busy.  While ncurses owns
 * the screen, logs (and stderr) go to a log file. */
#ifndef ST_UI_H
#define ST_UI_H

#include "station/station.h"

/* What the UI works with; everything stays owned by the caller. */
typedef struct ui_opts {
	st_station *st;            /* configuration, HSM login, records, sync */
	const st_profile *prof;
	const char *const *ports;  /* programmer URIs, one per slot */
	int nslots;
	const char *log_path;      /* the UI's log file (appended, 0600) */
} ui_opts;

/* Keep the terminal safe from a crashing UI: forks; the parent waits for
 * the child and, if it died on a signal, restores the terminal modes and
 * screen and says so.  Returns 0 in the child (go on and run the UI), 1 in
 * the parent with the child's exit code in *code, -1 if it cannot fork.
 * Call before opening anything the UI will use (records, HSM). */
int ui_guard(const char *log_path, int *code);

/* Run the full-screen UI until the operator quits or a signal; returns a
 * process exit code (0, or 128 + the signal that ended it). */
int ui_main(const ui_opts *opts);

#endif

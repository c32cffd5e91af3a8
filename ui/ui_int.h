/* ui_int.h — what the UI's own files share (not a public header). */
#ifndef ST_UI_INT_H
#define ST_UI_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ui/ui.h"

#define UI_LOG_LINES 200
#define UI_RECENT 64
#define UI_MAX_STEPS 12
#define UI_IN_MAX 64
#define UI_SYNC_MS 2000   /* how often the header reads the sync lag */
#define UI_PIN_TRIES 2    /* wrong PINs before the UI stops asking */

/* One engine event copied for the UI thread; strings are escaped copies. */
struct ui_ev {
	struct ui_ev *next;
	st_event_kind kind;
	int slot;
	int err;
	st_cause cause;
	int64_t elapsed_ms;
	st_step step;
	st_outcome outcome;
	st_verdict result;
	st_fuses fuses;
	char *uid, *detail, *cert_serial;
};

/* Events from the workers to the UI thread: a list under a mutex, and a
 * pipe whose read end wakes the UI's poll(). */
struct ui_queue {
	pthread_mutex_t lock;
	struct ui_ev *head, *tail;
	int rfd, wfd;
	bool utf8;      /* the engine's text keeps its UTF-8 (ui_text_dup) */
};

/* A unit's verdict as the UI keeps it (the engine's st_verdict, with V_NONE
 * for a panel that has none yet: ui_verdict_of). */
enum ui_verdict { V_NONE, V_PASS, V_UNFUSED, V_FAIL, V_QUARANTINE };

enum ui_slot_state {
	SL_OFF,       /* no run yet, or the run ended */
	SL_IDLE,      /* programmer open, no unit in work */
	SL_BUSY,      /* a unit in work */
	SL_VERDICT,   /* the last unit's verdict is shown */
	SL_HELD,      /* a unit that did not pass waits for the operator */
	SL_ERROR,     /* the slot stopped on an error */
};

enum ui_step_state { STP_TODO, STP_OK, STP_FAIL, STP_SKIP };

struct ui_slot {
	char port[128];
	char uid[40];
	enum ui_slot_state state;
	unsigned char steps[UI_MAX_STEPS];  /* enum ui_step_state per step */
	enum ui_verdict verdict;  /* the last unit's (V_NONE: none yet) */
	st_cause cause;      /* why the unit did not pass, or the slot stopped */
	st_cause slot_cause; /* the slot stopped after the verdict (the link) */
	bool skipped;        /* the unit was not provisioned (on record) */
	bool stopped;        /* stopped by the operator */
	bool ready;          /* the programmer waits for the next unit */
	char reason[600];    /* the engine's words: the log and the details */
	char note[160];      /* idle reason, held hint, skip note */
	char failed_step[32];
	long quota, quota_done;  /* a full work order's counts */
	int64_t t0, elapsed_ms;
	int64_t step_t0;     /* when the current step began (per-step time) */
};

/* One finished unit, as the engine reported it (after it was recorded). */
struct ui_recent {
	char when[16];
	int slot;
	char uid[40];
	enum ui_verdict result;
	char serial[48];
	char fuses[16];
	char wo[UI_IN_MAX];
	int64_t ms;
};

enum ui_mode { M_NAME, M_PIN, M_OPPW, M_WO, M_ARM, M_MAIN, M_QUIT, M_MSG,
	       /* an unknown work order, created by a supervisor (docs/tui.md) */
	       M_WO_NEW, M_WO_QUOTA, M_WO_SUP, M_WO_PW,
	       /* a supervisor releases a quarantined unit (docs/roles.md) */
	       M_REL_UID, M_REL_WHY, M_REL_SUP, M_REL_PW };

struct ui {
	const ui_opts *o;
	struct ui_queue q;
	int sigfd, logfd;
	enum ui_mode mode, after_msg;
	char in[UI_IN_MAX];         /* the line being typed (never the PIN) */
	size_t inlen;
	char pin[256];              /* the PIN (or the operator's password) being
				     * typed; wiped after use */
	size_t pinlen;
	char msg[600];              /* dialog message / error */
	bool msg_error;
	char operator_name[UI_IN_MAX];
	char work_order[UI_IN_MAX];  /* the running one (the engine reads it) */
	char wo_new[UI_IN_MAX];      /* scanned, waiting for the arming answer */
	long wo_quota;               /* the quota typed for a new work order */
	st_workorder_info wo_info;   /* the scanned work order's counts */
	bool bell_on_fail;           /* beep on FAIL and QUARANTINE */
	int pin_tries;               /* wrong PINs typed in this UI */
	int pin_state;               /* enum ui_pin: the token's counter */
	bool logged_in, armed;
	bool op_auth;               /* checked against the signed operator list */
	char rel_uid[UI_IN_MAX];    /* the release being asked for */
	char rel_why[UI_IN_MAX];
	char rel_sup[UI_IN_MAX];
	const st_config *cfg;       /* the station's (st_station_config) */
	char ca_name[128];
	int ca_days;
	st_run run;
	st_run_handle *rh;
	char sync_lag[256];         /* the header's sync lag, "" if never synced */
	int64_t sync_at;            /* st_now_ms() it was read; 0: read it now */
	int64_t run_t0;
	int nsteps;
	const char *const *steps;
	struct ui_slot slots[ST_MAX_SLOTS];
	int sel;                    /* selected slot, 0-based */
	int pass, fail, quarantine;
	int unfused;          /* provisioned, not locked (unarmed run) */
	char log[UI_LOG_LINES][200];
	int nlog, loghead;
	struct ui_recent recent[UI_RECENT];
	int nrecent;
	bool show_records;
	bool color, utf8;
	bool quit;
};

/* The token's user-PIN counter as the UI shows it. */
enum ui_pin { PIN_OK, PIN_COUNT_LOW, PIN_FINAL_TRY, PIN_LOCKED };

/* draw.c */
void ui_colors(struct ui *u);
void ui_draw(struct ui *u);
/* The verdict's word ("PASS", ...; "" for V_NONE). */
const char *ui_verdict_word(enum ui_verdict v);

/* What the panel of slot i tells the technician: the cause in plain
 * words (may be "") and the action, never cut (docs/tui.md). */
void ui_advice(const struct ui *u, int i, char *cause, size_t clen,
	       char *action, size_t alen, bool narrow);

/* ui.c */
int ui_busy_slots(const struct ui *u);

/* A malloc'd copy of s for display: printable ASCII stays, anything else
 * (control bytes, escape sequences, non-ASCII) becomes \xNN, so a device
 * cannot drive the terminal.  NULL stays NULL (and on out of memory). */
char *ui_escape_dup(const char *s);

/* Like ui_escape_dup for the engine's own text (which may quote a device's
 * sanitised strings): printable UTF-8 stays when utf8 is true (the
 * station's em-dash), control bytes, escape sequences, C1 controls and
 * invalid UTF-8 become \xNN; with utf8 false a dash becomes '-' and any
 * other non-ASCII character \xNN. */
char *ui_text_dup(const char *s, bool utf8);

/* The verdict an event's result word names (V_FAIL for an unknown one). */
enum ui_verdict ui_verdict_of(st_verdict result);

#endif

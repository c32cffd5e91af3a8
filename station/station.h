/* station.h — the engine: configuration, product profile, CA operations and
 * the per-unit provisioning state machine run on one worker per slot.
 *
 * The CLI and the UI call this; it calls hsm/, device-drivers/ and records/,
 * whose types stay out of this header: what takes them is declared in
 * station/st_int.h, for the engine's own files.
 * The engine reports what happens only through st_event callbacks, so a
 * front end never reads engine internals. */
#ifndef ST_STATION_H
#define ST_STATION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>


#define ST_MAX_SLOTS 64

/* Station configuration (station.conf, libconfig syntax).  Strings are
 * owned by the st_config and freed by st_config_free(). */
typedef struct st_config {
	char *station_id;      /* station.id */
	char *hsm_module;      /* hsm.module: PKCS#11 module path */
	char *token_label;     /* hsm.token: a label or an RFC 7512 pkcs11: URI */
	char *hsm_init_args;   /* hsm.init_args: C_Initialize pReserved (NULL: none) */
	char *ca_label;        /* hsm.ca_key: label of the issuing CA key+cert; NULL:
				* `ca` commands use "issuing-ca", provisioning the
				* newest valid CA in the token */
	char *records_path;    /* records.path: SQLite file */
	char *cert_dir;        /* records.cert_dir: PEM copies of issued certs (optional) */
	char *checkpoint_dir;  /* records.checkpoint_dir: signed checkpoints of the
				* chain's head (NULL: <records_path>.checkpoints) */
	char *profile_path;    /* profile: product profile file */
	int timeout_ms;        /* programmer.timeout_ms */
	int retries;           /* programmer.retries as drv_opts takes it (-1: none) */
	char *log_file;        /* station.log_file (NULL: beside the records) */
	/* slots: the programmers used when no --slot is given. */
	struct st_slot_conf {
		char *name;    /* slots[].name, or "slot N" */
		char *uri;     /* driver + port, as --slot takes it */
	} slots[ST_MAX_SLOTS];
	int nslots;
	bool burn_fuses;       /* defaults.burn_fuses */
	int units;             /* defaults.units (0: until empty) */
	int plug_wait_ms;      /* defaults.plug_wait_s, in ms */
	/* Signed profiles and roles (docs/profiles.md, docs/roles.md): */
	char **profile_keys;   /* trust.profile_keys: PEM public keys (or
				* certificates) of the engineering keys whose
				* signatures this station accepts */
	size_t nprofile_keys;
	char *engineering_key; /* trust.engineering_key: default HSM key label
				* for `profile sign` (optional) */
	char *operators_path;  /* roles.operators: the signed operator list */
	bool roles_require;    /* roles.require: every run needs an
				* authenticated operator */
	bool ui_bell_on_fail;  /* ui.bell_on_fail: the TUI beeps on FAIL */
	char *labels_dir;      /* labels.dir: a PASS unit's label goes here (NULL: none) */
	char *labels_queue;    /* labels.queue: CUPS queue for the ZPL (NULL: none) */
	char *labels_server;   /* labels.server: the CUPS server of that queue,
				* HOST[:PORT] (NULL: lp's own default) */
} st_config;

/* Load cfg from path (NULL: defaults only), checked against the documented
 * schema (docs/configuration.md).  On ST_E_CONFIG err gets the first
 * problem with the file, line and setting, and how many more there are. */
int st_config_load(const char *path, st_config *cfg, char *err, size_t errlen);
void st_config_free(st_config *cfg);

/* A key named by an RFC 7512 URI ("pkcs11:object=issuing-ca;type=private")
 * is replaced in *name by the label it names (the station finds keys and
 * their certificates by label); a plain label is left alone.  ST_E_CONFIG
 * with the reason in err when the URI does not name an object label. */
int st_config_key_label(char **name, char *err, size_t errlen);

/* `station config check`: check the configuration at config_path and the
 * profile at profile_path (NULL: the one the configuration names, if any)
 * against their schemas and rules, including that referenced files exist.
 * Every problem is one line "FILE:LINE: 'setting' what" on problems (a
 * FILE *); on success one summary line goes to ok (a FILE *).  Returns the
 * number of problems (0: valid), or a negative st_err. */
int st_config_check(const char *config_path, const char *profile_path,
		    void *problems, void *ok);

/* The udev rules, from the drivers' USB id tables (station/udev.c).  With
 * adapters NULL: the packaged rules' body — every programmer's own USB id,
 * never a generic USB-serial bridge.  Else the rules claiming exactly the
 * n bridges named "serial:USB_SERIAL" or "path:ID_PATH" (err says which
 * entry is malformed: ST_E_CONFIG).  out is a FILE *. */
int st_udev_rules(void *out, const char *const *adapters, size_t n, char *err,
		  size_t errlen);
/* `station config udev`: the site's rules snippet for udev.adapters of the
 * configuration at config_path, to out (a FILE *). */
int st_config_udev(const char *config_path, void *out, char *err, size_t errlen);

/* `station config schema`: every setting of both files as Markdown tables
 * (the generated part of docs/configuration.md) to out (a FILE *). */
void st_config_schema_print(void *out);
/* The same for the man pages: one file's settings as roff (.TP entries),
 * the profile's when profile, else station.conf's. */
void st_config_schema_print_man(void *out, bool profile);

/* Get the HSM user PIN without it ever touching argv or a log: from the
 * file pin_file when given (first line), else the environment variable
 * STATION_PIN (which is then removed from the environment), else a no-echo
 * prompt on the controlling terminal.  pin gets the bytes (not
 * NUL-terminated), *len their count; the caller wipes pin with st_wipe(). */
int st_pin_get(const char *pin_file, const char *token_label, char *pin,
	       size_t cap, size_t *len, char *err, size_t errlen);

/* A product profile: what to put in the certificate and which root-of-trust
 * hash to burn.  Opaque; loaded from a libconfig file. */
typedef struct st_profile st_profile;

int st_profile_load(const char *path, st_profile **out, char *err, size_t errlen);
void st_profile_free(st_profile *p);
const char *st_profile_name(const st_profile *p);
/* The profile's version ("" for a profile written before versions). */
const char *st_profile_version(const st_profile *p);
/* quota.require_work_order: a batch run needs a work order. */
bool st_profile_requires_work_order(const st_profile *p);
/* algorithms.ca_key: the key type ("p384", ...) the issuing CA must have,
 * or NULL for any. */
const char *st_profile_ca_key(const st_profile *p);
/* SHA-256 of the profile file as loaded, hex. */
const char *st_profile_digest(const st_profile *p);

/* The measurements a unit records (docs/integration.md, "Measured
 * steps"), OpenHTF-style: a value with its unit, checked against the
 * profile's `measurements` limits when it has some. */
typedef enum st_meas {
	ST_MEAS_VPP_MV,         /* programming voltage (drv_get_conditions) */
	ST_MEAS_TEMP_C,         /* die temperature (drv_get_conditions) */
	ST_MEAS_KEYGEN_MS,      /* device key generation or injection */
	ST_MEAS_IMAGE_WRITE_MS, /* firmware images written and checked */
	ST_MEAS_ATTEST_MS,      /* end-of-line attestation */
	ST_MEAS_LINK_RETRIES,   /* re-sends on the programmer link, the unit's */
	ST_MEAS_COUNT
} st_meas;

/* "keygen_ms", ... (the profile's measurements.NAME and the records'). */
const char *st_meas_name(st_meas m);
/* Its unit: "mV", "C", "ms", "count". */
const char *st_meas_unit(st_meas m);
/* The profile's [low, high] for m: false when it sets none. */
bool st_profile_meas_limits(const st_profile *p, st_meas m, double *low,
			    double *high);
/* The route check (profile `route` group): its URL template, NULL when the
 * profile has none; the timeout; the policy when the MES does not answer
 * (true: stop, false: allow and flag). */
const char *st_profile_route_url(const st_profile *p);
int st_profile_route_timeout_ms(const st_profile *p);
bool st_profile_route_stop(const st_profile *p);
/* Target options the profile gives drivers (TPM handles), or NULL. */
const char *st_profile_target_opts(const st_profile *p);
/* Certificate subject organisation and validity in days. */
const char *st_profile_org(const st_profile *p);
int st_profile_validity_days(const st_profile *p);
/* The issuing CA label the profile names (certificate.issuer), or NULL:
 * then the configured hsm.ca_key, else the newest valid CA in the token. */
const char *st_profile_issuer(const st_profile *p);
/* Days before the CA's notAfter from which a run warns (default 30). */
int st_profile_ca_renewal_days(const st_profile *p);
/* The device certificate profile (engine-internal type, see x509.h). */
typedef struct st_cert_profile st_cert_profile;
const st_cert_profile *st_profile_cert(const st_profile *p);
/* key_mode = "inject": the HSM makes the device key and injects it
 * wrapped (for devices that cannot generate keys); default "device". */
bool st_profile_key_inject(const st_profile *p);
/* Root-of-trust hash (32 bytes) and the fuse bank it goes into. */
const uint8_t *st_profile_rot_hash(const st_profile *p, unsigned *bank);


/* ---- Secrets from a file, the environment or a no-echo prompt (pin.c) ---- */

typedef struct st_secret_src {
	const char *file;       /* read its first line when set */
	const char *env;        /* else this variable (removed once read) */
	const char *file_opt;   /* the option naming file, for messages */
	const char *what;       /* "PIN", "password", for messages */
	const char *prompt;     /* else ask on /dev/tty with echo off */
} st_secret_src;

/* The secret (not NUL-terminated) into buf, *len its length; never from
 * argv.  The caller wipes buf with st_wipe(). */
int st_secret_get(const st_secret_src *src, char *buf, size_t cap, size_t *len,
		  char *err, size_t errlen);

/* A new yescrypt hash ("$y$...") of pw for an operator list entry. */
int st_password_hash(const char *pw, size_t pwlen, char *out, size_t cap,
		     char *err, size_t errlen);

/* What a verified file is: the SHA-256 of exactly the bytes whose signature
 * checked, and which trust anchor signed them. */
typedef struct st_signed_info {
	char digest[65];        /* SHA-256 of the file, hex */
	char signer[65];        /* SHA-256 of the signer's public key (DER), hex */
	char anchor[512];       /* the trust.profile_keys entry that matched */
} st_signed_info;

/* Check path against path.sig (sig_path when not NULL) under the trust
 * anchors in cfg (trust.profile_keys).  ST_E_VERIFY when the signature is
 * missing, does not match (changed file or untrusted signer), or no anchor
 * is configured; err says which file, why and what to do. */
int st_verify_file(const st_config *cfg, const char *path, const char *sig_path,
		   st_signed_info *info, char *err, size_t errlen);

/* st_verify_file() then st_profile_load(), refusing when the loaded bytes
 * are not the ones verified (the file changed in between): the profile a
 * run uses, and its digest in the records, is the signed one. */
int st_profile_load_signed(const st_config *cfg, const char *path,
			   st_profile **out, st_signed_info *info,
			   char *err, size_t errlen);


/* What the engine reports comes as values; the words for them (the
 * *_name functions, station/words.c) are what the records store and the
 * front ends print: strings only at those boundaries. */

/* A unit's verdict. */
typedef enum st_verdict {
	ST_VERDICT_FAIL,        /* also a unit that reached no verdict (zero) */
	ST_VERDICT_PASS,
	ST_VERDICT_UNFUSED,     /* identity issued and proven, fuses not burned */
	ST_VERDICT_QUARANTINE,
} st_verdict;

/* The word for v in the records and the output ("PASS", ...). */
const char *st_verdict_name(st_verdict v);
/* The verdict a unit record's state (or an operator's word) names, into
 * *v; false when it names none (RUNNING: the record is open or was
 * interrupted). */
bool st_verdict_parse(const char *state, st_verdict *v);
/* Does a unit with verdict v keep its identity (PASS, UNFUSED)? */
bool st_verdict_good(st_verdict v);

/* The steps a unit's record holds.  The first ST_STEP_SHOWN, in order,
 * are the unit's steps a front end shows (st_steps()[i] is
 * st_step_name(i)); the fuse run and the shared quota name the rest. */
typedef enum st_step {
	ST_STEP_NONE = -1,      /* none (a quota note without a step) */
	ST_STEP_IDENTIFY,
	ST_STEP_KEYGEN,
	ST_STEP_POSSESSION,
	ST_STEP_CERTIFICATE,
	ST_STEP_WRITE_CERT,
	ST_STEP_FUSES,
	ST_STEP_FUSE_CHECK,
	ST_STEP_RESUME,
	ST_STEP_REVOKE,
	ST_STEP_REPROVISION,
	ST_STEP_QUARANTINE,
	ST_STEP_HISTORY,        /* announced only: the unit's records looked up */
	ST_STEP_PLUG,           /* announced only: waiting for the programmer */
	ST_STEP_FW_CHECK,       /* each image fits its slot (before any key) */
	ST_STEP_FIRMWARE,       /* images written, the device's digests compared */
	ST_STEP_ATTEST,         /* end-of-line attestation after the lock */
	/* the fuse run's (station/fuses.c; read back by fuse_resume.c) */
	ST_STEP_FUSE,
	ST_STEP_FUSE_INTENT,
	ST_STEP_FUSE_RESUME,
	ST_STEP_LIFECYCLE,
	ST_STEP_LIFECYCLE_INTENT,
	/* the shared quota's (station/sync.c) */
	ST_STEP_QUOTA,
	ST_STEP_QUOTA_OFFLINE,
	/* the MES (station/unit_mes.c, docs/integration.md) */
	ST_STEP_ROUTE,          /* the route check: may the unit be provisioned here */
	ST_STEP_MEASURE,        /* a measurement outside its limits (the unit's
				 * measurements are kept with its verdict) */
	ST_STEP_COUNT
} st_step;
#define ST_STEP_SHOWN (ST_STEP_FUSES + 1)

/* The word a step is recorded and printed under ("identify", ...). */
const char *st_step_name(st_step s);
/* The step a stored word names, into *s; false when none. */
bool st_step_parse(const char *name, st_step *s);

/* How a step ended. */
typedef enum st_outcome {
	ST_OUTCOME_OK,
	ST_OUTCOME_FAIL,
	ST_OUTCOME_SKIP,
	ST_OUTCOME_WAIT,        /* announced only: waiting (ST_STEP_PLUG) */
} st_outcome;

/* "ok", "fail", "skip", "wait". */
const char *st_outcome_name(st_outcome o);

/* What the fuse run did to a unit (docs/fuses.md). */
typedef enum st_fuses {
	ST_FUSES_NONE,          /* no fuse run reached */
	ST_FUSES_NOT_ARMED,     /* unarmed run: nothing burned */
	ST_FUSES_BURNED,
	ST_FUSES_ALREADY,       /* the device held the plan already */
	ST_FUSES_CHECKED,       /* re-presented unit: plan checked */
	ST_FUSES_PLANNED,       /* dry run */
	ST_FUSES_CONFLICT,
	ST_FUSES_MISMATCH,
	ST_FUSES_BURN_FAILED,
	ST_FUSES_CONDITIONS,
	ST_FUSES_INTERRUPTED,
} st_fuses;

/* "burned", "not-armed", ...; NULL for ST_FUSES_NONE. */
const char *st_fuses_name(st_fuses f);

/* What the engine reports. */
typedef enum st_event_kind {
	ST_EV_SLOT_READY,   /* programmer opened: detail = firmware */
	ST_EV_UNIT_START,   /* a unit was identified: uid */
	ST_EV_STEP,         /* step finished: step, outcome, detail */
	ST_EV_UNIT_DONE,    /* unit finished: result, reason, evidence; recorded */
	ST_EV_SLOT_ERROR,   /* the slot stopped: detail says why */
	ST_EV_SLOT_DONE,    /* the slot has no more units */
	ST_EV_FUSE_PLAN,    /* dry run: uid, detail = one field's current/target/action */
	ST_EV_WARNING,      /* run-wide warning (slot 0): detail */
	/* Only in an interactive run (st_run.interactive): */
	ST_EV_SLOT_IDLE,    /* no unit in work: detail says why (empty, stopped) */
	ST_EV_UNIT_HELD,    /* a unit that did not pass waits in the programmer
			     * for the operator: result, detail = what to do */
} st_event_kind;

/* Why a unit or a slot ended as it did, as a class a front end can put
 * in plain words for the technician (the event's detail keeps the
 * engine's whole text, with paths and protocol detail, for the log).  Set
 * on ST_EV_UNIT_DONE and ST_EV_UNIT_HELD that did not pass, on
 * ST_EV_SLOT_ERROR, and on the ST_EV_STEP "history" of a unit that is not
 * provisioned (outcome "skip"). */
typedef enum st_cause {
	ST_CAUSE_NONE,           /* nothing beyond the verdict (PASS, UNFUSED) */
	ST_CAUSE_DEVICE,         /* the unit failed a step (the detail says which) */
	ST_CAUSE_GARBLED,        /* the programmer's line answers garbled frames */
	ST_CAUSE_SILENT,         /* the programmer does not answer */
	ST_CAUSE_LINK,           /* another I/O error on the programmer's line */
	ST_CAUSE_UNPLUGGED,      /* the programmer was unplugged */
	ST_CAUSE_INTERRUPTED,    /* the link was lost during a burn, its intent on
				  * record: resumed when the unit is presented again */
	ST_CAUSE_FUSE_CONFLICT,  /* fuses hold another value, or a burn went wrong:
				  * QUARANTINE, never burned again */
	ST_CAUSE_CLONE,          /* another slot has a unit with the same device ID */
	ST_CAUSE_NO_ID,          /* the device ID could not be read */
	ST_CAUSE_LOCKED,         /* locked device without a PASS record here */
	ST_CAUSE_QUOTA_FULL,     /* the work order's quota is taken: its normal end */
	ST_CAUSE_WORK_ORDER,     /* the work order does not exist */
	ST_CAUSE_HSM,            /* the HSM session or token was lost */
	ST_CAUSE_RECORDS,        /* the records store failed */
	ST_CAUSE_ALREADY_PASS,   /* PASS on record: not given a second identity */
	ST_CAUSE_ALREADY_UNFUSED, /* UNFUSED on record and the run is not armed */
	ST_CAUSE_QUARANTINED,    /* QUARANTINE on record: not touched again */
	ST_CAUSE_OPERATOR,       /* set aside by the operator after a FAIL */
	ST_CAUSE_ROUTE_REFUSED,  /* the MES's route check refused the unit (the
				  * reason starts with the MES's words) */
	ST_CAUSE_ROUTE_UNANSWERED, /* the MES did not answer the route check and
				  * the profile's policy is `stop` */
	ST_CAUSE_MEASUREMENT,    /* a measurement outside the profile's limits
				  * (the reason names it) */
} st_cause;

/* The word for c in machine-readable output ("route-refused", ...);
 * "none" for ST_CAUSE_NONE. */
const char *st_cause_name(st_cause c);

typedef struct st_event {
	st_event_kind kind;
	int slot;                 /* 1-based */
	const char *port;
	const char *uid;          /* hex, NULL before identify */
	st_step step;             /* ST_EV_STEP */
	st_outcome outcome;       /* ST_EV_STEP */
	const char *detail;       /* human text */
	st_verdict result;        /* ST_EV_UNIT_DONE, ST_EV_UNIT_HELD */
	const char *cert_serial;  /* ST_EV_UNIT_DONE on PASS */
	const char *cert_sha256;
	st_fuses fuses;           /* ST_EV_UNIT_DONE */
	int64_t elapsed_ms;       /* ST_EV_UNIT_DONE */
	/* ST_EV_UNIT_DONE: where the unit's time went, microseconds (for
	 * the benchmark; docs/benchmarks.md): records writes (audit
	 * signatures and the commit wait included), HSM calls, certificate
	 * building and checking, and the rest (the programmer's I/O) */
	int64_t us_records, us_hsm, us_x509, us_device;
	/* ST_EV_UNIT_DONE: the programmer link during the unit (identify to
	 * verdict): commands, re-sends, attempts answered garbled, attempts
	 * with nothing back (drv_link_stats) */
	int64_t link_commands, link_retries, link_garbled, link_silent;
	int err;                  /* st_err of a failure */
	/* ST_EV_FUSE_PLAN: the field ("lifecycle" for the lifecycle step),
	 * its current and target value, and the action ("burn", "skip",
	 * "refuse", "advance"); NULL for a line that is no field's (the
	 * programming conditions) */
	const char *field, *current, *target, *action;
	st_cause cause;           /* why, as a class (see st_cause) */
	/* ST_EV_UNIT_DONE: the unit's measurements (JSON array text, as its
	 * record keeps them; NULL: none) and flags (JSON array of words,
	 * "route-unchecked"; NULL: none) */
	const char *measurements, *flags;
} st_event;

/* Called from worker threads; the callee serialises its own output. */
typedef void (*st_event_fn)(const st_event *ev, void *ctx);

/* A work order's quota shared with other stations (the central database,
 * docs/sync.md), asked before each unit's record is opened; the local
 * store's own quota check still applies after it. */
typedef struct st_quota_note {
	st_step step;         /* on ST_OK: a step to record with the unit
			       * (ST_STEP_QUOTA_OFFLINE when taken from the
			       * allowance), ST_STEP_NONE for none */
	char detail[512];     /* that step's detail, or why not */
} st_quota_note;

typedef struct st_quota_hook {
	/* Reserve one unit of work_order for device uid: ST_OK, ST_E_STATE
	 * when the quota is taken across stations (the slot ends normally),
	 * anything else stops the slot (offline with sync.offline = "stop",
	 * allowance used up); note->detail says why.  Called from slot
	 * workers: serialised by the hook. */
	int (*reserve)(void *ctx, const char *work_order, const char *uid,
		       st_quota_note *note);
	/* The unit's record is closed with result: PASS keeps the
	 * reservation, anything else gives it back. */
	void (*finish)(void *ctx, const char *work_order, const char *uid,
		       st_verdict result);
	void *ctx;
} st_quota_hook;

/* What the plant's MES said to a route check (st_route_hook). */
typedef enum st_route_answer {
	ST_ROUTE_ALLOW,       /* the unit may be provisioned here */
	ST_ROUTE_REFUSE,      /* it may not (why: the MES's reason) */
	ST_ROUTE_UNANSWERED,  /* no usable answer (why: what went wrong) */
} st_route_answer;

/* The route check of a profile with a `route` group (docs/integration.md),
 * asked for each unit after its device ID is read and before anything is
 * made, written or burned for it. */
typedef struct st_route_hook {
	/* Ask the MES whether device uid may be provisioned at this station
	 * for work_order (NULL: none) in slot at port; why gets the MES's
	 * reason or what went wrong.  Never longer than the profile's
	 * route.timeout_ms.  Called from slot workers at the same time: the
	 * hook keeps no per-call state in ctx. */
	st_route_answer (*check)(void *ctx, const char *uid, const char *work_order,
				 int slot, const char *port, char *why, size_t whylen);
	bool stop_unanswered; /* route.on_error: true "stop", false "allow-and-flag" */
	void *ctx;
} st_route_hook;

/* One provisioning run over several slots. */
typedef struct st_run {
	const char *ports[ST_MAX_SLOTS]; /* programmer URIs, one per slot */
	int nslots;
	int max_units;        /* per slot; 0 = until the programmer is empty */
	bool burn_fuses;      /* armed: burn the profile's fuse plan */
	bool dry_run;         /* only print each unit's fuse plan: nothing is
				 written to the device or the records */
	const char *operator_name;
	const char *work_order; /* quota to take units from (NULL: none); in
				 * the UI, the operator's work order as typed */
	int plug_wait_ms;     /* >0: a slot whose programmer is absent or is
			       * unplugged waits this long for it (USB hotplug)
			       * and carries on; 0: the slot ends */
	/* Driven by an operator (the UI) rather than a batch: an empty
	 * programmer is polled for the next unit instead of ending the slot;
	 * a unit that did not pass stays in its programmer until the operator
	 * says retry, skip or quarantine (st_run_command); a slot stopped by a
	 * programmer error waits for ST_CMD_START.  Ends with st_run_stop(). */
	bool interactive;
	/* Who and what (docs/roles.md), recorded with the run: */
	bool operator_authenticated; /* checked against the signed operator list */
	const char *profile_signer;  /* SHA-256 of the key that signed the profile */
	const char *supervisor_name; /* a supervisor who authenticated for this run */
	/* With supervisor_name: a device that already has a PASS identity gets
	 * a new one (only the device reprovision_uid when set); its old
	 * certificate is revoked with this reason before anything is done. */
	const char *reprovision_reason;
	const char *reprovision_uid;
	const st_quota_hook *quota; /* shared quota of work_order (NULL: the
				 * local store's quota only) */
	const st_route_hook *route; /* the MES route check (NULL: none; set by
				 * st_station_run_start from the profile) */
	/* Set by the caller (a signal watcher) to stop as st_run_stop() does:
	 * read between units, so the units in work finish.  NULL: none. */
	atomic_bool *stop;
} st_run;

/* Totals of a run. */
typedef struct st_summary {
	int pass, fail, quarantine, skipped;
	int unfused;          /* provisioned, not locked: an unarmed run's
			       * good verdict (UNFUSED, docs/fuses.md) */
	int slot_errors;      /* slots stopped by a programmer/link error */
	int record_errors;    /* slots stopped because a record could not be written */
	int quota_full;       /* slots stopped because the work order is full */
	int hsm_errors;       /* slots stopped because the HSM went away (also in slot_errors) */
} st_summary;


/* `station devices`: list attached programmers (USB ones from the drivers'
 * id tables, serial ones given in slots[] or linked under /dev/station/ by
 * the udev rules) with driver, port or USB path, serial, firmware version
 * and which of slots[] each is bound to; text table or one JSON object per
 * line to out (a FILE *).  ST_OK, or an error with err set. */
int st_devices(const char *const *slots, size_t nslots, bool json, void *out,
	       char *err, size_t errlen);

/* For `station doctor`: which of slots[] have an attached programmer
 * that answers (present[i]), and how many answer in all (*found).  ST_OK,
 * or an error of the USB stack with err. */
int st_devices_present(const char *const *slots, size_t nslots, bool *present,
		       size_t *found, char *err, size_t errlen);

/* `station fuses show`: a device's fuse fields and lifecycle against the
 * profile's fuse plan, read only (docs/fuses.md, "Showing a device's
 * fuses").  A field's state: blank (every word reads 0), matches (it holds
 * the plan's target), differs (anything else: another value, a partial or
 * half-programmed burn), locked (a write-protect field that holds its
 * target: the fields it protects can no longer change; the lifecycle step
 * when the device is locked). */
typedef enum st_fuse_state {
	ST_FUSE_BLANK,
	ST_FUSE_MATCHES,
	ST_FUSE_DIFFERS,
	ST_FUSE_LOCKED,
} st_fuse_state;

const char *st_fuse_state_name(st_fuse_state s);

typedef struct st_fuse_row {
	char name[32];
	const char *kind;       /* "data", "write-protect", "lifecycle" */
	int bank;               /* -1: the lifecycle step */
	unsigned word_lo, word_hi;
	char current[65];       /* the field's words as read, hex; lifecycle: its state */
	char target[65];        /* the plan's */
	st_fuse_state state;
	const char *action;     /* what an armed run would do: "skip", "burn",
				 * "refuse", "advance" */
	char why[200];          /* for "refuse": why */
} st_fuse_row;

typedef struct st_fuse_show {
	char uid[33], model[32];
	const char *lifecycle;  /* the device's, as a word */
	unsigned banks;         /* fuse banks the target has */
	st_fuse_row row[16];
	int n;
} st_fuse_show;

/* Open the programmer at slot (a port or driver URI), identify the unit and
 * read every bank the profile's fuse plan names.  Never burns, never
 * writes to the device or to the records.  ST_OK with out filled; an
 * st_err with err saying what failed (no unit: ST_E_NO_TARGET). */
int st_fuses_show(const st_config *cfg, const st_profile *prof, const char *slot,
		  st_fuse_show *out, char *err, size_t errlen);

/* `station devices --watch`: one line per USB programmer arriving or
 * leaving (those attached at the start arrive first), with the slot of
 * slots[] it is bound to, until SIGINT or SIGTERM.  ST_OK, or an error. */
int st_devices_watch(const char *const *slots, size_t nslots, bool json,
		     void *out, char *err, size_t errlen);

/* A run in the background, for a front end that keeps its own thread (the
 * UI).  st_provision() is st_run_start() + st_run_wait(). */
typedef struct st_run_handle st_run_handle;


/* What an operator can tell one slot of an interactive run. */
typedef enum st_cmd {
	ST_CMD_START,       /* take units (again, after a stop or an error) */
	ST_CMD_STOP,        /* finish the unit in work, then take no more
			     * (refused while a unit is held) */
	ST_CMD_RETRY,       /* run the held unit again (not a QUARANTINE one) */
	ST_CMD_SKIP,        /* release the held unit as it is (its FAIL stands) */
	ST_CMD_QUARANTINE,  /* record the held unit as QUARANTINE, release it */
} st_cmd;

/* Send cmd to slot (1-based).  Returns ST_OK when the slot takes it, or
 * ST_E_STATE (no unit held, retry of a quarantined unit, ...) / ST_E_INVAL
 * with nothing changed.  Thread-safe; returns at once. */
int st_run_command(st_run_handle *r, int slot, st_cmd cmd);

/* Ask every slot to finish its unit in work and end; returns at once. */
void st_run_stop(st_run_handle *r);

/* Wait for every slot worker to end, fill sum (may be NULL) and free r. */
void st_run_wait(st_run_handle *r, st_summary *sum);

/* The ordered names of the steps a unit goes through (st_step_name of
 * ST_STEP_IDENTIFY .. ST_STEP_FUSES), so a front end can show progress;
 * *n gets their count (ST_STEP_SHOWN). */
const char *const *st_steps(int *n);


/* ---- The station handle (station.c) ----
 *
 * What a front end (the CLI, the UI) works with: it owns the configuration
 * in use, the HSM login, the store, the sync state, authentication against
 * the operator list and the recording of refusals.  A front end asks the
 * handle; it never opens the HSM or the store itself. */
typedef struct st_station st_station;

/* Who may do what (docs/roles.md). */
enum {
	ST_ROLE_OPERATOR = 1 << 0,   /* runs units */
	ST_ROLE_SUPERVISOR = 1 << 1, /* re-provisions, releases quarantine */
	ST_ROLE_ENGINEER = 1 << 2,   /* installs profiles */
};

/* Name of one role bit ("operator", ...). */
const char *st_role_name(unsigned role);

/* A station over cfg (which stays the caller's and must outlive it);
 * config_path is the file cfg came from (its sync group), or NULL.
 * Nothing is opened yet.  ST_OK or ST_E_NOMEM. */
int st_station_new(const st_config *cfg, const char *config_path,
		   st_station **out);
/* Close whatever is open (run quota, audit signer, store, HSM) and free. */
void st_station_close(st_station *st);

const st_config *st_station_config(const st_station *st);
const char *st_station_config_path(const st_station *st);

/* How a command opens the records (docs/records.md, "Who creates the
 * store"). */
typedef enum st_store_mode {
	ST_STORE_READ,     /* a reading command: read only; never created,
			    * written or migrated (a read-only file works) */
	ST_STORE_WRITE,    /* an existing store, written */
	ST_STORE_CREATE,   /* a command that starts a line: created when absent */
} st_store_mode;

/* Open the records named in the configuration (once; later calls return
 * ST_OK, reopening a store opened for reading when a write is asked).
 * ST_E_NOTFOUND when there is none and mode does not create it: err "no
 * records store at PATH (records.path in CONFIG): what creates one";
 * otherwise err "cannot open PATH: why" (permission denied, a read-only
 * directory, not a database, an older schema for a reader). */
int st_station_store_open(st_station *st, st_store_mode mode, char *err,
			  size_t errlen);

/* Open the token (st_hsm_open) and log the user in with pin (pinlen
 * bytes, the caller wipes it): ST_E_PIN for a wrong PIN, the token stays
 * closed on any failure.  The two halves separately for a caller that
 * warns in between (st_station_pin_warning). */
int st_station_login(st_station *st, const char *pin, size_t pinlen,
		     char *err, size_t errlen);
int st_station_hsm_open(st_station *st, char *err, size_t errlen);
int st_station_hsm_auth(st_station *st, const char *pin, size_t pinlen,
			char *err, size_t errlen);
/* The token's PIN-count warning, or NULL (also NULL with no token open). */
const char *st_station_pin_warning(const st_station *st);
/* The user PIN's counter as the open token reports it now (read fresh):
 * a caller that asks for a PIN stops before the final try. */
typedef enum st_pin_state {
	ST_PIN_UNKNOWN = -1,    /* no token open, or it did not say */
	ST_PIN_OK = 0,
	ST_PIN_COUNT_LOW,       /* CKF_USER_PIN_COUNT_LOW: a wrong PIN was entered */
	ST_PIN_FINAL_TRY,       /* CKF_USER_PIN_FINAL_TRY: one more wrong PIN locks it */
	ST_PIN_LOCKED,          /* CKF_USER_PIN_LOCKED */
} st_pin_state;
st_pin_state st_station_pin_state(const st_station *st);
bool st_station_logged_in(const st_station *st);
/* Close the HSM (a wrong operator password: back to the name). */
void st_station_logout(st_station *st);

/* Authenticate name for role with the password pw (pwlen bytes, the
 * caller wipes it) against the signed operator list.  ST_OK; otherwise
 * why gets the reason and the refusal is on record (event auth_refused:
 * who, which role, why, never the password), signed with the audit key
 * of the logged-in token unless signed says the store has a signer
 * already (a run's, or st_station_audit_attach()).  When that record could
 * not be written, recerr says why (else ""). */
int st_station_authenticate(st_station *st, const char *name, const char *pw,
			    size_t pwlen, unsigned role, bool signed_,
			    char *why, size_t whylen, char *recerr,
			    size_t recerrlen);
/* Can the operator list be loaded?  ST_OK, or err says why (before asking
 * anyone for a password). */
int st_station_roster_check(st_station *st, char *err, size_t errlen);

/* Sign the store's events with the audit key of the logged-in token until
 * st_station_audit_detach() (records outside a run). */
int st_station_audit_attach(st_station *st, char *err, size_t errlen);
void st_station_audit_detach(st_station *st);

/* The sync lag line for a status header (st_sync_lag: "" when never
 * synced); a file read and an SQLite query: ask now and then. */
void st_station_sync_lag(st_station *st, char *buf, size_t len);

/* The issuing CA a run would use (st_ca_info) on the logged-in token. */
int st_station_ca_info(st_station *st, const char *label, char *subject,
		       size_t sublen, int *days_left, char *err, size_t errlen);

/* Release a quarantined device (st_quarantine_release) in the store, on
 * the decision of an authenticated supervisor. */
int st_station_quarantine_release(st_station *st, const char *uid,
				  const char *supervisor, const char *reason,
				  int64_t *new_id, char *err, size_t errlen);

/* Start run in the background on the logged-in token and the store, with
 * the work order's shared quota when the configuration has a sync group
 * (run->quota is set here).  One run at a time; errors as st_run_start(). */
int st_station_run_start(st_station *st, const st_profile *prof, st_run *run,
			 st_event_fn cb, void *cb_ctx, st_run_handle **out,
			 char *err, size_t errlen);
/* st_run_wait(), then release the run's shared quota. */
void st_station_run_wait(st_station *st, st_run_handle *r, st_summary *sum);


/* Set up the shared quota of work_order (NULL: none) for the next
 * st_station_run_start(), separately for a caller that tells its errors
 * apart (st_sync_quota_open: ST_E_CONFIG / ST_E_NOTFOUND / ST_E_EXISTS
 * with err); without it st_station_run_start() does it (not for a dry
 * run).  Released by st_station_run_wait() or a failed run start. */
int st_station_run_quota(st_station *st, const char *work_order, char *err,
			 size_t errlen);

/* Writes and commits of the store so far (group commit at work). */
void st_station_record_stats(st_station *st, long long *writes,
			     long long *commits);

/* A checkpoint written by st_station_checkpoint(). */
typedef struct st_checkpoint_note {
	char station[128];
	long long seq;          /* events 1..seq */
	char head_hash[65];
	char at[32];
	char audit_sha256[65];  /* the audit certificate that signed it */
	char path[4096];        /* the .json written */
} st_checkpoint_note;

/* The end of a run: a checkpoint of the chain's head, signed by the audit
 * key of the logged-in token, written to the checkpoint directory
 * (docs/records.md, "Checkpoints").  ST_OK, or an error with err. */
int st_station_checkpoint(st_station *st, st_checkpoint_note *out, char *err,
			  size_t errlen);

/* Issued certificates by fate. */
typedef struct st_cert_tally {
	long issued, live, revoked;
	long open;              /* unit still RUNNING (in work or interrupted) */
	long unrevoked;         /* unit ended FAIL/QUARANTINE, not revoked */
} st_cert_tally;

/* The run lock beside the records (RECORDS.run-lock): every run holds it
 * shared (st_run_start .. st_run_wait), so whoever gets it exclusive knows
 * that no process is working on a RUNNING record.  ST_E_STATE (err says
 * so) when a run holds it and exclusive was asked; *fd for st_run_unlock. */
int st_run_lock(const char *records_path, bool exclusive, int *fd, char *err,
		size_t errlen);
void st_run_unlock(int fd);

/* What st_close_interrupted did. */
typedef struct st_close_result {
	long closed;            /* RUNNING records closed as FAIL */
	long revoked;           /* certificates revoked */
} st_close_result;

/* ---- What the commands ask of the station (station/cmds.c) ----
 * Each works on the store and the login the front end opened through the
 * handle (st_station_store_open, st_station_login); ST_E_STATE with err
 * when the one it needs is not open. */

/* Is name a key type the token can make ("p256", "p384", "rsa3072",
 * "ed25519")? */
bool st_key_type_known(const char *name);

/* `profile sign`: sign the file in with the engineering key label in the
 * token, the detached signature to out.  `profile keygen|pubkey`: make
 * (make true) a key of key_type (NULL: p256) labelled label, or only find
 * it, and write its public key as PEM to pem_path.  ST_E_NOTOKEN when no
 * session could be opened (err is the token's message); otherwise the
 * operation's error with err (ST_E_IO: a file). */
int st_station_sign_file(st_station *st, const char *label, const char *in,
			 const char *out, char *err, size_t errlen);
int st_station_engkey(st_station *st, const char *label, const char *key_type,
		      bool make, const char *pem_path, char *err, size_t errlen);

/* Record that engineer installed the signed profile prof (info) from
 * from as path: event profile_install, with the station's audit signer
 * attached (st_station_audit_attach).  err: the records' message. */
int st_station_record_profile_install(st_station *st, const char *engineer,
				      const st_profile *prof,
				      const st_signed_info *info,
				      const char *from, const char *path,
				      char *err, size_t errlen);

/* Does the store verify (every row its signed event)?  ST_OK, or the
 * error with err the records' message. */
int st_station_records_verify(st_station *st, char *err, size_t errlen);

/* `crl export`: a CRL of every revoked certificate, signed in the token by
 * the configured CA (hsm.ca_key; NULL: the newest valid), next update in
 * days, to out; *count its entries.  ST_E_NOTOKEN as for
 * st_station_sign_file(); otherwise err. */
int st_station_crl_export(st_station *st, int days, const char *out,
			  long *count, char *err, size_t errlen);

/* Record an export of a CRL with entries entries to out (event
 * crl_export), attaching the audit signer first.  err says why not. */
int st_station_record_crl_export(st_station *st, long entries, const char *out,
				 char *err, size_t errlen);

/* Issued certificates of the store by fate (st_cert_tally). */
int st_station_cert_tally(st_station *st, st_cert_tally *t, char *err,
			  size_t errlen);

/* The latest unit record of device uid: its id and state ("PASS", ...).
 * ST_E_NOTFOUND when the device has none. */
int st_station_last_unit(st_station *st, const char *uid, int64_t *unit_id,
			 char *state, size_t statelen);

/* `records close-interrupted` (st_close_interrupted) on the store, whose
 * audit signer is attached; the caller holds the run lock exclusive. */
int st_station_close_interrupted(st_station *st, const char *before,
				 const char *supervisor, const char *reason,
				 st_close_result *out, char *err, size_t errlen);


/* What audit certificates are checked against (`records verify`, `verify
 * --pg`, `export`): the CA certificates in the PEM file ca_cert (it may
 * hold several), or else those in the configured token — read without
 * logging in, and when none is visible that way and login is not NULL,
 * after login(ctx) has logged the station in (nonzero: it said why;
 * ST_E_PIN, err empty).  Otherwise ST_E_IO (ca_cert unreadable),
 * ST_E_NOTOKEN (token unreachable), ST_E_HSM (its CAs unreadable),
 * ST_E_NOTFOUND (it holds none) or ST_E_NOMEM, with err the sentence. */
typedef struct st_trust st_trust;
int st_trust_open(st_station *st, const char *ca_cert, int (*login)(void *ctx),
		  void *ctx, st_trust **out, char *err, size_t errlen);
/* "the CA given with --ca-cert", "the CA certificate in token 'x'". */
const char *st_trust_what(const st_trust *t);
void st_trust_free(st_trust *t);


/* ---- The central copy of the records (station/sync_cmds.c) ----
 * `records sync`, `records verify --pg` and the central side of `records
 * workorder` (docs/sync.md) on the station's store.  Errors come back as
 * err, a whole sentence ("configuration: ...", "sync: ..."). */
typedef struct st_syncer st_syncer;

/* What one sync pass did. */
typedef struct st_sync_pass {
	long long shipped;        /* events sent */
	long long batches;        /* transactions committed */
	long long server_seq;     /* this station's high-water mark there */
	long long local_seq;      /* the local chain's last event */
	long long conflicts;      /* new alerts raised by this station */
	long long alerts_recorded; /* alerts written to the local store */
} st_sync_pass;

/* Ready the sync of the station's store: the configuration's sync group
 * (ST_E_CONFIG: unreadable; ST_E_NOTFOUND: none), the store (ST_E_DB;
 * ST_E_NOTFOUND with err "records: no records store ..."), opened as
 * mode says: a sync pass writes (alerts), --status and verify --pg read.
 * login(ctx) logs the station in before the first local write (an alert
 * signed with the audit key); nonzero: it said why, the pass fails with
 * ST_E_HSM. */
int st_syncer_open(st_station *st, st_store_mode mode, int (*login)(void *ctx),
		   void *ctx, st_syncer **out, char *err, size_t errlen);
void st_syncer_close(st_syncer *s);

/* One pass (connecting when not connected): the station's checkpoints not
 * there yet, then the events; the outcome goes to the sync state file.
 * err: the database's message.  When the audit signer could not be
 * attached, st_syncer_audit_error() says why (NULL otherwise). */
int st_syncer_pass(st_syncer *s, st_sync_pass *res, char *err, size_t errlen);
const char *st_syncer_audit_error(const st_syncer *s);

/* --follow: a pass, sync.interval_ms, again; after a failure twice as long
 * each time (0.5 s up to sync.backoff_max_ms) until SIGINT or SIGTERM
 * (ST_OK).  fn hears every pass that shipped something or recorded an
 * alert (rc ST_OK), and every failure retried (rc, err, retry_ms).  A
 * failure retrying cannot mend (ST_E_HSM, ST_E_VERIFY, ST_E_CONFIG) ends
 * it: that rc, with err. */
typedef void (*st_sync_follow_fn)(void *ctx, int rc, const st_sync_pass *res,
				  const char *err, int retry_ms);
int st_syncer_follow(st_syncer *s, st_sync_follow_fn fn, void *ctx, char *err,
		     size_t errlen);

/* --status: the figures of the local store and the central database (the
 * server's mark when reachable, else those of the last sync). */
typedef struct st_sync_status {
	long long local;          /* local events */
	long long server;         /* held centrally */
	long long events, units;  /* not yet shipped */
	char central[600];        /* "reachable; last sync ..." or "NOT reachable (...)..." */
	char last_ok[64];         /* "" never */
	char last_error[600];     /* "" none */
	char last_error_at[64];   /* "" unknown */
} st_sync_status;
int st_syncer_status(st_syncer *s, st_sync_status *out, char *err,
		     size_t errlen);

/* `records verify --pg`: every station's chain held centrally, audit
 * certificates checked against t.  ST_E_VERIFY with bad_station, bad_seq
 * and err naming the record; otherwise err the database's message. */
typedef struct st_pg_verify {
	int stations;
	long long events;
	char bad_station[128];
	long long bad_seq;
} st_pg_verify;
int st_syncer_verify_pg(st_syncer *s, st_trust *t, st_pg_verify *v, char *err,
			size_t errlen);

/* A work order in the central database. */
typedef struct st_central_workorder {
	long quota;               /* -1: none */
	long reserved, pass, allowance;
	char error[512];          /* "" when read; else why not (then only this) */
} st_central_workorder;

/* The central side of `records workorder create|show` when the
 * configuration has a sync group (*central false, ST_OK, without one):
 * put the work order there (an existing one must have the same quota:
 * ST_E_EXISTS), or read it (w->error when it cannot be).  ST_E_CONFIG
 * (the sync group), ST_E_DB (no connection), with err the sentence. */
int st_central_workorder_put(st_station *st, const char *id, long quota,
			     bool *central, char *err, size_t errlen);
int st_central_workorder_get(st_station *st, const char *id,
			     st_central_workorder *w, bool *central, char *err,
			     size_t errlen);


/* `station init [DIR]` (station/init.c): write DIR/station.conf and
 * DIR/product.profile, commented templates for a new line (values to
 * decide marked FILL IN, every setting listed from the schema); conf and
 * prof get their paths.  Never overwrites: ST_E_EXISTS with err when
 * either exists; ST_E_IO with err otherwise. */
int st_init_files(const char *dir, char *conf, char *prof, size_t pathlen,
		  char *err, size_t errlen);

/* ---- `station doctor` (station/doctor.c): what a shift start needs ---- */

typedef enum st_check_level {
	ST_CHECK_OK,
	ST_CHECK_WARN,      /* works, but look at it (or not checked: todo says why) */
	ST_CHECK_FAIL,      /* a shift cannot start like this */
} st_check_level;

/* One line of the doctor's report. */
typedef struct st_check {
	const char *name;   /* "configuration", "profile", "module", "token",
			     * "pin", "ca", "records", "disk", "group",
			     * "programmers" (always all of them, in this order) */
	st_check_level level;
	char found[768];    /* what was found */
	char todo[256];     /* what to do ("" when OK) */
} st_check;

/* Free space on the records' file system below which the disk line is a
 * FAIL, a WARN (MiB). */
#define ST_DOCTOR_DISK_FAIL_MB 64
#define ST_DOCTOR_DISK_WARN_MB 512
/* The group the udev rules give the programmers' device nodes. */
#define ST_UDEV_GROUP "station"

typedef struct st_doctor_opts {
	const char *const *slots;   /* the slots to look for (configured or --slot) */
	size_t nslots;
	/* The user PIN (pinlen bytes into pin, wiped by the caller), asked
	 * only when the token can take a wrong one without locking; nonzero:
	 * none (err says why), the PIN line is a WARN. */
	int (*pin)(void *ctx, char *pin, size_t cap, size_t *len, char *err,
		   size_t errlen);
	void (*report)(void *ctx, const st_check *c);   /* each line, in order */
	void *ctx;
} st_doctor_opts;

/* Check everything a shift start needs on the station, reporting each
 * line through o->report; nothing is created or changed (the PIN is tried
 * once at most, never on the token's final try; the token is logged out
 * after).  Returns the number of FAIL lines. */
int st_station_doctor(st_station *st, const st_doctor_opts *o);


/* ---- The issuing CA in the token (`station ca`, station/cmds.c) ---- */

/* The readable name of a key type ("EC P-256"; NULL: p256), or NULL when
 * st_key_type_known() says no. */
const char *st_key_type_name(const char *key_type);

/* Can the logged-in token make and sign with a CA key of key_type (NULL:
 * p256)?  ST_OK, or ST_E_HSM with err "a <type> CA: <why>". */
int st_station_ca_mechanisms(st_station *st, const char *key_type, char *err,
			     size_t errlen);

typedef enum st_ca_op {
	ST_CA_INIT,    /* a lab CA: key and self-signed certificate; note says
			* what an interrupted init needed repaired ("" none) */
	ST_CA_CSR,     /* key and a request (out) for an offline root */
	ST_CA_IMPORT,  /* install the signed certificate (in) and its chain */
	ST_CA_SHOW,    /* print the CA label (NULL: every issuing CA) to show */
} st_ca_op;

typedef struct st_ca_args {
	const char *label;
	const char *key_type;      /* NULL: p256 */
	const char *cn, *org;
	int days;
	const char *out;           /* init: the PEM copy (may be NULL); csr: the request */
	const char *in, *chain;    /* import */
	void *show;                /* show: a FILE * */
} st_ca_args;

/* One `ca` operation on the logged-in token (station/ca.c does the work).
 * ST_E_NOTOKEN when no session could be opened (err is the token's
 * message); otherwise the operation's error with err (ST_E_IO: a file). */
int st_station_ca(st_station *st, st_ca_op op, const st_ca_args *a, char *note,
		  size_t notelen, char *err, size_t errlen);

/* A repaired `ca init` goes on record where a store exists (a station that
 * has provisioned), signed like any event: ST_OK (also with no store);
 * otherwise err says why it is not on record. */
int st_station_ca_repair_record(st_station *st, const char *label,
				const char *note, char *err, size_t errlen);


/* Write the certificate der (len bytes, DER) as PEM to path through a
 * temp file, fsync and rename.  ST_E_INVAL when der does not parse (err
 * untouched); otherwise as st_write_pem, with err. */
int st_cert_der_write_pem(const char *path, const uint8_t *der, size_t len,
			  char *err, size_t errlen);


/* What the records commands ask of the station (station/records_cmds.c):
 * `records verify|list|show|export|workorder` and `audit init`.  Each opens cfg's records itself,
 * as the commands always did.  On failure *step says which part failed
 * and err why; the CLI words it. */
typedef enum st_rec_step {
	ST_REC_STEP_STORE = 1,  /* the records do not open: err "cannot open PATH: why" */
	ST_REC_STEP_AUDIT,      /* the audit key (attach/open) */
	ST_REC_STEP_OP,         /* the operation itself (rc says which) */
	ST_REC_STEP_NOTHING,    /* audit init: a complete key, no --out */
	ST_REC_STEP_OUT,        /* audit init --out: ST_E_INVAL: does not parse */
	ST_REC_STEP_VERIFY,     /* export: the records do not verify */
	ST_REC_STEP_DIR,        /* export: the directory cannot be made */
} st_rec_step;

/* The records of cfg, open for the records commands (`records verify|list|
 * show|export`): a handle of their own, as those commands always had. */
typedef struct st_records st_records;

/* One unit row as stored (NULL: not set). */
typedef struct st_unit_row {
	int64_t id;
	int slot;
	const char *uid, *state, *reason, *work_order, *port, *station;
	const char *operator_name, *profile, *profile_digest;
	const char *cert_serial, *cert_sha256, *cert_pem, *pubkey;
	const char *rot_hash, *fuse_readback, *started_at, *finished_at;
	/* docs/firmware.md: the images written (name, version, slot, size,
	 * the device's SHA-256, the SBOM's SHA-256) and the end-of-line
	 * attestation (nonce, statement, signature), JSON text; NULL: none. */
	const char *firmware, *attestation;
	/* schema 7 (docs/integration.md): the unit's measurements (JSON array
	 * of {name, value, unit, low, high, outcome}) and flags (JSON array
	 * of words); NULL: none. */
	const char *measurements, *flags;
} st_unit_row;

/* One event of the chain, as stored. */
typedef struct st_event_row {
	int64_t seq, unit_id;
	const char *at, *kind, *uid, *body, *hash, *sig;
} st_event_row;

/* Which units (NULL fields: any). */
typedef struct st_unit_filter {
	const char *work_order, *since, *until, *uid;
	bool by_result;             /* only units whose record is */
	bool running;               /* ... still RUNNING, or else */
	st_verdict result;          /* ... closed with this verdict */
	int64_t unit_id;            /* 0: any */
} st_unit_filter;

/* An operator's word for a unit record's state (--result: PASS, UNFUSED,
 * FAIL, QUARANTINE, RUNNING) into f's result; false when it names none. */
bool st_unit_filter_result(st_unit_filter *f, const char *word);

/* Callbacks run with the store locked; non-zero stops the walk and is
 * handed back. */
typedef int (*st_records_unit_fn)(void *ctx, const st_unit_row *row);

/* A unit as a JSON object (jansson; the caller json_decref()s it): the
 * line `records export` prints and a bundle's units.jsonl holds; with_pem
 * adds the certificate PEM.  NULL when out of memory. */
struct json_t *st_unit_json(const st_unit_row *u, bool with_pem);
typedef int (*st_records_event_fn)(void *ctx, const st_event_row *row);

/* Open the station's records as mode says (ST_STORE_READ for a reading
 * command; st_station_store_open's modes and messages), a handle of its
 * own; ST_OK, or rc with err. */
int st_records_open(st_station *st, st_store_mode mode, st_records **out,
		    char *err, size_t errlen);
void st_records_close(st_records *r);
/* The store's last error, as a sentence. */
const char *st_records_errmsg(const st_records *r);
/* Units matching f (NULL: all), oldest first. */
int st_records_units(st_records *r, const st_unit_filter *f, st_records_unit_fn fn,
		     void *ctx);
/* Events of one unit (unit_id > 0) or the whole chain (0), in order. */
/* The regulator's question (docs/firmware.md): every unit that left the
 * line (PASS or UNFUSED) with component — "NAME" or "NAME@VERSION", as a
 * component of an SBOM recorded for one of its images — oldest first.  fn
 * gets the unit, the image that carries it (name, version) and the
 * component's version.  The SBOMs are read from the signed `firmware`
 * events of the records, never from files.  ST_E_INVAL for an empty name
 * (err says so). */
typedef int (*st_records_component_fn)(void *ctx, const st_unit_row *row,
				       const char *image, const char *image_version,
				       const char *component_version);
int st_records_units_with_component(st_records *r, const char *component,
				    st_records_component_fn fn, void *ctx,
				    char *err, size_t errlen);

/* st_records_units_with_component on the central copy: every station's
 * units (row: uid, station, id, cert_serial, work_order, finished_at,
 * state).  ST_E_INVAL for an empty name (err says so). */
int st_syncer_units_with_component(st_syncer *s, const char *component,
				   st_records_component_fn fn, void *ctx,
				   char *err, size_t errlen);

int st_records_events(st_records *r, int64_t unit_id, st_records_event_fn fn,
		      void *ctx);

/* What `records verify` found. */
typedef struct st_records_verified {
	long long events, units, bad_seq;
	int audit_certs;
	long long head_seq;
} st_records_verified;

/* Every hash and signature, audit certificates checked against t:
 * ST_OK, ST_E_VERIFY (tampered: st_records_errmsg says where) or another
 * error. */
int st_records_verify(st_records *r, st_trust *t, st_records_verified *v);

/* A signed checkpoint the chain must still hold. */
typedef struct st_checkpoint_info {
	char station[128];
	long long seq;
	char head_hash[65];
	char at[32];
} st_checkpoint_info;

/* Check the checkpoint file path against the chain (audit certificates
 * against t): ST_OK; ST_E_INVAL with err when the file does not read as
 * one (*read_failed set); another rc when the chain does not hold it
 * (st_records_errmsg says why). */
int st_records_checkpoint_check(st_records *r, const char *path, st_trust *t,
				st_checkpoint_info *out, bool *read_failed,
				char *err, size_t errlen);

/* Issued certificates of these records by fate. */
int st_records_cert_tally(st_records *r, st_cert_tally *t, char *err,
			  size_t errlen);

/* What `records export --evidence DIR` wrote. */
typedef struct st_evidence_result {
	long long last_seq;         /* events.jsonl holds events 1..last_seq */
	int certs;                  /* certs/<device-id>.pem */
	int issued, revoked_pems;   /* certs.jsonl, certs/revoked/ */
	long long cp_seq;           /* checkpoint.json: its event and hash */
	char cp_head_hash[65];
} st_evidence_result;

/* The evidence bundle of the units matching f into the new directory dir
 * (docs/evidence.md): only from records that verify (audit certificates
 * against t); signed by the logged-in station's audit key, the CRL by its
 * CA.  ST_OK, or rc with *step: VERIFY (st_records_errmsg says why),
 * AUDIT, DIR (dir cannot be made: err), OP (err). */
int st_records_evidence(st_records *r, st_station *st, const st_config *cfg,
			st_trust *t, const st_unit_filter *f, const char *dir,
			st_evidence_result *out, st_rec_step *step, char *err,
			size_t errlen);

/* The label of the station's audit key in the token. */
const char *st_audit_label(void);

/* A work order's counts: quota (-1 none), PASS, in work, failed. */
typedef struct st_workorder_info {
	long quota, pass, running, failed;
} st_workorder_info;

/* Create work order id (quota -1: none) as a signed event: the station
 * must be logged in (its audit key signs); the store is created when
 * absent (a work order starts a line).  ST_OK, or rc with *step. */
int st_records_workorder_create(st_station *st, const st_config *cfg,
				const char *id, long quota, st_rec_step *step,
				char *err, size_t errlen);
/* Work order id's counts (the store read only); ST_E_NOTFOUND (step OP)
 * when there is none, (step STORE) when there is no store. */
int st_records_workorder_get(st_station *st, const char *id,
			     st_workorder_info *out, st_rec_step *step,
			     char *err, size_t errlen);

/* audit init: make the audit key or repair it (the logged-in station's
 * token, CA ca_label), record a new certificate or a repair in the store,
 * write the certificate as PEM to out when given.  *created: a new key;
 * repaired: what was repaired ("" none). */
int st_records_audit_init(st_station *st, const st_config *cfg,
			  const char *ca_label, const char *out, bool *created,
			  char *repaired, size_t replen, st_rec_step *step,
			  char *err, size_t errlen);


/* ---- Labels (station/label.c, docs/integration.md "Labels") ---- */

/* The QR code's text: "ST1;UID=<uid>;SN=<serial>;FP=<sha256>" into out;
 * ST_E_INVAL when a part is missing or it does not fit. */
int st_label_payload(const char *uid, const char *serial, const char *fp,
		     char *out, size_t len);

/* A profile's label template (its `label` group). */
#define ST_LABEL_LINES 6
typedef struct st_label_tpl {
	int nlines;
	char line[ST_LABEL_LINES][48]; /* "uid", "serial", "fingerprint",
					* "profile", or "text:WORDS" */
	int module;                    /* QR module size, drawing units */
	char profile[64];              /* the profile's name (the line "profile") */
} st_label_tpl;

/* The label template of a loaded profile (the defaults without a group). */
const st_label_tpl *st_profile_label(const st_profile *p);

/* The files of one label. */
typedef struct st_label_files {
	char png[4200], pdf[4200], zpl[4200];
} st_label_files;

/* Write the label of uid (certificate serial and SHA-256 fingerprint, hex)
 * after template tpl (NULL: the default one) as labels.dir/<uid>.png, .pdf
 * and .zpl (their paths into out), and send the ZPL to labels.queue with
 * `lp [-h labels.server] -d` when set.  ST_E_CONFIG without labels.dir;
 * else ST_E_IO with err. */
int st_label_write(const st_config *cfg, const st_label_tpl *tpl, const char *uid,
		   const char *serial, const char *fp, st_label_files *out,
		   char *err, size_t errlen);

/* `station label print UID`: st_label_write for the device's PASS unit of
 * the store (ST_E_NOTFOUND when it never passed), after the template of
 * the configured profile, loaded only when its signature verifies (as a
 * run loads it; ST_E_VERIFY or ST_E_CONFIG with err otherwise). */
int st_label_print(st_station *st, const char *uid, st_label_files *out,
		   char *err, size_t errlen);

/* ---- Results to the plant's MES (station/mes.c, docs/integration.md) ----
 * `station mes send`: every ended unit's result POSTed as JSON to mes.url,
 * store-and-forward from the records (a cursor moved only after a 2xx). */
typedef struct st_mes st_mes;

/* Ready the connector: the configuration's mes group (ST_E_CONFIG; none:
 * ST_E_NOTFOUND), its HMAC key file (never printed), the store read only
 * (ST_E_DB; ST_E_NOTFOUND with err "records: no records store ..."). */
int st_mes_open(st_station *st, st_mes **out, char *err, size_t errlen);
void st_mes_close(st_mes *m);

/* What a pass did. */
typedef struct st_mes_result {
	long long sent;           /* units the MES acknowledged (2xx) */
	long long rejected;       /* units the MES refused for good (a 4xx
				   * about the message), kept as rejected */
	long long pending;        /* ended units not yet acknowledged */
	long long cursor;         /* seq of the last acknowledged unit_end */
	char last_rejected[900];  /* the last of those: unit, key, device,
				   * the status and the start of the answer */
} st_mes_result;

/* One pass: every ended unit above the cursor, oldest first, each with up
 * to mes.retries attempts; stops at the first unit not acknowledged
 * (ST_E_IO, err names the unit, its key and the answer).  A unit the MES
 * refuses for good (HTTP 4xx other than 401/403/404/405/407/408/421/429:
 * its message, not the station's settings) is not retried: it is kept in
 * the state file's rejected list and passed.  The cursor and the outcome
 * go to <records>.mes.json. */
int st_mes_pass(st_mes *m, st_mes_result *res, char *err, size_t errlen);

/* `mes resend KEY|--all`: the units in the rejected list (the one with
 * idempotency key KEY, or all when key is NULL) sent again, each the same
 * message as before (the same key and body, rebuilt from the records):
 * res->sent those the MES took now (off the list), res->rejected those it
 * refused again (kept, with its new answer).  Stops at a unit not
 * delivered (ST_E_IO, err names it; it stays on the list); each outcome is
 * on disk before the next unit.  ST_E_NOTFOUND: no rejected unit KEY.
 * Passes and resends of one station take turns (<records>.mes.lock). */
int st_mes_resend(st_mes *m, const char *key, st_mes_result *res, char *err,
		  size_t errlen);

/* --follow: a pass, mes.interval_ms, again; after a failure 0.5 s, 1 s, ...
 * up to mes.backoff_max_ms, until SIGINT or SIGTERM (ST_OK).  fn hears
 * every pass that sent something (rc ST_OK) and every failure retried.
 * A failure retrying cannot mend (the store, memory) ends it. */
typedef void (*st_mes_follow_fn)(void *ctx, int rc, const st_mes_result *res,
				 const char *err, int retry_ms);
int st_mes_follow(st_mes *m, st_mes_follow_fn fn, void *ctx, char *err,
		  size_t errlen);

#define ST_MES_REJECTED_SHOWN 10

/* --status: the cursor, the lag and the last outcome (no network). */
typedef struct st_mes_state {
	char url[512];
	long long cursor;         /* last acknowledged unit_end seq (0: none) */
	long long last;           /* the store's last unit_end seq */
	long long pending;        /* ended units not yet acknowledged */
	char last_ok[64];         /* "" never */
	char last_error[700];     /* "" none */
	char last_error_at[64];
	long long rejected;       /* units the MES refused for good, ever */
	int nshown;               /* the newest of them, oldest first */
	struct st_mes_rejected {
		long long unit_id;
		long status;
		char key[200], uid[130], answer[164], at[32];
	} rejected_units[ST_MES_REJECTED_SHOWN];
} st_mes_state;
int st_mes_status(st_mes *m, st_mes_state *out, char *err, size_t errlen);

#endif

/* fuses.h — the fuse plan (inside station/: the engine and the profile
 * loader use it; front ends only see its events).
 *
 * A plan is an ordered list of fields.  Each field is whole 4-byte OTP
 * words of one bank (a word can be programmed only once, so two fields
 * never share a word), with its value from a named source: the profile's
 * root-of-trust hash, or a constant in a bit range of one word.  In a
 * bank the target burns bit by bit (drv_info.bitprog_banks: an ESP32's
 * eFuse BLOCK0), constants may share a word when their bits do not
 * overlap, and a field is judged by its own bits only.  Data
 * fields come first, then the write-protect fields, then at most one
 * lifecycle step.  docs/fuses.md describes the profile syntax. */
#ifndef ST_FUSES_H
#define ST_FUSES_H

#include <libconfig.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "device-drivers/drv.h"
#include "station.h"

#define ST_FUSE_MAX_FIELDS 16
#define ST_FUSE_WORD 4
#define ST_FUSE_WORDS (DRV_FUSE_BANK_LEN / ST_FUSE_WORD)

enum st_fuse_kind {
	ST_FUSE_DATA,          /* root of trust, secure-boot enable, debug disable */
	ST_FUSE_WRITE_PROTECT, /* locks data fields against later change */
	ST_FUSE_LIFECYCLE,     /* drv_set_lifecycle, always last */
};

typedef struct st_fuse_field {
	char name[32];
	enum st_fuse_kind kind;
	char source[24];        /* "root_of_trust" or "constant" */
	unsigned bank, word, nwords;
	unsigned bit_lo, bit_hi; /* constants: bit range in the word */
	uint8_t target[DRV_FUSE_BANK_LEN]; /* the field's words as they must read */
	uint8_t lifecycle;      /* ST_FUSE_LIFECYCLE: the state */
} st_fuse_field;

typedef struct st_fuse_plan {
	st_fuse_field f[ST_FUSE_MAX_FIELDS];
	int n;
	/* Banks where two fields share a word (their bits apart): only a
	 * target that burns those banks bit by bit can take the plan. */
	uint32_t shared_banks;
	int vpp_min_mv, vpp_max_mv;   /* programming conditions allowed */
	int temp_min_dc, temp_max_dc; /* tenths of a degree Celsius */
} st_fuse_plan;

/* Read the plan from the profile's "fuses" group (or, for a profile with
 * only root_of_trust.fuse_bank, the one-field plan that implies), check
 * it, and fill plan.  rot is the profile's root-of-trust hash.  On error
 * ST_E_CONFIG with err naming the file, field and rule. */
int st_fuse_plan_parse(config_t *c, const char *path, const uint8_t rot[32],
		       unsigned rot_bank, st_fuse_plan *plan, char *err, size_t errlen);

/* The plan of a loaded profile (config.c). */
const st_fuse_plan *st_profile_fuse_plan(const st_profile *p);

/* The fuse run's steps (ST_STEP_FUSE .. ST_STEP_LIFECYCLE_INTENT, station.h)
 * are recorded by fuses.c and read back by fuse_resume.c, by their words
 * (st_step_name), when a later run resumes the unit. */

#define ST_FUSE_RESUME_INTENTS 16

/* What a unit's earlier fuse runs left open, as their steps say: the burn
 * intents no outcome resolved, and whether a lock (lifecycle intent) was
 * intended for the identity now on the device.  Only this file's code
 * knows the fuse run's step names and details: the engine feeds it every
 * earlier step of the unit, oldest first, and asks it. */
typedef struct st_fuse_resume {
	struct {
		char field[32];
		char detail[160];
	} intent[ST_FUSE_RESUME_INTENTS];
	int nintents;           /* intents without an outcome */
	bool lock_intended;     /* a lifecycle intent since the identity */
	char pending[1024];     /* their details, "; "-joined: for the records
				 * ("" when none) */
} st_fuse_resume;

/* One earlier step of the unit (name, outcome, detail as recorded); a
 * step that is not the fuse run's is ignored. */
void st_fuse_resume_step(st_fuse_resume *s, const char *name,
			 const char *outcome, const char *detail);

/* A new identity was issued: a lock intended before it was not for it. */
void st_fuse_resume_identity(st_fuse_resume *s);

/* A record of the unit PASSed: that run resolved every intent. */
void st_fuse_resume_passed(st_fuse_resume *s);

/* What the engine hands the fuse run: the device, and how to record. */
typedef struct st_fuse_run {
	drv_dev *dev;
	const st_fuse_plan *plan;
	uint8_t lifecycle;      /* as IDENTIFY reported it */
	uint8_t banks;          /* fuse banks the target has */
	uint32_t bitprog_banks; /* drv_info.bitprog_banks: banks burned bit
				 * by bit, where a field is its bits only */
	bool dry_run;           /* plan only: read, never burn or record */
	/* What interrupted earlier runs of this unit left open, so the
	 * records say what became of those intents; NULL when nothing. */
	const st_fuse_resume *resume;
	/* Record a step (and announce it); nonzero stops the run.  durable:
	 * on disk, with every step before it, before this returns (a burn
	 * intent); else it may ride along with the next durable record. */
	int (*record)(void *ctx, st_step step, st_outcome outcome,
		      const char *detail, bool durable);
	/* A fresh request id for a burn (from the HSM's generator). */
	int (*request_id)(void *ctx, uint32_t *id);
	/* Dry run: one line per field. */
	void (*plan_line)(void *ctx, const char *line);
	/* Dry run, optional: a field of the plan as data (field "lifecycle"
	 * for the lifecycle step; action "burn", "skip", "refuse", "advance"),
	 * line the same as plan_line would get it.  When set, it is called
	 * instead of plan_line for those lines. */
	void (*plan_field)(void *ctx, const char *field, const char *current,
			   const char *target, const char *action, const char *line);
	void *ctx;
	/* Results. */
	char reason[512];       /* why it stopped, for the unit record */
	st_fuses summary;       /* burned, already, conflict, mismatch,
				   burn-failed, conditions, planned, ... */
	bool quarantine;        /* the unit must be set aside */
	bool interrupted;       /* the link was lost with a burn intent open:
				 * not a conflict, an unresolved intent the
				 * next presentation resolves by reading the
				 * device (as after a crash) */
	bool recorded;          /* the failure step is already recorded */
	char readback_hex[65];  /* root-of-trust bank as read back */
} st_fuse_run;

/* Check only, before the unit gets a key or a certificate: read every
 * field and decide as st_fuse_run_plan would (a field that cannot reach
 * its target, a lifecycle that would go back: ST_E_FUSE_CONFLICT with
 * run->quarantine), and, when armed and something is left to burn, the
 * programming conditions.  Reads only: never burns, never records, and
 * ignores run->resume (the run that follows resolves it).  Not for a
 * dry run. */
int st_fuse_check_plan(st_fuse_run *run, bool armed);

/* Plan → check → burn → verify, field by field, then the lifecycle step.
 * ST_OK when every field holds its target (burned now or before);
 * ST_E_FUSE_CONFLICT when the unit must be quarantined; another st_err
 * (link, conditions, records) otherwise; run->reason says what. */
int st_fuse_run_plan(st_fuse_run *run);

#endif

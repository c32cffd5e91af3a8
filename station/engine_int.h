/* engine_int.h — what the engine's files (unit.c, admit.c, slots.c, run.c)
 * share: the run (struct job), a slot worker, a unit in progress and the
 * helpers each file uses from another.  Not for anything outside station/'s
 * engine. */
#ifndef STATION_ENGINE_INT_H
#define STATION_ENGINE_INT_H

#include <pthread.h>
#include <stdarg.h>

#include "base.h"
#include "device-drivers/drv.h"
#include "station.h"
#include "station/st_int.h"
#include "station/fuses.h"
#include "station/roles.h"
#include "x509.h"


/* What next_unit decided for the unit in the programmer (a negative
 * st_err instead ends the slot). */
enum admit {
	ADMIT_SKIP,          /* not provisioned (done already, quarantined):
			      * said; release it */
	ADMIT_PROVISION,     /* provision it */
	ADMIT_CLONE,         /* another slot holds the same device ID right
			      * now: provisioned only to be refused on record */
};

/* What the operator has told one slot of an interactive run (job.lock). */
struct slot_ctl {
	bool paused;          /* stopped by the operator or by an error */
	bool held;            /* a unit that did not pass waits for a decision */
	bool held_quarantine; /* ... and its verdict is QUARANTINE */
	int cmd;              /* the decision (st_cmd), -1 while none */
};

/* What every worker shares, read-only once the workers run (except what
 * job.lock guards). */
struct job {
	hsm *h;
	rec_store *rec;
	const st_config *cfg;
	const st_profile *prof;
	const st_run *run;
	st_event_fn cb;
	void *cb_ctx;
	X509 *ca;            /* the issuing CA certificate (each worker dups it) */
	char ca_label[128];  /* the CA chosen for this run */
	hsm_keytype ca_type;
	pthread_mutex_t lock; /* guards active[], live[], stopping, ctl[] */
	pthread_cond_t cond;  /* signalled when stopping or ctl[] change */
	char active[ST_MAX_SLOTS][2 * DRV_UID_LEN + 1]; /* uid in work per slot */
	int64_t live[ST_MAX_SLOTS]; /* unit record open per slot (0: none) */
	/* Orders the interrupted-run checks of next_unit.  A unit record's
	 * birth is marked live from inside rec_unit_begin_ex (begun_live),
	 * under the store's lock, so no slot can read a new RUNNING row
	 * before it is live (and close a clone's record as "interrupted")
	 * — without holding this across the begin's commit wait. */
	pthread_mutex_t rec_order;
	bool stopping;        /* st_run_stop(): finish the unit in work, end */
	struct slot_ctl ctl[ST_MAX_SLOTS];
};

struct worker {
	const struct job *job;
	int slot;
	const char *port;
	pthread_t thread;
	st_summary sum;
};

#define HIST_ABANDONED 16

/* What the whole history of a device says, every record and step oldest
 * first (read_history): the identity that should be on it, the burns
 * whose outcome no record has, and the certificates left behind.  Any
 * sequence of interruptions is resumed from this, never from the newest
 * record alone. */
struct history {
	int64_t cert_unit;      /* record that issued the identity expected on
				 * the device (0: none) */
	char cert_serial[80], cert_fp[65];
	bool cert_revoked;      /* that identity is on the revocation list */
	int64_t last_unit;      /* newest record, its state */
	char last_state[16];
	int64_t good_unit;      /* newest record that ended PASS or UNFUSED
				 * (0: none), and the identity current then:
				 * while it is not revoked the device ID
				 * has a live identity, and a device that
				 * cannot be resumed with it is refused a
				 * second one (a cloned ID) */
	char good_state[16], good_serial[80];
	bool good_revoked;
	struct {                /* issued certificates neither current nor
				 * revoked: revoked when the unit goes on */
		int64_t unit;
		char serial[80];
	} abandoned[HIST_ABANDONED];
	int nabandoned;
	st_fuse_resume fuses;   /* burn intents without an outcome, the lock
				 * intended (station/fuses.c reads the steps) */
	/* The newest esp_secure_cert identity recorded before its HMAC key
	 * was burned (esp32_unit.c): what a resumed run takes when the chip
	 * already holds that key. */
	int64_t esp_unit;       /* 0: none */
	uint8_t esp_pub[65], esp_salt[32];
};

/* One measurement of a unit (unit_mes.c). */
struct unit_meas {
	st_meas m;
	double value;
	bool limited;         /* the profile sets [low, high] */
	double low, high;
	bool pass;
};

/* One unit in progress. */
struct unit {
	struct worker *w;
	drv_dev *dev;
	hsm_session *sess;
	hsm_obj ca_priv;
	X509 *ca;
	int64_t id;
	drv_info info;
	char reason[512];
	st_verdict result;
	st_fuses fuses;
	int err;
	st_cause cause;       /* why it did not pass, as a class (st_event) */
	bool stop_slot;       /* the link or the records failed: end this slot */
	bool stop_said;       /* ...and that was already reported (slot error) */
	bool hsm_lost;        /* the HSM session or token went away */
	int dup_slot;         /* another slot holds the same device ID */
	char serial[80];
	char fp[65];
	char pub_hex[2 * DRV_P256_POINT_LEN + 1];
	char rot_hex[65];
	char readback_hex[65];
	char *cert_pem;
	bool issued;          /* the CA signed a certificate for this record */
	int64_t t0;
	int64_t us_rec, us_hsm, us_x509; /* where the time went (unit_us) */
	char reprovision[768]; /* re-provisioned: who, why, the revoked serial */
	bool interrupted;     /* ended with an intent open (link lost): its
			       * record holds no certificate, the next
			       * presentation resumes or revokes it */
	struct history hist;  /* what every earlier record of the unit says */
	drv_linkstat link0;   /* the link's counters when this unit began */
	/* What the unit's record keeps of its code (docs/firmware.md):
	 * canonical JSON, "" when the profile has no firmware group. */
	char firmware[2048];  /* per image: name, version, slot, size, the
			       * device's SHA-256, the SBOM's SHA-256 */
	char attestation[4096]; /* nonce, statement, signature */
	/* What the MES gets of it (unit_mes.c, docs/integration.md): */
	struct unit_meas meas[ST_MEAS_COUNT]; /* in the order taken */
	int nmeas;
	char meas_json[2048];  /* unit_meas_text() */
	bool route_unchecked;  /* the MES did not answer; allow-and-flag */
};

/* unit.c: a unit's steps and verdict. */
int64_t unit_us(void);
int step(struct unit *u, st_step s, st_outcome o, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
int step_as(struct unit *u, st_step s, rec_durability d, st_outcome o,
	    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int fail(struct unit *u, st_step s, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
char *pem_of(X509 *cert);
bool uid_unreadable(const drv_info *info);
void run_unit(struct unit *u);
void finish_unit(struct unit *u);

/* unit_fw.c: the firmware steps (no-ops for a profile without images). */
/* esp32_unit.c: key_mode = "esp_secure_cert" (docs/esp32.md, "Identity"):
 * the HMAC key drawn, recorded without it, burned and wiped; the public key
 * and salt out.  Then the partition table and esp_secure_cert written. */
int esp_identity_key(struct unit *u, uint8_t pub[DRV_P256_POINT_LEN],
		     uint8_t salt[32]);
int esp_identity_write(struct unit *u, X509 *cert, const uint8_t salt[32]);
/* The profile writes a factory app (a firmware group): it proves possession
 * once in flash, after fw_write (docs/esp32.md, "The factory app"). */
bool esp_factory_app(const struct unit *u);
/* A recorded step of the unit's history: keep an identity intent. */
void esp_identity_hist(struct history *h, int64_t unit, const char *name,
		       const char *outcome, const char *detail);

int fw_precheck(struct unit *u);
int fw_write(struct unit *u);
int fw_attest(struct unit *u, X509 *cert);

/* unit_mes.c: the route check and the measurements. */
int route_check(struct unit *u);
int measure(struct unit *u, st_meas m, double value);
double ms_since(const struct unit *u, int64_t t0, int64_t rec0);
int measure_conditions(struct unit *u);
int measure_link(struct unit *u);
const char *unit_meas_text(struct unit *u);
const char *unit_flags_text(const struct unit *u);

/* admit.c: whether and how the unit in the programmer is provisioned. */
int resume_identity(struct unit *u, X509 **out);
void set_live(struct worker *w, int64_t id);
void unclaim_uid(struct worker *w);
int next_unit(struct worker *w, struct unit *u);
rec_unit_start unit_start_of(const struct worker *w, const struct unit *u);
int begin_unit(struct worker *w, struct unit *u);

/* slots.c: the slot workers (pthread start routines, arg: struct worker),
 * and what every file reports a slot's events and errors with. */
st_cause cause_of_err(int rc);
void emit(struct worker *w, st_event *ev);
void slot_error(struct worker *w, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
bool hsm_gone(int rc);
void record_failed(struct worker *w, int rc);
bool records_full(const char *why);
void records_stop_msg(char *buf, size_t len, const struct worker *w,
		      const char *uid, const char *why, bool open);
void *worker_main(void *arg);
void *worker_interactive(void *arg);

#endif

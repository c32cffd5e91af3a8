/* roles.h — engine-internal: signed files (profiles, the operator list),
 * who may do what (operator, supervisor, engineer), the revocation list.
 * Used by the CLI (main.c, cmd_profile.c) and the UI; see docs/roles.md
 * and docs/profiles.md. */
#ifndef ST_ROLES_H
#define ST_ROLES_H

#include <stdbool.h>
#include <stddef.h>

#include "hsm/hsm.h"
#include "records/records.h"
#include "station/st_int.h"

/* st_secret_src and st_secret_get() (pin.c) are in station.h. */

/* ---- Signed files (signed.c) ---- */

/* Make an engineering signing key of type t labelled label in the token
 * (persistent, never extractable) and write its public key as PEM to
 * pem_path, the trust anchor stations list in trust.profile_keys.  With
 * make false only export the public key of an existing one. */
int st_engkey(hsm_session *s, const char *label, hsm_keytype t, bool make,
	      const char *pem_path, char *err, size_t errlen);

/* Sign the file in with the HSM key label: a detached signature (DER, the
 * form `openssl dgst -sha256 -verify KEY.pem -signature SIG FILE` checks)
 * written to out through a temp file + rename. */
int st_sign_file(hsm_session *s, const char *label, const char *in,
		 const char *out, char *err, size_t errlen);

/* st_verify_file() is in station.h. */

/* st_signed_info and st_profile_load_signed() are in station.h. */

/* ---- Roles (roles.c): ST_ROLE_* and st_role_name() are in station.h ---- */

/* The operator list: a libconfig file (roles.operators) signed like a
 * profile; each entry a name, its roles and a yescrypt hash. */
typedef struct st_roster st_roster;

/* Verify (st_verify_file) and load the list named in cfg.  ST_E_CONFIG
 * when none is configured, ST_E_VERIFY when its signature does not check. */
int st_roster_load(const st_config *cfg, st_roster **out, char *err,
		   size_t errlen);
void st_roster_free(st_roster *r);

/* Is name on the list with password pw (pwlen bytes) and role?  ST_OK;
 * ST_E_PIN for an unknown name or a wrong password (one message for both,
 * no hint which); ST_E_STATE when the person lacks the role. */
int st_roster_auth(const st_roster *r, const char *name, const char *pw,
		   size_t pwlen, unsigned role, char *err, size_t errlen);

/* The one check of a person against the operator list, for every front
 * end (st_station_authenticate() is it on the handle): name for role with
 * password pw.  ST_OK; otherwise why says why and the refusal is recorded
 * in rec as event auth_refused (signed with h's audit key unless signed_:
 * rec has a signer already); recerr says why that record failed, or "".
 * pw NULL: the password could not be had (why says why): only record. */
int st_authenticate(const st_config *cfg, hsm *h, rec_store *rec,
		    const char *name, const char *pw, size_t pwlen, unsigned role,
		    bool signed_, char *why, size_t whylen, char *recerr,
		    size_t recerrlen);

/* st_password_hash() is in station.h. */

/* Release the quarantined device uid (its latest record QUARANTINE) on
 * the decision of supervisor, who has authenticated, for reason: a unit
 * record of its own (FAIL, "released from quarantine ... by supervisor
 * ...", a release step) and a quarantine_release event, so the next run
 * checks the device from the start.  ST_E_STATE when the device is not
 * quarantined.  *new_id gets the release record.  The store must have its
 * audit signer (st_audit_attach, or a run's). */
int st_quarantine_release(rec_store *rec, const st_config *cfg, const char *uid,
			  const char *supervisor, const char *reason,
			  int64_t *new_id, char *err, size_t errlen);

/* ---- Revocation list (crl.c) ---- */

/* Write an X.509 CRL (PEM) of every revoked certificate in the records,
 * issued and signed in the HSM by the CA labelled ca_label (NULL: the
 * newest valid), next update in days.  *count gets the entries. */
int st_crl_export(hsm_session *s, rec_store *rec, const char *ca_label,
		  int days, const char *out, long *count, char *err,
		  size_t errlen);

/* ---- Issued certificates and their fate (issued.c) ---- */

/* One certificate issued during a unit record (its `certificate` step),
 * valid during the callback. */
typedef struct st_issued {
	int64_t unit_id;        /* the record it was issued in */
	const char *uid, *state, *unit_reason, *started_at;
	const char *serial, *sha256; /* hex */
	const char *pem;        /* NULL when not on record (older stores) */
	bool live;              /* the identity of a PASS unit, not revoked */
	bool revoked;
	int crl_reason;         /* REC_CRL_..., when revoked */
	const char *revoked_at, *revoke_reason, *revoked_by;
} st_issued;

typedef int (*st_issued_fn)(void *ctx, const st_issued *c);

/* Every certificate issued during the units matching f (NULL: all),
 * oldest unit first.  A nonzero callback return stops the walk. */
int st_issued_list(rec_store *rec, const rec_filter *f, st_issued_fn fn,
		   void *ctx, char *err, size_t errlen);

/* The one place a unit's certificate is revoked automatically: the
 * certificate issued during unit record unit_id (found in its certificate
 * step) — or, with serial, the certificate with that serial issued during
 * any record of the same device (a resumed unit) — for a unit that did not
 * end PASS (FAIL, QUARANTINE, open), with an RFC 5280 CRLReason code, why,
 * and by (a supervisor, or "station ID").  serial_out (may be NULL) gets
 * its serial.  ST_OK when revoked now; ST_E_NOTFOUND when nothing was
 * issued; ST_E_EXISTS when the certificate is already revoked; ST_E_STATE
 * when it is the identity of a PASS unit (a resumed unit passed with it:
 * never revoked here); else the records error, in err. */
int st_unit_revoke(rec_store *rec, int64_t unit_id, const char *serial,
		   int crl_reason, const char *why, const char *by,
		   char *serial_out, size_t serial_len, char *err, size_t errlen);

/* "cessationOfOperation" ... for a CRLReason code. */
const char *st_crl_reason_name(int code);

/* st_cert_tally is in station.h. */
int st_cert_tally_get(rec_store *rec, st_cert_tally *t, char *err,
		      size_t errlen);

/* st_run_lock() and st_run_unlock() are in station.h. */

/* st_close_result is in station.h. */

/* `records close-interrupted`: with the run lock held exclusive, close
 * every RUNNING unit record (started before `before`, when given) as FAIL
 * "interrupted" on the decision of supervisor, revoking its certificate
 * (cessationOfOperation) first; then revoke every other issued
 * certificate of a unit that did not end PASS and is not revoked yet.
 * The store must have its audit signer.  A close_interrupted event
 * records who, why and the counts. */
int st_close_interrupted(rec_store *rec, const char *before,
			 const char *supervisor, const char *reason,
			 st_close_result *out, char *err, size_t errlen);

#endif

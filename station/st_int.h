/* st_int.h — the engine's internal declarations: what takes the lower
 * modules' types (hsm/, records/).  For the files of station/ only (and, until they
 * are behind the station handle, the commands listed in KNOWN in
 * scripts/check-layers.sh); front ends include station/station.h. */
#ifndef ST_INT_H
#define ST_INT_H

#include "hsm/hsm.h"
#include "records/records.h"
#include "station/station.h"

/* CA: create an issuing CA key of the given type in the token and a
 * self-signed certificate (stored in the token under the same label, and
 * written as PEM to pem_path when not NULL).  For labs; production CAs use
 * st_ca_csr() + st_ca_import().  Refuses (ST_E_EXISTS) when a complete CA
 * with that label exists (with pem_path its certificate is written
 * instead), or a key without certificate that is not from an interrupted
 * init (a pending `ca csr`).  An interrupted init (a marker object
 * "<label>.init" stays in the token until the end) is finished: the key
 * it made is certified, half a key pair is made again, the PEM file is
 * written; note (notelen bytes) then says what was repaired, else "". */
int st_ca_init(hsm_session *s, const char *label, hsm_keytype type,
	       const char *subject_cn, const char *org, int days,
	       const char *pem_path, char *note, size_t notelen,
	       char *err, size_t errlen);

/* CA: a PKCS#10 request (PEM, csr_path) for an issuing CA to be signed by
 * an offline root, signed in the HSM.  Makes the key unless one with that
 * label exists without a certificate; refuses when the CA already has a
 * certificate. */
int st_ca_csr(hsm_session *s, const char *label, hsm_keytype type,
	      const char *subject_cn, const char *org, const char *csr_path,
	      char *err, size_t errlen);

/* CA: install the signed CA certificate (first PEM in cert_path) and its
 * chain (the rest of cert_path, then chain_path) into the token.  Refused
 * unless the certificate matches the CA key in the token, is a CA
 * certificate, and verifies up to a self-signed root given in the files. */
int st_ca_import(hsm_session *s, const char *label, const char *cert_path,
		 const char *chain_path, char *err, size_t errlen);

/* Print subject, key type, validity, days left, status and fingerprint of
 * the CA labelled label, or of every issuing CA in the token when label is
 * NULL, to file (a FILE *). */
int st_ca_show(hsm_session *s, const char *label, void *file,
	       char *err, size_t errlen);

/* The station's audit key (station/audit.c): EC P-256 in the token,
 * labelled ST_AUDIT_LABEL, certificate issued by the issuing CA with the
 * audit extendedKeyUsage (x509.h ST_AUDIT_EKU_OID) and kept in the token
 * and in the records.  It signs every audit event. */
#define ST_AUDIT_LABEL "station-audit"

typedef struct st_audit st_audit;

/* Open the audit key on its own session.  Whatever state the token is in
 * is brought to a usable key with a valid audit certificate first: made
 * when missing (first use, `audit init`), repaired after an interrupted
 * creation, re-certified when its certificate lacks the audit
 * extendedKeyUsage or is no longer issued by a CA in the token (docs/
 * records.md, "The audit certificate").  Refused with err set when the
 * token holds something the station will not certify (a certificate of
 * another key, a key without certificate not generated in the token). */
int st_audit_open(hsm *h, const char *ca_label, const char *label,
		  const char *station_id, st_audit **out, char *err,
		  size_t errlen);

/* Did st_audit_open make a new key?  What did it repair in the token (a
 * sentence, or NULL)?  st_audit_use() records the repair. */
bool st_audit_created(const st_audit *a);
/* Take a key this open made (st_audit_created) back out of the token, key
 * pair and certificate, for a caller whose next step failed before the
 * key signed anything: the next attempt then starts from a clean token. */
void st_audit_discard(st_audit *a);
const char *st_audit_repaired(const st_audit *a);

/* Its certificate, DER, owned by a. */
const uint8_t *st_audit_cert(const st_audit *a, size_t *len);

/* A rec_sign_fn: the audit key signs the SHA-256 digest in the HSM
 * (ECDSA, DER; or RSA PKCS#1 v1.5), in the form `openssl dgst -sha256
 * -verify` checks; ctx is the st_audit.  Callers serialise (the records
 * call it under their lock). */
int st_audit_sign(void *ctx, const uint8_t digest[32], uint8_t *sig,
		  size_t cap, size_t *siglen);

/* Sign rec's events with a from now on (rec_set_signer), and record, as
 * signed events, what opening it repaired (audit_key_repair) and, when the
 * store holds older certificates of the same key, that this one supersedes
 * them (audit_recertified).  On failure err is set and rec may be left
 * with a as its signer: detach or replace it. */
int st_audit_use(st_audit *a, rec_store *rec, char *err, size_t errlen);

void st_audit_close(st_audit *a);

/* Records outside a run: sign events with the audit key (as a run does)
 * until st_audit_detach().  ca_label: cfg's, else "issuing-ca". */
int st_audit_attach(hsm *h, rec_store *rec, const st_config *cfg,
		    st_audit **out, char *err, size_t errlen);
void st_audit_detach(rec_store *rec, st_audit *a);

/* Provision: one worker thread per slot, each with its own HSM session and
 * programmer.  Returns ST_OK when the run itself could start (results are
 * in sum and the events), or an error when nothing could be started (the
 * CA key or certificate is missing, ...), with err filled in. */
int st_provision(hsm *h, rec_store *rec, const st_config *cfg,
		 const st_profile *prof, const st_run *run,
		 st_event_fn cb, void *cb_ctx, st_summary *sum,
		 char *err, size_t errlen);

/* Start the slot workers and return at once.  h, rec, cfg, prof and run
 * must stay valid until st_run_wait() returns.  Errors as st_provision(). */
int st_run_start(hsm *h, rec_store *rec, const st_config *cfg,
		 const st_profile *prof, const st_run *run,
		 st_event_fn cb, void *cb_ctx, st_run_handle **out,
		 char *err, size_t errlen);

/* Open the token named in cfg and log the user in with pin (pinlen bytes,
 * the caller wipes it).  ST_E_PIN for a wrong PIN; err says what failed.
 * *out is set only on success; free with hsm_close(). */
int st_hsm_login(const st_config *cfg, const char *pin, size_t pinlen,
		 hsm **out, char *err, size_t errlen);

/* The two halves of st_hsm_login(), for a caller that has something to say
 * between them (the CLI warns about the PIN count before the attempt):
 * st_hsm_open() opens the token (*out set only on success); st_hsm_auth()
 * logs the user in on it, ST_E_PIN for a wrong PIN, err says what failed
 * (h stays open either way). */
int st_hsm_open(const st_config *cfg, hsm **out, char *err, size_t errlen);
int st_hsm_auth(const st_config *cfg, hsm *h, const char *pin, size_t pinlen,
		char *err, size_t errlen);

/* Subject CN (or the whole subject) and whole days left of the issuing CA
 * a run would choose (labelled label, or with label NULL the newest valid
 * one in the token), for a front end's header. */
int st_ca_info(hsm *h, const char *label, char *subject, size_t sublen,
	       int *days_left, char *err, size_t errlen);

/* For the engine's own commands until they are behind the handle: the
 * token logged in (NULL if not) and the store opened (NULL if not). */
hsm *st_station_hsm(st_station *st);
rec_store *st_station_store(st_station *st);

/* A rec_cert_check_fn, ctx the st_trust: an audit certificate counts
 * only when one of the CAs issued and signed it, it is not a CA, and it
 * carries the audit extendedKeyUsage; a CA-issued certificate without it
 * counts only for a key such an audit certificate certifies too (the
 * old certificate of a re-certified key: REC_CERT_SUPERSEDED), so a device
 * certificate never does. */
int st_trust_check_audit(void *ctx, const char *pem, char *why, size_t len);

/* Open the records of st's configuration as mode says (station.c): ST_OK,
 * or rc with err the sentence an operator acts on (ST_E_NOTFOUND: "no
 * records store at PATH (records.path in CONFIG): ..."). *out as
 * rec_open_mode: rec_close() it either way. */
int st_store_open_as(st_station *st, st_store_mode mode, rec_store **out,
		     char *err, size_t errlen);

/* For an engine service (sync, mes, labels): st's store opened as mode
 * (st_station_store_open), into *r.  ST_OK; ST_E_NOTFOUND when there is
 * none, else ST_E_DB; err "records: <why>". */
int st_station_records_for(st_station *st, st_store_mode mode, rec_store **r,
			   char *err, size_t errlen);

/* records_cmds.c, shared with evidence.c: the records handle of the
 * records commands, and the conversions at the records boundary. */
struct st_records {
	rec_store *r;
};
rec_filter st_rec_filter_of(const st_unit_filter *f);
st_unit_row st_unit_row_of(const rec_unit_row *u);

/* key_mode = "esp_secure_cert": an ESP32-C3's identity, the key derived
 * on the chip from an eFuse HMAC key (station/esp32_unit.c, docs/esp32.md). */
bool st_profile_esp_identity(const st_profile *p);

#endif

/* cmds.c — what the commands ask of the station handle (station.h, "What
 * the commands ask of the station"): the work of `profile`, `crl`,
 * `quarantine`, `records close-interrupted` and `ca` on the handle's
 * store and login, so that the CLI only parses and prints. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "station/roles.h"
#include "station/st_int.h"
#include "station/x509.h"

/* The store, or ST_E_STATE with err. */
static rec_store *store(st_station *st, char *err, size_t errlen)
{
	rec_store *rec = st_station_store(st);

	if (!rec)
		snprintf(err, errlen, "the records are not open");
	return rec;
}

/* A session on the logged-in token: ST_OK, ST_E_STATE when not logged in,
 * ST_E_NOTOKEN (err: the token's message) when none opens. */
static int session(st_station *st, hsm_session **s, char *err, size_t errlen)
{
	hsm *h = st_station_hsm(st);

	*s = NULL;
	if (!h) {
		snprintf(err, errlen, "not logged in to the token");
		return ST_E_STATE;
	}
	if (hsm_session_open(h, s)) {
		snprintf(err, errlen, "%s", hsm_errmsg(h));
		return ST_E_NOTOKEN;
	}
	return ST_OK;
}

/* An operation's own ST_E_NOTOKEN would read as "no session": call it
 * what it is, an HSM failure. */
static int op_rc(int rc)
{
	return rc == ST_E_NOTOKEN ? ST_E_HSM : rc;
}

bool st_key_type_known(const char *name)
{
	hsm_keytype t;

	return name && !hsm_keytype_parse(name, &t);
}

int st_station_sign_file(st_station *st, const char *label, const char *in,
			 const char *out, char *err, size_t errlen)
{
	hsm_session *s;
	int rc = session(st, &s, err, errlen);

	if (!rc)
		rc = op_rc(st_sign_file(s, label, in, out, err, errlen));
	hsm_session_close(s);
	return rc;
}

int st_station_engkey(st_station *st, const char *label, const char *key_type,
		      bool make, const char *pem_path, char *err, size_t errlen)
{
	hsm_keytype t = HSM_KEY_P256;
	hsm_session *s;
	int rc;

	if (key_type && hsm_keytype_parse(key_type, &t)) {
		snprintf(err, errlen, "unknown key type '%s'", key_type);
		return ST_E_INVAL;
	}
	rc = session(st, &s, err, errlen);
	if (!rc)
		rc = op_rc(st_engkey(s, label, t, make, pem_path, err, errlen));
	hsm_session_close(s);
	return rc;
}

int st_station_record_profile_install(st_station *st, const char *engineer,
				      const st_profile *prof,
				      const st_signed_info *info,
				      const char *from, const char *path,
				      char *err, size_t errlen)
{
	rec_store *rec = store(st, err, errlen);

	if (!rec)
		return ST_E_STATE;
	if (st_station_audit_attach(st, err, errlen))
		return ST_E_STATE;
	if (rec_event(rec, "profile_install", NULL, "engineer", engineer,
		      "profile", st_profile_name(prof), "profile_digest", info->digest,
		      "profile_signer", info->signer, "from", from, "path", path,
		      NULL)) {
		snprintf(err, errlen, "%s", rec_errmsg(rec));
		return ST_E_DB;
	}
	return ST_OK;
}

int st_station_records_verify(st_station *st, char *err, size_t errlen)
{
	rec_store *rec = store(st, err, errlen);
	rec_verify_result v;
	int rc;

	if (!rec)
		return ST_E_STATE;
	rc = rec_verify(rec, NULL, NULL, &v);
	if (rc)
		snprintf(err, errlen, "%s", rec_errmsg(rec));
	return rc;
}

int st_station_crl_export(st_station *st, int days, const char *out,
			  long *count, char *err, size_t errlen)
{
	rec_store *rec = store(st, err, errlen);
	hsm_session *s = NULL;
	int rc;

	if (!rec)
		return ST_E_STATE;
	rc = session(st, &s, err, errlen);
	if (!rc)
		rc = op_rc(st_crl_export(s, rec, st_station_config(st)->ca_label,
					 days, out, count, err, errlen));
	hsm_session_close(s);
	return rc;
}

int st_station_record_crl_export(st_station *st, long entries, const char *out,
				 char *err, size_t errlen)
{
	rec_store *rec = store(st, err, errlen);
	char n[24];

	if (!rec)
		return ST_E_STATE;
	snprintf(n, sizeof(n), "%ld", entries);
	err[0] = '\0';
	if (st_station_audit_attach(st, err, errlen))
		return ST_E_STATE;
	if (rec_event(rec, "crl_export", NULL, "entries", n, "out", out, NULL)) {
		snprintf(err, errlen, "%s", rec_errmsg(rec));
		return ST_E_DB;
	}
	return ST_OK;
}

int st_station_cert_tally(st_station *st, st_cert_tally *t, char *err,
			  size_t errlen)
{
	rec_store *rec = store(st, err, errlen);

	return rec ? st_cert_tally_get(rec, t, err, errlen) : ST_E_STATE;
}

int st_station_last_unit(st_station *st, const char *uid, int64_t *unit_id,
			 char *state, size_t statelen)
{
	char err[64];
	rec_store *rec = store(st, err, sizeof(err));

	return rec ? rec_last_unit(rec, uid, unit_id, state, statelen) : ST_E_STATE;
}

int st_station_close_interrupted(st_station *st, const char *before,
				 const char *supervisor, const char *reason,
				 st_close_result *out, char *err, size_t errlen)
{
	rec_store *rec = store(st, err, errlen);

	return rec ? st_close_interrupted(rec, before, supervisor, reason, out, err,
					  errlen) : ST_E_STATE;
}

const char *st_key_type_name(const char *key_type)
{
	hsm_keytype t = HSM_KEY_P256;

	if (key_type && hsm_keytype_parse(key_type, &t))
		return NULL;
	return hsm_keytype_name(t);
}

int st_station_ca_mechanisms(st_station *st, const char *key_type, char *err,
			     size_t errlen)
{
	hsm *h = st_station_hsm(st);
	hsm_keytype t = HSM_KEY_P256;
	hsm_mech need[2];

	if (!h) {
		snprintf(err, errlen, "not logged in to the token");
		return ST_E_STATE;
	}
	if (key_type && hsm_keytype_parse(key_type, &t)) {
		snprintf(err, errlen, "unknown key type '%s'", key_type);
		return ST_E_INVAL;
	}
	need[0] = hsm_keytype_genmech(t);
	need[1] = HSM_M_ECDSA;
	switch (hsm_keytype_sigmech(t)) {
	case HSM_SIG_RSA_PKCS: need[1] = HSM_M_RSA_PKCS; break;
	case HSM_SIG_EDDSA: need[1] = HSM_M_EDDSA; break;
	default: break;
	}
	if (hsm_check_mechanisms(h, need, 2)) {
		snprintf(err, errlen, "a %s CA: %s", hsm_keytype_name(t), hsm_errmsg(h));
		return ST_E_HSM;
	}
	return ST_OK;
}

int st_station_ca(st_station *st, st_ca_op op, const st_ca_args *a, char *note,
		  size_t notelen, char *err, size_t errlen)
{
	hsm_keytype t = HSM_KEY_P256;
	hsm_session *s;
	int rc;

	if (note && notelen)
		note[0] = '\0';
	if (a->key_type && hsm_keytype_parse(a->key_type, &t)) {
		snprintf(err, errlen, "unknown key type '%s'", a->key_type);
		return ST_E_INVAL;
	}
	rc = session(st, &s, err, errlen);
	if (rc)
		return rc;
	switch (op) {
	case ST_CA_INIT:
		rc = st_ca_init(s, a->label, t, a->cn, a->org, a->days, a->out, note,
				notelen, err, errlen);
		break;
	case ST_CA_CSR:
		rc = st_ca_csr(s, a->label, t, a->cn, a->org, a->out, err, errlen);
		break;
	case ST_CA_IMPORT:
		rc = st_ca_import(s, a->label, a->in, a->chain, err, errlen);
		break;
	case ST_CA_SHOW:
		rc = st_ca_show(s, a->label, a->show, err, errlen);
		break;
	}
	hsm_session_close(s);
	return op_rc(rc);
}

int st_station_ca_repair_record(st_station *st, const char *label,
				const char *note, char *err, size_t errlen)
{
	const st_config *cfg = st_station_config(st);
	hsm *h = st_station_hsm(st);
	rec_store *rec = NULL;
	st_audit *a = NULL;
	int rc = ST_OK;

	err[0] = '\0';
	if (access(cfg->records_path, F_OK) != 0)
		return ST_OK;
	if (rec_open_mode(cfg->records_path, REC_OPEN_WRITE, &rec) ||
	    st_audit_attach(h, rec, cfg, &a, err, errlen) ||
	    rec_event(rec, "ca_repair", NULL, "ca", label, "repair", note, NULL)) {
		if (!err[0])
			snprintf(err, errlen, "%s", rec ? rec_errmsg(rec) :
				 "cannot open the records");
		rc = ST_E_DB;
	}
	st_audit_detach(rec, a);
	rec_close(rec);
	return rc;
}

int st_cert_der_write_pem(const char *path, const uint8_t *der, size_t len,
			  char *err, size_t errlen)
{
	const unsigned char *p = der;
	X509 *x = der ? d2i_X509(NULL, &p, (long)len) : NULL;
	int rc;

	if (!x)
		return ST_E_INVAL;
	rc = st_write_pem(path, x, NULL, err, errlen);
	X509_free(x);
	return rc;
}

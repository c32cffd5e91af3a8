/* roles.c — who may do what.  People come from a signed operator list (a
 * libconfig file checked like a profile, see signed.c) with a yescrypt
 * hash per person, made and checked by libxcrypt (crypt_gensalt_rn,
 * crypt_r): salted, slow, and a format every Linux system knows.  No
 * password is ever kept here beyond the call that checks it. */
#include <crypt.h>
#include <libconfig.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "station.h"
#include "station/st_int.h"
#include "station/roles.h"

#define NAME_MAX_LEN 64

struct person {
	char name[NAME_MAX_LEN];
	char hash[CRYPT_OUTPUT_SIZE];
	unsigned roles;
};

struct st_roster {
	struct person *p;
	size_t n;
};

static const char *const role_names[] = { "operator", "supervisor", "engineer" };

const char *st_role_name(unsigned role)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(role_names); i++)
		if (role == 1u << i)
			return role_names[i];
	return "?";
}

/* One entry of the list; err names the entry and the field. */
static int take_person(config_setting_t *e, const char *path, int idx,
		       struct person *out, char *err, size_t errlen)
{
	const char *name = NULL, *hash = NULL;
	config_setting_t *roles;
	int line = config_setting_source_line(e);

	if (!config_setting_lookup_string(e, "name", &name) || !*name ||
	    strlen(name) >= NAME_MAX_LEN) {
		snprintf(err, errlen, "%s:%d: operators entry %d: 'name' must be a "
			 "non-empty string of at most %d characters", path, line, idx + 1,
			 NAME_MAX_LEN - 1);
		return ST_E_CONFIG;
	}
	if (!config_setting_lookup_string(e, "hash", &hash) ||
	    strncmp(hash, "$y$", 3) || strlen(hash) >= sizeof(out->hash)) {
		snprintf(err, errlen, "%s:%d: operator '%s': 'hash' must be a yescrypt "
			 "hash (\"$y$...\") as 'station operator hash' prints", path,
			 line, name);
		return ST_E_CONFIG;
	}
	roles = config_setting_lookup(e, "roles");
	if (!roles || !config_setting_is_aggregate(roles) ||
	    config_setting_length(roles) == 0) {
		snprintf(err, errlen, "%s:%d: operator '%s': 'roles' must be a list "
			 "such as [\"operator\", \"supervisor\"]", path, line, name);
		return ST_E_CONFIG;
	}
	for (int i = 0; i < config_setting_length(roles); i++) {
		const char *r = config_setting_get_string_elem(roles, i);
		size_t k;

		for (k = 0; r && k < ST_ARRAY_SIZE(role_names); k++)
			if (!strcmp(r, role_names[k]))
				break;
		if (!r || k == ST_ARRAY_SIZE(role_names)) {
			snprintf(err, errlen, "%s:%d: operator '%s': role '%s' is not "
				 "one of operator, supervisor, engineer", path, line,
				 name, r ? r : "(not a string)");
			return ST_E_CONFIG;
		}
		out->roles |= 1u << k;
	}
	snprintf(out->name, sizeof(out->name), "%s", name);
	snprintf(out->hash, sizeof(out->hash), "%s", hash);
	return ST_OK;
}

int st_roster_load(const st_config *cfg, st_roster **out, char *err,
		   size_t errlen)
{
	const char *path = cfg->operators_path;
	st_signed_info info;
	config_setting_t *list;
	st_roster *r = NULL;
	config_t c;
	int rc, n;

	*out = NULL;
	if (!path) {
		snprintf(err, errlen, "no operator list: set roles.operators in the "
			 "station configuration (a signed list, see docs/roles.md)");
		return ST_E_CONFIG;
	}
	rc = st_verify_file(cfg, path, NULL, &info, err, errlen);
	if (rc)
		return rc;
	config_init(&c);
	/* Parsed from the file again: compare what was verified (below). */
	if (!config_read_file(&c, path)) {
		snprintf(err, errlen, "%s:%d: %s", path, config_error_line(&c),
			 config_error_text(&c));
		rc = ST_E_CONFIG;
		goto cleanup;
	}
	list = config_lookup(&c, "operators");
	n = list && config_setting_is_list(list) ? config_setting_length(list) : -1;
	if (n < 0) {
		snprintf(err, errlen, "%s: 'operators' must be a list of "
			 "{ name; roles; hash; } entries", path);
		rc = ST_E_CONFIG;
		goto cleanup;
	}
	r = calloc(1, sizeof(*r));
	if (r)
		r->p = calloc((size_t)n + 1, sizeof(*r->p));
	if (!r || !r->p) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	for (int i = 0; i < n; i++) {
		rc = take_person(config_setting_get_elem(list, (unsigned)i), path, i,
				 &r->p[r->n], err, errlen);
		if (rc)
			goto cleanup;
		for (size_t j = 0; j < r->n; j++)
			if (!strcmp(r->p[j].name, r->p[r->n].name)) {
				snprintf(err, errlen, "%s: operator '%s' is listed twice",
					 path, r->p[j].name);
				rc = ST_E_CONFIG;
				goto cleanup;
			}
		r->n++;
	}
	{
		st_signed_info again;

		/* the list must not change between the check and the parse */
		rc = st_verify_file(cfg, path, NULL, &again, err, errlen);
		if (!rc && strcmp(again.digest, info.digest)) {
			snprintf(err, errlen, "%s changed while it was being read: try "
				 "again", path);
			rc = ST_E_VERIFY;
		}
		if (rc)
			goto cleanup;
	}
	*out = r;
	r = NULL;
cleanup:
	config_destroy(&c);
	st_roster_free(r);
	return rc;
}

void st_roster_free(st_roster *r)
{
	if (!r)
		return;
	free(r->p);
	free(r);
}

int st_roster_auth(const st_roster *r, const char *name, const char *pw,
		   size_t pwlen, unsigned role, char *err, size_t errlen)
{
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	char phrase[CRYPT_MAX_PASSPHRASE_SIZE], dummy[CRYPT_GENSALT_OUTPUT_SIZE];
	const struct person *who = NULL;
	const char *out;
	int rc = ST_E_PIN;

	if (!cd)
		return ST_E_NOMEM;
	for (size_t i = 0; name && i < r->n; i++)
		if (!strcmp(r->p[i].name, name))
			who = &r->p[i];
	if (pwlen >= sizeof(phrase)) {
		snprintf(err, errlen, "the password is too long");
		goto cleanup;
	}
	memcpy(phrase, pw, pwlen);
	phrase[pwlen] = '\0';
	/* An unknown name costs the same hash as a known one, so timing does
	 * not tell which names are on the list. */
	if (!who && !crypt_gensalt_rn("$y$", 0, NULL, 0, dummy, sizeof(dummy))) {
		snprintf(err, errlen, "cannot check the password (crypt_gensalt)");
		goto cleanup;
	}
	out = crypt_r(phrase, who ? who->hash : dummy, cd);
	if (!who || !out || out[0] == '*' || strlen(out) != strlen(who->hash) ||
	    CRYPTO_memcmp(out, who->hash, strlen(out))) {
		snprintf(err, errlen, "'%s' is not on the operator list with that "
			 "password", name ? name : "");
		goto cleanup;
	}
	if (!(who->roles & role)) {
		snprintf(err, errlen, "'%s' is not %s %s (the operator list gives no "
			 "such role): ask someone who is", name,
			 role == ST_ROLE_ENGINEER ? "an" : "a", st_role_name(role));
		rc = ST_E_STATE;
		goto cleanup;
	}
	rc = ST_OK;
cleanup:
	st_wipe(phrase, sizeof(phrase));
	st_wipe(cd, sizeof(*cd));
	free(cd);
	return rc;
}

int st_password_hash(const char *pw, size_t pwlen, char *out, size_t cap,
		     char *err, size_t errlen)
{
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	char phrase[CRYPT_MAX_PASSPHRASE_SIZE], salt[CRYPT_GENSALT_OUTPUT_SIZE];
	const char *h;
	int rc = ST_E_CRYPTO;

	if (!cd)
		return ST_E_NOMEM;
	if (pwlen < 8 || pwlen >= sizeof(phrase)) {
		snprintf(err, errlen, "a password needs 8 to %zu characters",
			 sizeof(phrase) - 1);
		rc = ST_E_INVAL;
		goto cleanup;
	}
	memcpy(phrase, pw, pwlen);
	phrase[pwlen] = '\0';
	/* count 0: libxcrypt's default cost; random salt from the OS */
	if (!crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt))) {
		snprintf(err, errlen, "cannot make a salt (crypt_gensalt)");
		goto cleanup;
	}
	h = crypt_r(phrase, salt, cd);
	if (!h || h[0] == '*' || strlen(h) >= cap) {
		snprintf(err, errlen, "cannot hash the password (crypt)");
		goto cleanup;
	}
	snprintf(out, cap, "%s", h);
	rc = ST_OK;
cleanup:
	st_wipe(phrase, sizeof(phrase));
	st_wipe(cd, sizeof(*cd));
	free(cd);
	return rc;
}

int st_quarantine_release(rec_store *rec, const st_config *cfg, const char *uid,
			  const char *supervisor, const char *reason,
			  int64_t *new_id, char *err, size_t errlen)
{
	char state[32] = "", why[1024], qid[24];
	rec_unit_start st = { .uid = uid, .station = cfg->station_id,
			      .operator_name = supervisor };
	rec_unit_result e = { .result = st_verdict_name(ST_VERDICT_FAIL),
			      .reason = why };
	st_verdict v;
	int64_t id = 0;
	int rc;

	*new_id = 0;
	if (!reason || !*reason) {
		snprintf(err, errlen, "a release needs a reason");
		return ST_E_INVAL;
	}
	rc = rec_last_unit(rec, uid, &id, state, sizeof(state));
	if (rc == ST_E_NOTFOUND ||
	    (!rc && !(st_verdict_parse(state, &v) && v == ST_VERDICT_QUARANTINE))) {
		snprintf(err, errlen, "device %s is not quarantined (%s%s): nothing "
			 "to release", uid, rc ? "no record" : "its last record is ",
			 rc ? "" : state);
		return ST_E_STATE;
	}
	if (rc) {
		snprintf(err, errlen, "records: %s", rec_errmsg(rec));
		return rc;
	}
	/* The quarantine record stays as it is (records are final). */
	snprintf(why, sizeof(why), "released from quarantine (unit record %lld) by "
		 "supervisor %s: %s", (long long)id, supervisor, reason);
	snprintf(qid, sizeof(qid), "%lld", (long long)id);
	rc = rec_event(rec, "quarantine_release", uid, "supervisor", supervisor,
		       "reason", reason, "unit", qid, NULL);
	if (!rc)
		rc = rec_unit_begin(rec, &st, new_id);
	if (!rc)
		rc = rec_step(rec, *new_id, "release", "ok", why);
	if (!rc)
		rc = rec_unit_end(rec, *new_id, &e);
	if (rc)
		snprintf(err, errlen, "the release could not be recorded: %s; the unit "
			 "stays quarantined", rec_errmsg(rec));
	return rc;
}

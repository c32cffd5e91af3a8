/* config.c — station configuration and product profiles (libconfig files). */
#include <libconfig.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "station.h"
#include "station/st_int.h"
#include "station/firmware.h"
#include "station/fuses.h"
#include "station/schema.h"
#include "x509.h"

struct st_profile {
	char target_opts[128]; /* tpm2 handles as driver options, "" = none */
	char name[64];
	char version[32];
	char ca_key[16];         /* algorithms.ca_key, "" = any */
	bool require_work_order; /* quota.require_work_order */
	char org[128];
	int validity_days;
	st_cert_profile cert;
	char issuer[128];
	int ca_renewal_days;
	bool inject;
	bool esp_identity;       /* key_mode = "esp_secure_cert" (esp32_unit.c) */
	uint8_t rot_hash[32];
	unsigned rot_bank;
	char digest[65];
	st_fuse_plan plan;
	st_firmware fw;          /* firmware group (fw.n == 0: none) */
	bool has_fw;
};

#define CFG st_config_schema, st_config_schema_len
#define PRF st_profile_schema, st_profile_schema_len

/* *dst = a copy of the string setting at path, or of its documented
 * default (NULL when it has none). */
static int take_string(const config_t *c, const char *path, char **dst)
{
	const char *v = st_schema_string(c, CFG, path);

	free(*dst);
	*dst = v ? strdup(v) : NULL;
	return v && !*dst ? ST_E_NOMEM : ST_OK;
}

/* The configured slots: a programmer URI each (driver + port as `--slot`
 * takes them), named, no two alike. */
static int parse_slots(const config_t *c, const char *path, st_config *cfg,
		       st_problems *pl)
{
	const config_setting_t *list = config_lookup(c, "slots");

	if (!list || !config_setting_is_list(list) || st_problems_under(pl, "slots"))
		return ST_OK;
	for (int i = 0; i < config_setting_length(list) && i < ST_MAX_SLOTS; i++) {
		const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
		const char *port = NULL, *driver = NULL, *name = NULL;
		int line = config_setting_source_line(e);
		char uri[256], defname[32];

		config_setting_lookup_string(e, "port", &port);
		config_setting_lookup_string(e, "driver", &driver);
		config_setting_lookup_string(e, "name", &name);
		if (!port)
			continue;
		if (st_slot_uri(driver, port, uri, sizeof(uri)))
			continue; /* listed by the schema's check of the port */
		snprintf(defname, sizeof(defname), "slot %d", i + 1);
		if (!name)
			name = defname;
		for (int j = 0; j < cfg->nslots; j++) {
			if (!strcmp(cfg->slots[j].name, name))
				st_problem_add(pl, path, line, NULL, "'slots[%d].name' \"%s\" "
					       "is also the name of slots[%d]", i + 1, name,
					       j + 1);
			if (!strcmp(cfg->slots[j].uri, uri))
				st_problem_add(pl, path, line, NULL, "'slots[%d].port' %s is "
					       "also the port of slots[%d]", i + 1, uri, j + 1);
		}
		cfg->slots[cfg->nslots].name = strdup(name);
		cfg->slots[cfg->nslots].uri = strdup(uri);
		if (!cfg->slots[cfg->nslots].name || !cfg->slots[cfg->nslots].uri) {
			cfg->nslots++;
			return ST_E_NOMEM;
		}
		cfg->nslots++;
	}
	return ST_OK;
}

/* Copy a list (or array) of strings; absent: none.  Elements that are not
 * strings are left for the configuration check to name. */
static int take_string_list(const config_t *c, const char *path, char ***dst, size_t *n)
{
	const config_setting_t *set = config_lookup(c, path);
	int count = set ? config_setting_length(set) : 0;

	*dst = NULL;
	*n = 0;
	if (count <= 0)
		return ST_OK;
	*dst = calloc((size_t)count, sizeof(**dst));
	if (!*dst)
		return ST_E_NOMEM;
	for (int i = 0; i < count; i++) {
		const char *v = config_setting_get_string_elem(set, i);

		if (!v)
			continue;
		(*dst)[*n] = strdup(v);
		if (!(*dst)[*n])
			return ST_E_NOMEM;
		(*n)++;
	}
	return ST_OK;
}

/* Read and check the configuration at path (NULL: defaults) into cfg,
 * every problem into pl.  cfg is filled as far as the file allows even
 * when there are problems (config check still finds the profile). */
static int config_parse(const char *path, st_config *cfg, bool check_files,
			st_problems *pl)
{
	config_t c;
	int rc = ST_OK;
	long long retries;

	memset(cfg, 0, sizeof(*cfg));
	config_init(&c);
	if (path) {
		if (!st_schema_read(&c, path, "configuration", pl))
			goto cleanup;
		st_schema_validate(&c, path, CFG, check_files, pl);
	}
	if (take_string(&c, "station.id", &cfg->station_id) ||
	    take_string(&c, "station.log_file", &cfg->log_file) ||
	    take_string(&c, "hsm.module", &cfg->hsm_module) ||
	    take_string(&c, "hsm.token", &cfg->token_label) ||
	    take_string(&c, "hsm.ca_key", &cfg->ca_label) ||
	    take_string(&c, "hsm.init_args", &cfg->hsm_init_args) ||
	    take_string(&c, "records.path", &cfg->records_path) ||
	    take_string(&c, "records.cert_dir", &cfg->cert_dir) ||
	    take_string(&c, "records.checkpoint_dir", &cfg->checkpoint_dir) ||
	    take_string(&c, "profile", &cfg->profile_path) ||
	    take_string(&c, "trust.engineering_key", &cfg->engineering_key) ||
	    take_string(&c, "roles.operators", &cfg->operators_path) ||
	    take_string(&c, "labels.dir", &cfg->labels_dir) ||
	    take_string(&c, "labels.queue", &cfg->labels_queue) ||
	    take_string_list(&c, "trust.profile_keys", &cfg->profile_keys,
			     &cfg->nprofile_keys)) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	if (cfg->ca_label) {
		char why[512];

		if (st_config_key_label(&cfg->ca_label, why, sizeof(why)))
			st_problem_add(pl, path, 0, NULL, "'hsm.ca_key': %s", why);
	}
	if (cfg->hsm_init_args && !cfg->hsm_init_args[0]) {
		free(cfg->hsm_init_args);
		cfg->hsm_init_args = NULL;
	}
	/* The log default names the records file: not a real default. */
	if (!config_lookup(&c, "station.log_file")) {
		free(cfg->log_file);
		cfg->log_file = NULL;
	}
	cfg->timeout_ms = (int)st_schema_int(&c, CFG, "programmer.timeout_ms");
	retries = st_schema_int(&c, CFG, "programmer.retries");
	cfg->retries = retries ? (int)retries : -1;
	cfg->burn_fuses = st_schema_bool(&c, CFG, "defaults.burn_fuses");
	cfg->roles_require = st_schema_bool(&c, CFG, "roles.require");
	cfg->ui_bell_on_fail = st_schema_bool(&c, CFG, "ui.bell_on_fail");
	cfg->units = (int)st_schema_int(&c, CFG, "defaults.units");
	cfg->plug_wait_ms = (int)st_schema_int(&c, CFG, "defaults.plug_wait_s") * 1000;
	rc = parse_slots(&c, path, cfg, pl);
cleanup:
	config_destroy(&c);
	if (!rc && st_problems_count(pl))
		rc = ST_E_CONFIG;
	return rc;
}

/* err = the first problem, and how many more there are. */
static void first_problem(const st_problems *pl, const char *what,
			  const char *path, char *err, size_t errlen)
{
	int n = st_problems_count(pl);

	if (n > 1)
		snprintf(err, errlen, "%s (and %d more problem%s: 'station config check "
			 "%s %s' lists them all)", st_problem_text(pl, 0), n - 1,
			 n > 2 ? "s" : "", what, path ? path : "");
	else
		snprintf(err, errlen, "%s", n ? st_problem_text(pl, 0) : "out of memory");
}

int st_config_key_label(char **name, char *err, size_t errlen)
{
	char label[256], *dup;
	int rc;

	if (!*name || strncmp(*name, "pkcs11:", 7))
		return ST_OK;
	rc = hsm_uri_label(*name, label, sizeof(label), err, errlen);
	if (rc)
		return rc;
	dup = strdup(label);
	if (!dup)
		return ST_E_NOMEM;
	free(*name);
	*name = dup;
	return ST_OK;
}

int st_config_load(const char *path, st_config *cfg, char *err, size_t errlen)
{
	st_problems *pl = st_problems_new();
	int rc;

	if (!pl) {
		memset(cfg, 0, sizeof(*cfg));
		snprintf(err, errlen, "out of memory");
		return ST_E_NOMEM;
	}
	rc = config_parse(path, cfg, false, pl);
	if (rc) {
		first_problem(pl, "--config", path, err, errlen);
		st_config_free(cfg);
	}
	st_problems_free(pl);
	return rc;
}

void st_config_free(st_config *cfg)
{
	free(cfg->station_id);
	free(cfg->log_file);
	free(cfg->hsm_module);
	free(cfg->token_label);
	free(cfg->hsm_init_args);
	free(cfg->ca_label);
	free(cfg->records_path);
	free(cfg->cert_dir);
	free(cfg->checkpoint_dir);
	free(cfg->labels_dir);
	free(cfg->labels_queue);
	free(cfg->profile_path);
	for (int i = 0; i < cfg->nslots; i++) {
		free(cfg->slots[i].name);
		free(cfg->slots[i].uri);
	}
	for (size_t i = 0; i < cfg->nprofile_keys; i++)
		free(cfg->profile_keys[i]);
	free(cfg->profile_keys);
	free(cfg->engineering_key);
	free(cfg->operators_path);
	memset(cfg, 0, sizeof(*cfg));
}

/* SHA-256 of a whole file as hex; the profile's identity in the records. */
static int file_digest(const char *path, char out[65])
{
	uint8_t buf[4096], md[32];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	FILE *f = fopen(path, "rb");
	size_t n;
	int rc = ST_E_IO;

	if (!f || !ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
		goto cleanup;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		if (!EVP_DigestUpdate(ctx, buf, n))
			goto cleanup;
	if (ferror(f) || !EVP_DigestFinal_ex(ctx, md, &mdlen))
		goto cleanup;
	st_hex(md, 32, out);
	rc = ST_OK;
cleanup:
	if (f)
		fclose(f);
	EVP_MD_CTX_free(ctx);
	return rc;
}

/* Copy an optional string setting into dst (cap bytes); -1 if too long. */
static int opt_string(config_t *c, const char *key, char *dst, size_t cap,
		      const char *def)
{
	const char *v = NULL;

	if (!config_lookup_string(c, key, &v))
		v = def;
	if (!v) {
		dst[0] = '\0';
		return 0;
	}
	if (strlen(v) >= cap)
		return -1;
	snprintf(dst, cap, "%s", v);
	return 0;
}

/* Does OpenSSL accept value for extension nid?  Checked at load so a typo
 * in the profile stops the station before the first unit, not at it. */
static bool ext_ok(int nid, const char *value)
{
	X509_EXTENSION *e;

	if (!*value)
		return true;
	e = X509V3_EXT_conf_nid(NULL, NULL, nid, value);
	X509_EXTENSION_free(e);
	ERR_clear_error();
	return e != NULL;
}

/* The certificate part of a profile: subject template, extensions, the
 * issuing CA and its renewal window. */
static int cert_profile(config_t *c, const char *path, st_profile *p,
			char *err, size_t errlen)
{
	st_cert_profile *cp = &p->cert;
	const char *bad = NULL;

	if (opt_string(c, "certificate.subject", cp->subject, sizeof(cp->subject),
		       NULL))
		bad = "subject";
	else if (opt_string(c, "certificate.key_usage", cp->key_usage,
			    sizeof(cp->key_usage), "critical,digitalSignature"))
		bad = "key_usage";
	else if (opt_string(c, "certificate.extended_key_usage", cp->eku,
			    sizeof(cp->eku), "clientAuth,serverAuth"))
		bad = "extended_key_usage";
	else if (opt_string(c, "certificate.hardware_module_name", cp->hwtype_oid,
			    sizeof(cp->hwtype_oid), NULL))
		bad = "hardware_module_name";
	else if (opt_string(c, "certificate.crl_url", cp->crl_url, sizeof(cp->crl_url),
			    NULL))
		bad = "crl_url";
	else if (opt_string(c, "certificate.ocsp_url", cp->ocsp_url,
			    sizeof(cp->ocsp_url), NULL))
		bad = "ocsp_url";
	else if (opt_string(c, "certificate.issuer", p->issuer, sizeof(p->issuer), NULL))
		bad = "issuer";
	if (bad) {
		snprintf(err, errlen, "%s: 'certificate.%s' is too long", path, bad);
		return ST_E_CONFIG;
	}
	if (!strncmp(p->issuer, "pkcs11:", 7)) {
		char label[sizeof(p->issuer)], why[400];

		if (hsm_uri_label(p->issuer, label, sizeof(label), why, sizeof(why))) {
			snprintf(err, errlen, "%s: 'certificate.issuer': %s", path, why);
			return ST_E_CONFIG;
		}
		snprintf(p->issuer, sizeof(p->issuer), "%s", label);
	}
	if (cp->subject[0] && st_subject_check(cp->subject, err, errlen)) {
		char why[512];

		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "%s: 'certificate.subject': %.400s", path, why);
		return ST_E_CONFIG;
	}
	if (!ext_ok(NID_key_usage, cp->key_usage)) {
		snprintf(err, errlen, "%s: 'certificate.key_usage' is not a keyUsage "
			 "OpenSSL accepts (e.g. \"critical,digitalSignature,keyAgreement\")",
			 path);
		return ST_E_CONFIG;
	}
	if (!ext_ok(NID_ext_key_usage, cp->eku)) {
		snprintf(err, errlen, "%s: 'certificate.extended_key_usage' is not an "
			 "extendedKeyUsage OpenSSL accepts (e.g. \"clientAuth\")", path);
		return ST_E_CONFIG;
	}
	if (st_eku_names_audit(cp->eku)) {
		snprintf(err, errlen, "%s: 'certificate.extended_key_usage' names %s, "
			 "the station's audit-log usage: only the audit certificate may "
			 "carry it (a device holding it could sign a forged audit log); "
			 "remove it", path, ST_AUDIT_EKU_OID);
		return ST_E_CONFIG;
	}
	if (cp->hwtype_oid[0]) {
		ASN1_OBJECT *o = OBJ_txt2obj(cp->hwtype_oid, 1);

		ASN1_OBJECT_free(o);
		ERR_clear_error();
		if (!o) {
			snprintf(err, errlen, "%s: 'certificate.hardware_module_name' must be "
				 "the hwType OID in dotted form", path);
			return ST_E_CONFIG;
		}
	}
	p->ca_renewal_days = 30;
	config_lookup_int(c, "certificate.ca_renewal_days", &p->ca_renewal_days);
	if (p->ca_renewal_days < 0 || p->ca_renewal_days > 3650) {
		snprintf(err, errlen, "%s: 'certificate.ca_renewal_days' must be 0..3650",
			 path);
		return ST_E_CONFIG;
	}
	return ST_OK;
}

/* The optional "tpm2" group: where a TPM target keeps its identity
 * (key_handle: persistent 0x81xxxxxx; cert_nv, rot_nv: NV 0x01xxxxxx),
 * as driver options for drv_opts.target_opts. */
static int parse_tpm2(config_t *c, const char *path, char *out, size_t len,
		      char *err, size_t errlen)
{
	static const struct { const char *key, *opt; unsigned hi; } f[] = {
		{ "key_handle", "key", 0x81 }, { "cert_nv", "cert_nv", 0x01 },
		{ "rot_nv", "rot_nv", 0x01 },
	};
	config_setting_t *g = config_lookup(c, "tpm2");
	size_t n = 0;

	out[0] = '\0';
	if (!g)
		return ST_OK;
	if (!config_setting_is_group(g)) {
		snprintf(err, errlen, "%s: 'tpm2' must be a group { key_handle = "
			 "0x81020000; cert_nv = 0x01c10000; rot_nv = 0x01c10001; }", path);
		return ST_E_CONFIG;
	}
	for (size_t i = 0; i < ST_ARRAY_SIZE(f); i++) {
		long long v;

		if (!config_setting_lookup_int64(g, f[i].key, &v)) {
			int iv;

			if (!config_setting_lookup_int(g, f[i].key, &iv))
				continue;
			v = iv;
		}
		/* libconfig reads 0x81xxxxxx as a negative 32-bit int. */
		if (v < 0 && v >= -0x80000000LL)
			v += 0x100000000LL;
		if (v < 0 || v > 0xffffffffLL || (unsigned)(v >> 24) != f[i].hi) {
			snprintf(err, errlen, "%s: 'tpm2.%s' must be a %s handle 0x%02x......",
				 path, f[i].key, f[i].hi == 0x81 ? "persistent" : "NV", f[i].hi);
			return ST_E_CONFIG;
		}
		n += (size_t)snprintf(out + n, len - n, "%s%s=0x%08llx", n ? "&" : "",
				      f[i].opt, v);
	}
	return ST_OK;
}

const char *st_profile_target_opts(const st_profile *p)
{
	return p->target_opts[0] ? p->target_opts : NULL;
}

/* A rule spanning several settings failed with err ("FILE: ... 'field'
 * ..."): add it to pl at the line of the field it names (a setting, or a
 * fuse field by name), else of the section it belongs to. */
static void add_rule(st_problems *pl, const config_t *c, const char *path,
		     const char *section, const char *err)
{
	size_t plen = strlen(path);
	const char *msg = err, *q, *e;
	const config_setting_t *s = NULL, *plan;
	char field[128] = "";
	int line;

	if (!strncmp(err, path, plen) && !strncmp(err + plen, ": ", 2))
		msg = err + plen + 2;
	q = strchr(msg, '\'');
	e = q ? strchr(q + 1, '\'') : NULL;
	if (q && e && (size_t)(e - q) < sizeof(field))
		snprintf(field, sizeof(field), "%.*s", (int)(e - q - 1), q + 1);
	if (field[0])
		s = config_lookup(c, field);
	plan = config_lookup(c, "fuses.plan");
	for (int i = 0; !s && field[0] && plan && i < config_setting_length(plan); i++) {
		const config_setting_t *f = config_setting_get_elem(plan, (unsigned)i);
		const char *name = NULL;

		if (config_setting_lookup_string(f, "name", &name) && !strcmp(name, field))
			s = f;
	}
	line = s ? (int)config_setting_source_line(s) : st_schema_line(c, section);
	st_problem_add(pl, path, line, NULL, "%s", msg);
}

/* The certificate section's rules across settings (validity, subject or
 * organisation, extensions OpenSSL accepts). */
static void cert_rules(const config_t *c, const char *path, st_profile *p,
		       st_problems *pl)
{
	char err[512];
	const char *str = NULL;

	p->cert.validity_days = (int)st_schema_int(c, PRF, "certificate.validity_days");
	if (config_lookup_string(c, "certificate.validity", &str)) {
		p->cert.no_expiry = true;
		p->cert.validity_days = 36500;
	} else if (!config_lookup(c, "certificate.validity_days")) {
		st_problem_add(pl, path, st_schema_line(c, "certificate"), NULL,
			       "'certificate.validity_days' is missing: give 1..36500 "
			       "(or certificate.validity = \"no-expiry\" for the IEEE "
			       "802.1AR 99991231235959Z date)");
	}
	p->validity_days = p->cert.validity_days;
	str = st_schema_string(c, PRF, "certificate.organization");
	snprintf(p->org, sizeof(p->org), "%s", str ? str : "");
	snprintf(p->cert.org, sizeof(p->cert.org), "%s", p->org);
	if (cert_profile((config_t *)c, path, p, err, sizeof(err)))
		add_rule(pl, c, path, "certificate", err);
	else if (!p->cert.subject[0] && !p->org[0])
		st_problem_add(pl, path, st_schema_line(c, "certificate"), NULL,
			       "'certificate': give 'certificate.subject' (a template) "
			       "or 'certificate.organization'");
}

/* The first setting under g read from another file than path (an
 * @include), or NULL. */
static const config_setting_t *included(const config_setting_t *g, const char *path)
{
	for (int i = 0; i < config_setting_length(g); i++) {
		const config_setting_t *e = config_setting_get_elem(g, (unsigned)i), *in;
		const char *f = config_setting_source_file(e);

		if (f && strcmp(f, path))
			return e;
		if ((config_setting_is_group(e) || config_setting_is_list(e)) &&
		    (in = included(e, path)))
			return in;
	}
	return NULL;
}

/* Read and check the profile at path; every problem goes to pl. */
static int profile_parse(const char *path, st_profile **out, st_problems *pl)
{
	bool rot_ok = false;
	config_t c;
	st_profile *p = calloc(1, sizeof(*p));
	const char *str;
	char err[512];
	int rc = ST_OK;

	*out = NULL;
	config_init(&c);
	if (!p) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	if (!path) {
		st_problem_add(pl, "no profile given", 0, NULL, "give --profile FILE or "
			       "'profile' in the configuration");
		goto cleanup;
	}
	if (!st_schema_read(&c, path, "profile", pl))
		goto cleanup;
	/* The digest recorded with each unit (and a signature over the
	 * profile) covers this file only: the whole recipe must be in it. */
	{
		const config_setting_t *in = included(config_root_setting(&c), path);

		if (in)
			st_problem_add(pl, config_setting_source_file(in),
				       (int)config_setting_source_line(in), NULL,
				       "comes from an @include in %s: a profile must be "
				       "one file (its digest and signature cover only "
				       "that file)", path);
	}
	st_schema_validate(&c, path, PRF, false, pl);
	str = st_schema_string(&c, PRF, "name");
	snprintf(p->name, sizeof(p->name), "%s", str ? str : "");
	str = st_schema_string(&c, PRF, "version");
	snprintf(p->version, sizeof(p->version), "%s", str ? str : "");
	str = st_schema_string(&c, PRF, "algorithms.ca_key");
	snprintf(p->ca_key, sizeof(p->ca_key), "%s", str ? str : "");
	str = st_schema_string(&c, PRF, "key_mode");
	p->inject = str && !strcmp(str, "inject");
	p->esp_identity = str && !strcmp(str, "esp_secure_cert");
	p->require_work_order = st_schema_bool(&c, PRF, "quota.require_work_order");
	if (!st_problems_under(pl, "certificate"))
		cert_rules(&c, path, p, pl);
	/* The firmware group: every file checked now, before any unit; the
	 * root-of-trust hash is computed from its secure-boot key. */
	if (config_lookup(&c, "firmware") && !st_problems_under(pl, "firmware")) {
		int frc = st_fw_parse(&c, path, &p->fw, err, sizeof(err));

		if (frc == ST_E_NOMEM) {
			rc = frc;
			goto cleanup;
		}
		if (frc)
			st_problem_add(pl, path, st_schema_line(&c, "firmware"), NULL,
				       "firmware refused: %s", err);
		else
			p->has_fw = true;
	}
	if (!st_problems_under(pl, "root_of_trust") &&
	    (p->has_fw || !config_lookup(&c, "firmware"))) {
		const char *typed = NULL;
		uint8_t t[32];
		int before = st_problems_count(pl);

		config_lookup_string(&c, "root_of_trust.sha256", &typed);
		if (typed)
			st_unhex(typed, t, 32);
		if (p->has_fw) {
			memcpy(p->rot_hash, p->fw.rot, 32);
			if (typed && memcmp(t, p->rot_hash, 32)) {
				char h[65];

				st_hex(p->rot_hash, 32, h);
				st_problem_add(pl, path, st_schema_line(&c, "root_of_trust"),
					       NULL, "'root_of_trust.sha256' %s disagrees with "
					       "the hash of the secure-boot key %s (%s): the "
					       "root of trust is computed from the key, never "
					       "typed; remove root_of_trust.sha256",
					       typed, p->fw.key_file, h);
			}
		} else if (typed) {
			memcpy(p->rot_hash, t, 32);
		} else {
			st_problem_add(pl, path, st_schema_line(&c, "root_of_trust"), NULL,
				       "'root_of_trust': give 'firmware.secure_boot_key' "
				       "(the hash is computed from it) or "
				       "'root_of_trust.sha256'");
		}
		rot_ok = st_problems_count(pl) == before;
	}
	if (rot_ok) {
		p->rot_bank = (unsigned)st_schema_int(&c, PRF, "root_of_trust.fuse_bank");
		/* The plan's own rules (fuses.c), once its settings are well formed. */
		if (!st_problems_under(pl, "fuses") &&
		    st_fuse_plan_parse(&c, path, p->rot_hash, p->rot_bank, &p->plan,
				       err, sizeof(err)))
			add_rule(pl, &c, path, "fuses", err);
	}
	if (!st_problems_under(pl, "tpm2") &&
	    parse_tpm2(&c, path, p->target_opts, sizeof(p->target_opts), err,
		       sizeof(err)))
		add_rule(pl, &c, path, "tpm2", err);
	/* An ESP32-C3's lock, as its driver's option (docs/esp32.md). */
	if (!st_problems_under(pl, "esp32") && config_lookup(&c, "esp32")) {
		if (p->target_opts[0]) {
			snprintf(err, sizeof(err), "%s: a profile has a 'tpm2' or an "
				 "'esp32' group, not both: it is for one kind of target",
				 path);
			add_rule(pl, &c, path, "esp32", err);
		} else {
			snprintf(p->target_opts, sizeof(p->target_opts), "lock=%s",
				 st_schema_string(&c, PRF, "esp32.lock"));
		}
	}
	if (st_problems_count(pl))
		goto cleanup;
	if (file_digest(path, p->digest)) {
		st_problem_add(pl, path, 0, NULL, "cannot hash the profile");
		rc = ST_E_IO;
		goto cleanup;
	}
	*out = p;
	p = NULL;
cleanup:
	config_destroy(&c);
	st_profile_free(p);
	if (!rc && st_problems_count(pl))
		rc = ST_E_CONFIG;
	return rc;
}

int st_profile_load(const char *path, st_profile **out, char *err, size_t errlen)
{
	st_problems *pl = st_problems_new();
	int rc;

	*out = NULL;
	if (!pl) {
		snprintf(err, errlen, "out of memory");
		return ST_E_NOMEM;
	}
	rc = profile_parse(path, out, pl);
	if (rc)
		first_problem(pl, "--profile", path, err, errlen);
	st_problems_free(pl);
	return rc;
}

void st_profile_free(st_profile *p)
{
	if (p)
		st_fw_free(&p->fw);
	free(p);
}

const st_firmware *st_profile_firmware(const st_profile *p)
{
	return p->has_fw ? &p->fw : NULL;
}

const char *st_profile_name(const st_profile *p)
{
	return p->name;
}

const char *st_profile_digest(const st_profile *p)
{
	return p->digest;
}

const uint8_t *st_profile_rot_hash(const st_profile *p, unsigned *bank)
{
	if (bank)
		*bank = p->rot_bank;
	return p->rot_hash;
}

const st_fuse_plan *st_profile_fuse_plan(const st_profile *p)
{
	return &p->plan;
}

const char *st_profile_org(const st_profile *p)
{
	return p->org;
}

int st_profile_validity_days(const st_profile *p)
{
	return p->validity_days;
}

const char *st_profile_issuer(const st_profile *p)
{
	return p->issuer[0] ? p->issuer : NULL;
}

int st_profile_ca_renewal_days(const st_profile *p)
{
	return p->ca_renewal_days;
}

const st_cert_profile *st_profile_cert(const st_profile *p)
{
	return &p->cert;
}

bool st_profile_esp_identity(const st_profile *p)
{
	return p->esp_identity;
}

bool st_profile_key_inject(const st_profile *p)
{
	return p->inject;
}

const char *st_profile_version(const st_profile *p)
{
	return p->version;
}

bool st_profile_requires_work_order(const st_profile *p)
{
	return p->require_work_order;
}

const char *st_profile_ca_key(const st_profile *p)
{
	return p->ca_key[0] ? p->ca_key : NULL;
}

int st_config_check(const char *config_path, const char *profile_path,
		    void *problems, void *ok)
{
	st_problems *pl = st_problems_new();
	st_profile *p = NULL;
	st_config cfg;
	const char *prof = profile_path;
	int rc, n;

	if (!pl)
		return ST_E_NOMEM;
	rc = config_parse(config_path, &cfg, true, pl);
	/* A profile the configuration names but that is not there is one
	 * problem, already listed. */
	if (!prof && !st_problems_under(pl, "profile"))
		prof = cfg.profile_path;
	if (rc != ST_E_NOMEM && prof)
		rc = profile_parse(prof, &p, pl);
	n = st_problems_count(pl);
	for (int i = 0; i < n; i++)
		fprintf(problems, "%s\n", st_problem_text(pl, i));
	if (rc == ST_E_NOMEM) {
		n = ST_E_NOMEM;
	} else if (!n) {
		fprintf(ok, "OK: %s%s (station %s, token %s, %d slot%s)", config_path ?
			"configuration " : "no configuration file", config_path ?
			config_path : "", cfg.station_id, cfg.token_label, cfg.nslots,
			cfg.nslots == 1 ? "" : "s");
		if (p)
			fprintf(ok, "; profile %s (%s %s, key mode %s, %d fuse field%s, "
				"sha256 %.16s…)", prof, p->name, p->version[0] ? p->version :
				"unversioned", p->inject ? "inject" : "device", p->plan.n,
				p->plan.n == 1 ? "" : "s", p->digest);
		else
			fprintf(ok, "; no profile named");
		fputc('\n', ok);
	}
	st_profile_free(p);
	st_config_free(&cfg);
	st_problems_free(pl);
	return n;
}

void st_config_schema_print(void *out)
{
	st_schema_print(out);
}

void st_config_schema_print_man(void *out, bool profile)
{
	st_schema_print_man(out, profile);
}

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
#include "station/fuses.h"
#include "x509.h"

struct st_profile {
	char target_opts[128]; /* tpm2 handles as driver options, "" = none */
	char name[64];
	char org[128];
	int validity_days;
	st_cert_profile cert;
	char issuer[128];
	int ca_renewal_days;
	bool inject;
	uint8_t rot_hash[32];
	unsigned rot_bank;
	char digest[65];
	st_fuse_plan plan;
};

/* Copy a string setting (or the default when absent) into *dst. */
static int take_string(config_t *c, const char *path, const char *def, char **dst)
{
	const char *v = NULL;

	if (!config_lookup_string(c, path, &v))
		v = def;
	free(*dst);
	*dst = v ? strdup(v) : NULL;
	return v && !*dst ? ST_E_NOMEM : ST_OK;
}

/* Copy a list (or array) of strings; absent: none.  Elements that are not
 * strings are left for the configuration check to name. */
static int take_string_list(config_t *c, const char *path, char ***dst, size_t *n)
{
	config_setting_t *set = config_lookup(c, path);
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

int st_config_load(const char *path, st_config *cfg, char *err, size_t errlen)
{
	config_t c;
	int rc = ST_OK, timeout = 2000;

	memset(cfg, 0, sizeof(*cfg));
	config_init(&c);
	if (path && !config_read_file(&c, path)) {
		if (config_error_type(&c) == CONFIG_ERR_FILE_IO)
			snprintf(err, errlen, "cannot read configuration %s", path);
		else
			snprintf(err, errlen, "%s:%d: %s", path, config_error_line(&c),
				 config_error_text(&c));
		rc = ST_E_CONFIG;
		goto cleanup;
	}
	if (take_string(&c, "station.id", "station-1", &cfg->station_id) ||
	    take_string(&c, "hsm.module", "/usr/lib/softhsm/libsofthsm2.so", &cfg->hsm_module) ||
	    take_string(&c, "hsm.token", "station", &cfg->token_label) ||
	    take_string(&c, "hsm.ca_key", NULL, &cfg->ca_label) ||
	    take_string(&c, "records.path", "station-records.db", &cfg->records_path) ||
	    take_string(&c, "records.cert_dir", NULL, &cfg->cert_dir) ||
	    take_string(&c, "profile", NULL, &cfg->profile_path) ||
	    take_string(&c, "trust.engineering_key", NULL, &cfg->engineering_key) ||
	    take_string(&c, "roles.operators", NULL, &cfg->operators_path) ||
	    take_string_list(&c, "trust.profile_keys", &cfg->profile_keys,
			     &cfg->nprofile_keys)) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	{
		int req = 0;

		config_lookup_bool(&c, "roles.require", &req);
		cfg->roles_require = req;
	}
	config_lookup_int(&c, "programmer.timeout_ms", &timeout);
	if (timeout < 50 || timeout > 600000) {
		snprintf(err, errlen, "%s: programmer.timeout_ms must be 50..600000",
			 path ? path : "defaults");
		rc = ST_E_CONFIG;
		goto cleanup;
	}
	cfg->timeout_ms = timeout;
cleanup:
	config_destroy(&c);
	if (rc)
		st_config_free(cfg);
	return rc;
}

void st_config_free(st_config *cfg)
{
	free(cfg->station_id);
	free(cfg->hsm_module);
	free(cfg->token_label);
	free(cfg->ca_label);
	free(cfg->records_path);
	free(cfg->cert_dir);
	free(cfg->profile_path);
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
	if (cp->subject[0] && st_subject_check(cp->subject, err, errlen)) {
		char why[256];

		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "%s: 'certificate.subject': %s", path, why);
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

int st_profile_load(const char *path, st_profile **out, char *err, size_t errlen)
{
	config_t c;
	st_profile *p = calloc(1, sizeof(*p));
	const char *name = NULL, *org = NULL, *rot = NULL, *str = NULL;
	int days = 0, bank = 0, rc = ST_E_CONFIG;

	*out = NULL;
	config_init(&c);
	if (!p) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	if (!path) {
		snprintf(err, errlen, "no profile given (--profile or 'profile' in the configuration)");
		goto cleanup;
	}
	if (!config_read_file(&c, path)) {
		if (config_error_type(&c) == CONFIG_ERR_FILE_IO)
			snprintf(err, errlen, "cannot read profile %s", path);
		else
			snprintf(err, errlen, "%s:%d: %s", path, config_error_line(&c),
				 config_error_text(&c));
		goto cleanup;
	}
	if (!config_lookup_string(&c, "name", &name) || !*name ||
	    strlen(name) >= sizeof(p->name)) {
		snprintf(err, errlen, "%s: 'name' is missing or too long", path);
		goto cleanup;
	}
	if (!config_lookup_string(&c, "certificate.organization", &org))
		org = "";
	if (strlen(org) >= sizeof(p->org)) {
		snprintf(err, errlen, "%s: 'certificate.organization' is too long", path);
		goto cleanup;
	}
	if (config_lookup_string(&c, "certificate.validity", &str) &&
	    !strcmp(str, "no-expiry")) {
		p->cert.no_expiry = true;
		days = 36500;
	} else if (!config_lookup_int(&c, "certificate.validity_days", &days) ||
		   days < 1 || days > 36500) {
		snprintf(err, errlen, "%s: 'certificate.validity_days' must be 1..36500 "
			 "(or certificate.validity = \"no-expiry\" for the IEEE 802.1AR "
			 "99991231235959Z date)", path);
		goto cleanup;
	}
	if (cert_profile(&c, path, p, err, errlen))
		goto cleanup;
	if (!p->cert.subject[0] && !*org) {
		snprintf(err, errlen, "%s: give 'certificate.subject' (a template) or "
			 "'certificate.organization'", path);
		goto cleanup;
	}
	if (!config_lookup_string(&c, "root_of_trust.sha256", &rot) ||
	    strlen(rot) != 64 || st_unhex(rot, p->rot_hash, 32)) {
		snprintf(err, errlen, "%s: 'root_of_trust.sha256' must be 64 hex digits", path);
		goto cleanup;
	}
	config_lookup_int(&c, "root_of_trust.fuse_bank", &bank);
	if (bank < 0 || bank > 255) {
		snprintf(err, errlen, "%s: 'root_of_trust.fuse_bank' must be 0..255", path);
		goto cleanup;
	}
	if ((rc = st_fuse_plan_parse(&c, path, p->rot_hash, (unsigned)bank, &p->plan,
				     err, errlen)))
		goto cleanup;
	rc = ST_E_CONFIG;
	if (config_lookup_string(&c, "key_mode", &str)) {
		if (!strcmp(str, "inject")) {
			p->inject = true;
		} else if (strcmp(str, "device")) {
			snprintf(err, errlen, "%s: 'key_mode' must be \"device\" (the "
				 "device generates its key) or \"inject\" (the HSM "
				 "generates it and injects it wrapped)", path);
			goto cleanup;
		}
	}
	if ((rc = parse_tpm2(&c, path, p->target_opts, sizeof(p->target_opts),
			     err, errlen)))
		goto cleanup;
	rc = ST_E_CONFIG;
	if (file_digest(path, p->digest)) {
		snprintf(err, errlen, "cannot hash profile %s", path);
		rc = ST_E_IO;
		goto cleanup;
	}
	snprintf(p->name, sizeof(p->name), "%s", name);
	snprintf(p->org, sizeof(p->org), "%s", org);
	p->validity_days = days;
	p->cert.validity_days = days;
	snprintf(p->cert.org, sizeof(p->cert.org), "%s", org);
	p->rot_bank = (unsigned)bank;
	*out = p;
	p = NULL;
	rc = ST_OK;
cleanup:
	config_destroy(&c);
	free(p);
	return rc;
}

void st_profile_free(st_profile *p)
{
	free(p);
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

bool st_profile_key_inject(const st_profile *p)
{
	return p->inject;
}

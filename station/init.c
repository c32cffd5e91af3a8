/* init.c — `station init [DIR]`: a commented station.conf and a product
 * profile template for a new line, as SPSDK's get-template does: what a
 * station needs, with every value a person must decide marked FILL IN,
 * and every other setting listed from the schema (station/schema.c) as a
 * comment.  Never overwrites: each file is created O_EXCL. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "station/schema.h"
#include "station/st_int.h"

/* The settings of a schema, one comment line each, with default and
 * meaning, for the reader of the file. */
static void schema_comments(FILE *f, const st_schema_key *k, size_t n)
{
	fprintf(f, "\n# Every setting (docs/configuration.md; `station config schema`):\n");
	for (size_t i = 0; i < n; i++)
		fprintf(f, "#   %s%s: %s%s%s%s\n", k[i].path,
			k[i].flags & SK_REQUIRED ? " (required)" : "", k[i].doc,
			k[i].def && k[i].def[0] ? " [default " : "",
			k[i].def && k[i].def[0] ? k[i].def : "",
			k[i].def && k[i].def[0] ? "]" : "");
}

/* Create path O_EXCL (0644) as a stream; NULL with err when it exists. */
static FILE *create(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	FILE *f;

	if (fd < 0) {
		snprintf(err, errlen, "%s: %s%s", path, strerror(errno),
			 errno == EEXIST ? " (init never overwrites: move it away first)" :
			 "");
		return NULL;
	}
	f = fdopen(fd, "w");
	if (!f)
		close(fd);
	return f;
}

/* Close f, flushed and synced; ST_OK or ST_E_IO with err. */
static int finish(FILE *f, const char *path, char *err, size_t errlen)
{
	int rc = fflush(f) || fsync(fileno(f)) ? ST_E_IO : ST_OK;

	if (fclose(f) && rc == ST_OK)
		rc = ST_E_IO;
	if (rc)
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
	return rc;
}

int st_init_files(const char *dir, char *conf, char *prof, size_t pathlen,
		  char *err, size_t errlen)
{
	char abs[PATH_MAX];
	FILE *f;
	int rc;

	if (!realpath(dir, abs)) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return ST_E_IO;
	}
	snprintf(conf, pathlen, "%s/station.conf", abs);
	snprintf(prof, pathlen, "%s/product.profile", abs);
	if (access(conf, F_OK) == 0 || access(prof, F_OK) == 0) {
		snprintf(err, errlen, "%s already exists (init never overwrites: move it "
			 "away first)", access(conf, F_OK) == 0 ? conf : prof);
		return ST_E_EXISTS;
	}
	f = create(prof, err, errlen);
	if (!f)
		return ST_E_EXISTS;
	fprintf(f,
		"# Product profile for a new line (libconfig syntax), written by\n"
		"# `station init`.  Lines marked FILL IN must be decided by engineering\n"
		"# before the first run; `station config check --profile %s`\n"
		"# names each one still open.  A profile runs only when signed:\n"
		"#   station profile sign --key ENGINEERING-KEY --in %s\n"
		"name = \"new-product\";          # FILL IN: the product's name\n"
		"version = \"0.1\";\n"
		"key_mode = \"device\";           # or \"inject\": the HSM makes the key\n"
		"algorithms: { device_key = \"p256\"; };\n\n"
		"certificate: {\n"
		"  organization = \"FILL IN: your organisation\";\n"
		"  subject = \"O=${product}, CN=${uid}, serialNumber=${serial}\";\n"
		"  validity_days = 7300;\n"
		"  ca_renewal_days = 30;\n"
		"};\n\n"
		"root_of_trust: {\n"
		"  # SHA-256 of the DER SubjectPublicKeyInfo of the secure-boot key:\n"
		"  #   openssl pkey -pubin -in secureboot.pub.pem -outform DER | sha256sum\n"
		"  sha256 = \"FILL IN: 64 hex digits\";\n"
		"  fuse_bank = 0;\n"
		"};\n\n"
		"# The fuse plan (docs/fuses.md): data, write-protect, then lifecycle.\n"
		"fuses: {\n"
		"  conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };\n"
		"  plan = (\n"
		"    { name = \"rot-hash\"; bank = 0; word = 0; words = 8; source = \"root_of_trust\"; },\n"
		"    { name = \"lock\"; kind = \"lifecycle\"; state = \"locked\"; }\n"
		"  );\n"
		"};\n\n"
		"quota: { require_work_order = true; };\n", prof, prof);
	schema_comments(f, st_profile_schema, st_profile_schema_len);
	rc = finish(f, prof, err, errlen);
	if (rc)
		return rc;
	f = create(conf, err, errlen);
	if (!f)
		return ST_E_EXISTS;
	fprintf(f,
		"# Station configuration (libconfig syntax), written by `station init`.\n"
		"# Install it as /etc/station/station.conf (or point STATION_CONFIG at\n"
		"# it); `station config check` names every problem, `station doctor`\n"
		"# checks the rest (token, PIN, CA, programmers).  FILL IN marks what\n"
		"# this station must decide.\n"
		"station: { id = \"line1-st1\"; };   # FILL IN: unique per station\n"
		"hsm: {\n"
		"  module = \"/usr/lib/softhsm/libsofthsm2.so\";   # FILL IN: your HSM's PKCS#11 module\n"
		"  token = \"station\";\n"
		"  # ca_key = \"issuing-ca\";        # which CA; default: the newest valid\n"
		"};\n"
		"records: { path = \"%s/records.db\"; };\n"
		"profile = \"%s\";\n"
		"programmer: { timeout_ms = 2000; };\n"
		"# slots = ( { name = \"left\"; port = \"/dev/station/tty-left\"; } );   # FILL IN\n"
		"defaults: { burn_fuses = false; };\n"
		"# The engineering keys whose profile signatures this station accepts:\n"
		"# trust: { profile_keys = [ \"/etc/station/eng.pub.pem\" ]; };   # FILL IN\n",
		abs, prof);
	schema_comments(f, st_config_schema, st_config_schema_len);
	return finish(f, conf, err, errlen);
}

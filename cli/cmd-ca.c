/* cmd-ca.c — `station ca init|csr|import|show`: the issuing CA in the
 * token.  `init` is for labs; production CAs are a `csr` signed by an
 * offline root, then `import`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "cli/cli.h"

static int exec_ca(struct cli *cli, int argc, char **argv);

static const struct cli_sub ca_subs[] = {
	{ "init", "make the CA key and a self-signed certificate (labs)" },
	{ "csr", "make the CA key and a certificate request for an offline root" },
	{ "import", "install the signed CA certificate and its chain" },
	{ "show", "subject, key type, validity and status of the CA(s)" },
	{ NULL, NULL },
};

const struct cli_entry cli_cmd_ca = {
	.name = "ca",
	.usage = "ca init [--key-type T] [--cn NAME] [--org ORG] [--days N] [--out FILE]\n"
		 "  ca csr --out FILE [--key-type T] [--cn NAME] [--org ORG]\n"
		 "  ca import --in CERT [--chain FILE]\n"
		 "  ca show            (--ca-key LABEL names the CA; T: p256 p384 rsa3072 ed25519)",
	.help = "The issuing CA in the token.",
	.options = (const enum cli_opt[]){ O_KEY_TYPE, O_CN, O_ORG, O_DAYS, O_OUT,
		O_IN, O_CHAIN, O_NONE },
	.subs = ca_subs,
	.needs = CLI_NEED_CONFIG | CLI_NEED_HSM,
	.exec = exec_ca,
};


/* Check that the token can make and sign with a CA key of type t before
 * anything is created in it. */
static int ca_mechanisms(hsm *h, hsm_keytype t)
{
	hsm_mech need[2] = { hsm_keytype_genmech(t), HSM_M_ECDSA };

	switch (hsm_keytype_sigmech(t)) {
	case HSM_SIG_RSA_PKCS: need[1] = HSM_M_RSA_PKCS; break;
	case HSM_SIG_EDDSA: need[1] = HSM_M_EDDSA; break;
	default: break;
	}
	if (hsm_check_mechanisms(h, need, 2))
		return st_say(ST_EXIT_HSM, "HSM: a %s CA: %s", hsm_keytype_name(t),
			      hsm_errmsg(h));
	return 0;
}

/* A repaired `ca init` goes on record where a store exists (a station
 * that has provisioned), signed like any event; best effort: the token is
 * already right, and a store that cannot take it is reported. */
static void ca_repair_on_record(struct cli *cli, hsm *h, const char *label,
				const char *note)
{
	char err[512] = "";
	rec_store *rec = NULL;
	st_audit *a = NULL;

	if (access(cli->cfg.records_path, F_OK) != 0)
		return;
	if (rec_open(cli->cfg.records_path, &rec) ||
	    st_audit_attach(h, rec, &cli->cfg, &a, err, sizeof(err)) ||
	    rec_event(rec, "ca_repair", NULL, "ca", label, "repair", note, NULL))
		fprintf(stderr, "station: warning: the repair of CA '%s' is not on "
			"record: %s\n", label, err[0] ? err : rec ? rec_errmsg(rec) :
			"cannot open the records");
	st_audit_detach(rec, a);
	rec_close(rec);
}

/* station ca init | csr | import | show */
static int exec_ca(struct cli *cli, int argc, char **argv)
{
	const char *label = cli->cfg.ca_label ? cli->cfg.ca_label : "issuing-ca";
	const char *cn = cli->cn ? cli->cn : "Station Issuing CA";
	const char *org = cli->org ? cli->org : "Station Factory";
	char err[1024] = "";
	hsm_session *s = NULL;
	hsm_keytype type = HSM_KEY_P256;
	hsm *h = NULL;
	int code, rc;

	if (argc != 1 || (strcmp(argv[0], "init") && strcmp(argv[0], "show") &&
			  strcmp(argv[0], "csr") && strcmp(argv[0], "import")))
		return st_say(ST_EXIT_USAGE, "ca: say 'ca init', 'ca csr', 'ca import' or 'ca show'");
	if (cli->key_type && hsm_keytype_parse(cli->key_type, &type))
		return st_say(ST_EXIT_USAGE, "ca: --key-type must be p256, p384, rsa3072 or ed25519");
	if (!strcmp(argv[0], "csr") && !cli->out)
		return st_say(ST_EXIT_USAGE, "ca csr: say where the request goes with --out FILE");
	if (!strcmp(argv[0], "import") && !cli->in)
		return st_say(ST_EXIT_USAGE, "ca import: give the signed certificate with --in FILE "
			      "(and its chain with --chain FILE)");
	code = cli_login(cli, &h);
	if (code)
		return code;
	if (!strcmp(argv[0], "init") || !strcmp(argv[0], "csr")) {
		code = ca_mechanisms(h, type);
		if (code)
			goto cleanup;
	}
	rc = hsm_session_open(h, &s);
	if (rc) {
		code = st_say(ST_EXIT_HSM, "HSM: %s", hsm_errmsg(h));
		goto cleanup;
	}
	if (!strcmp(argv[0], "init")) {
		char note[512];

		rc = st_ca_init(s, label, type, cn, org, cli->days ? cli->days : 3650,
				cli->out, note, sizeof(note), err, sizeof(err));
		if (!rc && note[0]) {
			printf("CA '%s' in token '%s': %s%s%s\n", label, cli->cfg.token_label,
			       note, cli->out ? "; certificate in " : "",
			       cli->out ? cli->out : "");
			ca_repair_on_record(cli, h, label, note);
		} else if (!rc) {
			printf("CA '%s' (%s) created in token '%s'%s%s\n", label,
			       hsm_keytype_name(type), cli->cfg.token_label,
			       cli->out ? "; certificate in " : "",
			       cli->out ? cli->out : "");
		}
	} else if (!strcmp(argv[0], "csr")) {
		rc = st_ca_csr(s, label, type, cn, org, cli->out, err, sizeof(err));
		if (!rc)
			printf("CA key '%s' is in token '%s'; certificate request in %s: have "
			       "the root CA sign it, then 'station ca import --in CERT "
			       "--chain CHAIN'\n", label, cli->cfg.token_label, cli->out);
	} else if (!strcmp(argv[0], "import")) {
		rc = st_ca_import(s, label, cli->in, cli->chain, err, sizeof(err));
		if (!rc) {
			printf("CA certificate for '%s' imported into token '%s'\n", label,
			       cli->cfg.token_label);
			rc = st_ca_show(s, label, stdout, err, sizeof(err));
		}
	} else {
		rc = st_ca_show(s, cli->cfg.ca_label, stdout, err, sizeof(err));
	}
	code = rc ? st_say(rc == ST_E_IO ? ST_EXIT_USAGE : ST_EXIT_HSM, "ca %s: %s", argv[0], err) : 0;
cleanup:
	hsm_session_close(s);
	return code;
}

/* cmd-ca.c — `station ca init|csr|import|show`: the issuing CA in the
 * token.  `init` is for labs; production CAs are a `csr` signed by an
 * offline root, then `import`. */
#include <stdio.h>
#include <string.h>

#include "base.h"
#include "cli/cli.h"

static int exec_ca(struct cli *cli, int argc, char **argv);

static const struct cli_sub ca_subs[] = {
	{ .name = "init",
	  .usage = "ca init [--key-type T] [--cn NAME] [--org ORG] [--days N] [--out FILE]",
	  .help = "make the CA key and a self-signed certificate (labs)",
	  .options = (const enum cli_opt[]){ O_KEY_TYPE, O_CN, O_ORG, O_DAYS, O_OUT,
		O_NONE },
	  .needs = CLI_NEED_CONFIG | CLI_NEED_HSM, .exec = exec_ca },
	{ .name = "csr", .usage = "ca csr --out FILE [--key-type T] [--cn NAME] [--org ORG]",
	  .help = "make the CA key and a certificate request for an offline root",
	  .options = (const enum cli_opt[]){ O_OUT, O_KEY_TYPE, O_CN, O_ORG, O_NONE },
	  .needs = CLI_NEED_CONFIG | CLI_NEED_HSM, .exec = exec_ca },
	{ .name = "import", .usage = "ca import --in CERT [--chain FILE]",
	  .help = "install the signed CA certificate and its chain",
	  .options = (const enum cli_opt[]){ O_IN, O_CHAIN, O_NONE },
	  .needs = CLI_NEED_CONFIG | CLI_NEED_HSM, .exec = exec_ca },
	{ .name = "show", .usage = "ca show   (--ca-key LABEL names the CA)",
	  .help = "subject, key type, validity and status of the CA(s)",
	  .options = (const enum cli_opt[]){ O_NONE },
	  .needs = CLI_NEED_CONFIG | CLI_NEED_HSM, .exec = exec_ca },
	{ NULL },
};

const struct cli_entry cli_cmd_ca = {
	.name = "ca",
	.usage = "ca init [--key-type T] [--cn NAME] [--org ORG] [--days N] [--out FILE]\n"
		 "  ca csr --out FILE [--key-type T] [--cn NAME] [--org ORG]\n"
		 "  ca import --in CERT [--chain FILE]\n"
		 "  ca show            (--ca-key LABEL names the CA; T: p256 p384 rsa3072 ed25519)",
	.help = "The issuing CA in the token.",
	.subs = ca_subs,
};


/* station ca init | csr | import | show: one function, as the four share
 * their checks and messages; the subcommand's word says which. */
static int exec_ca(struct cli *cli, int argc, char **argv)
{
	st_ca_args a = {
		.label = cli->cfg.ca_label ? cli->cfg.ca_label : "issuing-ca",
		.key_type = cli->key_type,
		.cn = cli->cn ? cli->cn : "Station Issuing CA",
		.org = cli->org ? cli->org : "Station Factory",
		.days = cli->days ? cli->days : 3650,
		.out = cli->out, .in = cli->in, .chain = cli->chain, .show = stdout,
	};
	const char *sub = cli->sub->name;
	char err[1024] = "", note[512] = "";
	int code, rc;

	(void)argc;
	(void)argv;
	if (cli->key_type && !st_key_type_known(cli->key_type))
		return st_say(ST_EXIT_USAGE, "ca: --key-type must be p256, p384, rsa3072 or ed25519");
	if (!strcmp(sub, "csr") && !cli->out)
		return st_say(ST_EXIT_USAGE, "ca csr: say where the request goes with --out FILE");
	if (!strcmp(sub, "import") && !cli->in)
		return st_say(ST_EXIT_USAGE, "ca import: give the signed certificate with --in FILE "
			      "(and its chain with --chain FILE)");
	code = cli_login(cli);
	if (code)
		return code;
	if ((!strcmp(sub, "init") || !strcmp(sub, "csr")) &&
	    st_station_ca_mechanisms(cli->st, cli->key_type, err, sizeof(err)))
		return st_say(ST_EXIT_HSM, "HSM: %s", err);
	if (!strcmp(sub, "init")) {
		rc = st_station_ca(cli->st, ST_CA_INIT, &a, note, sizeof(note), err,
				   sizeof(err));
		if (!rc && note[0]) {
			printf("CA '%s' in token '%s': %s%s%s\n", a.label, cli->cfg.token_label,
			       note, cli->out ? "; certificate in " : "",
			       cli->out ? cli->out : "");
			if (st_station_ca_repair_record(cli->st, a.label, note, err,
							sizeof(err)))
				fprintf(stderr, "station: warning: the repair of CA '%s' is "
					"not on record: %s\n", a.label, err);
		} else if (!rc) {
			printf("CA '%s' (%s) created in token '%s'%s%s\n", a.label,
			       st_key_type_name(cli->key_type), cli->cfg.token_label,
			       cli->out ? "; certificate in " : "",
			       cli->out ? cli->out : "");
		}
	} else if (!strcmp(sub, "csr")) {
		rc = st_station_ca(cli->st, ST_CA_CSR, &a, NULL, 0, err, sizeof(err));
		if (!rc)
			printf("CA key '%s' is in token '%s'; certificate request in %s: have "
			       "the root CA sign it, then 'station ca import --in CERT "
			       "--chain CHAIN'\n", a.label, cli->cfg.token_label, cli->out);
	} else if (!strcmp(sub, "import")) {
		rc = st_station_ca(cli->st, ST_CA_IMPORT, &a, NULL, 0, err, sizeof(err));
		if (!rc) {
			printf("CA certificate for '%s' imported into token '%s'\n", a.label,
			       cli->cfg.token_label);
			rc = st_station_ca(cli->st, ST_CA_SHOW, &a, NULL, 0, err,
					   sizeof(err));
		}
	} else {
		a.label = cli->cfg.ca_label;
		rc = st_station_ca(cli->st, ST_CA_SHOW, &a, NULL, 0, err, sizeof(err));
	}
	if (rc == ST_E_NOTOKEN)
		return st_say(ST_EXIT_HSM, "HSM: %s", err);
	return rc ? st_say(rc == ST_E_IO ? ST_EXIT_USAGE : ST_EXIT_HSM, "ca %s: %s",
			   sub, err) : 0;
}

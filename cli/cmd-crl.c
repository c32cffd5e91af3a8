/* cmd-crl.c — `station crl export`: the revocation list, signed in the HSM.
 * The work is in cmd-profile.c. */
#include <stdio.h>

#include "cli/cli.h"

static int exec_crl(struct cli *cli, int argc, char **argv);

static const struct cli_sub crl_subs[] = {
	{ "export", "write the CRL" },
	{ NULL, NULL },
};

const struct cli_entry cli_cmd_crl = {
	.name = "crl",
	.usage = "crl export --out FILE.crl [--days N]   (revoked certificates, signed by the CA)",
	.help = "The revocation list of the certificates this station revoked, signed by the CA.",
	.options = (const enum cli_opt[]){ O_OUT, O_DAYS, O_NONE },
	.subs = crl_subs,
	/* writes: the export is recorded (event crl_export) */
	.needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RW | CLI_NEED_HSM,
	.exec = exec_crl,
};

static int exec_crl(struct cli *cli, int argc, char **argv)
{
	return st_cmd_crl(cli_role(cli), argc, argv);
}

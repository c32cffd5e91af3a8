/* cmd-crl.c — `station crl export`: the revocation list, signed in the HSM.
 * The work is in cmd-profile.c. */
#include <stdio.h>

#include "cli/cli.h"

static int exec_crl(struct cli *cli, int argc, char **argv);

static const struct cli_sub crl_subs[] = {
	{ .name = "export", .usage = "crl export --out FILE.crl [--days N]",
	  .help = "write the CRL (next update in N days, default 7), recorded",
	  .options = (const enum cli_opt[]){ O_OUT, O_DAYS, O_NONE },
	  /* writes: the export is recorded (event crl_export) */
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RW | CLI_NEED_HSM,
	  .exec = exec_crl },
	{ NULL },
};

const struct cli_entry cli_cmd_crl = {
	.name = "crl",
	.usage = "crl export --out FILE.crl [--days N]   (revoked certificates, signed by the CA)",
	.help = "The revocation list of the certificates this station revoked, signed by the CA.",
	.subs = crl_subs,
};

static int exec_crl(struct cli *cli, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return st_cmd_crl(cli_role(cli));
}

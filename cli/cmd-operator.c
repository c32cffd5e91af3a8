/* cmd-operator.c — `station operator hash`: an entry for the signed operator list
 * (docs/roles.md).  The work is in cmd-profile.c. */
#include <stdio.h>

#include "cli/cli.h"

static int exec_operator(struct cli *cli, int argc, char **argv);

static const struct cli_sub operator_subs[] = {
	{ .name = "hash",
	  .usage = "operator hash --operator NAME [--role operator,supervisor,engineer]\n"
		   "            [--password-file F]",
	  .help = "a line for the operator list (the password asked, hashed)",
	  .options = (const enum cli_opt[]){ O_OPERATOR, O_ROLE, O_PASSWORD_FILE, O_NONE },
	  .needs = CLI_NEED_CONFIG, .exec = exec_operator },
	{ NULL },
};

const struct cli_entry cli_cmd_operator = {
	.name = "operator",
	.usage = "operator hash --operator NAME [--role operator,supervisor,engineer]\n"
		 "            [--password-file F]   (an entry for the signed operator list)",
	.help = "An entry (name, roles, password hash) for the signed operator list.",
	.subs = operator_subs,
};

static int exec_operator(struct cli *cli, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return st_cmd_operator(cli_role(cli));
}

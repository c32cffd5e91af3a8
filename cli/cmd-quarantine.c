/* cmd-quarantine.c — `station quarantine release`: a supervisor releases a
 * quarantined device (docs/roles.md).  The work is in cmd-profile.c. */
#include <stdio.h>

#include "cli/cli.h"

static int exec_quarantine(struct cli *cli, int argc, char **argv);

static const struct cli_sub quarantine_subs[] = {
	{ .name = "release",
	  .usage = "quarantine release --uid UID --supervisor NAME --reason TEXT",
	  .help = "release one device, on an authenticated supervisor's decision",
	  .options = (const enum cli_opt[]){ O_UID, O_SUPERVISOR,
		O_SUPERVISOR_PASSWORD_FILE, O_REASON, O_NONE },
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RW | CLI_NEED_HSM,
	  .exec = exec_quarantine },
	{ NULL },
};

const struct cli_entry cli_cmd_quarantine = {
	.name = "quarantine",
	.usage = "quarantine release --uid UID --supervisor NAME --reason TEXT",
	.help = "Release a quarantined device, on an authenticated supervisor's decision, recorded.",
	.subs = quarantine_subs,
};

static int exec_quarantine(struct cli *cli, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return st_cmd_quarantine(cli_role(cli));
}

/* cmd-devices.c — `station devices [--watch]`: the attached programmers
 * and the slot each is bound to. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "cli/cli.h"

static int exec_devices(struct cli *cli, int argc, char **argv);

const struct cli_entry cli_cmd_devices = {
	.name = "devices",
	.usage = "devices [--slot PORT...] [--json] [--watch]   (attached programmers)",
	.help = "List the attached programmers (USB ones from the drivers' id tables,\n"
		"serial ones from the slots); --watch: one line per arrival or removal.",
	.options = (const enum cli_opt[]){ O_SLOT, O_WATCH, O_TIMEOUT_MS, O_NONE },
	.needs = CLI_NEED_CONFIG,
	.exec = exec_devices,
};

static int exec_devices(struct cli *cli, int argc, char **argv)
{
	char err[512] = "";
	int rc;

	(void)argc;
	(void)argv;
	rc = cli->watch ?
	     st_devices_watch(cli->run.ports, cli->run.nslots, cli->json, stdout,
			      err, sizeof(err)) :
	     st_devices(cli->run.ports, cli->run.nslots, cli->json, stdout, err,
			sizeof(err));
	return rc ? st_say(ST_EXIT_LINK, "devices: %s", err) : 0;
}

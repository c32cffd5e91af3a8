/* cmd-config.c — `station config check|schema`.  It needs nothing from
 * the station: the dispatcher does not load the configuration for it, so
 * a bad one is listed here rather than refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "cli/cli.h"

static int exec_check(struct cli *cli, int argc, char **argv);
static int exec_schema(struct cli *cli, int argc, char **argv);

/* needs 0: the dispatcher loads no configuration for these. */
static const struct cli_sub config_subs[] = {
	{ .name = "check", .usage = "config check [--config FILE] [--profile FILE]",
	  .help = "every problem of the configuration and profile, with its line",
	  .options = (const enum cli_opt[]){ O_NONE },
	  .needs = 0, .exec = exec_check },
	{ .name = "schema", .usage = "config schema",
	  .help = "every setting, as docs/configuration.md lists them",
	  .options = (const enum cli_opt[]){ O_NONE },
	  .needs = 0, .exec = exec_schema },
	{ NULL },
};

const struct cli_entry cli_cmd_config = {
	.name = "config",
	.usage = "config check [--config FILE] [--profile FILE]   (every problem, "
		 "with its line)\n  config schema   (every setting, as docs/configuration.md lists them)",
	.help = "Check a configuration and profile, or print their schema.",
	.subs = config_subs,
};

static int exec_schema(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	(void)argc;
	(void)argv;
	st_config_schema_print(stdout);
	return 0;
}

/* station config check: the dispatcher does not load the configuration for
 * this command, so a bad one is listed here rather than refused. */
static int exec_check(struct cli *cli, int argc, char **argv)
{
	int n;

	(void)argc;
	(void)argv;
	if (!cli->config_path && !cli->check_profile)
		return st_say(ST_EXIT_USAGE, "config check: give --config FILE (and/or "
			      "--profile FILE)");
	n = st_config_check(cli->config_path, cli->check_profile, stderr, stdout);
	if (n < 0)
		return st_say(ST_EXIT_USAGE, "config check: %s", st_strerror(n));
	if (n > 0)
		fprintf(stderr, "station: %d problem%s found\n", n, n == 1 ? "" : "s");
	return n ? ST_EXIT_USAGE : 0;
}

/* cmd-config.c — `station config check|schema`.  It needs nothing from
 * the station: the dispatcher does not load the configuration for it, so
 * a bad one is listed here rather than refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "cli/cli.h"

static int exec_config(struct cli *cli, int argc, char **argv);

static const struct cli_sub config_subs[] = {
	{ "check", "every problem of the configuration and profile, with its line" },
	{ "schema", "every setting, as docs/configuration.md lists them" },
	{ NULL, NULL },
};

const struct cli_entry cli_cmd_config = {
	.name = "config",
	.usage = "config check [--config FILE] [--profile FILE]   (every problem, "
		 "with its line)\n  config schema   (every setting, as docs/configuration.md lists them)",
	.help = "Check a configuration and profile, or print their schema.",
	.options = (const enum cli_opt[]){ O_NONE },
	.subs = config_subs,
	.needs = 0,
	.exec = exec_config,
};

/* station config check | schema: main() does not load the configuration
 * for this command, so a bad one is listed here rather than refused. */
static int exec_config(struct cli *cli, int argc, char **argv)
{
	const char *from;
	int n;

	if (argc == 1 && !strcmp(argv[0], "schema")) {
		st_config_schema_print(stdout);
		return 0;
	}
	if (argc != 1 || strcmp(argv[0], "check"))
		return st_say(ST_EXIT_USAGE, "config: 'config check --config FILE [--profile "
			      "FILE]' or 'config schema'");
	if (!cli->config_path && !cli->check_profile)
		cli->config_path = cli_default_config(&from);
	if (!cli->config_path && !cli->check_profile)
		return st_say(ST_EXIT_USAGE, "config check: no configuration: STATION_CONFIG "
			      "is not set and %s does not exist; give --config FILE (and/or "
			      "--profile FILE)", CLI_DEFAULT_CONFIG);
	n = st_config_check(cli->config_path, cli->check_profile, stderr, stdout);
	if (n < 0)
		return st_say(ST_EXIT_USAGE, "config check: %s", st_strerror(n));
	if (n > 0)
		fprintf(stderr, "station: %d problem%s found\n", n, n == 1 ? "" : "s");
	return n ? ST_EXIT_USAGE : 0;
}

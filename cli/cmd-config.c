/* cmd-config.c — `station config check|schema|udev`.  It needs nothing from
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
static int exec_udev(struct cli *cli, int argc, char **argv);

/* needs 0: the dispatcher loads no configuration for these. */
static const struct cli_sub config_subs[] = {
	{ .name = "check", .usage = "config check [--config FILE] [--profile FILE]",
	  .help = "every problem of the configuration and profile, with its line",
	  .options = (const enum cli_opt[]){ O_NONE },
	  .needs = 0, .exec = exec_check },
	{ .name = "schema", .usage = "config schema [--format markdown|man-conf|man-profile]",
	  .help = "every setting, as docs/configuration.md lists them (man-conf, "
		  "man-profile: roff for station.conf(5), station-profile(5))",
	  .options = (const enum cli_opt[]){ O_FORMAT, O_NONE },
	  .needs = 0, .exec = exec_schema },
	{ .name = "udev", .usage = "config udev --config FILE",
	  .help = "the site's udev rules for the adapters named in udev.adapters",
	  .options = (const enum cli_opt[]){ O_NONE },
	  .needs = 0, .exec = exec_udev },
	{ NULL },
};

const struct cli_entry cli_cmd_config = {
	.name = "config",
	.usage = "config check [--config FILE] [--profile FILE]   (every problem, "
		 "with its line)\n  config schema [--format man-conf|man-profile]   (every setting, as "
		 "docs/configuration.md lists them)\n  config udev --config FILE   (the "
		 "site's udev rules for udev.adapters)",
	.help = "Check a configuration and profile, or print their schema.",
	.subs = config_subs,
};

static int exec_schema(struct cli *cli, int argc, char **argv)
{
	const char *f = cli->rec.format;

	(void)argc;
	(void)argv;
	if (!f || !strcmp(f, "markdown"))
		st_config_schema_print(stdout);
	else if (!strcmp(f, "man-conf") || !strcmp(f, "man-profile"))
		st_config_schema_print_man(stdout, !strcmp(f, "man-profile"));
	else
		return st_say(ST_EXIT_USAGE, "config schema: --format is markdown, "
			      "man-conf (station.conf(5)) or man-profile "
			      "(station-profile(5))");
	return 0;
}

/* station config udev: the rules for the generic serial adapters the site
 * names (udev.adapters), for /etc/udev/rules.d/70-station-site.rules. */
static int exec_udev(struct cli *cli, int argc, char **argv)
{
	char err[512] = "";

	(void)argc;
	(void)argv;
	if (!cli->config_path)
		return st_say(ST_EXIT_USAGE, "config udev: give --config FILE (its "
			      "udev.adapters names the adapters)");
	if (st_config_udev(cli->config_path, stdout, err, sizeof(err)))
		return st_say(ST_EXIT_USAGE, "config udev: %s", err);
	return 0;
}

/* station config check: the dispatcher does not load the configuration for
 * this command, so a bad one is listed here rather than refused. */
static int exec_check(struct cli *cli, int argc, char **argv)
{
	const char *from;
	int n;

	(void)argc;
	(void)argv;
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

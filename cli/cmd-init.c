/* cmd-init.c — `station init [DIR]`: a commented configuration and a
 * product profile template for a new line (station/init.c writes them).
 * It needs nothing from the station: there is none yet. */
#include <limits.h>
#include <stdio.h>

#include "base.h"
#include "cli/cli.h"

static int exec_init(struct cli *cli, int argc, char **argv);

const struct cli_entry cli_cmd_init = {
	.name = "init",
	.usage = "init [DIR]   (write DIR/station.conf and DIR/product.profile templates)",
	.help = "Write a commented station.conf and a product profile template for a\n"
		"new line into DIR (default: the current directory); what must be\n"
		"decided is marked FILL IN.  Never overwrites an existing file.",
	.options = (const enum cli_opt[]){ O_NONE },
	.needs = 0,
	.exec = exec_init,
};

static int exec_init(struct cli *cli, int argc, char **argv)
{
	char conf[PATH_MAX + 32], prof[PATH_MAX + 32], err[PATH_MAX + 256] = "";
	int rc;

	(void)cli;
	if (argc > 1)
		return st_say(ST_EXIT_USAGE, "init takes one directory at most");
	rc = st_init_files(argc ? argv[0] : ".", conf, prof, sizeof(conf), err,
			   sizeof(err));
	if (rc)
		return st_say(ST_EXIT_USAGE, "init: %s", err);
	printf("wrote %s\nwrote %s\nnext: fill in the lines marked FILL IN, sign the "
	       "profile ('station profile sign'), then 'station config check --config "
	       "%s' and 'station doctor --config %s'\n", conf, prof, conf, conf);
	return 0;
}

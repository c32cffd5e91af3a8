/* cmd-label.c — `station label print UID`: make a PASS unit's label again
 * (docs/integration.md, "Labels"): PNG, PDF and ZPL into labels.dir, and the
 * ZPL to labels.queue when one is set.  The work is station/label.c. */
#include <stdio.h>
#include <stdlib.h>

#include "base.h"
#include "cli/cli.h"

static int exec_print(struct cli *cli, int argc, char **argv);

static const struct cli_sub label_subs[] = {
	{ .name = "print", .usage = "label print UID",
	  .help = "write the label of a PASS unit again (labels.dir; labels.queue)",
	  .min_args = 1, .max_args = 1,
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RO,
	  .exec = exec_print },
	{ NULL },
};

const struct cli_entry cli_cmd_label = {
	.name = "label",
	.usage = "label print UID",
	.help = "A PASS unit's label: QR code (UID, certificate serial and "
		"fingerprint) and text, as PNG, PDF and ZPL (docs/integration.md).",
	.subs = label_subs,
};

static int exec_print(struct cli *cli, int argc, char **argv)
{
	st_label_files *f;
	char err[1024] = "";
	int code, rc;

	(void)argc;
	code = cli_store(cli, false);
	if (code)
		return code;
	f = malloc(sizeof(*f));   /* big: off the stack */
	if (!f)
		return st_say(ST_EXIT_USAGE, "label: out of memory");
	rc = st_label_print(cli->st, argv[0], f, err, sizeof(err));
	if (rc)
		code = st_say(rc == ST_E_DB ? ST_EXIT_RECORDS : rc == ST_E_IO ?
			      ST_EXIT_RECORDS : ST_EXIT_USAGE, "label: %s", err);
	else
		printf("label of %s: %s, %s, %s%s%s\n", argv[0], f->png, f->pdf,
		       f->zpl, cli->cfg.labels_queue ? "; sent to " : "",
		       cli->cfg.labels_queue ? cli->cfg.labels_queue : "");
	free(f);
	return code;
}

/* cmd-tui.c — `station tui`: the technician's terminal UI (ui/) over the
 * slots; also plain `station --slot PORT...` on a terminal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "cli/cli.h"
#include "ui/ui.h"

static int exec_tui(struct cli *cli, int argc, char **argv);

const struct cli_entry cli_cmd_tui = {
	.name = "tui",
	.usage = "tui --slot PORT [--slot PORT...] [--log FILE]   (the technician's "
		 "terminal UI; also 'station --slot PORT...' on a terminal)",
	.help = "The technician's terminal UI: log in, scan a work order, arm, run;\n"
		"retry, skip or quarantine a unit that did not pass.",
	.options = (const enum cli_opt[]){ O_SLOT, O_LOG, O_TIMEOUT_MS, O_PLUG_WAIT,
		O_NONE },
	/* the UI logs in itself (the operator types the PIN) */
	/* starts a line: the records are created when absent */
	.needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RW | CLI_NEED_STORE_NEW |
		 CLI_NEED_HSM,
	.exec = exec_tui,
};


/* station tui: the technician's terminal UI over the given slots.  The
 * guard process forks first, so it holds nothing the UI opens. */
static int exec_tui(struct cli *cli, int argc, char **argv)
{
	char err[512] = "", logpath[4096];
	st_signed_info signed_info;
	st_profile *prof = NULL;
	ui_opts o = { .ports = cli->run.ports, .nslots = cli->run.nslots,
		      .log_path = cli->log_path };
	int code;

	(void)argv;
	if (argc > 0 || cli->run.nslots == 0)
		return st_say(ST_EXIT_USAGE, "tui: give each programmer with --slot PORT "
			      "(or slots in the configuration)");
	if (!isatty(0) || !isatty(1))
		return st_say(ST_EXIT_USAGE, "tui: needs a terminal; use 'station provision' "
			      "in scripts");
	if (!o.log_path)
		o.log_path = cli->cfg.log_file;
	if (!o.log_path) {
		snprintf(logpath, sizeof(logpath), "%s.tui.log", cli->cfg.records_path);
		o.log_path = logpath;
	}
	if (ui_guard(o.log_path, &code))
		return code < 0 ? st_say(ST_EXIT_USAGE, "tui: cannot fork") : code;
	if (st_profile_load_signed(&cli->cfg, cli->cfg.profile_path, &prof,
				   &signed_info, err, sizeof(err)))
		return st_say(ST_EXIT_USAGE, "profile refused: %s; nothing was provisioned",
			      err);
	code = cli_store(cli, true);
	if (code)
		goto cleanup;
	o.prof = prof;
	o.st = cli->st;
	code = ui_main(&o);
cleanup:
	st_profile_free(prof);
	return code;
}

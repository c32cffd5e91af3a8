/* cmd-fuses.c — `station fuses show --slot PORT`: a device's fuse fields
 * and lifecycle against the profile's fuse plan, as a table or one JSON
 * object (like `espefuse summary --format json`).  Deliberately read-only:
 * it needs the configuration and the signed profile, never the HSM or the
 * records, and it never writes to the device. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "cli/cli.h"

static int exec_show(struct cli *cli, int argc, char **argv);

static const struct cli_sub fuses_subs[] = {
	{ .name = "show", .usage = "fuses show --slot PORT [--json]",
	  .help = "the unit's fuse fields and lifecycle against the profile's "
		  "plan (read only)",
	  .options = (const enum cli_opt[]){ O_SLOT, O_TIMEOUT_MS, O_NONE },
	  .needs = CLI_NEED_CONFIG, .exec = exec_show },
	{ NULL },
};

const struct cli_entry cli_cmd_fuses = {
	.name = "fuses",
	.usage = "fuses show --slot PORT [--json]   (a unit's fuses against the "
		 "plan, read only)",
	.help = "Show a unit's fuse fields and lifecycle against the profile's fuse "
		"plan: per field its bank and words, current value, target and state\n"
		"(blank, matches, differs, locked).  Reads only: nothing is burned or "
		"recorded.",
	.subs = fuses_subs,
};

/* One JSON object: the unit, then the fields in the plan's order. */
static void print_json(const st_fuse_show *s, const char *slot)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i}", "slot", slot, "uid",
			      s->uid, "model", s->model, "lifecycle", s->lifecycle,
			      "banks", (int)s->banks);
	json_t *fields = json_array();

	for (int i = 0; i < s->n; i++) {
		const st_fuse_row *r = &s->row[i];
		json_t *f = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "name", r->name,
				      "kind", r->kind, "current", r->current,
				      "target", r->target,
				      "state", st_fuse_state_name(r->state),
				      "action", r->action);

		if (r->bank >= 0) {
			json_object_set_new(f, "bank", json_integer(r->bank));
			json_object_set_new(f, "words", json_pack("[i, i]",
					    (int)r->word_lo, (int)r->word_hi));
		}
		if (r->why[0])
			json_object_set_new(f, "why", json_string(r->why));
		json_array_append_new(fields, f);
	}
	json_object_set_new(o, "fields", fields);
	json_dumpf(o, stdout, JSON_INDENT(2));
	fputc('\n', stdout);
	json_decref(o);
}

/* A table: the unit, one line per field, why under a field that differs. */
static void print_table(const st_fuse_show *s, const char *slot)
{
	printf("unit %s (%s) in %s: lifecycle %s, %u fuse banks\n", s->uid, s->model,
	       slot, s->lifecycle, s->banks);
	printf("%-16s %-13s %-9s %-8s %-8s %s\n", "FIELD", "KIND", "BANK/WORDS",
	       "STATE", "ACTION", "CURRENT -> TARGET");
	for (int i = 0; i < s->n; i++) {
		const st_fuse_row *r = &s->row[i];
		char where[24] = "-";

		if (r->bank >= 0)
			snprintf(where, sizeof(where), "%d/%u-%u", r->bank, r->word_lo,
				 r->word_hi);
		printf("%-16s %-13s %-9s  %-8s %-8s %s -> %s\n", r->name, r->kind, where,
		       st_fuse_state_name(r->state), r->action, r->current, r->target);
		if (r->why[0])
			printf("%16s %s\n", "", r->why);
	}
}

static int exec_show(struct cli *cli, int argc, char **argv)
{
	st_profile *prof = NULL;
	st_signed_info info;
	st_fuse_show *s = NULL;
	char err[768] = "";
	int code = 0, rc;

	(void)argc;
	(void)argv;
	if (cli->run.nslots != 1)
		return st_say(ST_EXIT_USAGE, "fuses show: give one --slot PORT (the "
			      "programmer holding the unit)");
	if (cli->timeout_ms)
		cli->cfg.timeout_ms = cli->timeout_ms;
	if (st_profile_load_signed(&cli->cfg, cli->cfg.profile_path, &prof, &info,
				   err, sizeof(err)))
		return st_say(ST_EXIT_USAGE, "fuses show: profile refused: %s", err);
	s = calloc(1, sizeof(*s));
	if (!s) {
		code = st_say(ST_EXIT_USAGE, "fuses show: out of memory");
		goto cleanup;
	}
	rc = st_fuses_show(&cli->cfg, prof, cli->run.ports[0], s, err, sizeof(err));
	if (rc) {
		code = st_say(ST_EXIT_LINK, "fuses show: %s; nothing was changed", err);
		goto cleanup;
	}
	if (cli->json)
		print_json(s, cli->run.ports[0]);
	else
		print_table(s, cli->run.ports[0]);
cleanup:
	free(s);
	st_profile_free(prof);
	return code;
}

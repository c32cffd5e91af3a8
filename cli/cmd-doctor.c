/* cmd-doctor.c — `station doctor`: before a shift, everything a run needs,
 * one line each OK / WARN / FAIL with what to do (the checks are the
 * engine's, station/doctor.c; this file prints them).  Exit codes: 0 no
 * FAIL (WARN lines allowed), 1 at least one FAIL, 2 the configuration
 * does not load at all (as for every command). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "cli/cli.h"

static int exec_doctor(struct cli *cli, int argc, char **argv);

const struct cli_entry cli_cmd_doctor = {
	.name = "doctor",
	.usage = "doctor [--slot PORT...] [--json]   (is this station ready for a shift?)",
	.help = "Check what a shift start needs: configuration and profile (signature,\n"
		"trust), HSM module, token, PIN (its counter; never tried on the final\n"
		"try), CA validity, records writable, free space, the udev group,\n"
		"programmers.  One line each OK/WARN/FAIL with what to do; exit 0 when\n"
		"nothing FAILs, 1 when something does.",
	.options = (const enum cli_opt[]){ O_SLOT, O_TIMEOUT_MS, O_NONE },
	.needs = CLI_NEED_CONFIG,
	.exec = exec_doctor,
};

struct tally {
	struct cli *cli;
	int n[3];
};

static const char *const level_name[] = { "OK", "WARN", "FAIL" };

/* One line: "FAIL  pin          what  -> what to do", or a JSON object. */
static void report(void *ctx, const st_check *c)
{
	struct tally *t = ctx;

	t->n[c->level]++;
	if (t->cli->json) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s?}", "event", "check",
				      "check", c->name, "status", level_name[c->level],
				      "found", c->found, "todo",
				      c->todo[0] ? c->todo : NULL);

		if (o) {
			json_dumpf(o, stdout, JSON_COMPACT);
			fputc('\n', stdout);
			json_decref(o);
		}
	} else {
		printf("%-4s  %-13s %s\n", level_name[c->level], c->name, c->found);
		if (c->level != ST_CHECK_OK && c->todo[0])
			printf("%-4s  %-13s -> %s\n", "", "", c->todo);
	}
	fflush(stdout);
}

/* The PIN as every command gets it (--pin-file, STATION_PIN, a prompt). */
static int doctor_pin(void *ctx, char *pin, size_t cap, size_t *len, char *err,
		      size_t errlen)
{
	struct tally *t = ctx;

	return st_pin_get(t->cli->pin_file, t->cli->cfg.token_label, pin, cap, len, err,
			  errlen);
}

static int exec_doctor(struct cli *cli, int argc, char **argv)
{
	struct tally t = { .cli = cli };
	st_doctor_opts o = {
		.slots = cli->run.ports, .nslots = (size_t)cli->run.nslots,
		.pin = doctor_pin, .report = report, .ctx = &t,
	};
	int fails;

	(void)argv;
	if (argc > 0)
		return st_say(ST_EXIT_USAGE, "doctor takes no arguments (see 'station "
			      "doctor --help')");
	fails = st_station_doctor(cli->st, &o);
	if (cli->json)
		printf("{\"event\":\"doctor\",\"ok\":%d,\"warn\":%d,\"fail\":%d}\n", t.n[0],
		       t.n[1], t.n[2]);
	else
		printf("doctor: %d OK, %d WARN, %d FAIL: %s\n", t.n[0], t.n[1], t.n[2],
		       fails ? "fix the FAIL lines before the shift starts" :
		       t.n[1] ? "ready; look at the WARN lines" : "ready");
	return fails ? ST_EXIT_UNIT_FAILED : 0;
}

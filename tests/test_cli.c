/* test_cli.c — the command line itself (cli/): per-command help, the
 * version, and the options and values a command refuses, through the real
 * binary (tests/fixtures/fx_station). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

static fx_run *new_run(void)
{
	fx_run *r = calloc(1, sizeof(*r));

	cr_assert_not_null(r);
	return r;
}

/* `station provision --help` and `station records --help` are each their
 * command's own: they differ, each names its options and not the other's. */
Test(cli, help_is_per_command, .timeout = 60)
{
	fx_world w;
	fx_run *p = new_run(), *r = new_run();

	fx_world_init(&w, false, 2000);
	fx_station_run(p, &w, "provision", "--help", NULL);
	cr_assert_eq(p->code, 0, "%s%s", p->out, p->err);
	fx_station_run(r, &w, "records", "--help", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert_str_neq(p->out, r->out);
	cr_assert(strstr(p->out, "usage: station provision"), "%s", p->out);
	cr_assert(strstr(p->out, "--burn-fuses"), "%s", p->out);
	cr_assert(strstr(p->out, "--plug-wait"), "%s", p->out);
	cr_assert_null(strstr(p->out, "--since"), "%s", p->out);
	cr_assert_null(strstr(p->out, "--evidence"), "%s", p->out);
	cr_assert(strstr(r->out, "usage: station records"), "%s", r->out);
	cr_assert(strstr(r->out, "--since"), "%s", r->out);
	cr_assert(strstr(r->out, "--evidence"), "%s", r->out);
	cr_assert_null(strstr(r->out, "--burn-fuses"), "%s", r->out);
	cr_assert_null(strstr(r->out, "--plug-wait"), "%s", r->out);
	cr_assert_null(strstr(r->out, "\n  ca init"), "%s", r->out);
	free(p);
	free(r);
	fx_rmtree(w.dir);
}

/* `station help provision` is `station provision --help`. */
Test(cli, help_command_equals_dash_dash_help, .timeout = 60)
{
	fx_world w;
	fx_run *a = new_run(), *b = new_run();

	fx_world_init(&w, false, 2000);
	fx_station_run(a, &w, "help", "provision", NULL);
	cr_assert_eq(a->code, 0, "%s%s", a->out, a->err);
	fx_station_run(b, &w, "provision", "--help", NULL);
	cr_assert_eq(b->code, 0, "%s%s", b->out, b->err);
	cr_assert_str_eq(a->out, b->out);
	cr_assert(strstr(a->out, "usage: station provision"), "%s", a->out);
	free(a);
	free(b);
	fx_rmtree(w.dir);
}

Test(cli, version_is_printed, .timeout = 60)
{
	fx_world w;
	fx_run *r = new_run();

	fx_world_init(&w, false, 2000);
	fx_station_run(r, &w, "--version", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert_eq(strncmp(r->out, "station ", 8), 0, "%s", r->out);
	cr_assert(r->out[8] >= '0' && r->out[8] <= '9', "%s", r->out);
	cr_assert(strchr(r->out + 8, '.'), "%s", r->out);
	free(r);
	fx_rmtree(w.dir);
}

/* An option of another command is refused, naming it and the command. */
Test(cli, a_foreign_option_is_an_error, .timeout = 60)
{
	fx_world w;
	fx_run *r = new_run();

	fx_world_init(&w, false, 2000);
	fx_station_run(r, &w, "records", "list", "--burn-fuses", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "--burn-fuses"), "%s", r->err);
	cr_assert(strstr(r->err, "records"), "%s", r->err);
	cr_assert_eq(r->out[0], '\0', "nothing listed: %s", r->out);
	free(r);
	fx_rmtree(w.dir);
}

/* Numbers are numbers: no atoi() reading "abc" as 0. */
Test(cli, a_non_number_is_an_error, .timeout = 60)
{
	fx_world w;
	fx_run *r = new_run();

	fx_world_init(&w, false, 2000);
	fx_station_run(r, &w, "provision", "--slot", "sim:/dev/null", "--timeout-ms",
		       "abc", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "--timeout-ms"), "%s", r->err);
	cr_assert(strstr(r->err, "abc"), "%s", r->err);
	fx_station_run(r, &w, "provision", "--slot", "sim:/dev/null", "--timeout-ms",
		       "50x", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "--timeout-ms"), "%s", r->err);
	free(r);
	fx_rmtree(w.dir);
}

/* A date that does not exist is refused, naming the option. */
Test(cli, an_impossible_date_is_an_error, .timeout = 60)
{
	fx_world w;
	fx_run *r = new_run();

	fx_world_init(&w, false, 2000);
	fx_station_run(r, &w, "records", "list", "--since", "2026-13-45", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "--since"), "%s", r->err);
	fx_station_run(r, &w, "records", "list", "--until", "2026-02-30", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "--until"), "%s", r->err);
	/* real dates and date-times still go through */
	fx_station_run(r, &w, "records", "list", "--since", "2026-02-28", "--until",
		       "2026-03-01T12:00:00Z", NULL);
	cr_assert_eq(r->code, 0, "exit %d: %s%s", r->code, r->out, r->err);
	free(r);
	fx_rmtree(w.dir);
}

/* A subcommand's help is its own: `records list --help` and `records
 * verify --help` differ, each lists its own options and not the other's;
 * `station help records list` is the same text; `station help records`
 * lists the subcommands. */
Test(cli, help_is_per_subcommand, .timeout = 60)
{
	fx_world w;
	fx_run *l = new_run(), *v = new_run(), *h = new_run();

	fx_world_init(&w, false, 2000);
	fx_station_run(l, &w, "records", "list", "--help", NULL);
	cr_assert_eq(l->code, 0, "%s%s", l->out, l->err);
	fx_station_run(v, &w, "records", "verify", "--help", NULL);
	cr_assert_eq(v->code, 0, "%s%s", v->out, v->err);
	cr_assert_str_neq(l->out, v->out);
	cr_assert(strstr(l->out, "usage: station records list"), "%s", l->out);
	cr_assert(strstr(l->out, "--since DATE "), "%s", l->out);
	cr_assert_null(strstr(l->out, "--ca-cert"), "%s", l->out);
	cr_assert_null(strstr(l->out, "--evidence"), "%s", l->out);
	cr_assert_null(strstr(l->out, "--supervisor"), "%s", l->out);
	cr_assert(strstr(v->out, "usage: station records verify"), "%s", v->out);
	cr_assert(strstr(v->out, "--ca-cert FILE "), "%s", v->out);
	cr_assert_null(strstr(v->out, "--since"), "%s", v->out);
	fx_station_run(h, &w, "help", "records", "list", NULL);
	cr_assert_eq(h->code, 0, "%s%s", h->out, h->err);
	cr_assert_str_eq(h->out, l->out);
	fx_station_run(h, &w, "help", "records", NULL);
	cr_assert_eq(h->code, 0, "%s%s", h->out, h->err);
	cr_assert(strstr(h->out, "subcommands"), "%s", h->out);
	cr_assert(strstr(h->out, "\n  close-interrupted "), "%s", h->out);
	cr_assert(strstr(h->out, "\n  workorder "), "%s", h->out);
	fx_station_run(h, &w, "records", "workorder", "create", "--help", NULL);
	cr_assert_eq(h->code, 0, "%s%s", h->out, h->err);
	cr_assert(strstr(h->out, "--quota N "), "%s", h->out);
	cr_assert_null(strstr(h->out, "--since"), "%s", h->out);
	free(l);
	free(v);
	free(h);
	fx_rmtree(w.dir);
}

/* An unknown subcommand exits 2, naming it and listing the valid ones. */
Test(cli, an_unknown_subcommand_is_an_error, .timeout = 60)
{
	fx_world w;
	fx_run *r = new_run();

	fx_world_init(&w, false, 2000);
	fx_station_run(r, &w, "records", "frobnicate", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "'frobnicate'"), "%s", r->err);
	cr_assert(strstr(r->err, "verify, list, show, export, workorder, sync, "
			 "close-interrupted"), "%s", r->err);
	fx_station_run(r, &w, "ca", "destroy", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "'destroy'"), "%s", r->err);
	cr_assert(strstr(r->err, "init, csr, import, show"), "%s", r->err);
	fx_station_run(r, &w, "records", "workorder", "delete", "WO-1", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "'delete'"), "%s", r->err);
	cr_assert(strstr(r->err, "create, show"), "%s", r->err);
	free(r);
	fx_rmtree(w.dir);
}

/* An option of a sibling subcommand is foreign too: exit 2, naming the
 * option and the subcommand, before anything is opened. */
Test(cli, a_foreign_option_on_a_subcommand_is_an_error, .timeout = 60)
{
	fx_world w;
	fx_run *r = new_run();

	fx_world_init(&w, false, 2000);
	fx_station_run(r, &w, "records", "verify", "--since", "2026-01-01", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "--since"), "%s", r->err);
	cr_assert(strstr(r->err, "'records verify'"), "%s", r->err);
	fx_station_run(r, &w, "records", "list", "--evidence", w.dir, NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "--evidence"), "%s", r->err);
	cr_assert(strstr(r->err, "'records list'"), "%s", r->err);
	fx_station_run(r, &w, "ca", "show", "--days", "5", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "--days"), "%s", r->err);
	cr_assert(strstr(r->err, "'ca show'"), "%s", r->err);
	/* the count of words is checked too */
	fx_station_run(r, &w, "records", "show", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "records show"), "%s", r->err);
	free(r);
	fx_rmtree(w.dir);
}

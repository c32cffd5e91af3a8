/* test_cli.c — the command line itself (cli/): per-command help, the
 * version, and the options and values a command refuses, through the real
 * binary (tests/fixtures/fx_station). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base.h"
#include "records/records.h"
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
	/* real dates and date-times still go through (to a store that exists:
	 * a reading command never creates one) */
	{
		rec_store *st = NULL;

		cr_assert_eq(rec_open(w.db, &st), ST_OK, "%s", rec_errmsg(st));
		rec_close(st);
	}
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
	cr_assert(strstr(r->err, "verify, list, show, units, export, workorder, "
			 "sync, close-interrupted"), "%s", r->err);
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


/* ---- The store a reading command opens: read only, never created ---- */

/* A store at path with one PASS unit per uid (the records library writes
 * them, as a run would). */
static void make_store(const char *path, const char *const *uids, int n)
{
	rec_store *r = NULL;

	cr_assert_eq(rec_open(path, &r), ST_OK, "%s", rec_errmsg(r));
	for (int i = 0; i < n; i++) {
		rec_unit_start u = { .uid = uids[i], .slot = 1, .port = "/dev/null",
				     .station = "test-station", .operator_name = "op",
				     .profile = "p", .profile_digest = "00" };
		char serial[8];
		rec_unit_result e = { .result = "PASS", .cert_serial = serial };
		int64_t id;

		snprintf(serial, sizeof(serial), "%02x", i + 1);
		cr_assert_eq(rec_unit_begin(r, &u, &id), ST_OK, "%s", rec_errmsg(r));
		cr_assert_eq(rec_unit_end(r, id, &e), ST_OK, "%s", rec_errmsg(r));
	}
	rec_close(r);
}

/* The station as the unprivileged user nobody (root reads and writes any
 * file, so only another user shows what the permissions allow): w's
 * dir is opened for it to reach the configuration, nothing else. */
static int run_as_nobody(fx_run *r, const fx_world *w, ...)
{
	struct passwd *pw = getpwnam("nobody");
	char bin[512], errpath[600];
	const char *argv[64];
	int outp[2], errfd, status;
	va_list ap;
	pid_t pid;

	cr_assert_not_null(pw, "no user 'nobody'");
	cr_assert_eq(chmod(w->dir, 0711), 0);
	cr_assert_eq(chmod(w->conf, 0644), 0);
	va_start(ap, w);
	fx_station_argv(argv, bin, w, ap);
	va_end(ap);
	snprintf(errpath, sizeof(errpath), "%s/stderr-nobody.txt", w->dir);
	cr_assert_eq(pipe(outp), 0);
	errfd = open(errpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(errfd, 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		dup2(outp[1], 1);
		dup2(errfd, 2);
		close(outp[0]);
		if (setgroups(0, NULL) || setgid(pw->pw_gid) || setuid(pw->pw_uid))
			_exit(126);
		execv(bin, (char **)argv);
		_exit(127);
	}
	close(outp[1]);
	fx_slurp(outp[0], r->out, sizeof(r->out));
	close(outp[0]);
	waitpid(pid, &status, 0);
	lseek(errfd, 0, SEEK_SET);
	fx_slurp(errfd, r->err, sizeof(r->err));
	close(errfd);
	r->code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	cr_assert_neq(r->code, 126, "could not become nobody");
	return r->code;
}

/* `records list` reads a store its user may only read: a 0444 file in a
 * 0555 directory (an auditor's copy, a mounted backup). */
Test(cli, records_list_reads_a_read_only_store, .timeout = 60)
{
	static const char *const uids[] = { "a1b2c3d4e5f60001", "a1b2c3d4e5f60002" };
	char dir[600], db[700];
	struct stat before, after;
	fx_world w;
	fx_run *r = new_run();

	fx_world_init(&w, false, 2000);
	snprintf(dir, sizeof(dir), "%s/ro", w.dir);
	snprintf(db, sizeof(db), "%s/records.db", dir);
	cr_assert_eq(mkdir(dir, 0755), 0);
	make_store(db, uids, 2);
	cr_assert_eq(chmod(db, 0444), 0);
	cr_assert_eq(chmod(dir, 0555), 0);
	cr_assert_eq(stat(db, &before), 0);
	run_as_nobody(r, &w, "--records", db, "records", "list", NULL);
	cr_assert_eq(r->code, 0, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->out, uids[0]), "%s", r->out);
	cr_assert(strstr(r->out, uids[1]), "%s", r->out);
	cr_assert(strstr(r->out, "2 units"), "%s", r->out);
	/* show and verify-free queries too; the file is as it was */
	run_as_nobody(r, &w, "--records", db, "records", "show", uids[1], NULL);
	cr_assert_eq(r->code, 0, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->out, uids[1]), "%s", r->out);
	cr_assert_eq(stat(db, &after), 0);
	cr_assert_eq(before.st_size, after.st_size);
	cr_assert_eq(before.st_mtime, after.st_mtime);
	cr_assert_eq(chmod(dir, 0755), 0);
	free(r);
	fx_rmtree(w.dir);
}

/* A command that needs a store and finds none says where it looked and
 * exits 2; it creates nothing. */
Test(cli, records_list_without_a_store_exits_2_and_creates_none, .timeout = 60)
{
	static const char *const cmds[][3] = {
		{ "records", "list", NULL },
		{ "records", "show", "a1b2" },
		{ "records", "workorder", "show" },
	};
	fx_world w;
	fx_run *r = new_run();

	fx_world_init(&w, false, 2000);
	for (size_t i = 0; i < ST_ARRAY_SIZE(cmds); i++) {
		if (!strcmp(cmds[i][1], "workorder"))
			fx_station_run(r, &w, cmds[i][0], cmds[i][1], cmds[i][2],
				       "WO-1", NULL);
		else
			fx_station_run(r, &w, cmds[i][0], cmds[i][1], cmds[i][2], NULL);
		cr_assert_eq(r->code, 2, "%s %s: exit %d: %s%s", cmds[i][0], cmds[i][1],
			     r->code, r->out, r->err);
		cr_assert(strstr(r->err, "no records store at "), "%s", r->err);
		cr_assert(strstr(r->err, w.db), "%s", r->err);
		cr_assert(strstr(r->err, "records.path in "), "%s", r->err);
		cr_assert(strstr(r->err, w.conf), "%s", r->err);
		cr_assert_neq(access(w.db, F_OK), 0, "%s %s created %s", cmds[i][0],
			      cmds[i][1], w.db);
		cr_assert_eq(errno, ENOENT);
	}
	free(r);
	fx_rmtree(w.dir);
}

/* When the store cannot be opened the message names the real cause, not
 * SQLite's "unable to open database file". */
Test(cli, an_unopenable_store_is_named_with_its_cause, .timeout = 60)
{
	static const char *const uids[] = { "a1b2c3d4e5f60001" };
	char dir[600], db[700], junk[700], crl[700];
	fx_world w;
	fx_run *r = new_run();

	fx_world_init(&w, false, 2000);
	snprintf(dir, sizeof(dir), "%s/st", w.dir);
	snprintf(db, sizeof(db), "%s/records.db", dir);
	snprintf(junk, sizeof(junk), "%s/junk.db", w.dir);
	snprintf(crl, sizeof(crl), "/tmp/st-cli-crl-%d.crl", (int)getpid());
	cr_assert_eq(mkdir(dir, 0755), 0);
	make_store(db, uids, 1);
	/* unreadable by its user: permission denied */
	cr_assert_eq(chmod(db, 0600), 0);
	run_as_nobody(r, &w, "--records", db, "records", "list", NULL);
	cr_assert_eq(r->code, 4, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, db), "%s", r->err);
	cr_assert(strstr(r->err, "Permission denied"), "%s", r->err);
	cr_assert_null(strstr(r->err, "unable to open"), "%s", r->err);
	/* a writing command on a writable file in a read-only directory */
	cr_assert_eq(chmod(db, 0666), 0);
	cr_assert_eq(chmod(dir, 0555), 0);
	run_as_nobody(r, &w, "--records", db, "crl", "export", "--out", crl, NULL);
	cr_assert_eq(r->code, 4, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "the directory "), "%s", r->err);
	cr_assert(strstr(r->err, "not writable"), "%s", r->err);
	cr_assert_null(strstr(r->err, "unable to open"), "%s", r->err);
	cr_assert_eq(chmod(dir, 0755), 0);
	/* not a database at all */
	fx_write_file(junk, "this is not an SQLite database, it is a shopping list\n");
	fx_station_run(r, &w, "--records", junk, "records", "list", NULL);
	cr_assert_eq(r->code, 4, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "not a database"), "%s", r->err);
	unlink(crl);
	free(r);
	fx_rmtree(w.dir);
}

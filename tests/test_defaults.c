/* test_defaults.c — the command line's safe defaults (issue 25, "The CLI
 * and its defaults"): an armed run is confirmed or refused, the default
 * configuration, strict dates, what --json unit lines carry, a full disk
 * at a unit's start.  Through the real binary (tests/fixtures/fx_station),
 * on a pty where a terminal matters. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

static fx_run *new_run(void)
{
	fx_run *r = calloc(1, sizeof(*r));

	cr_assert_not_null(r);
	return r;
}

static json_t *sim_unit(const char *state_path, size_t i)
{
	json_t *st = NULL, *u;

	cr_assert_eq(fx_devsim_dump(state_path, &st), 0);
	u = json_incref(json_array_get(json_object_get(st, "units"), i));
	json_decref(st);
	cr_assert_not_null(u);
	return u;
}

static long long jint(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

/* Run the station with stdin, stdout and stderr on a pty (a terminal);
 * when prompt shows up in its output, type answer and Enter.  out gets
 * everything it wrote; returns the exit code. */
static int run_on_tty(const fx_world *w, const char *prompt, const char *answer,
		      char *out, size_t cap, ...)
{
	char bin[512];
	const char *argv[64];
	size_t n = 0;
	bool typed = false;
	int master, status;
	va_list ap;
	pid_t pid;

	va_start(ap, cap);
	fx_station_argv(argv, bin, w, ap);
	va_end(ap);
	pid = forkpty(&master, NULL, NULL, NULL);
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		execv(bin, (char **)argv);
		_exit(127);
	}
	for (;;) {
		struct pollfd p = { master, POLLIN, 0 };
		ssize_t k;

		if (poll(&p, 1, 60000) <= 0)
			break;
		k = read(master, out + n, cap - 1 - n);
		if (k <= 0)             /* EIO: the child closed the pty */
			break;
		n += (size_t)k;
		out[n] = '\0';
		if (!typed && prompt && strstr(out, prompt)) {
			char line[256];

			snprintf(line, sizeof(line), "%s\r", answer);
			cr_assert_eq(write(master, line, strlen(line)), (ssize_t)strlen(line));
			typed = true;
		}
		if (n + 1 >= cap)
			break;
	}
	out[n] = '\0';
	waitpid(pid, &status, 0);
	close(master);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* --burn-fuses without a terminal and without --yes: refused (exit 2),
 * saying to give --yes, before anything is opened or touched. */
Test(confirm, armed_without_a_terminal_needs_yes, .timeout = 120)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;
	json_t *u;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	fx_station_run(r, &w, "--burn-fuses", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r->code, 2, "exit %d\n%s\n%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "--yes"), "%s", r->err);
	cr_assert(strstr(r->err, "--burn-fuses"), "%s", r->err);
	cr_assert(strstr(r->err, "no terminal"), "%s", r->err);
	cr_assert_leq(fx_count_units(&w, NULL), 0, "no unit was started");
	fx_devsim_stop(&sim);
	u = sim_unit(sim.state_path, 0);
	cr_assert_eq(jint(u, "burn_count"), 0);
	cr_assert_eq(jint(u, "lifecycle"), 0);
	json_decref(u);
	/* the same run with --yes burns */
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	fx_station_run(r, &w, "--burn-fuses", "--yes", "--slot", sim.port, "provision",
		       NULL);
	cr_assert_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
	fx_devsim_stop(&sim);
	u = sim_unit(sim.state_path, 0);
	cr_assert_gt(jint(u, "burn_count"), 0);
	json_decref(u);
	free(r);
	fx_rmtree(w.dir);
}

/* An unarmed run and a dry run ask nothing. */
Test(confirm, unarmed_and_dry_runs_ask_nothing, .timeout = 120)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 2, NULL), 0);
	fx_station_run(r, &w, "--dry-run", "--burn-fuses", "--units", "1", "--slot",
		       sim.port, "provision", NULL);
	cr_assert_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
	fx_station_run(r, &w, "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
	cr_assert_eq(fx_count_units(&w, "UNFUSED"), 2);
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
}

/* On a terminal the operator types BURN (or the work order); anything
 * else is refused with nothing done. */
Test(confirm, on_a_terminal_the_operator_types_burn, .timeout = 180)
{
	fx_world w;
	fx_devsim sim;
	char *out = calloc(1, 65536);
	json_t *u;
	int code;

	cr_assert_not_null(out);
	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	code = run_on_tty(&w, "to go on:", "yes", out, 65536, "--burn-fuses", "--slot",
			  sim.port, "provision", NULL);
	cr_assert_eq(code, 2, "exit %d: %s", code, out);
	cr_assert(strstr(out, "Type BURN to go on:"), "%s", out);
	cr_assert(strstr(out, "not confirmed"), "%s", out);
	cr_assert_leq(fx_count_units(&w, NULL), 0, "nothing was done");
	code = run_on_tty(&w, "to go on:", "BURN", out, 65536, "--burn-fuses", "--slot",
			  sim.port, "provision", NULL);
	cr_assert_eq(code, 0, "exit %d: %s", code, out);
	cr_assert_eq(fx_count_units(&w, "PASS"), 1, "%s", out);
	fx_devsim_stop(&sim);
	u = sim_unit(sim.state_path, 0);
	cr_assert_gt(jint(u, "burn_count"), 0);
	json_decref(u);
	free(out);
	fx_rmtree(w.dir);
}

/* With a work order the operator types its ID. */
Test(confirm, with_a_work_order_its_id_is_typed, .timeout = 180)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;
	char *out = calloc(1, 65536);
	int code;

	cr_assert_not_null(out);
	fx_world_init(&w, true, 2000);
	fx_station_run(r, &w, "records", "workorder", "create", "WO-77", "--quota", "5",
		       NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	code = run_on_tty(&w, "to go on:", "BURN", out, 65536, "--burn-fuses",
			  "--work-order", "WO-77", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(code, 2, "exit %d: %s", code, out);
	cr_assert(strstr(out, "Type the work order WO-77 to go on:"), "%s", out);
	code = run_on_tty(&w, "to go on:", "WO-77", out, 65536, "--burn-fuses",
			  "--work-order", "WO-77", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(code, 0, "exit %d: %s", code, out);
	cr_assert_eq(fx_count_units(&w, "PASS"), 1, "%s", out);
	fx_devsim_stop(&sim);
	free(out);
	free(r);
	fx_rmtree(w.dir);
}

/* Run the station in dir cwd with STATION_CONFIG set to env (NULL: unset)
 * and no --config: the NULL-terminated arguments only.  Exit code. */
static int run_env(fx_run *r, const char *cwd, const char *env, ...)
{
	char bin[512], errpath[600];
	const char *argv[32], *a;
	int argc = 0, outp[2], errfd, status;
	va_list ap;
	pid_t pid;

	cr_assert_not_null(getenv("STATION_BUILD"));
	snprintf(bin, sizeof(bin), "%s/station", getenv("STATION_BUILD"));
	argv[argc++] = bin;
	va_start(ap, env);
	while ((a = va_arg(ap, const char *)) && argc < 30)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	snprintf(errpath, sizeof(errpath), "%s/stderr.txt", cwd);
	cr_assert_eq(pipe(outp), 0);
	errfd = open(errpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(errfd, 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		dup2(nul, 0);
		dup2(outp[1], 1);
		dup2(errfd, 2);
		close(outp[0]);
		if (chdir(cwd))
			_exit(126);
		if (env)
			setenv("STATION_CONFIG", env, 1);
		else
			unsetenv("STATION_CONFIG");
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
	unlink(errpath);
	r->code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	return r->code;
}

/* No --config, no STATION_CONFIG, no /etc/station/station.conf: a
 * command that needs a configuration says where it looked and exits 2,
 * and makes no records store in the working directory. */
Test(defaults, no_configuration_anywhere_is_refused, .timeout = 60)
{
	char dir[] = "/tmp/st-noconf-XXXXXX", db[600];
	fx_run *r = new_run();

	cr_assert_not_null(mkdtemp(dir));
	run_env(r, dir, NULL, "records", "list", NULL);
	snprintf(db, sizeof(db), "%s/station-records.db", dir);
	cr_assert_neq(access(db, F_OK), 0, "a store was made in the working directory");
	if (access("/etc/station/station.conf", F_OK) == 0) {
		/* a station with the packaged file: that one is used */
		cr_assert_null(strstr(r->err, "no configuration"), "%s", r->err);
	} else {
		cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
		cr_assert(strstr(r->err, "STATION_CONFIG"), "%s", r->err);
		cr_assert(strstr(r->err, "/etc/station/station.conf"), "%s", r->err);
		cr_assert(strstr(r->err, "--config"), "%s", r->err);
		cr_assert_eq(r->out[0], '\0', "%s", r->out);
		run_env(r, dir, NULL, "config", "check", NULL);
		cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
		cr_assert(strstr(r->err, "/etc/station/station.conf"), "%s", r->err);
	}
	free(r);
	fx_rmtree(dir);
}

/* STATION_CONFIG names the configuration when --config is not given. */
Test(defaults, station_config_names_the_configuration, .timeout = 60)
{
	fx_world w;
	fx_run *r = new_run();

	fx_world_init(&w, true, 2000);
	run_env(r, w.dir, w.conf, "--pin-file", w.pinfile, "records", "workorder",
		"create", "WO-ENV", "--quota", "3", NULL);
	cr_assert_eq(r->code, 0, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert_eq(fx_q_int(&w, "SELECT quota FROM work_orders WHERE id = 'WO-ENV'"), 3,
		     "the work order is in the configured records");
	run_env(r, w.dir, w.conf, "config", "check", NULL);
	cr_assert_eq(r->code, 0, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->out, "OK"), "%s", r->out);
	/* --config still wins over it */
	run_env(r, w.dir, "/nonexistent/station.conf", "--config", w.conf, "config",
		"check", NULL);
	cr_assert_eq(r->code, 0, "exit %d: %s%s", r->code, r->out, r->err);
	free(r);
	fx_rmtree(w.dir);
}

/* STATION_CONFIG naming a file that is not there: exit 2, naming both. */
Test(defaults, station_config_missing_file_is_named, .timeout = 60)
{
	char dir[] = "/tmp/st-envconf-XXXXXX";
	fx_run *r = new_run();

	cr_assert_not_null(mkdtemp(dir));
	run_env(r, dir, "/nonexistent/line7.conf", "records", "list", NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "STATION_CONFIG"), "%s", r->err);
	cr_assert(strstr(r->err, "/nonexistent/line7.conf"), "%s", r->err);
	free(r);
	fx_rmtree(dir);
}

/* Lines of a `records list --format jsonl` (one a unit). */
static int listed_units(const fx_world *w, fx_run *r, const char *opt, const char *v)
{
	int n = 0;

	fx_station_run(r, w, "records", "list", "--format", "jsonl", opt, v, NULL);
	cr_assert_eq(r->code, 0, "%s %s: exit %d: %s%s", opt, v, r->code, r->out, r->err);
	for (const char *p = r->out; (p = strstr(p, "\"uid\"")); p++)
		n++;
	return n;
}

/* Dates a person types: strict ISO 8601 (with a zone, converted) and
 * relative forms; anything else refused with exit 2 naming the option. */
Test(dates, relative_and_zoned_dates_select_units, .timeout = 120)
{
	static const char *const bad[] = { "2026-13-45", "2026-02-29", "yesterdays",
		"2d", "tomorrow", "12 parsecs ago", "2026-03-01T25:00", "-d", "" };
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;
	char at[64], when[64];
	struct tm tm = { 0 };
	time_t t;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	fx_station_run(r, &w, "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	fx_devsim_stop(&sim);
	cr_assert_eq(listed_units(&w, r, "--since", "yesterday"), 1, "%s", r->out);
	cr_assert_eq(listed_units(&w, r, "--since", "today"), 1, "%s", r->out);
	cr_assert_eq(listed_units(&w, r, "--until", "yesterday"), 0, "%s", r->out);
	cr_assert_eq(listed_units(&w, r, "--since", "2d ago"), 1, "%s", r->out);
	cr_assert_eq(listed_units(&w, r, "--since", "3 hours ago"), 1, "%s", r->out);
	cr_assert_eq(listed_units(&w, r, "--since", "-2d"), 1, "%s", r->out);
	cr_assert_eq(listed_units(&w, r, "--until", "-1h"), 0, "%s", r->out);
	cr_assert_eq(listed_units(&w, r, "--since", "now"), 0, "%s", r->out);
	/* a time with a zone is that instant: the unit's start, a minute
	 * either side, written at UTC-05:00 */
	fx_q_text(&w, "SELECT started_at FROM units LIMIT 1", at, sizeof(at));
	cr_assert_not_null(strptime(at, "%Y-%m-%dT%H:%M:%S", &tm), "%s", at);
	t = timegm(&tm) - 5 * 3600;
	gmtime_r(&(time_t){ t - 60 }, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S-05:00", &tm);
	cr_assert_eq(listed_units(&w, r, "--since", when), 1, "%s: %s", when, r->out);
	gmtime_r(&(time_t){ t + 60 }, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S-05:00", &tm);
	cr_assert_eq(listed_units(&w, r, "--since", when), 0, "%s: %s", when, r->out);
	cr_assert_eq(listed_units(&w, r, "--until", when), 1, "%s: %s", when, r->out);
	for (size_t i = 0; i < ST_ARRAY_SIZE(bad); i++) {
		fx_station_run(r, &w, "records", "list", "--since", bad[i], NULL);
		cr_assert_eq(r->code, 2, "'%s': exit %d: %s%s", bad[i], r->code, r->out,
			     r->err);
		cr_assert(strstr(r->err, "--since"), "%s", r->err);
		cr_assert_eq(r->out[0], '\0', "'%s' listed: %s", bad[i], r->out);
	}
	fx_station_run(r, &w, "records", "close-interrupted", "--before", "yesterdays",
		       NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "--before"), "%s", r->err);
	free(r);
	fx_rmtree(w.dir);
}

/* --json: every unit line says its schema, when, who and for which work
 * order; the dry-run plan is data (field, current, target, action); the
 * progress is on stderr without --verbose, stdout only JSON. */
Test(json, unit_lines_carry_schema_time_operator_work_order, .timeout = 120)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;
	json_t *units, *plan, *u;
	const char *at;
	struct tm tm = { 0 };
	size_t i;
	bool lifecycle = false, rot = false;

	fx_world_init(&w, true, 2000);
	fx_station_run(r, &w, "records", "workorder", "create", "WO-J", "--quota", "5",
		       NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 2, NULL), 0);
	fx_station_run(r, &w, "--json", "--dry-run", "--units", "1", "--slot", sim.port,
		       "provision", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	plan = fx_json_events(r->out, "fuse_plan");
	cr_assert_gt(json_array_size(plan), 1, "%s", r->out);
	json_array_foreach(plan, i, u) {
		const char *field = json_string_value(json_object_get(u, "field"));

		cr_assert_eq(json_integer_value(json_object_get(u, "schema")), 1, "%s", r->out);
		if (!field)     /* the programming conditions: no field */
			continue;
		cr_assert_not_null(json_string_value(json_object_get(u, "current")), "%s",
				   r->out);
		cr_assert_not_null(json_string_value(json_object_get(u, "target")), "%s",
				   r->out);
		cr_assert_not_null(json_string_value(json_object_get(u, "action")), "%s",
				   r->out);
		if (!strcmp(field, "lifecycle")) {
			lifecycle = true;
			cr_assert_str_eq(json_string_value(json_object_get(u, "action")),
					 "advance", "%s", r->out);
		}
		if (!strcmp(json_string_value(json_object_get(u, "target")), FX_ROT)) {
			rot = true;
			cr_assert_str_eq(json_string_value(json_object_get(u, "action")),
					 "burn", "%s", r->out);
		}
	}
	(void)lifecycle;
	cr_assert(rot, "%s", r->out);
	json_decref(plan);
	fx_station_run(r, &w, "--json", "--work-order", "WO-J", "--operator", "dana",
		       "--units", "1", "--slot", sim.port, "provision", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	units = fx_json_events(r->out, "unit");   /* asserts every line is JSON */
	cr_assert_eq(json_array_size(units), 1, "%s", r->out);
	u = json_array_get(units, 0);
	cr_assert_eq(json_integer_value(json_object_get(u, "schema")), 1, "%s", r->out);
	cr_assert_str_eq(json_string_value(json_object_get(u, "operator")), "dana");
	cr_assert_str_eq(json_string_value(json_object_get(u, "work_order")), "WO-J");
	at = json_string_value(json_object_get(u, "at"));
	cr_assert_not_null(at, "%s", r->out);
	cr_assert_not_null(strptime(at, "%Y-%m-%dT%H:%M:%S", &tm), "%s", at);
	cr_assert_eq(at[strlen(at) - 1], 'Z', "%s", at);
	cr_assert_lt(labs((long)(timegm(&tm) - time(NULL))), 600, "%s", at);
	json_decref(units);
	/* progress on stderr, without --verbose */
	cr_assert(strstr(r->err, "started"), "%s", r->err);
	cr_assert(strstr(r->err, "programmer ready"), "%s", r->err);
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
}

/* `station init DIR`: a configuration and a profile template that pass
 * `config check` but for the lines marked FILL IN; never overwritten. */
Test(init, writes_templates_that_check_but_for_fill_ins, .timeout = 60)
{
	char dir[] = "/tmp/st-init-XXXXXX", conf[600], prof[600], cmd[4096], line[1024];
	fx_run *r = new_run();
	FILE *p;
	int problems = 0;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(conf, sizeof(conf), "%s/station.conf", dir);
	snprintf(prof, sizeof(prof), "%s/product.profile", dir);
	run_env(r, dir, NULL, "init", dir, NULL);
	cr_assert_eq(r->code, 0, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert_eq(access(conf, R_OK), 0);
	cr_assert_eq(access(prof, R_OK), 0);
	/* every problem config check names is on a line marked FILL IN */
	run_env(r, dir, NULL, "--config", conf, "config", "check", NULL);
	for (char *s = r->err, *nl; (nl = strchr(s, '\n')); s = nl + 1) {
		char file[600];
		int ln, n = 0;
		FILE *f;

		*nl = '\0';
		if (sscanf(s, "%599[^:]:%d:", file, &ln) != 2)
			continue;
		problems++;
		f = fopen(file, "r");
		cr_assert_not_null(f, "%s", s);
		while (fgets(line, sizeof(line), f) && ++n < ln)
			;
		fclose(f);
		cr_assert(strstr(line, "FILL IN"), "problem on a line not marked FILL IN: "
			  "%s (line: %s)", s, line);
	}
	cr_assert_gt(problems, 0, "the root-of-trust hash is to be filled in: %s", r->err);
	/* the schema is in the comments */
	p = fopen(conf, "r");
	cr_assert_not_null(p);
	cr_assert_gt(fread(line, 1, sizeof(line) - 1, p), 0);
	fclose(p);
	snprintf(cmd, sizeof(cmd), "grep -q 'hsm.module' '%s' && grep -q "
		 "'records.checkpoint_dir' '%s' && grep -q 'fuses.plan' '%s'", conf, conf,
		 prof);
	cr_assert_eq(system(cmd), 0, "the settings are not listed");
	/* filled in, both pass */
	snprintf(cmd, sizeof(cmd), "sed -i 's/\"FILL IN: 64 hex digits\"/\"%s\"/' '%s'",
		 FX_ROT, prof);
	cr_assert_eq(system(cmd), 0);
	run_env(r, dir, NULL, "--config", conf, "config", "check", NULL);
	cr_assert_eq(r->code, 0, "exit %d: %s%s", r->code, r->out, r->err);
	/* a second init refuses and leaves the files alone */
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s.bak'", prof, prof);
	cr_assert_eq(system(cmd), 0);
	run_env(r, dir, NULL, "init", dir, NULL);
	cr_assert_eq(r->code, 2, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->err, "already exists"), "%s", r->err);
	snprintf(cmd, sizeof(cmd), "cmp -s '%s' '%s.bak'", prof, prof);
	cr_assert_eq(system(cmd), 0, "init overwrote the profile");
	free(r);
	fx_rmtree(dir);
}

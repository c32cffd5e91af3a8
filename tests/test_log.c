/* test_log.c — the station's log (base/log.c): structured fields through
 * the sink interface, the one-line form for a file, the choice of target
 * (journal under systemd, the file when configured, stderr otherwise),
 * secret fields never reaching any target, and — as root — the real
 * systemd-journald: a private one in a mount namespace (tmpfs /run), read
 * back with journalctl by its fields. */
#include <criterion/criterion.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"

struct got {
	int n, prio;
	char msg[256];
	char fields[512];
};

static void sink(void *ctx, int prio, const char *msg,
		 const struct st_log_field *f, size_t n)
{
	struct got *g = ctx;

	g->n++;
	g->prio = prio;
	snprintf(g->msg, sizeof(g->msg), "%s", msg);
	g->fields[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		size_t o = strlen(g->fields);

		snprintf(g->fields + o, sizeof(g->fields) - o, "%s=%s;", f[i].name,
			 f[i].value);
	}
}

static const struct st_log_field unit_fields[] = {
	{ "STATION_ID", "line1-st3" }, { "SLOT", "2" }, { "UNIT_UID", "0a1b2c3d" },
	{ "RESULT", "PASS" }, { "WORK_ORDER", NULL }, { "HSM_PIN", "123456" },
	{ "PASSWORD", "hunter2" }, { "bad name", "x" }, { "_PID", "1" },
};

Test(log, sink_gets_structured_fields_without_secrets)
{
	struct got g = { 0 };
	st_log *l = st_log_open_sink("station", sink, &g);

	cr_assert_not_null(l);
	cr_assert_eq(st_log_target(l), ST_LOG_SINK);
	st_log_send(l, LOG_INFO, unit_fields, sizeof(unit_fields) / sizeof(unit_fields[0]),
		    "slot %d: unit %s %s", 2, "0a1b2c3d", "PASS");
	st_log_close(l);
	cr_assert_eq(g.n, 1);
	cr_assert_eq(g.prio, LOG_INFO);
	cr_assert_str_eq(g.msg, "slot 2: unit 0a1b2c3d PASS");
	/* NULL values left out; secret, malformed and trusted (_) names dropped */
	cr_assert_str_eq(g.fields, "STATION_ID=line1-st3;SLOT=2;UNIT_UID=0a1b2c3d;RESULT=PASS;");
}

Test(log, field_names)
{
	cr_assert(st_log_field_ok("UNIT_UID"));
	cr_assert(st_log_field_ok("WORK_ORDER"));
	cr_assert_not(st_log_field_ok("STATION_PIN"));
	cr_assert_not(st_log_field_ok("SUPERVISOR_PASSWORD"));
	cr_assert_not(st_log_field_ok("_SYSTEMD_UNIT"));
	cr_assert_not(st_log_field_ok("unit_uid"));
	cr_assert_not(st_log_field_ok(""));
}

Test(log, one_line_form)
{
	char out[256];
	int n = st_log_format(out, sizeof(out), "unit done", unit_fields,
			      sizeof(unit_fields) / sizeof(unit_fields[0]));

	cr_assert_str_eq(out, "unit done [STATION_ID=line1-st3 SLOT=2 "
			 "UNIT_UID=0a1b2c3d RESULT=PASS]");
	cr_assert_eq(n, (int)strlen(out));
	cr_assert_eq(st_log_format(out, sizeof(out), "plain", NULL, 0), 5);
	cr_assert_str_eq(out, "plain");
	/* truncation says how much it needed, like snprintf */
	cr_assert_eq(st_log_format(out, 8, "unit done", unit_fields, 1),
		     (int)strlen("unit done [STATION_ID=line1-st3]"));
}

Test(log, file_when_configured_and_not_under_systemd)
{
	char dir[] = "/tmp/st-log-XXXXXX", path[64], line[512] = "", err[256];
	st_log *l;
	FILE *f;
	struct stat st;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/station.log", dir);
	unsetenv("JOURNAL_STREAM");
	l = st_log_open("station", path, err, sizeof(err));
	cr_assert_not_null(l, "%s", err);
	cr_assert_eq(st_log_target(l), ST_LOG_FILE);
	st_log_send(l, LOG_WARNING, unit_fields, 4, "unit %s FAIL", "0a1b2c3d");
	st_log_close(l);
	cr_assert_not_null(f = fopen(path, "r"));
	cr_assert_not_null(fgets(line, sizeof(line), f));
	fclose(f);
	cr_assert_not_null(strstr(line, " station: unit 0a1b2c3d FAIL [STATION_ID=line1-st3 "
				  "SLOT=2 UNIT_UID=0a1b2c3d RESULT=PASS]\n"), "%s", line);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0640);
	unlink(path);
	rmdir(dir);

	/* no file: stderr; a file that cannot be opened: an error naming it */
	l = st_log_open("station", NULL, err, sizeof(err));
	cr_assert_eq(st_log_target(l), ST_LOG_STDERR);
	st_log_close(l);
	cr_assert_null(st_log_open("station", "/nonexistent/dir/x.log", err, sizeof(err)));
	cr_assert_not_null(strstr(err, "/nonexistent/dir/x.log"), "%s", err);
}

Test(log, journal_under_systemd)
{
	char err[256];
	st_log *l;

	setenv("JOURNAL_STREAM", "8:12345", 1);
	l = st_log_open("station", "/nonexistent/dir/x.log", err, sizeof(err));
	cr_assert_not_null(l, "under systemd the journal wins over the file: %s", err);
	cr_assert_eq(st_log_target(l), ST_LOG_JOURNAL);
	st_log_close(l);
	unsetenv("JOURNAL_STREAM");
}

/* Run cmd, its stdout into out. */
static int run_capture(const char *cmd, char *out, size_t len)
{
	FILE *p = popen(cmd, "r");
	size_t n;

	if (!p)
		return -1;
	n = fread(out, 1, len - 1, p);
	out[n] = '\0';
	return pclose(p);
}

Test(log, real_journald, .timeout = 60)
{
	static const char *const jd[] = { "/lib/systemd/systemd-journald",
					  "/usr/lib/systemd/systemd-journald" };
	const char *journald = NULL;
	char out[8192] = "", err[256];
	struct stat st;
	pid_t pid;
	st_log *l;
	int i;

	if (geteuid() != 0)
		cr_skip_test("SKIPPED (not a pass): a private journald needs root "
			     "(a mount namespace); CI runs as root");
	for (i = 0; i < 2; i++)
		if (!access(jd[i], X_OK))
			journald = jd[i];
	cr_assert_not_null(journald, "systemd-journald missing (package systemd)");
	/* this test's process only: a private /run with its own journald */
	cr_assert_eq(unshare(CLONE_NEWNS), 0, "unshare: %m");
	cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0, "%m");
	cr_assert_eq(mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"), 0, "%m");
	cr_assert_eq(mkdir("/run/log", 0755), 0);
	cr_assert_eq(mkdir("/run/log/journal", 02755), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		freopen("/dev/null", "w", stdout);
		freopen("/dev/null", "w", stderr);
		execl(journald, journald, (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 100 && stat("/run/systemd/journal/socket", &st); i++)
		usleep(50000);
	cr_assert_eq(stat("/run/systemd/journal/socket", &st), 0, "journald did not start");

	setenv("JOURNAL_STREAM", "8:1", 1);
	l = st_log_open("station-test", NULL, err, sizeof(err));
	cr_assert_not_null(l);
	cr_assert_eq(st_log_target(l), ST_LOG_JOURNAL);
	st_log_send(l, LOG_WARNING, unit_fields, sizeof(unit_fields) / sizeof(unit_fields[0]),
		    "slot 2: unit %s FAIL", "0a1b2c3d");
	st_log_close(l);
	unsetenv("JOURNAL_STREAM");

	for (i = 0; i < 50; i++) {
		run_capture("journalctl -D /run/log/journal -o export --no-pager "
			    "UNIT_UID=0a1b2c3d 2>&1", out, sizeof(out));
		if (strstr(out, "MESSAGE="))
			break;
		usleep(100000);
	}
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	cr_assert_not_null(strstr(out, "\nMESSAGE=slot 2: unit 0a1b2c3d FAIL\n"), "%s", out);
	cr_assert_not_null(strstr(out, "\nPRIORITY=4\n"), "%s", out);
	cr_assert_not_null(strstr(out, "\nSYSLOG_IDENTIFIER=station-test\n"), "%s", out);
	cr_assert_not_null(strstr(out, "\nSTATION_ID=line1-st3\n"), "%s", out);
	cr_assert_not_null(strstr(out, "\nSLOT=2\n"), "%s", out);
	cr_assert_not_null(strstr(out, "\nRESULT=PASS\n"), "%s", out);
	cr_assert_null(strstr(out, "123456"), "a PIN reached the journal: %s", out);
	cr_assert_null(strstr(out, "hunter2"), "a password reached the journal: %s", out);
	cr_assert_null(strstr(out, "WORK_ORDER="), "%s", out);
}

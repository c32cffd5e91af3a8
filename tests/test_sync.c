/* test_sync.c — store-and-forward to a real PostgreSQL server (fx_pg):
 * real stations (SoftHSM token, CA, audit key) provision real simulated
 * units, then `station records sync` ships their chains; results are read
 * from PostgreSQL and SQLite directly. */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base.h"
#include "records/records.h"
#include "station/sync.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_pg.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

/* The world whose token the next station run uses (each world has its
 * own SoftHSM token; the variable is read by the child at exec). */
static void use(const fx_world *w)
{
	char p[600];

	snprintf(p, sizeof(p), "%s/softhsm2.conf", w->dir);
	cr_assert_eq(setenv("SOFTHSM2_CONF", p, 1), 0);
}

/* Every station's CA in one PEM file (a's dir/fleet-ca.pem): what `records
 * verify --pg --ca-cert` checks the audit certificates of a fleet against
 * (each world's token holds only its own CA). */
static const char *fleet_cas(const fx_world *a, const fx_world *b)
{
	static char path[600];
	char cmd[2048];

	snprintf(path, sizeof(path), "%s/fleet-ca.pem", a->dir);
	snprintf(cmd, sizeof(cmd), "cat '%s' '%s' > '%s'", a->ca, b->ca, path);
	cr_assert_eq(system(cmd), 0);
	return path;
}

/* A station world with a CA and a sync group pointing at pg. */
static void sync_world(fx_world *w, const char *id, const fx_pg *pg,
		       const char *extra)
{
	fx_world_opts o = { .with_ca = true, .timeout_ms = 700, .station_id = id };
	FILE *f;

	fx_world_init_opts(w, &o);
	f = fopen(w->conf, "a");
	cr_assert_not_null(f);
	fprintf(f, "sync: { conninfo = \"%s\"; passfile = \"%s\"; %s };\n",
		pg->conninfo, pg->passfile, extra ? extra : "");
	fclose(f);
}

static void start_pg(fx_pg *pg)
{
	cr_assert_eq(fx_pg_start(pg), 0, "the PostgreSQL fixture failed "
		     "(see stderr)");
}

/* One text value from the local store (every row joined with ','). */
static char *local_text(const fx_world *w, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	char *out = NULL;

	cr_assert_eq(sqlite3_open_v2(w->db, &db, SQLITE_OPEN_READONLY, NULL),
		     SQLITE_OK);
	cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK,
		     "%s: %s", sql, sqlite3_errmsg(db));
	if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
		out = strdup((const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	sqlite3_close(db);
	return out ? out : strdup("");
}

static char *pg_text(const fx_pg *pg, const char *sql)
{
	PGconn *c = fx_pg_connect(pg);
	PGresult *r;
	char *out;

	cr_assert_not_null(c);
	r = PQexec(c, sql);
	cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql,
		     PQerrorMessage(c));
	out = strdup(PQntuples(r) && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
	PQfinish(c);
	return out;
}

/* The station's chain in PostgreSQL equals the local one, hash by hash,
 * seq 1..N without a gap or a duplicate. */
static void same_chain(const fx_pg *pg, const fx_world *w, const char *id)
{
	char sql[512], *loc, *cen;
	long long n;

	loc = local_text(w, "SELECT group_concat(seq || ':' || hash, ',') FROM"
			 " (SELECT seq, hash FROM events ORDER BY seq)");
	snprintf(sql, sizeof(sql), "SELECT string_agg(seq || ':' || hash, ','"
		 " ORDER BY seq) FROM events WHERE station_id = '%s'", id);
	cen = pg_text(pg, sql);
	cr_assert_str_eq(cen, loc, "station %s: the central chain differs from "
			 "the local one", id);
	snprintf(sql, sizeof(sql), "SELECT (count(*) = max(seq) AND min(seq) = 1"
		 " AND count(DISTINCT hash) = count(*))::int FROM events"
		 " WHERE station_id = '%s'", id);
	n = fx_pg_num(pg, sql);
	cr_assert_eq(n, 1, "station %s: gaps or duplicates in seq", id);
	free(loc);
	free(cen);
}

static long long local_num(const fx_world *w, const char *sql)
{
	char *t = local_text(w, sql);
	long long n = strtoll(t, NULL, 10);

	free(t);
	return n;
}

/* The TUI header's sync field (st_sync_lag) for world w starts with want. */
static void header_line(const fx_world *w, const char *id, const char *want)
{
	st_config cfg = { .records_path = (char *)w->db, .station_id = (char *)id };
	rec_store *rec = NULL;
	char line[256];

	cr_assert_eq(rec_open(w->db, &rec), ST_OK);
	st_sync_lag(&cfg, rec, line, sizeof(line));
	rec_close(rec);
	cr_assert_eq(strncmp(line, want, strlen(want)), 0, "header: '%s', "
		     "wanted '%s...'", line, want);
}

/* A test that dies on a failed assertion never reaches fx_pg_destroy():
 * the fixture's reaper still stops its server and removes its files. */
Test(sync, a_dead_test_leaves_no_server_behind, .timeout = 120)
{
	char dir[256] = "", pidfile[600];
	int p[2], status;
	pid_t pid;

	cr_assert_eq(pipe(p), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		fx_pg pg;

		close(p[0]);
		if (fx_pg_start(&pg) != 0)
			_exit(1);
		if (write(p[1], pg.dir, strlen(pg.dir) + 1) < 0)
			_exit(2);
		_exit(3);       /* as a failed assertion would: no destroy */
	}
	close(p[1]);
	cr_assert_gt(read(p[0], dir, sizeof(dir) - 1), 0, "the server did not start");
	close(p[0]);
	waitpid(pid, &status, 0);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 3);
	snprintf(pidfile, sizeof(pidfile), "%s/data/postmaster.pid", dir);
	for (int i = 0; i < 600 && access(dir, F_OK) == 0; i++)
		usleep(100 * 1000);
	cr_assert_neq(access(pidfile, F_OK), 0, "the server of %s still runs", dir);
	cr_assert_neq(access(dir, F_OK), 0, "%s was left behind", dir);
}

Test(sync, two_stations_arrive_complete_and_in_order, .timeout = 240)
{
	fx_pg pg;
	fx_world a, b;
	fx_devsim sa, sb;
	fx_run *r = malloc(sizeof(*r));
	long long ea, eb;

	cr_assert_not_null(r);
	start_pg(&pg);
	sync_world(&a, "line1-st1", &pg, NULL);
	sync_world(&b, "line1-st2", &pg, NULL);
	cr_assert_eq(fx_devsim_start(&sa, a.dir, "prog", 3, "--seed st1"), 0);
	cr_assert_eq(fx_devsim_start(&sb, b.dir, "prog", 3, "--seed st2"), 0);
	use(&a);
	fx_station_run(r, &a, "--burn-fuses", "--yes", "--slot", sa.port, "provision", NULL);
	cr_assert_eq(r->code, 0, "A: %s", r->err);
	use(&b);
	fx_station_run(r, &b, "--burn-fuses", "--yes", "--slot", sb.port, "provision", NULL);
	cr_assert_eq(r->code, 0, "B: %s", r->err);

	use(&a);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 0, "A sync: %s%s", r->out, r->err);
	use(&b);
	fx_station_run(r, &b, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 0, "B sync: %s%s", r->out, r->err);
	cr_assert(strstr(r->out, "(up to date)"), "%s", r->out);

	same_chain(&pg, &a, "line1-st1");
	same_chain(&pg, &b, "line1-st2");
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM units WHERE state = 'PASS'"), 6);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM device_identities"), 6);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM alerts"), 0);

	/* again: nothing new, nothing doubled */
	ea = fx_pg_num(&pg, "SELECT count(*) FROM events WHERE station_id = 'line1-st1'");
	fx_station_run(r, &b, "records", "sync", "--once", NULL);
	use(&a);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 0);
	cr_assert(strstr(r->out, " 0 events shipped"), "%s", r->out);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM events WHERE station_id = 'line1-st1'"), ea);

	/* the lag: up to date, then one event behind after a new one */
	fx_station_run(r, &a, "records", "sync", "--status", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "lag:               0 events, 0 units"), "%s", r->out);
	header_line(&a, "line1-st1", "sync: up to date (");
	fx_station_run(r, &a, "records", "workorder", "create", "WO-9", "--quota", "3", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	fx_station_run(r, &a, "records", "sync", "--status", NULL);
	cr_assert(strstr(r->out, "lag:               1 events"), "%s", r->out);
	header_line(&a, "line1-st1", "sync: 1 events / 0 units behind");

	/* every chain held centrally verifies... */
	fx_station_run(r, &a, "--ca-cert", fleet_cas(&a, &b), "records", "verify",
		       "--pg", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert(strstr(r->out, "central records OK: 2 stations"), "%s", r->out);
	/* ... and a changed body there is found and named */
	eb = fx_pg_num(&pg, "SELECT count(*) FROM events WHERE station_id = 'line1-st2'");
	cr_assert_gt(eb, 5);
	{
		PGconn *c = fx_pg_connect(&pg);
		PGresult *res = PQexec(c, "UPDATE events SET body = replace(body,"
				       " '\"PASS\"', '\"FAIL\"') WHERE station_id ="
				       " 'line1-st2' AND kind = 'unit_end'");

		cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK);
		PQclear(res);
		PQfinish(c);
	}
	fx_station_run(r, &a, "--ca-cert", fleet_cas(&a, &b), "records", "verify",
		       "--pg", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert(strstr(r->out, "central records TAMPERED: station line1-st2: "
			 "first bad record: event"), "%s", r->out);
	cr_assert(strstr(r->out, "hash does not match its body"), "%s", r->out);

	fx_devsim_stop(&sa);
	fx_devsim_stop(&sb);
	fx_pg_destroy(&pg);
	fx_rmtree(a.dir);
	fx_rmtree(b.dir);
	free(r);
}

Test(sync, same_device_at_two_stations_is_an_alert_at_both_ends, .timeout = 240)
{
	fx_pg pg;
	fx_world a, b;
	fx_devsim sa, sb;
	fx_run *r = malloc(sizeof(*r));

	cr_assert_not_null(r);
	start_pg(&pg);
	sync_world(&a, "line1-st1", &pg, NULL);
	sync_world(&b, "line2-st1", &pg, NULL);
	/* the same seed: the same two device IDs presented at both stations,
	 * unarmed: an UNFUSED unit holds a live identity, so it claims it */
	cr_assert_eq(fx_devsim_start(&sa, a.dir, "prog", 2, "--seed same"), 0);
	cr_assert_eq(fx_devsim_start(&sb, b.dir, "prog", 2, "--seed same"), 0);
	use(&a);
	fx_station_run(r, &a, "--slot", sa.port, "provision", NULL);
	cr_assert_eq(r->code, 0, "A: %s", r->err);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 0, "A sync: %s%s", r->out, r->err);
	cr_assert(!strstr(r->out, "conflict"), "%s", r->out);
	use(&b);
	fx_station_run(r, &b, "--slot", sb.port, "provision", NULL);
	cr_assert_eq(r->code, 0, "B: %s", r->err);

	/* B's sync finds both devices held by A: two alerts, recorded at B */
	fx_station_run(r, &b, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 0, "B sync: %s%s", r->out, r->err);
	cr_assert(strstr(r->out, "2 conflicts raised"), "%s", r->out);
	cr_assert(strstr(r->out, "2 alerts recorded here"), "%s", r->out);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM alerts WHERE kind ="
			       " 'duplicate_device' AND first_station = 'line1-st1'"
			       " AND second_station = 'line2-st1'"), 2);
	/* never merged: the identity stays A's, B's units are kept as they are */
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM device_identities"
			       " WHERE station_id = 'line1-st1'"), 2);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM units WHERE state ="
			       " 'UNFUSED' AND station_id = 'line2-st1'"), 2);
	cr_assert_eq(local_num(&b, "SELECT count(*) FROM events WHERE kind ="
			       " 'sync_alert' AND json_extract(body,"
			       " '$.data.alert_kind') = 'duplicate_device'"), 2);

	/* A picks them up on its next sync */
	use(&a);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 0, "A sync: %s%s", r->out, r->err);
	cr_assert(strstr(r->out, "2 alerts recorded here"), "%s", r->out);
	cr_assert_eq(local_num(&a, "SELECT count(*) FROM events WHERE kind ="
			       " 'sync_alert' AND json_extract(body,"
			       " '$.data.second_station') = 'line2-st1'"), 2);
	/* once only */
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert(!strstr(r->out, "alerts recorded"), "%s", r->out);
	cr_assert_eq(local_num(&a, "SELECT count(*) FROM events WHERE kind = 'sync_alert'"), 2);

	/* A finishes its UNFUSED units armed: the same certificates, now PASS.
	 * That is the identity A's units already claimed, not a second one. */
	fx_devsim_stop(&sa);
	cr_assert_eq(fx_devsim_rewind(sa.state_path), 0);
	cr_assert_eq(fx_devsim_start(&sa, a.dir, "prog", 2, "--seed same"), 0);
	fx_station_run(r, &a, "--burn-fuses", "--yes", "--slot", sa.port, "provision", NULL);
	cr_assert_eq(r->code, 0, "A armed: %s%s", r->out, r->err);
	cr_assert_eq(fx_count_units(&a, "PASS"), 2, "%s", r->out);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 0, "A sync: %s%s", r->out, r->err);
	cr_assert(!strstr(r->out, "conflict"), "%s", r->out);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM alerts"), 2);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM units WHERE state ="
			       " 'PASS' AND station_id = 'line1-st1'"), 2);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM device_identities"
			       " WHERE station_id = 'line1-st1'"), 2);

	/* the alerts are signed links of each chain, locally and centrally */
	fx_station_run(r, &a, "records", "verify", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	use(&b);
	fx_station_run(r, &b, "records", "verify", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	fx_station_run(r, &b, "records", "sync", "--once", NULL);
	fx_station_run(r, &b, "--ca-cert", fleet_cas(&a, &b), "records", "verify",
		       "--pg", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	same_chain(&pg, &a, "line1-st1");
	same_chain(&pg, &b, "line2-st1");

	fx_devsim_stop(&sa);
	fx_devsim_stop(&sb);
	fx_pg_destroy(&pg);
	fx_rmtree(a.dir);
	fx_rmtree(b.dir);
	free(r);
}

/* Spawn the station with args (NULL-terminated), output to files in the
 * world's dir; returns the pid. */
static pid_t spawn(const fx_world *w, const char *tag, ...)
{
	char bin[512], out[600], err[600];
	const char *argv[64];
	va_list ap;
	pid_t pid;

	va_start(ap, tag);
	fx_station_argv(argv, bin, w, ap);
	va_end(ap);
	snprintf(out, sizeof(out), "%s/%s.out", w->dir, tag);
	snprintf(err, sizeof(err), "%s/%s.err", w->dir, tag);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		if (!freopen(out, "w", stdout) || !freopen(err, "w", stderr))
			_exit(126);
		execv(bin, (char **)argv);
		_exit(127);
	}
	return pid;
}

static int reap(pid_t pid)
{
	int status;

	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static char *file_text(const fx_world *w, const char *name)
{
	char path[600], *buf = calloc(1, 65536);
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", w->dir, name);
	f = fopen(path, "r");
	if (f && buf) {
		size_t n = fread(buf, 1, 65535, f);

		buf[n] = '\0';
	}
	if (f)
		fclose(f);
	return buf;
}

Test(sync, server_stopped_mid_sync_loses_and_doubles_nothing, .timeout = 240)
{
	fx_pg pg;
	fx_world a;
	fx_devsim sa;
	fx_run *r = malloc(sizeof(*r));
	PGconn *lock;
	PGresult *res;
	long long local, waited = 0;
	pid_t pid;
	char *err;

	cr_assert_not_null(r);
	start_pg(&pg);
	sync_world(&a, "line3-st1", &pg, "batch = 4; interval_ms = 200; "
		   "backoff_max_ms = 500;");
	cr_assert_eq(fx_devsim_start(&sa, a.dir, "prog", 3, NULL), 0);
	use(&a);
	/* makes the central schema */
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	fx_station_run(r, &a, "--slot", sa.port, "provision", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	local = local_num(&a, "SELECT max(seq) FROM events");
	cr_assert_gt(local, 12);

	/* hold the cert_serials table: the follower's batch that reaches
	 * the first certificate step waits inside its transaction, with
	 * events inserted, after the batches before it were committed */
	lock = fx_pg_connect(&pg);
	cr_assert_not_null(lock);
	res = PQexec(lock, "BEGIN; LOCK TABLE cert_serials IN ACCESS EXCLUSIVE MODE");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(lock));
	PQclear(res);
	pid = spawn(&a, "follow", "records", "sync", "--follow", NULL);
	while (fx_pg_num(&pg, "SELECT count(*) FROM pg_stat_activity WHERE"
			 " application_name = 'station line3-st1' AND"
			 " wait_event_type = 'Lock'") != 1) {
		cr_assert_lt(waited++, 600, "the follower never reached the lock");
		usleep(50000);
	}
	/* mid-batch: some batches committed, one open, not all shipped */
	cr_assert_lt(fx_pg_num(&pg, "SELECT count(*) FROM events"), local);
	/* batches of 4 events cut the station's commits, yet what was
	 * shipped ends on a signed event: the signature that covers it
	 * (records/chain.c, "One signature per commit") */
	cr_assert_gt(fx_pg_num(&pg, "SELECT count(*) FROM events"), 0);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM events WHERE seq = (SELECT "
			       "max(seq) FROM events) AND sig IS NULL"), 0);

	cr_assert_eq(fx_pg_stop(&pg, "immediate"), 0);
	PQfinish(lock);
	cr_assert_eq(fx_pg_restart(&pg), 0);

	/* the follower retries, reconnects and resumes from the server's mark */
	waited = 0;
	while (fx_pg_num(&pg, "SELECT high_seq FROM stations WHERE id = 'line3-st1'")
	       != local) {
		cr_assert_lt(waited++, 1200, "the follower did not catch up");
		usleep(50000);
	}
	kill(pid, SIGTERM);
	cr_assert_eq(reap(pid), 0);
	err = file_text(&a, "follow.err");
	cr_assert(strstr(err, "retrying in"), "no retry was reported: %s", err);
	free(err);
	same_chain(&pg, &a, "line3-st1");
	/* events covered by their batch's signature arrived as they are */
	cr_assert_gt(fx_pg_num(&pg, "SELECT count(*) FROM events WHERE sig IS NULL"), 0);
	/* unarmed: every unit arrived with its end (UNFUSED), none twice */
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM units WHERE state = 'UNFUSED'"), 3);
	fx_station_run(r, &a, "records", "verify", "--pg", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);

	fx_devsim_stop(&sa);
	fx_pg_destroy(&pg);
	fx_rmtree(a.dir);
	free(r);
}

Test(sync, quota_is_shared_by_two_stations_running_at_once, .timeout = 300)
{
	fx_pg pg;
	fx_world a, b;
	fx_devsim sa, sb;
	fx_run *r = malloc(sizeof(*r));
	pid_t pa, pb;
	int ca, cb;
	long long pass;

	cr_assert_not_null(r);
	start_pg(&pg);
	sync_world(&a, "line4-st1", &pg, NULL);
	sync_world(&b, "line4-st2", &pg, NULL);
	cr_assert_eq(fx_devsim_start(&sa, a.dir, "prog", 6, "--seed q1"), 0);
	cr_assert_eq(fx_devsim_start(&sb, b.dir, "prog", 6, "--seed q2"), 0);
	use(&a);
	fx_station_run(r, &a, "records", "workorder", "create", "WO-7", "--quota",
		       "5", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "central database"), "%s", r->out);
	/* B only knows it from the central database */
	pa = spawn(&a, "prov", "--burn-fuses", "--yes", "--slot", sa.port, "--work-order",
		   "WO-7", "provision", NULL);
	use(&b);
	pb = spawn(&b, "prov", "--burn-fuses", "--yes", "--slot", sb.port, "--work-order",
		   "WO-7", "provision", NULL);
	ca = reap(pa);
	cb = reap(pb);
	cr_assert_eq(ca, 0, "A exit %d", ca);
	cr_assert_eq(cb, 0, "B exit %d", cb);
	pass = fx_count_units(&a, "PASS") + fx_count_units(&b, "PASS");
	cr_assert_eq(pass, 5, "%lld PASS across the stations for a quota of 5", pass);
	cr_assert_eq(fx_pg_num(&pg, "SELECT reserved FROM work_orders WHERE id = 'WO-7'"), 5);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM reservations WHERE state = 'PASS'"), 5);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM reservations WHERE state = 'HELD'"), 0);

	/* the central figures, from either station */
	fx_station_run(r, &b, "records", "workorder", "show", "WO-7", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert(strstr(r->out, "central: quota 5, 5 reserved by all stations (5 PASS), 0 left"),
		  "%s", r->out);

	fx_devsim_stop(&sa);
	fx_devsim_stop(&sb);
	fx_pg_destroy(&pg);
	fx_rmtree(a.dir);
	fx_rmtree(b.dir);
	free(r);
}

Test(sync, offline_stop_policy_starts_no_unit, .timeout = 180)
{
	fx_pg pg;
	fx_world a;
	fx_devsim sa;
	fx_run *r = malloc(sizeof(*r));

	cr_assert_not_null(r);
	start_pg(&pg);
	sync_world(&a, "line5-st1", &pg, "offline = \"stop\"; connect_timeout_s = 2;");
	cr_assert_eq(fx_devsim_start(&sa, a.dir, "prog", 2, NULL), 0);
	use(&a);
	fx_station_run(r, &a, "records", "workorder", "create", "WO-2", "--quota",
		       "10", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert_eq(fx_pg_stop(&pg, "fast"), 0);
	fx_station_run(r, &a, "--slot", sa.port, "--work-order", "WO-2", "provision", NULL);
	cr_assert_eq(r->code, 4, "%s", r->err);
	cr_assert(strstr(r->err, "sync.offline = \"stop\": no unit is started"), "%s", r->err);
	cr_assert_eq(fx_count_units(&a, NULL), 0);

	fx_devsim_stop(&sa);
	fx_pg_destroy(&pg);
	fx_rmtree(a.dir);
	free(r);
}

Test(sync, offline_allowance_policy_continues_then_stops, .timeout = 240)
{
	fx_pg pg;
	fx_world a;
	fx_devsim sa, sb;
	fx_run *r = malloc(sizeof(*r));

	cr_assert_not_null(r);
	start_pg(&pg);
	sync_world(&a, "line6-st1", &pg, "offline = \"allowance\"; allowance = 2; "
		   "connect_timeout_s = 2;");
	cr_assert_eq(fx_devsim_start(&sa, a.dir, "prog", 5, NULL), 0);
	cr_assert_eq(fx_devsim_start(&sb, a.dir, "prog2", 3, "--seed o2"), 0);
	use(&a);
	fx_station_run(r, &a, "records", "workorder", "create", "WO-3", "--quota",
		       "10", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	/* online: one unit, and two more pre-reserved for offline work */
	fx_station_run(r, &a, "--burn-fuses", "--yes", "--slot", sa.port, "--work-order",
		       "WO-3", "--units", "1", "provision", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	cr_assert_eq(fx_pg_num(&pg, "SELECT reserved FROM work_orders WHERE id = 'WO-3'"), 3);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM reservations WHERE state = 'ALLOWANCE'"), 2);

	/* offline, two slots asking at once: the two pre-reserved units
	 * between them, then a clear stop */
	cr_assert_eq(fx_pg_stop(&pg, "fast"), 0);
	fx_station_run(r, &a, "--burn-fuses", "--yes", "--slot", sa.port, "--slot", sb.port,
		       "--work-order", "WO-3", "provision", NULL);
	cr_assert_eq(r->code, 4, "%s", r->err);
	cr_assert(strstr(r->err, "allowance for work order WO-3 is used up (2 of 2)"),
		  "%s", r->err);
	cr_assert_eq(fx_count_units(&a, "PASS"), 3);
	cr_assert_eq(local_num(&a, "SELECT count(*) FROM steps WHERE step = 'quota-offline'"), 2);

	/* back online: the offline units settle their allowances, no more */
	cr_assert_eq(fx_pg_restart(&pg), 0);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert_eq(fx_pg_num(&pg, "SELECT reserved FROM work_orders WHERE id = 'WO-3'"), 3);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM reservations WHERE state = 'PASS'"), 3);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM reservations WHERE state = 'ALLOWANCE'"), 0);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM alerts"), 0);

	fx_devsim_stop(&sa);
	fx_devsim_stop(&sb);
	fx_pg_destroy(&pg);
	fx_rmtree(a.dir);
	free(r);
}

Test(sync, a_password_in_the_connection_string_is_refused, .timeout = 120)
{
	fx_world a;
	fx_run *r = malloc(sizeof(*r));
	fx_world_opts o = { .with_ca = false, .timeout_ms = 700 };
	FILE *f;

	cr_assert_not_null(r);
	fx_world_init_opts(&a, &o);
	f = fopen(a.conf, "a");
	cr_assert_not_null(f);
	fprintf(f, "sync: { conninfo = \"host=127.0.0.1 port=1 password=hunter2\"; };\n");
	fclose(f);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 2, "%s", r->err);
	cr_assert(strstr(r->err, "holds a password"), "%s", r->err);
	cr_assert(!strstr(r->err, "hunter2"), "the password was printed: %s", r->err);
	fx_rmtree(a.dir);
	free(r);
}

Test(sync, tls_when_configured, .timeout = 180)
{
	fx_pg pg;
	fx_world a;
	fx_world_opts o = { .with_ca = true, .timeout_ms = 700,
			    .station_id = "line7-st1" };
	fx_run *r = malloc(sizeof(*r));
	char ca[512], extra[1200];
	FILE *f;

	cr_assert_not_null(r);
	start_pg(&pg);
	cr_assert_eq(fx_pg_tls(&pg, ca), 0);
	fx_world_init_opts(&a, &o);
	/* verified TLS: the server's certificate under the configured CA */
	snprintf(extra, sizeof(extra), "sslmode = \"verify-full\"; "
		 "sslrootcert = \"%s\";", ca);
	f = fopen(a.conf, "a");
	cr_assert_not_null(f);
	fprintf(f, "sync: { conninfo = \"%s\"; passfile = \"%s\"; %s };\n",
		pg.conninfo, pg.passfile, extra);
	fclose(f);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM stations WHERE id = 'line7-st1'"), 1);

	/* without TLS the server does not let it in */
	fx_write_conf(&a, &o);
	f = fopen(a.conf, "a");
	fprintf(f, "sync: { conninfo = \"%s\"; passfile = \"%s\"; "
		"sslmode = \"disable\"; };\n", pg.conninfo, pg.passfile);
	fclose(f);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert(strstr(r->err, "no encryption"), "%s", r->err);

	/* a server certificate from another CA is refused */
	fx_write_conf(&a, &o);
	f = fopen(a.conf, "a");
	fprintf(f, "sync: { conninfo = \"%s\"; passfile = \"%s\"; "
		"sslmode = \"verify-full\"; sslrootcert = \"%s\"; };\n",
		pg.conninfo, pg.passfile, a.ca);
	fclose(f);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert(strstr(r->err, "certificate verify failed"), "%s", r->err);

	fx_pg_destroy(&pg);
	fx_rmtree(a.dir);
	free(r);
}

Test(sync, a_replaced_store_is_not_shipped_over_the_central_chain, .timeout = 180)
{
	fx_pg pg;
	fx_world a;
	fx_devsim sa;
	fx_run *r = malloc(sizeof(*r));
	char *before, *after;

	cr_assert_not_null(r);
	start_pg(&pg);
	sync_world(&a, "line8-st1", &pg, NULL);
	cr_assert_eq(fx_devsim_start(&sa, a.dir, "prog", 2, NULL), 0);
	use(&a);
	fx_station_run(r, &a, "--slot", sa.port, "--units", "1", "provision", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	before = pg_text(&pg, "SELECT string_agg(hash, ',' ORDER BY seq) FROM events");

	/* the records file is lost and the station starts a new one: its
	 * chain does not continue the one held centrally */
	cr_assert_eq(unlink(a.db), 0);
	fx_station_run(r, &a, "--slot", sa.port, "--units", "1", "provision", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert(strstr(r->err, "a replaced records file"), "%s", r->err);
	after = pg_text(&pg, "SELECT string_agg(hash, ',' ORDER BY seq) FROM events");
	cr_assert_str_eq(after, before, "the central chain was changed");
	free(before);
	free(after);

	fx_devsim_stop(&sa);
	fx_pg_destroy(&pg);
	fx_rmtree(a.dir);
	free(r);
}


/* Cut the last run off a station's chain (its events, steps and unit row,
 * consistently, as plain verify cannot see). */
static void cut_after(const fx_world *w, long long seq, int unit)
{
	char sql[512], *err = NULL;
	sqlite3 *db = NULL;

	snprintf(sql, sizeof(sql), "DROP TRIGGER events_no_delete;"
		 " DROP TRIGGER units_no_delete; DELETE FROM events WHERE seq > %lld;"
		 " DELETE FROM steps WHERE unit_id = %d; DELETE FROM units WHERE id = %d",
		 seq, unit, unit);
	cr_assert_eq(sqlite3_open(w->db, &db), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &err), SQLITE_OK, "%s", err);
	sqlite3_close(db);
}

/* A station whose store lost its tail — PostgreSQL holds more of its
 * chain than it has, or one of its checkpoints is beyond its head — is an
 * alert (central, and a signed event of its own chain), and nothing is
 * shipped over the central chain. */
Test(sync, a_store_that_lost_its_tail_is_an_alert, .timeout = 300)
{
	fx_pg pg;
	fx_world a, b;
	fx_devsim sa, sb;
	fx_run *r = malloc(sizeof(*r));
	long long s1, held;

	cr_assert_not_null(r);
	start_pg(&pg);

	/* A: shipped two runs, then lost the second */
	sync_world(&a, "line9-st1", &pg, NULL);
	cr_assert_eq(fx_devsim_start(&sa, a.dir, "prog", 2, "--seed tailA"), 0);
	use(&a);
	fx_station_run(r, &a, "--slot", sa.port, "--units", "1", "provision", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	s1 = local_num(&a, "SELECT max(seq) FROM events");
	fx_station_run(r, &a, "--slot", sa.port, "--units", "1", "provision", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	fx_devsim_stop(&sa);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);
	held = fx_pg_num(&pg, "SELECT count(*) FROM events WHERE station_id = 'line9-st1'");
	cr_assert_gt(held, s1);
	cr_assert_gt(fx_pg_num(&pg, "SELECT count(*) FROM checkpoints"
			       " WHERE station_id = 'line9-st1'"), 0);
	cut_after(&a, s1, 2);
	fx_station_run(r, &a, "records", "verify", NULL);
	cr_assert_eq(r->code, 0, "plain verify cannot see a cut: %s%s", r->out, r->err);
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert(strstr(r->err, "were cut off the end of the local chain"), "%s", r->err);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM alerts WHERE kind = 'chain_cut'"
			       " AND second_station = 'line9-st1'"), 1);
	cr_assert_eq(local_num(&a, "SELECT count(*) FROM events WHERE kind = 'sync_alert'"
			       " AND json_extract(body, '$.data.alert_kind') = 'chain_cut'"
			       " AND sig IS NOT NULL"), 1);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM events WHERE station_id ="
			       " 'line9-st1'"), held, "events were shipped over the chain");
	/* again: the same alert, not a second one */
	fx_station_run(r, &a, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM alerts WHERE kind = 'chain_cut'"), 1);
	fx_station_run(r, &a, "records", "verify", NULL);
	cr_assert_eq(r->code, 0, "%s%s", r->out, r->err);

	/* B: never synced its events; its checkpoint of the lost run is
	 * shipped first and gives it away */
	sync_world(&b, "line9-st2", &pg, NULL);
	cr_assert_eq(fx_devsim_start(&sb, b.dir, "prog", 2, "--seed tailB"), 0);
	use(&b);
	fx_station_run(r, &b, "--slot", sb.port, "--units", "1", "provision", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	s1 = local_num(&b, "SELECT max(seq) FROM events");
	fx_station_run(r, &b, "--slot", sb.port, "--units", "1", "provision", NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	fx_devsim_stop(&sb);
	cut_after(&b, s1, 2);
	fx_station_run(r, &b, "records", "sync", "--once", NULL);
	cr_assert_eq(r->code, 4, "%s%s", r->out, r->err);
	cr_assert(strstr(r->err, "a checkpoint of station line9-st2"), "%s", r->err);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM alerts WHERE kind = 'chain_cut'"
			       " AND second_station = 'line9-st2'"), 1);
	cr_assert_eq(fx_pg_num(&pg, "SELECT count(*) FROM events WHERE station_id ="
			       " 'line9-st2'"), 0);
	cr_assert_eq(local_num(&b, "SELECT count(*) FROM events WHERE kind = 'sync_alert'"
			       " AND json_extract(body, '$.data.alert_kind') = 'chain_cut'"), 1);

	fx_pg_destroy(&pg);
	fx_rmtree(a.dir);
	fx_rmtree(b.dir);
	free(r);
}

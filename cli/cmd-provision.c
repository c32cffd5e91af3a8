/* cmd-provision.c — `station provision`: a batch run over the slots, one
 * line per unit on stdout (or JSON), progress on stderr, a summary and a
 * signed checkpoint of the records at the end.  Exit codes: 0 all units
 * PASS (or, unarmed, UNFUSED: provisioned, not locked, as asked); 1 a unit
 * FAILED or was QUARANTINED; 2 usage, configuration or profile error; 3
 * HSM; 4 records; 5 a programmer/link error stopped a slot.
 *
 * The profile is checked before the records are opened and the PIN asked,
 * so a refused profile costs nobody a PIN. */
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "cli/cli.h"

static int exec_provision(struct cli *cli, int argc, char **argv);

const struct cli_entry cli_cmd_provision = {
	.name = "provision",
	.usage = "provision --slot PORT [--slot PORT...] [--units N] [--burn-fuses [--yes]] [--dry-run] [--json]\n"
		 "            [--operator NAME [--password-file F]] [--reprovision [--uid UID] --reason TEXT\n"
		 "             --supervisor NAME [--supervisor-password-file F]]\n"
		 "            [--plug-wait SECONDS]  (USB: wait for absent/unplugged programmers)",
	.help = "Provision the units in the programmers of every slot: identify,\n"
		"key, certificate, fuses (armed with --burn-fuses), verdict, record.\n"
		"An armed run asks on the terminal to type the work order (or BURN)\n"
		"before anything burns; without a terminal it needs --yes.",
	.options = (const enum cli_opt[]){ O_SLOT, O_UNITS, O_TIMEOUT_MS,
		O_BURN_FUSES, O_DRY_RUN, O_WORK_ORDER, O_OPERATOR, O_PASSWORD_FILE,
		O_REPROVISION, O_UID, O_REASON, O_SUPERVISOR,
		O_SUPERVISOR_PASSWORD_FILE, O_PLUG_WAIT, O_YES, O_NONE },
	/* starts a line: the records are created when absent */
	.needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RW | CLI_NEED_STORE_NEW |
		 CLI_NEED_HSM,
	.exec = exec_provision,
};


/* A unit's verdict or a slot's error in the station's log (the journal
 * under systemd, else station.log_file when set; on a terminal the lines
 * below already say it): with the fields a plant searches by.  Never a
 * secret: the engine's events hold none. */
static void log_event(struct cli *cli, const st_event *ev)
{
	char slot[16];
	const char *wo = cli->run.work_order;
	const char *result = ev->kind == ST_EV_UNIT_DONE ? st_verdict_name(ev->result) : NULL;
	struct st_log_field f[] = {
		{ "STATION_ID", cli->cfg.station_id }, { "SLOT", slot },
		{ "UNIT_UID", ev->uid }, { "RESULT", result },
		{ "WORK_ORDER", wo }, { "CERT_SERIAL", ev->cert_serial },
		{ "PORT", ev->port },
	};

	if (!cli->log || st_log_target(cli->log) == ST_LOG_STDERR)
		return;
	snprintf(slot, sizeof(slot), "%d", ev->slot);
	if (ev->kind == ST_EV_UNIT_DONE)
		st_log_send(cli->log, ev->result == ST_VERDICT_PASS ||
			    ev->result == ST_VERDICT_UNFUSED ? LOG_INFO : LOG_WARNING,
			    f, ST_ARRAY_SIZE(f), "slot %d: unit %s %s%s%s", ev->slot,
			    ev->uid ? ev->uid : "?", result, ev->detail ? ": " : "",
			    ev->detail ? ev->detail : "");
	else if (ev->kind == ST_EV_SLOT_ERROR)
		st_log_send(cli->log, LOG_ERR, f, ST_ARRAY_SIZE(f), "slot %d: %s",
			    ev->slot, ev->detail ? ev->detail : "");
}

/* The version of the JSON lines `provision --json` prints (README): a
 * consumer checks it before it reads the rest. */
#define PROVISION_JSON_SCHEMA 1

/* What every JSON line carries: the schema, when (UTC, as the records
 * keep time), and for a unit's lines who ran it and for which work order. */
static void json_common(json_t *o, const struct cli *cli, bool unit)
{
	struct timespec ts;
	struct tm tm;
	char at[40], day[24];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(at, sizeof(at), "%.19s.%03ldZ", day, ts.tv_nsec / 1000000);
	json_object_set_new(o, "schema", json_integer(PROVISION_JSON_SCHEMA));
	json_object_set_new(o, "at", json_string(at));
	if (unit) {
		json_object_set_new(o, "operator", json_string(cli->operator_name));
		json_object_set_new(o, "work_order", cli->rec.work_order ?
				    json_string(cli->rec.work_order) : json_null());
	}
}

/* Print one engine event, human or JSON; called from slot workers.  The
 * progress (programmer ready, unit started, a step that did not go
 * well, every step with --verbose) goes to stderr with and without
 * --json, so stdout holds only the results. */
static void on_event(const st_event *ev, void *ctx)
{
	struct cli *cli = ctx;
	json_t *o = NULL;
	bool unit = false;

	pthread_mutex_lock(&cli->out_lock);
	log_event(cli, ev);
	switch (ev->kind) {
	case ST_EV_SLOT_READY:
		fprintf(stderr, "slot %d %s: programmer ready (%s)\n", ev->slot,
				ev->port, ev->detail);
		break;
	case ST_EV_UNIT_START:
		fprintf(stderr, "slot %d: unit %s started\n", ev->slot, ev->uid);
		break;
	case ST_EV_STEP:
		if (cli->verbose || ev->outcome != ST_OUTCOME_OK)
			fprintf(stderr, "slot %d: unit %s: %-11s %-4s %s\n", ev->slot,
				ev->uid ? ev->uid : "-", st_step_name(ev->step),
				st_outcome_name(ev->outcome), ev->detail);
		break;
	case ST_EV_UNIT_DONE:
		if (cli->json) {
			o = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:I,"
				      " s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I}}",
				      "event", "unit", "slot", ev->slot, "port", ev->port,
				      "uid", ev->uid, "result", st_verdict_name(ev->result),
				      "cert_serial", ev->cert_serial,
				      "cert_sha256", ev->cert_sha256,
				      "fuses", st_fuses_name(ev->fuses),
				      "reason", ev->detail, "ms", (json_int_t)ev->elapsed_ms,
				      "us", "records", (json_int_t)ev->us_records,
				      "hsm", (json_int_t)ev->us_hsm,
				      "x509", (json_int_t)ev->us_x509,
				      "device", (json_int_t)ev->us_device,
				      "link", "commands", (json_int_t)ev->link_commands,
				      "retries", (json_int_t)ev->link_retries,
				      "garbled", (json_int_t)ev->link_garbled,
				      "silent", (json_int_t)ev->link_silent);
			/* why, as a word, and what it measured and was flagged
			 * with (docs/integration.md) */
			if (o) {
				json_t *m = ev->measurements ?
					    json_loads(ev->measurements, 0, NULL) : NULL;
				json_t *fl = ev->flags ? json_loads(ev->flags, 0, NULL) : NULL;

				json_object_set_new(o, "cause", json_string(st_cause_name(ev->cause)));
				json_object_set_new(o, "measurements", m ? m : json_array());
				json_object_set_new(o, "flags", fl ? fl : json_array());
			}
			unit = true;
		} else if (ev->result == ST_VERDICT_PASS) {
			char link[96] = "";

			/* Re-sends on a PASS are a fixture going bad: say so. */
			if (ev->link_retries)
				snprintf(link, sizeof(link), ", link: %lld re-sends for "
					 "%lld commands", (long long)ev->link_retries,
					 (long long)ev->link_commands);
			printf("slot %d: unit %s PASS  cert %s  fuses %s  (%lld ms%s)\n",
			       ev->slot, ev->uid, ev->cert_serial,
			       ev->fuses ? st_fuses_name(ev->fuses) : "-",
			       (long long)ev->elapsed_ms,
			       link);
		} else if (ev->result == ST_VERDICT_UNFUSED) {
			printf("slot %d: unit %s UNFUSED  cert %s  provisioned, not locked: "
			       "fuses and lifecycle untouched (finish it with --burn-fuses)"
			       "  (%lld ms)\n", ev->slot, ev->uid, ev->cert_serial,
			       (long long)ev->elapsed_ms);
		} else {
			printf("slot %d: unit %s %s: %s\n", ev->slot, ev->uid,
			       st_verdict_name(ev->result),
			       ev->detail ? ev->detail : "");
		}
		break;
	case ST_EV_SLOT_ERROR:
		if (cli->json)
			o = json_pack("{s:s, s:i, s:s, s:s, s:s}", "event", "slot_error",
				      "slot", ev->slot, "port", ev->port, "error",
				      st_strerror(ev->err), "message", ev->detail);
		else
			fprintf(stderr, "station: %s\n", ev->detail);
		break;
	case ST_EV_FUSE_PLAN:
		if (cli->json) {
			o = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s?, s:s?, s:s?, s:s?}",
				      "event", "fuse_plan", "slot", ev->slot, "port",
				      ev->port, "uid", ev->uid, "plan", ev->detail,
				      "field", ev->field, "current", ev->current,
				      "target", ev->target, "action", ev->action);
			unit = true;
		} else
			printf("slot %d: unit %s: %s\n", ev->slot, ev->uid, ev->detail);
		break;
	case ST_EV_WARNING:
		if (cli->json)
			o = json_pack("{s:s, s:s}", "event", "warning", "message", ev->detail);
		fprintf(stderr, "station: warning: %s\n", ev->detail);
		break;
	case ST_EV_SLOT_DONE:
		if (cli->verbose)
			fprintf(stderr, "slot %d: done\n", ev->slot);
		break;
	case ST_EV_SLOT_IDLE: /* interactive runs only (the UI) */
	case ST_EV_UNIT_HELD:
		break;
	}
	if (o) {
		json_common(o, cli, unit);
		json_dumpf(o, stdout, JSON_COMPACT | JSON_REAL_PRECISION(12));
		fputc('\n', stdout);
		json_decref(o);
	}
	fflush(stdout);
	pthread_mutex_unlock(&cli->out_lock);
}

/* Who runs (docs/roles.md): with an operator list, the operator proves who
 * they are (and must when roles.require); a re-provisioning run also needs
 * a supervisor, asked now.  0 or the exit code. */
static int check_people(struct cli *cli)
{
	const st_config *cfg = &cli->cfg;
	int code;

	if (cfg->roles_require && !cli->role.operator_name)
		return st_say(ST_EXIT_USAGE, "this station runs only for an operator on its "
			      "list (roles.require): give --operator NAME");
	if (cli->role.operator_name && (cfg->operators_path || cfg->roles_require)) {
		code = st_cli_authenticate(cli->st, cli->role.operator_name,
					   cli->role.password_file, "STATION_PASSWORD",
					   ST_ROLE_OPERATOR);
		if (code)
			return code;
		cli->run.operator_authenticated = true;
	}
	if (cli->reprovision) {
		code = st_cli_authenticate(cli->st, cli->role.supervisor_name,
					   cli->role.supervisor_password_file,
					   "STATION_SUPERVISOR_PASSWORD", ST_ROLE_SUPERVISOR);
		if (code)
			return code;
		cli->run.supervisor_name = cli->role.supervisor_name;
		cli->run.reprovision_reason = cli->role.reason;
		cli->run.reprovision_uid = cli->rec.uid;
	}
	return 0;
}

/* A batch run's stop signals (SIGINT, SIGTERM, SIGHUP: Ctrl-C, systemd,
 * a closed terminal) stop it as st_run_stop() does: the units in work
 * finish — their records complete, no burn is cut short — no new unit
 * starts, and the run ends with its summary.  SIGKILL still kills at once
 * (the records and the fuse intents are made for that too). */
struct stopper {
	atomic_bool stop;       /* st_run.stop */
	sigset_t set;
};

static void *stop_on_signal(void *arg)
{
	struct stopper *s = arg;
	int sig;

	for (;;) {
		if (sigwait(&s->set, &sig))
			continue;
		fprintf(stderr, "station: %s: finishing the units in work, starting no "
			"new one\n", strsignal(sig));
		atomic_store(&s->stop, true);
	}
	return NULL;
}

/* A run on the station, waited for, stopping cleanly on a stop signal.
 * The signals stay blocked afterwards: the process is about to print its
 * summary and exit. */
static int provision_run(struct cli *cli, const st_profile *prof,
			 st_summary *sum, char *err, size_t errlen)
{
	st_run_handle *r = NULL;
	struct stopper s;
	bool watching;
	pthread_t t;
	int rc;

	atomic_init(&s.stop, false);
	sigemptyset(&s.set);
	sigaddset(&s.set, SIGINT);
	sigaddset(&s.set, SIGTERM);
	sigaddset(&s.set, SIGHUP);
	/* before the workers start, so they inherit the mask */
	pthread_sigmask(SIG_BLOCK, &s.set, NULL);
	watching = !pthread_create(&t, NULL, stop_on_signal, &s);
	cli->run.stop = &s.stop;
	memset(sum, 0, sizeof(*sum));
	rc = st_station_run_start(cli->st, prof, &cli->run, on_event, cli, &r, err,
				  errlen);
	if (!rc)
		st_station_run_wait(cli->st, r, sum);
	cli->run.stop = NULL;
	if (watching) {
		pthread_cancel(t);
		pthread_join(t, NULL);
	}
	return rc;
}

/* An armed run burns one-time fuses and locks the units: nothing undoes
 * it.  On a terminal the operator types the work order (or BURN without
 * one) before anything is opened; a script says --yes; without either
 * the run is refused, so a pasted command line or a wrong default in a
 * cron job cannot lock a batch.  0 or ST_EXIT_USAGE after saying why. */
static int confirm_burn(struct cli *cli)
{
	const char *want = cli->rec.work_order ? cli->rec.work_order : "BURN";
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int code;

	if (!cli->burn_fuses || cli->dry_run || cli->yes)
		return 0;
	if (!isatty(STDIN_FILENO))
		return st_say(ST_EXIT_USAGE, _("provision: the run is armed (%s) and burns "
			      "one-time fuses, but there is no terminal to confirm it on: "
			      "give --yes to confirm it from a script; nothing was done"),
			      cli->cfg.burn_fuses ? "defaults.burn_fuses" : "--burn-fuses");
	fprintf(stderr, "station: this run burns one-time fuses and locks every unit in "
		"%d slot%s; that cannot be undone.\nType %s%s to go on: ",
		cli->run.nslots, cli->run.nslots == 1 ? "" : "s",
		cli->rec.work_order ? "the work order " : "", want);
	fflush(stderr);
	n = getline(&line, &cap, stdin);
	if (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	if (n > 0 && line[n - 1] == '\r')
		line[--n] = '\0';
	code = n >= 0 && !strcmp(line, want) ? 0 :
	       st_say(ST_EXIT_USAGE, "provision: not confirmed (expected %s); nothing "
		      "was done", want);
	free(line);
	return code;
}

static int exec_provision(struct cli *cli, int argc, char **argv)
{
	char err[512] = "";
	st_signed_info signed_info;
	st_profile *prof = NULL;
	st_checkpoint_note cp;
	char cperr[512] = "";
	st_summary sum;
	int rc, code, cprc;

	(void)argv;
	if (argc > 0 || cli->run.nslots == 0)
		return st_say(ST_EXIT_USAGE, "provision: give each programmer with --slot PORT "
			      "(or slots in the configuration)");
	if (cli->reprovision && (!cli->role.supervisor_name || !cli->role.reason ||
				 !*cli->role.reason))
		return st_say(ST_EXIT_USAGE, "provision --reprovision: a supervisor decides "
			      "it, with a reason: give --supervisor NAME and --reason TEXT");
	cli->log = st_log_open("station", cli->cfg.log_file, err, sizeof(err));
	if (!cli->log)
		return st_say(ST_EXIT_USAGE, "%s (station.log_file)", err);
	if (st_profile_load_signed(&cli->cfg, cli->cfg.profile_path, &prof, &signed_info,
				   err, sizeof(err))) {
		st_log_close(cli->log);
		cli->log = NULL;
		return st_say(ST_EXIT_USAGE, _("profile refused: %s; nothing was provisioned"), err);
	}
	code = confirm_burn(cli);
	if (code)
		goto cleanup;
	code = cli_store(cli, true);
	if (code)
		goto cleanup;
	code = cli_login(cli);
	if (code)
		goto cleanup;
	code = check_people(cli);
	if (code)
		goto cleanup;
	cli->run.profile_signer = signed_info.signer;
	/* a work order's quota shared with other stations (docs/sync.md) */
	rc = cli->dry_run ? ST_OK :
	     st_station_run_quota(cli->st, cli->rec.work_order, err, sizeof(err));
	if (rc) {
		code = st_say(rc == ST_E_CONFIG || rc == ST_E_NOTFOUND || rc == ST_E_EXISTS ?
			      ST_EXIT_USAGE : ST_EXIT_RECORDS, "sync: %s", err);
		goto cleanup;
	}
	cli->run.max_units = cli->max_units;
	cli->run.burn_fuses = cli->burn_fuses && !cli->dry_run;
	cli->run.dry_run = cli->dry_run;
	cli->run.operator_name = cli->operator_name;
	cli->run.work_order = cli->rec.work_order;
	rc = provision_run(cli, prof, &sum, err, sizeof(err));
	if (rc) {
		code = st_say(rc == ST_E_DB ? ST_EXIT_RECORDS : rc == ST_E_CONFIG ? ST_EXIT_USAGE :
			      ST_EXIT_HSM, "%s", err);
		goto cleanup;
	}
	if (sum.quota_full)
		fprintf(stderr, "station: work order %s is complete (its quota is "
			"reached); units left in the programmers were not touched\n",
			cli->run.work_order);
	if (cli->dry_run) {
		code = sum.slot_errors ? ST_EXIT_LINK : 0;
		goto cleanup;
	}
	cprc = st_station_checkpoint(cli->st, &cp, cperr, sizeof(cperr));
	if (cprc)
		fprintf(stderr, "station: warning: no checkpoint of the records was "
			"written: %s\n", cperr);
	if (cli->json) {
		long long writes, commits;
		json_t *o;

		/* group commit at work: writes per commit (make bench) */
		st_station_record_stats(cli->st, &writes, &commits);
		o = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:I, s:I}",
			      "event", "summary", "pass", sum.pass,
			      "unfused", sum.unfused, "fail", sum.fail,
			      "quarantine", sum.quarantine, "skipped", sum.skipped,
			      "slot_errors", sum.slot_errors + sum.record_errors,
			      "records", cli->cfg.records_path,
			      "record_writes", (json_int_t)writes,
			      "record_commits", (json_int_t)commits);
		if (o && !cprc)
			json_object_set_new(o, "checkpoint", json_pack(
				"{s:s, s:I, s:s, s:s, s:s, s:s}",
				"station", cp.station, "seq", (json_int_t)cp.seq,
				"head_hash", cp.head_hash, "at", cp.at,
				"audit_cert_sha256", cp.audit_sha256,
				"file", cp.path));
		else if (o)
			json_object_set_new(o, "checkpoint_error", json_string(cperr));
		if (o)
			json_common(o, cli, true);

		json_dumpf(o, stdout, JSON_COMPACT | JSON_REAL_PRECISION(12));
		fputc('\n', stdout);
		json_decref(o);
	} else {
		if (sum.unfused)
			printf("summary: %d UNFUSED (provisioned, not locked: run with "
			       "--burn-fuses to finish them)\n", sum.unfused);
		printf("summary: %d PASS, %d FAIL, %d QUARANTINE, %d skipped (already done)"
		       "%s; records in %s%s%s\n", sum.pass, sum.fail, sum.quarantine,
		       sum.skipped, sum.slot_errors ? "; a slot stopped on an error" : "",
		       cli->cfg.records_path, cli->cfg.cert_dir ? ", certificates in " : "",
		       cli->cfg.cert_dir ? cli->cfg.cert_dir : "");
		if (!cprc)
			printf("checkpoint: station %s, events 1..%lld, head %s, "
			       "signed by the audit key; in %s (keep a copy away "
			       "from the station)\n", cp.station, cp.seq,
			       cp.head_hash, cp.path);
	}
	code = sum.record_errors ? ST_EXIT_RECORDS : sum.hsm_errors ? ST_EXIT_HSM :
	       sum.slot_errors ? ST_EXIT_LINK :
	       (sum.fail || sum.quarantine) ? ST_EXIT_UNIT_FAILED : 0;
cleanup:
	st_profile_free(prof);
	st_log_close(cli->log);
	cli->log = NULL;
	return code;
}

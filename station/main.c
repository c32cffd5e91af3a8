/* main.c — the station command line: a table of subcommands.
 *
 *   station provision --slot PORT [--slot PORT ...] [--burn-fuses] [--dry-run] [--json]
 *   station ca init | ca show
 *   station devices [--slot PORT ...] [--json] [--watch]
 *   station audit init
 *   station records verify | list | show | export | workorder | sync
 *   station tui
 *   station config check | schema
 *
 * Exit codes (also in README): 0 all units PASS (or, unarmed, UNFUSED:
 * provisioned, not locked, as asked); 1 a unit FAILED or was
 * QUARANTINED; 2 usage, configuration or profile error; 3 HSM error (module,
 * token, PIN, CA); 4 records error; 5 a programmer/link error stopped a
 * slot.  Progress goes to stderr; results to stdout. */
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base.h"
#include "hsm/hsm.h"
#include "records/records.h"
#include "station/checkpoint.h"
#include "station/cmd_profile.h"
#include "station/cmd_records.h"
#include "station/roles.h"
#include "station/cmd_sync.h"
#include "station/station.h"
#include "ui/ui.h"

enum {
	EXIT_UNIT_FAILED = 1,
	EXIT_USAGE = 2,
	EXIT_HSM = 3,
	EXIT_RECORDS = 4,
	EXIT_LINK = 5,
};

/* Everything a command needs, parsed from argv and the configuration. */
struct cli {
	st_config cfg;
	const char *config_path;
	const char *pin_file;
	const char *operator_name;
	const char *log_path;
	const char *check_profile; /* config check: --profile as given */
	const char *cn, *org, *out, *in, *chain, *key_type;
	int days;
	bool json, verbose, burn_fuses, dry_run, watch;
	int max_units;
	st_run run;
	st_rec_cli rec;         /* options of the records/audit commands */
	st_role_cli role;       /* options of profile/operator/crl/quarantine */
	bool reprovision;       /* --reprovision (with --supervisor, --reason) */
	pthread_mutex_t out_lock;
};

struct command {
	const char *name;
	int (*fn)(struct cli *cli, int argc, char **argv);
	const char *usage;
};

static void usage(FILE *f);

/* Open the HSM named in the configuration and log in (the same open and
 * login as the UI's st_hsm_login(), with the PIN-count warning between). */
static int open_hsm(struct cli *cli, hsm **out)
{
	char pin[256], err[512] = "";
	size_t pinlen = 0;
	hsm *h = NULL;
	const char *warn;
	int rc;

	*out = NULL;
	rc = st_hsm_open(&cli->cfg, &h, err, sizeof(err));
	if (rc)
		return st_say(EXIT_HSM, "HSM: %s", err);
	/* Before the attempt too: on a final try the operator should know that
	 * a wrong PIN now locks the token and stops the line. */
	warn = hsm_pin_warning(h);
	if (warn)
		fprintf(stderr, "station: warning: token '%s': %s\n", cli->cfg.token_label,
			warn);
	rc = st_pin_get(cli->pin_file, cli->cfg.token_label, pin, sizeof(pin), &pinlen,
			err, sizeof(err));
	if (rc) {
		st_say(EXIT_HSM, "HSM: %s", err);
		goto fail;
	}
	rc = st_hsm_auth(&cli->cfg, h, pin, pinlen, err, sizeof(err));
	st_wipe(pin, sizeof(pin));
	if (rc == ST_E_PIN) {
		st_say(EXIT_HSM, "HSM: %s; not retried — a locked token stops the "
		       "line. Check the PIN and try again", err);
		goto fail;
	}
	if (rc) {
		st_say(EXIT_HSM, "HSM: %s", err);
		goto fail;
	}
	warn = hsm_pin_warning(h);
	if (warn)
		fprintf(stderr, "station: warning: %s\n", warn);
	*out = h;
	return 0;
fail:
	hsm_close(h);
	return EXIT_HSM;
}

/* Print one engine event, human or JSON; called from slot workers. */
static void on_event(const st_event *ev, void *ctx)
{
	struct cli *cli = ctx;
	json_t *o = NULL;

	pthread_mutex_lock(&cli->out_lock);
	switch (ev->kind) {
	case ST_EV_SLOT_READY:
		if (cli->verbose || !cli->json)
			fprintf(stderr, "slot %d %s: programmer ready (%s)\n", ev->slot,
				ev->port, ev->detail);
		break;
	case ST_EV_UNIT_START:
		if (cli->verbose || !cli->json)
			fprintf(stderr, "slot %d: unit %s started\n", ev->slot, ev->uid);
		break;
	case ST_EV_STEP:
		if (cli->verbose || (!cli->json && strcmp(ev->outcome, "ok")))
			fprintf(stderr, "slot %d: unit %s: %-11s %-4s %s\n", ev->slot,
				ev->uid ? ev->uid : "-", ev->step, ev->outcome, ev->detail);
		break;
	case ST_EV_UNIT_DONE:
		if (cli->json) {
			o = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:I,"
				      " s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I}}",
				      "event", "unit", "slot", ev->slot, "port", ev->port,
				      "uid", ev->uid, "result", ev->result,
				      "cert_serial", ev->cert_serial,
				      "cert_sha256", ev->cert_sha256, "fuses", ev->fuses,
				      "reason", ev->detail, "ms", (json_int_t)ev->elapsed_ms,
				      "us", "records", (json_int_t)ev->us_records,
				      "hsm", (json_int_t)ev->us_hsm,
				      "x509", (json_int_t)ev->us_x509,
				      "device", (json_int_t)ev->us_device,
				      "link", "commands", (json_int_t)ev->link_commands,
				      "retries", (json_int_t)ev->link_retries,
				      "garbled", (json_int_t)ev->link_garbled,
				      "silent", (json_int_t)ev->link_silent);
		} else if (!strcmp(ev->result, "PASS")) {
			char link[96] = "";

			/* Re-sends on a PASS are a fixture going bad: say so. */
			if (ev->link_retries)
				snprintf(link, sizeof(link), ", link: %lld re-sends for "
					 "%lld commands", (long long)ev->link_retries,
					 (long long)ev->link_commands);
			printf("slot %d: unit %s PASS  cert %s  fuses %s  (%lld ms%s)\n",
			       ev->slot, ev->uid, ev->cert_serial,
			       ev->fuses ? ev->fuses : "-", (long long)ev->elapsed_ms,
			       link);
		} else if (!strcmp(ev->result, "UNFUSED")) {
			printf("slot %d: unit %s UNFUSED  cert %s  provisioned, not locked: "
			       "fuses and lifecycle untouched (finish it with --burn-fuses)"
			       "  (%lld ms)\n", ev->slot, ev->uid, ev->cert_serial,
			       (long long)ev->elapsed_ms);
		} else {
			printf("slot %d: unit %s %s: %s\n", ev->slot, ev->uid, ev->result,
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
		if (cli->json)
			o = json_pack("{s:s, s:i, s:s, s:s, s:s}", "event", "fuse_plan",
				      "slot", ev->slot, "port", ev->port, "uid", ev->uid,
				      "plan", ev->detail);
		else
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
		json_dumpf(o, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(o);
	}
	fflush(stdout);
	pthread_mutex_unlock(&cli->out_lock);
}

/* Who runs (docs/roles.md): with an operator list, the operator proves who
 * they are (and must when roles.require); a re-provisioning run also needs
 * a supervisor, asked now.  0 or the exit code. */
static int check_people(struct cli *cli, hsm *h, rec_store *rec)
{
	const st_config *cfg = &cli->cfg;
	int code;

	if (cfg->roles_require && !cli->role.operator_name)
		return st_say(EXIT_USAGE, "this station runs only for an operator on its "
			      "list (roles.require): give --operator NAME");
	if (cli->role.operator_name && (cfg->operators_path || cfg->roles_require)) {
		code = st_cli_authenticate(cfg, h, rec, cli->role.operator_name,
					   cli->role.password_file, "STATION_PASSWORD",
					   ST_ROLE_OPERATOR);
		if (code)
			return code;
		cli->run.operator_authenticated = true;
	}
	if (cli->reprovision) {
		code = st_cli_authenticate(cfg, h, rec, cli->role.supervisor_name,
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

/* st_provision(), stopping cleanly on a stop signal.  The signals stay
 * blocked afterwards: the process is about to print its summary and exit. */
static int provision_run(hsm *h, rec_store *rec, struct cli *cli,
			 const st_profile *prof, st_summary *sum, char *err,
			 size_t errlen)
{
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
	rc = st_provision(h, rec, &cli->cfg, prof, &cli->run, on_event, cli, sum,
			  err, errlen);
	cli->run.stop = NULL;
	if (watching) {
		pthread_cancel(t);
		pthread_join(t, NULL);
	}
	return rc;
}

/* The end of a run: a checkpoint of the chain's head, signed by the audit
 * key, written to the checkpoint directory, so a later cut of the chain's
 * end is seen (docs/records.md, "Checkpoints").  A failure is a warning:
 * every unit is on record already. */
static int run_checkpoint(struct cli *cli, hsm *h, rec_store *rec,
			  st_checkpoint *cp, char *err, size_t errlen)
{
	char dir[4096];
	st_audit *a = NULL;
	int rc;

	rc = st_audit_open(h, cli->cfg.ca_label ? cli->cfg.ca_label : "issuing-ca",
			   ST_AUDIT_LABEL, cli->cfg.station_id, &a, err, errlen);
	if (!rc)
		rc = st_checkpoint_make(rec, a, cli->cfg.station_id, -1, NULL, cp,
					err, errlen);
	st_checkpoint_dir(&cli->cfg, dir, sizeof(dir));
	if (!rc)
		rc = st_checkpoint_write(cp, a, dir, NULL, err, errlen);
	st_audit_close(a);
	return rc;
}

static int cmd_provision(struct cli *cli, int argc, char **argv)
{
	char err[512] = "";
	st_signed_info signed_info;
	st_profile *prof = NULL;
	rec_store *rec = NULL;
	hsm *h = NULL;
	st_sync_quota *quota = NULL;
	st_checkpoint cp = { .body = NULL };
	char cperr[512] = "";
	st_summary sum;
	int rc, code, cprc;

	(void)argv;
	if (argc > 0 || cli->run.nslots == 0)
		return st_say(EXIT_USAGE, "provision: give each programmer with --slot PORT "
			      "(or slots in the configuration)");
	if (cli->reprovision && (!cli->role.supervisor_name || !cli->role.reason ||
				 !*cli->role.reason))
		return st_say(EXIT_USAGE, "provision --reprovision: a supervisor decides "
			      "it, with a reason: give --supervisor NAME and --reason TEXT");
	if (st_profile_load_signed(&cli->cfg, cli->cfg.profile_path, &prof, &signed_info,
				   err, sizeof(err)))
		return st_say(EXIT_USAGE, "profile refused: %s; nothing was provisioned", err);
	rc = rec_open(cli->cfg.records_path, &rec);
	if (rc) {
		code = st_say(EXIT_RECORDS, "records: cannot open %s: %s",
			      cli->cfg.records_path, rec ? rec_errmsg(rec) : st_strerror(rc));
		goto cleanup;
	}
	code = open_hsm(cli, &h);
	if (code)
		goto cleanup;
	code = check_people(cli, h, rec);
	if (code)
		goto cleanup;
	cli->run.profile_signer = signed_info.signer;
	/* a work order's quota shared with other stations (docs/sync.md) */
	rc = cli->dry_run ? ST_OK :
	     st_sync_quota_open(cli->config_path, &cli->cfg, rec, cli->rec.work_order,
				&quota, err, sizeof(err));
	if (rc) {
		code = st_say(rc == ST_E_CONFIG || rc == ST_E_NOTFOUND || rc == ST_E_EXISTS ?
			      EXIT_USAGE : EXIT_RECORDS, "sync: %s", err);
		goto cleanup;
	}
	cli->run.quota = st_sync_quota_hook(quota);
	cli->run.max_units = cli->max_units;
	cli->run.burn_fuses = cli->burn_fuses && !cli->dry_run;
	cli->run.dry_run = cli->dry_run;
	cli->run.operator_name = cli->operator_name;
	cli->run.work_order = cli->rec.work_order;
	rc = provision_run(h, rec, cli, prof, &sum, err, sizeof(err));
	if (rc) {
		code = st_say(rc == ST_E_DB ? EXIT_RECORDS : rc == ST_E_CONFIG ? EXIT_USAGE :
			      EXIT_HSM, "%s", err);
		goto cleanup;
	}
	if (sum.quota_full)
		fprintf(stderr, "station: work order %s is complete (its quota is "
			"reached); units left in the programmers were not touched\n",
			cli->run.work_order);
	if (cli->dry_run) {
		code = sum.slot_errors ? EXIT_LINK : 0;
		goto cleanup;
	}
	cprc = run_checkpoint(cli, h, rec, &cp, cperr, sizeof(cperr));
	if (cprc)
		fprintf(stderr, "station: warning: no checkpoint of the records was "
			"written: %s\n", cperr);
	if (cli->json) {
		rec_stats rs = { 0 };
		json_t *o;

		/* group commit at work: writes per commit (make bench) */
		rec_get_stats(rec, &rs);
		o = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:I, s:I}",
			      "event", "summary", "pass", sum.pass,
			      "unfused", sum.unfused, "fail", sum.fail,
			      "quarantine", sum.quarantine, "skipped", sum.skipped,
			      "slot_errors", sum.slot_errors + sum.record_errors,
			      "records", cli->cfg.records_path,
			      "record_writes", (json_int_t)rs.writes,
			      "record_commits", (json_int_t)rs.commits);
		if (o && !cprc)
			json_object_set_new(o, "checkpoint", json_pack(
				"{s:s, s:I, s:s, s:s, s:s, s:s}",
				"station", cp.cp.station, "seq", (json_int_t)cp.cp.seq,
				"head_hash", cp.cp.head_hash, "at", cp.cp.at,
				"audit_cert_sha256", cp.cp.audit_sha256,
				"file", cp.path));
		else if (o)
			json_object_set_new(o, "checkpoint_error", json_string(cperr));

		json_dumpf(o, stdout, JSON_COMPACT);
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
			       "from the station)\n", cp.cp.station, cp.cp.seq,
			       cp.cp.head_hash, cp.path);
	}
	code = sum.record_errors ? EXIT_RECORDS : sum.hsm_errors ? EXIT_HSM :
	       sum.slot_errors ? EXIT_LINK :
	       (sum.fail || sum.quarantine) ? EXIT_UNIT_FAILED : 0;
cleanup:
	st_checkpoint_free(&cp);
	st_sync_quota_close(quota);
	hsm_close(h);
	rec_close(rec);
	st_profile_free(prof);
	return code;
}

/* Check that the token can make and sign with a CA key of type t before
 * anything is created in it. */
static int ca_mechanisms(hsm *h, hsm_keytype t)
{
	hsm_mech need[2] = { hsm_keytype_genmech(t), HSM_M_ECDSA };

	switch (hsm_keytype_sigmech(t)) {
	case HSM_SIG_RSA_PKCS: need[1] = HSM_M_RSA_PKCS; break;
	case HSM_SIG_EDDSA: need[1] = HSM_M_EDDSA; break;
	default: break;
	}
	if (hsm_check_mechanisms(h, need, 2))
		return st_say(EXIT_HSM, "HSM: a %s CA: %s", hsm_keytype_name(t),
			      hsm_errmsg(h));
	return 0;
}

/* A repaired `ca init` goes on record where a store exists (a station
 * that has provisioned), signed like any event; best effort: the token is
 * already right, and a store that cannot take it is reported. */
static void ca_repair_on_record(struct cli *cli, hsm *h, const char *label,
				const char *note)
{
	char err[512] = "";
	rec_store *rec = NULL;
	st_audit *a = NULL;

	if (access(cli->cfg.records_path, F_OK) != 0)
		return;
	if (rec_open(cli->cfg.records_path, &rec) ||
	    st_audit_attach(h, rec, &cli->cfg, &a, err, sizeof(err)) ||
	    rec_event(rec, "ca_repair", NULL, "ca", label, "repair", note, NULL))
		fprintf(stderr, "station: warning: the repair of CA '%s' is not on "
			"record: %s\n", label, err[0] ? err : rec ? rec_errmsg(rec) :
			"cannot open the records");
	st_audit_detach(rec, a);
	rec_close(rec);
}

/* station ca init | csr | import | show */
static int cmd_ca(struct cli *cli, int argc, char **argv)
{
	const char *label = cli->cfg.ca_label ? cli->cfg.ca_label : "issuing-ca";
	const char *cn = cli->cn ? cli->cn : "Station Issuing CA";
	const char *org = cli->org ? cli->org : "Station Factory";
	char err[1024] = "";
	hsm_session *s = NULL;
	hsm_keytype type = HSM_KEY_P256;
	hsm *h = NULL;
	int code, rc;

	if (argc != 1 || (strcmp(argv[0], "init") && strcmp(argv[0], "show") &&
			  strcmp(argv[0], "csr") && strcmp(argv[0], "import")))
		return st_say(EXIT_USAGE, "ca: say 'ca init', 'ca csr', 'ca import' or 'ca show'");
	if (cli->key_type && hsm_keytype_parse(cli->key_type, &type))
		return st_say(EXIT_USAGE, "ca: --key-type must be p256, p384, rsa3072 or ed25519");
	if (!strcmp(argv[0], "csr") && !cli->out)
		return st_say(EXIT_USAGE, "ca csr: say where the request goes with --out FILE");
	if (!strcmp(argv[0], "import") && !cli->in)
		return st_say(EXIT_USAGE, "ca import: give the signed certificate with --in FILE "
			      "(and its chain with --chain FILE)");
	code = open_hsm(cli, &h);
	if (code)
		return code;
	if (!strcmp(argv[0], "init") || !strcmp(argv[0], "csr")) {
		code = ca_mechanisms(h, type);
		if (code)
			goto cleanup;
	}
	rc = hsm_session_open(h, &s);
	if (rc) {
		code = st_say(EXIT_HSM, "HSM: %s", hsm_errmsg(h));
		goto cleanup;
	}
	if (!strcmp(argv[0], "init")) {
		char note[512];

		rc = st_ca_init(s, label, type, cn, org, cli->days ? cli->days : 3650,
				cli->out, note, sizeof(note), err, sizeof(err));
		if (!rc && note[0]) {
			printf("CA '%s' in token '%s': %s%s%s\n", label, cli->cfg.token_label,
			       note, cli->out ? "; certificate in " : "",
			       cli->out ? cli->out : "");
			ca_repair_on_record(cli, h, label, note);
		} else if (!rc) {
			printf("CA '%s' (%s) created in token '%s'%s%s\n", label,
			       hsm_keytype_name(type), cli->cfg.token_label,
			       cli->out ? "; certificate in " : "",
			       cli->out ? cli->out : "");
		}
	} else if (!strcmp(argv[0], "csr")) {
		rc = st_ca_csr(s, label, type, cn, org, cli->out, err, sizeof(err));
		if (!rc)
			printf("CA key '%s' is in token '%s'; certificate request in %s: have "
			       "the root CA sign it, then 'station ca import --in CERT "
			       "--chain CHAIN'\n", label, cli->cfg.token_label, cli->out);
	} else if (!strcmp(argv[0], "import")) {
		rc = st_ca_import(s, label, cli->in, cli->chain, err, sizeof(err));
		if (!rc) {
			printf("CA certificate for '%s' imported into token '%s'\n", label,
			       cli->cfg.token_label);
			rc = st_ca_show(s, label, stdout, err, sizeof(err));
		}
	} else {
		rc = st_ca_show(s, cli->cfg.ca_label, stdout, err, sizeof(err));
	}
	code = rc ? st_say(rc == ST_E_IO ? EXIT_USAGE : EXIT_HSM, "ca %s: %s", argv[0], err) : 0;
cleanup:
	hsm_session_close(s);
	hsm_close(h);
	return code;
}

static int cmd_devices(struct cli *cli, int argc, char **argv)
{
	char err[512] = "";
	int rc;

	(void)argc;
	(void)argv;
	rc = cli->watch ?
	     st_devices_watch(cli->run.ports, cli->run.nslots, cli->json, stdout,
			      err, sizeof(err)) :
	     st_devices(cli->run.ports, cli->run.nslots, cli->json, stdout, err,
			sizeof(err));
	return rc ? st_say(EXIT_LINK, "devices: %s", err) : 0;
}

static st_role_cli *role_cli(struct cli *cli);

/* For cmd_records.c: log in only when a command needs the HSM. */
static int open_hsm_cb(void *ctx, hsm **out)
{
	return open_hsm(ctx, out);
}

static int cmd_records(struct cli *cli, int argc, char **argv)
{
	if (argc >= 1 && !strcmp(argv[0], "close-interrupted"))
		return st_cmd_close_interrupted(role_cli(cli), argc, argv);
	cli->rec.cfg = &cli->cfg;
	cli->rec.open_hsm = open_hsm_cb;
	cli->rec.ctx = cli;
	cli->rec.out = cli->out;
	cli->rec.config_path = cli->config_path;
	return st_cmd_records(&cli->rec, argc, argv);
}

static int cmd_audit(struct cli *cli, int argc, char **argv)
{
	cli->rec.cfg = &cli->cfg;
	cli->rec.open_hsm = open_hsm_cb;
	cli->rec.ctx = cli;
	cli->rec.out = cli->out;
	return st_cmd_audit(&cli->rec, argc, argv);
}

/* station tui: the technician's terminal UI over the given slots.  The
 * guard process forks first, so it holds nothing the UI opens. */
static int cmd_tui(struct cli *cli, int argc, char **argv)
{
	char err[512] = "", logpath[4096];
	st_signed_info signed_info;
	st_profile *prof = NULL;
	st_station *st = NULL;
	ui_opts o = { .ports = cli->run.ports, .nslots = cli->run.nslots,
		      .log_path = cli->log_path };
	int rc, code;

	(void)argv;
	if (argc > 0 || cli->run.nslots == 0)
		return st_say(EXIT_USAGE, "tui: give each programmer with --slot PORT "
			      "(or slots in the configuration)");
	if (!isatty(0) || !isatty(1))
		return st_say(EXIT_USAGE, "tui: needs a terminal; use 'station provision' "
			      "in scripts");
	if (!o.log_path)
		o.log_path = cli->cfg.log_file;
	if (!o.log_path) {
		snprintf(logpath, sizeof(logpath), "%s.tui.log", cli->cfg.records_path);
		o.log_path = logpath;
	}
	if (ui_guard(o.log_path, &code))
		return code < 0 ? st_say(EXIT_USAGE, "tui: cannot fork") : code;
	if (st_profile_load_signed(&cli->cfg, cli->cfg.profile_path, &prof,
				   &signed_info, err, sizeof(err)))
		return st_say(EXIT_USAGE, "profile refused: %s; nothing was provisioned",
			      err);
	rc = st_station_new(&cli->cfg, cli->config_path, &st);
	if (!rc)
		rc = st_station_store_open(st, true, err, sizeof(err));
	if (rc) {
		code = st_say(EXIT_RECORDS, "records: %s", err[0] ? err : st_strerror(rc));
		goto cleanup;
	}
	o.prof = prof;
	o.st = st;
	code = ui_main(&o);
cleanup:
	st_station_close(st);
	st_profile_free(prof);
	return code;
}

/* station config check | schema: main() does not load the configuration
 * for this command, so a bad one is listed here rather than refused. */
static int cmd_config(struct cli *cli, int argc, char **argv)
{
	int n;

	if (argc == 1 && !strcmp(argv[0], "schema")) {
		st_config_schema_print(stdout);
		return 0;
	}
	if (argc != 1 || strcmp(argv[0], "check"))
		return st_say(EXIT_USAGE, "config: 'config check --config FILE [--profile "
			      "FILE]' or 'config schema'");
	if (!cli->config_path && !cli->check_profile)
		return st_say(EXIT_USAGE, "config check: give --config FILE (and/or "
			      "--profile FILE)");
	n = st_config_check(cli->config_path, cli->check_profile, stderr, stdout);
	if (n < 0)
		return st_say(EXIT_USAGE, "config check: %s", st_strerror(n));
	if (n > 0)
		fprintf(stderr, "station: %d problem%s found\n", n, n == 1 ? "" : "s");
	return n ? EXIT_USAGE : 0;
}

/* For the profile/role commands: the same option hand-over as records. */
static st_role_cli *role_cli(struct cli *cli)
{
	cli->role.cfg = &cli->cfg;
	cli->role.open_hsm = open_hsm_cb;
	cli->role.ctx = cli;
	cli->role.out = cli->out;
	cli->role.in = cli->in;
	cli->role.key_type = cli->key_type;
	cli->role.uid = cli->rec.uid;
	cli->role.days = cli->days;
	return &cli->role;
}

static int cmd_profile(struct cli *cli, int argc, char **argv)
{
	return st_cmd_profile(role_cli(cli), argc, argv);
}

static int cmd_operator(struct cli *cli, int argc, char **argv)
{
	return st_cmd_operator(role_cli(cli), argc, argv);
}

static int cmd_crl(struct cli *cli, int argc, char **argv)
{
	return st_cmd_crl(role_cli(cli), argc, argv);
}

static int cmd_quarantine(struct cli *cli, int argc, char **argv)
{
	return st_cmd_quarantine(role_cli(cli), argc, argv);
}

static int cmd_help(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	(void)argc;
	(void)argv;
	usage(stdout);
	return 0;
}

static const struct command commands[] = {
	{ "provision", cmd_provision,
	  "provision --slot PORT [--slot PORT...] [--units N] [--burn-fuses] [--dry-run] [--json]\n"
	  "            [--operator NAME [--password-file F]] [--reprovision [--uid UID] --reason TEXT\n"
	  "             --supervisor NAME [--supervisor-password-file F]]\n"
	  "            [--plug-wait SECONDS]  (USB: wait for absent/unplugged programmers)" },
	{ "ca", cmd_ca, "ca init [--key-type T] [--cn NAME] [--org ORG] [--days N] [--out FILE]\n"
	  "  ca csr --out FILE [--key-type T] [--cn NAME] [--org ORG]\n"
	  "  ca import --in CERT [--chain FILE]\n"
	  "  ca show            (--ca-key LABEL names the CA; T: p256 p384 rsa3072 ed25519)" },
	{ "devices", cmd_devices, "devices [--slot PORT...] [--json] [--watch]   (attached programmers)" },
	{ "audit", cmd_audit, "audit init [--out FILE]   (the audit key; made on first use too)" },
	{ "records", cmd_records,
	  "records verify [--ca-cert FILE] [--anchor HASH] [--checkpoint FILE.json]\n"
	  "          | records list|export [--work-order ID]\n"
	  "          [--since DATE] [--until DATE] [--result R] [--uid UID]\n"
	  "          [--format table|jsonl|csv] | records export --evidence DIR\n"
	  "          | records show UID|ID | records workorder create ID [--quota N]\n"
	  "          | records workorder show ID\n"
	  "          | records sync [--once|--follow|--status] | records verify --pg\n"
	  "            (the central PostgreSQL copy: docs/sync.md)\n"
	  "          | records close-interrupted --supervisor NAME --reason TEXT [--before DATE]\n"
	  "            (close units no run will finish; revoke their certificates)" },
	{ "tui", cmd_tui, "tui --slot PORT [--slot PORT...] [--log FILE]   (the technician's "
	  "terminal UI; also 'station --slot PORT...' on a terminal)" },
	{ "config", cmd_config, "config check [--config FILE] [--profile FILE]   (every problem, "
	  "with its line)\n  config schema   (every setting, as docs/configuration.md lists them)" },
	{ "profile", cmd_profile,
	  "profile keygen|pubkey --key LABEL --out PUB.pem [--key-type T]   (engineering key)\n"
	  "  profile sign [--key LABEL] --in FILE [--out FILE.sig]\n"
	  "  profile verify [--in FILE]\n"
	  "  profile install --in FILE --operator ENGINEER   (checked, put in place, recorded)" },
	{ "operator", cmd_operator, "operator hash --operator NAME [--role operator,supervisor,engineer]\n"
	  "            [--password-file F]   (an entry for the signed operator list)" },
	{ "crl", cmd_crl, "crl export --out FILE.crl [--days N]   (revoked certificates, signed by the CA)" },
	{ "quarantine", cmd_quarantine,
	  "quarantine release --uid UID --supervisor NAME --reason TEXT" },
	{ "help", cmd_help, "help" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: station [--config FILE] [--profile FILE] [--records FILE]\n"
		   "               [--module PATH] [--token LABEL] [--pin-file FILE] COMMAND\n"
		   "commands:\n");
	for (size_t i = 0; i < ST_ARRAY_SIZE(commands); i++)
		fprintf(f, "  %s\n", commands[i].usage);
	fprintf(f, "The HSM PIN comes from --pin-file, the STATION_PIN environment variable,\n"
		   "or a no-echo prompt; never from the command line.  Passwords likewise:\n"
		   "--password-file / STATION_PASSWORD, --supervisor-password-file /\n"
		   "STATION_SUPERVISOR_PASSWORD, or a prompt.\n"
		   "exit codes: 0 all PASS, 1 unit failed/quarantined, 2 usage/config,\n"
		   "            3 HSM, 4 records, 5 programmer/link\n");
}

/* Replace a configuration string with a command-line value. */
static int override(char **field, const char *value)
{
	char *v = strdup(value);

	if (!v)
		return -1;
	free(*field);
	*field = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "profile", required_argument, NULL, 'p' },
		{ "records", required_argument, NULL, 'r' },
		{ "cert-dir", required_argument, NULL, 'D' },
		{ "module", required_argument, NULL, 'm' },
		{ "token", required_argument, NULL, 't' },
		{ "ca-key", required_argument, NULL, 'k' },
		{ "pin-file", required_argument, NULL, 'P' },
		{ "operator", required_argument, NULL, 'o' },
		{ "slot", required_argument, NULL, 's' },
		{ "units", required_argument, NULL, 'n' },
		{ "timeout-ms", required_argument, NULL, 'T' },
		{ "burn-fuses", no_argument, NULL, 'B' },
		{ "dry-run", no_argument, NULL, 'N' },
		{ "json", no_argument, NULL, 'j' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "cn", required_argument, NULL, 'C' },
		{ "org", required_argument, NULL, 'O' },
		{ "days", required_argument, NULL, 'd' },
		{ "out", required_argument, NULL, 'W' },
		{ "work-order", required_argument, NULL, 0x100 },
		{ "quota", required_argument, NULL, 0x101 },
		{ "since", required_argument, NULL, 0x102 },
		{ "until", required_argument, NULL, 0x103 },
		{ "result", required_argument, NULL, 0x104 },
		{ "uid", required_argument, NULL, 0x105 },
		{ "format", required_argument, NULL, 0x106 },
		{ "evidence", required_argument, NULL, 0x107 },
		{ "ca-cert", required_argument, NULL, 0x108 },
		{ "anchor", required_argument, NULL, 0x109 },
		{ "once", no_argument, NULL, 0x10a },
		{ "follow", no_argument, NULL, 0x10b },
		{ "status", no_argument, NULL, 0x10c },
		{ "pg", no_argument, NULL, 0x10d },
		{ "checkpoint", required_argument, NULL, 0x10e },
		{ "in", required_argument, NULL, 'I' },
		{ "chain", required_argument, NULL, 'H' },
		{ "key-type", required_argument, NULL, 'K' },
		{ "watch", no_argument, NULL, 'w' },
		{ "plug-wait", required_argument, NULL, 'G' },
		{ "log", required_argument, NULL, 'L' },
		{ "key", required_argument, NULL, 0x120 },
		{ "password-file", required_argument, NULL, 0x121 },
		{ "supervisor", required_argument, NULL, 0x122 },
		{ "supervisor-password-file", required_argument, NULL, 0x123 },
		{ "reason", required_argument, NULL, 0x124 },
		{ "reprovision", no_argument, NULL, 0x125 },
		{ "role", required_argument, NULL, 0x126 },
		{ "before", required_argument, NULL, 0x127 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct later { int opt; const char *val; } later[32];
	struct cli cli = { .operator_name = "unknown", .rec = { .quota = -1 } };
	char err[512] = "", *end;
	const struct command *cmd = NULL;
	int c, nlater = 0, code, timeout = 0;
	struct rlimit nocore = { 0, 0 };

	/* Secrets must not end up in a core dump. */
	setrlimit(RLIMIT_CORE, &nocore);
	prctl(PR_SET_DUMPABLE, 0);
	pthread_mutex_init(&cli.out_lock, NULL);

	while ((c = getopt_long(argc, argv, "c:p:r:vjh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': cli.config_path = optarg; break;
		case 'P': cli.pin_file = optarg; break;
		case 'o': cli.operator_name = cli.role.operator_name = optarg; break;
		case 0x120: cli.role.key_label = optarg; break;
		case 0x121: cli.role.password_file = optarg; break;
		case 0x122: cli.role.supervisor_name = optarg; break;
		case 0x123: cli.role.supervisor_password_file = optarg; break;
		case 0x124: cli.role.reason = optarg; break;
		case 0x125: cli.reprovision = true; break;
		case 0x126: cli.role.roles = optarg; break;
		case 0x127: cli.role.before = optarg; break;
		case 'B': cli.burn_fuses = true; break;
		case 'N': cli.dry_run = true; break;
		case 'j': cli.json = true; break;
		case 'v': cli.verbose = true; break;
		case 'w': cli.watch = true; break;
		case 'G':
			cli.run.plug_wait_ms = atoi(optarg) * 1000;
			if (cli.run.plug_wait_ms <= 0)
				return st_say(EXIT_USAGE, "--plug-wait needs a number of "
					      "seconds > 0");
			break;
		case 'C': cli.cn = optarg; break;
		case 'O': cli.org = optarg; break;
		case 'W': cli.out = optarg; break;
		case 'I': cli.in = optarg; break;
		case 'H': cli.chain = optarg; break;
		case 'K': cli.key_type = optarg; break;
		case 'L': cli.log_path = optarg; break;
		case 'd': cli.days = atoi(optarg); break;
		case 'T': timeout = atoi(optarg); break;
		case 'n':
			cli.max_units = atoi(optarg);
			if (cli.max_units < 1)
				return st_say(EXIT_USAGE, "--units must be a positive number");
			break;
		case 's':
			if (cli.run.nslots >= ST_MAX_SLOTS)
				return st_say(EXIT_USAGE, "at most %d slots", ST_MAX_SLOTS);
			cli.run.ports[cli.run.nslots++] = optarg;
			break;
		case 0x100: cli.rec.work_order = optarg; break;
		case 0x101:
			cli.rec.quota = strtol(optarg, &end, 10);
			if (*end || cli.rec.quota < 0)
				return st_say(EXIT_USAGE, "--quota must be a number >= 0");
			break;
		case 0x102: cli.rec.since = optarg; break;
		case 0x103: cli.rec.until = optarg; break;
		case 0x104: cli.rec.result = optarg; break;
		case 0x105: cli.rec.uid = optarg; break;
		case 0x106: cli.rec.format = optarg; break;
		case 0x107: cli.rec.evidence = optarg; break;
		case 0x108: cli.rec.ca_cert = optarg; break;
		case 0x109: cli.rec.anchor = optarg; break;
		case 0x10a: cli.rec.sync_once = true; break;
		case 0x10b: cli.rec.sync_follow = true; break;
		case 0x10c: cli.rec.sync_status = true; break;
		case 0x10d: cli.rec.pg = true; break;
		case 0x10e: cli.rec.checkpoint = optarg; break;
		case 'h': usage(stdout); return 0;
		case 'p': case 'r': case 'D': case 'm': case 't': case 'k':
			if (nlater < (int)ST_ARRAY_SIZE(later))
				later[nlater++] = (struct later){ c, optarg };
			break;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	/* getopt_long permutes argv: options may come before or after the
	 * command word; what is left is the command and its arguments. */
	if (optind < argc) {
		for (size_t i = 0; i < ST_ARRAY_SIZE(commands); i++)
			if (!strcmp(argv[optind], commands[i].name))
				cmd = &commands[i];
		if (!cmd)
			return st_say(EXIT_USAGE, "unknown command '%s' (try 'station help')",
				      argv[optind]);
		optind++;
	}
	/* Plain 'station --slot PORT...' on a terminal: the UI. */
	if (!cmd && cli.run.nslots > 0 && isatty(0) && isatty(1))
		for (size_t i = 0; i < ST_ARRAY_SIZE(commands); i++)
			if (!strcmp(commands[i].name, "tui"))
				cmd = &commands[i];
	if (!cmd) {
		usage(stderr);
		return EXIT_USAGE;
	}
	/* config check lists a bad configuration instead of refusing it. */
	if (!strcmp(cmd->name, "config")) {
		for (int i = 0; i < nlater; i++)
			if (later[i].opt == 'p')
				cli.check_profile = later[i].val;
		code = cmd->fn(&cli, argc - optind, argv + optind);
		pthread_mutex_destroy(&cli.out_lock);
		return code;
	}
	if (st_config_load(cli.config_path, &cli.cfg, err, sizeof(err)))
		return st_say(EXIT_USAGE, "configuration: %s", err);
	for (int i = 0; i < nlater; i++) {
		char **field = later[i].opt == 'p' ? &cli.cfg.profile_path :
			       later[i].opt == 'r' ? &cli.cfg.records_path :
			       later[i].opt == 'D' ? &cli.cfg.cert_dir :
			       later[i].opt == 'm' ? &cli.cfg.hsm_module :
			       later[i].opt == 't' ? &cli.cfg.token_label : &cli.cfg.ca_label;

		if (override(field, later[i].val)) {
			st_config_free(&cli.cfg);
			return st_say(EXIT_USAGE, "out of memory");
		}
	}
	if (timeout)
		cli.cfg.timeout_ms = timeout;
	/* The configuration's slots and run defaults, unless the command line
	 * says otherwise. */
	if (!cli.run.nslots)
		for (int i = 0; i < cli.cfg.nslots; i++)
			cli.run.ports[cli.run.nslots++] = cli.cfg.slots[i].uri;
	cli.burn_fuses = cli.burn_fuses || cli.cfg.burn_fuses;
	if (!cli.max_units)
		cli.max_units = cli.cfg.units;
	if (!cli.run.plug_wait_ms)
		cli.run.plug_wait_ms = cli.cfg.plug_wait_ms;
	code = cmd->fn(&cli, argc - optind, argv + optind);
	st_config_free(&cli.cfg);
	pthread_mutex_destroy(&cli.out_lock);
	return code;
}

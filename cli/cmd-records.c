/* cmd-records.c — `station records verify|list|show|export|workorder|sync|
 * close-interrupted` and `station audit init`: reading the audit store
 * back for people and auditors, and the evidence bundle
 * (docs/evidence.md). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "cli/cli.h"
#include "cli/cmd-profile.h"
#include "cli/cmd-records.h"
#include "cli/cmd-records-sync.h"


/* Open the station's records into *r as mode says (ST_STORE_READ for a
 * reading command); 0, or ST_EXIT_USAGE (there is none) or
 * ST_EXIT_RECORDS after saying why. */
static int st_cli_open_store(st_rec_cli *c, st_store_mode mode, st_records **r)
{
	char err[4608];
	int rc = st_records_open(c->st, mode, r, err, sizeof(err));

	if (rc == ST_E_NOTFOUND)
		return st_say(ST_EXIT_USAGE, "%s", err);
	if (rc)
		return st_say(ST_EXIT_RECORDS, "records: %s", err);
	return 0;
}

/* ---- verify ---- */

struct anchor {
	const char *hash;
	long long seq;
};

static int find_anchor(void *ctx, const st_event_row *e)
{
	struct anchor *a = ctx;

	if (!strcmp(e->hash, a->hash)) {
		a->seq = e->seq;
		return 1;
	}
	return 0;
}

static int cmd_verify(st_rec_cli *c)
{
	st_records_verified v;
	st_records *r = NULL;
	st_trust *t = NULL;
	int rc, code;

	/* every audit certificate must come from the station's CA: the one
	 * given, or those in the token (never any issuer at all) */
	code = st_cli_trust_open(c->ctx, c->ca_cert, true, &t);
	if (code)
		return code;
	code = st_cli_open_store(c, ST_STORE_READ, &r);
	if (code)
		goto cleanup;
	rc = st_records_verify(r, t, &v);
	if (rc == ST_OK && c->anchor) {
		/* a hash kept from an earlier export: events cut off the end
		 * of the chain (with their rows) take it with them */
		struct anchor a = { .hash = c->anchor };

		st_records_events(r, 0, find_anchor, &a);
		if (!a.seq) {
			printf("records TAMPERED: %s: the anchor event %s is not in "
			       "the chain: events were cut off its end (or the "
			       "anchor belongs to another store)\n",
			       c->cfg->records_path, c->anchor);
			code = ST_EXIT_RECORDS;
			goto cleanup;
		}
	}
	if (rc == ST_OK && c->checkpoint) {
		/* a signed head kept away from the store: the chain must still
		 * hold it (a cut end or a rewritten chain does not) */
		char err[512];
		st_checkpoint_info cp;
		bool unread;
		int crc = st_records_checkpoint_check(r, c->checkpoint, t, &cp,
						      &unread, err, sizeof(err));

		if (unread) {
			code = st_say(ST_EXIT_USAGE, "verify --checkpoint: %s", err);
			goto cleanup;
		}
		if (crc == ST_OK && strcmp(cp.station, c->cfg->station_id)) {
			printf("records: %s: the checkpoint %s is of station %s, this "
			       "is station %s: not checked\n", c->cfg->records_path,
			       c->checkpoint, cp.station, c->cfg->station_id);
			code = ST_EXIT_USAGE;
			goto cleanup;
		}
		if (crc) {
			printf("records TAMPERED: %s: checkpoint %s: %s\n",
			       c->cfg->records_path, c->checkpoint, st_records_errmsg(r));
			code = ST_EXIT_RECORDS;
			goto cleanup;
		}
		printf("checkpoint OK: %s: event %lld has the hash the checkpoint "
		       "of %s signed; the chain goes on to event %lld\n",
		       c->checkpoint, cp.seq, cp.at, v.head_seq);
	}
	if (rc == ST_OK) {
		printf("records OK: %s: %lld events, %lld units, %d audit "
		       "certificate%s; every hash and signature checked, audit keys "
		       "certified by %s\n", c->cfg->records_path, v.events, v.units,
		       v.audit_certs, v.audit_certs == 1 ? "" : "s",
		       st_trust_what(t));
		{
			st_cert_tally tally;
			char terr[512] = "";
			int trc = st_records_cert_tally(r, &tally, terr,
						   sizeof(terr));

			st_warn_cert_tally(trc, &tally, terr);
		}
	} else if (rc == ST_E_VERIFY) {
		/* rec_errmsg names the record itself ("event N ..."):
		 * printing bad_seq as well said it twice */
		if (v.bad_seq)
			printf("records TAMPERED: %s: first bad record: %s\n",
			       c->cfg->records_path, st_records_errmsg(r));
		else
			printf("records TAMPERED: %s: %s\n", c->cfg->records_path,
			       st_records_errmsg(r));
		code = ST_EXIT_RECORDS;
	} else {
		code = st_say(ST_EXIT_RECORDS, "verify: %s", st_records_errmsg(r));
	}
cleanup:
	st_records_close(r);
	st_trust_free(t);
	return code;
}

/* ---- list / show / export ---- */

enum fmt { F_TABLE, F_JSONL, F_CSV };

struct lister {
	enum fmt fmt;
	bool with_pem;
	int n;
};

/* CSV field: quoted when it holds a comma, quote or newline (RFC 4180). */
static void csv(FILE *f, const char *v, bool last)
{
	if (v && strpbrk(v, ",\"\r\n")) {
		fputc('"', f);
		for (; *v; v++) {
			if (*v == '"')
				fputc('"', f);
			fputc(*v, f);
		}
		fputc('"', f);
	} else if (v) {
		fputs(v, f);
	}
	fputc(last ? '\n' : ',', f);
}

static int print_unit(void *ctx, const st_unit_row *u)
{
	struct lister *l = ctx;
	char id[24], slot[12];
	json_t *o;

	if (l->fmt == F_JSONL) {
		o = st_unit_json(u, l->with_pem);
		if (!o)
			return ST_E_NOMEM;
		json_dumpf(o, stdout, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(12));
		fputc('\n', stdout);
		json_decref(o);
	} else if (l->fmt == F_CSV) {
		if (l->n == 0)
			fputs("id,uid,result,work_order,slot,station,operator,"
			      "cert_serial,cert_sha256,reason,started_at,"
			      "finished_at\n", stdout);
		snprintf(id, sizeof(id), "%lld", (long long)u->id);
		snprintf(slot, sizeof(slot), "%d", u->slot);
		csv(stdout, id, false);
		csv(stdout, u->uid, false);
		csv(stdout, u->state, false);
		csv(stdout, u->work_order, false);
		csv(stdout, slot, false);
		csv(stdout, u->station, false);
		csv(stdout, u->operator_name, false);
		csv(stdout, u->cert_serial, false);
		csv(stdout, u->cert_sha256, false);
		csv(stdout, u->reason, false);
		csv(stdout, u->started_at, false);
		csv(stdout, u->finished_at, true);
	} else {
		if (l->n == 0)
			printf("%-6s %-32s %-10s %-12s %-34s %s\n", "ID", "DEVICE",
			       "RESULT", "WORK ORDER", "CERT SERIAL", "STARTED");
		printf("%-6lld %-32s %-10s %-12s %-34s %s\n", (long long)u->id,
		       u->uid, u->state, u->work_order ? u->work_order : "-",
		       u->cert_serial ? u->cert_serial : "-",
		       u->started_at ? u->started_at : "-");
	}
	l->n++;
	return 0;
}

static int parse_fmt(const char *s, enum fmt def, enum fmt *out)
{
	if (!s)
		*out = def;
	else if (!strcmp(s, "table"))
		*out = F_TABLE;
	else if (!strcmp(s, "jsonl") || !strcmp(s, "json"))
		*out = F_JSONL;
	else if (!strcmp(s, "csv"))
		*out = F_CSV;
	else
		return -1;
	return 0;
}

static int filter_from(st_rec_cli *c, st_unit_filter *f)
{
	*f = (st_unit_filter){ .work_order = c->work_order, .since = c->since,
			   .until = c->until, .uid = c->uid };
	if (c->result && !st_unit_filter_result(f, c->result))
		return -1;
	return 0;
}

static int cmd_list(st_rec_cli *c, bool export)
{
	struct lister l = { .with_pem = export };
	st_records *r = NULL;
	st_unit_filter f;
	int code;

	if (parse_fmt(c->format, export ? F_JSONL : F_TABLE, &l.fmt))
		return st_say(ST_EXIT_USAGE, "--format is table, jsonl or csv");
	if (filter_from(c, &f))
		return st_say(ST_EXIT_USAGE, "--result is PASS, UNFUSED, FAIL, QUARANTINE or RUNNING");
	code = st_cli_open_store(c, ST_STORE_READ, &r);
	if (code)
		return code;
	if (st_records_units(r, &f, print_unit, &l))
		code = st_say(ST_EXIT_RECORDS, "records: %s", st_records_errmsg(r));
	else if (l.fmt == F_TABLE)
		printf("%d unit%s\n", l.n, l.n == 1 ? "" : "s");
	st_records_close(r);
	return code;
}

/* A unit_end's measurements and flags (docs/integration.md), a line
 * each: "measurement keygen_ms 12 ms [0, 50] pass". */
static void print_measured(json_t *data)
{
	const char *text = json_string_value(json_object_get(data, "measurements"));
	const char *flags = json_string_value(json_object_get(data, "flags"));
	json_t *a = text ? json_loads(text, 0, NULL) : NULL, *m;
	size_t i;

	json_array_foreach(a, i, m) {
		char v[48], lo[48] = "-", hi[48] = "-";
		json_t *jl = json_object_get(m, "low"), *jh = json_object_get(m, "high");

		snprintf(v, sizeof(v), "%g", json_number_value(json_object_get(m, "value")));
		if (json_is_number(jl) && json_is_number(jh)) {
			snprintf(lo, sizeof(lo), "%g", json_number_value(jl));
			snprintf(hi, sizeof(hi), "%g", json_number_value(jh));
		}
		printf("          measurement %-15s %10s %-5s [%s, %s] %s\n",
		       json_string_value(json_object_get(m, "name")), v,
		       json_string_value(json_object_get(m, "unit")), lo, hi,
		       json_string_value(json_object_get(m, "outcome")));
	}
	json_decref(a);
	if (flags)
		printf("          flags %s\n", flags);
}

static int print_event(void *ctx, const st_event_row *e)
{
	struct lister *l = ctx;
	json_t *body, *data;
	json_error_t je;

	if (l->fmt == F_JSONL) {
		printf("{\"seq\":%lld,\"hash\":\"%s\",\"sig\":%s%s%s,\"body\":%s}\n",
		       (long long)e->seq, e->hash, e->sig ? "\"" : "",
		       e->sig ? e->sig : "null", e->sig ? "\"" : "", e->body);
		return 0;
	}
	body = json_loads(e->body, 0, &je);
	data = json_object_get(body, "data");
	printf("  #%-6lld %s %-11s", (long long)e->seq, e->at, e->kind);
	if (!strcmp(e->kind, "step"))
		printf(" %-12s %-4s %s", json_string_value(json_object_get(data, "step")),
		       json_string_value(json_object_get(data, "outcome")),
		       json_string_value(json_object_get(data, "detail")) ?
		       json_string_value(json_object_get(data, "detail")) : "");
	else if (!strcmp(e->kind, "unit_end"))
		printf(" %s %s", json_string_value(json_object_get(data, "result")),
		       json_string_value(json_object_get(data, "reason")) ?
		       json_string_value(json_object_get(data, "reason")) : "");
	printf("\n");
	if (!strcmp(e->kind, "unit_end"))
		print_measured(data);
	json_decref(body);
	return 0;
}

struct shower {
	struct lister l;
	int64_t ids[256];
	int n;
};

static int collect(void *ctx, const st_unit_row *u)
{
	struct shower *s = ctx;

	print_unit(&s->l, u);
	if (s->n < (int)ST_ARRAY_SIZE(s->ids))
		s->ids[s->n++] = u->id;
	return 0;
}

/* station records show UID|ID: every attempt on the device with its
 * events. */
static int cmd_show(st_rec_cli *c, const char *what)
{
	struct shower s = { .n = 0 };
	st_records *r = NULL;
	st_unit_filter f = { .uid = what };
	char *end;
	long long id = strtoll(what, &end, 10);
	int code;

	if (parse_fmt(c->format, F_TABLE, &s.l.fmt) || s.l.fmt == F_CSV)
		return st_say(ST_EXIT_USAGE, "show: --format is table or jsonl");
	code = st_cli_open_store(c, ST_STORE_READ, &r);
	if (code)
		return code;
	if (st_records_units(r, &f, collect, &s) == ST_OK && s.n == 0 && !*end) {
		f = (st_unit_filter){ .unit_id = id };
		st_records_units(r, &f, collect, &s);
	}
	if (s.n == 0)
		code = st_say(ST_EXIT_RECORDS, "show: no unit with device ID or id %s",
			      what);
	for (int i = 0; i < s.n && !code; i++) {
		if (s.l.fmt == F_TABLE)
			printf("unit %lld events:\n", (long long)s.ids[i]);
		if (st_records_events(r, s.ids[i], print_event, &s.l))
			code = st_say(ST_EXIT_RECORDS, "records: %s", st_records_errmsg(r));
	}
	st_records_close(r);
	return code;
}

/* station records units --component NAME[@VERSION]: every unit that left
 * with it (docs/firmware.md), from the SBOMs on record. */
static int print_component_unit(void *ctx, const st_unit_row *u, const char *image,
				const char *image_version, const char *cversion)
{
	struct lister *l = ctx;

	if (l->fmt == F_JSONL) {
		json_t *o = json_pack("{s:s,s:s?,s:s?,s:s?,s:s?,s:s?,s:s?,s:s?,s:I,s:s?}",
				      "uid", u->uid, "cert_serial", u->cert_serial,
				      "work_order", u->work_order, "date", u->finished_at,
				      "result", u->state, "image", image,
				      "image_version", image_version,
				      "component_version", cversion, "unit", (json_int_t)u->id,
				      "station", u->station);

		if (!o)
			return ST_E_NOMEM;
		json_dumpf(o, stdout, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(12));
		fputc('\n', stdout);
		json_decref(o);
	} else if (l->fmt == F_CSV) {
		char id[24];

		if (l->n == 0)
			fputs("uid,cert_serial,work_order,date,result,image,"
			      "image_version,component_version,unit\n", stdout);
		snprintf(id, sizeof(id), "%lld", (long long)u->id);
		csv(stdout, u->uid, false);
		csv(stdout, u->cert_serial, false);
		csv(stdout, u->work_order, false);
		csv(stdout, u->finished_at, false);
		csv(stdout, u->state, false);
		csv(stdout, image, false);
		csv(stdout, image_version, false);
		csv(stdout, cversion, false);
		csv(stdout, id, true);
	} else {
		if (l->n == 0)
			printf("%-32s %-34s %-12s %-24s %-8s %s\n", "DEVICE", "CERT SERIAL",
			       "WORK ORDER", "DATE", "RESULT", "IMAGE (COMPONENT VERSION)");
		printf("%-32s %-34s %-12s %-24s %-8s %s %s (%s)\n", u->uid,
		       u->cert_serial ? u->cert_serial : "-",
		       u->work_order ? u->work_order : "-",
		       u->finished_at ? u->finished_at : "-", u->state,
		       image ? image : "?", image_version ? image_version : "?",
		       cversion && *cversion ? cversion : "no version");
	}
	l->n++;
	return 0;
}

static int cmd_units(st_rec_cli *c)
{
	struct lister l = { .n = 0 };
	st_records *r = NULL;
	char err[512] = "";
	int code, rc;

	if (parse_fmt(c->format, F_TABLE, &l.fmt))
		return st_say(ST_EXIT_USAGE, "--format is table, jsonl or csv");
	if (!c->component)
		return st_say(ST_EXIT_USAGE, "records units --component NAME[@VERSION] "
			      "[--pg] [--format table|jsonl|csv]");
	if (c->pg) {
		code = st_sync_units_component(c, print_component_unit, &l);
		if (!code && l.fmt == F_TABLE)
			printf("%d unit%s of every station left with %s\n", l.n,
			       l.n == 1 ? "" : "s", c->component);
		return code;
	}
	code = st_cli_open_store(c, ST_STORE_READ, &r);
	if (code)
		return code;
	rc = st_records_units_with_component(r, c->component, print_component_unit,
					     &l, err, sizeof(err));
	if (rc == ST_E_INVAL)
		code = st_say(ST_EXIT_USAGE, "records units: %s", err);
	else if (rc)
		code = st_say(ST_EXIT_RECORDS, "records: %s", err);
	else if (l.fmt == F_TABLE)
		printf("%d unit%s left with %s\n", l.n, l.n == 1 ? "" : "s",
		       c->component);
	st_records_close(r);
	return code;
}

/* A records step's failure, worded as the command always did. */
static int rec_fail(const char *what, st_rec_step step, int rc, int notfound,
		    const char *err)
{
	if (step == ST_REC_STEP_STORE)
		return rc == ST_E_NOTFOUND ? st_say(ST_EXIT_USAGE, "%s", err) :
		       st_say(ST_EXIT_RECORDS, "records: %s", err);
	if (step == ST_REC_STEP_AUDIT)
		return st_say(ST_EXIT_HSM, "%s: the audit key: %s", what, err);
	return st_say(rc == notfound ? ST_EXIT_USAGE : ST_EXIT_RECORDS, "%s: %s",
		      what, err);
}

/* station records workorder create ID [--quota N] */
static int exec_workorder_create(struct cli *cli, int argc, char **argv)
{
	st_rec_cli *c = cli_rec(cli);
	st_rec_step step = 0;
	char err[512];
	int code, rc;

	(void)argc;
	/* the central copy first (when sync is configured): a quota that
	 * clashes there is refused before anything is written */
	code = st_sync_workorder_put(c, argv[0], c->quota);
	if (!code)
		code = c->login(c->ctx);
	if (code)
		return code;
	rc = st_records_workorder_create(c->st, c->cfg, argv[0], c->quota, &step,
					 err, sizeof(err));
	if (rc)
		return rec_fail("workorder", step, rc, ST_E_EXISTS, err);
	if (c->quota >= 0)
		printf("work order %s created with a quota of %ld units\n", argv[0],
		       c->quota);
	else
		printf("work order %s created without a quota\n", argv[0]);
	return 0;
}

/* station records workorder show ID */
static int exec_workorder_show(struct cli *cli, int argc, char **argv)
{
	st_rec_cli *c = cli_rec(cli);
	st_workorder_info wo;
	st_rec_step step = 0;
	char err[512];
	int rc;

	(void)argc;
	rc = st_records_workorder_get(c->st, argv[0], &wo, &step, err, sizeof(err));
	if (rc)
		return rec_fail("workorder", step, rc, ST_E_NOTFOUND, err);
	if (wo.quota >= 0)
		printf("work order %s: quota %ld, %ld PASS, %ld in work, %ld "
		       "failed (not counted), %ld left\n", argv[0], wo.quota,
		       wo.pass, wo.running, wo.failed,
		       wo.quota - wo.pass - wo.running);
	else
		printf("work order %s: no quota, %ld PASS, %ld in work, %ld "
		       "failed\n", argv[0], wo.pass, wo.running, wo.failed);
	return st_sync_workorder_show(c, argv[0]);
}

/* station records export --evidence DIR: only from a store that verifies;
 * every file listed in manifest.sha256, which the audit key signs
 * (st_records_evidence). */
static int cmd_evidence(st_rec_cli *c)
{
	st_evidence_result res;
	st_rec_step step = 0;
	st_records *r = NULL;
	st_trust *t = NULL;
	st_unit_filter f;
	char err[4608];
	int code, rc;

	if (filter_from(c, &f))
		return st_say(ST_EXIT_USAGE, "--result is PASS, UNFUSED, FAIL, QUARANTINE or RUNNING");
	code = st_cli_open_store(c, ST_STORE_WRITE, &r);
	if (code)
		return code;
	code = c->login(c->ctx);
	if (code)
		goto cleanup;
	/* audit certificates checked against the token's CAs, as verify does */
	code = st_cli_trust_open(c->ctx, NULL, false, &t);
	if (code)
		goto cleanup;
	rc = st_records_evidence(r, c->st, c->cfg, t, &f, c->evidence, &res,
				 &step, err, sizeof(err));
	if (rc && step == ST_REC_STEP_VERIFY)
		code = st_say(ST_EXIT_RECORDS, "export: the records do not verify, no "
			      "evidence written: %s", st_records_errmsg(r));
	else if (rc)
		code = st_say(step == ST_REC_STEP_AUDIT ? ST_EXIT_HSM :
			      step == ST_REC_STEP_DIR ? ST_EXIT_USAGE : ST_EXIT_RECORDS,
			      "export: %s", err);
	else
		printf("evidence in %s: units.jsonl, events.jsonl (%lld events), %d device "
		       "certificate%s, certs.jsonl (%d issued, %d not a PASS identity in "
		       "certs/revoked/), crl.pem, ca.pem, audit.pem, checkpoint.json "
		       "(events 1..%lld, head %s), checkpoint.sig, manifest.sha256, "
		       "manifest.sig; check it as docs/evidence.md says\n", c->evidence,
		       res.last_seq, res.certs, res.certs == 1 ? "" : "s", res.issued,
		       res.revoked_pems, res.cp_seq, res.cp_head_hash);
cleanup:
	st_trust_free(t);
	st_records_close(r);
	return code;
}

/* station audit init: make the audit key, or finish what an interrupted
 * init or first start left in the token (recorded in the store as a signed
 * event), or re-certify an old audit certificate; with --out the
 * certificate is written (again) as PEM.  A complete key is refused
 * without --out: there is nothing to do. */
static int exec_audit_init(struct cli *cli, int argc, char **argv)
{
	st_rec_cli *c = cli_rec(cli);
	const char *ca = c->cfg->ca_label ? c->cfg->ca_label : "issuing-ca";
	const char *label = st_audit_label();
	char err[1024] = "", repair[600] = "";
	st_rec_step step = 0;
	bool created;
	int code, rc;

	(void)argc;
	(void)argv;
	code = c->login(c->ctx);
	if (code)
		return code;
	rc = st_records_audit_init(c->st, c->cfg, ca, c->out, &created, repair,
				   sizeof(repair), &step, err, sizeof(err));
	if (rc && step == ST_REC_STEP_AUDIT)
		return st_say(ST_EXIT_HSM, "audit init: %s", err);
	if (rc && step == ST_REC_STEP_NOTHING)
		return st_say(ST_EXIT_HSM, "audit init: an audit key labelled '%s' "
			      "already exists in token '%s' with a valid audit "
			      "certificate: nothing to do (--out FILE writes its "
			      "certificate)", label, c->cfg->token_label);
	if (rc && step == ST_REC_STEP_STORE)
		return rc == ST_E_NOTFOUND ? st_say(ST_EXIT_USAGE, "%s", err) :
		       st_say(ST_EXIT_RECORDS, "records: %s", err);
	if (rc && step == ST_REC_STEP_OP)
		return st_say(ST_EXIT_RECORDS, "audit init: the audit key is "
			      "ready in the token, but %s", err);
	if (rc)
		return st_say(ST_EXIT_USAGE, "audit init: %s", rc != ST_E_INVAL ? err :
			      "the audit certificate does not parse");
	if (repair[0])
		printf("audit key '%s' in token '%s': %s%s%s\n", label,
		       c->cfg->token_label, repair, c->out ? "; certificate in " : "",
		       c->out ? c->out : "");
	else if (created)
		printf("audit key '%s' created in token '%s', certified by CA '%s'%s%s\n",
		       label, c->cfg->token_label, ca,
		       c->out ? "; certificate in " : "", c->out ? c->out : "");
	else
		printf("audit key '%s' already exists in token '%s'; its certificate "
		       "is in %s\n", label, c->cfg->token_label, c->out);
	return 0;
}

/* ---- The entries: `records` and `audit` ---- */

static int exec_verify(struct cli *cli, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return cli->rec.pg ? st_cmd_verify_pg(cli_rec(cli)) : cmd_verify(cli_rec(cli));
}

static int exec_list(struct cli *cli, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return cmd_list(cli_rec(cli), false);
}

static int exec_export(struct cli *cli, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return cli->rec.evidence ? cmd_evidence(cli_rec(cli)) :
	       cmd_list(cli_rec(cli), true);
}

static int exec_show(struct cli *cli, int argc, char **argv)
{
	(void)argc;
	return cmd_show(cli_rec(cli), argv[0]);
}

static int exec_sync(struct cli *cli, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return st_cmd_sync(cli_rec(cli));
}

static int exec_units(struct cli *cli, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return cmd_units(cli_rec(cli));
}

static int exec_close_interrupted(struct cli *cli, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return st_cmd_close_interrupted(cli_role(cli));
}

#define LIST_OPTS O_WORK_ORDER, O_SINCE, O_UNTIL, O_RESULT, O_UID, O_FORMAT
#define LIST_USAGE "[--work-order ID] [--since DATE] [--until DATE]\n" \
	"          [--result R] [--uid UID] [--format table|jsonl|csv]"

static const struct cli_sub workorder_subs[] = {
	{ .name = "create", .usage = "records workorder create ID [--quota N]",
	  .help = "a work order (its quota), recorded; in the central copy too "
		  "when sync is configured",
	  .options = (const enum cli_opt[]){ O_QUOTA, O_NONE },
	  .min_args = 1, .max_args = 1,
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RW | CLI_NEED_STORE_NEW |
		   CLI_NEED_HSM,
	  .exec = exec_workorder_create },
	{ .name = "show", .usage = "records workorder show ID",
	  .help = "a work order's quota and counts",
	  .options = (const enum cli_opt[]){ O_NONE },
	  .min_args = 1, .max_args = 1,
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RO,
	  .exec = exec_workorder_show },
	{ NULL },
};

/* Reading subcommands need the store only to read (CLI_NEED_STORE_RO);
 * verify and export --evidence log in only for what needs it (the token's
 * CAs, the audit key's signature): the login is the dispatcher's. */
static const struct cli_sub records_subs[] = {
	{ .name = "verify",
	  .usage = "records verify [--ca-cert FILE] [--anchor HASH] [--checkpoint "
		   "FILE.json] | records verify --pg",
	  .help = "check the chain, signatures, anchor and checkpoint (--pg: the "
		  "central copy, docs/sync.md)",
	  .options = (const enum cli_opt[]){ O_CA_CERT, O_ANCHOR, O_CHECKPOINT,
		O_PG, O_NONE },
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RO | CLI_NEED_HSM,
	  .exec = exec_verify },
	{ .name = "list", .usage = "records list " LIST_USAGE,
	  .help = "the units on record",
	  .options = (const enum cli_opt[]){ LIST_OPTS, O_NONE },
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RO,
	  .exec = exec_list },
	{ .name = "show", .usage = "records show UID|ID [--format table|jsonl]",
	  .help = "one unit (by device ID or record id) with its events",
	  .options = (const enum cli_opt[]){ O_FORMAT, O_NONE },
	  .min_args = 1, .max_args = 1,
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RO,
	  .exec = exec_show },
	{ .name = "units",
	  .usage = "records units --component NAME[@VERSION] [--pg] "
		   "[--format table|jsonl|csv]",
	  .help = "every unit that left with a component (from the SBOMs on record; "
		  "--pg: every station's, from the central copy)",
	  .options = (const enum cli_opt[]){ O_COMPONENT, O_PG, O_FORMAT, O_NONE },
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RO,
	  .exec = exec_units },
	{ .name = "export",
	  .usage = "records export " LIST_USAGE "\n"
		   "          | records export --evidence DIR [filters]",
	  .help = "units as table, JSON lines or CSV; --evidence DIR: the evidence pack",
	  .options = (const enum cli_opt[]){ LIST_OPTS, O_EVIDENCE, O_NONE },
	  /* read only, but --evidence attaches the audit signer, which
	   * records a new audit certificate */
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RO | CLI_NEED_STORE_RW |
		   CLI_NEED_HSM,
	  .exec = exec_export },
	{ .name = "workorder",
	  .usage = "records workorder create ID [--quota N] | records workorder show ID",
	  .help = "create ID --quota N | show ID",
	  .subs = workorder_subs },
	{ .name = "sync", .usage = "records sync [--once|--follow|--status]",
	  .help = "ship the records to the central copy (docs/sync.md)",
	  .options = (const enum cli_opt[]){ O_ONCE, O_FOLLOW, O_STATUS, O_NONE },
	  /* a pass creates the store (the sync service may start before the
	   * first run); --status only reads */
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RW | CLI_NEED_STORE_NEW |
		   CLI_NEED_HSM,
	  .exec = exec_sync },
	{ .name = "close-interrupted",
	  .usage = "records close-interrupted --supervisor NAME --reason TEXT "
		   "[--before DATE]",
	  .help = "close units no run will finish; revoke their certificates",
	  .options = (const enum cli_opt[]){ O_SUPERVISOR, O_SUPERVISOR_PASSWORD_FILE,
		O_REASON, O_BEFORE, O_NONE },
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RW | CLI_NEED_HSM,
	  .exec = exec_close_interrupted },
	{ NULL },
};

const struct cli_entry cli_cmd_records = {
	.name = "records",
	.usage = "records verify [--ca-cert FILE] [--anchor HASH] [--checkpoint FILE.json]\n"
		 "          | records list|export [--work-order ID]\n"
		 "          [--since DATE] [--until DATE] [--result R] [--uid UID]\n"
		 "          [--format table|jsonl|csv] | records export --evidence DIR\n"
		 "          | records show UID|ID | records workorder create ID [--quota N]\n"
		 "          | records units --component NAME[@VERSION] [--pg] [--format table|jsonl|csv]\n"
		 "            (every unit that left with it, from the SBOMs on record;\n"
		 "            --pg: every station's, from the central copy)\n"
		 "          | records workorder show ID\n"
		 "          | records sync [--once|--follow|--status] | records verify --pg\n"
		 "            (the central PostgreSQL copy: docs/sync.md)\n"
		 "          | records close-interrupted --supervisor NAME --reason TEXT [--before DATE]\n"
		 "            (close units no run will finish; revoke their certificates)",
	.help = "The local records: verify, query, export, work orders, sync.\n"
		"DATE: YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM].",
	.subs = records_subs,
};

static const struct cli_sub audit_subs[] = {
	{ .name = "init", .usage = "audit init [--out FILE]",
	  .help = "make (or repair) the audit key and its certificate; --out "
		  "writes the certificate",
	  .options = (const enum cli_opt[]){ O_OUT, O_NONE },
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RW | CLI_NEED_STORE_NEW |
		   CLI_NEED_HSM,
	  .exec = exec_audit_init },
	{ NULL },
};

const struct cli_entry cli_cmd_audit = {
	.name = "audit",
	.usage = "audit init [--out FILE]   (the audit key; made on first use too)",
	.help = "The station's audit key, which signs every record.",
	.subs = audit_subs,
};

/* cmd_records.c — `station records verify|list|show|export|workorder` and
 * `station audit init|show`: reading the audit store back for people and
 * auditors, and the evidence bundle (docs/evidence.md). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"
#include "records/records.h"
#include "station/checkpoint.h"
#include "cli/cli.h"
#include "cli/cmd-profile.h"
#include "cli/cmd-records.h"
#include "station/roles.h"
#include "cli/cmd-records-sync.h"


/* Open cfg's records into *r; 0, or ST_EXIT_RECORDS after saying why. */
static int st_cli_open_store(const st_config *cfg, rec_store **r)
{
	int rc = rec_open(cfg->records_path, r);

	if (rc)
		return st_say(ST_EXIT_RECORDS, "records: cannot open %s: %s",
			      cfg->records_path, *r ? rec_errmsg(*r) : st_strerror(rc));
	return 0;
}

/* ---- verify ---- */

struct anchor {
	const char *hash;
	long long seq;
};

static int find_anchor(void *ctx, const rec_event_row *e)
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
	rec_verify_result v;
	rec_store *r = NULL;
	st_trust *t = NULL;
	int rc, code;

	/* every audit certificate must come from the station's CA: the one
	 * given, or those in the token (never any issuer at all) */
	code = st_cli_trust_open(c->ctx, c->ca_cert, true, &t);
	if (code)
		return code;
	code = st_cli_open_store(c->cfg, &r);
	if (code)
		goto cleanup;
	rc = rec_verify(r, st_trust_check_audit, t, &v);
	if (rc == ST_OK && c->anchor) {
		/* a hash kept from an earlier export: events cut off the end
		 * of the chain (with their rows) take it with them */
		struct anchor a = { .hash = c->anchor };

		rec_list_events(r, 0, find_anchor, &a);
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
		uint8_t *sig = NULL;
		char *body = NULL;
		size_t siglen = 0;
		rec_checkpoint cp;
		int crc;

		if (st_checkpoint_read(c->checkpoint, &body, &sig, &siglen, err,
				       sizeof(err))) {
			code = st_say(ST_EXIT_USAGE, "verify --checkpoint: %s", err);
			goto cleanup;
		}
		crc = rec_checkpoint_check(r, body, sig, siglen,
					   st_trust_check_audit, t, &cp);
		free(body);
		free(sig);
		if (crc == ST_OK && strcmp(cp.station, c->cfg->station_id)) {
			printf("records: %s: the checkpoint %s is of station %s, this "
			       "is station %s: not checked\n", c->cfg->records_path,
			       c->checkpoint, cp.station, c->cfg->station_id);
			code = ST_EXIT_USAGE;
			goto cleanup;
		}
		if (crc) {
			printf("records TAMPERED: %s: checkpoint %s: %s\n",
			       c->cfg->records_path, c->checkpoint, rec_errmsg(r));
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
			int trc = st_cert_tally_get(r, &tally, terr, sizeof(terr));

			st_warn_cert_tally(trc, &tally, terr);
		}
	} else if (rc == ST_E_VERIFY) {
		/* rec_errmsg names the record itself ("event N ..."):
		 * printing bad_seq as well said it twice */
		if (v.bad_seq)
			printf("records TAMPERED: %s: first bad record: %s\n",
			       c->cfg->records_path, rec_errmsg(r));
		else
			printf("records TAMPERED: %s: %s\n", c->cfg->records_path,
			       rec_errmsg(r));
		code = ST_EXIT_RECORDS;
	} else {
		code = st_say(ST_EXIT_RECORDS, "verify: %s", rec_errmsg(r));
	}
cleanup:
	rec_close(r);
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

static json_t *unit_json(const rec_unit_row *u, bool with_pem)
{
	json_t *o = json_pack("{s:I, s:s, s:s, s:i}", "id", (json_int_t)u->id,
			      "uid", u->uid, "result", u->state, "slot", u->slot);
	const struct { const char *k, *v; } f[] = {
		{ "work_order", u->work_order }, { "reason", u->reason },
		{ "port", u->port }, { "station", u->station },
		{ "operator", u->operator_name }, { "profile", u->profile },
		{ "profile_digest", u->profile_digest },
		{ "cert_serial", u->cert_serial }, { "cert_sha256", u->cert_sha256 },
		{ "pubkey", u->pubkey }, { "rot_hash", u->rot_hash },
		{ "fuse_readback", u->fuse_readback },
		{ "started_at", u->started_at }, { "finished_at", u->finished_at },
		{ "cert_pem", with_pem ? u->cert_pem : NULL },
	};

	for (size_t i = 0; o && i < ST_ARRAY_SIZE(f); i++)
		if (f[i].v)
			json_object_set_new(o, f[i].k, json_string(f[i].v));
	return o;
}

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

static int print_unit(void *ctx, const rec_unit_row *u)
{
	struct lister *l = ctx;
	char id[24], slot[12];
	json_t *o;

	if (l->fmt == F_JSONL) {
		o = unit_json(u, l->with_pem);
		if (!o)
			return ST_E_NOMEM;
		json_dumpf(o, stdout, JSON_COMPACT | JSON_SORT_KEYS);
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

static int filter_from(st_rec_cli *c, rec_filter *f)
{
	*f = (rec_filter){ .work_order = c->work_order, .since = c->since,
			   .until = c->until, .result = c->result, .uid = c->uid };
	if (c->result && strcmp(c->result, "PASS") && strcmp(c->result, "FAIL") &&
	    strcmp(c->result, "QUARANTINE") && strcmp(c->result, "RUNNING") &&
	    strcmp(c->result, "UNFUSED"))
		return -1;
	return 0;
}

static int cmd_list(st_rec_cli *c, bool export)
{
	struct lister l = { .with_pem = export };
	rec_store *r = NULL;
	rec_filter f;
	int code;

	if (parse_fmt(c->format, export ? F_JSONL : F_TABLE, &l.fmt))
		return st_say(ST_EXIT_USAGE, "--format is table, jsonl or csv");
	if (filter_from(c, &f))
		return st_say(ST_EXIT_USAGE, "--result is PASS, UNFUSED, FAIL, QUARANTINE or RUNNING");
	code = st_cli_open_store(c->cfg, &r);
	if (code)
		return code;
	if (rec_list_units(r, &f, print_unit, &l))
		code = st_say(ST_EXIT_RECORDS, "records: %s", rec_errmsg(r));
	else if (l.fmt == F_TABLE)
		printf("%d unit%s\n", l.n, l.n == 1 ? "" : "s");
	rec_close(r);
	return code;
}

static int print_event(void *ctx, const rec_event_row *e)
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
	json_decref(body);
	return 0;
}

struct shower {
	struct lister l;
	int64_t ids[256];
	int n;
};

static int collect(void *ctx, const rec_unit_row *u)
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
	rec_store *r = NULL;
	rec_filter f = { .uid = what };
	char *end;
	long long id = strtoll(what, &end, 10);
	int code;

	if (parse_fmt(c->format, F_TABLE, &s.l.fmt) || s.l.fmt == F_CSV)
		return st_say(ST_EXIT_USAGE, "show: --format is table or jsonl");
	code = st_cli_open_store(c->cfg, &r);
	if (code)
		return code;
	if (rec_list_units(r, &f, collect, &s) == ST_OK && s.n == 0 && !*end) {
		f = (rec_filter){ .unit_id = id };
		rec_list_units(r, &f, collect, &s);
	}
	if (s.n == 0)
		code = st_say(ST_EXIT_RECORDS, "show: no unit with device ID or id %s",
			      what);
	for (int i = 0; i < s.n && !code; i++) {
		if (s.l.fmt == F_TABLE)
			printf("unit %lld events:\n", (long long)s.ids[i]);
		if (rec_list_events(r, s.ids[i], print_event, &s.l))
			code = st_say(ST_EXIT_RECORDS, "records: %s", rec_errmsg(r));
	}
	rec_close(r);
	return code;
}

/* A records step's failure, worded as the command always did. */
static int rec_fail(const char *what, st_rec_step step, int rc, int notfound,
		    const char *err)
{
	if (step == ST_REC_STEP_STORE)
		return st_say(ST_EXIT_RECORDS, "records: %s", err);
	if (step == ST_REC_STEP_AUDIT)
		return st_say(ST_EXIT_HSM, "%s: the audit key: %s", what, err);
	return st_say(rc == notfound ? ST_EXIT_USAGE : ST_EXIT_RECORDS, "%s: %s",
		      what, err);
}

static int cmd_workorder(st_rec_cli *c, int argc, char **argv)
{
	st_workorder_info wo;
	st_rec_step step = 0;
	char err[512];
	int code, rc;

	if (argc != 2 || (strcmp(argv[0], "create") && strcmp(argv[0], "show")))
		return st_say(ST_EXIT_USAGE, "records workorder create ID [--quota N] | "
			      "records workorder show ID");
	if (!strcmp(argv[0], "create")) {
		/* the central copy first (when sync is configured): a quota
		 * that clashes there is refused before anything is written */
		code = st_sync_workorder_put(c, argv[1], c->quota);
		if (!code)
			code = c->login(c->ctx);
		if (code)
			return code;
		rc = st_records_workorder_create(c->st, c->cfg, argv[1], c->quota,
						 &step, err, sizeof(err));
		if (rc)
			return rec_fail("workorder", step, rc, ST_E_EXISTS, err);
		if (c->quota >= 0)
			printf("work order %s created with a quota of %ld units\n",
			       argv[1], c->quota);
		else
			printf("work order %s created without a quota\n", argv[1]);
		return 0;
	}
	rc = st_records_workorder_get(c->cfg, argv[1], &wo, &step, err, sizeof(err));
	if (rc)
		return rec_fail("workorder", step, rc, ST_E_NOTFOUND, err);
	if (wo.quota >= 0)
		printf("work order %s: quota %ld, %ld PASS, %ld in work, %ld "
		       "failed (not counted), %ld left\n", argv[1], wo.quota,
		       wo.pass, wo.running, wo.failed,
		       wo.quota - wo.pass - wo.running);
	else
		printf("work order %s: no quota, %ld PASS, %ld in work, %ld "
		       "failed\n", argv[1], wo.pass, wo.running, wo.failed);
	return st_sync_workorder_show(c, argv[1]);
}

/* ---- evidence bundle ---- */

struct bundle {
	const char *dir;
	FILE *units, *events, *manifest_list;
	char err[4608];
	int certs, issued, revoked_pems;
	char audit_pem[8192];
	long long last_seq;             /* the last event in events.jsonl */
	char last_hash[65];
	json_t *cert_lines;    /* certs.jsonl, one object per issued certificate */
	json_t *idents;        /* uid -> PEM of its newest PASS or UNFUSED unit */
};

/* Write text to dir/name (fsynced). */
static int put_file(struct bundle *b, const char *name, const char *text,
		    size_t len)
{
	char path[4096];
	int fd, ok;

	snprintf(path, sizeof(path), "%s/%s", b->dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644);
	if (fd < 0) {
		snprintf(b->err, sizeof(b->err), "cannot create %s: %s", path,
			 strerror(errno));
		return -1;
	}
	ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
	ok = close(fd) == 0 && ok;
	if (!ok)
		snprintf(b->err, sizeof(b->err), "cannot write %s", path);
	return ok ? 0 : -1;
}

static int bundle_unit(void *ctx, const rec_unit_row *u)
{
	struct bundle *b = ctx;
	json_t *o = unit_json(u, false);

	if (!o)
		return ST_E_NOMEM;
	json_dumpf(o, b->units, JSON_COMPACT | JSON_SORT_KEYS);
	fputc('\n', b->units);
	json_decref(o);
	/* A device's identity is its newest PASS or UNFUSED unit's (units
	 * come oldest first): an UNFUSED unit finished by an armed run is two
	 * records with one certificate; a re-provisioned one supersedes the
	 * old.  Written once, after the walk (bundle_idents). */
	if (u->cert_pem && (!strcmp(u->state, "PASS") || !strcmp(u->state, "UNFUSED")) &&
	    json_object_set_new(b->idents, u->uid, json_string(u->cert_pem)))
		return ST_E_NOMEM;
	return 0;
}

/* certs/<device-id>.pem: one per device with a PASS or UNFUSED unit. */
static int bundle_idents(struct bundle *b)
{
	const char *uid;
	json_t *pem;
	char name[300];

	json_object_foreach(b->idents, uid, pem) {
		snprintf(name, sizeof(name), "certs/%s.pem", uid);
		if (put_file(b, name, json_string_value(pem),
			     strlen(json_string_value(pem))))
			return ST_E_IO;
		b->certs++;
	}
	return 0;
}

static int bundle_event(void *ctx, const rec_event_row *e)
{
	struct bundle *b = ctx;

	fprintf(b->events, "{\"seq\":%lld,\"hash\":\"%s\",\"sig\":%s%s%s,\"body\":%s}\n",
		(long long)e->seq, e->hash, e->sig ? "\"" : "",
		e->sig ? e->sig : "null", e->sig ? "\"" : "", e->body);
	b->last_seq = e->seq;
	snprintf(b->last_hash, sizeof(b->last_hash), "%s", e->hash);
	return 0;
}

/* sha256sum's format: hex, two spaces, name. */
static int hash_line(struct bundle *b, const char *name, FILE *m)
{
	char path[4096], hex[65];
	unsigned char buf[65536], dig[SHA256_DIGEST_LENGTH];
	EVP_MD_CTX *h = EVP_MD_CTX_new();
	size_t n;
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "%s/%s", b->dir, name);
	f = fopen(path, "rb");
	ok = f && h && EVP_DigestInit_ex(h, EVP_sha256(), NULL) == 1;
	while (ok && (n = fread(buf, 1, sizeof(buf), f)) > 0)
		ok = EVP_DigestUpdate(h, buf, n) == 1;
	ok = ok && !ferror(f) && EVP_DigestFinal_ex(h, dig, NULL) == 1;
	if (f)
		fclose(f);
	EVP_MD_CTX_free(h);
	if (!ok) {
		snprintf(b->err, sizeof(b->err), "cannot read %s back", path);
		return -1;
	}
	st_hex(dig, sizeof(dig), hex);
	fprintf(m, "%s  %s\n", hex, name);
	return 0;
}

static int manifest_idents(struct bundle *b)
{
	const char *uid;
	json_t *pem;
	char name[300];

	json_object_foreach(b->idents, uid, pem) {
		snprintf(name, sizeof(name), "certs/%s.pem", uid);
		if (hash_line(b, name, b->manifest_list))
			return ST_E_IO;
	}
	return 0;
}

/* PEM text of a DER certificate into buf. */
static int der_to_pem(const uint8_t *der, size_t len, char *buf, size_t cap)
{
	X509 *x = d2i_X509(NULL, &der, (long)len);
	BIO *bio = BIO_new(BIO_s_mem());
	char *p;
	long n = 0;

	if (x && bio && PEM_write_bio_X509(bio, x))
		n = BIO_get_mem_data(bio, &p);
	if (n > 0 && (size_t)n < cap)
		snprintf(buf, cap, "%.*s", (int)n, p);
	X509_free(x);
	BIO_free(bio);
	return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* The manifest's signature: the audit key signs SHA-256 of the manifest;
 * stored as DER, the form `openssl dgst -verify -signature` reads. */
static int sign_manifest(struct bundle *b, st_audit *a, const char *text,
			 size_t len)
{
	uint8_t dig[SHA256_DIGEST_LENGTH], rs[64];
	unsigned char *der = NULL;
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *br = NULL, *bs = NULL;
	int n, rc = -1;

	SHA256((const unsigned char *)text, len, dig);
	if (st_audit_sign(a, dig, rs)) {
		snprintf(b->err, sizeof(b->err), "the audit key could not sign "
			 "the manifest");
		goto cleanup;
	}
	BN_free(br);
	br = BN_bin2bn(rs, 32, NULL);
	bs = BN_bin2bn(rs + 32, 32, NULL);
	if (!sig || !br || !bs || !ECDSA_SIG_set0(sig, br, bs))
		goto cleanup;
	br = bs = NULL;
	n = i2d_ECDSA_SIG(sig, &der);
	rc = n > 0 ? put_file(b, "manifest.sig", (const char *)der, (size_t)n) : -1;
cleanup:
	BN_free(br);
	BN_free(bs);
	OPENSSL_free(der);
	ECDSA_SIG_free(sig);
	return rc;
}

/* The CA certificate, from the token, into the bundle. */
static int ca_pem(st_rec_cli *c, struct bundle *b, hsm *h)
{
	hsm_session *s = NULL;
	uint8_t *der = NULL;
	size_t len = 0;
	char pem[8192];
	int rc = -1;

	if (hsm_session_open(h, &s) || hsm_cert_load(s, c->cfg->ca_label, &der, &len)) {
		snprintf(b->err, sizeof(b->err), "no CA certificate '%s' in the token",
			 c->cfg->ca_label);
		goto cleanup;
	}
	if (der_to_pem(der, len, pem, sizeof(pem)) == 0)
		rc = put_file(b, "ca.pem", pem, strlen(pem));
cleanup:
	free(der);
	hsm_session_close(s);
	return rc;
}

/* Fate of one issued certificate (certs.jsonl): the identity of a PASS
 * unit ("valid"), "revoked" (with the reason), or neither — its unit is
 * still "open" (RUNNING) or ended without a revocation ("not-revoked").
 * The PEM of every certificate that is not a PASS identity goes to
 * certs/revoked/<serial>.pem when the records hold it. */
static int bundle_issued(void *ctx, const st_issued *c)
{
	struct bundle *b = ctx;
	const char *fate = c->revoked ? "revoked" : c->live ? "valid" :
			   !strcmp(c->state, "RUNNING") ? "open" : "not-revoked";
	json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s}", "serial", c->serial,
			      "sha256", c->sha256, "uid", c->uid, "unit",
			      (json_int_t)c->unit_id, "unit_result", c->state,
			      "fate", fate);
	char name[300];

	if (!o)
		return ST_E_NOMEM;
	if (c->revoked)
		json_object_set_new(o, "revoked", json_pack("{s:i, s:s, s:s?, s:s?, s:s?}",
			"crl_reason", c->crl_reason, "crl_reason_name",
			st_crl_reason_name(c->crl_reason), "reason", c->revoke_reason,
			"by", c->revoked_by, "at", c->revoked_at));
	if (!c->live && c->pem) {
		snprintf(name, sizeof(name), "certs/revoked/%s.pem", c->serial);
		if (put_file(b, name, c->pem, strlen(c->pem))) {
			json_decref(o);
			return ST_E_IO;
		}
		json_object_set_new(o, "pem", json_string(name));
		b->revoked_pems++;
	}
	b->issued++;
	return json_array_append_new(b->cert_lines, o) ? ST_E_NOMEM : 0;
}

/* certs.jsonl, the CRL (signed by the CA in the HSM) and their manifest
 * lines, plus the certs/revoked/ files. */
static int bundle_certs(st_rec_cli *c, struct bundle *b, rec_store *r, hsm *h,
			const rec_filter *f, FILE *m)
{
	hsm_session *s = NULL;
	char path[4096], err[1024] = "", *text = NULL;
	size_t len = 0;
	long count = 0;
	FILE *t;
	int rc = -1;

	b->cert_lines = json_array();
	if (!b->cert_lines || st_issued_list(r, f, bundle_issued, b, err, sizeof(err))) {
		if (!b->err[0])
			snprintf(b->err, sizeof(b->err), "the issued certificates: %s",
				 err[0] ? err : "out of memory");
		goto cleanup;
	}
	t = open_memstream(&text, &len);
	if (!t)
		goto cleanup;
	for (size_t i = 0; i < json_array_size(b->cert_lines); i++) {
		json_dumpf(json_array_get(b->cert_lines, i), t,
			   JSON_COMPACT | JSON_SORT_KEYS);
		fputc('\n', t);
	}
	fclose(t);
	if (put_file(b, "certs.jsonl", text, len))
		goto cleanup;
	snprintf(path, sizeof(path), "%s/crl.pem", b->dir);
	if (hsm_session_open(h, &s) ||
	    st_crl_export(s, r, c->cfg->ca_label, 7, path, &count, err, sizeof(err))) {
		snprintf(b->err, sizeof(b->err), "the CRL: %s", err[0] ? err :
			 hsm_errmsg(h));
		goto cleanup;
	}
	if (hash_line(b, "certs.jsonl", m) || hash_line(b, "crl.pem", m))
		goto cleanup;
	for (size_t i = 0; i < json_array_size(b->cert_lines); i++) {
		const char *pem = json_string_value(json_object_get(
					json_array_get(b->cert_lines, i), "pem"));

		if (pem && hash_line(b, pem, m))
			goto cleanup;
	}
	rc = 0;
cleanup:
	free(text);
	hsm_session_close(s);
	return rc;
}

/* station records export --evidence DIR: only from a store that verifies;
 * every file listed in manifest.sha256, which the audit key signs. */
static int cmd_evidence(st_rec_cli *c)
{
	struct bundle b = { .dir = c->evidence, .idents = json_object() };
	st_checkpoint cp = { .body = NULL };
	char path[4096], *mtext = NULL;
	const uint8_t *der;
	size_t mlen = 0, dlen;
	rec_verify_result v;
	rec_store *r = NULL;
	st_trust *t = NULL;
	st_audit *a = NULL;
	hsm *h = NULL;
	rec_filter f;
	FILE *m = NULL;
	int code;

	if (filter_from(c, &f))
		return st_say(ST_EXIT_USAGE, "--result is PASS, UNFUSED, FAIL, QUARANTINE or RUNNING");
	memset(b.last_hash, '0', 64);   /* an empty chain's head */
	code = st_cli_open_store(c->cfg, &r);
	if (code)
		return code;
	code = c->login(c->ctx);
	h = code ? NULL : st_station_hsm(c->st);
	if (code)
		goto cleanup;
	/* audit certificates checked against the token's CAs, as verify does */
	code = st_cli_trust_open(c->ctx, NULL, false, &t);
	if (code)
		goto cleanup;
	if (rec_verify(r, st_trust_check_audit, t, &v)) {
		code = st_say(ST_EXIT_RECORDS, "export: the records do not verify, no "
			      "evidence written: %s", rec_errmsg(r));
		goto cleanup;
	}
	/* the key that signs the manifest is checked (and repaired, on
	 * record) as at any start */
	if (st_audit_attach(h, r, c->cfg, &a, b.err, sizeof(b.err))) {
		code = st_say(ST_EXIT_HSM, "export: %s", b.err);
		goto cleanup;
	}
	if (mkdir(b.dir, 0755) != 0) {
		code = st_say(ST_EXIT_USAGE, "export: cannot create %s (%s): give a new "
			      "directory", b.dir, strerror(errno));
		goto cleanup;
	}
	snprintf(path, sizeof(path), "%s/certs", b.dir);
	if (mkdir(path, 0755) == 0)
		snprintf(path, sizeof(path), "%s/certs/revoked", b.dir);
	if (mkdir(path, 0755) != 0) {
		code = st_say(ST_EXIT_RECORDS, "export: cannot create %s", path);
		goto cleanup;
	}
	snprintf(path, sizeof(path), "%s/units.jsonl", b.dir);
	b.units = fopen(path, "wx");
	snprintf(path, sizeof(path), "%s/events.jsonl", b.dir);
	b.events = fopen(path, "wx");
	m = open_memstream(&mtext, &mlen);
	b.manifest_list = m;
	der = st_audit_cert(a, &dlen);
	code = ST_EXIT_RECORDS;
	if (!b.units || !b.events || !m || !b.idents) {
		st_say(code, "export: cannot write in %s", b.dir);
		goto cleanup;
	}
	if (rec_list_units(r, &f, bundle_unit, &b) || bundle_idents(&b) ||
	    rec_list_events(r, 0, bundle_event, &b)) {
		st_say(code, "export: %s", b.err[0] ? b.err : rec_errmsg(r));
		goto cleanup;
	}
	if (fflush(b.units) || fsync(fileno(b.units)) || fflush(b.events) ||
	    fsync(fileno(b.events)) || ca_pem(c, &b, h) ||
	    der_to_pem(der, dlen, b.audit_pem, sizeof(b.audit_pem)) ||
	    put_file(&b, "audit.pem", b.audit_pem, strlen(b.audit_pem)) ||
	    st_checkpoint_make(r, a, c->cfg->station_id, b.last_seq, b.last_hash,
			       &cp, b.err, sizeof(b.err)) ||
	    put_file(&b, "checkpoint.json", cp.body, strlen(cp.body)) ||
	    put_file(&b, "checkpoint.sig", (const char *)cp.sig, cp.siglen) ||
	    hash_line(&b, "units.jsonl", m) || hash_line(&b, "events.jsonl", m) ||
	    hash_line(&b, "ca.pem", m) || hash_line(&b, "audit.pem", m) ||
	    hash_line(&b, "checkpoint.json", m) || hash_line(&b, "checkpoint.sig", m) ||
	    manifest_idents(&b) ||
	    bundle_certs(c, &b, r, h, &f, m)) {
		st_say(code, "export: %s", b.err[0] ? b.err : "cannot write the bundle");
		goto cleanup;
	}
	fclose(m);
	m = NULL;
	if (put_file(&b, "manifest.sha256", mtext, mlen) ||
	    sign_manifest(&b, a, mtext, mlen)) {
		st_say(code, "export: %s", b.err);
		goto cleanup;
	}
	code = 0;
	printf("evidence in %s: units.jsonl, events.jsonl (%lld events), %d device "
	       "certificate%s, certs.jsonl (%d issued, %d not a PASS identity in "
	       "certs/revoked/), crl.pem, ca.pem, audit.pem, checkpoint.json "
	       "(events 1..%lld, head %s), checkpoint.sig, manifest.sha256, "
	       "manifest.sig; check it as docs/evidence.md says\n", b.dir,
	       b.last_seq, b.certs, b.certs == 1 ? "" : "s", b.issued,
	       b.revoked_pems, cp.cp.seq, cp.cp.head_hash);
cleanup:
	st_checkpoint_free(&cp);
	if (m)
		fclose(m);
	free(mtext);
	if (b.units)
		fclose(b.units);
	if (b.events)
		fclose(b.events);
	json_decref(b.cert_lines);
	json_decref(b.idents);
	st_audit_detach(r, a);
	st_trust_free(t);
	rec_close(r);
	return code;
}

int st_cmd_records(st_rec_cli *c, int argc, char **argv)
{
	if (argc < 1)
		return st_say(ST_EXIT_USAGE, "records: say verify, list, show, export, "
			      "workorder or sync");
	if (!strcmp(argv[0], "verify") && argc == 1)
		return c->pg ? st_cmd_verify_pg(c) : cmd_verify(c);
	if (!strcmp(argv[0], "sync") && argc == 1)
		return st_cmd_sync(c);
	if (!strcmp(argv[0], "list") && argc == 1)
		return cmd_list(c, false);
	if (!strcmp(argv[0], "export") && argc == 1)
		return c->evidence ? cmd_evidence(c) : cmd_list(c, true);
	if (!strcmp(argv[0], "show") && argc == 2)
		return cmd_show(c, argv[1]);
	if (!strcmp(argv[0], "workorder"))
		return cmd_workorder(c, argc - 1, argv + 1);
	return st_say(ST_EXIT_USAGE, "records: unknown or incomplete command '%s' (try "
		      "'station help')", argv[0]);
}

/* station audit init: make the audit key, or finish what an interrupted
 * init or first start left in the token (recorded in the store as a signed
 * event), or re-certify an old audit certificate; with --out the
 * certificate is written (again) as PEM.  A complete key is refused
 * without --out: there is nothing to do. */
int st_cmd_audit(st_rec_cli *c, int argc, char **argv)
{
	const char *ca = c->cfg->ca_label ? c->cfg->ca_label : "issuing-ca";
	const char *label = st_audit_label();
	char err[1024] = "", repair[600] = "";
	st_rec_step step = 0;
	bool created;
	int code, rc;

	if (argc != 1 || strcmp(argv[0], "init"))
		return st_say(ST_EXIT_USAGE, "audit: say 'audit init [--out FILE]'");
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
		return st_say(ST_EXIT_RECORDS, "records: %s", err);
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

static int exec_records(struct cli *cli, int argc, char **argv)
{
	if (argc >= 1 && !strcmp(argv[0], "close-interrupted"))
		return st_cmd_close_interrupted(cli_role(cli), argc, argv);
	return st_cmd_records(cli_rec(cli), argc, argv);
}

static const struct cli_sub records_subs[] = {
	{ "verify", "check the chain, signatures, anchor and checkpoint (--pg: the central copy)" },
	{ "list", "the units on record" },
	{ "show", "one unit (by UID or record id)" },
	{ "export", "units as table, JSON lines or CSV; --evidence DIR: the evidence pack" },
	{ "workorder", "create ID --quota N | show ID" },
	{ "sync", "ship the records to the central copy (--once, --follow, --status)" },
	{ "close-interrupted", "close units no run will finish; revoke their certificates" },
	{ NULL, NULL },
};

/* Logs in only for what needs it (a verify without --ca-cert, a sync's
 * first local write): hence no CLI_NEED_HSM up front, but the login it may
 * ask for is the dispatcher's (cli_login). */
const struct cli_entry cli_cmd_records = {
	.name = "records",
	.usage = "records verify [--ca-cert FILE] [--anchor HASH] [--checkpoint FILE.json]\n"
		 "          | records list|export [--work-order ID]\n"
		 "          [--since DATE] [--until DATE] [--result R] [--uid UID]\n"
		 "          [--format table|jsonl|csv] | records export --evidence DIR\n"
		 "          | records show UID|ID | records workorder create ID [--quota N]\n"
		 "          | records workorder show ID\n"
		 "          | records sync [--once|--follow|--status] | records verify --pg\n"
		 "            (the central PostgreSQL copy: docs/sync.md)\n"
		 "          | records close-interrupted --supervisor NAME --reason TEXT [--before DATE]\n"
		 "            (close units no run will finish; revoke their certificates)",
	.help = "The local records: verify, query, export, work orders, sync.\n"
		"DATE: YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM].",
	.options = (const enum cli_opt[]){ O_WORK_ORDER, O_SINCE, O_UNTIL, O_RESULT,
		O_UID, O_FORMAT, O_EVIDENCE, O_CA_CERT, O_ANCHOR, O_CHECKPOINT,
		O_QUOTA, O_ONCE, O_FOLLOW, O_STATUS, O_PG, O_SUPERVISOR,
		O_SUPERVISOR_PASSWORD_FILE, O_REASON, O_BEFORE, O_NONE },
	.subs = records_subs,
	.needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RW | CLI_NEED_HSM,
	.exec = exec_records,
};

static int exec_audit(struct cli *cli, int argc, char **argv)
{
	return st_cmd_audit(cli_rec(cli), argc, argv);
}

static const struct cli_sub audit_subs[] = {
	{ "init", "make (or repair) the audit key and its certificate" },
	{ "show", "the audit key's certificate" },
	{ NULL, NULL },
};

const struct cli_entry cli_cmd_audit = {
	.name = "audit",
	.usage = "audit init [--out FILE]   (the audit key; made on first use too)",
	.help = "The station's audit key, which signs every record.",
	.options = (const enum cli_opt[]){ O_OUT, O_NONE },
	.subs = audit_subs,
	.needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RW | CLI_NEED_HSM,
	.exec = exec_audit,
};

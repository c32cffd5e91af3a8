/* records_cmds.c — what the records commands ask of the station
 * (station.h, "What the records commands ask of the station"): the work of
 * `records verify|list|show|export|workorder` and `audit init` on cfg's
 * records and the handle's login, so that the CLI only parses and prints. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
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
#include "station/firmware.h"
#include "station/roles.h"
#include "station/st_int.h"

/* Open st's records into *r as mode says; ST_OK, or rc with step STORE
 * and err. */
static int open_store(st_station *st, st_store_mode mode, rec_store **r,
		      st_rec_step *step, char *err, size_t errlen)
{
	int rc = st_store_open_as(st, mode, r, err, errlen);

	if (rc)
		*step = ST_REC_STEP_STORE;
	return rc;
}

/* ---- the records handle of `records verify|list|show|export` ---- */


int st_records_open(st_station *st, st_store_mode mode, st_records **out,
		    char *err, size_t errlen)
{
	st_rec_step step;
	st_records *h = calloc(1, sizeof(*h));
	int rc;

	*out = NULL;
	if (!h) {
		snprintf(err, errlen, "cannot open %s: %s",
			 st_station_config(st)->records_path, st_strerror(ST_E_NOMEM));
		return ST_E_NOMEM;
	}
	rc = open_store(st, mode, &h->r, &step, err, errlen);
	if (rc) {
		rec_close(h->r);
		free(h);
		return rc;
	}
	*out = h;
	return ST_OK;
}

void st_records_close(st_records *r)
{
	if (r) {
		rec_close(r->r);
		free(r);
	}
}

const char *st_records_errmsg(const st_records *r)
{
	return rec_errmsg(r->r);
}

/* The one word for an open record (the records' state column). */
static const char running_word[] = "RUNNING";

bool st_unit_filter_result(st_unit_filter *f, const char *word)
{
	f->by_result = true;
	f->running = !strcmp(word, running_word);
	return f->running || st_verdict_parse(word, &f->result);
}

rec_filter st_rec_filter_of(const st_unit_filter *f)
{
	if (!f)
		return (rec_filter){ .work_order = NULL };
	return (rec_filter){ .work_order = f->work_order, .since = f->since,
			     .until = f->until, .result = !f->by_result ? NULL :
			     f->running ? running_word : st_verdict_name(f->result),
			     .uid = f->uid, .unit_id = f->unit_id };
}

/* rec_unit_row and rec_event_row are st_unit_row and st_event_row field
 * for field; the walks hand them on. */
struct walk {
	st_records_unit_fn ufn;
	st_records_event_fn efn;
	void *ctx;
};

/* A records row as the engine hands it to front ends. */
st_unit_row st_unit_row_of(const rec_unit_row *u)
{
	return (st_unit_row){ .id = u->id, .slot = u->slot, .uid = u->uid,
		.state = u->state, .reason = u->reason, .work_order = u->work_order,
		.port = u->port, .station = u->station,
		.operator_name = u->operator_name, .profile = u->profile,
		.profile_digest = u->profile_digest, .cert_serial = u->cert_serial,
		.cert_sha256 = u->cert_sha256, .cert_pem = u->cert_pem,
		.pubkey = u->pubkey, .rot_hash = u->rot_hash,
		.fuse_readback = u->fuse_readback, .started_at = u->started_at,
		.finished_at = u->finished_at, .firmware = u->firmware,
		.attestation = u->attestation, .measurements = u->measurements,
		.flags = u->flags };
}

static int walk_unit(void *ctx, const rec_unit_row *u)
{
	struct walk *w = ctx;
	st_unit_row row = st_unit_row_of(u);

	return w->ufn(w->ctx, &row);
}

static int walk_event(void *ctx, const rec_event_row *e)
{
	struct walk *w = ctx;
	st_event_row row = { .seq = e->seq, .unit_id = e->unit_id, .at = e->at,
		.kind = e->kind, .uid = e->uid, .body = e->body, .hash = e->hash,
		.sig = e->sig };

	return w->efn(w->ctx, &row);
}

int st_records_units(st_records *r, const st_unit_filter *f, st_records_unit_fn fn,
		     void *ctx)
{
	struct walk w = { .ufn = fn, .ctx = ctx };
	rec_filter rf = st_rec_filter_of(f);

	return rec_list_units(r->r, f ? &rf : NULL, walk_unit, &w);
}

int st_records_events(st_records *r, int64_t unit_id, st_records_event_fn fn,
		      void *ctx)
{
	struct walk w = { .efn = fn, .ctx = ctx };

	return rec_list_events(r->r, unit_id, walk_event, &w);
}

int st_records_verify(st_records *r, st_trust *t, st_records_verified *v)
{
	rec_verify_result rv;
	int rc = rec_verify(r->r, st_trust_check_audit, t, &rv);

	*v = (st_records_verified){ .events = rv.events, .units = rv.units,
		.bad_seq = rv.bad_seq, .audit_certs = rv.audit_certs,
		.head_seq = rv.head_seq };
	return rc;
}

int st_records_checkpoint_check(st_records *r, const char *path, st_trust *t,
				st_checkpoint_info *out, bool *read_failed,
				char *err, size_t errlen)
{
	uint8_t *sig = NULL;
	char *body = NULL;
	size_t siglen = 0;
	rec_checkpoint cp;
	int rc;

	*read_failed = false;
	if (st_checkpoint_read(path, &body, &sig, &siglen, err, errlen)) {
		*read_failed = true;
		return ST_E_INVAL;
	}
	rc = rec_checkpoint_check(r->r, body, sig, siglen, st_trust_check_audit,
				  t, &cp);
	free(body);
	free(sig);
	if (rc == ST_OK) {
		memset(out, 0, sizeof(*out));
		snprintf(out->station, sizeof(out->station), "%s", cp.station);
		out->seq = cp.seq;
		snprintf(out->head_hash, sizeof(out->head_hash), "%s", cp.head_hash);
		snprintf(out->at, sizeof(out->at), "%s", cp.at);
	}
	return rc;
}

int st_records_cert_tally(st_records *r, st_cert_tally *t, char *err,
			  size_t errlen)
{
	return st_cert_tally_get(r->r, t, err, errlen);
}

/* A unit as a JSON object: the units.jsonl line of a bundle and the line
 * `records export` prints (cli/cmd-records.c). */
json_t *st_unit_json(const st_unit_row *u, bool with_pem)
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
	/* the code it left with, as the JSON the record holds */
	if (o && u->firmware)
		json_object_set_new(o, "firmware", json_loads(u->firmware, 0, NULL));
	if (o && u->attestation)
		json_object_set_new(o, "attestation", json_loads(u->attestation, 0, NULL));
	/* what it measured, and its flags (docs/integration.md) */
	if (o && u->measurements)
		json_object_set_new(o, "measurements", json_loads(u->measurements, 0, NULL));
	if (o && u->flags)
		json_object_set_new(o, "flags", json_loads(u->flags, 0, NULL));
	return o;
}

/* ---- records units --component: who left with a component ---- */

struct comp_query {
	const char *name, *version;     /* version NULL: any */
	json_t *sboms;                  /* sbom_sha256 -> component version */
	st_records_component_fn fn;
	void *ctx;
};

/* A `firmware` event: does its SBOM list the component? */
static int comp_event(void *ctx, const rec_event_row *e)
{
	struct comp_query *q = ctx;
	json_t *body, *data, *comps, *c;
	const char *sbom, *digest;
	size_t i;

	if (strcmp(e->kind, "firmware"))
		return 0;
	body = json_loads(e->body, 0, NULL);
	data = json_object_get(body, "data");
	sbom = json_string_value(json_object_get(data, "sbom"));
	digest = json_string_value(json_object_get(data, "sbom_sha256"));
	comps = sbom ? st_fw_components(sbom, strlen(sbom)) : NULL;
	json_array_foreach(comps, i, c) {
		const char *n = json_string_value(json_object_get(c, "name"));
		const char *v = json_string_value(json_object_get(c, "version"));

		if (digest && n && !strcmp(n, q->name) &&
		    (!q->version || (v && !strcmp(v, q->version)))) {
			json_object_set_new(q->sboms, digest, json_string(v ? v : ""));
			break;
		}
	}
	json_decref(comps);
	json_decref(body);
	return 0;
}

/* A unit: did it leave with an image whose SBOM is one of those? */
static int comp_unit(void *ctx, const rec_unit_row *u)
{
	struct comp_query *q = ctx;
	json_t *imgs, *im;
	size_t i;
	int rc = 0;

	if (!u->firmware || (strcmp(u->state, "PASS") && strcmp(u->state, "UNFUSED")))
		return 0;
	imgs = json_loads(u->firmware, 0, NULL);
	json_array_foreach(imgs, i, im) {
		const char *d = json_string_value(json_object_get(im, "sbom_sha256"));
		json_t *v = d ? json_object_get(q->sboms, d) : NULL;

		if (v) {
			st_unit_row row = st_unit_row_of(u);

			rc = q->fn(q->ctx, &row, json_string_value(json_object_get(im, "name")),
				   json_string_value(json_object_get(im, "version")),
				   json_string_value(v));
			break;
		}
	}
	json_decref(imgs);
	return rc;
}

int st_records_units_with_component(st_records *r, const char *component,
				    st_records_component_fn fn, void *ctx,
				    char *err, size_t errlen)
{
	char name[256];
	char *at;
	struct comp_query q = { .fn = fn, .ctx = ctx };
	int rc;

	snprintf(name, sizeof(name), "%s", component ? component : "");
	if ((at = strrchr(name, '@')) && at != name) {
		*at = '\0';
		q.version = at + 1;
	}
	q.name = name;
	if (!name[0] || (q.version && !q.version[0])) {
		snprintf(err, errlen, "--component is NAME or NAME@VERSION (as the "
			 "SBOM names it)");
		return ST_E_INVAL;
	}
	if (!(q.sboms = json_object()))
		return ST_E_NOMEM;
	rc = rec_list_events(r->r, 0, comp_event, &q);
	if (!rc && json_object_size(q.sboms))
		rc = rec_list_units(r->r, NULL, comp_unit, &q);
	if (rc && rc != ST_E_NOMEM)
		snprintf(err, errlen, "%s", rec_errmsg(r->r));
	json_decref(q.sboms);
	return rc;
}

const char *st_audit_label(void)
{
	return ST_AUDIT_LABEL;
}

int st_records_workorder_create(st_station *st, const st_config *cfg,
				const char *id, long quota, st_rec_step *step,
				char *err, size_t errlen)
{
	rec_store *r = NULL;
	st_audit *a = NULL;
	int rc = open_store(st, ST_STORE_CREATE, &r, step, err, errlen);

	if (rc)
		goto cleanup;
	/* its event is a signed link of the chain like any other */
	rc = st_audit_attach(st_station_hsm(st), r, cfg, &a, err, errlen);
	if (rc) {
		*step = ST_REC_STEP_AUDIT;
		goto cleanup;
	}
	rc = rec_workorder_create(r, id, quota);
	if (rc) {
		snprintf(err, errlen, "%s", rec_errmsg(r));
		*step = ST_REC_STEP_OP;
	}
cleanup:
	st_audit_detach(r, a);
	rec_close(r);
	return rc;
}

int st_records_workorder_get(st_station *st, const char *id,
			     st_workorder_info *out, st_rec_step *step,
			     char *err, size_t errlen)
{
	rec_store *r = NULL;
	rec_workorder wo;
	int rc = open_store(st, ST_STORE_READ, &r, step, err, errlen);

	if (!rc) {
		rc = rec_workorder_get(r, id, &wo);
		if (rc) {
			snprintf(err, errlen, "%s", rec_errmsg(r));
			*step = ST_REC_STEP_OP;
		} else {
			*out = (st_workorder_info){ .quota = wo.quota, .pass = wo.pass,
				.running = wo.running, .failed = wo.failed };
		}
	}
	rec_close(r);
	return rc;
}

int st_records_audit_init(st_station *st, const st_config *cfg,
			  const char *ca_label, const char *out, bool *created,
			  char *repaired, size_t replen, st_rec_step *step,
			  char *err, size_t errlen)
{
	const uint8_t *der;
	rec_store *r = NULL;
	st_audit *a = NULL;
	size_t len;
	bool fresh, wrote = false;
	int rc;

	*created = false;
	repaired[0] = '\0';
	rc = st_audit_open(st_station_hsm(st), ca_label, ST_AUDIT_LABEL,
			   cfg->station_id, &a, err, errlen);
	if (rc) {
		*step = ST_REC_STEP_AUDIT;
		goto cleanup;
	}
	if (st_audit_repaired(a))
		snprintf(repaired, replen, "%s", st_audit_repaired(a));
	*created = st_audit_created(a);
	fresh = *created || repaired[0];
	if (!fresh && !out) {
		*step = ST_REC_STEP_NOTHING;
		rc = ST_E_EXISTS;
		goto cleanup;
	}
	/* The file first and the store last: a new key is only kept once
	 * the store holds its certificate, so a failure at either step takes
	 * back the key and the file and the next attempt starts clean. */
	der = st_audit_cert(a, &len);
	rc = out ? st_cert_der_write_pem(out, der, len, err, errlen) : ST_OK;
	if (rc) {
		*step = ST_REC_STEP_OUT;
		goto cleanup;
	}
	wrote = out != NULL;
	if (fresh) {
		/* the store gets the new certificate and what was repaired */
		rc = open_store(st, ST_STORE_CREATE, &r, step, err, errlen);
		if (rc)
			goto cleanup;
		rc = st_audit_use(a, r, err, errlen);
		rec_set_signer(r, NULL, NULL, NULL, 0);
		if (rc) {
			*step = ST_REC_STEP_OP;
			goto cleanup;
		}
	}
cleanup:
	if (rc && *created) {
		st_audit_discard(a);
		if (wrote)
			unlink(out);
		*created = false;
	}
	st_audit_close(a);
	rec_close(r);
	return rc;
}

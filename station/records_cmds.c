/* records_cmds.c — what the records commands ask of the station
 * (station.h, "What the records commands ask of the station"): the work of
 * `records workorder` and `audit init` on cfg's records and the handle's
 * login, so that the CLI only parses and prints. */
#include <stdio.h>
#include <string.h>

#include "base.h"
#include "records/records.h"
#include "station/st_int.h"

/* Open cfg's records into *r; ST_OK, or rc with step STORE and err. */
static int open_store(const st_config *cfg, rec_store **r, st_rec_step *step,
		      char *err, size_t errlen)
{
	int rc = rec_open(cfg->records_path, r);

	if (rc) {
		snprintf(err, errlen, "cannot open %s: %s", cfg->records_path,
			 *r ? rec_errmsg(*r) : st_strerror(rc));
		*step = ST_REC_STEP_STORE;
	}
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
	int rc = open_store(cfg, &r, step, err, errlen);

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

int st_records_workorder_get(const st_config *cfg, const char *id,
			     st_workorder_info *out, st_rec_step *step,
			     char *err, size_t errlen)
{
	rec_store *r = NULL;
	rec_workorder wo;
	int rc = open_store(cfg, &r, step, err, errlen);

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
	bool fresh;
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
	if (fresh) {
		/* the store gets the new certificate and what was repaired */
		rc = open_store(cfg, &r, step, err, errlen);
		if (rc)
			goto cleanup;
		rc = st_audit_use(a, r, err, errlen);
		rec_set_signer(r, NULL, NULL, NULL, 0);
		if (rc) {
			*step = ST_REC_STEP_OP;
			goto cleanup;
		}
	}
	der = st_audit_cert(a, &len);
	rc = out ? st_cert_der_write_pem(out, der, len, err, errlen) : ST_OK;
	if (rc)
		*step = ST_REC_STEP_OUT;
cleanup:
	st_audit_close(a);
	rec_close(r);
	return rc;
}

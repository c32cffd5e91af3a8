/* issued.c — every certificate the CA issued, and its fate.
 *
 * A certificate is issued during one unit record: its `certificate` step
 * ("serial S sha256 H", then the PEM) is durable before the certificate
 * leaves for the device.  Its fate is one of: the identity of a PASS unit
 * (that record's cert_serial), revoked (a revocations row), or neither —
 * then its unit is still open (RUNNING: in work, or interrupted) or ended
 * without the revocation it should have had.  The engine, the resume logic
 * and `records close-interrupted` revoke through st_unit_revoke() only, so
 * the rule "a certificate whose unit does not end PASS is revoked" lives in
 * one place.  The run lock tells a RUNNING record in work from one whose
 * process is gone. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <unistd.h>

#include "base.h"
#include "station/st_int.h"
#include "station/roles.h"

/* ---- collecting ---- */

struct unitrow {
	int64_t id;
	char *uid, *state, *reason, *serial, *sha256, *pem, *started_at;
};

struct revrow {
	int64_t unit_id;
	char *serial, *reason, *by, *at;
	int crl_reason;
};

struct all {
	struct unitrow *u;
	size_t nu, capu;
	struct revrow *r;
	size_t nr, capr;
	char **pass_serials;  /* cert_serial of every PASS or UNFUSED unit not revoked */
	size_t np, capp;
};

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int grow(void **v, size_t *cap, size_t n, size_t size)
{
	void *p;
	size_t c;

	if (n < *cap)
		return 0;
	c = *cap ? *cap * 2 : 16;
	p = realloc(*v, c * size);
	if (!p)
		return -1;
	*v = p;
	*cap = c;
	return 0;
}

static int take_unit(void *ctx, const rec_unit_row *row)
{
	struct all *a = ctx;
	struct unitrow *u;

	if (grow((void **)&a->u, &a->capu, a->nu, sizeof(*a->u)))
		return ST_E_NOMEM;
	u = &a->u[a->nu++];
	*u = (struct unitrow){ .id = row->id, .uid = dup_or_null(row->uid),
			       .state = dup_or_null(row->state),
			       .reason = dup_or_null(row->reason),
			       .serial = dup_or_null(row->cert_serial),
			       .sha256 = dup_or_null(row->cert_sha256),
			       .pem = dup_or_null(row->cert_pem),
			       .started_at = dup_or_null(row->started_at) };
	return u->uid && u->state ? 0 : ST_E_NOMEM;
}

static int take_pass(void *ctx, const rec_unit_row *row)
{
	struct all *a = ctx;

	if (!row->cert_serial)
		return 0;
	if (grow((void **)&a->pass_serials, &a->capp, a->np, sizeof(char *)))
		return ST_E_NOMEM;
	a->pass_serials[a->np] = strdup(row->cert_serial);
	return a->pass_serials[a->np++] ? 0 : ST_E_NOMEM;
}

static int take_rev(void *ctx, const rec_revoked_row *row)
{
	struct all *a = ctx;
	struct revrow *r;

	if (grow((void **)&a->r, &a->capr, a->nr, sizeof(*a->r)))
		return ST_E_NOMEM;
	r = &a->r[a->nr++];
	*r = (struct revrow){ .unit_id = row->unit_id,
			      .serial = dup_or_null(row->cert_serial),
			      .reason = dup_or_null(row->reason),
			      .by = dup_or_null(row->by), .at = dup_or_null(row->at),
			      .crl_reason = row->crl_reason };
	return r->serial ? 0 : ST_E_NOMEM;
}

static void all_free(struct all *a)
{
	for (size_t i = 0; i < a->nu; i++) {
		struct unitrow *u = &a->u[i];

		free(u->uid);
		free(u->state);
		free(u->reason);
		free(u->serial);
		free(u->sha256);
		free(u->pem);
		free(u->started_at);
	}
	for (size_t i = 0; i < a->nr; i++) {
		free(a->r[i].serial);
		free(a->r[i].reason);
		free(a->r[i].by);
		free(a->r[i].at);
	}
	for (size_t i = 0; i < a->np; i++)
		free(a->pass_serials[i]);
	free(a->u);
	free(a->r);
	free(a->pass_serials);
	memset(a, 0, sizeof(*a));
}

/* The issuance step of one unit: serial, fingerprint and (since the PEM
 * is recorded with it) the certificate. */
struct issue_step {
	char serial[80], sha256[65];
	char *pem;
	bool found;
};

static int find_issue(void *ctx, const char *step, const char *outcome,
		      const char *detail)
{
	struct issue_step *is = ctx;
	const char *p;

	if (strcmp(step, "certificate") || strcmp(outcome, "ok") || !detail ||
	    sscanf(detail, "serial %79s sha256 %64s", is->serial, is->sha256) != 2)
		return 0;
	is->found = true;
	free(is->pem);
	is->pem = NULL;
	p = strstr(detail, "-----BEGIN CERTIFICATE-----");
	if (p && !(is->pem = strdup(p)))
		return ST_E_NOMEM;
	return 0;
}

static const struct revrow *revoked_serial(const struct all *a, const char *serial)
{
	for (size_t i = 0; i < a->nr; i++)
		if (!strcasecmp(a->r[i].serial, serial))
			return &a->r[i];
	return NULL;
}

static bool pass_serial(const struct all *a, const char *serial)
{
	for (size_t i = 0; i < a->np; i++)
		if (!strcasecmp(a->pass_serials[i], serial))
			return true;
	return false;
}

/* Units matching f, PASS and UNFUSED serials not revoked, revocations. */
static int gather(rec_store *rec, const rec_filter *f, struct all *a,
		  char *err, size_t errlen)
{
	rec_filter pf = { .result = st_verdict_name(ST_VERDICT_PASS) },
		   uf = { .result = st_verdict_name(ST_VERDICT_UNFUSED) };
	int rc;

	rc = rec_list_revoked(rec, take_rev, a);
	if (!rc)
		rc = rec_list_units(rec, f, take_unit, a);
	if (!rc)
		rc = rec_list_units(rec, &pf, take_pass, a);
	/* an UNFUSED unit's certificate is its identity too (docs/fuses.md) */
	if (!rc)
		rc = rec_list_units(rec, &uf, take_pass, a);
	if (rc)
		snprintf(err, errlen, "records: %s", rc == ST_E_NOMEM ?
			 "out of memory" : rec_errmsg(rec));
	/* a PASS whose certificate was revoked (re-provisioned) is not live */
	for (size_t i = 0; !rc && i < a->np; i++) {
		if (revoked_serial(a, a->pass_serials[i])) {
			free(a->pass_serials[i]);
			a->pass_serials[i--] = a->pass_serials[--a->np];
		}
	}
	return rc;
}

int st_issued_list(rec_store *rec, const rec_filter *f, st_issued_fn fn,
		   void *ctx, char *err, size_t errlen)
{
	struct all a = { 0 };
	int rc = gather(rec, f, &a, err, errlen);

	for (size_t i = 0; !rc && i < a.nu; i++) {
		const struct unitrow *u = &a.u[i];
		struct issue_step is = { .found = false };
		const struct revrow *rv;
		st_issued c;

		rc = rec_unit_steps(rec, u->id, find_issue, &is);
		if (rc) {
			snprintf(err, errlen, "records: %s", rc == ST_E_NOMEM ?
				 "out of memory" : rec_errmsg(rec));
			free(is.pem);
			break;
		}
		if (!is.found) {
			free(is.pem);
			continue;   /* nothing issued during this record */
		}
		rv = revoked_serial(&a, is.serial);
		c = (st_issued){ .unit_id = u->id, .uid = u->uid, .state = u->state,
				 .unit_reason = u->reason, .serial = is.serial,
				 .sha256 = is.sha256, .started_at = u->started_at,
				 .pem = is.pem ? is.pem : (u->serial &&
					!strcasecmp(u->serial, is.serial) ? u->pem : NULL),
				 .live = !rv && pass_serial(&a, is.serial) };
		if (rv) {
			c.revoked = true;
			c.crl_reason = rv->crl_reason;
			c.revoked_at = rv->at;
			c.revoke_reason = rv->reason;
			c.revoked_by = rv->by;
		}
		rc = fn(ctx, &c);
		free(is.pem);
	}
	all_free(&a);
	return rc;
}

/* ---- revoking ---- */

struct one {
	int64_t unit_id;        /* the record asked about */
	const char *serial;     /* NULL: the one issued in that record */
	int64_t issuer;         /* the record that issued it */
	char serial_found[80];
	bool live, revoked, found;
};

static int pick(void *ctx, const st_issued *c)
{
	struct one *o = ctx;

	if (o->serial ? strcasecmp(c->serial, o->serial) : c->unit_id != o->unit_id)
		return 0;
	snprintf(o->serial_found, sizeof(o->serial_found), "%s", c->serial);
	o->issuer = c->unit_id;
	o->found = true;
	o->live = c->live;
	o->revoked = c->revoked;
	return 0;
}

static int uid_of(void *ctx, const rec_unit_row *row)
{
	snprintf(ctx, 2 * 64 + 1, "%s", row->uid);
	return 0;
}

int st_unit_revoke(rec_store *rec, int64_t unit_id, const char *serial,
		   int crl_reason, const char *why, const char *by,
		   char *serial_out, size_t serial_len, char *err, size_t errlen)
{
	rec_filter f = { .unit_id = unit_id };
	struct one o = { .unit_id = unit_id, .serial = serial };
	char uid[2 * 64 + 1] = "";
	int rc;

	if (serial_out && serial_len)
		serial_out[0] = '\0';
	if (serial) {
		/* issued in another record of the same device (resumed) */
		rc = rec_list_units(rec, &f, uid_of, uid);
		if (rc || !uid[0]) {
			snprintf(err, errlen, "records: %s", rc ? rec_errmsg(rec) :
				 "no such unit record");
			return rc ? rc : ST_E_NOTFOUND;
		}
		f = (rec_filter){ .uid = uid };
	}
	rc = st_issued_list(rec, &f, pick, &o, err, errlen);
	if (rc)
		return rc;
	if (!o.found)
		return ST_E_NOTFOUND;   /* nothing issued: nothing to revoke */
	if (serial_out)
		snprintf(serial_out, serial_len, "%s", o.serial_found);
	if (o.revoked)
		return ST_E_EXISTS;
	if (o.live) {
		snprintf(err, errlen, "certificate %s of unit record %lld is the "
			 "identity of a PASS unit (resumed with it): not revoked",
			 o.serial_found, (long long)o.issuer);
		return ST_E_STATE;
	}
	rc = rec_revoke_issued(rec, o.issuer, o.serial_found, crl_reason, why, by);
	if (rc == ST_E_EXISTS)
		return rc;
	if (rc)
		snprintf(err, errlen, "cannot revoke certificate %s of unit record "
			 "%lld: %s", o.serial_found, (long long)o.issuer,
			 rec_errmsg(rec));
	return rc;
}

const char *st_crl_reason_name(int code)
{
	static const char *const names[] = {
		"unspecified", "keyCompromise", "cACompromise",
		"affiliationChanged", "superseded", "cessationOfOperation",
		"certificateHold", NULL, "removeFromCRL", "privilegeWithdrawn",
		"aACompromise",
	};

	return code >= 0 && code < (int)ST_ARRAY_SIZE(names) && names[code] ?
	       names[code] : "unknown";
}

/* ---- open units ---- */

static int count_one(void *ctx, const st_issued *c)
{
	st_cert_tally *t = ctx;

	t->issued++;
	if (c->revoked)
		t->revoked++;
	else if (c->live)
		t->live++;
	else if (!st_verdict_parse(c->state, &(st_verdict){ 0 }))
		t->open++;          /* RUNNING: no verdict yet */
	else
		t->unrevoked++;
	return 0;
}

int st_cert_tally_get(rec_store *rec, st_cert_tally *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	return st_issued_list(rec, NULL, count_one, t, err, errlen);
}

/* ---- the run lock ---- */

int st_run_lock(const char *records_path, bool exclusive, int *fd, char *err,
		size_t errlen)
{
	char path[4096];

	*fd = -1;
	if (!records_path) {
		snprintf(err, errlen, "no records store configured");
		return ST_E_CONFIG;
	}
	snprintf(path, sizeof(path), "%s.run-lock", records_path);
	*fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (*fd < 0) {
		snprintf(err, errlen, "cannot open the run lock %s: %s", path,
			 strerror(errno));
		return ST_E_IO;
	}
	if (flock(*fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB)) {
		int e = errno;

		close(*fd);
		*fd = -1;
		if (e == EWOULDBLOCK && exclusive) {
			snprintf(err, errlen, "a station run is using the records %s "
				 "right now (it holds %s): its RUNNING units are in "
				 "work, not interrupted; stop it first", records_path,
				 path);
			return ST_E_STATE;
		}
		if (e == EWOULDBLOCK) {
			snprintf(err, errlen, "'records close-interrupted' is closing "
				 "the interrupted units of %s right now: start the run "
				 "again when it is done", records_path);
			return ST_E_STATE;
		}
		snprintf(err, errlen, "cannot lock %s: %s", path, strerror(e));
		return ST_E_IO;
	}
	return ST_OK;
}

void st_run_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* ---- records close-interrupted ---- */

struct closing {
	const char *before;
	int64_t *ids;
	size_t n, cap;
};

static int take_running(void *ctx, const rec_unit_row *row)
{
	struct closing *c = ctx;

	if (c->before && row->started_at && strcmp(row->started_at, c->before) >= 0)
		return 0;
	if (grow((void **)&c->ids, &c->cap, c->n, sizeof(*c->ids)))
		return ST_E_NOMEM;
	c->ids[c->n++] = row->id;
	return 0;
}

struct sweep {
	int64_t *ids;
	size_t n, cap;
};

static int take_unrevoked(void *ctx, const st_issued *c)
{
	struct sweep *s = ctx;
	st_verdict v;

	/* RUNNING (no verdict), PASS and UNFUSED keep their certificate */
	if (c->revoked || c->live || !st_verdict_parse(c->state, &v) ||
	    st_verdict_good(v))
		return 0;
	if (grow((void **)&s->ids, &s->cap, s->n, sizeof(*s->ids)))
		return ST_E_NOMEM;
	s->ids[s->n++] = c->unit_id;
	return 0;
}

int st_close_interrupted(rec_store *rec, const char *before,
			 const char *supervisor, const char *reason,
			 st_close_result *out, char *err, size_t errlen)
{
	rec_filter f = { .result = "RUNNING" };
	struct closing c = { .before = before };
	struct sweep s = { 0 };
	char why[1024], serial[80], n[2][24];
	int rc;

	memset(out, 0, sizeof(*out));
	rc = rec_list_units(rec, &f, take_running, &c);
	if (rc) {
		snprintf(err, errlen, "records: %s", rc == ST_E_NOMEM ?
			 "out of memory" : rec_errmsg(rec));
		goto cleanup;
	}
	snprintf(why, sizeof(why), "interrupted: the station stopped during this "
		 "unit and it was not presented again; closed by supervisor %s: %s",
		 supervisor, reason);
	for (size_t i = 0; i < c.n; i++) {
		rec_unit_result e = { .result = st_verdict_name(ST_VERDICT_FAIL),
				      .reason = why };

		/* revoked first: a crash in between leaves it revoked and
		 * open, and the next close finds it so */
		rc = st_unit_revoke(rec, c.ids[i], NULL, REC_CRL_CESSATION, why, supervisor,
				    serial, sizeof(serial), err, errlen);
		if (rc == ST_OK)
			out->revoked++;
		else if (rc != ST_E_NOTFOUND && rc != ST_E_EXISTS && rc != ST_E_STATE)
			goto cleanup;
		rc = rec_unit_end(rec, c.ids[i], &e);
		if (rc) {
			snprintf(err, errlen, "cannot close unit record %lld: %s",
				 (long long)c.ids[i], rec_errmsg(rec));
			goto cleanup;
		}
		out->closed++;
	}
	/* Units closed before (an interrupted record closed when its device
	 * came back, a failed revocation) whose certificate is neither a PASS
	 * identity nor revoked. */
	rc = st_issued_list(rec, NULL, take_unrevoked, &s, err, errlen);
	if (rc)
		goto cleanup;
	snprintf(why, sizeof(why), "its unit did not end PASS and the certificate "
		 "was left unrevoked; revoked by supervisor %s: %s", supervisor,
		 reason);
	for (size_t i = 0; i < s.n; i++) {
		rc = st_unit_revoke(rec, s.ids[i], NULL, REC_CRL_CESSATION, why, supervisor,
				    serial, sizeof(serial), err, errlen);
		if (rc == ST_OK)
			out->revoked++;
		else if (rc != ST_E_NOTFOUND && rc != ST_E_EXISTS && rc != ST_E_STATE)
			goto cleanup;
	}
	snprintf(n[0], sizeof(n[0]), "%ld", out->closed);
	snprintf(n[1], sizeof(n[1]), "%ld", out->revoked);
	rc = rec_event(rec, "close_interrupted", NULL, "supervisor", supervisor,
		       "reason", reason, "before", before, "closed", n[0],
		       "revoked", n[1], NULL);
	if (rc)
		snprintf(err, errlen, "cannot record the close: %s", rec_errmsg(rec));
cleanup:
	free(c.ids);
	free(s.ids);
	return rc;
}

/* unit_mes.c — what a unit owes the plant's MES (docs/integration.md):
 * the route check before anything is done to it, and its measurements
 * (OpenHTF-style: name, value, unit, limits, outcome) with the profile's
 * limits.  The engine's side only: the MES itself is asked through the
 * run's st_route_hook (station/mes_route.c). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

/* The route check, after the unit's ID is read and before any key,
 * certificate, image or fuse: allowed (recorded), refused (the unit ends
 * FAIL with the MES's reason), unanswered (the profile's policy: stop as a
 * refusal, or go on flagged).  Non-zero when the unit stops here. */
int route_check(struct unit *u)
{
	const st_run *run = u->w->job->run;
	const st_route_hook *h = run->route;
	char why[400] = "";
	st_route_answer a;
	int rc;

	if (!h)
		return 0;
	a = h->check(h->ctx, u->info.uid_hex, run->work_order, u->w->slot, u->w->port,
		     why, sizeof(why));
	switch (a) {
	case ST_ROUTE_ALLOW:
		return step(u, ST_STEP_ROUTE, ST_OUTCOME_OK, "the MES allows the unit here%s%s",
			    why[0] ? ": " : "", why);
	case ST_ROUTE_REFUSE:
		/* the reason starts with the MES's words: the front ends show it */
		rc = fail(u, ST_STEP_ROUTE, ST_E_STATE, "refused by the MES: %s; nothing was "
			  "done to the unit (no key, certificate, image or fuse)", why);
		u->cause = ST_CAUSE_ROUTE_REFUSED;
		return rc;
	case ST_ROUTE_UNANSWERED:
		break;
	}
	if (h->stop_unanswered) {
		rc = fail(u, ST_STEP_ROUTE, ST_E_STATE, "the MES did not answer the route "
			  "check (%s); the profile says stop (route.on_error): nothing was "
			  "done to the unit; run it again when the MES answers", why);
		u->cause = ST_CAUSE_ROUTE_UNANSWERED;
		return rc;
	}
	u->route_unchecked = true;
	return step(u, ST_STEP_ROUTE, ST_OUTCOME_SKIP, "FLAGGED route-unchecked: the MES did "
		    "not answer the route check (%s); provisioned by the profile's "
		    "policy allow-and-flag", why);
}

/* Record measurement m of the unit (again: the newer value) and check it
 * against the profile's limits: outside them the unit fails, naming it.
 * Non-zero when it failed. */
int measure(struct unit *u, st_meas m, double value)
{
	struct unit_meas *e = NULL;

	for (int i = 0; i < u->nmeas; i++)
		if (u->meas[i].m == m)
			e = &u->meas[i];
	if (!e && u->nmeas < ST_MEAS_COUNT)
		e = &u->meas[u->nmeas++];
	if (!e)
		return 0;
	*e = (struct unit_meas){ .m = m, .value = value };
	e->limited = st_profile_meas_limits(u->w->job->prof, m, &e->low, &e->high);
	e->pass = !e->limited || (value >= e->low && value <= e->high);
	if (e->pass)
		return 0;
	fail(u, ST_STEP_MEASURE, ST_E_VERIFY, "measurement %s = %g %s is outside its "
	     "limits [%g, %g] (the profile's measurements.%s); the unit is not passed",
	     st_meas_name(m), value, st_meas_unit(m), e->low, e->high, st_meas_name(m));
	u->cause = ST_CAUSE_MEASUREMENT;
	return ST_E_VERIFY;
}

/* Milliseconds since t0 (unit_us), less the records' writes since rec0. */
double ms_since(const struct unit *u, int64_t t0, int64_t rec0)
{
	int64_t us = unit_us() - t0 - (u->us_rec - rec0);

	return us > 0 ? (double)((us + 500) / 1000) : 0;   /* whole ms */
}

/* The programming conditions, when the profile sets limits on them: one
 * reading before the device key (the fuse run reads them again before each
 * burn).  A programmer that cannot report them fails the unit: a limit
 * that cannot be checked is not met. */
int measure_conditions(struct unit *u)
{
	const st_profile *p = u->w->job->prof;
	double lo, hi;
	bool v = st_profile_meas_limits(p, ST_MEAS_VPP_MV, &lo, &hi);
	bool t = st_profile_meas_limits(p, ST_MEAS_TEMP_C, &lo, &hi);
	drv_conditions c;
	int rc;

	if (!v && !t)
		return 0;
	rc = drv_get_conditions(u->dev, &c);
	if (rc) {
		rc = fail(u, ST_STEP_MEASURE, rc, "the profile sets limits on %s%s%s but the "
			  "programmer cannot measure the programming conditions (%s); "
			  "nothing was done to the unit", v ? "vpp_mv" : "",
			  v && t ? " and " : "", t ? "temp_c" : "", drv_errmsg(u->dev));
		if (!st_err_is_link(rc))
			u->cause = ST_CAUSE_MEASUREMENT;
		return rc;
	}
	if (measure(u, ST_MEAS_VPP_MV, c.vpp_mv))
		return ST_E_VERIFY;
	return measure(u, ST_MEAS_TEMP_C, c.temp_dc / 10.0);
}

/* The link's re-sends during the unit so far. */
static double retries_of(struct unit *u)
{
	drv_linkstat now;

	drv_link_stats(u->dev, &now);
	return (double)(now.retries - u->link0.retries);
}

/* Before the verdict: the link's re-sends during the unit, checked. */
int measure_link(struct unit *u)
{
	return measure(u, ST_MEAS_LINK_RETRIES, retries_of(u));
}

/* A value as JSON: an integer when it is one. */
static json_t *num(double v)
{
	return v > -1e15 && v < 1e15 && (double)(long long)v == v ?
	       json_integer((json_int_t)v) : json_real(v);
}

/* The unit's measurements as its record keeps them (JSON array text in
 * u->meas_json), NULL when it has none.  A unit that ended before the
 * check of its link still records the re-sends (not checked: it failed
 * already). */
const char *unit_meas_text(struct unit *u)
{
	json_t *a = json_array();
	char *text;
	bool link = false;

	for (int i = 0; i < u->nmeas; i++)
		link |= u->meas[i].m == ST_MEAS_LINK_RETRIES;
	if (!link && u->nmeas < ST_MEAS_COUNT && u->dev) {
		struct unit_meas *e = &u->meas[u->nmeas++];

		*e = (struct unit_meas){ .m = ST_MEAS_LINK_RETRIES, .value = retries_of(u) };
		e->limited = st_profile_meas_limits(u->w->job->prof, e->m, &e->low, &e->high);
		e->pass = !e->limited || (e->value >= e->low && e->value <= e->high);
	}
	for (int i = 0; a && i < u->nmeas; i++) {
		const struct unit_meas *e = &u->meas[i];
		json_t *o = json_pack("{s:s, s:o, s:s, s:o, s:o, s:s}",
				      "name", st_meas_name(e->m), "value", num(e->value),
				      "unit", st_meas_unit(e->m),
				      "low", e->limited ? num(e->low) : json_null(),
				      "high", e->limited ? num(e->high) : json_null(),
				      "outcome", !e->limited ? "unset" : e->pass ? "pass" : "fail");

		if (!o || json_array_append_new(a, o)) {
			json_decref(a);
			a = NULL;
		}
	}
	if (!a || !json_array_size(a)) {
		json_decref(a);
		return NULL;
	}
	text = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(12));
	json_decref(a);
	if (!text || strlen(text) >= sizeof(u->meas_json)) {
		free(text);
		return NULL;
	}
	snprintf(u->meas_json, sizeof(u->meas_json), "%s", text);
	free(text);
	return u->meas_json;
}

/* The unit's flags as its record keeps them (JSON array of words), NULL
 * when it has none. */
const char *unit_flags_text(const struct unit *u)
{
	return u->route_unchecked ? "[\"route-unchecked\"]" : NULL;
}

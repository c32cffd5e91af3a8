/* words.c — the one table between each value the engine reports (a
 * verdict, a step, an outcome, what the fuse run did) and its word: what
 * the records store and the front ends print. */
#include <string.h>

#include "base.h"
#include "station/station.h"

static const char *const verdicts[] = {
	[ST_VERDICT_FAIL] = "FAIL",
	[ST_VERDICT_PASS] = "PASS",
	[ST_VERDICT_UNFUSED] = "UNFUSED",
	[ST_VERDICT_QUARANTINE] = "QUARANTINE",
};

/* In st_step order: st_steps() hands out the first ST_STEP_SHOWN. */
static const char *const steps[ST_STEP_COUNT] = {
	[ST_STEP_IDENTIFY] = "identify",
	[ST_STEP_KEYGEN] = "keygen",
	[ST_STEP_POSSESSION] = "possession",
	[ST_STEP_CERTIFICATE] = "certificate",
	[ST_STEP_WRITE_CERT] = "write-cert",
	[ST_STEP_FUSES] = "fuses",
	[ST_STEP_FUSE_CHECK] = "fuse-check",
	[ST_STEP_RESUME] = "resume",
	[ST_STEP_REVOKE] = "revoke",
	[ST_STEP_REPROVISION] = "reprovision",
	[ST_STEP_QUARANTINE] = "quarantine",
	[ST_STEP_HISTORY] = "history",
	[ST_STEP_PLUG] = "plug",
	[ST_STEP_FW_CHECK] = "firmware-check",
	[ST_STEP_FIRMWARE] = "firmware",
	[ST_STEP_ATTEST] = "attest",
	[ST_STEP_FUSE] = "fuse",
	[ST_STEP_FUSE_INTENT] = "fuse-intent",
	[ST_STEP_FUSE_RESUME] = "fuse-resume",
	[ST_STEP_LIFECYCLE] = "lifecycle",
	[ST_STEP_LIFECYCLE_INTENT] = "lifecycle-intent",
	[ST_STEP_QUOTA] = "quota",
	[ST_STEP_QUOTA_OFFLINE] = "quota-offline",
	[ST_STEP_ROUTE] = "route",
	[ST_STEP_MEASURE] = "measure",
};

static const char *const outcomes[] = {
	[ST_OUTCOME_OK] = "ok",
	[ST_OUTCOME_FAIL] = "fail",
	[ST_OUTCOME_SKIP] = "skip",
	[ST_OUTCOME_WAIT] = "wait",
};

static const char *const fuses[] = {
	[ST_FUSES_NONE] = NULL,
	[ST_FUSES_NOT_ARMED] = "not-armed",
	[ST_FUSES_BURNED] = "burned",
	[ST_FUSES_ALREADY] = "already",
	[ST_FUSES_CHECKED] = "checked",
	[ST_FUSES_PLANNED] = "planned",
	[ST_FUSES_CONFLICT] = "conflict",
	[ST_FUSES_MISMATCH] = "mismatch",
	[ST_FUSES_BURN_FAILED] = "burn-failed",
	[ST_FUSES_CONDITIONS] = "conditions",
	[ST_FUSES_INTERRUPTED] = "interrupted",
};

/* The words of st_cause in machine-readable output (provision --json). */
static const char *const causes[] = {
	[ST_CAUSE_NONE] = "none",
	[ST_CAUSE_DEVICE] = "device",
	[ST_CAUSE_GARBLED] = "garbled",
	[ST_CAUSE_SILENT] = "silent",
	[ST_CAUSE_LINK] = "link",
	[ST_CAUSE_UNPLUGGED] = "unplugged",
	[ST_CAUSE_INTERRUPTED] = "interrupted",
	[ST_CAUSE_FUSE_CONFLICT] = "fuse-conflict",
	[ST_CAUSE_CLONE] = "clone",
	[ST_CAUSE_NO_ID] = "no-id",
	[ST_CAUSE_LOCKED] = "locked",
	[ST_CAUSE_QUOTA_FULL] = "quota-full",
	[ST_CAUSE_WORK_ORDER] = "work-order",
	[ST_CAUSE_HSM] = "hsm",
	[ST_CAUSE_RECORDS] = "records",
	[ST_CAUSE_ALREADY_PASS] = "already-pass",
	[ST_CAUSE_ALREADY_UNFUSED] = "already-unfused",
	[ST_CAUSE_QUARANTINED] = "quarantined",
	[ST_CAUSE_OPERATOR] = "operator",
	[ST_CAUSE_ROUTE_REFUSED] = "route-refused",
	[ST_CAUSE_ROUTE_UNANSWERED] = "route-unanswered",
	[ST_CAUSE_MEASUREMENT] = "measurement",
};

/* Measurements: the profile's and the records' names, and units. */
static const struct { const char *name, *unit; } meas[ST_MEAS_COUNT] = {
	[ST_MEAS_VPP_MV] = { "vpp_mv", "mV" },
	[ST_MEAS_TEMP_C] = { "temp_c", "C" },
	[ST_MEAS_KEYGEN_MS] = { "keygen_ms", "ms" },
	[ST_MEAS_IMAGE_WRITE_MS] = { "image_write_ms", "ms" },
	[ST_MEAS_ATTEST_MS] = { "attest_ms", "ms" },
	[ST_MEAS_LINK_RETRIES] = { "link_retries", "count" },
};

const char *st_meas_name(st_meas m)
{
	return (unsigned)m < ST_MEAS_COUNT ? meas[m].name : "?";
}

const char *st_meas_unit(st_meas m)
{
	return (unsigned)m < ST_MEAS_COUNT ? meas[m].unit : "?";
}

const char *st_cause_name(st_cause c)
{
	return (unsigned)c < ST_ARRAY_SIZE(causes) && causes[c] ? causes[c] : "?";
}

const char *st_verdict_name(st_verdict v)
{
	return (unsigned)v < ST_ARRAY_SIZE(verdicts) ? verdicts[v] : "?";
}

bool st_verdict_parse(const char *state, st_verdict *v)
{
	for (size_t i = 0; state && i < ST_ARRAY_SIZE(verdicts); i++)
		if (!strcmp(state, verdicts[i])) {
			*v = (st_verdict)i;
			return true;
		}
	return false;
}

bool st_verdict_good(st_verdict v)
{
	return v == ST_VERDICT_PASS || v == ST_VERDICT_UNFUSED;
}

const char *st_step_name(st_step s)
{
	return s >= 0 && s < ST_STEP_COUNT ? steps[s] : "?";
}

bool st_step_parse(const char *name, st_step *s)
{
	for (int i = 0; name && i < ST_STEP_COUNT; i++)
		if (!strcmp(name, steps[i])) {
			*s = (st_step)i;
			return true;
		}
	return false;
}

const char *const *st_steps(int *n)
{
	*n = ST_STEP_SHOWN;
	return steps;
}

const char *st_outcome_name(st_outcome o)
{
	return (unsigned)o < ST_ARRAY_SIZE(outcomes) ? outcomes[o] : "?";
}

const char *st_fuses_name(st_fuses f)
{
	return (unsigned)f < ST_ARRAY_SIZE(fuses) ? fuses[f] : NULL;
}

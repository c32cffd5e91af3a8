/* verdict.c — the one table between a verdict and its word. */
#include <string.h>

#include "base.h"
#include "station/verdict.h"

static const char *const names[] = {
	[ST_VERDICT_FAIL] = "FAIL",
	[ST_VERDICT_PASS] = "PASS",
	[ST_VERDICT_UNFUSED] = "UNFUSED",
	[ST_VERDICT_QUARANTINE] = "QUARANTINE",
};

const char *st_verdict_name(st_verdict v)
{
	return names[v];
}

bool st_verdict_parse(const char *state, st_verdict *v)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(names); i++)
		if (!strcmp(state, names[i])) {
			*v = (st_verdict)i;
			return true;
		}
	return false;
}

bool st_verdict_good(st_verdict v)
{
	return v == ST_VERDICT_PASS || v == ST_VERDICT_UNFUSED;
}

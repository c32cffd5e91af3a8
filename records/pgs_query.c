/* pgs_query.c — questions asked of the central copy: which units of any
 * station left the line with a component (docs/firmware.md).  Read only,
 * from the shipped events (the `firmware` events' SBOMs and the unit_end
 * events' firmware record), which `records verify --pg` checks. */
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "records/pgs_int.h"

int pgs_units_with_component(pgs *p, const char *name, const char *version,
			     pgs_component_fn fn, void *ctx)
{
	PGresult *res = NULL;
	int err;

	if (!p || !name || !fn)
		return ST_E_INVAL;
	err = pgs_run(p, &res, "find the units with a component",
		"WITH sboms AS ("
		" SELECT DISTINCT e.body::jsonb #>> '{data,sbom_sha256}' AS d,"
		"  c ->> 'version' AS v"
		" FROM events e, jsonb_array_elements(((e.body::jsonb #>> "
		"  '{data,sbom}')::jsonb) -> 'components') c"
		" WHERE e.kind = 'firmware' AND c ->> 'name' = $1"
		"  AND ($2::text IS NULL OR c ->> 'version' = $2))"
		" SELECT u.station_id, u.unit_id::text, u.uid, u.cert_serial,"
		"  u.work_order, u.finished_at, u.state, f ->> 'name',"
		"  f ->> 'version', s.v"
		" FROM units u JOIN events e ON e.station_id = u.station_id"
		"  AND e.unit_id = u.unit_id AND e.kind = 'unit_end',"
		"  jsonb_array_elements(coalesce((e.body::jsonb #>> "
		"   '{data,firmware}')::jsonb, '[]'::jsonb)) f"
		" JOIN sboms s ON s.d = f ->> 'sbom_sha256'"
		" WHERE u.state IN ('PASS', 'UNFUSED')"
		" ORDER BY u.finished_at, u.station_id, u.unit_id",
		2, name, version);
	if (err)
		return err;
	for (int i = 0; i < PQntuples(res) && !err; i++) {
		const char *v[10];

		for (int k = 0; k < 10; k++)
			v[k] = pgs_val(res, i, k);
		err = fn(ctx, v);
	}
	PQclear(res);
	return err;
}

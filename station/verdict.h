/* verdict.h — a unit's verdict as a value (inside station/).  The word
 * for it (st_verdict_name) is what the unit records' state and the
 * events carry; only there is it a string. */
#ifndef ST_VERDICT_H
#define ST_VERDICT_H

#include <stdbool.h>

typedef enum st_verdict {
	ST_VERDICT_FAIL,        /* also a unit that reached no verdict (zero) */
	ST_VERDICT_PASS,
	ST_VERDICT_UNFUSED,     /* identity issued and proven, fuses not burned */
	ST_VERDICT_QUARANTINE,
} st_verdict;

/* The word for v in the records and the events. */
const char *st_verdict_name(st_verdict v);

/* The verdict a unit record's state names (into *v); false when it names
 * none (RUNNING: the record is open or was interrupted). */
bool st_verdict_parse(const char *state, st_verdict *v);

/* Does a unit with verdict v keep its identity (PASS, UNFUSED)? */
bool st_verdict_good(st_verdict v);

#endif

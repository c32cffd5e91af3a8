/* outbox.h — what a connector to the plant's MES reads of the local store
 * (docs/integration.md): the units that ended, in the order their
 * unit_end events were committed.  The chain's seq of a unit_end event is
 * the connector's cursor: it only grows, so a unit that ended after the
 * cursor was saved is never skipped, whatever order the slots finished. */
#ifndef ST_REC_OUTBOX_H
#define ST_REC_OUTBOX_H

#include <stdint.h>

#include "records/records.h"

/* One ended unit: the seq of its unit_end event and its unit record id. */
typedef struct rec_outbox_item {
	long long seq;
	int64_t unit_id;
} rec_outbox_item;

/* The ended units whose unit_end event is above after, oldest first, at
 * most max of them, into out (cap entries); *n how many.  ST_E_DB with
 * rec_errmsg. */
int rec_outbox_list(rec_store *r, long long after, int max,
		    rec_outbox_item *out, int *n);

/* How many units ended above after, and the seq of the last unit_end
 * event (0: none).  Either may be NULL. */
int rec_outbox_lag(rec_store *r, long long after, long long *pending,
		   long long *last);

#endif

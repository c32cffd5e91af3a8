/* checkpoint.h — signed checkpoints of the audit chain's head that leave
 * the store (docs/records.md, "Checkpoints"): made at the end of every
 * provisioning run and in every evidence bundle, kept in the checkpoint
 * directory, shipped by sync; `records verify --checkpoint FILE` checks a
 * kept one against the store.  The format is records/'s
 * (rec_checkpoint_body); this module signs it with the audit key and
 * reads and writes the files. */
#ifndef ST_CHECKPOINT_H
#define ST_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "records/records.h"
#include "station/st_int.h"

typedef struct st_checkpoint {
	rec_checkpoint cp;      /* what it says */
	char *body;             /* the signed text (ends in a newline) */
	uint8_t sig[REC_SIG_MAX]; /* by the audit key, as openssl verifies it */
	size_t siglen;
	char path[4096];        /* the .json written ("" when none) */
} st_checkpoint;

/* The checkpoint directory: records.checkpoint_dir, else the records
 * path with ".checkpoints" appended. */
void st_checkpoint_dir(const st_config *cfg, char *buf, size_t len);

/* Sign a checkpoint of station's chain at seq with hash (seq < 0: the
 * store's head now) with the audit key a.  ST_OK, or an error with err. */
int st_checkpoint_make(rec_store *rec, st_audit *a, const char *station,
		       long long seq, const char *hash, st_checkpoint *out,
		       char *err, size_t errlen);

/* Write c as dir/name.json and dir/name.sig (name NULL:
 * "<station>-<seq>-<first 16 hex of the head hash>", so a chain rewritten
 * after a cut never replaces the checkpoint of the one it replaced),
 * fsynced, and the audit certificate beside them as
 * dir/audit-<its sha256>.pem (kept when there); dir is created when
 * missing.  Sets c->path. */
int st_checkpoint_write(st_checkpoint *c, st_audit *a, const char *dir,
			const char *name, char *err, size_t errlen);

/* Read the checkpoint at path (the .json) and its signature (the same
 * name ending in .sig).  ST_OK (free body and sig), or an error with err. */
int st_checkpoint_read(const char *path, char **body, uint8_t **sig,
		       size_t *siglen, char *err, size_t errlen);

void st_checkpoint_free(st_checkpoint *c);

#endif

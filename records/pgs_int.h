/* pgs_int.h — internals shared by the files of the PostgreSQL sync
 * (pgsync.c, pgs_ship.c, pgs_quota.c, pgs_verify.c).  Not a public header. */
#ifndef ST_PGS_INT_H
#define ST_PGS_INT_H

#include <libpq-fe.h>

#include "records/pgsync.h"

#define PGS_MSG_MAX	768

struct pgs {
	PGconn *conn;
	char station[128];
	int batch;
	char msg[PGS_MSG_MAX];
};

/* Keep a readable cause in p and return err. */
int pgs_fail(pgs *p, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Run sql with n text parameters (NULL: SQL NULL).  *res (may be NULL)
 * gets the result on success (PQclear it); on failure it is cleared and
 * the cause kept (ST_E_IO when the connection is lost, else ST_E_DB). */
int pgs_run(pgs *p, PGresult **res, const char *what, const char *sql,
	    int n, ...);
/* Roll back whatever is open (harmless when nothing is). */
void pgs_rollback(pgs *p);
/* A value of the result, NULL for SQL NULL. */
const char *pgs_val(PGresult *r, int row, int col);

#endif

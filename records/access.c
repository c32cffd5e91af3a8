/* access.c — what stands between the station and a store's file: why it
 * cannot be opened, in the words an operator acts on (checked with the
 * file system before SQLite's "unable to open database file" hides the
 * cause), and the read-only open of a store that may sit in a directory
 * nobody can write (docs/records.md, "Who creates the store"). */
#include <errno.h>
#include <libgen.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"
#include "rec_int.h"

/* path as a file: URI (RFC 3986 percent-encoding) with query q. */
static int uri_of(const char *path, const char *q, char *out, size_t cap)
{
	size_t n = (size_t)snprintf(out, cap, "file:");

	for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
		if (n + 4 >= cap)
			return -1;
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("/._-~", *p))
			out[n++] = (char)*p;
		else
			n += (size_t)snprintf(out + n, cap - n, "%%%02X", *p);
	}
	return snprintf(out + n, cap - n, "?%s", q) >= (int)(cap - n) ? -1 : 0;
}

/* The folder of path (for messages and the access checks). */
void rec_dir_of(const char *path, char *out, size_t cap)
{
	char *copy = strdup(path);

	snprintf(out, cap, "%s", copy ? dirname(copy) : ".");
	free(copy);
}

/* Why path cannot be opened as mode asks, in the words an operator acts
 * on, before SQLite's own "unable to open database file" hides it: 0 when
 * nothing stands in the way that the file system can tell. */
int rec_open_diagnose(rec_store *r, const char *path, rec_mode mode, bool exists)
{
	char dir[4096];
	bool dir_w;

	rec_dir_of(path, dir, sizeof(dir));
	if (!exists) {
		if (mode != REC_OPEN_CREATE)
			return rec_fail(r, ST_E_NOTFOUND, "%s does not exist", path);
		/* a missing directory: SQLite's own refusal follows, with the
		 * cause named (rec_open_mode) */
		if (access(dir, W_OK | X_OK) != 0 && errno != ENOENT)
			return rec_fail(r, ST_E_IO, "cannot create %s: the directory %s "
					"is %s (%s)", path, dir, errno == EROFS ?
					"on a read-only file system" : "not writable",
					strerror(errno));
		return 0;
	}
	if (access(path, R_OK) != 0)
		return rec_fail(r, ST_E_IO, "cannot read %s: %s", path, strerror(errno));
	if (mode == REC_OPEN_READ)
		return 0;
	if (access(path, W_OK) != 0)
		return rec_fail(r, ST_E_IO, "%s is read-only for this station (%s): "
				"a writing command needs the store writable", path,
				strerror(errno));
	dir_w = access(dir, W_OK | X_OK) == 0;
	if (!dir_w)
		return rec_fail(r, ST_E_IO, "cannot write beside %s: the directory %s "
				"is %s (%s); the store's journal files (-wal, -shm) "
				"live there", path, dir, errno == EROFS ?
				"on a read-only file system" : "not writable",
				strerror(errno));
	return 0;
}

/* Open path read-only.  A WAL store in a directory this process cannot
 * write, with no journal left beside it (-wal), is opened immutable: no
 * one can be writing it, and SQLite otherwise wants to make its -shm. */
int rec_open_readonly(rec_store *r, const char *path)
{
	char uri[8400], wal[4200], dir[4096];
	struct stat st;
	int rc;

	if (uri_of(path, "mode=ro", uri, sizeof(uri)))
		return rec_fail(r, ST_E_INVAL, "records path too long: %s", path);
	rc = sqlite3_open_v2(uri, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI |
			     SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK)
		return ST_E_IO;
	if (sqlite3_exec(r->db, "SELECT count(*) FROM sqlite_master", NULL, NULL,
			 NULL) == SQLITE_OK)
		return ST_OK;
	rec_dir_of(path, dir, sizeof(dir));
	snprintf(wal, sizeof(wal), "%s-wal", path);
	if (access(dir, W_OK) == 0 || (stat(wal, &st) == 0 && st.st_size > 0))
		return ST_OK;   /* setup() says why */
	sqlite3_close_v2(r->db);
	r->db = NULL;
	if (uri_of(path, "mode=ro&immutable=1", uri, sizeof(uri)))
		return rec_fail(r, ST_E_INVAL, "records path too long: %s", path);
	return sqlite3_open_v2(uri, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI |
			       SQLITE_OPEN_FULLMUTEX, NULL) == SQLITE_OK ? ST_OK :
	       ST_E_IO;
}

/* test_groupcommit.c — records/ group commit: slot workers writing at the
 * same time share transactions (fewer commits than writes) while every
 * write that returned ST_OK is on disk exactly once and every write that
 * failed is not there at all; the audit chain and its signatures (one
 * per commit) still verify; a lone writer is never held back waiting for batch-mates.
 * The audit key is a software P-256 key (the HSM signer is exercised
 * through the station binary in test_evidence.c). */
#include <criterion/criterion.h>

#include <errno.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base.h"
#include "records/records.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_softsign.h"

#define NTHREADS	8
#define NUNITS		20		/* per thread */
#define NTICKS		60		/* events per thread, full-disk test */

static char tmpdir[64];
static char dbpath[128];
static fx_softsign ss;    /* the software audit key */

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/st-gc-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
	snprintf(dbpath, sizeof(dbpath), "%s/records.db", tmpdir);
	fx_softsign_make(&ss, "gc audit", 9);
}

static void teardown(void)
{
	fx_softsign_free(&ss);
	fx_rmtree(tmpdir);
}

TestSuite(groupcommit, .init = setup, .fini = teardown, .timeout = 180);

static rec_store *open_signed(void)
{
	rec_store *r = NULL;

	cr_assert_eq(rec_open(dbpath, &r), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_set_signer(r, fx_soft_sign, ss.key, ss.cert_der, (size_t)ss.cert_len),
		     ST_OK, "%s", rec_errmsg(r));
	return r;
}

static sqlite3 *ext_open(void)
{
	sqlite3 *db = NULL;

	cr_assert_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL),
		     SQLITE_OK);
	return db;
}

static long long q_int(sqlite3 *db, const char *sql, const char *arg)
{
	sqlite3_stmt *s = NULL;
	long long v = -1;

	cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK,
		     "%s: %s", sql, sqlite3_errmsg(db));
	if (arg)
		sqlite3_bind_text(s, 1, arg, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

struct worker {
	rec_store *r;
	pthread_barrier_t *go;
	int n;
	int failures;           /* calls that should have worked but did not */
	int refused;            /* calls refused as they should be */
	char first_err[300];
	int rc[NTICKS];         /* full-disk test: each tick's result */
	rec_durability d;       /* how the steps are written */
};

/* One slot: units with steps, plus a step on a finished unit (refused,
 * inside whatever batch is open: it must roll back only itself). */
static void *slot_thread(void *arg)
{
	static const char *const steps[] = { "identify", "keygen", "cert" };
	struct worker *w = arg;
	char uid[32], serial[32], detail[64];

	pthread_barrier_wait(w->go);
	for (int i = 0; i < NUNITS; i++) {
		rec_unit_start u = { .uid = uid, .slot = w->n + 1 };
		rec_unit_result e = { .result = "PASS", .cert_serial = serial };
		int64_t id = 0;
		int rc;

		snprintf(uid, sizeof(uid), "g%d-%03d", w->n, i);
		snprintf(serial, sizeof(serial), "%02x%04x", w->n, i);
		rc = rec_unit_begin(w->r, &u, &id);
		for (int k = 0; !rc && k < 3; k++) {
			snprintf(detail, sizeof(detail), "%s #%d", uid, k);
			rc = rec_step_ex(w->r, id, steps[k], "ok", detail, w->d);
		}
		if (!rc)
			rc = rec_unit_end(w->r, id, &e);
		if (!rc) {
			if (rec_step(w->r, id, "late", "ok", uid) == ST_E_STATE)
				w->refused++;
			else
				rc = ST_E_STATE;
		}
		if (rc && w->failures++ == 0)
			snprintf(w->first_err, sizeof(w->first_err), "%s: %s",
				 uid, rec_errmsg(w->r));
	}
	return NULL;
}

static void run_threads(struct worker *w, void *(*fn)(void *), rec_store *r,
			rec_durability d)
{
	pthread_barrier_t go;
	pthread_t t[NTHREADS];

	pthread_barrier_init(&go, NULL, NTHREADS);
	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){ .r = r, .n = i, .go = &go, .d = d };
		cr_assert_eq(pthread_create(&t[i], NULL, fn, &w[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&go);
}

/* Eight slot threads at once: every write lands exactly once, in a chain
 * that verifies event by event (hash, prev, the signature of each
 * commit), and the writes shared commits. */
static void concurrent(rec_durability d)
{
	rec_store *r = open_signed();
	struct worker w[NTHREADS];
	rec_verify_result v;
	rec_stats st;
	long long want_events = 1 + (long long)NTHREADS * NUNITS * 5;
	sqlite3 *db;
	char uid[32];

	run_threads(w, slot_thread, r, d);
	for (int i = 0; i < NTHREADS; i++) {
		cr_assert_eq(w[i].failures, 0, "thread %d: %d failures, first %s",
			     i, w[i].failures, w[i].first_err);
		cr_assert_eq(w[i].refused, NUNITS);
	}
	cr_assert_eq(rec_get_stats(r, &st), ST_OK);
	/* the audit_key event, then begin + 3 steps + end per unit */
	cr_assert_eq(st.events, want_events, "%lld events", st.events);
	cr_assert_eq(st.writes, want_events);
	cr_assert_lt(st.commits, st.writes, "no write shared a commit: %lld "
		     "commits for %lld writes", st.commits, st.writes);
	cr_assert_geq(st.max_batch, 2);
	/* every unit ended durably, so no step of it can still be pending */
	cr_assert_eq(st.pending, 0);
	cr_assert_eq(st.lost, 0);
	cr_assert_eq(st.lazy_writes, d == REC_LAZY ? NTHREADS * NUNITS * 3 : 0);
	cr_assert_eq(rec_verify(r, NULL, NULL, &v), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(v.events, want_events);
	cr_assert_eq(v.units, NTHREADS * NUNITS);
	rec_close(r);

	db = ext_open();
	cr_assert_eq(q_int(db, "SELECT count(*) FROM events", NULL), want_events);
	cr_assert_eq(q_int(db, "SELECT max(seq) FROM events", NULL), want_events);
	/* one audit signature per commit, on its last event; it covers
	 * the batch before it (records/chain.c, "One signature per commit") */
	cr_assert_eq(q_int(db, "SELECT count(*) FROM events WHERE sig IS NOT NULL",
			   NULL), st.signatures);
	cr_assert_eq(st.signatures, st.commits, "%lld signatures, %lld commits",
		     st.signatures, st.commits);
	cr_assert_eq(q_int(db, "SELECT count(*) FROM events WHERE seq = (SELECT "
			   "max(seq) FROM events) AND sig IS NOT NULL", NULL), 1);
	/* exactly once: each unit's five events, each step once, in order */
	for (int t = 0; t < NTHREADS; t++) {
		for (int i = 0; i < NUNITS; i++) {
			snprintf(uid, sizeof(uid), "g%d-%03d", t, i);
			cr_assert_eq(q_int(db, "SELECT count(*) FROM events "
					   "WHERE uid = ?1", uid), 5, "%s", uid);
			cr_assert_eq(q_int(db, "SELECT count(*) FROM units WHERE "
					   "uid = ?1 AND state = 'PASS'", uid),
				     1, "%s", uid);
			cr_assert_eq(q_int(db, "SELECT group_concat(kind, ',') = "
					   "'unit_start,step,step,step,unit_end' "
					   "FROM (SELECT kind FROM events WHERE "
					   "uid = ?1 ORDER BY seq)", uid), 1,
				     "%s: events out of order", uid);
		}
	}
	cr_assert_eq(q_int(db, "SELECT count(*) FROM steps WHERE step = 'late'",
			   NULL), 0, "a refused step was committed with its batch");
	sqlite3_close(db);
}

Test(groupcommit, concurrent_writers_share_commits_and_chain_verifies)
{
	concurrent(REC_DURABLE);
}

/* The same with the steps written lazily: each rides in the batch of a
 * later durable write (a begin or an end, of any thread), and the chain
 * is the same: complete, in order per unit, every signature good. */
Test(groupcommit, concurrent_lazy_steps_land_in_order_and_verify)
{
	concurrent(REC_LAZY);
}

/* One thread alone is never held back: each write is its own commit. */
Test(groupcommit, lone_writer_commits_each_write)
{
	rec_store *r = open_signed();
	rec_stats st;
	int64_t id;

	cr_assert_eq(rec_unit_begin(r, &(rec_unit_start){ .uid = "solo" }, &id),
		     ST_OK);
	cr_assert_eq(rec_step(r, id, "identify", "ok", NULL), ST_OK);
	cr_assert_eq(rec_step(r, 999, "identify", "ok", NULL), ST_E_NOTFOUND);
	cr_assert_eq(rec_event(r, "operator", NULL, "name", "alice", NULL), ST_OK);
	cr_assert_eq(rec_get_stats(r, &st), ST_OK);
	cr_assert_eq(st.writes, 4);     /* audit_key, begin, step, event */
	cr_assert_eq(st.commits, 4);
	cr_assert_eq(st.max_batch, 1);
	cr_assert_eq(rec_get_stats(r, NULL), ST_E_INVAL);
	rec_close(r);
}

static char big[2 * 1024 * 1024];

/* Small events from every thread while thread 0 also tries events too big
 * for the file size limit: the batches those land in fail whole. */
static void *tick_thread(void *arg)
{
	struct worker *w = arg;
	char n[32];

	pthread_barrier_wait(w->go);
	for (int i = 0; i < NTICKS; i++) {
		snprintf(n, sizeof(n), "%d-%d", w->n, i);
		if (w->n == 0 && i % 15 == 7)
			rec_event(w->r, "big", NULL, "blob", big, NULL);
		w->rc[i] = rec_event(w->r, "tick", NULL, "n", n, NULL);
	}
	return NULL;
}

/* The durability contract under group commit, with a full disk (a file
 * size limit, which binds root too): a write that returned ST_OK is in the
 * store, one that returned an error is not, whoever committed its batch;
 * the chain still verifies afterwards. */
Test(groupcommit, ok_means_on_disk_and_error_means_absent)
{
	rec_store *r = open_signed();
	struct worker w[NTHREADS];
	struct rlimit old, lim;
	rec_verify_result v;
	long ok = 0, failed = 0;
	sqlite3 *db;
	char n[32];

	memset(big, 'B', sizeof(big) - 1);
	cr_assert_neq(signal(SIGXFSZ, SIG_IGN), SIG_ERR);
	cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 1024 * 1024;
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	run_threads(w, tick_thread, r, REC_DURABLE);
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	cr_assert_eq(rec_event(r, "after", NULL, NULL), ST_OK, "%s",
		     rec_errmsg(r));
	cr_assert_eq(rec_verify(r, NULL, NULL, &v), ST_OK, "%s", rec_errmsg(r));
	rec_close(r);

	db = ext_open();
	cr_assert_eq(q_int(db, "SELECT count(*) FROM events WHERE kind = 'big'",
			   NULL), 0);
	for (int t = 0; t < NTHREADS; t++) {
		for (int i = 0; i < NTICKS; i++) {
			long long have;

			snprintf(n, sizeof(n), "%d-%d", t, i);
			have = q_int(db, "SELECT count(*) FROM events WHERE "
				     "kind = 'tick' AND json_extract(body, "
				     "'$.data.n') = ?1", n);
			if (w[t].rc[i] == ST_OK) {
				cr_assert_eq(have, 1, "tick %s returned OK but "
					     "is stored %lld times", n, have);
				ok++;
			} else {
				cr_assert_eq(w[t].rc[i], ST_E_DB, "tick %s: %d",
					     n, w[t].rc[i]);
				cr_assert_eq(have, 0, "tick %s failed but is "
					     "stored", n);
				failed++;
			}
		}
	}
	cr_assert_gt(ok, 0);
	cr_log_info("%ld ticks stored, %ld failed with a big batch-mate",
		    ok, failed);
	sqlite3_close(db);
}

/* ---- Durable and lazy writes (docs/records.md) ---- */

#define LONG_MS		600000	/* a delay the flusher never reaches here */

static long long ext_count(const char *sql)
{
	sqlite3 *db = ext_open();
	long long n = q_int(db, sql, NULL);

	sqlite3_close(db);
	return n;
}

static void stats(rec_store *r, rec_stats *st)
{
	cr_assert_eq(rec_get_stats(r, st), ST_OK, "%s", rec_errmsg(r));
}

/* Lazy steps wait in the open batch (another connection does not see
 * them, no commit is made for them) and the next durable write commits
 * them with itself: one commit, in chain order. */
Test(groupcommit, lazy_steps_ride_with_the_next_durable_write)
{
	rec_store *r = open_signed();
	rec_unit_result e = { .result = "PASS", .cert_serial = "0a" };
	rec_verify_result v;
	rec_stats st;
	int64_t id;

	cr_assert_eq(rec_set_lazy_ms(r, LONG_MS), ST_OK);
	cr_assert_eq(rec_unit_begin(r, &(rec_unit_start){ .uid = "lz1" }, &id),
		     ST_OK, "%s", rec_errmsg(r));
	stats(r, &st);
	cr_assert_eq(st.commits, 2);            /* audit_key, begin */
	for (int i = 0; i < 3; i++)
		cr_assert_eq(rec_step_ex(r, id, "keygen", "ok", NULL, REC_LAZY),
			     ST_OK, "%s", rec_errmsg(r));
	stats(r, &st);
	cr_assert_eq(st.commits, 2, "a lazy step made a commit");
	cr_assert_eq(st.pending, 3);
	cr_assert_eq(st.writes, 2);
	cr_assert_eq(ext_count("SELECT count(*) FROM steps"), 0,
		     "another process sees uncommitted steps");
	/* this connection reads them (the interrupted-run check does) */
	cr_assert_eq(rec_verify(r, NULL, NULL, &v), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(v.events, 5);
	/* a durable step commits them with it */
	cr_assert_eq(rec_step_ex(r, id, "fuse-intent", "ok", "f1", REC_DURABLE),
		     ST_OK, "%s", rec_errmsg(r));
	stats(r, &st);
	cr_assert_eq(st.commits, 3, "the durable step and the 3 lazy ones: "
		     "one commit, got %lld", st.commits - 2);
	cr_assert_eq(st.pending, 0);
	cr_assert_eq(st.writes, 6);
	cr_assert_eq(st.lazy_writes, 3);
	cr_assert_eq(st.max_batch, 4);
	cr_assert_eq(ext_count("SELECT count(*) FROM steps"), 4);
	cr_assert_eq(ext_count("SELECT group_concat(step, ',') = "
			       "'keygen,keygen,keygen,fuse-intent' FROM (SELECT "
			       "step FROM steps ORDER BY seq)"), 1);
	/* and so does an end */
	cr_assert_eq(rec_step_ex(r, id, "possession", "ok", NULL, REC_LAZY), ST_OK);
	cr_assert_eq(rec_unit_end(r, id, &e), ST_OK, "%s", rec_errmsg(r));
	stats(r, &st);
	cr_assert_eq(st.commits, 4);
	cr_assert_eq(st.pending, 0);
	cr_assert_eq(ext_count("SELECT count(*) FROM steps"), 5);
	cr_assert_eq(ext_count("SELECT count(*) FROM units WHERE state = 'PASS'"), 1);
	/* a lazy step that is refused holds nothing open */
	cr_assert_eq(rec_step_ex(r, id, "late", "ok", NULL, REC_LAZY), ST_E_STATE);
	stats(r, &st);
	cr_assert_eq(st.pending, 0);
	cr_assert_eq(st.commits, 4);
	cr_assert_eq(rec_sync(r), ST_OK, "%s", rec_errmsg(r));
	rec_close(r);
}

/* Nothing is left behind: rec_close commits what is pending, and so does
 * rec_sync; with a delay of 0 a lazy step is committed at once. */
Test(groupcommit, nothing_lazy_is_left_uncommitted)
{
	rec_store *r = open_signed();
	rec_verify_result v;
	rec_stats st;
	int64_t id;

	cr_assert_eq(rec_set_lazy_ms(r, LONG_MS), ST_OK);
	cr_assert_eq(rec_unit_begin(r, &(rec_unit_start){ .uid = "lz2" }, &id),
		     ST_OK);
	cr_assert_eq(rec_step_ex(r, id, "identify", "ok", NULL, REC_LAZY), ST_OK);
	cr_assert_eq(ext_count("SELECT count(*) FROM steps"), 0);
	cr_assert_eq(rec_sync(r), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(ext_count("SELECT count(*) FROM steps"), 1);
	stats(r, &st);
	cr_assert_eq(st.commits, 3);
	cr_assert_eq(st.pending, 0);
	cr_assert_eq(rec_sync(r), ST_OK);       /* nothing open: no commit */
	stats(r, &st);
	cr_assert_eq(st.commits, 3);

	cr_assert_eq(rec_set_lazy_ms(r, 0), ST_OK);
	cr_assert_eq(rec_step_ex(r, id, "keygen", "ok", NULL, REC_LAZY), ST_OK);
	stats(r, &st);
	cr_assert_eq(st.commits, 4, "with no delay a lazy step is durable");
	cr_assert_eq(st.lazy_writes, 1);        /* the one made lazily */
	cr_assert_eq(rec_set_lazy_ms(r, -1), ST_E_INVAL);

	cr_assert_eq(rec_set_lazy_ms(r, LONG_MS), ST_OK);
	cr_assert_eq(rec_step_ex(r, id, "certificate", "ok", NULL, REC_LAZY), ST_OK);
	cr_assert_eq(rec_step_ex(r, id, "write-cert", "ok", NULL, REC_LAZY), ST_OK);
	cr_assert_eq(ext_count("SELECT count(*) FROM steps"), 2);
	rec_close(r);
	cr_assert_eq(ext_count("SELECT count(*) FROM steps"), 4,
		     "rec_close left lazy steps uncommitted");
	cr_assert_eq(ext_count("SELECT count(*) FROM units WHERE state = "
			       "'RUNNING'"), 1);
	r = open_signed();
	cr_assert_eq(rec_verify(r, NULL, NULL, &v), ST_OK, "%s", rec_errmsg(r));
	rec_close(r);
}

/* With nothing else writing, the flusher commits a lazy step within the
 * delay (polled from another connection, with a generous deadline). */
Test(groupcommit, flusher_commits_an_idle_batch)
{
	rec_store *r = open_signed();
	rec_stats st;
	int64_t id;
	int tries;

	cr_assert_eq(rec_set_lazy_ms(r, 20), ST_OK);
	cr_assert_eq(rec_unit_begin(r, &(rec_unit_start){ .uid = "lz3" }, &id),
		     ST_OK);
	cr_assert_eq(rec_step_ex(r, id, "identify", "ok", NULL, REC_LAZY), ST_OK);
	for (tries = 0; tries < 1000; tries++) {
		if (ext_count("SELECT count(*) FROM steps") == 1)
			break;
		usleep(10000);
	}
	cr_assert_lt(tries, 1000, "the lazy step was not committed in 10 s");
	stats(r, &st);
	cr_assert_eq(st.pending, 0);
	cr_assert_eq(st.commits, 3);
	cr_assert_eq(st.lazy_writes, 1);
	rec_close(r);
}

/* A commit that fails loses the lazy steps in its batch: the unit takes no
 * more steps and no PASS (it may still end FAIL), rec_sync reports it, and
 * the chain still verifies. */
Test(groupcommit, lost_lazy_steps_refuse_the_pass)
{
	rec_store *r = open_signed();
	static char detail[700 * 1024];
	rec_unit_result pass = { .result = "PASS", .cert_serial = "0b" };
	rec_unit_result failed = { .result = "FAIL", .reason = "records lost" };
	struct rlimit old, lim;
	rec_verify_result v;
	rec_stats st;
	int64_t id, other;

	memset(detail, 'L', sizeof(detail) - 1);
	cr_assert_eq(rec_set_lazy_ms(r, LONG_MS), ST_OK);
	cr_assert_eq(rec_unit_begin(r, &(rec_unit_start){ .uid = "lz4" }, &id),
		     ST_OK);
	cr_assert_eq(rec_unit_begin(r, &(rec_unit_start){ .uid = "lz5" }, &other),
		     ST_OK);
	cr_assert_neq(signal(SIGXFSZ, SIG_IGN), SIG_ERR);
	cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 1024 * 1024;     /* the batch (~1.4 MiB) cannot commit */
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	cr_assert_eq(rec_step_ex(r, id, "certificate", "ok", detail, REC_LAZY),
		     ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_sync(r), ST_E_DB);
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	stats(r, &st);
	cr_assert_eq(st.lost, 1);
	cr_assert_eq(st.pending, 0);
	cr_assert_not_null(strstr(rec_errmsg(r), "lost"), "%s", rec_errmsg(r));
	/* the unit cannot go on as if its step were on record */
	cr_assert_eq(rec_step_ex(r, id, "write-cert", "ok", NULL, REC_LAZY), ST_E_DB);
	cr_assert_not_null(strstr(rec_errmsg(r), "cannot PASS"), "%s",
			   rec_errmsg(r));
	cr_assert_eq(rec_step(r, id, "fuse-intent", "ok", NULL), ST_E_DB);
	cr_assert_eq(rec_unit_end(r, id, &pass), ST_E_DB);
	cr_assert_eq(rec_unit_end(r, id, &failed), ST_OK, "%s", rec_errmsg(r));
	/* another unit is not touched by it */
	cr_assert_eq(rec_step_ex(r, other, "identify", "ok", NULL, REC_LAZY), ST_OK);
	cr_assert_eq(rec_unit_end(r, other, &pass), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_sync(r), ST_E_DB, "a lost write stays reported");
	cr_assert_eq(rec_verify(r, NULL, NULL, &v), ST_OK, "%s", rec_errmsg(r));
	rec_close(r);
	cr_assert_eq(ext_count("SELECT count(*) FROM steps WHERE unit_id = 1"), 0);
	cr_assert_eq(ext_count("SELECT count(*) FROM units WHERE uid = 'lz4' "
			       "AND state = 'FAIL'"), 1);
	cr_assert_eq(ext_count("SELECT count(*) FROM units WHERE uid = 'lz5' "
			       "AND state = 'PASS'"), 1);
}

/* An audit signer that fails while `fail` is set (an HSM gone). */
struct flaky_signer {
	void *key;
	int fail, calls;
};

static int flaky_sign(void *ctx, const uint8_t digest[32], uint8_t *sig, size_t cap,
		      size_t *len)
{
	struct flaky_signer *f = ctx;

	f->calls++;
	if (f->fail)
		return ST_E_CRYPTO;
	return fx_soft_sign(f->key, digest, sig, cap, len);
}

/* The batch's one signature is made right before its COMMIT: when the
 * audit key cannot make it, the batch is not committed, exactly as a
 * failed COMMIT (its durable writer gets the error, its lazy units go on
 * the lost list and cannot PASS), and nothing unsigned reaches the
 * store: the chain still ends on a signed event and verifies. */
Test(groupcommit, a_batch_the_audit_key_cannot_sign_is_not_committed)
{
	struct flaky_signer f = { .key = ss.key };
	rec_unit_result pass = { .result = "PASS", .cert_serial = "0c" };
	rec_unit_result failed = { .result = "FAIL", .reason = "no audit key" };
	rec_verify_result v;
	rec_store *r = NULL;
	rec_stats st;
	int64_t id;
	long long before;

	cr_assert_eq(rec_open(dbpath, &r), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_set_signer(r, flaky_sign, &f, ss.cert_der, (size_t)ss.cert_len),
		     ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_set_lazy_ms(r, LONG_MS), ST_OK);
	cr_assert_eq(rec_unit_begin(r, &(rec_unit_start){ .uid = "sg1" }, &id), ST_OK);
	before = ext_count("SELECT count(*) FROM events");
	f.fail = 1;
	cr_assert_eq(rec_step_ex(r, id, "identify", "ok", NULL, REC_LAZY), ST_OK,
		     "%s", rec_errmsg(r));
	cr_assert_neq(rec_step(r, id, "certificate", "ok", "serial 0c"), ST_OK);
	cr_assert_not_null(strstr(rec_errmsg(r), "audit key could not sign"), "%s",
			   rec_errmsg(r));
	cr_assert_gt(f.calls, 0);
	cr_assert_eq(ext_count("SELECT count(*) FROM events"), before,
		     "a batch without its signature was committed");
	stats(r, &st);
	cr_assert_eq(st.lost, 1);
	f.fail = 0;
	/* the unit whose lazy step was lost cannot PASS; it ends FAIL */
	cr_assert_eq(rec_unit_end(r, id, &pass), ST_E_DB);
	cr_assert_eq(rec_unit_end(r, id, &failed), ST_OK, "%s", rec_errmsg(r));
	cr_assert_eq(rec_verify(r, NULL, NULL, &v), ST_OK, "%s", rec_errmsg(r));
	rec_close(r);
	cr_assert_eq(ext_count("SELECT count(*) FROM events WHERE seq = (SELECT "
			       "max(seq) FROM events) AND sig IS NOT NULL"), 1);
	cr_assert_eq(ext_count("SELECT count(*) FROM units WHERE uid = 'sg1' AND "
			       "state = 'FAIL'"), 1);
	cr_assert_eq(ext_count("SELECT count(*) FROM steps"), 0);
}

/* SIGKILL right after a durable write: everything up to it is on disk
 * (the lazy steps before it too), the lazy steps after it are not, and
 * the store verifies and shows the unit RUNNING for the interrupted-run
 * check. */
Test(groupcommit, sigkill_keeps_everything_up_to_the_last_durable_write)
{
	rec_verify_result v;
	int fds[2], status;
	char c = 0;
	rec_store *r;
	pid_t pid;

	cr_assert_eq(pipe(fds), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int64_t id;

		close(fds[0]);
		r = NULL;
		if (rec_open(dbpath, &r) ||
		    rec_set_signer(r, fx_soft_sign, ss.key, ss.cert_der, (size_t)ss.cert_len) ||
		    rec_set_lazy_ms(r, LONG_MS) ||
		    rec_unit_begin(r, &(rec_unit_start){ .uid = "k1" }, &id) ||
		    rec_step_ex(r, id, "identify", "ok", NULL, REC_LAZY) ||
		    rec_step_ex(r, id, "keygen", "ok", NULL, REC_LAZY) ||
		    rec_step_ex(r, id, "certificate", "ok", NULL, REC_DURABLE) ||
		    rec_step_ex(r, id, "write-cert", "ok", NULL, REC_LAZY) ||
		    rec_step_ex(r, id, "possession", "ok", NULL, REC_LAZY))
			_exit(2);
		if (write(fds[1], "k", 1) != 1)
			_exit(3);
		for (;;)
			pause();
	}
	close(fds[1]);
	cr_assert_eq(read(fds[0], &c, 1), 1, "the child failed before the kill");
	close(fds[0]);
	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

	cr_assert_eq(ext_count("SELECT count(*) FROM units WHERE uid = 'k1' AND "
			       "state = 'RUNNING'"), 1);
	cr_assert_eq(ext_count("SELECT group_concat(step, ',') = "
			       "'identify,keygen,certificate' FROM (SELECT step "
			       "FROM steps ORDER BY seq)"), 1,
		     "not every step up to the durable one is on disk");
	cr_assert_eq(ext_count("SELECT count(*) FROM events"), 5);
	r = open_signed();
	cr_assert_eq(rec_verify(r, NULL, NULL, &v), ST_OK, "%s", rec_errmsg(r));
	rec_close(r);
}

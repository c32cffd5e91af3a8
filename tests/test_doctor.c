/* test_doctor.c — `station doctor` through the real binary: every line OK
 * on a ready station, and each line failing on a station prepared broken
 * that one way (wrong PIN, missing module, expired CA, read-only records
 * directory, a full file system, no programmer, a user outside the udev
 * group).  The lines are read from --json. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"

static const char *const names[] = { "configuration", "profile", "module", "token",
	"pin", "ca", "records", "disk", "group", "programmers" };

static fx_run *new_run(void)
{
	fx_run *r = calloc(1, sizeof(*r));

	cr_assert_not_null(r);
	return r;
}

/* The check lines of a --json doctor run, every name once, in order. */
static json_t *checks(const fx_run *r)
{
	json_t *a = fx_json_events(r->out, "check"), *c;
	size_t i;

	cr_assert_eq(json_array_size(a), ST_ARRAY_SIZE(names), "%s\n%s", r->out, r->err);
	json_array_foreach(a, i, c)
		cr_assert_str_eq(json_string_value(json_object_get(c, "check")), names[i],
				 "%s", r->out);
	return a;
}

static const char *status(json_t *a, const char *name)
{
	json_t *c;
	size_t i;

	json_array_foreach(a, i, c)
		if (!strcmp(json_string_value(json_object_get(c, "check")), name))
			return json_string_value(json_object_get(c, "status"));
	cr_assert_fail("no check %s", name);
	return NULL;
}

static const char *field(json_t *a, const char *name, const char *key)
{
	json_t *c;
	size_t i;

	json_array_foreach(a, i, c)
		if (!strcmp(json_string_value(json_object_get(c, "check")), name)) {
			const char *v = json_string_value(json_object_get(c, key));

			return v ? v : "";
		}
	cr_assert_fail("no check %s", name);
	return NULL;
}

/* Every line but those listed in fails is OK (disk may WARN on a small
 * test machine); those are FAIL. */
static void expect(json_t *a, const fx_run *r, const char *const *fails, size_t n)
{
	for (size_t i = 0; i < ST_ARRAY_SIZE(names); i++) {
		bool f = false;

		for (size_t k = 0; k < n; k++)
			f |= !strcmp(fails[k], names[i]);
		if (f)
			cr_assert_str_eq(status(a, names[i]), "FAIL", "%s: %s", names[i], r->out);
		else if (!strcmp(names[i], "disk"))
			cr_assert_str_neq(status(a, names[i]), "FAIL", "%s", r->out);
	}
	cr_assert_eq(r->code, n ? 1 : 0, "exit %d: %s%s", r->code, r->out, r->err);
}

/* A ready station: every line OK, exit 0; the text form says "ready". */
Test(doctor, a_ready_station_is_all_ok, .timeout = 120)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;
	json_t *a;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	fx_station_run(r, &w, "--json", "doctor", "--slot", sim.port, NULL);
	a = checks(r);
	for (size_t i = 0; i < ST_ARRAY_SIZE(names); i++)
		if (strcmp(names[i], "disk"))
			cr_assert_str_eq(status(a, names[i]), "OK", "%s: %s", names[i], r->out);
	cr_assert_eq(r->code, 0, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(field(a, "ca", "found"), "days left"), "%s", r->out);
	json_decref(a);
	fx_station_run(r, &w, "doctor", "--slot", sim.port, NULL);
	cr_assert_eq(r->code, 0, "exit %d: %s%s", r->code, r->out, r->err);
	cr_assert(strstr(r->out, "OK    pin"), "%s", r->out);
	cr_assert(strstr(r->out, "doctor: "), "%s", r->out);
	cr_assert(strstr(r->out, "ready"), "%s", r->out);
	/* the doctor changed nothing: the device was only asked who it is */
	cr_assert_leq(fx_count_units(&w, NULL), 0);
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
}

/* A wrong PIN: tried once, FAIL, the CA not checked; the token now counts
 * a wrong PIN, and the next doctor (right PIN) warns about it. */
Test(doctor, a_wrong_pin_fails_once_and_is_remembered, .timeout = 120)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;
	const char *f[] = { "pin" };
	json_t *a;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	fx_write_file(w.pinfile, "00000000\n");
	fx_station_run(r, &w, "--json", "doctor", "--slot", sim.port, NULL);
	a = checks(r);
	expect(a, r, f, 1);
	cr_assert(strstr(field(a, "pin", "found"), "wrong PIN"), "%s", r->out);
	cr_assert(strstr(field(a, "pin", "found"), "count low"), "%s", r->out);
	cr_assert_str_eq(status(a, "ca"), "WARN", "%s", r->out);
	cr_assert_null(strstr(r->out, "00000000"), "the PIN was printed");
	cr_assert_null(strstr(r->err, "00000000"), "the PIN was printed");
	json_decref(a);
	fx_write_file(w.pinfile, FX_PIN "\n");
	fx_station_run(r, &w, "--json", "doctor", "--slot", sim.port, NULL);
	a = checks(r);
	cr_assert_str_eq(status(a, "pin"), "WARN", "%s", r->out);
	cr_assert(strstr(field(a, "pin", "found"), "count low"), "%s", r->out);
	cr_assert_str_eq(status(a, "ca"), "OK", "%s", r->out);
	cr_assert_eq(r->code, 0, "a WARN is not a FAIL: %s", r->out);
	json_decref(a);
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
}

/* A module that does not load: module FAIL, the token not checked. */
Test(doctor, a_missing_module_fails, .timeout = 120)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;
	const char *f[] = { "module" };
	json_t *a;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	fx_station_run(r, &w, "--json", "--module", "/nonexistent/libp11.so", "doctor",
		       "--slot", sim.port, NULL);
	a = checks(r);
	expect(a, r, f, 1);
	cr_assert(strstr(field(a, "module", "found"), "/nonexistent/libp11.so"), "%s",
		  r->out);
	cr_assert(strstr(field(a, "module", "todo"), "hsm.module"), "%s", r->out);
	cr_assert_str_eq(status(a, "token"), "WARN", "%s", r->out);
	json_decref(a);
	/* and a token that is not there */
	fx_station_run(r, &w, "--json", "--token", "no-such-token", "doctor", "--slot",
		       sim.port, NULL);
	a = checks(r);
	cr_assert_str_eq(status(a, "module"), "OK", "%s", r->out);
	cr_assert_str_eq(status(a, "token"), "FAIL", "%s", r->out);
	cr_assert(strstr(field(a, "token", "found"), "no-such-token"), "%s", r->out);
	cr_assert_eq(r->code, 1);
	json_decref(a);
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
}

/* An unsigned (changed) profile: profile FAIL. */
Test(doctor, a_changed_profile_fails, .timeout = 120)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;
	const char *f[] = { "profile" };
	FILE *p;
	json_t *a;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	p = fopen(w.profile, "a");
	cr_assert_not_null(p);
	fputs("# changed after signing\n", p);
	fclose(p);
	fx_station_run(r, &w, "--json", "doctor", "--slot", sim.port, NULL);
	a = checks(r);
	expect(a, r, f, 1);
	cr_assert(strstr(field(a, "profile", "todo"), "sign"), "%s", r->out);
	json_decref(a);
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *e;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	cr_assert_not_null(e, "extension %d=%s", nid, value);
	cr_assert_eq(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

static void write_pem(const char *path, X509 *x)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f);
	cr_assert_eq(PEM_write_X509(f, x), 1);
	fclose(f);
}

/* An issuing CA in the token whose certificate (signed by a software root)
 * is valid from nb to na days from now; root.pem and ca.pem in the world. */
static void ca_with_dates(fx_world *w, long nb, long na)
{
	char csr[512], ca[512], root_pem[512];
	EVP_PKEY *key = EVP_EC_gen("P-256"), *pub;
	X509 *root = X509_new(), *x = X509_new();
	X509_NAME *n;
	X509_REQ *req;
	fx_run *r = new_run();
	FILE *f;

	cr_assert_not_null(key);
	X509_set_version(root, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(root), 1);
	X509_gmtime_adj(X509_getm_notBefore(root), -86400L * 400);
	X509_gmtime_adj(X509_getm_notAfter(root), 86400L * 9000);
	n = X509_get_subject_name(root);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
				   (const unsigned char *)"Doctor Test Root", -1, -1, 0);
	X509_set_issuer_name(root, n);
	X509_set_pubkey(root, key);
	add_ext(root, root, NID_basic_constraints, "critical,CA:TRUE");
	add_ext(root, root, NID_key_usage, "critical,keyCertSign,cRLSign");
	add_ext(root, root, NID_subject_key_identifier, "hash");
	cr_assert(X509_sign(root, key, EVP_sha256()) > 0);
	fx_path(root_pem, w, "root.pem");
	write_pem(root_pem, root);
	fx_path(csr, w, "ca.csr");
	fx_path(ca, w, "ca.pem");
	fx_station_run(r, w, "ca", "csr", "--out", csr, NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	f = fopen(csr, "r");
	cr_assert_not_null(f);
	req = PEM_read_X509_REQ(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(req);
	pub = X509_REQ_get_pubkey(req);
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
	X509_gmtime_adj(X509_getm_notBefore(x), 86400L * nb);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400L * na);
	X509_set_subject_name(x, X509_REQ_get_subject_name(req));
	X509_set_issuer_name(x, X509_get_subject_name(root));
	X509_set_pubkey(x, pub);
	add_ext(x, root, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
	add_ext(x, root, NID_key_usage, "critical,keyCertSign,cRLSign");
	add_ext(x, root, NID_subject_key_identifier, "hash");
	add_ext(x, root, NID_authority_key_identifier, "keyid:always");
	cr_assert(X509_sign(x, key, EVP_sha256()) > 0);
	write_pem(ca, x);
	fx_station_run(r, w, "ca", "import", "--in", ca, "--chain", root_pem, NULL);
	cr_assert_eq(r->code, 0, "%s", r->err);
	X509_free(x);
	X509_free(root);
	X509_REQ_free(req);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(key);
	free(r);
}

/* An expired CA: ca FAIL saying so; one inside its renewal window: WARN
 * with the days left. */
Test(doctor, an_expired_ca_fails_and_a_late_one_warns, .timeout = 120)
{
	fx_world w, w2;
	fx_run *r = new_run();
	fx_devsim sim;
	const char *f[] = { "ca" };
	json_t *a;

	fx_world_init(&w, false, 2000);
	ca_with_dates(&w, -30, -1);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	fx_station_run(r, &w, "--json", "doctor", "--slot", sim.port, NULL);
	a = checks(r);
	expect(a, r, f, 1);
	cr_assert(strstr(field(a, "ca", "found"), "expired"), "%s", r->out);
	json_decref(a);
	fx_devsim_stop(&sim);
	fx_world_init(&w2, false, 2000);
	ca_with_dates(&w2, -30, 10);
	cr_assert_eq(fx_devsim_start(&sim, w2.dir, "prog", 1, NULL), 0);
	fx_station_run(r, &w2, "--json", "doctor", "--slot", sim.port, NULL);
	a = checks(r);
	cr_assert_str_eq(status(a, "ca"), "WARN", "%s", r->out);
	cr_assert(strstr(field(a, "ca", "found"), "days left"), "%s", r->out);
	cr_assert_eq(r->code, 0, "%s", r->out);
	json_decref(a);
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
	fx_rmtree(w2.dir);
}

/* Records in a directory nobody may write (immutable: binds root too):
 * records FAIL; nothing is created there. */
Test(doctor, a_read_only_records_directory_fails, .timeout = 120)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;
	const char *f[] = { "records" };
	char dir[600], db[700], cmd[800];
	json_t *a;
	int rc;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	fx_path(dir, &w, "ro");
	cr_assert_eq(mkdir(dir, 0755), 0);
	snprintf(db, sizeof(db), "%s/records.db", dir);
	snprintf(cmd, sizeof(cmd), "chattr +i '%s'", dir);
	cr_assert_eq(system(cmd), 0, "chattr +i failed (e2fsprogs)");
	fx_station_run(r, &w, "--json", "--records", db, "doctor", "--slot", sim.port,
		       NULL);
	snprintf(cmd, sizeof(cmd), "chattr -i '%s'", dir);
	rc = system(cmd);
	cr_assert_eq(rc, 0);
	a = checks(r);
	expect(a, r, f, 1);
	cr_assert(strstr(field(a, "records", "found"), "not writable"), "%s", r->out);
	cr_assert_neq(access(db, F_OK), 0, "the doctor made a store");
	json_decref(a);
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
}

/* Records on a file system with 1 MiB: disk FAIL. */
Test(doctor, a_full_file_system_fails, .timeout = 120)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;
	const char *f[] = { "disk" };
	char dir[600], db[700];
	json_t *a;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	fx_path(dir, &w, "small");
	cr_assert_eq(mkdir(dir, 0755), 0);
	cr_assert_eq(mount("tmpfs", dir, "tmpfs", 0, "size=1m"), 0,
		     "mount tmpfs (the tests run as root)");
	snprintf(db, sizeof(db), "%s/records.db", dir);
	fx_station_run(r, &w, "--json", "--records", db, "doctor", "--slot", sim.port,
		       NULL);
	umount(dir);
	a = checks(r);
	expect(a, r, f, 1);
	cr_assert(strstr(field(a, "disk", "found"), "MiB free"), "%s", r->out);
	json_decref(a);
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
}

/* A slot whose programmer is not there: programmers FAIL naming it. */
Test(doctor, a_missing_programmer_fails, .timeout = 120)
{
	fx_world w;
	fx_run *r = new_run();
	fx_devsim sim;
	const char *f[] = { "programmers" };
	char gone[600];
	json_t *a;

	fx_world_init(&w, true, 2000);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "prog", 1, NULL), 0);
	fx_path(gone, &w, "unplugged.tty");
	fx_station_run(r, &w, "--json", "doctor", "--slot", sim.port, "--slot", gone,
		       NULL);
	a = checks(r);
	expect(a, r, f, 1);
	cr_assert(strstr(field(a, "programmers", "found"), "1 of 2"), "%s", r->out);
	cr_assert(strstr(field(a, "programmers", "found"), "unplugged.tty"), "%s", r->out);
	json_decref(a);
	fx_devsim_stop(&sim);
	free(r);
	fx_rmtree(w.dir);
}

/* Not root and not in the udev group: group FAIL (run as nobody, on a
 * configuration nobody can read). */
Test(doctor, a_user_outside_the_group_fails, .timeout = 120)
{
	char dir[] = "/tmp/st-doc-grp-XXXXXX", conf[600], bin[512], out[700];
	struct passwd *pw = getpwnam("nobody");
	fx_run *r = new_run();
	int fd, ws;
	json_t *a;
	pid_t pid;

	cr_assert_not_null(pw, "no user nobody");
	cr_assert_not_null(mkdtemp(dir));
	chmod(dir, 0755);
	snprintf(conf, sizeof(conf), "%s/station.conf", dir);
	snprintf(out, sizeof(out), "%s/out.txt", dir);
	fx_write_file(conf, "station: { id = \"grp\"; };\n"
			    "hsm: { module = \"/nonexistent.so\"; token = \"t\"; };\n"
			    "records: { path = \"/nonexistent/records.db\"; };\n");
	chmod(conf, 0644);
	snprintf(bin, sizeof(bin), "%s/station", getenv("STATION_BUILD"));
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(fd, 1);
		if (setgroups(0, NULL) || setgid(pw->pw_gid) || setuid(pw->pw_uid))
			_exit(126);
		execl(bin, bin, "--config", conf, "--json", "doctor", (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &ws, 0);
	fd = open(out, O_RDONLY);
	cr_assert_geq(fd, 0);
	fx_slurp(fd, r->out, sizeof(r->out));
	close(fd);
	r->code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128;
	a = checks(r);
	cr_assert_str_eq(status(a, "group"), "FAIL", "%s", r->out);
	cr_assert(strstr(field(a, "group", "found"), "station"), "%s", r->out);
	cr_assert_eq(r->code, 1, "%s", r->out);
	json_decref(a);
	free(r);
	fx_rmtree(dir);
}

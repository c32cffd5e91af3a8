/* doctor.c — `station doctor`: what a shift start needs, checked in the
 * order a technician would fix it (configuration, profile, HSM module,
 * token, PIN, CA, records, disk, udev group, programmers), one verdict
 * each with what to do.  Nothing is changed: no store is created, no key
 * made, and the PIN is tried only while the token can take a wrong one
 * without locking (never on its final try). */
#include <errno.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

#include "base.h"
#include "station/st_int.h"

/* One check's verdict to fn, the texts formatted. */
static void say(const st_doctor_opts *o, int *fails, const char *name,
		st_check_level level, const char *todo, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

static void say(const st_doctor_opts *o, int *fails, const char *name,
		st_check_level level, const char *todo, const char *fmt, ...)
{
	st_check c = { .name = name, .level = level };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c.found, sizeof(c.found), fmt, ap);
	va_end(ap);
	snprintf(c.todo, sizeof(c.todo), "%s", todo ? todo : "");
	if (level == ST_CHECK_FAIL)
		(*fails)++;
	o->report(o->ctx, &c);
}

/* The configuration and the profile it names against their schemas
 * (what `config check` says), the files they name there. */
static void check_config(st_station *st, const st_doctor_opts *o, int *fails)
{
	const char *path = st_station_config_path(st);
	char *text = NULL, *oktext = NULL, *nl;
	size_t len = 0, oklen = 0;
	FILE *f = open_memstream(&text, &len), *okf = open_memstream(&oktext, &oklen);
	int n = 0;

	if (f && okf && path)
		n = st_config_check(path, NULL, f, okf);
	if (f)
		fclose(f);
	if (okf)
		fclose(okf);
	nl = text ? strchr(text, '\n') : NULL;
	if (nl)
		*nl = '\0';
	if (!f || !okf || n < 0)
		say(o, fails, "configuration", ST_CHECK_FAIL, "", "cannot be checked: %s",
		    st_strerror(n < 0 ? n : ST_E_NOMEM));
	else if (!path)
		say(o, fails, "configuration", ST_CHECK_WARN, "give --config FILE",
		    "no file: built-in defaults");
	else if (n > 0)
		say(o, fails, "configuration", ST_CHECK_FAIL,
		    "fix it ('station config check' lists every problem)",
		    "%s: %d problem%s, first: %s", path, n, n == 1 ? "" : "s",
		    text ? text : "");
	else
		say(o, fails, "configuration", ST_CHECK_OK, NULL, "%s (station %s)", path,
		    st_station_config(st)->station_id);
	free(text);
	free(oktext);
}

/* The profile: loads, checks and carries a trusted signature. */
static void check_profile(st_station *st, const st_doctor_opts *o, int *fails,
			  st_profile **prof)
{
	const st_config *cfg = st_station_config(st);
	st_signed_info info;
	char err[768] = "";

	*prof = NULL;
	if (!cfg->profile_path) {
		say(o, fails, "profile", ST_CHECK_FAIL,
		    "set 'profile' in the configuration (or --profile FILE)",
		    "no profile configured");
		return;
	}
	if (st_profile_load_signed(cfg, cfg->profile_path, prof, &info, err,
				   sizeof(err))) {
		say(o, fails, "profile", ST_CHECK_FAIL,
		    "have an engineer sign it ('station profile sign') with a key in "
		    "trust.profile_keys, or fix what is named", "%s", err);
		return;
	}
	say(o, fails, "profile", ST_CHECK_OK, NULL, "%s %s, signed by key %.16s",
	    st_profile_name(*prof), st_profile_version(*prof), info.signer);
}

/* Module, token, PIN and CA: each needs the one before. */
static void check_hsm(st_station *st, const st_doctor_opts *o, int *fails,
		      const st_profile *prof)
{
	const st_config *cfg = st_station_config(st);
	const char *label;
	char err[768] = "", subject[256] = "", pin[256];
	size_t pinlen = 0;
	int rc, days = 0, renew;
	st_pin_state ps;

	rc = st_station_hsm_open(st, err, sizeof(err));
	if (rc == ST_E_NOTOKEN) {
		say(o, fails, "module", ST_CHECK_OK, NULL, "%s loads", cfg->hsm_module);
		say(o, fails, "token", ST_CHECK_FAIL,
		    "plug in the HSM, or check hsm.token against 'pkcs11-tool -L'",
		    "no token '%s': %s", cfg->token_label, err);
		goto skip_pin;
	}
	if (rc) {
		say(o, fails, "module", ST_CHECK_FAIL,
		    "install the PKCS#11 module or fix hsm.module",
		    "%s does not load: %s", cfg->hsm_module, err);
		say(o, fails, "token", ST_CHECK_WARN, "fix the module first", "not checked");
		goto skip_pin;
	}
	say(o, fails, "module", ST_CHECK_OK, NULL, "%s loads", cfg->hsm_module);
	say(o, fails, "token", ST_CHECK_OK, NULL, "'%s' present", cfg->token_label);
	ps = st_station_pin_state(st);
	if (ps == ST_PIN_LOCKED) {
		say(o, fails, "pin", ST_CHECK_FAIL,
		    "the token's security officer must unlock (re-set) the user PIN",
		    "the user PIN is LOCKED");
		goto skip_ca;
	}
	if (ps == ST_PIN_FINAL_TRY) {
		say(o, fails, "pin", ST_CHECK_FAIL,
		    "not tried here: a supervisor who knows the PIN logs in once "
		    "(a success resets the counter), or the security officer re-sets it",
		    "FINAL TRY: one more wrong PIN locks the token");
		goto skip_ca;
	}
	if (!o->pin || o->pin(o->ctx, pin, sizeof(pin), &pinlen, err, sizeof(err))) {
		st_wipe(pin, sizeof(pin));
		say(o, fails, "pin", ST_CHECK_WARN,
		    "give --pin-file FILE or STATION_PIN to check it", "not checked: %s",
		    err[0] ? err : "no PIN");
		goto skip_ca;
	}
	rc = st_station_hsm_auth(st, pin, pinlen, err, sizeof(err));
	st_wipe(pin, sizeof(pin));
	if (rc) {
		ps = st_station_pin_state(st);
		say(o, fails, "pin", ST_CHECK_FAIL,
		    ps == ST_PIN_FINAL_TRY ? "STOP: one more wrong PIN locks the token; "
		    "find the right PIN before anyone tries again" :
		    "check the PIN file; it was tried once and not again",
		    "%s%s", err, ps == ST_PIN_FINAL_TRY ? "; the token is now on its "
		    "FINAL TRY" : ps == ST_PIN_COUNT_LOW ? "; the token counts a wrong "
		    "PIN (count low)" : "");
		goto skip_ca;
	}
	if (ps == ST_PIN_COUNT_LOW)
		say(o, fails, "pin", ST_CHECK_WARN,
		    "a wrong PIN was entered before this login; find out who tried it",
		    "works; the token reported a wrong PIN before (count low)");
	else
		say(o, fails, "pin", ST_CHECK_OK, NULL, "works; no wrong attempts counted");
	label = prof && st_profile_issuer(prof) ? st_profile_issuer(prof) : cfg->ca_label;
	rc = st_station_ca_info(st, label, subject, sizeof(subject), &days, err,
				sizeof(err));
	renew = prof ? st_profile_ca_renewal_days(prof) : 30;
	if (rc)
		say(o, fails, "ca", ST_CHECK_FAIL,
		    "install a valid issuing CA ('station ca csr' then 'ca import'; "
		    "'station ca show' lists them)", "%s", err);
	else if (days <= renew)
		say(o, fails, "ca", ST_CHECK_WARN,
		    "renew it now ('station ca csr' for the next CA)",
		    "'%s' valid, %d days left (renewal window %d days)", subject, days,
		    renew);
	else
		say(o, fails, "ca", ST_CHECK_OK, NULL, "'%s' valid, %d days left", subject,
		    days);
	return;
skip_pin:
	say(o, fails, "pin", ST_CHECK_WARN, "fix the token first", "not checked");
skip_ca:
	say(o, fails, "ca", ST_CHECK_WARN, "log in first (the PIN)", "not checked");
}

/* The records: the store (or its directory, before the first run)
 * writable by this user, and room on its file system. */
static void check_records(st_station *st, const st_doctor_opts *o, int *fails)
{
	const st_config *cfg = st_station_config(st);
	char dir[PATH_MAX], tmp[PATH_MAX];
	struct statvfs vfs;
	bool exists;
	unsigned long long free_mb;
	int e = 0;

	snprintf(tmp, sizeof(tmp), "%s", cfg->records_path);
	snprintf(dir, sizeof(dir), "%s", dirname(tmp));
	exists = access(cfg->records_path, F_OK) == 0;
	if (access(dir, F_OK))
		say(o, fails, "records", ST_CHECK_FAIL,
		    "create the directory (the package makes /var/lib/station)",
		    "%s: directory %s does not exist", cfg->records_path, dir);
	else if ((access(dir, W_OK) && (e = errno)) ||
		 (exists && access(cfg->records_path, R_OK | W_OK) && (e = errno)))
		say(o, fails, "records", ST_CHECK_FAIL,
		    "give this user write access (owner or group station) to the "
		    "store and its directory: SQLite writes its journal beside it",
		    "%s is not writable here (%s)", exists && access(dir, W_OK) == 0 ?
		    cfg->records_path : dir, strerror(e));
	else
		say(o, fails, "records", ST_CHECK_OK, NULL, "%s %s", cfg->records_path,
		    exists ? "writable" : "not there yet: made at the first run");
	if (statvfs(dir, &vfs)) {
		say(o, fails, "disk", ST_CHECK_WARN, "", "free space of %s unknown: %s", dir,
		    strerror(errno));
		return;
	}
	free_mb = (unsigned long long)vfs.f_bavail * vfs.f_frsize / (1024 * 1024);
	if (free_mb < ST_DOCTOR_DISK_FAIL_MB)
		say(o, fails, "disk", ST_CHECK_FAIL,
		    "free space there: a unit is not started when its record cannot be "
		    "written", "%llu MiB free on %s (less than %d MiB)", free_mb, dir,
		    ST_DOCTOR_DISK_FAIL_MB);
	else if (free_mb < ST_DOCTOR_DISK_WARN_MB)
		say(o, fails, "disk", ST_CHECK_WARN, "free space there before the next "
		    "shift", "%llu MiB free on %s (less than %d MiB)", free_mb, dir,
		    ST_DOCTOR_DISK_WARN_MB);
	else
		say(o, fails, "disk", ST_CHECK_OK, NULL, "%llu MiB free on %s", free_mb, dir);
}

/* Programmers' device nodes belong to the group the udev rules name
 * (udev/70-station.rules): the user needs it, or root. */
static void check_group(const st_doctor_opts *o, int *fails)
{
	struct group *g = getgrnam(ST_UDEV_GROUP);
	gid_t groups[256];
	int n;

	if (geteuid() == 0) {
		say(o, fails, "group", ST_CHECK_OK, NULL, "running as root");
		return;
	}
	if (!g) {
		say(o, fails, "group", ST_CHECK_FAIL,
		    "install the station package (it makes the group and the udev rules)",
		    "no group '%s' on this machine", ST_UDEV_GROUP);
		return;
	}
	n = getgroups((int)ST_ARRAY_SIZE(groups), groups);
	for (int i = 0; i < n; i++)
		if (groups[i] == g->gr_gid) {
			say(o, fails, "group", ST_CHECK_OK, NULL, "in group '%s'",
			    ST_UDEV_GROUP);
			return;
		}
	if (getegid() == g->gr_gid) {
		say(o, fails, "group", ST_CHECK_OK, NULL, "in group '%s'", ST_UDEV_GROUP);
		return;
	}
	say(o, fails, "group", ST_CHECK_FAIL,
	    "add the user (usermod -aG " ST_UDEV_GROUP " USER) and log in again",
	    "not in group '%s': the programmers' device nodes are not this user's",
	    ST_UDEV_GROUP);
}

/* Every slot's programmer attached and answering. */
static void check_programmers(const st_doctor_opts *o, int *fails)
{
	bool present[ST_MAX_SLOTS];
	char err[512] = "";
	size_t found = 0, have = 0;
	int rc;

	if (!o->nslots) {
		say(o, fails, "programmers", ST_CHECK_WARN,
		    "list the slots in the configuration (slots) or give --slot",
		    "no slots configured");
		return;
	}
	rc = st_devices_present(o->slots, o->nslots, present, &found, err, sizeof(err));
	if (rc) {
		say(o, fails, "programmers", ST_CHECK_FAIL, "see 'station devices'",
		    "cannot list programmers: %s", err);
		return;
	}
	for (size_t i = 0; i < o->nslots; i++)
		have += present[i];
	for (size_t i = 0; i < o->nslots; i++)
		if (!present[i]) {
			say(o, fails, "programmers", ST_CHECK_FAIL,
			    "plug it in and check its cable ('station devices' lists what "
			    "answers)", "%zu of %zu slots have a programmer; slot %zu (%s) "
			    "has none that answers", have, o->nslots, i + 1, o->slots[i]);
			return;
		}
	say(o, fails, "programmers", ST_CHECK_OK, NULL, "%zu of %zu slots have a "
	    "programmer that answers", have, o->nslots);
}

int st_station_doctor(st_station *st, const st_doctor_opts *o)
{
	st_profile *prof = NULL;
	int fails = 0;

	check_config(st, o, &fails);
	check_profile(st, o, &fails, &prof);
	check_hsm(st, o, &fails, prof);
	check_records(st, o, &fails);
	check_group(o, &fails);
	check_programmers(o, &fails);
	st_profile_free(prof);
	st_station_logout(st);
	return fails;
}

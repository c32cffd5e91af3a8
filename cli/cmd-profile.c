/* cmd_profile.c — signed profiles, the operator list, the revocation list
 * and quarantine release from the command line (docs/profiles.md,
 * docs/roles.md).  Every action that changes what the line does is
 * recorded with who did it, signed with the station's audit key. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "cli/cli.h"
#include "cli/cmd-profile.h"

int st_cli_authenticate(st_station *st, const char *name, const char *file,
			const char *env, unsigned role)
{
	char pw[256], ask[160], err[512] = "", why[600], recerr[512];
	st_secret_src src = { .file = file, .env = env, .file_opt =
			      role == ST_ROLE_SUPERVISOR ? "--supervisor-password-file" :
			      "--password-file", .what = "password", .prompt = ask };
	size_t len = 0;
	int rc;

	/* the list first: nobody is asked for a password it cannot check */
	rc = st_station_roster_check(st, err, sizeof(err));
	if (rc)
		return st_say(ST_EXIT_USAGE, "operator list: %s", err);
	snprintf(ask, sizeof(ask), "Password for %s '%s'", st_role_name(role), name);
	rc = st_secret_get(&src, pw, sizeof(pw), &len, err, sizeof(err));
	if (rc)
		snprintf(why, sizeof(why), "%s", err);
	rc = st_station_authenticate(st, name, rc ? NULL : pw, len, role, false,
				     why, sizeof(why), recerr, sizeof(recerr));
	st_wipe(pw, sizeof(pw));
	if (!rc)
		return 0;
	if (recerr[0])
		fprintf(stderr, "station: the refusal could not be recorded: %s\n",
			recerr);
	return st_say(ST_EXIT_USAGE, "%s refused: %s", st_role_name(role), why);
}

/* The engineering key label: --key, else trust.engineering_key. */
static const char *key_label(const st_role_cli *c)
{
	return c->key_label ? c->key_label : c->cfg->engineering_key;
}

/* Copy src to dst through dst.tmp, fsync, rename. */
static int copy_atomic(const char *src, const char *dst, char *err, size_t errlen)
{
	char tmp[4096], buf[8192];
	int in = open(src, O_RDONLY | O_CLOEXEC), out = -1, rc = ST_E_IO;
	ssize_t n;

	snprintf(tmp, sizeof(tmp), "%s.tmp", dst);
	if (in < 0) {
		snprintf(err, errlen, "cannot read %s: %s", src, strerror(errno));
		return rc;
	}
	out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (out < 0) {
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
		goto cleanup;
	}
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			break;
	if (n != 0 || fsync(out) || close(out)) {
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
		out = -1;
		unlink(tmp);
		goto cleanup;
	}
	out = -1;
	if (rename(tmp, dst)) {
		snprintf(err, errlen, "cannot install %s: %s", dst, strerror(errno));
		unlink(tmp);
		goto cleanup;
	}
	rc = ST_OK;
cleanup:
	if (out >= 0)
		close(out);
	close(in);
	return rc;
}

/* profile install: an engineer puts a signed profile in place. */
static int profile_install(st_role_cli *c)
{
	const st_config *cfg = c->cfg;
	char err[10240] = "", in_sig[4096], dst_sig[4096];
	st_signed_info info;
	st_profile *p = NULL;
	int code;

	if (!c->in || !c->operator_name)
		return st_say(ST_EXIT_USAGE, "profile install: give the signed profile "
			      "with --in FILE and the engineer with --operator NAME");
	if (!cfg->profile_path)
		return st_say(ST_EXIT_USAGE, "profile install: the configuration names "
			      "no 'profile' to install to");
	if (st_profile_load_signed(cfg, c->in, &p, &info, err, sizeof(err)))
		return st_say(ST_EXIT_USAGE, "profile install: %s; nothing was installed",
			      err);
	code = c->store(c->ctx, true);
	if (!code)
		code = c->login(c->ctx);
	if (!code)
		code = st_cli_authenticate(c->st, c->operator_name,
					   c->password_file, "STATION_PASSWORD",
					   ST_ROLE_ENGINEER);
	if (code)
		goto cleanup;
	snprintf(in_sig, sizeof(in_sig), "%s.sig", c->in);
	snprintf(dst_sig, sizeof(dst_sig), "%s.sig", cfg->profile_path);
	if (st_station_audit_attach(c->st, err, sizeof(err))) {
		code = st_say(ST_EXIT_HSM, "audit key: %s", err);
		goto cleanup;
	}
	/* The signature first: between the two renames the old profile fails
	 * its check rather than a new profile running under an old name. */
	if (copy_atomic(in_sig, dst_sig, err, sizeof(err)) ||
	    copy_atomic(c->in, cfg->profile_path, err, sizeof(err))) {
		code = st_say(ST_EXIT_USAGE, "profile install: %s", err);
		goto cleanup;
	}
	if (st_station_record_profile_install(c->st, c->operator_name, p, &info,
					      c->in, cfg->profile_path, err,
					      sizeof(err))) {
		code = st_say(ST_EXIT_RECORDS, "profile installed but not recorded: %s",
			      err);
		goto cleanup;
	}
	printf("profile '%s' (sha256 %s, signed by %s) installed as %s by "
	       "engineer %s\n", st_profile_name(p), info.digest, info.anchor,
	       cfg->profile_path, c->operator_name);
cleanup:
	st_station_audit_detach(c->st);
	st_profile_free(p);
	return code;
}

int st_cmd_profile(st_role_cli *c, const char *sub)
{
	char err[1024] = "", sig[4096];
	int code, rc;

	if (!strcmp(sub, "verify")) {
		st_signed_info info;
		const char *path = c->in ? c->in : c->cfg->profile_path;

		if (!path)
			return st_say(ST_EXIT_USAGE, "profile verify: give --in FILE");
		if (st_verify_file(c->cfg, path, NULL, &info, err, sizeof(err)))
			return st_say(ST_EXIT_USAGE, "profile verify: %s", err);
		printf("%s: signature OK, signed by %s (key sha256 %s); file sha256 %s\n",
		       path, info.anchor, info.signer, info.digest);
		return 0;
	}
	if (!strcmp(sub, "install"))
		return profile_install(c);
	if (!key_label(c))
		return st_say(ST_EXIT_USAGE, "profile %s: name the engineering key with "
			      "--key LABEL (or trust.engineering_key)", sub);
	if (strcmp(sub, "sign") && !c->out)
		return st_say(ST_EXIT_USAGE, "profile %s: say where the public key goes "
			      "with --out FILE", sub);
	if (!strcmp(sub, "sign") && !c->in)
		return st_say(ST_EXIT_USAGE, "profile sign: give the file to sign with "
			      "--in FILE");
	if (c->key_type && !st_key_type_known(c->key_type))
		return st_say(ST_EXIT_USAGE, "profile keygen: --key-type must be p256, "
			      "p384, rsa3072 or ed25519");
	code = c->login(c->ctx);
	if (code)
		return code;
	if (!strcmp(sub, "sign")) {
		snprintf(sig, sizeof(sig), "%s.sig", c->in);
		rc = st_station_sign_file(c->st, key_label(c), c->in,
					  c->out ? c->out : sig, err, sizeof(err));
		if (!rc)
			printf("%s signed with '%s': %s\n", c->in, key_label(c),
			       c->out ? c->out : sig);
	} else {
		rc = st_station_engkey(c->st, key_label(c), c->key_type,
				       !strcmp(sub, "keygen"), c->out, err, sizeof(err));
		if (!rc)
			printf("engineering key '%s' is in token '%s'; its public key "
			       "(a trust anchor for trust.profile_keys) is in %s\n",
			       key_label(c), c->cfg->token_label, c->out);
	}
	if (rc == ST_E_NOTOKEN)
		return st_say(ST_EXIT_HSM, "HSM: %s", err);
	return rc ? st_say(rc == ST_E_IO ? ST_EXIT_USAGE : ST_EXIT_HSM, "profile %s: %s",
			   sub, err) : 0;
}

int st_cmd_operator(st_role_cli *c)
{
	char pw[256], hash[256], err[512] = "", ask[160];
	st_secret_src src = { .file = c->password_file, .env = "STATION_PASSWORD",
			      .file_opt = "--password-file", .what = "password",
			      .prompt = ask };
	const char *roles = c->roles ? c->roles : "operator";
	size_t len = 0;
	int rc;

	if (!c->operator_name)
		return st_say(ST_EXIT_USAGE, "operator hash: name the operator with "
			      "--operator NAME [--role operator,supervisor,engineer]");
	snprintf(ask, sizeof(ask), "New password for '%s'", c->operator_name);
	rc = st_secret_get(&src, pw, sizeof(pw), &len, err, sizeof(err));
	if (!rc)
		rc = st_password_hash(pw, len, hash, sizeof(hash), err, sizeof(err));
	st_wipe(pw, sizeof(pw));
	if (rc)
		return st_say(ST_EXIT_USAGE, "operator hash: %s", err);
	printf("{ name = \"%s\"; roles = [", c->operator_name);
	for (const char *p = roles; *p;) {
		size_t n = strcspn(p, ",");

		printf("%s\"%.*s\"", p == roles ? " " : ", ", (int)n, p);
		p += n + (p[n] == ',');
	}
	printf(" ]; hash = \"%s\"; },\n", hash);
	return 0;
}

int st_cmd_crl(st_role_cli *c)
{
	char err[1024] = "";
	long count = 0;
	int code, rc;

	if (!c->out)
		return st_say(ST_EXIT_USAGE, "crl export: say where the CRL goes with "
			      "--out FILE.crl [--days N]");
	code = c->store(c->ctx, true);
	if (code)
		return code;
	/* The list is made from the revocations table: only from a store in
	 * which every revocation row is its signed event and every revoke
	 * event has its row, so a deleted row cannot make a clean CRL. */
	if (st_station_records_verify(c->st, err, sizeof(err)))
		return st_say(ST_EXIT_RECORDS, "crl export: the records do "
			      "not verify, no CRL written (a revocation "
			      "could be missing from it): %s; see "
			      "'station records verify'", err);
	code = c->login(c->ctx);
	if (code)
		return code;
	rc = st_station_crl_export(c->st, c->days > 0 ? c->days : 7, c->out, &count,
				   err, sizeof(err));
	if (rc)
		return st_say(ST_EXIT_HSM, rc == ST_E_NOTOKEN ? "HSM: %s" :
			      "crl export: %s", err);
	if (st_station_record_crl_export(c->st, count, c->out, err, sizeof(err)))
		fprintf(stderr, "station: warning: the export could not be recorded: "
			"%s\n", err);
	printf("CRL with %ld revoked certificate%s written to %s\n", count,
	       count == 1 ? "" : "s", c->out);
	st_warn_open_certs(c->st);
	st_station_audit_detach(c->st);
	return 0;
}

void st_warn_open_certs(st_station *st)
{
	st_cert_tally t;
	char err[512] = "";

	st_warn_cert_tally(st_station_cert_tally(st, &t, err, sizeof(err)), &t, err);
}

void st_warn_cert_tally(int rc, const st_cert_tally *tally, const char *err)
{
	if (rc) {
		fprintf(stderr, "station: warning: cannot count the issued "
			"certificates: %s\n", err);
		return;
	}
	const st_cert_tally t = *tally;

	if (t.open)
		fprintf(stderr, "station: warning: %ld issued certificate%s belong%s "
			"to open units (RUNNING: in work, or interrupted and not "
			"presented again) and %s not revoked; when no station runs, "
			"'station records close-interrupted --supervisor NAME --reason "
			"TEXT' closes them and revokes their certificates\n", t.open,
			t.open == 1 ? "" : "s", t.open == 1 ? "s" : "",
			t.open == 1 ? "is" : "are");
	if (t.unrevoked)
		fprintf(stderr, "station: warning: %ld issued certificate%s of units "
			"that did not pass %s not revoked; 'station records "
			"close-interrupted' revokes them\n", t.unrevoked,
			t.unrevoked == 1 ? "" : "s", t.unrevoked == 1 ? "is" : "are");
}

int st_cmd_close_interrupted(st_role_cli *c)
{
	const st_config *cfg = c->cfg;
	st_close_result res;
	char err[1024] = "";
	int code, lock = -1;

	if (!c->supervisor_name || !c->reason || !*c->reason)
		return st_say(ST_EXIT_USAGE, "records close-interrupted: a supervisor "
			      "closes interrupted units, with a reason: give "
			      "--supervisor NAME and --reason TEXT");
	/* No run may hold a RUNNING record while it is closed. */
	if (st_run_lock(cfg->records_path, true, &lock, err, sizeof(err)))
		return st_say(ST_EXIT_USAGE, "records close-interrupted: %s", err);
	code = c->store(c->ctx, true);
	if (!code)
		code = c->login(c->ctx);
	if (!code)
		code = st_cli_authenticate(c->st, c->supervisor_name,
					   c->supervisor_password_file,
					   "STATION_SUPERVISOR_PASSWORD",
					   ST_ROLE_SUPERVISOR);
	if (code)
		goto cleanup;
	if (st_station_audit_attach(c->st, err, sizeof(err))) {
		code = st_say(ST_EXIT_HSM, "audit key: %s", err);
		goto cleanup;
	}
	if (st_station_close_interrupted(c->st, c->before, c->supervisor_name,
					 c->reason, &res, err, sizeof(err))) {
		code = st_say(ST_EXIT_RECORDS, "records close-interrupted: %s", err);
		goto cleanup;
	}
	printf("%ld interrupted unit record%s closed as FAIL and %ld certificate%s "
	       "revoked by supervisor %s; export the CRL ('station crl export') "
	       "to publish them\n", res.closed, res.closed == 1 ? "" : "s",
	       res.revoked, res.revoked == 1 ? "" : "s", c->supervisor_name);
cleanup:
	st_station_audit_detach(c->st);
	st_run_unlock(lock);
	return code;
}

int st_cmd_quarantine(st_role_cli *c)
{
	char err[1024] = "", state[32] = "";
	int64_t id = 0;
	st_verdict v;
	int code, rc;

	if (!c->uid)
		return st_say(ST_EXIT_USAGE, "quarantine release: name the device with "
			      "--uid UID (and --supervisor NAME --reason TEXT)");
	if (!c->supervisor_name || !c->reason || !*c->reason)
		return st_say(ST_EXIT_USAGE, "quarantine release: a supervisor releases a "
			      "unit, with a reason: give --supervisor NAME and --reason TEXT");
	code = c->store(c->ctx, true);
	if (code)
		return code;
	/* Asked before the password: no supervisor is called for nothing. */
	rc = st_station_last_unit(c->st, c->uid, &id, state, sizeof(state));
	if (rc || !st_verdict_parse(state, &v) || v != ST_VERDICT_QUARANTINE) {
		code = st_say(ST_EXIT_USAGE, "quarantine release: device %s is not "
			      "quarantined (%s%s): nothing to release", c->uid,
			      rc ? "no record" : "its last record is ", rc ? "" : state);
		goto cleanup;
	}
	code = c->login(c->ctx);
	if (!code)
		code = st_cli_authenticate(c->st, c->supervisor_name,
					   c->supervisor_password_file,
					   "STATION_SUPERVISOR_PASSWORD",
					   ST_ROLE_SUPERVISOR);
	if (code)
		goto cleanup;
	if (st_station_audit_attach(c->st, err, sizeof(err))) {
		code = st_say(ST_EXIT_HSM, "audit key: %s", err);
		goto cleanup;
	}
	rc = st_station_quarantine_release(c->st, c->uid, c->supervisor_name,
					   c->reason, &id, err, sizeof(err));
	if (rc) {
		code = st_say(rc == ST_E_STATE ? ST_EXIT_USAGE : ST_EXIT_RECORDS,
			      "quarantine release: %s", err);
		goto cleanup;
	}
	printf("device %s released from quarantine by supervisor %s (unit record "
	       "%lld); it is provisioned again when next presented\n", c->uid,
	       c->supervisor_name, (long long)id);
cleanup:
	st_station_audit_detach(c->st);
	return code;
}

/* ---- The entry ---- */

static int exec_profile(struct cli *cli, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return st_cmd_profile(cli_role(cli), cli->sub->name);
}

static const struct cli_sub profile_subs[] = {
	{ .name = "keygen",
	  .usage = "profile keygen --key LABEL --out PUB.pem [--key-type T]",
	  .help = "make an engineering key in the token, export its public key",
	  .options = (const enum cli_opt[]){ O_KEY, O_OUT, O_KEY_TYPE, O_NONE },
	  .needs = CLI_NEED_CONFIG | CLI_NEED_HSM, .exec = exec_profile },
	{ .name = "pubkey", .usage = "profile pubkey --key LABEL --out PUB.pem",
	  .help = "export the public key of an engineering key",
	  .options = (const enum cli_opt[]){ O_KEY, O_OUT, O_KEY_TYPE, O_NONE },
	  .needs = CLI_NEED_CONFIG | CLI_NEED_HSM, .exec = exec_profile },
	{ .name = "sign", .usage = "profile sign [--key LABEL] --in FILE [--out FILE.sig]",
	  .help = "sign a profile (or operator list) with an engineering key",
	  .options = (const enum cli_opt[]){ O_KEY, O_IN, O_OUT, O_NONE },
	  .needs = CLI_NEED_CONFIG | CLI_NEED_HSM, .exec = exec_profile },
	{ .name = "verify", .usage = "profile verify [--in FILE]",
	  .help = "check a signed file against the trusted keys",
	  .options = (const enum cli_opt[]){ O_IN, O_NONE },
	  .needs = CLI_NEED_CONFIG, .exec = exec_profile },
	{ .name = "install",
	  .usage = "profile install --in FILE --operator ENGINEER [--password-file F]",
	  .help = "check a signed profile, put it in place, record it",
	  .options = (const enum cli_opt[]){ O_IN, O_OPERATOR, O_PASSWORD_FILE, O_NONE },
	  /* sets a line up: the install (and a refusal) goes on record in a
	   * store made for it when there is none yet */
	  .needs = CLI_NEED_CONFIG | CLI_NEED_STORE_RW | CLI_NEED_STORE_NEW |
		   CLI_NEED_HSM,
	  .exec = exec_profile },
	{ NULL },
};

const struct cli_entry cli_cmd_profile = {
	.name = "profile",
	.usage = "profile keygen|pubkey --key LABEL --out PUB.pem [--key-type T]   (engineering key)\n"
		 "  profile sign [--key LABEL] --in FILE [--out FILE.sig]\n"
		 "  profile verify [--in FILE]\n"
		 "  profile install --in FILE --operator ENGINEER   (checked, put in place, recorded)",
	.help = "Signed product profiles (docs/profiles.md).",
	.subs = profile_subs,
};

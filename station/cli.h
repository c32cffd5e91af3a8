/* cli.h — what the station's commands share (station/main.c and the
 * cmd_*.c files): the one way an error reaches the operator, opening the
 * records named in the configuration, and the --ca-cert check of audit
 * certificates that `records verify` and `records verify --pg` make. */
#ifndef ST_CLI_H
#define ST_CLI_H

#include <openssl/x509.h>
#include <stddef.h>

#include "records/records.h"
#include "station/station.h"

/* The exit codes of main.c (README "Exit codes"). */
#define ST_EXIT_USAGE 2
#define ST_EXIT_HSM 3
#define ST_EXIT_RECORDS 4

/* "station: <message>" on stderr (what failed and what to do); returns
 * code, the exit code the caller passes on. */
int st_say(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Open cfg's records into *r; 0, or ST_EXIT_RECORDS after saying why. */
int st_cli_open_store(const st_config *cfg, rec_store **r);

/* What audit certificates are checked against: the CA certificates in
 * the PEM file ca_cert (--ca-cert; it may hold several), or else those in
 * the configured token (read without logging in; when none is visible that
 * way and login is not NULL, after login(ctx, &h)).  0, or an exit code
 * after saying why (no token reachable: pass --ca-cert). */
typedef struct st_cli_trust st_cli_trust;
int st_cli_trust_open(const st_config *cfg, const char *ca_cert,
		      int (*login)(void *ctx, hsm **out), void *ctx,
		      st_cli_trust **out);
/* "the CA given with --ca-cert", "the CA certificate in token 'x'". */
const char *st_cli_trust_what(const st_cli_trust *t);
void st_cli_trust_free(st_cli_trust *t);

/* A rec_cert_check_fn, ctx the st_cli_trust: an audit certificate counts
 * only when one of the CAs issued and signed it, it is not a CA, and it
 * carries the audit extendedKeyUsage; a CA-issued certificate without it
 * counts only for a key such an audit certificate certifies too (the
 * old certificate of a re-certified key: REC_CERT_SUPERSEDED), so a device
 * certificate never does. */
int st_cli_check_audit(void *ctx, const char *pem, char *why, size_t len);

#endif

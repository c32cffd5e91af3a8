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

/* The CA certificate at path (PEM), or NULL when it cannot be read. */
X509 *st_cli_read_cert(const char *path);

/* A rec_cert_check_fn: accept an audit certificate only when ctx (the
 * X509 CA given with --ca-cert) issued and signed it. */
int st_cli_check_issuer(void *ctx, const char *pem, char *why, size_t len);

#endif

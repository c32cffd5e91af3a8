/* bench-hsm.c — raw rates of the token the station uses, for `make bench`:
 * ECDSA P-256 signatures (CKM_ECDSA over a host hash, as the station signs
 * certificates and audit events) and P-256 key generation as session
 * objects.  Prints "sign_per_s N" and "keygen_per_s N".
 *
 *   bench-hsm MODULE TOKEN SECONDS [INIT_ARGS]   (PIN from STATION_PIN;
 *   INIT_ARGS as hsm.init_args, for NSS softokn) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "hsm/hsm.h"

/* Run fn for about ms milliseconds; return operations per second. */
static double rate(hsm_session *s, hsm_obj key, int ms, int keygen)
{
	uint8_t dig[32] = { 1 }, sig[HSM_P256_SIG_LEN], pub[HSM_P256_POINT_LEN];
	int64_t t0 = st_now_ms(), t;
	long n = 0;

	do {
		size_t len = sizeof(sig);
		hsm_obj k;

		if (keygen) {
			if (hsm_keygen_p256(s, "bench", false, pub, &k))
				return -1;
			hsm_destroy(s, k);
		} else if (hsm_sign_digest(s, key, dig, sizeof(dig), sig, &len)) {
			return -1;
		}
		n++;
		t = st_now_ms() - t0;
	} while (t < ms);
	return n * 1000.0 / (double)t;
}

int main(int argc, char **argv)
{
	const char *pin = getenv("STATION_PIN");
	uint8_t pub[HSM_P256_POINT_LEN];
	hsm_session *s = NULL;
	hsm *h = NULL;
	hsm_obj key;
	double sign, gen;
	int secs;

	if (argc < 4 || argc > 5 || !pin) {
		fprintf(stderr, "usage: STATION_PIN=... bench-hsm MODULE TOKEN SECONDS "
			"[INIT_ARGS]\n");
		return 2;
	}
	secs = atoi(argv[3]);
	if (hsm_open_with(argv[1], argv[2], argc == 5 ? argv[4] : NULL, &h) || hsm_login(h, pin, strlen(pin)) ||
	    hsm_session_open(h, &s) || hsm_keygen_p256(s, "bench-signer", false, pub, &key)) {
		fprintf(stderr, "bench-hsm: %s\n", s ? hsm_session_errmsg(s) : hsm_errmsg(h));
		hsm_session_close(s);
		hsm_close(h);
		return 1;
	}
	sign = rate(s, key, secs * 1000, 0);
	gen = rate(s, key, secs * 1000, 1);
	printf("sign_per_s %.0f\nkeygen_per_s %.0f\n", sign, gen);
	hsm_session_close(s);
	hsm_close(h);
	return sign < 0 || gen < 0;
}

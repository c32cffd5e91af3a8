/* login.c — opening the station's token and logging in, shared by the CLI
 * (PIN from a file, the environment or a prompt, with the PIN-count warning
 * shown between opening the token and the attempt) and the UI (PIN typed on
 * its login screen).  The PIN is the caller's to wipe. */
#include <stdio.h>

#include "base.h"
#include "station/st_int.h"
#include "station.h"

int st_hsm_open(const st_config *cfg, hsm **out, char *err, size_t errlen)
{
	hsm *h = NULL;
	int rc;

	*out = NULL;
	rc = hsm_open_with(cfg->hsm_module, cfg->token_label, cfg->hsm_init_args, &h);
	if (rc) {
		snprintf(err, errlen, "%s", h ? hsm_errmsg(h) : st_strerror(rc));
		hsm_close(h);
		return rc;
	}
	*out = h;
	return ST_OK;
}

int st_hsm_auth(const st_config *cfg, hsm *h, const char *pin, size_t pinlen,
		char *err, size_t errlen)
{
	int rc = hsm_login(h, pin, pinlen);

	if (rc == ST_E_PIN)
		snprintf(err, errlen, "wrong PIN for token '%s' (%s)", cfg->token_label,
			 hsm_errmsg(h));
	else if (rc)
		snprintf(err, errlen, "login to token '%s' failed: %s", cfg->token_label,
			 hsm_errmsg(h));
	return rc;
}

int st_hsm_login(const st_config *cfg, const char *pin, size_t pinlen,
		 hsm **out, char *err, size_t errlen)
{
	hsm *h = NULL;
	int rc;

	*out = NULL;
	rc = st_hsm_open(cfg, &h, err, errlen);
	if (rc)
		return rc;
	rc = st_hsm_auth(cfg, h, pin, pinlen, err, errlen);
	if (rc) {
		hsm_close(h);
		return rc;
	}
	*out = h;
	return ST_OK;
}

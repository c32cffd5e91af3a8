/* registry.c — the static driver table and the drv_* core: URI dispatch,
 * private state allocation, argument checks, error messages. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "device-drivers/drv_api.h"
#include "device-drivers/esp32/esp32.h"
#include "device-drivers/stprog/stprog.h"
#include "device-drivers/usb/usb.h"
#include "device-drivers/tpm2/tpm2.h"

/* Every driver, by URI scheme.  Add a line here to add a driver. */
static const struct drv_ops *const drivers[] = {
	&stprog_serial_ops,
	&stprog_usb_ops,
	&tpm2_ops,
	&esp32_ops,
};

const struct drv_ops *drv_driver_at(size_t i)
{
	return i < ST_ARRAY_SIZE(drivers) ? drivers[i] : NULL;
}

struct drv_dev {
	const struct drv_ops *ops;
	void *priv;
	size_t priv_size;
	int opened;          /* ops->open succeeded: ops->close is owed */
	char port[256];      /* path without scheme and query, for messages */
	char err[512];
};

void *drv_priv(drv_dev *d)
{
	return d->priv;
}

void drv_set_error(drv_dev *d, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(d->err, sizeof(d->err), fmt, ap);
	va_end(ap);
}

const char *drv_errmsg(const drv_dev *d)
{
	return d ? d->err : "no programmer handle (out of memory?)";
}

const char *drv_driver_name(const drv_dev *d)
{
	return d && d->ops ? d->ops->name : "";
}

const char *drv_port(const drv_dev *d)
{
	return d ? d->port : "";
}

/* Pick the driver for uri; *path gets the part the driver opens. */
static const struct drv_ops *lookup(const char *uri, const char **path)
{
	const char *colon = strchr(uri, ':');

	/* A plain path (absolute, ./relative, or with no scheme) is serial. */
	if (uri[0] == '/' || uri[0] == '.' || !colon) {
		*path = uri;
		return &stprog_serial_ops;
	}
	*path = colon + 1;
	for (size_t i = 0; i < ST_ARRAY_SIZE(drivers); i++)
		if (strlen(drivers[i]->name) == (size_t)(colon - uri) &&
		    !strncmp(drivers[i]->name, uri, (size_t)(colon - uri)))
			return drivers[i];
	return NULL;
}

int drv_open(const char *uri, const drv_opts *opts, drv_dev **out)
{
	static const drv_opts defaults;
	const char *path;
	drv_dev *d;
	size_t plen;
	int rc;

	if (!out)
		return ST_E_INVAL;
	*out = NULL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return ST_E_NOMEM;
	*out = d;
	if (!uri || !*uri) {
		drv_set_error(d, "no programmer URI given");
		return ST_E_CONFIG;
	}
	d->ops = lookup(uri, &path);
	plen = strcspn(path, "?");
	snprintf(d->port, sizeof(d->port), "%.*s", (int)plen, path);
	if (!d->ops) {
		drv_set_error(d, "no driver for '%s' (use serial:/dev/ttyX, a "
			      "path, usb:VID:PID, tpm2:<TCTI> or esp32:/dev/ttyX)", uri);
		return ST_E_CONFIG;
	}
	d->priv_size = d->ops->priv_size;
	if (d->ops->priv_secret) {
		char why[256] = "";

		rc = st_secret_alloc(d->priv_size, &d->priv, why, sizeof(why));
		if (rc == ST_E_IO) {
			drv_set_error(d, "%s: the %s driver's buffers carry eFuse keys "
				      "and are never held in swappable or dumpable "
				      "memory: %s", d->port, d->ops->name, why);
			return rc;
		}
	} else {
		d->priv = calloc(1, d->priv_size ? d->priv_size : 1);
	}
	if (!d->priv) {
		drv_set_error(d, "out of memory opening %s", d->port);
		return ST_E_NOMEM;
	}
	rc = d->ops->open(d, path, opts ? opts : &defaults);
	if (rc == ST_OK)
		d->opened = 1;
	else if (!d->err[0])
		drv_set_error(d, "cannot open %s: %s", d->port, st_strerror(rc));
	return rc;
}

void drv_close(drv_dev *d)
{
	if (!d)
		return;
	if (d->opened && d->ops->close)
		d->ops->close(d);
	if (d->ops && d->ops->priv_secret) {
		st_secret_free(d->priv, d->priv_size);
	} else if (d->priv) {
		st_wipe(d->priv, d->priv_size);
		free(d->priv);
	}
	free(d);
}

/* Common entry check: an open device; clears the previous cause. */
static int ready(drv_dev *d)
{
	if (!d)
		return ST_E_INVAL;
	d->err[0] = '\0';
	if (!d->opened) {
		drv_set_error(d, "programmer %s is not open", d->port);
		return ST_E_STATE;
	}
	return ST_OK;
}

/* Fill in a generic cause when a driver forgot to. */
static int finish(drv_dev *d, int rc, const char *what)
{
	if (rc != ST_OK && !d->err[0])
		drv_set_error(d, "%s on %s: %s", what, d->port, st_strerror(rc));
	return rc;
}

static int bad_arg(drv_dev *d, const char *what)
{
	drv_set_error(d, "%s: bad argument", what);
	return ST_E_INVAL;
}

int drv_identify(drv_dev *d, drv_info *info)
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!info)
		return bad_arg(d, "identify");
	return finish(d, d->ops->identify(d, info), "identify");
}

int drv_keygen(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN])
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!pub)
		return bad_arg(d, "keygen");
	return finish(d, d->ops->keygen(d, pub), "keygen");
}

int drv_keygen_req(drv_dev *d, uint32_t request_id, uint8_t pub[DRV_P256_POINT_LEN])
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!pub)
		return bad_arg(d, "keygen");
	if (!d->ops->keygen_req)
		return finish(d, d->ops->keygen(d, pub), "keygen");
	return finish(d, d->ops->keygen_req(d, request_id, pub), "keygen");
}

void drv_link_stats(drv_dev *d, drv_linkstat *out)
{
	memset(out, 0, sizeof(*out));
	if (d && d->ops && d->ops->link_stats)
		d->ops->link_stats(d, out);
}

int drv_get_pubkey(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN])
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!pub)
		return bad_arg(d, "get_pubkey");
	return finish(d, d->ops->get_pubkey(d, pub), "get_pubkey");
}

int drv_write_cert(drv_dev *d, const uint8_t *der, size_t len)
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!der || len == 0 || len > DRV_MAX_CERT) {
		drv_set_error(d, "write_cert: certificate of %zu bytes (1..%d "
			      "allowed)", len, DRV_MAX_CERT);
		return ST_E_INVAL;
	}
	return finish(d, d->ops->write_cert(d, der, len), "write_cert");
}

int drv_read_cert(drv_dev *d, uint8_t *buf, size_t cap, size_t *len)
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!buf || !len)
		return bad_arg(d, "read_cert");
	return finish(d, d->ops->read_cert(d, buf, cap, len), "read_cert");
}

int drv_sign_challenge(drv_dev *d, const uint8_t *challenge, size_t clen,
		       uint8_t *sig, size_t cap, size_t *siglen)
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!challenge || clen < 16 || clen > 64 || !sig || !siglen) {
		drv_set_error(d, "sign_challenge: challenge must be 16..64 bytes "
			      "(got %zu)", clen);
		return ST_E_INVAL;
	}
	return finish(d, d->ops->sign_challenge(d, challenge, clen, sig, cap,
						 siglen), "sign_challenge");
}

int drv_fuse_read(drv_dev *d, unsigned bank, uint8_t out[DRV_FUSE_BANK_LEN])
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!out)
		return bad_arg(d, "fuse_read");
	return finish(d, d->ops->fuse_read(d, bank, out), "fuse_read");
}

int drv_fuse_burn(drv_dev *d, unsigned bank, const uint8_t value[DRV_FUSE_BANK_LEN],
		  uint32_t request_id, uint8_t readback[DRV_FUSE_BANK_LEN])
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!value || !readback)
		return bad_arg(d, "fuse_burn");
	return finish(d, d->ops->fuse_burn(d, bank, value, request_id, readback),
		      "fuse_burn");
}

int drv_fuse_read_status(drv_dev *d, unsigned bank, uint8_t out[DRV_FUSE_BANK_LEN],
			 uint8_t *faulty)
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!out || !faulty)
		return bad_arg(d, "fuse_read_status");
	*faulty = 0;
	if (!d->ops->fuse_read_status)
		return finish(d, d->ops->fuse_read(d, bank, out), "fuse_read");
	return finish(d, d->ops->fuse_read_status(d, bank, out, faulty),
		      "fuse_read_status");
}

int drv_efuse_key_burn(drv_dev *d, unsigned key_block, uint8_t purpose,
		       const uint8_t key[DRV_EFUSE_KEY_LEN])
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!key)
		return bad_arg(d, "efuse_key_burn");
	if (!d->ops->efuse_key_burn) {
		drv_set_error(d, "driver %s has no eFuse key blocks to burn a key "
			      "into", d->ops->name);
		return ST_E_STATE;
	}
	return finish(d, d->ops->efuse_key_burn(d, key_block, purpose, key),
		      "efuse_key_burn");
}

int drv_otp_is_nv(const drv_dev *d)
{
	return d && d->ops && d->ops->otp_is_nv;
}

int drv_otp_self_timed(const drv_dev *d)
{
	return d && d->ops && d->ops->otp_self_timed;
}

int drv_get_conditions(drv_dev *d, drv_conditions *out)
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!out)
		return bad_arg(d, "get_conditions");
	if (!d->ops->conditions) {
		drv_set_error(d, "driver %s cannot report programming voltage and "
			      "temperature: fuses cannot be burned safely with it",
			      d->ops->name);
		return ST_E_STATE;
	}
	return finish(d, d->ops->conditions(d, out), "get_conditions");
}

int drv_set_lifecycle(drv_dev *d, uint8_t state)
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (state > DRV_LC_LOCKED) {
		drv_set_error(d, "set_lifecycle: unknown state %u", state);
		return ST_E_INVAL;
	}
	return finish(d, d->ops->set_lifecycle(d, state), "set_lifecycle");
}

int drv_release(drv_dev *d)
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!d->ops->release) {
		drv_set_error(d, "driver %s cannot release units; swap the unit "
			      "by hand", d->ops->name);
		return ST_E_STATE;
	}
	return finish(d, d->ops->release(d), "release");
}

/* Open uri briefly to learn its firmware version (listings). */
static void ask_fw(drv_found *f, const char *uri)
{
	drv_opts opts = { .timeout_ms = 500, .retries = -1 };
	drv_dev *d = NULL;
	int rc = drv_open(uri, &opts, &d);

	if (rc == ST_OK && d->ops->fw_version)
		snprintf(f->fw_version, sizeof(f->fw_version), "%s",
			 d->ops->fw_version(d));
	else if (rc != ST_OK)
		snprintf(f->err, sizeof(f->err), "%.*s", (int)sizeof(f->err) - 1,
			 drv_errmsg(d));
	drv_close(d);
}

int drv_list(const char *const *serial_ports, size_t nports, drv_found **out,
	     size_t *n, char *err, size_t errlen)
{
	size_t nusb = 0, cap;
	drv_found *rows;
	int rc;

	*out = NULL;
	*n = 0;
	err[0] = '\0';
	/* Count first, then fill: programmers may come and go in between, so
	 * the second pass is clamped to what was allocated. */
	rc = usb_list(NULL, 0, &nusb, err, errlen);
	if (rc != ST_OK)
		return rc;
	cap = nusb + 4 + nports;
	rows = calloc(cap, sizeof(*rows));
	if (!rows)
		return ST_E_NOMEM;
	rc = usb_list(rows, cap - nports, &nusb, err, errlen);
	if (rc != ST_OK) {
		free(rows);
		return rc;
	}
	if (nusb > cap - nports)
		nusb = cap - nports;
	for (size_t i = 0; i < nusb; i++)
		ask_fw(&rows[i], rows[i].uri);
	for (size_t i = 0; i < nports; i++) {
		drv_found *f = &rows[nusb + i];

		snprintf(f->driver, sizeof(f->driver), "serial");
		snprintf(f->port, sizeof(f->port), "%.*s",
			 (int)strcspn(serial_ports[i], "?"), serial_ports[i]);
		snprintf(f->uri, sizeof(f->uri), "%s", serial_ports[i]);
		snprintf(f->product, sizeof(f->product), "serial programmer");
		ask_fw(f, serial_ports[i]);
	}
	*out = rows;
	*n = nusb + nports;
	return ST_OK;
}

struct drv_monitor {
	usb_monitor *usb;
};

int drv_monitor_open(drv_monitor **out, char *err, size_t errlen)
{
	drv_monitor *m;
	int rc;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return ST_E_NOMEM;
	rc = usb_monitor_open(&m->usb, err, errlen);
	if (rc != ST_OK) {
		free(m);
		return rc;
	}
	*out = m;
	return ST_OK;
}

int drv_monitor_wait(drv_monitor *m, int timeout_ms, drv_hotplug *ev)
{
	if (!m || !ev)
		return ST_E_INVAL;
	return usb_monitor_wait(m->usb, timeout_ms, ev);
}

void drv_monitor_close(drv_monitor *m)
{
	if (!m)
		return;
	usb_monitor_close(m->usb);
	free(m);
}

int drv_get_transport_key(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN])
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!pub)
		return bad_arg(d, "get_transport_key");
	if (!d->ops->get_transport_key) {
		drv_set_error(d, "driver %s cannot inject keys: use key mode "
			      "\"device\"", d->ops->name);
		return ST_E_DEVICE;
	}
	return finish(d, d->ops->get_transport_key(d, pub), "get_transport_key");
}

int drv_inject_key(drv_dev *d, const uint8_t eph[DRV_P256_POINT_LEN],
		   const uint8_t *wrapped, size_t len,
		   uint8_t pub[DRV_P256_POINT_LEN])
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!eph || !wrapped || !len || len > DRV_MAX_WRAPPED || !pub)
		return bad_arg(d, "inject_key");
	if (!d->ops->inject_key) {
		drv_set_error(d, "driver %s cannot inject keys: use key mode "
			      "\"device\"", d->ops->name);
		return ST_E_DEVICE;
	}
	return finish(d, d->ops->inject_key(d, eph, wrapped, len, pub), "inject_key");
}

/* The firmware ops are optional: a driver without them says so, naming
 * itself, so a profile with images fails the unit clearly. */
static int no_images(drv_dev *d, const char *what)
{
	drv_set_error(d, "driver %s cannot %s: a profile with a firmware "
		      "group needs a target whose driver writes and measures "
		      "images (docs/firmware.md)", d->ops->name, what);
	return ST_E_STATE;
}

int drv_image_info(drv_dev *d, const drv_image *img, drv_slot_info *out)
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!img || !out)
		return bad_arg(d, "image_info");
	if (!d->ops->image_info)
		return no_images(d, "report its image slots");
	return finish(d, d->ops->image_info(d, img, out), "image_info");
}

int drv_image_write(drv_dev *d, const drv_image *img, uint32_t *resumed_from)
{
	uint32_t from = 0;
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!img || !img->data || !img->len || img->len > UINT32_MAX)
		return bad_arg(d, "image_write");
	if (!d->ops->image_write)
		return no_images(d, "write firmware images");
	rc = finish(d, d->ops->image_write(d, img, &from), "image_write");
	if (resumed_from)
		*resumed_from = from;
	return rc;
}

int drv_attest(drv_dev *d, const uint8_t *nonce, size_t nlen, uint8_t *stmt,
	       size_t cap, size_t *stmtlen, uint8_t *sig, size_t sigcap,
	       size_t *siglen)
{
	int rc = ready(d);

	if (rc != ST_OK)
		return rc;
	if (!nonce || nlen < 16 || nlen > 64 || !stmt || !stmtlen || !sig || !siglen)
		return bad_arg(d, "attest");
	if (!d->ops->attest)
		return no_images(d, "attest what it holds");
	return finish(d, d->ops->attest(d, nonce, nlen, stmt, cap, stmtlen, sig,
					sigcap, siglen), "attest");
}

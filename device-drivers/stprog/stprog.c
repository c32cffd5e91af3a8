/* stprog.c — the station programmer drivers: the protocol (proto/) over a
 * termios serial line (serial/, "serial") or USB bulk endpoints (usb/,
 * "usb").  All protocol work is in proto/: the two drivers differ only in
 * open and close. */
#include "device-drivers/stprog/stprog.h"

#include <string.h>

#include "base.h"
#include "device-drivers/proto/proto.h"
#include "device-drivers/serial/serial.h"
#include "device-drivers/usb/usb.h"

struct stprog {
	serial_port port;
	usb_link usb;
	proto_client cl;
};

/* USB-serial adapters a serial programmer commonly sits behind; they get
 * the station group and a stable per-socket link from udev. */
static const struct drv_usb_id serial_adapter_ids[] = {
	{ 0x0403, 0x6001, "FTDI FT232R USB-serial" },
	{ 0x0403, 0x6015, "FTDI FT231X USB-serial" },
	{ 0x10c4, 0xea60, "Silicon Labs CP210x USB-serial" },
	{ 0x1a86, 0x7523, "WCH CH340 USB-serial" },
	{ 0, 0, NULL },
};

/* Copy the client's cause into the device and pass rc through. */
static int done(drv_dev *d, int rc)
{
	struct stprog *s = drv_priv(d);

	if (rc != ST_OK)
		drv_set_error(d, "%s", s->cl.err);
	return rc;
}

/* Put the protocol client on the opened transport and say HELLO now, so a
 * dead or wrong port fails at open, not mid-unit.  The caller closes the
 * transport when this fails. */
static int sp_hello(drv_dev *d, const proto_transport *t, const drv_opts *opts)
{
	struct stprog *s = drv_priv(d);

	proto_client_init(&s->cl, t, opts->timeout_ms, opts->retries);
	return done(d, proto_hello(&s->cl));
}

static int sp_open(drv_dev *d, const char *path, const drv_opts *opts)
{
	struct stprog *s = drv_priv(d);
	proto_transport t;
	char err[320];
	int rc;

	rc = serial_open(&s->port, path, err, sizeof(err));
	if (rc != ST_OK) {
		drv_set_error(d, "%s", err);
		return rc;
	}
	serial_transport(&s->port, &t);
	rc = sp_hello(d, &t, opts);
	if (rc != ST_OK)
		serial_close(&s->port);
	return rc;
}

static int sp_open_usb(drv_dev *d, const char *path, const drv_opts *opts)
{
	struct stprog *s = drv_priv(d);
	proto_transport t;
	char err[320];
	int rc;

	rc = usb_open(&s->usb, path, err, sizeof(err));
	if (rc != ST_OK) {
		drv_set_error(d, "%s", err);
		return rc;
	}
	usb_transport(&s->usb, &t);
	rc = sp_hello(d, &t, opts);
	if (rc != ST_OK)
		usb_close(&s->usb);
	return rc;
}

static int sp_identify(drv_dev *d, drv_info *info)
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_identify(&s->cl, info));
}

static int sp_keygen(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN])
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_keygen(&s->cl, pub));
}

static int sp_keygen_req(drv_dev *d, uint32_t request_id,
			 uint8_t pub[DRV_P256_POINT_LEN])
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_keygen_req(&s->cl, request_id, pub));
}

static void sp_link_stats(drv_dev *d, drv_linkstat *out)
{
	struct stprog *s = drv_priv(d);

	out->commands = s->cl.stats.commands;
	out->attempts = s->cl.stats.attempts;
	out->retries = s->cl.stats.retries;
	out->garbled = s->cl.stats.garbled;
	out->silent = s->cl.stats.silent;
}

static int sp_get_transport_key(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN])
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_get_transport_key(&s->cl, pub));
}

static int sp_inject_key(drv_dev *d, const uint8_t eph[DRV_P256_POINT_LEN],
			 const uint8_t *wrapped, size_t len,
			 uint8_t pub[DRV_P256_POINT_LEN])
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_inject_key(&s->cl, eph, wrapped, len, pub));
}

static int sp_get_pubkey(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN])
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_get_pubkey(&s->cl, pub));
}

static int sp_write_cert(drv_dev *d, const uint8_t *der, size_t len)
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_write_cert(&s->cl, der, len));
}

static int sp_read_cert(drv_dev *d, uint8_t *buf, size_t cap, size_t *len)
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_read_cert(&s->cl, buf, cap, len));
}

static int sp_sign_challenge(drv_dev *d, const uint8_t *chal, size_t clen,
			     uint8_t *sig, size_t cap, size_t *siglen)
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_sign_challenge(&s->cl, chal, clen, sig, cap, siglen));
}

static int sp_fuse_read(drv_dev *d, unsigned bank, uint8_t out[DRV_FUSE_BANK_LEN])
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_fuse_read(&s->cl, bank, out));
}

static int sp_fuse_burn(drv_dev *d, unsigned bank,
			const uint8_t value[DRV_FUSE_BANK_LEN], uint32_t request_id,
			uint8_t readback[DRV_FUSE_BANK_LEN])
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_fuse_burn(&s->cl, bank, value, request_id, readback));
}

static int sp_fuse_read_status(drv_dev *d, unsigned bank,
			       uint8_t out[DRV_FUSE_BANK_LEN], uint8_t *faulty)
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_fuse_read_status(&s->cl, bank, out, faulty));
}

static int sp_conditions(drv_dev *d, drv_conditions *out)
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_conditions(&s->cl, out));
}

static int sp_set_lifecycle(drv_dev *d, uint8_t state)
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_set_lifecycle(&s->cl, state));
}

static int sp_release(drv_dev *d)
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_release(&s->cl));
}

static int sp_image_info(drv_dev *d, const drv_image *img, drv_slot_info *out)
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_image_info(&s->cl, img->slot, out));
}

static int sp_image_write(drv_dev *d, const drv_image *img, uint32_t *resumed_from)
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_image_write(&s->cl, img, resumed_from));
}

static int sp_attest(drv_dev *d, const uint8_t *nonce, size_t nlen, uint8_t *stmt,
		     size_t cap, size_t *stmtlen, uint8_t *sig, size_t sigcap,
		     size_t *siglen)
{
	struct stprog *s = drv_priv(d);

	return done(d, proto_attest(&s->cl, nonce, nlen, stmt, cap, stmtlen, sig,
				    sigcap, siglen));
}

static void sp_close(drv_dev *d)
{
	struct stprog *s = drv_priv(d);

	serial_close(&s->port);
}

static const char *sp_fw_version(drv_dev *d)
{
	struct stprog *s = drv_priv(d);

	return s->cl.fw_version;
}

static void sp_close_usb(drv_dev *d)
{
	struct stprog *s = drv_priv(d);

	usb_close(&s->usb);
}

const struct drv_ops stprog_serial_ops = {
	.name = "serial",
	.priv_size = sizeof(struct stprog),
	.usb_ids = serial_adapter_ids,
	.udev_subsystem = "tty",
	.open = sp_open,
	.identify = sp_identify,
	.keygen = sp_keygen,
	.keygen_req = sp_keygen_req,
	.link_stats = sp_link_stats,
	.get_transport_key = sp_get_transport_key,
	.inject_key = sp_inject_key,
	.get_pubkey = sp_get_pubkey,
	.write_cert = sp_write_cert,
	.read_cert = sp_read_cert,
	.sign_challenge = sp_sign_challenge,
	.fuse_read = sp_fuse_read,
	.fuse_burn = sp_fuse_burn,
	.fuse_read_status = sp_fuse_read_status,
	.conditions = sp_conditions,
	.set_lifecycle = sp_set_lifecycle,
	.release = sp_release,
	.image_info = sp_image_info,
	.image_write = sp_image_write,
	.attest = sp_attest,
	.fw_version = sp_fw_version,
	.close = sp_close,
};

const struct drv_ops stprog_usb_ops = {
	.name = "usb",
	.priv_size = sizeof(struct stprog),
	.usb_ids = usb_prog_ids,
	.udev_subsystem = "usb",
	.open = sp_open_usb,
	.identify = sp_identify,
	.keygen = sp_keygen,
	.keygen_req = sp_keygen_req,
	.link_stats = sp_link_stats,
	.get_pubkey = sp_get_pubkey,
	.write_cert = sp_write_cert,
	.read_cert = sp_read_cert,
	.sign_challenge = sp_sign_challenge,
	.fuse_read = sp_fuse_read,
	.fuse_burn = sp_fuse_burn,
	.fuse_read_status = sp_fuse_read_status,
	.conditions = sp_conditions,
	.set_lifecycle = sp_set_lifecycle,
	.release = sp_release,
	.image_info = sp_image_info,
	.image_write = sp_image_write,
	.attest = sp_attest,
	.fw_version = sp_fw_version,
	.close = sp_close_usb,
};

/* drv_api.h — what a programmer driver implements.
 *
 * A driver fills one struct drv_ops with designated initialisers and is
 * listed in the static registry (registry.c).  The core allocates
 * priv_size bytes of zeroed private state per open device (drv_priv()),
 * locked and undumpable when the driver sets priv_secret.
 * All ops are mandatory unless noted optional; each returns an st_err and,
 * on failure, sets a readable cause with drv_set_error(). */
#ifndef ST_DRV_API_H
#define ST_DRV_API_H

#include <stdbool.h>

#include "drv.h"

/* A USB id a driver serves.  udev/70-station.rules is generated from these
 * tables (tools/gen-udev.c, `make udev`); `make check` fails when the
 * committed file differs. */
struct drv_usb_id {
	uint16_t vid, pid;
	const char *what;      /* comment in the rules, product in listings */
};

struct drv_ops {
	const char *name;      /* URI scheme, e.g. "serial" */
	size_t priv_size;      /* bytes of private state per device */
	/* The private state carries secrets (an eFuse key on its way to the
	 * chip): the core allocates it locked in RAM and out of core dumps
	 * (st_secret_alloc), refuses to open the device when it cannot, and
	 * wipes it at close. */
	bool priv_secret;
	/* Optional: USB ids served, ended by a zero row; udev_subsystem says
	 * whether they show up as USB devices ("usb") or as ttys ("tty",
	 * USB-serial adapters). */
	const struct drv_usb_id *usb_ids;
	const char *udev_subsystem;
	/* Open the port `path` (URI without the scheme), negotiate protocol. */
	int (*open)(drv_dev *d, const char *path, const drv_opts *opts);
	/* Identify the programmer and the inserted target. */
	int (*identify)(drv_dev *d, drv_info *info);
	/* On-chip key generation; returns the public point. */
	int (*keygen)(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN]);
	/* Optional: keygen under a request id, so a repeat of the same id
	 * (the reply was lost) returns the key made for it and makes no
	 * other; may be sent again.  Without it the core calls keygen. */
	int (*keygen_req)(drv_dev *d, uint32_t request_id,
			  uint8_t pub[DRV_P256_POINT_LEN]);
	/* Public point of the existing identity key. */
	int (*get_pubkey)(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN]);
	/* Store / read the certificate slot. */
	int (*write_cert)(drv_dev *d, const uint8_t *der, size_t len);
	int (*read_cert)(drv_dev *d, uint8_t *buf, size_t cap, size_t *len);
	/* Proof of possession: sign DRV_POP_PREFIX||chal, DER signature out. */
	int (*sign_challenge)(drv_dev *d, const uint8_t *chal, size_t clen,
			      uint8_t *sig, size_t cap, size_t *siglen);
	/* OTP fuses. */
	int (*fuse_read)(drv_dev *d, unsigned bank, uint8_t out[DRV_FUSE_BANK_LEN]);
	int (*fuse_burn)(drv_dev *d, unsigned bank,
			 const uint8_t value[DRV_FUSE_BANK_LEN], uint32_t request_id,
			 uint8_t readback[DRV_FUSE_BANK_LEN]);
	/* Optional: fuse_read plus the faulty-word mask (drv_fuse_read_status);
	 * without it the core reads with fuse_read and reports no faults. */
	int (*fuse_read_status)(drv_dev *d, unsigned bank,
				uint8_t out[DRV_FUSE_BANK_LEN], uint8_t *faulty);
	/* Optional: programming voltage and temperature; without it nothing
	 * can be burned through this driver. */
	int (*conditions)(drv_dev *d, drv_conditions *out);
	/* Optional: true when the target's one-time storage is NV memory the
	 * target writes itself (a TPM's write-once NV index), so no programming
	 * voltage/temperature window applies and conditions may be absent.  A
	 * driver for electrically programmed fuses leaves it false. */
	bool otp_is_nv;
	/* Optional: true when the target's own fuse controller makes the
	 * programming voltage and timing (an ESP32's eFuse controller, set up
	 * by the driver as the maker's tool does), so there is no external
	 * window the programmer could measure: conditions may be absent and
	 * the plan's window is not checked.  Burns are still judged by their
	 * read-back and the controller's error registers. */
	bool otp_self_timed;
	/* Optional: a secret key into an eFuse key block, read- and
	 * write-protected (drv_efuse_key_burn in drv.h, whose contract it
	 * keeps).  Without it the driver serves no identity that needs one. */
	int (*efuse_key_burn)(drv_dev *d, unsigned key_block, uint8_t purpose,
			      const uint8_t key[DRV_EFUSE_KEY_LEN]);
	/* Lifecycle advance. */
	int (*set_lifecycle)(drv_dev *d, uint8_t state);
	/* Optional: wrapped key injection (see drv_inject_key()). */
	int (*get_transport_key)(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN]);
	int (*inject_key)(drv_dev *d, const uint8_t eph[DRV_P256_POINT_LEN],
			  const uint8_t *wrapped, size_t len,
			  uint8_t pub[DRV_P256_POINT_LEN]);
	/* Optional: firmware images and attestation (drv_image_info,
	 * drv_image_write, drv_attest in drv.h, whose contracts they keep).
	 * image_write resumes from a prefix the target holds only after the
	 * target's own digest of it matched.  A driver without them serves
	 * profiles without a firmware group only. */
	int (*image_info)(drv_dev *d, const drv_image *img, drv_slot_info *out);
	int (*image_write)(drv_dev *d, const drv_image *img, uint32_t *resumed_from);
	int (*attest)(drv_dev *d, const uint8_t *nonce, size_t nlen, uint8_t *stmt,
		      size_t cap, size_t *stmtlen, uint8_t *sig, size_t sigcap,
		      size_t *siglen);
	/* Optional: finish this unit and present the next. */
	int (*release)(drv_dev *d);
	/* Optional: programmer firmware version learnt at open ("" unknown),
	 * so listings need no target inserted. */
	const char *(*fw_version)(drv_dev *d);
	/* Optional: what the link has cost since open (drv_link_stats). */
	void (*link_stats)(drv_dev *d, drv_linkstat *out);
	/* Release the port; private state is freed by the core. */
	void (*close)(drv_dev *d);
};

/* The driver's private state (priv_size zeroed bytes). */
void *drv_priv(drv_dev *d);

/* Record a readable cause for the failure being returned. */
void drv_set_error(drv_dev *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The port path the device was opened with. */
const char *drv_port(const drv_dev *d);

/* The i-th registered driver, NULL past the end (udev rule generator). */
const struct drv_ops *drv_driver_at(size_t i);

#endif

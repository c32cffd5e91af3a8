/* esp32.h — the ESP32-C3 through its ROM serial loader ("esp32:"), for the
 * registry.  docs/esp32.md: wiring, URI, the fuse plan, the referee. */
#ifndef ST_ESP32_H
#define ST_ESP32_H

#include <stdbool.h>

#include "device-drivers/drv_api.h"
#include "device-drivers/serial/serial.h"

/* "esp32:/dev/ttyUSB0[?baud=N]": a USB-UART bridge or the C3's own
 * USB-Serial-JTAG is the programmer; ROM commands only (no flasher stub). */
extern const struct drv_ops esp32_ops;

/* drv_ops.efuse_key_burn (esp32_identity.c): the ESP32-C3's HMAC key. */
int esp32_efuse_key_burn(drv_dev *d, unsigned key_block, uint8_t purpose,
			 const uint8_t key[DRV_EFUSE_KEY_LEN]);

/* ---- the factory app (esp32_app.c; docs/esp32.md "The factory app") ----
 * The identity ops run on the chip, in the maker's firmware booted from
 * flash, which speaks the station's device protocol on the same UART. */
int esp32_app_get_pubkey(drv_dev *d, uint8_t pub[DRV_P256_POINT_LEN]);
int esp32_app_read_cert(drv_dev *d, uint8_t *buf, size_t cap, size_t *len);
int esp32_app_sign_challenge(drv_dev *d, const uint8_t *chal, size_t clen,
			     uint8_t *sig, size_t cap, size_t *siglen);
int esp32_app_attest(drv_dev *d, const uint8_t *nonce, size_t nlen, uint8_t *stmt,
		     size_t cap, size_t *stmtlen, uint8_t *sig, size_t sigcap,
		     size_t *siglen);
/* The unit ID as the app's IDENTIFY gives it (for a chip opened in Secure
 * Download Mode, whose ROM refuses the eFuse reads): boots the app, asks,
 * returns to the loader.  The caller checks the uid's form. */
int esp32_app_identify(drv_dev *d, uint8_t uid[DRV_UID_LEN]);
/* What flash slot (0 the bootloader, 1 the first app partition) holds,
 * as the app measures it for its ATTEST statement (for a chip in Secure
 * Download Mode, whose ROM refuses flash reads): *held false when it holds
 * no complete image there. */
int esp32_app_measure(drv_dev *d, unsigned slot, bool *held, uint32_t *size,
		      uint8_t sha[DRV_SHA256_LEN]);
/* After a ROM reset that may have booted the app (FLASH_END's reboot on a
 * port without DTR/RTS): ask an app that answers to restart into the
 * loader.  Quiet and harmless when the loader is what runs. */
void esp32_app_leave_if_running(drv_dev *d);

/* Wipe every buffer a request or an answer passed through (the private
 * state's, locked and undumpable: priv_secret): after an eFuse burn,
 * which for a key block sent and read the key in them. */
void esp32_forget(drv_dev *d);

/* ---- what esp32.c lends esp32_app.c ---- */
/* The open port. */
serial_port *esp32_port(drv_dev *d);
/* Download mode was burned off: there is no loader to go back to. */
bool esp32_loader_gone(drv_dev *d);
/* esptool's `run`: FLASH_BEGIN of nothing, FLASH_END with reboot. */
int esp32_rom_run(drv_dev *d);
/* Back in the loader: the ROM's baud rate, reset (DTR/RTS when the port
 * has them) and SYNC, then the URI's baud rate. */
int esp32_rom_enter(drv_dev *d);

#endif

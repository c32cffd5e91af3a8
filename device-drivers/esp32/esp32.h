/* esp32.h — the ESP32-C3 through its ROM serial loader ("esp32:"), for the
 * registry.  docs/esp32.md: wiring, URI, the fuse plan, the referee. */
#ifndef ST_ESP32_H
#define ST_ESP32_H

#include "device-drivers/drv_api.h"

/* "esp32:/dev/ttyUSB0[?baud=N]": a USB-UART bridge or the C3's own
 * USB-Serial-JTAG is the programmer; ROM commands only (no flasher stub). */
extern const struct drv_ops esp32_ops;

#endif

/* stprog.h — the station programmer drivers, for the registry. */
#ifndef ST_STPROG_H
#define ST_STPROG_H

#include "device-drivers/drv_api.h"

/* The station programmer protocol over a raw serial line ("serial:"). */
extern const struct drv_ops stprog_serial_ops;

/* The same protocol over USB bulk endpoints ("usb:VID:PID[?serial=|?port=]"). */
extern const struct drv_ops stprog_usb_ops;

#endif

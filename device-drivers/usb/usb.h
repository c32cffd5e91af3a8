/* usb.h — libusb bulk transport for the programmer protocol, programmer
 * enumeration and hotplug.
 *
 * A station programmer on USB is one vendor-class interface (class 0xff)
 * with a bulk OUT and a bulk IN endpoint carrying the same byte stream as
 * the serial line (docs/protocol.md, "USB").  A programmer is chosen by
 * VID:PID plus its serial number or its physical port path, so a slot stays
 * bound to a socket on the fixture whatever was plugged there:
 *   "1209:5354"                 the only one attached
 *   "1209:5354?serial=SP-0042"  by iSerialNumber
 *   "1209:5354?port=1-2.3"      by bus 1, hub port 2, port 3
 * Every open link has its own libusb context: no global state. */
#ifndef ST_USB_H
#define ST_USB_H

#include <stddef.h>
#include <stdint.h>

#include "device-drivers/drv_api.h"
#include "device-drivers/proto/proto.h"

struct libusb_context;
struct libusb_device_handle;

/* Programmer ids, ended by a zero row (the "usb" driver's id table; the
 * udev rules are generated from it). */
extern const struct drv_usb_id usb_prog_ids[];

typedef struct usb_link {
	struct libusb_context *ctx;
	struct libusb_device_handle *h;
	int iface;           /* claimed interface number, -1 when none */
	uint8_t ep_in, ep_out;
	uint16_t vid, pid;
	char serial[64];     /* iSerialNumber, "" when it has none */
	char port[32];       /* "1-2.3" */
	char name[160];      /* for operator messages */
} usb_link;

/* Open spec (see above) and claim the programmer's vendor interface.  On
 * failure err gets an operator message naming the programmer and what to
 * do.  Returns ST_OK, ST_E_CONFIG (bad spec, several match), ST_E_NOTFOUND
 * (none attached), ST_E_IO (permission, claimed by another process, no
 * vendor bulk interface). */
int usb_open(usb_link *l, const char *spec, char *err, size_t errlen);

/* proto_transport.read/write for a usb_link ctx.  A halted endpoint is
 * cleared and the call carries on (the client's retry rules decide the
 * rest); a vanished device is ST_E_UNPLUGGED. */
int usb_read(void *ctx, uint8_t *buf, size_t cap, int timeout_ms);
int usb_write(void *ctx, const uint8_t *buf, size_t n, int timeout_ms);

/* Fill t to run the protocol over l (l must outlive t). */
void usb_transport(usb_link *l, proto_transport *t);

/* Release the interface and close; safe on a zeroed or failed link. */
void usb_close(usb_link *l);

/* List attached programmers (any id in usb_prog_ids) into out (cap rows);
 * *n gets the count found (may exceed cap).  Firmware versions are not
 * read here: the caller opens each to ask (drv_list does). */
int usb_list(drv_found *out, size_t cap, size_t *n, char *err, size_t errlen);

/* Hotplug watcher for programmers (libusb hotplug callbacks). */
typedef struct usb_monitor usb_monitor;

int usb_monitor_open(usb_monitor **out, char *err, size_t errlen);
/* Wait up to timeout_ms for the next arrive/leave: 1 with *ev filled, 0 on
 * timeout, negative st_err on failure. */
int usb_monitor_wait(usb_monitor *m, int timeout_ms, drv_hotplug *ev);
void usb_monitor_close(usb_monitor *m);

#endif

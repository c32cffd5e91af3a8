/* usbdev.h — the simulated programmer as a USB device behind umockdev.
 *
 * Plugs a struct sim into a umockdev testbed as the vendor-class device of
 * docs/protocol.md §1.2 (VID:PID 1209:5354, bulk OUT 0x01, bulk IN 0x81,
 * serial string): usbdevfs ioctls from any process under the testbed
 * (libumockdev-preload, same UMOCKDEV_DIR) are answered on the testbed's
 * thread by the simulator core, so real libusb enumerates, hotplugs and
 * talks to it without kernel USB.  Used by `station-devsim --usb` and by
 * the tests (tests/fixtures/fx_usbsim.c).  Only the testbed's thread
 * touches the sim once plugged. */
#ifndef ST_SIM_USBDEV_H
#define ST_SIM_USBDEV_H

#include <umockdev.h>

#include "devsim/sim.h"

#define SIM_USB_VID 0x1209
#define SIM_USB_PID 0x5354

typedef struct sim_usbdev sim_usbdev;

/* Plug s in as a programmer on bus 1, port `port` (1..8: sysfs 1-<port>,
 * /dev/bus/usb/001/00<port+1>) with serial string `serial`; sends the
 * "add" uevent.  s->send is taken over.  NULL with err set on failure. */
sim_usbdev *sim_usbdev_plug(UMockdevTestbed *tb, struct sim *s, int port,
			    const char *serial, char *err, size_t errlen);

/* Pull the plug: "remove" uevent, device gone from the testbed, handler
 * freed (s is the caller's).  NULL is fine. */
void sim_usbdev_unplug(sim_usbdev *d);

/* Free an unplugged device once nothing can call into it any more (after
 * the testbed is gone, or at process exit): an ioctl already in flight on
 * umockdev's worker thread when it was unplugged may still use it. */
void sim_usbdev_free(sim_usbdev *d);

/* Vanish when about to answer command cmd (after acting on it): pending
 * and later transfers fail as on a real disconnect. */
void sim_usbdev_unplug_on(sim_usbdev *d, int cmd);

/* Stall bulk IN once (EPIPE until the host clears the halt). */
void sim_usbdev_stall_in_once(sim_usbdev *d);

/* Nonzero once unplug_on fired. */
int sim_usbdev_gone(const sim_usbdev *d);

#endif

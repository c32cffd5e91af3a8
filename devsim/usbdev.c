/* usbdev.c — a simulated programmer as a umockdev USB device (usbdev.h).
 * usbdevfs handling as in ../shared/examples/usb_sim.c: SUBMITURB queues,
 * REAPURB(NDELAY) hands back completed URBs (EAGAIN when none), DISCARDURB
 * cancels a pending IN; control transfers answer string descriptors. */
#include "devsim/usbdev.h"

#include <errno.h>
#include <linux/usbdevice_fs.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "base.h"

typedef struct {
	UMockdevIoctlData *urb, *buf;
} urb_t;

struct sim_usbdev {
	UMockdevTestbed *tb;
	char syspath[128], devnode[64], serial[64];
	UMockdevIoctlBase *ioc;
	struct sim *s;
	GQueue pending_in, done;    /* urb_t* */
	GByteArray *in;             /* reply bytes not yet taken by an IN */
	int unplug_on;              /* command code, or -1 */
	volatile int stall_in;      /* stall the next IN URB */
	int halted;                 /* IN endpoint halted until CLEAR_HALT */
	volatile int gone;          /* set on the handler thread */
};

/* Device descriptor: USB 2.0, class 0 (per interface), EP0 64, VID 1209,
 * PID 5354, bcdDevice 1.00, strings 1/2/3, one configuration; then the
 * configuration: one vendor-class interface with bulk OUT 0x01 and bulk IN
 * 0x81 of 512 bytes.  docs/protocol.md lists the same. */
#define DESC "1201000200000040091254530001010203010902200001010080320904000002FF0000000705010200020007058102000200"

static void urb_free(urb_t *u)
{
	g_object_unref(u->buf);
	g_object_unref(u->urb);
	g_free(u);
}

static struct usbdevfs_urb *U(urb_t *u)
{
	return (struct usbdevfs_urb *)u->urb->data;
}

/* Hand queued reply bytes to waiting IN URBs. */
static void pump_in(struct sim_usbdev *d)
{
	while (d->in->len && !g_queue_is_empty(&d->pending_in)) {
		urb_t *u = g_queue_pop_head(&d->pending_in);
		guint n = MIN(d->in->len, (guint)U(u)->buffer_length);

		memcpy(u->buf->data, d->in->data, n);
		g_byte_array_remove_range(d->in, 0, n);
		U(u)->actual_length = (int)n;
		U(u)->status = 0;
		g_queue_push_tail(&d->done, u);
	}
}

/* The cable is pulled: everything in flight fails as the kernel fails it. */
static void go_away(struct sim_usbdev *d)
{
	urb_t *u;

	d->gone = 1;
	while ((u = g_queue_pop_head(&d->pending_in))) {
		U(u)->status = -ESHUTDOWN;
		U(u)->actual_length = 0;
		g_queue_push_tail(&d->done, u);
	}
	g_byte_array_set_size(d->in, 0);
}

/* sim core's output: queue for bulk IN (or pull the plug first). */
static int sim_out(struct sim *s, const uint8_t *buf, size_t n)
{
	struct sim_usbdev *d = s->send_ctx;

	if (d->gone)
		return -1;
	if (d->unplug_on >= 0 && s->req.type == (uint8_t)d->unplug_on) {
		go_away(d);
		return -1;
	}
	g_byte_array_append(d->in, buf, (guint)n);
	pump_in(d);
	return 0;
}

/* Control transfers: GET_DESCRIPTOR for strings (libusb asks for the
 * serial number this way); anything else is acknowledged empty. */
static void control(struct sim_usbdev *d, urb_t *u)
{
	uint8_t *p = u->buf->data, *data = p + 8;
	int cap = U(u)->buffer_length - 8, len = 0;

	if (cap < 0) {
		U(u)->status = -EINVAL;
		return;
	}
	if (p[0] == 0x80 && p[1] == 6 && p[3] == 3) {
		static const char *const strs[] = { NULL, "station", "station programmer sim" };
		const char *str = p[2] == 3 ? d->serial : p[2] < 3 ? strs[p[2]] : NULL;
		uint8_t desc[2 + 2 * 64];

		if (p[2] == 0) {
			desc[0] = 4; desc[1] = 3; desc[2] = 0x09; desc[3] = 0x04;
			len = 4;
		} else if (str) {
			size_t sl = strlen(str);

			desc[0] = (uint8_t)(2 + 2 * sl);
			desc[1] = 3;
			for (size_t i = 0; i < sl; i++) {
				desc[2 + 2 * i] = (uint8_t)str[i];
				desc[3 + 2 * i] = 0;
			}
			len = desc[0];
		} else {
			U(u)->status = -EPIPE;
			return;
		}
		len = MIN(len, cap);
		memcpy(data, desc, (size_t)len);
	}
	U(u)->actual_length = len;
	U(u)->status = 0;
}

static gboolean on_ioctl(UMockdevIoctlBase *h, UMockdevIoctlClient *c, gpointer ud)
{
	struct sim_usbdev *d = ud;
	gulong req = umockdev_ioctl_client_get_request(c);
	UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(c);
	GError *err = NULL;

	(void)h;
	if (d->gone && req != USBDEVFS_REAPURB && req != USBDEVFS_REAPURBNDELAY &&
	    req != USBDEVFS_DISCARDURB) {
		umockdev_ioctl_client_complete(c, -1, ENODEV);
		return TRUE;
	}
	switch (req) {
	case USBDEVFS_GET_CAPABILITIES: {
		UMockdevIoctlData *x = umockdev_ioctl_data_resolve(arg, 0, sizeof(guint32), &err);

		*(guint32 *)x->data = USBDEVFS_CAP_BULK_SCATTER_GATHER |
			USBDEVFS_CAP_BULK_CONTINUATION | USBDEVFS_CAP_NO_PACKET_SIZE_LIM |
			USBDEVFS_CAP_ZERO_PACKET;
		g_object_unref(x);
		umockdev_ioctl_client_complete(c, 0, 0);
		return TRUE;
	}
	case USBDEVFS_CLEAR_HALT:
		d->halted = 0;
		pump_in(d);
		umockdev_ioctl_client_complete(c, 0, 0);
		return TRUE;
	case USBDEVFS_CLAIMINTERFACE: case USBDEVFS_RELEASEINTERFACE:
	case USBDEVFS_RESET: case USBDEVFS_RESETEP:
	case USBDEVFS_SETINTERFACE:
		umockdev_ioctl_client_complete(c, 0, 0);
		return TRUE;
	case USBDEVFS_GETDRIVER: case USBDEVFS_IOCTL:
		/* No kernel driver on a vendor interface: nothing to detach. */
		umockdev_ioctl_client_complete(c, -1, ENODATA);
		return TRUE;
	case USBDEVFS_SUBMITURB: {
		urb_t *u = g_new0(urb_t, 1);
		struct usbdevfs_urb *urb;

		u->urb = umockdev_ioctl_data_resolve(arg, 0, sizeof(struct usbdevfs_urb), &err);
		urb = U(u);
		u->buf = umockdev_ioctl_data_resolve(u->urb, offsetof(struct usbdevfs_urb, buffer),
						     (gsize)urb->buffer_length, &err);
		if (urb->type == USBDEVFS_URB_TYPE_CONTROL) {
			control(d, u);
			g_queue_push_tail(&d->done, u);
		} else if (urb->type == USBDEVFS_URB_TYPE_BULK && urb->endpoint == 0x01) {
			/* The programmer's firmware: frames in, replies queued. */
			urb->actual_length = urb->buffer_length;
			urb->status = 0;
			sim_feed(d->s, u->buf->data, (size_t)urb->buffer_length);
			if (d->gone) {
				urb->status = -ESHUTDOWN;
				urb->actual_length = 0;
			}
			g_queue_push_tail(&d->done, u);
		} else if (urb->type == USBDEVFS_URB_TYPE_BULK && urb->endpoint == 0x81 &&
			   (d->stall_in || d->halted)) {
			/* A halted endpoint fails every transfer until cleared. */
			d->stall_in = 0;
			d->halted = 1;
			urb->status = -EPIPE;
			urb->actual_length = 0;
			g_queue_push_tail(&d->done, u);
		} else if (urb->type == USBDEVFS_URB_TYPE_BULK && urb->endpoint == 0x81) {
			g_queue_push_tail(&d->pending_in, u);
			pump_in(d);
		} else {
			urb->status = -EPIPE; /* no such endpoint: stall */
			urb->actual_length = 0;
			g_queue_push_tail(&d->done, u);
		}
		umockdev_ioctl_client_complete(c, 0, 0);
		return TRUE;
	}
	case USBDEVFS_DISCARDURB: {
		gulong addr = *(gulong *)arg->data;

		for (GList *l = d->pending_in.head; l; l = l->next) {
			urb_t *u = l->data;

			if (u->urb->client_addr == addr) {
				g_queue_delete_link(&d->pending_in, l);
				U(u)->status = -ENOENT;
				g_queue_push_tail(&d->done, u);
				umockdev_ioctl_client_complete(c, 0, 0);
				return TRUE;
			}
		}
		umockdev_ioctl_client_complete(c, -1, EINVAL);
		return TRUE;
	}
	case USBDEVFS_REAPURB: case USBDEVFS_REAPURBNDELAY: {
		urb_t *u = g_queue_pop_head(&d->done);
		UMockdevIoctlData *x;

		if (!u) {
			umockdev_ioctl_client_complete(c, -1, d->gone ? ENODEV : EAGAIN);
			return TRUE;
		}
		x = umockdev_ioctl_data_resolve(arg, 0, sizeof(void *), &err);
		umockdev_ioctl_data_set_ptr(x, 0, u->urb);
		umockdev_ioctl_client_complete(c, 0, 0);
		g_object_unref(x);
		urb_free(u);
		return TRUE;
	}
	default:
		umockdev_ioctl_client_complete(c, -1, ENOTTY);
		return TRUE;
	}
}

sim_usbdev *sim_usbdev_plug(UMockdevTestbed *tb, struct sim *s, int port,
			    const char *serial, char *err, size_t errlen)
{
	struct sim_usbdev *d;
	GError *gerr = NULL;
	char txt[2048];

	if (port < 1 || port > 8) {
		snprintf(err, errlen, "USB port %d out of range 1..8", port);
		return NULL;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	d->tb = tb;
	d->s = s;
	d->unplug_on = -1;
	snprintf(d->serial, sizeof(d->serial), "%s", serial);
	snprintf(d->syspath, sizeof(d->syspath),
		 "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-%d", port);
	snprintf(d->devnode, sizeof(d->devnode), "/dev/bus/usb/001/%03d", port + 1);
	s->send = sim_out;
	s->send_ctx = d;
	d->in = g_byte_array_new();
	g_queue_init(&d->pending_in);
	g_queue_init(&d->done);
	d->ioc = umockdev_ioctl_base_new();
	g_signal_connect(d->ioc, "handle-ioctl", G_CALLBACK(on_ioctl), d);
	if (!umockdev_testbed_attach_ioctl(tb, d->devnode, d->ioc, &gerr)) {
		snprintf(err, errlen, "umockdev: cannot attach %s: %s", d->devnode,
			 gerr ? gerr->message : "?");
		g_clear_error(&gerr);
		g_object_unref(d->ioc);
		g_byte_array_unref(d->in);
		free(d);
		return NULL;
	}
	snprintf(txt, sizeof(txt),
		 "P: /devices/pci0000:00/0000:00:14.0/usb1/1-%d\n"
		 "N: bus/usb/001/%03d=" DESC "\n"
		 "E: DEVNAME=/dev/bus/usb/001/%03d\nE: DEVTYPE=usb_device\nE: DRIVER=usb\n"
		 "E: PRODUCT=1209/5354/100\nE: BUSNUM=001\nE: DEVNUM=%03d\nE: MAJOR=189\n"
		 "E: MINOR=%d\nE: SUBSYSTEM=usb\n"
		 "A: bConfigurationValue=1\nA: bNumConfigurations=1\nA: busnum=1\n"
		 "A: devnum=%d\nA: dev=189:%d\nA: idProduct=5354\nA: idVendor=1209\n"
		 "A: serial=%s\nA: speed=480\n"
		 "H: descriptors=" DESC "\n",
		 port, port + 1, port + 1, port + 1, port, port + 1, port, d->serial);
	if (!umockdev_testbed_add_from_string(tb, txt, &gerr)) {
		snprintf(err, errlen, "umockdev: cannot add the device: %s",
			 gerr ? gerr->message : "?");
		g_clear_error(&gerr);
		umockdev_testbed_detach_ioctl(tb, d->devnode, NULL);
		g_object_unref(d->ioc);
		g_byte_array_unref(d->in);
		free(d);
		return NULL;
	}
	return d;
}

void sim_usbdev_unplug_on(sim_usbdev *d, int cmd)
{
	d->unplug_on = cmd;
}

void sim_usbdev_stall_in_once(sim_usbdev *d)
{
	d->stall_in = 1;
}

int sim_usbdev_gone(const sim_usbdev *d)
{
	return d->gone;
}

void sim_usbdev_unplug(sim_usbdev *d)
{
	if (!d)
		return;
	d->gone = 1;
	/* No new ioctl reaches on_ioctl; one already running on the testbed's
	 * worker thread still sees d (freed only by sim_usbdev_free). */
	g_signal_handlers_disconnect_by_data(d->ioc, d);
	umockdev_testbed_uevent(d->tb, d->syspath, "remove");
	umockdev_testbed_remove_device(d->tb, d->syspath);
	umockdev_testbed_detach_ioctl(d->tb, d->devnode, NULL);
}

void sim_usbdev_free(sim_usbdev *d)
{
	urb_t *x;

	if (!d)
		return;
	g_object_unref(d->ioc);
	while ((x = g_queue_pop_head(&d->pending_in)))
		urb_free(x);
	while ((x = g_queue_pop_head(&d->done)))
		urb_free(x);
	g_byte_array_unref(d->in);
	d->s->send = NULL;
	d->s->send_ctx = NULL;
	free(d);
}

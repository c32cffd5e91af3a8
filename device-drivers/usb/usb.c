/* usb.c — libusb transport: find a programmer by VID:PID and serial or port
 * path, claim its vendor bulk interface, move bytes, report unplugs; list
 * attached programmers; hotplug watcher. */
#include "device-drivers/usb/usb.h"

#include <errno.h>
#include <libusb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"

/* 1209 is pid.codes' open-hardware vendor ID; 5354 ("ST") is the station
 * programmer's product ID.  Fixture makers building a programmer for this
 * protocol under their own IDs add a row (and regenerate udev/). */
const struct drv_usb_id usb_prog_ids[] = {
	{ 0x1209, 0x5354, "station programmer (vendor bulk, protocol v1)" },
	{ 0, 0, NULL },
};

#define VENDOR_CLASS 0xff

static int known_id(uint16_t vid, uint16_t pid)
{
	for (const struct drv_usb_id *i = usb_prog_ids; i->vid; i++)
		if (i->vid == vid && i->pid == pid)
			return 1;
	return 0;
}

static const char *id_what(uint16_t vid, uint16_t pid)
{
	for (const struct drv_usb_id *i = usb_prog_ids; i->vid; i++)
		if (i->vid == vid && i->pid == pid)
			return i->what;
	return "";
}

/* "1-2.3": bus, then the port chain from the root hub. */
static void port_path(libusb_device *dev, char *out, size_t cap)
{
	uint8_t ports[8];
	int n = libusb_get_port_numbers(dev, ports, (int)sizeof(ports));
	size_t off;

	off = (size_t)snprintf(out, cap, "%u", libusb_get_bus_number(dev));
	for (int i = 0; i < n && off < cap; i++)
		off += (size_t)snprintf(out + off, cap - off, "%c%u", i ? '.' : '-',
					ports[i]);
}

/* The device's serial string ("" when it has none or cannot be asked). */
static void read_serial(libusb_device *dev, libusb_device_handle *h,
			char *out, size_t cap)
{
	struct libusb_device_descriptor dd;
	libusb_device_handle *own = NULL;
	unsigned char s[64];
	int n;

	out[0] = '\0';
	if (libusb_get_device_descriptor(dev, &dd) || !dd.iSerialNumber)
		return;
	if (!h && libusb_open(dev, &own) != 0)
		return;
	n = libusb_get_string_descriptor_ascii(h ? h : own, dd.iSerialNumber, s,
					       sizeof(s));
	if (n > 0) {
		/* Device-supplied: keep it printable for logs and URIs. */
		for (int i = 0; i < n && (size_t)i < cap - 1; i++)
			out[i] = s[i] > 0x20 && s[i] < 0x7f && s[i] != '?' &&
				 s[i] != '&' ? (char)s[i] : '_';
		out[(size_t)n < cap - 1 ? (size_t)n : cap - 1] = '\0';
	}
	if (own)
		libusb_close(own);
}

/* Parse "VID:PID[?serial=S|?port=P]". */
static int parse_spec(const char *spec, uint16_t *vid, uint16_t *pid,
		      char *serial, size_t scap, char *port, size_t pcap)
{
	unsigned v, p;
	int used = 0;
	const char *q;

	serial[0] = port[0] = '\0';
	if (sscanf(spec, "%4x:%4x%n", &v, &p, &used) != 2 ||
	    (spec[used] && spec[used] != '?'))
		return ST_E_CONFIG;
	*vid = (uint16_t)v;
	*pid = (uint16_t)p;
	q = spec + used;
	if (!*q)
		return ST_OK;
	if (!strncmp(q, "?serial=", 8) && q[8] && strlen(q + 8) < scap)
		snprintf(serial, scap, "%s", q + 8);
	else if (!strncmp(q, "?port=", 6) && q[6] && strlen(q + 6) < pcap)
		snprintf(port, pcap, "%s", q + 6);
	else
		return ST_E_CONFIG;
	return ST_OK;
}

/* The vendor interface with a bulk IN and a bulk OUT endpoint. */
static int find_iface(libusb_device *dev, int *iface, uint8_t *in, uint8_t *out)
{
	struct libusb_config_descriptor *cfg;
	int found = 0;

	if (libusb_get_active_config_descriptor(dev, &cfg) != 0 &&
	    libusb_get_config_descriptor(dev, 0, &cfg) != 0)
		return 0;
	for (int i = 0; i < cfg->bNumInterfaces && !found; i++) {
		const struct libusb_interface *itf = &cfg->interface[i];

		for (int a = 0; a < itf->num_altsetting && !found; a++) {
			const struct libusb_interface_descriptor *d = &itf->altsetting[a];
			uint8_t ei = 0, eo = 0;

			if (d->bInterfaceClass != VENDOR_CLASS)
				continue;
			for (int e = 0; e < d->bNumEndpoints; e++) {
				const struct libusb_endpoint_descriptor *ep = &d->endpoint[e];

				if ((ep->bmAttributes & 3) != LIBUSB_TRANSFER_TYPE_BULK)
					continue;
				if (ep->bEndpointAddress & LIBUSB_ENDPOINT_IN)
					ei = ei ? ei : ep->bEndpointAddress;
				else
					eo = eo ? eo : ep->bEndpointAddress;
			}
			if (ei && eo) {
				*iface = d->bInterfaceNumber;
				*in = ei;
				*out = eo;
				found = 1;
			}
		}
	}
	libusb_free_config_descriptor(cfg);
	return found;
}

int usb_open(usb_link *l, const char *spec, char *err, size_t errlen)
{
	libusb_device **list = NULL, *pick = NULL;
	char want_serial[64], want_port[32];
	ssize_t n;
	int rc, matches = 0;

	memset(l, 0, sizeof(*l));
	l->iface = -1;
	if (parse_spec(spec, &l->vid, &l->pid, want_serial, sizeof(want_serial),
		       want_port, sizeof(want_port)) != ST_OK) {
		snprintf(err, errlen, "bad USB programmer '%s' (use usb:VID:PID, "
			 "usb:VID:PID?serial=S or usb:VID:PID?port=1-2.3)", spec);
		return ST_E_CONFIG;
	}
	rc = libusb_init(&l->ctx);
	if (rc != 0) {
		l->ctx = NULL;
		snprintf(err, errlen, "USB is not usable here (%s): is /dev/bus/usb "
			 "there?", libusb_strerror(rc));
		return ST_E_IO;
	}
	n = libusb_get_device_list(l->ctx, &list);
	for (ssize_t i = 0; i < n; i++) {
		struct libusb_device_descriptor dd;
		char s[64], p[32];

		if (libusb_get_device_descriptor(list[i], &dd) ||
		    dd.idVendor != l->vid || dd.idProduct != l->pid)
			continue;
		port_path(list[i], p, sizeof(p));
		if (want_port[0] && strcmp(p, want_port))
			continue;
		if (want_serial[0]) {
			read_serial(list[i], NULL, s, sizeof(s));
			if (strcmp(s, want_serial))
				continue;
		}
		matches++;
		if (!pick)
			pick = list[i];
	}
	if (!pick) {
		snprintf(err, errlen, "no USB programmer %04x:%04x%s%s%s is attached "
			 "(plugged in? `station devices` lists what is)", l->vid,
			 l->pid, want_serial[0] ? " with serial " : want_port[0] ?
			 " on port " : "", want_serial, want_port);
		rc = ST_E_NOTFOUND;
		goto out;
	}
	if (matches > 1) {
		snprintf(err, errlen, "%d USB programmers %04x:%04x are attached: say "
			 "which with ?serial=S or ?port=P (`station devices` lists "
			 "them)", matches, l->vid, l->pid);
		rc = ST_E_CONFIG;
		goto out;
	}
	port_path(pick, l->port, sizeof(l->port));
	snprintf(l->name, sizeof(l->name), "USB %04x:%04x port %s", l->vid,
		 l->pid, l->port);
	if (!find_iface(pick, &l->iface, &l->ep_in, &l->ep_out)) {
		l->iface = -1;
		snprintf(err, errlen, "%s has no vendor-class interface with bulk IN "
			 "and OUT endpoints: not a station programmer", l->name);
		rc = ST_E_IO;
		goto out;
	}
	rc = libusb_open(pick, &l->h);
	if (rc != 0) {
		l->h = NULL;
		l->iface = -1;
		snprintf(err, errlen, "cannot open %s: %s%s", l->name,
			 libusb_strerror(rc), rc == LIBUSB_ERROR_ACCESS ? " (is the "
			 "user in group station? install udev/70-station.rules)" : "");
		rc = rc == LIBUSB_ERROR_NO_DEVICE ? ST_E_UNPLUGGED : ST_E_IO;
		goto out;
	}
	read_serial(pick, l->h, l->serial, sizeof(l->serial));
	if (l->serial[0])
		snprintf(l->name, sizeof(l->name), "USB %04x:%04x serial %s port %s",
			 l->vid, l->pid, l->serial, l->port);
	(void)libusb_set_auto_detach_kernel_driver(l->h, 1);
	/* Claiming is exclusive: a second station gets BUSY, never a share. */
	rc = libusb_claim_interface(l->h, l->iface);
	if (rc != 0) {
		l->iface = -1;
		snprintf(err, errlen, "cannot claim %s: %s%s", l->name,
			 libusb_strerror(rc), rc == LIBUSB_ERROR_BUSY ? " (another "
			 "station or program is using it)" : "");
		rc = rc == LIBUSB_ERROR_NO_DEVICE ? ST_E_UNPLUGGED : ST_E_IO;
		goto out;
	}
	/* Reset data toggles and any halt a previous user left behind. */
	(void)libusb_clear_halt(l->h, l->ep_out);
	(void)libusb_clear_halt(l->h, l->ep_in);
	rc = ST_OK;
out:
	if (list)
		libusb_free_device_list(list, 1);
	if (rc != ST_OK)
		usb_close(l);
	return rc;
}

/* libusb error → st_err for the transport contract. */
static int map_err(int r)
{
	switch (r) {
	case LIBUSB_ERROR_NO_DEVICE:
		return ST_E_UNPLUGGED;
	case LIBUSB_ERROR_TIMEOUT:
		return ST_E_TIMEOUT;
	default:
		return ST_E_IO;
	}
}

int usb_read(void *ctx, uint8_t *buf, size_t cap, int timeout_ms)
{
	usb_link *l = ctx;
	int got = 0, r;

	/* Whole packets only: ask for a multiple of 64 so a full-speed or
	 * high-speed packet never overflows the buffer. */
	if (cap >= 64)
		cap -= cap % 64;
	r = libusb_bulk_transfer(l->h, l->ep_in, buf, (int)cap, &got,
				 timeout_ms > 0 ? (unsigned)timeout_ms : 1);
	if (got > 0)
		return got; /* data first; an error shows on the next call */
	if (r == 0 || r == LIBUSB_ERROR_TIMEOUT)
		return 0;
	if (r == LIBUSB_ERROR_PIPE) {
		/* A stalled IN pipe: clear it and let the client wait on.  If
		 * the clear fails the device is gone or broken. */
		r = libusb_clear_halt(l->h, l->ep_in);
		return r == 0 ? 0 : map_err(r);
	}
	return map_err(r) == ST_E_TIMEOUT ? 0 : map_err(r);
}

int usb_write(void *ctx, const uint8_t *buf, size_t n, int timeout_ms)
{
	usb_link *l = ctx;
	int64_t deadline = st_now_ms() + timeout_ms;
	size_t off = 0;
	int stalls = 0;

	while (off < n) {
		int64_t left = deadline - st_now_ms();
		int done = 0, r;

		if (left <= 0)
			return ST_E_TIMEOUT;
		r = libusb_bulk_transfer(l->h, l->ep_out, (uint8_t *)buf + off,
					 (int)(n - off), &done, (unsigned)left);
		off += (size_t)(done > 0 ? done : 0);
		if (r == 0)
			continue;
		if (r == LIBUSB_ERROR_PIPE && stalls++ < 1) {
			/* Stall: clear once and send the rest again. */
			if ((r = libusb_clear_halt(l->h, l->ep_out)) == 0)
				continue;
		}
		return map_err(r);
	}
	return ST_OK;
}

void usb_transport(usb_link *l, proto_transport *t)
{
	t->read = usb_read;
	t->write = usb_write;
	t->ctx = l;
	t->name = l->name;
}

/* Let libusb consume hotplug notices queued for ctx (each holds a device
 * reference that libusb_exit would otherwise leak), then exit it. */
static void ctx_exit(libusb_context *ctx)
{
	struct timeval zero = { 0, 0 };

	(void)libusb_handle_events_timeout_completed(ctx, &zero, NULL);
	libusb_exit(ctx);
}

void usb_close(usb_link *l)
{
	if (l->h) {
		if (l->iface >= 0)
			(void)libusb_release_interface(l->h, l->iface);
		libusb_close(l->h);
	}
	if (l->ctx)
		ctx_exit(l->ctx);
	l->h = NULL;
	l->ctx = NULL;
	l->iface = -1;
}

int usb_list(drv_found *out, size_t cap, size_t *n, char *err, size_t errlen)
{
	libusb_context *ctx = NULL;
	libusb_device **list = NULL;
	ssize_t cnt;
	int rc;

	*n = 0;
	rc = libusb_init(&ctx);
	if (rc != 0) {
		snprintf(err, errlen, "USB is not usable here: %s", libusb_strerror(rc));
		return ST_E_IO;
	}
	cnt = libusb_get_device_list(ctx, &list);
	for (ssize_t i = 0; i < cnt; i++) {
		struct libusb_device_descriptor dd;
		drv_found *f;

		if (libusb_get_device_descriptor(list[i], &dd) ||
		    !known_id(dd.idVendor, dd.idProduct))
			continue;
		if (*n < cap) {
			f = &out[*n];
			memset(f, 0, sizeof(*f));
			snprintf(f->driver, sizeof(f->driver), "usb");
			port_path(list[i], f->port, sizeof(f->port));
			read_serial(list[i], NULL, f->serial, sizeof(f->serial));
			snprintf(f->product, sizeof(f->product), "%s",
				 id_what(dd.idVendor, dd.idProduct));
			if (f->serial[0])
				snprintf(f->uri, sizeof(f->uri), "usb:%04x:%04x?serial=%s",
					 dd.idVendor, dd.idProduct, f->serial);
			else
				snprintf(f->uri, sizeof(f->uri), "usb:%04x:%04x?port=%s",
					 dd.idVendor, dd.idProduct, f->port);
		}
		(*n)++;
	}
	if (list)
		libusb_free_device_list(list, 1);
	ctx_exit(ctx);
	return ST_OK;
}

/* ---- hotplug ------------------------------------------------------------ */

#define MON_QUEUE 32
#define MON_SEEN 32

struct usb_monitor {
	libusb_context *ctx;
	libusb_hotplug_callback_handle cb;
	int registered;
	/* Events queued by the callback (which may not do I/O), resolved into
	 * drv_hotplug rows by usb_monitor_wait. */
	struct { int event; libusb_device *dev; } q[MON_QUEUE];
	size_t qhead, qlen;
	/* Serial numbers of programmers seen arriving, by port, for LEFT. */
	struct { char port[64]; char serial[64]; } seen[MON_SEEN];
};

static int LIBUSB_CALL on_hotplug(libusb_context *ctx, libusb_device *dev,
				  libusb_hotplug_event event, void *user)
{
	struct usb_monitor *m = user;
	size_t at;

	(void)ctx;
	if (m->qlen == MON_QUEUE)
		return 0; /* full: the caller is not draining; drop */
	at = (m->qhead + m->qlen++) % MON_QUEUE;
	m->q[at].event = event == LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED ?
			 DRV_HOTPLUG_ARRIVED : DRV_HOTPLUG_LEFT;
	m->q[at].dev = libusb_ref_device(dev);
	return 0;
}

int usb_monitor_open(usb_monitor **out, char *err, size_t errlen)
{
	usb_monitor *m = calloc(1, sizeof(*m));
	int rc;

	*out = NULL;
	if (!m)
		return ST_E_NOMEM;
	rc = libusb_init(&m->ctx);
	if (rc != 0) {
		snprintf(err, errlen, "USB is not usable here: %s", libusb_strerror(rc));
		free(m);
		return ST_E_IO;
	}
	if (!libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG)) {
		snprintf(err, errlen, "this libusb has no hotplug support");
		usb_monitor_close(m);
		return ST_E_IO;
	}
	/* One callback for any device; filtered against the id table so a
	 * table with several rows needs no extra registrations.  ENUMERATE:
	 * programmers already plugged arrive first. */
	rc = libusb_hotplug_register_callback(m->ctx,
		LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT,
		LIBUSB_HOTPLUG_ENUMERATE, LIBUSB_HOTPLUG_MATCH_ANY,
		LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY, on_hotplug, m,
		&m->cb);
	if (rc != 0) {
		snprintf(err, errlen, "cannot watch USB hotplug: %s", libusb_strerror(rc));
		usb_monitor_close(m);
		return ST_E_IO;
	}
	m->registered = 1;
	*out = m;
	return ST_OK;
}

/* Turn a queued device into a row; 1 when it is a programmer. */
static int resolve(usb_monitor *m, int event, libusb_device *dev, drv_hotplug *ev)
{
	struct libusb_device_descriptor dd;
	size_t i, free_at = MON_SEEN;

	if (libusb_get_device_descriptor(dev, &dd) ||
	    !known_id(dd.idVendor, dd.idProduct))
		return 0;
	memset(ev, 0, sizeof(*ev));
	ev->event = event;
	port_path(dev, ev->port, sizeof(ev->port));
	snprintf(ev->uri, sizeof(ev->uri), "usb:%04x:%04x?port=%s", dd.idVendor,
		 dd.idProduct, ev->port);
	for (i = 0; i < MON_SEEN; i++) {
		if (!m->seen[i].port[0]) {
			if (free_at == MON_SEEN)
				free_at = i;
			continue;
		}
		if (!strcmp(m->seen[i].port, ev->port))
			break;
	}
	if (event == DRV_HOTPLUG_ARRIVED) {
		read_serial(dev, NULL, ev->serial, sizeof(ev->serial));
		if (i == MON_SEEN)
			i = free_at;
		if (i < MON_SEEN) {
			snprintf(m->seen[i].port, sizeof(m->seen[i].port), "%s", ev->port);
			snprintf(m->seen[i].serial, sizeof(m->seen[i].serial), "%s",
				 ev->serial);
		}
	} else if (i < MON_SEEN) {
		snprintf(ev->serial, sizeof(ev->serial), "%s", m->seen[i].serial);
		m->seen[i].port[0] = '\0';
	}
	return 1;
}

int usb_monitor_wait(usb_monitor *m, int timeout_ms, drv_hotplug *ev)
{
	int64_t deadline = st_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);

	for (;;) {
		struct timeval tv;
		int64_t left;
		int rc;

		while (m->qlen) {
			int event = m->q[m->qhead].event;
			libusb_device *dev = m->q[m->qhead].dev;
			int hit;

			m->qhead = (m->qhead + 1) % MON_QUEUE;
			m->qlen--;
			hit = resolve(m, event, dev, ev);
			libusb_unref_device(dev);
			if (hit)
				return 1;
		}
		left = deadline - st_now_ms();
		if (left <= 0)
			return 0;
		tv.tv_sec = left / 1000;
		tv.tv_usec = (left % 1000) * 1000;
		rc = libusb_handle_events_timeout_completed(m->ctx, &tv, NULL);
		if (rc != 0 && rc != LIBUSB_ERROR_INTERRUPTED)
			return ST_E_IO;
	}
}

void usb_monitor_close(usb_monitor *m)
{
	if (!m)
		return;
	if (m->registered)
		libusb_hotplug_deregister_callback(m->ctx, m->cb);
	/* Deregistered: draining now queues nothing more for us. */
	if (m->ctx) {
		struct timeval zero = { 0, 0 };

		(void)libusb_handle_events_timeout_completed(m->ctx, &zero, NULL);
	}
	while (m->qlen) {
		libusb_unref_device(m->q[m->qhead].dev);
		m->qhead = (m->qhead + 1) % MON_QUEUE;
		m->qlen--;
	}
	if (m->ctx)
		ctx_exit(m->ctx);
	free(m);
}

/* devices.c — `station devices`: what programmers are attached, and which
 * slot each one serves. */
#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "device-drivers/drv.h"
#include "station/st_int.h"

#define LINK_DIR "/dev/station"

/* Does slot URI `slot` name this programmer? */
static bool bound(const char *slot, const drv_found *f)
{
	const char *q = strchr(slot, '?');

	if (strcmp(f->driver, "usb"))
		return !strcmp(slot, f->uri);
	if (strncmp(slot, "usb:", 4) || !q)
		return false;
	if (!strncmp(q, "?serial=", 8))
		return f->serial[0] && !strcmp(q + 8, f->serial);
	if (!strncmp(q, "?port=", 6))
		return !strcmp(q + 6, f->port);
	return false;
}

/* Serial ports to ask: the slots that are not USB, then /dev/station/. */
static size_t serial_ports(const char *const *slots, size_t nslots,
			   char **ports, size_t cap)
{
	size_t n = 0;
	DIR *d;

	for (size_t i = 0; i < nslots && n < cap; i++)
		if (strncmp(slots[i], "usb:", 4))
			ports[n++] = strdup(slots[i]);
	d = opendir(LINK_DIR);
	if (!d)
		return n;
	for (struct dirent *e; (e = readdir(d)) && n < cap;) {
		char p[512];
		bool dup = false;

		if (e->d_name[0] == '.' || strncmp(e->d_name, "tty-", 4))
			continue;
		snprintf(p, sizeof(p), LINK_DIR "/%s", e->d_name);
		for (size_t i = 0; i < n; i++)
			dup |= ports[i] && !strcmp(ports[i], p);
		if (!dup)
			ports[n++] = strdup(p);
	}
	closedir(d);
	return n;
}

int st_devices(const char *const *slots, size_t nslots, bool json, void *out,
	       char *err, size_t errlen)
{
	FILE *f = out;
	char *ports[ST_MAX_SLOTS + 32] = { 0 };
	size_t nports, n = 0;
	drv_found *rows = NULL;
	int rc;

	nports = serial_ports(slots, nslots, ports, ST_ARRAY_SIZE(ports));
	rc = drv_list((const char *const *)ports, nports, &rows, &n, err, errlen);
	if (rc != ST_OK)
		goto out;
	if (!json)
		fprintf(f, "%-4s %-7s %-34s %-12s %-16s %-12s %s\n", "SLOT", "DRIVER",
			"URI", "PORT", "SERIAL", "FIRMWARE", "STATUS");
	for (size_t i = 0; i < n; i++) {
		const drv_found *r = &rows[i];
		int slot = 0;

		for (size_t s = 0; s < nslots && !slot; s++)
			if (bound(slots[s], r))
				slot = (int)s + 1;
		if (json) {
			json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}",
				"event", "programmer", "driver", r->driver, "uri", r->uri,
				"port", r->port, "serial", r->serial, "product", r->product,
				"fw_version", r->fw_version);
			char *line;

			if (!o) {
				rc = ST_E_NOMEM;
				goto out;
			}
			json_object_set_new(o, "slot", slot ? json_integer(slot) : json_null());
			json_object_set_new(o, "error", r->err[0] ? json_string(r->err) :
					    json_null());
			line = json_dumps(o, JSON_COMPACT);
			json_decref(o);
			if (!line) {
				rc = ST_E_NOMEM;
				goto out;
			}
			fprintf(f, "%s\n", line);
			free(line);
		} else {
			char s[8];

			snprintf(s, sizeof(s), slot ? "%d" : "-", slot);
			fprintf(f, "%-4s %-7s %-34s %-12s %-16s %-12s %s\n", s, r->driver,
				r->uri, r->port, r->serial[0] ? r->serial : "-",
				r->fw_version[0] ? r->fw_version : "?",
				r->err[0] ? r->err : "ok");
		}
	}
	if (json)
		fprintf(f, "{\"event\":\"devices\",\"count\":%zu}\n", n);
	else if (!n)
		fprintf(f, "(no programmers found: plugged in? serial ones need "
			"--slot PORT or a /dev/station/ link)\n");
out:
	free(rows);
	for (size_t i = 0; i < nports; i++)
		free(ports[i]);
	return rc;
}

int st_devices_present(const char *const *slots, size_t nslots, bool *present,
		       size_t *found, char *err, size_t errlen)
{
	char *ports[ST_MAX_SLOTS + 32] = { 0 };
	size_t nports, n = 0;
	drv_found *rows = NULL;
	int rc;

	nports = serial_ports(slots, nslots, ports, ST_ARRAY_SIZE(ports));
	rc = drv_list((const char *const *)ports, nports, &rows, &n, err, errlen);
	for (size_t s = 0; s < nslots; s++)
		present[s] = false;
	*found = 0;
	for (size_t i = 0; rc == ST_OK && i < n; i++) {
		if (rows[i].err[0])
			continue;
		(*found)++;
		for (size_t s = 0; s < nslots; s++)
			present[s] |= bound(slots[s], &rows[i]);
	}
	free(rows);
	for (size_t i = 0; i < nports; i++)
		free(ports[i]);
	return rc;
}

int st_devices_watch(const char *const *slots, size_t nslots, bool json,
		     void *out, char *err, size_t errlen)
{
	FILE *f = out;
	struct timespec zero = { 0, 0 };
	drv_monitor *m = NULL;
	sigset_t stop, old;
	int rc;

	/* Signals are taken with sigtimedwait between waits: no handler, no
	 * global flag. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop, &old);
	rc = drv_monitor_open(&m, err, errlen);
	while (rc == ST_OK && sigtimedwait(&stop, NULL, &zero) < 0) {
		drv_hotplug ev;
		drv_found fnd = { .driver = "usb" };
		int slot = 0, got = drv_monitor_wait(m, 200, &ev);

		if (got < 0) {
			snprintf(err, errlen, "USB hotplug watch failed: %s",
				 st_strerror(got));
			rc = got;
			break;
		}
		if (got == 0)
			continue;
		snprintf(fnd.port, sizeof(fnd.port), "%s", ev.port);
		snprintf(fnd.serial, sizeof(fnd.serial), "%s", ev.serial);
		for (size_t s = 0; s < nslots && !slot; s++)
			if (bound(slots[s], &fnd))
				slot = (int)s + 1;
		if (json) {
			json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s}", "event",
				ev.event == DRV_HOTPLUG_ARRIVED ? "arrived" : "left",
				"driver", "usb", "uri", ev.uri, "port", ev.port,
				"serial", ev.serial);
			char *line;

			if (!o)
				continue;
			json_object_set_new(o, "slot", slot ? json_integer(slot) :
					    json_null());
			line = json_dumps(o, JSON_COMPACT);
			json_decref(o);
			if (line)
				fprintf(f, "%s\n", line);
			free(line);
		} else {
			fprintf(f, "%-8s usb %-34s port %-10s serial %s%s%.0d\n",
				ev.event == DRV_HOTPLUG_ARRIVED ? "arrived" : "left",
				ev.uri, ev.port, ev.serial[0] ? ev.serial : "-",
				slot ? "  slot " : "", slot);
		}
		fflush(f);
	}
	drv_monitor_close(m);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc;
}

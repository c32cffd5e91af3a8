/* udev.c — the udev rules, written from the drivers' USB id tables.
 *
 * Two kinds of ids live in those tables (drv_ops.usb_ids): a programmer's
 * own (udev_subsystem "usb": the id is the programmer, whatever the
 * machine) and the generic USB-serial bridges a serial programmer sits
 * behind (udev_subsystem "tty": FT232R, FT231X, CP210x, CH340 — the same
 * chips are in every console cable on the plant's desks).  The packaged
 * file (udev/70-station.rules, tools/gen-udev.c) claims the first kind
 * only.  A bridge is claimed only when the site names it in
 * `udev.adapters` (its USB serial number or its physical socket), and
 * `station config udev` writes that small snippet; so an unrelated
 * adapter on the machine keeps its owner and mode. */
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "device-drivers/drv_api.h"
#include "station/schema.h"
#include "station/station.h"

/* What every claimed device gets: group station, never world access, and
 * an ACL for the technician seated at the station (logind's uaccess; the
 * rules sort before 73-seat-late.rules, which applies it). */
#define ACCESS "GROUP=\"station\", MODE=\"0660\", TAG+=\"uaccess\""

static void programmer_rule(FILE *f, const struct drv_usb_id *id)
{
	fprintf(f, "SUBSYSTEM==\"usb\", ENV{DEVTYPE}==\"usb_device\", "
		"ATTR{idVendor}==\"%04x\", ATTR{idProduct}==\"%04x\", "
		ACCESS ", SYMLINK+=\"station/usb-%%k\"\n", id->vid, id->pid);
}

/* udev matches a quoted value as a glob: a site's value must not be one. */
static bool plain_value(const char *v)
{
	if (!*v)
		return false;
	for (; *v; v++)
		if (strchr("\"*?[]|\\", *v) || (unsigned char)*v < 0x21 ||
		    (unsigned char)*v > 0x7e)
			return false;
	return true;
}

/* Whether a tty driver before driver di already lists vid:pid (the same
 * bridge serves several drivers: one rule or comment line is enough). */
static bool tty_id_seen(size_t di, const struct drv_usb_id *id)
{
	const struct drv_ops *ops;

	for (size_t i = 0; i < di && (ops = drv_driver_at(i)); i++) {
		if (!ops->usb_ids || !ops->udev_subsystem ||
		    strcmp(ops->udev_subsystem, "tty"))
			continue;
		for (const struct drv_usb_id *o = ops->usb_ids; o->vid; o++)
			if (o->vid == id->vid && o->pid == id->pid)
				return true;
	}
	return false;
}

/* The rule lines of one named adapter, for every bridge id. */
static int adapter_rules(FILE *f, const char *a, char *err, size_t errlen)
{
	const struct drv_ops *ops;
	const char *v;
	bool by_serial;

	if (!strncmp(a, "serial:", 7))
		by_serial = true, v = a + 7;
	else if (!strncmp(a, "path:", 5))
		by_serial = false, v = a + 5;
	else
		goto bad;
	if (!plain_value(v))
		goto bad;
	fprintf(f, "# %s\n", a);
	for (size_t i = 0; (ops = drv_driver_at(i)); i++) {
		if (!ops->usb_ids || !ops->udev_subsystem ||
		    strcmp(ops->udev_subsystem, "tty"))
			continue;
		for (const struct drv_usb_id *id = ops->usb_ids; id->vid; id++) {
			if (tty_id_seen(i, id))
				continue;
			fprintf(f, "SUBSYSTEM==\"tty\", ATTRS{idVendor}==\"%04x\", "
				"ATTRS{idProduct}==\"%04x\", %s{%s}==\"%s\", "
				ACCESS ", ENV{STATION_PROGRAMMER}=\"1\"\n", id->vid,
				id->pid, by_serial ? "ATTRS" : "ENV",
				by_serial ? "serial" : "ID_PATH", v);
		}
	}
	return ST_OK;
bad:
	snprintf(err, errlen, "udev.adapters: '%s' is not serial:NUMBER or path:ID_PATH "
		 "(udevadm info -q property /dev/ttyUSB0 shows ID_SERIAL_SHORT and "
		 "ID_PATH; no spaces, quotes or glob characters)", a);
	return ST_E_CONFIG;
}

int st_udev_rules(void *out, const char *const *adapters, size_t n, char *err,
		  size_t errlen)
{
	FILE *f = out;
	const struct drv_ops *ops;
	int rc;

	if (!adapters) {
		for (size_t i = 0; (ops = drv_driver_at(i)); i++) {
			if (!ops->usb_ids || !ops->udev_subsystem ||
			    strcmp(ops->udev_subsystem, "usb"))
				continue;
			fprintf(f, "\n# driver \"%s\" (%s)\n", ops->name,
				ops->udev_subsystem);
			for (const struct drv_usb_id *id = ops->usb_ids; id->vid; id++) {
				fprintf(f, "# %04x:%04x %s\n", id->vid, id->pid, id->what);
				programmer_rule(f, id);
			}
		}
		fprintf(f, "\n# Generic USB-serial bridges (not claimed here; name them in\n"
			"# udev.adapters and run `station config udev`):\n");
		for (size_t i = 0; (ops = drv_driver_at(i)); i++) {
			if (!ops->usb_ids || !ops->udev_subsystem ||
			    strcmp(ops->udev_subsystem, "tty"))
				continue;
			for (const struct drv_usb_id *id = ops->usb_ids; id->vid; id++)
				if (!tty_id_seen(i, id))
					fprintf(f, "#   %04x:%04x %s (driver \"%s\")\n",
						id->vid, id->pid, id->what, ops->name);
		}
		return ferror(f) ? ST_E_IO : ST_OK;
	}
	if (n)
		fprintf(f, "SUBSYSTEM==\"tty\", ENV{ID_PATH}==\"\", IMPORT{builtin}=\"path_id\"\n");
	for (size_t i = 0; i < n; i++)
		if ((rc = adapter_rules(f, adapters[i], err, errlen)))
			return rc;
	if (n)
		fprintf(f, "# their stable name per physical socket\n"
			"SUBSYSTEM==\"tty\", ENV{STATION_PROGRAMMER}==\"1\", "
			"ENV{ID_PATH_TAG}==\"?*\", SYMLINK+=\"station/tty-$env{ID_PATH_TAG}\"\n");
	return ferror(f) ? ST_E_IO : ST_OK;
}

int st_config_udev(const char *config_path, void *out, char *err, size_t errlen)
{
	FILE *f = out;
	config_t c;
	st_problems *pl = st_problems_new();
	const config_setting_t *list;
	const char **names = NULL;
	FILE *mem;
	char *text = NULL;
	size_t len = 0;
	int rc = ST_E_CONFIG, n = 0;

	config_init(&c);
	if (!pl) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	if (!st_schema_read(&c, config_path, "configuration", pl))
		goto problem;
	st_schema_validate(&c, config_path, st_config_schema, st_config_schema_len,
			   false, pl);
	if (st_problems_count(pl))
		goto problem;
	list = config_lookup(&c, "udev.adapters");
	n = list ? config_setting_length(list) : 0;
	if (n) {
		names = calloc((size_t)n, sizeof(*names));
		if (!names) {
			rc = ST_E_NOMEM;
			goto cleanup;
		}
		for (int i = 0; i < n; i++)
			names[i] = config_setting_get_string_elem(list, i);
	}
	if (!(mem = open_memstream(&text, &len))) {
		rc = ST_E_NOMEM;
		goto cleanup;
	}
	fprintf(mem, "# 70-station-site.rules — GENERATED by `station config udev` from\n"
		"# udev.adapters in %s: the generic USB-serial\n"
		"# adapters that are programmers on this station, and no other.\n"
		"# Install as /etc/udev/rules.d/70-station-site.rules, then\n"
		"#   udevadm control --reload && udevadm trigger --subsystem-match=tty\n",
		config_path);
	if (!n)
		fprintf(mem, "# (udev.adapters is empty: no adapter is claimed)\n");
	/* all or nothing: a bad entry must not leave half a rules file */
	rc = st_udev_rules(mem, names, (size_t)n, err, errlen);
	if (fclose(mem) && !rc)
		rc = ST_E_NOMEM;
	if (!rc && fwrite(text, 1, len, f) != len)
		rc = ST_E_IO;
	goto cleanup;
problem:
	snprintf(err, errlen, "%s (station config check lists every problem)",
		 st_problems_count(pl) ? st_problem_text(pl, 0) : "unreadable");
cleanup:
	free(text);
	free(names);
	config_destroy(&c);
	st_problems_free(pl);
	return rc;
}

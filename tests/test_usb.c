/* test_usb.c — the "usb" programmer driver through real libusb against
 * simulated programmers behind umockdev (tests/fixtures/fx_usbsim): find by
 * VID:PID and serial or port, hotplug, a unit provisioned over USB by the
 * station binary, and a cable pulled mid-transfer.
 *
 * umockdev works by LD_PRELOAD: the binary re-executes itself with
 * libumockdev-preload.so.0 first (what umockdev-wrapper does), so it runs
 * the same by hand and from scripts/run-tests.sh. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base.h"
#include "device-drivers/drv.h"
#include "device-drivers/proto/proto.h"
#include "tests/fixtures/fx_devsim.h"
#include "tests/fixtures/fx_softhsm.h"
#include "tests/fixtures/fx_station.h"
#include "tests/fixtures/fx_usbsim.h"

__attribute__((constructor))
static void under_umockdev(int argc, char **argv)
{
	const char *pre = getenv("LD_PRELOAD");
	char buf[4096];

	(void)argc;
	if (pre && strstr(pre, "umockdev-preload"))
		return;
	snprintf(buf, sizeof(buf), "libumockdev-preload.so.0%s%s",
		 pre && *pre ? ":" : "", pre ? pre : "");
	setenv("LD_PRELOAD", buf, 1);
	/* A sanitizer runtime wants to be first; the preload only wraps libc
	 * calls, so let it come before (leak checking stays on). */
	snprintf(buf, sizeof(buf), "%s%sverify_asan_link_order=0",
		 getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "",
		 getenv("ASAN_OPTIONS") ? ":" : "");
	setenv("ASAN_OPTIONS", buf, 1);
	execv("/proc/self/exe", argv);
	/* Not reached unless exec failed: the tests then fail loudly in
	 * fx_usbsim_new(). */
	fprintf(stderr, "test_usb: cannot re-execute under umockdev\n");
}

static void state_path(char *out, size_t cap, const char *dir, const char *name)
{
	snprintf(out, cap, "%s/%s.json", dir, name);
}

/* uid of the simulator's unit i, from its own state file. */
static void sim_uid(const char *state, size_t i, char out[33])
{
	json_t *st = NULL;

	cr_assert_eq(fx_devsim_dump(state, &st), 0);
	snprintf(out, 33, "%s", json_string_value(json_object_get(
		json_array_get(json_object_get(st, "units"), i), "uid")));
	json_decref(st);
}

static char *tmpdir(void)
{
	char *d = strdup("/tmp/station-usb-XXXXXX");

	cr_assert_not_null(mkdtemp(d));
	return d;
}

Test(usb, enumerate_by_vid_pid_serial_and_port, .timeout = 60)
{
	fx_usbsim *u = fx_usbsim_new();
	char *dir = tmpdir(), a[600], b[600], uid_a[33], uid_b[33];
	drv_dev *d = NULL;
	drv_info info;
	drv_found *rows = NULL;
	size_t n = 0;
	char err[256];

	cr_assert_not_null(u, "umockdev testbed unavailable");
	state_path(a, sizeof(a), dir, "a");
	state_path(b, sizeof(b), dir, "b");
	cr_assert_eq(fx_usbsim_plug(u, 1, a, 1, "SP-A"), 0);
	cr_assert_eq(fx_usbsim_plug(u, 2, b, 1, "SP-B"), 0);
	sim_uid(a, 0, uid_a);
	sim_uid(b, 0, uid_b);

	/* By serial: the second programmer's unit. */
	cr_assert_eq(drv_open("usb:1209:5354?serial=SP-B", NULL, &d), ST_OK,
		     "%s", drv_errmsg(d));
	cr_assert_str_eq(drv_driver_name(d), "usb");
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	cr_assert_str_eq(info.uid_hex, uid_b);
	cr_assert_str_eq(info.fw_version, "devsim-1.0");
	drv_close(d);

	/* By port path: the first. */
	cr_assert_eq(drv_open("usb:1209:5354?port=1-1", NULL, &d), ST_OK,
		     "%s", drv_errmsg(d));
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	cr_assert_str_eq(info.uid_hex, uid_a);
	drv_close(d);

	/* Ambiguous, absent, malformed: clear errors. */
	cr_assert_eq(drv_open("usb:1209:5354", NULL, &d), ST_E_CONFIG);
	cr_assert(strstr(drv_errmsg(d), "?serial="), "%s", drv_errmsg(d));
	drv_close(d);
	cr_assert_eq(drv_open("usb:1209:5354?serial=NOPE", NULL, &d), ST_E_NOTFOUND);
	cr_assert(strstr(drv_errmsg(d), "NOPE"), "%s", drv_errmsg(d));
	drv_close(d);
	cr_assert_eq(drv_open("usb:12x9", NULL, &d), ST_E_CONFIG);
	drv_close(d);

	/* Listing: both, with serial, port and firmware. */
	cr_assert_eq(drv_list(NULL, 0, &rows, &n, err, sizeof(err)), ST_OK, "%s", err);
	cr_assert_eq(n, 2);
	for (size_t i = 0; i < n; i++) {
		const char *want = !strcmp(rows[i].port, "1-1") ? "SP-A" : "SP-B";

		cr_assert_str_eq(rows[i].driver, "usb");
		cr_assert_str_eq(rows[i].serial, want);
		cr_assert_str_eq(rows[i].fw_version, "devsim-1.0", "%s", rows[i].err);
	}
	free(rows);
	fx_usbsim_free(u);
	fx_rmtree(dir);
	free(dir);
}

Test(usb, hotplug_arrive_and_leave, .timeout = 60)
{
	fx_usbsim *u = fx_usbsim_new();
	char *dir = tmpdir(), a[600], err[256];
	drv_monitor *m = NULL;
	drv_hotplug ev;

	cr_assert_not_null(u, "umockdev testbed unavailable");
	state_path(a, sizeof(a), dir, "a");
	cr_assert_eq(drv_monitor_open(&m, err, sizeof(err)), ST_OK, "%s", err);
	cr_assert_eq(drv_monitor_wait(m, 200, &ev), 0, "no programmer yet");
	cr_assert_eq(fx_usbsim_plug(u, 3, a, 1, "SP-HOT"), 0);
	cr_assert_eq(drv_monitor_wait(m, 5000, &ev), 1, "no ARRIVED event");
	cr_assert_eq(ev.event, DRV_HOTPLUG_ARRIVED);
	cr_assert_str_eq(ev.port, "1-3");
	cr_assert_str_eq(ev.serial, "SP-HOT");
	cr_assert_str_eq(ev.uri, "usb:1209:5354?port=1-3");
	fx_usbsim_unplug(u, 3);
	cr_assert_eq(drv_monitor_wait(m, 5000, &ev), 1, "no LEFT event");
	cr_assert_eq(ev.event, DRV_HOTPLUG_LEFT);
	cr_assert_str_eq(ev.port, "1-3");
	cr_assert_str_eq(ev.serial, "SP-HOT");
	drv_monitor_close(m);
	fx_usbsim_free(u);
	fx_rmtree(dir);
	free(dir);
}

Test(usb, station_provisions_a_unit_over_usb, .timeout = 120)
{
	fx_usbsim *u = fx_usbsim_new();
	fx_world w;
	fx_run *r = calloc(1, sizeof(*r));
	char st[600], uid[33];
	json_t *rows;

	cr_assert_not_null(u, "umockdev testbed unavailable");
	cr_assert_not_null(r);
	fx_world_init(&w, true, 2000);
	state_path(st, sizeof(st), w.dir, "usbprog");
	cr_assert_eq(fx_usbsim_plug(u, 1, st, 2, "SP-0042"), 0);
	fx_station_run(r, &w, "--json", "--burn-fuses", "--yes", "--units", "1", "--slot",
		       "usb:1209:5354?serial=SP-0042", "provision", NULL);
	cr_assert_eq(r->code, 0, "provision exit %d\nstdout:%s\nstderr:%s", r->code,
		     r->out, r->err);
	sim_uid(st, 0, uid);
	rows = fx_unit_rows(&w);
	cr_assert_eq(json_array_size(rows), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0),
							   "uid")), uid);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0),
							   "state")), "PASS");
	json_decref(rows);
	fx_check_pass(&w, st, uid);
	{
		json_t *dev = fx_sim_unit(st, uid);

		cr_assert_str_eq(json_string_value(json_array_get(
			json_object_get(dev, "fuses"), 0)), FX_ROT);
		json_decref(dev);
	}
	fx_usbsim_free(u);
	fx_rmtree(w.dir);
	free(r);
}

Test(usb, unplug_mid_transfer_is_interrupted_never_pass, .timeout = 120)
{
	fx_usbsim *u = fx_usbsim_new();
	fx_world w;
	fx_run *r = calloc(1, sizeof(*r));
	char st[600], uid[33];
	json_t *rows, *row;

	cr_assert_not_null(u, "umockdev testbed unavailable");
	cr_assert_not_null(r);
	fx_world_init(&w, true, 2000);
	state_path(st, sizeof(st), w.dir, "usbprog");
	cr_assert_eq(fx_usbsim_plug(u, 1, st, 1, "SP-PULL"), 0);
	/* The certificate reaches the device, then the cable goes. */
	fx_usbsim_unplug_on(u, 1, PROTO_CMD_WRITE_CERT);
	fx_station_run(r, &w, "--json", "--slot", "usb:1209:5354?serial=SP-PULL",
		       "provision", NULL);
	cr_assert(fx_usbsim_gone(u, 1), "the simulated unplug never fired");
	cr_assert_eq(r->code, 5, "exit %d (want 5, link error)\nstdout:%s\nstderr:%s",
		     r->code, r->out, r->err);
	cr_assert(strstr(r->err, "went away") || strstr(r->out, "went away"),
		  "no unplug message:\n%s\n%s", r->out, r->err);
	sim_uid(st, 0, uid);
	rows = fx_unit_rows(&w);
	cr_assert_eq(json_array_size(rows), 1);
	row = json_array_get(rows, 0);
	cr_assert_str_eq(json_string_value(json_object_get(row, "uid")), uid);
	cr_assert_str_eq(json_string_value(json_object_get(row, "state")), "FAIL");
	cr_assert(strstr(json_string_value(json_object_get(row, "reason")),
			 "interrupted"), "reason: %s",
		  json_string_value(json_object_get(row, "reason")));
	cr_assert(json_is_null(json_object_get(row, "cert_pem")) ||
		  !strcmp(json_string_value(json_object_get(row, "state")), "FAIL"));
	cr_assert_eq(fx_count_units(&w, "PASS"), 0);
	json_decref(rows);
	fx_usbsim_free(u);
	fx_rmtree(w.dir);
	free(r);
}

Test(usb, station_devices_lists_usb_and_serial_with_slots, .timeout = 120)
{
	fx_usbsim *u = fx_usbsim_new();
	fx_world w;
	fx_run *r = calloc(1, sizeof(*r));
	fx_devsim sim;
	char a[600], b[600];
	int seen = 0;

	cr_assert_not_null(u, "umockdev testbed unavailable");
	cr_assert_not_null(r);
	fx_world_init(&w, false, 1000);
	state_path(a, sizeof(a), w.dir, "a");
	state_path(b, sizeof(b), w.dir, "b");
	cr_assert_eq(fx_usbsim_plug(u, 1, a, 1, "SP-A"), 0);
	cr_assert_eq(fx_usbsim_plug(u, 2, b, 1, "SP-B"), 0);
	cr_assert_eq(fx_devsim_start(&sim, w.dir, "tty", 1, NULL), 0);
	fx_station_run(r, &w, "--json", "--slot", "usb:1209:5354?serial=SP-B",
		       "--slot", sim.port, "devices", NULL);
	cr_assert_eq(r->code, 0, "exit %d\n%s\n%s", r->code, r->out, r->err);
	for (char *save = NULL, *line = strtok_r(r->out, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		json_t *o = json_loads(line, 0, NULL);
		const char *ev, *drv, *ser;

		cr_assert_not_null(o, "not JSON: %s", line);
		ev = json_string_value(json_object_get(o, "event"));
		if (!strcmp(ev, "devices")) {
			cr_assert_eq(json_integer_value(json_object_get(o, "count")), 3);
			json_decref(o);
			continue;
		}
		drv = json_string_value(json_object_get(o, "driver"));
		ser = json_string_value(json_object_get(o, "serial"));
		cr_assert_str_eq(json_string_value(json_object_get(o, "fw_version")),
				 "devsim-1.0", "%s", line);
		if (!strcmp(drv, "serial")) {
			cr_assert_str_eq(json_string_value(json_object_get(o, "uri")), sim.port);
			cr_assert_eq(json_integer_value(json_object_get(o, "slot")), 2);
			seen |= 4;
		} else if (!strcmp(ser, "SP-B")) {
			cr_assert_str_eq(json_string_value(json_object_get(o, "port")), "1-2");
			cr_assert_eq(json_integer_value(json_object_get(o, "slot")), 1);
			seen |= 2;
		} else {
			cr_assert_str_eq(ser, "SP-A");
			cr_assert(json_is_null(json_object_get(o, "slot")));
			seen |= 1;
		}
		json_decref(o);
	}
	cr_assert_eq(seen, 7, "missing programmers in:\n%s", r->out);
	fx_devsim_stop(&sim);
	fx_usbsim_free(u);
	fx_rmtree(w.dir);
	free(r);
}

Test(usb, stalled_endpoint_is_cleared_and_a_mute_one_times_out, .timeout = 60)
{
	fx_usbsim *u = fx_usbsim_new();
	char *dir = tmpdir(), a[600], uid[33];
	drv_opts opts = { .timeout_ms = 300 };
	drv_dev *d = NULL;
	drv_info info;

	cr_assert_not_null(u, "umockdev testbed unavailable");
	state_path(a, sizeof(a), dir, "a");
	cr_assert_eq(fx_usbsim_plug(u, 1, a, 1, "SP-ST"), 0);
	sim_uid(a, 0, uid);
	cr_assert_eq(drv_open("usb:1209:5354?serial=SP-ST", &opts, &d), ST_OK,
		     "%s", drv_errmsg(d));
	/* STALL on bulk IN: the driver clears the halt, the reply comes. */
	fx_usbsim_stall_in_once(u, 1);
	cr_assert_eq(drv_identify(d, &info), ST_OK, "%s", drv_errmsg(d));
	cr_assert_str_eq(info.uid_hex, uid);
	/* A programmer that stops answering: a timeout naming the device. */
	cr_assert_eq(fx_usbsim_fault(u, 1, "mute", NULL), 0);
	cr_assert_eq(drv_identify(d, &info), ST_E_TIMEOUT);
	cr_assert(strstr(drv_errmsg(d), "SP-ST") && strstr(drv_errmsg(d), "IDENTIFY"),
		  "%s", drv_errmsg(d));
	drv_close(d);
	fx_usbsim_free(u);
	fx_rmtree(dir);
	free(dir);
}

/* Read one line from fd within ms milliseconds ("" on timeout or EOF). */
static void read_line_ms(int fd, char *buf, size_t cap, int ms)
{
	size_t n = 0;
	int64_t deadline = st_now_ms() + ms;

	buf[0] = '\0';
	while (n + 1 < cap) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - st_now_ms();
		char c;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0 || read(fd, &c, 1) != 1)
			break;
		if (c == '\n')
			break;
		buf[n++] = c;
	}
	buf[n] = '\0';
}

Test(usb, station_devices_watch_reports_arrive_and_leave, .timeout = 60)
{
	fx_usbsim *u = fx_usbsim_new();
	fx_world w;
	char bin[512], a[600], line[1024];
	int outp[2], status;
	json_t *o;
	pid_t pid;

	cr_assert_not_null(u, "umockdev testbed unavailable");
	fx_world_init(&w, false, 1000);
	state_path(a, sizeof(a), w.dir, "a");
	snprintf(bin, sizeof(bin), "%s/station", getenv("STATION_BUILD"));
	cr_assert_eq(pipe(outp), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		dup2(outp[1], 1);
		close(outp[0]);
		execl(bin, bin, "--config", w.conf, "--json", "--slot",
		      "usb:1209:5354?serial=SP-W", "devices", "--watch", (char *)NULL);
		_exit(127);
	}
	close(outp[1]);
	/* No wait for the watcher to start: one that starts after the plug
	 * still reports it (attached programmers arrive first). */
	cr_assert_eq(fx_usbsim_plug(u, 2, a, 1, "SP-W"), 0);
	read_line_ms(outp[0], line, sizeof(line), 10000);
	o = json_loads(line, 0, NULL);
	cr_assert_not_null(o, "no arrive line: '%s'", line);
	cr_assert_str_eq(json_string_value(json_object_get(o, "event")), "arrived");
	cr_assert_str_eq(json_string_value(json_object_get(o, "serial")), "SP-W");
	cr_assert_str_eq(json_string_value(json_object_get(o, "port")), "1-2");
	cr_assert_eq(json_integer_value(json_object_get(o, "slot")), 1);
	json_decref(o);
	fx_usbsim_unplug(u, 2);
	read_line_ms(outp[0], line, sizeof(line), 10000);
	o = json_loads(line, 0, NULL);
	cr_assert_not_null(o, "no leave line: '%s'", line);
	cr_assert_str_eq(json_string_value(json_object_get(o, "event")), "left");
	cr_assert_str_eq(json_string_value(json_object_get(o, "serial")), "SP-W");
	json_decref(o);
	kill(pid, SIGTERM);
	waitpid(pid, &status, 0);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
	close(outp[0]);
	fx_usbsim_free(u);
	fx_rmtree(w.dir);
}

Test(usb, devsim_usb_mode_serves_the_station_binary, .timeout = 120)
{
	fx_world w;
	char devsim[512], station[512], st[600], uid[33], outp[600];
	int status;
	json_t *rows;
	pid_t pid;

	/* No fixture testbed here: station-devsim --usb makes its own and
	 * runs the station inside it, as an operator would by hand. */
	fx_world_init(&w, true, 2000);
	state_path(st, sizeof(st), w.dir, "cli");
	snprintf(outp, sizeof(outp), "%s/devsim.out", w.dir);
	snprintf(devsim, sizeof(devsim), "%s/station-devsim", getenv("STATION_BUILD"));
	snprintf(station, sizeof(station), "%s/station", getenv("STATION_BUILD"));
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int fd = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(fd, 1);
		dup2(fd, 2);
		/* OpenSSL's per-thread DRBGs of the testbed's worker thread (it
		 * runs KEYGEN) are not released before that thread is torn down
		 * at exit: LeakSanitizer would count them against the simulator.
		 * Off for this simulator and the station it runs only; on for
		 * every other process of this suite. */
		if (getenv("ASAN_OPTIONS")) {
			char o[1024];

			snprintf(o, sizeof(o), "%s:detect_leaks=0", getenv("ASAN_OPTIONS"));
			setenv("ASAN_OPTIONS", o, 1);
		}
		execl(devsim, devsim, "--usb", "SP-CLI", "--state", st, "--units", "1",
		      "--", station, "--config", w.conf, "--pin-file", w.pinfile,
		      "--burn-fuses", "--yes", "--slot", "usb:1209:5354?serial=SP-CLI",
		      "provision", (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &status, 0);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "station-devsim --usb ... -- station provision: status %d (see %s)",
		  status, outp);
	sim_uid(st, 0, uid);
	rows = fx_unit_rows(&w);
	cr_assert_eq(json_array_size(rows), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0),
							   "state")), "PASS");
	json_decref(rows);
	fx_check_pass(&w, st, uid);
	fx_rmtree(w.dir);
}

/* Start `station --config --pin-file ARGS...` in the background; its
 * stdout+stderr go to <dir>/bg.out. */
static pid_t station_bg(const fx_world *w, const char *const *args)
{
	char bin[512], out[600];
	const char *argv[32];
	int argc = 0;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/station", getenv("STATION_BUILD"));
	snprintf(out, sizeof(out), "%s/bg.out", w->dir);
	argv[argc++] = bin;
	argv[argc++] = "--config";
	argv[argc++] = w->conf;
	argv[argc++] = "--pin-file";
	argv[argc++] = w->pinfile;
	while (*args && argc < 30)
		argv[argc++] = *args++;
	argv[argc] = NULL;
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(fd, 1);
		dup2(fd, 2);
		execv(bin, (char **)argv);
		_exit(127);
	}
	return pid;
}

/* Does <dir>/<name> contain text within ms milliseconds? */
static bool file_has(const char *dir, const char *name, const char *text, int ms)
{
	int64_t deadline = st_now_ms() + ms;
	char p[600], buf[16384];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	do {
		FILE *f = fopen(p, "r");
		size_t n = 0;

		if (f) {
			n = fread(buf, 1, sizeof(buf) - 1, f);
			fclose(f);
		}
		buf[n] = '\0';
		if (strstr(buf, text))
			return true;
		usleep(20 * 1000); /* polling a file the station writes */
	} while (st_now_ms() < deadline);
	return false;
}

static int wait_exit(pid_t pid)
{
	int status;

	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Test(usb, slot_appears_when_its_programmer_is_plugged, .timeout = 120)
{
	static const char *const args[] = { "--plug-wait", "60", "--burn-fuses", "--yes",
		"--slot", "usb:1209:5354?serial=SP-LATE", "provision", NULL };
	fx_usbsim *u = fx_usbsim_new();
	fx_world w;
	char st[600], uid[33];
	pid_t pid;
	int code;

	cr_assert_not_null(u, "umockdev testbed unavailable");
	fx_world_init(&w, true, 2000);
	state_path(st, sizeof(st), w.dir, "late");
	/* The station starts with no programmer attached and waits... */
	pid = station_bg(&w, args);
	/* ...and the programmer is plugged whenever the operator gets to it
	 * (before or after the station listens: both must work). */
	cr_assert_eq(fx_usbsim_plug(u, 4, st, 1, "SP-LATE"), 0);
	code = wait_exit(pid);
	cr_assert_eq(code, 0, "exit %d, see %s/bg.out", code, w.dir);
	sim_uid(st, 0, uid);
	cr_assert_eq(fx_count_units(&w, "PASS"), 1);
	fx_check_pass(&w, st, uid);
	fx_usbsim_free(u);
	fx_rmtree(w.dir);
}

Test(usb, unplugged_mid_unit_then_replugged_resumes_the_unit, .timeout = 120)
{
	static const char *const args[] = { "--plug-wait", "60", "--burn-fuses", "--yes",
		"--slot", "usb:1209:5354?serial=SP-BACK", "provision", NULL };
	fx_usbsim *u = fx_usbsim_new();
	fx_world w;
	char st[600], uid[33];
	json_t *rows;
	int64_t deadline;
	pid_t pid;
	int code;

	cr_assert_not_null(u, "umockdev testbed unavailable");
	fx_world_init(&w, true, 2000);
	state_path(st, sizeof(st), w.dir, "back");
	cr_assert_eq(fx_usbsim_plug(u, 1, st, 1, "SP-BACK"), 0);
	fx_usbsim_unplug_on(u, 1, PROTO_CMD_WRITE_CERT);
	pid = station_bg(&w, args);
	/* Wait for the cable to be "pulled" mid-transfer... */
	deadline = st_now_ms() + 60000;
	while (!fx_usbsim_gone(u, 1) && st_now_ms() < deadline)
		usleep(20 * 1000);
	cr_assert(fx_usbsim_gone(u, 1), "the simulated unplug never fired");
	/* ...then take it out, and plug it back (same programmer state) once
	 * the station says it waits for it. */
	fx_usbsim_unplug(u, 1);
	cr_assert(file_has(w.dir, "bg.out", "waiting for it to be plugged", 60000),
		  "the station did not wait for the programmer");
	cr_assert_eq(fx_usbsim_plug(u, 1, st, 1, "SP-BACK"), 0);
	code = wait_exit(pid);
	/* The unplug is reported (exit 5), and the unit was done again. */
	cr_assert_eq(code, 5, "exit %d, see %s/bg.out", code, w.dir);
	sim_uid(st, 0, uid);
	rows = fx_unit_rows(&w);
	cr_assert_eq(json_array_size(rows), 2, "want an interrupted row and a PASS");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0),
							   "state")), "FAIL");
	cr_assert(strstr(json_string_value(json_object_get(json_array_get(rows, 0),
							   "reason")), "interrupted"));
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 1),
							   "state")), "PASS");
	json_decref(rows);
	fx_check_pass(&w, st, uid);
	fx_usbsim_free(u);
	fx_rmtree(w.dir);
}

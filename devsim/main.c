/* main.c — station-devsim: a simulated station programmer on a pty.
 *
 *   station-devsim --state FILE [--link PATH] [--units N] [--seed S]
 *                  [--model NAME] [--fault NAME[:ARG]] [--vpp MV] [--temp C]
 *                  [--baud N] [--fuse-word-us US] [--keygen-ms MS]
 *                  [--forget-done] [--save-at-release] [--programmers N]
 *                  [--link-caps MASK] [--verbose] [--dump]
 *
 * Prints "ready <slave-path>" once the line is up, serves requests until
 * SIGTERM/SIGINT, and exits 0 (3 when a fault dropped the link: the pty is
 * gone as a pulled cable would be).  The protocol engine is core.c.
 *
 *   station-devsim --usb SERIAL --state FILE [...] [-- COMMAND ARGS...]
 *
 * is the same programmer as a USB device (usbdev.c) in a umockdev testbed;
 * run it under umockdev-wrapper.  It prints "ready usb:1209:5354?serial=
 * SERIAL", runs COMMAND (which sees the device through libusb) and exits
 * with its status; without COMMAND it serves until SIGTERM/SIGINT.  State (units, keys, certs, fuses) lives in
 * FILE and is saved after every change (--save-at-release: when a unit
 * leaves, and at exit).
 *
 * --programmers N runs N independent programmers in one process,
 * one thread and one pty each (a gang programmer's sites; benchmarks with
 * 64 slots on a 2-core machine): programmer i (1..N) keeps its state in
 * FILE.i, links PATH.i, seeds its units with "S.i", and prints its own
 * "ready <slave-path>" line, in order. */
#include "devsim/sim.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "base.h"
#include "devsim/esp32c3.h"
#include "devsim/usbdev.h"

/* Point link at target atomically (symlink beside it, then rename). */
static int make_link(const char *link, const char *target)
{
	char tmp[4096];

	snprintf(tmp, sizeof(tmp), "%s.tmp%ld", link, (long)getpid());
	unlink(tmp);
	if (symlink(target, tmp) < 0 || rename(tmp, link) < 0) {
		fprintf(stderr, "station-devsim: cannot link %s -> %s: %s\n",
			link, target, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* Serve the line until a signal arrives on sigfd. */
static int serve(struct sim *s, int sigfd)
{
	uint8_t buf[1024];

	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = s->master, .events = POLLIN },
			{ .fd = sigfd, .events = POLLIN },
		};
		ssize_t n;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (pfd[1].revents)
			return 0;
		if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = read(s->master, buf, sizeof(buf));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			/* Cannot happen while we hold the slave; avoid a spin. */
			poll(pfd + 1, 1, 50);
			continue;
		}
		sim_feed(s, buf, (size_t)n);
		if (s->dropped)
			return 1; /* the fault cut the line: hang up */
	}
}

/* Open a raw pty for s: s->master (non-blocking) and *slave, which we keep
 * open ourselves: the master then never sees EIO when a station closes the
 * port, and settings persist across opens.  0 or -1. */
static int open_line(struct sim *s, int *slave, char *name)
{
	struct termios tio;

	if (openpty(&s->master, slave, name, NULL, NULL) < 0) {
		perror("station-devsim: openpty");
		return -1;
	}
	if (tcgetattr(*slave, &tio) == 0) {
		cfmakeraw(&tio);
		cfsetispeed(&tio, B115200);
		cfsetospeed(&tio, B115200);
		tcsetattr(*slave, TCSANOW, &tio);
	}
	fcntl(s->master, F_SETFL, fcntl(s->master, F_GETFL) | O_NONBLOCK);
	fcntl(s->master, F_SETFD, FD_CLOEXEC);
	fcntl(*slave, F_SETFD, FD_CLOEXEC);
	return 0;
}

/* Remove link if it still points at name (a newer programmer may own it). */
static void drop_link(const char *link, const char *name)
{
	char cur[256];
	ssize_t n;

	if (!link)
		return;
	n = readlink(link, cur, sizeof(cur) - 1);
	if (n > 0 && (cur[n] = '\0', !strcmp(cur, name)))
		unlink(link);
}

/* Save what --save-at-release still holds in memory.  0 or -1. */
static int save_dirty(struct sim *s)
{
	return s->save_at_release && s->dirty && s->nunits ? sim_state_save(s) : 0;
}

/* One programmer of --programmers N: its own state, pty and thread. */
struct prog {
	struct sim *s;
	int slave;
	char name[256];
	char state[4096], link[4096], seed[300];
	int sigfd;
	int rc;               /* serve(): 0 signal, 1 dropped, -1 error */
	int running;
	pthread_t th;
};

static void *prog_thread(void *arg)
{
	struct prog *p = arg;

	p->rc = serve(p->s, p->sigfd);
	if (p->rc == 1) {
		/* A pulled cable: this programmer's pty goes, the others stay. */
		fprintf(stderr, "station-devsim: %s: fault %s dropped the link\n",
			p->state, p->s->fault->name);
		drop_link(p->link[0] ? p->link : NULL, p->name);
		close(p->slave);
		p->slave = -1;
		close(p->s->master);
		p->s->master = -1;
	}
	return NULL;
}

/* --programmers N: N copies of the programmer t describes, each on its own
 * pty and thread, until a signal arrives on sigfd.  Exit code as main's. */
static int serve_gang(const struct sim *t, long n, const char *link,
		      const char *seed, const char *model, long units,
		      const char *fault_arg, int sigfd)
{
	struct prog *pg = calloc((size_t)n, sizeof(*pg));
	int rc = 1, dropped = 0, failed = 0;
	long i;

	if (!pg)
		return 1;
	for (i = 0; i < n; i++) {
		pg[i].slave = -1;
		pg[i].sigfd = sigfd;
		pg[i].s = malloc(sizeof(*pg[i].s));
		if (!pg[i].s)
			goto out;
		*pg[i].s = *t;
		pg[i].s->master = -1;
		snprintf(pg[i].state, sizeof(pg[i].state), "%s.%ld", t->state_path, i + 1);
		snprintf(pg[i].seed, sizeof(pg[i].seed), "%s.%ld", seed, i + 1);
		if (link)
			snprintf(pg[i].link, sizeof(pg[i].link), "%s.%ld", link, i + 1);
		pg[i].s->state_path = pg[i].state;
		sim_seed(pg[i].s, pg[i].seed);
		if (t->fault->setup && t->fault->setup(pg[i].s, fault_arg))
			goto out;
		if (sim_state_load(pg[i].s, 1, (size_t)units, pg[i].seed, model) < 0)
			goto out;
		if (open_line(pg[i].s, &pg[i].slave, pg[i].name) < 0)
			goto out;
		if (link && make_link(pg[i].link, pg[i].name) < 0)
			goto out;
		proto_rx_init(&pg[i].s->rx);
	}
	for (i = 0; i < n; i++) {
		if (pthread_create(&pg[i].th, NULL, prog_thread, &pg[i])) {
			fprintf(stderr, "station-devsim: cannot start programmer %ld\n", i + 1);
			goto out;
		}
		pg[i].running = 1;
		printf("ready %s\n", pg[i].name);
		sim_log(pg[i].s, "serving %s (%zu units, fault %s)", pg[i].name,
			pg[i].s->nunits, pg[i].s->fault->name);
	}
	fflush(stdout);
	rc = 0;
out:
	if (rc) {
		/* Stop the threads already serving: they watch the signal fd. */
		kill(getpid(), SIGTERM);
	}
	for (i = 0; i < n; i++) {
		if (pg[i].running) {
			pthread_join(pg[i].th, NULL);
			dropped |= pg[i].rc == 1;
			failed |= pg[i].rc < 0;
		}
		if (!pg[i].s)
			continue;
		if (save_dirty(pg[i].s) < 0)
			failed = 1;
		if (pg[i].slave >= 0) {
			drop_link(pg[i].link[0] ? pg[i].link : NULL, pg[i].name);
			close(pg[i].slave);
		}
		if (pg[i].s->master >= 0)
			close(pg[i].s->master);
		sim_state_free(pg[i].s);
		free(pg[i].s);
	}
	free(pg);
	if (rc)
		return rc;
	return dropped ? 3 : failed;
}

/* USB mode: plug into a fresh umockdev testbed, run argv (if any) in it,
 * and return our exit code. */
static int serve_usb(struct sim *s, const char *serial, int sigfd, char **argv)
{
	UMockdevTestbed *tb;
	sim_usbdev *d;
	char err[256];
	int rc = 1;
	pid_t pid = -1;

	tb = umockdev_testbed_new();
	if (!tb || !umockdev_in_mock_environment()) {
		fprintf(stderr, "station-devsim: --usb needs umockdev: run it as "
			"'umockdev-wrapper station-devsim --usb ...'\n");
		if (tb)
			g_object_unref(tb);
		return 1;
	}
	d = sim_usbdev_plug(tb, s, 1, serial, err, sizeof(err));
	if (!d) {
		fprintf(stderr, "station-devsim: %s\n", err);
		g_object_unref(tb);
		return 1;
	}
	printf("ready usb:%04x:%04x?serial=%s\n", SIM_USB_VID, SIM_USB_PID, serial);
	fflush(stdout);
	sim_log(s, "serving USB 1209:5354 serial %s (%zu units, fault %s)", serial,
		s->nunits, s->fault->name);
	if (argv && argv[0]) {
		sigset_t none;

		pid = fork();
		if (pid == 0) {
			sigemptyset(&none);
			sigprocmask(SIG_SETMASK, &none, NULL);
			execvp(argv[0], argv);
			fprintf(stderr, "station-devsim: cannot run %s: %s\n", argv[0],
				strerror(errno));
			_exit(127);
		}
	}
	for (;;) {
		struct pollfd pfd = { .fd = sigfd, .events = POLLIN };
		int status;

		/* The testbed's thread serves the device; we wait for the end. */
		if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid) {
			rc = WIFEXITED(status) ? WEXITSTATUS(status) :
			     128 + WTERMSIG(status);
			break;
		}
		if (pid < 0 && argv && argv[0]) {
			perror("station-devsim: fork");
			break;
		}
		if (poll(&pfd, 1, 50) > 0) {
			if (pid > 0) {
				kill(pid, SIGTERM);
				continue;
			}
			rc = 0;
			break;
		}
	}
	sim_usbdev_unplug(d);
	sim_usbdev_free(d);
	g_object_unref(tb);
	return rc;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: station-devsim --state FILE [--link PATH] [--units N] [--seed S]\n"
		"                      [--model NAME] [--fault NAME[:ARG]] [--vpp MV] [--temp C]\n"
		"                      [--verbose] [--dump]\n"
		"  --vpp MV, --temp C: programming voltage and temperature reported by\n"
		"                      CONDITIONS (default 2500 mV, 25.0 C)\n"
		"  line model (default: none, as fast as the pty):\n"
		"  --baud N            pace the line as a UART at N baud (10 bits a byte)\n"
		"  --fuse-word-us US   programming one OTP word takes US microseconds\n"
		"  --keygen-ms MS      the chip takes MS ms to generate its key\n"
		"  --forget-done       keep only the unit in the programmer: a released\n"
		"                      unit leaves the state file, the next is made as it\n"
		"                      enters (long runs: a save no longer grows with N)\n"
		"  --save-at-release   benchmarks: keep the state in memory and save it\n"
		"                      only when a unit is released and at exit (default:\n"
		"                      after every change, as a programmer's flash would)\n"
		"  --programmers N     N programmers (1..64) in this process, one pty and\n"
		"                      thread each: FILE.i, PATH.i, seed S.i; one ready\n"
		"                      line each\n"
		"  --link-caps MASK    link extension bits offered (default 0x7: 1 NAK,\n"
		"                      2 certificate in parts, 4 repeatable KEYGEN and\n"
		"                      RELEASE); 0 behaves as a v1 programmer\n"
		"  --slot-size BYTES   capacity of each of the target's 2 firmware image\n"
		"                      slots (default 65536)\n"
		"       station-devsim --usb SERIAL --state FILE [...] [-- COMMAND ARGS...]\n"
		"                      (under umockdev-wrapper: a USB programmer)\n"
		"       station-devsim --model esp32c3 --state FILE [...]\n"
		"                      (an ESP32-C3's ROM loader: --model esp32c3 --help)\n"
		"faults:\n");
	sim_fault_list();
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "link", required_argument, NULL, 'l' },
		{ "units", required_argument, NULL, 'n' },
		{ "seed", required_argument, NULL, 'S' },
		{ "model", required_argument, NULL, 'm' },
		{ "fault", required_argument, NULL, 'f' },
		{ "vpp", required_argument, NULL, 'V' },
		{ "temp", required_argument, NULL, 'C' },
		{ "baud", required_argument, NULL, 'B' },
		{ "fuse-word-us", required_argument, NULL, 'W' },
		{ "keygen-ms", required_argument, NULL, 'K' },
		{ "forget-done", no_argument, NULL, 'F' },
		{ "save-at-release", no_argument, NULL, 'A' },
		{ "programmers", required_argument, NULL, 'P' },
		{ "dump", no_argument, NULL, 'd' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "usb", required_argument, NULL, 'u' },
		{ "link-caps", required_argument, NULL, 'L' },
		{ "slot-size", required_argument, NULL, 'Z' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct sim *s = NULL;
	const char *usb_serial = NULL;
	const char *link = NULL, *seed = "devsim", *model = "ST-DEV-1";
	char fault_name[64] = "none", *fault_arg = NULL, slave_name[256];
	long units = 1, nprog = 0;
	int dump = 0, slave = -1, sigfd = -1, rc = 1, opt;
	sigset_t set;

	/* --model esp32c3 is another device altogether (an ESP32-C3's ROM
	 * loader, devsim/esp32c3.c) with its own options. */
	for (int i = 1; i < argc; i++)
		if ((!strcmp(argv[i], "--model") && i + 1 < argc &&
		     !strcmp(argv[i + 1], "esp32c3")) || !strcmp(argv[i], "--model=esp32c3"))
			return esp32c3_main(argc, argv);

	s = calloc(1, sizeof(*s));
	if (!s)
		return 1;
	s->master = -1;
	s->link_caps = PROTO_LINK_ALL;
	s->vpp_mv = 2500;
	s->temp_dc = 250;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 's': s->state_path = optarg; break;
		case 'l': link = optarg; break;
		case 'n': {
			char *end;

			units = strtol(optarg, &end, 10);
			if (end == optarg || *end || units < 0 || units > 10000) {
				fprintf(stderr, "station-devsim: bad --units %s\n", optarg);
				goto out;
			}
			break;
		}
		case 'S': seed = optarg; break;
		case 'm': model = optarg; break;
		case 'f':
			snprintf(fault_name, sizeof(fault_name), "%s", optarg);
			if ((fault_arg = strchr(fault_name, ':')))
				*fault_arg++ = '\0';
			break;
		case 'V': case 'C': {
			char *end;
			double v = strtod(optarg, &end);

			if (end == optarg || *end || (opt == 'V' && (v < 0 || v > 65535)) ||
			    (opt == 'C' && (v < -273 || v > 1000))) {
				fprintf(stderr, "station-devsim: bad --%s %s\n",
					opt == 'V' ? "vpp" : "temp", optarg);
				goto out;
			}
			if (opt == 'V')
				s->vpp_mv = (int)v;
			else
				s->temp_dc = (int)(v * 10 + (v < 0 ? -0.5 : 0.5));
			break;
		}
		case 'B': case 'W': case 'K': {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);

			if (end == optarg || *end || *optarg == '-' ||
			    (opt == 'B' && (v < 300 || v > 4000000)) ||
			    (opt != 'B' && v > 60000000)) {
				fprintf(stderr, "station-devsim: bad --%s %s\n",
					opt == 'B' ? "baud" : opt == 'W' ?
					"fuse-word-us" : "keygen-ms", optarg);
				goto out;
			}
			if (opt == 'B')
				s->baud = v;
			else if (opt == 'W')
				s->fuse_word_us = v;
			else
				s->keygen_ms = v;
			break;
		}
		case 'F': s->forget_done = 1; break;
		case 'A': s->save_at_release = 1; break;
		case 'P': {
			char *end;

			nprog = strtol(optarg, &end, 10);
			if (end == optarg || *end || nprog < 1 || nprog > SIM_MAX_PROGRAMMERS) {
				fprintf(stderr, "station-devsim: bad --programmers %s "
					"(1..%d)\n", optarg, SIM_MAX_PROGRAMMERS);
				goto out;
			}
			break;
		}
		case 'd': dump = 1; break;
		case 'v': s->verbose = 1; break;
		case 'u': usb_serial = optarg; break;
		case 'L': {
			char *end;
			unsigned long v = strtoul(optarg, &end, 0);

			if (end == optarg || *end || v & ~(unsigned long)PROTO_LINK_ALL) {
				fprintf(stderr, "station-devsim: bad --link-caps %s "
					"(0..0x%x; 0: a v1 programmer)\n", optarg,
					PROTO_LINK_ALL);
				goto out;
			}
			s->link_caps = (uint32_t)v;
			break;
		}
		case 'Z': {
			char *end;
			unsigned long v = strtoul(optarg, &end, 0);

			if (end == optarg || *end || *optarg == '-' || v == 0 ||
			    v > 64ul * 1024 * 1024) {
				fprintf(stderr, "station-devsim: bad --slot-size %s "
					"(1..67108864 bytes)\n", optarg);
				goto out;
			}
			s->slot_size = (uint32_t)v;
			break;
		}
		case 'h': usage(); rc = 0; goto out;
		default: usage(); goto out;
		}
	}
	if (!s->state_path || (optind != argc && !usb_serial)) {
		usage();
		goto out;
	}
	s->fault = sim_fault_find(fault_name);
	if (!s->fault) {
		fprintf(stderr, "station-devsim: unknown fault '%s'\n", fault_name);
		usage();
		goto out;
	}
	if (fault_arg && !s->fault->setup) {
		fprintf(stderr, "station-devsim: fault '%s' takes no argument\n",
			fault_name);
		goto out;
	}
	if (nprog > 0) {
		if (usb_serial || dump) {
			fprintf(stderr, "station-devsim: --programmers goes with "
				"neither --usb nor --dump\n");
			goto out;
		}
		sigemptyset(&set);
		sigaddset(&set, SIGTERM);
		sigaddset(&set, SIGINT);
		sigprocmask(SIG_BLOCK, &set, NULL);
		signal(SIGPIPE, SIG_IGN);
		sigfd = signalfd(-1, &set, SFD_CLOEXEC);
		if (sigfd < 0) {
			perror("station-devsim: signalfd");
			goto out;
		}
		rc = serve_gang(s, nprog, link, seed, model, units, fault_arg, sigfd);
		goto out;
	}
	sim_seed(s, seed);
	if (s->fault->setup && s->fault->setup(s, fault_arg))
		goto out;
	if (sim_state_load(s, !dump, (size_t)units, seed, model) < 0)
		goto out;
	if (dump) {
		rc = sim_state_dump(s) < 0;
		goto out;
	}

	/* Signals arrive on a descriptor: no handler, no global flag. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sigfd < 0) {
		perror("station-devsim: signalfd");
		goto out;
	}
	if (usb_serial) {
		proto_rx_init(&s->rx);
		rc = serve_usb(s, usb_serial, sigfd, argv + optind);
		goto out;
	}
	if (open_line(s, &slave, slave_name) < 0)
		goto out;
	if (link && make_link(link, slave_name) < 0)
		goto out;
	proto_rx_init(&s->rx);
	printf("ready %s\n", slave_name);
	fflush(stdout);
	sim_log(s, "serving %s (%zu units, fault %s)", slave_name, s->nunits,
		s->fault->name);
	rc = serve(s, sigfd);
	if (rc == 1) {
		fprintf(stderr, "station-devsim: fault %s dropped the link\n",
			s->fault->name);
		rc = 3;
	} else {
		rc = rc < 0;
	}
	drop_link(link, slave_name);
out:
	if (save_dirty(s) < 0 && !rc)
		rc = 1;
	if (sigfd >= 0)
		close(sigfd);
	if (slave >= 0)
		close(slave);
	if (s->master >= 0)
		close(s->master);
	sim_state_free(s);
	free(s);
	return rc;
}

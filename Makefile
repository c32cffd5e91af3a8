# station — build, test, demo.  Out-of-tree: everything goes under $(BUILD).
#   make            build station and station-devsim
#   make demo       provision a few simulated units from a fresh SoftHSM CA
#   make demo-esp32 two simulated ESP32-C3 chips through the esp32 driver,
#                   refereed by esptool/espefuse (docs/esp32.md)
#   make check      the include-layer check, the udev check, and the whole
#                   test suite, plain and under ASan+UBSan
#   make deps       install missing Debian packages (needs root)
#   make install    PREFIX=/usr/local DESTDIR= (install-sim: the simulator;
#                   uninstall, uninstall-sim take them away again)
#   make package    the Debian packages (dpkg-buildpackage), in ..
#   make check-package  build, lintian, install, demo, purge (root, CI)

BUILD  ?= build
PREFIX ?= /usr/local
CC     ?= cc
# The version lives in debian/changelog only (the package's version);
# `station --version` says the same (make check-package checks it).
VERSION := $(shell sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
SYSCONFDIR ?= /etc
LOCALSTATEDIR ?= /var

PKGS      := openssl sqlite3 zlib jansson libconfig libusb-1.0 ncursesw libcrypt
# TPM 2.0 targets (device-drivers/tpm2/): tpm2-tss ESYS, TCTI loader, RC decoding.
PKGS      += tss2-esys tss2-tctildr tss2-rc
# The central copy of the records (records/pgsync.c, docs/sync.md).
PKGS      += libpq
# Results to the MES over HTTP(S) and MQTT (station/mes.c, docs/integration.md); labels (station/label.c).
PKGS      += libcurl libqrencode libpng libmosquitto
# The journal (base/log.c: sd_journal_sendv).
PKGS      += libsystemd
# PKCS#11 modules are dlopen()ed: from p11-kit come the header and its
# RFC 7512 URI parser (p11_kit_uri_*), no module loading.
PKGS      += p11-kit-1
HDR_PKGS  :=
TEST_PKGS := criterion

CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CPPFLAGS_ALL := -std=c11 -D_GNU_SOURCE -MMD -MP -I. -Ibase \
	$(shell pkg-config --cflags $(PKGS) $(HDR_PKGS) 2>/dev/null)
LIBS    := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -ldl -lpthread -lutil
TLIBS   := $(shell pkg-config --libs $(TEST_PKGS) 2>/dev/null)
SAN     ?=
ALL_CFLAGS = $(CPPFLAGS_ALL) $(WARN) $(CFLAGS) $(SAN) $(CPPFLAGS)
ALL_LDFLAGS = $(SAN) $(LDFLAGS)

LIB_SRCS := $(wildcard base/*.c hsm/*.c records/*.c ui/*.c \
	device-drivers/*.c device-drivers/proto/*.c \
	device-drivers/serial/*.c device-drivers/stprog/*.c \
	device-drivers/usb/*.c device-drivers/tpm2/*.c device-drivers/esp32/*.c) \
	$(wildcard station/*.c) $(filter-out cli/main.c,$(wildcard cli/*.c))
SIM_SRCS := $(wildcard devsim/*.c)
SIM_LIB_SRCS := $(wildcard base/*.c device-drivers/proto/*.c)
# fx_usbsim needs umockdev and the simulator core: only test_usb links it.
FIX_SRCS := $(filter-out tests/fixtures/fx_usbsim.c,$(wildcard tests/fixtures/*.c))
TEST_SRCS := $(wildcard tests/test_*.c)

OBJ := $(BUILD)/obj
LIB_OBJS := $(LIB_SRCS:%.c=$(OBJ)/%.o)
SIM_OBJS := $(SIM_SRCS:%.c=$(OBJ)/%.o) $(SIM_LIB_SRCS:%.c=$(OBJ)/%.o)
FIX_OBJS := $(FIX_SRCS:%.c=$(OBJ)/%.o)
TESTS    := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
SIMCORE_OBJS := $(filter-out $(OBJ)/devsim/main.o,$(SIM_SRCS:%.c=$(OBJ)/%.o))
UMOCK_CFLAGS := $(shell pkg-config --cflags umockdev-1.0 2>/dev/null)
UMOCK_LIBS   := $(shell pkg-config --libs umockdev-1.0 2>/dev/null)

STATION := $(BUILD)/station
LANGS := $(basename $(notdir $(wildcard po/*.po)))
MOS := $(foreach l,$(LANGS),$(BUILD)/locale/$(l)/LC_MESSAGES/station.mo)
DEVSIM  := $(BUILD)/station-devsim
GEN_UDEV := $(BUILD)/gen-udev
BENCH_HSM := $(BUILD)/bench-hsm

.SECONDARY:

.PHONY: all deps demo demo-run demo-esp32 demo-esp32-run check check-run check-plain check-udev check-layers \
	udev fuzz bench asan install install-sim uninstall uninstall-sim clean tests \
	man package check-package pot

all: $(STATION) $(DEVSIM) $(MOS)

# Translations (docs/tui.md, "Translations"): po/LANG.po compiled into the
# build's locale directory, which tests name in STATION_LOCALEDIR.
$(BUILD)/locale/%/LC_MESSAGES/station.mo: po/%.po
	@mkdir -p $(@D)
	msgfmt --check -o $@ $<

# The template a translator starts from: every _() and N_() string.
pot:
	xgettext --from-code=UTF-8 --keyword=_ --keyword=N_ --add-comments=TRANSLATORS \
		-o po/station.pot $(sort $(wildcard ui/*.c cli/*.c))

$(BUILD)/libstation.a: $(LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

$(STATION): $(OBJ)/cli/main.o $(BUILD)/libstation.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(DEVSIM): $(SIM_OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) $(UMOCK_LIBS)

$(GEN_UDEV): $(OBJ)/tools/gen-udev.o $(BUILD)/libstation.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BENCH_HSM): $(OBJ)/tools/bench-hsm.o $(BUILD)/libstation.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

# Benchmark, not a test: no timing is asserted anywhere.  Writes
# docs/benchmarks.md (scripts/bench.sh says what is measured).
bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_HSM)
	@bash scripts/bench.sh $(BUILD)

# udev rules are generated from the drivers' USB id tables and committed.
udev: $(GEN_UDEV)
	$(GEN_UDEV) > udev/70-station.rules

# ... and the rules do what they say: udevadm test (the real udev) on
# umockdev-recorded devices: a programmer is claimed, an unrelated FTDI
# adapter is not (tests/udev-test.sh; needs root for a private mount).
check-udev: $(GEN_UDEV) $(STATION)
	@$(GEN_UDEV) | diff -u udev/70-station.rules - >/dev/null || { \
		echo "udev/70-station.rules differs from the drivers' id tables:" \
		     "run 'make udev' and commit it" >&2; \
		$(GEN_UDEV) | diff -u udev/70-station.rules - >&2; exit 1; }
	@echo "udev/70-station.rules matches the drivers' id tables"
	@sh tests/udev-test.sh $(STATION)

# Dependencies point one way (issue 18): no #include crosses a layer the
# wrong way (scripts/check-layers.sh says which, and lists today's known
# violations); the second script checks that the check fails when it should.
check-layers:
	@sh scripts/check-layers.sh .
	@sh tests/check-layers-test.sh

$(OBJ)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: $(OBJ)/tests/%.o $(FIX_OBJS) $(BUILD)/libstation.a
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) $(TLIBS)

# `station --version`: the version is VERSION above, and only here.
$(OBJ)/cli/cmd.o: CPPFLAGS_ALL += -DST_VERSION='"$(VERSION)"'
$(OBJ)/base/base.o: CPPFLAGS_ALL += -DST_LOCALEDIR='"$(PREFIX)/share/locale"'

# The simulator's USB device mode and its users need umockdev's headers.
$(OBJ)/tests/test_usb.o $(OBJ)/tests/fixtures/fx_usbsim.o \
$(OBJ)/devsim/usbdev.o $(OBJ)/devsim/main.o: \
	CPPFLAGS_ALL += $(UMOCK_CFLAGS)

$(BUILD)/tests/test_usb: $(OBJ)/tests/test_usb.o $(FIX_OBJS) \
		$(OBJ)/tests/fixtures/fx_usbsim.o $(SIMCORE_OBJS) $(BUILD)/libstation.a
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) $(TLIBS) $(UMOCK_LIBS)

# The fuzz-regression test replays inputs through the fuzz harness.
$(BUILD)/tests/test_fuzz_regress: $(OBJ)/tests/test_fuzz_regress.o \
		$(OBJ)/tests/fuzz/fuzz_proto.o $(FIX_OBJS) $(BUILD)/libstation.a
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) $(TLIBS)

tests: all $(TESTS)

deps:
	@sh scripts/deps.sh

# The demo: a fresh SoftHSM token and CA under ./state, two simulated
# programmers on ptys, units provisioned, a summary printed.
demo: deps
	@$(MAKE) --no-print-directory demo-run

demo-run: all
	@bash scripts/demo.sh $(BUILD)

# Two simulated ESP32-C3 chips (station-devsim --model esp32c3) through the
# esp32 driver, with Espressif's tools as the referee (installed by deps).
demo-esp32: deps
	@$(MAKE) --no-print-directory demo-esp32-run

demo-esp32-run: all
	@bash scripts/demo-esp32.sh $(BUILD)

# The whole suite, plain build then the ASan+UBSan build.
check: deps
	@$(MAKE) --no-print-directory check-run

check-run:
	@$(MAKE) --no-print-directory check-layers
	@$(MAKE) --no-print-directory check-udev
	@$(MAKE) --no-print-directory check-plain
	@$(MAKE) --no-print-directory check-plain BUILD=$(BUILD)-asan \
		SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"

check-plain: tests
	@sh scripts/run-tests.sh $(BUILD)

asan:
	@$(MAKE) --no-print-directory check-plain BUILD=$(BUILD)-asan \
		SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"

# What the station package installs (debian/station.install), and the
# simulator apart: it does not belong on a production line PC's path.
MANDIR   := $(PREFIX)/share/man
UDEVDIR  := $(PREFIX)/lib/udev/rules.d
UNITDIR  := $(PREFIX)/lib/systemd/system
SYSUSERSDIR := $(PREFIX)/lib/sysusers.d
TMPFILESDIR := $(PREFIX)/lib/tmpfiles.d
COMPLDIR := $(PREFIX)/share/bash-completion/completions
EXDIR    := $(PREFIX)/share/doc/station/examples
P11_PROXY := $(shell pkg-config --variable=proxy_module p11-kit-1 2>/dev/null)
MAN_PAGES := $(BUILD)/man/station.1 $(BUILD)/man/station.conf.5 \
	$(BUILD)/man/station-profile.5 $(BUILD)/man/station-devsim.1

man: $(MAN_PAGES)

$(MAN_PAGES) &: $(STATION) scripts/gen-man.sh $(wildcard man/*.in)
	@sh scripts/gen-man.sh $(STATION) $(VERSION) $(BUILD)/man

install: all man
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UDEVDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
		$(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(COMPLDIR) $(DESTDIR)$(EXDIR) \
		$(DESTDIR)$(SYSCONFDIR)/station
	install -m 0755 $(STATION) $(DESTDIR)$(PREFIX)/bin/
	for l in $(LANGS); do \
		install -D -m 0644 $(BUILD)/locale/$$l/LC_MESSAGES/station.mo \
			$(DESTDIR)$(PREFIX)/share/locale/$$l/LC_MESSAGES/station.mo; \
	done
	install -m 0644 $(BUILD)/man/station.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(BUILD)/man/station.conf.5 $(BUILD)/man/station-profile.5 \
		$(DESTDIR)$(MANDIR)/man5/
	install -m 0644 udev/70-station.rules $(DESTDIR)$(UDEVDIR)/
	sed 's|/usr/bin/station|$(PREFIX)/bin/station|; s|/etc/station|$(SYSCONFDIR)/station|g' \
		systemd/station-sync.service > $(DESTDIR)$(UNITDIR)/station-sync.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/station-sync.service
	install -m 0644 systemd/station.sysusers $(DESTDIR)$(SYSUSERSDIR)/station.conf
	install -m 0644 systemd/station.tmpfiles $(DESTDIR)$(TMPFILESDIR)/station.conf
	install -m 0644 scripts/station.bash-completion $(DESTDIR)$(COMPLDIR)/station
	install -m 0644 examples/station.conf profiles/demo.profile \
		examples/70-station-site.rules $(DESTDIR)$(EXDIR)/
	[ -e $(DESTDIR)$(SYSCONFDIR)/station/station.conf ] || { \
		sed 's|@P11_KIT_PROXY@|$(P11_PROXY)|' etc/station.conf \
			> $(DESTDIR)$(SYSCONFDIR)/station/station.conf && \
		chmod 0644 $(DESTDIR)$(SYSCONFDIR)/station/station.conf; }

install-sim: all man
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(MANDIR)/man1
	install -m 0755 $(DEVSIM) $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 $(BUILD)/man/station-devsim.1 $(DESTDIR)$(MANDIR)/man1/

# The configuration (it may hold local changes) and the records under
# /var/lib/station are never removed.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/station $(DESTDIR)$(MANDIR)/man1/station.1 \
		$(DESTDIR)$(MANDIR)/man5/station.conf.5 \
		$(DESTDIR)$(MANDIR)/man5/station-profile.5 \
		$(DESTDIR)$(UDEVDIR)/70-station.rules \
		$(DESTDIR)$(UNITDIR)/station-sync.service \
		$(DESTDIR)$(SYSUSERSDIR)/station.conf $(DESTDIR)$(TMPFILESDIR)/station.conf \
		$(DESTDIR)$(COMPLDIR)/station
	rm -rf $(DESTDIR)$(EXDIR)
	-rmdir $(DESTDIR)$(PREFIX)/share/doc/station 2>/dev/null

uninstall-sim:
	rm -f $(DESTDIR)$(PREFIX)/bin/station-devsim \
		$(DESTDIR)$(MANDIR)/man1/station-devsim.1

# The Debian packages (debian/), built from this tree into ../
package:
	dpkg-buildpackage -us -uc -b

# CI (root, a fresh Debian 12): build the packages, lintian, install them,
# the demo against the installed files only, purge (scripts/package-test.sh).
check-package:
	@bash scripts/package-test.sh

# libFuzzer on the frame and reply decoders for FUZZ_TIME seconds; crashes
# land in $(BUILD)/fuzz/crashes/ (keep each, once fixed, in
# tests/fuzz/regress/: test_fuzz_regress replays them).
FUZZ_CC   ?= clang
FUZZ_TIME ?= 60
FUZZ_SRCS := tests/fuzz/fuzz_main.c tests/fuzz/fuzz_proto.c base/base.c \
	device-drivers/proto/codec.c device-drivers/proto/client.c
FUZZER    := $(BUILD)/fuzz/fuzz_proto

$(FUZZER): $(FUZZ_SRCS)
	@mkdir -p $(@D)
	$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -I. -Ibase $(WARN) -g -O1 \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		-o $@ $(FUZZ_SRCS) $(shell pkg-config --libs zlib libcrypto)

fuzz: $(FUZZER)
	@mkdir -p $(BUILD)/fuzz/corpus $(BUILD)/fuzz/crashes
	$(FUZZER) -max_total_time=$(FUZZ_TIME) -max_len=12000 -print_final_stats=1 \
		-artifact_prefix=$(BUILD)/fuzz/crashes/ $(BUILD)/fuzz/corpus tests/fuzz/seeds

clean:
	rm -rf $(BUILD) $(BUILD)-asan

-include $(shell find $(BUILD) $(BUILD)-asan -name '*.d' 2>/dev/null)

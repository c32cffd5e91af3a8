# station — build, test, demo.  Out-of-tree: everything goes under $(BUILD).
#   make            build station and station-devsim
#   make demo       provision a few simulated units from a fresh SoftHSM CA
#   make check      the whole test suite, plain and under ASan+UBSan
#   make deps       install missing Debian packages (needs root)
#   make install    PREFIX=/usr/local DESTDIR=

BUILD  ?= build
PREFIX ?= /usr/local
CC     ?= cc

PKGS      := openssl sqlite3 zlib jansson libconfig ncursesw
# PKCS#11 modules are dlopen()ed: only the header comes from p11-kit.
HDR_PKGS  := p11-kit-1
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
	device-drivers/serial/*.c device-drivers/stprog/*.c) \
	$(filter-out station/main.c,$(wildcard station/*.c))
SIM_SRCS := $(wildcard device-drivers/sim/*.c)
SIM_LIB_SRCS := $(wildcard base/*.c device-drivers/proto/*.c)
FIX_SRCS := $(wildcard tests/fixtures/*.c)
TEST_SRCS := $(wildcard tests/test_*.c)

OBJ := $(BUILD)/obj
LIB_OBJS := $(LIB_SRCS:%.c=$(OBJ)/%.o)
SIM_OBJS := $(SIM_SRCS:%.c=$(OBJ)/%.o) $(SIM_LIB_SRCS:%.c=$(OBJ)/%.o)
FIX_OBJS := $(FIX_SRCS:%.c=$(OBJ)/%.o)
TESTS    := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)

STATION := $(BUILD)/station
DEVSIM  := $(BUILD)/station-devsim

.SECONDARY:

.PHONY: all deps demo demo-run check check-run check-plain asan install clean tests

all: $(STATION) $(DEVSIM)

$(BUILD)/libstation.a: $(LIB_OBJS)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

$(STATION): $(OBJ)/station/main.o $(BUILD)/libstation.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(DEVSIM): $(SIM_OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(OBJ)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: $(OBJ)/tests/%.o $(FIX_OBJS) $(BUILD)/libstation.a
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

# The whole suite, plain build then the ASan+UBSan build.
check: deps
	@$(MAKE) --no-print-directory check-run

check-run:
	@$(MAKE) --no-print-directory check-plain
	@$(MAKE) --no-print-directory check-plain BUILD=$(BUILD)-asan \
		SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"

check-plain: tests
	@sh scripts/run-tests.sh $(BUILD)

asan:
	@$(MAKE) --no-print-directory check-plain BUILD=$(BUILD)-asan \
		SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/udev/rules.d
	install -m 0755 $(STATION) $(DEVSIM) $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 udev/70-station.rules $(DESTDIR)$(PREFIX)/lib/udev/rules.d/

clean:
	rm -rf $(BUILD) $(BUILD)-asan

-include $(shell find $(BUILD) $(BUILD)-asan -name '*.d' 2>/dev/null)

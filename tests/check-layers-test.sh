#!/bin/sh
# check-layers-test.sh — scripts/check-layers.sh fails on a planted
# violation and on a known one that went away, and passes on the tree.
# Each case runs the script on a fresh copy of the sources in a temp dir.
set -u
SRC=$(pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0

# Copy the checked folders (sources only) to $TMP/tree.
fresh() {
	rm -rf "$TMP/tree"
	mkdir -p "$TMP/tree"
	for d in hsm records device-drivers devsim ui cli station base tools; do
		[ -d "$SRC/$d" ] && cp -R "$SRC/$d" "$TMP/tree/"
	done
	return 0
}

# expect NAME RC PATTERN: the script exits RC and its output matches PATTERN.
expect() {
	out=$(sh "${SCRIPT:-$SRC/scripts/check-layers.sh}" "$TMP/tree" 2>&1)
	rc=$?
	if [ "$rc" -eq "$2" ] && echo "$out" | grep -q -- "$3"; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		echo "FAIL: $1: exit $rc (want $2), output:" >&2
		echo "$out" | sed 's/^/  /' >&2
	fi
}

# Append an include line to file.
plant() {
	printf '%s\n' "$2" >> "$TMP/tree/$1"
}

fresh
expect "the tree as it is" 0 "no new violations"

fresh; plant hsm/hsm.c '#include "records/records.h"'
expect "hsm/ includes records/" 1 "hsm/hsm.c records/records.h: hsm/ includes only"

fresh; plant records/records.c '#include "station/station.h"'
expect "records/ includes the engine" 1 "records/records.c station/station.h"

fresh; plant device-drivers/registry.c '#include <hsm/hsm.h>'
expect "device-drivers/ includes hsm/ (angle brackets)" 1 \
	"device-drivers/registry.c hsm/hsm.h"

fresh; plant records/records.c '#include "../ui/ui.h"'
expect "records/ includes ui/ through .." 1 "records/records.c ui/ui.h"

fresh; plant devsim/core.c '#include "station/station.h"'
expect "devsim/ includes the engine" 1 "devsim/core.c station/station.h"

fresh; plant devsim/core.c '#include "device-drivers/drv_api.h"'
expect "devsim/ includes the driver API" 1 "devsim/core.c device-drivers/drv_api.h"

fresh; plant station/unit.c '#include "devsim/sim.h"'
expect "station/ includes devsim/" 1 "station/unit.c devsim/sim.h"

fresh; plant ui/draw.c '#include "device-drivers/drv.h"'
expect "ui/ includes device-drivers/" 1 "ui/draw.c device-drivers/drv.h"

fresh; plant ui/ui.c '#include "cli/cli.h"'
expect "ui/ includes the CLI" 1 "ui/ui.c cli/cli.h"

fresh; mkdir -p "$TMP/tree/cli"
printf '#include "records/records.h"\n' > "$TMP/tree/cli/cmd-x.c"
expect "cli/ includes records/" 1 "cli/cmd-x.c records/records.h"

fresh; plant cli/cmd-config.c '#include "station/x509.h"'
expect "cli/ includes an engine-internal header" 1 \
	"cli/cmd-config.c station/x509.h: cli/ includes only"

# A copy of the script that lists a violation the tree does not have.
fresh; sed 's|^KNOWN="$|KNOWN="\nui/draw.c station/cmd_sync.h|' \
	"$SRC/scripts/check-layers.sh" > "$TMP/check-layers.sh"
SCRIPT="$TMP/check-layers.sh" expect "a known violation is gone but still listed" 1 \
	"ui/draw.c station/cmd_sync.h' is no longer included"

echo "check-layers: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

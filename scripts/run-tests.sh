#!/bin/sh
# Run every Criterion test binary in $1/tests and print one closing summary.
# Each binary builds its own fixtures (SoftHSM token in a temp dir, simulator
# on a pty) and finds station/station-devsim through STATION_BUILD.
set -u
BUILD=${1:-build}
STATION_BUILD=$(cd "$BUILD" && pwd)
export STATION_BUILD
# Third-party leaks only (see the file); ignored by non-sanitizer builds.
LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export LSAN_OPTIONS
pass=0 fail=0 bad=""
for t in "$BUILD"/tests/test_*; do
	case "$t" in *.o|*.d) continue ;; esac
	[ -x "$t" ] || continue
	out=$(mktemp)
	"$t" --jobs 2 >"$out" 2>&1
	rc=$?
	cat "$out"
	line=$(grep 'Synthesis:' "$out" | tail -n 1)
	p=$(echo "$line" | sed -n 's/.*Passing: \([0-9]*\).*/\1/p')
	f=$(echo "$line" | sed -n 's/.*Failing: \([0-9]*\).*/\1/p')
	c=$(echo "$line" | sed -n 's/.*Crashing: \([0-9]*\).*/\1/p')
	pass=$((pass + ${p:-0}))
	fail=$((fail + ${f:-0} + ${c:-0}))
	if [ $rc -ne 0 ] || [ -z "$line" ]; then
		bad="$bad $(basename "$t")"
		# A binary that failed without a failing test (a sanitizer report
		# at exit, a crash before the summary) still counts as a failure.
		[ "${f:-0}" = 0 ] && [ "${c:-0}" = 0 ] && fail=$((fail + 1))
	fi
	rm -f "$out"
done
echo "== $BUILD:${bad:+ failed in$bad}"
echo "$pass passed, $fail failed"
[ -z "$bad" ] && [ "$pass" -gt 0 ]

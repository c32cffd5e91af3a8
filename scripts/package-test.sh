#!/bin/bash
# make check-package (CI, root, a fresh Debian 12): the Debian packages as
# plant IT gets them.  Build them (from a copy of this tree), lintian
# (errors fail), install with apt-get, then check what was installed and
# run a demo against the installed files only (/usr/bin/station,
# /etc/station, /var/lib/station), then purge and check that nothing is
# left but the records.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "check-package: SKIPPED (NOT a pass): installs packages, needs root" \
	     "(CI runs it as root)" >&2
	exit 0
fi
fail() { echo "check-package: FAIL: $*" >&2; exit 1; }
say() { echo "== check-package: $*"; }
# The records are never deleted, by a package operation or by this test:
# a machine that already holds some is not the fresh one this test needs.
[ ! -e /var/lib/station/records.db ] ||
	fail "/var/lib/station/records.db exists: run on a fresh machine (CI);" \
	     "this test never deletes records"

# What this test makes in /var/lib/station is its own when the folder did
# not exist before it: removed at its end (pass or fail), so that the next
# run on the same machine starts as fresh.  A folder that was there before
# is never touched.
own_lib=0
[ -e /var/lib/station ] || own_lib=1
tmp=$(mktemp -d /tmp/st-pkg-XXXXXX)
cleanup() {
	rm -rf "$tmp"
	[ $own_lib = 0 ] || rm -rf /var/lib/station
}
trap cleanup EXIT
# a copy: the build must not see (or wipe) a developer's build/ dirs
mkdir "$tmp/src"
tar --exclude='./build*' --exclude=./debian/build --exclude=./state -cf - . |
	tar -xf - -C "$tmp/src"

say "dpkg-buildpackage"
(cd "$tmp/src" && dpkg-buildpackage -us -uc -b >"$tmp/build.log" 2>&1) ||
	{ tail -40 "$tmp/build.log" >&2; fail "dpkg-buildpackage"; }
version=$(cd "$tmp/src" && dpkg-parsechangelog -SVersion)
ls "$tmp"/station_"$version"_*.deb "$tmp"/station-sim_"$version"_*.deb >/dev/null

say "lintian"
lintian --display-info --tag-display-limit 0 "$tmp"/station_"$version"_*.changes | tee "$tmp/lintian" || true
echo "lintian: $(grep -c '^E: ' "$tmp/lintian") errors, $(grep -c '^W: ' "$tmp/lintian") warnings, $(grep -c '^[IPX]: ' "$tmp/lintian") other tags"
! grep -q '^E: ' "$tmp/lintian" || fail "lintian reports errors"

say "apt-get install"
(cd "$tmp" && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	./station_"$version"_*.deb ./station-sim_"$version"_*.deb >/dev/null)
mapfile -t files < <(dpkg -L station station-sim | while read -r f; do
	[ -f "$f" ] && echo "$f"; done)

say "what was installed"
[ "$(command -v station)" = /usr/bin/station ] || fail "station is not /usr/bin/station"
v=$(/usr/bin/station --version)
[ "$v" = "station $version" ] || fail "'station --version' says '$v', the package is $version"
getent group station >/dev/null || fail "no group station"
getent passwd station >/dev/null || fail "no user station"
systemd-analyze verify /lib/systemd/system/station-sync.service 2>"$tmp/verify" ||
	{ cat "$tmp/verify" >&2; fail "systemd-analyze verify"; }
! grep -v "Failed to connect\|not booted" "$tmp/verify" | grep . ||
	fail "systemd-analyze verify warns (above)"
systemd-analyze security --offline=yes /lib/systemd/system/station-sync.service \
	2>/dev/null | tail -1 || true
for p in station station.conf station-profile station-devsim; do
	man -w "$p" >/dev/null || fail "man -w $p finds nothing"
done
man -w 5 station.conf | grep -q 'man5/station.conf.5' || fail "station.conf(5)"
[ "$(stat -c '%U:%G %a' /var/lib/station)" = "station:station 2770" ] ||
	fail "/var/lib/station is $(stat -c '%U:%G %a' /var/lib/station)"
[ "$(stat -c '%U:%G %a' /var/log/station)" = "station:station 2770" ] ||
	fail "/var/log/station is $(stat -c '%U:%G %a' /var/log/station)"
dpkg-query -W -f='${Conffiles}\n' station | grep -q /etc/station/station.conf ||
	fail "/etc/station/station.conf is not a conffile"
/usr/bin/station config check --config /etc/station/station.conf ||
	fail "the shipped station.conf does not pass config check"
[ -f /usr/lib/udev/rules.d/70-station.rules ] || fail "udev rules"
! grep -q 'idVendor}=="0403"' /usr/lib/udev/rules.d/70-station.rules ||
	fail "the packaged rules claim every FTDI adapter"
# shellcheck disable=SC1091
(. /usr/share/bash-completion/bash_completion 2>/dev/null || true
 . /usr/share/bash-completion/completions/station
 COMP_WORDS=(station prov); COMP_CWORD=1; _station
 [[ " ${COMPREPLY[*]} " == *" provision "* ]] || exit 1
 COMP_WORDS=(station provision --bu); COMP_CWORD=2; _station
 [[ " ${COMPREPLY[*]} " == *" --burn-fuses "* ]] || exit 1) ||
	fail "bash completion: commands or options"

say "demo against the installed files"
bash scripts/installed-demo.sh "$tmp/demo" || fail "the demo against the installed files"

say "purge"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq station station-sim >/dev/null
left=0
for f in "${files[@]}"; do
	[ -e "$f" ] && { echo "left behind: $f" >&2; left=1; }
done
for d in /etc/station /var/log/station /usr/share/doc/station; do
	[ -e "$d" ] && { echo "left behind: $d" >&2; find "$d" >&2; left=1; }
done
[ $left = 0 ] || fail "purge left files behind"
[ -s /var/lib/station/records.db ] || fail "purge deleted the records"
sqlite3 /var/lib/station/records.db 'SELECT count(*) FROM units' | grep -qv '^0$' ||
	fail "the records lost their units"
say "OK: built, lintian clean of errors, installed, demo run, purged (records kept)"
[ $own_lib = 0 ] || say "the test's own demo records in /var/lib/station are removed now (it did not exist before the test)"

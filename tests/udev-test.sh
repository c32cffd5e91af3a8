#!/bin/sh
# The udev rules do what they say, checked by the real udev: `udevadm
# test` on umockdev-recorded devices (tests/fixtures/udev/) with only our
# rules in /etc/udev/rules.d (a private mount namespace: nothing on the
# machine changes).
#  - the USB programmer (1209:5354) is claimed: mode 0660, uaccess, its link;
#  - an FT232R the site named (serial PROG0001 in udev.adapters, through
#    `station config udev`) is claimed, with its /dev/station/tty-* link;
#  - an unrelated FT232R (a console cable, serial A9CONSOLE) and its USB
#    device are left alone.
#   tests/udev-test.sh STATION [RULES]   (RULES: default udev/70-station.rules)
set -eu
STATION=$1
RULES=${2:-udev/70-station.rules}
FIX=tests/fixtures/udev

if [ "$(id -u)" != 0 ]; then
	echo "udev-test: SKIPPED (not a pass): needs root for a private mount" \
	     "namespace (unshare -m); CI runs it as root" >&2
	exit 0
fi
for t in udevadm umockdev-run unshare; do
	command -v $t >/dev/null || { echo "udev-test: FAIL: $t missing (make deps)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/rules"
cp "$RULES" "$tmp/rules/70-station.rules"
printf 'station: { id = "t"; };\nhsm: { token = "t"; };\nudev: { adapters = [ "serial:PROG0001" ]; };\n' \
	> "$tmp/station.conf"
"$STATION" config udev --config "$tmp/station.conf" > "$tmp/rules/70-station-site.rules"

fails=0
# udevadm test of SYSPATH in FIXTURE, output to $tmp/out
utest() {
	# udevadm test writes links and its database: into tmpfs here, so
	# the machine's /dev and /run stay as they were
	unshare -m sh -c 'mount --bind "$1" /etc/udev/rules.d &&
		mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /dev &&
		for n in null:3 zero:5 random:8 urandom:9; do
			mknod -m 666 /dev/${n%:*} c 1 ${n#*:}; done &&
		mkdir /dev/pts && ln -s pts/ptmx /dev/ptmx &&
		mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts &&
		umockdev-run --device "$2" -- udevadm test --action=add "$3"' \
		sh "$tmp/rules" "$FIX/$1" "$2" > "$tmp/out" 2>&1 || {
		echo "udev-test: FAIL: udevadm test $2 did not run:" >&2
		cat "$tmp/out" >&2; exit 1; }
}
want() { # what, regex
	grep -Eq "$2" "$tmp/out" || { echo "udev-test: FAIL: $1" >&2; fails=$((fails + 1)); }
}
refuse() {
	! grep -Eq "$2" "$tmp/out" || { echo "udev-test: FAIL: $1:" >&2;
		grep -E "$2" "$tmp/out" >&2; fails=$((fails + 1)); }
}
grp=
getent group station >/dev/null && grp=$(getent group station | cut -d: -f3)

usbp=/sys/devices/pci0000:00/0000:00:14.0/usb1/1-4
utest usb-programmer.umockdev $usbp
want "USB programmer: mode 0660" "70-station.rules:[0-9]+ MODE 0660"
want "USB programmer: uaccess" "^TAGS=.*:uaccess:"
want "USB programmer: /dev/station link" "LINK 'station/usb-1-4'"
[ -z "$grp" ] || want "USB programmer: group station ($grp)" "70-station.rules:[0-9]+ GROUP $grp\$"

tty0=/sys/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0
utest ftdi-programmer.umockdev $tty0
want "named FT232R: mode 0660" "70-station-site.rules:[0-9]+ MODE 0660"
want "named FT232R: uaccess" "^TAGS=.*:uaccess:"
want "named FT232R: /dev/station link" "LINK 'station/tty-pci-0000_00_14_0-usb-0_2_1_0'"
[ -z "$grp" ] || want "named FT232R: group station ($grp)" "70-station-site.rules:[0-9]+ GROUP $grp\$"

tty1=/sys/devices/pci0000:00/0000:00:14.0/usb1/1-3/1-3:1.0/ttyUSB1/tty/ttyUSB1
utest ftdi-console.umockdev $tty1
refuse "unrelated FT232R tty claimed by our rules" "^ttyUSB1: .*70-station"
refuse "unrelated FT232R tty tagged uaccess" "^TAGS=.*:uaccess:"
utest ftdi-console.umockdev /sys/devices/pci0000:00/0000:00:14.0/usb1/1-3
refuse "unrelated FT232R USB device claimed by our rules" "^1-3: .*70-station"

if [ $fails -ne 0 ]; then
	echo "udev-test: $fails check(s) failed" >&2
	exit 1
fi
echo "udev-test: programmer and named adapter claimed, unrelated FTDI adapter left alone (udevadm test${grp:+, group station $grp})"

#!/bin/sh
# Install the Debian packages station needs to build, test and demo, when
# missing.  Quiet when everything is there.  Needs root (or sudo) to install.
set -eu
PKGS="build-essential pkg-config libssl-dev libsqlite3-dev libp11-kit-dev p11-kit-modules zlib1g-dev
libjansson-dev libconfig-dev libcrypt-dev libcriterion-dev softhsm2 opensc sqlite3 openssl
libusb-1.0-0-dev libncurses-dev tmux umockdev libumockdev-dev clang e2fsprogs
libtss2-dev swtpm swtpm-tools tpm2-tools time libpq-dev postgresql
jq socat libengine-pkcs11-openssl strace gettext
libsystemd-dev debhelper lintian fakeroot man-db bash-completion
opencryptoki libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-abrmd libtss2-tcti-tabrmd0 dbus-daemon
libnss3 libnss3-tools
libcurl4-openssl-dev libqrencode-dev libpng-dev libcairo2-dev zbar-tools poppler-utils python3-jsonschema
cups cups-client
libmosquitto-dev mosquitto mosquitto-clients
python3-serial python3-bitstring python3-ecdsa python3-cryptography python3-yaml python3-intelhex"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
SUDO=""
if [ -n "$missing" ]; then
	echo "deps: installing:$missing" >&2
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null 2>&1 || {
			echo "deps: missing packages:$missing; run 'make deps' as root" >&2
			exit 1
		}
		SUDO=sudo
	fi
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	# shellcheck disable=SC2086
	$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The ESP32 referee (Espressif's esptool, espefuse, espsecure), which
# Debian 12 does not package: see scripts/esp-referee.sh.
sh "$(dirname "$0")/esp-referee.sh" install

#!/bin/sh
# esp-referee.sh install|path|run TOOL ARGS... — Espressif's esptool,
# espefuse and espsecure (4.7.0), the outside referee of the esp32 target.
#
# Debian 12 has no esptool; Debian 13 (trixie) packages 4.7.0 as pure
# Python that runs on Debian 12's python3.  `install` downloads the two
# trixie packages through a private apt source list (the system's apt
# configuration is not touched) and unpacks them with dpkg -x under
# $ESP_REFEREE_DIR (default /opt/station-referee/esptool-4.7.0); their
# Python dependencies come from Debian 12 (scripts/deps.sh).  esptool is
# GPL: the project runs it in tests, it never copies it.
#
# `path` prints the PYTHONPATH to use; `run esptool|espefuse|espsecure ARGS`
# runs one tool with Debian's python3 (never a pyenv/venv python).
set -eu
DIR=${ESP_REFEREE_DIR:-/opt/station-referee/esptool-4.7.0}
PYPATH="$DIR/usr/lib/python3/dist-packages"
PY=/usr/bin/python3

installed() {
	[ -f "$PYPATH/esptool/__init__.py" ] && [ -f "$PYPATH/reedsolo.py" ]
}

case "${1:-}" in
install)
	installed && exit 0
	[ "$(id -u)" = 0 ] || { echo "esp-referee: run 'make deps' as root to install esptool" >&2; exit 1; }
	echo "esp-referee: installing esptool 4.7.0 (Debian trixie) into $DIR" >&2
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/dl"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
		>"$tmp/sources.list"
	set -- -o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null \
		-o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" \
		-o APT::Sandbox::User=root
	apt-get "$@" update -qq
	(cd "$tmp/dl" && apt-get "$@" download esptool python3-reedsolo >/dev/null)
	mkdir -p "$DIR"
	for f in "$tmp"/dl/*.deb; do dpkg -x "$f" "$DIR"; done
	installed || { echo "esp-referee: unpacked, but esptool is not under $PYPATH" >&2; exit 1; }
	;;
path)
	installed || { echo "esp-referee: not installed; run 'make deps'" >&2; exit 1; }
	echo "$PYPATH"
	;;
run)
	shift
	tool=${1:?esp-referee run esptool|espefuse|espsecure ARGS}
	shift
	installed || { echo "esp-referee: not installed; run 'make deps'" >&2; exit 1; }
	PYTHONPATH="$PYPATH" exec "$PY" -m "$tool" "$@"
	;;
*)
	echo "usage: esp-referee.sh install|path|run TOOL ARGS..." >&2
	exit 2
	;;
esac

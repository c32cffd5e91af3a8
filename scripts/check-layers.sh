#!/bin/sh
# check-layers.sh [ROOT] — fail when an #include crosses a layer the wrong way.
#
# Dependencies point one way (issue 18): the lower modules hsm/, records/
# and device-drivers/ include only their own folder and base/ (not each
# other, not the engine station/, not ui/ or cli/); the simulator devsim/
# is a separate program that shares only the wire protocol with the station
# (device-drivers/proto/ and device-drivers/drv.h); ui/ and cli/ never
# include hsm/, records/ or device-drivers/; cli/ includes only its own
# folder, station/station.h (the engine's public face), ui/ui.h (to start
# the UI) and base/; ui/ does not include the CLI (cli/, station/cli.h,
# station/cmd_*.h); nothing but devsim/ (and the tests) includes devsim/.  station/ is the engine and may include the
# lower modules.  tests/ are not checked.
#
# Each include is resolved as the compiler does (-I. -Ibase): "x.h" in the
# including file's folder, then at the root, then in base/; <x.h> at the
# root, then in base/.  System headers resolve to nothing and are ignored.
#
# KNOWN lists today's violations, one "file include" a line.  It may only
# shrink: the check fails on a violation not listed, and on a listed one
# that is gone (then delete its line here).
set -u
ROOT=${1:-.}

# None are left (issue 18): cli/cmd-records.c was the last; its commands
# ask the station handle through station/records_cmds.c.
KNOWN="
"

cd "$ROOT" || exit 2
files=$(find hsm records device-drivers devsim ui cli station base tools \
	\( -name '*.c' -o -name '*.h' \) -type f 2>/dev/null | sort)
[ -n "$files" ] || { echo "check-layers: no sources under $ROOT" >&2; exit 2; }

# One line per violation: "file include	why".
found=$(awk '
function exists(p,    line, r) {
	r = (getline line < p)
	if (r >= 0) { close(p); return 1 }
	return 0
}
# Collapse "a/./b" and "a/x/../b" so every path is relative to the root.
function norm(p,    n, i, k, parts, out) {
	n = split(p, parts, "/"); k = 0
	for (i = 1; i <= n; i++) {
		if (parts[i] == "." || parts[i] == "") continue
		if (parts[i] == ".." && k > 0) { k--; continue }
		out[++k] = parts[i]
	}
	p = ""
	for (i = 1; i <= k; i++) p = p (i > 1 ? "/" : "") out[i]
	return p
}
function resolve(file, name, quoted,    dir) {
	dir = file; sub(/\/[^\/]*$/, "", dir)
	if (quoted && exists(dir "/" name)) return norm(dir "/" name)
	if (exists(name)) return norm(name)
	if (exists("base/" name)) return norm("base/" name)
	return ""
}
function top(p) { return index(p, "/") ? substr(p, 1, index(p, "/") - 1) : "" }
function why(file, inc,    ft, it) {
	ft = top(file); it = top(inc)
	if (ft == "hsm" || ft == "records" || ft == "device-drivers") {
		if (it != ft && it != "base")
			return ft "/ includes only its own folder and base/"
		return ""
	}
	if (ft == "devsim") {
		if (it == "devsim" || it == "base" || inc ~ /^device-drivers\/proto\// ||
		    inc == "device-drivers/drv.h")
			return ""
		return "devsim/ shares only device-drivers/proto/ and drv.h with the station"
	}
	if (it == "devsim")
		return "devsim/ is a separate program: only its own files and the tests include it"
	if ((ft == "ui" || ft == "cli") &&
	    (it == "hsm" || it == "records" || it == "device-drivers"))
		return ft "/ reaches the lower modules through station/station.h only"
	if (ft == "cli" && it != "cli" && it != "base" &&
	    inc != "station/station.h" && inc != "ui/ui.h")
		return "cli/ includes only its own folder, station/station.h, ui/ui.h and base/"
	if (ft == "ui" && (it == "cli" || inc ~ /^station\/(cli|cmd_[^\/]*)\.h$/))
		return "ui/ does not depend on the CLI"
	return ""
}
FNR == 1 { file = FILENAME; sub(/^\.\//, "", file) }
/^[ \t]*#[ \t]*include[ \t]*["<]/ {
	line = $0
	sub(/^[ \t]*#[ \t]*include[ \t]*/, "", line)
	quoted = substr(line, 1, 1) == "\""
	name = substr(line, 2)
	sub(/[">].*$/, "", name)
	inc = resolve(file, name, quoted)
	if (inc == "") next
	w = why(file, inc)
	if (w != "") printf "%s %s\t%s\n", file, inc, w
}
' $files | sort -u)

status=0
# New violations (found, not listed) fail; listed ones are reported as such.
nl='
'
IFS_SAVE=$IFS
IFS=$nl
for row in $found; do
	pair=${row%%	*}
	if echo "$KNOWN" | grep -qxF "$pair"; then
		echo "check-layers: known violation (TODO issue 18): $pair" >&2
	else
		echo "check-layers: $pair: ${row#*	}" >&2
		status=1
	fi
done
# Listed violations that are gone fail too: the list shrinks with the code.
for pair in $KNOWN; do
	echo "$found" | cut -f1 | grep -qxF "$pair" || {
		echo "check-layers: '$pair' is no longer included: delete it from" \
		     "KNOWN in scripts/check-layers.sh" >&2
		status=1
	}
done
IFS=$IFS_SAVE
[ $status -eq 0 ] && echo "include layers: no new violations" \
	"($(echo "$KNOWN" | grep -c .) known, listed in scripts/check-layers.sh)"
exit $status

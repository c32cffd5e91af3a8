#!/bin/sh
# Write the man pages into OUTDIR from man/*.in: the version, station(1)'s
# COMMANDS from `station help` (each command's own help, as --help prints
# it), and the SETTINGS of station.conf(5) and station-profile(5) from the
# schema the station checks with (`station config schema --format man-*`).
#   scripts/gen-man.sh STATION VERSION OUTDIR
set -eu
STATION=$1 VERSION=$2 OUT=$3
mkdir -p "$OUT"

# roff-safe preformatted text: backslashes, leading dots and quotes.
esc() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/" -e 's/-/\\-/g'; }

fill() { # template placeholder file -> stdout
	sed -e "s/@VERSION@/$VERSION/" "$1" | awk -v ph="$2" -v f="$3" '
		$0 == ph { while ((getline l < f) > 0) print l; next } { print }'
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The commands: the first word of each usage line `station help` lists.
"$STATION" help | awk '/^commands:/ { on = 1; next }
	on && /^  [a-z]/ { print $1 } /^The HSM PIN/ { on = 0 }' |
	grep -vx help | awk '!seen[$0]++' > "$tmp/cmds"
[ -s "$tmp/cmds" ] || { echo "gen-man: no commands in 'station help'" >&2; exit 1; }
: > "$tmp/commands"
while read -r c; do
	{
		echo ".SS $c"
		echo ".nf"
		# the global options are in their own section
		"$STATION" help "$c" | sed '/^global options (any command)/,$d' | esc
		echo ".fi"
	} >> "$tmp/commands"
done < "$tmp/cmds"
fill man/station.1.in @COMMANDS@ "$tmp/commands" > "$OUT/station.1"

"$STATION" config schema --format man-conf > "$tmp/conf"
fill man/station.conf.5.in @SETTINGS@ "$tmp/conf" > "$OUT/station.conf.5"
"$STATION" config schema --format man-profile > "$tmp/profile"
fill man/station-profile.5.in @SETTINGS@ "$tmp/profile" > "$OUT/station-profile.5"
sed -e "s/@VERSION@/$VERSION/" man/station-devsim.1.in > "$OUT/station-devsim.1"

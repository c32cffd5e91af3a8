#!/bin/bash
# make bench: where the time goes (issue 8).  Writes docs/benchmarks.md.
# Benchmark, not a test: nothing here asserts a time.
#
#  1. Station overhead: UNITS simulated units over SLOTS (1 8 16 32 64;
#     at least MIN_PER_SLOT units per slot), all programmers one
#     `station-devsim --programmers N --save-at-release` process on ptys,
#     no added latency, fuses armed, full demo
#     fuse plan, signed audit records: units/s, where each unit's time goes
#     (the --json "us" split: records, HSM, certificate building, device
#     I/O), station CPU per unit, peak RSS, record writes per commit (group
#     commit).  Median of RUNS runs.  The same with the station built from
#     BEFORE_REV (BEFORE_WHAT says what it lacks) for before/after, at
#     BEFORE_SLOTS (default "1 8"), and in the line model at
#     BEFORE_LINE_SLOTS (default none), each row right after its "now" row.
#  2. The HSM limit, same token, same run: raw ECDSA P-256 signatures/s and
#     P-256 session key generations/s, turned into the most units/s the HSM
#     work per unit (1 certificate signature + one audit signature per
#     recorded event) would allow.
#  3. Line model: the simulators with realistic timings (BAUD, FUSE_WORD_US,
#     KEYGEN_MS): units per hour over SLOTS, LINE_UNITS per slot, the same
#     per-part times, CPU per unit and peak RSS, and the share of a unit's
#     time the station adds (records + HSM + certificate work); the goals
#     of issue 22 marked met or missed.
#  4. Baseline: scripts/bench-baseline.sh, the same per-unit work with
#     standard tools, BASE_UNITS units, timed the same way.
#  5. Memory: GROWTH_UNITS units over 8 slots with the station's RSS sampled
#     every second (growth = last sample minus the sample at 10 %), and,
#     when the sanitizer build exists ($BUILD-asan, made by make check),
#     LSAN_UNITS units under LeakSanitizer.  The simulators run with
#     --forget-done so their saves stay small however long the run.
#     MEMORY_ONLY=1 runs only the growth run, prints its numbers and the
#     store's `records verify` instead of writing docs/benchmarks.md.
#  6. Firmware (docs/firmware.md): the line model, 1 slot, LINE_UNITS units,
#     with the demo profile and with the same profile plus a firmware group
#     (an FW_SIZE-byte image signed by a secure-boot key in the token, its
#     SBOM): the added time per unit of writing the image and attesting.
#     FIRMWARE_ONLY=1 runs only this and prints the numbers.
set -euo pipefail
BUILD=${1:-build}
UNITS=${UNITS:-96}
RUNS=${RUNS:-3}
SLOTS=${SLOTS:-"1 8 16 32 64"}
MIN_PER_SLOT=${MIN_PER_SLOT:-2}
BEFORE_REV=${BEFORE_REV-ed4c84a}
BEFORE_WHAT=${BEFORE_WHAT-before issue 22}
BEFORE_SLOTS=${BEFORE_SLOTS:-"1 8"}
BEFORE_LINE_SLOTS=${BEFORE_LINE_SLOTS:-}
BAUD=${BAUD:-115200}
FUSE_WORD_US=${FUSE_WORD_US:-1000}
KEYGEN_MS=${KEYGEN_MS:-250}
LINE_UNITS=${LINE_UNITS:-4}
BASE_UNITS=${BASE_UNITS:-10}
GROWTH_UNITS=${GROWTH_UNITS:-1000}
LSAN_UNITS=${LSAN_UNITS:-200}
MEMORY_ONLY=${MEMORY_ONLY:-}
FIRMWARE_ONLY=${FIRMWARE_ONLY:-}
FW_SIZE=${FW_SIZE:-16384}
DIR=$(mktemp -d /tmp/st-bench-XXXXXX)
OUT=docs/benchmarks.md
SIMS=()
cleanup() {
	for p in "${SIMS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$DIR"
}
trap cleanup EXIT

mkdir -p "$DIR/hsm/tokens" "$DIR/sims"
cat >"$DIR/hsm/softhsm2.conf" <<CONF
directories.tokendir = $DIR/hsm/tokens
objectstore.backend = file
log.level = ERROR
CONF
export SOFTHSM2_CONF=$DIR/hsm/softhsm2.conf
PIN=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
umask 077; printf '%s\n' "$PIN" >"$DIR/pin"; umask 022
softhsm2-util --init-token --free --label bench --so-pin 0000000000 --pin "$PIN" >/dev/null
cat >"$DIR/station.conf" <<CONF
station: { id = "bench"; };
hsm: { module = "/usr/lib/softhsm/libsofthsm2.so"; token = "bench"; ca_key = "issuing-ca"; };
records: { path = "$DIR/records.db"; };
profile = "$DIR/demo.profile";
programmer: { timeout_ms = 5000; };
trust: { profile_keys = [ "$DIR/eng.pub.pem" ]; engineering_key = "bench-engineering"; };
CONF
STATION=$BUILD/station
# only a signed profile runs (docs/profiles.md): sign the demo profile with
# an engineering key made in the same token
cp profiles/demo.profile "$DIR/demo.profile"
"$STATION" --config "$DIR/station.conf" --pin-file "$DIR/pin" profile keygen \
	--out "$DIR/eng.pub.pem" >/dev/null
"$STATION" --config "$DIR/station.conf" --pin-file "$DIR/pin" profile sign \
	--in "$DIR/demo.profile" >/dev/null
"$STATION" --config "$DIR/station.conf" --pin-file "$DIR/pin" ca init \
	--cn "Bench CA" --out "$DIR/ca.pem" >/dev/null

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
med() { printf '%s\n' "$@" | median; }

# Start $1 programmers with $2 units each, extra args $3; ports in PORTS.
# One station-devsim process serves them all (--programmers: one pty and
# thread each), keeping its state in memory and saving it as a unit leaves
# (--save-at-release), so the simulator neither needs 64 processes nor
# fsyncs its state on every change (the tests keep the durable default).
start_sims() {
	local n=$1 per=$2 extra=$3 tag=$4 i
	SIMS=() PORTS=()
	# shellcheck disable=SC2086
	"$BUILD/station-devsim" --state "$DIR/sims/$tag.json" --units "$per" \
		--seed "bench-$tag" --link "$DIR/sims/$tag.p" --programmers "$n" \
		--save-at-release $extra >"$DIR/sims/$tag.ready" 2>/dev/null &
	SIMS+=($!)
	for _ in $(seq 400); do
		[ "$(grep -c ready "$DIR/sims/$tag.ready" 2>/dev/null)" -ge "$n" ] && break
		sleep 0.05
	done
	for i in $(seq "$n"); do
		PORTS+=(--slot "$DIR/sims/$tag.p.$i")
	done
}

stop_sims() {
	for p in "${SIMS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	SIMS=()
}

# One provisioning run: station binary $1, $2 slots, $3 units per slot,
# simulator args $4, tag $5.  Prints "pass wall user sys maxrss_kb events
# writes commits rec_us hsm_us x509_us dev_us unit_ms sigs" (rec_us to
# unit_ms: means over the run's units; sigs: the signed events, i.e. the
# audit signatures the HSM made — one per commit since schema 8, one per
# event before).
run_once() {
	local st=$1 slots=$2 per=$3 extra=$4 tag=$5
	rm -rf "$DIR/records.db"*
	start_sims "$slots" "$per" "$extra" "$tag"
	/usr/bin/time -f "%e %U %S %M" -o "$DIR/time" "$st" --config "$DIR/station.conf" \
		--pin-file "$DIR/pin" ${RUN_PROFILE:+--profile "$RUN_PROFILE"} --json \
		--burn-fuses --yes "${PORTS[@]}" provision \
		>"$DIR/out" 2>"$DIR/err" || { tail -n 5 "$DIR/out" "$DIR/err" >&2; stop_sims; return 1; }
	stop_sims
	local pass events sigs split wc
	pass=$(sqlite3 "$DIR/records.db" "SELECT count(*) FROM units WHERE state='PASS'")
	events=$(sqlite3 "$DIR/records.db" "SELECT count(*) FROM events")
	sigs=$(sqlite3 "$DIR/records.db" "SELECT count(*) FROM events WHERE sig IS NOT NULL")
	# an old station has no "us" split and no commit counter: one commit per write
	split=$(jq -rs '[.[] | select(.event == "unit" and .result == "PASS")] |
		if length == 0 or .[0].us == null then "0 0 0 0 0" else
		"\(map(.us.records) | add / length) \(map(.us.hsm) | add / length) \(map(.us.x509) | add / length) \(map(.us.device) | add / length) \(map(.ms) | add / length)" end' "$DIR/out")
	wc=$(jq -rs --arg ev "$events" '[.[] | select(.event == "summary")][0] |
		"\(.record_writes // ($ev | tonumber)) \(.record_commits // ($ev | tonumber))"' "$DIR/out")
	echo "$pass $(cat "$DIR/time") $events $wc $split $sigs"
}

# Runs of run_once over $SLOTS, medians into ROWS (markdown) and the
# associative arrays U (units/s), C (CPU ms/unit), R (RSS MiB).
declare -A U C R S UPH SHARE LREC LRSS
overhead() {
	local st=$1 label=$2 slotlist=$3 s r
	ROWS=""
	local ups1=""
	for s in $slotlist; do
		local ups=() cpu=() rss=() evs=() sgs=() wpc=() rec=() hsm=() x5=() dev=()
		for r in $(seq "$RUNS"); do
			read -r pass wall user sys maxrss events writes commits rus hus xus dus ums sigs \
				< <(run_once "$st" "$s" $((UNITS / s > MIN_PER_SLOT ? UNITS / s : MIN_PER_SLOT)) "" "$label-$s-$r")
			ups+=("$(awk -v p="$pass" -v w="$wall" 'BEGIN {printf "%.1f", p / w}')")
			cpu+=("$(awk -v p="$pass" -v u="$user" -v y="$sys" 'BEGIN {printf "%.2f", (u + y) * 1000 / p}')")
			rss+=("$maxrss")
			evs+=("$(awk -v p="$pass" -v e="$events" 'BEGIN {printf "%.1f", e / p}')")
			sgs+=("$(awk -v p="$pass" -v e="${sigs:-$events}" 'BEGIN {printf "%.2f", e / p}')")
			wpc+=("$(awk -v w="$writes" -v c="$commits" 'BEGIN {printf "%.2f", c ? w / c : 0}')")
			rec+=("$(awk -v v="$rus" 'BEGIN {printf "%.1f", v / 1000}')")
			hsm+=("$(awk -v v="$hus" 'BEGIN {printf "%.1f", v / 1000}')")
			x5+=("$(awk -v v="$xus" 'BEGIN {printf "%.1f", v / 1000}')")
			dev+=("$(awk -v v="$dus" 'BEGIN {printf "%.1f", v / 1000}')")
		done
		local u c m e g w
		u=$(med "${ups[@]}"); c=$(med "${cpu[@]}"); m=$(med "${rss[@]}")
		e=$(med "${evs[@]}"); g=$(med "${sgs[@]}"); w=$(med "${wpc[@]}")
		[ -z "$ups1" ] && ups1=$u
		U[$label-$s]=$u C[$label-$s]=$c R[$label-$s]=$((m / 1024)) S[$label-$s]=$g
		EVENTS=$e
		ROWS="$ROWS| $s | $u | $(awk -v u="$u" -v a="$ups1" -v s="$s" 'BEGIN {printf "%.0f %%", 100 * u / (a * s)}') | $c | $((m / 1024)) | $e | $g | $w | $(med "${rec[@]}") | $(med "${hsm[@]}") | $(med "${x5[@]}") | $(med "${dev[@]}") |
"
	done
}

# What one synchronous 4 KiB write (an fsync) costs on this disk right now:
# the floor under every durable record write.
FSYNC_MS=$(dd if=/dev/zero of="$DIR/dd" bs=4k count=200 oflag=dsync 2>&1 |
	awk '/copied/ {for (i = 1; i <= NF; i++) if ($i == "s,") printf "%.2f", $(i - 1) * 1000 / 200}')
rm -f "$DIR/dd"

# ---- 6. Firmware: the demo profile plus a signed image and its SBOM ----
firmware_setup() {
	local sha
	sha() { sha256sum "$1" | cut -d' ' -f1; }
	"$STATION" --config "$DIR/station.conf" --pin-file "$DIR/pin" profile keygen \
		--key bench-secureboot --out "$DIR/sb.pub.pem" >/dev/null
	head -c "$FW_SIZE" /dev/urandom >"$DIR/app.bin"
	"$STATION" --config "$DIR/station.conf" --pin-file "$DIR/pin" profile sign \
		--key bench-secureboot --in "$DIR/app.bin" >/dev/null
	printf '%s\n' '{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[{"type":"library","name":"zlib","version":"1.2.13"}]}' >"$DIR/app.cdx.json"
	sed '/^  sha256 = "/d' profiles/demo.profile >"$DIR/fw.profile"
	cat >>"$DIR/fw.profile" <<PROFILE
firmware: {
  secure_boot_key = "sb.pub.pem"; secure_boot_key_sha256 = "$(sha "$DIR/sb.pub.pem")";
  images = ( { name = "app"; version = "1.0.0"; file = "app.bin"; sha256 = "$(sha "$DIR/app.bin")";
    slot = 0; sbom = "app.cdx.json"; sbom_sha256 = "$(sha "$DIR/app.cdx.json")"; } );
};
PROFILE
	"$STATION" --config "$DIR/station.conf" --pin-file "$DIR/pin" profile sign \
		--in "$DIR/fw.profile" >/dev/null
}

# ms/unit at the line model, 1 slot, without and with firmware: FW_PLAIN,
# FW_WITH (medians of RUNS), FW_ADDED, FW_WIRE (the image's bytes on the
# line alone, at BAUD).
firmware_bench() {
	local r plain=() with=() args="--baud $BAUD --fuse-word-us $FUSE_WORD_US --keygen-ms $KEYGEN_MS"
	firmware_setup
	for r in $(seq "$RUNS"); do
		read -r _ _ _ _ _ _ _ _ _ _ _ _ ms _ < <(run_once "$STATION" 1 "$LINE_UNITS" "$args" "fwp-$r")
		plain+=("$ms")
		read -r _ _ _ _ _ _ _ _ _ _ _ _ ms _ < <(RUN_PROFILE="$DIR/fw.profile" run_once \
			"$STATION" 1 "$LINE_UNITS" "$args" "fww-$r")
		with+=("$ms")
	done
	FW_PLAIN=$(med "${plain[@]}" | awk '{printf "%.0f", $1}')
	FW_WITH=$(med "${with[@]}" | awk '{printf "%.0f", $1}')
	FW_ADDED=$((FW_WITH - FW_PLAIN))
	FW_WIRE=$(awk -v n="$FW_SIZE" -v b="$BAUD" 'BEGIN {printf "%.0f", n * 10 * 1000 / b}')
}

if [ -n "$FIRMWARE_ONLY" ]; then
	firmware_bench
	echo "firmware: $FW_SIZE-byte image at $BAUD baud, 1 slot, $LINE_UNITS units, medians of $RUNS runs:"
	echo "  ms/unit without firmware: $FW_PLAIN; with image write + attestation: $FW_WITH (+$FW_ADDED ms; the image alone on the wire: $FW_WIRE ms)"
	exit 0
fi

if [ -z "$MEMORY_ONLY" ]; then
# ---- 2. HSM limit (first, on a quiet token) ----
HSM=$(STATION_PIN=$PIN "$BUILD/bench-hsm" /usr/lib/softhsm/libsofthsm2.so bench 2)
SIGN=$(echo "$HSM" | awk '/sign_per_s/ {print $2}')
KEYGEN=$(echo "$HSM" | awk '/keygen_per_s/ {print $2}')
# Every other PKCS#11 module found here, each with a token of its own, in
# the same run (docs/pki.md, "Tested modules"): the rates beside SoftHSM's.
MODROWS="| SoftHSM2 | $SIGN /s | $KEYGEN /s |"
NSS=/usr/lib/x86_64-linux-gnu/libsoftokn3.so
if [ -r "$NSS" ] && command -v certutil >/dev/null; then
	mkdir -p "$DIR/nss"
	printf '%s\n' "$PIN" >"$DIR/nss/pw"
	certutil -N -d "sql:$DIR/nss" -f "$DIR/nss/pw" >/dev/null
	rm -f "$DIR/nss/pw"
	M=$(STATION_PIN=$PIN "$BUILD/bench-hsm" "$NSS" "NSS Certificate DB" 2 \
		"configdir='sql:$DIR/nss' certPrefix='' keyPrefix='' secmod='secmod.db' flags=" ||
		echo failed)
	MODROWS="$MODROWS
| NSS softokn | $(echo "$M" | awk '/sign_per_s/ {print $2}') /s | $(echo "$M" | awk '/keygen_per_s/ {print $2}') /s |"
else
	MODROWS="$MODROWS
| NSS softokn | not installed (libnss3, libnss3-tools) | |"
fi

# ---- 1. Station overhead, now and before group commit ----
overhead "$STATION" now "$SLOTS"
ROWS_NOW=$ROWS
EVENTS_NOW=$EVENTS
# the HSM limit at the best row's signatures per unit (below, after BEST)
ROWS_BEFORE="" BEFORE_OK="" BEFORE_NOTE="not measured (BEFORE_REV empty)"
if [ -n "$BEFORE_REV" ] && git rev-parse -q --verify "$BEFORE_REV^{commit}" >/dev/null; then
	mkdir -p "$DIR/before-src"
	git archive "$BEFORE_REV" | tar -x -C "$DIR/before-src"
	if make -s -C "$DIR/before-src" BUILD="$DIR/before-build" \
		"$DIR/before-build/station" >"$DIR/before-make.log" 2>&1; then
		overhead "$DIR/before-build/station" before "$BEFORE_SLOTS"
		ROWS_BEFORE=$ROWS
		BEFORE_OK=1
		BEFORE_NOTE="the station built from $(git rev-parse --short "$BEFORE_REV") ($BEFORE_WHAT), same simulators, same token"
	else
		BEFORE_NOTE="not measured: $BEFORE_REV did not build"
	fi
fi

# ---- 3. Line model ----
LINE_ARGS="--baud $BAUD --fuse-word-us $FUSE_WORD_US --keygen-ms $KEYGEN_MS"
# One row of the line model, station binary $1 at $3 slots: appended to
# LROWS[$2] (markdown); UPH, SHARE, LREC, LRSS keyed "$2-slots".  The
# first row of a label is its one-slot reference.
declare -A LROWS UPH1
line_model() {
	local st=$1 label=$2 s=$3 r
	{
		local uph=() share=() ums=() lrec=() lhsm=() lx5=() ldev=() lcpu=() lrss=()
		for r in $(seq "$RUNS"); do
			read -r pass wall user sys maxrss events writes commits rus hus xus dus ms sigs \
				< <(run_once "$st" "$s" "$LINE_UNITS" "$LINE_ARGS" "line-$label-$s-$r")
			uph+=("$(awk -v p="$pass" -v w="$wall" 'BEGIN {printf "%.0f", 3600 * p / w}')")
			share+=("$(awk -v a="$rus" -v b="$hus" -v c="$xus" -v m="$ms" 'BEGIN {printf "%.2f", m ? 100 * (a + b + c) / (m * 1000) : 0}')")
			ums+=("$ms")
			lrec+=("$(awk -v v="$rus" 'BEGIN {printf "%.1f", v / 1000}')")
			lhsm+=("$(awk -v v="$hus" 'BEGIN {printf "%.1f", v / 1000}')")
			lx5+=("$(awk -v v="$xus" 'BEGIN {printf "%.1f", v / 1000}')")
			ldev+=("$(awk -v v="$dus" 'BEGIN {printf "%.1f", v / 1000}')")
			lcpu+=("$(awk -v p="$pass" -v u="$user" -v y="$sys" 'BEGIN {printf "%.2f", (u + y) * 1000 / p}')")
			lrss+=("$maxrss")
		done
		local u sh um k=$label-$s uph1
		u=$(med "${uph[@]}"); sh=$(med "${share[@]}"); um=$(med "${ums[@]}")
		[ -z "${UPH1[$label]:-}" ] && UPH1[$label]=$u
		uph1=${UPH1[$label]}
		UPH[$k]=$u SHARE[$k]=$sh LREC[$k]=$(med "${lrec[@]}") LRSS[$k]=$(($(med "${lrss[@]}") / 1024))
		LROWS[$label]="${LROWS[$label]:-}| $s | $u | $(awk -v u="$u" -v a="$uph1" -v s="$s" 'BEGIN {printf "%.0f %%", 100 * u / (a * s)}') | $(awk -v m="$um" 'BEGIN {printf "%.0f", m}') | ${LREC[$k]} | $(med "${lhsm[@]}") | $(med "${lx5[@]}") | $(med "${ldev[@]}") | $(med "${lcpu[@]}") | ${LRSS[$k]} | $sh % |
"
	}
}
# the station before (BEFORE_LINE_SLOTS) right after the station now, row
# by row, so both see the same load
for s in $SLOTS; do
	line_model "$STATION" now "$s"
	if [ -n "$BEFORE_OK" ] && [[ " $BEFORE_LINE_SLOTS " == *" $s "* ]]; then
		line_model "$DIR/before-build/station" before "$s"
	fi
done
LINE_ROWS_NOW=${LROWS[now]:-}
LINE_ROWS_BEFORE=${LROWS[before]:-}

# ---- 6. Firmware (measured here, written in its own section) ----
firmware_bench

# ---- 4. Baseline ----
read -r bpass bwall buser bsys < <(STATION_PIN=$PIN bash scripts/bench-baseline.sh \
	"$DIR" "$BASE_UNITS" "$DIR/ca.pem" bench issuing-ca)
BUPS=$(awk -v p="$bpass" -v w="$bwall" 'BEGIN {printf "%.2f", p / w}')
BCPU=$(awk -v p="$bpass" -v u="$buser" -v y="$bsys" 'BEGIN {printf "%.0f", (u + y) * 1000 / p}')
fi

# ---- 5. Memory over a long run, and LeakSanitizer ----
rm -rf "$DIR/records.db"*
per=$((GROWTH_UNITS / 8))
start_sims 8 "$per" "--forget-done" growth
/usr/bin/time -f "%e %U %S %M" -o "$DIR/gtime" "$STATION" --config "$DIR/station.conf" \
	--pin-file "$DIR/pin" --burn-fuses --yes "${PORTS[@]}" provision >/dev/null 2>"$DIR/gerr" &
TPID=$!
: >"$DIR/rss"
sleep 0.5
SPID=$(pgrep -P "$TPID" | head -n1 || true)
while kill -0 "$TPID" 2>/dev/null; do
	if [ -n "$SPID" ]; then
		done_n=$(sqlite3 "$DIR/records.db" "SELECT count(*) FROM units WHERE state='PASS'" 2>/dev/null || echo 0)
		rss=$(awk '/VmRSS/ {print $2}' "/proc/$SPID/status" 2>/dev/null || true)
		[ -n "$rss" ] && echo "$done_n $rss" >>"$DIR/rss"
	fi
	sleep 1
done
wait "$TPID" || true
stop_sims
GPASS=$(sqlite3 "$DIR/records.db" "SELECT count(*) FROM units WHERE state='PASS'")
read -r gwall _ _ gmax <"$DIR/gtime"
G10=$(awk -v n="$GROWTH_UNITS" '$1 >= n / 10 {print $2; exit}' "$DIR/rss")
GLAST=$(tail -n1 "$DIR/rss" | awk '{print $2}')
GROWTH="RSS $((${G10:-0} / 1024)) MiB after 10 % of the units, $((${GLAST:-0} / 1024)) MiB at the last sample, peak $((gmax / 1024)) MiB ($(awk -v a="${G10:-0}" -v b="${GLAST:-0}" 'BEGIN {printf "%+d", b - a}') KiB)"
GUPS=$(awk -v p="$GPASS" -v w="$gwall" 'BEGIN {printf "%.1f", p / w}')
if [ -n "$MEMORY_ONLY" ]; then
	echo "growth: $GPASS of $GROWTH_UNITS units PASS in $gwall s ($GUPS units/s); $GROWTH"
	echo "RSS at 10 %: ${G10:-?} KiB, last: ${GLAST:-?} KiB, peak: $gmax KiB"
	ls -l "$DIR"/sims/growth.json.*
	"$STATION" --config "$DIR/station.conf" --pin-file "$DIR/pin" records verify \
		--ca-cert "$DIR/ca.pem" || echo "records verify: exit $?"
	exit 0
fi

LSAN="not run (no $BUILD-asan/station: run make check or make asan first)"
if [ -x "$BUILD-asan/station" ] && [ -x "$BUILD-asan/station-devsim" ]; then
	rm -rf "$DIR/records.db"*
	per=$((LSAN_UNITS / 8))
	SAVE=$BUILD; BUILD=$BUILD-asan
	start_sims 8 "$per" "" lsan
	BUILD=$SAVE
	rc=0
	ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp" \
		"$BUILD-asan/station" --config "$DIR/station.conf" --pin-file "$DIR/pin" \
		--burn-fuses --yes "${PORTS[@]}" provision >/dev/null 2>"$DIR/lsan" || rc=$?
	stop_sims
	LPASS=$(sqlite3 "$DIR/records.db" "SELECT count(*) FROM units WHERE state='PASS'")
	LEAKS=$(grep -c "ERROR: LeakSanitizer" "$DIR/lsan" || true)
	LSAN="$LPASS units over 8 slots with the ASan+LSan build: exit $rc, $LEAKS leak reports"
fi

# ---- targets ----
BEST=$(for s in $SLOTS; do echo "${U[now-$s]}"; done | sort -g | tail -n1)
BEST_S=$(for s in $SLOTS; do echo "${U[now-$s]} $s"; done | sort -g | tail -n1 | cut -d' ' -f2)
SIGS_BEST=${S[now-$BEST_S]}
SIGS_1=$(set -- $SLOTS; echo "${S[now-$1]}")
# one certificate signature plus the audit signatures a unit needs
LIMIT=$(awk -v s="$SIGN" -v e="$SIGS_BEST" 'BEGIN {printf "%.0f", s / (1 + e)}')
LIMIT_1=$(awk -v s="$SIGN" -v e="$SIGS_1" 'BEGIN {printf "%.0f", s / (1 + e)}')
verdict() { if awk "BEGIN {exit !($1)}"; then echo met; else echo missed; fi; }
pct() { awk -v a="$1" -v b="$2" -v s="$3" 'BEGIN {printf "%.0f", 100 * a / (s * b)}'; }
T_HSM=$(verdict "$BEST * 4 >= $LIMIT")
T_BASE=$(verdict "$BEST >= 50 * $BUPS")
T_L32=$(verdict "${UPH[now-32]:-0} >= 0.95 * 32 * ${UPH[now-1]:-1}")
T_L64=$(verdict "${UPH[now-64]:-0} >= 0.90 * 64 * ${UPH[now-1]:-1}")
T_SH8=$(verdict "${SHARE[now-8]:-100} < 1")
T_SH64=$(verdict "${SHARE[now-64]:-100} < 2")
T_REC=$(verdict "${LREC[now-64]:-999} <= 2 * ${LREC[now-1]:-0}")
T_CPU=$(verdict "${C[now-1]:-99} <= 5")
T_RSS=$(verdict "${LRSS[now-64]:-999} < 64 && ${R[now-64]:-999} < 64")
T_GROW=$(verdict "${GLAST:-0} - ${G10:-0} < 1024")

cat >"$OUT" <<MD
# Benchmarks

Written by \`make bench\` ($(date -u +%Y-%m-%d)); medians of $RUNS runs.
Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo),
$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), a VM shared with
other builds and test runs (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg));
SoftHSM2 $(dpkg-query -W -f='${Version}' softhsm2 2>/dev/null), OpenSSL $(openssl version | cut -d' ' -f2),
SQLite $(sqlite3 --version | cut -d' ' -f1); one synchronous 4 KiB write (\`dd oflag=dsync\`)
took ${FSYNC_MS} ms at the start of the run.  Everything — station, simulators,
SoftHSM — runs on these $(nproc) cores, so the numbers are for this box, not a line PC.

## Goals (issue 22: gang programmers at 32 and 64 sites)

| goal | measured | |
|---|---|---|
| line model: 32 slots ≥ 95 % of 32 × one slot | ${UPH[now-32]:-?} vs 32 × ${UPH[now-1]:-?} units/h = $(pct "${UPH[now-32]:-0}" "${UPH[now-1]:-1}" 32) % | $T_L32 |
| line model: 64 slots ≥ 90 % of 64 × one slot | ${UPH[now-64]:-?} vs 64 × ${UPH[now-1]:-?} units/h = $(pct "${UPH[now-64]:-0}" "${UPH[now-1]:-1}" 64) % | $T_L64 |
| line model: station share < 1 % at 8 slots | ${SHARE[now-8]:-?} % | $T_SH8 |
| line model: station share < 2 % at 64 slots | ${SHARE[now-64]:-?} % | $T_SH64 |
| line model: records ms/unit at 64 slots ≤ 2 × 1 slot | ${LREC[now-64]:-?} vs ${LREC[now-1]:-?} ms | $T_REC |
| station CPU per unit ≤ 5 ms (zero latency, 1 slot) | ${C[now-1]:-?} ms | $T_CPU |
| zero latency: throughput ≥ 25 % of the HSM limit | best $BEST units/s vs limit $LIMIT units/s | $T_HSM |
| peak RSS at 64 slots < 64 MiB | ${LRSS[now-64]:-?} MiB (line model), ${R[now-64]:-?} MiB (zero latency) | $T_RSS |
| no growth over $GROWTH_UNITS units (8 slots) | $GROWTH | $T_GROW |
| at least 50× the shell-script baseline (issue 8) | $BEST vs $BUPS units/s = $(awk -v a="$BEST" -v b="$BUPS" 'BEGIN {printf "%.0f", a / b}')× | $T_BASE |
| leak check | $LSAN | |

## 1. Station overhead (simulator latency zero)

$UNITS units per run, spread over the slots (at least $MIN_PER_SLOT per slot:
$((64 * MIN_PER_SLOT)) at 64 slots); fuses armed with the demo
profile's full plan (4 fields + lifecycle lock); every step recorded as an
audit event, each commit's last event signed by the audit key in the HSM
(docs/records.md, "One signature per commit").  "ms/unit" columns: the mean per unit of each part of
its wall time, from the station's \`--json\` unit lines (\`us\`): *records*
= the record writes (a durable one waits for its group commit, with the
commit's signature; a lazy step only appends;
docs/records.md, "Durable and lazy writes"), *HSM* = certificate signature and serial random,
*X.509* = building and checking the certificate, *device* = the rest, i.e.
the programmer's round trips over the pty and the simulator's own work.
"writes/commit": record writes per SQLite commit (fsync).

| slots | units/s | vs slots × 1-slot | station CPU ms/unit | peak RSS MiB | audit events/unit | audit signatures/unit | writes/commit | records ms | HSM ms | X.509 ms | device ms |
|---|---|---|---|---|---|---|---|---|---|---|---|
$ROWS_NOW
Before ($BEFORE_NOTE):

| slots | units/s | vs slots × 1-slot | station CPU ms/unit | peak RSS MiB | audit events/unit | audit signatures/unit | writes/commit | records ms | HSM ms | X.509 ms | device ms |
|---|---|---|---|---|---|---|---|---|---|---|---|
$ROWS_BEFORE
## 2. The HSM limit (same token, same run)

| operation | rate |
|---|---|
| ECDSA P-256 sign (CKM_ECDSA, host hash) | $SIGN /s |
| P-256 key pair generation (session objects) | $KEYGEN /s |

The same two rates on every PKCS#11 module found on this machine, each on a
fresh token of its own (\`bench-hsm\`, 2 s each):

| module | ECDSA P-256 sign | P-256 keygen (session objects) |
|---|---|---|
$MODROWS

HSM work per unit: one certificate signature plus the audit signatures
(one per commit, docs/records.md "One signature per commit"): $SIGS_1 per
unit at one slot, $SIGS_BEST at $BEST_S slots, where the station was fastest
(for $EVENTS_NOW recorded events per unit; one signature per event before).
So the HSM alone would allow about **$LIMIT units/s** at $BEST_S slots
($LIMIT_1 at one slot); the goal compares the best throughput with the
former.

## 3. Line model

The simulators with realistic timings: a $BAUD-baud link (each byte 10 bit
times, both directions), ${FUSE_WORD_US} µs to program one 32-bit OTP word,
${KEYGEN_MS} ms for the device to generate its P-256 key; $LINE_UNITS units
per slot.  All programmers are one \`station-devsim --programmers N
--save-at-release\` process (one pty and thread each).  *Station share* =
(records + HSM + X.509 time) / unit time, from the \`us\` split; the
per-part columns are ms per unit as in section 1; CPU is the station's
(user + system) per unit.  The HSM limit of this run: $LIMIT units/s.

| slots | units/hour | vs slots × 1-slot | ms/unit | records ms | HSM ms | X.509 ms | device ms | station CPU ms/unit | peak RSS MiB | station share |
|---|---|---|---|---|---|---|---|---|---|---|
$LINE_ROWS_NOW
$(if [ -n "$LINE_ROWS_BEFORE" ]; then printf 'Before (%s), each row run right after the same row above:\n\n| slots | units/hour | vs slots × 1-slot | ms/unit | records ms | HSM ms | X.509 ms | device ms | station CPU ms/unit | peak RSS MiB | station share |\n|---|---|---|---|---|---|---|---|---|---|---|\n%s\n' "$BEFORE_NOTE" "$LINE_ROWS_BEFORE"; fi)

## 4. Baseline: the same work as a shell script

\`scripts/bench-baseline.sh\`, $BASE_UNITS units one after another: device
key + CSR with openssl (standing in for the device), certificate issued by
the HSM's CA key through \`openssl x509 -req -engine pkcs11\`, \`openssl
verify\`, the DER certificate written to a pty, proof of possession with
\`openssl dgst\`, the record's hash signed by the HSM with \`pkcs11-tool\`,
one row inserted with \`sqlite3\` (WAL, synchronous=FULL).  It does *less*
than the station — no fuses, no lifecycle, no framed protocol or read-back,
one record per unit instead of a signed, hash-chained event per step — so
the comparison flatters the script.

| | units/s | CPU ms/unit |
|---|---|---|
| shell script | $BUPS | $BCPU |
| station, 1 slot | ${U[now-1]:-?} | ${C[now-1]:-?} |
| station, best | $BEST | |

## Firmware: image writing and attestation (docs/firmware.md)

The line model above, 1 slot, $LINE_UNITS units, with the demo profile and
with the same profile plus a firmware group: one $FW_SIZE-byte image
(written in 512-byte chunks — the benchmark simulator saves at release, not per chunk —
then its own SHA-256 read back) and the end-of-line attestation.

| | ms/unit |
|---|---|
| demo profile | $FW_PLAIN |
| with firmware | $FW_WITH |
| added per unit | $FW_ADDED (the image's bytes alone at $BAUD baud: $FW_WIRE) |

MD
cat docs/benchmarks-notes.md >>"$OUT"
echo "wrote $OUT"
cat "$OUT"

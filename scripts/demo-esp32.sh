#!/bin/bash
# make demo-esp32: two simulated ESP32-C3 chips (station-devsim --model
# esp32c3 on ptys) in front of the station's esp32 driver, with Espressif's
# esptool/espefuse as the referee (docs/esp32.md).
#
# What runs end to end today: the signed ESP32-C3 profile (its Secure Boot
# V2 key digest checked with espsecure), the issuing CA in a fresh SoftHSM
# token, chip detection and the factory MAC as the unit ID (checked with
# esptool), the eFuse plan read from each chip (`station fuses show`, dry
# run), and `station provision` armed.  The provision run stops at the
# identity step: the ROM loader cannot make, hold or use a device key, and
# the esp_secure_cert identity scheme is not wired into the engine yet, so
# no certificate is issued and no eFuse is burned (espefuse shows the
# chips unchanged).  The script says so and ends 0.
set -euo pipefail
BUILD=${1:-build}
STATION=$BUILD/station
DEVSIM=$BUILD/station-devsim
STATE=${STATE:-state-esp32}

rm -rf "$STATE"
mkdir -p "$STATE/hsm/tokens" "$STATE/certs" "$STATE/chips"
STATE=$(cd "$STATE" && pwd)
ESP() { sh scripts/esp-referee.sh run "$@"; }

cleanup() {
	for p in "${SIMS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
SIMS=()
trap cleanup EXIT

# 1. A private SoftHSM token for this demo only.
cat >"$STATE/hsm/softhsm2.conf" <<CONF
directories.tokendir = $STATE/hsm/tokens
objectstore.backend = file
log.level = ERROR
CONF
export SOFTHSM2_CONF=$STATE/hsm/softhsm2.conf
umask 077
od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$STATE/hsm/user.pin"
od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$STATE/hsm/so.pin"
umask 022
softhsm2-util --init-token --free --label station \
	--so-pin "$(cat "$STATE/hsm/so.pin")" --pin "$(cat "$STATE/hsm/user.pin")" >/dev/null

cat >"$STATE/station.conf" <<CONF
station: { id = "demo-esp32-station"; };
hsm: { module = "/usr/lib/softhsm/libsofthsm2.so"; token = "station"; ca_key = "issuing-ca"; };
records: { path = "$STATE/records.db"; cert_dir = "$STATE/certs"; };
profile = "$STATE/esp32c3.profile";
programmer: { timeout_ms = 3000; };
trust: { profile_keys = [ "$STATE/eng.pub.pem" ]; engineering_key = "demo-engineering"; };
CONF
ST=("$STATION" --config "$STATE/station.conf" --pin-file "$STATE/hsm/user.pin")

# 2. The ESP32-C3 profile, signed; its root of trust is the Secure Boot V2
#    digest of its RSA-3072 key, as espsecure computes it.
echo "== signed ESP32-C3 profile"
"${ST[@]}" profile keygen --out "$STATE/eng.pub.pem"
cp profiles/esp32c3.profile profiles/esp32c3-secureboot.pub.pem "$STATE/"
ESP espsecure digest_sbv2_public_key --keyfile "$STATE/esp32c3-secureboot.pub.pem" \
	--output "$STATE/sbv2-digest.bin" >/dev/null
digest=$(od -An -tx1 -v "$STATE/sbv2-digest.bin" | tr -d ' \n')
grep -q "sha256 = \"$digest\"" "$STATE/esp32c3.profile" ||
	{ echo "the profile's root of trust is not espsecure's digest $digest" >&2; exit 1; }
echo "espsecure digest_sbv2_public_key: $digest (= root_of_trust.sha256)"
"${ST[@]}" profile sign --in "$STATE/esp32c3.profile"
"${ST[@]}" profile verify
"${ST[@]}" config check

# 3. The issuing CA: key made inside the token.
echo "== issuing CA"
"${ST[@]}" ca init --cn "Demo ESP32 Issuing CA" --org "Example Devices Ltd" --out "$STATE/ca.pem"

# 4. Two simulated ESP32-C3 chips in their ROM loader.
echo "== simulated ESP32-C3 chips"
for i in 1 2; do
	"$DEVSIM" --model esp32c3 --state "$STATE/chips/c3-$i.json" --seed "demo-c3-$i" \
		--link "$STATE/chips/c3-$i" \
		>"$STATE/chips/c3-$i.ready" 2>"$STATE/chips/c3-$i.log" &
	SIMS+=($!)
done
for i in 1 2; do
	for _ in $(seq 50); do
		grep -q ready "$STATE/chips/c3-$i.ready" 2>/dev/null && break
		sleep 0.1
	done
	echo "chip $i: $(cat "$STATE/chips/c3-$i.ready") ($STATE/chips/c3-$i)"
done

# 5. The referee reads each chip: chip type and factory MAC.
echo "== esptool (referee)"
for i in 1 2; do
	ESP esptool --port "$STATE/chips/c3-$i" --before no_reset --after no_reset \
		--no-stub read_mac | grep -E "^(Chip is|MAC:)" | sort -u
done

# 6. The eFuse plan against each chip, read through the esp32 driver.
echo "== fuse plan (station fuses show)"
"${ST[@]}" --slot "esp32:$STATE/chips/c3-1" fuses show
echo "== dry run"
"${ST[@]}" --dry-run --slot "esp32:$STATE/chips/c3-1" --slot "esp32:$STATE/chips/c3-2" provision

# 7. Provision, armed.  It stops at the identity (see the header).
echo "== provisioning (armed)"
set +e
"${ST[@]}" --operator demo --burn-fuses --yes \
	--slot "esp32:$STATE/chips/c3-1" --slot "esp32:$STATE/chips/c3-2" provision
rc=$?
set -e
echo "station provision exit code $rc: the identity step is not available for the"
echo "ESP32-C3 yet (docs/esp32.md, 'Identity'); no certificate, no eFuse burned."
sqlite3 -header -column "$STATE/records.db" \
	"SELECT slot, uid, state, substr(reason, 1, 90) AS reason FROM units ORDER BY id;"

# 8. The referee again: the chips' eFuses are as they left the factory.
echo "== espefuse (referee)"
ESP espefuse --port "$STATE/chips/c3-1" --before no_reset --do-not-confirm \
	summary --format json >"$STATE/chips/c3-1.summary.json" 2>/dev/null
/usr/bin/python3 -c 'import json,sys; t=open(sys.argv[1]).read(); j=json.loads(t[t.index("{"):]);
print("chip 1: BLOCK_KEY0", j["BLOCK_KEY0"]["value"][:23] + "…", "SECURE_BOOT_EN",
      j["SECURE_BOOT_EN"]["value"], "ENABLE_SECURITY_DOWNLOAD", j["ENABLE_SECURITY_DOWNLOAD"]["value"])' \
	"$STATE/chips/c3-1.summary.json"

echo
echo "records:      $STATE/records.db   (sqlite3 $STATE/records.db 'SELECT * FROM units')"
echo "CA:           $STATE/ca.pem"
echo "simulated ESP32-C3 chips (eFuses in the state file, flash beside it):"
for i in 1 2; do echo "              $STATE/chips/c3-$i.json (+ .flash)"; done
echo "inspect one offline: $DEVSIM --model esp32c3 --state $STATE/chips/c3-1.json --efuse-image efuse.bin"
echo "                     then espefuse.py --chip esp32c3 --virt --path-efuse-file efuse.bin summary"

#!/bin/bash
# make demo-esp32: two simulated ESP32-C3 chips (station-devsim --model
# esp32c3 on ptys) in front of the station's esp32 driver, with Espressif's
# esptool/espefuse as the referee (docs/esp32.md).
#
# End to end: a fresh RSA-3072 secure-boot key and two signed images
# (scripts/esp32c3-firmware.sh; the private key stays in the state
# directory), the signed ESP32-C3 profile (key_mode = "esp_secure_cert",
# an esp32-sbv2 firmware group), the issuing CA in a fresh SoftHSM token,
# then `station provision` of both chips to PASS: the HMAC key burned
# read-protected, the certificate in esp_secure_cert, the signed images
# written and verified, proof of possession by the factory app, the eFuse
# plan (Secure Boot V2 digest, secure boot, JTAG off) and the lock (Secure
# Download Mode), then attestation by the factory app.  It ends with the
# referee on what a lab reads off the chips (espefuse --virt on the
# exported eFuses, openssl verify of the certificate in the exported flash,
# espsecure verify_signature of the images cut from it).
set -euo pipefail
BUILD=${1:-build}
STATION=$BUILD/station
DEVSIM=$BUILD/station-devsim
STATE=${STATE:-state-esp32}

rm -rf "$STATE"
mkdir -p "$STATE/hsm/tokens" "$STATE/certs" "$STATE/chips"
STATE=$(cd "$STATE" && pwd)
ESP() { sh scripts/esp-referee.sh run "$@"; }

# 1. A private SoftHSM token for this demo only, and the station's
#    configuration (scripts/demo-lib.sh).
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh
demo_station "$STATE" demo-esp32-station esp32c3.profile

# 2. The ESP32-C3 profile, signed; a new secure-boot key and signed images
#    made here (the private key never in the repository); its root of trust
#    is the Secure Boot V2 digest of that key, as espsecure computes it.
echo "== secure-boot key, signed images, signed ESP32-C3 profile"
"${ST[@]}" profile keygen --out "$STATE/eng.pub.pem"
bash scripts/esp32c3-firmware.sh "$STATE" profiles/esp32c3.profile
digest=$(od -An -tx1 -v "$STATE/sbv2-digest.bin" | tr -d ' \n')
grep -q "sha256 = \"$digest\"" "$STATE/esp32c3.profile" ||
	{ echo "the profile's root of trust is not espsecure's digest $digest" >&2; exit 1; }
echo "espsecure digest_sbv2_public_key: $digest (= root_of_trust.sha256)"
for i in bootloader app; do
	ESP espsecure verify_signature --version 2 --keyfile "$STATE/esp32c3-secureboot.pub.pem" \
		"$STATE/esp32c3-$i.bin" | grep successful
done
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

# 7. Provision, armed, to PASS.
echo "== provisioning (armed)"
"${ST[@]}" --operator demo --burn-fuses --yes \
	--slot "esp32:$STATE/chips/c3-1" --slot "esp32:$STATE/chips/c3-2" provision
sqlite3 -header -column "$STATE/records.db" \
	"SELECT slot, uid, state, cert_serial FROM units ORDER BY id;"
[ "$(sqlite3 "$STATE/records.db" "SELECT count(*) FROM units WHERE state = 'PASS'")" = 2 ] ||
	{ echo "not both units PASS" >&2; exit 1; }

# 8. Online after the lock: Secure Download Mode refuses espefuse.
echo "== espefuse online (referee): the lock is real"
if ESP espefuse --port "$STATE/chips/c3-1" --before no_reset --do-not-confirm summary \
	>"$STATE/chips/c3-1.online.txt" 2>&1; then
	echo "espefuse read the locked chip" >&2; exit 1
fi
grep -o "Secure Download Mode is enabled.*" "$STATE/chips/c3-1.online.txt" | head -1
demo_cleanup
SIMS=()

# 9. Offline, what a lab reads off the chips: the exported eFuses and flash.
echo "== offline referee (exported images)"
for i in 1 2; do
	c=$STATE/chips/c3-$i
	"$DEVSIM" --model esp32c3 --state "$c.json" --efuse-image "$c.efuse.bin" \
		--flash-image "$c.flash.bin"
	ESP espefuse --chip esp32c3 --virt --path-efuse-file "$c.efuse.bin" \
		summary --format json >"$c.efuse.json" 2>/dev/null
	/usr/bin/python3 - "$c.efuse.json" "$digest" "$i" <<'PY'
import json, sys
t = open(sys.argv[1]).read(); j = json.loads(t[t.index("{"):])
v = lambda k: j[k]["value"]
key0 = v("BLOCK_KEY0").replace(" ", "").lower()
print("chip %s: BLOCK_KEY0 = digest %s, %s, writeable %s" % (sys.argv[3],
      "OK" if key0 == sys.argv[2] else "WRONG " + key0, v("KEY_PURPOSE_0"),
      j["BLOCK_KEY0"]["writeable"]))
print("        KEY_PURPOSE_1 %s, BLOCK_KEY1 readable %s; SECURE_BOOT_EN %s; "
      "DIS_USB_JTAG %s DIS_PAD_JTAG %s; ENABLE_SECURITY_DOWNLOAD %s" % (
      v("KEY_PURPOSE_1"), j["BLOCK_KEY1"]["readable"], v("SECURE_BOOT_EN"),
      v("DIS_USB_JTAG"), v("DIS_PAD_JTAG"), v("ENABLE_SECURITY_DOWNLOAD")))
PY
	rm -rf "$c.cert" && mkdir "$c.cert"
	/usr/bin/python3 tests/fixtures/esp32_secure_cert_read.py "$c.flash.bin" "$c.cert" >/dev/null
	echo "        esp_secure_cert: $(openssl verify -CAfile "$STATE/ca.pem" "$c.cert/dev_cert.pem")"
	echo "        $(openssl x509 -in "$c.cert/dev_cert.pem" -noout -serial -subject)"
	for img in bootloader:0:$(stat -c %s "$STATE/esp32c3-bootloader.bin") \
		   app:65536:$(stat -c %s "$STATE/esp32c3-app.bin"); do
		IFS=: read -r n off len <<<"$img"
		dd if="$c.flash.bin" of="$c.$n.bin" iflag=skip_bytes,count_bytes \
			skip="$off" count="$len" status=none
		echo "        $n (flash 0x$(printf %x "$off")): $(ESP espsecure verify_signature \
			--version 2 --keyfile "$STATE/esp32c3-secureboot.pub.pem" "$c.$n.bin" | grep successful)"
	done
done

echo
echo "records:      $STATE/records.db   ($STATION --config $STATE/station.conf records show UID)"
echo "CA:           $STATE/ca.pem"
echo "secure boot:  $STATE/esp32c3-secureboot.pem (this demo's own key; never in the repository)"
echo "simulated ESP32-C3 chips (eFuses in the state file, flash beside it):"
for i in 1 2; do echo "              $STATE/chips/c3-$i.json (flash: c3-$i.json.flash); exported: c3-$i.efuse.bin, c3-$i.flash.bin"; done
echo "referee:      sh scripts/esp-referee.sh run espefuse --chip esp32c3 --virt \\"
echo "                --path-efuse-file $STATE/chips/c3-1.efuse.bin summary --format json"

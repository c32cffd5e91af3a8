#!/bin/bash
# make demo: provision simulated units end to end on this machine.
# A fresh SoftHSM token and issuing CA under ./state, two simulated
# programmers (station-devsim on ptys) with three units each, one
# provisioning run with fuse burning armed, then an independent check of
# what was issued (openssl verify, sqlite3) and a summary.
set -euo pipefail
BUILD=${1:-build}
STATION=$BUILD/station
DEVSIM=$BUILD/station-devsim
STATE=${STATE:-state}
UNITS=${UNITS:-3}

rm -rf "$STATE"
mkdir -p "$STATE/hsm/tokens" "$STATE/certs" "$STATE/programmers"
STATE=$(cd "$STATE" && pwd)

# 1. A private SoftHSM token for this demo only (nothing in /var/lib/softhsm),
#    and the station's configuration (scripts/demo-lib.sh).
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh
demo_station "$STATE" demo-station demo.profile
# 1b. Only a signed profile runs.  The demo's engineering key lives in the
#     same SoftHSM token (in a factory it is engineering's own HSM); its
#     public key is the station's trust anchor (trust.profile_keys).
echo "== signed profile"
"${ST[@]}" profile keygen --out "$STATE/eng.pub.pem"
cp profiles/demo.profile "$STATE/demo.profile"
# 1a. Signed firmware (docs/firmware.md): a secure-boot key made in the
#     token, a small demo image signed with it (the detached ECDSA form
#     `openssl dgst -verify` checks), its CycloneDX SBOM, and a firmware
#     group naming them by digest.  The root-of-trust hash the fuse plan
#     burns is then computed from this key, so the typed one goes.
echo "== signed firmware"
"${ST[@]}" profile keygen --key demo-secureboot --out "$STATE/secureboot.pub.pem"
for i in $(seq 0 255); do printf 'demo-sensor app 1.0.0 block %03d %s\n' "$i" \
	"$(printf '%s' "$i" | sha256sum | cut -c1-32)"; done >"$STATE/demo-app.bin"
"${ST[@]}" profile sign --key demo-secureboot --in "$STATE/demo-app.bin"
openssl dgst -sha256 -verify "$STATE/secureboot.pub.pem" \
	-signature "$STATE/demo-app.bin.sig" "$STATE/demo-app.bin"
cat >"$STATE/demo-app.cdx.json" <<'SBOM'
{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,
 "metadata":{"component":{"type":"firmware","name":"demo-app","version":"1.0.0"}},
 "components":[
  {"type":"library","name":"zlib","version":"1.2.13","purl":"pkg:generic/zlib@1.2.13"},
  {"type":"library","name":"mbedtls","version":"3.5.2","purl":"pkg:generic/mbedtls@3.5.2"}]}
SBOM
sha() { sha256sum "$1" | cut -d' ' -f1; }
sed -i '/^  sha256 = "/d' "$STATE/demo.profile"
cat >>"$STATE/demo.profile" <<PROFILE

# Signed firmware (docs/firmware.md), added by scripts/demo.sh.
firmware: {
  secure_boot_key = "secureboot.pub.pem";
  secure_boot_key_sha256 = "$(sha "$STATE/secureboot.pub.pem")";
  images = (
    { name = "demo-app"; version = "1.0.0"; file = "demo-app.bin";
      sha256 = "$(sha "$STATE/demo-app.bin")"; slot = 0;
      sbom = "demo-app.cdx.json"; sbom_sha256 = "$(sha "$STATE/demo-app.cdx.json")"; }
  );
};
PROFILE
"${ST[@]}" profile sign --in "$STATE/demo.profile"
openssl dgst -sha256 -verify "$STATE/eng.pub.pem" \
	-signature "$STATE/demo.profile.sig" "$STATE/demo.profile"
"${ST[@]}" profile verify

# 1c. The whole configuration and the profile it names, against the schema.
echo "== configuration"
"${ST[@]}" config check

# 2. The issuing CA: key made inside the token, self-signed certificate.
echo "== issuing CA"
"${ST[@]}" ca init --cn "Demo Issuing CA" --org "Example Devices Ltd" --out "$STATE/ca.pem"
"${ST[@]}" ca show

# 3. Two programmers, each with $UNITS units waiting.
echo "== programmers"
for i in 1 2; do
	"$DEVSIM" --state "$STATE/programmers/prog$i.json" --units "$UNITS" \
		--seed "demo-prog$i" --link "$STATE/programmers/prog$i" \
		>"$STATE/programmers/prog$i.ready" 2>"$STATE/programmers/prog$i.log" &
	SIMS+=($!)
done
for i in 1 2; do
	for _ in $(seq 50); do
		grep -q ready "$STATE/programmers/prog$i.ready" 2>/dev/null && break
		sleep 0.1
	done
	echo "programmer $i: $(cat "$STATE/programmers/prog$i.ready") ($STATE/programmers/prog$i)"
done

# 4. The fuse plan of the first unit, as a dry run (changes nothing).
echo "== fuse plan (dry run)"
"${ST[@]}" --dry-run --slot "$STATE/programmers/prog1" provision

# 5. Provision: both slots in parallel, fuses armed.
echo "== provisioning"
"${ST[@]}" --operator demo --burn-fuses --yes \
	--slot "$STATE/programmers/prog1" --slot "$STATE/programmers/prog2" provision

# 6. Check what was issued with outside tools only.
echo "== independent checks"
n=0
for c in "$STATE"/certs/*.pem; do
	openssl verify -CAfile "$STATE/ca.pem" "$c" >/dev/null
	n=$((n + 1))
done
echo "openssl verify: $n device certificates verify against $STATE/ca.pem"
sqlite3 -header -column "$STATE/records.db" \
	"SELECT slot, uid, state, cert_serial, substr(rot_hash,1,16)||'…' AS rot_hash FROM units ORDER BY id;"

# 6b. The code each unit left with: what the device holds (sha256sum of
#     the image = what it attested), and the regulator's question.
echo "== firmware and attestation"
sqlite3 "$STATE/records.db" "SELECT uid, json_extract(firmware, '\$[0].sha256'),
	json_extract(json_extract(attestation, '\$.statement'), '\$.lifecycle')
	FROM units WHERE state = 'PASS' ORDER BY id LIMIT 2;"
echo "sha256sum of the image: $(sha "$STATE/demo-app.bin")"
echo "== which units left with zlib 1.2.13?"
"${ST[@]}" records units --component zlib@1.2.13

# 6. The audit trail: every record chained and signed by the audit key;
#    an evidence bundle checked the way docs/evidence.md tells an auditor.
echo "== audit trail"
"${ST[@]}" records verify --ca-cert "$STATE/ca.pem"
rm -rf "$STATE/evidence"
"${ST[@]}" records export --evidence "$STATE/evidence"
(cd "$STATE/evidence" && openssl verify -CAfile ca.pem audit.pem >/dev/null &&
	openssl x509 -in audit.pem -noout -pubkey > audit.pub.pem &&
	openssl dgst -sha256 -verify audit.pub.pem -signature manifest.sig manifest.sha256 &&
	sha256sum --quiet --strict -c manifest.sha256 && echo "sha256sum: every file matches")
# one unit's attestation, checked with openssl alone (docs/evidence.md)
(cd "$STATE/evidence" && d=$(ls attestations | sed -n 's/\.statement\.json$//p' | head -n 1) &&
	openssl x509 -in "certs/$d.pem" -noout -pubkey > device.pub.pem &&
	printf 'attestation of %s: ' "$d" &&
	openssl dgst -sha256 -verify device.pub.pem -signature "attestations/$d.sig" \
		"attestations/$d.statement.json")
echo
echo "records:      $STATE/records.db   (sqlite3 $STATE/records.db 'SELECT * FROM units')"
echo "evidence:     $STATE/evidence/   (checks in docs/evidence.md; SBOMs in sboms/, attestations/)"
echo "firmware:     $STATE/demo-app.bin (+ .sig, SBOM demo-app.cdx.json; docs/firmware.md)"
echo "certificates: $STATE/certs/"
echo "CA:           $STATE/ca.pem"
echo "simulated devices (fuses, keys): $STATE/programmers/prog*.json"

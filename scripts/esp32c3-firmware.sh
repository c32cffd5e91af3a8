#!/bin/bash
# scripts/esp32c3-firmware.sh DIR [PROFILE]: what a maker's build gives the
# station for an ESP32-C3 with Secure Boot V2, made fresh in DIR so that no
# private secure-boot key is ever in the repository:
#   DIR/esp32c3-secureboot.pem      a new RSA-3072 key (espsecure's scheme
#                                   rsa3072; stays in DIR, 0600)
#   DIR/esp32c3-secureboot.pub.pem  its public key
#   DIR/esp32c3-bootloader.bin      a small ESP image (0x0), signed with
#   DIR/esp32c3-app.bin             `espsecure sign_data --version 2` (0x10000)
#   DIR/esp32c3.cdx.json            a CycloneDX SBOM for both
#   DIR/esp32c3.profile             PROFILE (default profiles/esp32c3.profile)
#                                   with the key, the images' SHA-256 and the
#                                   root of trust (espsecure
#                                   digest_sbv2_public_key) of this key
# The images are what the simulated C3 (devsim/esp32c3_boot.c,
# esp32c3_app.c) boots: a valid image header (magic E9, chip ID 5), one
# segment, the checksum and the appended SHA-256, then the signature
# sector at the next 4 KiB boundary.  The profile is not signed here (the
# caller signs it with `station profile sign`).
set -euo pipefail
DIR=$1
PROFILE=${2:-$(dirname "$0")/../profiles/esp32c3.profile}
ESP() { sh "$(dirname "$0")/esp-referee.sh" run "$@"; }
mkdir -p "$DIR"
(umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 \
	-out "$DIR/esp32c3-secureboot.pem" 2>/dev/null)
openssl pkey -in "$DIR/esp32c3-secureboot.pem" -pubout -out "$DIR/esp32c3-secureboot.pub.pem"
/usr/bin/python3 - "$DIR" <<'PY'
import hashlib, struct, sys
def image(fill, size):
    # common header: magic, 1 segment, flash mode DIO, 4MB/80MHz, entry
    hdr = bytes([0xE9, 1, 2, 0x20]) + struct.pack('<I', 0x40380000)
    # extended header: WP pin, drive settings, chip ID 5 (ESP32-C3), min
    # revision, max revision, reserved, hash appended
    hdr += bytes([0xEE, 0, 0, 0]) + struct.pack('<H', 5) + bytes([0])
    hdr += struct.pack('<HH', 0, 0xFFFF) + bytes(4) + bytes([1])
    data = bytes((i * 7 + fill) & 0xFF for i in range(size))
    seg = struct.pack('<II', 0x3FC80000, len(data)) + data
    img = hdr + seg
    chk = 0xEF
    for b in data:
        chk ^= b
    img += bytes((15 - len(img) % 16) % 16) + bytes([chk])
    return img + hashlib.sha256(img).digest()
open(sys.argv[1] + '/esp32c3-bootloader.unsigned.bin', 'wb').write(image(0x11, 3000))
open(sys.argv[1] + '/esp32c3-app.unsigned.bin', 'wb').write(image(0x5A, 9000))
PY
for i in bootloader app; do
	ESP espsecure sign_data --version 2 --keyfile "$DIR/esp32c3-secureboot.pem" \
		--output "$DIR/esp32c3-$i.bin" "$DIR/esp32c3-$i.unsigned.bin" >/dev/null
	rm -f "$DIR/esp32c3-$i.unsigned.bin"
done
cat >"$DIR/esp32c3.cdx.json" <<'JSON'
{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,
 "components":[{"type":"application","name":"esp32c3-factory-app","version":"1.0.0"},
               {"type":"library","name":"esp-idf","version":"5.1"}]}
JSON
ESP espsecure digest_sbv2_public_key --keyfile "$DIR/esp32c3-secureboot.pub.pem" \
	--output "$DIR/sbv2-digest.bin" >/dev/null
sum() { sha256sum "$1" | cut -c1-64; }
rot=$(od -An -tx1 -v "$DIR/sbv2-digest.bin" | tr -d ' \n')
/usr/bin/python3 - "$PROFILE" "$DIR/esp32c3.profile" "$rot" \
	"$(sum "$DIR/esp32c3-secureboot.pub.pem")" "$(sum "$DIR/esp32c3-bootloader.bin")" \
	"$(sum "$DIR/esp32c3-app.bin")" "$(sum "$DIR/esp32c3.cdx.json")" <<'PY'
import re, sys
src, dst, rot, key, boot, app, sbom = sys.argv[1:]
t = open(src).read()
def sub(pat, val, t):
    t2, n = re.subn(pat, lambda m: m.group(1) + val + m.group(2), t, flags=re.S)
    if n == 0:
        sys.exit('esp32c3-firmware.sh: %s: no %s' % (src, pat))
    return t2
t = sub(r'(root_of_trust:\s*\{.*?sha256 = ")[0-9a-f]{64}(")', rot, t)
t = sub(r'(secure_boot_key_sha256 = ")[0-9a-f]{64}(")', key, t)
t = sub(r'(file = "esp32c3-bootloader.bin";\s*sha256 = ")[0-9a-f]{64}(")', boot, t)
t = sub(r'(file = "esp32c3-app.bin";\s*sha256 = ")[0-9a-f]{64}(")', app, t)
t = re.sub(r'(sbom_sha256 = ")[0-9a-f]{64}(")', lambda m: m.group(1) + sbom + m.group(2), t)
open(dst, 'w').write(t)
PY

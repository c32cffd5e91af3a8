#!/bin/bash
# The shell-script baseline of make bench (issue 8, part 4): what a team
# would otherwise script with standard tools, one unit after another.
#
#   bench-baseline.sh DIR UNITS CA_PEM TOKEN CA_KEY_LABEL
#
# SOFTHSM2_CONF must point at the token's configuration and STATION_PIN
# hold the user PIN (pkcs11-tool reads it with --pin env:STATION_PIN, the
# engine from a 0600 file through pin-source=file:; never on a command line).  Per unit:
#
#   1. a P-256 key and a CSR made with openssl (standing in for the device
#      generating its key and handing out the public key);
#   2. the certificate issued by the CA key in the HSM: openssl x509 -req
#      through the libp11 PKCS#11 engine (a session and login per unit, as
#      a script gets), with a random serial, then openssl verify;
#   3. the certificate (DER) written to a serial port: a pty made by socat
#      whose other end discards the bytes (no framing, no read-back);
#   4. proof of possession: the device key signs a fresh challenge, checked
#      against the certificate's public key with openssl dgst;
#   5. the audit record: its SHA-256 signed by the HSM with pkcs11-tool, and
#      one row (uid, serial, fingerprint, certificate, signature) inserted
#      with the sqlite3 CLI in a WAL database with synchronous=FULL.
#
# Prints "units wall_s user_s sys_s" (children's CPU included).  Not done:
# fuses, lifecycle, the wire protocol, a hash chain, per-step records.
set -euo pipefail
DIR=$1 UNITS=$2 CA=$3 TOKEN=$4 KEY=$5
MOD=/usr/lib/softhsm/libsofthsm2.so
W=$DIR/baseline
rm -rf "$W"
mkdir -p "$W"
DB=$W/records.db
sqlite3 "$DB" "PRAGMA journal_mode=WAL;" >/dev/null
sqlite3 "$DB" "CREATE TABLE units (uid TEXT PRIMARY KEY, serial TEXT, sha256 TEXT,
	cert TEXT, sig TEXT, at TEXT)"

socat -u "pty,raw,echo=0,link=$W/port" OPEN:/dev/null &
SOCAT=$!
trap 'kill $SOCAT 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -e "$W/port" ] && break; sleep 0.05; done

# libp11 takes the file's bytes as they are: no trailing newline
(umask 077; printf '%s' "$STATION_PIN" >"$W/pin")
URI="pkcs11:token=$TOKEN;object=$KEY;type=private;pin-source=file:$W/pin"

one_unit() {
	local uid=$1 serial fp
	openssl ecparam -name prime256v1 -genkey -noout -out "$W/dev.key"
	openssl req -new -key "$W/dev.key" -subj "/CN=$uid/O=Bench" -out "$W/dev.csr"
	serial=$(openssl rand -hex 16)
	openssl x509 -req -in "$W/dev.csr" -engine pkcs11 -CAkeyform engine \
		-CAkey "$URI" -CA "$CA" -days 365 -sha256 -set_serial "0x$serial" \
		-out "$W/cert.pem" 2>/dev/null
	openssl verify -CAfile "$CA" "$W/cert.pem" >/dev/null
	openssl x509 -in "$W/cert.pem" -outform DER >"$W/port"
	openssl rand 32 >"$W/chal"
	openssl dgst -sha256 -sign "$W/dev.key" -out "$W/chal.sig" "$W/chal"
	openssl x509 -in "$W/cert.pem" -pubkey -noout >"$W/dev.pub"
	openssl dgst -sha256 -verify "$W/dev.pub" -signature "$W/chal.sig" \
		"$W/chal" >/dev/null
	fp=$(openssl x509 -in "$W/cert.pem" -outform DER | sha256sum | cut -d' ' -f1)
	printf '%s %s %s' "$uid" "$serial" "$fp" | openssl dgst -sha256 -binary \
		>"$W/rec.hash"
	pkcs11-tool --module "$MOD" --token-label "$TOKEN" --login \
		--pin env:STATION_PIN --sign -m ECDSA --label "$KEY" \
		--input-file "$W/rec.hash" --output-file "$W/rec.sig" 2>/dev/null
	sqlite3 "$DB" "PRAGMA synchronous=FULL; INSERT INTO units VALUES ('$uid',
		'$serial', '$fp', readfile('$W/cert.pem'),
		hex(readfile('$W/rec.sig')), strftime('%Y-%m-%dT%H:%M:%fZ'))"
}

export -f one_unit
export W URI CA MOD TOKEN KEY DB
/usr/bin/time -f "%e %U %S" -o "$W/time" bash -c 'set -euo pipefail
	for i in $(seq '"$UNITS"'); do one_unit "base-$i"; done'
n=$(sqlite3 "$DB" "SELECT count(*) FROM units")
echo "$n $(cat "$W/time")"

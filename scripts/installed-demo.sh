#!/bin/bash
# The demo against the installed package only: /usr/bin/station,
# /usr/bin/station-devsim, /etc/station/station.conf (edited the way plant
# IT would: station id, module, profile, trust), records in
# /var/lib/station, the log in /var/log/station.  A private SoftHSM token
# and the engineering key live in DIR (scripts/package-test.sh).
#   scripts/installed-demo.sh DIR
set -euo pipefail
D=$1
STATION=/usr/bin/station DEVSIM=/usr/bin/station-devsim CONF=/etc/station/station.conf
mkdir -p "$D/tokens"
cat >"$D/softhsm2.conf" <<CONF
directories.tokendir = $D/tokens
objectstore.backend = file
log.level = ERROR
CONF
export SOFTHSM2_CONF=$D/softhsm2.conf
umask 077
od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$D/user.pin"
od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$D/so.pin"
umask 022
softhsm2-util --init-token --free --label station --so-pin "$(cat "$D/so.pin")" \
	--pin "$(cat "$D/user.pin")" >/dev/null

# plant IT's edits: what the shipped file says must be filled in
sed -i 's/id = "station-1"/id = "pkg-demo"/' "$CONF"
sed -i 's|^\(  module = \).*|\1"/usr/lib/softhsm/libsofthsm2.so";|' "$CONF"
sed -i 's|^\(  token = "station";\)|\1 ca_key = "issuing-ca";|' "$CONF"
cat >>"$CONF" <<CONF
profile = "$D/demo.profile";
trust: { profile_keys = [ "$D/eng.pub.pem" ]; engineering_key = "demo-engineering"; };
CONF
ST=("$STATION" --config "$CONF" --pin-file "$D/user.pin")
"${ST[@]}" profile keygen --out "$D/eng.pub.pem"
cp /usr/share/doc/station/examples/demo.profile "$D/demo.profile"
"${ST[@]}" profile sign --in "$D/demo.profile"
"${ST[@]}" config check
"${ST[@]}" ca init --cn "Package Demo CA" --org "Example Devices Ltd" --out "$D/ca.pem"

"$DEVSIM" --state "$D/prog.json" --units 2 --seed pkg-demo --link "$D/prog" \
	>"$D/prog.ready" 2>"$D/prog.log" &
sim=$!
trap 'kill $sim 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q ready "$D/prog.ready" 2>/dev/null && break; sleep 0.1; done
# station.log_file: the verdicts go there too (not under systemd here)
sed -i 's|log_file = "/var/log/station/tui.log"|log_file = "/var/log/station/station.log"|' "$CONF"
"${ST[@]}" --operator demo --burn-fuses --yes --slot "$D/prog" provision
n=0
for c in /var/lib/station/certs/*.pem; do
	openssl verify -CAfile "$D/ca.pem" "$c" >/dev/null
	n=$((n + 1))
done
[ "$n" -ge 2 ] || { echo "installed-demo: $n certificates in /var/lib/station/certs" >&2; exit 1; }
"${ST[@]}" records verify --ca-cert "$D/ca.pem"
ls /var/lib/station/checkpoints/* >/dev/null
grep -c 'RESULT=PASS' /var/log/station/station.log | grep -qx 2 ||
	{ echo "installed-demo: the log has no two PASS lines:" >&2;
	  cat /var/log/station/station.log >&2; exit 1; }
grep -q 'UNIT_UID=' /var/log/station/station.log
! grep -qF "$(cat "$D/user.pin")" /var/log/station/station.log /var/lib/station/records.db ||
	{ echo "installed-demo: the PIN reached the log or the records" >&2; exit 1; }
echo "installed-demo: $n units provisioned with the installed station, records verified"

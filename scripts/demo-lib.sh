# demo-lib.sh — what the demos share (sourced by scripts/demo.sh and
# scripts/demo-esp32.sh; bash).
#
# demo_station STATE STATION_ID PROFILE: a private SoftHSM token for this
# demo only (nothing in /var/lib/softhsm; random PINs in STATE/hsm, 0600),
# and STATE/station.conf naming it, the records under STATE and the signed
# profile STATE/PROFILE (trusted through STATE/eng.pub.pem).  Sets
# SOFTHSM2_CONF, the ST array (the station with that configuration and the
# PIN file), and SIMS with a cleanup of the simulators on exit.
demo_cleanup() {
	for p in "${SIMS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}

demo_station() {
	local state=$1 id=$2 profile=$3
	SIMS=()
	trap demo_cleanup EXIT
	mkdir -p "$state/hsm/tokens" "$state/certs"
	cat >"$state/hsm/softhsm2.conf" <<CONF
directories.tokendir = $state/hsm/tokens
objectstore.backend = file
log.level = ERROR
CONF
	export SOFTHSM2_CONF=$state/hsm/softhsm2.conf
	umask 077
	od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$state/hsm/user.pin"
	od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$state/hsm/so.pin"
	umask 022
	softhsm2-util --init-token --free --label station \
		--so-pin "$(cat "$state/hsm/so.pin")" --pin "$(cat "$state/hsm/user.pin")" >/dev/null
	cat >"$state/station.conf" <<CONF
station: { id = "$id"; };
hsm: { module = "/usr/lib/softhsm/libsofthsm2.so"; token = "station"; ca_key = "issuing-ca"; };
records: { path = "$state/records.db"; cert_dir = "$state/certs"; };
profile = "$state/$profile";
programmer: { timeout_ms = 3000; };
trust: { profile_keys = [ "$state/eng.pub.pem" ]; engineering_key = "demo-engineering"; };
CONF
	ST=("$STATION" --config "$state/station.conf" --pin-file "$state/hsm/user.pin")
}

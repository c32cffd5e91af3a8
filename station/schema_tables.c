/* schema_tables.c — the settings of station.conf and of product profiles:
 * one line per setting (path, type, flags, range or choices, extra check,
 * default, meaning), and the checks of well-typed values those lines name.
 * What reads a file against a table, collects its problems and prints the
 * tables is schema.c: adding a setting touches only this file. */
#include "station/schema.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "base.h"
#include "station/st_int.h"

/* ---- checks of a well-typed value ------------------------------------ */

int st_slot_uri(const char *driver, const char *port, char *out, size_t len)
{
	static const char *const schemes[] = { "serial:", "usb:", "tpm2:", "esp32:" };
	const char *scheme = NULL;

	for (size_t i = 0; i < ST_ARRAY_SIZE(schemes); i++)
		if (!strncmp(port, schemes[i], strlen(schemes[i])))
			scheme = schemes[i];
	if (driver && scheme && (strncmp(scheme, driver, strlen(driver)) ||
				 scheme[strlen(driver)] != ':'))
		return -1;
	snprintf(out, len, "%s%s%s", driver && !scheme ? driver : "",
		 driver && !scheme ? ":" : "", port);
	return 0;
}

/* SHA-256 as 64 hex digits. */
static const char *check_hex64(const config_setting_t *s, char *why, size_t len)
{
	const char *v = config_setting_get_string(s);
	size_t n = strlen(v);

	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)v[i]))
			n = 0;
	if (n == 64)
		return NULL;
	snprintf(why, len, "must be a SHA-256 as 64 hex digits (got %zu characters)",
		 strlen(v));
	return why;
}

/* A programmer URI as `--slot` takes it: a serial path (or serial:PATH),
 * usb:VID:PID[?serial=S|?port=P], or tpm2:TCTI; with the slot's driver
 * in front when it names one and the port has no scheme. */
static const char *check_port(const config_setting_t *s, char *why, size_t len)
{
	const char *v = config_setting_get_string(s), *colon = strchr(v, ':');
	const char *driver = NULL;
	unsigned vid, pid;
	int used = 0;
	char uri[256];

	config_setting_lookup_string(config_setting_parent(s), "driver", &driver);
	if (st_slot_uri(driver, v, uri, sizeof(uri))) {
		snprintf(why, len, "'%s' is a %.*s port but the slot's 'driver' says %s",
			 v, (int)(colon - v), v, driver);
		return why;
	}
	v = uri;
	colon = strchr(v, ':');

	if (!*v) {
		snprintf(why, len, "is empty: give the programmer's port");
		return why;
	}
	if (v[0] == '/' || v[0] == '.' || !colon)
		return NULL;
	if (!strncmp(v, "serial:", 7) && v[7])
		return NULL;
	if (!strncmp(v, "tpm2:", 5) && v[5])
		return NULL;
	if (!strncmp(v, "esp32:", 6) && v[6])
		return NULL;
	if (!strncmp(v, "usb:", 4)) {
		const char *q;

		if (sscanf(v + 4, "%4x:%4x%n", &vid, &pid, &used) == 2) {
			q = v + 4 + used;
			if (!*q || (!strncmp(q, "?serial=", 8) && q[8]) ||
			    (!strncmp(q, "?port=", 6) && q[6]))
				return NULL;
		}
		snprintf(why, len, "'%s' is not a USB programmer selector (usb:VID:PID, "
			 "usb:VID:PID?serial=S or usb:VID:PID?port=1-2.3)", v);
		return why;
	}
	snprintf(why, len, "'%s': unknown driver '%.*s' (a serial path, serial:PATH, "
		 "usb:VID:PID[?serial=S|?port=P], tpm2:TCTI or esp32:PATH)", v, (int)(colon - v), v);
	return why;
}

/* ---- the tables: one line per setting -------------------------------- */

#define R SK_REQUIRED

const st_schema_key st_config_schema[] = {
	{ "station", SK_GROUP, R, .doc = "Who this station is." },
	{ "station.id", SK_STRING, R, 1, 63, .def = "station-1",
	  .doc = "Station identity, in every record and in the audit certificate "
		 "(the default applies only when no configuration file is given)." },
	{ "station.log_file", SK_STRING, SK_PARENT, .def = "RECORDS.tui.log",
	  .doc = "Log file of `station tui` (`--log` overrides)." },
	{ "hsm", SK_GROUP, R, .doc = "The PKCS#11 token that holds the CA and audit keys." },
	{ "hsm.module", SK_STRING, SK_FILE, 1, 4095,
	  .def = "/usr/lib/softhsm/libsofthsm2.so",
	  .doc = "PKCS#11 module (vendor module or p11-kit-proxy.so); `--module` overrides." },
	{ "hsm.token", SK_STRING, R, 1, 1023, .def = "station",
	  .doc = "Token label (at most 32 bytes), or an RFC 7512 URI such as "
		 "`pkcs11:token=station;manufacturer=SoftHSM%20project` (the first "
		 "token it matches); `--token` overrides." },
	{ "hsm.init_args", SK_STRING, 0, 0, 4095, .def = "",
	  .doc = "String passed to the module's C_Initialize as "
		 "CK_C_INITIALIZE_ARGS.pReserved, for modules configured that way "
		 "(NSS softokn: `configdir='sql:/path/to/db' certPrefix='' "
		 "keyPrefix='' secmod='secmod.db' flags=`); empty: none." },
	{ "hsm.ca_key", SK_STRING, 0, 1, 1023, .def = "",
	  .doc = "Label of the issuing CA the `ca` commands act on (else issuing-ca) "
		 "and provisioning uses (else the profile's, else the newest valid), "
		 "or an RFC 7512 URI naming it (`pkcs11:object=LABEL`); "
		 "`--ca-key` overrides." },
	{ "records", SK_GROUP, 0, .doc = "Where the evidence goes." },
	{ "records.path", SK_STRING, SK_PARENT, 1, 4095, .def = "station-records.db",
	  .doc = "SQLite records store; `--records` overrides." },
	{ "records.cert_dir", SK_STRING, SK_DIR, 1, 4095, .def = "",
	  .doc = "Directory for PEM copies of issued certificates; `--cert-dir` overrides." },
	{ "records.checkpoint_dir", SK_STRING, SK_DIR, 1, 4095, .def = "",
	  .doc = "Directory for the signed checkpoints of the audit chain written "
		 "at the end of each run (else `<records.path>.checkpoints`, "
		 "created); `records sync` ships them." },
	{ "profile", SK_STRING, SK_FILE, 1, 4095, .def = "",
	  .doc = "Product profile file; `--profile` overrides.  `config check` checks it too." },
	{ "programmer", SK_GROUP, 0, .doc = "The programmer link." },
	{ "programmer.timeout_ms", SK_INT, 0, 50, 600000, .def = "2000",
	  .doc = "Per-command timeout; `--timeout-ms` overrides." },
	{ "programmer.retries", SK_INT, 0, 0, 10, .def = "2",
	  .doc = "Retries of idempotent commands after a timeout or a bad frame "
		 "(a fuse burn is never blindly retried)." },
	{ "slots", SK_LIST, 0, 1, ST_MAX_SLOTS, .def = "",
	  .doc = "The programmers, one group per slot; used when no `--slot` is given." },
	{ "slots[].name", SK_STRING, 0, 1, 31, .def = "slot N",
	  .doc = "A name for the slot (messages, `config check`)." },
	{ "slots[].driver", SK_ENUM, 0, .choices = "serial|usb|tpm2|esp32", .def = "",
	  .doc = "Driver, when `port` has no scheme (`driver = \"usb\"; "
		 "port = \"1209:5354?serial=SP-1\";`)." },
	{ "slots[].port", SK_STRING, R, 1, 191, .check = check_port,
	  .doc = "What `--slot` takes: a serial path (`/dev/ttyUSB0`, `serial:PATH`), "
		 "`usb:VID:PID`, `usb:VID:PID?serial=S`, `usb:VID:PID?port=1-2.3` "
		 "(physical socket), `tpm2:TCTI` or `esp32:PATH[?baud=N]` (docs/esp32.md)." },
	{ "defaults", SK_GROUP, 0, .doc = "Defaults of `station provision`." },
	{ "defaults.burn_fuses", SK_BOOL, 0, .def = "false",
	  .doc = "Arm fuse burning without `--burn-fuses` (`--dry-run` still wins)." },
	{ "defaults.units", SK_INT, 0, 0, 1000000, .def = "0",
	  .doc = "Units per slot and run, 0 = until the programmer is empty; `--units` overrides." },
	{ "defaults.plug_wait_s", SK_INT, 0, 0, 86400, .def = "0",
	  .doc = "Seconds a slot waits for an absent or unplugged USB programmer; "
		 "`--plug-wait` overrides." },
	{ "trust", SK_GROUP, 0, .doc = "Trust anchors for signed profiles." },
	{ "trust.profile_keys", SK_STRINGS, 0, .def = "",
	  .doc = "Engineering keys whose profile signatures the station accepts." },
	{ "trust.engineering_key", SK_STRING, 0, 1, 127, .def = "",
	  .doc = "The HSM key `station profile sign` signs with." },
	{ "roles", SK_GROUP, 0, .doc = "Who may do what." },
	{ "roles.operators", SK_STRING, SK_FILE, 1, 4095, .def = "",
	  .doc = "Signed operator list." },
	{ "roles.require", SK_BOOL, 0, .def = "false",
	  .doc = "Refuse to run without an authenticated operator." },
	{ "ui", SK_GROUP, 0, .doc = "The technician's terminal UI (`station tui`)." },
	{ "ui.bell_on_fail", SK_BOOL, 0, .def = "false",
	  .doc = "Ring the terminal bell when a unit ends FAIL or QUARANTINE." },
	{ "udev", SK_GROUP, 0, .doc = "Which generic USB-serial adapters are programmers." },
	{ "udev.adapters", SK_STRINGS, 0, .def = "",
	  .doc = "The FT232R/FT231X/CP210x/CH340 adapters of this station's serial "
		 "programmers, as `serial:USB_SERIAL` or `path:ID_PATH` (`udevadm info "
		 "/dev/ttyUSB0`); `station config udev` writes their udev rules.  Other "
		 "adapters on the machine are left alone." },
	{ "sync", SK_GROUP, 0, .doc = "Copying the records to the fleet PostgreSQL." },
	{ "sync.conninfo", SK_STRING, R, 1, 4095,
	  .doc = "libpq connection string of the central database (no password: use `passfile`)." },
	{ "sync.passfile", SK_STRING, SK_FILE, 1, 4095, .def = "",
	  .doc = "libpq password file (else `PGPASSFILE` or ~/.pgpass)." },
	{ "sync.sslmode", SK_ENUM, 0,
	  .choices = "disable|allow|prefer|require|verify-ca|verify-full", .def = "",
	  .doc = "libpq sslmode (unset: libpq's default); `verify-full` for TLS in production." },
	{ "sync.sslrootcert", SK_STRING, SK_FILE, 1, 4095, .def = "",
	  .doc = "CA certificate of the server." },
	{ "sync.sslcert", SK_STRING, SK_FILE, 1, 4095, .def = "",
	  .doc = "Client certificate, when the server asks for one." },
	{ "sync.sslkey", SK_STRING, SK_FILE, 1, 4095, .def = "",
	  .doc = "Client certificate's key." },
	{ "sync.offline", SK_ENUM, 0, .choices = "stop|allowance", .def = "stop",
	  .doc = "When the server is unreachable: stop, or go on for `allowance` pre-reserved units." },
	{ "sync.allowance", SK_INT, 0, 0, 1000000, .def = "0",
	  .doc = "Units reserved ahead for offline work when `offline = \"allowance\"`." },
	{ "sync.batch", SK_INT, 0, 1, 100000, .def = "500",
	  .doc = "Events shipped per transaction." },
	{ "sync.interval_ms", SK_INT, 0, 10, 3600000, .def = "5000",
	  .doc = "Pause between rounds of `records sync --follow`." },
	{ "sync.backoff_max_ms", SK_INT, 0, 10, 3600000, .def = "60000",
	  .doc = "Longest wait between retries while the server is down." },
	{ "sync.connect_timeout_s", SK_INT, 0, 1, 600, .def = "10",
	  .doc = "libpq connect timeout." },
	{ "labels", SK_GROUP, 0, .doc = "A label for each PASS unit (docs/integration.md)." },
	{ "labels.dir", SK_STRING, SK_PARENT, 1, 4095,
	  .doc = "Folder of the labels: <uid>.png and <uid>.zpl (QR code: UID, serial, fingerprint)." },
	{ "labels.queue", SK_STRING, 0, 1, 127,
	  .doc = "CUPS queue the ZPL is sent to, raw (`lp -d QUEUE -o raw`)." },
	{ "mes", SK_GROUP, 0, .doc = "Results to the plant's MES over HTTP(S) or MQTT (docs/integration.md)." },
	{ "mes.url", SK_STRING, 0, 1, 2047, .def = "",
	  .doc = "Where each ended unit's result is POSTed (https://...); this or `mqtt_host`." },
	{ "mes.mqtt_host", SK_STRING, 0, 1, 253, .def = "",
	  .doc = "MQTT broker the results are published to (QoS 1); this or `url`." },
	{ "mes.mqtt_port", SK_INT, 0, 1, 65535, .def = "1883",
	  .doc = "The broker's port (8883 is the usual one with TLS)." },
	{ "mes.mqtt_topic", SK_STRING, 0, 1, 255, .def = "",
	  .doc = "Topic of the results; empty: `station/<station.id>/units`." },
	{ "mes.mqtt_username", SK_STRING, 0, 1, 255, .def = "",
	  .doc = "MQTT user name (with `mqtt_password_file`)." },
	{ "mes.mqtt_password_file", SK_STRING, SK_FILE, 1, 4095, .def = "",
	  .doc = "File holding the MQTT password (mode 0600; never logged)." },
	{ "mes.hmac_key_file", SK_STRING, SK_FILE, 1, 4095, .def = "",
	  .doc = "Key of the `X-Station-Signature` HMAC-SHA256 header (mode 0600; never logged)." },
	{ "mes.tls_ca", SK_STRING, SK_FILE, 1, 4095, .def = "",
	  .doc = "CA certificate(s) the MES server's (or the broker's) certificate must chain to; for MQTT it turns TLS on." },
	{ "mes.tls_cert", SK_STRING, SK_FILE, 1, 4095, .def = "",
	  .doc = "Client certificate for mutual TLS (with `tls_key`)." },
	{ "mes.tls_key", SK_STRING, SK_FILE, 1, 4095, .def = "",
	  .doc = "The client certificate's key." },
	{ "mes.timeout_ms", SK_INT, 0, 100, 600000, .def = "10000",
	  .doc = "Longest wait for one POST (connect and answer)." },
	{ "mes.retries", SK_INT, 0, 1, 100, .def = "3",
	  .doc = "Attempts per unit in one pass (0.5 s, 1 s, ... apart)." },
	{ "mes.batch", SK_INT, 0, 1, 1000, .def = "100",
	  .doc = "Units read from the records at a time." },
	{ "mes.interval_ms", SK_INT, 0, 10, 3600000, .def = "5000",
	  .doc = "Pause between passes of `mes send --follow`." },
	{ "mes.backoff_max_ms", SK_INT, 0, 10, 3600000, .def = "60000",
	  .doc = "Longest wait between retries while the MES is down." },
};
const size_t st_config_schema_len = ST_ARRAY_SIZE(st_config_schema);

const st_schema_key st_profile_schema[] = {
	{ "name", SK_STRING, R, 1, 63, .doc = "Product name (`${product}` in the subject)." },
	{ "version", SK_STRING, 0, 1, 31, .def = "",
	  .doc = "Profile version, recorded with the run; profiles written before "
		 "it existed load as unversioned." },
	{ "key_mode", SK_ENUM, 0, .choices = "device|inject|esp_secure_cert",
	  .def = "device",
	  .doc = "`device`: the device makes its key; `inject`: the HSM makes it and "
		 "sends it wrapped for the device's transport key; `esp_secure_cert`: "
		 "an ESP32-C3 derives it from an eFuse HMAC key the station burns "
		 "(docs/esp32.md, \"Identity\")." },
	{ "algorithms", SK_GROUP, 0, .doc = "Key algorithms." },
	{ "algorithms.device_key", SK_ENUM, 0, .choices = "p256", .def = "p256",
	  .doc = "The device identity key (the programmer protocol carries P-256)." },
	{ "algorithms.ca_key", SK_ENUM, 0, .choices = "p256|p384|rsa3072|ed25519", .def = "",
	  .doc = "Key type the issuing CA must have (its signature: ECDSA with SHA-256 "
		 "or SHA-384, RSA PKCS#1 v1.5 with SHA-256, Ed25519); a run refuses "
		 "another CA.  None: any." },
	{ "certificate", SK_GROUP, R, .doc = "The device certificate template." },
	{ "certificate.organization", SK_STRING, 0, 1, 127, .def = "",
	  .doc = "O of the subject when no `subject` template is given." },
	{ "certificate.subject", SK_STRING, 0, 1, 511, .def = "",
	  .doc = "Subject template: `${uid}`, `${serial}`, `${product}`, `${model}`; "
		 "one of `subject` or `organization` is required." },
	{ "certificate.validity_days", SK_INT, 0, 1, 36500, .def = "",
	  .doc = "Validity; required unless `validity = \"no-expiry\"`." },
	{ "certificate.validity", SK_ENUM, 0, .choices = "no-expiry", .def = "",
	  .doc = "IEEE 802.1AR notAfter 99991231235959Z." },
	{ "certificate.key_usage", SK_STRING, 0, 0, 127, .def = "critical,digitalSignature",
	  .doc = "keyUsage in openssl.cnf syntax (\"\" for none)." },
	{ "certificate.extended_key_usage", SK_STRING, 0, 0, 255,
	  .def = "clientAuth,serverAuth",
	  .doc = "extendedKeyUsage in openssl.cnf syntax (\"\" for none)." },
	{ "certificate.hardware_module_name", SK_STRING, 0, 1, 63, .def = "",
	  .doc = "802.1AR hardwareModuleName hwType OID (dotted); hwSerialNum is the device ID." },
	{ "certificate.crl_url", SK_STRING, 0, 1, 255, .def = "",
	  .doc = "CRL distribution point." },
	{ "certificate.ocsp_url", SK_STRING, 0, 1, 255, .def = "",
	  .doc = "OCSP responder (authorityInfoAccess)." },
	{ "certificate.issuer", SK_STRING, 0, 1, 127, .def = "",
	  .doc = "Label of the issuing CA in the token, or an RFC 7512 URI naming it "
		 "(`pkcs11:object=LABEL`) (else `hsm.ca_key`, else the newest valid)." },
	{ "certificate.ca_renewal_days", SK_INT, 0, 0, 3650, .def = "30",
	  .doc = "Renewal window: warn when the issuing CA has fewer days left." },
	{ "root_of_trust", SK_GROUP, R, .doc = "The secure-boot root of trust." },
	{ "root_of_trust.sha256", SK_STRING, 0, .check = check_hex64, .def = "",
	  .doc = "SHA-256 of the secure-boot public key (DER SubjectPublicKeyInfo); "
		 "with a `firmware` group it is computed from `firmware.secure_boot_key` "
		 "(leave it out, or it must agree).  One of the two is required." },
	{ "root_of_trust.fuse_bank", SK_INT, 0, 0, 255, .def = "0",
	  .doc = "Bank of the one-field plan used when there is no `fuses` group." },
	{ "fuses", SK_GROUP, 0, .doc = "The fuse plan (docs/fuses.md)." },
	{ "fuses.conditions", SK_GROUP, R, .doc = "Programming conditions for any burn." },
	{ "fuses.conditions.vpp_mv", SK_NUMBERS, R, 0, 100000, 2,
	  .doc = "[min, max] programming voltage, mV." },
	{ "fuses.conditions.temp_c", SK_NUMBERS, R, -273, 1000, 2,
	  .doc = "[min, max] die temperature, °C." },
	{ "fuses.plan", SK_LIST, R, 1, 16,
	  .doc = "Fields in burn order: data, then write-protect, then at most one "
		 "lifecycle step (the lifecycle steps of the unit)." },
	{ "fuses.plan[].name", SK_STRING, R, 1, 31, .doc = "Field name (in the records)." },
	{ "fuses.plan[].kind", SK_ENUM, 0, .choices = "data|write-protect|lifecycle",
	  .def = "data", .doc = "What the field is." },
	{ "fuses.plan[].bank", SK_INT, 0, 0, 255, .def = "", .doc = "Fuse bank." },
	{ "fuses.plan[].word", SK_INT, 0, 0, 7, .def = "", .doc = "First 4-byte word in the bank." },
	{ "fuses.plan[].words", SK_INT, 0, 1, 8, .def = "1",
	  .doc = "Words of a `root_of_trust` field." },
	{ "fuses.plan[].source", SK_STRING, 0, 1, 23, .def = "",
	  .doc = "`root_of_trust` (the hash above; never typed by an operator)." },
	{ "fuses.plan[].bits", SK_INTS, 0, 0, 31, 2,
	  .doc = "[low, high] bit range of a constant." },
	{ "fuses.plan[].value", SK_INT, 0, .def = "",
	  .doc = "The constant, fitting `bits`." },
	{ "fuses.plan[].state", SK_ENUM, 0, .choices = "provisioned|locked", .def = "",
	  .doc = "Lifecycle state of a `lifecycle` step." },
	{ "firmware", SK_GROUP, 0,
	  .doc = "Signed images written to each unit, their SBOMs, and the secure-boot "
		 "key (docs/firmware.md).  Relative paths are relative to the profile's "
		 "directory." },
	{ "firmware.format", SK_ENUM, 0, .choices = "station|esp32-sbv2",
	  .def = "station",
	  .doc = "How images are signed: `station` (a detached ECDSA P-256 FILE.sig) "
		 "or `esp32-sbv2` (Espressif Secure Boot V2, RSA-3072 signature "
		 "sector at the image's end; docs/esp32.md)." },
	{ "firmware.secure_boot_key", SK_STRING, R, 1, 4095,
	  .doc = "PEM public key the images are signed with (P-256; RSA-3072 for "
		 "`esp32-sbv2`); the root-of-trust hash is SHA-256 of its DER form "
		 "(for `esp32-sbv2` the Secure Boot V2 key digest)." },
	{ "firmware.secure_boot_key_sha256", SK_STRING, R, .check = check_hex64,
	  .doc = "SHA-256 of the key file (`sha256sum`): the profile's signature "
		 "covers it." },
	{ "firmware.images", SK_LIST, R, 1, 4, .doc = "The images, in write order." },
	{ "firmware.images[].name", SK_STRING, R, 1, 31,
	  .doc = "Image name (records, component queries)." },
	{ "firmware.images[].version", SK_STRING, R, 1, 31, .doc = "Image version." },
	{ "firmware.images[].file", SK_STRING, R, 1, 4095,
	  .doc = "The image; its signature is FILE.sig (DER ECDSA P-256 over SHA-256), "
		 "or, for `esp32-sbv2`, inside it." },
	{ "firmware.images[].sha256", SK_STRING, R, .check = check_hex64,
	  .doc = "SHA-256 of the image file." },
	{ "firmware.images[].slot", SK_INT, R, 0, 255, .doc = "Target image slot." },
	{ "firmware.images[].address", SK_INT, 0, 0, 0xffffffffLL, .def = "0",
	  .doc = "Flash address, for targets that place images by address "
		 "(`esp32-sbv2`: the bootloader at 0, apps 64 KiB-aligned)." },
	{ "firmware.images[].sbom", SK_STRING, R, 1, 4095,
	  .doc = "CycloneDX JSON SBOM of the image." },
	{ "firmware.images[].sbom_sha256", SK_STRING, R, .check = check_hex64,
	  .doc = "SHA-256 of the SBOM file." },
	{ "tpm2", SK_GROUP, 0, .doc = "Where a TPM 2.0 target keeps its identity (docs/tpm2.md)." },
	{ "tpm2.key_handle", SK_INT, 0, .def = "0x81020000",
	  .doc = "Persistent handle of the identity key (0x81......)." },
	{ "tpm2.cert_nv", SK_INT, 0, .def = "0x01c10000", .doc = "NV index of the certificate." },
	{ "tpm2.rot_nv", SK_INT, 0, .def = "0x01c10001",
	  .doc = "Write-once NV index of the root-of-trust hash." },
	{ "esp32", SK_GROUP, 0, .doc = "How an ESP32-C3 target is locked (docs/esp32.md)." },
	{ "esp32.lock", SK_ENUM, 0, .choices = "secure_download|dis_download_mode",
	  .def = "secure_download",
	  .doc = "The lifecycle lock: `ENABLE_SECURITY_DOWNLOAD` (Secure Download "
		 "Mode) or `DIS_DOWNLOAD_MODE` (the loader never answers again)." },
	{ "quota", SK_GROUP, 0, .doc = "Quota rules." },
	{ "quota.require_work_order", SK_BOOL, 0, .def = "false",
	  .doc = "Refuse a batch run without `--work-order` (units then come from its quota)." },
};
const size_t st_profile_schema_len = ST_ARRAY_SIZE(st_profile_schema);

#undef R

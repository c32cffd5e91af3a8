# Product profile for the demo / test unit "demo-sensor" (libconfig syntax).
# In production a profile is signed by engineering; the station takes the
# root-of-trust hash from here and never from an operator.
# Every setting is documented in docs/configuration.md; check a profile
# with `station config check --profile FILE`.
name = "demo-sensor";
version = "1.0";
key_mode = "device";             # or "inject": the HSM makes the key, sent wrapped
algorithms: { device_key = "p256"; };

certificate: {
  organization = "Example Devices Ltd";
  # Subject template: ${uid}, ${serial} (the device ID, hex), ${product}
  # (this profile's name), ${model} (what the device reports).
  subject = "O=Example Devices Ltd, OU=${product}, CN=${uid}, serialNumber=${serial}";
  validity_days = 7300;          # or: validity = "no-expiry"; (IEEE 802.1AR)
  key_usage = "critical,digitalSignature";
  extended_key_usage = "clientAuth,serverAuth";
  # IEEE 802.1AR hardwareModuleName in the SAN: the hwType OID (an example
  # private-enterprise arc here; use your own), hwSerialNum = the device ID.
  hardware_module_name = "1.3.6.1.4.1.55555.1.1";
  # crl_url = "http://pki.example.com/line1.crl";
  # ocsp_url = "http://ocsp.example.com";
  # issuer = "issuing-ca";       # which CA in the token; default: newest valid
  ca_renewal_days = 30;          # warn when the CA has fewer days left
};

root_of_trust: {
  # SHA-256 of the DER SubjectPublicKeyInfo of the secure-boot key
  # profiles/demo-secureboot.pub.pem:
  #   openssl pkey -pubin -in demo-secureboot.pub.pem -outform DER | sha256sum
  sha256 = "2622102199f06fad94b827703f16e2998a2260f77f4e3210c2dae769ce1ca586";
  fuse_bank = 0;
};

# The fuse plan (docs/fuses.md): data fields, then write-protect, then the
# lifecycle lock; each field gets words of its own (a word burns once).
fuses: {
  conditions: { vpp_mv = [2375, 2625]; temp_c = [0, 70]; };
  plan = (
    { name = "rot-hash";     bank = 0; word = 0; words = 8; source = "root_of_trust"; },
    { name = "secure-boot";  bank = 1; word = 0; bits = [0, 0]; value = 1; },
    { name = "jtag-disable"; bank = 1; word = 1; bits = [0, 3]; value = 0xF; },
    { name = "rot-wp"; kind = "write-protect"; bank = 3; word = 0; bits = [0, 1]; value = 3; },
    { name = "lock"; kind = "lifecycle"; state = "locked"; }
  );
};

# Quota rules: with require_work_order a batch run needs --work-order.
quota: { require_work_order = false; };

# Product profile for an ESP32-C3 unit (libconfig syntax), programmed through
# the chip's ROM serial loader: slot URI esp32:/dev/ttyUSB0 (docs/esp32.md).
# Every setting is documented in docs/configuration.md; check a profile
# with `station config check --profile FILE`.  A profile runs only signed
# (`station profile sign`, docs/profiles.md).
name = "demo-esp32c3";
version = "1.0";
# The identity: esp_secure_cert's HMAC-derived ECDSA P-256 key (docs/esp32.md,
# "Identity"): the station draws the eFuse HMAC key from the HSM, burns it
# read-protected into BLOCK_KEY1 and wipes it; the factory app proves
# possession and attests (docs/esp32.md, "The factory app").
key_mode = "esp_secure_cert";
algorithms: { device_key = "p256"; };

certificate: {
  organization = "Example Devices Ltd";
  subject = "O=Example Devices Ltd, OU=${product}, CN=${uid}, serialNumber=${serial}";
  validity_days = 7300;
  key_usage = "critical,digitalSignature";
  extended_key_usage = "clientAuth,serverAuth";
  hardware_module_name = "1.3.6.1.4.1.55555.1.2";
  ca_renewal_days = 30;
};

root_of_trust: {
  # The Secure Boot V2 public-key digest of the RSA-3072 secure-boot key
  # profiles/esp32c3-secureboot.pub.pem, as Espressif defines it (SHA-256
  # over the key part of a signature block: n, e, R^2 mod n, -1/n mod 2^32;
  # not the SHA-256 of the DER key):
  #   espsecure.py digest_sbv2_public_key --keyfile esp32c3-secureboot.pub.pem \
  #     --output digest.bin && xxd -p -c 64 digest.bin
  sha256 = "40a8943268d352843510c5a81a15f2d8ac6270249e77313b2f8e4a4883af5354";
};

# The ESP32-C3 eFuse plan (docs/esp32.md, "The fuse plan").  A bank is an
# eFuse block (0..10), a word and its bits are as espefuse's
# efuse_defs/esp32c3.yaml places the field (word 0 of BLOCK0 is WR_DIS,
# words 1..5 are RD_REPEAT_DATA0..4).  BLOCK0 is burned bit by bit, so its
# fields share words; BLOCK_KEY0 (bank 4) is RS-coded and burned once, whole.
fuses: {
  # The C3's own eFuse controller makes the programming voltage and timing
  # (the driver sets it up as espefuse does); the station measures nothing
  # here, so this window is documentation: the C3's supply and operating
  # range.
  conditions: { vpp_mv = [3000, 3600]; temp_c = [-40, 105]; };
  plan = (
    # BLOCK_KEY0 <- the Secure Boot V2 key digest
    { name = "sb-digest";          bank = 4; word = 0; words = 8; source = "root_of_trust"; },
    # KEY_PURPOSE_0 = SECURE_BOOT_DIGEST0 (9)
    { name = "key-purpose-0";      bank = 0; word = 2; bits = [24, 27]; value = 9; },
    # SECURE_BOOT_EN
    { name = "secure-boot-en";     bank = 0; word = 3; bits = [20, 20]; value = 1; },
    # DIS_USB_JTAG, DIS_DOWNLOAD_ICACHE, SOFT_DIS_JTAG (all three bits:
    # odd = disabled), DIS_PAD_JTAG (hard)
    { name = "dis-usb-jtag";       bank = 0; word = 1; bits = [9, 9]; value = 1; },
    { name = "dis-download-icache"; bank = 0; word = 1; bits = [10, 10]; value = 1; },
    { name = "soft-dis-jtag";      bank = 0; word = 1; bits = [16, 18]; value = 7; },
    { name = "dis-pad-jtag";       bank = 0; word = 1; bits = [19, 19]; value = 1; },
    # WR_DIS bit 23: BLOCK_KEY0; WR_DIS bit 8: KEY_PURPOSE_0
    { name = "wp-key0";         kind = "write-protect"; bank = 0; word = 0; bits = [23, 23]; value = 1; },
    { name = "wp-key-purpose-0"; kind = "write-protect"; bank = 0; word = 0; bits = [8, 8]; value = 1; },
    # The lock: ENABLE_SECURITY_DOWNLOAD (Secure Download Mode), last.
    { name = "lock"; kind = "lifecycle"; state = "locked"; }
  );
};

# The signed images (Secure Boot V2, RSA-3072 signature sector after each
# image), written and verified per unit; the partition table (0x8000) and
# esp_secure_cert (0xD000) are written by the identity step.  The example
# files here were signed with a key that was thrown away (the private key
# is never in the repository); scripts/esp32c3-firmware.sh DIR makes a new
# key, new signed images and this profile with their digests, as `make
# demo-esp32` and tests/test_esp32_e2e.c do.
firmware: {
  format = "esp32-sbv2";
  secure_boot_key = "esp32c3-secureboot.pub.pem";
  secure_boot_key_sha256 = "4db134fc3a835103f47ed33933c8bd0f0e72e858e8fb752f4df4dd42ef0b1719";
  images = (
    { name = "bootloader"; version = "5.1"; file = "esp32c3-bootloader.bin";
      sha256 = "1c2730eb60a531e5eef1523fc3a8a236c640985a353ec07f23935336384d1159";
      slot = 0; address = 0x0;
      sbom = "esp32c3.cdx.json"; sbom_sha256 = "2939410b0d2bbb7aa411551ec8de2f7f976f8bc1354d54c71fff24bd90c66aae"; },
    { name = "factory-app"; version = "1.0.0"; file = "esp32c3-app.bin";
      sha256 = "de547001a59b08f98c1b549857caf1e1bfc0a720826fa3c7c7a2434c50ce25af";
      slot = 1; address = 0x10000;
      sbom = "esp32c3.cdx.json"; sbom_sha256 = "2939410b0d2bbb7aa411551ec8de2f7f976f8bc1354d54c71fff24bd90c66aae"; }
  );
};

quota: { require_work_order = false; };

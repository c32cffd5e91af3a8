# Product profile for the demo / test unit "demo-sensor" (libconfig syntax).
# In production a profile is signed by engineering; the station takes the
# root-of-trust hash from here and never from an operator.
name = "demo-sensor";

certificate: {
  organization = "Example Devices Ltd";
  validity_days = 7300;
};

root_of_trust: {
  # SHA-256 of the DER SubjectPublicKeyInfo of the secure-boot key
  # profiles/demo-secureboot.pub.pem:
  #   openssl pkey -pubin -in demo-secureboot.pub.pem -outform DER | sha256sum
  sha256 = "2622102199f06fad94b827703f16e2998a2260f77f4e3210c2dae769ce1ca586";
  fuse_bank = 0;
};

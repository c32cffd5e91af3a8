/* test_hsm.c — hsm/ against a fresh SoftHSM2 token per test.
 *
 * Criterion forks each test, so the fixture state below is per test
 * process; every test gets its own token directory. */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "base.h"
#include "hsm/hsm.h"
#include "tests/fixtures/fx_softhsm.h"

#define LABEL "st-test-token"
#define PIN "246813"
#define BAD_PIN "97531"

static char dir[64];
static hsm *h;

static void setup(void)
{
	cr_assert_eq(fx_softhsm_init(dir, sizeof(dir), LABEL, PIN), 0,
		     "SoftHSM fixture failed (see stderr)");
}

static void teardown(void)
{
	hsm_close(h);
	h = NULL;
	fx_rmtree(dir);
}

TestSuite(hsm, .init = setup, .fini = teardown, .timeout = 60);

/* Open the fixture token and log in, or fail the test with the cause. */
static void open_login(void)
{
	int err = hsm_open(FX_SOFTHSM_MODULE, LABEL, &h);

	cr_assert_eq(err, ST_OK, "hsm_open: %d %s", err, hsm_errmsg(h));
	err = hsm_login(h, PIN, strlen(PIN));
	cr_assert_eq(err, ST_OK, "hsm_login: %d %s", err, hsm_errmsg(h));
}

static hsm_session *session(void)
{
	hsm_session *s = NULL;
	int err = hsm_session_open(h, &s);

	cr_assert_eq(err, ST_OK, "hsm_session_open: %d %s", err,
		     hsm_errmsg(h));
	return s;
}

static EVP_PKEY *pkey_from_point(const uint8_t pt[HSM_P256_POINT_LEN])
{
	OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
	OSSL_PARAM *p = NULL;
	EVP_PKEY_CTX *c = NULL;
	EVP_PKEY *k = NULL;

	cr_assert(b);
	cr_assert(OSSL_PARAM_BLD_push_utf8_string(b,
			OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0));
	cr_assert(OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY,
			pt, HSM_P256_POINT_LEN));
	p = OSSL_PARAM_BLD_to_param(b);
	c = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	cr_assert(p && c);
	cr_assert_eq(EVP_PKEY_fromdata_init(c), 1);
	cr_assert_eq(EVP_PKEY_fromdata(c, &k, EVP_PKEY_PUBLIC_KEY, p), 1,
		     "HSM point is not a valid P-256 public key");
	EVP_PKEY_CTX_free(c);
	OSSL_PARAM_free(p);
	OSSL_PARAM_BLD_free(b);
	return k;
}

/* 1 when the raw r||s signature verifies over digest with point, else 0. */
static int verify_raw(const uint8_t pt[HSM_P256_POINT_LEN],
		      const uint8_t *digest, size_t dlen,
		      const uint8_t sig[HSM_P256_SIG_LEN])
{
	EVP_PKEY *k = pkey_from_point(pt);
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
	unsigned char *der = NULL;
	EVP_PKEY_CTX *vc;
	int derlen, ok;

	cr_assert(es && r && s);
	cr_assert_eq(ECDSA_SIG_set0(es, r, s), 1);
	derlen = i2d_ECDSA_SIG(es, &der);
	cr_assert_gt(derlen, 0);
	vc = EVP_PKEY_CTX_new(k, NULL);
	cr_assert(vc);
	cr_assert_eq(EVP_PKEY_verify_init(vc), 1);
	ok = EVP_PKEY_verify(vc, der, (size_t)derlen, digest, dlen) == 1;
	EVP_PKEY_CTX_free(vc);
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
	EVP_PKEY_free(k);
	return ok;
}

/* Run pkcs11-tool on the fixture token; a missing tool fails the test. */
static char *p11tool(const char *args)
{
	char cmd[1024], *out = NULL;
	size_t len = 0, cap = 0, n;
	char buf[1024];
	FILE *f;
	int st;

	snprintf(cmd, sizeof(cmd), "pkcs11-tool --module %s --token-label %s "
		 "--login --pin %s %s 2>&1", FX_SOFTHSM_MODULE, LABEL, PIN,
		 args);
	f = popen(cmd, "r");
	cr_assert(f, "popen pkcs11-tool");
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		if (len + n + 1 > cap) {
			cap = (len + n + 1) * 2;
			out = realloc(out, cap);
			cr_assert(out);
		}
		memcpy(out + len, buf, n);
		len += n;
	}
	st = pclose(f);
	if (!out)
		out = calloc(1, 1);
	cr_assert(out);
	out[len] = '\0';
	cr_assert_eq(st, 0, "pkcs11-tool failed (status %d; installed?):\n%s",
		     st, out);
	return out;
}

static int count(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = strstr(hay, needle); p;
	     p = strstr(p + 1, needle))
		n++;
	return n;
}

Test(hsm, open_login)
{
	open_login();
	cr_expect_str_empty(hsm_errmsg(h));
	cr_expect_null(hsm_pin_warning(h));
	/* logging in twice is not an error (CKR_USER_ALREADY_LOGGED_IN) */
	cr_expect_eq(hsm_login(h, PIN, strlen(PIN)), ST_OK, "%s",
		     hsm_errmsg(h));
}

Test(hsm, wrong_pin)
{
	int err = hsm_open(FX_SOFTHSM_MODULE, LABEL, &h);
	const char *msg, *warn;

	cr_assert_eq(err, ST_OK, "%s", hsm_errmsg(h));
	err = hsm_login(h, BAD_PIN, strlen(BAD_PIN));
	msg = hsm_errmsg(h);
	cr_expect_eq(err, ST_E_PIN, "got %d: %s", err, msg);
	cr_expect(strstr(msg, "C_Login"), "message: %s", msg);
	cr_expect(strstr(msg, "CKR_PIN_INCORRECT"), "message: %s", msg);
	cr_expect_null(strstr(msg, BAD_PIN), "PIN leaked into message");
	cr_expect_null(strstr(msg, PIN), "PIN leaked into message");

	warn = hsm_pin_warning(h);
	cr_expect_not_null(warn, "no warning after a wrong PIN");

	/* the right PIN still works: nothing was retried behind our back */
	cr_expect_eq(hsm_login(h, PIN, strlen(PIN)), ST_OK, "%s",
		     hsm_errmsg(h));
	cr_expect_null(hsm_pin_warning(h), "warning after good login");
}

Test(hsm, missing_token)
{
	int err = hsm_open(FX_SOFTHSM_MODULE, "no-such-token", &h);
	const char *msg = hsm_errmsg(h);

	cr_expect_eq(err, ST_E_NOTOKEN, "got %d: %s", err, msg);
	cr_expect(strstr(msg, "no token labelled 'no-such-token'"),
		  "message: %s", msg);
	cr_expect(strstr(msg, "tokens present: " LABEL), "message: %s", msg);
}

Test(hsm, missing_module)
{
	int err = hsm_open("/nonexistent/libnothing-pkcs11.so", LABEL, &h);
	const char *msg = hsm_errmsg(h);

	cr_expect_eq(err, ST_E_IO, "got %d: %s", err, msg);
	cr_expect(strstr(msg, "cannot load PKCS#11 module "
			 "/nonexistent/libnothing-pkcs11.so: "),
		  "message: %s", msg);
}

Test(hsm, bad_args)
{
	hsm_session *s = NULL;

	cr_expect_eq(hsm_open(FX_SOFTHSM_MODULE, NULL, &h), ST_E_INVAL);
	hsm_close(h);
	h = NULL;
	cr_expect_eq(hsm_open(FX_SOFTHSM_MODULE,
			      "a-label-that-is-longer-than-32-bytes", &h),
		     ST_E_INVAL);
	hsm_close(h);
	h = NULL;
	open_login();
	s = session();
	cr_expect_eq(hsm_keygen_p256(s, "", false, (uint8_t[65]){ 0 },
				     &(hsm_obj){ 0 }), ST_E_INVAL);
	cr_expect_eq(hsm_cert_store(s, "c", (const uint8_t *)"junk", 4),
		     ST_E_INVAL, "%s", hsm_session_errmsg(s));
	hsm_session_close(s);
}

Test(hsm, keygen_token_key_not_extractable)
{
	uint8_t pub[HSM_P256_POINT_LEN], again[HSM_P256_POINT_LEN];
	hsm_obj priv = 0, found = 0;
	hsm_session *s;
	char *out, *access;
	int err;

	open_login();
	s = session();
	err = hsm_keygen_p256(s, "ca-key", true, pub, &priv);
	cr_assert_eq(err, ST_OK, "keygen: %d %s", err, hsm_session_errmsg(s));
	cr_expect_eq(pub[0], 0x04);

	err = hsm_read_pubkey(s, "ca-key", again);
	cr_assert_eq(err, ST_OK, "read_pubkey: %s", hsm_session_errmsg(s));
	cr_expect_arr_eq(pub, again, sizeof(pub));
	err = hsm_find_privkey(s, "ca-key", &found);
	cr_expect_eq(err, ST_OK, "find_privkey: %s", hsm_session_errmsg(s));
	cr_expect_eq(found, priv);

	/* a second process sees the key's flags as the token stores them */
	out = p11tool("--list-objects --type privkey");
	cr_expect(strstr(out, "label:      ca-key"), "%s", out);
	access = strstr(out, "Access:");
	cr_assert(access, "no Access line:\n%s", out);
	cr_expect(strstr(access, "sensitive"), "%s", out);
	cr_expect(strstr(access, "never extractable"), "%s", out);
	cr_expect_eq(count(out, "extractable"), count(out, "never extractable"),
		     "private key is extractable:\n%s", out);
	free(out);
	hsm_session_close(s);
}

Test(hsm, token_key_survives_reopen)
{
	uint8_t pub[HSM_P256_POINT_LEN], again[HSM_P256_POINT_LEN];
	uint8_t dig[32], sig[HSM_P256_SIG_LEN];
	size_t siglen = 0;
	hsm_obj priv;
	hsm_session *s;

	open_login();
	s = session();
	cr_assert_eq(hsm_keygen_p256(s, "ca", true, pub, &priv), ST_OK, "%s",
		     hsm_session_errmsg(s));
	hsm_session_close(s);
	hsm_close(h);
	h = NULL;

	open_login();
	s = session();
	cr_assert_eq(hsm_find_privkey(s, "ca", &priv), ST_OK, "%s",
		     hsm_session_errmsg(s));
	cr_assert_eq(hsm_read_pubkey(s, "ca", again), ST_OK, "%s",
		     hsm_session_errmsg(s));
	cr_expect_arr_eq(pub, again, sizeof(pub));
	SHA256((const unsigned char *)"reopened", 8, dig);
	cr_assert_eq(hsm_sign_digest(s, priv, dig, sizeof(dig), sig, &siglen),
		     ST_OK, "%s", hsm_session_errmsg(s));
	cr_expect(verify_raw(again, dig, sizeof(dig), sig));
	hsm_session_close(s);
}

Test(hsm, sign_verify)
{
	uint8_t pub[HSM_P256_POINT_LEN], dig[32], sig[HSM_P256_SIG_LEN];
	size_t siglen = 0;
	hsm_obj priv;
	hsm_session *s;
	int err;

	open_login();
	s = session();
	err = hsm_keygen_p256(s, "unit-0001", false, pub, &priv);
	cr_assert_eq(err, ST_OK, "keygen: %s", hsm_session_errmsg(s));
	SHA256((const unsigned char *)"provision me", 12, dig);

	err = hsm_sign_digest(s, priv, dig, sizeof(dig), sig, &siglen);
	cr_assert_eq(err, ST_OK, "sign: %d %s", err, hsm_session_errmsg(s));
	cr_assert_eq(siglen, HSM_P256_SIG_LEN);
	cr_expect(verify_raw(pub, dig, sizeof(dig), sig),
		  "HSM signature does not verify");

	dig[0] ^= 0x01;
	cr_expect_not(verify_raw(pub, dig, sizeof(dig), sig),
		      "signature verified over a different digest");
	dig[0] ^= 0x01;
	sig[40] ^= 0x80;
	cr_expect_not(verify_raw(pub, dig, sizeof(dig), sig),
		      "corrupted signature verified");

	/* a bad handle is reported with its PKCS#11 cause */
	err = hsm_sign_digest(s, 0xdeadbeef, dig, sizeof(dig), sig, &siglen);
	cr_expect_eq(err, ST_E_HSM, "got %d", err);
	cr_expect(strstr(hsm_session_errmsg(s), "C_SignInit: CKR_"), "%s",
		  hsm_session_errmsg(s));
	hsm_session_close(s);
}

Test(hsm, keygen_needs_login)
{
	uint8_t pub[HSM_P256_POINT_LEN];
	hsm_obj priv;
	hsm_session *s;
	int err;

	cr_assert_eq(hsm_open(FX_SOFTHSM_MODULE, LABEL, &h), ST_OK, "%s",
		     hsm_errmsg(h));
	s = session();
	err = hsm_keygen_p256(s, "k", false, pub, &priv);
	cr_expect_eq(err, ST_E_HSM, "got %d", err);
	cr_expect(strstr(hsm_session_errmsg(s), "C_GenerateKeyPair: "
			 "CKR_USER_NOT_LOGGED_IN"), "%s",
		  hsm_session_errmsg(s));
	hsm_session_close(s);
}

Test(hsm, keygen_exists)
{
	uint8_t pub[HSM_P256_POINT_LEN], pub2[HSM_P256_POINT_LEN];
	hsm_obj priv, priv2;
	hsm_session *s;
	int err;

	open_login();
	s = session();
	cr_assert_eq(hsm_keygen_p256(s, "ca", true, pub, &priv), ST_OK, "%s",
		     hsm_session_errmsg(s));
	err = hsm_keygen_p256(s, "ca", true, pub2, &priv2);
	cr_expect_eq(err, ST_E_EXISTS, "got %d: %s", err,
		     hsm_session_errmsg(s));
	cr_expect(strstr(hsm_session_errmsg(s), "'ca'"), "%s",
		  hsm_session_errmsg(s));
	/* the original key is untouched */
	cr_expect_eq(hsm_read_pubkey(s, "ca", pub2), ST_OK, "%s",
		     hsm_session_errmsg(s));
	cr_expect_arr_eq(pub, pub2, sizeof(pub));

	/* session keys are per unit and not checked */
	cr_expect_eq(hsm_keygen_p256(s, "unit", false, pub, &priv), ST_OK);
	cr_expect_eq(hsm_keygen_p256(s, "unit", false, pub2, &priv2), ST_OK);
	cr_expect_neq(priv, priv2);
	hsm_session_close(s);
}

Test(hsm, not_found)
{
	uint8_t pub[HSM_P256_POINT_LEN], *der = (uint8_t *)"x";
	size_t len = 1;
	hsm_obj priv;
	hsm_session *s;

	open_login();
	s = session();
	cr_expect_eq(hsm_find_privkey(s, "absent", &priv), ST_E_NOTFOUND);
	cr_expect(strstr(hsm_session_errmsg(s), "'absent'"));
	cr_expect_eq(hsm_read_pubkey(s, "absent", pub), ST_E_NOTFOUND);
	cr_expect_eq(hsm_cert_load(s, "absent", &der, &len), ST_E_NOTFOUND);
	cr_expect_null(der);
	cr_expect_eq(len, 0);
	hsm_session_close(s);
}

Test(hsm, random)
{
	uint8_t a[32], b[32], zero[32] = { 0 };
	hsm_session *s;

	open_login();
	s = session();
	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	cr_assert_eq(hsm_random(s, a, sizeof(a)), ST_OK, "%s",
		     hsm_session_errmsg(s));
	cr_assert_eq(hsm_random(s, b, sizeof(b)), ST_OK, "%s",
		     hsm_session_errmsg(s));
	cr_expect_arr_neq(a, b, sizeof(a));
	cr_expect_arr_neq(a, zero, sizeof(a));
	cr_expect_eq(hsm_random(s, a, 0), ST_OK);
	hsm_session_close(s);
}

/* A self-signed certificate made entirely in software. */
static uint8_t *make_cert(size_t *len)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *n;
	uint8_t *der = NULL;
	int dl;

	cr_assert(k && x);
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400L);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC,
				   (const unsigned char *)"Example Factory",
				   -1, -1, 0);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
				   (const unsigned char *)"Station Test CA",
				   -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509_set_pubkey(x, k);
	cr_assert_gt(X509_sign(x, k, EVP_sha256()), 0);
	dl = i2d_X509(x, &der);
	cr_assert_gt(dl, 0);
	*len = (size_t)dl;
	X509_free(x);
	EVP_PKEY_free(k);
	return der;
}

Test(hsm, cert_roundtrip)
{
	uint8_t *der, *back = NULL;
	size_t len, blen = 0;
	hsm_session *s;
	char *out;
	int err;

	open_login();
	s = session();
	der = make_cert(&len);
	err = hsm_cert_store(s, "ca-cert", der, len);
	cr_assert_eq(err, ST_OK, "store: %d %s", err, hsm_session_errmsg(s));
	err = hsm_cert_load(s, "ca-cert", &back, &blen);
	cr_assert_eq(err, ST_OK, "load: %d %s", err, hsm_session_errmsg(s));
	cr_assert_eq(blen, len);
	cr_expect_arr_eq(back, der, len);
	free(back);

	err = hsm_cert_store(s, "ca-cert", der, len);
	cr_expect_eq(err, ST_E_EXISTS, "second store: %d", err);

	/* CKA_SUBJECT was taken from the certificate */
	out = p11tool("--list-objects --type cert");
	cr_expect(strstr(out, "label:      ca-cert"), "%s", out);
	cr_expect(strstr(out, "CN=Station Test CA") ||
		  strstr(out, "CN = Station Test CA"), "%s", out);
	/* CKA_SERIAL_NUMBER (4242 = 0x1092) as pkcs11-tool reads it back, and
	 * CKA_ID = the label, as on the key pair ("ca-cert" in hex) */
	cr_expect(strstr(out, "serial:     1092"), "no CKA_SERIAL_NUMBER: %s", out);
	cr_expect(strstr(out, "ID:         63612d63657274"), "CKA_ID: %s", out);
	free(out);
	OPENSSL_free(der);
	hsm_session_close(s);
}

#define N_SIGS 200

struct signer {
	hsm_session *s;
	hsm_obj priv;
	uint8_t dig[N_SIGS][32];
	uint8_t sig[N_SIGS][HSM_P256_SIG_LEN];
	int err;
};

static void *sign_many(void *arg)
{
	struct signer *w = arg;
	size_t siglen;

	for (int i = 0; i < N_SIGS && !w->err; i++) {
		siglen = 0;
		w->err = hsm_sign_digest(w->s, w->priv, w->dig[i],
					 sizeof(w->dig[i]), w->sig[i], &siglen);
		if (!w->err && siglen != HSM_P256_SIG_LEN)
			w->err = -1000;
	}
	return NULL;
}

Test(hsm, two_threads_sign)
{
	static struct signer w[2];
	uint8_t pub[HSM_P256_POINT_LEN];
	pthread_t t[2];
	hsm_session *s;
	hsm_obj priv;

	open_login();
	s = session();
	cr_assert_eq(hsm_keygen_p256(s, "ca", true, pub, &priv), ST_OK, "%s",
		     hsm_session_errmsg(s));
	for (int k = 0; k < 2; k++) {
		w[k].s = session();
		cr_assert_eq(hsm_find_privkey(w[k].s, "ca", &w[k].priv), ST_OK);
		for (int i = 0; i < N_SIGS; i++) {
			char msg[32];

			snprintf(msg, sizeof(msg), "unit %d/%d", k, i);
			SHA256((const unsigned char *)msg, strlen(msg),
			       w[k].dig[i]);
		}
	}
	for (int k = 0; k < 2; k++)
		cr_assert_eq(pthread_create(&t[k], NULL, sign_many, &w[k]), 0);
	for (int k = 0; k < 2; k++)
		pthread_join(t[k], NULL);
	for (int k = 0; k < 2; k++) {
		cr_assert_eq(w[k].err, ST_OK, "thread %d: %d %s", k, w[k].err,
			     hsm_session_errmsg(w[k].s));
		for (int i = 0; i < N_SIGS; i++)
			cr_assert(verify_raw(pub, w[k].dig[i], 32, w[k].sig[i]),
				  "thread %d signature %d does not verify",
				  k, i);
		hsm_session_close(w[k].s);
	}
	hsm_session_close(s);
}

/* Sign with hsm_sign the way the station does for type t and verify the
 * result with OpenSSL under the SubjectPublicKeyInfo the token reports. */
static void sign_and_verify(hsm_keytype t, const char *label, bool token)
{
	static const uint8_t sha256_info[] = {
		0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03,
		0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20
	};
	const uint8_t msg[] = "station hsm_sign test message";
	uint8_t *spki = NULL, sig[HSM_MAX_SIG], in[64 + sizeof(sha256_info)];
	const uint8_t *p;
	size_t spkilen = 0, siglen = 0, inlen = 0;
	unsigned int mdlen = 0;
	hsm_keytype got = 0;
	hsm_session *s;
	hsm_obj priv;
	EVP_PKEY *k;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int err, ok;

	open_login();
	s = session();
	err = hsm_keygen(s, t, label, token, &priv);
	cr_assert_eq(err, ST_OK, "%s keygen: %s", hsm_keytype_name(t), hsm_session_errmsg(s));
	err = hsm_pubkey_spki(s, label, &spki, &spkilen, &got);
	cr_assert_eq(err, ST_OK, "spki: %s", hsm_session_errmsg(s));
	cr_assert_eq(got, t);
	p = spki;
	k = d2i_PUBKEY(NULL, &p, (long)spkilen);
	cr_assert_not_null(k, "SPKI does not parse");
	if (t == HSM_KEY_ED25519) {
		err = hsm_sign(s, priv, HSM_SIG_EDDSA, msg, sizeof(msg), sig, sizeof(sig), &siglen);
		cr_assert_eq(err, ST_OK, "%s", hsm_session_errmsg(s));
		cr_assert_eq(siglen, 64);
		cr_assert_eq(EVP_DigestVerifyInit(md, NULL, NULL, NULL, k), 1);
		ok = EVP_DigestVerify(md, sig, siglen, msg, sizeof(msg));
	} else if (t == HSM_KEY_RSA3072) {
		memcpy(in, sha256_info, sizeof(sha256_info));
		SHA256(msg, sizeof(msg), in + sizeof(sha256_info));
		err = hsm_sign(s, priv, HSM_SIG_RSA_PKCS, in, sizeof(sha256_info) + 32, sig,
			       sizeof(sig), &siglen);
		cr_assert_eq(err, ST_OK, "%s", hsm_session_errmsg(s));
		cr_assert_eq(siglen, 384);
		cr_assert_eq(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k), 1);
		ok = EVP_DigestVerify(md, sig, siglen, msg, sizeof(msg));
	} else {
		const EVP_MD *h384 = t == HSM_KEY_P384 ? EVP_sha384() : EVP_sha256();
		size_t half;
		ECDSA_SIG *es = ECDSA_SIG_new();
		unsigned char *der = NULL;
		int derlen;

		cr_assert_eq(EVP_Digest(msg, sizeof(msg), in, &mdlen, h384, NULL), 1);
		inlen = mdlen;
		err = hsm_sign(s, priv, HSM_SIG_ECDSA, in, inlen, sig, sizeof(sig), &siglen);
		cr_assert_eq(err, ST_OK, "%s", hsm_session_errmsg(s));
		cr_assert_eq(siglen, t == HSM_KEY_P384 ? 96u : 64u);
		half = siglen / 2;
		ECDSA_SIG_set0(es, BN_bin2bn(sig, (int)half, NULL),
			       BN_bin2bn(sig + half, (int)half, NULL));
		derlen = i2d_ECDSA_SIG(es, &der);
		cr_assert_eq(EVP_DigestVerifyInit(md, NULL, h384, NULL, k), 1);
		ok = EVP_DigestVerify(md, der, (size_t)derlen, msg, sizeof(msg));
		OPENSSL_free(der);
		ECDSA_SIG_free(es);
	}
	cr_assert_eq(ok, 1, "%s signature does not verify", hsm_keytype_name(t));
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(k);
	free(spki);
	hsm_session_close(s);
}

Test(hsm, p256_sign_verify_spki)
{
	sign_and_verify(HSM_KEY_P256, "k256", false);
}

Test(hsm, p384_sign_verify_spki)
{
	sign_and_verify(HSM_KEY_P384, "k384", true);
}

Test(hsm, rsa3072_sign_verify_spki, .timeout = 120)
{
	sign_and_verify(HSM_KEY_RSA3072, "krsa", true);
}

Test(hsm, ed25519_sign_verify_spki)
{
	sign_and_verify(HSM_KEY_ED25519, "ked", false);
}

Test(hsm, keytype_names_parse)
{
	hsm_keytype t;

	cr_assert_eq(hsm_keytype_parse("p384", &t), ST_OK);
	cr_assert_eq(t, HSM_KEY_P384);
	cr_assert_eq(hsm_keytype_parse("ed448", &t), ST_E_INVAL);
	cr_assert_str_eq(hsm_keytype_name(HSM_KEY_RSA3072), "RSA-3072");
}

Test(hsm, mechanism_check_names_every_missing_one)
{
	hsm_mech ok[] = { HSM_M_EC_KEY_PAIR_GEN, HSM_M_ECDSA };
	hsm_mech need[] = { HSM_M_ECDSA, HSM_M_ECDH1_DERIVE, HSM_M_AES_KEY_WRAP_PAD,
			    HSM_M_EDDSA, HSM_M_RSA_KEY_PAIR_GEN, HSM_M_RSA_PKCS,
			    HSM_M_EDDSA };
	char conf[128];
	FILE *f;

	snprintf(conf, sizeof(conf), "%s/softhsm2.conf", dir);
	f = fopen(conf, "a");
	cr_assert_not_null(f);
	fputs("slots.mechanisms = CKM_EC_KEY_PAIR_GEN,CKM_ECDSA,CKM_ECDH1_DERIVE\n", f);
	fclose(f);
	open_login();
	cr_assert_eq(hsm_check_mechanisms(h, ok, 2), ST_OK, "%s", hsm_errmsg(h));
	cr_assert_eq(hsm_check_mechanisms(h, need, ST_ARRAY_SIZE(need)), ST_E_HSM);
	/* Each missing one named once, CKM_RSA_PKCS despite its longer cousin. */
	cr_assert(strstr(hsm_errmsg(h), "does not offer CKM_AES_KEY_WRAP_PAD, CKM_EDDSA, "
			 "CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_RSA_PKCS, which"), "%s",
		  hsm_errmsg(h));
	cr_assert_null(strstr(hsm_errmsg(h), "CKM_ECDH1_DERIVE"), "%s", hsm_errmsg(h));
}

Test(hsm, list_labels_of_certs_and_keys)
{
	hsm_session *s;
	hsm_obj priv;
	char **labels = NULL;
	size_t n = 0, len;
	uint8_t *der;

	open_login();
	s = session();
	cr_assert_eq(hsm_keygen(s, HSM_KEY_P256, "ca-a", true, &priv), ST_OK);
	cr_assert_eq(hsm_keygen(s, HSM_KEY_P384, "ca-b", true, &priv), ST_OK);
	der = make_cert(&len);
	cr_assert_eq(hsm_cert_store(s, "ca-b", der, len), ST_OK, "%s", hsm_session_errmsg(s));
	OPENSSL_free(der);
	cr_assert_eq(hsm_list_labels(s, true, &labels, &n), ST_OK);
	cr_assert_eq(n, 2);
	cr_assert(!strcmp(labels[0], "ca-a") || !strcmp(labels[1], "ca-a"));
	hsm_labels_free(labels, n);
	cr_assert_eq(hsm_list_labels(s, false, &labels, &n), ST_OK);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(labels[0], "ca-b");
	hsm_labels_free(labels, n);
	hsm_session_close(s);
}

/* A shared partition holds more objects than one C_FindObjects call
 * returns: every one is listed (the listing once stopped at 64). */
Test(hsm, list_labels_has_no_cap)
{
	hsm_session *s;
	char **labels = NULL, l[32];
	size_t n = 0, len;
	uint8_t *der;
	bool seen[70] = { false };

	open_login();
	s = session();
	der = make_cert(&len);
	for (int i = 0; i < 70; i++) {
		snprintf(l, sizeof(l), "cert-%d", i);
		cr_assert_eq(hsm_cert_store(s, l, der, len), ST_OK, "%s",
			     hsm_session_errmsg(s));
	}
	OPENSSL_free(der);
	cr_assert_eq(hsm_list_labels(s, false, &labels, &n), ST_OK, "%s",
		     hsm_session_errmsg(s));
	cr_assert_eq(n, 70, "listed %zu of 70 certificates", n);
	for (size_t i = 0; i < n; i++) {
		int k = -1;

		cr_assert_eq(sscanf(labels[i], "cert-%d", &k), 1);
		cr_assert(k >= 0 && k < 70 && !seen[k], "%s", labels[i]);
		seen[k] = true;
	}
	hsm_labels_free(labels, n);
	hsm_session_close(s);
}

/* SoftHSM has no CKM_AES_KEY_WRAP_KWP: its 0x210A is chosen, and the
 * known-answer test proves it is RFC 5649; asking for KWP names what to do. */
Test(hsm, inject_check_picks_softhsm_pad_and_proves_rfc5649)
{
	open_login();
	cr_assert_eq(hsm_inject_check(h, HSM_WRAP_AUTO), ST_OK, "%s", hsm_errmsg(h));
	cr_assert_str_eq(hsm_inject_mech(h), "CKM_AES_KEY_WRAP_PAD");
	cr_assert_eq(hsm_inject_check(h, HSM_WRAP_KWP), ST_E_HSM);
	cr_assert_null(hsm_inject_mech(h));
	cr_assert(strstr(hsm_errmsg(h), "key_mode = \"device\""), "%s", hsm_errmsg(h));
	cr_assert(strstr(hsm_errmsg(h), "CKM_AES_KEY_WRAP_KWP"), "%s", hsm_errmsg(h));
}

/* The start-up check accepts either RFC 5649 mechanism, and a token with
 * neither is told to use device key mode rather than "another key type". */
Test(hsm, mechanism_check_accepts_either_wrap_and_says_what_to_do)
{
	hsm_mech need[] = { HSM_M_ECDSA, HSM_M_AES_KEY_WRAP_5649 };
	char conf[128];
	FILE *f;

	open_login();
	cr_assert_eq(hsm_check_mechanisms(h, need, 2), ST_OK, "%s", hsm_errmsg(h));
	hsm_close(h);
	h = NULL;
	snprintf(conf, sizeof(conf), "%s/softhsm2.conf", dir);
	f = fopen(conf, "a");
	cr_assert_not_null(f);
	fputs("slots.mechanisms = CKM_EC_KEY_PAIR_GEN,CKM_ECDSA,CKM_ECDH1_DERIVE\n", f);
	fclose(f);
	open_login();
	cr_assert_eq(hsm_check_mechanisms(h, need, 2), ST_E_HSM);
	cr_assert(strstr(hsm_errmsg(h), "key_mode = \"device\""), "%s", hsm_errmsg(h));
	cr_assert_null(strstr(hsm_errmsg(h), "another key type"), "%s", hsm_errmsg(h));
	cr_assert_eq(hsm_inject_check(h, HSM_WRAP_AUTO), ST_E_HSM);
	cr_assert(strstr(hsm_errmsg(h), "neither CKM_AES_KEY_WRAP_KWP nor"), "%s",
		  hsm_errmsg(h));
}

/* Inject mode at the PKCS#11 level: the device key is not readable, its
 * wrapped form opens with ECDH(transport, ephemeral) + AES-KWP exactly as
 * a device would do it (done here with OpenSSL), and after destruction the
 * session holds no device key. */
Test(hsm, inject_wrap_unwraps_on_the_device_side_and_leaves_nothing)
{
	EVP_PKEY *transport = EVP_EC_gen("P-256"), *eph, *devkey;
	uint8_t tpub[65], ephpt[65], devpub[65], wrapped[512], kek[32], plain[600];
	uint8_t got[65];
	size_t tlen = 0, wlen = 0, keklen = 32, glen = 0;
	int plen = 0, flen = 0;
	const uint8_t *pp;
	hsm_obj priv, pubobj;
	hsm_session *s;
	EVP_PKEY_CTX *dc;
	EVP_CIPHER_CTX *cc = EVP_CIPHER_CTX_new();
	char **labels = NULL;
	size_t nl = 0;
	bool found = false;

	open_login();
	s = session();
	cr_assert_eq(EVP_PKEY_get_octet_string_param(transport, "encoded-pub-key", tpub,
						     sizeof(tpub), &tlen), 1);
	cr_assert_eq(hsm_inject_keygen(s, &priv, &pubobj, devpub), ST_OK, "%s",
		     hsm_session_errmsg(s));
	cr_assert(!hsm_value_readable(s, priv), "CKA_VALUE of the device key is readable");
	cr_assert_eq(hsm_inject_wrap(s, priv, tpub, ephpt, wrapped, sizeof(wrapped), &wlen),
		     ST_OK, "%s", hsm_session_errmsg(s));
	cr_assert_gt(wlen, 64);
	cr_assert_eq(hsm_list_labels(s, true, &labels, &nl), ST_OK);
	for (size_t i = 0; i < nl; i++)
		found |= !strcmp(labels[i], HSM_INJECT_LABEL);
	hsm_labels_free(labels, nl);
	cr_assert(found, "the live device key is not listed");
	cr_assert_eq(hsm_destroy(s, priv), ST_OK);
	cr_assert_eq(hsm_destroy(s, pubobj), ST_OK);
	cr_assert_eq(hsm_list_labels(s, true, &labels, &nl), ST_OK);
	for (size_t i = 0; i < nl; i++)
		cr_assert_str_neq(labels[i], HSM_INJECT_LABEL, "device key left in the HSM");
	hsm_labels_free(labels, nl);
	/* The device side. */
	eph = pkey_from_point(ephpt);
	dc = EVP_PKEY_CTX_new(transport, NULL);
	cr_assert_eq(EVP_PKEY_derive_init(dc), 1);
	cr_assert_eq(EVP_PKEY_derive_set_peer(dc, eph), 1);
	cr_assert_eq(EVP_PKEY_derive(dc, kek, &keklen), 1);
	cr_assert_eq(EVP_DecryptInit_ex(cc, EVP_aes_256_wrap_pad(), NULL, kek, NULL), 1);
	cr_assert_eq(EVP_DecryptUpdate(cc, plain, &plen, wrapped, (int)wlen), 1);
	cr_assert_eq(EVP_DecryptFinal_ex(cc, plain + plen, &flen), 1);
	pp = plain;
	devkey = d2i_AutoPrivateKey(NULL, &pp, plen + flen);
	cr_assert_not_null(devkey, "unwrapped blob is not a PKCS#8 private key");
	cr_assert_eq(EVP_PKEY_get_octet_string_param(devkey, "encoded-pub-key", got,
						     sizeof(got), &glen), 1);
	cr_assert_eq(memcmp(got, devpub, 65), 0, "unwrapped key is not the device key");
	/* A tampered blob does not open. */
	wrapped[wlen / 2] ^= 1;
	cr_assert_eq(EVP_DecryptInit_ex(cc, EVP_aes_256_wrap_pad(), NULL, kek, NULL), 1);
	cr_assert_eq(EVP_DecryptUpdate(cc, plain, &plen, wrapped, (int)wlen) == 1 &&
		     EVP_DecryptFinal_ex(cc, plain + plen, &flen) == 1, 0,
		     "a tampered blob unwrapped");
	EVP_PKEY_free(devkey);
	EVP_PKEY_free(eph);
	EVP_PKEY_free(transport);
	EVP_PKEY_CTX_free(dc);
	EVP_CIPHER_CTX_free(cc);
	hsm_session_close(s);
}

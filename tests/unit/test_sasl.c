/*
 * modules/common/sasl.c and b64.c: the SASL server mechanisms, fed client responses directly.
 *
 * SCRAM-SHA-256 is checked against the RFC 7677 section 3 example (with the server nonce injected), and
 * in full exchanges where this file plays the client with OpenSSL primitives (PBKDF2, HMAC, SHA-256 and
 * EVP_EncodeBlock), independently of the code under test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "b64.h"
#include "sasl.h"

static apr_pool_t *pool;

static int suite_init(void)
{
    if (apr_initialize() != APR_SUCCESS || apr_pool_create(&pool, NULL) != APR_SUCCESS)
        return -1;
    return 0;
}

static int suite_clean(void)
{
    apr_pool_destroy(pool);
    apr_terminate();
    return 0;
}

/* ---- helpers: an independent base64 (OpenSSL's) ---- */

static char *enc(const void *data, size_t len)
{
    char *out = apr_palloc(pool, 4 * ((len + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

static char *enc_str(const char *s)
{
    return enc(s, strlen(s));
}

/* Decodes canonical base64 with OpenSSL (for reading the server's messages). */
static char *dec(const char *b64, size_t *len_r)
{
    size_t n = strlen(b64);
    unsigned char *out = apr_palloc(pool, n + 1);
    int r = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)n);
    if (r < 0)
        return NULL;
    size_t pad = (n >= 1 && b64[n - 1] == '=') + (n >= 2 && b64[n - 2] == '=');
    *len_r = (size_t)r - pad;
    out[*len_r] = '\0';
    return (char *)out;
}

static mpc_sasl *new_sasl(unsigned flags)
{
    apr_pool_t *p;
    apr_pool_create(&p, pool);
    return mpc_sasl_create(p, flags);
}

static mpc_sasl_status start_str(mpc_sasl *sa, const char *mech, const char *initial, mpc_sasl_out *out)
{
    return mpc_sasl_start(sa, mech, initial, initial ? strlen(initial) : 0, out);
}

static mpc_sasl_status step_str(mpc_sasl *sa, const char *line, mpc_sasl_out *out)
{
    return mpc_sasl_step(sa, line, strlen(line), out);
}

/* ---- base64 ---- */

static int b64_ok(const char *in, const char *want, size_t want_len)
{
    unsigned char out[256];
    size_t n;
    if (mpc_b64_decode(in, strlen(in), out, &n) != 0)
        return 0;
    return n == want_len && memcmp(out, want, n) == 0;
}

static int b64_bad(const char *in)
{
    unsigned char out[256];
    size_t n;
    return mpc_b64_decode(in, strlen(in), out, &n) == -1;
}

static void test_b64(void)
{
    CU_ASSERT(b64_ok("", "", 0));
    CU_ASSERT(b64_ok("QQ==", "A", 1));
    CU_ASSERT(b64_ok("QUI=", "AB", 2));
    CU_ASSERT(b64_ok("QUJD", "ABC", 3));
    CU_ASSERT(b64_ok("AGFsaWNlAHNlY3JldA==", "\0alice\0secret", 13));
    CU_ASSERT(b64_bad("!!!"));
    CU_ASSERT(b64_bad("!!!!"));
    CU_ASSERT(b64_bad("QQ="));          /* bad length */
    CU_ASSERT(b64_bad("QQ"));           /* no padding */
    CU_ASSERT(b64_bad("QQ==QQ=="));     /* padding in the middle */
    CU_ASSERT(b64_bad("QQ=A"));         /* data after padding */
    CU_ASSERT(b64_bad("Q==="));         /* three pad characters */
    CU_ASSERT(b64_bad("===="));
    CU_ASSERT(b64_bad("QR=="));         /* non-zero unused bits: not the canonical encoding */
    CU_ASSERT(b64_bad("QUJ="));
    CU_ASSERT(b64_bad("QU I="));        /* embedded space */
    CU_ASSERT(b64_bad("QUJD\r\n"));
    CU_ASSERT(b64_bad(" QUJD"));
    CU_ASSERT(b64_bad("QUJD QUJD"));
    CU_ASSERT(b64_bad("QU-_"));         /* the URL alphabet is not base64 */

    /* round trip of every length 0..64 over random bytes, against OpenSSL */
    unsigned char data[64], back[64];
    RAND_bytes(data, sizeof data);
    for (size_t len = 0; len <= sizeof data; len++) {
        char *mine = mpc_b64_encode(pool, data, len);
        CU_ASSERT_STRING_EQUAL(mine, enc(data, len));
        CU_ASSERT_EQUAL(strlen(mine), mpc_b64_encoded_len(len));
        size_t n = 0;
        CU_ASSERT_EQUAL(mpc_b64_decode(mine, strlen(mine), back, &n), 0);
        CU_ASSERT(n == len && memcmp(back, data, len) == 0);
    }
}

/* ---- PLAIN ---- */

static char *plain_msg(const char *authzid, const char *authcid, const char *pass)
{
    size_t z = strlen(authzid), c = strlen(authcid), p = strlen(pass);
    char *m = apr_palloc(pool, z + c + p + 2);
    memcpy(m, authzid, z);
    m[z] = '\0';
    memcpy(m + z + 1, authcid, c);
    m[z + 1 + c] = '\0';
    memcpy(m + z + c + 2, pass, p);
    return enc(m, z + c + p + 2);
}

static void test_plain_initial(void)
{
    mpc_sasl *sa = new_sasl(0);
    mpc_sasl_out out;
    CU_ASSERT_EQUAL(start_str(sa, "PLAIN", plain_msg("", "alice@example.test", "s3cret"), &out),
                    MPC_SASL_NEED_VERIFY);
    CU_ASSERT_STRING_EQUAL(out.authcid, "alice@example.test");
    CU_ASSERT_STRING_EQUAL(out.authzid, "");
    CU_ASSERT_STRING_EQUAL(out.password, "s3cret");
    char *pw = (char *)out.password;
    CU_ASSERT_EQUAL(mpc_sasl_verified(sa, MP_AUTH_OK, &out), MPC_SASL_SUCCESS);
    CU_ASSERT_STRING_EQUAL(out.authcid, "alice@example.test");
    CU_ASSERT_PTR_NULL(out.final_data);
    CU_ASSERT_PTR_NULL(out.password);
    CU_ASSERT(memcmp(pw, "\0\0\0\0\0\0", 6) == 0); /* the password is wiped */
    /* the exchange is over */
    CU_ASSERT_EQUAL(step_str(sa, "", &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_STATE);
}

static void test_plain_authzid(void)
{
    mpc_sasl *sa = new_sasl(0);
    mpc_sasl_out out;
    CU_ASSERT_EQUAL(start_str(sa, "plain", plain_msg("alice@example.test", "alice@example.test", "pw"), &out),
                    MPC_SASL_NEED_VERIFY);
    CU_ASSERT_STRING_EQUAL(out.authzid, "alice@example.test");
    CU_ASSERT_EQUAL(mpc_sasl_verified(sa, MP_AUTH_OK, &out), MPC_SASL_SUCCESS);
    CU_ASSERT_STRING_EQUAL(out.authzid, "alice@example.test");

    /* someone else's identity: refused before any password check */
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "PLAIN", plain_msg("bob@example.test", "alice@example.test", "pw"), &out),
                    MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_AUTHZID);
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "PLAIN", plain_msg("Alice@example.test", "alice@example.test", "pw"), &out),
                    MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_AUTHZID);
}

static void test_plain_challenge(void)
{
    /* no initial response: an empty challenge, then the message */
    mpc_sasl *sa = new_sasl(0);
    mpc_sasl_out out;
    CU_ASSERT_EQUAL(start_str(sa, "PLAIN", NULL, &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_STRING_EQUAL(out.challenge, "");
    CU_ASSERT_EQUAL(step_str(sa, plain_msg("", "bob@example.test", "pw"), &out), MPC_SASL_NEED_VERIFY);
    CU_ASSERT_STRING_EQUAL(out.authcid, "bob@example.test");
    CU_ASSERT_EQUAL(mpc_sasl_verified(sa, MP_AUTH_FAIL, &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_AUTH);
    CU_ASSERT_STRING_EQUAL(out.authcid, "bob@example.test");
    CU_ASSERT_PTR_NULL(out.password);

    /* "=" (a zero-length initial response): also answered with the empty challenge */
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "PLAIN", "=", &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_STRING_EQUAL(out.challenge, "");
    CU_ASSERT_EQUAL(step_str(sa, plain_msg("", "bob@example.test", "pw"), &out), MPC_SASL_NEED_VERIFY);
    CU_ASSERT_STRING_EQUAL(out.password, "pw");
    CU_ASSERT_EQUAL(mpc_sasl_verified(sa, MP_AUTH_TEMPFAIL, &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_TEMP);

    /* UTF-8 is fine */
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "PLAIN", plain_msg("", "j\xc3\xbcrgen@example.test", "p\xc3\xa4ss\xe2\x82\xac"),
                              &out), MPC_SASL_NEED_VERIFY);
    CU_ASSERT_STRING_EQUAL(out.password, "p\xc3\xa4ss\xe2\x82\xac");
}

static mpc_sasl_error plain_error(const void *msg, size_t len)
{
    mpc_sasl *sa = new_sasl(0);
    mpc_sasl_out out;
    const char *b64 = enc(msg, len);
    if (mpc_sasl_start(sa, "PLAIN", b64, strlen(b64), &out) != MPC_SASL_FAIL)
        return MPC_SASL_ERR_NONE;
    return out.error;
}

static void test_plain_malformed(void)
{
    CU_ASSERT_EQUAL(plain_error("alice", 5), MPC_SASL_ERR_MALFORMED);                 /* no NUL */
    CU_ASSERT_EQUAL(plain_error("\0alice", 6), MPC_SASL_ERR_MALFORMED);               /* one NUL */
    CU_ASSERT_EQUAL(plain_error("\0alice\0pw\0x", 11), MPC_SASL_ERR_MALFORMED);       /* three NULs */
    CU_ASSERT_EQUAL(plain_error("\0alice\0", 7), MPC_SASL_ERR_MALFORMED);             /* empty password */
    CU_ASSERT_EQUAL(plain_error("\0\0pw", 4), MPC_SASL_ERR_MALFORMED);                /* empty user */
    CU_ASSERT_EQUAL(plain_error("", 0), MPC_SASL_ERR_MALFORMED);
    CU_ASSERT_EQUAL(plain_error("\0al\xffice\0pw", 10), MPC_SASL_ERR_MALFORMED);      /* not UTF-8 */
    CU_ASSERT_EQUAL(plain_error("\0alice\0\xc0\xafpw", 11), MPC_SASL_ERR_MALFORMED);  /* overlong */
    CU_ASSERT_EQUAL(plain_error("\0alice\0\xed\xa0\x80", 10), MPC_SASL_ERR_MALFORMED); /* surrogate */
    CU_ASSERT_EQUAL(plain_error("\0alice\0\xe2\x82", 9), MPC_SASL_ERR_MALFORMED);     /* truncated */
    /* a field over MPC_SASL_MAX_FIELD */
    char big[MPC_SASL_MAX_FIELD + 16];
    memset(big, 'x', sizeof big);
    big[0] = '\0';
    big[1] = 'u';
    big[2] = '\0';
    CU_ASSERT_EQUAL(plain_error(big, sizeof big), MPC_SASL_ERR_MALFORMED);
    /* the other way round, exactly at the limit, is fine */
    memset(big, 'x', sizeof big);
    big[0] = '\0';
    big[1] = 'u';
    big[2] = '\0';
    CU_ASSERT_EQUAL(plain_error(big, 3 + MPC_SASL_MAX_FIELD), MPC_SASL_ERR_NONE);
}

static mpc_sasl_error start_error(const char *mech, const char *initial)
{
    mpc_sasl *sa = new_sasl(0);
    mpc_sasl_out out;
    if (start_str(sa, mech, initial, &out) != MPC_SASL_FAIL)
        return MPC_SASL_ERR_NONE;
    return out.error;
}

static void test_base64_garbage(void)
{
    CU_ASSERT_EQUAL(start_error("PLAIN", "!!!"), MPC_SASL_ERR_BASE64);
    CU_ASSERT_EQUAL(start_error("PLAIN", "QQ="), MPC_SASL_ERR_BASE64);
    CU_ASSERT_EQUAL(start_error("PLAIN", "QQ==QQ=="), MPC_SASL_ERR_BASE64);
    CU_ASSERT_EQUAL(start_error("PLAIN", "AGFsaWNl AHB3"), MPC_SASL_ERR_BASE64);
    CU_ASSERT_EQUAL(start_error("PLAIN", "AGFsaWNlAHB3 "), MPC_SASL_ERR_BASE64);
    CU_ASSERT_EQUAL(start_error("LOGIN", "YWxpY2U=\t"), MPC_SASL_ERR_BASE64);
    CU_ASSERT_EQUAL(start_error("SCRAM-SHA-256", "biws!"), MPC_SASL_ERR_BASE64);

    /* 20 KB of valid base64: refused for its size, before decoding */
    size_t n = 20 * 1024;
    char *big = apr_palloc(pool, n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = "QUJD"[i % 4];
    big[n] = '\0';
    CU_ASSERT_EQUAL(start_error("PLAIN", big), MPC_SASL_ERR_TOO_LONG);
    mpc_sasl *sa = new_sasl(0);
    mpc_sasl_out out;
    CU_ASSERT_EQUAL(start_str(sa, "PLAIN", NULL, &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_EQUAL(step_str(sa, big, &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_TOO_LONG);
    /* exactly at the limit it is decoded (and then malformed: no NULs) */
    big[MPC_SASL_MAX_RESPONSE] = '\0';
    CU_ASSERT_EQUAL(start_error("PLAIN", big), MPC_SASL_ERR_MALFORMED);

    /* garbage in a later step */
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "LOGIN", NULL, &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_EQUAL(step_str(sa, "YWxpY2U", &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_BASE64);
}

static void test_cancel_and_mechanisms(void)
{
    mpc_sasl_out out;
    const char *mechs[] = {"PLAIN", "LOGIN", "SCRAM-SHA-256"};
    for (int i = 0; i < 3; i++) {
        mpc_sasl *sa = new_sasl(0);
        CU_ASSERT_EQUAL(start_str(sa, mechs[i], NULL, &out), MPC_SASL_CHALLENGE);
        CU_ASSERT_EQUAL(step_str(sa, "*", &out), MPC_SASL_FAIL);
        CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_CANCELLED);
        CU_ASSERT_EQUAL(step_str(sa, "*", &out), MPC_SASL_FAIL);
        CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_STATE);
    }
    /* cancel in the middle of LOGIN */
    mpc_sasl *sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "LOGIN", NULL, &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_EQUAL(step_str(sa, enc_str("alice"), &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_EQUAL(step_str(sa, "*", &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_CANCELLED);

    CU_ASSERT_EQUAL(start_error("CRAM-MD5", NULL), MPC_SASL_ERR_MECHANISM);
    CU_ASSERT_EQUAL(start_error("SCRAM-SHA-256-PLUS", NULL), MPC_SASL_ERR_MECHANISM);
    CU_ASSERT_EQUAL(start_error("SCRAM-SHA-1", NULL), MPC_SASL_ERR_MECHANISM);
    CU_ASSERT_EQUAL(start_error("", NULL), MPC_SASL_ERR_MECHANISM);
    CU_ASSERT_EQUAL(start_error(NULL, NULL), MPC_SASL_ERR_MECHANISM);
    CU_ASSERT(mpc_sasl_supported("plain"));
    CU_ASSERT(mpc_sasl_supported("Scram-Sha-256"));
    CU_ASSERT(!mpc_sasl_supported("SCRAM-SHA-256-PLUS"));
    CU_ASSERT(!mpc_sasl_supported("XOAUTH2"));

    /* calls out of order */
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(mpc_sasl_verified(sa, MP_AUTH_OK, &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_STATE);
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "PLAIN", plain_msg("", "a", "b"), &out), MPC_SASL_NEED_VERIFY);
    CU_ASSERT_EQUAL(step_str(sa, "", &out), MPC_SASL_FAIL); /* a line while the check runs */
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_STATE);
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "PLAIN", NULL, &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_EQUAL(start_str(sa, "PLAIN", NULL, &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_STATE);

    for (int e = MPC_SASL_ERR_NONE; e <= MPC_SASL_ERR_INTERNAL; e++)
        CU_ASSERT(strcmp(mpc_sasl_error_str((mpc_sasl_error)e), "unknown error") != 0);
    CU_ASSERT_STRING_EQUAL(mpc_sasl_error_str(MPC_SASL_ERR_BASE64), "malformed base64");
}

/* ---- LOGIN ---- */

static void test_login(void)
{
    mpc_sasl *sa = new_sasl(0);
    mpc_sasl_out out;
    CU_ASSERT_EQUAL(start_str(sa, "LOGIN", NULL, &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_STRING_EQUAL(out.challenge, enc_str("Username:"));
    CU_ASSERT_EQUAL(step_str(sa, enc_str("alice@example.test"), &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_STRING_EQUAL(out.challenge, enc_str("Password:"));
    CU_ASSERT_EQUAL(step_str(sa, enc_str("pw with spaces"), &out), MPC_SASL_NEED_VERIFY);
    CU_ASSERT_STRING_EQUAL(out.authcid, "alice@example.test");
    CU_ASSERT_STRING_EQUAL(out.authzid, "");
    CU_ASSERT_STRING_EQUAL(out.password, "pw with spaces");
    CU_ASSERT_EQUAL(mpc_sasl_verified(sa, MP_AUTH_OK, &out), MPC_SASL_SUCCESS);
    CU_ASSERT_STRING_EQUAL(out.authcid, "alice@example.test");

    /* the user name as initial response (AUTH LOGIN dXNlcg==) */
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "LOGIN", enc_str("bob@example.test"), &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_STRING_EQUAL(out.challenge, enc_str("Password:"));
    CU_ASSERT_EQUAL(step_str(sa, enc_str("x"), &out), MPC_SASL_NEED_VERIFY);
    CU_ASSERT_STRING_EQUAL(out.authcid, "bob@example.test");

    /* "=": Username: again */
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "LOGIN", "=", &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_STRING_EQUAL(out.challenge, enc_str("Username:"));

    /* empty user or password, a NUL inside */
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "LOGIN", NULL, &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_EQUAL(step_str(sa, "", &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_MALFORMED);
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "LOGIN", enc_str("bob"), &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_EQUAL(step_str(sa, "", &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_MALFORMED);
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "LOGIN", enc("bo\0b", 4), &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_MALFORMED);
}

/* ---- SCRAM-SHA-256 ---- */

/* The test's own SCRAM key schedule (RFC 5802 section 3), with OpenSSL directly. */
static void ref_keys(const char *password, const unsigned char *salt, size_t salt_len, unsigned iter,
                     unsigned char client_key[32], unsigned char stored_key[32], unsigned char server_key[32])
{
    unsigned char salted[32];
    unsigned int l;
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, (int)iter, EVP_sha256(), 32, salted);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, client_key, &l);
    SHA256(client_key, 32, stored_key);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Server Key", 10, server_key, &l);
}

static void test_scram_derive(void)
{
    unsigned char salt[16], ck[32], sk[32], svk[32];
    RAND_bytes(salt, sizeof salt);
    ref_keys("pencil", salt, sizeof salt, 4096, ck, sk, svk);
    mp_scram_secret s;
    CU_ASSERT_EQUAL(mpc_sasl_scram_derive("pencil", 6, salt, sizeof salt, 4096, &s), 0);
    CU_ASSERT_EQUAL(s.iterations, 4096);
    CU_ASSERT_EQUAL(s.salt_len, sizeof salt);
    CU_ASSERT(memcmp(s.salt, salt, sizeof salt) == 0);
    CU_ASSERT(memcmp(s.stored_key, sk, 32) == 0);
    CU_ASSERT(memcmp(s.server_key, svk, 32) == 0);
    CU_ASSERT_EQUAL(mpc_sasl_scram_derive("pencil", 6, salt, 0, 4096, &s), -1);
    CU_ASSERT_EQUAL(mpc_sasl_scram_derive("pencil", 6, salt, 65, 4096, &s), -1);
    CU_ASSERT_EQUAL(mpc_sasl_scram_derive("pencil", 6, salt, 16, 0, &s), -1);
}

/* RFC 7677 section 3: user "user", password "pencil". */
#define V_CLIENT_FIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define V_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define V_SERVER_FIRST "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define V_CLIENT_FINAL "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0," \
                       "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define V_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static mp_scram_secret vector_secret(void)
{
    mp_scram_secret s;
    size_t n;
    unsigned char *salt = (unsigned char *)dec("W22ZaJ0SNY7soEsUEjb6gQ==", &n);
    CU_ASSERT_EQUAL(mpc_sasl_scram_derive("pencil", 6, salt, n, 4096, &s), 0);
    return s;
}

static void test_scram_rfc7677(void)
{
    mpc_sasl *sa = new_sasl(0);
    mpc_sasl_out out;
    CU_ASSERT_EQUAL(mpc_sasl_set_server_nonce(sa, V_SNONCE), 0);
    CU_ASSERT_EQUAL(start_str(sa, "SCRAM-SHA-256", enc_str(V_CLIENT_FIRST), &out), MPC_SASL_NEED_SCRAM_SECRET);
    CU_ASSERT_STRING_EQUAL(out.authcid, "user");
    CU_ASSERT_STRING_EQUAL(out.authzid, "");
    mp_scram_secret s = vector_secret();
    CU_ASSERT_EQUAL(mpc_sasl_scram_secret(sa, MP_AUTH_OK, &s, &out), MPC_SASL_CHALLENGE);
    size_t n;
    CU_ASSERT_STRING_EQUAL(dec(out.challenge, &n), V_SERVER_FIRST);
    CU_ASSERT_EQUAL(step_str(sa, enc_str(V_CLIENT_FINAL), &out), MPC_SASL_SUCCESS);
    CU_ASSERT_STRING_EQUAL(out.authcid, "user");
    CU_ASSERT_PTR_NOT_NULL_FATAL(out.final_data);
    CU_ASSERT_STRING_EQUAL(dec(out.final_data, &n), V_SERVER_FINAL);

    /* the same proof against another exchange (another server nonce) is refused */
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(start_str(sa, "SCRAM-SHA-256", enc_str(V_CLIENT_FIRST), &out), MPC_SASL_NEED_SCRAM_SECRET);
    CU_ASSERT_EQUAL(mpc_sasl_scram_secret(sa, MP_AUTH_OK, &s, &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_EQUAL(step_str(sa, enc_str(V_CLIENT_FINAL), &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_MALFORMED); /* the nonce does not match */

    /* one bit of the proof flipped */
    sa = new_sasl(0);
    mpc_sasl_set_server_nonce(sa, V_SNONCE);
    start_str(sa, "SCRAM-SHA-256", enc_str(V_CLIENT_FIRST), &out);
    CU_ASSERT_EQUAL(mpc_sasl_scram_secret(sa, MP_AUTH_OK, &s, &out), MPC_SASL_CHALLENGE);
    char *bad = apr_pstrdup(pool, V_CLIENT_FINAL);
    bad[strlen(bad) - 5] = 'm'; /* "...AndVQ=" -> "...AmdVQ=": still base64, another proof */
    CU_ASSERT_EQUAL(step_str(sa, enc_str(bad), &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_AUTH);
}

/* The test as a SCRAM client. */
typedef struct scram_client {
    const char *gs2;         /* "n,," */
    const char *bare;        /* "n=user,r=CNONCE" */
    const char *cnonce;
    const char *server_first;
    unsigned char server_key[32];
} scram_client;

static const char *client_first(scram_client *c, const char *gs2, const char *user)
{
    unsigned char rnd[12];
    RAND_bytes(rnd, sizeof rnd);
    c->gs2 = gs2;
    c->cnonce = enc(rnd, sizeof rnd);
    c->bare = apr_psprintf(pool, "n=%s,r=%s", user, c->cnonce);
    return enc_str(apr_pstrcat(pool, gs2, c->bare, NULL));
}

/* Reads server-first (base64), returns client-final (base64) for `password`, or NULL. */
static const char *client_final(scram_client *c, const char *challenge, const char *password)
{
    size_t n;
    c->server_first = dec(challenge, &n);
    if (!c->server_first || strncmp(c->server_first, "r=", 2) != 0)
        return NULL;
    const char *comma = strchr(c->server_first, ',');
    const char *nonce = apr_pstrmemdup(pool, c->server_first + 2, (size_t)(comma - c->server_first - 2));
    if (strncmp(nonce, c->cnonce, strlen(c->cnonce)) != 0 || strlen(nonce) <= strlen(c->cnonce))
        return NULL;
    const char *s = strstr(c->server_first, ",s="), *i = strstr(c->server_first, ",i=");
    if (!s || !i)
        return NULL;
    size_t salt_len;
    unsigned char *salt = (unsigned char *)dec(apr_pstrmemdup(pool, s + 3, (size_t)(i - s - 3)), &salt_len);
    unsigned iter = (unsigned)strtoul(i + 3, NULL, 10);
    unsigned char ck[32], sk[32], sig[32], proof[32];
    unsigned int l;
    ref_keys(password, salt, salt_len, iter, ck, sk, c->server_key);
    const char *without = apr_psprintf(pool, "c=%s,r=%s", enc_str(c->gs2), nonce);
    const char *am = apr_pstrcat(pool, c->bare, ",", c->server_first, ",", without, NULL);
    HMAC(EVP_sha256(), sk, 32, (const unsigned char *)am, strlen(am), sig, &l);
    for (int k = 0; k < 32; k++)
        proof[k] = ck[k] ^ sig[k];
    /* keep the AuthMessage to check the server's signature */
    c->server_first = am;
    return enc_str(apr_psprintf(pool, "%s,p=%s", without, enc(proof, 32)));
}

static int client_check_final(scram_client *c, const char *final_b64)
{
    size_t n;
    const char *final = dec(final_b64, &n);
    unsigned char sig[32];
    unsigned int l;
    HMAC(EVP_sha256(), c->server_key, 32, (const unsigned char *)c->server_first, strlen(c->server_first), sig, &l);
    return final && strcmp(final, apr_pstrcat(pool, "v=", enc(sig, 32), NULL)) == 0;
}

static mp_scram_secret make_secret(const char *password, unsigned iter)
{
    unsigned char salt[16];
    RAND_bytes(salt, sizeof salt);
    mp_scram_secret s;
    CU_ASSERT_EQUAL(mpc_sasl_scram_derive(password, strlen(password), salt, sizeof salt, iter, &s), 0);
    return s;
}

static void test_scram_full(void)
{
    mp_scram_secret s = make_secret("correct horse", 4096);
    const char *gs2s[] = {"n,,", "y,,", "n,a=alice@example.test,"};
    for (int k = 0; k < 3; k++) {
        scram_client c;
        mpc_sasl *sa = new_sasl(0);
        mpc_sasl_out out;
        /* no initial response: an empty challenge first */
        CU_ASSERT_EQUAL(start_str(sa, "SCRAM-SHA-256", NULL, &out), MPC_SASL_CHALLENGE);
        CU_ASSERT_STRING_EQUAL(out.challenge, "");
        CU_ASSERT_EQUAL(step_str(sa, client_first(&c, gs2s[k], "alice@example.test"), &out),
                        MPC_SASL_NEED_SCRAM_SECRET);
        CU_ASSERT_STRING_EQUAL(out.authcid, "alice@example.test");
        CU_ASSERT_EQUAL(mpc_sasl_scram_secret(sa, MP_AUTH_OK, &s, &out), MPC_SASL_CHALLENGE);
        const char *final = client_final(&c, out.challenge, "correct horse");
        CU_ASSERT_PTR_NOT_NULL_FATAL(final);
        CU_ASSERT_EQUAL(step_str(sa, final, &out), MPC_SASL_SUCCESS);
        CU_ASSERT_STRING_EQUAL(out.authcid, "alice@example.test");
        CU_ASSERT_STRING_EQUAL(out.authzid, k == 2 ? "alice@example.test" : "");
        CU_ASSERT(client_check_final(&c, out.final_data));
    }

    /* the final message as one more challenge (SMTP) */
    scram_client c;
    mpc_sasl *sa = new_sasl(MPC_SASL_FINAL_AS_CHALLENGE);
    mpc_sasl_out out;
    CU_ASSERT_EQUAL(start_str(sa, "SCRAM-SHA-256", client_first(&c, "n,,", "bob"), &out),
                    MPC_SASL_NEED_SCRAM_SECRET);
    CU_ASSERT_EQUAL(mpc_sasl_scram_secret(sa, MP_AUTH_OK, &s, &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_EQUAL(step_str(sa, client_final(&c, out.challenge, "correct horse"), &out), MPC_SASL_CHALLENGE);
    CU_ASSERT(client_check_final(&c, out.challenge));
    CU_ASSERT_EQUAL(step_str(sa, "", &out), MPC_SASL_SUCCESS);
    CU_ASSERT_STRING_EQUAL(out.authcid, "bob");
    CU_ASSERT_PTR_NULL(out.final_data);
    /* ... and anything but an empty answer to it fails */
    sa = new_sasl(MPC_SASL_FINAL_AS_CHALLENGE);
    start_str(sa, "SCRAM-SHA-256", client_first(&c, "n,,", "bob"), &out);
    mpc_sasl_scram_secret(sa, MP_AUTH_OK, &s, &out);
    CU_ASSERT_EQUAL(step_str(sa, client_final(&c, out.challenge, "correct horse"), &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_EQUAL(step_str(sa, "eA==", &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_MALFORMED);

    /* a wrong password */
    sa = new_sasl(0);
    start_str(sa, "SCRAM-SHA-256", client_first(&c, "n,,", "alice"), &out);
    CU_ASSERT_EQUAL(mpc_sasl_scram_secret(sa, MP_AUTH_OK, &s, &out), MPC_SASL_CHALLENGE);
    CU_ASSERT_EQUAL(step_str(sa, client_final(&c, out.challenge, "battery staple"), &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_AUTH);
    CU_ASSERT_STRING_EQUAL(out.authcid, "alice"); /* for the log line */

    /* the database failed */
    sa = new_sasl(0);
    start_str(sa, "SCRAM-SHA-256", client_first(&c, "n,,", "alice"), &out);
    CU_ASSERT_EQUAL(mpc_sasl_scram_secret(sa, MP_AUTH_TEMPFAIL, NULL, &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_TEMP);
}

/* Unknown users get a made-up but stable salt and the last real iteration count, then fail at the proof. */
static void test_scram_unknown_user(void)
{
    mp_scram_secret real = make_secret("pw", 5000);
    scram_client c;
    mpc_sasl_out out;
    mpc_sasl *sa = new_sasl(0);
    start_str(sa, "SCRAM-SHA-256", client_first(&c, "n,,", "real"), &out);
    CU_ASSERT_EQUAL(mpc_sasl_scram_secret(sa, MP_AUTH_OK, &real, &out), MPC_SASL_CHALLENGE);

    const char *salts[2];
    for (int k = 0; k < 2; k++) {
        sa = new_sasl(0);
        CU_ASSERT_EQUAL(start_str(sa, "SCRAM-SHA-256", client_first(&c, "n,,", "ghost@example.test"), &out),
                        MPC_SASL_NEED_SCRAM_SECRET);
        CU_ASSERT_EQUAL(mpc_sasl_scram_secret(sa, k ? MP_AUTH_NOSECRET : MP_AUTH_NOUSER, NULL, &out),
                        MPC_SASL_CHALLENGE);
        size_t n;
        const char *sf = dec(out.challenge, &n);
        CU_ASSERT_PTR_NOT_NULL(strstr(sf, ",i=5000"));
        const char *s = strstr(sf, ",s="), *i = strstr(sf, ",i=");
        salts[k] = apr_pstrmemdup(pool, s + 3, (size_t)(i - s - 3));
        CU_ASSERT_EQUAL(strlen(salts[k]), 24); /* 16 bytes, like Dovecot's entries */
        CU_ASSERT_EQUAL(step_str(sa, client_final(&c, out.challenge, ""), &out), MPC_SASL_FAIL);
        CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_AUTH);
    }
    CU_ASSERT_STRING_EQUAL(salts[0], salts[1]);
    /* another name, another salt */
    sa = new_sasl(0);
    start_str(sa, "SCRAM-SHA-256", client_first(&c, "n,,", "ghost2@example.test"), &out);
    mpc_sasl_scram_secret(sa, MP_AUTH_NOUSER, NULL, &out);
    size_t n;
    CU_ASSERT_PTR_NULL(strstr(dec(out.challenge, &n), salts[0]));
}

static mpc_sasl_error scram_first_error(const char *first)
{
    return start_error("SCRAM-SHA-256", enc_str(first));
}

static void test_scram_malformed(void)
{
    CU_ASSERT_EQUAL(scram_first_error("p=tls-unique,,n=user,r=abc"), MPC_SASL_ERR_CHANNEL_BINDING);
    CU_ASSERT_EQUAL(scram_first_error("p=tls-exporter,,n=user,r=abc"), MPC_SASL_ERR_CHANNEL_BINDING);
    CU_ASSERT_EQUAL(scram_first_error("x,,n=user,r=abc"), MPC_SASL_ERR_MALFORMED);
    CU_ASSERT_EQUAL(scram_first_error("n,n=user,r=abc"), MPC_SASL_ERR_MALFORMED);
    CU_ASSERT_EQUAL(scram_first_error("n,,m=ext,n=user,r=abc"), MPC_SASL_ERR_MALFORMED);
    CU_ASSERT_EQUAL(scram_first_error("n,,n=user,r=abc,m=x"), MPC_SASL_ERR_MALFORMED);
    CU_ASSERT_EQUAL(scram_first_error("n,,n=,r=abc"), MPC_SASL_ERR_MALFORMED);
    CU_ASSERT_EQUAL(scram_first_error("n,,n=user,r="), MPC_SASL_ERR_MALFORMED);
    CU_ASSERT_EQUAL(scram_first_error("n,,n=user"), MPC_SASL_ERR_MALFORMED);
    CU_ASSERT_EQUAL(scram_first_error("n,,r=abc,n=user"), MPC_SASL_ERR_MALFORMED);
    CU_ASSERT_EQUAL(scram_first_error("n,,n=us=41er,r=abc"), MPC_SASL_ERR_MALFORMED);  /* bad escape */
    CU_ASSERT_EQUAL(scram_first_error("n,,n=j\xc3\xbcrgen,r=abc"), MPC_SASL_ERR_MALFORMED); /* non-ASCII */
    CU_ASSERT_EQUAL(scram_first_error("n,,n=user,r=a\x01" "bc"), MPC_SASL_ERR_MALFORMED);
    CU_ASSERT_EQUAL(scram_first_error("n,a=bob,n=alice,r=abc"), MPC_SASL_ERR_AUTHZID);
    CU_ASSERT_EQUAL(scram_first_error(""), MPC_SASL_ERR_MALFORMED);
    CU_ASSERT_EQUAL(start_error("SCRAM-SHA-256", "="), MPC_SASL_ERR_MALFORMED); /* empty client-first */

    /* escapes and extensions that are fine */
    mpc_sasl *sa = new_sasl(0);
    mpc_sasl_out out;
    CU_ASSERT_EQUAL(start_str(sa, "SCRAM-SHA-256", enc_str("n,,n=a=2Cb=3Dc,r=abc,x=ext"), &out),
                    MPC_SASL_NEED_SCRAM_SECRET);
    CU_ASSERT_STRING_EQUAL(out.authcid, "a,b=c");

    /* client-final problems */
    mp_scram_secret s = make_secret("pw", 4096);
    struct {
        const char *final; /* %s: the full nonce */
        mpc_sasl_error err;
    } cases[] = {
        {"c=eSws,r=%s,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", MPC_SASL_ERR_MALFORMED}, /* "y,," */
        {"c=biws,r=%sX,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", MPC_SASL_ERR_MALFORMED}, /* nonce */
        {"c=biws,r=%s", MPC_SASL_ERR_MALFORMED},                                               /* no proof */
        {"c=biws,r=%s,p=dHzb", MPC_SASL_ERR_MALFORMED},                                        /* short */
        {"c=biws,r=%s,p=!!!!ZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", MPC_SASL_ERR_MALFORMED},
        {"r=%s,c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", MPC_SASL_ERR_MALFORMED}, /* order */
        {"c=biws,r=%s,m=x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", MPC_SASL_ERR_MALFORMED},
        {"c=biws,r=%s,x=ok,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", MPC_SASL_ERR_AUTH}, /* well formed */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        sa = new_sasl(0);
        mpc_sasl_set_server_nonce(sa, "SERVERNONCE");
        start_str(sa, "SCRAM-SHA-256", enc_str("n,,n=user,r=CLIENT"), &out);
        CU_ASSERT_EQUAL(mpc_sasl_scram_secret(sa, MP_AUTH_OK, &s, &out), MPC_SASL_CHALLENGE);
        CU_ASSERT_EQUAL(step_str(sa, enc_str(apr_psprintf(pool, cases[k].final, "CLIENTSERVERNONCE")), &out),
                        MPC_SASL_FAIL);
        CU_ASSERT_EQUAL(out.error, cases[k].err);
        if (out.error != cases[k].err)
            fprintf(stderr, "case %zu: error %d\n", k, out.error);
    }
    sa = new_sasl(0);
    CU_ASSERT_EQUAL(mpc_sasl_set_server_nonce(sa, "bad,nonce"), -1);
    CU_ASSERT_EQUAL(mpc_sasl_set_server_nonce(sa, ""), -1);
}

static void test_destroy(void)
{
    mpc_sasl *sa = new_sasl(0);
    mpc_sasl_out out;
    CU_ASSERT_EQUAL(start_str(sa, "PLAIN", plain_msg("", "u", "topsecret"), &out), MPC_SASL_NEED_VERIFY);
    char *pw = (char *)out.password;
    mpc_sasl_destroy(sa);
    CU_ASSERT(memcmp(pw, "\0\0\0\0\0\0\0\0\0", 9) == 0);
    CU_ASSERT_EQUAL(mpc_sasl_verified(sa, MP_AUTH_OK, &out), MPC_SASL_FAIL);
    CU_ASSERT_EQUAL(out.error, MPC_SASL_ERR_STATE);
    mpc_sasl_destroy(NULL);

    /* a failure wipes too */
    sa = new_sasl(0);
    start_str(sa, "LOGIN", enc_str("u"), &out);
    CU_ASSERT_EQUAL(step_str(sa, enc_str("hunter2"), &out), MPC_SASL_NEED_VERIFY);
    pw = (char *)out.password;
    CU_ASSERT_EQUAL(mpc_sasl_verified(sa, MP_AUTH_FAIL, &out), MPC_SASL_FAIL);
    CU_ASSERT(memcmp(pw, "\0\0\0\0\0\0\0", 7) == 0);
}

/* ---- allow_nets ---- */

static void test_allow_nets(void)
{
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from(NULL, "192.0.2.1"), 1);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("192.0.2.0/24", "192.0.2.55"), 1);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("192.0.2.0/24", "192.0.3.1"), 0);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("192.0.2.1", "192.0.2.1"), 1);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("192.0.2.1", "192.0.2.2"), 0);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("10.0.0.0/8, 192.0.2.128/25", "192.0.2.200"), 1);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("10.0.0.0/8,192.0.2.128/25", "192.0.2.127"), 0);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("0.0.0.0/0", "203.0.113.9"), 1);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("2001:db8::/32", "2001:db8:1::5"), 1);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("2001:db8::/32", "2001:db9::5"), 0);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("::1", "::1"), 1);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("192.0.2.0/24", "::ffff:192.0.2.9"), 1);   /* mapped */
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("::ffff:192.0.2.0/120", "192.0.2.9"), 1);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("192.0.2.0/24", "2001:db8::1"), 0);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("192.0.2.0/24", "not-an-ip"), 0);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("192.0.2.0/24", NULL), 0);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("local", ""), 1);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("local", "192.0.2.1"), 0);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("garbage,192.0.2.0/33", "192.0.2.1"), 0);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from("", "192.0.2.1"), 0);
    CU_ASSERT(mpc_sasl_nets_valid("192.0.2.0/24,2001:db8::/32, ::1 ,local"));
    CU_ASSERT(!mpc_sasl_nets_valid("192.0.2.0/33"));
    CU_ASSERT(!mpc_sasl_nets_valid("192.0.2.0/"));
    CU_ASSERT(!mpc_sasl_nets_valid("example.test"));
    CU_ASSERT(!mpc_sasl_nets_valid("192.0.2.1,"));
    CU_ASSERT(!mpc_sasl_nets_valid(NULL));
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("sasl", suite_init, suite_clean);
    CU_add_test(s, "strict base64", test_b64);
    CU_add_test(s, "PLAIN with an initial response", test_plain_initial);
    CU_add_test(s, "PLAIN with an authorization id", test_plain_authzid);
    CU_add_test(s, "PLAIN after a challenge, \"=\" initial response", test_plain_challenge);
    CU_add_test(s, "PLAIN malformed", test_plain_malformed);
    CU_add_test(s, "base64 garbage and size limit", test_base64_garbage);
    CU_add_test(s, "cancel, mechanisms, sequence", test_cancel_and_mechanisms);
    CU_add_test(s, "LOGIN", test_login);
    CU_add_test(s, "SCRAM key derivation", test_scram_derive);
    CU_add_test(s, "SCRAM-SHA-256 RFC 7677 example", test_scram_rfc7677);
    CU_add_test(s, "SCRAM-SHA-256 full exchanges", test_scram_full);
    CU_add_test(s, "SCRAM-SHA-256 unknown users", test_scram_unknown_user);
    CU_add_test(s, "SCRAM-SHA-256 malformed", test_scram_malformed);
    CU_add_test(s, "destroy wipes", test_destroy);
    CU_add_test(s, "allow_nets", test_allow_nets);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}

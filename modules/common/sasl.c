/*
 * SASL server mechanisms: see sasl.h. The file reads as the RFCs do: the state machine, then PLAIN
 * (RFC 4616), LOGIN, SCRAM-SHA-256 (RFC 5802 section 5 and 7, RFC 7677), then allow_nets.
 */
#include "sasl.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <apr_strings.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "b64.h"
#include "utf8.h"

#define SCRAM_KEY_LEN 32                 /* SHA-256 */
#define SCRAM_NONCE_BYTES 18             /* random bytes in the server nonce: 24 base64 characters */
#define SCRAM_MAX_NONCE 256              /* the longest client nonce accepted */
#define SCRAM_FAKE_SALT_LEN 16           /* what Dovecot's {SCRAM-SHA-256} entries use */
#define SCRAM_DEFAULT_ITERATIONS 4096    /* RFC 7677's minimum and Dovecot's default */
#define SASL_MAX_WIPE 8                  /* sensitive buffers in one exchange: at most 4 responses */

typedef enum sasl_state {
    ST_INIT = 0,
    ST_PLAIN,         /* waiting for the PLAIN message */
    ST_LOGIN_USER,    /* "Username:" sent */
    ST_LOGIN_PASS,    /* "Password:" sent */
    ST_VERIFY,        /* NEED_VERIFY returned: waiting for mpc_sasl_verified() */
    ST_SCRAM_FIRST,   /* empty challenge sent: waiting for client-first-message */
    ST_SCRAM_SECRET,  /* NEED_SCRAM_SECRET returned: waiting for mpc_sasl_scram_secret() */
    ST_SCRAM_FINAL,   /* server-first-message sent: waiting for client-final-message */
    ST_SCRAM_ACK,     /* server-final-message sent as a challenge: waiting for an empty response */
    ST_DONE
} sasl_state;

typedef enum sasl_mech { MECH_NONE = 0, MECH_PLAIN, MECH_LOGIN, MECH_SCRAM_SHA256 } sasl_mech;

typedef struct sasl_wipe {
    void *p;
    size_t len;
} sasl_wipe;

struct mpc_sasl {
    apr_pool_t *pool;
    unsigned flags;
    sasl_mech mech;
    sasl_state state;
    sasl_wipe wipe[SASL_MAX_WIPE];   /* decoded responses (passwords, proofs): cleansed at the end */
    size_t nwipe;
    const char *authcid, *authzid;   /* copies, not secret */
    char *password;                  /* inside a wiped buffer */
    /* SCRAM */
    const char *gs2_header;          /* "n,," / "y,a=user," as sent */
    size_t gs2_len;
    const char *client_first_bare;
    const char *server_first;
    const char *nonce;               /* client nonce + server nonce */
    const char *server_nonce;        /* injected by tests, else NULL */
    mp_scram_secret secret;          /* wiped with the struct */
    int fake;                        /* the secret is made up: the proof never matches */
};

static const char *const error_text[] = {
    [MPC_SASL_ERR_NONE] = "no error",
    [MPC_SASL_ERR_MECHANISM] = "unknown mechanism",
    [MPC_SASL_ERR_BASE64] = "malformed base64",
    [MPC_SASL_ERR_TOO_LONG] = "response too long",
    [MPC_SASL_ERR_MALFORMED] = "malformed message",
    [MPC_SASL_ERR_CHANNEL_BINDING] = "channel binding not supported",
    [MPC_SASL_ERR_AUTHZID] = "authorization identity not allowed",
    [MPC_SASL_ERR_CANCELLED] = "cancelled by the client",
    [MPC_SASL_ERR_AUTH] = "authentication failed",
    [MPC_SASL_ERR_TEMP] = "temporary failure of the user database",
    [MPC_SASL_ERR_STATE] = "call out of sequence",
    [MPC_SASL_ERR_INTERNAL] = "internal error",
};

const char *mpc_sasl_error_str(mpc_sasl_error err)
{
    if ((unsigned)err < sizeof error_text / sizeof error_text[0] && error_text[err])
        return error_text[err];
    return "unknown error";
}

/* ---- life ---------------------------------------------------------------------------------------- */

static void sasl_wipe_all(mpc_sasl *sa)
{
    for (size_t i = 0; i < sa->nwipe; i++)
        OPENSSL_cleanse(sa->wipe[i].p, sa->wipe[i].len);
    sa->nwipe = 0;
    sa->password = NULL;
    OPENSSL_cleanse(&sa->secret, sizeof sa->secret);
}

static apr_status_t sasl_cleanup(void *data)
{
    mpc_sasl *sa = data;
    sasl_wipe_all(sa);
    sa->state = ST_DONE;
    return APR_SUCCESS;
}

mpc_sasl *mpc_sasl_create(apr_pool_t *pool, unsigned flags)
{
    mpc_sasl *sa = apr_pcalloc(pool, sizeof *sa);
    sa->pool = pool;
    sa->flags = flags;
    apr_pool_cleanup_register(pool, sa, sasl_cleanup, apr_pool_cleanup_null);
    return sa;
}

void mpc_sasl_destroy(mpc_sasl *sa)
{
    if (sa)
        apr_pool_cleanup_run(sa->pool, sa, sasl_cleanup);
}

int mpc_sasl_set_server_nonce(mpc_sasl *sa, const char *nonce)
{
    if (sa->state != ST_INIT || !nonce || !*nonce)
        return -1;
    for (const char *p = nonce; *p; p++)
        if (*p < 0x21 || *p > 0x7e || *p == ',')
            return -1;
    sa->server_nonce = apr_pstrdup(sa->pool, nonce);
    return 0;
}

static void out_reset(mpc_sasl_out *out)
{
    memset(out, 0, sizeof *out);
}

static mpc_sasl_status sasl_fail(mpc_sasl *sa, mpc_sasl_out *out, mpc_sasl_error err)
{
    sasl_wipe_all(sa);
    sa->state = ST_DONE;
    out_reset(out);
    out->error = err;
    out->authcid = sa->authcid; /* for the handler's log line, when it was known */
    return MPC_SASL_FAIL;
}

static mpc_sasl_status sasl_challenge(mpc_sasl *sa, mpc_sasl_out *out, sasl_state next, const char *b64)
{
    sa->state = next;
    out->challenge = b64;
    return MPC_SASL_CHALLENGE;
}

/* Decodes a client response into a wiped, NUL-terminated pool buffer. Returns ERR_NONE or why not. */
static mpc_sasl_error sasl_decode(mpc_sasl *sa, const char *in, size_t len, char **buf_r, size_t *len_r)
{
    if (len > MPC_SASL_MAX_RESPONSE)
        return MPC_SASL_ERR_TOO_LONG;
    if (sa->nwipe >= SASL_MAX_WIPE)
        return MPC_SASL_ERR_STATE;
    size_t cap = MPC_B64_DECODED_MAX(len) + 1;
    unsigned char *buf = apr_palloc(sa->pool, cap);
    sa->wipe[sa->nwipe].p = buf;
    sa->wipe[sa->nwipe].len = cap;
    sa->nwipe++;
    size_t n;
    if (mpc_b64_decode(in, len, buf, &n) != 0)
        return MPC_SASL_ERR_BASE64;
    buf[n] = '\0';
    *buf_r = (char *)buf;
    *len_r = n;
    return MPC_SASL_ERR_NONE;
}


static int field_ok(const char *s, size_t len)
{
    return len > 0 && len <= MPC_SASL_MAX_FIELD && !memchr(s, 0, len) && mpc_utf8_valid(s, len);
}

/* ---- PLAIN (RFC 4616): message = [authzid] NUL authcid NUL passwd ------------------------------------ */

static mpc_sasl_status plain_message(mpc_sasl *sa, char *msg, size_t len, mpc_sasl_out *out)
{
    char *nul1 = memchr(msg, '\0', len);
    char *nul2 = nul1 ? memchr(nul1 + 1, '\0', len - (size_t)(nul1 + 1 - msg)) : NULL;
    if (!nul2 || memchr(nul2 + 1, '\0', len - (size_t)(nul2 + 1 - msg)))
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED); /* not exactly two NULs */
    size_t zlen = (size_t)(nul1 - msg), clen = (size_t)(nul2 - nul1 - 1), plen = len - (size_t)(nul2 + 1 - msg);
    const char *authzid = msg, *authcid = nul1 + 1;
    char *passwd = nul2 + 1;
    if ((zlen && !field_ok(authzid, zlen)) || !field_ok(authcid, clen) || !field_ok(passwd, plen))
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    if (zlen && (zlen != clen || memcmp(authzid, authcid, clen) != 0))
        return sasl_fail(sa, out, MPC_SASL_ERR_AUTHZID);
    sa->authcid = apr_pstrmemdup(sa->pool, authcid, clen);
    sa->authzid = apr_pstrmemdup(sa->pool, authzid, zlen);
    sa->password = passwd;
    sa->state = ST_VERIFY;
    out->authcid = sa->authcid;
    out->authzid = sa->authzid;
    out->password = sa->password;
    return MPC_SASL_NEED_VERIFY;
}

/* ---- LOGIN: "Username:" then "Password:", each answered with the bare value ------------------------- */

#define LOGIN_USERNAME "VXNlcm5hbWU6" /* "Username:" */
#define LOGIN_PASSWORD "UGFzc3dvcmQ6" /* "Password:" */

static mpc_sasl_status login_user(mpc_sasl *sa, char *msg, size_t len, mpc_sasl_out *out)
{
    if (!field_ok(msg, len))
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    sa->authcid = apr_pstrmemdup(sa->pool, msg, len);
    sa->authzid = "";
    return sasl_challenge(sa, out, ST_LOGIN_PASS, LOGIN_PASSWORD);
}

static mpc_sasl_status login_pass(mpc_sasl *sa, char *msg, size_t len, mpc_sasl_out *out)
{
    if (!field_ok(msg, len))
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    sa->password = msg;
    sa->state = ST_VERIFY;
    out->authcid = sa->authcid;
    out->authzid = sa->authzid;
    out->password = sa->password;
    return MPC_SASL_NEED_VERIFY;
}

mpc_sasl_status mpc_sasl_verified(mpc_sasl *sa, int auth_rc, mpc_sasl_out *out)
{
    out_reset(out);
    if (sa->state != ST_VERIFY)
        return sasl_fail(sa, out, MPC_SASL_ERR_STATE);
    sasl_wipe_all(sa);
    if (auth_rc == MP_AUTH_TEMPFAIL)
        return sasl_fail(sa, out, MPC_SASL_ERR_TEMP);
    if (auth_rc != MP_AUTH_OK)
        return sasl_fail(sa, out, MPC_SASL_ERR_AUTH);
    sa->state = ST_DONE;
    out->authcid = sa->authcid;
    out->authzid = sa->authzid;
    return MPC_SASL_SUCCESS;
}

/* ---- SCRAM-SHA-256 (RFC 5802, RFC 7677) ---------------------------------------------------------- */

int mpc_sasl_scram_derive(const char *password, size_t password_len, const unsigned char *salt, size_t salt_len,
                          unsigned iterations, mp_scram_secret *out)
{
    unsigned char salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
    unsigned int mdlen = 0;
    int ok = 0;
    if (!password || !salt || salt_len == 0 || salt_len > sizeof out->salt || iterations == 0 ||
        iterations > INT_MAX || password_len > INT_MAX)
        return -1;
    if (PKCS5_PBKDF2_HMAC(password, (int)password_len, salt, (int)salt_len, (int)iterations, EVP_sha256(),
                          SCRAM_KEY_LEN, salted) == 1 &&
        HMAC(EVP_sha256(), salted, SCRAM_KEY_LEN, (const unsigned char *)"Client Key", 10, client_key, &mdlen) &&
        mdlen == SCRAM_KEY_LEN && SHA256(client_key, SCRAM_KEY_LEN, out->stored_key) &&
        HMAC(EVP_sha256(), salted, SCRAM_KEY_LEN, (const unsigned char *)"Server Key", 10, out->server_key, &mdlen) &&
        mdlen == SCRAM_KEY_LEN) {
        memcpy(out->salt, salt, salt_len);
        out->salt_len = salt_len;
        out->iterations = iterations;
        ok = 1;
    }
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    if (!ok)
        OPENSSL_cleanse(out, sizeof *out);
    return ok ? 0 : -1;
}

/*
 * saslname (RFC 5802 section 7): "=2C" is ',' and "=3D" is '='; any other '=' is an error. Only printable
 * ASCII is accepted (see sasl.h on SASLprep). Returns the decoded name, or NULL.
 */
static const char *scram_saslname(apr_pool_t *pool, const char *s, size_t len)
{
    if (len == 0 || len > MPC_SASL_MAX_FIELD * 3)
        return NULL;
    char *out = apr_palloc(pool, len + 1), *o = out;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '=') {
            if (len - i < 3)
                return NULL;
            if (s[i + 1] == '2' && s[i + 2] == 'C')
                *o++ = ',';
            else if (s[i + 1] == '3' && s[i + 2] == 'D')
                *o++ = '=';
            else
                return NULL;
            i += 2;
        } else if (c < 0x20 || c > 0x7e || c == ',') {
            return NULL;
        } else {
            *o++ = (char)c;
        }
    }
    *o = '\0';
    if ((size_t)(o - out) > MPC_SASL_MAX_FIELD)
        return NULL;
    return out;
}

static int scram_printable(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
            return 0;
    return len > 0;
}

/* Optional trailing extensions ",x=value" (RFC 5802 section 7): each must be attr-val; they are ignored. */
static int scram_extensions_ok(const char *p, const char *end)
{
    while (p < end) {
        if (*p != ',' || end - p < 3 || !((p[1] >= 'a' && p[1] <= 'z') || (p[1] >= 'A' && p[1] <= 'Z')) ||
            p[2] != '=')
            return 0;
        if (p[1] == 'm')
            return 0; /* reserved-mext: its presence MUST fail the exchange */
        p += 3;
        while (p < end && *p != ',')
            p++;
    }
    return 1;
}

/* client-first-message = gs2-header client-first-message-bare */
static mpc_sasl_status scram_first(mpc_sasl *sa, char *msg, size_t len, mpc_sasl_out *out)
{
    const char *p = msg, *end = msg + len, *comma;
    if (len == 0)
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    if (memchr(msg, '\0', len))
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    /* gs2-cbind-flag: "n" (client does not support channel binding) or "y" (it does, but thinks we do
       not: true, we offer no -PLUS); "p=" asks for channel binding, which we cannot do. */
    if (p[0] == 'p')
        return sasl_fail(sa, out, MPC_SASL_ERR_CHANNEL_BINDING);
    if ((p[0] != 'n' && p[0] != 'y') || len < 3 || p[1] != ',')
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    p += 2;
    const char *authzid = "";
    if (p[0] == 'a' && p + 1 < end && p[1] == '=') {
        comma = memchr(p, ',', (size_t)(end - p));
        if (!comma || !(authzid = scram_saslname(sa->pool, p + 2, (size_t)(comma - p - 2))))
            return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
        p = comma;
    }
    if (p >= end || *p != ',')
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    p++;
    sa->gs2_len = (size_t)(p - msg);
    sa->gs2_header = apr_pstrmemdup(sa->pool, msg, sa->gs2_len);
    const char *bare = p;

    /* client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions] */
    if (end - p < 2 || p[0] != 'n' || p[1] != '=')
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED); /* also refuses "m=" */
    comma = memchr(p, ',', (size_t)(end - p));
    const char *user;
    if (!comma || !(user = scram_saslname(sa->pool, p + 2, (size_t)(comma - p - 2))))
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    p = comma + 1;
    if (end - p < 2 || p[0] != 'r' || p[1] != '=')
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    p += 2;
    const char *nonce = p;
    while (p < end && *p != ',')
        p++;
    size_t nonce_len = (size_t)(p - nonce);
    if (nonce_len > SCRAM_MAX_NONCE || !scram_printable(nonce, nonce_len) || !scram_extensions_ok(p, end))
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    if (*authzid && strcmp(authzid, user) != 0)
        return sasl_fail(sa, out, MPC_SASL_ERR_AUTHZID);

    sa->client_first_bare = apr_pstrmemdup(sa->pool, bare, (size_t)(end - bare));
    sa->nonce = apr_pstrmemdup(sa->pool, nonce, nonce_len); /* the server part is appended later */
    sa->authcid = user;
    sa->authzid = authzid;
    sa->state = ST_SCRAM_SECRET;
    out->authcid = sa->authcid;
    out->authzid = sa->authzid;
    return MPC_SASL_NEED_SCRAM_SECRET;
}

/* A key for made-up salts, random per process, so an unknown user's salt cannot be predicted. */
static unsigned char fake_key[32];
static int fake_key_ok;
static pthread_once_t fake_key_once = PTHREAD_ONCE_INIT;
/* The iteration count of the last real secret: a made-up one uses it, so it looks like the others. */
static atomic_uint last_iterations = SCRAM_DEFAULT_ITERATIONS;

static void fake_key_init(void)
{
    fake_key_ok = RAND_bytes(fake_key, sizeof fake_key) == 1;
}

static int scram_fake_secret(mpc_sasl *sa)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    pthread_once(&fake_key_once, fake_key_init);
    if (!fake_key_ok || !HMAC(EVP_sha256(), fake_key, sizeof fake_key, (const unsigned char *)sa->authcid,
                              strlen(sa->authcid), mac, &maclen) || maclen < SCRAM_FAKE_SALT_LEN)
        return -1;
    memcpy(sa->secret.salt, mac, SCRAM_FAKE_SALT_LEN);
    sa->secret.salt_len = SCRAM_FAKE_SALT_LEN;
    sa->secret.iterations = atomic_load(&last_iterations);
    if (RAND_bytes(sa->secret.stored_key, sizeof sa->secret.stored_key) != 1 ||
        RAND_bytes(sa->secret.server_key, sizeof sa->secret.server_key) != 1)
        return -1;
    sa->fake = 1;
    return 0;
}

mpc_sasl_status mpc_sasl_scram_secret(mpc_sasl *sa, int auth_rc, const mp_scram_secret *secret,
                                      mpc_sasl_out *out)
{
    out_reset(out);
    if (sa->state != ST_SCRAM_SECRET)
        return sasl_fail(sa, out, MPC_SASL_ERR_STATE);
    if (auth_rc == MP_AUTH_TEMPFAIL)
        return sasl_fail(sa, out, MPC_SASL_ERR_TEMP);
    int given = secret && secret->salt_len > 0 && secret->salt_len <= sizeof secret->salt && secret->iterations > 0;
    if (auth_rc == MP_AUTH_OK && given) {
        sa->secret = *secret;
        sa->fake = 0;
        atomic_store(&last_iterations, secret->iterations);
    } else if (given) {
        /* the provider's made-up secret for a user it cannot log in (RFC 5802 section 9): it knows what
           its real ones look like; the proof fails whatever the client sends */
        sa->secret = *secret;
        sa->fake = 1;
    } else if (scram_fake_secret(sa) != 0) {
        return sasl_fail(sa, out, MPC_SASL_ERR_INTERNAL);
    }

    const char *snonce = sa->server_nonce;
    if (!snonce) {
        unsigned char rnd[SCRAM_NONCE_BYTES];
        if (RAND_bytes(rnd, sizeof rnd) != 1)
            return sasl_fail(sa, out, MPC_SASL_ERR_INTERNAL);
        snonce = mpc_b64_encode(sa->pool, rnd, sizeof rnd); /* the base64 alphabet has no ',' */
    }
    sa->nonce = apr_pstrcat(sa->pool, sa->nonce, snonce, NULL);
    sa->server_first = apr_psprintf(sa->pool, "r=%s,s=%s,i=%u", sa->nonce,
                                    mpc_b64_encode(sa->pool, sa->secret.salt, sa->secret.salt_len),
                                    sa->secret.iterations);
    return sasl_challenge(sa, out, ST_SCRAM_FINAL,
                          mpc_b64_encode(sa->pool, sa->server_first, strlen(sa->server_first)));
}

/* client-final-message = "c=" base64(gs2-header) "," "r=" nonce ["," extensions] "," "p=" base64(proof) */
static mpc_sasl_status scram_final(mpc_sasl *sa, char *msg, size_t len, mpc_sasl_out *out)
{
    const char *end = msg + len, *proof_at = NULL;
    if (memchr(msg, '\0', len))
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    for (const char *q = end; q - msg >= 3; q--) {
        if (q[-3] == ',' && q[-2] == 'p' && q[-1] == '=') {
            proof_at = q - 3;
            break;
        }
    }
    if (!proof_at || len < 2 || msg[0] != 'c' || msg[1] != '=')
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);

    /* channel-binding: for "n"/"y" exactly the gs2 header of the first message, base64-encoded */
    const char *p = msg + 2, *comma = memchr(p, ',', (size_t)(proof_at - p + 1));
    if (!comma)
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    size_t cb_len = (size_t)(comma - p), cb_dec_len;
    unsigned char *cb = apr_palloc(sa->pool, MPC_B64_DECODED_MAX(cb_len) + 1);
    if (mpc_b64_decode(p, cb_len, cb, &cb_dec_len) != 0 || cb_dec_len != sa->gs2_len ||
        memcmp(cb, sa->gs2_header, cb_dec_len) != 0)
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    p = comma + 1;
    if (proof_at - p < 2 || p[0] != 'r' || p[1] != '=')
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    p += 2;
    const char *nonce = p;
    while (p < proof_at && *p != ',')
        p++;
    if ((size_t)(p - nonce) != strlen(sa->nonce) || memcmp(nonce, sa->nonce, (size_t)(p - nonce)) != 0 ||
        !scram_extensions_ok(p, proof_at))
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);

    unsigned char proof[MPC_B64_DECODED_MAX(64)];
    const char *proof_b64 = proof_at + 3;
    size_t proof_len, proof_b64_len = (size_t)(end - proof_b64);
    if (proof_b64_len != mpc_b64_encoded_len(SCRAM_KEY_LEN) ||
        mpc_b64_decode(proof_b64, proof_b64_len, proof, &proof_len) != 0 || proof_len != SCRAM_KEY_LEN)
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);

    /* AuthMessage = client-first-message-bare "," server-first-message "," client-final-message-without-proof */
    const char *auth_message = apr_pstrcat(sa->pool, sa->client_first_bare, ",", sa->server_first, ",",
                                           apr_pstrmemdup(sa->pool, msg, (size_t)(proof_at - msg)), NULL);
    size_t am_len = strlen(auth_message);
    unsigned char client_sig[EVP_MAX_MD_SIZE], client_key[SCRAM_KEY_LEN], stored[SHA256_DIGEST_LENGTH];
    unsigned char server_sig[EVP_MAX_MD_SIZE];
    unsigned int siglen = 0;
    int ok = HMAC(EVP_sha256(), sa->secret.stored_key, SCRAM_KEY_LEN, (const unsigned char *)auth_message, am_len,
                  client_sig, &siglen) != NULL && siglen == SCRAM_KEY_LEN;
    if (ok) {
        /* ClientKey = ClientProof XOR ClientSignature; the proof is right when H(ClientKey) == StoredKey */
        for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
            client_key[i] = proof[i] ^ client_sig[i];
        ok = SHA256(client_key, SCRAM_KEY_LEN, stored) != NULL;
        ok = ok && CRYPTO_memcmp(stored, sa->secret.stored_key, SCRAM_KEY_LEN) == 0 && !sa->fake;
    }
    ok = ok && HMAC(EVP_sha256(), sa->secret.server_key, SCRAM_KEY_LEN, (const unsigned char *)auth_message,
                    am_len, server_sig, &siglen) != NULL && siglen == SCRAM_KEY_LEN;
    OPENSSL_cleanse(client_sig, sizeof client_sig);
    OPENSSL_cleanse(client_key, sizeof client_key);
    OPENSSL_cleanse(stored, sizeof stored);
    OPENSSL_cleanse(proof, sizeof proof);
    if (!ok) {
        OPENSSL_cleanse(server_sig, sizeof server_sig);
        return sasl_fail(sa, out, MPC_SASL_ERR_AUTH);
    }

    /* server-final-message = "v=" base64(ServerSignature) */
    const char *final = apr_pstrcat(sa->pool, "v=", mpc_b64_encode(sa->pool, server_sig, SCRAM_KEY_LEN), NULL);
    const char *final_b64 = mpc_b64_encode(sa->pool, final, strlen(final));
    OPENSSL_cleanse(server_sig, sizeof server_sig);
    sasl_wipe_all(sa);
    if (sa->flags & MPC_SASL_FINAL_AS_CHALLENGE)
        return sasl_challenge(sa, out, ST_SCRAM_ACK, final_b64);
    sa->state = ST_DONE;
    out->authcid = sa->authcid;
    out->authzid = sa->authzid;
    out->final_data = final_b64;
    return MPC_SASL_SUCCESS;
}

/* ---- the machine --------------------------------------------------------------------------------- */

static sasl_mech mech_of(const char *name)
{
    if (!name)
        return MECH_NONE;
    if (strcasecmp(name, "PLAIN") == 0)
        return MECH_PLAIN;
    if (strcasecmp(name, "LOGIN") == 0)
        return MECH_LOGIN;
    if (strcasecmp(name, "SCRAM-SHA-256") == 0)
        return MECH_SCRAM_SHA256;
    return MECH_NONE;
}

int mpc_sasl_supported(const char *mech)
{
    return mech_of(mech) != MECH_NONE;
}

/* A decoded client message in state sa->state. */
static mpc_sasl_status sasl_input(mpc_sasl *sa, char *msg, size_t len, mpc_sasl_out *out)
{
    switch (sa->state) {
    case ST_PLAIN:
        return plain_message(sa, msg, len, out);
    case ST_LOGIN_USER:
        return login_user(sa, msg, len, out);
    case ST_LOGIN_PASS:
        return login_pass(sa, msg, len, out);
    case ST_SCRAM_FIRST:
        return scram_first(sa, msg, len, out);
    case ST_SCRAM_FINAL:
        return scram_final(sa, msg, len, out);
    case ST_SCRAM_ACK:
        if (len != 0)
            return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
        sa->state = ST_DONE;
        out->authcid = sa->authcid;
        out->authzid = sa->authzid;
        return MPC_SASL_SUCCESS;
    default:
        return sasl_fail(sa, out, MPC_SASL_ERR_STATE);
    }
}

mpc_sasl_status mpc_sasl_start(mpc_sasl *sa, const char *mech, const char *initial, size_t initial_len,
                               mpc_sasl_out *out)
{
    out_reset(out);
    if (sa->state != ST_INIT)
        return sasl_fail(sa, out, MPC_SASL_ERR_STATE);
    sa->mech = mech_of(mech);
    sasl_state first;
    const char *first_challenge;
    switch (sa->mech) {
    case MECH_PLAIN:
        first = ST_PLAIN, first_challenge = "";
        break;
    case MECH_LOGIN:
        first = ST_LOGIN_USER, first_challenge = LOGIN_USERNAME;
        break;
    case MECH_SCRAM_SHA256:
        first = ST_SCRAM_FIRST, first_challenge = "";
        break;
    default:
        return sasl_fail(sa, out, MPC_SASL_ERR_MECHANISM);
    }
    int empty = initial && initial_len == 1 && initial[0] == '=';
    if (!initial || (empty && sa->mech != MECH_SCRAM_SHA256))
        return sasl_challenge(sa, out, first, first_challenge);
    sa->state = first;
    if (empty) /* a zero-length client-first-message */
        return sasl_fail(sa, out, MPC_SASL_ERR_MALFORMED);
    char *msg;
    size_t len;
    mpc_sasl_error err = sasl_decode(sa, initial, initial_len, &msg, &len);
    if (err != MPC_SASL_ERR_NONE)
        return sasl_fail(sa, out, err);
    return sasl_input(sa, msg, len, out);
}

mpc_sasl_status mpc_sasl_step(mpc_sasl *sa, const char *line, size_t len, mpc_sasl_out *out)
{
    out_reset(out);
    switch (sa->state) {
    case ST_PLAIN:
    case ST_LOGIN_USER:
    case ST_LOGIN_PASS:
    case ST_SCRAM_FIRST:
    case ST_SCRAM_FINAL:
    case ST_SCRAM_ACK:
        break;
    default:
        return sasl_fail(sa, out, MPC_SASL_ERR_STATE);
    }
    if (len == 1 && line[0] == '*')
        return sasl_fail(sa, out, MPC_SASL_ERR_CANCELLED);
    char *msg;
    size_t mlen;
    mpc_sasl_error err = sasl_decode(sa, line, len, &msg, &mlen);
    if (err != MPC_SASL_ERR_NONE)
        return sasl_fail(sa, out, err);
    return sasl_input(sa, msg, mlen, out);
}

/* ---- allow_nets ---------------------------------------------------------------------------------- */

typedef struct net_addr {
    int v6;                 /* 0: IPv4 in a[0..4) */
    unsigned char a[16];
} net_addr;

/* An IP address from s[0..len) ("192.0.2.1", "2001:db8::1", "[::1]"); IPv4-mapped IPv6 becomes IPv4. */
static int net_parse_addr(const char *s, size_t len, net_addr *out)
{
    char buf[64];
    if (len >= 2 && s[0] == '[' && s[len - 1] == ']')
        s++, len -= 2;
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->a) == 1)
        return 0;
    if (inet_pton(AF_INET6, buf, out->a) != 1)
        return -1;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(out->a, mapped, 12) == 0) {
        memmove(out->a, out->a + 12, 4);
        memset(out->a + 4, 0, 12);
        return 0;
    }
    out->v6 = 1;
    return 0;
}

/* One allow_nets entry: "ADDR" or "ADDR/BITS". Returns 0 and the network, or -1. */
static int net_parse_entry(const char *s, size_t len, net_addr *net, unsigned *bits)
{
    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t)(slash - s) : len;
    char abuf[64];
    if (alen == 0 || alen >= sizeof abuf)
        return -1;
    memcpy(abuf, s, alen);
    abuf[alen] = '\0';
    int mapped = strchr(abuf, ':') != NULL;
    if (net_parse_addr(s, alen, net) != 0)
        return -1;
    unsigned max = net->v6 ? 128 : 32;
    if (!slash) {
        *bits = max;
        return 0;
    }
    const char *d = slash + 1, *end = s + len;
    if (d == end || end - d > 3)
        return -1;
    unsigned b = 0;
    for (; d < end; d++) {
        if (*d < '0' || *d > '9')
            return -1;
        b = b * 10 + (unsigned)(*d - '0');
    }
    if (!net->v6 && mapped) { /* ::ffff:a.b.c.d/NN counts bits of the IPv6 form */
        if (b < 96 || b > 128)
            return -1;
        b -= 96;
    }
    if (b > max)
        return -1;
    *bits = b;
    return 0;
}

static int net_contains(const net_addr *net, unsigned bits, const net_addr *a)
{
    if (net->v6 != a->v6)
        return 0;
    unsigned full = bits / 8, rest = bits % 8;
    if (memcmp(net->a, a->a, full) != 0)
        return 0;
    if (rest) {
        unsigned char mask = (unsigned char)(0xff << (8 - rest));
        if ((net->a[full] & mask) != (a->a[full] & mask))
            return 0;
    }
    return 1;
}

/* Calls fn on each trimmed entry; stops when fn returns non-zero and returns that. */
static int nets_each(const char *nets, int (*fn)(const char *s, size_t len, void *arg), void *arg)
{
    const char *p = nets;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *e = comma ? comma : p + strlen(p);
        const char *b = p;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        int r = fn(b, (size_t)(e - b), arg);
        if (r)
            return r;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

typedef struct net_match_arg {
    int client_ok;
    net_addr client;
} net_match_arg;

static int net_match_one(const char *s, size_t len, void *arg)
{
    net_match_arg *m = arg;
    net_addr net;
    unsigned bits;
    if (len == 5 && strncasecmp(s, "local", 5) == 0)
        return !m->client_ok; /* Dovecot's "local": a connection that is not over IP */
    return m->client_ok && net_parse_entry(s, len, &net, &bits) == 0 && net_contains(&net, bits, &m->client);
}

int mpc_sasl_allowed_from(const char *allow_nets, const char *client_addr)
{
    if (!allow_nets)
        return 1;
    net_match_arg m;
    m.client_ok = client_addr && net_parse_addr(client_addr, strlen(client_addr), &m.client) == 0;
    return nets_each(allow_nets, net_match_one, &m) ? 1 : 0;
}

static int net_invalid_one(const char *s, size_t len, void *arg)
{
    net_addr net;
    unsigned bits;
    (void)arg;
    if (len == 5 && strncasecmp(s, "local", 5) == 0)
        return 0;
    return net_parse_entry(s, len, &net, &bits) != 0;
}

int mpc_sasl_nets_valid(const char *allow_nets)
{
    return allow_nets && nets_each(allow_nets, net_invalid_one, NULL) == 0;
}

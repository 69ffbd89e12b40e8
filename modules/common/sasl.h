/*
 * SASL server mechanisms for SMTP AUTH (RFC 4954), POP3 AUTH (RFC 5034) and IMAP AUTHENTICATE
 * (RFC 3501 / RFC 9051): PLAIN (RFC 4616), LOGIN (the de-facto "Username:"/"Password:" exchange) and
 * SCRAM-SHA-256 (RFC 5802 + RFC 7677, without channel binding).
 *
 * Sans-I/O and non-blocking: the handler feeds the client's lines, the machine says what to do next.
 * It never calls the user database itself: when it needs the database it returns NEED_VERIFY or
 * NEED_SCRAM_SECRET, the handler runs auth->verify() / auth->secret() in a job (host->run_blocking) and
 * feeds the result back. Everything is allocated from the caller's pool; passwords, decoded responses
 * and SCRAM keys are wiped (OPENSSL_cleanse) as soon as they are used, and in any case when the pool is
 * cleared or mpc_sasl_destroy() is called.
 *
 *   mpc_sasl *sa = mpc_sasl_create(pool, 0);
 *   st = mpc_sasl_start(sa, "PLAIN", initial, initial_len, &out);   initial: NULL when the command had none
 *   loop:
 *     CHALLENGE          send out.challenge ("334 %s" / "+ %s"), read one line, st = mpc_sasl_step(sa, line..)
 *     NEED_VERIFY        job: rc = auth->verify(a, out.authcid, out.password, pool, &info);
 *                        then st = mpc_sasl_verified(sa, rc, &out)
 *     NEED_SCRAM_SECRET  job: rc = auth->secret(a, out.authcid, MP_SECRET_SCRAM_SHA256, pool, &secret);
 *                        then st = mpc_sasl_scram_secret(sa, rc, &secret, &out)   (also when rc != OK)
 *     SUCCESS            logged in as out.authcid; for SCRAM out.final_data is the server's last message
 *     FAIL               out.error says why (mpc_sasl_error_str); failed() delays MPC_SASL_ERR_AUTH
 *
 * Lines are passed without their CRLF. The initial response is the text after the mechanism name, where
 * "=" means a zero-length response (RFC 4954 section 4, RFC 4959, RFC 5034). A line "*" cancels.
 *
 * SASLprep (RFC 4013) is not implemented. PLAIN and LOGIN accept any UTF-8 (the database compares bytes).
 * SCRAM-SHA-256 accepts only printable ASCII user names (0x20-0x7e), for which SASLprep is the identity;
 * a client's SASLprep of a non-ASCII password and the database's bytes may then differ, which is why the
 * passwd-file provider derives SCRAM secrets from {PLAIN} entries only for ASCII passwords.
 */
#ifndef MPC_SASL_H
#define MPC_SASL_H

#include <stddef.h>
#include <apr_pools.h>
#include <mailproto/auth.h>

/* The longest client response accepted, in base64 characters (the initial response included). */
#define MPC_SASL_MAX_RESPONSE 8192
/* The longest user name, authorization id or password accepted, in bytes. */
#define MPC_SASL_MAX_FIELD 1024

typedef enum mpc_sasl_status {
    MPC_SASL_CHALLENGE = 1,         /* send out->challenge, then pass the client's next line to step() */
    MPC_SASL_NEED_VERIFY = 2,       /* check out->authcid / out->password, then call mpc_sasl_verified() */
    MPC_SASL_NEED_SCRAM_SECRET = 3, /* fetch out->authcid's SCRAM secret, then call mpc_sasl_scram_secret() */
    MPC_SASL_SUCCESS = 4,           /* authenticated as out->authcid */
    MPC_SASL_FAIL = 5               /* out->error says why; the exchange is over */
} mpc_sasl_status;

typedef enum mpc_sasl_error {
    MPC_SASL_ERR_NONE = 0,
    MPC_SASL_ERR_MECHANISM,       /* unknown or unsupported mechanism (SMTP 504 5.5.4) */
    MPC_SASL_ERR_BASE64,          /* a response that is not strict base64 (SMTP 501 5.5.2) */
    MPC_SASL_ERR_TOO_LONG,        /* a response over MPC_SASL_MAX_RESPONSE (SMTP 500 5.5.6) */
    MPC_SASL_ERR_MALFORMED,       /* the decoded message breaks the mechanism's syntax (SMTP 501 5.5.2) */
    MPC_SASL_ERR_CHANNEL_BINDING, /* SCRAM "p=": channel binding asked for, we offer no -PLUS (501 5.5.2) */
    MPC_SASL_ERR_AUTHZID,         /* an authorization id that is not the user's own (SMTP 535 5.7.8) */
    MPC_SASL_ERR_CANCELLED,       /* the client sent "*" (SMTP 501 5.7.0) */
    MPC_SASL_ERR_AUTH,            /* wrong user or password, or SCRAM proof (SMTP 535 5.7.8) */
    MPC_SASL_ERR_TEMP,            /* the user database failed for now, MP_AUTH_TEMPFAIL (SMTP 454 4.7.0) */
    MPC_SASL_ERR_STATE,           /* a call that does not fit the state (a handler bug) */
    MPC_SASL_ERR_INTERNAL         /* the random generator or a digest failed */
} mpc_sasl_error;

/* Options for mpc_sasl_create(). */
enum {
    /*
     * Send SCRAM's server-final-message as one more challenge instead of with the success: the machine
     * returns CHALLENGE with it, expects an empty response, then returns SUCCESS (final_data NULL). For
     * protocols without "additional data with success" (RFC 4422 section 5), e.g. SMTP AUTH (RFC 4954).
     */
    MPC_SASL_FINAL_AS_CHALLENGE = 1u << 0
};

typedef struct mpc_sasl mpc_sasl;

/* What a call produced. Strings live in the pool given to mpc_sasl_create(). */
typedef struct mpc_sasl_out {
    const char *challenge;  /* CHALLENGE: base64, possibly "" (an empty challenge); NUL-terminated */
    const char *authcid;    /* NEED_VERIFY, NEED_SCRAM_SECRET, SUCCESS: the user name the client gave;
                               FAIL: the same when it was known (for logs), else NULL */
    const char *authzid;    /* NEED_VERIFY, SUCCESS: "" when none was given, else equal to authcid */
    const char *password;   /* NEED_VERIFY only; wiped by mpc_sasl_verified() */
    const char *final_data; /* SUCCESS: SCRAM's base64 server-final-message ("v=..."), else NULL */
    mpc_sasl_error error;   /* FAIL */
} mpc_sasl_out;

/* 1 when `mech` (case-insensitive) is a mechanism this file implements: PLAIN, LOGIN, SCRAM-SHA-256. */
int mpc_sasl_supported(const char *mech);

/* A new exchange, everything in `pool` (its cleanup wipes the secrets). flags: MPC_SASL_FINAL_AS_CHALLENGE. */
mpc_sasl *mpc_sasl_create(apr_pool_t *pool, unsigned flags);

/*
 * Starts `mech`. `initial` is the initial response as sent (base64, "=" for zero length), NULL when the
 * client sent none; then the first reply is an empty challenge (PLAIN, SCRAM) or "Username:" (LOGIN).
 * For PLAIN and LOGIN a zero-length initial response is treated like none (as Dovecot does for LOGIN);
 * for SCRAM it is malformed.
 */
mpc_sasl_status mpc_sasl_start(mpc_sasl *sa, const char *mech, const char *initial, size_t initial_len,
                               mpc_sasl_out *out);

/* The client's answer to a CHALLENGE: one line without CRLF. "*" cancels. */
mpc_sasl_status mpc_sasl_step(mpc_sasl *sa, const char *line, size_t len, mpc_sasl_out *out);

/* After NEED_VERIFY: what auth->verify() returned. SUCCESS for MP_AUTH_OK, else FAIL (ERR_TEMP for
   MP_AUTH_TEMPFAIL, ERR_AUTH otherwise). Wipes the password. */
mpc_sasl_status mpc_sasl_verified(mpc_sasl *sa, int auth_rc, mpc_sasl_out *out);

/*
 * After NEED_SCRAM_SECRET: what auth->secret(MP_SECRET_SCRAM_SHA256) returned and the secret it filled.
 * For anything but MP_AUTH_OK (unknown user, no SCRAM secret) and MP_AUTH_TEMPFAIL the exchange goes on
 * with a made-up secret (a salt stable per user name, the last real iteration count) and fails at the
 * proof, so the client cannot tell an unknown user from a wrong password (RFC 5802 section 9).
 * Returns CHALLENGE (server-first-message), or FAIL (ERR_TEMP, ERR_INTERNAL). The copy of the secret is
 * wiped when the exchange ends; the caller wipes its own.
 */
mpc_sasl_status mpc_sasl_scram_secret(mpc_sasl *sa, int auth_rc, const mp_scram_secret *secret,
                                      mpc_sasl_out *out);

/* Wipes every secret now (the pool's cleanup does it too). The exchange is over afterwards. */
void mpc_sasl_destroy(mpc_sasl *sa);

/* A short English text for an error, for logs ("malformed base64"). */
const char *mpc_sasl_error_str(mpc_sasl_error err);

/* Tests only: use this server nonce (printable ASCII, no ',') instead of a random one. Call before start. */
int mpc_sasl_set_server_nonce(mpc_sasl *sa, const char *nonce);

/*
 * The SCRAM-SHA-256 secret for a password (RFC 5802 section 3): SaltedPassword = PBKDF2-HMAC-SHA-256
 * (password, salt, iterations), StoredKey = H(HMAC(SaltedPassword, "Client Key")), ServerKey =
 * HMAC(SaltedPassword, "Server Key"). salt_len 1..64. Returns 0, or -1. Intermediate keys are wiped.
 */
int mpc_sasl_scram_derive(const char *password, size_t password_len, const unsigned char *salt, size_t salt_len,
                          unsigned iterations, mp_scram_secret *out);

/*
 * Dovecot's allow_nets extra field, which every handler applies after SUCCESS whatever the mechanism (the
 * auth interface has no client address): 1 when `client_addr` is inside one of the comma-separated
 * addresses or CIDR networks of `allow_nets` ("192.0.2.0/24,2001:db8::/32,::1"), or allow_nets is NULL;
 * 0 otherwise, and for a client address that is not an IP address. IPv4-mapped IPv6 addresses match IPv4
 * networks. Entries that do not parse match nothing.
 */
int mpc_sasl_allowed_from(const char *allow_nets, const char *client_addr);

/* 1 when every entry of an allow_nets value parses (for providers checking their files). */
int mpc_sasl_nets_valid(const char *allow_nets);

#endif

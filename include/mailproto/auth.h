/*
 * The `auth` provider interface: the user database.
 *
 * A handler gets an instance with host->provider_instance(s, "auth", "UserDB", MP_AUTH_IFACE_VERSION,
 * &iface) from the UserDB directive ("passwd-file:users": the text after the colon is the spec). Lookups may
 * block (crypt is slow on purpose): call them from a job (host->run_blocking).
 *
 * Failed logins are slowed down by the caller, not by sleeping in a worker: failed() records the failure
 * for the client address and returns how long to wait before answering (growing per address);
 * succeeded() forgets the address's failures.
 */
#ifndef MAILPROTO_AUTH_H
#define MAILPROTO_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>
#include <mailproto/module.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MP_AUTH_IFACE_VERSION 1

enum {
    MP_AUTH_OK = 0,
    MP_AUTH_FAIL = -1,      /* wrong password or no such user (the caller cannot tell which) */
    MP_AUTH_NOUSER = -2,    /* lookup(): no such user */
    MP_AUTH_TEMPFAIL = -3,  /* the database cannot be read now; the provider logged why */
    MP_AUTH_NOSECRET = -4,  /* secret(): the stored hash cannot give this kind of secret */
    MP_AUTH_AGAIN = -5      /* lookup_nowait(): the answer needs I/O; ask lookup() from a job */
};

typedef struct mp_auth mp_auth;

/* What the database says about a user (Dovecot passwd-file fields). */
typedef struct mp_auth_user {
    const char *user;          /* canonical name, "alice@example.test" */
    apr_table_t *fields;       /* extra fields: "userdb_quota_rule", "nologin", "home", ... */
    uint64_t quota_bytes;      /* 0: no limit */
    uint64_t quota_messages;
} mp_auth_user;

/* What SCRAM needs (RFC 5802 section 3): from a {SCRAM-SHA-256} entry, or derived from {PLAIN}. */
typedef struct mp_scram_secret {
    unsigned char salt[64];
    size_t salt_len;
    unsigned iterations;
    unsigned char stored_key[32];
    unsigned char server_key[32];
} mp_scram_secret;

typedef enum mp_secret_kind {
    MP_SECRET_PLAINTEXT = 1,   /* the password itself (APOP, CRAM-MD5): only {PLAIN} entries have it */
    MP_SECRET_SCRAM_SHA256 = 2 /* fills an mp_scram_secret */
} mp_secret_kind;

typedef struct mp_auth_iface {
    /* An instance (an mp_auth *) from the spec; relative paths resolve against base_dir. Cheap. Handlers
       get instances from host->provider_instance(s, "auth", "UserDB", ...). */
    mp_instance_fn instance;
    /* Checks a password in constant time with respect to its content; an unknown user costs as much as a
       known one. MP_AUTH_OK fills *info_r (may be NULL). */
    int (*verify)(mp_auth *a, const char *user, const char *password, apr_pool_t *pool, mp_auth_user *info_r);
    /* Does the user exist (SMTP RCPT)? MP_AUTH_OK or MP_AUTH_NOUSER. */
    int (*lookup)(mp_auth *a, const char *user, apr_pool_t *pool, mp_auth_user *info_r);
    /* A secret for challenge-response mechanisms. `out` is a `const char **` for MP_SECRET_PLAINTEXT and an
       mp_scram_secret * for MP_SECRET_SCRAM_SHA256. MP_AUTH_NOSECRET when the entry's scheme cannot.
       SCRAM: with MP_AUTH_NOUSER, MP_AUTH_FAIL or MP_AUTH_NOSECRET a provider may still fill `out` (the
       caller zeroes it first) with a made-up secret that looks like its real ones; the exchange then runs
       on it and fails at the proof (RFC 5802 section 9). Left empty, the caller makes one up itself. */
    int (*secret)(mp_auth *a, const char *user, mp_secret_kind kind, apr_pool_t *pool, void *out);
    /* 1 if every user has a secret of this kind (decides whether APOP / SCRAM are offered). Cheap. */
    int (*has_secrets)(mp_auth *a, mp_secret_kind kind);
    /* Thread-safe, cheap. */
    apr_interval_time_t (*failed)(mp_auth *a, const char *client_addr);
    void (*succeeded)(mp_auth *a, const char *client_addr);
    /* Optional (NULL in providers built before it; interface minor addition in a reserved slot): lookup()
       answered from memory on the caller's thread, never blocking, or MP_AUTH_AGAIN when that would need
       I/O (a file to re-check, a database to ask); the caller then runs lookup() in a job. It spares SMTP
       RCPT a thread hand-off when the answer is at hand. */
    int (*lookup_nowait)(mp_auth *a, const char *user, apr_pool_t *pool, mp_auth_user *info_r);
    void *reserved[7];
} mp_auth_iface;

#ifdef __cplusplus
}
#endif

#endif

/*
 * mod_passwd internals, shared by its files and by tests/unit/test_passwd.c (which links them directly).
 *
 *   passwd.c   the module descriptor, the mp_auth_iface table, instances and the reload-on-change logic
 *   pw_db.c    reading a passwd-file into a table of users; password schemes and their checks
 *   pw_fail.c  the per-client-address failure counter behind failed() / succeeded()
 */
#ifndef MAILPROTO_PW_INTERNAL_H
#define MAILPROTO_PW_INTERNAL_H

#include <stdint.h>
#include <sys/stat.h>

#include <apr_hash.h>
#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>

#include <mailproto/auth.h>
#include <mailproto/host.h>

/* Log message ids of this module (host->log's msgid). */
enum {
    PW_LOG_MALFORMED = 27001,   /* FILE:LINE: a line or password field that cannot be used */
    PW_LOG_DUPLICATE = 27002,   /* FILE:LINE: a user already defined earlier */
    PW_LOG_NOPASSWORD = 27003,  /* FILE:LINE: no password: the user exists but cannot log in */
    PW_LOG_FIELD = 27004,       /* FILE:LINE: an extra field that is ignored or partly understood */
    PW_LOG_READ = 27005,        /* the file cannot be read */
    PW_LOG_LOADED = 27006,      /* the file was (re)read */
    PW_LOG_VERIFY = 27007,      /* a check failed for a reason other than a wrong password */
    PW_LOG_INIT = 27008         /* what this build supports */
};

/* host->log through the host kept from init(); nothing is logged before init. */
void pw_log(mp_log_level level, int msgid, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* The clock (apr_time_now, or a test's). */
apr_time_t pw_now(void);
/* Tests: replace the clock; NULL restores apr_time_now. */
void pw_set_clock(apr_time_t (*now)(void));

/* ---- the user table ---- */

typedef enum pw_scheme {
    PW_NONE = 0,      /* empty password field: the user exists but cannot log in */
    PW_BAD,           /* malformed or unsupported (logged): the user exists but cannot log in */
    PW_CRYPT,         /* crypt(3): {SHA512-CRYPT} {SHA256-CRYPT} {BLF-CRYPT} {MD5-CRYPT} {CRYPT}, no prefix */
    PW_PLAIN,         /* {PLAIN} {CLEAR} {CLEARTEXT} */
    PW_SCRAM_SHA256,  /* {SCRAM-SHA-256}iter,salt,StoredKey,ServerKey (Dovecot's format) */
    PW_ARGON2I,       /* {ARGON2I}$argon2i$v=19$m=..,t=..,p=..$salt$hash (builds with libargon2) */
    PW_ARGON2ID       /* {ARGON2ID}$argon2id$... */
} pw_scheme;

typedef struct pw_entry {
    const char *user;                 /* canonical: local part as written, domain lower-cased */
    pw_scheme scheme;
    const char *hash;                 /* crypt string, plaintext or argon2 string */
    size_t hash_len;
    unsigned char plain_digest[32];   /* PW_PLAIN: SHA-256 of the password, compared in constant time */
    mp_scram_secret scram;            /* PW_SCRAM_SHA256 */
    int plain_ascii;                  /* PW_PLAIN: printable ASCII, so a SCRAM secret can be derived */
    int nologin;                      /* "nologin": right password or not, the login fails */
    int nopassword;                   /* "nopassword" (any password) is refused: cannot log in */
    apr_table_t *fields;              /* "uid", "gid", "home" when given, and every extra field */
    uint64_t quota_bytes, quota_messages;
    unsigned line;
} pw_entry;

typedef struct pw_db {
    apr_pool_t *pool;                 /* unmanaged: freed when the last reader lets go */
    const char *path;
    apr_hash_t *users;                /* canonical name -> pw_entry */
    unsigned refs;                    /* the instance's reference plus one per reader (under its lock) */
    struct stat id;                   /* what was read: device, inode, size, mtime, ctime */
    unsigned nusers;
    unsigned nlogin;                  /* users that can log in at all */
    unsigned nplaintext;              /* ... of which have MP_SECRET_PLAINTEXT */
    unsigned nscram;                  /* ... of which have MP_SECRET_SCRAM_SHA256 (stored or derivable) */
    unsigned nderived;                /* ... of which by derivation from {PLAIN} (costs a PBKDF2) */
    const pw_entry *dummy;            /* an entry of the most common cost: what an unknown user costs */
    const pw_entry *scram_model;      /* a stored {SCRAM-SHA-256} entry: what a made-up secret looks like */
} pw_db;

/* Reads `path`. NULL when it cannot be read (*errno_r set, *err_r says why); malformed lines are logged
   and do not make it fail. */
pw_db *pw_db_load(const char *path, int *errno_r, const char **err_r);
void pw_db_free(pw_db *db);
/* The entry of `user` (any case in the domain part), or NULL. */
const pw_entry *pw_db_find(const pw_db *db, const char *user);
/* 1 when the entry can be logged into at all (a usable scheme, no nologin / nopassword). */
int pw_entry_can_login(const pw_entry *e);
/* 1 when `password` matches the entry's hash; costs the scheme's full price either way. */
int pw_entry_check(const pw_entry *e, const char *password);
/* Spends what checking a password against db->dummy costs (for unknown users). */
void pw_db_dummy_check(const pw_db *db, const char *password);
/* The canonical form of a user name into buf (domain lower-cased); -1 when it is not a valid name. */
int pw_canon(const char *user, char *buf, size_t size);
#define PW_MAX_USER 512

/* ---- failed logins per client address ---- */

#define PW_FAIL_MAX 10000                          /* addresses remembered, at most */
#define PW_FAIL_SLOTS 16384                        /* hash slots (power of two, load <= 61%) */
#define PW_FAIL_EXPIRE apr_time_from_sec(15 * 60)  /* forgotten after 15 minutes without failures */
#define PW_FAIL_BASE apr_time_from_msec(250)       /* the first failure's delay; doubles each time */
#define PW_FAIL_CAP apr_time_from_sec(15)          /* the longest delay */

typedef struct pw_fails pw_fails;
pw_fails *pw_fails_create(apr_pool_t *pool);
/* Counts a failure for the address, returns the delay before answering. Thread-safe. */
apr_interval_time_t pw_fails_failed(pw_fails *f, const char *client_addr);
void pw_fails_succeeded(pw_fails *f, const char *client_addr);
/* Addresses remembered now (tests). */
unsigned pw_fails_size(pw_fails *f);

#endif

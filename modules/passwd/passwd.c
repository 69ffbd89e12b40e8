/*
 * mod_passwd: the "passwd-file" auth provider (auth.h), a Dovecot-compatible user file.
 *
 *   LoadModule passwd mod_passwd.so
 *   UserDB     passwd-file:users          # the spec is the file, relative to the configuration's folder
 *
 * File format, schemes and user-name matching: see pw_db.c. Summary of the schemes:
 *   {SHA512-CRYPT} {SHA256-CRYPT} {MD5-CRYPT} {CRYPT} and no prefix: crypt(3) (libcrypt's crypt_r)
 *   {BLF-CRYPT}      bcrypt, when this libcrypt has it (libxcrypt does; checked per line at load)
 *   {ARGON2I} {ARGON2ID}  PHC strings, when built with libargon2 (else such lines are refused, logged)
 *   {PLAIN} {CLEAR} {CLEARTEXT}  the password itself (tests, APOP); also gives SCRAM secrets (derived)
 *   {SCRAM-SHA-256}  Dovecot's "iterations,salt,StoredKey,ServerKey": verify() and SCRAM secrets
 *
 * The file is read when the instance is made, and again when it changes: at most once a second a lookup
 * stat()s it and compares device, inode, size, mtime and ctime with what was read. One thread re-reads
 * while the others keep using the previous table (reference-counted; freed when its last reader is done).
 * A file that cannot be read makes lookups return MP_AUTH_TEMPFAIL until it can be read again.
 *
 * Timing: verify() costs the same whether the user exists or not (an unknown user pays for checking the
 * password against an entry of the file's most common scheme and cost), and compares hashes with
 * CRYPTO_memcmp. Failed logins are counted per client address by failed() (pw_fail.c).
 */
#include "pw_internal.h"

#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <apr_strings.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "sasl.h"

#define PW_CHECK_INTERVAL apr_time_from_sec(1)  /* stat() the file at most this often */
#define PW_DERIVED_ITERATIONS 4096              /* SCRAM secrets derived from {PLAIN} entries */
#define PW_DERIVED_SALT_LEN 16

/* ---- host, log, clock ---- */

static const mp_host *pw_host; /* from init(); NULL before it (nothing is logged then) */

void pw_log(mp_log_level level, int msgid, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    if (!pw_host || !pw_host->log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pw_host->log(NULL, level, msgid, "%s", msg);
}

static apr_time_t (*pw_clock)(void) = apr_time_now;

apr_time_t pw_now(void)
{
    return pw_clock();
}

void pw_set_clock(apr_time_t (*now)(void))
{
    pw_clock = now ? now : apr_time_now;
}

/* ---- instances ---- */

struct mp_auth {
    apr_pool_t *pool;
    const char *path;
    pthread_mutex_t lock;
    pw_db *db;                 /* the current table; NULL while the file cannot be read */
    apr_time_t checked;        /* the last stat() */
    int reloading;             /* a thread is reading the file */
    int load_errno;            /* of the last failed read, so it is logged once, not every second */
    unsigned char key[32];     /* salts for SCRAM secrets derived from {PLAIN} */
    pw_fails *fails;
};

/* Drops one reference (under a->lock). */
static void db_release_locked(pw_db *db)
{
    if (db && --db->refs == 0)
        pw_db_free(db);
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void log_loaded(const pw_db *db, const char *how)
{
    pw_log(MP_LOG_INFO, PW_LOG_LOADED, "passwd-file %s: %s, %u users (%u can log in)", db->path, how, db->nusers,
           db->nlogin);
}

/*
 * The current table with a reference the caller gives back with db_release(); NULL when the file cannot
 * be read. With may_reload, first checks (at most once a second) whether the file changed, and re-reads
 * it if so, outside the lock: other threads meanwhile keep using the table they have.
 */
static pw_db *db_acquire(mp_auth *a, int may_reload)
{
    int reload = 0;
    pthread_mutex_lock(&a->lock);
    apr_time_t now = pw_now();
    if (may_reload && !a->reloading && (now - a->checked >= PW_CHECK_INTERVAL || now < a->checked)) {
        struct stat st;
        a->checked = now;
        if (stat(a->path, &st) != 0 || !a->db || !same_file(&st, &a->db->id)) {
            a->reloading = 1;
            reload = 1;
        }
    }
    pw_db *db = a->db;
    if (db)
        db->refs++;
    pthread_mutex_unlock(&a->lock);
    if (!reload)
        return db;

    int err_no;
    const char *err;
    pw_db *fresh = pw_db_load(a->path, &err_no, &err);
    pthread_mutex_lock(&a->lock);
    a->reloading = 0;
    pw_db *old = a->db;
    a->db = fresh;
    if (fresh) {
        fresh->refs = 2; /* the instance's and this caller's */
        a->load_errno = 0;
    }
    db_release_locked(old); /* the instance's reference */
    db_release_locked(db);  /* this caller's reference to the old table */
    int log_error = !fresh && err_no != a->load_errno;
    if (!fresh)
        a->load_errno = err_no;
    pthread_mutex_unlock(&a->lock);
    if (fresh)
        log_loaded(fresh, "re-read");
    else if (log_error)
        pw_log(MP_LOG_ERROR, PW_LOG_READ, "passwd-file %s: %s: %s; logins fail temporarily until it can be read",
               a->path, err, strerror(err_no));
    return fresh;
}

static void db_release(mp_auth *a, pw_db *db)
{
    if (!db)
        return;
    pthread_mutex_lock(&a->lock);
    db_release_locked(db);
    pthread_mutex_unlock(&a->lock);
}

static apr_status_t auth_cleanup(void *data)
{
    mp_auth *a = data;
    pthread_mutex_lock(&a->lock);
    db_release_locked(a->db);
    a->db = NULL;
    pthread_mutex_unlock(&a->lock);
    pthread_mutex_destroy(&a->lock);
    OPENSSL_cleanse(a->key, sizeof a->key);
    return APR_SUCCESS;
}

static int pw_instance(const char *spec, const char *base_dir, apr_pool_t *pool, void **auth_r,
                       const char **err_r)
{
    *auth_r = NULL;
    if (!spec || !*spec) {
        *err_r = "passwd-file: no file given (UserDB passwd-file:FILE)";
        return MP_AUTH_FAIL;
    }
    const char *path = spec[0] == '/' || !base_dir || !*base_dir ? apr_pstrdup(pool, spec)
                                                                   : apr_pstrcat(pool, base_dir, "/", spec, NULL);
    int err_no;
    const char *err;
    pw_db *db = pw_db_load(path, &err_no, &err);
    if (!db) {
        *err_r = apr_psprintf(pool, "passwd-file %s: %s: %s", path, err, strerror(err_no));
        return MP_AUTH_FAIL;
    }
    mp_auth *a = apr_pcalloc(pool, sizeof *a);
    a->pool = pool;
    a->path = path;
    pthread_mutex_init(&a->lock, NULL);
    a->db = db;
    db->refs = 1;
    a->checked = pw_now();
    if (RAND_bytes(a->key, sizeof a->key) != 1) {
        pw_db_free(db);
        pthread_mutex_destroy(&a->lock);
        *err_r = "passwd-file: the random generator failed";
        return MP_AUTH_FAIL;
    }
    a->fails = pw_fails_create(pool);
    apr_pool_cleanup_register(pool, a, auth_cleanup, apr_pool_cleanup_null);
    log_loaded(db, "read");
    *auth_r = a;
    return MP_AUTH_OK;
}

/* ---- lookups (an empty password never matches, whatever the entry says) ---- */

typedef struct copy_ctx {
    apr_pool_t *pool;
    apr_table_t *to;
} copy_ctx;

static int copy_field(void *data, const char *key, const char *value)
{
    copy_ctx *c = data;
    apr_table_add(c->to, apr_pstrdup(c->pool, key), apr_pstrdup(c->pool, value));
    return 1;
}

/* Copies what the caller sees into its pool: the table may be freed by a reload right after. */
static void fill_info(const pw_entry *e, apr_pool_t *pool, mp_auth_user *info)
{
    if (!info)
        return;
    copy_ctx c = {pool, apr_table_make(pool, apr_table_elts(e->fields)->nelts + 1)};
    apr_table_do(copy_field, &c, e->fields, NULL);
    info->user = apr_pstrdup(pool, e->user);
    info->fields = c.to;
    info->quota_bytes = e->quota_bytes;
    info->quota_messages = e->quota_messages;
}

static int pw_verify(mp_auth *a, const char *user, const char *password, apr_pool_t *pool, mp_auth_user *info_r)
{
    pw_db *db = db_acquire(a, 1);
    if (!db)
        return MP_AUTH_TEMPFAIL;
    const pw_entry *e = pw_db_find(db, user);
    int ok;
    if (!password)
        password = "";
    if (e && e->scheme != PW_NONE && e->scheme != PW_BAD && !e->nopassword && *password)
        ok = pw_entry_check(e, password) && !e->nologin; /* nologin pays the full price too */
    else {
        pw_db_dummy_check(db, password);
        ok = 0;
    }
    if (ok)
        fill_info(e, pool, info_r);
    db_release(a, db);
    return ok ? MP_AUTH_OK : MP_AUTH_FAIL;
}

static int pw_lookup(mp_auth *a, const char *user, apr_pool_t *pool, mp_auth_user *info_r)
{
    pw_db *db = db_acquire(a, 1);
    if (!db)
        return MP_AUTH_TEMPFAIL;
    const pw_entry *e = pw_db_find(db, user);
    if (e)
        fill_info(e, pool, info_r);
    db_release(a, db);
    return e ? MP_AUTH_OK : MP_AUTH_NOUSER;
}

/* lookup() without a stat() or a re-read: the table in memory while its once-a-second check is not due. */
static int pw_lookup_nowait(mp_auth *a, const char *user, apr_pool_t *pool, mp_auth_user *info_r)
{
    pthread_mutex_lock(&a->lock);
    apr_time_t now = pw_now();
    pw_db *db = a->db;
    if (!db || a->reloading || now - a->checked >= PW_CHECK_INTERVAL || now < a->checked) {
        pthread_mutex_unlock(&a->lock);
        return MP_AUTH_AGAIN;
    }
    db->refs++;
    pthread_mutex_unlock(&a->lock);
    const pw_entry *e = pw_db_find(db, user);
    if (e)
        fill_info(e, pool, info_r);
    db_release(a, db);
    return e ? MP_AUTH_OK : MP_AUTH_NOUSER;
}

/* SCRAM secret of a {PLAIN} entry: the salt is a keyed hash of the user, so it is stable per instance. */
static int derive_scram(mp_auth *a, const char *user, const char *password, mp_scram_secret *out)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha256(), a->key, sizeof a->key, (const unsigned char *)user, strlen(user), mac, &maclen))
        return -1;
    int r = mpc_sasl_scram_derive(password, strlen(password), mac, PW_DERIVED_SALT_LEN, PW_DERIVED_ITERATIONS, out);
    OPENSSL_cleanse(mac, sizeof mac);
    return r;
}

/* RFC 5802 section 9: a user who is unknown, cannot log in or has no SCRAM secret gets a made-up one that
   looks like the real ones (a salt stable per name and of the same kind, the same iteration count) and
   takes as long (every call costs one PBKDF2, as deriving a {PLAIN} user's secret does): the exchange then
   fails at the proof, and neither the server-first message nor its time tells that the user is not there. */
static int scram_secret(mp_auth *a, const pw_db *db, const pw_entry *e, const char *user, mp_scram_secret *out)
{
    int can = e && pw_entry_can_login(e);
    if (can && e->scheme == PW_PLAIN && e->plain_ascii)
        return derive_scram(a, e->user, e->hash, out) == 0 ? MP_AUTH_OK : MP_AUTH_TEMPFAIL;
    char canon[512];
    const char *name = e ? e->user : pw_canon(user, canon, sizeof canon) == 0 ? canon : user;
    mp_scram_secret made;
    memset(&made, 0, sizeof made);
    if (derive_scram(a, name, "", &made) != 0)
        return MP_AUTH_TEMPFAIL;
    if (can && e->scheme == PW_SCRAM_SHA256) {
        OPENSSL_cleanse(&made, sizeof made);
        *out = e->scram;
        return MP_AUTH_OK;
    }
    const pw_entry *model = db->scram_model;
    if (model && db->nderived * 2 <= db->nscram) { /* stored secrets are the usual kind here: look like one */
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int maclen = 0;
        if (!HMAC(EVP_sha256(), a->key, sizeof a->key, (const unsigned char *)name, strlen(name), mac, &maclen))
            return MP_AUTH_TEMPFAIL;
        made.salt_len = model->scram.salt_len < maclen ? model->scram.salt_len : maclen;
        memcpy(made.salt, mac, made.salt_len);
        made.iterations = model->scram.iterations;
    }
    *out = made;
    return !e ? MP_AUTH_NOUSER : !can ? MP_AUTH_FAIL : MP_AUTH_NOSECRET;
}

static int pw_secret(mp_auth *a, const char *user, mp_secret_kind kind, apr_pool_t *pool, void *out)
{
    if (!out || (kind != MP_SECRET_PLAINTEXT && kind != MP_SECRET_SCRAM_SHA256))
        return MP_AUTH_NOSECRET;
    pw_db *db = db_acquire(a, 1);
    if (!db)
        return MP_AUTH_TEMPFAIL;
    const pw_entry *e = pw_db_find(db, user);
    int rc;
    if (kind == MP_SECRET_SCRAM_SHA256) {
        rc = scram_secret(a, db, e, user, out);
    } else if (!e) {
        rc = MP_AUTH_NOUSER;
    } else if (!pw_entry_can_login(e)) {
        rc = MP_AUTH_FAIL;
    } else if (kind == MP_SECRET_PLAINTEXT) {
        if (e->scheme == PW_PLAIN) {
            *(const char **)out = apr_pstrmemdup(pool, e->hash, e->hash_len);
            rc = MP_AUTH_OK;
        } else {
            rc = MP_AUTH_NOSECRET;
        }
    } else {
        rc = MP_AUTH_NOSECRET;
    }
    db_release(a, db);
    return rc;
}

static int pw_has_secrets(mp_auth *a, mp_secret_kind kind)
{
    pw_db *db = db_acquire(a, 0); /* cheap: no stat(), no re-read */
    int r = 0;
    if (db && db->nlogin > 0) {
        if (kind == MP_SECRET_PLAINTEXT)
            r = db->nplaintext == db->nlogin;
        else if (kind == MP_SECRET_SCRAM_SHA256)
            r = db->nscram == db->nlogin;
    }
    db_release(a, db);
    return r;
}

static apr_interval_time_t pw_failed(mp_auth *a, const char *client_addr)
{
    return pw_fails_failed(a->fails, client_addr);
}

static void pw_succeeded(mp_auth *a, const char *client_addr)
{
    pw_fails_succeeded(a->fails, client_addr);
}

/* ---- the module ---- */

static const mp_auth_iface passwd_iface = {
    .instance = pw_instance,
    .verify = pw_verify,
    .lookup = pw_lookup,
    .secret = pw_secret,
    .has_secrets = pw_has_secrets,
    .failed = pw_failed,
    .succeeded = pw_succeeded,
    .lookup_nowait = pw_lookup_nowait,
};

static const mp_provider passwd_provider = {
    .kind = "auth",
    .name = "passwd-file",
    .iface_version = MP_AUTH_IFACE_VERSION,
    .iface = &passwd_iface,
};

static int passwd_init(const mp_host *host, apr_pool_t *pool, void **ctx_r)
{
    pw_host = host;
    *ctx_r = NULL;
    int blf = crypt_checksalt("$2y$") == CRYPT_SALT_OK;
#ifdef MAILPROTO_HAVE_ARGON2
    int argon2 = 1;
#else
    int argon2 = 0;
#endif
    pw_log(MP_LOG_DEBUG, PW_LOG_INIT, "passwd-file: BLF-CRYPT %s, ARGON2 %s", blf ? "supported" : "not supported",
           argon2 ? "supported" : "not supported");
    return 0;
}

static void passwd_fini(void *ctx)
{
    pw_host = NULL;
}

MP_MODULE {
    MP_MODULE_HEADER,
    .name = "passwd",
    .kind = MP_KIND_PROVIDER,
    .version = "1.0",
    .description = "passwd-file: Dovecot-compatible user database (auth provider)",
    .init = passwd_init,
    .fini = passwd_fini,
    .provider = &passwd_provider,
};

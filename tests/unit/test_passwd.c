/*
 * mod_passwd, the passwd-file auth provider, linked from its sources (mailproto_passwd_static) and driven
 * through its descriptor and mp_auth_iface table, with the fake host's log captured.
 *
 * Hashes are made while the test runs: `openssl passwd -6 / -5 / -1` (popen), crypt_r with
 * crypt_gensalt for BLF-CRYPT when libcrypt has bcrypt, libargon2 for ARGON2 when built with it, and the
 * Dovecot {SCRAM-SHA-256} entries with OpenSSL's PBKDF2, HMAC and SHA-256 directly.
 */
#include <crypt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_tables.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#ifdef MAILPROTO_HAVE_ARGON2
#include <argon2.h>
#endif

#include <mailproto/auth.h>
#include <mailproto/host.h>

#include "fake_host.h"
#include "pw_internal.h"
#include "sasl.h"

extern const mp_module mp_module_descriptor;

static apr_pool_t *pool;
static char tmpdir[256];
static fake_session *logfs;          /* the fake host answers host->log(NULL, ...) into its log */
static const mp_auth_iface *iface;
static _Atomic apr_time_t fake_now;

static apr_time_t test_clock(void)
{
    return atomic_load(&fake_now);
}

static void advance(apr_interval_time_t d)
{
    atomic_fetch_add(&fake_now, d);
}

/*
 * The provider logs from whatever thread calls it (a re-read happens inside a lookup, on a worker): the
 * real host's log is thread-safe, the fake host's buffer is not, so the module gets the fake's table with
 * a log that takes a lock first.
 */
static mp_host test_host;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void locked_log(mp_session *s, mp_log_level level, int msgid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void locked_log(mp_session *s, mp_log_level level, int msgid, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_lock);
    fake_host()->log(s, level, msgid, "%s", msg);
    pthread_mutex_unlock(&log_lock);
}

static long dummy_input(mp_session *s, const char *data, size_t len)
{
    return (long)len;
}

static const mp_protocol dummy_protocol = {.name = "dummy", .session_size = 8, .on_input = dummy_input};

static int suite_init(void)
{
    if (apr_initialize() != APR_SUCCESS || apr_pool_create(&pool, NULL) != APR_SUCCESS)
        return -1;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_passwd.XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    logfs = fake_new(&dummy_protocol, MP_TLS_OFF);
    void *ctx = NULL;
    test_host = *fake_host();
    test_host.log = locked_log;
    if (mp_module_descriptor.init(&test_host, pool, &ctx) != 0)
        return -1;
    iface = mp_module_descriptor.provider->iface;
    atomic_store(&fake_now, apr_time_now());
    pw_set_clock(test_clock);
    return 0;
}

static int suite_clean(void)
{
    pw_set_clock(NULL);
    mp_module_descriptor.fini(NULL);
    fake_end(logfs);
    apr_pool_destroy(pool);
    apr_terminate();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- helpers ---- */

static const char *path_of(const char *name)
{
    return apr_psprintf(pool, "%s/%s", tmpdir, name);
}

/* Replaces the file as editors and scripts do: write a new file, rename it over the old one. */
static void write_file(const char *name, const char *text)
{
    const char *tmp = path_of(apr_pstrcat(pool, name, ".tmp", NULL));
    FILE *f = fopen(tmp, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
    CU_ASSERT_EQUAL(rename(tmp, path_of(name)), 0);
}

/* Rewrites the file in place (same inode). */
static void rewrite_file(const char *name, const char *text)
{
    FILE *f = fopen(path_of(name), "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
}

static char *openssl_passwd(const char *flag, const char *password)
{
    char cmd[256], buf[256] = "";
    snprintf(cmd, sizeof cmd, "openssl passwd %s '%s'", flag, password);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(buf, sizeof buf, p)) {
        if (p)
            pclose(p);
        return NULL;
    }
    pclose(p);
    buf[strcspn(buf, "\r\n")] = '\0';
    return apr_pstrdup(pool, buf);
}

static int blf_supported(void)
{
    return crypt_checksalt("$2y$") == CRYPT_SALT_OK;
}

static char *crypt_with(const char *prefix, unsigned long cost, const char *password)
{
    char *salt = crypt_gensalt_ra(prefix, cost, NULL, 0);
    if (!salt)
        return NULL;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    const char *h = crypt_r(password, salt, cd);
    char *r = h && h[0] != '*' ? apr_pstrdup(pool, h) : NULL;
    free(cd);
    free(salt);
    return r;
}

static char *b64(const void *data, size_t len)
{
    char *out = apr_palloc(pool, 4 * ((len + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

/* A Dovecot {SCRAM-SHA-256} entry, made with OpenSSL only: iterations,salt,StoredKey,ServerKey */
static char *scram_entry(const char *password, const unsigned char *salt, size_t salt_len, unsigned iter)
{
    unsigned char salted[32], ck[32], sk[32], svk[32];
    unsigned int l;
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, (int)iter, EVP_sha256(), 32, salted);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, ck, &l);
    SHA256(ck, 32, sk);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Server Key", 10, svk, &l);
    return apr_psprintf(pool, "{SCRAM-SHA-256}%u,%s,%s,%s", iter, b64(salt, salt_len), b64(sk, 32), b64(svk, 32));
}

static char *scram_entry_random(const char *password)
{
    unsigned char salt[16];
    RAND_bytes(salt, sizeof salt);
    return scram_entry(password, salt, sizeof salt, 4096);
}

#ifdef MAILPROTO_HAVE_ARGON2
static char *argon2_entry(argon2_type type, const char *password)
{
    unsigned char salt[16];
    char enc[256];
    RAND_bytes(salt, sizeof salt);
    int r = argon2_hash(2, 1024, 1, password, strlen(password), salt, sizeof salt, NULL, 32, enc, sizeof enc, type,
                        ARGON2_VERSION_13);
    CU_ASSERT_EQUAL(r, ARGON2_OK);
    return apr_psprintf(pool, "{%s}%s", type == Argon2_i ? "ARGON2I" : "ARGON2ID", enc);
}
#endif

static mp_auth *instance(const char *name)
{
    void *a = NULL;
    const char *err = NULL;
    int rc = iface->instance(name, tmpdir, pool, &a, &err);
    CU_ASSERT_EQUAL(rc, MP_AUTH_OK);
    if (rc != MP_AUTH_OK)
        fprintf(stderr, "instance: %s\n", err ? err : "?");
    return a;
}

static int verify(mp_auth *a, const char *user, const char *pw)
{
    return iface->verify(a, user, pw, pool, NULL);
}

/* Occurrences of `needle` in the captured log. */
static unsigned log_count(const char *needle)
{
    unsigned n = 0;
    for (const char *p = fake_log(logfs); (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* ---- tests ---- */

static void test_descriptor(void)
{
    const mp_module *m = &mp_module_descriptor;
    CU_ASSERT_EQUAL(m->magic, MP_MODULE_MAGIC);
    CU_ASSERT_EQUAL(m->abi_major, MP_ABI_MAJOR);
    CU_ASSERT_STRING_EQUAL(m->name, "passwd");
    CU_ASSERT_EQUAL(m->kind, MP_KIND_PROVIDER);
    CU_ASSERT_PTR_NULL(m->protocol);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m->provider);
    CU_ASSERT_STRING_EQUAL(m->provider->kind, "auth");
    CU_ASSERT_STRING_EQUAL(m->provider->name, "passwd-file");
    CU_ASSERT_EQUAL(m->provider->iface_version, MP_AUTH_IFACE_VERSION);
    CU_ASSERT_PTR_NOT_NULL(iface->instance);
    CU_ASSERT_PTR_NOT_NULL(iface->verify);
    CU_ASSERT_PTR_NOT_NULL(iface->lookup);
    CU_ASSERT_PTR_NOT_NULL(iface->secret);
    CU_ASSERT_PTR_NOT_NULL(iface->has_secrets);
    CU_ASSERT_PTR_NOT_NULL(iface->failed);
    CU_ASSERT_PTR_NOT_NULL(iface->succeeded);
}

static void test_instance_errors(void)
{
    void *a = NULL;
    const char *err = NULL;
    CU_ASSERT_EQUAL(iface->instance("no-such-file", tmpdir, pool, &a, &err), MP_AUTH_FAIL);
    CU_ASSERT_PTR_NULL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no-such-file"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "No such file"));
    err = NULL;
    CU_ASSERT_EQUAL(iface->instance("", tmpdir, pool, &a, &err), MP_AUTH_FAIL);
    CU_ASSERT_PTR_NOT_NULL(err);
    CU_ASSERT_EQUAL(iface->instance(".", tmpdir, pool, &a, &err), MP_AUTH_FAIL); /* a folder */
    /* an absolute path ignores base_dir */
    write_file("abs", "x@example.test:{PLAIN}x\n");
    CU_ASSERT_EQUAL(iface->instance(path_of("abs"), "/nonexistent", pool, &a, &err), MP_AUTH_OK);
    CU_ASSERT_EQUAL(verify(a, "x@example.test", "x"), MP_AUTH_OK);
}

typedef struct scheme_case {
    const char *user, *password, *entry;
} scheme_case;

static void test_schemes(void)
{
    apr_array_header_t *cases = apr_array_make(pool, 16, sizeof(scheme_case));
#define ADD(u, p, e) do { scheme_case *c_ = apr_array_push(cases); c_->user = (u); c_->password = (p); \
                          c_->entry = (e); CU_ASSERT_PTR_NOT_NULL(c_->entry); } while (0)
    char *h;
    ADD("sha512@example.test", "pw-512", (h = openssl_passwd("-6", "pw-512")) ? apr_pstrcat(pool, "{SHA512-CRYPT}", h, NULL) : NULL);
    ADD("sha256@example.test", "pw-256", (h = openssl_passwd("-5", "pw-256")) ? apr_pstrcat(pool, "{SHA256-CRYPT}", h, NULL) : NULL);
    ADD("md5@example.test", "pw-md5", (h = openssl_passwd("-1", "pw-md5")) ? apr_pstrcat(pool, "{MD5-CRYPT}", h, NULL) : NULL);
    ADD("bare@example.test", "pw-bare", openssl_passwd("-6", "pw-bare"));               /* no {SCHEME}: CRYPT */
    ADD("crypt@example.test", "pw-crypt", (h = openssl_passwd("-5", "pw-crypt")) ? apr_pstrcat(pool, "{CRYPT}", h, NULL) : NULL);
    ADD("rounds@example.test", "pw-rounds", crypt_with("$6$", 1000, "pw-rounds"));      /* $6$rounds=1000$ */
    ADD("des@example.test", "pw-des", (h = crypt_with("", 0, "pw-des")) ? apr_pstrcat(pool, h, "[13]", NULL) : NULL);
    ADD("plain@example.test", "plain pw", "{PLAIN}plain pw");
    ADD("clear@example.test", "clearpw", "{CLEAR}clearpw");
    ADD("cleartext@example.test", "ctpw", "{cleartext}ctpw");                           /* any case */
    ADD("scram@example.test", "pw-scram", scram_entry_random("pw-scram"));
    if (blf_supported())
        ADD("blf@example.test", "pw-blf", (h = crypt_with("$2y$", 4, "pw-blf")) ? apr_pstrcat(pool, "{BLF-CRYPT}", h, NULL) : NULL);
#ifdef MAILPROTO_HAVE_ARGON2
    ADD("argon2i@example.test", "pw-a2i", argon2_entry(Argon2_i, "pw-a2i"));
    ADD("argon2id@example.test", "pw-a2id", argon2_entry(Argon2_id, "pw-a2id"));
#endif
#undef ADD
    const char *text = "# users\n\n   \n";
    for (int i = 0; i < cases->nelts; i++) {
        scheme_case *c = &APR_ARRAY_IDX(cases, i, scheme_case);
        text = apr_psprintf(pool, "%s%s:%s\n", text, c->user, c->entry ? c->entry : "");
    }
    write_file("schemes", text);
    fake_clear_log(logfs);
    mp_auth *a = instance("schemes");
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(log_count("[mp27001]"), 0); /* nothing malformed */
    if (log_count("[mp27001]"))
        fprintf(stderr, "%s", fake_log(logfs));
    for (int i = 0; i < cases->nelts; i++) {
        scheme_case *c = &APR_ARRAY_IDX(cases, i, scheme_case);
        mp_auth_user info = {0};
        int ok = iface->verify(a, c->user, c->password, pool, &info);
        CU_ASSERT_EQUAL(ok, MP_AUTH_OK);
        if (ok != MP_AUTH_OK)
            fprintf(stderr, "verify %s failed: %s\n", c->user, c->entry);
        if (ok == MP_AUTH_OK) {
            CU_ASSERT_STRING_EQUAL(info.user, c->user);
        }
        CU_ASSERT_EQUAL(verify(a, c->user, apr_pstrcat(pool, c->password, "x", NULL)), MP_AUTH_FAIL);
        CU_ASSERT_EQUAL(verify(a, c->user, ""), MP_AUTH_FAIL);
        /* another user's password */
        scheme_case *o = &APR_ARRAY_IDX(cases, (i + 1) % cases->nelts, scheme_case);
        CU_ASSERT_EQUAL(verify(a, c->user, o->password), MP_AUTH_FAIL);
        CU_ASSERT_EQUAL(iface->lookup(a, c->user, pool, NULL), MP_AUTH_OK);
    }
    /* unknown users */
    CU_ASSERT_EQUAL(verify(a, "nobody@example.test", "pw-512"), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(verify(a, "", "x"), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(verify(a, "sha512@example.test\n", "pw-512"), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(verify(a, "sha512@example.test", NULL), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(iface->lookup(a, "nobody@example.test", pool, NULL), MP_AUTH_NOUSER);

    /* the domain is matched in any case, the local part exactly */
    mp_auth_user info = {0};
    CU_ASSERT_EQUAL(iface->verify(a, "plain@EXAMPLE.Test", "plain pw", pool, &info), MP_AUTH_OK);
    CU_ASSERT_STRING_EQUAL(info.user, "plain@example.test");
    CU_ASSERT_EQUAL(verify(a, "Plain@example.test", "plain pw"), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(iface->lookup(a, "PLAIN@example.test", pool, NULL), MP_AUTH_NOUSER);
    CU_ASSERT_EQUAL(iface->lookup(a, "sha512@Example.TEST", pool, NULL), MP_AUTH_OK);
}

/* An unknown user costs what the file's most common kind of entry costs. */
static void test_dummy_cost(void)
{
    const char *h6a = openssl_passwd("-6", "a"), *h6b = openssl_passwd("-6", "b"), *h5 = openssl_passwd("-5", "c");
    write_file("cost", apr_psprintf(pool, "p@x:{PLAIN}p\nc1@x:%s\nc2@x:%s\nc3@x:{SHA256-CRYPT}%s\n"
                                          "c4@x:{SHA512-CRYPT}%s\n", h6a, h6b, h5, h6a));
    int err_no;
    const char *err;
    pw_db *db = pw_db_load(path_of("cost"), &err_no, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db->dummy);
    CU_ASSERT_EQUAL(db->dummy->line, 2); /* the first of the three $6$ entries */
    CU_ASSERT_EQUAL(db->nusers, 5);
    CU_ASSERT_EQUAL(db->nlogin, 5);
    pw_db_free(db);

    /* a file of {PLAIN} entries: unknown users cost a SHA-256 */
    write_file("cost", "p@x:{PLAIN}p\nq@x:{PLAIN}q\nc@x:{SCRAM-SHA-256}4096,c2FsdA==,"
                       "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n");
    db = pw_db_load(path_of("cost"), &err_no, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(db->dummy->scheme, PW_PLAIN);
    CU_ASSERT_EQUAL(db->dummy->line, 1);
    pw_db_free(db);

    /* nothing usable: a built-in SHA512-CRYPT; still a plain FAIL */
    write_file("cost", "nop@x:\n");
    fake_clear_log(logfs);
    mp_auth *a = instance("cost");
    CU_ASSERT_EQUAL(verify(a, "nop@x", ""), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(verify(a, "who@x", "x"), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(iface->lookup(a, "nop@x", pool, NULL), MP_AUTH_OK);
    CU_ASSERT_EQUAL(log_count("[mp27003]"), 1);
}

static void test_malformed_lines(void)
{
    const char *h5 = openssl_passwd("-5", "x");
    const char *text = apr_pstrcat(pool,
        "good@example.test:{PLAIN}good\n"                                           /* 1 */
        "nocolonline\n"                                                             /* 2 */
        "unknown@example.test:{FOO}bar\n"                                           /* 3 */
        "short@example.test:{SHA512-CRYPT}$6$abc$tooshort\n"                        /* 4 */
        "iter@example.test:{SCRAM-SHA-256}100,c2FsdA==,"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" /* 5 */
        "scrambad@example.test:{SCRAM-SHA-256}4096,c2FsdA==,!!!,x\n"                 /* 6 */
        ":{PLAIN}nouser\n"                                                          /* 7 */
        "good@example.test:{PLAIN}again\n"                                          /* 8 */
        "prefix@example.test:{SHA512-CRYPT}", h5, "\n"                              /* 9 */
        "nopass@example.test:\n"                                                    /* 10 */
        "brace@example.test:{PLAIN\n"                                               /* 11 */
        "pam34@example.test:abcdef[34]\n"                                           /* 12 */
        "argon@example.test:{ARGON2ID}$argon2i$v=19$m=1024,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\n" /* 13 */
        "sp ace@example.test:{PLAIN}x\n"                                            /* 14 */
        "blf@example.test:{BLF-CRYPT}$2y$04$short\n"                                /* 15 */
        "garbage@example.test:not a hash\n"                                         /* 16 */
        "ok2@example.test:{PLAIN}ok2\r\n"                                           /* 17: CRLF */
        "empty@example.test:{PLAIN}\n",                                            /* 18 */
        NULL);
    write_file("bad", text);
    fake_clear_log(logfs);
    mp_auth *a = instance("bad");
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    const char *p = path_of("bad");
    static const unsigned bad_lines[] = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18};
    for (size_t i = 0; i < sizeof bad_lines / sizeof bad_lines[0]; i++) {
        const char *where = apr_psprintf(pool, "%s:%u: ", p, bad_lines[i]);
        CU_ASSERT_EQUAL(log_count(where), 1);
        if (log_count(where) != 1)
            fprintf(stderr, "line %u not reported once\n", bad_lines[i]);
    }
    CU_ASSERT_EQUAL(log_count(apr_psprintf(pool, "%s:1: ", p)), 0);
    CU_ASSERT_EQUAL(log_count(apr_psprintf(pool, "%s:17: ", p)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(logfs), "unknown password scheme {FOO}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(logfs), "already defined at line 1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(logfs), "iteration count out of range"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(logfs), "no ':' after the user name"));
    CU_ASSERT_PTR_NULL(strstr(fake_log(logfs), "tooshort")); /* hashes are never logged */
    CU_ASSERT_PTR_NULL(strstr(fake_log(logfs), "{FOO}bar"));

    /* the rest of the file works */
    CU_ASSERT_EQUAL(verify(a, "good@example.test", "good"), MP_AUTH_OK);
    CU_ASSERT_EQUAL(verify(a, "good@example.test", "again"), MP_AUTH_FAIL); /* the first line wins */
    CU_ASSERT_EQUAL(verify(a, "ok2@example.test", "ok2"), MP_AUTH_OK);
    /* users with a bad password exist but cannot log in */
    CU_ASSERT_EQUAL(verify(a, "unknown@example.test", "bar"), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(verify(a, "unknown@example.test", "{FOO}bar"), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(verify(a, "prefix@example.test", "x"), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(verify(a, "nopass@example.test", ""), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(verify(a, "garbage@example.test", "not a hash"), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(verify(a, "empty@example.test", ""), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(iface->lookup(a, "empty@example.test", pool, NULL), MP_AUTH_OK);
    CU_ASSERT_EQUAL(iface->lookup(a, "unknown@example.test", pool, NULL), MP_AUTH_OK);
    CU_ASSERT_EQUAL(iface->lookup(a, "short@example.test", pool, NULL), MP_AUTH_OK);
    CU_ASSERT_EQUAL(iface->lookup(a, "nocolonline", pool, NULL), MP_AUTH_NOUSER);
    mp_scram_secret s;
    CU_ASSERT_EQUAL(iface->secret(a, "iter@example.test", MP_SECRET_SCRAM_SHA256, pool, &s), MP_AUTH_FAIL);
}

/* BLF-CRYPT and ARGON2 lines where this build cannot check them are refused with a clear message. */
static void test_optional_schemes(void)
{
    const char *blf = "$2y$04$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui";
    write_file("opt", apr_psprintf(pool, "b@x:{BLF-CRYPT}%s\n"
                                         "a@x:{ARGON2ID}$argon2id$v=19$m=1024,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\n", blf));
    fake_clear_log(logfs);
    mp_auth *a = instance("opt");
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    int refused = strstr(fake_log(logfs), "BLF-CRYPT (bcrypt) is not supported") != NULL;
    CU_ASSERT_EQUAL(refused, !blf_supported());
#ifdef MAILPROTO_HAVE_ARGON2
    CU_ASSERT_PTR_NULL(strstr(fake_log(logfs), "ARGON2 is not supported"));
    CU_ASSERT_EQUAL(verify(a, "a@x", "wrong"), MP_AUTH_FAIL); /* well-formed, wrong hash */
#else
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(logfs), "ARGON2 is not supported by this build"));
#endif
}

static void test_reload(void)
{
    write_file("reload", "alice@example.test:{PLAIN}one\nstable@example.test:{PLAIN}s\n");
    fake_clear_log(logfs);
    mp_auth *a = instance("reload");
    CU_ASSERT_EQUAL(verify(a, "alice@example.test", "one"), MP_AUTH_OK);

    /* a new file: not seen within the same second ... */
    write_file("reload", "alice@example.test:{PLAIN}two\nbob@example.test:{PLAIN}b\nstable@example.test:{PLAIN}s\n");
    CU_ASSERT_EQUAL(verify(a, "alice@example.test", "one"), MP_AUTH_OK);
    CU_ASSERT_EQUAL(iface->lookup(a, "bob@example.test", pool, NULL), MP_AUTH_NOUSER);
    /* ... but after it */
    advance(apr_time_from_msec(1100));
    CU_ASSERT_EQUAL(verify(a, "alice@example.test", "two"), MP_AUTH_OK);
    CU_ASSERT_EQUAL(verify(a, "alice@example.test", "one"), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(verify(a, "bob@example.test", "b"), MP_AUTH_OK);
    CU_ASSERT_EQUAL(log_count("re-read, 3 users"), 1);

    /* rewritten in place (same inode, another size) */
    rewrite_file("reload", "alice@example.test:{PLAIN}three\nstable@example.test:{PLAIN}s\n");
    advance(apr_time_from_sec(2));
    CU_ASSERT_EQUAL(verify(a, "alice@example.test", "three"), MP_AUTH_OK);
    CU_ASSERT_EQUAL(iface->lookup(a, "bob@example.test", pool, NULL), MP_AUTH_NOUSER);

    /* unchanged: not re-read */
    unsigned reads = log_count("re-read");
    advance(apr_time_from_sec(2));
    CU_ASSERT_EQUAL(verify(a, "alice@example.test", "three"), MP_AUTH_OK);
    CU_ASSERT_EQUAL(log_count("re-read"), reads);

    /* gone: temporary failures, logged once; back: works again */
    CU_ASSERT_EQUAL(unlink(path_of("reload")), 0);
    advance(apr_time_from_sec(2));
    CU_ASSERT_EQUAL(verify(a, "alice@example.test", "three"), MP_AUTH_TEMPFAIL);
    CU_ASSERT_EQUAL(iface->lookup(a, "alice@example.test", pool, NULL), MP_AUTH_TEMPFAIL);
    advance(apr_time_from_sec(2));
    CU_ASSERT_EQUAL(iface->lookup(a, "alice@example.test", pool, NULL), MP_AUTH_TEMPFAIL);
    mp_scram_secret s;
    CU_ASSERT_EQUAL(iface->secret(a, "alice@example.test", MP_SECRET_SCRAM_SHA256, pool, &s), MP_AUTH_TEMPFAIL);
    CU_ASSERT_EQUAL(iface->has_secrets(a, MP_SECRET_SCRAM_SHA256), 0);
    CU_ASSERT_EQUAL(log_count("[mp27005]"), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(logfs), "logins fail temporarily"));
    write_file("reload", "alice@example.test:{PLAIN}four\n");
    advance(apr_time_from_sec(2));
    CU_ASSERT_EQUAL(verify(a, "alice@example.test", "four"), MP_AUTH_OK);
}

/* lookup_nowait answers from the table in memory, and says MP_AUTH_AGAIN whenever lookup() would stat()
   or re-read the file: it never does I/O itself, so it never sees a change lookup() has not read yet. */
static void test_lookup_nowait(void)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(iface->lookup_nowait);
    write_file("nowait", "alice@example.test:{PLAIN}one\n");
    mp_auth *a = instance("nowait");
    mp_auth_user info;
    memset(&info, 0, sizeof info);
    CU_ASSERT_EQUAL(iface->lookup_nowait(a, "alice@EXAMPLE.test", pool, &info), MP_AUTH_OK);
    CU_ASSERT_STRING_EQUAL(info.user ? info.user : "", "alice@example.test");
    CU_ASSERT_EQUAL(iface->lookup_nowait(a, "bob@example.test", pool, NULL), MP_AUTH_NOUSER);

    write_file("nowait", "alice@example.test:{PLAIN}one\nbob@example.test:{PLAIN}b\n");
    advance(apr_time_from_msec(1100));
    /* the once-a-second check is due: not done here */
    unsigned reads = log_count("re-read");
    CU_ASSERT_EQUAL(iface->lookup_nowait(a, "bob@example.test", pool, NULL), MP_AUTH_AGAIN);
    CU_ASSERT_EQUAL(iface->lookup_nowait(a, "alice@example.test", pool, NULL), MP_AUTH_AGAIN);
    CU_ASSERT_EQUAL(log_count("re-read"), reads);
    /* lookup() re-reads; then lookup_nowait sees the new table until the next check is due */
    CU_ASSERT_EQUAL(iface->lookup(a, "bob@example.test", pool, NULL), MP_AUTH_OK);
    CU_ASSERT_EQUAL(log_count("re-read"), reads + 1);
    CU_ASSERT_EQUAL(iface->lookup_nowait(a, "bob@example.test", pool, NULL), MP_AUTH_OK);

    /* a file that cannot be read: AGAIN (lookup() reports the temporary failure), never OK */
    CU_ASSERT_EQUAL(unlink(path_of("nowait")), 0);
    advance(apr_time_from_sec(2));
    CU_ASSERT_EQUAL(iface->lookup(a, "bob@example.test", pool, NULL), MP_AUTH_TEMPFAIL);
    CU_ASSERT_EQUAL(iface->lookup_nowait(a, "bob@example.test", pool, NULL), MP_AUTH_AGAIN);
}

/* Readers keep working while another thread re-reads the file. */
typedef struct reader_arg {
    mp_auth *a;
    atomic_int stop;
    atomic_uint calls, wrong;
} reader_arg;

static void *reader(void *data)
{
    reader_arg *r = data;
    apr_pool_t *p;
    apr_pool_create_unmanaged_ex(&p, NULL, NULL);
    while (!atomic_load(&r->stop)) {
        mp_auth_user info;
        if (iface->verify(r->a, "stable@example.test", "s", p, &info) != MP_AUTH_OK ||
            strcmp(info.user, "stable@example.test") != 0 || !apr_table_get(info.fields, "home"))
            atomic_fetch_add(&r->wrong, 1);
        if (iface->lookup(r->a, "nobody@example.test", p, NULL) != MP_AUTH_NOUSER)
            atomic_fetch_add(&r->wrong, 1);
        atomic_fetch_add(&r->calls, 1);
        apr_pool_clear(p);
    }
    apr_pool_destroy(p);
    return NULL;
}

static void test_reload_concurrent(void)
{
    const char *line = "stable@example.test:{PLAIN}s::::/home/stable::quota=x\n";
    write_file("conc", line);
    reader_arg r = {.a = instance("conc")};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, reader, &r);
    for (int round = 0; round < 40; round++) {
        const char *text = line;
        for (int k = 0; k < round; k++)
            text = apr_psprintf(pool, "%su%d_%d@example.test:{PLAIN}p\n", text, round, k);
        if (round % 2)
            write_file("conc", text);
        else
            rewrite_file("conc", text); /* may be read half-written: then once more */
        advance(apr_time_from_sec(2));
        usleep(2000);
    }
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CU_ASSERT(atomic_load(&r.calls) > 0);
    /* an in-place rewrite can be caught between truncate and write: an empty table for a moment */
    write_file("conc", line);
    advance(apr_time_from_sec(2));
    CU_ASSERT_EQUAL(verify(r.a, "stable@example.test", "s"), MP_AUTH_OK);
    unsigned wrong = atomic_load(&r.wrong);
    CU_ASSERT(wrong <= atomic_load(&r.calls) / 2);
}

/* With atomic replacement (rename) readers never see anything but a complete file. */
static void test_reload_concurrent_rename(void)
{
    const char *line = "stable@example.test:{PLAIN}s::::/home/stable::\n";
    write_file("conc2", line);
    reader_arg r = {.a = instance("conc2")};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, reader, &r);
    for (int round = 0; round < 40; round++) {
        const char *text = line;
        for (int k = 0; k < round; k++)
            text = apr_psprintf(pool, "%su%d_%d@example.test:{PLAIN}p\n", text, round, k);
        write_file("conc2", text);
        advance(apr_time_from_sec(2));
        usleep(2000);
    }
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CU_ASSERT(atomic_load(&r.calls) > 0);
    CU_ASSERT_EQUAL(atomic_load(&r.wrong), 0);
}

static void test_failure_delays(void)
{
    write_file("fail", "x@example.test:{PLAIN}x\n");
    mp_auth *a = instance("fail");
    const apr_interval_time_t ms = apr_time_from_msec(1);
    const apr_interval_time_t want[] = {250 * ms, 500 * ms, 1000 * ms, 2000 * ms, 4000 * ms, 8000 * ms,
                                        15000 * ms, 15000 * ms, 15000 * ms};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CU_ASSERT_EQUAL(iface->failed(a, "192.0.2.1"), want[i]);
    /* another address has its own count */
    CU_ASSERT_EQUAL(iface->failed(a, "192.0.2.2"), 250 * ms);
    CU_ASSERT_EQUAL(iface->failed(a, "::ffff:192.0.2.2"), 500 * ms); /* IPv4-mapped is the same client */
    /* success forgets */
    iface->succeeded(a, "192.0.2.1");
    CU_ASSERT_EQUAL(iface->failed(a, "192.0.2.1"), 250 * ms);
    iface->succeeded(a, "203.0.113.1"); /* never failed: nothing happens */
    /* IPv6: one /64 is one client */
    CU_ASSERT_EQUAL(iface->failed(a, "2001:db8:1:2::1"), 250 * ms);
    CU_ASSERT_EQUAL(iface->failed(a, "2001:db8:1:2:ffff::99"), 500 * ms);
    CU_ASSERT_EQUAL(iface->failed(a, "2001:db8:1:3::1"), 250 * ms);
    /* not an address */
    CU_ASSERT_EQUAL(iface->failed(a, "unix:/run/x"), 250 * ms);
    CU_ASSERT_EQUAL(iface->failed(a, "unix:/run/x"), 500 * ms);
    CU_ASSERT_EQUAL(iface->failed(a, NULL), 250 * ms);
    /* 14 minutes of quiet: still remembered; 15 more: forgotten */
    CU_ASSERT_EQUAL(iface->failed(a, "192.0.2.1"), 500 * ms);
    advance(apr_time_from_sec(14 * 60));
    CU_ASSERT_EQUAL(iface->failed(a, "192.0.2.1"), 1000 * ms);
    advance(apr_time_from_sec(15 * 60 + 1));
    CU_ASSERT_EQUAL(iface->failed(a, "192.0.2.1"), 250 * ms);
}

static void test_failure_table_bounded(void)
{
    pw_fails *f = pw_fails_create(pool);
    char addr[64];
    for (unsigned i = 0; i < PW_FAIL_MAX + 500; i++) {
        snprintf(addr, sizeof addr, "10.%u.%u.%u", i >> 16 & 255, i >> 8 & 255, i & 255);
        CU_ASSERT_EQUAL(pw_fails_failed(f, addr), apr_time_from_msec(250));
        if (i % 1000 == 0)
            advance(1); /* distinct ages for the eviction */
    }
    CU_ASSERT_EQUAL(pw_fails_size(f), PW_FAIL_MAX);
    /* the newest is remembered, and forgetting works at the limit */
    CU_ASSERT_EQUAL(pw_fails_failed(f, addr), apr_time_from_msec(500));
    pw_fails_succeeded(f, addr);
    CU_ASSERT_EQUAL(pw_fails_size(f), PW_FAIL_MAX - 1);
    /* the latest addresses are all still found after the evictions (the probing stays intact) */
    unsigned found = 0;
    for (unsigned i = PW_FAIL_MAX + 400; i < PW_FAIL_MAX + 499; i++) {
        snprintf(addr, sizeof addr, "10.%u.%u.%u", i >> 16 & 255, i >> 8 & 255, i & 255);
        found += pw_fails_failed(f, addr) == apr_time_from_msec(500);
    }
    CU_ASSERT_EQUAL(found, 99);
    CU_ASSERT_EQUAL(pw_fails_size(f), PW_FAIL_MAX - 1);
    /* the oldest went first (approximately: the oldest of a short run of slots) */
    unsigned old_left = 0, new_left = 0;
    for (unsigned i = 0; i < 1000; i++) {
        snprintf(addr, sizeof addr, "10.%u.%u.%u", i >> 16 & 255, i >> 8 & 255, i & 255);
        unsigned before = pw_fails_size(f);
        pw_fails_succeeded(f, addr);
        old_left += pw_fails_size(f) < before;
    }
    for (unsigned i = PW_FAIL_MAX - 1000; i < PW_FAIL_MAX; i++) {
        snprintf(addr, sizeof addr, "10.%u.%u.%u", i >> 16 & 255, i >> 8 & 255, i & 255);
        unsigned before = pw_fails_size(f);
        pw_fails_succeeded(f, addr);
        new_left += pw_fails_size(f) < before;
    }
    CU_ASSERT(old_left <= 1000 - 450);
    CU_ASSERT(new_left >= 990);
}

typedef struct fail_thread_arg {
    pw_fails *f;
    int seed;
} fail_thread_arg;

static void *fail_thread(void *data)
{
    fail_thread_arg *t = data;
    char addr[64];
    unsigned x = (unsigned)t->seed * 2654435761u;
    for (int i = 0; i < 20000; i++) {
        x = x * 1103515245u + 12345u;
        snprintf(addr, sizeof addr, "2001:db8:%x:%x::1", x >> 16 & 0xffff, x & 0x3f);
        if (x & 0x100)
            pw_fails_succeeded(t->f, addr);
        else
            (void)pw_fails_failed(t->f, addr);
    }
    return NULL;
}

static void test_failure_threads(void)
{
    pw_fails *f = pw_fails_create(pool);
    pthread_t t[4];
    fail_thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i].f = f;
        args[i].seed = i + 1;
        pthread_create(&t[i], NULL, fail_thread, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CU_ASSERT(pw_fails_size(f) <= PW_FAIL_MAX);
    CU_ASSERT(pw_fails_size(f) > 0);
}

static void test_extra_fields(void)
{
    write_file("extra",
               "q1@example.test:{PLAIN}q:1000:1001::/home/q1::userdb_quota_rule=*:storage=1G "
               "userdb_quota_rule2=*:messages=1000 allow_nets=192.0.2.0/24,::1 foo=bar flag\n"
               "q2@example.test:{PLAIN}q::::::userdb_quota_rule=*:storage=100\n"
               "q3@example.test:{PLAIN}q::::::userdb_quota_rule=*:bytes=2048:messages=5\n"
               "q4@example.test:{PLAIN}q::::::userdb_quota_storage_size=10M userdb_quota_message_count=7\n"
               "q5@example.test:{PLAIN}q::::::userdb_quota_rule=*:storage=+10M userdb_quota_rule2=Trash:storage=100M\n"
               "q6@example.test:{PLAIN}q::::::userdb_quota_rule=*:storage=12X\n"
               "q7@example.test:{PLAIN}q::::::userdb_quota_rule=*:storage=2GB\tx=1\n"
               "nl@example.test:{PLAIN}q::::::nologin reason=Moved\n"
               "old@example.test:{PLAIN}q::::/home/old:/bin/false::maildir:~/Maildir\n"
               "np@example.test:{PLAIN}q::::::nopassword\n"
               "nets@example.test:{PLAIN}q::::::allow_nets=example.test\n"
               "short@example.test:{PLAIN}q\n");
    fake_clear_log(logfs);
    mp_auth *a = instance("extra");
    mp_auth_user info = {0};
    CU_ASSERT_EQUAL_FATAL(iface->verify(a, "q1@example.test", "q", pool, &info), MP_AUTH_OK);
    CU_ASSERT_STRING_EQUAL(apr_table_get(info.fields, "uid"), "1000");
    CU_ASSERT_STRING_EQUAL(apr_table_get(info.fields, "gid"), "1001");
    CU_ASSERT_STRING_EQUAL(apr_table_get(info.fields, "home"), "/home/q1");
    CU_ASSERT_STRING_EQUAL(apr_table_get(info.fields, "userdb_quota_rule"), "*:storage=1G");
    CU_ASSERT_STRING_EQUAL(apr_table_get(info.fields, "foo"), "bar");
    CU_ASSERT_STRING_EQUAL(apr_table_get(info.fields, "flag"), "");
    CU_ASSERT_EQUAL(info.quota_bytes, 1ull << 30);
    CU_ASSERT_EQUAL(info.quota_messages, 1000);
    const char *nets = apr_table_get(info.fields, "allow_nets");
    CU_ASSERT_PTR_NOT_NULL_FATAL(nets);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from(nets, "192.0.2.7"), 1);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from(nets, "::1"), 1);
    CU_ASSERT_EQUAL(mpc_sasl_allowed_from(nets, "198.51.100.7"), 0);

    struct {
        const char *user;
        uint64_t bytes, messages;
    } q[] = {
        {"q2@example.test", 100 * 1024, 0},       /* storage without a unit is KiB (Dovecot) */
        {"q3@example.test", 2048, 5},
        {"q4@example.test", 10u << 20, 7},
        {"q5@example.test", 0, 0},                /* relative limits and other mailboxes: not applied */
        {"q6@example.test", 0, 0},
        {"q7@example.test", 2ull << 30, 0},
        {"short@example.test", 0, 0},
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        memset(&info, 0, sizeof info);
        CU_ASSERT_EQUAL(iface->lookup(a, q[i].user, pool, &info), MP_AUTH_OK);
        CU_ASSERT_EQUAL(info.quota_bytes, q[i].bytes);
        CU_ASSERT_EQUAL(info.quota_messages, q[i].messages);
    }
    CU_ASSERT_EQUAL(log_count(apr_psprintf(pool, "%s:5: ", path_of("extra"))), 1); /* relative limit */
    CU_ASSERT_EQUAL(log_count(apr_psprintf(pool, "%s:6: ", path_of("extra"))), 1); /* 12X */
    CU_ASSERT_EQUAL(log_count(apr_psprintf(pool, "%s:7: ", path_of("extra"))), 0);

    /* nologin: the right password still fails; the user exists for delivery */
    CU_ASSERT_EQUAL(verify(a, "nl@example.test", "q"), MP_AUTH_FAIL);
    memset(&info, 0, sizeof info);
    CU_ASSERT_EQUAL(iface->lookup(a, "nl@example.test", pool, &info), MP_AUTH_OK);
    CU_ASSERT_PTR_NOT_NULL(apr_table_get(info.fields, "nologin"));
    CU_ASSERT_STRING_EQUAL(apr_table_get(info.fields, "reason"), "Moved");
    const char *pt;
    CU_ASSERT_EQUAL(iface->secret(a, "nl@example.test", MP_SECRET_PLAINTEXT, pool, &pt), MP_AUTH_FAIL);
    /* the old format: an empty field after the shell, then the mail location */
    memset(&info, 0, sizeof info);
    CU_ASSERT_EQUAL(iface->lookup(a, "old@example.test", pool, &info), MP_AUTH_OK);
    CU_ASSERT_STRING_EQUAL(apr_table_get(info.fields, "home"), "/home/old");
    CU_ASSERT_STRING_EQUAL(apr_table_get(info.fields, "userdb_mail"), "maildir:~/Maildir");
    /* nopassword is refused */
    CU_ASSERT_EQUAL(verify(a, "np@example.test", "q"), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(verify(a, "np@example.test", "anything"), MP_AUTH_FAIL);
    CU_ASSERT_EQUAL(log_count(apr_psprintf(pool, "%s:10: ", path_of("extra"))), 1);
    /* allow_nets that cannot match is reported */
    CU_ASSERT_EQUAL(log_count(apr_psprintf(pool, "%s:11: ", path_of("extra"))), 1);
    /* the caller's copy outlives a reload */
    memset(&info, 0, sizeof info);
    CU_ASSERT_EQUAL(iface->lookup(a, "q1@example.test", pool, &info), MP_AUTH_OK);
    write_file("extra", "other@example.test:{PLAIN}x\n");
    advance(apr_time_from_sec(2));
    CU_ASSERT_EQUAL(iface->lookup(a, "q1@example.test", pool, NULL), MP_AUTH_NOUSER);
    CU_ASSERT_STRING_EQUAL(info.user, "q1@example.test");
    CU_ASSERT_STRING_EQUAL(apr_table_get(info.fields, "foo"), "bar");
}

static void test_secrets(void)
{
    const char *h6 = openssl_passwd("-6", "pencil");
    unsigned char salt[] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};
    /* the RFC 7677 example's salt (W22ZaJ0SNY7soEsUEjb6gQ==) */
    const char *s_entry = scram_entry("pencil", salt, sizeof salt, 4096);
    write_file("sec", apr_psprintf(pool, "p@example.test:{PLAIN}pencil\ns@example.test:%s\nc@example.test:%s\n"
                                         "u@example.test:{PLAIN}p\xc3\xa4ssword\n", s_entry, h6));
    mp_auth *a = instance("sec");
    const char *pt = NULL;
    CU_ASSERT_EQUAL(iface->secret(a, "p@example.test", MP_SECRET_PLAINTEXT, pool, &pt), MP_AUTH_OK);
    CU_ASSERT_STRING_EQUAL(pt, "pencil");
    CU_ASSERT_EQUAL(iface->secret(a, "c@example.test", MP_SECRET_PLAINTEXT, pool, &pt), MP_AUTH_NOSECRET);
    CU_ASSERT_EQUAL(iface->secret(a, "s@example.test", MP_SECRET_PLAINTEXT, pool, &pt), MP_AUTH_NOSECRET);
    CU_ASSERT_EQUAL(iface->secret(a, "nobody@example.test", MP_SECRET_PLAINTEXT, pool, &pt), MP_AUTH_NOUSER);

    mp_scram_secret s, s2, want;
    CU_ASSERT_EQUAL(iface->secret(a, "s@example.test", MP_SECRET_SCRAM_SHA256, pool, &s), MP_AUTH_OK);
    CU_ASSERT_EQUAL(mpc_sasl_scram_derive("pencil", 6, salt, sizeof salt, 4096, &want), 0);
    CU_ASSERT_EQUAL(s.iterations, 4096);
    CU_ASSERT(s.salt_len == sizeof salt && memcmp(s.salt, salt, sizeof salt) == 0);
    CU_ASSERT(memcmp(s.stored_key, want.stored_key, 32) == 0);
    CU_ASSERT(memcmp(s.server_key, want.server_key, 32) == 0);
    CU_ASSERT_EQUAL(verify(a, "s@example.test", "pencil"), MP_AUTH_OK);
    /* derived from {PLAIN}: consistent with the password and stable */
    CU_ASSERT_EQUAL(iface->secret(a, "p@example.test", MP_SECRET_SCRAM_SHA256, pool, &s), MP_AUTH_OK);
    CU_ASSERT_EQUAL(iface->secret(a, "p@example.test", MP_SECRET_SCRAM_SHA256, pool, &s2), MP_AUTH_OK);
    CU_ASSERT(s.salt_len == s2.salt_len && memcmp(s.salt, s2.salt, s.salt_len) == 0);
    CU_ASSERT(s.iterations == s2.iterations && memcmp(s.stored_key, s2.stored_key, 32) == 0);
    CU_ASSERT_EQUAL(mpc_sasl_scram_derive("pencil", 6, s.salt, s.salt_len, s.iterations, &want), 0);
    CU_ASSERT(memcmp(s.stored_key, want.stored_key, 32) == 0);
    CU_ASSERT(s.salt_len >= 16 && s.iterations >= 4096);
    CU_ASSERT_EQUAL(iface->secret(a, "c@example.test", MP_SECRET_SCRAM_SHA256, pool, &s), MP_AUTH_NOSECRET);
    CU_ASSERT_EQUAL(iface->secret(a, "u@example.test", MP_SECRET_SCRAM_SHA256, pool, &s), MP_AUTH_NOSECRET);
    CU_ASSERT_EQUAL(iface->secret(a, "nobody@example.test", MP_SECRET_SCRAM_SHA256, pool, &s), MP_AUTH_NOUSER);
    /* RFC 5802 section 9: an unknown user gets a made-up secret shaped like the real ones and stable per
       name whatever the domain's case, so the salt tells nobody who exists; another name, another salt */
    mp_scram_secret f1, f2;
    memset(&f1, 0, sizeof f1);
    memset(&f2, 0, sizeof f2);
    CU_ASSERT_EQUAL(iface->secret(a, "nobody@example.test", MP_SECRET_SCRAM_SHA256, pool, &f1), MP_AUTH_NOUSER);
    CU_ASSERT_EQUAL(iface->secret(a, "nobody@EXAMPLE.TEST", MP_SECRET_SCRAM_SHA256, pool, &f2), MP_AUTH_NOUSER);
    CU_ASSERT(f1.salt_len == s2.salt_len && f1.iterations == s2.iterations);
    CU_ASSERT(f1.salt_len == f2.salt_len && memcmp(f1.salt, f2.salt, f1.salt_len) == 0);
    CU_ASSERT_EQUAL(iface->secret(a, "other@example.test", MP_SECRET_SCRAM_SHA256, pool, &f2), MP_AUTH_NOUSER);
    CU_ASSERT(memcmp(f1.salt, f2.salt, f1.salt_len) != 0);
    CU_ASSERT_EQUAL(iface->secret(a, "p@example.test", (mp_secret_kind)99, pool, &s), MP_AUTH_NOSECRET);
    CU_ASSERT_EQUAL(iface->has_secrets(a, MP_SECRET_PLAINTEXT), 0);
    CU_ASSERT_EQUAL(iface->has_secrets(a, MP_SECRET_SCRAM_SHA256), 0);

    write_file("sec2", apr_psprintf(pool, "p@example.test:{PLAIN}pencil\ns@example.test:%s\n", s_entry));
    a = instance("sec2");
    CU_ASSERT_EQUAL(iface->has_secrets(a, MP_SECRET_PLAINTEXT), 0);
    CU_ASSERT_EQUAL(iface->has_secrets(a, MP_SECRET_SCRAM_SHA256), 1);
    /* users that cannot log in do not count */
    write_file("sec3", apr_psprintf(pool, "p@example.test:{PLAIN}pencil\nc@example.test:%s::::::nologin\n"
                                          "bad@example.test:{NOPE}x\n", h6));
    a = instance("sec3");
    CU_ASSERT_EQUAL(iface->has_secrets(a, MP_SECRET_PLAINTEXT), 1);
    CU_ASSERT_EQUAL(iface->has_secrets(a, MP_SECRET_SCRAM_SHA256), 1);
    write_file("sec4", "# nobody\n");
    a = instance("sec4");
    CU_ASSERT_EQUAL(iface->has_secrets(a, MP_SECRET_SCRAM_SHA256), 0);
    /* stored secrets the usual kind: a made-up one has their salt length and iteration count */
    unsigned char salt24[24] = {1, 2, 3};
    write_file("sec5", apr_psprintf(pool, "s1@example.test:%s\ns2@example.test:%s\n",
                                          scram_entry("a", salt24, sizeof salt24, 10000),
                                          scram_entry("b", salt24, sizeof salt24, 10000)));
    a = instance("sec5");
    memset(&f1, 0, sizeof f1);
    CU_ASSERT_EQUAL(iface->secret(a, "nobody@example.test", MP_SECRET_SCRAM_SHA256, pool, &f1), MP_AUTH_NOUSER);
    CU_ASSERT(f1.salt_len == 24 && f1.iterations == 10000);
}

/* SCRAM-SHA-256 end to end: the SASL machine with secrets from this provider. */
static int scram_login(mp_auth *a, const char *user, const char *password, const char *snonce, const char **final_r)
{
    apr_pool_t *p;
    apr_pool_create(&p, pool);
    mpc_sasl *sa = mpc_sasl_create(p, 0);
    mpc_sasl_out out;
    if (snonce)
        mpc_sasl_set_server_nonce(sa, snonce);
    const char *cnonce = "rOprNGfwEbeRWgbNEkqO";
    const char *bare = apr_psprintf(pool, "n=%s,r=%s", user, cnonce);
    const char *first = b64(apr_pstrcat(pool, "n,,", bare, NULL), strlen(bare) + 3);
    if (mpc_sasl_start(sa, "SCRAM-SHA-256", first, strlen(first), &out) != MPC_SASL_NEED_SCRAM_SECRET)
        return -1;
    mp_scram_secret s;
    int rc = iface->secret(a, out.authcid, MP_SECRET_SCRAM_SHA256, p, &s);
    if (mpc_sasl_scram_secret(sa, rc, &s, &out) != MPC_SASL_CHALLENGE)
        return -1;
    /* the client: server-first gives nonce, salt, iterations */
    unsigned char sf[512];
    int sfl = EVP_DecodeBlock(sf, (const unsigned char *)out.challenge, (int)strlen(out.challenge));
    sf[sfl] = '\0';
    char *sfs = (char *)sf, *si = strstr(sfs, ",i="), *ss = strstr(sfs, ",s=");
    const char *nonce = apr_pstrmemdup(pool, sfs + 2, (size_t)(ss - sfs - 2));
    unsigned char salt[128];
    int sl = EVP_DecodeBlock(salt, (const unsigned char *)apr_pstrmemdup(pool, ss + 3, (size_t)(si - ss - 3)),
                             (int)(si - ss - 3));
    sl -= (si[-1] == '=') + (si[-2] == '=');
    /* recompute the keys the client needs */
    unsigned char salted[32], ck[32], sk[32], sig[32], proof[32];
    unsigned int l;
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, sl, atoi(si + 3), EVP_sha256(), 32, salted);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, ck, &l);
    SHA256(ck, 32, sk);
    const char *without = apr_psprintf(pool, "c=biws,r=%s", nonce);
    const char *am = apr_pstrcat(pool, bare, ",", sfs, ",", without, NULL);
    HMAC(EVP_sha256(), sk, 32, (const unsigned char *)am, strlen(am), sig, &l);
    for (int k = 0; k < 32; k++)
        proof[k] = ck[k] ^ sig[k];
    const char *final = apr_psprintf(pool, "%s,p=%s", without, b64(proof, 32));
    const char *final64 = b64(final, strlen(final));
    mpc_sasl_status st = mpc_sasl_step(sa, final64, strlen(final64), &out);
    if (final_r && st == MPC_SASL_SUCCESS) {
        unsigned char fin[256];
        int fl = EVP_DecodeBlock(fin, (const unsigned char *)out.final_data, (int)strlen(out.final_data));
        fin[fl > 0 ? fl : 0] = '\0';
        *final_r = apr_pstrdup(pool, (char *)fin);
    }
    return st == MPC_SASL_SUCCESS ? 0 : (int)out.error;
}

static void test_scram_with_sasl(void)
{
    unsigned char salt[] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};
    write_file("scram", apr_psprintf(pool, "user:%s\np@example.test:{PLAIN}pw\nc@example.test:%s\n",
                                     scram_entry("pencil", salt, sizeof salt, 4096), openssl_passwd("-6", "pw")));
    mp_auth *a = instance("scram");
    const char *final = NULL;
    /* the RFC 7677 example, with its server nonce: the same server-final-message */
    CU_ASSERT_EQUAL(scram_login(a, "user", "pencil", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", &final), 0);
    CU_ASSERT_STRING_EQUAL(final, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    CU_ASSERT_EQUAL(scram_login(a, "user", "pencil", NULL, NULL), 0);
    CU_ASSERT_EQUAL(scram_login(a, "user", "pencil!", NULL, NULL), MPC_SASL_ERR_AUTH);
    CU_ASSERT_EQUAL(scram_login(a, "p@example.test", "pw", NULL, NULL), 0);            /* derived */
    CU_ASSERT_EQUAL(scram_login(a, "p@example.test", "px", NULL, NULL), MPC_SASL_ERR_AUTH);
    CU_ASSERT_EQUAL(scram_login(a, "c@example.test", "pw", NULL, NULL), MPC_SASL_ERR_AUTH); /* no secret */
    CU_ASSERT_EQUAL(scram_login(a, "ghost@example.test", "pw", NULL, NULL), MPC_SASL_ERR_AUTH);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("passwd", suite_init, suite_clean);
    CU_add_test(s, "descriptor", test_descriptor);
    CU_add_test(s, "instance errors", test_instance_errors);
    CU_add_test(s, "every scheme, wrong passwords, unknown users, names", test_schemes);
    CU_add_test(s, "unknown users cost the common scheme", test_dummy_cost);
    CU_add_test(s, "malformed lines reported with FILE:LINE", test_malformed_lines);
    CU_add_test(s, "BLF-CRYPT and ARGON2 availability", test_optional_schemes);
    CU_add_test(s, "re-read after a change", test_reload);
    CU_add_test(s, "lookup_nowait never does I/O", test_lookup_nowait);
    CU_add_test(s, "re-read under concurrent readers (in place)", test_reload_concurrent);
    CU_add_test(s, "re-read under concurrent readers (rename)", test_reload_concurrent_rename);
    CU_add_test(s, "failure delays grow and reset", test_failure_delays);
    CU_add_test(s, "failure table is bounded", test_failure_table_bounded);
    CU_add_test(s, "failure table under threads", test_failure_threads);
    CU_add_test(s, "extra fields and quota", test_extra_fields);
    CU_add_test(s, "secrets and has_secrets", test_secrets);
    CU_add_test(s, "SCRAM-SHA-256 through sasl.c", test_scram_with_sasl);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}

/*
 * libFuzzer target: mod_smtp (or mod_lmtp, built with SMTP_LMTP=1) driven through the fake host with
 * arbitrary bytes, with small in-memory store and auth providers. Every blocking job runs, STARTTLS
 * completes, delay timers fire; AddressSanitizer/UBSan and the fake host's contract checks (writes after
 * close, over-consumption, ...) catch mistakes.
 *
 * Input: byte 0 chooses the listener (TLS mode, Submission) and how the rest is cut into reads (one burst,
 * fixed-size pieces, or byte by byte); the rest is what the client sends.
 *
 *   clang build: cmake -DMAILPROTO_FUZZ=ON -DCMAKE_C_COMPILER=clang ... && ./fuzz_smtp -max_total_time=60 corpus/
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>

#include <mailproto/auth.h>
#include <mailproto/store.h>

#include "fake_host.h"

extern const mp_module mp_module_descriptor;

/* ---- a store that keeps nothing ---- */
struct mp_store { int x; };
struct mp_store_user { int open; };
struct mp_save { size_t bytes; int open; };
static struct mp_store store_obj;
static struct mp_save save_obj;
static int users_open;

static int st_instance(const char *spec, const char *base, apr_pool_t *p, void **r, const char **e)
{
    (void)spec; (void)base; (void)p; (void)e;
    *r = &store_obj;
    return MP_STORE_OK;
}
static int st_user_open(mp_store *st, const char *user, int create, apr_pool_t *pool, mp_store_user **u)
{
    (void)st; (void)create;
    if (strchr(user, '/'))
        return MP_STORE_BADNAME;
    *u = apr_pcalloc(pool, sizeof **u);
    users_open++;
    return MP_STORE_OK;
}
static void st_user_close(mp_store_user *u) { (void)u; users_open--; }
static int st_quota(mp_store_user *u, mp_quota *q) { (void)u; memset(q, 0, sizeof *q); return MP_STORE_OK; }
static int st_save_begin(mp_store_user *u, const char *f, apr_pool_t *p, mp_save **s)
{
    (void)u; (void)f; (void)p;
    if (save_obj.open)
        abort(); /* two saves at once: a handler bug */
    save_obj.open = 1;
    save_obj.bytes = 0;
    *s = &save_obj;
    return MP_STORE_OK;
}
static int st_save_write(mp_save *s, const void *d, size_t n)
{
    (void)d;
    if (!s->open)
        abort();
    s->bytes += n;
    return MP_STORE_OK;
}
static int st_save_commit(mp_save *s, const mp_save_meta *m, mp_save_target *t, size_t n)
{
    (void)m;
    if (!s->open || n == 0)
        abort();
    s->open = 0;
    for (size_t i = 0; i < n; i++)
        t[i].result = MP_STORE_OK;
    return MP_STORE_OK;
}
static void st_save_abort(mp_save *s)
{
    if (!s->open)
        abort();
    s->open = 0;
}
static const mp_store_iface store_iface = {
    .instance = st_instance, .user_open = st_user_open, .user_close = st_user_close, .quota = st_quota,
    .save_begin = st_save_begin, .save_write = st_save_write, .save_commit = st_save_commit,
    .save_abort = st_save_abort,
};
static const mp_provider store_provider = {"store", "fake", MP_STORE_IFACE_VERSION, &store_iface};

/* ---- users: alice@example.test / secret ---- */
struct mp_auth { int x; };
static struct mp_auth auth_obj;
static int au_instance(const char *spec, const char *base, apr_pool_t *p, void **r, const char **e)
{
    (void)spec; (void)base; (void)p; (void)e;
    *r = &auth_obj;
    return MP_AUTH_OK;
}
static int au_verify(mp_auth *a, const char *user, const char *pw, apr_pool_t *p, mp_auth_user *info)
{
    (void)a; (void)p;
    if (strcmp(user, "alice@example.test") || strcmp(pw, "secret"))
        return MP_AUTH_FAIL;
    if (info)
        memset(info, 0, sizeof *info);
    return MP_AUTH_OK;
}
static int au_lookup(mp_auth *a, const char *user, apr_pool_t *p, mp_auth_user *info)
{
    (void)a; (void)p;
    if (strncmp(user, "alice@", 6) && strncmp(user, "bob@", 4) && strncmp(user, "postmaster@", 11))
        return MP_AUTH_NOUSER;
    if (info)
        memset(info, 0, sizeof *info);
    return MP_AUTH_OK;
}
static int au_secret(mp_auth *a, const char *u, mp_secret_kind k, apr_pool_t *p, void *out)
{
    (void)a; (void)u; (void)k; (void)p; (void)out;
    return MP_AUTH_NOSECRET;
}
static int au_has(mp_auth *a, mp_secret_kind k) { (void)a; (void)k; return 0; }
static apr_interval_time_t au_failed(mp_auth *a, const char *c) { (void)a; (void)c; return 1000; }
static void au_ok(mp_auth *a, const char *c) { (void)a; (void)c; }
static const mp_auth_iface auth_iface = {
    .instance = au_instance, .verify = au_verify, .lookup = au_lookup, .secret = au_secret,
    .has_secrets = au_has, .failed = au_failed, .succeeded = au_ok,
};
static const mp_provider auth_provider = {"auth", "fake", MP_AUTH_IFACE_VERSION, &auth_iface};

static void settle_events(fake_session *fs)
{
    for (int i = 0; i < 4; i++) {
        if (fake_tls_pending(fs))
            fake_tls_complete(fs);
        if (!fake_fire_timers(fs) && !fake_tls_pending(fs))
            break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const mp_tls_mode modes[] = {MP_TLS_OFF, MP_TLS_STARTTLS, MP_TLS_REQUIRED, MP_TLS_IMPLICIT};
    uint8_t sel = data[0];
    data++;
    size--;
    fake_session *fs = fake_new_module(&mp_module_descriptor, modes[sel & 3]);
    fake_set_config(fs, "ServerName", "mail.example.test");
    fake_set_config(fs, "LocalDomains", "example.test");
    fake_set_config(fs, "MailStore", "fake:x");
    fake_set_config(fs, "UserDB", "fake:x");
    fake_set_config(fs, "MaxMessageSize", "2K");
    fake_set_config(fs, "MaxRecipients", "3");
    if (sel & 4)
        fake_set_config(fs, "Submission", "on");
    fake_register_provider(fs, &store_provider);
    fake_register_provider(fs, &auth_provider);
    fake_set_max_errors(fs, (sel & 8) ? 5 : 0);
    users_open = 0;
    if (fake_connect(fs) == 0) {
        size_t piece = (sel >> 4) == 0 ? size : (sel >> 4) == 1 ? 1 : (size_t)(sel >> 4) * 3;
        for (size_t off = 0; off < size && !fake_closed(fs); off += piece) {
            size_t n = size - off < piece ? size - off : piece;
            fake_feed(fs, data + off, n);
            settle_events(fs);
        }
    }
    if (fake_violations(fs))
        abort();
    fake_end(fs);
    if (users_open != 0 || save_obj.open)
        abort(); /* a user or a save left open after the session */
    return 0;
}

/* Fake providers for the SMTP/LMTP tests: see test_smtp_fakes.h. */
#include "test_smtp_fakes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <apr_strings.h>

#include "sasl.h"

fake_store_stats fstats;

static char spool_buf[FAKE_MSG_MAX], last_buf[FAKE_MSG_MAX];

void fakes_reset(void)
{
    for (int i = 0; i < fstats.ncommits; i++)
        free(fstats.commits[i].data);
    memset(&fstats, 0, sizeof fstats);
    fstats.spool = spool_buf;
    fstats.last = last_buf;
}

/* ---------------------------------------------------------------- store */

struct mp_store {
    int dummy;
};
struct mp_store_user {
    char name[256];
};
struct mp_save {
    int open;
};

static struct mp_store the_store;
static struct mp_save the_save;

static int st_instance(const char *spec, const char *base_dir, apr_pool_t *pool, void **store_r,
                       const char **err_r)
{
    (void)spec; (void)base_dir; (void)pool; (void)err_r;
    fstats.instances++;
    *store_r = &the_store;
    return MP_STORE_OK;
}

static int st_user_open(mp_store *st, const char *user, int create, apr_pool_t *pool, mp_store_user **u_r)
{
    (void)st; (void)create;
    if (strchr(user, '/'))
        return MP_STORE_BADNAME;
    mp_store_user *u = apr_pcalloc(pool, sizeof *u);
    snprintf(u->name, sizeof u->name, "%s", user);
    fstats.users_open++;
    fstats.user_opens++;
    *u_r = u;
    return MP_STORE_OK;
}

static void st_user_close(mp_store_user *u)
{
    (void)u;
    fstats.users_open--;
}

static int st_quota(mp_store_user *u, mp_quota *q)
{
    memset(q, 0, sizeof *q);
    if (strcmp(u->name, "full@example.test") == 0) {
        q->bytes = 1000;
        q->bytes_limit = 1000;
    }
    return MP_STORE_OK;
}

static void st_set_quota_limits(mp_store_user *u, uint64_t b, uint64_t m) { (void)u; (void)b; (void)m; }

static int st_save_begin(mp_store_user *u, const char *folder, apr_pool_t *pool, mp_save **save_r)
{
    (void)u; (void)pool;
    CU_ASSERT_STRING_EQUAL(folder, "INBOX");
    CU_ASSERT_FALSE(the_save.open);
    if (fstats.fail_begin)
        return MP_STORE_ERR;
    fstats.begun++;
    fstats.spool_len = 0;
    the_save.open = 1;
    *save_r = &the_save;
    return MP_STORE_OK;
}

static int st_save_write(mp_save *save, const void *data, size_t len)
{
    CU_ASSERT_TRUE(save->open);
    fstats.writes++;
    if (fstats.fail_write)
        return MP_STORE_ERR;
    if (fstats.spool_len + len > FAKE_MSG_MAX)
        return MP_STORE_ERR;
    memcpy(fstats.spool + fstats.spool_len, data, len);
    fstats.spool_len += len;
    return MP_STORE_OK;
}

static int st_save_commit(mp_save *save, const mp_save_meta *meta, mp_save_target *targets, size_t n)
{
    CU_ASSERT_TRUE(save->open);
    save->open = 0;
    int ok = 0;
    fstats.last_targets[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *name = targets[i].user->name;
        if (strcmp(name, "late-full@example.test") == 0)
            targets[i].result = MP_STORE_OVERQUOTA;
        else if (strcmp(name, "broken@example.test") == 0)
            targets[i].result = MP_STORE_ERR;
        else {
            targets[i].result = MP_STORE_OK;
            ok++;
        }
        size_t l = strlen(fstats.last_targets);
        snprintf(fstats.last_targets + l, sizeof fstats.last_targets - l, "%s%s", i ? "," : "", name);
    }
    fstats.last_ntargets = (int)n;
    memcpy(fstats.last, fstats.spool, fstats.spool_len);
    fstats.last_len = fstats.spool_len;
    fstats.committed++;
    if (fstats.ncommits < FAKE_COMMITS) {
        fake_commit *c = &fstats.commits[fstats.ncommits++];
        snprintf(c->targets, sizeof c->targets, "%s", fstats.last_targets);
        c->data = malloc(fstats.spool_len + 1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c->data);
        memcpy(c->data, fstats.spool, fstats.spool_len);
        c->data[fstats.spool_len] = '\0';
        c->len = fstats.spool_len;
        c->delivery = meta ? meta->delivery : 1;
    }
    return ok ? MP_STORE_OK : MP_STORE_ERR;
}

static void st_save_abort(mp_save *save)
{
    CU_ASSERT_TRUE(save->open);
    save->open = 0;
    fstats.aborted++;
}

static const mp_store_iface fake_store_iface = {
    .instance = st_instance,
    .user_open = st_user_open,
    .user_close = st_user_close,
    .quota = st_quota,
    .set_quota_limits = st_set_quota_limits,
    .save_begin = st_save_begin,
    .save_write = st_save_write,
    .save_commit = st_save_commit,
    .save_abort = st_save_abort,
};

const mp_provider fake_store_provider = {
    .kind = "store", .name = "fake", .iface_version = MP_STORE_IFACE_VERSION, .iface = &fake_store_iface};

/* ---------------------------------------------------------------- auth */

struct mp_auth {
    int dummy;
};
static struct mp_auth the_auth;

static const struct {
    const char *user, *password;
} users[] = {
    {"alice@example.test", "secret"}, {"bob@example.test", "hunter2"}, {"full@example.test", "x"},
    {"late-full@example.test", "x"}, {"broken@example.test", "x"}, {"postmaster@example.test", "x"},
    {"b\xc3\xa9@example.test", "x"}, {"net@example.test", "x"}, /* net@: allow_nets 10.0.0.0/8 */
};

static int au_instance(const char *spec, const char *base_dir, apr_pool_t *pool, void **a_r, const char **err_r)
{
    (void)spec; (void)base_dir; (void)pool; (void)err_r;
    *a_r = &the_auth;
    return MP_AUTH_OK;
}

static int find_user(const char *user)
{
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
        if (strcmp(users[i].user, user) == 0)
            return (int)i;
    return -1;
}

static int au_verify(mp_auth *a, const char *user, const char *password, apr_pool_t *pool, mp_auth_user *info)
{
    (void)a;
    fstats.verifies++;
    int i = find_user(user);
    if (i < 0 || strcmp(users[i].password, password) != 0)
        return MP_AUTH_FAIL;
    if (info) {
        memset(info, 0, sizeof *info);
        info->user = users[i].user;
        info->fields = apr_table_make(pool, 1);
    }
    return MP_AUTH_OK;
}

static int au_lookup(mp_auth *a, const char *user, apr_pool_t *pool, mp_auth_user *info)
{
    (void)a;
    fstats.lookups++;
    if (strcmp(user, "temp@example.test") == 0)
        return MP_AUTH_TEMPFAIL;
    int i = find_user(user);
    if (i < 0)
        return MP_AUTH_NOUSER;
    if (info) {
        memset(info, 0, sizeof *info);
        info->user = users[i].user;
        info->fields = apr_table_make(pool, 1);
        if (strcmp(user, "full@example.test") == 0)
            info->quota_bytes = 1000;
        if (strcmp(user, "net@example.test") == 0) /* the fake peer is 192.0.2.1: refused */
            apr_table_set(info->fields, "allow_nets", "10.0.0.0/8");
    }
    return MP_AUTH_OK;
}

/* Answers like au_lookup when a test sets fstats.nowait, but never for temp@ (as if its answer needed I/O). */
static int au_lookup_nowait(mp_auth *a, const char *user, apr_pool_t *pool, mp_auth_user *info)
{
    if (!fstats.nowait || strcmp(user, "temp@example.test") == 0)
        return MP_AUTH_AGAIN;
    int lookups = fstats.lookups;
    int rc = au_lookup(a, user, pool, info);
    fstats.lookups = lookups;
    fstats.nowait_lookups++;
    return rc;
}

static int au_secret(mp_auth *a, const char *user, mp_secret_kind kind, apr_pool_t *pool, void *out)
{
    (void)a; (void)pool;
    int i = find_user(user);
    if (i < 0 || kind != MP_SECRET_SCRAM_SHA256)
        return MP_AUTH_NOUSER;
    static const unsigned char salt[16] = "0123456789abcdef";
    return mpc_sasl_scram_derive(users[i].password, strlen(users[i].password), salt, sizeof salt, 4096, out) == 0 ? MP_AUTH_OK
                                                                                                   : MP_AUTH_TEMPFAIL;
}

static int au_has_secrets(mp_auth *a, mp_secret_kind kind)
{
    (void)a;
    return kind == MP_SECRET_SCRAM_SHA256 && fstats.scram;
}

static apr_interval_time_t au_failed(mp_auth *a, const char *client)
{
    (void)a; (void)client;
    fstats.auth_failed++;
    return FAKE_AUTH_DELAY;
}

static void au_succeeded(mp_auth *a, const char *client)
{
    (void)a; (void)client;
    fstats.auth_succeeded++;
}

static const mp_auth_iface fake_auth_iface = {
    .instance = au_instance,
    .verify = au_verify,
    .lookup = au_lookup,
    .secret = au_secret,
    .has_secrets = au_has_secrets,
    .failed = au_failed,
    .succeeded = au_succeeded,
    .lookup_nowait = au_lookup_nowait,
};

const mp_provider fake_auth_provider = {
    .kind = "auth", .name = "fake", .iface_version = MP_AUTH_IFACE_VERSION, .iface = &fake_auth_iface};

/* ---------------------------------------------------------------- sessions */

fake_session *smtp_fake_start(const mp_module *m, mp_tls_mode tls, const char *const *extra)
{
    fake_session *fs = fake_new_module(m, tls);
    fake_set_config(fs, "ServerName", "mail.example.test");
    fake_set_config(fs, "LocalDomains", "example.test, other.example");
    fake_set_config(fs, "MailStore", "fake:mail/%d/%n");
    fake_set_config(fs, "UserDB", "fake:users");
    fake_set_config(fs, "MaxMessageSize", "4K");
    fake_register_provider(fs, &fake_store_provider);
    fake_register_provider(fs, &fake_auth_provider);
    for (size_t i = 0; extra && extra[i]; i += 2)
        fake_set_config(fs, extra[i], extra[i + 1]);
    CU_ASSERT_EQUAL(fake_connect(fs), 0);
    const char *want = strcmp(m->name, "lmtp") == 0 ? "220 mail.example.test LMTP mailproto\r\n"
                                                    : "220 mail.example.test ESMTP mailproto\r\n";
    CU_ASSERT_STRING_EQUAL(fake_output(fs), want);
    fake_clear(fs);
    return fs;
}

const char *fakes_last_body(size_t *len_r)
{
    /* Return-Path is one line; Received is the lines up to the one starting with a tab and a weekday date */
    const char *p = fstats.last, *end = fstats.last + fstats.last_len;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl || strncmp(p, "Return-Path: <", 14) != 0)
        return NULL;
    p = nl + 1;
    if (strncmp(p, "Received: ", 10) != 0)
        return NULL;
    for (;;) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return NULL;
        p = nl + 1;
        if (p >= end || *p != '\t')
            break;
    }
    *len_r = (size_t)(end - p);
    return p;
}

/* In-memory store and auth providers for the POP3 tests: see test_pop3_fake.h. */
#include "test_pop3_fake.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>
#include <apr_tables.h>

#include "sasl.h"

pop3fake_stats pop3fake_stats_now;
pop3fake_config pop3fake_cfg;

/* ---------------------------------------------------------------- the data */

#define MAX_USERS 8
#define MAX_MSGS 64

typedef struct fmsg {
    uint32_t uid;
    uint32_t flags;
    char key[160];
    char *data;
    size_t len;
} fmsg;

typedef struct fuser {
    char name[64];
    int used;
    int locked;
    uint32_t next_uid;
    fmsg msgs[MAX_MSGS];
    uint32_t n;
} fuser;

static fuser users[MAX_USERS];

static fuser *user_get(const char *name, int create)
{
    for (int i = 0; i < MAX_USERS; i++)
        if (users[i].used && strcmp(users[i].name, name) == 0)
            return &users[i];
    if (!create)
        return NULL;
    for (int i = 0; i < MAX_USERS; i++)
        if (!users[i].used) {
            memset(&users[i], 0, sizeof users[i]);
            users[i].used = 1;
            users[i].next_uid = 1;
            snprintf(users[i].name, sizeof users[i].name, "%s", name);
            return &users[i];
        }
    abort();
}

void pop3fake_reset(void)
{
    for (int i = 0; i < MAX_USERS; i++) {
        for (uint32_t k = 0; k < users[i].n; k++)
            free(users[i].msgs[k].data);
        memset(&users[i], 0, sizeof users[i]);
    }
    memset(&pop3fake_stats_now, 0, sizeof pop3fake_stats_now);
    memset(&pop3fake_cfg, 0, sizeof pop3fake_cfg);
    pop3fake_cfg.read_fail_after = -1;
    pop3fake_cfg.plaintext_secrets = 1;
    pop3fake_cfg.scram_secrets = 1;
    pop3fake_cfg.fail_delay = 0;
}

uint32_t pop3fake_add(const char *user, const char *key, const char *data, size_t len)
{
    fuser *u = user_get(user, 1);
    if (u->n >= MAX_MSGS)
        abort();
    fmsg *m = &u->msgs[u->n++];
    memset(m, 0, sizeof *m);
    m->uid = u->next_uid++;
    if (key)
        snprintf(m->key, sizeof m->key, "%s", key);
    else
        snprintf(m->key, sizeof m->key, "K%u", (unsigned)m->uid);
    m->data = malloc(len ? len : 1);
    memcpy(m->data, data, len);
    m->len = len;
    return m->uid;
}

static fmsg *msg_get(fuser *u, uint32_t uid, uint32_t *idx)
{
    for (uint32_t i = 0; u && i < u->n; i++)
        if (u->msgs[i].uid == uid) {
            if (idx)
                *idx = i;
            return &u->msgs[i];
        }
    return NULL;
}

static void msg_remove(fuser *u, uint32_t i)
{
    free(u->msgs[i].data);
    memmove(&u->msgs[i], &u->msgs[i + 1], (u->n - i - 1) * sizeof u->msgs[0]);
    u->n--;
}

void pop3fake_remove(const char *user, uint32_t uid)
{
    fuser *u = user_get(user, 0);
    uint32_t i;
    if (msg_get(u, uid, &i))
        msg_remove(u, i);
}

uint32_t pop3fake_count(const char *user)
{
    fuser *u = user_get(user, 0);
    return u ? u->n : 0;
}

int pop3fake_has(const char *user, uint32_t uid)
{
    return msg_get(user_get(user, 0), uid, NULL) != NULL;
}

int pop3fake_locked(const char *user)
{
    fuser *u = user_get(user, 0);
    return u && u->locked;
}

/* ---------------------------------------------------------------- the store */

struct mp_store {
    int dummy;
};
static mp_store the_store;

struct mp_store_user {
    fuser *u;
};

struct mp_folder {
    fuser *u;
    apr_pool_t *pool;
    int locked;
    mp_msg *view;
    uint32_t n;
};

struct mp_msg_stream {
    const char *data;
    size_t len, pos;
};

static int st_instance(const char *spec, const char *base_dir, apr_pool_t *pool, void **store_r,
                       const char **err_r)
{
    if (pop3fake_cfg.fail_store_instance) {
        *err_r = "fake store instance refused";
        return MP_STORE_ERR;
    }
    *store_r = &the_store;
    return MP_STORE_OK;
}

static int st_user_open(mp_store *st, const char *user, int create, apr_pool_t *pool, mp_store_user **u_r)
{
    pop3fake_stats_now.user_opens++;
    snprintf(pop3fake_stats_now.last_user_open, sizeof pop3fake_stats_now.last_user_open, "%s", user);
    mp_store_user *u = apr_pcalloc(pool, sizeof *u);
    u->u = user_get(user, create);
    if (!u->u)
        return MP_STORE_NOTFOUND;
    *u_r = u;
    return MP_STORE_OK;
}

static void st_user_close(mp_store_user *u)
{
    pop3fake_stats_now.user_closes++;
}

static void st_set_quota_limits(mp_store_user *u, uint64_t b, uint64_t m) {}

/* The view: a copy of the user's messages as they are now. */
static void view_take(mp_folder *f)
{
    f->n = f->u->n;
    f->view = apr_pcalloc(f->pool, (f->n ? f->n : 1) * sizeof *f->view);
    for (uint32_t i = 0; i < f->n; i++) {
        fmsg *m = &f->u->msgs[i];
        f->view[i] = (mp_msg){.uid = m->uid, .flags = m->flags, .size = (uint64_t)((long)m->len + pop3fake_cfg.size_adjust),
                              .key = apr_pstrdup(f->pool, m->key)};
    }
}

static int st_folder_open(mp_store_user *u, const char *name, int readonly, apr_pool_t *pool, mp_folder **f_r)
{
    if (pop3fake_cfg.fail_folder_open)
        return MP_STORE_ERR;
    if (strcmp(name, "INBOX") != 0)
        return MP_STORE_NOTFOUND;
    pop3fake_stats_now.folder_opens++;
    mp_folder *f = apr_pcalloc(pool, sizeof *f);
    f->u = u->u;
    f->pool = pool;
    view_take(f);
    *f_r = f;
    return MP_STORE_OK;
}

static int st_folder_sync(mp_folder *f, const mp_sync_cb *cb, void *arg)
{
    (void)cb, (void)arg;
    pop3fake_stats_now.folder_syncs++;
    view_take(f);
    return MP_STORE_OK;
}

static void st_folder_close(mp_folder *f)
{
    pop3fake_stats_now.folder_closes++;
    if (f->locked)
        f->u->locked = 0;
    f->locked = 0;
}

static void st_folder_messages(mp_folder *f, const mp_msg **msgs_r, uint32_t *count_r)
{
    *msgs_r = f->view;
    *count_r = f->n;
}

static int st_folder_lock(mp_folder *f)
{
    if (f->locked)
        return MP_STORE_OK;
    if (f->u->locked)
        return MP_STORE_LOCKED;
    if (pop3fake_cfg.expunge_before_lock) { /* another session's QUIT, just between the open and the lock */
        uint32_t i;
        if (msg_get(f->u, pop3fake_cfg.expunge_before_lock, &i))
            msg_remove(f->u, i);
        pop3fake_cfg.expunge_before_lock = 0;
    }
    f->u->locked = f->locked = 1;
    return MP_STORE_OK;
}

static int st_message_open(mp_folder *f, uint32_t uid, apr_pool_t *pool, mp_msg_stream **stream_r)
{
    fmsg *m = msg_get(f->u, uid, NULL);
    if (!m)
        return MP_STORE_NOTFOUND;
    pop3fake_stats_now.stream_opens++;
    mp_msg_stream *st = apr_pcalloc(pool, sizeof *st);
    /* a copy, as a file would be: the handler must not see later changes */
    st->data = apr_pmemdup(pool, m->data, m->len ? m->len : 1);
    st->len = m->len;
    *stream_r = st;
    return MP_STORE_OK;
}

static long st_stream_read(mp_msg_stream *st, char *buf, size_t len)
{
    if (pop3fake_cfg.read_fail_after >= 0 && st->pos >= (size_t)pop3fake_cfg.read_fail_after)
        return -1;
    size_t n = st->len - st->pos;
    if (n > len)
        n = len;
    if (pop3fake_cfg.max_read && n > pop3fake_cfg.max_read)
        n = pop3fake_cfg.max_read;
    memcpy(buf, st->data + st->pos, n);
    st->pos += n;
    return (long)n;
}

static void st_stream_close(mp_msg_stream *st)
{
    pop3fake_stats_now.stream_closes++;
}

static int st_store_flags(mp_folder *f, uint32_t uid, int mode, uint32_t flags, uint32_t nkeywords,
                          const char *const *keywords, uint64_t unchangedsince)
{
    pop3fake_stats_now.flag_calls++;
    fmsg *m = msg_get(f->u, uid, NULL);
    if (!m)
        return MP_STORE_NOTFOUND;
    if (mode > 0)
        m->flags |= flags;
    else if (mode < 0)
        m->flags &= ~flags;
    else
        m->flags = flags;
    return MP_STORE_OK;
}

static int st_expunge(mp_folder *f, const uint32_t *uids, uint32_t nuids, const mp_sync_cb *cb, void *arg)
{
    pop3fake_stats_now.expunges++;
    if (pop3fake_cfg.fail_expunge)
        return MP_STORE_ERR;
    for (uint32_t k = 0; k < nuids; k++) {
        uint32_t i;
        fmsg *m = msg_get(f->u, uids[k], &i);
        if (m && (m->flags & MP_FLAG_DELETED)) {
            msg_remove(f->u, i);
            cb->expunged(arg, i + 1, uids[k]);
        }
    }
    return MP_STORE_OK;
}

static const mp_store_iface store_iface = {
    .instance = st_instance,
    .user_open = st_user_open,
    .user_close = st_user_close,
    .set_quota_limits = st_set_quota_limits,
    .folder_open = st_folder_open,
    .folder_close = st_folder_close,
    .folder_messages = st_folder_messages,
    .folder_sync = st_folder_sync,
    .folder_lock = st_folder_lock,
    .message_open = st_message_open,
    .stream_read = st_stream_read,
    .stream_close = st_stream_close,
    .store_flags = st_store_flags,
    .expunge = st_expunge,
};

const mp_provider pop3fake_store_provider = {
    .kind = "store", .name = "fakestore", .iface_version = MP_STORE_IFACE_VERSION, .iface = &store_iface};

/* ---------------------------------------------------------------- the user database */

struct mp_auth {
    int dummy;
};
static mp_auth the_auth;

static const struct {
    const char *name, *alias, *password, *allow_nets;
} accounts[] = {
    {"alice@example.test", "alice", "secret", NULL},
    {"bob@example.test", NULL, "hunter2", NULL},
    {"net@example.test", NULL, "secret", "10.0.0.0/8"},
    {POP3FAKE_UTF8_USER, NULL, POP3FAKE_UTF8_PASSWORD, NULL}, /* UTF-8: RFC 6856 section 2.2 */
};

static int account(const char *user)
{
    for (int i = 0; i < (int)(sizeof accounts / sizeof accounts[0]); i++)
        if (strcmp(user, accounts[i].name) == 0 || (accounts[i].alias && strcmp(user, accounts[i].alias) == 0))
            return i;
    return -1;
}

static void fill_info(int i, apr_pool_t *pool, mp_auth_user *info)
{
    if (!info)
        return;
    memset(info, 0, sizeof *info);
    info->user = accounts[i].name;
    info->fields = apr_table_make(pool, 2);
    if (accounts[i].allow_nets)
        apr_table_set(info->fields, "allow_nets", accounts[i].allow_nets);
}

static int au_instance(const char *spec, const char *base_dir, apr_pool_t *pool, void **auth_r, const char **err_r)
{
    *auth_r = &the_auth;
    return MP_AUTH_OK;
}

static int au_verify(mp_auth *a, const char *user, const char *password, apr_pool_t *pool, mp_auth_user *info_r)
{
    pop3fake_stats_now.verify_calls++;
    snprintf(pop3fake_stats_now.last_verify_password, sizeof pop3fake_stats_now.last_verify_password, "%s", password);
    if (strcmp(user, "temp@example.test") == 0)
        return MP_AUTH_TEMPFAIL;
    int i = account(user);
    if (i < 0 || strcmp(password, accounts[i].password) != 0)
        return MP_AUTH_FAIL;
    fill_info(i, pool, info_r);
    return MP_AUTH_OK;
}

static int au_lookup(mp_auth *a, const char *user, apr_pool_t *pool, mp_auth_user *info_r)
{
    if (strcmp(user, "temp@example.test") == 0)
        return MP_AUTH_TEMPFAIL;
    int i = account(user);
    if (i < 0)
        return MP_AUTH_NOUSER;
    fill_info(i, pool, info_r);
    return MP_AUTH_OK;
}

static int au_secret(mp_auth *a, const char *user, mp_secret_kind kind, apr_pool_t *pool, void *out)
{
    if (strcmp(user, "temp@example.test") == 0)
        return MP_AUTH_TEMPFAIL;
    int i = account(user);
    if (i < 0)
        return MP_AUTH_NOUSER;
    if (kind == MP_SECRET_PLAINTEXT) {
        if (!pop3fake_cfg.plaintext_secrets)
            return MP_AUTH_NOSECRET;
        *(const char **)out = apr_pstrdup(pool, accounts[i].password);
        return MP_AUTH_OK;
    }
    if (kind == MP_SECRET_SCRAM_SHA256) {
        if (!pop3fake_cfg.scram_secrets)
            return MP_AUTH_NOSECRET;
        static const unsigned char salt[] = "fake-salt-0123456789";
        const char *pw = accounts[i].password;
        return mpc_sasl_scram_derive(pw, strlen(pw), salt, sizeof salt - 1, 4096, out) == 0 ? MP_AUTH_OK
                                                                                           : MP_AUTH_TEMPFAIL;
    }
    return MP_AUTH_NOSECRET;
}

static int au_has_secrets(mp_auth *a, mp_secret_kind kind)
{
    return kind == MP_SECRET_PLAINTEXT ? pop3fake_cfg.plaintext_secrets
           : kind == MP_SECRET_SCRAM_SHA256 ? pop3fake_cfg.scram_secrets
                                           : 0;
}

static apr_interval_time_t au_failed(mp_auth *a, const char *client_addr)
{
    pop3fake_stats_now.failed_calls++;
    return pop3fake_cfg.fail_delay;
}

static void au_succeeded(mp_auth *a, const char *client_addr)
{
    pop3fake_stats_now.succeeded_calls++;
}

static const mp_auth_iface auth_iface = {
    .instance = au_instance,
    .verify = au_verify,
    .lookup = au_lookup,
    .secret = au_secret,
    .has_secrets = au_has_secrets,
    .failed = au_failed,
    .succeeded = au_succeeded,
};

const mp_provider pop3fake_auth_provider = {
    .kind = "auth", .name = "fakeauth", .iface_version = MP_AUTH_IFACE_VERSION, .iface = &auth_iface};

void pop3fake_setup(fake_session *fs)
{
    fake_register_provider(fs, &pop3fake_store_provider);
    fake_register_provider(fs, &pop3fake_auth_provider);
    fake_set_config(fs, "MailStore", "fakestore:mail/%d/%n");
    fake_set_config(fs, "UserDB", "fakeauth:users");
    fake_set_config(fs, "ServerName", "mail.example.test");
    fake_set_config(fs, "ServerRoot", "/nonexistent");
}

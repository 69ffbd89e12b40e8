/*
 * mod_pop3: the module descriptor, and the store and auth provider instances the sessions share.
 *
 * Instances are made on first use, never in init() (the configuration names them, and a provider module
 * may be loaded after this one), from `MailStore NAME:SPEC` and `UserDB NAME:SPEC`: the provider is
 * looked up by kind and NAME, its iface_version checked, and iface->instance(SPEC, ServerRoot) called.
 * They are cached per module generation (the auth instance keeps the per-address failure counts, so it
 * must be shared), keyed by provider table, spec and base folder, under a mutex: sessions of several
 * event-loop threads resolve them.
 */
#include <string.h>

#include <apr_hash.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>

#include "pop3.h"

typedef struct pop3_module {
    const mp_host *host;
    apr_pool_t *pool;          /* the generation's; instance pools are its children */
    apr_thread_mutex_t *mutex; /* guards `instances` and allocation from `pool` */
    apr_hash_t *instances;     /* key -> void * instance */
} pop3_module;

static int pop3_init(const mp_host *host, apr_pool_t *pool, void **ctx_r)
{
    pop3_module *m = apr_pcalloc(pool, sizeof *m);
    m->host = host;
    m->pool = pool;
    m->instances = apr_hash_make(pool);
    if (apr_thread_mutex_create(&m->mutex, APR_THREAD_MUTEX_DEFAULT, pool) != APR_SUCCESS) {
        host->log(NULL, MP_LOG_ERROR, 40901, "pop3: cannot create a mutex");
        return -1;
    }
    *ctx_r = m;
    return 0;
}

/* One instance of `kind` for the directive's value "NAME:SPEC". Returns NULL and sets *err_r on failure. */
static void *instance_for(mp_session *s, pop3_module *m, const char *kind, const char *directive,
                          const mp_provider **prov_r, const char **err_r)
{
    const mp_host *h = s->host;
    const char *value = h->config(s, directive);
    if (!value || !*value) {
        *err_r = apr_psprintf(s->pool, "%s is not configured", directive);
        return NULL;
    }
    const char *colon = strchr(value, ':');
    if (!colon || colon == value) {
        *err_r = apr_psprintf(s->pool, "%s \"%s\" is not NAME:SPEC", directive, value);
        return NULL;
    }
    const char *name = apr_pstrmemdup(s->pool, value, (apr_size_t)(colon - value));
    const char *spec = colon + 1;
    const mp_provider *p = h->provider(s, kind, name);
    if (!p) {
        *err_r = apr_psprintf(s->pool, "%s: no %s provider named \"%s\" is loaded", directive, kind, name);
        return NULL;
    }
    uint32_t want = strcmp(kind, "store") == 0 ? MP_STORE_IFACE_VERSION : MP_AUTH_IFACE_VERSION;
    if (p->iface_version != want || !p->iface) {
        *err_r = apr_psprintf(s->pool, "%s provider \"%s\" has interface version %u, this module needs %u", kind,
                              name, (unsigned)p->iface_version, (unsigned)want);
        return NULL;
    }
    *prov_r = p;
    const char *base = h->config(s, "ServerRoot");
    if (!base)
        base = ".";
    if (!m) {
        *err_r = "the pop3 module was not initialised";
        return NULL;
    }

    /* The provider table's address is part of the key: a reloaded provider module gets fresh instances. */
    char *key = apr_psprintf(s->pool, "%s\n%pp\n%s\n%s", kind, (const void *)p, spec, base);
    void *inst = NULL;
    apr_thread_mutex_lock(m->mutex);
    inst = apr_hash_get(m->instances, key, APR_HASH_KEY_STRING);
    if (!inst) {
        apr_pool_t *ipool;
        const char *err = NULL;
        int rc = -1;
        if (apr_pool_create(&ipool, m->pool) == APR_SUCCESS) {
            if (strcmp(kind, "store") == 0)
                rc = ((const mp_store_iface *)p->iface)->instance(spec, base, ipool, (mp_store **)&inst, &err);
            else
                rc = ((const mp_auth_iface *)p->iface)->instance(spec, base, ipool, (mp_auth **)&inst, &err);
            if (rc == 0 && inst) {
                apr_hash_set(m->instances, apr_pstrdup(ipool, key), APR_HASH_KEY_STRING, inst);
            } else {
                *err_r = apr_psprintf(s->pool, "%s %s: %s", directive, value, err ? err : "cannot make an instance");
                apr_pool_destroy(ipool);
                inst = NULL;
            }
        } else {
            *err_r = "out of memory";
        }
    }
    apr_thread_mutex_unlock(m->mutex);
    return inst;
}

void pop3_providers_resolve(mp_session *s)
{
    pop3_session *ps = s->state;
    if (ps->providers_done)
        return;
    ps->providers_done = 1;
    pop3_module *m = s->module_ctx;
    const mp_provider *sp = NULL, *ap = NULL;
    const char *err = NULL;
    mp_store *store = instance_for(s, m, "store", "MailStore", &sp, &err);
    mp_auth *auth = store ? instance_for(s, m, "auth", "UserDB", &ap, &err) : NULL;
    if (!store || !auth) {
        ps->prov.error = err ? err : "providers not available";
        s->host->log(s, MP_LOG_ERROR, 40902, "pop3: %s", ps->prov.error);
        return;
    }
    ps->prov.store_if = sp->iface;
    ps->prov.store = store;
    ps->prov.auth_if = ap->iface;
    ps->prov.auth = auth;
}

/* ---- the protocol table (callbacks in pop3_session.c) ---- */

int pop3_on_connect(mp_session *s);
long pop3_on_input(mp_session *s, const char *data, size_t len);
void pop3_on_tls_ready(mp_session *s);
void pop3_on_writable(mp_session *s);
void pop3_on_goodbye(mp_session *s, mp_goodbye why);
void pop3_on_close(mp_session *s, mp_close_reason why);

static const mp_protocol pop3_protocol = {
    .name = "pop3",
    .default_port = 110,
    .default_tls_port = 995,
    .session_size = sizeof(pop3_session),
    .on_connect = pop3_on_connect,
    .on_input = pop3_on_input,
    .on_tls_ready = pop3_on_tls_ready,
    .on_writable = pop3_on_writable,
    .on_goodbye = pop3_on_goodbye,
    .on_close = pop3_on_close,
};

MP_MODULE {
    MP_MODULE_HEADER,
    .name = "pop3",
    .kind = MP_KIND_PROTOCOL,
    .version = "1.0",
    .description = "POP3 (RFC 1939) with CAPA, STLS, SASL AUTH, APOP, TOP and UIDL",
    .init = pop3_init,
    .protocol = &pop3_protocol,
};

/*
 * The module: configuration directives, provider instances shared by the sessions of one generation, and
 * the descriptor. Built twice: mod_smtp.so ("smtp") and, with SMTP_LMTP=1, mod_lmtp.so ("lmtp").
 *
 *   LoadModule smtp mod_smtp.so          LoadModule lmtp mod_lmtp.so
 *   <Listen 127.0.0.1:587>                <Listen 127.0.0.1:24>
 *       Protocol smtp                         Protocol lmtp
 *       TLS required                      </Listen>
 *       Submission on
 *   </Listen>
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <apr_strings.h>

#include "smtp.h"

/* ---------------------------------------------------------------- directives */

int smtp_parse_bytes(const char *text, uint64_t *bytes_r)
{
    char *end;
    if (!text || !*text)
        return -1;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text)
        return -1;
    uint64_t mult = 1;
    if (*end) {
        switch (*end) {
        case 'k': case 'K': mult = 1024; break;
        case 'm': case 'M': mult = 1024 * 1024; break;
        case 'g': case 'G': mult = 1024ull * 1024 * 1024; break;
        default: return -1;
        }
        if (end[1])
            return -1;
    }
    if (v > UINT64_MAX / mult)
        return -1;
    *bytes_r = (uint64_t)v * mult;
    return 0;
}

#if !SMTP_LMTP
static const char *check_on_off(const char *value, apr_pool_t *pool)
{
    (void)pool;
    if (strcasecmp(value, "on") == 0 || strcasecmp(value, "off") == 0)
        return NULL;
    return "expected on or off";
}
#endif

static const char *check_max_rcpts(const char *value, apr_pool_t *pool)
{
    (void)pool;
    char *end;
    long v = strtol(value, &end, 10);
    if (end == value || *end || v < 1 || v > 100000)
        return "expected a number of recipients from 1 to 100000";
    return NULL;
}

static const mp_directive smtp_directives[] = {
#if !SMTP_LMTP
    {.name = "Submission", .scope = MP_SCOPE_LISTEN, .check = check_on_off,
     .help = "on: SMTP submission (RFC 6409): AUTH required before MAIL, the sender must be the user's"},
#endif
    {.name = "MaxRecipients", .scope = MP_SCOPE_GLOBAL | MP_SCOPE_LISTEN, .check = check_max_rcpts,
     .help = "recipients per message (default 100; RFC 5321 section 4.5.3.1.8)"},
    {.name = NULL},
};

/* ---------------------------------------------------------------- provider instances */

typedef struct smtp_instance_entry {
    void *instance;
    apr_pool_t *pool;
} smtp_instance_entry;

void *smtp_instance(mp_session *s, const char *kind, const char *directive, uint32_t iface_version,
                    const void **iface_r)
{
    const mp_host *h = s->host;
    smtp_module_ctx *ctx = s->module_ctx;
    *iface_r = NULL;
    const char *spec = h->config(s, directive);
    if (!spec || !*spec || !ctx)
        return NULL;
    /* "maildir:mail/%d/%n": the provider's name, then its own spec */
    const char *colon = strchr(spec, ':');
    if (!colon || colon == spec) {
        h->log(s, MP_LOG_ERROR, 30003, "%s '%s': expected PROVIDER:SPEC", directive, spec);
        return NULL;
    }
    char *name = apr_pstrmemdup(s->pool, spec, (size_t)(colon - spec));
    const mp_provider *p = h->provider(s, kind, name);
    if (!p) {
        h->log(s, MP_LOG_ERROR, 30004, "%s: no %s provider named '%s' is loaded", directive, kind, name);
        return NULL;
    }
    if (p->iface_version != iface_version || !p->iface) {
        h->log(s, MP_LOG_ERROR, 30005, "%s provider '%s' has interface version %u, expected %u", kind, name,
               (unsigned)p->iface_version, (unsigned)iface_version);
        return NULL;
    }
    const char *base = h->config(s, "ServerRoot");
    /* The provider's table is part of the key: after a reload the provider may be a new generation. */
    char *key = apr_psprintf(s->pool, "%s|%pp|%s|%s", kind, p->iface, base ? base : "", spec);
    void *inst = NULL;
    apr_thread_mutex_lock(ctx->mutex);
    smtp_instance_entry *e = apr_hash_get(ctx->instances, key, APR_HASH_KEY_STRING);
    if (e) {
        inst = e->instance;
    } else {
        apr_pool_t *pool;
        const char *err = NULL;
        int rc = -1;
        if (apr_pool_create(&pool, ctx->pool) == APR_SUCCESS) {
            if (strcmp(kind, "store") == 0)
                rc = ((const mp_store_iface *)p->iface)->instance(colon + 1, base ? base : ".", pool,
                                                                  (mp_store **)&inst, &err);
            else
                rc = ((const mp_auth_iface *)p->iface)->instance(colon + 1, base ? base : ".", pool,
                                                                 (mp_auth **)&inst, &err);
            if (rc == 0) {
                e = apr_pcalloc(pool, sizeof *e);
                e->instance = inst;
                e->pool = pool;
                apr_hash_set(ctx->instances, apr_pstrdup(pool, key), APR_HASH_KEY_STRING, e);
            } else {
                h->log(s, MP_LOG_ERROR, 30006, "%s '%s': %s", directive, spec, err ? err : "cannot open");
                apr_pool_destroy(pool);
                inst = NULL;
            }
        }
    }
    apr_thread_mutex_unlock(ctx->mutex);
    if (inst)
        *iface_r = p->iface;
    return inst;
}

/* ---------------------------------------------------------------- life of a generation */

static int smtp_init(const mp_host *host, apr_pool_t *pool, void **ctx_r)
{
    smtp_module_ctx *ctx = apr_pcalloc(pool, sizeof *ctx);
    ctx->host = host;
    if (apr_pool_create(&ctx->pool, pool) != APR_SUCCESS ||
        apr_thread_mutex_create(&ctx->mutex, APR_THREAD_MUTEX_DEFAULT, pool) != APR_SUCCESS) {
        host->log(NULL, MP_LOG_ERROR, 30007, "%s: cannot set up", SMTP_PROTO_NAME);
        return -1;
    }
    ctx->instances = apr_hash_make(ctx->pool);
    /* No provider instance here: provider modules may be loaded after this one. */
    *ctx_r = ctx;
    return 0;
}

static void smtp_fini(void *arg)
{
    smtp_module_ctx *ctx = arg;
    if (ctx && ctx->pool) {
        apr_pool_destroy(ctx->pool);
        ctx->pool = NULL;
    }
}

MP_MODULE {
    MP_MODULE_HEADER,
    .name = SMTP_PROTO_NAME,
    .kind = MP_KIND_PROTOCOL,
    .version = "1.0",
#if SMTP_LMTP
    .description = "LMTP (RFC 2033) delivery into the mail store",
#else
    .description = "SMTP (RFC 5321): MX and submission (RFC 6409), with ESMTP extensions",
#endif
    .init = smtp_init,
    .fini = smtp_fini,
    .directives = smtp_directives,
    .protocol = &smtp_protocol,
};

/*
 * mod_pop3: the module descriptor, and the store and auth provider instances of a session.
 *
 * Instances come from the host (host->provider_instance): it makes one per configuration from
 * `MailStore NAME:SPEC` and `UserDB NAME:SPEC` and keeps it as long as a session of that configuration
 * lives, so the auth instance's per-address failure counts are shared and nothing outlives its provider.
 */
#include <stdlib.h>
#include <string.h>

#include "pop3.h"

/* ---- directives ---- */

int pop3_parse_wait(const char *text, apr_interval_time_t *wait_r)
{
    char *end;
    if (!text || *text < '0' || *text > '9')
        return -1;
    unsigned long v = strtoul(text, &end, 10);
    apr_interval_time_t unit;
    if (strcmp(end, "ms") == 0)
        unit = 1000;
    else if (*end == '\0' || strcmp(end, "s") == 0)
        unit = APR_USEC_PER_SEC;
    else if (strcmp(end, "m") == 0)
        unit = 60 * APR_USEC_PER_SEC;
    else
        return -1;
    if (v > 600000000ul || v * (uint64_t)unit > 600 * (uint64_t)APR_USEC_PER_SEC)
        return -1;
    *wait_r = (apr_interval_time_t)v * unit;
    return 0;
}

static const char *check_wait(const char *value, apr_pool_t *pool)
{
    (void)pool;
    apr_interval_time_t w;
    return pop3_parse_wait(value, &w) == 0 ? NULL : "expected a time up to 10m: 0, 500ms, 10s, 1m";
}

static const mp_directive pop3_directives[] = {
    {.name = "POP3LockWait", .scope = MP_SCOPE_GLOBAL | MP_SCOPE_LISTEN, .check = check_wait,
     .help = "how long a login waits for a maildrop another POP3 session holds before -ERR [IN-USE] (default "
             "10s; 0: at once)"},
    {.name = NULL},
};

void pop3_providers_resolve(mp_session *s)
{
    pop3_session *ps = s->state;
    if (ps->providers_done)
        return;
    ps->providers_done = 1;
    const mp_host *h = s->host;
    const void *sif = NULL, *aif = NULL;
    mp_store *store = h->provider_instance(s, "store", "MailStore", MP_STORE_IFACE_VERSION, &sif);
    mp_auth *auth = store ? h->provider_instance(s, "auth", "UserDB", MP_AUTH_IFACE_VERSION, &aif) : NULL;
    if (!store || !auth) {
        ps->prov.error = "mail store or user database not available"; /* the host logged why */
        return;
    }
    ps->prov.store_if = sif;
    ps->prov.store = store;
    ps->prov.auth_if = aif;
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
    .description = "POP3 (RFC 1939) with CAPA, STLS, SASL AUTH, APOP, TOP, UIDL, UTF8 and LANG",
    .directives = pop3_directives,
    .protocol = &pop3_protocol,
};

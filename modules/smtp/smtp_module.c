/*
 * The module: configuration directives, the provider instances (made and kept by the host), and
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

/* The host makes and keeps them per configuration (host.h provider_instance). */
void *smtp_instance(mp_session *s, const char *kind, const char *directive, uint32_t iface_version,
                    const void **iface_r)
{
    return s->host->provider_instance(s, kind, directive, iface_version, iface_r);
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
    .directives = smtp_directives,
    .protocol = &smtp_protocol,
};

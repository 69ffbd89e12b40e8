/*
 * mailprotod configuration file: parsing (step 1) and validation against the loaded modules (step 2).
 * See config.h for the contract. Everything is allocated in the caller's pool; the raw file text lives in
 * a scratch subpool that is destroyed before returning.
 */
#include "config.h"

#include <apr_file_io.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <arpa/inet.h>
#include <limits.h>
#include <string.h>

#define MAX_LINE 8192                     /* bytes per line, without the line end */
#define MAX_FILE (4 * 1024 * 1024)        /* a configuration file is small; refuse anything huge */
#define NAME_KEY "mph_conf.name:"         /* pool userdata: the file name as given, for step 2 */

typedef struct parser parser;
typedef const char *(*core_fn)(parser *p, mph_listen_conf *l, const char *name, const char *value);

typedef struct core_directive {
    const char *name;
    unsigned scope;   /* MP_SCOPE_GLOBAL and/or MP_SCOPE_LISTEN */
    core_fn set;      /* NULL: stored in `values` only (it belongs to a later module but is core-known) */
} core_directive;

/* What the parser needs to remember about a listener but the public struct does not carry. */
typedef struct listen_priv {
    int tls_line;      /* line of TLS (0 when not set) */
} listen_priv;

struct parser {
    apr_pool_t *pool;
    mph_conf *conf;
    const char *name;          /* the file name as given, for messages */
    int line;
    mph_listen_conf *block;    /* the open <Listen> block, or NULL */
    apr_array_header_t *priv;  /* listen_priv, parallel to conf->listeners */
    const char *module_dir;    /* ModuleDir as written (resolved at the end: LoadModule may precede it) */
    int module_dir_line;
    int err_line;              /* set when an error belongs to another line than the current one */
};

/* ---------------------------------------------------------------- value parsers */

/* Decimal digits only (no sign, no spaces) up to `max`; advances *s past them. */
static int parse_u64(const char **s, apr_uint64_t max, apr_uint64_t *out)
{
    const char *c = *s;
    apr_uint64_t v = 0;

    if (!apr_isdigit(*c))
        return -1;
    for (; apr_isdigit(*c); c++) {
        unsigned d = (unsigned)(*c - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *s = c;
    *out = v;
    return 0;
}

int mph_parse_size(const char *text, apr_off_t *bytes_r)
{
    const apr_uint64_t max = (apr_uint64_t)APR_INT64_MAX;
    const char *c = text;
    apr_uint64_t n, mul = 1;

    if (!text || parse_u64(&c, max, &n))
        return -1;
    switch (*c) {
    case '\0': break;
    case 'k': case 'K': mul = APR_UINT64_C(1) << 10; c++; break;
    case 'm': case 'M': mul = APR_UINT64_C(1) << 20; c++; break;
    case 'g': case 'G': mul = APR_UINT64_C(1) << 30; c++; break;
    default: return -1;
    }
    if (*c || n > max / mul)
        return -1;
    *bytes_r = (apr_off_t)(n * mul);
    return 0;
}

int mph_parse_interval(const char *text, apr_interval_time_t *usec_r)
{
    /* Ten years at most: every interval is added to the current time (a deadline) and must not overflow. */
    const apr_uint64_t max = (apr_uint64_t)3650 * 24 * 3600 * APR_USEC_PER_SEC;
    const char *c = text;
    apr_uint64_t n, mul;

    if (!text || parse_u64(&c, max, &n))
        return -1;
    if (!*c || !strcasecmp(c, "s"))
        mul = APR_USEC_PER_SEC;        /* a bare number is seconds, as in httpd's Timeout */
    else if (!strcasecmp(c, "ms"))
        mul = 1000;
    else if (!strcasecmp(c, "m"))
        mul = 60 * APR_USEC_PER_SEC;
    else if (!strcasecmp(c, "h"))
        mul = 3600 * APR_USEC_PER_SEC;
    else
        return -1;
    if (n > max / mul)
        return -1;
    *usec_r = (apr_interval_time_t)(n * mul);
    return 0;
}

int mph_parse_tls_mode(const char *text, mp_tls_mode *mode_r)
{
    static const struct { const char *name; mp_tls_mode mode; } modes[] = {
        {"off", MP_TLS_OFF}, {"starttls", MP_TLS_STARTTLS},
        {"required", MP_TLS_REQUIRED}, {"implicit", MP_TLS_IMPLICIT},
    };

    for (size_t i = 0; text && i < sizeof(modes) / sizeof(modes[0]); i++)
        if (!strcasecmp(text, modes[i].name)) {
            *mode_r = modes[i].mode;
            return 0;
        }
    return -1;
}

/* ---------------------------------------------------------------- helpers */

static const char *fail(parser *p, int line, const char *msg)
{
    return apr_psprintf(p->pool, "%s:%d: %s", p->name, line, msg);
}

/* `path` against `dir` (an absolute `path` stays as it is). */
static const char *resolve_path(apr_pool_t *pool, const char *dir, const char *path)
{
    char *out;
    return apr_filepath_merge(&out, dir, path, 0, pool) == APR_SUCCESS ? out : NULL;
}

static const char *path_value(parser *p, const char *name, const char *value, const char **out)
{
    *out = resolve_path(p->pool, p->conf->dir, value);
    return *out ? NULL : apr_psprintf(p->pool, "bad path '%s' for %s", value, name);
}

static const char *int_value(parser *p, const char *name, const char *value, int min, int *out)
{
    const char *c = value;
    apr_uint64_t n;

    if (parse_u64(&c, INT_MAX, &n) || *c || n < (apr_uint64_t)min)
        return apr_psprintf(p->pool, "bad number '%s' for %s (expected a whole number >= %d)", value,
                            name, min);
    *out = (int)n;
    return NULL;
}

static const char *size_value(parser *p, const char *name, const char *value, apr_off_t max,
                              apr_off_t *out)
{
    if (mph_parse_size(value, out) || *out <= 0 || *out > max)
        return apr_psprintf(p->pool, "bad size '%s' for %s (expected e.g. 1000, 64K, 50M, 1G)", value,
                            name);
    return NULL;
}

static const char *interval_value(parser *p, const char *name, const char *value, int allow_zero,
                                  apr_interval_time_t *out)
{
    if (mph_parse_interval(value, out) || (!allow_zero && *out == 0))
        return apr_psprintf(p->pool, "bad interval '%s' for %s (expected e.g. 300, 30s, 5m, 1h, 250ms)",
                            value, name);
    return NULL;
}

/* Splits off the next word, which may be double-quoted; NULL when none is left. */
static char *next_word(char **s)
{
    char *c = *s, *w;

    while (apr_isspace(*c))
        c++;
    if (!*c)
        return NULL;
    if (*c == '"') {
        w = ++c;
        c = strchr(c, '"');   /* the line's quotes were checked to be balanced */
    } else {
        for (w = c; *c && !apr_isspace(*c); c++)
            ;
    }
    if (c && *c)
        *c++ = '\0';
    *s = c ? c : w + strlen(w);
    return w;
}

/* ---------------------------------------------------------------- core directives */

static const char *set_server_name(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    p->conf->server_name = v;
    return NULL;
}

static const char *set_module_dir(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    p->module_dir = v;
    p->module_dir_line = p->line;
    return NULL;
}

static const char *load_module(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    char *rest = apr_pstrdup(p->pool, v);
    const char *name = next_word(&rest), *file = next_word(&rest);
    mph_module_conf *m;

    if (!name || !file || next_word(&rest))
        return "LoadModule needs a module name and a file";
    for (int i = 0; i < p->conf->modules->nelts; i++) {
        m = &APR_ARRAY_IDX(p->conf->modules, i, mph_module_conf);
        if (!strcmp(m->name, name))
            return apr_psprintf(p->pool, "duplicate LoadModule '%s' (first at line %d)", name, m->line);
    }
    m = apr_array_push(p->conf->modules);
    m->name = name;
    m->path = file;   /* resolved against ModuleDir at the end */
    m->line = p->line;
    return NULL;
}

static const char *set_state_dir(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    return path_value(p, n, v, &p->conf->state_dir);
}

static const char *set_user(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    p->conf->user = v;
    return NULL;
}

/* A certificate that cannot be loaded is reported at the line that named it. */
static const char *set_cert(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    *(l ? &l->cert_line : &p->conf->cert_line) = p->line;
    return path_value(p, n, v, l ? &l->cert_file : &p->conf->cert_file);
}

static const char *set_key(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    *(l ? &l->key_line : &p->conf->key_line) = p->line;
    return path_value(p, n, v, l ? &l->key_file : &p->conf->key_file);
}

static const char *set_log_level(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    static const char *const levels[] = {"error", "warn", "notice", "info", "debug"};

    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        if (!strcasecmp(v, levels[i])) {
            p->conf->log_level = levels[i];
            return NULL;
        }
    return apr_psprintf(p->pool, "bad LogLevel '%s' (expected error, warn, notice, info or debug)", v);
}

static const char *set_threads(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    return int_value(p, n, v, 0, &p->conf->threads);   /* 0: one per core */
}

static const char *set_workers(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    return int_value(p, n, v, 1, &p->conf->workers);
}

static const char *set_max_line(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    apr_off_t size;
    /* a line buffer is allocated in one piece: keep it well inside int range */
    const char *err = size_value(p, n, v, INT_MAX, &size);

    if (!err)
        p->conf->max_line = (apr_size_t)size;
    return err;
}

static const char *set_max_errors(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    return int_value(p, n, v, 1, &p->conf->max_errors);
}

static const char *set_idle_timeout(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    return interval_value(p, n, v, 0, l ? &l->idle_timeout : &p->conf->idle_timeout);
}

static const char *set_shutdown_timeout(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    return interval_value(p, n, v, 1, &p->conf->shutdown_timeout);   /* 0: goodbye, then close at once */
}

static const char *set_max_connections(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    return int_value(p, n, v, 1, l ? &l->max_connections : &p->conf->max_connections);
}

static const char *set_max_per_client(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    return int_value(p, n, v, 1, l ? &l->max_per_client : &p->conf->max_per_client);
}

static const char *set_max_message_size(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    return size_value(p, n, v, APR_INT64_MAX, &p->conf->max_message_size);
}

static const char *set_protocol(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    char *rest = apr_pstrdup(p->pool, v);
    const char *name = next_word(&rest);

    if (!name || next_word(&rest))
        return "Protocol takes one module name";
    l->protocol = name;
    l->protocol_line = p->line;
    return NULL;
}

static const char *set_tls(parser *p, mph_listen_conf *l, const char *n, const char *v)
{
    if (mph_parse_tls_mode(v, &l->tls))
        return apr_psprintf(p->pool, "bad TLS mode '%s' (expected off, starttls, required or implicit)", v);
    APR_ARRAY_IDX(p->priv, p->priv->nelts - 1, listen_priv).tls_line = p->line;
    return NULL;
}

#define G MP_SCOPE_GLOBAL
#define L MP_SCOPE_LISTEN
static const core_directive core_directives[] = {
    {"ServerName", G, set_server_name},
    {"ModuleDir", G, set_module_dir},
    {"LoadModule", G, load_module},
    {"StateDir", G, set_state_dir},
    {"User", G, set_user},
    {"LocalDomains", G, NULL},
    {"MailStore", G, NULL},
    {"UserDB", G, NULL},
    {"TLSCertificateFile", G | L, set_cert},
    {"TLSCertificateKeyFile", G | L, set_key},
    {"LogLevel", G, set_log_level},
    {"Threads", G, set_threads},
    {"Workers", G, set_workers},
    {"MaxLineLength", G, set_max_line},
    {"MaxErrors", G, set_max_errors},
    {"IdleTimeout", G | L, set_idle_timeout},
    {"ShutdownTimeout", G, set_shutdown_timeout},
    {"MaxConnections", G | L, set_max_connections},
    {"MaxConnectionsPerClient", G | L, set_max_per_client},
    {"MaxMessageSize", G, set_max_message_size},
    {"Protocol", L, set_protocol},
    {"TLS", L, set_tls},
};
#undef G
#undef L

static const core_directive *find_core(const char *name)
{
    for (size_t i = 0; i < sizeof(core_directives) / sizeof(core_directives[0]); i++)
        if (!strcasecmp(name, core_directives[i].name))
            return &core_directives[i];
    return NULL;
}

/* ---------------------------------------------------------------- blocks */

/* "127.0.0.1:25", "[::1]:143", "*:25" -> l->host, port, family. */
static int parse_address(apr_pool_t *pool, const char *text, mph_listen_conf *l)
{
    const char *colon = strrchr(text, ':'), *c;
    char *host;
    unsigned char bin[16];
    apr_uint64_t port;

    if (!colon)
        return -1;
    c = colon + 1;
    if (parse_u64(&c, 65535, &port) || *c || port == 0)
        return -1;
    host = apr_pstrmemdup(pool, text, (apr_size_t)(colon - text));
    if (!strcmp(host, "*")) {
        l->host = NULL;
        l->family = APR_UNSPEC;
    } else if (host[0] == '[') {
        size_t len = strlen(host);
        if (len < 3 || host[len - 1] != ']')
            return -1;
        host[len - 1] = '\0';
        host++;
        if (inet_pton(AF_INET6, host, bin) != 1)
            return -1;
        l->host = host;
        l->family = APR_INET6;
    } else {
        if (inet_pton(AF_INET, host, bin) != 1)
            return -1;
        l->host = host;
        l->family = APR_INET;
    }
    l->port = (apr_port_t)port;
    return 0;
}

/* Same family, port and address (compared in binary, so "::1" and "0::1" are the same). */
static int same_address(const mph_listen_conf *a, const mph_listen_conf *b)
{
    unsigned char ba[16], bb[16];
    int af;

    if (a->family != b->family || a->port != b->port)
        return 0;
    if (a->family == APR_UNSPEC)
        return 1;
    af = a->family == APR_INET6 ? AF_INET6 : AF_INET;
    return inet_pton(af, a->host, ba) == 1 && inet_pton(af, b->host, bb) == 1 &&
           !memcmp(ba, bb, af == AF_INET6 ? 16 : 4);
}

static const char *open_block(parser *p, char *inner)
{
    char *rest = inner, *tag = next_word(&rest), *addr;
    mph_listen_conf *l;

    if (!tag || strcasecmp(tag, "Listen"))
        return apr_psprintf(p->pool, "unknown block <%s>", tag ? tag : "");
    if (p->block)
        return apr_psprintf(p->pool, "<Listen> blocks do not nest (the one at line %d is still open)",
                            p->block->line);
    addr = next_word(&rest);
    if (!addr || next_word(&rest))
        return "<Listen> takes one address, e.g. <Listen 127.0.0.1:25>";

    l = apr_pcalloc(p->pool, sizeof(*l));
    l->address = apr_pstrdup(p->pool, addr);
    if (parse_address(p->pool, l->address, l))
        return apr_psprintf(p->pool, "bad address '%s' (expected IPv4:PORT, [IPv6]:PORT or *:PORT, "
                            "port 1-65535)", addr);
    for (int i = 0; i < p->conf->listeners->nelts; i++) {
        const mph_listen_conf *o = APR_ARRAY_IDX(p->conf->listeners, i, mph_listen_conf *);
        if (same_address(o, l))
            return apr_psprintf(p->pool, "duplicate address %s (already at line %d)", l->address, o->line);
    }
    l->tls = MP_TLS_OFF;
    l->max_connections = -1;   /* -1: inherit the global value (it may come later in the file) */
    l->max_per_client = -1;
    l->idle_timeout = -1;
    l->line = p->line;
    l->values = apr_table_make(p->pool, 4);
    l->extra = apr_array_make(p->pool, 2, sizeof(mph_extra_directive));
    APR_ARRAY_PUSH(p->conf->listeners, mph_listen_conf *) = l;
    ((listen_priv *)apr_array_push(p->priv))->tls_line = 0;
    p->block = l;
    return NULL;
}

static const char *close_block(parser *p, char *inner)
{
    char *rest = inner, *tag = next_word(&rest);

    if (!tag || strcasecmp(tag, "Listen"))
        return apr_psprintf(p->pool, "unknown block </%s>", tag ? tag : "");
    if (next_word(&rest))
        return "</Listen> takes no arguments";
    if (!p->block)
        return "</Listen> without <Listen>";
    if (!p->block->protocol) {
        p->err_line = p->block->line;
        return apr_psprintf(p->pool, "<Listen %s> has no Protocol", p->block->address);
    }
    p->block = NULL;
    return NULL;
}

/* ---------------------------------------------------------------- lines */

static void add_extra(apr_array_header_t *extra, const char *name, const char *value, int line)
{
    mph_extra_directive *d = apr_array_push(extra);
    d->name = name;
    d->value = value;
    d->line = line;
}

/* Removes the comment, trims, and dispatches one line. Returns NULL or the message (without FILE:LINE). */
static const char *parse_line(parser *p, char *s)
{
    int in_quote = 0;
    char *c, *end, *name, *value;
    const core_directive *d;
    apr_table_t *values;

    for (c = s; *c; c++) {
        if (*c == '"')
            in_quote = !in_quote;
        else if (*c == '#' && !in_quote && (c == s || apr_isspace(c[-1]))) {
            *c = '\0';
            break;
        }
    }
    if (in_quote)
        return "missing closing quote";
    while (apr_isspace(*s))
        s++;
    end = s + strlen(s);
    while (end > s && apr_isspace(end[-1]))
        *--end = '\0';
    if (!*s)
        return NULL;

    if (*s == '<') {
        if (end[-1] != '>')
            return apr_psprintf(p->pool, "missing '>' at the end of %s", s);
        end[-1] = '\0';
        return s[1] == '/' ? close_block(p, s + 2) : open_block(p, s + 1);
    }

    for (c = s; *c && !apr_isspace(*c); c++)
        ;
    name = apr_pstrmemdup(p->pool, s, (apr_size_t)(c - s));
    while (apr_isspace(*c))
        c++;
    d = find_core(name);
    if (!*c)
        return apr_psprintf(p->pool, "'%s' needs a value", d ? d->name : name);
    /* a value that is one quoted string loses its quotes; "a" "b" stays as written (LoadModule) */
    if (*c == '"' && strchr(c + 1, '"') == end - 1) {
        c++;
        end[-1] = '\0';
    }
    value = apr_pstrdup(p->pool, c);

    values = p->block ? p->block->values : p->conf->values;
    if (!d) {
        add_extra(p->block ? p->block->extra : p->conf->extra, name, value, p->line);
        apr_table_setn(values, name, value);
        return NULL;
    }
    if (p->block && !(d->scope & MP_SCOPE_LISTEN))
        return apr_psprintf(p->pool, "'%s' is not allowed inside <Listen>", d->name);
    if (!p->block && !(d->scope & MP_SCOPE_GLOBAL))
        return apr_psprintf(p->pool, "'%s' is only allowed inside <Listen>", d->name);
    if (!*value)
        return apr_psprintf(p->pool, "'%s' needs a value", d->name);
    /* LoadModule repeats; for the others the last one wins, in `values` as in the fields */
    if (d->set == load_module)
        apr_table_addn(values, d->name, value);
    else
        apr_table_setn(values, d->name, value);
    return d->set ? d->set(p, p->block, d->name, value) : NULL;
}

static const char *parse_text(parser *p, const char *text, apr_size_t len)
{
    const char *pos = text, *stop = text + len;
    char buf[MAX_LINE + 1];

    if (len >= 3 && !memcmp(pos, "\xEF\xBB\xBF", 3))   /* UTF-8 byte order mark */
        pos += 3;
    while (pos < stop) {
        const char *nl = memchr(pos, '\n', (apr_size_t)(stop - pos));
        const char *eol = nl ? nl : stop;
        apr_size_t n = (apr_size_t)(eol - pos);
        const char *err;

        p->line++;
        if (n && pos[n - 1] == '\r')
            n--;
        if (n > MAX_LINE)
            return fail(p, p->line, apr_psprintf(p->pool, "line too long (more than %d bytes)", MAX_LINE));
        if (memchr(pos, '\0', n))
            return fail(p, p->line, "NUL byte in line");
        memcpy(buf, pos, n);
        buf[n] = '\0';
        err = parse_line(p, buf);
        if (err)
            return fail(p, p->err_line ? p->err_line : p->line, err);
        pos = nl ? nl + 1 : stop;
    }
    return NULL;
}

/* ---------------------------------------------------------------- the end of the file */

/* The checks that need the whole file: ModuleDir, LoadModule and the globals may come after a block. */
static const char *finish(parser *p)
{
    mph_conf *conf = p->conf;

    if (p->block)
        return fail(p, p->block->line, apr_psprintf(p->pool, "<Listen %s> is missing </Listen>",
                                                    p->block->address));
    conf->module_dir = conf->dir;
    if (p->module_dir && !(conf->module_dir = resolve_path(p->pool, conf->dir, p->module_dir)))
        return fail(p, p->module_dir_line, apr_psprintf(p->pool, "bad path '%s' for ModuleDir",
                                                        p->module_dir));
    for (int i = 0; i < conf->modules->nelts; i++) {
        mph_module_conf *m = &APR_ARRAY_IDX(conf->modules, i, mph_module_conf);
        const char *path = resolve_path(p->pool, conf->module_dir, m->path);
        if (!path)
            return fail(p, m->line, apr_psprintf(p->pool, "bad path '%s' for LoadModule", m->path));
        m->path = path;
    }
    if (!conf->state_dir && !(conf->state_dir = resolve_path(p->pool, conf->dir, "state")))
        return fail(p, 0, "cannot make the default StateDir");
    if (!conf->server_name) {
        char host[APRMAXHOSTLEN + 1];
        conf->server_name = apr_gethostname(host, sizeof(host), p->pool) == APR_SUCCESS
                                ? apr_pstrdup(p->pool, host) : "localhost";
    }

    for (int i = 0; i < conf->listeners->nelts; i++) {
        mph_listen_conf *l = APR_ARRAY_IDX(conf->listeners, i, mph_listen_conf *);
        const listen_priv *lp = &APR_ARRAY_IDX(p->priv, i, listen_priv);
        int known = 0;

        for (int j = 0; j < conf->modules->nelts && !known; j++)
            known = !strcmp(APR_ARRAY_IDX(conf->modules, j, mph_module_conf).name, l->protocol);
        if (!known)
            return fail(p, l->protocol_line, apr_psprintf(p->pool, "no LoadModule for Protocol '%s'",
                                                          l->protocol));
        if (l->tls != MP_TLS_OFF && !((l->cert_file || conf->cert_file) && (l->key_file || conf->key_file)))
            return fail(p, lp->tls_line, "TLS needs TLSCertificateFile and TLSCertificateKeyFile");
        if (l->max_connections < 0)
            l->max_connections = conf->max_connections;
        if (l->max_per_client < 0)
            l->max_per_client = conf->max_per_client;
        if (l->idle_timeout < 0)
            l->idle_timeout = conf->idle_timeout;
    }
    return NULL;
}

static const char *parse_common(apr_pool_t *pool, const char *name, const char *file, const char *dir,
                                const char *text, apr_size_t len, mph_conf **conf_r)
{
    mph_conf *conf = apr_pcalloc(pool, sizeof(*conf));
    parser p = {.pool = pool, .conf = conf, .name = name};
    const char *err;

    conf->pool = pool;
    conf->file = file;
    conf->dir = dir;
    conf->log_level = "notice";
    conf->threads = 0;
    conf->workers = 16; /* fsync-bound deliveries commit in groups: more writers, fewer fsyncs each */
    conf->max_line = 8192;
    conf->max_errors = 10;
    conf->idle_timeout = apr_time_from_sec(300);
    conf->shutdown_timeout = apr_time_from_sec(10);
    conf->max_connections = 1000;
    conf->max_per_client = 50;
    conf->max_message_size = (apr_off_t)50 * 1024 * 1024;
    conf->modules = apr_array_make(pool, 8, sizeof(mph_module_conf));
    conf->listeners = apr_array_make(pool, 4, sizeof(mph_listen_conf *));
    conf->values = apr_table_make(pool, 16);
    conf->extra = apr_array_make(pool, 4, sizeof(mph_extra_directive));
    p.priv = apr_array_make(pool, 4, sizeof(listen_priv));

    if ((err = parse_text(&p, text, len)) || (err = finish(&p)))
        return err;
    /* step 2 reports with the name as given; the struct only has the absolute path */
    apr_pool_userdata_set(apr_pstrdup(pool, name), apr_psprintf(pool, NAME_KEY "%pp", (void *)conf), NULL, pool);
    *conf_r = conf;
    return NULL;
}

/* The folder of an absolute file path. */
static const char *dir_of(apr_pool_t *pool, const char *file)
{
    const char *slash = strrchr(file, '/');
    return slash && slash != file ? apr_pstrmemdup(pool, file, (apr_size_t)(slash - file)) : "/";
}

const char *mph_conf_parse_string(apr_pool_t *pool, const char *name, const char *dir,
                                  const char *text, mph_conf **conf_r)
{
    char *abs_dir, *file;

    if (apr_filepath_merge(&abs_dir, NULL, dir ? dir : ".", 0, pool) != APR_SUCCESS)
        return apr_psprintf(pool, "%s: bad folder '%s'", name, dir);
    if (apr_filepath_merge(&file, abs_dir, name, 0, pool) != APR_SUCCESS)
        file = apr_pstrdup(pool, name);
    return parse_common(pool, name, file, abs_dir, text, strlen(text), conf_r);
}

const char *mph_conf_parse(apr_pool_t *pool, const char *path, mph_conf **conf_r)
{
    apr_pool_t *scratch;
    apr_file_t *f;
    apr_status_t rv;
    char *file, *buf, errbuf[256];
    apr_size_t cap = 16384, len = 0;
    const char *err = NULL;

    if ((rv = apr_filepath_merge(&file, NULL, path, 0, pool)) != APR_SUCCESS)
        return apr_psprintf(pool, "%s: cannot read: %s", path, apr_strerror(rv, errbuf, sizeof(errbuf)));
    /* the raw text is only needed while parsing: every kept string is copied into `pool` */
    if (apr_pool_create(&scratch, pool) != APR_SUCCESS)
        return apr_psprintf(pool, "%s: cannot read: out of memory", path);
    rv = apr_file_open(&f, file, APR_FOPEN_READ, APR_FPROT_OS_DEFAULT, scratch);
    buf = apr_palloc(scratch, cap);
    while (rv == APR_SUCCESS) {
        apr_size_t n;
        if (len == cap) {
            char *bigger;
            if (cap > MAX_FILE)
                break;
            bigger = apr_palloc(scratch, cap * 2);
            memcpy(bigger, buf, len);
            buf = bigger;
            cap *= 2;
        }
        rv = apr_file_read_full(f, buf + len, cap - len, &n);
        len += n;
    }
    if (rv != APR_SUCCESS && rv != APR_EOF)
        err = apr_psprintf(pool, "%s: cannot read: %s", path, apr_strerror(rv, errbuf, sizeof(errbuf)));
    else if (len > MAX_FILE)
        err = apr_psprintf(pool, "%s: too large (more than %d bytes)", path, MAX_FILE);
    else
        err = parse_common(pool, path, file, dir_of(pool, file), buf, len, conf_r);
    apr_pool_destroy(scratch);   /* also closes the file */
    return err;
}

/* ---------------------------------------------------------------- step 2 */

/* Step 2 reports the first problem in file order, whatever the order of the checks. */
typedef struct resolver {
    mph_conf *conf;
    const mph_conf_modules *mods;
    int line;
    const char *msg;
} resolver;

static void problem(resolver *r, int line, const char *msg)
{
    if (!r->msg || line < r->line) {
        r->line = line;
        r->msg = msg;
    }
}

static void check_extras(resolver *r, const apr_array_header_t *extra, unsigned scope)
{
    apr_pool_t *pool = r->conf->pool;

    for (int i = 0; i < extra->nelts; i++) {
        const mph_extra_directive *e = &APR_ARRAY_IDX(extra, i, mph_extra_directive);
        const mp_directive *d = r->mods->find_directive ? r->mods->find_directive(r->mods->ctx, e->name)
                                                        : NULL;
        const char *msg;

        if (!d)
            problem(r, e->line, apr_psprintf(pool, "unknown directive '%s'", e->name));
        else if (!(d->scope & scope))
            problem(r, e->line, apr_psprintf(pool, scope == MP_SCOPE_LISTEN
                                                       ? "'%s' is not allowed inside <Listen>"
                                                       : "'%s' is only allowed inside <Listen>", d->name));
        else if (d->check && (msg = d->check(e->value, pool)))
            problem(r, e->line, apr_psprintf(pool, "%s: %s", d->name, msg));
    }
}

const char *mph_conf_resolve(mph_conf *conf, const mph_conf_modules *mods)
{
    resolver r = {.conf = conf, .mods = mods};
    void *name = NULL;

    check_extras(&r, conf->extra, MP_SCOPE_GLOBAL);
    for (int i = 0; i < conf->listeners->nelts; i++) {
        const mph_listen_conf *l = APR_ARRAY_IDX(conf->listeners, i, mph_listen_conf *);
        check_extras(&r, l->extra, MP_SCOPE_LISTEN);
        if (!mods->is_protocol || !mods->is_protocol(mods->ctx, l->protocol))
            problem(&r, l->protocol_line, apr_psprintf(conf->pool, "module '%s' is not a protocol handler",
                                                       l->protocol));
    }
    if (!r.msg)
        return NULL;
    apr_pool_userdata_get(&name, apr_psprintf(conf->pool, NAME_KEY "%pp", (void *)conf), conf->pool);
    return apr_psprintf(conf->pool, "%s:%d: %s", name ? (const char *)name : conf->file, r.line, r.msg);
}

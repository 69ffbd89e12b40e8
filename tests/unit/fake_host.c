/* A fake mp_host for sans-I/O handler tests: see fake_host.h. */
#include "fake_host.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <apr_general.h>
#include <apr_strings.h>

/* ---- small growable byte buffer, always NUL-terminated ---- */

typedef struct fbuf {
    char *p;
    size_t len, cap;
} fbuf;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "fake_host: out of memory\n");
        abort();
    }
    return q;
}

static void fbuf_append(fbuf *b, const void *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (len)
        memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
}

static void fbuf_clear(fbuf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

static const char *fbuf_str(const fbuf *b)
{
    return b->p ? b->p : "";
}

/* ---- the fake ---- */

struct mp_timer {
    fake_session *fs;
    mp_timer_fn fn;
    void *arg;
    apr_interval_time_t after;
    int active;
    unsigned seq;
    struct mp_timer *next;
};

typedef struct fake_config {
    char *name, *value;
} fake_config;

#define FAKE_MAX_PROVIDERS 16

struct fake_session {
    mp_session s;
    mp_listener_info listener;
    char listener_addr[64];
    char peer_addr[64];
    apr_pool_t *root;             /* the fake's pool; the module's "generation" pool */
    const mp_protocol *proto;
    const mp_module *module;      /* fake_new_module */
    void *module_ctx;
    int init_called, init_ok;

    fbuf in;                      /* unconsumed input */
    size_t discarded;
    fbuf out, log;
    size_t unflushed, pending_extra;

    int tls_available;
    unsigned tls_requested;
    int tls_pending, tls_failed;
    int connected, closed, close_requested, dropped, goodbye_said, on_close_called;
    unsigned errors, max_errors, flushes, violations;
    int want_writable;
    int resume;                   /* a condition that held input back has ended */

    struct {
        int pending;
        mp_work_fn work;
        mp_done_fn done;
        void *arg;
    } job;
    int hold_jobs;

    struct mp_timer *timers, **timers_tail;
    unsigned timer_seq;
    apr_interval_time_t last_after;

    fake_config *config;
    size_t nconfig;
    const mp_provider *providers[FAKE_MAX_PROVIDERS];
    size_t nproviders;

    fake_session *older;          /* list of live fakes, newest first (for s == NULL calls) */
};

static fake_session *live_fakes;
static uint64_t next_session_id = 1;
static const mp_host fake_host_table;

static fake_session *fake_of(mp_session *s)
{
    return s ? (fake_session *)s->host_private : live_fakes;
}

static void violation(fake_session *fs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void violation(fake_session *fs, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fake_host: handler contract violation: %s\n", msg);
    if (fs) {
        fs->violations++;
        fbuf_append(&fs->log, "VIOLATION ", 10);
        fbuf_append(&fs->log, msg, strlen(msg));
        fbuf_append(&fs->log, "\n", 1);
    }
}

static void cancel_all_timers(fake_session *fs)
{
    for (struct mp_timer *t = fs->timers; t; t = t->next)
        t->active = 0;
}

static void mark_closed(fake_session *fs)
{
    fs->closed = 1;
    cancel_all_timers(fs);
}

static void discard_input(fake_session *fs)
{
    fs->discarded += fs->in.len;
    fbuf_clear(&fs->in);
}

/* ---- the services table ---- */

static int fh_write(mp_session *s, const void *buf, size_t len)
{
    fake_session *fs = fake_of(s);
    if (fs->on_close_called) {
        violation(fs, "write of %zu bytes during/after on_close", len);
        return MP_ECLOSED;
    }
    if (fs->closed) {
        violation(fs, "write of %zu bytes after the session was closed: \"%.*s\"", len,
                  (int)(len > 60 ? 60 : len), (const char *)buf);
        return MP_ECLOSED;
    }
    fbuf_append(&fs->out, buf, len);
    fs->unflushed += len;
    return MP_OK;
}

static int fh_printf(mp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fh_printf(mp_session *s, const char *fmt, ...)
{
    va_list ap, ap2;
    char small[512];
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    int rv;
    if (n < 0) {
        rv = MP_ERR;
    } else if ((size_t)n < sizeof small) {
        rv = fh_write(s, small, (size_t)n);
    } else {
        char *big = xrealloc(NULL, (size_t)n + 1);
        vsnprintf(big, (size_t)n + 1, fmt, ap2);
        rv = fh_write(s, big, (size_t)n);
        free(big);
    }
    va_end(ap2);
    return rv;
}

static void fh_flush(mp_session *s)
{
    fake_session *fs = fake_of(s);
    fs->flushes++;
    fs->unflushed = 0;
}

static size_t fh_pending_output(mp_session *s)
{
    fake_session *fs = fake_of(s);
    return fs->unflushed + fs->pending_extra;
}

static void fh_want_writable(mp_session *s)
{
    fake_session *fs = fake_of(s);
    if (!fs->proto->on_writable)
        violation(fs, "want_writable() but the protocol has no on_writable");
    fs->want_writable = 1;
}

static int fh_start_tls(mp_session *s)
{
    fake_session *fs = fake_of(s);
    fs->tls_requested++;
    if (fs->closed)
        return MP_ECLOSED;
    if (!fs->tls_available || s->tls_active || fs->tls_pending)
        return MP_ENOTLS;
    fs->tls_pending = 1;
    return MP_OK;
}

static void fh_close(mp_session *s)
{
    fake_session *fs = fake_of(s);
    fs->close_requested = 1;
    mark_closed(fs);
}

static void fh_error(mp_session *s)
{
    fake_of(s)->errors++;
}

static mp_timer *fh_timer_start(mp_session *s, apr_interval_time_t after, mp_timer_fn fn, void *arg)
{
    fake_session *fs = fake_of(s);
    if (fs->closed || !fn)
        return NULL;
    struct mp_timer *t = xrealloc(NULL, sizeof *t);
    *t = (struct mp_timer){.fs = fs, .fn = fn, .arg = arg, .after = after, .active = 1, .seq = fs->timer_seq++};
    *fs->timers_tail = t;
    fs->timers_tail = &t->next;
    fs->last_after = after;
    return t;
}

static void fh_timer_cancel(mp_session *s, mp_timer *t)
{
    fake_session *fs = fake_of(s);
    if (!t)
        return;
    for (struct mp_timer *u = fs->timers; u; u = u->next)
        if (u == t) {
            u->active = 0; /* a fired timer stays known to the fake: cancelling it is a no-op */
            return;
        }
    violation(fs, "timer_cancel of a timer this session never started");
}

static int fh_run_blocking(mp_session *s, mp_work_fn work, mp_done_fn done, void *arg)
{
    fake_session *fs = fake_of(s);
    if (fs->job.pending)
        return MP_EBUSY;
    if (fs->closed)
        return MP_ECLOSED;
    if (!work || !done)
        return MP_ERR;
    fs->job.pending = 1;
    fs->job.work = work;
    fs->job.done = done;
    fs->job.arg = arg;
    return MP_OK; /* runs when the current callback returns (settle) */
}

static int fh_tls_info(mp_session *s, mp_tls_info *info)
{
    memset(info, 0, sizeof *info);
    if (s->tls_active) {
        info->active = 1;
        info->version = "TLSv1.3";
        info->cipher = "TLS_AES_256_GCM_SHA384";
        info->bits = 256;
    }
    return MP_OK;
}

static const char *fh_config(mp_session *s, const char *directive)
{
    fake_session *fs = fake_of(s);
    if (!fs || !directive)
        return NULL;
    for (size_t i = 0; i < fs->nconfig; i++)
        if (strcasecmp(fs->config[i].name, directive) == 0)
            return fs->config[i].value;
    return NULL;
}

static const mp_provider *fh_provider(mp_session *s, const char *kind, const char *name)
{
    fake_session *fs = fake_of(s);
    if (!fs || !kind)
        return NULL;
    for (size_t i = 0; i < fs->nproviders; i++) {
        const mp_provider *p = fs->providers[i];
        if (p->kind && strcmp(p->kind, kind) == 0 && (!name || (p->name && strcmp(p->name, name) == 0)))
            return p;
    }
    return NULL;
}

static void fh_log(mp_session *s, mp_log_level level, int msgid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Like the real host: the provider named before the colon of the directive's value, one instance per
   session's directive value (the fake's "configuration"), kept in the session's pool. */
static void *fh_provider_instance(mp_session *s, const char *kind, const char *directive, uint32_t iface_version,
                                  const void **iface_r)
{
    fake_session *fs = fake_of(s);
    *iface_r = NULL;
    const char *value = fh_config(s, directive);
    const char *colon = value ? strchr(value, ':') : NULL;
    if (!fs)
        return NULL;
    /* The real host's log lines (apr_glue/host/conn.c), so tests can look for them. */
    if (!value || !*value) {
        fh_log(s, MP_LOG_ERROR, 10115, "%s is not configured", directive);
        return NULL;
    }
    if (!colon) {
        fh_log(s, MP_LOG_ERROR, 10116, "%s %s: expected PROVIDER:SPEC", directive, value);
        return NULL;
    }
    char *name = apr_pstrmemdup(s->pool, value, (apr_size_t)(colon - value));
    const mp_provider *p = fh_provider(s, kind, name);
    if (!p || p->iface_version != iface_version) {
        fh_log(s, MP_LOG_ERROR, 10117, "%s: no %s provider named '%s' of this interface version", directive, kind,
               name);
        return NULL;
    }
    char *key = apr_pstrcat(s->pool, "fake-instance|", kind, "|", value, NULL);
    void *inst = NULL;
    apr_pool_userdata_get(&inst, key, s->pool);
    if (!inst) {
        const char *err = NULL;
        const char *base = fh_config(s, "ServerRoot");
        if ((*(const mp_instance_fn *)p->iface)(colon + 1, base ? base : ".", s->pool, &inst, &err) != 0) {
            fh_log(s, MP_LOG_ERROR, 10119, "%s %s: %s", directive, value, err ? err : "cannot make an instance");
            return NULL;
        }
        apr_pool_userdata_set(inst, key, NULL, s->pool);
    }
    *iface_r = p->iface;
    return inst;
}

static void fh_log(mp_session *s, mp_log_level level, int msgid, const char *fmt, ...)
{
    static const char *const names[] = {"ERROR", "WARN", "NOTICE", "INFO", "DEBUG"};
    fake_session *fs = fake_of(s);
    char msg[1024], line[1100];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *lv = (unsigned)level < sizeof names / sizeof names[0] ? names[level] : "?";
    int n = snprintf(line, sizeof line, "%s [mp%05d] %s\n", lv, msgid, msg);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        n = (int)sizeof line - 1;
    if (fs)
        fbuf_append(&fs->log, line, (size_t)n);
    if (getenv("FAKE_HOST_LOG")) {
        if (s)
            fprintf(stderr, "fake_host #%llu %s: %s", (unsigned long long)s->id, s->peer_addr, line);
        else
            fprintf(stderr, "fake_host: %s", line);
    }
}

static const mp_host fake_host_table = {
    .abi_major = MP_ABI_MAJOR,
    .abi_minor = MP_ABI_MINOR,
    .struct_size = (uint32_t)sizeof(mp_host),
    .name = "test",
    .write = fh_write,
    .printf = fh_printf,
    .flush = fh_flush,
    .pending_output = fh_pending_output,
    .want_writable = fh_want_writable,
    .start_tls = fh_start_tls,
    .close = fh_close,
    .error = fh_error,
    .timer_start = fh_timer_start,
    .timer_cancel = fh_timer_cancel,
    .run_blocking = fh_run_blocking,
    .tls_info = fh_tls_info,
    .config = fh_config,
    .provider_instance = fh_provider_instance,
    .provider = fh_provider,
    .log = fh_log,
};

const mp_host *fake_host(void)
{
    return &fake_host_table;
}

/* ---- driving the handler ---- */

static int can_deliver(const fake_session *fs)
{
    return !fs->closed && !fs->on_close_called && !fs->tls_pending && !fs->want_writable && !fs->job.pending
        && fs->in.len > 0;
}

/* One on_input call with every unconsumed byte. The bytes are handed over in an exactly sized heap block
   that is freed afterwards, so AddressSanitizer catches a handler that reads past `len` (assumes a NUL)
   or keeps a pointer into the input after returning. */
static void deliver_once(fake_session *fs)
{
    size_t len = fs->in.len;
    char *copy = xrealloc(NULL, len);
    memcpy(copy, fs->in.p, len);
    long n = fs->proto->on_input(&fs->s, copy, len);
    free(copy);
    if (n == -1) {
        fs->dropped = 1;
        mark_closed(fs);
        discard_input(fs);
        return;
    }
    if (n < -1 || (size_t)n > len) {
        violation(fs, "on_input returned %ld for %zu bytes", n, len);
        n = n < 0 ? 0 : (long)len;
    }
    memmove(fs->in.p, fs->in.p + n, len - (size_t)n);
    fs->in.len = len - (size_t)n;
    fs->in.p[fs->in.len] = '\0';
    if (fs->closed || fs->tls_pending)
        discard_input(fs); /* the real host drops what follows STARTTLS/QUIT in the same burst */
}

static void say_goodbye(fake_session *fs, mp_goodbye why)
{
    if (fs->proto->on_goodbye)
        fs->proto->on_goodbye(&fs->s, why);
    fs->goodbye_said = 1;
    mark_closed(fs);
    discard_input(fs);
}

static void run_job(fake_session *fs)
{
    mp_work_fn work = fs->job.work;
    mp_done_fn done = fs->job.done;
    void *arg = fs->job.arg;
    work(arg);
    fs->job.pending = 0; /* done may start the next job */
    done(&fs->s, arg, fs->closed ? 1 : 0);
    fs->resume = 1;
}

/* What the host does when a callback has returned: flush, MaxErrors, queued work, resumed input. */
static void settle(fake_session *fs)
{
    for (unsigned guard = 0;; guard++) {
        fs->unflushed = 0;
        if (guard > 100000) {
            violation(fs, "the handler never stops asking for more work");
            return;
        }
        if (fs->on_close_called)
            return;
        if (!fs->closed && fs->max_errors && fs->errors >= fs->max_errors) {
            say_goodbye(fs, MP_BYE_TOO_MANY_ERRORS);
            continue;
        }
        if (fs->job.pending && !fs->hold_jobs) {
            run_job(fs);
            continue;
        }
        if (fs->resume) {
            fs->resume = 0;
            if (can_deliver(fs)) {
                deliver_once(fs);
                continue;
            }
        }
        return;
    }
}

/* ---- life ---- */

static fake_session *fake_create(const mp_protocol *proto, const mp_module *m, mp_tls_mode tls)
{
    if (!proto || !proto->on_input) {
        fprintf(stderr, "fake_host: fake_new needs a protocol with on_input\n");
        abort();
    }
    if (apr_initialize() != APR_SUCCESS)
        abort();
    fake_session *fs = xrealloc(NULL, sizeof *fs);
    memset(fs, 0, sizeof *fs);
    apr_pool_t *spool;
    if (apr_pool_create(&fs->root, NULL) != APR_SUCCESS || apr_pool_create(&spool, fs->root) != APR_SUCCESS)
        abort();
    fs->proto = proto;
    fs->module = m;
    fs->tls_available = 1;
    fs->timers_tail = &fs->timers;

    snprintf(fs->listener_addr, sizeof fs->listener_addr, "127.0.0.1:%u", (unsigned)proto->default_port);
    snprintf(fs->peer_addr, sizeof fs->peer_addr, "192.0.2.1");
    fs->listener = (mp_listener_info){
        .address = fs->listener_addr, .protocol = proto->name, .tls = tls, .port = proto->default_port};

    fs->s = (mp_session){
        .host = &fake_host_table,
        .state = apr_pcalloc(spool, proto->session_size ? proto->session_size : 1),
        .pool = spool,
        .listener = &fs->listener,
        .id = next_session_id++,
        .peer_addr = fs->peer_addr,
        .peer_port = 50000,
        .local_addr = "127.0.0.1",
        .local_port = proto->default_port,
        .tls_active = tls == MP_TLS_IMPLICIT,
        .host_private = fs,
    };
    fs->older = live_fakes;
    live_fakes = fs;
    return fs;
}

fake_session *fake_new(const mp_protocol *proto, mp_tls_mode tls)
{
    return fake_create(proto, NULL, tls);
}

fake_session *fake_new_module(const mp_module *m, mp_tls_mode tls)
{
    if (!m || m->kind != MP_KIND_PROTOCOL || !m->protocol) {
        fprintf(stderr, "fake_host: fake_new_module needs a protocol module\n");
        abort();
    }
    return fake_create(m->protocol, m, tls);
}

int fake_connect(fake_session *fs)
{
    if (fs->module && !fs->init_called) {
        fs->init_called = 1;
        if (fs->module->init) {
            void *ctx = NULL;
            int rv = fs->module->init(&fake_host_table, fs->root, &ctx);
            if (rv != 0) {
                mark_closed(fs);
                return rv;
            }
            fs->module_ctx = ctx;
        }
        fs->init_ok = 1;
        fs->s.module_ctx = fs->module_ctx;
    }
    if (fs->connected) {
        violation(fs, "fake_connect called twice");
        return -1;
    }
    fs->connected = 1;
    int rv = fs->proto->on_connect ? fs->proto->on_connect(&fs->s) : 0;
    if (rv != 0) {
        fs->close_requested = 1;
        mark_closed(fs);
    }
    settle(fs);
    return rv;
}

void fake_end_reason(fake_session *fs, mp_close_reason why)
{
    if (!fs)
        return;
    cancel_all_timers(fs);
    if (!fs->on_close_called) {
        fs->closed = 1;
        fs->on_close_called = 1;
        if (fs->proto->on_close)
            fs->proto->on_close(&fs->s, why);
    }
    if (fs->job.pending)
        violation(fs, "a blocking job was still pending at the end of the session");
    if (fs->module && fs->init_ok && fs->module->fini)
        fs->module->fini(fs->module_ctx);

    for (fake_session **pp = &live_fakes; *pp; pp = &(*pp)->older)
        if (*pp == fs) {
            *pp = fs->older;
            break;
        }
    apr_pool_destroy(fs->root); /* and the session pool in it */
    for (struct mp_timer *t = fs->timers, *next; t; t = next) {
        next = t->next;
        free(t);
    }
    for (size_t i = 0; i < fs->nconfig; i++) {
        free(fs->config[i].name);
        free(fs->config[i].value);
    }
    free(fs->config);
    free(fs->in.p);
    free(fs->out.p);
    free(fs->log.p);
    free(fs);
    apr_terminate();
}

void fake_end(fake_session *fs)
{
    if (!fs)
        return;
    mp_close_reason why = fs->tls_failed ? MP_CLOSE_TLS_FAILED
                          : fs->goodbye_said ? MP_CLOSE_GOODBYE
                          : fs->close_requested ? MP_CLOSE_NORMAL
                                                : MP_CLOSE_PEER;
    fake_end_reason(fs, why);
}

/* ---- accessors and set up ---- */

mp_session *fake_session_of(fake_session *fs) { return &fs->s; }
void *fake_state(fake_session *fs) { return fs->s.state; }
void fake_set_tls_available(fake_session *fs, int available) { fs->tls_available = available; }
void fake_set_max_errors(fake_session *fs, unsigned n) { fs->max_errors = n; }
void fake_set_pending_extra(fake_session *fs, size_t n) { fs->pending_extra = n; }

void fake_hold_jobs(fake_session *fs, int hold)
{
    fs->hold_jobs = hold;
    if (!hold)
        settle(fs);
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xrealloc(NULL, n), s, n);
}

void fake_set_config(fake_session *fs, const char *name, const char *value)
{
    for (size_t i = 0; i < fs->nconfig; i++)
        if (strcasecmp(fs->config[i].name, name) == 0) {
            free(fs->config[i].value);
            if (value) {
                fs->config[i].value = xstrdup(value);
            } else {
                free(fs->config[i].name);
                fs->config[i] = fs->config[--fs->nconfig];
            }
            return;
        }
    if (!value)
        return;
    fs->config = xrealloc(fs->config, (fs->nconfig + 1) * sizeof *fs->config);
    fs->config[fs->nconfig++] = (fake_config){xstrdup(name), xstrdup(value)};
}

void fake_register_provider(fake_session *fs, const mp_provider *p)
{
    if (fs->nproviders >= FAKE_MAX_PROVIDERS) {
        fprintf(stderr, "fake_host: too many providers\n");
        abort();
    }
    fs->providers[fs->nproviders++] = p;
}

void fake_set_peer(fake_session *fs, const char *addr, uint16_t port)
{
    snprintf(fs->peer_addr, sizeof fs->peer_addr, "%s", addr);
    fs->s.peer_port = port;
}

/* ---- input ---- */

void fake_feed(fake_session *fs, const void *data, size_t len)
{
    if (len == 0)
        return;
    if (fs->closed || fs->on_close_called || fs->tls_pending) {
        fs->discarded += len;
        return;
    }
    fbuf_append(&fs->in, data, len);
    if (can_deliver(fs))
        deliver_once(fs);
    settle(fs);
}

void fake_feed_str(fake_session *fs, const char *text)
{
    fake_feed(fs, text, strlen(text));
}

void fake_feed_bytewise(fake_session *fs, const void *data, size_t len)
{
    const char *p = data;
    for (size_t i = 0; i < len; i++)
        fake_feed(fs, p + i, 1);
}

size_t fake_input_pending(fake_session *fs) { return fs->in.len; }
size_t fake_discarded(fake_session *fs) { return fs->discarded; }

/* ---- output ---- */

const char *fake_output(fake_session *fs) { return fbuf_str(&fs->out); }
size_t fake_output_len(fake_session *fs) { return fs->out.len; }
void fake_clear(fake_session *fs) { fbuf_clear(&fs->out); }
const char *fake_log(fake_session *fs) { return fbuf_str(&fs->log); }
void fake_clear_log(fake_session *fs) { fbuf_clear(&fs->log); }

/* ---- flags ---- */

unsigned fake_tls_requested(fake_session *fs) { return fs->tls_requested; }
int fake_tls_pending(fake_session *fs) { return fs->tls_pending; }
int fake_closed(fake_session *fs) { return fs->closed; }
int fake_close_requested(fake_session *fs) { return fs->close_requested; }
int fake_dropped(fake_session *fs) { return fs->dropped; }
unsigned fake_errors(fake_session *fs) { return fs->errors; }
int fake_want_writable(fake_session *fs) { return fs->want_writable; }
unsigned fake_flushes(fake_session *fs) { return fs->flushes; }
unsigned fake_violations(fake_session *fs) { return fs->violations; }
int fake_job_pending(fake_session *fs) { return fs->job.pending; }

/* ---- events ---- */

int fake_tls_complete(fake_session *fs)
{
    if (!fs->tls_pending || fs->closed)
        return -1;
    fs->tls_pending = 0;
    fs->s.tls_active = 1;
    if (fs->proto->on_tls_ready)
        fs->proto->on_tls_ready(&fs->s);
    settle(fs);
    return 0;
}

int fake_tls_fail(fake_session *fs)
{
    if (!fs->tls_pending || fs->closed)
        return -1;
    fs->tls_pending = 0;
    fs->tls_failed = 1;
    mark_closed(fs);
    discard_input(fs);
    return 0;
}

int fake_writable(fake_session *fs)
{
    if (!fs->want_writable || fs->closed)
        return -1;
    fs->want_writable = 0;
    if (fs->proto->on_writable)
        fs->proto->on_writable(&fs->s);
    fs->resume = 1;
    settle(fs);
    return 0;
}

int fake_goodbye(fake_session *fs, mp_goodbye why)
{
    if (fs->closed || fs->on_close_called)
        return -1;
    say_goodbye(fs, why);
    settle(fs);
    return 0;
}

unsigned fake_fire_timers(fake_session *fs)
{
    unsigned limit = fs->timer_seq, fired = 0;
    for (struct mp_timer *t = fs->timers; t && t->seq < limit; t = t->next) {
        if (!t->active || fs->closed)
            continue;
        t->active = 0;
        fired++;
        t->fn(&fs->s, t->arg);
        fs->resume = 1; /* like the real host, buffered input is offered again after a timer */
        settle(fs);
    }
    return fired;
}

unsigned fake_timers_active(fake_session *fs)
{
    unsigned n = 0;
    for (struct mp_timer *t = fs->timers; t; t = t->next)
        n += t->active != 0;
    return n;
}

apr_interval_time_t fake_last_timer_after(fake_session *fs) { return fs->last_after; }

int fake_run_job(fake_session *fs)
{
    if (!fs->job.pending)
        return -1;
    run_job(fs);
    settle(fs);
    return 0;
}

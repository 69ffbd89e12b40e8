/*
 * A connection on an event loop, and the host services (mp_host) the handler calls for it.
 *
 * Everything here runs on the connection's loop thread. The one rule that shapes the code: a handler
 * callback never re-enters the handler. Services called from a callback only set flags (close, start TLS,
 * goodbye); conn_pump() acts on them once the callback has returned.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <apr_atomic.h>
#include <apr_portable.h>
#include <apr_strings.h>
#include <openssl/err.h>

#include "log.h"
#include "server.h"
#include "tls.h"

#define OUT_CHUNK 16384
#define OUT_HIGH (256 * 1024) /* above this, no more input is delivered until the client reads */
#define OUT_LOW (64 * 1024)   /* on_writable() is called below this */
#define LINGER_TIME apr_time_from_sec(2)
#define WRITABLE_ROUNDS 16    /* on_writable() calls in a row before other connections get a turn */

struct mph_outbuf {
    mph_outbuf *next;
    size_t start, len, cap;
    char data[];
};

struct mp_timer {
    APR_RING_ENTRY(mp_timer) link;
    mph_conn *conn;
    apr_time_t when;
    unsigned long seq;
    mp_timer_fn fn;
    void *arg;
};

typedef struct mph_job {
    mph_task task;              /* first: the workers hand it back as a task */
    mph_conn *conn;
    mp_work_fn work;
    mp_done_fn done;
    void *arg;
} mph_job;

static void conn_pump(mph_conn *c);
static void conn_destroy(mph_conn *c, mp_close_reason why);

static mph_conn *conn_of(mp_session *s) { return s->host_private; }

static void conn_touch(mph_conn *c)
{
    c->last_active = apr_time_now();
    APR_RING_REMOVE(c, link);
    APR_RING_INSERT_TAIL(&c->loop->conns, c, mph_conn, link);
}

/* ---------------------------------------------------------------- output */

static int h_write(mp_session *s, const void *buf, size_t len)
{
    mph_conn *c = conn_of(s);
    if (c->destroyed || c->state == MPH_CONN_LINGER)
        return MP_ECLOSED;
    const char *p = buf;
    while (len > 0) {
        mph_outbuf *b = c->out_tail;
        if (!b || b->start + b->len == b->cap) {
            size_t cap = len > OUT_CHUNK ? len : OUT_CHUNK;
            b = malloc(sizeof *b + cap);
            if (!b)
                abort();
            b->next = NULL;
            b->start = b->len = 0;
            b->cap = cap;
            if (c->out_tail)
                c->out_tail->next = b;
            else
                c->out_head = b;
            c->out_tail = b;
        }
        size_t room = b->cap - b->start - b->len;
        size_t n = len < room ? len : room;
        memcpy(b->data + b->start + b->len, p, n);
        b->len += n;
        c->out_len += n;
        p += n;
        len -= n;
    }
    return MP_OK;
}

static int h_printf(mp_session *s, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return MP_ERR;
    if ((size_t)n < sizeof buf)
        return h_write(s, buf, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big)
        abort();
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rv = h_write(s, big, (size_t)n);
    free(big);
    return rv;
}

static void out_free_all(mph_conn *c)
{
    while (c->out_head) {
        mph_outbuf *b = c->out_head;
        c->out_head = b->next;
        free(b);
    }
    c->out_tail = NULL;
    c->out_len = 0;
}

/* Sends what the socket takes. Returns 0, or -1 when the connection broke. */
static int conn_flush(mph_conn *c)
{
    int progress = 0;
    c->ssl_want_write = 0;
    while (c->out_head) {
        mph_outbuf *b = c->out_head;
        size_t n = 0;
        if (c->ssl) {
            ERR_clear_error();
            if (SSL_write_ex(c->ssl, b->data + b->start, b->len, &n) != 1) {
                int e = SSL_get_error(c->ssl, 0);
                if (e == SSL_ERROR_WANT_WRITE) {
                    c->ssl_want_write = 1;
                    break;
                }
                if (e == SSL_ERROR_WANT_READ)
                    break;
                return -1;
            }
        } else {
            apr_size_t len = b->len;
            apr_status_t rv = apr_socket_send(c->sock, b->data + b->start, &len);
            n = len;
            if (rv != APR_SUCCESS && !APR_STATUS_IS_EAGAIN(rv))
                return -1;
            if (n == 0)
                break;
        }
        progress = 1;
        b->start += n;
        b->len -= n;
        c->out_len -= n;
        if (b->len == 0) {
            c->out_head = b->next;
            if (!c->out_head)
                c->out_tail = NULL;
            free(b);
        }
    }
    if (progress && c->state != MPH_CONN_LINGER)
        conn_touch(c);
    return 0;
}

static void h_flush(mp_session *s)
{
    mph_conn *c = conn_of(s);
    if (!c->destroyed && c->state != MPH_CONN_HANDSHAKE && c->state != MPH_CONN_LINGER && conn_flush(c) < 0)
        c->peer_gone = 1;
}

static size_t h_pending_output(mp_session *s) { return conn_of(s)->out_len; }

static void h_want_writable(mp_session *s) { conn_of(s)->want_writable = 1; }

/* ---------------------------------------------------------------- session control */

static int h_start_tls(mp_session *s)
{
    mph_conn *c = conn_of(s);
    if (c->ssl || !c->lrt->tls || c->state != MPH_CONN_OPEN)
        return MP_ENOTLS;
    c->tls_requested = 1;
    return MP_OK;
}

static void h_close(mp_session *s) { conn_of(s)->close_requested = 1; }

static void h_error(mp_session *s)
{
    mph_conn *c = conn_of(s);
    if (++c->errors >= (unsigned)c->rt->conf->max_errors && !c->bye) {
        mph_log(s, MP_LOG_NOTICE, 10101, "too many protocol errors (%u), closing", c->errors);
        c->bye = MP_BYE_TOO_MANY_ERRORS;
    }
}

/* ---------------------------------------------------------------- timers */

static mp_timer *h_timer_start(mp_session *s, apr_interval_time_t after, mp_timer_fn fn, void *arg)
{
    mph_conn *c = conn_of(s);
    if (c->destroyed)
        return NULL;
    mp_timer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->conn = c;
    t->when = apr_time_now() + (after > 0 ? after : 0);
    t->seq = ++c->loop->timer_seq;
    t->fn = fn;
    t->arg = arg;
    APR_RING_INSERT_TAIL(&c->timers, t, mp_timer, link);
    apr_skiplist_insert(c->loop->timers, t);
    return t;
}

static void timer_drop(mph_conn *c, mp_timer *t)
{
    apr_skiplist_remove(c->loop->timers, t, NULL);
    APR_RING_REMOVE(t, link);
    free(t);
}

static void h_timer_cancel(mp_session *s, mp_timer *t)
{
    if (t)
        timer_drop(conn_of(s), t);
}

void mph_conn_timer_fire(mph_conn *c, mp_timer *t)
{
    mp_timer_fn fn = t->fn;
    void *arg = t->arg;
    timer_drop(c, t);
    if (c->destroyed || c->state != MPH_CONN_OPEN)
        return;
    c->in_callback = 1;
    fn(&c->session, arg);
    c->in_callback = 0;
    conn_pump(c);
}

/* ---------------------------------------------------------------- blocking work */

static void job_run(mph_task *task)
{
    mph_job *job = (mph_job *)task;
    job->work(job->arg);
    mph_loop_post_job_done(job->conn->loop, job->conn, job);
}

static int h_run_blocking(mp_session *s, mp_work_fn work, mp_done_fn done, void *arg)
{
    mph_conn *c = conn_of(s);
    if (c->job_pending)
        return MP_EBUSY;
    mph_job *job = malloc(sizeof *job);
    if (!job)
        return MP_ERR;
    job->conn = c;
    job->work = work;
    job->done = done;
    job->arg = arg;
    job->task.run = job_run;
    if (mph_workers_push(c->loop->server->workers, &job->task) != APR_SUCCESS) {
        free(job);
        return MP_ERR;
    }
    c->job_pending = 1;
    return MP_OK;
}

void mph_conn_job_done(mph_conn *c, void *data)
{
    mph_job *job = data;
    c->job_pending = 0;
    int closing = c->peer_gone || c->destroyed;
    if (!closing) {
        /* The idle clock runs again from here (a job may outlast IdleTimeout), and the loop's next check
           may have been set an hour ahead while the job ran. */
        conn_touch(c);
        apr_time_t d = mph_conn_deadline(c);
        if (d < c->loop->next_check)
            c->loop->next_check = d;
    }
    c->in_callback = 1;
    job->done(&c->session, job->arg, closing);
    c->in_callback = 0;
    free(job);
    if (closing)
        conn_destroy(c, MP_CLOSE_PEER);
    else
        conn_pump(c);
}

/* ---------------------------------------------------------------- facts */

static int h_tls_info(mp_session *s, mp_tls_info *info)
{
    mph_conn *c = conn_of(s);
    memset(info, 0, sizeof *info);
    if (c->ssl && s->tls_active) {
        const SSL_CIPHER *ciph = SSL_get_current_cipher(c->ssl);
        info->active = 1;
        info->version = SSL_get_version(c->ssl);
        info->cipher = ciph ? SSL_CIPHER_get_name(ciph) : "";
        info->bits = ciph ? SSL_CIPHER_get_bits(ciph, NULL) : 0;
    }
    return MP_OK;
}

/* Module init() runs while its runtime is being built and is not current yet. */
static __thread mph_runtime *loading_runtime;

void mph_conn_set_loading_runtime(mph_runtime *rt) { loading_runtime = rt; }

static mph_runtime *runtime_for(mp_session *s)
{
    if (s)
        return conn_of(s)->rt;
    if (loading_runtime)
        return loading_runtime;
    return mph_the_server ? mph_the_server->current : NULL;
}

static const char *h_config(mp_session *s, const char *directive)
{
    mph_runtime *rt = runtime_for(s);
    if (!rt)
        return NULL;
    if (s) {
        const char *v = apr_table_get(conn_of(s)->lrt->conf->values, directive);
        if (v)
            return v;
    }
    const char *v = apr_table_get(rt->conf->values, directive);
    if (!v && strcasecmp(directive, "ServerRoot") == 0)
        v = rt->conf->dir;
    return v;
}

static void h_wakeup(mp_session *s)
{
    mph_conn *c = conn_of(s);
    /* Set until the loop has taken the message, so the connection is not freed under it; a wakeup while
       one is on its way is covered by that one. */
    if (apr_atomic_cas32(&c->wakeups, 1, 0) == 0)
        mph_loop_post_wakeup(c->loop, c);
}

void mph_conn_wakeup(mph_conn *c)
{
    apr_atomic_set32(&c->wakeups, 0);
    if (c->destroyed || c->state != MPH_CONN_OPEN || !c->proto->on_wakeup)
        return;
    c->in_callback = 1;
    c->proto->on_wakeup(&c->session);
    c->in_callback = 0;
    conn_pump(c);
}

static const mp_provider *h_provider(mp_session *s, const char *kind, const char *name)
{
    mph_runtime *rt = runtime_for(s);
    return rt ? mph_runtime_provider(rt, kind, name) : NULL;
}

static void *h_provider_instance(mp_session *s, const char *kind, const char *directive, uint32_t iface_version,
                                 const void **iface_r)
{
    *iface_r = NULL;
    mph_runtime *rt = runtime_for(s);
    const char *value = rt ? h_config(s, directive) : NULL;
    if (!value || !*value) {
        mph_log(s, MP_LOG_ERROR, 10115, "%s is not configured", directive);
        return NULL;
    }
    const char *colon = strchr(value, ':');
    if (!colon || colon == value) {
        mph_log(s, MP_LOG_ERROR, 10116, "%s %s: expected PROVIDER:SPEC", directive, value);
        return NULL;
    }
    char name[128];
    apr_cpystrn(name, value, (size_t)(colon - value) + 1 < sizeof name ? (size_t)(colon - value) + 1 : sizeof name);
    const mp_provider *p = mph_runtime_provider(rt, kind, name);
    if (!p) {
        mph_log(s, MP_LOG_ERROR, 10117, "%s: no %s provider named '%s' is loaded", directive, kind, name);
        return NULL;
    }
    if (p->iface_version != iface_version) {
        mph_log(s, MP_LOG_ERROR, 10118, "%s provider '%s' has interface version %u, this handler needs %u", kind,
                name, (unsigned)p->iface_version, (unsigned)iface_version);
        return NULL;
    }
    /* The key goes into the configuration's pool only with a new instance: sessions must not grow it. */
    const char *key = apr_pstrcat(s->pool, kind, "|", value, NULL);
    apr_thread_mutex_lock(rt->inst_mutex);
    void *inst = apr_hash_get(rt->instances, key, APR_HASH_KEY_STRING);
    if (!inst) {
        const char *base = h_config(s, "ServerRoot");
        const char *err = NULL;
        mp_instance_fn make = *(const mp_instance_fn *)p->iface; /* every iface starts with it (module.h) */
        if (make(colon + 1, base ? base : rt->conf->dir, rt->inst_pool, &inst, &err) != 0 || !inst) {
            mph_log(s, MP_LOG_ERROR, 10119, "%s %s: %s", directive, value, err ? err : "cannot make an instance");
            inst = NULL;
        } else {
            apr_hash_set(rt->instances, apr_pstrdup(rt->inst_pool, key), APR_HASH_KEY_STRING, inst);
        }
    }
    apr_thread_mutex_unlock(rt->inst_mutex);
    if (inst)
        *iface_r = p->iface;
    return inst;
}

static void h_log(mp_session *s, mp_log_level level, int msgid, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mph_logv(s, level, msgid, fmt, ap);
    va_end(ap);
}

const mp_host mph_host_services = {
    .abi_major = MP_ABI_MAJOR,
    .abi_minor = MP_ABI_MINOR,
    .struct_size = sizeof(mp_host),
    .name = "mailprotod",
    .write = h_write,
    .printf = h_printf,
    .flush = h_flush,
    .pending_output = h_pending_output,
    .want_writable = h_want_writable,
    .start_tls = h_start_tls,
    .close = h_close,
    .error = h_error,
    .timer_start = h_timer_start,
    .timer_cancel = h_timer_cancel,
    .run_blocking = h_run_blocking,
    .tls_info = h_tls_info,
    .config = h_config,
    .provider = h_provider,
    .log = h_log,
    .wakeup = h_wakeup,
    .provider_instance = h_provider_instance,
};

/* ---------------------------------------------------------------- life cycle */

static void conn_set_events(mph_conn *c)
{
    apr_int16_t want = 0;
    if (c->destroyed)
        return;
    switch (c->state) {
    case MPH_CONN_HANDSHAKE:
        want = c->ssl_want_write ? APR_POLLOUT : APR_POLLIN;
        break;
    case MPH_CONN_LINGER:
        want = APR_POLLIN;
        break;
    case MPH_CONN_OPEN:
    case MPH_CONN_CLOSING:
        if (c->out_len > 0 || c->ssl_want_write || (c->want_writable && c->state == MPH_CONN_OPEN))
            want |= APR_POLLOUT;
        if (c->state == MPH_CONN_OPEN && !c->peer_gone && !c->tls_requested && !c->close_requested &&
            (c->in_len < c->in_cap || !c->in))
            want |= APR_POLLIN;
        break;
    }
    if (want == c->events)
        return;
    if (c->events)
        apr_pollset_remove(c->loop->pollset, &c->pfd);
    c->pfd.reqevents = want;
    c->events = want;
    if (want && apr_pollset_add(c->loop->pollset, &c->pfd) != APR_SUCCESS) {
        c->events = 0;
        mph_log(&c->session, MP_LOG_ERROR, 10102, "cannot watch the connection, closing");
        conn_destroy(c, MP_CLOSE_PEER);
    }
}

mph_conn *mph_conn_new(mph_loop *loop, apr_socket_t *sock, apr_pool_t *pool, mph_runtime *rt,
                       mph_listen_rt *lrt)
{
    mph_conn *c = apr_pcalloc(pool, sizeof *c);
    mp_session *s = &c->session;
    apr_sockaddr_t *sa;
    char *ip;
    apr_os_sock_t fd;

    c->loop = loop;
    c->rt = rt;
    c->lrt = lrt;
    c->proto = lrt->gen->module->protocol;
    c->sock = sock;
    apr_os_sock_get(&fd, sock);
    c->fd = fd;
    c->pfd.p = pool;
    c->pfd.desc_type = APR_POLL_SOCKET;
    c->pfd.desc.s = sock;
    c->pfd.client_data = c;
    APR_RING_INIT(&c->timers, mp_timer, link);

    s->host = &mph_host_services;
    s->pool = pool;
    s->state = apr_pcalloc(pool, c->proto->session_size ? c->proto->session_size : 1);
    s->module_ctx = lrt->gen->ctx;
    s->listener = &lrt->info;
    s->id = apr_atomic_inc32(&loop->server->next_session_id) + 1;
    s->host_private = c;
    if (apr_socket_addr_get(&sa, APR_REMOTE, sock) == APR_SUCCESS && apr_sockaddr_ip_get(&ip, sa) == APR_SUCCESS) {
        apr_cpystrn(c->peer_text, ip, sizeof c->peer_text);
        s->peer_port = sa->port;
    }
    if (apr_socket_addr_get(&sa, APR_LOCAL, sock) == APR_SUCCESS && apr_sockaddr_ip_get(&ip, sa) == APR_SUCCESS) {
        apr_cpystrn(c->local_text, ip, sizeof c->local_text);
        s->local_port = sa->port;
    }
    s->peer_addr = c->peer_text;
    s->local_addr = c->local_text;

    c->last_active = apr_time_now();
    if (mph_conn_deadline(c) < loop->next_check)
        loop->next_check = mph_conn_deadline(c);
    APR_RING_INSERT_TAIL(&loop->conns, c, mph_conn, link);
    apr_atomic_inc32(&loop->nconns);
    return c;
}

static void conn_begin_handshake(mph_conn *c)
{
    /* Whatever the handler's path to start_tls(), nothing sent in the clear crosses into the TLS session
       (RFC 3207 section 4.2, RFC 2595 section 3.1). */
    if (c->in_len > 0)
        mph_log(&c->session, MP_LOG_NOTICE, 10111, "discarding %zu bytes sent before the TLS handshake", c->in_len);
    c->in_len = 0;
    c->ssl = SSL_new(c->lrt->tls);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
        mph_log(&c->session, MP_LOG_ERROR, 10103, "cannot start TLS: %s", mph_tls_error(c->session.pool));
        conn_destroy(c, MP_CLOSE_TLS_FAILED);
        return;
    }
    SSL_set_accept_state(c->ssl);
    c->state = MPH_CONN_HANDSHAKE;
    c->ssl_want_write = 0;
}

static void conn_handshake(mph_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r != 1) {
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            c->ssl_want_write = e == SSL_ERROR_WANT_WRITE;
            conn_set_events(c);
            return;
        }
        mph_log(&c->session, MP_LOG_INFO, 10104, "TLS handshake failed: %s",
                e == SSL_ERROR_SSL ? mph_tls_error(c->session.pool) : "connection closed");
        conn_destroy(c, MP_CLOSE_TLS_FAILED);
        return;
    }
    c->ssl_want_write = 0;
    c->state = MPH_CONN_OPEN;
    c->session.tls_active = 1;
    conn_touch(c);
    if (mph_log_enabled(MP_LOG_INFO)) {
        const SSL_CIPHER *ciph = SSL_get_current_cipher(c->ssl);
        mph_log(&c->session, MP_LOG_INFO, 10105, "TLS established: %s %s", SSL_get_version(c->ssl),
                ciph ? SSL_CIPHER_get_name(ciph) : "?");
    }
    c->in_callback = 1;
    if (!c->connected) {
        c->connected = 1;
        if (c->proto->on_connect(&c->session) != 0)
            c->close_requested = 1;
    } else {
        c->tls_requested = 0;
        if (c->proto->on_tls_ready)
            c->proto->on_tls_ready(&c->session);
    }
    c->in_callback = 0;
    conn_pump(c);
}

void mph_conn_start(mph_conn *c, int refuse)
{
    mph_log(&c->session, MP_LOG_INFO, 10106, "connect to %s (%s)", c->lrt->info.address, c->lrt->info.protocol);
    if (refuse) {
        mph_log(&c->session, MP_LOG_NOTICE, 10107, "too many connections on %s, refusing", c->lrt->info.address);
        c->state = MPH_CONN_OPEN;
        c->connected = 1;
        c->refused = 1;
        c->bye = MP_BYE_TOO_MANY_CONNECTIONS;
        conn_pump(c);
        return;
    }
    if (c->lrt->info.tls == MP_TLS_IMPLICIT) {
        conn_begin_handshake(c);
        if (!c->destroyed)
            conn_handshake(c);
        return;
    }
    c->state = MPH_CONN_OPEN;
    c->connected = 1;
    c->in_callback = 1;
    if (c->proto->on_connect(&c->session) != 0)
        c->close_requested = 1;
    c->in_callback = 0;
    conn_pump(c);
}

/* The session is over for its handler and for the limits (on_close, session counts), though its socket
   may still linger: a client that saw the last reply may connect again at once. */
static void conn_end_session(mph_conn *c, mp_close_reason why)
{
    if (c->session_ended)
        return;
    c->session_ended = 1;
    while (!APR_RING_EMPTY(&c->timers, mp_timer, link))
        timer_drop(c, APR_RING_FIRST(&c->timers));
    if (c->connected && c->proto->on_close)
        c->proto->on_close(&c->session, why);
    mph_log(&c->session, MP_LOG_INFO, 10108, "disconnect (%s)",
            why == MP_CLOSE_NORMAL ? "closed" : why == MP_CLOSE_PEER ? "client left"
                                            : why == MP_CLOSE_GOODBYE ? "goodbye" : "TLS failed");
    mph_listener *l = c->lrt->listener;
    if (!c->refused) { /* counted at accept */
        apr_atomic_dec32(&l->sessions);
        apr_thread_mutex_lock(l->mutex);
        mph_client_count *cc = apr_hash_get(l->per_client, c->peer_text, APR_HASH_KEY_STRING);
        if (cc && --cc->n == 0) {
            apr_hash_set(l->per_client, c->peer_text, APR_HASH_KEY_STRING, NULL);
            free(cc);
        }
        apr_thread_mutex_unlock(l->mutex);
        for (int i = 0; i < c->rt->gens->nelts; i++)
            apr_atomic_dec32(&APR_ARRAY_IDX(c->rt->gens, i, mph_generation *)->sessions);
    }
}

static void conn_destroy(mph_conn *c, mp_close_reason why)
{
    if (c->destroyed)
        return;
    if (c->job_pending) {
        /* The job's done() still refers to the session: finish when it comes back. */
        c->peer_gone = 1;
        if (c->events) {
            apr_pollset_remove(c->loop->pollset, &c->pfd);
            c->events = 0;
        }
        return;
    }
    c->destroyed = 1;
    if (c->events)
        apr_pollset_remove(c->loop->pollset, &c->pfd);
    c->events = 0;
    APR_RING_REMOVE(c, link);
    conn_end_session(c, why);
    if (c->ssl)
        SSL_free(c->ssl);
    c->ssl = NULL;
    if (!c->borrowed)
        apr_socket_close(c->sock);
    free(c->in);
    c->in = NULL;
    out_free_all(c);
    apr_atomic_dec32(&c->loop->nconns);
    /* The pool (and c) is freed by the loop once it is done with this round of events. */
    *(mph_conn **)apr_array_push(c->loop->dead) = c;
}

void mph_conn_free(mph_conn *c)
{
    mph_server *srv = c->loop->server;
    mph_runtime *rt = c->rt;
    mph_listener *l = c->lrt->listener;
    apr_pool_destroy(c->session.pool);
    mph_runtime_release(srv, rt); /* may unload the handler's generation: nothing of it is used after */
    mph_listener_release(l);
}

/* ---------------------------------------------------------------- input */

/* Reads what is there. Returns 1 when bytes came and more may wait, 2 when bytes came and the socket is
   drained (a short read: asking again would only return EAGAIN), 0 when nothing more now, -1 at end or
   error. */
static int conn_read(mph_conn *c)
{
    /* The buffer holds at most MaxLineLength bytes: a line that does not fit is too long, whether or
       not its end has arrived. */
    size_t cap = c->rt->conf->max_line;
    if (!c->in) {
        c->in = malloc(cap);
        if (!c->in)
            abort();
        c->in_cap = cap;
        c->in_len = 0;
    }
    if (c->in_len >= c->in_cap)
        return 0;
    size_t n = 0, want = c->in_cap - c->in_len;
    if (c->ssl) {
        ERR_clear_error();
        if (SSL_read_ex(c->ssl, c->in + c->in_len, want, &n) != 1) {
            int e = SSL_get_error(c->ssl, 0);
            if (e == SSL_ERROR_WANT_READ)
                return 0;
            if (e == SSL_ERROR_WANT_WRITE) {
                c->ssl_want_write = 1;
                return 0;
            }
            if (e == SSL_ERROR_SSL)
                mph_log(&c->session, MP_LOG_INFO, 10109, "TLS error: %s", mph_tls_error(c->session.pool));
            return -1;
        }
    } else {
        apr_size_t len = c->in_cap - c->in_len;
        apr_status_t rv = apr_socket_recv(c->sock, c->in + c->in_len, &len);
        if (APR_STATUS_IS_EAGAIN(rv))
            return 0;
        if (rv != APR_SUCCESS || len == 0)
            return -1;
        n = len;
    }
    c->in_len += n;
    /* Level-triggered polling reports what arrives later; TLS: nothing decrypted is left behind either. */
    return n < want && (!c->ssl || SSL_pending(c->ssl) == 0) ? 2 : 1;
}

static void in_release(mph_conn *c)
{
    /* Idle sessions keep no read buffer (DESIGN section 3). */
    if (c->in && c->in_len == 0) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

static int can_deliver(const mph_conn *c)
{
    return !c->destroyed && c->state == MPH_CONN_OPEN && c->in_len > 0 && !c->tls_requested &&
           !c->close_requested && !c->bye && !c->job_pending && !c->want_writable && c->out_len < OUT_HIGH;
}

/* Gives the buffered input to the handler until it wants more bytes or must stop. */
static void conn_deliver(mph_conn *c)
{
    while (can_deliver(c)) {
        c->in_callback = 1;
        long r = c->proto->on_input(&c->session, c->in, c->in_len);
        c->in_callback = 0;
        if (r < 0) {
            mph_log(&c->session, MP_LOG_NOTICE, 10110, "handler dropped the connection");
            c->close_requested = 1;
            out_free_all(c);
            c->in_len = 0;
            break;
        }
        if (c->tls_requested || c->close_requested) {
            /* Bytes after STARTTLS or QUIT are never read as commands (RFC 3207 section 4.2). */
            if (c->tls_requested && c->in_len > (size_t)r)
                mph_log(&c->session, MP_LOG_NOTICE, 10111, "discarding %zu bytes sent before the TLS handshake",
                        c->in_len - (size_t)r);
            c->in_len = 0;
            break;
        }
        size_t used = (size_t)r < c->in_len ? (size_t)r : c->in_len;
        if (used == 0) {
            if (c->in_len >= c->rt->conf->max_line) {
                mph_log(&c->session, MP_LOG_NOTICE, 10112, "line longer than %zu bytes, closing",
                        (size_t)c->rt->conf->max_line);
                c->bye = MP_BYE_LINE_TOO_LONG;
            }
            break;
        }
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
    }
    in_release(c);
}

/* Write side done: shut it, then read and drop what the client still sends, so that it sees our last
   reply instead of a reset (httpd's lingering close). */
static void conn_linger(mph_conn *c)
{
    /* Before the client can see the end: one that reconnects at once finds its slot free. */
    conn_end_session(c, c->close_reason);
    if (c->ssl) {
        ERR_clear_error();
        SSL_shutdown(c->ssl);
    }
    apr_socket_shutdown(c->sock, APR_SHUTDOWN_WRITE);
    c->state = MPH_CONN_LINGER;
    apr_time_t linger = LINGER_TIME < c->lrt->conf->idle_timeout ? LINGER_TIME : c->lrt->conf->idle_timeout;
    c->linger_until = apr_time_now() + linger;
    if (c->linger_until < c->loop->next_check)
        c->loop->next_check = c->linger_until;
    c->in_len = 0;
    in_release(c);
}

static void conn_pump(mph_conn *c)
{
    if (c->destroyed || c->in_callback)
        return;
    for (int round = 0; round < WRITABLE_ROUNDS; round++) {
        if (c->state == MPH_CONN_OPEN && c->bye && !c->job_pending) {
            if (!c->goodbye_said) {
                c->goodbye_said = 1;
                c->in_callback = 1;
                c->proto->on_goodbye(&c->session, c->bye);
                c->in_callback = 0;
            }
            c->close_requested = 1;
            c->close_reason = MP_CLOSE_GOODBYE;
        }
        if (c->state == MPH_CONN_OPEN && c->close_requested && !c->job_pending) {
            c->state = MPH_CONN_CLOSING;
            c->in_len = 0;
            in_release(c);
        }
        conn_deliver(c);
        if (c->state == MPH_CONN_OPEN && (c->bye || c->close_requested) && !c->job_pending)
            continue; /* the handler just asked to close: act on it */
        if (c->state == MPH_CONN_OPEN && c->want_writable && c->out_len < OUT_LOW && !c->tls_requested &&
            !c->close_requested && !c->bye && !c->job_pending && c->proto->on_writable) {
            c->want_writable = 0;
            c->in_callback = 1;
            c->proto->on_writable(&c->session);
            c->in_callback = 0;
            if (conn_flush(c) < 0) {
                conn_destroy(c, MP_CLOSE_PEER);
                return;
            }
            continue;
        }
        /* Input waits behind a full output buffer: write, and deliver again once there is room (no event
           would come for bytes already in our buffer). */
        if (c->state == MPH_CONN_OPEN && c->in_len > 0 && c->out_len >= OUT_HIGH) {
            if (conn_flush(c) < 0) {
                conn_destroy(c, MP_CLOSE_PEER);
                return;
            }
            if (can_deliver(c))
                continue;
        }
        break;
    }
    if (c->out_len > 0 && conn_flush(c) < 0) {
        conn_destroy(c, MP_CLOSE_PEER);
        return;
    }
    if (c->out_len == 0 && !c->ssl_want_write) {
        if (c->state == MPH_CONN_CLOSING) {
            conn_linger(c);
        } else if (c->state == MPH_CONN_OPEN && c->tls_requested) {
            conn_begin_handshake(c);
            if (c->destroyed)
                return;
        } else if (c->state == MPH_CONN_OPEN && c->peer_gone && !c->job_pending) {
            conn_destroy(c, MP_CLOSE_PEER);
            return;
        }
    }
    /* Bytes OpenSSL has already taken from the socket wake no poll: read them now that they may be
       taken (after a job, or once the buffer has room). */
    if (c->ssl && !c->tls_draining && c->state == MPH_CONN_OPEN && !c->peer_gone && !c->tls_requested &&
        !c->job_pending && (!c->in || c->in_len < c->in_cap) && SSL_has_pending(c->ssl)) {
        c->tls_draining = 1;
        mph_conn_event(c, APR_POLLIN); /* ends in conn_pump; c stays allocated until the loop's round ends */
        c->tls_draining = 0;
        return;
    }
    conn_set_events(c);
}

void mph_conn_event(mph_conn *c, apr_int16_t revents)
{
    if (c->destroyed)
        return;
    if (c->state == MPH_CONN_LINGER) {
        char junk[4096];
        apr_size_t len = sizeof junk;
        apr_status_t rv = apr_socket_recv(c->sock, junk, &len);
        if (!APR_STATUS_IS_EAGAIN(rv) && (rv != APR_SUCCESS || len == 0))
            conn_destroy(c, c->close_reason);
        return;
    }
    if (c->state == MPH_CONN_HANDSHAKE) {
        conn_handshake(c);
        return;
    }
    if (revents & (APR_POLLERR | APR_POLLNVAL)) {
        conn_destroy(c, MP_CLOSE_PEER);
        return;
    }
    /* Read and deliver in turns, so a client streaming a large message is served without the buffer
       ever growing past MaxLineLength. */
    for (int turn = 0; turn < 16 && c->state == MPH_CONN_OPEN && !c->peer_gone && !c->tls_requested; turn++) {
        int got = 0, r;
        while ((r = conn_read(c)) == 1)
            got = 1;
        if (r == 2)
            got = 1;
        if (r < 0)
            c->peer_gone = 1;
        int full = c->in && c->in_len >= c->in_cap; /* more may wait behind a full buffer */
        if (got)
            conn_touch(c);
        size_t before = c->in_len;
        conn_deliver(c);
        if (!full || c->in_len == before)
            break;
    }
    if (c->state == MPH_CONN_CLOSING && (revents & APR_POLLHUP))
        c->peer_gone = 1;
    conn_pump(c);
}

apr_time_t mph_conn_deadline(const mph_conn *c)
{
    if (c->state == MPH_CONN_LINGER)
        return c->linger_until;
    if (c->job_pending)
        return c->last_active + c->lrt->conf->idle_timeout + apr_time_from_sec(3600);
    return c->last_active + c->lrt->conf->idle_timeout;
}

void mph_conn_check_idle(mph_conn *c, apr_time_t now)
{
    if (c->destroyed || now < mph_conn_deadline(c))
        return;
    switch (c->state) {
    case MPH_CONN_LINGER:
        conn_destroy(c, c->close_reason);
        break;
    case MPH_CONN_HANDSHAKE:
    case MPH_CONN_CLOSING:
        mph_log(&c->session, MP_LOG_INFO, 10113, "timeout while %s", c->state == MPH_CONN_HANDSHAKE
                                                                          ? "in the TLS handshake" : "closing");
        conn_destroy(c, c->state == MPH_CONN_HANDSHAKE ? MP_CLOSE_TLS_FAILED : c->close_reason);
        break;
    case MPH_CONN_OPEN:
        if (!c->bye) {
            mph_log(&c->session, MP_LOG_INFO, 10114, "idle timeout");
            c->bye = MP_BYE_IDLE;
        }
        conn_touch(c); /* the goodbye gets its own time to drain */
        conn_pump(c);
        break;
    }
}

void mph_conn_shutdown(mph_conn *c)
{
    if (c->destroyed)
        return;
    if (c->state == MPH_CONN_HANDSHAKE || c->state == MPH_CONN_LINGER) {
        conn_destroy(c, c->state == MPH_CONN_HANDSHAKE ? MP_CLOSE_TLS_FAILED : c->close_reason);
        return;
    }
    if (c->state == MPH_CONN_OPEN && !c->bye)
        c->bye = MP_BYE_SHUTDOWN;
    conn_pump(c);
}

int mph_timer_compare(void *a, void *b)
{
    const mp_timer *x = a, *y = b;
    if (x->when != y->when)
        return x->when < y->when ? -1 : 1;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return 0;
}

apr_time_t mph_timer_when(const mp_timer *t) { return t->when; }

mph_conn *mph_timer_conn(const mp_timer *t) { return t->conn; }

void mph_conn_abort(mph_conn *c)
{
    conn_destroy(c, MP_CLOSE_PEER);
}

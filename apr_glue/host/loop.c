/*
 * Event loops: one thread each, an apr_pollset (epoll) of its connections, a message queue that other
 * threads post to (new connection, job done, shut down), module timers, and idle deadlines.
 */
#include <stdlib.h>
#include <string.h>

#include <apr_atomic.h>
#include <apr_strings.h>

#include "log.h"
#include "server.h"

enum { MSG_CONN = 1, MSG_JOB, MSG_WAKEUP, MSG_SHUTDOWN, MSG_QUIT };

struct mph_msg {
    mph_msg *next;
    int type;
    apr_socket_t *sock;
    apr_pool_t *pool;
    mph_runtime *rt;
    mph_listen_rt *lrt;
    int refuse;
    mph_conn *conn;
    void *job;
};

/* Only the message that finds the queue empty wakes the loop (a write to its wakeup pipe): the loop takes
   the whole queue after every wait, so a message behind it is taken by that same wakeup. Under load this
   saves a pipe write and read per job done. */
static void loop_post(mph_loop *loop, mph_msg *m)
{
    apr_thread_mutex_lock(loop->mutex);
    int was_empty = loop->msgs == NULL;
    if (loop->msgs_tail)
        loop->msgs_tail->next = m;
    else
        loop->msgs = m;
    loop->msgs_tail = m;
    apr_thread_mutex_unlock(loop->mutex);
    if (was_empty)
        apr_pollset_wakeup(loop->pollset);
}

static mph_msg *msg_new(int type)
{
    mph_msg *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    m->type = type;
    return m;
}

void mph_loop_post_conn(mph_loop *loop, apr_socket_t *sock, apr_pool_t *pool, mph_runtime *rt,
                        mph_listen_rt *lrt, int refuse)
{
    mph_msg *m = msg_new(MSG_CONN);
    m->sock = sock;
    m->pool = pool;
    m->rt = rt;
    m->lrt = lrt;
    m->refuse = refuse;
    loop_post(loop, m);
}

void mph_loop_post_job_done(mph_loop *loop, mph_conn *c, void *job)
{
    mph_msg *m = msg_new(MSG_JOB);
    m->conn = c;
    m->job = job;
    loop_post(loop, m);
}

void mph_loop_post_wakeup(mph_loop *loop, mph_conn *c)
{
    mph_msg *m = msg_new(MSG_WAKEUP);
    m->conn = c;
    loop_post(loop, m);
}

static void loop_take_messages(mph_loop *loop)
{
    apr_thread_mutex_lock(loop->mutex);
    mph_msg *m = loop->msgs;
    loop->msgs = loop->msgs_tail = NULL;
    apr_thread_mutex_unlock(loop->mutex);
    while (m) {
        mph_msg *next = m->next;
        switch (m->type) {
        case MSG_CONN: {
            mph_conn *c = mph_conn_new(loop, m->sock, m->pool, m->rt, m->lrt);
            if (loop->stopping && !m->refuse)
                mph_conn_start(c, 0), mph_conn_shutdown(c);
            else
                mph_conn_start(c, m->refuse);
            break;
        }
        case MSG_JOB:
            mph_conn_job_done(m->conn, m->job);
            break;
        case MSG_WAKEUP:
            mph_conn_wakeup(m->conn);
            break;
        case MSG_SHUTDOWN: {
            loop->stopping = 1;
            mph_conn *c, *cn;
            for (c = APR_RING_FIRST(&loop->conns); c != APR_RING_SENTINEL(&loop->conns, mph_conn, link); c = cn) {
                cn = APR_RING_NEXT(c, link);
                mph_conn_shutdown(c);
            }
            break;
        }
        case MSG_QUIT:
            loop->quit = 1;
            break;
        }
        free(m);
        m = next;
    }
}

static void loop_free_dead(mph_loop *loop)
{
    int kept = 0;
    for (int i = 0; i < loop->dead->nelts; i++) {
        mph_conn *c = APR_ARRAY_IDX(loop->dead, i, mph_conn *);
        if (apr_atomic_read32(&c->wakeups)) /* a wakeup message still points here: free it next round */
            APR_ARRAY_IDX(loop->dead, kept++, mph_conn *) = c;
        else
            mph_conn_free(c);
    }
    loop->dead->nelts = kept;
}

static void loop_run_timers(mph_loop *loop, apr_time_t now)
{
    mp_timer *t;
    while ((t = apr_skiplist_peek(loop->timers)) && mph_timer_when(t) <= now)
        mph_conn_timer_fire(mph_timer_conn(t), t);
}

static void loop_check_deadlines(mph_loop *loop, apr_time_t now)
{
    if (now < loop->next_check)
        return;
    apr_time_t next = now + apr_time_from_sec(3600);
    mph_conn *c, *cn;
    for (c = APR_RING_FIRST(&loop->conns); c != APR_RING_SENTINEL(&loop->conns, mph_conn, link); c = cn) {
        cn = APR_RING_NEXT(c, link);
        mph_conn_check_idle(c, now);
    }
    /* Recompute after the checks: they may have moved connections or started lingering. */
    for (c = APR_RING_FIRST(&loop->conns); c != APR_RING_SENTINEL(&loop->conns, mph_conn, link); c = cn) {
        cn = APR_RING_NEXT(c, link);
        apr_time_t d = mph_conn_deadline(c);
        if (d < next)
            next = d;
    }
    loop->next_check = next;
}

/* One round: wait for events (bounded by the next timer or deadline), then act on them. */
static void loop_iterate(mph_loop *loop)
{
    apr_time_t now = apr_time_now();
    apr_interval_time_t timeout = loop->next_check - now;
    mp_timer *t = apr_skiplist_peek(loop->timers);
    if (t && mph_timer_when(t) - now < timeout)
        timeout = mph_timer_when(t) - now;
    if (timeout < 0)
        timeout = 0;
    if (timeout > apr_time_from_sec(1))
        timeout = apr_time_from_sec(1);
    apr_int32_t n = 0;
    const apr_pollfd_t *descs = NULL;
    if (apr_pollset_poll(loop->pollset, timeout, &n, &descs) == APR_SUCCESS)
        for (apr_int32_t i = 0; i < n; i++)
            mph_conn_event(descs[i].client_data, descs[i].rtnevents);
    loop_take_messages(loop);
    now = apr_time_now();
    loop_run_timers(loop, now);
    loop_check_deadlines(loop, now);
    loop_free_dead(loop);
}

/* Cuts off what is still open; sessions with a job on a worker end when it comes back (bounded). */
static void loop_drain(mph_loop *loop)
{
    mph_conn *c, *cn;
    for (c = APR_RING_FIRST(&loop->conns); c != APR_RING_SENTINEL(&loop->conns, mph_conn, link); c = cn) {
        cn = APR_RING_NEXT(c, link);
        mph_conn_abort(c);
    }
    apr_time_t until = apr_time_now() + apr_time_from_sec(30);
    while (apr_atomic_read32(&loop->nconns) > 0 && apr_time_now() < until) {
        apr_int32_t n;
        const apr_pollfd_t *descs;
        apr_pollset_poll(loop->pollset, apr_time_from_msec(100), &n, &descs);
        loop_take_messages(loop);
        loop_free_dead(loop);
    }
    loop_take_messages(loop);
    loop_free_dead(loop);
}

static void *APR_THREAD_FUNC loop_main(apr_thread_t *thread, void *data)
{
    mph_loop *loop = data;
    while (!loop->quit)
        loop_iterate(loop);
    loop_drain(loop);
    return NULL; /* not apr_thread_exit(): pthread_exit's unwinding confuses AddressSanitizer */
}

static apr_status_t loop_init(mph_server *srv, mph_loop *loop, unsigned index, apr_pool_t *parent)
{
    apr_status_t rv;
    loop->server = srv;
    loop->index = index;
    if ((rv = apr_pool_create(&loop->pool, parent)) != APR_SUCCESS)
        return rv;
    APR_RING_INIT(&loop->conns, mph_conn, link);
    loop->dead = apr_array_make(loop->pool, 16, sizeof(mph_conn *));
    loop->next_check = apr_time_now() + apr_time_from_sec(3600);
    if ((rv = apr_thread_mutex_create(&loop->mutex, APR_THREAD_MUTEX_DEFAULT, loop->pool)) != APR_SUCCESS ||
        (rv = apr_pollset_create(&loop->pollset, 1024, loop->pool, APR_POLLSET_WAKEABLE)) != APR_SUCCESS ||
        (rv = apr_skiplist_init(&loop->timers, loop->pool)) != APR_SUCCESS)
        return rv;
    apr_skiplist_set_compare(loop->timers, mph_timer_compare, mph_timer_compare);
    return APR_SUCCESS;
}

apr_status_t mph_loop_serve_one(mph_server *srv, apr_socket_t *sock, apr_pool_t *pool, mph_runtime *rt,
                                mph_listen_rt *lrt, int refuse)
{
    /* The same loop and connection code as mailprotod's threads, on the caller's thread, for one
       connection: the embedding API's driver. */
    mph_loop loop;
    memset(&loop, 0, sizeof loop);
    apr_status_t rv = loop_init(srv, &loop, (unsigned)-1, pool);
    if (rv != APR_SUCCESS)
        return rv;
    apr_pool_t *cpool;
    apr_pool_create(&cpool, pool);
    mph_conn *c = mph_conn_new(&loop, sock, cpool, rt, lrt);
    c->borrowed = 1;
    mph_conn_start(c, refuse);
    apr_time_t until = 0;
    while (apr_atomic_read32(&loop.nconns) > 0) {
        if (srv->stopping && !loop.stopping) { /* the embedding server is going away: say goodbye */
            loop.stopping = 1;
            mph_conn_shutdown(c);
            until = apr_time_now() + rt->conf->shutdown_timeout;
        }
        if (loop.stopping && apr_time_now() >= until)
            break;
        loop_iterate(&loop);
    }
    loop_drain(&loop);
    apr_pool_destroy(loop.pool);
    return APR_SUCCESS;
}

apr_status_t mph_loops_start(mph_server *srv, unsigned n)
{
    apr_status_t rv;
    srv->nloops = n;
    srv->loops = apr_pcalloc(srv->pool, n * sizeof(mph_loop));
    for (unsigned i = 0; i < n; i++)
        if ((rv = loop_init(srv, &srv->loops[i], i, srv->pool)) != APR_SUCCESS)
            return rv;
    for (unsigned i = 0; i < n; i++)
        if ((rv = apr_thread_create(&srv->loops[i].thread, NULL, loop_main, &srv->loops[i], srv->pool))
            != APR_SUCCESS)
            return rv;
    return APR_SUCCESS;
}

void mph_loops_shutdown(mph_server *srv)
{
    for (unsigned i = 0; i < srv->nloops; i++)
        loop_post(&srv->loops[i], msg_new(MSG_SHUTDOWN));
}

unsigned mph_loops_sessions(mph_server *srv)
{
    unsigned n = 0;
    for (unsigned i = 0; i < srv->nloops; i++)
        n += apr_atomic_read32(&srv->loops[i].nconns);
    return n;
}

void mph_loops_join(mph_server *srv)
{
    for (unsigned i = 0; i < srv->nloops; i++)
        loop_post(&srv->loops[i], msg_new(MSG_QUIT));
    for (unsigned i = 0; i < srv->nloops; i++) {
        apr_status_t trv;
        apr_thread_join(&trv, srv->loops[i].thread);
    }
}

/* The embedding API (include/mailproto/embed.h) over the host runtime. */
#include <mailproto/embed.h>

#include <apr_atomic.h>
#include <apr_strings.h>
#include <openssl/ssl.h>

#include "log.h"
#include "server.h"

struct mp_embed {
    mph_server *srv;
    apr_pool_t *pool;
    volatile apr_uint32_t serving;
};

const char *mp_embed_create(apr_pool_t *pool, const char *name, const char *base_dir, const char *text,
                            mp_embed **embed_r)
{
    /* No OpenSSL cleanup at exit() in an embedding server: httpd's children call exit() from a signal
       handler, and OPENSSL_cleanup then frees memory while the interrupted thread may hold malloc's lock
       (a child stopped during its start hung until the parent killed it). The first init decides. */
    OPENSSL_init_ssl(OPENSSL_INIT_NO_ATEXIT, NULL);
    apr_pool_t *p;
    apr_pool_create(&p, pool);
    mp_embed *e = apr_pcalloc(p, sizeof *e);
    e->pool = p;
    e->srv = mph_server_create(p, apr_pstrdup(p, name));
    e->srv->conf_text = apr_pstrdup(p, text);
    e->srv->conf_dir = apr_pstrdup(p, base_dir);
    e->srv->embedded = 1;
    mph_runtime *rt = NULL;
    const char *err = mph_runtime_load(e->srv, 0, &rt);
    if (!err && (err = mph_runtime_activate(e->srv, rt)) != NULL)
        mph_runtime_discard(e->srv, rt);
    apr_size_t workers = !err && rt->conf->workers > 0 ? (apr_size_t)rt->conf->workers : 4;
    if (!err && mph_workers_start(&e->srv->workers, (unsigned)workers, p) != APR_SUCCESS)
        err = "cannot start the worker threads";
    if (err) {
        err = apr_pstrdup(pool, err);
        apr_pool_destroy(p);
        return err;
    }
    mp_log_level level;
    if (rt->conf->log_level && mph_log_level_parse(rt->conf->log_level, &level) == 0)
        mph_log_set_level(level);
    *embed_r = e;
    return NULL;
}

const char *mp_embed_reload(mp_embed *e, const char *text)
{
    apr_thread_mutex_lock(e->srv->mutex);
    const char *old = e->srv->conf_text;
    e->srv->conf_text = apr_pstrdup(e->pool, text);
    apr_thread_mutex_unlock(e->srv->mutex);
    const char *err = mph_server_reload(e->srv, "by the embedding server");
    if (err)
        e->srv->conf_text = old;
    return err;
}

int mp_embed_has_endpoint(mp_embed *e, const char *endpoint)
{
    mph_runtime *rt = mph_runtime_acquire(e->srv);
    int found = rt && mph_runtime_listen(rt, endpoint) != NULL;
    if (rt)
        mph_runtime_release(e->srv, rt);
    return found;
}

apr_status_t mp_embed_serve(mp_embed *e, const char *endpoint, apr_socket_t *sock, apr_pool_t *pool)
{
    mph_server *srv = e->srv;
    if (srv->stopping)
        return APR_EINVAL;
    mph_runtime *rt = mph_runtime_acquire(srv);
    mph_listen_rt *lrt = rt ? mph_runtime_listen(rt, endpoint) : NULL;
    if (!lrt) {
        if (rt)
            mph_runtime_release(srv, rt);
        return APR_NOTFOUND;
    }
    apr_atomic_inc32(&e->serving);
    apr_sockaddr_t *sa;
    char *ip = "";
    if (apr_socket_addr_get(&sa, APR_REMOTE, sock) == APR_SUCCESS)
        apr_sockaddr_ip_get(&ip, sa);
    int refuse = mph_admit(rt, lrt, ip);

    apr_interval_time_t timeout;
    apr_int32_t nonblock = 0;
    apr_socket_timeout_get(sock, &timeout);
    apr_socket_opt_get(sock, APR_SO_NONBLOCK, &nonblock);
    apr_socket_opt_set(sock, APR_SO_NONBLOCK, 1);
    apr_socket_timeout_set(sock, 0);
    apr_socket_opt_set(sock, APR_TCP_NODELAY, 1);
    /* The connection takes over the references acquired above and releases them when it ends. */
    apr_status_t rv = mph_loop_serve_one(srv, sock, pool, rt, lrt, refuse);
    apr_socket_opt_set(sock, APR_SO_NONBLOCK, nonblock);
    apr_socket_timeout_set(sock, timeout);
    apr_atomic_dec32(&e->serving);
    return rv;
}

const char *mp_embed_give_copy_dir(apr_pool_t *pool, const char *state_dir, long uid, long gid)
{
    return mph_copy_dir_give(pool, state_dir, uid, gid);
}

void mp_embed_destroy(mp_embed *e)
{
    mph_server *srv = e->srv;
    srv->stopping = 1; /* serve loops see it and cut their session off */
    apr_time_t until = apr_time_now() + apr_time_from_sec(30);
    while (apr_atomic_read32(&e->serving) > 0 && apr_time_now() < until)
        apr_sleep(apr_time_from_msec(10));
    if (srv->workers)
        mph_workers_stop(srv->workers);
    apr_thread_mutex_lock(srv->mutex);
    mph_runtime *rt = srv->current;
    srv->current = NULL;
    apr_thread_mutex_unlock(srv->mutex);
    if (rt)
        mph_runtime_release(srv, rt);
    mph_listeners_close_all(srv);
    if (mph_the_server == srv)
        mph_the_server = NULL;
    apr_pool_destroy(e->pool);
}

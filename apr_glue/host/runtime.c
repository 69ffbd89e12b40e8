/*
 * Configuration snapshots ("runtimes"): loading one (configuration, module generations, TLS contexts),
 * making it current (binding listeners), and letting the old one go when its last session ends.
 * Runs on the main thread, except mph_runtime_release, which the loops call as sessions end.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/stat.h>

#include <apr_atomic.h>
#include <apr_file_io.h>
#include <apr_strings.h>

#include "log.h"
#include "server.h"
#include "tls.h"

mph_server *mph_the_server;

static mph_generation *rt_gen(const mph_runtime *rt, const char *name)
{
    for (int i = 0; i < rt->gens->nelts; i++) {
        mph_generation *g = APR_ARRAY_IDX(rt->gens, i, mph_generation *);
        if (strcmp(g->name, name) == 0)
            return g;
    }
    return NULL;
}

static const mp_directive *find_directive(void *ctx, const char *name)
{
    mph_runtime *rt = ctx;
    for (int i = 0; i < rt->gens->nelts; i++) {
        const mp_directive *d = APR_ARRAY_IDX(rt->gens, i, mph_generation *)->module->directives;
        for (; d && d->name; d++)
            if (strcasecmp(d->name, name) == 0)
                return d;
    }
    return NULL;
}

static int is_protocol(void *ctx, const char *name)
{
    mph_generation *g = rt_gen(ctx, name);
    return g && g->module->kind == MP_KIND_PROTOCOL;
}

const mp_provider *mph_runtime_provider(mph_runtime *rt, const char *kind, const char *name)
{
    for (int i = 0; i < rt->gens->nelts; i++) {
        const mp_module *m = APR_ARRAY_IDX(rt->gens, i, mph_generation *)->module;
        if (m->kind == MP_KIND_PROVIDER && strcmp(m->provider->kind, kind) == 0 &&
            (!name || strcmp(m->provider->name, name) == 0))
            return m->provider;
    }
    return NULL;
}

/* Drops one reference to a generation; the last one unloads it. Caller holds srv->mutex. */
static void gen_release(mph_server *srv, mph_generation *g)
{
    if (apr_atomic_dec32(&g->refs) != 0)
        return;
    for (int i = 0; i < srv->gens->nelts; i++)
        if (APR_ARRAY_IDX(srv->gens, i, mph_generation *) == g) {
            APR_ARRAY_IDX(srv->gens, i, mph_generation *) = APR_ARRAY_IDX(srv->gens, srv->gens->nelts - 1,
                                                                          mph_generation *);
            srv->gens->nelts--;
            break;
        }
    mph_log(NULL, MP_LOG_NOTICE, 10201, "module %s generation %u unloaded", g->name, g->number);
    mph_module_unload(g);
}

static void rt_free(mph_server *srv, mph_runtime *rt)
{
    /* Instances first, while their providers' code is still loaded (their cleanups run it). */
    if (rt->inst_pool)
        apr_pool_destroy(rt->inst_pool);
    rt->inst_pool = NULL;
    apr_thread_mutex_lock(srv->mutex);
    for (int i = 0; i < rt->gens->nelts; i++)
        gen_release(srv, APR_ARRAY_IDX(rt->gens, i, mph_generation *));
    apr_thread_mutex_unlock(srv->mutex);
    for (int i = 0; i < rt->tls_ctxs->nelts; i++)
        SSL_CTX_free(APR_ARRAY_IDX(rt->tls_ctxs, i, SSL_CTX *));
    apr_pool_destroy(rt->pool);
}

void mph_runtime_discard(mph_server *srv, mph_runtime *rt) { rt_free(srv, rt); }

void mph_runtime_release(mph_server *srv, mph_runtime *rt)
{
    if (apr_atomic_dec32(&rt->refs) == 0)
        rt_free(srv, rt);
}

mph_runtime *mph_runtime_acquire(mph_server *srv)
{
    apr_thread_mutex_lock(srv->mutex);
    mph_runtime *rt = srv->current;
    if (rt)
        apr_atomic_inc32(&rt->refs);
    apr_thread_mutex_unlock(srv->mutex);
    return rt;
}

/* The generation to use for a LoadModule line: the running one if its file did not change. */
static const char *rt_add_module(mph_server *srv, mph_runtime *rt, const mph_module_conf *mc, const char *copy_dir)
{
    apr_thread_mutex_lock(srv->mutex);
    mph_generation *found = NULL;
    for (int i = 0; i < srv->gens->nelts; i++) {
        mph_generation *g = APR_ARRAY_IDX(srv->gens, i, mph_generation *);
        if (strcmp(g->name, mc->name) == 0 && strcmp(g->file, mc->path) == 0 &&
            (!found || g->number > found->number))
            found = g;
    }
    if (found && !mph_module_changed(found)) {
        apr_atomic_inc32(&found->refs);
        *(mph_generation **)apr_array_push(rt->gens) = found;
        apr_thread_mutex_unlock(srv->mutex);
        return NULL;
    }
    unsigned *last = apr_hash_get(srv->gen_numbers, mc->name, APR_HASH_KEY_STRING);
    unsigned number = last ? *last + 1 : 1;
    apr_thread_mutex_unlock(srv->mutex);

    mph_generation *g;
    const char *err = mph_module_load(rt->pool, mc->name, mc->path, copy_dir, number, &g);
    if (err)
        return apr_psprintf(rt->pool, "%s:%d: %s", rt->conf->file, mc->line, err);
    if (g->module->init) {
        mph_conn_set_loading_runtime(rt);
        int r = g->module->init(&mph_host_services, g->pool, &g->ctx);
        mph_conn_set_loading_runtime(NULL);
        if (r != 0) {
            mph_module_unload(g);
            return apr_psprintf(rt->pool, "%s:%d: module '%s' (%s) failed to start", rt->conf->file, mc->line,
                                mc->name, mc->path);
        }
    }
    g->inited = 1;
    g->refs = 1;
    apr_thread_mutex_lock(srv->mutex);
    if (!last) {
        last = apr_palloc(srv->pool, sizeof *last);
        apr_hash_set(srv->gen_numbers, apr_pstrdup(srv->pool, mc->name), APR_HASH_KEY_STRING, last);
    }
    *last = number;
    *(mph_generation **)apr_array_push(srv->gens) = g;
    *(mph_generation **)apr_array_push(rt->gens) = g;
    apr_thread_mutex_unlock(srv->mutex);
    mph_log(NULL, MP_LOG_NOTICE, 10202, "module %s generation %u loaded from %s (%s)", g->name, g->number,
            g->file, g->module->version ? g->module->version : "no version");
    return NULL;
}

/* The TLS context for a listener: one per distinct certificate and key within a runtime. */
static const char *rt_tls(mph_runtime *rt, mph_listen_rt *lrt, apr_hash_t *cache)
{
    const mph_listen_conf *lc = lrt->conf;
    const char *cert = lc->cert_file ? lc->cert_file : rt->conf->cert_file;
    const char *key = lc->key_file ? lc->key_file : rt->conf->key_file;
    if (lc->tls == MP_TLS_OFF || !cert || !key)
        return NULL;
    const char *k = apr_pstrcat(rt->pool, cert, "\n", key, NULL);
    SSL_CTX *ctx = apr_hash_get(cache, k, APR_HASH_KEY_STRING);
    if (!ctx) {
        const char *err = mph_tls_context(rt->pool, cert, key, &ctx);
        if (err) {
            /* at the directive that named the file the error is about (its message starts with it) */
            int about_key = strncmp(err, key, strlen(key)) == 0;
            int line = about_key ? (lc->key_file ? lc->key_line : rt->conf->key_line)
                                 : (lc->cert_file ? lc->cert_line : rt->conf->cert_line);
            return apr_psprintf(rt->pool, "%s:%d: %s", rt->conf->file, line ? line : lc->line, err);
        }
        apr_hash_set(cache, k, APR_HASH_KEY_STRING, ctx);
        *(SSL_CTX **)apr_array_push(rt->tls_ctxs) = ctx;
    }
    lrt->tls = ctx;
    return NULL;
}

const char *mph_copy_dir(apr_pool_t *pool, const char *state_dir, long uid)
{
    return apr_psprintf(pool, "%s/modules.%ld", state_dir, uid);
}

const char *mph_copy_dir_give(apr_pool_t *pool, const char *state_dir, long uid, long gid)
{
    /* never through a path the user could have swapped for a link: the descriptor, not the name */
    const char *dir = mph_copy_dir(pool, state_dir, uid);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return apr_psprintf(pool, "cannot create %s: %s", dir, strerror(errno));
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    const char *err = NULL;
    if (fd < 0 || fstat(fd, &st) != 0)
        err = strerror(errno);
    else if (st.st_uid != 0 && (long)st.st_uid != uid)
        err = "owned by another user";
    else if (fchown(fd, (uid_t)uid, (gid_t)gid) != 0 || fchmod(fd, 0700) != 0)
        err = strerror(errno);
    if (fd >= 0)
        close(fd);
    return err ? apr_psprintf(pool, "cannot give %s to uid %ld: %s", dir, uid, err) : NULL;
}

const char *mph_runtime_load(mph_server *srv, int check_only, mph_runtime **rt_r)
{
    const char *file = srv->conf_file;
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    apr_pool_tag(pool, "mph_runtime");
    mph_runtime *rt = apr_pcalloc(pool, sizeof *rt);
    rt->pool = pool;
    rt->refs = 1;
    rt->gens = apr_array_make(pool, 8, sizeof(mph_generation *));
    rt->listens = apr_array_make(pool, 8, sizeof(mph_listen_rt));
    rt->tls_ctxs = apr_array_make(pool, 2, sizeof(SSL_CTX *));
    rt->instances = apr_hash_make(pool);
    apr_pool_create(&rt->inst_pool, pool);
    apr_thread_mutex_create(&rt->inst_mutex, APR_THREAD_MUTEX_DEFAULT, pool);

    const char *err = srv->conf_text ? mph_conf_parse_string(pool, file, srv->conf_dir, srv->conf_text, &rt->conf)
                                     : mph_conf_parse(pool, file, &rt->conf);
    if (err) {
        err = apr_pstrdup(srv->pool, err);
        apr_pool_destroy(pool);
        return err;
    }
    const char *copy_dir;
    int temporary = check_only || (srv->embedded && !apr_table_get(rt->conf->values, "StateDir"));
    if (temporary) {
        /* A check, or inside another server (running as its user: the configuration's folder may not be
           writable): a fresh folder of the temporary directory's, which nobody can have made for us. */
        const char *tmp;
        apr_temp_dir_get(&tmp, pool);
        char *tmpl = apr_psprintf(pool, "%s/mailproto-modules.%ld.XXXXXX", tmp, (long)geteuid());
        if (!mkdtemp(tmpl)) {
            err = apr_psprintf(pool, "%s: cannot create a folder in %s: %s", file, tmp, strerror(errno));
            goto fail;
        }
        copy_dir = tmpl;
    } else {
        /* one folder per user: after `User`, reloads copy into the one root made for that user at the
           switch, and root never loads code from a folder another user could write to */
        copy_dir = mph_copy_dir(pool, rt->conf->state_dir, (long)geteuid());
    }
    apr_status_t rv = apr_dir_make_recursive(copy_dir, APR_FPROT_UREAD | APR_FPROT_UWRITE | APR_FPROT_UEXECUTE, pool);
    if (rv != APR_SUCCESS) {
        char buf[128];
        err = apr_psprintf(pool, "%s: cannot create %s: %s", file, copy_dir, apr_strerror(rv, buf, sizeof buf));
        goto fail;
    }
    /* Code is loaded from here: it must be ours alone, not a folder someone else made for us. */
    struct stat st;
    if (lstat(copy_dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022)) {
        err = apr_psprintf(pool, "%s: %s must be a folder owned by this user and writable by it alone", file,
                           copy_dir);
        goto fail;
    }
    for (int i = 0; i < rt->conf->modules->nelts && !err; i++)
        err = rt_add_module(srv, rt, &APR_ARRAY_IDX(rt->conf->modules, i, mph_module_conf), copy_dir);
    if (temporary)
        apr_dir_remove(copy_dir, pool); /* the copies are gone once loaded */
    if (err)
        goto fail;
    mph_conf_modules mods = {.ctx = rt, .find_directive = find_directive, .is_protocol = is_protocol};
    if ((err = mph_conf_resolve(rt->conf, &mods)) != NULL)
        goto fail;

    apr_hash_t *tls_cache = apr_hash_make(pool);
    for (int i = 0; i < rt->conf->listeners->nelts; i++) {
        mph_listen_conf *lc = APR_ARRAY_IDX(rt->conf->listeners, i, mph_listen_conf *);
        mph_listen_rt *lrt = apr_array_push(rt->listens);
        memset(lrt, 0, sizeof *lrt);
        lrt->conf = lc;
        lrt->gen = rt_gen(rt, lc->protocol);
        lrt->info.address = lc->address;
        lrt->info.protocol = lc->protocol;
        lrt->info.tls = lc->tls;
        lrt->info.port = lc->port;
        if ((err = rt_tls(rt, lrt, tls_cache)) != NULL)
            goto fail;
    }
    *rt_r = rt;
    return NULL;

fail:
    err = apr_pstrdup(srv->pool, err);
    rt_free(srv, rt);
    return err;
}

/* ---------------------------------------------------------------- listeners */

static int same_address(const mph_listener *l, const mph_listen_conf *lc)
{
    return l->port == lc->port && l->family == lc->family &&
           ((!l->host && !lc->host) || (l->host && lc->host && strcmp(l->host, lc->host) == 0));
}

static const char *listener_open(mph_server *srv, const mph_conf *conf, const mph_listen_conf *lc,
                                 mph_listener **l_r)
{
    apr_pool_t *pool;
    apr_pool_create(&pool, srv->pool);
    mph_listener *l = apr_pcalloc(pool, sizeof *l);
    l->pool = pool;
    l->address = apr_pstrdup(pool, lc->address);
    l->family = lc->family;
    l->host = lc->host ? apr_pstrdup(pool, lc->host) : NULL;
    l->port = lc->port;
    l->refs = 1;
    l->per_client = apr_hash_make(pool);
    apr_thread_mutex_create(&l->mutex, APR_THREAD_MUTEX_DEFAULT, pool);

    if (srv->embedded) { /* the embedding server owns the sockets: this only carries the counters */
        *l_r = l;
        return NULL;
    }
    apr_sockaddr_t *sa;
    apr_status_t rv;
    char buf[128];
    const char *what = "resolve";
    if ((rv = apr_sockaddr_info_get(&sa, l->host, l->family, l->port, 0, pool)) != APR_SUCCESS)
        goto fail;
    what = "create a socket for";
    if ((rv = apr_socket_create(&l->sock, sa->family, SOCK_STREAM, APR_PROTO_TCP, pool)) != APR_SUCCESS)
        goto fail;
    apr_socket_opt_set(l->sock, APR_SO_REUSEADDR, 1);
    if (sa->family == APR_INET6 && l->host)
        apr_socket_opt_set(l->sock, APR_IPV6_V6ONLY, 1);
    what = "bind";
    if ((rv = apr_socket_bind(l->sock, sa)) != APR_SUCCESS)
        goto fail;
    what = "listen on";
    if ((rv = apr_socket_listen(l->sock, 511)) != APR_SUCCESS)
        goto fail;
    apr_socket_opt_set(l->sock, APR_SO_NONBLOCK, 1);
    apr_socket_timeout_set(l->sock, 0);
    *l_r = l;
    return NULL;
fail:
    apr_pool_destroy(pool);
    return apr_psprintf(srv->pool, "%s:%d: cannot %s %s: %s", conf->file, lc->line, what, lc->address,
                        apr_strerror(rv, buf, sizeof buf));
}

void mph_listener_release(mph_listener *l)
{
    if (apr_atomic_dec32(&l->refs) == 0)
        apr_pool_destroy(l->pool);
}

static void listener_watch(mph_server *srv, mph_listener *l, int on)
{
    apr_pollfd_t pfd = {.p = l->pool, .desc_type = APR_POLL_SOCKET, .reqevents = APR_POLLIN, .desc.s = l->sock,
                        .client_data = l};
    if (on)
        apr_pollset_add(srv->pollset, &pfd);
    else
        apr_pollset_remove(srv->pollset, &pfd);
}

static void listener_close(mph_server *srv, mph_listener *l)
{
    if (srv->pollset)
        listener_watch(srv, l, 0);
    if (l->sock)
        apr_socket_close(l->sock);
    l->sock = NULL;
    l->in_current = 0;
    mph_log(NULL, MP_LOG_NOTICE, 10203, srv->embedded ? "endpoint %s removed" : "stopped listening on %s",
            l->address);
    mph_listener_release(l);
}

const char *mph_runtime_activate(mph_server *srv, mph_runtime *rt)
{
    apr_array_header_t *opened = apr_array_make(rt->pool, 4, sizeof(mph_listener *));
    for (int i = 0; i < rt->listens->nelts; i++) {
        mph_listen_rt *lrt = &APR_ARRAY_IDX(rt->listens, i, mph_listen_rt);
        for (int j = 0; j < srv->listeners->nelts && !lrt->listener; j++) {
            mph_listener *l = APR_ARRAY_IDX(srv->listeners, j, mph_listener *);
            if (same_address(l, lrt->conf))
                lrt->listener = l;
        }
        if (lrt->listener)
            continue;
        const char *err = listener_open(srv, rt->conf, lrt->conf, &lrt->listener);
        if (err) {
            for (int j = 0; j < opened->nelts; j++) {
                mph_listener *l = APR_ARRAY_IDX(opened, j, mph_listener *);
                if (l->sock)
                    apr_socket_close(l->sock);
                mph_listener_release(l);
            }
            for (int j = 0; j < rt->listens->nelts; j++)
                APR_ARRAY_IDX(rt->listens, j, mph_listen_rt).listener = NULL;
            return err;
        }
        *(mph_listener **)apr_array_push(opened) = lrt->listener;
    }
    /* Committed: nothing below can fail. */
    apr_array_header_t *keep = apr_array_make(srv->pool, rt->listens->nelts, sizeof(mph_listener *));
    for (int j = 0; j < srv->listeners->nelts; j++) {
        mph_listener *l = APR_ARRAY_IDX(srv->listeners, j, mph_listener *);
        int used = 0;
        for (int i = 0; i < rt->listens->nelts; i++)
            used |= APR_ARRAY_IDX(rt->listens, i, mph_listen_rt).listener == l;
        if (used)
            *(mph_listener **)apr_array_push(keep) = l;
        else
            listener_close(srv, l);
    }
    for (int j = 0; j < opened->nelts; j++) {
        mph_listener *l = APR_ARRAY_IDX(opened, j, mph_listener *);
        *(mph_listener **)apr_array_push(keep) = l;
        if (srv->pollset)
            listener_watch(srv, l, 1);
        mph_log(NULL, MP_LOG_NOTICE, 10204, srv->embedded ? "endpoint %s" : "listening on %s", l->address);
    }
    srv->listeners = keep;
    for (int i = 0; i < rt->listens->nelts; i++) {
        mph_listen_rt *lrt = &APR_ARRAY_IDX(rt->listens, i, mph_listen_rt);
        lrt->listener->in_current = 1;
        mph_log(NULL, MP_LOG_INFO, 10205, "%s: protocol %s (module generation %u), TLS %s", lrt->info.address,
                lrt->info.protocol, lrt->gen->number,
                (const char *[]){"off", "starttls", "required", "implicit"}[lrt->info.tls]);
    }
    apr_thread_mutex_lock(srv->mutex);
    mph_runtime *old = srv->current;
    rt->number = ++srv->runtime_number;
    srv->current = rt;
    apr_thread_mutex_unlock(srv->mutex);
    if (old)
        mph_runtime_release(srv, old);
    return NULL;
}

mph_listen_rt *mph_runtime_listen(mph_runtime *rt, const char *address)
{
    for (int i = 0; i < rt->listens->nelts; i++) {
        mph_listen_rt *lrt = &APR_ARRAY_IDX(rt->listens, i, mph_listen_rt);
        if (strcmp(lrt->info.address, address) == 0)
            return lrt;
    }
    return NULL;
}

void mph_listeners_watch_all(mph_server *srv)
{
    for (int j = 0; j < srv->listeners->nelts; j++)
        listener_watch(srv, APR_ARRAY_IDX(srv->listeners, j, mph_listener *), 1);
}

void mph_listeners_close_all(mph_server *srv)
{
    for (int j = 0; j < srv->listeners->nelts; j++)
        listener_close(srv, APR_ARRAY_IDX(srv->listeners, j, mph_listener *));
    apr_array_clear(srv->listeners);
}

/* ---------------------------------------------------------------- status */

static const char *json_str(apr_pool_t *p, const char *s)
{
    apr_size_t n = 0;
    for (const char *q = s; *q; q++)
        n += (*q == '"' || *q == '\\') ? 2 : ((unsigned char)*q < 0x20 ? 6 : 1);
    char *out = apr_palloc(p, n + 3), *o = out;
    *o++ = '"';
    for (const char *q = s; *q; q++) {
        if (*q == '"' || *q == '\\') {
            *o++ = '\\';
            *o++ = *q;
        } else if ((unsigned char)*q < 0x20) {
            o += apr_snprintf(o, 7, "\\u%04x", (unsigned char)*q);
        } else {
            *o++ = *q;
        }
    }
    *o++ = '"';
    *o = 0;
    return out;
}

char *mph_status_json(mph_server *srv, apr_pool_t *p)
{
    static const char *const tls[] = {"off", "starttls", "required", "implicit"};
    apr_thread_mutex_lock(srv->mutex);
    mph_runtime *rt = srv->current;
    char *out = apr_psprintf(p, "{\"pid\": %ld, \"configuration\": %u, \"sessions\": %u, \"listeners\": [",
                             (long)getpid(), rt ? rt->number : 0, mph_loops_sessions(srv));
    for (int i = 0; rt && i < rt->listens->nelts; i++) {
        mph_listen_rt *lrt = &APR_ARRAY_IDX(rt->listens, i, mph_listen_rt);
        out = apr_psprintf(p, "%s%s{\"address\": %s, \"protocol\": %s, \"tls\": \"%s\", \"sessions\": %u}", out,
                           i ? ", " : "", json_str(p, lrt->info.address), json_str(p, lrt->info.protocol),
                           tls[lrt->info.tls], apr_atomic_read32(&lrt->listener->sessions));
    }
    out = apr_pstrcat(p, out, "], \"modules\": [", NULL);
    for (int i = 0; i < srv->gens->nelts; i++) {
        mph_generation *g = APR_ARRAY_IDX(srv->gens, i, mph_generation *);
        out = apr_psprintf(p, "%s%s{\"name\": %s, \"generation\": %u, \"file\": %s, \"version\": %s, "
                              "\"sessions\": %u, \"current\": %s}",
                           out, i ? ", " : "", json_str(p, g->name), g->number, json_str(p, g->file),
                           json_str(p, g->module->version ? g->module->version : ""),
                           apr_atomic_read32(&g->sessions), rt && rt_gen(rt, g->name) == g ? "true" : "false");
    }
    apr_thread_mutex_unlock(srv->mutex);
    return apr_pstrcat(p, out, "]}\n", NULL);
}

/*
 * The main thread of mailprotod: load the configuration, bind, drop privileges, start the loops and the
 * workers, then accept connections and serve the control socket until told to stop.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <apr_atomic.h>
#include <apr_file_io.h>
#include <apr_portable.h>
#include <apr_strings.h>
#include <openssl/ssl.h>

#include "log.h"
#include "server.h"

mph_server *mph_server_create(apr_pool_t *pool, const char *conf_file)
{
    mph_server *srv = apr_pcalloc(pool, sizeof *srv);
    srv->pool = pool;
    srv->conf_file = conf_file;
    srv->control_fd = -1;
    srv->listeners = apr_array_make(pool, 8, sizeof(mph_listener *));
    srv->gens = apr_array_make(pool, 8, sizeof(mph_generation *));
    srv->gen_numbers = apr_hash_make(pool);
    apr_thread_mutex_create(&srv->mutex, APR_THREAD_MUTEX_DEFAULT, pool);
    mph_the_server = srv;
    return srv;
}

const char *mph_server_check(mph_server *srv)
{
    mph_runtime *rt;
    const char *err = mph_runtime_load(srv, 1, &rt);
    if (!err)
        mph_runtime_discard(srv, rt);
    return err;
}

/* ---------------------------------------------------------------- signals */

static sigset_t handled_signals;

static void *APR_THREAD_FUNC signal_main(apr_thread_t *thread, void *data)
{
    mph_server *srv = data;
    for (;;) {
        int sig;
        if (sigwait(&handled_signals, &sig) != 0)
            continue;
        if (sig == SIGHUP)
            srv->reload_requested = 1;
        else
            srv->stop_requested = 1;
        apr_pollset_wakeup(srv->pollset);
        if (sig != SIGHUP)
            break;
    }
    return NULL;
}

/* ---------------------------------------------------------------- privileges */

static const char *drop_privileges(mph_server *srv, const mph_conf *conf)
{
    if (!conf->user)
        return NULL;
    if (geteuid() != 0) {
        mph_log(NULL, MP_LOG_NOTICE, 10401, "not started as root: User %s ignored", conf->user);
        return NULL;
    }
    struct passwd *pw = getpwnam(conf->user);
    if (!pw)
        return apr_psprintf(srv->pool, "%s: User %s: no such user", conf->file, conf->user);
    /* StateDir stays root's (its pid file and control socket are written by root at the next start); the
       user gets its own folder for module copies of later reloads, never a path it could swap for a link. */
    const char *err = mph_copy_dir_give(srv->pool, conf->state_dir, (long)pw->pw_uid, (long)pw->pw_gid);
    if (err)
        return apr_psprintf(srv->pool, "%s: User %s: %s", conf->file, conf->user, err);
    if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
        return apr_psprintf(srv->pool, "cannot switch to user %s: %s", conf->user, strerror(errno));
    if (setuid(0) == 0)
        return "dropping privileges did not stick";
    srv->privileges_dropped = 1;
    mph_log(NULL, MP_LOG_NOTICE, 10402, "running as user %s (uid %ld)", conf->user, (long)pw->pw_uid);
    return NULL;
}

/* ---------------------------------------------------------------- pid file */

static const char *write_pid_file(mph_server *srv, const mph_conf *conf)
{
    srv->pid_path = apr_pstrcat(srv->pool, conf->state_dir, "/mailprotod.pid", NULL);
    FILE *f = fopen(srv->pid_path, "r");
    if (f) {
        long pid = 0;
        if (fscanf(f, "%ld", &pid) == 1 && pid > 0 && pid != getpid() && kill((pid_t)pid, 0) == 0) {
            fclose(f);
            return apr_psprintf(srv->pool, "%s: another mailprotod (pid %ld) runs with this StateDir",
                                srv->pid_path, pid);
        }
        fclose(f);
    }
    /* never through a link someone planted in StateDir */
    int fd = open(srv->pid_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return apr_psprintf(srv->pool, "%s: cannot write: %s", srv->pid_path, strerror(e));
    }
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
    return NULL;
}

/* ---------------------------------------------------------------- accepting */

/* Limits are decided where every new session passes, so they hold under a burst. */
int mph_admit(mph_runtime *rt, mph_listen_rt *lrt, const char *ip)
{
    mph_listener *l = lrt->listener;
    int refuse = 0;
    apr_thread_mutex_lock(l->mutex);
    mph_client_count *cc = apr_hash_get(l->per_client, ip, APR_HASH_KEY_STRING);
    if (apr_atomic_read32(&l->sessions) >= (apr_uint32_t)lrt->conf->max_connections ||
        (cc && cc->n >= (unsigned)lrt->conf->max_per_client)) {
        refuse = 1;
    } else {
        if (!cc) {
            if (!(cc = calloc(1, sizeof *cc)))
                abort();
            apr_cpystrn(cc->ip, ip, sizeof cc->ip);
            apr_hash_set(l->per_client, cc->ip, APR_HASH_KEY_STRING, cc);
        }
        cc->n++;
        apr_atomic_inc32(&l->sessions);
        for (int g = 0; g < rt->gens->nelts; g++)
            apr_atomic_inc32(&APR_ARRAY_IDX(rt->gens, g, mph_generation *)->sessions);
    }
    apr_thread_mutex_unlock(l->mutex);
    apr_atomic_inc32(&l->refs);
    return refuse;
}

static void accept_on(mph_server *srv, mph_listener *l)
{
    for (int i = 0; i < 64; i++) {
        if (!l->sock)
            return;
        apr_pool_t *pool;
        apr_socket_t *sock;
        apr_pool_create(&pool, NULL);
        apr_pool_tag(pool, "mph_conn");
        apr_status_t rv = apr_socket_accept(&sock, l->sock, pool);
        if (rv != APR_SUCCESS) {
            apr_pool_destroy(pool);
            if (!APR_STATUS_IS_EAGAIN(rv) && !APR_STATUS_IS_ECONNABORTED(rv)) {
                char buf[128];
                mph_log(NULL, MP_LOG_ERROR, 10403, "accept on %s: %s", l->address, apr_strerror(rv, buf, sizeof buf));
            }
            return;
        }
        apr_socket_opt_set(sock, APR_SO_NONBLOCK, 1);
        apr_socket_timeout_set(sock, 0);
        apr_socket_opt_set(sock, APR_TCP_NODELAY, 1);

        mph_runtime *rt = mph_runtime_acquire(srv);
        mph_listen_rt *lrt = NULL;
        for (int j = 0; j < rt->listens->nelts; j++)
            if (APR_ARRAY_IDX(rt->listens, j, mph_listen_rt).listener == l)
                lrt = &APR_ARRAY_IDX(rt->listens, j, mph_listen_rt);
        if (!lrt) { /* closed by a reload a moment ago */
            mph_runtime_release(srv, rt);
            apr_socket_close(sock);
            apr_pool_destroy(pool);
            continue;
        }
        apr_sockaddr_t *sa;
        char *ip = "";
        if (apr_socket_addr_get(&sa, APR_REMOTE, sock) == APR_SUCCESS)
            apr_sockaddr_ip_get(&ip, sa);
        int refuse = mph_admit(rt, lrt, ip);
        mph_loop *loop = &srv->loops[srv->next_loop++ % srv->nloops];
        mph_loop_post_conn(loop, sock, pool, rt, lrt, refuse);
    }
}

const char *mph_server_reload(mph_server *srv, const char *why)
{
    mph_runtime *rt;
    mph_log(NULL, MP_LOG_NOTICE, 10404, "reload requested %s", why);
    const char *err = mph_runtime_load(srv, 0, &rt);
    /* The pid file and the control socket stay where they are: `-s` would look for them in the new folder. */
    if (!err && srv->current && strcmp(rt->conf->state_dir, srv->current->conf->state_dir) != 0) {
        err = apr_psprintf(srv->pool, "%s: StateDir cannot change on a reload (it is %s): restart the server",
                           rt->conf->file, srv->current->conf->state_dir);
        mph_runtime_discard(srv, rt);
    } else if (!err && (err = mph_runtime_activate(srv, rt)) != NULL) {
        mph_runtime_discard(srv, rt);
    }
    if (err)
        mph_log(NULL, MP_LOG_ERROR, 10405, "reload refused, the running configuration stays: %s", err);
    else
        mph_log(NULL, MP_LOG_NOTICE, 10406, "reloaded: configuration %u", srv->current->number);
    return err;
}

static unsigned default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 && n < 64 ? (unsigned)n : 2;
}

int mph_server_run(mph_server *srv)
{
    mph_runtime *rt;
    const char *err;
    apr_status_t rv;

    signal(SIGPIPE, SIG_IGN);
    /* Every session is a descriptor: take all the kernel allows (10,000 idle sessions is a goal). */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    sigemptyset(&handled_signals);
    sigaddset(&handled_signals, SIGHUP);
    sigaddset(&handled_signals, SIGTERM);
    sigaddset(&handled_signals, SIGINT);
    /* Every thread started from here on inherits the mask; only the signal thread takes them. */
    pthread_sigmask(SIG_BLOCK, &handled_signals, NULL);

    if ((err = mph_runtime_load(srv, 0, &rt)) != NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    mp_log_level level;
    if (rt->conf->log_level && mph_log_level_parse(rt->conf->log_level, &level) == 0)
        mph_log_set_level(level);
    if ((err = write_pid_file(srv, rt->conf)) != NULL || (err = mph_runtime_activate(srv, rt)) != NULL) {
        fprintf(stderr, "%s\n", err);
        mph_runtime_discard(srv, rt);
        return 1;
    }
    if (mph_control_listen(srv, rt->conf->state_dir, &err) < 0 || (err = drop_privileges(srv, rt->conf)) != NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if ((rv = apr_pollset_create(&srv->pollset, 64, srv->pool, APR_POLLSET_WAKEABLE)) != APR_SUCCESS) {
        fprintf(stderr, "mailprotod: cannot create a pollset\n");
        return 1;
    }
    mph_listeners_watch_all(srv);
    apr_socket_t *control_sock = NULL;
    apr_os_sock_put(&control_sock, &srv->control_fd, srv->pool);
    apr_pollfd_t cpfd = {.p = srv->pool, .desc_type = APR_POLL_SOCKET, .reqevents = APR_POLLIN,
                         .desc.s = control_sock, .client_data = NULL};
    apr_pollset_add(srv->pollset, &cpfd);

    unsigned threads = rt->conf->threads > 0 ? (unsigned)rt->conf->threads : default_threads();
    unsigned workers = rt->conf->workers > 0 ? (unsigned)rt->conf->workers : 4;
    /* All workers from the start and kept while idle: no thread is created per job. */
    rv = mph_workers_start(&srv->workers, workers, srv->pool);
    if (rv != APR_SUCCESS ||
        (rv = mph_loops_start(srv, threads)) != APR_SUCCESS) {
        fprintf(stderr, "mailprotod: cannot start threads\n");
        return 1;
    }
    apr_thread_t *sig_thread;
    apr_thread_create(&sig_thread, NULL, signal_main, srv, srv->pool);
    apr_thread_detach(sig_thread);
    mph_log(NULL, MP_LOG_NOTICE, 10407, "mailprotod started: %d listeners, %u event loops, %u workers, pid %ld",
            srv->listeners->nelts, threads, workers, (long)getpid());

    while (!srv->stop_requested) {
        apr_int32_t n = 0;
        const apr_pollfd_t *descs;
        if (apr_pollset_poll(srv->pollset, apr_time_from_sec(1), &n, &descs) == APR_SUCCESS) {
            int control = 0;
            for (apr_int32_t i = 0; i < n; i++) {
                if (descs[i].client_data)
                    accept_on(srv, descs[i].client_data);
                else
                    control = 1;
            }
            /* After the accepts: a reload it runs may close and free a listener that this round's
               results still point to. */
            if (control)
                mph_control_serve(srv);
        }
        if (srv->reload_requested) {
            srv->reload_requested = 0;
            mph_server_reload(srv, "by signal");
        }
    }

    /* Graceful stop: no new sessions, a goodbye to each open one, a bounded wait. */
    srv->stopping = 1;
    mph_listeners_close_all(srv);
    unsigned open = mph_loops_sessions(srv);
    mph_log(NULL, MP_LOG_NOTICE, 10408, "stopping: %u sessions open", open);
    mph_loops_shutdown(srv);
    apr_time_t until = apr_time_now() + srv->current->conf->shutdown_timeout;
    while (mph_loops_sessions(srv) > 0 && apr_time_now() < until) {
        apr_int32_t n;
        const apr_pollfd_t *descs;
        apr_pollset_poll(srv->pollset, apr_time_from_msec(50), &n, &descs);
    }
    if ((open = mph_loops_sessions(srv)) > 0)
        mph_log(NULL, MP_LOG_WARN, 10409, "stop: cutting off %u sessions after ShutdownTimeout", open);
    mph_loops_join(srv);
    mph_workers_stop(srv->workers);
    apr_thread_mutex_lock(srv->mutex);
    rt = srv->current;
    srv->current = NULL;
    apr_thread_mutex_unlock(srv->mutex);
    mph_runtime_release(srv, rt);
    if (srv->pid_path)
        unlink(srv->pid_path);
    if (srv->control_path)
        unlink(srv->control_path);
    mph_log(NULL, MP_LOG_NOTICE, 10410, "mailprotod stopped");
    return 0;
}

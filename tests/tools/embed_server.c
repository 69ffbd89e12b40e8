/*
 * A minimal "existing APR server" for the embedding API's tests: it owns its listening socket and accept
 * loop, and hands each connection to mailproto with mp_embed_serve() on a thread of its own.
 *
 *   embed_server CONFIG_FILE ENDPOINT PORT     (serves 127.0.0.1:PORT as ENDPOINT until SIGTERM)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_network_io.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>

#include <mailproto/embed.h>

static mp_embed *embed;
static const char *endpoint;
static volatile sig_atomic_t stop;

static void on_term(int sig) { stop = 1; }

typedef struct job {
    apr_pool_t *pool;
    apr_socket_t *sock;
} job;

static void *APR_THREAD_FUNC serve_job(apr_thread_t *t, void *data)
{
    job *j = data;
    apr_status_t rv = mp_embed_serve(embed, endpoint, j->sock, j->pool);
    if (rv != APR_SUCCESS)
        fprintf(stderr, "embed_server: mp_embed_serve: %d\n", rv);
    /* The socket is ours again: the embedding server closes it. */
    apr_socket_close(j->sock);
    apr_pool_destroy(j->pool);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: embed_server CONFIG_FILE ENDPOINT PORT\n");
        return 2;
    }
    apr_initialize();
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    char *text;
    apr_file_t *f;
    apr_finfo_t fi;
    if (apr_file_open(&f, argv[1], APR_FOPEN_READ, 0, pool) != APR_SUCCESS ||
        apr_file_info_get(&fi, APR_FINFO_SIZE, f) != APR_SUCCESS) {
        fprintf(stderr, "embed_server: cannot read %s\n", argv[1]);
        return 1;
    }
    text = apr_pcalloc(pool, (apr_size_t)fi.size + 1);
    apr_size_t n = (apr_size_t)fi.size;
    apr_file_read_full(f, text, n, &n);
    apr_file_close(f);
    char *dir = apr_pstrdup(pool, argv[1]);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        dir = ".";
    const char *err = mp_embed_create(pool, argv[1], dir, text, &embed);
    if (err) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    endpoint = argv[2];
    if (!mp_embed_has_endpoint(embed, endpoint)) {
        fprintf(stderr, "embed_server: no <Listen %s> in %s\n", endpoint, argv[1]);
        return 1;
    }
    apr_sockaddr_t *sa;
    apr_socket_t *ls;
    if (apr_sockaddr_info_get(&sa, "127.0.0.1", APR_INET, (apr_port_t)atoi(argv[3]), 0, pool) != APR_SUCCESS ||
        apr_socket_create(&ls, APR_INET, SOCK_STREAM, APR_PROTO_TCP, pool) != APR_SUCCESS ||
        apr_socket_opt_set(ls, APR_SO_REUSEADDR, 1) != APR_SUCCESS || apr_socket_bind(ls, sa) != APR_SUCCESS ||
        apr_socket_listen(ls, 64) != APR_SUCCESS) {
        fprintf(stderr, "embed_server: cannot listen on port %s\n", argv[3]);
        return 1;
    }
    signal(SIGTERM, on_term);
    signal(SIGPIPE, SIG_IGN);
    apr_socket_timeout_set(ls, apr_time_from_msec(200));
    fprintf(stderr, "embed_server: ready\n");
    while (!stop) {
        apr_pool_t *cp;
        apr_pool_create(&cp, NULL);
        job *j = apr_pcalloc(cp, sizeof *j);
        j->pool = cp;
        if (apr_socket_accept(&j->sock, ls, cp) != APR_SUCCESS) {
            apr_pool_destroy(cp);
            continue;
        }
        /* Like httpd's workers: the accepted socket has a blocking timeout set by its owner. */
        apr_socket_timeout_set(j->sock, apr_time_from_sec(30));
        apr_thread_t *t;
        apr_threadattr_t *attr;
        apr_threadattr_create(&attr, cp);
        apr_threadattr_detach_set(attr, 1);
        apr_thread_create(&t, attr, serve_job, j, cp);
    }
    mp_embed_destroy(embed);
    apr_socket_close(ls);
    apr_pool_destroy(pool);
    apr_terminate();
    return 0;
}

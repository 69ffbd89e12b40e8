/*
 * The mailprotod runtime (host internal): the server, its event loops, listeners, configuration
 * snapshots ("runtimes") and connections.
 *
 * Threads: the main thread owns the listeners, the control socket, reload and stop. Each event loop thread
 * owns the connections handed to it; everything about one connection happens on its loop's thread. A
 * worker pool runs blocking jobs and posts their completion back to the connection's loop.
 */
#ifndef MPH_SERVER_H
#define MPH_SERVER_H

#include <apr_hash.h>
#include <apr_network_io.h>
#include <apr_poll.h>
#include <apr_ring.h>
#include <apr_skiplist.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>
#include <openssl/ssl.h>

#include <mailproto/host.h>
#include "config.h"
#include "loader.h"
#include "workers.h"

typedef struct mph_server mph_server;
typedef struct mph_loop mph_loop;
typedef struct mph_conn mph_conn;

/* Open sessions of one client address on one listener (MaxConnectionsPerClient). */
typedef struct mph_client_count {
    unsigned n;
    char ip[64]; /* the hash key */
} mph_client_count;

/* A bound listening socket. It outlives configuration snapshots while its address stays configured. */
typedef struct mph_listener {
    const char *address;          /* "127.0.0.1:25" */
    int family;
    const char *host;
    apr_port_t port;
    apr_socket_t *sock;           /* NULL once closed */
    apr_pool_t *pool;
    volatile apr_uint32_t refs;   /* the server's list + one per open session */
    volatile apr_uint32_t sessions;
    apr_thread_mutex_t *mutex;    /* guards per_client */
    apr_hash_t *per_client;       /* peer address -> mph_client_count */
    int in_current;               /* still in the current configuration */
} mph_listener;

/* What one listener is in one configuration snapshot. */
typedef struct mph_listen_rt {
    mph_listener *listener;
    const mph_listen_conf *conf;
    mp_listener_info info;
    const mph_generation *gen;    /* the protocol module */
    SSL_CTX *tls;                 /* NULL: no TLS possible */
} mph_listen_rt;

/* A configuration snapshot: what new sessions bind to. Sessions keep theirs until they end. */
typedef struct mph_runtime {
    apr_pool_t *pool;
    mph_conf *conf;
    unsigned number;
    volatile apr_uint32_t refs;   /* 1 while current + one per session */
    apr_array_header_t *gens;     /* mph_generation * */
    apr_array_header_t *listens;  /* mph_listen_rt */
    apr_array_header_t *tls_ctxs; /* SSL_CTX * to free */
    apr_thread_mutex_t *inst_mutex; /* guards instances and inst_pool */
    apr_pool_t *inst_pool;        /* provider instances: destroyed before the generations are released */
    apr_hash_t *instances;        /* "kind|directive value" -> instance */
} mph_runtime;

typedef enum mph_conn_state {
    MPH_CONN_HANDSHAKE = 1, /* implicit TLS or STARTTLS handshake in progress */
    MPH_CONN_OPEN,          /* the handler has the session */
    MPH_CONN_CLOSING,       /* sending the last output */
    MPH_CONN_LINGER         /* write side shut; reading and dropping until EOF or a deadline */
} mph_conn_state;

typedef struct mph_outbuf mph_outbuf;

struct mph_conn {
    APR_RING_ENTRY(mph_conn) link;   /* in its loop's activity list, oldest first */
    mp_session session;
    mph_loop *loop;
    mph_runtime *rt;
    mph_listen_rt *lrt;
    const mp_protocol *proto;
    apr_socket_t *sock;
    int fd;
    apr_pollfd_t pfd;
    apr_int16_t events;              /* what pfd is registered for, 0 when not in the pollset */
    SSL *ssl;
    mph_conn_state state;
    apr_time_t last_active;
    apr_time_t linger_until;
    char *in;                        /* allocated on demand, freed when empty */
    size_t in_len, in_cap;
    mph_outbuf *out_head, *out_tail;
    size_t out_len;
    unsigned errors;
    int ssl_want_write;              /* the TLS layer needs the socket writable to go on */
    int peer_gone;
    int connected;                   /* on_connect was called: on_close is owed */
    int refused;                     /* over a connection limit: not counted in the listener's sessions */
    int borrowed;                    /* the socket is the embedding server's: left open at the end */
    apr_interval_time_t saved_timeout;
    int goodbye_said;
    int session_ended;               /* on_close called and the session counts released */
    mp_close_reason close_reason;
    int tls_requested;               /* start_tls() during this callback */
    int close_requested;
    int want_writable;
    int job_pending;
    mp_goodbye bye;                  /* a goodbye to give after the current callback */
    int in_callback;
    int tls_draining;                /* conn_pump is reading what OpenSSL already holds (no recursion) */
    volatile apr_uint32_t wakeups;   /* a wakeup message is queued for this connection */
    int destroyed;
    APR_RING_HEAD(mph_timer_ring, mp_timer) timers;
    char peer_text[64];
    char local_text[64];
};

typedef struct mph_msg mph_msg;

struct mph_loop {
    mph_server *server;
    unsigned index;
    apr_pool_t *pool;
    apr_pollset_t *pollset;
    apr_thread_t *thread;
    apr_thread_mutex_t *mutex;       /* guards msgs */
    mph_msg *msgs, *msgs_tail;
    APR_RING_HEAD(mph_conn_ring, mph_conn) conns;
    apr_skiplist *timers;
    unsigned long timer_seq;
    volatile apr_uint32_t nconns;
    apr_time_t next_check;           /* no idle or linger deadline falls before this */
    apr_array_header_t *dead;        /* mph_conn * destroyed this round, freed after it */
    int stopping;
    int quit;
};

struct mph_server {
    apr_pool_t *pool;
    const char *conf_file;           /* the file, or the name that stands for it in messages */
    const char *conf_text;           /* embedded: the configuration text (NULL: read conf_file) */
    const char *conf_dir;            /* embedded: where relative paths resolve */
    int embedded;                    /* listeners name settings only: nothing is bound */
    mph_runtime *current;            /* guarded by mutex */
    apr_thread_mutex_t *mutex;       /* guards current, gens, listeners */
    apr_array_header_t *listeners;   /* mph_listener *, the bound ones */
    apr_array_header_t *gens;        /* every live mph_generation * (for status and reuse) */
    apr_hash_t *gen_numbers;         /* module name -> last generation number (unsigned *) */
    unsigned runtime_number;
    mph_loop *loops;
    unsigned nloops, next_loop;
    mph_workers *workers;
    apr_pollset_t *pollset;          /* the main thread's: listeners and the control socket */
    int control_fd;
    const char *control_path;
    const char *pid_path;
    volatile int reload_requested, stop_requested;
    volatile apr_uint32_t next_session_id;
    int stopping;
    int privileges_dropped;
};

/* loop.c */
apr_status_t mph_loops_start(mph_server *srv, unsigned n);
void mph_loop_post_conn(mph_loop *loop, apr_socket_t *sock, apr_pool_t *pool, mph_runtime *rt,
                        mph_listen_rt *lrt, int refuse);
void mph_loops_shutdown(mph_server *srv);
void mph_loops_join(mph_server *srv);
unsigned mph_loops_sessions(mph_server *srv);
void mph_loop_post_job_done(mph_loop *loop, mph_conn *c, void *job);
void mph_loop_post_wakeup(mph_loop *loop, mph_conn *c);
/* Serves one connection on the calling thread until it ends (the embedding API). */
apr_status_t mph_loop_serve_one(mph_server *srv, apr_socket_t *sock, apr_pool_t *pool, mph_runtime *rt,
                                mph_listen_rt *lrt, int refuse);

/* conn.c */
extern const mp_host mph_host_services;
mph_conn *mph_conn_new(mph_loop *loop, apr_socket_t *sock, apr_pool_t *pool, mph_runtime *rt,
                       mph_listen_rt *lrt);
void mph_conn_start(mph_conn *c, int refuse);
void mph_conn_event(mph_conn *c, apr_int16_t revents);
void mph_conn_check_idle(mph_conn *c, apr_time_t now);
void mph_conn_shutdown(mph_conn *c);
void mph_conn_abort(mph_conn *c);
void mph_conn_wakeup(mph_conn *c);
void mph_conn_job_done(mph_conn *c, void *job);
void mph_conn_timer_fire(mph_conn *c, mp_timer *t);
void mph_conn_free(mph_conn *c);
void mph_conn_set_loading_runtime(mph_runtime *rt);
int mph_timer_compare(void *a, void *b);
apr_time_t mph_timer_when(const mp_timer *t);
mph_conn *mph_timer_conn(const mp_timer *t);
apr_time_t mph_conn_deadline(const mph_conn *c);

/* runtime.c */
const char *mph_runtime_load(mph_server *srv, int check_only, mph_runtime **rt_r);
/* StateDir/modules.UID: where a process running as uid copies the modules it loads (reloads need new
   copies). mph_copy_dir_give: made by root for that user (mp_embed_give_copy_dir). */
const char *mph_copy_dir(apr_pool_t *pool, const char *state_dir, long uid);
const char *mph_copy_dir_give(apr_pool_t *pool, const char *state_dir, long uid, long gid);
const char *mph_runtime_activate(mph_server *srv, mph_runtime *rt);
void mph_runtime_discard(mph_server *srv, mph_runtime *rt);
mph_runtime *mph_runtime_acquire(mph_server *srv);
void mph_runtime_release(mph_server *srv, mph_runtime *rt);
void mph_listener_release(mph_listener *l);
const mp_provider *mph_runtime_provider(mph_runtime *rt, const char *kind, const char *name);
char *mph_status_json(mph_server *srv, apr_pool_t *pool);
void mph_listeners_watch_all(mph_server *srv);
void mph_listeners_close_all(mph_server *srv);

/* server.c */
/* Counts a new session against its listener's limits. Returns 1 when it must be refused (not counted). */
int mph_admit(mph_runtime *rt, mph_listen_rt *lrt, const char *ip);
mph_listen_rt *mph_runtime_listen(mph_runtime *rt, const char *address);
mph_server *mph_server_create(apr_pool_t *pool, const char *conf_file);
/* Loads the configuration and runs until stopped. Returns the exit code. */
int mph_server_run(mph_server *srv);
/* -t: loads the configuration (modules and certificates too) without binding. NULL or the error. */
const char *mph_server_check(mph_server *srv);
/* Loads the configuration again and makes it current; on error (returned) the running one stays. */
const char *mph_server_reload(mph_server *srv, const char *why);

/* control.c */
/* Sends `command` (status, reload, stop) to the server running with `conf_file`; prints its answer.
   Returns the exit code. */
int mph_control_client(apr_pool_t *pool, const char *conf_file, const char *command);
int mph_control_listen(mph_server *srv, const char *path, const char **err_r);
void mph_control_serve(mph_server *srv);

extern mph_server *mph_the_server;

#endif

/*
 * Embedding mailproto in an existing APR-based server (the httpd adapter is one such server).
 *
 * The embedding server keeps its own listening sockets and accept loop. It gives mailproto a configuration
 * in mailprotod's language (README "Configuration"): modules, providers, TLS, limits, and <Listen> blocks
 * that here bind nothing: each names the settings of one kind of connection (its protocol, TLS mode and
 * directives) by its ADDR:PORT. For every connection it accepted, it calls mp_embed_serve() with that
 * name; mailproto drives the handler on the calling thread, TLS and STARTTLS included, with the same
 * connection code mailprotod runs, and returns when the session is over. The socket is then the caller's
 * again (not closed; its timeout restored).
 *
 * Link with the host library (libmailproto_host.a, built by this project).
 */
#ifndef MAILPROTO_EMBED_H
#define MAILPROTO_EMBED_H

#include <apr_network_io.h>
#include <apr_pools.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mp_embed mp_embed;

/*
 * Loads a configuration from `text`; `name` stands for the file in "NAME:LINE: message" errors and
 * `base_dir` is where relative paths resolve. Loads the modules, creates the TLS contexts and a worker
 * pool. Returns NULL and sets *embed_r, or the error (allocated in pool). One mp_embed per process.
 */
const char *mp_embed_create(apr_pool_t *pool, const char *name, const char *base_dir, const char *text,
                            mp_embed **embed_r);

/* Replaces the configuration: new sessions use the new one, sessions in progress keep theirs. On error
   (returned) the running configuration stays. */
const char *mp_embed_reload(mp_embed *embed, const char *text);

/* 1 when `endpoint` ("127.0.0.1:2525", as written in a <Listen> block) is configured. */
int mp_embed_has_endpoint(mp_embed *embed, const char *endpoint);

/*
 * Serves one accepted connection as `endpoint` until the session ends, on the calling thread (blocking).
 * `pool` lives at least as long as the call. Returns APR_SUCCESS, or APR_NOTFOUND for an unknown endpoint.
 * Thread-safe: call it from as many threads at once as there are connections.
 */
apr_status_t mp_embed_serve(mp_embed *embed, const char *endpoint, apr_socket_t *sock, apr_pool_t *pool);

/*
 * For an embedding server that starts as root and serves as another user (httpd's User): run as root
 * before the switch, it makes STATE_DIR/modules.UID, the folder where processes running as `uid` copy the
 * handlers they load, and gives it to uid:gid. STATE_DIR itself is left as it is. NULL, or the error.
 */
const char *mp_embed_give_copy_dir(apr_pool_t *pool, const char *state_dir, long uid, long gid);

/* Ends every session still being served (each gets its protocol's goodbye), waits for the serve calls to
   return, and unloads the modules. */
void mp_embed_destroy(mp_embed *embed);

#ifdef __cplusplus
}
#endif

#endif

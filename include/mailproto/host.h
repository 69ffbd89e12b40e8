/*
 * mailproto host services: what a module may ask of the host that runs it.
 *
 * The host passes `const mp_host *` to a module's init() and in every session (session->host). A module
 * calls nothing else of the host. The table is versioned like the module descriptor: fields are only
 * appended, `struct_size` tells how many a host has, and MP_HOST_HAS() tests for a field.
 */
#ifndef MAILPROTO_HOST_H
#define MAILPROTO_HOST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <apr_pools.h>
#include <apr_time.h>
#include <mailproto/module.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes of host services. */
enum {
    MP_OK = 0,
    MP_ERR = -1,        /* generic failure (the host logged why) */
    MP_ECLOSED = -2,    /* the session is closing: nothing more is sent */
    MP_ENOTLS = -3,     /* start_tls: no certificate configured, or TLS is already active */
    MP_EBUSY = -4       /* run_blocking: a job is already running for this session */
};

/* TLS mode of a listener (`TLS` directive). */
typedef enum mp_tls_mode {
    MP_TLS_OFF = 0,       /* plaintext only, STARTTLS not offered */
    MP_TLS_STARTTLS = 1,  /* plaintext, STARTTLS offered */
    MP_TLS_REQUIRED = 2,  /* plaintext, but nothing but STARTTLS (and the trivial commands) before TLS */
    MP_TLS_IMPLICIT = 3   /* TLS from the first byte; the handshake precedes on_connect */
} mp_tls_mode;

typedef enum mp_log_level {
    MP_LOG_ERROR = 0,
    MP_LOG_WARN = 1,
    MP_LOG_NOTICE = 2,
    MP_LOG_INFO = 3,
    MP_LOG_DEBUG = 4
} mp_log_level;

/* What a handler knows of the listener that accepted its session. */
typedef struct mp_listener_info {
    const char *address;   /* as configured, e.g. "127.0.0.1:587" or "[::1]:143" */
    const char *protocol;  /* "smtp" */
    mp_tls_mode tls;
    uint16_t port;
} mp_listener_info;

typedef struct mp_tls_info {
    int active;            /* 1 when the session runs over TLS */
    const char *version;   /* "TLSv1.3" */
    const char *cipher;    /* "TLS_AES_256_GCM_SHA384" */
    int bits;              /* secret bits of the cipher */
} mp_tls_info;

/*
 * One client connection, as the handler sees it. The host creates it; the handler reads these fields and
 * keeps its own state in `state`. Strings live as long as the session.
 */
struct mp_session {
    const mp_host *host;
    void *state;                       /* protocol->session_size zeroed bytes, the handler's */
    apr_pool_t *pool;                  /* freed after on_close */
    void *module_ctx;                  /* what the module's init() put in *ctx_r */
    const mp_listener_info *listener;
    uint64_t id;                       /* unique in this server's life; in every log line */
    const char *peer_addr;             /* "127.0.0.1", "::1" */
    uint16_t peer_port;
    const char *local_addr;
    uint16_t local_port;
    int tls_active;                    /* 1 once TLS is up (implicit, or after STARTTLS) */
    void *host_private;                /* the host's; never touch */
};

typedef struct mp_timer mp_timer;
typedef void (*mp_timer_fn)(mp_session *s, void *arg);
/* Runs on a worker thread: may block (fsync, a large scan); must not call any host function but
   log(NULL, ...). */
typedef void (*mp_work_fn)(void *arg);
/* Runs back on the session's thread after the work finished; `closing` is 1 when the session is going
   away (the client left), in which case the callback must not write. */
typedef void (*mp_done_fn)(mp_session *s, void *arg, int closing);

struct mp_host {
    uint16_t abi_major;    /* MP_ABI_MAJOR of the host */
    uint16_t abi_minor;
    uint32_t struct_size;  /* sizeof(mp_host) of the host */
    const char *name;      /* "mailprotod", "httpd", "test" */

    /* ---- output ---- */
    /* Queue bytes for the client. They are sent when the current callback returns (or at flush). Returns
       MP_OK or MP_ECLOSED. Output is never dropped; use pending_output()/want_writable() to bound it. */
    int (*write)(mp_session *s, const void *buf, size_t len);
    /* write() of a formatted string. */
    int (*printf)(mp_session *s, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 2, 3)))
#endif
        ;
    /* Send queued output now instead of when the callback returns. */
    void (*flush)(mp_session *s);
    /* Bytes queued and not yet sent. */
    size_t (*pending_output)(mp_session *s);
    /* Ask for one on_writable() call when the queued output has drained below the low-water mark. While
       such a request is pending the host does not deliver input (the reply is still being produced). */
    void (*want_writable)(mp_session *s);

    /* ---- session control ---- */
    /* Upgrade to TLS once the current callback returns: the host discards every input byte not yet
       consumed (RFC 3207 section 4.2, the STARTTLS injection class), sends the queued output, handshakes,
       then calls on_tls_ready(). Call it first and write the "go ahead" reply only when it returned MP_OK;
       on MP_ENOTLS (no certificate, or TLS already up) write an error reply instead. */
    int (*start_tls)(mp_session *s);
    /* Send the queued output, then close. No more input is delivered; on_close follows. */
    void (*close)(mp_session *s);
    /* Count one protocol error (unknown command, bad syntax). After MaxErrors the host calls
       on_goodbye(MP_BYE_TOO_MANY_ERRORS) and closes. */
    void (*error)(mp_session *s);

    /* ---- timers and blocking work ---- */
    /* Call fn(s, arg) on the session's thread after `after` microseconds, once. Cancelled automatically
       when the session closes. Returns NULL on failure. The handle is invalid once the timer fired. */
    mp_timer *(*timer_start)(mp_session *s, apr_interval_time_t after, mp_timer_fn fn, void *arg);
    void (*timer_cancel)(mp_session *s, mp_timer *t);
    /* Run work(arg) on a worker thread, then done(s, arg, closing) on the session's thread. Input is not
       delivered to the session meanwhile, so replies stay in order. One job per session at a time. */
    int (*run_blocking)(mp_session *s, mp_work_fn work, mp_done_fn done, void *arg);

    /* ---- facts ---- */
    /* Fill *info; returns MP_OK. */
    int (*tls_info)(mp_session *s, mp_tls_info *info);
    /* The value of a configuration directive: the session's <Listen> block first, then the global scope;
       NULL when not set. `s` may be NULL for the global scope. "ServerRoot" is the folder of the
       configuration file (relative paths in values resolve against it) unless set explicitly. */
    const char *(*config)(mp_session *s, const char *directive);
    /* The interface table of a provider ("store", "maildir"), or NULL. `s` may be NULL. The provider stays
       loaded as long as the session (or, with s NULL, the calling module's generation) lives. */
    const mp_provider *(*provider)(mp_session *s, const char *kind, const char *name);

    /* ---- logging ---- */
    /* One log line: level, "[mpNNNNN]" from msgid (a number unique to the call site), the session id and
       peer when s is not NULL, then the message. Messages never contain passwords. With s NULL it may be
       called from any thread (a provider's worker or watcher); with a session, from that session's. */
    void (*log)(mp_session *s, mp_log_level level, int msgid, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 4, 5)))
#endif
        ;

    /* The instance of the provider a directive names ("MailStore maildir:mail/%d/%n": provider "maildir"
       of `kind`, spec "mail/%d/%n"), made by the provider's instance() with ServerRoot as base, once per
       configuration, and kept while any session of that configuration lives; the host releases it before
       the provider is unloaded. Sets *iface_r to the provider's interface table. NULL (and a log line)
       when the directive is unset, names no loaded provider of that kind, the interface version differs,
       or instance() failed. Thread-safe; `s` may be NULL (the current configuration). */
    void *(*provider_instance)(mp_session *s, const char *kind, const char *directive, uint32_t iface_version,
                               const void **iface_r);

    /* ---- cross-thread ---- */
    /* Callable from ANY thread (a provider's watcher): the session's thread calls on_wakeup() soon.
       Several wakeups before it runs are one call. The caller must make sure the session exists: call it
       only between on_connect and the end of on_close (a provider does so by unsubscribing, under its own
       lock, when the handler closes the folder in on_close). */
    void (*wakeup)(mp_session *s);

    void *reserved[14];
};

/* True when host `h` provides the member `field` (it was added in a minor this host has). */
#define MP_HOST_HAS(h, field) \
    ((h)->struct_size >= offsetof(mp_host, field) + sizeof((h)->field) && (h)->field != NULL)

#ifdef __cplusplus
}
#endif

#endif

/*
 * mailproto protocol handlers: the callbacks a protocol module gives the host.
 *
 * A handler is a state machine that never touches a socket. The host (mailprotod, the httpd adapter, or a
 * unit test) reads bytes and calls on_input(); the handler answers through the host services table
 * (host.h). All callbacks of one session run on one thread, one at a time, so session state needs no lock.
 *
 * Life of a session:
 *   on_connect                          the connection is accepted (after the handshake on implicit TLS)
 *   on_input ... on_input               bytes arrived; return how many were consumed
 *   [host->start_tls() -> on_tls_ready] STARTTLS: forget everything learned before (RFC 3207 section 4.2)
 *   [host->want_writable() -> on_writable]  streaming a large reply
 *   [host->wakeup() -> on_wakeup]       another thread has news for the session (IDLE)
 *   on_goodbye                          the host is about to close the session (limits, shutdown)
 *   on_close                            always last, exactly once; the handler may not write any more
 */
#ifndef MAILPROTO_PROTOCOL_H
#define MAILPROTO_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include <apr_pools.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mp_session mp_session;

/* Why the host ends a session on its own; on_goodbye writes the protocol's last words for it. */
typedef enum mp_goodbye {
    MP_BYE_SHUTDOWN = 1,        /* graceful stop of the server (SMTP 421, POP3 -ERR, IMAP * BYE) */
    MP_BYE_IDLE = 2,            /* no input for IdleTimeout */
    MP_BYE_LINE_TOO_LONG = 3,   /* MaxLineLength bytes without the handler consuming any */
    MP_BYE_TOO_MANY_ERRORS = 4, /* host->error() was called MaxErrors times */
    MP_BYE_TOO_MANY_CONNECTIONS = 5 /* over MaxConnections / MaxConnectionsPerClient: the session never
                                       got on_connect; the handler's state is zeroed */
} mp_goodbye;

/* Why the session ended, for on_close. */
typedef enum mp_close_reason {
    MP_CLOSE_NORMAL = 0,   /* the handler called host->close() */
    MP_CLOSE_PEER = 1,     /* the client closed the connection or it broke */
    MP_CLOSE_GOODBYE = 2,  /* after on_goodbye */
    MP_CLOSE_TLS_FAILED = 3
} mp_close_reason;

struct mp_protocol {
    const char *name;            /* "smtp", matches `Protocol NAME` in a <Listen> block */
    uint16_t default_port;       /* plain/STARTTLS port, informational */
    uint16_t default_tls_port;   /* implicit TLS port, informational */
    size_t session_size;         /* bytes of zeroed handler state in session->state */

    /* Write the greeting. Return 0, or non-zero to close at once. */
    int (*on_connect)(mp_session *s);

    /*
     * `len` bytes arrived, starting with any bytes not consumed by the previous call. Return how many bytes
     * were consumed (0..len): unconsumed bytes are given again on the next call (when more arrive, or when
     * a blocking job or a want_writable() request has ended), so a handler
     * may leave an incomplete line where it is. Return -1 to drop the connection at once without
     * flushing (a broken invariant; prefer host->close()). After calling host->start_tls() or host->close()
     * the handler must return at once: the host discards every byte not yet consumed.
     * Replies written during the call are sent when it returns and the client has no more input pending
     * (so pipelined commands get their replies in one write, RFC 2920).
     */
    long (*on_input)(mp_session *s, const char *data, size_t len);

    /* The TLS handshake after host->start_tls() succeeded. Reset the protocol state; write nothing
       unless the protocol says so. May be NULL. (Failure closes with MP_CLOSE_TLS_FAILED.) */
    void (*on_tls_ready)(mp_session *s);

    /* Output drained below the host's low-water mark after host->want_writable(). Write more. May be NULL. */
    void (*on_writable)(mp_session *s);

    /* The host is ending the session for `why`: write the last reply. Input is not read any more. */
    void (*on_goodbye)(mp_session *s, mp_goodbye why);

    /* Last call for the session. Release what is not in session->pool. May be NULL. */
    void (*on_close)(mp_session *s, mp_close_reason why);

    /* Someone called host->wakeup() for this session (a provider saw new mail, say). Runs on the
       session's thread. May be NULL. */
    void (*on_wakeup)(mp_session *s);

    void *reserved[8];
};

#ifdef __cplusplus
}
#endif

#endif

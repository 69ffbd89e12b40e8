/*
 * mod_echo: the smallest complete protocol handler, and the example for module authors.
 *
 *   S: +OK echo ready
 *   C: hello            S: +OK echo: hello       (every line comes back)
 *   C: STARTTLS         S: +OK begin TLS         (then the TLS handshake; input sent before it is dropped)
 *   C: QUIT             S: +OK bye               (then the host closes)
 * An empty line is a protocol error (the host closes after MaxErrors). On a `TLS required` listener every
 * line but STARTTLS and QUIT is refused until TLS is up.
 */
#include <string.h>
#include <strings.h>

#include <mailproto/host.h>
#include "line.h"

#ifndef ECHO_NAME
#define ECHO_NAME "echo" /* tests build a second copy with another name to watch a reload happen */
#endif

typedef struct echo_session {
    unsigned lines; /* lines answered in this session */
} echo_session;

static int echo_connect(mp_session *s)
{
    s->host->log(s, MP_LOG_DEBUG, 20001, "echo session started");
    return s->host->printf(s, "+OK %s ready\r\n", ECHO_NAME);
}

/* One line, without its line end. Returns 1 when the handler must stop reading (STARTTLS, QUIT). */
static int echo_line(mp_session *s, const char *line, size_t len)
{
    const mp_host *h = s->host;
    echo_session *es = s->state;

    if (len == 8 && strncasecmp(line, "STARTTLS", 8) == 0) {
        if (s->tls_active) {
            h->printf(s, "-ERR TLS already active\r\n");
            return 0;
        }
        if (h->start_tls(s) != MP_OK) {
            h->printf(s, "-ERR TLS not available\r\n");
            return 0;
        }
        h->printf(s, "+OK begin TLS\r\n"); /* sent before the handshake starts */
        return 1;
    }
    if (len == 4 && strncasecmp(line, "QUIT", 4) == 0) {
        h->printf(s, "+OK bye\r\n");
        h->close(s);
        return 1;
    }
    if (len == 0) {
        h->printf(s, "-ERR empty line\r\n");
        h->error(s);
        return 0;
    }
    if (s->listener->tls == MP_TLS_REQUIRED && !s->tls_active) {
        h->printf(s, "-ERR TLS required, send STARTTLS first\r\n");
        h->error(s);
        return 0;
    }
    es->lines++;
    h->printf(s, "+OK %s: %.*s\r\n", ECHO_NAME, (int)len, line);
    return 0;
}

static long echo_input(mp_session *s, const char *data, size_t len)
{
    size_t used = 0;
    while (used < len) {
        size_t line_len, consumed;
        if (mpc_line_next(data + used, len - used, 0, &line_len, &consumed) == MPC_LINE_MORE)
            break;
        int stop = echo_line(s, data + used, line_len);
        used += consumed;
        if (stop)
            break;
    }
    return (long)used;
}

/* RFC 3207 section 4.2 in spirit: nothing learned before TLS survives it. */
static void echo_tls_ready(mp_session *s)
{
    memset(s->state, 0, sizeof(echo_session));
}

static void echo_goodbye(mp_session *s, mp_goodbye why)
{
    static const char *const text[] = {
        [MP_BYE_SHUTDOWN] = "server shutting down",
        [MP_BYE_IDLE] = "idle timeout",
        [MP_BYE_LINE_TOO_LONG] = "line too long",
        [MP_BYE_TOO_MANY_ERRORS] = "too many errors",
        [MP_BYE_TOO_MANY_CONNECTIONS] = "too many connections",
    };
    const char *t = (unsigned)why < sizeof(text) / sizeof(text[0]) && text[why] ? text[why] : "closing";
    s->host->printf(s, "-ERR %s\r\n", t);
}

static const mp_protocol echo_protocol = {
    .name = "echo",
    .default_port = 7,
    .session_size = sizeof(echo_session),
    .on_connect = echo_connect,
    .on_input = echo_input,
    .on_tls_ready = echo_tls_ready,
    .on_goodbye = echo_goodbye,
};

MP_MODULE {
    MP_MODULE_HEADER,
    .name = "echo",
    .kind = MP_KIND_PROTOCOL,
    .version = "1.0 (" ECHO_NAME ")",
    .description = "line echo: the example protocol handler",
    .protocol = &echo_protocol,
};

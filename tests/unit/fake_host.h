/*
 * A fake mp_host for sans-I/O unit tests of protocol handlers (echo, SMTP, POP3, IMAP, ...).
 *
 * One fake_session is one client connection to one handler. The test feeds bytes, the fake calls the
 * handler exactly as the real host does, and the test reads what the handler wrote and what it asked for.
 * Single-threaded; everything the real host would do later (flush, blocking work, goodbye after MaxErrors)
 * happens synchronously when the current callback returns.
 *
 *   fake_session *fs = fake_new(&my_protocol, MP_TLS_STARTTLS);
 *   fake_set_config(fs, "MaxMessageSize", "10M");     // before fake_connect
 *   fake_connect(fs);                                 // on_connect: the greeting
 *   CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK ready\r\n");
 *   fake_clear(fs);
 *   fake_feed_str(fs, "NOOP\r\n");
 *   ...
 *   fake_end(fs);                                     // on_close, fini, free everything
 *
 * Input contract (as the real host): the fake keeps an input buffer; each fake_feed() appends the bytes and
 * calls on_input() once with ALL unconsumed bytes; what the handler does not consume is kept for the next
 * feed. After the handler calls start_tls() (successfully) or close(), or returns -1, every unconsumed byte
 * is discarded. After start_tls() no input is delivered (fed bytes are discarded: they are pre-handshake
 * plaintext) until fake_tls_complete(), which sets tls_active and calls on_tls_ready(). After close() or a
 * goodbye nothing is ever delivered again. While want_writable() or a blocking job is pending, fed bytes are
 * buffered but not delivered; when that condition ends (fake_writable(), the job's done callback) the fake
 * calls on_input() once more with the buffered bytes, if any, so pipelined commands are not stalled.
 *
 * Handler mistakes the fake catches and counts (fake_violations(), text in fake_log()): on_input returning
 * more than it was given or less than -1, writing after close()/goodbye, callbacks after on_close.
 *
 * Host calls with s == NULL (config, provider, log: e.g. from a module's init) are answered from the most
 * recently created fake_session that is still alive.
 */
#ifndef FAKE_HOST_H
#define FAKE_HOST_H

#include <stddef.h>
#include <mailproto/host.h>

typedef struct fake_session fake_session;

/* ---- life ---- */

/* A session of `proto` on a listener with TLS mode `tls` (MP_TLS_IMPLICIT: tls_active is 1 from the start).
   state is session_size zeroed bytes, pool a fresh APR pool. TLS is available by default. Calls
   apr_initialize() (balanced in fake_end). Never NULL (aborts on allocation failure). */
fake_session *fake_new(const mp_protocol *proto, mp_tls_mode tls);
/* The same for a whole module: fake_connect() first calls m->init(host, pool, &ctx) (once) and sets
   session->module_ctx; fake_end() calls m->fini(ctx). m must be a protocol module. */
fake_session *fake_new_module(const mp_module *m, mp_tls_mode tls);
/* Calls on_connect (after init, for fake_new_module). Returns what on_connect (or a failing init) returned;
   non-zero also marks the session closed. */
int fake_connect(fake_session *fs);
/* Calls on_close (once; reason: NORMAL after close(), GOODBYE after a goodbye, TLS_FAILED after
   fake_tls_fail(), else PEER), cancels timers, calls fini, frees the session and everything in it. */
void fake_end(fake_session *fs);
/* Same as fake_end but with an explicit on_close reason. */
void fake_end_reason(fake_session *fs, mp_close_reason why);

/* ---- the objects the handler sees ---- */
mp_session *fake_session_of(fake_session *fs);
void *fake_state(fake_session *fs);          /* session->state */
const mp_host *fake_host(void);              /* the services table (one for all fake sessions) */

/* ---- set up (before fake_connect, or any time) ---- */
void fake_set_tls_available(fake_session *fs, int available); /* 0: start_tls() returns MP_ENOTLS */
void fake_set_config(fake_session *fs, const char *name, const char *value); /* value NULL removes */
void fake_register_provider(fake_session *fs, const mp_provider *p); /* found by provider(kind, name) */
void fake_set_peer(fake_session *fs, const char *addr, uint16_t port);
/* After `n` error() calls the fake says goodbye (MP_BYE_TOO_MANY_ERRORS) and closes, like the host's
   MaxErrors, when the current callback returns. 0 (the default): never. */
void fake_set_max_errors(fake_session *fs, unsigned n);
/* What pending_output() adds to the bytes written since the last flush (to simulate a slow client). */
void fake_set_pending_extra(fake_session *fs, size_t n);
/* 1: blocking jobs wait for fake_run_job() instead of running when the callback returns. */
void fake_hold_jobs(fake_session *fs, int hold);

/* ---- input ---- */
void fake_feed(fake_session *fs, const void *data, size_t len);
void fake_feed_str(fake_session *fs, const char *text);
void fake_feed_bytewise(fake_session *fs, const void *data, size_t len); /* one fake_feed per byte */
size_t fake_input_pending(fake_session *fs);   /* bytes buffered, not consumed yet */
size_t fake_discarded(fake_session *fs);       /* bytes thrown away (start_tls, close, after close) */

/* ---- output ---- */
const char *fake_output(fake_session *fs);     /* everything written since the last clear, NUL-terminated */
size_t fake_output_len(fake_session *fs);      /* its length (output may contain NUL bytes) */
void fake_clear(fake_session *fs);
const char *fake_log(fake_session *fs);        /* log lines "LEVEL [mpNNNNN] message\n" (also stderr when
                                                  env FAKE_HOST_LOG is set) */
void fake_clear_log(fake_session *fs);

/* ---- what the handler asked for ---- */
unsigned fake_tls_requested(fake_session *fs); /* start_tls() calls (successful or not) */
int fake_tls_pending(fake_session *fs);        /* start_tls() succeeded, handshake not done yet */
int fake_closed(fake_session *fs);             /* close() called, goodbye said, on_input returned -1, ... */
int fake_close_requested(fake_session *fs);    /* the handler called close() */
int fake_dropped(fake_session *fs);            /* on_input returned -1 */
unsigned fake_errors(fake_session *fs);        /* error() calls */
int fake_want_writable(fake_session *fs);      /* an on_writable request is pending */
unsigned fake_flushes(fake_session *fs);       /* flush() calls */
unsigned fake_violations(fake_session *fs);    /* handler contract violations seen */

/* ---- events the test causes ---- */
/* The TLS handshake after start_tls() succeeded: tls_active = 1, on_tls_ready(). Returns 0, or -1 when
   no upgrade was pending. Input is delivered again afterwards. */
int fake_tls_complete(fake_session *fs);
/* The handshake failed: the session is closed (on_close reason TLS_FAILED at fake_end). */
int fake_tls_fail(fake_session *fs);
/* on_writable() for a pending want_writable() request; returns 0, or -1 when none was pending. */
int fake_writable(fake_session *fs);
/* on_goodbye(why), then the session is closed. Returns 0, or -1 when it was already closed. */
int fake_goodbye(fake_session *fs, mp_goodbye why);
/* Fires every timer active now, in the order they were started (each once); returns how many fired.
   Timers started by those callbacks wait for the next call. */
unsigned fake_fire_timers(fake_session *fs);
unsigned fake_timers_active(fake_session *fs);
/* The `after` of the most recently started timer (0 if none). */
apr_interval_time_t fake_last_timer_after(fake_session *fs);
/* Runs a held blocking job (see fake_hold_jobs): work, then done. Returns 0, or -1 when none was held. */
int fake_run_job(fake_session *fs);
int fake_job_pending(fake_session *fs);

#endif

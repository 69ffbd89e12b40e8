/*
 * mod_echo driven by the fake host: bytes in, replies out, no sockets. Compiled together with
 * modules/echo/echo.c, so the module's descriptor is an ordinary symbol here.
 *
 * A second suite checks the fake host itself with a tiny protocol defined below (timers, blocking work,
 * configuration, providers, want_writable, partial consumption), since the SMTP/POP3/IMAP tests rely on it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <mailproto/host.h>
#include "fake_host.h"

extern const mp_module mp_module_descriptor;

#define GREETING "+OK echo ready\r\n"

/* A connected echo session with its greeting checked and cleared. */
static fake_session *start(mp_tls_mode tls)
{
    fake_session *fs = fake_new_module(&mp_module_descriptor, tls);
    CU_ASSERT_EQUAL(fake_connect(fs), 0);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), GREETING);
    fake_clear(fs);
    return fs;
}

static void finish(fake_session *fs)
{
    CU_ASSERT_EQUAL(fake_violations(fs), 0);
    fake_end(fs);
}

/* Feeds `in` in one burst to one session and byte by byte to another; both must answer `want`. */
static void check_both_ways(mp_tls_mode tls, const char *in, const char *want)
{
    fake_session *a = start(tls);
    fake_feed_str(a, in);
    CU_ASSERT_STRING_EQUAL(fake_output(a), want);
    CU_ASSERT_EQUAL(fake_input_pending(a), 0);
    finish(a);

    fake_session *b = start(tls);
    fake_feed_bytewise(b, in, strlen(in));
    CU_ASSERT_STRING_EQUAL(fake_output(b), want);
    CU_ASSERT_EQUAL(fake_input_pending(b), 0);
    finish(b);
}

/* ---------------------------------------------------------------------------------------------------- */

static void test_descriptor(void)
{
    const mp_module *m = &mp_module_descriptor;
    CU_ASSERT_EQUAL(m->magic, MP_MODULE_MAGIC);
    CU_ASSERT_EQUAL(m->abi_major, MP_ABI_MAJOR);
    CU_ASSERT_EQUAL(m->abi_minor, MP_ABI_MINOR);
    CU_ASSERT_EQUAL(m->struct_size, sizeof(mp_module));
    CU_ASSERT_STRING_EQUAL(m->name, "echo");
    CU_ASSERT_EQUAL(m->kind, MP_KIND_PROTOCOL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m->protocol);
    CU_ASSERT_PTR_NULL(m->provider);
    CU_ASSERT_STRING_EQUAL(m->protocol->name, "echo");
    CU_ASSERT_PTR_NOT_NULL(m->protocol->on_connect);
    CU_ASSERT_PTR_NOT_NULL(m->protocol->on_input);
    CU_ASSERT_PTR_NOT_NULL(m->protocol->on_goodbye);
    CU_ASSERT(m->protocol->session_size > 0);
}

static void test_greeting(void)
{
    fake_session *fs = fake_new_module(&mp_module_descriptor, MP_TLS_OFF);
    CU_ASSERT_EQUAL(fake_connect(fs), 0);
    CU_ASSERT_EQUAL(fake_output_len(fs), strlen(GREETING));
    CU_ASSERT_STRING_EQUAL(fake_output(fs), GREETING);
    CU_ASSERT_FALSE(fake_closed(fs));
    CU_ASSERT_EQUAL(fake_errors(fs), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp20001]"));
    finish(fs);
}

static void test_echo_lines(void)
{
    check_both_ways(MP_TLS_OFF, "hello\r\n", "+OK echo: hello\r\n");
    check_both_ways(MP_TLS_OFF, "hello\r\nworld\r\nthree words here\r\n",
                    "+OK echo: hello\r\n+OK echo: world\r\n+OK echo: three words here\r\n");
}

static void test_bare_lf(void)
{
    check_both_ways(MP_TLS_OFF, "hi\n", "+OK echo: hi\r\n");
    check_both_ways(MP_TLS_OFF, "a\r\nb\nc\r\n", "+OK echo: a\r\n+OK echo: b\r\n+OK echo: c\r\n");
}

static void test_partial_line(void)
{
    fake_session *fs = start(MP_TLS_OFF);
    fake_feed_str(fs, "hel");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "");
    CU_ASSERT_EQUAL(fake_input_pending(fs), 3);
    fake_feed_str(fs, "lo\r");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "");
    CU_ASSERT_EQUAL(fake_input_pending(fs), 6);
    fake_feed_str(fs, "\nwor");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK echo: hello\r\n");
    CU_ASSERT_EQUAL(fake_input_pending(fs), 3);
    fake_clear(fs);
    fake_feed_str(fs, "ld\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK echo: world\r\n");
    CU_ASSERT_EQUAL(fake_input_pending(fs), 0);
    finish(fs);
}

static void test_empty_line(void)
{
    check_both_ways(MP_TLS_OFF, "\r\n", "-ERR empty line\r\n");

    fake_session *fs = start(MP_TLS_OFF);
    fake_feed_str(fs, "\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "-ERR empty line\r\n");
    CU_ASSERT_EQUAL(fake_errors(fs), 1);
    fake_clear(fs);
    fake_feed_str(fs, "\nstill here\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "-ERR empty line\r\n+OK echo: still here\r\n");
    CU_ASSERT_EQUAL(fake_errors(fs), 2);
    CU_ASSERT_FALSE(fake_closed(fs));
    finish(fs);
}

static void test_quit(void)
{
    const char *in = "hello\r\nQUIT\r\nafter\r\nmore\r\n";
    check_both_ways(MP_TLS_OFF, in, "+OK echo: hello\r\n+OK bye\r\n");

    fake_session *fs = start(MP_TLS_OFF);
    fake_feed_str(fs, in);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK echo: hello\r\n+OK bye\r\n");
    CU_ASSERT_TRUE(fake_close_requested(fs));
    CU_ASSERT_TRUE(fake_closed(fs));
    CU_ASSERT_EQUAL(fake_discarded(fs), strlen("after\r\nmore\r\n"));
    fake_clear(fs);
    fake_feed_str(fs, "late\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "");
    CU_ASSERT_EQUAL(fake_errors(fs), 0);
    finish(fs);

    /* case-insensitive, and only the bare word */
    check_both_ways(MP_TLS_OFF, "QUIT now\r\nquit\r\nx\r\n", "+OK echo: QUIT now\r\n+OK bye\r\n");
}

static void test_starttls(void)
{
    fake_session *fs = start(MP_TLS_STARTTLS);
    fake_feed_str(fs, "hello\r\n");
    CU_ASSERT_EQUAL(*(unsigned *)fake_state(fs), 1); /* echo_session.lines: one line answered */
    fake_clear(fs);

    fake_feed_str(fs, "STARTTLS\r\nINJECT\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK begin TLS\r\n");
    CU_ASSERT_EQUAL(fake_tls_requested(fs), 1);
    CU_ASSERT_TRUE(fake_tls_pending(fs));
    CU_ASSERT_FALSE(fake_closed(fs));
    CU_ASSERT_EQUAL(fake_discarded(fs), strlen("INJECT\r\n"));
    CU_ASSERT_EQUAL(fake_input_pending(fs), 0);

    /* before the handshake: still nothing is delivered */
    fake_feed_str(fs, "INJECT2\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK begin TLS\r\n");

    CU_ASSERT_EQUAL(fake_tls_complete(fs), 0);
    CU_ASSERT_TRUE(fake_session_of(fs)->tls_active);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK begin TLS\r\n"); /* nothing written on TLS ready */
    CU_ASSERT_EQUAL(*(unsigned *)fake_state(fs), 0);            /* state forgotten */

    fake_clear(fs);
    fake_feed_str(fs, "after\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK echo: after\r\n");
    CU_ASSERT_PTR_NULL(strstr(fake_output(fs), "INJECT"));
    finish(fs);

    /* the same, byte by byte: the injected line is still never answered */
    fs = start(MP_TLS_STARTTLS);
    const char *in = "STARTTLS\r\nINJECT\r\n";
    fake_feed_bytewise(fs, in, strlen(in));
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK begin TLS\r\n");
    CU_ASSERT_EQUAL(fake_discarded(fs), strlen("INJECT\r\n"));
    CU_ASSERT_EQUAL(fake_tls_complete(fs), 0);
    fake_feed_str(fs, "ok\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK begin TLS\r\n+OK echo: ok\r\n");
    finish(fs);

    /* lower case works too */
    fs = start(MP_TLS_STARTTLS);
    fake_feed_str(fs, "starttls\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK begin TLS\r\n");
    CU_ASSERT_TRUE(fake_tls_pending(fs));
    finish(fs);
}

static void test_starttls_unavailable(void)
{
    fake_session *fs = fake_new_module(&mp_module_descriptor, MP_TLS_OFF);
    fake_set_tls_available(fs, 0);
    CU_ASSERT_EQUAL(fake_connect(fs), 0);
    fake_clear(fs);

    fake_feed_str(fs, "STARTTLS\r\nhello\r\n");
    CU_ASSERT_EQUAL(fake_tls_requested(fs), 1);
    CU_ASSERT_FALSE(fake_tls_pending(fs));
    CU_ASSERT_FALSE(fake_session_of(fs)->tls_active);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_output(fs), "-ERR TLS not available\r\n"));
    /* no upgrade follows, so the session goes on: the next line is answered */
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_output(fs), "+OK echo: hello\r\n"));
    CU_ASSERT_EQUAL(fake_discarded(fs), 0);
    /* The "go ahead" must not be sent when no handshake follows: a client would start TLS on it. */
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "-ERR TLS not available\r\n+OK echo: hello\r\n");
    finish(fs);
}

static void test_starttls_twice(void)
{
    fake_session *fs = start(MP_TLS_STARTTLS);
    fake_feed_str(fs, "STARTTLS\r\n");
    CU_ASSERT_EQUAL(fake_tls_complete(fs), 0);
    fake_clear(fs);
    fake_feed_str(fs, "STARTTLS\r\nnext\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "-ERR TLS already active\r\n+OK echo: next\r\n");
    CU_ASSERT_EQUAL(fake_tls_requested(fs), 1); /* the handler did not ask the host again */
    CU_ASSERT_FALSE(fake_tls_pending(fs));
    finish(fs);

    /* implicit TLS: active from the start */
    check_both_ways(MP_TLS_IMPLICIT, "STARTTLS\r\n", "-ERR TLS already active\r\n");
}

static void test_tls_required(void)
{
    fake_session *fs = start(MP_TLS_REQUIRED);
    fake_feed_str(fs, "hello\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "-ERR TLS required, send STARTTLS first\r\n");
    CU_ASSERT_EQUAL(strncmp(fake_output(fs), "-ERR TLS required", 17), 0);
    CU_ASSERT_EQUAL(fake_errors(fs), 1);
    fake_clear(fs);

    fake_feed_str(fs, "STARTTLS\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK begin TLS\r\n");
    CU_ASSERT_EQUAL(fake_tls_complete(fs), 0);
    fake_clear(fs);
    fake_feed_str(fs, "hello\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK echo: hello\r\n");
    CU_ASSERT_EQUAL(fake_errors(fs), 1);
    finish(fs);

    /* QUIT is allowed before TLS */
    check_both_ways(MP_TLS_REQUIRED, "QUIT\r\n", "+OK bye\r\n");
}

static void check_goodbye(mp_goodbye why, const char *want, int connect)
{
    fake_session *fs;
    if (connect) {
        fs = start(MP_TLS_OFF);
    } else {
        fs = fake_new_module(&mp_module_descriptor, MP_TLS_OFF); /* never got on_connect */
    }
    CU_ASSERT_EQUAL(fake_goodbye(fs, why), 0);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), want);
    CU_ASSERT_TRUE(fake_closed(fs));
    CU_ASSERT_EQUAL(fake_goodbye(fs, why), -1); /* only once */
    fake_feed_str(fs, "hello\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), want);
    finish(fs);
}

static void test_goodbye(void)
{
    check_goodbye(MP_BYE_SHUTDOWN, "-ERR server shutting down\r\n", 1);
    check_goodbye(MP_BYE_IDLE, "-ERR idle timeout\r\n", 1);
    check_goodbye(MP_BYE_LINE_TOO_LONG, "-ERR line too long\r\n", 1);
    check_goodbye(MP_BYE_TOO_MANY_ERRORS, "-ERR too many errors\r\n", 1);
    check_goodbye(MP_BYE_TOO_MANY_CONNECTIONS, "-ERR too many connections\r\n", 0);
    check_goodbye((mp_goodbye)0, "-ERR closing\r\n", 1);
    check_goodbye((mp_goodbye)99, "-ERR closing\r\n", 1);
}

static void test_max_errors(void)
{
    fake_session *fs = start(MP_TLS_OFF);
    fake_set_max_errors(fs, 3);
    fake_feed_str(fs, "\r\n");
    fake_feed_str(fs, "\r\n");
    CU_ASSERT_FALSE(fake_closed(fs));
    fake_feed_str(fs, "\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "-ERR empty line\r\n-ERR empty line\r\n-ERR empty line\r\n"
                                            "-ERR too many errors\r\n");
    CU_ASSERT_TRUE(fake_closed(fs));
    CU_ASSERT_FALSE(fake_close_requested(fs));
    fake_feed_str(fs, "hello\r\n");
    CU_ASSERT_PTR_NULL(strstr(fake_output(fs), "hello"));
    finish(fs);
}

/* ---- the fake host itself, with a tiny protocol ---------------------------------------------------- */

typedef struct mini_state {
    mp_timer *timer;
    int timer_fired, job_work, job_done, job_closing, writable, tls_ready, closed_why;
    char config_seen[32];
} mini_state;

static int mini_closed_why = -1;

static void mini_timer(mp_session *s, void *arg)
{
    mini_state *st = s->state;
    st->timer_fired++;
    st->timer = NULL;
    s->host->printf(s, "timer %s\r\n", (const char *)arg);
}

static void mini_work(void *arg)
{
    ((mini_state *)arg)->job_work++;
}

static void mini_done(mp_session *s, void *arg, int closing)
{
    mini_state *st = arg;
    st->job_done++;
    st->job_closing = closing;
    if (!closing)
        s->host->printf(s, "done\r\n");
}

static int mini_connect(mp_session *s)
{
    const char *v = s->host->config(s, "Greeting");
    return s->host->printf(s, "hi %s\r\n", v ? v : "(none)");
}

/* One line (with its LF). Returns 0 to go on, 1 to stop reading after it, -1 to drop, 2 for a bad count. */
static int mini_line(mp_session *s, const char *data, size_t n)
{
    const mp_host *h = s->host;
    mini_state *st = s->state;
    if (n >= 5 && memcmp(data, "TIMER", 5) == 0) {
        st->timer = h->timer_start(s, 5 * APR_USEC_PER_SEC, mini_timer, "one");
    } else if (n >= 6 && memcmp(data, "CANCEL", 6) == 0) {
        h->timer_cancel(s, st->timer);
        st->timer = NULL;
    } else if (n >= 4 && memcmp(data, "STOP", 4) == 0) {
        return 1; /* leaves the rest unconsumed: the fake keeps it for the next feed */
    } else if (n >= 3 && memcmp(data, "JOB", 3) == 0) {
        if (h->run_blocking(s, mini_work, mini_done, st) != MP_OK)
            h->printf(s, "busy\r\n");
        if (h->run_blocking(s, mini_work, mini_done, st) != MP_EBUSY)
            h->printf(s, "not busy?\r\n");
        return 1; /* the next command waits for the job */
    } else if (n >= 4 && memcmp(data, "WANT", 4) == 0) {
        h->want_writable(s);
        return 1;
    } else if (n >= 4 && memcmp(data, "DROP", 4) == 0) {
        return -1;
    } else if (n >= 3 && memcmp(data, "BAD", 3) == 0) {
        return 2;
    } else if (n >= 4 && memcmp(data, "INFO", 4) == 0) {
        mp_tls_info ti;
        h->tls_info(s, &ti);
        const mp_provider *p = h->provider(s, "store", "maildir");
        h->printf(s, "tls=%d %s prov=%s cfg=%s\r\n", ti.active, ti.version ? ti.version : "-",
                  p ? p->name : "-", h->config(s, "greeting") ? h->config(s, "greeting") : "-");
        h->log(s, MP_LOG_INFO, 29999, "info asked");
    } else if (n >= 3 && memcmp(data, "ERR", 3) == 0) {
        h->error(s);
    } else if (n >= 4 && memcmp(data, "TLS!", 4) == 0) {
        h->printf(s, "go\r\n");
        if (h->start_tls(s) == MP_OK)
            return 1;
        h->printf(s, "no tls\r\n");
    } else if (n >= 4 && memcmp(data, "BYE!", 4) == 0) {
        h->printf(s, "bye\r\n");
        h->close(s);
        h->printf(s, "late\r\n"); /* a violation: written after close() */
        return 1;
    } else {
        size_t k = n - 1; /* without the line end */
        if (k > 0 && data[k - 1] == '\r')
            k--;
        h->printf(s, "line %.*s\r\n", (int)k, data);
    }
    return 0;
}

static long mini_input(mp_session *s, const char *data, size_t len)
{
    size_t used = 0;
    while (used < len) {
        const char *nl = memchr(data + used, '\n', len - used);
        if (!nl)
            break;
        size_t n = (size_t)(nl - (data + used)) + 1;
        int r = mini_line(s, data + used, n);
        if (r == -1)
            return -1;
        if (r == 2)
            return (long)len + 1; /* a contract violation the fake must catch */
        used += n;
        if (r == 1)
            break;
    }
    return (long)used;
}

static void mini_writable(mp_session *s)
{
    ((mini_state *)s->state)->writable++;
    s->host->printf(s, "more\r\n");
}

static void mini_tls_ready(mp_session *s)
{
    ((mini_state *)s->state)->tls_ready++;
}

static void mini_goodbye(mp_session *s, mp_goodbye why)
{
    s->host->printf(s, "bye %d\r\n", (int)why);
}

static void mini_close(mp_session *s, mp_close_reason why)
{
    mini_closed_why = (int)why;
}

static const mp_protocol mini_protocol = {
    .name = "mini",
    .default_port = 9999,
    .session_size = sizeof(mini_state),
    .on_connect = mini_connect,
    .on_input = mini_input,
    .on_tls_ready = mini_tls_ready,
    .on_writable = mini_writable,
    .on_goodbye = mini_goodbye,
    .on_close = mini_close,
};

static void test_fake_basics(void)
{
    fake_session *fs = fake_new(&mini_protocol, MP_TLS_STARTTLS);
    mp_session *s = fake_session_of(fs);
    CU_ASSERT_PTR_EQUAL(s->host, fake_host());
    CU_ASSERT_EQUAL(s->host->struct_size, sizeof(mp_host));
    CU_ASSERT_EQUAL(s->host->abi_major, MP_ABI_MAJOR);
    CU_ASSERT_PTR_NOT_NULL(s->pool);
    CU_ASSERT_EQUAL(s->listener->tls, MP_TLS_STARTTLS);
    CU_ASSERT_STRING_EQUAL(s->listener->protocol, "mini");
    CU_ASSERT_EQUAL(s->listener->port, 9999);
    CU_ASSERT_FALSE(s->tls_active);
    mini_state *st = fake_state(fs);
    CU_ASSERT_EQUAL(st->timer_fired + st->job_work + st->writable, 0); /* zeroed */

    fake_set_config(fs, "Greeting", "there");
    CU_ASSERT_STRING_EQUAL(s->host->config(NULL, "GREETING"), "there"); /* s NULL: the newest fake */
    CU_ASSERT_EQUAL(fake_connect(fs), 0);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "hi there\r\n");
    fake_clear(fs);

    /* what on_input leaves unconsumed is given again, with the next bytes, on the next feed */
    fake_feed_str(fs, "a\r\nSTOP\r\nb\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "line a\r\n");
    CU_ASSERT_EQUAL(fake_input_pending(fs), 3);
    fake_feed_str(fs, "c\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "line a\r\nline b\r\nline c\r\n");
    CU_ASSERT_EQUAL(fake_input_pending(fs), 0);
    fake_clear(fs);

    static const mp_provider store = {.kind = "store", .name = "maildir", .iface_version = 1, .iface = &store};
    fake_register_provider(fs, &store);
    CU_ASSERT_PTR_NULL(s->host->provider(s, "auth", "passwd-file"));
    fake_set_config(fs, "greeting", NULL);
    fake_feed_str(fs, "INFO\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "tls=0 - prov=maildir cfg=-\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "INFO [mp29999] info asked"));
    fake_clear(fs);

    fake_feed_str(fs, "ERR\r\n");
    CU_ASSERT_EQUAL(fake_errors(fs), 1);

    /* STARTTLS through the fake: what follows is discarded, then the handshake */
    fake_feed_str(fs, "TLS!\r\nX\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "go\r\n");
    CU_ASSERT_TRUE(fake_tls_pending(fs));
    CU_ASSERT_EQUAL(fake_discarded(fs), 3);
    CU_ASSERT_EQUAL(fake_tls_complete(fs), 0);
    CU_ASSERT_EQUAL(fake_tls_complete(fs), -1);
    CU_ASSERT_EQUAL(st->tls_ready, 1);
    fake_clear(fs);
    fake_feed_str(fs, "INFO\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "tls=1 TLSv1.3 prov=maildir cfg=-\r\n");
    fake_clear(fs);
    fake_feed_str(fs, "TLS!\r\n"); /* already active: MP_ENOTLS */
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "go\r\nno tls\r\n");
    CU_ASSERT_EQUAL(fake_tls_requested(fs), 2);

    CU_ASSERT_EQUAL(fake_violations(fs), 0);
    mini_closed_why = -1;
    fake_end(fs);
    CU_ASSERT_EQUAL(mini_closed_why, MP_CLOSE_PEER);
}

static void test_fake_timers_jobs(void)
{
    fake_session *fs = fake_new(&mini_protocol, MP_TLS_OFF);
    mini_state *st = fake_state(fs);
    fake_connect(fs);
    fake_clear(fs);

    fake_feed_str(fs, "TIMER\r\n");
    CU_ASSERT_EQUAL(fake_timers_active(fs), 1);
    CU_ASSERT_EQUAL(fake_last_timer_after(fs), 5 * APR_USEC_PER_SEC);
    CU_ASSERT_EQUAL(fake_fire_timers(fs), 1);
    CU_ASSERT_EQUAL(st->timer_fired, 1);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "timer one\r\n");
    CU_ASSERT_EQUAL(fake_fire_timers(fs), 0);
    fake_feed_str(fs, "TIMER\r\n");
    fake_feed_str(fs, "CANCEL\r\n");
    CU_ASSERT_EQUAL(fake_timers_active(fs), 0);
    CU_ASSERT_EQUAL(fake_fire_timers(fs), 0);
    fake_clear(fs);

    /* a blocking job runs when on_input returns; the pipelined line after it is delivered afterwards */
    fake_feed_str(fs, "JOB\r\nafter\r\n");
    CU_ASSERT_EQUAL(st->job_work, 1);
    CU_ASSERT_EQUAL(st->job_done, 1);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "done\r\nline after\r\n");
    fake_clear(fs);

    /* held: input waits for the job */
    fake_hold_jobs(fs, 1);
    fake_feed_str(fs, "JOB\r\n");
    CU_ASSERT_TRUE(fake_job_pending(fs));
    fake_feed_str(fs, "x\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "");
    CU_ASSERT_EQUAL(fake_run_job(fs), 0);
    CU_ASSERT_EQUAL(fake_run_job(fs), -1);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "done\r\nline x\r\n");
    fake_clear(fs);

    /* want_writable holds input back until on_writable */
    fake_feed_str(fs, "WANT\r\ny\r\n");
    CU_ASSERT_TRUE(fake_want_writable(fs));
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "");
    CU_ASSERT_EQUAL(fake_writable(fs), 0);
    CU_ASSERT_EQUAL(fake_writable(fs), -1);
    CU_ASSERT_EQUAL(st->writable, 1);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "more\r\nline y\r\n");
    fake_clear(fs);

    /* a job still held when the client leaves: done(closing = 1), which must not write */
    fake_feed_str(fs, "TIMER\r\n");
    fake_feed_str(fs, "JOB\r\n");
    CU_ASSERT_EQUAL(fake_goodbye(fs, MP_BYE_SHUTDOWN), 0);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "bye 1\r\n");
    CU_ASSERT_EQUAL(fake_timers_active(fs), 0); /* closing cancels timers */
    CU_ASSERT_EQUAL(fake_run_job(fs), 0);
    CU_ASSERT_EQUAL(st->job_closing, 1);
    CU_ASSERT_EQUAL(fake_violations(fs), 0);
    mini_closed_why = -1;
    fake_end(fs);
    CU_ASSERT_EQUAL(mini_closed_why, MP_CLOSE_GOODBYE);
}

static void test_fake_violations(void)
{
    fake_session *fs = fake_new(&mini_protocol, MP_TLS_OFF);
    fake_connect(fs);
    fake_clear(fs);
    fprintf(stderr, "\n(the next two \"contract violation\" messages are expected)\n");
    fake_feed_str(fs, "BAD\r\n");
    CU_ASSERT_EQUAL(fake_violations(fs), 1);
    fake_feed_str(fs, "BYE!\r\nz\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "bye\r\n");
    CU_ASSERT_EQUAL(fake_violations(fs), 2);
    CU_ASSERT_TRUE(fake_close_requested(fs));
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "VIOLATION"));
    mini_closed_why = -1;
    fake_end(fs);
    CU_ASSERT_EQUAL(mini_closed_why, MP_CLOSE_NORMAL);

    fs = fake_new(&mini_protocol, MP_TLS_OFF);
    fake_connect(fs);
    fake_feed_str(fs, "DROP\r\nq\r\n");
    CU_ASSERT_TRUE(fake_dropped(fs));
    CU_ASSERT_TRUE(fake_closed(fs));
    CU_ASSERT_EQUAL(fake_discarded(fs), 9);
    CU_ASSERT_EQUAL(fake_violations(fs), 0);
    fake_end(fs);
}

/* ---------------------------------------------------------------------------------------------------- */

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite echo = CU_add_suite("echo", NULL, NULL);
    CU_pSuite fake = CU_add_suite("fake_host", NULL, NULL);
    if (!echo || !fake)
        return 2;
    struct {
        CU_pSuite suite;
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {echo, "descriptor", test_descriptor},
        {echo, "greeting", test_greeting},
        {echo, "echo lines, burst and byte by byte", test_echo_lines},
        {echo, "bare LF ends a line", test_bare_lf},
        {echo, "partial line waits for its end", test_partial_line},
        {echo, "empty line is an error", test_empty_line},
        {echo, "QUIT closes, later bytes ignored", test_quit},
        {echo, "STARTTLS drops pipelined input", test_starttls},
        {echo, "STARTTLS without TLS", test_starttls_unavailable},
        {echo, "STARTTLS when TLS is active", test_starttls_twice},
        {echo, "TLS required listener", test_tls_required},
        {echo, "goodbye reasons", test_goodbye},
        {echo, "MaxErrors through the fake host", test_max_errors},
        {fake, "basics: input, config, provider, TLS", test_fake_basics},
        {fake, "timers, blocking jobs, want_writable", test_fake_timers_jobs},
        {fake, "violations and drop", test_fake_violations},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (!CU_add_test(tests[i].suite, tests[i].name, tests[i].fn))
            return 2;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}

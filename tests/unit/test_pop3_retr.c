/*
 * mod_pop3's multi-line responses (pop3_retr.c) driven by the fake host: RETR and TOP streamed in bounded
 * steps with dot-stuffing across the store's read boundaries, LIST/UIDL of large maildrops, failures and
 * goodbyes in the middle of a response. Helpers and fakes: test_pop3.c, test_pop3_fake.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <mailproto/host.h>
#include "fake_host.h"
#include "test_pop3.h"
#include "test_pop3_fake.h"
#include "pop3.h"

/* ---------------------------------------------------------------- RETR / TOP streaming */

/* `in` dot-stuffed, with a final CRLF and the terminator, the way a client must receive it. */
static char *stuffed(const char *in, size_t len, size_t *out_len)
{
    char *out = malloc(2 * len + 8);
    size_t o = 0;
    int bol = 1;
    for (size_t i = 0; i < len; i++) {
        if (bol && in[i] == '.')
            out[o++] = '.';
        out[o++] = in[i];
        bol = in[i] == '\n';
    }
    if (!bol) {
        out[o++] = '\r';
        out[o++] = '\n';
    }
    memcpy(out + o, ".\r\n", 3);
    o += 3;
    *out_len = o;
    return out;
}

static void test_dot_stuffing_across_chunks(void)
{
    const char *msg = ".starts\r\nmid.dle\r\n.\r\n..two\r\nx\r\n.\r\n.end";
    for (size_t chunk = 1; chunk <= 16; chunk++) {
        pop3fake_reset();
        pop3fake_add(ALICE, NULL, msg, strlen(msg));
        pop3fake_cfg.max_read = chunk;
        fake_session *fs = logged_in(MP_TLS_OFF);
        cmd(fs, "RETR 1\r\n");
        drain(fs);
        size_t wl;
        char *want = stuffed(msg, strlen(msg), &wl);
        char head[64];
        int hl = snprintf(head, sizeof head, "+OK %zu octets\r\n", strlen(msg));
        CU_ASSERT_EQUAL(fake_output_len(fs), (size_t)hl + wl);
        CU_ASSERT_EQUAL(memcmp(fake_output(fs), head, (size_t)hl), 0);
        CU_ASSERT_EQUAL(memcmp(fake_output(fs) + hl, want, wl), 0);
        CU_ASSERT_TRUE(contains(fake_output(fs), "\r\n..starts\r\nmid.dle\r\n..\r\n...two\r\nx\r\n..\r\n..end\r\n.\r\n"));
        free(want);
        finish(fs);
    }
}

static void test_top(void)
{
    const char *msg = "Subject: t\r\nX-A: 1\r\n\r\nb1\r\n.b2\r\nb3\r\n";
    static const struct {
        const char *arg, *body;
    } cases[] = {
        {"0", "Subject: t\r\nX-A: 1\r\n\r\n"},
        {"1", "Subject: t\r\nX-A: 1\r\n\r\nb1\r\n"},
        {"2", "Subject: t\r\nX-A: 1\r\n\r\nb1\r\n..b2\r\n"},
        {"3", "Subject: t\r\nX-A: 1\r\n\r\nb1\r\n..b2\r\nb3\r\n"},
        {"99", "Subject: t\r\nX-A: 1\r\n\r\nb1\r\n..b2\r\nb3\r\n"},
        {"99999999999999999999999", "Subject: t\r\nX-A: 1\r\n\r\nb1\r\n..b2\r\nb3\r\n"},
    };
    for (size_t chunk = 1; chunk <= 7; chunk += 3) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            pop3fake_reset();
            pop3fake_add(ALICE, NULL, msg, strlen(msg));
            pop3fake_add(ALICE, NULL, "Subject: nobody", 15);        /* headers only, no line end */
            pop3fake_add(ALICE, NULL, "Subject: a\r\n\r\nno end", 20); /* body without line end */
            pop3fake_cfg.max_read = chunk;
            fake_session *fs = logged_in(MP_TLS_OFF);
            char c[64], want[256];
            snprintf(c, sizeof c, "TOP 1 %s\r\n", cases[i].arg);
            cmd(fs, c);
            drain(fs);
            snprintf(want, sizeof want, "+OK Top of message follows\r\n%s.\r\n", cases[i].body);
            CU_ASSERT_STRING_EQUAL(fake_output(fs), want);
            cmd(fs, "TOP 2 5\r\n");
            drain(fs);
            CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK Top of message follows\r\nSubject: nobody\r\n.\r\n");
            cmd(fs, "TOP 3 1\r\n");
            drain(fs);
            CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK Top of message follows\r\nSubject: a\r\n\r\nno end\r\n.\r\n");
            cmd(fs, "TOP 3 0\r\n");
            drain(fs);
            CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK Top of message follows\r\nSubject: a\r\n\r\n.\r\n");
            CU_ASSERT_EQUAL(pop3fake_stats_now.stream_opens, pop3fake_stats_now.stream_closes);
            finish(fs);
        }
    }
}

static void test_large_message_streams(void)
{
    pop3fake_reset();
    size_t size = 3 * 1024 * 1024 + 17;
    char *msg = malloc(size);
    const char *hdr = "Subject: big\r\n\r\n";
    memcpy(msg, hdr, strlen(hdr));
    for (size_t i = strlen(hdr); i < size; i++)
        msg[i] = (i % 77 == 75) ? '\r' : (i % 77 == 76) ? '\n' : (i % 77 == 0) ? '.' : (char)('a' + i % 26);
    pop3fake_add(ALICE, NULL, msg, size);
    fake_session *fs = logged_in(MP_TLS_OFF);
    fake_clear(fs);
    fake_feed_str(fs, "RETR 1\r\nNOOP\r\n");
    /* the first step produced a bounded amount and waits for the client */
    CU_ASSERT_TRUE(fake_want_writable(fs));
    CU_ASSERT_TRUE(fake_output_len(fs) < 512 * 1024);
    CU_ASSERT_TRUE(fake_input_pending(fs) > 0); /* NOOP waits behind the response */
    size_t max_step = 0, last = fake_output_len(fs);
    unsigned rounds = 0;
    while (fake_want_writable(fs)) {
        fake_writable(fs);
        size_t step = fake_output_len(fs) - last;
        if (step > max_step)
            max_step = step;
        last = fake_output_len(fs);
        rounds++;
    }
    CU_ASSERT_TRUE(rounds > 5);
    CU_ASSERT_TRUE(max_step < 512 * 1024);
    size_t wl;
    char *want = stuffed(msg, size, &wl);
    char head[64];
    int hl = snprintf(head, sizeof head, "+OK %zu octets\r\n", size);
    CU_ASSERT_EQUAL(fake_output_len(fs), hl + wl + strlen("+OK\r\n"));
    CU_ASSERT_EQUAL(memcmp(fake_output(fs) + hl, want, wl), 0);
    CU_ASSERT_STRING_EQUAL(fake_output(fs) + hl + wl, "+OK\r\n"); /* then the pipelined NOOP */
    free(want);
    free(msg);
    finish(fs);
}

static void test_read_error_mid_message(void)
{
    pop3fake_reset();
    char msg[4096];
    memset(msg, 'x', sizeof msg);
    memcpy(msg, "Subject: x\r\n\r\n", 14); /* the header ends in the first read */
    pop3fake_add(ALICE, NULL, msg, sizeof msg);
    pop3fake_cfg.max_read = 1000;
    pop3fake_cfg.read_fail_after = 2000;
    fake_session *fs = logged_in(MP_TLS_OFF);
    cmd(fs, "RETR 1\r\nNOOP\r\n");
    drain(fs);
    CU_ASSERT_TRUE(fake_close_requested(fs));
    CU_ASSERT_EQUAL(fake_output_len(fs), strlen("+OK 4096 octets\r\n") + 2000); /* no terminator */
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp40201]"));
    finish(fs);
    CU_ASSERT_EQUAL(pop3fake_stats_now.stream_opens, pop3fake_stats_now.stream_closes);
    CU_ASSERT_EQUAL(pop3fake_count(ALICE), 1);
}

static void test_goodbye_while_streaming(void)
{
    pop3fake_reset();
    size_t size = 2 * 1024 * 1024;
    char *msg = malloc(size);
    memset(msg, 'y', size);
    pop3fake_add(ALICE, NULL, msg, size);
    free(msg);
    fake_session *fs = logged_in(MP_TLS_OFF);
    cmd(fs, "DELE 1\r\nRSET\r\nRETR 1\r\n");
    CU_ASSERT_TRUE(fake_want_writable(fs));
    fake_clear(fs);
    fake_goodbye(fs, MP_BYE_SHUTDOWN);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), ""); /* no status line inside the message */
    finish(fs);
    CU_ASSERT_EQUAL(pop3fake_stats_now.stream_opens, pop3fake_stats_now.stream_closes);
    CU_ASSERT_FALSE(pop3fake_locked(ALICE));
}

static void test_big_listing(void)
{
    pop3fake_reset();
    for (int i = 0; i < 64; i++)
        pop3fake_add(ALICE, NULL, "x\r\n", 3);
    fake_session *fs = logged_in(MP_TLS_OFF);
    fake_set_pending_extra(fs, 10 * 1024 * 1024); /* a client that does not read: one batch, then wait */
    cmd(fs, "LIST\r\n");
    CU_ASSERT_TRUE(fake_want_writable(fs));
    fake_set_pending_extra(fs, 0);
    drain(fs);
    CU_ASSERT_TRUE(contains(fake_output(fs), "\r\n64 3\r\n.\r\n"));
    CU_ASSERT_EQUAL(strncmp(fake_output(fs), "+OK 64 messages (192 octets)\r\n1 3\r\n", 34), 0);
    finish(fs);
}

static void test_uidl_key_validity(void)
{
    pop3fake_reset();
    pop3fake_add(ALICE, "1700000000.M1P2.host,S=120", "a\r\n", 3);
    pop3fake_add(ALICE, "has space", "b\r\n", 3);
    char longkey[100];
    memset(longkey, 'k', 80);
    longkey[80] = '\0';
    pop3fake_add(ALICE, longkey, "c\r\n", 3);
    fake_session *fs = logged_in(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "UIDL 1\r\n"), "+OK 1 1700000000.M1P2.host,S=120\r\n");
    const char *out = cmd(fs, "UIDL 2\r\n");
    CU_ASSERT_EQUAL(strlen(out), strlen("+OK 2 \r\n") + 32); /* md5 hex of the key */
    char first[64];
    snprintf(first, sizeof first, "%s", out);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "UIDL 2\r\n"), first); /* stable */
    CU_ASSERT_EQUAL(strlen(cmd(fs, "UIDL 3\r\n")), strlen("+OK 3 \r\n") + 32);
    finish(fs);
}

/* The message's size bounds the reads: a stream longer than its size is cut there, a shorter one ends at
   its end (with the CRLF it lacks). Correct sizes never need a read past the end. */
static void test_size_bounds_reads(void)
{
    const char *msg = "Subject: s\r\n\r\n0123456789\r\n";
    pop3fake_reset();
    pop3fake_add(ALICE, NULL, msg, strlen(msg));
    pop3fake_cfg.size_adjust = -4;
    fake_session *fs = logged_in(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "RETR 1\r\n"), "+OK 22 octets\r\nSubject: s\r\n\r\n01234567\r\n.\r\n");
    finish(fs);

    pop3fake_reset();
    pop3fake_add(ALICE, NULL, msg, strlen(msg));
    pop3fake_cfg.size_adjust = 100;
    fs = logged_in(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "RETR 1\r\n"), "+OK 126 octets\r\nSubject: s\r\n\r\n0123456789\r\n.\r\n");
    finish(fs);
}

/* ---------------------------------------------------------------- RFC 6856: non-ASCII header fields */

#define H_ASCII "Subject: plain\r\nFrom: a@example.test\r\n\r\nbody\r\n"
#define H_UTF8 "Subject: Gr\xc3\xbc\xc3\x9f" "e\r\nFrom: j\xc3\xbcrgen@example.test\r\n\r\nbody\r\n"
#define H_BODY8 "Subject: ascii header\r\n\r\nGr\xc3\xbc\xc3\x9f" "e im Text\r\n.dot\r\n"
#define H_LATIN1 "Subject: Gr\xfc\xdf" "e\r\n\r\nx\r\n"
#define H_NOBODY "X-Only: header \xc3\xa4"         /* a header section and nothing else, no line end */
#define H_EMPTY "\r\nno header, body \xc3\xa4\r\n"  /* an empty header section */
#define H_LATE "Subject: x\r\nX-A: 1\r\nX-B: 2\r\nX-Late: \xc3\xa4\r\n\r\nb\xc3\xa4" "dy\r\n"

static void utf8_mailbox(void)
{
    pop3fake_reset();
    pop3fake_add(ALICE, NULL, H_ASCII, strlen(H_ASCII));
    pop3fake_add(ALICE, NULL, H_UTF8, strlen(H_UTF8));
    pop3fake_add(ALICE, NULL, H_BODY8, strlen(H_BODY8));
    pop3fake_add(ALICE, NULL, H_LATIN1, strlen(H_LATIN1));
    pop3fake_add(ALICE, NULL, H_NOBODY, strlen(H_NOBODY));
    pop3fake_add(ALICE, NULL, H_EMPTY, strlen(H_EMPTY));
    pop3fake_add(ALICE, NULL, H_LATE, strlen(H_LATE));
}

static char *retr_reply(const char *msg)
{
    size_t wl;
    char *body = stuffed(msg, strlen(msg), &wl);
    char *out = malloc(wl + 64);
    int n = snprintf(out, 64, "+OK %zu octets\r\n", strlen(msg));
    memcpy(out + n, body, wl);
    out[n + wl] = '\0';
    free(body);
    return out;
}

/* A client that did not issue UTF8 gets a message with 8-bit bytes in its header section as a surrogate:
   those bytes as "?", the size unchanged, the body as stored (RFC 6856 section 2.1; pop3_retr.c says why
   not -ERR [UTF8]), whatever the store's read sizes. */
static void test_utf8_header_surrogate(void)
{
    static const size_t chunks[] = {0, 1, 2, 3, 5, 7, 16};
    static const char *const sent[] = {
        H_ASCII,
        "Subject: Gr????e\r\nFrom: j??rgen@example.test\r\n\r\nbody\r\n",
        H_BODY8,
        "Subject: Gr??e\r\n\r\nx\r\n",
        "X-Only: header ??",
        H_EMPTY,
        "Subject: x\r\nX-A: 1\r\nX-B: 2\r\nX-Late: ??\r\n\r\nb\xc3\xa4" "dy\r\n",
    };
    static const char *const tops[] = {
        "Subject: plain\r\nFrom: a@example.test\r\n\r\n",
        "Subject: Gr????e\r\nFrom: j??rgen@example.test\r\n\r\n",
        "Subject: ascii header\r\n\r\n",
        "Subject: Gr??e\r\n\r\n",
        "X-Only: header ??\r\n",
        "\r\n",
        "Subject: x\r\nX-A: 1\r\nX-B: 2\r\nX-Late: ??\r\n\r\n",
    };
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        utf8_mailbox();
        pop3fake_cfg.max_read = chunks[c];
        fake_session *fs = logged_in(MP_TLS_OFF);
        for (int k = 1; k <= 7; k++) {
            char line[32], want_top[256];
            snprintf(line, sizeof line, "RETR %d\r\n", k);
            char *want = retr_reply(sent[k - 1]);
            cmd(fs, line);
            drain(fs);
            CU_ASSERT_STRING_EQUAL(fake_output(fs), want);
            free(want);
            snprintf(line, sizeof line, "TOP %d 0\r\n", k);
            snprintf(want_top, sizeof want_top, "+OK Top of message follows\r\n%s.\r\n", tops[k - 1]);
            cmd(fs, line);
            drain(fs);
            CU_ASSERT_STRING_EQUAL(fake_output(fs), want_top);
        }
        CU_ASSERT_EQUAL(fake_errors(fs), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp40206]"));
        /* LIST sizes are the messages' own, which is what RETR sent */
        char lst[64];
        snprintf(lst, sizeof lst, "+OK 2 %zu\r\n", strlen(H_UTF8));
        CU_ASSERT_STRING_EQUAL(cmd(fs, "LIST 2\r\n"), lst);
        CU_ASSERT_EQUAL(pop3fake_stats_now.stream_opens, pop3fake_stats_now.stream_closes);
        finish(fs);
    }

    /* ASCII headers: nothing to log */
    utf8_mailbox();
    fake_session *fs = logged_in(MP_TLS_OFF);
    cmd(fs, "RETR 1\r\n");
    drain(fs);
    cmd(fs, "RETR 3\r\n");
    drain(fs);
    CU_ASSERT_PTR_NULL(strstr(fake_log(fs), "[mp40206]"));
    finish(fs);
}

/* In UTF-8 mode every message is sent as stored. */
static void test_utf8_mode_retrieves(void)
{
    static const size_t chunks[] = {0, 1, 3};
    static const char *const msgs[] = {H_ASCII, H_UTF8, H_BODY8, H_LATIN1, H_NOBODY, H_EMPTY, H_LATE};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        utf8_mailbox();
        pop3fake_cfg.max_read = chunks[c];
        fake_session *fs = start(MP_TLS_OFF);
        CU_ASSERT_TRUE(strncmp(cmd(fs, "UTF8\r\nUSER alice\r\nPASS secret\r\n"), "+OK UTF8 enabled\r\n+OK\r\n+OK Logged in",
                               36) == 0);
        for (int k = 1; k <= 7; k++) {
            char line[32];
            snprintf(line, sizeof line, "RETR %d\r\n", k);
            char *want = retr_reply(msgs[k - 1]);
            cmd(fs, line);
            drain(fs);
            CU_ASSERT_STRING_EQUAL(fake_output(fs), want);
            free(want);
        }
        cmd(fs, "TOP 2 0\r\n");
        drain(fs);
        CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK Top of message follows\r\nSubject: Gr\xc3\xbc\xc3\x9f"
                                                "e\r\nFrom: j\xc3\xbcrgen@example.test\r\n\r\n.\r\n");
        CU_ASSERT_PTR_NULL(strstr(fake_log(fs), "[mp40206]"));
        finish(fs);
    }
}

/* A message whose header section is longer than the first read (64 KiB): 8-bit header bytes before and
   after the first 64 KiB are sent as "?" (the size stays), the body as it is. The message: filler fields
   making header_bytes bytes, then `late` (fields with their CRLF), the empty line and a body "body ä". */
static char *long_header_message(size_t header_bytes, const char *late, size_t *len)
{
    const char *tail_fmt = "%s\r\nbody \xc3\xa4\r\n";
    char *m = malloc(header_bytes + 256);
    size_t o = 0;
    while (o + 80 < header_bytes) {
        memcpy(m + o, "X-Filler: ", 10);
        memset(m + o + 10, 'f', 66);
        memcpy(m + o + 76, "\r\n", 2);
        o += 78;
    }
    /* a last field that makes the header section exactly header_bytes long */
    memcpy(m + o, "X-Pad: ", 7);
    for (o += 7; o < header_bytes - 2; o++)
        m[o] = 'p';
    memcpy(m + o, "\r\n", 2);
    o += 2;
    o += (size_t)snprintf(m + o, 256, tail_fmt, late);
    *len = o;
    return m;
}

static void test_long_header_sanitized(void)
{
    /* the late field's bytes must not be 8-bit when a client not in UTF-8 mode receives them */
    size_t len;
    char *m = long_header_message(70000, "X-Late: Gr\xc3\xbc\xc3\x9f" "e\r\n", &len);
    for (int mode = 0; mode <= 1; mode++) {
        pop3fake_reset();
        pop3fake_add(ALICE, NULL, m, len);
        fake_session *fs = start(MP_TLS_OFF);
        const char *login = mode ? "UTF8\r\nUSER alice\r\nPASS secret\r\n" : "USER alice\r\nPASS secret\r\n";
        CU_ASSERT_TRUE(contains(cmd(fs, login), "+OK Logged in"));
        cmd(fs, "RETR 1\r\n");
        drain(fs);
        char head[64];
        int hl = snprintf(head, sizeof head, "+OK %zu octets\r\n", len);
        CU_ASSERT_EQUAL(fake_output_len(fs), (size_t)hl + len + 3); /* the same size; no dots to stuff */
        const char *got = fake_output(fs) + hl;
        if (mode == 0) {
            CU_ASSERT_TRUE(contains(got, "\r\nX-Late: Gr????e\r\n\r\nbody \xc3\xa4\r\n.\r\n"));
            CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp40206]"));
        } else {
            CU_ASSERT_EQUAL(memcmp(got, m, len), 0);
        }
        finish(fs);
    }
    free(m);

    /* 8-bit bytes within the first 64 KiB of a long header and after them */
    m = long_header_message(70000, "X-Late: \xc3\xa4\r\n", &len);
    m[100] = (char)0xc3;
    m[101] = (char)0xa4;
    pop3fake_reset();
    pop3fake_add(ALICE, NULL, m, len);
    fake_session *fs = logged_in(MP_TLS_OFF);
    cmd(fs, "RETR 1\r\n");
    drain(fs);
    char head[64];
    int hl = snprintf(head, sizeof head, "+OK %zu octets\r\n", len);
    CU_ASSERT_EQUAL(fake_output_len(fs), (size_t)hl + len + 3);
    m[100] = m[101] = '?';
    CU_ASSERT_EQUAL(memcmp(fake_output(fs) + hl, m, 200), 0);
    CU_ASSERT_TRUE(contains(fake_output(fs), "\r\nX-Late: ??\r\n\r\nbody \xc3\xa4\r\n.\r\n"));
    finish(fs);
    free(m);

    /* the empty line that ends the header straddles the end of the first read: the body is not touched */
    for (size_t at = POP3_CHUNK - 3; at <= POP3_CHUNK + 1; at++) {
        m = long_header_message(at, "", &len); /* header `at` bytes, then "\r\n" and the body */
        CU_ASSERT_EQUAL(memcmp(m + at, "\r\nbody \xc3\xa4\r\n", 12), 0);
        pop3fake_reset();
        pop3fake_add(ALICE, NULL, m, len);
        fs = logged_in(MP_TLS_OFF);
        cmd(fs, "RETR 1\r\n");
        drain(fs);
        CU_ASSERT_TRUE(contains(fake_output(fs), "\r\n\r\nbody \xc3\xa4\r\n.\r\n"));
        CU_ASSERT_PTR_NULL(strstr(fake_log(fs), "[mp40206]"));
        finish(fs);
        free(m);
    }
}

/* A read that fails before the status line: an -ERR, and the session goes on. */
static void test_read_error_before_status(void)
{
    pop3fake_reset();
    pop3fake_add(ALICE, NULL, H_ASCII, strlen(H_ASCII));
    pop3fake_cfg.read_fail_after = 0;
    fake_session *fs = logged_in(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "RETR 1\r\nNOOP\r\n"), "-ERR [SYS/TEMP] Cannot read message 1\r\n+OK\r\n");
    CU_ASSERT_FALSE(fake_close_requested(fs));
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp40205]"));
    CU_ASSERT_EQUAL(pop3fake_stats_now.stream_opens, pop3fake_stats_now.stream_closes);
    finish(fs);
}

void pop3_retr_tests(CU_pSuite su)
{
    CU_add_test(su, "dot-stuffing across chunks", test_dot_stuffing_across_chunks);
    CU_add_test(su, "TOP", test_top);
    CU_add_test(su, "large message streams", test_large_message_streams);
    CU_add_test(su, "read error mid-message", test_read_error_mid_message);
    CU_add_test(su, "goodbye while streaming", test_goodbye_while_streaming);
    CU_add_test(su, "big listing", test_big_listing);
    CU_add_test(su, "UIDL key validity", test_uidl_key_validity);
    CU_add_test(su, "size bounds reads", test_size_bounds_reads);
    CU_add_test(su, "non-ASCII headers as a surrogate outside UTF-8 mode", test_utf8_header_surrogate);
    CU_add_test(su, "UTF-8 mode retrieves everything", test_utf8_mode_retrieves);
    CU_add_test(su, "long header sanitized", test_long_header_sanitized);
    CU_add_test(su, "read error before the status line", test_read_error_before_status);
}

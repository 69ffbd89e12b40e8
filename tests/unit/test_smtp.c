/*
 * mod_smtp driven by the fake host (tests/unit/fake_host.h) with fake store and auth providers
 * (test_smtp_fakes.c): the parser and the DATA machine on their own, then whole sessions fed bytes in
 * bursts and one at a time, every command in every state, pipelining, BDAT, the smuggling sequences,
 * limits, each role's policy, STARTTLS and AUTH.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include "fake_host.h"
#include "smtp_data.h"
#include "smtp_parse.h"
#include "test_smtp_fakes.h"

extern const mp_module mp_module_descriptor;
#define M (&mp_module_descriptor)

static const char *const SUBMISSION[] = {"Submission", "on", NULL};

static fake_session *start(mp_tls_mode tls) { return smtp_fake_start(M, tls, NULL); }

static void finish(fake_session *fs)
{
    CU_ASSERT_EQUAL(fake_violations(fs), 0);
    fake_end(fs);
    CU_ASSERT_EQUAL(fstats.users_open, 0); /* every user the handler opened was closed */
}

/* Feeds `in` and checks the whole output, then clears it. */
#define EXPECT(fs, in, want) \
    do { \
        fake_feed_str((fs), (in)); \
        CU_ASSERT_STRING_EQUAL(fake_output(fs), (want)); \
        if (strcmp(fake_output(fs), (want)) != 0) \
            fprintf(stderr, "\n--- line %d: sent %s\n--- got:\n%s--- want:\n%s", __LINE__, (in), fake_output(fs), (want)); \
        fake_clear(fs); \
    } while (0)

/* Like EXPECT, then the 250 of a stored message (whose id varies). */
#define EXPECT_STORED(fs, in, want) \
    do { \
        fake_feed_str((fs), (in)); \
        const char *o_ = fake_output(fs); \
        size_t w_ = strlen(want); \
        CU_ASSERT(strncmp(o_, (want), w_) == 0 && strncmp(o_ + w_, "250 2.0.0 Ok: stored as ", 24) == 0 && \
                  strchr(o_ + w_, '\n') == o_ + strlen(o_) - 1); \
        if (strncmp(o_, (want), w_) != 0 || strncmp(o_ + w_, "250 2.0.0 Ok: stored as ", 24) != 0) \
            fprintf(stderr, "\n--- line %d: got:\n%s--- want:\n%s250 2.0.0 Ok: stored as ...\n", __LINE__, o_, (want)); \
        fake_clear(fs); \
    } while (0)

/* Runs `in` on a fresh session in one burst and on another byte by byte; both must answer `want`. */
static void both_ways(mp_tls_mode tls, const char *const *extra, const char *in, size_t len, const char *want,
                      int line)
{
    for (int way = 0; way < 2; way++) {
        fakes_reset();
        fake_session *fs = smtp_fake_start(M, tls, extra);
        if (way == 0)
            fake_feed(fs, in, len);
        else
            fake_feed_bytewise(fs, in, len);
        CU_ASSERT_STRING_EQUAL(fake_output(fs), want);
        if (strcmp(fake_output(fs), want) != 0)
            fprintf(stderr, "\n--- line %d (%s): got:\n%s--- want:\n%s", line, way ? "bytewise" : "burst",
                    fake_output(fs), want);
        finish(fs);
    }
}
#define BOTH(tls, extra, in, want) both_ways((tls), (extra), (in), strlen(in), (want), __LINE__)

#define EHLO_MX(helo) \
    "250-mail.example.test Hello " helo " [192.0.2.1]\r\n250-PIPELINING\r\n250-SIZE 4096\r\n" \
    "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n"
#define EHLO_MX_PLAIN EHLO_MX("client.example")
#define EHLO_X EHLO_MX("x")
#define EHLO_TAIL "250 DSN\r\n"

/* ==================================================================================== the parser */

static void test_parse_command(void)
{
    smtp_command c;
    CU_ASSERT_EQUAL(smtp_parse_command("EHLO x", 6, &c), 0);
    CU_ASSERT_EQUAL(c.id, SMTP_CMD_EHLO);
    CU_ASSERT_EQUAL(c.arg.len, 1);
    CU_ASSERT_EQUAL(smtp_parse_command("noop", 4, &c), 0);
    CU_ASSERT_EQUAL(c.id, SMTP_CMD_NOOP);
    CU_ASSERT_FALSE(c.has_arg);
    CU_ASSERT_EQUAL(smtp_parse_command("mail from:<a@b>", 15, &c), 0);
    CU_ASSERT_EQUAL(c.id, SMTP_CMD_MAIL);
    CU_ASSERT_EQUAL(c.arg.len, 5);
    CU_ASSERT_EQUAL(smtp_parse_command("MAIL TO:<a@b>", 13, &c), -1);
    CU_ASSERT_EQUAL(smtp_parse_command("RCPT TO:<a@b> NOTIFY=NEVER", 26, &c), 0);
    CU_ASSERT_EQUAL(c.id, SMTP_CMD_RCPT);
    CU_ASSERT_EQUAL(smtp_parse_command("XYZZY", 5, &c), 0);
    CU_ASSERT_EQUAL(c.id, SMTP_CMD_UNKNOWN);
    CU_ASSERT_EQUAL(smtp_parse_command("NO\001OP", 5, &c), -1);
    CU_ASSERT_EQUAL(smtp_parse_command("", 0, &c), -1);
    CU_ASSERT_EQUAL(smtp_parse_command("STARTTLS", 8, &c), 0);
    CU_ASSERT_EQUAL(c.id, SMTP_CMD_STARTTLS);
}

static smtp_parse_result env(const char *s, int rcpt, smtp_envelope_arg *a)
{
    return smtp_parse_envelope(s, strlen(s), rcpt, a);
}

static void test_parse_paths(void)
{
    smtp_envelope_arg a;
    CU_ASSERT_EQUAL(env("<alice@example.test>", 0, &a), SMTP_PARSE_OK);
    CU_ASSERT_EQUAL(a.path.mailbox.len, 18);
    CU_ASSERT_EQUAL(a.path.local.len, 5);
    CU_ASSERT_EQUAL(env("<>", 0, &a), SMTP_PARSE_OK);
    CU_ASSERT_TRUE(a.path.null_path);
    CU_ASSERT_EQUAL(env("<>", 1, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<Postmaster>", 1, &a), SMTP_PARSE_OK);
    CU_ASSERT_TRUE(a.path.postmaster);
    CU_ASSERT_EQUAL(env("<Postmaster>", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env(" <a@b.c>", 0, &a), SMTP_PARSE_OK); /* tolerated space after the colon */
    CU_ASSERT_EQUAL(env("a@b.c", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<a@b.c", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<a@b.c>x", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<a..b@c.d>", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<.a@c.d>", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<a@-c.d>", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<a@c-.d>", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<a@c..d>", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<a b@c.d>", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<\"a b\"@c.d>", 0, &a), SMTP_PARSE_OK);
    CU_ASSERT_EQUAL(env("<\"a\\\"b>\"@c.d>", 0, &a), SMTP_PARSE_OK);
    CU_ASSERT_EQUAL(env("<\"a\001\"@c.d>", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<@r1.example,@r2.example:a@c.d>", 0, &a), SMTP_PARSE_OK);
    CU_ASSERT_EQUAL(a.path.mailbox.len, 5);
    CU_ASSERT_EQUAL(env("<@r1.example:a@c.d>", 0, &a), SMTP_PARSE_OK);
    CU_ASSERT_EQUAL(env("<@r1.example,a@c.d>", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<a@[192.0.2.1]>", 0, &a), SMTP_PARSE_OK);
    CU_ASSERT_TRUE(a.path.literal);
    CU_ASSERT_EQUAL(env("<a@[IPv6:2001:db8::1]>", 0, &a), SMTP_PARSE_OK);
    CU_ASSERT_EQUAL(env("<a@[300.0.2.1]>", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<a@[IPv6:zz]>", 0, &a), SMTP_PARSE_BAD_PATH);
    CU_ASSERT_EQUAL(env("<a@[x-tag:content]>", 0, &a), SMTP_PARSE_OK);
    /* RFC 6531: UTF-8 is parsed; the session decides whether SMTPUTF8 allows it */
    CU_ASSERT_EQUAL(env("<b\xc3\xa9@\xc3\xa9xample.test>", 0, &a), SMTP_PARSE_OK);
    CU_ASSERT_TRUE(a.path.utf8);
    CU_ASSERT_EQUAL(env("<b\xc3@example.test>", 0, &a), SMTP_PARSE_BAD_UTF8);
    CU_ASSERT_EQUAL(env("<b\xc0\xaf@example.test>", 0, &a), SMTP_PARSE_BAD_UTF8); /* overlong */
    CU_ASSERT_EQUAL(env("<b\xed\xa0\x80@example.test>", 0, &a), SMTP_PARSE_BAD_UTF8); /* surrogate */
    /* limits: RFC 5321 section 4.5.3.1 */
    char big[400];
    snprintf(big, sizeof big, "<%.*s@example.test>", 64, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    CU_ASSERT_EQUAL(env(big, 0, &a), SMTP_PARSE_OK);
    snprintf(big, sizeof big, "<%.*s@example.test>", 65, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    CU_ASSERT_EQUAL(env(big, 0, &a), SMTP_PARSE_PATH_LONG);
    char dom[300];
    memset(dom, 'd', sizeof dom);
    for (int i = 50; i < 290; i += 50)
        dom[i] = '.';
    snprintf(big, sizeof big, "<a@%.*s>", 260, dom);
    CU_ASSERT_EQUAL(env(big, 0, &a), SMTP_PARSE_PATH_LONG);
}

static void test_parse_params(void)
{
    smtp_envelope_arg a;
    CU_ASSERT_EQUAL(env("<a@b.c> SIZE=100 BODY=8BITMIME SMTPUTF8", 0, &a), SMTP_PARSE_OK);
    CU_ASSERT_EQUAL(a.nparams, 3);
    CU_ASSERT_TRUE(smtp_slice_ieq(a.params[0].key, "size"));
    CU_ASSERT_TRUE(smtp_slice_ieq(a.params[0].value, "100"));
    CU_ASSERT_FALSE(a.params[2].has_value);
    int dup = 0;
    CU_ASSERT_PTR_NOT_NULL(smtp_find_param(&a, "body", &dup));
    CU_ASSERT_FALSE(dup);
    CU_ASSERT_EQUAL(env("<a@b.c> SIZE=", 0, &a), SMTP_PARSE_BAD_PARAM);
    CU_ASSERT_EQUAL(env("<a@b.c> =1", 0, &a), SMTP_PARSE_BAD_PARAM);
    CU_ASSERT_EQUAL(env("<a@b.c> A=b=c", 0, &a), SMTP_PARSE_BAD_PARAM);
    CU_ASSERT_EQUAL(env("<a@b.c> A_B=1", 0, &a), SMTP_PARSE_BAD_PARAM);
    CU_ASSERT_EQUAL(env("<a@b.c> A=\001", 0, &a), SMTP_PARSE_BAD_PARAM);
    CU_ASSERT_EQUAL(env("<a@b.c>  X=1 ", 0, &a), SMTP_PARSE_OK);
    CU_ASSERT_EQUAL(env("<a@b.c> 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16", 0, &a), SMTP_PARSE_OK);
    CU_ASSERT_EQUAL(env("<a@b.c> 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", 0, &a), SMTP_PARSE_TOO_MANY);
    uint64_t v;
    CU_ASSERT_EQUAL(smtp_parse_size("12345", 5, &v), 0);
    CU_ASSERT_EQUAL(v, 12345);
    CU_ASSERT_EQUAL(smtp_parse_size("99999999999999999999", 20, &v), 0);
    CU_ASSERT_EQUAL(v, UINT64_MAX);
    CU_ASSERT_EQUAL(smtp_parse_size("123456789012345678901", 21, &v), -1);
    CU_ASSERT_EQUAL(smtp_parse_size("12a", 3, &v), -1);
    CU_ASSERT_TRUE(smtp_xtext_valid("abc+2Bdef", 9, 0));
    CU_ASSERT_FALSE(smtp_xtext_valid("abc+2bdef", 9, 0));
    CU_ASSERT_FALSE(smtp_xtext_valid("abc+2", 5, 0));
    CU_ASSERT_FALSE(smtp_xtext_valid("a=b", 3, 0));
    CU_ASSERT_TRUE(smtp_helo_valid("client.example", 14));
    CU_ASSERT_TRUE(smtp_helo_valid("[192.0.2.1]", 11));
    CU_ASSERT_FALSE(smtp_helo_valid("bad host", 8));
    CU_ASSERT_FALSE(smtp_helo_valid("a..b", 4));
    CU_ASSERT_FALSE(smtp_helo_valid("x(y)", 4));
}

static void test_line_find(void)
{
    size_t ll, used;
    int bare;
    CU_ASSERT_EQUAL(smtp_line_find("NOOP\r\nX", 7, &ll, &used, &bare), SMTP_LINE_OK);
    CU_ASSERT_EQUAL(ll, 4);
    CU_ASSERT_EQUAL(used, 6);
    CU_ASSERT_FALSE(bare);
    CU_ASSERT_EQUAL(smtp_line_find("NOOP\r", 5, &ll, &used, &bare), SMTP_LINE_MORE);
    CU_ASSERT_FALSE(bare);
    CU_ASSERT_EQUAL(smtp_line_find("NO\nOP\r\n", 7, &ll, &used, &bare), SMTP_LINE_OK);
    CU_ASSERT_TRUE(bare);
    CU_ASSERT_EQUAL(used, 7);
    CU_ASSERT_EQUAL(smtp_line_find("NO\rOP\r\n", 7, &ll, &used, &bare), SMTP_LINE_OK);
    CU_ASSERT_TRUE(bare);
    CU_ASSERT_EQUAL(smtp_line_find("NO\r\rOP", 6, &ll, &used, &bare), SMTP_LINE_MORE);
    CU_ASSERT_TRUE(bare);
}

/* ==================================================================================== the DATA machine */

typedef struct sink {
    char buf[4096];
    size_t len;
} sink;

static void sink_out(void *arg, const char *b, size_t n)
{
    sink *k = arg;
    CU_ASSERT_FATAL(k->len + n <= sizeof k->buf);
    memcpy(k->buf + k->len, b, n);
    k->len += n;
}

/* Feeds in whole and byte by byte: same message, same end, same verdict. Returns bytes up to the end (or
   len when no end). */
static size_t data_both(const char *in, size_t len, const char *want, size_t want_len, int want_bare, int line)
{
    size_t ends[2] = {0, 0};
    static sink first;
    for (int way = 0; way < 2; way++) {
        smtp_data_machine m;
        smtp_data_init(&m);
        sink k = {.len = 0};
        int done = 0;
        size_t used = 0;
        if (way == 0) {
            used = smtp_data_feed(&m, in, len, sink_out, &k, &done);
        } else {
            while (used < len && !done)
                used += smtp_data_feed(&m, in + used, 1, sink_out, &k, &done);
        }
        ends[way] = used;
        if (way == 0)
            first = k;
        if (!want) { /* only: the same bytes both ways */
            want = first.buf;
            want_len = first.len;
        }
        CU_ASSERT_EQUAL(k.len, want_len);
        CU_ASSERT(k.len == want_len && memcmp(k.buf, want, want_len) == 0);
        CU_ASSERT_EQUAL(m.bare, want_bare);
        if (k.len != want_len || memcmp(k.buf, want, want_len) != 0 || m.bare != want_bare)
            fprintf(stderr, "\ndata_both line %d way %d: got %zu bytes bare=%d\n", line, way, k.len, m.bare);
    }
    CU_ASSERT_EQUAL(ends[0], ends[1]);
    return ends[0];
}
#define DATA_BOTH(in, want, bare) data_both((in), strlen(in), (want), strlen(want), (bare), __LINE__)

static void test_data_machine(void)
{
    CU_ASSERT_EQUAL(DATA_BOTH("a\r\nb\r\n.\r\nNOOP\r\n", "a\r\nb\r\n", 0), 9);
    CU_ASSERT_EQUAL(DATA_BOTH(".\r\n", "", 0), 3);                       /* empty message */
    CU_ASSERT_EQUAL(DATA_BOTH("..x\r\n.\r\n", ".x\r\n", 0), 8);          /* dot-unstuffing */
    CU_ASSERT_EQUAL(DATA_BOTH("..\r\n.\r\n", ".\r\n", 0), 7);
    CU_ASSERT_EQUAL(DATA_BOTH(".x\r\n.\r\n", "x\r\n", 0), 7);
    CU_ASSERT_EQUAL(DATA_BOTH("a.\r\n.b\r\n.\r\n", "a.\r\nb\r\n", 0), 11);
    CU_ASSERT_EQUAL(DATA_BOTH("no end\r\n", "no end\r\n", 0), 8);
    /* the smuggling class: none of these ends the data, each marks it bad (the bytes do not matter) */
    static const char *const smuggle[] = {"a\n.\nb", "a\r.\rb", "a\r\n.\nb", "a\n.\r\nb", "a\r\n.\rb", "a\r.\r\nb",
                                          "a\n.\rb", "a\r\n.\r\rb", "\n.\n", "\r\n.\n\r\n"};
    for (size_t i = 0; i < sizeof smuggle / sizeof smuggle[0]; i++)
        CU_ASSERT_EQUAL(data_both(smuggle[i], strlen(smuggle[i]), NULL, 0, 1, __LINE__), strlen(smuggle[i]));
    /* ... and the real end still ends it */
    CU_ASSERT_EQUAL(data_both("a\n.\nb\r\n.\r\nX", 11, NULL, 0, 1, __LINE__), 10);
    CU_ASSERT_EQUAL(DATA_BOTH("\r\r\n.\r\n", "\r\r\n", 1), 6);
    CU_ASSERT_EQUAL(DATA_BOTH("\0\r\n.\r\n", "", 0), 0); /* strlen stops at NUL: just no crash */
    /* binary bytes pass through */
    static const char bin[] = "\x01\x02\xff\x80\r\n.\r\n";
    CU_ASSERT_EQUAL(data_both(bin, sizeof bin - 1, "\x01\x02\xff\x80\r\n", 6, 0, __LINE__), sizeof bin - 1);
}

static void test_bdat_check(void)
{
    smtp_data_machine m;
    smtp_data_init(&m);
    smtp_bdat_check(&m, "ab\r", 3);
    smtp_bdat_check(&m, "\ncd\r\n.\r\n", 8);
    CU_ASSERT_EQUAL(smtp_bdat_finish(&m), 0);
    smtp_data_init(&m);
    smtp_bdat_check(&m, "ab\r", 3);
    smtp_bdat_check(&m, "x", 1);
    CU_ASSERT_EQUAL(smtp_bdat_finish(&m), 1);
    smtp_data_init(&m);
    smtp_bdat_check(&m, "ab\r", 3);
    CU_ASSERT_EQUAL(smtp_bdat_finish(&m), 1);
    smtp_data_init(&m);
    smtp_bdat_check(&m, "a\nb", 3);
    CU_ASSERT_EQUAL(smtp_bdat_finish(&m), 1);
}

/* ==================================================================================== sessions */

static void test_descriptor(void)
{
    CU_ASSERT_EQUAL(M->magic, MP_MODULE_MAGIC);
    CU_ASSERT_STRING_EQUAL(M->name, "smtp");
    CU_ASSERT_EQUAL(M->kind, MP_KIND_PROTOCOL);
    CU_ASSERT_STRING_EQUAL(M->protocol->name, "smtp");
    CU_ASSERT_PTR_NULL(M->init); /* nothing per generation: provider instances are the host's */
    const mp_directive *d = M->directives;
    CU_ASSERT_STRING_EQUAL(d[0].name, "Submission");
    CU_ASSERT_PTR_NULL(d[0].check("on", NULL));
    CU_ASSERT_PTR_NOT_NULL(d[0].check("yes", NULL));
    CU_ASSERT_STRING_EQUAL(d[1].name, "MaxRecipients");
    CU_ASSERT_PTR_NULL(d[1].check("100", NULL));
    CU_ASSERT_PTR_NOT_NULL(d[1].check("0", NULL));
    CU_ASSERT_PTR_NOT_NULL(d[1].check("x", NULL));
    CU_ASSERT_PTR_NULL(d[2].name);
}

static void test_ehlo_capabilities(void)
{
    fakes_reset();
    fake_session *fs = start(MP_TLS_OFF);
    EXPECT(fs, "EHLO client.example\r\n", EHLO_MX_PLAIN EHLO_TAIL);
    EXPECT(fs, "HELO client.example\r\n", "250 mail.example.test\r\n");
    EXPECT(fs, "EHLO\r\n", "501 5.5.4 Syntax: EHLO hostname\r\n");
    EXPECT(fs, "EHLO bad host\r\n", "501 5.5.4 Invalid domain name in EHLO\r\n");
    EXPECT(fs, "EHLO [192.0.2.1]\r\n",
           "250-mail.example.test Hello [192.0.2.1] [192.0.2.1]\r\n250-PIPELINING\r\n250-SIZE 4096\r\n"
           "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n" EHLO_TAIL);
    EXPECT(fs, "LHLO client.example\r\n", "500 5.5.2 Error: command not recognized\r\n");
    finish(fs);

    /* STARTTLS offered before TLS, AUTH only after */
    fs = start(MP_TLS_STARTTLS);
    EXPECT(fs, "EHLO client.example\r\n", EHLO_MX_PLAIN "250-STARTTLS\r\n" EHLO_TAIL);
    EXPECT(fs, "STARTTLS\r\n", "220 2.0.0 Ready to start TLS\r\n");
    CU_ASSERT_EQUAL(fake_tls_complete(fs), 0);
    EXPECT(fs, "EHLO client.example\r\n", EHLO_MX_PLAIN "250-AUTH PLAIN LOGIN\r\n" EHLO_TAIL);
    finish(fs);

    fs = start(MP_TLS_IMPLICIT);
    fstats.scram = 1;
    EXPECT(fs, "EHLO client.example\r\n", EHLO_MX_PLAIN "250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n" EHLO_TAIL);
    finish(fs);

    /* without UserDB, no AUTH */
    static const char *const nodb[] = {"UserDB", NULL, NULL};
    fs = smtp_fake_start(M, MP_TLS_IMPLICIT, nodb);
    EXPECT(fs, "EHLO client.example\r\n", EHLO_MX_PLAIN EHLO_TAIL);
    EXPECT(fs, "AUTH PLAIN\r\n", "502 5.5.1 Error: authentication not enabled\r\n");
    finish(fs);
}

/* Every command before EHLO, on an MX listener. */
static void test_commands_before_ehlo(void)
{
    fakes_reset();
    fake_session *fs = start(MP_TLS_STARTTLS);
    EXPECT(fs, "MAIL FROM:<a@b.example>\r\n", "503 5.5.1 Error: send HELO/EHLO first\r\n");
    EXPECT(fs, "RCPT TO:<alice@example.test>\r\n", "503 5.5.1 Error: need MAIL command\r\n");
    EXPECT(fs, "DATA\r\n", "503 5.5.1 Error: need MAIL command\r\n");
    /* BDAT's chunk is read and dropped even when refused: "RSET" inside it is no command */
    EXPECT(fs, "BDAT 6\r\nRSET\r\nNOOP\r\n", "503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n");
    EXPECT(fs, "RSET\r\n", "250 2.0.0 Ok\r\n");
    EXPECT(fs, "RSET x\r\n", "501 5.5.4 Syntax: RSET\r\n");
    EXPECT(fs, "NOOP\r\n", "250 2.0.0 Ok\r\n");
    EXPECT(fs, "NOOP anything\r\n", "250 2.0.0 Ok\r\n");
    EXPECT(fs, "VRFY alice\r\n", "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n");
    EXPECT(fs, "VRFY\r\n", "501 5.5.4 Syntax: VRFY address\r\n");
    EXPECT(fs, "EXPN list\r\n", "502 5.5.1 EXPN not available\r\n");
    EXPECT(fs, "HELP\r\n",
           "214-2.0.0 mailproto smtp, commands:\r\n214-2.0.0   HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP "
           "STARTTLS AUTH\r\n214 2.0.0 End of HELP info\r\n");
    EXPECT(fs, "AUTH PLAIN\r\n", "503 5.5.1 Error: send EHLO first\r\n");
    EXPECT(fs, "XYZZY\r\n", "500 5.5.2 Error: command not recognized\r\n");
    EXPECT(fs, "\r\n", "500 5.5.2 Error: bad syntax\r\n");
    EXPECT(fs, "QUIT now\r\n", "501 5.5.4 Syntax: QUIT\r\n");
    CU_ASSERT_EQUAL(fake_errors(fs), 11);
    EXPECT(fs, "QUIT\r\nNOOP\r\n", "221 2.0.0 mail.example.test Service closing transmission channel\r\n");
    CU_ASSERT_TRUE(fake_close_requested(fs));
    CU_ASSERT_EQUAL(fake_discarded(fs), 6);
    finish(fs);
}

/* HELO (not EHLO) allows no ESMTP parameters (RFC 5321 section 4.1.1.11). */
static void test_helo_session(void)
{
    fakes_reset();
    fake_session *fs = start(MP_TLS_OFF);
    EXPECT(fs, "HELO client.example\r\n", "250 mail.example.test\r\n");
    EXPECT(fs, "MAIL FROM:<a@b.example> SIZE=10\r\n", "555 5.5.4 MAIL parameters need EHLO\r\n");
    EXPECT(fs, "MAIL FROM:<a@b.example>\r\n", "250 2.1.0 Ok\r\n");
    EXPECT(fs, "RCPT TO:<alice@example.test> NOTIFY=NEVER\r\n", "555 5.5.4 RCPT parameters need EHLO\r\n");
    EXPECT(fs, "RCPT TO:<alice@example.test>\r\nDATA\r\n", "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    fake_feed_str(fs, "Hi\r\n.\r\n");
    CU_ASSERT_NSTRING_EQUAL(fake_output(fs), "250 2.0.0 Ok: stored as ", 24);
    CU_ASSERT_EQUAL(fstats.committed, 1);
    finish(fs);
}

/* A whole transaction, in one burst and one byte at a time, with the stored bytes checked. */
static void test_transaction(void)
{
    static const char in[] =
        "EHLO client.example\r\n"
        "MAIL FROM:<bob@remote.example> BODY=8BITMIME SIZE=100\r\n"
        "RCPT TO:<alice@example.test>\r\n"
        "DATA\r\n"
        "Subject: hi\r\n\r\n..leading dot\r\nline two\r\n.\r\n"
        "QUIT\r\n";
    static const char want[] =
        EHLO_MX_PLAIN EHLO_TAIL
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n";
    for (int way = 0; way < 2; way++) {
        fakes_reset();
        fake_session *fs = start(MP_TLS_OFF);
        if (way)
            fake_feed_bytewise(fs, in, strlen(in));
        else
            fake_feed_str(fs, in);
        const char *out = fake_output(fs);
        CU_ASSERT_NSTRING_EQUAL(out, want, strlen(want));
        if (strncmp(out, want, strlen(want))) fprintf(stderr, "OUT: %s\n", out);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "\r\n250 2.0.0 Ok: stored as "));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "221 2.0.0 mail.example.test Service closing transmission channel\r\n"));
        CU_ASSERT_EQUAL(fstats.committed, 1);
        CU_ASSERT_EQUAL(fstats.aborted, 0);
        CU_ASSERT_STRING_EQUAL(fstats.last_targets, "alice@example.test");
        size_t blen = 0;
        const char *body = fakes_last_body(&blen);
        static const char msg[] = "Subject: hi\r\n\r\n.leading dot\r\nline two\r\n";
        CU_ASSERT_PTR_NOT_NULL_FATAL(body);
        CU_ASSERT_EQUAL(blen, strlen(msg));
        CU_ASSERT(blen == strlen(msg) && memcmp(body, msg, blen) == 0);
        /* the trace headers: RFC 5321 section 4.4 */
        CU_ASSERT_NSTRING_EQUAL(fstats.last, "Return-Path: <bob@remote.example>\r\nReceived: from client.example "
                                "([192.0.2.1])\r\n\tby mail.example.test (mailproto) with ESMTP id ", 113);
        CU_ASSERT_PTR_NOT_NULL(strstr(fstats.last, "\r\n\tfor <alice@example.test>;\r\n\t"));
        CU_ASSERT_PTR_NOT_NULL(strstr(fstats.last, " +0000\r\nSubject: hi\r\n"));
        CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp30010] message accepted: id="));
        CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "from=<bob@remote.example> to=<alice@example.test> size=39 tls=none body=8BITMIME"));
        finish(fs);
    }
}

/* Trace header details: a UTF-8 EHLO name only in SMTPUTF8 mail, <Postmaster> as a full address. */
static void test_received_names(void)
{
    fakes_reset();
    fake_session *fs = start(MP_TLS_OFF);
    fake_feed_str(fs, "EHLO h\xc3\xa9llo.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<Postmaster>\r\n"
                      "DATA\r\nx\r\n.\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(fstats.last, "\r\nReceived: from [192.0.2.1] ([192.0.2.1])\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fstats.last, "\r\n\tfor <postmaster@example.test>;\r\n"));
    CU_ASSERT_STRING_EQUAL(fstats.last_targets, "postmaster@example.test");
    fake_clear(fs);
    fake_feed_str(fs, "MAIL FROM:<a@remote.example> SMTPUTF8\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\r\n.\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(fstats.last, "\r\nReceived: from h\xc3\xa9llo.example ([192.0.2.1])\r\n"));
    finish(fs);
}

static void test_helo_transaction_stored(void)
{
    fakes_reset();
    fake_session *fs = start(MP_TLS_OFF);
    fake_feed_str(fs, "HELO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\r\n.\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_output(fs), "250 2.0.0 Ok: stored as "));
    CU_ASSERT_EQUAL(fstats.committed, 1);
    CU_ASSERT_NSTRING_EQUAL(fstats.last, "Return-Path: <>\r\n", 17);
    if (strncmp(fstats.last, "Return-Path: <>\r\n", 17)) fprintf(stderr, "LAST: %.200s\n", fstats.last);
    CU_ASSERT_PTR_NOT_NULL(strstr(fstats.last, "with SMTP id "));
    finish(fs);
}

/* Pipelined commands (RFC 2920): replies in order, also when each RCPT waits for a job. */
static void test_pipelining(void)
{
    static const char in[] = "EHLO client.example\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
                             "RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\n"
                             "DATA\r\n";
    static const char want[] = EHLO_MX_PLAIN EHLO_TAIL
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
        "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown\r\n"
        "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n";
    BOTH(MP_TLS_OFF, NULL, in, want);

    /* with jobs held: nothing after the first RCPT is answered before its job ran */
    fakes_reset();
    fake_session *fs = start(MP_TLS_OFF);
    fake_hold_jobs(fs, 1);
    fake_feed_str(fs, in);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), EHLO_MX_PLAIN EHLO_TAIL "250 2.1.0 Ok\r\n");
    CU_ASSERT_TRUE(fake_job_pending(fs));
    CU_ASSERT(fake_input_pending(fs) > 0);
    int jobs = 0;
    while (fake_run_job(fs) == 0)
        jobs++;
    CU_ASSERT_EQUAL(jobs, 4);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), want);
    fake_clear(fs);
    fake_feed_str(fs, "a\r\n.\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "");
    CU_ASSERT_TRUE(fake_job_pending(fs)); /* the commit: 250 only once it is durable */
    CU_ASSERT_EQUAL(fstats.committed, 0);
    fake_run_job(fs);
    CU_ASSERT_EQUAL(fstats.committed, 1);
    CU_ASSERT_STRING_EQUAL(fstats.last_targets, "alice@example.test,bob@example.test"); /* one copy each */
    CU_ASSERT_NSTRING_EQUAL(fake_output(fs), "250 2.0.0 Ok: stored as ", 24);
    /* two recipients: no "for" clause */
    CU_ASSERT_PTR_NULL(strstr(fstats.last, "\tfor <"));
    finish(fs);
}

/* The smuggling sequences (CVE-2023-51764 and relatives): the data never ends early, the message is
   refused, and the commands hidden in it are never executed. */
static void test_smuggling(void)
{
    static const char *const seqs[] = {"\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\n.\r"};
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        char in[1024];
        snprintf(in, sizeof in,
                 "EHLO client.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                 "Subject: one\r\n\r\nbody%sMAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
                 "Subject: smuggled\r\n\r\nhidden\r\n.\r\nNOOP\r\n",
                 seqs[i]);
        BOTH(MP_TLS_OFF, NULL, in,
             EHLO_MX_PLAIN EHLO_TAIL "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
             "554 5.6.0 Message contains bare CR or LF characters\r\n250 2.0.0 Ok\r\n");
        CU_ASSERT_EQUAL(fstats.committed, 0);
        CU_ASSERT_EQUAL(fstats.begun, 1);
        CU_ASSERT_EQUAL(fstats.aborted, 1);
        CU_ASSERT_EQUAL(fstats.lookups, 1); /* bob was never looked up */
    }
}

/* A bare CR or LF in a command: the whole line is refused, never split at the bare byte. */
static void test_bare_in_commands(void)
{
    BOTH(MP_TLS_OFF, NULL, "NOOP\nRSET\r\nNOOP\r\n", "500 5.5.2 Error: bare <CR> or <LF> received\r\n250 2.0.0 Ok\r\n");
    BOTH(MP_TLS_OFF, NULL, "NOOP\rQUIT\r\nNOOP\r\n", "500 5.5.2 Error: bare <CR> or <LF> received\r\n250 2.0.0 Ok\r\n");
    BOTH(MP_TLS_OFF, NULL, "EHLO x\r\nMAIL FROM:<a@b.example>\nRCPT TO:<alice@example.test>\r\nRCPT TO:<alice@example.test>\r\n",
         EHLO_X EHLO_TAIL "500 5.5.2 Error: bare <CR> or <LF> received\r\n"
         "503 5.5.1 Error: need MAIL command\r\n");
}

static void test_long_lines(void)
{
    char in[6000];
    /* exactly the limit (2048 with CRLF) is fine */
    memset(in, 'x', sizeof in);
    memcpy(in, "NOOP ", 5);
    strcpy(in + 2046, "\r\n");
    BOTH(MP_TLS_OFF, NULL, in, "250 2.0.0 Ok\r\n");
    /* one more is not; the session goes on */
    memset(in, 'x', sizeof in);
    memcpy(in, "NOOP ", 5);
    memcpy(in + 2049 - 2, "\r\nNOOP\r\n", 9);
    BOTH(MP_TLS_OFF, NULL, in, "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
    /* much longer than the limit: skipped as it comes, with a bare LF inside */
    memset(in, 'y', sizeof in);
    in[3000] = '\n';
    memcpy(in + 5000, "\r\nNOOP\r\n", 9);
    BOTH(MP_TLS_OFF, NULL, in, "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
    /* a CR right at the skip boundary */
    memset(in, 'z', sizeof in);
    in[2100] = '\r';
    in[2101] = '\n';
    strcpy(in + 2102, "NOOP\r\n");
    BOTH(MP_TLS_OFF, NULL, in, "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
}

static void test_size(void)
{
    /* declared (RFC 1870 section 6.1) */
    BOTH(MP_TLS_OFF, NULL, "EHLO x\r\nMAIL FROM:<a@b.example> SIZE=4097\r\nMAIL FROM:<a@b.example> SIZE=4096\r\n",
         EHLO_X EHLO_TAIL "552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.1.0 Ok\r\n");
    BOTH(MP_TLS_OFF, NULL, "EHLO x\r\nMAIL FROM:<a@b.example> SIZE=99999999999999999999\r\nMAIL FROM:<a@b.example> SIZE=x\r\n",
         EHLO_X EHLO_TAIL "552 5.3.4 Message size exceeds fixed maximum message size\r\n501 5.5.4 Bad SIZE parameter\r\n");
    /* actual (RFC 1870 section 6.2): read to the end, then 552, nothing stored */
    static char in[12000];
    strcpy(in, "EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    size_t n = strlen(in);
    for (int i = 0; i < 100; i++) {
        memcpy(in + n, "0123456789012345678901234567890123456789012345678\r\n", 51);
        n += 51;
    }
    strcpy(in + n, ".\r\nNOOP\r\n");
    BOTH(MP_TLS_OFF, NULL, in,
         EHLO_X EHLO_TAIL "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
         "552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 Ok\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 0);
    CU_ASSERT_EQUAL(fstats.aborted, 1);
}

static void test_mail_params(void)
{
    fakes_reset();
    fake_session *fs = start(MP_TLS_OFF);
    EXPECT(fs, "EHLO x\r\n", EHLO_X EHLO_TAIL);
    EXPECT(fs, "MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n", "501 5.5.4 Unsupported BODY type\r\n");
    EXPECT(fs, "MAIL FROM:<a@b.example> FOO=1\r\n", "555 5.5.4 Unsupported parameter FOO\r\n");
    EXPECT(fs, "MAIL FROM:<a@b.example> SIZE=1 SIZE=2\r\n", "501 5.5.4 Duplicate parameter\r\n");
    EXPECT(fs, "MAIL FROM:<a@b.example> SMTPUTF8=yes\r\n", "501 5.5.4 SMTPUTF8 takes no value\r\n");
    EXPECT(fs, "MAIL FROM:<a@b.example> RET=ALL\r\n", "501 5.5.4 Bad RET parameter\r\n");
    EXPECT(fs, "MAIL FROM:<a@b.example> ENVID=a=b\r\n", "501 5.5.4 Syntax error in MAIL parameters\r\n");
    EXPECT(fs, "MAIL FROM:<a@b.example> ENVID=a+2\r\n", "501 5.5.4 Bad ENVID parameter\r\n");
    EXPECT(fs, "MAIL FROM:<b\xc3\xa9@b.example>\r\n", "553 5.6.7 Non-ASCII sender address needs SMTPUTF8\r\n");
    EXPECT(fs, "MAIL FROM:a@b.example\r\n", "501 5.1.7 Bad sender address syntax\r\n");
    EXPECT(fs, "MAIL FROM <a@b.example>\r\n", "501 5.5.4 Syntax error in parameters or arguments\r\n");
    EXPECT(fs, "MAIL FROM:<a@b.example> RET=HDRS ENVID=QQ+2B AUTH=<> BODY=7BIT\r\n", "250 2.1.0 Ok\r\n");
    EXPECT(fs, "MAIL FROM:<a@b.example>\r\n", "503 5.5.1 Error: nested MAIL command\r\n");
    EXPECT(fs, "RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+40example.test\r\n",
           "250 2.1.5 Ok\r\n");
    EXPECT(fs, "RCPT TO:<bob@example.test> NOTIFY=NEVER,SUCCESS\r\n", "501 5.5.4 Bad NOTIFY parameter\r\n");
    EXPECT(fs, "RCPT TO:<bob@example.test> ORCPT=rfc822\r\n", "501 5.5.4 Bad ORCPT parameter\r\n");
    EXPECT(fs, "RCPT TO:<bob@example.test> XYZ\r\n", "555 5.5.4 Unsupported parameter XYZ\r\n");
    EXPECT(fs, "RCPT TO:<>\r\n", "501 5.1.3 Bad recipient address syntax\r\n");
    EXPECT(fs, "RCPT TO:<b\xc3\xa9@example.test>\r\n",
           "553 5.6.7 <b\xc3\xa9@example.test>: Non-ASCII recipient address needs SMTPUTF8\r\n");
    EXPECT_STORED(fs, "DATA\r\nx\r\n.\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "ret=HDRS envid=QQ+2B"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "(notify=SUCCESS,FAILURE orcpt=rfc822;alice+40example.test)"));
    /* SMTPUTF8 (RFC 6531) */
    EXPECT_STORED(fs, "MAIL FROM:<b\xc3\xa9@b.example> SMTPUTF8\r\nRCPT TO:<b\xc3\xa9@example.test>\r\nDATA\r\nx\r\n.\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(fstats.last, "with UTF8SMTP id"));
    CU_ASSERT_STRING_EQUAL(fstats.last_targets, "b\xc3\xa9@example.test");
    finish(fs);
}

/* MX policy: local domains only, users checked, quota, limits. */
static void test_mx_recipients(void)
{
    static const char *const two[] = {"MaxRecipients", "2", NULL};
    fakes_reset();
    fake_session *fs = smtp_fake_start(M, MP_TLS_STARTTLS, two);
    EXPECT(fs, "EHLO x\r\nMAIL FROM:<a@remote.example>\r\n", EHLO_X "250-STARTTLS\r\n" EHLO_TAIL "250 2.1.0 Ok\r\n");
    EXPECT(fs, "RCPT TO:<someone@remote.example>\r\n", "550 5.7.1 <someone@remote.example>: Relay access denied\r\n");
    EXPECT(fs, "RCPT TO:<a@[192.0.2.9]>\r\n", "550 5.7.1 <a@[192.0.2.9]>: Relay access denied\r\n");
    EXPECT(fs, "RCPT TO:<nobody@example.test>\r\n",
           "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown\r\n");
    EXPECT(fs, "RCPT TO:<full@example.test>\r\n", "452 4.2.2 <full@example.test>: Mailbox full\r\n");
    EXPECT(fs, "RCPT TO:<temp@example.test>\r\n", "451 4.3.0 <temp@example.test>: Temporary lookup failure\r\n");
    EXPECT(fs, "RCPT TO:<alice@EXAMPLE.test>\r\n", "250 2.1.5 Ok\r\n");
    EXPECT(fs, "RCPT TO:<Postmaster>\r\n", "250 2.1.5 Ok\r\n");
    EXPECT(fs, "RCPT TO:<bob@example.test>\r\n", "452 4.5.3 Error: too many recipients\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp30020] RCPT refused: from=<a@remote.example> to=<someone@remote.example>: relay denied"));
    EXPECT_STORED(fs, "DATA\r\nhello\r\n.\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
    CU_ASSERT_STRING_EQUAL(fstats.last_targets, "alice@example.test,postmaster@example.test");
    /* all recipients refused: 554 (RFC 5321 section 3.3) */
    EXPECT(fs, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<x@remote.example>\r\nDATA\r\n",
           "250 2.1.0 Ok\r\n550 5.7.1 <x@remote.example>: Relay access denied\r\n554 5.5.1 Error: no valid recipients\r\n");
    EXPECT(fs, "RSET\r\nMAIL FROM:<a@remote.example>\r\nDATA\r\n", "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n503 5.5.1 Error: need RCPT command\r\n");
    /* refusals that are not errors (a full mailbox) are bounded too: MaxRecipients + 100 attempts, then
       each RCPT is an error, so that MaxErrors ends the session and its memory stays bounded */
    EXPECT(fs, "RSET\r\nMAIL FROM:<a@remote.example>\r\n", "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n");
    unsigned errors = fake_errors(fs);
    for (int i = 0; i < 2 + 100; i++)
        EXPECT(fs, "RCPT TO:<full@example.test>\r\n", "452 4.2.2 <full@example.test>: Mailbox full\r\n");
    CU_ASSERT_EQUAL(fake_errors(fs), errors);
    EXPECT(fs, "RCPT TO:<full@example.test>\r\n", "452 4.5.3 Error: too many recipients tried\r\n");
    EXPECT(fs, "RCPT TO:<alice@example.test>\r\n", "452 4.5.3 Error: too many recipients tried\r\n");
    CU_ASSERT_EQUAL(fake_errors(fs), errors + 2);
    EXPECT(fs, "RSET\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n",
           "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"); /* a new transaction starts again */
    finish(fs);
}

/* RCPT without a job when the user database answers at once (lookup_nowait), with one when it says
   MP_AUTH_AGAIN or when the user has a quota to count: the same replies either way. */
static void test_rcpt_nowait(void)
{
    fakes_reset();
    fstats.nowait = 1;
    fake_session *fs = start(MP_TLS_OFF);
    fake_hold_jobs(fs, 1);
    EXPECT(fs, "EHLO x\r\nMAIL FROM:<a@remote.example>\r\n", EHLO_X EHLO_TAIL "250 2.1.0 Ok\r\n");
    EXPECT(fs, "RCPT TO:<alice@example.test>\r\n", "250 2.1.5 Ok\r\n");
    EXPECT(fs, "RCPT TO:<nobody@example.test>\r\n",
           "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown\r\n");
    CU_ASSERT_FALSE(fake_job_pending(fs));
    CU_ASSERT_EQUAL(fstats.nowait_lookups, 2);
    CU_ASSERT_EQUAL(fstats.lookups, 0);
    /* a quota to count, or an answer that needs I/O: a job, then the usual reply */
    fake_feed_str(fs, "RCPT TO:<full@example.test>\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "");
    CU_ASSERT_TRUE(fake_job_pending(fs));
    fake_run_job(fs);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "452 4.2.2 <full@example.test>: Mailbox full\r\n");
    fake_clear(fs);
    fake_feed_str(fs, "RCPT TO:<temp@example.test>\r\nRCPT TO:<bob@example.test>\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "");
    fake_run_job(fs);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "451 4.3.0 <temp@example.test>: Temporary lookup failure\r\n"
                                            "250 2.1.5 Ok\r\n");
    CU_ASSERT_FALSE(fake_job_pending(fs)); /* bob answered at once, after temp's job */
    CU_ASSERT_EQUAL(fstats.lookups, 2);
    fake_clear(fs);
    /* the commit is still a job: 250 only once it is durable */
    fake_feed_str(fs, "DATA\r\nhello\r\n.\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "354 End data with <CR><LF>.<CR><LF>\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 0);
    fake_run_job(fs);
    CU_ASSERT_EQUAL(fstats.committed, 1);
    CU_ASSERT_STRING_EQUAL(fstats.last_targets, "alice@example.test,bob@example.test");
    finish(fs);
}

static void test_commit_failures(void)
{
    fakes_reset();
    fake_session *fs = start(MP_TLS_OFF);
    EXPECT(fs, "EHLO x\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<late-full@example.test>\r\nDATA\r\nx\r\n.\r\n",
           EHLO_X EHLO_TAIL "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
           "452 4.2.2 Mailbox full\r\n");
    EXPECT(fs, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<broken@example.test>\r\nDATA\r\nx\r\n.\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
           "451 4.3.0 Error: local error in processing\r\n");
    /* the store cannot begin or write */
    fstats.fail_begin = 1;
    EXPECT(fs, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n451 4.3.0 Error: local error in processing\r\n");
    fstats.fail_begin = 0;
    fstats.fail_write = 1;
    char big[40000];
    strcpy(big, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    size_t n = strlen(big);
    memset(big + n, 'a', 3000);
    strcpy(big + n + 3000, "\r\n.\r\n");
    EXPECT(fs, big, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                    "451 4.3.0 Error: local error in processing\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 2);
    finish(fs);
}

/* A session that ends in the middle of DATA stores nothing. */
static void test_close_mid_data(void)
{
    fakes_reset();
    fake_session *fs = start(MP_TLS_OFF);
    fake_feed_str(fs, "EHLO x\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhalf");
    CU_ASSERT_EQUAL(fstats.begun, 1);
    fake_end(fs);
    CU_ASSERT_EQUAL(fstats.aborted, 1);
    CU_ASSERT_EQUAL(fstats.committed, 0);
    CU_ASSERT_EQUAL(fstats.users_open, 0);

    /* and a goodbye (idle timeout) in the middle of DATA too */
    fakes_reset();
    fs = start(MP_TLS_OFF);
    fake_feed_str(fs, "EHLO x\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nhalf");
    fake_clear(fs);
    CU_ASSERT_EQUAL(fake_goodbye(fs, MP_BYE_IDLE), 0);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "421 4.4.2 mail.example.test Error: timeout exceeded\r\n");
    finish(fs);
    CU_ASSERT_EQUAL(fstats.aborted, 1);
    CU_ASSERT_EQUAL(fstats.committed, 0);
}

static void test_goodbyes(void)
{
    static const struct {
        mp_goodbye why;
        const char *want;
    } cases[] = {
        {MP_BYE_SHUTDOWN, "421 4.3.2 mail.example.test Service shutting down\r\n"},
        {MP_BYE_IDLE, "421 4.4.2 mail.example.test Error: timeout exceeded\r\n"},
        {MP_BYE_LINE_TOO_LONG, "500 5.5.2 Line too long\r\n"},
        {MP_BYE_TOO_MANY_ERRORS, "421 4.7.0 mail.example.test Error: too many errors\r\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fakes_reset();
        fake_session *fs = start(MP_TLS_OFF);
        CU_ASSERT_EQUAL(fake_goodbye(fs, cases[i].why), 0);
        CU_ASSERT_STRING_EQUAL(fake_output(fs), cases[i].want);
        finish(fs);
    }
    /* too many connections: no on_connect, zeroed state */
    fakes_reset();
    fake_session *fs = fake_new_module(M, MP_TLS_OFF);
    fake_set_config(fs, "ServerName", "mail.example.test");
    CU_ASSERT_EQUAL(fake_goodbye(fs, MP_BYE_TOO_MANY_CONNECTIONS), 0);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "421 4.7.0 mail.example.test Error: too many connections\r\n");
    fake_end(fs);

    /* MaxErrors through host->error() */
    fakes_reset();
    fs = start(MP_TLS_OFF);
    fake_set_max_errors(fs, 3);
    EXPECT(fs, "A\r\nB\r\nC\r\nNOOP\r\n", "500 5.5.2 Error: command not recognized\r\n500 5.5.2 Error: command not recognized\r\n"
                                         "500 5.5.2 Error: command not recognized\r\n250 2.0.0 Ok\r\n"
                                         "421 4.7.0 mail.example.test Error: too many errors\r\n");
    CU_ASSERT_TRUE(fake_closed(fs));
    finish(fs);
}

/* ==================================================================================== BDAT */

static void test_bdat(void)
{
    /* chunks, one with CRLF.CRLF inside, a CRLF split across two chunks, then BDAT 0 LAST */
    static const char in[] = "EHLO x\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
                             "BDAT 13\r\nA: b\r\n\r\nx\r\n.\r"
                             "BDAT 3\r\n\nyzBDAT 2\r\n\r\nBDAT 0 LAST\r\nNOOP\r\n";
    for (int way = 0; way < 2; way++) {
        fakes_reset();
        fake_session *fs = start(MP_TLS_OFF);
        if (way)
            fake_feed_bytewise(fs, in, strlen(in));
        else
            fake_feed_str(fs, in);
        const char *out = fake_output(fs);
        static const char want[] = EHLO_X EHLO_TAIL "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: 13 octets received\r\n"
                                   "250 2.0.0 Ok: 16 octets received\r\n250 2.0.0 Ok: 18 octets received\r\n250 2.0.0 Ok: stored as ";
        CU_ASSERT_NSTRING_EQUAL(out, want, strlen(want));
        if (strncmp(out, want, strlen(want))) fprintf(stderr, "OUT: %s\n", out);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "\r\n250 2.0.0 Ok\r\n"));
        size_t blen;
        const char *body = fakes_last_body(&blen);
        CU_ASSERT_PTR_NOT_NULL_FATAL(body);
        CU_ASSERT_EQUAL(blen, 18);
        CU_ASSERT(blen == 18 && memcmp(body, "A: b\r\n\r\nx\r\n.\r\nyz\r\n", 18) == 0);
        CU_ASSERT_EQUAL(fstats.committed, 1);
        finish(fs);
    }
    /* BDAT n LAST in one chunk, then DATA mixing refused */
    BOTH(MP_TLS_OFF, NULL, "EHLO x\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3\r\nab\nDATA\r\nRSET\r\n",
         EHLO_X EHLO_TAIL "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: 3 octets received\r\n"
         "503 5.5.1 Error: DATA after BDAT\r\n250 2.0.0 Ok\r\n");
    /* a bare LF in BDAT content: 554 at LAST, nothing stored */
    BOTH(MP_TLS_OFF, NULL, "EHLO x\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 4 LAST\r\nab\nc",
         EHLO_X EHLO_TAIL "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n554 5.6.0 Message contains bare CR or LF characters\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 0);
    BOTH(MP_TLS_OFF, NULL, "EHLO x\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3 LAST\r\nab\r",
         EHLO_X EHLO_TAIL "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n554 5.6.0 Message contains bare CR or LF characters\r\n");
    /* an oversize chunk: read, 552, and the pipelined next chunk is read and refused too (RFC 3030 sec 2) */
    static char big[12000];
    strcpy(big, "EHLO x\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 5000\r\n");
    size_t n = strlen(big);
    memset(big + n, 'q', 5000);
    strcpy(big + n + 5000, "BDAT 6 LAST\r\nNOOP\r\nNOOP\r\n");
    BOTH(MP_TLS_OFF, NULL, big, EHLO_X EHLO_TAIL "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                                "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
                                "503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 0);
    /* syntax: when the size is readable, that many octets are the chunk, dropped, never run as commands */
    BOTH(MP_TLS_OFF, NULL, "EHLO x\r\nBDAT\r\nBDAT x\r\nBDAT 1 LASTX\r\nQBDAT 6  LAST\r\nRSET\r\nNOOP\r\n",
         EHLO_X EHLO_TAIL "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n"
         "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n"
         "250 2.0.0 Ok\r\n");
    fakes_reset();
    fake_session *sx = start(MP_TLS_OFF);
    EXPECT_STORED(sx,
                  "EHLO x\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
                  "BDAT 39  LAST\r\nRSET\r\nMAIL FROM:<evil@remote.example>\r\nBDAT 2 LAST\r\nhi",
                  EHLO_X EHLO_TAIL "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n");
    CU_ASSERT(fstats.last && strncmp(fstats.last, "Return-Path: <a@remote.example>\r\n", 33) == 0);
    size_t hl = 0;
    const char *hb = fakes_last_body(&hl);
    CU_ASSERT(hb && hl == 2 && memcmp(hb, "hi", 2) == 0);
    finish(sx);
    /* BDAT 0 LAST alone: an empty message with our trace headers */
    fakes_reset();
    fake_session *fs = start(MP_TLS_OFF);
    fake_feed_str(fs, "EHLO x\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 0 LAST\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 1);
    size_t blen = 1;
    CU_ASSERT_PTR_NOT_NULL(fakes_last_body(&blen));
    CU_ASSERT_EQUAL(blen, 0);
    finish(fs);
}

/* ==================================================================================== STARTTLS */

static void test_starttls(void)
{
    fakes_reset();
    fake_session *fs = start(MP_TLS_STARTTLS);
    /* injection: what follows STARTTLS in the same packet is never executed (RFC 3207 section 4.2) */
    fake_feed_str(fs, "EHLO x\r\nMAIL FROM:<a@remote.example>\r\n");
    fake_clear(fs);
    EXPECT(fs, "STARTTLS\r\n", "503 5.5.1 Error: MAIL transaction in progress\r\n");
    EXPECT(fs, "RSET\r\nSTARTTLS\r\nMAIL FROM:<evil@remote.example>\r\n", "250 2.0.0 Ok\r\n220 2.0.0 Ready to start TLS\r\n");
    CU_ASSERT_TRUE(fake_tls_pending(fs));
    CU_ASSERT(fake_discarded(fs) > 0);
    fake_feed_str(fs, "RCPT TO:<alice@example.test>\r\n"); /* before the handshake: dropped */
    CU_ASSERT_EQUAL(fake_tls_complete(fs), 0);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "");
    /* everything learnt before is forgotten: EHLO again */
    EXPECT(fs, "MAIL FROM:<a@remote.example>\r\n", "503 5.5.1 Error: send HELO/EHLO first\r\n");
    EXPECT(fs, "EHLO x\r\n", EHLO_X "250-AUTH PLAIN LOGIN\r\n" EHLO_TAIL);
    EXPECT(fs, "STARTTLS\r\n", "503 5.5.1 Error: TLS already active\r\n");
    EXPECT_STORED(fs, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\r\n.\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fstats.last, "with ESMTPS id "));
    CU_ASSERT_PTR_NOT_NULL(strstr(fstats.last, "\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "tls=TLSv1.3/TLS_AES_256_GCM_SHA384"));
    finish(fs);

    /* no certificate: 454 */
    fakes_reset();
    fs = start(MP_TLS_STARTTLS);
    fake_set_tls_available(fs, 0);
    EXPECT(fs, "STARTTLS\r\n", "454 4.7.0 TLS not available due to temporary reason\r\n");
    EXPECT(fs, "STARTTLS now\r\n", "501 5.5.4 Syntax: STARTTLS\r\n");
    finish(fs);
    fs = start(MP_TLS_OFF);
    EXPECT(fs, "STARTTLS\r\n", "502 5.5.1 Error: command not implemented\r\n");
    finish(fs);
}

/* `TLS required`: nothing but the trivial commands before STARTTLS (RFC 3207 section 4). */
static void test_tls_required(void)
{
    fakes_reset();
    fake_session *fs = smtp_fake_start(M, MP_TLS_REQUIRED, SUBMISSION);
    EXPECT(fs, "EHLO x\r\n", EHLO_X "250-STARTTLS\r\n" EHLO_TAIL);
    EXPECT(fs, "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n", "530 5.7.0 Must issue a STARTTLS command first\r\n");
    EXPECT(fs, "MAIL FROM:<alice@example.test>\r\n", "530 5.7.0 Must issue a STARTTLS command first\r\n");
    EXPECT(fs, "HELO x\r\n", "530 5.7.0 Must issue a STARTTLS command first\r\n");
    EXPECT(fs, "BDAT 4\r\nQUITNOOP\r\n", "530 5.7.0 Must issue a STARTTLS command first\r\n250 2.0.0 Ok\r\n");
    EXPECT(fs, "NOOP\r\nRSET\r\n", "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
    EXPECT(fs, "STARTTLS\r\n", "220 2.0.0 Ready to start TLS\r\n");
    fake_tls_complete(fs);
    EXPECT(fs, "EHLO x\r\n", EHLO_X "250-AUTH PLAIN LOGIN\r\n" EHLO_TAIL);
    EXPECT(fs, "MAIL FROM:<alice@example.test>\r\n", "530 5.7.0 Authentication required\r\n");
    finish(fs);
}

/* ==================================================================================== AUTH */

static void test_submission(void)
{
    fakes_reset();
    fake_session *fs = smtp_fake_start(M, MP_TLS_IMPLICIT, SUBMISSION);
    EXPECT(fs, "EHLO x\r\nMAIL FROM:<alice@example.test>\r\n",
           EHLO_X "250-AUTH PLAIN LOGIN\r\n" EHLO_TAIL "530 5.7.0 Authentication required\r\n");
    /* PLAIN with an initial response: "\0alice@example.test\0secret" */
    EXPECT(fs, "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n", "235 2.7.0 Authentication successful\r\n");
    CU_ASSERT_EQUAL(fstats.auth_succeeded, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp30030] AUTH PLAIN succeeded for user 'alice@example.test'"));
    CU_ASSERT_PTR_NULL(strstr(fake_log(fs), "secret"));
    EXPECT(fs, "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n", "503 5.5.1 Error: already authenticated\r\n");
    EXPECT(fs, "MAIL FROM:<bob@example.test>\r\n", "553 5.7.1 Sender address rejected: not owned by user alice@example.test\r\n");
    EXPECT(fs, "MAIL FROM:<Alice@example.test>\r\n", "553 5.7.1 Sender address rejected: not owned by user alice@example.test\r\n");
    EXPECT(fs, "MAIL FROM:<alice@EXAMPLE.TEST>\r\n", "250 2.1.0 Ok\r\n");
    EXPECT(fs, "RCPT TO:<friend@remote.example>\r\n",
           "451 4.3.0 <friend@remote.example>: Outbound relay is not available yet, try again later\r\n");
    EXPECT_STORED(fs, "RCPT TO:<bob@example.test>\r\nDATA\r\nHi Bob\r\n.\r\n", "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fstats.last, "with ESMTPSA id "));
    EXPECT(fs, "MAIL FROM:<>\r\n", "250 2.1.0 Ok\r\n");
    EXPECT(fs, "AUTH LOGIN\r\n", "503 5.5.1 Error: already authenticated\r\n");
    finish(fs);
}

static void test_auth_flows(void)
{
    fakes_reset();
    fake_session *fs = start(MP_TLS_IMPLICIT);
    EXPECT(fs, "EHLO x\r\n", EHLO_X "250-AUTH PLAIN LOGIN\r\n" EHLO_TAIL);
    /* PLAIN without initial response: an empty challenge */
    EXPECT(fs, "AUTH PLAIN\r\n", "334 \r\n");
    EXPECT(fs, "*\r\n", "501 5.0.0 Authentication cancelled\r\n");
    EXPECT(fs, "AUTH PLAIN\r\n", "334 \r\n");
    EXPECT(fs, "not base64!\r\n", "501 5.5.2 Cannot decode response\r\n");
    EXPECT(fs, "AUTH CRAM-MD5\r\n", "504 5.5.4 Unrecognized authentication type\r\n");
    EXPECT(fs, "AUTH SCRAM-SHA-256\r\n", "504 5.5.4 Unrecognized authentication type\r\n"); /* not offered */
    EXPECT(fs, "AUTH\r\n", "501 5.5.4 Syntax: AUTH mechanism\r\n");
    /* a wrong password: the 535 comes after the provider's delay, from a timer */
    EXPECT(fs, "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==\r\nNOOP\r\n", "");
    CU_ASSERT_EQUAL(fake_timers_active(fs), 1);
    CU_ASSERT_EQUAL(fake_last_timer_after(fs), FAKE_AUTH_DELAY);
    CU_ASSERT_EQUAL(fstats.auth_failed, 1);
    CU_ASSERT_EQUAL(fake_fire_timers(fs), 1);
    /* the pipelined NOOP waited for the delayed 535 and is answered after it, in order */
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "535 5.7.8 Authentication credentials invalid\r\n250 2.0.0 Ok\r\n");
    fake_clear(fs);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp30031] AUTH PLAIN failed for user 'alice@example.test'"));
    CU_ASSERT_PTR_NULL(strstr(fake_log(fs), "wrong"));
    /* LOGIN: Username:, Password: */
    EXPECT(fs, "AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n");
    EXPECT(fs, "Ym9iQGV4YW1wbGUudGVzdA==\r\n", "334 UGFzc3dvcmQ6\r\n");
    EXPECT(fs, "aHVudGVyMg==\r\n", "235 2.7.0 Authentication successful\r\n");
    finish(fs);

    /* AUTH in a transaction; AUTH without TLS on an MX listener */
    fakes_reset();
    fs = start(MP_TLS_IMPLICIT);
    EXPECT(fs, "EHLO x\r\nMAIL FROM:<a@remote.example>\r\nAUTH PLAIN\r\n",
           EHLO_X "250-AUTH PLAIN LOGIN\r\n" EHLO_TAIL "250 2.1.0 Ok\r\n503 5.5.1 Error: MAIL transaction in progress\r\n");
    finish(fs);
    fs = start(MP_TLS_STARTTLS);
    EXPECT(fs, "EHLO x\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n",
           EHLO_X "250-STARTTLS\r\n" EHLO_TAIL "538 5.7.11 Encryption required for requested authentication mechanism\r\n");
    finish(fs);

    /* An MX session that authenticated may not relay yet: 451 */
    fakes_reset();
    fs = start(MP_TLS_IMPLICIT);
    EXPECT(fs, "EHLO x\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<z@remote.example>\r\n",
           EHLO_X "250-AUTH PLAIN LOGIN\r\n" EHLO_TAIL "235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n"
           "451 4.3.0 <z@remote.example>: Outbound relay is not available yet, try again later\r\n");
    finish(fs);

    /* an AUTH line too long */
    fakes_reset();
    fs = start(MP_TLS_IMPLICIT);
    static char longline[20000];
    memset(longline, 'A', sizeof longline);
    memcpy(longline, "EHLO x\r\nAUTH PLAIN\r\n", 20);
    strcpy(longline + 19000, "\r\nNOOP\r\n");
    EXPECT(fs, longline, EHLO_X "250-AUTH PLAIN LOGIN\r\n" EHLO_TAIL "334 \r\n"
                         "500 5.5.6 Authentication Exchange line is too long\r\n250 2.0.0 Ok\r\n");
    finish(fs);
}

/* SCRAM-SHA-256 through the shared machine, driven by a minimal client (RFC 5802 section 3). */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <apr_strings.h>

#include "b64.h"

/* One SCRAM-SHA-256 exchange as a client (RFC 5802 section 3) on a fresh EHLO'd session; returns the server's
   answer to the client-final message. */
static const char *scram_exchange(fake_session *fs, const char *user, const char *password)
{
    apr_pool_t *p = fake_session_of(fs)->pool;
    const char *cfb = apr_psprintf(p, "n=%s,r=clientnonce123", user);
    const char *first = apr_pstrcat(p, "n,,", cfb, NULL);
    fake_clear(fs);
    fake_feed_str(fs, apr_psprintf(p, "AUTH SCRAM-SHA-256 %s\r\n", mpc_b64_encode(p, first, strlen(first))));
    const char *out = fake_output(fs);
    CU_ASSERT_NSTRING_EQUAL_FATAL(out, "334 ", 4);
    unsigned char sfm[512];
    size_t sfm_len = 0;
    const char *b = out + 4;
    size_t blen = strcspn(b, "\r");
    CU_ASSERT_EQUAL_FATAL(mpc_b64_decode(b, blen, sfm, &sfm_len), 0);
    sfm[sfm_len] = '\0';
    /* r=...,s=...,i=... */
    char nonce[256], salt64[256];
    unsigned iters = 0;
    CU_ASSERT_EQUAL_FATAL(sscanf((char *)sfm, "r=%255[^,],s=%255[^,],i=%u", nonce, salt64, &iters), 3);
    unsigned char salt[128];
    size_t salt_len;
    CU_ASSERT_EQUAL_FATAL(mpc_b64_decode(salt64, strlen(salt64), salt, &salt_len), 0);
    unsigned char salted[32], ckey[32], stored[32], sig[32], proof[32];
    unsigned int l;
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, (int)iters, EVP_sha256(), 32, salted);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, ckey, &l);
    SHA256(ckey, 32, stored);
    char cfwp[512], authmsg[1536];
    snprintf(cfwp, sizeof cfwp, "c=biws,r=%s", nonce);
    snprintf(authmsg, sizeof authmsg, "%s,%s,%s", cfb, (char *)sfm, cfwp);
    HMAC(EVP_sha256(), stored, 32, (unsigned char *)authmsg, strlen(authmsg), sig, &l);
    for (int i = 0; i < 32; i++)
        proof[i] = ckey[i] ^ sig[i];
    const char *cfinal = apr_psprintf(p, "%s,p=%s", cfwp, mpc_b64_encode(p, proof, 32));
    fake_clear(fs);
    fake_feed_str(fs, apr_psprintf(p, "%s\r\n", mpc_b64_encode(p, cfinal, strlen(cfinal))));
    fake_fire_timers(fs); /* a failure is answered after its delay */
    return fake_output(fs);
}

static void test_auth_scram(void)
{
    fakes_reset();
    fstats.scram = 1;
    fake_session *fs = start(MP_TLS_IMPLICIT);
    EXPECT(fs, "EHLO x\r\n", EHLO_X "250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n" EHLO_TAIL);
    const char *out = scram_exchange(fs, "alice@example.test", "secret");
    CU_ASSERT_NSTRING_EQUAL(out, "334 ", 4); /* v=... as a challenge (RFC 4954 has no 235 data) */
    fake_clear(fs);
    EXPECT(fs, "\r\n", "235 2.7.0 Authentication successful\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "AUTH SCRAM-SHA-256 succeeded for user 'alice@example.test'"));
    finish(fs);

    /* allow_nets refuses this client: the right password fails as a wrong one, with no ServerSignature */
    fs = start(MP_TLS_IMPLICIT);
    EXPECT(fs, "EHLO x\r\n", EHLO_X "250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n" EHLO_TAIL);
    char right[256], wrong[256];
    snprintf(right, sizeof right, "%s", scram_exchange(fs, "net@example.test", "x"));
    snprintf(wrong, sizeof wrong, "%s", scram_exchange(fs, "net@example.test", "not-it"));
    CU_ASSERT_STRING_EQUAL(right, "535 5.7.8 Authentication credentials invalid\r\n");
    CU_ASSERT_STRING_EQUAL(right, wrong);
    finish(fs);
}

/* ==================================================================================== main */

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite p = CU_add_suite("smtp_parser", NULL, NULL);
    CU_add_test(p, "command lines", test_parse_command);
    CU_add_test(p, "paths", test_parse_paths);
    CU_add_test(p, "parameters", test_parse_params);
    CU_add_test(p, "line framing", test_line_find);
    CU_add_test(p, "DATA machine", test_data_machine);
    CU_add_test(p, "BDAT content check", test_bdat_check);
    CU_pSuite s = CU_add_suite("smtp_session", NULL, NULL);
    CU_add_test(s, "descriptor", test_descriptor);
    CU_add_test(s, "EHLO capabilities", test_ehlo_capabilities);
    CU_add_test(s, "commands before EHLO", test_commands_before_ehlo);
    CU_add_test(s, "HELO session", test_helo_session);
    CU_add_test(s, "HELO transaction stored", test_helo_transaction_stored);
    CU_add_test(s, "Received: UTF-8 EHLO names and <Postmaster>", test_received_names);
    CU_add_test(s, "transaction", test_transaction);
    CU_add_test(s, "pipelining", test_pipelining);
    CU_add_test(s, "smuggling", test_smuggling);
    CU_add_test(s, "bare CR/LF in commands", test_bare_in_commands);
    CU_add_test(s, "long lines", test_long_lines);
    CU_add_test(s, "SIZE", test_size);
    CU_add_test(s, "MAIL/RCPT parameters", test_mail_params);
    CU_add_test(s, "MX recipients", test_mx_recipients);
    CU_add_test(s, "RCPT without a job", test_rcpt_nowait);
    CU_add_test(s, "commit failures", test_commit_failures);
    CU_add_test(s, "close mid-DATA", test_close_mid_data);
    CU_add_test(s, "goodbyes", test_goodbyes);
    CU_add_test(s, "BDAT", test_bdat);
    CU_add_test(s, "STARTTLS", test_starttls);
    CU_add_test(s, "TLS required", test_tls_required);
    CU_add_test(s, "submission", test_submission);
    CU_add_test(s, "AUTH flows", test_auth_flows);
    CU_add_test(s, "AUTH SCRAM-SHA-256", test_auth_scram);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}

/*
 * mod_smtp's "delivered" DSNs (RFC 3461, RFC 3464; modules/smtp/smtp_dsn.c) driven by the fake host: what is
 * stored in the sender's mailbox, byte for byte, and every case that stores nothing (NOTIFY other than
 * SUCCESS, MAIL FROM:<>, a remote or unknown sender, a failed delivery, a client that left), that the 250
 * goes out before the DSN is stored, and that only the header is returned, whatever RET says.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include "fake_host.h"
#include "test_smtp_fakes.h"

extern const mp_module mp_module_descriptor;
#define M (&mp_module_descriptor)

static const char *const SUBMISSION[] = {"Submission", "on", NULL};
static const char *const BIG[] = {"MaxMessageSize", "1M", NULL};

#define HEADERS_PART "Content-Type: text/rfc822-headers\r\n\r\n"

#define EXPECT(fs, in, want) \
    do { \
        fake_feed_str((fs), (in)); \
        CU_ASSERT_STRING_EQUAL(fake_output(fs), (want)); \
        if (strcmp(fake_output(fs), (want)) != 0) \
            fprintf(stderr, "\n--- line %d: sent %s\n--- got:\n%s--- want:\n%s", __LINE__, (in), fake_output(fs), (want)); \
        fake_clear(fs); \
    } while (0)

static fake_session *start(const char *const *extra)
{
    fakes_reset();
    fake_session *fs = smtp_fake_start(M, MP_TLS_OFF, extra);
    fake_feed_str(fs, "EHLO x\r\n");
    fake_clear(fs);
    return fs;
}

static void finish(fake_session *fs)
{
    CU_ASSERT_EQUAL(fake_violations(fs), 0);
    fake_end(fs);
    CU_ASSERT_EQUAL(fstats.users_open, 0);
}

/* Feeds a whole transaction, checks that it ends with the 250 of a stored message, and returns its id. */
static const char *send_ok(fake_session *fs, const char *in, int line)
{
    static char id[64];
    fake_feed_str(fs, in);
    const char *out = fake_output(fs);
    const char *p = strstr(out, "250 2.0.0 Ok: stored as ");
    CU_ASSERT_PTR_NOT_NULL(p);
    if (!p) {
        fprintf(stderr, "\n--- line %d: no 250 for the message:\n%s", line, out);
        id[0] = '\0';
    } else {
        p += 24;
        size_t n = strcspn(p, "\r");
        snprintf(id, sizeof id, "%.*s", (int)n, p);
        CU_ASSERT_STRING_EQUAL(p + n, "\r\n"); /* the last reply */
    }
    fake_clear(fs);
    return id;
}
#define SEND_OK(fs, in) send_ok((fs), (in), __LINE__)

/* Replaces every RFC 5322 date-time "Mon, 02 Jan 2006 15:04:05 +0000" in s by "DATE". */
static void blank_dates(char *s)
{
    static const char *const days = "MonTueWedThuFriSatSun";
    char *out = s;
    for (char *p = s; *p;) {
        int date = strlen(p) >= 31 && p[3] == ',' && p[4] == ' ' && p[7] == ' ' && p[11] == ' ' && p[16] == ' ' &&
                   p[19] == ':' && p[22] == ':' && strncmp(p + 25, " +0000", 6) == 0;
        if (date) {
            date = 0;
            for (int d = 0; d < 7; d++)
                date |= strncmp(p, days + 3 * d, 3) == 0;
        }
        if (date) {
            memcpy(out, "DATE", 4);
            out += 4;
            p += 31;
        } else {
            *out++ = *p++;
        }
    }
    *out = '\0';
}

static void check_text(const char *got, const char *want, int line)
{
    CU_ASSERT_STRING_EQUAL(got, want);
    if (strcmp(got, want) != 0) {
        size_t i = 0;
        while (got[i] && got[i] == want[i])
            i++;
        fprintf(stderr, "\n--- line %d: differs at %zu:\n--- got:\n%s\n--- want:\n%s\n", line, i, got, want);
    }
}

/* The DSN (commit 1) with its dates blanked. */
static char *dsn_text(void)
{
    CU_ASSERT_EQUAL_FATAL(fstats.ncommits, 2);
    char *d = strdup(fstats.commits[1].data);
    blank_dates(d);
    return d;
}

/* ==================================================================================== the report */

/* NOTIFY=SUCCESS to a local user from a local sender: a second message, the DSN, in the sender's INBOX. */
static void test_delivered_report(void)
{
    fake_session *fs = start(NULL);
    const char *id = SEND_OK(fs,
        "MAIL FROM:<bob@EXAMPLE.test> RET=HDRS ENVID=QQ+2B314159\r\n"
        "RCPT TO:<alice@example.test> NOTIFY=SUCCESS ORCPT=rfc822;Alice+40example.test\r\n"
        "DATA\r\nSubject: hello\r\nFrom: bob@example.test\r\n\r\nThe body.\r\n.\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 2);
    CU_ASSERT_STRING_EQUAL(fstats.commits[0].targets, "alice@example.test");
    CU_ASSERT_STRING_EQUAL(fstats.commits[1].targets, "bob@example.test"); /* the user, domain in lower case */
    CU_ASSERT_EQUAL(fstats.commits[1].delivery, 1);
    char *got = dsn_text();
    char want[8192];
    snprintf(want, sizeof want,
             "Return-Path: <>\r\n"
             "From: Mail Delivery System <MAILER-DAEMON@mail.example.test>\r\n"
             "To: <bob@EXAMPLE.test>\r\n"
             "Subject: Successful Mail Delivery Report\r\n"
             "Date: DATE\r\n"
             "Message-ID: <%s.DSN@mail.example.test>\r\n"
             "Auto-Submitted: auto-replied\r\n"
             "MIME-Version: 1.0\r\n"
             "Content-Type: multipart/report; report-type=delivery-status;\r\n"
             "\tboundary=\"=_mailproto-dsn-%s.DSN-0\"\r\n"
             "\r\n"
             "This is a MIME-encapsulated message.\r\n"
             "\r\n"
             "--=_mailproto-dsn-%s.DSN-0\r\n"
             "Content-Description: Notification\r\n"
             "Content-Type: text/plain; charset=us-ascii\r\n"
             "\r\n"
             "This is the mail system at host mail.example.test.\r\n"
             "\r\n"
             "Your message was delivered to the mailbox of this recipient:\r\n"
             "\r\n"
             "    <alice@example.test>\r\n"
             "\r\n"
             "It arrived on DATE and was stored as %s.\r\n"
             "You asked for this report (NOTIFY=SUCCESS); the message's header is attached.\r\n"
             "\r\n"
             "--=_mailproto-dsn-%s.DSN-0\r\n"
             "Content-Description: Delivery report\r\n"
             "Content-Type: message/delivery-status\r\n"
             "\r\n"
             "Original-Envelope-Id: QQ+314159\r\n"
             "Reporting-MTA: dns; mail.example.test\r\n"
             "Arrival-Date: DATE\r\n"
             "\r\n"
             "Original-Recipient: rfc822;Alice@example.test\r\n"
             "Final-Recipient: rfc822; alice@example.test\r\n"
             "Action: delivered\r\n"
             "Status: 2.0.0\r\n"
             "Final-Log-ID: %s\r\n"
             "\r\n"
             "--=_mailproto-dsn-%s.DSN-0\r\n"
             "Content-Description: Message headers\r\n"
             "Content-Type: text/rfc822-headers\r\n"
             "\r\n"
             "Subject: hello\r\n"
             "From: bob@example.test\r\n"
             "\r\n"
             "--=_mailproto-dsn-%s.DSN-0--\r\n",
             id, id, id, id, id, id, id, id);
    check_text(got, want, __LINE__);
    free(got);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp30052] DSN stored: id="));
    finish(fs);
}

/* Several recipients: one report, one group per recipient that asked; Original-Recipient only with ORCPT. */
static void test_several_recipients(void)
{
    fake_session *fs = start(NULL);
    const char *id = SEND_OK(fs,
        "MAIL FROM:<bob@example.test>\r\n"
        "RCPT TO:<alice@example.test> NOTIFY=FAILURE,SUCCESS\r\n"
        "RCPT TO:<carol@other.example> NOTIFY=NEVER\r\n"
        "RCPT TO:<postmaster@example.test> NOTIFY=SUCCESS ORCPT=rfc822;pm+40example.test\r\n"
        "RCPT TO:<bob@example.test>\r\n"
        "DATA\r\nSubject: many\r\n\r\nx\r\n.\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 2);
    char *got = dsn_text();
    char want[2048];
    snprintf(want, sizeof want,
             "Reporting-MTA: dns; mail.example.test\r\n"
             "Arrival-Date: DATE\r\n"
             "\r\n"
             "Final-Recipient: rfc822; alice@example.test\r\n"
             "Action: delivered\r\n"
             "Status: 2.0.0\r\n"
             "Final-Log-ID: %s\r\n"
             "\r\n"
             "Original-Recipient: rfc822;pm@example.test\r\n"
             "Final-Recipient: rfc822; postmaster@example.test\r\n"
             "Action: delivered\r\n"
             "Status: 2.0.0\r\n"
             "Final-Log-ID: %s\r\n"
             "\r\n--",
             id, id);
    CU_ASSERT_PTR_NOT_NULL(strstr(got, want));
    CU_ASSERT_PTR_NULL(strstr(got, "Original-Envelope-Id"));
    CU_ASSERT_PTR_NULL(strstr(got, "carol"));
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "mailbox of these recipients:\r\n\r\n    <alice@example.test>\r\n"
                                       "    <postmaster@example.test>\r\n\r\n"));
    free(got);
    finish(fs);
}

/* RFC 3461 section 4.3: a report without a failure returns the header only, whatever RET says. */
static void test_headers_only(void)
{
    static const char *const rets[] = {" RET=HDRS", " RET=FULL", ""};
    for (size_t i = 0; i < 3; i++) {
        fake_session *fs = start(NULL);
        char in[512];
        snprintf(in, sizeof in,
                 "MAIL FROM:<bob@example.test>%s\r\nRCPT TO:<alice@example.test> NOTIFY=SUCCESS\r\n"
                 "DATA\r\nSubject: secret body\r\nX-Folded: a\r\n\tb\r\n\r\nThe body must not come back.\r\n"
                 "..dot\r\n.\r\n",
                 rets[i]);
        SEND_OK(fs, in);
        char *got = dsn_text();
        CU_ASSERT_PTR_NULL(strstr(got, "must not come back"));
        CU_ASSERT_PTR_NULL(strstr(got, "message/rfc822\r\n"));
        const char *part = strstr(got, HEADERS_PART);
        const char *want = "Subject: secret body\r\nX-Folded: a\r\n\tb\r\n\r\n--=_mailproto-dsn-";
        CU_ASSERT_PTR_NOT_NULL(part);
        if (part)
            CU_ASSERT_NSTRING_EQUAL(part + strlen(HEADERS_PART), want, strlen(want));
        free(got);
        finish(fs);
    }
}

/* The header comes from BDAT chunks too, split anywhere, even in the empty line. */
static void test_bdat_header(void)
{
    fake_session *fs = start(NULL);
    SEND_OK(fs, "MAIL FROM:<bob@example.test>\r\nRCPT TO:<alice@example.test> NOTIFY=SUCCESS\r\n"
                "BDAT 15\r\nSubject: a\r\nX-Y" "BDAT 6\r\n: z\r\n\r" "BDAT 7 LAST\r\n\nbody\r\n");
    char *got = dsn_text();
    CU_ASSERT_PTR_NOT_NULL(strstr(got, HEADERS_PART "Subject: a\r\nX-Y: z\r\n\r\n--="));
    CU_ASSERT_PTR_NULL(strstr(got, "body"));
    free(got);
    finish(fs);
}

/* A header over SMTP_DSN_HEADERS_MAX (64 KiB): returned up to the last whole field, and the text says so. */
static void test_long_header(void)
{
    fake_session *fs = start(BIG);
    size_t cap = 200000, n = 0;
    char *in = malloc(cap);
    n += (size_t)snprintf(in + n, cap - n, "MAIL FROM:<bob@example.test>\r\nRCPT TO:<alice@example.test> NOTIFY=SUCCESS\r\nDATA\r\n");
    size_t start_hdr = n;
    for (int i = 0; n - start_hdr < 70000; i++) {
        n += (size_t)snprintf(in + n, cap - n, "X-Line-%05d: %s\r\n\t%s\r\n", i,
                              "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                              "continued");
    }
    n += (size_t)snprintf(in + n, cap - n, "\r\nbody\r\n.\r\n");
    SEND_OK(fs, in);
    free(in);
    char *got = dsn_text();
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "The header was longer than 65536 bytes: only its beginning is attached.\r\n"));
    const char *part = strstr(got, HEADERS_PART);
    CU_ASSERT_PTR_NOT_NULL_FATAL(part);
    part += strlen(HEADERS_PART);
    const char *end = strstr(part, "\r\n--=_mailproto-dsn-");
    CU_ASSERT_PTR_NOT_NULL_FATAL(end);
    size_t len = (size_t)(end - part);
    CU_ASSERT(len <= 65536 && len > 60000);
    CU_ASSERT_NSTRING_EQUAL(end - 14, "\r\n\tcontinued\r\n", 14); /* whole fields only */
    CU_ASSERT_PTR_NULL(strstr(got, "body"));
    free(got);
    finish(fs);

    /* exactly 65536 bytes (1024 lines of 64): all of it, and not called longer; then one line more:
       cut where a field begins, so every whole field is kept */
    for (int extra = 0; extra < 2; extra++) {
        fakes_reset();
        fs = start(BIG);
        in = malloc(cap);
        n = (size_t)snprintf(in, cap, "MAIL FROM:<bob@example.test>\r\nRCPT TO:<alice@example.test> NOTIFY=SUCCESS\r\nDATA\r\n");
        for (int i = 0; i < 1024 + extra; i++)
            n += (size_t)snprintf(in + n, cap - n, "X-Pad-%05d: %.49s\r\n", i,
                                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        n += (size_t)snprintf(in + n, cap - n, "\r\nbody\r\n.\r\n");
        SEND_OK(fs, in);
        free(in);
        got = dsn_text();
        CU_ASSERT_EQUAL(strstr(got, "The header was longer than") != NULL, extra);
        part = strstr(got, HEADERS_PART);
        CU_ASSERT_PTR_NOT_NULL_FATAL(part);
        part += strlen(HEADERS_PART);
        end = strstr(part, "\r\n--=_mailproto-dsn-");
        CU_ASSERT_PTR_NOT_NULL_FATAL(end);
        CU_ASSERT_EQUAL((size_t)(end - part), 65536);
        CU_ASSERT_PTR_NOT_NULL(strstr(part, "X-Pad-01023: "));
        free(got);
        finish(fs);
    }
}

/* ==================================================================================== no report */

static void test_no_report(void)
{
    /* NOTIFY=NEVER, FAILURE, DELAY, or none */
    static const char *const notify[] = {" NOTIFY=NEVER", " NOTIFY=FAILURE", " NOTIFY=DELAY", " NOTIFY=FAILURE,DELAY", ""};
    for (size_t i = 0; i < 5; i++) {
        fake_session *fs = start(NULL);
        char in[512];
        snprintf(in, sizeof in, "MAIL FROM:<bob@example.test> RET=FULL\r\nRCPT TO:<alice@example.test>%s\r\n"
                                "DATA\r\nSubject: x\r\n\r\ny\r\n.\r\n", notify[i]);
        SEND_OK(fs, in);
        CU_ASSERT_EQUAL(fstats.committed, 1);
        CU_ASSERT_PTR_NULL(strstr(fake_log(fs), "DSN"));
        finish(fs);
    }

    /* MAIL FROM:<>: never (RFC 5321 section 4.5.5) */
    fake_session *fs = start(NULL);
    SEND_OK(fs, "MAIL FROM:<> ENVID=x\r\nRCPT TO:<alice@example.test> NOTIFY=SUCCESS\r\nDATA\r\nSubject: x\r\n\r\ny\r\n.\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 1);
    CU_ASSERT_PTR_NULL(strstr(fake_log(fs), "DSN"));
    finish(fs);

    /* a remote sender: no outbound queue, a log line with the message id */
    fs = start(NULL);
    const char *id = SEND_OK(fs, "MAIL FROM:<someone@remote.example>\r\nRCPT TO:<alice@example.test> NOTIFY=SUCCESS\r\n"
                                 "RCPT TO:<bob@example.test> NOTIFY=SUCCESS\r\nDATA\r\nSubject: x\r\n\r\ny\r\n.\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 1);
    char want[512];
    snprintf(want, sizeof want,
             "[mp30050] DSN not sent for message %s: from=<someone@remote.example> is not local and there is no "
             "outbound queue (NOTIFY=SUCCESS for <alice@example.test>,<bob@example.test>)", id);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), want));
    finish(fs);

    /* many recipients asked: the first 10 are named */
    fs = start(NULL);
    char many[2048] = "MAIL FROM:<someone@remote.example>\r\n";
    for (int i = 0; i < 12; i++)
        strcat(many, "RCPT TO:<alice@EXAMPLE.test> NOTIFY=SUCCESS\r\n");
    strcat(many, "DATA\r\nSubject: x\r\n\r\ny\r\n.\r\n");
    SEND_OK(fs, many);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "(NOTIFY=SUCCESS for <alice@EXAMPLE.test>,<alice@EXAMPLE.test>,"
                                                "<alice@EXAMPLE.test>,<alice@EXAMPLE.test>,<alice@EXAMPLE.test>,"
                                                "<alice@EXAMPLE.test>,<alice@EXAMPLE.test>,<alice@EXAMPLE.test>,"
                                                "<alice@EXAMPLE.test>,<alice@EXAMPLE.test> and 2 more)"));
    finish(fs);

    /* a sender in a local domain the user database does not know */
    fs = start(NULL);
    id = SEND_OK(fs, "MAIL FROM:<nobody@example.test>\r\nRCPT TO:<alice@example.test> NOTIFY=SUCCESS\r\n"
                     "DATA\r\nSubject: x\r\n\r\ny\r\n.\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 1);
    snprintf(want, sizeof want, "[mp30054] DSN not sent for message %s: the sender <nobody@example.test> is not a user here", id);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), want));
    finish(fs);

    /* a transaction that failed for one recipient: 451 and no report (the retry gets it) */
    fs = start(NULL);
    EXPECT(fs, "MAIL FROM:<bob@example.test>\r\nRCPT TO:<alice@example.test> NOTIFY=SUCCESS\r\n"
               "RCPT TO:<broken@example.test> NOTIFY=SUCCESS\r\nDATA\r\nx\r\n.\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
           "451 4.3.0 Error: local error in processing\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 1);
    CU_ASSERT_PTR_NULL(strstr(fake_log(fs), "DSN"));
    finish(fs);
}

/* The 250 is written before the DSN is stored, and a DSN that cannot be stored changes nothing. */
static void test_reply_first(void)
{
    fake_session *fs = start(NULL);
    fake_hold_jobs(fs, 1);
    fake_feed_str(fs, "MAIL FROM:<bob@example.test>\r\n");
    CU_ASSERT_EQUAL(fake_run_job(fs), -1); /* MAIL has no job */
    fake_feed_str(fs, "RCPT TO:<alice@example.test> NOTIFY=SUCCESS\r\n");
    CU_ASSERT_EQUAL(fake_run_job(fs), 0);
    fake_feed_str(fs, "DATA\r\nSubject: x\r\n\r\ny\r\n.\r\nNOOP\r\n");
    fake_clear(fs);
    CU_ASSERT_EQUAL(fake_run_job(fs), 0); /* the commit */
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_output(fs), "250 2.0.0 Ok: stored as "));
    CU_ASSERT_PTR_NULL(strstr(fake_output(fs), "NOOP"));
    CU_ASSERT_EQUAL(fstats.committed, 1);
    CU_ASSERT_TRUE(fake_job_pending(fs)); /* the DSN, after the reply; NOOP waits for it */
    fake_clear(fs);
    CU_ASSERT_EQUAL(fake_run_job(fs), 0);
    CU_ASSERT_EQUAL(fstats.committed, 2);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "250 2.0.0 Ok\r\n");
    fake_clear(fs);
    fake_hold_jobs(fs, 0);

    /* the sender's mailbox is full at commit (late-full@ in the fake store): the 250 stands, a warning */
    EXPECT(fs, "RSET\r\n", "250 2.0.0 Ok\r\n");
    finish(fs);
    fs = start(NULL);
    const char *id = SEND_OK(fs, "MAIL FROM:<late-full@example.test>\r\nRCPT TO:<alice@example.test> NOTIFY=SUCCESS\r\n"
                                 "DATA\r\nSubject: x\r\n\r\ny\r\n.\r\n");
    CU_ASSERT_EQUAL(fstats.committed, 2); /* tried */
    char want[256];
    snprintf(want, sizeof want, "[mp30053] DSN for message %s not stored for <late-full@example.test>: mailbox full", id);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), want));
    EXPECT(fs, "NOOP\r\n", "250 2.0.0 Ok\r\n");
    finish(fs);

    /* the client leaves before the reply: the message is stored, the DSN is not (logged) */
    fs = start(NULL);
    fake_hold_jobs(fs, 1);
    fake_feed_str(fs, "MAIL FROM:<bob@example.test>\r\nRCPT TO:<alice@example.test> NOTIFY=SUCCESS\r\n");
    fake_run_job(fs);
    fake_feed_str(fs, "DATA\r\nSubject: x\r\n\r\ny\r\n.\r\n");
    fake_goodbye(fs, MP_BYE_IDLE);
    CU_ASSERT_EQUAL(fake_run_job(fs), 0);
    CU_ASSERT_FALSE(fake_job_pending(fs));
    CU_ASSERT_EQUAL(fstats.committed, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp30051] DSN not sent for message "));
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "to <bob@example.test>: the client left before the reply"));
    finish(fs);
}

/* Submission: the authenticated user's own address gets the report. */
static void test_submission(void)
{
    fakes_reset();
    fake_session *fs = smtp_fake_start(M, MP_TLS_IMPLICIT, SUBMISSION);
    fake_feed_str(fs, "EHLO x\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_output(fs), "235 2.7.0"));
    fake_clear(fs);
    SEND_OK(fs, "MAIL FROM:<alice@example.test> ENVID=sub-1\r\nRCPT TO:<bob@example.test> NOTIFY=SUCCESS\r\n"
                "DATA\r\nSubject: to bob\r\n\r\nhi\r\n.\r\n");
    CU_ASSERT_STRING_EQUAL(fstats.commits[1].targets, "alice@example.test");
    CU_ASSERT_PTR_NOT_NULL(strstr(fstats.commits[1].data, "\r\nOriginal-Envelope-Id: sub-1\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fstats.commits[1].data, "\r\nFinal-Recipient: rfc822; bob@example.test\r\n"));
    finish(fs);
}

/* ENVID and ORCPT must decode to printable text: they go into DSN fields as they are (RFC 3461 4.2, 4.4). */
static void test_parameter_text(void)
{
    fake_session *fs = start(NULL);
    EXPECT(fs, "MAIL FROM:<bob@example.test> ENVID=a+0D+0Ab\r\n", "501 5.5.4 Bad ENVID parameter\r\n");
    EXPECT(fs, "MAIL FROM:<bob@example.test> ENVID=a+C3+A9\r\n", "501 5.5.4 Bad ENVID parameter\r\n");
    EXPECT(fs, "MAIL FROM:<bob@example.test> ENVID=a+20b+09c\r\n", "250 2.1.0 Ok\r\n");
    EXPECT(fs, "RCPT TO:<alice@example.test> ORCPT=rfc822;a+0Ab\r\n", "501 5.5.4 Bad ORCPT parameter\r\n");
    EXPECT(fs, "RCPT TO:<alice@example.test> ORCPT=rfc822;a+7Fb\r\n", "501 5.5.4 Bad ORCPT parameter\r\n");
    EXPECT(fs, "RCPT TO:<alice@example.test> ORCPT=rfc822;a+C3+A9b\r\n", "501 5.5.4 Bad ORCPT parameter\r\n");
    EXPECT(fs, "RCPT TO:<alice@example.test> NOTIFY=SUCCESS ORCPT=rfc822;a+2Bb+3Dc\r\n", "250 2.1.5 Ok\r\n");
    SEND_OK(fs, "DATA\r\nSubject: x\r\n\r\ny\r\n.\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fstats.commits[1].data, "\r\nOriginal-Envelope-Id: a b\tc\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fstats.commits[1].data, "\r\nOriginal-Recipient: rfc822;a+b=c\r\n"));
    finish(fs);
}

/* SMTPUTF8: an address in UTF-8 makes message/global-delivery-status with the "utf-8" address type. */
static void test_utf8(void)
{
    fake_session *fs = start(NULL);
    SEND_OK(fs, "MAIL FROM:<bob@example.test> SMTPUTF8\r\nRCPT TO:<b\xc3\xa9@example.test> NOTIFY=SUCCESS\r\n"
                "DATA\r\nSubject: caf\xc3\xa9\r\n\r\ny\r\n.\r\n");
    char *got = dsn_text();
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "\r\nContent-Transfer-Encoding: 8bit\r\n\r\nThis is a MIME"));
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "Content-Type: message/global-delivery-status\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "\r\nFinal-Recipient: utf-8; b\xc3\xa9@example.test\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "Content-Type: message/global-headers\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                                       "Subject: caf\xc3\xa9\r\n"));
    free(got);
    finish(fs);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("smtp_dsn", NULL, NULL);
    CU_add_test(s, "delivered report", test_delivered_report);
    CU_add_test(s, "several recipients", test_several_recipients);
    CU_add_test(s, "headers only", test_headers_only);
    CU_add_test(s, "header from BDAT", test_bdat_header);
    CU_add_test(s, "long header", test_long_header);
    CU_add_test(s, "no report", test_no_report);
    CU_add_test(s, "reply first", test_reply_first);
    CU_add_test(s, "submission", test_submission);
    CU_add_test(s, "parameter text", test_parameter_text);
    CU_add_test(s, "SMTPUTF8", test_utf8);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    fakes_reset();
    return failed ? 1 : 0;
}

/*
 * mod_lmtp (the SMTP sources built with SMTP_LMTP=1) driven by the fake host: LHLO instead of HELO/EHLO
 * and one reply per accepted recipient after the data (RFC 2033 section 4.2), for DATA and BDAT LAST; no
 * DSN of its own.
 */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include "fake_host.h"
#include "test_smtp_fakes.h"

extern const mp_module mp_module_descriptor;
#define M (&mp_module_descriptor)

/* No DSN: the MTA in front reports success itself (modules/smtp/smtp_dsn.c). */
#define LHLO_REPLY \
    "250-mail.example.test Hello mta.example [192.0.2.1]\r\n250-PIPELINING\r\n250-SIZE 4096\r\n250-8BITMIME\r\n" \
    "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"

#define EXPECT(fs, in, want) \
    do { \
        fake_feed_str((fs), (in)); \
        CU_ASSERT_STRING_EQUAL(fake_output(fs), (want)); \
        if (strcmp(fake_output(fs), (want)) != 0) \
            fprintf(stderr, "\n--- line %d: got:\n%s--- want:\n%s", __LINE__, fake_output(fs), (want)); \
        fake_clear(fs); \
    } while (0)

static fake_session *start(void)
{
    fakes_reset();
    return smtp_fake_start(M, MP_TLS_OFF, NULL);
}

static void finish(fake_session *fs)
{
    CU_ASSERT_EQUAL(fake_violations(fs), 0);
    fake_end(fs);
    CU_ASSERT_EQUAL(fstats.users_open, 0);
}

static void test_descriptor(void)
{
    CU_ASSERT_STRING_EQUAL(M->name, "lmtp");
    CU_ASSERT_STRING_EQUAL(M->protocol->name, "lmtp");
    CU_ASSERT_STRING_EQUAL(M->directives[0].name, "MaxRecipients");
    CU_ASSERT_PTR_NULL(M->directives[1].name);
}

static void test_lhlo(void)
{
    fake_session *fs = start();
    EXPECT(fs, "EHLO mta.example\r\n", "500 5.5.2 Error: command not recognized\r\n");
    EXPECT(fs, "HELO mta.example\r\n", "500 5.5.2 Error: command not recognized\r\n");
    EXPECT(fs, "MAIL FROM:<a@remote.example>\r\n", "503 5.5.1 Error: send LHLO first\r\n");
    EXPECT(fs, "LHLO mta.example\r\n", LHLO_REPLY);
    EXPECT(fs, "AUTH PLAIN\r\n", "500 5.5.2 Error: command not recognized\r\n");
    EXPECT(fs, "MAIL FROM:<a@remote.example>\r\nDATA\r\n", "250 2.1.0 Ok\r\n503 5.5.1 Error: need RCPT command\r\n");
    EXPECT(fs, "RCPT TO:<x@remote.example>\r\nDATA\r\n",
           "550 5.1.2 <x@remote.example>: Recipient domain not handled here\r\n503 5.5.1 Error: need RCPT command\r\n");
    finish(fs);
}

/* RFC 2033 section 4.2: after the final dot, one reply per successful RCPT, in RCPT order. */
static void test_per_recipient_replies(void)
{
    fake_session *fs = start();
    EXPECT(fs,
           "LHLO mta.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
           "RCPT TO:<nobody@example.test>\r\nRCPT TO:<late-full@example.test>\r\nRCPT TO:<broken@example.test>\r\n"
           "RCPT TO:<alice@EXAMPLE.test>\r\nDATA\r\n",
           LHLO_REPLY "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
           "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown\r\n"
           "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    fake_feed_str(fs, "Subject: x\r\n\r\nhi\r\n.\r\n");
    const char *out = fake_output(fs);
    char want[1024];
    const char *id = strstr(out, "stored as ");
    CU_ASSERT_PTR_NOT_NULL_FATAL(id);
    id += 10;
    int idlen = (int)strcspn(id, "\r");
    snprintf(want, sizeof want,
             "250 2.0.0 <alice@example.test> Ok: stored as %.*s\r\n452 4.2.2 <late-full@example.test> Mailbox full\r\n"
             "451 4.3.0 <broken@example.test> Error: local error in processing\r\n"
             "250 2.0.0 <alice@EXAMPLE.test> Ok: stored as %.*s\r\n",
             idlen, id, idlen, id);
    CU_ASSERT_STRING_EQUAL(out, want);
    CU_ASSERT_STRING_EQUAL(fstats.last_targets, "alice@example.test,late-full@example.test,broken@example.test");
    CU_ASSERT_PTR_NOT_NULL(strstr(fstats.last, "with LMTP id "));
    fake_clear(fs);

    /* BDAT LAST: the same per-recipient replies */
    EXPECT(fs, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nBDAT 3\r\nab\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: 3 octets received\r\n");
    EXPECT(fs, "BDAT 0 LAST\r\n",
           "554 5.6.0 <alice@example.test>: Message contains bare CR or LF characters\r\n"
           "554 5.6.0 <bob@example.test>: Message contains bare CR or LF characters\r\n");
    fake_feed_str(fs, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
                      "BDAT 4 LAST\r\nab\r\n");
    out = fake_output(fs);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "250 2.1.5 Ok\r\n250 2.0.0 <alice@example.test> Ok: stored as "));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\r\n250 2.0.0 <bob@example.test> Ok: stored as "));
    fake_clear(fs);

    /* a bare LF in DATA: per-recipient 554 */
    EXPECT(fs, "MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\n.\nRSET\r\n.\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
           "554 5.6.0 <alice@example.test>: Message contains bare CR or LF characters\r\n");
    finish(fs);
}

/* LMTP does not announce DSN and stores no "delivered" DSN: the LMTP client (the MTA with the queue) reports
   success itself. Parameters sent anyway are accepted and logged. */
static void test_no_dsn(void)
{
    fake_session *fs = start();
    EXPECT(fs, "LHLO mta.example\r\n", LHLO_REPLY);
    fake_feed_str(fs, "MAIL FROM:<bob@example.test> RET=HDRS ENVID=e1\r\n"
                      "RCPT TO:<alice@example.test> NOTIFY=SUCCESS ORCPT=rfc822;alice+40example.test\r\n"
                      "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_output(fs), "250 2.0.0 <alice@example.test> Ok: stored as "));
    fake_clear(fs);
    CU_ASSERT_EQUAL(fstats.committed, 1);
    CU_ASSERT_STRING_EQUAL(fstats.last_targets, "alice@example.test");
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "(notify=SUCCESS orcpt=rfc822;alice+40example.test)"));
    CU_ASSERT_PTR_NULL(strstr(fake_log(fs), "DSN"));
    finish(fs);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("lmtp_session", NULL, NULL);
    CU_add_test(s, "descriptor", test_descriptor);
    CU_add_test(s, "LHLO", test_lhlo);
    CU_add_test(s, "per-recipient replies", test_per_recipient_replies);
    CU_add_test(s, "no DSN of its own", test_no_dsn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}

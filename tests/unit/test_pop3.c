/*
 * mod_pop3 driven by the fake host with in-memory store and auth providers (test_pop3_fake.c): bytes in,
 * replies out, no sockets. Compiled together with the sources of modules/pop3, so the module's descriptor
 * is an ordinary symbol here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <mailproto/host.h>
#include "b64.h"
#include "fake_host.h"
#include "pop3.h"
#include "pop3_parse.h"
#include "test_pop3.h"
#include "test_pop3_fake.h"

extern const mp_module mp_module_descriptor;

/* ---------------------------------------------------------------- helpers */

void mailbox(void)
{
    pop3fake_reset();
    pop3fake_add(ALICE, NULL, M1, strlen(M1));
    pop3fake_add(ALICE, NULL, M2, strlen(M2));
    pop3fake_add(ALICE, NULL, M3, strlen(M3));
}

fake_session *connect_only(mp_tls_mode tls)
{
    fake_session *fs = fake_new_module(&mp_module_descriptor, tls);
    pop3fake_setup(fs);
    CU_ASSERT_EQUAL(fake_connect(fs), 0);
    return fs;
}

/* A connected session, greeting checked and cleared. */
fake_session *start(mp_tls_mode tls)
{
    fake_session *fs = connect_only(tls);
    CU_ASSERT_EQUAL(strncmp(fake_output(fs), "+OK mail.example.test POP3 ready", 32), 0);
    fake_clear(fs);
    return fs;
}

const char *cmd(fake_session *fs, const char *text)
{
    fake_clear(fs);
    fake_feed_str(fs, text);
    return fake_output(fs);
}

/* USER alice / PASS secret. */
fake_session *logged_in(mp_tls_mode tls)
{
    fake_session *fs = start(tls);
    const char *out = cmd(fs, "USER alice\r\nPASS secret\r\n");
    const char *want = "+OK\r\n+OK Logged in, ";
    CU_ASSERT_EQUAL(strncmp(out, want, strlen(want)), 0);
    if (strncmp(out, want, strlen(want)) != 0)
        fprintf(stderr, "\nlogin: %s\n%s\n", out, fake_log(fs));
    fake_clear(fs);
    return fs;
}

void finish(fake_session *fs)
{
    CU_ASSERT_EQUAL(fake_violations(fs), 0);
    if (fake_violations(fs))
        fprintf(stderr, "%s\n", fake_log(fs));
    fake_end(fs);
}

/* Runs every want_writable round; returns the number of rounds. */
unsigned drain(fake_session *fs)
{
    unsigned rounds = 0;
    while (fake_want_writable(fs) && rounds < 100000) {
        fake_writable(fs);
        rounds++;
    }
    return rounds;
}

int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---------------------------------------------------------------- descriptor, greeting, CAPA */

static void test_descriptor(void)
{
    const mp_module *m = &mp_module_descriptor;
    CU_ASSERT_EQUAL(m->magic, MP_MODULE_MAGIC);
    CU_ASSERT_EQUAL(m->abi_major, MP_ABI_MAJOR);
    CU_ASSERT_STRING_EQUAL(m->name, "pop3");
    CU_ASSERT_EQUAL(m->kind, MP_KIND_PROTOCOL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m->protocol);
    CU_ASSERT_STRING_EQUAL(m->protocol->name, "pop3");
    CU_ASSERT_EQUAL(m->protocol->default_port, 110);
    CU_ASSERT_EQUAL(m->protocol->default_tls_port, 995);
    CU_ASSERT_PTR_NOT_NULL(m->protocol->on_writable);
    CU_ASSERT_PTR_NOT_NULL(m->protocol->on_goodbye);
    CU_ASSERT_PTR_NOT_NULL(m->protocol->on_close);
    CU_ASSERT_PTR_NOT_NULL(m->protocol->on_tls_ready);
}

static void test_greeting_apop_banner(void)
{
    mailbox();
    fake_session *fs = connect_only(MP_TLS_OFF);
    const char *g = fake_output(fs);
    CU_ASSERT_EQUAL(strncmp(g, "+OK mail.example.test POP3 ready <", 34), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(g, "@mail.example.test>\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp40001]"));
    finish(fs);

    /* no plaintext-equivalent secrets: no APOP, no banner */
    pop3fake_cfg.plaintext_secrets = 0;
    fs = connect_only(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK mail.example.test POP3 ready\r\n");
    fake_clear(fs);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "APOP alice 0123456789abcdef0123456789abcdef\r\n"), "-ERR APOP not available\r\n");
    finish(fs);
}

static void test_capa_by_listener(void)
{
    mailbox();
    const char *head = "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n";
    char want[512];

    /* RFC 6856: "UTF8 USER" when USER/PASS or APOP can be used, else "UTF8"; LANG always */
    fake_session *fs = start(MP_TLS_OFF);
    snprintf(want, sizeof want, "%sUSER\r\nSASL PLAIN LOGIN SCRAM-SHA-256\r\nUTF8 USER\r\nLANG\r\n"
             "IMPLEMENTATION mailproto\r\n.\r\n", head);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "CAPA\r\n"), want);
    finish(fs);

    /* STLS offered: no plaintext before TLS, SCRAM stays; APOP takes UTF-8 names */
    fs = start(MP_TLS_STARTTLS);
    snprintf(want, sizeof want, "%sSASL SCRAM-SHA-256\r\nSTLS\r\nUTF8 USER\r\nLANG\r\nIMPLEMENTATION mailproto\r\n.\r\n",
             head);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "CAPA\r\n"), want);
    finish(fs);

    /* no way to log in before TLS: UTF8 without USER */
    fs = start(MP_TLS_REQUIRED);
    snprintf(want, sizeof want, "%sSTLS\r\nUTF8\r\nLANG\r\nIMPLEMENTATION mailproto\r\n.\r\n", head);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "capa\r\n"), want);
    finish(fs);

    fs = start(MP_TLS_IMPLICIT);
    snprintf(want, sizeof want, "%sUSER\r\nSASL PLAIN LOGIN SCRAM-SHA-256\r\nUTF8 USER\r\nLANG\r\n"
             "IMPLEMENTATION mailproto\r\n.\r\n", head);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "CAPA\r\n"), want);
    finish(fs);

    /* no SCRAM secrets: SCRAM not offered */
    pop3fake_cfg.scram_secrets = 0;
    fs = start(MP_TLS_OFF);
    CU_ASSERT_TRUE(contains(cmd(fs, "CAPA\r\n"), "SASL PLAIN LOGIN\r\n"));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH SCRAM-SHA-256\r\n"), "-ERR Unsupported authentication mechanism\r\n");
    finish(fs);

    /* in TRANSACTION: no USER, SASL or STLS; UTF8 and LANG as before login (RFC 6856: "possible
       differences: no") */
    pop3fake_cfg.scram_secrets = 1;
    fs = logged_in(MP_TLS_IMPLICIT);
    snprintf(want, sizeof want, "%sUTF8 USER\r\nLANG\r\nIMPLEMENTATION mailproto\r\n.\r\n", head);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "CAPA\r\n"), want);
    finish(fs);
}

static void test_auth_lists_mechanisms(void)
{
    mailbox();
    fake_session *fs = start(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH\r\n"), "+OK\r\nPLAIN\r\nLOGIN\r\nSCRAM-SHA-256\r\n.\r\n");
    finish(fs);
}

/* ---------------------------------------------------------------- USER / PASS */

static void test_user_pass_and_transaction(void)
{
    mailbox();
    fake_session *fs = logged_in(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(pop3fake_stats_now.last_user_open, ALICE); /* the canonical name, not "alice" */
    CU_ASSERT_TRUE(pop3fake_locked(ALICE));
    CU_ASSERT_EQUAL(pop3fake_stats_now.succeeded_calls, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp40101]"));
    CU_ASSERT_PTR_NULL(strstr(fake_log(fs), "secret")); /* never the password */

    char want[256];
    snprintf(want, sizeof want, "+OK 3 %zu\r\n", strlen(M1) + strlen(M2) + strlen(M3));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STAT\r\n"), want);
    snprintf(want, sizeof want, "+OK 3 messages (%zu octets)\r\n1 %zu\r\n2 %zu\r\n3 %zu\r\n.\r\n",
             strlen(M1) + strlen(M2) + strlen(M3), strlen(M1), strlen(M2), strlen(M3));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "LIST\r\n"), want);
    snprintf(want, sizeof want, "+OK 2 %zu\r\n", strlen(M2));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "LIST 2\r\n"), want);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "UIDL\r\n"), "+OK Unique-ID listing follows\r\n1 K1\r\n2 K2\r\n3 K3\r\n.\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "UIDL 3\r\n"), "+OK 3 K3\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "NOOP\r\n"), "+OK\r\n");
    snprintf(want, sizeof want, "+OK %zu octets\r\n%s.\r\n", strlen(M1), M1);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "RETR 1\r\n"), want);
    /* dot-stuffing of ".dot" */
    CU_ASSERT_TRUE(contains(cmd(fs, "RETR 2\r\n"), "\r\nline1\r\n..dot\r\nline3\r\n.\r\n"));
    CU_ASSERT_EQUAL(pop3fake_stats_now.stream_opens, pop3fake_stats_now.stream_closes);

    CU_ASSERT_STRING_EQUAL(cmd(fs, "QUIT\r\n"), "+OK Logging out\r\n");
    CU_ASSERT_TRUE(fake_close_requested(fs));
    CU_ASSERT_FALSE(pop3fake_locked(ALICE)); /* released before the +OK */
    CU_ASSERT_EQUAL(pop3fake_count(ALICE), 3);
    CU_ASSERT_EQUAL(pop3fake_stats_now.expunges, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp40301]"));
    CU_ASSERT_EQUAL(fake_errors(fs), 0);
    finish(fs);
    CU_ASSERT_EQUAL(pop3fake_stats_now.folder_opens, pop3fake_stats_now.folder_closes);
    CU_ASSERT_EQUAL(pop3fake_stats_now.user_opens, pop3fake_stats_now.user_closes);
}

static void test_wrong_password_is_delayed(void)
{
    mailbox();
    pop3fake_cfg.fail_delay = 2 * APR_USEC_PER_SEC;
    fake_session *fs = start(MP_TLS_OFF);
    /* the reply waits for the delay; pipelined commands wait behind it */
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER alice\r\nPASS wrong\r\nUSER alice\r\n"), "+OK\r\n");
    CU_ASSERT_EQUAL(fake_timers_active(fs), 1);
    CU_ASSERT_EQUAL(fake_last_timer_after(fs), 2 * APR_USEC_PER_SEC);
    CU_ASSERT_EQUAL(pop3fake_stats_now.failed_calls, 1);
    CU_ASSERT_TRUE(fake_input_pending(fs) > 0);
    fake_clear(fs);
    CU_ASSERT_EQUAL(fake_fire_timers(fs), 1);
    /* the failure, then the held USER (the host offers buffered input again after a timer) */
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "-ERR [AUTH] Authentication failed\r\n+OK\r\n");
    CU_ASSERT_EQUAL(fake_input_pending(fs), 0);
    CU_ASSERT_EQUAL(fake_errors(fs), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp40102]"));
    CU_ASSERT_PTR_NULL(strstr(fake_log(fs), "wrong"));
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "PASS secret\r\n"), "+OK Logged in", 13), 0);
    finish(fs);

    /* an unknown user fails the same way */
    pop3fake_cfg.fail_delay = 0;
    fs = start(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER nobody@example.test\r\nPASS secret\r\n"),
                           "+OK\r\n-ERR [AUTH] Authentication failed\r\n");
    finish(fs);
}

static void test_pass_rules(void)
{
    mailbox();
    fake_session *fs = start(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "PASS secret\r\n"), "-ERR No user name given: USER first\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER\r\n"), "-ERR Missing user name\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER a b\r\n"), "-ERR Too many arguments\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER alice\r\nPASS\r\n"), "+OK\r\n-ERR Missing password\r\n");
    /* a password with spaces is the whole rest of the line (RFC 1939 section 7) */
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "USER alice\r\nPASS sec ret\r\n"), "+OK\r\n-ERR [AUTH]", 15), 0);
    CU_ASSERT_STRING_EQUAL(pop3fake_stats_now.last_verify_password, "sec ret");
    /* the user database is down */
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER temp@example.test\r\nPASS x\r\n"),
                           "+OK\r\n-ERR [SYS/TEMP] Authentication temporarily unavailable, try again later\r\n");
    /* allow_nets: the fake peer is 192.0.2.1 */
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER net@example.test\r\nPASS secret\r\n"),
                           "+OK\r\n-ERR [AUTH] Authentication failed\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "not allowed from this address"));
    finish(fs);

    fs = start(MP_TLS_OFF);
    fake_set_peer(fs, "10.1.2.3", 40000);
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "USER net@example.test\r\nPASS secret\r\n"), "+OK\r\n+OK Logged in", 18), 0);
    finish(fs);
}

static void test_wrong_state_commands(void)
{
    mailbox();
    fake_session *fs = start(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STAT\r\n"), "-ERR Not logged in\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "RETR 1\r\n"), "-ERR Not logged in\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "NOOP\r\n"), "-ERR Not logged in\r\n");
    finish(fs);

    fs = logged_in(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER alice\r\n"), "-ERR Already logged in\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "PASS secret\r\n"), "-ERR Already logged in\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STLS\r\n"), "-ERR Already logged in\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH PLAIN\r\n"), "-ERR Already logged in\r\n");
    CU_ASSERT_EQUAL(fake_tls_requested(fs), 0);
    finish(fs);
}

/* ---------------------------------------------------------------- parsing and errors */

static void test_bad_arguments(void)
{
    mailbox();
    fake_session *fs = logged_in(MP_TLS_OFF);
    static const struct {
        const char *in, *out;
        int error;
    } cases[] = {
        {"RETR 0\r\n", "-ERR No such message\r\n", 0},
        {"RETR 4\r\n", "-ERR No such message\r\n", 0},
        {"RETR -1\r\n", "-ERR Invalid message number\r\n", 1},
        {"RETR +1\r\n", "-ERR Invalid message number\r\n", 1},
        {"RETR 99999999999999999999\r\n", "-ERR No such message\r\n", 0},
        {"RETR 18446744073709551616\r\n", "-ERR No such message\r\n", 0},
        {"RETR 4294967297\r\n", "-ERR No such message\r\n", 0},
        {"RETR 1x\r\n", "-ERR Invalid message number\r\n", 1},
        {"RETR 0x1\r\n", "-ERR Invalid message number\r\n", 1},
        {"RETR\r\n", "-ERR Missing argument\r\n", 1},
        {"RETR 1 2\r\n", "-ERR Too many arguments\r\n", 1},
        {"RETR 1 2 3 4 5\r\n", "-ERR Too many arguments\r\n", 1},
        {"TOP 1 -5\r\n", "-ERR Invalid number of lines\r\n", 1},
        {"TOP 1\r\n", "-ERR Missing argument\r\n", 1},
        {"TOP x 1\r\n", "-ERR Invalid message number\r\n", 1},
        {"TOP 9 1\r\n", "-ERR No such message\r\n", 0},
        {"LIST 0\r\n", "-ERR No such message\r\n", 0},
        {"LIST 1 2\r\n", "-ERR Too many arguments\r\n", 1},
        {"UIDL 99\r\n", "-ERR No such message\r\n", 0},
        {"DELE\r\n", "-ERR Missing argument\r\n", 1},
        {"STAT now\r\n", "-ERR Too many arguments\r\n", 1},
        {"NOOP 1\r\n", "-ERR Too many arguments\r\n", 1},
        {"RSET x\r\n", "-ERR Too many arguments\r\n", 1},
        {"XYZZY\r\n", "-ERR Unknown command\r\n", 1},
        {"RETRR 1\r\n", "-ERR Unknown command\r\n", 1},
        {"\r\n", "-ERR Empty command\r\n", 1},
        {"   \r\n", "-ERR Empty command\r\n", 1},
        {"RETR\t1\r\n", "-ERR Invalid characters in command\r\n", 1},
        {"RE\0TR 1\r\n", "-ERR Invalid characters in command\r\n", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned before = fake_errors(fs);
        fake_clear(fs);
        size_t len = strlen(cases[i].in);
        if (strncmp(cases[i].in, "RE\0TR", 5) == 0)
            len = 9;
        fake_feed(fs, cases[i].in, len);
        if (strcmp(fake_output(fs), cases[i].out) != 0)
            fprintf(stderr, "\ncase %zu: got \"%s\"\n", i, fake_output(fs));
        CU_ASSERT_STRING_EQUAL(fake_output(fs), cases[i].out);
        CU_ASSERT_EQUAL(fake_errors(fs) - before, (unsigned)cases[i].error);
    }
    /* lower case and extra spaces are fine */
    char want[128];
    snprintf(want, sizeof want, "+OK 1 %zu\r\n", strlen(M1));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "list 1\r\n"), want);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "LiSt  1 \r\n"), want);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "uidl 1\r\n"), "+OK 1 K1\r\n");
    /* bare LF line ends */
    CU_ASSERT_STRING_EQUAL(cmd(fs, "uidl 1\nnoop\n"), "+OK 1 K1\r\n+OK\r\n");
    CU_ASSERT_EQUAL(fake_input_pending(fs), 0);
    finish(fs);
}

static void test_long_lines(void)
{
    mailbox();
    fake_session *fs = start(MP_TLS_OFF);
    char line[2000];
    memset(line, 'A', 600);
    memcpy(line + 600, "\r\n", 3);
    CU_ASSERT_STRING_EQUAL(cmd(fs, line), "-ERR Line too long\r\n");
    CU_ASSERT_EQUAL(fake_errors(fs), 1);
    /* the limit itself is fine: a 512-byte USER line */
    memcpy(line, "USER ", 5);
    memset(line + 5, 'u', 507);
    memcpy(line + 512, "\r\n", 3);
    CU_ASSERT_STRING_EQUAL(cmd(fs, line), "+OK\r\n");
    /* an over-long line arriving in pieces is dropped as it comes, then answered once at its end */
    fake_clear(fs);
    memset(line, 'B', 1000);
    for (int i = 0; i < 10; i++) {
        fake_feed(fs, line, 1000);
        CU_ASSERT_TRUE(fake_input_pending(fs) <= POP3_MAX_COMMAND_LINE + 1);
    }
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "");
    fake_feed_str(fs, "BBB\r\nCAPA\r\n");
    CU_ASSERT_EQUAL(strncmp(fake_output(fs), "-ERR Line too long\r\n+OK Capability list follows\r\n", 49), 0);
    CU_ASSERT_EQUAL(fake_input_pending(fs), 0);
    CU_ASSERT_EQUAL(fake_errors(fs), 2);
    finish(fs);
}

static void test_pipelined_session(void)
{
    mailbox();
    char want[1024];
    const char *script = "USER alice\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nDELE 1\r\nSTAT\r\nRETR 1\r\nUIDL 2\r\nQUIT\r\n";
    snprintf(want, sizeof want,
             "+OK\r\n+OK Logged in, 3 messages (%zu octets)\r\n+OK 3 %zu\r\n+OK %zu octets\r\n%s.\r\n"
             "+OK Marked to be deleted\r\n+OK 2 %zu\r\n-ERR Message 1 already deleted\r\n+OK 2 K2\r\n"
             "+OK Logging out\r\n",
             strlen(M1) + strlen(M2) + strlen(M3), strlen(M1) + strlen(M2) + strlen(M3), strlen(M1), M1,
             strlen(M2) + strlen(M3));

    /* in one burst */
    fake_session *fs = start(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, script), want);
    CU_ASSERT_TRUE(fake_closed(fs));
    CU_ASSERT_EQUAL(pop3fake_count(ALICE), 2);
    CU_ASSERT_FALSE(pop3fake_has(ALICE, 1));
    finish(fs);

    /* byte by byte */
    mailbox();
    fs = start(MP_TLS_OFF);
    fake_feed_bytewise(fs, script, strlen(script));
    CU_ASSERT_STRING_EQUAL(fake_output(fs), want);
    CU_ASSERT_EQUAL(pop3fake_count(ALICE), 2);
    finish(fs);

    /* commands after QUIT are never executed */
    mailbox();
    fs = start(MP_TLS_OFF);
    cmd(fs, "QUIT\r\nUSER alice\r\n");
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK Logging out\r\n");
    CU_ASSERT_TRUE(fake_discarded(fs) > 0);
    finish(fs);
}

/* ---------------------------------------------------------------- DELE / RSET / QUIT / UPDATE */

static void test_dele_rset_quit(void)
{
    mailbox();
    fake_session *fs = logged_in(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "DELE 2\r\n"), "+OK Marked to be deleted\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "DELE 2\r\n"), "-ERR Message 2 already deleted\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "RETR 2\r\n"), "-ERR Message 2 already deleted\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "TOP 2 0\r\n"), "-ERR Message 2 already deleted\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "LIST 2\r\n"), "-ERR Message 2 already deleted\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "UIDL\r\n"), "+OK Unique-ID listing follows\r\n1 K1\r\n3 K3\r\n.\r\n");
    char want[256];
    snprintf(want, sizeof want, "+OK 2 messages (%zu octets)\r\n1 %zu\r\n3 %zu\r\n.\r\n", strlen(M1) + strlen(M3),
             strlen(M1), strlen(M3));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "LIST\r\n"), want);
    snprintf(want, sizeof want, "+OK 3 messages (%zu octets)\r\n", strlen(M1) + strlen(M2) + strlen(M3));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "RSET\r\n"), want);
    snprintf(want, sizeof want, "+OK 3 %zu\r\n", strlen(M1) + strlen(M2) + strlen(M3));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STAT\r\n"), want);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "DELE 1\r\nDELE 3\r\n"), "+OK Marked to be deleted\r\n+OK Marked to be deleted\r\n");
    CU_ASSERT_EQUAL(pop3fake_count(ALICE), 3); /* nothing before UPDATE */
    CU_ASSERT_STRING_EQUAL(cmd(fs, "QUIT\r\n"), "+OK Logging out\r\n");
    CU_ASSERT_EQUAL(pop3fake_count(ALICE), 1);
    CU_ASSERT_TRUE(pop3fake_has(ALICE, 2));
    CU_ASSERT_EQUAL(pop3fake_stats_now.expunges, 1);
    CU_ASSERT_FALSE(pop3fake_locked(ALICE));
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "deleted=2"));
    finish(fs);
}

static void test_dropped_connection_deletes_nothing(void)
{
    mailbox();
    fake_session *fs = logged_in(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "DELE 1\r\nDELE 2\r\n"), "+OK Marked to be deleted\r\n+OK Marked to be deleted\r\n");
    fake_end_reason(fs, MP_CLOSE_PEER);
    CU_ASSERT_EQUAL(pop3fake_count(ALICE), 3);
    CU_ASSERT_EQUAL(pop3fake_stats_now.expunges, 0);
    CU_ASSERT_EQUAL(pop3fake_stats_now.flag_calls, 0);
    CU_ASSERT_FALSE(pop3fake_locked(ALICE));
    CU_ASSERT_EQUAL(pop3fake_stats_now.folder_opens, pop3fake_stats_now.folder_closes);

    /* idle timeout and shutdown: the goodbye, no UPDATE either */
    static const mp_goodbye whys[] = {MP_BYE_IDLE, MP_BYE_SHUTDOWN, MP_BYE_TOO_MANY_ERRORS};
    for (size_t i = 0; i < 3; i++) {
        fs = logged_in(MP_TLS_OFF);
        cmd(fs, "DELE 1\r\n");
        fake_clear(fs);
        fake_goodbye(fs, whys[i]);
        CU_ASSERT_EQUAL(strncmp(fake_output(fs), "-ERR ", 5), 0);
        finish(fs);
        CU_ASSERT_EQUAL(pop3fake_count(ALICE), 3);
        CU_ASSERT_FALSE(pop3fake_locked(ALICE));
    }
}

static void test_update_failure(void)
{
    mailbox();
    fake_session *fs = logged_in(MP_TLS_OFF);
    pop3fake_cfg.fail_expunge = 1;
    CU_ASSERT_STRING_EQUAL(cmd(fs, "DELE 1\r\nQUIT\r\n"),
                           "+OK Marked to be deleted\r\n-ERR [SYS/TEMP] Some deleted messages were not removed\r\n");
    CU_ASSERT_TRUE(fake_closed(fs));
    CU_ASSERT_FALSE(pop3fake_locked(ALICE));
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp40302]"));
    finish(fs);
}

static void test_concurrent_changes(void)
{
    mailbox();
    fake_session *fs = logged_in(MP_TLS_OFF);
    /* a delivery during the session is not seen by it */
    uint32_t late = pop3fake_add(ALICE, NULL, "Subject: late\r\n\r\nx\r\n", 20);
    char want[128];
    snprintf(want, sizeof want, "+OK 3 %zu\r\n", strlen(M1) + strlen(M2) + strlen(M3));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STAT\r\n"), want);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "RETR 4\r\n"), "-ERR No such message\r\n");
    /* message 1 expunged by an IMAP client meanwhile */
    pop3fake_remove(ALICE, 1);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "RETR 1\r\n"), "-ERR Message 1 is no longer available\r\n");
    /* deleting it too is no error at UPDATE */
    CU_ASSERT_STRING_EQUAL(cmd(fs, "DELE 1\r\nDELE 2\r\nQUIT\r\n"),
                           "+OK Marked to be deleted\r\n+OK Marked to be deleted\r\n+OK Logging out\r\n");
    CU_ASSERT_FALSE(pop3fake_has(ALICE, 2));
    CU_ASSERT_TRUE(pop3fake_has(ALICE, 3));
    CU_ASSERT_TRUE(pop3fake_has(ALICE, late));
    finish(fs);

    /* the next session sees the new message */
    fs = start(MP_TLS_OFF);
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "USER alice\r\nPASS secret\r\n"), "+OK\r\n+OK Logged in, 2 messages", 30), 0);
    finish(fs);

    /* a session whose QUIT deletes a message just between this login's open and its lock: the listing is
       taken under the lock, so the deleted message is not in it */
    pop3fake_cfg.expunge_before_lock = 3;
    unsigned syncs = pop3fake_stats_now.folder_syncs;
    fs = start(MP_TLS_OFF);
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "USER alice\r\nPASS secret\r\n"), "+OK\r\n+OK Logged in, 1 messages", 30), 0);
    CU_ASSERT_EQUAL(pop3fake_stats_now.folder_syncs, syncs + 1);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "UIDL 2\r\n"), "-ERR No such message\r\n");
    finish(fs);
}

static void test_lock_wait_values(void)
{
    static const struct {
        const char *text;
        apr_interval_time_t want; /* -1: refused */
    } cases[] = {
        {"0", 0}, {"500ms", 500000}, {"10s", apr_time_from_sec(10)}, {"10", apr_time_from_sec(10)},
        {"1m", apr_time_from_sec(60)}, {"10m", apr_time_from_sec(600)}, {"600000ms", apr_time_from_sec(600)},
        {"11m", -1}, {"601", -1}, {"1h", -1}, {"", -1}, {"s", -1}, {"-1", -1}, {"5 s", -1}, {"5sec", -1},
        {"99999999999999999999", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        apr_interval_time_t got = -1;
        int r = pop3_parse_wait(cases[i].text, &got);
        CU_ASSERT_EQUAL(r, cases[i].want < 0 ? -1 : 0);
        if (cases[i].want >= 0)
            CU_ASSERT_EQUAL(got, cases[i].want);
    }
    CU_ASSERT_EQUAL(pop3_parse_wait(NULL, &(apr_interval_time_t){0}), -1);
    /* the directive is declared, with its check */
    const mp_directive *d = mp_module_descriptor.directives;
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_STRING_EQUAL(d[0].name, "POP3LockWait");
    CU_ASSERT_PTR_NULL(d[0].check("10s", NULL));
    CU_ASSERT_PTR_NOT_NULL(d[0].check("ten", NULL));
}

/* A session whose maildrop another holds, with the given POP3LockWait (NULL: the default). */
static fake_session *start_waiting(const char *lock_wait)
{
    fake_session *fs = fake_new_module(&mp_module_descriptor, MP_TLS_OFF);
    pop3fake_setup(fs);
    if (lock_wait)
        fake_set_config(fs, "POP3LockWait", lock_wait);
    CU_ASSERT_EQUAL(fake_connect(fs), 0);
    fake_clear(fs);
    return fs;
}

static void test_in_use(void)
{
    /* POP3LockWait 0: [IN-USE] at once */
    mailbox();
    fake_session *a = logged_in(MP_TLS_OFF);
    fake_session *b = start_waiting("0");
    CU_ASSERT_STRING_EQUAL(cmd(b, "USER alice\r\nPASS secret\r\n"),
                           "+OK\r\n-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n");
    CU_ASSERT_EQUAL(fake_timers_active(b), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(b), "[mp40104]"));
    /* still in AUTHORIZATION */
    CU_ASSERT_STRING_EQUAL(cmd(b, "STAT\r\n"), "-ERR Not logged in\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(a, "QUIT\r\n"), "+OK Logging out\r\n");
    CU_ASSERT_EQUAL(strncmp(cmd(b, "USER alice\r\nPASS secret\r\n"), "+OK\r\n+OK Logged in", 18), 0);
    CU_ASSERT_TRUE(pop3fake_locked(ALICE));
    finish(a);
    finish(b);
    CU_ASSERT_FALSE(pop3fake_locked(ALICE));
    CU_ASSERT_EQUAL(pop3fake_stats_now.folder_opens, pop3fake_stats_now.folder_closes);

    /* the default, 10 s: tries after 10, 20, 40, 80, 160 ms, then every 200 ms, and [IN-USE] once they add
       up to 10 s; pipelined input waits meanwhile, and the password is checked only once */
    mailbox();
    a = logged_in(MP_TLS_OFF);
    b = start_waiting(NULL);
    CU_ASSERT_STRING_EQUAL(cmd(b, "USER alice\r\nPASS secret\r\nNOOP\r\n"), "+OK\r\n");
    fake_clear(b);
    apr_interval_time_t waited = 0;
    unsigned tries = 0;
    while (fake_timers_active(b) && tries < 100) {
        apr_interval_time_t d = fake_last_timer_after(b);
        CU_ASSERT(d == apr_time_from_msec(10) << (tries < 5 ? tries : 5) || d == apr_time_from_msec(200) ||
                  waited + d == apr_time_from_sec(10));
        CU_ASSERT_STRING_EQUAL(fake_output(b), "");
        waited += d;
        tries++;
        fake_fire_timers(b);
    }
    CU_ASSERT_EQUAL(waited, apr_time_from_sec(10));
    CU_ASSERT_EQUAL(tries, 54);
    CU_ASSERT_EQUAL(pop3fake_stats_now.verify_calls, 2); /* a's login and b's, once */
    CU_ASSERT_STRING_EQUAL(fake_output(b), "-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n"
                                           "-ERR Not logged in\r\n");
    CU_ASSERT_EQUAL(pop3fake_stats_now.folder_opens, pop3fake_stats_now.folder_closes + 1); /* a's only */

    /* the holder leaves during the wait: the next try logs in */
    fake_clear(b);
    CU_ASSERT_STRING_EQUAL(cmd(b, "USER alice\r\nPASS secret\r\n"), "+OK\r\n");
    fake_clear(b);
    fake_fire_timers(b);
    fake_fire_timers(b);
    CU_ASSERT_STRING_EQUAL(fake_output(b), "");
    CU_ASSERT_STRING_EQUAL(cmd(a, "QUIT\r\n"), "+OK Logging out\r\n");
    fake_clear(b);
    fake_fire_timers(b);
    CU_ASSERT_EQUAL(strncmp(fake_output(b), "+OK Logged in, 3 messages", 25), 0);
    CU_ASSERT_EQUAL(fake_timers_active(b), 0);
    finish(a);

    /* a client that leaves while waiting: nothing stays open or locked */
    fake_session *c = start_waiting(NULL);
    CU_ASSERT_STRING_EQUAL(cmd(c, "USER alice\r\nPASS secret\r\n"), "+OK\r\n");
    CU_ASSERT_EQUAL(fake_timers_active(c), 1);
    finish(c);
    finish(b);
    CU_ASSERT_FALSE(pop3fake_locked(ALICE));
    CU_ASSERT_EQUAL(pop3fake_stats_now.folder_opens, pop3fake_stats_now.folder_closes);
}

static void test_store_failures(void)
{
    mailbox();
    pop3fake_cfg.fail_folder_open = 1;
    fake_session *fs = start(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER alice\r\nPASS secret\r\n"),
                           "+OK\r\n-ERR [SYS/TEMP] Cannot open the mailbox, try again later\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STAT\r\n"), "-ERR Not logged in\r\n");
    finish(fs);
    CU_ASSERT_EQUAL(pop3fake_stats_now.user_opens, pop3fake_stats_now.user_closes);

    /* no store instance: greeting, then a temporary failure at login */
    mailbox();
    pop3fake_cfg.fail_store_instance = 1;
    fs = start(MP_TLS_OFF);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp10119]")); /* the host's line: the instance failed */
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER alice\r\nPASS secret\r\n"),
                           "+OK\r\n-ERR [SYS/TEMP] Authentication temporarily unavailable, try again later\r\n");
    finish(fs);

    /* not configured at all */
    mailbox();
    fs = fake_new_module(&mp_module_descriptor, MP_TLS_OFF);
    CU_ASSERT_EQUAL(fake_connect(fs), 0);
    CU_ASSERT_EQUAL(strncmp(fake_output(fs), "+OK ", 4), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "MailStore is not configured"));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
                           "-ERR [SYS/TEMP] Authentication temporarily unavailable, try again later\r\n");
    finish(fs);
}

/* ---------------------------------------------------------------- TLS */

static void test_stls_and_injection(void)
{
    mailbox();
    fake_session *fs = start(MP_TLS_STARTTLS);
    /* before TLS: plaintext passwords refused */
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER alice\r\n"),
                           "-ERR [AUTH] Plaintext authentication disallowed without TLS: use STLS first\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "PASS secret\r\n"),
                           "-ERR [AUTH] Plaintext authentication disallowed without TLS: use STLS first\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
                           "-ERR [AUTH] Plaintext authentication disallowed without TLS: use STLS first\r\n");
    CU_ASSERT_EQUAL(pop3fake_stats_now.verify_calls, 0);
    /* STLS with a command pipelined behind it: the command is never executed */
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STLS\r\nUSER alice\r\nPASS secret\r\n"), "+OK Begin TLS negotiation\r\n");
    CU_ASSERT_TRUE(fake_tls_pending(fs));
    CU_ASSERT_EQUAL(fake_discarded(fs), strlen("USER alice\r\nPASS secret\r\n"));
    fake_feed_str(fs, "PASS secret\r\n"); /* plaintext before the handshake: dropped by the host */
    CU_ASSERT_EQUAL(fake_tls_complete(fs), 0);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "+OK Begin TLS negotiation\r\n");
    CU_ASSERT_EQUAL(pop3fake_stats_now.verify_calls, 0);
    /* after TLS: USER offered and accepted, STLS no more */
    const char *capa = cmd(fs, "CAPA\r\n");
    CU_ASSERT_TRUE(contains(capa, "\r\nUSER\r\n"));
    CU_ASSERT_TRUE(contains(capa, "SASL PLAIN LOGIN SCRAM-SHA-256\r\n"));
    CU_ASSERT_FALSE(contains(capa, "STLS"));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STLS\r\n"), "-ERR TLS already active\r\n");
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "USER alice\r\nPASS secret\r\n"), "+OK\r\n+OK Logged in", 18), 0);
    finish(fs);
}

static void test_stls_forgets_user(void)
{
    mailbox();
    /* the fake host offers TLS on any listener: USER is allowed here before STLS */
    fake_session *fs = start(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER alice\r\n"), "+OK\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STLS\r\n"), "+OK Begin TLS negotiation\r\n");
    fake_tls_complete(fs);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "PASS secret\r\n"), "-ERR No user name given: USER first\r\n");
    finish(fs);

    fs = start(MP_TLS_STARTTLS);
    fake_set_tls_available(fs, 0);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STLS\r\n"), "-ERR TLS not available\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STLS extra\r\n"), "-ERR Too many arguments\r\n");
    finish(fs);
}

static void test_tls_required(void)
{
    mailbox();
    fake_session *fs = start(MP_TLS_REQUIRED);
    const char *refusal = "-ERR [AUTH] TLS required: use STLS first\r\n";
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER alice\r\n"), refusal);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "PASS secret\r\n"), refusal);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), refusal);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH SCRAM-SHA-256\r\n"), refusal);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "APOP alice 0123456789abcdef0123456789abcdef\r\n"), refusal);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH\r\n"), "+OK\r\n.\r\n");
    CU_ASSERT_EQUAL(pop3fake_stats_now.verify_calls, 0);
    CU_ASSERT_FALSE(contains(cmd(fs, "CAPA\r\n"), "USER"));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STLS\r\n"), "+OK Begin TLS negotiation\r\n");
    fake_tls_complete(fs);
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), "+OK Logged in", 13), 0);
    finish(fs);
}

/* ---------------------------------------------------------------- APOP */

static void md5_hex(const char *a, const char *b, char out[33])
{
    unsigned char md[16];
    unsigned len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
    EVP_DigestUpdate(ctx, a, strlen(a));
    EVP_DigestUpdate(ctx, b, strlen(b));
    EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void test_apop(void)
{
    mailbox();
    fake_session *fs = connect_only(MP_TLS_STARTTLS);
    const char *g = fake_output(fs);
    const char *lt = strchr(g, '<'), *gt = strchr(g, '>');
    CU_ASSERT_PTR_NOT_NULL_FATAL(lt);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gt);
    char banner[256];
    snprintf(banner, sizeof banner, "%.*s", (int)(gt - lt + 1), lt);
    char digest[33], c[128];
    md5_hex(banner, "wrong", digest);
    snprintf(c, sizeof c, "APOP alice %s\r\n", digest);
    CU_ASSERT_STRING_EQUAL(cmd(fs, c), "-ERR [AUTH] Authentication failed\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "APOP alice xyz\r\n"), "-ERR Invalid APOP digest\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "APOP alice\r\n"), "-ERR Syntax: APOP name digest\r\n");
    /* allowed before STLS on a starttls listener: the password does not cross the wire */
    md5_hex(banner, "secret", digest);
    for (int i = 0; i < 32; i++) /* upper-case hex is accepted */
        if (digest[i] >= 'a')
            digest[i] = (char)(digest[i] - 'a' + 'A');
    snprintf(c, sizeof c, "APOP alice %s\r\n", digest);
    CU_ASSERT_EQUAL(strncmp(cmd(fs, c), "+OK Logged in, 3 messages", 25), 0);
    CU_ASSERT_STRING_EQUAL(pop3fake_stats_now.last_user_open, ALICE);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "method=APOP"));
    finish(fs);

    /* two greetings never share a banner */
    fake_session *a = connect_only(MP_TLS_OFF), *b = connect_only(MP_TLS_OFF);
    CU_ASSERT_STRING_NOT_EQUAL(fake_output(a), fake_output(b));
    finish(a);
    finish(b);
}

/* ---------------------------------------------------------------- AUTH */

static void test_auth_plain_login(void)
{
    mailbox();
    /* initial response: "\0alice\0secret" */
    fake_session *fs = start(MP_TLS_IMPLICIT);
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), "+OK Logged in, 3 messages", 25), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "method=PLAIN"));
    finish(fs);

    /* without initial response; lower-case mechanism name */
    fs = start(MP_TLS_IMPLICIT);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH plain\r\n"), "+ \r\n");
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "AGFsaWNlAHNlY3JldA==\r\n"), "+OK Logged in", 13), 0);
    finish(fs);

    /* LOGIN: "Username:" "Password:" */
    fs = start(MP_TLS_IMPLICIT);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH LOGIN\r\n"), "+ VXNlcm5hbWU6\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "YWxpY2U=\r\n"), "+ UGFzc3dvcmQ6\r\n");
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "c2VjcmV0\r\n"), "+OK Logged in", 13), 0);
    finish(fs);

    /* wrong password: delayed [AUTH] */
    pop3fake_cfg.fail_delay = APR_USEC_PER_SEC;
    fs = start(MP_TLS_IMPLICIT);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH PLAIN AGFsaWNlAHdyb25n\r\n"), ""); /* \0alice\0wrong */
    CU_ASSERT_EQUAL(fake_fire_timers(fs), 1);
    CU_ASSERT_STRING_EQUAL(fake_output(fs), "-ERR [AUTH] Authentication failed\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "method=PLAIN user=alice"));
    finish(fs);
}

static void test_auth_errors(void)
{
    mailbox();
    fake_session *fs = start(MP_TLS_IMPLICIT);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH PLAIN !!!notbase64\r\n"), "-ERR Invalid base64 data\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH PLAIN QQ==garbage\r\n"), "-ERR Invalid base64 data\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH PLAIN\r\n"), "+ \r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "%%%\r\n"), "-ERR Invalid base64 data\r\n");
    /* "*" cancels */
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH LOGIN\r\n"), "+ VXNlcm5hbWU6\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "*\r\n"), "-ERR Authentication cancelled\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH CRAM-MD5\r\n"), "-ERR Unsupported authentication mechanism\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n"),
                           "-ERR Unsupported authentication mechanism\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH PLAIN a b\r\n"), "-ERR Too many arguments\r\n");
    /* malformed PLAIN message: no NULs */
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "AUTH PLAIN YWxpY2U=\r\n"), "-ERR Invalid SASL response", 26), 0);
    /* an over-long SASL line ends the exchange */
    CU_ASSERT_STRING_EQUAL(cmd(fs, "AUTH PLAIN\r\n"), "+ \r\n");
    char big[POP3_MAX_SASL_LINE + 10];
    memset(big, 'A', sizeof big - 3);
    memcpy(big + sizeof big - 3, "\r\n", 3);
    CU_ASSERT_STRING_EQUAL(cmd(fs, big), "-ERR Line too long\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "NOOP\r\n"), "-ERR Not logged in\r\n"); /* a command again, not a response */
    CU_ASSERT_EQUAL(pop3fake_stats_now.verify_calls, 0);
    /* the exchange survives being fed byte by byte */
    fake_clear(fs);
    const char *s = "AUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n";
    fake_feed_bytewise(fs, s, strlen(s));
    CU_ASSERT_EQUAL(strncmp(fake_output(fs), "+ \r\n+OK Logged in", 17), 0);
    finish(fs);
}

static void hmac256(const unsigned char *key, size_t klen, const void *data, size_t dlen, unsigned char out[32])
{
    unsigned len = 32;
    HMAC(EVP_sha256(), key, (int)klen, data, dlen, out, &len);
}

/* A SCRAM-SHA-256 client (RFC 5802 section 3) against the handler. */
static void scram_login(fake_session *fs, const char *user, const char *password, int expect_ok)
{
    char bare[256], first[300], line[2048];
    snprintf(bare, sizeof bare, "n=%s,r=cLiEnTnOnCe0123456789", user);
    snprintf(first, sizeof first, "n,,%s", bare);
    char b64[1024];
    mpc_b64_encode_to(first, strlen(first), b64);
    snprintf(line, sizeof line, "AUTH SCRAM-SHA-256 %s\r\n", b64);
    const char *out = cmd(fs, line);
    CU_ASSERT_EQUAL_FATAL(strncmp(out, "+ ", 2), 0);
    unsigned char sfirst[1024];
    size_t sl = 0;
    CU_ASSERT_EQUAL_FATAL(mpc_b64_decode(out + 2, strlen(out) - 4, sfirst, &sl), 0);
    sfirst[sl] = '\0';
    /* r=NONCE,s=SALT,i=N */
    char nonce[256], salt64[256];
    unsigned iter = 0;
    CU_ASSERT_EQUAL_FATAL(sscanf((char *)sfirst, "r=%255[^,],s=%255[^,],i=%u", nonce, salt64, &iter), 3);
    CU_ASSERT_EQUAL(strncmp(nonce, "cLiEnTnOnCe0123456789", 21), 0);
    unsigned char salt[256], salted[32], ckey[32], skey[32], stored[32], csig[32], proof[32], ssig[32];
    size_t saltl = 0;
    CU_ASSERT_EQUAL_FATAL(mpc_b64_decode(salt64, strlen(salt64), salt, &saltl), 0);
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)saltl, (int)iter, EVP_sha256(), 32, salted);
    hmac256(salted, 32, "Client Key", 10, ckey);
    hmac256(salted, 32, "Server Key", 10, skey);
    SHA256(ckey, 32, stored);
    char final_wo[400], auth_msg[2048];
    snprintf(final_wo, sizeof final_wo, "c=biws,r=%s", nonce);
    snprintf(auth_msg, sizeof auth_msg, "%s,%s,%s", bare, (char *)sfirst, final_wo);
    hmac256(stored, 32, auth_msg, strlen(auth_msg), csig);
    for (int i = 0; i < 32; i++)
        proof[i] = ckey[i] ^ csig[i];
    char proof64[64], final[600];
    char b64f[1024];
    mpc_b64_encode_to(proof, 32, proof64);
    snprintf(final, sizeof final, "%s,p=%s", final_wo, proof64);
    mpc_b64_encode_to(final, strlen(final), b64f);
    snprintf(line, sizeof line, "%s\r\n", b64f);
    out = cmd(fs, line);
    if (!expect_ok) {
        CU_ASSERT_STRING_EQUAL(out, "-ERR [AUTH] Authentication failed\r\n");
        return;
    }
    /* the server's signature comes as one more challenge (RFC 4422 section 5), answered with "" */
    hmac256(skey, 32, auth_msg, strlen(auth_msg), ssig);
    char v[128], v64[200], want[256];
    char ssig64[64];
    mpc_b64_encode_to(ssig, 32, ssig64);
    snprintf(v, sizeof v, "v=%s", ssig64);
    mpc_b64_encode_to(v, strlen(v), v64);
    snprintf(want, sizeof want, "+ %s\r\n", v64);
    CU_ASSERT_STRING_EQUAL(out, want);
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "\r\n"), "+OK Logged in, 3 messages", 25), 0);
}

static void test_auth_scram(void)
{
    mailbox();
    /* allowed before STLS on a starttls listener */
    fake_session *fs = start(MP_TLS_STARTTLS);
    scram_login(fs, "alice", "secret", 1);
    CU_ASSERT_STRING_EQUAL(pop3fake_stats_now.last_user_open, ALICE);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "method=SCRAM-SHA-256"));
    finish(fs);

    fs = start(MP_TLS_OFF);
    scram_login(fs, "alice", "not-it", 0);
    scram_login(fs, "nobody", "secret", 0);
    /* allow_nets refuses this client (192.0.2.1, net@ only from 10/8): the right password fails exactly
       as a wrong one, with no ServerSignature that would tell them apart */
    scram_login(fs, "net@example.test", "secret", 0);
    scram_login(fs, "net@example.test", "wrong", 0);
    finish(fs);
}

/* ---------------------------------------------------------------- goodbye */

static void test_goodbye_texts(void)
{
    mailbox();
    static const struct {
        mp_goodbye why;
        const char *text;
    } cases[] = {
        {MP_BYE_SHUTDOWN, "-ERR [SYS/TEMP] Server shutting down\r\n"},
        {MP_BYE_IDLE, "-ERR Disconnected for inactivity\r\n"},
        {MP_BYE_LINE_TOO_LONG, "-ERR Line too long\r\n"},
        {MP_BYE_TOO_MANY_ERRORS, "-ERR Too many errors\r\n"},
        {MP_BYE_TOO_MANY_CONNECTIONS, "-ERR [SYS/TEMP] Too many connections\r\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake_session *fs = start(MP_TLS_OFF);
        fake_goodbye(fs, cases[i].why);
        CU_ASSERT_STRING_EQUAL(fake_output(fs), cases[i].text);
        CU_ASSERT_TRUE(fake_closed(fs));
        finish(fs);
    }
    /* MaxErrors through the fake host (the lines of one read are answered, then the goodbye) */
    fake_session *fs = start(MP_TLS_OFF);
    fake_set_max_errors(fs, 3);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "A\r\nB\r\n"), "-ERR Unknown command\r\n-ERR Unknown command\r\n");
    CU_ASSERT_STRING_EQUAL(cmd(fs, "C\r\nD\r\n"),
                           "-ERR Unknown command\r\n-ERR Unknown command\r\n-ERR Too many errors\r\n");
    CU_ASSERT_TRUE(fake_closed(fs));
    finish(fs);
}

/* ---------------------------------------------------------------- RFC 6856: UTF8 and LANG */

static void test_utf8_command(void)
{
    mailbox();
    /* AUTHORIZATION: UTF-8 mode on; a second UTF8 is harmless; UTF8 takes no parameters */
    fake_session *fs = start(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "UTF8\r\n"), "+OK UTF8 enabled\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp40401]"));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "utf8\r\n"), "+OK UTF8 already enabled\r\n");
    CU_ASSERT_EQUAL(fake_errors(fs), 0);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "UTF8 USER\r\n"), "-ERR Too many arguments\r\n");
    CU_ASSERT_EQUAL(fake_errors(fs), 1);
    /* the login and an ASCII message are as ever */
    CU_ASSERT_TRUE(starts(cmd(fs, "USER alice\r\nPASS secret\r\n"), "+OK\r\n+OK Logged in, 3 messages"));
    char want[256];
    snprintf(want, sizeof want, "+OK %zu octets\r\n%s.\r\n", strlen(M1), M1);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "RETR 1\r\n"), want);
    /* TRANSACTION: UTF8 is an AUTHORIZATION command (RFC 6856 section 2) */
    CU_ASSERT_STRING_EQUAL(cmd(fs, "UTF8\r\n"), "-ERR UTF8 is only valid before login\r\n");
    finish(fs);

    fs = logged_in(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "UTF8\r\n"), "-ERR UTF8 is only valid before login\r\n");
    CU_ASSERT_EQUAL(fake_errors(fs), 0);
    snprintf(want, sizeof want, "+OK %zu octets\r\n%s.\r\n", strlen(M1), M1);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "RETR 1\r\n"), want); /* still not in UTF-8 mode, still working */
    finish(fs);

    /* pipelined with the login */
    fs = start(MP_TLS_OFF);
    CU_ASSERT_TRUE(starts(cmd(fs, "UTF8\r\nUSER alice\r\nPASS secret\r\n"), "+OK UTF8 enabled\r\n+OK\r\n+OK Logged in"));
    finish(fs);
}

static void test_utf8_then_stls(void)
{
    mailbox();
    /* RFC 6856 section 2.1: no STLS after UTF8; CAPA stops offering it */
    fake_session *fs = start(MP_TLS_STARTTLS);
    CU_ASSERT_TRUE(contains(cmd(fs, "CAPA\r\n"), "\r\nSTLS\r\n"));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "UTF8\r\n"), "+OK UTF8 enabled\r\n");
    CU_ASSERT_FALSE(contains(cmd(fs, "CAPA\r\n"), "STLS"));
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STLS\r\n"), "-ERR STLS is not allowed after UTF8\r\n");
    CU_ASSERT_EQUAL(fake_tls_requested(fs), 0);
    CU_ASSERT_EQUAL(fake_errors(fs), 1);
    finish(fs);

    /* the other order is the right one: STLS, then UTF8 */
    fs = start(MP_TLS_STARTTLS);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "STLS\r\n"), "+OK Begin TLS negotiation\r\n");
    fake_tls_complete(fs);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "UTF8\r\n"), "+OK UTF8 enabled\r\n");
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "USER alice\r\nPASS secret\r\n"), "+OK\r\n+OK Logged in", 18), 0);
    finish(fs);
}

static void test_lang(void)
{
    mailbox();
    const char *listing = "+OK Language listing follows\r\nen English\r\n.\r\n";
    const char *english = "+OK en Responses will be in English\r\n";
    static const struct {
        const char *in, *out;
        int error;
    } cases[] = {
        /* RFC 4647 section 3.4 lookup: every English range, and "*", selects "en" */
        {"LANG en\r\n", "+OK en Responses will be in English\r\n", 0},
        {"LANG EN\r\n", "+OK en Responses will be in English\r\n", 0},
        {"lang en-US\r\n", "+OK en Responses will be in English\r\n", 0},
        {"LANG en-GB-oxendict\r\n", "+OK en Responses will be in English\r\n", 0},
        {"LANG en-x-pirate\r\n", "+OK en Responses will be in English\r\n", 0},
        {"LANG *\r\n", "+OK en Responses will be in English\r\n", 0},
        /* unsupported: -ERR, the language stays (RFC 6856 section 3.2) */
        {"LANG xx\r\n", "-ERR Language xx is not supported\r\n", 0},
        {"LANG MUL\r\n", "-ERR Language MUL is not supported\r\n", 0},
        {"LANG de-DE\r\n", "-ERR Language de-DE is not supported\r\n", 0},
        {"LANG x-en\r\n", "-ERR Language x-en is not supported\r\n", 0},
        {"LANG i-default\r\n", "-ERR Language i-default is not supported\r\n", 0},
        {"LANG eng\r\n", "-ERR Language eng is not supported\r\n", 0},
        /* not a basic language range (RFC 4647 section 2.1) */
        {"LANG en_US\r\n", "-ERR Invalid language range\r\n", 1},
        {"LANG -en\r\n", "-ERR Invalid language range\r\n", 1},
        {"LANG en-\r\n", "-ERR Invalid language range\r\n", 1},
        {"LANG en--us\r\n", "-ERR Invalid language range\r\n", 1},
        {"LANG 1en\r\n", "-ERR Invalid language range\r\n", 1},
        {"LANG englishes\r\n", "-ERR Invalid language range\r\n", 1},
        {"LANG en-abcdefghi\r\n", "-ERR Invalid language range\r\n", 1},
        {"LANG en-*\r\n", "-ERR Invalid language range\r\n", 1},
        {"LANG **\r\n", "-ERR Invalid language range\r\n", 1},
        {"LANG \xc3\xa9n\r\n", "-ERR Invalid language range\r\n", 1},
        {"LANG en fr\r\n", "-ERR Too many arguments\r\n", 1},
    };
    for (int logged = 0; logged <= 1; logged++) {
        /* both states (RFC 6856 section 3.1) */
        fake_session *fs = logged ? logged_in(MP_TLS_OFF) : start(MP_TLS_OFF);
        CU_ASSERT_STRING_EQUAL(cmd(fs, "LANG\r\n"), listing);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            unsigned before = fake_errors(fs);
            if (strcmp(cmd(fs, cases[i].in), cases[i].out) != 0)
                fprintf(stderr, "\nLANG case %zu: got \"%s\"\n", i, fake_output(fs));
            CU_ASSERT_STRING_EQUAL(fake_output(fs), cases[i].out);
            CU_ASSERT_EQUAL(fake_errors(fs) - before, (unsigned)cases[i].error);
        }
        /* after a refused LANG, English goes on */
        CU_ASSERT_STRING_EQUAL(cmd(fs, "LANG xx\r\nLANG\r\nLANG en\r\n"),
                               "-ERR Language xx is not supported\r\n+OK Language listing follows\r\nen English\r\n.\r\n"
                               "+OK en Responses will be in English\r\n");
        CU_ASSERT_STRING_EQUAL(cmd(fs, "LANG *\r\n"), english);
        if (logged)
            CU_ASSERT_EQUAL(strncmp(cmd(fs, "STAT\r\n"), "+OK 3 ", 6), 0);
        finish(fs);
    }
}

static void test_utf8_credentials(void)
{
    mailbox();
    char line[256];
    /* RFC 6856 section 2.2: a UTF-8 user name and password after UTF8 */
    fake_session *fs = start(MP_TLS_OFF);
    snprintf(line, sizeof line, "UTF8\r\nUSER %s\r\nPASS %s\r\n", POP3FAKE_UTF8_USER, POP3FAKE_UTF8_PASSWORD);
    CU_ASSERT_STRING_EQUAL(cmd(fs, line), "+OK UTF8 enabled\r\n+OK\r\n+OK Logged in, 0 messages (0 octets)\r\n");
    CU_ASSERT_STRING_EQUAL(pop3fake_stats_now.last_user_open, POP3FAKE_UTF8_USER);
    CU_ASSERT_STRING_EQUAL(pop3fake_stats_now.last_verify_password, POP3FAKE_UTF8_PASSWORD);
    finish(fs);

    /* ... and before UTF8, which section 2.2 allows once "UTF8 USER" is announced */
    fs = start(MP_TLS_OFF);
    snprintf(line, sizeof line, "USER %s\r\nPASS %s\r\n", POP3FAKE_UTF8_USER, POP3FAKE_UTF8_PASSWORD);
    CU_ASSERT_STRING_EQUAL(cmd(fs, line), "+OK\r\n+OK Logged in, 0 messages (0 octets)\r\n");
    finish(fs);

    /* in UTF-8 mode, names and passwords that are not UTF-8 are refused before the database sees them */
    static const char *const bad[] = {
        "\xff", "p\xe4ss",          /* Latin-1 */
        "\xc3",                     /* truncated */
        "a\xc3(b",                  /* a continuation byte missing */
        "\x80x",                    /* a stray continuation byte */
        "\xc0\xaf", "\xe0\x80\xaf", /* overlong "/" */
        "\xed\xa0\x80",             /* a UTF-16 surrogate */
        "\xf4\x90\x80\x80",         /* above U+10FFFF */
    };
    unsigned verified = pop3fake_stats_now.verify_calls;
    fs = start(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "UTF8\r\n"), "+OK UTF8 enabled\r\n");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned errors = fake_errors(fs);
        snprintf(line, sizeof line, "USER %s\r\n", bad[i]);
        CU_ASSERT_STRING_EQUAL(cmd(fs, line), "-ERR Invalid UTF-8 in user name\r\n");
        snprintf(line, sizeof line, "USER alice\r\nPASS %s\r\n", bad[i]);
        CU_ASSERT_STRING_EQUAL(cmd(fs, line), "+OK\r\n-ERR Invalid UTF-8 in password\r\n");
        snprintf(line, sizeof line, "APOP %s 0123456789abcdef0123456789abcdef\r\n", bad[i]);
        CU_ASSERT_STRING_EQUAL(cmd(fs, line), "-ERR Invalid UTF-8 in user name\r\n");
        CU_ASSERT_EQUAL(fake_errors(fs) - errors, 3);
    }
    CU_ASSERT_EQUAL(pop3fake_stats_now.verify_calls, verified);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "PASS secret\r\n"), "-ERR No user name given: USER first\r\n");
    /* the rejected PASS forgot the USER; a good login still works */
    CU_ASSERT_EQUAL(strncmp(cmd(fs, "USER alice\r\nPASS secret\r\n"), "+OK\r\n+OK Logged in", 18), 0);
    finish(fs);

    /* not in UTF-8 mode, the bytes go to the database as they are (a legacy client's Latin-1 password) */
    fs = start(MP_TLS_OFF);
    CU_ASSERT_STRING_EQUAL(cmd(fs, "USER alice\r\nPASS p\xe4ss\r\n"), "+OK\r\n-ERR [AUTH] Authentication failed\r\n");
    CU_ASSERT_STRING_EQUAL(pop3fake_stats_now.last_verify_password, "p\xe4ss");
    finish(fs);
}

static void test_utf8_apop_and_sasl(void)
{
    mailbox();
    /* APOP with a UTF-8 name in UTF-8 mode; the digest is over the stored password's UTF-8 bytes */
    fake_session *fs = connect_only(MP_TLS_OFF);
    const char *g = fake_output(fs);
    const char *lt = strchr(g, '<'), *gt = strchr(g, '>');
    CU_ASSERT_PTR_NOT_NULL_FATAL(lt);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gt);
    char banner[256], digest[33], line[400];
    snprintf(banner, sizeof banner, "%.*s", (int)(gt - lt + 1), lt);
    md5_hex(banner, POP3FAKE_UTF8_PASSWORD, digest);
    snprintf(line, sizeof line, "UTF8\r\nAPOP %s %s\r\n", POP3FAKE_UTF8_USER, digest);
    CU_ASSERT_STRING_EQUAL(cmd(fs, line), "+OK UTF8 enabled\r\n+OK Logged in, 0 messages (0 octets)\r\n");
    CU_ASSERT_STRING_EQUAL(pop3fake_stats_now.last_user_open, POP3FAKE_UTF8_USER);
    finish(fs);

    /* SASL PLAIN carries UTF-8 by itself (RFC 6856 section 2.2 leaves AUTH to RFC 5034): no UTF8 needed */
    char plain[128], b64[256];
    int n = snprintf(plain, sizeof plain, "%c%s%c%s", 0, POP3FAKE_UTF8_USER, 0, POP3FAKE_UTF8_PASSWORD);
    CU_ASSERT_EQUAL(EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)plain, n) > 0, 1);
    fs = start(MP_TLS_IMPLICIT);
    snprintf(line, sizeof line, "AUTH PLAIN %s\r\n", b64);
    CU_ASSERT_STRING_EQUAL(cmd(fs, line), "+OK Logged in, 0 messages (0 octets)\r\n");
    finish(fs);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite su = CU_add_suite("pop3", NULL, NULL);
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"descriptor", test_descriptor},
        {"greeting and APOP banner", test_greeting_apop_banner},
        {"CAPA per listener and state", test_capa_by_listener},
        {"AUTH lists mechanisms", test_auth_lists_mechanisms},
        {"USER/PASS and TRANSACTION", test_user_pass_and_transaction},
        {"wrong password is delayed", test_wrong_password_is_delayed},
        {"PASS rules", test_pass_rules},
        {"commands in the wrong state", test_wrong_state_commands},
        {"bad arguments", test_bad_arguments},
        {"long lines", test_long_lines},
        {"pipelined session", test_pipelined_session},
        {"DELE RSET QUIT", test_dele_rset_quit},
        {"dropped connection deletes nothing", test_dropped_connection_deletes_nothing},
        {"update failure", test_update_failure},
        {"concurrent changes", test_concurrent_changes},
        {"IN-USE", test_in_use},
        {"POP3LockWait values", test_lock_wait_values},
        {"store failures", test_store_failures},
        {"STLS and injection", test_stls_and_injection},
        {"STLS forgets USER", test_stls_forgets_user},
        {"TLS required", test_tls_required},
        {"APOP", test_apop},
        {"AUTH PLAIN/LOGIN", test_auth_plain_login},
        {"AUTH errors", test_auth_errors},
        {"AUTH SCRAM-SHA-256", test_auth_scram},
        {"goodbye texts", test_goodbye_texts},
        {"UTF8 command", test_utf8_command},
        {"UTF8 then STLS", test_utf8_then_stls},
        {"LANG", test_lang},
        {"UTF-8 user names and passwords", test_utf8_credentials},
        {"UTF-8 with APOP and SASL", test_utf8_apop_and_sasl},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        CU_add_test(su, tests[i].name, tests[i].fn);
    pop3_retr_tests(CU_add_suite("pop3 retrieval", NULL, NULL));
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    pop3fake_reset();
    return failed ? 1 : 0;
}

/* Shared by the mod_pop3 CUnit files (test_pop3.c, test_pop3_retr.c): the default mailbox and session helpers. */
#ifndef TEST_POP3_H
#define TEST_POP3_H

#include <CUnit/CUnit.h>
#include <mailproto/host.h>
#include "fake_host.h"

#define ALICE "alice@example.test"
#define M1 "Subject: one\r\n\r\nHello\r\n"
#define M2 "Subject: two\r\nFrom: x@example.test\r\n\r\nline1\r\n.dot\r\nline3\r\n"
#define M3 "Subject: three\r\n\r\nbody\r\n"

/* Resets the fakes and gives alice M1, M2, M3. */
void mailbox(void);
/* A session of mod_pop3 with the fake providers, connected; start() also checks and clears the greeting. */
fake_session *connect_only(mp_tls_mode tls);
fake_session *start(mp_tls_mode tls);
/* Clears the output, feeds `text`, returns what the handler wrote. */
const char *cmd(fake_session *fs, const char *text);
/* start() plus USER alice / PASS secret, checked; output cleared. */
fake_session *logged_in(mp_tls_mode tls);
/* Checks that the fake host saw no contract violation, then ends the session. */
void finish(fake_session *fs);
/* Runs want_writable rounds until the response is complete; returns how many. */
unsigned drain(fake_session *fs);
int contains(const char *hay, const char *needle);

/* test_pop3_retr.c */
void pop3_retr_tests(CU_pSuite su);

#endif

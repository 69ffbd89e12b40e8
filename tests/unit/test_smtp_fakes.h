/*
 * Fake store and auth providers for the SMTP/LMTP handler tests, and helpers to drive a session.
 *
 * Store ("store", "fake"): keeps the message being written in memory, records what was committed and to
 * whom (the last commit, and the first FAKE_COMMITS since fakes_reset() one by one, e.g. a message and then
 * the DSN about it), counts begin/abort/commit and open users. Per-user behaviour by name:
 *   full@example.test       quota() says the mailbox is full (RCPT 452 4.2.2)
 *   late-full@example.test  save_commit gives MP_STORE_OVERQUOTA for this target
 *   broken@example.test     save_commit gives MP_STORE_ERR for this target
 * Auth ("auth", "fake"): users alice@example.test / "secret", bob@example.test / "hunter2",
 * full@, late-full@, broken@, postmaster@, net@example.test (password "x"; net@ only from 10.0.0.0/8, so never from
 * the fake peer); temp@example.test makes lookups fail
 * temporarily. failed() returns FAKE_AUTH_DELAY and counts.
 */
#ifndef TEST_SMTP_FAKES_H
#define TEST_SMTP_FAKES_H

#include <stddef.h>
#include <mailproto/auth.h>
#include <mailproto/module.h>
#include <mailproto/store.h>
#include "fake_host.h"

#define FAKE_AUTH_DELAY 1500000 /* 1.5 s */
#define FAKE_MSG_MAX (1 << 20)
#define FAKE_COMMITS 8

typedef struct fake_commit {
    char targets[1024];              /* "user1,user2" */
    char *data;                      /* the message (malloc'd, NUL-terminated) */
    size_t len;
    int delivery;                    /* mp_save_meta.delivery (a NULL meta counts as 1) */
} fake_commit;

typedef struct fake_store_stats {
    int instances, begun, aborted, committed, writes, users_open, user_opens;
    int fail_begin, fail_write;      /* set by tests */
    int scram;                       /* auth: has_secrets(SCRAM) */
    int auth_failed, auth_succeeded, lookups, verifies;
    int nowait;                      /* set by tests: lookup_nowait answers (else MP_AUTH_AGAIN) */
    int nowait_lookups;              /* lookup_nowait calls that answered */
    size_t spool_len;                /* the message being written */
    char *spool;
    size_t last_len;                 /* the last committed message */
    char *last;
    char last_targets[1024];         /* "user1,user2" of the last commit */
    int last_ntargets;
    fake_commit commits[FAKE_COMMITS]; /* the first FAKE_COMMITS commits, in order */
    int ncommits;
} fake_store_stats;

extern fake_store_stats fstats;
extern const mp_provider fake_store_provider;
extern const mp_provider fake_auth_provider;

/* Resets the counters and frees the recorded commits (call at the start of a test). */
void fakes_reset(void);

/* A connected session of `m` with the usual configuration (ServerName mail.example.test, LocalDomains
   example.test, MailStore fake:..., UserDB fake:..., MaxMessageSize 4K) plus `extra` ("Name", "value",
   ..., NULL). The greeting is checked and cleared. */
fake_session *smtp_fake_start(const mp_module *m, mp_tls_mode tls, const char *const *extra);

/* The last committed message without its first two header fields (Return-Path and Received). */
const char *fakes_last_body(size_t *len_r);

#endif

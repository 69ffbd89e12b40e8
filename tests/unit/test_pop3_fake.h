/*
 * In-memory store and auth providers for the POP3 handler tests and the POP3 fuzzer: a few users with
 * messages, streams that hand out at most `max_read` bytes per read (to cut messages anywhere), the POP3
 * lock, flags and expunge, failure injection, and counters that tell what the handler did.
 *
 * State is global (two fake sessions on one user contend for its lock, as two connections would).
 * pop3fake_reset() empties it; pop3fake_setup() registers both providers with a fake session and sets
 * MailStore / UserDB / ServerName.
 *
 * Users (password in brackets): alice@example.test [secret] (alias "alice"), bob@example.test [hunter2],
 * net@example.test [secret] (allow_nets=10.0.0.0/8), temp@example.test (the database fails: TEMPFAIL),
 * and a UTF-8 one: POP3FAKE_UTF8_USER [POP3FAKE_UTF8_PASSWORD].
 */
#ifndef TEST_POP3_FAKE_H
#define TEST_POP3_FAKE_H

#include <stddef.h>
#include <stdint.h>

#include <mailproto/auth.h>
#include <mailproto/store.h>

#include "fake_host.h"

#define POP3FAKE_UTF8_USER "j\xc3\xbcrgen@example.test"  /* "jürgen@example.test" */
#define POP3FAKE_UTF8_PASSWORD "p\xc3\xa4ssw\xc3\xb6rd"   /* "pässwörd" */

typedef struct pop3fake_stats {
    unsigned user_opens, user_closes;
    unsigned folder_opens, folder_closes, folder_syncs;
    unsigned stream_opens, stream_closes;
    unsigned expunges;            /* expunge() calls */
    unsigned flag_calls;          /* store_flags() calls */
    unsigned failed_calls, succeeded_calls;
    unsigned verify_calls;
    char last_user_open[128];     /* the user name the handler opened the store for */
    char last_verify_password[128];
} pop3fake_stats;

typedef struct pop3fake_config {
    size_t max_read;              /* bytes per stream_read (0: unlimited) */
    long read_fail_after;         /* stream_read fails once this many bytes were read (-1: never) */
    int fail_folder_open;         /* folder_open returns MP_STORE_ERR */
    int fail_expunge;             /* expunge returns MP_STORE_ERR */
    uint32_t expunge_before_lock;  /* folder_lock first removes this UID (another session's QUIT), once */
    int fail_store_instance;      /* instance() of the store fails */
    int plaintext_secrets;        /* has_secrets(MP_SECRET_PLAINTEXT) */
    int scram_secrets;            /* has_secrets(MP_SECRET_SCRAM_SHA256) */
    apr_interval_time_t fail_delay; /* what failed() returns */
    long size_adjust;             /* added to every message's size in a view (a store that is wrong) */
} pop3fake_config;

extern pop3fake_stats pop3fake_stats_now;
extern pop3fake_config pop3fake_cfg;

extern const mp_provider pop3fake_store_provider;
extern const mp_provider pop3fake_auth_provider;

/* Forgets every user, message and counter; default configuration. */
void pop3fake_reset(void);
/* Adds a message (its bytes as the CRLF stream) to `user`'s INBOX; returns its UID. key NULL: "K<uid>". */
uint32_t pop3fake_add(const char *user, const char *key, const char *data, size_t len);
/* Removes a message as another client (IMAP) would. */
void pop3fake_remove(const char *user, uint32_t uid);
/* Messages in `user`'s INBOX now. */
uint32_t pop3fake_count(const char *user);
/* 1 when message `uid` of `user` exists. */
int pop3fake_has(const char *user, uint32_t uid);
/* 1 when `user`'s POP3 lock is held. */
int pop3fake_locked(const char *user);
/* Registers the providers and the configuration with a session (before fake_connect). */
void pop3fake_setup(fake_session *fs);

#endif

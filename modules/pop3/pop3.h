/*
 * mod_pop3 internals: the session state shared by the files of the handler.
 *
 *   pop3_parse.c    lines and command words (sans-I/O)
 *   pop3_session.c  the RFC 1939 state machine: dispatch, TRANSACTION commands, UPDATE, goodbye
 *   pop3_auth.c     the AUTHORIZATION state: CAPA, STLS, USER/PASS, APOP, AUTH, the login job
 *   pop3_retr.c     multi-line responses produced as the client reads them: RETR, TOP, LIST, UIDL
 *   pop3_utf8.c     RFC 6856: the UTF8 and LANG commands, UTF-8 checks of user names and passwords
 *   mod_pop3.c      the module descriptor and the store/auth provider instances
 *
 * Log message ids: 40000-40999 (40001-40099 session, 40100-40199 authorization, 40200-40299 retrieval,
 * 40300-40399 update, 40400-40499 UTF-8 and languages, 40900-40999 module).
 */
#ifndef POP3_H
#define POP3_H

#include <stddef.h>
#include <stdint.h>

#include <mailproto/auth.h>
#include <mailproto/host.h>
#include <mailproto/store.h>

#include "pop3_parse.h"
#include "sasl.h"

#define POP3_IMPLEMENTATION "mailproto"

/* Output bounds (DESIGN section 3: never load a message whole, keep pending output bounded): a producer
   writes until this much is queued, then waits for on_writable(). */
#define POP3_OUT_HIGH (192 * 1024)
/* Bytes read from a message stream at a time. */
#define POP3_CHUNK (64 * 1024)

typedef enum pop3_state {
    POP3_AUTHORIZATION = 0, /* RFC 1939 section 4 */
    POP3_TRANSACTION = 1,   /* RFC 1939 section 5 */
    POP3_UPDATE = 2         /* RFC 1939 section 6: QUIT is being carried out */
} pop3_state;

/* What holds further input back (the rest stays unconsumed in the host's buffer). */
typedef enum pop3_wait {
    POP3_WAIT_NONE = 0,
    POP3_WAIT_JOB = 1,     /* a blocking job (login, UPDATE) runs; the host delivers nothing meanwhile */
    POP3_WAIT_DELAY = 2,   /* an authentication failure is being delayed (timer) */
    POP3_WAIT_OUTPUT = 3,  /* a multi-line response is being produced (want_writable) */
    POP3_WAIT_LOCK = 4     /* the maildrop is locked by another session: trying again (timer) */
} pop3_wait;

/* The providers a session works with (instances cached per module generation, mod_pop3.c). */
typedef struct pop3_providers {
    const mp_store_iface *store_if;
    mp_store *store;
    const mp_auth_iface *auth_if;
    mp_auth *auth;
    const char *error; /* why they are not available; NULL when both are */
} pop3_providers;

typedef struct pop3_output pop3_output;
typedef struct pop3_login pop3_login;

typedef struct pop3_session {
    pop3_state state;
    pop3_wait wait;
    pop3_reader reader;
    unsigned stop : 1;            /* start_tls() or close() was called: consume nothing more */
    unsigned in_sasl : 1;         /* an AUTH exchange waits for the client's next line */
    unsigned providers_done : 1;  /* prov was resolved (once per session) */
    unsigned apop : 1;            /* APOP offered: the greeting carried apop_banner */
    unsigned utf8 : 1;            /* RFC 6856 section 2.1: the client issued UTF8 (UTF-8 mode) */
    pop3_providers prov;
    char *apop_banner;            /* "<pid.id.time.rand@host>" (RFC 1939 section 7), in the session pool */

    /* AUTHORIZATION */
    char *user;                   /* the USER argument (NUL-terminated), or NULL */
    char *user_buf;               /* POP3_MAX_COMMAND_LINE + 1 bytes, allocated at the first USER */
    apr_pool_t *auth_pool;        /* one SASL exchange or login job; secrets are wiped with it */
    mpc_sasl *sasl;
    const char *sasl_mech;
    mp_timer *delay_timer;        /* a failure's delay, or the next try for a locked maildrop */
    apr_interval_time_t lock_wait; /* POP3LockWait */

    /* TRANSACTION: the maildrop as this session sees it (RFC 1939 section 5: numbers fixed for the session) */
    apr_pool_t *box_pool;
    mp_store_user *box_user;
    mp_folder *folder;
    const char *login;            /* the canonical user name */
    const mp_msg *msgs;           /* msgs[0] is message 1; the provider keeps it valid (no sync in POP3) */
    uint32_t nmsgs;
    unsigned char *deleted;       /* per message: marked by DELE in this session */
    uint32_t ndeleted;
    uint64_t total_size, deleted_size;

    pop3_output *out;             /* the multi-line response being produced, or NULL */
    uint32_t nretr;               /* RETR/TOP served, for the log */
    uint64_t retr_bytes;
} pop3_session;

/* ---- mod_pop3.c ---- */
/* Resolves (once per session) the store and auth providers and their instances from MailStore and
   UserDB. Returns ps->prov.error == NULL on success; the first failure is logged. */
void pop3_providers_resolve(mp_session *s);
/* POP3LockWait's value ("500ms", "10s", "1m"; a bare number is seconds; at most 10 minutes): 0 or -1. */
int pop3_parse_wait(const char *text, apr_interval_time_t *wait_r);
#define POP3_LOCK_WAIT_DEFAULT apr_time_from_sec(10)

/* ---- pop3_session.c ---- */
/* Sends a reply line: "+OK text" / "-ERR text", CRLF added. */
void pop3_ok(mp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pop3_err(mp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Frees the maildrop view (closes the folder, releasing the POP3 lock). Never expunges. */
void pop3_box_release(mp_session *s);

/* ---- pop3_auth.c ---- */
/* Commands of the AUTHORIZATION state; also CAPA in every state. */
void pop3_cmd_capa(mp_session *s);
void pop3_cmd_stls(mp_session *s);
void pop3_cmd_user(mp_session *s, const pop3_command *c);
void pop3_cmd_pass(mp_session *s, const pop3_command *c);
void pop3_cmd_apop(mp_session *s, const pop3_command *c);
void pop3_cmd_auth(mp_session *s, const pop3_command *c);
/* A line of a running AUTH exchange. */
void pop3_sasl_line(mp_session *s, const char *line, size_t len);
/* Ends a running AUTH exchange without a reply (line too long is answered by the caller). */
void pop3_sasl_abort(mp_session *s);
/* Forgets everything learned in AUTHORIZATION (STLS, RFC 2595 section 4). */
void pop3_auth_reset(mp_session *s);
/* The greeting's APOP banner, when APOP is offered. */
void pop3_auth_greeting(mp_session *s);

/* ---- pop3_utf8.c (RFC 6856) ---- */
/* UTF8 (AUTHORIZATION only) and LANG (AUTHORIZATION and TRANSACTION). */
void pop3_cmd_utf8(mp_session *s, const pop3_command *c);
void pop3_cmd_lang(mp_session *s, const pop3_command *c);

/* ---- pop3_retr.c ---- */
/* RETR (lines == UINT64_MAX) or TOP of message index `i` (0-based): writes "+OK" and starts streaming,
   or writes an -ERR; "-ERR [UTF8]" for a message with non-ASCII header fields when the session is not in
   UTF-8 mode (RFC 6856 sections 2.1 and 5). */
void pop3_out_message(mp_session *s, uint32_t i, uint64_t lines);
/* LIST / UIDL without argument. */
void pop3_out_listing(mp_session *s, int uidl);
/* on_writable(): produce more. */
void pop3_out_continue(mp_session *s);
/* Drops the response being produced (the session is closing). */
void pop3_out_abort(mp_session *s);
/* The UIDL of a message: its store key if it is a valid unique-id (RFC 1939 section 7: 1 to 70 characters
   0x21-0x7E), else a hex digest of the key. */
const char *pop3_uid_of(const mp_msg *m, char buf[72]);

#endif

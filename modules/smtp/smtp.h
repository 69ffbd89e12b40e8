/*
 * mod_smtp / mod_lmtp internals: the session state shared by the files of the handler.
 *
 *   smtp_parse.c    command lines -> commands, paths, ESMTP parameters (sans-I/O)
 *   smtp_data.c     DATA dot-unstuffing and end detection, BDAT content checks (sans-I/O)
 *   smtp_session.c  the session: greeting, input framing, every command but AUTH, replies, limits
 *   smtp_auth.c     AUTH (RFC 4954) over modules/common/sasl.h
 *   smtp_deliver.c  recipients' checks, spooling into the store, commit, Received/Return-Path
 *   smtp_dsn.c      "delivered" DSNs (RFC 3461, RFC 3464) for local senders that asked for them
 *   smtp_module.c   configuration directives, provider instances, the module descriptor
 *
 * The same sources build mod_smtp.so and, with SMTP_LMTP=1, mod_lmtp.so (RFC 2033).
 */
#ifndef SMTP_H
#define SMTP_H

#include <stdint.h>

#include <apr_hash.h>
#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_thread_mutex.h>

#include <mailproto/auth.h>
#include <mailproto/host.h>
#include <mailproto/store.h>

#include "sasl.h"
#include "smtp_data.h"
#include "smtp_parse.h"

#ifndef SMTP_LMTP
#define SMTP_LMTP 0
#endif

#if SMTP_LMTP
#define SMTP_PROTO_NAME "lmtp"
#else
#define SMTP_PROTO_NAME "smtp"
#endif

/* RFC 5321 section 4.5.3.1.4 gives 512 octets for a command line and lets extensions raise it (SIZE,
   DSN's ORCPT/ENVID, AUTH=...). We accept 2048 octets with the CRLF, as Postfix does. */
#define SMTP_MAX_COMMAND_LINE 2048
/* RFC 4954 section 4: AUTH command and response lines up to 12288 octets. */
#define SMTP_MAX_AUTH_LINE 12288
/* Default MaxRecipients: RFC 5321 section 4.5.3.1.8 asks for at least 100. */
#define SMTP_DEFAULT_MAX_RCPTS 100
/* RCPT attempts a transaction may make beyond MaxRecipients before each one counts as an error. */
#define SMTP_RCPT_TRIES_SLACK 100
#define SMTP_DEFAULT_MAX_SIZE (50u * 1024 * 1024)
/* Message bytes gathered before one save_write(). */
#define SMTP_STAGE_SIZE 16384
/* The message header kept for a DSN's text/rfc822-headers part (smtp_dsn.c): at most this much. */
#define SMTP_DSN_HEADERS_MAX 65536

typedef enum smtp_role {
    SMTP_ROLE_MX = 0,         /* receives for LocalDomains from anyone */
    SMTP_ROLE_SUBMISSION = 1, /* `Submission on`: AUTH before MAIL, sender owned by the user */
    SMTP_ROLE_LMTP = 2        /* RFC 2033 */
} smtp_role;

/* What a session reads from the configuration once, at connect. */
typedef struct smtp_conf {
    const char *server_name;
    uint64_t max_size;          /* MaxMessageSize */
    unsigned max_rcpts;         /* MaxRecipients */
    smtp_role role;
    apr_array_header_t *local_domains; /* const char *, lower case */
} smtp_conf;

/* The module's state for one generation (init's ctx). */

typedef enum smtp_in_mode {
    SMTP_IN_COMMAND = 0, /* command lines */
    SMTP_IN_SKIP,        /* discarding an over-long line up to its CRLF */
    SMTP_IN_DATA,        /* DATA content until <CRLF>.<CRLF> */
    SMTP_IN_BDAT,        /* a BDAT chunk: exactly bdat_left bytes */
    SMTP_IN_AUTH,        /* an AUTH exchange waits for the client's next line */
    SMTP_IN_WAIT,        /* a blocking job or a delayed reply runs: input waits */
    SMTP_IN_STOP         /* STARTTLS or QUIT: nothing more is read */
} smtp_in_mode;

typedef struct smtp_rcpt {
    const char *addr;   /* the mailbox as sent */
    const char *user;   /* the user it is delivered to */
    size_t target;      /* index into txn->targets */
    const char *notify; /* DSN (RFC 3461 section 4.1/4.2), NULL when not given */
    const char *orcpt;
} smtp_rcpt;

/* One mail transaction (RFC 5321 section 3.3), in its own pool. */
typedef struct smtp_txn {
    apr_pool_t *pool;
    const char *from;         /* reverse-path mailbox, "" for <> */
    uint64_t declared_size;   /* SIZE= (RFC 1870), 0 if none */
    const char *body;         /* BODY= (RFC 6152), NULL if none */
    int smtputf8;             /* RFC 6531 section 3.4 */
    const char *ret, *envid;  /* RFC 3461 section 4.3/4.4 */
    unsigned rcpt_tries;      /* RCPT commands, accepted or not */
    apr_array_header_t *rcpts;   /* smtp_rcpt, accepted ones in order */
    apr_array_header_t *targets; /* mp_save_target, one per distinct user */
    apr_array_header_t *users;   /* const char *, parallel to targets */

    int data_kind;            /* 0 none, 1 DATA, 2 BDAT */
    mp_save *save;
    uint64_t size;            /* message bytes received (without our headers) */
    int bad;                  /* a bare CR/LF in the content */
    int oversize;             /* over MaxMessageSize */
    int failed;               /* the store failed while spooling */
    smtp_data_machine dm;
    char *stage;
    size_t stage_len;
    char id[48];
    apr_time_t arrival;       /* the data began: the Received date, a DSN's Arrival-Date */

    /* The header as it streams by, only when a DSN will be stored (smtp_dsn.c) */
    char *hdrs;               /* SMTP_DSN_HEADERS_MAX bytes, or NULL */
    size_t hdrs_len;
    int hdrs_done;            /* the empty line came (or the buffer is full) */
    int hdrs_cut;             /* longer than SMTP_DSN_HEADERS_MAX */
    int hdrs_whole;           /* ... cut where a new field began: what was kept is whole fields */
    int hdrs_bol, hdrs_cr;    /* at the beginning of a line; the last byte was CR */
} smtp_txn;

typedef struct smtp_session {
    smtp_conf conf;
    smtp_in_mode mode;
    smtp_in_mode skip_return;   /* the mode after the skipped line */
    int skip_bare;              /* the skipped line also had a bare CR/LF */

    char helo[256];             /* EHLO/HELO/LHLO argument; "" before */
    int esmtp;                  /* EHLO or LHLO (not HELO) */

    apr_pool_t *txn_pool;       /* cleared for every transaction */
    smtp_txn *txn;              /* NULL when no MAIL is open */

    uint64_t bdat_left;         /* bytes of the current chunk still to read */
    int bdat_last;
    int bdat_discard;           /* read and drop the chunk, then send bdat_reply */
    const char *bdat_reply;     /* a static string */
    int bdat_reset;             /* end the transaction after bdat_reply */

    /* AUTH */
    const char *auth_user;      /* authenticated as, in the session pool */
    apr_pool_t *auth_pool;      /* one exchange */
    mpc_sasl *sasl;
    const char *auth_mech;
    mp_timer *auth_timer;       /* the delayed 535 */
    const mp_auth_user *auth_info; /* the user's entry, when a job fetched it (in auth_pool) */

    /* providers (looked up lazily) */
    int providers_done;
    const mp_store_iface *store_if;
    mp_store *store;
    const mp_auth_iface *auth_if;
    mp_auth *auth;

    unsigned messages;          /* accepted in this session, for ids */
    int closing;                /* on_close started */
} smtp_session;

/* ---- smtp_session.c ---- */
/* Writes one reply line: code, enhanced code, text, CRLF. */
void smtp_reply(mp_session *s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Ends the transaction: aborts an open save, closes users, clears the pool. */
void smtp_txn_reset(mp_session *s);
/* Runs work then done on a worker (host->run_blocking), or inline when the host cannot; input waits. */
void smtp_run_job(mp_session *s, mp_work_fn work, mp_done_fn done, void *arg);
/* 1 when `domain` (any case) is one of LocalDomains. */
int smtp_is_local_domain(const smtp_session *ss, const char *domain, size_t len);
/* Gives every provider instance the session needs (cheap after the first time). */
void smtp_providers(mp_session *s);

/* ---- smtp_auth.c ---- */
/* The mechanisms offered now ("PLAIN LOGIN ..."), or NULL when AUTH is not offered. */
const char *smtp_auth_mechanisms(mp_session *s);
void smtp_cmd_auth(mp_session *s, const smtp_command *cmd);
/* One line of an AUTH exchange (SMTP_IN_AUTH). */
void smtp_auth_line(mp_session *s, const char *line, size_t len);
/* Abandons a running exchange (STARTTLS, close). */
void smtp_auth_abort(mp_session *s);

/* ---- smtp_deliver.c ---- */
void smtp_cmd_rcpt(mp_session *s, const smtp_command *cmd);
void smtp_cmd_data(mp_session *s);
void smtp_cmd_bdat(mp_session *s, const smtp_command *cmd);
/* SMTP_IN_DATA / SMTP_IN_BDAT input; returns bytes consumed. */
size_t smtp_data_input(mp_session *s, const char *data, size_t len);
size_t smtp_bdat_input(mp_session *s, const char *data, size_t len);
/* The user that owns `mailbox` for the store: "local@domain" with the domain in lower case. */
const char *smtp_canonical_user(apr_pool_t *pool, const char *local, size_t llen, const char *domain, size_t dlen);
/* An RFC 5322 date-time in UTC ("Mon, 02 Jan 2006 15:04:05 +0000") into buf (at least 32 bytes). */
void smtp_date(char *buf, size_t size, apr_time_t when);

/* ---- smtp_dsn.c ---- */
/* At the start of the data: 1 when this transaction will store a "delivered" DSN if it succeeds (then its
   header is kept as it streams by, smtp_dsn_header()). */
int smtp_dsn_wanted(mp_session *s);
/* Message bytes as they arrive (after dot-unstuffing): keeps the header, up to SMTP_DSN_HEADERS_MAX. */
void smtp_dsn_header(smtp_txn *t, const char *bytes, size_t len);
/* After the 250 for the message: sends the "delivered" DSN the recipients asked for, as a job, or logs why it
   cannot. Call before smtp_txn_reset(). */
void smtp_dsn_delivered(mp_session *s, int closing);

/* ---- smtp_module.c ---- */
/* The provider instance of `kind` ("store", "auth") configured by `directive` ("MailStore", "UserDB"):
   shared by every session of this generation, made on first use. NULL when not configured or broken
   (logged). */
void *smtp_instance(mp_session *s, const char *kind, const char *directive, uint32_t iface_version,
                    const void **iface_r);
/* Parses "50M"-style sizes. Returns 0 or -1. */
int smtp_parse_bytes(const char *text, uint64_t *bytes_r);

extern const mp_protocol smtp_protocol;

#endif

/*
 * Delivery Status Notifications (RFC 3461) for the mail this handler delivers: the "delivered" report,
 * in the format of RFC 3464 inside multipart/report (RFC 6522).
 *
 * What the DSN parameters do here
 *
 *   NOTIFY=SUCCESS  SMTP delivers into the mailbox itself, so it is the MTA that does the final delivery
 *                   and owes the sender a "delivered" DSN for each recipient that asked (RFC 3461 section
 *                   5.2.3, local delivery), once the message is durable in that mailbox, i.e. after
 *                   save_commit and the 250. The report is one message per transaction with one
 *                   per-recipient group for each such recipient (RFC 3464 section 2).
 *   NOTIFY=FAILURE  Never a DSN from us: nothing fails after the 250. Every failure (unknown user, full
 *                   mailbox, store error, a message too big or with bare CR/LF) is the reply to RCPT or to
 *                   the end of the data, so the client still holds the message and it is the client MTA that
 *                   reports the failure to its sender (RFC 5321 section 6.1: the server takes the
 *                   responsibility for a message only with its 250; RFC 3461 section 5.2.6 for the MTA that
 *                   then fails). A transaction that was stored for some recipients but not all gets a 4xx
 *                   and no DSN either: the client will send it again, and the retry gets the report.
 *   NOTIFY=DELAY    Never: we have no queue, so no message is ever delayed here (RFC 3461 section 5.2.5
 *                   is about a message an MTA keeps trying to deliver).
 *   NOTIFY=NEVER    No DSN under any condition (RFC 3461 section 4.1). No NOTIFY at all means
 *                   FAILURE,DELAY (section 4.1) and so, here, no DSN either.
 *   RET             Ignored for a "delivered" DSN: "If a DSN contains no indications of delivery failure,
 *                   only the headers of the message SHOULD be returned" (RFC 3461 section 4.3), so every
 *                   DSN here returns the header as text/rfc822-headers (RFC 6522 / RFC 3462), whatever RET
 *                   said and when it said nothing. That is also why the message is never read back: its
 *                   header is kept as it streams by (smtp_dsn_header(), at most SMTP_DSN_HEADERS_MAX
 *                   bytes, cut at a line end beyond that, and only for a transaction that will send a
 *                   DSN). Re-reading the stored copy would need the message's UID, which a delivery does
 *                   not get (store.h: mp_save_meta.delivery), and nothing more than the header is needed.
 *   ENVID           Original-Envelope-Id, xtext-decoded: it MUST be there when ENVID was given (RFC 3461
 *                   section 6.3 (a); RFC 3464 section 2.2.1 keeps its case). MAIL checked that it decodes to
 *                   printable US-ASCII (RFC 3461 section 4.4).
 *   ORCPT           Original-Recipient: its address type and the xtext-decoded address; present if and
 *                   only if ORCPT was given (RFC 3461 section 6.3 (d), RFC 3464 section 2.3.1).
 *
 * Where the DSN goes
 *
 *   To the reverse-path of the message (MAIL FROM), with a null reverse-path itself (RFC 3461 section 6.1,
 *   RFC 5321 section 6.1): here that means it is stored, with "Return-Path: <>", in the INBOX of the sender
 *   when the sender is a user of ours (a LocalDomains address the user database knows), through the store
 *   provider like any delivery, in a job (host->run_blocking) that starts after the 250 was written, so the
 *   reply never waits for the DSN and a DSN that fails does not change it. Mail for other domains would go
 *   to an outbound queue, which does not exist yet: such a DSN is logged as not sent (30050), as is one for
 *   a sender unknown here (30054). A message with a null reverse-path never causes one (RFC 5321 section
 *   4.5.5: never answer <>; it is how DSNs cannot loop).
 *
 * LMTP (mod_lmtp) sends no DSN and does not announce DSN in its LHLO reply. The MTA in front of an LMTP
 *   server has the queue and can reach any sender; the LMTP server can reach only local ones. An MTA that
 *   sees DSN announced hands the duty to report success to the server (RFC 3461 section 5.2.1: relay to a
 *   conforming server passes NOTIFY on and reports nothing; Postfix's smtp/lmtp client drops its own
 *   SUCCESS notification when the server announces DSN, smtp_rcpt.c), so with DSN announced a success
 *   report for a remote sender would be lost. Without it the MTA reports itself (RFC 3461 section 5.2.2:
 *   "relayed"; Postfix with lmtp_assume_final = yes: "delivered"), as it does with Dovecot's LMTP, which
 *   does not announce DSN either. DSN parameters an LMTP client sends anyway are still accepted and logged.
 *
 * What is recorded with the stored message: nothing more than before. ENVID and RET belong to the
 *   transaction, and no RFC defines a header field for them; ORCPT is per recipient (RFC 8098 section 2.3's
 *   Original-Recipient header field), but one spooled file is hard-linked into every recipient's maildir,
 *   so a per-recipient field cannot be written. The parameters are in the "message accepted" log line
 *   (30010) and in the DSN.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <apr_strings.h>

#include "smtp.h"

#define DSN_STAGE 16384

/* NOTIFY includes SUCCESS (validated at RCPT: "NEVER" or a list of SUCCESS/FAILURE/DELAY). */
static int notify_success(const char *notify)
{
    if (!notify)
        return 0;
    for (const char *p = notify; *p;) {
        size_t n = strcspn(p, ",");
        if (n == 7 && strncasecmp(p, "SUCCESS", 7) == 0)
            return 1;
        p += n;
        if (*p)
            p++;
    }
    return 0;
}

static int any_success(const smtp_txn *t)
{
    for (int i = 0; i < t->rcpts->nelts; i++)
        if (notify_success(APR_ARRAY_IDX(t->rcpts, i, smtp_rcpt).notify))
            return 1;
    return 0;
}

/* The user that owns the reverse-path when it is in one of LocalDomains, else NULL. */
static const char *local_sender(mp_session *s, apr_pool_t *pool, const char *from)
{
    const char *at = strrchr(from, '@');
    if (!at || at == from || !smtp_is_local_domain(s->state, at + 1, strlen(at + 1)))
        return NULL;
    return smtp_canonical_user(pool, from, (size_t)(at - from), at + 1, strlen(at + 1));
}

int smtp_dsn_wanted(mp_session *s)
{
    smtp_txn *t = ((smtp_session *)s->state)->txn;
    return !SMTP_LMTP && t->from[0] && any_success(t) && local_sender(s, t->pool, t->from) != NULL;
}

void smtp_dsn_header(smtp_txn *t, const char *b, size_t n)
{
    /* Up to the empty line that ends the header (RFC 5322 section 2.1), which is not kept. A message with a
       bare CR or LF is refused at its end, so what is kept of one does not matter. */
    for (size_t i = 0; i < n && !t->hdrs_done; i++) {
        char c = b[i];
        if (c == '\n' && t->hdrs_cr && t->hdrs_bol) {
            t->hdrs_len--; /* the CR of the empty line */
            t->hdrs_done = 1;
            break;
        }
        if (t->hdrs_len == SMTP_DSN_HEADERS_MAX) {
            /* What does not fit: the empty line's CR (a header of exactly this size), or a new field after
               a whole one, or the middle of a field */
            t->hdrs_done = 1;
            if (t->hdrs_bol && c == '\r')
                break;
            t->hdrs_cut = 1;
            t->hdrs_whole = t->hdrs_bol && c != ' ' && c != '\t';
            break;
        }
        t->hdrs[t->hdrs_len++] = c;
        if (c == '\n' && t->hdrs_cr)
            t->hdrs_bol = 1;
        else if (c != '\r')
            t->hdrs_bol = 0;
        t->hdrs_cr = c == '\r';
    }
}

/* ---------------------------------------------------------------- the job */

typedef struct dsn_rcpt {
    const char *addr;        /* as in RCPT TO */
    const char *orcpt_type;  /* NULL without ORCPT */
    const char *orcpt;       /* xtext-decoded */
} dsn_rcpt;

typedef struct dsn_job {
    apr_pool_t *pool;        /* the job's own (a root pool: used on the worker) */
    const mp_store_iface *store_if;
    mp_store *store;
    const mp_auth_iface *auth_if;
    mp_auth *auth;

    const char *sender, *user, *server_name, *msg_id, *envid;
    apr_time_t arrival;
    int smtputf8;
    const char *hdrs;
    size_t hdrs_len;
    int hdrs_cut, hdrs_whole;
    apr_array_header_t *rcpts; /* dsn_rcpt */

    /* out */
    int lookup_rc, open_rc, rc;
    char dsn_id[64];

    /* writing */
    mp_save *save;
    char *buf;
    size_t len;
    int write_failed;
} dsn_job;

static void put(dsn_job *j, const char *p, size_t n)
{
    while (n && !j->write_failed) {
        if (j->len == DSN_STAGE) {
            if (j->store_if->save_write(j->save, j->buf, j->len) != MP_STORE_OK)
                j->write_failed = 1;
            j->len = 0;
        }
        size_t k = DSN_STAGE - j->len < n ? DSN_STAGE - j->len : n;
        memcpy(j->buf + j->len, p, k);
        j->len += k;
        p += k;
        n -= k;
    }
}

static void puts_(dsn_job *j, const char *text) { put(j, text, strlen(text)); }

static void putf(dsn_job *j, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void putf(dsn_job *j, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *text = apr_pvsprintf(j->pool, fmt, ap);
    va_end(ap);
    puts_(j, text);
}

static int has_8bit(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80)
            return 1;
    return 0;
}

static int str_8bit(const char *p) { return p && has_8bit(p, strlen(p)); }

/* A boundary that no line of the returned header starts with (the rest of the DSN is ours). */
static const char *make_boundary(dsn_job *j)
{
    for (unsigned k = 0;; k++) {
        const char *b = apr_psprintf(j->pool, "=_mailproto-dsn-%s-%u", j->dsn_id, k);
        size_t blen = strlen(b);
        int found = 0;
        for (size_t i = 0; i < j->hdrs_len && !found; i++)
            if ((i == 0 || j->hdrs[i - 1] == '\n') && j->hdrs_len - i >= blen + 2 && j->hdrs[i] == '-' &&
                j->hdrs[i + 1] == '-' && memcmp(j->hdrs + i + 2, b, blen) == 0)
                found = 1;
        if (!found)
            return b;
    }
}

/* The header as returned: whole fields only. When it was cut, up to the last CRLF that a new field (not a
   folded continuation, RFC 5322 section 2.2.3) follows. */
static size_t returned_header_len(const dsn_job *j)
{
    if (!j->hdrs_cut || j->hdrs_whole)
        return j->hdrs_len;
    for (size_t n = j->hdrs_len; n-- > 2;)
        if (j->hdrs[n - 2] == '\r' && j->hdrs[n - 1] == '\n' && j->hdrs[n] != ' ' && j->hdrs[n] != '\t')
            return n;
    return 0;
}

/* The DSN, streamed into the open save (RFC 3464 section 2, RFC 6522, RFC 3461 section 6). */
static void write_dsn(dsn_job *j)
{
    char now[40], arrival[40];
    smtp_date(now, sizeof now, apr_time_now());
    smtp_date(arrival, sizeof arrival, j->arrival);
    const char *boundary = make_boundary(j);
    size_t hlen = returned_header_len(j);

    /* RFC 6533: addresses in UTF-8 make message/global-delivery-status, a header in UTF-8 message/global-headers
       (8BITMIME without SMTPUTF8: 8-bit text/rfc822-headers) */
    int addr8 = str_8bit(j->sender);
    for (int i = 0; i < j->rcpts->nelts; i++) {
        const dsn_rcpt *r = &APR_ARRAY_IDX(j->rcpts, i, dsn_rcpt);
        addr8 |= str_8bit(r->addr) || str_8bit(r->orcpt);
    }
    int hdr8 = has_8bit(j->hdrs, hlen);

    /* RFC 5321 section 4.4: the Return-Path of a message with a null reverse-path */
    puts_(j, "Return-Path: <>\r\n");
    putf(j, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", j->server_name);
    putf(j, "To: <%s>\r\n", j->sender);
    puts_(j, "Subject: Successful Mail Delivery Report\r\n");
    putf(j, "Date: %s\r\n", now);
    putf(j, "Message-ID: <%s@%s>\r\n", j->dsn_id, j->server_name);
    puts_(j, "Auto-Submitted: auto-replied\r\n"); /* RFC 3834 section 5 */
    puts_(j, "MIME-Version: 1.0\r\n");
    /* RFC 6522 section 3 / RFC 3464 section 2: multipart/report; report-type=delivery-status */
    putf(j, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", boundary);
    if (addr8 || hdr8)
        puts_(j, "Content-Transfer-Encoding: 8bit\r\n");
    puts_(j, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    /* 1: for people (RFC 6522 section 3: the first part is human-readable) */
    putf(j, "--%s\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=%s\r\n", boundary,
         addr8 ? "utf-8" : "us-ascii");
    if (addr8)
        puts_(j, "Content-Transfer-Encoding: 8bit\r\n");
    putf(j, "\r\nThis is the mail system at host %s.\r\n\r\n", j->server_name);
    putf(j, "Your message was delivered to the mailbox of %s:\r\n\r\n",
         j->rcpts->nelts == 1 ? "this recipient" : "these recipients");
    for (int i = 0; i < j->rcpts->nelts; i++)
        putf(j, "    <%s>\r\n", APR_ARRAY_IDX(j->rcpts, i, dsn_rcpt).addr);
    putf(j, "\r\nIt arrived on %s and was stored as %s.\r\n", arrival, j->msg_id);
    puts_(j, "You asked for this report (NOTIFY=SUCCESS); the message's header is attached.\r\n");
    if (j->hdrs_cut)
        putf(j, "The header was longer than %u bytes: only its beginning is attached.\r\n",
             (unsigned)SMTP_DSN_HEADERS_MAX);

    /* 2: for programs (RFC 3464 section 2.2 per-message, 2.3 per-recipient fields, in that order) */
    putf(j, "\r\n--%s\r\nContent-Description: Delivery report\r\nContent-Type: %s\r\n", boundary,
         addr8 ? "message/global-delivery-status" : "message/delivery-status");
    if (addr8)
        puts_(j, "Content-Transfer-Encoding: 8bit\r\n");
    puts_(j, "\r\n");
    if (j->envid)
        putf(j, "Original-Envelope-Id: %s\r\n", j->envid);  /* 2.2.1; RFC 3461 section 6.3 (a) */
    putf(j, "Reporting-MTA: dns; %s\r\n", j->server_name);  /* 2.2.2 */
    putf(j, "Arrival-Date: %s\r\n", arrival);                /* 2.2.5 */
    for (int i = 0; i < j->rcpts->nelts; i++) {
        const dsn_rcpt *r = &APR_ARRAY_IDX(j->rcpts, i, dsn_rcpt);
        puts_(j, "\r\n");
        if (r->orcpt_type) /* 2.3.1; RFC 3461 section 6.3 (d): if and only if ORCPT was given */
            putf(j, "Original-Recipient: %s;%s\r\n", r->orcpt_type, r->orcpt);
        /* 2.3.2; "utf-8" for an address in UTF-8 (RFC 6533 section 3) */
        putf(j, "Final-Recipient: %s; %s\r\n", str_8bit(r->addr) ? "utf-8" : "rfc822", r->addr);
        puts_(j, "Action: delivered\r\n");                   /* 2.3.3 */
        puts_(j, "Status: 2.0.0\r\n");                       /* 2.3.4; RFC 3463 X.0.0 success */
        putf(j, "Final-Log-ID: %s\r\n", j->msg_id);          /* 2.3.8: the id of the 250 and the log */
    }

    /* 3: the returned header (RFC 3461 section 4.3: headers only when nothing failed) */
    putf(j, "\r\n--%s\r\nContent-Description: Message headers\r\nContent-Type: %s\r\n", boundary,
         hdr8 && j->smtputf8 ? "message/global-headers" : "text/rfc822-headers");
    if (hdr8)
        puts_(j, "Content-Transfer-Encoding: 8bit\r\n");
    puts_(j, "\r\n");
    put(j, j->hdrs, hlen);
    if (hlen && !(hlen >= 2 && j->hdrs[hlen - 2] == '\r' && j->hdrs[hlen - 1] == '\n'))
        puts_(j, "\r\n");
    putf(j, "\r\n--%s--\r\n", boundary);
    if (j->len && !j->write_failed && j->store_if->save_write(j->save, j->buf, j->len) != MP_STORE_OK)
        j->write_failed = 1;
    j->len = 0;
}

static void dsn_work(void *arg)
{
    dsn_job *j = arg;
    mp_auth_user info;
    memset(&info, 0, sizeof info);
    j->lookup_rc = MP_AUTH_OK;
    j->open_rc = j->rc = MP_STORE_ERR;
    if (j->auth) {
        j->lookup_rc = j->auth_if->lookup(j->auth, j->user, j->pool, &info);
        if (j->lookup_rc != MP_AUTH_OK)
            return;
        if (info.user && *info.user)
            j->user = info.user;
    }
    mp_store_user *u = NULL;
    j->open_rc = j->store_if->user_open(j->store, j->user, 1, j->pool, &u);
    if (j->open_rc != MP_STORE_OK)
        return;
    if ((info.quota_bytes || info.quota_messages) && j->store_if->set_quota_limits)
        j->store_if->set_quota_limits(u, info.quota_bytes, info.quota_messages);
    j->rc = j->store_if->save_begin(u, "INBOX", j->pool, &j->save);
    if (j->rc == MP_STORE_OK) {
        j->buf = apr_palloc(j->pool, DSN_STAGE);
        write_dsn(j);
        if (j->write_failed) {
            j->store_if->save_abort(j->save);
            j->rc = MP_STORE_ERR;
        } else {
            mp_save_meta meta;
            memset(&meta, 0, sizeof meta);
            meta.delivery = 1;
            mp_save_target tg;
            memset(&tg, 0, sizeof tg);
            tg.user = u;
            tg.folder = "INBOX";
            int rc = j->store_if->save_commit(j->save, &meta, &tg, 1);
            j->rc = tg.result != MP_STORE_OK ? tg.result : rc;
        }
    }
    j->save = NULL;
    j->store_if->user_close(u);
}

static void dsn_done(mp_session *s, void *arg, int closing)
{
    dsn_job *j = arg;
    smtp_session *ss = s->state;
    const char *why = NULL;
    if (j->lookup_rc == MP_AUTH_NOUSER || j->lookup_rc == MP_AUTH_FAIL)
        s->host->log(s, MP_LOG_NOTICE, 30054, "DSN not sent for message %s: the sender <%s> is not a user here",
                     j->msg_id, j->sender);
    else if (j->lookup_rc != MP_AUTH_OK)
        why = "user database temporarily unavailable";
    else if (j->open_rc != MP_STORE_OK)
        why = "the store refused the user";
    else if (j->rc == MP_STORE_OVERQUOTA)
        why = "mailbox full";
    else if (j->rc != MP_STORE_OK)
        why = "store error";
    else
        s->host->log(s, MP_LOG_NOTICE, 30052, "DSN stored: id=%s for message %s to=<%s> recipients=%d",
                     j->dsn_id, j->msg_id, j->sender, j->rcpts->nelts);
    if (why)
        s->host->log(s, MP_LOG_WARN, 30053, "DSN for message %s not stored for <%s>: %s", j->msg_id, j->sender, why);
    apr_pool_destroy(j->pool);
    if (!closing)
        ss->mode = SMTP_IN_COMMAND;
}

void smtp_dsn_delivered(mp_session *s, int closing)
{
    smtp_session *ss = s->state;
    smtp_txn *t = ss->txn;
    if (SMTP_LMTP || !t->from[0] || !any_success(t))
        return; /* LMTP: see the top; <>: never (RFC 5321 section 4.5.5); nobody asked */
    const char *user = local_sender(s, t->pool, t->from);
    if (!user) {
        /* the recipients that asked, the first 10 of them */
        apr_array_header_t *list = apr_array_make(t->pool, 10, sizeof(const char *));
        int asked = 0;
        for (int i = 0; i < t->rcpts->nelts; i++) {
            const smtp_rcpt *r = &APR_ARRAY_IDX(t->rcpts, i, smtp_rcpt);
            if (notify_success(r->notify) && asked++ < 10)
                APR_ARRAY_PUSH(list, const char *) = apr_pstrcat(t->pool, list->nelts ? ",<" : "<", r->addr, ">", NULL);
        }
        if (asked > 10)
            APR_ARRAY_PUSH(list, const char *) = apr_psprintf(t->pool, " and %d more", asked - 10);
        const char *who = apr_array_pstrcat(t->pool, list, '\0');
        s->host->log(s, MP_LOG_NOTICE, 30050,
                     "DSN not sent for message %s: from=<%s> is not local and there is no outbound queue "
                     "(NOTIFY=SUCCESS for %s)", t->id, t->from, who);
        return;
    }
    if (closing || !ss->store) {
        s->host->log(s, MP_LOG_NOTICE, 30051, "DSN not sent for message %s to <%s>: %s", t->id, t->from,
                     closing ? "the client left before the reply" : "no mail store");
        return;
    }
    /* A root pool of its own: the worker allocates from it while the session's thread goes on with the
       session's pools (the 250 is still being sent). */
    apr_pool_t *pool;
    if (apr_pool_create(&pool, NULL) != APR_SUCCESS) {
        s->host->log(s, MP_LOG_WARN, 30053, "DSN for message %s not stored for <%s>: out of memory", t->id, t->from);
        return;
    }
    dsn_job *j = apr_pcalloc(pool, sizeof *j);
    j->pool = pool;
    j->store_if = ss->store_if;
    j->store = ss->store;
    j->auth_if = ss->auth_if;
    j->auth = ss->auth;
    j->sender = apr_pstrdup(pool, t->from);
    j->user = apr_pstrdup(pool, user);
    j->server_name = apr_pstrdup(pool, ss->conf.server_name);
    j->msg_id = apr_pstrdup(pool, t->id);
    snprintf(j->dsn_id, sizeof j->dsn_id, "%s.DSN", t->id);
    if (t->envid) {
        char *dec = apr_palloc(pool, strlen(t->envid) + 1);
        smtp_xtext_decode(t->envid, strlen(t->envid), dec);
        j->envid = dec;
    }
    j->arrival = t->arrival;
    j->smtputf8 = t->smtputf8;
    if (t->hdrs) {
        j->hdrs = apr_pmemdup(pool, t->hdrs, t->hdrs_len ? t->hdrs_len : 1);
        j->hdrs_len = t->hdrs_len;
        j->hdrs_cut = t->hdrs_cut;
        j->hdrs_whole = t->hdrs_whole;
    } else {
        j->hdrs = "";
    }
    j->rcpts = apr_array_make(pool, 4, sizeof(dsn_rcpt));
    for (int i = 0; i < t->rcpts->nelts; i++) {
        const smtp_rcpt *r = &APR_ARRAY_IDX(t->rcpts, i, smtp_rcpt);
        if (!notify_success(r->notify))
            continue;
        dsn_rcpt *d = apr_array_push(j->rcpts);
        d->addr = apr_pstrdup(pool, r->addr);
        d->orcpt_type = d->orcpt = NULL;
        if (r->orcpt) {
            const char *semi = strchr(r->orcpt, ';');
            d->orcpt_type = apr_pstrmemdup(pool, r->orcpt, (size_t)(semi - r->orcpt));
            char *dec = apr_palloc(pool, strlen(semi + 1) + 1);
            smtp_xtext_decode(semi + 1, strlen(semi + 1), dec);
            d->orcpt = dec;
        }
    }
    smtp_run_job(s, dsn_work, dsn_done, j);
}

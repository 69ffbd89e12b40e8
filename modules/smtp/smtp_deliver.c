/*
 * Delivery: RCPT checks (RFC 5321 section 4.1.1.3), DATA (4.1.1.4) and BDAT (RFC 3030) into the store.
 *
 * The message is spooled into the store as it arrives (save_begin at the start of the data, save_write
 * per SMTP_STAGE_SIZE bytes; never the whole message in memory), prefixed by Return-Path and a Received
 * header (RFC 5321 section 4.4). The reply to the end of data comes only after save_commit returned for
 * every recipient, from a job: that is when the copies are durable. User lookups and the commit run as
 * jobs (host->run_blocking), so one slow disk or database never stalls the loop.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "smtp.h"

#define smtp_error_reply(s, ...) \
    do { \
        smtp_reply((s), __VA_ARGS__); \
        (s)->host->error(s); \
    } while (0)

const char *smtp_canonical_user(apr_pool_t *pool, const char *local, size_t llen, const char *domain, size_t dlen)
{
    char *u = apr_palloc(pool, llen + dlen + 2);
    memcpy(u, local, llen);
    u[llen] = '@';
    for (size_t i = 0; i < dlen; i++)
        u[llen + 1 + i] = (char)apr_tolower(domain[i]);
    u[llen + 1 + dlen] = '\0';
    return u;
}

/* ---------------------------------------------------------------- RCPT */

typedef struct rcpt_job {
    smtp_txn *txn;
    const mp_store_iface *store_if;
    mp_store *store;
    const mp_auth_iface *auth_if;
    mp_auth *auth;
    const char *addr, *user, *notify, *orcpt;
    uint64_t declared_size;
    int lookup_rc, open_rc, full;
    mp_store_user *u;
} rcpt_job;

/* The RCPT checks: the user database, the user's store, and the mailbox's usage when the user has a limit.
   Returns 1 when j is answered (rcpt_done follows), 0 when it needs a job: with `nowait`, only what needs
   no I/O is done here, on the session's thread: the user database must answer from memory
   (lookup_nowait), and no usage may need counting. The store's user_open is then name lookups in a Maildir
   that normally exists (the dentry cache; a first delivery makes it: a few mkdirs, no fsync), the kind of
   work a large message's spool file already does on the loop. That spares a thread hand-off and two
   context switches per recipient. */
static int rcpt_check(rcpt_job *j, int nowait)
{
    mp_auth_user info;
    memset(&info, 0, sizeof info);
    j->lookup_rc = MP_AUTH_OK;
    int limited = 0;
    if (j->auth) {
        if (nowait && !j->auth_if->lookup_nowait)
            return 0;
        j->lookup_rc = nowait ? j->auth_if->lookup_nowait(j->auth, j->user, j->txn->pool, &info)
                              : j->auth_if->lookup(j->auth, j->user, j->txn->pool, &info);
        limited = j->lookup_rc == MP_AUTH_OK && (info.quota_bytes || info.quota_messages);
        if (nowait && (j->lookup_rc == MP_AUTH_AGAIN || limited))
            return 0;
        if (j->lookup_rc != MP_AUTH_OK)
            return 1;
        if (info.user && *info.user)
            j->user = info.user;
    }
    j->open_rc = j->store_if->user_open(j->store, j->user, 1, j->txn->pool, &j->u);
    if (j->open_rc != MP_STORE_OK) {
        j->u = NULL;
        return 1;
    }
    /* RFC 1870 / RFC 3463 X.2.2: refuse at RCPT time when the mailbox is already full. Only users with a
       limit are checked: counting a mailbox's usage reads its folders (the store checks again at commit). */
    if (!limited)
        return 1;
    if (j->store_if->set_quota_limits)
        j->store_if->set_quota_limits(j->u, info.quota_bytes, info.quota_messages);
    mp_quota q;
    memset(&q, 0, sizeof q);
    if (j->store_if->quota && j->store_if->quota(j->u, &q) == MP_STORE_OK) {
        uint64_t need = j->declared_size ? j->declared_size : 1;
        if ((q.bytes_limit && q.bytes + need > q.bytes_limit) ||
            (q.messages_limit && q.messages >= q.messages_limit))
            j->full = 1;
    }
    return 1;
}

static void rcpt_work(void *arg)
{
    rcpt_check(arg, 0);
}

static void rcpt_refused_log(mp_session *s, const char *addr, const char *why)
{
    smtp_session *ss = s->state;
    s->host->log(s, MP_LOG_NOTICE, 30020, "RCPT refused: from=<%s> to=<%s>: %s", ss->txn ? ss->txn->from : "",
                 addr, why);
}

static void rcpt_done(mp_session *s, void *arg, int closing)
{
    rcpt_job *j = arg;
    smtp_session *ss = s->state;
    if (closing || ss->txn != j->txn) {
        if (j->u && ss->store_if)
            ss->store_if->user_close(j->u);
        return;
    }
    ss->mode = SMTP_IN_COMMAND;
    smtp_txn *t = j->txn;
    if (j->lookup_rc == MP_AUTH_NOUSER || j->lookup_rc == MP_AUTH_FAIL) {
        rcpt_refused_log(s, j->addr, "unknown user");
        /* RFC 5321 section 4.2.2 / RFC 3463 X.1.1 */
        smtp_error_reply(s, "550 5.1.1 <%s>: Recipient address rejected: User unknown", j->addr);
        return;
    }
    if (j->lookup_rc != MP_AUTH_OK) {
        rcpt_refused_log(s, j->addr, "user database temporarily unavailable");
        smtp_reply(s, "451 4.3.0 <%s>: Temporary lookup failure", j->addr);
        return;
    }
    if (j->open_rc != MP_STORE_OK) {
        rcpt_refused_log(s, j->addr, "store refused the user");
        if (j->open_rc == MP_STORE_BADNAME)
            smtp_error_reply(s, "550 5.1.3 <%s>: Recipient address rejected: mailbox name not allowed", j->addr);
        else
            smtp_reply(s, "451 4.3.0 <%s>: Mailbox temporarily unavailable", j->addr);
        return;
    }
    if (j->full) {
        ss->store_if->user_close(j->u);
        rcpt_refused_log(s, j->addr, "over quota");
        smtp_reply(s, "452 4.2.2 <%s>: Mailbox full", j->addr); /* RFC 3463 X.2.2 */
        return;
    }
    /* One copy per user, however many addresses reach it (RFC 5321 section 3.3 lets us). */
    size_t target = (size_t)t->users->nelts;
    for (int i = 0; i < t->users->nelts; i++)
        if (strcmp(APR_ARRAY_IDX(t->users, i, const char *), j->user) == 0) {
            target = (size_t)i;
            break;
        }
    if (target == (size_t)t->users->nelts) {
        APR_ARRAY_PUSH(t->users, const char *) = j->user;
        mp_save_target *tg = apr_array_push(t->targets);
        memset(tg, 0, sizeof *tg);
        tg->user = j->u;
        tg->folder = "INBOX";
    } else {
        ss->store_if->user_close(j->u);
    }
    smtp_rcpt *r = apr_array_push(t->rcpts);
    r->addr = j->addr;
    r->user = j->user;
    r->target = target;
    r->notify = j->notify;
    r->orcpt = j->orcpt;
    smtp_reply(s, "250 2.1.5 Ok");
}

/* NOTIFY = "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ) (RFC 3461 section 4.1) */
static int notify_valid(smtp_slice v)
{
    if (smtp_slice_ieq(v, "NEVER"))
        return 1;
    size_t i = 0;
    unsigned seen = 0;
    while (i <= v.len) {
        size_t j = i;
        while (j < v.len && v.p[j] != ',')
            j++;
        smtp_slice w = {v.p + i, j - i};
        unsigned bit = smtp_slice_ieq(w, "SUCCESS") ? 1 : smtp_slice_ieq(w, "FAILURE") ? 2
                       : smtp_slice_ieq(w, "DELAY") ? 4 : 0;
        if (!bit || (seen & bit))
            return 0;
        seen |= bit;
        i = j + 1;
    }
    return 1;
}

/* ORCPT = addr-type ";" xtext (RFC 3461 section 4.2), at most 500 characters */
static int orcpt_valid(smtp_slice v, int utf8)
{
    const char *semi = memchr(v.p, ';', v.len);
    if (v.len > 500 || !semi || semi == v.p)
        return 0;
    for (const char *c = v.p; c < semi; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
            return 0;
    size_t rest = v.len - (size_t)(semi + 1 - v.p);
    if (rest == 0 || !smtp_xtext_valid(semi + 1, rest, utf8))
        return 0;
    /* RFC 3461 section 4.2: decoded, printable characters only (it goes into a DSN field as is) */
    char dec[501];
    return smtp_dsn_text_ok(dec, smtp_xtext_decode(semi + 1, rest, dec), utf8);
}

void smtp_cmd_rcpt(mp_session *s, const smtp_command *cmd)
{
    smtp_session *ss = s->state;
    smtp_txn *t = ss->txn;
    if (!t) {
        smtp_error_reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (t->data_kind) {
        smtp_error_reply(s, "503 5.5.1 Error: RCPT after BDAT");
        return;
    }
    t->rcpt_tries++;
    if ((unsigned)t->rcpts->nelts >= ss->conf.max_rcpts) {
        smtp_reply(s, "452 4.5.3 Error: too many recipients"); /* RFC 5321 section 4.5.3.1.10 */
        return;
    }
    /* Refused recipients cost memory in the transaction too (the address, the lookup): past this many
       attempts, every RCPT is an error, and MaxErrors ends a client that keeps trying. */
    if (t->rcpt_tries > ss->conf.max_rcpts + SMTP_RCPT_TRIES_SLACK) {
        smtp_error_reply(s, "452 4.5.3 Error: too many recipients tried");
        return;
    }
    smtp_envelope_arg ea;
    switch (smtp_parse_envelope(cmd->arg.p, cmd->arg.len, 1, &ea)) {
    case SMTP_PARSE_OK:
        break;
    case SMTP_PARSE_PATH_LONG:
        smtp_error_reply(s, "501 5.1.3 Recipient address too long");
        return;
    case SMTP_PARSE_BAD_UTF8:
        smtp_error_reply(s, "553 5.6.7 Invalid UTF-8 in the recipient address");
        return;
    case SMTP_PARSE_BAD_PATH:
        smtp_error_reply(s, "501 5.1.3 Bad recipient address syntax");
        return;
    default:
        smtp_error_reply(s, "501 5.5.4 Syntax error in RCPT parameters");
        return;
    }
    if (ea.nparams && !ss->esmtp) {
        smtp_error_reply(s, "555 5.5.4 RCPT parameters need EHLO");
        return;
    }
    smtp_slice notify = {NULL, 0}, orcpt = {NULL, 0};
    for (size_t i = 0; i < ea.nparams; i++) {
        const smtp_param *pm = &ea.params[i];
        if (smtp_slice_ieq(pm->key, "NOTIFY")) {
            if (notify.p || !pm->has_value || !notify_valid(pm->value)) {
                smtp_error_reply(s, "501 5.5.4 Bad NOTIFY parameter");
                return;
            }
            notify = pm->value;
        } else if (smtp_slice_ieq(pm->key, "ORCPT")) {
            if (orcpt.p || !pm->has_value || !orcpt_valid(pm->value, t->smtputf8)) {
                smtp_error_reply(s, "501 5.5.4 Bad ORCPT parameter");
                return;
            }
            orcpt = pm->value;
        } else {
            smtp_error_reply(s, "555 5.5.4 Unsupported parameter %.*s", (int)(pm->key.len > 40 ? 40 : pm->key.len),
                             pm->key.p);
            return;
        }
    }
    const char *addr = apr_pstrmemdup(t->pool, ea.path.mailbox.p, ea.path.mailbox.len);
    if (ea.path.utf8 && !t->smtputf8) {
        smtp_error_reply(s, "553 5.6.7 <%s>: Non-ASCII recipient address needs SMTPUTF8", addr); /* RFC 6531 3.4 */
        return;
    }
    const char *user;
    if (ea.path.postmaster) {
        /* RFC 5321 section 4.5.1: <Postmaster> is postmaster of our first domain */
        if (ss->conf.local_domains->nelts == 0) {
            smtp_error_reply(s, "550 5.1.1 <Postmaster>: no local domain configured");
            return;
        }
        const char *d = APR_ARRAY_IDX(ss->conf.local_domains, 0, const char *);
        user = smtp_canonical_user(t->pool, "postmaster", 10, d, strlen(d));
        addr = user; /* a full address in the trace and in DSNs (RFC 3464 section 2.3.2) */
    } else if (ea.path.literal || !smtp_is_local_domain(ss, ea.path.domain.p, ea.path.domain.len)) {
        if (ss->conf.role == SMTP_ROLE_LMTP) {
            rcpt_refused_log(s, addr, "domain not local");
            smtp_error_reply(s, "550 5.1.2 <%s>: Recipient domain not handled here", addr);
        } else if (ss->auth_user) {
            /* No outbound queue exists yet: say so, temporarily, so that the client keeps the message. */
            rcpt_refused_log(s, addr, "outbound relay not available");
            smtp_reply(s, "451 4.3.0 <%s>: Outbound relay is not available yet, try again later", addr);
        } else {
            rcpt_refused_log(s, addr, "relay denied");
            smtp_error_reply(s, "550 5.7.1 <%s>: Relay access denied", addr); /* RFC 3463 X.7.1 */
        }
        return;
    } else {
        user = smtp_canonical_user(t->pool, ea.path.local.p, ea.path.local.len, ea.path.domain.p, ea.path.domain.len);
    }
    smtp_providers(s);
    if (!ss->store) {
        rcpt_refused_log(s, addr, "no mail store");
        smtp_reply(s, "451 4.3.0 <%s>: Mail store not available", addr);
        return;
    }
    rcpt_job *j = apr_pcalloc(t->pool, sizeof *j);
    j->txn = t;
    j->store_if = ss->store_if;
    j->store = ss->store;
    j->auth_if = ss->auth_if;
    j->auth = ss->auth;
    j->addr = addr;
    j->user = user;
    j->notify = notify.p ? apr_pstrmemdup(t->pool, notify.p, notify.len) : NULL;
    j->orcpt = orcpt.p ? apr_pstrmemdup(t->pool, orcpt.p, orcpt.len) : NULL;
    j->declared_size = t->declared_size;
    if (rcpt_check(j, 1))
        rcpt_done(s, j, 0);
    else
        smtp_run_job(s, rcpt_work, rcpt_done, j);
}

/* ---------------------------------------------------------------- spooling */

static void stage_flush(mp_session *s)
{
    smtp_session *ss = s->state;
    smtp_txn *t = ss->txn;
    if (t->stage_len && t->save && !t->failed &&
        ss->store_if->save_write(t->save, t->stage, t->stage_len) != MP_STORE_OK) {
        s->host->log(s, MP_LOG_WARN, 30040, "store write failed for message %s", t->id);
        t->failed = 1;
    }
    t->stage_len = 0;
}

static void stage_put(mp_session *s, const char *b, size_t n)
{
    smtp_txn *t = ((smtp_session *)s->state)->txn;
    while (n) {
        if (t->stage_len == SMTP_STAGE_SIZE)
            stage_flush(s);
        size_t room = SMTP_STAGE_SIZE - t->stage_len;
        size_t k = n < room ? n : room;
        memcpy(t->stage + t->stage_len, b, k);
        t->stage_len += k;
        b += k;
        n -= k;
    }
}

/* Once the message is known to be refused, the spool goes at once: nothing half-stored remains. */
static void spool_check(mp_session *s)
{
    smtp_session *ss = s->state;
    smtp_txn *t = ss->txn;
    if ((t->dm.bare || t->oversize || t->failed) && t->save) {
        ss->store_if->save_abort(t->save);
        t->save = NULL;
        t->stage_len = 0;
    }
}

static void data_out(void *arg, const char *bytes, size_t len)
{
    mp_session *s = arg;
    smtp_session *ss = s->state;
    smtp_txn *t = ss->txn;
    t->size += len;
    if (t->size > ss->conf.max_size)
        t->oversize = 1; /* RFC 1870 section 6.2: keep reading, refuse at the end */
    if (t->save && !t->oversize && !t->dm.bare && !t->failed)
        stage_put(s, bytes, len);
    if (t->hdrs && !t->hdrs_done)
        smtp_dsn_header(t, bytes, len);
}

static const char *const wday[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const month[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void smtp_date(char *buf, size_t size, apr_time_t when)
{
    apr_time_exp_t tm;
    apr_time_exp_gmt(&tm, when);
    snprintf(buf, size, "%s, %02d %s %04d %02d:%02d:%02d +0000", wday[tm.tm_wday], tm.tm_mday, month[tm.tm_mon],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* RFC 5321 section 4.4 / RFC 3848 / RFC 6531 section 3.7.3: the WITH protocol type. */
static const char *with_protocol(mp_session *s)
{
    smtp_session *ss = s->state;
    static const char *const names[2][2][2][2] = {
        /* [utf8][esmtp][tls][auth] */
        {{{"SMTP", "SMTP"}, {"SMTPS", "SMTPS"}}, {{"ESMTP", "ESMTPA"}, {"ESMTPS", "ESMTPSA"}}},
        {{{"UTF8SMTP", "UTF8SMTPA"}, {"UTF8SMTPS", "UTF8SMTPSA"}}, {{"UTF8SMTP", "UTF8SMTPA"}, {"UTF8SMTPS", "UTF8SMTPSA"}}},
    };
    static const char *const lmtp[2][2][2] = {
        {{"LMTP", "LMTPA"}, {"LMTPS", "LMTPSA"}}, {{"UTF8LMTP", "UTF8LMTPA"}, {"UTF8LMTPS", "UTF8LMTPSA"}}};
    int utf8 = ss->txn->smtputf8 != 0, tls = s->tls_active != 0, auth = ss->auth_user != NULL;
    if (SMTP_LMTP)
        return lmtp[utf8][tls][auth];
    return names[utf8][ss->esmtp != 0][tls][auth];
}

/* Return-Path (RFC 5321 section 4.4, added at delivery) and Received (section 4.4, Time-stamp-line). */
static void write_trace_headers(mp_session *s)
{
    smtp_session *ss = s->state;
    smtp_txn *t = ss->txn;
    char buf[1536];
    int n = snprintf(buf, sizeof buf, "Return-Path: <%s>\r\n", t->from);
    if (n > 0 && (size_t)n < sizeof buf)
        stage_put(s, buf, (size_t)n);

    const char *v6 = strchr(s->peer_addr, ':') ? "IPv6:" : "";
    mp_tls_info ti;
    memset(&ti, 0, sizeof ti);
    s->host->tls_info(s, &ti);
    char tls[256] = "";
    if (ti.active)
        snprintf(tls, sizeof tls, "\r\n\t(using %s with cipher %s (%d bits))", ti.version ? ti.version : "TLS",
                 ti.cipher ? ti.cipher : "unknown", ti.bits);
    char forc[600] = "";
    if (t->rcpts->nelts == 1)
        snprintf(forc, sizeof forc, "\r\n\tfor <%s>", APR_ARRAY_IDX(t->rcpts, 0, smtp_rcpt).addr);
    char date[40];
    smtp_date(date, sizeof date, t->arrival);
    /* A UTF-8 EHLO name stays out of a message that is not SMTPUTF8: its address literal stands in
       (RFC 5321 section 4.4: a domain or an address literal) */
    char lit[80];
    const char *from = ss->helo;
    for (const char *c = from; !t->smtputf8 && *c; c++)
        if ((unsigned char)*c >= 0x80) {
            snprintf(lit, sizeof lit, "[%s%s]", v6, s->peer_addr);
            from = lit;
            break;
        }
    n = snprintf(buf, sizeof buf,
                 "Received: from %s ([%s%s])\r\n\tby %s (mailproto) with %s id %s%s%s;\r\n\t%s\r\n",
                 from, v6, s->peer_addr, ss->conf.server_name, with_protocol(s), t->id, tls, forc, date);
    if (n > 0 && (size_t)n < sizeof buf)
        stage_put(s, buf, (size_t)n);
}

/* Opens the spool in the first recipient's store (RFC 5321 section 4.1.1.4). Returns 0 or -1. */
static int data_begin(mp_session *s, int kind)
{
    smtp_session *ss = s->state;
    smtp_txn *t = ss->txn;
    mp_save_target *first = &APR_ARRAY_IDX(t->targets, 0, mp_save_target);
    t->arrival = apr_time_now();
    snprintf(t->id, sizeof t->id, "%llXS%llXM%X", (unsigned long long)t->arrival, (unsigned long long)s->id,
             ++ss->messages);
    if (ss->store_if->save_begin(first->user, "INBOX", t->pool, &t->save) != MP_STORE_OK) {
        t->save = NULL;
        s->host->log(s, MP_LOG_WARN, 30041, "store: cannot begin message %s for %s", t->id,
                     APR_ARRAY_IDX(t->users, 0, const char *));
        return -1;
    }
    t->data_kind = kind;
    t->stage = apr_palloc(t->pool, SMTP_STAGE_SIZE);
    t->stage_len = 0;
    if (smtp_dsn_wanted(s)) {
        t->hdrs = apr_palloc(t->pool, SMTP_DSN_HEADERS_MAX);
        t->hdrs_bol = 1;
    }
    smtp_data_init(&t->dm);
    write_trace_headers(s);
    return 0;
}

/* ---------------------------------------------------------------- the end of the data */

static const char *tls_text(mp_session *s)
{
    mp_tls_info ti;
    memset(&ti, 0, sizeof ti);
    s->host->tls_info(s, &ti);
    if (!ti.active)
        return "none";
    return apr_psprintf(((smtp_session *)s->state)->txn->pool, "%s/%s", ti.version ? ti.version : "?",
                        ti.cipher ? ti.cipher : "?");
}

/* One pass: the list may hold MaxRecipients addresses, each with a 500-octet ORCPT. */
static const char *rcpt_list(smtp_txn *t, int with_dsn)
{
    apr_array_header_t *parts = apr_array_make(t->pool, t->rcpts->nelts * 2 + 1, sizeof(const char *));
    for (int i = 0; i < t->rcpts->nelts; i++) {
        const smtp_rcpt *r = &APR_ARRAY_IDX(t->rcpts, i, smtp_rcpt);
        APR_ARRAY_PUSH(parts, const char *) = apr_pstrcat(t->pool, i ? "," : "", "<", r->addr, ">", NULL);
        if (with_dsn && (r->notify || r->orcpt))
            APR_ARRAY_PUSH(parts, const char *) = apr_pstrcat(t->pool, "(notify=", r->notify ? r->notify : "-",
                                                              " orcpt=", r->orcpt ? r->orcpt : "-", ")", NULL);
    }
    return apr_array_pstrcat(t->pool, parts, 0);
}

/* The same answer for the whole message: one reply, or in LMTP one per recipient (RFC 2033 4.2). */
static void reply_all(mp_session *s, const char *code, const char *text, int per_rcpt)
{
    smtp_session *ss = s->state;
    smtp_txn *t = ss->txn;
    if (SMTP_LMTP && per_rcpt) {
        for (int i = 0; i < t->rcpts->nelts; i++)
            smtp_reply(s, "%s <%s>: %s", code, APR_ARRAY_IDX(t->rcpts, i, smtp_rcpt).addr, text);
    } else {
        smtp_reply(s, "%s %s", code, text);
    }
}

/* Refuses the message at the end of its data (or of a failed chunk) and ends the transaction. */
static void refuse_message(mp_session *s, const char *code, const char *text, const char *why, int per_rcpt)
{
    smtp_session *ss = s->state;
    smtp_txn *t = ss->txn;
    s->host->log(s, MP_LOG_NOTICE, 30011, "message refused: %s: id=%s from=<%s> to=%s size=%llu", why, t->id,
                 t->from, rcpt_list(t, 0), (unsigned long long)t->size);
    reply_all(s, code, text, per_rcpt);
    if (code[0] == '5')
        s->host->error(s);
    smtp_txn_reset(s);
}

typedef struct commit_job {
    smtp_txn *txn;
    const mp_store_iface *store_if;
    mp_save *save;
    mp_save_meta meta;
    int rc;
} commit_job;

static void commit_work(void *arg)
{
    commit_job *j = arg;
    mp_save_target *targets = (mp_save_target *)j->txn->targets->elts;
    j->rc = j->store_if->save_commit(j->save, &j->meta, targets, (size_t)j->txn->targets->nelts);
}

static void commit_done(mp_session *s, void *arg, int closing)
{
    commit_job *j = arg;
    smtp_session *ss = s->state;
    smtp_txn *t = j->txn;
    int ok = 0, full = 0, failed = 0;
    for (int i = 0; i < t->targets->nelts; i++) {
        int r = APR_ARRAY_IDX(t->targets, i, mp_save_target).result;
        if (j->rc != MP_STORE_OK && r == MP_STORE_OK)
            r = j->rc; /* a provider that failed as a whole */
        if (r == MP_STORE_OK)
            ok++;
        else if (r == MP_STORE_OVERQUOTA)
            full++;
        else
            failed++;
    }
    if (ok)
        s->host->log(s, MP_LOG_NOTICE, 30010,
                     "message accepted: id=%s from=<%s> to=%s size=%llu tls=%s body=%s smtputf8=%s ret=%s envid=%s%s",
                     t->id, t->from, rcpt_list(t, 1), (unsigned long long)t->size, tls_text(s),
                     t->body ? t->body : "-", t->smtputf8 ? "yes" : "no", t->ret ? t->ret : "-",
                     t->envid ? t->envid : "-", full + failed ? " (some recipients failed)" : "");
    if (full + failed)
        s->host->log(s, MP_LOG_WARN, 30042, "store: message %s not stored for %d of %d users", t->id, full + failed,
                     t->targets->nelts);
    if (!closing) {
        ss->mode = SMTP_IN_COMMAND;
        if (SMTP_LMTP) {
            /* RFC 2033 section 4.2: one reply per accepted RCPT, in order */
            for (int i = 0; i < t->rcpts->nelts; i++) {
                const smtp_rcpt *r = &APR_ARRAY_IDX(t->rcpts, i, smtp_rcpt);
                int res = APR_ARRAY_IDX(t->targets, r->target, mp_save_target).result;
                if (j->rc != MP_STORE_OK && res == MP_STORE_OK)
                    res = j->rc;
                if (res == MP_STORE_OK)
                    smtp_reply(s, "250 2.0.0 <%s> Ok: stored as %s", r->addr, t->id);
                else if (res == MP_STORE_OVERQUOTA)
                    smtp_reply(s, "452 4.2.2 <%s> Mailbox full", r->addr);
                else
                    smtp_reply(s, "451 4.3.0 <%s> Error: local error in processing", r->addr);
            }
        } else if (!full && !failed) {
            smtp_reply(s, "250 2.0.0 Ok: stored as %s", t->id);
            /* Only now, and only after the reply: the DSN never delays or changes it (smtp_dsn.c). */
            smtp_dsn_delivered(s, 0);
        } else if (!ok && !failed) {
            smtp_reply(s, "452 4.2.2 Mailbox full");
        } else {
            /* Some copies may be stored: a retry may duplicate them, which beats losing the others. */
            smtp_reply(s, "451 4.3.0 Error: local error in processing");
        }
    } else if (!full && !failed) {
        smtp_dsn_delivered(s, 1); /* the client left before the 250: only logged */
    }
    smtp_txn_reset(s);
}

static void data_end(mp_session *s)
{
    smtp_session *ss = s->state;
    smtp_txn *t = ss->txn;
    ss->mode = SMTP_IN_COMMAND;
    if (t->save && !t->dm.bare && !t->oversize)
        stage_flush(s);
    spool_check(s);
    if (t->dm.bare) {
        /* RFC 5321 section 2.3.8: CR and LF only as CRLF; never stored (the smuggling class) */
        refuse_message(s, "554 5.6.0", "Message contains bare CR or LF characters", "bare CR/LF", 1);
        return;
    }
    if (t->oversize) {
        refuse_message(s, "552 5.3.4", "Message size exceeds fixed maximum message size", "too big", 1);
        return;
    }
    if (t->failed || !t->save) {
        refuse_message(s, "451 4.3.0", "Error: local error in processing", "store failure", 1);
        return;
    }
    commit_job *j = apr_pcalloc(t->pool, sizeof *j);
    j->txn = t;
    j->store_if = ss->store_if;
    j->save = t->save;
    j->meta.delivery = 1; /* new mail: UIDs come when a reader syncs, no index lock (store.h) */
    t->save = NULL; /* save_commit consumes it */
    smtp_run_job(s, commit_work, commit_done, j);
}

/* ---------------------------------------------------------------- DATA (4.1.1.4) */

/* 0 when a message may begin; else the refusal has been written. */
static int data_allowed(mp_session *s, const char **code_text)
{
    smtp_session *ss = s->state;
    smtp_txn *t = ss->txn;
    if (!t) {
        *code_text = "503 5.5.1 Error: need MAIL command";
        return -1;
    }
    if (t->rcpts->nelts == 0) {
        /* RFC 5321 section 3.3: 503 or 554; RFC 2033 section 4.2 wants 503 */
        *code_text = t->rcpt_tries && !SMTP_LMTP ? "554 5.5.1 Error: no valid recipients"
                                                 : "503 5.5.1 Error: need RCPT command";
        return -1;
    }
    return 0;
}

void smtp_cmd_data(mp_session *s)
{
    smtp_session *ss = s->state;
    const char *refusal;
    if (data_allowed(s, &refusal) < 0) {
        smtp_error_reply(s, "%s", refusal);
        return;
    }
    if (ss->txn->data_kind) {
        smtp_error_reply(s, "503 5.5.1 Error: DATA after BDAT"); /* RFC 3030 section 2 */
        return;
    }
    if (data_begin(s, 1) < 0) {
        smtp_reply(s, "451 4.3.0 Error: local error in processing");
        smtp_txn_reset(s);
        return;
    }
    ss->mode = SMTP_IN_DATA;
    s->host->printf(s, "354 End data with <CR><LF>.<CR><LF>\r\n"); /* no enhanced code on 3xx */
}

size_t smtp_data_input(mp_session *s, const char *data, size_t len)
{
    smtp_session *ss = s->state;
    int done;
    size_t n = smtp_data_feed(&ss->txn->dm, data, len, data_out, s, &done);
    spool_check(s);
    if (done)
        data_end(s);
    return n;
}

/* ---------------------------------------------------------------- BDAT (RFC 3030) */

static void bdat_refuse_chunk(smtp_session *ss, const char *reply, int reset)
{
    ss->bdat_discard = 1;
    ss->bdat_reply = reply;
    ss->bdat_reset = reset;
}

static void bdat_chunk_done(mp_session *s)
{
    smtp_session *ss = s->state;
    ss->mode = SMTP_IN_COMMAND;
    if (ss->bdat_discard) {
        /* RFC 3030 section 2: the chunk is read and dropped whatever went wrong, then the error */
        ss->bdat_discard = 0;
        if (ss->bdat_reset && ss->txn)
            refuse_message(s, apr_pstrndup(ss->txn->pool, ss->bdat_reply, 9), ss->bdat_reply + 10,
                           "BDAT chunk refused", ss->bdat_last);
        else
            smtp_error_reply(s, "%s", ss->bdat_reply);
        return;
    }
    smtp_txn *t = ss->txn;
    if (ss->bdat_last) {
        smtp_bdat_finish(&t->dm);
        data_end(s);
        return;
    }
    spool_check(s);
    smtp_reply(s, "250 2.0.0 Ok: %llu octets received", (unsigned long long)t->size);
}

void smtp_cmd_bdat(mp_session *s, const smtp_command *cmd)
{
    smtp_session *ss = s->state;
    /* bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CR LF (RFC 3030 section 3) */
    const char *p = cmd->arg.p;
    size_t n = cmd->arg.len, digits = 0;
    while (digits < n && p[digits] >= '0' && p[digits] <= '9')
        digits++;
    uint64_t size;
    int last = 0;
    if (!cmd->has_arg || digits == 0 || smtp_parse_size(p, digits, &size) < 0) {
        smtp_error_reply(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]");
        return;
    }
    int syntax_ok = digits == n || (n - digits == 5 && p[digits] == ' ' && strncasecmp(p + digits + 1, "LAST", 4) == 0);
    last = syntax_ok && digits != n;
    ss->bdat_left = size;
    ss->bdat_last = last;
    ss->bdat_discard = 0;
    ss->bdat_reset = 0;
    smtp_txn *t = ss->txn;
    const char *refusal;
    if (!syntax_ok) {
        /* The size was readable: those octets are the chunk, read and dropped like any refused chunk,
           never taken as commands. */
        bdat_refuse_chunk(ss, "501 5.5.4 Syntax: BDAT chunk-size [LAST]", 0);
    } else if (s->listener->tls == MP_TLS_REQUIRED && !s->tls_active) {
        bdat_refuse_chunk(ss, "530 5.7.0 Must issue a STARTTLS command first", 0);
    } else if (data_allowed(s, &refusal) < 0) {
        bdat_refuse_chunk(ss, refusal, 0);
    } else if (t->data_kind == 1) {
        bdat_refuse_chunk(ss, "503 5.5.1 Error: BDAT after DATA", 0);
    } else if (t->size + size > ss->conf.max_size || size > ss->conf.max_size) {
        /* RFC 3030 section 4 and RFC 1870: refused once the chunk is read; the transaction is over */
        bdat_refuse_chunk(ss, "552 5.3.4 Message size exceeds fixed maximum message size", 1);
    } else if (!t->data_kind && data_begin(s, 2) < 0) {
        bdat_refuse_chunk(ss, "451 4.3.0 Error: local error in processing", 1);
    }
    ss->mode = SMTP_IN_BDAT;
    if (size == 0)
        bdat_chunk_done(s);
}

size_t smtp_bdat_input(mp_session *s, const char *data, size_t len)
{
    smtp_session *ss = s->state;
    size_t n = len < ss->bdat_left ? len : (size_t)ss->bdat_left;
    if (!ss->bdat_discard) {
        smtp_txn *t = ss->txn;
        smtp_bdat_check(&t->dm, data, n);
        data_out(s, data, n);
        spool_check(s);
    }
    ss->bdat_left -= n;
    if (ss->bdat_left == 0)
        bdat_chunk_done(s);
    return n;
}

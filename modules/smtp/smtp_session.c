/*
 * The SMTP session (RFC 5321), also LMTP's (RFC 2033): the greeting, the input framing, the commands that
 * need no storage, STARTTLS (RFC 3207) and the host's goodbyes. Reads top to bottom as RFC 5321 section
 * 4.1 does. Every 2xx/4xx/5xx reply carries an enhanced status code (RFC 2034, RFC 3463), except the
 * greeting and the HELO/EHLO/LHLO replies, which RFC 2034 section 3 exempts.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <apr_network_io.h>
#include <apr_lib.h>
#include <apr_strings.h>

#include "smtp.h"

/* ---------------------------------------------------------------- replies */

void smtp_reply(mp_session *s, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof buf - 3)
        n = (int)sizeof buf - 3; /* RFC 5321 section 4.5.3.1.5: replies stay short */
    buf[n++] = '\r';
    buf[n++] = '\n';
    s->host->write(s, buf, (size_t)n);
}

/* A reply that also counts as a protocol error towards MaxErrors. */
#define smtp_error_reply(s, ...) \
    do { \
        smtp_reply((s), __VA_ARGS__); \
        (s)->host->error(s); \
    } while (0)

/* ---------------------------------------------------------------- configuration */

static const char *server_name(mp_session *s)
{
    const char *name = s->host->config(s, "ServerName");
    if (name && *name)
        return name;
    char host[256];
    if (apr_gethostname(host, sizeof host, s->pool) == APR_SUCCESS)
        return apr_pstrdup(s->pool, host);
    return "localhost";
}

static void load_conf(mp_session *s, smtp_conf *c)
{
    const mp_host *h = s->host;
    c->server_name = server_name(s);
    c->max_size = SMTP_DEFAULT_MAX_SIZE;
    const char *v = h->config(s, "MaxMessageSize");
    uint64_t size;
    if (v && smtp_parse_bytes(v, &size) == 0 && size > 0)
        c->max_size = size;
    c->max_rcpts = SMTP_DEFAULT_MAX_RCPTS;
    if ((v = h->config(s, "MaxRecipients")) != NULL && apr_atoi64(v) > 0)
        c->max_rcpts = (unsigned)apr_atoi64(v);
#if SMTP_LMTP
    c->role = SMTP_ROLE_LMTP;
#else
    v = h->config(s, "Submission");
    c->role = v && strcasecmp(v, "on") == 0 ? SMTP_ROLE_SUBMISSION : SMTP_ROLE_MX;
#endif
    c->local_domains = apr_array_make(s->pool, 4, sizeof(const char *));
    if ((v = h->config(s, "LocalDomains")) != NULL) {
        char *last, *list = apr_pstrdup(s->pool, v);
        for (char *d = apr_strtok(list, " ,\t", &last); d; d = apr_strtok(NULL, " ,\t", &last)) {
            for (char *p = d; *p; p++)
                *p = (char)apr_tolower(*p);
            APR_ARRAY_PUSH(c->local_domains, const char *) = d;
        }
    }
}

int smtp_is_local_domain(const smtp_session *ss, const char *domain, size_t len)
{
    for (int i = 0; i < ss->conf.local_domains->nelts; i++) {
        const char *d = APR_ARRAY_IDX(ss->conf.local_domains, i, const char *);
        if (strlen(d) == len && strncasecmp(d, domain, len) == 0)
            return 1;
    }
    return 0;
}

void smtp_providers(mp_session *s)
{
    smtp_session *ss = s->state;
    if (ss->providers_done)
        return;
    ss->providers_done = 1;
    ss->store = smtp_instance(s, "store", "MailStore", MP_STORE_IFACE_VERSION, (const void **)&ss->store_if);
    /* LMTP too: its recipients are checked against the user database */
    ss->auth = smtp_instance(s, "auth", "UserDB", MP_AUTH_IFACE_VERSION, (const void **)&ss->auth_if);
}

/* ---------------------------------------------------------------- transactions and jobs */

void smtp_txn_reset(mp_session *s)
{
    smtp_session *ss = s->state;
    smtp_txn *t = ss->txn;
    if (!t)
        return;
    if (t->save && ss->store_if)
        ss->store_if->save_abort(t->save);
    t->save = NULL;
    if (ss->store_if)
        for (int i = 0; i < t->targets->nelts; i++) {
            mp_save_target *tg = &APR_ARRAY_IDX(t->targets, i, mp_save_target);
            if (tg->user)
                ss->store_if->user_close(tg->user);
            tg->user = NULL;
        }
    ss->txn = NULL;
    apr_pool_clear(ss->txn_pool);
}

void smtp_run_job(mp_session *s, mp_work_fn work, mp_done_fn done, void *arg)
{
    smtp_session *ss = s->state;
    ss->mode = SMTP_IN_WAIT;
    if (s->host->run_blocking(s, work, done, arg) != MP_OK) {
        /* A host without workers: do it here, on the session's thread. */
        work(arg);
        done(s, arg, 0);
    }
}

/* ---------------------------------------------------------------- greeting (RFC 5321 section 4.3.1) */

static int smtp_connect(mp_session *s)
{
    smtp_session *ss = s->state;
    load_conf(s, &ss->conf);
    if (apr_pool_create(&ss->txn_pool, s->pool) != APR_SUCCESS)
        return -1;
    ss->mode = SMTP_IN_COMMAND;
    s->host->log(s, MP_LOG_DEBUG, 30001, "%s session on %s (%s)", SMTP_PROTO_NAME, s->listener->address,
                 ss->conf.role == SMTP_ROLE_SUBMISSION ? "submission" : ss->conf.role == SMTP_ROLE_LMTP ? "lmtp" : "mx");
    /* No enhanced status code in the greeting (RFC 2034 section 3). */
    return s->host->printf(s, "220 %s %s mailproto\r\n", ss->conf.server_name, SMTP_LMTP ? "LMTP" : "ESMTP");
}

/* ---------------------------------------------------------------- EHLO / HELO / LHLO (4.1.1.1) */

static int helo_arg_ok(mp_session *s, const smtp_command *cmd, const char *verb)
{
    if (!cmd->has_arg || cmd->arg.len == 0) {
        smtp_error_reply(s, "501 5.5.4 Syntax: %s hostname", verb);
        return 0;
    }
    if (!smtp_helo_valid(cmd->arg.p, cmd->arg.len)) {
        smtp_error_reply(s, "501 5.5.4 Invalid domain name in %s", verb);
        return 0;
    }
    return 1;
}

static void set_helo(mp_session *s, const smtp_command *cmd, int esmtp)
{
    smtp_session *ss = s->state;
    smtp_txn_reset(s); /* RFC 5321 section 4.1.4: EHLO resets the state like RSET */
    size_t n = cmd->arg.len < sizeof ss->helo - 1 ? cmd->arg.len : sizeof ss->helo - 1;
    memcpy(ss->helo, cmd->arg.p, n);
    ss->helo[n] = '\0';
    ss->esmtp = esmtp;
}

static void cmd_ehlo(mp_session *s, const smtp_command *cmd)
{
    smtp_session *ss = s->state;
    const char *verb = SMTP_LMTP ? "LHLO" : "EHLO";
    if (!helo_arg_ok(s, cmd, verb))
        return;
    set_helo(s, cmd, 1);
    const mp_host *h = s->host;
    h->printf(s, "250-%s Hello %s [%s]\r\n", ss->conf.server_name, ss->helo, s->peer_addr);
    h->printf(s, "250-PIPELINING\r\n");                                  /* RFC 2920 */
    h->printf(s, "250-SIZE %llu\r\n", (unsigned long long)ss->conf.max_size); /* RFC 1870 */
    /* the rest: keyword and argument; the last line says "250 " */
    const char *ext[8][2];
    size_t n = 0;
    ext[n][0] = "8BITMIME", ext[n++][1] = "";                             /* RFC 6152 */
    ext[n][0] = "ENHANCEDSTATUSCODES", ext[n++][1] = "";                  /* RFC 2034 */
    ext[n][0] = "SMTPUTF8", ext[n++][1] = "";                             /* RFC 6531 */
    ext[n][0] = "CHUNKING", ext[n++][1] = "";                             /* RFC 3030 */
    if ((s->listener->tls == MP_TLS_STARTTLS || s->listener->tls == MP_TLS_REQUIRED) && !s->tls_active)
        ext[n][0] = "STARTTLS", ext[n++][1] = "";                         /* RFC 3207 */
    const char *mechs = smtp_auth_mechanisms(s);
    if (mechs)
        ext[n][0] = "AUTH ", ext[n++][1] = mechs;                         /* RFC 4954 */
    /* RFC 3461. SMTP is the final delivery MTA and reports "delivered" itself (smtp_dsn.c). LMTP does not
       announce DSN, so that the MTA in front of it reports success through its own queue (smtp_dsn.c says
       why: RFC 3461 section 5.2.2 and Postfix's LMTP client). */
    if (!SMTP_LMTP)
        ext[n][0] = "DSN", ext[n++][1] = "";
    for (size_t i = 0; i < n; i++)
        h->printf(s, "250%c%s%s\r\n", i + 1 < n ? '-' : ' ', ext[i][0], ext[i][1]);
}

static void cmd_helo(mp_session *s, const smtp_command *cmd)
{
    smtp_session *ss = s->state;
    if (!helo_arg_ok(s, cmd, "HELO"))
        return;
    set_helo(s, cmd, 0);
    smtp_reply(s, "250 %s", ss->conf.server_name);
}

/* ---------------------------------------------------------------- MAIL (4.1.1.2) */

/* 1 when the authenticated user owns `mailbox` (the same address, the domain in any case), or it is <>. */
static int sender_owned(mp_session *s, const smtp_path *p)
{
    smtp_session *ss = s->state;
    if (p->null_path)
        return 1;
    const char *at = strrchr(ss->auth_user, '@');
    if (!at)
        return 0;
    size_t ulocal = (size_t)(at - ss->auth_user);
    return ulocal == p->local.len && memcmp(ss->auth_user, p->local.p, ulocal) == 0 &&
           strlen(at + 1) == p->domain.len && strncasecmp(at + 1, p->domain.p, p->domain.len) == 0;
}

static void cmd_mail(mp_session *s, const smtp_command *cmd)
{
    smtp_session *ss = s->state;
    if (!ss->helo[0]) {
        smtp_error_reply(s, "503 5.5.1 Error: send %s first", SMTP_LMTP ? "LHLO" : "HELO/EHLO");
        return;
    }
    if (ss->txn) {
        smtp_error_reply(s, "503 5.5.1 Error: nested MAIL command");
        return;
    }
    if (ss->conf.role == SMTP_ROLE_SUBMISSION && !ss->auth_user) {
        smtp_error_reply(s, "530 5.7.0 Authentication required");
        return;
    }
    smtp_envelope_arg ea;
    switch (smtp_parse_envelope(cmd->arg.p, cmd->arg.len, 0, &ea)) {
    case SMTP_PARSE_OK:
        break;
    case SMTP_PARSE_PATH_LONG:
        smtp_error_reply(s, "501 5.1.7 Sender address too long");
        return;
    case SMTP_PARSE_BAD_UTF8:
        smtp_error_reply(s, "553 5.6.7 Invalid UTF-8 in the sender address");
        return;
    case SMTP_PARSE_BAD_PATH:
        smtp_error_reply(s, "501 5.1.7 Bad sender address syntax");
        return;
    default:
        smtp_error_reply(s, "501 5.5.4 Syntax error in MAIL parameters");
        return;
    }
    if (ea.nparams && !ss->esmtp) {
        smtp_error_reply(s, "555 5.5.4 MAIL parameters need EHLO"); /* RFC 5321 section 4.1.1.11 */
        return;
    }
    uint64_t size = 0;
    const char *body = NULL, *ret = NULL;
    smtp_slice envid = {NULL, 0};
    int utf8 = 0;
    unsigned seen = 0;
    for (size_t i = 0; i < ea.nparams; i++) {
        const smtp_param *pm = &ea.params[i];
        unsigned bit;
        if (smtp_slice_ieq(pm->key, "SIZE")) {
            bit = 1; /* RFC 1870 section 4 */
            if (!pm->has_value || smtp_parse_size(pm->value.p, pm->value.len, &size) < 0) {
                smtp_error_reply(s, "501 5.5.4 Bad SIZE parameter");
                return;
            }
        } else if (smtp_slice_ieq(pm->key, "BODY")) {
            bit = 2; /* RFC 6152 section 3 (BINARYMIME is not offered) */
            if (smtp_slice_ieq(pm->value, "7BIT"))
                body = "7BIT";
            else if (smtp_slice_ieq(pm->value, "8BITMIME"))
                body = "8BITMIME";
            else {
                smtp_error_reply(s, "501 5.5.4 Unsupported BODY type");
                return;
            }
        } else if (smtp_slice_ieq(pm->key, "SMTPUTF8")) {
            bit = 4; /* RFC 6531 section 3.4: no value */
            if (pm->has_value) {
                smtp_error_reply(s, "501 5.5.4 SMTPUTF8 takes no value");
                return;
            }
            utf8 = 1;
        } else if (smtp_slice_ieq(pm->key, "RET")) {
            bit = 8; /* RFC 3461 section 4.3 */
            if (smtp_slice_ieq(pm->value, "FULL"))
                ret = "FULL";
            else if (smtp_slice_ieq(pm->value, "HDRS"))
                ret = "HDRS";
            else {
                smtp_error_reply(s, "501 5.5.4 Bad RET parameter");
                return;
            }
        } else if (smtp_slice_ieq(pm->key, "ENVID")) {
            bit = 16; /* RFC 3461 section 4.4: xtext, at most 100 characters, printable US-ASCII decoded */
            char dec[101];
            if (!pm->has_value || pm->value.len > 100 || !smtp_xtext_valid(pm->value.p, pm->value.len, 0) ||
                !smtp_dsn_text_ok(dec, smtp_xtext_decode(pm->value.p, pm->value.len, dec), 0)) {
                smtp_error_reply(s, "501 5.5.4 Bad ENVID parameter");
                return;
            }
            envid = pm->value;
        } else if (smtp_slice_ieq(pm->key, "AUTH")) {
            bit = 32; /* RFC 4954 section 5: accepted, not trusted */
            if (!pm->has_value || !smtp_xtext_valid(pm->value.p, pm->value.len, 1)) {
                smtp_error_reply(s, "501 5.5.4 Bad AUTH parameter");
                return;
            }
        } else {
            smtp_error_reply(s, "555 5.5.4 Unsupported parameter %.*s", (int)(pm->key.len > 40 ? 40 : pm->key.len),
                             pm->key.p);
            return;
        }
        if (seen & bit) {
            smtp_error_reply(s, "501 5.5.4 Duplicate parameter");
            return;
        }
        seen |= bit;
    }
    if (ea.path.utf8 && !utf8) {
        smtp_error_reply(s, "553 5.6.7 Non-ASCII sender address needs SMTPUTF8"); /* RFC 6531 section 3.4 */
        return;
    }
    if (size > ss->conf.max_size) {
        smtp_error_reply(s, "552 5.3.4 Message size exceeds fixed maximum message size"); /* RFC 1870 sec 6 */
        return;
    }
    if (ss->conf.role == SMTP_ROLE_SUBMISSION && !sender_owned(s, &ea.path)) {
        smtp_error_reply(s, "553 5.7.1 Sender address rejected: not owned by user %s", ss->auth_user);
        return;
    }

    apr_pool_clear(ss->txn_pool);
    smtp_txn *t = apr_pcalloc(ss->txn_pool, sizeof *t);
    t->pool = ss->txn_pool;
    t->from = ea.path.null_path ? "" : apr_pstrmemdup(t->pool, ea.path.mailbox.p, ea.path.mailbox.len);
    t->declared_size = size;
    t->body = body;
    t->smtputf8 = utf8;
    t->ret = ret;
    t->envid = envid.p ? apr_pstrmemdup(t->pool, envid.p, envid.len) : NULL;
    t->rcpts = apr_array_make(t->pool, 4, sizeof(smtp_rcpt));
    t->targets = apr_array_make(t->pool, 4, sizeof(mp_save_target));
    t->users = apr_array_make(t->pool, 4, sizeof(const char *));
    ss->txn = t;
    smtp_reply(s, "250 2.1.0 Ok");
}

/* ---------------------------------------------------------------- the small commands */

static void cmd_rset(mp_session *s, const smtp_command *cmd)
{
    if (cmd->has_arg) {
        smtp_error_reply(s, "501 5.5.4 Syntax: RSET");
        return;
    }
    smtp_txn_reset(s); /* RFC 5321 section 4.1.1.5 */
    smtp_reply(s, "250 2.0.0 Ok");
}

static void cmd_quit(mp_session *s, const smtp_command *cmd)
{
    smtp_session *ss = s->state;
    if (cmd->has_arg) {
        smtp_error_reply(s, "501 5.5.4 Syntax: QUIT");
        return;
    }
    smtp_reply(s, "221 2.0.0 %s Service closing transmission channel", ss->conf.server_name);
    smtp_txn_reset(s);
    ss->mode = SMTP_IN_STOP;
    s->host->close(s);
}

static void cmd_help(mp_session *s)
{
    /* RFC 5321 section 4.1.1.8; a multi-line reply (section 4.2.1) */
    smtp_reply(s, "214-2.0.0 mailproto %s, commands:", SMTP_PROTO_NAME);
    smtp_reply(s, "214-2.0.0   %s MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP%s", SMTP_LMTP ? "LHLO" : "HELO EHLO",
               SMTP_LMTP ? " STARTTLS" : " STARTTLS AUTH");
    smtp_reply(s, "214 2.0.0 End of HELP info");
}

/* RFC 3207: the go-ahead only once the host agreed; the host drops whatever was pipelined after it. */
static void cmd_starttls(mp_session *s, const smtp_command *cmd)
{
    smtp_session *ss = s->state;
    if (cmd->has_arg) {
        smtp_error_reply(s, "501 5.5.4 Syntax: STARTTLS"); /* RFC 3207 section 4 */
        return;
    }
    if (s->tls_active) {
        smtp_error_reply(s, "503 5.5.1 Error: TLS already active");
        return;
    }
    if (s->listener->tls == MP_TLS_OFF) {
        smtp_error_reply(s, "502 5.5.1 Error: command not implemented");
        return;
    }
    if (ss->txn) {
        smtp_error_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    if (s->host->start_tls(s) != MP_OK) {
        smtp_reply(s, "454 4.7.0 TLS not available due to temporary reason");
        return;
    }
    smtp_reply(s, "220 2.0.0 Ready to start TLS");
    ss->mode = SMTP_IN_STOP;
}

/* RFC 3207 section 4.2: forget everything the client told us before TLS. */
static void smtp_tls_ready(mp_session *s)
{
    smtp_session *ss = s->state;
    smtp_auth_abort(s);
    smtp_txn_reset(s);
    ss->helo[0] = '\0';
    ss->esmtp = 0;
    ss->auth_user = NULL;
    ss->bdat_left = 0;
    ss->bdat_discard = 0;
    ss->mode = SMTP_IN_COMMAND;
    s->host->log(s, MP_LOG_DEBUG, 30002, "STARTTLS done, session state reset");
}

/* ---------------------------------------------------------------- dispatch */

/* RFC 3207 section 4: on a listener with `TLS required`, only these before TLS. */
static int allowed_before_tls(smtp_cmd_id id)
{
    return id == SMTP_CMD_EHLO || id == SMTP_CMD_LHLO || id == SMTP_CMD_STARTTLS || id == SMTP_CMD_NOOP ||
           id == SMTP_CMD_QUIT || id == SMTP_CMD_RSET || id == SMTP_CMD_BDAT /* checked there */;
}

static void smtp_command_line(mp_session *s, const char *line, size_t len)
{
    smtp_session *ss = s->state;
    smtp_command cmd;
    if (len == 0) {
        smtp_error_reply(s, "500 5.5.2 Error: bad syntax");
        return;
    }
    int rc = smtp_parse_command(line, len, &cmd);
#if SMTP_LMTP
    if (cmd.id == SMTP_CMD_HELO || cmd.id == SMTP_CMD_EHLO || cmd.id == SMTP_CMD_AUTH)
        cmd.id = SMTP_CMD_UNKNOWN; /* RFC 2033 section 4.1: LHLO instead; no AUTH here */
#else
    if (cmd.id == SMTP_CMD_LHLO)
        cmd.id = SMTP_CMD_UNKNOWN;
#endif
    if (cmd.id == SMTP_CMD_UNKNOWN) {
        smtp_error_reply(s, "500 5.5.2 Error: command not recognized");
        return;
    }
    if (rc < 0) {
        smtp_error_reply(s, "501 5.5.4 Syntax error in parameters or arguments");
        return;
    }
    if (s->listener->tls == MP_TLS_REQUIRED && !s->tls_active && !allowed_before_tls(cmd.id)) {
        smtp_error_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    switch (cmd.id) {
    case SMTP_CMD_EHLO:
    case SMTP_CMD_LHLO:
        cmd_ehlo(s, &cmd);
        break;
    case SMTP_CMD_HELO:
        cmd_helo(s, &cmd);
        break;
    case SMTP_CMD_MAIL:
        cmd_mail(s, &cmd);
        break;
    case SMTP_CMD_RCPT:
        smtp_cmd_rcpt(s, &cmd);
        break;
    case SMTP_CMD_DATA:
        if (cmd.has_arg)
            smtp_error_reply(s, "501 5.5.4 Syntax: DATA");
        else
            smtp_cmd_data(s);
        break;
    case SMTP_CMD_BDAT:
        smtp_cmd_bdat(s, &cmd);
        break;
    case SMTP_CMD_RSET:
        cmd_rset(s, &cmd);
        break;
    case SMTP_CMD_NOOP:
        smtp_reply(s, "250 2.0.0 Ok"); /* RFC 5321 section 4.1.1.9: arguments are ignored */
        break;
    case SMTP_CMD_QUIT:
        cmd_quit(s, &cmd);
        break;
    case SMTP_CMD_VRFY:
        /* RFC 5321 section 3.5.3: 252 when we will not say */
        if (!cmd.has_arg || cmd.arg.len == 0)
            smtp_error_reply(s, "501 5.5.4 Syntax: VRFY address");
        else
            smtp_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
        break;
    case SMTP_CMD_EXPN:
        smtp_error_reply(s, "502 5.5.1 EXPN not available");
        break;
    case SMTP_CMD_HELP:
        cmd_help(s);
        break;
    case SMTP_CMD_STARTTLS:
        cmd_starttls(s, &cmd);
        break;
    case SMTP_CMD_AUTH:
        smtp_cmd_auth(s, &cmd);
        break;
    default:
        smtp_error_reply(s, "500 5.5.2 Error: command not recognized");
        break;
    }
    (void)ss;
}

/* The refusal of a line that broke the framing; an AUTH exchange in progress ends with it. */
static void refuse_line(mp_session *s, smtp_in_mode was, int too_long, int bare)
{
    smtp_session *ss = s->state;
    if (was == SMTP_IN_AUTH) {
        smtp_auth_abort(s);
        ss->mode = SMTP_IN_COMMAND;
        if (too_long)
            smtp_error_reply(s, "500 5.5.6 Authentication Exchange line is too long"); /* RFC 4954 sec 4 */
        else
            smtp_error_reply(s, "500 5.5.2 Error: bare <CR> or <LF> received");
        return;
    }
    if (too_long)
        smtp_error_reply(s, "500 5.5.2 Line too long"); /* RFC 5321 section 4.5.3.1.4 */
    else
        smtp_error_reply(s, "500 5.5.2 Error: bare <CR> or <LF> received"); /* RFC 5321 section 2.3.8 */
    (void)bare;
}

static size_t line_limit(const smtp_session *ss, const char *p, size_t n)
{
    if (ss->mode == SMTP_IN_AUTH || (n >= 5 && strncasecmp(p, "AUTH ", 5) == 0))
        return SMTP_MAX_AUTH_LINE;
    return SMTP_MAX_COMMAND_LINE;
}

/* Command and AUTH lines. Returns bytes consumed. */
static size_t line_input(mp_session *s, const char *p, size_t n)
{
    smtp_session *ss = s->state;
    size_t line_len, consumed;
    int bare;
    size_t limit = line_limit(ss, p, n);
    if (smtp_line_find(p, n, &line_len, &consumed, &bare) == SMTP_LINE_MORE) {
        if (n < limit)
            return 0; /* wait for the rest of the line */
        /* Over the limit without a line end: drop bytes until it comes, then refuse the line. */
        ss->skip_return = ss->mode;
        ss->skip_bare = bare;
        ss->mode = SMTP_IN_SKIP;
        return p[n - 1] == '\r' ? n - 1 : n;
    }
    if (consumed > limit || bare) {
        smtp_in_mode was = ss->mode;
        refuse_line(s, was, consumed > limit, bare);
        return consumed;
    }
    if (ss->mode == SMTP_IN_AUTH)
        smtp_auth_line(s, p, line_len);
    else
        smtp_command_line(s, p, line_len);
    return consumed;
}

static size_t skip_input(mp_session *s, const char *p, size_t n)
{
    smtp_session *ss = s->state;
    size_t line_len, consumed;
    int bare;
    if (smtp_line_find(p, n, &line_len, &consumed, &bare) == SMTP_LINE_MORE)
        return p[n - 1] == '\r' ? n - 1 : n;
    smtp_in_mode was = ss->skip_return;
    ss->mode = was == SMTP_IN_AUTH ? SMTP_IN_AUTH : SMTP_IN_COMMAND;
    refuse_line(s, was, 1, ss->skip_bare || bare);
    return consumed;
}

static long smtp_input(mp_session *s, const char *data, size_t len)
{
    smtp_session *ss = s->state;
    size_t used = 0;
    while (used < len) {
        size_t n = 0;
        smtp_in_mode before = ss->mode;
        switch (ss->mode) {
        case SMTP_IN_COMMAND:
        case SMTP_IN_AUTH:
            n = line_input(s, data + used, len - used);
            break;
        case SMTP_IN_SKIP:
            n = skip_input(s, data + used, len - used);
            break;
        case SMTP_IN_DATA:
            n = smtp_data_input(s, data + used, len - used);
            break;
        case SMTP_IN_BDAT:
            n = smtp_bdat_input(s, data + used, len - used);
            break;
        case SMTP_IN_WAIT:
        case SMTP_IN_STOP:
            return (long)used;
        }
        used += n;
        if (n == 0 && ss->mode == before)
            break; /* an incomplete line */
    }
    return (long)used;
}

/* ---------------------------------------------------------------- the host's goodbyes, the end */

static void smtp_goodbye(mp_session *s, mp_goodbye why)
{
    smtp_session *ss = s->state;
    const char *name = ss->conf.server_name ? ss->conf.server_name : server_name(s);
    switch (why) {
    case MP_BYE_SHUTDOWN:
        smtp_reply(s, "421 4.3.2 %s Service shutting down", name);
        break;
    case MP_BYE_IDLE:
        smtp_reply(s, "421 4.4.2 %s Error: timeout exceeded", name); /* RFC 5321 section 4.5.3.2 */
        break;
    case MP_BYE_LINE_TOO_LONG:
        smtp_reply(s, "500 5.5.2 Line too long"); /* RFC 5321 section 4.5.3.1.4 */
        break;
    case MP_BYE_TOO_MANY_ERRORS:
        smtp_reply(s, "421 4.7.0 %s Error: too many errors", name);
        break;
    case MP_BYE_TOO_MANY_CONNECTIONS:
        smtp_reply(s, "421 4.7.0 %s Error: too many connections", name);
        break;
    default:
        smtp_reply(s, "421 4.3.0 %s Closing connection", name);
        break;
    }
}

static void smtp_close(mp_session *s, mp_close_reason why)
{
    smtp_session *ss = s->state;
    if (!ss->txn_pool)
        return; /* never connected (too many connections) */
    ss->closing = 1;
    smtp_auth_abort(s);
    smtp_txn_reset(s); /* a session that ends mid-DATA leaves nothing stored */
    (void)why;
}

const mp_protocol smtp_protocol = {
    .name = SMTP_PROTO_NAME,
    .default_port = SMTP_LMTP ? 24 : 25,
    .default_tls_port = SMTP_LMTP ? 0 : 465,
    .session_size = sizeof(smtp_session),
    .on_connect = smtp_connect,
    .on_input = smtp_input,
    .on_tls_ready = smtp_tls_ready,
    .on_goodbye = smtp_goodbye,
    .on_close = smtp_close,
};

/*
 * The POP3 session (RFC 1939): greeting, command dispatch per state, the TRANSACTION commands, QUIT and
 * the UPDATE state, and the host's goodbye and close.
 *
 *   AUTHORIZATION  CAPA STLS USER PASS APOP AUTH QUIT          (pop3_auth.c)
 *                  UTF8 LANG                                   (pop3_utf8.c, RFC 6856)
 *   TRANSACTION    STAT LIST RETR DELE NOOP RSET TOP UIDL CAPA QUIT LANG
 *   UPDATE         after QUIT in TRANSACTION: the marked messages are expunged in a job, then +OK
 *
 * Message numbers are fixed for the session (RFC 1939 section 5): they index the snapshot taken when the
 * maildrop was locked; mail delivered meanwhile shows in the next session. DELE only marks; the marks are
 * this session's and die with it unless QUIT carries them out. A session that ends any other way (the
 * client leaves, idle timeout, shutdown) never enters UPDATE (RFC 1939 section 6) and deletes nothing.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <apr_strings.h>

#include "pop3.h"

/* ---------------------------------------------------------------- replies */

static void reply(mp_session *s, const char *status, const char *fmt, va_list ap)
{
    char buf[512 - 8]; /* RFC 2449 section 4: a response line is at most 512 octets, CRLF included */
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof buf)
        n = (int)sizeof buf - 1;
    s->host->printf(s, "%s%s%.*s\r\n", status, n ? " " : "", n, buf);
}

void pop3_ok(mp_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply(s, "+OK", fmt, ap);
    va_end(ap);
}

void pop3_err(mp_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply(s, "-ERR", fmt, ap);
    va_end(ap);
}

/* A protocol error: the reply, and one count towards the host's MaxErrors. */
static void syntax_error(mp_session *s, const char *text)
{
    pop3_err(s, "%s", text);
    s->host->error(s);
}

/* ---------------------------------------------------------------- the maildrop */

void pop3_box_release(mp_session *s)
{
    pop3_session *ps = s->state;
    if (ps->folder)
        ps->prov.store_if->folder_close(ps->folder); /* releases the POP3 lock */
    if (ps->box_user)
        ps->prov.store_if->user_close(ps->box_user);
    ps->folder = NULL;
    ps->box_user = NULL;
    ps->msgs = NULL;
    ps->nmsgs = 0;
    ps->deleted = NULL;
    if (ps->box_pool)
        apr_pool_destroy(ps->box_pool);
    ps->box_pool = NULL;
}

/* ---------------------------------------------------------------- TRANSACTION commands */

/* Checks a command's argument count; replies and returns 0 when it is wrong. */
static int nargs_ok(mp_session *s, const pop3_command *c, unsigned min, unsigned max)
{
    if (c->too_many_args || c->nargs > max) {
        syntax_error(s, "Too many arguments");
        return 0;
    }
    if (c->nargs < min) {
        syntax_error(s, "Missing argument");
        return 0;
    }
    return 1;
}

/* A message-number argument (RFC 1939 section 5: may not refer to a message marked as deleted). Returns
   the 0-based index, or -1 after replying. */
static long msg_arg(mp_session *s, const pop3_slice *a)
{
    pop3_session *ps = s->state;
    uint64_t n;
    int r = pop3_parse_number(a->p, a->len, &n);
    if (r == -1) {
        syntax_error(s, "Invalid message number");
        return -1;
    }
    if (r == -2 || n == 0 || n > ps->nmsgs) {
        pop3_err(s, "No such message");
        return -1;
    }
    if (ps->deleted[n - 1]) {
        pop3_err(s, "Message %" PRIu64 " already deleted", n);
        return -1;
    }
    return (long)(n - 1);
}

static void cmd_stat(mp_session *s, const pop3_command *c)
{
    (void)c;
    pop3_session *ps = s->state;
    /* RFC 1939 section 5: messages marked as deleted are not counted */
    s->host->printf(s, "+OK %" PRIu32 " %" PRIu64 "\r\n", ps->nmsgs - ps->ndeleted,
                    ps->total_size - ps->deleted_size);
}

static void list_or_uidl(mp_session *s, const pop3_command *c, int uidl)
{
    pop3_session *ps = s->state;
    if (c->nargs == 0) {
        pop3_out_listing(s, uidl);
        return;
    }
    long i = msg_arg(s, &c->args[0]);
    if (i < 0)
        return;
    if (uidl) {
        char buf[72];
        s->host->printf(s, "+OK %ld %s\r\n", i + 1, pop3_uid_of(&ps->msgs[i], buf));
    } else {
        s->host->printf(s, "+OK %ld %" PRIu64 "\r\n", i + 1, ps->msgs[i].size);
    }
}

static void cmd_list(mp_session *s, const pop3_command *c)
{
    list_or_uidl(s, c, 0);
}

static void cmd_uidl(mp_session *s, const pop3_command *c)
{
    list_or_uidl(s, c, 1);
}

static void cmd_retr(mp_session *s, const pop3_command *c)
{
    long i = msg_arg(s, &c->args[0]);
    if (i >= 0)
        pop3_out_message(s, (uint32_t)i, UINT64_MAX);
}

/* TOP msg n (RFC 1939 section 7): n is a non-negative number of body lines. */
static void cmd_top(mp_session *s, const pop3_command *c)
{
    uint64_t lines;
    int r = pop3_parse_number(c->args[1].p, c->args[1].len, &lines);
    if (r == -1) {
        syntax_error(s, "Invalid number of lines");
        return;
    }
    if (r == -2)
        lines = UINT64_MAX - 1; /* more lines than any message has: the whole body */
    long i = msg_arg(s, &c->args[0]);
    if (i >= 0)
        pop3_out_message(s, (uint32_t)i, lines);
}

static void cmd_dele(mp_session *s, const pop3_command *c)
{
    pop3_session *ps = s->state;
    long i = msg_arg(s, &c->args[0]);
    if (i < 0)
        return;
    ps->deleted[i] = 1;
    ps->ndeleted++;
    ps->deleted_size += ps->msgs[i].size;
    pop3_ok(s, "Marked to be deleted");
}

static void cmd_rset(mp_session *s, const pop3_command *c)
{
    (void)c;
    pop3_session *ps = s->state;
    /* RFC 1939 section 5: unmark every message marked as deleted */
    if (ps->ndeleted)
        memset(ps->deleted, 0, ps->nmsgs);
    ps->ndeleted = 0;
    ps->deleted_size = 0;
    pop3_ok(s, "%" PRIu32 " messages (%" PRIu64 " octets)", ps->nmsgs, ps->total_size);
}

/* ---------------------------------------------------------------- QUIT and UPDATE */

typedef struct pop3_update {
    const mp_store_iface *st;
    mp_folder *folder;
    mp_store_user *user;
    uint32_t *uids;
    uint32_t nuids;
    uint32_t expunged; /* out */
    int rc;            /* out */
} pop3_update;

static void upd_expunged(void *arg, uint32_t seq, uint32_t uid)
{
    ((pop3_update *)arg)->expunged++;
}

static void upd_flags(void *arg, uint32_t seq, const mp_msg *msg) {}
static void upd_exists(void *arg, uint32_t count, uint32_t recent) {}

static const mp_sync_cb upd_cb = {.expunged = upd_expunged, .flags = upd_flags, .exists = upd_exists};

/* Worker thread (RFC 1939 section 6): mark \Deleted exactly the messages this session marked, expunge
   those UIDs only (not what another client flagged), then close the folder, which releases the lock. */
static void update_work(void *arg)
{
    pop3_update *u = arg;
    u->rc = MP_STORE_OK;
    uint32_t n = 0;
    for (uint32_t k = 0; k < u->nuids; k++) {
        int rc = u->st->store_flags(u->folder, u->uids[k], 1, MP_FLAG_DELETED, 0, NULL, 0);
        if (rc == MP_STORE_OK)
            u->uids[n++] = u->uids[k];
        else if (rc != MP_STORE_NOTFOUND) /* a message already expunged by someone else is gone: fine */
            u->rc = rc;
    }
    if (n > 0 && u->rc == MP_STORE_OK)
        u->rc = u->st->expunge(u->folder, u->uids, n, &upd_cb, u);
    u->st->folder_close(u->folder);
    u->st->user_close(u->user);
}

static void update_done(mp_session *s, void *arg, int closing)
{
    pop3_session *ps = s->state;
    pop3_update *u = arg;
    ps->wait = POP3_WAIT_NONE;
    ps->folder = NULL; /* closed by the job */
    ps->box_user = NULL;
    if (u->rc == MP_STORE_OK) {
        s->host->log(s, MP_LOG_INFO, 40301, "logout user=%s retr=%" PRIu32 " bytes=%" PRIu64 " deleted=%" PRIu32,
                     ps->login, ps->nretr, ps->retr_bytes, u->expunged);
    } else {
        s->host->log(s, MP_LOG_ERROR, 40302, "update failed for user=%s (store error %d): %" PRIu32 " of %" PRIu32
                     " messages removed", ps->login, u->rc, u->expunged, u->nuids);
    }
    int rc = u->rc;
    pop3_box_release(s); /* u was in the box pool */
    if (closing)
        return;
    if (rc == MP_STORE_OK)
        pop3_ok(s, "Logging out");
    else
        pop3_err(s, "[SYS/TEMP] Some deleted messages were not removed");
    ps->stop = 1;
    s->host->close(s);
}

static void cmd_quit(mp_session *s, const pop3_command *c)
{
    (void)c;
    pop3_session *ps = s->state;
    if (ps->state == POP3_AUTHORIZATION) {
        /* RFC 1939 section 4: QUIT in AUTHORIZATION ends the session without UPDATE */
        pop3_ok(s, "Logging out");
        ps->stop = 1;
        s->host->close(s);
        return;
    }
    ps->state = POP3_UPDATE;
    pop3_update *u = apr_pcalloc(ps->box_pool, sizeof *u);
    u->st = ps->prov.store_if;
    u->folder = ps->folder;
    u->user = ps->box_user;
    u->uids = apr_palloc(ps->box_pool, (ps->ndeleted ? ps->ndeleted : 1) * sizeof *u->uids);
    for (uint32_t i = 0; i < ps->nmsgs; i++)
        if (ps->deleted[i])
            u->uids[u->nuids++] = ps->msgs[i].uid;
    if (s->host->run_blocking(s, update_work, update_done, u) != MP_OK) {
        s->host->log(s, MP_LOG_ERROR, 40303, "cannot start the update job");
        pop3_err(s, "[SYS/TEMP] Cannot remove the deleted messages now");
        ps->stop = 1;
        s->host->close(s);
        return;
    }
    ps->wait = POP3_WAIT_JOB;
}

/* ---------------------------------------------------------------- dispatch */

static void cmd_noop(mp_session *s, const pop3_command *c)
{
    (void)c;
    pop3_ok(s, "%s", "");
}

static void cmd_capa(mp_session *s, const pop3_command *c)
{
    (void)c;
    pop3_cmd_capa(s);
}

static void cmd_stls(mp_session *s, const pop3_command *c)
{
    (void)c;
    pop3_cmd_stls(s);
}

enum { IN_AUTH = 1, IN_TRANS = 2 };

/* Where each command is valid (RFC 1939 sections 4-7; CAPA RFC 2449, STLS RFC 2595, AUTH RFC 5034, UTF8 and
   LANG RFC 6856 sections 2 and 3.1) and its argument count, checked here; -1: the command checks its own
   arguments (they may hold spaces, or need state to judge). */
static const struct {
    unsigned char states;
    signed char min, max;
    void (*run)(mp_session *s, const pop3_command *c);
} commands[] = {
    [POP3_CMD_USER] = {IN_AUTH, -1, -1, pop3_cmd_user},
    [POP3_CMD_PASS] = {IN_AUTH, -1, -1, pop3_cmd_pass},
    [POP3_CMD_APOP] = {IN_AUTH, -1, -1, pop3_cmd_apop},
    [POP3_CMD_AUTH] = {IN_AUTH, -1, -1, pop3_cmd_auth},
    [POP3_CMD_STLS] = {IN_AUTH, 0, 0, cmd_stls},
    [POP3_CMD_UTF8] = {IN_AUTH, -1, -1, pop3_cmd_utf8},
    [POP3_CMD_CAPA] = {IN_AUTH | IN_TRANS, 0, 0, cmd_capa},
    [POP3_CMD_LANG] = {IN_AUTH | IN_TRANS, -1, -1, pop3_cmd_lang},
    [POP3_CMD_QUIT] = {IN_AUTH | IN_TRANS, 0, 0, cmd_quit},
    [POP3_CMD_NOOP] = {IN_TRANS, 0, 0, cmd_noop},
    [POP3_CMD_STAT] = {IN_TRANS, 0, 0, cmd_stat},
    [POP3_CMD_LIST] = {IN_TRANS, 0, 1, cmd_list},
    [POP3_CMD_UIDL] = {IN_TRANS, 0, 1, cmd_uidl},
    [POP3_CMD_RETR] = {IN_TRANS, 1, 1, cmd_retr},
    [POP3_CMD_TOP] = {IN_TRANS, 2, 2, cmd_top},
    [POP3_CMD_DELE] = {IN_TRANS, 1, 1, cmd_dele},
    [POP3_CMD_RSET] = {IN_TRANS, 0, 0, cmd_rset},
};

static void dispatch(mp_session *s, const pop3_command *c)
{
    pop3_session *ps = s->state;
    unsigned where = ps->state == POP3_AUTHORIZATION ? IN_AUTH : IN_TRANS;
    if ((size_t)c->cmd >= sizeof commands / sizeof commands[0] || !commands[c->cmd].run) {
        syntax_error(s, "Unknown command");
        return;
    }
    if (!(commands[c->cmd].states & where)) {
        if (c->cmd == POP3_CMD_UTF8)
            pop3_err(s, "UTF8 is only valid before login");
        else
            pop3_err(s, where == IN_AUTH ? "Not logged in" : "Already logged in");
        return;
    }
    int min = commands[c->cmd].min, max = commands[c->cmd].max;
    if (min >= 0 && !nargs_ok(s, c, (unsigned)min, (unsigned)max))
        return;
    commands[c->cmd].run(s, c);
}

static void session_line(mp_session *s, const char *line, size_t len)
{
    pop3_session *ps = s->state;
    if (ps->in_sasl) {
        pop3_sasl_line(s, line, len);
        return;
    }
    pop3_command c;
    switch (pop3_parse_command(line, len, &c)) {
    case POP3_PARSE_EMPTY:
        syntax_error(s, "Empty command");
        return;
    case POP3_PARSE_BADCHAR:
        syntax_error(s, "Invalid characters in command");
        return;
    case POP3_PARSE_OK:
        break;
    }
    if (ps->state == POP3_AUTHORIZATION || ps->state == POP3_TRANSACTION)
        dispatch(s, &c); /* in UPDATE nothing more is read */
}

/* ---------------------------------------------------------------- host callbacks */

int pop3_on_connect(mp_session *s)
{
    pop3_session *ps = s->state;
    memset(ps, 0, sizeof *ps);
    pop3_providers_resolve(s);
    if (pop3_parse_wait(s->host->config(s, "POP3LockWait"), &ps->lock_wait) != 0)
        ps->lock_wait = POP3_LOCK_WAIT_DEFAULT;
    pop3_auth_greeting(s);
    const char *name = s->host->config(s, "ServerName");
    s->host->log(s, MP_LOG_DEBUG, 40001, "pop3 session started");
    /* RFC 1939 section 4: the greeting; with APOP, the timestamp banner last (section 7) */
    return s->host->printf(s, "+OK %s POP3 ready%s%s\r\n", name ? name : POP3_IMPLEMENTATION,
                           ps->apop ? " " : "", ps->apop ? ps->apop_banner : "");
}

long pop3_on_input(mp_session *s, const char *data, size_t len)
{
    pop3_session *ps = s->state;
    size_t used = 0;
    while (used < len && !ps->stop && ps->wait == POP3_WAIT_NONE) {
        size_t max = ps->in_sasl ? POP3_MAX_SASL_LINE : POP3_MAX_COMMAND_LINE;
        size_t line_len = 0, consumed = 0;
        pop3_line_status st = pop3_next_line(&ps->reader, data + used, len - used, max, &line_len, &consumed);
        const char *line = data + used;
        used += consumed;
        if (st == POP3_LINE_MORE)
            break;
        if (st == POP3_LINE_TOO_LONG) {
            if (ps->in_sasl)
                pop3_sasl_abort(s);
            syntax_error(s, "Line too long");
            continue;
        }
        session_line(s, line, line_len);
    }
    return (long)used;
}

/* RFC 2595 section 4: after STLS the server forgets what it learned before (a USER name, a started AUTH)
   and the client asks CAPA again; the host has already dropped any input pipelined after STLS. */
void pop3_on_tls_ready(mp_session *s)
{
    pop3_session *ps = s->state;
    pop3_auth_reset(s);
    ps->reader = (pop3_reader){0};
    ps->stop = 0;
    ps->utf8 = 0; /* never set here: STLS is refused after UTF8 (RFC 6856 section 2.1) */
}

void pop3_on_writable(mp_session *s)
{
    pop3_session *ps = s->state;
    if (ps->out)
        pop3_out_continue(s);
}

void pop3_on_goodbye(mp_session *s, mp_goodbye why)
{
    pop3_session *ps = s->state;
    if (ps->out) {
        /* In the middle of a multi-line response a status line would be read as message text: stop
           without the terminating "." so that the client sees the response is incomplete. */
        pop3_out_abort(s);
        return;
    }
    switch (why) {
    case MP_BYE_SHUTDOWN:
        pop3_err(s, "[SYS/TEMP] Server shutting down");
        break;
    case MP_BYE_IDLE:
        /* RFC 1939 section 3: the autologout timer; the session does not enter UPDATE */
        pop3_err(s, "Disconnected for inactivity");
        break;
    case MP_BYE_LINE_TOO_LONG:
        pop3_err(s, "Line too long");
        break;
    case MP_BYE_TOO_MANY_ERRORS:
        pop3_err(s, "Too many errors");
        break;
    case MP_BYE_TOO_MANY_CONNECTIONS:
        pop3_err(s, "[SYS/TEMP] Too many connections");
        break;
    default:
        pop3_err(s, "Closing");
        break;
    }
}

void pop3_on_close(mp_session *s, mp_close_reason why)
{
    pop3_session *ps = s->state;
    pop3_out_abort(s);
    ps->delay_timer = NULL; /* the host has dropped the session's timers already */
    pop3_auth_reset(s);
    if (ps->state == POP3_TRANSACTION) {
        /* RFC 1939 section 6: no QUIT, no UPDATE: the marks are forgotten, nothing is deleted */
        s->host->log(s, MP_LOG_INFO, 40002, "disconnected without QUIT user=%s retr=%" PRIu32 " bytes=%" PRIu64
                     " (%" PRIu32 " deletion marks dropped)", ps->login, ps->nretr, ps->retr_bytes, ps->ndeleted);
    }
    /* Closing the folder releases the lock; on the loop thread, as on_close cannot wait for a job. */
    pop3_box_release(s);
}

/*
 * The AUTHORIZATION state (RFC 1939 section 4): CAPA (RFC 2449), STLS (RFC 2595), USER/PASS and APOP
 * (RFC 1939 section 7), AUTH (RFC 5034, mechanisms from modules/common/sasl.h), and the login job that
 * checks the credentials and locks the maildrop. UTF8 and LANG (RFC 6856) are in pop3_utf8.c; what UTF-8
 * mode changes here (UTF-8 checks of credentials, no STLS after UTF8) is marked where it happens.
 *
 * Where passwords may be sent (the project's rule; Dovecot's disable_plaintext_auth=yes):
 *  - on a `TLS off` listener, everything is allowed in plaintext (the administrator chose no TLS);
 *  - on a `TLS starttls` listener, before STLS, USER/PASS and AUTH PLAIN/LOGIN are refused (no exception
 *    for loopback) and neither USER nor those mechanisms are advertised; APOP and SCRAM-SHA-256, which do
 *    not reveal the password, stay available;
 *  - on a `TLS required` listener, before STLS, every way to log in is refused and none is advertised.
 * The refusal is "-ERR [AUTH] ...": RFC 3206 section 5 gives [AUTH] for "an attempt to authenticate in
 * violation of policy", which tells the client not to retry the same credentials blindly; [SYS/PERM] would
 * say the server is broken, which it is not.
 *
 * Failed logins are answered after auth->failed()'s delay (a host timer, never a sleep), with
 * "-ERR [AUTH] Authentication failed" (RFC 3206 section 5), and count towards MaxErrors. A maildrop locked
 * by another POP3 session is tried again for up to POP3LockWait (default 10 s, as long as Dovecot waits for
 * its POP3 session lock), after 10 ms at first and then at most every 200 ms, without checking the
 * credentials again: the other session is often just ending. Then the login gets "-ERR [IN-USE]" (RFC 2449
 * section 8.1.2) and the session stays in AUTHORIZATION. A store or user-database failure gets
 * "-ERR [SYS/TEMP]" (RFC 3206 section 4).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <apr_strings.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "pop3.h"
#include "utf8.h"

/* ---------------------------------------------------------------- policy */

/* May a password cross the connection in clear (USER/PASS, AUTH PLAIN and LOGIN)? */
static int plaintext_ok(mp_session *s)
{
    return s->tls_active || s->listener->tls == MP_TLS_OFF;
}

/* May the client log in at all now (APOP, SCRAM)? Not before STLS on a `TLS required` listener. */
static int login_ok(mp_session *s)
{
    return s->tls_active || s->listener->tls != MP_TLS_REQUIRED;
}

static int stls_offered(mp_session *s)
{
    return !s->tls_active && (s->listener->tls == MP_TLS_STARTTLS || s->listener->tls == MP_TLS_REQUIRED);
}

static void refuse_insecure(mp_session *s)
{
    if (s->listener->tls == MP_TLS_REQUIRED)
        pop3_err(s, "[AUTH] TLS required: use STLS first");
    else
        pop3_err(s, "[AUTH] Plaintext authentication disallowed without TLS: use STLS first");
    s->host->error(s);
}

static int scram_offered(mp_session *s)
{
    pop3_session *ps = s->state;
    return login_ok(s) && !ps->prov.error && ps->prov.auth_if->has_secrets &&
           ps->prov.auth_if->has_secrets(ps->prov.auth, MP_SECRET_SCRAM_SHA256) == 1;
}

/* The mechanisms offered now, space separated, or "" when none. */
static const char *mechanisms(mp_session *s, char buf[64])
{
    buf[0] = '\0';
    if (plaintext_ok(s))
        strcat(buf, "PLAIN LOGIN");
    if (scram_offered(s))
        strcat(buf, buf[0] ? " SCRAM-SHA-256" : "SCRAM-SHA-256");
    return buf;
}

static int mechanism_offered(mp_session *s, const char *mech)
{
    if (strcasecmp(mech, "PLAIN") == 0 || strcasecmp(mech, "LOGIN") == 0)
        return 1; /* refused by policy later with a clearer reply */
    if (strcasecmp(mech, "SCRAM-SHA-256") == 0)
        return scram_offered(s) || !login_ok(s);
    return 0;
}

/* ---------------------------------------------------------------- greeting, CAPA, STLS */

void pop3_auth_greeting(mp_session *s)
{
    pop3_session *ps = s->state;
    if (ps->prov.error || !ps->prov.auth_if->has_secrets ||
        ps->prov.auth_if->has_secrets(ps->prov.auth, MP_SECRET_PLAINTEXT) != 1)
        return;
    /* RFC 1939 section 7: a timestamp banner unique to this greeting, "<process-ID.clock@hostname>";
       the session id and random bits make it unique across processes and restarts too. */
    unsigned char rnd[8] = {0};
    RAND_bytes(rnd, sizeof rnd);
    uint64_t r;
    memcpy(&r, rnd, sizeof r);
    const char *host = s->host->config(s, "ServerName");
    if (!host || !*host || strpbrk(host, " <>\t"))
        host = "localhost";
    ps->apop_banner = apr_psprintf(s->pool, "<%ld.%" PRIu64 ".%" APR_TIME_T_FMT ".%016" PRIx64 "@%s>", (long)getpid(),
                                   s->id, apr_time_now(), r, host);
    ps->apop = 1;
}

void pop3_cmd_capa(mp_session *s)
{
    pop3_session *ps = s->state;
    const mp_host *h = s->host;
    /* RFC 2449 section 5 and 6; RFC 3206 section 6 (AUTH-RESP-CODE) */
    h->printf(s, "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
    if (ps->state == POP3_AUTHORIZATION) {
        char buf[64];
        if (plaintext_ok(s))
            h->printf(s, "USER\r\n"); /* RFC 2449 section 6.2 */
        if (*mechanisms(s, buf))
            h->printf(s, "SASL %s\r\n", buf); /* RFC 5034 section 3 */
        if (stls_offered(s) && !ps->utf8)
            h->printf(s, "STLS\r\n"); /* RFC 2595 section 4; not after UTF8 (RFC 6856 section 2.1) */
    }
    /* RFC 6856 sections 2 and 3: UTF8 and LANG are announced in both states, the same in both ("possible
       differences: no"). The USER argument (section 2.2) says that USER, PASS and APOP take UTF-8 names and
       passwords: given whenever one of them can be used on this connection. */
    int credentials = plaintext_ok(s) || (ps->apop && login_ok(s));
    h->printf(s, "UTF8%s\r\nLANG\r\n", credentials ? " USER" : "");
    h->printf(s, "IMPLEMENTATION %s\r\n.\r\n", POP3_IMPLEMENTATION);
}

void pop3_cmd_stls(mp_session *s)
{
    pop3_session *ps = s->state;
    /* RFC 2595 section 4: only in AUTHORIZATION, and not twice */
    if (s->tls_active) {
        pop3_err(s, "TLS already active");
        return;
    }
    if (ps->utf8) {
        /* RFC 6856 section 2.1: clients MUST NOT issue STLS after UTF8; servers MAY refuse it with an -ERR
           (a protocol error: no response code) */
        pop3_err(s, "STLS is not allowed after UTF8");
        s->host->error(s);
        return;
    }
    if (s->host->start_tls(s) != MP_OK) {
        pop3_err(s, "TLS not available");
        return;
    }
    /* The host discards everything the client pipelined after this line before the handshake. */
    pop3_ok(s, "Begin TLS negotiation");
    ps->stop = 1;
}

/* ---------------------------------------------------------------- the login job */

typedef enum login_mode {
    LOGIN_VERIFY = 1, /* USER/PASS, AUTH PLAIN/LOGIN: auth->verify() */
    LOGIN_APOP = 2,   /* compare the digest with MD5(banner + plaintext secret) */
    LOGIN_TRUSTED = 3 /* SCRAM proved the password already: auth->lookup() for the user's fields */
} login_mode;

struct pop3_login {
    /* in */
    login_mode mode;
    const char *method;      /* for the log: "USER", "APOP", "PLAIN", ... */
    char *user;
    char *password;          /* VERIFY: wiped after the job */
    size_t password_len;
    char digest[33];         /* APOP: 32 lower-case hex digits */
    const char *banner;
    const char *peer;
    pop3_providers prov;
    apr_pool_t *pool;        /* auth_pool */
    apr_pool_t *box_pool;    /* the maildrop's */
    /* out */
    uint64_t quota_bytes, quota_messages;
    apr_interval_time_t waited; /* for the lock so far: the sum of the tries' delays */
    int tries;
    int verdict_given;       /* the SASL machine has heard the verdict */
    int auth_rc;             /* MP_AUTH_OK, MP_AUTH_FAIL, MP_AUTH_TEMPFAIL */
    int denied;              /* allow_nets refused the client address */
    int store_rc;
    const char *login;       /* canonical user name */
    mp_store_user *u;
    mp_folder *f;
    const mp_msg *msgs;
    uint32_t nmsgs;
};

static void apop_digest(const char *banner, const char *secret, char hex[33])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    hex[0] = '\0';
    if (ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 && EVP_DigestUpdate(ctx, banner, strlen(banner)) == 1 &&
        EVP_DigestUpdate(ctx, secret, strlen(secret)) == 1 && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 16) {
        for (unsigned i = 0; i < 16; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(md, sizeof md);
}

/* Worker thread: opens and locks the maildrop of L->login (RFC 1939 section 4), then takes its listing. */
static void open_maildrop(pop3_login *L)
{
    const mp_store_iface *si = L->prov.store_if;
    int src = si->user_open(L->prov.store, L->login, 1, L->box_pool, &L->u);
    if (src == MP_STORE_OK) {
        if (si->set_quota_limits)
            si->set_quota_limits(L->u, L->quota_bytes, L->quota_messages);
        src = si->folder_open(L->u, "INBOX", 0, L->box_pool, &L->f);
    }
    if (src == MP_STORE_OK)
        src = si->folder_lock(L->f);
    /* The listing is taken under the lock: the view opened just before it may still show messages that the
       session ending meanwhile deleted at its QUIT. */
    if (src == MP_STORE_OK)
        src = si->folder_sync(L->f, NULL, NULL);
    if (src == MP_STORE_OK) {
        si->folder_messages(L->f, &L->msgs, &L->nmsgs);
    } else {
        if (L->f)
            si->folder_close(L->f);
        if (L->u)
            si->user_close(L->u);
        L->f = NULL;
        L->u = NULL;
    }
    L->store_rc = src;
}

/* Worker thread: credentials, then the maildrop (RFC 1939 section 4: lock it, or refuse the login). */
static void login_work(void *arg)
{
    pop3_login *L = arg;
    const mp_auth_iface *ai = L->prov.auth_if;
    mp_auth_user info;
    memset(&info, 0, sizeof info);
    int rc = MP_AUTH_FAIL;

    switch (L->mode) {
    case LOGIN_VERIFY:
        rc = ai->verify(L->prov.auth, L->user, L->password, L->pool, &info);
        break;
    case LOGIN_APOP: {
        const char *secret = NULL;
        char want[33] = "";
        rc = ai->secret(L->prov.auth, L->user, MP_SECRET_PLAINTEXT, L->pool, &secret);
        /* an unknown user costs a digest too */
        apop_digest(L->banner, rc == MP_AUTH_OK && secret ? secret : "-", want);
        int match = want[0] && CRYPTO_memcmp(want, L->digest, 32) == 0;
        if (secret)
            OPENSSL_cleanse((void *)secret, strlen(secret));
        OPENSSL_cleanse(want, sizeof want);
        if (rc == MP_AUTH_OK)
            rc = match ? ai->lookup(L->prov.auth, L->user, L->pool, &info) : MP_AUTH_FAIL;
        break;
    }
    case LOGIN_TRUSTED:
        rc = ai->lookup(L->prov.auth, L->user, L->pool, &info);
        break;
    }
    L->auth_rc = rc == MP_AUTH_OK ? MP_AUTH_OK : rc == MP_AUTH_TEMPFAIL ? MP_AUTH_TEMPFAIL : MP_AUTH_FAIL;
    if (L->auth_rc != MP_AUTH_OK)
        return;
    /* Dovecot's allow_nets extra field: the account may only log in from these networks */
    if (!mpc_sasl_allowed_from(info.fields ? apr_table_get(info.fields, "allow_nets") : NULL, L->peer)) {
        L->auth_rc = MP_AUTH_FAIL;
        L->denied = 1;
        return;
    }
    L->login = apr_pstrdup(L->pool, info.user && *info.user ? info.user : L->user);
    L->quota_bytes = info.quota_bytes;
    L->quota_messages = info.quota_messages;
    open_maildrop(L);
}

/* Worker thread: another try at a maildrop that was locked (the credentials were checked before). */
static void relock_work(void *arg)
{
    open_maildrop(arg);
}

/* Ends the exchange: wipes and frees what the authorization attempt held. */
static void auth_end(mp_session *s)
{
    pop3_session *ps = s->state;
    if (ps->sasl)
        mpc_sasl_destroy(ps->sasl);
    ps->sasl = NULL;
    ps->sasl_mech = NULL;
    ps->in_sasl = 0;
    if (ps->auth_pool)
        apr_pool_destroy(ps->auth_pool);
    ps->auth_pool = NULL;
}

void pop3_auth_reset(mp_session *s)
{
    pop3_session *ps = s->state;
    auth_end(s);
    if (ps->delay_timer)
        s->host->timer_cancel(s, ps->delay_timer);
    ps->delay_timer = NULL;
    if (ps->wait == POP3_WAIT_DELAY || ps->wait == POP3_WAIT_LOCK)
        ps->wait = POP3_WAIT_NONE;
    ps->user = NULL;
}

static void delay_fired(mp_session *s, void *arg)
{
    pop3_session *ps = s->state;
    ps->delay_timer = NULL;
    ps->wait = POP3_WAIT_NONE;
    pop3_err(s, "[AUTH] Authentication failed");
    s->host->error(s);
}

/* A failed login: the reply comes after the delay the auth provider asks for (growing per address). */
static void fail_later(mp_session *s, const char *method, const char *user, const char *why)
{
    pop3_session *ps = s->state;
    s->host->log(s, MP_LOG_NOTICE, 40102, "login failed: method=%s user=%s (%s)", method, user ? user : "?", why);
    apr_interval_time_t delay = ps->prov.error ? 0 : ps->prov.auth_if->failed(ps->prov.auth, s->peer_addr);
    if (delay > 0 && (ps->delay_timer = s->host->timer_start(s, delay, delay_fired, NULL)) != NULL) {
        ps->wait = POP3_WAIT_DELAY;
        return;
    }
    delay_fired(s, NULL);
}

static void login_result(mp_session *s, pop3_login *L)
{
    pop3_session *ps = s->state;
    const mp_host *h = s->host;
    if (L->auth_rc == MP_AUTH_TEMPFAIL) {
        h->log(s, MP_LOG_WARN, 40103, "login: user database unavailable (method=%s user=%s)", L->method, L->user);
        pop3_err(s, "[SYS/TEMP] Authentication temporarily unavailable, try again later");
        return;
    }
    if (L->auth_rc != MP_AUTH_OK) {
        fail_later(s, L->method, L->user, L->denied ? "not allowed from this address" : "bad credentials");
        return;
    }
    ps->prov.auth_if->succeeded(ps->prov.auth, s->peer_addr);
    if (L->store_rc == MP_STORE_LOCKED) {
        h->log(s, MP_LOG_NOTICE, 40104, "login: maildrop of user=%s is locked by another POP3 session", L->login);
        pop3_err(s, "[IN-USE] Mailbox is locked by another POP3 session");
        return;
    }
    if (L->store_rc != MP_STORE_OK) {
        h->log(s, MP_LOG_ERROR, 40105, "login: cannot open the maildrop of user=%s (store error %d)", L->login,
               L->store_rc);
        pop3_err(s, "[SYS/TEMP] Cannot open the mailbox, try again later");
        return;
    }
    /* RFC 1939 section 4: maildrop locked and ready; TRANSACTION */
    ps->state = POP3_TRANSACTION;
    ps->box_user = L->u;
    ps->folder = L->f;
    ps->login = apr_pstrdup(ps->box_pool, L->login);
    ps->msgs = L->msgs;
    ps->nmsgs = L->nmsgs;
    ps->deleted = apr_pcalloc(ps->box_pool, ps->nmsgs ? ps->nmsgs : 1);
    ps->total_size = 0;
    for (uint32_t i = 0; i < ps->nmsgs; i++)
        ps->total_size += ps->msgs[i].size;
    ps->user = NULL;
    h->log(s, MP_LOG_INFO, 40101, "login: user=%s method=%s tls=%s messages=%" PRIu32 " octets=%" PRIu64, ps->login,
           L->method, s->tls_active ? "yes" : "no", ps->nmsgs, ps->total_size);
    pop3_ok(s, "Logged in, %" PRIu32 " messages (%" PRIu64 " octets)", ps->nmsgs, ps->total_size);
}

static void sasl_handle(mp_session *s, mpc_sasl_status st, mpc_sasl_out *out);
static void login_done(mp_session *s, void *arg, int closing);

/* The job could not start: the login ends with a temporary failure. */
static void login_not_started(mp_session *s, pop3_login *L)
{
    pop3_session *ps = s->state;
    if (L->password)
        OPENSSL_cleanse(L->password, L->password_len);
    L->password = NULL;
    s->host->log(s, MP_LOG_ERROR, 40106, "cannot start the login job");
    pop3_err(s, "[SYS/TEMP] Authentication temporarily unavailable, try again later");
    if (ps->box_pool)
        apr_pool_destroy(ps->box_pool);
    ps->box_pool = NULL;
    ps->wait = POP3_WAIT_NONE;
    auth_end(s);
}

/* Runs the job: the whole login, or (after a locked maildrop) the maildrop part again. */
static void login_job(mp_session *s, pop3_login *L, mp_work_fn work)
{
    pop3_session *ps = s->state;
    if (apr_pool_create(&ps->box_pool, s->pool) != APR_SUCCESS) {
        ps->box_pool = NULL;
        login_not_started(s, L);
        return;
    }
    L->box_pool = ps->box_pool;
    L->u = NULL;
    L->f = NULL;
    if (s->host->run_blocking(s, work, login_done, L) != MP_OK) {
        login_not_started(s, L);
        return;
    }
    ps->wait = POP3_WAIT_JOB;
}

static void lock_retry_fired(mp_session *s, void *arg)
{
    pop3_session *ps = s->state;
    ps->delay_timer = NULL;
    ps->wait = POP3_WAIT_NONE;
    login_job(s, arg, relock_work);
}

/* The maildrop was locked by another session: another try after a while (10 ms, doubling up to 200 ms),
   while POP3LockWait lasts. Returns 1 when one is scheduled. */
static int lock_retry_later(mp_session *s, pop3_login *L)
{
    pop3_session *ps = s->state;
    apr_interval_time_t d = apr_time_from_msec(10) << (L->tries < 5 ? L->tries : 5);
    if (d > apr_time_from_msec(200))
        d = apr_time_from_msec(200);
    if (d > ps->lock_wait - L->waited)
        d = ps->lock_wait - L->waited;
    if (d <= 0 || (ps->delay_timer = s->host->timer_start(s, d, lock_retry_fired, L)) == NULL)
        return 0;
    L->waited += d;
    L->tries++;
    ps->wait = POP3_WAIT_LOCK;
    return 1;
}

static void login_done(mp_session *s, void *arg, int closing)
{
    pop3_session *ps = s->state;
    pop3_login *L = arg;
    ps->wait = POP3_WAIT_NONE;
    if (L->password) {
        OPENSSL_cleanse(L->password, L->password_len);
        L->password = NULL;
    }
    if (closing || L->auth_rc != MP_AUTH_OK || L->store_rc != MP_STORE_OK) {
        /* Nothing is kept. The job closed what it opened unless everything succeeded. */
        if (L->f)
            L->prov.store_if->folder_close(L->f);
        if (L->u)
            L->prov.store_if->user_close(L->u);
        L->f = NULL;
        L->u = NULL;
        if (ps->box_pool)
            apr_pool_destroy(ps->box_pool);
        ps->box_pool = NULL;
    }
    if (closing) {
        auth_end(s);
        return;
    }
    if (ps->sasl && L->mode == LOGIN_VERIFY && !L->verdict_given) {
        /* AUTH PLAIN/LOGIN: the machine learns the verdict (and wipes its copy of the password) */
        mpc_sasl_out out;
        L->verdict_given = 1;
        if (mpc_sasl_verified(ps->sasl, L->auth_rc, &out) != MPC_SASL_SUCCESS && L->auth_rc == MP_AUTH_OK)
            L->auth_rc = MP_AUTH_FAIL;
    }
    if (L->auth_rc == MP_AUTH_OK && L->store_rc == MP_STORE_LOCKED && lock_retry_later(s, L))
        return; /* L stays in the auth pool for the next try */
    login_result(s, L);
    auth_end(s); /* L lived in the auth pool */
}

/* Starts the login job. `user`/`password` are copied; the caller has made ps->auth_pool. */
static void login_start(mp_session *s, login_mode mode, const char *method, const char *user, size_t user_len,
                        const char *password, size_t password_len, const char *digest)
{
    pop3_session *ps = s->state;
    if (ps->prov.error) {
        pop3_err(s, "[SYS/TEMP] Authentication temporarily unavailable, try again later");
        auth_end(s);
        return;
    }
    pop3_login *L = apr_pcalloc(ps->auth_pool, sizeof *L);
    L->mode = mode;
    L->method = method;
    L->user = apr_pstrmemdup(ps->auth_pool, user, user_len);
    if (password) {
        L->password = apr_pstrmemdup(ps->auth_pool, password, password_len);
        L->password_len = password_len;
    }
    if (digest) {
        for (int i = 0; i < 32; i++)
            L->digest[i] = (char)(digest[i] >= 'A' && digest[i] <= 'F' ? digest[i] - 'A' + 'a' : digest[i]);
    }
    L->banner = ps->apop_banner;
    L->peer = s->peer_addr;
    L->prov = ps->prov;
    L->pool = ps->auth_pool;
    login_job(s, L, login_work);
}

static int new_auth_pool(mp_session *s)
{
    pop3_session *ps = s->state;
    auth_end(s);
    if (apr_pool_create(&ps->auth_pool, s->pool) != APR_SUCCESS) {
        ps->auth_pool = NULL;
        pop3_err(s, "[SYS/TEMP] Out of memory");
        return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- USER / PASS / APOP */

void pop3_cmd_user(mp_session *s, const pop3_command *c)
{
    pop3_session *ps = s->state;
    if (!plaintext_ok(s)) {
        ps->user = NULL;
        refuse_insecure(s);
        return;
    }
    if (c->nargs != 1 || c->too_many_args) {
        pop3_err(s, c->nargs ? "Too many arguments" : "Missing user name");
        s->host->error(s);
        return;
    }
    if (ps->utf8 && !mpc_utf8_valid(c->args[0].p, c->args[0].len)) {
        /* RFC 6856 section 2.2: a user name that is not well-formed UTF-8 MUST be rejected */
        ps->user = NULL;
        pop3_err(s, "Invalid UTF-8 in user name");
        s->host->error(s);
        return;
    }
    if (!ps->user_buf)
        ps->user_buf = apr_palloc(s->pool, POP3_MAX_COMMAND_LINE + 1);
    memcpy(ps->user_buf, c->args[0].p, c->args[0].len);
    ps->user_buf[c->args[0].len] = '\0';
    ps->user = ps->user_buf;
    pop3_ok(s, "%s", ""); /* RFC 1939 section 7: the name is checked with the password */
}

void pop3_cmd_pass(mp_session *s, const pop3_command *c)
{
    pop3_session *ps = s->state;
    if (!plaintext_ok(s)) {
        ps->user = NULL;
        refuse_insecure(s);
        return;
    }
    if (!ps->user) {
        pop3_err(s, "No user name given: USER first");
        s->host->error(s);
        return;
    }
    /* RFC 1939 section 7: the whole rest of the line is the password (it may contain spaces) */
    if (c->rest.len == 0) {
        pop3_err(s, "Missing password");
        s->host->error(s);
        return;
    }
    const char *user = ps->user;
    ps->user = NULL;
    if (ps->utf8 && !mpc_utf8_valid(c->rest.p, c->rest.len)) {
        /* RFC 6856 section 2.2: a password that is not well-formed UTF-8 MUST be rejected. Nothing about the
           account is known yet, so there is nothing to delay. */
        pop3_err(s, "Invalid UTF-8 in password");
        s->host->error(s);
        return;
    }
    if (!new_auth_pool(s))
        return;
    login_start(s, LOGIN_VERIFY, "USER", user, strlen(user), c->rest.p, c->rest.len, NULL);
}

void pop3_cmd_apop(mp_session *s, const pop3_command *c)
{
    pop3_session *ps = s->state;
    ps->user = NULL;
    if (!ps->apop) {
        pop3_err(s, "APOP not available");
        s->host->error(s);
        return;
    }
    if (!login_ok(s)) {
        refuse_insecure(s);
        return;
    }
    if (c->nargs != 2 || c->too_many_args) {
        pop3_err(s, "Syntax: APOP name digest");
        s->host->error(s);
        return;
    }
    if (ps->utf8 && !mpc_utf8_valid(c->args[0].p, c->args[0].len)) {
        pop3_err(s, "Invalid UTF-8 in user name"); /* RFC 6856 section 2.2 */
        s->host->error(s);
        return;
    }
    const pop3_slice *d = &c->args[1];
    int hex = d->len == 32;
    for (size_t i = 0; hex && i < 32; i++)
        hex = (d->p[i] >= '0' && d->p[i] <= '9') || (d->p[i] >= 'a' && d->p[i] <= 'f') ||
              (d->p[i] >= 'A' && d->p[i] <= 'F');
    if (!hex) {
        pop3_err(s, "Invalid APOP digest");
        s->host->error(s);
        return;
    }
    if (!new_auth_pool(s))
        return;
    login_start(s, LOGIN_APOP, "APOP", c->args[0].p, c->args[0].len, NULL, 0, d->p);
}

/* ---------------------------------------------------------------- AUTH (RFC 5034) */

typedef struct pop3_scram_job {
    pop3_providers prov;
    apr_pool_t *pool;
    const char *user;
    const char *peer;        /* the client's address, for allow_nets */
    mp_scram_secret secret;
    int rc;
} pop3_scram_job;

static void scram_work(void *arg)
{
    pop3_scram_job *j = arg;
    const mp_auth_iface *ai = j->prov.auth_if;
    j->rc = ai->secret(j->prov.auth, j->user, MP_SECRET_SCRAM_SHA256, j->pool, &j->secret);
    /* A refused network is decided before the server-first message: the exchange goes on with a secret
       that cannot succeed, so no ServerSignature tells this client whether its password was right. */
    mp_auth_user info;
    memset(&info, 0, sizeof info);
    if (j->rc == MP_AUTH_OK && ai->lookup && ai->lookup(j->prov.auth, j->user, j->pool, &info) == MP_AUTH_OK &&
        !mpc_sasl_allowed_from(info.fields ? apr_table_get(info.fields, "allow_nets") : NULL, j->peer))
        j->rc = MP_AUTH_FAIL;
}

static void scram_done(mp_session *s, void *arg, int closing)
{
    pop3_session *ps = s->state;
    pop3_scram_job *j = arg;
    ps->wait = POP3_WAIT_NONE;
    if (closing || !ps->sasl) {
        OPENSSL_cleanse(&j->secret, sizeof j->secret);
        auth_end(s);
        return;
    }
    mpc_sasl_out out;
    mpc_sasl_status st = mpc_sasl_scram_secret(ps->sasl, j->rc, &j->secret, &out);
    OPENSSL_cleanse(&j->secret, sizeof j->secret);
    sasl_handle(s, st, &out);
}

static void sasl_failed(mp_session *s, const mpc_sasl_out *out)
{
    pop3_session *ps = s->state;
    const char *mech = ps->sasl_mech ? ps->sasl_mech : "AUTH";
    switch (out->error) {
    case MPC_SASL_ERR_CANCELLED:
        /* RFC 5034 section 4: a "*" line cancels; the server rejects the AUTH command */
        pop3_err(s, "Authentication cancelled");
        break;
    case MPC_SASL_ERR_BASE64:
        /* RFC 5034 section 4: a response that cannot be base64-decoded rejects the AUTH command */
        pop3_err(s, "Invalid base64 data");
        s->host->error(s);
        break;
    case MPC_SASL_ERR_TOO_LONG:
    case MPC_SASL_ERR_MALFORMED:
    case MPC_SASL_ERR_CHANNEL_BINDING:
    case MPC_SASL_ERR_MECHANISM:
        pop3_err(s, "Invalid SASL response (%s)", mpc_sasl_error_str(out->error));
        s->host->error(s);
        break;
    case MPC_SASL_ERR_AUTH:
    case MPC_SASL_ERR_AUTHZID:
        fail_later(s, mech, out->authcid, mpc_sasl_error_str(out->error));
        break;
    case MPC_SASL_ERR_TEMP:
        pop3_err(s, "[SYS/TEMP] Authentication temporarily unavailable, try again later");
        break;
    default:
        s->host->log(s, MP_LOG_ERROR, 40107, "AUTH %s: %s", mech, mpc_sasl_error_str(out->error));
        pop3_err(s, "[SYS/TEMP] Internal error");
        break;
    }
    auth_end(s);
}

/* What the SASL machine said: send a challenge, run a job, or finish. */
static void sasl_handle(mp_session *s, mpc_sasl_status st, mpc_sasl_out *out)
{
    pop3_session *ps = s->state;
    ps->in_sasl = 0;
    switch (st) {
    case MPC_SASL_CHALLENGE:
        /* RFC 5034 section 4: "+" SP base64 challenge */
        s->host->printf(s, "+ %s\r\n", out->challenge ? out->challenge : "");
        ps->in_sasl = 1;
        return;
    case MPC_SASL_NEED_VERIFY:
        login_start(s, LOGIN_VERIFY, ps->sasl_mech, out->authcid, strlen(out->authcid), out->password,
                    strlen(out->password), NULL);
        return;
    case MPC_SASL_NEED_SCRAM_SECRET: {
        pop3_scram_job *j = apr_pcalloc(ps->auth_pool, sizeof *j);
        j->prov = ps->prov;
        j->pool = ps->auth_pool;
        j->user = apr_pstrdup(ps->auth_pool, out->authcid);
        j->peer = apr_pstrdup(ps->auth_pool, s->peer_addr ? s->peer_addr : "");
        if (s->host->run_blocking(s, scram_work, scram_done, j) != MP_OK) {
            pop3_err(s, "[SYS/TEMP] Authentication temporarily unavailable, try again later");
            auth_end(s);
            return;
        }
        ps->wait = POP3_WAIT_JOB;
        return;
    }
    case MPC_SASL_SUCCESS:
        /* SCRAM: the proof was right; fetch the user's fields and lock the maildrop */
        login_start(s, LOGIN_TRUSTED, ps->sasl_mech, out->authcid, strlen(out->authcid), NULL, 0, NULL);
        return;
    case MPC_SASL_FAIL:
    default:
        sasl_failed(s, out);
        return;
    }
}

void pop3_cmd_auth(mp_session *s, const pop3_command *c)
{
    pop3_session *ps = s->state;
    ps->user = NULL;
    if (c->nargs == 0) {
        /* Not in RFC 5034, but long-standing practice (Outlook, Dovecot): "AUTH" lists the mechanisms */
        char buf[64];
        const char *m = mechanisms(s, buf);
        s->host->printf(s, "+OK\r\n");
        for (const char *p = m; *p;) {
            size_t n = strcspn(p, " ");
            s->host->printf(s, "%.*s\r\n", (int)n, p);
            p += n + (p[n] == ' ');
        }
        s->host->printf(s, ".\r\n");
        return;
    }
    if (c->nargs > 2 || c->too_many_args) {
        pop3_err(s, "Too many arguments");
        s->host->error(s);
        return;
    }
    char mech[32];
    if (c->args[0].len >= sizeof mech) {
        pop3_err(s, "Unsupported authentication mechanism");
        s->host->error(s);
        return;
    }
    memcpy(mech, c->args[0].p, c->args[0].len);
    mech[c->args[0].len] = '\0';
    if (!mpc_sasl_supported(mech) || !mechanism_offered(s, mech)) {
        pop3_err(s, "Unsupported authentication mechanism");
        s->host->error(s);
        return;
    }
    int plain = strcasecmp(mech, "SCRAM-SHA-256") != 0;
    if (plain ? !plaintext_ok(s) : !login_ok(s)) {
        refuse_insecure(s);
        return;
    }
    if (ps->prov.error) {
        pop3_err(s, "[SYS/TEMP] Authentication temporarily unavailable, try again later");
        return;
    }
    if (!new_auth_pool(s))
        return;
    ps->sasl = mpc_sasl_create(ps->auth_pool, MPC_SASL_FINAL_AS_CHALLENGE);
    if (!ps->sasl) {
        pop3_err(s, "[SYS/TEMP] Out of memory");
        auth_end(s);
        return;
    }
    ps->sasl_mech = apr_pstrdup(ps->auth_pool, mech);
    for (char *p = (char *)ps->sasl_mech; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    mpc_sasl_out out;
    mpc_sasl_status st = c->nargs == 2 ? mpc_sasl_start(ps->sasl, mech, c->args[1].p, c->args[1].len, &out)
                                       : mpc_sasl_start(ps->sasl, mech, NULL, 0, &out);
    sasl_handle(s, st, &out);
}

void pop3_sasl_line(mp_session *s, const char *line, size_t len)
{
    pop3_session *ps = s->state;
    mpc_sasl_out out;
    ps->in_sasl = 0;
    mpc_sasl_status st = mpc_sasl_step(ps->sasl, line, len, &out);
    sasl_handle(s, st, &out);
}

void pop3_sasl_abort(mp_session *s)
{
    auth_end(s);
}

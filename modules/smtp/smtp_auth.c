/*
 * AUTH (RFC 4954) with PLAIN (RFC 4616), LOGIN and SCRAM-SHA-256 (RFC 5802, RFC 7677) through the
 * shared SASL machine (modules/common/sasl.h). The user database is asked in jobs (host->run_blocking);
 * a failure is answered after the delay auth->failed() gives, with a timer (never a sleep).
 *
 * Policy: AUTH is offered and accepted only over TLS, whatever the listener (no plaintext password ever
 * crosses the network in clear; RFC 4954 section 4 and 14), never in LMTP, once per session, never in a
 * mail transaction.
 */
#include <string.h>
#include <strings.h>

#include <apr_lib.h>
#include <apr_strings.h>
#include <openssl/crypto.h>

#include "smtp.h"

#define smtp_error_reply(s, ...) \
    do { \
        smtp_reply((s), __VA_ARGS__); \
        (s)->host->error(s); \
    } while (0)

/* A job's view of the exchange: only what the worker may touch. */
typedef struct auth_job {
    smtp_session *ss;
    const mp_auth_iface *iface;
    mp_auth *auth;
    apr_pool_t *pool;
    const char *user, *password;
    const char *peer;           /* the client's address, for allow_nets */
    int scram;
    int rc;
    mp_auth_user info;
    int have_info;
    mp_scram_secret secret;
} auth_job;

static int scram_offered(smtp_session *ss)
{
    return ss->auth_if && ss->auth_if->has_secrets && ss->auth_if->has_secrets(ss->auth, MP_SECRET_SCRAM_SHA256);
}

const char *smtp_auth_mechanisms(mp_session *s)
{
#if SMTP_LMTP
    (void)s;
    return NULL;
#else
    smtp_session *ss = s->state;
    if (!s->tls_active)
        return NULL; /* no AUTH without TLS, period */
    smtp_providers(s);
    if (!ss->auth)
        return NULL;
    return scram_offered(ss) ? "PLAIN LOGIN SCRAM-SHA-256" : "PLAIN LOGIN";
#endif
}

void smtp_auth_abort(mp_session *s)
{
    smtp_session *ss = s->state;
    if (ss->sasl)
        mpc_sasl_destroy(ss->sasl);
    ss->sasl = NULL;
    if (ss->auth_timer && !ss->closing) /* the host drops a closing session's timers itself */
        s->host->timer_cancel(s, ss->auth_timer);
    ss->auth_timer = NULL;
    ss->auth_info = NULL;
    if (ss->auth_pool)
        apr_pool_clear(ss->auth_pool);
    if (ss->mode == SMTP_IN_AUTH)
        ss->mode = SMTP_IN_COMMAND;
}

static void auth_end(mp_session *s)
{
    smtp_session *ss = s->state;
    if (ss->sasl)
        mpc_sasl_destroy(ss->sasl);
    ss->sasl = NULL;
    ss->auth_info = NULL;
    apr_pool_clear(ss->auth_pool);
    ss->mode = SMTP_IN_COMMAND;
}

/* The delayed 535 (RFC 4954 section 6). */
static void auth_fail_timer(mp_session *s, void *arg)
{
    smtp_session *ss = s->state;
    (void)arg;
    ss->auth_timer = NULL;
    ss->mode = SMTP_IN_COMMAND;
    smtp_error_reply(s, "535 5.7.8 Authentication credentials invalid");
}

static void auth_failed_delayed(mp_session *s, const char *user)
{
    smtp_session *ss = s->state;
    s->host->log(s, MP_LOG_NOTICE, 30031, "AUTH %s failed for user '%s'", ss->auth_mech ? ss->auth_mech : "?",
                 user ? user : "");
    apr_interval_time_t delay = ss->auth_if->failed ? ss->auth_if->failed(ss->auth, s->peer_addr) : 0;
    auth_end(s);
    if (delay > 0) {
        ss->auth_timer = s->host->timer_start(s, delay, auth_fail_timer, NULL);
        if (ss->auth_timer) {
            ss->mode = SMTP_IN_WAIT; /* nothing else is answered before the 535 */
            return;
        }
    }
    smtp_error_reply(s, "535 5.7.8 Authentication credentials invalid");
}

static void auth_step_result(mp_session *s, mpc_sasl_status st, mpc_sasl_out *out, const mp_auth_user *info);

static void auth_job_work(void *arg)
{
    auth_job *j = arg;
    if (j->scram) {
        j->rc = j->iface->secret(j->auth, j->user, MP_SECRET_SCRAM_SHA256, j->pool, &j->secret);
        /* allow_nets and the canonical name come from the user's entry */
        if (j->iface->lookup && j->iface->lookup(j->auth, j->user, j->pool, &j->info) == MP_AUTH_OK)
            j->have_info = 1;
        /* A refused network is decided here, before the server-first message: the exchange goes on with a
           secret that cannot succeed, so that no ServerSignature ever tells a right password from a wrong
           one to a client that may not log in. */
        if (j->rc == MP_AUTH_OK && j->have_info &&
            !mpc_sasl_allowed_from(j->info.fields ? apr_table_get(j->info.fields, "allow_nets") : NULL, j->peer))
            j->rc = MP_AUTH_FAIL;
    } else {
        j->rc = j->iface->verify(j->auth, j->user, j->password, j->pool, &j->info);
        j->have_info = j->rc == MP_AUTH_OK;
    }
}

static void auth_job_done(mp_session *s, void *arg, int closing)
{
    auth_job *j = arg;
    smtp_session *ss = s->state;
    mpc_sasl_out out;
    memset(&out, 0, sizeof out);
    if (closing || !ss->sasl) {
        OPENSSL_cleanse(&j->secret, sizeof j->secret);
        if (ss->sasl)
            mpc_sasl_destroy(ss->sasl);
        ss->sasl = NULL;
        return;
    }
    ss->mode = SMTP_IN_COMMAND;
    if (j->have_info)
        ss->auth_info = &j->info;
    mpc_sasl_status st;
    if (j->scram) {
        st = mpc_sasl_scram_secret(ss->sasl, j->rc, &j->secret, &out);
        OPENSSL_cleanse(&j->secret, sizeof j->secret);
    } else {
        st = mpc_sasl_verified(ss->sasl, j->rc, &out);
    }
    auth_step_result(s, st, &out, ss->auth_info);
}

static void auth_start_job(mp_session *s, const mpc_sasl_out *out, int scram)
{
    smtp_session *ss = s->state;
    auth_job *j = apr_pcalloc(ss->auth_pool, sizeof *j);
    j->ss = ss;
    j->iface = ss->auth_if;
    j->auth = ss->auth;
    j->pool = ss->auth_pool;
    j->user = out->authcid;
    j->password = out->password;
    j->peer = apr_pstrdup(ss->auth_pool, s->peer_addr ? s->peer_addr : "");
    j->scram = scram;
    smtp_run_job(s, auth_job_work, auth_job_done, j);
}

static void auth_step_result(mp_session *s, mpc_sasl_status st, mpc_sasl_out *out, const mp_auth_user *info)
{
    smtp_session *ss = s->state;
    switch (st) {
    case MPC_SASL_CHALLENGE:
        ss->mode = SMTP_IN_AUTH;
        s->host->printf(s, "334 %s\r\n", out->challenge ? out->challenge : ""); /* RFC 4954 section 4 */
        return;
    case MPC_SASL_NEED_VERIFY:
        auth_start_job(s, out, 0);
        return;
    case MPC_SASL_NEED_SCRAM_SECRET:
        auth_start_job(s, out, 1);
        return;
    case MPC_SASL_SUCCESS: {
        const char *user = info && info->user ? info->user : out->authcid;
        const char *nets = info && info->fields ? apr_table_get(info->fields, "allow_nets") : NULL;
        if (!mpc_sasl_allowed_from(nets, s->peer_addr)) {
            auth_failed_delayed(s, out->authcid);
            return;
        }
        ss->auth_user = apr_pstrdup(s->pool, user);
        if (ss->auth_if->succeeded)
            ss->auth_if->succeeded(ss->auth, s->peer_addr);
        s->host->log(s, MP_LOG_NOTICE, 30030, "AUTH %s succeeded for user '%s'", ss->auth_mech, ss->auth_user);
        auth_end(s);
        smtp_reply(s, "235 2.7.0 Authentication successful");
        return;
    }
    case MPC_SASL_FAIL:
        break;
    }
    const char *user = out->authcid;
    switch (out->error) {
    case MPC_SASL_ERR_AUTH:
    case MPC_SASL_ERR_AUTHZID:
        auth_failed_delayed(s, user);
        return;
    case MPC_SASL_ERR_CANCELLED:
        auth_end(s);
        smtp_error_reply(s, "501 5.0.0 Authentication cancelled"); /* RFC 4954 section 4 */
        return;
    case MPC_SASL_ERR_MECHANISM:
        auth_end(s);
        smtp_error_reply(s, "504 5.5.4 Unrecognized authentication type");
        return;
    case MPC_SASL_ERR_TOO_LONG:
        auth_end(s);
        smtp_error_reply(s, "500 5.5.6 Authentication Exchange line is too long");
        return;
    case MPC_SASL_ERR_BASE64:
    case MPC_SASL_ERR_MALFORMED:
    case MPC_SASL_ERR_CHANNEL_BINDING:
        s->host->log(s, MP_LOG_NOTICE, 30032, "AUTH %s refused: %s", ss->auth_mech, mpc_sasl_error_str(out->error));
        auth_end(s);
        smtp_error_reply(s, "501 5.5.2 Cannot decode response");
        return;
    default:
        s->host->log(s, MP_LOG_WARN, 30033, "AUTH %s: %s", ss->auth_mech, mpc_sasl_error_str(out->error));
        auth_end(s);
        smtp_reply(s, "454 4.7.0 Temporary authentication failure");
        return;
    }
}

void smtp_cmd_auth(mp_session *s, const smtp_command *cmd)
{
    smtp_session *ss = s->state;
    if (!ss->esmtp) {
        smtp_error_reply(s, "503 5.5.1 Error: send EHLO first");
        return;
    }
    if (ss->auth_user) {
        smtp_error_reply(s, "503 5.5.1 Error: already authenticated"); /* RFC 4954 section 4 */
        return;
    }
    if (ss->txn) {
        smtp_error_reply(s, "503 5.5.1 Error: MAIL transaction in progress"); /* RFC 4954 section 4 */
        return;
    }
    if (!s->tls_active) {
        smtp_error_reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        return;
    }
    smtp_providers(s);
    if (!ss->auth) {
        smtp_error_reply(s, "502 5.5.1 Error: authentication not enabled");
        return;
    }
    /* AUTH SP sasl-mech [SP initial-response] */
    const char *p = cmd->arg.p, *end = cmd->arg.p + cmd->arg.len;
    const char *sp = memchr(p, ' ', cmd->arg.len);
    size_t mlen = sp ? (size_t)(sp - p) : cmd->arg.len;
    if (!cmd->has_arg || mlen == 0 || mlen > 20) {
        smtp_error_reply(s, "501 5.5.4 Syntax: AUTH mechanism");
        return;
    }
    if (!ss->auth_pool && apr_pool_create(&ss->auth_pool, s->pool) != APR_SUCCESS) {
        smtp_reply(s, "454 4.7.0 Temporary authentication failure");
        return;
    }
    char mech[24];
    memcpy(mech, p, mlen);
    mech[mlen] = '\0';
    if (!mpc_sasl_supported(mech) || (strcasecmp(mech, "SCRAM-SHA-256") == 0 && !scram_offered(ss))) {
        smtp_error_reply(s, "504 5.5.4 Unrecognized authentication type");
        return;
    }
    const char *initial = NULL;
    size_t ilen = 0;
    if (sp) {
        initial = sp + 1;
        ilen = (size_t)(end - initial);
    }
    for (char *c = mech; *c; c++)
        *c = (char)apr_toupper(*c);
    ss->auth_mech = strcmp(mech, "PLAIN") == 0 ? "PLAIN" : strcmp(mech, "LOGIN") == 0 ? "LOGIN" : "SCRAM-SHA-256";
    ss->sasl = mpc_sasl_create(ss->auth_pool, MPC_SASL_FINAL_AS_CHALLENGE);
    mpc_sasl_out out;
    memset(&out, 0, sizeof out);
    char *init = initial ? apr_pstrmemdup(ss->auth_pool, initial, ilen) : NULL;
    mpc_sasl_status st = mpc_sasl_start(ss->sasl, mech, init, ilen, &out);
    if (init)
        OPENSSL_cleanse(init, ilen);
    auth_step_result(s, st, &out, NULL);
}

void smtp_auth_line(mp_session *s, const char *line, size_t len)
{
    smtp_session *ss = s->state;
    if (!ss->sasl) {
        ss->mode = SMTP_IN_COMMAND;
        return;
    }
    mpc_sasl_out out;
    memset(&out, 0, sizeof out);
    mpc_sasl_status st = mpc_sasl_step(ss->sasl, line, len, &out);
    auth_step_result(s, st, &out, ss->auth_info);
}

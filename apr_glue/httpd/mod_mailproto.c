/*
 * mod_mailproto: mailproto's protocol handlers inside Apache httpd 2.4.
 *
 * Shaped like httpd's mod_echo: a per-virtual-host switch (MailprotoProtocol) and a process_connection
 * hook that declines unless the connection's virtual host has it. httpd owns Listen, the MPM and the
 * accept loop; for a mail connection the hook hands the socket to mailproto's embedding API
 * (include/mailproto/embed.h), which drives the same handler .so files as mailprotod, TLS and STARTTLS
 * included, on the worker thread until the session ends.
 *
 * Configuration: every mailprotod directive has a Mailproto-prefixed twin; MailprotoLoad is LoadModule
 * and MailprotoStore is MailStore. The adapter writes them out in mailprotod's language, one <Listen> block
 * per mail virtual host (its address names the endpoint), and loads that in each child process.
 */
#include <string.h>
#include <unistd.h>

#include "ap_config.h"
#include "ap_mmn.h"
#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_main.h"
#include "unixd.h"

#include <apr_strings.h>

#include <mailproto/embed.h>

/* The one symbol httpd looks up (everything else is hidden). */
__attribute__((visibility("default"))) extern module AP_MODULE_DECLARE_DATA mailproto_module;

typedef struct mailproto_server_conf {
    const char *protocol;        /* MailprotoProtocol: this virtual host speaks mail */
    apr_array_header_t *lines;   /* directives for this vhost's <Listen> block ("TLS starttls", ...) */
    apr_array_header_t *global;  /* main server only: global directives in mailprotod's language */
    const char *endpoint;        /* "127.0.0.1:2525", computed after configuration */
} mailproto_server_conf;

static mp_embed *embed;          /* one per child process */
static const char *embed_text;   /* the generated configuration (for errors and the log) */

static void *create_server_conf(apr_pool_t *p, server_rec *s)
{
    mailproto_server_conf *c = apr_pcalloc(p, sizeof *c);
    c->lines = apr_array_make(p, 4, sizeof(const char *));
    c->global = apr_array_make(p, 8, sizeof(const char *));
    return c;
}

static void *merge_server_conf(apr_pool_t *p, void *basev, void *addv)
{
    /* Nothing is inherited: a virtual host is mail only when it says so itself. */
    mailproto_server_conf *base = basev, *add = addv, *c = apr_pcalloc(p, sizeof *c);
    c->protocol = add->protocol;
    c->lines = add->lines;
    c->global = base->global;
    return c;
}

static mailproto_server_conf *conf_of(server_rec *s)
{
    return ap_get_module_config(s->module_config, &mailproto_module);
}

/* Directive names as mailprotod spells them: the twin without its "Mailproto" prefix. */
static const char *plain_name(const cmd_parms *cmd)
{
    const char *n = cmd->cmd->name + strlen("Mailproto");
    if (strcasecmp(n, "Load") == 0)
        return "LoadModule";
    if (strcasecmp(n, "Store") == 0)
        return "MailStore";
    return n;
}

static const char *state_dir; /* MailprotoStateDir, absolute, or NULL */

/* A path as httpd takes one (quotes removed, relative to ServerRoot), quoted again for mailprotod. */
static const char *root_path(cmd_parms *cmd, const char *args)
{
    const char *p = args;
    char *word = ap_getword_conf(cmd->pool, &p);
    const char *abs = ap_server_root_relative(cmd->pool, word);
    if (!strcasecmp(plain_name(cmd), "StateDir"))
        state_dir = abs ? abs : word;
    return apr_pstrcat(cmd->pool, "\"", abs ? abs : word, "\"", NULL);
}

static const char *set_global(cmd_parms *cmd, void *dummy, const char *args)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    if (err)
        return err;
    const char *name = plain_name(cmd), *value = args;
    /* Paths are relative to httpd's ServerRoot, as in every httpd directive. */
    if (!strcasecmp(name, "TLSCertificateFile") || !strcasecmp(name, "TLSCertificateKeyFile") ||
        !strcasecmp(name, "ModuleDir") || !strcasecmp(name, "StateDir"))
        value = root_path(cmd, args);
    else if (!strcasecmp(name, "LoadModule")) {
        /* A relative file is found in MailprotoModuleDir, which is ServerRoot unless set (build_text). */
        const char *p = args;
        char *mod = ap_getword_conf(cmd->pool, &p);
        char *file = ap_getword_conf(cmd->pool, &p);
        if (!*mod || !*file)
            return "MailprotoLoad takes a name and a file";
        value = apr_pstrcat(cmd->pool, mod, " \"", file, "\"", NULL);
    }
    *(const char **)apr_array_push(conf_of(cmd->server)->global) = apr_pstrcat(cmd->pool, name, " ", value, NULL);
    return NULL;
}

static const char *set_vhost(cmd_parms *cmd, void *dummy, const char *args)
{
    mailproto_server_conf *c = conf_of(cmd->server);
    const char *name = plain_name(cmd);
    if (!strcasecmp(name, "Protocol"))
        c->protocol = apr_pstrdup(cmd->pool, args);
    else
        *(const char **)apr_array_push(c->lines) = apr_pstrcat(cmd->pool, name, " ", args, NULL);
    return NULL;
}

/* Directives mailprotod allows globally and in a <Listen> block: a virtual host's own value, or the global. */
static const char *set_either(cmd_parms *cmd, void *dummy, const char *args)
{
    if (!cmd->server->is_virtual)
        return set_global(cmd, dummy, args);
    const char *name = plain_name(cmd), *value = args;
    if (!strcasecmp(name, "TLSCertificateFile") || !strcasecmp(name, "TLSCertificateKeyFile"))
        value = root_path(cmd, args);
    *(const char **)apr_array_push(conf_of(cmd->server)->lines) = apr_pstrcat(cmd->pool, name, " ", value, NULL);
    return NULL;
}

/* MailprotoDirective NAME VALUE: a directive a mailproto module adds (inside a vhost: its <Listen> block). */
static const char *set_any(cmd_parms *cmd, void *dummy, const char *args)
{
    mailproto_server_conf *c = conf_of(cmd->server);
    apr_array_header_t *to = cmd->server->is_virtual ? c->lines : c->global;
    *(const char **)apr_array_push(to) = apr_pstrdup(cmd->pool, args);
    return NULL;
}

#define GLOBAL(n, help) AP_INIT_RAW_ARGS("Mailproto" n, set_global, NULL, RSRC_CONF, help)
#define VHOST(n, help) AP_INIT_RAW_ARGS("Mailproto" n, set_vhost, NULL, RSRC_CONF, help)
#define EITHER(n, help) AP_INIT_RAW_ARGS("Mailproto" n, set_either, NULL, RSRC_CONF, help)

static const command_rec mailproto_cmds[] = {
    GLOBAL("Load", "NAME FILE: load a mailproto module (mailprotod's LoadModule)"),
    GLOBAL("ModuleDir", "where MailprotoLoad finds relative files"),
    GLOBAL("StateDir", "a folder the child processes may write (module copies)"),
    GLOBAL("ServerName", "the name the handlers greet with"),
    GLOBAL("Store", "mail store, e.g. maildir:/var/mail/%d/%n (mailprotod's MailStore)"),
    GLOBAL("UserDB", "user database, e.g. passwd-file:/etc/mail/users"),
    GLOBAL("LocalDomains", "domains delivered locally"),
    EITHER("TLSCertificateFile", "PEM certificate chain for mail TLS"),
    EITHER("TLSCertificateKeyFile", "PEM key for mail TLS"),
    GLOBAL("LogLevel", "mailproto's log level (error ... debug)"),
    GLOBAL("Workers", "threads for blocking work"),
    GLOBAL("MaxLineLength", "longest client line"),
    GLOBAL("MaxErrors", "protocol errors before a session is closed"),
    EITHER("IdleTimeout", "idle time before a session is closed"),
    GLOBAL("ShutdownTimeout", "how long a stopping child waits for sessions"),
    GLOBAL("MaxMessageSize", "largest message accepted"),
    VHOST("Protocol", "the mailproto handler this virtual host speaks (smtp, pop3, imap, ...)"),
    VHOST("TLS", "off | starttls | required | implicit"),
    VHOST("Submission", "on | off: SMTP submission role"),
    VHOST("MaxRecipients", "SMTP recipients per message"),
    EITHER("MaxConnections", "sessions of this virtual host at once"),
    EITHER("MaxConnectionsPerClient", "sessions of one client address at once"),
    AP_INIT_RAW_ARGS("MailprotoDirective", set_any, NULL, RSRC_CONF,
                     "NAME VALUE: any other mailproto directive"),
    {NULL}};

/* The address a virtual host listens on, as an endpoint name. */
static const char *vhost_endpoint(apr_pool_t *p, server_rec *s)
{
    if (!s->addrs || !s->addrs->host_addr)
        return NULL;
    char *ip;
    apr_sockaddr_ip_get(&ip, s->addrs->host_addr);
    apr_port_t port = s->addrs->host_port ? s->addrs->host_port : s->port;
    return strchr(ip, ':') ? apr_psprintf(p, "[%s]:%u", ip, port) : apr_psprintf(p, "%s:%u", ip, port);
}

/* mailprotod's configuration for this httpd configuration. */
static const char *build_text(apr_pool_t *p, server_rec *main_s)
{
    mailproto_server_conf *mc = conf_of(main_s);
    char *t = apr_pstrcat(p, "# generated by mod_mailproto from httpd's Mailproto* directives\n"
                             "ModuleDir \"", ap_server_root, "\"\n", NULL); /* MailprotoModuleDir comes later */
    int named = 0;
    for (int i = 0; i < mc->global->nelts; i++) {
        const char *l = APR_ARRAY_IDX(mc->global, i, const char *);
        named |= strncasecmp(l, "ServerName ", 11) == 0;
        t = apr_pstrcat(p, t, l, "\n", NULL);
    }
    if (!named && main_s->server_hostname)
        t = apr_pstrcat(p, t, "ServerName ", main_s->server_hostname, "\n", NULL);
    for (server_rec *s = main_s; s; s = s->next) {
        mailproto_server_conf *c = conf_of(s);
        if (!c->protocol)
            continue;
        c->endpoint = vhost_endpoint(p, s);
        if (!c->endpoint)
            continue;
        t = apr_pstrcat(p, t, "<Listen ", c->endpoint, ">\n    Protocol ", c->protocol, "\n", NULL);
        for (int i = 0; i < c->lines->nelts; i++)
            t = apr_pstrcat(p, t, "    ", APR_ARRAY_IDX(c->lines, i, const char *), "\n", NULL);
        t = apr_pstrcat(p, t, "</Listen>\n", NULL);
    }
    return t;
}

static int any_mail_vhost(server_rec *s)
{
    for (; s; s = s->next)
        if (conf_of(s)->protocol)
            return 1;
    return 0;
}

/* Checked once in the parent, so a bad configuration stops httpd at start with a clear message. */
static int post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    if (!any_mail_vhost(s))
        return OK;
    embed_text = build_text(pconf, s);
    mp_embed *probe;
    const char *err = mp_embed_create(ptemp, "httpd Mailproto* configuration", ap_server_root, embed_text, &probe);
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "mod_mailproto: %s\n%s", err, embed_text);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    mp_embed_destroy(probe);
    /* The children run as httpd's User and copy the handlers into StateDir/modules.UID: root makes that
       folder theirs (StateDir itself stays as it is). */
    if (state_dir && geteuid() == 0) {
        err = mp_embed_give_copy_dir(ptemp, state_dir, (long)ap_unixd_config.user_id, (long)ap_unixd_config.group_id);
        if (err) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "mod_mailproto: MailprotoStateDir for httpd's User: %s", err);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    return OK;
}

static apr_status_t embed_cleanup(void *data)
{
    if (embed) {
        mp_embed_destroy(embed);
        embed = NULL;
    }
    return APR_SUCCESS;
}

/* Each child loads the handlers itself: threads (the worker pool) do not survive fork(). */
static void child_init(apr_pool_t *pchild, server_rec *s)
{
    if (!embed_text)
        return;
    const char *err = mp_embed_create(pchild, "httpd Mailproto* configuration", ap_server_root, embed_text, &embed);
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "mod_mailproto: %s", err);
        return;
    }
    /* A pre-cleanup: it must run while the embedding's own pool, a subpool of pchild, still exists
       (subpools go before a pool's plain cleanups). */
    apr_pool_pre_cleanup_register(pchild, NULL, embed_cleanup);
}

static int process_connection(conn_rec *c)
{
    mailproto_server_conf *conf = conf_of(c->base_server);
    if (!conf->protocol)
        return DECLINED; /* HTTP, as usual */
    if (!embed || !conf->endpoint) {
        ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, c, "mod_mailproto: no mail handler for this connection");
        c->aborted = 1;
        return OK;
    }
    apr_socket_t *sock = ap_get_conn_socket(c);
    apr_status_t rv = mp_embed_serve(embed, conf->endpoint, sock, c->pool);
    if (rv != APR_SUCCESS)
        ap_log_cerror(APLOG_MARK, APLOG_ERR, rv, c, "mod_mailproto: cannot serve %s", conf->endpoint);
    c->keepalive = AP_CONN_CLOSE;
    return OK;
}

static void register_hooks(apr_pool_t *p)
{
    ap_hook_post_config(post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_process_connection(process_connection, NULL, NULL, APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(mailproto) = {
    STANDARD20_MODULE_STUFF,
    NULL,
    NULL,
    create_server_conf,
    merge_server_conf,
    mailproto_cmds,
    register_hooks,
    AP_MODULE_FLAG_NONE,
};
